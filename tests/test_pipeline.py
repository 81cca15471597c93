"""`run_pipeline` end to end on the simulator: run folder, honest splits, resume, no overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bcikit.pipeline import run_pipeline

REPO = Path(__file__).resolve().parents[1]
SMALL_SIM = ["data.simulate.n_subjects=2", "data.simulate.n_trials_per_class=24",
             "data.simulate.sfreq=128.0", "data.simulate.trial_duration=3.0"]


def test_classical_pipeline_writes_a_complete_run_folder(tmp_path):
    result = run_pipeline(REPO / "pipelines" / "csp_lda.toml", out=tmp_path / "run",
                          overrides=SMALL_SIM)
    run = result.run_dir
    for name in ("config.toml", "metrics.json", "scores.csv", "history.csv", "predictions.csv",
                 "report.md", "figures/confusion_matrix.png", "figures/per_subject.png"):
        assert (run / name).exists(), name
    metrics = json.loads((run / "metrics.json").read_text())
    preds = pd.read_csv(run / "predictions.csv")
    # the reported accuracy is the mean over subjects of what predictions.csv holds
    per_subject = preds.assign(ok=preds.y_true == preds.y_pred).groupby("subject").ok.mean()
    assert metrics["summary"]["accuracy"]["mean"] == pytest.approx(per_subject.mean())
    assert metrics["data"]["classes"] == ["left_hand", "right_hand"]
    # cross-session: every subject's test trials are its last session only
    assert set(preds.subject) == {"S01", "S02"}
    assert result.accuracy > metrics["chance_threshold_p05"]
    assert "Test accuracy" in (run / "report.md").read_text()


def test_shuffled_labels_land_at_chance(tmp_path, monkeypatch):
    import bcikit.pipeline as pl

    original = pl.load_data

    def shuffled(cfg, dataset=None, **kw):
        sets, source = original(cfg, dataset, **kw)
        rng = np.random.default_rng(0)
        for ts in sets:
            ts.y = rng.permutation(ts.y)
        return sets, source

    monkeypatch.setattr(pl, "load_data", shuffled)
    result = run_pipeline(REPO / "pipelines" / "csp_lda.toml", out=tmp_path / "run",
                          overrides=SMALL_SIM + ["data.simulate.n_subjects=4"])
    n_test = int(result.scores.n_test.sum())
    # a binomial 99.9 % band around 0.5 for the pooled test trials
    assert abs(result.scores.accuracy.mul(result.scores.n_test).sum() / n_test - 0.5) \
        < 3.3 * np.sqrt(0.25 / n_test)


def test_test_split_never_reaches_a_fit(tmp_path, monkeypatch):
    """Transforms and the model see training/validation trials only; test is predicted once."""
    import bcikit.data.transforms as tfm
    import bcikit.pipeline as pl
    from bcikit.train import Trainer

    original_load = pl.load_data

    def tagged(cfg, dataset=None, **kw):
        sets, source = original_load(cfg, dataset, **kw)
        for ts in sets:
            ts.meta["uid"] = np.arange(len(ts))
        return sets, source

    seen = {"fit": [], "test": [], "predict_calls": 0}
    make = tfm.make_transforms

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def fit(self, ts):
            seen["fit"].append(set(ts.meta["uid"]))
            self.inner.fit(ts)
            return self

        def transform(self, ts):
            return self.inner.transform(ts)

    import bcikit.data.protocols as prot

    apply = prot.apply_split

    def spy_apply(ts, split):
        parts = apply(ts, split)
        seen["test"].append(set(parts[2].meta["uid"]))
        return parts

    predict = Trainer.predict_proba

    def spy_predict(self, X, *a, **k):
        seen["predict_calls"] += 1
        return predict(self, X, *a, **k)

    monkeypatch.setattr(pl, "load_data", tagged)
    monkeypatch.setattr(tfm, "make_transforms", lambda c: Spy(make(c)))
    monkeypatch.setattr(prot, "apply_split", spy_apply)
    monkeypatch.setattr(Trainer, "predict_proba", spy_predict)
    result = run_pipeline(REPO / "pipelines" / "shallow_fbcsp.toml", out=tmp_path / "run",
                          overrides=SMALL_SIM + ["train.epochs=2", "train.device=cpu"])
    n_splits = len(result.scores)
    assert len(seen["fit"]) == len(seen["test"]) == n_splits == 2
    for fitted, test in zip(seen["fit"], seen["test"]):
        assert test and fitted and not (fitted & test)
    assert seen["predict_calls"] == n_splits  # once per split, on the test trials


def test_run_folder_is_never_overwritten_and_resume_completes(tmp_path):
    out = tmp_path / "run"
    first = run_pipeline(REPO / "pipelines" / "ts_lr.toml", out=out, overrides=SMALL_SIM)
    before = (out / "metrics.json").read_text()
    with pytest.raises(FileExistsError, match="never overwrites"):
        run_pipeline(REPO / "pipelines" / "ts_lr.toml", out=out, overrides=SMALL_SIM)
    assert (out / "metrics.json").read_text() == before
    # simulate a run killed after its first split: drop the second split's result, resume
    done = sorted((out / "splits").glob("*.json"))
    assert len(done) == 2
    done[1].unlink()
    (out / "metrics.json").unlink()
    again = run_pipeline(None, resume=out)
    pd.testing.assert_frame_equal(again.scores.drop(columns="fit_seconds"),
                                  first.scores.drop(columns="fit_seconds"))
