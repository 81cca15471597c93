"""Dataset cards: one TOML file per dataset saying where its files are and how to cut trials.

A card is data, validated once by :func:`load_card` into a :class:`DatasetCard`; every error
names the card file, the table and the field (``"datasets/x.toml: [tasks.lr] tmin must be a
number; got 'a'"``). :meth:`DatasetCard.load` then reads the recordings and returns a
:class:`~bcikit.data.TrialSet` (or ``{subject: TrialSet}`` when subjects have different channels).

Card schema
-----------
``[dataset]``
    ``name`` (str, required): short identifier, written into every trial's ``dataset`` column.
    ``modality`` (required): ``"eeg"``, ``"ieeg"`` or ``"fmri"``.
    ``description``, ``licence``, ``citation``, ``url`` (str): what the data are, under which
    licence, whom to cite, where they are described.
    ``obtain`` (str): how to get the files; shown when they are missing.
    ``site`` (str, default ``"unknown"``): written into every trial's ``site`` column.
    ``default_task`` (str): the task :meth:`DatasetCard.load` uses when none is named (default:
    the only task, when there is one).
    ``artificial_subjects`` (list): subjects whose recordings are simulated rather than recorded
    (shown by :meth:`DatasetCard.summary`, kept in :attr:`DatasetCard.artificial_subjects` so
    that results can report them apart). Each must be one of ``[files] subjects``.

``[files]``
    ``root`` (str, required): folder holding the files. Absolute, ``~/...``, or relative to the
    card's folder. ``${VAR}`` is replaced by the environment variable ``VAR`` (for ``MNE_*``
    names MNE's config file is consulted too) and ``${VAR:-default}`` falls back to
    ``default``. ``${BCIKIT_REALDATA}`` defaults to ``../shared/realdata`` beside the bcikit
    source checkout when the variable is unset.
    ``pattern`` (str, required): file path below ``root`` with the placeholders ``{subject}``
    (required), ``{session}`` and ``{run}``, with Python format specs
    (``"S{subject:03d}/S{subject:03d}R{run:02d}.edf"``). For MOABB cards it names the files MOABB
    keeps, so that their presence can be checked without the network.
    ``subjects`` (required): list of subject ids (int or str), or a range string ``"1-109"``.
    ``sessions`` (list): values of ``{session}``; required when the pattern uses it.
    ``fetcher`` (str, optional): ``"mne.eegbci"`` (PhysioNet EEG Motor Movement/Imagery through
    :func:`mne.datasets.eegbci.load_data`) or ``"moabb:<DatasetClass>"`` (read through that MOABB
    dataset object; windows count from each trial's start, as MOABB's ``interval`` does). A
    fetcher downloads only when files are missing **and** the caller passed ``download=True``;
    with the files present the network is never used. Other names come from
    :data:`bcikit.io.formats.FETCHERS` (``"bciiv1"``: BCI Competition IV data set 1).
    MOABB cards may write the glob wildcards ``*``, ``?`` and ``**`` in ``pattern`` (for files
    whose exact names MOABB does not fix); such a recording is present when a file matches.
    ``format`` (str, optional): read the files with a reader of
    :data:`bcikit.io.formats.READERS` (``"bciiv1"``: BCI Competition IV data set 1 MATLAB
    files) instead of :func:`bcikit.io.read_raw`.

``[channels]`` (optional)
    ``type`` (str): channel type to keep (``"eeg"`` default for EEG cards; ``"seeg"``/``"ecog"``
    for iEEG cards, where it is also passed to :func:`bcikit.io.read_raw` as ``ch_type``).
    ``pick`` (list of str): channels to keep, in this order (names after renaming).
    ``rename``: ``"none"`` (default), ``"strip_dots"`` (BCI2000 names such as ``'Fc5.'`` become
    ``'FC5'`` in standard 10-05 case) or a table ``{old = "new"}``.
    ``montage`` (str): a built-in MNE montage name (e.g. ``"standard_1005"``) to set positions.
    ``bipolar`` (iEEG): re-reference before picking. ``"adjacent"`` forms the bipolar
    derivations of neighbouring good contacts on each shaft
    (:func:`bcikit.io.ieeg.bipolar_reference`); a list of ``"anode-cathode"`` names
    (``["ROC1-ROC2", ...]``) forms exactly those derivations, in that order. Monopolar contacts
    are dropped; ``pick`` then names bipolar channels.

``[tasks.<name>]`` (at least one)
    ``description`` (str).
    ``tmin``, ``tmax`` (numbers, required): trial window in seconds relative to each event,
    ``[tmin, tmax)``.
    ``runs`` (list) and ``events`` (table ``description = "label"``): which runs (values of
    ``{run}``; MOABB run names for MOABB cards; omit for all runs) and how their event
    descriptions map to class labels. Stim-channel codes are written as text keys (``"1"``).
    ``groups`` (array of tables with ``runs`` and ``events``): instead of ``runs``/``events``
    when different runs code classes differently (PhysioNet: T1 means left fist in runs 4, 8, 12
    and both fists in runs 6, 10, 14).
    ``classes`` (list of str): order of the class codes (default: order of first appearance).
    ``baseline`` (two numbers): baseline-correction interval in seconds (default: none).
    ``sessions`` (list): keep only these sessions. MOABB cards: MOABB session names, or their
    leading order index (``"0"`` keeps ``"0"``, ``"0A"`` or ``"0train"``: the first session);
    a subject that has none of them is an error. Other cards: values of ``[files] sessions``.
    ``resample`` (number): resample each recording to this rate (Hz) before cutting trials.
    ``classes_per_subject`` (bool, default false): each subject keeps only the classes its trials
    hold (in ``classes`` order, coded 0..k-1), for datasets whose subjects did different pairs
    of tasks; subjects with different class sets come back as ``{subject: TrialSet}``. Then
    an event description may be absent from the loaded recordings as long as one is present.

``[reader]`` (optional)
    Keyword arguments (strings, numbers, booleans) passed to the ``[files] format`` reader, kept
    in :attr:`DatasetCard.reader_options`; e.g. the file names of a Brain Treebank release
    (:class:`bcikit.io.braintreebank.BrainTreebankLayout`).

Every event description of a task must occur in at least one of its recordings, otherwise the
load fails and says which descriptions the recordings hold.

Examples
--------
>>> card = load_card("datasets/realdata_eegmmidb_S001.toml")  # doctest: +SKIP
>>> trials = card.load(task="imagery_lr")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..utils import logger, validate_type

if TYPE_CHECKING:  # pragma: no cover
    from ..data.trialset import TrialSet

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MODALITIES = ("eeg", "ieeg", "fmri")
RENAME_RULES = ("none", "strip_dots")
PLACEHOLDERS = ("subject", "session", "run")
_REPO = Path(__file__).resolve().parents[2]
#: Defaults for ``${VAR}`` in card paths when the variable is unset.
ENV_DEFAULTS = {"BCIKIT_REALDATA": str(_REPO.parent / "shared" / "realdata")}
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}$]*))?\}")
_EEGBCI_SUFFIX = ("MNE-eegbci-data", "files", "eegmmidb", "1.0.0")

_DATASET_KEYS = ("name", "modality", "description", "licence", "citation", "url", "obtain",
                 "site", "default_task", "artificial_subjects")
_FILES_KEYS = ("root", "pattern", "subjects", "sessions", "fetcher", "format")
_CHANNELS_KEYS = ("type", "pick", "rename", "montage", "bipolar")
_TASK_KEYS = ("description", "tmin", "tmax", "runs", "events", "groups", "classes", "baseline",
              "sessions", "resample", "classes_per_subject", "selection")
_GLOB_CHARS = ("*", "?")
_GROUP_KEYS = ("runs", "events")


# ------------------------------------------------------------------------------------ validation
class _Card:
    """Type/value checks whose messages name the card file, the table and the field."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, table: str, message: str, exc: type[Exception] = ValueError):
        raise exc(f"{self.path}: [{table}] {message}")

    def table(self, data: Mapping, key: str, where: str, *, required: bool = True) -> dict:
        if key not in data:
            if required:
                raise ValueError(f"{self.path}: missing table [{key}]" if where == "" else
                                 f"{self.path}: [{where}] missing table {key!r}")
            return {}
        value = data[key]
        if not isinstance(value, dict):
            name = key if where == "" else f"{where}.{key}"
            raise ValueError(f"{self.path}: [{name}] must be a table; got {value!r:.60}")
        return value

    def known(self, data: Mapping, allowed: Sequence[str], table: str) -> None:
        unknown = [k for k in data if k not in allowed]
        if unknown:
            self.fail(table, f"unknown field(s) {unknown}; allowed: {', '.join(allowed)}")

    def string(self, data: Mapping, key: str, table: str, *, required: bool = False,
               default: str | None = None, choices: Sequence[str] | None = None) -> str | None:
        if key not in data:
            if required:
                self.fail(table, f"{key} is required")
            return default
        value = data[key]
        if not isinstance(value, str):
            self.fail(table, f"{key} must be a string; got {value!r:.60}")
        if choices is not None and value not in choices:
            self.fail(table, f"{key} must be one of {list(choices)}; got {value!r}")
        return value

    def number(self, data: Mapping, key: str, table: str, *, required: bool = True
               ) -> float | None:
        if key not in data:
            if required:
                self.fail(table, f"{key} is required")
            return None
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(table, f"{key} must be a number; got {value!r:.60}")
        return float(value)

    def id_list(self, data: Mapping, key: str, table: str, *, required: bool = False
                ) -> tuple | None:
        """A non-empty list of unique ints/strings (or an ``"a-b"`` int range string)."""
        if key not in data:
            if required:
                self.fail(table, f"{key} is required")
            return None
        value = data[key]
        if isinstance(value, str):
            m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", value)
            if not m or int(m.group(1)) > int(m.group(2)):
                self.fail(table, f"{key} must be a list or a range string like '1-109'; "
                                 f"got {value!r}")
            return tuple(range(int(m.group(1)), int(m.group(2)) + 1))
        if not isinstance(value, list) or not value:
            self.fail(table, f"{key} must be a non-empty list; got {value!r:.60}")
        for v in value:
            if isinstance(v, bool) or not isinstance(v, (int, str)):
                self.fail(table, f"{key} entries must be integers or strings; got {v!r:.60}")
        if len({str(v) for v in value}) != len(value):
            self.fail(table, f"{key} has duplicate entries: {value!r:.80}")
        return tuple(value)

    def str_list(self, data: Mapping, key: str, table: str) -> tuple[str, ...] | None:
        if key not in data:
            return None
        value = data[key]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            self.fail(table, f"{key} must be a non-empty list of strings; got {value!r:.60}")
        if len(set(value)) != len(value):
            self.fail(table, f"{key} has duplicate entries: {value!r:.80}")
        return tuple(value)

    def str_map(self, data: Mapping, key: str, table: str) -> dict[str, str] | None:
        if key not in data:
            return None
        value = data[key]
        if not isinstance(value, dict) or not value:
            self.fail(table, f"{key} must be a non-empty table of description = \"label\"; "
                             f"got {value!r:.60}")
        for k, v in value.items():
            if not isinstance(v, str):
                self.fail(table, f"{key}.{k} must be a string label; got {v!r:.60}")
        return dict(value)


