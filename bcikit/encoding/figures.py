"""Figures of encoding results: glass-brain r maps, region bars, time courses, comparisons.

Every function draws with matplotlib's Agg backend (no display needed), returns the
``matplotlib.figure.Figure`` and, with ``output_file``, also saves it (an existing file is never
overwritten).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..utils import validate_type


def _pyplot():
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, output_file: str | Path | None) -> None:
    if output_file is None:
        return
    validate_type(output_file, "path-like", "output_file")
    path = Path(output_file)
    if path.exists():
        raise FileExistsError(f"{str(path)!r} already exists; choose another output_file.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def plot_glass_brain_r(values: Any, coords: Any, *, title: str | None = None,
                       vmin: float | None = None, vmax: float | None = None,
                       cmap: str = "viridis", display_mode: str = "lzry",
                       node_size: float | Sequence[float] = 30.0,
                       output_file: str | Path | None = None) -> Any:
    """Per-electrode values (e.g. electrode r) as markers on a nilearn glass brain.

    Parameters
    ----------
    values : array (n_electrodes,)
        NaN electrodes are drawn in grey, small.
    coords : array (n_electrodes, 3)
        Electrode positions in mm, RAS (MNI-like) space.
    title : str or None
    vmin, vmax : float or None
        Colour limits (default: the 2nd and 98th percentiles of the finite values).
    cmap : str
    display_mode : str
        nilearn display mode (``'lzry'``: left, top, right and front views).
    node_size : float or array
    output_file : path or None

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    from nilearn import plotting

    vals = np.asarray(values, dtype=np.float64)
    xyz = np.asarray(coords, dtype=np.float64)
    if vals.ndim != 1 or xyz.shape != (vals.size, 3):
        raise ValueError(f"values must be (n,) and coords (n, 3); got {vals.shape} and "
                         f"{xyz.shape}.")
    finite = np.isfinite(vals)
    if not finite.any():
        raise ValueError("values holds no finite number to draw.")
    if vmin is None or vmax is None:
        lo, hi = np.percentile(vals[finite], [2, 98])
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
        if vmax <= vmin:
            vmax = vmin + 1e-6
    fig = plt.figure(figsize=(12, 3.4))
    sizes = np.broadcast_to(np.asarray(node_size, dtype=float), vals.shape)
    display = plotting.plot_markers(vals[finite], xyz[finite], node_size=sizes[finite],
                                    node_cmap=cmap, node_vmin=vmin, node_vmax=vmax,
                                    display_mode=display_mode, figure=fig, title=title,
                                    colorbar=True, alpha=0.9)
    if (~finite).any():
        display.add_markers(xyz[~finite], marker_color="lightgrey", marker_size=8)
    _save(fig, output_file)
    return fig


