"""Helpers shared by the benchmark scripts in ``benchmarks/``.

Every benchmark measures bcikit and its reference side by side in one process and one run, and
reports ratios. This module holds what they all need:

- :func:`measure`: wall time over repeats (median, min, every value) and, in one extra run, peak
  memory (``tracemalloc`` peak of Python/numpy allocations and the peak rise of the process's
  resident set size sampled by a thread).
- :func:`environment`: versions, CPU count, load average, date, git commit.
- :func:`write_json`: atomic JSON writing that refuses to overwrite unless asked.
- :func:`realdata_root` / :func:`require_realdata`: where ``../shared/realdata`` is, and a clean
  exit with a message naming the folder when it is absent.
- :func:`network_guard`: fails any attempt to open an internet socket while it is active, so a
  benchmark can prove that a reference library read local files and downloaded nothing.

Benchmarks are scripts, not tests: nothing here asserts a speed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

#: Exit status of a benchmark whose input data is absent (distinct from a crash, status 1).
EXIT_NO_DATA = 2

MB = 1024.0 * 1024.0


# ----------------------------------------------------------------------------------- real data
def realdata_root() -> Path:
    """``$BCIKIT_REALDATA``, or ``../shared/realdata`` next to the repository."""
    return Path(os.environ.get("BCIKIT_REALDATA", REPO.parent / "shared" / "realdata"))


def require_realdata(subfolder: str, files: list[str] | None = None) -> Path:
    """The folder ``realdata_root() / subfolder``; exit with status 2 and a message when it (or
    one of ``files`` in it) is missing."""
    folder = realdata_root() / subfolder
    missing = [] if folder.is_dir() else [str(folder)]
    if not missing:
        missing = [str(folder / f) for f in (files or []) if not (folder / f).is_file()]
    if missing:
        sys.stderr.write(
            f"benchmark skipped: real recordings not found ({', '.join(missing[:4])}"
            f"{', ...' if len(missing) > 4 else ''}).\n"
            "Set BCIKIT_REALDATA to the folder holding 'eegmmidb_S001/' (default: "
            "../shared/realdata next to the repository).\n")
        raise SystemExit(EXIT_NO_DATA)
    return folder


# ------------------------------------------------------------------------------------ measuring
class _RSSSampler:
    """Samples the process's resident set size in a thread; ``peak`` is the highest value seen."""

    def __init__(self, interval: float = 0.002):
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.baseline = self._proc.memory_info().rss
        self.peak = self.baseline
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self._proc.memory_info().rss
            if rss > self.peak:
                self.peak = rss
            time.sleep(self._interval)

    def __enter__(self) -> "_RSSSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        rss = self._proc.memory_info().rss
        self.peak = max(self.peak, rss)


def _summary(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "mean": statistics.fmean(values), "values": values}


