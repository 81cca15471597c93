"""Training engine: one :class:`Trainer` for every pipeline (CPU, one GPU or DDP).

Importing this package imports torch; ``import bcikit`` alone does not.

- :class:`Trainer`: fit / predict / evaluate with device ``auto``, mixed precision on GPUs,
  seeded determinism, atomic checkpoints with exact resume, early stopping on the validation
  split, progress bars and a metrics history.
- :func:`set_seed`, :func:`resolve_device`, :func:`resolve_precision`.
- :mod:`bcikit.train.ddp`: :func:`run_distributed` (spawn local processes) and :func:`launch`
  (``torchrun``).
- :mod:`bcikit.train.checkpoint`: :func:`save_checkpoint` (atomic) and :func:`load_checkpoint`.
- :mod:`bcikit.train.fast_kernels`: the equivalent CPU kernels ``Trainer(fast_kernels=...)``
  uses (:func:`find_substitutions` lists what a model would get).
"""

from __future__ import annotations

from .checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from .ddp import launch, run_distributed
from .fast_kernels import find_substitutions
from .losses import cross_entropy_loss
from .trainer import HISTORY_KEYS, Trainer, resolve_device, resolve_precision, set_seed

__all__ = ["Trainer", "set_seed", "resolve_device", "resolve_precision", "run_distributed",
           "launch", "save_checkpoint", "load_checkpoint", "cross_entropy_loss",
           "CHECKPOINT_NAME", "HISTORY_KEYS", "find_substitutions"]
