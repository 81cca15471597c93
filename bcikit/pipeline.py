"""`bcikit run`: one pipeline file, end to end, into a run folder.

dataset card / BIDS root / simulator -> TrialSet -> protocol splits -> transforms fitted on the
training split -> model + Trainer (or a classical baseline) -> test predictions -> metrics, figures,
``report.md``.

The run folder holds ``config.toml`` (resolved), ``metrics.json``, ``scores.csv`` (one row per seed
and split), ``history.csv``, ``predictions.csv``, ``checkpoints/``, ``figures/`` and ``report.md``.
It is never overwritten; an interrupted run continues with :func:`run_pipeline` ``(resume=DIR)``:
finished splits are read back from ``splits/`` and an unfinished one resumes from its checkpoint.
"""

from __future__ import annotations

import json
import platform
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import PipelineConfig, load_config, validate_config
from .utils import logger, progress


@dataclass
class RunResult:
    """What :func:`run_pipeline` produced."""

    run_dir: Path
    metrics: dict
    scores: pd.DataFrame

    @property
    def accuracy(self) -> float:
        return self.metrics["summary"]["accuracy"]["mean"]


# --------------------------------------------------------------------------- data
def load_data(cfg: PipelineConfig, dataset: str | Path | None = None, *, verbose=None):
    """The pipeline's data: the simulator when ``dataset`` is None, else a card or BIDS root.

    Returns a list of TrialSets that can each be split on their own (one per channel layout).
    """
    from .data import TrialSet

    if dataset is None:
        from . import simulate

        params = dict(cfg.data.simulate)
        try:
            ts = simulate.make_motor_imagery(**params)
        except TypeError as err:
            raise ValueError(f"{cfg.source}: [data.simulate] {err}") from None
        source = f"simulator {cfg.data.simulator} {params}"
    else:
        from .io import load_dataset

        ts = load_dataset(dataset, task=cfg.data.task, subjects=cfg.data.subjects,
                          download=cfg.data.download, verbose=verbose)
        source = str(dataset)
    sets = [ts] if isinstance(ts, TrialSet) else list(ts.values())
    sets = [select_classes(s, cfg.data.classes, source=cfg.source) for s in sets]
    if cfg.data.window is not None:
        sets = [crop_window(s, *cfg.data.window, source=cfg.source) for s in sets]
    return sets, source


def select_classes(ts, classes, *, source: str = "config"):
    """Keep the trials of ``classes`` (in that order, recoded 0..k-1)."""
    if classes is None:
        return ts
    from .data import TrialSet

    if ts.classes is None:
        raise ValueError(f"{source}: [data] classes given but the data have no class names.")
    missing = [c for c in classes if c not in ts.classes]
    if missing:
        raise ValueError(f"{source}: [data] classes {missing} are not in the data; "
                         f"the data hold {ts.classes}.")
    names = ts.label_names
    keep = np.isin(names, classes)
    sub = ts.subset(keep)
    y = np.array([classes.index(n) for n in names[keep]], dtype=np.int64)
    return TrialSet(sub.X, y, sub.meta, sub.info, classes, sub.tmin, check_finite=False)


def crop_window(ts, tmin: float, tmax: float, *, source: str = "config"):
    """Crop every trial to [tmin, tmax) seconds relative to the event."""
    from .data import TrialSet

    start = int(round((tmin - ts.tmin) * ts.sfreq))
    n = int(round((tmax - tmin) * ts.sfreq))
    if start < 0 or start + n > ts.n_times:
        avail = (ts.tmin, ts.tmin + ts.n_times / ts.sfreq)
        raise ValueError(f"{source}: [data] window [{tmin}, {tmax}] s is outside the trials, "
                         f"which span [{avail[0]:g}, {avail[1]:g}] s.")
    return TrialSet(np.ascontiguousarray(ts.X[:, :, start:start + n]), ts.y, ts.meta, ts.info,
                    ts.classes, tmin, check_finite=False)


# --------------------------------------------------------------------------- one split
def _preprocess_config(cfg: PipelineConfig) -> dict:
    p = cfg.preprocess
    alignment = None
    if p.alignment == "euclidean":
        alignment = {"method": "euclidean", "per": "subject", "test_mode": p.alignment_test}
    return {"bandpass": p.bandpass, "resample": p.resample, "alignment": alignment,
            "scale": None if p.scale == "none" else p.scale}


