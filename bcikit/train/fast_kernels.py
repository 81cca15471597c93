"""Faster, mathematically identical kernels for the convolutions of EEG networks (CPU).

EEG networks convolve over a (channels x time) plane whose one axis is often covered whole by
the kernel: ShallowFBCSPNet's and Deep4Net's merged temporal-spatial convolution
(``braindecode.modules.CombinedConv``, a ``(25, n_chans)`` kernel over a ``(time, n_chans)``
plane), EEGNet's depthwise spatial convolution (an ``(n_chans, 1)`` kernel over an
``(n_chans, time)`` plane), the classifier convolutions that cover the whole remaining plane.
oneDNN, torch's CPU convolution library, runs these as 2-D convolutions with one input plane
or a tall kernel, shapes it handles poorly (0.6 s per batch of 64 for ShallowFBCSPNet's first
layer on one thread). Written as what they are, 1-D convolutions over the uncovered axis whose
input channels are (input channel x covered axis), the same sums run faster: forward + weight
gradient 4.5x for ShallowFBCSPNet's first layer, 1.4-1.7x for EEGNet's spatial convolution
(one thread, batch of 64 trials of 22 x 1000).

:func:`fast_kernels` swaps the ``forward`` of the modules that match, for the duration of a
``with`` block, and restores it afterwards. Parameters, buffers, hooks and the module tree are
untouched, so ``state_dict()`` keys, shapes and values are exactly those of the unmodified
model (a model trained this way loads into plain braindecode), and outside the block nothing
of the substitution remains. Each substituted forward checks the input it receives and calls
the original forward for any input the rewrite does not cover.

Substitutions (each computes the same sums as the module it replaces; only the order of the
floating-point additions can differ, as between any two convolution libraries):

``full_axis_conv2d``
    ``torch.nn.Conv2d`` (or a subclass that keeps ``Conv2d.forward``, e.g. braindecode's
    ``Conv2dWithConstraint`` with its max-norm parametrisation), zero padding, any groups,
    stride, dilation and bias, called on an input whose height equals the kernel height with
    no padding on that axis (or width equals kernel width, no padding): computed as
    ``conv1d`` over the other axis with ``in_channels * covered_size`` input channels.
``combined_conv``
    ``braindecode.modules.CombinedConv``: the merged weight ``sum_t w_time[t] * w_spat[:, t]``
    and bias are formed as braindecode forms them, directly in ``conv1d`` layout
    ``(n_filters_spat, n_chans, filter_time_length)``, and applied to the ``(batch, n_chans,
    time)`` view of the input (which is how the network's input is laid out in memory, so no
    copy is made).

:func:`reuse_freed_memory` is the other half of ``Trainer(fast_kernels=...)``: it stops glibc
from unmapping and re-faulting large freed blocks between training steps.

A copy of the model made inside the block (``copy.deepcopy``) keeps the substituted forwards;
``state_dict()`` is the way to take the weights out.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import platform
import sys
import threading
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

__all__ = ["fast_kernels", "find_substitutions", "reuse_freed_memory", "PATTERNS"]

#: Names of the substitutions :func:`fast_kernels` can make.
PATTERNS = ("full_axis_conv2d", "combined_conv")


# ------------------------------------------------------------------------------ conv2d -> conv1d
def _int_pair(v) -> tuple[int, int] | None:
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(i, int) for i in v):
        return (int(v[0]), int(v[1]))
    return None


def _conv2d_matches(m: torch.nn.Module) -> bool:
    """``m`` is a Conv2d whose forward is torch's (so its computation is known)."""
    if not isinstance(m, torch.nn.Conv2d):
        return False
    cls = type(m)
    if cls.forward is not torch.nn.Conv2d.forward or (
            cls._conv_forward is not torch.nn.Conv2d._conv_forward):
        return False
    if m.padding_mode != "zeros" or isinstance(m.padding, str) and m.padding != "valid":
        return False
    return _int_pair(m.padding if m.padding != "valid" else 0) is not None


