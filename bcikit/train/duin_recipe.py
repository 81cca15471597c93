"""The Du-IN optimisation recipe (``specs/duin.md`` §2.5) in the form :class:`Trainer` takes.

* :func:`duin_optimizer`: AdamW (betas 0.9/0.999, eps 1e-8) with no weight decay on biases and
  other 1-D parameters (norm weights, the mask token); ``Trainer(optimizer=duin_optimizer())``.
* :func:`duin_scheduler`: the learning rate set once per epoch, a linear warm-up to the
  Trainer's ``lr`` (``lr_max``) then a half cosine down to ``lr_min``;
  ``Trainer(scheduler=duin_scheduler(warmup_epochs, lr_min))``.
* :data:`STAGE_RECIPES` / :func:`trainer_kwargs`: the per-stage epochs, batch sizes, learning
  rates and weight decays of the spec's table, as keyword arguments for :class:`Trainer`.

Example
-------
>>> from bcikit.models.duin import DuINVQVAE, stage_loss            # doctest: +SKIP
>>> trainer = Trainer(DuINVQVAE(n_chans=10), loss=stage_loss,
...                   **trainer_kwargs("vqvae", epochs=50))          # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from ..utils import check_option, check_range, validate_type

__all__ = ["STAGE_RECIPES", "epoch_lr", "param_groups", "duin_optimizer", "duin_scheduler",
           "WarmupHalfCosine", "DuINAdamW", "trainer_kwargs"]

#: Spec §2.5: epochs (warm-up), batch size, lr_max -> lr_min, weight decay per stage.
STAGE_RECIPES: dict[str, dict[str, float | int]] = {
    "vqvae": {"epochs": 400, "warmup_epochs": 40, "batch_size": 32, "lr_max": 3e-4,
              "lr_min": 5e-5, "weight_decay": 0.01},
    "mae": {"epochs": 400, "warmup_epochs": 40, "batch_size": 64, "lr_max": 3e-4,
            "lr_min": 5e-5, "weight_decay": 0.05},
    "classifier": {"epochs": 200, "warmup_epochs": 20, "batch_size": 32, "lr_max": 2e-4,
                   "lr_min": 5e-6, "weight_decay": 0.05},
}


def epoch_lr(epoch: int, *, epochs: int, warmup_epochs: int, lr_max: float,
             lr_min: float) -> float:
    """Learning rate of ``epoch`` (counted from 0).

    ``lr_max * (epoch + 1) / warmup_epochs`` for ``epoch < warmup_epochs`` (so the first epoch
    already learns and epoch ``warmup_epochs - 1`` reaches ``lr_max``), then
    ``lr_min + (lr_max - lr_min) * (1 + cos(pi * p)) / 2`` with
    ``p = (epoch - warmup_epochs) / (epochs - warmup_epochs)``: ``lr_max`` at the end of the
    warm-up, falling to just above ``lr_min`` at the last epoch; ``lr_min`` after ``epochs``.
    """
    if epoch < warmup_epochs:
        return lr_max * (epoch + 1) / warmup_epochs
    span = epochs - warmup_epochs
    if span <= 0 or epoch >= epochs:
        return lr_min
    p = (epoch - warmup_epochs) / span
    return lr_min + (lr_max - lr_min) * 0.5 * (1.0 + math.cos(math.pi * p))


def param_groups(params: Iterable[torch.nn.Parameter], weight_decay: float) -> list[dict]:
    """Two AdamW groups: parameters with ``ndim >= 2`` get ``weight_decay``, 1-D ones (biases,
    normalisation weights, the mask token) and scalars get none. Empty groups are left out."""
    decay, no_decay = [], []
    for p in params:
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": float(weight_decay)})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


class DuINAdamW:
    """Optimizer factory for ``Trainer(optimizer=...)``: AdamW over :func:`param_groups`."""

    __name__ = "DuINAdamW"

    def __init__(self, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)

    def __call__(self, params: Iterable[torch.nn.Parameter], *, lr: float,
                 weight_decay: float = 0.0) -> torch.optim.AdamW:
        return torch.optim.AdamW(param_groups(params, weight_decay), lr=lr, betas=self.betas,
                                 eps=self.eps)

    def __repr__(self) -> str:
        return f"DuINAdamW(betas={self.betas}, eps={self.eps})"


def duin_optimizer(betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> DuINAdamW:
    """The ``optimizer`` callable of the Du-IN recipe (AdamW, no decay on 1-D parameters)."""
    return DuINAdamW(betas, eps)


class WarmupHalfCosine(torch.optim.lr_scheduler.LRScheduler):
    """Per-epoch learning rate of :func:`epoch_lr`, stepped after every optimiser step.

    Each group's initial ``lr`` is its ``lr_max``; ``lr_min`` is absolute (the same for every
    group). The epoch is ``step // steps_per_epoch``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, epochs: int,
                 warmup_epochs: int, lr_min: float, last_epoch: int = -1):
        o = "WarmupHalfCosine"
        for name, val, low in (("steps_per_epoch", steps_per_epoch, 1), ("epochs", epochs, 1),
                               ("warmup_epochs", warmup_epochs, 0)):
            validate_type(val, "int", name, owner=o)
            check_range(val, name, low=low, owner=o)
        validate_type(lr_min, "numeric", "lr_min", owner=o)
        check_range(lr_min, "lr_min", low=0.0, owner=o)
        for g in optimizer.param_groups:
            lr0 = g.get("initial_lr", g["lr"])
            if lr_min > lr0:
                raise ValueError(f"The 'lr_min' parameter of {o} ({lr_min}) exceeds the "
                                 f"optimiser's lr ({lr0}), which is lr_max.")
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs)
        self.warmup_epochs = int(warmup_epochs)
        self.lr_min = float(lr_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        epoch = max(self.last_epoch, 0) // self.steps_per_epoch
        return [epoch_lr(epoch, epochs=self.epochs, warmup_epochs=self.warmup_epochs,
                         lr_max=base, lr_min=self.lr_min) for base in self.base_lrs]


class _SchedulerFactory:
    __name__ = "WarmupHalfCosine"

    def __init__(self, warmup_epochs: int, lr_min: float):
        self.warmup_epochs = warmup_epochs
        self.lr_min = lr_min

    def __call__(self, optimizer: torch.optim.Optimizer, *, steps_per_epoch: int,
                 epochs: int) -> WarmupHalfCosine:
        return WarmupHalfCosine(optimizer, steps_per_epoch=steps_per_epoch, epochs=epochs,
                                warmup_epochs=self.warmup_epochs, lr_min=self.lr_min)

    def __repr__(self) -> str:
        return f"duin_scheduler(warmup_epochs={self.warmup_epochs}, lr_min={self.lr_min})"


def duin_scheduler(warmup_epochs: int, lr_min: float) -> _SchedulerFactory:
    """The ``scheduler`` callable of the Du-IN recipe (:class:`WarmupHalfCosine`).

    The Trainer calls it as ``scheduler(optimizer, steps_per_epoch=..., epochs=...)``; its
    ``lr`` is ``lr_max``.
    """
    validate_type(warmup_epochs, "int", "warmup_epochs", owner="duin_scheduler")
    check_range(warmup_epochs, "warmup_epochs", low=0, owner="duin_scheduler")
    validate_type(lr_min, "numeric", "lr_min", owner="duin_scheduler")
    check_range(lr_min, "lr_min", low=0.0, owner="duin_scheduler")
    return _SchedulerFactory(int(warmup_epochs), float(lr_min))


def trainer_kwargs(stage: str, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of :class:`Trainer` for a Du-IN stage (spec §2.5).

    Parameters
    ----------
    stage : {"vqvae", "mae", "classifier"}
    **overrides
        Any of ``epochs``, ``warmup_epochs``, ``batch_size``, ``lr_max``, ``lr_min``,
        ``weight_decay`` (e.g. fewer epochs for a smoke run; a shorter run keeps the
        warm-up fraction only if ``warmup_epochs`` is given too).

    Returns
    -------
    dict
        ``epochs``, ``batch_size``, ``lr`` (= lr_max), ``weight_decay``, ``optimizer``,
        ``scheduler``.
    """
    check_option(stage, tuple(STAGE_RECIPES), "stage", owner="trainer_kwargs")
    recipe = dict(STAGE_RECIPES[stage])
    for key, value in overrides.items():
        check_option(key, tuple(recipe), "override", owner="trainer_kwargs")
        recipe[key] = value
    if recipe["warmup_epochs"] > recipe["epochs"]:
        raise ValueError(f"trainer_kwargs({stage!r}): warmup_epochs ({recipe['warmup_epochs']}) "
                         f"exceeds epochs ({recipe['epochs']}).")
    return {"epochs": int(recipe["epochs"]), "batch_size": int(recipe["batch_size"]),
            "lr": float(recipe["lr_max"]), "weight_decay": float(recipe["weight_decay"]),
            "optimizer": duin_optimizer(),
            "scheduler": duin_scheduler(int(recipe["warmup_epochs"]), float(recipe["lr_min"]))}