def _fit_split(cfg: PipelineConfig, ts, split, seed: int, *, device: str, ckpt_dir: Path | None,
               verbose=None) -> dict:
    """Fit on the split's training (+validation) trials and predict its test trials once."""
    from .data.protocols import apply_split
    from .data.transforms import make_transforms
    from .models import count_parameters, get_model, is_classical

    train, valid, test = apply_split(ts, split)
    transforms = make_transforms(_preprocess_config(cfg))
    transforms.fit(train)  # fitted on the training split only
    train, valid, test = (transforms.transform(t) if len(t) else t for t in (train, valid, test))
    n_classes = len(ts.classes) if ts.classes else int(np.max(ts.y)) + 1
    out: dict[str, Any] = {"history": None}
    t0 = time.perf_counter()
    if is_classical(cfg.model.name):
        from .data import TrialSet

        est = get_model(cfg.model.name, **cfg.model.params)
        fit_set = TrialSet.concatenate([train, valid]) if len(valid) else train
        est.fit(np.asarray(fit_set.X, np.float64), fit_set.y)
        X_test = np.asarray(test.X, np.float64)
        pred = est.predict(X_test)
        proba = est.predict_proba(X_test) if hasattr(est, "predict_proba") else None
        out["n_params"] = None
    else:
        import torch

        from .train import Trainer, set_seed

        set_seed(seed)
        chs_info = train.info["chs"] if train.info is not None else None
        model = get_model(cfg.model.name, n_chans=train.n_chans, n_outputs=n_classes,
                          n_times=train.n_times, sfreq=train.sfreq, chs_info=chs_info,
                          classes=ts.classes, **cfg.model.params)
        t = cfg.train
        trainer = Trainer(model, epochs=t.epochs, batch_size=t.batch_size, lr=t.lr,
                          optimizer=t.optimizer, weight_decay=t.weight_decay,
                          scheduler=None if t.scheduler == "none" else t.scheduler,
                          patience=t.patience, monitor=t.monitor, device=device,
                          precision=t.precision, seed=seed, checkpoint_dir=ckpt_dir,
                          keep_on_device=t.keep_on_device, grad_clip=t.grad_clip,
                          verbose=verbose)
        if len(valid):
            trainer.fit(train.X, train.y, valid.X, valid.y)
        else:
            trainer.fit(train.X, train.y)
        proba = trainer.predict_proba(test.X)
        pred = proba.argmax(axis=1)
        out["history"] = pd.DataFrame(trainer.history_)
        out["n_params"] = count_parameters(model)
        if hasattr(model, "count_parameters"):  # e.g. MVCNet: deployed part vs training total
            out["n_params_deployed"] = int(model.count_parameters("deployed"))
        out["best_epoch"] = int(getattr(trainer, "best_epoch_", -1))
        out["device"] = str(trainer.device_)
        if ckpt_dir is not None and _rank() == 0:
            torch.save(model.state_dict(), Path(ckpt_dir) / "model.pt")
    out.update(pred=np.asarray(pred), proba=None if proba is None else np.asarray(proba),
               y_true=test.y, test_meta=test.meta, n_classes=n_classes,
               n_train=len(train), n_valid=len(valid), n_test=len(test),
               fit_seconds=time.perf_counter() - t0)
    return out


def _rank() -> int:
    """This process's rank under ``torchrun`` (0 when not distributed)."""
    import os

    return int(os.environ.get("RANK", "0"))


def _world_size() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "split"


