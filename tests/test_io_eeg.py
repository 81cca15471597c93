"""bcikit.io.eeg: format round trips, damaged-file checks, epoching, BIDS, describe."""

from __future__ import annotations

import datetime
import json

import numpy as np
import pytest

mne = pytest.importorskip("mne")

from bcikit.io import describe, epochs_from_raw, load_dataset, read_bids, read_raw  # noqa: E402
from bcikit.utils import BcikitWarning  # noqa: E402

SFREQ = 128.0
NAMES = ["Fz", "C3", "Cz", "C4"]
ONSETS = np.array([2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0])
DESCS = ["left", "right", "left", "rest", "right", "left", "right"]


def make_raw(seed: int = 0, seconds: float = 20.0, stim: bool = False) -> mne.io.RawArray:
    """Random EEG in volts with annotations (and optionally a stim channel coding them)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SFREQ)
    data = rng.normal(0.0, 20e-6, (len(NAMES), n))
    names, types = list(NAMES), ["eeg"] * len(NAMES)
    if stim:
        codes = np.zeros((1, n))
        for onset, desc in zip(ONSETS, DESCS):
            codes[0, int(round(onset * SFREQ))] = {"left": 1, "right": 2, "rest": 3}[desc]
        data = np.vstack([data, codes])
        names.append("STI")
        types.append("stim")
    raw = mne.io.RawArray(data, mne.create_info(names, SFREQ, types), verbose="error")
    raw.set_meas_date(datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc))
    if not stim:
        raw.set_annotations(mne.Annotations(ONSETS, np.full(len(ONSETS), 1.5), DESCS,
                                            orig_time=raw.info["meas_date"]))
    return raw


def write(raw, path) -> None:
    if path.suffix == ".fif":
        raw.save(path, verbose="error")
    else:
        mne.export.export_raw(path, raw, verbose="error")


# step of the format's quantisation: MNE exports EDF/BDF over the data range of each channel type
QUANT = {".edf": 2 ** 16 - 1, ".bdf": 2 ** 24 - 1}


@pytest.mark.parametrize("ext", [".edf", ".bdf", ".vhdr", ".fif", ".set"])
def test_round_trip(tmp_path, ext, global_random_seed):
    raw = make_raw(global_random_seed)
    path = tmp_path / f"rec_raw{ext}"
    write(raw, path)
    back = read_raw(path, verbose="error")
    assert back.ch_names == NAMES
    assert back.info["sfreq"] == SFREQ
    assert back.n_times == raw.n_times
    assert back.get_channel_types() == ["eeg"] * len(NAMES)
    data, got = raw.get_data(), back.get_data()
    if ext in QUANT:
        step = (data.max() - data.min()) / QUANT[ext]
        tol = 0.51 * step  # rounding to the nearest digital value
    else:
        tol = 2e-7 * np.abs(data).max()  # float32 storage
    assert np.abs(got - data).max() <= tol
    assert np.abs(got - data).max() > 0 or ext == ".fif"
    # annotations: same descriptions, onsets and durations
    assert list(back.annotations.description) == DESCS
    np.testing.assert_allclose(back.annotations.onset, ONSETS, atol=1 / SFREQ)
    np.testing.assert_allclose(back.annotations.duration, 1.5, atol=1 / SFREQ)
    # and the same trials come out
    a = epochs_from_raw(raw, event_map={"left": "L", "right": "R"}, tmin=0.0, tmax=1.0)
    b = epochs_from_raw(back, event_map={"left": "L", "right": "R"}, tmin=0.0, tmax=1.0)
    np.testing.assert_array_equal(a.y, b.y)
    f32 = 2 * np.finfo(np.float32).eps * np.abs(a.X).max()  # TrialSet stores float32
    assert np.abs(a.X - b.X).max() <= tol + f32


def _edf(tmp_path, seed=0):
    path = tmp_path / "ok.edf"
    write(make_raw(seed), path)
    return path


def test_crlf_damaged_edf_is_named(tmp_path):
    good = _edf(tmp_path)
    content = good.read_bytes()
    n_lf = content.count(b"\n")
    assert n_lf > 0  # random samples hold LF bytes
    bad = tmp_path / "damaged.edf"
    bad.write_bytes(content.replace(b"\n", b"\r\n"))
    with pytest.raises(ValueError, match=r"damaged\.edf.*CR/LF") as info:
        read_raw(bad)
    assert f"{n_lf} CR LF pairs" in str(info.value)
    # undoing the damage gives the file back
    repaired = tmp_path / "repaired.edf"
    repaired.write_bytes(bad.read_bytes().replace(b"\r\n", b"\n"))
    np.testing.assert_array_equal(read_raw(repaired, verbose="error").get_data(),
                                  read_raw(good, verbose="error").get_data())


def test_truncated_edf(tmp_path):
    good = _edf(tmp_path)
    content = good.read_bytes()
    bad = tmp_path / "short.edf"
    bad.write_bytes(content[:-100])
    with pytest.raises(ValueError, match=rf"short\.edf.*truncated: expected {len(content)} "
                                         rf"bytes.*found {len(content) - 100}"):
        read_raw(bad)


def test_edf_with_extra_bytes_warns(tmp_path):
    good = _edf(tmp_path)
    content = good.read_bytes()
    extra = content.count(b"\r\n") + 3  # not explained by CR/LF damage
    bad = tmp_path / "long.edf"
    bad.write_bytes(content + b"\0" * extra)
    with pytest.warns(BcikitWarning, match=f"{extra} bytes more"):
        raw = read_raw(bad, verbose="error")
    assert raw.n_times == make_raw().n_times


def test_nan_samples_name_the_channel(tmp_path):
    raw = make_raw()
    raw._data[1, 100:110] = np.nan
    raw._data[3, 5] = np.inf
    path = tmp_path / "nan_raw.fif"
    write(raw, path)
    with pytest.raises(ValueError, match=r"nan_raw\.fif.*2 channel\(s\).*C3, C4"):
        read_raw(path, verbose="error")
    # not checked when not preloaded; epoching then drops the affected trials
    lazy = read_raw(path, preload=False, verbose="error")
    with pytest.warns(BcikitWarning, match="dropped 1 trial"):
        trials = epochs_from_raw(lazy, event_map={"left": "L"}, tmin=-1.5, tmax=0.0)
    assert len(trials) == 2  # the trial at 2 s covers samples 64..255 (NaN at 100..109)


def test_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.edf"):
        read_raw(tmp_path / "nothere.edf")
    txt = tmp_path / "notes.txt"
    txt.write_text("x")
    with pytest.raises(ValueError, match=r"notes\.txt.*\.edf.*\.vhdr.*\.set"):
        read_raw(txt)
    junk = tmp_path / "junk.edf"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match=r"junk\.edf.*MNE could not read"):
        read_raw(junk)
    vhdr = tmp_path / "junk.vhdr"
    vhdr.write_text("not a brainvision header\n")
    with pytest.raises(ValueError, match=r"junk\.vhdr"):
        read_raw(vhdr)
    with pytest.raises(ValueError, match="ch_type"):
        read_raw(_edf(tmp_path), ch_type="nonsense", verbose="error")


def test_ch_type_retypes_signals(tmp_path):
    raw = make_raw(stim=True)
    path = tmp_path / "stim_raw.fif"
    write(raw, path)
    back = read_raw(path, ch_type="misc", verbose="error")
    assert back.get_channel_types() == ["misc"] * 4 + ["stim"]


# ------------------------------------------------------------------------------------ epoching
def test_epochs_window_and_values(global_random_seed):
    raw = make_raw(global_random_seed)
    tmin, tmax = 0.1, 0.6
    trials = epochs_from_raw(raw, event_map={"left": "L", "right": "R"}, tmin=tmin, tmax=tmax,
                             meta={"subject": 7, "session": "a", "run": 2, "dataset": "sim",
                                   "site": "s1"})
    n = int(round((tmax - tmin) * SFREQ))
    assert trials.X.shape == (6, 4, n) and trials.X.dtype == np.float32
    assert trials.classes == ["L", "R"]
    np.testing.assert_array_equal(trials.y, [0, 1, 0, 1, 0, 1])
    data = raw.get_data()
    keep = [i for i, d in enumerate(DESCS) if d != "rest"]
    for k, i in enumerate(keep):
        start = int(round(ONSETS[i] * SFREQ)) + int(round(tmin * SFREQ))
        np.testing.assert_allclose(trials.X[k], data[:, start:start + n], rtol=1e-6, atol=0)
    np.testing.assert_allclose(trials.meta["onset"], ONSETS[keep])
    assert trials.meta["event"].tolist() == [DESCS[i] for i in keep]
    assert set(trials.meta["subject"]) == {"7"} and set(trials.meta["run"]) == {"2"}
    assert set(trials.meta["dataset"]) == {"sim"} and set(trials.meta["site"]) == {"s1"}
    assert trials.tmin == pytest.approx(round(tmin * SFREQ) / SFREQ)
    assert trials.ch_names == NAMES


def test_epochs_many_to_one_and_classes():
    raw = make_raw()
    trials = epochs_from_raw(raw, event_map={"left": "move", "right": "move", "rest": "rest"},
                             tmin=0, tmax=0.5, classes=["rest", "move", "other"])
    assert trials.classes == ["rest", "move", "other"]
    np.testing.assert_array_equal(trials.y, [1, 1, 1, 0, 1, 1, 1])
    with pytest.raises(ValueError, match=r"labels \['move'\] are not among classes"):
        epochs_from_raw(raw, event_map={"left": "move"}, tmin=0, tmax=0.5, classes=["rest"])


def test_epochs_unknown_event_is_named():
    raw = make_raw()
    with pytest.raises(ValueError, match=r"\['T1'\].*do not occur.*\['left', 'rest', 'right'\]"):
        epochs_from_raw(raw, event_map={"left": "L", "T1": "X"}, tmin=0, tmax=1)
    with pytest.raises(ValueError, match="tmax > tmin"):
        epochs_from_raw(raw, event_map={"left": "L"}, tmin=1, tmax=1)
    with pytest.raises(TypeError, match="event_map"):
        epochs_from_raw(raw, event_map=["left"], tmin=0, tmax=1)


def test_epochs_from_stim_channel():
    raw = make_raw(stim=True)
    trials = epochs_from_raw(raw, event_map={"1": "left", "2": "right"}, tmin=0, tmax=0.25)
    assert trials.X.shape == (6, 4, 32)  # the stim channel is not a data channel
    np.testing.assert_array_equal(trials.y, [0, 1, 0, 1, 0, 1])
    np.testing.assert_allclose(trials.meta["onset"], [2, 4, 6, 10, 12, 14])
    with pytest.raises(ValueError, match=r"\['9'\].*do not occur.*'1', '2', '3'"):
        epochs_from_raw(raw, event_map={"1": "left", "9": "x"}, tmin=0, tmax=0.25)


def test_epochs_past_the_end_are_dropped_with_warning():
    raw = make_raw(seconds=15.0)
    with pytest.warns(BcikitWarning, match="dropped 1 of 3.*past the recording"):
        trials = epochs_from_raw(raw, event_map={"right": "R"}, tmin=0, tmax=2.0)
    np.testing.assert_allclose(trials.meta["onset"], [4, 10])


# ---------------------------------------------------------------------------------------- BIDS
@pytest.fixture(scope="module")
def bids_root(tmp_path_factory):
    mne_bids = pytest.importorskip("mne_bids")
    root = tmp_path_factory.mktemp("bids")
    src = tmp_path_factory.mktemp("src")
    for i, subject in enumerate(["01", "02"]):
        raw = make_raw(seed=10 + i)
        path = src / f"s{subject}.edf"
        write(raw, path)
        raw = mne.io.read_raw_edf(path, verbose="error")
        bp = mne_bids.BIDSPath(subject=subject, task="mi", run="1", datatype="eeg", root=root)
        mne_bids.write_raw_bids(raw, bp, verbose="error", overwrite=True)
    return root


def test_read_bids_and_load_dataset(bids_root, tmp_path):
    recs = read_bids(bids_root, verbose="error")
    assert [(e["subject"], e["task"], e["run"]) for _, e in recs] == [("01", "mi", "1"),
                                                                     ("02", "mi", "1")]
    raw, _ = recs[0]
    assert list(raw.annotations.description) == DESCS
    assert [e["subject"] for _, e in read_bids(bids_root, subjects=["02"], runs=1)] == ["02"]
    with pytest.raises(ValueError, match="no EEG/iEEG recording"):
        read_bids(bids_root, tasks="other")
    with pytest.raises(ValueError, match="not a BIDS root"):
        read_bids(tmp_path)

    trials = load_dataset(bids_root, cache=False)
    assert trials.classes == ["left", "rest", "right"]
    assert len(trials) == 14
    assert trials.X.shape[2] == int(1.5 * SFREQ)  # window = the events' duration
    counts = trials.meta.groupby("subject")["event"].value_counts().to_dict()
    assert counts[("01", "left")] == 3 and counts[("02", "rest")] == 1
    assert set(trials.meta["dataset"]) == {bids_root.name}
    # same data as reading the source file
    direct = epochs_from_raw(make_raw(seed=10), event_map={d: d for d in trials.classes},
                             tmin=0, tmax=1.5, classes=trials.classes)
    first = trials.subset(trials.meta["subject"].to_numpy() == "01")
    np.testing.assert_array_equal(first.y, direct.y)
    step = (direct.X.max() - direct.X.min()) / (2 ** 16 - 1)
    assert np.abs(first.X - direct.X).max() <= step

    text = " ".join(describe(bids_root).split())  # lines may wrap
    assert "subjects (2): 01, 02" in text and "tasks (1): mi" in text
    assert "sub-01/eeg/sub-01_task-mi_run-1_eeg.edf: eeg 4 ch; 128 Hz; 20.0 s" in text
    assert "left 3, rest 1, right 3" in text


def test_describe_file(tmp_path):
    path = tmp_path / "rec.edf"
    write(make_raw(), path)
    text = describe(path)
    assert "4 channels, 128 Hz, 20.000 s (2560 samples)" in text
    assert "eeg (4): Fz, C3, Cz, C4" in text
    assert "events (annotations, 7 in 3 kind(s))" in text
    assert "left: 3" in text and "rest: 1" in text
    with pytest.raises(ValueError, match="not a BIDS root"):
        describe(tmp_path)
    (tmp_path / "dataset_description.json").write_text(json.dumps({"Name": "x"}))
    assert "recordings (0)" in describe(tmp_path)


def test_ieeg_files_go_through_read_ieeg(tmp_path, monkeypatch):
    ieeg = pytest.importorskip("bcikit.io.ieeg")
    raw = make_raw()
    raw.rename_channels({"Fz": "A1", "C3": "A2", "Cz": "A3", "C4": "A4"})
    path = tmp_path / "patient_seeg.edf"
    write(raw, path)
    assert ieeg.is_ieeg_path(path)
    back = read_raw(path, verbose="error")
    assert back.get_channel_types() == ["seeg"] * 4
    plain = tmp_path / "patient.edf"
    write(raw, plain)
    assert read_raw(plain, ch_type="ecog", verbose="error").get_channel_types() == ["ecog"] * 4
    # a read_ieeg that reads the file with read_raw itself is not sent back to read_ieeg
    calls = []

    def reader(path, *, electrodes=None, ch_type=None, preload=True, verbose=None):
        calls.append((path.name, electrodes, ch_type, preload))
        return read_raw(path, preload=preload, verbose=verbose)

    monkeypatch.setattr(ieeg, "read_ieeg", reader)
    out = read_raw(path, preload=False, verbose="error")
    assert calls == [("patient_seeg.edf", None, None, False)]
    assert out.ch_names == ["A1", "A2", "A3", "A4"]
