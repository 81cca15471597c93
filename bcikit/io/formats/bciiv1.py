"""BCI Competition IV data set 1 ("Blankertz2007"): the competition's MATLAB files.

The Berlin BCI group's data set 1 of BCI Competition IV holds, for each of 7 subjects ``a`` to
``g``, a calibration recording of 59 EEG channels with 200 cued motor-imagery trials (100 per
class) of two classes the subject chose among left hand, right hand and foot, and an evaluation
recording without cues. It comes at 1000 Hz (``BCICIV_1calib_1000Hz_mat.zip``: files
``BCICIV_calib_ds1<s>_1000Hz.mat``) and downsampled to 100 Hz (``BCICIV_1_mat.zip``: files
``BCICIV_calib_ds1<s>.mat``). Each file holds (as the competition describes it):

``cnt``
    the continuous signals, ``int16`` of shape (time, channels), in units of 0.1 uV
    (``uV = 0.1 * cnt``).
``mrk.pos``, ``mrk.y``
    the cues: their positions (1-based sample indices, as MATLAB counts) and their classes
    (-1 for the first class of ``nfo.classes``, 1 for the second). Evaluation files lack ``mrk``.
``nfo.fs``, ``nfo.clab``, ``nfo.classes``, ``nfo.xpos``, ``nfo.ypos``
    sampling rate, channel labels, the two class names (``'left'``, ``'right'`` or ``'foot'``),
    and the electrodes' 2-D layout positions.

Subjects ``c``, ``d`` and ``e`` are reported to be artificially generated data (see
:data:`ARTIFICIAL_SUBJECTS`); report results on them apart from the recorded subjects.

The files are distributed by the competition after registration
(https://www.bbci.de/competition/iv/#download). :func:`fetch_bciiv1` fetches an archive from the
competition's download folder and unpacks the files it needs; when that is refused it says how
to get them by hand.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...utils import check_file, logger, validate_type

if TYPE_CHECKING:  # pragma: no cover
    import mne

#: Subject letters of data set 1.
SUBJECTS: tuple[str, ...] = ("a", "b", "c", "d", "e", "f", "g")
#: Subjects reported to be artificially generated (not recorded from a person).
ARTIFICIAL_SUBJECTS: tuple[str, ...] = ("c", "d", "e")
#: Where the competition explains how to register and download the data.
DOWNLOAD_PAGE = "https://www.bbci.de/competition/iv/#download"
#: The competition's download folder.
BASE_URL = "https://www.bbci.de/competition/download/competition_iv/"
#: Archive of the calibration files at each sampling rate.
ARCHIVES: dict[int, str] = {1000: "BCICIV_1calib_1000Hz_mat.zip", 100: "BCICIV_1_mat.zip"}
#: Microvolts per ``cnt`` unit.
UV_PER_UNIT = 0.1
#: How long each calibration cue stayed on screen (s): the annotations' duration.
CUE_SECONDS = 4.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class BCIIV1Recording:
    """The content of one data-set-1 file, validated.

    Attributes
    ----------
    data : ndarray, shape (n_channels, n_times)
        Signals in volts (float64).
    sfreq : float
        Sampling rate (``nfo.fs``).
    ch_names : list of str
        Channel labels (``nfo.clab``).
    classes : list of str
        The subject's two classes (``nfo.classes``): ``y == -1`` is ``classes[0]``.
    onsets : ndarray of int, shape (n_cues,)
        Cue positions as 0-based sample indices (``mrk.pos - 1``); empty without ``mrk``.
    y : ndarray of int, shape (n_cues,)
        Cue classes, -1 or 1 (``mrk.y``); empty without ``mrk``.
    xpos, ypos : ndarray or None
        Electrode positions in the competition's 2-D layout (``nfo.xpos``, ``nfo.ypos``).
    """

    data: np.ndarray
    sfreq: float
    ch_names: list[str]
    classes: list[str]
    onsets: np.ndarray
    y: np.ndarray
    xpos: np.ndarray | None = None
    ypos: np.ndarray | None = None

    @property
    def labels(self) -> list[str]:
        """Each cue's class name."""
        return [self.classes[0] if v == -1 else self.classes[1] for v in self.y]


def calib_filename(subject: str, sfreq: int = 1000) -> str:
    """Name of subject ``subject``'s calibration file in the archive of rate ``sfreq``.

    >>> calib_filename("a")
    'BCICIV_calib_ds1a_1000Hz.mat'
    >>> calib_filename("g", 100)
    'BCICIV_calib_ds1g.mat'
    """
    _check_subject(subject)
    _check_sfreq(sfreq)
    return f"BCICIV_calib_ds1{subject}_1000Hz.mat" if sfreq == 1000 else \
        f"BCICIV_calib_ds1{subject}.mat"