def plot_region_bars(table: pd.DataFrame, *, value: str = "score", region: str = "region",
                     hue: str | None = "model", error: str | None = None, top: int | None = 20,
                     title: str | None = None, output_file: str | Path | None = None) -> Any:
    """Bars of a per-electrode (or per-region) value averaged per region.

    Parameters
    ----------
    table : DataFrame
        Rows with at least the ``region`` and ``value`` columns (and ``hue`` when given), e.g.
        electrode scores joined with regions, or :func:`~bcikit.encoding.stats.region_summary`
        with ``value='site_fraction'``.
    value, region, hue : str
    error : {'sem', None}
        Error bars: standard error of the mean within each region.
    top : int or None
        Keep the regions with the largest mean (over hues).
    title : str or None
    output_file : path or None

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    need = [region, value] + ([hue] if hue else [])
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks column(s) {missing}; has {list(table.columns)}.")
    keys = [region] + ([hue] if hue else [])
    g = table.groupby(keys)[value]
    mean = g.mean().unstack(hue) if hue else g.mean().to_frame(value)
    err = None
    if error == "sem":
        sem = g.sem()
        err = sem.unstack(hue) if hue else sem.to_frame(value)
    elif error is not None:
        raise ValueError(f"error must be 'sem' or None; got {error!r}.")
    order = mean.mean(axis=1).sort_values(ascending=False).index
    if top is not None:
        order = order[:top]
    mean = mean.loc[order]
    n_reg, n_hue = mean.shape
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * n_reg * max(1, n_hue) ** 0.5 + 2), 4))
    width = 0.8 / n_hue
    x = np.arange(n_reg)
    for j, col in enumerate(mean.columns):
        ax.bar(x + (j - (n_hue - 1) / 2) * width, mean[col].to_numpy(), width,
               yerr=None if err is None else err.loc[order, col].to_numpy(),
               label=str(col), capsize=2)
    ax.set_xticks(x)
    ax.set_xticklabels([str(r) for r in order], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(value)
    ax.axhline(0, color="k", lw=0.6)
    if hue and n_hue > 1:
        ax.legend(fontsize=7, ncol=2)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    _save(fig, output_file)
    return fig


def plot_r_timecourse(r: Any, times_ms: Any, *, labels: Sequence[str] | None = None,
                      ci: tuple[Any, Any] | None = None, title: str | None = None,
                      ylabel: str = "Pearson r", output_file: str | Path | None = None) -> Any:
    """Time courses of r over the event-locked bins (e.g. the 161 windows, -2000 to +2000 ms).

    Parameters
    ----------
    r : array (n_bins,) or (n_lines, n_bins)
    times_ms : array (n_bins,)
        Window starts in ms.
    labels : sequence of str or None
        One per line.
    ci : (low, high) or None
        Arrays shaped like ``r``, drawn as shaded bands.
    title, ylabel : str
    output_file : path or None

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    rr = np.atleast_2d(np.asarray(r, dtype=np.float64))
    t = np.asarray(times_ms, dtype=np.float64)
    if rr.ndim != 2 or rr.shape[1] != t.size:
        raise ValueError(f"r must be (n_bins,) or (n_lines, n_bins) with n_bins = "
                         f"len(times_ms) = {t.size}; got {np.shape(r)}.")
    if labels is not None and len(labels) != rr.shape[0]:
        raise ValueError(f"labels must give one name per line ({rr.shape[0]}); got {len(labels)}.")
    lows = highs = None
    if ci is not None:
        lows = np.atleast_2d(np.asarray(ci[0], dtype=np.float64))
        highs = np.atleast_2d(np.asarray(ci[1], dtype=np.float64))
        if lows.shape != rr.shape or highs.shape != rr.shape:
            raise ValueError(f"ci bounds must have the shape of r {rr.shape}.")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for i, line in enumerate(rr):
        lab = None if labels is None else str(labels[i])
        (h,) = ax.plot(t, line, lw=1.4, label=lab)
        if lows is not None:
            ax.fill_between(t, lows[i], highs[i], color=h.get_color(), alpha=0.2, lw=0)
    ax.axvline(0, color="k", lw=0.6, ls="--")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("window start (ms from event)")
    ax.set_ylabel(ylabel)
    if labels is not None:
        ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    _save(fig, output_file)
    return fig


def plot_model_scatter(score_a: Any, score_b: Any, *, significant: Any = None,
                       label_a: str = "model A", label_b: str = "model B",
                       title: str | None = None, output_file: str | Path | None = None) -> Any:
    """Electrode scores of two models against each other, significant A > B highlighted.

    Parameters
    ----------
    score_a, score_b : array (n_electrodes,)
        NaN pairs are left out.
    significant : bool array (n_electrodes,) or None
        Electrodes where A > B survived FDR (drawn in colour).
    label_a, label_b, title : str
    output_file : path or None

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    a = np.asarray(score_a, dtype=np.float64)
    b = np.asarray(score_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"score_a and score_b must be 1-D of one length; got {a.shape}, "
                         f"{b.shape}.")
    sig = np.zeros(a.shape, bool) if significant is None else np.asarray(significant, bool)
    if sig.shape != a.shape:
        raise ValueError(f"significant must have shape {a.shape}; got {sig.shape}.")
    ok = np.isfinite(a) & np.isfinite(b)
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.scatter(b[ok & ~sig], a[ok & ~sig], s=10, color="grey", alpha=0.6, label="n.s.")
    if (ok & sig).any():
        ax.scatter(b[ok & sig], a[ok & sig], s=14, color="tab:red",
                   label=f"{label_a}\n> {label_b} ({int((ok & sig).sum())})")
    if ok.any():
        lo = min(a[ok].min(), b[ok].min())
        hi = max(a[ok].max(), b[ok].max())
        pad = 0.05 * (hi - lo + 1e-9)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.7)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel(label_b)
    ax.set_ylabel(label_a)
    ax.set_aspect("equal")
    # the significant points lie above the diagonal: the legend goes below it
    ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    _save(fig, output_file)
    return fig
