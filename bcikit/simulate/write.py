"""Write simulated (or any) continuous recordings to EDF, BrainVision or FIF files, or a BIDS tree.

Plain files are named ``sub-<subject>_ses-<session>_run-<run>_eeg.<ext>`` (``.edf``, ``.vhdr`` with
its ``.vmrk``/``.eeg``, or ``.fif``); ``bids=True`` writes a BIDS tree with mne-bids (task
``motorimagery``, datatype ``eeg``, ``events.tsv`` with ``trial_type`` = the annotation
descriptions). Existing files are never replaced unless ``overwrite=True``; all target paths are
checked before anything is written.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..utils import check_option, logger, progress, validate_type

__all__ = ["write_recordings", "simulate_to_disk", "recording_paths", "FORMATS", "BIDS_TASK"]

FORMATS: dict[str, str] = {"edf": ".edf", "brainvision": ".vhdr", "fif": ".fif"}
"""Output formats and the extension of the file that names a recording."""

BIDS_TASK = "motorimagery"
_BIDS_FORMAT = {"edf": "EDF", "brainvision": "BrainVision"}
_LABEL = re.compile(r"^[A-Za-z0-9]+$")


def _check_ids(ids: Any, i: int) -> dict[str, str]:
    if not isinstance(ids, dict):
        raise TypeError(f"The 'raws' parameter of write_recordings must hold (raw, dict) pairs; "
                        f"item {i} has {type(ids).__name__} in place of the dict.")
    missing = [k for k in ("subject", "session", "run") if k not in ids]
    if missing:
        raise ValueError(f"The ids of recording {i} lack {missing}; expected a dict with "
                         f"'subject', 'session' and 'run'. Got {ids!r}.")
    out = {k: str(ids[k]) for k in ("subject", "session", "run")}
    for key, value in out.items():
        if not _LABEL.match(value):
            raise ValueError(f"The {key!r} of recording {i} must be letters and digits only (it "
                             f"becomes part of a file name). Got {value!r}.")
    if not out["run"].isdigit():
        raise ValueError(f"The 'run' of recording {i} must be a non-negative integer label. "
                         f"Got {out['run']!r}.")
    return out


def _companions(path: Path, fmt: str) -> list[Path]:
    """Every file a recording consists of."""
    if fmt == "brainvision":
        return [path, path.with_suffix(".vmrk"), path.with_suffix(".eeg")]
    return [path]


def recording_paths(ids: Iterable[dict[str, str]], out_dir: str | os.PathLike, fmt: str = "edf",
                    *, bids: bool = False) -> list[Path]:
    """The paths :func:`write_recordings` gives recordings with these ids (nothing is written).

    Parameters
    ----------
    ids : iterable of dict
        ``{"subject": ..., "session": ..., "run": ...}`` per recording.
    out_dir : path-like
        Output folder (the BIDS root when ``bids=True``).
    fmt : {"edf", "brainvision", "fif"}
        File format.
    bids : bool
        BIDS tree or plain files.

    Returns
    -------
    list of Path
    """
    check_option(fmt, tuple(FORMATS), "fmt", owner="write_recordings")
    out_dir = Path(out_dir)
    paths = []
    for i, ident in enumerate(ids):
        ident = _check_ids(ident, i)
        if bids:
            from mne_bids import BIDSPath

            bp = BIDSPath(subject=ident["subject"], session=ident["session"],
                          run=int(ident["run"]), task=BIDS_TASK, datatype="eeg", suffix="eeg",
                          extension=FORMATS[fmt], root=out_dir)
            paths.append(Path(bp.fpath))
        else:
            name = f"sub-{ident['subject']}_ses-{ident['session']}_run-{ident['run']}_eeg"
            paths.append(out_dir / (name + FORMATS[fmt]))
    return paths


def _check_free(paths: Sequence[Path], fmt: str, overwrite: bool) -> None:
    seen = set()
    for p in paths:
        if p in seen:
            raise ValueError(f"Two recordings would be written to {str(p)!r}; their "
                             f"subject/session/run ids must differ.")
        seen.add(p)
        if not overwrite:
            for f in _companions(p, fmt):
                if f.exists():
                    raise FileExistsError(f"{str(f)!r} already exists; pass overwrite=True to "
                                          f"replace it.")


def _check_args(fmt: str, bids: bool, overwrite: bool, owner: str) -> None:
    check_option(fmt, tuple(FORMATS), "fmt", owner=owner)
    validate_type(bids, bool, "bids", owner=owner)
    validate_type(overwrite, bool, "overwrite", owner=owner)
    if bids and fmt not in _BIDS_FORMAT:
        raise ValueError(f"The 'fmt' parameter of {owner} must be one of "
                         f"{sorted(_BIDS_FORMAT)} when bids=True (BIDS EEG allows EDF, BDF, "
                         f"BrainVision and EEGLAB files, not FIF). Got {fmt!r} instead.")


def _write_one(raw, ident: dict[str, str], path: Path, fmt: str, bids: bool, overwrite: bool,
               out_dir: Path) -> Path:
    import mne

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # pybv converts float64 samples to float32 and says so; that is the format, not a problem.
        warnings.filterwarnings("ignore", message=".*'double' format.*", category=RuntimeWarning)
        if bids:
            from mne_bids import BIDSPath, write_raw_bids

            bp = BIDSPath(subject=ident["subject"], session=ident["session"],
                          run=int(ident["run"]), task=BIDS_TASK, datatype="eeg", root=out_dir)
            out = write_raw_bids(raw, bp, format=_BIDS_FORMAT[fmt], allow_preload=True,
                                 overwrite=overwrite, verbose=False)
            return Path(out.fpath)
        try:
            if fmt == "fif":
                raw.save(path, overwrite=overwrite, verbose=False)
            else:
                mne.export.export_raw(path, raw, fmt=fmt, overwrite=overwrite, verbose=False)
        except BaseException:
            for f in _companions(path, fmt):  # no half-written recording is left behind
                f.unlink(missing_ok=True)
            raise
    return path


def write_recordings(raws: Sequence[tuple[Any, dict]], out_dir: str | os.PathLike,
                     fmt: str = "edf", *, bids: bool = False, overwrite: bool = False,
                     verbose: bool | None = None) -> list[Path]:
    """Write continuous recordings, as :func:`simulate_mi_raws` returns them, to disk.

    Parameters
    ----------
    raws : sequence of (mne.io.BaseRaw, dict)
        Recordings with their ids ``{"subject", "session", "run"}`` (letters and digits; ``run``
        an integer label).
    out_dir : path-like
        Output folder, created when missing (the BIDS root when ``bids=True``).
    fmt : {"edf", "brainvision", "fif"}
        EDF via ``mne.export`` (edfio), BrainVision via ``mne.export`` (pybv), FIF natively.
        BrainVision markers read back with a ``"Comment/"`` prefix (``"Comment/left_hand"``).
    bids : bool
        Write a BIDS tree with ``mne_bids.write_raw_bids`` (EDF or BrainVision only; task
        ``motorimagery``, ``events.tsv`` ``trial_type`` = the annotation descriptions).
    overwrite : bool
        Replace existing files; otherwise an existing target raises before anything is written.
    verbose : bool or None
        Progress bar and log messages.

    Returns
    -------
    list of Path
        The file naming each recording (``.edf``, ``.vhdr`` or ``.fif``), in input order.

    Raises
    ------
    FileExistsError
        When a target file exists and ``overwrite`` is False (names the file).
    ValueError
        For an unknown ``fmt``, FIF with ``bids=True``, or ids that are missing or collide.

    Examples
    --------
    >>> raws = simulate_mi_raws(n_subjects=1, n_sessions=1, n_trials_per_class=5)
    >>> paths = write_recordings(raws, "sim_edf", fmt="edf")  # doctest: +SKIP
    >>> [p.name for p in paths]  # doctest: +SKIP
    ['sub-S01_ses-0_run-1_eeg.edf', 'sub-S01_ses-0_run-2_eeg.edf']
    """
    from .motor_imagery import _verbosity

    owner = "write_recordings"
    _check_args(fmt, bids, overwrite, owner)
    validate_type(out_dir, "path-like", "out_dir", owner=owner)
    validate_type(raws, (list, tuple), "raws", owner=owner)
    import mne

    for i, item in enumerate(raws):
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise TypeError(f"The 'raws' parameter of {owner} must hold (raw, dict) pairs; item "
                            f"{i} is {type(item).__name__}.")
        if not isinstance(item[0], mne.io.BaseRaw):
            raise TypeError(f"The 'raws' parameter of {owner} must hold (raw, dict) pairs; item "
                            f"{i} has {type(item[0]).__name__} in place of an mne Raw.")
    out_dir = Path(out_dir)
    ids = [_check_ids(item[1], i) for i, item in enumerate(raws)]
    paths = recording_paths(ids, out_dir, fmt, bids=bids)
    _check_free(paths, fmt, overwrite)
    written = []
    with _verbosity(verbose):
        for (raw, _), ident, path in progress(list(zip(raws, ids, paths)), desc="writing",
                                              verbose=verbose):
            written.append(_write_one(raw, ident, path, fmt, bids, overwrite, out_dir))
            logger.info("wrote %s", written[-1])
    return written


def simulate_to_disk(out_dir: str | os.PathLike, *, fmt: str = "edf", bids: bool = False,
                     overwrite: bool = False, annotate_artifacts: bool = False,
                     verbose: bool | None = None, **knobs) -> list[Path]:
    """Simulate motor-imagery runs and write them, one run at a time (``bcikit simulate``).

    Parameters
    ----------
    out_dir : path-like
        Output folder (BIDS root when ``bids=True``).
    fmt, bids, overwrite
        As in :func:`write_recordings`; every target is checked before simulating.
    annotate_artifacts : bool
        Also annotate artifacts (``BAD_blink``, ``BAD_muscle``, ``BAD_pop``).
    verbose : bool or None
        Progress bar and log messages.
    **knobs
        Any keyword of :func:`~bcikit.simulate.simulate_mi_raws` (n_subjects, n_sessions,
        n_runs, n_classes, n_trials_per_class, sfreq, trial_duration, ch_names, difficulty,
        artifact_rate, session_shift, seed).

    Returns
    -------
    list of Path
        The written recordings, ordered by subject, session and run.
    """
    from . import motor_imagery as mi

    owner = "simulate_to_disk"
    _check_args(fmt, bids, overwrite, owner)
    validate_type(out_dir, "path-like", "out_dir", owner=owner)
    validate_type(annotate_artifacts, bool, "annotate_artifacts", owner=owner)
    allowed = ("n_subjects", "n_sessions", "n_runs", "n_classes", "n_trials_per_class", "sfreq",
               "trial_duration", "ch_names", "difficulty", "artifact_rate", "session_shift",
               "seed")
    for key in knobs:
        check_option(key, allowed, "knob", owner=owner)
    defaults = dict(n_subjects=4, n_sessions=2, n_runs=2, n_classes=2, n_trials_per_class=40,
                    sfreq=250.0, trial_duration=4.0, ch_names=None, difficulty=0.3,
                    artifact_rate=0.05, session_shift=0.2, seed=0)
    defaults.update(knobs)
    k = mi._check_knobs(owner, **defaults)
    ids = [{"subject": f"S{s + 1:02d}", "session": str(sess), "run": str(r + 1)}
           for s in range(k.n_subjects) for sess in range(k.n_sessions) for r in range(k.n_runs)]
    out_dir = Path(out_dir)
    paths = recording_paths(ids, out_dir, fmt, bids=bids)
    _check_free(paths, fmt, overwrite)
    written = []
    with mi._verbosity(verbose):
        for (raw, ident), path in zip(mi._iter_raws(k, annotate_artifacts=annotate_artifacts,
                                                    verbose=verbose), paths):
            written.append(_write_one(raw, ident, path, fmt, bids, overwrite, out_dir))
            logger.info("wrote %s", written[-1])
    return written
