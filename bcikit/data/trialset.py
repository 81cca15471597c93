"""The TrialSet container: one array of trials, their labels, per-trial metadata and sensor info.

``X`` is float32 ``(n_trials, n_channels, n_times)`` for EEG/sEEG/ECoG or ``(n_trials, n_voxels)``
(also ``(n_trials, n_repeats, n_voxels)``) for fMRI. ``y`` holds one label per trial (integer codes
into ``classes`` for classification, floats for regression). ``meta`` is a pandas DataFrame with at
least the columns of :data:`REQUIRED_META`. ``info`` is an :class:`mne.Info` for signals and a
:class:`VoxelInfo` for voxel data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REQUIRED_META = ("subject", "session", "run", "dataset", "site")


@dataclass
class VoxelInfo:
    """Where each voxel of a voxel vector lives.

    Attributes
    ----------
    mask : ndarray of bool, shape (i, j, k)
        The mask the vectors were taken with.
    affine : ndarray, shape (4, 4)
        Voxel-to-world affine of the mask image.
    ijk : ndarray of int, shape (n_voxels, 3)
        Voxel indices of each vector element, in vector order.
    order : str
        How the vector is ordered: ``"C"`` (numpy boolean indexing of the volume, as nilearn's
        ``NiftiMasker`` gives) or a named external order such as ``"mindeye"``. Vectors of
        different orders are never mixed.
    roi : dict
        Optional named ROI index arrays into the vector.
    tr : float or None
        Repetition time in seconds, when known.
    """

    mask: np.ndarray
    affine: np.ndarray
    ijk: np.ndarray
    order: str = "C"
    roi: dict = field(default_factory=dict)
    tr: float | None = None

    @property
    def n_voxels(self) -> int:
        return int(self.ijk.shape[0])

    @classmethod
    def from_mask(cls, mask: np.ndarray, affine: np.ndarray, *, order: str = "C",
                  tr: float | None = None) -> "VoxelInfo":
        mask = np.asarray(mask, bool)
        return cls(mask=mask, affine=np.asarray(affine, float), ijk=np.argwhere(mask),
                   order=order, tr=tr)

    def to_volume(self, vector: np.ndarray) -> np.ndarray:
        """Put a ``(..., n_voxels)`` vector back into ``(..., i, j, k)`` volumes (zeros outside)."""
        vector = np.asarray(vector)
        if vector.shape[-1] != self.n_voxels:
            raise ValueError(f"Expected vectors of {self.n_voxels} voxels, got {vector.shape[-1]}.")
        out = np.zeros(vector.shape[:-1] + self.mask.shape, dtype=vector.dtype)
        out[(...,) + tuple(self.ijk.T)] = vector
        return out

    def to_dict(self) -> dict:
        return {"mask": self.mask, "affine": self.affine, "ijk": self.ijk, "order": self.order,
                "roi": self.roi, "tr": self.tr}


class TrialSet:
    """Trials of one recording set, ready for splitting and model fitting.

    Parameters
    ----------
    X : array-like, shape (n_trials, n_channels, n_times) or (n_trials, n_voxels)
        Trial data; stored as float32 (a memory map is kept as is).
    y : array-like, shape (n_trials,)
        Labels: integer codes into ``classes`` or continuous targets.
    meta : DataFrame or None
        Per-trial metadata. Missing required columns (:data:`REQUIRED_META`) are filled with
        ``"0"``/``"unknown"``; ``"onset"`` (seconds from recording start) is used by the
        chronological protocols when present, trial order otherwise.
    info : mne.Info, VoxelInfo or None
        Channel info for signals, voxel info for fMRI.
    classes : sequence of str or None
        Names of the label codes (``classes[k]`` is the name of ``y == k``).
    tmin : float
        Time of the first sample relative to the event, in seconds (signals only).

    Raises
    ------
    ValueError
        On inconsistent lengths, non-finite samples, or a channel count that disagrees with info.
    """

    def __init__(self, X, y, meta: pd.DataFrame | None = None, info: Any = None,
                 classes: Sequence[str] | None = None, tmin: float = 0.0, *,
                 check_finite: bool = True):
        if not isinstance(X, np.memmap):
            X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y)
        if X.ndim not in (2, 3):
            raise ValueError(f"TrialSet X must be 2-D (trials, voxels) or 3-D (trials, channels, "
                             f"times); got shape {X.shape}.")
        if y.shape != (X.shape[0],):
            raise ValueError(f"TrialSet y must have shape ({X.shape[0]},) to match X; "
                             f"got {y.shape}.")
        if meta is None:
            meta = pd.DataFrame(index=range(X.shape[0]))
        else:
            meta = pd.DataFrame(meta).reset_index(drop=True)
        if len(meta) != X.shape[0]:
            raise ValueError(f"TrialSet meta has {len(meta)} rows but X has {X.shape[0]} trials.")
        for col in REQUIRED_META:
            if col not in meta:
                meta[col] = "unknown" if col in ("dataset", "site") else "0"
        if check_finite and X.size and not np.isfinite(X).all():
            bad = np.unique(np.nonzero(~np.isfinite(X))[0])
            raise ValueError(f"TrialSet X holds NaN or infinite samples in {bad.size} trial(s) "
                             f"(first: {bad[:5].tolist()}); clean or drop them before building it.")
        if X.ndim == 3 and info is not None and hasattr(info, "ch_names"):
            if len(info["ch_names"]) != X.shape[1]:
                raise ValueError(f"TrialSet X has {X.shape[1]} channels but info lists "
                                 f"{len(info['ch_names'])}.")
        self.X = X
        self.y = y
        self.meta = meta
        self.info = info
        self.classes = list(classes) if classes is not None else None
        self.tmin = float(tmin)

    # ------------------------------------------------------------------ basic properties
    def __len__(self) -> int:
        return int(self.X.shape[0])

    def __repr__(self) -> str:
        kind = "voxels" if self.is_voxel else "signals"
        shape = "x".join(str(s) for s in self.X.shape)
        subj = self.meta["subject"].nunique()
        cls = f", classes={self.classes}" if self.classes else ""
        sf = f", sfreq={self.sfreq:g}" if not self.is_voxel and self.info is not None else ""
        return f"<TrialSet {kind} {shape}, {subj} subject(s){sf}{cls}>"

    @property
    def is_voxel(self) -> bool:
        return isinstance(self.info, VoxelInfo) or self.X.ndim == 2

    @property
    def n_chans(self) -> int:
        return int(self.X.shape[1])

    @property
    def n_times(self) -> int:
        if self.X.ndim != 3:
            raise ValueError("n_times is defined for signal TrialSets only (X is 2-D).")
        return int(self.X.shape[2])

    @property
    def sfreq(self) -> float:
        if self.info is None or isinstance(self.info, VoxelInfo):
            raise ValueError("This TrialSet has no mne.Info, so no sampling rate.")
        return float(self.info["sfreq"])

    @property
    def ch_names(self) -> list[str]:
        if self.info is None or isinstance(self.info, VoxelInfo):
            return [f"ch{i}" for i in range(self.X.shape[1])]
        return list(self.info["ch_names"])

    @property
    def subjects(self) -> list[str]:
        return list(pd.unique(self.meta["subject"].astype(str)))

    @property
    def label_names(self) -> np.ndarray:
        """Label of each trial as its class name (``y`` itself when there are no classes)."""
        if self.classes is None:
            return self.y
        return np.asarray(self.classes, dtype=object)[self.y.astype(int)]

    # ------------------------------------------------------------------ subsetting
    def subset(self, index) -> "TrialSet":
        """A new TrialSet with the trials at ``index`` (int array or boolean mask)."""
        index = np.asarray(index)
        if index.dtype == bool:
            if index.shape != (len(self),):
                raise ValueError(f"Boolean index must have shape ({len(self)},); got {index.shape}.")
            index = np.flatnonzero(index)
        return TrialSet(self.X[index], self.y[index], self.meta.iloc[index].reset_index(drop=True),
                        self.info, self.classes, self.tmin, check_finite=False)

    __getitem__ = subset

    def copy(self) -> "TrialSet":
        info = self.info.copy() if hasattr(self.info, "copy") else self.info
        return TrialSet(np.array(self.X), self.y.copy(), self.meta.copy(), info, self.classes,
                        self.tmin, check_finite=False)

    def with_data(self, X) -> "TrialSet":
        """The same trials and labels with new data (e.g. after a transform); info kept when the
        channel count is unchanged, dropped otherwise."""
        X = np.asarray(X, dtype=np.float32)
        info = self.info if X.shape[1:2] == self.X.shape[1:2] else None
        return TrialSet(X, self.y, self.meta.copy(), info, self.classes, self.tmin,
                        check_finite=False)

    def by(self, column: str) -> dict[str, "TrialSet"]:
        """Split into a dict ``{value: TrialSet}`` on a metadata column (order of appearance)."""
        values = self.meta[column].astype(str).to_numpy()
        return {v: self.subset(values == v) for v in pd.unique(values)}

    def by_subject(self) -> dict[str, "TrialSet"]:
        return self.by("subject")

    @staticmethod
    def concatenate(sets: Sequence["TrialSet"]) -> "TrialSet":
        """Stack TrialSets with the same channels (or voxels), sampling rate and classes."""
        sets = list(sets)
        if not sets:
            raise ValueError("concatenate needs at least one TrialSet.")
        first = sets[0]
        for i, s in enumerate(sets[1:], 1):
            if s.X.shape[1:] != first.X.shape[1:]:
                raise ValueError(f"TrialSet {i} has trial shape {s.X.shape[1:]} but TrialSet 0 has "
                                 f"{first.X.shape[1:]}; keep them separate (a mapping by subject).")
            if not first.is_voxel and s.info is not None and first.info is not None:
                if s.ch_names != first.ch_names:
                    raise ValueError(f"TrialSet {i} has channels {s.ch_names[:5]}... but TrialSet 0 "
                                     f"has {first.ch_names[:5]}...; pick common channels first.")
                if s.sfreq != first.sfreq:
                    raise ValueError(f"TrialSet {i} is sampled at {s.sfreq} Hz but TrialSet 0 at "
                                     f"{first.sfreq} Hz; resample first.")
            if s.classes != first.classes:
                raise ValueError(f"TrialSet {i} has classes {s.classes} but TrialSet 0 has "
                                 f"{first.classes}.")
        return TrialSet(np.concatenate([s.X for s in sets]), np.concatenate([s.y for s in sets]),
                        pd.concat([s.meta for s in sets], ignore_index=True), first.info,
                        first.classes, first.tmin, check_finite=False)

    # ------------------------------------------------------------------ MNE / braindecode
    @classmethod
    def from_epochs(cls, epochs, *, classes: Sequence[str] | None = None,
                    meta: pd.DataFrame | None = None, scale: float = 1.0) -> "TrialSet":
        """Build from :class:`mne.Epochs` (data in volts unless ``scale`` says otherwise).

        Labels come from ``epochs.events[:, 2]`` mapped through ``epochs.event_id``; ``classes``
        fixes the order of class names (default: event_id sorted by code).
        """
        inv = {v: k for k, v in epochs.event_id.items()}
        if classes is None:
            classes = [inv[c] for c in sorted(inv)]
        names = [inv[c] for c in epochs.events[:, 2]]
        missing = sorted(set(names) - set(classes))
        if missing:
            raise ValueError(f"Epochs hold events {missing} that are not among classes {classes}.")
        y = np.array([list(classes).index(n) for n in names], dtype=np.int64)
        if meta is None:
            meta = epochs.metadata.copy() if epochs.metadata is not None else pd.DataFrame(
                index=range(len(epochs)))
        meta = pd.DataFrame(meta).reset_index(drop=True)
        if "onset" not in meta:
            meta["onset"] = epochs.events[:, 0] / epochs.info["sfreq"]
        X = epochs.get_data(copy=True).astype(np.float32) * scale
        return cls(X, y, meta, epochs.info.copy(), classes, float(epochs.tmin))

    def to_epochs(self):
        """Convert to :class:`mne.EpochsArray`; metadata and class names travel with it."""
        import mne

        if self.is_voxel or self.info is None:
            raise ValueError("Only signal TrialSets with an mne.Info convert to mne.Epochs.")
        if self.classes is not None:
            codes = self.y.astype(int) + 1
            event_id = {name: k + 1 for k, name in enumerate(self.classes)}
        else:
            codes = np.ones(len(self), int)
            event_id = {"trial": 1}
        sfreq = self.sfreq
        if "onset" in self.meta:
            samples = np.round(self.meta["onset"].to_numpy(float) * sfreq).astype(int)
        else:
            samples = np.arange(len(self)) * self.n_times
        # mne needs unique event samples; trials from different runs may collide.
        if len(np.unique(samples)) != len(samples):
            samples = np.arange(len(self)) * self.n_times
        events = np.column_stack([samples, np.zeros(len(self), int), codes])
        used = {k: v for k, v in event_id.items() if v in set(codes)}
        return mne.EpochsArray(np.asarray(self.X, dtype=np.float64), self.info.copy(), events=events,
                               tmin=self.tmin, event_id=used or None, metadata=self.meta.copy(),
                               verbose="error")

    def to_braindecode(self):
        """A braindecode ``WindowsDataset`` per subject, concatenated (``BaseConcatDataset``)."""
        from braindecode.datasets import BaseConcatDataset
        from braindecode.datasets.base import WindowsDataset

        datasets = []
        for subject, part in self.by_subject().items():
            epochs = part.to_epochs()
            md = part.meta.copy()
            md["target"] = part.y
            md["i_window_in_trial"] = 0
            md["i_start_in_trial"] = 0
            md["i_stop_in_trial"] = part.n_times
            epochs.metadata = md
            description = {"subject": subject}
            datasets.append(WindowsDataset(epochs, description=description, targets_from="metadata"))
        return BaseConcatDataset(datasets)

    @classmethod
    def from_braindecode(cls, dataset, *, classes: Sequence[str] | None = None) -> "TrialSet":
        """Build from a braindecode windows dataset (``BaseConcatDataset`` of windows)."""
        Xs, ys, metas = [], [], []
        info = None
        for ds in dataset.datasets:
            windows = ds.windows
            data = windows.get_data(copy=True) if hasattr(windows, "get_data") else np.asarray(windows)
            md = ds.windows.metadata.copy() if hasattr(ds.windows, "metadata") else pd.DataFrame()
            y = md["target"].to_numpy() if "target" in md else np.array([ds[i][1] for i in range(len(ds))])
            desc = ds.description if ds.description is not None else {}
            for key, value in dict(desc).items():
                if key not in md:
                    md[key] = value
            Xs.append(data.astype(np.float32))
            ys.append(np.asarray(y))
            metas.append(md.reset_index(drop=True))
            info = info or getattr(windows, "info", None)
        meta = pd.concat(metas, ignore_index=True)
        for col in ("target", "i_window_in_trial", "i_start_in_trial", "i_stop_in_trial"):
            meta.pop(col) if col in meta else None
        return cls(np.concatenate(Xs), np.concatenate(ys), meta, info, classes)

    # ------------------------------------------------------------------ disk
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write to a folder: ``X.npy`` (memory-mappable), ``y.npy``, ``meta.csv``, ``info`` and
        ``trialset.json``. Written to a temporary folder and renamed, so a crash leaves no half
        set; an existing folder is kept unless ``overwrite=True``."""
        import shutil
        import tempfile

        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{str(path)!r} already exists; pass overwrite=True to replace it.")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=path.parent))
        try:
            np.save(tmp / "X.npy", np.asarray(self.X, dtype=np.float32))
            np.save(tmp / "y.npy", self.y, allow_pickle=False)
            self.meta.to_csv(tmp / "meta.csv", index=False)
            header = {"format": "bcikit.TrialSet", "version": 1, "classes": self.classes,
                      "tmin": self.tmin, "meta_dtypes": {c: str(t) for c, t in self.meta.dtypes.items()}}
            if isinstance(self.info, VoxelInfo):
                header["info"] = "voxel"
                vi = self.info
                np.savez(tmp / "voxelinfo.npz", mask=vi.mask, affine=vi.affine, ijk=vi.ijk,
                         **{f"roi__{k}": v for k, v in vi.roi.items()})
                header["voxel"] = {"order": vi.order, "tr": vi.tr}
            elif self.info is not None:
                import mne

                header["info"] = "mne"
                mne.io.write_info(tmp / "info-info.fif", self.info)
            else:
                header["info"] = None
            (tmp / "trialset.json").write_text(json.dumps(header, indent=1))
            if path.exists():
                shutil.rmtree(path)
            tmp.rename(path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path, *, mmap: bool = True) -> "TrialSet":
        """Read a folder written by :meth:`save`; ``X`` is memory-mapped by default."""
        path = Path(path)
        header_file = path / "trialset.json"
        if not header_file.exists():
            raise FileNotFoundError(f"{str(path)!r} is not a saved TrialSet (no trialset.json).")
        header = json.loads(header_file.read_text())
        X = np.load(path / "X.npy", mmap_mode="r" if mmap else None)
        y = np.load(path / "y.npy", allow_pickle=False)
        dtypes = header.get("meta_dtypes", {})
        text = ("object", "str", "string")
        meta = pd.read_csv(path / "meta.csv", dtype={c: (str if t in text else t)
                                                    for c, t in dtypes.items()
                                                    if t in text + ("int64", "float64", "bool")},
                           keep_default_na=False)
        info: Any = None
        if header.get("info") == "mne":
            import mne

            info = mne.io.read_info(path / "info-info.fif", verbose="error")
        elif header.get("info") == "voxel":
            z = np.load(path / "voxelinfo.npz")
            roi = {k[5:]: z[k] for k in z.files if k.startswith("roi__")}
            info = VoxelInfo(z["mask"], z["affine"], z["ijk"], header["voxel"]["order"], roi,
                             header["voxel"]["tr"])
        return cls(X, y, meta, info, header.get("classes"), header.get("tmin", 0.0),
                   check_finite=False)


TrialSets = Mapping[str, TrialSet]
"""Subjects with different channel or voxel counts: a mapping ``{subject: TrialSet}``."""