# ------------------------------------------------------------------------------------- reading
def _field(container: Any, name: str, path: Path, where: str) -> Any:
    if not isinstance(container, dict) or name not in container:
        raise ValueError(f"{str(path)!r} is not a BCI Competition IV data set 1 file: it lacks the "
                         f"field {where!r}.")
    return container[name]


def _strings(value: Any, path: Path, where: str) -> list[str]:
    if isinstance(value, str):
        items: list | None = [value]
    elif isinstance(value, (list, tuple, np.ndarray)):
        items = list(np.asarray(value, dtype=object).ravel())
    else:
        items = None
    if items is None or not items or not all(isinstance(v, str) for v in items):
        raise ValueError(f"{str(path)!r}: the field {where!r} must be a cell array of strings; got "
                         f"{type(value).__name__} {value!r:.80}.")
    return [str(v) for v in items]


def _numbers(value: Any, path: Path, where: str) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(value))
    if arr.dtype.kind not in "iuf" or arr.ndim != 1:
        raise ValueError(f"{str(path)!r}: the field {where!r} must be a numeric vector; got "
                         f"{arr.dtype} of shape {arr.shape}.")
    return arr


def load_bciiv1(path: str | os.PathLike, *, require_markers: bool = True) -> BCIIV1Recording:
    """Read and check one BCI Competition IV data set 1 ``.mat`` file.

    Parameters
    ----------
    path : path-like
        A calibration (``BCICIV_calib_ds1<s>[_1000Hz].mat``) or evaluation file.
    require_markers : bool
        Raise when the file has no ``mrk`` (evaluation files have none). With False such a file
        reads with no cues.

    Returns
    -------
    recording : BCIIV1Recording
        Signals in volts (``cnt`` x 0.1 uV), cues as 0-based sample indices.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Not a MATLAB file, or a field is missing or malformed (the message names the file and the
        field, e.g. ``'nfo.classes'``).
    """
    from scipy.io import loadmat

    validate_type(path, "path-like", "path", owner="load_bciiv1")
    validate_type(require_markers, bool, "require_markers", owner="load_bciiv1")
    path = check_file(path, what="BCI Competition IV data set 1 file")
    try:
        mat = loadmat(str(path), simplify_cells=True)
    except (ValueError, TypeError, OSError, NotImplementedError) as err:
        raise ValueError(f"{str(path)!r} is not a readable MATLAB (.mat) file: {err}") from err

    cnt = np.asarray(_field(mat, "cnt", path, "cnt"))
    if cnt.ndim != 2 or cnt.dtype.kind not in "iuf" or 0 in cnt.shape:
        raise ValueError(f"{str(path)!r}: the field 'cnt' must be a non-empty numeric array of "
                         f"shape (time, channels); got {cnt.dtype} of shape {cnt.shape}.")
    nfo = _field(mat, "nfo", path, "nfo")
    fs_arr = np.asarray(_field(nfo, "fs", path, "nfo.fs"))
    if fs_arr.size != 1 or fs_arr.dtype.kind not in "iuf" or not float(fs_arr.ravel()[0]) > 0:
        raise ValueError(f"{str(path)!r}: the field 'nfo.fs' must be a positive number; got "
                         f"{fs_arr!r:.60}.")
    sfreq = float(fs_arr.ravel()[0])
    ch_names = _strings(_field(nfo, "clab", path, "nfo.clab"), path, "nfo.clab")
    if len(ch_names) != cnt.shape[1]:
        raise ValueError(f"{str(path)!r}: 'nfo.clab' names {len(ch_names)} channels but 'cnt' has "
                         f"{cnt.shape[1]} columns (expected shape (time, channels)).")
    if len(set(ch_names)) != len(ch_names):
        raise ValueError(f"{str(path)!r}: 'nfo.clab' has duplicate channel labels.")
    classes = _strings(_field(nfo, "classes", path, "nfo.classes"), path, "nfo.classes")
    if len(classes) != 2 or classes[0] == classes[1]:
        raise ValueError(f"{str(path)!r}: the field 'nfo.classes' must hold two different class "
                         f"names; got {classes}.")
    positions = []
    for name in ("xpos", "ypos"):
        if name in nfo:
            pos = _numbers(nfo[name], path, f"nfo.{name}").astype(float)
            if len(pos) != len(ch_names):
                raise ValueError(f"{str(path)!r}: 'nfo.{name}' has {len(pos)} entries for "
                                 f"{len(ch_names)} channels.")
            positions.append(pos)
        else:
            positions.append(None)

    n_times = cnt.shape[0]
    if "mrk" in mat:
        mrk = mat["mrk"]
        pos = _numbers(_field(mrk, "pos", path, "mrk.pos"), path, "mrk.pos")
        y = _numbers(_field(mrk, "y", path, "mrk.y"), path, "mrk.y")
        if len(pos) != len(y):
            raise ValueError(f"{str(path)!r}: 'mrk.pos' has {len(pos)} cues but 'mrk.y' has "
                             f"{len(y)}.")
        if not np.all(np.isin(y, (-1, 1))):
            raise ValueError(f"{str(path)!r}: the field 'mrk.y' must hold -1 or 1 for each cue; "
                             f"got {sorted(set(np.unique(y).tolist()))[:6]}.")
        whole = bool(np.all(np.mod(pos, 1) == 0))
        if not whole or pos.min(initial=1) < 1 or pos.max(initial=1) > n_times:
            raise ValueError(f"{str(path)!r}: the field 'mrk.pos' must hold 1-based sample indices "
                             f"within 1..{n_times}; got values in [{pos.min():g}, {pos.max():g}].")
        onsets, y = pos.astype(np.int64) - 1, y.astype(np.int64)
    elif require_markers:
        raise ValueError(f"{str(path)!r} is not a BCI Competition IV data set 1 calibration file: "
                         "it lacks the field 'mrk' (cue positions and classes); evaluation files "
                         "have none (pass require_markers=False to read one).")
    else:
        onsets, y = np.zeros(0, np.int64), np.zeros(0, np.int64)
    data = cnt.T.astype(np.float64)  # one float copy (the 1000 Hz files hold ~2e6 x 59 samples)
    data *= UV_PER_UNIT * 1e-6
    return BCIIV1Recording(data=data, sfreq=sfreq, ch_names=ch_names, classes=classes,
                           onsets=onsets, y=y, xpos=positions[0], ypos=positions[1])


