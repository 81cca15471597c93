"""Loss functions in the form the Trainer calls them: ``loss_fn(model, X, y) -> (loss, logits)``.

``loss`` is a scalar tensor (the mean over the batch); ``logits`` are ``(batch, n_classes)`` scores
used for accuracy, or ``None`` when there is nothing to score (pre-training objectives).
A model may instead define ``training_loss(X, y) -> (loss, logits)``, which the Trainer uses for
its training steps.

Building blocks of such training losses live here too: :func:`nt_xent` (the contrastive loss of
SimCLR, used by MVCNet).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

__all__ = ["cross_entropy_loss", "nt_xent"]


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


_AUTOCAST_DEVICES = ("cpu", "cuda", "mps", "xpu")


def _no_autocast(device: torch.device):
    if device.type in _AUTOCAST_DEVICES:
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def nt_xent(A: torch.Tensor, P: torch.Tensor, tau: float = 0.2) -> torch.Tensor:
    """Normalised temperature-scaled cross-entropy (NT-Xent, SimCLR) of paired embeddings.

    Row ``i`` of ``A`` and row ``i`` of ``P`` are a positive pair. With ``S = [P; A]`` (``2N``
    rows), ``s_jk = cos(S_j, S_k) / tau`` and ``p(j) = j +- N`` the partner of row ``j``::

        l_j = -s_{j,p(j)} + log sum_{k != j} exp(s_jk),      loss = mean_j l_j

    Every row other than ``j`` and its partner is a negative of ``j``, including rows of the
    same class (the loss is instance-level: labels are not used).

    The loss is computed in float32 (float64 inputs stay float64) with autocast disabled, so it
    is exact under mixed precision too; gradients flow back to the inputs in their own dtype.

    Parameters
    ----------
    A, P : Tensor, shape (N, d)
        Anchors and positives (N >= 1).
    tau : float
        Temperature (> 0).

    Returns
    -------
    loss : Tensor
        Scalar.

    Raises
    ------
    ValueError
        When ``A`` and ``P`` are not 2-D tensors of the same shape, or ``tau <= 0``.

    Examples
    --------
    >>> A = torch.eye(4)
    >>> round(float(nt_xent(A, A, tau=0.5)), 4)   # log(1 + 6 exp(-2))
    0.5944
    """
    if not isinstance(A, torch.Tensor) or not isinstance(P, torch.Tensor):
        raise TypeError(f"nt_xent needs two tensors. Got {type(A).__name__} and "
                        f"{type(P).__name__}.")
    if A.ndim != 2 or A.shape != P.shape or A.shape[0] < 1:
        raise ValueError(f"nt_xent needs A and P of the same shape (N, d) with N >= 1. Got "
                         f"{tuple(A.shape)} and {tuple(P.shape)}.")
    if not (isinstance(tau, (int, float)) and not isinstance(tau, bool)) or not tau > 0:
        raise ValueError(f"The 'tau' parameter of nt_xent must be a number > 0. Got {tau!r}.")
    n = A.shape[0]
    with _no_autocast(A.device):
        S = torch.cat([P, A], dim=0)
        if S.dtype != torch.float64:
            S = S.float()
        S = F.normalize(S, dim=1, eps=1e-8)
        sim = (S @ S.T) / tau
        eye = torch.eye(2 * n, dtype=torch.bool, device=S.device)
        sim = sim.masked_fill(eye, float("-inf"))
        idx = torch.arange(2 * n, device=S.device)
        partner = (idx + n) % (2 * n)
        losses = torch.logsumexp(sim, dim=1) - sim[idx, partner]
        return losses.mean()
