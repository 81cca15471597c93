"""Stimulus features from deep networks: one vector per event (spec §2.4).

Any torch model works: a :class:`FeatureExtractor` couples an ``nn.Module`` with how a batch of raw
stimuli is fed to it, and :func:`extract_features` reads the output of modules named by **stable
module paths** (``model.get_submodule(path)``, e.g. ``"encoder.layer.5"``, never hook-order names),
pools it to one vector per event, optionally projects it with a sparse random projection to the
Johnson–Lindenstrauss size, stores it in float16 and caches it on disk.

Adapters build extractors from **local files only** (nothing is ever downloaded):
:func:`hf_model` (Hugging Face transformers, text / image / text+image), :func:`timm_model`,
:func:`open_clip_model` and :func:`torchvision_model`; each has a seeded random-initialisation twin
(``random_init=True`` or :meth:`FeatureExtractor.random_twin`) built with the library's default
initialiser, and ``random_init="official"`` for the official N(0, 6.0) Linear/Embedding init.

torch and the model libraries are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import re
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import check_option, check_range, logger, progress, require, validate_type

__all__ = [
    "FeatureExtractor",
    "extract_features",
    "resolve_module",
    "module_paths",
    "jl_dim",
    "srp_project",
    "concat_features",
    "hf_model",
    "timm_model",
    "open_clip_model",
    "torchvision_model",
    "torch_model",
    "weights_hash",
    "POOLINGS",
]

POOLINGS = ("mean", "cls", "pooled", "flatten")
"""One vector per event from a module output: masked mean over tokens (global average over H, W
for convolutional maps), the first (CLS) token, the output as is when already ``(batch, d)``, or
all tokens flattened (then projected with SRP by default)."""

_STORE_DTYPES = ("float16", "float32")
_FP16_MAX = float(np.finfo(np.float16).max)
_CACHE_VERSION = 1  # bump when the meaning of cached arrays changes
_OFFICIAL_STD = 6.0

_HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                    "pytorch_model.bin.index.json")
_HF_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
_HF_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model",
                       "sentencepiece.bpe.model", "tokenizer.model")


# --------------------------------------------------------------------------------------------
# The extractor object
# --------------------------------------------------------------------------------------------
@dataclass
class FeatureExtractor:
    """A torch model plus how raw stimuli are fed to it.

    Parameters
    ----------
    model : torch.nn.Module
        The network. Layers are addressed by stable module paths relative to it.
    name : str
        Identity of the model (part of the cache key), e.g. ``"hf:all-MiniLM-L6-v2"``. Random
        twins carry ``":random(seed=0)"``.
    preprocess : callable or None
        ``preprocess(items) -> Tensor | dict[str, Tensor]`` turns a list (or array slice) of raw
        stimuli into one model input batch. ``None``: the items are stacked into a tensor.
    forward : callable or None
        ``forward(model, batch)`` runs the model; ``None`` calls ``model(**batch)`` for a dict and
        ``model(batch)`` otherwise. Its return value is the layer ``""``.
    modality : str
        ``"text"``, ``"image"``, ``"text+image"`` or ``"any"`` (informative).
    default_layer, default_pooling : str
        Used when :func:`extract_features` gets ``layers=None`` / ``pooling=None``.
    mask_key : str or None
        Key of the token mask in a dict batch (masked mean; padded tokens zeroed in "flatten").
    config : dict
        Preprocessing parameters (JSON-serialisable); part of the cache key.
    max_tokens : int or None
        Token axis length that "flatten" pads to, so every batch gives the same dimension.
    """

    model: Any
    name: str
    preprocess: Callable[[Any], Any] | None = None
    forward: Callable[[Any, Any], Any] | None = None
    modality: str = "any"
    default_layer: str = ""
    default_pooling: str = "pooled"
    mask_key: str | None = "attention_mask"
    config: dict = field(default_factory=dict)
    max_tokens: int | None = None
    _twin_factory: Callable[[Any, int], FeatureExtractor] | None = field(
        default=None, repr=False, compare=False)

    def random_twin(self, seed: int = 0, *, random_init: bool | str = True) -> FeatureExtractor:
        """The same architecture and preprocessing with randomly initialised weights.

        Parameters
        ----------
        seed : int
            Seed of the initialisation (the global torch RNG state is left untouched).
        random_init : True or "official"
            ``True``: the library's default initialiser (HF ``from_config``, timm
            ``pretrained=False``, open_clip without checkpoint, torchvision ``weights=None``);
            ``"official"``: additionally N(0, 6.0) on every Linear/Embedding weight.
        """
        validate_type(seed, "int", "seed", owner="FeatureExtractor.random_twin")
        check_option(random_init, (True, "official"), "random_init",
                     owner="FeatureExtractor.random_twin")
        if self._twin_factory is not None:
            return self._twin_factory(random_init, seed)
        # Generic models: re-initialise a deep copy with each module's reset_parameters().
        import copy

        model = copy.deepcopy(self.model)
        with _seeded(seed):
            for module in model.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
            if random_init == "official":
                _official_init(model, seed)
        return replace(self, model=model, name=_twin_name(self.name, random_init, seed),
                       _twin_factory=None)

    def __repr__(self) -> str:
        return (f"FeatureExtractor(name={self.name!r}, model={type(self.model).__name__}, "
                f"modality={self.modality!r}, default_layer={self.default_layer!r}, "
                f"default_pooling={self.default_pooling!r})")


def _twin_name(name: str, random_init: bool | str, seed: int) -> str:
    base = re.sub(r":random\(.*\)$", "", name)
    kind = "official" if random_init == "official" else "default"
    return f"{base}:random(init={kind},seed={seed})"


def torch_model(model: Any, *, name: str | None = None, preprocess: Callable | None = None,
                forward: Callable | None = None, default_layer: str = "",
                default_pooling: str = "pooled", modality: str = "any",
                mask_key: str | None = "attention_mask", config: Mapping | None = None,
                max_tokens: int | None = None) -> FeatureExtractor:
    """Wrap any ``torch.nn.Module`` as a :class:`FeatureExtractor`.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    name : str or None
        Identity for the cache key; default the class name.
    preprocess, forward, default_layer, default_pooling, modality, mask_key, config, max_tokens
        See :class:`FeatureExtractor`.

    Returns
    -------
    FeatureExtractor
    """
    torch = _torch()
    validate_type(model, torch.nn.Module, "model", owner="torch_model")
    check_option(default_pooling, POOLINGS, "default_pooling", owner="torch_model")
    return FeatureExtractor(model=model, name=name or type(model).__name__, preprocess=preprocess,
                            forward=forward, modality=modality, default_layer=default_layer,
                            default_pooling=default_pooling, mask_key=mask_key,
                            config=dict(config or {}), max_tokens=max_tokens)


# --------------------------------------------------------------------------------------------
# Module paths
# --------------------------------------------------------------------------------------------
def module_paths(model: Any) -> list[str]:
    """All stable module paths of ``model`` (``""`` is the model itself), in registration order."""
    return [name for name, _ in model.named_modules()]


def resolve_module(model: Any, path: str) -> Any:
    """Return the submodule at the stable path ``path`` (``model.get_submodule``).

    Raises
    ------
    ValueError
        When the path does not exist; the message names the path and lists close candidates.
    """
    validate_type(path, str, "layer", owner="resolve_module")
    try:
        return model.get_submodule(path)
    except AttributeError:
        pass
    paths = module_paths(model)
    close = difflib.get_close_matches(path, paths, n=5, cutoff=0.5)
    if not close:  # fall back to paths sharing the longest valid prefix
        parts = path.split(".")
        for i in range(len(parts) - 1, 0, -1):
            prefix = ".".join(parts[:i])
            if prefix in paths:
                close = [p for p in paths if p.startswith(prefix + ".")
                         and p.count(".") == prefix.count(".") + 1][:8]
                break
    hint = ("Close candidates: " + ", ".join(repr(c) for c in close)) if close else (
        "Top-level modules: " + ", ".join(repr(p) for p in paths if p and "." not in p))
    raise ValueError(
        f"The layer {path!r} is not a module path of {type(model).__name__}. {hint}. "
        "List all paths with bcikit.encoding.module_paths(model).")


# --------------------------------------------------------------------------------------------
# Johnson–Lindenstrauss size and sparse random projection
# --------------------------------------------------------------------------------------------
def jl_dim(n_samples: int, eps: float = 0.1) -> int:
    """Johnson–Lindenstrauss minimum dimension ``floor(4 ln n / (eps²/2 − eps³/3))``.

    Equals scikit-learn's ``johnson_lindenstrauss_min_dim``; 5,920 at n = 1,000, 7,300 at
    5,000 and 7,466 at 6,070 with ``eps = 0.1``.
    """
    validate_type(n_samples, "int", "n_samples", owner="jl_dim")
    check_range(n_samples, "n_samples", low=1, owner="jl_dim")
    validate_type(eps, "numeric", "eps", owner="jl_dim")
    check_range(eps, "eps", low=0, high=1, low_inclusive=False, high_inclusive=False,
                owner="jl_dim")
    return int(4.0 * np.log(n_samples) / (eps ** 2 / 2.0 - eps ** 3 / 3.0))


def _make_srp(n_features: int, n_components: int, random_state: int):
    """A fitted ``SparseRandomProjection``; data-independent, so fitted on the shape alone."""
    import scipy.sparse as sp
    from sklearn.exceptions import DataDimensionalityWarning
    from sklearn.random_projection import SparseRandomProjection

    srp = SparseRandomProjection(n_components=n_components, density="auto",
                                 random_state=random_state)
    with warnings.catch_warnings():
        # k > n_features is intended (the official code projects small inputs up as well)
        warnings.simplefilter("ignore", DataDimensionalityWarning)
        srp.fit(sp.csr_matrix((1, n_features), dtype=np.float32))
    return srp


def srp_project(X: np.ndarray, *, n_components: int | None = None, n_events: int | None = None,
                eps: float = 0.1, random_state: int = 0, dtype: str = "float16",
                chunk_size: int = 1024) -> np.ndarray:
    """Project rows of ``X`` with scikit-learn's ``SparseRandomProjection`` (density "auto").

    Parameters
    ----------
    X : array, shape (n_events, n_features)
        Flattened token or multi-layer maps.
    n_components : int or None
        Target dimension; default :func:`jl_dim` of ``n_events`` (default ``len(X)``) and ``eps``,
        applied even when ``n_features`` is smaller (as the official code does).
    n_events, eps : int or None, float
        Used for the default ``n_components``.
    random_state : int
        Seed of the projection matrix (0 in bcikit).
    dtype : {"float16", "float32"}
        Returned dtype (the projection is computed in float32).
    chunk_size : int
        Rows projected at a time (the projection is row-wise, so chunking changes nothing).

    Returns
    -------
    array, shape (n_events, n_components)
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"The 'X' parameter of srp_project must be 2-D (n_events, n_features). "
                         f"Got shape {X.shape} instead.")
    check_option(dtype, _STORE_DTYPES, "dtype", owner="srp_project")
    if n_components is None:
        n_components = jl_dim(int(n_events if n_events is not None else len(X)), eps)
    validate_type(n_components, "int", "n_components", owner="srp_project")
    check_range(n_components, "n_components", low=1, owner="srp_project")
    srp = _make_srp(X.shape[1], n_components, random_state)
    out = np.empty((len(X), n_components), dtype=dtype)
    for start in range(0, len(X), chunk_size):
        out[start:start + chunk_size] = srp.transform(
            np.asarray(X[start:start + chunk_size], dtype=np.float32))
    return out


