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
    sets, source, _ = load_data_context(cfg, dataset, verbose=verbose)
    return sets, source


def load_data_context(cfg: PipelineConfig, dataset: str | Path | None = None, *, verbose=None):
    """:func:`load_data` plus what intracranial pipelines need besides the trials.

    Returns
    -------
    sets : list of TrialSet
    source : str
    context : bcikit.pretrain.SEEGContext or None
        For the ``seeg_words`` simulator: its pre-training recordings and electrodes tables
        (one TrialSet per subject in ``sets``); for a dataset card with ``[regions]`` tables and
        ``[preprocess] channels = "region"``: the card's region map.
    """
    from .data import TrialSet

    context = None
    if dataset is None:
        from . import simulate

        params = dict(cfg.data.simulate)
        if cfg.data.simulator == "seeg_words":
            from .pretrain import SEEGContext

            params.setdefault("random_state", 0)  # reproducible: --init runs regenerate it
            try:
                sim = simulate.make_seeg_words(**params)
            except TypeError as err:
                raise ValueError(f"{cfg.source}: [data.simulate] {err}") from None
            subjects = sim.subjects
            if cfg.data.subjects is not None:
                unknown = [s for s in cfg.data.subjects if s not in sim.subjects]
                if unknown:
                    raise ValueError(f"{cfg.source}: [data] subjects {unknown} are not simulated "
                                     f"(the simulator makes {sim.subjects}).")
                subjects = list(cfg.data.subjects)
            ts = {s: sim.trials[s] for s in subjects}
            context = SEEGContext(recordings={s: sim.pretrain[s] for s in subjects},
                                  electrodes={s: sim.electrodes[s] for s in subjects},
                                  info={"truth": {s: sim.truth[s] for s in subjects},
                                        "params": sim.params})
        else:
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
        if cfg.kind == "decoding" and cfg.preprocess.channels == "region" \
                and str(dataset).endswith(".toml"):
            from .io.cards import load_card
            from .pretrain import SEEGContext

            context = SEEGContext(region_map=load_card(dataset).regions or None)
    sets = [ts] if isinstance(ts, TrialSet) else list(ts.values())
    sets = [select_classes(s, cfg.data.classes, source=cfg.source) for s in sets]
    if cfg.data.window is not None:
        sets = [crop_window(s, *cfg.data.window, source=cfg.source) for s in sets]
    return sets, source, context


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


class _LastState:
    """Trainer callback: a CPU copy of the weights after each epoch (the last epoch's score is
    reported next to the selected epoch's)."""

    def __init__(self):
        self.state, self.epoch = None, 0

    def on_epoch_end(self, trainer, epoch, logs) -> None:
        self.state = {k: v.detach().to("cpu", copy=True)
                      for k, v in trainer.model.state_dict().items()}
        self.epoch = epoch


