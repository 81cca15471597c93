"""The FLEEG Flower app (``federated/``, :mod:`bcikit.federated.flower`, ``bcikit fl``).

Fast tests drive the real ServerApp body and ClientApp through an in-process grid (protobuf on
the wire, one Context per node, no Ray). The ``slow`` tests use real Flower runtimes: ``flwr
run`` on a private simulation SuperLink with the Ray backend (one SuperNode per site) and the
loopback deployment of ``federated/deploy`` (TLS, authenticated SuperNodes, separate
processes), both with FedProx (``fedprox-mu`` > 0). Both start in the background when the
module starts (fixture ``runtimes``), so that their waiting overlaps the fast tests.
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


@pytest.fixture(scope="module")
def local_ref(tmp_path_factory, cache):
    """The in-process local-only baseline of the 3-site, 2-round configuration."""
    return _reference(_cfg(tmp_path_factory.mktemp("fl-local"), cache), local=True)


def test_local_only_mode_matches_run_local(tmp_path, cache, local_ref):
    cfg = _cfg(tmp_path / "run", cache, local_only=True, run_name="local")
    result, _ = fl.run_in_process(cfg)
    ref, sites = local_ref
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
def _sites_file(path: Path, faults: dict[str, str], n: int = 3) -> str:
    """A sites file of the simulator's first ``n`` tiny sites, with fault drills."""
    rows = []
    for name in (f"sim-{c}" for c in "ABCDEFGHI"[:n]):
        rows.append(f'[[site]]\nname = "{name}"\nsim = "sim:tiny:{n}"\n'
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


def test_polling_grid_pulls_until_every_reply_or_the_timeout():
    """PollingGrid: Flower's push-then-pull semantics, without Flower's fixed 3 s sleeps."""
    from types import SimpleNamespace

    class Grid:
        def __init__(self, ready_after):
            self.pulls, self.ready_after, self.node = 0, ready_after, "n"

        def push_messages(self, messages):
            return [f"id{i}" for i, _ in enumerate(messages)]

        def pull_messages(self, ids):
            self.pulls += 1
            return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i))
                    for i in sorted(ids) if self.pulls >= self.ready_after[i]]

    grid = Grid({"id0": 1, "id1": 4})
    polled = fl.PollingGrid(grid, interval=0.001, max_interval=0.002)
    replies = polled.send_and_receive(["a", "b"], timeout=5.0)
    assert sorted(m.metadata.reply_to_message_id for m in replies) == ["id0", "id1"]
    assert grid.pulls == 4 and polled.node == "n"  # other attributes are the grid's
    late = Grid({"id0": 1, "id1": 10 ** 9})
    replies = fl.PollingGrid(late, interval=0.01).send_and_receive(["a", "b"], timeout=0.05)
    assert [m.metadata.reply_to_message_id for m in replies] == ["id0"]


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
@pytest.fixture(scope="module")
def dp_clip(tmp_path_factory, cache):
    """A 2-round run with client-side clipping (norm 0.05) and no noise."""
    cfg = _cfg(tmp_path_factory.mktemp("fl-dp"), cache, dp_clipping_norm=0.05,
               dp_noise_multiplier=0.0)
    result, grid = fl.run_in_process(cfg)
    return cfg, result, grid


def test_dp_clipping_bounds_every_update(dp_clip):
    clip = 0.05
    cfg, result, grid = dp_clip
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


def test_dp_noise_changes_the_aggregate(tmp_path, cache, dp_clip):
    from bcikit.train.checkpoint import load_checkpoint

    # round 1 of the same 2-round schedule, with noise, against the noiseless round 1
    cfg = _cfg(tmp_path / "run", cache, dp_clipping_norm=0.05, dp_noise_multiplier=0.5,
               stop_after=1)
    result, _ = fl.run_in_process(cfg)
    a = np.load(fl.server_dir(cfg) / "shared.npz")
    b = load_checkpoint(fl.server_dir(dp_clip[0]) / "round-0001.pt")["shared"]
    # noise sd = 0.5 * 0.05 / 3 sites per value
    d = np.concatenate([(a[k] - b[k].numpy()).ravel() for k in SHARED])
    assert result["status"] == "stopped"
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