def concat_features(*blocks: np.ndarray) -> np.ndarray:
    """Concatenate per-event feature blocks column-wise (MultiCat = [SimCSE ; SLIP-SimCLR]).

    Each block is ``(n_events, d_i)``; the result keeps the widest float dtype of the blocks.
    Each block is z-scored separately by the ridge's per-fold standardisation anyway.
    """
    if len(blocks) < 2:
        raise ValueError(f"concat_features needs at least two feature blocks. Got {len(blocks)}.")
    arrays = []
    for i, b in enumerate(blocks):
        a = np.asarray(b)
        if a.ndim != 2:
            raise ValueError(f"Feature block {i} of concat_features must be 2-D (n_events, "
                             f"n_features). Got shape {a.shape} instead.")
        if a.shape[0] != np.asarray(blocks[0]).shape[0]:
            raise ValueError(f"Feature block {i} of concat_features has {a.shape[0]} events; "
                             f"block 0 has {np.asarray(blocks[0]).shape[0]}. All blocks must "
                             "describe the same events in the same order.")
        arrays.append(a)
    return np.concatenate(arrays, axis=1)


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------
class _StopForward(Exception):
    """Raised inside the last hook when every requested layer has been captured."""


def _torch():
    return require("torch", extra="encoding", purpose="Feature extraction")


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed torch's global RNG inside the block and restore its state afterwards."""
    torch = _torch()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _official_init(model: Any, seed: int, std: float = _OFFICIAL_STD) -> None:
    """The official random twin: N(0, std) on every Linear and Embedding weight."""
    torch = _torch()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                w = torch.randn(module.weight.shape, generator=gen, dtype=torch.float32)
                module.weight.copy_(w * std)


