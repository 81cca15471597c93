"""The encoding estimator (per-target alpha, refit) against scikit-learn, and the encoding
pipeline file end to end on a small movie simulation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from bcikit.encoding import RidgeEncoder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(limits=1):
        yield


def _data(rng, n=200, p=12, t=6):
    X = rng.standard_normal((n, p))
    W = rng.standard_normal((p, t)) * np.array([3.0, 1.0, 0.3, 0.1, 0.0, 2.0])
    Y = X @ W + rng.standard_normal((n, t)) * 2.0 + 5.0
    return X, Y, np.arange(n) * 1.0


def test_ridge_encoder_refits_each_target_with_its_alpha(rng):
    from sklearn.linear_model import Ridge

    X, Y, t = _data(rng)
    enc = RidgeEncoder(purge=True).fit(X, Y, event_times=t)
    assert enc.alpha_.shape == (6,) and set(enc.alpha_) <= set(np.logspace(-1, 5, 7))
    np.testing.assert_array_equal(enc.alpha_, enc.cv_.alpha)
    Z = (X - X.mean(0)) / X.std(0)
    for j in range(Y.shape[1]):
        ref = Ridge(alpha=enc.alpha_[j], fit_intercept=True).fit(Z, Y[:, j])
        np.testing.assert_allclose(enc.coef_[:, j], ref.coef_, rtol=1e-5, atol=1e-8)
        assert enc.intercept_[j] == pytest.approx(ref.intercept_, rel=1e-6)
    pred = enc.predict(X)
    assert pred.shape == Y.shape
    # the noiseless target (weight 0) gets the largest alpha; informative targets score high
    r = enc.score_targets(X, Y)
    assert r[0] > 0.8 and r[5] > 0.7 and abs(r[4]) < r[0]
    assert enc.alpha_[4] >= enc.alpha_[0]
    assert enc.score(X, Y) == pytest.approx(np.nanmean(r))


def test_ridge_encoder_errors(rng):
    X, Y, t = _data(rng, n=50)
    with pytest.raises(ValueError, match="needs event_times"):
        RidgeEncoder().fit(X, Y)
    with pytest.raises(ValueError, match="same rows"):
        RidgeEncoder(purge=False).fit(X, Y[:10])
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(ValueError, match="X holds NaN"):
        RidgeEncoder(purge=False).fit(Xn, Y)
    with pytest.raises(ValueError, match="not fitted"):
        RidgeEncoder().predict(X)
    enc = RidgeEncoder(purge=False).fit(X, Y)
    with pytest.raises(ValueError, match="12 features"):
        enc.predict(X[:, :3])
    with pytest.raises(ValueError, match="no parameter 'alpha'"):
        enc.set_params(alpha=3)


@pytest.mark.slow
def test_encoding_pipeline_writes_metrics_and_report(tmp_path, monkeypatch):
    """`bcikit run` on a tiny encoding pipeline: the run folder holds the metrics other code
    relies on (site_precision, site_recall), the tables and the figures; the simulation is
    cached and reused."""
    from bcikit.cli import main

    monkeypatch.setenv("BCIKIT_CACHE", str(tmp_path / "cache"))
    # 16 electrodes (2 of each truth class), 5 min of movie (273 word events), a high snr so
    # that 200 bootstrap resamples can reach q = 0.05 after the FDR correction; scene cuts at
    # the word responses' amplitude (cut_gain 1, not the default 5.5 that balances the two
    # alignments at the spec's size), so that this language-only check is not swamped at the
    # multimodal electrodes by the responses to the 60 cuts
    tiny = ["data.simulate.n_electrodes=16", "data.simulate.duration=300.0",
            "data.simulate.sfreq=256.0", "data.simulate.snr=3.0",
            "data.simulate.cut_gain=1.0", "encoding.n_boot=200",
            # 5 min of movie hold 37 sentences, ~4 per fold half: too few for the default
            # sentence-block bootstrap (it refuses fewer than 10 per half), so events
            "encoding.bootstrap_unit='event'",
            "encoding.alignments=['language']",
            "encoding.models=['SLIP-Combo-language','SLIP-Combo-language-random','SBERT',"
            "'SBERT-random','MultiCat','MultiCat-random','SLIP-Combo-vision',"
            "'SLIP-Combo-vision-random','SLIP-SimCLR','SLIP-SimCLR-random']"]
    args = ["run", str(REPO / "pipelines" / "encoding.toml"), "--out", str(tmp_path / "run")]
    for kv in tiny:
        args += ["--set", kv]
    assert main(args) == 0
    run = tmp_path / "run"
    m = json.loads((run / "metrics.json").read_text())
    assert m["kind"] == "encoding" and "site_precision" in m and "site_recall" in m
    assert set(m["per_alignment"]) == {"language"}
    assert m["settings"]["bootstrap_unit"] == "event"
    assert "resampling unit event" in (run / "report.md").read_text()
    la = m["per_alignment"]["language"]
    # trained networks carry the latents; random twins do not
    assert la["trained_median_r"] > 0.1 > abs(la["random_median_r"])
    assert la["trained_beats_random_best"] >= 0.8
    # site calls against the simulator's truth: what is called is non-linear multimodal, at
    # least one of the two such electrodes is found, no additive/null/unimodal one is called
    assert m["n_nonlinear"] == 2 and m["n_sites"] >= 1
    assert m["site_precision"] == 1.0 and m["site_recall"] >= 0.5
    assert all(m["called_fraction"][c] == 0.0
               for c in ("additive", "null", "language", "vision"))
    for f in ("electrode_scores.csv", "comparisons.csv", "sites.csv", "truth.csv", "report.md",
              "config.toml"):
        assert (run / f).is_file(), f
    assert any((run / "figures").iterdir())
    cached = list((tmp_path / "cache" / "movie_seeg").iterdir())
    assert len(cached) == 1 and (cached[0] / ".complete").exists()
