"""The FLEEG Flower app (``federated/``, :mod:`bcikit.federated.flower`, ``bcikit fl``).

Fast tests drive the real ServerApp body and ClientApp through an in-process grid (protobuf on
the wire, one Context per node, no Ray). The ``slow`` tests run ``flwr run`` on a private
simulation SuperLink with the Ray backend, one SuperNode per site.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
pytest.importorskip("flwr")
torch = pytest.importorskip("torch")

from bcikit.federated import flower as fl  # noqa: E402
from bcikit.federated.loop import run_federated, run_local  # noqa: E402

SHARED = {"block4.conv.weight": (200, 100, 1, 10), "head.conv.weight": (2, 200, 1, 7),
          "head.conv.bias": (2,)}
N_SHARED = 202_802


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    """One trial cache for the module (keyed by content hash, safe to share)."""
    return str(tmp_path_factory.mktemp("fl-cache"))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cfg(run_dir, cache, **kw) -> fl.FLConfig:
    base = dict(sites="sim:tiny:3", num_rounds=2, run_dir=str(run_dir), data_dir=cache,
                round_timeout=120.0, node_wait_timeout=5.0)
    base.update(kw)
    return fl.FLConfig(**base)


def _reference(cfg: fl.FLConfig, rounds: int | None = None, *, local: bool = False):
    """The in-process loop on sites built exactly as the ClientApp builds them."""
    sites = [fl.build_site(s, cfg) for s in fl.parse_sites(cfg.sites, data_dir=cfg.data_dir)]
    runner = run_local if local else run_federated
    return runner(sites, rounds or cfg.num_rounds), sites


def _site_states(cfg: fl.FLConfig, round_: int) -> dict[str, dict[str, torch.Tensor]]:
    out = {}
    for s in fl.parse_sites(cfg.sites, data_dir=cfg.data_dir):
        site = fl.build_site(s, cfg)
        site.load(fl.site_checkpoint_dir(cfg.run_dir, cfg.run_name, cfg.fold, s.name)
                  / f"round-{round_:04d}.pt")
        out[s.name] = site.state_dict()
    return out


def _max_diff(a, b) -> float:
    """Max abs difference over every tensor of two nested state dicts (same structure)."""
    if isinstance(a, torch.Tensor):
        if not torch.is_floating_point(a):
            return 0.0 if torch.equal(a, b) else float("inf")
        return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
    if isinstance(a, dict):
        assert set(a) == set(b)
        return max([_max_diff(a[k], b[k]) for k in a] or [0.0])
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        return max([_max_diff(x, y) for x, y in zip(a, b)] or [0.0])
    if isinstance(a, float):
        if np.isnan(a) or np.isnan(b):
            return 0.0 if np.isnan(a) and np.isnan(b) else float("inf")
        return abs(a - b)
    return 0.0 if a == b else float("inf")


@pytest.fixture(scope="module")
def inproc(tmp_path_factory, cache):
    """A 3-site, 2-round run on the in-process grid, with the message audit on."""
    run_dir = tmp_path_factory.mktemp("fl-run")
    cfg = _cfg(run_dir, cache, audit=True)
    result, grid = fl.run_in_process(cfg)
    return cfg, result, grid


# ------------------------------------------------------------------------------ fidelity
def test_in_process_flower_matches_loop(inproc):
    cfg, result, grid = inproc
    assert result["status"] == "completed" and result["round"] == 2
    ref, sites = _reference(cfg)
    shared = np.load(Path(fl.server_dir(cfg)) / "shared.npz")
    assert sorted(shared.files) == sorted(SHARED)
    assert max(float(np.abs(shared[k] - ref.shared[k].numpy()).max()) for k in SHARED) <= 1e-5
    states = _site_states(cfg, 2)
    for site in sites:  # every tensor: model (local + shared + BN stats), optimiser, best snapshot
        assert _max_diff(states[site.name], site.state_dict()) <= 1e-5
    for name, m in ref.sites.items():
        assert result["sites"][name]["test-acc"] == pytest.approx(m["test-acc"], abs=1e-12)
        assert result["sites"][name]["num-examples"] == m["num-examples"]
    # FedAvg weights: training trials / total, every round
    n = {s.name: s.n_train for s in sites}
    for h in result["history"]:
        w = {k: v["weight"] for k, v in h["sites"].items()}
        assert sum(w.values()) == pytest.approx(1.0)
        assert w == pytest.approx({k: n[k] / sum(n.values()) for k in n})
        # upload: the shared tensors only, 202,802 float32 values per site
        assert all(v["upload-bytes"] >= 4 * N_SHARED for v in h["sites"].values())
        assert all(v["upload-bytes"] < 4 * N_SHARED + 2048 for v in h["sites"].values())


def _walk_records(content):
    for name, rec in content.array_records.items():
        yield "array", name, rec
    for name, rec in content.metric_records.items():
        yield "metric", name, rec
    for name, rec in content.config_records.items():
        yield "config", name, rec


def test_every_message_a_site_sends_holds_only_shared_tensors_and_metrics(inproc):
    cfg, _, grid = inproc
    allowed_metrics = {"train": set(fl.TRAIN_METRICS), "evaluate": set(fl.EVALUATE_METRICS),
                       "query": set(fl.TEST_METRICS), "query.identify": set(fl.IDENTIFY_METRICS)}
    names = {s.name for s in fl.parse_sites(cfg.sites)}
    kinds = {}
    for node, reply in grid.sent:
        assert not reply.has_error()
        mtype = reply.metadata.message_type
        kinds[mtype] = kinds.get(mtype, 0) + 1
        content = reply.content
        for kind, name, rec in _walk_records(content):
            if kind == "array":
                assert mtype == "train" and name == fl.SHARED_RECORD
                assert {k: tuple(a.shape) for k, a in rec.items()} == SHARED
                assert all(a.dtype == "float32" for a in rec.values())
                assert sum(int(np.prod(a.shape)) for a in rec.values()) == N_SHARED
            elif kind == "metric":
                assert name == "metrics" and set(rec) <= allowed_metrics[mtype]
                assert "num-examples" in rec
                assert all(isinstance(v, (int, float)) for v in rec.values())
            else:  # the site's name (and its shared signature): no data, no bytes
                assert name == "site" and set(rec) <= set(fl.SITE_FIELDS)
                assert rec["name"] in names
                assert all(isinstance(v, str) for v in rec.values())
                if "signature" in rec:
                    assert len(rec["signature"]) == 64
        # no record of any other kind (no trials, labels, subjects, local tensors, BN stats)
        assert set(content.array_records) <= {fl.SHARED_RECORD}
    n_sites, rounds = len(names), cfg.num_rounds
    assert kinds == {"query.identify": n_sites, "train": n_sites * rounds,
                     "evaluate": n_sites * rounds, "query": n_sites}
    # the audit log each site keeps (audit=true) lists exactly the same messages
    lines = []
    for name in names:
        path = fl.site_checkpoint_dir(cfg.run_dir, cfg.run_name, cfg.fold, name) / "sent.jsonl"
        lines += [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == len(grid.sent)
    for line in lines:
        for arrays in line["arrays"].values():
            assert {k: tuple(v[0]) for k, v in arrays.items()} == SHARED
        assert "bytes>" not in json.dumps(line["configs"])


def test_local_only_mode_matches_run_local(tmp_path, cache):
    cfg = _cfg(tmp_path / "run", cache, local_only=True, run_name="local")
    result, _ = fl.run_in_process(cfg)
    ref, sites = _reference(cfg, local=True)
    states = _site_states(cfg, 2)
    for site in sites:
        assert _max_diff(states[site.name]["model"], site.state_dict()["model"]) <= 1e-5
        assert result["sites"][site.name]["test-acc"] == pytest.approx(
            ref.sites[site.name]["test-acc"], abs=1e-12)


# ------------------------------------------------------------------------------ resume
def test_stop_after_round_1_and_resume_matches_uninterrupted(inproc, tmp_path, cache):
    cfg_full = inproc[0]
    cfg = _cfg(tmp_path / "run", cache, stop_after=1)
    res1, _ = fl.run_in_process(cfg)
    assert res1["status"] == "stopped" and res1["round"] == 1
    # a fresh run into the same folder is refused (outputs are never overwritten)
    with pytest.raises(FileExistsError, match="resume=true"):
        fl.run_in_process(_cfg(tmp_path / "run", cache))
    # new Flower run: context.state is empty, sites and server resume from their checkpoints
    res2, _ = fl.run_in_process(_cfg(tmp_path / "run", cache, resume=True))
    assert res2["status"] == "completed" and [h["round"] for h in res2["history"]] == [1, 2]
    a, b = _site_states(cfg, 2), _site_states(cfg_full, 2)
    for name in a:
        assert _max_diff(a[name], b[name]) == 0.0
    s1 = np.load(fl.server_dir(cfg) / "shared.npz")
    s2 = np.load(fl.server_dir(cfg_full) / "shared.npz")
    assert all(np.array_equal(s1[k], s2[k]) for k in SHARED)
    assert {k: v["test-acc"] for k, v in res2["sites"].items()} == \
        {k: v["test-acc"] for k, v in inproc[1]["sites"].items()}


def test_resume_without_checkpoint_is_an_error(tmp_path, cache):
    with pytest.raises(FileNotFoundError, match="no server checkpoint"):
        fl.run_in_process(_cfg(tmp_path / "run", cache, resume=True))


# ------------------------------------------------------------------------------ failures
def _sites_file(path: Path, faults: dict[str, str]) -> str:
    rows = []
    for name in ("sim-A", "sim-B", "sim-C"):
        rows.append(f'[[site]]\nname = "{name}"\nsim = "sim:tiny:3"\n'
                    + (f'fault = "{faults[name]}"\n' if name in faults else ""))
    path.write_text("\n".join(rows))
    return str(path)


def test_failing_site_is_named_and_stops_the_run(tmp_path, cache):
    sites = _sites_file(tmp_path / "sites.toml", {"sim-B": "raise@2"})
    cfg = _cfg(tmp_path / "run", cache, sites=sites)
    with pytest.raises(fl.SiteFailure) as info:
        fl.run_in_process(cfg)
    text = str(info.value)
    assert "round 2 (train)" in text and "site 'sim-B' failed" in text
    assert "fault drill" in text and "min-sites is 3" in text
    assert "sim-A" not in text and "sim-C" not in text
    result = fl.read_server_result(cfg.run_dir, cfg.run_name, cfg.fold)
    assert result["status"] == "failed" and "sim-B" in result["error"]
    assert [h["round"] for h in result["history"]] == [1]  # round 1 checkpointed, resumable


def test_failing_site_is_left_out_when_min_sites_allows(tmp_path, cache):
    sites = _sites_file(tmp_path / "sites.toml", {"sim-B": "raise@2"})
    cfg = _cfg(tmp_path / "run", cache, sites=sites, min_sites=2)
    result, grid = fl.run_in_process(cfg)
    assert result["status"] == "completed"
    h2 = result["history"][1]
    assert h2["failed"] == {"train": ["sim-B"]}
    w = {k: v["weight"] for k, v in h2["sites"].items() if "weight" in v}
    assert set(w) == {"sim-A", "sim-C"} and sum(w.values()) == pytest.approx(1.0)
    assert set(result["sites"]) == {"sim-A", "sim-B", "sim-C"}  # sim-B re-joined for the test
    errors = [r for _, r in grid.sent if r.has_error()]
    assert len(errors) == 1 and "sim-B" in errors[0].error.reason


def test_silent_site_times_out_by_name(tmp_path, cache):
    sites = _sites_file(tmp_path / "sites.toml", {"sim-C": "hang:8@1"})
    cfg = _cfg(tmp_path / "run", cache, sites=sites, round_timeout=5.0)
    with pytest.raises(fl.SiteFailure, match=r"site 'sim-C' did not reply within 5 s"):
        fl.run_in_process(cfg)


def test_missing_sites_do_not_hang(tmp_path, cache):
    cfg = _cfg(tmp_path / "run", cache, num_sites=4, node_wait_timeout=1.0)
    with pytest.raises(fl.SiteFailure, match="Only 3 of 4 site"):
        fl.run_in_process(cfg)


def test_signature_mismatch_stops_the_run_naming_the_site(tmp_path, cache):
    from flwr.app import Context, RecordDict

    def tamper(msg, context, call_next):
        reply = call_next(msg, context)
        if reply.has_content() and "site" in reply.content:
            rec = reply.content["site"]
            if rec["name"] == "sim-B" and "signature" in rec:
                rec["signature"] = "0" * 64
        return reply

    cfg = _cfg(tmp_path / "run", cache)
    nodes = [{"partition-id": i, "num-partitions": 3} for i in range(3)]
    grid = fl.InProcessGrid(fl.make_client_app([tamper]), nodes, cfg.to_run_config())
    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                  run_config=cfg.to_run_config())
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    try:
        with pytest.raises(ValueError, match=r"sites \['sim-B'\] do not match"):
            fl.server_main(grid, ctx)
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


# ------------------------------------------------------------------------------ privacy
def test_dp_clipping_bounds_every_update(tmp_path, cache):
    clip = 0.05
    cfg = _cfg(tmp_path / "run", cache, dp_clipping_norm=clip, dp_noise_multiplier=0.0)
    result, grid = fl.run_in_process(cfg)
    assert result["status"] == "completed"
    norms = []
    assert len(grid.received) == len(grid.sent)
    for (node_in, msg), (node_out, reply) in zip(grid.received, grid.sent):
        assert node_in == node_out
        if msg.metadata.message_type != "train":
            continue
        assert msg.content["config"]["clipping_norm"] == pytest.approx(clip)
        before = msg.content["arrays"].to_numpy_ndarrays()
        after = reply.content["arrays"].to_numpy_ndarrays()
        norms.append(np.sqrt(sum(float(((a - b).astype(np.float64) ** 2).sum())
                                 for a, b in zip(after, before))))
    assert len(norms) == 6 and max(norms) <= clip * (1 + 1e-5)
    assert min(norms) > clip * 0.5  # one epoch moves the shared tensors well beyond the clip


def test_dp_noise_changes_the_aggregate(tmp_path, cache):
    cfg = _cfg(tmp_path / "run", cache, dp_clipping_norm=0.05, dp_noise_multiplier=0.5,
               num_rounds=1)
    result, _ = fl.run_in_process(cfg)
    ref = _cfg(tmp_path / "ref", cache, dp_clipping_norm=0.05, dp_noise_multiplier=0.0,
               num_rounds=1)
    fl.run_in_process(ref)
    a = np.load(fl.server_dir(cfg) / "shared.npz")
    b = np.load(fl.server_dir(ref) / "shared.npz")
    # noise sd = 0.5 * 0.05 / 3 sites per value
    d = np.concatenate([(a[k] - b[k]).ravel() for k in SHARED])
    assert result["status"] == "completed"
    assert np.std(d) == pytest.approx(0.5 * 0.05 / 3, rel=0.05)


# ------------------------------------------------------------------------------ FedProx
def _update_norms(grid) -> dict[str, list[float]]:
    """L2 norm of each train reply's shared tensors minus what the site received."""
    out: dict[str, list[float]] = {}
    for (_, msg), (_, reply) in zip(grid.received, grid.sent):
        if msg.metadata.message_type != "train":
            continue
        before = msg.content["arrays"].to_numpy_ndarrays()
        after = reply.content["arrays"].to_numpy_ndarrays()
        out.setdefault(reply.content["site"]["name"], []).append(np.sqrt(sum(
            float(((a - b).astype(np.float64) ** 2).sum()) for a, b in zip(after, before))))
    return out


