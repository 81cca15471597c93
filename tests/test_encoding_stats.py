"""Statistics of the encoding pipeline (spec section 4): shared bootstrap, kept bins, A > B
p-values, Benjamini-Hochberg FDR, site calling, region summaries, detection metrics, figures.

Small, seeded, float64. Bootstraps here use few resamples; ``oof`` mode is used where a test
only needs resampled scores (it is the fast mode the spec allows for exploration).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr

from bcikit.encoding import ridge as R
from bcikit.encoding import stats as S

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """One BLAS thread: on a shared 2-core machine OpenBLAS threads spin against each other."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


# ------------------------------------------------------------------------------- bootstrap


def test_bootstrap_indices_drawn_once_sorted_and_reproducible():
    a = S.bootstrap_indices(50, 30, seed=3)
    b = S.bootstrap_indices(50, 30, seed=3)
    c = S.bootstrap_indices(50, 30, seed=4)
    assert a.shape == (30, 50) and a.dtype == np.int64
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.all(np.diff(a, axis=1) >= 0) and a.min() >= 0 and a.max() < 50
    # with replacement: copies exist, and each row is a multiset of events
    assert any(np.unique(row).size < 50 for row in a)
    assert S.indices_digest(a) == S.indices_digest(b) != S.indices_digest(c)


def _synthetic(rng, n=240, n_el=4, n_bins=12):
    """Features -> electrodes: e0 driven by v*l (non-linear), e1 by v + l, e2 by v, e3 null."""
    v = rng.standard_normal((n, 3))
    lang = rng.standard_normal((n, 3))
    drive = np.stack([(v * lang).sum(1), v.sum(1) + lang.sum(1), v.sum(1), np.zeros(n)], 1)
    gain = np.linspace(0.6, 1.0, n_bins)
    Y = drive[:, :n_el, None] * gain + 1.5 * rng.standard_normal((n, n_el, n_bins))
    noise = lambda k: rng.standard_normal((n, k))  # noqa: E731
    feats = {"multi": np.c_[v, lang, v * lang, noise(3)], "multi-random": noise(12),
             "vision": np.c_[v, noise(3)], "language": np.c_[lang, noise(3)],
             "concat": np.c_[v, lang, noise(3)]}
    catalog = {"multi": {"kind": "multimodal", "trained": True, "twin": "multi-random"},
               "multi-random": {"kind": "multimodal", "trained": False, "twin": None},
               "vision": {"kind": "vision", "trained": True, "twin": None},
               "language": {"kind": "language", "trained": True, "twin": None},
               "concat": {"kind": "linear", "trained": True, "twin": None}}
    return feats, Y.reshape(n, n_el * n_bins), np.arange(n) * 2.5, catalog


def test_bootstrap_shared_and_stored(rng, tmp_path):
    feats, Y, t, _ = _synthetic(rng)
    idx = S.bootstrap_indices(Y.shape[0], 40, seed=0)
    res = {m: S.bootstrap_encoding(X, Y, idx, mode="oof", event_times=t, model=m, n_bins=12,
                                   device="cpu") for m, X in feats.items()}
    for r in res.values():
        assert r.indices is idx or np.array_equal(r.indices, idx)
        assert r.digest == S.indices_digest(idx)
        assert r.boot_val_r.shape == r.boot_test_r.shape == (40, 48)
        assert r.boot_val_r.dtype == np.float32
    # stored with the result, and a round trip through a file keeps them
    path = res["multi"].save(tmp_path / "multi.npz")
    back = S.EncodingResult.load(path)
    np.testing.assert_array_equal(back.indices, idx)
    np.testing.assert_array_equal(back.boot_test_r, res["multi"].boot_test_r)
    np.testing.assert_allclose(back.cv.test_r, res["multi"].cv.test_r)
    np.testing.assert_array_equal(back.cv.folds[1].train, res["multi"].cv.folds[1].train)
    with pytest.raises(FileExistsError):
        res["multi"].save(path)
    # a model bootstrapped on other indices cannot be paired with the others
    other = S.bootstrap_encoding(feats["vision"], Y, S.bootstrap_indices(Y.shape[0], 40, seed=1),
                                 mode="oof", event_times=t, model="vision2", n_bins=12,
                                 device="cpu")
    with pytest.raises(ValueError, match="different bootstrap indices"):
        S.group_electrode_scores([res["multi"], other])


