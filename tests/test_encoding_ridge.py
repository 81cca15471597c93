"""Ridge regression of the encoding pipeline against scikit-learn (spec section 3, evidence row 3).

Everything in float64, small and seeded. The references are written independently of bcikit:
scikit-learn ``Ridge`` / ``StandardScaler`` / ``KFold`` and ``scipy.stats.pearsonr`` in plain
loops.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold
from sklearn.preprocessing import StandardScaler

from bcikit.encoding import ridge as R

ALPHAS = np.logspace(-1, 5, 7)


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """One BLAS thread: on a shared 2-core machine OpenBLAS threads spin against each other."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield



def _data(rng, n=120, p=15, t=9, noise=2.0, offset=20.0):
    X = rng.standard_normal((n, p)) * rng.uniform(0.5, 3.0, p) + rng.uniform(-2, 2, p)
    W = rng.standard_normal((p, t)) * 0.4
    Y = X @ W + noise * rng.standard_normal((n, t)) + offset
    return X, Y


def _times(rng, n):
    return np.cumsum(rng.uniform(0.3, 3.0, n))


def _brute_folds(n, n_splits, times=None, window=4.2):
    """KFold(no shuffle) -> (train, val, test) with the purge written as a plain loop."""
    out = []
    for train, held in KFold(n_splits, shuffle=False).split(np.zeros(n)):
        half = len(held) // 2
        val, test = held[:half], held[half:]
        if times is not None:
            train = np.array([i for i in train
                              if min(abs(times[i] - times[j]) for j in held) >= window])
        out.append((train, val, test))
    return out


def _pearson_cols(y, p):
    return np.array([pearsonr(y[:, j], p[:, j])[0] for j in range(y.shape[1])])


def _brute_paper_cv(X, Y, alphas, folds):
    n_f, n_a, T = len(folds), len(alphas), Y.shape[1]
    val = np.zeros((n_f, n_a, T))
    test = np.zeros((n_f, n_a, T))
    preds = {}
    for k, (tr, va, te) in enumerate(folds):
        sc = StandardScaler().fit(X[tr])
        for a, alpha in enumerate(alphas):
            m = Ridge(alpha=alpha, fit_intercept=True).fit(sc.transform(X[tr]), Y[tr])
            pv, pt = m.predict(sc.transform(X[va])), m.predict(sc.transform(X[te]))
            val[k, a] = _pearson_cols(Y[va], pv)
            test[k, a] = _pearson_cols(Y[te], pt)
            preds[k, a] = (pv, pt)
    best = np.argmax(val.mean(0), axis=0)          # first maximum
    cols = np.arange(T)
    return best, val.mean(0)[best, cols], test.mean(0)[best, cols], preds


def test_alpha_grid():
    np.testing.assert_allclose(R.ALPHAS, [0.1, 1, 10, 100, 1e3, 1e4, 1e5])


@pytest.mark.parametrize("shape", [(80, 12, 5), (30, 50, 4)])  # n > p and p > n
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_ridge_path_equals_sklearn(rng, shape, backend):
    n, p, t = shape
    X, Y = _data(rng, n, p, t)
    path = R.fit_ridge_path(X, Y, ALPHAS, backend=backend, device="cpu")
    assert path.coef_.shape == (7, p, t) and path.intercept_.shape == (7, t)
    assert path.coef_.dtype == np.float64
    Xnew = rng.standard_normal((17, p))
    pred = path.predict(Xnew)
    for a, alpha in enumerate(ALPHAS):
        ref = Ridge(alpha=alpha, fit_intercept=True).fit(X, Y)
        np.testing.assert_allclose(path.coef_[a], ref.coef_.T, atol=1e-5, rtol=0)
        np.testing.assert_allclose(path.intercept_[a], ref.intercept_, atol=1e-5, rtol=0)
        np.testing.assert_allclose(pred[a], ref.predict(Xnew), atol=1e-5, rtol=0)
    # the penalty acts: coefficients shrink monotonically with alpha
    norms = np.linalg.norm(path.coef_, axis=(1, 2))
    assert np.all(np.diff(norms) < 0)


