"""Movie-watching sEEG simulator (bcikit.simulate.movie_seeg): files, truth, synthetic networks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold, cross_val_predict

from bcikit.encoding.events import make_events
from bcikit.encoding.targets import make_targets
from bcikit.simulate.movie_seeg import (
    CLASS_REGIONS,
    SYNTHETIC_MODELS,
    load_movie_simulation,
    model_catalog,
    simulate_movie_seeg,
)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("moviesim") / "release"
    return simulate_movie_seeg(root, n_subjects=2, n_electrodes=40, duration=600.0, sfreq=512.0,
                               snr=0.6, seed=5)


@pytest.fixture(scope="module")
def events(sim):
    session = sim.session("1")
    return {a: make_events(session, a) for a in ("language", "vision")}


def _cv_r(X, T):
    """Mean over columns of T of the correlation of 5-fold (contiguous) ridge predictions."""
    X = (X - X.mean(0)) / X.std(0)
    pred = cross_val_predict(RidgeCV(alphas=np.logspace(-1, 5, 7)), X, T, cv=KFold(5))
    return float(np.mean([np.corrcoef(pred[:, i], T[:, i])[0, 1] for i in range(T.shape[1])]))


def test_truth_classes_regions_and_files(sim):
    assert sim.subjects == ["1", "2"]
    truth = sim.truth
    assert len(truth) == 80
    for _, t in truth.groupby("subject"):
        counts = t["class"].value_counts().to_dict()
        assert counts == {"null": 20, "vision": 6, "language": 6, "nonlinear": 4, "additive": 4}
    for _, row in truth.iterrows():  # DKT labels follow the class
        assert row["region"].split("-", 2)[2] in CLASS_REGIONS[row["class"]]
        assert row["region"].startswith("ctx-lh-" if row["electrode"][0] == "L" else "ctx-rh-")
    assert (truth["responsive"] == (truth["class"] != "null")).all()
    assert not truth.loc[truth["class"] == "vision", "responsive_language"].any()
    assert truth.loc[truth["class"] == "nonlinear", "responsive_vision"].all()
    assert truth["peak_ms"].between(100, 400).all() and truth["width_ms"].between(150, 300).all()
    root = sim.root
    for s in sim.subjects:
        assert (root / f"sub_{s}_trial000.h5").is_file()
        labels = json.loads((root / "electrode_labels" / f"sub_{s}" /
                             "electrode_labels.json").read_text())
        assert len(labels) == 43  # 40 analysed + 2 corrupted + 1 trigger
    corrupted = json.loads((root / "corrupted_elec.json").read_text())
    assert sorted(corrupted) == ["sub_1", "sub_2"] and all(len(v) == 2 for v in corrupted.values())
    features = pd.read_csv(root / "transcripts" / sim.movie / "features.csv")
    assert {"text", "start", "end", "sentence", "sentence_idx", "idx_in_sentence",
            "is_onset"} <= set(features.columns)
    # about 2.5 words/s during dialogue, dialogue about 40 % of the time
    rate = len(features) / sim.params["duration"]
    assert 0.5 < rate < 1.6
    cuts = pd.read_csv(root / "scene_annotations" / sim.movie / "scenes.csv")["start"]
    gaps = np.diff(cuts.to_numpy()[:-1])
    assert gaps.min() >= 2.0 - 1e-9 and gaps.max() <= 8.0 + 1e-9


def test_triggers_jittered_about_one_second(sim):
    trig = pd.read_csv(sim.root / "subject_timings" / "sub_1_trial000_timings.csv")
    gaps = np.diff(trig["movie_time"])
    assert 0.85 <= gaps.min() and gaps.max() <= 1.15 and gaps.std() > 0.05
    np.testing.assert_array_equal(trig["index"], sim.true_samples("1", trig["movie_time"]))


def test_refuses_to_overwrite_and_checks_parameters(sim, tmp_path):
    with pytest.raises(FileExistsError, match="never overwritten"):
        simulate_movie_seeg(sim.root, n_subjects=1, n_electrodes=10, duration=60, sfreq=256)
    with pytest.raises(ValueError, match="n_electrodes"):
        simulate_movie_seeg(tmp_path / "a", n_electrodes=3)
    with pytest.raises(ValueError, match="sfreq"):
        simulate_movie_seeg(tmp_path / "b", sfreq=100.0)
    with pytest.raises(TypeError, match="n_subjects"):
        simulate_movie_seeg(tmp_path / "c", n_subjects=1.5)
    with pytest.raises(ValueError, match="cut_gain"):
        simulate_movie_seeg(tmp_path / "d", cut_gain=-1.0)
    assert not (tmp_path / "a").exists()


def test_load_round_trip(sim, events):
    again = load_movie_simulation(sim.root)
    pd.testing.assert_frame_equal(again.truth, sim.truth)
    assert again.params == json.loads(json.dumps(sim.params))
    ev = events["language"]
    for model in ("ALBEF", "SimCSE-random"):
        np.testing.assert_array_equal(again.features(model, ev), sim.features(model, ev))
    with pytest.raises(ValueError, match="no movie simulation"):
        load_movie_simulation(sim.root / "truth")


def test_catalog_and_feature_shapes(sim, events):
    cat = model_catalog()
    assert len(cat) == 2 * len(SYNTHETIC_MODELS)
    assert set(cat["kind"]) == {"multimodal", "vision", "language", "linear"}
    trained = cat[cat["trained"]]
    assert (trained["twin"] == trained["model"] + "-random").all()
    assert set(trained["twin"]) == set(cat.loc[~cat["trained"], "model"])
    ev = events["language"]
    feats = sim.feature_sets(None, ev)
    for name, X in feats.items():
        assert X.shape[0] == len(ev) and X.dtype == np.float32 and np.isfinite(X).all()
        base = name.removesuffix("-random")
        assert X.shape[1] == feats[base].shape[1]
    np.testing.assert_allclose(feats["MultiCat"],
                               np.hstack([feats["SimCSE"], feats["SLIP-SimCLR"]]))
    np.testing.assert_allclose(feats["MultiCat-random"],
                               np.hstack([feats["SimCSE-random"], feats["SLIP-SimCLR-random"]]))
    n = feats["SLIP-SimCLR"].shape[1]
    np.testing.assert_allclose(feats["SLIP-Combo-vision"][:, :n], feats["SLIP-SimCLR"])
    # same event -> same features (movie-level), different networks -> different features
    np.testing.assert_array_equal(sim.features("BLIP", ev.iloc[5:9]), feats["BLIP"][5:9])
    assert not np.allclose(feats["SBERT"], feats["SimCSE"])
    with pytest.raises(ValueError, match="Unknown synthetic model"):
        sim.features("GPT", ev)
    with pytest.raises(ValueError, match="sentence_idx"):
        sim.features("ALBEF", ev.drop(columns="sentence_idx"))


def test_trained_networks_recover_latents_random_twins_do_not(sim, events):
    # word events in time order: repeated images/sentences stay inside one contiguous fold
    ev = events["language"]
    lat = sim.latents(ev)
    f = lambda m: sim.features(m, ev).astype(np.float64)  # noqa: E731
    assert _cv_r(f("SLIP-SimCLR"), lat["v"]) > 0.8
    assert _cv_r(f("SimCSE"), lat["l"]) > 0.8
    assert _cv_r(f("ALBEF"), lat["vPl"]) > 0.6        # multimodal: the interaction
    assert _cv_r(f("MultiCat"), lat["vPl"]) < 0.2     # concatenation: no interaction
    assert _cv_r(f("SLIP-Combo-vision"), lat["vPl"]) > 0.3   # from the image alone
    assert _cv_r(f("SLIP-SimCLR"), lat["vPl"]) < 0.2
    for twin in ("SLIP-SimCLR-random", "SimCSE-random", "ALBEF-random"):
        assert _cv_r(f(twin), np.hstack([lat["v"], lat["l"]])) < 0.1


def test_drives_follow_the_classes(sim, events):
    truth = sim.truth[sim.truth["subject"] == "1"].reset_index(drop=True)
    session = sim.session("1")
    assert list(truth["electrode"]) == session.ch_names
    cls = truth["class"].to_numpy()
    lang = sim.drives("1", events["language"])
    vis = sim.drives("1", events["vision"])
    assert np.all(lang[:, cls == "null"] == 0) and np.all(vis[:, cls == "null"] == 0)
    assert np.all(lang[:, cls == "vision"] == 0) and np.all(vis[:, cls == "language"] == 0)
    assert np.all(lang[:, cls == "language"].std(axis=0) > 0.5)
    assert np.all(vis[:, cls == "vision"].std(axis=0) > 0.5)
    lat = sim.latents(events["vision"])
    j = int(np.flatnonzero(cls == "additive")[0])
    # additive electrodes are linear in v and l: a linear fit explains them exactly
    Z = np.hstack([lat["v"], lat["l"]])
    coef, *_ = np.linalg.lstsq(Z, vis[:, j], rcond=None)
    np.testing.assert_allclose(Z @ coef, vis[:, j], atol=1e-8)


def test_trained_beats_random_at_responsive_electrodes(sim, events):
    """Encoding on the simulated recording: at >= 90 % of the electrodes that respond to word
    onsets, a trained multimodal network predicts the binned targets around the response peak
    better than its random twin; the twin's median r is about 0."""
    session = sim.session("1")
    ev = events["language"]
    truth = sim.truth[sim.truth["subject"] == "1"].set_index("electrode")
    names = [n for n in session.ch_names if truth.at[n, "responsive_language"]]
    tg = make_targets(session, ev, picks=names)
    Y = tg.cube().astype(np.float64)
    cols = []
    for j, name in enumerate(names):  # the bin centred nearest the binned-response peak
        k = int(np.argmin(np.abs(tg.times + 100 - truth.at[name, "window_peak_ms"])))
        cols.append(Y[:, j, k])
    T = np.column_stack(cols)
    scores = {}
    for model in ("ALBEF", "ALBEF-random"):
        X = sim.features(model, ev).astype(np.float64)
        X = (X - X.mean(0)) / X.std(0)
        pred = cross_val_predict(RidgeCV(alphas=np.logspace(-1, 5, 7)), X, T, cv=KFold(5))
        scores[model] = np.array([np.corrcoef(pred[:, i], T[:, i])[0, 1]
                                  for i in range(T.shape[1])])
    assert len(names) >= 12
    assert np.mean(scores["ALBEF"] > scores["ALBEF-random"]) >= 0.9
    assert abs(np.median(scores["ALBEF-random"])) < 0.1
    assert np.median(scores["ALBEF"]) > 0.2