def _full_axis_conv2d(m: torch.nn.Conv2d, original: Callable, x: torch.Tensor) -> torch.Tensor:
    """``m(x)`` as a conv1d when the kernel covers one whole spatial axis of ``x``."""
    if x.dim() != 4:
        return original(x)
    kh, kw = m.kernel_size
    ph, pw = (0, 0) if m.padding == "valid" else _int_pair(m.padding)
    sh, sw = m.stride
    dh, dw = m.dilation
    n, c, h, w = x.shape
    if c != m.in_channels:
        return original(x)
    weight = m.weight  # through any parametrisation, as Conv2d.forward reads it
    if h == kh and ph == 0 and (dh == 1 or kh == 1):
        # the kernel covers the whole height: one output row; channels (c, row)
        y = F.conv1d(x.reshape(n, c * h, w), weight.reshape(m.out_channels, -1, kw), m.bias,
                     sw, pw, dw, m.groups)
        return y.unsqueeze(2)
    if w == kw and pw == 0 and (dw == 1 or kw == 1):
        # the kernel covers the whole width: one output column; channels (c, column)
        xt = x.transpose(2, 3).reshape(n, c * w, h)
        wt = weight.transpose(2, 3).reshape(m.out_channels, -1, kh)
        y = F.conv1d(xt, wt, m.bias, sh, ph, dh, m.groups)
        return y.unsqueeze(3)
    return original(x)


# ------------------------------------------------------------------------------ CombinedConv
@functools.lru_cache(maxsize=1)
def _combined_conv_class() -> type | None:
    try:
        from braindecode.modules import CombinedConv
    except ImportError:  # braindecode is optional for the Trainer
        return None
    return CombinedConv


def _combined_conv_matches(m: torch.nn.Module) -> bool:
    cls = _combined_conv_class()
    if cls is None or not isinstance(m, cls) or type(m).forward is not cls.forward:
        return False
    ct, cs = getattr(m, "conv_time", None), getattr(m, "conv_spat", None)
    if not (isinstance(ct, torch.nn.Conv2d) and isinstance(cs, torch.nn.Conv2d)):
        return False
    if (getattr(m, "bias_time", None) not in (True, False)
            or getattr(m, "bias_spat", None) not in (True, False)
            or (m.bias_time and ct.bias is None) or (m.bias_spat and cs.bias is None)):
        return False
    return (ct.in_channels == 1 and ct.kernel_size[1] == 1 and cs.kernel_size[0] == 1
            and cs.in_channels == ct.out_channels and ct.groups == 1 and cs.groups == 1)


def _combined_conv(m: torch.nn.Module, original: Callable, x: torch.Tensor) -> torch.Tensor:
    """braindecode's CombinedConv as one conv1d over time with n_chans input channels."""
    w_time = m.conv_time.weight  # (n_time, 1, K, 1)
    w_spat = m.conv_spat.weight  # (n_spat, n_time, 1, C)
    n_chans = w_spat.shape[3]
    if x.dim() != 4 or x.shape[1] != 1 or x.shape[3] != n_chans:
        return original(x)
    # merged weight, (n_spat, C, K): sum over the temporal filters t
    weight = torch.einsum("tk,stc->sck", w_time[:, 0, :, 0], w_spat[:, :, 0, :])
    bias = None
    if m.bias_time:
        bias = w_spat[:, :, 0, :].sum(-1) @ m.conv_time.bias
    if m.bias_spat:
        bias = m.conv_spat.bias if bias is None else bias + m.conv_spat.bias
    y = F.conv1d(x[:, 0].transpose(1, 2), weight, bias)  # (n, n_spat, T - K + 1)
    return y.unsqueeze(3)


_RULES: tuple[tuple[str, Callable, Callable], ...] = (
    ("combined_conv", _combined_conv_matches, _combined_conv),
    ("full_axis_conv2d", _conv2d_matches, _full_axis_conv2d),
)