def test_fedprox_pulls_site_updates_towards_the_global_model(inproc, tmp_path, cache):
    cfg = _cfg(tmp_path / "run", cache, fedprox_mu=50.0)
    result, grid = fl.run_in_process(cfg)
    assert result["status"] == "completed"
    assert all(m.content["config"]["proximal-mu"] == 50.0 for _, m in grid.received
               if m.metadata.message_type == "train")
    prox, plain = _update_norms(grid), _update_norms(inproc[2])
    assert set(prox) == set(plain) == {"sim-A", "sim-B", "sim-C"}
    # round 1 starts from the same weights: the proximal term (zero at the first step) shrinks
    # the epoch's update of sites with several batches; sim-C has one batch, one step: unchanged
    batches = {s.name: fl.build_site(s, cfg).batches_per_epoch
               for s in fl.parse_sites(cfg.sites, data_dir=cache)}
    assert batches == {"sim-A": 3, "sim-B": 2, "sim-C": 1}
    for name in ("sim-A", "sim-B"):
        assert prox[name][0] < 0.5 * plain[name][0]
    assert prox["sim-C"][0] == pytest.approx(plain["sim-C"][0], rel=1e-6)
    # mu = 0 through the proximal code path is plain FedAvg, bit for bit
    site = fl.parse_sites("sim:tiny:3", data_dir=cache)[0]
    a = fl.build_site(site, _cfg(tmp_path / "x", cache))
    b = fl.ProxSite(a.data, rounds=2, seed=123)
    init = fl._from_arrayrecord(fl._to_arrayrecord(a.shared_state()))
    out_a, _, _ = a.train_round(init)
    out_b, _, _ = b.train_round(init, prox_mu=0.0)
    assert all(torch.equal(out_a[k], out_b[k]) for k in out_a)


