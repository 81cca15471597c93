"""bcikit: brain recordings to trained, honestly evaluated decoders and encoding models.

``import bcikit`` stays light: subpackages (``bcikit.io``, ``bcikit.data``, ``bcikit.models``,
``bcikit.train``, ``bcikit.evaluate``, ``bcikit.simulate``) import their heavy dependencies
(MNE, torch, braindecode) only when used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("io", "data", "simulate", "models", "train", "evaluate", "config", "pipeline",
               "estimators",
               "utils")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"bcikit.{name}")
    if name in ("TrialSet", "VoxelInfo"):
        return getattr(importlib.import_module("bcikit.data.trialset"), name)
    raise AttributeError(f"module 'bcikit' has no attribute {name!r}")


__all__ = ["__version__", "TrialSet", "VoxelInfo", *_SUBMODULES]