# ------------------------------------------------------------------------------------ dataclasses
@dataclass(frozen=True)
class EventGroup:
    """Runs that share one event coding: ``runs`` (None: all runs) and ``events``
    (description -> label)."""

    runs: tuple | None
    events: dict


@dataclass(frozen=True)
class TaskSpec:
    """One way of cutting trials out of a dataset's recordings."""

    name: str
    tmin: float
    tmax: float
    groups: tuple[EventGroup, ...]
    classes: tuple[str, ...]
    baseline: tuple[float, float] | None = None
    description: str = ""
    sessions: tuple | None = None
    resample: float | None = None
    classes_per_subject: bool = False
    selection: str | None = None

    @property
    def runs(self) -> list | None:
        """All runs of the task, in group order (None when a group takes every run)."""
        out: list = []
        for g in self.groups:
            if g.runs is None:
                return None
            out.extend(r for r in g.runs if r not in out)
        return out


@dataclass(frozen=True)
class ChannelSpec:
    """Which channels to keep and how to name and place them."""

    type: str | None = "eeg"
    pick: tuple[str, ...] | None = None
    rename: str | dict = "none"
    montage: str | None = None
    bipolar: str | tuple[str, ...] | None = None


@dataclass(frozen=True)
class Recording:
    """One file a task needs: where it should be and which subject/session/run it holds."""

    subject: Any
    session: Any
    run: Any
    path: Path
    group: int

    def files(self) -> list[Path]:
        """The files this recording stands for: its path when it is a file, or (for a path with
        glob wildcards, MOABB cards only) the files matching it, sorted."""
        text = str(self.path)
        if not any(ch in text for ch in _GLOB_CHARS):
            return [self.path] if self.path.is_file() else []
        parts = self.path.parts
        first = next(i for i, part in enumerate(parts) if any(ch in part for ch in _GLOB_CHARS))
        base = Path(*parts[:first])
        return sorted(p for p in base.glob(str(Path(*parts[first:]))) if p.is_file())

    @property
    def present(self) -> bool:
        """Whether the file (or, for a glob pattern, at least one matching file) exists."""
        return bool(self.files())


