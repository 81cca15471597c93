"""Models: every network takes the braindecode signature.

``get_model(name, n_chans=..., n_outputs=..., n_times=..., sfreq=..., chs_info=...)`` builds

* a bcikit model registered with :func:`register_model` (the method pipelines' networks),
* any braindecode model by class name (``ShallowFBCSPNet``, ``EEGNet``, ``EEGConformer``, ``IFNet`` ...),
* a classical baseline (``csp_lda``, ``ts_lr``, ``HighGammaLDA``): a scikit-learn estimator on
  ``(n, C, T)`` arrays.

Torch and braindecode are imported only when a network is asked for.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

_REGISTRY: dict[str, Callable[..., Any]] = {}
# bcikit models live in their own modules, imported the first time they are asked for
_MODULES = {"MVCNet": "bcikit.models.mvcnet", "MVCNetStem": "bcikit.models.mvcnet",
            "FLEEGNet": "bcikit.models.fleeg",
            "DuIN": "bcikit.models.duin", "DuINVQVAE": "bcikit.models.duin",
            "DuINMAE": "bcikit.models.duin",
            "CNNBiGRU": "bcikit.models.cnn_bigru"}
CLASSICAL = ("csp_lda", "ts_lr", "HighGammaLDA")
# classical estimators that are classes taking the sampling rate (``sfreq``) of the data
_CLASSICAL_CLASSES = {"HighGammaLDA": "bcikit.data.channel_selection"}
SIGNAL_PARAMS = ("n_chans", "n_outputs", "n_times", "sfreq", "chs_info", "classes")


def register_model(name: str):
    """Class decorator: make a bcikit model available to :func:`get_model` and pipeline files."""
    def deco(cls):
        _REGISTRY[name] = cls
        return cls
    return deco


def is_classical(name: str) -> bool:
    """True for the scikit-learn baselines (no Trainer, no epochs)."""
    return name in CLASSICAL


def _import_braindecode_models():
    """braindecode.models, without the MNE montage-rename FutureWarnings its import emits."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*Montage name.*")
        import braindecode.models as bm
    return bm


def _braindecode_class(name: str):
    bm = _import_braindecode_models()

    cls = getattr(bm, name, None)
    if cls is None or not inspect.isclass(cls):
        return None
    return cls


def available_models() -> list[str]:
    """Names accepted by :func:`get_model` (bcikit, classical, then braindecode models)."""
    import torch

    bm = _import_braindecode_models()
    bd = sorted(n for n, c in vars(bm).items()
                if inspect.isclass(c) and issubclass(c, torch.nn.Module) and n[0].isupper()
                and "n_outputs" in inspect.signature(c).parameters)
    return sorted(set(_REGISTRY) | set(_MODULES)) + list(CLASSICAL) + bd


def get_model(name: str, *, n_chans: int | None = None, n_outputs: int | None = None,
              n_times: int | None = None, sfreq: float | None = None, chs_info=None,
              classes=None, **params) -> Any:
    """Build the model called ``name`` for data of the given shape.

    Parameters
    ----------
    name : str
        A registered bcikit model, ``"csp_lda"``/``"ts_lr"``, or a braindecode model class name.
    n_chans, n_outputs, n_times, sfreq, chs_info
        The braindecode signal parameters; passed on when the model accepts them.
    classes : list of str or None
        Class names, passed to models that use them (MVCNet's channel-reflection view).
    **params
        Model hyperparameters (``[model.params]`` of a pipeline file).

    Raises
    ------
    ValueError
        For an unknown name (listing close matches) or a parameter the model does not take.
    """
    if is_classical(name):
        if name in _CLASSICAL_CLASSES:  # e.g. HighGammaLDA (Du-IN's floor baseline)
            import importlib

            cls = getattr(importlib.import_module(_CLASSICAL_CLASSES[name]), name)
            allowed = [p for p in inspect.signature(cls).parameters if p != "self"]
            for key in params:
                if key not in allowed:
                    raise ValueError(f"Unknown parameter {key!r} for baseline {name!r}; allowed: "
                                     f"{allowed}.")
            if sfreq is not None and "sfreq" in allowed and "sfreq" not in params:
                params["sfreq"] = float(sfreq)
            return cls(**params)
        from .baselines import make_baseline

        return make_baseline(name, **params)
    if name in _MODULES and name not in _REGISTRY:
        import importlib

        importlib.import_module(_MODULES[name])
    cls = _REGISTRY.get(name) or _braindecode_class(name)
    if cls is None:
        import difflib

        close = difflib.get_close_matches(name, available_models(), n=3)
        hint = f" Close matches: {close}." if close else ""
        raise ValueError(f"Unknown model {name!r}.{hint} See bcikit.models.available_models().")
    sig = inspect.signature(cls)
    accepts_kwargs = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    for key in params:
        if key not in sig.parameters and not accepts_kwargs:
            raise ValueError(f"The model {name!r} has no parameter {key!r}. "
                             f"It takes: {[p for p in sig.parameters if p != 'self']}.")
        if key in SIGNAL_PARAMS:
            raise ValueError(f"[model.params] must not set {key!r}: it comes from the data.")
    signal = dict(n_chans=n_chans, n_outputs=n_outputs, n_times=n_times, sfreq=sfreq,
                  chs_info=chs_info, classes=None if classes is None else list(classes))
    kwargs = {k: v for k, v in signal.items()
              if v is not None and (k in sig.parameters or (accepts_kwargs and k != "classes"))}
    return cls(**kwargs, **params)


def count_parameters(model, *, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of a torch module."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))


def __getattr__(name: str):
    if name in _MODULES:
        import importlib

        return getattr(importlib.import_module(_MODULES[name]), name)
    raise AttributeError(f"module 'bcikit.models' has no attribute {name!r}")


__all__ = ["MVCNet", "register_model", "get_model", "available_models", "is_classical", "count_parameters",
           "CLASSICAL"]
