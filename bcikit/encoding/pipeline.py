"""The encoding pipeline: stimulus features -> sEEG responses -> multimodal integration sites.

:func:`analyse_alignment` is the whole analysis of one alignment (word onsets or scene cuts) for
any set of sessions and any feature source: events, binned targets, the paper's cross-validated
ridge for every model, bootstrap on indices shared by all models (whole sentences of word
events by default, ``bootstrap_unit``), electrode scores, the
comparisons of the spec with Benjamini-Hochberg FDR, and the site calls.
:func:`run_encoding` runs it for a ``kind = "encoding"`` pipeline file (``bcikit run
pipelines/encoding.toml``) on the movie simulator, scores the calls against the simulator's
truth and writes a run folder:

``config.toml``, ``run.json``
    The resolved configuration and how the run was started.
``metrics.json``
    ``site_precision``, ``site_recall`` (non-linear multimodal electrodes called as sites in at
    least one alignment, q from the config), per alignment the same plus the fraction of
    additive and null electrodes called, the trained-beats-random fraction at responsive
    electrodes, median electrode r of trained and random networks, the site summary of
    :func:`bcikit.encoding.stats.site_summary`; settings (``bootstrap_unit`` among them),
    timing and versions.
``electrode_scores.csv``, ``comparisons.csv``, ``sites.csv``, ``truth.csv``
    The tables behind the numbers.
``figures/``
    Glass-brain map of the best trained network's electrode r, r time course at the called
    sites, and the multimodal-vs-unimodal scatter (per alignment).
``report.md``
    The headline numbers and the figures.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ..utils import check_option, logger, progress

__all__ = ["analyse_alignment", "AlignmentAnalysis", "run_encoding", "EncodingRun",
           "RESPONSIVE_CLASSES", "simulation_for"]

#: truth classes of the simulator that respond to each alignment's events
RESPONSIVE_CLASSES = {"language": ("language", "nonlinear", "additive"),
                      "vision": ("vision", "nonlinear", "additive")}


@dataclass
class AlignmentAnalysis:
    """What :func:`analyse_alignment` produced for one alignment."""

    alignment: str
    n_events: dict                 # subject -> number of events
    scores: pd.DataFrame           # electrode scores of every model (all subjects)
    comparisons: pd.DataFrame      # compare_models output
    sites: pd.DataFrame            # call_sites output
    summary: dict                  # site_summary output for this alignment
    electrodes: pd.DataFrame       # subject, name, region, x, y, z of the target electrodes
    r_time: dict = field(default_factory=dict)  # (subject, model) -> test r per target


def analyse_alignment(sessions: dict, alignment: str,
                      features: Callable[[str, pd.DataFrame], np.ndarray],
                      models: Sequence[str], catalog: pd.DataFrame, *,
                      signal: str = "broadband", reference: str = "none", n_boot: int = 1000,
                      bootstrap: str = "refit", bootstrap_unit: str = "sentence",
                      bins: str = "shared", q: float = 0.05,
                      min_obs: int = 10, purge: bool = True, seed: int = 0,
                      device: str = "auto", verbose: bool | None = None) -> AlignmentAnalysis:
    """The encoding analysis of one alignment over several subjects.

    Parameters
    ----------
    sessions : dict
        Subject -> a session (:class:`bcikit.io.braintreebank.BrainTreebankSession` or anything
        :func:`~bcikit.encoding.events.make_events` and
        :func:`~bcikit.encoding.targets.make_targets` accept).
    alignment : {'language', 'vision'}
    features : callable
        ``features(model, events) -> (n_events, n_features)`` array for every name in
        ``models`` (a simulator's :meth:`MovieSimulation.features`, or a lookup of extracted
        features).
    models : sequence of str
        The models to fit; their roles come from ``catalog`` (columns model, kind, trained,
        twin).
    signal, reference : str
        Target options of :func:`~bcikit.encoding.targets.make_targets` (``reference='none'``
        means no re-referencing).
    n_boot, bootstrap : int, {'refit', 'oof'}
        Bootstrap resamples (indices drawn once per subject and shared by every model) and mode.
    bootstrap_unit : {'sentence', 'event'}
        What a resample draws (:func:`bcikit.encoding.stats.bootstrap_blocks`): whole sentences
        of word events (bcikit's default; cuts and words without a sentence stay single), or
        single events (the spec's literal unit, anti-conservative for words, which share
        features and overlapping windows within a sentence).
    bins, q, min_obs : see :func:`bcikit.encoding.stats.group_electrode_scores` and
        :func:`bcikit.encoding.stats.compare_models`.
    purge : bool
        Drop training events within 4.2 s of held-out events (bcikit's default).
    seed : int
        Seed of the bootstrap indices.
    device : str
        ``auto``, ``cpu`` or ``cuda`` (himalaya backend of the ridge).

    Returns
    -------
    AlignmentAnalysis
    """
    from . import stats as S
    from .events import make_events
    from .targets import make_targets

    check_option(bootstrap_unit, S.BOOTSTRAP_UNITS, "bootstrap_unit", owner="analyse_alignment")
    unknown = sorted(set(models) - set(catalog["model"]))
    if unknown:
        raise ValueError(f"The models {unknown} are not in the model catalog (known: "
                         f"{sorted(catalog['model'])}).")
    scores, n_events, electrodes, r_time = [], {}, [], {}
    for subject, session in sessions.items():
        subject = str(subject)
        events = make_events(session, alignment)
        if len(events) < 20:
            raise ValueError(f"Subject {subject}: only {len(events)} {alignment} events; the "
                             f"5-fold protocol needs more (at least 20).")
        targets = make_targets(session, events, signal=signal,
                               reference=None if reference == "none" else reference)
        n_events[subject] = len(events)
        el = targets.electrodes.copy()
        el.insert(0, "subject", subject)
        electrodes.append(el)
        times = events["time"].to_numpy(dtype=float)
        blocks = S.bootstrap_blocks(events, bootstrap_unit)
        idx = S.bootstrap_indices(len(events), n_boot, seed=seed, blocks=blocks)
        results = []
        for model in progress(models, desc=f"{alignment} sub-{subject}", verbose=verbose):
            X = np.asarray(features(model, events))
            res = S.bootstrap_encoding(X, targets.Y, idx, mode=bootstrap, blocks=blocks,
                                       unit=bootstrap_unit,
                                       event_times=times if purge else None, purge=purge,
                                       model=model, subject=subject, alignment=alignment,
                                       electrodes=list(targets.electrodes["name"]),
                                       n_bins=targets.n_bins, device=device)
            r_time[(subject, model)] = np.asarray(res.cv.test_r, dtype=float)
            # the out-of-fold predictions (n_events x targets, float64) were only needed for
            # the resampling: drop them so that memory does not grow with models x targets
            res.cv.oof_pred = res.cv.half = None
            results.append(res)
        scores.extend(S.group_electrode_scores(results, bins=bins))
        del results
    comparisons = S.compare_models(scores, catalog[catalog["model"].isin(models)], q=q,
                                   min_obs=min_obs)
    sites = S.call_sites(comparisons)
    summary = S.site_summary(comparisons, sites)
    table = pd.concat([s.table for s in scores], ignore_index=True)
    return AlignmentAnalysis(alignment=alignment, n_events=n_events, scores=table,
                             comparisons=comparisons, sites=sites,
                             summary=summary.get("per_alignment", {}).get(alignment, summary),
                             electrodes=pd.concat(electrodes, ignore_index=True),
                             r_time=r_time)


# ---------------------------------------------------------------------------------- simulator
def simulation_for(knobs: dict, *, cache_dir: str | Path | None = None,
                   verbose: bool | None = None):
    """The movie simulation for ``knobs`` (``[data.simulate]``), simulated once and cached.

    The release is written under ``<cache>/movie_seeg/<hash of the knobs>`` (``$BCIKIT_CACHE``
    or ``~/.cache/bcikit``) and read back by later runs with the same knobs.
    """
    from ..data.cache import default_cache_dir
    from ..simulate.movie_seeg import load_movie_simulation, simulate_movie_seeg

    import bcikit.simulate.movie_seeg as module

    # the simulator's source is part of the key: a changed simulator never serves a stale release
    source = Path(module.__file__).read_bytes()
    key = hashlib.sha1(json.dumps(knobs, sort_keys=True).encode() + source).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / "movie_seeg" / key
    done = folder / ".complete"
    if done.exists():
        return load_movie_simulation(folder / "release")
    if folder.exists():  # an interrupted simulation: start it again
        import shutil

        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    sim = simulate_movie_seeg(folder / "release", verbose=verbose, **knobs)
    (folder / "knobs.json").write_text(json.dumps(knobs, indent=1, sort_keys=True))
    done.write_text(datetime.now().isoformat(timespec="seconds"))
    return sim


def _check_knobs(knobs: dict, source: str) -> None:
    import inspect

    from ..simulate.movie_seeg import simulate_movie_seeg

    allowed = [p for p in inspect.signature(simulate_movie_seeg).parameters
               if p not in ("out_dir", "verbose")]
    for k in knobs:
        if k not in allowed:
            raise ValueError(f"{source}: [data.simulate] has an unknown knob {k!r} for the "
                             f"movie_seeg simulator; allowed: {allowed}.")


# ---------------------------------------------------------------------------------- the run
@dataclass
class EncodingRun:
    """What :func:`run_encoding` produced."""

    run_dir: Path
    metrics: dict
    analyses: dict  # alignment -> AlignmentAnalysis


def _detection(sites: pd.DataFrame, truth: pd.DataFrame, alignment: str | None) -> dict:
    from .stats import site_detection_metrics

    d = site_detection_metrics(sites, truth, positive="nonlinear", alignment=alignment)
    out = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}
    return out


def _alignment_metrics(a: AlignmentAnalysis, truth: pd.DataFrame, catalog: pd.DataFrame) -> dict:
    resp = truth[truth["class"].isin(RESPONSIVE_CLASSES[a.alignment])]
    key = set(zip(resp["subject"].astype(str), resp["electrode"].astype(str)))
    tab = a.scores.copy()
    is_resp = [(str(s), str(e)) in key for s, e in zip(tab["subject"], tab["electrode"])]
    tab = tab[is_resp]
    trained = set(catalog.loc[catalog["trained"].astype(bool), "model"])
    med = tab.groupby("model")["score"].median()
    rnd = a.comparisons[a.comparisons["comparison"] == "trained-beats-random"]
    rnd = rnd[[(str(s), str(e)) in key for s, e in zip(rnd["subject"], rnd["electrode"])]]
    best = (tab[tab["model"].isin(trained)].sort_values("val_score", ascending=False)
            .groupby(["subject", "electrode"]).head(1))
    sig = rnd.set_index(["subject", "electrode", "model_a"])["significant"]
    passed = [bool(sig.get((s, e, m), False)) for s, e, m in
              zip(best["subject"], best["electrode"], best["model"])]
    det = _detection(a.sites, truth, a.alignment)
    return {
        "n_events": a.n_events,
        "n_responsive_electrodes": len(best),
        "trained_beats_random_best": float(np.mean(passed)) if passed else None,
        "trained_median_r": float(med[med.index.isin(trained)].median()),
        "random_median_r": float(med[~med.index.isin(trained)].median())
        if (~med.index.isin(trained)).any() else None,
        "median_r_per_model": {k: round(float(v), 4) for k, v in med.items()},
        "site_precision": det["precision"], "site_recall": det["recall"],
        "n_sites": det["n_called"],
        "called_fraction": det.get("called_fraction"),
        "summary": a.summary,
    }


def _figures(a: AlignmentAnalysis, catalog: pd.DataFrame, fig_dir: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    from . import figures as F
    from .targets import bin_times

    out = []
    trained = catalog.loc[catalog["trained"].astype(bool), "model"]
    tab = a.scores[a.scores["model"].isin(trained)]
    best_model = tab.groupby("model")["val_score"].median().idxmax()
    sel = tab[tab["model"] == best_model].merge(
        a.electrodes.rename(columns={"name": "electrode"}), on=["subject", "electrode"])
    if {"x", "y", "z"} <= set(sel.columns) and len(sel):
        coords = sel[["x", "y", "z"]].to_numpy(dtype=float)
        if np.isfinite(coords).all():
            path = fig_dir / f"{a.alignment}_glass_brain.png"
            F.plot_glass_brain_r(sel["score"].fillna(0).to_numpy(), coords,
                                 title=f"{a.alignment}: {best_model}, electrode r",
                                 output_file=path)
            out.append(path)
    site_rows = a.sites[a.sites["site"]]
    curves, labels = [], []
    for model in (best_model, f"{best_model}-random"):
        rs = []
        for subject, electrode in zip(site_rows["subject"], site_rows["electrode"]):
            r = a.r_time.get((str(subject), model))
            if r is None:
                continue
            names = list(a.electrodes.loc[a.electrodes["subject"] == str(subject), "name"])
            e = names.index(electrode)
            rs.append(r.reshape(len(names), -1)[e])
        if rs:
            curves.append(np.nanmean(rs, axis=0))
            labels.append(model)
    if curves:
        path = fig_dir / f"{a.alignment}_r_timecourse_sites.png"
        F.plot_r_timecourse(np.vstack(curves), bin_times(), labels=labels, output_file=path)
        out.append(path)
    mu = a.comparisons[a.comparisons["comparison"] == "multi-beats-unimodal"]
    if len(mu):
        path = fig_dir / f"{a.alignment}_multi_vs_unimodal.png"
        F.plot_model_scatter(mu["score_a"].to_numpy(), mu["score_b"].to_numpy(),
                             significant=mu["significant"].to_numpy(bool),
                             label_a="best multimodal (electrode r)",
                             label_b="best unimodal (electrode r)", output_file=path)
        out.append(path)
    plt.close("all")
    return out


def run_encoding(cfg, run_dir: str | Path, *, dataset: str | Path | None = None,
                 device: str | None = None, verbose: bool | None = None) -> EncodingRun:
    """Run a ``kind = "encoding"`` pipeline into ``run_dir`` (see the module docstring).

    Raises
    ------
    ValueError
        A dataset is given (real recordings need features of real networks: use
        :func:`analyse_alignment` with :mod:`bcikit.encoding.features` from a notebook; the
        pipeline file runs the simulator), an unknown simulator knob or model name.
    """
    from ..pipeline import _versions
    from ..utils import warn

    if dataset is not None:
        raise ValueError(
            f"{cfg.source}: kind = 'encoding' pipelines run on the movie simulator; for real "
            f"recordings ({str(dataset)!r}) extract network features with "
            f"bcikit.encoding.features and call bcikit.encoding.pipeline.analyse_alignment "
            f"(see notebooks/encoding_multimodal_sites.ipynb).")
    enc = cfg.encoding
    run_dir = Path(run_dir)
    knobs = dict(cfg.data.simulate)
    _check_knobs(knobs, cfg.source)
    t0 = time.perf_counter()
    sim = simulation_for(knobs, verbose=verbose)
    catalog = sim.model_catalog()
    models = list(catalog["model"]) if enc.models is None else list(enc.models)
    twins = [m for m in models if m in set(catalog["model"])
             and isinstance(catalog.set_index("model").at[m, "twin"], str)
             and catalog.set_index("model").at[m, "twin"] not in models]
    if twins:
        warn(f"{cfg.source}: [encoding] models lists {twins} without their random twins; "
             f"trained-beats-random cannot be tested for them and no site can be called "
             f"with them as winners.")
    subjects = cfg.data.subjects or list(sim.subjects)
    sessions = {str(s): sim.session(s) for s in subjects}
    dev = device or enc.device
    analyses, per_alignment = {}, {}
    for alignment in enc.alignments:
        logger.info("encoding: %s alignment, %d subject(s), %d model(s)", alignment,
                    len(sessions), len(models))
        a = analyse_alignment(sessions, alignment, sim.features, models, catalog,
                              signal=enc.signal, reference=enc.reference, n_boot=enc.n_boot,
                              bootstrap=enc.bootstrap, bootstrap_unit=enc.bootstrap_unit,
                              bins=enc.bins, q=enc.q,
                              min_obs=enc.min_obs, purge=enc.purge, seed=enc.seed, device=dev,
                              verbose=verbose)
        analyses[alignment] = a
        per_alignment[alignment] = _alignment_metrics(a, sim.truth, catalog)
    all_sites = pd.concat([a.sites for a in analyses.values()], ignore_index=True)
    overall = _detection(all_sites, sim.truth, None)
    metrics = {
        "pipeline": cfg.pipeline.name, "kind": "encoding",
        "site_precision": overall["precision"], "site_recall": overall["recall"],
        "n_sites": overall["n_called"], "n_nonlinear": overall["n_positive"],
        "called_fraction": overall.get("called_fraction"),
        "site_definition": "non-linear multimodal truth electrodes; called in at least one "
                           f"alignment at q = {enc.q}",
        "per_alignment": per_alignment,
        "settings": {"models": models, "subjects": list(sessions), "simulate": knobs,
                     **{k: getattr(enc, k) for k in ("alignments", "signal", "reference",
                                                      "protocol", "purge", "n_boot",
                                                      "bootstrap", "bootstrap_unit",
                                                      "bins", "q", "min_obs",
                                                      "seed")}},
        "device": dev, "seconds": time.perf_counter() - t0, "versions": _versions(),
    }
    if enc.protocol != "paper":
        raise ValueError(f"{cfg.source}: [encoding] protocol {enc.protocol!r}: the site calls "
                         f"use the paper protocol's validation/test halves; the nested protocol "
                         f"is available as bcikit.encoding.ridge.nested_cv for r maps only.")
    _write(run_dir, cfg, metrics, analyses, sim.truth, catalog)
    return EncodingRun(run_dir=run_dir, metrics=metrics, analyses=analyses)


def _json_safe(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_json_safe(v) for v in o]
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not np.isfinite(o):
        return None
    return o


def _write(run_dir: Path, cfg, metrics: dict, analyses: dict, truth: pd.DataFrame,
           catalog: pd.DataFrame) -> None:
    fig_dir = run_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    pd.concat([a.scores for a in analyses.values()]).to_csv(run_dir / "electrode_scores.csv",
                                                             index=False)
    pd.concat([a.comparisons for a in analyses.values()]).to_csv(run_dir / "comparisons.csv",
                                                                  index=False)
    pd.concat([a.sites for a in analyses.values()]).to_csv(run_dir / "sites.csv", index=False)
    truth.to_csv(run_dir / "truth.csv", index=False)
    figs = []
    for a in analyses.values():
        figs.extend(_figures(a, catalog, fig_dir))
    (run_dir / "metrics.json").write_text(json.dumps(_json_safe(metrics), indent=1))
    lines = [f"# Encoding run: {cfg.pipeline.name}", "",
             f"Simulator knobs: `{metrics['settings']['simulate']}`; models: "
             f"{len(metrics['settings']['models'])}; bootstrap: "
             f"{cfg.encoding.n_boot} × {cfg.encoding.bootstrap}, resampling unit "
             f"{cfg.encoding.bootstrap_unit}; q = {cfg.encoding.q}.", "",
             f"**Site precision {_fmt(metrics['site_precision'])}, recall "
             f"{_fmt(metrics['site_recall'])}** ({metrics['n_sites']} called; "
             f"{metrics['n_nonlinear']} non-linear multimodal electrodes in the truth).", "",
             "| alignment | events | sites | precision | recall | trained beats random (best, responsive) | median r trained / random |",
             "|---|---|---|---|---|---|---|"]
    for name, m in metrics["per_alignment"].items():
        lines.append(f"| {name} | {sum(m['n_events'].values())} | {m['n_sites']} | "
                     f"{_fmt(m['site_precision'])} | {_fmt(m['site_recall'])} | "
                     f"{_fmt(m['trained_beats_random_best'])} | {_fmt(m['trained_median_r'])} / "
                     f"{_fmt(m['random_median_r'])} |")
    lines += ["", "## Figures", ""] + [f"![{p.stem}](figures/{p.name})" for p in figs]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"