def test_fedprox_in_flower_matches_the_loop_and_changes_the_result(inproc, tmp_path, cache):
    """fedprox-mu > 0: the Flower app (ServerApp + ClientApp, messages through Flower's wire
    format) matches run_federated(prox_mu=mu) to 1e-5 on every tensor, and differs from
    FedAvg (the inproc run, mu = 0): the proximal term pulls each site's update towards the
    round's global model."""
    mu = 50.0
    cfg = _cfg(tmp_path / "run", cache, fedprox_mu=mu)
    result, grid = fl.run_in_process(cfg)
    assert result["status"] == "completed"
    assert all(m.content["config"]["proximal-mu"] == mu for _, m in grid.received
               if m.metadata.message_type == "train")
    sites = [fl.build_site(s, cfg) for s in fl.parse_sites(cfg.sites, data_dir=cache)]
    ref = run_federated(sites, cfg.num_rounds, prox_mu=mu)
    shared = np.load(fl.server_dir(cfg) / "shared.npz")
    assert max(float(np.abs(shared[k] - ref.shared[k].numpy()).max()) for k in SHARED) <= 1e-5
    states = _site_states(cfg, 2)
    for site in sites:
        assert _max_diff(states[site.name], site.state_dict()) <= 1e-5
        assert result["sites"][site.name]["test-acc"] == pytest.approx(
            ref.sites[site.name]["test-acc"], abs=1e-12)
    # mu > 0 changes the result: another aggregate than FedAvg's
    plain = np.load(fl.server_dir(inproc[0]) / "shared.npz")
    assert max(float(np.abs(shared[k] - plain[k]).max()) for k in SHARED) > 1e-3
    prox, fedavg = _update_norms(grid), _update_norms(inproc[2])
    assert set(prox) == set(fedavg) == {"sim-A", "sim-B", "sim-C"}
    # round 1 starts from the same weights: the proximal term (zero at the first step) shrinks
    # the epoch's update of sites with several batches; sim-C has one batch, one step: unchanged
    assert {s.name: s.batches_per_epoch for s in sites} == {"sim-A": 3, "sim-B": 2, "sim-C": 1}
    for name in ("sim-A", "sim-B"):
        assert prox[name][0] < 0.5 * fedavg[name][0]
    assert prox["sim-C"][0] == pytest.approx(fedavg["sim-C"][0], rel=1e-6)


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
    assert fl.parse_sites("sim:compact:2")[1].sim["size"] == "compact"
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
    # comma-separated items mix the simulator, the real-site alias and files
    mixed = fl.parse_sites("sim:tiny:2, S001")
    assert [s.name for s in mixed] == ["sim-A", "sim-B", "S001"]
    s001 = mixed[-1]
    assert (s001.group, s001.task) == ("chronological", "imagery_lr")
    assert s001.card.endswith("datasets/realdata_eegmmidb_S001.toml")
    with pytest.raises(ValueError, match=r"unique; \['sim-A', 'sim-B'\]"):
        fl.parse_sites("sim:tiny:2,sim:tiny:2")
    with pytest.raises(FileNotFoundError, match="real-site alias \\['S001'\\]"):
        fl.parse_sites("sim:tiny:2,S002")


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


