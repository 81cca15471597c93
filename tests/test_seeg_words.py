"""The sEEG word-reading simulator (Du-IN, spec section 5) and the Du-IN baselines on it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.feature_selection import f_classif

from bcikit.data.channel_selection import HighGammaLDA, RegionSelector, high_gamma_features
from bcikit.simulate.seeg_words import (N_UNITS, REGIONS, SIZES, SPEECH_REGIONS, make_seeg_words,
                                        unit_patterns, word_lexicon, write_electrodes)


@pytest.fixture(scope="module")
def tiny():
    return make_seeg_words(size="tiny", random_state=0)


@pytest.fixture(scope="module")
def words20():
    """One subject, 8 words x 20 trials over 2 runs, at snr=1 and at snr=0 (same layout)."""
    kw = dict(size="tiny", n_subjects=1, n_trials_per_word=20, pretrain_minutes=0, random_state=0)
    return make_seeg_words(**kw), make_seeg_words(snr=0.0, **kw)


def _post_speech_f(ts):
    """Mean one-way ANOVA F (words) of each channel's 100 ms log high-gamma, 0.5-2.5 s."""
    feats = high_gamma_features(ts.X, ts.sfreq)[:, :, 10:]
    return np.array([f_classif(feats[:, c], ts.y)[0].mean() for c in range(ts.n_chans)])


# ------------------------------------------------------------------------------------ lexicon
def test_lexicon_is_fixed_and_well_formed():
    lex = word_lexicon(61)
    assert len(lex) == 61 and len(set(lex.values())) == 61
    for word, seq in lex.items():
        assert 3 <= len(seq) <= 5
        assert all(0 <= u < N_UNITS for u in seq)
        assert all(a != b for a, b in zip(seq[:-1], seq[1:]))
        assert len(word) == 2 * len(seq)  # one syllable per unit
    assert word_lexicon(8) == dict(list(lex.items())[:8])  # same code in every call
    patterns, lengths = unit_patterns(1000.0)
    assert patterns.shape == (N_UNITS, 8, lengths.max())
    assert lengths.min() >= 80 and lengths.max() <= 200
    assert np.all((patterns > 0).sum(axis=(1, 2)) > 0)
    with pytest.raises(ValueError, match="n_words"):
        word_lexicon(62)


# ------------------------------------------------------------------------------------ shapes, truth
def test_shapes_labels_and_meta(tiny):
    assert tiny.subjects == ["S01", "S02"]
    assert tiny.classes == sorted(word_lexicon(8))
    for subject, ts in tiny.trials.items():
        table = tiny.electrodes[subject]
        n_contacts, n_shafts = len(table), table["shaft"].nunique()
        assert 40 <= n_contacts <= 48 and 6 <= n_shafts <= 12
        assert ts.X.dtype == np.float32
        assert ts.X.shape == (8 * 6, n_contacts - n_shafts, 3000)  # bipolar within shafts
        assert ts.tmin == -0.5 and ts.sfreq == 1000.0 and ts.classes == tiny.classes
        assert set(ts.info.get_channel_types()) == {"seeg"}
        meta = ts.meta
        for col in ("subject", "session", "run", "dataset", "site", "onset", "word", "units"):
            assert col in meta
        assert set(meta["run"]) == {"run1", "run2"}
        # every word 3 times in each run
        counts = meta.groupby(["run", "word"]).size()
        assert counts.min() == counts.max() == 3 and len(counts) == 16
        assert list(meta["word"]) == list(np.asarray(ts.classes)[ts.y])
        # unit sequences follow the shared lexicon
        truth = tiny.truth[subject]
        lex = tiny.lexicon
        assert truth.unit_sequences == [lex[w] for w in meta["word"]]
        assert list(meta["units"]) == ["-".join(map(str, lex[w])) for w in meta["word"]]
        onset = meta["speech_onset"].to_numpy()
        assert np.all(np.abs(onset - truth.speech_onset) <= 0.1 + 1e-9)
        assert 0.6 <= truth.speech_onset <= 1.0
        # onsets increase within a run
        for _, part in meta.groupby("run"):
            assert np.all(np.diff(part["onset"].to_numpy()) > 3.0)


