"""Transforms fitted on training data: exact matches to MNE, EA identities, leak guards."""

from __future__ import annotations

import copy

import mne
import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from bcikit.data import TrialSet, apply_split, get_protocol
from bcikit.data.transforms import (BandPass, ChannelScaler, Compose, DataLeakError,
                                    EuclideanAlignment, LeakGuard, Resample, check_no_leak,
                                    make_transforms, trial_covariances)


def make_signals(rng, *, n_subjects=2, per_subject=20, n_chans=4, n_times=250, sfreq=250.0,
                 shuffle=False) -> TrialSet:
    """Correlated multichannel noise, a different mixing per subject; onsets in recording order."""
    Xs, metas = [], []
    for s in range(n_subjects):
        A = rng.standard_normal((n_chans, n_chans)) + 2 * np.eye(n_chans)
        Xs.append(np.einsum("cd,ndt->nct", A, rng.standard_normal((per_subject, n_chans, n_times))))
        metas.append(pd.DataFrame({"subject": f"S{s + 1}", "session": "0", "run": "0",
                                   "onset": 5.0 * np.arange(per_subject)}))
    X = np.concatenate(Xs).astype(np.float32) * 1e-5
    meta = pd.concat(metas, ignore_index=True)
    y = rng.integers(0, 2, len(meta))
    if shuffle:
        perm = rng.permutation(len(meta))
        X, y, meta = X[perm], y[perm], meta.iloc[perm].reset_index(drop=True)
    info = mne.create_info([f"EEG{i}" for i in range(n_chans)], sfreq, "eeg")
    return TrialSet(X, y, meta, info, ["a", "b"])


def _mean_cov(X):
    return trial_covariances(X).mean(axis=0)


# ---------------------------------------------------------------------------------------- filters
@pytest.mark.parametrize("method", ["iir", "fir"])
def test_bandpass_equals_mne_filter_data(method, rng):
    ts = make_signals(rng, n_subjects=1, per_subject=3, n_times=1000)
    out = BandPass(8, 32, method=method).fit_transform(ts)
    kw = (dict(iir_params=dict(order=4, ftype="butter", output="sos")) if method == "iir" else {})
    ref = mne.filter.filter_data(ts.X.astype(np.float64), 250.0, 8, 32, method=method,
                                 verbose="error", **kw)
    scale = np.abs(ref).max()
    assert out.X.dtype == np.float32 and out.X.shape == ts.X.shape
    np.testing.assert_allclose(out.X / scale, ref / scale, atol=1e-6)
    assert (out.info["highpass"], out.info["lowpass"]) == (8.0, 32.0)
    assert ts.info["lowpass"] == 125.0  # input untouched
    fitted = BandPass(8, 32, method=method).fit(ts)  # the MNE methods design nothing in fit
    assert fitted.sos_ is None and fitted.order_ is None
    # a 3 Hz tone is removed, a 15 Hz tone passes (centre of the trial, away from edges)
    t = np.arange(1000) / 250.0
    tones = TrialSet(np.stack([np.stack([np.sin(2 * np.pi * 3 * t), np.sin(2 * np.pi * 15 * t)])]),
                     [0], None, mne.create_info(["a", "b"], 250.0, "eeg"))
    f = BandPass(8, 32, method=method).fit_transform(tones).X[0, :, 250:750]
    assert np.abs(f[0]).max() < 0.05 and 0.9 < np.abs(f[1]).max() < 1.1


