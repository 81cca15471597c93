"""Brain Treebank reader: per-session HDF5 recordings, electrodes, triggers and movie annotations.

The Brain Treebank (Wang et al., NeurIPS Datasets and Benchmarks 2024, https://braintreebank.dev)
holds sEEG recorded at 2048 Hz while children and adolescents watched feature films. A release
folder (``root``) holds, for subject ``s`` and trial (session) ``t``:

=====================================================  ==========================================
file (default name, see :class:`BrainTreebankLayout`)  content
=====================================================  ==========================================
``sub_<s>_trial<ttt>.h5``                              group ``data``, one 1-D dataset
                                                       ``electrode_<i>`` per electrode
``electrode_labels/sub_<s>/electrode_labels.json``     labels in h5 order (``*``/``#`` stripped)
``corrupted_elec.json``                                ``{"sub_<s>": [labels]}`` to drop
``localization/sub_<s>/depth-wm.csv``                  ``Electrode``, ``L``, ``P``, ``I``,
                                                       ``DesikanKilliany``
``subject_metadata/sub_<s>_trial<ttt>_metadata.json``  ``filename`` (movie id), ``title``
``subject_timings/sub_<s>_trial<ttt>_timings.csv``     triggers: ``movie_time`` (s), ``index``
``transcripts/<movie>/features.csv``                   one row per word: ``text``, ``start``,
                                                       ``end``, ``sentence``, ``sentence_idx``...
``scene_annotations/<movie>/scenes.csv``               scene cuts (movie seconds); **file and
                                                       column names not yet confirmed against
                                                       the release**: a card may rename them
=====================================================  ==========================================

Electrodes listed as corrupted and labels starting with ``DC`` or ``TRIG`` (trigger and DC
channels) are dropped. A movie time ``t`` maps to the sample ``index_k + round((t - movie_time_k)
* sfreq)`` of the nearest trigger ``k``; events after the last trigger are dropped. Signals are
read lazily, one electrode at a time (:meth:`BrainTreebankSession.iter_data`), so that a session
never has to fit in memory. Values are returned as stored in the file (no unit conversion).

A missing file or column raises ``ValueError`` naming the file and the layout field or column.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..utils import logger, set_log_level, validate_type

if TYPE_CHECKING:  # pragma: no cover
    import mne

__all__ = [
    "SFREQ",
    "BASE_URL",
    "BrainTreebankLayout",
    "BrainTreebankSession",
    "read_session",
    "clean_label",
    "round_half_up",
    "read_braintreebank",
    "fetch_braintreebank",
    "fetch_for_card",
    "layout_as_dict",
]

#: Sampling rate of the Brain Treebank recordings (Hz), used when a file does not store one.
SFREQ = 2048.0
#: Where the release files are published (``https://braintreebank.dev``).
BASE_URL = "https://braintreebank.dev/data/"
#: Archives shared by all sessions (release names) and the folder each one provides.
SHARED_ARCHIVES = {
    "localization.zip": "localization",
    "subject_timings.zip": "subject_timings",
    "subject_metadata.zip": "subject_metadata",
    "electrode_labels.zip": "electrode_labels",
    "transcripts.zip": "transcripts",
    "scene_annotations.zip": "scene_annotations",
}
_DROP_PREFIXES = ("DC", "TRIG")
_H5_NAME = re.compile(r"^sub_(?P<subject>[^_]+)_trial(?P<trial>\d+)\.h5$")


def clean_label(label: str) -> str:
    """An electrode label without the ``*`` and ``#`` marks the release puts on some labels."""
    return str(label).replace("*", "").replace("#", "").strip()