def _resolve_device(device: str):
    torch = _torch()
    validate_type(device, str, "device", owner="extract_features")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"The 'device' parameter of extract_features is {device!r}, but torch "
                         "sees no CUDA device. Use device='auto' or 'cpu'.")
    return torch.device(device)


def _to_device(batch: Any, device: Any) -> Any:
    torch = _torch()
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _main_tensor(output: Any, pooling: str, layer: str):
    """The tensor to pool from a module output (tensor, tuple or HF ModelOutput)."""
    torch = _torch()
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):  # HF ModelOutput is an OrderedDict
        if pooling == "pooled":
            for key in ("pooler_output", "image_embeds", "text_embeds", "pooled_output"):
                if output.get(key) is not None:
                    return output[key]
        for key in ("last_hidden_state", "hidden_states"):
            value = output.get(key)
            if isinstance(value, torch.Tensor):
                return value
        for value in output.values():
            if isinstance(value, torch.Tensor):
                return value
    if isinstance(output, (list, tuple)):
        for value in output:
            if isinstance(value, torch.Tensor):
                return value
    raise ValueError(f"The output of layer {layer!r} is a {type(output).__name__} holding no "
                     "tensor; choose another module path.")


def _pool(output: Any, pooling: str, layer: str, mask: Any, max_tokens: int | None) -> np.ndarray:
    """One float32 vector per batch item from a module output."""
    torch = _torch()
    x = _main_tensor(output, pooling, layer).detach().float()
    if x.ndim < 2:
        raise ValueError(f"The output of layer {layer!r} has shape {tuple(x.shape)}; expected a "
                         "batch dimension first.")
    use_mask = (mask is not None and x.ndim == 3 and mask.ndim == 2
                and mask.shape[0] == x.shape[0] and mask.shape[1] == x.shape[1])
    if pooling == "pooled":
        while x.ndim > 2 and x.shape[-1] == 1:  # (B, C, 1, 1) from global pooling
            x = x[..., 0]
        if x.ndim != 2:
            raise ValueError(f"pooling='pooled' needs layer {layer!r} to output one vector per "
                             f"item, but its output has shape {tuple(x.shape)}. Use pooling="
                             "'mean', 'cls' or 'flatten', or another layer.")
        out = x
    elif pooling == "cls":
        if x.ndim != 3:
            raise ValueError(f"pooling='cls' needs a (batch, tokens, features) output; layer "
                             f"{layer!r} gives shape {tuple(x.shape)}.")
        out = x[:, 0]
    elif pooling == "mean":
        if x.ndim == 2:
            raise ValueError(f"Layer {layer!r} already outputs one vector per item (shape "
                             f"{tuple(x.shape)}); use pooling='pooled'.")
        if x.ndim == 3 and use_mask:  # masked mean over tokens (SBERT)
            m = mask.to(x.device, x.dtype).unsqueeze(-1)
            out = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        elif x.ndim == 3:
            out = x.mean(1)
        else:  # (B, C, *spatial): global average over the spatial axes
            out = x.flatten(2).mean(-1)
    else:  # flatten
        if x.ndim == 3:
            if use_mask:
                x = x * mask.to(x.device, x.dtype).unsqueeze(-1)
            if max_tokens is not None and x.shape[1] < max_tokens:
                x = torch.nn.functional.pad(x, (0, 0, 0, max_tokens - x.shape[1]))
        out = x.reshape(x.shape[0], -1)
    return out.cpu().numpy()


def _slice(stimuli: Any, start: int, stop: int) -> Any:
    if isinstance(stimuli, (list, tuple)):
        return list(stimuli[start:stop])
    return stimuli[start:stop]


def _default_preprocess(items: Any):
    torch = _torch()
    if isinstance(items, torch.Tensor):
        return items
    if isinstance(items, np.ndarray):
        return torch.as_tensor(items)
    try:
        return torch.stack([torch.as_tensor(np.asarray(it)) for it in items])
    except (TypeError, RuntimeError, ValueError) as err:
        raise TypeError("This extractor has no 'preprocess'; its stimuli must be arrays or "
                        "tensors of one shape. Build it with an adapter (hf_model, timm_model, "
                        "...) or torch_model(..., preprocess=...).") from err


def _default_forward(model: Any, batch: Any):
    if isinstance(batch, Mapping):
        return model(**batch)
    return model(batch)


# ---- hashing --------------------------------------------------------------------------------
def _hash_update(h: Any, obj: Any) -> None:
    """Feed a stimulus (or nested structure of them) into a hash, type-tagged."""
    torch = sys.modules.get("torch")
    if isinstance(obj, str):
        b = obj.encode("utf-8")
        h.update(b"s%d:" % len(b) + b)
    elif isinstance(obj, bytes):
        h.update(b"b%d:" % len(obj) + obj)
    elif isinstance(obj, (bool, int, float, np.number)) or obj is None:
        h.update(b"n" + repr(obj).encode() + b";")
    elif isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        h.update(f"a{a.dtype.str}{a.shape}:".encode())
        h.update(a.view(np.uint8).reshape(-1).data if a.size else b"")
    elif torch is not None and isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"t{t.dtype}{tuple(t.shape)}:".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(obj, (list, tuple)):
        h.update(b"l%d[" % len(obj))
        for item in obj:
            _hash_update(h, item)
        h.update(b"]")
    elif hasattr(obj, "tobytes") and hasattr(obj, "size") and hasattr(obj, "mode"):  # PIL
        h.update(f"i{obj.mode}{obj.size}:".encode())
        h.update(obj.tobytes())
    elif hasattr(obj, "to_numpy"):  # pandas
        _hash_update(h, list(obj.to_numpy().tolist()))
    else:
        raise TypeError(f"Cannot hash a stimulus of type {type(obj).__name__} for the feature "
                        "cache; pass str, arrays, tensors or PIL images, or cache_dir=None.")


def _stimuli_hash(stimuli: Any) -> str:
    h = hashlib.blake2b(digest_size=16)
    _hash_update(h, stimuli if not hasattr(stimuli, "to_numpy") else list(stimuli))
    return h.hexdigest()