def test_bandpass_cheby2_is_the_fleeg_filter(rng):
    """method="cheby2" designs scipy's Chebyshev-II (order from 1 dB / 40 dB), filters with zero
    phase, and gives what bcikit.models.fleeg.bandpass gives (which is a thin call to it)."""
    from scipy import signal

    from bcikit.models.fleeg import FLEEG_BAND, bandpass

    ts = make_signals(rng, n_subjects=1, per_subject=3, n_times=1000)
    f = BandPass(0.3, 40, method="cheby2", l_stop=0.1, h_stop=45)
    out = f.fit_transform(ts)
    # the design: exactly scipy's cheb2ord + cheby2 for the spec's edges
    order, wn = signal.cheb2ord([0.3, 40], [0.1, 45], 1, 40, fs=250.0)
    np.testing.assert_array_equal(f.sos_, signal.cheby2(order, 40, wn, btype="bandpass",
                                                        output="sos", fs=250.0))
    assert f.order_ == order == 11
    ref = signal.sosfiltfilt(f.sos_, ts.X.astype(np.float64), axis=-1)
    scale = np.abs(ref).max()
    assert out.X.dtype == np.float32 and out.X.shape == ts.X.shape
    assert np.abs(out.X - ref).max() <= 1e-6 * scale
    # fleeg.bandpass on the array == BandPass(**FLEEG_BAND) on the TrialSet, to 1e-6
    assert FLEEG_BAND == dict(l_freq=0.3, h_freq=40.0, method="cheby2", l_stop=0.1, h_stop=45.0,
                              gpass=1.0, gstop=40.0)
    fleeg = bandpass(ts.X, 250.0)
    assert np.abs(fleeg - out.X).max() <= 1e-6 * scale
    assert np.abs(BandPass(**FLEEG_BAND).fit_transform(ts).X - fleeg).max() <= 1e-6 * scale
    assert (out.info["highpass"], out.info["lowpass"]) == (0.3, 40.0)
    # default stop edges: l_freq / 3 and 1.125 * h_freq (FLEEG's 0.1 and 45 Hz)
    assert np.abs(BandPass(0.3, 40, method="cheby2").fit_transform(ts).X - out.X).max() \
        <= 1e-6 * scale
    # a configured pipeline reaches it through make_transforms
    pre = make_transforms({"bandpass": {"l_freq": 0.3, "h_freq": 40, "method": "cheby2"}})
    assert np.abs(pre.fit_transform(ts).X - out.X).max() <= 1e-6 * scale
    # low- and high-pass forms; the stop edges are checked against the Nyquist frequency
    t = np.arange(1000) / 250.0
    tones = TrialSet(np.stack([np.stack([np.sin(2 * np.pi * 3 * t), np.sin(2 * np.pi * 15 * t),
                                         np.sin(2 * np.pi * 60 * t)])]),
                     [0], None, mne.create_info(["a", "b", "c"], 250.0, "eeg"))
    band = BandPass(8, 32, method="cheby2").fit_transform(tones).X[0, :, 250:750]
    assert np.abs(band[0]).max() < 0.02 and 0.85 < np.abs(band[1]).max() < 1.01
    assert np.abs(band[2]).max() < 0.02
    low = BandPass(None, 32, method="cheby2").fit_transform(tones).X[0, :, 250:750]
    assert 0.85 < np.abs(low[0]).max() < 1.01 and np.abs(low[2]).max() < 0.02
    high = BandPass(8, None, method="cheby2").fit_transform(tones).X[0, :, 250:750]
    assert np.abs(high[0]).max() < 0.02 and 0.85 < np.abs(high[2]).max() < 1.01
    with pytest.raises(ValueError, match=r"h_stop < Nyquist \(125 Hz"):
        BandPass(0.3, 40, method="cheby2", h_stop=130).fit(ts)
    with pytest.raises(ValueError, match=r"l_stop/h_stop apply to method='cheby2' only"):
        BandPass(8, 30, l_stop=4).fit(ts)