def _fit_split(cfg: PipelineConfig, ts, split, seed: int, *, device: str, ckpt_dir: Path | None,
               verbose=None, context=None, init=None) -> dict:
    """Fit on the split's training (+validation) trials and predict its test trials once.

    ``context`` (:class:`bcikit.pretrain.SEEGContext`) gives the channels' regions for
    ``[preprocess] channels``; ``init`` (:class:`bcikit.pretrain.PretrainInit`) the
    pre-training a DuIN classifier starts from. Channel selection, then the other transforms,
    are fitted on the training split only (inside a LeakGuard on the test trials).
    """
    from .data.protocols import apply_split
    from .data.transforms import LeakGuard, make_transforms
    from .models import count_parameters, get_model, is_classical

    train, valid, test = apply_split(ts, split)
    out: dict[str, Any] = {"history": None}
    with LeakGuard(test):
        if cfg.preprocess.channels != "all":
            from .pretrain import channel_selector

            selector = channel_selector(cfg, context)
            selector.fit(train)  # ranking / region choice from the training split only
            train, valid, test = (selector.transform(t) if len(t) else t
                                  for t in (train, valid, test))
            out["selector"] = selector
        transforms = make_transforms(_preprocess_config(cfg))
        transforms.fit(train)  # fitted on the training split only
    train, valid, test = (transforms.transform(t) if len(t) else t for t in (train, valid, test))
    if cfg.preprocess.channels != "all":
        out["channels"] = list(train.ch_names)
    n_classes = len(ts.classes) if ts.classes else int(np.max(ts.y)) + 1
    t0 = time.perf_counter()
    if is_classical(cfg.model.name):
        from .data import TrialSet

        has_rate = train.info is not None and hasattr(train.info, "ch_names")
        est = get_model(cfg.model.name, sfreq=train.sfreq if has_rate else None,
                        **cfg.model.params)
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
        if init is not None:
            from .pretrain import init_classifier

            subject = split.group if split.group is not None else train.subjects[0]
            out["init"] = init_classifier(
                model, init, str(subject), list(train.ch_names),
                subject_layer=cfg.preprocess.channels != "contribution")
        t = cfg.train
        optimizer: Any = t.optimizer
        scheduler: Any = None if t.scheduler == "none" else t.scheduler
        if t.recipe == "duin":  # spec §2.5: AdamW without decay on 1-D, warm-up + half cosine
            from .train.duin_recipe import duin_optimizer, duin_scheduler

            optimizer, scheduler = duin_optimizer(), duin_scheduler(t.warmup_epochs, t.lr_min)
        patience, callbacks = t.patience, []
        last = None
        if t.selection == "best":
            if not len(valid):
                raise ValueError(f"{cfg.source}: [train] selection = 'best' picks the epoch on "
                                 f"the validation split, but the protocol's split "
                                 f"{split.name!r} has no validation trials.")
            # restore the best validation epoch without stopping early
            patience = t.patience if t.patience is not None else t.epochs + 1
            last = _LastState()
            callbacks.append(last)
        trainer = Trainer(model, epochs=t.epochs, batch_size=t.batch_size, lr=t.lr,
                          optimizer=optimizer, weight_decay=t.weight_decay,
                          scheduler=scheduler, patience=patience, monitor=t.monitor,
                          device=device, precision=t.precision, seed=seed,
                          checkpoint_dir=ckpt_dir, keep_on_device=t.keep_on_device,
                          grad_clip=t.grad_clip, callbacks=callbacks, verbose=verbose)
        if len(valid):
            trainer.fit(train.X, train.y, valid.X, valid.y)
        else:
            trainer.fit(train.X, train.y)
        proba = trainer.predict_proba(test.X)
        pred = proba.argmax(axis=1)
        if last is not None and last.state is not None:
            out["last_epoch"] = int(last.epoch)
            if last.epoch == trainer.best_epoch_:
                out["accuracy_last"] = float(np.mean(pred == test.y))
        out["history"] = pd.DataFrame(trainer.history_)
        out["n_params"] = count_parameters(model)
        if hasattr(model, "count_parameters"):  # e.g. MVCNet: deployed part vs training total
            try:
                out["n_params_deployed"] = int(model.count_parameters("deployed"))
            except ValueError:  # a model without a separately deployed part (DuIN)
                pass
        out["best_epoch"] = int(getattr(trainer, "best_epoch_", -1))
        out["device"] = str(trainer.device_)
        if ckpt_dir is not None and _rank() == 0:
            torch.save(model.state_dict(), Path(ckpt_dir) / "model.pt")
        if last is not None and last.state is not None and "accuracy_last" not in out:
            model.load_state_dict(last.state)  # the last epoch, scored for the report only
            pred_last = trainer.predict_proba(test.X).argmax(axis=1)
            out["accuracy_last"] = float(np.mean(pred_last == test.y))
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
        if cfg.kind == "decoding" and cfg.pretrain is not None and cfg.pretrain.init \
                and cfg.pretrain.stages and cfg.pretrain.source == "separate":
            from .pretrain import load_pretraining

            load_pretraining(cfg.pretrain.init, cfg.pretrain.stages)  # fail before a run folder
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
    if cfg.pretrain is not None or cfg.preprocess.channels != "all" or (
            dataset is None and cfg.data.simulator == "seeg_words"):
        sets, source, context = load_data_context(cfg, dataset, verbose=verbose)
    else:
        sets, source = load_data(cfg, dataset, verbose=verbose)
        context = None
    protocol = get_protocol(cfg.evaluate.protocol, **cfg.evaluate.params)
    jobs = [(seed, ts, split) for seed in cfg.evaluate.seeds for ts in sets
            for split in protocol.split(ts)]
    if not jobs:
        raise ValueError(f"{cfg.source}: the protocol {cfg.evaluate.protocol!r} produced no split.")
    init_for, extra = _prepare_pretraining(cfg, run_dir, sets, context, jobs, source,
                                           device=device, verbose=verbose)
    if cfg.pretrain is not None and cfg.pretrain.stage == "pretrain":
        metrics = {"pipeline": cfg.pipeline.name, "model": cfg.model.name, "stage": "pretrain",
                   **extra, "seconds": time.perf_counter() - t_start, "versions": _versions()}
        if _rank() == 0:
            (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, default=str))
            _write_pretrain_report(run_dir, cfg, metrics)
        return RunResult(run_dir, metrics, pd.DataFrame())
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
                                verbose=False if verbose is None else verbose,
                                context=context, init=init_for(ts, split))
            subject = split.group if split.group is not None else \
                "|".join(pd.unique(fitted["test_meta"]["subject"].astype(str)))
            res = {"seed": seed, "split": split.name, "subject": subject,
                   "y_true": fitted["y_true"].tolist(), "pred": fitted["pred"].tolist(),
                   "n_classes": fitted["n_classes"], "n_train": fitted["n_train"],
                   "n_valid": fitted["n_valid"], "n_test": fitted["n_test"],
                   "fit_seconds": fitted["fit_seconds"], "n_params": fitted["n_params"],
                   "best_epoch": fitted.get("best_epoch"),
                   "n_params_deployed": fitted.get("n_params_deployed"), "device": fitted.get("device", "cpu"),
                   "accuracy_last": fitted.get("accuracy_last"),
                   "last_epoch": fitted.get("last_epoch"), "channels": fitted.get("channels"),
                   "init": fitted.get("init")}
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
                     **{k: v for k, v in m.items() if not isinstance(v, list)},
                     **{k: res[k] for k in ("best_epoch", "accuracy_last")
                        if res.get(k) is not None and cfg.train.selection == "best"}})
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
    if cfg.evaluate.oracle:
        extra = {**extra, **_oracle_entry(cfg, dataset, verbose)}
    metrics = _write_outputs(run_dir, cfg, sets, source, protocol, scores, histories, predictions,
                             cm_total, classes, n_params, used_device, time.perf_counter() - t_start,
                             n_deployed, extra)
    return RunResult(run_dir, metrics, scores)


