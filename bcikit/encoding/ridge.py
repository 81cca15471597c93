"""Ridge regression for encoding models (``specs/encoding.md`` section 3).

One closed-form ridge per target with a fitted, *unpenalised* intercept and the alpha grid
``logspace(-1, 5, 7)`` on unnormalised sums of squares (the convention of scikit-learn
``Ridge``). Per cross-validation fold the (standardised) training features are decomposed once,
``X_tr = U diag(s) V^T``, and the held-out predictions of every alpha follow from

    Y_hat(alpha) = mean(Y_tr) + (X_ho V) diag(s / (s^2 + alpha)) (U^T (Y_tr - mean(Y_tr)))

with targets processed in batches. The arithmetic runs on a himalaya backend (``numpy``, ``torch``
or ``torch_cuda``); scikit-learn is the correctness reference in the tests.

Protocols
---------
- :func:`paper_cv` (default): contiguous ``KFold(5)``; each held-out fold's first half validates,
  its second half tests; per target alpha* = first argmax of the mean validation Pearson r; the
  test r is read at alpha*. ``purge=True`` drops training events within 4.2 s of a held-out event.
- :func:`nested_cv`: himalaya ``RidgeCV`` (local alpha, correlation score, contiguous inner folds)
  on the training folds, scored on the whole held-out fold.

Pearson r of a prediction (or target) with zero variance is NaN, never a number.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..utils import check_option, check_range, logger, progress, validate_type

#: The alpha grid of the paper: 0.1, 1, ..., 1e5 (on unnormalised sums of squares).
ALPHAS: np.ndarray = np.logspace(-1, 5, 7)
#: Two event windows (-2.0 to +2.2 s) overlap when their events are closer than this (seconds).
PURGE_WINDOW_S: float = 4.2

_DEVICES = ("auto", "cpu", "cuda")
_BACKENDS = ("numpy", "torch", "torch_cuda")
# relative tolerance (in machine epsilons of the computing dtype) below which a column is constant
_CONST_EPS = 16.0


# ------------------------------------------------------------------------------------ backends
def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_backend(device: str = "auto", backend: str | None = None) -> str:
    """The himalaya backend name for a ``device`` / ``backend`` pair.

    Parameters
    ----------
    device : {'auto', 'cpu', 'cuda'}
        ``'auto'`` uses ``'torch_cuda'`` when torch sees a CUDA device and ``'numpy'`` otherwise;
        ``'cpu'`` means ``'numpy'``; ``'cuda'`` means ``'torch_cuda'``.
    backend : {'numpy', 'torch', 'torch_cuda'} or None
        An explicit himalaya backend; it wins over ``device`` unless the two contradict.

    Returns
    -------
    str
        ``'numpy'``, ``'torch'`` or ``'torch_cuda'``.

    Raises
    ------
    ValueError
        Unknown names, a contradiction (``device='cpu'`` with ``backend='torch_cuda'``), or CUDA
        requested where torch sees none.
    """
    check_option(device, _DEVICES, "device")
    if backend is not None:
        check_option(backend, _BACKENDS, "backend")
        if device == "cpu" and backend == "torch_cuda":
            raise ValueError("device='cpu' contradicts backend='torch_cuda'; drop one of them.")
        if device == "cuda" and backend != "torch_cuda":
            raise ValueError(f"device='cuda' contradicts backend={backend!r}; use "
                             "backend='torch_cuda' or leave backend=None.")
        name = backend
    elif device == "auto":
        name = "torch_cuda" if _cuda_available() else "numpy"
    else:
        name = "numpy" if device == "cpu" else "torch_cuda"
    if name == "torch_cuda" and not _cuda_available():
        raise ValueError("The 'torch_cuda' backend needs torch with a CUDA device; none is "
                         "available here. Use device='cpu' (or 'auto').")
    return name


@contextlib.contextmanager
def _himalaya_backend(name: str) -> Iterator[Any]:
    """Set himalaya's (global) backend for the duration of a block, then restore it."""
    from himalaya.backend import get_backend, set_backend

    previous = get_backend().name
    module = set_backend(name, on_error="raise")
    try:
        yield module
    finally:
        set_backend(previous, on_error="raise")