# ------------------------------------------------------------------------------ config
def test_run_config_validation():
    with pytest.raises(ValueError, match="Unknown run-config key 'num-round'"):
        fl.FLConfig.from_run_config({"num-round": 3})
    with pytest.raises(TypeError, match="'num-rounds' must be an integer"):
        fl.FLConfig.from_run_config({"num-rounds": 2.5})
    with pytest.raises(ValueError, match="'weighting' parameter .* must be one of"):
        fl.FLConfig.from_run_config({"weighting": "trials"})
    with pytest.raises(ValueError, match="'stop-after' \\(5\\) exceeds"):
        fl.FLConfig.from_run_config({"num-rounds": 3, "stop-after": 5})
    with pytest.raises(ValueError, match="needs 'dp-clipping-norm'"):
        fl.FLConfig.from_run_config({"dp-noise-multiplier": 1.0})
    cfg = fl.FLConfig.from_run_config({"num-rounds": 3, "round-timeout": 10})
    assert cfg.num_rounds == 3 and cfg.round_timeout == 10.0
    assert fl.FLConfig.from_run_config(cfg.to_run_config()) == cfg


def test_app_pyproject_defaults_match_flconfig():
    import tomllib

    app = Path(__file__).resolve().parents[1] / "federated" / "pyproject.toml"
    data = tomllib.loads(app.read_text())
    conf = data["tool"]["flwr"]["app"]["config"]
    assert fl.FLConfig.from_run_config(conf) == fl.FLConfig()
    assert data["tool"]["flwr"]["app"]["components"] == {"serverapp": "server_app:app",
                                                         "clientapp": "client_app:app"}


