"""CNN-BiGRU: the recurrent baseline of the Du-IN benchmark (0.54 M parameters at 10 channels).

The architecture is the one the Du-IN authors benchmarked as "CNN-BiGRU" (after Moses et al.,
NEJM 2021; liulab-repository/Du-IN ``models/cnn_gru`` with its ``seeg_he2023xuanwu`` parameters):

=====================================  ======================================  ===============
step                                   layer                                   output
=====================================  ======================================  ===============
temporal convolution                   Conv1d(C -> 128, kernel 5, stride 3,    (B, 128, T')
                                       padding 2), no activation
batch norm                             BatchNorm1d(128)                        (B, 128, T')
recurrent encoder                      GRU(128 -> 128, 2 layers,               (B, T', 256)
                                       bidirectional, dropout 0.2)
readout                                the last time step's output             (B, 256)
head                                   Linear(256 -> 128) -> Dropout(0) ->     (B, n_outputs)
                                       Linear(128 -> n_outputs)
=====================================  ======================================  ===============

``T' = ceil(T / 3)`` (1000 tokens for 3 s at 1000 Hz). The official code has no activation after
the convolution (a TODO in its source) nor between the two head layers; this is kept by default
(``activation=None``), with ``activation="relu"|"gelu"`` as an ablation. Initialisation: the
convolution and GRU keep PyTorch's defaults, batch norm starts at weight 1 / bias 0, the head's
Linear layers are truncated-normal (sigma 0.02) with zero bias, as in the official code. The
official head ends in a sigmoid before its cross-entropy; bcikit returns raw logits (cross-entropy
on logits) unless ``official_quirks=True``.

Parameter count for ``n_chans=10, n_outputs=61``: conv 6,528 + batch norm 256 + GRU 494,592 +
head 40,765 = **542,141** (the spec's 0.54 M). In general
``128 * (5 * C + 1) + 256 + 494,592 + 32,896 + 129 * n_outputs``.

Note that with ``readout="last"`` (official) the backward GRU direction contributes only its
state after one step; ``readout="mean"`` averages all steps instead (same parameter count).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..utils import check_option, check_range, validate_type
from . import register_model

__all__ = ["CNNBiGRU", "cnn_bigru_parameter_count"]

N_FILTERS = 128
KERNEL = 5
STRIDE = 3
D_HIDDEN = 128


def cnn_bigru_parameter_count(n_chans: int, n_outputs: int) -> int:
    """Number of parameters of :class:`CNNBiGRU` with the default sizes (closed form)."""
    conv = N_FILTERS * (KERNEL * n_chans + 1)
    bn = 2 * N_FILTERS
    h = N_FILTERS
    layer1 = 2 * 3 * (h * N_FILTERS + h * h + 2 * h)
    layer2 = 2 * 3 * (h * 2 * h + h * h + 2 * h)
    head = (2 * h * D_HIDDEN + D_HIDDEN) + (D_HIDDEN * n_outputs + n_outputs)
    return conv + bn + layer1 + layer2 + head


@register_model("CNNBiGRU")
class CNNBiGRU(nn.Module):
    """Convolution + bidirectional GRU classifier (the Du-IN benchmark's CNN-BiGRU).

    Parameters
    ----------
    n_chans : int or None
        Number of input channels (or give ``chs_info``).
    n_outputs : int
        Number of classes.
    n_times : int
        Samples per trial (checked against the input; must be >= the kernel size 5).
    sfreq : float or None
        Sampling rate; not used by the layers (kept for the common signature).
    chs_info : list of dict or None
        MNE-style channel info; its length gives ``n_chans`` when that is None.
    n_layers : int
        GRU layers (2).
    dropout : float
        Dropout between GRU layers (0.2).
    activation : {None, 'relu', 'gelu'}
        Non-linearity after the convolution and the head's hidden layer (None: official).
    readout : {'last', 'mean'}
        Use the last time step (official) or the mean over time of the GRU output.
    official_quirks : bool
        End with a sigmoid, as the official head does (its outputs are then fed to
        cross-entropy as if they were logits).

    Examples
    --------
    >>> model = CNNBiGRU(n_chans=10, n_outputs=61, n_times=3000, sfreq=1000)  # doctest: +SKIP
    >>> sum(p.numel() for p in model.parameters())  # doctest: +SKIP
    542141
    """

    def __init__(self, n_chans: int | None = None, n_outputs: int | None = None,
                 n_times: int | None = None, sfreq: float | None = None, chs_info: Any = None,
                 *, n_layers: int = 2, dropout: float = 0.2, activation: str | None = None,
                 readout: str = "last", official_quirks: bool = False):
        super().__init__()
        o = "CNNBiGRU"
        if n_chans is None:
            if chs_info is None:
                raise ValueError(f"{o} needs the number of channels: pass n_chans or chs_info.")
            n_chans = len(chs_info)
        for name, value in (("n_chans", n_chans), ("n_outputs", n_outputs), ("n_times", n_times)):
            if value is None:
                raise ValueError(f"{o} needs {name}.")
            validate_type(value, "int", name, owner=o)
            check_range(value, name, low=1, owner=o)
        check_range(n_times, "n_times", low=KERNEL, owner=o)
        validate_type(n_layers, "int", "n_layers", owner=o)
        check_range(n_layers, "n_layers", low=1, owner=o)
        validate_type(dropout, "numeric", "dropout", owner=o)
        check_range(float(dropout), "dropout", low=0.0, high=1.0, high_inclusive=False, owner=o)
        check_option(activation, (None, "relu", "gelu"), "activation", owner=o)
        check_option(readout, ("last", "mean"), "readout", owner=o)
        validate_type(official_quirks, bool, "official_quirks", owner=o)
        self.n_chans, self.n_outputs, self.n_times, self.sfreq = n_chans, n_outputs, n_times, sfreq
        self.readout = readout
        self.official_quirks = official_quirks

        def act() -> nn.Module:
            return {None: nn.Identity, "relu": nn.ReLU, "gelu": nn.GELU}[activation]()

        self.conv = nn.Conv1d(n_chans, N_FILTERS, KERNEL, stride=STRIDE, padding=KERNEL // 2)
        self.conv_act = act()
        self.bn = nn.BatchNorm1d(N_FILTERS)
        self.gru = nn.GRU(N_FILTERS, N_FILTERS, num_layers=n_layers, batch_first=True,
                          dropout=float(dropout) if n_layers > 1 else 0.0, bidirectional=True)
        self.head = nn.Sequential(nn.Linear(2 * N_FILTERS, D_HIDDEN), act(), nn.Dropout(0.0),
                                  nn.Linear(D_HIDDEN, n_outputs))
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        for m in self.head.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.02)
                nn.init.zeros_(m.bias)

    @property
    def n_tokens(self) -> int:
        """Time steps the GRU sees: ``ceil(n_times / 3)``."""
        return (self.n_times + 2 * (KERNEL // 2) - KERNEL) // STRIDE + 1

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``X`` (batch, n_chans, n_times) -> logits (batch, n_outputs)."""
        if X.ndim != 3 or X.shape[1] != self.n_chans:
            raise ValueError(f"CNNBiGRU expects input (batch, {self.n_chans}, n_times); got "
                             f"{tuple(X.shape)}.")
        h = self.bn(self.conv_act(self.conv(X)))      # (B, 128, T')
        out, _ = self.gru(h.transpose(1, 2))          # (B, T', 256)
        z = out[:, -1] if self.readout == "last" else out.mean(dim=1)
        logits = self.head(z)
        return torch.sigmoid(logits) if self.official_quirks else logits
