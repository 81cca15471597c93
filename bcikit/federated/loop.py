"""In-process federation and its baselines, with identical splits and recipe.

:func:`run_federated` is the reference a Flower simulation must reproduce (to 1e-5): per round,
every site merges the broadcast shared tensors and trains one epoch; the server averages the
returned shared tensors (FedAvg, weighted by training trials); every site merges the aggregate,
validates and keeps its lowest-validation-loss snapshot. Baselines: :func:`run_local` (no
aggregation), :func:`run_fedavg_all` (every parameter shared that can be), :func:`run_pooled`
(one network on the pooled trials of sites with the same channels, rate and length).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils import check_option, logger, progress, validate_type
from .sites import Site, SiteData, natural_key
from .state import (check_signatures, fedavg, fedavg_weights, initial_shared, shared_keys,
                    split_state)

__all__ = ["FederatedResult", "run_federated", "run_local", "run_fedavg_all", "run_pooled",
           "default_initial", "results_json", "common_keys", "SERVER_CHECKPOINT",
           "site_checkpoint"]

SERVER_CHECKPOINT = "server.pt"


def site_checkpoint(folder: str | Path, site: str) -> Path:
    """Checkpoint file of ``site`` in a run folder: ``folder/site-<name>.pt``."""
    return Path(folder) / f"site-{site}.pt"


@dataclass
class FederatedResult:
    """What a run returns.

    Attributes
    ----------
    kind : str
        ``"federated"``, ``"local"``, ``"fedavg-all"`` or ``"pooled"``.
    sites : dict
        Per site: ``test-acc``, ``test-loss``, ``num-examples`` (test trials), ``subject-acc``
        ``{subject: acc}``, ``best-round``, ``best-val-loss``, ``best-val-acc``,
        ``best-val-acc-round``, ``n-train``; ``last-round``, ``last-test-acc`` and
        ``last-subject-acc``: the same test split scored with the last round's model (a
        diagnostic of the snapshot selection, not the result); None for a site a baseline
        cannot score.
    history : list of dict
        Per round ``{"round": r, "<site>": {train-loss, val-loss, val-acc}}``.
    weights : list of dict
        Per round ``{site: w}`` (aggregation weights; empty for local-only runs).
    shared : dict or None
        The last aggregate.
    """

    kind: str
    sites: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    weights: list[dict[str, float]] = field(default_factory=list)
    shared: dict[str, torch.Tensor] | None = None

    def mean_acc(self) -> float:
        """Mean test accuracy over the sites that were scored."""
        accs = [m["test-acc"] for m in self.sites.values() if m is not None]
        return float(np.mean(accs)) if accs else math.nan


def _site_summary(site: Site) -> dict[str, Any]:
    out = site.test(per_subject=True)
    last = site.test(per_subject=True, snapshot="last")
    out.update({"best-round": site.best_round, "best-val-loss": site.best_loss,
                "best-val-acc": site.best_acc, "best-val-acc-round": site.best_acc_round,
                "n-train": site.n_train, "last-round": site.round,
                "last-test-acc": last["test-acc"], "last-subject-acc": last["subject-acc"]})
    return out


def _check_sites(sites: Sequence[Site], owner: str) -> list[Site]:
    sites = list(sites)
    if not sites:
        raise ValueError(f"{owner} needs at least one site.")
    for s in sites:
        validate_type(s, Site, "sites", owner=owner)
    names = [s.name for s in sites]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{owner}: site names must be unique; {dup} appear more than once.")
    rounds = {s.round for s in sites}
    if len(rounds) > 1:
        raise ValueError(f"{owner}: the sites are at different rounds "
                         f"{ {s.name: s.round for s in sites} }; resume them from the same "
                         f"checkpoint round.")
    return sites


def default_initial(sites: Sequence[Site]) -> dict[str, torch.Tensor]:
    """The shared weights broadcast before round 1.

    FLEEGNet sites: :func:`~bcikit.federated.initial_shared` (the server's template, seed of
    the first site). Other models: the first site's own initial shared tensors.
    """
    from ..models.fleeg import FLEEGNet

    first = sites[0]
    if isinstance(first.model, FLEEGNet) and set(first.keys) == set(shared_keys(first.model)):
        return initial_shared(first.model.n_outputs, seed=first.seed)
    return {k: v.clone() for k, v in first.initial_state.items()}


def _save_server(folder: Path, round_: int, shared, result: FederatedResult) -> None:
    from ..train.checkpoint import save_checkpoint

    save_checkpoint({"round": round_, "shared": shared, "history": result.history,
                     "weights": result.weights, "kind": result.kind}, folder / SERVER_CHECKPOINT)


def _resume(sites: Sequence[Site], folder: Path, result: FederatedResult):
    from ..train.checkpoint import load_checkpoint

    server = load_checkpoint(folder / SERVER_CHECKPOINT)
    if server.get("kind") != result.kind:
        raise ValueError(f"The checkpoint in {str(folder)!r} is of a {server.get('kind')!r} run, "
                         f"not {result.kind!r}.")
    for s in sites:
        path = site_checkpoint(folder, s.name)
        s.load(path)
        if s.round != server["round"]:
            raise ValueError(f"Site {s.name!r} checkpoint {str(path)!r} is at round {s.round}; "
                             f"the server checkpoint is at round {server['round']}.")
    result.history = list(server["history"])
    result.weights = list(server["weights"])
    return server["shared"]


def _run(sites: Sequence[Site], rounds: int | None, *, kind: str, aggregate: bool,
         initial: Mapping[str, torch.Tensor] | None, weighting: str,
         checkpoint_dir: str | Path | None, resume: bool, test: bool,
         on_round: Callable[[int, FederatedResult], None] | None, verbose,
         counts: Mapping[str, int] | None = None,
         prox_mu: float | None = None) -> FederatedResult:
    owner = f"run_{kind.replace('-', '_')}"
    sites = _check_sites(sites, owner)
    check_option(weighting, ("samples", "equal"), "weighting", owner=owner)
    if aggregate:
        check_signatures({s.name: s.signature for s in sites})
    schedule = {s.rounds for s in sites}
    if rounds is None:
        if len(schedule) > 1:
            raise ValueError(f"{owner}: the sites have different schedules "
                             f"{ {s.name: s.rounds for s in sites} }; pass rounds=.")
        rounds = schedule.pop()
    validate_type(rounds, "int", "rounds", owner=owner)
    if counts is not None:
        missing = sorted({s.name for s in sites} - set(counts))
        if missing:
            raise ValueError(f"{owner}: counts= has no entry for the sites {missing}.")
    result = FederatedResult(kind)
    folder = None if checkpoint_dir is None else Path(checkpoint_dir)
    if resume:
        if folder is None:
            raise ValueError(f"{owner}: resume=True needs checkpoint_dir.")
        current = _resume(sites, folder, result)
    else:
        if sites[0].round != 0:
            raise ValueError(f"{owner}: the sites have already trained {sites[0].round} "
                             f"round(s); pass resume=True with their checkpoint_dir, or new "
                             f"sites.")
        current = default_initial(sites) if initial is None else dict(initial)
    start = sites[0].round
    if rounds > min(s.rounds for s in sites):
        raise ValueError(f"{owner}: rounds={rounds} exceeds a site's schedule "
                         f"({ {s.name: s.rounds for s in sites} }).")
    for r in progress(range(start, rounds), desc=kind, verbose=verbose):
        updates, row = [], {"round": r + 1}
        for s in sites:
            # local-only: the broadcast initial weights are merged once, before round 1
            send = current if (aggregate or s.round == 0) else None
            try:
                shared, n, metrics = (s.train_round(send) if prox_mu is None else
                                      s.train_round(send, prox_mu=prox_mu))
            except Exception as err:
                raise RuntimeError(f"Site {s.name!r} failed in round {r + 1}: {err}") from err
            updates.append((shared, n if counts is None else int(counts[s.name])))
            row[s.name] = {"train-loss": metrics["train-loss"]}
        if aggregate:
            w = fedavg_weights([n for _, n in updates], weighting=weighting)
            result.weights.append({s.name: wi for s, wi in zip(sites, w)})
            current = fedavg(updates, weighting=weighting)
            result.shared = current
        for s in sites:
            m = s.evaluate(current if aggregate else None)
            row[s.name].update({"val-loss": m["val-loss"], "val-acc": m["val-acc"]})
        result.history.append(row)
        if aggregate:
            logger.info("%s round %d: weights %s", kind, r + 1, result.weights[-1])
        if folder is not None:
            for s in sites:
                s.save(site_checkpoint(folder, s.name))
            _save_server(folder, r + 1, current, result)
        if on_round is not None:
            on_round(r + 1, result)
    result.shared = current if aggregate else None
    if test:
        result.sites = {s.name: _site_summary(s) for s in sites}
    return result


def run_federated(sites: Sequence[Site], rounds: int | None = None, *,
                  initial: Mapping[str, torch.Tensor] | None = None, weighting: str = "samples",
                  counts: Mapping[str, int] | None = None,
                  prox_mu: float | None = None,
                  checkpoint_dir: str | Path | None = None, resume: bool = False,
                  test: bool = True,
                  on_round: Callable[[int, FederatedResult], None] | None = None,
                  verbose: bool | None = None) -> FederatedResult:
    """FLEEG in one process: the reference for the Flower app.

    Parameters
    ----------
    sites : sequence of Site
        Fresh sites (round 0), or sites to resume (``resume=True``).
    rounds : int or None
        Train until this round (default: the sites' schedule length). A smaller value stops
        early (the schedule still anneals over the sites' ``rounds``).
    initial : dict or None
        Shared weights broadcast before round 1 (default :func:`default_initial`).
    weighting : {"samples", "equal"}
        FedAvg weights: training trials per site, or equal.
    counts : mapping of site name to int, or None
        Constant per-site counts used instead of the training trials with
        ``weighting="samples"`` (the official recipe: each dataset's total trials).
    prox_mu : float or None
        FedProx weight for every site and round (the proximal term of
        :class:`~bcikit.federated.Site`, what the Flower app's ``fedprox-mu`` sends); None: each
        site's own ``prox_mu`` (0 by default: FedAvg).
    checkpoint_dir : path or None
        After every round, write ``site-<name>.pt`` per site and ``server.pt`` (round, last
        aggregate, history, weights) there, atomically.
    resume : bool
        Load those checkpoints first and continue from their round.
    test : bool
        Score every site's test split with its best snapshot at the end.
    on_round : callable or None
        ``on_round(round, result)`` after every round.
    verbose : bool or None
        Progress bar.

    Returns
    -------
    FederatedResult

    Raises
    ------
    ValueError
        When the sites' shared signatures differ (naming the sites), names repeat, or the
        sites are at different rounds.
    RuntimeError
        When a site fails during a round (naming the site and the round).
    """
    return _run(sites, rounds, kind="federated", aggregate=True, initial=initial,
                weighting=weighting, checkpoint_dir=checkpoint_dir, resume=resume, test=test,
                on_round=on_round, verbose=verbose, counts=counts, prox_mu=prox_mu)


def run_local(sites: Sequence[Site], epochs: int | None = None, *,
              initial: Mapping[str, torch.Tensor] | None = None,
              checkpoint_dir: str | Path | None = None, resume: bool = False, test: bool = True,
              verbose: bool | None = None) -> FederatedResult:
    """Local-only baseline: the same sites, splits, recipe and selection, no aggregation.

    Each site starts from the same broadcast initial shared weights as :func:`run_federated`
    (so a single site gives identical results both ways) and trains ``epochs`` epochs alone.
    Build the sites afresh (same :class:`SiteData`, same seed) for each run.
    """
    return _run(sites, epochs, kind="local", aggregate=False, initial=initial,
                weighting="samples", checkpoint_dir=checkpoint_dir, resume=resume, test=test,
                on_round=None, verbose=verbose)


def common_keys(sites: Sequence[Site]) -> list[str]:
    """Every parameter (normalisation parameters and buffers excluded) whose key and shape are
    the same at every site."""
    per_site = []
    for s in sites:
        state = s.model.state_dict()
        per_site.append({k: tuple(state[k].shape) for k in shared_keys(s.model, scope="all")})
    first = per_site[0]
    return sorted(k for k, shape in first.items() if all(p.get(k) == shape for p in per_site))


def run_fedavg_all(sites: Sequence[Site], rounds: int | None = None, *,
                   weighting: str = "samples", checkpoint_dir: str | Path | None = None,
                   resume: bool = False, test: bool = True,
                   verbose: bool | None = None) -> FederatedResult:
    """Baseline "FedAvg with everything shared": every parameter whose key and shape agree at
    every site (:func:`common_keys`) is averaged; normalisation parameters and statistics stay
    local. With heterogeneous geometries the input-dependent layers (FLEEGNet's block-1
    spatial conv, kernels that differ) cannot be shared and stay local.

    The sites' shared keys are switched to :func:`common_keys` (sites must be fresh, round 0).
    The initial broadcast is the first site's own tensors for those keys.
    """
    sites = _check_sites(sites, "run_fedavg_all")
    keys = common_keys(sites)
    for s in sites:
        if s.keys != keys:
            if s.round != 0 and not resume:
                raise ValueError(f"run_fedavg_all needs fresh sites; {s.name!r} is at round "
                                 f"{s.round}.")
            s.keys = keys
            shared, _ = split_state(s.model, keys)
            from .state import shared_signature

            s.signature = shared_signature(shared)
            s.initial_state = shared
    initial = None if resume else {k: v.clone() for k, v in sites[0].initial_state.items()}
    return _run(sites, rounds, kind="fedavg-all", aggregate=True, initial=initial,
                weighting=weighting, checkpoint_dir=checkpoint_dir, resume=resume, test=test,
                on_round=None, verbose=verbose)


def _pool_key(data: SiteData) -> tuple:
    ch = tuple(data.train.ch_names) if data.train.info is not None else data.n_chans
    return (ch, data.sfreq, data.n_times, tuple(data.classes or ()))


def run_pooled(sites: Sequence[SiteData], epochs: int = 250, *, seed: int = 123,
               stem_geometry: str = "solve", device: str = "cpu",
               model_factory: Callable[[SiteData], torch.nn.Module] | None = None,
               verbose: bool | None = None) -> FederatedResult:
    """Pooled baseline where the channel sets allow it.

    Sites with identical channels, sampling rate, trial length and classes form a group; each
    group of two or more trains one network on its pooled training trials (validation on the
    pooled validation trials, batch size and learning rate of the group's first site) and each
    member's test split is scored with that network. Sites alone in their group are ``None``.

    Parameters
    ----------
    sites : sequence of SiteData
    epochs : int
    seed, stem_geometry, device
        As for :class:`Site`.
    model_factory : callable or None
        ``model_factory(pooled_data) -> nn.Module`` (default: FLEEGNet).
    """
    from ..data.trialset import TrialSet

    datas = list(sites)
    for d in datas:
        validate_type(d, SiteData, "sites", owner="run_pooled")
    groups: dict[tuple, list[SiteData]] = {}
    for d in datas:
        groups.setdefault(_pool_key(d), []).append(d)
    result = FederatedResult("pooled", sites={d.name: None for d in datas})
    for members in groups.values():
        if len(members) < 2:
            continue
        name = "+".join(m.name for m in members)
        pooled = SiteData(name, TrialSet.concatenate([m.train for m in members]),
                          TrialSet.concatenate([m.valid for m in members]),
                          TrialSet.concatenate([m.test for m in members]),
                          batch_size=members[0].batch_size, lr=members[0].lr)
        model = None if model_factory is None else model_factory(pooled)
        site = Site(pooled, rounds=epochs, model=model, stem_geometry=stem_geometry, seed=seed,
                    device=device)
        for _ in progress(range(epochs), desc=f"pooled {name}", verbose=verbose):
            site.train_round(None)
            site.evaluate(None)
        for m in members:
            out = site.score(m.test, per_subject=True)
            out.update({"best-round": site.best_round, "best-val-loss": site.best_loss,
                        "pooled-with": [x.name for x in members], "n-train": site.n_train})
            result.sites[m.name] = out
    return result


def results_json(federated: FederatedResult, local: FederatedResult) -> dict[str, Any]:
    """``{"sites": {"<site>": {"federated_acc", "local_acc", "n_trials"}}}`` (the format of
    ``bcikit fl simulate``'s ``results.json``; ``n_trials`` counts the scored test trials)."""
    out = {}
    for name in sorted(federated.sites, key=natural_key):
        f = federated.sites[name]
        loc = local.sites.get(name)
        if f is None or loc is None:
            raise ValueError(f"results_json: site {name!r} has no federated or local result.")
        out[name] = {"federated_acc": float(f["test-acc"]), "local_acc": float(loc["test-acc"]),
                     "n_trials": int(f["num-examples"])}
    return {"sites": out}