def read_bciiv1(path: str | os.PathLike, *, require_markers: bool = True,
                verbose: bool | str | int | None = None) -> mne.io.RawArray:
    """Read a BCI Competition IV data set 1 file as an MNE Raw.

    Parameters
    ----------
    path : path-like
        A ``BCICIV_calib_ds1<s>[_1000Hz].mat`` file (or an evaluation file with
        ``require_markers=False``).
    require_markers : bool
        See :func:`load_bciiv1`.
    verbose : bool, str, int or None
        MNE's verbosity.

    Returns
    -------
    raw : mne.io.RawArray
        EEG channels in volts named by ``nfo.clab``, sampled at ``nfo.fs``. Each cue is an
        annotation at its sample (``mrk.pos``, 1-based in the file), lasting the 4 s the cue was
        shown, described by its class name from ``nfo.classes`` (``mrk.y == -1``: the first).

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`load_bciiv1`.

    Examples
    --------
    >>> raw = read_bciiv1("BCICIV_calib_ds1a_1000Hz.mat")  # doctest: +SKIP
    >>> sorted(set(raw.annotations.description))  # doctest: +SKIP
    ['foot', 'left']
    """
    import mne

    rec = load_bciiv1(path, require_markers=require_markers)
    info = mne.create_info(rec.ch_names, rec.sfreq, "eeg")
    raw = mne.io.RawArray(rec.data, info, verbose=verbose if verbose is not None else "error")
    if len(rec.onsets):
        raw.set_annotations(mne.Annotations(rec.onsets / rec.sfreq,
                                            np.full(len(rec.onsets), CUE_SECONDS), rec.labels))
    raw.info["description"] = (f"BCI Competition IV data set 1, {Path(path).name}; classes "
                               f"{rec.classes[0]} (y=-1), {rec.classes[1]} (y=1)")
    return raw


# ------------------------------------------------------------------------------------- fetching
def _check_subject(subject: Any) -> None:
    if subject not in SUBJECTS:
        raise ValueError(f"BCI Competition IV data set 1 has subjects {list(SUBJECTS)}; got "
                         f"{subject!r}.")


def _check_sfreq(sfreq: Any) -> None:
    if sfreq not in ARCHIVES:
        raise ValueError(f"BCI Competition IV data set 1 comes at {sorted(ARCHIVES)} Hz; got "
                         f"{sfreq!r}.")


def _instructions(archive: str, root: Path) -> str:
    return (f"The BCI Competition IV data are distributed after registration: fill in the form at "
            f"{DOWNLOAD_PAGE}, download {archive} and unzip its .mat files into {str(root)!r}.")


