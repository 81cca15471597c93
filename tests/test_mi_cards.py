"""Motor-imagery cards of the MVCNet benchmark without network: Zhou2016, BNCI 2014-002 and
BNCI 2015-001 through fake MOABB datasets shaped like the real ones, and BCI Competition IV data
set 1 through its own reader on .mat files written in the competition's layout."""

from __future__ import annotations

import io
import socket
import sys
import types
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

mne = pytest.importorskip("mne")
sio = pytest.importorskip("scipy.io")

from bcikit.io import load_card  # noqa: E402
from bcikit.io.formats import bciiv1 as bciiv1_mod  # noqa: E402
from bcikit.io.formats import get_reader  # noqa: E402
from bcikit.io.formats.bciiv1 import load_bciiv1, read_bciiv1  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CARDS = REPO / "datasets"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


# ----------------------------------------------------------------------------- shipped cards
def test_shipped_mi_cards_validate():
    zhou = load_card(CARDS / "zhou2016.toml")
    assert zhou.fetcher == "moabb:Zhou2016" and zhou.subjects == (1, 2, 3, 4)
    lr = zhou.tasks["imagery_lr"]
    assert zhou.default_task == "imagery_lr" and lr.sessions == ("0",)
    assert (lr.tmin, lr.tmax) == (0.0, 5.0) and lr.classes == ("left_hand", "right_hand")

    b2 = load_card(CARDS / "bnci2014_002.toml")
    assert b2.fetcher == "moabb:BNCI2014_002" and len(b2.subjects) == 14
    task = b2.tasks["imagery"]
    assert task.runs == [f"{i}train" for i in range(5)] and (task.tmin, task.tmax) == (3.0, 8.0)
    assert task.classes == ("right_hand", "feet") and b2.tasks["imagery_all"].runs is None

    b15 = load_card(CARDS / "bnci2015_001.toml")
    assert b15.fetcher == "moabb:BNCI2015_001" and len(b15.subjects) == 12
    assert b15.tasks["imagery"].sessions == ("0",) and b15.tasks["imagery_all"].sessions is None
    assert (b15.tasks["imagery"].tmin, b15.tasks["imagery"].tmax) == (0.0, 5.0)

    iv1 = load_card(CARDS / "bciiv1.toml")
    assert iv1.subjects == tuple("abcdefg") and iv1.format == "bciiv1"
    assert iv1.fetcher == "bciiv1" and iv1.artificial_subjects == ("c", "d", "e")
    task = iv1.tasks["imagery"]
    assert task.resample == 250.0 and task.classes_per_subject
    assert round((task.tmax - task.tmin) * task.resample) == 750  # 3 s at 250 Hz
    assert "artificial subject(s): c, d, e" in iv1.summary()
    assert "artificial" not in b2.summary()


BASE = """
[dataset]
name = "mini"
modality = "eeg"
{dataset_extra}

[files]
root = "data"
pattern = "{pattern}"
subjects = ["a", "b"]
sessions = ["1", "2"]
{files_extra}

[tasks.lr]
events = {{ left = "left_hand", right = "right_hand" }}
tmin = 0.0
tmax = 1.0
{task_extra}
"""

BAD = [
    ({"files_extra": 'format = "edf2"'},
     r"\[files\] format must be one of \['bciiv1', 'braintreebank'\] \(or a trial reader: "
     r"\['duin'\]\)"),
    ({"files_extra": 'fetcher = "moabb:X"\nformat = "bciiv1"'},
     r"\[files\] format does not apply to MOABB cards"),
    ({"pattern": "s{subject}/*.mat"}, r"\[files\] pattern 's\{subject\}/\*\.mat' has glob"),
    ({"dataset_extra": 'artificial_subjects = ["z"]'},
     r"\[dataset\] artificial_subjects \['z'\] are not among"),
    ({"task_extra": 'sessions = ["3"]'}, r"\[tasks\.lr\] sessions \['3'\] are not among"),
    ({"task_extra": "resample = 0"}, r"\[tasks\.lr\] resample must be a positive rate"),
    ({"task_extra": 'resample = "fast"'}, r"\[tasks\.lr\] resample must be a number"),
    ({"task_extra": 'classes_per_subject = "yes"'},
     r"\[tasks\.lr\] classes_per_subject must be true or false"),
]


