"""``bcikit fl``: run the FLEEG Flower app as a simulation (one SuperNode per site).

``bcikit fl simulate [--sites CARDS_OR_SIM] [--rounds R] [--out DIR] ...`` starts a private
Flower SuperLink in simulation mode on a free loopback port, submits the app in ``federated/``
with ``flwr run`` (Ray backend, ``num-supernodes`` = number of sites), waits for it, then trains
the local-only baseline on the same splits and writes ``DIR/results.json``::

    {"sites": {"<site>": {"federated_acc": float, "local_acc": float, "n_trials": int, ...}},
     "mean_gain": float, ...}

The functions here are also what the tests and the benchmark use to drive real ``flwr run``
simulations (:func:`flower_simulation`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run_command", "simulate", "flower_simulation", "free_port",
           "find_app", "local_superlink", "flwr_env", "preset_path", "load_preset",
           "list_presets"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_app(app: str | os.PathLike | None = None) -> Path:
    """The Flower app folder: ``app``, else ``./federated``, else the one beside the bcikit
    source checkout.

    Raises
    ------
    FileNotFoundError
        When no folder with a ``pyproject.toml`` holding ``[tool.flwr.app]`` is found.
    """
    candidates = [Path(app)] if app is not None else [
        Path.cwd() / "federated", Path(__file__).resolve().parents[2] / "federated"]
    for c in candidates:
        toml = c / "pyproject.toml"
        if toml.is_file() and "[tool.flwr.app]" in toml.read_text():
            return c.resolve()
    where = str(candidates[0]) if app is not None else "./federated or the source checkout"
    raise FileNotFoundError(f"No Flower app found at {where} (a folder whose pyproject.toml has "
                            f"[tool.flwr.app]); pass --app DIR.")


def list_presets(app: str | os.PathLike | None = None) -> list[str]:
    """Names of the run-config presets in the app's ``presets/`` folder."""
    folder = find_app(app) / "presets"
    return sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []


def preset_path(name: str | os.PathLike, app: str | os.PathLike | None = None) -> Path:
    """The file of a run-config preset: ``<app>/presets/<name>.toml``, or ``name`` itself when
    it is a path to a ``.toml`` file.

    Raises
    ------
    FileNotFoundError
        Naming the preset and the presets that exist.
    """
    text = str(name)
    if text.endswith(".toml"):
        path = Path(text).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Preset file {text!r} does not exist.")
        return path.resolve()
    path = find_app(app) / "presets" / f"{text}.toml"
    if not path.is_file():
        raise FileNotFoundError(f"No preset {text!r} in {str(path.parent)!r}; presets: "
                                f"{list_presets(app)}.")
    return path


def load_preset(name: str | os.PathLike, app: str | os.PathLike | None = None
                ) -> dict[str, Any]:
    """A run-config preset (``fleeg``, ``fleeg-reference`` or a ``.toml`` file) as the
    dashed-key mapping Flower takes, validated by :class:`~bcikit.federated.flower.FLConfig`.

    A preset is a flat TOML table of keys of the app's ``[tool.flwr.app.config]``, so the same
    file works as ``flwr run federated <connection> --run-config <file>``.

    Raises
    ------
    FileNotFoundError, ValueError, TypeError
        A missing preset, invalid TOML, a nested table or an unknown key or value (naming the
        file).
    """
    import tomllib

    from .flower import FLConfig

    path = preset_path(name, app)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"Preset {str(path)!r}: not valid TOML ({err}).") from None
    nested = sorted(k for k, v in data.items() if isinstance(v, dict))
    if nested:
        raise ValueError(f"Preset {str(path)!r}: a preset is a flat table of run-config keys; "
                         f"found the table(s) {nested}.")
    try:
        FLConfig.from_run_config(data)
    except (ValueError, TypeError) as err:
        raise type(err)(f"Preset {str(path)!r}: {err}") from None
    return data


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"The Flower command {name!r} is not installed: "
                                f"pip install 'bcikit-neuro[fl]'.")
    return found