def test_parse_sites_forms(tmp_path):
    sites = fl.parse_sites("sim:tiny:4:negative:seed=3")
    assert [s.name for s in sites] == ["sim-A", "sim-B", "sim-C", "sim-D"]
    assert sites[0].sim == {"n_sites": 4, "size": "tiny", "negative_control": True, "seed": 3}
    assert len(fl.parse_sites("sim")) == 9
    with pytest.raises(ValueError, match="unknown part 'huge'"):
        fl.parse_sites("sim:huge")
    with pytest.raises(FileNotFoundError, match="neither 'sim"):
        fl.parse_sites(str(tmp_path / "nope.toml"))
    f = tmp_path / "s.toml"
    f.write_text('[[site]]\nname = "x"\nsim = "sim:tiny:3"\nrow = "sim-A"\n[[site]]\n'
                 'name = "x"\nsim = "sim:tiny:3:seed=1"\nrow = "sim-A"\n')
    with pytest.raises(ValueError, match=r"unique; \['x'\]"):
        fl.parse_sites(str(f))
    f.write_text('[[site]]\nname = "x"\nsim = "sim:tiny:3"\n')
    with pytest.raises(ValueError, match="'x' is not a row of the simulator"):
        fl.parse_sites(str(f))
    # two sites on one simulator row, different simulator seeds: different trials
    f.write_text('[[site]]\nname = "a0"\nsim = "sim:tiny:3"\nrow = "sim-B"\n[[site]]\n'
                 'name = "a1"\nsim = "sim:tiny:3:seed=1"\nrow = "sim-B"\n')
    a0, a1 = fl.parse_sites(str(f))
    d0, d1 = (fl.load_site_data(s) for s in (a0, a1))
    assert d0.name == "a0" and d0.n_chans == d1.n_chans == 14
    assert not np.allclose(np.asarray(d0.train.X), np.asarray(d1.train.X))
    f.write_text('[[site]]\nname = "a"\nsim = "sim:tiny:3"\nbatch = 3\n')
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['batch'\]"):
        fl.parse_sites(str(f))
    f.write_text('[[site]]\nname = "sim-A"\nsim = "sim:tiny:3"\nfault = "explode@2"\n')
    with pytest.raises(ValueError, match="fault must be"):
        fl.parse_sites(str(f))