def test_oof_bootstrap_equals_bruteforce(rng):
    feats, Y, t, _ = _synthetic(rng, n=150)
    idx = S.bootstrap_indices(150, 3, seed=2)
    r = S.bootstrap_encoding(feats["multi"], Y, idx, mode="oof", event_times=t, n_bins=12,
                             device="cpu")
    pred, folds = r.cv.oof_pred, r.cv.folds
    for b in range(3):
        rows = idx[b]
        for part, boot in (("val", r.boot_val_r), ("test", r.boot_test_r)):
            per_fold = []
            for f in folds:
                sel = rows[np.isin(rows, getattr(f, part))]    # copies kept
                per_fold.append([pearsonr(Y[sel, j], pred[sel, j])[0] for j in range(48)])
            np.testing.assert_allclose(boot[b], np.mean(per_fold, 0), atol=2e-6)
    # resamples in chunks of 2 and targets in batches of 10 (neither divides evenly), on
    # himalaya's torch backend (the code path of the GPU one): same r
    split = S.bootstrap_encoding(feats["multi"], Y, idx, mode="oof", event_times=t, n_bins=12,
                                 cv_result=r.cv, oof_chunk=2, n_targets_batch=10,
                                 backend="torch", device="cpu")
    np.testing.assert_allclose(split.boot_val_r, r.boot_val_r, atol=1e-6)
    np.testing.assert_allclose(split.boot_test_r, r.boot_test_r, atol=1e-6)


def test_refit_bootstrap_reruns_protocol_per_resample(rng):
    feats, Y, t, _ = _synthetic(rng, n=150)
    idx = S.bootstrap_indices(150, 4, seed=5)
    r = S.bootstrap_encoding(feats["multi"], Y, idx, mode="refit", event_times=t, n_bins=12,
                             device="cpu")
    assert r.mode == "refit"
    for b in (0, 3):
        rows = idx[b]
        ref = R.paper_cv(feats["multi"][rows], Y[rows], groups=rows, event_times=t[rows],
                         device="cpu")
        np.testing.assert_allclose(r.boot_val_r[b], ref.val_r, atol=1e-6)
        np.testing.assert_allclose(r.boot_test_r[b], ref.test_r, atol=1e-6)
        # copies of an event never straddle fold halves
        for f in ref.folds:
            assert not set(rows[f.val]) & set(rows[f.test])
            assert not set(rows[f.train]) & set(rows[np.r_[f.val, f.test]])
    # the point estimate is the fit on all events
    full = R.paper_cv(feats["multi"], Y, event_times=t, device="cpu")
    np.testing.assert_allclose(r.cv.test_r, full.test_r)


def test_kept_bins_and_electrode_scores(rng):
    feats, Y, t, _ = _synthetic(rng)
    idx = S.bootstrap_indices(Y.shape[0], 60, seed=0)
    r = S.bootstrap_encoding(feats["multi"], Y, idx, mode="oof", event_times=t, n_bins=12,
                             electrodes=["A1", "A2", "B1", "B2"], device="cpu")
    keep = S.kept_bins(r)
    np.testing.assert_array_equal(keep, np.percentile(r.boot_val_r.astype(float), 2.5, axis=0) > 0)
    s = S.electrode_scores(r)
    assert list(s.table["electrode"]) == ["A1", "A2", "B1", "B2"]
    k = keep.reshape(4, 12)
    for e in range(4):
        assert s.table["n_obs"][e] == k[e].sum()
        if k[e].any():
            assert s.table["score"][e] == pytest.approx(r.cv.test_r.reshape(4, 12)[e, k[e]].mean())
            np.testing.assert_allclose(
                s.boot_test[:, e], r.boot_test_r.reshape(60, 4, 12)[:, e, k[e]].mean(1), rtol=1e-6)
        else:
            assert np.isnan(s.table["score"][e])
    # the non-linear electrode is predicted by the multimodal features in (nearly) every bin
    assert s.table["n_obs"][0] >= 10 and s.table["score"][0] > 0.2
    lo, hi = S.percentile_ci(s.boot_test)
    np.testing.assert_allclose(s.table["ci_low"], lo)


