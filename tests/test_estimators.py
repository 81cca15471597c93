"""scikit-learn estimators: learning on simulated motor imagery, chance on shuffled labels,
train-only Euclidean alignment, equality with the Trainer, parameter and data errors, and
scikit-learn's estimator checks. One torch thread; small data."""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest
import torch
from scipy.linalg import fractional_matrix_power
from scipy.stats import binom
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from bcikit.data.transforms import trial_covariances
from bcikit.estimators import BCIClassifier, MVCNetClassifier
from bcikit.evaluate import chance_threshold

SFREQ = 64.0
CH_NAMES = ["FC3", "FC4", "C3", "Cz", "C4", "CP3", "CP4", "Pz"]  # mirror pairs + midline
N_PER_CLASS = 50
TRAIN_FRACTION = 0.7
MI_EPOCHS = 5


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class TinyNet(torch.nn.Module):
    """A linear classifier with the braindecode signature (fast enough for every check)."""

    def __init__(self, n_chans: int, n_outputs: int, n_times: int):
        super().__init__()
        self.linear = torch.nn.Linear(n_chans * n_times, n_outputs)

    def forward(self, X):
        return self.linear(X.flatten(1))


# ---------------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=1)
def _mi_data():
    """One simulated subject, 8 named channels, 64 Hz, 2 s trials, band-passed 8-30 Hz; the
    first 70 % of each class's trials (recording order) train, the rest test."""
    import mne

    from bcikit.simulate import make_motor_imagery

    ts = make_motor_imagery(n_subjects=1, n_sessions=1, n_trials_per_class=N_PER_CLASS,
                            sfreq=SFREQ, trial_duration=2.0, ch_names=CH_NAMES, seed=0)
    X = mne.filter.filter_data(ts.X.astype(np.float64), SFREQ, 8.0, 30.0, method="iir",
                               verbose="error").astype(np.float32)
    y = np.asarray(ts.label_names)
    order = np.lexsort((ts.meta["onset"].to_numpy(), ts.meta["run"].astype(int).to_numpy()))
    X, y = X[order], y[order]
    train = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        train[idx[:int(TRAIN_FRACTION * len(idx))]] = True
    return X[train], y[train], X[~train], y[~train]


@pytest.fixture
def mi_data():
    return _mi_data()


@functools.lru_cache(maxsize=4)
def _fit_mvcnet(seed: int, shuffle: bool = False) -> MVCNetClassifier:
    X_tr, y_tr, _, _ = _mi_data()
    if shuffle:
        y_tr = np.random.default_rng(100 + seed).permutation(y_tr)
    clf = MVCNetClassifier(sfreq=SFREQ, ch_names=CH_NAMES, epochs=MI_EPOCHS, batch_size=16,
                           device="cpu", random_state=seed)
    return clf.fit(X_tr, y_tr)