@dataclass
class DatasetCard:
    """A validated dataset card (see the module docstring for the fields).

    Build it with :func:`load_card`; :meth:`load` reads the recordings.
    """

    path: Path
    name: str
    modality: str
    root: str
    pattern: str
    subjects: tuple
    tasks: dict[str, TaskSpec]
    channels: ChannelSpec = field(default_factory=ChannelSpec)
    sessions: tuple | None = None
    fetcher: str | None = None
    description: str = ""
    licence: str = ""
    citation: str = ""
    url: str = ""
    obtain: str = ""
    site: str = "unknown"
    default_task: str | None = None
    format: str | None = None
    artificial_subjects: tuple = ()
    regions: dict = field(default_factory=dict)
    selections: dict = field(default_factory=dict)
    reader_options: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"<DatasetCard {self.name!r} ({self.modality}) from {str(self.path)!r}, "
                f"{len(self.subjects)} subject(s), tasks {sorted(self.tasks)}>")

    def summary(self) -> str:
        """One line for listings (``bcikit datasets``): name, modality, subjects, tasks, licence,
        file."""
        tasks = ", ".join(f"{n}*" if n == self.default_task else n for n in self.tasks)
        licence = f"; licence: {self.licence}" if self.licence else ""
        artificial = ""
        if self.artificial_subjects:
            artificial = (f"; artificial subject(s): "
                          f"{', '.join(str(s) for s in self.artificial_subjects)}")
        return (f"{self.name} ({self.modality}, {len(self.subjects)} subject(s); tasks: {tasks}"
                f"{licence}{artificial}) [{self.path}]")

    # -------------------------------------------------------------------------- resolution
    def _err(self, table: str, message: str) -> str:
        return f"{self.path}: [{table}] {message}"

    def resolve_root(self, root: str | os.PathLike | None = None) -> Path:
        """The files' folder: ``root`` when given, else the card's ``[files] root`` with
        variables and ``~`` expanded, relative paths taken from the card's folder."""
        if root is not None:
            validate_type(root, "path-like", "root", owner="DatasetCard.load")
            return Path(root).expanduser()
        text = expand_vars(self.root, card=self.path, field="[files] root")
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = (self.path.parent / path).resolve()
        return path

    def task_spec(self, task: str | None = None) -> TaskSpec:
        """The named task, else ``default_task``, else the only task."""
        if task is None:
            if self.default_task is not None:
                task = self.default_task
            elif len(self.tasks) == 1:
                task = next(iter(self.tasks))
            else:
                raise ValueError(f"{self.path}: name a task; the card defines {sorted(self.tasks)} "
                                 "and no [dataset] default_task.")
        validate_type(task, str, "task", owner="DatasetCard.load")
        if task not in self.tasks:
            raise ValueError(f"{self.path}: no task {task!r}; the card defines "
                             f"{sorted(self.tasks)}.")
        return self.tasks[task]

    def select_subjects(self, subjects=None) -> list:
        """The card's subjects, or those of ``subjects`` (matched as text or as numbers)."""
        if subjects is None:
            return list(self.subjects)
        if isinstance(subjects, (str, int)) and not isinstance(subjects, bool):
            subjects = [subjects]
        validate_type(subjects, (list, tuple), "subjects", owner="DatasetCard.load")
        out = []
        for s in subjects:
            match = [c for c in self.subjects if _same_id(c, s)]
            if not match:
                raise ValueError(f"{self.path}: subject {s!r} is not among the card's [files] "
                                 f"subjects ({_short(self.subjects)}).")
            out.append(match[0])
        return out

    @property
    def moabb_class(self) -> str | None:
        if self.fetcher and self.fetcher.startswith("moabb:"):
            return self.fetcher.split(":", 1)[1]
        return None

    def recordings(self, *, task: str | None = None, subjects=None,
                   root: str | os.PathLike | None = None) -> list[Recording]:
        """The files a task needs, in load order (for MOABB cards: the files MOABB keeps)."""
        spec = self.task_spec(task)
        base = self.resolve_root(root)
        fields = _placeholders(self.pattern)
        sessions = list(self.sessions) if "session" in fields else [None]
        if spec.sessions is not None and self.moabb_class is None and "session" in fields:
            # MOABB reads every session of a subject, so its cards check them all
            sessions = [s for s in sessions if any(_same_id(s, w) for w in spec.sessions)]
        out = []
        for subject in self.select_subjects(subjects):
            for session in sessions:
                if self.moabb_class is not None or "run" not in fields:
                    out.append(Recording(subject, session, None,
                                         base / self._format(subject, session, None), -1))
                    continue
                for gi, group in enumerate(spec.groups):
                    for run in group.runs:
                        out.append(Recording(subject, session, run,
                                             base / self._format(subject, session, run), gi))
        return out

    def _format(self, subject, session, run) -> str:
        try:
            return self.pattern.format(subject=subject, session=session, run=run)
        except (ValueError, TypeError) as err:
            raise ValueError(self._err("files", f"pattern {self.pattern!r} cannot format "
                                       f"subject={subject!r}, session={session!r}, run={run!r}: "
                                       f"{err}")) from err

    # -------------------------------------------------------------------------------- load
    def load(self, *, root: str | os.PathLike | None = None, subjects=None,
             task: str | None = None, cache: bool | str | os.PathLike = True,
             download: bool = False, tmin: float | None = None, tmax: float | None = None,
             verbose: bool | str | int | None = None) -> TrialSet | dict[str, TrialSet]:
        """Read the card's recordings and cut the trials of one task.

        Parameters
        ----------
        root : path-like or None
            Use this folder instead of the card's ``[files] root``.
        subjects : int, str, list or None
            Subjects to load (default: all of the card's).
        task : str or None
            Task name (default: ``default_task``, or the only task).
        cache : bool or path-like
            Reuse trials cut before from the same files with the same parameters
            (:class:`bcikit.data.cache.TrialSetCache`); a path chooses the cache folder.
        download : bool
            Allow the card's fetcher to download missing files. Never used when the files are
            present.
        tmin, tmax : float or None
            Override the task's window.
        verbose : bool, str, int or None
            MNE's verbosity.

        Returns
        -------
        trials : TrialSet or dict of str to TrialSet
            One TrialSet when every subject has the same channels and sampling rate, else
            ``{subject: TrialSet}``. ``meta`` holds subject, session, run, dataset, site, task,
            onset and event.

        Raises
        ------
        FileNotFoundError
            Files are missing and downloads are not allowed (names the card, an expected path
            and how to obtain the files).
        ValueError
            Bad arguments, or an event description of the task occurs in none of the files.
        """
        validate_type(download, bool, "download", owner="DatasetCard.load")
        validate_type(cache, (bool, "path-like"), "cache", owner="DatasetCard.load")
        if self.modality == "fmri":
            raise ValueError(f"{self.path}: [dataset] modality 'fmri' cards are read by "
                             "bcikit.io.fmri, not by DatasetCard.load.")
        spec = self.task_spec(task)
        if self.format is not None:
            from .formats import TRIAL_READERS, get_trial_reader

            if self.format in TRIAL_READERS:  # the format reads trials itself (e.g. "duin")
                return get_trial_reader(self.format)(
                    self, task=spec, subjects=self.select_subjects(subjects), root=root,
                    download=download, cache=cache, verbose=verbose)
        if tmin is not None or tmax is not None:
            new_tmin = spec.tmin if tmin is None else float(tmin)
            new_tmax = spec.tmax if tmax is None else float(tmax)
            if not new_tmax > new_tmin:
                raise ValueError(f"{self.path}: window override needs tmax > tmin; got "
                                 f"tmin={new_tmin}, tmax={new_tmax}.")
            spec = replace(spec, tmin=new_tmin, tmax=new_tmax)
        subject_list = self.select_subjects(subjects)
        recs = self.recordings(task=spec.name, subjects=subject_list, root=root)
        missing = [r for r in recs if not r.present]
        if missing:
            self._obtain(missing, spec, subject_list, root, download, verbose)
        params = {
            "loader": "bcikit.io.cards/1",
            "card": self.name,
            "card_sha256": hashlib.sha256(self.path.read_bytes()).hexdigest(),
            "task": _jsonable(asdict(spec)),
            "channels": _channels_key(self.channels),
            "subjects": [str(s) for s in subject_list],
            "sessions": None if self.sessions is None else [str(s) for s in self.sessions],
            "pattern": self.pattern,
            "fetcher": self.fetcher,
            "format": self.format,
            "reader": _jsonable(self.reader_options),
        }

        local = not missing

        def build():
            if self.moabb_class is not None:
                return self._build_moabb(spec, subject_list, verbose, local=local)
            return self._build_files(spec, recs, verbose)

        if missing and self.moabb_class is not None:
            # MOABB downloads while reading: the files the cache key hashes exist only after
            # this build, so the first (downloading) load is not cached
            return build()
        sources = sorted({f for r in recs for f in r.files()})
        return _cached(cache, sources, params, build)

    def _obtain(self, missing: list[Recording], spec: TaskSpec, subjects: list, root,
                download: bool, verbose) -> None:
        """Fetch missing files when allowed, else raise naming them."""
        n = len(missing)
        if not (download and self.fetcher):
            hint = ""
            if self.fetcher:
                hint = (f" The card's fetcher {self.fetcher!r} can download them: pass "
                        "download=True (CLI: --set download=true).")
            obtain = f" How to obtain them: {self.obtain.strip()}" if self.obtain else ""
            raise FileNotFoundError(
                f"{self.path}: {n} file(s) of dataset {self.name!r} (task {spec.name!r}) are "
                f"missing, e.g. {str(missing[0].path)!r}.{hint}{obtain}")
        if self.moabb_class is not None:
            return  # MOABB downloads while reading (see _build_moabb)
        fetch = _FETCHERS.get(self.fetcher)
        if fetch is None:  # pragma: no cover - rejected by load_card
            raise ValueError(self._err("files", f"unknown fetcher {self.fetcher!r}"))
        fetch(self, missing, self.resolve_root(root), verbose)
        still = [r for r in missing if not r.path.is_file()]
        if still:
            raise FileNotFoundError(
                f"{self.path}: fetcher {self.fetcher!r} ran but {len(still)} file(s) are still "
                f"missing, e.g. {str(still[0].path)!r}; check [files] root and pattern.")

    # ------------------------------------------------------------------------------ builders
    def _prepare_raw(self, raw):
        """Rename channels and set the montage, as the [channels] table says."""
        spec = self.channels
        if isinstance(spec.rename, dict):
            absent = [k for k in spec.rename if k not in raw.ch_names]
            if absent:
                raise ValueError(self._err("channels", f"rename names channels {absent} that "
                                           f"{_name_of(raw)} does not have."))
            raw.rename_channels(dict(spec.rename))
        elif spec.rename == "strip_dots":
            raw.rename_channels(strip_dots_mapping(raw.ch_names))
        if spec.montage:
            try:
                raw.set_montage(_montage_name(spec.montage), on_missing="raise", verbose="error")
            except ValueError as err:
                raise ValueError(self._err("channels", f"montage {spec.montage!r} does not fit "
                                           f"{_name_of(raw)}: {err}")) from err
        if spec.bipolar is not None:
            raw = self._bipolar(raw)
        return raw

    def _bipolar(self, raw):
        """The ``[channels] bipolar`` derivations of ``raw`` (a new recording)."""
        from .ieeg import bipolar_reference

        spec = self.channels
        if spec.bipolar == "adjacent":
            try:
                return bipolar_reference(raw, verbose="error")
            except ValueError as err:
                raise ValueError(self._err("channels", f"bipolar 'adjacent' on "
                                           f"{_name_of(raw)}: {err}")) from err
        pairs = [tuple(name.split("-")) for name in spec.bipolar]
        absent = sorted({c for pair in pairs for c in pair if c not in raw.ch_names})
        if absent:
            raise ValueError(self._err("channels", f"bipolar names contacts {absent} that "
                                       f"{_name_of(raw)} does not have (it has "
                                       f"{_short(raw.ch_names)})."))
        return bipolar_reference(raw, pairs=pairs, verbose="error")

    def _picks(self, raw) -> list[str]:
        spec = self.channels
        types = raw.get_channel_types()
        if spec.type is not None:
            names = [n for n, t in zip(raw.ch_names, types) if t == spec.type]
            if not names:
                raise ValueError(self._err("channels", f"type {spec.type!r}: {_name_of(raw)} has "
                                           f"no such channel (types: {sorted(set(types))})."))
        else:
            from mne import pick_types

            idx = pick_types(raw.info, meg=True, eeg=True, seeg=True, ecog=True, dbs=True,
                             exclude=())
            names = [raw.ch_names[i] for i in idx]
        if spec.pick is not None:
            absent = [n for n in spec.pick if n not in names]
            if absent:
                raise ValueError(self._err("channels", f"pick names channels {absent} that "
                                           f"{_name_of(raw)} lacks (or that are not of type "
                                           f"{spec.type!r})."))
            names = list(spec.pick)
        return names

    def _resample(self, raw, spec: TaskSpec, verbose):
        """Resample ``raw`` to the task's ``resample`` rate (when it has another rate)."""
        if spec.resample is not None and float(raw.info["sfreq"]) != spec.resample:
            raw.resample(spec.resample, verbose=verbose if verbose is not None else "error")
        return raw

    def _read(self, path: Path, ch_type, verbose):
        """One recording: through the card's ``[files] format`` reader, else ``read_raw``."""
        level = verbose if verbose is not None else "error"
        if self.format is not None:
            from .formats import get_reader

            return get_reader(self.format)(path, verbose=level, **self.reader_options)
        from .eeg import read_raw

        return read_raw(path, preload=True, ch_type=ch_type, verbose=level)

    def _meta(self, subject, session, run, spec: TaskSpec) -> dict:
        return {"subject": str(subject), "session": "0" if session is None else str(session),
                "run": "0" if run is None else str(run), "dataset": self.name, "site": self.site,
                "task": spec.name}

    def _cut(self, raw, group: EventGroup, spec: TaskSpec, meta: dict, verbose):
        from .eeg import _epochs_from_raw

        return _epochs_from_raw(raw, event_map=group.events, tmin=spec.tmin, tmax=spec.tmax,
                                classes=list(spec.classes), meta=meta,
                                baseline=spec.baseline, picks=self._picks(raw),
                                reject_nan=True, on_missing="ignore", verbose=verbose)

    def _check_groups(self, spec: TaskSpec, seen: dict[int, set], found: dict[int, set],
                      n_recordings: dict[int, int]) -> None:
        for gi, group in enumerate(spec.groups):
            absent = [k for k in group.events if k not in seen.get(gi, set())]
            if spec.classes_per_subject and len(absent) < len(group.events):
                continue  # each subject holds some of the classes: the loaded ones may lack one
            if absent:
                runs = "all runs" if group.runs is None else f"runs {list(group.runs)}"
                raise ValueError(
                    f"{self.path}: [tasks.{spec.name}] event(s) {absent} ({runs}) occur in none "
                    f"of its {n_recordings.get(gi, 0)} recording(s); they hold "
                    f"{sorted(found.get(gi, set()))}.")

    def _build_files(self, spec: TaskSpec, recs: list[Recording], verbose):
        from ..utils import progress

        ch_type = self.channels.type if self.channels.type in ("seeg", "ecog") else None
        per_subject: dict[str, list] = {}
        seen: dict[int, set] = {}
        found: dict[int, set] = {}
        counts: dict[int, int] = {}
        for rec in progress(recs, desc=f"{self.name}: reading", verbose=verbose):
            raw = self._read(rec.path, ch_type, verbose)
            raw = self._prepare_raw(raw)
            self._resample(raw, spec, verbose)
            groups = (list(enumerate(spec.groups)) if rec.group < 0
                      else [(rec.group, spec.groups[rec.group])])
            for gi, group in groups:
                meta = self._meta(rec.subject, rec.session, rec.run, spec)
                trials, present, descs = self._cut(raw, group, spec, meta, verbose)
                seen.setdefault(gi, set()).update(present)
                found.setdefault(gi, set()).update(descs)
                counts[gi] = counts.get(gi, 0) + 1
                per_subject.setdefault(str(rec.subject), []).append(trials)
        self._check_groups(spec, seen, found, counts)
        return _combine(per_subject, per_subject_classes=spec.classes_per_subject)

    def _build_moabb(self, spec: TaskSpec, subjects: list, verbose, *, local: bool):
        dataset = moabb_dataset(self.moabb_class, card=self.path)
        per_subject: dict[str, list] = {}
        seen: dict[int, set] = {}
        found: dict[int, set] = {}
        counts: dict[int, int] = {}
        event_id = dict(getattr(dataset, "event_id", {}) or {})
        interval = getattr(dataset, "interval", None)
        for subject in subjects:
            if not isinstance(subject, int):
                raise ValueError(self._err("files", f"MOABB subjects are integers; got "
                                           f"{subject!r}"))
            data = _moabb_get_data(dataset, subject, local=local)
            sessions = data[subject] if subject in data else data[str(subject)]
            if spec.sessions is not None:
                kept = {k: v for k, v in sessions.items()
                        if any(_moabb_session_match(w, k) for w in spec.sessions)}
                if not kept:
                    raise ValueError(
                        f"{self.path}: [tasks.{spec.name}] sessions {list(spec.sessions)} match "
                        f"none of subject {subject}'s MOABB sessions {sorted(sessions)}.")
                sessions = kept
            for session, runs in sessions.items():
                for run, raw in runs.items():
                    raw = _with_moabb_annotations(raw, event_id, interval)
                    raw = self._prepare_raw(raw)
                    self._resample(raw, spec, verbose)
                    for gi, group in enumerate(spec.groups):
                        if group.runs is not None and not any(_same_id(r, run)
                                                              for r in group.runs):
                            continue
                        meta = self._meta(subject, session, run, spec)
                        trials, present, descs = self._cut(raw, group, spec, meta, verbose)
                        seen.setdefault(gi, set()).update(present)
                        found.setdefault(gi, set()).update(descs)
                        counts[gi] = counts.get(gi, 0) + 1
                        per_subject.setdefault(str(subject), []).append(trials)
        self._check_groups(spec, seen, found, counts)
        return _combine(per_subject, per_subject_classes=spec.classes_per_subject)