# ------------------------------------------------------------------------------- tests, FDR


def test_p_greater_formula():
    a = np.arange(1.0, 10.0)
    b = np.full(9, 5.0)
    assert S.p_greater(a, b) == pytest.approx(6 / 10)          # Delta <= 0 for 5 of 9
    a[8] = np.nan                                              # NaN is never evidence for A
    assert S.p_greater(a, b) == pytest.approx(7 / 10)
    assert S.p_greater(np.ones(99) * 2, np.ones(99)) == pytest.approx(1 / 100)
    two = S.p_greater(np.c_[np.arange(1.0, 10.0), np.ones(9) * 3], np.c_[b, b])
    np.testing.assert_allclose(two, [6 / 10, 1.0])


def test_fdr_bh_hand_computed():
    p = np.array([0.01, 0.04, 0.03, 0.2, np.nan, 0.005])
    # m = 5 tests: sorted 0.005, 0.01, 0.03, 0.04, 0.2 -> p*m/rank = .025 .025 .05 .05 .2
    reject, q = S.fdr_bh(p, q=0.05)
    np.testing.assert_allclose(q, [0.025, 0.05, 0.05, 0.2, np.nan, 0.025])
    np.testing.assert_array_equal(reject, [True, True, True, False, False, True])
    reject, _ = S.fdr_bh(p, q=0.04)
    np.testing.assert_array_equal(reject, [True, False, False, False, False, True])
    with pytest.raises(ValueError):
        S.fdr_bh([0.5, 1.5])


def test_fdr_bh_matches_statsmodels(rng):
    multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests
    p = np.concatenate([rng.uniform(0, 1, 200), rng.uniform(0, 0.01, 30)])
    reject, q = S.fdr_bh(p, q=0.05)
    ref_reject, ref_q, _, _ = multipletests(p, alpha=0.05, method="fdr_bh")
    np.testing.assert_array_equal(reject, ref_reject)
    np.testing.assert_allclose(q, ref_q, rtol=1e-12)


# ------------------------------------------------------------------------------- site calling
MODELS = {  # trained means per electrode: the truth of the synthetic score table
    #            e0   e1   e2   e3   e4   e5   e6   e7
    "BLIP": [.30, .30, .15, 0, .30, .30, .30, .30],
    "SLIP-Combo-vision": [.20, .25, .25, 0, .10, .20, .20, .10],
    "SLIP-SimCLR": [.10, .20, .26, 0, .10, .10, .10, .10],
    "SBERT": [.08, .20, 0, 0, .10, .08, .08, .05],
    "MultiCat": [.12, .30, .25, 0, .10, .12, .12, .10],
    "BLIP-random": [0, 0, 0, 0, .40, 0, 0, 0],
    "SLIP-Combo-vision-random": [0, 0, 0, 0, 0, 0, 0, 0],
}
CATALOG = pd.DataFrame([
    ("BLIP", "multimodal", True, "BLIP-random"),
    ("SLIP-Combo-vision", "multimodal", True, "SLIP-Combo-vision-random"),
    ("SLIP-SimCLR", "vision", True, None), ("SBERT", "language", True, None),
    ("MultiCat", "linear", True, None), ("BLIP-random", "multimodal", False, None),
    ("SLIP-Combo-vision-random", "multimodal", False, None)],
    columns=["model", "kind", "trained", "twin"])
TRUTH = pd.DataFrame({"subject": "1", "electrode": [f"e{i}" for i in range(8)],
                      "class": ["nonlinear", "additive", "vision", "null", "nonlinear",
                                "nonlinear", "nonlinear", "nonlinear"]})


