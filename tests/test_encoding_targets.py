"""Events (bcikit.encoding.events) and binned targets (bcikit.encoding.targets)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bcikit.encoding.events import EVENT_COLUMNS, make_events
from bcikit.encoding.targets import (
    N_BINS,
    bin_edges,
    bin_times,
    binned_targets,
    make_targets,
)
from bcikit.simulate.movie_seeg import _gamma_kernel, simulate_movie_seeg

SFREQ = 512.0


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("targets") / "release"
    return simulate_movie_seeg(root, n_subjects=1, n_electrodes=20, duration=300.0,
                               sfreq=SFREQ, snr=4.0, seed=11)


@pytest.fixture(scope="module")
def session(sim):
    return sim.session("1")


def _naive(x, samples, sfreq, start=-2.0, step=0.025, width=0.2, n_bins=N_BINS):
    """Window means by a plain loop, edges rounded half up on their own."""
    out = np.empty((len(samples), x.shape[0], n_bins))
    for i, s in enumerate(samples):
        for k in range(n_bins):
            t0 = round((start + k * step) * 1000, 6)
            lo = int(np.floor(t0 * sfreq / 1000 + 0.5))
            hi = int(np.floor((t0 + width * 1000) * sfreq / 1000 + 0.5))
            out[i, :, k] = x[:, s + lo:s + hi].mean(axis=1)
    return out


# ------------------------------------------------------------------------------------- bins
def test_bin_times_and_edges():
    times = bin_times()
    assert times.shape == (161,) and times[0] == -2000 and times[-1] == 2000
    assert np.all(np.diff(times) == 25)
    lo, hi = bin_edges(2048.0)
    assert lo[0] == -4096 and hi[0] == -3686  # -1.8 s * 2048 = -3686.4
    assert lo[1] == -4045                     # -1.975 s * 2048 = -4044.8
    assert hi[-1] == 4506                     # 2.2 s * 2048 = 4505.6: the epoch ends at +2.2 s
    # edges are rounded independently, halves upwards: -1.975 s at 500 Hz is -987.5 -> -987
    lo500, hi500 = bin_edges(500.0)
    assert lo500[1] == -987 and hi500[1] == -887
    assert set(hi500 - lo500) == {100}
    assert set(hi - lo) <= {409, 410}


@pytest.mark.parametrize("sfreq", [2048.0, 512.0, 500.0])
def test_binned_targets_equal_naive_loop(sfreq, rng):
    n = int(12 * sfreq)
    x = rng.standard_normal((3, n)).cumsum(axis=1) + 5000.0  # drifting, large offset
    samples = np.sort(rng.integers(int(2.1 * sfreq), n - int(2.3 * sfreq), 25))
    got = binned_targets(x, samples, sfreq)
    ref = _naive(x, samples, sfreq)
    assert got.shape == (25, 3, 161)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)


def test_binned_targets_refuses_windows_outside(rng):
    x = rng.standard_normal((1, 5000))
    with pytest.raises(ValueError, match="leaving the recording"):
        binned_targets(x, np.array([100]), 512.0)
    with pytest.raises(ValueError, match="integer event samples"):
        binned_targets(x, np.array([2000.0]), 512.0)


def test_peak_latency_of_known_responses(rng):
    """Responses peaking at known latencies: the bin whose window is centred on the peak wins."""
    sfreq = 1000.0
    latencies = np.array([150.0, 275.0, 390.0])
    n = 200_000
    onsets = np.arange(3000, n - 3000, 4000)
    amp = rng.uniform(0.5, 1.5, onsets.size)
    x = 0.2 * rng.standard_normal((3, n))
    local = np.arange(-1000, 1000)
    for c, lat in enumerate(latencies):
        bump = np.exp(-0.5 * ((local - lat) / 60.0) ** 2)
        for s, a in zip(onsets, amp):
            x[c, s - 1000:s + 1000] += a * bump
    Y = binned_targets(x, onsets, sfreq)
    peak = bin_times()[Y.mean(axis=0).argmax(axis=1)] + 100  # window centre
    assert np.all(np.abs(peak - latencies) <= 25)


# ------------------------------------------------------------------------------------ events
def test_language_events(sim, session):
    ev = make_events(session, "language")
    assert list(ev.columns) == list(EVENT_COLUMNS)
    words = session.words()
    assert len(ev) == len(words)  # the recording extends well beyond every window
    assert np.all(np.diff(ev["time"]) >= 0) and np.all(np.diff(ev["sample"]) >= 0)
    np.testing.assert_array_equal(ev["event"], np.arange(len(ev)))
    np.testing.assert_array_equal(ev["sample"], words["sample"])
    assert (ev["text"] == words["sentence"]).all() and (ev["word"] == words["text"]).all()
    np.testing.assert_array_equal(ev["sentence_idx"], words["sentence_idx"])
    assert (ev["alignment"] == "language").all() and (ev["frame"] == -1).all()
    assert ev["image"].isna().all()
    cuts = session.scene_cuts()["time"].to_numpy()
    np.testing.assert_array_equal(ev["scene_idx"], np.searchsorted(cuts, ev["time"], "right"))


def test_vision_events_take_closest_preceding_sentence(session):
    ev = make_events(session, "vision", fps=24.0, frame_pattern="{movie}/{frame:06d}.jpg")
    cuts = session.scene_cuts()
    words = session.words(columns=("text", "start", "sentence", "sentence_idx"))
    assert len(ev) == len(cuts)
    for _, row in ev.iterrows():
        before = words[words["start"] <= row["time"]]
        if before.empty:
            assert row["text"] == "" and row["sentence_idx"] == -1
        else:
            assert row["text"] == before["sentence"].iloc[-1]
            assert row["sentence_idx"] == before["sentence_idx"].iloc[-1]
    assert (ev["word"] == "").all()
    # first frame at or after the cut; its number names the image
    assert np.all(ev["frame"] == np.ceil(np.round(ev["time"] * 24.0, 9)))
    assert np.all(ev["frame_time"] >= ev["time"] - 1e-9)
    assert ev["image"].iloc[0] == f"sim-movie/{ev['frame'].iloc[0]:06d}.jpg"
    # scene index: the cut opens a new scene
    np.testing.assert_array_equal(ev["scene_idx"], np.arange(1, len(ev) + 1))


def test_events_whose_window_leaves_the_recording_are_dropped(session):
    ev = make_events(session, "language")
    long = make_events(session, "language", tmin=-30.0, tmax=2.2)
    first = ev["sample"] + int(np.floor(-30.0 * SFREQ + 0.5))
    assert len(long) == int((first >= 0).sum()) and len(long) < len(ev)
    assert np.all(long["sample"] + int(-30.0 * SFREQ) >= 0)
    with pytest.raises(ValueError, match="alignment"):
        make_events(session, "audio")
    with pytest.raises(ValueError, match="tmax > tmin"):
        make_events(session, "vision", tmin=1.0, tmax=0.5)
    with pytest.raises(ValueError, match="fps"):
        make_events(session, "vision", frame_pattern="{frame}.jpg")


# ----------------------------------------------------------------------------------- targets
def test_make_targets_equals_naive_loop_on_the_recording(session):
    ev = make_events(session, "vision")
    picks = session.ch_names[:3]
    tg = make_targets(session, ev, picks=picks, dtype=np.float64)
    assert tg.Y.shape == (len(ev), 3 * 161)
    np.testing.assert_array_equal(tg.times, bin_times())
    x = session.get_data(picks)
    ref = _naive(x, ev["sample"].to_numpy(), session.sfreq)
    np.testing.assert_allclose(tg.cube(), ref, rtol=0, atol=1e-6)
    # electrode-major columns
    np.testing.assert_allclose(tg.Y[:, 161:322], ref[:, 1, :], atol=1e-6)
    assert tg.target_names()[161] == f"{picks[1]}@-2000"
    assert list(tg.electrodes["name"]) == picks
    assert tg.config["signal"] == "broadband" and tg.config["reference"] is None


def test_peak_latencies_recovered_on_simulated_recording(sim, session):
    """Vision electrodes answer scene cuts with gamma kernels: regressing their binned targets
    on the true drive at each cut recovers where the binned response peaks (the centre of the
    best 200-ms window of the kernel, from the truth) within 25 ms, and the response's size
    (``snr * cut_gain`` times the kernel's best window mean)."""
    ev = make_events(session, "vision")
    truth = sim.truth.set_index("electrode")
    names = [n for n in session.ch_names if truth.at[n, "class"] == "vision"]
    assert len(names) >= 3
    tg = make_targets(session, ev, picks=names)
    drive = sim.drives("1", ev)[:, [session.ch_names.index(n) for n in names]]
    Y = tg.cube().astype(np.float64)
    for j, name in enumerate(names):
        d = drive[:, j] - drive[:, j].mean()
        beta = d @ (Y[:, j, :] - Y[:, j, :].mean(axis=0)) / (d @ d)
        found = tg.times[np.argmax(beta)] + 100
        assert abs(found - truth.at[name, "window_peak_ms"]) <= 25, name
        assert 100 <= truth.at[name, "peak_ms"] <= 400
        # its size: snr * cut_gain (x 20 uV, the noise SD) times the kernel's best 200-ms mean
        kernel = _gamma_kernel(truth.at[name, "peak_ms"], truth.at[name, "width_ms"], SFREQ)
        n = int(round(0.2 * SFREQ))
        expected = 20.0 * sim.params["snr"] * sim.params["cut_gain"] * np.convolve(
            kernel, np.ones(n) / n).max()
        assert 0.85 * expected <= beta.max() <= 1.05 * expected, (name, beta.max(), expected)


def test_reference_options(session):
    ev = make_events(session, "vision").iloc[:12]
    samples = ev["sample"].to_numpy()
    shaft = session.electrodes["shaft"].iloc[0]
    picks = list(session.electrodes.loc[session.electrodes["shaft"] == shaft, "name"])
    assert len(picks) >= 3
    x = session.get_data(picks)
    sf = session.sfreq

    car = make_targets(session, ev, picks=picks, reference="car", dtype=np.float64)
    np.testing.assert_allclose(car.cube(), _naive(x - x.mean(axis=0), samples, sf), atol=1e-6)

    scar = make_targets(session, ev, picks=picks, reference="shaft_car", dtype=np.float64)
    np.testing.assert_allclose(scar.cube(), car.cube(), atol=1e-6)  # one shaft: the same

    contacts = [int(c) for c in session.electrodes.set_index("name").loc[picks, "contact"]]
    bip = make_targets(session, ev, picks=picks, reference="bipolar", dtype=np.float64)
    pairs = [(i, i + 1) for i in range(len(picks) - 1) if contacts[i + 1] - contacts[i] == 1]
    assert list(bip.electrodes["name"]) == [f"{picks[a]}-{picks[b]}" for a, b in pairs]
    ref = _naive(np.array([x[a] - x[b] for a, b in pairs]), samples, sf)
    np.testing.assert_allclose(bip.cube(), ref, atol=1e-6)
    assert list(bip.electrodes["cathode"]) == [picks[b] for _, b in pairs]

    lap = make_targets(session, ev, picks=picks, reference="laplacian", dtype=np.float64)
    rows = []
    for i, c in enumerate(contacts):
        nbrs = [j for j, cj in enumerate(contacts) if abs(cj - c) == 1]
        if nbrs:
            rows.append(x[i] - x[nbrs].mean(axis=0))
    np.testing.assert_allclose(lap.cube(), _naive(np.array(rows), samples, sf), atol=1e-6)

    with pytest.raises(ValueError, match="reference"):
        make_targets(session, ev, picks=picks, reference="average")


def test_signal_options(session):
    ev = make_events(session, "vision").iloc[:10]
    samples = ev["sample"].to_numpy()
    name = session.ch_names[1]
    x = session.get_data([name])
    sf = session.sfreq
    z = make_targets(session, ev, picks=[name], signal="zscore", dtype=np.float64)
    np.testing.assert_allclose(z.cube(), _naive((x - x.mean()) / x.std(), samples, sf),
                               atol=1e-6)
    d = make_targets(session, ev, picks=[name], signal="despike", despike_threshold=2.0,
                     dtype=np.float64)
    med = np.median(x)
    mad = 1.4826 * np.median(np.abs(x - med))
    ref = _naive(np.clip(x, med - 2 * mad, med + 2 * mad), samples, sf)
    np.testing.assert_allclose(d.cube(), ref, atol=1e-6)
    from bcikit.io.ieeg import high_gamma

    hg = make_targets(session, ev, picks=[name], signal="high_gamma",
                      high_gamma_kw={"n_bands": 1}, dtype=np.float64)
    ref = _naive(high_gamma(x, sfreq=sf, n_bands=1), samples, sf)
    np.testing.assert_allclose(hg.cube(), ref, rtol=1e-6, atol=1e-9)
    assert hg.config["high_gamma_kw"] == {"n_bands": 1}
    with pytest.raises(ValueError, match="signal"):
        make_targets(session, ev, signal="gamma")
    with pytest.raises(ValueError, match="high_gamma_kw"):
        make_targets(session, ev, signal="zscore", high_gamma_kw={"n_bands": 2})


def test_make_targets_checks_events(session):
    ev = make_events(session, "vision")
    with pytest.raises(ValueError, match="time order"):
        make_targets(session, ev.iloc[::-1])
    with pytest.raises(ValueError, match="'sample'"):
        make_targets(session, ev.drop(columns="sample"))
    with pytest.raises(ValueError, match="leaving the recording"):
        make_targets(session, pd.DataFrame({"sample": [10]}))
    with pytest.raises(ValueError, match="not among"):
        make_targets(session, ev, picks=["XYZ1"])