# ------------------------------------------------------------------------------ presets
def test_presets_fleeg_and_reference_differ_as_specified(tmp_path, cache):
    """`fleeg`: subject-wise validation, weights = this fold's training trials; `fleeg-reference`:
    trial-wise 10 % validation, constant weights = each site's total trials. Both are flat
    files of the app's run-config keys (what `flwr run --run-config FILE` accepts)."""
    import tomllib

    from bcikit.federated.cli import list_presets, load_preset, preset_path

    assert {"fleeg", "fleeg-reference"} <= set(list_presets())
    app_keys = set(tomllib.loads((Path(__file__).resolve().parents[1] / "federated"
                                  / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
                   ["config"])
    own, ref = load_preset("fleeg"), load_preset("fleeg-reference")
    assert set(own) <= app_keys and set(ref) <= app_keys  # flwr rejects unknown keys
    # what `flwr run federated ... --run-config presets/<name>.toml` hands the app
    from flwr.common.config import fuse_dicts, parse_config_args

    app_conf = tomllib.loads((Path(__file__).resolve().parents[1] / "federated"
                              / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    for name, preset in (("fleeg", own), ("fleeg-reference", ref)):
        fused = fuse_dicts(app_conf, parse_config_args([str(preset_path(name))]))
        assert fl.FLConfig.from_run_config(fused) == fl.FLConfig.from_run_config(
            {**app_conf, **preset})
    assert (own["validation"], own["site-weights"]) == ("subject", "train")
    assert (ref["validation"], ref["site-weights"]) == ("trial", "total")
    assert load_preset(preset_path("fleeg")) == own  # a path works as well
    with pytest.raises(FileNotFoundError, match="No preset 'fleeg-x'"):
        load_preset("fleeg-x")
    bad = tmp_path / "bad.toml"
    bad.write_text('validation = "random"\n')
    with pytest.raises(ValueError, match="bad.toml.*'validation' parameter"):
        load_preset(bad)
    # splits: same test subject, validation subjects apart (fleeg) or trials of the training
    # subjects (reference, 10 % of them)
    row = fl.parse_sites("sim:tiny:3", data_dir=cache)[0]
    d_own = fl.load_site_data(row, fold=0, validation=own["validation"])
    d_ref = fl.load_site_data(row, fold=0, validation=ref["validation"])
    subj = {k: [set(getattr(d, part).meta["subject"]) for part in ("train", "valid", "test")]
            for k, d in (("own", d_own), ("ref", d_ref))}
    assert subj["own"][2] == subj["ref"][2] and len(subj["own"][2]) == 1
    assert not subj["own"][0] & subj["own"][1] and len(subj["own"][1]) == 1
    assert subj["ref"][1] <= subj["ref"][0]
    n_pool = len(d_ref.train) + len(d_ref.valid)
    assert len(d_ref.valid) == max(1, round(0.1 * n_pool))
    assert d_own.n_trials == d_ref.n_trials
    # weights, from the Flower app's own history (one round each)
    weights = {}
    for name, preset in (("own", own), ("ref", ref)):
        cfg = fl.FLConfig.from_run_config({**preset, "sites": "sim:tiny:3", "num-rounds": 1,
                                           "run-dir": str(tmp_path / name), "data-dir": cache,
                                           "node-wait-timeout": 5.0})
        result, _ = fl.run_in_process(cfg)
        weights[name] = {k: v["weight"] for k, v in result["history"][0]["sites"].items()}
        datas = {s.name: fl.load_site_data(s, validation=cfg.validation)
                 for s in fl.parse_sites(cfg.sites, data_dir=cache)}
        count = {k: (d.n_trials if name == "ref" else len(d.train)) for k, d in datas.items()}
        assert weights[name] == pytest.approx({k: c / sum(count.values())
                                               for k, c in count.items()})
        if name == "ref":  # the official weights are constants: another fold, the same ones
            for s in fl.parse_sites(cfg.sites, data_dir=cache):
                assert fl.load_site_data(s, fold=1, validation="trial").n_trials == count[s.name]
            # and the in-process loop with those constant counts gives the same aggregate
            sites = [fl.build_site(s, cfg) for s in fl.parse_sites(cfg.sites, data_dir=cache)]
            loop = run_federated(sites, 1, counts=count)
            agg = np.load(fl.server_dir(cfg) / "shared.npz")
            assert max(float(np.abs(agg[k] - loop.shared[k].numpy()).max())
                       for k in SHARED) <= 1e-5
    assert weights["own"] != pytest.approx(weights["ref"])


# ------------------------------------------------------------------------------ CLI
def test_cli_fl_simulate_in_process(tmp_path, capsys, inproc, local_ref):
    """`bcikit fl simulate --engine inprocess`: the federated accuracies are the Flower app's
    (the inproc run of the same configuration, itself equal to the in-process loop), the local
    ones run_local's, on the same splits."""
    from bcikit.cli import main

    out = tmp_path / "out"
    rc = main(["fl", "simulate", "--engine", "inprocess", "--sites", "sim:tiny:3", "--rounds",
               "2", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["sites"]) == {"sim-A", "sim-B", "sim-C"}
    fed, loc = inproc[1]["sites"], local_ref[0].sites
    for name, e in res["sites"].items():
        assert isinstance(e["federated_acc"], float) and isinstance(e["local_acc"], float)
        assert e["federated_acc"] == pytest.approx(fed[name]["test-acc"], abs=1e-12)
        assert e["local_acc"] == pytest.approx(loc[name]["test-acc"], abs=1e-12)
        assert e["n_trials"] == fed[name]["num-examples"] == loc[name]["num-examples"] > 0
    assert res["upload_bytes_per_round"] >= 3 * 4 * N_SHARED
    assert "results:" in capsys.readouterr().out
    # never overwrite: a second run into the same folder is a one-line error, exit status 2
    rc = main(["fl", "simulate", "--engine", "inprocess", "--sites", "sim:tiny:3", "--out",
               str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "exists and is not empty" in err and len(err.strip().splitlines()) == 1


def test_cli_fl_simulate_with_the_real_site_s001(realdata, tmp_path, capsys):
    """`--sites sim:tiny:2,S001`: two tiny simulated sites and PhysioNet S001 (left vs right
    hand imagery, one subject: split chronologically by run), 2 rounds."""
    from bcikit.cli import main

    out = tmp_path / "out"
    rc = main(["fl", "simulate", "--engine", "inprocess", "--sites", "sim:tiny:2,S001",
               "--rounds", "2", "--out", str(out), "--preset", "fleeg"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert list(res["sites"]) == ["sim-A", "sim-B", "S001"] and res["skipped_sites"] == {}
    s001 = res["sites"]["S001"]
    assert s001["split"] == "chronological" and "by run" in s001["split_note"]
    assert res["sites"]["sim-A"]["split"] == "subject"
    # S001's test split is its last imagery run (R12): 15 trials, 7-8 per hand
    card = fl.real_site("S001")
    data = fl.load_site_data(card, validation="subject")
    assert set(data.test.meta["run"].astype(int)) == {12}
    assert set(data.valid.meta["run"].astype(int)) == {8}
    assert set(data.train.meta["run"].astype(int)) == {4}
    assert s001["n_trials"] == len(data.test) == 15
    for row in fl.parse_sites("sim:tiny:2"):
        assert res["sites"][row.name]["n_trials"] == len(fl.load_site_data(row).test) > 0
    for e in res["sites"].values():
        assert 0.0 <= e["federated_acc"] <= 1.0 and 0.0 <= e["local_acc"] <= 1.0


def test_cli_fl_simulate_leaves_s001_out_without_realdata(tmp_path, monkeypatch, capsys):
    from bcikit.cli import main

    monkeypatch.setenv("BCIKIT_REALDATA", str(tmp_path / "no-realdata"))
    out = tmp_path / "out"
    rc = main(["fl", "simulate", "--engine", "inprocess", "--sites", "sim:tiny:2,S001",
               "--rounds", "1", "--out", str(out), "--no-local"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert list(res["sites"]) == ["sim-A", "sim-B"] and res["sites_used"] == "sim:tiny:2"
    assert "S001" in res["skipped_sites"] and "missing" in res["skipped_sites"]["S001"]
    assert "site S001 skipped" in capsys.readouterr().out


def test_cli_fl_errors(tmp_path, capsys):
    from bcikit.cli import main

    assert main(["fl", "simulate", "--sites", "sim:huge", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown part 'huge'" in err and len(err.strip().splitlines()) == 1
    assert main(["fl"]) == 2
    assert "needs a sub-command" in capsys.readouterr().err


# ------------------------------------------------------------------------------ real runtimes
# Two checks need real Flower runtimes: the spec's 9-site Ray simulation (`flwr run`, stopped in
# round 3 by a site whose process is killed, then resumed from its checkpoints) and the loopback
# deployment (TLS, authenticated SuperNodes, one process per site and per message). Both run
# FedProx (mu > 0; the in-process FedAvg runs above cover mu = 0), so that Ray x FedProx and
# deployment x FedProx are each checked against the in-process loop by the same runs. Both are
# mostly waiting (process start-up, Flower's polling), so they start in the background when this
# module starts and run while the in-process tests above run; the tests below wait for them.
RAY_TIMEOUT = 420
DEPLOY_TIMEOUT = 800
DEPLOY_MU = 50.0
RAY_MU = 50.0  # FedProx in the shared Ray run (9 sites; sim-A and sim-B train several batches)
REPO = Path(__file__).resolve().parents[1]


class _Runtimes:
    """The background runs (each started only when one of its tests was selected)."""

    def __init__(self, root: Path, *, ray: bool, deploy: bool):
        import subprocess
        import sys

        self.root = root
        self.procs: dict[str, subprocess.Popen] = {}
        self._ray: dict | None = None
        env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
        if ray:
            self.ray_out = root / "ray"
            self.faulty = _sites_file(root / "sites.toml", {"sim-E": "kill@3"}, n=9)
            cmd = [sys.executable, "-c", "import sys; from bcikit.cli import main; "
                   "sys.exit(main(sys.argv[1:]))",
                   "fl", "simulate", "--sites", self.faulty, "--rounds", "3", "--out",
                   str(self.ray_out), "--cpus", "2", "--timeout", str(RAY_TIMEOUT),
                   "--no-local", "--set", "audit=true", "--set", "round-timeout=300",
                   "--set", f"fedprox-mu={RAY_MU}"]
            self._start("ray", cmd, env)
        if deploy:
            self.deploy_out = root / "deploy"
            cmd = [sys.executable, str(REPO / "federated" / "deploy" / "loopback.py"),
                   str(self.deploy_out), "--sites", "sim:tiny:2", "--rounds", "2",
                   "--timeout", str(DEPLOY_TIMEOUT), "--set", f"fedprox-mu={DEPLOY_MU}"]
            self._start("deploy", cmd, env)

    def _start(self, name, cmd, env):
        import subprocess
        import time

        out = open(self.root / f"{name}.stdout", "wb")
        err = open(self.root / f"{name}.stderr", "wb")
        self.procs[name] = subprocess.Popen(cmd, stdout=out, stderr=err, env=env,
                                            start_new_session=True)  # its own process group
        self.procs[name].t0 = time.monotonic()
        out.close()
        err.close()

    def wait(self, name: str, timeout: float) -> dict:
        """Wait for a background run: exit code, wall seconds, stdout, stderr."""
        import subprocess
        import time

        proc = self.procs[name]
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            pytest.fail(f"the background {name} run did not end within {timeout:g} s")
        if not hasattr(proc, "wall"):
            proc.wall = time.monotonic() - proc.t0
        return {"rc": proc.returncode, "wall": proc.wall,
                "stdout": (self.root / f"{name}.stdout").read_text(errors="replace"),
                "stderr": (self.root / f"{name}.stderr").read_text(errors="replace")}

    def ray(self) -> dict:
        """The Ray run (FedProx, mu = RAY_MU), then its resume (`resume = true`, the site
        repaired, the same mu) on the in-process Flower grid from the checkpoints the Ray run
        wrote; the uninterrupted in-process loop with the same mu and its round-1 and round-2
        snapshots, and one round of the loop with mu = 0 (FedAvg: what a Ray run that dropped
        the proximal term would hold). The loops run while the Ray run may still run."""
        if self._ray is None:
            conf = {"sites": _sites_file(self.root / "sites-fixed.toml", {}, n=9),
                    "num-rounds": 3, "run-dir": str(self.ray_out / "run"),
                    "data-dir": str(self.ray_out / "cache"), "run-name": "fleeg",
                    "audit": True, "round-timeout": 300.0, "node-wait-timeout": 5.0,
                    "fedprox-mu": RAY_MU}
            cfg = fl.FLConfig.from_run_config(conf)
            # the loops' own trial cache: the Ray run's output folder must not exist before it
            ref_cfg = fl.FLConfig.from_run_config({**conf, "data-dir": str(self.root
                                                                            / "ray-ref-cache")})

            def build():
                return [fl.build_site(s, ref_cfg)
                        for s in fl.parse_sites(ref_cfg.sites, data_dir=ref_cfg.data_dir)]

            sites = build()
            at1, at2 = {}, {}

            def snapshot(r, result):
                if r == 1:
                    at1["shared"] = {k: v.clone() for k, v in result.shared.items()}
                if r == 2:
                    at2["sites"] = {s.name: s.state_dict() for s in sites}
                    at2["shared"] = {k: v.clone() for k, v in result.shared.items()}

            ref = run_federated(sites, 3, prox_mu=RAY_MU, on_round=snapshot)
            fedavg1 = run_federated(build(), 1, prox_mu=0.0, test=False).shared
            res = self.wait("ray", RAY_TIMEOUT + 120)
            killed = fl.read_server_result(self.ray_out / "run", "fleeg", 0)
            resumed, _ = fl.run_in_process(fl.FLConfig.from_run_config({**conf,
                                                                         "resume": True}))
            self._ray = {**res, "killed": killed, "cfg": cfg, "ref": ref, "ref_sites": sites,
                         "at1": at1, "at2": at2, "fedavg1": fedavg1, "resumed": resumed}
        return self._ray

    @staticmethod
    def _kill(proc) -> None:
        import signal

        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(10)
            except Exception:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def close(self) -> None:
        for proc in self.procs.values():  # only when a test failed or was interrupted
            self._kill(proc)


@pytest.fixture(scope="module", autouse=True)
def runtimes(request, tmp_path_factory):
    """Starts, when this module starts, the real-runtime runs its selected tests need."""
    names = {item.name for item in request.session.items
             if getattr(item, "module", None) is request.module}
    ray = any(n.startswith("test_flwr_run") for n in names)
    deploy = "test_loopback_deployment_completes_two_rounds" in names
    if not (ray or deploy):
        yield None
        return
    runs = _Runtimes(tmp_path_factory.mktemp("fl-runtimes"), ray=ray, deploy=deploy)
    yield runs
    runs.close()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_flwr_run_killed_site_is_named_and_the_run_stops(runtimes):
    """`bcikit fl simulate` on Ray (flwr run, 9 SuperNodes, 3 rounds, audit on) in which site
    sim-E's ClientApp process gets SIGKILL in round 3: the site is reported by name and, with
    min-sites = all sites, the run stops after the last complete round instead of hanging."""
    run = runtimes.ray()
    assert run["rc"] == 2 and run["wall"] < RAY_TIMEOUT
    text = run["stderr"]
    assert len(text.strip().splitlines()) == 1, text  # one line, from bcikit fl simulate
    assert "round 3 (train)" in text and "site 'sim-E' failed" in text
    assert "min-sites is 9: the run stops" in text
    # the server's own record: failed, naming the site; rounds 1 and 2 done and checkpointed
    killed = run["killed"]
    assert killed["status"] == "failed" and "site 'sim-E' failed" in killed["error"]
    assert [h["round"] for h in killed["history"]] == [1, 2]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_flwr_run_matches_in_process_loop_and_resumes_exactly(runtimes):
    """Spec §8.3 on Ray, with FedProx: after round 2 the 9-site Ray simulation (fedprox-mu =
    RAY_MU) holds what the in-process loop `run_federated(..., prox_mu=RAY_MU)` holds (every
    tensor of every site and the aggregate, to 1e-5), its round-1 aggregate is FedProx's and
    not FedAvg's, and resumed from its server and site checkpoints (the same mu) it ends where
    the uninterrupted loop ends."""
    from bcikit.train.checkpoint import load_checkpoint

    run = runtimes.ray()
    cfg, ref, at2 = run["cfg"], run["ref"], run["at2"]
    assert cfg.fedprox_mu == RAY_MU > 0
    # the Ray run's ServerApp ran with the mu, and so did the resumed run
    assert run["killed"]["config"]["fedprox-mu"] == RAY_MU
    assert run["resumed"]["config"]["fedprox-mu"] == RAY_MU
    # round 1 on Ray: the FedProx loop's aggregate, well apart from FedAvg's (mu = 0) from the
    # same initial weights (sim-A and sim-B train several batches: the proximal term acts)
    server1 = load_checkpoint(fl.server_dir(cfg) / "round-0001.pt")["shared"]
    assert max(float((server1[k] - run["at1"]["shared"][k]).abs().max())
               for k in SHARED) <= 1e-5
    assert max(float((server1[k] - run["fedavg1"][k]).abs().max()) for k in SHARED) > 1e-3
    ray2 = _site_states(cfg, 2)  # written by the Ray run's ClientApps
    assert len(ray2) == 9
    for name, state in at2["sites"].items():
        assert _max_diff(ray2[name], state) <= 1e-5
    server2 = load_checkpoint(fl.server_dir(cfg) / "round-0002.pt")["shared"]
    assert max(float((server2[k] - at2["shared"][k]).abs().max()) for k in SHARED) <= 1e-5
    result = run["resumed"]
    assert result["status"] == "completed"
    assert [h["round"] for h in result["history"]] == [1, 2, 3]
    shared = np.load(fl.server_dir(cfg) / "shared.npz")
    assert max(float(np.abs(shared[k] - ref.shared[k].numpy()).max()) for k in SHARED) <= 1e-5
    states = _site_states(cfg, 3)
    for site in run["ref_sites"]:
        assert _max_diff(states[site.name], site.state_dict()) <= 1e-5
        assert result["sites"][site.name]["test-acc"] == pytest.approx(
            ref.sites[site.name]["test-acc"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_flwr_run_audit_every_message_of_every_site(runtimes):
    """The Ray run's own audit (audit = true): every message every site sent carried only the
    shared tensors (train) and metrics, never an error, trial, label or local tensor."""
    cfg = runtimes.ray()["cfg"]
    for name in (f"sim-{c}" for c in "ABCDEFGHI"):
        path = fl.site_checkpoint_dir(cfg.run_dir, cfg.run_name, 0, name) / "sent.jsonl"
        types = [json.loads(x)["type"] for x in path.read_text().splitlines()]
        ray = ["query.identify"] + ["train", "evaluate"] * 2
        resumed = ["query.identify", "train", "evaluate", "query"]
        # in round 3 a site may have trained before sim-E's kill stopped the round
        assert types in (ray + resumed, ray + ["train"] + resumed), (name, types)
        if name == "sim-E":
            assert types == ray + resumed  # killed before it could answer
        for ln in (json.loads(x) for x in path.read_text().splitlines()):
            assert "error" not in ln
            arrays = ln["arrays"]
            assert (arrays == {} if ln["type"] != "train" else
                    {k: tuple(v[0]) for k, v in arrays["arrays"].items()} == SHARED)
            assert set(ln["configs"]) == {"site"}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_loopback_deployment_completes_two_rounds(runtimes):
    """`federated/deploy/loopback.py`: one SuperLink with TLS and SuperNode authentication, one
    SuperNode per site as separate processes (keys registered with `flwr supernode register`),
    `flwr run` for two FedProx rounds: it completes, and every site's tensors and the aggregate
    equal the in-process loop's (`run_federated(..., prox_mu=50)`) to 1e-5."""
    from bcikit.train.checkpoint import load_checkpoint

    # the in-process reference first, while the deployment may still run
    cfg = fl.FLConfig(sites="sim:tiny:2", num_rounds=2, fedprox_mu=DEPLOY_MU,
                      data_dir=str(runtimes.root / "deploy-ref-cache"))
    sites = [fl.build_site(s, cfg) for s in fl.parse_sites(cfg.sites, data_dir=cfg.data_dir)]
    ref = run_federated(sites, 2, prox_mu=DEPLOY_MU, test=False)
    run = runtimes.wait("deploy", DEPLOY_TIMEOUT + 80)
    out = runtimes.deploy_out
    logs = out / "logs"
    assert run["rc"] == 0, (run["stderr"], *(p.read_text()[-3000:] for p in logs.glob("*.log")))
    assert "2 round(s) completed over TLS with 2 authenticated SuperNode(s)" in run["stdout"]
    result = json.loads((out / "server" / "fleeg" / "fold-0" / "server" / "result.json")
                        .read_text())
    assert result["status"] == "completed" and [h["round"] for h in result["history"]] == [1, 2]
    assert set(result["sites"]) == {"sim-A", "sim-B"}
    for h in result["history"]:
        assert set(h["sites"]) == {"sim-A", "sim-B"} and "failed" not in h
        assert sum(v["weight"] for v in h["sites"].values()) == pytest.approx(1.0)
    # TLS and SuperNode authentication were on; both keys were registered
    link = (logs / "superlink.log").read_text()
    assert "insecure" not in link.lower() and "running on https://127.0.0.1" in link
    assert "SuperNode authentication is disabled" not in link
    assert (logs / "register.log").read_text().count("registered successfully") == 2
    # each site kept its checkpoints on its own disk (keyed by run, fold and site)
    for site in ("sim-A", "sim-B"):
        ckpt = out / "sites" / site / "fleeg" / "fold-0" / "sites" / site
        assert sorted(p.name for p in ckpt.glob("round-*.pt")) == ["round-0001.pt",
                                                                   "round-0002.pt"]
    # the deployment computed what the in-process loop computes (FedProx), to 1e-5
    shared = np.load(out / "server" / "fleeg" / "fold-0" / "server" / "shared.npz")
    assert sorted(shared.files) == sorted(SHARED)
    assert max(float(np.abs(shared[k] - ref.shared[k].numpy()).max()) for k in SHARED) <= 1e-5
    for site in sites:
        saved = load_checkpoint(out / "sites" / site.name / "fleeg" / "fold-0" / "sites"
                                / site.name / "round-0002.pt")
        assert _max_diff(saved, site.state_dict()) <= 1e-5
