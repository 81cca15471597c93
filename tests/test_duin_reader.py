"""Reader of the public Du-IN layout (restricted unpickler) and its dataset card."""

from __future__ import annotations

import io
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from bcikit.io.cards import load_card
from bcikit.io.formats import duin
from bcikit.simulate.seeg_words import make_seeg_words

CARD = Path(__file__).resolve().parents[1] / "datasets" / "duin_xuanwu.toml"


@pytest.fixture(scope="module")
def sim():
    return make_seeg_words(size="tiny", n_words=4, n_trials_per_word=4, pretrain_minutes=0,
                           random_state=0)


@pytest.fixture
def layout(sim, tmp_path):
    base = duin.write_duin_layout(tmp_path, {"1": sim.trials["S01"], "2": sim.trials["S02"]})
    return tmp_path, base


def _fake_official_utils():
    """A stand-in for the official ``utils`` package: its DotDict (dict with attributes)."""
    mod = types.ModuleType("utils")

    class DotDict(dict):
        __getattr__ = dict.__getitem__
        __setattr__ = dict.__setitem__

    DotDict.__module__ = "utils"
    mod.DotDict = DotDict
    return mod


# ------------------------------------------------------------------------------------ round trip
def test_round_trip_through_the_layout(sim, layout):
    root, base = layout
    assert (base / "001" / "word-recitation" / "run1" / duin.RUN_SUBFOLDER / "data").is_file()
    assert duin.duin_runs(root, 1) == ["run1", "run2"]
    out = duin.load_duin(root)
    assert sorted(out) == ["001", "002"]
    for sid, subject in (("001", "S01"), ("002", "S02")):
        src, got = sim.trials[subject], out[sid]
        np.testing.assert_array_equal(got.X, src.X)  # runs written and read in order
        assert got.ch_names == src.ch_names
        assert got.classes == sorted(set(src.meta["word"]))  # word names -> classes, sorted
        assert list(got.label_names) == list(src.label_names)
        assert list(got.meta["run"]) == list(src.meta["run"])  # <run> -> meta.run
        assert set(got.meta["subject"]) == {sid}
        assert got.tmin == -0.5 and got.sfreq == 1000.0
    # one run, a channel subset in a given order
    run = duin.read_duin_run(base / "001" / "word-recitation" / "run2",
                             channels=sim.trials["S01"].ch_names[3:0:-1])
    keep = (sim.trials["S01"].meta["run"] == "run2").to_numpy()
    np.testing.assert_array_equal(run.X, sim.trials["S01"].X[keep][:, 3:0:-1])
    assert set(run.meta["run"]) == {"run2"} and set(run.meta["subject"]) == {"001"}


def test_files_are_what_the_official_loader_reads(layout, monkeypatch):
    """Plain pickle with the official ``utils.DotDict`` importable reads the written files."""
    _, base = layout
    monkeypatch.setitem(sys.modules, "utils", _fake_official_utils())
    folder = base / "002" / "word-recitation" / "run1" / duin.RUN_SUBFOLDER
    with open(folder / "data", "rb") as f:
        trials = pickle.load(f)  # the official load_pickle
    with open(folder / "info", "rb") as f:
        info = pickle.load(f)
    assert type(trials[0]).__name__ == "DotDict"
    assert isinstance(trials[0].name, str)
    assert trials[0].data_s.shape == (len(info.ch_names), 3000)
    assert trials[0].data_n.shape == trials[0].data_s.shape
    X = np.stack([t.data_s.T for t in trials])  # (n_samples, seq_len, n_channels) as official
    ours = duin.read_duin_run(folder.parent)
    np.testing.assert_allclose(X.transpose(0, 2, 1), ours.X)


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_other_pickle_protocols(sim, tmp_path, protocol):
    ts = sim.trials["S01"]
    run = tmp_path / "003" / "word-recitation" / "runA"
    duin.write_duin_run(run, ts.X[:3], ts.label_names[:3], ts.ch_names, protocol=protocol,
                        dotdict_module="duin_utils")
    got = duin.read_duin_run(run)
    np.testing.assert_array_equal(got.X, ts.X[:3])
    assert list(got.meta["run"]) == ["runA"] * 3 and set(got.meta["subject"]) == {"003"}


# ------------------------------------------------------------------------------------ safety
class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_not_run(sim, tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps([_Evil(marker)]))
    with pytest.raises(ValueError, match="evil.pkl") as err:
        duin.safe_load_pickle(bad)
    assert "system" in str(err.value)
    assert not marker.exists()
    # inside a run folder: the reader names the data file
    ts = sim.trials["S01"]
    run = tmp_path / "001" / "word-recitation" / "run1"
    folder = duin.write_duin_run(run, ts.X[:2], ts.label_names[:2], ts.ch_names)
    (folder / "data").write_bytes(pickle.dumps({"x": _Evil(marker)}))
    with pytest.raises(ValueError, match=r"run1/dataset\.bipolar\.default\.unaligned/data"):
        duin.read_duin_run(run)
    assert not marker.exists()
    # any other class is refused too, even harmless ones
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps(io.BytesIO(b"x")))
    with pytest.raises(ValueError, match="other.pkl.*_io.BytesIO"):
        duin.safe_load_pickle(other)
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="garbage.pkl"):
        duin.safe_load_pickle(garbage)