@pytest.mark.parametrize("purge", [False, True])
def test_paper_cv_equals_bruteforce_sklearn(rng, purge):
    n, T = 150, 8
    X, Y = _data(rng, n, 12, T, noise=3.0)
    Y[:, 3] += 4 * np.sin(X[:, 0] * X[:, 1])        # a target no linear model predicts well
    times = _times(rng, n)
    res = R.paper_cv(X, Y, alphas=ALPHAS, purge=purge, event_times=times if purge else None,
                     device="cpu", return_predictions=True)
    folds = _brute_folds(n, 5, times if purge else None)
    best, val_r, test_r, preds = _brute_paper_cv(X, Y, ALPHAS, folds)
    # the same folds (purge included)
    for f, (tr, va, te) in zip(res.folds, folds):
        np.testing.assert_array_equal(f.train, tr)
        np.testing.assert_array_equal(f.val, va)
        np.testing.assert_array_equal(f.test, te)
    if purge:
        assert res.n_purged.sum() > 0
    np.testing.assert_array_equal(res.alpha_index, best)
    np.testing.assert_allclose(res.alpha, ALPHAS[best])
    np.testing.assert_allclose(res.val_r, val_r, atol=1e-5, rtol=0)
    np.testing.assert_allclose(res.test_r, test_r, atol=1e-5, rtol=0)
    assert len(set(best.tolist())) > 1            # targets really pick different alphas
    # out-of-fold predictions at alpha*
    for k, (tr, va, te) in enumerate(folds):
        for j in range(T):
            pv, pt = preds[k, best[j]]
            np.testing.assert_allclose(res.oof_pred[va, j], pv[:, j], atol=1e-5, rtol=0)
            np.testing.assert_allclose(res.oof_pred[te, j], pt[:, j], atol=1e-5, rtol=0)
        assert np.all(res.half[va] == 2 * k) and np.all(res.half[te] == 2 * k + 1)


def test_paper_cv_torch_backend_equals_numpy(rng):
    X, Y = _data(rng, 100, 10, 6)
    t = _times(rng, 100)
    a = R.paper_cv(X, Y, event_times=t, backend="numpy", device="cpu", n_targets_batch=4)
    b = R.paper_cv(X, Y, event_times=t, backend="torch", device="cpu")
    assert b.backend == "torch"
    np.testing.assert_allclose(a.val_r_folds, b.val_r_folds, atol=1e-10)
    np.testing.assert_allclose(a.test_r_folds, b.test_r_folds, atol=1e-10)


def test_penalised_intercept_replica_same_r_different_mse(rng):
    """The official code penalises the intercept: r unchanged on centred X, predictions biased."""
    X, Y = _data(rng, 150, 10, 5, offset=50.0)
    folds = _brute_folds(150, 5)
    tr, va, te = folds[2]
    ho = np.concatenate([va, te])
    sc = StandardScaler().fit(X[tr])
    Xtr, Xho = sc.transform(X[tr]), sc.transform(X[ho])
    res = R.paper_cv(X, Y, purge=False, device="cpu", return_predictions=True)
    for alpha in (100.0, 1e4):
        # replica: a column of ones appended and penalised like every other coefficient
        A = np.c_[Xtr, np.ones(len(tr))]
        W = np.linalg.solve(A.T @ A + alpha * np.eye(A.shape[1]), A.T @ Y[tr])
        official = np.c_[Xho, np.ones(len(ho))] @ W
        ours = R.fit_ridge_path(Xtr, Y[tr], [alpha], device="cpu").predict(Xho)[0]
        np.testing.assert_allclose(R.pearson_r(Y[ho], official), R.pearson_r(Y[ho], ours),
                                   atol=1e-10)
        mse_official = ((Y[ho] - official) ** 2).mean(0)
        mse_ours = ((Y[ho] - ours) ** 2).mean(0)
        assert np.all(mse_official > 1.5 * mse_ours)
        # the shrunken intercept is sum(y) / (n + alpha), ours the training mean
        np.testing.assert_allclose(W[-1], Y[tr].sum(0) / (len(tr) + alpha), rtol=1e-8)
    # and the protocol's r is invariant to it: recompute fold 2's validation r at alpha*
    j = 0
    a = res.alpha[j]
    A = np.c_[Xtr, np.ones(len(tr))]
    W = np.linalg.solve(A.T @ A + a * np.eye(A.shape[1]), A.T @ Y[tr][:, j])
    np.testing.assert_allclose(pearsonr(Y[va, j], np.c_[sc.transform(X[va]),
                                                        np.ones(len(va))] @ W)[0],
                               res.val_r_folds[2, res.alpha_index[j], j], atol=1e-10)


