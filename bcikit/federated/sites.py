"""One federation site: its data splits, its model and everything that persists across rounds.

A :class:`Site` is what a Flower ClientApp rebuilds for every message and what the in-process
loop (:mod:`bcikit.federated.loop`) keeps in memory: the site's train / validation / test
TrialSets, its model (by default a :class:`~bcikit.models.FLEEGNet` sized for the site), AdamW
with a per-batch cosine schedule whose state survives rounds, the site's own random-number
streams (shuffling and dropout) and the lowest-validation-loss snapshot. Its whole state goes
through :meth:`Site.state_dict` / :meth:`Site.save` (atomic), so a run stopped after round ``k``
and resumed matches the uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.trialset import TrialSet
from ..utils import check_option, check_range, validate_type
from .state import merge_state, shared_keys, shared_signature, split_state

__all__ = ["split_site", "split_site_chronological", "SiteData", "Site", "natural_key",
           "UNITS_TO_UV"]

STATE_FORMAT = 1


def natural_key(label: Any) -> list:
    """Sort key that puts ``S2`` before ``S10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(label))]


# ---------------------------------------------------------------------------------- splits
def split_site(ts: TrialSet, *, fold: int = 0, n_folds: int | None = None,
               n_test: int | float = 1,
               validation: str = "subject", valid_frac: float = 0.1, seed: int = 123,
               valid_seed: int = 42, site: str | None = None, split: str = "subject"
               ) -> tuple[TrialSet, TrialSet, TrialSet]:
    """Split one site's trials into train, validation and test (spec §4).

    ``split="subject"`` (default) is the spec's leave-subject-out split described here;
    ``split="chronological"`` is a within-subject split by run for sites whose subjects cannot
    be held out (a single-subject site such as PhysioNet S001): see
    :func:`split_site_chronological`.

    Subjects (natural order of ``meta['subject']``) are shuffled with ``seed``; fresh shuffles
    are appended until the order covers every fold, so in a federation whose largest site has
    ``K`` subjects the smaller sites' subjects recur. Fold ``k`` tests the ``n_test`` subjects
    ``order[k * n_test:(k + 1) * n_test]`` (``n_test=1``: leave-one-subject-out).

    Parameters
    ----------
    ts : TrialSet
    fold : int
        Fold index (``0 <= fold < n_folds``).
    n_folds : int or None
        Folds of the federation (the largest site's count); default: this site's
        ``ceil(n_subjects / n_test)``.
    n_test : int or float
        Test subjects per fold (the spec's LOSO is 1). A float in (0, 1) is a fraction of the
        site's subjects, ``max(1, round(n_test * n_subjects))`` (bcikit extension: one
        federation then scores several subjects per site, for paired tests over subjects).
    validation : {"subject", "trial"}
        ``"subject"`` (bcikit default): ``valid_frac`` of the training subjects (at least one)
        are validation subjects. ``"trial"`` (official): ``valid_frac`` of the pooled training
        trials (at least one).
    valid_frac : float
        Fraction for validation (0.1).
    seed, valid_seed : int
        Subject shuffle (123) and validation draw (42).
    site : str or None
        Name for error messages.
    split : {"subject", "chronological"}
        Leave-subject-out (the spec), or chronological by run within each subject.

    Returns
    -------
    train, valid, test : TrialSet

    Raises
    ------
    ValueError
        For a fold out of range, or too few subjects to hold out test and validation subjects.
    """
    owner = "split_site"
    name = f"site {site!r}" if site else "the site"
    check_option(split, ("subject", "chronological"), "split", owner=owner)
    if split == "chronological":
        validate_type(fold, "int", "fold", owner=owner)
        check_range(fold, "fold", low=0, owner=owner)
        return split_site_chronological(ts, n_test=n_test, validation=validation,
                                        valid_frac=valid_frac, site=site)
    check_option(validation, ("subject", "trial"), "validation", owner=owner)
    validate_type(fold, "int", "fold", owner=owner)
    validate_type(n_test, ("int", float), "n_test", owner=owner)
    check_range(valid_frac, "valid_frac", low=0.0, high=1.0, low_inclusive=False,
                high_inclusive=False, owner=owner)
    subjects = sorted(ts.meta["subject"].astype(str).unique(), key=natural_key)
    n_sub = len(subjects)
    if isinstance(n_test, float):
        check_range(n_test, "n_test", low=0.0, high=1.0, low_inclusive=False,
                    high_inclusive=False, owner=owner)
        n_test = max(1, int(round(n_test * n_sub)))
    check_range(n_test, "n_test", low=1, owner=owner)
    need_train = 2 if validation == "subject" else 1
    if n_sub < n_test + need_train:
        raise ValueError(f"{name} has {n_sub} subject(s); {n_test} test subject(s) and "
                         f"validation={validation!r} need at least {n_test + need_train}.")
    if n_folds is None:
        n_folds = math.ceil(n_sub / n_test)
    validate_type(n_folds, "int", "n_folds", owner=owner)
    check_range(fold, "fold", low=0, high=n_folds - 1, owner=owner)
    rng = np.random.default_rng(seed)
    order: list[str] = []
    while len(order) < n_folds * n_test:
        order.extend(str(s) for s in rng.permutation(np.asarray(subjects, dtype=object)))
    test_subjects = order[fold * n_test:(fold + 1) * n_test]
    if len(set(test_subjects)) < n_test:  # a block straddles two shuffles: take the next fresh
        seen = []
        for s in order[fold * n_test:]:
            if s not in seen:
                seen.append(s)
            if len(seen) == n_test:
                break
        test_subjects = seen
    subj = ts.meta["subject"].astype(str).to_numpy()
    is_test = np.isin(subj, test_subjects)
    train_idx = np.flatnonzero(~is_test)
    vrng = np.random.default_rng(valid_seed)
    if validation == "subject":
        train_subjects = [s for s in subjects if s not in test_subjects]
        n_val = max(1, int(round(valid_frac * len(train_subjects))))
        val_subjects = set(vrng.choice(np.asarray(train_subjects, dtype=object), n_val,
                                       replace=False).tolist())
        is_val = np.isin(subj, list(val_subjects))
        valid_idx = np.flatnonzero(is_val & ~is_test)
        train_idx = np.flatnonzero(~is_val & ~is_test)
    else:
        n_val = max(1, int(round(valid_frac * train_idx.size)))
        if n_val >= train_idx.size:
            raise ValueError(f"{name} has {train_idx.size} training trial(s): too few to hold "
                             f"out validation trials.")
        pick = np.sort(vrng.permutation(train_idx.size)[:n_val])
        valid_idx = train_idx[pick]
        train_idx = np.delete(train_idx, pick)
    return ts.subset(train_idx), ts.subset(valid_idx), ts.subset(np.flatnonzero(is_test))