def _compute_dtype(*arrays: np.ndarray, dtype: str | None) -> str:
    if dtype is not None:
        check_option(dtype, ("float32", "float64"), "dtype")
        return dtype
    return "float64" if all(np.asarray(a).dtype == np.float64 for a in arrays) else "float32"


def _as_2d(name: str, a: Any, n_rows: int | None = None) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_events, n_columns); got shape {a.shape}.")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers; got dtype {a.dtype}.")
    if n_rows is not None and a.shape[0] != n_rows:
        raise ValueError(f"{name} has {a.shape[0]} rows but X has {n_rows} events.")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return a


def _default_batch(n_rows: int, n_targets: int) -> int:
    # about 5e7 values (400 MB in float64) of targets per batch
    return int(max(1, min(n_targets, max(256, 50_000_000 // max(n_rows, 1)))))


# -------------------------------------------------------------------------------------- Pearson
def _finish_r(num, syy, spp, my, mp, n, eps) -> np.ndarray:
    """r from centred sums; NaN where either column is constant (relative to its magnitude)."""
    num, syy, spp, my, mp = (np.asarray(v, dtype=np.float64) for v in (num, syy, spp, my, mp))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / np.sqrt(syy * spp)
    const_y = syy <= n * (_CONST_EPS * eps * my) ** 2
    const_p = spp <= n * (_CONST_EPS * eps * mp) ** 2
    r[const_y | const_p | ~np.isfinite(r)] = np.nan
    return np.clip(r, -1.0, 1.0)


def _r_centred(bk: Any, yc: Any, syy: np.ndarray, my: np.ndarray, p0: Any,
               offset_abs: np.ndarray, n: int, eps: float) -> np.ndarray:
    """Pearson r of centred observations ``yc`` and predictions ``p0 + offset`` (the constant
    offset does not change r; it only sets the scale below which ``p0`` counts as constant)."""
    pm = p0.mean(0)
    pc = p0 - pm
    num = bk.to_numpy((yc * pc).sum(0))
    spp = bk.to_numpy((pc * pc).sum(0)).astype(np.float64)
    scale = np.abs(bk.to_numpy(pm)) + offset_abs + np.sqrt(np.maximum(spp, 0) / n)
    return _finish_r(num, syy, spp, my, scale, n, eps)


def _pearson_backend(bk: Any, y: Any, p: Any, eps: float) -> np.ndarray:
    """Pearson r per column of two (n, T) backend arrays, returned as numpy float64."""
    yc = y - y.mean(0)
    pc = p - p.mean(0)
    num = (yc * pc).sum(0)
    syy = (yc * yc).sum(0)
    spp = (pc * pc).sum(0)
    my = bk.max(bk.abs(y), axis=0)
    mp = bk.max(bk.abs(p), axis=0)
    return _finish_r(*(bk.to_numpy(v) for v in (num, syy, spp, my, mp)), y.shape[0], eps)


def pearson_r(y_true: Any, y_pred: Any, *, axis: int = 0) -> np.ndarray:
    """Pearson correlation per column (``axis=0``) or per row (``axis=1``).

    Parameters
    ----------
    y_true, y_pred : array, same shape (1-D or 2-D)
        Observations and predictions.
    axis : int
        The axis along which samples lie.

    Returns
    -------
    ndarray
        r per target (float64); NaN where ``y_true`` or ``y_pred`` has zero variance (constant to
        within rounding of its magnitude).
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same shape; got {y.shape} and "
                         f"{p.shape}.")
    if y.ndim == 1:
        return pearson_r(y[:, None], p[:, None])[0]
    if axis == 1:
        y, p = y.T, p.T
    elif axis != 0:
        raise ValueError(f"axis must be 0 or 1; got {axis!r}.")
    yc = y - y.mean(0)
    pc = p - p.mean(0)
    # constant-ness judged in the precision the predictions were computed in
    eps = float(np.finfo(np.result_type(np.asarray(y_pred).dtype, np.float32)).eps)
    return _finish_r((yc * pc).sum(0), (yc * yc).sum(0), (pc * pc).sum(0), np.abs(y).max(0),
                     np.abs(p).max(0), y.shape[0], eps)


# ------------------------------------------------------------------------------- ridge path
@dataclass
class RidgePath:
    """Ridge solutions for every alpha of a grid (equal to scikit-learn ``Ridge`` per alpha).

    Attributes
    ----------
    alphas : ndarray (n_alphas,)
    coef_ : ndarray (n_alphas, n_features, n_targets)
    intercept_ : ndarray (n_alphas, n_targets)
        Fitted and not penalised: ``mean(Y) - mean(X) @ coef``.
    """

    alphas: np.ndarray
    coef_: np.ndarray
    intercept_: np.ndarray

    def predict(self, X: Any) -> np.ndarray:
        """Predictions of every alpha, shape (n_alphas, n_samples, n_targets)."""
        X = np.asarray(X, dtype=self.coef_.dtype)
        if X.ndim != 2 or X.shape[1] != self.coef_.shape[1]:
            raise ValueError(f"X must have shape (n_samples, {self.coef_.shape[1]}); "
                             f"got {X.shape}.")
        return np.einsum("nf,aft->ant", X, self.coef_) + self.intercept_[:, None, :]


def _check_alphas(alphas: Any) -> np.ndarray:
    alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    if alphas.ndim != 1 or alphas.size == 0 or not np.all(np.isfinite(alphas)) \
            or np.any(alphas <= 0):
        raise ValueError("alphas must be a non-empty 1-D array of positive numbers; got "
                         f"{alphas!r}.")
    return alphas


def fit_ridge_path(X: Any, Y: Any, alphas: Any = ALPHAS, *, device: str = "auto",
                   backend: str | None = None, n_targets_batch: int | None = None,
                   dtype: str | None = None) -> RidgePath:
    """Fit ridge regression with an unpenalised intercept for every alpha at once (one SVD).

    Minimises ``||Y - X W - 1 b||^2 + alpha ||W||^2`` per target, as scikit-learn
    ``Ridge(alpha, fit_intercept=True)`` does; ``X`` is used as given (no scaling).

    Parameters
    ----------
    X : array (n_samples, n_features)
    Y : array (n_samples, n_targets) or (n_samples,)
    alphas : array (n_alphas,)
        Positive penalties; default ``ALPHAS``.
    device, backend : str
        See :func:`resolve_backend`.
    n_targets_batch : int or None
        Targets per batch (memory); default about 5e7 values of ``Y`` per batch.
    dtype : {'float32', 'float64'} or None
        Computing precision; None = float64 when X and Y are float64, else float32.

    Returns
    -------
    RidgePath
    """
    X = _as_2d("X", X)
    Y = _as_2d("Y", Y, X.shape[0])
    alphas = _check_alphas(alphas)
    dt = _compute_dtype(X, Y, dtype=dtype)
    name = resolve_backend(device, backend)
    n, p = X.shape
    T = Y.shape[1]
    batch = n_targets_batch or _default_batch(n, T)
    x_mean = X.mean(0, dtype=np.float64)
    coef = np.empty((alphas.size, p, T), dtype=dt)
    y_mean = Y.mean(0, dtype=np.float64)
    with _himalaya_backend(name) as bk:
        Xc = bk.asarray((X - x_mean).astype(dt))
        U, s, Vt = bk.svd(Xc, full_matrices=False)
        D = bk.asarray((bk.to_numpy(s)[None, :] / (bk.to_numpy(s)[None, :] ** 2
                                                     + alphas[:, None])).astype(dt))
        for start in range(0, T, batch):
            sl = slice(start, min(T, start + batch))
            Yc = bk.asarray((Y[:, sl] - y_mean[sl]).astype(dt))
            B = U.T @ Yc                                     # (k, Tb)
            for a in range(alphas.size):
                coef[a, :, sl] = bk.to_numpy(Vt.T @ (D[a][:, None] * B))
    intercept = (y_mean[None, :] - np.einsum("f,aft->at", x_mean, coef.astype(np.float64)))
    return RidgePath(alphas=alphas, coef_=coef, intercept_=intercept.astype(dt))


# ---------------------------------------------------------------------------------------- folds
@dataclass
class Fold:
    """One fold of the paper protocol (index arrays into the events).

    ``train`` is after purging; ``purged`` lists the training events the purge removed;
    ``heldout = concatenate(val, test)``.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    purged: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.intp))

    @property
    def heldout(self) -> np.ndarray:
        return np.concatenate([self.val, self.test])


def _snap(position: int, boundaries: np.ndarray, lo: int, hi: int) -> int | None:
    """The boundary nearest to ``position`` strictly inside (lo, hi); ties go to the later one."""
    inside = boundaries[(boundaries > lo) & (boundaries < hi)]
    if inside.size == 0:
        return None
    dist = np.abs(inside - position)
    best = np.flatnonzero(dist == dist.min())
    return int(inside[best[-1]])


def _check_times(event_times: Any, n: int) -> np.ndarray:
    t = np.asarray(event_times, dtype=np.float64)
    if t.shape != (n,):
        raise ValueError(f"event_times must have shape ({n},) (one time per event); got {t.shape}.")
    if not np.all(np.isfinite(t)):
        raise ValueError("event_times contains NaN or infinite values.")
    if np.any(np.diff(t) < 0):
        raise ValueError("event_times must be non-decreasing: events must stay in time order.")
    return t


def _purge(train: np.ndarray, heldout: np.ndarray, t: np.ndarray, window: float
           ) -> tuple[np.ndarray, np.ndarray]:
    ho_t = np.sort(t[heldout])
    tt = t[train]
    pos = np.searchsorted(ho_t, tt)
    left = np.where(pos > 0, tt - ho_t[np.maximum(pos - 1, 0)], np.inf)
    right = np.where(pos < ho_t.size, ho_t[np.minimum(pos, ho_t.size - 1)] - tt, np.inf)
    # strictly closer than the window; 1 ns of slack so that events exactly one window apart in
    # decimal seconds (14.2 - 10.0 = 4.1999999999999993) count as not overlapping
    drop = np.minimum(np.abs(left), np.abs(right)) < window - 1e-9
    return train[~drop], train[drop]


def paper_folds(n_events: int, n_splits: int = 5, *, groups: Any = None, event_times: Any = None,
                purge: bool = True, purge_window: float = PURGE_WINDOW_S) -> list[Fold]:
    """Contiguous folds of the paper protocol.

    ``KFold(n_splits)`` without shuffling over events in time order (the first
    ``n_events % n_splits`` folds hold one more event); the held-out fold's first
    ``len // 2`` events validate and the rest test.

    Parameters
    ----------
    n_events : int
    n_splits : int
    groups : array (n_events,) or None
        Group label per event (e.g. the original event of a bootstrap copy), contiguous. Fold and
        half boundaries move to the nearest group boundary so a group never straddles two fold
        halves.
    event_times : array (n_events,) or None
        Seconds, non-decreasing; required when ``purge``.
    purge : bool
        Drop training events closer than ``purge_window`` seconds to any held-out event (their
        windows overlap); ``False`` is the official behaviour.
    purge_window : float

    Returns
    -------
    list of Fold
    """
    validate_type(n_events, "int", "n_events")
    validate_type(n_splits, "int", "n_splits")
    if n_splits < 2:
        raise ValueError(f"n_splits must be at least 2; got {n_splits}.")
    if n_events < 2 * n_splits:
        raise ValueError(f"The paper protocol needs at least {2 * n_splits} events for "
                         f"{n_splits} folds (two halves each); got {n_events}.")
    if purge:
        if event_times is None:
            raise ValueError("purge=True needs event_times (seconds per event) to find training "
                             "events whose windows overlap held-out ones; pass event_times, or "
                             "purge=False for the official behaviour.")
        t = _check_times(event_times, n_events)
        check_range(purge_window, "purge_window", low=0.0)
    if groups is None:
        valid = np.arange(n_events + 1)
    else:
        g = np.asarray(groups)
        if g.shape != (n_events,):
            raise ValueError(f"groups must have shape ({n_events},); got {g.shape}.")
        change = np.flatnonzero(g[1:] != g[:-1]) + 1
        if np.unique(g).size != change.size + 1:
            raise ValueError("groups must be contiguous: all events of a group next to each "
                             "other (sort bootstrap indices).")
        valid = np.concatenate([[0], change, [n_events]])
    sizes = np.full(n_splits, n_events // n_splits)
    sizes[: n_events % n_splits] += 1
    nominal = np.concatenate([[0], np.cumsum(sizes)])
    bounds = [0]
    for k in range(1, n_splits):
        b = _snap(int(nominal[k]), valid, bounds[-1], n_events)
        if b is None:
            raise ValueError("Too few distinct events (groups) to form the folds.")
        bounds.append(b)
    bounds.append(n_events)
    folds = []
    idx = np.arange(n_events)
    for k in range(n_splits):
        lo, hi = bounds[k], bounds[k + 1]
        mid = _snap(lo + (hi - lo) // 2, valid, lo, hi)
        if mid is None:
            raise ValueError(f"Fold {k} holds a single group of events; it cannot be split into "
                             "validation and test halves.")
        val, test = idx[lo:mid], idx[mid:hi]
        train = np.concatenate([idx[:lo], idx[hi:]])
        purged = np.zeros(0, dtype=idx.dtype)
        if purge:
            train, purged = _purge(train, idx[lo:hi], t, purge_window)
            if train.size < 2:
                raise ValueError(f"Purging left fold {k} with {train.size} training events; "
                                 "lower purge_window or pass purge=False.")
        folds.append(Fold(train=train, val=val, test=test, purged=purged))
    return folds


# --------------------------------------------------------------------------------- paper protocol
@dataclass
class PaperCVResult:
    """Output of :func:`paper_cv` (T = number of targets).

    Attributes
    ----------
    alphas : (n_alphas,)
    alpha : (T,) alpha* per target; alpha_index : (T,) its index in ``alphas``
    val_r, test_r : (T,) mean over folds of the per-fold Pearson r at alpha*
    val_r_path, test_r_path : (n_alphas, T) means over folds for every alpha
    val_r_folds, test_r_folds : (n_folds, n_alphas, T)
    folds : list of Fold
    n_purged : (n_folds,) training events removed by the purge
    oof_pred : (n_events, T) held-out predictions at alpha*, or None
    half : (n_events,) 2 * fold + (0 for validation, 1 for test), or None
    backend : himalaya backend used
    """

    alphas: np.ndarray
    alpha: np.ndarray
    alpha_index: np.ndarray
    val_r: np.ndarray
    test_r: np.ndarray
    val_r_path: np.ndarray
    test_r_path: np.ndarray
    val_r_folds: np.ndarray
    test_r_folds: np.ndarray
    folds: list[Fold]
    n_purged: np.ndarray
    oof_pred: np.ndarray | None = None
    half: np.ndarray | None = None
    backend: str = "numpy"


def _select_alpha(val_path: np.ndarray) -> np.ndarray:
    """First argmax over alphas (axis 0) of mean validation r; NaN never wins."""
    filled = np.where(np.isnan(val_path), -np.inf, val_path)
    return np.argmax(filled, axis=0)


def _standardise(X: np.ndarray, train: np.ndarray, standardize: bool
                 ) -> tuple[np.ndarray, np.ndarray]:
    mean = X[train].mean(0, dtype=np.float64)
    if standardize:
        sd = X[train].std(0, dtype=np.float64)
        sd[sd == 0] = 1.0
    else:
        sd = np.ones_like(mean)
    return mean, sd


def paper_cv(X: Any, Y: Any, *, alphas: Any = ALPHAS, n_splits: int = 5, purge: bool = True,
             event_times: Any = None, purge_window: float = PURGE_WINDOW_S, groups: Any = None,
             standardize: bool = True, return_predictions: bool = False, device: str = "auto",
             backend: str | None = None, n_targets_batch: int | None = None,
             dtype: str | None = None, folds: Sequence[Fold] | None = None,
             resample: Any = None, verbose: bool | None = None) -> PaperCVResult:
    """Cross-validated ridge encoding with the paper's protocol.

    For each fold of :func:`paper_folds`, features are z-scored with the training mean and SD,
    the training features are decomposed once, and every alpha's predictions of the validation
    and test halves are scored by Pearson r per target. Per target alpha* is the first maximiser
    of the validation r averaged over folds; the test r is the test r at alpha*, averaged over
    folds.

    Parameters
    ----------
    X : array (n_events, n_features)
        Features, events in time order (fp16 is computed in float32).
    Y : array (n_events, n_targets)
        Targets.
    alphas : array
        Default ``ALPHAS`` = logspace(-1, 5, 7).
    n_splits : int
    purge : bool
        Drop training events within ``purge_window`` s of a held-out event (needs
        ``event_times``); ``False`` reproduces the official behaviour.
    event_times : array (n_events,) or None
    purge_window : float
    groups : array (n_events,) or None
        Keep each group (copies of one event in a bootstrap resample) inside one fold half.
    standardize : bool
        z-score features per fold with training statistics (always centred).
    return_predictions : bool
        Also return the held-out predictions at alpha* (``oof_pred``) and ``half``.
    device, backend : str
        See :func:`resolve_backend`.
    n_targets_batch : int or None
    dtype : {'float32', 'float64'} or None
    folds : list of Fold or None
        Precomputed folds (then ``n_splits``, ``purge``, ``groups`` are not used).
    resample : array of int (n,) or None
        Run on the events ``X[resample], Y[resample]`` (a bootstrap resample, rows gathered batch
        by batch without copying ``Y`` whole); ``event_times`` and ``groups`` then refer to the
        resampled sequence. Fold indices and ``oof_pred`` are positions in it.
    verbose : bool or None
        Progress bar over target batches.

    Returns
    -------
    PaperCVResult
    """
    X = _as_2d("X", X)
    Y = _as_2d("Y", Y, X.shape[0])
    alphas = _check_alphas(alphas)
    if resample is None:
        rows = None
        n = X.shape[0]
    else:
        rows = np.asarray(resample)
        if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer) or rows.size == 0 \
                or rows.min() < 0 or rows.max() >= X.shape[0]:
            raise ValueError(f"resample must be a 1-D array of event indices in [0, "
                             f"{X.shape[0]}); got shape {rows.shape}, dtype {rows.dtype}.")
        X = X[rows]
        n = rows.size
    T = Y.shape[1]
    if folds is None:
        folds = paper_folds(n, n_splits, groups=groups, event_times=event_times, purge=purge,
                            purge_window=purge_window)
    dt = _compute_dtype(X, Y, dtype=dtype)
    name = resolve_backend(device, backend)
    batch = n_targets_batch or _default_batch(n, T)
    n_f, n_a = len(folds), alphas.size
    val_folds = np.full((n_f, n_a, T), np.nan)
    test_folds = np.full((n_f, n_a, T), np.nan)
    alpha_index = np.zeros(T, dtype=np.intp)
    oof = np.zeros((n, T), dtype=dt) if return_predictions else None
    half = None
    if return_predictions:
        half = np.full(n, -1, dtype=np.int64)
        for k, f in enumerate(folds):
            half[f.val] = 2 * k
            half[f.test] = 2 * k + 1
    eps = float(np.finfo(dt).eps)
    with _himalaya_backend(name) as bk:
        # one decomposition per fold, kept for every target batch
        factors = []
        for f in folds:
            mean, sd = _standardise(X, f.train, standardize)
            Xtr = bk.asarray(((X[f.train] - mean) / sd).astype(dt))
            Xho = bk.asarray(((X[f.heldout] - mean) / sd).astype(dt))
            U, s, Vt = bk.svd(Xtr, full_matrices=False)
            s_np = bk.to_numpy(s).astype(np.float64)
            D = bk.asarray((s_np[None, :] / (s_np[None, :] ** 2 + alphas[:, None])).astype(dt))
            A = Xho @ Vt.T                                          # (n_ho, k)
            factors.append((U, D, A, bk.asarray(f.train), f.val.size))
            del Xtr, Xho, Vt
        starts = range(0, T, batch)
        for start in progress(starts, total=len(starts), desc="ridge", verbose=verbose):
            sl = slice(start, min(T, start + batch))
            Yb = bk.asarray((Y[:, sl] if rows is None else Y[rows, sl]).astype(dt))
            kept = []
            for k, (f, (U, D, A, tr, n_val)) in enumerate(zip(folds, factors)):
                Ytr = Yb[tr]
                ybar = Ytr.mean(0)
                B = U.T @ (Ytr - ybar)                              # (k, Tb)
                Yho = Yb[bk.asarray(f.heldout)]
                # per half, the observed side once: centred values, sum of squares, magnitude
                halves = []
                for part in (slice(0, n_val), slice(n_val, None)):
                    y = Yho[part]
                    yc = y - y.mean(0)
                    halves.append((part, yc, bk.to_numpy((yc * yc).sum(0)),
                                   bk.to_numpy(bk.max(bk.abs(y), axis=0)), y.shape[0]))
                ybar_abs = np.abs(bk.to_numpy(ybar)).astype(np.float64)
                for a in range(n_a):
                    P0 = (A * D[a]) @ B              # predictions minus the training mean
                    for h, (part, yc, syy, my, n_h) in enumerate(halves):
                        r = _r_centred(bk, yc, syy, my, P0[part], ybar_abs, n_h, eps)
                        (val_folds if h == 0 else test_folds)[k, a, sl] = r
                if return_predictions:
                    kept.append((B, ybar))
            val_path = val_folds[:, :, sl].mean(0)
            alpha_index[sl] = _select_alpha(val_path)
            if return_predictions:
                for k, (f, (U, D, A, tr, n_val)) in enumerate(zip(folds, factors)):
                    B, ybar = kept[k]
                    Dsel = D[bk.asarray(alpha_index[sl])].T          # (k, Tb)
                    oof[f.heldout, sl] = bk.to_numpy(A @ (Dsel * B) + ybar)
            del Yb, kept
    val_path = val_folds.mean(0)
    test_path = test_folds.mean(0)
    cols = np.arange(T)
    return PaperCVResult(
        alphas=alphas, alpha=alphas[alpha_index], alpha_index=alpha_index,
        val_r=val_path[alpha_index, cols], test_r=test_path[alpha_index, cols],
        val_r_path=val_path, test_r_path=test_path, val_r_folds=val_folds,
        test_r_folds=test_folds, folds=list(folds),
        n_purged=np.array([f.purged.size for f in folds]), oof_pred=oof, half=half,
        backend=name)


# -------------------------------------------------------------------------------- nested protocol
@dataclass
class NestedCVResult:
    """Output of :func:`nested_cv`.

    Attributes
    ----------
    alphas : (n_alphas,)
    alpha_folds : (n_folds, T) alpha chosen by the inner CV of each outer fold
    test_r : (T,) mean over outer folds of the Pearson r on the whole held-out fold
    test_r_folds : (n_folds, T)
    folds : list of Fold (``val`` holds the whole held-out fold, ``test`` is empty)
    backend : str
    """

    alphas: np.ndarray
    alpha_folds: np.ndarray
    test_r: np.ndarray
    test_r_folds: np.ndarray
    folds: list[Fold]
    backend: str = "numpy"


def nested_cv(X: Any, Y: Any, *, alphas: Any = ALPHAS, n_splits: int = 5, inner_splits: int = 5,
              purge: bool = True, event_times: Any = None, purge_window: float = PURGE_WINDOW_S,
              standardize: bool = True, device: str = "auto", backend: str | None = None,
              n_targets_batch: int | None = None, dtype: str | None = None,
              verbose: bool | None = None) -> NestedCVResult:
    """Nested cross-validation with himalaya ``RidgeCV``.

    Outer folds: contiguous ``KFold(n_splits)`` (purged like :func:`paper_folds` when ``purge``).
    On the training folds, ``RidgeCV(alphas, fit_intercept=True, cv=KFold(inner_splits))`` with
    ``solver_params={'score_func': correlation_score, 'local_alpha': True}`` picks alpha per
    target; the refitted model predicts the whole held-out fold, scored by Pearson r.

    Returns
    -------
    NestedCVResult
    """
    from himalaya.ridge import RidgeCV
    from himalaya.scoring import correlation_score
    from sklearn.model_selection import KFold

    X = _as_2d("X", X)
    Y = _as_2d("Y", Y, X.shape[0])
    alphas = _check_alphas(alphas)
    n, T = Y.shape
    validate_type(inner_splits, "int", "inner_splits")
    folds = paper_folds(n, n_splits, event_times=event_times, purge=purge,
                        purge_window=purge_window)
    dt = _compute_dtype(X, Y, dtype=dtype)
    name = resolve_backend(device, backend)
    eps = float(np.finfo(dt).eps)
    batch = n_targets_batch or _default_batch(n, T)
    alpha_folds = np.zeros((len(folds), T))
    r_folds = np.full((len(folds), T), np.nan)
    out_folds = []
    with _himalaya_backend(name) as bk:
        for k, f in enumerate(progress(folds, desc="nested ridge", verbose=verbose)):
            ho = f.heldout
            mean, sd = _standardise(X, f.train, standardize)
            Xtr = ((X[f.train] - mean) / sd).astype(dt)
            Xho = ((X[ho] - mean) / sd).astype(dt)
            model = RidgeCV(alphas=alphas.astype(dt), fit_intercept=True,
                            cv=KFold(inner_splits, shuffle=False),
                            solver_params={"score_func": correlation_score, "local_alpha": True,
                                           "n_targets_batch": batch, "warn": False})
            model.fit(Xtr, Y[f.train].astype(dt))
            pred = bk.asarray(model.predict(Xho))
            alpha_folds[k] = bk.to_numpy(model.best_alphas_)
            r_folds[k] = _pearson_backend(bk, bk.asarray(Y[ho].astype(dt)), pred, eps)
            out_folds.append(Fold(train=f.train, val=ho, test=np.zeros(0, dtype=ho.dtype),
                                  purged=f.purged))
    logger.info("nested_cv: %d folds, %d targets, backend %s", len(folds), T, name)
    return NestedCVResult(alphas=alphas, alpha_folds=alpha_folds, test_r=r_folds.mean(0),
                          test_r_folds=r_folds, folds=out_folds, backend=name)
