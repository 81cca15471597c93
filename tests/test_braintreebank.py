"""Brain Treebank reader (bcikit.io.braintreebank) on files the movie simulator writes."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from bcikit.io.braintreebank import (
    BrainTreebankLayout,
    clean_label,
    fetch_braintreebank,
    read_braintreebank,
    read_session,
)
from bcikit.simulate.movie_seeg import simulate_movie_seeg

SFREQ = 512.0


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("btb") / "release"
    return simulate_movie_seeg(root, n_subjects=2, n_electrodes=20, duration=120.0,
                               sfreq=SFREQ, snr=1.0, seed=3)


@pytest.fixture(scope="module")
def session(sim):
    return read_session(sim.root, 1, 0)


def _labels_in_file(sim, subject="1"):
    path = sim.root / "electrode_labels" / f"sub_{subject}" / "electrode_labels.json"
    return json.loads(path.read_text())


def test_session_metadata(sim, session):
    assert session.subject == "1" and session.trial == 0
    assert session.movie == sim.movie and session.title == "Simulated movie"
    assert session.sfreq == SFREQ
    n = sim.params["sessions"]["1"]["n_samples"]
    assert session.n_samples == n
    with h5py.File(session.path) as f:
        assert f["data/electrode_0"].shape == (n,)
    assert "sub_1" in repr(session)


def test_event_samples_within_one_sample_of_truth(sim, session):
    words = session.words()
    cuts = session.scene_cuts()
    for times, samples in ((words["start"], words["sample"]), (cuts["time"], cuts["sample"])):
        truth = sim.true_samples("1", times.to_numpy())
        err = samples.to_numpy() - truth
        assert np.abs(err).max() <= 1
        assert samples.dtype == np.int64
    # the reader's mapping is not the identity of the simulator's clock: errors of one sample
    # occur (triggers are jittered and the clock drifts), and they stay within one sample
    assert len(words) > 50 and len(cuts) > 10


def test_events_after_last_trigger_dropped(sim, session):
    last = session.triggers["movie_time"].iloc[-1]
    all_cuts = pd.read_csv(sim.root / "scene_annotations" / sim.movie / "scenes.csv")["start"]
    assert (all_cuts > last).sum() >= 1  # the simulator puts a cut after the last trigger
    cuts = session.scene_cuts()
    assert len(cuts) == int((all_cuts <= last).sum())
    assert cuts["time"].max() <= last
    words = session.words()
    assert words["start"].max() <= last
    samples, keep = session.movie_to_sample([last + 0.5, np.nan, last])
    assert keep.tolist() == [False, False, True]
    assert samples[0] == -1 and samples[1] == -1


def test_movie_to_sample_uses_nearest_trigger(session):
    trig = session.triggers
    rng = np.random.default_rng(0)
    times = rng.uniform(0, trig["movie_time"].iloc[-1], 200)
    samples, keep = session.movie_to_sample(times)
    assert keep.all()
    mt = trig["movie_time"].to_numpy()
    for t, s in zip(times, samples):
        k = int(np.argmin(np.abs(mt - t)))
        expected = trig["index"].iloc[k] + np.floor((t - mt[k]) * session.sfreq + 0.5)
        assert s == expected


def test_bad_and_trigger_electrodes_dropped_order_kept(sim, session):
    labels = [clean_label(x) for x in _labels_in_file(sim)]
    corrupted = json.loads((sim.root / "corrupted_elec.json").read_text())["sub_1"]
    assert len(corrupted) == 2
    assert session.dropped == {**{c: "corrupted" for c in corrupted}, "TRIG1": "trigger/DC"}
    expected = [lab for lab in labels if lab not in corrupted and lab != "TRIG1"]
    assert session.ch_names == expected
    assert len(expected) == 20
    # h5 indices point at the right datasets, in the label file's order
    assert list(session.electrodes["h5_index"]) == [labels.index(n) for n in expected]
    assert np.all(np.diff(session.electrodes["h5_index"]) > 0)
    picks = [expected[3], expected[0]]
    data = session.get_data(picks, 100, 700)
    with h5py.File(session.path) as f:
        for row, name in zip(data, picks):
            ref = f[f"data/electrode_{labels.index(name)}"][100:700]
            np.testing.assert_array_equal(row, ref.astype(np.float64))
    names = [n for n, _ in session.iter_data(picks)]
    assert names == picks
    with pytest.raises(ValueError, match="dropped: corrupted"):
        session.get_data([corrupted[0]])
    with pytest.raises(ValueError, match="start/stop"):
        session.get_data(picks, 10, 5)


def test_marked_labels_are_stripped(sim, session):
    raw = _labels_in_file(sim)
    assert any(("*" in x or "#" in x) for x in raw)  # the simulator marks some labels
    assert not any(("*" in x or "#" in x) for x in session.labels)
    assert clean_label(" LA1*# ") == "LA1"


def test_localization_and_regions(sim, session):
    truth = sim.truth[sim.truth["subject"] == "1"].set_index("electrode")
    table = session.electrodes.set_index("name")
    assert list(table.index) == sorted(table.index, key=list(session.ch_names).index)
    for name in table.index:
        assert table.at[name, "region"] == truth.at[name, "region"]
        np.testing.assert_allclose(table.loc[name, ["x", "y", "z"]].to_numpy(float),
                                   truth.loc[name, ["x", "y", "z"]].to_numpy(float), atol=1e-9)
        np.testing.assert_allclose(table.at[name, "x"], -table.at[name, "L"])
    assert table["shaft"].iloc[0] + str(table["contact"].iloc[0]) == table.index[0]
    raw = session.to_raw(session.ch_names[:3], 0, 1000)
    assert raw.get_channel_types() == ["seeg"] * 3
    np.testing.assert_allclose(raw.get_data(), session.get_data(session.ch_names[:3], 0,
                                                                1000) * 1e-6)
    pos = raw.get_montage().get_positions()["ch_pos"]
    np.testing.assert_allclose(pos[session.ch_names[0]] * 1000,
                               table.loc[session.ch_names[0], ["x", "y", "z"]].to_numpy(float))


def _copy_release(sim, tmp_path) -> Path:
    dest = tmp_path / "copy"
    shutil.copytree(sim.root, dest, ignore=shutil.ignore_patterns("truth", "sub_2*"))
    return dest


def test_missing_file_names_file_and_field(sim, tmp_path):
    root = _copy_release(sim, tmp_path)
    (root / "subject_timings" / "sub_1_trial000_timings.csv").unlink()
    with pytest.raises(ValueError, match=r"sub_1_trial000_timings\.csv.*'timings'"):
        read_session(root, 1, 0)
    with pytest.raises(ValueError, match=r"nothing\.json.*'labels'"):
        read_session(sim.root, 1, 0, layout={"labels": "nothing.json"})
    with pytest.raises(ValueError, match="sub_1_trial007.h5"):
        read_session(sim.root, 1, 7)
    with pytest.raises(ValueError, match="Unknown Brain Treebank layout field"):
        read_session(sim.root, 1, 0, layout={"scene_file": "x.csv"})


def test_missing_column_names_file_and_column(sim, tmp_path):
    root = _copy_release(sim, tmp_path)
    timings = root / "subject_timings" / "sub_1_trial000_timings.csv"
    pd.read_csv(timings).rename(columns={"index": "sample"}).to_csv(timings, index=False)
    with pytest.raises(ValueError, match=r"timings\.csv.*no column\(s\) \['index'\]"):
        read_session(root, 1, 0)
    # scene column from the layout (the card) is checked when the scenes are read
    session = read_session(sim.root, 1, 0, layout={"scene_column": "cut_time"})
    with pytest.raises(ValueError, match=r"scenes\.csv.*\['cut_time'\]"):
        session.scene_cuts()
    transcript = root / "transcripts" / sim.movie / "features.csv"
    pd.read_csv(transcript).drop(columns=["sentence"]).to_csv(transcript, index=False)
    good_timings = sim.root / "subject_timings" / "sub_1_trial000_timings.csv"
    session = read_session(root, 1, 0, layout={"timings": str(good_timings)})
    with pytest.raises(ValueError, match=r"features\.csv.*\['sentence'\]"):
        session.words(columns=("text", "start", "sentence"))


def test_dc_labels_dropped_and_custom_layout(sim, tmp_path):
    labels = _labels_in_file(sim)
    i = next(k for k, x in enumerate(labels) if clean_label(x) != "TRIG1")
    labels[i] = "DC4"
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(labels))
    session = read_session(sim.root, "1", "000", layout=BrainTreebankLayout(labels=str(path)))
    assert session.dropped["DC4"] == "trigger/DC"
    assert "DC4" not in session.ch_names and len(session.ch_names) == 19


def test_second_subject_has_its_own_clock(sim):
    s2 = read_session(sim.root, 2, 0)
    cuts = s2.scene_cuts()
    assert np.abs(cuts["sample"].to_numpy() - sim.true_samples("2", cuts["time"])).max() <= 1
    s1 = read_session(sim.root, 1, 0)
    assert not np.array_equal(cuts["sample"].to_numpy(), s1.scene_cuts()["sample"].to_numpy())


def test_card_and_format_reader(sim):
    from bcikit.io import load_card

    card = load_card(Path(__file__).resolve().parents[1] / "datasets" / "braintreebank.toml")
    assert card.format == "braintreebank" and card.fetcher == "braintreebank"
    assert card.reader_options["scene_column"] == "start"
    raw = read_braintreebank(sim.root / "sub_1_trial000.h5", **card.reader_options)
    session = read_session(sim.root, 1, 0)
    assert raw.ch_names == session.ch_names
    desc = list(raw.annotations.description)
    assert desc.count("word") == len(session.words())
    assert desc.count("scene_cut") == len(session.scene_cuts())
    trials = card.load(root=sim.root, subjects=1, task="scene_cuts", cache=False)
    cuts = session.scene_cuts()
    assert trials.X.shape[:2] == (len(cuts), 20)
    k = 2
    start = int(cuts["sample"].iloc[k]) + int(np.round(-2.0 * SFREQ))
    ref = session.get_data(None, start, start + trials.X.shape[2]) * 1e-6
    np.testing.assert_allclose(trials.X[k], ref, rtol=1e-6, atol=1e-12)


def test_fetcher_downloads_and_extracts(sim, tmp_path):
    """The download path, served from local file:// URLs in the release's archive layout."""
    server = tmp_path / "server"
    server.mkdir()
    for folder in ("localization", "subject_timings", "subject_metadata", "electrode_labels",
                   "transcripts", "scene_annotations"):
        with zipfile.ZipFile(server / f"{folder}.zip", "w") as zf:
            for p in sorted((sim.root / folder).rglob("*")):
                if p.is_file():
                    zf.write(p, p.relative_to(sim.root).as_posix())
    shutil.copy(sim.root / "corrupted_elec.json", server / "corrupted_elec.json")
    h5dir = server / "subject_data" / "sub_1" / "trial000"
    h5dir.mkdir(parents=True)
    with zipfile.ZipFile(h5dir / "sub_1_trial000.h5.zip", "w") as zf:
        zf.write(sim.root / "sub_1_trial000.h5", "nested/sub_1_trial000.h5")
    dest = tmp_path / "download"
    paths = fetch_braintreebank(dest, [(1, 0)], base_url=server.as_uri())
    assert paths == [dest / "sub_1_trial000.h5"]
    assert not (dest / "_archives").exists()
    got = read_session(dest, 1, 0)
    ref = read_session(sim.root, 1, 0)
    assert got.ch_names == ref.ch_names
    np.testing.assert_array_equal(got.get_data(got.ch_names[:2]), ref.get_data(ref.ch_names[:2]))
    pd.testing.assert_frame_equal(got.words(), ref.words())
    # a second call finds everything present and downloads nothing (the server is gone)
    shutil.rmtree(server)
    assert fetch_braintreebank(dest, [(1, 0)], base_url=server.as_uri()) == paths


def test_zip_member_outside_root_refused(tmp_path):
    from bcikit.io.braintreebank import _extract

    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(ValueError, match="outside"):
        _extract(bad, tmp_path / "root")