# -------------------------------------------------------------------------------------- helpers
def _moabb_session_match(wanted, name) -> bool:
    """Whether MOABB session ``name`` is ``wanted``: the same name, or ``wanted`` is the name's
    leading order index (``"0"`` matches ``"0"``, ``"0A"``, ``"0train"``), as MOABB's own session
    selection reads it."""
    if str(wanted) == str(name):
        return True
    m = re.match(r"(\d+)", str(name))
    return bool(m) and str(wanted).isdigit() and int(m.group(1)) == int(str(wanted))


def _same_id(a, b) -> bool:
    if str(a) == str(b):
        return True
    sa, sb = str(a), str(b)
    return sa.isdigit() and sb.isdigit() and int(sa) == int(sb)


def _short(values: Sequence, n: int = 8) -> str:
    values = list(values)
    text = ", ".join(str(v) for v in values[:n])
    return text + (f", ... ({len(values)} in all)" if len(values) > n else "")


def _name_of(raw) -> str:
    from .eeg import _raw_name

    return _raw_name(raw)


def _placeholders(pattern: str) -> set[str]:
    out = set()
    for _, name, _, _ in string.Formatter().parse(pattern):
        if name is not None:
            out.add(name)
    return out


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def expand_vars(text: str, *, card: Path | str | None = None, field: str = "") -> str:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in ``text``.

    ``VAR`` comes from the environment; ``MNE_*`` names also from MNE's config file; then the
    default in the text (defaults may nest: ``${A:-${B:-~/x}}``), then :data:`ENV_DEFAULTS`. An
    unset variable without default raises ``ValueError`` naming the card and field.
    """
    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        value = os.environ.get(name)
        if not value and name.startswith("MNE_"):
            import mne

            value = mne.get_config(name)
        if not value:
            value = default if default is not None else ENV_DEFAULTS.get(name)
        if not value:
            where = f"{card}: {field} " if card else ""
            raise ValueError(f"{where}uses ${{{name}}} but the environment variable {name} is "
                             f"not set (write ${{{name}:-default}} to give a default).")
        return value

    for _ in range(10):  # inner ${...} first, so defaults may nest: ${A:-${B:-x}}
        expanded = _VAR_RE.sub(sub, text)
        if expanded == text:
            break
        text = expanded
    return text


def strip_dots_mapping(ch_names: Sequence[str]) -> dict[str, str]:
    """BCI2000-style names (``'Fc5.'``, ``'Cz..'``) -> standard 10-05 names (``'FC5'``, ``'Cz'``).

    Dots are stripped, then the name takes the case of the matching 10-05 position name; names
    with no match are upper-cased with a lower-case ``z`` suffix and ``Fp`` prefix.
    """
    reference = {n.lower(): n for n in _standard_names()}
    mapping = {}
    for name in ch_names:
        stripped = name.strip(".").strip()
        std = reference.get(stripped.lower())
        if std is None:
            std = stripped.upper()
            if std.endswith("Z"):
                std = std[:-1] + "z"
            if std.startswith("FP"):
                std = "Fp" + std[2:]
        mapping[name] = std
    if len(set(mapping.values())) != len(mapping):
        raise ValueError(f"strip_dots renaming would give duplicate channel names: "
                         f"{sorted(mapping.values())}")
    return mapping


_MONTAGE_ALIASES = {"standard_1005": "colin27_1005", "standard_1020": "colin27_1020",
                    "colin27_1005": "standard_1005", "colin27_1020": "standard_1020"}


def _montage_name(name: str) -> str:
    """The built-in montage to use for ``name``: MNE 1.13 renamed ``standard_10xx`` to
    ``colin27_10xx`` (the old name warns); use whichever this MNE has, preferring the new one."""
    import mne

    builtin = set(mne.channels.get_builtin_montages())
    if name.startswith("standard_10") and _MONTAGE_ALIASES.get(name) in builtin:
        return _MONTAGE_ALIASES[name]
    if name in builtin:
        return name
    alias = _MONTAGE_ALIASES.get(name)
    if alias in builtin:
        return alias
    raise ValueError(f"unknown montage {name!r}; MNE has {sorted(builtin)}")


def _standard_names() -> list[str]:
    import mne

    return mne.channels.make_standard_montage(_montage_name("standard_1005")).ch_names


def _own_classes(ts):
    """``ts`` with only the classes its trials hold (in their order), coded 0..k-1."""
    import numpy as np

    from ..data.trialset import TrialSet

    used = [c for i, c in enumerate(ts.classes) if np.any(ts.y == i)]
    if used == list(ts.classes):
        return ts
    code = {ts.classes.index(c): k for k, c in enumerate(used)}
    y = np.array([code[int(v)] for v in ts.y], dtype=np.int64)
    return TrialSet(ts.X, y, ts.meta, ts.info, used, ts.tmin, check_finite=False)


def _combine(per_subject: Mapping[str, list], *, per_subject_classes: bool = False):
    from ..data.trialset import TrialSet

    merged = {}
    for subject, parts in per_subject.items():
        merged[subject] = TrialSet.concatenate(parts)
        if per_subject_classes:
            merged[subject] = _own_classes(merged[subject])
    sets = list(merged.values())
    if not sets:
        raise ValueError("no recordings were read")
    first = sets[0]
    same = all(s.ch_names == first.ch_names and s.sfreq == first.sfreq
               and s.X.shape[2] == first.X.shape[2] and list(s.classes or []) == list(
                   first.classes or []) for s in sets)
    if same:
        return TrialSet.concatenate(sets) if len(sets) > 1 else first
    return merged


def _cached(cache, sources: list[Path], params: dict, build: Callable):
    if cache is False:
        return build()
    try:
        from ..data.cache import TrialSetCache
    except ModuleNotFoundError as err:
        # TODO(lead): remove this fallback once bcikit.data.cache is merged.
        if err.name != "bcikit.data.cache":
            raise
        logger.info("bcikit.data.cache is not available; loading without cache")
        return build()
    store = TrialSetCache() if cache is True else TrialSetCache(directory=Path(cache))
    return store.get_or_build(sources, params, build)


# --------------------------------------------------------------------------------------- fetchers
def _fetch_eegbci(card: DatasetCard, missing: list[Recording], root: Path, verbose) -> None:
    """Download PhysioNet eegmmidb runs with :func:`mne.datasets.eegbci.load_data`."""
    from mne.datasets import eegbci

    if tuple(root.parts[-4:]) != _EEGBCI_SUFFIX:
        raise ValueError(card._err("files", f"fetcher 'mne.eegbci' stores files in "
                                   f"<path>/{'/'.join(_EEGBCI_SUFFIX)}; root {str(root)!r} "
                                   "does not end that way."))
    base = root.parents[3]
    by_subject: dict[int, list[int]] = {}
    for rec in missing:
        try:
            subject, run = int(rec.subject), int(rec.run)
        except (TypeError, ValueError) as err:
            raise ValueError(card._err("files", "fetcher 'mne.eegbci' needs integer subjects "
                                       f"and runs; got subject={rec.subject!r}, "
                                       f"run={rec.run!r}")) from err
        by_subject.setdefault(subject, []).append(run)
    for subject, runs in by_subject.items():
        eegbci.load_data(subject, sorted(set(runs)), path=str(base), update_path=False,
                         verbose=verbose)


def _fetch_format(name: str) -> Callable:
    """A fetcher of :data:`bcikit.io.formats.FETCHERS`, imported when it runs."""
    def fetch(card: DatasetCard, missing: list[Recording], root: Path, verbose) -> None:
        from .formats import get_fetcher

        get_fetcher(name)(card, missing, root, verbose)

    return fetch


_FETCHERS: dict[str, Callable] = {"mne.eegbci": _fetch_eegbci, "bciiv1": _fetch_format("bciiv1"),
                                  "braintreebank": _fetch_format("braintreebank")}


def moabb_dataset(class_name: str, *, card: Path | str | None = None):
    """An instance of ``moabb.datasets.<class_name>``."""
    from ..utils import require

    datasets = require("moabb.datasets", purpose=f"The card {card}" if card else "MOABB cards")
    cls = getattr(datasets, class_name, None)
    if cls is None:
        raise ValueError(f"{card}: [files] fetcher 'moabb:{class_name}': moabb has no dataset "
                         f"class {class_name!r}.")
    return cls()


def _moabb_get_data(dataset, subject: int, *, local: bool) -> dict:
    """``dataset.get_data([subject])``. When every file is local, MOABB is told (through its
    ``MOABB_DOWNLOAD_PROVIDER`` setting) not to consult its NEMAR mirror, so no network is used;
    MOABB then finds the files where it stored them."""
    if not local:
        return dataset.get_data(subjects=[subject])
    key = "MOABB_DOWNLOAD_PROVIDER"
    before = os.environ.get(key)
    os.environ[key] = "upstream"
    try:
        return dataset.get_data(subjects=[subject])
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _with_moabb_annotations(raw, event_id: Mapping[str, int], interval: Sequence[float] | None):
    """Annotate each trial's start with its class name, as the card's window expects.

    MOABB's ``get_data`` annotates the events shifted to the start of the dataset's
    ``interval`` (e.g. the cue, 2 s into a BNCI 2014-001 trial). Cards, like MOABB's interval,
    count the window from the trial start, so the annotations are rebuilt from the stim channel
    (or shifted back by ``interval[0]`` when there is no stim channel). Other annotations (e.g.
    ``BAD_artifact``) are kept.
    """
    import mne
    import numpy as np

    if not event_id:
        return raw
    names = set(event_id)
    ann = raw.annotations
    others = [i for i, d in enumerate(ann.description) if str(d) not in names]
    ours = [i for i, d in enumerate(ann.description) if str(d) in names]
    if len(mne.pick_types(raw.info, meg=False, stim=True)):
        events = mne.find_events(raw, shortest_event=1, initial_event=True, verbose="error")
        inv = {int(code): name for name, codes in event_id.items()
               for code in (codes if isinstance(codes, (list, tuple)) else [codes])}
        events = events[[int(c) in inv for c in events[:, 2]]]
        if not len(events):
            return raw
        starts = mne.annotations_from_events(events, raw.info["sfreq"], event_desc=inv,
                                             first_samp=raw.first_samp,
                                             orig_time=ann.orig_time, verbose="error")
    elif ours:
        shift = float(interval[0]) if interval else 0.0
        starts = mne.Annotations(np.asarray(ann.onset)[ours] - shift,
                                 np.zeros(len(ours)), np.asarray(ann.description)[ours],
                                 orig_time=ann.orig_time)
    else:
        return raw
    raw.set_annotations(ann[others] + starts if others else starts, verbose="error")
    return raw


# ------------------------------------------------------------------------------------ load_card
def load_card(path: str | os.PathLike) -> DatasetCard:
    """Read and validate a dataset card.

    Parameters
    ----------
    path : path-like
        The card's TOML file.

    Returns
    -------
    card : DatasetCard

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        Not TOML, or a field has the wrong type or value (the message names file and field).
    """
    validate_type(path, "path-like", "path", owner="load_card")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"The dataset card {str(path)!r} does not exist.")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a valid TOML file ({err})") from err
    c = _Card(path)
    c.known(data, ("dataset", "files", "channels", "tasks", "regions", "selections", "reader"),
            "top level")

    ds = c.table(data, "dataset", "")
    c.known(ds, _DATASET_KEYS, "dataset")
    name = c.string(ds, "name", "dataset", required=True)
    if not _NAME_RE.match(name):
        c.fail("dataset", f"name must use letters, digits, '_', '.', '-' only; got {name!r}")
    modality = c.string(ds, "modality", "dataset", required=True, choices=MODALITIES)
    texts = {k: c.string(ds, k, "dataset", default="") for k in
             ("description", "licence", "citation", "url", "obtain")}
    site = c.string(ds, "site", "dataset", default="unknown")
    default_task = c.string(ds, "default_task", "dataset")

    fs = c.table(data, "files", "")
    c.known(fs, _FILES_KEYS, "files")
    root = c.string(fs, "root", "files", required=True)
    pattern = c.string(fs, "pattern", "files", required=True)
    try:
        fields = _placeholders(pattern)
    except ValueError as err:
        c.fail("files", f"pattern {pattern!r} is not a valid format string ({err})")
    unknown = sorted(fields - set(PLACEHOLDERS))
    if unknown:
        c.fail("files", f"pattern uses unknown placeholder(s) {unknown}; allowed: "
                        f"{list(PLACEHOLDERS)}")
    if "subject" not in fields:
        c.fail("files", f"pattern must contain {{subject}}; got {pattern!r}")
    subjects = c.id_list(fs, "subjects", "files", required=True)
    sessions = c.id_list(fs, "sessions", "files")
    if "session" in fields and sessions is None:
        c.fail("files", "sessions is required because pattern uses {session}")
    fetcher = c.string(fs, "fetcher", "files")
    if fetcher is not None and fetcher not in _FETCHERS and not re.fullmatch(
            r"moabb:[A-Za-z_][A-Za-z0-9_]*", fetcher):
        c.fail("files", f"fetcher must be one of {sorted(_FETCHERS)} or 'moabb:<DatasetClass>'; "
                        f"got {fetcher!r}")
    is_moabb = fetcher is not None and fetcher.startswith("moabb:")
    fmt = c.string(fs, "format", "files")
    if fmt is not None:
        from .formats import READERS, TRIAL_READERS

        if fmt not in READERS and fmt not in TRIAL_READERS:
            c.fail("files", f"format must be one of {sorted(READERS)} (or a trial reader: "
                            f"{sorted(TRIAL_READERS)}); got {fmt!r}")
        if is_moabb:
            c.fail("files", "format does not apply to MOABB cards (MOABB reads the files)")
    if any(ch in pattern for ch in _GLOB_CHARS) and not is_moabb:
        c.fail("files", f"pattern {pattern!r} has glob wildcards, which only MOABB cards may use "
                        "(other cards read each file the pattern names)")
    artificial = c.id_list(ds, "artificial_subjects", "dataset") or ()
    unknown_subjects = [a for a in artificial if not any(_same_id(a, s) for s in subjects)]
    if unknown_subjects:
        c.fail("dataset", f"artificial_subjects {unknown_subjects} are not among the [files] "
                          f"subjects ({_short(subjects)})")

    from .formats import TRIAL_READERS

    trial_format = fmt is not None and fmt in TRIAL_READERS
    regions = _channel_lists(c, data, "regions", subjects)
    selections = _selections(c, data, subjects)
    reader_options = _reader_options(c, data, fmt)

    ch = c.table(data, "channels", "", required=False)
    c.known(ch, _CHANNELS_KEYS, "channels")
    default_type = "eeg" if modality == "eeg" else None
    ch_type = c.string(ch, "type", "channels", default=default_type)
    pick = c.str_list(ch, "pick", "channels")
    rename: str | dict = "none"
    if "rename" in ch:
        if isinstance(ch["rename"], dict):
            rename = c.str_map(ch, "rename", "channels")
        else:
            rename = c.string(ch, "rename", "channels", choices=RENAME_RULES)
    montage = c.string(ch, "montage", "channels")
    bipolar = _bipolar_spec(c, ch)
    channels = ChannelSpec(type=ch_type, pick=pick, rename=rename, montage=montage,
                           bipolar=bipolar)

    tasks_raw = c.table(data, "tasks", "", required=modality != "fmri")
    tasks: dict[str, TaskSpec] = {}
    for tname, traw in tasks_raw.items():
        where = f"tasks.{tname}"
        if not isinstance(traw, dict):
            c.fail(where, f"must be a table; got {traw!r:.60}")
        if not _NAME_RE.match(tname):
            c.fail(where, "task names use letters, digits, '_', '.', '-' only")
        c.known(traw, _TASK_KEYS, where)
        tmin = c.number(traw, "tmin", where)
        tmax = c.number(traw, "tmax", where)
        if not tmax > tmin:
            c.fail(where, f"tmax must be greater than tmin; got tmin={tmin:g}, tmax={tmax:g}")
        if "groups" in traw:
            if "runs" in traw or "events" in traw:
                c.fail(where, "give either groups or runs/events, not both")
            graw = traw["groups"]
            if not isinstance(graw, list) or not graw or not all(isinstance(g, dict)
                                                                 for g in graw):
                c.fail(where, f"groups must be a non-empty array of tables; got {graw!r:.60}")
            group_tables = [(f"{where}.groups[{i}]", g) for i, g in enumerate(graw)]
        else:
            group_tables = [(where, traw)]
        groups = []
        for gwhere, g in group_tables:
            if gwhere != where:
                c.known(g, _GROUP_KEYS, gwhere)
            runs = c.id_list(g, "runs", gwhere)
            events = c.str_map(g, "events", gwhere)
            if events is None and not trial_format:
                c.fail(gwhere, "events is required (a table description = \"label\")")
            events = events or {}
            if not is_moabb:
                if "run" in fields and runs is None:
                    c.fail(gwhere, "runs is required because [files] pattern uses {run}")
                if "run" not in fields and runs is not None:
                    c.fail(gwhere, "runs given but [files] pattern has no {run} placeholder")
            groups.append(EventGroup(runs=runs, events=events))
        labels = list(dict.fromkeys(lab for g in groups for lab in g.events.values()))
        classes = c.str_list(traw, "classes", where)
        if classes is None:
            classes = tuple(labels)
        else:
            extra = [lab for lab in labels if lab not in classes]
            if extra:
                c.fail(where, f"classes {list(classes)} lacks the event label(s) {extra}")
        baseline = None
        if "baseline" in traw:
            b = traw["baseline"]
            if (not isinstance(b, list) or len(b) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                               for v in b)):
                c.fail(where, f"baseline must be two numbers [start, stop]; got {b!r:.60}")
            baseline = (float(b[0]), float(b[1]))
        description = c.string(traw, "description", where, default="")
        task_sessions = c.id_list(traw, "sessions", where)
        if task_sessions is not None and not is_moabb:
            if "session" not in fields:
                c.fail(where, "sessions given but [files] pattern has no {session} placeholder")
            absent = [w for w in task_sessions if not any(_same_id(w, v) for v in sessions)]
            if absent:
                c.fail(where, f"sessions {absent} are not among the [files] sessions "
                              f"{list(sessions)}")
        resample = c.number(traw, "resample", where, required=False)
        if resample is not None and not resample > 0:
            c.fail(where, f"resample must be a positive rate in Hz; got {resample:g}")
        per_subject = traw.get("classes_per_subject", False)
        if not isinstance(per_subject, bool):
            c.fail(where, f"classes_per_subject must be true or false; got {per_subject!r:.60}")
        selection = c.string(traw, "selection", where)
        if selection is not None and selection not in selections:
            c.fail(where, f"selection {selection!r} is not among the card's [selections] "
                          f"{sorted(selections)}")
        tasks[tname] = TaskSpec(name=tname, tmin=tmin, tmax=tmax, groups=tuple(groups),
                                classes=tuple(classes), baseline=baseline,
                                description=description, sessions=task_sessions,
                                resample=resample, classes_per_subject=per_subject,
                                selection=selection)
    if modality != "fmri" and not tasks:
        c.fail("tasks", "define at least one [tasks.<name>] table")
    if default_task is not None and default_task not in tasks:
        c.fail("dataset", f"default_task {default_task!r} is not among the tasks "
                          f"{sorted(tasks)}")
    return DatasetCard(path=path, name=name, modality=modality, root=root, pattern=pattern,
                       subjects=subjects, tasks=tasks, channels=channels, sessions=sessions,
                       fetcher=fetcher, site=site, default_task=default_task, format=fmt,
                       artificial_subjects=tuple(artificial), regions=regions,
                       selections=selections, reader_options=reader_options, **texts)


def _bipolar_spec(c: _Card, ch: Mapping) -> str | tuple[str, ...] | None:
    """``[channels] bipolar``: ``"adjacent"`` or a list of ``"anode-cathode"`` names."""
    if "bipolar" not in ch:
        return None
    value = ch["bipolar"]
    if isinstance(value, str):
        if value != "adjacent":
            c.fail("channels", f"bipolar must be 'adjacent' or a list of 'anode-cathode' names; "
                               f"got {value!r}")
        return value
    names = c.str_list(ch, "bipolar", "channels")
    bad = [n for n in names if n.count("-") != 1 or not all(n.split("-"))]
    if bad:
        c.fail("channels", f"bipolar entries must read 'anode-cathode' with one '-' "
                           f"(e.g. 'ROC1-ROC2'); got {bad}")
    same = [n for n in names if n.split("-")[0] == n.split("-")[1]]
    if same:
        c.fail("channels", f"bipolar entries need two different contacts; got {same}")
    return names


def _channels_key(spec: ChannelSpec) -> dict:
    """The ``[channels]`` part of the cache key (``bipolar`` only when set, so that the keys of
    cards without it are unchanged)."""
    out = _jsonable(asdict(spec))
    if out.get("bipolar") is None:
        out.pop("bipolar", None)
    return out


def _reader_options(c: _Card, data: Mapping, fmt: str | None) -> dict:
    """``[reader]``: keyword arguments (strings, numbers, booleans) for the ``[files] format``
    reader, e.g. file names of a release layout (``bcikit.io.braintreebank``)."""
    raw = c.table(data, "reader", "", required=False)
    if raw and fmt is None:
        c.fail("reader", "reader options need a [files] format whose reader takes them")
    for key, value in raw.items():
        if not isinstance(value, (str, int, float, bool)):
            c.fail("reader", f"{key} must be a string, number or boolean; got {value!r:.60}")
    return dict(raw)


def _channel_lists(c: _Card, data: Mapping, key: str, subjects: Sequence) -> dict:
    """``[regions]``: ``{subject: {region: [channels]}}`` (subjects among the card's)."""
    raw = c.table(data, key, "", required=False)
    out: dict = {}
    for subject, table in raw.items():
        where = f"{key}.{subject}"
        if not any(_same_id(subject, s) for s in subjects):
            c.fail(where, f"subject {subject!r} is not among the [files] subjects "
                          f"({_short(subjects)})")
        if not isinstance(table, dict) or not table:
            c.fail(where, f"must be a table region = [channels]; got {table!r:.60}")
        for region in table:
            c.str_list(table, region, where)
        out[str(subject)] = {str(r): list(v) for r, v in table.items()}
    return out


def _selections(c: _Card, data: Mapping, subjects: Sequence) -> dict:
    """``[selections.<name>]``: ``note`` (str) and ``channels`` ``{subject: [channels]}``."""
    raw = c.table(data, "selections", "", required=False)
    out: dict = {}
    for name, table in raw.items():
        where = f"selections.{name}"
        if not isinstance(table, dict):
            c.fail(where, f"must be a table; got {table!r:.60}")
        c.known(table, ("note", "channels"), where)
        note = c.string(table, "note", where, default="")
        chans = c.table(table, "channels", where)
        for subject in chans:
            if not any(_same_id(subject, s) for s in subjects):
                c.fail(where, f"subject {subject!r} is not among the [files] subjects "
                              f"({_short(subjects)})")
            c.str_list(chans, subject, f"{where}.channels")
        out[str(name)] = {"note": note, "channels": {str(k): list(v) for k, v in chans.items()}}
    return out


def list_cards(directory: str | os.PathLike = "datasets") -> list[DatasetCard]:
    """Every ``*.toml`` card in ``directory`` (sorted by file name), validated.

    Raises
    ------
    FileNotFoundError
        ``directory`` does not exist.
    ValueError
        A card is invalid (the message names it).
    """
    validate_type(directory, "path-like", "directory", owner="list_cards")
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"The card folder {str(directory)!r} does not exist.")
    return [load_card(p) for p in sorted(directory.glob("*.toml"))]