def split_site_chronological(ts: TrialSet, *, n_test: int | float = 1,
                             validation: str = "subject", valid_frac: float = 0.1,
                             site: str | None = None) -> tuple[TrialSet, TrialSet, TrialSet]:
    """Within-subject split by run, in recording order: the last run(s) of every subject test.

    For sites whose subjects cannot be held out (one subject, as PhysioNet S001): each
    subject's runs are put in recording order (:func:`bcikit.data.chronological_order`); the
    last ``n_test`` runs test; with ``validation="subject"`` the run just before them
    validates (a whole unseen run, the within-subject analogue of an unseen subject); with
    ``validation="trial"`` the last ``valid_frac`` of each class's remaining trials in recording
    order do (at least one per class). Earlier runs train. Nothing recorded after a test trial
    is trained on, and there is one split only: every federation fold gets the same one.

    Raises
    ------
    ValueError
        When a subject has too few runs (``n_test + 1``, or ``n_test + 2`` for run-wise
        validation), naming the site, the subject and its runs.
    """
    from ..data.protocols import _carve_last, _strata, chronological_order

    owner = "split_site"
    name = f"site {site!r}" if site else "the site"
    check_option(validation, ("subject", "trial"), "validation", owner=owner)
    validate_type(n_test, "int", "n_test", owner=owner)
    check_range(n_test, "n_test", low=1, owner=owner)
    check_range(valid_frac, "valid_frac", low=0.0, high=1.0, low_inclusive=False,
                high_inclusive=False, owner=owner)
    meta = ts.meta
    for col in ("subject", "run"):
        if col not in meta:
            raise ValueError(f"{name}: a chronological split needs meta[{col!r}].")
    session = (meta["session"].astype(str).tolist() if "session" in meta
               else [""] * len(ts))
    pairs = list(zip(session, meta["run"].astype(str)))
    codes = {pair: i for i, pair in enumerate(dict.fromkeys(pairs))}
    run_key = np.array([codes[pair] for pair in pairs], dtype=np.int64)  # (session, run) codes
    run_name = {i: pair[1] for pair, i in codes.items()}
    strata = _strata(ts)
    subj = meta["subject"].astype(str).to_numpy()
    train, valid, test = [], [], []
    for s in sorted(set(subj), key=natural_key):
        order = chronological_order(ts, np.flatnonzero(subj == s))
        runs = list(dict.fromkeys(run_key[order]))
        need = n_test + (2 if validation == "subject" else 1)
        if len(runs) < need:
            shown = [run_name[r] for r in runs]
            raise ValueError(f"{name}: subject {s!r} has {len(runs)} run(s) {shown}; a "
                             f"chronological split with {n_test} test run(s) and "
                             f"validation={validation!r} needs at least {need}.")
        test_runs = runs[-n_test:]
        te = order[np.isin(run_key[order], test_runs)]
        rest = order[~np.isin(run_key[order], test_runs)]
        if validation == "subject":
            va = rest[run_key[rest] == runs[-n_test - 1]]
            tr = rest[run_key[rest] != runs[-n_test - 1]]
        else:
            tr, va = _carve_last(order, strata, rest, valid_frac)
        train.append(tr)
        valid.append(va)
        test.append(te)
    return tuple(ts.subset(np.sort(np.concatenate(part))) for part in (train, valid, test))