def test_node_config_forms(tmp_path):
    cfg = fl.FLConfig(sites="sim:tiny:3", run_dir=str(tmp_path))
    s = fl.site_config_from_node({"partition-id": 2, "num-partitions": 3}, cfg)
    assert s.name == "sim-C" and s.run_dir == str(tmp_path)
    s = fl.site_config_from_node({"site": "sim-B", "sim": "sim:tiny:3", "lr": 0.001,
                                  "run-dir": str(tmp_path / "b")}, cfg)
    assert s.name == "sim-B" and s.lr == 0.001 and s.run_dir == str(tmp_path / "b")
    with pytest.raises(ValueError, match="not a row of the simulator"):
        fl.site_config_from_node({"site": "sim-Z", "sim": "sim:tiny:3"}, cfg)
    with pytest.raises(ValueError, match="exactly one of 'dataset-card', 'sim'"):
        fl.site_config_from_node({"site": "a"}, cfg)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fl.site_config_from_node({"site": "a", "dataset-card": str(tmp_path / "x.toml")}, cfg)
    with pytest.raises(ValueError, match=r"Unknown node-config key\(s\) \['colour'\]"):
        fl.site_config_from_node({"site": "a", "colour": "red"}, cfg)
    with pytest.raises(ValueError, match="partition-id 5 is outside the 3 site"):
        fl.site_config_from_node({"partition-id": 5}, cfg)