def test_truth_regions_mixing_snr(tiny):
    for subject, ts in tiny.trials.items():
        truth, table = tiny.truth[subject], tiny.electrodes[subject]
        assert set(table["region"]) <= set(REGIONS)
        assert set(SPEECH_REGIONS) <= set(table["region"])
        speech = table["region"].isin(SPEECH_REGIONS).to_numpy()
        # mixing is non-zero exactly on vSMC/STG contacts
        assert truth.mixing.shape == (len(table), 8)
        np.testing.assert_array_equal(truth.mixing.any(axis=1), speech)
        assert truth.contacts == table["name"].tolist()
        ch = truth.channels
        assert ch["name"].tolist() == ts.ch_names
        # informative bipolar channels == anode in vSMC/STG
        np.testing.assert_array_equal(truth.informative, ch["region"].isin(SPEECH_REGIONS))
        assert 10 <= truth.informative.sum() <= 18
        assert np.all(ch["snr"][truth.informative] > 0)
        assert np.all(ch["snr"][~truth.informative] == 0)
        region_of = dict(zip(table["name"], table["region"]))
        assert ch["region"].tolist() == [region_of[a] for a in ch["anode"]]
        assert tiny.region_map(subject)["vSMC"] == ch["name"][ch["region"] == "vSMC"].tolist()
        # the oracle on the true sources is far above chance (1/8)
        assert truth.chance == pytest.approx(1 / 8)
        assert truth.oracle_accuracy > 0.6


def test_electrodes_table_round_trip(tiny, tmp_path):
    from bcikit.io.ieeg import read_electrodes, regions

    table = tiny.electrodes["S01"]
    path = write_electrodes(table, tmp_path / "sub-01_electrodes.tsv")
    back = read_electrodes(path)
    assert back["name"].tolist() == table["name"].tolist()
    np.testing.assert_allclose(back[["x", "y", "z"]].to_numpy(), table[["x", "y", "z"]].to_numpy(),
                               atol=1e-6)
    assert back["region"].tolist() == table["region"].tolist()
    assert back["shaft"].tolist() == table["shaft"].tolist()
    groups = regions(back)
    assert sorted(groups) == sorted(set(table["region"]))
    with pytest.raises(FileExistsError):
        write_electrodes(table, path)


def test_bipolar_matches_ieeg_bipolar_reference():
    """The simulator's bipolar channels are bcikit.io.ieeg.bipolar_reference of its contacts."""
    import mne

    from bcikit.io.ieeg import bipolar_reference

    kw = dict(size="tiny", n_subjects=1, n_words=2, n_trials_per_word=2, pretrain_minutes=0,
              random_state=3)
    bip = make_seeg_words(**kw)
    mono = make_seeg_words(reference="monopolar", **kw)
    b, m = bip.trials["S01"], mono.trials["S01"]
    table = mono.electrodes["S01"]
    assert m.ch_names == table["name"].tolist()
    raw = mne.io.RawArray(np.concatenate(list(m.X.astype(np.float64)), axis=1),
                          mne.create_info(m.ch_names, 1000.0, "seeg"), verbose="error")
    ref = bipolar_reference(raw, electrodes=table)
    assert ref.ch_names == b.ch_names
    expected = np.stack(np.split(ref.get_data(), len(b), axis=1))
    np.testing.assert_allclose(b.X, expected, rtol=1e-5, atol=1e-12)
    # pairs are neighbours on one shaft
    shaft = dict(zip(table["name"], table["shaft"]))
    number = dict(zip(table["name"], table["contact"]))
    for a, k in zip(bip.truth["S01"].channels["anode"], bip.truth["S01"].channels["cathode"]):
        assert shaft[a] == shaft[k] and number[k] == number[a] + 1


def test_pretraining_recordings(tiny):
    for subject, pt in tiny.pretrain.items():
        ts = tiny.trials[subject]
        assert pt.X.shape == (1, ts.n_chans, 60_000)  # 1 minute at 1000 Hz
        assert pt.ch_names == ts.ch_names
        assert set(pt.meta["session"]) == {"pretrain"}
        assert not set(pt.meta["run"]) & set(ts.meta["run"])
        assert pt.classes is None
        events = tiny.truth[subject].pretrain_events
        assert len(events) >= 10
        assert events["task_word"].mean() < 0.5  # mostly non-task words
        assert np.all(np.diff(events["onset"].to_numpy()) > 0.3)