def find_card(name: str) -> Path | None:
    """The card called ``name`` in ``./datasets`` or in the source checkout's ``datasets``."""
    for folder in (Path("datasets"), _REPO / "datasets"):
        candidate = folder / f"{name}.toml"
        if candidate.is_file():
            return candidate
    return None


# --------------------------------------------------------------------------------- load_dataset
_IGNORED_EVENTS = re.compile(r"^(bad|edge)|^n/a$|^$", re.IGNORECASE)


def load_dataset(source: str | os.PathLike, *, task: str | None = None, subjects=None,
                 root: str | os.PathLike | None = None, tmin: float | None = None,
                 tmax: float | None = None, download: bool = False,
                 cache: bool | str | os.PathLike = True,
                 verbose: bool | str | int | None = None) -> TrialSet | dict[str, TrialSet]:
    """Trials from a dataset card or a BIDS root.

    Parameters
    ----------
    source : path-like
        A card (``.toml``), the name of a card in ``./datasets``, or a BIDS root folder.
    task : str or None
        Card task, or BIDS task entity (required when a BIDS root holds several tasks).
    subjects : str, int, list or None
        Subjects to load (default: all).
    root : path-like or None
        Card only: read the files from this folder instead of the card's root.
    tmin, tmax : float or None
        Trial window in seconds relative to each event. For cards they override the task's
        window. For BIDS, ``tmin`` defaults to 0 and ``tmax`` to the events' common duration
        from ``events.tsv``.
    download : bool
        Card only: let the card's fetcher download missing files.
    cache : bool or path-like
        Reuse trials cut before (:class:`bcikit.data.cache.TrialSetCache`); a path chooses the
        cache folder.
    verbose : bool, str, int or None
        MNE's verbosity.

    Returns
    -------
    trials : TrialSet or dict of str to TrialSet
        For BIDS the labels are the events' ``trial_type`` (annotation descriptions), classes in
        sorted order; ``meta`` holds subject, session, run, task, dataset (the root's folder
        name), site, onset, event.

    Raises
    ------
    FileNotFoundError
        ``source`` does not exist (or a card's files are missing).
    ValueError
        ``source`` is neither a card nor a BIDS root; bad arguments.
    """
    validate_type(source, "path-like", "source", owner="load_dataset")
    path = Path(source).expanduser()
    if not path.exists() and isinstance(source, str) and _NAME_RE.match(source):
        found = find_card(source)
        if found is not None:
            path = found
    if not path.exists():
        raise FileNotFoundError(f"The dataset source {str(source)!r} does not exist (give a "
                                "card .toml, a card name from ./datasets, or a BIDS root).")
    if path.is_file():
        if path.suffix.lower() != ".toml":
            raise ValueError(f"{str(path)!r}: load_dataset takes a dataset card (.toml) or a BIDS "
                             "root folder; use read_raw + epochs_from_raw for a single file.")
        return load_card(path).load(root=root, subjects=subjects, task=task, cache=cache,
                                    download=download, tmin=tmin, tmax=tmax, verbose=verbose)
    if root is not None:
        raise ValueError("load_dataset: 'root' applies to dataset cards only; the BIDS root is "
                         "'source'.")
    return _load_bids(path, task=task, subjects=subjects, tmin=tmin, tmax=tmax, cache=cache,
                      verbose=verbose)