def test_bandpass_and_resample_reject_bad_input(rng):
    ts = make_signals(rng, n_subjects=1, per_subject=2)
    with pytest.raises(ValueError, match=r"Nyquist frequency 125 Hz"):
        BandPass(8, 125).fit(ts)
    with pytest.raises(ValueError, match=r"l_freq < h_freq"):
        BandPass(30, 8).fit(ts)
    with pytest.raises(ValueError, match=r"'method' parameter of BandPass must be one of"):
        BandPass(8, 30, method="fft").fit(ts)
    fitted = BandPass(8, 30).fit(ts)
    other = make_signals(rng, n_subjects=1, per_subject=2, sfreq=500.0)
    with pytest.raises(ValueError, match=r"fitted at 250 Hz but the TrialSet is sampled at 500 Hz"):
        fitted.transform(other)
    with pytest.raises(NotFittedError):
        Resample(128).transform(ts)
    voxels = TrialSet(np.zeros((3, 10)), [0, 1, 0])
    with pytest.raises(ValueError, match=r"needs signal trials"):
        EuclideanAlignment().fit(voxels)


def test_resample_equals_mne_and_updates_info(rng):
    ts = make_signals(rng, n_subjects=1, per_subject=3, n_times=1000)
    out = Resample(128).fit_transform(ts)
    ref = mne.filter.resample(ts.X.astype(np.float64), up=128.0, down=250.0, method="polyphase",
                              verbose="error")
    assert out.X.shape == (3, 4, 512) and out.sfreq == 128.0 and out.info["lowpass"] == 64.0
    np.testing.assert_allclose(out.X, ref.astype(np.float32), rtol=0, atol=1e-6 * np.abs(ref).max())
    # a 10 Hz tone keeps its frequency
    t = np.arange(1000) / 250.0
    tone = TrialSet(np.sin(2 * np.pi * 10 * t)[None, None], [0], None,
                    mne.create_info(["a"], 250.0, "eeg"))
    r = Resample(128).fit_transform(tone).X[0, 0].astype(float)
    spec = np.abs(np.fft.rfft(r * np.hanning(r.size)))
    assert np.fft.rfftfreq(r.size, 1 / 128)[spec.argmax()] == pytest.approx(10.0, abs=0.25)


# ---------------------------------------------------------------------------------------- EA
@pytest.mark.parametrize("per", ["subject", "all"])
def test_euclidean_alignment_whitens_training_trials(per, rng):
    ts = make_signals(rng)
    ea = EuclideanAlignment(per=per).fit(ts)
    out = ea.transform(ts)
    groups = ts.by_subject() if per == "subject" else {"all": ts}
    aligned = out.by_subject() if per == "subject" else {"all": out}
    for g, part in groups.items():
        R = _mean_cov(part.X)
        np.testing.assert_allclose(ea.references_[g], R, rtol=1e-10)
        np.testing.assert_allclose(_mean_cov(aligned[g].X), np.eye(4), atol=1e-5)
        # aligned trial = R^(-1/2) X, with R^(-1/2) symmetric and squaring to R^(-1)
        W = ea.whiteners_[g]
        np.testing.assert_allclose(W @ W @ R, np.eye(4), atol=1e-8)
        np.testing.assert_allclose(aligned[g].X, np.einsum("cd,ndt->nct", W, part.X),
                                   rtol=1e-5, atol=1e-6 * np.abs(aligned[g].X).max())
    # the reference mixes subjects only when per="all"
    if per == "subject":
        R1, R2 = ea.references_["S1"], ea.references_["S2"]
        assert np.abs(R1 - R2).max() > 0.1 * np.abs(R1).max()


def test_ea_fitted_on_train_is_applied_to_test_of_the_same_subject(rng):
    ts = make_signals(rng, n_subjects=1, per_subject=30)
    split = get_protocol("chronological", valid_frac=0.0).split(ts)[0]
    train, _, test = apply_split(ts, split)
    ea = EuclideanAlignment().fit(train)
    W = ea.whiteners_["S1"]
    np.testing.assert_allclose(ea.transform(test).X, np.einsum("cd,ndt->nct", W, test.X),
                               rtol=1e-5, atol=1e-12)
    # and the test trials did not shape R
    np.testing.assert_allclose(ea.references_["S1"], _mean_cov(train.X), rtol=1e-12)