def _random_trials(rng, n=24, n_chans=4, n_times=32):
    X = rng.standard_normal((n, n_chans, n_times)).astype(np.float32)
    y = np.array(["a", "b"] * (n // 2))
    return X, y


# ---------------------------------------------------------------------------------- learning
def test_mvcnet_learns_simulated_mi(mi_data, global_random_seed):
    """Above the one-sided binomial p < 0.05 chance threshold of the test set (0.667 for 30
    test trials, 2 classes), with the paper's default views and the recipe's last epoch."""
    _, _, X_te, y_te = mi_data
    clf = _fit_mvcnet(global_random_seed)
    threshold = chance_threshold(len(y_te), 2)
    assert threshold == pytest.approx(2 / 3)
    acc = clf.score(X_te, y_te)
    assert acc > threshold, f"test accuracy {acc:.3f} <= chance threshold {threshold:.3f}"
    assert clf.views_ == ["flip", "fshift", "cr"]  # named mirrorable channels, left/right hand
    assert list(clf.classes_) == ["left_hand", "right_hand"]
    assert set(clf.predict(X_te)) <= {"left_hand", "right_hand"}
    # no early stopping: every epoch ran and the last one is the model
    assert clf.n_epochs_run_ == MI_EPOCHS and len(clf.history_) == MI_EPOCHS
    # the deployed network is the IFNet stem + head for C=8, T=128, P=round(0.5*64)=32
    n_chans, n_times, pool = len(CH_NAMES), int(2 * SFREQ), 32
    f = 64 * (n_times // pool)
    expected = n_chans * 64 + 128 + 64 * 63 + 128 + (f * 2 + 2)
    assert clf.n_params_deployed_ == expected
    assert sum(p.numel() for p in clf.model_.parameters()) == expected  # only CNN + head kept
    assert clf.n_params_training_ > 100 * expected  # the Transformer branch trained beside it


def test_mvcnet_shuffled_labels_at_chance(mi_data, global_random_seed):
    """Trained on permuted labels, test accuracy lies in the central 99 % binomial interval of
    chance (a 95 % band would fail one seed in twenty with a correct estimator)."""
    _, _, X_te, y_te = mi_data
    clf = _fit_mvcnet(global_random_seed, shuffle=True)
    n = len(y_te)
    lo, hi = binom.ppf(0.005, n, 0.5) / n, binom.ppf(0.995, n, 0.5) / n
    acc = clf.score(X_te, y_te)
    assert lo <= acc <= hi, f"shuffled-label accuracy {acc:.3f} outside [{lo:.3f}, {hi:.3f}]"


def test_predictions_do_not_depend_on_other_test_trials(mi_data):
    """Each trial's output depends on that trial only (training alignment, batch norm in eval
    mode), up to float32 rounding of batched convolutions."""
    _, _, X_te, _ = mi_data
    clf = _fit_mvcnet(0)
    full = clf.predict_proba(X_te)
    one_by_one = np.concatenate([clf.predict_proba(X_te[i:i + 1]) for i in range(len(X_te))])
    np.testing.assert_allclose(full, one_by_one, rtol=1e-5, atol=1e-6)
    perm = np.random.default_rng(0).permutation(len(X_te))
    np.testing.assert_allclose(clf.predict_proba(X_te[perm]), full[perm], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(full.sum(axis=1), 1.0, rtol=1e-12)
    dec = clf.decision_function(X_te)
    assert dec.shape == (len(X_te),)
    np.testing.assert_array_equal(dec > 0, full[:, 1] > 0.5)


# ---------------------------------------------------------------------------------- alignment
def _inv_sqrt_reference(X):
    R = trial_covariances(X).mean(axis=0)
    return np.real(fractional_matrix_power(R, -0.5))


def test_alignment_is_fitted_on_training_trials_only(rng):
    X, y = _random_trials(rng, n=40)
    mixing = rng.standard_normal((4, 4))  # correlated channels with unequal power
    X = np.einsum("ij,njt->nit", mixing, X).astype(np.float32)
    X_test = 3.0 * np.einsum("ij,njt->nit", rng.standard_normal((4, 4)),
                             rng.standard_normal((10, 4, 32))).astype(np.float32)
    clf = BCIClassifier(TinyNet, epochs=1, batch_size=8, device="cpu", random_state=0).fit(X, y)
    W = clf.R_inv_sqrt_.copy()
    np.testing.assert_allclose(W, _inv_sqrt_reference(X), rtol=1e-8, atol=1e-10)
    # the aligned training trials have the identity as mean covariance
    aligned = np.matmul(W, X.astype(np.float64))
    np.testing.assert_allclose(trial_covariances(aligned).mean(axis=0), np.eye(4), atol=1e-9)
    # predicting never refits: other test data, same reference, same per-trial outputs
    p_first = clf.predict_proba(X_test[:3])
    clf.predict(X_test)
    p_with_others = clf.predict_proba(np.concatenate([X_test[:3], 10 * X_test[3:]]))[:3]
    np.testing.assert_array_equal(clf.R_inv_sqrt_, W)
    np.testing.assert_allclose(p_with_others, p_first, rtol=1e-6)
    # the reference differs from what the test trials alone would give (it is not refitted)
    assert not np.allclose(_inv_sqrt_reference(X_test), W, rtol=0.1)


def test_alignment_excludes_validation_trials(rng):
    X, y = _random_trials(rng, n=40)
    clf = BCIClassifier(TinyNet, epochs=3, batch_size=8, device="cpu", random_state=0,
                        validation_fraction=0.25, patience=2).fit(X, y)
    # the last quarter of each class's trials (in the order given) is the validation split
    train = np.ones(len(y), dtype=bool)
    for c in ("a", "b"):
        idx = np.flatnonzero(y == c)
        train[idx[-5:]] = False
    np.testing.assert_allclose(clf.R_inv_sqrt_, _inv_sqrt_reference(X[train]), rtol=1e-8)
    assert all(np.isfinite(row["val_loss"]) for row in clf.history_)


def test_no_alignment_passes_trials_unchanged(rng):
    X, y = _random_trials(rng)
    clf = BCIClassifier(TinyNet, alignment=None, epochs=1, device="cpu", random_state=0)
    clf.fit(X, y)
    assert clf.R_inv_sqrt_ is None
    with torch.no_grad():
        logits = clf.model_(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(clf.decision_function(X), logits[:, 1] - logits[:, 0], rtol=1e-5,
                               atol=1e-6)


def test_fit_equals_trainer_on_aligned_trials(rng):
    """The estimator is exactly: label encoding + alignment + set_seed + model + Trainer."""
    from bcikit.train import Trainer, set_seed

    X, y = _random_trials(rng, n=32)
    y = np.where(y == "a", "right", "left")  # LabelEncoder sorts: left -> 0, right -> 1
    clf = BCIClassifier(TinyNet, epochs=3, batch_size=8, lr=0.01, optimizer="adam",
                        device="cpu", random_state=7).fit(X, y)
    codes = (y == "right").astype(np.int64)
    aligned = np.matmul(_inv_sqrt_reference(X), X.astype(np.float64)).astype(np.float32)
    set_seed(7)
    ref = TinyNet(4, 2, 32)
    Trainer(ref, epochs=3, batch_size=8, lr=0.01, optimizer="adam", device="cpu",
            seed=7).fit(aligned, codes)
    for (name, p), q in zip(clf.model_.state_dict().items(), ref.state_dict().values()):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    with torch.no_grad():
        ref_pred = np.array(["left", "right"])[ref(torch.from_numpy(aligned)).argmax(1).numpy()]
    np.testing.assert_array_equal(clf.predict(X), ref_pred)
    assert clf.seed_ == 7 and clf.n_chans_ == 4 and clf.n_times_ == 32


def test_model_by_name_through_get_model(rng):
    """A name goes through bcikit.models.get_model with the signal parameters and chs_info."""
    import bcikit.models.mvcnet  # noqa: F401  (registers "MVCNet")

    X = rng.standard_normal((16, len(CH_NAMES), 32)).astype(np.float32)
    y = np.array(["left_hand", "right_hand"] * 8)
    clf = BCIClassifier("MVCNet", sfreq=32.0, ch_names=CH_NAMES, model_params={"n_heads": 1},
                        epochs=1, batch_size=16, device="cpu", random_state=0).fit(X, y)
    model = clf.model_
    assert type(model).__name__ == "MVCNet" and model.ch_names == CH_NAMES
    assert (model.n_chans, model.n_times, model.n_outputs, model.sfreq) == (8, 32, 2, 32.0)
    assert clf.predict_proba(X).shape == (16, 2)
    with pytest.raises(ValueError, match=re.escape(
            "The 'model_params' parameter of BCIClassifier must not set ['n_chans']")):
        BCIClassifier("MVCNet", sfreq=32.0, model_params={"n_chans": 3}, epochs=1).fit(X, y)


# ---------------------------------------------------------------------------------- MVCNet
def test_mvcnet_recipe_defaults():
    p = MVCNetClassifier().get_params()
    assert (p["epochs"], p["batch_size"], p["lr"]) == (100, 64, 1e-3)
    assert (p["lambda_cvc"], p["gamma_cmc"], p["tau"]) == (0.1, 0.1, 0.2)
    assert (p["encoder_layers"], p["n_heads"], p["alignment"]) == (2, 2, "euclidean")
    assert p["views"] is None and p["validation_fraction"] == 0.0
    spec = MVCNetClassifier()._training_spec()
    assert spec == {"optimizer": "adam", "weight_decay": 0.0, "scheduler": None,
                    "patience": None}
    assert "model" not in p and "optimizer" not in p  # fixed by the recipe


@pytest.mark.parametrize("ch_names, labels, views", [
    (CH_NAMES, ("left_hand", "right_hand"), ["flip", "fshift", "cr"]),
    (None, ("left_hand", "right_hand"), ["flip", "fshift"]),      # no channel names
    (CH_NAMES, (0, 1), ["flip", "fshift"]),                        # classes not nameable
    (CH_NAMES, ("right_hand", "feet"), ["flip", "fshift"]),        # not closed under mirroring
])
def test_mvcnet_default_views(rng, ch_names, labels, views):
    X = rng.standard_normal((16, len(CH_NAMES), 32)).astype(np.float32)
    y = np.array(list(labels) * 8)
    clf = MVCNetClassifier(sfreq=32.0, ch_names=ch_names, epochs=1, batch_size=16,
                           device="cpu", random_state=0).fit(X, y)
    assert clf.views_ == views


# ---------------------------------------------------------------------------------- errors
def _xy(rng):
    return _random_trials(rng, n=12, n_chans=3, n_times=16)


@pytest.mark.parametrize("est, exc, message", [
    (MVCNetClassifier(sfreq=64.0, alignment="riemann"), ValueError,
     "The 'alignment' parameter of MVCNetClassifier must be one of {'euclidean', None}. "
     "Got 'riemann' instead."),
    (BCIClassifier(TinyNet, optimizer="lbfgs"), ValueError,
     "The 'optimizer' parameter of BCIClassifier must be one of {'adam', 'adamw', 'sgd'}. "
     "Got 'lbfgs' instead."),
    (MVCNetClassifier(sfreq=64.0, views=["flip", "rotate"]), ValueError,
     "The 'views' parameter of MVCNetClassifier must be one of {'flip', 'scale', 'noise', "
     "'fshift', 'fsurr', 'cr', 'hs'}. Got 'rotate' instead."),
    (BCIClassifier(TinyNet, epochs=0), ValueError,
     "The 'epochs' parameter of BCIClassifier must be in [1, inf]. Got 0 instead."),
    (BCIClassifier(TinyNet, epochs=2.5), TypeError,
     "The 'epochs' parameter of BCIClassifier must be an instance of int. Got float (2.5) "
     "instead."),
    (MVCNetClassifier(), ValueError, "The 'sfreq' parameter of MVCNetClassifier is required"),
    (MVCNetClassifier(sfreq=64.0, tau=0.0), ValueError,
     "The 'tau' parameter of MVCNetClassifier must be in (0, inf]. Got 0.0 instead."),
    (BCIClassifier("csp_lda"), ValueError, "a classical baseline that is already a "
     "scikit-learn estimator: use bcikit.models.get_model('csp_lda') directly"),
    (BCIClassifier(42), TypeError, "The 'model' parameter of BCIClassifier must be an "
     "instance of str or a callable"),
    (BCIClassifier(TinyNet, patience=3), ValueError, "early stopping needs validation trials"),
    (BCIClassifier(TinyNet, validation_fraction=1.0), ValueError,
     "The 'validation_fraction' parameter of BCIClassifier must be in [0, 1). Got 1.0 "
     "instead."),
    (BCIClassifier(TinyNet, ch_names=["C3", "C4"]), ValueError,
     "The 'ch_names' parameter of BCIClassifier holds 2 names, but X has 3 channels."),
    (BCIClassifier(TinyNet, random_state="seed"), TypeError,
     "The 'random_state' parameter of BCIClassifier must be an instance of int"),
    (BCIClassifier(TinyNet, device="tpu"), ValueError,
     "The 'device' parameter of BCIClassifier must be one of"),
])
def test_parameter_errors(rng, est, exc, message):
    X, y = _xy(rng)
    with pytest.raises(exc, match=re.escape(message)):
        est.fit(X, y)


def test_mvcnet_shape_errors(rng):
    X = rng.standard_normal((8, 3, 33)).astype(np.float32)
    y = np.array(["a", "b"] * 4)
    with pytest.raises(ValueError, match=re.escape(
            "X has 33 time samples per trial, but the Transformer of MVCNetClassifier uses "
            "them as d_model, split over n_heads=2 heads")):
        MVCNetClassifier(sfreq=32.0, epochs=1).fit(X, y)
    with pytest.raises(ValueError, match=re.escape(
            "The pooling window of MVCNetClassifier (64 samples, round(0.5 * sfreq)) is longer "
            "than the trials (32 samples)")):
        MVCNetClassifier(sfreq=128.0, epochs=1).fit(X[..., :32], y)


def test_init_only_stores(rng):
    est = BCIClassifier(TinyNet, epochs=-1, optimizer="nope")  # no error until fit
    assert est.get_params()["epochs"] == -1
    with pytest.raises(ValueError, match="'epochs' parameter"):
        est.fit(*_xy(rng))


def test_data_errors(rng):
    X, y = _xy(rng)
    est = BCIClassifier(TinyNet, epochs=1, device="cpu", random_state=0)
    with pytest.raises(NotFittedError):
        est.predict(X)
    with pytest.raises(ValueError, match=re.escape("The 'X' parameter of BCIClassifier.fit "
                                                   "must be a 3-D array")):
        est.fit(X[..., None], y)
    with pytest.raises(ValueError, match="Expected 2D array"):
        est.fit(X[:, 0, 0], y)
    bad = X.copy()
    bad[2, 1, 5] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        est.fit(bad, y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        est.fit(X, y[:-1])
    with pytest.raises(ValueError, match="needs at least 2 classes in y; got 1 class"):
        est.fit(X, np.full(len(y), "a"))
    with pytest.raises(ValueError, match="Unknown label type"):
        est.fit(X, rng.standard_normal(len(y)))
    est.fit(X, y)
    with pytest.raises(ValueError, match=re.escape(
            "X has 15 time samples per trial, but BCIClassifier was fitted on 16 (n_times_)")):
        est.predict(X[..., :15])
    with pytest.raises(ValueError, match=re.escape(
            "X has 2 channels per trial, but BCIClassifier was fitted on 3 (n_chans_)")):
        est.predict_proba(X[:, :2])
    with pytest.raises(ValueError, match=re.escape("The 'X' parameter of "
                                                   "BCIClassifier.predict is 2-D")):
        est.predict(X[:, 0])
    bad = X.copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="Input X contains infinity"):
        est.predict(bad)
    # one time sample cannot be aligned (a covariance needs two)
    with pytest.raises(ValueError, match="n_features = 1"):
        est.fit(X[:, :, :1], y)
    # a singular mean covariance (a duplicated channel) cannot be whitened
    dup = np.concatenate([X, X[:, :1]], axis=1)
    with pytest.raises(ValueError, match="mean covariance of the training trials is singular"):
        est.fit(dup, y)


# ---------------------------------------------------------------------------------- sklearn
_CHECK_SETTINGS = dict(device="cpu", epochs=1, batch_size=512)

#: Checks that cannot apply to MVCNetClassifier, and why.
MVCNET_EXPECTED_FAILURES = {
    "check_classifiers_train": (
        "asserts > 0.83 training accuracy on Gaussian blobs; one training epoch (the unit-test "
        "budget) of a contrastive model does not reach it, and MVCNet's default sign-flip "
        "view tells the network that x and -x share a label, which is false for blobs whose "
        "classes differ by the sign of their mean (true for EEG oscillations, the data the "
        "method is for). Learning is tested on simulated motor imagery in "
        "test_mvcnet_learns_simulated_mi."),
    "check_methods_subset_invariance": (
        "demands equality to 1e-7 between outputs computed in one batch and in sub-batches; "
        "float32 convolution kernels may round differently with the batch size (by ~1e-6). "
        "The property itself (no dependence on other trials) is tested at float32 tolerance "
        "in test_predictions_do_not_depend_on_other_test_trials."),
}


def _expected_failed_checks(estimator):
    return MVCNET_EXPECTED_FAILURES if isinstance(estimator, MVCNetClassifier) else {}


# scikit-learn's checks feed 2-D X: both estimators read it as single-channel trials
# (n_trials, n_times). MVCNet runs with one attention head (the check data have odd feature
# counts, and d_model = n_times must divide by n_heads) and one-sample pooling (n_times is 1-10).
@parametrize_with_checks(
    [BCIClassifier(TinyNet, epochs=30, batch_size=32, lr=0.05, optimizer="adam",
                   device="cpu"),
     MVCNetClassifier(sfreq=2.0, n_heads=1, pool_size=1, **_CHECK_SETTINGS)],
    expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible(estimator, check):
    check(estimator)
