"""fMRI masks, voxel time series, block patterns and the Haxby reader (bcikit.io.fmri)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bcikit.data.trialset import TrialSet, VoxelInfo
from bcikit.io.fmri import (
    block_patterns,
    load_fmri_runs,
    load_mask,
    load_subjects,
    masked_timeseries,
    read_beta_maps,
    read_haxby_slice,
)

SHAPE = (7, 6, 5)
AFFINE = np.array([[-2.0, 0, 0, 60], [0, 2.0, 0, -80], [0, 0, 2.2, -40], [0, 0, 0, 1]])


def _save(path, data, affine=AFFINE, tr=None):
    img = nib.Nifti1Image(data, affine)
    if tr is not None:
        img.header.set_zooms(img.header.get_zooms()[:3] + (tr,))
        img.header.set_xyzt_units("mm", "sec")
    nib.save(img, path)
    return path


def _bold(rng, n_vol=12):
    return (rng.normal(1000, 50, SHAPE + (n_vol,))).astype(np.float32)


def _mask(rng, p=0.4):
    m = rng.random(SHAPE) < p
    m[0, 0, 0] = True
    return m


def test_masked_timeseries_round_trip(tmp_path, rng):
    data, m = _bold(rng), _mask(rng)
    img = _save(tmp_path / "bold.nii.gz", data, tr=2.0)
    mask = _save(tmp_path / "mask.nii.gz", m.astype(np.uint8))
    X, info = masked_timeseries(img, mask)
    assert X.dtype == np.float32 and X.shape == (12, int(m.sum()))
    np.testing.assert_array_equal(X, data[m].T)  # C order = numpy boolean indexing
    assert isinstance(info, VoxelInfo) and info.order == "C" and info.tr == 2.0
    np.testing.assert_array_equal(info.ijk, np.argwhere(m))
    back = info.to_volume(X)  # (12, i, j, k)
    np.testing.assert_array_equal(back[:, m], X)
    np.testing.assert_array_equal(np.moveaxis(back, 0, -1)[m], data[m])
    assert not back[:, ~m].any()
    # the same vectors as nilearn's masker with standardize=False
    from nilearn.maskers import NiftiMasker

    ref = NiftiMasker(mask_img=str(mask), standardize=None).fit_transform(str(img))
    np.testing.assert_array_equal(X, ref)
    # standardize=True z-scores each voxel within the image
    Z, _ = masked_timeseries(img, mask, standardize=True)
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(Z.std(axis=0), 1, atol=1e-4)


def test_mask_values(tmp_path, rng):
    nsd = rng.integers(-1, 2, SHAPE).astype(np.int16)  # NSD ROI files: -1 / 0 / 1
    m, affine = load_mask(_save(tmp_path / "nsdgeneral.nii.gz", nsd))
    np.testing.assert_array_equal(m, nsd == 1)
    np.testing.assert_allclose(affine, AFFINE)
    f01 = load_mask(_save(tmp_path / "f.nii.gz", (nsd == 1).astype(np.float32)))[0]
    np.testing.assert_array_equal(f01, nsd == 1)
    with pytest.raises(ValueError, match="Threshold a probabilistic"):
        load_mask(_save(tmp_path / "prob.nii.gz", rng.random(SHAPE).astype(np.float32)))
    with pytest.raises(ValueError, match="keeps no voxel"):
        load_mask(_save(tmp_path / "empty.nii.gz", np.zeros(SHAPE, np.uint8)))
    with pytest.raises(ValueError, match="3-D mask"):
        load_mask(_save(tmp_path / "m4.nii.gz", np.ones(SHAPE + (2,), np.uint8)))


def test_mask_grid_mismatch(tmp_path, rng):
    img = _save(tmp_path / "bold.nii.gz", _bold(rng))
    shifted = AFFINE.copy()
    shifted[0, 3] += 2.0
    bad_aff = _save(tmp_path / "mask_shift.nii.gz", _mask(rng).astype(np.uint8), shifted)
    with pytest.raises(ValueError, match=r"mask_shift\.nii\.gz.*bold\.nii\.gz.*different affines"):
        load_mask(bad_aff, reference_img=img)
    with pytest.raises(ValueError, match="different affines"):
        masked_timeseries(img, bad_aff)
    small = _save(tmp_path / "mask_small.nii.gz", np.ones((7, 6, 4), np.uint8))
    with pytest.raises(ValueError, match=r"mask_small.*\(7, 6, 4\).*bold.*\(7, 6, 5\)"):
        masked_timeseries(img, small)


def test_bad_images(tmp_path, rng):
    data, m = _bold(rng), _mask(rng)
    mask = _save(tmp_path / "mask.nii.gz", m.astype(np.uint8))
    outside = data.copy()
    outside[~m] = np.nan  # NaNs outside the brain are harmless
    X, _ = masked_timeseries(_save(tmp_path / "ok.nii.gz", outside), mask)
    assert np.isfinite(X).all()
    inside = data.copy()
    ijk = np.argwhere(m)[:2]
    inside[ijk[0][0], ijk[0][1], ijk[0][2], :3] = np.nan
    inside[ijk[1][0], ijk[1][1], ijk[1][2], 5] = np.nan
    with pytest.raises(ValueError, match=r"nan_bold\.nii\.gz.* 4 NaN .*in 2 voxel"):
        masked_timeseries(_save(tmp_path / "nan_bold.nii.gz", inside), mask)
    with pytest.raises(ValueError, match=r"vol\.nii\.gz.* is 3-D"):
        masked_timeseries(_save(tmp_path / "vol.nii.gz", data[..., 0]), mask)
    with pytest.raises(FileNotFoundError, match="nope.nii.gz"):
        masked_timeseries(tmp_path / "nope.nii.gz", mask)


def test_load_fmri_runs(tmp_path, rng):
    m = _mask(rng)
    mask = _save(tmp_path / "mask.nii.gz", m.astype(np.uint8))
    runs, datas = [], []
    for r in range(2):
        d = _bold(rng, n_vol=10)
        datas.append(d)
        runs.append({"img": _save(tmp_path / f"run{r}.nii.gz", d, tr=2.5), "run": f"r{r}",
                     "session": "s1"})
    labels = [["rest"] * 5 + ["face"] * 5, ["house"] * 4 + ["rest"] * 6]
    ts = load_fmri_runs(runs, mask=mask, labels=labels, subject="7", dataset="toy")
    assert ts.X.shape == (20, int(m.sum())) and ts.is_voxel
    np.testing.assert_array_equal(ts.X[:10], datas[0][m].T)  # raw intensities: no z-scoring here
    np.testing.assert_array_equal(ts.X[10:], datas[1][m].T)
    assert ts.classes == ["face", "house", "rest"]
    assert list(ts.label_names) == labels[0] + labels[1]
    assert list(ts.meta["run"].unique()) == ["r0", "r1"]
    assert set(ts.meta["subject"]) == {"7"} and set(ts.meta["dataset"]) == {"toy"}
    np.testing.assert_allclose(ts.meta["onset"].to_numpy()[:10], np.arange(10) * 2.5)
    assert ts.info.tr == 2.5
    unlabelled = load_fmri_runs([r["img"] for r in runs], mask=mask)
    assert unlabelled.classes is None and (unlabelled.y == -1).all()
    assert list(unlabelled.meta["run"].unique()) == ["1", "2"]
    with pytest.raises(ValueError, match="10 volumes but 9 labels"):
        load_fmri_runs(runs[:1], mask=mask, labels=[["rest"] * 9])
    other = _save(tmp_path / "run_tr2.nii.gz", datas[0], tr=2.0)
    with pytest.raises(ValueError, match="different TRs"):
        load_fmri_runs([runs[0]["img"], other], mask=mask)
    assert load_fmri_runs([runs[0]["img"], other], mask=mask, tr=2.5).info.tr == 2.5


def test_block_patterns_hrf_delay():
    tr, n_vol, n_vox = 2.0, 40, 3
    X = np.repeat(np.arange(n_vol, dtype=np.float32)[:, None], n_vox, axis=1)  # volume k holds k
    events = pd.DataFrame({"onset": [10.0, 41.0], "duration": [8.0, 6.0],
                           "trial_type": ["face", "house"]})
    delayed = block_patterns(X, events, tr=tr, hrf_delay=4.0)
    # face: [14, 22) s -> volumes 7, 8, 9, 10; house: [45, 51) s -> volumes 23, 24, 25
    np.testing.assert_array_equal(delayed.X[:, 0], [8.5, 24.0])
    assert list(delayed.meta["n_volumes"]) == [4, 3] and delayed.classes == ["face", "house"]
    undelayed = block_patterns(X, events, tr=tr, hrf_delay=0.0)
    np.testing.assert_array_equal(undelayed.X[:, 0], [6.5, 22.0])  # [10, 18) -> 5..8; [41, 47)
    late = pd.DataFrame({"onset": [78.0], "duration": [6.0], "trial_type": ["face"]})
    with pytest.raises(ValueError, match="covers no volume"):
        block_patterns(X, late, tr=tr)

    # on a two-run TrialSet, events are matched to runs by the 'run' column
    meta = pd.DataFrame({"subject": "1", "session": "0", "run": ["a"] * 20 + ["b"] * 20,
                         "onset": np.tile(np.arange(20) * tr, 2)})
    ts = TrialSet(X, np.zeros(n_vol, int), meta)
    ev = pd.DataFrame({"onset": [10.0, 10.0], "duration": [8.0, 8.0], "trial_type": ["x", "y"],
                       "run": ["a", "b"]})
    pat = block_patterns(ts, ev, hrf_delay=4.0)
    np.testing.assert_array_equal(pat.X[:, 0], [8.5, 28.5])
    assert list(pat.meta["run"]) == ["a", "b"]
    with pytest.raises(ValueError, match="matches 2 runs"):
        block_patterns(ts, ev.drop(columns="run"))


def test_read_beta_maps(tmp_path, rng):
    m = _mask(rng)
    mask = _save(tmp_path / "mask.nii.gz", m.astype(np.uint8))
    betas = [rng.normal(size=SHAPE).astype(np.float32) for _ in range(3)]
    paths = [_save(tmp_path / f"beta_{i}.nii.gz", b) for i, b in enumerate(betas[:2])]
    paths.append(_save(tmp_path / "beta_4d.nii.gz", np.stack([betas[2], -betas[2]], -1)))
    ts = read_beta_maps(paths, mask, ["a", "b", "a", "c"])
    assert ts.X.shape == (4, int(m.sum()))
    np.testing.assert_array_equal(ts.X[1], betas[1][m])
    np.testing.assert_array_equal(ts.X[3], -betas[2][m])
    assert list(ts.meta["file"]) == ["beta_0.nii.gz", "beta_1.nii.gz"] + ["beta_4d.nii.gz"] * 2
    with pytest.raises(ValueError, match="4 patterns but 3 labels"):
        read_beta_maps(paths, mask, ["a", "b", "c"])


def test_load_subjects_different_masks(tmp_path, rng):
    specs = {}
    for s, (p, labs) in {"01": (0.3, ["a", "b"]), "02": (0.6, ["b", "c"])}.items():
        m = _mask(rng, p)
        run = _save(tmp_path / f"sub{s}.nii.gz", _bold(rng, n_vol=6), tr=2.0)
        specs[s] = {"runs": [run], "mask": _save(tmp_path / f"mask{s}.nii.gz", m.astype(np.uint8)),
                    "labels": [[labs[0]] * 3 + [labs[1]] * 3]}
    out = load_subjects(specs, dataset="toy")
    assert list(out) == ["01", "02"]
    assert out["01"].X.shape[1] != out["02"].X.shape[1]
    assert out["01"].classes == out["02"].classes == ["a", "b", "c"]
    assert list(out["01"].y) == [0, 0, 0, 1, 1, 1] and list(out["02"].y) == [1, 1, 1, 2, 2, 2]
    assert set(out["02"].meta["subject"]) == {"02"}


# --------------------------------------------------------------------------- real data
def _zscore_within_runs(X, runs):
    """Each run scaled by its own mean and std: within-run, label-free (no leakage)."""
    Z = np.empty_like(X)
    for r in np.unique(runs):
        s = runs == r
        sd = X[s].std(axis=0)
        Z[s] = (X[s] - X[s].mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    return Z


@pytest.mark.realdata
def test_realdata_haxby_slice_decoding(realdata):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import LeaveOneGroupOut, cross_val_score
    from threadpoolctl import threadpool_limits

    folder = realdata / "haxby2001_pymvpa"
    ts = read_haxby_slice(folder)
    assert ts.X.shape == (1452, 530) and ts.info.tr == 2.5
    assert ts.meta["run"].nunique() == 12
    counts = pd.Series(ts.label_names).value_counts()
    assert counts["rest"] == 588 and len(counts) == 9 and (counts.drop("rest") == 108).all()
    codes = np.loadtxt(folder / "slice_attributes.txt", dtype=int)[:, 0]
    np.testing.assert_array_equal(ts.y, codes)  # classes follow PyMVPA's numeric codes

    runs = ts.meta["run"].to_numpy()
    Z = _zscore_within_runs(np.asarray(ts.X, dtype=np.float64), runs)
    names = ts.label_names
    scores = {}
    with threadpool_limits(1):
        for task, keep in {"8-way": names != "rest",
                           "face/house": np.isin(names, ["face", "house"]),
                           "cat/chair": np.isin(names, ["cat", "chair"])}.items():
            acc = cross_val_score(LogisticRegression(C=0.05, max_iter=2000), Z[keep], names[keep],
                                  groups=runs[keep], cv=LeaveOneGroupOut())
            scores[task] = float(acc.mean())
    print(f"Haxby slice leave-one-run-out: 8-way {scores['8-way']:.3f} (chance 0.125, "
          f"PROVENANCE 0.63), face/house {scores['face/house']:.3f} (PROVENANCE 0.94), "
          f"cat/chair {scores['cat/chair']:.3f} (PROVENANCE 0.84)")
    assert scores["8-way"] >= 0.5
    assert scores["face/house"] >= 0.85
    assert scores["cat/chair"] >= 0.7


@pytest.mark.realdata
def test_realdata_haxby_openfmri_blocks(realdata):
    sub = realdata / "haxby2001_pymvpa" / "haxby2001" / "sub001"
    run_dirs = sorted((sub / "BOLD").glob("task001_run*"))
    assert len(run_dirs) == 12
    runs = [{"img": d / "bold_25mm.nii.gz", "run": d.name[-3:]} for d in run_dirs]
    mask = sub / "masks" / "25mm" / "brain.nii.gz"
    ts = load_fmri_runs(runs, mask=mask, subject="1", dataset="haxby2001")
    assert ts.X.shape[0] == 12 * 121 and ts.info.tr == 2.5
    vt, _ = load_mask(sub / "masks" / "25mm" / "vt.nii.gz", reference_img=runs[0]["img"])
    assert vt.sum() == 1  # 25 mm voxels: the VT mask is one voxel
    events = pd.concat([pd.read_csv(d / "bold_events.tsv", sep="\t").assign(run=d.name[-3:])
                        for d in run_dirs], ignore_index=True)
    blocks = block_patterns(ts, events, hrf_delay=4.0)
    assert len(blocks) == 96 and len(blocks.classes) == 8
    assert (pd.Series(blocks.label_names).value_counts() == 12).all()
    assert (blocks.meta["n_volumes"] == 9).all()  # 22.5 s blocks at TR 2.5 s
