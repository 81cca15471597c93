"""fMRI readers: NIfTI images and masks in, voxel-vector :class:`~bcikit.data.TrialSet` out.

Conventions
-----------
- A mask is a 3-D image on exactly the grid of the data (same shape, same affine). Boolean or
  0/1 masks keep the voxels that are 1; NSD-style ROI files holding -1/0/1 also keep == 1. A mask
  on another grid is an error: nothing is ever resampled here (resample with nilearn yourself,
  knowingly, if you must).
- Voxel vectors are in C order over (i, j, k): ``data[mask]`` with numpy boolean indexing, which
  is also what :class:`nilearn.maskers.NiftiMasker` gives with ``standardize=False``.
  :class:`~bcikit.data.trialset.VoxelInfo` keeps mask, affine and the ``ijk`` of every element
  (order tag ``"C"``), and ``VoxelInfo.to_volume`` puts vectors back exactly.
- Per-volume TrialSets carry raw intensities. Per-run z-scoring (or detrending) is a transform
  fitted within each run and belongs to the protocol/transform layer (``bcikit.data``), not to
  the readers, so that what a model sees is decided in one place.
- Volume ``k`` of a run is taken to be acquired at ``k * TR`` seconds from the run start; that is
  the ``onset`` column of per-volume metadata and the clock of :func:`block_patterns`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bcikit.data.trialset import TrialSet, VoxelInfo
from bcikit.utils import check_file, logger, set_log_level, validate_type

if TYPE_CHECKING:  # pragma: no cover
    import nibabel as nib

__all__ = [
    "load_mask",
    "masked_timeseries",
    "load_fmri_runs",
    "block_patterns",
    "read_beta_maps",
    "load_subjects",
    "read_haxby_slice",
]

_AFFINE_ATOL = 1e-4  # mm; float32 sform rounding, and 0 vs -0


# ---------------------------------------------------------------------------------------------
# helpers
def _load_img(img: Any, what: str) -> tuple["nib.spatialimages.SpatialImage", str]:
    """A nibabel image and a name for messages."""
    import nibabel as nib

    if isinstance(img, (str, os.PathLike)):
        path = check_file(img, what=what)
        try:
            return nib.load(path), repr(str(path))
        except Exception as err:  # nibabel raises several types for unreadable files
            raise ValueError(f"The {what} {str(path)!r} is not a readable image: {err}") from err
    if isinstance(img, nib.spatialimages.SpatialImage):
        name = img.get_filename()
        return img, repr(str(name)) if name else f"<in-memory {what}>"
    raise TypeError(f"The {what} must be a path or a nibabel image. Got {type(img).__name__}.")


def _check_grid(name_a: str, shape_a: tuple, affine_a: np.ndarray,
                name_b: str, shape_b: tuple, affine_b: np.ndarray) -> None:
    if tuple(shape_a[:3]) != tuple(shape_b[:3]):
        raise ValueError(f"The mask {name_a} has shape {tuple(shape_a[:3])} but the image {name_b} "
                         f"has {tuple(shape_b[:3])}; they must be on the same grid (nothing is "
                         f"resampled).")
    if not np.allclose(affine_a, affine_b, rtol=0, atol=_AFFINE_ATOL):
        raise ValueError(f"The mask {name_a} and the image {name_b} have the same shape "
                         f"{tuple(shape_a[:3])} but different affines:\n{np.round(affine_a, 4)}\n"
                         f"vs\n{np.round(affine_b, 4)}\n(nothing is resampled).")


def _mask_from_values(data: np.ndarray, name: str) -> np.ndarray:
    if data.dtype == bool:
        return data.copy()
    if np.issubdtype(data.dtype, np.floating) and np.isnan(data).any():
        raise ValueError(f"The mask {name} holds {int(np.isnan(data).sum())} NaN value(s); "
                         f"expected 0/1, boolean or -1/0/1.")
    values = np.unique(data)
    allowed = {0.0, 1.0, -1.0}
    if not set(values.tolist()) <= allowed:
        shown = values[:8].tolist()
        raise ValueError(f"The mask {name} holds values {shown}{'...' if values.size > 8 else ''}; "
                         f"expected a boolean, 0/1 or NSD-style -1/0/1 mask (voxels == 1 are "
                         f"kept). Threshold a probabilistic map or pick an atlas label first.")
    return data == 1


def load_mask(mask_img: Any, *, reference_img: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a mask image into a boolean array.

    Parameters
    ----------
    mask_img : path-like or nibabel image
        A 3-D image (or 4-D with one volume) holding booleans, 0/1, or NSD-style -1/0/1; the
        voxels equal to 1 are kept.
    reference_img : path-like, nibabel image or None
        When given, the mask must have its shape (first three axes) and affine.

    Returns
    -------
    mask : ndarray of bool, shape (i, j, k)
    affine : ndarray, shape (4, 4)

    Raises
    ------
    ValueError
        On other values, an empty mask, a non-3-D image, or a grid that differs from the
        reference (both files and shapes are named; nothing is resampled).

    Examples
    --------
    >>> mask, affine = load_mask("nsdgeneral.nii.gz", reference_img="betas_session01.nii.gz")
    """
    img, name = _load_img(mask_img, "mask")
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"The mask {name} has shape {data.shape}; a 3-D mask was expected.")
    mask = _mask_from_values(np.asarray(data), name)
    if not mask.any():
        raise ValueError(f"The mask {name} keeps no voxel (no value equals 1).")
    affine = np.asarray(img.affine, float)
    if reference_img is not None:
        ref, ref_name = _load_img(reference_img, "reference image")
        _check_grid(name, mask.shape, affine, ref_name, ref.shape, ref.affine)
    return mask, affine