# --------------------------------------------------------------------------- simulator oracle
def _oracle_entry(cfg: PipelineConfig, dataset, verbose) -> dict:
    """``{"oracle": ...}`` for metrics.json: the motor-imagery simulator's oracle for the
    simulated data and classes (nothing for recorded data, which have no oracle)."""
    if dataset is not None:
        logger.info("[evaluate] oracle: recorded data have no oracle; skipped")
        return {}
    from .simulate import motor_imagery_oracle

    params = dict(cfg.data.simulate)
    key = json.dumps([params, cfg.data.classes, cfg.data.window], sort_keys=True, default=str)
    if key not in _ORACLES:  # run_and_compare runs several pipelines on the same data
        oracle = motor_imagery_oracle(**params, classes=cfg.data.classes,
                                      window=cfg.data.window, verbose=verbose)
        _ORACLES[key] = oracle.to_dict()
    return {"oracle": _ORACLES[key]}


_ORACLES: dict[str, dict] = {}


# --------------------------------------------------------------------------- Du-IN pre-training
def _prepare_pretraining(cfg: PipelineConfig, run_dir: Path, sets, context, jobs, source: str,
                         *, device, verbose):
    """Run or load the ``[pretrain]`` stages (see :mod:`bcikit.pretrain`).

    Returns ``(init_for, extra)``: ``init_for(ts, split)`` gives the
    :class:`~bcikit.pretrain.PretrainInit` a split's classifier starts from (None: from scratch),
    ``extra`` the ``init`` / ``pretrain`` entries of metrics.json.
    """
    pre = cfg.pretrain
    if pre is None:
        return (lambda ts, split: None), {}
    if not pre.stages:
        return (lambda ts, split: None), {"init": {"mode": "scratch", "from": None,
                                                   "stages": []}}
    from .pretrain import (PRETRAIN_DIR, check_init, load_pretraining, pretraining_channels,
                           run_pretraining, safe_name)

    if _world_size() > 1 and pre.init is None:
        raise ValueError(f"{cfg.source}: pre-train on one process (--stage pretrain), then "
                         f"fine-tune under torchrun with --stage finetune --init RUN_DIR.")
    init_dir = Path(pre.init) if pre.init is not None else run_dir
    info = {"mode": pre.stages[-1], "from": str(init_dir), "stages": list(pre.stages),
            "source": pre.source, "reused": pre.init is not None}
    subjects = [str(ts.subjects[0]) for ts in sets]
    if pre.source == "separate":
        if context is None or not context.recordings:
            raise ValueError(f"{cfg.source}: [pretrain] source = 'separate' needs unlabelled "
                             f"recordings; the seeg_words simulator provides them, {source!r} "
                             f"does not. Use source = \"train_runs\" or stages = [].")
        for ts in sets:
            if len(ts.subjects) != 1:
                raise ValueError(f"{cfg.source}: Du-IN pre-training needs one TrialSet per "
                                 f"subject; got one holding {ts.subjects}.")
        recordings = {s: context.recordings[s] for s in subjects}
        _check_disjoint(recordings, sets, cfg.source)
        expected = {s: pretraining_channels(cfg, context, recordings[s]) for s in subjects}
        if pre.init is None:
            run_pretraining(cfg, recordings, run_dir / PRETRAIN_DIR, channels=expected,
                            device=device, description=source, verbose=verbose)
        init = load_pretraining(init_dir, pre.stages)
        check_init(init, cfg, expected)
        info["checkpoint"] = str(init.checkpoint)
        return (lambda ts, split: init), {"init": info, "pretrain": init.metrics}

    # source = "train_runs": once per split, on that split's training trials only
    from .data.protocols import apply_split

    cache: dict[str, Any] = {}
    pretrain_metrics: dict[str, Any] = {}

    def init_for(ts, split):
        tag = safe_name(split.name)
        if tag in cache:
            return cache[tag]
        train = apply_split(ts, split)[0]
        subject = str(train.subjects[0])
        expected = {subject: pretraining_channels(cfg, context, train)}
        if pre.init is None and not (run_dir / PRETRAIN_DIR / tag / pre.stages[-1]
                                     / "model.pt").exists():
            run_pretraining(cfg, {subject: train}, run_dir / PRETRAIN_DIR / tag,
                            channels=expected, device=device,
                            description=f"{source}: training trials of split {split.name}",
                            verbose=verbose)
        init = load_pretraining(init_dir, pre.stages, split=tag)
        check_init(init, cfg, expected)
        cache[tag] = init
        pretrain_metrics[tag] = init.metrics
        return init

    if pre.stage == "pretrain":
        for _, ts, split in jobs:
            init_for(ts, split)
    return init_for, {"init": info, "pretrain": pretrain_metrics}


