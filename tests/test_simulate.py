"""The motor-imagery simulator: structure it promises, determinism, and files MNE reads back."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

mne = pytest.importorskip("mne")

from bcikit.simulate import (  # noqa: E402
    BNCI2014_001_CHANNELS,
    MI_CLASSES,
    make_motor_imagery,
    resolve_channels,
    simulate_mi_raws,
    simulate_to_disk,
    write_recordings,
)

SMALL = dict(n_subjects=2, n_sessions=2, n_runs=2, n_classes=4, n_trials_per_class=3,
             sfreq=128.0, trial_duration=2.0)


def _bandpass(X, sfreq, lo=8.0, hi=30.0):
    from scipy.signal import butter, sosfiltfilt

    sos = butter(4, [lo, hi], btype="band", fs=sfreq, output="sos")
    return sosfiltfilt(sos, np.asarray(X, dtype=np.float64), axis=-1)


def _descriptions(raw) -> list[str]:
    return [str(d) for d in raw.annotations.description]


# ------------------------------------------------------------------------------- container
def test_shapes_meta_classes_units():
    ts = make_motor_imagery(**SMALL, seed=3)
    n = 2 * 2 * 4 * 3
    assert ts.X.shape == (n, len(BNCI2014_001_CHANNELS), 256)
    assert ts.X.dtype == np.float32
    assert ts.classes == list(MI_CLASSES)
    assert ts.ch_names == list(BNCI2014_001_CHANNELS)
    assert ts.sfreq == 128.0 and ts.tmin == 0.0
    # every subject and session holds n_trials_per_class trials of each class
    counts = ts.meta.assign(y=ts.y).groupby(["subject", "session", "y"]).size()
    assert (counts == 3).all() and len(counts) == 2 * 2 * 4
    assert sorted(ts.meta.subject.unique()) == ["S01", "S02"]
    assert sorted(ts.meta.session.unique()) == ["0", "1"]
    assert sorted(ts.meta.run.unique()) == ["1", "2"]
    assert set(ts.meta.dataset) == {"sim-mi"} and set(ts.meta.site) == {"sim"}
    assert (ts.meta.onset > 0).all()
    # montage set: every channel has a head position near the scalp (metres)
    pos = np.array([ch["loc"][:3] for ch in ts.info["chs"]])
    assert np.all(np.linalg.norm(pos, axis=1) > 0.05) and np.all(np.linalg.norm(pos, axis=1) < 0.15)
    assert ts.info.get_montage() is not None
    # volts, EEG-sized: RMS of some uV, peaks tens of uV
    assert 3e-6 < ts.X.std() < 40e-6
    assert 20e-6 < np.abs(ts.X).max() < 2e-3


def test_epochs_are_cut_from_the_raws():
    knobs = dict(SMALL, n_subjects=1, artifact_rate=0.3)
    ts = make_motor_imagery(**knobs, seed=5)
    raws = simulate_mi_raws(**knobs, seed=5)
    assert [ids for _, ids in raws] == [{"subject": "S01", "session": s, "run": r}
                                        for s in ("0", "1") for r in ("1", "2")]
    i = 0
    for raw, ids in raws:
        assert raw.ch_names == ts.ch_names and raw.info["sfreq"] == ts.sfreq
        assert raw.get_montage() is not None and raw.info["line_freq"] == 50.0
        data = raw.get_data()
        for onset, dur, desc in zip(raw.annotations.onset, raw.annotations.duration,
                                    _descriptions(raw)):
            row = ts.meta.iloc[i]
            assert (row.subject, row.session, row.run) == tuple(ids.values())
            assert desc == ts.classes[ts.y[i]]
            assert dur == 2.0 and onset == pytest.approx(row.onset)
            start = int(round(onset * raw.info["sfreq"]))
            np.testing.assert_array_equal(ts.X[i], data[:, start:start + 256].astype(np.float32))
            i += 1
    assert i == len(ts)


def test_determinism_and_seeds():
    a = make_motor_imagery(**SMALL, seed=11)
    b = make_motor_imagery(**SMALL, seed=11)
    c = make_motor_imagery(**SMALL, seed=12)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.meta.equals(b.meta)
    assert not np.allclose(a.X, c.X)
    # subject k does not depend on how many subjects are simulated
    one = make_motor_imagery(**dict(SMALL, n_subjects=1), seed=11)
    np.testing.assert_array_equal(one.X, a.X[(a.meta.subject == "S01").to_numpy()])


# ------------------------------------------------------------------------------- channels
def test_channel_choices():
    assert resolve_channels(None) == list(BNCI2014_001_CHANNELS)
    full = resolve_channels("standard_1020")
    assert len(full) == 86 and len(set(full)) == 86
    assert {"Fp1", "C3", "Cz", "C4", "O2", "TP9"} <= set(full) and "T3" not in full
    for n in (14, 32, 64, 128):
        chans = resolve_channels(n)
        assert len(chans) == n and len(set(chans)) == n
        assert {"C3", "Cz", "C4"} <= set(chans)
    assert {"Fp1", "Fp2", "O1", "O2", "T7", "T8"} <= set(resolve_channels(21))
    assert resolve_channels(["cz", "C3", "c4"]) == ["Cz", "C3", "C4"]
    ts = make_motor_imagery(n_subjects=1, n_sessions=1, n_runs=1, n_trials_per_class=2,
                            sfreq=100.0, trial_duration=1.0, ch_names=64, seed=0)
    assert ts.X.shape == (4, 64, 100) and ts.ch_names == resolve_channels(64)


@pytest.mark.parametrize("kwargs, match, err", [
    (dict(difficulty=1.5), "'difficulty'", ValueError),
    (dict(difficulty="hard"), "'difficulty'", TypeError),
    (dict(n_classes=5), "'n_classes'", ValueError),
    (dict(n_subjects=0), "'n_subjects'", ValueError),
    (dict(n_trials_per_class=2.5), "'n_trials_per_class'", TypeError),
    (dict(artifact_rate=-0.1), "'artifact_rate'", ValueError),
    (dict(session_shift=2.0), "'session_shift'", ValueError),
    (dict(sfreq=40.0), "'sfreq'", ValueError),
    (dict(ch_names=8), "'ch_names'", ValueError),
    (dict(ch_names="standard_9999"), "'ch_names'", ValueError),
    (dict(ch_names=["C3", "Cz", "XYZ"]), "XYZ", ValueError),
    (dict(ch_names=["C3", "C3", "Cz"]), "more than once", ValueError),
    (dict(seed=-1), "'seed'", ValueError),
    (dict(n_runs=10, n_trials_per_class=2), "'n_runs'", ValueError),
])
def test_bad_arguments_name_the_parameter(kwargs, match, err):
    with pytest.raises(err, match=match):
        make_motor_imagery(**kwargs)


# ------------------------------------------------------------------------------- known structure
def test_lateralised_erd_over_c3_c4(global_random_seed):
    """Left-hand imagery desynchronises C4 more than C3 (relative to the pre-cue baseline);
    right-hand imagery the opposite."""
    raws = simulate_mi_raws(n_subjects=2, n_sessions=1, n_runs=1, n_trials_per_class=30,
                            difficulty=0.2, artifact_rate=0.0, seed=global_random_seed)
    li_all = {"left_hand": [], "right_hand": []}
    for raw, ids in raws:
        sf = raw.info["sfreq"]
        f = _bandpass(raw.get_data(), sf)
        c3, c4 = raw.ch_names.index("C3"), raw.ch_names.index("C4")
        li = {"left_hand": [], "right_hand": []}
        for onset, desc in zip(raw.annotations.onset, _descriptions(raw)):
            s = int(round(onset * sf))
            task, base = slice(s + int(0.5 * sf), s + int(4 * sf)), slice(s - int(1.5 * sf), s)
            erd = np.log(f[:, task].var(axis=1) / f[:, base].var(axis=1))  # per channel
            li[desc].append(erd[c4] - erd[c3])
        left, right = np.mean(li["left_hand"]), np.mean(li["right_hand"])
        assert left < right - 0.3, (ids, left, right)
        li_all["left_hand"] += li["left_hand"]
        li_all["right_hand"] += li["right_hand"]
    assert np.mean(li_all["left_hand"]) < -0.15 < 0.15 < np.mean(li_all["right_hand"])
    # the same in the epochs alone (no baseline): log-power difference C4 - C3 per class
    ts = make_motor_imagery(n_subjects=2, n_sessions=1, n_runs=1, n_trials_per_class=30,
                            difficulty=0.2, artifact_rate=0.0, seed=global_random_seed)
    f = _bandpass(ts.X, ts.sfreq)
    lp = np.log(f[:, [ts.ch_names.index("C4"), ts.ch_names.index("C3")], 125:].var(axis=-1))
    d = lp[:, 0] - lp[:, 1]
    for subject in ("S01", "S02"):
        s = (ts.meta.subject == subject).to_numpy()
        assert d[s & (ts.y == 0)].mean() < d[s & (ts.y == 1)].mean() - 0.3


def _csp_lda_accuracy(ts) -> np.ndarray:
    from mne.decoding import CSP
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline

    out = []
    for part in ts.by_subject().values():
        X = _bandpass(part.X, part.sfreq)[:, :, int(0.5 * part.sfreq)::2]
        clf = make_pipeline(CSP(n_components=4, log=True, rank="full"),
                            LinearDiscriminantAnalysis())
        cv = StratifiedKFold(5, shuffle=True, random_state=0)
        out.append(cross_val_score(clf, X, part.y, cv=cv).mean())
    return np.array(out)


def test_csp_lda_accuracy_follows_difficulty(global_random_seed):
    """Within-subject CSP+LDA, left vs right hand, chance 0.5. Measured over seeds 0-7 (2
    subjects x 80 trials): difficulty 0.2 -> subject means 0.87-0.98; 0.95 -> 0.43-0.64."""
    from threadpoolctl import threadpool_limits

    knobs = dict(n_subjects=2, n_sessions=1, n_runs=2, n_trials_per_class=40,
                 seed=global_random_seed)
    with threadpool_limits(1):  # small matrices: BLAS threads only contend on a shared machine
        easy = _csp_lda_accuracy(make_motor_imagery(difficulty=0.2, **knobs))
        hard = _csp_lda_accuracy(make_motor_imagery(difficulty=0.95, **knobs))
    assert easy.mean() > 0.8 and easy.min() > 0.7, easy
    assert hard.mean() < 0.7, hard
    assert easy.mean() - hard.mean() > 0.2


def test_background_is_one_over_f_with_a_mu_peak():
    from scipy.signal import welch

    raws = simulate_mi_raws(n_subjects=2, n_sessions=1, n_runs=1, n_trials_per_class=10,
                            artifact_rate=0.0, seed=4)
    for raw, _ in raws:
        sf = raw.info["sfreq"]
        freqs, psd = welch(raw.get_data(), sf, nperseg=int(2 * sf))
        band = (freqs >= 2) & (freqs <= 40)
        for ch in range(len(raw.ch_names)):
            slope = np.polyfit(np.log(freqs[band]), np.log(psd[ch, band]), 1)[0]
            assert -2.5 < slope < -0.7, (raw.ch_names[ch], slope)
        c3 = raw.ch_names.index("C3")
        fit = np.polyfit(np.log(freqs[band]), np.log(psd[c3, band]), 1)
        mu = (freqs >= 7.5) & (freqs <= 13.5)
        excess = np.log(psd[c3, mu]) - np.polyval(fit, np.log(freqs[mu]))
        assert excess.max() > np.log(2.0)  # a mu peak at least twice the 1/f line


# ------------------------------------------------------------------------------- artifacts
def test_artifacts_where_flagged_and_at_the_rate():
    knobs = dict(n_subjects=2, n_sessions=1, n_runs=1, n_trials_per_class=25, ch_names=32,
                 seed=7)
    clean = make_motor_imagery(artifact_rate=0.0, **knobs)
    dirty = make_motor_imagery(artifact_rate=0.5, **knobs)
    assert (clean.meta.artifact == "none").all()
    np.testing.assert_array_equal(clean.y, dirty.y)
    flagged = (dirty.meta.artifact != "none").to_numpy()
    # artifacts add to the same EEG: unflagged epochs are untouched, flagged ones are not
    np.testing.assert_array_equal(dirty.X[~flagged], clean.X[~flagged])
    diff = (dirty.X[flagged] - clean.X[flagged]).astype(np.float64)
    assert np.mean(np.abs(diff).max(axis=(1, 2)) > 5e-6) > 0.8
    # rate: per-second rate 0.5 / trial_duration -> P(epoch hit) ~ 1 - exp(-0.5 * 4.5 / 4) = 0.43
    assert 0.25 < flagged.mean() < 0.6, flagged.mean()
    kinds = dirty.meta.artifact[flagged].to_numpy()
    names = np.array(dirty.ch_names)
    frontal = {n for n in names if n.startswith(("Fp", "AF", "F"))}
    for k in np.flatnonzero(flagged):
        d = (dirty.X[k] - clean.X[k]).astype(np.float64)
        kind = dirty.meta.artifact.iloc[k]
        if np.abs(d).max() < 20e-6:
            continue  # grazes the epoch edge
        if kind == "blink":  # largest on frontal channels, positive
            assert names[np.abs(d).max(axis=1).argmax()] in frontal
            assert d.max() > -d.min()
        elif kind == "pop":  # single electrodes (two pops may share an epoch)
            assert 1 <= np.count_nonzero(np.abs(d).max(axis=1)) <= 2
        elif kind == "muscle":  # broadband above 20 Hz
            spec = np.abs(np.fft.rfft(d, axis=-1)) ** 2
            f = np.fft.rfftfreq(d.shape[-1], 1 / dirty.sfreq)
            assert spec[:, f >= 15].sum() > 0.9 * spec.sum()
    assert {"blink", "muscle", "pop"} <= {p for k in kinds for p in k.split("+")}
    # annotated counts agree with the per-second rate (Poisson, 4 sd)
    raws = simulate_mi_raws(artifact_rate=0.5, annotate_artifacts=True, **knobs)
    n_bad = sum(d.startswith("BAD_") for raw, _ in raws for d in _descriptions(raw))
    expected = sum(0.5 / 4.0 * raw.n_times / raw.info["sfreq"] for raw, _ in raws)
    assert abs(n_bad - expected) < 4 * np.sqrt(expected) + 1, (n_bad, expected)
    raws0 = simulate_mi_raws(artifact_rate=0.0, annotate_artifacts=True, **knobs)
    assert not any(d.startswith("BAD_") for raw, _ in raws0 for d in _descriptions(raw))


# ------------------------------------------------------------------------------- files
@pytest.fixture(scope="module")
def small_raws():
    return simulate_mi_raws(n_subjects=1, n_sessions=1, n_runs=2, n_classes=3,
                            n_trials_per_class=2, trial_duration=2.0, artifact_rate=0.0, seed=2)


@pytest.mark.parametrize("fmt, ext", [("edf", ".edf"), ("brainvision", ".vhdr"), ("fif", ".fif")])
def test_write_recordings_round_trip(small_raws, tmp_path, fmt, ext):
    paths = write_recordings(small_raws, tmp_path, fmt)
    assert [p.name for p in paths] == [f"sub-S01_ses-0_run-{r}_eeg{ext}" for r in (1, 2)]
    for (raw, _), path in zip(small_raws, paths):
        back = mne.io.read_raw(path, preload=True, verbose="error")
        assert back.ch_names == raw.ch_names
        assert back.info["sfreq"] == raw.info["sfreq"] and back.n_times == raw.n_times
        desc = [d.removeprefix("Comment/") for d in _descriptions(back)]  # BrainVision markers
        assert desc == _descriptions(raw)
        np.testing.assert_allclose(back.annotations.onset, raw.annotations.onset,
                                   atol=1 / raw.info["sfreq"])
        np.testing.assert_allclose(back.annotations.duration, raw.annotations.duration, atol=1e-3)
        data, ref = back.get_data(), raw.get_data()
        np.testing.assert_allclose(data, ref, atol=1e-4 * np.ptp(ref))  # EDF is 16-bit
    # never overwrite unless asked
    with pytest.raises(FileExistsError, match=paths[0].name):
        write_recordings(small_raws, tmp_path, fmt)
    swapped = [(small_raws[1][0], small_raws[0][1])]
    write_recordings(swapped, tmp_path, fmt, overwrite=True)
    back = mne.io.read_raw(paths[0], verbose="error")
    assert back.n_times == small_raws[1][0].n_times


@pytest.mark.parametrize("fmt", ["edf", "brainvision"])
def test_write_recordings_bids(small_raws, tmp_path, fmt):
    import pandas as pd
    from mne_bids import get_bids_path_from_fname, read_raw_bids

    paths = write_recordings(small_raws, tmp_path, fmt, bids=True)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        f"sub-S01/ses-0/eeg/sub-S01_ses-0_task-motorimagery_run-{r}_eeg"
        f"{'.edf' if fmt == 'edf' else '.vhdr'}" for r in (1, 2)]
    for (raw, _), path in zip(small_raws, paths):
        events = pd.read_csv(str(path).rsplit("_eeg", 1)[0] + "_events.tsv", sep="\t")
        assert list(events.trial_type) == _descriptions(raw)
        back = read_raw_bids(get_bids_path_from_fname(path), verbose="error")
        assert back.ch_names == raw.ch_names and back.info["sfreq"] == raw.info["sfreq"]
        assert _descriptions(back) == _descriptions(raw)
    with pytest.raises(FileExistsError, match=paths[0].name):
        write_recordings(small_raws, tmp_path, fmt, bids=True)


def test_write_arguments(small_raws, tmp_path):
    with pytest.raises(ValueError, match="'fmt'"):
        write_recordings(small_raws, tmp_path, "gdf")
    with pytest.raises(ValueError, match="bids=True"):
        write_recordings(small_raws, tmp_path, "fif", bids=True)
    with pytest.raises(TypeError, match="pairs"):
        write_recordings([small_raws[0][0]], tmp_path, "edf")
    with pytest.raises(ValueError, match="'run'"):
        write_recordings([(small_raws[0][0], {"subject": "S01", "session": "0"})], tmp_path)
    dup = [small_raws[0], small_raws[0]]
    with pytest.raises(ValueError, match="differ"):
        write_recordings(dup, tmp_path, "fif")
    assert not any(tmp_path.iterdir())


def test_simulate_to_disk(tmp_path):
    knobs = dict(n_subjects=1, n_sessions=2, n_runs=1, n_trials_per_class=2,
                 trial_duration=1.0, seed=1)
    paths = simulate_to_disk(tmp_path, fmt="fif", **knobs)
    assert [p.name for p in paths] == ["sub-S01_ses-0_run-1_eeg.fif", "sub-S01_ses-1_run-1_eeg.fif"]
    raws = simulate_mi_raws(**knobs)
    for (raw, _), path in zip(raws, paths):
        back = mne.io.read_raw_fif(path, verbose="error")
        np.testing.assert_allclose(back.get_data(), raw.get_data(), rtol=1e-6, atol=1e-12)
    with pytest.raises(FileExistsError, match="sub-S01_ses-0_run-1_eeg.fif"):
        simulate_to_disk(tmp_path, fmt="fif", **knobs)
    with pytest.raises(ValueError, match="'knob'"):
        simulate_to_disk(tmp_path, fmt="fif", n_subject=1)


def test_import_is_light():
    code = ("import sys, bcikit.simulate as s; assert 'mne' not in sys.modules; "
            "s.make_motor_imagery; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