def test_deterministic_and_argument_errors():
    kw = dict(size="tiny", n_subjects=1, n_words=2, n_trials_per_word=2, pretrain_minutes=0)
    a = make_seeg_words(random_state=7, **kw).trials["S01"]
    b = make_seeg_words(random_state=7, **kw).trials["S01"]
    c = make_seeg_words(random_state=8, **kw).trials["S01"]
    np.testing.assert_array_equal(a.X, b.X)
    assert a.X.shape != c.X.shape or not np.array_equal(a.X, c.X)
    with pytest.raises(ValueError, match="size"):
        make_seeg_words(size="huge")
    with pytest.raises(ValueError, match="multiple of n_runs"):
        make_seeg_words(size="tiny", n_trials_per_word=5)
    with pytest.raises(ValueError, match="snr"):
        make_seeg_words(size="tiny", snr=-1.0)
    with pytest.raises(ValueError, match="n_contacts"):
        make_seeg_words(size="tiny", n_contacts=(10, 20))
    with pytest.raises(ValueError, match="high >= 40"):  # no layout that small: was a hang
        make_seeg_words(size="tiny", n_contacts=(30, 34))
    assert SIZES["test"]["n_trials_per_word"] == 8 and SIZES["test"]["n_runs"] == 2


# ------------------------------------------------------------------------------------ the signal
def test_word_information_only_on_speech_regions(words20):
    """High-gamma power differs between words on vSMC/STG channels and nowhere else."""
    sim, null = words20
    ts, inf = sim.trials["S01"], sim.truth["S01"].informative
    f = _post_speech_f(ts)
    # F ~ 1 under the null; the speech channels are far above, the others consistent with it
    assert f[inf].mean() > 1.6
    assert 0.75 < f[~inf].mean() < 1.15 and f[~inf].max() < 1.6
    top = np.argsort(-f)[:8]
    assert inf[top].all()
    # snr=0: no channel carries word information
    f0 = _post_speech_f(null.trials["S01"])
    assert 0.75 < f0.mean() < 1.15 and f0.max() < 1.6
    np.testing.assert_array_equal(null.truth["S01"].channels["snr"], 0.0)


def test_floor_baseline_above_chance_and_null_at_chance(words20):
    """100 ms high-gamma envelopes -> shrinkage LDA, trained on run 1, tested on run 2."""
    sim, null = words20
    ts = sim.trials["S01"]
    train = (ts.meta["run"] == "run1").to_numpy()
    sel = RegionSelector(electrodes=sim.electrodes["S01"]).fit(ts[train])
    results = {}
    for name, data in (("signal", sim.trials["S01"]), ("null", null.trials["S01"])):
        part = sel.transform(data)
        clf = HighGammaLDA(tmin=0.5).fit(part[train])
        pred = clf.predict(part[~train])
        results[name] = int((pred == part.y[~train]).sum())
    n_test = int((~train).sum())
    chance = 1 / 8
    assert binomtest(results["signal"], n_test, chance, alternative="greater").pvalue < 0.01
    # null data: the accuracy is consistent with chance (two-sided 99 % test)
    assert binomtest(results["null"], n_test, chance).pvalue > 0.01


# ------------------------------------------------------------------------------------ CNN-BiGRU
def test_cnn_bigru_parameter_count_and_shapes():
    import torch

    from bcikit.models import get_model
    from bcikit.models.cnn_bigru import CNNBiGRU, cnn_bigru_parameter_count

    torch.set_num_threads(1)
    ref = CNNBiGRU(n_chans=10, n_outputs=61, n_times=3000, sfreq=1000)
    assert sum(p.numel() for p in ref.parameters()) == 542_141
    assert cnn_bigru_parameter_count(10, 61) == 542_141
    assert ref.n_tokens == 1000
    for C, k in ((3, 5), (17, 2)):
        m = CNNBiGRU(n_chans=C, n_outputs=k, n_times=200, sfreq=1000)
        assert sum(p.numel() for p in m.parameters()) == cnn_bigru_parameter_count(C, k)
    torch.manual_seed(0)
    model = get_model("CNNBiGRU", n_chans=6, n_outputs=4, n_times=150, sfreq=1000.0)
    X = torch.randn(3, 6, 150)
    out = model(X)
    assert out.shape == (3, 4) and torch.isfinite(out).all()
    out.sum().backward()
    assert model.conv.weight.grad is not None and model.gru.weight_hh_l1.grad is not None
    quirky = CNNBiGRU(n_chans=6, n_outputs=4, n_times=150, sfreq=1000, official_quirks=True,
                      readout="mean").eval()
    p = quirky(X)
    assert p.shape == (3, 4) and bool(((p > 0) & (p < 1)).all())
    with pytest.raises(ValueError, match="6, n_times"):
        model(torch.randn(2, 5, 150))
    with pytest.raises(ValueError, match="n_outputs"):
        CNNBiGRU(n_chans=6, n_times=150)
    with pytest.raises(ValueError, match="activation"):
        CNNBiGRU(n_chans=6, n_outputs=2, n_times=150, activation="tanh")


