"""Federated benchmark: what Flower's orchestration costs FLEEG, what travels, how it scales.

Sections (``--only`` picks some; each is written to one JSON file):

``overhead``
    Per-round wall time of the FLEEG Flower app run by ``flwr run`` as a Ray simulation (one
    SuperNode per site) against the **local compute of the same epochs**: bcikit's in-process
    reference loop (:func:`bcikit.federated.run_federated`) on the same sites, splits and recipe
    (it reaches bit-identical weights, so the arithmetic is the same), in this process with one
    torch thread. Ray runs with one CPU (one ClientApp at a time: the same sequential work, so
    the difference is orchestration: messages, serialisation, rebuilding each site from its
    cache and ``context.state``, checkpoints) and with ``--cpus`` CPUs (ClientApps in parallel).
    Also the in-process grid (the same ServerApp/ClientApp code without Ray). Round 1 is reported
    apart; the headline is the median over the other rounds. Set-up (SuperLink, Ray, actors,
    the identify query) and the final test query are reported apart too.
``upload``
    Bytes a round uploads: the shared tensors of every site (``ArrayRecord.count_bytes``), and
    the whole serialised replies of a round (protobuf, train + evaluate, from the in-process
    grid).
``sites20``
    Wall time of a 20-site Ray simulation (the tiny simulator table, three simulator seeds, so
    that no two sites hold the same trials), set-up and per round.
``dp``
    Accuracy cost of the optional differential privacy (Flower's client-side fixed clipping mod
    + central Gaussian noise) on the simulator, in process: mean test accuracy over the sites
    without DP, with clipping only, with clipping and noise.
``deploy`` (only with ``--only deploy``)
    ``federated/deploy/loopback.py``: two sites, TLS, authenticated SuperNodes, one process each;
    per-round wall time (each message starts a ``flwr-clientapp`` process).

    .venv/bin/python benchmarks/bench_federated.py                       # all but deploy
    .venv/bin/python benchmarks/bench_federated.py --only overhead --sites sim:small:3 --rounds 4
    .venv/bin/python benchmarks/bench_federated.py --table-from benchmarks/results/federated.json

Absolute times depend on the machine and its load (stored in the JSON); ratios are the point.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (REPO, RESULTS, environment, format_table,  # noqa: E402
                     update_readme_block, write_json)

SECTIONS = ("overhead", "upload", "sites20", "dp", "deploy")


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _warm_torch() -> None:
    """Pay torch's one-time costs (the first AdamW imports torch._dynamo) before timing."""
    import torch

    torch.set_num_threads(1)
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])


def _reference_rounds(sites_spec: str, rounds: int, data_dir: str) -> dict[str, Any]:
    """Per-round wall time of the in-process reference loop (the local compute)."""
    from bcikit.federated import flower as fl
    from bcikit.federated.loop import run_federated

    cfg = fl.FLConfig(sites=sites_spec, num_rounds=rounds, data_dir=data_dir)
    sites = [fl.build_site(s, cfg) for s in fl.parse_sites(sites_spec, data_dir=data_dir)]
    marks = [time.perf_counter()]
    t0 = time.perf_counter()
    res = run_federated(sites, rounds, test=True,
                        on_round=lambda r, _res: marks.append(time.perf_counter()))
    total = time.perf_counter() - t0
    per_round = [b - a for a, b in zip(marks, marks[1:])]
    return {"per_round_s": per_round, "total_s": total,
            "n_train": {s.name: s.n_train for s in sites},
            "test_acc": {n: m["test-acc"] for n, m in res.sites.items()}}


def _flower_rounds(result: dict[str, Any], wall: float) -> dict[str, Any]:
    """Per-round times of a Flower run; ``compute`` is what the sites spent training and
    validating (timed inside the ClientApp), ``handler`` adds rebuilding/restoring the site and
    checkpointing, the rest of a round's wall time is messaging and aggregation."""
    hist = result["history"]
    per_round = [h.get("wall-s") for h in hist]

    def total(h, *keys):
        return sum((v.get(k) or 0.0) for v in h["sites"].values() for k in keys)

    compute = [total(h, "compute-s", "eval-compute-s") for h in hist]
    handler = [total(h, "handler-s", "eval-handler-s") for h in hist]
    return {"per_round_s": per_round, "total_s": wall,
            "outside_rounds_s": wall - sum(per_round),
            "site_compute_s": compute, "site_handler_s": handler,
            "orchestration_share": [None if not c or w is None else (w - c) / c
                                    for w, c in zip(per_round, compute)],
            "upload_bytes": [h.get("upload-bytes") for h in hist],
            "test_acc": {n: m["test-acc"] for n, m in result["sites"].items()}}


