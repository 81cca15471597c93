"""The public Du-IN sEEG word-reading data ("seeg.he2023xuanwu", Xuanwu Hospital).

Layout (inferred from the official loaders of liulab-repository/Du-IN; verify on download)::

    <root>/data/seeg.he2023xuanwu/<subject: 001...012>/word-recitation/<run>/
        dataset.bipolar.default.unaligned/data   # pickled list of trials
        dataset.bipolar.default.unaligned/info   # pickled object with .ch_names

Each trial has ``.name`` (the word read aloud), ``.data_s`` (channels x time, 1000 Hz, -0.5...+2.5 s
around the cue; the signal used) and ``.data_n`` (same shape, unused). The objects are the
official code's ``DotDict`` (a ``dict`` with attribute access), pickled. The official loader
labels trials by the word's index in the sorted set of words, and keeps the channels named in a
hard-coded per-subject list (:data:`OFFICIAL_CHANNELS`), which was chosen with models that had
seen the test trials: use it to replicate the paper only.

Pickles can run code when loaded, so this module never calls :func:`pickle.load` on them: a
restricted unpickler (:func:`safe_load_pickle`) accepts numpy arrays and scalars, plain Python
containers, and the official ``DotDict`` class (under any module path; it becomes a ``dict``);
anything else raises ``ValueError`` naming the file and the refused global.

The data and the released checkpoints are the Hugging Face dataset "Du-IN"
(https://huggingface.co/datasets/liulab-repository/Du-IN); :func:`fetch_duin` downloads them
only when asked (``download=True``), with ``huggingface_hub`` when it is installed.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import sys
import types
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ...utils import check_file, logger, validate_type

if TYPE_CHECKING:  # pragma: no cover
    from ...data.trialset import TrialSet

__all__ = [
    "DATASET",
    "SUBJECTS",
    "OFFICIAL_CHANNELS",
    "OFFICIAL_CHANNELS_NOTE",
    "HF_REPO_ID",
    "TASK_FOLDER",
    "RUN_SUBFOLDER",
    "safe_load_pickle",
    "read_duin_run",
    "load_duin",
    "duin_runs",
    "subject_folder",
    "write_duin_run",
    "write_duin_layout",
    "fetch_duin",
    "load_for_card",
]

DATASET = "duin_xuanwu"
SITE = "xuanwu"
#: Subject folders of the public data.
SUBJECTS: tuple[str, ...] = tuple(f"{i:03d}" for i in range(1, 13))
HF_REPO_ID = "liulab-repository/Du-IN"
DATA_FOLDER = ("data", "seeg.he2023xuanwu")
TASK_FOLDER = "word-recitation"
RUN_SUBFOLDER = "dataset.bipolar.default.unaligned"
SFREQ = 1000.0
TMIN = -0.5
N_TIMES = 3000

#: The official code's per-subject top-10 channel lists (train/duin/run_cls.py). They were
#: ranked by models trained on splits that included the test trials.
OFFICIAL_CHANNELS: dict[str, list[str]] = {
    "001": ["SM8", "SM9", "SM7", "SM11", "P4", "SM10", "SM6", "P3", "SM5", "CI9"],
    "002": ["TI'2", "TI'3", "TI'1", "TI'6", "TI'4", "TI'7", "ST'3", "ST'2", "ST'4", "FP'4"],
    "003": ["ST3", "ST1", "ST2", "ST9", "TI'4", "TI'3", "ST4", "TI'2", "ST7", "TI'8"],
    "004": ["D12", "D13", "C4", "C3", "D11", "D14", "D10", "D9", "D5", "C15"],
    "005": ["E8", "E9", "E6", "E7", "E11", "E12", "E5", "E10", "C10", "E4"],
    "006": ["D3", "D1", "D6", "D2", "D5", "D4", "D7", "D8", "G8", "E13"],
    "007": ["H2", "H4", "H3", "H1", "H6", "H5", "E4", "H7", "C13", "E5"],
    "008": ["TI3", "TI4", "TI2", "TI5", "B9", "TI6", "TI7", "TI9", "TI10", "B5"],
    "009": ["K9", "K8", "K6", "K7", "K11", "K10", "K5", "K4", "K3", "I9"],
    "010": ["PI5", "PI6", "PI7", "PI8", "PI1", "PI9", "PI2", "SM2", "SP3", "PI4"],
    "011": ["T2", "T3", "C9", "T4", "T5", "C7", "C8", "T1", "s1", "C4"],
    "012": ["TI'4", "TI'2", "TI'3", "TI'5", "TI'8", "TI'6", "TI'7", "TO'9", "P'5", "TO'8"],
}
OFFICIAL_CHANNELS_NOTE = ("selected with test data: the official lists were ranked by models "
                          "trained on splits that contained the test trials; use them only to "
                          "replicate the paper")


# ------------------------------------------------------------------------------- safe unpickling
def _numpy_globals() -> dict[tuple[str, str], Any]:
    from numpy._core import multiarray, numeric

    allowed: dict[tuple[str, str], Any] = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = multiarray._reconstruct
        allowed[(mod, "scalar")] = multiarray.scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = numeric._frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    for name in dir(np.dtypes):  # numpy >= 1.25 pickles dtypes by their DType class
        if name.endswith("DType"):
            allowed[("numpy.dtypes", name)] = getattr(np.dtypes, name)
    return allowed


_BUILTINS = {
    ("builtins", "dict"): dict, ("builtins", "list"): list, ("builtins", "tuple"): tuple,
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex, ("builtins", "bytearray"): bytearray,
    ("builtins", "object"): object,
    ("collections", "OrderedDict"): dict,
}
# protocol 0-2 pickles name Python 2 modules (pickle's fix_imports)
_BUILTINS.update({("__builtin__", n): t for (m, n), t in list(_BUILTINS.items())
                  if m == "builtins"})


def _codecs_encode(obj: Any, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` restricted to str -> bytes (how protocol-2 pickles store bytes)."""
    if not isinstance(obj, str) or not isinstance(encoding, str):
        raise pickle.UnpicklingError("_codecs.encode is only allowed on text")
    return obj.encode(encoding)


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` (protocol 0/1 pickles of dict subclasses), for dict only."""
    if cls is not dict or base not in (dict, object):
        raise pickle.UnpicklingError("copyreg._reconstructor is only allowed for DotDict/dict")
    return dict() if state is None else dict(state)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file)
        self._path = path
        self._allowed = {**_numpy_globals(), **_BUILTINS,
                         ("_codecs", "encode"): _codecs_encode,
                         ("copyreg", "_reconstructor"): _reconstructor,
                         ("copy_reg", "_reconstructor"): _reconstructor}

    def find_class(self, module: str, name: str) -> Any:
        if name == "DotDict":  # the official attribute-access dict, whatever its module
            return dict
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        raise ValueError(f"{str(self._path)!r}: refusing to unpickle the global "
                         f"{module}.{name}; Du-IN files hold only numpy arrays, plain "
                         f"containers and DotDict objects (a file holding anything else may "
                         f"run code when loaded).")

    def persistent_load(self, pid: Any) -> Any:
        raise ValueError(f"{str(self._path)!r}: refusing a pickle with persistent ids.")


def safe_load_pickle(path: str | os.PathLike) -> Any:
    """Load a pickle that may hold only numpy data, plain containers and ``DotDict`` objects.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    object
        The content, with every ``DotDict`` turned into a ``dict``.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The pickle names any other global (a class or function it would call), or it is not a
        valid pickle; the message names the file.
    """
    validate_type(path, "path-like", "path", owner="safe_load_pickle")
    path = check_file(path, what="pickle file")
    data = path.read_bytes()
    try:
        return _RestrictedUnpickler(io.BytesIO(data), path).load()
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - any unpickling failure becomes a named error
        raise ValueError(f"{str(path)!r} is not a readable Du-IN pickle: "
                         f"{type(err).__name__}: {err}") from err


# ------------------------------------------------------------------------------------- reading
def _field(obj: Any, key: str, path: Path, what: str) -> Any:
    if isinstance(obj, dict) and key in obj:
        return obj[key]
    raise ValueError(f"{str(path)!r}: {what} lacks the field {key!r} (it has "
                     f"{sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__}).")


def subject_folder(root: str | os.PathLike, subject: str | int) -> Path:
    """``<root>/data/seeg.he2023xuanwu/<subject:03d>`` (``root`` may also be that data folder)."""
    root = Path(root).expanduser()
    sid = _subject_id(subject)
    for base in (root.joinpath(*DATA_FOLDER), root / DATA_FOLDER[-1], root):
        if (base / sid).is_dir():
            return base / sid
    return root.joinpath(*DATA_FOLDER, sid)


def _subject_id(subject: str | int) -> str:
    text = str(subject)
    return f"{int(text):03d}" if text.isdigit() else text


def duin_runs(root: str | os.PathLike, subject: str | int) -> list[str]:
    """The runs (folder names under ``word-recitation``) of a subject that hold data, in natural
    order (``run2`` before ``run10``)."""
    task = subject_folder(root, subject) / TASK_FOLDER
    if not task.is_dir():
        raise FileNotFoundError(f"No Du-IN task folder {str(task)!r} for subject {subject!r}.")
    runs = [p.name for p in task.iterdir()
            if (p / RUN_SUBFOLDER / "data").is_file() and (p / RUN_SUBFOLDER / "info").is_file()]
    return sorted(runs, key=lambda r: [int(t) if t.isdigit() else t
                                       for t in re.split(r"(\d+)", r)])


def read_duin_run(run_dir: str | os.PathLike, *, channels: Sequence[str] | None = None,
                  classes: Sequence[str] | None = None, subject: str | None = None,
                  scale: float = 1.0) -> TrialSet:
    """Read one run of the public Du-IN data.

    Parameters
    ----------
    run_dir : path-like
        The run folder (``.../word-recitation/<run>``) or its
        ``dataset.bipolar.default.unaligned`` subfolder.
    channels : sequence of str or None
        Channels to keep, in this order (default: all of ``info.ch_names``).
    classes : sequence of str or None
        Word order of the class codes (default: the run's words, sorted, as the official loader
        orders them).
    subject : str or None
        Subject id for ``meta`` (default: the 3-digit folder above ``word-recitation``).
    scale : float
        Multiply the signals by this (the files' units are not documented).

    Returns
    -------
    TrialSet
        ``X`` (n_trials, n_channels, 3000) float32 from ``data_s``; ``y`` codes into ``classes``;
        ``meta`` with subject, session ``"0"``, run (the run folder's name), dataset
        ``"duin_xuanwu"``, site, ``word`` and ``trial_in_file``; ``tmin = -0.5``; ``info`` with
        sEEG channels at 1000 Hz.

    Raises
    ------
    FileNotFoundError
        The ``data`` or ``info`` file is missing.
    ValueError
        A pickle is refused or malformed, a trial has another shape, a requested channel or a
        trial's word (with ``classes``) is unknown; messages name the file.
    """
    import mne

    from ...data.trialset import TrialSet

    validate_type(run_dir, "path-like", "run_dir", owner="read_duin_run")
    folder = Path(run_dir).expanduser()
    if folder.name != RUN_SUBFOLDER:
        folder = folder / RUN_SUBFOLDER
    data_file = check_file(folder / "data", what="Du-IN trial file")
    info_file = check_file(folder / "info", what="Du-IN info file")
    run = folder.parent.name
    if subject is None:
        parts = folder.parts
        subject = parts[-4] if len(parts) >= 4 else "0"
    info_obj = safe_load_pickle(info_file)
    ch_names = _field(info_obj, "ch_names", info_file, "the info object")
    if isinstance(ch_names, np.ndarray):
        ch_names = ch_names.tolist()
    if not isinstance(ch_names, (list, tuple)) or not all(isinstance(c, str) for c in ch_names):
        raise ValueError(f"{str(info_file)!r}: ch_names must be a list of strings; got "
                         f"{type(ch_names).__name__}.")
    ch_names = list(ch_names)
    if len(set(ch_names)) != len(ch_names):
        raise ValueError(f"{str(info_file)!r}: ch_names repeats names.")
    if channels is None:
        picks = list(range(len(ch_names)))
        keep = ch_names
    else:
        keep = [str(c) for c in channels]
        absent = [c for c in keep if c not in ch_names]
        if absent:
            raise ValueError(f"{str(info_file)!r}: channels {absent} are not among the run's "
                             f"{len(ch_names)} channels ({ch_names[:8]}...).")
        picks = [ch_names.index(c) for c in keep]
    trials = safe_load_pickle(data_file)
    if not isinstance(trials, (list, tuple)) or not trials:
        raise ValueError(f"{str(data_file)!r}: expected a non-empty list of trials; got "
                         f"{type(trials).__name__}.")
    X = np.empty((len(trials), len(picks), N_TIMES), dtype=np.float32)
    words = []
    for i, trial in enumerate(trials):
        name = _field(trial, "name", data_file, f"trial {i}")
        data = np.asarray(_field(trial, "data_s", data_file, f"trial {i}"))
        if data.shape != (len(ch_names), N_TIMES) or data.dtype.kind not in "iuf":
            raise ValueError(f"{str(data_file)!r}: trial {i} data_s must be numeric of shape "
                             f"({len(ch_names)}, {N_TIMES}) (channels x 3 s at 1000 Hz); got "
                             f"{data.dtype} {data.shape}.")
        X[i] = data[picks]
        words.append(str(name))
    if scale != 1.0:
        X *= np.float32(scale)
    if classes is None:
        classes = sorted(set(words))
    else:
        classes = [str(c) for c in classes]
        unknown = sorted(set(words) - set(classes))
        if unknown:
            raise ValueError(f"{str(data_file)!r}: words {unknown[:5]} are not among classes.")
    code = {w: k for k, w in enumerate(classes)}
    y = np.array([code[w] for w in words], dtype=np.int64)
    meta = pd.DataFrame({"subject": str(subject), "session": "0", "run": run,
                         "dataset": DATASET, "site": SITE, "word": words,
                         "trial_in_file": np.arange(len(trials))})
    info = mne.create_info(keep, SFREQ, "seeg")
    return TrialSet(X, y, meta, info, classes, TMIN)


def load_duin(root: str | os.PathLike, subjects: str | int | Sequence | None = None, *,
              runs: Sequence[str] | None = None,
              channels: str | Sequence[str] | Mapping[str, Sequence[str]] | None = None,
              classes: Sequence[str] | None = None, scale: float = 1.0,
              verbose: bool | str | int | None = None) -> dict[str, TrialSet]:
    """Read subjects of the public Du-IN data: ``{subject: TrialSet}``.

    Parameters
    ----------
    root : path-like
        The folder holding ``data/seeg.he2023xuanwu`` (or that folder itself).
    subjects : str, int, sequence or None
        Subject ids (``"001"`` or ``1``); default: every subject folder present.
    runs : sequence of str or None
        Run folders to read (default: all present, see :func:`duin_runs`).
    channels : None, "official", sequence or mapping
        None: all channels (every run of a subject must list the same channels, in any order;
        the first run's order is used); ``"official"``: :data:`OFFICIAL_CHANNELS` (see
        :data:`OFFICIAL_CHANNELS_NOTE`); a list: the same channels for every subject; a mapping
        ``{subject: [channels]}``.
    classes : sequence of str or None
        Word order of the class codes; default: the sorted words of each subject's runs (the
        official convention).
    scale : float
        Multiply the signals by this.
    verbose : bool, str, int or None
        Progress messages.

    Returns
    -------
    dict of str to TrialSet
        Runs concatenated per subject; ``meta.run`` names the run folder.

    Raises
    ------
    FileNotFoundError
        A subject or run folder is missing.
    ValueError
        As :func:`read_duin_run`; runs of a subject with different channels (pass
        ``channels=``).
    """
    from ...data.trialset import TrialSet
    from ...utils import progress

    validate_type(root, "path-like", "root", owner="load_duin")
    base = Path(root).expanduser()
    if subjects is None:
        found = []
        for folder in (base.joinpath(*DATA_FOLDER), base / DATA_FOLDER[-1], base):
            if folder.is_dir():
                found = sorted(p.name for p in folder.iterdir()
                               if p.is_dir() and (p / TASK_FOLDER).is_dir())
                if found:
                    break
        if not found:
            raise FileNotFoundError(f"No Du-IN subject folders under {str(base)!r} (expected "
                                    f"{'/'.join(DATA_FOLDER)}/<001...012>/{TASK_FOLDER}).")
        subject_list = found
    else:
        items = [subjects] if isinstance(subjects, (str, int)) else list(subjects)
        subject_list = [_subject_id(s) for s in items]
    out: dict[str, TrialSet] = {}
    for sid in progress(subject_list, desc="Du-IN: subjects", verbose=verbose):
        if channels == "official":
            if sid not in OFFICIAL_CHANNELS:
                raise ValueError(f"load_duin: no official channel list for subject {sid!r} "
                                 f"(known: {sorted(OFFICIAL_CHANNELS)}).")
            chans: Sequence[str] | None = OFFICIAL_CHANNELS[sid]
        elif isinstance(channels, Mapping):
            if sid not in {_subject_id(k) for k in channels}:
                raise ValueError(f"load_duin: channels has no entry for subject {sid!r}.")
            chans = {_subject_id(k): v for k, v in channels.items()}[sid]
        elif isinstance(channels, str):
            raise ValueError(f"The 'channels' parameter of load_duin must be None, 'official', "
                             f"a list or a mapping. Got {channels!r} instead.")
        else:
            chans = channels
        run_list = list(runs) if runs is not None else duin_runs(base, sid)
        if not run_list:
            raise FileNotFoundError(f"Subject {sid!r} has no readable run under "
                                    f"{str(subject_folder(base, sid) / TASK_FOLDER)!r}.")
        parts = []
        first_names = None
        for run in run_list:
            run_dir = subject_folder(base, sid) / TASK_FOLDER / str(run)
            if chans is None and first_names is not None:
                info_file = run_dir / RUN_SUBFOLDER / "info"
                names = list(_field(safe_load_pickle(check_file(info_file, what="Du-IN info file")),
                                    "ch_names", info_file, "the info object"))
                if sorted(names) != sorted(first_names):
                    raise ValueError(f"{str(info_file)!r}: the run's channels differ from the "
                                     f"subject's first run; pass channels= to pick common ones.")
                part = read_duin_run(run_dir, channels=first_names, subject=sid, scale=scale,
                                     classes=classes)
            else:
                part = read_duin_run(run_dir, channels=chans, subject=sid, scale=scale,
                                     classes=classes)
                first_names = part.ch_names
            parts.append(part)
        words = sorted({c for p in parts for c in p.classes}) if classes is None else list(classes)
        recoded = []
        for p in parts:
            y = np.array([words.index(p.classes[k]) for k in p.y], dtype=np.int64)
            recoded.append(TrialSet(p.X, y, p.meta, p.info, words, p.tmin, check_finite=False))
        out[sid] = TrialSet.concatenate(recoded)
        logger.info("Du-IN subject %s: %d trials, %d channels, %d runs", sid, len(out[sid]),
                    out[sid].n_chans, len(run_list))
    return out


# ------------------------------------------------------------------------------------- writing
@contextmanager
def _official_dotdict(module: str):
    """A ``DotDict`` class that pickles as ``<module>.DotDict``, the official code's class."""
    class DotDict(dict):
        def __getattr__(self, key):
            try:
                return self[key]
            except KeyError:
                raise AttributeError(key) from None

        __setattr__ = dict.__setitem__

    DotDict.__module__ = module
    DotDict.__qualname__ = "DotDict"
    previous = sys.modules.get(module)
    fake = types.ModuleType(module) if previous is None else previous
    had = hasattr(fake, "DotDict")
    old = getattr(fake, "DotDict", None)
    fake.DotDict = DotDict
    sys.modules[module] = fake
    try:
        yield DotDict
    finally:
        if had:
            fake.DotDict = old
        else:
            del fake.DotDict
        if previous is None:
            del sys.modules[module]


def write_duin_run(run_dir: str | os.PathLike, X: np.ndarray, words: Sequence[str],
                   ch_names: Sequence[str], *, noise: np.ndarray | None = None,
                   dotdict_module: str = "utils", protocol: int = 4,
                   overwrite: bool = False) -> Path:
    """Write one run in the public Du-IN layout (for tests and for sharing simulated data).

    The files are what the official loaders read: ``data`` is a pickled list of ``DotDict``
    trials (``name``, ``data_s``, ``data_n``: channels x time float64) and ``info`` a pickled
    ``DotDict`` with ``ch_names``; ``DotDict`` is pickled as ``<dotdict_module>.DotDict`` (the
    official ``from utils import DotDict``).

    Parameters
    ----------
    run_dir : path-like
        The run folder (``.../word-recitation/<run>``); ``dataset.bipolar.default.unaligned`` is
        created inside it.
    X : ndarray, shape (n_trials, n_channels, 3000)
    words : sequence of str
        The word of each trial.
    ch_names : sequence of str
    noise : ndarray or None
        ``data_n`` (default: zeros).
    dotdict_module : str
        Top-level module name the ``DotDict`` class is pickled under (``"utils"``).
    protocol : int
        Pickle protocol.
    overwrite : bool
        Replace existing files.

    Returns
    -------
    Path
        The ``dataset.bipolar.default.unaligned`` folder.
    """
    X = np.asarray(X)
    if not isinstance(dotdict_module, str) or not dotdict_module.isidentifier():
        raise ValueError(f"The 'dotdict_module' parameter of write_duin_run must be a top-level "
                         f"module name such as 'utils'. Got {dotdict_module!r} instead.")
    if X.ndim != 3 or X.shape[1] != len(ch_names) or X.shape[2] != N_TIMES:
        raise ValueError(f"write_duin_run: X must be (n_trials, {len(ch_names)}, {N_TIMES}); got "
                         f"{X.shape}.")
    if len(words) != len(X):
        raise ValueError(f"write_duin_run: {len(words)} words for {len(X)} trials.")
    folder = Path(run_dir) / RUN_SUBFOLDER
    for name in ("data", "info"):
        if (folder / name).exists() and not overwrite:
            raise FileExistsError(f"{str(folder / name)!r} already exists; pass overwrite=True.")
    folder.mkdir(parents=True, exist_ok=True)
    with _official_dotdict(dotdict_module) as DotDict:
        trials = []
        for i in range(len(X)):
            t = DotDict()
            t.name = str(words[i])
            t.data_s = np.asarray(X[i], dtype=np.float64)
            t.data_n = (np.zeros_like(t.data_s) if noise is None
                        else np.asarray(noise[i], dtype=np.float64))
            trials.append(t)
        info = DotDict()
        info.ch_names = [str(c) for c in ch_names]
        (folder / "data").write_bytes(pickle.dumps(trials, protocol=protocol))
        (folder / "info").write_bytes(pickle.dumps(info, protocol=protocol))
    return folder


def write_duin_layout(root: str | os.PathLike, trials: Mapping[str, TrialSet], *,
                      dotdict_module: str = "utils", overwrite: bool = False) -> Path:
    """Write ``{subject: TrialSet}`` (e.g. :func:`bcikit.simulate.make_seeg_words` trials) in
    the Du-IN layout: subject ``k``-th -> folder ``00k`` (or the subject id when it is a number),
    one run folder per ``meta.run``. Returns ``<root>/data/seeg.he2023xuanwu``."""
    base = Path(root).joinpath(*DATA_FOLDER)
    for k, (subject, ts) in enumerate(trials.items(), 1):
        sid = _subject_id(subject) if str(subject).isdigit() else f"{k:03d}"
        if ts.n_times != N_TIMES:
            raise ValueError(f"write_duin_layout: subject {subject!r} has {ts.n_times} samples "
                             f"per trial; the layout holds {N_TIMES}.")
        words = ts.label_names
        for run, part in ts.by("run").items():
            idx = np.flatnonzero(ts.meta["run"].astype(str).to_numpy() == run)
            write_duin_run(base / sid / TASK_FOLDER / run, np.asarray(part.X), words[idx],
                           ts.ch_names, dotdict_module=dotdict_module, overwrite=overwrite)
    return base


# ------------------------------------------------------------------------------------- fetching
def fetch_duin(root: str | os.PathLike, subjects: Sequence[str] | None = None, *,
               include_checkpoints: bool = False,
               verbose: bool | str | int | None = None) -> Path:
    """Download the public Du-IN data (and optionally the released checkpoints) into ``root``.

    Uses ``huggingface_hub.snapshot_download`` on the dataset :data:`HF_REPO_ID`, restricted to
    the subjects' ``data/seeg.he2023xuanwu/<subject>/`` folders (and ``pretrains/duin/<subject>``
    with ``include_checkpoints``). Files already present are not downloaded again.

    Raises
    ------
    ImportError
        ``huggingface_hub`` is not installed (the message says how to install it).
    ConnectionError
        The download failed; the message says where to get the files by hand.
    """
    from ...utils import require

    validate_type(root, "path-like", "root", owner="fetch_duin")
    subject_list = [_subject_id(s) for s in (subjects or SUBJECTS)]
    unknown = [s for s in subject_list if s not in SUBJECTS]
    if unknown:
        raise ValueError(f"fetch_duin: the public Du-IN data has subjects {list(SUBJECTS)}; got "
                         f"{unknown}.")
    hub = require("huggingface_hub", purpose="Downloading the Du-IN data")
    patterns = [f"{'/'.join(DATA_FOLDER)}/{s}/**" for s in subject_list]
    if include_checkpoints:
        patterns += [f"pretrains/duin/{s}/**" for s in subject_list]
    root = Path(root).expanduser()
    say = logger.warning if verbose else logger.info
    say("Downloading Du-IN subjects %s from the Hugging Face dataset %s into %s (cite Zheng et "
        "al., NeurIPS 2024).", subject_list, HF_REPO_ID, root)
    try:
        hub.snapshot_download(repo_id=HF_REPO_ID, repo_type="dataset", local_dir=str(root),
                              allow_patterns=patterns)
    except Exception as err:  # noqa: BLE001 - network errors of many kinds
        raise ConnectionError(f"Could not download the Du-IN data from "
                              f"https://huggingface.co/datasets/{HF_REPO_ID} ({err}). Download "
                              f"the folders {patterns[:2]}... by hand into {str(root)!r}.") from err
    return root.joinpath(*DATA_FOLDER)


# ------------------------------------------------------------------------------------- cards
def load_for_card(card, *, task, subjects: list, root, download: bool, cache,
                  verbose) -> TrialSet | dict[str, TrialSet]:
    """Trial reader for dataset cards with ``[files] format = "duin"``.

    The card's ``pattern`` names each subject's ``word-recitation`` folder; its runs are the
    sub-folders holding data. ``[channels] pick``, or the ``[selections.<name>]`` list that a task
    names with ``selection = "<name>"``, restricts the channels. Missing subjects are fetched
    from Hugging Face only with ``download=True``.
    """
    from ..cards import _cached

    base = card.resolve_root(root)
    missing = [s for s in subjects
               if not (base / card._format(s, None, None)).is_dir()]
    if missing:
        if not download:
            raise FileNotFoundError(
                f"{card.path}: {len(missing)} subject folder(s) of dataset {card.name!r} are "
                f"missing, e.g. {str(base / card._format(missing[0], None, None))!r}. Pass "
                f"download=True (CLI: --set download=true) to fetch them from Hugging Face. "
                f"{card.obtain.strip()}")
        fetch_duin(base, [str(s) for s in missing], verbose=verbose)
    selection = card.selections[task.selection] if task.selection else None
    pick = card.channels.pick
    sources = []
    for s in subjects:
        folder = base / card._format(s, None, None)
        for run in (sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []):
            for name in ("data", "info"):
                f = folder / run / RUN_SUBFOLDER / name
                if f.is_file():
                    sources.append(f)
    params = {"loader": "bcikit.io.formats.duin/1", "card": card.name, "task": task.name,
              "subjects": [str(s) for s in subjects], "pick": list(pick) if pick else None,
              "selection": task.selection}

    def build():
        out = {}
        for s in subjects:
            sid = _subject_id(s)
            if selection is not None:
                chans = selection["channels"].get(sid) or selection["channels"].get(str(s))
                if chans is None:
                    raise ValueError(f"{card.path}: selection {task.selection!r} has no list for "
                                     f"subject {sid!r}.")
            else:
                chans = list(pick) if pick else None
            folder = base / card._format(s, None, None)
            data = load_duin(folder.parent.parent, [sid], channels=chans,
                             classes=list(task.classes) if task.classes else None,
                             verbose=verbose)[sid]
            data.meta["task"] = task.name
            data.meta["dataset"] = card.name
            data.meta["site"] = card.site
            out[sid] = data
        return out if len(out) > 1 else next(iter(out.values()))

    return _cached(cache, sorted(sources), params, build)
