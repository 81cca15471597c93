"""Leak-free split protocols: the one place where train / validation / test indices are made.

Every pipeline, estimator, notebook and federated client splits a :class:`~bcikit.data.TrialSet`
through :func:`get_protocol`. A protocol returns a list of :class:`Split` objects holding integer
indices into the TrialSet; :func:`apply_split` turns one into three TrialSets.

Protocols (name -> what it does):

``chronological`` (alias ``co``)
    Per subject and class: the first ``ceil(train_frac * n_c)`` trials in recording order train,
    the rest test; the validation set is the last ``valid_frac`` of each class's training trials.
``chronological_kfold`` (alias ``cv``)
    Per subject, ``k`` contiguous chronological folds, class-balanced (each class cut into ``k``
    contiguous blocks) or plain ``KFold(k)`` without shuffling (``folds="contiguous"``).
``kfold``
    Per subject, stratified k-fold with shuffling (seeded); validation carved from the training
    trials, stratified by class.
``leave_one_run_out`` (alias ``loro``)
    Per subject, each run is the test set once; validation is another run or a fraction.
``cross_session``
    Per subject, train on the sessions before the test session (default: the last one).
``leave_one_subject_out`` (alias ``loso``)
    Each subject is the test set once; validation is one or more other subjects or a fraction of
    every training subject's trials.
``official_trials``
    The official Du-IN split (replication only): per subject and class a random 80/10/10
    train / validation / test draw that ignores runs (optimistic under run drifts).

"Recording order" is :func:`chronological_order`: subject, session and run in order of first
appearance in the TrialSet, then ``meta["onset"]`` (trial order when there is no onset).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ..utils import check_option, check_range, validate_type, warn
from .trialset import TrialSet

__all__ = ["Split", "Protocol", "PROTOCOLS", "PROTOCOL_ALIASES", "get_protocol", "apply_split",
           "chronological_order", "Chronological", "ChronologicalKFold", "KFold",
           "LeaveOneRunOut", "CrossSession", "LeaveOneSubjectOut", "OfficialTrials", "TRIAL_INDEX"]

TRIAL_INDEX = "trial_index"
"""Metadata column :func:`apply_split` adds: each trial's index in the split TrialSet."""

_EPS = 1e-9


# ---------------------------------------------------------------------------------------- Split
def _as_index(values: Any, field: str) -> np.ndarray:
    arr = np.asarray(values if values is not None else [], dtype=np.int64).reshape(-1)
    if arr.size and arr.min() < 0:
        raise ValueError(f"Split.{field} holds negative indices ({arr.min()}); indices must be >= 0.")
    if np.unique(arr).size != arr.size:
        raise ValueError(f"Split.{field} holds repeated indices.")
    return np.sort(arr)


@dataclass(frozen=True, eq=False)
class Split:
    """One train / validation / test partition of a TrialSet.

    Attributes
    ----------
    name : str
        What the split is, e.g. ``"S01/fold0"``, ``"test-subject=S03"``, ``"S01/session=1"``.
    train, valid, test : ndarray of int64
        Sorted indices into the TrialSet; ``valid`` may be empty. The three are disjoint
        (checked on construction).
    group : str or None
        The subject (or other group) a within-subject split belongs to; the test subject for
        leave-one-subject-out.
    """

    name: str
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    group: str | None = None

    def __post_init__(self) -> None:
        for field in ("train", "valid", "test"):
            object.__setattr__(self, field, _as_index(getattr(self, field), field))
        for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
            common = np.intersect1d(getattr(self, a), getattr(self, b))
            if common.size:
                raise ValueError(f"Split {self.name!r}: {a} and {b} share {common.size} trial(s) "
                                 f"(first: {common[:5].tolist()}); they must be disjoint.")

    @property
    def sizes(self) -> dict[str, int]:
        """Number of trials in each part."""
        return {"train": int(self.train.size), "valid": int(self.valid.size),
                "test": int(self.test.size)}

    def __repr__(self) -> str:
        s = self.sizes
        return (f"Split({self.name!r}, train={s['train']}, valid={s['valid']}, "
                f"test={s['test']}, group={self.group!r})")


