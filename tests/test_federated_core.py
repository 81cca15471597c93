"""bcikit.federated without Flower: state helpers, sites, the in-process loop and baselines,
exact resume, MVCNet through the same mechanism, and the heterogeneous simulator."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bcikit.federated import (Site, SiteData, check_signatures, common_keys,  # noqa: E402
                              fedavg, fedavg_weights, from_numpy, initial_shared,
                              make_site_data, make_sites,
                              merge_state, results_json, run_fedavg_all, run_federated,
                              run_local, run_pooled, shared_keys, shared_signature,
                              simulate_sites, site_specs, split_site, split_state,
                              to_numpy)
from bcikit.federated.simulate import SiteSpec  # noqa: E402
from bcikit.models.fleeg import FLEEGNet  # noqa: E402

torch.set_num_threads(1)

SHARED = ["block4.conv.weight", "head.conv.bias", "head.conv.weight"]


@pytest.fixture(scope="module")
def sims():
    return simulate_sites(3, size="tiny", seed=3)


def _state_equal(a, b, atol=0.0):
    assert set(a) == set(b)
    for k in a:
        if atol:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0)
        else:
            assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------------------------- state
def test_split_merge_and_errors():
    a = FLEEGNet(22, 2, 1000, 250.0)
    b = FLEEGNet(30, 2, 800, 200.0)  # other geometry, same shared shapes
    assert shared_keys(a) == SHARED
    sa, la = split_state(a)
    sb, lb = split_state(b)
    assert list(sa) == SHARED
    assert set(la) | set(sa) == set(a.state_dict()) and not set(la) & set(sa)
    assert shared_signature(a) == shared_signature(sb) == shared_signature(sa)
    merge_state(b, sa)
    _state_equal(split_state(b)[0], sa)
    _state_equal(split_state(b)[1], lb)  # local untouched
    # copies, not views
    sa["head.conv.bias"] += 1
    assert not torch.equal(a.head.conv.bias, sa["head.conv.bias"])

    bad = dict(sb)
    del bad["head.conv.bias"]
    bad["block1.spatial.weight"] = torch.zeros(25, 25, 30, 1)
    with pytest.raises(ValueError, match=r"missing \['head.conv.bias'\].*unexpected "
                                         r"\['block1.spatial.weight'\]"):
        merge_state(b, bad)
    bad = dict(sb, **{"head.conv.weight": torch.zeros(3, 200, 1, 7)})
    with pytest.raises(ValueError, match=r"'head.conv.weight' has shape \(3, 200, 1, 7\)"):
        merge_state(b, bad)
    bad = dict(sb, **{"head.conv.bias": torch.zeros(2, dtype=torch.float64)})
    with pytest.raises(ValueError, match="'head.conv.bias' has dtype torch.float64"):
        merge_state(b, bad)
    # nothing was copied by the failed merges
    _state_equal(split_state(b)[0], split_state(a)[0])
    # numpy round trip (what travels in a Flower ArrayRecord)
    arrays = to_numpy(sb)
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    merge_state(b, arrays)
    _state_equal(from_numpy(arrays), sb)


def test_signatures():
    two = FLEEGNet(22, 2, 1000, 250.0)
    three = FLEEGNet(22, 3, 1000, 250.0)
    sig2, sig3 = shared_signature(two), shared_signature(three)
    assert sig2 != sig3 and len(sig2) == 64
    assert check_signatures({"a": sig2, "b": sig2}) == sig2
    with pytest.raises(ValueError, match=r"sites \['odd'\] do not match"):
        check_signatures({"a": sig2, "b": sig2, "odd": sig3})
    # values do not enter the signature, dtypes do
    s = split_state(two)[0]
    assert shared_signature({k: v * 3 for k, v in s.items()}) == sig2
    assert shared_signature({k: v.double() for k, v in s.items()}) != sig2


def test_fedavg_values_and_weights():
    g = torch.Generator().manual_seed(0)
    states = [{"w": torch.randn(3, 4, generator=g), "b": torch.randn(2, generator=g)}
              for _ in range(3)]
    counts = [10, 30, 60]
    w = fedavg_weights(counts)
    assert w == [0.1, 0.3, 0.6] and abs(sum(w) - 1) < 1e-12
    avg = fedavg(list(zip(states, counts)))
    expect = sum(wi * s["w"].double() for wi, s in zip(w, states)).float()
    torch.testing.assert_close(avg["w"], expect, atol=1e-7, rtol=0)
    eq = fedavg(list(zip(states, counts)), weighting="equal")
    torch.testing.assert_close(eq["b"], sum(s["b"] for s in states) / 3, atol=1e-6, rtol=0)
    # one update: returned unchanged
    _state_equal(fedavg([(states[0], 7)]), states[0])
    with pytest.raises(ValueError, match="update 1 has 'w' of shape"):
        fedavg([(states[0], 1), ({"w": torch.zeros(2), "b": torch.zeros(2)}, 1)])
    with pytest.raises(ValueError, match="integer buffers"):
        fedavg([({"n": torch.tensor(3)}, 1), ({"n": torch.tensor(5)}, 1)])
    with pytest.raises(ValueError, match="weighting"):
        fedavg_weights([1], weighting="median")


def test_initial_shared_is_deterministic():
    a, b = initial_shared(2, seed=123), initial_shared(2, seed=123)
    _state_equal(a, b)
    assert list(a) == SHARED
    assert not torch.equal(a["block4.conv.weight"],
                           initial_shared(2, seed=124)["block4.conv.weight"])


# ---------------------------------------------------------------------------------- splits
def test_split_site_loso_and_validation(sims):
    _, ts = sims[0]  # 5 subjects
    subjects = set(ts.meta["subject"])
    tested = []
    for fold in range(5):
        tr, va, te = split_site(ts, fold=fold)
        s_tr, s_va, s_te = (set(x.meta["subject"]) for x in (tr, va, te))
        assert len(s_te) == 1 and len(s_va) == 1 and len(s_tr) == 3
        assert not (s_tr & s_va) and not (s_tr & s_te) and not (s_va & s_te)
        assert len(tr) + len(va) + len(te) == len(ts)
        tested += s_te
    assert set(tested) == subjects  # LOSO: every subject tested once
    # a federation with K = 8 folds: subjects recur from fresh shuffles
    tests = [set(split_site(ts, fold=f, n_folds=8)[2].meta["subject"]).pop() for f in range(8)]
    assert set(tests[:5]) == subjects and len(tests) == 8
    # quarter-subject folds: a second pass (n_folds=8) leaves the first pass's folds as they were
    # and tests the subjects again, so runs of folds 0-3 and 4-7 join into one 8-fold check
    quarter = {n: [tuple(sorted(set(split_site(ts, fold=f, n_test=0.25, n_folds=n)[2]
                                        .meta["subject"]))) for f in range(n)] for n in (4, 8)}
    assert quarter[8][:4] == quarter[4]
    assert all(len(t) == 1 for t in quarter[8]) and set(sum(quarter[8][4:], ())) <= subjects
    # trial-wise validation (official): 10 % of the training trials, drawn from every subject
    tr, va, te = split_site(ts, fold=0, validation="trial")
    assert len(va) == round(0.1 * (len(tr) + len(va)))
    assert set(va.meta["subject"]) <= set(tr.meta["subject"])
    # deterministic
    tr2, va2, _ = split_site(ts, fold=0, validation="trial")
    np.testing.assert_array_equal(va.X, va2.X)
    with pytest.raises(ValueError, match="fold"):
        split_site(ts, fold=5)
    with pytest.raises(ValueError, match="site 'x' has 5 subject"):
        split_site(ts, n_test=4, site="x")


# ---------------------------------------------------------------------------------- loops
def test_round_invariants_weights_and_results(sims):
    sites = make_sites(sims, rounds=2)
    assert len({s.signature for s in sites}) == 1
    assert len({tuple(s.model.kernels + s.model.pools) for s in sites}) == 3  # heterogeneous
    initial = initial_shared(2, seed=123)
    seen = []

    def check(round_, result):
        shared = [split_state(s.model)[0] for s in sites]
        local = [split_state(s.model)[1] for s in sites]
        for other in shared:
            _state_equal(other, result.shared)  # every site holds the round's aggregate
        for i in range(len(sites)):  # distinct local tensors (block-4 BN: same shape)
            for j in range(i + 1, len(sites)):
                assert not torch.equal(local[i]["block4.bn.weight"],
                                       local[j]["block4.bn.weight"])
                assert not torch.equal(local[i]["block4.bn.running_var"],
                                       local[j]["block4.bn.running_var"])
        assert not torch.equal(result.shared["block4.conv.weight"],
                               initial["block4.conv.weight"])
        seen.append(round_)

    res = run_federated(sites, 2, on_round=check)
    assert seen == [1, 2]
    n = {s.name: s.n_train for s in sites}
    for w in res.weights:
        assert abs(sum(w.values()) - 1) < 1e-12
        for name, wi in w.items():
            assert wi == pytest.approx(n[name] / sum(n.values()), abs=1e-12)
    assert [r["round"] for r in res.history] == [1, 2]
    for s in sites:
        m = res.sites[s.name]
        assert 0 <= m["test-acc"] <= 1 and m["best-round"] in (1, 2)
        assert m["num-examples"] == len(s.data.test)
        assert set(m["subject-acc"]) == set(s.data.test.meta["subject"])
        # the last round's model, scored beside the kept snapshot (a selection diagnostic)
        assert m["last-round"] == 2 and set(m["last-subject-acc"]) == set(m["subject-acc"])
        last = s.score(s.data.test, snapshot="last")
        assert m["last-test-acc"] == last["test-acc"]
        if m["best-round"] == 2:  # the kept snapshot is the last model
            assert last["test-loss"] == pytest.approx(m["test-loss"], abs=1e-6)
        else:
            assert last["test-loss"] != pytest.approx(m["test-loss"], abs=1e-6)
    with pytest.raises(ValueError, match="snapshot"):
        sites[0].score(sites[0].data.test, snapshot="mean")
    out = results_json(res, res)
    assert set(out["sites"]) == {s.name for s in sites}
    for name, row in out["sites"].items():
        assert set(row) == {"federated_acc", "local_acc", "n_trials"}
        assert row["n_trials"] == res.sites[name]["num-examples"]


def test_one_site_federated_equals_local(sims):
    fed_site = make_sites(sims[:1], rounds=2)
    loc_site = make_sites(sims[:1], rounds=2)
    fed = run_federated(fed_site, 2)
    loc = run_local(loc_site, 2)
    _state_equal(fed_site[0].model.state_dict(), loc_site[0].model.state_dict(), atol=1e-6)
    name = fed_site[0].name
    assert fed.sites[name]["test-acc"] == pytest.approx(loc.sites[name]["test-acc"], abs=1e-6)
    assert fed.sites[name]["test-loss"] == pytest.approx(loc.sites[name]["test-loss"], abs=1e-6)
    for hf, hl in zip(fed.history, loc.history):
        assert hf[name]["val-loss"] == pytest.approx(hl[name]["val-loss"], abs=1e-6)
    assert fed.weights == [{name: 1.0}] * 2


def test_resume_is_exact(sims, tmp_path):
    full = make_sites(sims, rounds=2)
    ref = run_federated(full, 2, checkpoint_dir=tmp_path / "a")
    first = make_sites(sims, rounds=2)
    run_federated(first, 1, checkpoint_dir=tmp_path / "b", test=False)
    resumed = make_sites(sims, rounds=2)  # fresh objects: as after a restart
    res = run_federated(resumed, 2, checkpoint_dir=tmp_path / "b", resume=True)
    for a, b in zip(full, resumed):
        assert b.round == 2
        _state_equal(a.model.state_dict(), b.model.state_dict())
        _state_equal(a.optimizer.state_dict()["state"][0], b.optimizer.state_dict()["state"][0])
        assert a.lr == b.lr and a.best_round == b.best_round
    assert res.sites == ref.sites
    assert res.history == ref.history and res.weights == ref.weights
    _state_equal(res.shared, ref.shared)
    # byte round trip (Flower context.state) reproduces the site too
    again = make_sites(sims[:1], rounds=2)[0]
    again.load_bytes(full[0].to_bytes())
    _state_equal(again.model.state_dict(), full[0].model.state_dict())
    # a checkpoint of another site is refused, naming both
    with pytest.raises(ValueError, match=r"Site 'sim-B'.*site='sim-A'"):
        make_sites(sims[1:2], rounds=2)[0].load(tmp_path / "b" / "site-sim-A.pt")
    with pytest.raises(ValueError, match="trained all 2 rounds"):
        full[0].train_round(None)


def test_failures_are_named(sims):
    sites = make_sites(sims[:2], rounds=1)

    def boom(shared=None):
        raise OSError("disk gone")

    sites[1].train_round = boom
    with pytest.raises(RuntimeError, match="Site 'sim-B' failed in round 1: disk gone"):
        run_federated(sites, 1)
    spec3 = SiteSpec("three", 14, 200.0, 1.0, 3, 4)
    ts3 = simulate_sites(specs=[spec3], seed=0)[0][1]
    ts3.y[:] = np.arange(len(ts3.y)) % 3
    ts3.classes = ["a", "b", "c"]
    odd = Site(SiteData.from_trialset(ts3, "three"), rounds=1)
    with pytest.raises(ValueError, match=r"sites \['three'\] do not match"):
        run_federated(make_sites(sims[:2], rounds=1) + [odd], 1)


def test_fedavg_all_and_pooled(sims):
    spec_a, ts = sims[2]
    spec_b = SiteSpec("twin", spec_a.n_chans, spec_a.sfreq, spec_a.duration, 3, 8)
    twin = simulate_sites(specs=[spec_b], seed=9)
    group = [sims[2], twin[0], sims[1]]  # two sites with one montage, one other
    sites = make_sites(group, rounds=1)
    keys = common_keys(sites)
    assert "block1.spatial.weight" not in keys and not any(".bn." in k for k in keys)
    assert set(SHARED) <= set(keys)
    res = run_fedavg_all(sites, 1)
    _state_equal(*(split_state(s.model, keys)[0] for s in sites[:2]))
    assert all(m is not None for m in res.sites.values())
    pooled = run_pooled([s.data for s in make_sites(group, rounds=1)], 1)
    names = [g[0].name for g in group]
    assert pooled.sites[names[2]] is None
    assert pooled.sites[names[0]]["pooled-with"] == names[:2]
    assert pooled.sites[names[1]]["num-examples"] == len(sites[1].data.test)


def test_site_data_save_load(sims, tmp_path):
    spec, ts = sims[1]
    data = SiteData.from_trialset(ts, spec.name, batch_size=spec.batch_size, lr=spec.lr)
    data.save(tmp_path / "s")
    with pytest.raises(FileExistsError):
        data.save(tmp_path / "s")
    back = SiteData.load(tmp_path / "s")
    assert back.name == data.name and back.batch_size == data.batch_size
    np.testing.assert_array_equal(np.asarray(back.train.X), data.train.X)
    assert back.sfreq == data.sfreq
    a, b = Site(data, rounds=1), Site(back, rounds=1)
    a.train_round(None)
    b.train_round(None)
    _state_equal(a.model.state_dict(), b.model.state_dict())


def test_fedprox_is_a_site_option(sims):
    """FedProx lives in Site: prox_mu=0 is plain training bit for bit, the per-round override
    equals the constructor option, and the proximal term holds the shared tensors near the
    round's broadcast (run_federated(prox_mu=) drives it for every site)."""
    data = make_site_data(sims[:1])[0]
    with pytest.raises(ValueError, match="'prox_mu' parameter of Site must be a finite number"):
        Site(data, rounds=1, prox_mu=-1.0)
    init = initial_shared(2)
    plain, zero = Site(data, rounds=2), Site(data, rounds=2, prox_mu=0.0)
    out_plain = plain.train_round(init)
    out_zero = zero.train_round(init, prox_mu=0.0)
    _state_equal(out_plain[0], out_zero[0])
    assert out_plain[2] == out_zero[2]
    _state_equal(plain.model.state_dict(), zero.model.state_dict())
    mu = 100.0
    own, per_round = Site(data, rounds=2, prox_mu=mu), Site(data, rounds=2)
    out_own = own.train_round(init)
    out_round = per_round.train_round(init, prox_mu=mu)
    _state_equal(out_own[0], out_round[0])
    assert out_own[2] == out_round[2]
    assert data.train.X.shape[0] > data.batch_size  # several steps: the term acts after step 1

    def drift(out):
        return sum(float((out[0][k] - init[k]).double().norm() ** 2) for k in init) ** 0.5

    assert drift(out_own) < 0.5 * drift(out_plain)
    # the in-process loop: prox_mu= for every site == the sites' own option
    a = make_sites(sims[:2], rounds=2)
    b = [Site(s.data, rounds=2, prox_mu=mu) for s in make_sites(sims[:2], rounds=2)]
    ra, rb = run_federated(a, 2, prox_mu=mu), run_federated(b, 2)
    _state_equal(ra.shared, rb.shared)
    rc = run_federated(make_sites(sims[:2], rounds=2), 2)  # FedAvg: another result
    assert max(float((ra.shared[k] - rc.shared[k]).abs().max()) for k in SHARED) > 1e-3