# --------------------------------------------------------------------------- run
def _new_run_dir(cfg: PipelineConfig, out: str | Path | None) -> Path:
    if _world_size() > 1:
        if out is None:
            raise ValueError("Under torchrun every process must write to the same run folder: "
                             "pass --out DIR.")
        if _rank() != 0:
            return Path(out)
    if out is not None:
        run_dir = Path(out)
        if run_dir.exists() and any(run_dir.iterdir()):
            raise FileExistsError(f"The run folder {str(run_dir)!r} already exists and is not "
                                  f"empty; bcikit never overwrites a run. Choose another --out, "
                                  f"or continue it with --resume {run_dir}.")
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path(cfg.output.dir) / f"{_safe(cfg.pipeline.name)}-{stamp}"
        run_dir, k = base, 1
        while run_dir.exists():
            run_dir = base.with_name(f"{base.name}-{k}")
            k += 1
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def run_pipeline(config: PipelineConfig | str | Path | dict, *, dataset: str | Path | None = None,
                 out: str | Path | None = None, device: str | None = None,
                 overrides: list[str] | None = None, resume: str | Path | None = None,
                 verbose=None) -> RunResult:
    """Run a pipeline end to end and write its run folder.

    A ``kind = "encoding"`` pipeline is handed to :func:`bcikit.encoding.pipeline.run_encoding`
    (and returns its :class:`~bcikit.encoding.pipeline.EncodingRun`).

    Parameters
    ----------
    config : PipelineConfig, path or dict
        The pipeline (a ``pipelines/*.toml`` file, or its content).
    dataset : path or None
        A dataset card (``datasets/*.toml``) or a BIDS root; None uses the pipeline's simulator.
    out : path or None
        The run folder (must not exist or be empty); default ``<output.dir>/<name>-<time>``.
    device : str or None
        Overrides ``[train] device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
    overrides : list of str
        ``section.field=value`` overrides (the CLI's ``--set``).
    resume : path or None
        Continue an interrupted run in that folder (its own config and dataset are used).

    Returns
    -------
    RunResult
    """
    if resume is not None:
        run_dir = Path(resume)
        state_file = run_dir / "run.json"
        if not state_file.exists():
            raise FileNotFoundError(f"{str(run_dir)!r} is not a bcikit run folder (no run.json).")
        state = json.loads(state_file.read_text())
        cfg = load_config(run_dir / "config.toml")
        dataset = state.get("dataset")
        device = device or state.get("device")
    else:
        if isinstance(config, PipelineConfig):
            cfg = config
            if overrides:
                from .config import apply_overrides

                cfg = validate_config(apply_overrides(cfg.to_dict(), overrides), source=cfg.source)
        elif isinstance(config, dict):
            from .config import apply_overrides

            cfg = validate_config(apply_overrides(config, overrides), source="<dict>")
        else:
            cfg = load_config(config, overrides)
        run_dir = _new_run_dir(cfg, out)
        state = {"dataset": None if dataset is None else str(dataset), "device": device,
                 "started": datetime.now().isoformat(timespec="seconds"),
                 "world_size": _world_size()}
        if _rank() == 0:
            (run_dir / "config.toml").write_text(cfg.to_toml())
            (run_dir / "run.json").write_text(json.dumps(state, indent=1))
    if cfg.kind == "encoding":
        if resume is not None:
            raise ValueError(f"{str(resume)!r}: encoding runs cannot be resumed; start a new run "
                             f"(the simulation is cached, so only the fits are repeated).")
        from .encoding.pipeline import run_encoding

        return run_encoding(cfg, run_dir, dataset=dataset, device=device, verbose=verbose)
    device = device or cfg.train.device

    from .data.protocols import get_protocol

    t_start = time.perf_counter()
    sets, source = load_data(cfg, dataset, verbose=verbose)
    protocol = get_protocol(cfg.evaluate.protocol, **cfg.evaluate.params)
    jobs = [(seed, ts, split) for seed in cfg.evaluate.seeds for ts in sets
            for split in protocol.split(ts)]
    if not jobs:
        raise ValueError(f"{cfg.source}: the protocol {cfg.evaluate.protocol!r} produced no split.")
    splits_dir = run_dir / "splits"
    splits_dir.mkdir(parents=True, exist_ok=True)
    writer = _rank() == 0  # under torchrun, rank 0 alone writes files
    rows, histories, predictions = [], [], []
    used_device = device
    n_deployed = None
    cm_total = None
    n_params = None
    bar = progress(jobs, desc=f"{cfg.pipeline.name}", verbose=verbose)
    for seed, ts, split in bar:
        tag = f"seed{seed}_{_safe(split.name)}"
        done_file = splits_dir / f"{tag}.json"
        if done_file.exists():
            res = json.loads(done_file.read_text())
            res["y_true"], res["pred"] = np.array(res["y_true"]), np.array(res["pred"])
            hist = pd.read_csv(splits_dir / f"{tag}_history.csv") \
                if (splits_dir / f"{tag}_history.csv").exists() else None
        else:
            ckpt = run_dir / "checkpoints" / tag if cfg.output.checkpoint else None
            if ckpt is not None and writer:
                ckpt.mkdir(parents=True, exist_ok=True)
            fitted = _fit_split(cfg, ts, split, seed, device=device, ckpt_dir=ckpt,
                                verbose=False if verbose is None else verbose)
            subject = split.group if split.group is not None else \
                "|".join(pd.unique(fitted["test_meta"]["subject"].astype(str)))
            res = {"seed": seed, "split": split.name, "subject": subject,
                   "y_true": fitted["y_true"].tolist(), "pred": fitted["pred"].tolist(),
                   "n_classes": fitted["n_classes"], "n_train": fitted["n_train"],
                   "n_valid": fitted["n_valid"], "n_test": fitted["n_test"],
                   "fit_seconds": fitted["fit_seconds"], "n_params": fitted["n_params"],
                   "best_epoch": fitted.get("best_epoch"),
                   "n_params_deployed": fitted.get("n_params_deployed"), "device": fitted.get("device", "cpu")}
            hist = fitted["history"]
            if writer:
                if hist is not None:
                    hist.to_csv(splits_dir / f"{tag}_history.csv", index=False)
                tmp = done_file.with_suffix(".tmp")
                tmp.write_text(json.dumps(res))
                tmp.replace(done_file)
            res["y_true"], res["pred"] = np.asarray(res["y_true"]), np.asarray(res["pred"])
        from .evaluate import classification_metrics, confusion

        m = classification_metrics(res["y_true"], res["pred"], metrics=cfg.evaluate.metrics,
                                   n_classes=res["n_classes"])
        rows.append({"seed": res["seed"], "split": res["split"], "subject": res["subject"],
                     "n_train": res["n_train"], "n_valid": res["n_valid"],
                     "n_test": res["n_test"], "fit_seconds": res["fit_seconds"],
                     **{k: v for k, v in m.items() if not isinstance(v, list)}})
        cm = confusion(res["y_true"], res["pred"], res["n_classes"])
        cm_total = cm if cm_total is None else cm_total + cm
        n_params = res.get("n_params") or n_params
        n_deployed = res.get("n_params_deployed") or n_deployed
        used_device = res.get("device", device)
        if hist is not None:
            hist = hist.copy()
            hist.insert(0, "split", f"seed{seed}/{split.name}")
            histories.append(hist)
        predictions.append(pd.DataFrame({"seed": res["seed"], "split": res["split"],
                                         "subject": res["subject"], "y_true": res["y_true"],
                                         "y_pred": res["pred"]}))
        bar.set_postfix(acc=f"{rows[-1].get('accuracy', float('nan')):.2f}")
    scores = pd.DataFrame(rows)
    classes = sets[0].classes or [str(k) for k in range(cm_total.shape[0])]
    if not writer:
        return RunResult(run_dir, {}, scores)
    metrics = _write_outputs(run_dir, cfg, sets, source, protocol, scores, histories, predictions,
                             cm_total, classes, n_params, used_device, time.perf_counter() - t_start,
                             n_deployed)
    return RunResult(run_dir, metrics, scores)


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("bcikit-neuro", "torch", "mne", "braindecode", "scikit-learn", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _write_outputs(run_dir, cfg, sets, source, protocol, scores, histories, predictions, cm,
                   classes, n_params, device, seconds, n_deployed=None) -> dict:
    from .evaluate import chance_threshold, summarise
    from .evaluate.figures import plot_confusion, plot_learning_curves, plot_per_subject

    figures = run_dir / "figures"
    summary = {m: summarise(scores, m) for m in cfg.evaluate.metrics if m in scores}
    n_test_total = int(scores.loc[scores["seed"] == scores["seed"].iloc[0], "n_test"].sum())
    chance = chance_threshold(n_test_total, len(classes))
    ts0 = sets[0]
    data_desc = {
        "source": source, "n_trials": int(sum(len(s) for s in sets)),
        "subjects": sorted({s for t in sets for s in t.subjects}), "classes": list(classes),
        "n_chans": [t.n_chans for t in sets], "sfreq": [t.sfreq for t in sets],
        "n_times": [t.n_times for t in sets],
    }
    metrics = {
        "pipeline": cfg.pipeline.name, "model": cfg.model.name, "n_params": n_params,
        "n_params_deployed": n_deployed,
        "protocol": cfg.evaluate.protocol, "protocol_description": protocol.describe(),
        "seeds": cfg.evaluate.seeds, "data": data_desc, "summary": summary,
        "chance_level": 1.0 / len(classes), "chance_threshold_p05": chance,
        "confusion": cm.tolist(), "device": str(device), "seconds": seconds,
        "versions": _versions(),
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    scores.to_csv(run_dir / "scores.csv", index=False)
    pd.concat(predictions, ignore_index=True).to_csv(run_dir / "predictions.csv", index=False)
    figs = []
    if histories:
        history = pd.concat(histories, ignore_index=True)
        history.to_csv(run_dir / "history.csv", index=False)
        figs.append(plot_learning_curves(history, figures / "learning_curves.png"))
    else:
        pd.DataFrame(columns=["split", "epoch"]).to_csv(run_dir / "history.csv", index=False)
    figs.append(plot_confusion(cm, classes, figures / "confusion_matrix.png"))
    if "accuracy" in summary:
        figs.append(plot_per_subject(summary["accuracy"]["per_subject"], chance=1 / len(classes),
                                     path=figures / "per_subject.png",
                                     title=f"{cfg.pipeline.name}: test accuracy per subject"))
    _write_report(run_dir, cfg, metrics, scores, figs, ts0)
    logger.info("run folder: %s", run_dir)
    return metrics


def _write_report(run_dir, cfg, metrics, scores, figs, ts0) -> None:
    s = metrics["summary"]
    lines = [f"# {cfg.pipeline.name}", "", cfg.pipeline.description or "", "",
             "## Data", "",
             f"- source: {metrics['data']['source']}",
             f"- trials: {metrics['data']['n_trials']}, subjects: "
             f"{', '.join(metrics['data']['subjects'])}",
             f"- classes: {', '.join(metrics['data']['classes'])}",
             f"- channels: {metrics['data']['n_chans']}, sampling rate: {metrics['data']['sfreq']} Hz, "
             f"samples per trial: {metrics['data']['n_times']}",
             "", "## Protocol", "", f"- {metrics['protocol_description']}",
             f"- seeds: {metrics['seeds']}",
             f"- preprocessing (fitted on training splits only): bandpass "
             f"{cfg.preprocess.bandpass}, resample {cfg.preprocess.resample}, alignment "
             f"{cfg.preprocess.alignment}, scale {cfg.preprocess.scale}",
             "", "## Model", "", f"- {cfg.model.name} {cfg.model.params or ''}",
             (f"- trainable parameters: {metrics['n_params']:,}"
              + (f" (deployed: {metrics['n_params_deployed']:,})"
                 if metrics.get("n_params_deployed") else ""))
             if metrics["n_params"] else "- classical baseline (scikit-learn)",
             f"- device: {metrics['device']}", "", "## Results", ""]
    if "accuracy" in s:
        acc = s["accuracy"]
        lines += [f"**Test accuracy {acc['mean']:.3f} ± {acc['std_over_seeds']:.3f}** "
                  f"(mean of per-subject accuracies, ± std over {len(metrics['seeds'])} seed(s)); "
                  f"chance {metrics['chance_level']:.3f}, p<0.05 binomial threshold "
                  f"{metrics['chance_threshold_p05']:.3f}.", "",
                  "| subject | accuracy (mean) | std over seeds |", "|---|---|---|"]
        lines += [f"| {k} | {v['mean']:.3f} | {v['std']:.3f} |"
                  for k, v in acc["per_subject"].items()]
    others = [m for m in s if m != "accuracy"]
    if others:
        lines += ["", "| metric | mean | std over seeds |", "|---|---|---|"]
        lines += [f"| {m} | {s[m]['mean']:.3f} | {s[m]['std_over_seeds']:.3f} |" for m in others]
    lines += ["", "## Figures", ""]
    lines += [f"![{Path(f).stem}](figures/{Path(f).name})" for f in figs]
    lines += ["", f"Run time {metrics['seconds']:.1f} s. Versions: "
              + ", ".join(f"{k} {v}" for k, v in metrics["versions"].items()), ""]
    (run_dir / "report.md").write_text("\n".join(lines))