def test_purge_removes_exactly_the_overlapping_events():
    # two folds of five; windows overlap when events are closer than 4.2 s (strictly)
    t = np.array([0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 14.0, 14.2, 21.0, 30.0])
    folds = R.paper_folds(10, 2, event_times=t, purge=True)
    # fold 0 holds events 0-4 (t <= 10): 11 and 14 are within 4.2 s of 10; 14.2 is exactly 4.2
    np.testing.assert_array_equal(folds[0].val, [0, 1])
    np.testing.assert_array_equal(folds[0].test, [2, 3, 4])
    np.testing.assert_array_equal(folds[0].purged, [5, 6])
    np.testing.assert_array_equal(folds[0].train, [7, 8, 9])
    # fold 1 holds events 5-9 (t >= 11): 10 is 1 s from 11; 3 is 8 s away
    np.testing.assert_array_equal(folds[1].purged, [4])
    np.testing.assert_array_equal(folds[1].train, [0, 1, 2, 3])
    nopurge = R.paper_folds(10, 2, purge=False)
    np.testing.assert_array_equal(nopurge[0].train, [5, 6, 7, 8, 9])
    assert nopurge[0].purged.size == 0


def test_purge_matches_bruteforce_on_irregular_times(rng):
    n = 97
    t = np.sort(rng.uniform(0, 150, n))
    for window in (1.0, 4.2):
        folds = R.paper_folds(n, 5, event_times=t, purge=True, purge_window=window)
        ref = _brute_folds(n, 5, t, window)
        for f, (tr, va, te) in zip(folds, ref):
            np.testing.assert_array_equal(f.train, tr)
            held = np.concatenate([va, te])
            expect = [i for i in range(n) if i not in held and i not in tr]
            np.testing.assert_array_equal(f.purged, expect)


def test_groups_keep_copies_in_one_fold_half(rng):
    n = 60
    for _ in range(20):
        rows = np.sort(rng.integers(0, n, n))
        folds = R.paper_folds(n, 5, groups=rows, purge=False)
        parts = [(rows[f.train], rows[f.val], rows[f.test]) for f in folds]
        for tr, va, te in parts:
            assert not set(va) & set(te)
            assert not set(tr) & (set(va) | set(te))
            assert va.size and te.size
        # every resampled position is held out exactly once
        held = np.sort(np.concatenate([np.r_[f.val, f.test] for f in folds]))
        np.testing.assert_array_equal(held, np.arange(n))


def test_resample_equals_indexing(rng):
    X, Y = _data(rng, 90, 8, 5)
    t = _times(rng, 90)
    rows = np.sort(rng.integers(0, 90, 90))
    a = R.paper_cv(X, Y, resample=rows, groups=rows, event_times=t[rows], device="cpu")
    b = R.paper_cv(X[rows], Y[rows], groups=rows, event_times=t[rows], device="cpu")
    np.testing.assert_allclose(a.val_r_folds, b.val_r_folds, atol=1e-12)
    np.testing.assert_allclose(a.test_r, b.test_r, atol=1e-12)


def test_zero_variance_gives_nan(rng):
    X, Y = _data(rng, 80, 6, 4)
    Y[:, 1] = 3.0                                   # constant target
    res = R.paper_cv(X, Y, purge=False, device="cpu")
    assert np.isnan(res.val_r[1]) and np.isnan(res.test_r[1])
    assert res.alpha_index[1] == 0
    assert np.all(np.isfinite(res.val_r[[0, 2, 3]]))
    # constant features -> constant predictions -> NaN, never a number
    res = R.paper_cv(np.ones((80, 3)), Y, purge=False, device="cpu")
    assert np.all(np.isnan(res.val_r)) and np.all(np.isnan(res.test_r))
    assert np.isnan(R.pearson_r(np.arange(5.0), np.full(5, 2.0)))
    np.testing.assert_allclose(R.pearson_r(Y[:, [0, 2]], Y[:, [2, 0]] * 2 + 1),
                               pearsonr(Y[:, 0], Y[:, 2])[0], rtol=1e-12)


