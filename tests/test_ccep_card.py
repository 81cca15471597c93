"""The CCEP sEEG card (datasets/realdata_ccep_sub01.toml) on the real recording in
../shared/realdata/ccep_seeg_ieeglab (PROVENANCE.md section 3); skipped when it is absent.

Checks: 120 trials, 10 classes x 12, 10 bipolar sEEG channels; the 1000 Hz task gives Du-IN's
whole 100-sample tokens; every trial matches a row of events.tsv (onset and site); the bipolar
samples equal anode - cathode of the monopolar FIF, baseline-corrected; and shrinkage LDA on the
evoked response decodes the stimulated site far above chance (10 %) under a class-balanced
chronological 4-fold split, with a binomial bound, and above the pre-stimulus control.
The control matters. Sites were stimulated in blocks, so the state of the recording identifies
the site. Covariance features of the pre-stimulus window classify it perfectly
(tangent space + logistic regression: 120/120). Mean-waveform features of the same window reach
24/120, against 119/120 after the pulse.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

mne = pytest.importorskip("mne")
pd = pytest.importorskip("pandas")

from bcikit.data import get_protocol  # noqa: E402
from bcikit.io import load_card  # noqa: E402

pytestmark = pytest.mark.realdata
CARD = Path(__file__).resolve().parents[1] / "datasets" / "realdata_ccep_sub01.toml"
FIF = "DERIVED_sub-01_ccep_100Hz_raw.fif"
EVENTS = "sub-01_ses-ieeg01_task-ccep_run-01_events.tsv"
PAIRS = ["ROC1-ROC2", "ROC2-ROC3", "ROC3-ROC4", "ROC4-ROC5", "ROC6-ROC7", "ROC7-ROC8",
         "ROC8-ROC9", "ROC9-ROC10", "ROC11-ROC12", "ROC12-ROC13"]


@pytest.fixture(scope="module")
def ccep(realdata):
    folder = realdata / "ccep_seeg_ieeglab"
    if not (folder / FIF).is_file():
        pytest.skip(f"{folder / FIF} is absent")
    card = load_card(CARD)
    trials = {t: card.load(task=t, root=folder, cache=False)
              for t in ("site", "site_1000hz", "prestim")}
    return card, folder, trials


def test_ccep_card_trials(ccep):
    card, _, trials = ccep
    ts = trials["site"]
    assert ts.X.shape == (120, 10, 200)  # -0.5 ... 1.5 s at 100 Hz
    assert ts.sfreq == 100.0 and ts.tmin == -0.5
    assert list(ts.classes) == PAIRS
    assert np.bincount(ts.y).tolist() == [12] * 10
    assert ts.ch_names == PAIRS  # bipolar derivations, in the card's order
    assert ts.info.get_channel_types() == ["seeg"] * 10
    locs = np.array([ch["loc"][:3] for ch in ts.info["chs"]])
    assert np.isfinite(locs).all() and np.abs(locs).max() < 0.2  # metres, from electrodes.tsv
    # ROC1-ROC2 sits midway between ROC1 and ROC2 (electrodes.tsv, mm)
    np.testing.assert_allclose(locs[0], np.array([6.649984, -67.769157, 1.356519]) / 1e3,
                               atol=1e-6)
    du = trials["site_1000hz"]
    assert du.X.shape == (120, 10, 2000) and du.sfreq == 1000.0
    assert du.X.shape[2] % 100 == 0  # whole 100 ms Du-IN tokens (20)
    assert np.array_equal(du.y, ts.y)
    assert trials["prestim"].X.shape == (120, 10, 90)
    assert card.default_task == "site"


def test_ccep_trials_match_events_tsv(ccep):
    _, folder, trials = ccep
    events = pd.read_csv(folder / EVENTS, sep="\t")
    assert len(events) == 120
    for task, tol in (("site", 0.005 + 1e-9), ("site_1000hz", 0.0005 + 1e-9)):
        ts = trials[task]
        onsets = ts.meta["onset"].to_numpy(float)
        # same order, each trial within half a sample of its events.tsv onset
        np.testing.assert_allclose(onsets, events["onset"].to_numpy(float), atol=tol)
        labels = np.asarray(ts.classes)[ts.y]
        assert labels.tolist() == events["electrical_stimulation_site"].tolist()
        assert (ts.meta["event"] == "stim/" + events["electrical_stimulation_site"] + "/"
                + events["status"]).all()


def test_ccep_bipolar_samples_equal_anode_minus_cathode(ccep):
    _, folder, trials = ccep
    raw = mne.io.read_raw_fif(folder / FIF, preload=True, verbose="error")
    data = raw.get_data()
    idx = {n: i for i, n in enumerate(raw.ch_names)}
    ts = trials["site"]
    sf = raw.info["sfreq"]
    for k in (0, 37, 119):
        start = int(round(ts.meta["onset"].iloc[k] * sf)) - raw.first_samp - 50
        for c, pair in enumerate(PAIRS):
            a, b = pair.split("-")
            seg = data[idx[a], start:start + 200] - data[idx[b], start:start + 200]
            seg = seg - seg[:41].mean()  # baseline -0.5 ... -0.1 s inclusive = samples 0..40
            np.testing.assert_allclose(ts.X[k, c], seg, rtol=0, atol=1e-6 * np.abs(seg).max()
                                       + 1e-9)


def _binned(X: np.ndarray, sfreq: float, tmin: float, start: float, stop: float,
            width: float = 0.05) -> np.ndarray:
    """Mean of each channel in ``width``-s bins from ``start`` to ``stop`` s, flattened."""
    i0 = int(round((start - tmin) * sfreq))
    n = int(round(width * sfreq))
    n_bins = int(round((stop - start) / width))
    seg = X[:, :, i0:i0 + n * n_bins].reshape(X.shape[0], X.shape[1], n_bins, n)
    return seg.mean(-1).reshape(X.shape[0], -1)


def _cv_correct(ts, features: np.ndarray) -> int:
    """Correct test predictions of shrinkage LDA over the class-balanced chronological 4 folds
    (each class's 12 pulses cut into 4 contiguous blocks of 3; every trial tested once)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from threadpoolctl import threadpool_limits

    splits = get_protocol("chronological_kfold", k=4).split(ts)
    assert len(splits) == 4
    tested = np.concatenate([s.test for s in splits])
    assert np.array_equal(np.sort(tested), np.arange(len(ts.y)))
    correct = 0
    with threadpool_limits(1):
        for s in splits:
            train = np.concatenate([s.train, s.valid])
            lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
            lda.fit(features[train], ts.y[train])
            correct += int((lda.predict(features[s.test]) == ts.y[s.test]).sum())
    return correct


def test_ccep_evoked_response_decodes_site_above_chance(ccep):
    from scipy.stats import binom

    _, _, trials = ccep
    ts = trials["site"]
    n, chance = len(ts.y), 0.1
    # one-sided binomial bound: P(correct >= k | chance) < 1e-4
    k_min = int(binom.ppf(1 - 1e-4, n, chance)) + 1
    evoked = _cv_correct(ts, _binned(ts.X, ts.sfreq, ts.tmin, 0.0, 1.0))
    assert evoked >= k_min, (evoked, k_min)
    assert evoked / n > 0.8  # measured 0.99: the response (artifact included) is site-specific
    # the control before the pulse (blocked design only) decodes much worse than the response
    pre = trials["prestim"]
    control = _cv_correct(pre, _binned(pre.X, pre.sfreq, pre.tmin, -1.0, -0.1, width=0.09))
    assert evoked > control + 20, (evoked, control)


# ------------------------------------------------------------------ the card support (no data)
def _write_recording(folder: Path) -> np.ndarray:
    """A 4-contact monopolar FIF with 6 annotated events (2 classes); returns its data."""
    rng = np.random.default_rng(0)
    sfreq = 100.0
    data = rng.standard_normal((4, 3000)) * 1e-5
    info = mne.create_info(["ROC1", "ROC2", "ROC3", "ROC4"], sfreq, "seeg")
    raw = mne.io.RawArray(data, info, verbose="error")
    onsets = [2.0, 6.0, 10.0, 14.0, 18.0, 22.0]
    raw.set_annotations(mne.Annotations(onsets, [0.0] * 6, ["stim/a/good", "stim/b/good"] * 3))
    raw.save(folder / "DERIVED_sub-01_x_raw.fif", verbose="error")
    return data


def _card(folder: Path, bipolar: str) -> Path:
    text = f"""
[dataset]
name = "bip"
modality = "ieeg"
[files]
root = "{folder}"
pattern = "DERIVED_sub-{{subject:02d}}_x_raw.fif"
subjects = [1]
[channels]
type = "seeg"
bipolar = {bipolar}
[tasks.t]
tmin = -0.5
tmax = 1.0
[tasks.t.events]
"stim/a/good" = "a"
"stim/b/good" = "b"
"""
    path = folder / "card.toml"
    path.write_text(text)
    return path


def test_card_bipolar_pairs_and_adjacent(tmp_path):
    data = _write_recording(tmp_path)
    ts = load_card(_card(tmp_path, '["ROC1-ROC2", "ROC3-ROC4"]')).load(cache=False)
    assert ts.ch_names == ["ROC1-ROC2", "ROC3-ROC4"] and ts.X.shape == (6, 2, 150)
    start = int(2.0 * 100) - 50
    np.testing.assert_allclose(ts.X[0, 0], data[0, start:start + 150] - data[1, start:start + 150],
                               rtol=0, atol=1e-10)  # float32 FIF: ~1e-7 relative
    np.testing.assert_allclose(ts.X[0, 1], data[2, start:start + 150] - data[3, start:start + 150],
                               rtol=0, atol=1e-10)
    adj = load_card(_card(tmp_path, '"adjacent"')).load(cache=False)
    assert adj.ch_names == ["ROC1-ROC2", "ROC2-ROC3", "ROC3-ROC4"]
    np.testing.assert_allclose(adj.X[:, [0, 2]], ts.X, rtol=0, atol=1e-12)


@pytest.mark.parametrize("bipolar, match", [
    ('"nearest"', "bipolar must be 'adjacent' or a list"),
    ('["ROC1ROC2"]', "anode-cathode"),
    ('["ROC1-ROC1"]', "two different contacts"),
])
def test_card_bipolar_invalid(tmp_path, bipolar, match):
    with pytest.raises(ValueError, match=match):
        load_card(_card(tmp_path, bipolar))


def test_card_bipolar_unknown_contact(tmp_path):
    _write_recording(tmp_path)
    card = load_card(_card(tmp_path, '["ROC1-ROC9"]'))
    with pytest.raises(ValueError, match=r"\[channels\] bipolar names contacts \['ROC9'\]"):
        card.load(cache=False)