def flwr_env(flwr_home: str | os.PathLike) -> dict[str, str]:
    """Environment for Flower processes: a private ``FLWR_HOME``, no telemetry, no runtime
    dependency installation, the current interpreter's folder first on ``PATH``."""
    env = os.environ.copy()
    env["FLWR_HOME"] = str(flwr_home)
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    env.setdefault("RAY_DEDUP_LOGS", "0")
    return env


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"flower-superlink exited with code {proc.returncode}; see "
                               f"{str(log)!r}.")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"flower-superlink did not open port {port} within {timeout:g} s; see "
                       f"{str(log)!r}.")


def _stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextlib.contextmanager
def local_superlink(folder: str | os.PathLike, *, name: str = "bcikit-sim"
                    ) -> Iterator[tuple[str, dict[str, str]]]:
    """A private simulation SuperLink on a free loopback port, stopped on exit.

    Yields the connection name and the environment (``FLWR_HOME`` = ``folder/flwr-home`` whose
    ``config.toml`` names the connection) to pass to ``flwr run``.
    """
    folder = Path(folder)
    home = folder / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n')
    env = flwr_env(home)
    log = folder / "superlink.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [_bin("flower-superlink"), "--insecure", "--simulation", "--host", "127.0.0.1",
             "--port", str(port), "--disable-runtime-dependency-installation"],
            stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=str(folder))
    try:
        _wait_port(port, proc, log, 60.0)
        yield name, env
    finally:
        _stop(proc)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))


def flower_simulation(run_config: Mapping[str, Any], *, num_supernodes: int,
                      folder: str | os.PathLike, app: str | os.PathLike | None = None,
                      cpus: int | None = None, timeout: float | None = None,
                      verbose: bool = False) -> dict[str, Any]:
    """``flwr run`` the Flower app as a Ray simulation and return the server's result.

    Parameters
    ----------
    run_config : mapping
        Run-config overrides (dashed keys of ``[tool.flwr.app.config]``); ``run-dir`` should
        be absolute.
    num_supernodes : int
        Virtual SuperNodes (one per site: ``partition-id`` picks the row of ``sites``).
    folder : path-like
        Where the SuperLink's home, the run-config file and the logs go.
    app : path-like or None
        The Flower app (default :func:`find_app`).
    cpus : int or None
        CPUs Ray may use (default: all, at most one per site); each ClientApp gets one.
    timeout : float or None
        Seconds before ``flwr run`` is stopped.
    verbose : bool
        Echo Flower's log stream.

    Returns
    -------
    dict
        The ServerApp's ``result.json``.

    Raises
    ------
    RuntimeError
        The run failed (the message is the server's error, naming failed sites) or timed out.
    """
    from .flower import FLConfig, read_server_result

    cfg = FLConfig.from_run_config(run_config)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    app_dir = find_app(app)
    cpus = cpus or max(1, min(os.cpu_count() or 1, num_supernodes))
    overrides = folder / "run-config.toml"
    overrides.write_text("".join(f"{k} = {_toml_value(v)}\n" for k, v in run_config.items()))
    fed = (f"num-supernodes={int(num_supernodes)} client-resources-num-cpus=1 "
           f"init-args-num-cpus={int(cpus)} init-args-logging-level=\"warning\"")
    log = folder / "flower.log"
    with local_superlink(folder) as (conn, env):
        cmd = [_bin("flwr"), "run", str(app_dir), conn, "--run-config", str(overrides),
               "--federation-config", fed, "--stream"]
        with open(log, "ab") as fh:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    env=env, cwd=str(folder))
            assert proc.stdout is not None
            t0 = time.monotonic()
            try:
                for line in proc.stdout:
                    fh.write(line)
                    fh.flush()
                    if verbose:
                        sys.stderr.write(line.decode(errors="replace"))
                    if timeout is not None and time.monotonic() - t0 > timeout:
                        raise TimeoutError
                proc.wait(timeout=None if timeout is None else
                          max(1.0, timeout - (time.monotonic() - t0)))
            except (TimeoutError, subprocess.TimeoutExpired):
                _stop(proc)
                raise RuntimeError(f"The Flower simulation did not finish within {timeout:g} s;"
                                   f" see {str(log)!r}.") from None
            except BaseException:
                _stop(proc)
                raise
    if proc.returncode != 0:
        raise RuntimeError(f"flwr run exited with code {proc.returncode}; see {str(log)!r}.")
    try:
        result = read_server_result(cfg.run_dir, cfg.run_name, cfg.fold)
    except FileNotFoundError as err:
        raise RuntimeError(f"{err} Log: {str(log)!r}.") from None
    if result.get("status") == "failed":
        raise RuntimeError(f"The federated run failed: {result.get('error')}")
    if result.get("status") not in ("completed", "stopped"):
        raise RuntimeError(f"The ServerApp ended without a result (status "
                           f"{result.get('status')!r}); see {str(log)!r}.")
    return result