def round_half_up(x) -> np.ndarray:
    """Round to the nearest integer, halves upwards (``floor(x + 0.5)``), as int64."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


@dataclass(frozen=True)
class BrainTreebankLayout:
    """File names of a Brain Treebank release, relative to its root folder.

    Each field is a Python format string with the placeholders ``{subject}``, ``{trial}`` (int)
    and, for movie files, ``{movie}``. A dataset card's ``[reader]`` table (or keyword arguments)
    overrides any field; :meth:`from_options` builds a layout from such a table.

    Attributes
    ----------
    h5, labels, corrupted, localization, metadata, timings, transcript, scenes : str
        File patterns (see the module docstring for the defaults).
    scene_column : str
        Column of the scene file holding the cut times (movie seconds).
    """

    h5: str = "sub_{subject}_trial{trial:03d}.h5"
    labels: str = "electrode_labels/sub_{subject}/electrode_labels.json"
    corrupted: str = "corrupted_elec.json"
    localization: str = "localization/sub_{subject}/depth-wm.csv"
    metadata: str = "subject_metadata/sub_{subject}_trial{trial:03d}_metadata.json"
    timings: str = "subject_timings/sub_{subject}_trial{trial:03d}_timings.csv"
    transcript: str = "transcripts/{movie}/features.csv"
    scenes: str = "scene_annotations/{movie}/scenes.csv"
    scene_column: str = "start"

    @classmethod
    def from_options(cls, options: dict | None) -> BrainTreebankLayout:
        """A layout from a mapping of field names to strings (unknown names are refused)."""
        if not options:
            return cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"Unknown Brain Treebank layout field(s) {unknown}; known: "
                             f"{sorted(known)}.")
        for key, value in options.items():
            if not isinstance(value, str):
                raise TypeError(f"The Brain Treebank layout field {key!r} must be a string; got "
                                f"{value!r}.")
        return replace(cls(), **options)

    def path(self, root: Path, field: str, **values) -> Path:
        """The file ``field`` for these placeholder values."""
        pattern = getattr(self, field)
        try:
            return Path(root) / pattern.format(**values)
        except (KeyError, ValueError, IndexError) as err:
            raise ValueError(f"The Brain Treebank layout field {field!r} ({pattern!r}) cannot be "
                             f"formatted with {values}: {err}") from err


def _need(path: Path, field: str) -> Path:
    if not path.is_file():
        raise ValueError(f"Brain Treebank file {str(path)!r} (layout field {field!r}) does not "
                         f"exist.")
    return path


def _read_csv(path: Path, field: str, columns: Sequence[str]) -> pd.DataFrame:
    _need(path, field)
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise ValueError(f"Brain Treebank file {str(path)!r} (layout field {field!r}) is not a "
                         f"readable CSV table: {err}") from err
    df = df.loc[:, [c for c in df.columns if not str(c).startswith("Unnamed")]]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"Brain Treebank file {str(path)!r} (layout field {field!r}) has no "
                         f"column(s) {missing}; its columns are {list(df.columns)}.")
    return df


def _read_json(path: Path, field: str):
    _need(path, field)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"Brain Treebank file {str(path)!r} (layout field {field!r}) is not "
                         f"valid JSON: {err}") from err


class BrainTreebankSession:
    """One subject's trial (one movie viewing) of a Brain Treebank release.

    Build it with :func:`read_session`. Opening a session reads only the small files (labels,
    localization, metadata, triggers) and the shapes of the HDF5 datasets; signals are read on
    demand with :meth:`get_data` / :meth:`iter_data`.

    Attributes
    ----------
    root : Path
        The release folder.
    subject : str
        Subject id (``"1"``).
    trial : int
        Trial number.
    layout : BrainTreebankLayout
        File names.
    path : Path
        The HDF5 file.
    sfreq : float
        Sampling rate: the ``sfreq`` attribute of the ``data`` group when the file has one,
        else the ``sfreq`` argument, else :data:`SFREQ` (2048 Hz, the release's rate).
    n_samples : int
        Samples per electrode.
    movie : str
        Movie id (metadata ``filename``); names the transcript and scene files.
    title : str or None
        Movie title (metadata ``title``) when present.
    labels : list of str
        All labels in HDF5 order, cleaned.
    electrodes : DataFrame
        The kept electrodes in HDF5 order: ``name``, ``h5_index``, ``shaft``, ``contact``,
        ``x``, ``y``, ``z`` (millimetres, RAS: ``x = -L``, ``y = -P``, ``z = -I``; NaN when the
        localization file lacks the electrode), ``region`` (``DesikanKilliany``; ``"unknown"``
        when absent), ``L``, ``P``, ``I``.
    dropped : dict of str to str
        Dropped labels and why (``"corrupted"`` or ``"trigger/DC"``).
    triggers : DataFrame
        ``movie_time`` (s) and ``index`` (sample), sorted by movie time.
    """

    def __init__(self, root: Path, subject: str, trial: int, layout: BrainTreebankLayout,
                 sfreq: float | None = None):
        import h5py

        from .ieeg import parse_contact_name

        self.root = Path(root)
        self.subject = str(subject)
        self.trial = int(trial)
        self.layout = layout
        keys = {"subject": self.subject, "trial": self.trial}
        self.path = _need(layout.path(self.root, "h5", **keys), "h5")

        raw_labels = _read_json(layout.path(self.root, "labels", **keys), "labels")
        if not isinstance(raw_labels, list) or not all(isinstance(x, str) for x in raw_labels):
            labels_file = layout.path(self.root, "labels", **keys)
            raise ValueError(f"Brain Treebank file {str(labels_file)!r} (layout field 'labels') "
                             f"must hold a JSON list of label strings.")
        self.labels = [clean_label(x) for x in raw_labels]
        corrupted_file = layout.path(self.root, "corrupted", **keys)
        corrupted_all = _read_json(corrupted_file, "corrupted")
        if not isinstance(corrupted_all, dict):
            raise ValueError(f"Brain Treebank file {str(corrupted_file)!r} (layout field "
                             f"'corrupted') must hold a JSON object {{'sub_<s>': [labels]}}.")
        corrupted = {clean_label(x) for x in corrupted_all.get(f"sub_{self.subject}", [])}

        with h5py.File(self.path, "r") as f:
            if "data" not in f:
                raise ValueError(f"Brain Treebank file {str(self.path)!r} has no group 'data'.")
            group = f["data"]
            lengths = {}
            for i in range(len(self.labels)):
                key = f"electrode_{i}"
                if key not in group:
                    raise ValueError(f"Brain Treebank file {str(self.path)!r} has no dataset "
                                     f"'data/{key}' for label {self.labels[i]!r} (the label file "
                                     f"lists {len(self.labels)} electrodes).")
                lengths[i] = int(group[key].shape[0])
            file_sfreq = group.attrs.get("sfreq")
        if file_sfreq is not None:
            self.sfreq = float(file_sfreq)
            if sfreq is not None and float(sfreq) != self.sfreq:
                raise ValueError(f"sfreq={sfreq} disagrees with the rate {self.sfreq} stored in "
                                 f"{str(self.path)!r}.")
        else:
            self.sfreq = float(SFREQ if sfreq is None else sfreq)

        self.dropped: dict[str, str] = {}
        kept = []
        for i, name in enumerate(self.labels):
            if name in corrupted:
                self.dropped[name] = "corrupted"
            elif name.upper().startswith(_DROP_PREFIXES):
                self.dropped[name] = "trigger/DC"
            else:
                kept.append(i)
        if not kept:
            raise ValueError(f"Brain Treebank session sub_{self.subject} trial {self.trial}: no "
                             f"electrode left after dropping corrupted and trigger/DC channels.")
        sizes = {lengths[i] for i in kept}
        if len(sizes) != 1:
            raise ValueError(f"Brain Treebank file {str(self.path)!r}: electrodes have different "
                             f"lengths {sorted(sizes)}.")
        self.n_samples = sizes.pop()

        loc_file = layout.path(self.root, "localization", **keys)
        loc = _read_csv(loc_file, "localization", ["Electrode", "L", "P", "I"])
        region_col = "DesikanKilliany"
        if region_col not in loc.columns:
            raise ValueError(f"Brain Treebank file {str(loc_file)!r} (layout field "
                             f"'localization') has no column {region_col!r}; its columns are "
                             f"{list(loc.columns)}.")
        loc = loc.assign(Electrode=[clean_label(x) for x in loc["Electrode"]])
        loc = loc.drop_duplicates("Electrode").set_index("Electrode")
        rows = []
        for i in kept:
            name = self.labels[i]
            shaft, contact = parse_contact_name(name)
            if name in loc.index:
                lpi = [float(loc.at[name, c]) for c in ("L", "P", "I")]
                region = loc.at[name, region_col]
                region = "unknown" if pd.isna(region) else str(region)
            else:
                lpi, region = [np.nan] * 3, "unknown"
            rows.append({"name": name, "h5_index": i, "shaft": shaft, "contact": contact,
                         "x": -lpi[0], "y": -lpi[1], "z": -lpi[2], "region": region,
                         "L": lpi[0], "P": lpi[1], "I": lpi[2]})
        self.electrodes = pd.DataFrame(rows)
        self.electrodes["contact"] = self.electrodes["contact"].astype("Int64")

        meta_file = layout.path(self.root, "metadata", **keys)
        meta = _read_json(meta_file, "metadata")
        if not isinstance(meta, dict) or "filename" not in meta:
            raise ValueError(f"Brain Treebank file {str(meta_file)!r} (layout field 'metadata') "
                             f"has no key 'filename' (the movie id).")
        self.movie = str(meta["filename"])
        self.title = None if meta.get("title") is None else str(meta["title"])

        timings_file = layout.path(self.root, "timings", **keys)
        trig = _read_csv(timings_file, "timings", ["movie_time", "index"])
        trig = trig.loc[:, ["movie_time", "index"]].apply(pd.to_numeric, errors="coerce")
        trig = trig.dropna().sort_values("movie_time", kind="stable").reset_index(drop=True)
        if trig.empty:
            raise ValueError(f"Brain Treebank file {str(timings_file)!r} (layout field "
                             f"'timings') holds no trigger with numeric movie_time and index.")
        trig["index"] = trig["index"].astype(np.int64)
        self.triggers = trig
        logger.info("Brain Treebank sub_%s trial %03d: %d electrodes kept, %d dropped, %d samples "
                    "at %g Hz, movie %r", self.subject, self.trial, len(kept), len(self.dropped),
                    self.n_samples, self.sfreq, self.movie)

    def __repr__(self) -> str:
        return (f"<BrainTreebankSession sub_{self.subject} trial {self.trial:03d}: "
                f"{len(self.electrodes)} electrodes, {self.n_samples / self.sfreq:.1f} s at "
                f"{self.sfreq:g} Hz, movie {self.movie!r}>")

    @property
    def ch_names(self) -> list[str]:
        """Names of the kept electrodes, in HDF5 order."""
        return list(self.electrodes["name"])

    # ------------------------------------------------------------------------------ timing
    def movie_to_sample(self, times) -> tuple[np.ndarray, np.ndarray]:
        """Samples of movie times, through the nearest trigger.

        Parameters
        ----------
        times : array-like of float
            Movie times in seconds.

        Returns
        -------
        samples : ndarray of int64
            ``index_k + round((t - movie_time_k) * sfreq)`` with ``k`` the trigger nearest ``t``
            (the earlier one on a tie); -1 where ``keep`` is False.
        keep : ndarray of bool
            False for non-finite times and times after the last trigger.
        """
        t = np.asarray(times, dtype=np.float64).reshape(-1)
        mt = self.triggers["movie_time"].to_numpy(np.float64)
        idx = self.triggers["index"].to_numpy(np.int64)
        keep = np.isfinite(t) & (t <= mt[-1])
        tt = np.where(keep, t, mt[0])
        right = np.clip(np.searchsorted(mt, tt, side="left"), 0, len(mt) - 1)
        left = np.clip(right - 1, 0, len(mt) - 1)
        nearest = np.where(np.abs(tt - mt[left]) <= np.abs(mt[right] - tt), left, right)
        samples = idx[nearest] + round_half_up((tt - mt[nearest]) * self.sfreq)
        return np.where(keep, samples, -1), keep

    # --------------------------------------------------------------------------- annotations
    def transcript_path(self) -> Path:
        """The movie's transcript (``features.csv``)."""
        return self.layout.path(self.root, "transcript", subject=self.subject, trial=self.trial,
                                movie=self.movie)

    def scenes_path(self) -> Path:
        """The movie's scene-cut file."""
        return self.layout.path(self.root, "scenes", subject=self.subject, trial=self.trial,
                                movie=self.movie)

    def words(self, columns: Sequence[str] = ("text", "start")) -> pd.DataFrame:
        """The movie's words (transcript rows) with their samples, in time order.

        Parameters
        ----------
        columns : sequence of str
            Columns that must be present (``ValueError`` naming the file otherwise).

        Returns
        -------
        DataFrame
            All transcript columns plus ``sample``; rows without a start time and rows after the
            last trigger are dropped; sorted by ``start`` (stable).
        """
        path = self.transcript_path()
        df = _read_csv(path, "transcript", list(dict.fromkeys(["start", *columns])))
        df = df.assign(start=pd.to_numeric(df["start"], errors="coerce"))
        df = df[np.isfinite(df["start"].to_numpy(np.float64))]
        df = df.sort_values("start", kind="stable").reset_index(drop=True)
        samples, keep = self.movie_to_sample(df["start"].to_numpy())
        out = df.loc[keep].reset_index(drop=True)
        out["sample"] = samples[keep]
        return out

    def scene_cuts(self) -> pd.DataFrame:
        """The movie's scene cuts with their samples, in time order.

        Returns
        -------
        DataFrame
            ``time`` (movie seconds, from the layout's ``scene_column``) and ``sample``; cuts after
            the last trigger are dropped.
        """
        path = self.scenes_path()
        col = self.layout.scene_column
        df = _read_csv(path, "scenes", [col])
        t = pd.to_numeric(df[col], errors="coerce").to_numpy(np.float64)
        t = np.sort(t[np.isfinite(t)], kind="stable")
        samples, keep = self.movie_to_sample(t)
        return pd.DataFrame({"time": t[keep], "sample": samples[keep]})

    # --------------------------------------------------------------------------------- signals
    def _indices(self, picks) -> list[tuple[str, int]]:
        table = self.electrodes
        if picks is None:
            return list(zip(table["name"], table["h5_index"]))
        if isinstance(picks, str):
            picks = [picks]
        lookup = dict(zip(table["name"], table["h5_index"]))
        out = []
        for p in picks:
            if not isinstance(p, str):
                raise TypeError(f"picks must be electrode names (str); got {p!r}.")
            if p not in lookup:
                why = f" (dropped: {self.dropped[p]})" if p in self.dropped else ""
                raise ValueError(f"Electrode {p!r} is not among the kept electrodes of "
                                 f"{str(self.path)!r}{why}.")
            out.append((p, int(lookup[p])))
        return out

    def _span(self, start: int, stop: int | None) -> tuple[int, int]:
        stop = self.n_samples if stop is None else int(stop)
        start = int(start)
        if not 0 <= start < stop <= self.n_samples:
            raise ValueError(f"start/stop must satisfy 0 <= start < stop <= {self.n_samples}; "
                             f"got start={start}, stop={stop}.")
        return start, stop

    def iter_data(self, picks: Sequence[str] | None = None, start: int = 0,
                  stop: int | None = None, *, dtype=np.float64) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(name, signal)`` one electrode at a time (only one in memory).

        Parameters
        ----------
        picks : sequence of str or None
            Electrode names (default: all kept electrodes, in HDF5 order).
        start, stop : int
            Sample span ``[start, stop)``.
        dtype : numpy dtype
            Type of the returned arrays.
        """
        import h5py

        items = self._indices(picks)
        start, stop = self._span(start, stop)
        with h5py.File(self.path, "r") as f:
            group = f["data"]
            for name, i in items:
                yield name, np.asarray(group[f"electrode_{i}"][start:stop], dtype=dtype)

    def get_data(self, picks: Sequence[str] | None = None, start: int = 0,
                 stop: int | None = None, *, dtype=np.float64) -> np.ndarray:
        """Signals of some electrodes, ``(n_picks, stop - start)``, read electrode by electrode."""
        items = self._indices(picks)
        start, stop = self._span(start, stop)
        out = np.empty((len(items), stop - start), dtype=dtype)
        for k, (_, x) in enumerate(self.iter_data([n for n, _ in items], start, stop,
                                                  dtype=dtype)):
            out[k] = x
        return out

    def to_raw(self, picks: Sequence[str] | None = None, start: int = 0,
               stop: int | None = None, *, scale: float = 1e-6,
               verbose: bool | str | None = None) -> mne.io.RawArray:
        """The kept electrodes as an MNE Raw (``seeg`` channels, positions when localized).

        Parameters
        ----------
        picks, start, stop
            As for :meth:`get_data`.
        scale : float
            Multiplies the stored values (``1e-6``: microvolts to volts, as MNE expects).
        verbose : bool, str or None
            MNE's verbosity.

        Notes
        -----
        This loads every picked electrode at once; for whole sessions prefer :meth:`iter_data`.
        """
        import mne

        items = self._indices(picks)
        names = [n for n, _ in items]
        data = self.get_data(names, start, stop) * float(scale)
        info = mne.create_info(names, self.sfreq, ["seeg"] * len(names), verbose="error")
        raw = mne.io.RawArray(data, info, verbose=verbose if verbose is not None else "error")
        table = self.electrodes.set_index("name")
        pos = {n: table.loc[n, ["x", "y", "z"]].to_numpy(np.float64) / 1000.0 for n in names}
        pos = {n: p for n, p in pos.items() if np.isfinite(p).all()}
        if pos:
            montage = mne.channels.make_dig_montage(ch_pos=pos, coord_frame="unknown")
            raw.set_montage(montage, on_missing="ignore", verbose="error")
        return raw


def read_session(root: str | Path, subject: int | str, trial: int | str = 0, *,
                 layout: BrainTreebankLayout | dict | None = None, sfreq: float | None = None,
                 verbose: bool | str | None = None) -> BrainTreebankSession:
    """Open one Brain Treebank session (a subject's movie viewing).

    Parameters
    ----------
    root : path-like
        The release folder.
    subject : int or str
        Subject id (``1`` or ``"1"``).
    trial : int or str
        Trial number (``0`` or ``"000"``).
    layout : BrainTreebankLayout, dict or None
        File names (a dict overrides fields of the default layout, e.g. a card's ``[reader]``).
    sfreq : float or None
        Sampling rate when the HDF5 file stores none (default 2048 Hz).
    verbose : bool, str or None
        Logging level for this call.

    Returns
    -------
    BrainTreebankSession

    Raises
    ------
    ValueError
        A file is missing or malformed, or a column is missing (the message names both).

    Examples
    --------
    >>> session = read_session("~/data/braintreebank", 1, 0)  # doctest: +SKIP
    >>> words = session.words()  # doctest: +SKIP
    """
    set_log_level(verbose)
    validate_type(root, "path-like", "root", owner="read_session")
    validate_type(subject, (int, str), "subject", owner="read_session")
    validate_type(trial, (int, str), "trial", owner="read_session")
    if isinstance(trial, str):
        if not trial.strip().isdigit():
            raise ValueError(f"The 'trial' parameter of read_session must be a trial number such "
                             f"as 0 or '000'. Got {trial!r} instead.")
        trial = int(trial)
    if isinstance(layout, dict) or layout is None:
        layout = BrainTreebankLayout.from_options(layout)
    validate_type(layout, BrainTreebankLayout, "layout", owner="read_session")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"The Brain Treebank folder {str(root)!r} does not exist.")
    return BrainTreebankSession(root, str(subject), trial, layout, sfreq)


# ------------------------------------------------------------------------------- dataset cards
def _parse_h5_name(path: Path) -> tuple[str, int]:
    m = _H5_NAME.match(Path(path).name)
    if m is None:
        raise ValueError(f"{str(path)!r} is not named like a Brain Treebank session "
                         f"('sub_<s>_trial<ttt>.h5').")
    return m.group("subject"), int(m.group("trial"))


def read_braintreebank(path: str | Path, *, verbose: bool | str | None = None,
                       scale: float = 1e-6, **layout) -> mne.io.RawArray:
    """A Brain Treebank session as an MNE Raw with word and scene-cut annotations.

    The reader behind dataset cards' ``format = "braintreebank"``: the release root is the
    HDF5 file's folder, the subject and trial come from its name, and ``layout`` (a card's
    ``[reader]`` table) renames files. Annotations ``"word"`` (each transcript word's onset) and
    ``"scene_cut"`` are placed at their samples.

    Parameters
    ----------
    path : path-like
        ``<root>/sub_<s>_trial<ttt>.h5``.
    verbose : bool, str or None
        MNE's verbosity.
    scale : float
        Multiplies the stored values (``1e-6``: microvolts to volts).
    **layout
        Fields of :class:`BrainTreebankLayout`.

    Returns
    -------
    mne.io.RawArray
        Every kept electrode (the whole session is loaded: mind the memory).
    """
    import mne

    path = Path(path)
    subject, trial = _parse_h5_name(path)
    lay = BrainTreebankLayout.from_options(layout)
    # the h5 file is the one given; the other files are looked up from its folder
    lay = replace(lay, h5=path.name)
    session = read_session(path.parent, subject, trial, layout=lay, verbose=verbose)
    raw = session.to_raw(scale=scale, verbose=verbose)
    words = session.words()
    cuts = session.scene_cuts()
    onsets = np.concatenate([words["sample"].to_numpy(), cuts["sample"].to_numpy()])
    desc = ["word"] * len(words) + ["scene_cut"] * len(cuts)
    inside = (onsets >= 0) & (onsets < session.n_samples)
    ann = mne.Annotations(onsets[inside] / session.sfreq, np.zeros(int(inside.sum())),
                          np.asarray(desc, dtype=object)[inside])
    raw.set_annotations(ann, verbose="error")
    return raw


def _download(url: str, dest: Path) -> Path:
    """Stream ``url`` to ``dest`` through a temporary file (never overwrites ``dest``)."""
    import urllib.request

    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    logger.info("Downloading %s", url)
    with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.",
                                     delete=False) as tmp:
        try:
            with urllib.request.urlopen(url) as response:  # noqa: S310 - fixed https URLs
                shutil.copyfileobj(response, tmp, length=1 << 20)
        except BaseException:
            tmp.close()
            Path(tmp.name).unlink(missing_ok=True)
            raise
    Path(tmp.name).replace(dest)
    return dest


def _extract(archive: Path, root: Path) -> None:
    """Extract a zip into ``root``, refusing members that would land outside it and keeping
    files that already exist."""
    root = root.resolve()
    with zipfile.ZipFile(archive) as zf:
        for member in zf.infolist():
            target = (root / member.filename).resolve()
            if root != target and root not in target.parents:
                raise ValueError(f"{str(archive)!r}: member {member.filename!r} would be "
                                 f"extracted outside {str(root)!r}.")
            if member.is_dir() or target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)


def fetch_braintreebank(root: str | Path, sessions: Sequence[tuple[int | str, int]], *,
                        base_url: str | None = None, keep_archives: bool = False,
                        verbose: bool | str | None = None) -> list[Path]:
    """Download Brain Treebank sessions and the shared annotation files into ``root``.

    Files already present are not downloaded again (and never overwritten). Only call this when
    downloading is intended: the release is large (about 130 GB zipped in all; one session's
    HDF5 archive is a few GB).

    Parameters
    ----------
    root : path-like
        The release folder to fill.
    sessions : sequence of (subject, trial)
        Sessions to fetch, e.g. ``[(1, 0), (2, 0)]``.
    base_url : str or None
        Where the files are published (default :data:`BASE_URL`). Session archives are at
        ``<base_url>subject_data/sub_<s>/trial<ttt>/sub_<s>_trial<ttt>.h5.zip``; the shared
        archives (``localization.zip``, ``subject_timings.zip``, ``subject_metadata.zip``,
        ``electrode_labels.zip``, ``transcripts.zip``, ``scene_annotations.zip``) and
        ``corrupted_elec.json`` at ``<base_url><name>``.
    keep_archives : bool
        Keep the downloaded zip files (in ``root/_archives``) after extraction.
    verbose : bool, str or None
        Logging level for this call.

    Returns
    -------
    list of Path
        The HDF5 files of the sessions.
    """
    set_log_level(verbose)
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    base = (base_url or BASE_URL).rstrip("/") + "/"
    archives = root / "_archives"
    out = []
    for name, folder in SHARED_ARCHIVES.items():
        if not (root / folder).is_dir():
            zipped = _download(base + name, archives / name)
            _extract(zipped, root)
            if not keep_archives:
                zipped.unlink()
    if not (root / "corrupted_elec.json").is_file():
        _download(base + "corrupted_elec.json", root / "corrupted_elec.json")
    for subject, trial in sessions:
        name = f"sub_{subject}_trial{int(trial):03d}.h5"
        h5 = root / name
        if not h5.is_file():
            url = f"{base}subject_data/sub_{subject}/trial{int(trial):03d}/{name}.zip"
            zipped = _download(url, archives / f"{name}.zip")
            _extract(zipped, root)
            if not h5.is_file():  # the archive may hold the file in a sub-folder
                found = sorted(root.rglob(name))
                if not found:
                    raise ValueError(f"{url} did not contain {name!r}.")
                found[0].replace(h5)
            if not keep_archives:
                zipped.unlink()
        out.append(h5)
    if archives.is_dir() and not any(archives.iterdir()):
        archives.rmdir()
    return out


def fetch_for_card(card, missing, root: Path, verbose) -> None:
    """Card fetcher ``"braintreebank"``: download the sessions a card misses (see
    :func:`fetch_braintreebank`); used only when the card is loaded with ``download=True``."""
    sessions = [_parse_h5_name(rec.path) for rec in missing]
    fetch_braintreebank(root, sessions, verbose=verbose)


def layout_as_dict(layout: BrainTreebankLayout) -> dict[str, Any]:
    """The layout's fields as a plain dict (for run configs)."""
    return asdict(layout)