def _check_disjoint(recordings: dict, sets, source: str) -> None:
    """Refuse pre-training recordings that share a (subject, session, run) with the trials."""
    def keys(ts):
        m = ts.meta
        return set(zip(m["subject"].astype(str), m["session"].astype(str), m["run"].astype(str)))

    trial_keys = set().union(*(keys(ts) for ts in sets))
    for subject, rec in recordings.items():
        common = keys(rec) & trial_keys
        if common:
            raise ValueError(f"{source}: the pre-training recordings of {subject!r} share "
                             f"(subject, session, run) {sorted(common)[:3]} with the downstream "
                             f"trials; pre-training must not see validation or test runs.")


def _write_pretrain_report(run_dir: Path, cfg: PipelineConfig, metrics: dict) -> None:
    lines = [f"# {cfg.pipeline.name}: pre-training", "", cfg.pipeline.description or "", "",
             f"- stages: {cfg.pretrain.stages}, source: {cfg.pretrain.source}",
             f"- checkpoints: {PRETRAIN_SUBDIR}/<stage>/model.pt; fine-tune with "
             f"`bcikit run <pipeline> --stage finetune --init {run_dir}`", ""]
    pre = metrics.get("pretrain") or {}
    groups = {"": pre} if "held_out" in pre else pre
    for name, m in groups.items():
        h = (m or {}).get("held_out", {})
        if not h:
            continue
        lines.append(f"## held-out crops {name}".rstrip())
        lines.append("")
        for key in ("codes_used_fraction", "perplexity", "ema_dead_codes",
                    "ema_top_code_share", "rec_mse", "channel_mean_mse",
                    "masked_code_accuracy", "majority_code_rate"):
            if key in h:
                lines.append(f"- {key}: {h[key]:.4g}")
        lines.append("")
    (run_dir / "report.md").write_text("\n".join(lines))


