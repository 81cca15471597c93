"""Distributed data-parallel training: process-group set-up, sharding helpers and launchers.

Two ways to run the :class:`~bcikit.train.Trainer` on several processes:

* ``torchrun`` (one or many nodes). Write a script that builds the model and calls
  ``Trainer(...).fit(...)``; launch it with ::

      torchrun --nproc_per_node=4 my_script.py            # one node, 4 GPUs
      torchrun --nnodes=2 --nproc_per_node=4 --rdzv-endpoint=host:29500 my_script.py

  or from Python with :func:`launch`. The Trainer reads ``RANK``, ``WORLD_SIZE`` and
  ``LOCAL_RANK`` from the environment and initialises the process group itself (NCCL on CUDA,
  Gloo on CPU).
* :func:`run_distributed` spawns ``nproc`` local processes running a Python function, with the
  process group already initialised (this is what ``bcikit run --nproc`` uses, and the tests).

Under DDP every rank draws the same global permutation of the training trials each epoch and
takes its share of each global batch, so the global batch equals ``batch_size`` whatever the
number of processes; gradients are averaged by :class:`torch.nn.parallel.DistributedDataParallel`,
metrics are all-reduced, and only rank 0 writes checkpoints and history.
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..utils import check_option, check_range, validate_type

__all__ = ["DistContext", "env_world", "setup", "cleanup", "run_distributed", "launch",
           "find_free_port", "all_reduce_sum", "all_reduce_max", "all_gather_objects",
           "broadcast_object"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a distributed run (world size 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"The environment variable {name} must be an integer. "
                         f"Got {value!r} instead.") from None


def env_world() -> tuple[int, int, int]:
    """Return ``(rank, world_size, local_rank)`` of this process.

    Taken from an initialised process group when there is one, else from the ``RANK``,
    ``WORLD_SIZE`` and ``LOCAL_RANK`` variables that ``torchrun`` sets, else ``(0, 1, 0)``.
    """
    local = _env_int("LOCAL_RANK")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), local if local is not None else 0
    world = _env_int("WORLD_SIZE") or 1
    rank = _env_int("RANK") or 0
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"Inconsistent distributed environment: RANK={rank}, WORLD_SIZE={world}.")
    return rank, world, local if local is not None else 0


def setup(device: torch.device) -> DistContext:
    """Join the process group described by the environment (if any) and say where we stand.

    Nothing happens for a single process. When ``WORLD_SIZE > 1`` and no process group exists
    yet, one is initialised from the ``env://`` variables with backend NCCL for a CUDA device
    and Gloo otherwise; :func:`cleanup` destroys it again.
    """
    rank, world, local = env_world()
    if world == 1:
        return DistContext()
    if dist.is_initialized():
        return DistContext(rank, world, local, initialized_here=False)
    if not dist.is_available():  # pragma: no cover - torch built without distributed
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed.")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, init_method="env://")
    return DistContext(dist.get_rank(), dist.get_world_size(), local, initialized_here=True)


def cleanup(ctx: DistContext) -> None:
    """Destroy the process group if :func:`setup` created it."""
    if ctx.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no-op for one process); returns it."""
    if ctx.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Element-wise maximum over ranks in place (no-op for one process); returns it."""
    if ctx.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Gather one picklable object from every rank, in rank order."""
    if not ctx.is_distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, ctx: DistContext, src: int = 0) -> Any:
    """Send ``obj`` from rank ``src`` to every rank and return it."""
    if not ctx.is_distributed:
        return obj
    box = [obj if ctx.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def find_free_port(host: str = "127.0.0.1") -> int:
    """Ask the OS for a free TCP port on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _spawn_worker(rank: int, fn: Callable, nproc: int, backend: str, port: int, args: tuple,
                  kwargs: dict, result_dir: str) -> None:
    os.environ.update({
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
        "WORLD_SIZE": str(nproc), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(nproc),
    })
    device_id = None
    if backend == "nccl":
        torch.cuda.set_device(rank)
        device_id = torch.device("cuda", rank)
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=nproc,
                            device_id=device_id)
    try:
        result = fn(*args, **kwargs)
        with open(Path(result_dir) / f"rank{rank}.pkl", "wb") as f:
            pickle.dump(result, f)
    finally:
        if dist.is_initialized():  # fn may have destroyed it already
            dist.destroy_process_group()


def _start_method(requested: str | None) -> str:
    """'forkserver' where available, else 'spawn'.

    A fork server is a fresh process (CUDA-safe, no OpenMP threads) that imports torch once and
    then forks the workers, so later runs start in well under a second."""
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    if requested is not None:
        check_option(requested, tuple(methods), "start_method", owner="run_distributed")
        method = requested
    else:
        method = "forkserver" if "forkserver" in methods else "spawn"
    if method == "forkserver":
        from multiprocessing import forkserver

        # DistributedDataParallel imports torch._dynamo on first use (seconds): pay it once in
        # the server rather than in every worker
        preload = list(getattr(forkserver._forkserver, "_preload_modules", ["__main__"]))
        missing = [m for m in (__name__, "torch._dynamo") if m not in preload]
        if missing:
            forkserver.set_forkserver_preload(preload + missing)
    return method


def run_distributed(fn: Callable[..., Any], nproc: int, backend: str = "gloo", *args: Any,
                    start_method: str | None = None, **kwargs: Any) -> list[Any]:
    """Run ``fn(*args, **kwargs)`` in ``nproc`` local processes joined in one process group.

    Each process gets ``RANK``/``LOCAL_RANK`` = its index, ``WORLD_SIZE`` = ``nproc``,
    ``MASTER_ADDR=127.0.0.1`` and a free ``MASTER_PORT``, and an initialised process group, so a
    :class:`~bcikit.train.Trainer` created inside ``fn`` trains with DDP.

    Parameters
    ----------
    fn : callable
        A picklable (module-level) function. Its return value must be picklable too.
    nproc : int
        Number of processes (>= 1).
    backend : {'gloo', 'nccl', 'auto'}
        Process-group backend. ``'nccl'`` needs one CUDA device per process; ``'auto'`` picks
        NCCL when there are at least ``nproc`` CUDA devices and Gloo otherwise.
    *args, **kwargs
        Passed to ``fn``.
    start_method : {'forkserver', 'spawn', 'fork'} or None
        How processes start. ``None``: ``'forkserver'`` where the platform has it, else
        ``'spawn'``. ``'fork'`` is fastest but unsafe once CUDA or OpenMP threads are in use.

    Returns
    -------
    results : list
        ``fn``'s return value on each rank, in rank order.

    Raises
    ------
    torch.multiprocessing.ProcessRaisedException
        When ``fn`` raises in any process (with that process's traceback).

    Examples
    --------
    >>> def work(seed):                                   # doctest: +SKIP
    ...     trainer = Trainer(make_model(), device="cpu", seed=seed).fit(X, y)
    ...     return trainer.history_
    >>> histories = run_distributed(work, 2, "gloo", 0)   # doctest: +SKIP
    """
    import torch.multiprocessing as mp

    validate_type(nproc, "int", "nproc", owner="run_distributed")
    check_range(nproc, "nproc", low=1, owner="run_distributed")
    check_option(backend, ("gloo", "nccl", "auto"), "backend", owner="run_distributed")
    if not callable(fn):
        raise TypeError(f"The 'fn' parameter of run_distributed must be callable. Got {fn!r}.")
    if backend == "auto":
        backend = ("nccl" if torch.cuda.is_available() and torch.cuda.device_count() >= nproc
                   else "gloo")
    if backend == "nccl" and (not torch.cuda.is_available() or torch.cuda.device_count() < nproc):
        n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise ValueError(f"The 'backend' parameter of run_distributed is 'nccl', which needs one "
                         f"CUDA device per process: nproc={nproc} but {n_gpu} CUDA device(s) "
                         f"are available. Use backend='gloo'.")
    port = find_free_port()
    with tempfile.TemporaryDirectory(prefix="bcikit-ddp-") as result_dir:
        mp.start_processes(_spawn_worker,
                           args=(fn, nproc, backend, port, args, kwargs, result_dir),
                           nprocs=nproc, join=True, start_method=_start_method(start_method))
        results = []
        for rank in range(nproc):
            with open(Path(result_dir) / f"rank{rank}.pkl", "rb") as f:
                results.append(pickle.load(f))
    return results


def launch(script: str | os.PathLike, nproc: int, *script_args: str, nnodes: int = 1,
           check: bool = True) -> int:
    """Run a training script under ``torchrun`` on this node (``--standalone`` when one node).

    Parameters
    ----------
    script : path-like or str
        A ``.py`` file, or a module name (run as ``-m module``).
    nproc : int
        Processes on this node (usually the number of GPUs).
    *script_args : str
        Arguments passed to the script.
    nnodes : int
        Number of nodes; for more than one, run this on every node with the rendezvous
        variables that ``torchrun`` documents set, or call ``torchrun`` directly.
    check : bool
        Raise :class:`subprocess.CalledProcessError` when the run fails.

    Returns
    -------
    returncode : int
    """
    validate_type(nproc, "int", "nproc", owner="launch")
    check_range(nproc, "nproc", low=1, owner="launch")
    validate_type(nnodes, "int", "nnodes", owner="launch")
    check_range(nnodes, "nnodes", low=1, owner="launch")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           f"--nnodes={nnodes}"]
    if nnodes == 1:
        cmd.append("--standalone")
    target = str(script)
    if target.endswith(".py") or Path(target).is_file():
        if not Path(target).is_file():
            raise FileNotFoundError(f"The script {target!r} does not exist.")
        cmd.append(target)
    else:
        cmd += ["-m", target]
    cmd += [str(a) for a in script_args]
    return subprocess.run(cmd, check=check).returncode


def _main(argv: list[str] | None = None) -> int:  # pragma: no cover - thin CLI wrapper
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m bcikit.train.ddp",
        description="Run a bcikit training script under torchrun on this node.")
    parser.add_argument("--nproc", type=int, required=True, help="processes (GPUs) on this node")
    parser.add_argument("script", help="a .py file or a module name")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    return launch(ns.script, ns.nproc, *ns.args, check=False)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())
