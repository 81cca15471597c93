"""A scikit-learn-style encoding model for notebooks: :class:`RidgeEncoder`.

``RidgeEncoder().fit(X, Y, event_times=t)`` runs the paper's cross-validation
(:func:`bcikit.encoding.ridge.paper_cv`) to choose one alpha per target on the validation
halves, keeps its cross-validated validation and test r (``cv_``), then refits every target on
all the training events with its own alpha. ``predict`` and ``score`` (mean Pearson r over
targets) apply it to new events. Features are z-scored with the training events' mean and
standard deviation, as inside every fold.

>>> enc = RidgeEncoder().fit(X_train, Y_train, event_times=t_train)     # doctest: +SKIP
>>> enc.cv_.test_r            # cross-validated test r per target (the paper's number)
>>> enc.alpha_                # alpha* per target
>>> enc.score(X_new, Y_new)   # mean r on held-out events
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..utils import validate_type
from .ridge import ALPHAS, PURGE_WINDOW_S

__all__ = ["RidgeEncoder"]
_OWNER = "RidgeEncoder"


class RidgeEncoder:
    """Ridge encoding model with one alpha per target chosen by the paper's protocol.

    Parameters
    ----------
    alphas : array-like
        The grid (default ``logspace(-1, 5, 7)``, on unnormalised sums of squares as
        scikit-learn's ``Ridge``).
    n_splits : int
        Contiguous folds of the paper protocol (each held-out fold: first half validation,
        second half test).
    purge : bool
        Drop training events within ``purge_window`` seconds of held-out events (needs
        ``event_times`` in :meth:`fit`).
    purge_window : float
        Seconds (default 4.2: the targets' windows span -2.0 to +2.2 s).
    standardize : bool
        z-score the features with the training mean and SD.
    device : str
        ``auto``, ``cpu`` or ``cuda`` (himalaya backend).

    Attributes
    ----------
    cv_ : PaperCVResult
        The cross-validation on the training events (``alpha``, ``val_r``, ``test_r``, ...).
    alpha_ : ndarray (n_targets,)
        alpha* per target.
    coef_ : ndarray (n_features, n_targets)
        Weights on the z-scored features, each target with its own alpha.
    intercept_ : ndarray (n_targets,)
    mean_, scale_ : ndarray (n_features,)
        The training statistics used to z-score the features.
    """

    def __init__(self, alphas: Any = ALPHAS, *, n_splits: int = 5, purge: bool = True,
                 purge_window: float = PURGE_WINDOW_S, standardize: bool = True,
                 device: str = "auto"):
        self.alphas = alphas
        self.n_splits = n_splits
        self.purge = purge
        self.purge_window = purge_window
        self.standardize = standardize
        self.device = device

    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in ("alphas", "n_splits", "purge", "purge_window",
                                               "standardize", "device")}

    def set_params(self, **params) -> "RidgeEncoder":
        for k, v in params.items():
            if k not in self.get_params():
                raise ValueError(f"{_OWNER} has no parameter {k!r}; it has "
                                 f"{sorted(self.get_params())}.")
            setattr(self, k, v)
        return self

    def fit(self, X: Any, Y: Any, *, event_times: Any = None) -> "RidgeEncoder":
        """Choose alpha per target by the paper's CV, then refit on all of ``X``, ``Y``.

        Raises
        ------
        ValueError
            Mismatched rows, non-finite values, or ``purge=True`` without ``event_times``.
        """
        from .ridge import fit_ridge_path, paper_cv

        validate_type(self.purge, bool, "purge", owner=_OWNER)
        X = np.asarray(X, dtype=np.float64 if np.asarray(X).dtype == np.float64 else np.float32)
        Y = np.asarray(Y)
        if Y.ndim == 1:
            Y = Y[:, None]
        if X.ndim != 2 or X.shape[0] != Y.shape[0]:
            raise ValueError(f"{_OWNER}.fit needs X (n_events, n_features) and Y (n_events, "
                             f"n_targets) with the same rows; got {X.shape} and {Y.shape}.")
        for name, a in (("X", X), ("Y", Y)):
            if not np.isfinite(a).all():
                raise ValueError(f"{_OWNER}.fit: {name} holds NaN or infinite values.")
        if self.purge and event_times is None:
            raise ValueError(f"{_OWNER}(purge=True).fit needs event_times (seconds) to purge "
                             f"training events near held-out ones; pass them or purge=False.")
        self.cv_ = paper_cv(X, Y, alphas=self.alphas, n_splits=self.n_splits, purge=self.purge,
                            event_times=event_times, purge_window=self.purge_window,
                            standardize=self.standardize, device=self.device)
        self.mean_ = X.mean(0, dtype=np.float64)
        if self.standardize:
            sd = X.std(0, dtype=np.float64)
            sd[sd == 0] = 1.0
        else:
            sd = np.ones_like(self.mean_)
        self.scale_ = sd
        Z = ((X - self.mean_) / sd).astype(X.dtype)
        path = fit_ridge_path(Z, Y, self.cv_.alphas, device=self.device)
        idx = np.asarray(self.cv_.alpha_index)
        cols = np.arange(Y.shape[1])
        self.alpha_ = np.asarray(self.cv_.alphas)[idx]
        self.coef_ = path.coef_[idx, :, cols].T.astype(np.float64)
        self.intercept_ = path.intercept_[idx, cols].astype(np.float64)
        self.n_features_in_ = X.shape[1]
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise ValueError(f"This {_OWNER} is not fitted yet: call fit(X, Y) first.")

    def predict(self, X: Any) -> np.ndarray:
        """Predicted responses ``(n_events, n_targets)``."""
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"{_OWNER}.predict needs X with {self.n_features_in_} features; "
                             f"got shape {X.shape}.")
        return ((X - self.mean_) / self.scale_) @ self.coef_ + self.intercept_

    def score_targets(self, X: Any, Y: Any) -> np.ndarray:
        """Pearson r per target between ``Y`` and the prediction (NaN for constant series)."""
        from .ridge import pearson_r

        Y = np.asarray(Y, dtype=np.float64)
        return pearson_r(Y if Y.ndim == 2 else Y[:, None], self.predict(X))

    def score(self, X: Any, Y: Any) -> float:
        """Mean Pearson r over targets (NaN targets ignored)."""
        return float(np.nanmean(self.score_targets(X, Y)))