def _ratio(a, b):
    return None if a is None or not b else a / b - 1.0


def bench_overhead(args, work: Path) -> dict[str, Any]:
    from bcikit.federated import flower as fl
    from bcikit.federated.cli import flower_simulation

    sites = fl.parse_sites(args.sites)
    data_dir = str(work / "cache")
    _warm_torch()
    # build the caches once (every side then loads the same memory-mapped splits)
    cfg0 = fl.FLConfig(sites=args.sites, num_rounds=args.rounds, data_dir=data_dir)
    for s in fl.parse_sites(args.sites, data_dir=data_dir):
        fl.build_site(s, cfg0)
    out: dict[str, Any] = {"sites": args.sites, "n_sites": len(sites), "rounds": args.rounds}
    print(f"[overhead] reference loop: {args.sites}, {args.rounds} rounds", flush=True)
    ref = _reference_rounds(args.sites, args.rounds, data_dir)
    out["reference"] = ref
    print("[overhead] in-process grid", flush=True)
    t0 = time.perf_counter()
    res, grid = fl.run_in_process(fl.FLConfig(sites=args.sites, num_rounds=args.rounds,
                                              run_dir=str(work / "inproc"), data_dir=data_dir))
    out["inprocess_grid"] = _flower_rounds(res, time.perf_counter() - t0)
    out["inprocess_grid"]["bytes_up_total"] = grid.bytes_up
    out["inprocess_grid"]["bytes_down_total"] = grid.bytes_down
    out["same_test_acc_as_reference"] = res and all(
        abs(res["sites"][n]["test-acc"] - ref["test_acc"][n]) < 1e-9 for n in ref["test_acc"])
    for cpus in sorted({1, args.cpus}):
        print(f"[overhead] flwr run on Ray, {cpus} CPU(s)", flush=True)
        conf = {"sites": args.sites, "num-rounds": args.rounds, "data-dir": data_dir,
                "run-dir": str(work / f"ray{cpus}"), "round-timeout": 3600.0}
        t0 = time.perf_counter()
        result = flower_simulation(conf, num_supernodes=len(sites), folder=work / f"fl{cpus}",
                                   cpus=cpus, timeout=args.timeout)
        side = _flower_rounds(result, time.perf_counter() - t0)
        side["same_test_acc_as_reference"] = all(
            abs(result["sites"][n]["test-acc"] - ref["test_acc"][n]) < 1e-9
            for n in ref["test_acc"])
        out[f"ray_cpus{cpus}"] = side
    ref_steady = _median(ref["per_round_s"][1:]) or ref["per_round_s"][0]
    summary = {"reference_round_s": ref_steady, "reference_round1_s": ref["per_round_s"][0]}
    for key in [k for k in out if k.startswith("ray_") or k == "inprocess_grid"]:
        steady = _median(out[key]["per_round_s"][1:]) or out[key]["per_round_s"][0]
        summary[f"{key}_round_s"] = steady
        summary[f"{key}_round1_s"] = out[key]["per_round_s"][0]
        summary[f"{key}_overhead"] = _ratio(steady, ref_steady)
        summary[f"{key}_outside_rounds_s"] = out[key]["outside_rounds_s"]
        summary[f"{key}_orchestration_share"] = _median(out[key]["orchestration_share"][1:]) \
            or out[key]["orchestration_share"][0]
    out["summary"] = summary
    return out