def _score_table(rng, alignment, B=499):
    digest = f"shared-{alignment}"
    out = []
    for model, means in MODELS.items():
        means = np.array(means, dtype=float)
        if alignment == "vision":
            means[6] = 0.0                                   # e6 responds to words only
        n_obs = np.full(8, 40)
        n_obs[5] = 5                                         # too few kept bins to be tested
        boot = means + 0.01 * rng.standard_normal((B, 8))
        table = pd.DataFrame({"subject": "1", "alignment": alignment, "model": model,
                              "electrode": [f"e{i}" for i in range(8)], "score": means,
                              "val_score": means + 0.01, "n_obs": n_obs, "ci_low": np.nan,
                              "ci_high": np.nan})
        out.append(S.ElectrodeScores(model=model, subject="1", alignment=alignment,
                                     digest=digest, table=table, boot_test=boot,
                                     boot_val=boot + 0.01, bins="shared"))
    return out


def test_site_calling_on_synthetic_score_tables(rng):
    scores = _score_table(rng, "language") + _score_table(rng, "vision")
    comp = S.compare_models(scores, CATALOG, q=0.05)
    assert set(comp["comparison"]) == set(S.COMPARISONS)
    # low n_obs electrode: not tested anywhere
    assert comp.loc[comp["electrode"] == "e5", "p"].isna().all()
    uni = comp[(comp["family"] == "multi-beats-unimodal") & (comp["alignment"] == "language")]
    uni = uni.set_index("electrode")
    assert uni.loc["e2", "model_a"] == "SLIP-Combo-vision"   # best multimodal on validation
    assert uni.loc["e2", "model_b"] == "SLIP-SimCLR"
    assert uni.loc["e0", "p"] == pytest.approx(1 / 500)
    sites = S.call_sites(comp)
    lang = sites[sites["alignment"] == "language"].set_index("electrode")
    vis = sites[sites["alignment"] == "vision"].set_index("electrode")
    assert sorted(lang.index[lang["site"]]) == ["e0", "e6", "e7"]
    assert sorted(vis.index[vis["site"]]) == ["e0", "e7"]
    assert sorted(lang.index[lang["strict"]]) == ["e0", "e6"]
    assert lang.loc["e4", "pass_unimodal"] and lang.loc["e4", "pass_linear"]
    assert not lang.loc["e4", "pass_random"]                 # the random twin wins at e4
    assert not lang.loc["e1", "pass_linear"]                 # additive: concatenation is as good
    assert lang.loc["e0", "winner"] == "BLIP"
    both = S.sites_both_alignments(sites).set_index("electrode")
    assert sorted(both.index[both["both"]]) == ["e0", "e7"]  # per electrode, not per count
    summary = S.site_summary(comp, sites)
    assert summary["per_alignment"]["language"]["n_sites"] == 3
    assert summary["per_alignment"]["vision"]["n_strict"] == 1
    assert summary["n_sites_both_alignments"] == 2
    counts = summary["per_alignment"]["language"]["per_test_counts"]
    assert summary["per_alignment"]["language"]["mean_count_over_tests"] == pytest.approx(
        (counts["multi-beats-unimodal"] + counts["multi-beats-linear:MultiCat"]) / 2)
    # detection against the truth table
    m = S.site_detection_metrics(sites, TRUTH, alignment="language")
    assert (m["precision"], m["recall"]) == (1.0, pytest.approx(3 / 5))
    assert m["called_fraction"]["additive"] == 0.0 and m["called_fraction"]["null"] == 0.0
    m = S.site_detection_metrics(sites, TRUTH, alignment="both")
    assert m["recall"] == pytest.approx(2 / 5)
    wrong = TRUTH.assign(**{"class": TRUTH["class"].where(TRUTH["electrode"] != "e7",
                                                          "additive")})
    m = S.site_detection_metrics(sites, wrong, alignment="vision")
    assert m["precision"] == pytest.approx(1 / 2) and m["called_fraction"]["additive"] == 0.5
    # regions
    regions = pd.DataFrame({"subject": "1", "electrode": [f"e{i}" for i in range(8)],
                            "region": ["stg", "stg", "occ", "occ", "ifg", "ifg", "stg", "ifg"]})
    reg = S.region_summary(sites, regions).set_index(["alignment", "region"])
    assert reg.loc[("language", "stg"), "n_sites"] == 2
    assert reg.loc[("language", "stg"), "n_electrodes"] == 3
    assert reg.loc[("vision", "ifg"), "n_sites"] == 1
    assert reg.loc[("language", "occ"), "site_fraction"] == 0.0