def fetch_bciiv1(root: str | os.PathLike, subjects: Sequence[str] | None = None, *,
                 sfreq: int = 1000, url: str | None = None,
                 verbose: bool | str | int | None = None) -> list[Path]:
    """Download the calibration files of data set 1 into ``root`` (missing ones only).

    The competition's archive (:data:`ARCHIVES`) is fetched from :data:`BASE_URL` into a
    temporary file beside ``root``, the subjects' ``.mat`` files are unpacked, and the archive is
    removed. Files already in ``root`` are neither downloaded nor overwritten.

    Parameters
    ----------
    root : path-like
        Folder for the ``.mat`` files (created when missing).
    subjects : sequence of str or None
        Subject letters (default: all of :data:`SUBJECTS`).
    sfreq : {1000, 100}
        Which version: the original 1000 Hz files or the 100 Hz ones.
    url : str or None
        The archive's address (default: :data:`BASE_URL` + the archive's name).
    verbose : bool, str, int or None
        Progress messages through the bcikit logger when true.

    Returns
    -------
    paths : list of Path
        The subjects' calibration files, in ``subjects`` order.

    Raises
    ------
    ConnectionError
        The download failed or was refused (the competition asks users to register); the
        message says where to register and where to put the files.
    ValueError
        Unknown subject or rate; the archive is not a zip file or lacks a subject's file.
    """
    validate_type(root, "path-like", "root", owner="fetch_bciiv1")
    subjects = list(SUBJECTS if subjects is None else subjects)
    for s in subjects:
        _check_subject(s)
    _check_sfreq(sfreq)
    root = Path(root).expanduser()
    targets = {s: root / calib_filename(s, sfreq) for s in subjects}
    wanted = {p.name: p for p in targets.values() if not p.is_file()}
    if not wanted:
        return list(targets.values())
    archive = ARCHIVES[sfreq]
    url = url or BASE_URL + archive
    say = logger.warning if verbose else logger.info
    say("Downloading %s for BCI Competition IV data set 1 (cite Blankertz et al., NeuroImage "
        "37:539-550, 2007, and Tangermann et al., Front. Neurosci. 6:55, 2012).", url)
    root.mkdir(parents=True, exist_ok=True)
    part = root / f".{archive}.part"
    try:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
                shutil.copyfileobj(response, out, _CHUNK)
        except (urllib.error.URLError, OSError) as err:
            raise ConnectionError(f"Could not download {url} ({err}). "
                                  f"{_instructions(archive, root)}") from err
        try:
            zf = zipfile.ZipFile(part)
        except zipfile.BadZipFile as err:
            raise ValueError(f"{url} did not return a zip archive (the site may have answered "
                             f"with its registration page). "
                             f"{_instructions(archive, root)}") from err
        with zf:
            members = {Path(m).name: m for m in zf.namelist() if not m.endswith("/")}
            absent = sorted(n for n in wanted if n not in members)
            if absent:
                raise ValueError(f"The archive {url} lacks {absent}; it holds "
                                 f"{sorted(members)[:10]}.")
            for name, target in wanted.items():
                tmp = target.with_name(f".{name}.part")
                with zf.open(members[name]) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
                if target.exists():  # never overwrite a file that appeared meanwhile
                    tmp.unlink()
                else:
                    tmp.replace(target)
    finally:
        if part.exists():
            part.unlink()
    return list(targets.values())


def fetch_for_card(card, missing, root: Path, verbose) -> None:
    """Card fetcher (``[files] fetcher = "bciiv1"``): fetch the missing subjects' files.

    The version (1000 Hz or 100 Hz) follows the card's file names (``..._1000Hz.mat`` or not).
    """
    sfreq = 1000 if "1000Hz" in card.pattern else 100
    subjects = list(dict.fromkeys(str(r.subject) for r in missing))
    bad = [s for s in subjects if s not in SUBJECTS]
    if bad:
        raise ValueError(f"{card.path}: [files] fetcher 'bciiv1' knows subjects {list(SUBJECTS)}; "
                         f"got {bad}.")
    fetch_bciiv1(root, subjects, sfreq=sfreq, verbose=verbose)


__all__ = ["ARCHIVES", "ARTIFICIAL_SUBJECTS", "BASE_URL", "BCIIV1Recording", "DOWNLOAD_PAGE",
           "SUBJECTS", "calib_filename", "fetch_bciiv1", "fetch_for_card", "load_bciiv1",
           "read_bciiv1"]
