"""The training engine shared by every bcikit pipeline.

One :class:`Trainer` drives any ``torch.nn.Module`` on the CPU, one GPU or several processes
(``torchrun`` / :func:`bcikit.train.ddp.run_distributed`), with mixed precision on GPUs, seeded
determinism, atomic per-epoch checkpoints with exact resume, early stopping on the validation
split, progress bars and a metrics history.

Batching
--------
Each epoch draws one permutation of the training trials from a generator seeded by
``(seed, epoch)``. When the data fit on the device (``keep_on_device``) the arrays are moved
there once and each batch is an index into them; otherwise a :class:`torch.utils.data.DataLoader`
reads the same batches from the host arrays (memory-mapped arrays included). Both paths produce
identical batches. Under DDP every process draws the same permutation and takes its share of each
global batch, so the global batch is ``batch_size`` whatever the number of processes.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils import check_option, check_range, logger, progress, validate_type, warn
from . import ddp as _ddp
from . import fast_kernels as _fast
from .checkpoint import (CHECKPOINT_NAME, capture_rng_state, load_checkpoint, restore_rng_state,
                         save_checkpoint)
from .losses import ClassCheckedCrossEntropy, cross_entropy_loss

__all__ = ["Trainer", "set_seed", "resolve_device", "resolve_precision", "HISTORY_KEYS"]

_OWNER = "Trainer"
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = (None, "cosine")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MONITORS = ("val_loss", "val_accuracy")
HISTORY_KEYS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "time")
#: ``keep_on_device='auto'`` moves the data to the device when they take less than this
#: fraction of its free memory.
KEEP_ON_DEVICE_FRACTION = 0.25
_CHECKPOINT_FORMAT = 1
_CALLBACK_HOOKS = ("on_train_begin", "on_epoch_end", "on_batch_end", "on_train_end")


# --------------------------------------------------------------------------------------------
# seeds, devices, precision
# --------------------------------------------------------------------------------------------
def set_seed(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device).

    Parameters
    ----------
    seed : int
        In ``[0, 2**32 - 1]``.

    Notes
    -----
    With the same seed, the same data and the same thread count, training on the CPU gives
    bit-identical weights. On GPUs some kernels are non-deterministic unless
    ``Trainer(deterministic=True)`` is used.
    """
    validate_type(seed, "int", "seed", owner="set_seed")
    check_range(seed, "seed", low=0, high=2**32 - 1, owner="set_seed")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device too


def _device_error(device: Any, owner: str, reason: str | None = None) -> ValueError:
    allowed = "{'auto', 'cpu', 'cuda', 'cuda:<index>', 'mps'} or a torch.device"
    msg = f"The 'device' parameter of {owner} must be one of {allowed}. Got {device!r} instead."
    if reason:
        msg = f"The 'device' parameter of {owner} is {device!r}, but {reason}."
    return ValueError(msg)


def resolve_device(device: str | torch.device = "auto", *, local_rank: int | None = None,
                   owner: str = _OWNER) -> torch.device:
    """Turn a device specification into a :class:`torch.device`, checking it is usable.

    Parameters
    ----------
    device : str or torch.device
        ``'auto'`` (CUDA when available, else CPU), ``'cpu'``, ``'cuda'``, ``'cuda:1'``,
        ``'mps'`` or a ``torch.device``.
    local_rank : int or None
        Under DDP, the process's local rank: ``'auto'`` and ``'cuda'`` then mean
        ``cuda:<local_rank>``.

    Returns
    -------
    device : torch.device
        CUDA devices always carry an index.

    Raises
    ------
    ValueError
        For an unknown device, or a device that is not available on this machine (there is no
        silent fallback to the CPU).
    """
    if isinstance(device, str):
        if device == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda", local_rank or 0)
            return torch.device("cpu")
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError):
            raise _device_error(device, owner) from None
    elif isinstance(device, torch.device):
        dev = device
    else:
        raise TypeError(f"The 'device' parameter of {owner} must be an instance of str or "
                        f"torch.device. Got {type(device).__name__} ({device!r:.60}) instead.")
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise _device_error(device, owner, "CUDA is not available on this machine "
                                "(torch.cuda.is_available() is False); use 'auto' or 'cpu'")
        index = dev.index if dev.index is not None else (local_rank or 0)
        n = torch.cuda.device_count()
        if index >= n:
            raise _device_error(device, owner, f"this machine has {n} CUDA device(s) "
                                f"(indices 0..{n - 1})")
        return torch.device("cuda", index)
    if dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise _device_error(device, owner, "MPS is not available on this machine")
        return torch.device("mps")
    raise _device_error(device, owner)


def resolve_precision(precision: str, device: torch.device, *, owner: str = _OWNER) -> str:
    """Resolve ``precision`` (``'auto'``, ``'fp32'``, ``'bf16'``, ``'fp16'``) for ``device``.

    ``'auto'`` gives ``'bf16'`` on a CUDA device that supports bfloat16, ``'fp16'`` (with a
    gradient scaler) on other CUDA devices and ``'fp32'`` elsewhere. ``'bf16'`` is also accepted
    on the CPU (CPU autocast); ``'fp16'`` needs CUDA.
    """
    check_option(precision, PRECISIONS, "precision", owner=owner)
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"The 'precision' parameter of {owner} is 'fp16', which needs a CUDA "
                         f"device (fp16 autocast with a gradient scaler); the device is "
                         f"{str(device)!r}. Use 'bf16' or 'fp32'.")
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"The 'precision' parameter of {owner} is 'bf16', but "
                             f"{torch.cuda.get_device_name(device)} does not support bfloat16. "
                             "Use 'fp16' or 'fp32'.")
        if device.type == "mps":
            raise ValueError(f"The 'precision' parameter of {owner} is 'bf16', which bcikit "
                             "supports on CUDA and CPU only. Use 'fp32' on MPS.")
    return precision


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def _is_memmap(a: Any) -> bool:
    return isinstance(a, np.memmap) or isinstance(getattr(a, "base", None), np.memmap)


def _nbytes(a: Any) -> int:
    if a is None:
        return 0
    if isinstance(a, torch.Tensor):
        return a.element_size() * a.nelement()
    return int(a.nbytes)