def test_units_microvolts_and_volts_train_the_same_model(sims):
    """scale="uV" (default) brings volts to microvolts: a site given microvolts (unit="uV")
    and one given volts train the same model. Trained on volts as they are (scale="none"),
    batch norm's epsilon swamps the signal and the model differs."""
    spec, ts = sims[1]
    volts = SiteData.from_trialset(ts, spec.name, batch_size=spec.batch_size, lr=spec.lr)
    uv_ts = ts.with_data(np.asarray(ts.X, dtype=np.float64) * 1e6)
    micro = SiteData.from_trialset(uv_ts, spec.name, unit="uV", batch_size=spec.batch_size,
                                   lr=spec.lr)
    raw = SiteData.from_trialset(ts, spec.name, scale="none", batch_size=spec.batch_size,
                                 lr=spec.lr)
    x_uv = np.asarray(micro.train.X)
    assert 1.0 < np.std(x_uv) < 1e3 and np.std(np.asarray(raw.train.X)) < 1e-3
    np.testing.assert_allclose(np.asarray(volts.train.X), x_uv, rtol=1e-5,
                               atol=1e-5 * np.abs(x_uv).max())
    runs, logp = [], []
    for data in (volts, micro, raw):
        site = Site(data, rounds=2)
        run_local([site], 2, test=False)
        runs.append(site.model.state_dict())
        with torch.no_grad():
            logp.append(site.model.eval()(torch.from_numpy(np.asarray(data.valid.X))))
    # the same model up to float32 rounding of the inputs, except in the one direction that
    # does not reach the output: the block-1 temporal bias sits in front of a batch norm, so
    # its gradient is rounding noise that Adam scales to full steps (the running mean follows)
    null = {"block1.temporal.bias", "block1.bn.running_mean"}
    for k, v in runs[0].items():
        if torch.is_floating_point(v) and k not in null:
            torch.testing.assert_close(runs[1][k], v, rtol=1e-3, atol=1e-4)
    assert torch.equal(logp[0].argmax(1), logp[1].argmax(1))
    assert float((logp[0] - logp[1]).abs().max()) < 0.02
    # volts as they are: another model altogether
    w = "block1.spatial.weight"
    assert float((runs[2][w] - runs[0][w]).abs().max()) > 1e-3
    assert float((logp[2] - logp[0]).abs().max()) > 1.0
    with pytest.raises(ValueError, match="'unit' parameter of SiteData.from_trialset"):
        SiteData.from_trialset(ts, "x", unit="volt")
    with pytest.raises(ValueError, match="'scale' parameter of SiteData.from_trialset"):
        SiteData.from_trialset(ts, "x", scale=-2.0)


