"""Classification metrics with confidence intervals and chance levels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def wilson_interval(n_correct: int, n_total: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (better than the normal one at small n)."""
    from scipy.stats import norm

    if n_total <= 0:
        return (float("nan"), float("nan"))
    z = norm.ppf(0.5 + level / 2)
    p = n_correct / n_total
    denom = 1 + z * z / n_total
    centre = (p + z * z / (2 * n_total)) / denom
    half = z * np.sqrt(p * (1 - p) / n_total + z * z / (4 * n_total * n_total)) / denom
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))


def chance_threshold(n_trials: int, n_classes: int, alpha: float = 0.05) -> float:
    """Accuracy above which a decoder beats chance at level ``alpha`` (binomial, one-sided).

    Combrisson & Jerbi (2015): with few trials, 1/n_classes is not the bar to clear.
    """
    from scipy.stats import binom

    if n_trials <= 0:
        return float("nan")
    k = binom.ppf(1 - alpha, n_trials, 1.0 / n_classes)
    return float((k + 1) / n_trials)


def oracle_bound(oracle_mean: float, oracle_ci95: Sequence[float], n_test: int,
                 level: float = 0.95) -> float:
    """Highest mean accuracy compatible with an oracle, for a decoder tested on ``n_test``
    pooled test trials: ``oracle_mean`` plus the one-sided ``level`` critical value of the
    difference under the hypothesis that the decoder is exactly as accurate as the oracle.

    That difference has the oracle's own standard error (read off its 95 % interval
    ``oracle_ci95``) and the binomial one of ``n_test`` trials at the oracle's accuracy (not the
    decoder's: at 100 % on a few trials that would be zero). A decoder above the bound beats
    what the data allow: leakage, or information the oracle does not see.
    """
    from scipy.stats import norm

    lo, hi = (float(v) for v in oracle_ci95)
    se_oracle = (hi - lo) / (2 * norm.ppf(0.975))
    p = float(np.clip(oracle_mean, 0.0, 1.0))
    z = float(norm.ppf(level))
    return float(oracle_mean + z * np.sqrt(se_oracle ** 2 + p * (1 - p) / max(int(n_test), 1)))


def classification_metrics(y_true, y_pred, *, proba=None,
                           metrics: Sequence[str] = ("accuracy", "balanced_accuracy"),
                           n_classes: int | None = None) -> dict:
    """Compute the named metrics; ``accuracy`` also gets its 95 % Wilson interval."""
    from sklearn import metrics as skm

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    out: dict = {"n_trials": int(y_true.size)}
    for name in metrics:
        if name == "accuracy":
            correct = int((y_true == y_pred).sum())
            out["accuracy"] = correct / max(1, y_true.size)
            out["accuracy_ci95"] = list(wilson_interval(correct, y_true.size))
        elif name == "balanced_accuracy":
            out[name] = float(skm.balanced_accuracy_score(y_true, y_pred))
        elif name == "cohen_kappa":
            out[name] = float(skm.cohen_kappa_score(y_true, y_pred))
        elif name == "f1_macro":
            out[name] = float(skm.f1_score(y_true, y_pred, average="macro"))
        elif name == "roc_auc":
            if proba is None:
                out[name] = float("nan")
            elif np.asarray(proba).shape[1] == 2:
                out[name] = float(skm.roc_auc_score(y_true, np.asarray(proba)[:, 1]))
            else:
                out[name] = float(skm.roc_auc_score(y_true, proba, multi_class="ovr",
                                                    labels=np.arange(np.asarray(proba).shape[1])))
        else:
            raise ValueError(f"Unknown metric {name!r}.")
    if n_classes:
        out["chance_threshold"] = chance_threshold(y_true.size, n_classes)
    return out


def confusion(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Confusion counts, rows = true class, columns = predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def summarise(scores: pd.DataFrame, metric: str = "accuracy") -> dict:
    """Per-subject means and the mean ± std over seeds of the per-seed subject means.

    ``scores`` has one row per (seed, split) with columns seed, subject, ``metric``.
    """
    per_seed_subject = scores.groupby(["seed", "subject"])[metric].mean()
    per_seed = per_seed_subject.groupby("seed").mean()
    per_subject = per_seed_subject.groupby("subject").agg(["mean", "std"]).fillna(0.0)
    return {
        "mean": float(per_seed.mean()),
        "std_over_seeds": float(per_seed.std(ddof=0)) if len(per_seed) > 1 else 0.0,
        "per_seed": {str(k): float(v) for k, v in per_seed.items()},
        "per_subject": {str(s): {"mean": float(r["mean"]), "std": float(r["std"])}
                        for s, r in per_subject.iterrows()},
    }
