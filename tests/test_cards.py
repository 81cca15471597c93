"""Dataset cards: validation messages, loading PhysioNet-like and MOABB-like data, fetchers that
never run when files are present, the disk cache."""

from __future__ import annotations

import datetime
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

mne = pytest.importorskip("mne")

from bcikit.io import cards as cards_mod  # noqa: E402
from bcikit.io import eeg as eeg_mod  # noqa: E402
from bcikit.io import list_cards, load_card, load_dataset  # noqa: E402
from bcikit.io.cards import expand_vars, strip_dots_mapping  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SFREQ = 160.0
BCI2000_NAMES = ["Fc3.", "C3..", "Cz..", "C4..", "Fc4."]
STANDARD = ["FC3", "C3", "Cz", "C4", "FC4"]

CARD = """
[dataset]
name = "mini_mmi"
modality = "eeg"
licence = "CC0"
obtain = "Copy them from the lab share."
default_task = "imagery_lr"

[files]
root = "{root}"
pattern = "S{{subject:03d}}/S{{subject:03d}}R{{run:02d}}.edf"
subjects = [1, 2]
{fetcher}

[channels]
type = "eeg"
rename = "strip_dots"
montage = "standard_1005"

[tasks.imagery_lr]
runs = [4, 8]
events = {{ T1 = "left_hand", T2 = "right_hand" }}
tmin = 0.5
tmax = 2.5

[tasks.imagery_ff]
runs = [6]
events = {{ T1 = "hands", T2 = "feet" }}
tmin = 0.5
tmax = 2.5

[tasks.all4]
tmin = 0.0
tmax = 1.0
classes = ["left_hand", "right_hand", "hands", "feet"]

[[tasks.all4.groups]]
runs = [4, 8]
events = {{ T1 = "left_hand", T2 = "right_hand" }}

[[tasks.all4.groups]]
runs = [6]
events = {{ T1 = "hands", T2 = "feet" }}
"""


def physionet_run(subject: int, run: int, n_chans: int = 5) -> tuple[mne.io.RawArray, list]:
    """A BCI2000-like run: T0 rest then T1/T2 cues every 4 s, codes depending on the run."""
    rng = np.random.default_rng(100 * subject + run)
    n = int(40 * SFREQ)
    raw = mne.io.RawArray(rng.normal(0, 30e-6, (n_chans, n)),
                          mne.create_info(BCI2000_NAMES[:n_chans], SFREQ, "eeg"),
                          verbose="error")
    raw.set_meas_date(datetime.datetime(2009, 8, 12, tzinfo=datetime.timezone.utc))
    labels = list(rng.permutation(["T1"] * (3 + run % 2) + ["T2"] * 3))
    onsets = 2.0 + 4.0 * np.arange(len(labels))
    desc = ["T0"] + labels
    raw.set_annotations(mne.Annotations(np.r_[0.0, onsets], np.full(len(desc), 4.1), desc,
                                        orig_time=raw.info["meas_date"]))
    return raw, labels


def write_physionet(folder: Path, subjects=(1, 2), runs=(4, 6, 8), n_chans=None) -> dict:
    truth = {}
    for s in subjects:
        (folder / f"S{s:03d}").mkdir(parents=True, exist_ok=True)
        for r in runs:
            raw, labels = physionet_run(s, r, n_chans=(n_chans or {}).get(s, 5))
            mne.export.export_raw(folder / f"S{s:03d}" / f"S{s:03d}R{r:02d}.edf", raw,
                                  verbose="error")
            truth[(s, r)] = labels
    return truth


def write_card(path: Path, root: str, fetcher: str = "") -> Path:
    path.write_text(CARD.format(root=root, fetcher=fetcher))
    return path


@pytest.fixture
def physionet(tmp_path):
    data = tmp_path / "data"
    truth = write_physionet(data)
    card = write_card(tmp_path / "mini.toml", root="data")  # relative to the card's folder
    return card, data, truth