def test_chronological_split_by_run():
    """split="chronological": the last run tests, the run before validates (or the last tenth
    of each class's earlier trials), earlier runs train; one split whatever the fold."""
    import mne
    import pandas as pd

    from bcikit.data import TrialSet

    runs = [4, 8, 12, 4, 8, 12]  # one subject; trials listed out of recording order
    meta = pd.DataFrame({"subject": "1", "session": "0", "run": [r for r in runs for _ in
                                                                  range(10)],
                         "onset": np.tile(np.arange(10.0), 6)})
    meta = pd.concat([meta.iloc[:30], meta.iloc[30:]]).reset_index(drop=True)
    y = np.tile([0, 1], 30)
    ts = TrialSet(np.random.default_rng(0).standard_normal((60, 2, 8)).astype(np.float32), y,
                  meta, mne.create_info(2, 100.0, "eeg"), ["l", "r"])
    train, valid, test = split_site(ts, split="chronological", fold=3)
    assert set(train.meta["run"]) == {4} and set(valid.meta["run"]) == {8}
    assert set(test.meta["run"]) == {12} and (len(train), len(valid), len(test)) == (20, 20, 20)
    train, valid, test = split_site(ts, split="chronological", validation="trial")
    assert set(test.meta["run"]) == {12} and set(valid.meta["run"]) == {8}
    assert len(valid) == 4 and np.bincount(valid.y).tolist() == [2, 2]  # ceil(0.1 * 20) a class
    assert valid.meta["onset"].min() >= 6.0  # the latest trials of run 8
    with pytest.raises(ValueError, match=r"subject '1' has 2 run\(s\) \['4', '8'\]; a "
                                         r"chronological split"):
        split_site(ts.subset(np.flatnonzero(ts.meta["run"] != 12)), split="chronological")