def _bids_sidecars(fpath: Path) -> list[Path]:
    stem = fpath.name.rsplit("_", 1)[0]
    out = [fpath]
    if fpath.suffix == ".vhdr":
        out += [fpath.with_suffix(".vmrk"), fpath.with_suffix(".eeg")]
    if fpath.suffix == ".set":
        out += [fpath.with_suffix(".fdt")]
    for suffix in ("events.tsv", "channels.tsv", "electrodes.tsv"):
        out.append(fpath.parent / f"{stem}_{suffix}")
    return [p for p in out if p.is_file()]


def _load_bids(root: Path, *, task, subjects, tmin, tmax, cache, verbose):
    from .eeg import find_bids_recordings

    paths = find_bids_recordings(root, subjects=subjects, tasks=task)
    if not paths:
        raise ValueError(f"{str(root)!r}: no EEG/iEEG recording matches subjects={subjects!r}, "
                         f"task={task!r}.")
    tasks = sorted({p.task for p in paths if p.task is not None})
    if task is None and len(tasks) > 1:
        raise ValueError(f"{str(root)!r} holds several tasks {tasks}; name one with task=.")
    sources = sorted({s for p in paths for s in _bids_sidecars(Path(p.fpath))})
    params = {"loader": "bcikit.io.bids/1", "root": str(root.resolve()), "task": task,
              "subjects": None if subjects is None else [str(s) for s in (
                  [subjects] if isinstance(subjects, (str, int)) else subjects)],
              "tmin": tmin, "tmax": tmax}

    def build():
        return _build_bids(root, task=task, subjects=subjects, tmin=tmin, tmax=tmax,
                           verbose=verbose)

    return _cached(cache, sources, params, build)