def apply_split(ts: TrialSet, split: Split) -> tuple[TrialSet, TrialSet, TrialSet]:
    """Cut ``ts`` into ``(train, valid, test)`` TrialSets following ``split``.

    Each part gets a ``trial_index`` metadata column with the trials' indices in ``ts`` (kept as
    is when ``ts`` already has one, so nested splits keep the original ids); fitted transforms
    record it and :class:`bcikit.data.transforms.LeakGuard` checks it.

    Raises
    ------
    ValueError
        When an index is out of range for ``ts``.
    """
    validate_type(ts, TrialSet, "ts", owner="apply_split")
    validate_type(split, Split, "split", owner="apply_split")
    n = len(ts)
    for field in ("train", "valid", "test"):
        idx = getattr(split, field)
        if idx.size and idx.max() >= n:
            raise ValueError(f"Split {split.name!r}: {field} index {int(idx.max())} is out of range "
                             f"for a TrialSet of {n} trials; was it made for another TrialSet?")
    if TRIAL_INDEX in ts.meta:
        tagged = ts
    else:
        meta = ts.meta.copy()
        meta[TRIAL_INDEX] = np.arange(n, dtype=np.int64)
        tagged = TrialSet(ts.X, ts.y, meta, ts.info, ts.classes, ts.tmin, check_finite=False)
    return tagged.subset(split.train), tagged.subset(split.valid), tagged.subset(split.test)


# ---------------------------------------------------------------------------------------- helpers
def _ceil(x: float) -> int:
    """ceil that ignores floating-point dust (0.2 * 5 -> 1, not 2)."""
    return int(math.ceil(x - _EPS))


def _n_valid(frac: float, n: int) -> int:
    """Trials to move to validation out of ``n``: ceil(frac * n), keeping at least one for training."""
    if frac <= 0 or n <= 1:
        return 0
    return min(_ceil(frac * n), n - 1)


def _strata(ts: TrialSet) -> np.ndarray:
    """Class codes used for stratification (all zeros for continuous targets)."""
    y = np.asarray(ts.y)
    if ts.classes is not None or np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
        return pd.factorize(y, sort=True)[0].astype(np.int64)
    return np.zeros(len(y), dtype=np.int64)


def _meta_str(ts: TrialSet, column: str) -> np.ndarray:
    return ts.meta[column].astype(str).to_numpy()


def chronological_order(ts: TrialSet, index: np.ndarray | None = None) -> np.ndarray:
    """Indices of ``ts`` (or of ``index``) sorted in recording order.

    Subjects, sessions and runs are ordered by first appearance in ``ts``; trials within a run by
    ``meta["onset"]`` when it is present and finite, by their position otherwise.

    Parameters
    ----------
    ts : TrialSet
    index : array of int, optional
        A subset of trials to order (default: all).

    Returns
    -------
    ndarray of int64
        The same indices, in recording order.
    """
    index = np.arange(len(ts), dtype=np.int64) if index is None else np.asarray(index, np.int64)
    meta = ts.meta
    subj = pd.factorize(meta["subject"].astype(str))[0]
    sess = pd.factorize(meta["subject"].astype(str) + "\x00" + meta["session"].astype(str))[0]
    run = pd.factorize(meta["subject"].astype(str) + "\x00" + meta["session"].astype(str)
                       + "\x00" + meta["run"].astype(str))[0]
    onset = np.zeros(len(ts))
    if "onset" in meta:
        values = pd.to_numeric(meta["onset"], errors="coerce").to_numpy(float)[index]
        finite = np.isfinite(values)
        if finite.all():
            onset[index] = values
        elif finite.any():
            warn(f"meta['onset'] is missing for {int((~finite).sum())} of {index.size} trials; "
                 f"recording order falls back to trial order for all of them.")
    order = np.lexsort((index, onset[index], run[index], sess[index], subj[index]))
    return index[order]


def _groups(ts: TrialSet, within: str) -> list[tuple[str | None, np.ndarray]]:
    """``[(label, indices)]`` of the groups a within-group protocol splits separately."""
    if within == "all":
        return [(None, np.arange(len(ts), dtype=np.int64))]
    if within not in ts.meta:
        raise ValueError(f"within={within!r} names no metadata column; the TrialSet has columns "
                         f"{list(ts.meta.columns)} (or use within='all').")
    values = _meta_str(ts, within)
    return [(g, np.flatnonzero(values == g).astype(np.int64)) for g in pd.unique(values)]


def _prefix(label: str | None) -> str:
    return "" if label is None else f"{label}/"


def _carve_last(order: np.ndarray, strata: np.ndarray, train: np.ndarray,
                frac: float) -> tuple[np.ndarray, np.ndarray]:
    """Move the chronologically last ``frac`` of each class's training trials to validation."""
    if frac <= 0:
        return train, np.empty(0, np.int64)
    in_train = np.isin(order, train)
    keep, valid = [], []
    for c in np.unique(strata[train]):
        oc = order[in_train & (strata[order] == c)]
        nv = _n_valid(frac, oc.size)
        keep.append(oc[:oc.size - nv])
        valid.append(oc[oc.size - nv:])
    return np.concatenate(keep), np.concatenate(valid)