def test_ea_unseen_subject_modes(rng):
    ts = make_signals(rng, n_subjects=2, per_subject=12, shuffle=True)
    train, test = ts[np.flatnonzero(ts.meta["subject"] == "S1")], \
        ts[np.flatnonzero(ts.meta["subject"] == "S2")]
    with pytest.raises(ValueError, match=r"subject 'S2' was not seen in fit"):
        EuclideanAlignment().fit(train).transform(test)
    trans = EuclideanAlignment(test_mode="transductive").fit(train).transform(test)
    np.testing.assert_allclose(_mean_cov(trans.X), np.eye(4), atol=1e-5)

    causal = EuclideanAlignment(test_mode="causal").fit(train).transform(test)
    order = np.argsort(test.meta["onset"].to_numpy())  # recording order (rows are shuffled)
    covs = trial_covariances(test.X[order])
    for i in (0, 1, 5, len(order) - 1):
        R_i = covs[:i + 1].mean(axis=0)
        w, V = np.linalg.eigh(R_i)
        W_i = (V / np.sqrt(w)) @ V.T
        np.testing.assert_allclose(causal.X[order[i]], W_i @ test.X[order[i]],
                                   rtol=1e-4, atol=1e-5 * np.abs(causal.X[order[i]]).max())
    # trial 0 in recording order uses only itself: its own covariance becomes the identity
    np.testing.assert_allclose(trial_covariances(causal.X[order[:1]])[0], np.eye(4), atol=1e-5)
    # causality: changing trial k changes no earlier aligned trial, but does change trial k
    k = 6
    changed = test.copy()
    changed.X[order[k]] *= 3.0
    changed.X[order[k:]] += rng.standard_normal(changed.X[order[k:]].shape).astype(np.float32) * 1e-5
    again = EuclideanAlignment(test_mode="causal").fit(train).transform(changed)
    np.testing.assert_array_equal(again.X[order[:k]], causal.X[order[:k]])
    assert not np.allclose(again.X[order[k]], causal.X[order[k]])
    # seen subjects still use their fitted reference in causal mode
    seen = EuclideanAlignment(test_mode="causal").fit(train)
    np.testing.assert_allclose(seen.transform(train).X, EuclideanAlignment().fit(train).transform(train).X)


def test_ea_singular_reference_raises(rng):
    ts = make_signals(rng, n_subjects=1, per_subject=5)
    X = ts.X.copy()
    X[:, 3] = X[:, 0] + X[:, 1]  # rank 3 out of 4
    bad = TrialSet(X, ts.y, ts.meta, ts.info, ts.classes)
    with pytest.raises(ValueError, match=r"mean covariance of subject 'S1' is singular"):
        EuclideanAlignment().fit(bad)
    EuclideanAlignment(reg=0.1).fit(bad)  # shrinkage makes it usable


# ---------------------------------------------------------------------------------------- scaling, compose
def test_channel_scaler_standardises_training_channels(rng):
    ts = make_signals(rng, n_subjects=1, per_subject=10)
    sc = ChannelScaler().fit(ts)
    out = sc.transform(ts).X.astype(np.float64)
    np.testing.assert_allclose(out.mean(axis=(0, 2)), 0, atol=1e-6)
    np.testing.assert_allclose(out.std(axis=(0, 2)), 1, atol=1e-5)
    np.testing.assert_allclose(sc.mean_, ts.X.astype(np.float64).mean(axis=(0, 2)), rtol=1e-10)


