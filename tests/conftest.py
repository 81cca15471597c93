"""Shared fixtures: seeds, the real-recordings folder, quiet Flower/MNE."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("MNE_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("BCIKIT_REALDATA", REPO.parent / "shared" / "realdata"))


@pytest.fixture(params=[0, 1], ids=lambda s: f"seed{s}")
def global_random_seed(request) -> int:
    """Deterministic yet not tuned to one seed: every test using it runs with two seeds."""
    return request.param


@pytest.fixture
def rng(global_random_seed) -> np.random.Generator:
    return np.random.default_rng(global_random_seed)


@pytest.fixture
def one_torch_thread():
    """Run the test with one torch thread (CPU timings and results independent of the machine's
    core count; CI has 2 cores), restoring the previous count afterwards. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def realdata() -> Path:
    """``../shared/realdata`` (or ``$BCIKIT_REALDATA``); the test is skipped when it is absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real recordings not found at {REALDATA} (set BCIKIT_REALDATA)")
    return REALDATA
