"""Classical motor-imagery baselines as scikit-learn pipelines on ``(n_trials, n_chans, n_times)``.

``csp_lda``
    Common spatial patterns (MNE) + linear discriminant analysis: log-variance of
    ``n_components`` spatial filters, then LDA.
``ts_lr``
    Shrinkage covariance (pyriemann) -> Riemannian tangent space -> logistic regression.

Both take ``X`` as a numpy array (``TrialSet.X``) and ``y`` as class codes; band-pass filtering
and windowing happen before (see :mod:`bcikit.data.transforms`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..utils import validate_type

__all__ = ["make_csp_lda", "make_tangent_space_lr", "BASELINES", "make_baseline"]


def make_csp_lda(n_components: int = 4, *, reg: float | str | None = None, log: bool = True):
    """CSP + LDA.

    Parameters
    ----------
    n_components : int
        Number of CSP filters (ordered by MNE's default ``component_order="mutual_info"``).
    reg : float, str or None
        Covariance regularisation passed to :class:`mne.decoding.CSP` (e.g. ``"ledoit_wolf"``).
    log : bool
        Log of the average power of each filtered signal (the usual CSP feature).

    Returns
    -------
    sklearn.pipeline.Pipeline
        ``Pipeline([("csp", CSP), ("lda", LinearDiscriminantAnalysis)])``.
    """
    from mne.decoding import CSP
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.pipeline import Pipeline

    validate_type(n_components, "int", "n_components", owner="make_csp_lda")
    if n_components < 1:
        raise ValueError(f"The 'n_components' parameter of make_csp_lda must be >= 1. "
                         f"Got {n_components} instead.")
    validate_type(log, bool, "log", owner="make_csp_lda")
    return Pipeline([("csp", CSP(n_components=n_components, reg=reg, log=log)),
                     ("lda", LinearDiscriminantAnalysis())])


def make_tangent_space_lr(*, estimator: str = "oas", metric: str = "riemann", C: float = 1.0,
                          max_iter: int = 1000):
    """Covariance -> tangent space -> logistic regression.

    Parameters
    ----------
    estimator : str
        pyriemann covariance estimator; ``"oas"`` (Oracle Approximating Shrinkage) by default,
        which stays positive definite for short windows.
    metric : str
        Metric of the tangent-space reference point and mapping (``"riemann"``).
    C : float
        Inverse L2 regularisation strength of the logistic regression.
    max_iter : int
        Iteration cap of the logistic regression solver.

    Returns
    -------
    sklearn.pipeline.Pipeline
        ``Pipeline([("cov", Covariances), ("ts", TangentSpace), ("lr", LogisticRegression)])``.
    """
    from pyriemann.estimation import Covariances
    from pyriemann.tangentspace import TangentSpace
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    validate_type(estimator, str, "estimator", owner="make_tangent_space_lr")
    validate_type(metric, str, "metric", owner="make_tangent_space_lr")
    validate_type(C, "numeric", "C", owner="make_tangent_space_lr")
    if C <= 0:
        raise ValueError(f"The 'C' parameter of make_tangent_space_lr must be > 0. Got {C} instead.")
    return Pipeline([("cov", Covariances(estimator=estimator)),
                     ("ts", TangentSpace(metric=metric)),
                     ("lr", LogisticRegression(C=C, max_iter=max_iter))])


BASELINES: dict[str, Callable[..., Any]] = {"csp_lda": make_csp_lda,
                                             "ts_lr": make_tangent_space_lr}
"""Baseline name -> factory."""


def make_baseline(name: str, **params: Any):
    """Build the baseline called ``name`` (a key of :data:`BASELINES`) with ``params``.

    Raises
    ------
    ValueError
        For an unknown name or parameter, naming it and listing what is allowed.
    """
    validate_type(name, str, "name", owner="make_baseline")
    if name not in BASELINES:
        raise ValueError(f"Unknown baseline {name!r}; allowed: {sorted(BASELINES)}.")
    factory = BASELINES[name]
    allowed = list(inspect.signature(factory).parameters)
    for p in params:
        if p not in allowed:
            raise ValueError(f"Unknown parameter {p!r} for baseline {name!r}; allowed: {allowed}.")
    return factory(**params)
