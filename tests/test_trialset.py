"""TrialSet: validation, subsetting, lossless conversions (mne.Epochs, braindecode), disk."""

from __future__ import annotations

import mne
import numpy as np
import pandas as pd
import pytest

from bcikit.data import TrialSet, VoxelInfo


def make_ts(rng, n=12, c=4, t=50, sfreq=100.0):
    info = mne.create_info([f"C{i}" for i in range(c)], sfreq, "eeg")
    X = rng.standard_normal((n, c, t)).astype(np.float32) * 1e-5
    y = np.arange(n) % 3
    meta = pd.DataFrame({"subject": ["S1"] * (n // 2) + ["S2"] * (n - n // 2),
                         "session": "0", "run": "1", "dataset": "toy", "site": "lab",
                         "onset": np.arange(n) * 2.0})
    return TrialSet(X, y, meta, info, ["a", "b", "c"], tmin=-0.1)


def test_validation_messages(rng):
    with pytest.raises(ValueError, match="y must have shape"):
        TrialSet(np.zeros((3, 2, 5)), np.zeros(4))
    with pytest.raises(ValueError, match="2-D .* or 3-D"):
        TrialSet(np.zeros(3), np.zeros(3))
    X = np.zeros((3, 2, 5))
    X[1, 0, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite samples in 1 trial\(s\) \(first: \[1\]\)"):
        TrialSet(X, np.zeros(3))
    with pytest.raises(ValueError, match="X has 2 channels but info lists 3"):
        TrialSet(np.zeros((3, 2, 5)), np.zeros(3), info=mne.create_info(3, 100.0, "eeg"))
    ts = TrialSet(np.zeros((3, 2, 5)), np.zeros(3))
    assert list(ts.meta.columns[:5]) == ["subject", "session", "run", "dataset", "site"]


def test_subset_by_and_concatenate(rng):
    ts = make_ts(rng)
    parts = ts.by_subject()
    assert list(parts) == ["S1", "S2"] and len(parts["S1"]) == 6
    np.testing.assert_array_equal(parts["S2"].X, ts.X[6:])
    back = TrialSet.concatenate(list(parts.values()))
    np.testing.assert_array_equal(back.X, ts.X)
    np.testing.assert_array_equal(back.y, ts.y)
    mask = ts.y == 1
    assert np.all(ts[mask].label_names == "b")
    other = make_ts(rng, c=5)
    with pytest.raises(ValueError, match="trial shape"):
        TrialSet.concatenate([ts, other])


def test_epochs_roundtrip_is_lossless(rng):
    ts = make_ts(rng)
    epochs = ts.to_epochs()
    assert isinstance(epochs, mne.BaseEpochs)
    assert epochs.tmin == pytest.approx(-0.1)
    back = TrialSet.from_epochs(epochs, classes=ts.classes)
    np.testing.assert_array_equal(back.X, ts.X)
    np.testing.assert_array_equal(back.y, ts.y)
    assert back.ch_names == ts.ch_names and back.sfreq == ts.sfreq
    pd.testing.assert_frame_equal(back.meta[ts.meta.columns], ts.meta)
    assert back.tmin == pytest.approx(ts.tmin)


def test_braindecode_roundtrip(rng):
    ts = make_ts(rng)
    ds = ts.to_braindecode()
    assert len(ds) == len(ts)
    x0, y0 = ds[0][0], ds[0][1]
    np.testing.assert_allclose(x0, ts.X[0], rtol=1e-6)
    assert y0 == ts.y[0]
    back = TrialSet.from_braindecode(ds, classes=ts.classes)
    np.testing.assert_array_equal(back.X, ts.X)
    np.testing.assert_array_equal(back.y, ts.y)
    assert list(back.meta["subject"]) == list(ts.meta["subject"])


def test_save_load_memmap_and_no_overwrite(tmp_path, rng):
    ts = make_ts(rng)
    path = ts.save(tmp_path / "set")
    loaded = TrialSet.load(path)
    assert isinstance(loaded.X, np.memmap)
    np.testing.assert_array_equal(loaded.X, ts.X)
    np.testing.assert_array_equal(loaded.y, ts.y)
    assert loaded.classes == ts.classes and loaded.ch_names == ts.ch_names
    assert loaded.meta["session"].tolist() == ts.meta["session"].tolist()  # "0" stays a string
    with pytest.raises(FileExistsError, match="already exists"):
        ts.save(path)
    assert TrialSet.load(path).X.shape == ts.X.shape  # untouched


def test_voxel_info_roundtrip(tmp_path, rng):
    mask = rng.random((5, 4, 3)) > 0.5
    vi = VoxelInfo.from_mask(mask, np.eye(4), tr=2.0)
    vol = rng.standard_normal((7,) + mask.shape).astype(np.float32)
    vectors = vol[:, mask]
    np.testing.assert_array_equal(vi.to_volume(vectors)[:, mask], vectors)
    ts = TrialSet(vectors, np.arange(7) % 2, info=vi)
    assert ts.is_voxel and ts.n_chans == mask.sum()
    loaded = TrialSet.load(ts.save(tmp_path / "vox"))
    assert isinstance(loaded.info, VoxelInfo) and loaded.info.tr == 2.0
    np.testing.assert_array_equal(loaded.info.ijk, vi.ijk)