# ------------------------------------------------------------------------------ public API
def find_substitutions(model: torch.nn.Module) -> list[tuple[str, str]]:
    """The modules of ``model`` that :func:`fast_kernels` would give a new forward.

    Returns
    -------
    found : list of (str, str)
        ``(module name, pattern)`` pairs, in ``named_modules`` order. Whether a module's fast
        path is taken is decided per call from the input's shape (otherwise the original
        forward runs).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"find_substitutions needs a torch.nn.Module. Got "
                        f"{type(model).__name__}.")
    found: list[tuple[str, str]] = []
    replaced: list[str] = []  # a replaced module's own children are not called by the new forward
    for name, m in model.named_modules():
        if any(p == "" or name.startswith(p + ".") for p in replaced):
            continue
        if "forward" in vars(m):  # already has an instance-level forward: leave it alone
            continue
        for pattern, matches, _ in _RULES:
            if matches(m):
                found.append((name, pattern))
                if pattern == "combined_conv":
                    replaced.append(name)
                break
    return found


@contextlib.contextmanager
def fast_kernels(model: torch.nn.Module, *, enabled: bool = True
                 ) -> Iterator[list[tuple[str, str]]]:
    """Run the matching modules of ``model`` with faster, equivalent kernels inside the block.

    Parameters
    ----------
    model : torch.nn.Module
    enabled : bool
        ``False`` makes the block a no-op (convenient for a flag).

    Yields
    ------
    substituted : list of (str, str)
        ``(module name, pattern)`` of every module whose forward was replaced (see
        :func:`find_substitutions`); empty when ``enabled`` is False.

    Notes
    -----
    The replacement is an instance attribute ``forward`` on each matching module, deleted when
    the block exits (also on an exception). Parameters and buffers are the same objects
    throughout: optimiser state, ``state_dict()`` and checkpoints are unaffected.

    Examples
    --------
    >>> with fast_kernels(model):                       # doctest: +SKIP
    ...     loss = criterion(model(X), y); loss.backward()
    """
    found = find_substitutions(model) if enabled else []
    rules = {pattern: fn for pattern, _, fn in _RULES}
    patched = []
    try:
        for name, pattern in found:
            m = model.get_submodule(name)
            original = m.forward  # the class's forward, bound
            m.forward = functools.partial(rules[pattern], m, original)
            patched.append(m)
        yield list(found)
    finally:
        for m in patched:
            if "forward" in vars(m):
                del m.forward


# ------------------------------------------------------------------------------ host memory
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
#: glibc's mmap settings restored after :func:`reuse_freed_memory`: the values its dynamic rule
#: reaches in a process that has freed a 32 MB block (any training with large activations).
_RESTORE = {_M_MMAP_MAX: 65536, _M_MMAP_THRESHOLD: 32 * 1024 * 1024,
            _M_TRIM_THRESHOLD: 64 * 1024 * 1024}
_reuse_depth = 0
_reuse_lock = threading.Lock()
_reuse_active = [False]


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


@contextlib.contextmanager
def reuse_freed_memory(*, enabled: bool = True) -> Iterator[bool]:
    """Keep freed host memory in the C allocator for reuse inside the block (glibc only).

    torch allocates CPU tensors with ``malloc``. glibc serves blocks above its mmap threshold
    (at most 32 MB) with fresh ``mmap`` calls and hands them back to the kernel on ``free``, so
    every large activation or gradient of every step is faulted in page by page and zeroed by
    the kernel again: for EEGNet on 64 trials of 22 x 1000 samples (45 MB feature maps) that
    is about half of a training step on one thread. Inside this block glibc is told to serve
    every block from its heap (``M_MMAP_MAX = 0``) and not to shrink the heap
    (``M_TRIM_THRESHOLD``), so the memory of one step is reused by the next. Nothing else
    changes: the same tensors are computed from the same values.

    On exit the settings become those glibc's own dynamic rule reaches in a process that
    has freed a 32 MB block (mmap threshold 32 MB, trim threshold 64 MB; glibc's dynamic
    adjustment stays off after any ``mallopt`` call) and ``malloc_trim(0)`` returns the free
    memory to the system. Nested or concurrent blocks (threads) act once: the settings are
    changed by the first to enter and restored by the last to leave. Elsewhere than Linux
    with glibc this is a no-op.

    Yields
    ------
    active : bool
        Whether the allocator settings were changed.
    """
    global _reuse_depth
    libc = _glibc() if enabled else None
    if libc is None:
        yield False
        return
    with _reuse_lock:
        outer = _reuse_depth == 0
        _reuse_depth += 1
        if outer:
            _reuse_active[0] = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(
                libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
        active = _reuse_active[0]
    try:
        yield active
    finally:
        with _reuse_lock:
            _reuse_depth -= 1
            if _reuse_depth == 0:
                for param, value in _RESTORE.items():
                    libc.mallopt(param, value)
                libc.malloc_trim(0)
                _reuse_active[0] = False