PRETRAIN_SUBDIR = "pretrain"


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
                   classes, n_params, device, seconds, n_deployed=None, extra=None) -> dict:
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
    if cfg.train.selection == "best" and "accuracy_last" in scores:
        metrics["selection"] = "best validation epoch"
        metrics["accuracy_last_epoch"] = summarise(scores, "accuracy_last")
    if cfg.preprocess.channels != "all":
        metrics["channels"] = {"mode": cfg.preprocess.channels,
                               "regions": list(cfg.preprocess.regions),
                               "n_channels": cfg.preprocess.n_channels}
    metrics.update(extra or {})
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
             f"- device: {metrics['device']}"]
    init = metrics.get("init")
    if init:
        lines.append(f"- initialisation: {init['mode']}"
                     + (f" from the pre-training in {init['from']}" if init.get("from") else
                        " (no pre-training)"))
        held = (metrics.get("pretrain") or {}).get("held_out", {})
        if held:
            lines.append(f"- pre-training, held-out crops: {held.get('codes_used_fraction', 0):.1%}"
                         f" of the codes used, reconstruction MSE {held.get('rec_mse', 0):.3g} "
                         f"(each crop's channel means: {held.get('channel_mean_mse', 0):.3g})"
                         + (f", masked-code accuracy {held['masked_code_accuracy']:.3f} "
                            f"(majority code {held.get('majority_code_rate', 0):.3f})"
                            if "masked_code_accuracy" in held else ""))
    if metrics.get("channels"):
        c = metrics["channels"]
        lines.append(f"- channels: {c['mode']} ({c['regions'] if c['mode'] == 'region' else c['n_channels']}"
                     f"), chosen on each training split")
    lines += ["", "## Results", ""]
    if "accuracy" in s:
        acc = s["accuracy"]
        lines += [f"**Test accuracy {acc['mean']:.3f} ± {acc['std_over_seeds']:.3f}** "
                  f"(mean of per-subject accuracies, ± std over {len(metrics['seeds'])} seed(s)); "
                  f"chance {metrics['chance_level']:.3f}, p<0.05 binomial threshold "
                  f"{metrics['chance_threshold_p05']:.3f}.", "",
                  "| subject | accuracy (mean) | std over seeds |", "|---|---|---|"]
        lines += [f"| {k} | {v['mean']:.3f} | {v['std']:.3f} |"
                  for k, v in acc["per_subject"].items()]
        if metrics.get("oracle"):
            o = metrics["oracle"]
            lines += ["", f"Simulator oracle: {o['mean']:.3f} (95 % CI {o['ci95'][0]:.3f}-"
                          f"{o['ci95'][1]:.3f}): {o['method']}. A decoder of the sensor data "
                          f"should not beat it."]
        if metrics.get("accuracy_last_epoch"):
            lines += ["", f"Model selection: the best validation epoch; the last epoch scores "
                          f"{metrics['accuracy_last_epoch']['mean']:.3f} (reported, not selected)."]
    others = [m for m in s if m != "accuracy"]
    if others:
        lines += ["", "| metric | mean | std over seeds |", "|---|---|---|"]
        lines += [f"| {m} | {s[m]['mean']:.3f} | {s[m]['std_over_seeds']:.3f} |" for m in others]
    lines += ["", "## Figures", ""]
    lines += [f"![{Path(f).stem}](figures/{Path(f).name})" for f in figs]
    lines += ["", f"Run time {metrics['seconds']:.1f} s. Versions: "
              + ", ".join(f"{k} {v}" for k, v in metrics["versions"].items()), ""]
    (run_dir / "report.md").write_text("\n".join(lines))
