"""Shared versus local state of a model that federates (spec §6).

A model declares what a federation shares: ``model.shared_modules`` (module prefixes, as
:class:`~bcikit.models.FLEEGNet`) or ``model.shared_parameter_names()`` (exact names, as
:class:`~bcikit.models.MVCNet`). :func:`shared_keys` turns that into state-dict keys, leaving out
every normalisation parameter and every buffer (running statistics and integer counters must
never be averaged); everything else in the state dict is local.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..utils import check_option

__all__ = ["shared_keys", "split_state", "merge_state", "shared_signature", "check_signatures",
           "fedavg", "fedavg_weights", "to_numpy", "from_numpy", "initial_shared",
           "NORM_TYPES"]

#: Module types whose parameters always stay local.
NORM_TYPES: tuple[type, ...] = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm,
                                nn.LocalResponseNorm)
_RMS = getattr(nn, "RMSNorm", None)
if _RMS is not None:
    NORM_TYPES = (*NORM_TYPES, _RMS)


def _norm_parameter_names(model: nn.Module) -> set[str]:
    out = set()
    for mname, module in model.named_modules():
        if isinstance(module, NORM_TYPES):
            for pname, _ in module.named_parameters(recurse=False):
                out.add(f"{mname}.{pname}" if mname else pname)
    return out


def shared_keys(model: nn.Module, *, scope: str = "declared") -> list[str]:
    """State-dict keys a federation averages for ``model`` (sorted).

    Parameters
    ----------
    model : torch.nn.Module
        A model with ``shared_modules`` (prefixes) or ``shared_parameter_names()``.
    scope : {"declared", "all"}
        ``"declared"``: the parameters the model declares shared. ``"all"``: every parameter
        (the FedAvg-everything baseline). Either way normalisation parameters and all buffers
        are left out.

    Returns
    -------
    list of str

    Raises
    ------
    TypeError
        When ``scope="declared"`` and the model declares nothing to share.
    ValueError
        When a declared prefix or name matches no parameter.
    """
    check_option(scope, ("declared", "all"), "scope", owner="shared_keys")
    params = dict(model.named_parameters())
    norm = _norm_parameter_names(model)
    if scope == "all":
        names = list(params)
    elif getattr(model, "shared_modules", None) is not None:
        prefixes = tuple(model.shared_modules)
        names = []
        for prefix in prefixes:
            hits = [n for n in params if n == prefix or n.startswith(prefix + ".")]
            if not hits:
                raise ValueError(f"{type(model).__name__}.shared_modules names {prefix!r}, which "
                                 f"holds no parameter.")
            names.extend(hits)
    elif callable(getattr(model, "shared_parameter_names", None)):
        names = list(model.shared_parameter_names())
        missing = [n for n in names if n not in params]
        if missing:
            raise ValueError(f"{type(model).__name__}.shared_parameter_names() lists {missing}, "
                             f"which are not parameters of the model.")
    else:
        raise TypeError(f"{type(model).__name__} does not declare what a federation shares: give "
                        f"it a 'shared_modules' attribute (module prefixes) or a "
                        f"'shared_parameter_names()' method.")
    return sorted(set(n for n in names if n not in norm))


def _keys(model: nn.Module, keys: Iterable[str] | None) -> list[str]:
    return shared_keys(model) if keys is None else sorted(keys)


def split_state(model: nn.Module, keys: Iterable[str] | None = None
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split the state dict into ``(shared, local)`` detached CPU copies.

    Parameters
    ----------
    model : torch.nn.Module
    keys : iterable of str or None
        Shared keys (default :func:`shared_keys`).

    Returns
    -------
    shared : dict
        Sorted by key.
    local : dict
        Every other entry of ``model.state_dict()`` (batch-norm statistics included).
    """
    keys = _keys(model, keys)
    state = model.state_dict()
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"The shared keys {missing} are not in the state of "
                         f"{type(model).__name__}.")
    shared = {k: state[k].detach().to("cpu", copy=True) for k in keys}
    kset = set(keys)
    local = {k: v.detach().to("cpu", copy=True) for k, v in state.items() if k not in kset}
    return shared, local