# --------------------------------------------------------------------------------- validation
BAD = [
    ('tmin = 0.5\ntmax = 2.5\n\n[tasks.imagery_ff]', 'tmin = "a"\ntmax = 2.5\n\n[tasks.imagery_ff]',
     r"\[tasks\.imagery_lr\] tmin must be a number; got 'a'"),
    ('tmin = 0.0\ntmax = 1.0', 'tmin = 1.0\ntmax = 1.0',
     r"\[tasks\.all4\] tmax must be greater than tmin"),
    ('name = "mini_mmi"', '', r"\[dataset\] name is required"),
    ('name = "mini_mmi"', 'name = "mini mmi"', r"\[dataset\] name must use letters"),
    ('modality = "eeg"', 'modality = "meg"', r"\[dataset\] modality must be one of"),
    ('default_task = "imagery_lr"', 'default_task = "nope"', r"\[dataset\] default_task 'nope'"),
    ('licence = "CC0"', 'licence = 3', r"\[dataset\] licence must be a string; got 3"),
    ('pattern = "S{subject:03d}/', 'patern = "S{subject:03d}/',
     r"\[files\] unknown field\(s\) \['patern'\]"),
    ('R{run:02d}.edf"', 'R{trial:02d}.edf"', r"\[files\] pattern uses unknown placeholder"),
    ('subjects = [1, 2]', 'subjects = "one"', r"\[files\] subjects must be a list or a range"),
    ('subjects = [1, 2]', 'subjects = [1, 1]', r"\[files\] subjects has duplicate"),
    ('subjects = [1, 2]', 'subjects = [1.5]', r"\[files\] subjects entries must be integers"),
    ('rename = "strip_dots"', 'rename = "lower"', r"\[channels\] rename must be one of"),
    ('montage = "standard_1005"', 'montage = 1005', r"\[channels\] montage must be a string"),
    ('runs = [6]\nevents', 'events', r"\[tasks\.imagery_ff\] runs is required"),
    ('events = { T1 = "hands", T2 = "feet" }\ntmin', 'events = { T1 = 1 }\ntmin',
     r"\[tasks\.imagery_ff\] events\.T1 must be a string label"),
    ('classes = ["left_hand", "right_hand", "hands", "feet"]', 'classes = ["feet"]',
     r"\[tasks\.all4\] classes \['feet'\] lacks"),
    ('[dataset]', '[datasets]', r"\[top level\] unknown field\(s\) \['datasets'\]"),
    ('[files]', '[files]\nfetcher = "ftp"', r"\[files\] fetcher must be one of"),
    ('tmax = 2.5\n\n[tasks.imagery_ff]', 'tmax = 2.5\nbaseline = [0]\n\n[tasks.imagery_ff]',
     r"\[tasks\.imagery_lr\] baseline must be two numbers"),
]


@pytest.mark.parametrize("old, new, message", BAD, ids=[m[2][:40] for m in BAD])
def test_card_errors_name_file_and_field(tmp_path, old, new, message):
    text = CARD.format(root="data", fetcher="")
    assert old in text
    path = tmp_path / "bad_card.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ValueError, match=r"bad_card\.toml: " + message):
        load_card(path)


