"""One contract for every format the simulator writes: ``read_raw`` gives back the channel names,
sampling rate, length, samples (within the format's quantisation) and annotations that went in;
a BIDS tree read by ``load_dataset`` gives back the trials and their labels."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

mne = pytest.importorskip("mne")
simulate = pytest.importorskip("bcikit.simulate")
write_mod = pytest.importorskip("bcikit.simulate.write")

from bcikit.io import epochs_from_raw, load_dataset, read_raw  # noqa: E402

FORMATS = sorted(write_mod.FORMATS)  # every format the simulator writes
BIDS_FORMATS = sorted(write_mod._BIDS_FORMAT)
SFREQ = 100.0


@pytest.fixture(scope="module")
def raws():
    return simulate.simulate_mi_raws(n_subjects=2, n_sessions=1, n_runs=2, n_classes=3,
                                     n_trials_per_class=4, sfreq=SFREQ, trial_duration=2.0,
                                     ch_names=14, seed=3)


def tolerance(fmt: str, data: np.ndarray) -> float:
    """Largest error the format's storage allows for ``data`` (volts)."""
    if fmt == "edf":  # 16-bit integers over the data range of the channel type
        return 0.51 * (data.max() - data.min()) / (2 ** 16 - 1)
    return 2e-7 * np.abs(data).max()  # BrainVision and FIF store float32


def assert_same_recording(back, raw, fmt: str, *, annotations: bool = True) -> None:
    assert back.ch_names == raw.ch_names
    assert back.info["sfreq"] == raw.info["sfreq"]
    assert back.n_times == raw.n_times
    assert back.get_channel_types() == raw.get_channel_types()
    data = raw.get_data()
    assert np.abs(back.get_data() - data).max() <= tolerance(fmt, data)
    if not annotations:
        return
    a, b = raw.annotations, back.annotations
    assert list(b.description) == list(a.description)
    np.testing.assert_allclose(b.onset, a.onset, atol=1 / SFREQ)
    np.testing.assert_allclose(b.duration, a.duration, atol=1 / SFREQ)


@pytest.mark.parametrize("fmt", FORMATS)
def test_read_raw_contract(raws, tmp_path, fmt):
    paths = simulate.write_recordings(raws, tmp_path / fmt, fmt)
    assert len(paths) == len(raws)
    for path, (raw, _) in zip(paths, raws):
        back = read_raw(path, verbose="error")
        assert_same_recording(back, raw, fmt)
        lazy = read_raw(path, preload=False, verbose="error")
        assert lazy.n_times == raw.n_times and not lazy.preload


@pytest.mark.parametrize("fmt", BIDS_FORMATS)
def test_bids_contract(raws, tmp_path, fmt):
    root = tmp_path / f"bids_{fmt}"
    paths = simulate.write_recordings(raws, root, fmt, bids=True)
    # the BIDS files themselves read like plain files (EEG sidecars do not make them iEEG);
    # their labels live in events.tsv (BrainVision markers become 'Stimulus/S  1'...)
    for path, (raw, _) in zip(paths, raws):
        assert_same_recording(read_raw(path, verbose="error"), raw, fmt, annotations=False)
    trials = load_dataset(root, cache=False)
    classes = sorted({str(d) for raw, _ in raws for d in raw.annotations.description})
    assert trials.classes == classes
    # per subject, the labels in recording order are the annotations that went in
    for subject in sorted({ids["subject"] for _, ids in raws}):
        expected = [str(d) for raw, ids in raws if ids["subject"] == subject
                    for d in raw.annotations.description]
        mine = trials.meta["subject"].to_numpy() == subject
        assert mine.any()
        assert list(trials.label_names[mine]) == expected
    assert Counter(trials.label_names.tolist()) == Counter(
        str(d) for raw, _ in raws for d in raw.annotations.description)
    # and the samples: the window defaults to the events' duration (the trial length)
    raw, _ = raws[0]
    duration = float(raw.annotations.duration[0])
    direct = epochs_from_raw(raw, event_map={c: c for c in classes}, tmin=0.0, tmax=duration,
                             classes=classes)
    first = trials[np.arange(len(direct))]
    np.testing.assert_array_equal(first.y, direct.y)
    assert first.X.shape == direct.X.shape
    f32 = 2 * np.finfo(np.float32).eps * np.abs(direct.X).max()
    assert np.abs(first.X - direct.X).max() <= tolerance(fmt, raw.get_data()) + f32