def merge_state(model: nn.Module, shared: Mapping[str, Any], keys: Iterable[str] | None = None
                ) -> None:
    """Copy received shared tensors into ``model`` in place (local tensors untouched).

    Parameters
    ----------
    model : torch.nn.Module
    shared : mapping of str to tensor or array
        Exactly the model's shared keys.
    keys : iterable of str or None
        Expected shared keys (default :func:`shared_keys`).

    Raises
    ------
    ValueError
        Naming every missing, unexpected, shape- or dtype-mismatched key. Nothing is copied
        unless all keys check out.
    """
    keys = _keys(model, keys)
    state = model.state_dict()
    missing = sorted(set(keys) - set(shared))
    unexpected = sorted(set(shared) - set(keys))
    problems = []
    if missing:
        problems.append(f"missing {missing}")
    if unexpected:
        problems.append(f"unexpected {unexpected}")
    tensors = {}
    for k in keys:
        if k not in shared:
            continue
        v = shared[k]
        t = v if isinstance(v, torch.Tensor) else torch.from_numpy(np.asarray(v))
        if tuple(t.shape) != tuple(state[k].shape):
            problems.append(f"{k!r} has shape {tuple(t.shape)}, expected {tuple(state[k].shape)}")
        elif t.dtype != state[k].dtype:
            problems.append(f"{k!r} has dtype {t.dtype}, expected {state[k].dtype}")
        tensors[k] = t
    if problems:
        raise ValueError(f"Cannot merge shared state into {type(model).__name__}: "
                         + "; ".join(problems) + ".")
    with torch.no_grad():
        for k, t in tensors.items():
            state[k].copy_(t.to(state[k].device))


def shared_signature(shared_or_model: Mapping[str, Any] | nn.Module) -> str:
    """SHA-256 (hex) of the sorted ``(key, shape, dtype)`` of the shared tensors.

    Sites with equal signatures can be averaged; FedAvg itself checks only key sets.
    """
    if isinstance(shared_or_model, nn.Module):
        shared, _ = split_state(shared_or_model)
    else:
        shared = shared_or_model
    h = hashlib.sha256()
    for k in sorted(shared):
        v = shared[k]
        shape = tuple(v.shape)
        dtype = str(v.dtype).replace("torch.", "")
        h.update(f"{k}|{shape}|{dtype}\n".encode())
    return h.hexdigest()


def check_signatures(signatures: Mapping[str, str]) -> str:
    """Check that every site sends the same shared signature.

    Parameters
    ----------
    signatures : mapping of site name to signature

    Returns
    -------
    str
        The common signature.

    Raises
    ------
    ValueError
        Naming the sites that differ from the majority.
    """
    if not signatures:
        raise ValueError("check_signatures needs at least one site.")
    groups: dict[str, list[str]] = {}
    for site, sig in signatures.items():
        groups.setdefault(sig, []).append(str(site))
    if len(groups) == 1:
        return next(iter(groups))
    common = max(groups, key=lambda s: len(groups[s]))
    odd = sorted(s for sig, sites in groups.items() if sig != common for s in sites)
    raise ValueError(f"Shared signatures differ: sites {odd} do not match the other "
                     f"{len(groups[common])} site(s) ({sorted(groups[common])}); their shared "
                     f"tensors have other keys, shapes or dtypes (e.g. another number of "
                     f"classes).")


