"""Classical baselines: learn a known spatial pattern, stay at chance on shuffled labels, equal
their MNE/sklearn reference exactly, and reproduce the PhysioNet S001 reference accuracies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom
from sklearn.base import clone
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from threadpoolctl import threadpool_limits

from bcikit.data import TrialSet, apply_split, get_protocol
from bcikit.models.baselines import BASELINES, make_baseline, make_csp_lda, make_tangent_space_lr


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """The machine is shared: BLAS threads fighting over 2 cores make these tests 5x slower."""
    with threadpool_limits(1):
        yield


def make_band_power_data(rng, *, n_per_class=60, n_chans=8, n_times=128) -> TrialSet:
    """Two classes that differ only in the variance of one hidden source each, mixed by a fixed
    random matrix (the pattern CSP is built to find)."""
    A = rng.standard_normal((n_chans, n_chans))
    y = np.repeat([0, 1], n_per_class)
    S = rng.standard_normal((y.size, n_chans, n_times))
    S[y == 0, 0] *= 2.5
    S[y == 1, 1] *= 2.5
    X = np.einsum("cd,ndt->nct", A, S)
    perm = rng.permutation(y.size)
    meta = pd.DataFrame({"subject": "S1", "onset": np.arange(y.size) * 4.0})
    return TrialSet(X[perm], y[perm], meta, None, ["left", "right"])


def cv_accuracy(pipe, ts: TrialSet, *, seed: int = 0, k: int = 5) -> tuple[float, int]:
    """Pooled accuracy over the test folds of the bcikit kfold protocol; (accuracy, n tested)."""
    correct = tested = 0
    for split in get_protocol("kfold", k=k, seed=seed, valid_frac=0.0).split(ts):
        train, _, test = apply_split(ts, split)
        model = clone(pipe).fit(np.asarray(train.X, np.float64), train.y)
        correct += int((model.predict(np.asarray(test.X, np.float64)) == test.y).sum())
        tested += len(test)
    return correct / tested, tested


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_learn_a_spatial_pattern_and_not_shuffled_labels(name, global_random_seed, rng):
    ts = make_band_power_data(rng)
    acc, n = cv_accuracy(make_baseline(name), ts, seed=global_random_seed)
    print(f"{name} seed {global_random_seed}: accuracy {acc:.3f} on {n} test trials (chance 0.5)")
    assert acc >= 0.9
    shuffled = TrialSet(ts.X, rng.permutation(ts.y), ts.meta, None, ts.classes)
    acc0, n = cv_accuracy(make_baseline(name), shuffled, seed=global_random_seed)
    lo, hi = binom.interval(0.99, n, 0.5)
    print(f"{name} shuffled labels: {acc0:.3f} (99% chance band {lo / n:.3f}-{hi / n:.3f})")
    assert lo / n <= acc0 <= hi / n


def test_csp_lda_equals_direct_mne_csp_and_sklearn_lda(rng):
    from mne.decoding import CSP

    ts = make_band_power_data(rng, n_per_class=30)
    X, y = np.asarray(ts.X, np.float64), ts.y
    Xtr, ytr, Xte = X[:40], y[:40], X[40:]
    pipe = make_csp_lda(4).fit(Xtr, ytr)
    csp = CSP(n_components=4, reg=None, log=True).fit(Xtr, ytr)
    lda = LinearDiscriminantAnalysis().fit(csp.transform(Xtr), ytr)
    np.testing.assert_array_equal(pipe.named_steps["csp"].filters_, csp.filters_)
    np.testing.assert_array_equal(pipe.decision_function(Xte), lda.decision_function(csp.transform(Xte)))
    np.testing.assert_array_equal(pipe.predict(Xte), lda.predict(csp.transform(Xte)))


def test_tangent_space_lr_matches_its_parts(rng):
    from pyriemann.estimation import Covariances
    from pyriemann.tangentspace import TangentSpace
    from sklearn.linear_model import LogisticRegression

    ts = make_band_power_data(rng, n_per_class=20)
    X, y = np.asarray(ts.X, np.float64), ts.y
    pipe = make_tangent_space_lr(C=0.5).fit(X, y)
    C = Covariances("oas").fit_transform(X)
    T = TangentSpace(metric="riemann").fit_transform(C)
    lr = LogisticRegression(C=0.5, max_iter=1000).fit(T, y)
    np.testing.assert_allclose(pipe.predict_proba(X), lr.predict_proba(T), rtol=1e-10)


def test_make_baseline_registry_and_errors():
    pipe = make_baseline("csp_lda", n_components=6, reg="ledoit_wolf")
    assert pipe.named_steps["csp"].n_components == 6 and pipe.named_steps["csp"].reg == "ledoit_wolf"
    ts_lr = make_baseline("ts_lr", estimator="lwf", metric="logeuclid", C=2.0)
    assert ts_lr.named_steps["cov"].estimator == "lwf" and ts_lr.named_steps["lr"].C == 2.0
    with pytest.raises(ValueError, match=r"Unknown baseline 'svm'; allowed: \['csp_lda', 'ts_lr'\]"):
        make_baseline("svm")
    with pytest.raises(ValueError, match=r"Unknown parameter 'alpha' for baseline 'ts_lr'"):
        make_baseline("ts_lr", alpha=1)
    with pytest.raises(ValueError, match=r"'C' parameter of make_tangent_space_lr must be > 0"):
        make_tangent_space_lr(C=0)
    from bcikit.models import get_model

    assert type(get_model("csp_lda")).__name__ == "Pipeline"


# ---------------------------------------------------------------------------------------- real data
def _physionet_trials(folder, runs) -> TrialSet:
    """PhysioNet eegmmidb S001: EDF -> 7-30 Hz FIR on the concatenated runs -> T1/T2 epochs
    0.5-2.5 s (PROVENANCE.md section 1)."""
    import mne

    raws = [mne.io.read_raw_edf(folder / f"S001R{r:02d}.edf", preload=True, verbose="error")
            for r in runs]
    raw = mne.concatenate_raws(raws)
    raw.filter(7.0, 30.0, fir_design="firwin", skip_by_annotation="edge", verbose="error")
    events, event_id = mne.events_from_annotations(raw, event_id={"T1": 2, "T2": 3},
                                                   verbose="error")
    epochs = mne.Epochs(raw, events, event_id, tmin=0.5, tmax=2.5, baseline=None, picks="eeg",
                        preload=True, verbose="error")
    meta = pd.DataFrame({"subject": "S001", "session": "0", "run": "0",
                         "onset": epochs.events[:, 0] / raw.info["sfreq"]})
    return TrialSet.from_epochs(epochs, classes=["T1", "T2"], meta=meta)


@pytest.mark.realdata
@pytest.mark.parametrize("runs,reference,low,high", [
    ((6, 10, 14), 0.98, 0.93, 1.0),   # fists vs feet imagery
    ((4, 8, 12), 0.71, 0.62, 0.80),   # left vs right fist imagery
], ids=["fists-feet", "left-right"])
def test_csp_lda_on_physionet_s001(realdata, runs, reference, low, high):
    ts = _physionet_trials(realdata / "eegmmidb_S001", runs)
    assert ts.X.shape == (45, 64, 321)
    acc, n = cv_accuracy(make_csp_lda(4), ts, seed=0)
    print(f"PhysioNet S001 runs {runs}: CSP+LDA 5-fold accuracy {acc:.4f} "
          f"(reference {reference}, {n} trials)")
    assert n == 45 and low <= acc <= high