def _available_host_bytes() -> int:
    """Memory the OS can give us now (Linux MemAvailable; 0 when it cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 0


def _fix_dtype(t: torch.Tensor) -> torch.Tensor:
    if t.is_floating_point() and t.dtype != torch.float32:
        return t.float()
    if t.dtype in (torch.int8, torch.int16, torch.int32, torch.uint8):
        return t.long()
    return t


def _to_tensor(a: Any) -> torch.Tensor:
    """Host array or tensor -> tensor (sharing memory with in-RAM float32 numpy arrays)."""
    if isinstance(a, torch.Tensor):
        return _fix_dtype(a.detach())
    a = np.asarray(a)
    if _is_memmap(a) or not a.flags.writeable or not a.flags.c_contiguous:
        a = np.array(a, order="C")  # read into RAM
    return _fix_dtype(torch.from_numpy(a))


class _IndexedArrays(torch.utils.data.Dataset):
    """``dataset[index_tensor]`` -> one batch, read from host arrays (memory maps included)."""

    def __init__(self, X: Any, y: Any):
        self.X, self.y = X, y

    def __len__(self) -> int:
        return len(self.X)

    @staticmethod
    def _take(a: Any, idx: torch.Tensor) -> torch.Tensor:
        if isinstance(a, torch.Tensor):
            return _fix_dtype(a[idx.to(a.device)])
        return _fix_dtype(torch.from_numpy(np.ascontiguousarray(a[idx.numpy()])))

    def __getitem__(self, idx: torch.Tensor):
        xb = self._take(self.X, idx)
        yb = self._take(self.y, idx) if self.y is not None else torch.empty(0)
        return xb, yb


class _Data:
    """Training or validation arrays, either resident on the device or read batch by batch."""

    def __init__(self, X: Any, y: Any, device: torch.device, on_device: bool):
        self.n = len(X)
        self.device = device
        self.on_device = on_device
        if on_device:
            self.X = _to_tensor(X).to(device)
            self.y = _to_tensor(y).to(device) if y is not None else None
        else:
            self.X, self.y = X, y

    def batches(self, chunks: Sequence[torch.Tensor]) -> Iterator[tuple[torch.Tensor, Any]]:
        """Yield ``(X[idx], y[idx])`` on the device for each CPU index tensor in ``chunks``."""
        if len(chunks) == 0:
            return
        if self.on_device:
            sizes = [len(c) for c in chunks]
            flat = torch.cat(list(chunks)).to(self.device, non_blocking=True)
            for idx in flat.split(sizes):
                # index_select: the same rows as X[idx], gathered faster
                yield (self.X.index_select(0, idx),
                       self.y.index_select(0, idx) if self.y is not None else None)
            return
        loader = torch.utils.data.DataLoader(
            _IndexedArrays(self.X, self.y), batch_size=None, sampler=list(chunks),
            num_workers=0, pin_memory=self.device.type == "cuda",
            # its own generator: a DataLoader otherwise draws a seed from torch's global one,
            # and the two batching paths would then see different dropout masks
            generator=torch.Generator().manual_seed(0))
        for xb, yb in loader:
            xb = xb.to(self.device, non_blocking=True)
            yb = yb.to(self.device, non_blocking=True) if self.y is not None else None
            yield xb, yb


#: Elements checked at a time by :func:`_all_finite` (its temporary mask stays this small).
_FINITE_CHUNK = 1 << 22


def _all_finite(a: Any) -> bool:
    """``isfinite(a).all()`` for a float array or tensor, trial block by trial block.

    The check never builds a mask as large as the data (a quarter of their size for float32),
    and a memory-mapped array is read a block at a time.
    """
    isfinite = torch.isfinite if isinstance(a, torch.Tensor) else np.isfinite
    if a.ndim == 0:
        return bool(isfinite(a))
    n = a.shape[0]
    per_trial = max(1, int(np.prod(a.shape[1:], dtype=np.int64)))
    step = max(1, _FINITE_CHUNK // per_trial)
    for start in range(0, n, step):
        if not bool(isfinite(a[start:start + step]).all()):
            return False
    return True


def _check_X(X: Any, name: str) -> Any:
    if isinstance(X, torch.Tensor):
        arr = X.detach()
        if arr.is_complex() or arr.dtype == torch.bool:
            raise TypeError(f"{name!r} must hold real numbers. Got dtype {arr.dtype}.")
        if arr.is_floating_point():
            if not _all_finite(arr):
                raise ValueError(f"{name!r} contains NaN or infinite values.")
            arr = arr.float()
    else:
        if not isinstance(X, np.ndarray):
            try:
                X = np.asarray(X)
            except Exception as err:
                raise TypeError(f"{name!r} must be a numpy array or a torch tensor. "
                                f"Got {type(X).__name__}.") from err
        arr = X
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"{name!r} must hold real numbers. Got dtype {arr.dtype}.")
        if arr.dtype.kind == "f":
            if not _all_finite(arr):
                raise ValueError(f"{name!r} contains NaN or infinite values.")
            if arr.dtype != np.float32 and not _is_memmap(arr):
                arr = arr.astype(np.float32)  # memory maps are converted batch by batch
    if arr.ndim < 2:
        raise ValueError(f"{name!r} must have at least 2 dimensions (n_trials, ...). "
                         f"Got shape {tuple(arr.shape)}.")
    if arr.shape[0] == 0:
        raise ValueError(f"{name!r} holds no trials (shape {tuple(arr.shape)}).")
    return arr


def _check_y(y: Any, n: int, name: str, x_name: str, *, class_codes: bool) -> Any:
    if isinstance(y, torch.Tensor):
        arr = y.detach()
        kind = "f" if arr.is_floating_point() else ("b" if arr.dtype == torch.bool else "i")
    else:
        arr = np.asarray(y)
        kind = arr.dtype.kind
        if kind == "u":
            kind = "i"
    if arr.ndim < 1 or arr.shape[0] != n:
        raise ValueError(f"{name!r} must have one entry per trial of {x_name!r} ({n}). "
                         f"Got shape {tuple(arr.shape)}.")
    if kind not in "fi":
        raise TypeError(f"{name!r} must hold numbers. Got dtype {arr.dtype}.")
    if class_codes:
        if kind != "i" or arr.ndim != 1:
            raise ValueError(
                f"{name!r} must be a 1-D array of integer class codes for the default "
                f"cross-entropy loss. Got dtype {arr.dtype}, shape {tuple(arr.shape)}. Pass "
                "loss=callable(model, X, y) -> (loss, logits) for other targets.")
        lo = int(arr.min())
        if lo < 0:
            raise ValueError(f"{name!r} must hold class codes >= 0. Got {lo}.")
    if isinstance(arr, np.ndarray) and kind == "f" and arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    return arr


class _LossModule(torch.nn.Module):
    """Wraps ``loss_fn(model, X, y)`` so that DistributedDataParallel sees it as ``forward``."""

    def __init__(self, model: torch.nn.Module, loss_fn: Callable):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, X: torch.Tensor, y: torch.Tensor):
        return self.loss_fn(self.model, X, y)


def _model_training_loss(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor):
    return model.training_loss(X, y)


def _max_code(y: Any) -> int:
    return int(y.max())


def _derive_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0])


# --------------------------------------------------------------------------------------------
# the Trainer
# --------------------------------------------------------------------------------------------
class Trainer:
    """Train a ``torch.nn.Module`` classifier (or any model with a loss) on arrays of trials.

    ``__init__`` only stores the parameters; they are checked in :meth:`fit`.

    Parameters
    ----------
    model : torch.nn.Module
        The network. By default ``model(X)`` must return logits ``(batch, n_classes)``. If the
        model defines ``training_loss(X, y) -> (loss, logits)`` that method is used for the
        training steps (validation still uses ``loss`` or cross-entropy).
    epochs : int
        Maximum number of epochs (>= 1).
    batch_size : int
        Global batch size: under DDP the processes share each batch.
    lr : float
        Learning rate (> 0).
    optimizer : {'adamw', 'adam', 'sgd'} or callable
        ``'sgd'`` uses momentum 0.9. These three use torch's fused kernels when every parameter
        is a floating-point tensor on the CPU or a CUDA device (the same update rule as torch's
        default implementation, to rounding; several times faster per step on the CPU). A
        callable is called as ``optimizer(params, lr=lr, weight_decay=weight_decay)`` (an
        optimiser class works).
    weight_decay : float
        Weight decay (>= 0).
    scheduler : None, 'cosine' or callable
        ``'cosine'`` anneals the learning rate to 0 over all steps. A callable is called as
        ``scheduler(optimizer, steps_per_epoch=..., epochs=...)`` (for example
        ``functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=1e-3)``). Schedulers
        are stepped after every optimiser step; a per-epoch schedule can be written with
        ``LambdaLR`` on ``step // steps_per_epoch``.
    loss : None or callable
        ``loss(model, X, y) -> (loss, logits)`` with ``loss`` the batch mean and ``logits`` the
        class scores (or ``None``). ``None`` means cross-entropy on ``model(X)``. It overrides
        ``model.training_loss`` and is also the validation loss.
    patience : int or None
        Early stopping: stop after ``patience`` epochs without improvement of ``monitor`` on the
        validation split, then restore the weights of the best epoch. Needs validation data.
    monitor : {'val_loss', 'val_accuracy'}
        What early stopping and ``best_epoch_`` look at. For ``'val_accuracy'`` ties go to the
        lower validation loss, then to the earlier epoch.
    device : str or torch.device
        ``'auto'`` (CUDA when present, else CPU), ``'cpu'``, ``'cuda'``, ``'cuda:1'``, ``'mps'``.
    precision : {'auto', 'fp32', 'bf16', 'fp16'}
        Autocast precision. ``'auto'``: bf16 on CUDA devices that support it, fp16 with a
        gradient scaler on older CUDA devices, fp32 elsewhere.
    seed : int
        Seeds Python, NumPy and torch at the start of :meth:`fit` (rank ``r`` of a distributed
        run uses ``seed + r`` for its global generators) and the per-epoch batch permutation.
        The model's initial weights are the caller's: seed before building the model.
    checkpoint_dir : path-like or None
        Where ``checkpoint.pt`` is written atomically after every epoch (by rank 0 only).
    resume : bool
        Continue from ``checkpoint_dir/checkpoint.pt`` when it exists; the continued run is the
        same, bit for bit on the CPU, as a run that was never interrupted. With ``resume=False``
        an existing checkpoint is an error (it is never overwritten silently).
    keep_on_device : 'auto' or bool
        Keep the arrays on the device and batch by indexing (fast for small EEG sets), or read
        batches with a DataLoader. ``'auto'``: on the device when they take less than
        ``KEEP_ON_DEVICE_FRACTION`` of its free memory (in-RAM arrays always on the CPU).
    grad_clip : float or None
        Clip the global gradient norm to this value.
    drop_last : bool
        Skip the last, incomplete batch of each epoch. Independently of this, a last batch that
        would give a process a single trial is skipped when the model has batch-norm layers.
    deterministic : bool
        Ask torch for deterministic kernels (cuDNN and ``use_deterministic_algorithms``, in
        warn-only mode) during :meth:`fit`; slower on GPUs, no effect on CPU results.
    fast_kernels : 'auto' or bool
        During :meth:`fit` only (training and validation passes), run the convolutions that
        :func:`bcikit.train.fast_kernels.fast_kernels` recognises (a ``Conv2d`` whose kernel
        covers one whole axis of its input, braindecode's ``CombinedConv``) as the equivalent
        ``conv1d`` and, on the CPU with glibc, keep freed host memory for reuse
        (:func:`bcikit.train.fast_kernels.reuse_freed_memory`). The same sums are computed
        (results equal to float32 rounding); parameters and ``state_dict()`` are untouched
        and the original forwards are back after :meth:`fit`. ``'auto'``: on when the device
        is the CPU (where oneDNN runs these shapes slowly), off on GPUs. ``fast_kernels_``
        lists what was substituted.
    callbacks : sequence
        Objects with any of ``on_train_begin(trainer)``, ``on_epoch_end(trainer, epoch, logs)``,
        ``on_batch_end(trainer, step, logs)``, ``on_train_end(trainer)``. Epochs are counted
        from 1; ``logs`` of ``on_epoch_end`` is the epoch's history row, ``logs`` of
        ``on_batch_end`` holds ``epoch``, ``loss``, ``batch_size`` (this process's share under
        DDP), ``global_batch_size`` and ``lr``; ``step`` counts optimiser steps from 1. Setting
        ``trainer.stop_training = True`` stops after the current epoch. The checkpoint of an
        epoch is written after its callbacks ran, so a callback that raises (a simulated kill)
        leaves the previous epoch's checkpoint.
    verbose : bool or None
        Progress bar (rank 0 only) and per-epoch log lines; ``None``: a bar only when stderr is
        a terminal.

    Attributes
    ----------
    history_ : list of dict
        One row per epoch with the keys of :data:`HISTORY_KEYS` (``val_*`` are NaN without
        validation data, accuracies NaN when the loss returns no logits; ``lr`` is the learning
        rate at the start of the epoch and ``time`` its duration in seconds).
    best_epoch_ : int
        Epoch (from 1) with the best ``monitor`` value; the last epoch without validation data.
    n_epochs_run_ : int
        Epochs completed, including those of a resumed run.
    device_ : torch.device
    precision_ : str
    keep_on_device_ : bool
    fast_kernels_ : list of (str, str)
        ``(module name, pattern)`` of the modules run with substituted kernels during the last
        :meth:`fit` (empty when off).
    world_size_, rank_ : int
    checkpoint_path_ : Path or None

    Examples
    --------
    >>> trainer = Trainer(model, epochs=50, patience=10,
    ...                   checkpoint_dir="run/ckpt")          # doctest: +SKIP
    >>> trainer.fit(X_train, y_train, X_valid, y_valid)       # doctest: +SKIP
    >>> proba = trainer.predict_proba(X_test)                 # doctest: +SKIP
    """

    def __init__(self, model: torch.nn.Module, *, epochs: int = 100, batch_size: int = 64,
                 lr: float = 1e-3, optimizer: str | Callable = "adamw",
                 weight_decay: float = 0.0, scheduler: str | Callable | None = None,
                 loss: Callable | None = None, patience: int | None = None,
                 monitor: str = "val_loss", device: str | torch.device = "auto",
                 precision: str = "auto", seed: int = 0,
                 checkpoint_dir: str | os.PathLike | None = None, resume: bool = True,
                 keep_on_device: str | bool = "auto", grad_clip: float | None = None,
                 drop_last: bool = False, deterministic: bool = False,
                 fast_kernels: str | bool = "auto",
                 callbacks: Sequence[Any] = (), verbose: bool | None = None):
        self.model = model
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.scheduler = scheduler
        self.loss = loss
        self.patience = patience
        self.monitor = monitor
        self.device = device
        self.precision = precision
        self.seed = seed
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.keep_on_device = keep_on_device
        self.grad_clip = grad_clip
        self.drop_last = drop_last
        self.deterministic = deterministic
        self.fast_kernels = fast_kernels
        self.callbacks = callbacks
        self.verbose = verbose
        self.stop_training = False

    # ---------------------------------------------------------------- parameter checks
    def _validate_params(self) -> None:
        o = _OWNER
        if not isinstance(self.model, torch.nn.Module):
            raise TypeError(f"The 'model' parameter of {o} must be an instance of "
                            f"torch.nn.Module. Got {type(self.model).__name__} instead.")
        validate_type(self.epochs, "int", "epochs", owner=o)
        check_range(self.epochs, "epochs", low=1, owner=o)
        validate_type(self.batch_size, "int", "batch_size", owner=o)
        check_range(self.batch_size, "batch_size", low=1, owner=o)
        validate_type(self.lr, "numeric", "lr", owner=o)
        check_range(self.lr, "lr", low=0, low_inclusive=False, owner=o)
        if not callable(self.optimizer):
            validate_type(self.optimizer, (str,), "optimizer", owner=o)
            check_option(self.optimizer, OPTIMIZERS, "optimizer", owner=o)
        validate_type(self.weight_decay, "numeric", "weight_decay", owner=o)
        check_range(self.weight_decay, "weight_decay", low=0, owner=o)
        if not callable(self.scheduler):
            check_option(self.scheduler, SCHEDULERS, "scheduler", owner=o)
        if self.loss is not None and not callable(self.loss):
            raise TypeError(f"The 'loss' parameter of {o} must be None or a callable "
                            f"loss(model, X, y) -> (loss, logits). Got {self.loss!r:.60}.")
        validate_type(self.patience, ("int", None), "patience", owner=o)
        if self.patience is not None:
            check_range(self.patience, "patience", low=1, owner=o)
        check_option(self.monitor, MONITORS, "monitor", owner=o)
        check_option(self.precision, PRECISIONS, "precision", owner=o)
        validate_type(self.seed, "int", "seed", owner=o)
        check_range(self.seed, "seed", low=0, high=2**32 - 1, owner=o)
        validate_type(self.checkpoint_dir, ("path-like", None), "checkpoint_dir", owner=o)
        validate_type(self.resume, bool, "resume", owner=o)
        if not isinstance(self.keep_on_device, bool):
            check_option(self.keep_on_device, ("auto", True, False), "keep_on_device", owner=o)
        validate_type(self.grad_clip, ("numeric", None), "grad_clip", owner=o)
        if self.grad_clip is not None:
            check_range(self.grad_clip, "grad_clip", low=0, low_inclusive=False, owner=o)
        validate_type(self.drop_last, bool, "drop_last", owner=o)
        validate_type(self.deterministic, bool, "deterministic", owner=o)
        if not isinstance(self.fast_kernels, bool):
            check_option(self.fast_kernels, ("auto", True, False), "fast_kernels", owner=o)
        validate_type(self.verbose, (bool, None), "verbose", owner=o)
        if isinstance(self.callbacks, (str, bytes)) or not isinstance(self.callbacks,
                                                                     (list, tuple)):
            raise TypeError(f"The 'callbacks' parameter of {o} must be a list or tuple of "
                            f"callback objects. Got {type(self.callbacks).__name__}.")
        for cb in self.callbacks:
            if not any(callable(getattr(cb, h, None)) for h in _CALLBACK_HOOKS):
                raise TypeError(f"The 'callbacks' parameter of {o} holds {cb!r:.60}, which has "
                                f"none of the methods {_CALLBACK_HOOKS}.")

    def _uses_cross_entropy(self, for_training: bool) -> bool:
        if self.loss is not None:
            return False
        if for_training and callable(getattr(self.model, "training_loss", None)):
            return False
        return True

    # ---------------------------------------------------------------- fit
    def fit(self, X_train: Any, y_train: Any, X_valid: Any = None, y_valid: Any = None
            ) -> "Trainer":
        """Train the model; validation data (if given) serve early stopping and monitoring only.

        Parameters
        ----------
        X_train : ndarray or Tensor, shape (n_trials, ...)
            Training inputs (floats become float32).
        y_train : ndarray or Tensor, shape (n_trials,) or (n_trials, ...)
            Integer class codes for the default cross-entropy, or whatever ``loss`` takes.
        X_valid, y_valid : ndarray or Tensor or None
            Validation split: never used for gradient steps. Give both or neither.

        Returns
        -------
        self : Trainer

        Raises
        ------
        ValueError, TypeError
            For bad parameters or data (naming them).
        FileExistsError
            When ``resume=False`` and ``checkpoint_dir`` already holds a checkpoint.
        FloatingPointError
            When the training loss becomes NaN or infinite.
        """
        self._validate_params()
        Xtr = _check_X(X_train, "X_train")
        ytr = _check_y(y_train, len(Xtr), "y_train", "X_train",
                       class_codes=self._uses_cross_entropy(True))
        if (X_valid is None) != (y_valid is None):
            raise ValueError("Give both X_valid and y_valid, or neither. Got "
                             f"X_valid={'None' if X_valid is None else 'an array'}, "
                             f"y_valid={'None' if y_valid is None else 'an array'}.")
        Xva = yva = None
        if X_valid is not None:
            Xva = _check_X(X_valid, "X_valid")
            if tuple(Xva.shape[1:]) != tuple(Xtr.shape[1:]):
                raise ValueError(f"'X_valid' trials have shape {tuple(Xva.shape[1:])} but "
                                 f"'X_train' trials have shape {tuple(Xtr.shape[1:])}.")
            yva = _check_y(y_valid, len(Xva), "y_valid", "X_valid",
                           class_codes=self._uses_cross_entropy(False))
        elif self.patience is not None:
            raise ValueError(f"The 'patience' parameter of {_OWNER} is {self.patience}, but "
                             "early stopping needs validation data: pass X_valid and y_valid, "
                             "or patience=None.")

        rank, world, local = _ddp.env_world()
        device = resolve_device(self.device, local_rank=local if world > 1 else None)
        precision = resolve_precision(self.precision, device)
        if world > 1 and self.batch_size < world:
            raise ValueError(f"The 'batch_size' parameter of {_OWNER} ({self.batch_size}) is the "
                             f"global batch and must be at least the number of processes "
                             f"({world}).")
        ctx = _ddp.setup(device)
        saved_flags = self._set_deterministic() if self.deterministic else None
        fast = self.fast_kernels is True or (self.fast_kernels == "auto"
                                             and device.type == "cpu")
        try:
            with _fast.fast_kernels(self.model, enabled=fast) as substituted, \
                    _fast.reuse_freed_memory(enabled=fast and device.type == "cpu"):
                self.fast_kernels_ = substituted
                self._fit(ctx, device, precision, Xtr, ytr, Xva, yva)
        finally:
            if saved_flags is not None:
                self._restore_deterministic(saved_flags)
            _ddp.cleanup(ctx)
        return self

    @staticmethod
    def _set_deterministic() -> tuple:
        saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
                 torch.are_deterministic_algorithms_enabled(),
                 torch.is_deterministic_algorithms_warn_only_enabled())
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
        return saved

    @staticmethod
    def _restore_deterministic(saved: tuple) -> None:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[0], saved[1]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])

    def _decide_keep_on_device(self, device: torch.device, arrays: Sequence[Any]) -> bool:
        if isinstance(self.keep_on_device, bool):
            return self.keep_on_device
        arrays = [a for a in arrays if a is not None]
        if all(isinstance(a, torch.Tensor) and a.device == device for a in arrays):
            return True
        nbytes = sum(_nbytes(a) for a in arrays)
        if device.type == "cuda":
            free = torch.cuda.mem_get_info(device)[0]
        elif device.type == "cpu":
            if not any(_is_memmap(a) for a in arrays):
                return True  # already in RAM; tensors share the numpy memory
            free = _available_host_bytes()
        else:
            try:
                free = torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()
            except (AttributeError, RuntimeError):  # pragma: no cover
                free = 0
        return nbytes < KEEP_ON_DEVICE_FRACTION * free

    def _make_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"The model {type(model).__name__} has no trainable parameters.")
        if callable(self.optimizer):
            opt = self.optimizer(params, lr=self.lr, weight_decay=self.weight_decay)
            if not isinstance(opt, torch.optim.Optimizer):
                raise TypeError(f"The 'optimizer' callable of {_OWNER} must return a "
                                f"torch.optim.Optimizer. Got {type(opt).__name__}.")
            return opt
        impl = self._optimizer_impl(model, params)
        if self.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay, **impl)
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay, **impl)
        return torch.optim.SGD(params, lr=self.lr, momentum=0.9, weight_decay=self.weight_decay,
                               **impl)

    @staticmethod
    def _optimizer_impl(model: torch.nn.Module, params: Sequence[torch.Tensor]) -> dict:
        """The ``fused``/``foreach`` arguments of the built-in optimisers.

        torch's fused kernels (one pass over all parameters) where every parameter is a
        floating-point tensor on the CPU or a CUDA device and no gradient can be sparse; torch's
        default implementation elsewhere. Same update rule; on the CPU the default is a Python
        loop over the parameter tensors, several times slower per step.
        """
        sparse = any(getattr(m, "sparse", False) is True for m in model.modules()
                     if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag)))
        fused = (not sparse and all(p.is_floating_point() and p.device.type in ("cpu", "cuda")
                                    for p in params))
        return {"fused": True if fused else None, "foreach": None}

    def _make_scheduler(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
        if self.scheduler is None:
            return None
        if self.scheduler == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=self.epochs * steps_per_epoch)
        sched = self.scheduler(optimizer, steps_per_epoch=steps_per_epoch, epochs=self.epochs)
        if not all(callable(getattr(sched, m, None)) for m in ("step", "state_dict")):
            raise TypeError(f"The 'scheduler' callable of {_OWNER} must return a learning-rate "
                            "scheduler (with step() and state_dict()). "
                            f"Got {type(sched).__name__}.")
        return sched

    def _global_batches(self, n: int, world: int, has_bn: bool) -> list[tuple[int, int]]:
        """(start, stop) of each global batch; skipped batches are left out."""
        B = self.batch_size
        out = []
        for start in range(0, n, B):
            size = min(B, n - start)
            if size < B and self.drop_last:
                continue
            if size < world or (has_bn and size < 2 * world):
                continue  # a process would get no trial, or one trial for batch norm
            out.append((start, start + size))
        return out

    def _epoch_plan(self, n: int, epoch: int, ctx: _ddp.DistContext, has_bn: bool
                    ) -> list[tuple[torch.Tensor, int]]:
        """This process's indices for each step of ``epoch`` and the global batch size."""
        gen = torch.Generator().manual_seed(_derive_seed(self.seed, epoch))
        perm = torch.randperm(n, generator=gen)
        plan = []
        for start, stop in self._global_batches(n, ctx.world_size, has_bn):
            gidx = perm[start:stop]
            local = torch.tensor_split(gidx, ctx.world_size)[ctx.rank]
            plan.append((local, stop - start))
        return plan

    def _fingerprint(self, model, Xtr, Xva, precision, world) -> dict:
        optimizer = self.optimizer if isinstance(self.optimizer, str) else getattr(
            self.optimizer, "__name__", type(self.optimizer).__name__)
        return {"model": type(model).__name__, "n_train": int(len(Xtr)),
                "trial_shape": [int(s) for s in Xtr.shape[1:]],
                "n_valid": int(len(Xva)) if Xva is not None else 0,
                "batch_size": int(self.batch_size), "seed": int(self.seed),
                "optimizer": str(optimizer), "precision": precision, "world_size": int(world)}

    def _read_checkpoint(self, path: Path | None, ctx: _ddp.DistContext) -> dict | None:
        """Rank 0 reads the checkpoint (or finds why it must not) and sends it to every rank."""
        if path is None:
            return None
        payload: tuple = ("none", None)
        if ctx.is_main and path.exists():
            if not self.resume:
                payload = ("exists", f"The checkpoint {str(path)!r} already exists and "
                           f"resume=False: remove it or choose another checkpoint_dir "
                           f"(bcikit never overwrites a previous run).")
            else:
                try:
                    payload = ("ok", load_checkpoint(path))
                except (ValueError, FileNotFoundError) as err:
                    payload = ("error", str(err))
        payload = _ddp.broadcast_object(payload, ctx)
        if payload[0] == "exists":
            raise FileExistsError(payload[1])
        if payload[0] == "error":
            raise ValueError(payload[1])
        return payload[1]

    def _check_fingerprint(self, ckpt: dict, current: dict, path: Path) -> None:
        saved = ckpt.get("fingerprint", {})
        if ckpt.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError(f"The checkpoint {str(path)!r} has format {ckpt.get('format')!r}; "
                             f"this version of bcikit reads format {_CHECKPOINT_FORMAT}.")
        diffs = [f"{k}: checkpoint {saved.get(k)!r}, now {v!r}" for k, v in current.items()
                 if k not in ("precision", "world_size") and saved.get(k) != v]
        if diffs:
            raise ValueError(f"The checkpoint {str(path)!r} belongs to a different run ("
                             + "; ".join(diffs) + "). Use another checkpoint_dir, or remove the "
                             "checkpoint to start afresh.")
        for k in ("precision", "world_size"):
            if saved.get(k) != current[k]:
                warn(f"Resuming from {str(path)!r} with {k}={current[k]!r} instead of "
                     f"{saved.get(k)!r}: the continued run will not be bit-identical to an "
                     "uninterrupted one.", stacklevel=4)
        if ckpt["epoch"] > self.epochs:
            raise ValueError(f"The checkpoint {str(path)!r} has {ckpt['epoch']} completed epochs, "
                             f"more than epochs={self.epochs}.")

    def _fit(self, ctx: _ddp.DistContext, device: torch.device, precision: str, Xtr, ytr,
             Xva, yva) -> None:
        set_seed(self.seed + ctx.rank)
        self.stop_training = False
        model = self.model.to(device)
        self.device_, self.precision_ = device, precision
        self.rank_, self.world_size_ = ctx.rank, ctx.world_size
        has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                     for m in model.modules())
        n_train = len(Xtr)
        steps_per_epoch = len(self._global_batches(n_train, ctx.world_size, has_bn))
        if steps_per_epoch == 0:
            raise ValueError(
                f"The 'batch_size' parameter of {_OWNER} is {self.batch_size} with "
                f"drop_last={self.drop_last}, {ctx.world_size} process(es) and "
                f"{'' if has_bn else 'no '}batch-norm layers: no batch is left from {n_train} "
                "training trials (a batch must give each process at least one trial, two with "
                "batch norm).")
        keep = self._decide_keep_on_device(device, [Xtr, ytr, Xva, yva])
        self.keep_on_device_ = keep
        train_data = _Data(Xtr, ytr, device, keep)
        valid_data = _Data(Xva, yva, device, keep) if Xva is not None else None

        optimizer = self._make_optimizer(model)
        scheduler = self._make_scheduler(optimizer, steps_per_epoch)
        scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
        if self.loss is not None:
            train_fn = self.loss
        elif callable(getattr(model, "training_loss", None)):
            train_fn = _model_training_loss
        else:
            train_fn = ClassCheckedCrossEntropy(_max_code(ytr), "y_train")
        if self.loss is not None:
            eval_fn = self.loss
        elif yva is not None:
            eval_fn = ClassCheckedCrossEntropy(_max_code(yva), "y_valid")
        else:
            eval_fn = cross_entropy_loss

        ckpt_path = (Path(self.checkpoint_dir) / CHECKPOINT_NAME
                     if self.checkpoint_dir is not None else None)
        self.checkpoint_path_ = ckpt_path
        fingerprint = self._fingerprint(model, Xtr, Xva, precision, ctx.world_size)
        state = {"epoch": 0, "global_step": 0, "stopped": False, "history": [],
                 "best": {"epoch": 0, "loss": None, "accuracy": None, "wait": 0, "state": None}}
        ckpt = self._read_checkpoint(ckpt_path, ctx)
        rng_to_restore = None
        if ckpt is not None:
            self._check_fingerprint(ckpt, fingerprint, ckpt_path)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if not callable(self.optimizer):  # loading restores the saved implementation flags
                impl = self._optimizer_impl(model, [p for g in optimizer.param_groups
                                                    for p in g["params"]])
                for group in optimizer.param_groups:
                    group.update(impl)
            if scheduler is not None and ckpt.get("scheduler") is not None:
                scheduler.load_state_dict(ckpt["scheduler"])
            if scaler.is_enabled() and ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            for key in ("epoch", "global_step", "stopped", "history", "best"):
                state[key] = ckpt[key]
            rngs = ckpt["rng"]
            if len(rngs) == ctx.world_size:
                rng_to_restore = rngs[ctx.rank]
            else:
                set_seed((self.seed + ctx.rank + 7919 * state["epoch"]) % 2**32)
            logger.info("Resuming from %s after epoch %d.", ckpt_path, state["epoch"])
            del ckpt

        step_module: Any = None
        if ctx.is_distributed:
            from torch.nn.parallel import DistributedDataParallel

            step_module = DistributedDataParallel(
                _LossModule(model, train_fn),
                device_ids=[device.index] if device.type == "cuda" else None)
        if rng_to_restore is not None:
            restore_rng_state(rng_to_restore)  # last: nothing may draw numbers after this

        history: list[dict] = state["history"]
        best = state["best"]
        self.history_ = history
        self.n_epochs_run_ = state["epoch"]
        for cb in self.callbacks:
            if callable(getattr(cb, "on_train_begin", None)):
                cb.on_train_begin(self)
        batch_cbs = [cb for cb in self.callbacks if callable(getattr(cb, "on_batch_end", None))]
        show = self.verbose if ctx.is_main else False
        bar = progress(total=self.epochs, initial=state["epoch"], desc="Training", verbose=show)
        try:
            done = state["stopped"] or state["epoch"] >= self.epochs
            for epoch in range(state["epoch"] + 1, self.epochs + 1):
                if done:
                    break
                t0 = time.perf_counter()
                lr_now = float(optimizer.param_groups[0]["lr"])
                train_loss, train_acc = self._train_epoch(
                    epoch, model, step_module, train_fn, train_data, optimizer, scheduler,
                    scaler, precision, ctx, has_bn, state, batch_cbs)
                if not math.isfinite(train_loss):
                    raise FloatingPointError(
                        f"The training loss is {train_loss} at epoch {epoch}: training diverged. "
                        "Lower lr, set grad_clip, or use precision='fp32'.")
                val_loss = val_acc = float("nan")
                if valid_data is not None:
                    val_loss, val_acc = self._evaluate_data(model, valid_data, eval_fn, device,
                                                            precision, ctx, shard=True)
                row = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                       "val_loss": val_loss, "val_accuracy": val_acc, "lr": lr_now,
                       "time": time.perf_counter() - t0}
                history.append(row)
                stop = False
                if valid_data is not None:
                    stop = self._update_best(best, epoch, val_loss, val_acc, model)
                self.n_epochs_run_ = epoch
                for cb in self.callbacks:
                    if callable(getattr(cb, "on_epoch_end", None)):
                        cb.on_epoch_end(self, epoch, dict(row))
                flag = torch.tensor([float(stop or self.stop_training)], device=device)
                stop = bool(_ddp.all_reduce_max(flag, ctx).item() > 0)
                state["epoch"], state["stopped"] = epoch, stop
                if ckpt_path is not None:
                    self._write_checkpoint(ckpt_path, ctx, model, optimizer, scheduler, scaler,
                                           state, fingerprint)
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in row.items()
                                 if k in ("train_loss", "val_loss", "val_accuracy")})
                logger.info("epoch %d/%d  train_loss %.4f  train_acc %.3f  val_loss %.4f  "
                            "val_acc %.3f  (%.1f s)", epoch, self.epochs, train_loss, train_acc,
                            val_loss, val_acc, row["time"])
                if stop:
                    break
        finally:
            bar.close()
        if valid_data is not None and self.patience is not None and best["state"] is not None:
            model.load_state_dict(best["state"])
        self.best_epoch_ = int(best["epoch"]) if valid_data is not None else state["epoch"]
        self.n_epochs_run_ = state["epoch"]
        self.history_ = history
        for cb in self.callbacks:
            if callable(getattr(cb, "on_train_end", None)):
                cb.on_train_end(self)

    def _update_best(self, best: dict, epoch: int, val_loss: float, val_acc: float,
                     model: torch.nn.Module) -> bool:
        """Track the best epoch; return True when early stopping should stop now."""
        if self.monitor == "val_accuracy":
            if not math.isfinite(val_acc):
                raise ValueError(f"The 'monitor' parameter of {_OWNER} is 'val_accuracy', but no "
                                 "validation accuracy could be computed (the loss returns no "
                                 "(batch, n_classes) logits, or y_valid is not class codes). "
                                 "Use monitor='val_loss'.")
            better = best["accuracy"] is None or val_acc > best["accuracy"] or (
                val_acc == best["accuracy"] and val_loss < best["loss"])
        else:
            better = math.isfinite(val_loss) and (best["loss"] is None or val_loss < best["loss"])
        if better:
            best.update(epoch=epoch, loss=val_loss, accuracy=val_acc, wait=0)
            if self.patience is not None:
                best["state"] = {k: v.detach().to("cpu", copy=True)
                                 for k, v in model.state_dict().items()}
            return False
        best["wait"] += 1
        return self.patience is not None and best["wait"] >= self.patience

    def _write_checkpoint(self, path: Path, ctx: _ddp.DistContext, model, optimizer, scheduler,
                          scaler, state: dict, fingerprint: dict) -> None:
        rngs = _ddp.all_gather_objects(capture_rng_state(), ctx)
        if not ctx.is_main:
            return
        save_checkpoint({
            "format": _CHECKPOINT_FORMAT,
            "fingerprint": fingerprint,
            "epoch": state["epoch"],
            "global_step": state["global_step"],
            "stopped": state["stopped"],
            "history": state["history"],
            "best": state["best"],
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "rng": rngs,
        }, path)

    def _unpack(self, out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not (isinstance(out, (tuple, list)) and len(out) == 2
                and isinstance(out[0], torch.Tensor) and out[0].ndim == 0):
            src = "'loss' parameter" if self.loss is not None else "model's training_loss"
            raise TypeError(f"The {src} of {_OWNER} must return (loss, logits) with a scalar "
                            f"loss tensor. Got {type(out).__name__}.")
        logits = out[1]
        if logits is not None and not isinstance(logits, torch.Tensor):
            raise TypeError(f"The logits returned by the loss must be a tensor or None. Got "
                            f"{type(logits).__name__}.")
        return out[0], logits

    def _train_epoch(self, epoch, model, step_module, train_fn, data: _Data, optimizer,
                     scheduler, scaler, precision, ctx, has_bn, state, batch_cbs
                     ) -> tuple[float, float]:
        device = data.device
        acc_dtype = torch.float32 if device.type == "mps" else torch.float64
        model.train()
        plan = self._epoch_plan(data.n, epoch, ctx, has_bn)
        loss_sum = torch.zeros((), dtype=acc_dtype, device=device)
        correct = torch.zeros((), dtype=acc_dtype, device=device)
        n_seen = n_scored = 0
        params = [p for g in optimizer.param_groups for p in g["params"]]
        for (xb, yb), (idx, n_global) in zip(data.batches([p[0] for p in plan]), plan):
            nb = len(idx)
            # before the forward pass: the last step's gradients are freed before this step's
            # activations are allocated, so they never take memory at the same time
            optimizer.zero_grad(set_to_none=True)
            with _autocast(device, precision):
                out = step_module(xb, yb) if step_module is not None else train_fn(model, xb, yb)
            loss, logits = self._unpack(out)
            factor = nb * ctx.world_size / n_global  # exact mean over uneven shards under DDP
            scaler.scale(loss if factor == 1.0 else loss * factor).backward()
            if self.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
            state["global_step"] += 1
            loss_sum.add_(loss.detach(), alpha=nb)  # one op; computed in acc_dtype
            n_seen += nb
            if (logits is not None and logits.ndim == 2 and yb is not None and yb.ndim == 1
                    and not yb.is_floating_point() and len(logits) == nb):
                correct.add_((logits.detach().argmax(1) == yb).sum())
                n_scored += nb
            if batch_cbs:
                logs = {"epoch": epoch, "loss": float(loss.detach()), "batch_size": nb,
                        "global_batch_size": n_global,
                        "lr": float(optimizer.param_groups[0]["lr"])}
                for cb in batch_cbs:
                    cb.on_batch_end(self, state["global_step"], logs)
        totals = torch.stack([loss_sum, correct,
                              torch.tensor(float(n_seen), dtype=acc_dtype, device=device),
                              torch.tensor(float(n_scored), dtype=acc_dtype, device=device)])
        totals = _ddp.all_reduce_sum(totals, ctx).tolist()
        train_loss = totals[0] / totals[2]
        train_acc = totals[1] / totals[3] if totals[3] > 0 else float("nan")
        return float(train_loss), float(train_acc)

    def _evaluate_data(self, model, data: _Data, eval_fn, device, precision, ctx,
                       *, shard: bool) -> tuple[float, float]:
        acc_dtype = torch.float32 if device.type == "mps" else torch.float64
        idx = torch.arange(data.n)
        if shard and ctx.is_distributed:
            idx = torch.tensor_split(idx, ctx.world_size)[ctx.rank]
        chunks = list(idx.split(self.batch_size)) if len(idx) else []
        loss_sum = torch.zeros((), dtype=acc_dtype, device=device)
        correct = torch.zeros((), dtype=acc_dtype, device=device)
        n_seen = n_scored = 0
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), _autocast(device, precision):
                for xb, yb in data.batches(chunks):
                    loss, logits = self._unpack(eval_fn(model, xb, yb))
                    nb = len(xb)
                    loss_sum.add_(loss.detach(), alpha=nb)
                    n_seen += nb
                    if (logits is not None and logits.ndim == 2 and yb.ndim == 1
                            and not yb.is_floating_point() and len(logits) == nb):
                        correct.add_((logits.argmax(1) == yb).sum())
                        n_scored += nb
        finally:
            model.train(was_training)
        totals = torch.stack([loss_sum, correct,
                              torch.tensor(float(n_seen), dtype=acc_dtype, device=device),
                              torch.tensor(float(n_scored), dtype=acc_dtype, device=device)])
        if shard:
            totals = _ddp.all_reduce_sum(totals, ctx)
        t = totals.tolist()
        loss = t[0] / t[2] if t[2] > 0 else float("nan")
        acc = t[1] / t[3] if t[3] > 0 else float("nan")
        return float(loss), float(acc)

    # ---------------------------------------------------------------- inference
    def _inference_setup(self) -> tuple[torch.device, str]:
        self._validate_params()
        device = getattr(self, "device_", None)
        if device is None:
            device = resolve_device(self.device)
        precision = getattr(self, "precision_", None) or resolve_precision(self.precision, device)
        self.model.to(device)
        return device, precision

    def predict_proba(self, X: Any, batch_size: int | None = None) -> np.ndarray:
        """Class probabilities (softmax of the logits), shape ``(n_trials, n_classes)``.

        Parameters
        ----------
        X : ndarray or Tensor, shape (n_trials, ...)
        batch_size : int or None
            Defaults to the Trainer's ``batch_size``.

        Returns
        -------
        proba : ndarray of float32
        """
        validate_type(batch_size, ("int", None), "batch_size", owner=f"{_OWNER}.predict_proba")
        if batch_size is not None:
            check_range(batch_size, "batch_size", low=1, owner=f"{_OWNER}.predict_proba")
        device, precision = self._inference_setup()
        Xc = _check_X(X, "X")
        data = _Data(Xc, None, device, on_device=False)
        chunks = list(torch.arange(len(Xc)).split(batch_size or self.batch_size))
        model = self.model
        was_training = model.training
        model.eval()
        out = []
        try:
            with torch.no_grad(), _autocast(device, precision):
                for xb, _ in data.batches(chunks):
                    logits = model(xb)
                    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
                        raise TypeError(f"predict_proba needs the model to return logits of "
                                        f"shape (batch, n_classes); {type(model).__name__} "
                                        "returned something else.")
                    out.append(logits.float().softmax(dim=1).cpu())
        finally:
            model.train(was_training)
        return torch.cat(out).numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class codes (argmax of :meth:`predict_proba`), shape ``(n_trials,)``."""
        return self.predict_proba(X).argmax(axis=1).astype(np.int64)

    def evaluate(self, X: Any, y: Any) -> dict[str, float]:
        """Mean loss (``loss`` or cross-entropy) and accuracy on ``(X, y)``, in eval mode.

        Returns
        -------
        metrics : dict
            ``{'loss': float, 'accuracy': float}`` (accuracy NaN when it cannot be computed).
        """
        device, precision = self._inference_setup()
        Xc = _check_X(X, "X")
        yc = _check_y(y, len(Xc), "y", "X", class_codes=self._uses_cross_entropy(False))
        eval_fn = (self.loss if self.loss is not None
                   else ClassCheckedCrossEntropy(_max_code(yc), "y"))
        data = _Data(Xc, yc, device, on_device=False)
        loss, acc = self._evaluate_data(self.model, data, eval_fn, device, precision,
                                        _ddp.DistContext(), shard=False)
        return {"loss": loss, "accuracy": acc}

    # ---------------------------------------------------------------- history
    def save_history(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write :attr:`history_` as CSV (one row per epoch, columns :data:`HISTORY_KEYS`).

        Only rank 0 writes under DDP. Floats are written with full precision (``repr``).

        Raises
        ------
        FileExistsError
            When ``path`` exists and ``overwrite`` is False.
        """
        validate_type(path, "path-like", "path", owner=f"{_OWNER}.save_history")
        if not hasattr(self, "history_"):
            raise RuntimeError("This Trainer has no history yet: call fit() first.")
        if getattr(self, "rank_", 0) != 0:
            return
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"The history file {str(path)!r} already exists; pass "
                                  "overwrite=True or choose another path.")
        keys = list(HISTORY_KEYS)
        for row in self.history_:
            keys += [k for k in row if k not in keys]
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            for row in self.history_:
                writer.writerow({k: repr(v) if isinstance(v, float) else v
                                 for k, v in row.items()})