def test_site_calling_needs_linear_and_twins(rng):
    scores = _score_table(rng, "language")
    no_cat = [s for s in scores if s.model != "MultiCat"]
    with pytest.raises(ValueError, match="multi-beats-linear"):
        S.call_sites(S.compare_models(no_cat, CATALOG))
    no_twin = [s for s in scores if s.model != "BLIP-random"]
    comp = S.compare_models(no_twin, CATALOG)
    with pytest.raises(ValueError, match="BLIP"):
        S.call_sites(comp)
    sites = S.call_sites(comp, require_random=False)
    assert "e4" in set(sites.loc[sites["site"], "electrode"])
    with pytest.raises(ValueError, match="not in the catalog"):
        S.compare_models(scores, CATALOG[CATALOG["model"] != "SBERT"])
    bad = _score_table(rng, "language")
    bad[0].digest = "other"
    with pytest.raises(ValueError, match="different bootstrap indices"):
        S.compare_models(bad, CATALOG)
    with pytest.raises(ValueError, match="kinds"):
        S.make_catalog({"x": {"kind": "audio", "trained": True}})


def test_sites_end_to_end_on_synthetic_encoding(rng):
    """Ridge + oof bootstrap + comparisons find the non-linear electrode only."""
    feats, Y, t, catalog = _synthetic(rng, n=300)
    idx = S.bootstrap_indices(300, 199, seed=0)
    results = [S.bootstrap_encoding(X, Y, idx, mode="oof", event_times=t, model=m, subject="1",
                                    alignment="language", n_bins=12, device="cpu")
               for m, X in feats.items()]
    own = S.group_electrode_scores(results, bins="own")
    shared = S.group_electrode_scores(results, bins="shared")
    # with shared bins every model is scored on the same bins
    assert len({tuple(s.table["n_obs"]) for s in shared}) == 1
    assert np.all(shared[0].table["n_obs"] >= own[0].table["n_obs"])
    comp = S.compare_models(shared, catalog)
    sites = S.call_sites(comp).set_index("electrode")
    assert sites.loc["e0", "site"]                          # v * l
    assert not sites.loc[["e1", "e2", "e3"], "site"].any()  # additive, vision-only, null
    rnd = comp[comp["family"] == "trained-beats-random:multi"].set_index("electrode")
    assert rnd.loc[["e0", "e1", "e2"], "significant"].all()
    # the spec's literal 'own' bins cannot test the random twin (too few kept bins)
    comp_own = S.compare_models(own, catalog)
    assert comp_own.loc[comp_own["family"] == "trained-beats-random:multi", "p"].isna().sum() >= 3


# ------------------------------------------------------------------------------- figures