# ---------------------------------------------------------------------------------- data
@dataclass
class SiteData:
    """A site's three splits and its per-site recipe.

    Attributes
    ----------
    name : str
        Site name (unique in a federation; used for checkpoints and results).
    train, valid, test : TrialSet
        Preprocessed trials (FLEEG: :func:`bcikit.models.fleeg.preprocess`).
    batch_size : int
        Training batch size.
    lr : float
        AdamW learning rate.
    dataset : str or None
        Dataset name (for ``stem_geometry="reference"``).
    """

    name: str
    train: TrialSet
    valid: TrialSet
    test: TrialSet
    batch_size: int = 64
    lr: float = 0.01
    dataset: str | None = None

    def __post_init__(self) -> None:
        owner = f"SiteData {self.name!r}"
        validate_type(self.name, str, "name", owner="SiteData")
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"SiteData needs a non-empty name usable as a file name; got "
                             f"{self.name!r}.")
        for split in ("train", "valid", "test"):
            ts = getattr(self, split)
            validate_type(ts, TrialSet, split, owner=owner)
            if ts.is_voxel:
                raise ValueError(f"The {split!r} split of {owner} holds voxels; sites need "
                                 f"(trials, channels, times) signals.")
        if len(self.train) == 0 or len(self.valid) == 0:
            raise ValueError(f"{owner} has an empty train or validation split "
                             f"({len(self.train)}, {len(self.valid)} trials).")
        shape = self.train.X.shape[1:]
        for split in ("valid", "test"):
            ts = getattr(self, split)
            if len(ts) and ts.X.shape[1:] != shape:
                raise ValueError(f"The {split!r} split of {owner} has trials of shape "
                                 f"{ts.X.shape[1:]}; the train split has {shape}.")
            if ts.classes != self.train.classes:
                raise ValueError(f"The {split!r} split of {owner} has classes {ts.classes}; "
                                 f"the train split has {self.train.classes}.")
        validate_type(self.batch_size, "int", "batch_size", owner=owner)
        check_range(self.batch_size, "batch_size", low=1, owner=owner)
        validate_type(self.lr, "numeric", "lr", owner=owner)
        check_range(self.lr, "lr", low=0.0, low_inclusive=False, owner=owner)

    @property
    def n_chans(self) -> int:
        return int(self.train.X.shape[1])

    @property
    def n_times(self) -> int:
        return int(self.train.X.shape[2])

    @property
    def sfreq(self) -> float | None:
        info = self.train.info
        return float(info["sfreq"]) if info is not None else None

    @property
    def classes(self) -> list[str] | None:
        return self.train.classes

    @property
    def n_trials(self) -> int:
        """All the site's trials (train + validation + test): the official FLEEG weight."""
        return len(self.train) + len(self.valid) + len(self.test)

    @property
    def n_outputs(self) -> int:
        if self.classes is not None:
            return len(self.classes)
        return int(max(np.max(s.y) for s in (self.train, self.valid, self.test) if len(s))) + 1

    @classmethod
    def from_trialset(cls, ts: TrialSet, name: str, *, fold: int = 0, n_folds: int | None = None,
                      n_test: int | float = 1, validation: str = "subject", valid_frac: float = 0.1,
                      seed: int = 123, valid_seed: int = 42, filter: bool = True,
                      unit: str = "V", scale: str | float = "uV", batch_size: int = 64,
                      lr: float = 0.01, dataset: str | None = None,
                      split: str = "subject") -> "SiteData":
        """Preprocess one site's TrialSet and split it (:func:`split_site`).

        Parameters
        ----------
        ts : TrialSet
            The site's trials.
        name : str
            Site name.
        fold, n_folds, n_test, validation, valid_frac, seed, valid_seed, split
            The split (:func:`split_site`).
        filter : bool
            Apply the FLEEG band-pass first (:func:`bcikit.models.fleeg.preprocess`: zero-phase
            Chebyshev-II 0.3-40 Hz).
        unit : {"V", "mV", "uV"}
            The unit of ``ts.X``. bcikit's readers and simulators give volts, as MNE does;
            say ``"uV"`` for a TrialSet built from microvolt arrays.
        scale : {"uV", "none"} or float
            The numbers the site trains on. ``"uV"`` (default): the trials in microvolts
            (volts times 1e6, millivolts times 1e3, microvolts as they are), applied after the
            filter. Why: every batch norm of FLEEGNet divides by ``sqrt(var + eps)`` with
            ``eps = 1e-5``; EEG in volts has variances near 1e-10 and so do the first
            blocks' activations, so ``eps`` would dominate the denominator and the batch norms
            would shrink the signal instead of standardising it; in microvolts (variances of
            1 to 100) ``eps`` is negligible. It is a change of unit, not a normalisation (the
            spec's "no scaling" holds: no statistic of the data is used). ``"none"``: the
            numbers as given. A positive number: multiply by it.
        batch_size, lr : int, float
            The site's recipe.
        dataset : str or None
            Dataset name (for ``stem_geometry="reference"``).

        Returns
        -------
        SiteData
        """
        owner = "SiteData.from_trialset"
        validate_type(ts, TrialSet, "ts", owner=owner)
        factor = _unit_factor(unit, scale, owner)
        if filter:
            from ..models.fleeg import preprocess

            ts = preprocess(ts)
        if factor != 1:
            ts = ts.with_data(np.asarray(ts.X, dtype=np.float32) * np.float32(factor))
        train, valid, test = split_site(ts, fold=fold, n_folds=n_folds, n_test=n_test,
                                        validation=validation, valid_frac=valid_frac, seed=seed,
                                        valid_seed=valid_seed, site=name, split=split)
        return cls(name, train, valid, test, batch_size=batch_size, lr=lr, dataset=dataset)

    def save(self, folder: str | Path, *, overwrite: bool = False) -> Path:
        """Write ``folder/{train,valid,test}`` (memory-mappable TrialSets) and ``site.json``."""
        folder = Path(folder)
        if (folder / "site.json").exists() and not overwrite:
            raise FileExistsError(f"{str(folder)!r} already holds a site; pass overwrite=True.")
        folder.mkdir(parents=True, exist_ok=True)
        for split in ("train", "valid", "test"):
            getattr(self, split).save(folder / split, overwrite=overwrite)
        meta = {"format": "bcikit.SiteData", "version": 1, "name": self.name,
                "batch_size": self.batch_size, "lr": self.lr, "dataset": self.dataset}
        (folder / "site.json").write_text(json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, mmap: bool = True) -> "SiteData":
        """Read a folder written by :meth:`save` (``X`` memory-mapped by default)."""
        folder = Path(folder)
        header = folder / "site.json"
        if not header.exists():
            raise FileNotFoundError(f"{str(folder)!r} is not a saved site (no site.json).")
        meta = json.loads(header.read_text())
        splits = {s: TrialSet.load(folder / s, mmap=mmap) for s in ("train", "valid", "test")}
        return cls(meta["name"], **splits, batch_size=int(meta["batch_size"]),
                   lr=float(meta["lr"]), dataset=meta.get("dataset"))


