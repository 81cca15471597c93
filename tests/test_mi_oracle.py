"""The motor-imagery simulator's oracle (spec mvcnet §8.4: "oracle accuracy ≈ 85 %", "none above
oracle + CI"): it tracks the task's difficulty, it sits above a real decoder of the sensor data,
the comparison setting is calibrated to it (the compare gate is tested in test_compare.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bcikit.config import ConfigError, load_config, validate_config
from bcikit.evaluate import oracle_bound
from bcikit.simulate import make_motor_imagery, motor_imagery_oracle

REPO = Path(__file__).resolve().parents[1]


def test_oracle_tracks_difficulty_from_perfect_to_chance():
    kw = dict(n_subjects=2, n_sessions=1, n_oracle_trials=80, seed=1)
    easy = motor_imagery_oracle(difficulty=0.0, **kw)
    none = motor_imagery_oracle(difficulty=1.0, **kw)
    mid = motor_imagery_oracle(difficulty=0.6, **kw)
    assert easy.mean > 0.95
    # difficulty 1 leaves no class information: chance, inside the interval
    assert none.ci_low < 0.5 < none.ci_high and abs(none.mean - 0.5) < 0.12
    assert easy.mean > mid.mean > none.mean
    assert list(easy.per_subject["subject"]) == ["S01", "S02"]
    assert (easy.per_subject["n_test"] == 2 * 16).all()  # 80 per class, last 20 % tested
    # deterministic
    again = motor_imagery_oracle(difficulty=0.6, **kw)
    assert again.mean == mid.mean
    # a pipeline's [data] window limits what the oracle reads: the first 0.5 s hold almost no
    # ERD (it ramps up from 0.2 to 0.8 s), the plateau inside 0.5-4 s holds it all
    early = motor_imagery_oracle(difficulty=0.0, window=[0.0, 0.5], **kw)
    assert "0-0.5 s" in early.method and "0.8-4 s" in easy.method
    assert early.mean < easy.mean - 0.2
    d = mid.to_dict()
    assert json.loads(json.dumps(d)) == d and set(d["per_subject"]) == {"S01", "S02"}


def test_oracle_sits_above_a_real_decoder_of_the_sensors():
    """CSP + LDA on the simulated sensors (volume conduction, background, noise, artifacts) of
    the same subjects scores below the oracle, which sees the sources without noise."""
    from mne.decoding import CSP
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.pipeline import make_pipeline

    kw = dict(n_subjects=2, n_sessions=1, n_trials_per_class=120, difficulty=0.575, seed=0)
    oracle = motor_imagery_oracle(**kw, n_oracle_trials=200)
    ts = make_motor_imagery(**kw, verbose=False)
    from scipy.signal import butter, sosfiltfilt

    X = sosfiltfilt(butter(4, (8.0, 32.0), "bandpass", fs=ts.sfreq, output="sos"), ts.X)
    accs = []
    for subject in ts.subjects:
        idx = np.flatnonzero(ts.meta["subject"].to_numpy() == subject)
        y = ts.y[idx]
        train = np.zeros(len(idx), bool)
        for c in (0, 1):
            k = np.flatnonzero(y == c)
            train[k[:int(np.ceil(0.8 * len(k)))]] = True
        clf = make_pipeline(CSP(n_components=6, log=True), LinearDiscriminantAnalysis())
        clf.fit(X[idx[train]], y[train])
        accs.append(clf.score(X[idx[~train]], y[~train]))
    csp = float(np.mean(accs))
    assert 0.6 < csp < oracle.mean, (csp, oracle.mean)
    assert csp < oracle.bound(2 * 48)


def test_comparison_setting_is_calibrated_to_the_specs_oracle():
    """pipelines/shared/mi_co.toml (9 subjects, 2 classes) puts the oracle at about 85 %."""
    cfg = load_config(REPO / "pipelines" / "mvcnet.toml")
    assert cfg.evaluate.oracle is True
    o = motor_imagery_oracle(**dict(cfg.data.simulate), classes=cfg.data.classes,
                             n_oracle_trials=200)
    assert len(o.per_subject) == 9 and o.classes == ["left_hand", "right_hand"]
    assert 0.81 <= o.mean <= 0.89, o.mean


def test_oracle_bound_and_errors():
    # one-sided 95 %: the bound widens as the decoder's test set shrinks, and equals the
    # oracle's mean for an exact oracle and infinitely many test trials
    assert oracle_bound(0.85, (0.85, 0.85), 10 ** 12) == pytest.approx(0.85)
    assert oracle_bound(0.85, (0.83, 0.87), 50) > oracle_bound(0.85, (0.83, 0.87), 500)
    se = np.sqrt((0.04 / (2 * 1.959964)) ** 2 + 0.85 * 0.15 / 100)
    assert oracle_bound(0.85, (0.83, 0.87), 100) == pytest.approx(0.85 + 1.644854 * se, rel=1e-5)
    # a perfect score on a handful of trials is compatible with an oracle at 0.85
    assert oracle_bound(0.85, (0.83, 0.87), 8) > 1.0
    with pytest.raises(ValueError, match="classes"):
        motor_imagery_oracle(n_subjects=1, classes=["left_hand", "feet"])
    with pytest.raises(ValueError, match="n_oracle_trials"):
        motor_imagery_oracle(n_subjects=1, n_oracle_trials=5)
    with pytest.raises(ValueError, match="train_frac"):
        motor_imagery_oracle(n_subjects=1, train_frac=1.0)
    with pytest.raises(ValueError, match="window"):
        motor_imagery_oracle(n_subjects=1, window=[0.5, 4.5])
    with pytest.raises(ConfigError, match=r"\[evaluate\] oracle"):
        validate_config({"pipeline": {"name": "x"}, "model": {"name": "DuIN"},
                         "data": {"simulator": "seeg_words"}, "evaluate": {"oracle": True}})
