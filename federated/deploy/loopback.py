#!/usr/bin/env python3
"""A whole FLEEG deployment on one machine, over loopback, with the scripts beside this file.

    python loopback.py OUT [--sites sim:tiny:2] [--rounds 2] [--timeout 600]

1. ``make_certs.py``: a CA, the SuperLink's TLS certificate (127.0.0.1) and one EC key pair per
   site;
2. ``start_superlink.sh``: one SuperLink process with TLS and ``--enable-supernode-auth`` on a
   free loopback port;
3. ``register_supernodes.sh``: ``flwr supernode register`` of every site's public key;
4. ``start_supernode.sh``: one SuperNode process per site, authenticated by its private key,
   its site and data given by ``--node-config``;
5. ``run_app.sh``: ``flwr run federated`` against that SuperLink, streaming its log;
6. every process is stopped; ``OUT/server/fleeg/fold-0/server/result.json`` holds the result.

Exit status 0 when the run completed. Logs: ``OUT/logs``. This is what tests/test_flower_app.py
runs; on real machines each step runs where README.md says.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen, what: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}; see {log}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not open port {port} within {timeout:g} s; see {log}")


def stop_all(procs: list[subprocess.Popen], timeout: float = 15.0) -> None:
    """SIGTERM to every process at once, then SIGKILL to those still running after
    ``timeout`` seconds (SuperNodes and the SuperLink shut down in parallel)."""
    live = [p for p in procs if p.poll() is None]
    for proc in live:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in live:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def node_config(site, run_dir: Path) -> str:
    """The ``--node-config`` string of a :class:`~bcikit.federated.flower.SiteConfig`."""
    parts = [f'site="{site.name}"']
    if site.sim is not None:
        sim = site.sim
        spec = f"sim:{sim['size']}:{sim['n_sites']}:seed={sim['seed']}"
        if sim["negative_control"]:
            spec += ":negative"
        parts.append(f'sim="{spec}"')
    else:
        parts.append(f'dataset-card="{site.card}"')
        if site.task:
            parts.append(f'task="{site.task}"')
    for key, value in (("batch-size", site.batch_size), ("lr", site.lr)):
        if value is not None:
            parts.append(f"{key}={value}")
    if site.group != "subject":
        parts.append(f'group="{site.group}"')
    parts.append(f'run-dir="{run_dir}"')
    parts.append(f'data-dir="{run_dir / "cache"}"')
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="FLEEG deployment on loopback (TLS, authenticated "
                                            "SuperNodes, one process each).")
    p.add_argument("out", help="new folder for certificates, logs, checkpoints and results")
    p.add_argument("--sites", default="sim:tiny:2",
                   help="sites as bcikit fl simulate takes them (default sim:tiny:2)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole run")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="another run-config key (TOML value), e.g. --set round-timeout=120")
    args = p.parse_args(argv)

    from bcikit.federated.flower import parse_sites

    out = Path(args.out).resolve()
    if out.exists() and any(out.iterdir()):
        print(f"loopback: error: {out} exists and is not empty", file=sys.stderr)
        return 2
    sites = parse_sites(args.sites)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    certs = out / "certs"
    env = os.environ.copy()
    env.update({"FLWR_TELEMETRY_ENABLED": "0", "FLWR_HOME": str(out / "flwr-home"),
                "FLWR_DISABLE_UPDATE_CHECK": "1",
                "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")})
    # every site shares this one machine: one compute thread per process (as Ray's simulation
    # gives each ClientApp), not one per core in every SuperNode's ClientApp at once
    env.setdefault("OMP_NUM_THREADS", "1")
    # each SuperNode's SuperExec looks for new ClientApp tasks every second by default
    env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.2")
    procs: list[subprocess.Popen] = []
    t0 = time.monotonic()

    def run(cmd: list[str], log: str, timeout: float = 120.0) -> None:
        with open(logs / log, "ab") as fh:
            r = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                               timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:2])} failed (exit {r.returncode}); see "
                               f"{logs / log}")

    def start(cmd: list[str], log: str) -> subprocess.Popen:
        fh = open(logs / log, "ab")
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        fh.close()
        procs.append(proc)
        return proc

    try:
        # 1. certificates and keys
        run([sys.executable, str(HERE / "make_certs.py"), str(certs), "--host", "127.0.0.1",
             *[a for s in sites for a in ("--site", s.name)]], "make_certs.log")
        # 2. the SuperLink (TLS + SuperNode authentication)
        port = free_port()
        link = start(["bash", str(HERE / "start_superlink.sh"), str(certs), str(port),
                      "127.0.0.1"], "superlink.log")
        wait_port(port, link, "the SuperLink", logs / "superlink.log", 60.0)
        home = out / "flwr-home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            '[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\n'
            f'address = "127.0.0.1:{port}"\nroot-certificates = "{certs / "ca.crt"}"\n')
        # 3. register every site's public key
        run(["bash", str(HERE / "register_supernodes.sh"), "loopback",
             *[str(certs / "sites" / f"{s.name}.pub") for s in sites]], "register.log")
        # 4. one SuperNode per site
        for s in sites:
            start(["bash", str(HERE / "start_supernode.sh"), f"127.0.0.1:{port}",
                   str(certs / "ca.crt"), str(certs / "sites" / f"{s.name}.key"),
                   node_config(s, out / "sites" / s.name), str(free_port())],
                  f"supernode-{s.name}.log")
        # 5. the app
        conf = {"num-sites": len(sites), "num-rounds": args.rounds,
                "run-dir": str(out / "server"), "node-wait-timeout": 120.0,
                "round-timeout": 300.0}
        lines = [f"{k} = {json.dumps(v)}" for k, v in conf.items()]
        lines += [o.replace("=", " = ", 1) for o in args.overrides]
        (out / "run-config.toml").write_text("\n".join(lines) + "\n")
        remaining = args.timeout - (time.monotonic() - t0)
        run(["bash", str(HERE / "run_app.sh"), "loopback", str(out / "run-config.toml")],
            "flwr-run.log", timeout=max(remaining, 30.0))
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        print(f"loopback: error: {err}", file=sys.stderr)
        return 1
    finally:
        # the run is over (or failed): nothing is left to flush, so do not wait long
        stop_all(list(reversed(procs)), timeout=5.0)
    result_path = out / "server" / "fleeg" / "fold-0" / "server" / "result.json"
    if not result_path.exists():
        print(f"loopback: error: no result at {result_path}; see {logs}", file=sys.stderr)
        return 1
    result = json.loads(result_path.read_text())
    if result.get("status") != "completed":
        print(f"loopback: error: the run {result.get('status')}: {result.get('error')}",
              file=sys.stderr)
        return 1
    accs = {n: round(m["test-acc"], 3) for n, m in result["sites"].items()}
    print(f"loopback: {len(result['history'])} round(s) completed over TLS with "
          f"{len(sites)} authenticated SuperNode(s) in {time.monotonic() - t0:.0f} s; "
          f"test accuracy {accs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
