"""Figures of a run: learning curves, confusion matrix, per-subject accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        try:
            matplotlib.use("Agg", force=False)
        except Exception:  # pragma: no cover - backend already fixed by the user
            pass
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(history: pd.DataFrame, path: str | Path | None = None):
    """Training and validation loss/accuracy per epoch, one faint line per split and their mean."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for phase, colour in (("train", "tab:blue"), ("val", "tab:orange")):
            col = f"{phase}_{metric}"
            if col not in history:
                continue
            for _, part in history.groupby("split"):
                ax.plot(part["epoch"], part[col], color=colour, alpha=0.15, lw=0.8)
            mean = history.groupby("epoch")[col].mean()
            ax.plot(mean.index, mean.values, color=colour, lw=2, label=phase)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle("Learning curves (thin: each split; thick: mean)")
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion(cm: np.ndarray, classes, path: str | Path | None = None):
    """Row-normalised confusion matrix with the counts written in each cell."""
    plt = _plt()
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2.5, 1.2 * len(classes) + 2))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({cm[i, j]})", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("Test confusion (all splits, all seeds)")
    fig.tight_layout()
    return _save(fig, path)


def plot_per_subject(per_subject: dict, *, chance: float | None = None, metric: str = "accuracy",
                     path: str | Path | None = None, title: str | None = None):
    """Bar per subject (mean over seeds, error bar = std over seeds) with the chance line."""
    plt = _plt()
    subjects = list(per_subject)
    means = [per_subject[s]["mean"] for s in subjects]
    stds = [per_subject[s]["std"] for s in subjects]
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(subjects) + 2), 3.4))
    ax.bar(range(len(subjects)), means, yerr=stds, color="tab:blue", alpha=0.8, capsize=3)
    if chance is not None:
        ax.axhline(chance, color="k", ls="--", lw=1, label=f"chance {chance:.2f}")
        ax.legend(loc="lower right")
    ax.set_xticks(range(len(subjects)), subjects, rotation=45 if len(subjects) > 8 else 0)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"test {metric}")
    ax.set_title(title or f"Test {metric} per subject")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path):
    if path is None:
        return fig
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path
