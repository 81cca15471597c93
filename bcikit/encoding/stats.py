"""Statistics of encoding models and site calling (``specs/encoding.md`` section 4).

The pieces, in the order an analysis uses them:

1. :func:`bootstrap_indices`: resamples of events drawn once (fixed seed), each row sorted; the
   same array is handed to every model of a (subject, alignment), so all comparisons are paired.
   The resampled unit is the event (the spec's literal unit) or a block of events
   (:func:`bootstrap_blocks`: whole sentences of word events, bcikit's default, because words of
   one sentence share features and overlapping windows and the per-event bootstrap is
   anti-conservative on them).
   Its SHA-1 (:func:`indices_digest`) travels with every result and comparisons refuse to pair
   results drawn from different indices.
2. :func:`bootstrap_encoding`: per model, validation and test r per target for every resample,
   either by re-running the paper protocol on each resample (``mode='refit'``, the paper's; copies
   of an event, or of a resampled sentence, stay in one fold half) or by resampling out-of-fold
   predictions (``mode='oof'``, fast; alpha* fixed).
3. :func:`kept_bins` / :func:`electrode_scores`: bins whose validation r has a 95 % percentile CI
   above 0; electrode score = mean test r over the kept bins; ``n_obs`` = kept bins.
4. :func:`compare_models`: A > B with one-sided bootstrap p = (1 + #{Delta <= 0}) / (B + 1) for
   the comparisons of the spec, Benjamini-Hochberg FDR per family (all electrodes of all subjects,
   per alignment).
5. :func:`call_sites`, :func:`sites_both_alignments`, :func:`site_summary`,
   :func:`region_summary`, :func:`site_detection_metrics`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..utils import check_option, check_range, progress, validate_type
from .ridge import PaperCVResult, _as_2d, _check_times, _himalaya_backend, paper_cv, \
    resolve_backend

#: Names of the comparisons of the spec's table.
COMPARISONS: tuple[str, ...] = ("trained-beats-random", "rank1-beats-rank2",
                                "multi-beats-unimodal", "slip-beats-simclr", "multi-beats-linear")
#: Roles a model can have in the catalog.
MODEL_KINDS: tuple[str, ...] = ("multimodal", "vision", "language", "linear")
_MODES = ("refit", "oof")
#: Resampling units of the bootstrap: whole sentences (bcikit's default) or single events (the
#: spec's literal unit).
BOOTSTRAP_UNITS: tuple[str, ...] = ("sentence", "event")


# ------------------------------------------------------------------------------------ bootstrap
def bootstrap_blocks(events: pd.DataFrame, unit: str = "sentence") -> np.ndarray | None:
    """Resampling blocks of the bootstrap: one label per event, blocks contiguous in time order.

    Why blocks: words of one sentence share their features (the sentence text of every model,
    the sentence latent of the simulator) and overlapping 4.2 s windows, so their responses are
    not independent. Resampling word events one by one (the spec's literal unit) then
    underestimates the spread of r and its differences: on the 60-minute movie simulation
    (156 electrodes, 14 networks, 1000 resamples) the FDR-corrected A > B tests passed at 17-27 %
    of null electrodes at q = 0.05 and 19 % of additive electrodes were called as sites
    (precision 0.62); resampling whole sentences kept null electrodes near nominal
    (benchmarks/README.md, "Encoding pipeline at the spec's size"). The A > B test is bcikit's
    own definition (spec section 4), and the spec already keeps dependent copies of an event
    together (section 6).

    Parameters
    ----------
    events : DataFrame
        From :func:`~bcikit.encoding.events.make_events` (columns ``alignment`` and
        ``sentence_idx``, time order).
    unit : {'sentence', 'event'}
        ``'sentence'``: consecutive word events with the same ``sentence_idx`` form one block;
        scene-cut events (``alignment == 'vision'``) and words without a sentence id (-1) are
        each their own block. ``'event'``: every event is its own block, returned as ``None``
        (the per-event bootstrap of :func:`bootstrap_indices`, bit for bit).

    Returns
    -------
    ndarray of int64 (n_events,) or None
        Block label per event, 0..n_blocks-1, non-decreasing.
    """
    check_option(unit, BOOTSTRAP_UNITS, "bootstrap_unit", owner="bootstrap_blocks")
    if not isinstance(events, pd.DataFrame):
        raise TypeError(f"events must be a DataFrame from make_events; got "
                        f"{type(events).__name__}.")
    if unit == "event":
        return None
    for col in ("alignment", "sentence_idx"):
        if col not in events.columns:
            raise ValueError(f"events lacks the column {col!r} needed for "
                             f"bootstrap_unit='sentence' (use make_events).")
    n = len(events)
    sent = pd.to_numeric(events["sentence_idx"], errors="coerce").to_numpy(np.float64)
    word = (events["alignment"].astype(str).to_numpy() == "language") & np.isfinite(sent) \
        & (sent >= 0)
    # a new block starts at every event that is not a word of the previous event's sentence
    new = np.ones(n, dtype=bool)
    if n > 1:
        new[1:] = ~(word[1:] & word[:-1] & (sent[1:] == sent[:-1]))
    return (np.cumsum(new) - 1).astype(np.int64)


def _check_blocks(blocks: Any, n_events: int) -> np.ndarray:
    b = np.asarray(blocks)
    if b.shape != (n_events,) or not np.issubdtype(b.dtype, np.integer):
        raise ValueError(f"blocks must be an integer array of shape ({n_events},) (one label "
                         f"per event, from bootstrap_blocks); got shape {b.shape}, dtype "
                         f"{b.dtype}.")
    change = np.flatnonzero(b[1:] != b[:-1]) + 1
    if np.unique(b).size != change.size + 1:
        raise ValueError("blocks must be contiguous: all events of a block next to each other "
                         "in time order (use bootstrap_blocks).")
    return b.astype(np.int64)


def bootstrap_indices(n_events: int, n_boot: int = 1000, *, seed: int = 0,
                      blocks: Any = None) -> np.ndarray:
    """Bootstrap resamples of events (or of blocks of events), drawn once.

    Parameters
    ----------
    n_events : int
    n_boot : int
        Number of resamples (the spec's 1000).
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed gives the same indices.
    blocks : array of int (n_events,) or None
        Block label per event (:func:`bootstrap_blocks`). ``None``: events are drawn one by one
        (the spec's literal unit). Otherwise each resample draws as many blocks as there are,
        with replacement, and takes all events of every drawn block (a block drawn k times
        contributes k copies of each of its events), so dependent events stay together.

    Returns
    -------
    ndarray of int64, shape (n_boot, L)
        Each row sorted (events stay in time order, copies adjacent). Per-event resamples have
        ``L = n_events``. Block resamples vary in length: ``L`` is the longest and shorter rows
        are padded at the end with -1 (ignored by :func:`bootstrap_encoding`).
    """
    validate_type(n_events, "int", "n_events")
    validate_type(n_boot, "int", "n_boot")
    validate_type(seed, "int", "seed")
    if n_events < 1 or n_boot < 1:
        raise ValueError(f"n_events and n_boot must be positive; got {n_events} and {n_boot}.")
    rng = np.random.default_rng(seed)
    if blocks is None:
        idx = rng.integers(0, n_events, size=(n_boot, n_events), dtype=np.int64)
        idx.sort(axis=1)
        return idx
    b = _check_blocks(blocks, n_events)
    _, label = np.unique(b, return_inverse=True)
    n_blocks = int(label.max()) + 1
    draws = rng.integers(0, n_blocks, size=(n_boot, n_blocks), dtype=np.int64)
    counts = np.stack([np.bincount(row, minlength=n_blocks) for row in draws])[:, label]
    lengths = counts.sum(1)
    idx = np.full((n_boot, int(lengths.max())), -1, dtype=np.int64)
    events = np.arange(n_events, dtype=np.int64)
    for i in range(n_boot):
        idx[i, :lengths[i]] = np.repeat(events, counts[i])
    return idx


def indices_digest(indices: Any) -> str:
    """SHA-1 of a bootstrap index array (shape and values), to prove two results are paired."""
    a = np.ascontiguousarray(np.asarray(indices, dtype=np.int64))
    h = hashlib.sha1(repr(a.shape).encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _check_indices(indices: Any, n_events: int, padded: bool = False) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer) \
            or (not padded and idx.shape[1] != n_events):
        raise ValueError(f"indices must be an integer array (n_boot, {n_events}) from "
                         f"bootstrap_indices; got shape {idx.shape}, dtype {idx.dtype}.")
    low = -1 if padded else 0
    if idx.min() < low or idx.max() >= n_events:
        raise ValueError(f"indices must lie in [0, {n_events})"
                         + (" (-1 pads block resamples)." if padded else "."))
    d = np.diff(idx, axis=1)
    if padded:
        pad = idx < 0
        if np.any(pad[:, :-1] & ~pad[:, 1:]) or np.any(pad[:, 0]):
            raise ValueError("block resamples are padded with -1 at the end of a row only, "
                             "and a row cannot be empty (use bootstrap_indices).")
        d = np.where(pad[:, 1:], 0, d)
    if np.any(d < 0):
        raise ValueError("each row of indices must be sorted (use bootstrap_indices).")
    return idx


@dataclass
class EncodingResult:
    """Cross-validated encoding of one model for one (subject, alignment), with its bootstrap.

    Attributes
    ----------
    model, subject, alignment : str
    electrodes : ndarray (E,) of str
    n_bins : int
        Targets are electrode-major: column = e * n_bins + b.
    mode : {'refit', 'oof'}
    indices : ndarray (B, n_events)
        The shared bootstrap indices; ``digest`` is their SHA-1.
    cv : PaperCVResult
        The fit on all events (point estimates: ``cv.val_r``, ``cv.test_r``, ``cv.alpha``).
    boot_val_r, boot_test_r : ndarray (B, T) float32
        Validation and test r per resample.
    blocks : ndarray (n_events,) of int64 or None
        Resampling block per event (:func:`bootstrap_blocks`); ``None`` for the per-event
        bootstrap.
    unit : {'sentence', 'event'}
        The bootstrap unit the blocks came from.
    """

    model: str
    subject: str
    alignment: str
    electrodes: np.ndarray
    n_bins: int
    mode: str
    indices: np.ndarray
    digest: str
    cv: PaperCVResult
    boot_val_r: np.ndarray
    boot_test_r: np.ndarray
    blocks: np.ndarray | None = None
    unit: str = "event"

    @property
    def n_targets(self) -> int:
        return self.boot_val_r.shape[1]

    def save(self, path: str | Path) -> Path:
        """Write the result to ``path`` (``.npz``); an existing file is never overwritten."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"EncodingResult.save writes a '.npz' file; got {str(path)!r}.")
        if path.exists():
            raise FileExistsError(f"{str(path)!r} already exists; choose another path.")
        meta = {"model": self.model, "subject": self.subject, "alignment": self.alignment,
                "n_bins": self.n_bins, "mode": self.mode, "digest": self.digest,
                "backend": self.cv.backend, "n_folds": len(self.cv.folds),
                "unit": self.unit}
        arrays: dict[str, np.ndarray] = {
            "meta": np.array(json.dumps(meta)), "electrodes": self.electrodes.astype(str),
            "indices": self.indices, "boot_val_r": self.boot_val_r,
            "boot_test_r": self.boot_test_r}
        if self.blocks is not None:
            arrays["blocks"] = self.blocks
        for key in ("alphas", "alpha_index", "val_r_folds", "test_r_folds", "n_purged"):
            arrays[f"cv_{key}"] = getattr(self.cv, key)
        if self.cv.oof_pred is not None:
            arrays["cv_oof_pred"] = self.cv.oof_pred
            arrays["cv_half"] = self.cv.half
        for k, f in enumerate(self.cv.folds):
            for part in ("train", "val", "test", "purged"):
                arrays[f"fold{k}_{part}"] = getattr(f, part)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "EncodingResult":
        """Read a result written by :meth:`save`."""
        from .ridge import Fold

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"The encoding result {str(path)!r} does not exist.")
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            folds = [Fold(**{p: z[f"fold{k}_{p}"] for p in ("train", "val", "test", "purged")})
                     for k in range(meta["n_folds"])]
            alphas, ai = z["cv_alphas"], z["cv_alpha_index"]
            vf, tf = z["cv_val_r_folds"], z["cv_test_r_folds"]
            vp, tp = vf.mean(0), tf.mean(0)
            cols = np.arange(ai.size)
            cv = PaperCVResult(alphas=alphas, alpha=alphas[ai], alpha_index=ai,
                               val_r=vp[ai, cols], test_r=tp[ai, cols], val_r_path=vp,
                               test_r_path=tp, val_r_folds=vf, test_r_folds=tf, folds=folds,
                               n_purged=z["cv_n_purged"],
                               oof_pred=z["cv_oof_pred"] if "cv_oof_pred" in z else None,
                               half=z["cv_half"] if "cv_half" in z else None,
                               backend=meta["backend"])
            indices = z["indices"]
            if indices_digest(indices) != meta["digest"]:
                raise ValueError(f"{str(path)!r}: the stored bootstrap indices do not match "
                                 "their digest (file altered?).")
            return cls(model=meta["model"], subject=meta["subject"],
                       alignment=meta["alignment"], electrodes=z["electrodes"],
                       n_bins=int(meta["n_bins"]), mode=meta["mode"], indices=indices,
                       digest=meta["digest"], cv=cv, boot_val_r=z["boot_val_r"],
                       boot_test_r=z["boot_test_r"],
                       blocks=z["blocks"] if "blocks" in z else None,
                       unit=meta.get("unit", "event"))


def _weighted_r(sw: np.ndarray, S: np.ndarray, my: np.ndarray, mp: np.ndarray,
                eps: float) -> np.ndarray:
    """Pearson r per (resample, target) from count-weighted sums.

    ``sw`` (Bc, 1): the resamples' total counts; ``S`` (Bc, 5 Tb): ``W @ [y, p, y², p², y·p]``
    for counts W (Bc, n) and y, p (n, Tb) centred by their unweighted means; ``my``, ``mp``
    (1, Tb): max |y|, max |p| (a weighted variance below rounding is a constant: NaN).
    Returns (Bc, Tb) float64.
    """
    sy, sp, syy, spp, syp = np.split(S, 5, axis=1)   # views: updated in place below
    # sw times the weighted (co)variances: sw·Σw(y - ȳ_w)² = sw·Σw y² - (Σw y)², ...
    syy *= sw
    syy -= sy * sy
    spp *= sw
    spp -= sp * sp
    syp *= sw
    syp -= sy * sp
    sw2 = sw * sw
    const = (syy <= sw2 * (16 * eps * my) ** 2) | (spp <= sw2 * (16 * eps * mp) ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        den = np.sqrt(syy * spp)
        r = np.divide(syp, den, out=den)
    r[const | ~np.isfinite(r)] = np.nan
    return np.clip(r, -1.0, 1.0, out=r)


def _oof_bootstrap(Y: np.ndarray, cv: PaperCVResult, idx: np.ndarray, *, backend: str,
                   n_targets_batch: int | None, chunk: int, verbose: bool | None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Validation and test r of every resample, averaged over folds (``oof`` mode).

    Per (target batch, fold half) the centred targets and predictions and their products are
    formed once; each chunk of resamples is then one matrix product of its counts with them.
    """
    n, T = Y.shape
    B = idx.shape[0]
    pred = cv.oof_pred
    eps = float(np.finfo(pred.dtype if pred.dtype != np.float16 else np.float32).eps)
    n_folds = len(cv.folds)
    val = np.zeros((B, T), dtype=np.float64)
    test = np.zeros((B, T), dtype=np.float64)
    batch = n_targets_batch or int(max(64, min(T, 20_000_000 // max(n, 1),
                                               2_000_000 // max(chunk, 1))))
    counts = np.zeros((B, n), dtype=np.float64)
    for b, row in enumerate(idx):
        counts[b] = np.bincount(row[row >= 0], minlength=n)
    jobs = [(slice(t0, min(T, t0 + batch)), part, out)
            for t0 in range(0, T, batch) for f in cv.folds
            for part, out in ((f.val, val), (f.test, test))]
    with _himalaya_backend(backend) as bk:
        for sl, part, out in progress(jobs, desc="oof bootstrap", verbose=verbose):
            y = Y[part, sl].astype(np.float64)
            p = pred[part, sl].astype(np.float64)
            y -= y.mean(0)
            p -= p.mean(0)
            my = np.abs(y).max(0)[None, :]
            mp = np.abs(p).max(0)[None, :]
            Z = bk.asarray(np.concatenate([y, p, y * y, p * p, y * p], axis=1))
            del y, p
            W_part = counts[:, part]
            for b0 in range(0, B, chunk):
                W = W_part[b0:b0 + chunk]
                S = np.asarray(bk.to_numpy(bk.asarray(W) @ Z), dtype=np.float64)
                out[b0:b0 + chunk, sl] += _weighted_r(W.sum(1)[:, None], S, my, mp,
                                                      eps) / n_folds
    return val, test


#: Fewest blocks a fold half may hold for a block bootstrap (fewer: resamples often leave a
#: half with one or two sentences, whose r is undefined or meaningless).
MIN_BLOCKS_PER_HALF = 10


def _check_blocks_per_half(blocks: np.ndarray, folds: Sequence[Any]) -> None:
    for k, f in enumerate(folds):
        for part in ("val", "test"):
            m = np.unique(blocks[getattr(f, part)]).size
            if m < MIN_BLOCKS_PER_HALF:
                raise ValueError(
                    f"bootstrap_unit='sentence': fold {k}'s {part} half holds only {m} "
                    f"sentence block(s) ({np.unique(blocks).size} in all); the block bootstrap "
                    f"needs at least {MIN_BLOCKS_PER_HALF} per fold half. Use a longer "
                    f"recording or bootstrap_unit='event'.")


def bootstrap_encoding(X: Any, Y: Any, indices: Any, *, mode: str = "refit",
                       blocks: Any = None, unit: str | None = None,
                       cv_result: PaperCVResult | None = None, event_times: Any = None,
                       model: str = "model", subject: str = "sub", alignment: str = "alignment",
                       electrodes: Sequence[str] | None = None, n_bins: int = 161,
                       oof_chunk: int = 250, verbose: bool | None = None,
                       **cv_kwargs: Any) -> EncodingResult:
    """Cross-validated encoding of one model plus its bootstrap on shared indices.

    Parameters
    ----------
    X : array (n_events, n_features)
    Y : array (n_events, n_targets), electrode-major (column = e * n_bins + b)
    indices : array (B, L)
        From :func:`bootstrap_indices`; pass the *same* array for every model of a
        (subject, alignment).
    mode : {'refit', 'oof'}
        ``'refit'`` (the paper's; default for reported results): the paper protocol is re-run on
        each resample, alpha re-selected, all copies of an event kept in one fold half (purge uses
        the copies' times); with ``blocks``, all copies of a resampled block stay in one fold
        half. ``'oof'`` (fast, exploration): the out-of-fold predictions of the fit on all
        events are resampled (alpha* fixed; with ``blocks``, by block); r per fold half is
        weighted by the resample counts and averaged over folds as in the protocol.
    blocks : array of int (n_events,) or None
        The blocks ``indices`` were drawn with (:func:`bootstrap_blocks`,
        ``bootstrap_indices(..., blocks=blocks)``); ``None`` for per-event indices.
    unit : {'sentence', 'event'} or None
        Label of the bootstrap unit stored with the result; default ``'event'`` without blocks,
        ``'sentence'`` with them.
        Block bootstraps need at least :data:`MIN_BLOCKS_PER_HALF` blocks in every fold half
        of the fit on all events (``ValueError`` otherwise).
    cv_result : PaperCVResult or None
        The fit on all events, if already computed (``oof`` needs ``return_predictions=True``).
    event_times : array (n_events,) or None
        Needed with ``purge=True`` (the default of :func:`~bcikit.encoding.ridge.paper_cv`).
    model, subject, alignment : str
        Labels carried into the scores and comparisons.
    electrodes : sequence of str or None
        Electrode labels (E = n_targets / n_bins); default ``'e0', 'e1', ...``.
    n_bins : int
    oof_chunk : int
        Resamples per matrix product in ``oof`` mode (memory: about ``oof_chunk`` x 5 x the
        target batch float64 values; the target batch holds at most 2,000,000 / ``oof_chunk``
        targets unless ``n_targets_batch`` is given).
    verbose : bool or None
    **cv_kwargs
        Passed to :func:`~bcikit.encoding.ridge.paper_cv` (alphas, n_splits, purge,
        purge_window, standardize, device, backend, n_targets_batch, dtype).

    Returns
    -------
    EncodingResult
    """
    check_option(mode, _MODES, "mode", owner="bootstrap_encoding")
    X = _as_2d("X", X)
    Y = _as_2d("Y", Y, X.shape[0])
    n, T = Y.shape
    blk = None if blocks is None else _check_blocks(blocks, n)
    idx = _check_indices(indices, n, padded=blk is not None)
    if unit is None:
        unit = "event" if blk is None else "sentence"
    check_option(unit, BOOTSTRAP_UNITS, "unit", owner="bootstrap_encoding")
    if unit == "event" and blk is not None:
        raise ValueError("bootstrap_encoding: unit='event' resamples single events; do not pass "
                         "blocks with it.")
    validate_type(n_bins, "int", "n_bins")
    if n_bins < 1 or T % n_bins:
        raise ValueError(f"Y has {T} targets, not a multiple of n_bins={n_bins} "
                         "(targets must be electrode-major: n_electrodes * n_bins columns).")
    n_el = T // n_bins
    if electrodes is None:
        labels = np.array([f"e{i}" for i in range(n_el)])
    else:
        labels = np.asarray(list(electrodes)).astype(str)
        if labels.shape != (n_el,):
            raise ValueError(f"electrodes must list {n_el} labels (n_targets / n_bins); got "
                             f"{labels.shape[0] if labels.ndim else 0}.")
    for key in ("groups", "resample", "folds", "return_predictions"):
        if key in cv_kwargs:
            raise ValueError(f"bootstrap_encoding sets {key!r} itself; do not pass it.")
    times = None if event_times is None else _check_times(event_times, n)
    if cv_result is None:
        cv_result = paper_cv(X, Y, event_times=times, return_predictions=(mode == "oof"),
                             verbose=False, **cv_kwargs)
    elif cv_result.val_r.shape != (T,):
        raise ValueError(f"cv_result has {cv_result.val_r.shape[0]} targets; Y has {T}.")
    if blk is not None:
        _check_blocks_per_half(blk, cv_result.folds)
    B = idx.shape[0]
    if mode == "refit":
        boot_val = np.empty((B, T), dtype=np.float32)
        boot_test = np.empty((B, T), dtype=np.float32)
        for b in progress(range(B), desc=f"bootstrap {model}", verbose=verbose):
            rows = idx[b]
            if blk is not None:
                rows = rows[rows >= 0]
            res = paper_cv(X, Y, resample=rows, groups=rows if blk is None else blk[rows],
                           event_times=None if times is None else times[rows], verbose=False,
                           **cv_kwargs)
            boot_val[b] = res.val_r
            boot_test[b] = res.test_r
    else:
        if cv_result.oof_pred is None:
            raise ValueError("mode='oof' needs the out-of-fold predictions: pass a cv_result "
                             "from paper_cv(..., return_predictions=True) or none at all.")
        backend = resolve_backend(cv_kwargs.get("device", "auto"), cv_kwargs.get("backend"))
        v, t = _oof_bootstrap(Y, cv_result, idx, backend=backend,
                              n_targets_batch=cv_kwargs.get("n_targets_batch"),
                              chunk=oof_chunk, verbose=verbose)
        boot_val, boot_test = v.astype(np.float32), t.astype(np.float32)
    return EncodingResult(model=str(model), subject=str(subject), alignment=str(alignment),
                          electrodes=labels, n_bins=n_bins, mode=mode, indices=idx,
                          digest=indices_digest(idx), cv=cv_result, boot_val_r=boot_val,
                          boot_test_r=boot_test, blocks=blk, unit=unit)


# ---------------------------------------------------------------------------- scores and tests
def percentile_ci(samples: Any, *, level: float = 0.95, axis: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval; NaN wherever a sample along ``axis`` is NaN."""
    check_range(level, "level", low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    a = np.asarray(samples, dtype=np.float64)
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(a, [tail, 100.0 - tail], axis=axis)
    return lo, hi


def kept_bins(result: EncodingResult, *, level: float = 0.95) -> np.ndarray:
    """Targets whose lower percentile CI of validation r is above 0 (bool, shape (T,))."""
    lo, _ = percentile_ci(result.boot_val_r, level=level)
    point = np.asarray(result.cv.val_r)
    return np.asarray((lo > 0) & np.isfinite(point), dtype=bool)


@dataclass
class ElectrodeScores:
    """Electrode-level scores of one model for one (subject, alignment).

    Attributes
    ----------
    model, subject, alignment, digest : str
    table : DataFrame
        One row per electrode: subject, alignment, model, electrode, score (mean test r over kept
        bins), val_score (mean validation r over kept bins), n_obs (kept bins), ci_low, ci_high
        (percentile CI of the score).
    boot_test, boot_val : ndarray (B, E)
        The same means per bootstrap resample (kept bins fixed).
    bins : {'own', 'shared', 'given'}
        Which bins were averaged (see :func:`group_electrode_scores`).
    """

    model: str
    subject: str
    alignment: str
    digest: str
    table: pd.DataFrame
    boot_test: np.ndarray
    boot_val: np.ndarray = field(repr=False)
    bins: str = "own"

    @property
    def electrodes(self) -> np.ndarray:
        return self.table["electrode"].to_numpy()


def _mean_over_kept(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Mean over the last axis where ``keep``; NaN propagates from kept bins; none kept -> NaN."""
    n_obs = keep.sum(-1)
    total = np.where(keep, values, 0.0).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = total / n_obs
    return np.where(n_obs > 0, out, np.nan)


def electrode_scores(result: EncodingResult, *, level: float = 0.95, keep: Any = None
                     ) -> ElectrodeScores:
    """Electrode scores of one model (see :class:`ElectrodeScores`).

    Parameters
    ----------
    result : EncodingResult
    level : float
        Level of the percentile intervals.
    keep : bool array (T,) or None
        The bins to average over; default the model's own :func:`kept_bins` (the spec's
        definition). :func:`group_electrode_scores` passes the bins shared by a group of models.
    """
    E, nb = result.electrodes.size, result.n_bins
    B = result.boot_val_r.shape[0]
    if keep is None:
        keep = kept_bins(result, level=level)
        policy = "own"
    else:
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (E * nb,):
            raise ValueError(f"keep must be a boolean mask of the {E * nb} targets; got shape "
                             f"{keep.shape}.")
        policy = "given"
    keep = keep.reshape(E, nb)
    test = np.asarray(result.cv.test_r, dtype=np.float64).reshape(E, nb)
    val = np.asarray(result.cv.val_r, dtype=np.float64).reshape(E, nb)
    boot_test = _mean_over_kept(result.boot_test_r.reshape(B, E, nb).astype(np.float64), keep)
    boot_val = _mean_over_kept(result.boot_val_r.reshape(B, E, nb).astype(np.float64), keep)
    lo, hi = percentile_ci(boot_test, level=level)
    table = pd.DataFrame({
        "subject": result.subject, "alignment": result.alignment, "model": result.model,
        "electrode": result.electrodes, "score": _mean_over_kept(test, keep),
        "val_score": _mean_over_kept(val, keep), "n_obs": keep.sum(1).astype(int),
        "ci_low": lo, "ci_high": hi})
    return ElectrodeScores(model=result.model, subject=result.subject,
                           alignment=result.alignment, digest=result.digest, table=table,
                           boot_test=boot_test, boot_val=boot_val, bins=policy)


def group_electrode_scores(results: Iterable[EncodingResult], *, bins: str = "shared",
                           level: float = 0.95) -> list[ElectrodeScores]:
    """Electrode scores of every model of one (subject, alignment), ready for
    :func:`compare_models`.

    Parameters
    ----------
    results : iterable of EncodingResult
        All models of one subject and alignment, on the same bootstrap indices.
    bins : {'shared', 'own'}
        ``'own'``: each model averages over its own kept bins (the spec's literal definition; a
        model with fewer than ``min_obs`` kept bins at an electrode, typically a random twin,
        cannot be compared there). ``'shared'`` (default): every model averages over the same
        bins, those kept for *at least one* model of the group at that electrode, so scores,
        rankings and paired differences are on identical targets and ``n_obs`` is common.
    level : float

    Returns
    -------
    list of ElectrodeScores
    """
    check_option(bins, ("shared", "own"), "bins", owner="group_electrode_scores")
    results = list(results)
    if not results:
        raise ValueError("results is empty.")
    first = results[0]
    for r in results[1:]:
        if (r.subject, r.alignment) != (first.subject, first.alignment):
            raise ValueError("group_electrode_scores takes one (subject, alignment) at a time; "
                             f"got {(first.subject, first.alignment)} and "
                             f"{(r.subject, r.alignment)}.")
        if r.digest != first.digest:
            raise ValueError(f"Models {first.model!r} and {r.model!r} used different bootstrap "
                             "indices; draw them once and share them.")
        if r.n_targets != first.n_targets or not np.array_equal(r.electrodes, first.electrodes):
            raise ValueError(f"Models {first.model!r} and {r.model!r} have different targets.")
    if bins == "own":
        return [electrode_scores(r, level=level) for r in results]
    masks = [kept_bins(r, level=level) for r in results]
    nb = first.n_bins
    shared = np.logical_or.reduce(masks)
    out = []
    for r, own in zip(results, masks):
        s = electrode_scores(r, level=level, keep=shared)
        s.bins = "shared"
        s.table["n_kept_own"] = own.reshape(-1, nb).sum(1).astype(int)
        out.append(s)
    return out


def p_greater(boot_a: Any, boot_b: Any) -> np.ndarray:
    """One-sided bootstrap p-value of A > B per column.

    ``p = (1 + #{b: Delta_b <= 0}) / (B + 1)`` with ``Delta_b = a_b - b_b`` on shared resamples;
    a NaN difference counts as ``Delta <= 0`` (never evidence for A).
    """
    a = np.asarray(boot_a, dtype=np.float64)
    b = np.asarray(boot_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim not in (1, 2):
        raise ValueError(f"boot_a and boot_b must have the same shape (B,) or (B, E); got "
                         f"{a.shape} and {b.shape}.")
    delta = a - b
    fails = ~(delta > 0)
    return (1.0 + fails.sum(0)) / (a.shape[0] + 1.0)


def fdr_bh(p: Any, *, q: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini-Hochberg FDR over one family of p-values.

    Parameters
    ----------
    p : array
        p-values; NaN entries (tests not run) are left out of the family.
    q : float
        FDR level.

    Returns
    -------
    reject : ndarray of bool
        ``qvalue <= q`` (False where p is NaN).
    qvalues : ndarray
        BH-adjusted p-values (``scipy.stats.false_discovery_control``), NaN where p is NaN.
    """
    from scipy.stats import false_discovery_control

    check_range(q, "q", low=0.0, high=1.0, low_inclusive=False)
    p = np.asarray(p, dtype=np.float64)
    ok = np.isfinite(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError("p-values must lie in [0, 1].")
    qv = np.full(p.shape, np.nan)
    if ok.any():
        qv[ok] = false_discovery_control(p[ok], method="bh")
    reject = np.zeros(p.shape, dtype=bool)
    reject[ok] = qv[ok] <= q
    return reject, qv


# ------------------------------------------------------------------------------- comparisons
def make_catalog(catalog: Any) -> pd.DataFrame:
    """Validate a model catalog.

    Parameters
    ----------
    catalog : DataFrame or mapping
        Columns (or per-model keys) ``kind`` in {'multimodal', 'vision', 'language', 'linear'},
        ``trained`` (bool) and ``twin`` (name of the random-initialisation twin, or None), indexed
        by ``model`` (a column of a DataFrame, or the mapping's keys).

    Returns
    -------
    DataFrame indexed by model with columns kind, trained, twin.
    """
    if isinstance(catalog, Mapping):
        df = pd.DataFrame.from_dict({k: dict(v) for k, v in catalog.items()}, orient="index")
        df.index.name = "model"
    elif isinstance(catalog, pd.DataFrame):
        df = catalog.set_index("model") if "model" in catalog.columns else catalog.copy()
    else:
        raise TypeError(f"catalog must be a DataFrame or a mapping; got {type(catalog).__name__}.")
    for col in ("kind", "trained"):
        if col not in df.columns:
            raise ValueError(f"The model catalog needs a {col!r} column.")
    if "twin" not in df.columns:
        df["twin"] = None
    bad = sorted(set(df["kind"]) - set(MODEL_KINDS))
    if bad:
        raise ValueError(f"Catalog kinds must be in {MODEL_KINDS}; got {bad}.")
    df["trained"] = df["trained"].astype(bool)
    df["twin"] = df["twin"].where(df["twin"].notna(), None)
    if df.index.duplicated().any():
        raise ValueError(f"Catalog lists models twice: {sorted(df.index[df.index.duplicated()])}.")
    return df[["kind", "trained", "twin"]]


def _best(val: np.ndarray, eligible: np.ndarray, order: int = 0) -> np.ndarray:
    """Row index (model) of the ``order``-th best validation score per column; -1 if none."""
    filled = np.where(eligible & np.isfinite(val), val, -np.inf)
    ranks = np.argsort(-filled, axis=0, kind="stable")
    pick = ranks[order] if filled.shape[0] > order else np.full(filled.shape[1], -1)
    ok = np.take_along_axis(filled, pick[None, :].clip(0), 0)[0] > -np.inf
    return np.where(ok, pick, -1)


def compare_models(scores: Iterable[ElectrodeScores], catalog: Any, *, q: float = 0.05,
                   min_obs: int = 10, slip_combo: str = "SLIP-Combo-vision",
                   simclr: str = "SLIP-SimCLR") -> pd.DataFrame:
    """Run the comparisons of the spec on electrode scores, with BH FDR per family.

    Within each (subject, alignment) every model must carry the same bootstrap digest (paired
    resamples) and the same electrodes. "Best" models are picked per electrode on validation
    scores among models with ``n_obs >= min_obs`` and tested on test scores:

    - trained-beats-random: each trained model vs its ``twin`` (family per model);
    - rank1-beats-rank2: best vs second-best trained non-linear-integration model;
    - multi-beats-unimodal: best trained multimodal vs best trained vision or language model;
    - slip-beats-simclr: ``slip_combo`` vs ``simclr`` (when both are scored);
    - multi-beats-linear: best trained multimodal vs each trained ``linear`` model (family per
      linear model).

    A test needs ``n_obs >= min_obs`` for both models, else its p is NaN (not tested).
    Families for FDR: (family, alignment), over all electrodes of all subjects.

    Returns
    -------
    DataFrame
        One row per (family, subject, alignment, electrode): comparison, family, alignment,
        subject, electrode, model_a, model_b, score_a, score_b, val_a, val_b, n_obs_a, n_obs_b,
        delta (score_a - score_b), p, q, significant.
    """
    cat = make_catalog(catalog)
    validate_type(min_obs, "int", "min_obs")
    groups: dict[tuple[str, str], dict[str, ElectrodeScores]] = {}
    for s in scores:
        if not isinstance(s, ElectrodeScores):
            raise TypeError(f"scores must hold ElectrodeScores; got {type(s).__name__}.")
        key = (s.subject, s.alignment)
        if s.model in groups.setdefault(key, {}):
            raise ValueError(f"Model {s.model!r} is scored twice for subject {s.subject!r}, "
                             f"alignment {s.alignment!r}.")
        if s.model not in cat.index:
            raise ValueError(f"Model {s.model!r} is not in the catalog (known: "
                             f"{sorted(cat.index)}).")
        groups[key][s.model] = s
    if not groups:
        raise ValueError("No electrode scores given.")
    rows: list[pd.DataFrame] = []
    for (subject, alignment), models in groups.items():
        first = next(iter(models.values()))
        for name, s in models.items():
            if s.digest != first.digest:
                raise ValueError(f"Subject {subject!r}, alignment {alignment!r}: models "
                                 f"{first.model!r} and {name!r} used different bootstrap "
                                 "indices; draw them once and share them.")
            if not np.array_equal(s.electrodes, first.electrodes):
                raise ValueError(f"Subject {subject!r}, alignment {alignment!r}: models "
                                 f"{first.model!r} and {name!r} have different electrodes.")
        policies = {s.bins for s in models.values()}
        if len(policies) > 1:
            raise ValueError(f"Subject {subject!r}, alignment {alignment!r}: electrode scores "
                             f"mix bin policies {sorted(policies)}; score the group with one "
                             "call of group_electrode_scores.")
        names = list(models)
        electrodes = first.electrodes
        val = np.stack([models[m].table["val_score"].to_numpy(float) for m in names])
        score = np.stack([models[m].table["score"].to_numpy(float) for m in names])
        nobs = np.stack([models[m].table["n_obs"].to_numpy(int) for m in names])
        boot = np.stack([models[m].boot_test for m in names])          # (M, B, E)
        eligible = nobs >= min_obs
        kinds = cat.loc[names, "kind"].to_numpy()
        trained = cat.loc[names, "trained"].to_numpy(bool)
        E = electrodes.size

        def emit(comparison: str, family: str, ia: np.ndarray, ib: np.ndarray) -> None:
            ok = (ia >= 0) & (ib >= 0)
            a, b = ia.clip(0), ib.clip(0)
            cols = np.arange(E)
            tested = ok & eligible[a, cols] & eligible[b, cols]
            p = np.full(E, np.nan)
            if tested.any():
                p[tested] = p_greater(boot[a[tested], :, cols[tested]].T,
                                      boot[b[tested], :, cols[tested]].T)
            name_arr = np.asarray(names, dtype=object)
            rows.append(pd.DataFrame({
                "comparison": comparison, "family": family, "alignment": alignment,
                "subject": subject, "electrode": electrodes,
                "model_a": np.where(ia >= 0, name_arr[a], None),
                "model_b": np.where(ib >= 0, name_arr[b], None),
                "score_a": np.where(ok, score[a, cols], np.nan),
                "score_b": np.where(ok, score[b, cols], np.nan),
                "val_a": np.where(ok, val[a, cols], np.nan),
                "val_b": np.where(ok, val[b, cols], np.nan),
                "n_obs_a": np.where(ia >= 0, nobs[a, cols], 0),
                "n_obs_b": np.where(ib >= 0, nobs[b, cols], 0), "p": p}))

        pos = {m: i for i, m in enumerate(names)}
        full = lambda i: np.full(E, i)  # noqa: E731
        # trained-beats-random
        for m in names:
            twin = cat.at[m, "twin"]
            if trained[pos[m]] and twin is not None and twin in pos:
                emit("trained-beats-random", f"trained-beats-random:{m}", full(pos[m]),
                     full(pos[twin]))
        nonlinear = trained & (kinds != "linear")
        multi = trained & (kinds == "multimodal")
        uni = trained & np.isin(kinds, ["vision", "language"])
        el = eligible
        if nonlinear.sum() >= 2:
            emit("rank1-beats-rank2", "rank1-beats-rank2", _best(val, el & nonlinear[:, None]),
                 _best(val, el & nonlinear[:, None], order=1))
        best_multi = _best(val, el & multi[:, None]) if multi.any() else full(-1)
        if multi.any() and uni.any():
            emit("multi-beats-unimodal", "multi-beats-unimodal", best_multi,
                 _best(val, el & uni[:, None]))
        if slip_combo in pos and simclr in pos:
            emit("slip-beats-simclr", "slip-beats-simclr", full(pos[slip_combo]),
                 full(pos[simclr]))
        for m in names:
            if trained[pos[m]] and cat.at[m, "kind"] == "linear" and multi.any():
                emit("multi-beats-linear", f"multi-beats-linear:{m}", best_multi, full(pos[m]))
    out = pd.concat(rows, ignore_index=True)
    out["delta"] = out["score_a"] - out["score_b"]
    out["q"] = np.nan
    out["significant"] = False
    for _, idx in out.groupby(["family", "alignment"]).groups.items():
        reject, qv = fdr_bh(out.loc[idx, "p"].to_numpy(), q=q)
        out.loc[idx, "q"] = qv
        out.loc[idx, "significant"] = reject
    cols = ["comparison", "family", "alignment", "subject", "electrode", "model_a", "model_b",
            "score_a", "score_b", "val_a", "val_b", "n_obs_a", "n_obs_b", "delta", "p", "q",
            "significant"]
    return out[cols]


# ---------------------------------------------------------------------------------- sites
_KEY = ["subject", "alignment", "electrode"]


def call_sites(comparisons: pd.DataFrame, *, require_random: bool = True) -> pd.DataFrame:
    """Call integration sites per (subject, alignment, electrode).

    site = multi-beats-unimodal AND multi-beats-linear (against every linear model) AND (with
    ``require_random``) trained-beats-random for the winning multimodal model; strict = site AND
    slip-beats-simclr.

    Returns
    -------
    DataFrame
        subject, alignment, electrode, winner, pass_unimodal, pass_linear, pass_random, pass_slip
        (NaN where that comparison was not run), site, strict.
    """
    c = comparisons
    for need in ("multi-beats-unimodal", "multi-beats-linear"):
        if not (c["comparison"] == need).any():
            raise ValueError(f"Site calling needs the {need!r} comparison; the comparisons hold "
                             f"{sorted(c['comparison'].unique())} (is a "
                             f"{'linear' if need.endswith('linear') else 'unimodal'} model "
                             "in the catalog and scored?).")
    uni = c[c["comparison"] == "multi-beats-unimodal"].set_index(_KEY)
    sites = pd.DataFrame({"winner": uni["model_a"],
                          "pass_unimodal": uni["significant"].astype(bool)})
    lin = c[c["comparison"] == "multi-beats-linear"]
    sites["pass_linear"] = lin.groupby(_KEY)["significant"].all().reindex(sites.index,
                                                                         fill_value=False)
    rnd = c[c["comparison"] == "trained-beats-random"].set_index(_KEY + ["model_a"])
    look = pd.MultiIndex.from_arrays([sites.index.get_level_values(k) for k in _KEY]
                                     + [sites["winner"].to_numpy()])
    has = look.isin(rnd.index)
    missing = sites["pass_unimodal"].to_numpy() & ~has
    if require_random and missing.any():
        winners = sorted(set(sites["winner"][missing]))
        raise ValueError(f"No trained-beats-random test for the winning multimodal model(s) "
                         f"{winners}: score their random twins, or pass require_random=False.")
    passed = np.zeros(len(sites), dtype=bool)
    passed[has] = rnd.loc[look[has], "significant"].to_numpy(bool)
    sites["pass_random"] = passed
    slip = c[c["comparison"] == "slip-beats-simclr"].set_index(_KEY)["significant"]
    sites["pass_slip"] = slip.reindex(sites.index).astype(object) if len(slip) else np.nan
    sites["site"] = sites["pass_unimodal"] & sites["pass_linear"] & (
        sites["pass_random"] if require_random else True)
    sites["strict"] = sites["site"] & (sites["pass_slip"] == True)  # noqa: E712
    return sites.reset_index()


def sites_both_alignments(sites: pd.DataFrame) -> pd.DataFrame:
    """Per (subject, electrode): site in each alignment, and ``both`` (site in every alignment
    present in ``sites``), matched electrode by electrode."""
    wide = sites.pivot_table(index=["subject", "electrode"], columns="alignment", values="site",
                             aggfunc="first")
    wide = wide.astype("boolean").fillna(False).astype(bool)
    wide.columns = [f"site_{a}" for a in wide.columns]
    wide["both"] = wide.all(axis=1)
    strict = sites.pivot_table(index=["subject", "electrode"], columns="alignment",
                               values="strict", aggfunc="first")
    wide["both_strict"] = strict.astype("boolean").fillna(False).astype(bool).all(axis=1)
    return wide.reset_index()


def site_summary(comparisons: pd.DataFrame, sites: pd.DataFrame) -> dict[str, Any]:
    """Counts to report: per alignment, significant electrodes per test family, the mean of those
    counts over the site-defining tests (multi-beats-unimodal and each multi-beats-linear family:
    the paper's "on average" number), sites, strict sites, electrodes; and sites in both
    alignments (per-electrode intersection)."""
    out: dict[str, Any] = {"per_alignment": {}}
    for alignment, c in comparisons.groupby("alignment"):
        counts = c.groupby("family")["significant"].sum().astype(int).to_dict()
        tested = c.groupby("family")["p"].apply(lambda s: int(s.notna().sum())).to_dict()
        defining = [f for f in counts if f == "multi-beats-unimodal"
                    or f.startswith("multi-beats-linear")]
        s = sites[sites["alignment"] == alignment]
        out["per_alignment"][alignment] = {
            "n_electrodes": int(len(s)), "per_test_counts": counts, "per_test_tested": tested,
            "mean_count_over_tests": float(np.mean([counts[f] for f in defining]))
            if defining else float("nan"),
            "n_sites": int(s["site"].sum()), "n_strict": int(s["strict"].sum()),
            "site_fraction": float(s["site"].mean()) if len(s) else float("nan")}
    both = sites_both_alignments(sites)
    out["n_sites_both_alignments"] = int(both["both"].sum())
    out["n_strict_both_alignments"] = int(both["both_strict"].sum())
    out["n_electrodes"] = int(len(both))
    return out


def region_summary(sites: pd.DataFrame, regions: pd.DataFrame) -> pd.DataFrame:
    """Sites per region and alignment.

    Parameters
    ----------
    sites : DataFrame from :func:`call_sites`
    regions : DataFrame with columns subject, electrode, region (e.g. DKT labels)

    Returns
    -------
    DataFrame: alignment, region, n_electrodes, n_sites, n_strict, site_fraction
    (sorted by alignment, then n_sites descending).
    """
    for col in ("subject", "electrode", "region"):
        if col not in regions.columns:
            raise ValueError(f"regions needs a {col!r} column; got {list(regions.columns)}.")
    merged = sites.merge(regions[["subject", "electrode", "region"]],
                         on=["subject", "electrode"], how="left", validate="many_to_one")
    missing = merged["region"].isna()
    if missing.any():
        ex = merged.loc[missing, ["subject", "electrode"]].head(3).to_dict("records")
        raise ValueError(f"{int(missing.sum())} electrodes have no region (e.g. {ex}).")
    g = merged.groupby(["alignment", "region"])
    out = pd.DataFrame({"n_electrodes": g.size(), "n_sites": g["site"].sum().astype(int),
                        "n_strict": g["strict"].sum().astype(int)})
    out["site_fraction"] = out["n_sites"] / out["n_electrodes"]
    return out.reset_index().sort_values(["alignment", "n_sites"], ascending=[True, False],
                                         ignore_index=True)


def site_detection_metrics(sites: pd.DataFrame, truth: pd.DataFrame, *,
                           positive: str | Sequence[str] = "nonlinear",
                           alignment: str | None = None) -> dict[str, Any]:
    """Precision and recall of site calls against a ground-truth class table (simulator).

    Parameters
    ----------
    sites : DataFrame from :func:`call_sites`
    truth : DataFrame with columns subject, electrode, class
    positive : str or sequence of str
        Truth class(es) that are real integration sites.
    alignment : str or None
        One alignment, ``'both'`` (called in every alignment) or None / ``'any'`` (called in at
        least one).

    Returns
    -------
    dict
        precision, recall (NaN when undefined), n_called, n_positive, n_true_positive, and
        ``called_fraction``: fraction of electrodes of each truth class called.
    """
    for col in ("subject", "electrode", "class"):
        if col not in truth.columns:
            raise ValueError(f"truth needs a {col!r} column; got {list(truth.columns)}.")
    pos = {positive} if isinstance(positive, str) else set(positive)
    if alignment in (None, "any", "both"):
        both = sites_both_alignments(sites)
        per = [c for c in both.columns if c.startswith("site_")]
        called = both.set_index(["subject", "electrode"])
        called = called["both"] if alignment == "both" else called[per].any(axis=1)
    else:
        s = sites[sites["alignment"] == alignment]
        if s.empty:
            raise ValueError(f"No sites for alignment {alignment!r}; known: "
                             f"{sorted(sites['alignment'].unique())}.")
        called = s.set_index(["subject", "electrode"])["site"]
    t = truth.astype({"subject": str, "electrode": str}).set_index(["subject", "electrode"])
    called.index = called.index.set_levels([lv.astype(str) for lv in called.index.levels])
    joined = t.join(called.rename("called"), how="inner")
    if len(joined) != len(called):
        raise ValueError(f"{len(called) - len(joined)} called electrodes are missing from the "
                         "truth table (match subject and electrode labels).")
    joined["called"] = joined["called"].astype(bool)
    is_pos = joined["class"].isin(pos)
    n_called = int(joined["called"].sum())
    tp = int((joined["called"] & is_pos).sum())
    n_pos = int(is_pos.sum())
    return {
        "precision": tp / n_called if n_called else float("nan"),
        "recall": tp / n_pos if n_pos else float("nan"),
        "n_called": n_called, "n_positive": n_pos, "n_true_positive": tp,
        "called_fraction": joined.groupby("class")["called"].mean().astype(float).to_dict(),
        "n_per_class": joined.groupby("class").size().astype(int).to_dict(),
        "alignment": alignment or "any"}