def _carve_random(rng: np.random.Generator, strata: np.ndarray, train: np.ndarray,
                  frac: float) -> tuple[np.ndarray, np.ndarray]:
    """Move a random, class-stratified ``frac`` of the training trials to validation."""
    if frac <= 0:
        return train, np.empty(0, np.int64)
    keep, valid = [], []
    for c in np.unique(strata[train]):
        members = train[strata[train] == c]
        members = members[rng.permutation(members.size)]
        nv = _n_valid(frac, members.size)
        valid.append(members[:nv])
        keep.append(members[nv:])
    return np.concatenate(keep), np.concatenate(valid)


def _check_valid_frac(value: Any, owner: str, name: str = "valid_frac") -> None:
    validate_type(value, "numeric", name, owner=owner)
    check_range(value, name, low=0.0, high=1.0, high_inclusive=False, owner=owner)


def _check_seed(value: Any, owner: str) -> None:
    validate_type(value, ("int", None), "seed", owner=owner)


def _check_within(value: Any, owner: str) -> None:
    validate_type(value, str, "within", owner=owner)


# ---------------------------------------------------------------------------------------- base
class Protocol:
    """A way to split a TrialSet into train / validation / test parts.

    Subclasses take keyword-only parameters (checked when the protocol is built), implement
    :meth:`split` and are registered in :data:`PROTOCOLS`.
    """

    name: ClassVar[str] = "protocol"

    def split(self, ts: TrialSet) -> list[Split]:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    @property
    def params(self) -> dict[str, Any]:
        """The protocol's parameters (what :func:`get_protocol` would take to rebuild it)."""
        return {p: getattr(self, p) for p in self.param_names()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    def _check_ts(self, ts: TrialSet) -> None:
        validate_type(ts, TrialSet, "ts", owner=f"protocol {self.name!r}")
        if len(ts) == 0:
            raise ValueError(f"Protocol {self.name!r} got an empty TrialSet.")


class Chronological(Protocol):
    """Per group and class, the first trials in recording order train, the rest test.

    Parameters
    ----------
    train_frac : float
        Fraction of each class's trials (in recording order) used for training and validation:
        the first ``ceil(train_frac * n_c)``. Default 0.8 (BNCI2014_001: 58 + 58 / 14 + 14).
    valid_frac : float
        The last ``ceil(valid_frac * n_train_c)`` of each class's training trials (in recording
        order) form the validation set; 0 for none. At least one training trial per class stays.
    within : str
        Metadata column that defines the groups split separately (default ``"subject"``), or
        ``"all"`` for one group.
    """

    name = "chronological"

    def __init__(self, *, train_frac: float = 0.8, valid_frac: float = 0.2,
                 within: str = "subject"):
        self.train_frac = train_frac
        self.valid_frac = valid_frac
        self.within = within
        owner = f"protocol {self.name!r}"
        validate_type(train_frac, "numeric", "train_frac", owner=owner)
        check_range(train_frac, "train_frac", low=0.0, high=1.0, low_inclusive=False,
                    high_inclusive=False, owner=owner)
        _check_valid_frac(valid_frac, owner)
        _check_within(within, owner)

    def split(self, ts: TrialSet) -> list[Split]:
        self._check_ts(ts)
        strata = _strata(ts)
        out = []
        for label, idx in _groups(ts, self.within):
            order = chronological_order(ts, idx)
            train, test = [], []
            for c in np.unique(strata[idx]):
                oc = order[strata[order] == c]
                n_tr = _ceil(self.train_frac * oc.size)
                train.append(oc[:n_tr])
                test.append(oc[n_tr:])
            train_idx, test_idx = np.concatenate(train), np.concatenate(test)
            if test_idx.size == 0:
                raise ValueError(f"Protocol 'chronological' leaves no test trial in "
                                 f"{self.within} {label!r} ({idx.size} trials, "
                                 f"train_frac={self.train_frac}).")
            train_idx, valid_idx = _carve_last(order, strata, train_idx, self.valid_frac)
            out.append(Split(f"{_prefix(label)}chronological", train_idx, valid_idx, test_idx,
                             label))
        return out

    def describe(self) -> str:
        return (f"Chronological hold-out per {self.within}: per class, the first "
                f"{self.train_frac:g} of the trials in recording order train and the rest test; "
                f"{_validation_phrase(self.valid_frac)}.")


def _validation_phrase(valid_frac: float) -> str:
    if valid_frac <= 0:
        return "no validation split (the last epoch is scored)"
    return f"validation = the last {valid_frac:g} of each class's training trials"


class ChronologicalKFold(Protocol):
    """Per group, ``k`` contiguous folds in recording order.

    Parameters
    ----------
    k : int
        Number of folds (default 5).
    folds : {"class_balanced", "contiguous"}
        ``"class_balanced"``: each class's trials (in recording order) are cut into ``k``
        contiguous blocks and fold ``i`` tests block ``i`` of every class. ``"contiguous"``: plain
        ``sklearn.model_selection.KFold(k)`` without shuffling over the trials in recording order
        (the official MVCNet code).
    valid_frac : float
        The last ``valid_frac`` of each class's training trials (in recording order) validate.
    within : str
        Grouping metadata column, or ``"all"``.
    """

    name = "chronological_kfold"

    def __init__(self, *, k: int = 5, folds: str = "class_balanced", valid_frac: float = 0.2,
                 within: str = "subject"):
        self.k = k
        self.folds = folds
        self.valid_frac = valid_frac
        self.within = within
        owner = f"protocol {self.name!r}"
        validate_type(k, "int", "k", owner=owner)
        check_range(k, "k", low=2, owner=owner)
        check_option(folds, ("class_balanced", "contiguous"), "folds", owner=owner)
        _check_valid_frac(valid_frac, owner)
        _check_within(within, owner)

    def split(self, ts: TrialSet) -> list[Split]:
        from sklearn.model_selection import KFold as _SkKFold

        self._check_ts(ts)
        strata = _strata(ts)
        out = []
        for label, idx in _groups(ts, self.within):
            order = chronological_order(ts, idx)
            if self.folds == "contiguous":
                if order.size < self.k:
                    raise ValueError(f"Protocol 'chronological_kfold' needs at least k={self.k} "
                                     f"trials in {self.within} {label!r}; found {order.size}.")
                tests = [order[te] for _, te in _SkKFold(self.k).split(order)]
            else:
                blocks = []
                for c in np.unique(strata[idx]):
                    oc = order[strata[order] == c]
                    if oc.size < self.k:
                        raise ValueError(f"Protocol 'chronological_kfold' needs at least k={self.k}"
                                         f" trials of each class in {self.within} {label!r}; "
                                         f"class {c} has {oc.size}.")
                    blocks.append(np.array_split(oc, self.k))
                tests = [np.concatenate([b[f] for b in blocks]) for f in range(self.k)]
            for f, test_idx in enumerate(tests):
                train_idx = np.setdiff1d(idx, test_idx)
                train_idx, valid_idx = _carve_last(order, strata, train_idx, self.valid_frac)
                out.append(Split(f"{_prefix(label)}fold{f}", train_idx, valid_idx, test_idx, label))
        return out

    def describe(self) -> str:
        how = ("class-balanced contiguous blocks" if self.folds == "class_balanced"
               else "contiguous KFold without shuffling")
        return (f"{self.k}-fold chronological cross-validation per {self.within} ({how}); "
                f"{_validation_phrase(self.valid_frac)}.")


class KFold(Protocol):
    """Per group, stratified k-fold cross-validation with seeded shuffling.

    The folds are exactly ``StratifiedKFold(k, shuffle=True, random_state=seed)`` on the group's
    trials in TrialSet order (``KFold`` for continuous targets).

    Parameters
    ----------
    k : int
        Number of folds (default 5).
    seed : int or None
        Seed of the fold shuffling and of the validation draw.
    valid_frac : float
        Random class-stratified fraction of each fold's training trials used for validation.
    within : str
        Grouping metadata column, or ``"all"``.
    """

    name = "kfold"

    def __init__(self, *, k: int = 5, seed: int | None = 0, valid_frac: float = 0.2,
                 within: str = "subject"):
        self.k = k
        self.seed = seed
        self.valid_frac = valid_frac
        self.within = within
        owner = f"protocol {self.name!r}"
        validate_type(k, "int", "k", owner=owner)
        check_range(k, "k", low=2, owner=owner)
        _check_seed(seed, owner)
        _check_valid_frac(valid_frac, owner)
        _check_within(within, owner)

    def split(self, ts: TrialSet) -> list[Split]:
        from sklearn.model_selection import KFold as _SkKFold
        from sklearn.model_selection import StratifiedKFold

        self._check_ts(ts)
        strata = _strata(ts)
        stratify = ts.classes is not None or np.issubdtype(np.asarray(ts.y).dtype, np.integer)
        rng = np.random.default_rng(self.seed)
        out = []
        for label, idx in _groups(ts, self.within):
            if stratify:
                counts = np.bincount(strata[idx])
                counts = counts[counts > 0]
                if counts.min() < self.k:
                    raise ValueError(f"Protocol 'kfold' needs at least k={self.k} trials of each "
                                     f"class in {self.within} {label!r}; the smallest class has "
                                     f"{counts.min()}.")
                cv = StratifiedKFold(self.k, shuffle=True, random_state=self.seed)
                folds = cv.split(np.zeros(idx.size), strata[idx])
            else:
                if idx.size < self.k:
                    raise ValueError(f"Protocol 'kfold' needs at least k={self.k} trials in "
                                     f"{self.within} {label!r}; found {idx.size}.")
                folds = _SkKFold(self.k, shuffle=True, random_state=self.seed).split(idx)
            for f, (tr, te) in enumerate(folds):
                train_idx, valid_idx = _carve_random(rng, strata, idx[tr], self.valid_frac)
                out.append(Split(f"{_prefix(label)}fold{f}", train_idx, valid_idx, idx[te], label))
        return out

    def describe(self) -> str:
        return (f"Stratified {self.k}-fold cross-validation per {self.within}, shuffled with seed "
                f"{self.seed}; validation = a random stratified {self.valid_frac:g} of each "
                f"fold's training trials.")


class LeaveOneRunOut(Protocol):
    """Per group, each run (a session/run pair) is the test set once.

    Parameters
    ----------
    valid : float or "run"
        A fraction: random class-stratified share of the training trials. ``"run"``: the run
        after the test run in recording order (cyclically) validates.
    seed : int or None
        Seed of the random validation draw.
    within : str
        Grouping metadata column (default ``"subject"``), or ``"all"``.
    test_runs : list of str or None
        Only these runs (``meta["run"]`` values) are test runs (e.g. one per seed when a full
        rotation costs too much); validation is still the next run. None: every run.
    """

    name = "leave_one_run_out"

    def __init__(self, *, valid: float | str = 0.2, seed: int | None = 0,
                 within: str = "subject", test_runs: list[str] | None = None):
        self.valid = valid
        self.seed = seed
        self.within = within
        self.test_runs = test_runs
        owner = f"protocol {self.name!r}"
        if isinstance(valid, str):
            check_option(valid, ("run",), "valid", owner=owner)
        else:
            _check_valid_frac(valid, owner, "valid")
        _check_seed(seed, owner)
        _check_within(within, owner)
        validate_type(test_runs, (list, tuple, None), "test_runs", owner=owner)
        if test_runs is not None and (not test_runs or not all(
                isinstance(r, (str, int)) for r in test_runs)):
            raise ValueError(f"The 'test_runs' parameter of {owner} must be a non-empty list of "
                             f"run names. Got {test_runs!r} instead.")

    def split(self, ts: TrialSet) -> list[Split]:
        self._check_ts(ts)
        strata = _strata(ts)
        rng = np.random.default_rng(self.seed)
        session, run = _meta_str(ts, "session"), _meta_str(ts, "run")
        out = []
        for label, idx in _groups(ts, self.within):
            order = chronological_order(ts, idx)
            keys = list(dict.fromkeys(zip(session[order], run[order])))
            need = 3 if self.valid == "run" else 2
            if len(keys) < need:
                raise ValueError(f"Protocol 'leave_one_run_out' needs at least {need} runs in "
                                 f"{self.within} {label!r}"
                                 f"{' (valid=' + repr(self.valid) + ')' if need == 3 else ''}; "
                                 f"found {len(keys)}: {[r for _, r in keys]}.")
            multi_session = len({s for s, _ in keys}) > 1
            pair = np.array([f"{s}\x00{r}" for s, r in zip(session[idx], run[idx])])
            if self.test_runs is not None:
                wanted = {str(r) for r in self.test_runs}
                unknown = sorted(wanted - {r for _, r in keys})
                if unknown:
                    raise ValueError(f"Protocol 'leave_one_run_out': test_runs {unknown} are "
                                     f"not runs of {self.within} {label!r} (its runs: "
                                     f"{[r for _, r in keys]}).")
            for i, (s, r) in enumerate(keys):
                if self.test_runs is not None and r not in wanted:
                    continue
                test_idx = idx[pair == f"{s}\x00{r}"]
                rest = np.setdiff1d(idx, test_idx)
                if self.valid == "run":
                    vs, vr = keys[(i + 1) % len(keys)]
                    valid_idx = idx[pair == f"{vs}\x00{vr}"]
                    train_idx = np.setdiff1d(rest, valid_idx)
                else:
                    train_idx, valid_idx = _carve_random(rng, strata, rest, self.valid)
                where = f"session={s}/run={r}" if multi_session else f"run={r}"
                out.append(Split(f"{_prefix(label)}{where}", train_idx, valid_idx, test_idx, label))
        return out

    def describe(self) -> str:
        v = ("the next run" if self.valid == "run"
             else f"a random stratified {self.valid:g} of the training trials")
        only = "" if self.test_runs is None else f" (test runs {list(self.test_runs)} only)"
        return f"Leave-one-run-out per {self.within}{only}; validation = {v}."


class CrossSession(Protocol):
    """Per group, train on earlier sessions and test on a later one.

    Parameters
    ----------
    test_session : str or None
        The session to test on (default: each group's last session in recording order).
    train_sessions : str, list of str or None
        Sessions to train on (default: every session before the test session).
    valid : float or "session"
        A fraction: the last ``valid`` of each class's training trials in recording order (the
        ones closest to the test session). ``"session"``: the last training session validates
        (needs two training sessions).
    within : str
        Grouping metadata column (default ``"subject"``).

    Raises
    ------
    ValueError
        In :meth:`split`, when a group has a single session (saying how many sessions were found
        in which group) or lacks a named session.
    """

    name = "cross_session"

    def __init__(self, *, test_session: str | None = None,
                 train_sessions: str | list[str] | None = None, valid: float | str = 0.2,
                 within: str = "subject"):
        self.test_session = test_session
        self.train_sessions = train_sessions
        self.valid = valid
        self.within = within
        owner = f"protocol {self.name!r}"
        validate_type(test_session, (str, int, None), "test_session", owner=owner)
        validate_type(train_sessions, (str, int, list, tuple, None), "train_sessions", owner=owner)
        if isinstance(valid, str):
            check_option(valid, ("session",), "valid", owner=owner)
        else:
            _check_valid_frac(valid, owner, "valid")
        _check_within(within, owner)

    def _train_list(self) -> list[str] | None:
        if self.train_sessions is None:
            return None
        if isinstance(self.train_sessions, (list, tuple)):
            return [str(s) for s in self.train_sessions]
        return [str(self.train_sessions)]

    def split(self, ts: TrialSet) -> list[Split]:
        self._check_ts(ts)
        strata = _strata(ts)
        session = _meta_str(ts, "session")
        out = []
        for label, idx in _groups(ts, self.within):
            order = chronological_order(ts, idx)
            sessions = list(pd.unique(session[order]))
            where = f"{self.within} {label!r}" if label is not None else "the TrialSet"
            if len(sessions) < 2:
                raise ValueError(f"Protocol 'cross_session' needs at least 2 sessions per "
                                 f"{self.within}; found {len(sessions)} session "
                                 f"({sessions}) in {where}.")
            test_s = sessions[-1] if self.test_session is None else str(self.test_session)
            if test_s not in sessions:
                raise ValueError(f"Protocol 'cross_session': test_session {test_s!r} is not among "
                                 f"the sessions {sessions} of {where}.")
            train_s = self._train_list()
            if train_s is None:
                train_s = sessions[:sessions.index(test_s)]
                if not train_s:
                    raise ValueError(f"Protocol 'cross_session': test_session {test_s!r} is the "
                                     f"first session of {where} ({sessions}); there is no earlier "
                                     f"session to train on (pass train_sessions).")
            missing = [s for s in train_s if s not in sessions]
            if missing:
                raise ValueError(f"Protocol 'cross_session': train_sessions {missing} are not "
                                 f"among the sessions {sessions} of {where}.")
            if test_s in train_s:
                raise ValueError(f"Protocol 'cross_session': session {test_s!r} is both the test "
                                 f"session and a training session.")
            test_idx = idx[session[idx] == test_s]
            train_idx = idx[np.isin(session[idx], train_s)]
            if self.valid == "session":
                if len(train_s) < 2:
                    raise ValueError(f"Protocol 'cross_session' with valid='session' needs at "
                                     f"least 2 training sessions; {where} has {train_s}.")
                last = [s for s in sessions if s in train_s][-1]
                valid_idx = train_idx[session[train_idx] == last]
                train_idx = np.setdiff1d(train_idx, valid_idx)
            else:
                train_idx, valid_idx = _carve_last(order, strata, train_idx, self.valid)
            out.append(Split(f"{_prefix(label)}session={test_s}", train_idx, valid_idx, test_idx,
                             label))
        return out

    def describe(self) -> str:
        test = "the last session" if self.test_session is None else f"session {self.test_session!r}"
        train = ("the sessions before it" if self.train_sessions is None
                 else f"sessions {self._train_list()}")
        v = ("the last training session" if self.valid == "session"
             else f"the last {self.valid:g} of each class's training trials")
        return f"Cross-session per {self.within}: test on {test}, train on {train}; validation = {v}."


class LeaveOneSubjectOut(Protocol):
    """Each subject (or other group) is the test set once; the others train.

    Parameters
    ----------
    by : str
        Metadata column of the held-out groups (default ``"subject"``; ``"site"`` gives
        leave-one-site-out).
    test_subjects : list of str or None
        Only these groups are held out (default: every group).
    valid : float or "subject"
        A fraction: a random class-stratified share of every training group's trials.
        ``"subject"``: the ``n_valid_subjects`` groups after the test group (cyclically, in order
        of appearance) validate and do not train.
    n_valid_subjects : int
        How many groups validate when ``valid="subject"``.
    seed : int or None
        Seed of the random validation draw.
    """

    name = "leave_one_subject_out"

    def __init__(self, *, by: str = "subject", test_subjects: list[str] | None = None,
                 valid: float | str = 0.2, n_valid_subjects: int = 1, seed: int | None = 0):
        self.by = by
        self.test_subjects = test_subjects
        self.valid = valid
        self.n_valid_subjects = n_valid_subjects
        self.seed = seed
        owner = f"protocol {self.name!r}"
        validate_type(by, str, "by", owner=owner)
        validate_type(test_subjects, (list, tuple, None), "test_subjects", owner=owner)
        if isinstance(valid, str):
            check_option(valid, ("subject",), "valid", owner=owner)
        else:
            _check_valid_frac(valid, owner, "valid")
        validate_type(n_valid_subjects, "int", "n_valid_subjects", owner=owner)
        check_range(n_valid_subjects, "n_valid_subjects", low=1, owner=owner)
        _check_seed(seed, owner)

    def split(self, ts: TrialSet) -> list[Split]:
        self._check_ts(ts)
        if self.by not in ts.meta:
            raise ValueError(f"by={self.by!r} names no metadata column; the TrialSet has columns "
                             f"{list(ts.meta.columns)}.")
        strata = _strata(ts)
        rng = np.random.default_rng(self.seed)
        values = _meta_str(ts, self.by)
        groups = list(pd.unique(values))
        need = 2 + (self.n_valid_subjects if self.valid == "subject" else 0)
        if len(groups) < need:
            raise ValueError(f"Protocol 'leave_one_subject_out' needs at least {need} values of "
                             f"{self.by!r}; found {len(groups)}: {groups}.")
        held_out = groups
        if self.test_subjects is not None:
            held_out = [str(s) for s in self.test_subjects]
            missing = [s for s in held_out if s not in groups]
            if missing:
                raise ValueError(f"Protocol 'leave_one_subject_out': test_subjects {missing} are not "
                                 f"among the {self.by} values {groups}.")
        out = []
        for g in held_out:
            test_idx = np.flatnonzero(values == g)
            rest = np.flatnonzero(values != g)
            if self.valid == "subject":
                i = groups.index(g)
                vgroups = [groups[(i + j) % len(groups)] for j in range(1, self.n_valid_subjects + 1)]
                valid_idx = np.flatnonzero(np.isin(values, vgroups))
                train_idx = np.setdiff1d(rest, valid_idx)
            else:
                keep, valid_parts = [], []
                for other in groups:
                    if other == g:
                        continue
                    members = np.flatnonzero(values == other)
                    k, v = _carve_random(rng, strata, members, self.valid)
                    keep.append(k)
                    valid_parts.append(v)
                train_idx, valid_idx = np.concatenate(keep), np.concatenate(valid_parts)
            out.append(Split(f"test-{self.by}={g}", train_idx, valid_idx, test_idx, g))
        return out

    def describe(self) -> str:
        v = (f"{self.n_valid_subjects} other {self.by}(s)" if self.valid == "subject"
             else f"a random stratified {self.valid:g} of each training {self.by}'s trials")
        return f"Leave-one-{self.by}-out; validation = {v}."


# ---------------------------------------------------------------------------------------- registry
class OfficialTrials(Protocol):
    """The official Du-IN split, for replication only: per group and class, a seeded random
    ``1 - valid_frac - test_frac`` of the trials train, ``valid_frac`` validate, ``test_frac``
    test, whatever run they come from.

    Trials of one run land in training and test alike, so run-level drifts make its scores
    optimistic; :class:`LeaveOneRunOut` with ``valid="run"`` is the honest protocol (Du-IN spec
    §3). Reports label it by :meth:`describe`.

    Parameters
    ----------
    valid_frac, test_frac : float
        Shares of each class's trials (at least one trial each when the class has three or
        more; 0.1 and 0.1 as in the official code).
    seed : int or None
        Seed of the draw.
    within : str
        Grouping metadata column (default ``"subject"``).
    """

    name = "official_trials"

    def __init__(self, *, valid_frac: float = 0.1, test_frac: float = 0.1, seed: int | None = 0,
                 within: str = "subject"):
        self.valid_frac = valid_frac
        self.test_frac = test_frac
        self.seed = seed
        self.within = within
        owner = f"protocol {self.name!r}"
        _check_valid_frac(valid_frac, owner, "valid_frac")
        validate_type(test_frac, "numeric", "test_frac", owner=owner)
        check_range(test_frac, "test_frac", low=0.0, high=1.0, low_inclusive=False,
                    high_inclusive=False, owner=owner)
        if valid_frac + test_frac >= 1:
            raise ValueError(f"The 'valid_frac' and 'test_frac' parameters of {owner} must sum "
                             f"to less than 1. Got {valid_frac} + {test_frac}.")
        _check_seed(seed, owner)
        _check_within(within, owner)

    def split(self, ts: TrialSet) -> list[Split]:
        self._check_ts(ts)
        strata = _strata(ts)
        rng = np.random.default_rng(self.seed)
        out = []
        for label, idx in _groups(ts, self.within):
            train, valid, test = [], [], []
            for c in np.unique(strata[idx]):
                members = idx[strata[idx] == c]
                members = members[rng.permutation(members.size)]
                n = members.size
                n_test = max(1, int(round(self.test_frac * n))) if n >= 3 else min(n - 1, 1)
                n_valid = (max(1, int(round(self.valid_frac * n))) if n >= 3 and self.valid_frac
                           else 0)
                test.append(members[:n_test])
                valid.append(members[n_test:n_test + n_valid])
                train.append(members[n_test + n_valid:])
            out.append(Split(f"{_prefix(label)}official_trials", np.concatenate(train),
                             np.concatenate(valid), np.concatenate(test), label))
        return out

    def describe(self) -> str:
        return (f"Official Du-IN per-class split per {self.within} (replication only, optimistic: "
                f"train and test share runs): random {1 - self.valid_frac - self.test_frac:g} / "
                f"{self.valid_frac:g} / {self.test_frac:g} train / validation / test.")


PROTOCOLS: dict[str, type[Protocol]] = {
    cls.name: cls for cls in (Chronological, ChronologicalKFold, KFold, LeaveOneRunOut,
                              CrossSession, LeaveOneSubjectOut, OfficialTrials)
}
"""Protocol name -> class."""

PROTOCOL_ALIASES: dict[str, str] = {"co": "chronological", "cv": "chronological_kfold",
                                    "loso": "leave_one_subject_out", "loro": "leave_one_run_out"}
"""Short names (the MVCNet spec's CO / CV / LOSO) -> protocol names."""


def get_protocol(name: str, **params: Any) -> Protocol:
    """Build the protocol called ``name`` with ``params``.

    Parameters
    ----------
    name : str
        A key of :data:`PROTOCOLS` or :data:`PROTOCOL_ALIASES`.
    **params
        The protocol's keyword parameters.

    Returns
    -------
    Protocol

    Raises
    ------
    ValueError
        For an unknown name or parameter (naming it and listing what is allowed) or a bad value.

    Examples
    --------
    >>> get_protocol("kfold", k=5, seed=0).describe()  # doctest: +ELLIPSIS
    'Stratified 5-fold cross-validation per subject...'
    """
    validate_type(name, str, "name", owner="get_protocol")
    key = PROTOCOL_ALIASES.get(name, name)
    if key not in PROTOCOLS:
        allowed = sorted(PROTOCOLS) + sorted(PROTOCOL_ALIASES)
        raise ValueError(f"Unknown protocol {name!r}; allowed: {allowed}.")
    cls = PROTOCOLS[key]
    allowed_params = cls.param_names()
    for p in params:
        if p not in allowed_params:
            raise ValueError(f"Unknown parameter {p!r} for protocol {key!r}; allowed: "
                             f"{allowed_params}.")
    return cls(**params)