def test_cnn_bigru_learns_on_simulated_trials(tiny):
    """A few full-batch steps reduce the training loss on simulator trials (z-scored)."""
    import torch

    from bcikit.models.cnn_bigru import CNNBiGRU

    torch.set_num_threads(1)
    torch.manual_seed(0)
    ts = tiny.trials["S01"]
    sel = RegionSelector(electrodes=tiny.electrodes["S01"]).fit(ts)
    part = sel.transform(ts)
    X = np.asarray(part.X[:, :, 1200:1500])  # 0.7-1.0 s, to keep the GRU short (100 steps)
    X = (X - X.mean(axis=(0, 2), keepdims=True)) / X.std(axis=(0, 2), keepdims=True)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(part.y)
    model = CNNBiGRU(n_chans=part.n_chans, n_outputs=len(part.classes), n_times=300, sfreq=1000)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(Xt), yt)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05


# ------------------------------------------------------------------ Du-IN learns (session 4)
def test_lfp_option_is_opt_in_and_adds_word_information():
    kw = dict(size="tiny", n_subjects=1, n_words=2, n_trials_per_word=2, n_runs=1,
              pretrain_minutes=0, random_state=3)
    base = make_seeg_words(**kw)
    same = make_seeg_words(lfp_snr=0.0, **kw)
    np.testing.assert_array_equal(base.trials["S01"].X, same.trials["S01"].X)
    lfp = make_seeg_words(lfp_snr=30.0, snr=0.0, **kw)
    t = lfp.truth["S01"].channels
    assert (t.loc[t.informative, "snr"] > 0).all() and (t.loc[~t.informative, "snr"] == 0).all()
    assert lfp.params["lfp_snr"] == 30.0
    with pytest.raises(ValueError, match="lfp_snr"):
        make_seeg_words(lfp_snr=-1.0, **kw)


def test_duin_from_scratch_learns_on_held_out_runs():
    """Du-IN (one block, from scratch) on 4 words x 48 trials, tested on an unseen run.

    Word information in a word-locked low-frequency potential (``lfp_snr``) besides high gamma;
    the per-run offsets are removed by a 0.5 Hz high-pass per trial (z-score on the training
    runs). Chance is 1/4; the bar is the binomial tail 1e-3 on the 64 test trials (about 44 %).
    """
    torch = pytest.importorskip("torch")
    from scipy.signal import butter, sosfiltfilt
    from scipy.stats import binom

    from bcikit.models.duin import DuIN

    torch.set_num_threads(1)
    sim = make_seeg_words(size="tiny", n_subjects=1, n_words=4, n_trials_per_word=48, n_runs=3,
                          snr=2.0, lfp_snr=60.0, pretrain_minutes=0, random_state=0)
    ts = RegionSelector(SPEECH_REGIONS, electrodes=sim.electrodes).fit(sim.trials["S01"]) \
        .transform(sim.trials["S01"])
    X = sosfiltfilt(butter(4, 0.5, "highpass", fs=1000.0, output="sos"), ts.X, axis=2)
    y = np.asarray(ts.y)
    test = ts.meta["run"].to_numpy() == "run3"
    mu = X[~test].mean(axis=(0, 2), keepdims=True)
    sd = X[~test].std(axis=(0, 2), keepdims=True)
    Xt = torch.from_numpy(((X - mu) / sd).astype(np.float32))
    yt = torch.from_numpy(y)
    torch.manual_seed(0)
    model = DuIN(n_chans=ts.n_chans, n_outputs=4, n_times=3000, n_blocks=1, max_shift=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    train = np.flatnonzero(~test)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        model.train()
        for b in np.array_split(train[torch.randperm(train.size, generator=gen).numpy()], 4):
            loss, _ = model.training_loss(Xt[b], yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(Xt[test]).argmax(1).numpy()
    n = int(test.sum())
    k_min = int(binom.isf(1e-3, n, 0.25)) + 1  # P(correct >= k_min | chance) < 1e-3
    assert (pred == y[test]).sum() >= k_min, ((pred == y[test]).mean(), k_min / n)