# ---------------------------------------------------------------------------------- MVCNet
def test_mvcnet_federates_with_local_spatial_conv():
    from bcikit.models.mvcnet import MVCNet

    specs = [SiteSpec("m1", 14, 128.0, 1.0, 3, 4, batch_size=8),
             SiteSpec("m2", 20, 128.0, 1.0, 3, 4, batch_size=8)]
    sims = simulate_sites(specs=specs, seed=2)
    sites = []
    for spec, ts in sims:
        data = SiteData.from_trialset(ts, spec.name, batch_size=8, lr=1e-3)
        torch.manual_seed(0)
        model = MVCNet(spec.n_chans, 2, spec.n_times, spec.sfreq, encoder_layers=1)
        sites.append(Site(data, rounds=2, model=model))
    keys = sites[0].keys
    assert keys == ["cnn.temporal.weight", "head.bias", "head.weight"]
    assert sites[0].signature == sites[1].signature
    run_federated(sites, 2)
    s1, l1 = split_state(sites[0].model)
    s2, l2 = split_state(sites[1].model)
    _state_equal(s1, s2)
    assert l1["cnn.spatial.weight"].shape != l2["cnn.spatial.weight"].shape
    assert not torch.equal(l1["cnn.temporal_bn.weight"], l2["cnn.temporal_bn.weight"])