def _build_bids(root: Path, *, task, subjects, tmin, tmax, verbose):
    from .eeg import _epochs_from_raw, read_bids

    recordings = read_bids(root, subjects=subjects, tasks=task, verbose=verbose)
    labels: set[str] = set()
    durations: set[float] = set()
    for raw, _ in recordings:
        for desc, dur in zip(raw.annotations.description, raw.annotations.duration):
            if not _IGNORED_EVENTS.search(str(desc)):
                labels.add(str(desc))
                durations.add(round(float(dur), 6))
    if not labels:
        raise ValueError(f"{str(root)!r}: the recordings hold no events (events.tsv trial_type "
                         "or annotations).")
    classes = sorted(labels)
    t0 = 0.0 if tmin is None else float(tmin)
    if tmax is None:
        if len(durations) != 1 or next(iter(durations)) <= 0:
            raise ValueError(f"{str(root)!r}: the events' durations are {sorted(durations)[:8]}, "
                             "not one positive value; pass tmax= (and tmin=) to set the window.")
        t1 = next(iter(durations))
    else:
        t1 = float(tmax)
    per_subject: dict[str, list] = {}
    for raw, ent in recordings:
        meta = {"subject": ent["subject"] or "0", "session": ent["session"] or "0",
                "run": ent["run"] or "0", "task": ent["task"] or "", "dataset": root.name,
                "site": "unknown"}
        trials, _, _ = _epochs_from_raw(raw, event_map={c: c for c in classes}, tmin=t0,
                                        tmax=t1, classes=classes, meta=meta, baseline=None,
                                        picks=None, reject_nan=True, on_missing="ignore",
                                        verbose=verbose)
        per_subject.setdefault(str(meta["subject"]), []).append(trials)
    return _combine(per_subject)