def test_card_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        load_card(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[dataset\nname=")
    with pytest.raises(ValueError, match=r"broken\.toml: not a valid TOML"):
        load_card(broken)


def test_shipped_cards_validate():
    cards = {c.name: c for c in list_cards(REPO / "datasets")}
    assert {"eegmmidb", "bnci2014_001", "eegmmidb_S001"} <= set(cards)
    mmi = cards["eegmmidb"]
    assert mmi.fetcher == "mne.eegbci" and len(mmi.subjects) == 109
    assert mmi.tasks["imagery_ff"].groups[0].events == {"T1": "hands", "T2": "feet"}
    assert mmi.tasks["imagery_lr"].runs == [4, 8, 12]
    assert (mmi.tasks["imagery_lr"].tmin, mmi.tasks["imagery_lr"].tmax) == (0.5, 2.5)
    bnci = cards["bnci2014_001"]
    assert bnci.fetcher == "moabb:BNCI2014_001" and bnci.default_task == "imagery"
    assert (bnci.tasks["imagery"].tmin, bnci.tasks["imagery"].tmax) == (2.0, 6.0)
    assert bnci.tasks["imagery"].classes == ("left_hand", "right_hand", "feet", "tongue")
    real = cards["eegmmidb_S001"]
    assert real.root.startswith("${BCIKIT_REALDATA}")


def test_strip_dots_and_vars(tmp_path, monkeypatch):
    names = ["Fc5.", "Fcz.", "Fp1.", "Fpz.", "Afz.", "T10.", "Iz..", "Cz..", "Po8.", "Cp3."]
    assert list(strip_dots_mapping(names).values()) == [
        "FC5", "FCz", "Fp1", "Fpz", "AFz", "T10", "Iz", "Cz", "PO8", "CP3"]
    monkeypatch.delenv("BCIKIT_TEST_A", raising=False)
    monkeypatch.setenv("BCIKIT_TEST_B", "/b")
    assert expand_vars("${BCIKIT_TEST_A:-${BCIKIT_TEST_B:-/c}}/x") == "/b/x"
    assert expand_vars("${BCIKIT_TEST_A:-/a}/x") == "/a/x"
    with pytest.raises(ValueError, match=r"c\.toml: \[files\] root uses \$\{BCIKIT_TEST_A\}"):
        expand_vars("${BCIKIT_TEST_A}/x", card="c.toml", field="[files] root")
    monkeypatch.delenv("BCIKIT_REALDATA", raising=False)
    assert expand_vars("${BCIKIT_REALDATA}") == str(REPO.parent / "shared" / "realdata")


# ------------------------------------------------------------------------------------ loading
def test_load_physionet_like(physionet):
    card_path, data, truth = physionet
    card = load_card(card_path)
    trials = card.load(cache=False)  # default task imagery_lr: runs 4 and 8
    assert trials.classes == ["left_hand", "right_hand"]
    expected = [lab for s in (1, 2) for r in (4, 8) for lab in truth[(s, r)]]
    assert trials.label_names.tolist() == [{"T1": "left_hand", "T2": "right_hand"}[x]
                                           for x in expected]
    assert trials.X.shape == (len(expected), 5, 320)
    assert trials.ch_names == STANDARD
    assert trials.info.get_montage() is not None
    meta = trials.meta
    assert meta["subject"].tolist()[0] == "1" and set(meta["run"]) == {"4", "8"}
    assert set(meta["dataset"]) == {"mini_mmi"} and set(meta["task"]) == {"imagery_lr"}
    # values: the same samples as reading the file directly (EDF-quantised, float32)
    raw = mne.io.read_raw_edf(data / "S002" / "S002R08.edf", preload=True, verbose="error")
    first = int(np.flatnonzero((meta["subject"] == "2") & (meta["run"] == "8"))[0])
    start = int(round((2.0 + 0.5) * SFREQ))
    np.testing.assert_allclose(trials.X[first], raw.get_data()[:, start:start + 320],
                               rtol=1e-6, atol=1e-12)
    assert meta["onset"][first] == pytest.approx(2.0)

    ff = card.load(task="imagery_ff", subjects=[2], cache=False)
    assert ff.classes == ["hands", "feet"] and set(ff.meta["subject"]) == {"2"}
    assert ff.label_names.tolist() == [{"T1": "hands", "T2": "feet"}[x] for x in truth[(2, 6)]]

    both = load_dataset(card_path, task="all4", subjects="1", cache=False, tmin=0.0, tmax=0.5)
    assert both.classes == ["left_hand", "right_hand", "hands", "feet"]
    assert both.X.shape[2] == 80
    by_run = {r: both.label_names[both.meta["run"].to_numpy() == str(r)].tolist()
              for r in (4, 6, 8)}
    assert by_run[6] == [{"T1": "hands", "T2": "feet"}[x] for x in truth[(1, 6)]]
    assert by_run[4] == [{"T1": "left_hand", "T2": "right_hand"}[x] for x in truth[(1, 4)]]

    with pytest.raises(ValueError, match=r"mini\.toml: subject 3 is not among"):
        card.load(subjects=[3], cache=False)
    with pytest.raises(ValueError, match=r"mini\.toml: no task 'x'"):
        card.load(task="x", cache=False)


def test_subjects_with_different_channels_stay_apart(tmp_path):
    write_physionet(tmp_path / "data", runs=(4, 8), n_chans={1: 5, 2: 4})
    card = load_card(write_card(tmp_path / "c.toml", root=str(tmp_path / "data")))
    out = card.load(cache=False)
    assert isinstance(out, dict) and sorted(out) == ["1", "2"]
    assert out["1"].n_chans == 5 and out["2"].n_chans == 4


def test_event_absent_from_every_run_is_an_error(physionet):
    card_path, _, _ = physionet
    text = card_path.read_text().replace('events = { T1 = "hands", T2 = "feet" }\ntmin',
                                         'events = { T1 = "hands", T3 = "feet" }\ntmin', 1)
    card_path.write_text(text)
    with pytest.raises(ValueError, match=r"mini\.toml: \[tasks\.imagery_ff\] event\(s\) \['T3'\] "
                                         r".*none of its 2 recording.*\['T0', 'T1', 'T2'\]"):
        load_card(card_path).load(task="imagery_ff", cache=False)


def test_missing_files_name_card_path_and_obtain(tmp_path):
    card = load_card(write_card(tmp_path / "c.toml", root=str(tmp_path / "nowhere"),
                                fetcher='fetcher = "mne.eegbci"'))
    expected = tmp_path / "nowhere" / "S001" / "S001R04.edf"
    with pytest.raises(FileNotFoundError) as info:
        card.load(cache=False)
    text = str(info.value)
    assert "c.toml" in text and str(expected) in text and "4 file(s)" in text
    assert "Copy them from the lab share." in text and "download=True" in text


def test_fetcher_never_runs_when_files_are_present(physionet, monkeypatch):
    card_path, data, _ = physionet
    write_card(card_path, root="data", fetcher='fetcher = "mne.eegbci"')

    def no_network(*args, **kwargs):
        raise AssertionError("the fetcher was called although the files are present")

    monkeypatch.setitem(cards_mod._FETCHERS, "mne.eegbci", no_network)
    monkeypatch.setattr(mne.datasets.eegbci, "load_data", no_network)
    trials = load_card(card_path).load(download=True, cache=False)
    assert len(trials) > 0

    # with a file missing, the fetcher runs only when downloads are allowed
    missing = data / "S002" / "S002R08.edf"
    kept = missing.read_bytes()
    missing.unlink()
    with pytest.raises(FileNotFoundError, match="S002R08.edf"):
        load_card(card_path).load(cache=False)
    calls = []

    def fake_fetch(card, recs, root, verbose):
        calls.append([(r.subject, r.run) for r in recs])
        missing.write_bytes(kept)

    monkeypatch.setitem(cards_mod._FETCHERS, "mne.eegbci", fake_fetch)
    again = load_card(card_path).load(download=True, cache=False)
    assert calls == [[(2, 8)]]
    np.testing.assert_array_equal(again.X, trials.X)


def test_eegbci_fetcher_calls_mne_with_the_card_root(tmp_path, monkeypatch):
    root = tmp_path / "mne" / "MNE-eegbci-data" / "files" / "eegmmidb" / "1.0.0"
    card = load_card(write_card(tmp_path / "c.toml", root=str(root),
                                fetcher='fetcher = "mne.eegbci"'))
    calls = []

    def fake_load_data(subject, runs, *, path, update_path, verbose=None):
        calls.append((subject, runs, path, update_path))
        folder = Path(path, *cards_mod._EEGBCI_SUFFIX)
        write_physionet(folder, subjects=(subject,), runs=runs)

    monkeypatch.setattr(mne.datasets.eegbci, "load_data", fake_load_data)
    trials = card.load(task="imagery_ff", download=True, cache=False)
    assert calls == [(1, [6], str(tmp_path / "mne"), False), (2, [6], str(tmp_path / "mne"), False)]
    assert trials.classes == ["hands", "feet"]
    wrong = load_card(write_card(tmp_path / "w.toml", root=str(tmp_path / "x"),
                                 fetcher='fetcher = "mne.eegbci"'))
    with pytest.raises(ValueError, match=r"w\.toml: \[files\] fetcher 'mne.eegbci' stores"):
        wrong.load(download=True, cache=False)


def test_cache_hit_on_second_load(physionet, tmp_path, monkeypatch):
    pytest.importorskip("bcikit.data.cache")
    card_path, _, _ = physionet
    store = tmp_path / "cache"
    first = load_card(card_path).load(cache=store)
    assert any(store.iterdir())

    def fail(*args, **kwargs):
        raise AssertionError("read_raw called on a cache hit")

    monkeypatch.setattr(eeg_mod, "read_raw", fail)
    second = load_card(card_path).load(cache=store)
    np.testing.assert_array_equal(np.asarray(second.X), first.X)
    np.testing.assert_array_equal(second.y, first.y)
    assert second.meta["subject"].tolist() == first.meta["subject"].tolist()
    assert second.classes == first.classes and second.ch_names == first.ch_names
    # another window is another entry: it has to read the files
    with pytest.raises(AssertionError, match="read_raw called"):
        load_card(card_path).load(cache=store, tmax=2.0)


# ------------------------------------------------------------------------------------- MOABB
BNCI_EEG = ["Fz", "FC3", "FC1", "FCz", "FC2", "FC4", "C5", "C3", "C1", "Cz", "C2", "C4", "C6",
            "CP3", "CP1", "CPz", "CP2", "CP4", "P1", "Pz", "P2", "POz"]


class FakeBNCI2014_001:
    """Stands in for moabb.datasets.BNCI2014_001: 2 sessions x 2 runs of generated raws shaped
    like the real ones (22 EEG + 3 EOG + stim at 250 Hz, 12 trials per run, codes 1-4 at each
    trial start). Like MOABB's ``get_data``, it also annotates each trial with its class name
    at the start of ``interval`` (2 s after the trial start), lasting 4 s."""

    calls: list = []
    event_id = {"left_hand": 1, "right_hand": 2, "feet": 3, "tongue": 4}
    interval = [2, 6]
    subject_list = list(range(1, 10))
    with_stim = True

    def get_data(self, subjects):
        FakeBNCI2014_001.calls.append((list(subjects), os.environ.get("MOABB_DOWNLOAD_PROVIDER")))
        out = {}
        for s in subjects:
            out[s] = {sess: {str(r): self._run(s, si, r) for r in range(2)}
                      for si, sess in enumerate(["0train", "1test"])}
        return out

    @staticmethod
    def _run(subject, session, run):
        rng = np.random.default_rng(1000 * subject + 10 * session + run)
        sfreq, n = 250.0, 250 * 100
        codes = np.tile([1, 2, 3, 4], 3)
        rng.shuffle(codes)
        stim = np.zeros(n)
        stim[(np.arange(12) * 8 + 1) * 250] = codes
        data = np.vstack([rng.normal(0, 10e-6, (25, n)), stim])
        info = mne.create_info(BNCI_EEG + ["EOG1", "EOG2", "EOG3", "stim"], sfreq,
                               ["eeg"] * 22 + ["eog"] * 3 + ["stim"])
        raw = mne.io.RawArray(data, info, verbose="error")
        names = {v: k for k, v in FakeBNCI2014_001.event_id.items()}
        starts = np.arange(12) * 8 + 1.0
        raw.set_annotations(mne.Annotations(starts + 2.0, np.full(12, 4.0),
                                            [names[c] for c in codes]))
        if not FakeBNCI2014_001.with_stim:
            raw.drop_channels(["stim"])
        return raw


@pytest.fixture
def fake_moabb(monkeypatch):
    module = types.ModuleType("moabb.datasets")
    module.BNCI2014_001 = FakeBNCI2014_001
    monkeypatch.setitem(sys.modules, "moabb.datasets", module)
    monkeypatch.setattr(FakeBNCI2014_001, "calls", [])
    return FakeBNCI2014_001


@pytest.mark.parametrize("with_stim", [True, False], ids=["stim", "annotations-only"])
def test_bnci_card_through_fake_moabb(tmp_path, fake_moabb, monkeypatch, with_stim):
    monkeypatch.setattr(fake_moabb, "with_stim", with_stim)
    card = load_card(REPO / "datasets" / "bnci2014_001.toml")
    for name in ("A01T.mat", "A01E.mat"):  # the files MOABB keeps, present
        (tmp_path / name).write_bytes(b"")
    trials = card.load(root=tmp_path, subjects=[1], cache=False)
    assert fake_moabb.calls == [([1], "upstream")]  # MOABB told not to consult its mirror
    assert trials.X.shape == (48, 22, 1000)  # 2 sessions x 2 runs x 12 trials, 4 s at 250 Hz
    assert trials.sfreq == 250.0 and trials.ch_names == BNCI_EEG
    assert trials.classes == ["left_hand", "right_hand", "feet", "tongue"]
    assert np.bincount(trials.y).tolist() == [12, 12, 12, 12]
    assert set(trials.meta["session"]) == {"0train", "1test"} and set(trials.meta["run"]) == {
        "0", "1"}
    # trial k starts at (8k + 1) s; the window is 2-6 s after it (the cue), whatever MOABB's
    # own annotations (already shifted to the cue) say
    raw = FakeBNCI2014_001._run(1, 0, 0)
    np.testing.assert_allclose(trials.X[0], raw.get_data()[:22, 750:1750], rtol=1e-6)
    np.testing.assert_allclose(trials.meta["onset"][:3], [1, 9, 17])
    assert "MOABB_DOWNLOAD_PROVIDER" not in os.environ or os.environ[
        "MOABB_DOWNLOAD_PROVIDER"] != "upstream"

    lr = card.load(root=tmp_path, subjects=[1], task="imagery_lr", cache=False)
    assert len(lr) == 24 and lr.classes == ["left_hand", "right_hand"]


def test_bnci_card_downloads_only_when_allowed(tmp_path, fake_moabb):
    card = load_card(REPO / "datasets" / "bnci2014_001.toml")
    with pytest.raises(FileNotFoundError, match=r"bnci2014_001\.toml.*A02T\.mat.*download=True"):
        card.load(root=tmp_path, subjects=[2], cache=False)
    assert fake_moabb.calls == []
    trials = card.load(root=tmp_path, subjects=[2], cache=False, download=True)
    assert fake_moabb.calls == [([2], None)] and len(trials) == 48


def test_unknown_moabb_class_names_the_card(tmp_path, fake_moabb):
    path = tmp_path / "m.toml"
    path.write_text((REPO / "datasets" / "bnci2014_001.toml").read_text().replace(
        "moabb:BNCI2014_001", "moabb:Nope2000"))
    with pytest.raises(ValueError, match=r"m\.toml: \[files\] fetcher 'moabb:Nope2000'"):
        load_card(path).load(root=tmp_path, subjects=[1], download=True, cache=False)
