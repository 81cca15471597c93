"""Channel selection by region and by contribution ranking, fitted inside training splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bcikit.data.channel_selection import (ContributionSelector, HighGammaProbe, RegionSelector,
                                           channel_contributions, channel_regions,
                                           select_by_region)
from bcikit.data.protocols import Split, apply_split
from bcikit.data.transforms import DataLeakError, LeakGuard
from bcikit.simulate.seeg_words import SPEECH_REGIONS, make_seeg_words, write_electrodes

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    return make_seeg_words(size="tiny", pretrain_minutes=0, random_state=0)


@pytest.fixture(scope="module")
def ranked():
    """One subject, 8 words x 30 trials over 3 runs: train on runs 1-2, test on run 3."""
    sim = make_seeg_words(size="tiny", n_subjects=1, n_trials_per_word=30, n_runs=3,
                          pretrain_minutes=0, random_state=0)
    ts = sim.trials["S01"]
    runs = ts.meta["run"].to_numpy()
    split = Split("S01/test=run3", np.flatnonzero(runs != "run3"), [],
                  np.flatnonzero(runs == "run3"))
    return sim, ts, split


def _speech_channels(sim, subject):
    ch = sim.truth[subject].channels
    return ch["name"][ch["region"].isin(SPEECH_REGIONS)].tolist()


# ------------------------------------------------------------------------------------ regions
def test_region_selector_picks_exactly_the_speech_contacts(tiny, tmp_path):
    for subject, ts in tiny.trials.items():
        expected = _speech_channels(tiny, subject)
        assert expected == list(np.asarray(ts.ch_names)[tiny.truth[subject].informative])
        runs = ts.meta["run"].to_numpy()
        split = Split("s", np.flatnonzero(runs == "run1"), [], np.flatnonzero(runs == "run2"))
        train, _, test = apply_split(ts, split)
        # from the electrodes table (one per subject), a table file, or a region map
        path = write_electrodes(tiny.electrodes[subject], tmp_path / f"{subject}_electrodes.tsv")
        for kw in (dict(electrodes=tiny.electrodes), dict(electrodes=path),
                   dict(region_map={subject: tiny.region_map(subject)})):
            with LeakGuard(split):
                sel = RegionSelector(**kw).fit(train)
            assert sel.channels_ == expected
            assert set(sel.regions_) <= set(SPEECH_REGIONS)
            out = sel.transform(test)
            assert out.ch_names == expected and out.info["ch_names"] == expected
            idx = [ts.ch_names.index(c) for c in expected]
            np.testing.assert_array_equal(out.X, test.X[:, idx])
            assert out.meta["trial_index"].tolist() == test.meta["trial_index"].tolist()
    one = RegionSelector("STG", electrodes=tiny.electrodes["S01"]).fit(tiny.trials["S01"])
    ch = tiny.truth["S01"].channels
    assert one.channels_ == ch["name"][ch["region"] == "STG"].tolist()


def test_region_helpers_and_errors(tiny):
    table = tiny.electrodes["S01"]
    names = tiny.trials["S01"].ch_names
    regions = channel_regions(names, electrodes=table)
    assert regions == tiny.truth["S01"].channels["region"].tolist()  # bipolar -> anode's region
    # monopolar names and a card-style region map (anode lookup for bipolar names)
    assert channel_regions(["Z9", table["name"][0]], electrodes=table)[1] == table["region"][0]
    rmap = {"vSMC": [table["name"][0]]}
    assert channel_regions([f"{table['name'][0]}-{table['name'][1]}", "Q1"],
                           region_map=rmap) == ["vSMC", "unknown"]
    assert select_by_region(names, "vSMC", electrodes=table) == \
        [n for n, r in zip(names, regions) if r == "vSMC"]
    with pytest.raises(ValueError, match="exactly one"):
        channel_regions(names)
    with pytest.raises(ValueError, match="no channel lies in"):
        select_by_region(names, "amygdala", electrodes=table)
    with pytest.raises(ValueError, match="no entry for subject 'S01'"):
        RegionSelector(region_map={"S09": {"vSMC": ["A1"]}}).fit(tiny.trials["S01"])
    sel = RegionSelector(electrodes=table).fit(tiny.trials["S01"])
    with pytest.raises(ValueError, match="lacks the selected channels"):
        sel.transform(tiny.trials["S02"])


def test_region_map_from_a_card(tmp_path):
    """A card's ``[regions.<subject>]`` table drives the selector."""
    from bcikit.data.trialset import TrialSet
    from bcikit.io.cards import load_card

    card = tmp_path / "lab.toml"
    card.write_text("""
[dataset]
name = "lab"
modality = "ieeg"
[files]
root = "."
pattern = "sub-{subject}.edf"
subjects = ["p1"]
[tasks.words]
tmin = 0
tmax = 1
events = { a = "a" }
[regions.p1]
vSMC = ["A1", "A2"]
STG = ["B3"]
""")
    regions = load_card(card).regions
    import mne

    names = ["A1-A2", "A2-A3", "B2-B3", "B3-B4", "C1-C2"]
    ts = TrialSet(np.zeros((2, 5, 10)), np.array([0, 1]), {"subject": ["p1", "p1"]},
                  mne.create_info(names, 100.0, "seeg"), ["a", "b"])
    sel = RegionSelector(region_map=regions).fit(ts)
    assert sel.channels_ == ["A1-A2", "A2-A3", "B3-B4"]


