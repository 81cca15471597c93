"""Trial containers, leak-free split protocols, transforms fitted on training data, caching."""

from .trialset import REQUIRED_META, TrialSet, VoxelInfo

# Protocols, transforms and the cache are imported on first use (transforms pull in
# scikit-learn), so ``import bcikit.data`` stays light.
_LAZY = {
    "Split": "protocols", "Protocol": "protocols", "PROTOCOLS": "protocols",
    "get_protocol": "protocols", "apply_split": "protocols", "chronological_order": "protocols",
    "BandPass": "transforms", "Resample": "transforms", "EuclideanAlignment": "transforms",
    "ChannelScaler": "transforms", "Compose": "transforms", "make_transforms": "transforms",
    "LeakGuard": "transforms", "DataLeakError": "transforms", "check_no_leak": "transforms",
    "TrialSetCache": "cache", "file_hash": "cache",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["REQUIRED_META", "TrialSet", "VoxelInfo", *_LAZY]