def bench_upload(args, work: Path, overhead: dict[str, Any] | None) -> dict[str, Any]:
    from bcikit.federated import flower as fl

    if overhead is None:
        res, grid = fl.run_in_process(fl.FLConfig(sites=args.sites, num_rounds=2,
                                                  run_dir=str(work / "upload"),
                                                  data_dir=str(work / "cache")))
        inproc = _flower_rounds(res, 0.0)
        inproc["bytes_up_total"] = grid.bytes_up
        n_sites, rounds = len(res["sites"]), 2
    else:
        inproc = overhead["inprocess_grid"]
        n_sites, rounds = overhead["n_sites"], overhead["rounds"]
    arrays = inproc["upload_bytes"][0]
    # identify + test replies are small; subtract nothing: report per round incl. evaluate
    return {"n_sites": n_sites, "shared_values_per_site": 202_802,
            "arrays_bytes_per_round": arrays, "arrays_bytes_per_site_round": arrays / n_sites,
            "float32_payload_per_site": 4 * 202_802,
            "serialised_bytes_up_all_messages": inproc["bytes_up_total"],
            "serialised_bytes_up_per_round": inproc["bytes_up_total"] / rounds}


def _sites20_file(path: Path, size: str) -> str:
    rows = []
    letters = "ABCDEFGHI"
    for i in range(20):
        seed, row = divmod(i, 9)
        rows.append(f'[[site]]\nname = "s{i + 1:02d}-{letters[row]}"\nsim = "sim:{size}:9:'
                    f'seed={seed}"\nrow = "sim-{letters[row]}"\n')
    path.write_text("\n".join(rows))
    return str(path)


def bench_sites20(args, work: Path) -> dict[str, Any]:
    from bcikit.federated.cli import flower_simulation

    sites = _sites20_file(work / "sites20.toml", args.sites20_size)
    conf = {"sites": sites, "num-rounds": args.sites20_rounds, "data-dir": str(work / "cache20"),
            "run-dir": str(work / "ray20"), "round-timeout": 3600.0}
    print(f"[sites20] flwr run on Ray: 20 {args.sites20_size} sites, {args.sites20_rounds} rounds,"
          f" {args.cpus} CPU(s)", flush=True)
    t0 = time.perf_counter()
    result = flower_simulation(conf, num_supernodes=20, folder=work / "fl20", cpus=args.cpus,
                               timeout=args.timeout)
    wall = time.perf_counter() - t0
    side = _flower_rounds(result, wall)
    side.update({"n_sites": 20, "size": args.sites20_size, "rounds": args.sites20_rounds,
                 "cpus": args.cpus, "status": result["status"]})
    return side


def bench_dp(args, work: Path) -> dict[str, Any]:
    import numpy as np

    from bcikit.federated import flower as fl

    _warm_torch()
    out: dict[str, Any] = {"sites": args.dp_sites, "rounds": args.dp_rounds, "runs": {}}
    settings = [("none", 0.0, 0.0)] + [(f"clip{c:g}", c, 0.0) for c in args.dp_clip] + \
        [(f"clip{c:g}-noise{z:g}", c, z) for c in args.dp_clip for z in args.dp_noise]
    for name, clip, noise in settings:
        print(f"[dp] {name}: {args.dp_sites}, {args.dp_rounds} rounds", flush=True)
        cfg = fl.FLConfig(sites=args.dp_sites, num_rounds=args.dp_rounds,
                          run_dir=str(work / f"dp-{name}"), data_dir=str(work / "cache-dp"),
                          dp_clipping_norm=clip, dp_noise_multiplier=noise)
        t0 = time.perf_counter()
        res, grid = fl.run_in_process(cfg)
        norms = []
        for (_, msg), (_, reply) in zip(grid.received, grid.sent):
            if msg.metadata.message_type == "train":
                a = msg.content["arrays"].to_numpy_ndarrays()
                b = reply.content["arrays"].to_numpy_ndarrays()
                norms.append(float(np.sqrt(sum(float(((y - x).astype(np.float64) ** 2).sum())
                                               for x, y in zip(a, b)))))
        accs = {n: m["test-acc"] for n, m in res["sites"].items()}
        out["runs"][name] = {"clip": clip, "noise_multiplier": noise,
                             "noise_sd_per_value": noise * clip / len(accs) if clip else 0.0,
                             "mean_test_acc": float(np.mean(list(accs.values()))),
                             "test_acc": accs, "median_update_norm": float(np.median(norms)),
                             "wall_s": time.perf_counter() - t0}
    base = out["runs"]["none"]["mean_test_acc"]
    out["accuracy_cost"] = {k: base - v["mean_test_acc"] for k, v in out["runs"].items()}
    return out