def test_make_transforms_builds_the_canonical_chain(rng):
    cfg = {"scale": "channel", "alignment": {"method": "euclidean", "test_mode": "causal"},
           "resample": 125, "bandpass": [8, 32]}
    pre = make_transforms(cfg)
    assert [type(s).__name__ for s in pre.steps] == ["BandPass", "Resample", "EuclideanAlignment",
                                                    "ChannelScaler"]
    assert pre[2].test_mode == "causal" and pre[1].sfreq == 125
    ts = make_signals(rng, n_subjects=1, per_subject=8, n_times=500)
    out = pre.fit_transform(ts)
    # equals applying the steps one by one
    manual = ts
    for step in (BandPass(8, 32), Resample(125), EuclideanAlignment(test_mode="causal"),
                 ChannelScaler()):
        manual = step.fit_transform(manual)
    np.testing.assert_array_equal(out.X, manual.X)
    assert out.sfreq == 125.0 and out.n_times == 250
    assert len(make_transforms(None)) == 0 and len(make_transforms({"alignment": None})) == 0
    with pytest.raises(ValueError, match=r"Unknown preprocessing key 'filter'; allowed"):
        make_transforms({"filter": [8, 32]})
    with pytest.raises(ValueError, match=r"Unknown parameter 'order' in preprocessing 'bandpass'"):
        make_transforms({"bandpass": {"l_freq": 8, "h_freq": 32, "order": 4}})
    with pytest.raises(ValueError, match=r"'alignment' parameter of make_transforms must be one of"):
        make_transforms({"alignment": "riemann"})


# ---------------------------------------------------------------------------------------- leaks
def test_leak_guard_passes_train_fits_and_catches_test_fits(rng):
    ts = make_signals(rng, n_subjects=1, per_subject=30)
    split = get_protocol("chronological").split(ts)[0]
    train, valid, test = apply_split(ts, split)
    pre = make_transforms({"bandpass": [8, 32], "alignment": "euclidean", "scale": "channel"})
    with LeakGuard(split) as guard:
        pre.fit(train)
        pre.transform(valid), pre.transform(test)  # transforming the test set is allowed
    assert guard.n_fits_ == 4  # Compose + its three steps were checked
    check_no_leak(pre, split)
    np.testing.assert_array_equal(pre.fit_trials_, split.train)
    with pytest.raises(DataLeakError, match=r"Compose was fitted on 1 test trial"):
        with LeakGuard(split):
            make_transforms({"scale": "channel"}).fit(TrialSet.concatenate([train, test[[0]]]))
    leaky = EuclideanAlignment().fit(TrialSet.concatenate([train, test]))
    with pytest.raises(DataLeakError, match=rf"EuclideanAlignment was fitted on {len(test)} test"):
        check_no_leak(leaky, test)
    with pytest.raises(ValueError, match=r"without a 'trial_index' column"):
        with LeakGuard(split):
            ChannelScaler().fit(ts)  # untagged data cannot be checked


def test_changing_the_test_set_does_not_change_fitted_state(rng):
    ts = make_signals(rng, n_subjects=1, per_subject=30)
    split = get_protocol("chronological", valid_frac=0.0).split(ts)[0]
    train, _, test = apply_split(ts, split)
    pre = make_transforms({"bandpass": [8, 32], "alignment": "euclidean", "scale": "channel"})
    pre.fit(train)
    state = copy.deepcopy([vars(s) for s in pre.steps])
    out1 = pre.transform(test).X.copy()
    test.X[:] = rng.standard_normal(test.X.shape).astype(np.float32)  # a different test set
    out2 = pre.transform(test).X
    assert not np.allclose(out1, out2)
    for before, step in zip(state, pre.steps):
        after = vars(step)
        assert before.keys() == after.keys()
        for key, value in before.items():
            if isinstance(value, dict):
                for g in value:
                    np.testing.assert_array_equal(value[g], after[key][g])
            elif isinstance(value, np.ndarray):
                np.testing.assert_array_equal(value, after[key])
            else:
                assert value == after[key]
    # and refitting on the same training data gives the same state whatever the test set holds
    again = make_transforms({"bandpass": [8, 32], "alignment": "euclidean", "scale": "channel"})
    again.fit(train)
    np.testing.assert_array_equal(again.steps[1].whiteners_["S1"], pre.steps[1].whiteners_["S1"])


def test_compose_rejects_non_transforms():
    with pytest.raises(TypeError, match=r"Compose step 0"):
        Compose([object()]).fit(TrialSet(np.zeros((2, 1, 4)), [0, 1]))
