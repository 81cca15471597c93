"""Scalp-EEG readers: one entry point over MNE's readers, BIDS through mne-bids, and epoching.

:func:`read_raw` picks MNE's reader from the file extension and adds the checks MNE leaves out:
an EDF/BDF whose size disagrees with its own header (CR/LF "text mode" damage, truncation),
non-finite samples, and headers MNE cannot parse (the error then names the file). Files that look
like intracranial recordings are handed to :func:`bcikit.io.ieeg.read_ieeg`, which types the
channels as sEEG/ECoG from the sidecar files.

:func:`epochs_from_raw` cuts labelled trials out of a continuous recording into a
:class:`~bcikit.data.TrialSet`. Samples stay in the units MNE gives, i.e. **volts** for EEG,
sEEG and ECoG channels.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..utils import check_file, logger, require, validate_type, warn

if TYPE_CHECKING:  # pragma: no cover
    import mne

    from ..data.trialset import TrialSet

#: File endings :func:`read_raw` understands, mapped to the format's name.
SUPPORTED_EXTENSIONS: dict[str, str] = {
    ".edf": "EDF",
    ".bdf": "BDF",
    ".gdf": "GDF",
    ".vhdr": "BrainVision",
    ".fif": "FIF",
    ".fif.gz": "FIF",
    ".set": "EEGLAB",
}

_IEEG_TYPES = ("seeg", "ecog")
# Set while bcikit.io.ieeg.read_ieeg runs, so that a read_raw call made from inside it reads the
# file instead of handing it back (no endless delegation).
_IN_IEEG_READER: contextvars.ContextVar[bool] = contextvars.ContextVar("_in_ieeg_reader",
                                                                        default=False)


# ---------------------------------------------------------------------------------------- helpers
def file_extension(path: str | os.PathLike) -> str:
    """The lower-case extension of ``path`` as :data:`SUPPORTED_EXTENSIONS` keys it (``.fif.gz``
    counts as one extension)."""
    name = Path(path).name.lower()
    if name.endswith(".fif.gz"):
        return ".fif.gz"
    return Path(name).suffix


def _check_extension(path: Path) -> str:
    ext = file_extension(path)
    if ext not in SUPPORTED_EXTENSIONS:
        allowed = ", ".join(SUPPORTED_EXTENSIONS)
        raise ValueError(f"{str(path)!r}: unsupported file type {ext or '(no extension)'!r}; "
                         f"read_raw reads {allowed}.")
    return ext


def _edf_expected_size(path: Path, ext: str) -> int | None:
    """Byte size an EDF/BDF file must have according to its header, or None when the header
    does not say (unknown record count) or cannot be parsed (MNE then reports the problem)."""
    with open(path, "rb") as fid:
        head = fid.read(256)
        if len(head) < 256:
            return None
        try:
            header_bytes = int(head[184:192].decode("ascii").strip())
            n_records = int(head[236:244].decode("ascii").strip())
            n_signals = int(head[252:256].decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            return None
        if n_records < 0 or n_signals <= 0:
            return None
        fid.seek(256 + n_signals * (16 + 80 + 8 * 5 + 80))
        raw_counts = fid.read(8 * n_signals)
    if len(raw_counts) < 8 * n_signals:
        return None
    try:
        samples = [int(raw_counts[i:i + 8].decode("ascii").strip()) for i in
                   range(0, 8 * n_signals, 8)]
    except (UnicodeDecodeError, ValueError):
        return None
    bytes_per_sample = 3 if ext == ".bdf" else 2
    return header_bytes + n_records * sum(samples) * bytes_per_sample


def _count_crlf(path: Path, chunk: int = 1 << 24) -> int:
    count = 0
    previous_cr = False
    with open(path, "rb") as fid:
        while True:
            block = fid.read(chunk)
            if not block:
                return count
            count += block.count(b"\r\n")
            if previous_cr and block[:1] == b"\n":
                count += 1
            previous_cr = block[-1:] == b"\r"


def check_edf_size(path: str | os.PathLike) -> None:
    """Compare an EDF/BDF file's size with the size its header announces.

    Raises
    ------
    ValueError
        When the file is shorter than its header says ("truncated: expected N bytes, found M")
        or longer by exactly its number of CR LF pairs ("looks damaged by CR/LF (text-mode)
        conversion"), which is what copying a binary file as text does.
    """
    path = Path(path)
    ext = file_extension(path)
    expected = _edf_expected_size(path, ext)
    if expected is None:
        return
    found = path.stat().st_size
    if found == expected:
        return
    fmt = SUPPORTED_EXTENSIONS[ext]
    if found < expected:
        raise ValueError(f"{str(path)!r}: {fmt} file is truncated: expected {expected} bytes "
                         f"from its header, found {found}.")
    excess = found - expected
    n_crlf = _count_crlf(path)
    if n_crlf == excess:
        raise ValueError(
            f"{str(path)!r}: {fmt} file looks damaged by CR/LF (text-mode) conversion: it is "
            f"{excess} bytes longer than its header says ({expected}), and it holds exactly "
            f"{n_crlf} CR LF pairs. Every LF byte seems to have become CR LF (e.g. git "
            "autocrlf or an ASCII-mode FTP transfer); get a binary copy of the file (replacing "
            "b'\\r\\n' by b'\\n' undoes this exact damage).")
    warn(f"{str(path)!r}: {fmt} file has {excess} bytes more than its header announces "
         f"({expected}); the extra bytes are ignored.")


def _check_finite(raw: mne.io.BaseRaw, path: Path | str, chunk: int = 1 << 20) -> None:
    """Raise naming the channels that hold NaN or infinite samples (preloaded data only)."""
    n_chan = len(raw.ch_names)
    bad = np.zeros(n_chan, bool)
    step = max(1, chunk // max(n_chan, 1))
    for start in range(0, raw.n_times, step):
        block = raw.get_data(start=start, stop=min(start + step, raw.n_times))
        bad |= ~np.isfinite(block).all(axis=1)
    if bad.any():
        names = [raw.ch_names[i] for i in np.flatnonzero(bad)]
        shown = ", ".join(names[:10]) + (f", ... ({len(names) - 10} more)" if len(names) > 10
                                         else "")
        raise ValueError(f"{str(path)!r}: {len(names)} channel(s) hold NaN or infinite samples: "
                         f"{shown}. Clean or drop them before use.")


def _mne_reader(ext: str):
    import mne

    return {
        ".edf": mne.io.read_raw_edf,
        ".bdf": mne.io.read_raw_bdf,
        ".gdf": mne.io.read_raw_gdf,
        ".vhdr": mne.io.read_raw_brainvision,
        ".fif": mne.io.read_raw_fif,
        ".fif.gz": mne.io.read_raw_fif,
        ".set": mne.io.read_raw_eeglab,
    }[ext]


def read_raw_file(path: str | os.PathLike, *, preload: bool = True,
                  verbose: bool | str | int | None = None) -> mne.io.BaseRaw:
    """Read one recording with MNE and the checks of :func:`read_raw`, without iEEG hand-off.

    This is the reader :func:`bcikit.io.ieeg.read_ieeg` may use for the file itself. Parameters
    and errors are those of :func:`read_raw`.
    """
    validate_type(path, "path-like", "path", owner="read_raw")
    path = check_file(path, what="recording")
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a folder; read_raw reads one file (use read_bids or "
                         "load_dataset for a BIDS root).")
    ext = _check_extension(path)
    if ext in (".edf", ".bdf"):
        check_edf_size(path)
    reader = _mne_reader(ext)
    try:
        raw = reader(path, preload=preload, verbose=verbose)
    except FileNotFoundError:
        raise
    except (ValueError, RuntimeError, KeyError, IndexError, TypeError, OSError, EOFError,
            UnicodeDecodeError, OverflowError) as err:
        raise ValueError(f"{str(path)!r}: MNE could not read this {SUPPORTED_EXTENSIONS[ext]} "
                         f"file ({type(err).__name__}: {err})") from err
    if ext == ".vhdr":
        _strip_comment_prefix(raw)
    if preload:
        _check_finite(raw, path)
    return raw


def _strip_comment_prefix(raw) -> None:
    """MNE reads a BrainVision ``Comment`` marker ``left`` as ``'Comment/left'``; MNE's export
    writes plain annotations as such markers, so drop that prefix to give back the written
    description (``Stimulus/``/``Response/`` prefixes are kept: they carry the marker type)."""
    desc = raw.annotations.description
    if not any(str(d).startswith("Comment/") for d in desc):
        return
    new = [str(d)[len("Comment/"):] if str(d).startswith("Comment/") else str(d) for d in desc]
    ann = raw.annotations
    raw.set_annotations(type(ann)(ann.onset, ann.duration, new, orig_time=ann.orig_time,
                                  ch_names=ann.ch_names), verbose="error")


def _is_ieeg(path: Path, ch_type: str | None) -> bool:
    if ch_type in _IEEG_TYPES:
        return True
    try:
        from .ieeg import is_ieeg_path
    except ModuleNotFoundError as err:
        # TODO(lead): remove once bcikit.io.ieeg is merged; until then only an explicit
        # ch_type='seeg'/'ecog' is recognised as iEEG.
        if err.name != "bcikit.io.ieeg":
            raise
        return False
    return bool(is_ieeg_path(path))


def read_raw(path: str | os.PathLike, *, preload: bool = True, ch_type: str | None = None,
             verbose: bool | str | int | None = None) -> mne.io.BaseRaw:
    """Read a continuous recording with MNE, choosing the reader from the file extension.

    Parameters
    ----------
    path : path-like
        ``.edf``, ``.bdf``, ``.gdf`` (EDF/BDF/GDF), ``.vhdr`` (BrainVision), ``.fif`` /
        ``.fif.gz`` (MNE FIF) or ``.set`` (EEGLAB). BrainVision ``Comment`` markers lose MNE's
        ``'Comment/'`` prefix, so annotations written by :func:`mne.export.export_raw` read back
        unchanged.
    preload : bool
        Load the samples into memory. Only preloaded recordings are checked for NaN/inf samples
        here; :func:`epochs_from_raw` checks the trials it cuts either way.
    ch_type : str or None
        ``'seeg'`` or ``'ecog'`` hands the file to :func:`bcikit.io.ieeg.read_ieeg` (as does a
        path that :func:`bcikit.io.ieeg.is_ieeg_path` recognises). Any other MNE channel type is
        given to every channel that is not a stim channel. None keeps the file's types.
    verbose : bool, str, int or None
        MNE's verbosity for the read.

    Returns
    -------
    raw : mne.io.BaseRaw
        Samples in volts for EEG/sEEG/ECoG channels, annotations as stored in the file.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        Unsupported extension; EDF/BDF truncated or damaged by CR/LF conversion; NaN or infinite
        samples (the channels are named); a header MNE cannot parse. Every message names the file.

    Examples
    --------
    >>> raw = read_raw("S001R04.edf")  # doctest: +SKIP
    """
    validate_type(path, "path-like", "path", owner="read_raw")
    validate_type(ch_type, (str, None), "ch_type", owner="read_raw")
    path = check_file(path, what="recording")
    if not path.is_dir():
        _check_extension(path)
    if not _IN_IEEG_READER.get() and _is_ieeg(path, ch_type):
        from .ieeg import read_ieeg

        token = _IN_IEEG_READER.set(True)
        try:
            return read_ieeg(path, electrodes=None, ch_type=ch_type, preload=preload,
                             verbose=verbose)
        finally:
            _IN_IEEG_READER.reset(token)
    raw = read_raw_file(path, preload=preload, verbose=verbose)
    if ch_type is not None and ch_type not in _IEEG_TYPES:
        from mne.io import get_channel_type_constants

        valid = sorted(get_channel_type_constants())
        if ch_type not in valid:
            raise ValueError(f"The 'ch_type' parameter of read_raw must be one of {valid}. "
                             f"Got {ch_type!r} instead.")
        types = raw.get_channel_types()
        raw.set_channel_types({n: ch_type for n, t in zip(raw.ch_names, types) if t != "stim"},
                              on_unit_change="ignore", verbose="error")
    return raw


# ------------------------------------------------------------------------------------------ BIDS
def _as_str_list(value: Any, name: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return [str(value)]
    validate_type(value, (list, tuple), name, owner="read_bids")
    return [str(v) for v in value]


def _entity_match(value: str | None, wanted: list[str] | None) -> bool:
    if wanted is None:
        return True
    if value is None:
        return False
    for w in wanted:
        if value == w or (value.isdigit() and w.isdigit() and int(value) == int(w)):
            return True
    return False


_BIDS_EXTENSIONS = [".edf", ".bdf", ".vhdr", ".set", ".fif"]


def find_bids_recordings(root: str | os.PathLike, *, subjects=None, sessions=None, tasks=None,
                         runs=None, datatype: str | None = None) -> list:
    """BIDSPaths of the readable EEG/iEEG recordings under a BIDS root, filtered by entity.

    Entity values match as text, and numerically when both sides are digits (``run=1`` matches
    ``run-01``).
    """
    mne_bids = require("mne_bids", purpose="Reading BIDS folders")
    root = check_file(root, what="BIDS root")
    if not (root / "dataset_description.json").is_file():
        raise ValueError(f"{str(root)!r} is not a BIDS root: it has no dataset_description.json.")
    validate_type(datatype, (str, None), "datatype", owner="read_bids")
    datatypes = [datatype] if datatype else ["eeg", "ieeg"]
    found = mne_bids.find_matching_paths(root, datatypes=datatypes, suffixes=datatypes,
                                         extensions=_BIDS_EXTENSIONS)
    subjects = _as_str_list(subjects, "subjects")
    sessions = _as_str_list(sessions, "sessions")
    tasks = _as_str_list(tasks, "tasks")
    runs = _as_str_list(runs, "runs")
    out = []
    for bp in sorted(found, key=lambda p: str(p.fpath)):
        if bp.split is not None and str(bp.split).lstrip("0") != "1":
            continue  # later parts of a split FIF are read with the first
        if (_entity_match(bp.subject, subjects) and _entity_match(bp.session, sessions)
                and _entity_match(bp.task, tasks) and _entity_match(bp.run, runs)):
            out.append(bp)
    return out


def read_bids(root: str | os.PathLike, *, subjects: str | Sequence[str] | None = None,
              sessions: str | Sequence[str] | None = None, tasks: str | Sequence[str] | None = None,
              runs: str | int | Sequence | None = None, datatype: str | None = None,
              preload: bool = True, verbose: bool | str | int | None = None
              ) -> list[tuple[mne.io.BaseRaw, dict]]:
    """Read the EEG/iEEG recordings of a BIDS dataset with mne-bids.

    Parameters
    ----------
    root : path-like
        The BIDS root (the folder holding ``dataset_description.json``).
    subjects, sessions, tasks, runs : str, int, sequence or None
        Keep only these entity values (None keeps all).
    datatype : str or None
        ``'eeg'`` or ``'ieeg'``; None reads both.
    preload : bool
        Load samples into memory (then they are checked for NaN/inf).
    verbose : bool, str, int or None
        MNE's verbosity.

    Returns
    -------
    recordings : list of (mne.io.BaseRaw, dict)
        Each raw (annotations from ``events.tsv``, channel types from ``channels.tsv``) with a
        dict of its ``subject``, ``session``, ``run``, ``task`` (None where the file name has
        none), ``datatype`` and ``path``.

    Raises
    ------
    FileNotFoundError
        The root does not exist.
    ValueError
        The root is not a BIDS root, no recording matches, or a file fails :func:`read_raw`'s
        checks.
    """
    mne_bids = require("mne_bids", purpose="Reading BIDS folders")
    paths = find_bids_recordings(root, subjects=subjects, sessions=sessions, tasks=tasks,
                                 runs=runs, datatype=datatype)
    if not paths:
        raise ValueError(
            f"{str(root)!r}: no EEG/iEEG recording ({', '.join(_BIDS_EXTENSIONS)}) matches "
            f"subjects={subjects!r}, sessions={sessions!r}, tasks={tasks!r}, runs={runs!r}, "
            f"datatype={datatype!r}.")
    out = []
    for bp in paths:
        fpath = Path(bp.fpath)
        if file_extension(fpath) in (".edf", ".bdf"):
            check_edf_size(fpath)
        try:
            raw = mne_bids.read_raw_bids(bp, verbose=verbose if verbose is not None else "error")
        except FileNotFoundError:
            raise
        except (ValueError, RuntimeError, KeyError, IndexError, TypeError, OSError) as err:
            raise ValueError(f"{str(fpath)!r}: mne-bids could not read this recording "
                             f"({type(err).__name__}: {err})") from err
        if preload:
            raw.load_data(verbose="error")
            _check_finite(raw, fpath)
        entities = dict(subject=bp.subject, session=bp.session, run=bp.run, task=bp.task,
                        datatype=bp.datatype, path=fpath)
        out.append((raw, entities))
    return out


# -------------------------------------------------------------------------------------- epoching
def _raw_name(raw) -> str:
    names = [f for f in (getattr(raw, "filenames", None) or ()) if f]
    return repr(str(names[0])) if names else "the recording"


def _stim_events(raw, verbose) -> np.ndarray | None:
    import mne

    if not len(mne.pick_types(raw.info, meg=False, stim=True)):
        return None
    return mne.find_events(raw, stim_channel=None, shortest_event=1, initial_event=True,
                           verbose=verbose if verbose is not None else "error")


def _code_of(key: str) -> int | None:
    try:
        return int(str(key).strip())
    except ValueError:
        return None


def _collect_events(raw, keys: list[str], verbose) -> tuple[np.ndarray, list[str], str, list[str]]:
    """Find the events of ``keys`` in ``raw``.

    Returns ``(events, descriptions, source, found)``: MNE events whose code is the 1-based index
    of the key, the key of each event, ``'annotations'`` or ``'stim'``, and every description
    (or stim code, as text) the recording holds.
    """
    import mne

    descriptions = [str(d) for d in raw.annotations.description]
    found_annot = sorted(set(descriptions))
    code = {k: i + 1 for i, k in enumerate(keys)}
    present = [k for k in keys if k in set(found_annot)]
    if present:
        events, _ = mne.events_from_annotations(
            raw, event_id={k: code[k] for k in present}, regexp=None,
            verbose=verbose if verbose is not None else "error")
        inv = {v: k for k, v in code.items()}
        return events, [inv[c] for c in events[:, 2]], "annotations", found_annot
    stim = _stim_events(raw, verbose)
    if stim is not None:
        found_codes = sorted({int(c) for c in stim[:, 2]})
        wanted = {}
        for k in keys:
            c = _code_of(k)
            if c is not None:
                wanted[c] = k
        mask = np.isin(stim[:, 2], list(wanted))
        if mask.any():
            events = stim[mask].copy()
            descs = [wanted[int(c)] for c in events[:, 2]]
            events[:, 2] = [code[d] for d in descs]
            return events, descs, "stim", [str(c) for c in found_codes]
        found = found_annot + [f"{c} (stim code)" for c in found_codes]
        return np.zeros((0, 3), int), [], "stim", found
    return np.zeros((0, 3), int), [], "annotations", found_annot


def _drop_reason(entry: tuple) -> str:
    if not entry:
        return ""
    if "NO_DATA" in entry or "TOO_SHORT" in entry:
        return "the window runs past the recording"
    return "overlaps annotation(s) " + ", ".join(sorted(set(entry)))


def _picked_info(raw, picks):
    """The info :class:`mne.Epochs` would keep for ``picks`` (no samples are read)."""
    import mne

    probe = mne.Epochs(raw, np.array([[raw.first_samp, 0, 1]]), tmin=0.0, tmax=0.0,
                       baseline=None, picks="data" if picks is None else picks, preload=False,
                       proj=False,
                       reject_by_annotation=False, on_outside="ignore", verbose="error")
    return probe.info.copy()


def _empty_trialset(raw, picks, n_times, classes, meta_columns, tmin):
    import pandas as pd

    from ..data.trialset import TrialSet

    info = _picked_info(raw, picks)
    meta = pd.DataFrame({"onset": pd.Series([], dtype=float), "event": pd.Series([], dtype=str)})
    for k in meta_columns:
        meta[k] = pd.Series([], dtype=str)
    return TrialSet(np.zeros((0, len(info["ch_names"]), n_times), np.float32),
                    np.zeros(0, np.int64), meta, info, classes, tmin)


def _epochs_from_raw(raw, *, event_map: Mapping[str, str], tmin: float, tmax: float,
                     classes: Sequence[str] | None, meta: Mapping[str, Any] | None,
                     baseline, picks, reject_nan: bool, on_missing: str,
                     verbose) -> tuple[TrialSet, set[str], list[str]]:
    import mne
    import pandas as pd

    from ..data.trialset import TrialSet

    owner = "epochs_from_raw"
    validate_type(raw, mne.io.BaseRaw, "raw", owner=owner)
    validate_type(event_map, Mapping, "event_map", owner=owner)
    if not event_map:
        raise ValueError("The 'event_map' parameter of epochs_from_raw must map at least one "
                         "event description to a label.")
    for k, v in event_map.items():
        validate_type(k, str, "event_map key", owner=owner)
        validate_type(v, str, f"event_map[{k!r}]", owner=owner)
    validate_type(tmin, "numeric", "tmin", owner=owner)
    validate_type(tmax, "numeric", "tmax", owner=owner)
    if not tmax > tmin:
        raise ValueError(f"epochs_from_raw needs tmax > tmin; got tmin={tmin}, tmax={tmax}.")
    sfreq = float(raw.info["sfreq"])
    n_times = int(round((tmax - tmin) * sfreq))
    if n_times < 1:
        raise ValueError(f"The window [{tmin}, {tmax}) s holds no sample at {sfreq:g} Hz.")
    labels = list(dict.fromkeys(event_map.values()))
    if classes is None:
        classes = labels
    else:
        classes = [str(c) for c in classes]
        extra = [lab for lab in labels if lab not in classes]
        if extra:
            raise ValueError(f"epochs_from_raw: event_map labels {extra} are not among "
                             f"classes {classes}.")
    meta_columns = dict(meta or {})
    keys = list(event_map)
    events, descs, source, found = _collect_events(raw, keys, verbose)
    present = set(descs)
    missing = [k for k in keys if k not in present]
    if missing and on_missing == "raise":
        raise ValueError(
            f"epochs_from_raw: event(s) {missing} of event_map do not occur in {_raw_name(raw)}; "
            f"it holds {found if found else 'no annotations and no stim events'}.")
    first_tmin = round(tmin * sfreq) / sfreq
    if not len(events):
        return (_empty_trialset(raw, picks, n_times, classes, meta_columns, first_tmin),
                present, found)

    event_id = {k: i + 1 for i, k in enumerate(keys) if k in present}
    epochs = mne.Epochs(raw, events, event_id=event_id, tmin=tmin, tmax=tmin + n_times / sfreq,
                        baseline=baseline, picks="data" if picks is None else picks, preload=True,
                        reject_by_annotation=True, on_missing="ignore", on_outside="ignore",
                        proj=False, verbose=verbose if verbose is not None else "error")
    selection = np.asarray(epochs.selection, int)
    if len(selection) < len(events):
        reasons = {}
        for i in range(len(events)):
            reason = _drop_reason(epochs.drop_log[i])
            if reason:
                reasons.setdefault(reason, 0)
                reasons[reason] += 1
        text = "; ".join(f"{n} because {r}" for r, n in reasons.items())
        warn(f"epochs_from_raw dropped {len(events) - len(selection)} of {len(events)} trials of "
             f"{_raw_name(raw)}: {text}.")
    X = epochs.get_data(copy=False)
    if X.shape[2] < n_times:  # pragma: no cover - guarded by the tmax chosen above
        raise RuntimeError(f"MNE returned {X.shape[2]} samples per trial, expected {n_times}.")
    X = np.ascontiguousarray(X[:, :, :n_times], dtype=np.float32)
    kept = [descs[i] for i in selection]
    y = np.array([classes.index(event_map[d]) for d in kept], dtype=np.int64)
    frame = pd.DataFrame({
        "onset": (events[selection, 0] - raw.first_samp) / sfreq,
        "event": kept,
    })
    for col, value in meta_columns.items():
        frame[col] = str(value) if col in ("subject", "session", "run", "dataset", "site") \
            else value
    finite = np.isfinite(X).all(axis=(1, 2))
    check_finite = True
    if not finite.all():
        bad = np.flatnonzero(~finite)
        onsets = ", ".join(f"{o:.3f}" for o in frame["onset"].to_numpy()[bad][:5])
        if reject_nan:
            warn(f"epochs_from_raw dropped {bad.size} trial(s) of {_raw_name(raw)} that hold NaN "
                 f"or infinite samples (onsets {onsets} s).")
            X, y = X[finite], y[finite]
            frame = frame.loc[finite].reset_index(drop=True)
        else:
            check_finite = False
    trials = TrialSet(X, y, frame, epochs.info.copy(), classes, float(epochs.tmin),
                      check_finite=check_finite)
    logger.info("epochs_from_raw: %d trials from %s (%s)", len(trials), _raw_name(raw), source)
    return trials, present, found


def epochs_from_raw(raw: mne.io.BaseRaw, *, event_map: Mapping[str, str], tmin: float,
                    tmax: float, classes: Sequence[str] | None = None,
                    meta: Mapping[str, Any] | None = None,
                    baseline: tuple[float | None, float | None] | None = None,
                    picks: str | Sequence | None = None, reject_nan: bool = True,
                    verbose: bool | str | int | None = None) -> TrialSet:
    """Cut labelled trials ``[tmin, tmax)`` around events into a TrialSet.

    Parameters
    ----------
    raw : mne.io.BaseRaw
        The continuous recording.
    event_map : dict of str to str
        Event description -> class label, e.g. ``{"T1": "left_hand", "T2": "right_hand"}``.
        Several descriptions may share a label. Events come from the annotations when any key is
        among their descriptions, otherwise from the stim channel, whose codes are then written
        as text (``{"1": "left", "2": "right"}``). Descriptions not in the map are ignored.
    tmin, tmax : float
        Window in seconds relative to each event onset. Every trial has exactly
        ``round((tmax - tmin) * sfreq)`` samples, the first at ``round(tmin * sfreq)``.
    classes : sequence of str or None
        Order of the class names (``y == k`` means ``classes[k]``); must include every label of
        ``event_map``. Default: labels in order of first appearance in ``event_map``.
    meta : dict or None
        Values written into every trial's metadata row, e.g. ``subject``, ``session``, ``run``,
        ``dataset``, ``site`` (stored as text).
    baseline : tuple or None
        Baseline correction interval, as for :class:`mne.Epochs` (None: no correction).
    picks : str, list or None
        Channels to keep (MNE ``picks``); None keeps the data channels (EEG, sEEG, ECoG, MEG,
        ...: MNE's "data" channels), dropping stim/EOG/ECG/EMG/misc channels.
    reject_nan : bool
        Drop trials holding NaN or infinite samples (with a warning); False keeps them.
    verbose : bool, str, int or None
        MNE's verbosity.

    Returns
    -------
    trials : TrialSet
        ``X`` float32 ``(n_trials, n_channels, n_times)`` in **volts** (MNE's unit for
        EEG/sEEG/ECoG), ``y`` codes into ``classes``, ``meta`` with ``onset`` (seconds from the
        start of the recording), ``event`` (the description) and the ``meta`` columns. Trials whose
        window leaves the recording or overlaps a ``BAD_`` annotation are dropped with a warning.

    Raises
    ------
    ValueError
        A key of ``event_map`` does not occur in the recording (the message lists what does),
        ``tmax <= tmin``, or a label is missing from ``classes``.

    Examples
    --------
    >>> trials = epochs_from_raw(raw, event_map={"T1": "left", "T2": "right"},
    ...                          tmin=0.5, tmax=2.5)  # doctest: +SKIP
    """
    validate_type(reject_nan, bool, "reject_nan", owner="epochs_from_raw")
    trials, _, _ = _epochs_from_raw(raw, event_map=event_map, tmin=tmin, tmax=tmax,
                                    classes=classes, meta=meta, baseline=baseline, picks=picks,
                                    reject_nan=reject_nan, on_missing="raise", verbose=verbose)
    return trials