def test_figures_return_and_save(tmp_path):
    import matplotlib.figure

    from bcikit.encoding import figures as F

    rng = np.random.default_rng(0)
    coords = rng.uniform(-60, 60, (12, 3))
    vals = rng.uniform(0, 0.3, 12)
    vals[3] = np.nan
    fig = F.plot_glass_brain_r(vals, coords, title="r", display_mode="xz",
                               output_file=tmp_path / "brain.png")
    assert isinstance(fig, matplotlib.figure.Figure) and (tmp_path / "brain.png").stat().st_size
    assert len(fig.axes) >= 2                                   # two views + colour bar
    with pytest.raises(FileExistsError):
        F.plot_glass_brain_r(vals, coords, output_file=tmp_path / "brain.png")
    with pytest.raises(ValueError, match="coords"):
        F.plot_glass_brain_r(vals, coords[:5])
    table = pd.DataFrame({"region": np.repeat(["stg", "ifg", "occ"], 8),
                          "model": np.tile(["A", "B"], 12), "score": rng.uniform(0, .2, 24)})
    fig = F.plot_region_bars(table, error="sem", output_file=tmp_path / "regions.png")
    ax = fig.axes[0]
    assert [tl.get_text() for tl in ax.get_xticklabels()] == list(
        table.groupby("region")["score"].mean().sort_values(ascending=False).index)
    times = np.arange(-2000, 2001, 25)
    r = np.vstack([np.exp(-((times - 200) / 150.0) ** 2) * 0.2, np.zeros(161)])
    fig = F.plot_r_timecourse(r, times, labels=["trained", "random"], ci=(r - .02, r + .02),
                              output_file=tmp_path / "time.png")
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), r[0])
    with pytest.raises(ValueError, match="n_bins"):
        F.plot_r_timecourse(r[:, :100], times)
    sig = np.zeros(12, bool)
    sig[:4] = True
    fig = F.plot_model_scatter(vals, vals / 2, significant=sig, label_a="multi",
                               label_b="uni", output_file=tmp_path / "scatter.png")
    assert (tmp_path / "scatter.png").is_file()
    import matplotlib.pyplot as plt

    plt.close("all")


# ------------------------------------------------------------------- simulator (rows 5-7)
def simulator_acceptance(out_dir, *, n_electrodes: int = 40, duration: float = 600.0,
                         sfreq: float = 512.0, n_boot: int = 200, mode: str = "oof",
                         models=None, scene_shift: int = 7, seed: int = 0,
                         snr: float | None = None, cut_gain: float | None = None,
                         device: str = "cpu", bootstrap_unit: str = "sentence",
                         alignments=("language", "vision")) -> dict:
    """Evidence rows 5-7 of the spec on the movie simulator (test size by default).

    For each alignment, the pipeline's own analysis
    (:func:`bcikit.encoding.pipeline.analyse_alignment` and its per-alignment metrics) of
    subject "1" with the synthetic networks' features (bootstrap ``mode``; ``oof`` is the fast
    mode; ``bootstrap_unit`` ``sentence``, the default, or ``event``), then the same analysis
    with every network's features shifted against the events by
    ``scene_shift`` whole scenes (calibration, row 7: no site should survive).

    Returns a dict with, per alignment, the pipeline's metrics (``trained_beats_random_best``,
    ``random_median_r``, ``trained_median_r``, ``site_precision``, ``site_recall``,
    ``called_fraction``, ...) plus the calibration's ``shifted_site_fraction``.
    """
    from bcikit.encoding.pipeline import _alignment_metrics, analyse_alignment
    from bcikit.simulate.movie_seeg import simulate_movie_seeg

    extra = {k: v for k, v in (("snr", snr), ("cut_gain", cut_gain)) if v is not None}
    sim = simulate_movie_seeg(out_dir, n_subjects=1, n_electrodes=n_electrodes,
                              duration=duration, sfreq=sfreq, seed=seed, **extra)
    catalog = sim.model_catalog()
    names = list(catalog["model"]) if models is None else list(models)

    def shifted(model, events):
        scene = events["scene_idx"].to_numpy()
        firsts = sorted({int(s): int(np.flatnonzero(scene == s)[0]) for s in np.unique(scene)}
                        .items())
        return np.roll(sim.features(model, events), firsts[min(scene_shift,
                                                                len(firsts) - 1)][1], axis=0)

    report: dict = {"settings": {"n_electrodes": n_electrodes, "duration": duration,
                                 "sfreq": sfreq, "n_boot": n_boot, "mode": mode,
                                 "snr": sim.params.get("snr"),
                                 "cut_gain": sim.params.get("cut_gain"),
                                 "models": names, "scene_shift": scene_shift,
                                 "bootstrap_unit": bootstrap_unit}}
    opts = dict(n_boot=n_boot, bootstrap=mode, bootstrap_unit=bootstrap_unit, seed=seed,
                device=device, verbose=False)
    sessions = {"1": sim.session("1")}
    for alignment in alignments:
        real = analyse_alignment(sessions, alignment, sim.features, names, catalog, **opts)
        out = _alignment_metrics(real, sim.truth, catalog)
        calib = analyse_alignment(sessions, alignment, shifted, names, catalog, **opts)
        out["shifted_site_fraction"] = float(calib.sites["site"].mean())
        out["shifted_n_sites"] = int(calib.sites["site"].sum())
        report[alignment] = out
    return report


