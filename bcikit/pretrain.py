"""Du-IN pre-training inside ``bcikit run``: the VQ-VAE and masked-code stages, their checkpoints,
and the initialisation of each split's classifier from them (``specs/duin.md`` §2.2-2.5, §3).

A Du-IN pipeline is an ordinary decoding pipeline (``[model] name = "DuIN"``) with a
``[pretrain]`` section:

``stages``
    ``["vqvae", "mae"]`` (MAE initialisation, the spec's main variant), ``["vqvae"]`` (VQ-VAE
    initialisation) or ``[]`` (from scratch).
``stage``
    What this invocation does: ``"all"`` (pre-train, then fine-tune every split),
    ``"pretrain"`` (stop after pre-training) or ``"finetune"`` (reuse ``init``).
``init``
    A run folder whose ``pretrain/`` checkpoints are reused (no pre-training in this run).
``source``
    ``"separate"``: the unlabelled recordings that come with the data (the simulator's
    ``SEEGWords.pretrain``, separate sessions: no downstream trial can be in them; a run that
    shares a (subject, session, run) with the trials is refused). ``"train_runs"`` (opt-in):
    the training trials of each split only (never its validation or test runs), so
    pre-training runs once per split, on that split's subject, with crops no longer than a trial.

Pre-training (:func:`run_pretraining`): one model over all subjects (one ``Linear(C_s -> 16)``
per subject). Each subject's recordings (60 s segments for the simulator) are split 80/10/10 by
segment (seeded): training segments feed the stages, validation segments give the validation
loss in ``history_<stage>.csv``, held-out test segments give the reported codebook usage,
reconstruction error (``rec_mse``, beside ``channel_mean_mse``: the error of predicting each
held-out crop by its own per-channel means, a stricter bar than the training mean) and
masked-code accuracy (beside the majority-code rate). Preprocessing (``[preprocess]`` band-pass,
resampling and the per-channel z-score) is fitted on each subject's training segments. An epoch
draws ``crops_per_segment`` random ``crop_seconds`` crops from every training segment, the start
uniform in ``[0, L - crop]`` (inclusive, so a segment of exactly one crop works); validation and
test crops tile each segment without overlap. The last epoch of each stage is kept (the spec's
``checkpoint-399``).

Channels. The classifier of subject ``s`` loads subject ``s``'s layer, so it must see the
channels pre-training saw:

- ``[preprocess] channels = "all"``: every channel, in both.
- ``"region"``: the channels of ``regions`` (from the electrodes table or the card's region
  map). The choice depends on channel names only (no labels), so pre-training takes exactly the
  channels that the selector fitted on each training split keeps; a mismatch is an error.
- ``"contribution"``: the ranking needs labels, so it is refitted inside each training split
  and pre-training sees every channel. Fine-tuning then loads the tokenizer and the Transformer
  and fits a fresh subject layer on the selected channels (the pre-trained layer's input was
  the full channel set).

Run folder: ``pretrain/manifest.json`` (subjects and their channels, segments used, settings),
``pretrain/vqvae/model.pt`` and ``pretrain/mae/model.pt`` (:func:`bcikit.models.duin.save_duin`,
plain config), ``pretrain/history_vqvae.csv``, ``pretrain/history_mae.csv`` and
``pretrain/metrics.json``. With ``source = "train_runs"`` the same layout sits in
``pretrain/<split>/``. A stage whose ``model.pt`` exists is not trained again (resuming a run
continues an interrupted stage from its Trainer checkpoint).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .utils import logger

__all__ = ["SEEGContext", "PretrainInit", "run_pretraining", "load_pretraining",
           "init_classifier", "channel_selector", "pretraining_channels", "split_segments",
           "CropLoss", "prepare_pretraining", "PRETRAIN_DIR", "MANIFEST"]

PRETRAIN_DIR = "pretrain"
MANIFEST = "manifest.json"
_FORMAT = 1
#: [model.params] keys that the pre-training stages share with the classifier
SHARED_MODEL_PARAMS = ("n_blocks", "tokenizer_activation", "dropout")
_PATCH = 100


# --------------------------------------------------------------------------- data context
@dataclass
class SEEGContext:
    """What an intracranial pipeline needs besides the trials.

    Attributes
    ----------
    recordings : dict of str to TrialSet or None
        Unlabelled pre-training recordings per subject (``source = "separate"``).
    electrodes : dict of str to DataFrame or None
        Electrodes tables with regions per subject (the simulator's).
    region_map : dict or None
        ``{subject: {region: [channels]}}`` (a dataset card's ``[regions]``).
    """

    recordings: dict | None = None
    electrodes: dict | None = None
    region_map: dict | None = None
    info: dict = field(default_factory=dict)


def channel_selector(cfg, context: SEEGContext | None, *, for_pretraining: bool = False):
    """The channel-selection transform of ``[preprocess] channels`` (None: keep every channel).

    ``for_pretraining``: the selector that picks the pre-training channels (None for
    ``"contribution"``, which is refitted on labelled training trials in fine-tuning only).
    """
    from .data.channel_selection import ContributionSelector, RegionSelector

    p = cfg.preprocess
    if p.channels == "all" or (p.channels == "contribution" and for_pretraining):
        return None
    if p.channels == "region":
        if context is None or (context.electrodes is None and not context.region_map):
            raise ValueError(f"{cfg.source}: [preprocess] channels = 'region' needs the channels' "
                             f"regions: the seeg_words simulator's electrodes tables, or a "
                             f"dataset card with [regions.<subject>] tables.")
        return RegionSelector(tuple(p.regions), electrodes=context.electrodes,
                              region_map=context.region_map or None)
    return ContributionSelector(p.n_channels)


def pretraining_channels(cfg, context: SEEGContext | None, ts) -> list[str]:
    """The channels pre-training uses for the subject of ``ts`` (names only, no labels)."""
    sel = channel_selector(cfg, context, for_pretraining=True)
    if sel is None:
        return list(ts.ch_names)
    return list(sel.fit(ts).channels_)


# --------------------------------------------------------------------------- segments, crops
def split_segments(n: int, subject: str, *, seed: int) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]:
    """80/10/10 split of a subject's ``n`` pre-training segments (seeded, at least one each).

    Returns sorted ``(train, valid, test)`` index arrays.

    Raises
    ------
    ValueError
        With fewer than 3 segments.
    """
    if n < 3:
        raise ValueError(f"Pre-training splits each subject's recordings 80/10/10 (train / "
                         f"validation / held-out test) and needs at least 3 segments; subject "
                         f"{subject!r} has {n}. Give more recordings (e.g. [data.simulate] "
                         f"pretrain_minutes >= 3).")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(0.1 * n)))
    n_valid = max(1, int(round(0.1 * n)))
    return (np.sort(perm[n_test + n_valid:]), np.sort(perm[n_test:n_test + n_valid]),
            np.sort(perm[:n_test]))


class CropLoss:
    """``loss(model, X, y)`` of the pre-training Trainers: crops segments, then
    ``model.training_loss(crops, y)``.

    ``X`` holds ``(segment, start)`` integer pairs (not signals): ``start = -1`` draws a start
    uniformly in ``[0, L - crop]`` (inclusive) from torch's global generator (seeded by the
    Trainer), so every epoch sees new crops; ``start >= 0`` takes that crop (validation / test
    tiles). ``y`` are subject codes.

    Parameters
    ----------
    data : Tensor (n_segments, C_max, L_max)
        Preprocessed segments, zero-padded to the widest subject and the longest segment.
    lengths : array of int (n_segments,)
        Each segment's own length.
    crop : int
        Crop length in samples.
    """

    def __init__(self, data, lengths, crop: int):
        import torch

        self.data = data
        self.lengths = torch.as_tensor(np.asarray(lengths, dtype=np.int64))
        self.crop = int(crop)
        self._on: dict[str, Any] = {}

    def _data_on(self, device):
        key = str(device)
        if key not in self._on:
            self._on = {key: self.data.to(device)}
        return self._on[key]

    def crops(self, X):
        """The crops ``(B, C_max, crop)`` of index pairs ``X`` ``(B, 2)``."""
        import torch

        data = self._data_on(X.device)
        seg = X[:, 0].long().cpu()
        start = X[:, 1].long().cpu()
        draw = start < 0
        if bool(draw.any()):
            room = self.lengths[seg[draw]] - self.crop + 1  # starts 0 .. L - crop
            start = start.clone()
            start[draw] = (torch.rand(int(draw.sum())) * room).long().clamp_max(room - 1)
        return torch.stack([data[s, :, a:a + self.crop]
                            for s, a in zip(seg.tolist(), start.tolist())])

    def __call__(self, model, X, y):
        return model.training_loss(self.crops(X), y)


@dataclass
class PretrainingData:
    """Preprocessed pre-training recordings of all subjects (see :func:`prepare_pretraining`)."""

    subjects: dict            # name -> n_chans (order = subject codes)
    channels: dict            # name -> channel names
    data: Any                 # Tensor (n_seg, C_max, L_max)
    lengths: np.ndarray
    codes: np.ndarray         # subject code per segment
    part: np.ndarray          # "train" | "valid" | "test" per segment
    segments: pd.DataFrame    # subject, session, run, segment, part, n_times
    crop: int
    sfreq: float

    def pairs(self, part: str, *, crops_per_segment: int | None = None) -> tuple[np.ndarray,
                                                                                   np.ndarray]:
        """``(X, y)`` for the Trainer: ``train`` random crops (start -1, ``crops_per_segment``
        per segment), ``valid``/``test`` non-overlapping tiles."""
        rows, codes = [], []
        for i in np.flatnonzero(self.part == part):
            if part == "train":
                k = crops_per_segment or max(1, int(self.lengths[i]) // self.crop)
                rows += [(i, -1)] * k
                codes += [self.codes[i]] * k
            else:
                starts = range(0, int(self.lengths[i]) - self.crop + 1, self.crop)
                rows += [(i, a) for a in starts]
                codes += [self.codes[i]] * len(starts)
        return np.asarray(rows, dtype=np.int64).reshape(-1, 2), np.asarray(codes, dtype=np.int64)


def prepare_pretraining(cfg, recordings: dict, channels: dict, *, seed: int) -> PretrainingData:
    """Pick each subject's pre-training channels, split its segments 80/10/10, fit the
    ``[preprocess]`` chain on the training segments and stack every subject's segments.

    Parameters
    ----------
    cfg : PipelineConfig
    recordings : dict of str to TrialSet
        Unlabelled recordings per subject (segments of any length >= the crop).
    channels : dict of str to list of str
        The channels to use per subject (:func:`pretraining_channels`).
    seed : int
        Seed of the segment split.
    """
    import torch

    from .data.channel_selection import _pick
    from .data.transforms import make_transforms
    from .pipeline import _preprocess_config

    prep = _preprocess_config(cfg)
    prep["alignment"] = None
    parts, rows, blocks = [], [], []
    subjects: dict[str, int] = {}
    sfreq = None
    for subject, ts in recordings.items():
        ts = _pick(ts, channels[subject])
        tr, va, te = split_segments(len(ts), subject, seed=seed)
        transforms = make_transforms(prep)
        transforms.fit(ts.subset(tr))  # fitted on the training segments only
        ts = transforms.transform(ts)
        if sfreq is not None and ts.sfreq != sfreq:
            raise ValueError(f"Pre-training recordings of subject {subject!r} are at "
                             f"{ts.sfreq:g} Hz, others at {sfreq:g} Hz.")
        sfreq = ts.sfreq
        part = np.empty(len(ts), dtype=object)
        part[tr], part[va], part[te] = "train", "valid", "test"
        subjects[subject] = ts.n_chans
        blocks.append(np.asarray(ts.X, dtype=np.float32))
        parts.append(part)
        meta = ts.meta
        for i in range(len(ts)):
            rows.append({"subject": subject, "session": str(meta["session"].iloc[i]),
                         "run": str(meta["run"].iloc[i]),
                         "segment": str(meta["segment"].iloc[i]) if "segment" in meta
                         else str(i), "part": part[i], "n_times": ts.n_times,
                         "trial_index": int(meta["trial_index"].iloc[i])
                         if "trial_index" in meta else None})
    crop = int(round(cfg.pretrain.crop_seconds * sfreq))
    if crop % _PATCH:
        raise ValueError(f"{cfg.source}: [pretrain] crop_seconds = {cfg.pretrain.crop_seconds:g}"
                         f" gives {crop} samples at {sfreq:g} Hz; Du-IN needs a multiple of "
                         f"{_PATCH} (100 ms tokens at 1000 Hz).")
    c_max = max(subjects.values())
    l_max = max(b.shape[2] for b in blocks)
    if min(b.shape[2] for b in blocks) < crop:
        short = [s for s, b in zip(subjects, blocks) if b.shape[2] < crop]
        raise ValueError(f"{cfg.source}: [pretrain] crop_seconds = {cfg.pretrain.crop_seconds:g}"
                         f" is longer than the pre-training segments of {short} "
                         f"({min(b.shape[2] for b in blocks) / sfreq:g} s).")
    n = sum(len(b) for b in blocks)
    data = torch.zeros((n, c_max, l_max), dtype=torch.float32)
    lengths, codes = np.empty(n, np.int64), np.empty(n, np.int64)
    k = 0
    for code, b in enumerate(blocks):
        data[k:k + len(b), :b.shape[1], :b.shape[2]] = torch.from_numpy(b)
        lengths[k:k + len(b)] = b.shape[2]
        codes[k:k + len(b)] = code
        k += len(b)
    return PretrainingData(subjects=subjects, channels={s: list(channels[s]) for s in subjects},
                           data=data, lengths=lengths, codes=codes,
                           part=np.concatenate(parts).astype(str), segments=pd.DataFrame(rows),
                           crop=crop, sfreq=float(sfreq))


# --------------------------------------------------------------------------- pre-training
def _model_params(cfg) -> dict:
    return {k: v for k, v in cfg.model.params.items() if k in SHARED_MODEL_PARAMS}


def _settings(cfg) -> dict:
    p = cfg.pretrain
    return {"crop_seconds": p.crop_seconds, "epochs_vqvae": p.epochs_vqvae,
            "epochs_mae": p.epochs_mae, "batch_size_vqvae": p.batch_size_vqvae,
            "batch_size_mae": p.batch_size_mae, "crops_per_segment": p.crops_per_segment,
            "seed": p.seed, "vqvae_params": dict(p.vqvae_params),
            "mae_params": dict(p.mae_params), "model_params": _model_params(cfg),
            "channels": cfg.preprocess.channels, "regions": list(cfg.preprocess.regions),
            "preprocess": {"bandpass": cfg.preprocess.bandpass,
                           "resample": cfg.preprocess.resample, "scale": cfg.preprocess.scale},
            "source": p.source}


def _train_stage(stage: str, model, data: PretrainingData, cfg, out_dir: Path, *, device,
                 verbose) -> tuple[Any, pd.DataFrame]:
    from .models.duin import CodebookMonitor
    from .train import Trainer
    from .train.duin_recipe import trainer_kwargs

    p = cfg.pretrain
    epochs = p.epochs_vqvae if stage == "vqvae" else p.epochs_mae
    batch = p.batch_size_vqvae if stage == "vqvae" else p.batch_size_mae
    kw = trainer_kwargs(stage, epochs=epochs, warmup_epochs=int(epochs * 0.1), batch_size=batch)
    Xtr, ytr = data.pairs("train", crops_per_segment=p.crops_per_segment)
    Xva, yva = data.pairs("valid")
    monitor = CodebookMonitor()
    trainer = Trainer(model, loss=CropLoss(data.data, data.lengths, data.crop), device=device,
                      precision=cfg.train.precision, seed=p.seed,
                      checkpoint_dir=out_dir / stage / "ckpt", callbacks=[monitor],
                      keep_on_device=cfg.train.keep_on_device, grad_clip=cfg.train.grad_clip,
                      verbose=verbose, **kw)
    trainer.fit(Xtr, ytr, Xva, yva)
    history = pd.DataFrame(trainer.history_)
    if monitor.history_:
        history = history.merge(pd.DataFrame(monitor.history_), on="epoch", how="left")
    return trainer, history


def _held_out_metrics(vq, mae, data: PretrainingData, *, seed: int, device) -> dict:
    """Codebook usage, reconstruction error and masked-code accuracy on held-out test crops."""
    import torch

    X, codes = data.pairs("test")
    loss = CropLoss(data.data, data.lengths, data.crop)
    out: dict[str, Any] = {"n_test_crops": int(len(X)), "per_subject": {}}
    names = list(data.subjects)
    hist_all = None
    vq = vq.to(device).eval()
    for code, subject in enumerate(names):
        idx = np.flatnonzero(codes == code)
        if not idx.size:
            continue
        c = data.subjects[subject]
        hist = np.zeros(vq.quantizer.n_codes, dtype=np.int64)
        se = sse_mean = 0.0
        n_val = 0
        correct = total = 0
        with torch.no_grad():
            for start in range(0, idx.size, 32):
                xb = loss.crops(torch.as_tensor(X[idx[start:start + 32]])).to(device)
                sb = torch.full((len(xb),), code, dtype=torch.long, device=device)
                hist += vq.code_histogram(xb, sb)
                rec = vq(xb, sb)[:, :c].float()
                x = xb[:, :c].float()
                se += float(((rec - x) ** 2).sum())
                sse_mean += float(((x - x.mean(dim=2, keepdim=True)) ** 2).sum())
                n_val += x.numel()
                if mae is not None:
                    sc = mae.to(device).score_codes(xb, sb, seed=seed + start)
                    n_tok = sb.numel() * (xb.shape[2] // _PATCH)
                    correct += sc["accuracy"] * n_tok
                    total += n_tok
        per = {"n_crops": int(idx.size),
               "codes_used_fraction": float((hist > 0).mean()),
               "rec_mse": se / n_val, "channel_mean_mse": sse_mean / n_val}
        if mae is not None:
            per["masked_code_accuracy"] = correct / total
        out["per_subject"][subject] = per
        hist_all = hist if hist_all is None else hist_all + hist
    if hist_all is not None:
        out["codes_used_fraction"] = float((hist_all > 0).mean())
        out["majority_code_rate"] = float(hist_all.max() / max(hist_all.sum(), 1))
        share = hist_all[hist_all > 0] / max(hist_all.sum(), 1)
        out["perplexity"] = float(np.exp(-(share * np.log(share)).sum()))  # 1 = one code
        ps = out["per_subject"].values()
        out["rec_mse"] = float(np.mean([v["rec_mse"] for v in ps]))
        out["channel_mean_mse"] = float(np.mean([v["channel_mean_mse"] for v in ps]))
        if mae is not None:
            out["masked_code_accuracy"] = float(np.mean([v["masked_code_accuracy"] for v in ps]))
    usage = vq.codebook_usage()
    out["ema_dead_codes"] = int(usage["n_dead"])
    out["ema_used_fraction"] = float(usage["used_fraction"])
    out["ema_top_code_share"] = float(usage["top_share"])
    out["ema_perplexity"] = float(usage["perplexity"])
    out["n_codes"] = int(usage["n_codes"])
    return out


def run_pretraining(cfg, recordings: dict, out_dir: str | Path, *, channels: dict | None = None,
                    device: str | None = None, description: str = "",
                    verbose: bool | None = None) -> dict:
    """Pre-train the stages of ``[pretrain] stages`` on ``recordings`` and write ``out_dir``.

    Parameters
    ----------
    cfg : PipelineConfig
        A Du-IN pipeline (``[pretrain]`` present, ``stages`` not empty).
    recordings : dict of str to TrialSet
        Unlabelled recordings per subject (60 s segments, or training trials for
        ``source = "train_runs"``).
    out_dir : path
        ``RUN/pretrain`` (or ``RUN/pretrain/<split>``).
    channels : dict or None
        Channels per subject (default: :func:`pretraining_channels` of each recording).
    device : str or None
        Overrides ``[train] device``.
    description : str
        Where the recordings came from (kept in the manifest).
    verbose : bool or None
        Progress bars.

    Returns
    -------
    dict
        The metrics written to ``out_dir/metrics.json``.
    """
    from .models.duin import DuINMAE, DuINVQVAE, load_duin, save_duin
    from .train import set_seed

    p = cfg.pretrain
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if channels is None:
        channels = {s: list(ts.ch_names) for s, ts in recordings.items()}
    data = prepare_pretraining(cfg, recordings, channels, seed=p.seed)
    manifest = {"format": _FORMAT, "subjects": data.channels, "stages": list(p.stages),
                "crop_samples": data.crop, "sfreq": data.sfreq, "data": description,
                "settings": _settings(cfg),
                "segments": data.segments.to_dict(orient="records")}
    mpath = out_dir / MANIFEST
    if mpath.exists():  # resuming: the same data and settings, or stop
        old = json.loads(mpath.read_text())
        if old.get("subjects") != manifest["subjects"] or old.get("settings") != manifest[
                "settings"]:
            raise ValueError(f"{str(mpath)!r} was written for other subjects, channels or "
                             f"settings; bcikit never overwrites a pre-training. Use a new run "
                             f"folder.")
    else:
        mpath.write_text(json.dumps(manifest, indent=1, default=str))
    device = device or cfg.train.device
    shared = _model_params(cfg)
    models: dict[str, Any] = {}
    metrics: dict[str, Any] = {"stages": list(p.stages), "subjects": list(data.subjects),
                               "n_segments": {k: int((data.part == k).sum())
                                              for k in ("train", "valid", "test")},
                               "crop_samples": data.crop, "data": description}
    for stage in p.stages:
        path = out_dir / stage / "model.pt"
        if path.exists():
            models[stage] = load_duin(path)
            logger.info("pre-training: %s already trained (%s)", stage, path)
            continue
        set_seed(p.seed)
        if stage == "vqvae":
            model = DuINVQVAE(subjects=data.subjects, n_times=data.crop, sfreq=data.sfreq,
                              **shared, **p.vqvae_params)
        else:
            model = DuINMAE(vqvae=models["vqvae"], n_times=data.crop, sfreq=data.sfreq,
                            **shared, **p.mae_params)
        trainer, history = _train_stage(stage, model, data, cfg, out_dir, device=device,
                                        verbose=verbose)
        history.to_csv(out_dir / f"history_{stage}.csv", index=False)
        save_duin(model.cpu(), path)
        shutil.rmtree(out_dir / stage / "ckpt", ignore_errors=True)  # the stage is complete
        models[stage] = model
        metrics[f"seconds_{stage}"] = float(history["time"].sum())
        metrics[f"device_{stage}"] = str(trainer.device_)
    dev = _resolve(device)
    held = _held_out_metrics(models["vqvae"], models.get("mae"), data, seed=p.seed, device=dev)
    metrics["held_out"] = held
    for stage in p.stages:
        h = out_dir / f"history_{stage}.csv"
        if h.exists():
            last = pd.read_csv(h).iloc[-1]
            metrics[f"last_epoch_{stage}"] = {k: (None if pd.isna(v) else float(v))
                                              for k, v in last.items()}
    for m in models.values():
        m.cpu()
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, default=_plain))
    return metrics


def _resolve(device):
    from .train.trainer import resolve_device

    return resolve_device(device)


def _plain(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return str(v)


# --------------------------------------------------------------------------- reuse
@dataclass
class PretrainInit:
    """Pre-training checkpoints to initialise classifiers from (:func:`load_pretraining`).

    Attributes
    ----------
    run_dir : Path
        The run folder that holds them.
    directory : Path
        Its ``pretrain/`` (or ``pretrain/<split>/``) folder.
    mode : {"mae", "vqvae"}
        Which stage initialises the classifier.
    checkpoint : Path
    channels : dict of str to list of str
        The channels each subject's layer was trained on.
    manifest, metrics : dict
    """

    run_dir: Path
    directory: Path
    mode: str
    checkpoint: Path
    channels: dict
    manifest: dict
    metrics: dict
    _ckpt: dict | None = None

    def state(self) -> dict:
        """The checkpoint (read once, on the CPU)."""
        if self._ckpt is None:
            from .models.duin import _read_checkpoint

            self._ckpt = _read_checkpoint(self.checkpoint)
        return self._ckpt


def load_pretraining(run_dir: str | Path, stages: list[str], *, split: str | None = None
                     ) -> PretrainInit:
    """The pre-training checkpoints of an earlier run folder.

    Parameters
    ----------
    run_dir : path
        A run folder made with ``[pretrain] stage = "pretrain"`` or ``"all"``.
    stages : list of str
        The stages this run initialises from (``["vqvae", "mae"]`` -> the MAE checkpoint,
        ``["vqvae"]`` -> the VQ-VAE checkpoint).
    split : str or None
        For ``source = "train_runs"``: the split's folder name under ``pretrain/``.

    Raises
    ------
    FileNotFoundError
        When the folder, its manifest or the needed checkpoint is missing.
    ValueError
        When the run pre-trained other stages.
    """
    run_dir = Path(run_dir)
    base = run_dir / PRETRAIN_DIR
    directory = base / split if split is not None else base
    mpath = directory / MANIFEST
    if not run_dir.is_dir():
        raise FileNotFoundError(f"[pretrain] init: the run folder {str(run_dir)!r} does not "
                                f"exist.")
    if not mpath.exists():
        raise FileNotFoundError(f"[pretrain] init: {str(run_dir)!r} holds no pre-training "
                                f"({str(mpath)!r} is missing); run the pipeline with --stage "
                                f"pretrain (or all) first.")
    manifest = json.loads(mpath.read_text())
    mode = stages[-1]
    if mode not in manifest.get("stages", []):
        raise ValueError(f"[pretrain] init: {str(run_dir)!r} pre-trained the stages "
                         f"{manifest.get('stages')}; this run initialises from {mode!r}.")
    ckpt = directory / mode / "model.pt"
    if not ckpt.exists():
        raise FileNotFoundError(f"[pretrain] init: the {mode} checkpoint {str(ckpt)!r} is "
                                f"missing (was the pre-training interrupted? continue it with "
                                f"--resume {run_dir}).")
    mfile = directory / "metrics.json"
    metrics = json.loads(mfile.read_text()) if mfile.exists() else {}
    return PretrainInit(run_dir=run_dir, directory=directory, mode=mode, checkpoint=ckpt,
                        channels=manifest["subjects"], manifest=manifest, metrics=metrics)


def check_init(init: PretrainInit, cfg, expected: dict) -> None:
    """Refuse a pre-training made for other subjects, channels or model settings.

    ``expected``: ``{subject: [channels]}`` this run would pre-train on. With ``[preprocess]
    channels = "contribution"`` the classifier's subject layer is fitted afresh, so only the
    subjects and the model settings must match.
    """
    where = f"[pretrain] init = {str(init.run_dir)!r}"
    missing = [s for s in expected if s not in init.channels]
    if missing:
        raise ValueError(f"{where} was pre-trained on the subjects {sorted(init.channels)}; "
                         f"this run also needs {missing}.")
    for s, names in expected.items():
        if cfg.preprocess.channels == "contribution":
            break
        if list(init.channels[s]) != list(names):
            extra = sorted(set(init.channels[s]) - set(names))[:5]
            lack = sorted(set(names) - set(init.channels[s]))[:5]
            raise ValueError(f"{where}: subject {s!r} was pre-trained on "
                             f"{len(init.channels[s])} channels, this run uses {len(names)} "
                             f"(only there: {extra}; only here: {lack}); use the same [data] "
                             f"and [preprocess] channels / regions.")
    old = init.manifest.get("settings", {}).get("model_params", {})
    new = _model_params(cfg)
    if old != new:
        raise ValueError(f"{where} was pre-trained with [model.params] {old}; this run has {new} "
                         f"({', '.join(SHARED_MODEL_PARAMS)} must match).")


def init_classifier(model, init: PretrainInit, subject: str, ch_names: list[str], *,
                    subject_layer: bool = True) -> dict:
    """Initialise a :class:`~bcikit.models.DuIN` of ``subject`` from a pre-training.

    ``subject_layer=True`` (channels "all" / "region"): the classifier has the pre-training's
    channels (same names, same order, else an error) and the subject layer, tokenizer and
    Transformer are loaded (:meth:`DuIN.load_pretrained`). ``subject_layer=False`` (channels
    ranked by contribution inside the training split): the tokenizer and Transformer are loaded
    and the subject layer stays freshly initialised, to be fitted on the selected channels.

    Returns
    -------
    dict
        ``mode``, ``checkpoint``, ``n_tensors`` (tensors loaded) and ``subject_layer``
        (``"loaded"`` or ``"fresh"``).

    Raises
    ------
    ValueError
        For a subject or channels the pre-training does not have.
    """
    import torch

    if subject not in init.channels:
        raise ValueError(f"The pre-training in {str(init.directory)!r} has no subject "
                         f"{subject!r} (it has {sorted(init.channels)}).")
    pre = list(init.channels[subject])
    ckpt = init.state()
    if subject_layer:
        if list(ch_names) != pre:
            lack = [c for c in ch_names if c not in pre][:5]
            raise ValueError(f"Subject {subject!r}: the classifier's {len(ch_names)} channels "
                             f"differ from the {len(pre)} the pre-training in "
                             f"{str(init.directory)!r} saw (e.g. {lack} only here); its subject "
                             f"layer cannot be loaded.")
        keys = model.load_pretrained(ckpt, subject=subject)
        layer = "loaded"
    else:
        state = ckpt["state_dict"]
        own = model.state_dict()
        keys = []
        with torch.no_grad():
            for k, v in state.items():
                if k.startswith(("encoder.tokenizer.", "encoder.transformer.")):
                    if k not in own or own[k].shape != v.shape:
                        raise ValueError(f"{str(init.checkpoint)!r}: {k!r} does not fit this "
                                         f"DuIN (different depth or tokenizer?).")
                    own[k].copy_(v)
                    keys.append(k)
        layer = "fresh"
    return {"mode": init.mode, "checkpoint": str(init.checkpoint), "n_tensors": len(keys),
            "subject_layer": layer}


def safe_name(name: str) -> str:
    """A folder name for a split (as the run folder's ``splits/`` files use)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "split"