def fedavg_weights(counts: Sequence[int], *, weighting: str = "samples") -> list[float]:
    """Aggregation weights: ``n_s / sum(n)`` (``"samples"``) or ``1 / S`` (``"equal"``)."""
    check_option(weighting, ("samples", "equal"), "weighting", owner="fedavg")
    counts = [int(c) for c in counts]
    if not counts:
        raise ValueError("fedavg needs at least one update.")
    if any(c < 0 for c in counts):
        raise ValueError(f"fedavg sample counts must be non-negative; got {counts}.")
    if weighting == "equal":
        return [1.0 / len(counts)] * len(counts)
    total = sum(counts)
    if total == 0:
        raise ValueError("fedavg with weighting='samples' got zero examples in total.")
    return [c / total for c in counts]


def fedavg(updates: Sequence[tuple[Mapping[str, torch.Tensor], int]], *,
           weighting: str = "samples") -> dict[str, torch.Tensor]:
    """Weighted average of shared states: ``theta = sum_s w_s theta_s``.

    Parameters
    ----------
    updates : sequence of (shared state, n_examples)
    weighting : {"samples", "equal"}

    Returns
    -------
    dict
        Float tensors averaged in float64 and cast back to each key's dtype, sorted by key.

    Raises
    ------
    ValueError
        When the updates' key sets or shapes differ (naming the update index and key), or for
        a non-floating tensor.
    """
    weights = fedavg_weights([n for _, n in updates], weighting=weighting)
    first = updates[0][0]
    keys = sorted(first)
    for i, (state, _) in enumerate(updates):
        if sorted(state) != keys:
            diff = sorted(set(state) ^ set(keys))
            raise ValueError(f"fedavg: update {i} has other keys than update 0 (differing: "
                             f"{diff}).")
        for k in keys:
            if tuple(state[k].shape) != tuple(first[k].shape):
                raise ValueError(f"fedavg: update {i} has {k!r} of shape "
                                 f"{tuple(state[k].shape)}; update 0 has "
                                 f"{tuple(first[k].shape)}.")
    out = {}
    for k in keys:
        if not torch.is_floating_point(torch.as_tensor(first[k])):
            raise ValueError(f"fedavg: {k!r} is not a floating-point tensor; integer buffers "
                             f"must stay local.")
        acc = None
        for w, (state, _) in zip(weights, updates):
            t = torch.as_tensor(state[k]).detach().to("cpu", torch.float64) * w
            acc = t if acc is None else acc + t
        out[k] = acc.to(torch.as_tensor(first[k]).dtype)
    return out


def to_numpy(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Tensors to numpy arrays (CPU, contiguous), keys sorted."""
    return {k: np.ascontiguousarray(torch.as_tensor(state[k]).detach().cpu().numpy())
            for k in sorted(state)}


def from_numpy(arrays: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Numpy arrays to (owning) torch tensors, keys sorted."""
    return {k: torch.from_numpy(np.array(arrays[k], copy=True)) for k in sorted(arrays)}


def initial_shared(n_outputs: int = 2, *, seed: int = 123, model: str = "FLEEGNet",
                   **model_kwargs: Any) -> dict[str, torch.Tensor]:
    """The server's initial shared weights: a template model built under ``seed``.

    The template's geometry does not matter for FLEEGNet (its shared tensors are the same shape
    at every site), so the defaults use the BNCI2014_001 reference shape. The in-process loop
    and the Flower ServerApp both start from these tensors.

    Parameters
    ----------
    n_outputs : int
        Number of classes.
    seed : int
        Torch seed for the template's initialisation.
    model : str
        A registered model name (:func:`bcikit.models.get_model`).
    **model_kwargs
        Signal parameters and hyperparameters of the template (FLEEGNet defaults: ``n_chans=22,
        n_times=1000, sfreq=250.0``).
    """
    from ..models import get_model

    if model == "FLEEGNet":
        for k, v in (("n_chans", 22), ("n_times", 1000), ("sfreq", 250.0)):
            model_kwargs.setdefault(k, v)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        template = get_model(model, n_outputs=n_outputs, **model_kwargs)
    if hasattr(template, "apply_max_norm"):
        template.apply_max_norm()
    shared, _ = split_state(template)
    return shared