#: Factor from each input unit to microvolts.
UNITS_TO_UV = {"V": 1e6, "mV": 1e3, "uV": 1.0, "µV": 1.0}


def _unit_factor(unit: Any, scale: Any, owner: str) -> float:
    """The factor :meth:`SiteData.from_trialset` multiplies the trials by."""
    check_option(unit, tuple(UNITS_TO_UV), "unit", owner=owner)
    if isinstance(scale, str):
        check_option(scale, ("uV", "µV", "none"), "scale", owner=owner)
        return 1.0 if scale == "none" else UNITS_TO_UV[unit]
    validate_type(scale, ("numeric", str), "scale", owner=owner)
    if not (math.isfinite(float(scale)) and float(scale) > 0):
        raise ValueError(f"The 'scale' parameter of {owner} must be 'uV', 'none' or a positive "
                         f"number. Got {scale!r} instead.")
    return float(scale)


# ---------------------------------------------------------------------------------- site
def _as_tensors(ts: TrialSet, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    X = torch.from_numpy(np.array(ts.X, dtype=np.float32, copy=True)).to(device)
    y = torch.from_numpy(np.asarray(ts.y, dtype=np.int64).copy()).to(device)
    return X, y


def _clone_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


class Site:
    """One site of a federation (or of a local-only / pooled baseline).

    Parameters
    ----------
    data : SiteData
    rounds : int
        Rounds (= local epochs) of the whole run: the cosine schedule anneals the learning rate
        to 0 over ``batches_per_epoch * rounds`` optimiser steps (spec §3: 250).
    model : torch.nn.Module or None
        The site's network. None: a :class:`~bcikit.models.FLEEGNet` sized for the data
        (``stem_geometry``, ``dataset=data.dataset``), built under torch seed ``seed``. A given
        model must declare its shared part (``shared_modules`` or
        ``shared_parameter_names()``) unless ``keys`` is given.
    stem_geometry : {"solve", "reference"}
        FLEEGNet geometry when ``model`` is None.
    weight_decay : float
        AdamW weight decay (5e-4).
    seed : int
        Seed of the model initialisation (when built here), of the site's shuffling stream and
        of its dropout stream (123).
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
    keys : list of str or None
        Shared state keys (default :func:`~bcikit.federated.shared_keys` of the model).
    scope : {"declared", "all"}
        Passed to :func:`~bcikit.federated.shared_keys` when ``keys`` is None.
    prox_mu : float
        FedProx (Li et al. 2020): each round's loss adds ``prox_mu / 2 * sum_k ||w_k - w_k^t||^2``
        over the shared parameters, ``w^t`` being the shared parameters right after the
        round's merge (and max-norm), which pulls the site's update towards the global model.
        0 (default): plain FedAvg training, bit for bit. :meth:`train_round` can override it
        per round (Flower sends it as ``proximal-mu``).

    Attributes
    ----------
    name : str
    model : torch.nn.Module
    keys : list of str
        The shared state keys.
    signature : str
        :func:`~bcikit.federated.shared_signature` of the shared tensors.
    round : int
        Rounds trained so far.
    history : list of dict
        Per round: ``round``, ``train-loss``, ``val-loss``, ``val-acc``, ``lr``.
    best_round : int or None
        Round of the lowest validation loss (the snapshot :meth:`test` uses).

    Notes
    -----
    The training loss is the NLL of the log-softmax of the model output (FLEEGNet already
    returns log-probabilities, for which log-softmax is the identity); a model with a
    ``training_loss(X, y)`` method (MVCNet) trains on that instead; with ``prox_mu > 0`` the
    proximal term is added to it (and to the reported ``train-loss``). Max-norm
    (``model.apply_max_norm()``, when the model has it) runs after every optimiser step and every
    merge. Batches: a fresh permutation each round from the site's own generator, the last
    batch possibly smaller.
    """

    def __init__(self, data: SiteData, *, rounds: int = 250, model: nn.Module | None = None,
                 stem_geometry: str = "solve", weight_decay: float = 5e-4, seed: int = 123,
                 device: str = "cpu", keys: Iterable[str] | None = None,
                 scope: str = "declared", prox_mu: float = 0.0):
        owner = "Site"
        validate_type(data, SiteData, "data", owner=owner)
        validate_type(rounds, "int", "rounds", owner=owner)
        check_range(rounds, "rounds", low=1, owner=owner)
        validate_type(weight_decay, "numeric", "weight_decay", owner=owner)
        validate_type(seed, "int", "seed", owner=owner)
        self.prox_mu = _check_prox_mu(prox_mu, owner)
        self.data = data
        self.name = data.name
        self.rounds = int(rounds)
        self.seed = int(seed)
        self.weight_decay = float(weight_decay)
        self.device = _resolve_device(device)
        with self._fresh_rng(self.seed):
            if model is None:
                from ..models.fleeg import FLEEGNet

                model = FLEEGNet(data.n_chans, data.n_outputs, data.n_times, data.sfreq,
                                 stem_geometry=stem_geometry, dataset=data.dataset,
                                 site=data.name)
            elif not isinstance(model, nn.Module):
                raise TypeError(f"The 'model' parameter of Site {self.name!r} must be a torch "
                                f"module. Got {type(model).__name__}.")
            self.model = model.to(self.device)
            self._torch_rng = torch.get_rng_state()
            self._cuda_rng = (torch.cuda.get_rng_state(self.device)
                              if self.device.type == "cuda" else None)
        self._max_norm()
        self.keys = sorted(keys) if keys is not None else shared_keys(self.model, scope=scope)
        shared, _ = split_state(self.model, self.keys)
        self.signature = shared_signature(shared)
        self.initial_state = shared
        self._gen = torch.Generator().manual_seed(self.seed)
        self.X_train, self.y_train = _as_tensors(data.train, self.device)
        self.X_valid, self.y_valid = _as_tensors(data.valid, self.device)
        self.n_train = len(data.train)
        self.batch_size = data.batch_size
        self.batches_per_epoch = math.ceil(self.n_train / self.batch_size)
        # AdamW and its schedule are built on first use (:attr:`optimizer`): a Flower message
        # that only validates or tests (a fresh process per message in a deployment) then never
        # pays for torch's optimizer machinery; a restored state waits in _pending_optim.
        self._optim: tuple[torch.optim.Optimizer, Any] | None = None
        self._pending_optim: tuple[dict, dict] | None = None
        self.round = 0
        self.history: list[dict[str, float]] = []
        self.best_round: int | None = None
        self.best_loss = math.inf
        self.best_acc = -math.inf
        self.best_acc_round: int | None = None
        self._best_state: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ optimiser
    def _build_optim(self) -> tuple[torch.optim.Optimizer, Any]:
        if self._optim is None:
            optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.data.lr,
                                          weight_decay=self.weight_decay)
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=self.batches_per_epoch * self.rounds, eta_min=0.0)
            if self._pending_optim is not None:
                optimizer.load_state_dict(self._pending_optim[0])
                scheduler.load_state_dict(self._pending_optim[1])
                self._pending_optim = None
            self._optim = (optimizer, scheduler)
        return self._optim

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """AdamW over the model's parameters (``lr = data.lr``, ``weight_decay``)."""
        return self._build_optim()[0]

    @property
    def scheduler(self):
        """Cosine annealing to 0 over ``batches_per_epoch * rounds`` steps, per batch."""
        return self._build_optim()[1]

    # ------------------------------------------------------------------ random streams
    @staticmethod
    @contextlib.contextmanager
    def _fresh_rng(seed: int):
        """Run seeded from ``seed`` without touching the caller's global torch stream."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield

    @contextlib.contextmanager
    def _site_rng(self):
        """Run with the site's own dropout stream (the global streams are left untouched)."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self._torch_rng)
            if self._cuda_rng is not None:
                torch.cuda.set_rng_state(self._cuda_rng, self.device)
            try:
                yield
            finally:
                self._torch_rng = torch.get_rng_state()
                if self._cuda_rng is not None:
                    self._cuda_rng = torch.cuda.get_rng_state(self.device)

    # ------------------------------------------------------------------ helpers
    def _max_norm(self) -> None:
        fn = getattr(self.model, "apply_max_norm", None)
        if callable(fn):
            fn()

    def _merge(self, shared: Mapping[str, Any] | None) -> None:
        if shared is not None:
            try:
                merge_state(self.model, shared, self.keys)
            except ValueError as err:
                raise ValueError(f"Site {self.name!r}: {err}") from None
        self._max_norm()

    def _loss(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fn = getattr(self.model, "training_loss", None)
        if callable(fn):
            out = fn(X, y)
            return out[0] if isinstance(out, tuple) else out
        return F.nll_loss(F.log_softmax(self.model(X), dim=1), y)

    @torch.no_grad()
    def _score(self, model: nn.Module, X: torch.Tensor, y: torch.Tensor
               ) -> tuple[float, float, np.ndarray]:
        """Mean NLL, accuracy and predictions of ``model`` in eval mode."""
        was_training = model.training
        model.eval()
        losses, preds = [], []
        step = max(self.batch_size, 256)
        for i in range(0, X.shape[0], step):
            logp = F.log_softmax(model(X[i:i + step]).float(), dim=1)
            losses.append(F.nll_loss(logp, y[i:i + step], reduction="sum"))
            preds.append(logp.argmax(1))
        model.train(was_training)
        n = max(int(X.shape[0]), 1)
        pred = torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)
        loss = float(torch.stack(losses).sum()) / n if losses else math.nan
        acc = float((pred == y).float().mean()) if preds else math.nan
        return loss, acc, pred.cpu().numpy()

    # ------------------------------------------------------------------ round API
    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def shared_state(self) -> dict[str, torch.Tensor]:
        """Detached CPU copies of the current shared tensors."""
        return split_state(self.model, self.keys)[0]

    def _proximal_anchor(self, prox_mu: float) -> dict[str, torch.Tensor] | None:
        """The shared parameters right now (after the merge): FedProx's ``w^t``."""
        if prox_mu <= 0:
            return None
        keys = set(self.keys)
        return {k: p.detach().clone() for k, p in self.model.named_parameters() if k in keys}

    def _proximal_term(self, anchor: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``sum_k ||w_k - w_k^t||^2`` over the shared parameters."""
        params = dict(self.model.named_parameters())
        return sum(((params[k] - a) ** 2).sum() for k, a in anchor.items())

    def train_round(self, shared: Mapping[str, Any] | None = None, *,
                    prox_mu: float | None = None
                    ) -> tuple[dict[str, torch.Tensor], int, dict[str, float]]:
        """Merge ``shared`` (None: keep the own tensors, as local-only training does), train one
        epoch and return ``(shared tensors, n_examples, metrics)``.

        ``metrics`` holds ``train-loss`` (mean over the epoch's trials, FedProx's proximal term
        included) and ``num-examples``.

        Parameters
        ----------
        shared : mapping or None
            The broadcast shared tensors.
        prox_mu : float or None
            FedProx weight for this round (None: the site's ``prox_mu``; 0: plain training).

        Raises
        ------
        ValueError
            When the merge fails (naming the site and the keys), or after ``rounds`` rounds
            (the schedule is spent).
        """
        if self.round >= self.rounds:
            raise ValueError(f"Site {self.name!r} has trained all {self.rounds} rounds of its "
                             f"schedule; build it with a larger rounds= to train more.")
        mu = self.prox_mu if prox_mu is None else _check_prox_mu(prox_mu, f"Site {self.name!r}")
        self._merge(shared)
        anchor = self._proximal_anchor(mu)
        self.model.train()
        total, seen = 0.0, 0
        perm = torch.randperm(self.n_train, generator=self._gen).to(self.device)
        with self._site_rng():
            for i in range(self.batches_per_epoch):
                idx = perm[i * self.batch_size:(i + 1) * self.batch_size]
                X, y = self.X_train[idx], self.y_train[idx]
                self.optimizer.zero_grad(set_to_none=True)
                loss = self._loss(X, y)
                if anchor is not None:
                    loss = loss + 0.5 * mu * self._proximal_term(anchor)
                if not torch.isfinite(loss):
                    raise ValueError(f"Site {self.name!r}: the training loss became "
                                     f"{float(loss)} in round {self.round + 1}, batch {i + 1}.")
                loss.backward()
                self.optimizer.step()
                self.scheduler.step()
                self._max_norm()
                total += float(loss.detach()) * int(idx.numel())
                seen += int(idx.numel())
        self.round += 1
        metrics = {"train-loss": total / max(seen, 1), "num-examples": self.n_train}
        self.history.append({"round": self.round, "train-loss": metrics["train-loss"],
                             "lr": self.lr})
        return self.shared_state(), self.n_train, metrics

    def evaluate(self, shared: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Merge the round's aggregate (None: keep the own tensors), score the validation split
        and keep the lowest-validation-loss snapshot (ties keep the earlier round).

        Returns
        -------
        dict
            ``val-loss``, ``val-acc``, ``num-examples`` (validation trials).
        """
        self._merge(shared)
        loss, acc, _ = self._score(self.model, self.X_valid, self.y_valid)
        if loss < self.best_loss:
            self.best_loss = loss
            self.best_round = self.round
            self._best_state = _clone_state(self.model.state_dict())
        if acc > self.best_acc:
            self.best_acc = acc
            self.best_acc_round = self.round
        if self.history and self.history[-1]["round"] == self.round:
            self.history[-1].update({"val-loss": loss, "val-acc": acc})
        else:
            self.history.append({"round": self.round, "val-loss": loss, "val-acc": acc})
        return {"val-loss": loss, "val-acc": acc, "num-examples": len(self.data.valid)}

    def best_model(self) -> nn.Module:
        """A copy of the model holding the lowest-validation-loss snapshot.

        Raises
        ------
        ValueError
            When :meth:`evaluate` has never run (no snapshot).
        """
        if self._best_state is None:
            raise ValueError(f"Site {self.name!r} has no validated snapshot yet: call "
                             f"evaluate() after training.")
        model = copy.deepcopy(self.model)
        model.load_state_dict(self._best_state)
        return model

    def score(self, ts: TrialSet, *, per_subject: bool = False,
              snapshot: str = "best") -> dict[str, Any]:
        """Score a TrialSet: ``test-acc``, ``test-loss``, ``num-examples`` (and ``subject-acc``
        ``{subject: acc}`` when ``per_subject``).

        ``snapshot="best"`` (the protocol) scores the lowest-validation-loss snapshot;
        ``"last"`` scores the model as it stands now (after the last round's merge), a
        diagnostic of the selection, never the reported result.
        """
        check_option(snapshot, ("best", "last"), "snapshot", owner="Site.score")
        model = self.best_model() if snapshot == "best" else self.model
        X, y = _as_tensors(ts, self.device)
        loss, acc, pred = self._score(model, X, y)
        out: dict[str, Any] = {"test-acc": acc, "test-loss": loss, "num-examples": len(ts)}
        if per_subject:
            subj = ts.meta["subject"].astype(str).to_numpy()
            correct = pred == np.asarray(ts.y)
            out["subject-acc"] = {s: float(correct[subj == s].mean())
                                  for s in sorted(set(subj), key=natural_key)}
        return out

    def test(self, *, per_subject: bool = False, snapshot: str = "best") -> dict[str, Any]:
        """Score the site's test split once with the lowest-validation-loss snapshot
        (``snapshot="last"``: with the current model, see :meth:`score`)."""
        return self.score(self.data.test, per_subject=per_subject, snapshot=snapshot)

    # ------------------------------------------------------------------ state
    def _optim_state(self) -> dict[str, Any]:
        if self._optim is None and self._pending_optim is not None:
            opt, sched = self._pending_optim
        else:
            opt, sched = self.optimizer.state_dict(), self.scheduler.state_dict()
        return {"optimizer": copy.deepcopy(opt), "scheduler": copy.deepcopy(sched)}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (tensors and plain containers only)."""
        return {
            "format": STATE_FORMAT,
            "site": self.name,
            "signature": self.signature,
            "rounds": self.rounds,
            "seed": self.seed,
            "round": self.round,
            "model": _clone_state(self.model.state_dict()),
            **self._optim_state(),
            "shuffle_rng": self._gen.get_state(),
            "torch_rng": self._torch_rng.clone(),
            "cuda_rng": None if self._cuda_rng is None else self._cuda_rng.clone(),
            "history": copy.deepcopy(self.history),
            "best": {"loss": self.best_loss, "round": self.best_round, "acc": self.best_acc,
                     "acc_round": self.best_acc_round, "state": self._best_state},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` of this site.

        Raises
        ------
        ValueError
            When the state belongs to another site, another shared signature or schedule.
        """
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"Site {self.name!r}: unknown state format {state.get('format')!r} "
                             f"(expected {STATE_FORMAT}).")
        for key, mine in (("site", self.name), ("signature", self.signature),
                          ("rounds", self.rounds), ("seed", self.seed)):
            if state[key] != mine:
                raise ValueError(f"Site {self.name!r}: the saved state has {key}="
                                 f"{state[key]!r}, this site has {mine!r}; it belongs to "
                                 f"another site or run.")
        self.model.load_state_dict(state["model"])
        if self._optim is None:  # built (and loaded) on first use
            self._pending_optim = (copy.deepcopy(state["optimizer"]),
                                   copy.deepcopy(state["scheduler"]))
        else:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        self._gen.set_state(state["shuffle_rng"])
        self._torch_rng = state["torch_rng"].clone()
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            self._cuda_rng = state["cuda_rng"].clone()
        self.round = int(state["round"])
        self.history = copy.deepcopy(list(state["history"]))
        best = state["best"]
        self.best_loss = float(best["loss"])
        self.best_round = best["round"]
        self.best_acc = float(best["acc"])
        self.best_acc_round = best["acc_round"]
        self._best_state = (None if best["state"] is None
                            else _clone_state(best["state"]))

    def save(self, path: str | Path) -> Path:
        """Write :meth:`state_dict` to ``path`` atomically (temporary file + rename)."""
        from ..train.checkpoint import save_checkpoint

        return save_checkpoint(self.state_dict(), path)

    def load(self, path: str | Path) -> None:
        """Restore from a file written by :meth:`save`."""
        from ..train.checkpoint import load_checkpoint

        self.load_state_dict(load_checkpoint(path))

    def to_bytes(self) -> bytes:
        """:meth:`state_dict` serialised with ``torch.save`` (for Flower's ``context.state``)."""
        buf = io.BytesIO()
        torch.save(self.state_dict(), buf)
        return buf.getvalue()

    def load_bytes(self, blob: bytes) -> None:
        """Restore from :meth:`to_bytes` output."""
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        self.load_state_dict(state)

    def __repr__(self) -> str:
        return (f"Site({self.name!r}, {self.n_train} train / {len(self.data.valid)} valid / "
                f"{len(self.data.test)} test trials, round {self.round}/{self.rounds})")


def _check_prox_mu(value: Any, owner: str) -> float:
    validate_type(value, "numeric", "prox_mu", owner=owner)
    if not (math.isfinite(float(value)) and float(value) >= 0):
        raise ValueError(f"The 'prox_mu' parameter of {owner} must be a finite number >= 0. "
                         f"Got {value!r} instead.")
    return float(value)


def _resolve_device(device: Any) -> torch.device:
    if isinstance(device, torch.device):
        return device
    validate_type(device, str, "device", owner="Site")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"The 'device' parameter of Site is {device!r} but CUDA is not "
                         f"available.")
    return dev