def test_reader_errors_name_the_file(sim, layout, tmp_path):
    root, base = layout
    run = base / "001" / "word-recitation" / "run1"
    with pytest.raises(ValueError, match=r"info.*not among the run's"):
        duin.read_duin_run(run, channels=["NOPE1"])
    with pytest.raises(ValueError, match="'001'.*no official|not among"):
        duin.load_duin(root, [1], channels="official")  # simulated names are not the official
    with pytest.raises(FileNotFoundError, match="Du-IN trial file"):
        duin.read_duin_run(tmp_path / "nowhere")
    ts = sim.trials["S01"]
    bad = tmp_path / "009" / "word-recitation" / "run1"
    folder = duin.write_duin_run(bad, ts.X[:2], ts.label_names[:2], ts.ch_names)
    with open(folder / "data", "rb") as f:
        raw = f.read()
    trials = duin._RestrictedUnpickler(io.BytesIO(raw), folder / "data").load()
    trials[0]["data_s"] = trials[0]["data_s"][:, :100]
    (folder / "data").write_bytes(pickle.dumps(trials))
    with pytest.raises(ValueError, match=r"data.*trial 0 data_s must be"):
        duin.read_duin_run(bad)


# ------------------------------------------------------------------------------------ card
def test_card_validates_and_flags_official_channels():
    card = load_card(CARD)
    assert card.name == "duin_xuanwu" and card.format == "duin" and card.modality == "ieeg"
    assert len(card.subjects) == 12
    assert "huggingface.co/datasets/liulab-repository/Du-IN" in card.obtain
    official = card.selections["official"]
    assert "selected with test data" in official["note"]
    assert official["channels"]["11"] == duin.OFFICIAL_CHANNELS["011"]
    assert all(len(v) == 10 for v in official["channels"].values())
    assert card.tasks["words_official"].selection == "official"
    assert "selected with test data" in duin.OFFICIAL_CHANNELS_NOTE


def test_card_loads_the_layout_and_never_downloads_unasked(sim, layout, tmp_path):
    root, _ = layout
    card = load_card(CARD)
    out = card.load(root=root, subjects=[1, 2], cache=False)
    assert sorted(out) == ["001", "002"]
    np.testing.assert_array_equal(out["001"].X, sim.trials["S01"].X)
    assert set(out["002"].meta["dataset"]) == {"duin_xuanwu"}
    assert set(out["002"].meta["task"]) == {"words"}
    with pytest.raises(FileNotFoundError, match="download=True"):
        card.load(root=tmp_path / "empty", subjects=[3], cache=False)


def test_card_official_selection(sim, tmp_path):
    """``task="words_official"`` keeps the official list, in its order."""
    ts = sim.trials["S01"]
    names = list(duin.OFFICIAL_CHANNELS["001"])
    extra = ["X1", "X2"]
    X = np.random.default_rng(0).standard_normal((4, len(names) + 2, 3000))
    words = ts.label_names[:4]
    duin.write_duin_run(tmp_path / "data" / "seeg.he2023xuanwu" / "001" / "word-recitation" / "r1",
                        X, words, extra + names[::-1])
    card = load_card(CARD)
    got = card.load(root=tmp_path, subjects=[1], task="words_official", cache=False)
    assert got.ch_names == names
    np.testing.assert_allclose(got.X, X[:, 2:][:, ::-1].astype(np.float32))
    full = card.load(root=tmp_path, subjects=[1], task="words", cache=False)
    assert full.n_chans == 12


def test_card_region_map_and_selection_validation(tmp_path):
    text = CARD.read_text()
    card_path = tmp_path / "c.toml"
    card_path.write_text(text + '\n[regions.1]\nvSMC = ["SM8", "SM9"]\nSTG = ["ST1"]\n')
    card = load_card(card_path)
    assert card.regions == {"1": {"vSMC": ["SM8", "SM9"], "STG": ["ST1"]}}
    card_path.write_text(text + '\n[regions.99]\nvSMC = ["A1"]\n')
    with pytest.raises(ValueError, match=r"\[regions\.99\].*not among"):
        load_card(card_path)
    card_path.write_text(text.replace('selection = "official"', 'selection = "mine"'))
    with pytest.raises(ValueError, match="selection 'mine'"):
        load_card(card_path)
