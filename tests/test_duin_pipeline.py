"""The Du-IN pipeline: [pretrain] config, pre-training checkpoints, fine-tuning from them,
channel selection inside the training split, and the honest protocol (specs/duin.md §3)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import binom

from bcikit.cli import main
from bcikit.config import ConfigError, load_config, validate_config
from bcikit.pipeline import _check_disjoint, _fit_split, load_data_context, run_pipeline

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
DUIN = REPO / "pipelines" / "duin.toml"
HG_LDA = REPO / "pipelines" / "duin_hg_lda.toml"
# one subject (38 bipolar channels, 14 in vSMC/STG), 8 words x 6 trials over 3 runs, 3 min of
# pre-training recordings; a one-block Du-IN, one epoch per stage
SIM = ["data.simulate.n_subjects=1", "data.simulate.n_runs=3",
       "data.simulate.n_trials_per_word=6", "data.simulate.pretrain_minutes=3.0"]
SMALL = SIM + ["model.params.n_blocks=1", "pretrain.epochs_vqvae=1", "pretrain.epochs_mae=1",
               "pretrain.crops_per_segment=2", "pretrain.batch_size_mae=32",
               "pretrain.vqvae_params={n_codes=64, n_decoder_blocks=1}", "train.epochs=1",
               "train.device=cpu"]


@pytest.fixture(scope="module", autouse=True)
def cached_simulator():
    """The simulator is deterministic: simulate each configuration once in this module."""
    import bcikit.simulate.seeg_words as sw

    cached = functools.lru_cache(maxsize=8)(
        lambda items: sw.make_seeg_words(**dict(items)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("bcikit.simulate.make_seeg_words",
                   lambda **kw: cached(tuple(sorted(kw.items()))))
        yield


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """One end-to-end run: pre-training (VQ-VAE + MAE) then fine-tuning of every split."""
    out = tmp_path_factory.mktemp("duin") / "all"
    result = run_pipeline(DUIN, out=out, overrides=SMALL)
    return out, result


# ------------------------------------------------------------------------------ config
def _raw(**sections):
    raw = {"pipeline": {"name": "t"}, "data": {"simulator": "seeg_words"},
           "model": {"name": "DuIN"}}
    raw.update(sections)
    return raw


def test_config_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[pipeline]\nname = "x"\n[model]\nname = "EEGConformer"\n'
                   '[pretrain]\nstages = ["vqvae"]\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: \[pretrain\].*'DuIN'"):
        load_config(bad)
    cases = [
        (dict(pretrain={"stages": ["mae"]}), r"\[pretrain\] stages must be"),
        (dict(pretrain={"stage": "finetune"}), r"stage = 'finetune' needs init"),
        (dict(pretrain={"stage": "pretrain", "init": "runs/x"}), r"init must be omitted"),
        (dict(pretrain={"stages": [], "stage": "pretrain"}), r"stages = \[\] trains from"),
        (dict(pretrain={"epochs": 3}), r"unknown field 'epochs'"),
        (dict(pretrain={"crop_seconds": 0}), r"\[pretrain\] crop_seconds must be a number > 0"),
        (dict(preprocess={"channels": "best"}), r"\[preprocess\] channels must be one of"),
        (dict(preprocess={"regions": []}), r"\[preprocess\] regions must be a non-empty"),
        (dict(train={"recipe": "duin", "scheduler": "cosine"}), r"scheduler must be omitted"),
        (dict(train={"warmup_epochs": 3}), r"warmup_epochs is a field of recipe = 'duin'"),
        (dict(train={"selection": "first"}), r"\[train\] selection must be one of"),
        (dict(pretrain={}, preprocess={"alignment": "euclidean"}), r"alignment must be 'none'"),
    ]
    for sections, pattern in cases:
        with pytest.raises(ConfigError, match=pattern):
            validate_config(_raw(**sections), source="x.toml")


def test_duin_recipe_fills_what_the_file_leaves_out():
    from bcikit.config import DUIN_CLASSIFIER_RECIPE
    from bcikit.train.duin_recipe import STAGE_RECIPES

    spec = STAGE_RECIPES["classifier"]
    t = validate_config(_raw(train={"recipe": "duin"})).train
    assert (t.epochs, t.batch_size, t.lr, t.weight_decay) == (
        spec["epochs"], spec["batch_size"], spec["lr_max"], spec["weight_decay"])
    assert (t.warmup_epochs, t.lr_min) == (spec["warmup_epochs"], spec["lr_min"])
    assert DUIN_CLASSIFIER_RECIPE["warmup_fraction"] == spec["warmup_epochs"] / spec["epochs"]
    t = validate_config(_raw(train={"recipe": "duin", "epochs": 30, "lr": 1e-3})).train
    assert (t.epochs, t.lr, t.warmup_epochs, t.batch_size) == (30, 1e-3, 3, 32)
    # the resolved file reads back the same (resume, --init runs)
    cfg = validate_config(_raw(train={"recipe": "duin", "epochs": 30}, pretrain={}))
    again = validate_config(__import__("tomllib").loads(cfg.to_toml()))
    assert again.train == cfg.train and again.pretrain == cfg.pretrain


# ------------------------------------------------------------------------------ pipeline
def test_pretrain_then_finetune_end_to_end(pretrained):
    out, result = pretrained
    pre = out / "pretrain"
    for f in ("vqvae/model.pt", "mae/model.pt", "history_vqvae.csv", "history_mae.csv",
              "metrics.json", "manifest.json"):
        assert (pre / f).is_file(), f
    assert not (pre / "vqvae" / "ckpt").exists()  # the Trainer state of a finished stage
    m = result.metrics
    assert m["init"]["mode"] == "mae" and m["init"]["from"] == str(out)
    held = m["pretrain"]["held_out"]
    assert 0 < held["codes_used_fraction"] <= 1 and 0 <= held["masked_code_accuracy"] <= 1
    assert held["n_test_crops"] == 15  # one held-out 60 s segment tiled by 4 s crops
    # collapse diagnostics: shares and perplexities of code counts (held-out and EMA)
    assert 1 <= held["perplexity"] <= 15 * 40 and 0 < held["ema_top_code_share"] <= 1
    assert 1 <= held["ema_perplexity"] <= held["n_codes"]
    assert {"top_share", "perplexity"} <= set(pd.read_csv(pre / "history_vqvae.csv").columns)
    assert m["pretrain"]["n_segments"] == {"train": 1, "valid": 1, "test": 1}
    assert len(pd.read_csv(pre / "history_vqvae.csv")) == 1
    # run-level protocol: 3 rotations, each with a validation run, best epoch + last epoch
    s = result.scores
    assert list(s.split) == ["S01/run=run1", "S01/run=run2", "S01/run=run3"]
    assert (s.n_valid == 16).all() and (s.n_test == 16).all()
    assert {"best_epoch", "accuracy_last"} <= set(s.columns)
    split = json.loads((out / "splits" / "seed42_S01_run_run1.json").read_text())
    manifest = json.loads((pre / "manifest.json").read_text())
    assert split["init"]["subject_layer"] == "loaded" and split["init"]["n_tensors"] > 10
    # region channels: pre-training and every split's classifier use the same 14 channels
    assert split["channels"] == manifest["subjects"]["S01"] and len(split["channels"]) == 14


def test_pretraining_never_sees_downstream_trials(pretrained):
    out, _ = pretrained
    manifest = json.loads((out / "pretrain" / "manifest.json").read_text())
    segs = pd.DataFrame(manifest["segments"])
    cfg = load_config(DUIN, SMALL)
    sets, _, _ = load_data_context(cfg)
    trial_keys = set(zip(sets[0].meta.session.astype(str), sets[0].meta.run.astype(str)))
    assert trial_keys == {("task", "run1"), ("task", "run2"), ("task", "run3")}
    assert not set(zip(segs.session, segs.run)) & trial_keys
    assert sorted(segs.part) == ["test", "train", "valid"]
    # and the guard refuses recordings that share a run with the trials
    with pytest.raises(ValueError, match="must not see validation or test runs"):
        _check_disjoint({"S01": sets[0].subset(np.arange(3))}, sets, "x.toml")


def test_finetune_reuses_the_checkpoints(pretrained, tmp_path, capsys):
    from bcikit.models.duin import DuIN, _read_checkpoint
    from bcikit.pretrain import init_classifier, load_pretraining

    pt, _ = pretrained
    args = ["run", str(DUIN), "--out", str(tmp_path / "ft"), "--stage", "finetune",
            "--init", str(pt), "--set", "evaluate.params.test_runs=[\"run2\"]"]
    for o in SMALL:
        args += ["--set", o]
    assert main(args) == 0
    m = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert m["init"]["reused"] and m["init"]["from"] == str(pt)
    assert m["init"]["checkpoint"] == str(pt / "pretrain" / "mae" / "model.pt")
    assert not (tmp_path / "ft" / "pretrain").exists()  # nothing pre-trained again
    assert m["pretrain"] == json.loads((pt / "pretrain" / "metrics.json").read_text())
    assert [json.loads(p.read_text())["split"] for p in (tmp_path / "ft" / "splits").glob(
        "*.json")] == ["S01/run=run2"]  # test_runs: one rotation only
    # the classifier's encoder is exactly the checkpoint's (subject S01 renamed to "0")
    init = load_pretraining(pt, ["vqvae", "mae"])
    channels = init.channels["S01"]
    torch.manual_seed(0)
    model = DuIN(n_chans=len(channels), n_outputs=8, n_blocks=1)
    head = model.head.fc1.weight.detach().clone()
    info = init_classifier(model, init, "S01", channels)
    ckpt = _read_checkpoint(init.checkpoint)["state_dict"]
    own = model.state_dict()
    assert torch.equal(own["encoder.subject.layers.0.weight"],
                       ckpt["encoder.subject.layers.S01.weight"])
    loaded = [k for k in ckpt if k.startswith(("encoder.tokenizer.", "encoder.transformer."))]
    assert info["n_tensors"] == len(loaded) + 2
    assert all(torch.equal(own[k], ckpt[k]) for k in loaded)
    assert torch.equal(model.head.fc1.weight, head)  # the head is not pre-trained
    # contribution ranking: a fresh subject layer on the chosen subset, encoder loaded
    fresh = DuIN(n_chans=5, n_outputs=8, n_blocks=1)
    info = init_classifier(fresh, init, "S01", channels[:5], subject_layer=False)
    assert info["subject_layer"] == "fresh" and info["n_tensors"] == len(loaded)
    assert torch.equal(fresh.state_dict()[loaded[0]], ckpt[loaded[0]])


def test_init_errors(pretrained, tmp_path):
    from bcikit.pretrain import check_init, load_pretraining

    pt, _ = pretrained
    # a missing folder fails before any run folder is made
    assert main(["run", str(DUIN), "--out", str(tmp_path / "x"), "--stage", "finetune",
                 "--init", str(tmp_path / "nowhere")]) == 2
    assert not (tmp_path / "x").exists()
    with pytest.raises(FileNotFoundError, match="holds no pre-training"):
        load_pretraining(tmp_path, ["vqvae"])
    init = load_pretraining(pt, ["vqvae"])
    assert init.checkpoint == pt / "pretrain" / "vqvae" / "model.pt"
    cfg = load_config(DUIN, SMALL)
    channels = init.channels["S01"]
    check_init(init, cfg, {"S01": channels})
    with pytest.raises(ValueError, match=r"also needs \['S02'\]"):
        check_init(init, cfg, {"S01": channels, "S02": channels})
    with pytest.raises(ValueError, match="was pre-trained on 14 channels, this run uses 13"):
        check_init(init, cfg, {"S01": channels[1:]})
    with pytest.raises(ValueError, match="n_blocks"):
        check_init(init, load_config(DUIN, SMALL + ["model.params.n_blocks=2"]),
                   {"S01": channels})


def test_train_runs_source_pretrains_on_training_runs_only(tmp_path):
    """source = "train_runs": pre-training per split, on its training run only."""
    out = tmp_path / "tr"
    result = run_pipeline(DUIN, out=out, overrides=SMALL + [
        "pretrain.source=train_runs", "pretrain.crop_seconds=2.0",
        "pretrain.crops_per_segment=1", "pretrain.stages=[\"vqvae\"]",
        "evaluate.params.test_runs=[\"run2\"]"])
    manifest = json.loads((out / "pretrain" / "S01_run_run2" / "manifest.json").read_text())
    segs = pd.DataFrame(manifest["segments"])
    # test run2, validation run3: only run1's trials were pre-trained on
    assert set(segs.run) == {"run1"} and len(segs) == 16
    assert result.metrics["init"]["mode"] == "vqvae"
    assert list(result.scores.split) == ["S01/run=run2"]


# ------------------------------------------------------------------------------ baselines
HG_SIM = ["data.simulate.n_subjects=1", "data.simulate.n_runs=3",
          "data.simulate.n_trials_per_word=12", "data.simulate.pretrain_minutes=0.0"]


def _pooled(result):
    s = result.scores
    n = int(s.n_test.sum())
    return float((s.accuracy * s.n_test).sum() / n), n


def test_high_gamma_lda_above_chance_on_easy_data(tmp_path):
    result = run_pipeline(HG_LDA, out=tmp_path / "easy",
                          overrides=HG_SIM + ["data.simulate.snr=3.0"])
    acc, n = _pooled(result)
    assert n == 96
    assert acc > binom.ppf(0.999, n, 1 / 8) / n  # above chance (8 words), p < 0.001


def test_high_gamma_lda_at_chance_on_null_data(tmp_path):
    result = run_pipeline(HG_LDA, out=tmp_path / "null",
                          overrides=HG_SIM + ["data.simulate.snr=0.0"])
    acc, n = _pooled(result)
    # inside the two-sided 99.8 % binomial band around chance
    assert binom.ppf(0.001, n, 1 / 8) / n <= acc <= binom.ppf(0.999, n, 1 / 8) / n


def test_channel_selection_is_fitted_on_the_training_split():
    from bcikit.data.protocols import get_protocol

    cfg = load_config(HG_LDA, HG_SIM + ["data.simulate.snr=3.0",
                                        "preprocess.channels=contribution"])
    sets, _, context = load_data_context(cfg)
    ts = sets[0]
    truth = context.info["truth"]["S01"].channels
    informative = set(truth.name[truth.informative])
    split = get_protocol("leave_one_run_out", valid="run").split(ts)[0]
    out = _fit_split(cfg, ts, split, 0, device="cpu", ckpt_dir=None, context=context)
    sel = out["selector"]
    assert np.array_equal(np.sort(sel.fit_trials_), split.train)  # training trials only
    assert not set(sel.fit_trials_) & set(np.concatenate([split.valid, split.test]))
    assert out["channels"] == sel.channels_ and len(sel.channels_) == 10
    # 14 of 38 channels are informative: 3.7 of 10 expected by chance
    assert len(informative & set(sel.channels_)) >= 8
    cfg = load_config(HG_LDA, HG_SIM + ["data.simulate.snr=3.0"])
    out = _fit_split(cfg, ts, split, 0, device="cpu", ckpt_dir=None, context=context)
    assert set(out["channels"]) == informative  # vSMC/STG anodes = the informative channels