def _resolve_mask(mask: Any, img, img_name: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Mask as (bool array, affine, name), checked against ``img``'s grid."""
    if isinstance(mask, VoxelInfo):
        m, aff, name = np.asarray(mask.mask, bool), np.asarray(mask.affine, float), "VoxelInfo mask"
        if mask.order != "C":
            raise ValueError(f"The VoxelInfo mask has vector order {mask.order!r}; only 'C' order "
                             f"(numpy boolean indexing) is produced from images.")
    elif isinstance(mask, tuple) and len(mask) == 2:
        m = np.asarray(mask[0])
        m = m if m.dtype == bool else _mask_from_values(m, "array mask")
        aff, name = np.asarray(mask[1], float), "array mask"
    elif isinstance(mask, np.ndarray):
        m = mask if mask.dtype == bool else _mask_from_values(mask, "array mask")
        aff, name = np.asarray(img.affine, float), "array mask"
    else:
        m, aff = load_mask(mask)
        _, name = _load_img(mask, "mask")
    if m.ndim != 3:
        raise ValueError(f"The {name} has shape {m.shape}; a 3-D mask was expected.")
    if not m.any():
        raise ValueError(f"The {name} keeps no voxel.")
    _check_grid(name, m.shape, aff, img_name, img.shape, img.affine)
    return m, aff, name


def _header_tr(img) -> float | None:
    zooms = img.header.get_zooms()
    if len(zooms) < 4 or not zooms[3] or zooms[3] <= 0:
        return None
    tr = float(zooms[3])
    try:
        t_unit = img.header.get_xyzt_units()[1]
    except (AttributeError, IndexError):
        t_unit = "sec"
    if t_unit == "msec":
        tr /= 1000.0
    elif t_unit == "usec":
        tr /= 1e6
    return tr


def _finite_or_raise(X: np.ndarray, name: str, where: str = "inside the mask") -> None:
    bad = ~np.isfinite(X)
    if bad.any():
        n_vox = int(bad.any(axis=0).sum()) if X.ndim == 2 else 0
        raise ValueError(f"The image {name} holds {int(bad.sum())} NaN or infinite value(s) "
                         f"{where} (in {n_vox} voxel(s)); fix the mask or the preprocessing.")


# ---------------------------------------------------------------------------------------------
# time series
def masked_timeseries(img: Any, mask: Any, *, standardize: bool = False,
                      verbose: bool | str | None = None) -> tuple[np.ndarray, VoxelInfo]:
    """Voxel time series of a 4-D image inside a mask.

    Parameters
    ----------
    img : path-like or nibabel image
        4-D image (x, y, z, time).
    mask : path-like, nibabel image, VoxelInfo, (ndarray, affine) or bool ndarray
        The mask; it must be on the image's grid (a bare array is checked for shape only).
    standardize : bool
        Z-score each voxel over the volumes of this image (population std; constant voxels
        become 0). Off by default: per-run scaling belongs to the transform layer.
    verbose : bool, str or None
        Logging level for this call.

    Returns
    -------
    X : ndarray of float32, shape (n_volumes, n_voxels)
        ``data[mask].T``: C order over (i, j, k), as :class:`nilearn.maskers.NiftiMasker` with
        ``standardize=False`` gives.
    info : VoxelInfo
        Mask, affine, voxel indices and the TR from the header (None when absent).

    Raises
    ------
    ValueError
        When the image is not 4-D, the mask's grid differs, or NaNs fall inside the mask (the
        file and the count are named).
    """
    set_log_level(verbose)
    validate_type(standardize, bool, "standardize", owner="masked_timeseries")
    image, name = _load_img(img, "image")
    if len(image.shape) == 3:
        raise ValueError(f"The image {name} is 3-D {tuple(image.shape)}; a 4-D time series "
                         f"(x, y, z, time) was expected (use read_beta_maps for single volumes).")
    if len(image.shape) != 4:
        raise ValueError(f"The image {name} has shape {tuple(image.shape)}; a 4-D time series "
                         f"was expected.")
    m, affine, _ = _resolve_mask(mask, image, name)
    data = image.get_fdata(dtype=np.float32)
    X = np.ascontiguousarray(data[m].T, dtype=np.float32)
    del data
    _finite_or_raise(X, name)
    if standardize:
        mu = X.mean(axis=0)
        sd = X.std(axis=0)
        X = (X - mu) / np.where(sd > 0, sd, 1.0)
        X = X.astype(np.float32, copy=False)
    info = VoxelInfo.from_mask(m, affine, tr=_header_tr(image))
    logger.info("%s: %d volumes x %d voxels", name, X.shape[0], X.shape[1])
    return X, info


_RUN_KEYS = {"img", "subject", "session", "run", "dataset", "site", "labels"}


def _label_codes(labels: Sequence[Any], classes: Sequence[str] | None) -> tuple[np.ndarray, list]:
    names = np.asarray([str(v) for v in labels], dtype=object)
    if classes is None:
        classes = sorted(pd.unique(names).tolist())
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise ValueError(f"Labels {unknown[:5]} are not among classes {list(classes)}.")
    return np.array([index[n] for n in names], dtype=np.int64), list(classes)


def load_fmri_runs(runs: Sequence[Any], *, mask: Any, tr: float | None = None,
                   labels: Sequence[Sequence[Any] | None] | None = None,
                   classes: Sequence[str] | None = None, subject: str | None = None,
                   session: str | None = None, dataset: str = "unknown", site: str = "unknown",
                   verbose: bool | str | None = None) -> TrialSet:
    """One TrialSet with every volume of several runs (one subject, one mask).

    Parameters
    ----------
    runs : sequence of path-like or dict
        4-D images. A dict holds ``img`` and optionally ``subject``, ``session``, ``run``,
        ``dataset``, ``site`` and ``labels`` (one label per volume); missing fields take the
        keyword defaults below, and ``run`` defaults to the position in the list (``"1"``...).
    mask : path-like, nibabel image, VoxelInfo or (ndarray, affine)
        Mask on the runs' grid (all runs must share it).
    tr : float or None
        Repetition time in seconds; None reads it from the headers (which must agree).
    labels : sequence or None
        One entry per run, each a sequence of per-volume labels (or None). Either all runs are
        labelled or none: unlabelled sets get ``y = -1`` and ``classes = None``.
    classes : sequence of str or None
        Class order; default: sorted label names.
    subject, session, dataset, site : str
        Metadata defaults.
    verbose : bool, str or None
        Logging level for this call.

    Returns
    -------
    TrialSet
        ``X`` (n_volumes, n_voxels) float32 of raw intensities, ``meta`` with subject, session,
        run, dataset, site, ``onset`` (``k * TR`` from the run start), ``volume`` (``k``) and
        ``file``; ``info`` a VoxelInfo. Per-run z-scoring is **not** done here (it is a
        transform of the protocol layer).

    Raises
    ------
    ValueError
        On grid mismatches, NaNs, label counts that differ from the volume count, or TRs that
        disagree.
    """
    set_log_level(verbose)
    if isinstance(runs, (str, os.PathLike, Mapping)) or not isinstance(runs, Sequence):
        raise TypeError("The 'runs' parameter of load_fmri_runs must be a list of images or "
                        f"dicts. Got {type(runs).__name__}.")
    if not runs:
        raise ValueError("load_fmri_runs needs at least one run.")
    if labels is not None and len(labels) != len(runs):
        raise ValueError(f"The 'labels' parameter of load_fmri_runs must have one entry per run "
                         f"({len(runs)}); got {len(labels)}.")
    if tr is not None:
        validate_type(tr, "numeric", "tr", owner="load_fmri_runs")
        if tr <= 0:
            raise ValueError(f"The 'tr' parameter of load_fmri_runs must be > 0. Got {tr!r}.")
    Xs, metas, all_labels = [], [], []
    info = None
    trs = []
    for i, run in enumerate(runs):
        spec = dict(run) if isinstance(run, Mapping) else {"img": run}
        extra = set(spec) - _RUN_KEYS
        if extra or "img" not in spec:
            raise ValueError(f"Run {i} of load_fmri_runs must be a path or a dict with 'img' and "
                             f"optionally {sorted(_RUN_KEYS - {'img'})}; got keys {sorted(spec)}.")
        X, vinfo = masked_timeseries(spec["img"], info if info is not None else mask)
        if info is None:
            info = vinfo
        name = str(spec["img"]) if isinstance(spec["img"], (str, os.PathLike)) else f"run {i}"
        run_tr = tr if tr is not None else vinfo.tr
        if run_tr is None:
            raise ValueError(f"The image {name!r} has no TR in its header; pass tr= (seconds).")
        trs.append(run_tr)
        lab = spec.get("labels")
        if labels is not None and labels[i] is not None:
            if lab is not None:
                raise ValueError(f"Run {i} has labels both in its dict and in labels=.")
            lab = labels[i]
        if lab is not None and len(lab) != X.shape[0]:
            raise ValueError(f"Run {i} ({name!r}) has {X.shape[0]} volumes but {len(lab)} labels.")
        all_labels.append(lab)
        k = np.arange(X.shape[0])
        metas.append(pd.DataFrame({
            "subject": str(spec.get("subject", subject if subject is not None else "0")),
            "session": str(spec.get("session", session if session is not None else "0")),
            "run": str(spec.get("run", i + 1)),
            "dataset": str(spec.get("dataset", dataset)),
            "site": str(spec.get("site", site)),
            "onset": k * float(run_tr),
            "volume": k,
            "file": Path(name).name,
        }))
        Xs.append(X)
    if tr is None and not np.allclose(trs, trs[0]):
        raise ValueError(f"The runs' headers give different TRs {sorted(set(trs))}; pass tr=.")
    info.tr = float(trs[0])
    labelled = [lab is not None for lab in all_labels]
    if any(labelled) and not all(labelled):
        raise ValueError(f"Runs {[i for i, ok in enumerate(labelled) if not ok]} have no labels "
                         f"while others do; label every run or none.")
    if all(labelled):
        y, classes = _label_codes([v for lab in all_labels for v in lab], classes)
    else:
        y, classes = np.full(sum(len(x) for x in Xs), -1, dtype=np.int64), None
    return TrialSet(np.concatenate(Xs), y, pd.concat(metas, ignore_index=True), info, classes)


# ---------------------------------------------------------------------------------------------
# patterns
def block_patterns(data: TrialSet | np.ndarray, events: pd.DataFrame | str | os.PathLike, *,
                   tr: float | None = None, hrf_delay: float = 4.0,
                   label_column: str = "trial_type") -> TrialSet:
    """One pattern per event (trial or block): the mean of the volumes it drove.

    Each event's pattern averages the volumes acquired in ``[onset + hrf_delay, onset +
    duration + hrf_delay)`` seconds, volume ``k`` being acquired at ``k * TR`` from the run start
    (or at the per-volume ``onset`` metadata of a TrialSet). The delay shifts the window by the
    haemodynamic lag (peak about 4-6 s after the stimulus).

    Parameters
    ----------
    data : TrialSet or ndarray, shape (n_volumes, n_voxels)
        Per-volume data of one run (array) or of one or more runs (TrialSet from
        :func:`load_fmri_runs`).
    events : DataFrame or path-like
        ``onset``, ``duration`` (seconds, > 0) and ``label_column``; with several runs also
        ``run`` (and ``subject``/``session`` when those vary), matched to the TrialSet's meta.
    tr : float or None
        Repetition time; needed for arrays, else taken from ``info.tr``.
    hrf_delay : float
        Seconds added to onset and offset.
    label_column : str
        Column holding the labels.

    Returns
    -------
    TrialSet
        ``X`` (n_events, n_voxels), ``y`` codes into sorted label names, ``meta`` with the run's
        subject/session/run/dataset/site, ``onset``, ``duration``, the label, and ``n_volumes``.

    Raises
    ------
    ValueError
        When an event's window holds no volume (the event is named), durations are not
        positive, or events cannot be matched to a run.
    """
    if isinstance(events, (str, os.PathLike)):
        path = check_file(events, what="events file")
        events = pd.read_csv(path, sep="\t" if path.suffix.lower() != ".csv" else ",",
                             na_values=["n/a"], keep_default_na=False)
    if not isinstance(events, pd.DataFrame):
        raise TypeError(f"The 'events' parameter of block_patterns must be a DataFrame or a path. "
                        f"Got {type(events).__name__}.")
    missing = [c for c in ("onset", "duration", label_column) if c not in events.columns]
    if missing:
        raise ValueError(f"The events table lacks column(s) {missing} (columns: "
                         f"{list(events.columns)}).")
    validate_type(hrf_delay, "numeric", "hrf_delay", owner="block_patterns")
    events = events.reset_index(drop=True)
    if (events["duration"].astype(float) <= 0).any():
        bad = events.index[events["duration"].astype(float) <= 0].tolist()
        raise ValueError(f"Events {bad[:5]} have duration <= 0; give each event the span of "
                         f"volumes it should average (e.g. duration = TR for one volume).")

    if isinstance(data, TrialSet):
        if data.X.ndim != 2:
            raise ValueError(f"block_patterns needs per-volume voxel data (2-D X); got "
                             f"{data.X.shape}.")
        X, meta, info = data.X, data.meta, data.info
        if tr is None and isinstance(info, VoxelInfo):
            tr = info.tr
    else:
        X = np.asarray(data, dtype=np.float32)
        if X.ndim != 2:
            raise ValueError(f"block_patterns needs an array (n_volumes, n_voxels); got {X.shape}.")
        meta, info = None, None
    if meta is None or "onset" not in meta:
        if tr is None:
            raise ValueError("block_patterns: pass tr= (seconds) to time the volumes.")
        validate_type(tr, "numeric", "tr", owner="block_patterns")

    if meta is None:
        meta = pd.DataFrame({"subject": "0", "session": "0", "run": "0", "dataset": "unknown",
                             "site": "unknown"}, index=range(X.shape[0]))
    keys = [c for c in ("subject", "session", "run") if c in events.columns]
    group_cols = ["subject", "session", "run"]
    groups = meta.groupby([meta[c].astype(str) for c in group_cols], sort=False).indices
    out_X, out_meta = [], []
    for i, ev in events.iterrows():
        cand = [g for g in groups if all(str(ev[k]) == g[group_cols.index(k)] for k in keys)]
        if len(cand) != 1:
            what = "no run" if not cand else f"{len(cand)} runs"
            hint = "" if keys else " (add a 'run' column to the events)"
            raise ValueError(f"Event {i} (onset {ev['onset']}) matches {what} of the data{hint}.")
        rows = np.asarray(groups[cand[0]])
        if "onset" in meta:
            times = meta["onset"].to_numpy(float)[rows]
        else:
            times = np.arange(rows.size) * float(tr)
        start = float(ev["onset"]) + float(hrf_delay)
        stop = start + float(ev["duration"])
        sel = rows[(times >= start - 1e-9) & (times < stop - 1e-9)]
        if sel.size == 0:
            raise ValueError(f"Event {i} ({ev[label_column]!r}, onset {ev['onset']} s, duration "
                             f"{ev['duration']} s) covers no volume in [{start:g}, {stop:g}) s of "
                             f"run {cand[0][2]!r} (volumes at {times[0]:g}..{times[-1]:g} s).")
        out_X.append(np.asarray(X[sel], dtype=np.float64).mean(axis=0))
        row = {c: meta[c].iloc[sel[0]] for c in ("subject", "session", "run", "dataset", "site")
               if c in meta}
        row.update(onset=float(ev["onset"]), duration=float(ev["duration"]),
                   **{label_column: str(ev[label_column])}, n_volumes=int(sel.size))
        out_meta.append(row)
    y, classes = _label_codes(events[label_column].tolist(), None)
    return TrialSet(np.asarray(out_X, dtype=np.float32), y, pd.DataFrame(out_meta), info, classes)


def read_beta_maps(paths: Sequence[Any], mask: Any, labels: Sequence[Any], *,
                   meta: pd.DataFrame | None = None, classes: Sequence[str] | None = None,
                   verbose: bool | str | None = None) -> TrialSet:
    """Patterns from given beta (or t) images, one per volume.

    Parameters
    ----------
    paths : sequence of path-like or nibabel images
        3-D images (one pattern each) or 4-D images (one pattern per volume), all on the mask's
        grid.
    mask : path-like, nibabel image, VoxelInfo or (ndarray, affine)
        The mask.
    labels : sequence
        One label per pattern, in file (then volume) order.
    meta : DataFrame or None
        Per-pattern metadata (subject, session, run...); a ``file`` column is added.
    classes : sequence of str or None
        Class order; default sorted label names.
    verbose : bool, str or None
        Logging level for this call.

    Returns
    -------
    TrialSet
        ``X`` (n_patterns, n_voxels) float32.

    Raises
    ------
    ValueError
        On grid mismatches, NaNs inside the mask (file and count named) or a label count that
        differs from the number of patterns.
    """
    set_log_level(verbose)
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    Xs, files, info = [], [], None
    for p in paths:
        image, name = _load_img(p, "beta image")
        m, affine, _ = _resolve_mask(info if info is not None else mask, image, name)
        data = image.get_fdata(dtype=np.float32)
        if data.ndim == 3:
            X = data[m][None, :]
        elif data.ndim == 4:
            X = data[m].T
        else:
            raise ValueError(f"The beta image {name} has shape {data.shape}; 3-D or 4-D expected.")
        _finite_or_raise(X, name)
        if info is None:
            info = VoxelInfo.from_mask(m, affine)
        Xs.append(np.ascontiguousarray(X, dtype=np.float32))
        files += [Path(name.strip("'")).name] * X.shape[0]
    if not Xs:
        raise ValueError("read_beta_maps needs at least one image.")
    X = np.concatenate(Xs)
    if len(labels) != X.shape[0]:
        raise ValueError(f"read_beta_maps got {X.shape[0]} patterns but {len(labels)} labels.")
    y, classes = _label_codes(labels, classes)
    meta = pd.DataFrame(index=range(X.shape[0])) if meta is None else pd.DataFrame(meta).copy()
    if len(meta) != X.shape[0]:
        raise ValueError(f"read_beta_maps got {X.shape[0]} patterns but meta has {len(meta)} rows.")
    meta = meta.reset_index(drop=True)
    meta["file"] = files
    return TrialSet(X, y, meta, info, classes)


def _recode(ts: TrialSet, classes: list[str]) -> TrialSet:
    if ts.classes is None:
        return ts
    names = np.asarray(ts.classes, dtype=object)[ts.y]
    y = np.array([classes.index(n) for n in names], dtype=np.int64)
    return TrialSet(ts.X, y, ts.meta, ts.info, classes, ts.tmin, check_finite=False)


def load_subjects(subjects: Mapping[str, Mapping[str, Any]], *, hrf_delay: float = 4.0,
                  dataset: str = "unknown", verbose: bool | str | None = None
                  ) -> dict[str, TrialSet]:
    """Several subjects, each with its own mask (voxel counts may differ).

    Parameters
    ----------
    subjects : mapping
        ``{subject: spec}`` where ``spec`` holds ``runs`` and ``mask`` as for
        :func:`load_fmri_runs`, optionally ``labels``, ``tr``, ``session``, ``site``, and
        ``events`` (one events table per run: then the result holds block patterns from
        :func:`block_patterns` instead of volumes).
    hrf_delay : float
        Delay for ``events``.
    dataset : str
        Dataset name written into the metadata.
    verbose : bool, str or None
        Logging level for this call.

    Returns
    -------
    dict
        ``{subject: TrialSet}``, kept separate because voxel counts differ; class codes are made
        common (the sorted union of all subjects' labels) so ``y`` means the same everywhere.
    """
    set_log_level(verbose)
    if not isinstance(subjects, Mapping) or not subjects:
        raise ValueError("load_subjects needs a non-empty mapping {subject: {'runs': ..., "
                         "'mask': ...}}.")
    allowed = {"runs", "mask", "labels", "tr", "session", "site", "events"}
    out: dict[str, TrialSet] = {}
    for subject, spec in subjects.items():
        extra = set(spec) - allowed
        if extra or "runs" not in spec or "mask" not in spec:
            raise ValueError(f"Subject {subject!r}: the spec needs 'runs' and 'mask' and may hold "
                             f"{sorted(allowed - {'runs', 'mask'})}; got keys {sorted(spec)}.")
        ts = load_fmri_runs(spec["runs"], mask=spec["mask"], tr=spec.get("tr"),
                            labels=spec.get("labels"), subject=str(subject),
                            session=spec.get("session"), dataset=dataset,
                            site=spec.get("site", "unknown"))
        events = spec.get("events")
        if events is not None:
            if len(events) != len(spec["runs"]):
                raise ValueError(f"Subject {subject!r}: 'events' needs one table per run "
                                 f"({len(spec['runs'])}); got {len(events)}.")
            run_names = list(pd.unique(ts.meta["run"]))
            tables = []
            for run_name, ev in zip(run_names, events):
                ev = ev if isinstance(ev, pd.DataFrame) else pd.read_csv(
                    ev, sep="\t", na_values=["n/a"], keep_default_na=False)
                tables.append(ev.assign(run=run_name))
            ts = block_patterns(ts, pd.concat(tables, ignore_index=True), hrf_delay=hrf_delay)
        out[str(subject)] = ts
    names = sorted({c for ts in out.values() if ts.classes for c in ts.classes})
    if names:
        out = {s: _recode(ts, names) for s, ts in out.items()}
    return out


# ---------------------------------------------------------------------------------------------
# public dataset formats
def read_haxby_slice(folder: str | os.PathLike, *, mask: Any = None,
                     verbose: bool | str | None = None) -> TrialSet:
    """Haxby et al. (2001) subject 1, PyMVPA's one-slice example, one sample per volume.

    Reads ``slice_bold.nii.gz`` (40 x 20 x 1 voxels, 1452 volumes, TR 2.5 s) and
    ``slice_attributes_literal.txt`` (``label run`` per volume). When ``slice_attributes.txt``
    (numeric codes) is present, ``classes`` follow its codes (0 rest, 1 face, 2 house, 3 shoe,
    4 cat, 5 scissors, 6 scrambledpix, 7 bottle, 8 chair), so ``y`` equals those codes.

    Parameters
    ----------
    folder : path-like
        Folder holding the files.
    mask : mask-like or None
        None keeps the voxels that are non-zero in at least one volume (the slice's brain part,
        530 of 800 voxels); a label-free choice.
    verbose : bool, str or None
        Logging level for this call.

    Returns
    -------
    TrialSet
        ``X`` (1452, n_voxels) raw intensities (z-score per run in the transform layer),
        ``meta`` subject ``"1"``, session ``"0"``, run ``"0"``..``"11"`` (PyMVPA chunks),
        dataset ``"haxby2001"``, ``onset`` (s from run start), ``volume``.
    """
    import nibabel as nib

    set_log_level(verbose)
    folder = check_file(folder, what="Haxby folder")
    bold = check_file(folder / "slice_bold.nii.gz", what="Haxby BOLD image")
    attrs = check_file(folder / "slice_attributes_literal.txt", what="Haxby attributes file")
    img = nib.load(bold)
    if mask is None:
        data = np.asanyarray(img.dataobj)
        mask = (data != 0).any(axis=-1), img.affine
    X, info = masked_timeseries(img, mask)
    table = pd.read_csv(attrs, sep=r"\s+", header=None, names=["label", "run"], dtype=str)
    if len(table) != X.shape[0]:
        raise ValueError(f"{str(attrs)!r} has {len(table)} rows but {str(bold)!r} has "
                         f"{X.shape[0]} volumes.")
    classes = None
    codes_file = folder / "slice_attributes.txt"
    if codes_file.is_file():
        codes = pd.read_csv(codes_file, sep=r"\s+", header=None, names=["code", "run"])
        if len(codes) != len(table):
            raise ValueError(f"{str(codes_file)!r} has {len(codes)} rows but {str(attrs)!r} "
                             f"has {len(table)}.")
        pairs = set(zip(codes["code"].astype(int), table["label"]))
        by_code = dict(sorted(pairs))
        if len(by_code) != len(pairs) or len(set(by_code.values())) != len(by_code):
            raise ValueError(f"{str(codes_file)!r} and {str(attrs)!r} disagree on label codes.")
        classes = [by_code[c] for c in sorted(by_code)]
    y, classes = _label_codes(table["label"].tolist(), classes)
    run = table["run"].astype(str).to_numpy()
    volume = pd.Series(run).groupby(run).cumcount().to_numpy()
    if info.tr is None:
        raise ValueError(f"{str(bold)!r} has no TR in its header (2.5 s expected).")
    tr = info.tr
    meta = pd.DataFrame({"subject": "1", "session": "0", "run": run, "dataset": "haxby2001",
                         "site": "unknown", "onset": volume * tr, "volume": volume})
    return TrialSet(X, y, meta, info, classes)
