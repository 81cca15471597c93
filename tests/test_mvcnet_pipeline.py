"""MVCNet through `run_pipeline`: the multi-view loss trains inside the common harness."""

from __future__ import annotations

import json
from pathlib import Path

from bcikit.pipeline import run_pipeline

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.simulate.n_subjects=1", "data.simulate.n_trials_per_class=24",
        "data.simulate.sfreq=100.0", "data.simulate.trial_duration=2.0", "train.epochs=3",
        "train.batch_size=16", "evaluate.seeds=[1]", "train.device=cpu"]


def test_mvcnet_pipeline_runs_with_its_views_and_counts(tmp_path):
    result = run_pipeline(REPO / "pipelines" / "mvcnet.toml", out=tmp_path / "run",
                          overrides=TINY)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["model"] == "MVCNet"
    # 22 ch, 100 Hz, 2 s: deployed = 22*64 + 128 + 64*63 + 128 + (64*4)*2 + 2
    assert metrics["n_params_deployed"] == 22 * 64 + 128 + 64 * 63 + 128 + 256 * 2 + 2
    assert metrics["n_params"] > 100 * metrics["n_params_deployed"]  # Transformer + projector
    assert metrics["protocol"] == "chronological"
    assert result.scores.n_valid.tolist() == [0]  # the recipe scores the last epoch, no valid
    assert result.scores.n_train.tolist() == [2 * 20]  # ceil(0.8 * 24) per class
    assert "deployed: " in (result.run_dir / "report.md").read_text()
    # the comparison setting records the simulator's oracle for these subjects and classes
    oracle = metrics["oracle"]
    assert set(oracle["per_subject"]) == {"S01"} and oracle["classes"] == ["left_hand",
                                                                           "right_hand"]
    assert 0.5 < oracle["mean"] <= 1.0 and "Simulator oracle" in \
        (result.run_dir / "report.md").read_text()


def test_mvcnet_stem_is_mvcnets_deployed_network():
    import torch

    from bcikit.models import count_parameters, get_model

    torch.manual_seed(0)
    stem = get_model("MVCNetStem", n_chans=22, n_outputs=2, n_times=1000, sfreq=250.0)
    assert count_parameters(stem) == 6722
    with torch.device("meta"):
        full = get_model("MVCNet", n_chans=22, n_outputs=2, n_times=1000, sfreq=250.0)
    assert {k: v.shape for k, v in stem.state_dict().items()} == \
        {k: v.shape for k, v in full.deployed_state_dict().items()}
    assert not hasattr(stem, "training_loss")  # the Trainer trains it with cross-entropy