def weights_hash(model: Any) -> str:
    """Hash of every parameter and buffer (names, dtypes, shapes, bytes) of ``model``."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        h.update(name.encode() + b"\0")
        _hash_update(h, tensor)
    return h.hexdigest()


def _cache_key(parts: Mapping[str, Any]) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.blake2b(blob, digest_size=20).hexdigest()


def _write_atomic_npy(path: Path, array: np.ndarray, meta: Mapping[str, Any]) -> None:
    """Write ``path`` (+ ``.json``) via a temporary file; an existing file is never replaced."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    try:
        os.link(tmp, path)  # fails if the target exists: never overwrite
    except FileExistsError:
        pass
    except OSError:  # filesystems without hard links
        if not path.exists():
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    meta_path = path.with_suffix(".json")
    if not meta_path.exists():
        tmp_meta = meta_path.with_name(f".{meta_path.name}.{os.getpid()}.tmp")
        tmp_meta.write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
        os.replace(tmp_meta, meta_path)


def extract_features(extractor: FeatureExtractor | Any, stimuli: Any,
                     layers: str | Sequence[str] | None = None, *,
                     pooling: str | Mapping[str, str] | None = None, srp: bool | None = None,
                     eps: float = 0.1, srp_random_state: int = 0, batch_size: int = 32,
                     device: str = "auto", cache_dir: str | os.PathLike | None = None,
                     store_dtype: str = "float16", stop_early: bool = True,
                     verbose: bool | None = None) -> dict[str, np.ndarray]:
    """One feature vector per event from chosen layers of a torch model.

    Parameters
    ----------
    extractor : FeatureExtractor or torch.nn.Module
        A model with its preprocessing (see the adapters) or a bare module (inputs stacked).
    stimuli : sequence
        One item per event, in event order: ``str`` for text models, PIL images or uint8
        ``(H, W, 3)`` arrays for image models, ``(image, text)`` pairs for text+image models,
        arrays/tensors for a bare module.
    layers : str, sequence of str or None
        Stable module paths (``model.get_submodule``); ``""`` is the return value of the
        extractor's forward. ``None``: ``extractor.default_layer``.
    pooling : {"mean", "cls", "pooled", "flatten"}, mapping or None
        Per-layer pooling (a mapping layer -> pooling is allowed); ``None``: the default.
        "mean" is a masked mean when the batch carries a token mask (SBERT).
    srp : bool or None
        Sparse random projection to ``jl_dim(n_events, eps)`` dims (seed ``srp_random_state``).
        ``None``: only for ``pooling="flatten"``. Pooled vectors are used as is.
    eps : float
        JL distortion (0.1).
    batch_size : int
        Events per forward pass.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    cache_dir : path-like or None
        Folder of the on-disk cache; a hit is returned memory-mapped without running the model.
    store_dtype : {"float16", "float32"}
        Storage and returned dtype (spec: float16).
    stop_early : bool
        Abort each forward pass once every hooked layer has fired (not for layer ``""``).
    verbose : bool or None
        Progress bar (``None``: only on a terminal).

    Returns
    -------
    dict
        ``{layer: array (n_events, n_features)}`` in the order of ``layers``.

    Raises
    ------
    ValueError
        Unknown layer (close candidates are listed), bad pooling, a layer that does not fire,
        or values beyond the float16 range.
    """
    torch = _torch()
    if isinstance(extractor, torch.nn.Module):
        extractor = torch_model(extractor)
    validate_type(extractor, FeatureExtractor, "extractor", owner="extract_features")
    check_option(store_dtype, _STORE_DTYPES, "store_dtype", owner="extract_features")
    validate_type(batch_size, "int", "batch_size", owner="extract_features")
    check_range(batch_size, "batch_size", low=1, owner="extract_features")
    if hasattr(stimuli, "to_numpy") and not isinstance(stimuli, np.ndarray):  # pandas Series
        stimuli = list(stimuli)
    if isinstance(stimuli, (str, bytes)) or not hasattr(stimuli, "__len__"):
        raise TypeError("The 'stimuli' parameter of extract_features must be a sequence with one "
                        f"item per event. Got {type(stimuli).__name__} instead.")
    n_events = len(stimuli)
    if n_events == 0:
        raise ValueError("The 'stimuli' parameter of extract_features is empty.")

    if layers is None:
        layers = [extractor.default_layer]
    elif isinstance(layers, str):
        layers = [layers]
    layers = list(dict.fromkeys(layers))
    model = extractor.model
    modules = {}
    for layer in layers:
        validate_type(layer, str, "layers", owner="extract_features")
        if layer != "":
            modules[layer] = resolve_module(model, layer)
    poolings = {}
    for layer in layers:
        p = pooling.get(layer, extractor.default_pooling) if isinstance(pooling, Mapping) else (
            pooling or extractor.default_pooling)
        poolings[layer] = check_option(p, POOLINGS, "pooling", owner="extract_features")
    do_srp = {layer: (poolings[layer] == "flatten") if srp is None else bool(srp)
              for layer in layers}
    k_srp = jl_dim(n_events, eps) if any(do_srp.values()) else None

    # ---- cache lookup ------------------------------------------------------------------
    results: dict[str, np.ndarray] = {}
    paths: dict[str, Path] = {}
    metas: dict[str, dict] = {}
    if cache_dir is not None:
        cache = Path(cache_dir).expanduser()
        cache.mkdir(parents=True, exist_ok=True)
        w_hash = weights_hash(model)
        s_hash = _stimuli_hash(stimuli)
        for layer in layers:
            parts = {"version": _CACHE_VERSION, "name": extractor.name,
                     "class": f"{type(model).__module__}.{type(model).__qualname__}",
                     "weights": w_hash, "layer": layer, "pooling": poolings[layer],
                     "srp": [k_srp, eps, srp_random_state] if do_srp[layer] else None,
                     "config": extractor.config, "max_tokens": extractor.max_tokens,
                     "stimuli": s_hash, "n_events": n_events, "dtype": store_dtype}
            key = _cache_key(parts)
            paths[layer] = cache / f"{key}.npy"
            metas[layer] = parts
            if paths[layer].exists():
                arr = np.load(paths[layer], mmap_mode="r")
                if arr.shape[0] != n_events or arr.dtype != np.dtype(store_dtype):
                    raise ValueError(f"The cached feature file {str(paths[layer])!r} has shape "
                                     f"{arr.shape} and dtype {arr.dtype}; expected "
                                     f"{n_events} rows of {store_dtype}. Delete it.")
                results[layer] = arr
                logger.info("features: cache hit for %s / %r", extractor.name, layer)
    todo = [layer for layer in layers if layer not in results]
    if not todo:
        return {layer: results[layer] for layer in layers}

    # ---- forward passes with hooks -------------------------------------------------------
    dev = _resolve_device(device)
    preprocess = extractor.preprocess or _default_preprocess
    forward = extractor.forward or _default_forward
    hooked = [layer for layer in todo if layer != ""]
    early = stop_early and "" not in todo
    chunks: dict[str, list[np.ndarray]] = {layer: [] for layer in todo}
    srps: dict[str, Any] = {}
    dims: dict[str, int] = {}
    state = {"mask": None, "fired": {}}

    def finish(layer: str, vectors: np.ndarray) -> None:
        width = dims.setdefault(layer, vectors.shape[1])
        if vectors.shape[1] != width:
            raise ValueError(
                f"Layer {layer!r} gave {vectors.shape[1]} features for one batch and {width} "
                "for another (token counts differ between batches). Use a pooling over tokens, "
                "or give the extractor max_tokens (hf_model's max_length) so 'flatten' pads to "
                "a fixed length.")
        if do_srp[layer]:
            if layer not in srps:
                srps[layer] = _make_srp(width, k_srp, srp_random_state)
            vectors = srps[layer].transform(vectors.astype(np.float32, copy=False))
        if store_dtype == "float16":
            peak = float(np.nanmax(np.abs(vectors))) if vectors.size else 0.0
            if peak > _FP16_MAX:
                raise ValueError(f"Features of layer {layer!r} reach {peak:.3g}, beyond the "
                                 f"float16 range ({_FP16_MAX:.0f}); use store_dtype='float32'.")
        chunks[layer].append(np.asarray(vectors, dtype=store_dtype))

    def make_hook(layer: str):
        def hook(module, inputs, output):
            fired = state["fired"]
            fired[layer] = fired.get(layer, 0) + 1
            if fired[layer] > 1:
                raise ValueError(f"Module {layer!r} ran more than once in one forward pass; "
                                 "choose a module that runs once per input.")
            finish(layer, _pool(output, poolings[layer], layer, state["mask"],
                                extractor.max_tokens))
            if early and len(fired) == len(hooked):
                raise _StopForward
        return hook

    sub_modes = [(m, m.training) for m in model.modules()]
    first_param = next(iter(model.parameters()), None)
    orig_device = first_param.device if first_param is not None else None
    handles = []
    try:
        for layer in hooked:
            handles.append(modules[layer].register_forward_hook(make_hook(layer)))
        model.eval()
        if orig_device is not None and orig_device != dev:
            model.to(dev)
        n_batches = -(-n_events // batch_size)
        with torch.no_grad():
            for b in progress(range(n_batches), total=n_batches, verbose=verbose,
                              desc=f"features {extractor.name}"):
                items = _slice(stimuli, b * batch_size, (b + 1) * batch_size)
                batch = _to_device(preprocess(items), dev)
                state["mask"] = (batch.get(extractor.mask_key)
                                 if isinstance(batch, Mapping) and extractor.mask_key else None)
                state["fired"] = {}
                try:
                    out = forward(model, batch)
                except _StopForward:
                    out = None
                missing = [layer for layer in hooked if layer not in state["fired"]]
                if missing:
                    raise ValueError(f"Layer(s) {missing} did not run during the forward pass of "
                                     f"{extractor.name}; choose modules on the forward path.")
                if "" in todo:
                    finish("", _pool(out, poolings[""], "", state["mask"], extractor.max_tokens))
    finally:
        for handle in handles:
            handle.remove()
        for m, mode in sub_modes:
            m.training = mode
        if orig_device is not None and orig_device != dev:
            model.to(orig_device)

    for layer in todo:
        arr = np.concatenate(chunks[layer], axis=0)
        if arr.shape[0] != n_events:
            raise ValueError(f"Layer {layer!r} gave {arr.shape[0]} vectors for {n_events} "
                             "events; the model must keep one output per input item.")
        if cache_dir is not None:
            meta = dict(metas[layer], shape=list(arr.shape))
            _write_atomic_npy(paths[layer], arr, meta)
        results[layer] = arr
    return {layer: results[layer] for layer in layers}


# --------------------------------------------------------------------------------------------
# Adapters (local files only)
# --------------------------------------------------------------------------------------------
_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@contextlib.contextmanager
def _offline():
    """Forbid hub downloads while loading (env vars + ``local_files_only`` at every call)."""
    old = {k: os.environ.get(k) for k in _OFFLINE_ENV}
    os.environ.update(_OFFLINE_ENV)
    try:
        hub_constants = sys.modules.get("huggingface_hub.constants")
        old_flag = getattr(hub_constants, "HF_HUB_OFFLINE", None)
        if hub_constants is not None:
            hub_constants.HF_HUB_OFFLINE = True
        try:
            yield
        finally:
            if hub_constants is not None:
                hub_constants.HF_HUB_OFFLINE = old_flag
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _missing(path: Path, what: str, put: str) -> FileNotFoundError:
    return FileNotFoundError(f"The {what} {str(path)!r} does not exist. {put} bcikit never "
                             "downloads weights at run time.")


def _check_random_init(random_init: Any, owner: str) -> None:
    check_option(random_init, (False, True, "official"), "random_init", owner=owner)


def _to_pil(item: Any):
    from PIL import Image

    if isinstance(item, Image.Image):
        return item.convert("RGB")
    a = np.asarray(item)
    if a.ndim == 3 and a.shape[-1] == 3:
        if a.dtype != np.uint8:
            if np.issubdtype(a.dtype, np.floating) and a.size and a.min() >= 0 and a.max() <= 1:
                a = np.round(a * 255)
            else:
                raise TypeError("Image stimuli must be PIL images, uint8 (H, W, 3) arrays or "
                                f"float arrays in [0, 1]; got dtype {a.dtype}.")
            a = a.astype(np.uint8)
        return Image.fromarray(a)
    raise TypeError("Image stimuli must be PIL images or (H, W, 3) arrays; got "
                    f"{type(item).__name__} with shape {getattr(a, 'shape', None)}.")


def _image_batch(transform: Callable) -> Callable:
    def preprocess(items):
        torch = _torch()
        return torch.stack([transform(_to_pil(it)) for it in items])
    return preprocess


# ---- Hugging Face transformers ----------------------------------------------------------
def _hf_check_dir(path: Path, *, modality: str, need_weights: bool) -> None:
    if not path.is_dir():
        hub_like = "/" in str(path) and not str(path).startswith(("/", ".", "~"))
        extra = (" It looks like a Hub id: download the model once on a machine with internet "
                 f"(`hf download {path} --local-dir DIR`) and pass DIR." if hub_like else "")
        raise FileNotFoundError(f"The Hugging Face model folder {str(path)!r} does not exist. "
                                f"Put the model's files there (config.json, weights, tokenizer or "
                                f"processor files).{extra} bcikit never downloads weights at "
                                "run time.")
    if not (path / "config.json").is_file():
        raise _missing(path / "config.json", "model config",
                       "Put the model's config.json (from its Hub repository) there.")
    if need_weights and not any((path / f).is_file() for f in _HF_WEIGHT_FILES):
        raise _missing(path / "model.safetensors", "weights file",
                       f"Put the model's weights there (one of {', '.join(_HF_WEIGHT_FILES)}).")
    if "text" in modality and not any((path / f).is_file() for f in _HF_TOKENIZER_FILES):
        raise _missing(path / "tokenizer.json", "tokenizer file",
                       f"Put the tokenizer files there (one of {', '.join(_HF_TOKENIZER_FILES)} "
                       "plus tokenizer_config.json).")
    if "image" in modality and not any((path / f).is_file() for f in _HF_PROCESSOR_FILES):
        raise _missing(path / "preprocessor_config.json", "image processor config",
                       "Put the model's preprocessor_config.json (or processor_config.json) "
                       "there.")


def _st_pooling(path: Path) -> str | None:
    """The pooling declared by a sentence-transformers folder (1_Pooling/config.json)."""
    cfg = path / "1_Pooling" / "config.json"
    if not cfg.is_file():
        return None
    try:
        data = json.loads(cfg.read_text())
    except (OSError, ValueError):
        return None
    if data.get("pooling_mode_mean_tokens"):
        return "mean"
    if data.get("pooling_mode_cls_token"):
        return "cls"
    return None


def hf_model(path: str | os.PathLike, *, modality: str = "text", random_init: bool | str = False,
             seed: int = 0, max_length: int | None = 73, layer: str | None = None,
             pooling: str | None = None, name: str | None = None) -> FeatureExtractor:
    """A Hugging Face transformers model (and tokenizer/processor) from a local folder.

    Parameters
    ----------
    path : path-like
        Folder with ``config.json``, the weights (``model.safetensors`` / ``pytorch_model.bin``)
        and the tokenizer (text) or ``preprocessor_config.json`` (image). A sentence-transformers
        folder works (its transformer sits at the root; ``1_Pooling`` sets the default pooling).
    modality : {"text", "image", "text+image"}
        Stimuli are strings, images, or (image, text) pairs (processor with both, e.g. FLAVA).
    random_init : bool or "official"
        ``True``: ``AutoModel.from_config`` (the library's initialiser) seeded with ``seed``; the
        weights file is then not needed. ``"official"``: N(0, 6.0) on Linear/Embedding weights.
    seed : int
        Seed of the random initialisation.
    max_length : int or None
        Token limit (73 for BERT-style tokenisers, as the spec); ``None``: the tokenizer's.
        "flatten" pads text tokens to this length.
    layer, pooling : str or None
        Defaults for :func:`extract_features`. Text: layer ``""`` (the model output) with masked
        mean over tokens (SBERT; a sentence-transformers folder's ``1_Pooling`` decides), use
        ``pooling="pooled"`` for SimCSE's pooler. Image: ``""`` pooled (``pooler_output``).
        Text+image: ``"multimodal_model.pooler"`` pooled when the model has it (FLAVA), else ``""``
        mean. For token outputs that mix image and text tokens no mask applies, so prefer "cls",
        "pooled" or fixed-length padding there.
    name : str or None
        Identity in the cache key; default ``"hf:<folder name>"``.

    Returns
    -------
    FeatureExtractor

    Raises
    ------
    FileNotFoundError
        The folder, config, weights, tokenizer or processor file is missing (named in the message).
    """
    check_option(modality, ("text", "image", "text+image"), "modality", owner="hf_model")
    _check_random_init(random_init, "hf_model")
    validate_type(seed, "int", "seed", owner="hf_model")
    validate_type(max_length, ("int", None), "max_length", owner="hf_model")
    if pooling is not None:
        check_option(pooling, POOLINGS, "pooling", owner="hf_model")
    path = Path(path).expanduser()
    _hf_check_dir(path, modality=modality, need_weights=not random_init)
    transformers = require("transformers", extra="encoding", purpose="hf_model")
    with _offline():
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        if random_init:
            with _seeded(seed):
                model = transformers.AutoModel.from_config(config)
                if random_init == "official":
                    _official_init(model, seed)
        else:
            model = transformers.AutoModel.from_pretrained(path, local_files_only=True)
        if modality == "text":
            processor = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        elif modality == "image":
            processor = transformers.AutoImageProcessor.from_pretrained(path,
                                                                        local_files_only=True)
        else:
            processor = transformers.AutoProcessor.from_pretrained(path, local_files_only=True)
    model.eval()
    text_kw = {"padding": True, "truncation": max_length is not None, "return_tensors": "pt"}
    if max_length is not None:
        text_kw["max_length"] = max_length

    if modality == "text":
        def preprocess(items):
            return dict(processor(list(map(str, items)), **text_kw))
    elif modality == "image":
        def preprocess(items):
            return dict(processor(images=[_to_pil(it) for it in items], return_tensors="pt"))
    else:
        def preprocess(items):
            images = [_to_pil(it[0]) for it in items]
            texts = [str(it[1]) for it in items]
            return dict(processor(text=texts, images=images, **text_kw))

    default_layer, default_pooling = "", (
        _st_pooling(path) if modality == "text" else None) or (
        "mean" if modality == "text" else "pooled")
    if modality == "text+image" and "multimodal_model.pooler" in module_paths(model):
        default_layer = "multimodal_model.pooler"  # FLAVA: pooled multimodal CLS token
    default_layer = layer if layer is not None else default_layer
    default_pooling = pooling or default_pooling
    base_name = name or f"hf:{path.name}"

    def twin(kind, twin_seed):
        return hf_model(path, modality=modality, random_init=kind, seed=twin_seed,
                        max_length=max_length, layer=layer, pooling=pooling, name=base_name)

    return FeatureExtractor(
        model=model, name=_twin_name(base_name, random_init, seed) if random_init else base_name,
        preprocess=preprocess, forward=None, modality=modality, default_layer=default_layer,
        default_pooling=default_pooling, mask_key="attention_mask",
        config={"adapter": "hf", "modality": modality, "max_length": max_length,
                "model_type": getattr(config, "model_type", None)},
        max_tokens=max_length, _twin_factory=twin)


# ---- timm -------------------------------------------------------------------------------
def timm_model(model_name: str, *, checkpoint_path: str | os.PathLike | None = None,
               random_init: bool | str = False, seed: int = 0,
               model_kwargs: Mapping[str, Any] | None = None,
               data_config: Mapping[str, Any] | None = None, layer: str | None = None,
               pooling: str | None = None) -> FeatureExtractor:
    """A timm image model from a local checkpoint file (``pretrained=False`` + ``checkpoint_path``).

    Parameters
    ----------
    model_name : str
        timm architecture, e.g. ``"convnext_base.fb_in22k"`` or ``"beit_base_patch16_224"``.
    checkpoint_path : path-like or None
        Local ``.safetensors`` / ``.pth`` file; required unless ``random_init``.
    random_init : bool or "official"
        ``True``: ``timm.create_model(pretrained=False)`` seeded with ``seed``.
    seed : int
        Seed of the random initialisation.
    model_kwargs : mapping or None
        Extra ``create_model`` arguments (e.g. ``img_size``, ``depths`` for small test models).
    data_config : mapping or None
        Overrides of timm's preprocessing config (``input_size``, ``crop_pct``, ``mean``...);
        ``input_size`` follows ``model_kwargs["img_size"]`` when that is given.
    layer, pooling : str or None
        Defaults: layer ``""`` = the final pooled/normalised pre-logits features
        (``forward_head(forward_features(x), pre_logits=True)``), pooling ``"pooled"``.

    Returns
    -------
    FeatureExtractor
    """
    validate_type(model_name, str, "model_name", owner="timm_model")
    _check_random_init(random_init, "timm_model")
    validate_type(seed, "int", "seed", owner="timm_model")
    if checkpoint_path is None and not random_init:
        raise ValueError("timm_model needs checkpoint_path= (a local .safetensors or .pth file "
                         f"with the weights of {model_name!r}) or random_init=True.")
    if checkpoint_path is not None and not random_init:
        checkpoint_path = Path(checkpoint_path).expanduser()
        if not checkpoint_path.is_file():
            raise _missing(checkpoint_path, "timm checkpoint",
                           f"Put the weights of {model_name!r} there (a .safetensors or .pth "
                           "state dict, e.g. the Hub file model.safetensors).")
    timm = require("timm", extra="encoding", purpose="timm_model")
    kwargs = dict(model_kwargs or {})
    with _offline():
        if random_init:
            with _seeded(seed):
                model = timm.create_model(model_name, pretrained=False, **kwargs)
                if random_init == "official":
                    _official_init(model, seed)
        else:
            model = timm.create_model(model_name, pretrained=False,
                                      checkpoint_path=str(checkpoint_path), **kwargs)
    model.eval()
    args = dict(data_config or {})
    if "img_size" in kwargs and "input_size" not in args:
        size = kwargs["img_size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
        args["input_size"] = (3, *size)
    data_cfg = timm.data.resolve_data_config(args, model=model)
    transform = timm.data.create_transform(**data_cfg, is_training=False)

    def forward(m, x):
        return m.forward_head(m.forward_features(x), pre_logits=True)

    def twin(kind, twin_seed):
        return timm_model(model_name, random_init=kind, seed=twin_seed, model_kwargs=model_kwargs,
                          data_config=data_config, layer=layer, pooling=pooling)

    base_name = f"timm:{model_name}"
    return FeatureExtractor(
        model=model, name=_twin_name(base_name, random_init, seed) if random_init else base_name,
        preprocess=_image_batch(transform), forward=forward, modality="image",
        default_layer=layer or "", default_pooling=pooling or "pooled", mask_key=None,
        config={"adapter": "timm", "data_cfg": {k: list(v) if isinstance(v, tuple) else v
                                                for k, v in data_cfg.items()},
                "model_kwargs": kwargs},
        _twin_factory=twin)


# ---- open_clip --------------------------------------------------------------------------
def open_clip_model(model_name: str, *, checkpoint_path: str | os.PathLike | None = None,
                    tower: str = "vision", random_init: bool | str = False, seed: int = 0,
                    model_kwargs: Mapping[str, Any] | None = None, layer: str | None = None,
                    pooling: str | None = None) -> FeatureExtractor:
    """One tower of an open_clip model from a local checkpoint file.

    Parameters
    ----------
    model_name : str
        open_clip architecture, e.g. ``"ViT-B-16"``.
    checkpoint_path : path-like or None
        Local checkpoint (``open_clip_pytorch_model.bin`` / ``.safetensors`` / ``.pt``); required
        unless ``random_init``.
    tower : {"vision", "text"}
        The vision tower takes images and, by default, gives the pooled image embedding
        (``encode_image``); the text tower takes strings, default layer ``"ln_final"``
        (final LayerNorm) flattened and projected with SRP as the spec's language towers.
    random_init : bool or "official"
        ``True``: no checkpoint (open_clip's initialiser), seeded with ``seed``.
    model_kwargs : mapping or None
        Config overrides passed to ``open_clip.create_model`` (e.g. small ``vision_cfg``).
    layer, pooling : str or None
        Override the defaults above. Layer paths are relative to the whole CLIP model
        (``"visual.transformer.resblocks.11"``, ``"transformer.resblocks.11"``, ``"ln_final"``).

    Returns
    -------
    FeatureExtractor
    """
    validate_type(model_name, str, "model_name", owner="open_clip_model")
    check_option(tower, ("vision", "text"), "tower", owner="open_clip_model")
    _check_random_init(random_init, "open_clip_model")
    validate_type(seed, "int", "seed", owner="open_clip_model")
    if checkpoint_path is None and not random_init:
        raise ValueError("open_clip_model needs checkpoint_path= (a local checkpoint file of "
                         f"{model_name!r}) or random_init=True.")
    if checkpoint_path is not None and not random_init:
        checkpoint_path = Path(checkpoint_path).expanduser()
        if not checkpoint_path.is_file():
            raise _missing(checkpoint_path, "open_clip checkpoint",
                           f"Put the weights of {model_name!r} there (e.g. the Hub file "
                           "open_clip_pytorch_model.bin or open_clip_model.safetensors).")
    open_clip = require("open_clip", extra="encoding", purpose="open_clip_model")
    kwargs = dict(model_kwargs or {})
    with _offline():
        common = dict(pretrained_image=False, pretrained_text=False, **kwargs)
        if random_init:
            with _seeded(seed):
                model, _, transform = open_clip.create_model_and_transforms(
                    model_name, pretrained=None, **common)
                if random_init == "official":
                    _official_init(model, seed)
        else:
            model, _, transform = open_clip.create_model_and_transforms(
                model_name, pretrained=str(checkpoint_path), **common)
        tokenizer = (open_clip.get_tokenizer(model_name,
                                             context_length=getattr(model, "context_length", None))
                     if tower == "text" else None)
    model.eval()
    if tower == "vision":
        preprocess = _image_batch(transform)

        def forward(m, x):
            return m.encode_image(x)
        d_layer, d_pool, max_tokens = "", "pooled", None
    else:
        def preprocess(items):
            tokens = tokenizer([str(t) for t in items])
            return {"text": tokens, "attention_mask": tokens != 0}

        def forward(m, batch):
            return m.encode_text(batch["text"])
        d_layer, d_pool = "ln_final", "flatten"
        max_tokens = getattr(model, "context_length", None)

    def twin(kind, twin_seed):
        return open_clip_model(model_name, tower=tower, random_init=kind, seed=twin_seed,
                               model_kwargs=model_kwargs, layer=layer, pooling=pooling)

    base_name = f"open_clip:{model_name}:{tower}"
    return FeatureExtractor(
        model=model, name=_twin_name(base_name, random_init, seed) if random_init else base_name,
        preprocess=preprocess, forward=forward, modality="image" if tower == "vision" else "text",
        default_layer=layer if layer is not None else d_layer,
        default_pooling=pooling or d_pool, mask_key="attention_mask",
        config={"adapter": "open_clip", "tower": tower, "model_kwargs": kwargs,
                "transform": repr(transform)},
        max_tokens=max_tokens, _twin_factory=twin)


# ---- torchvision ------------------------------------------------------------------------
def _torchvision_default_layer(model: Any) -> tuple[str, str] | None:
    paths = set(module_paths(model))
    if "avgpool" in paths:  # ResNet, RegNet, EfficientNet, MobileNet, VGG...
        return "avgpool", "pooled"
    if "encoder.ln" in paths:  # ViT: final LayerNorm, CLS token
        return "encoder.ln", "cls"
    if "classifier.1" in paths and type(model).__name__ == "ConvNeXt":
        return "classifier.1", "pooled"
    if "flatten" in paths:  # Swin
        return "flatten", "pooled"
    return None


def torchvision_model(model_name: str, *, weights_path: str | os.PathLike | None = None,
                      random_init: bool | str = False, seed: int = 0, image_size: int = 224,
                      resize_size: int | None = None,
                      model_kwargs: Mapping[str, Any] | None = None, layer: str | None = None,
                      pooling: str | None = None) -> FeatureExtractor:
    """A torchvision model (``weights=None``) with a state dict from a local file.

    Parameters
    ----------
    model_name : str
        ``torchvision.models.get_model`` name, e.g. ``"resnet50"``.
    weights_path : path-like or None
        Local ``.pth`` / ``.safetensors`` state dict; required unless ``random_init``.
    random_init : bool or "official"
        ``True``: ``weights=None`` (torchvision's initialiser), seeded with ``seed``.
    image_size, resize_size : int
        Centre crop and resize (default ``round(image_size / 0.875)``), then ImageNet normalisation.
    model_kwargs : mapping or None
        Extra ``get_model`` arguments.
    layer, pooling : str or None
        Defaults by family: ``"avgpool"`` pooled (ResNet, EfficientNet...), ``"encoder.ln"`` CLS
        (ViT), ``"classifier.1"`` pooled (ConvNeXt); other families need ``layer``.

    Returns
    -------
    FeatureExtractor
    """
    validate_type(model_name, str, "model_name", owner="torchvision_model")
    _check_random_init(random_init, "torchvision_model")
    validate_type(seed, "int", "seed", owner="torchvision_model")
    validate_type(image_size, "int", "image_size", owner="torchvision_model")
    if weights_path is None and not random_init:
        raise ValueError("torchvision_model needs weights_path= (a local state-dict file of "
                         f"{model_name!r}) or random_init=True.")
    if weights_path is not None and not random_init:
        weights_path = Path(weights_path).expanduser()
        if not weights_path.is_file():
            raise _missing(weights_path, "torchvision weights file",
                           f"Put the state dict of {model_name!r} there (the .pth file that "
                           "torchvision's weights enum points to).")
    torch = _torch()
    tv = require("torchvision", extra="encoding", purpose="torchvision_model")
    from torchvision.transforms import v2 as T

    kwargs = dict(model_kwargs or {})
    if random_init:
        with _seeded(seed):
            model = tv.models.get_model(model_name, weights=None, **kwargs)
            if random_init == "official":
                _official_init(model, seed)
    else:
        model = tv.models.get_model(model_name, weights=None, **kwargs)
        if weights_path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(weights_path))
        else:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    model.eval()
    if layer is None:
        found = _torchvision_default_layer(model)
        if found is None:
            raise ValueError(f"torchvision_model has no default layer for {model_name!r}; pass "
                             "layer= (a module path; see bcikit.encoding.module_paths).")
        d_layer, d_pool = found
    else:
        d_layer, d_pool = layer, pooling or "pooled"
    resize = resize_size or int(round(image_size / 0.875))
    transform = T.Compose([T.ToImage(), T.Resize(resize, antialias=True), T.CenterCrop(image_size),
                           T.ToDtype(torch.float32, scale=True),
                           T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])

    def twin(kind, twin_seed):
        return torchvision_model(model_name, random_init=kind, seed=twin_seed,
                                 image_size=image_size, resize_size=resize_size,
                                 model_kwargs=model_kwargs, layer=layer, pooling=pooling)

    base_name = f"torchvision:{model_name}"
    return FeatureExtractor(
        model=model, name=_twin_name(base_name, random_init, seed) if random_init else base_name,
        preprocess=_image_batch(transform), forward=None, modality="image",
        default_layer=d_layer, default_pooling=pooling or d_pool, mask_key=None,
        config={"adapter": "torchvision", "image_size": image_size, "resize_size": resize,
                "model_kwargs": kwargs},
        _twin_factory=twin)