def measure(fn: Callable[[Any], Any], *, repeats: int = 3, warmup: int = 1,
            setup: Callable[[], Any] | None = None,
            teardown: Callable[[Any], None] | None = None,
            memory: bool = True) -> tuple[dict[str, Any], Any]:
    """Time ``fn`` and measure its peak memory.

    Each run calls ``ctx = setup()`` (untimed), then ``fn(ctx)`` (timed with
    :func:`time.perf_counter`), then ``teardown(ctx)`` (untimed). ``warmup`` runs are done first
    and not recorded (they pay one-time costs such as lazy imports). The memory run is one extra
    run with ``tracemalloc`` on and an RSS sampler, kept apart from the timed runs because
    tracing slows Python code down.

    Returns
    -------
    stats : dict
        ``time_s`` (median/min/max/mean/values), ``repeats``, and when ``memory`` is true
        ``peak_traced_mb`` (peak of allocations tracemalloc sees, numpy arrays included, memory
        maps not) and ``peak_rss_delta_mb`` (highest RSS during the call minus RSS just before).
    result : object
        What the last timed call of ``fn`` returned (for checking the outputs).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1; got {repeats}.")

    def one(timed: bool) -> tuple[float, Any]:
        ctx = setup() if setup is not None else None
        gc.collect()
        try:
            start = time.perf_counter()
            out = fn(ctx)
            elapsed = time.perf_counter() - start
        finally:
            if teardown is not None:
                teardown(ctx)
        return elapsed, out

    for _ in range(warmup):
        one(False)
    times, result = [], None
    for _ in range(repeats):
        result = None  # free the previous output before the next run
        gc.collect()
        elapsed, result = one(True)
        times.append(elapsed)
    stats: dict[str, Any] = {"time_s": _summary(times), "repeats": repeats, "warmup": warmup}
    if memory:
        ctx = setup() if setup is not None else None
        keep = result
        result = None
        gc.collect()
        try:
            tracemalloc.start()
            tracemalloc.reset_peak()
            with _RSSSampler() as rss:
                out = fn(ctx)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        finally:
            if tracemalloc.is_tracing():
                tracemalloc.stop()
            if teardown is not None:
                teardown(ctx)
        del out
        result = keep
        stats["peak_traced_mb"] = peak / MB
        stats["peak_rss_delta_mb"] = (rss.peak - rss.baseline) / MB
    return stats, result


def ratio(a: dict[str, Any], b: dict[str, Any], key: str = "time_s") -> float | None:
    """Median ``key`` of ``a`` over median of ``b`` (time_s) or ``a[key] / b[key]`` (memory)."""
    va, vb = a.get(key), b.get(key)
    if isinstance(va, dict):
        va, vb = va["median"], vb["median"]
    if va is None or vb is None or vb == 0:
        return None
    return float(va) / float(vb)


# ---------------------------------------------------------------------------------- environment
def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def environment(packages: tuple[str, ...] = ("bcikit-neuro", "numpy", "scipy", "pandas", "mne",
                                             "moabb", "braindecode", "torch", "pooch")
                ) -> dict[str, Any]:
    """Versions and machine facts to store next to the numbers."""
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    try:
        import psutil

        mem_gb = psutil.virtual_memory().total / 1024 ** 3
    except ImportError:
        mem_gb = None
    return {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "load_average_1_5_15": load,
        "memory_total_gb": mem_gb,
        "git_commit": _git_commit(),
        "versions": {p: _version(p) for p in packages},
        "argv": sys.argv,
    }


# ------------------------------------------------------------------------------------ JSON output
def write_json(path: str | os.PathLike, payload: dict[str, Any], *, overwrite: bool = False
               ) -> Path:
    """Write ``payload`` as indented JSON, atomically; an existing file is kept unless
    ``overwrite=True`` (then it raises FileExistsError)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} already exists; pass --overwrite to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fid:
            json.dump(payload, fid, indent=1, default=_json_default)
            fid.write("\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; results are for sharing
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ---------------------------------------------------------------------------------- no network
class NetworkAccessError(RuntimeError):
    """Raised by :func:`network_guard` when code tries to reach the internet."""


@contextlib.contextmanager
def network_guard() -> Iterator[list[str]]:
    """Make every IPv4/IPv6 connection attempt raise :class:`NetworkAccessError`.

    Yields the list of attempted addresses (empty when nothing tried), so the caller can store
    "network attempts: 0" with the results. Unix sockets are left alone.
    """
    attempts: list[str] = []
    orig_connect = socket.socket.connect
    orig_connect_ex = socket.socket.connect_ex
    orig_create = socket.create_connection
    orig_getaddrinfo = socket.getaddrinfo

    def _refuse(what: str) -> None:
        attempts.append(what)
        raise NetworkAccessError(f"network access attempted during a benchmark: {what}")

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _refuse(f"connect {address!r}")
        return orig_connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _refuse(f"connect_ex {address!r}")
        return orig_connect_ex(self, address)

    def create_connection(address, *args, **kwargs):
        _refuse(f"create_connection {address!r}")

    def getaddrinfo(host, *args, **kwargs):
        if host not in (None, "localhost", "127.0.0.1", "::1"):
            _refuse(f"getaddrinfo {host!r}")
        return orig_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.create_connection = create_connection
    socket.getaddrinfo = getaddrinfo
    try:
        yield attempts
    finally:
        socket.socket.connect = orig_connect
        socket.socket.connect_ex = orig_connect_ex
        socket.create_connection = orig_create
        socket.getaddrinfo = orig_getaddrinfo


# ------------------------------------------------------------------------------------- printing
README = REPO / "benchmarks" / "README.md"


def update_readme_block(name: str, text: str, *, readme: Path = README) -> None:
    """Replace what stands between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in
    ``benchmarks/README.md`` by ``text``; the rest of the file is kept as it is.

    Raises
    ------
    FileNotFoundError
        The README is absent.
    ValueError
        It lacks either marker (nothing is written).
    """
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if not readme.is_file():
        raise FileNotFoundError(f"{str(readme)!r} does not exist; cannot update its {name} block.")
    content = readme.read_text()
    if begin not in content or end not in content:
        raise ValueError(f"{str(readme)!r} lacks the markers {begin} ... {end}.")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def format_table(rows: list[list[str]], header: list[str]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