def test_calibration_shifted_features_call_no_site(tmp_path):
    """Row 7 at a small size, in the default suite: the language analysis calls non-linear
    sites on the real features and none once every network's features are shifted by seven
    scenes against the events (the same electrodes, targets, bootstrap and FDR). Scene cuts
    at the word responses' amplitude (cut_gain 1): this check is language-only. Per-event
    bootstrap: 5 min of movie hold 37 sentences, too few for sentence blocks (~4 per fold
    half; the block bootstrap refuses fewer than 10)."""
    rep = simulator_acceptance(
        tmp_path / "sim", n_electrodes=16, duration=300.0, sfreq=256.0, snr=3.0, cut_gain=1.0,
        n_boot=200, bootstrap_unit="event",
        models=["SLIP-Combo-language", "SLIP-Combo-language-random", "SBERT", "SBERT-random",
                "MultiCat", "MultiCat-random", "SLIP-Combo-vision", "SLIP-Combo-vision-random"],
        alignments=("language",))
    r = rep["language"]
    assert r["n_sites"] >= 1 and r["site_precision"] == 1.0, r
    assert r["shifted_n_sites"] == 0 and r["shifted_site_fraction"] == 0.0, r


@pytest.mark.skipif(not __import__("os").environ.get("BCIKIT_ENCODING_ACCEPTANCE"),
                    reason="3 min on 2 cores: set BCIKIT_ENCODING_ACCEPTANCE=1 to run rows 5-7")
def test_simulator_rows_5_to_7(tmp_path):
    """Rows 5-7 at the spec's size: a 60-min movie at the simulator's default snr and cut gain
    (calibrated to a trained median electrode r of about 0.1 in both alignments), 40
    electrodes, the networks of ``pipelines/encoding.toml``. Shorter movies hold too few scene
    cuts for the vision rows. With the default sentence bootstrap (measured, 40 electrodes):
    words precision 1.00, recall 1.00, shifted 0 %; cuts the same. The per-event bootstrap
    (``bootstrap_unit="event"``) is anti-conservative for words of one sentence: it passed
    here only at the bar (null 5 %, shifted 5 %) and failed row 6 at the spec's 156
    electrodes (benchmarks/README.md "Encoding pipeline at the spec's size")."""
    import tomllib

    models = tomllib.loads((REPO / "pipelines" / "encoding.toml").read_text())["encoding"][
        "models"]
    rep = simulator_acceptance(tmp_path / "sim", duration=3600.0, models=models)
    for alignment in ("language", "vision"):
        r = rep[alignment]
        assert 0.05 <= r["trained_median_r"] <= 0.2, r  # the calibration (spec §7)
        assert r["trained_beats_random_best"] >= 0.9, r
        assert r["random_median_r"] <= 0.02, r
        assert r["site_precision"] >= 0.8 and r["site_recall"] >= 0.6, r
        assert r["called_fraction"].get("additive", 0.0) <= 0.10, r
        assert r["called_fraction"].get("null", 0.0) <= 0.05, r
        assert r["shifted_site_fraction"] <= 0.05, r


if __name__ == "__main__":  # python tests/test_encoding_stats.py OUT_DIR [n_el duration snr]
    import json
    import sys

    from threadpoolctl import threadpool_limits

    args = sys.argv[1:]
    with threadpool_limits(limits=1):
        rep = simulator_acceptance(args[0], n_electrodes=int(args[1]) if len(args) > 1 else 40,
                                   duration=float(args[2]) if len(args) > 2 else 600.0,
                                   snr=float(args[3]) if len(args) > 3 else None)
    print(json.dumps(rep, indent=1, default=str))