def _check_out(out: str | os.PathLike | None) -> Path:
    if out is None:
        out = Path("runs") / f"fl-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"The output folder {str(out)!r} exists and is not empty (outputs "
                              f"are never overwritten).")
    out.mkdir(parents=True, exist_ok=True)
    return out.resolve()


def simulate(sites: str = "sim:small:9", *, rounds: int | None = None,
             out: str | os.PathLike | None = None, engine: str = "ray", local: bool = True,
             cpus: int | None = None, app: str | os.PathLike | None = None,
             timeout: float | None = None, overrides: Mapping[str, Any] | None = None,
             preset: str | os.PathLike | None = None, verbose: bool = False) -> dict[str, Any]:
    """Federated (Flower) versus local-only training on the same sites and splits.

    Parameters
    ----------
    sites : str
        Comma-separated items: ``"sim[:tiny|compact|small|full][:N][:negative]"``, the
        real-site alias ``"S001"`` (PhysioNet S001, split chronologically by run; left out,
        and listed under ``skipped_sites``, when the real recordings are absent), sites files
        or dataset cards (see :func:`bcikit.federated.flower.parse_sites`), e.g.
        ``"sim:tiny:2,S001"``.
    rounds : int or None
        Federated rounds (= local-only epochs); None: the preset's ``num-rounds``, else 250.
    out : path-like or None
        New output folder (default ``runs/fl-<time>``); ``results.json`` is written there, the
        Flower run under ``out/run``, logs under ``out/flower``.
    engine : {"ray", "inprocess"}
        ``"ray"``: ``flwr run`` on a private simulation SuperLink (one SuperNode per site).
        ``"inprocess"``: the same ServerApp and ClientApp on an in-process grid (no Ray).
    local : bool
        Also train the local-only baseline (in process, identical splits and recipe).
    cpus : int or None
        CPUs for Ray.
    app : path-like or None
        The Flower app folder.
    timeout : float or None
        Seconds for the Flower run.
    overrides : mapping or None
        More run-config keys (dashed), e.g. ``{"min-sites": 8, "fedprox-mu": 0.01}``; they
        win over the preset.
    preset : str, path-like or None
        A run-config preset (:func:`load_preset`): ``"fleeg"`` (bcikit defaults),
        ``"fleeg-reference"`` (the official validation and weights) or a ``.toml`` file.
    verbose : bool
        Stream Flower's log.

    Returns
    -------
    dict
        What ``results.json`` holds: per site ``federated_acc``, ``local_acc``, ``n_trials``
        (test trials) and ``split`` (how the site's trials were split); ``skipped_sites``
        (real sites left out because their recordings are absent, with the reason).
    """
    from ..utils import check_option, logger
    from .flower import (REAL_SITES, SPLIT_NOTES, FLConfig, build_site, parse_sites, real_site,
                         run_in_process, site_unavailable, split_sites_text)

    check_option(engine, ("ray", "inprocess"), "engine", owner="bcikit fl simulate")
    base = load_preset(preset, app) if preset is not None else {}
    # real sites named by alias are optional: without their recordings they are left out
    items, skipped = [], {}
    for item in split_sites_text(sites):
        why = site_unavailable(real_site(item)) if item in REAL_SITES else None
        if why is None:
            items.append(item)
        else:
            skipped[REAL_SITES[item][1]] = why
            logger.warning("bcikit fl simulate: site %s left out: %s", item, why)
    if not items:
        raise ValueError(f"No site left to simulate: {skipped}.")
    used = ",".join(items)
    rows = parse_sites(used)
    out_dir = _check_out(out)
    run_dir = out_dir / "run"
    conf = dict(base)
    conf.update({"sites": used, "run-dir": str(run_dir), "data-dir": str(out_dir / "cache"),
                 "run-name": "fleeg"})
    if rounds is not None or "num-rounds" not in conf:
        conf["num-rounds"] = int(250 if rounds is None else rounds)
    conf.update(dict(overrides or {}))
    cfg = FLConfig.from_run_config(conf)
    t0 = time.perf_counter()
    if engine == "ray":
        fed = flower_simulation(cfg.to_run_config(), num_supernodes=len(rows),
                                folder=out_dir / "flower", app=app, cpus=cpus, timeout=timeout,
                                verbose=verbose)
    else:
        fed, _ = run_in_process(cfg)
        if fed.get("status") == "failed":  # pragma: no cover - server_main raises instead
            raise RuntimeError(f"The federated run failed: {fed.get('error')}")
    t_fed = time.perf_counter() - t0
    local_sites: dict[str, dict[str, Any]] = {}
    t_local = None
    if local:
        from .loop import run_local

        t1 = time.perf_counter()
        specs = parse_sites(used, data_dir=str(out_dir / "cache"))
        site_objs = [build_site(s, cfg) for s in specs]
        res = run_local(site_objs, cfg.num_rounds, verbose=verbose or None)
        local_sites = {n: m for n, m in res.sites.items() if m is not None}
        t_local = time.perf_counter() - t1
    results: dict[str, Any] = {"sites": {}}
    gains = []
    for row in rows:
        f = fed["sites"].get(row.name)
        entry: dict[str, Any] = {
            "federated_acc": None if f is None else float(f["test-acc"]),
            "local_acc": None, "n_trials": None if f is None else int(f["num-examples"]),
            "split": row.group, "split_note": SPLIT_NOTES[row.group]}
        if f is not None:
            entry.update({"federated_loss": float(f["test-loss"]),
                          "federated_best_round": int(f["best-round"]),
                          "n_train": int(f.get("n-train", 0))})
        loc = local_sites.get(row.name)
        if loc is not None:
            entry["local_acc"] = float(loc["test-acc"])
            entry["local_loss"] = float(loc["test-loss"])
            entry["local_best_round"] = loc.get("best-round")
            if entry["n_trials"] is None:
                entry["n_trials"] = int(loc["num-examples"])
        if entry["federated_acc"] is not None and entry["local_acc"] is not None:
            entry["gain"] = entry["federated_acc"] - entry["local_acc"]
            gains.append(entry["gain"])
        results["sites"][row.name] = entry
    fa = [e["federated_acc"] for e in results["sites"].values() if e["federated_acc"] is not None]
    la = [e["local_acc"] for e in results["sites"].values() if e["local_acc"] is not None]
    results.update({
        "mean_federated_acc": sum(fa) / len(fa) if fa else None,
        "mean_local_acc": sum(la) / len(la) if la else None,
        "mean_gain": sum(gains) / len(gains) if gains else None,
        "rounds": cfg.num_rounds, "fold": cfg.fold, "sites_source": str(sites),
        "sites_used": used, "skipped_sites": skipped,
        "preset": None if preset is None else str(preset),
        "engine": engine, "flower_status": fed.get("status"),
        "failed_sites": sorted({n for h in fed.get("history", [])
                                for names in h.get("failed", {}).values() for n in names}),
        "wall_s": {"federated": t_fed, "local": t_local},
        "upload_bytes_per_round": (fed["history"][-1].get("upload-bytes")
                                   if fed.get("history") else None),
        "config": cfg.to_run_config(),
        "server_result": str(Path(cfg.run_dir) / cfg.run_name / f"fold-{cfg.fold}" / "server"
                             / "result.json"),
    })
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    return {**results, "out_dir": str(out_dir)}