# ------------------------------------------------------------------------------------ contributions
def test_channel_contributions_sources():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((16, 7))
    np.testing.assert_allclose(channel_contributions(W, 7), np.abs(W).mean(0))
    np.testing.assert_allclose(channel_contributions(W.T, 7), np.abs(W).mean(0))  # official layout
    layer = torch.nn.Linear(7, 16)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.subject_layer = layer

    np.testing.assert_allclose(channel_contributions(Net(), 7),
                               layer.weight.detach().abs().mean(0).numpy(), rtol=1e-6)

    class Multi(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.subject_layers = torch.nn.ModuleDict({"a": torch.nn.Linear(3, 16), "b": layer})

    np.testing.assert_allclose(channel_contributions(Multi(), 7, subject="b"),
                               layer.weight.detach().abs().mean(0).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="pass subject="):
        channel_contributions(Multi())

    class Reduced:  # bcikit.models.DuIN exposes channel_contributions()
        def channel_contributions(self):
            return np.arange(7.0)

    np.testing.assert_array_equal(channel_contributions(Reduced(), 7), np.arange(7.0))
    with pytest.raises(ValueError, match="no axis of n_chans=5"):
        channel_contributions(W, 5)
    with pytest.raises(TypeError, match="subject-layer weight"):
        channel_contributions(object())


def test_contribution_ranking_finds_speech_contacts_from_training_data(ranked):
    sim, ts, split = ranked
    train, _, test = apply_split(ts, split)
    informative = set(np.asarray(ts.ch_names)[sim.truth["S01"].informative])
    with LeakGuard(split) as guard:
        sel = ContributionSelector(10).fit(train)
    assert guard.n_fits_ == 1
    hits = len(set(sel.channels_) & informative)
    assert hits >= 8, (hits, sel.channels_)
    assert isinstance(sel.model_, HighGammaProbe)
    np.testing.assert_array_equal(sel.fit_trials_, split.train)
    assert sel.scores_.shape == (ts.n_chans,)
    assert sel.ranking_[:10] == sel.channels_
    assert np.all(np.diff(sel.scores_[[ts.ch_names.index(c) for c in sel.ranking_]]) <= 0)
    out = sel.transform(test)
    assert out.ch_names == sel.channels_ and out.X.shape == (len(test), 10, 3000)


def test_contribution_ranking_never_sees_test_trials(ranked):
    sim, ts, split = ranked
    train, _, test = apply_split(ts, split)
    seen = []

    def trainer(data):
        seen.append(data.meta["trial_index"].to_numpy())
        return HighGammaProbe(epochs=5).fit(data)

    with LeakGuard(split):
        ContributionSelector(10, model=trainer).fit(train)
    assert len(seen) == 1
    np.testing.assert_array_equal(np.sort(seen[0]), split.train)
    assert not np.intersect1d(seen[0], split.test).size
    # fitting on trials that include test trials is refused inside the guard
    leaky = ts.subset(np.r_[split.train, split.test[:3]])
    leaky.meta["trial_index"] = np.r_[split.train, split.test[:3]]
    with LeakGuard(split), pytest.raises(DataLeakError, match="ContributionSelector"):
        ContributionSelector(10, model=trainer).fit(leaky)
    assert len(seen) == 1  # the trainer never ran on the leaky set
    # a prefitted model that remembers a test trial is refused too
    model = HighGammaProbe(epochs=5).fit(train)
    model.fit_trials_ = np.r_[split.train, split.test[:1]]
    with LeakGuard(split), pytest.raises(DataLeakError, match="ContributionSelector.model"):
        ContributionSelector(10, model=model).fit(train)
    model.fit_trials_ = split.train
    with LeakGuard(split):
        sel = ContributionSelector(4, model=model).fit(train)
    assert len(sel.channels_) == 4
    with pytest.raises(ValueError, match="n_channels=999"):
        ContributionSelector(999, model=model).fit(train)
