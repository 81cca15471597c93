"""Loss functions in the form the Trainer calls them: ``loss_fn(model, X, y) -> (loss, logits)``.

``loss`` is a scalar tensor (the mean over the batch); ``logits`` are ``(batch, n_classes)`` scores
used for accuracy, or ``None`` when there is nothing to score (pre-training objectives).
A model may instead define ``training_loss(X, y) -> (loss, logits)``, which the Trainer uses for
its training steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cross_entropy_loss"]


def cross_entropy_loss(model: torch.nn.Module, X: torch.Tensor,
                       y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of ``model(X)`` (logits) against integer class codes ``y``.

    The loss is computed in float32 even when the forward pass runs under autocast.
    """
    logits = model(X)
    _check_logits(model, logits)
    return F.cross_entropy(logits.float(), y), logits


def _check_logits(model: torch.nn.Module, logits) -> None:
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TypeError(
            "The default loss (cross-entropy) needs the model to return logits of shape "
            f"(batch, n_classes); {type(model).__name__} returned {shape}. Pass loss= or define "
            "training_loss(X, y) on the model.")


class ClassCheckedCrossEntropy:
    """:func:`cross_entropy_loss` that first checks the model has a logit for every class code.

    ``y_max`` (the largest code in the data, known before training) is compared with the logits'
    width, so a too-small output layer is reported with the name of the labels instead of
    torch's "Target 2 is out of bounds".
    """

    def __init__(self, y_max: int, y_name: str):
        self.y_max = int(y_max)
        self.y_name = y_name

    def __call__(self, model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor):
        logits = model(X)
        _check_logits(model, logits)
        if logits.shape[1] <= self.y_max:
            raise ValueError(f"{self.y_name!r} holds class code {self.y_max} but "
                             f"{type(model).__name__} returns {logits.shape[1]} logits per trial "
                             f"(codes 0..{logits.shape[1] - 1}).")
        return F.cross_entropy(logits.float(), y), logits