def test_nested_cv_equals_bruteforce_sklearn(rng):
    n, T = 120, 5
    X, Y = _data(rng, n, 10, T, noise=3.0)
    t = _times(rng, n)
    res = R.nested_cv(X, Y, purge=True, event_times=t, device="cpu")
    for k, (tr, va, te) in enumerate(_brute_folds(n, 5, t)):
        ho = np.concatenate([va, te])
        sc = StandardScaler().fit(X[tr])
        Xtr, Xho = sc.transform(X[tr]), sc.transform(X[ho])
        score = np.zeros((7, T))
        for itr, iva in KFold(5, shuffle=False).split(Xtr):
            for a, alpha in enumerate(ALPHAS):
                m = Ridge(alpha=alpha).fit(Xtr[itr], Y[tr][itr])
                score[a] += _pearson_cols(Y[tr][iva], m.predict(Xtr[iva])) / 5
        best = np.argmax(score, axis=0)
        np.testing.assert_allclose(res.alpha_folds[k], ALPHAS[best])
        r = [pearsonr(Y[ho, j], Ridge(alpha=ALPHAS[best[j]]).fit(Xtr, Y[tr][:, j])
                      .predict(Xho))[0] for j in range(T)]
        np.testing.assert_allclose(res.test_r_folds[k], r, atol=1e-5, rtol=0)
    np.testing.assert_allclose(res.test_r, res.test_r_folds.mean(0))


def test_errors_name_the_problem(rng):
    X, Y = _data(rng, 50, 4, 3)
    with pytest.raises(ValueError, match="purge=True needs event_times"):
        R.paper_cv(X, Y, device="cpu")
    with pytest.raises(ValueError, match="non-decreasing"):
        R.paper_cv(X, Y, event_times=np.arange(50.0)[::-1], device="cpu")
    with pytest.raises(ValueError, match="Y has 49 rows"):
        R.paper_cv(X, Y[:49], purge=False, device="cpu")
    with pytest.raises(ValueError, match="NaN"):
        R.fit_ridge_path(np.where(X > 1, np.nan, X), Y, device="cpu")
    with pytest.raises(ValueError, match="positive"):
        R.fit_ridge_path(X, Y, [0.0, 1.0], device="cpu")
    with pytest.raises(ValueError, match="contradicts"):
        R.resolve_backend("cpu", "torch_cuda")
    with pytest.raises(ValueError, match="'device' parameter"):
        R.resolve_backend("gpu")
    assert R.resolve_backend("cpu") == "numpy"
    assert R.resolve_backend("cpu", "torch") == "torch"
    if not R._cuda_available():
        assert R.resolve_backend("auto") == "numpy"
        with pytest.raises(ValueError, match="CUDA"):
            R.resolve_backend("cuda")


def test_fp16_features_compute_in_float32(rng):
    X, Y = _data(rng, 100, 8, 4)
    t = _times(rng, 100)
    a = R.paper_cv(X.astype(np.float16), Y.astype(np.float32), event_times=t, device="cpu")
    b = R.paper_cv(X.astype(np.float16).astype(np.float64), Y, event_times=t, device="cpu")
    np.testing.assert_allclose(a.val_r, b.val_r, atol=1e-4)


def test_himalaya_backend_restored_and_no_torch_on_import():
    from himalaya.backend import get_backend, set_backend

    set_backend("numpy")
    R.paper_cv(np.random.default_rng(0).standard_normal((40, 3)),
               np.random.default_rng(1).standard_normal((40, 2)), purge=False, backend="torch",
               device="cpu")
    assert get_backend().name == "numpy"
    code = ("import sys, bcikit.encoding as e; "
            "assert not {'torch', 'himalaya', 'nilearn'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cuda_backend_matches_numpy(rng):
    if not R._cuda_available():
        pytest.skip("no CUDA device")
    X, Y = _data(rng, 200, 20, 30)
    t = _times(rng, 200)
    a = R.paper_cv(X, Y, event_times=t, device="cpu")
    b = R.paper_cv(X, Y, event_times=t, device="cuda")
    assert b.backend == "torch_cuda"
    np.testing.assert_allclose(a.val_r_folds, b.val_r_folds, atol=1e-8)
    np.testing.assert_array_equal(a.alpha_index, b.alpha_index)