# ---------------------------------------------------------------------------------- simulator
def _cost(specs):
    """Samples a round touches: channels x samples x trials, summed over sites."""
    return sum(s.n_chans * s.n_times * s.n_subjects * 2 * s.trials_per_class for s in specs)


def test_simulator_heterogeneity_and_determinism():
    for size in ("full", "compact"):  # the same ranges in both tables
        specs = site_specs(9, size=size)
        assert min(s.n_chans for s in specs) == 14 and max(s.n_chans for s in specs) == 128
        assert min(s.sfreq for s in specs) == 160 and max(s.sfreq for s in specs) == 512
        assert min(s.duration for s in specs) == 1 and max(s.duration for s in specs) == 7
        assert min(s.n_subjects for s in specs) == 4 and max(s.n_subjects for s in specs) == 50
        # nine geometries; compact's A and B (50 and 40 subjects) share one
        geometries = {(s.n_chans, s.sfreq, s.duration) for s in specs}
        assert len(geometries) == (9 if size == "full" else 8)
        for s in specs:  # every site has a FLEEG geometry
            assert FLEEGNet(s.n_chans, 2, s.n_times, s.sfreq).lengths[3] == 7
    # "compact" is the cheap one: under a quarter of "small"'s samples per round
    assert _cost(site_specs(9, size="compact")) < _cost(site_specs(9, size="small")) / 4
    full = simulate_sites(3, size="tiny", seed=5)
    one = simulate_sites(3, size="tiny", seed=5, only=["sim-B"])
    assert len(one) == 1 and one[0][0].name == "sim-B"
    np.testing.assert_array_equal(one[0][1].X, full[1][1].X)
    for spec, ts in full:
        assert ts.X.shape == (spec.n_subjects * 2 * spec.trials_per_class, spec.n_chans,
                              spec.n_times)
        assert ts.sfreq == spec.sfreq and ts.classes == ["left_hand", "right_hand"]
        assert set(ts.meta["site"]) == {spec.name}
        assert np.bincount(ts.y).tolist() == [ts.X.shape[0] // 2] * 2


def _hand_power_accuracy(ts):
    """Cross-validated accuracy of C3/C4 8-30 Hz log-power (the shared class structure)."""
    from scipy import signal
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.model_selection import cross_val_score

    idx = [ts.ch_names.index(c) for c in ("C3", "C4")]
    sos = signal.butter(4, [8, 30], btype="bandpass", fs=ts.sfreq, output="sos")
    x = signal.sosfiltfilt(sos, np.asarray(ts.X)[:, idx], axis=-1)
    feats = np.log(np.var(x, axis=-1))
    feats = np.c_[feats, feats[:, 0] - feats[:, 1]]
    return cross_val_score(LinearDiscriminantAnalysis(), feats, ts.y, cv=5).mean()


def test_simulator_class_structure():
    spec = SiteSpec("s", 22, 160.0, 2.0, 2, 40)
    pos = simulate_sites(specs=[spec], seed=1)[0][1]
    neg = simulate_sites(specs=[spec], seed=1, negative_control=True)[0][1]
    # chance is 0.5 (balanced classes): the hand areas carry the class in the positive sites
    # and nothing in the negative control
    assert _hand_power_accuracy(pos) > 0.75
    assert _hand_power_accuracy(neg) < 0.65