def test_card_site_from_node_config(realdata, tmp_path):
    """A real site through its dataset card (PhysioNet S001, runs as split groups)."""
    card = Path(__file__).resolve().parents[1] / "datasets" / "realdata_eegmmidb_S001.toml"
    cfg = fl.FLConfig(num_rounds=1, run_dir=str(tmp_path), validation="subject")
    s = fl.site_config_from_node({"site": "S001", "dataset-card": str(card), "group": "run",
                                  "data-dir": str(tmp_path / "cache")}, cfg)
    data = fl.load_site_data(s, fold=0, validation="subject")
    assert data.n_chans == 64 and data.sfreq == 160.0
    assert len(data.train) + len(data.valid) + len(data.test) == 45  # imagery L/R trials
    subjects = [set(d.meta["subject"]) for d in (data.train, data.valid, data.test)]
    assert all(len(x) == 1 for x in subjects) and len(set.union(*subjects)) == 3
    again = fl.load_site_data(s, fold=0, validation="subject")  # from the memory-mapped cache
    assert np.array_equal(np.asarray(again.train.X), np.asarray(data.train.X))


# ------------------------------------------------------------------------------ CLI
def test_cli_fl_simulate_in_process(tmp_path, capsys):
    from bcikit.cli import main

    out = tmp_path / "out"
    rc = main(["fl", "simulate", "--engine", "inprocess", "--sites", "sim:tiny:3", "--rounds",
               "2", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["sites"]) == {"sim-A", "sim-B", "sim-C"}
    cfg = fl.FLConfig(sites="sim:tiny:3", num_rounds=2, data_dir=str(out / "cache"))
    ref_fed, _ = _reference(cfg)
    ref_loc, _ = _reference(cfg, local=True)
    for name, e in res["sites"].items():
        assert isinstance(e["federated_acc"], float) and isinstance(e["local_acc"], float)
        assert e["federated_acc"] == pytest.approx(ref_fed.sites[name]["test-acc"], abs=1e-12)
        assert e["local_acc"] == pytest.approx(ref_loc.sites[name]["test-acc"], abs=1e-12)
        assert e["n_trials"] == ref_fed.sites[name]["num-examples"] > 0
    assert res["upload_bytes_per_round"] >= 3 * 4 * N_SHARED
    assert "results:" in capsys.readouterr().out
    # never overwrite: a second run into the same folder is a one-line error, exit status 2
    rc = main(["fl", "simulate", "--engine", "inprocess", "--sites", "sim:tiny:3", "--out",
               str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "exists and is not empty" in err and len(err.strip().splitlines()) == 1


def test_cli_fl_errors(tmp_path, capsys):
    from bcikit.cli import main

    assert main(["fl", "simulate", "--sites", "sim:huge", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown part 'huge'" in err and len(err.strip().splitlines()) == 1
    assert main(["fl"]) == 2
    assert "needs a sub-command" in capsys.readouterr().err


# ------------------------------------------------------------------------------ Ray (flwr run)
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_flwr_run_simulation_matches_in_process_loop(tmp_path, cache):
    """`bcikit fl simulate` on Ray (flwr run, 9 SuperNodes, 3 rounds) == the in-process loop."""
    from bcikit.cli import main

    out = tmp_path / "out"
    rc = main(["fl", "simulate", "--sites", "sim:tiny:9", "--rounds", "3", "--out", str(out),
               "--cpus", "2", "--timeout", "500", "--set", "audit=true"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["engine"] == "ray" and res["flower_status"] == "completed"
    cfg = fl.FLConfig(sites="sim:tiny:9", num_rounds=3, run_dir=str(out / "run"),
                      data_dir=str(out / "cache"))
    ref, sites = _reference(cfg)
    shared = np.load(fl.server_dir(cfg) / "shared.npz")
    assert max(float(np.abs(shared[k] - ref.shared[k].numpy()).max()) for k in SHARED) <= 1e-5
    states = _site_states(cfg, 3)
    assert len(states) == 9
    for site in sites:
        assert _max_diff(states[site.name], site.state_dict()) <= 1e-5
        assert res["sites"][site.name]["federated_acc"] == pytest.approx(
            ref.sites[site.name]["test-acc"], abs=1e-6)
    # the Ray run's own audit: every message every site sent
    for site in sites:
        path = fl.site_checkpoint_dir(cfg.run_dir, cfg.run_name, 0, site.name) / "sent.jsonl"
        lines = [json.loads(x) for x in path.read_text().splitlines()]
        assert [ln["type"] for ln in lines] == ["query.identify"] + \
            ["train", "evaluate"] * 3 + ["query"]
        for ln in lines:
            assert "error" not in ln
            arrays = ln["arrays"]
            assert (arrays == {} if ln["type"] != "train" else
                    {k: tuple(v[0]) for k, v in arrays["arrays"].items()} == SHARED)
            assert set(ln["configs"]) == {"site"}


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, cache):
    """A Ray run in which site sim-B raises in round 3 (min-sites = all): it must stop."""
    from bcikit.federated.cli import flower_simulation

    root = tmp_path_factory.mktemp("fl-ray-fault")
    sites = _sites_file(root / "sites.toml", {"sim-B": "raise@3"})
    conf = {"sites": sites, "num-rounds": 3, "run-dir": str(root / "run"), "data-dir": cache,
            "round-timeout": 300.0}
    try:
        flower_simulation(conf, num_supernodes=3, folder=root / "flower-1", cpus=2,
                          timeout=400)
    except RuntimeError as err:
        return root, conf, err
    return root, conf, None


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_flwr_run_failing_site_is_named(interrupted):
    root, conf, err = interrupted
    assert err is not None, "the run with a failing site must not complete"
    text = str(err)
    assert "site 'sim-B' failed" in text and "round 3 (train)" in text
    assert "fault drill" in text and "min-sites is 3" in text


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_flwr_run_resumes_exactly_after_failure(interrupted, cache):
    """Fixed site, `resume=true`: a new flwr run continues from the round-2 checkpoints of the
    server and of every site and ends where an uninterrupted run ends."""
    from bcikit.federated.cli import flower_simulation

    root, conf, err = interrupted
    assert err is not None
    sites = _sites_file(root / "sites-fixed.toml", {})
    conf = {**conf, "sites": sites, "resume": True}
    result = flower_simulation(conf, num_supernodes=3, folder=root / "flower-2", cpus=2,
                               timeout=400)
    assert result["status"] == "completed"
    assert [h["round"] for h in result["history"]] == [1, 2, 3]
    cfg = fl.FLConfig.from_run_config(conf)
    ref, sites_ref = _reference(fl.FLConfig.from_run_config({**conf, "resume": False}))
    states = _site_states(cfg, 3)
    for site in sites_ref:
        assert _max_diff(states[site.name], site.state_dict()) <= 1e-5
    shared = np.load(fl.server_dir(cfg) / "shared.npz")
    assert max(float(np.abs(shared[k] - ref.shared[k].numpy()).max()) for k in SHARED) <= 1e-5