def bench_deploy(args, work: Path) -> dict[str, Any]:
    out_dir = work / "deploy"
    print("[deploy] loopback deployment: 2 tiny sites, 2 rounds", flush=True)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(REPO / "federated" / "deploy" / "loopback.py"),
                        str(out_dir), "--sites", "sim:tiny:2", "--rounds", "2", "--timeout",
                        str(args.timeout)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        return {"status": "failed", "stderr": r.stderr[-2000:], "wall_s": wall}
    result = json.loads((out_dir / "server" / "fleeg" / "fold-0" / "server" / "result.json")
                        .read_text())
    side = _flower_rounds(result, wall)
    side.update({"status": result["status"], "n_sites": 2, "rounds": 2})
    return side


# ------------------------------------------------------------------------------ report
def _fmt(v, unit="", digits=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}{unit}"
    return f"{v}{unit}"


def tables(payload: dict[str, Any]) -> str:
    lines = []
    ov = payload.get("overhead")
    if ov:
        s = ov["summary"]
        rows = [["local compute (in-process loop)", _fmt(s["reference_round_s"], " s"),
                 _fmt(s["reference_round1_s"], " s"), "-", "-", "-"]]
        names = {"inprocess_grid": "Flower app, in-process grid (no Ray)",
                 "ray_cpus1": "flwr run, Ray, 1 CPU", "ray_cpus2": "flwr run, Ray, 2 CPUs"}
        for key, label in names.items():
            if f"{key}_round_s" in s:
                ovh = s[f"{key}_overhead"]
                share = s.get(f"{key}_orchestration_share")
                parallel = key.startswith("ray_cpus") and key != "ray_cpus1"
                rows.append([label, _fmt(s[f"{key}_round_s"], " s"),
                             _fmt(s[f"{key}_round1_s"], " s"),
                             "-" if ovh is None else f"{100 * ovh:+.0f} %",
                             "- (ClientApps in parallel)" if parallel or share is None
                             else f"{100 * share:.1f} %",
                             _fmt(s[f"{key}_outside_rounds_s"], " s", 1)])
        lines.append(f"Per round, {ov['n_sites']} sites `{ov['sites']}`, {ov['rounds']} rounds "
                     f"(steady = median of rounds 2..{ov['rounds']}):\n")
        lines.append(format_table(rows, ["side", "steady round", "round 1",
                                         "round vs local loop", "orchestration / site compute",
                                         "set-up + test"]))
        lines.append("\n*round vs local loop*: steady round over the in-process loop's, two "
                     "runs one after the other (load moves it); *orchestration / site compute*: "
                     "within the same Flower round, (round wall time - seconds the sites spent "
                     "training and validating, timed inside the ClientApps) / those seconds.")
    up = payload.get("upload")
    if up:
        lines.append("\nUpload per round: "
                     f"{up['arrays_bytes_per_site_round'] / 1e3:.1f} kB of shared tensors per site "
                     f"({up['shared_values_per_site']:,} float32 = "
                     f"{up['float32_payload_per_site'] / 1e3:.1f} kB), "
                     f"{up['arrays_bytes_per_round'] / 1e6:.2f} MB for {up['n_sites']} sites; all "
                     f"serialised replies of a round (train + evaluate): "
                     f"{up['serialised_bytes_up_per_round'] / 1e6:.2f} MB.")
    s20 = payload.get("sites20")
    if s20:
        steady = _median(s20["per_round_s"][1:]) or s20["per_round_s"][0]
        lines.append(f"\n20-site simulation (`{s20['size']}` sites, {s20['rounds']} rounds, Ray, "
                     f"{s20['cpus']} CPUs): {s20['total_s']:.0f} s in all, of which "
                     f"{s20['outside_rounds_s']:.0f} s set-up (SuperLink, Ray, 20 sites built) "
                     f"and test, {steady:.1f} s per steady round; status {s20['status']}.")
    dp = payload.get("dp")
    if dp:
        rows = [[k, _fmt(v["clip"]), _fmt(v["noise_multiplier"]),
                 _fmt(v["noise_sd_per_value"], "", 4), _fmt(v["median_update_norm"]),
                 _fmt(v["mean_test_acc"], "", 3), f"{-100 * dp['accuracy_cost'][k]:+.1f}"]
                for k, v in dp["runs"].items()]
        lines.append(f"\nDifferential privacy, `{dp['sites']}`, {dp['rounds']} rounds, in process "
                     f"(mean test accuracy over sites; chance 0.5):\n")
        lines.append(format_table(rows, ["setting", "clip C", "noise z", "noise sd / value",
                                         "median update norm", "mean test acc",
                                         "vs no DP (points)"]))
    de = payload.get("deploy")
    if de and de.get("status") == "completed":
        lines.append(f"\nLoopback deployment (2 tiny sites, TLS, authenticated SuperNodes, one "
                     f"process each): {de['total_s']:.0f} s in all; rounds "
                     + ", ".join(f"{x:.1f} s" for x in de["per_round_s"])
                     + " (each message starts a `flwr-clientapp` process).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="overhead,upload,sites20,dp",
                   help=f"comma-separated sections of {SECTIONS}")
    p.add_argument("--sites", default="sim:small:3", help="sites of the overhead section")
    p.add_argument("--rounds", type=int, default=4, help="rounds of the overhead section")
    p.add_argument("--cpus", type=int, default=2, help="CPUs for the parallel Ray runs")
    p.add_argument("--sites20-size", default="tiny", choices=["tiny", "small", "full"])
    p.add_argument("--sites20-rounds", type=int, default=3)
    p.add_argument("--dp-sites", default="sim:small:3")
    p.add_argument("--dp-rounds", type=int, default=4)
    p.add_argument("--dp-clip", type=float, nargs="+", default=[1.0])
    p.add_argument("--dp-noise", type=float, nargs="+", default=[0.01, 0.1])
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument("--out", default=str(RESULTS / "federated.json"))
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--merge", action="store_true",
                   help="keep the other sections of an existing --out file, replace those run")
    p.add_argument("--update-readme", action="store_true")
    p.add_argument("--table-from", help="print (and with --update-readme write) the tables of a "
                                        "results file, run nothing")
    args = p.parse_args(argv)
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    if args.table_from:
        payload = json.loads(Path(args.table_from).read_text())
        text = tables(payload)
        print(text)
        if args.update_readme:
            update_readme_block("bench_federated", text)
        return 0
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = sorted(set(only) - set(SECTIONS))
    if bad:
        p.error(f"unknown section(s) {bad}; choose from {SECTIONS}")
    out = Path(args.out)
    if out.exists() and not (args.overwrite or args.merge):
        p.error(f"{out} exists; pass --overwrite to replace it (or --merge)")
    import logging

    logging.getLogger("flwr").setLevel(logging.WARNING)
    env = environment(("bcikit-neuro", "torch", "flwr", "ray", "numpy"))
    payload: dict[str, Any] = {"benchmark": "federated", "environment": env, "args": vars(args)}
    if args.merge and out.exists():
        old = json.loads(out.read_text())
        payload = {**old, "benchmark": "federated"}
        payload.setdefault("runs", []).append({"sections": only, "environment": env,
                                               "args": vars(args)})
    runners = {"overhead": lambda w: bench_overhead(args, w),
               "upload": lambda w: bench_upload(args, w, payload.get("overhead")),
               "sites20": lambda w: bench_sites20(args, w),
               "dp": lambda w: bench_dp(args, w),
               "deploy": lambda w: bench_deploy(args, w)}
    with tempfile.TemporaryDirectory(prefix="bench-federated-") as tmp:
        work = Path(tmp)
        for i, section in enumerate(s for s in SECTIONS if s in only):
            payload[section] = runners[section](work)
            payload["load_after"] = os.getloadavg()
            # written after every section: an interrupted run keeps what it measured
            write_json(out, payload, overwrite=args.overwrite or args.merge or i > 0)
    text = tables(payload)
    print(text)
    if args.update_readme:
        update_readme_block("bench_federated", text)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