def _card_text(**kw):
    values = {"dataset_extra": "", "files_extra": "", "task_extra": "",
              "pattern": "s{subject}_{session}.mat"}
    values.update(kw)
    return BASE.format(**values)


@pytest.mark.parametrize("change, message", BAD, ids=[m[1][:40] for m in BAD])
def test_new_card_fields_errors_name_file_and_field(tmp_path, change, message):
    path = tmp_path / "bad.toml"
    path.write_text(_card_text(**change))
    with pytest.raises(ValueError, match=r"bad\.toml: " + message):
        load_card(path)
    path.write_text(_card_text())  # the unchanged card is valid
    assert load_card(path).tasks["lr"].sessions is None


# ------------------------------------------------------------------------------ fake MOABB
def _seed(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


class _FakeMOABB:
    """Common parts of the fakes: ``get_data`` like MOABB's, recording the calls."""

    calls: list = []

    def get_data(self, subjects):
        type(self).calls.append(list(subjects))
        return {s: {sess: {run: self.raw(s, sess, run) for run in runs}
                    for sess, runs in self.layout(s).items()} for s in subjects}


ZHOU_EEG = ["Fp1", "Fp2", "FC3", "FCz", "FC4", "C3", "Cz", "C4", "CP3", "CPz", "CP4", "O1",
            "Oz", "O2"]
#: Left/right trials of each run of the first session, per subject (119/100/100/90 in all).
ZHOU_LR = {1: (60, 59), 2: (50, 50), 3: (50, 50), 4: (45, 45)}


class FakeZhou2016(_FakeMOABB):
    """Like moabb.datasets.Zhou2016 (BIDS from Zenodo): sessions "0", "1", "2" of runs "0" and
    "1"; 14 EEG + 2 EOG channels at 250 Hz, no stim channel; each cue annotated with its class
    name for MOABB's interval (0-5 s), as MOABB's get_data leaves BIDS raws. Three classes;
    later sessions are short."""

    event_id = {"left_hand": 1, "right_hand": 2, "feet": 3}
    interval = [0, 5]
    subject_list = [1, 2, 3, 4]
    sfreq = 250.0

    @staticmethod
    def layout(subject):
        return {"0": ["0", "1"], "1": ["0", "1"], "2": ["0", "1"]}

    @classmethod
    def labels(cls, subject, session, run):
        n_lr = ZHOU_LR[subject][int(run)] if session == "0" else 4
        n_left = (n_lr + 1) // 2
        labels = ["left_hand"] * n_left + ["right_hand"] * (n_lr - n_left) + ["feet"] * 3
        rng = np.random.default_rng(1000 * subject + 10 * int(session) + int(run))
        return list(rng.permutation(labels))

    @classmethod
    def raw(cls, subject, session, run):
        labels = cls.labels(subject, session, run)
        rng = np.random.default_rng(7 + 1000 * subject + 10 * int(session) + int(run))
        n = int((2 + 6 * len(labels)) * cls.sfreq)
        info = mne.create_info(ZHOU_EEG + ["VEOU", "VEOL"], cls.sfreq, ["eeg"] * 14 + ["eog"] * 2)
        raw = mne.io.RawArray(rng.normal(0, 10e-6, (16, n)), info, verbose="error")
        cues = 1.0 + 6.0 * np.arange(len(labels))
        raw.set_annotations(mne.Annotations(cues, np.full(len(labels), 5.0), labels))
        return raw


BNCI2_EEG = ["FC3", "FC1", "FCz", "FC2", "FC4", "C3", "C1", "Cz", "C2", "C4", "CP3", "CP1",
             "CPz", "CP2", "CP4"]


class _FakeBNCI(_FakeMOABB):
    """MOABB's BNCI raws: EEG + an 'STI' stim channel with the class code at each trial start
    (``run.trial``); MOABB's get_data also annotates each trial with its class name at
    ``interval[0]`` after the start, lasting the interval."""

    sfreq = 512.0
    event_id = {"right_hand": 1, "feet": 2}

    @classmethod
    def raw(cls, subject, session, run):
        codes = cls.codes(subject, session, run)
        rng = np.random.default_rng(_seed(cls.__name__, subject, session, run))
        n = int((1 + cls.spacing * len(codes) + 1) * cls.sfreq)
        starts = (1 + cls.spacing * np.arange(len(codes))) * cls.sfreq
        stim = np.zeros(n)
        stim[starts.astype(int)] = codes
        names = cls.ch_names
        info = mne.create_info(names + ["STI"], cls.sfreq, ["eeg"] * len(names) + ["stim"])
        data = np.vstack([rng.normal(0, 10e-6, (len(names), n)), stim])
        raw = mne.io.RawArray(data, info, verbose="error")
        inv = {v: k for k, v in cls.event_id.items()}
        raw.set_annotations(mne.Annotations(starts / cls.sfreq + cls.interval[0],
                                            np.full(len(codes), np.diff(cls.interval)[0]),
                                            [inv[c] for c in codes]))
        return raw

    @classmethod
    def codes(cls, subject, session, run):
        n = cls.n_trials(session, run)
        rng = np.random.default_rng(_seed(subject, session, run))
        return rng.permutation(np.repeat([1, 2], n // 2))


class FakeBNCI2014_002(_FakeBNCI):
    """moabb.datasets.BNCI2014_002: one session "0" of runs "0train".."4train" (from S<nn>T.mat)
    and "5test".."7test" (S<nn>E.mat), 20 trials each; 15 EEG; trial start = cross, cue at 3 s,
    MOABB interval 3-8 s."""

    interval = [3, 8]
    subject_list = list(range(1, 15))
    ch_names = BNCI2_EEG
    spacing = 8.5

    @staticmethod
    def layout(subject):
        return {"0": [f"{i}train" for i in range(5)] + [f"{i}test" for i in range(5, 8)]}

    @staticmethod
    def n_trials(session, run):
        return 20


BNCI15_EEG = ["FC3", "FCz", "FC4", "C5", "C3", "C1", "Cz", "C2", "C4", "C6", "CP3", "CPz", "CP4"]


class FakeBNCI2015_001(_FakeBNCI):
    """moabb.datasets.BNCI2015_001: sessions "0A", "1B" (and "2C" for subjects 8-11), one run
    "0" each; session 1 has 200 trials (100 per class), later ones are short here; 13 EEG;
    MOABB interval 0-5 s."""

    interval = [0, 5]
    subject_list = list(range(1, 13))
    ch_names = BNCI15_EEG
    spacing = 5.5

    @staticmethod
    def layout(subject):
        sessions = ["0A", "1B", "2C"] if subject in (8, 9, 10, 11) else ["0A", "1B"]
        return {s: ["0"] for s in sessions}

    @staticmethod
    def n_trials(session, run):
        return 200 if session == "0A" else 6


@pytest.fixture
def fake_moabb(monkeypatch):
    module = types.ModuleType("moabb.datasets")
    for cls in (FakeZhou2016, FakeBNCI2014_002, FakeBNCI2015_001):
        setattr(module, cls.__name__.replace("Fake", ""), cls)
        monkeypatch.setattr(cls, "calls", [])
    monkeypatch.setitem(sys.modules, "moabb.datasets", module)
    return module


def _touch(root: Path, names) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_zhou2016_first_session_left_right(tmp_path, fake_moabb):
    card = load_card(CARDS / "zhou2016.toml")
    with pytest.raises(FileNotFoundError, match=r"zhou2016\.toml.*sub-1.*download=True"):
        card.load(root=tmp_path, subjects=[1], cache=False)
    assert FakeZhou2016.calls == []  # nothing read, nothing downloaded
    # the BIDS files MOABB keeps (their names carry a hash: the card matches them by glob)
    _touch(tmp_path, [f"sub-{s}/ses-0/eeg/sub-{s}_ses-0_task-imagery_run-0_desc-3f2a_eeg.edf"
                      for s in (1, 2, 3, 4)])
    trials = card.load(root=tmp_path, cache=False)
    assert FakeZhou2016.calls == [[1], [2], [3], [4]]
    assert trials.X.shape[1:] == (14, 1250) and trials.sfreq == 250.0
    assert trials.ch_names == ZHOU_EEG and trials.classes == ["left_hand", "right_hand"]
    counts = trials.meta.groupby("subject").size().to_dict()
    assert counts == {"1": 119, "2": 100, "3": 100, "4": 90}
    assert set(trials.meta["session"]) == {"0"} and set(trials.meta["run"]) == {"0", "1"}
    # labels and samples: subject 1, session 0, run 0, in recording order
    first = (trials.meta["subject"] == "1").to_numpy() & (trials.meta["run"] == "0").to_numpy()
    truth = [lab for lab in FakeZhou2016.labels(1, "0", "0") if lab != "feet"]
    assert trials.label_names[first].tolist() == truth
    raw = FakeZhou2016.raw(1, "0", "0")
    k = next(i for i, lab in enumerate(FakeZhou2016.labels(1, "0", "0")) if lab != "feet")
    start = int((1.0 + 6.0 * k) * 250)
    np.testing.assert_allclose(trials.X[np.flatnonzero(first)[0]],
                               raw.get_data()[:14, start:start + 1250], rtol=1e-6)

    # the disk cache keys on the files the glob matches: a second load does not read MOABB
    cached = card.load(root=tmp_path, subjects=[2], cache=tmp_path / "cache")
    again = card.load(root=tmp_path, subjects=[2], cache=tmp_path / "cache")
    assert FakeZhou2016.calls[4:] == [[2]]
    np.testing.assert_array_equal(np.asarray(again.X), np.asarray(cached.X))

    three = card.load(root=tmp_path, subjects=[4], task="imagery", cache=False)
    assert three.classes == ["left_hand", "right_hand", "feet"]
    assert set(three.meta["session"]) == {"0", "1", "2"}
    assert len(three) == 90 + 4 * 4 + 3 * 6  # session 0 + sessions 1, 2 (4 L/R per run) + feet


def test_bnci2014_002_first_100_trials(tmp_path, fake_moabb):
    card = load_card(CARDS / "bnci2014_002.toml")
    _touch(tmp_path, ["S03T.mat", "S03E.mat"])
    trials = card.load(root=tmp_path, subjects=[3], cache=False)
    assert FakeBNCI2014_002.calls == [[3]]
    assert trials.X.shape == (100, 15, 2560) and trials.sfreq == 512.0
    assert trials.ch_names == BNCI2_EEG and trials.classes == ["right_hand", "feet"]
    assert np.bincount(trials.y).tolist() == [50, 50]
    assert sorted(set(trials.meta["run"])) == [f"{i}train" for i in range(5)]
    # 3-8 s from each trial start (the stim code), not from MOABB's shifted annotation
    codes = FakeBNCI2014_002.codes(3, "0", "0train")
    assert trials.y[:20].tolist() == (codes - 1).tolist()
    raw = FakeBNCI2014_002.raw(3, "0", "0train")
    start = int((1 + 3) * 512)
    np.testing.assert_allclose(trials.X[0], raw.get_data()[:15, start:start + 2560], rtol=1e-6)
    np.testing.assert_allclose(trials.meta["onset"][:2], [1.0, 9.5])

    every = card.load(root=tmp_path, subjects=[3], task="imagery_all", cache=False)
    assert len(every) == 160 and len(set(every.meta["run"])) == 8


def test_bnci2015_001_session_one(tmp_path, fake_moabb):
    card = load_card(CARDS / "bnci2015_001.toml")
    _touch(tmp_path, ["S08A.mat", "S08B.mat"])
    trials = card.load(root=tmp_path, subjects=[8], cache=False)
    assert trials.X.shape == (200, 13, 2560) and trials.sfreq == 512.0
    assert set(trials.meta["session"]) == {"0A"} and np.bincount(trials.y).tolist() == [100, 100]
    assert trials.ch_names == BNCI15_EEG and trials.info.get_montage() is not None
    raw = FakeBNCI2015_001.raw(8, "0A", "0")
    start = int((1 + 5.5 * 5) * 512)  # the sixth trial of the recording, 0-5 s from its marker
    np.testing.assert_allclose(trials.X[5], raw.get_data()[:13, start:start + 2560], rtol=1e-6)
    assert trials.y.tolist() == (FakeBNCI2015_001.codes(8, "0A", "0") - 1).tolist()
    every = card.load(root=tmp_path, subjects=[8], task="imagery_all", cache=False)
    assert len(every) == 212 and set(every.meta["session"]) == {"0A", "1B", "2C"}

    wrong = tmp_path / "wrong.toml"
    wrong.write_text((CARDS / "bnci2015_001.toml").read_text().replace(
        'sessions = ["0"]', 'sessions = ["5"]'))
    with pytest.raises(ValueError, match=r"wrong\.toml: \[tasks\.imagery\] sessions \['5'\] "
                                         r"match none of subject 8's MOABB sessions "
                                         r"\['0A', '1B', '2C'\]"):
        load_card(wrong).load(root=tmp_path, subjects=[8], cache=False)


def test_moabb_download_is_not_cached_before_the_files_exist(tmp_path, fake_moabb):
    """With files missing and download=True MOABB fetches them while reading; the default disk
    cache (which hashes the files) must not fail on files that do not exist yet."""
    card = load_card(CARDS / "bnci2014_002.toml")
    trials = card.load(root=tmp_path / "none", subjects=[1], download=True,
                       cache=tmp_path / "cache")
    assert FakeBNCI2014_002.calls == [[1]] and len(trials) == 100


# ---------------------------------------------------------------------- BCI Competition IV 1
BCIIV1_CHANNELS = [
    "AF3", "AF4", "F5", "F3", "F1", "Fz", "F2", "F4", "F6", "FC5", "FC3", "FC1", "FCz", "FC2",
    "FC4", "FC6", "CFC7", "CFC5", "CFC3", "CFC1", "CFC2", "CFC4", "CFC6", "CFC8", "T7", "C5",
    "C3", "C1", "Cz", "C2", "C4", "C6", "T8", "CCP7", "CCP5", "CCP3", "CCP1", "CCP2", "CCP4",
    "CCP6", "CCP8", "CP5", "CP3", "CP1", "CPz", "CP2", "CP4", "CP6", "P5", "P3", "P1", "Pz",
    "P2", "P4", "P6", "PO1", "PO2", "O1", "O2"]
SINE_HZ = 3.0


def bciiv1_content(classes, n_trials=10, fs=1000, seed=0, sine=False):
    """A data-set-1 calibration file's variables as MATLAB saves them: ``cnt`` int16
    (time x 59) in 0.1 uV, ``mrk.pos`` 1-based (1 x n), ``mrk.y`` -1/1 (1 x n), ``nfo`` with fs,
    clab and classes as 1 x n cell arrays, xpos/ypos as 59 x 1 columns. Cues every 4 s (at
    samples divisible by 4, so that 250 Hz sees them exactly)."""
    rng = np.random.default_rng(seed)
    n_times = int(fs * (2 + 4 * n_trials + 2))
    if sine:  # a 3 Hz sine per channel, amplitude 100 uV, channel-dependent phase
        t = np.arange(n_times) / fs
        phase = np.linspace(0, np.pi, 59)
        cnt = np.round(1000 * np.sin(2 * np.pi * SINE_HZ * t[:, None] + phase)).astype(np.int16)
    else:
        cnt = rng.integers(-2000, 2000, (n_times, 59)).astype(np.int16)
    pos = 1 + fs * (2 + 4 * np.arange(n_trials))
    y = rng.permutation(np.repeat([-1, 1], n_trials // 2))
    cell = lambda items: np.array(items, dtype=object).reshape(1, -1)  # noqa: E731
    nfo = {"fs": float(fs), "clab": cell(BCIIV1_CHANNELS), "classes": cell(list(classes)),
           "xpos": rng.uniform(-1, 1, (59, 1)), "ypos": rng.uniform(-1, 1, (59, 1))}
    mrk = {"pos": pos.astype(float).reshape(1, -1), "y": y.astype(float).reshape(1, -1)}
    return {"cnt": cnt, "mrk": mrk, "nfo": nfo}


def write_bciiv1(path: Path, classes=("left", "foot"), **kw) -> dict:
    content = bciiv1_content(classes, **kw)
    path.parent.mkdir(parents=True, exist_ok=True)
    sio.savemat(str(path), content)
    return content


@pytest.mark.parametrize("fs", [1000, 100])
def test_bciiv1_reader_round_trip(tmp_path, fs):
    path = tmp_path / ("BCICIV_calib_ds1a_1000Hz.mat" if fs == 1000 else "BCICIV_calib_ds1a.mat")
    content = write_bciiv1(path, classes=("left", "foot"), fs=fs, seed=3)
    assert get_reader("bciiv1") is read_bciiv1
    raw = read_bciiv1(path)
    assert raw.info["sfreq"] == fs and raw.ch_names == BCIIV1_CHANNELS
    assert set(raw.get_channel_types()) == {"eeg"}
    # units: 0.1 uV per count -> volts
    np.testing.assert_allclose(raw.get_data(), content["cnt"].T.astype(float) * 1e-7, rtol=1e-12)
    assert np.abs(raw.get_data()).max() == pytest.approx(np.abs(content["cnt"]).max() * 1e-7)
    # markers: 1-based positions -> 0-based samples; y -1/1 -> nfo.classes[0]/[1]
    pos, y = content["mrk"]["pos"].ravel(), content["mrk"]["y"].ravel()
    events, event_id = mne.events_from_annotations(raw, verbose="error")
    assert events[:, 0].tolist() == (pos - 1).astype(int).tolist()
    names = {code: name for name, code in event_id.items()}
    assert [names[c] for c in events[:, 2]] == ["left" if v == -1 else "foot" for v in y]
    np.testing.assert_allclose(raw.annotations.duration, 4.0)
    rec = load_bciiv1(path)
    assert rec.classes == ["left", "foot"] and rec.y.tolist() == y.astype(int).tolist()
    np.testing.assert_allclose(rec.xpos, content["nfo"]["xpos"].ravel())


def _corrupt(content, change):
    if change == "no cnt":
        del content["cnt"]
    elif change == "no classes":
        del content["nfo"]["classes"]
    elif change == "one class":
        content["nfo"]["classes"] = np.array(["left"], dtype=object).reshape(1, 1)
    elif change == "y zero":
        content["mrk"]["y"][0, 0] = 0
    elif change == "pos beyond end":
        content["mrk"]["pos"][0, -1] = content["cnt"].shape[0] + 1
    elif change == "no mrk":
        del content["mrk"]
    elif change == "clab short":
        content["nfo"]["clab"] = content["nfo"]["clab"][:, :58]
    elif change == "no fs":
        del content["nfo"]["fs"]
    return content


CORRUPT = [("no cnt", r"lacks the field 'cnt'"),
           ("no classes", r"lacks the field 'nfo\.classes'"),
           ("one class", r"the field 'nfo\.classes' must hold two"),
           ("y zero", r"the field 'mrk\.y' must hold -1 or 1"),
           ("pos beyond end", r"the field 'mrk\.pos' must hold 1-based sample indices"),
           ("no mrk", r"lacks the field 'mrk'"),
           ("clab short", r"'nfo\.clab' names 58 channels but 'cnt' has 59"),
           ("no fs", r"lacks the field 'nfo\.fs'")]


@pytest.mark.parametrize("change, message", CORRUPT, ids=[c[0] for c in CORRUPT])
def test_bciiv1_reader_errors_name_file_and_field(tmp_path, change, message):
    path = tmp_path / "BCICIV_calib_ds1x_1000Hz.mat"
    sio.savemat(str(path), _corrupt(bciiv1_content(("left", "right"), n_trials=2), change))
    with pytest.raises(ValueError, match=r"BCICIV_calib_ds1x_1000Hz\.mat.*" + message):
        read_bciiv1(path)


def test_bciiv1_reader_other_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mat"):
        read_bciiv1(tmp_path / "nope.mat")
    bad = tmp_path / "garbage.mat"
    bad.write_bytes(b"not a matlab file at all" * 10)
    with pytest.raises(ValueError, match=r"garbage\.mat.*not a readable MATLAB"):
        read_bciiv1(bad)
    # an evaluation file (no cues) reads only when asked to
    evaluation = tmp_path / "BCICIV_eval_ds1a_1000Hz.mat"
    sio.savemat(str(evaluation), _corrupt(bciiv1_content(("left", "foot"), n_trials=2), "no mrk"))
    raw = read_bciiv1(evaluation, require_markers=False)
    assert len(raw.annotations) == 0 and raw.n_times == 1000 * 12


def _write_subjects(root: Path, subjects: dict, **kw) -> dict:
    truth = {}
    for i, (s, classes) in enumerate(subjects.items()):
        truth[s] = write_bciiv1(root / f"BCICIV_calib_ds1{s}_1000Hz.mat", classes=classes,
                                seed=10 + i, **kw)
    return truth


def test_bciiv1_card_each_subject_own_pair(tmp_path, monkeypatch):
    card = load_card(CARDS / "bciiv1.toml")
    pairs = {"a": ("left", "foot"), "b": ("left", "right"), "c": ("left", "right")}
    truth = _write_subjects(tmp_path, pairs, sine=True)
    out = card.load(root=tmp_path, subjects=list(pairs), cache=False)
    assert isinstance(out, dict) and sorted(out) == ["a", "b", "c"]  # pairs differ
    assert out["a"].classes == ["left_hand", "feet"]
    assert out["b"].classes == out["c"].classes == ["left_hand", "right_hand"]
    t = np.arange(750) / 250.0
    phase = np.linspace(0, np.pi, 59)
    for s, ts in out.items():
        assert ts.X.shape == (10, 59, 750) and ts.sfreq == 250.0 and ts.ch_names == BCIIV1_CHANNELS
        y = truth[s]["mrk"]["y"].ravel()
        assert ts.y.tolist() == [0 if v == -1 else 1 for v in y]  # nfo.classes order
        assert set(ts.meta["subject"]) == {s} and set(ts.meta["dataset"]) == {"bciiv1"}
        onsets = (truth[s]["mrk"]["pos"].ravel() - 1) / 1000.0
        np.testing.assert_allclose(ts.meta["onset"], onsets)
        # resampled to 250 Hz and cut 0.5-3.5 s after the cue: the sine at those times (volts)
        expected = 1e-4 * np.sin(2 * np.pi * SINE_HZ * (onsets[:, None, None] + 0.5 + t)
                                 + phase[None, :, None])
        np.testing.assert_allclose(ts.X, expected, atol=2e-6)
    # loading only the left/right subjects works although no file holds 'foot'
    lr = card.load(root=tmp_path, subjects=["b", "c"], cache=False)
    assert lr.classes == ["left_hand", "right_hand"] and len(lr) == 20

    # a missing subject: the error tells how to obtain the files; nothing is downloaded
    def no_fetch(*args, **kwargs):
        raise AssertionError("fetcher called without download=True")

    monkeypatch.setattr(bciiv1_mod, "fetch_bciiv1", no_fetch)
    with pytest.raises(FileNotFoundError, match=r"bciiv1\.toml.*BCICIV_calib_ds1g_1000Hz\.mat.*"
                                                r"download=True.*Register at https://www\.bbci"):
        card.load(root=tmp_path, subjects=["g"], cache=False)


def _zip_of(files: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, path in files.items():
            zf.write(path, name)
    return buffer.getvalue()


def test_bciiv1_card_download_path(tmp_path, monkeypatch):
    source = tmp_path / "source"
    _write_subjects(source, {"a": ("left", "foot")})
    archive = _zip_of({"BCICIV_1calib_1000Hz_mat/BCICIV_calib_ds1a_1000Hz.mat":
                       source / "BCICIV_calib_ds1a_1000Hz.mat"})
    urls = []

    def fake_urlopen(url, timeout=None):
        urls.append(url)
        return io.BytesIO(archive)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    card = load_card(CARDS / "bciiv1.toml")
    root = tmp_path / "root"
    trials = card.load(root=root, subjects=["a"], download=True, cache=False)
    assert urls == ["https://www.bbci.de/competition/download/competition_iv/"
                    "BCICIV_1calib_1000Hz_mat.zip"]
    assert len(trials) == 10 and trials.classes == ["left_hand", "feet"]
    assert sorted(p.name for p in root.iterdir()) == ["BCICIV_calib_ds1a_1000Hz.mat"]
    again = card.load(root=root, subjects=["a"], download=True, cache=False)  # files present
    assert len(urls) == 1 and len(again) == 10

    def refused(url, timeout=None):
        raise urllib.error.HTTPError(url, 403, "Forbidden", None, None)

    monkeypatch.setattr(urllib.request, "urlopen", refused)
    with pytest.raises(ConnectionError, match=r"403.*registration.*bbci\.de/competition/iv/"
                                              r"#download.*BCICIV_1calib_1000Hz_mat\.zip"):
        card.load(root=root, subjects=["b"], download=True, cache=False)
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda url, timeout=None: io.BytesIO(b"<html>please register</html>"))
    with pytest.raises(ValueError, match=r"did not return a zip archive.*registration"):
        card.load(root=root, subjects=["b"], download=True, cache=False)
    # nothing left behind: no archive, no partial file
    assert sorted(p.name for p in root.iterdir()) == ["BCICIV_calib_ds1a_1000Hz.mat"]
