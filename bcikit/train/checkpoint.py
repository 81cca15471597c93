"""Atomic checkpoints and random-number-generator states for exact resume.

A checkpoint is written to a temporary file in the same folder, flushed to disk and then moved
over the previous one with :func:`os.replace`, which is atomic on POSIX and Windows: a crash or
an error while writing leaves the previous checkpoint intact and no half-written file behind.

Checkpoints hold only tensors and plain Python containers, so they load with
``torch.load(..., weights_only=True)`` (no arbitrary code runs when a checkpoint is read).
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"

__all__ = ["CHECKPOINT_NAME", "save_checkpoint", "load_checkpoint", "capture_rng_state",
           "restore_rng_state"]


def _fsync_dir(folder: Path) -> None:
    """Flush a folder entry to disk so the rename itself survives a power loss (POSIX only)."""
    if os.name != "posix":  # pragma: no cover - Windows has no directory fsync
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - unusual file systems
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically.

    Parameters
    ----------
    state : dict
        What to store (tensors, numbers, strings and containers of them).
    path : path-like
        The checkpoint file. Its folder is created when missing.

    Returns
    -------
    path : Path
        The file written.

    Notes
    -----
    The data go to a temporary file ``.<name>.*.tmp`` beside ``path``, which is flushed and
    fsynced and then renamed over ``path``. If anything fails on the way the temporary file is
    removed, the exception propagates and whatever was at ``path`` before is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors land on the CPU).

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When the file exists but is not a readable checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"The checkpoint file {str(path)!r} does not exist.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"The checkpoint file {str(path)!r} could not be read: {err}") from err
    if not isinstance(state, dict):
        raise ValueError(f"The checkpoint file {str(path)!r} does not hold a dict "
                         f"(got {type(state).__name__}).")
    return state


def capture_rng_state() -> dict[str, Any]:
    """Return the states of Python's, NumPy's and torch's global generators (CUDA included).

    NumPy's state is stored as a tensor so that the result loads with ``weights_only=True``.
    """
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back generator states captured by :func:`capture_rng_state`."""
    py = state["python"]
    # weights_only loading may turn the inner tuple into a list; random.setstate needs tuples
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state({
        "bit_generator": npst["bit_generator"],
        "state": {"key": npst["key"].numpy().astype(np.uint32), "pos": int(npst["pos"])},
        "has_gauss": int(npst["has_gauss"]),
        "gauss": float(npst["gauss"]),
    })
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:  # pragma: no cover - needs a different number of GPUs than when saved
            for i, s in enumerate(cuda_states[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(s, i)