# ------------------------------------------------------------------------------ command line
def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``fl`` (with ``simulate``) to the ``bcikit`` sub-commands."""
    fl = sub.add_parser("fl", help="federated learning over Flower (FLEEG)")
    fl_sub = fl.add_subparsers(dest="fl_command", metavar="FL_COMMAND")
    s = fl_sub.add_parser(
        "simulate", help="Flower simulation (one SuperNode per site) vs local-only training",
        description="Run the FLEEG Flower app as a simulation and the local-only baseline on "
                    "the same splits; write OUT/results.json.")
    s.add_argument("--sites", default="sim:small:9", metavar="CARDS_OR_SIM",
                   help="comma-separated: 'sim[:tiny|compact|small|full][:N][:negative]' "
                        "(simulator), 'S001' (PhysioNet S001 when ../shared/realdata is "
                        "there, else left out), sites files ([[site]] tables) or dataset cards "
                        "(default sim:small:9; e.g. sim:tiny:2,S001)")
    s.add_argument("--preset", metavar="NAME",
                   help="run-config preset: 'fleeg' (bcikit defaults), 'fleeg-reference' "
                        "(official validation and weights) or a .toml file; the options below "
                        "win over it")
    s.add_argument("--rounds", type=int, default=None,
                   help="federated rounds (default: the preset's, else 250)")
    s.add_argument("--out", help="output folder to create (default runs/fl-<time>)")
    s.add_argument("--fold", type=int, default=None, help="LOSO fold inside every site (0)")
    s.add_argument("--min-sites", type=int, default=None,
                   help="fewest sites a round may complete with (default: all)")
    s.add_argument("--weighting", choices=["samples", "equal"], default=None,
                   help="FedAvg weights (default samples)")
    s.add_argument("--fedprox-mu", type=float, default=None, help="FedProx mu (0: FedAvg)")
    s.add_argument("--dp-clip", type=float, default=None,
                   help="client-side fixed clipping norm of the shared update (0: no DP)")
    s.add_argument("--dp-noise", type=float, default=None, help="central DP noise multiplier")
    s.add_argument("--engine", choices=["ray", "inprocess"], default="ray",
                   help="ray: flwr run on a simulation SuperLink; inprocess: no Ray")
    s.add_argument("--cpus", type=int, help="CPUs for Ray (default: all)")
    s.add_argument("--no-local", action="store_true", help="skip the local-only baseline")
    s.add_argument("--app", help="the Flower app folder (default ./federated)")
    s.add_argument("--timeout", type=float, help="seconds before the Flower run is stopped")
    s.add_argument("--set", dest="fl_overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="another run-config key, e.g. --set seed=1")
    return fl


def _override(text: str) -> tuple[str, Any]:
    import tomllib

    if "=" not in text:
        raise ValueError(f"--set expects KEY=VALUE; got {text!r}.")
    key, value = text.split("=", 1)
    key = key.strip()
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key, parsed


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed ``bcikit fl ...`` command; returns the exit status."""
    if getattr(args, "fl_command", None) != "simulate":
        raise ValueError("bcikit fl needs a sub-command: simulate.")
    flags = {"fold": args.fold, "min-sites": args.min_sites, "weighting": args.weighting,
             "fedprox-mu": args.fedprox_mu, "dp-clipping-norm": args.dp_clip,
             "dp-noise-multiplier": args.dp_noise}
    # only the options given on the command line win over the preset
    overrides: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    for text in args.fl_overrides:
        k, v = _override(text)
        overrides[k] = v
    if args.rounds is not None and args.rounds < 1:
        raise ValueError(f"--rounds must be at least 1; got {args.rounds}.")
    try:
        res = simulate(args.sites, rounds=args.rounds, out=args.out, engine=args.engine,
                       local=not args.no_local, cpus=args.cpus, app=args.app,
                       timeout=args.timeout, overrides=overrides, preset=args.preset,
                       verbose=bool(getattr(args, "verbose", False)))
    except (RuntimeError, ImportError) as err:  # a failed run (named sites), or no flwr
        raise ValueError(str(err)) from None
    out = Path(res["out_dir"])
    for name, e in res["sites"].items():
        fed = "-" if e["federated_acc"] is None else f"{e['federated_acc']:.3f}"
        loc = "-" if e["local_acc"] is None else f"{e['local_acc']:.3f}"
        print(f"  {name}: federated {fed}  local {loc}  ({e['n_trials']} test trials)")
    if res["mean_gain"] is not None:
        print(f"  mean gain (federated - local): {res['mean_gain']:+.3f}")
    if res["failed_sites"]:
        print(f"  sites left out of some rounds: {res['failed_sites']}")
    for name, why in res["skipped_sites"].items():
        print(f"  site {name} skipped: {why}")
    print(f"results: {out / 'results.json'}")
    return 0
