"""MVCNet: multi-view contrastive motor-imagery decoder (``specs/mvcnet.md``).

Z. Wang, S. Li, X. Chen, W. Li, D. Wu, "MVCNet: Multi-View Contrastive Network for Motor
Imagery Classification", Knowledge-Based Systems 328 (2025) 114205, arXiv 2502.17482.
Re-implemented from the paper and the spec (the official repository has no licence).

A small one-band CNN (the IFNet stem) and a linear head are what is deployed (about 7 k
parameters). During training a Transformer over the raw trial and a projector (50-300 M
parameters) are trained beside it, and the two branches are tied by contrastive losses across
augmented views (CVC) and across branches (CMC). ``model(X)`` is the deployed CNN + head;
``model.training_loss(X, y)`` is the full objective, which :class:`bcikit.train.Trainer` calls
for its training steps.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.augmentations import VIEWS, View, make_view, mirror_label_map, mirror_pairs
from ..train.losses import nt_xent
from ..utils import check_option, check_range, logger, validate_type
from . import register_model
from ._signal import channel_names, resolve_n_chans

__all__ = ["MVCNet", "MVCNetDeployed", "N_FILTERS", "KERNEL_SIZE"]

_OWNER = "MVCNet"
#: Filters of the spatial and depthwise temporal convolutions (IFNet stem, one band).
N_FILTERS = 64
#: Length of the depthwise temporal convolution (padding ``KERNEL_SIZE // 2``).
KERNEL_SIZE = 63
#: Default views when channel names are mirrorable and the classes are mirror-closed.
DEFAULT_VIEWS = ("flip", "fshift", "cr")
#: Default views otherwise (as the co-author port does).
FALLBACK_VIEWS = ("flip", "fshift")


def _ifnet_stem(n_chans: int, pool_size: int) -> nn.Sequential:
    """MVCNet's CNN branch: the one-band IFNet stem up to the flattened feature ``f``."""
    return nn.Sequential(OrderedDict([
        ("spatial", nn.Conv1d(n_chans, N_FILTERS, 1, bias=False)),
        ("spatial_bn", nn.BatchNorm1d(N_FILTERS)),
        ("temporal", nn.Conv1d(N_FILTERS, N_FILTERS, KERNEL_SIZE, padding=KERNEL_SIZE // 2,
                               groups=N_FILTERS, bias=False)),
        ("temporal_bn", nn.BatchNorm1d(N_FILTERS)),
        ("act", nn.GELU()),
        ("pool", nn.AvgPool1d(pool_size, stride=pool_size)),
        ("dropout", nn.Dropout(0.5)),
        ("flatten", nn.Flatten()),
    ]))


class MVCNetDeployed(nn.Module):
    """The deployed part of :class:`MVCNet`: CNN stem (``cnn``) + linear head (``head``).

    Its state-dict keys are those of :meth:`MVCNet.deployed_state_dict`.
    """

    def __init__(self, cnn: nn.Module, head: nn.Module):
        super().__init__()
        self.cnn = cnn
        self.head = head

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.head(self.cnn(X))


@register_model("MVCNet")
class MVCNet(nn.Module):
    """Multi-view contrastive network for motor imagery (dual branch, CNN deployed).

    **CNN branch (deployed)**, on an aligned trial ``(B, C, T)``: ``Conv1d(C, 64, 1)`` without
    bias + ``BatchNorm1d``; depthwise ``Conv1d(64, 64, 63, groups=64, padding=31)`` without bias
    + ``BatchNorm1d`` + GELU; ``AvgPool1d(P)``; ``Dropout(0.5)``; flatten to the feature ``f``
    of size ``F = 64 * floor(T / P)``; head ``Linear(F, n_outputs)``. The stem convolutions are
    initialised from a truncated normal (std 0.01), batch norms with weight 1 and bias 0, the
    head with PyTorch's default.

    **Transformer branch (training only)**, on the same trial: tokens are the channels
    (``d_model = T``); a post-norm ``nn.TransformerEncoder`` with ``n_heads`` heads, feed-forward
    width ``max(2T, 128)``, ReLU, dropout 0.1 and ``encoder_layers`` layers; flatten; projector
    ``Linear(C*T, 4F)`` -> ``LayerNorm`` -> ReLU -> ``Linear(4F, F)`` -> Tanh, giving ``z``.
    ``f`` and ``z`` are contrasted directly (no CNN-side projection head).

    Parameters
    ----------
    n_chans : int or None
        Number of channels ``C``; inferred from ``chs_info`` when None.
    n_outputs : int or None
        Number of classes; inferred from ``classes`` when None.
    n_times : int
        Samples per trial ``T``; must be divisible by ``n_heads`` (even for the default 2).
    sfreq : float
        Sampling rate in Hz (for the default ``pool_size`` and the frequency-shift view).
    chs_info : list of dict or None
        ``mne.Info['chs']`` (dicts with ``'ch_name'``) or channel names; needed for the
        channel-reflection and hemisphere-swap views.
    pool_size : int or None
        Average-pooling window and stride ``P`` in samples; None: ``round(0.5 * sfreq)``
        (0.5 s patches). The 512 Hz presets of the spec (BNCI2014_002, BNCI2015_001) use 128, as
        the official code does, which this default (256 at 512 Hz) does not give: pass
        ``pool_size=128`` to reproduce them.
    encoder_layers : int
        Transformer layers: 2 (the paper's best; the official code uses 1).
    n_heads : int
        Attention heads (2).
    views : sequence of str or None
        Augmented views (names of :data:`bcikit.data.augmentations.VIEWS`). None:
        ``("flip", "fshift", "cr")`` when the channel names have mirror pairs and the classes are
        closed under mirroring (left/right hand ...), else ``("flip", "fshift")``. The choice
        is made when the loss is first computed, so ``classes`` may be set after construction.
    lambda_cvc : float
        Weight of the cross-view contrastive loss (0.1).
    gamma_cmc : float
        Weight of the cross-model contrastive loss (0.1).
    tau : float
        NT-Xent temperature (0.2).
    classes : sequence of str or None
        Class names in code order (channel reflection mirrors the labels with them). Can also
        be set later as the attribute ``classes``.
    reference_quirks : bool
        Reproduce the official code's frequency shift (a hard-coded 1/250 s step; 0.2048 Hz at
        512 Hz). For comparison runs only.

    Attributes
    ----------
    ch_names : list of str or None
    pool_size : int
        The resolved ``P``.
    n_features : int
        ``F``.
    last_losses : dict
        Detached ``ce``, ``cvc``, ``cmc`` and ``loss`` tensors of the last :meth:`training_loss`.

    Raises
    ------
    ValueError
        Naming what is missing or wrong: ``n_chans``/``chs_info``, ``n_outputs``/``classes``,
        ``n_times``, ``sfreq``, an odd ``n_times``, ``pool_size > n_times``, an unknown view, a
        ``'cr'`` view with unmatched channels or classes not closed under mirroring.

    Notes
    -----
    Training objective for a batch ``X`` with labels ``y`` and ``K`` views (``v = 0`` is the raw
    trial; ``f_v`` CNN features, ``z_v`` projector outputs, ``h`` the head)::

        CE  = sum_{v=0..K} cross_entropy(h(f_v), y_v)        (y_v = mirrored y for 'cr')
        CVC = 1/K sum_{v=1..K} NT-Xent([f_0; z_0], [f_v; z_v])           (N = 2B)
        CMC = NT-Xent([f_0; ...; f_K], [z_0; ...; z_K])                  (N = (K+1)B)
        L   = CE + lambda_cvc * CVC + gamma_cmc * CMC

    With the spec's three views this is its CE (four terms), CVC (mean of three) and CMC
    (``N = 4B``); with two views the sums and the mean run over the views present (CE three
    terms, CVC the mean of two, CMC ``N = 3B``).

    Each view goes through the CNN on its own, so batch-norm statistics are per view, as in the
    official code; the Transformer (no batch-dependent layers) sees all views in one batch.

    Examples
    --------
    >>> model = MVCNet(n_chans=22, n_outputs=2, n_times=1000, sfreq=250)  # doctest: +SKIP
    >>> model.count_parameters("deployed")                                # doctest: +SKIP
    6722
    """

    #: Parameters a federation shares between sites (spec §6): the depthwise temporal
    #: convolution and the head. Everything else (spatial convolution, which depends on C, every
    #: batch norm, the Transformer and the projector) stays local.
    SHARED_PARAMETERS = ("cnn.temporal.weight", "head.weight", "head.bias")

    def __init__(self, n_chans: int | None = None, n_outputs: int | None = None,
                 n_times: int | None = None, sfreq: float | None = None, chs_info: Any = None,
                 *, pool_size: int | None = None, encoder_layers: int = 2, n_heads: int = 2,
                 views: Sequence[str] | None = None, lambda_cvc: float = 0.1,
                 gamma_cmc: float = 0.1, tau: float = 0.2,
                 classes: Sequence[str] | None = None, reference_quirks: bool = False):
        super().__init__()
        o = _OWNER
        # ---- signal parameters
        n_chans = resolve_n_chans(n_chans, chs_info, o)
        ch_names = channel_names(chs_info, o) if chs_info is not None else None
        if classes is not None:
            classes = self._check_classes(classes)
        if n_outputs is None:
            if classes is None:
                raise ValueError(f"{o} needs the number of classes: pass n_outputs or classes.")
            n_outputs = len(classes)
        validate_type(n_outputs, "int", "n_outputs", owner=o)
        check_range(n_outputs, "n_outputs", low=2, owner=o)
        if classes is not None and len(classes) != n_outputs:
            raise ValueError(f"The 'classes' parameter of {o} names {len(classes)} classes "
                             f"({classes}) but n_outputs is {n_outputs}.")
        if n_times is None:
            raise ValueError(f"{o} needs the number of samples per trial: pass n_times.")
        validate_type(n_times, "int", "n_times", owner=o)
        check_range(n_times, "n_times", low=1, owner=o)
        validate_type(sfreq, ("numeric", None), "sfreq", owner=o)
        if sfreq is not None:
            check_range(sfreq, "sfreq", low=0, low_inclusive=False, owner=o)
        # ---- hyperparameters
        validate_type(encoder_layers, "int", "encoder_layers", owner=o)
        check_range(encoder_layers, "encoder_layers", low=1, owner=o)
        validate_type(n_heads, "int", "n_heads", owner=o)
        check_range(n_heads, "n_heads", low=1, owner=o)
        if n_times % n_heads:
            what = "even" if n_heads == 2 else f"divisible by n_heads={n_heads}"
            raise ValueError(f"The 'n_times' parameter of {o} must be {what} (it is the "
                             f"Transformer's d_model, split over {n_heads} heads). Got "
                             f"{n_times}; crop or resample the trials.")
        if pool_size is None:
            if sfreq is None:
                raise ValueError(f"{o} needs sfreq (the default pool_size is round(0.5 * "
                                 "sfreq)) or an explicit pool_size.")
            pool_size = int(round(0.5 * sfreq))
        validate_type(pool_size, "int", "pool_size", owner=o)
        check_range(pool_size, "pool_size", low=1, high=n_times, owner=o)
        for name, value in (("lambda_cvc", lambda_cvc), ("gamma_cmc", gamma_cmc)):
            validate_type(value, "numeric", name, owner=o)
        validate_type(tau, "numeric", "tau", owner=o)
        check_range(tau, "tau", low=0, low_inclusive=False, owner=o)
        validate_type(reference_quirks, bool, "reference_quirks", owner=o)
        if views is not None:
            if isinstance(views, str) or not isinstance(views, Sequence) or not len(views):
                raise ValueError(f"The 'views' parameter of {o} must be a non-empty sequence of "
                                 f"view names from {list(VIEWS)}. Got {views!r}.")
            views = tuple(views)
            for v in views:
                check_option(v, tuple(VIEWS), "views", owner=o)
            if "fshift" in views and sfreq is None:
                raise ValueError(f"The 'fshift' view of {o} needs sfreq.")
            if ("cr" in views or "hs" in views) and ch_names is None:
                raise ValueError(f"The views 'cr' and 'hs' of {o} need channel names: pass "
                                 "chs_info.")
            if "cr" in views or "hs" in views:
                mirror_pairs(ch_names)  # raises naming an unmatched channel
            if "cr" in views and classes is not None:
                mirror_label_map(classes)  # raises when not mirror-closed

        self.n_chans = n_chans
        self.n_outputs = n_outputs
        self.n_times = n_times
        self.sfreq = sfreq
        self.ch_names = ch_names
        self.pool_size = pool_size
        self.encoder_layers = encoder_layers
        self.n_heads = n_heads
        self.views = views
        self.lambda_cvc = float(lambda_cvc)
        self.gamma_cmc = float(gamma_cmc)
        self.tau = float(tau)
        self.classes = classes
        self.reference_quirks = reference_quirks
        self.n_features = N_FILTERS * (n_times // pool_size)
        self.last_losses: dict[str, torch.Tensor] = {}
        self._view_cache: tuple[Any, tuple[View, ...]] | None = None

        F_ = self.n_features
        # ---- CNN branch (deployed): IFNet stem with one band
        self.cnn = _ifnet_stem(n_chans, pool_size)
        self.head = nn.Linear(F_, n_outputs)
        # ---- Transformer branch (training only)
        layer = nn.TransformerEncoderLayer(
            d_model=n_times, nhead=n_heads, dim_feedforward=max(2 * n_times, 128), dropout=0.1,
            activation="relu", batch_first=True, norm_first=False)
        self.transformer = nn.TransformerEncoder(layer, num_layers=encoder_layers,
                                                 enable_nested_tensor=False)
        self.projector = nn.Sequential(OrderedDict([
            ("fc1", nn.Linear(n_chans * n_times, 4 * F_)),
            ("norm", nn.LayerNorm(4 * F_)),
            ("relu", nn.ReLU()),
            ("fc2", nn.Linear(4 * F_, F_)),
            ("tanh", nn.Tanh()),
        ]))
        self._init_stem()

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _check_classes(classes: Any) -> list[str]:
        if isinstance(classes, str) or not isinstance(classes, Iterable):
            raise TypeError(f"The 'classes' parameter of {_OWNER} must be a sequence of class "
                            f"names. Got {type(classes).__name__}.")
        return [str(c) for c in classes]

    def _init_stem(self) -> None:
        with torch.no_grad():
            for conv in (self.cnn.spatial, self.cnn.temporal):
                nn.init.trunc_normal_(conv.weight, std=0.01)
            for bn in (self.cnn.spatial_bn, self.cnn.temporal_bn):
                nn.init.ones_(bn.weight)
                nn.init.zeros_(bn.bias)

    # ------------------------------------------------------------------ views
    def resolved_views(self) -> tuple[str, ...]:
        """The view names :meth:`training_loss` uses with the current ``classes``.

        ``views`` when it was given; otherwise ``('flip', 'fshift', 'cr')`` when the channel
        names have mirror pairs and ``classes`` is set and closed under mirroring, else
        ``('flip', 'fshift')``.
        """
        if self.views is not None:
            return tuple(self.views)
        if self.ch_names is None or self.classes is None:
            return FALLBACK_VIEWS
        try:
            mirror_pairs(self.ch_names)
            mirror_label_map(self._check_classes(self.classes))
        except ValueError as err:
            logger.info("MVCNet: no channel-reflection view (%s); using %s.", err,
                        FALLBACK_VIEWS)
            return FALLBACK_VIEWS
        return DEFAULT_VIEWS

    def _views(self) -> tuple[View, ...]:
        classes = None if self.classes is None else tuple(self._check_classes(self.classes))
        key = (classes, self.views, self.reference_quirks)
        if self._view_cache is not None and self._view_cache[0] == key:
            return self._view_cache[1]
        names = self.resolved_views()
        if "cr" in names and classes is None:
            raise ValueError(f"The 'cr' view of {_OWNER} mirrors the labels and needs the class "
                             "names: pass classes= or set model.classes before training.")
        built = tuple(make_view(n, sfreq=self.sfreq, ch_names=self.ch_names,
                                classes=None if classes is None else list(classes),
                                reference_quirks=self.reference_quirks) for n in names)
        self._view_cache = (key, built)
        return built

    # ------------------------------------------------------------------ forward passes
    def _check_input(self, X: torch.Tensor) -> None:
        if not isinstance(X, torch.Tensor) or X.ndim != 3 or tuple(X.shape[1:]) != (
                self.n_chans, self.n_times):
            shape = tuple(X.shape) if isinstance(X, torch.Tensor) else type(X).__name__
            raise ValueError(f"{_OWNER} expects trials of shape (batch, {self.n_chans}, "
                             f"{self.n_times}). Got {shape}.")

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Deployed prediction: class logits ``(batch, n_outputs)`` of the CNN + head."""
        self._check_input(X)
        return self.head(self.cnn(X))

    def features(self, X: torch.Tensor) -> torch.Tensor:
        """CNN features ``f``, shape ``(batch, n_features)``."""
        self._check_input(X)
        return self.cnn(X)

    def embed(self, X: torch.Tensor) -> torch.Tensor:
        """Transformer-branch embedding ``z``, shape ``(batch, n_features)`` (training only)."""
        self._check_input(X)
        return self.projector(self.transformer(X).flatten(1))

    def training_loss(self, X: torch.Tensor, y: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """The full MVCNet objective on one batch (see the class Notes).

        Parameters
        ----------
        X : Tensor, shape (batch, n_chans, n_times)
        y : Tensor of int, shape (batch,)

        Returns
        -------
        loss : Tensor
            Scalar ``CE + lambda_cvc * CVC + gamma_cmc * CMC``.
        logits : Tensor, shape (batch, n_outputs)
            Head output on the raw (un-augmented) trials, for the training accuracy.
        """
        self._check_input(X)
        if not isinstance(y, torch.Tensor) or y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"{_OWNER}.training_loss needs y as a 1-D tensor of "
                             f"{X.shape[0]} class codes.")
        views = self._views()
        batch = X.shape[0]
        xs, ys = [X], [y]
        for view in views:
            xv, yv = view(X, y)
            xs.append(xv)
            ys.append(yv)
        # CNN branch, one view at a time: batch-norm statistics per view
        feats = [self.cnn(x) for x in xs]
        logits = [self.head(f) for f in feats]
        ce = sum(F.cross_entropy(lg.float(), yv) for lg, yv in zip(logits, ys))
        # Transformer branch, all views in one batch (no batch-dependent layers)
        z_all = self.projector(self.transformer(torch.cat(xs)).flatten(1))
        zs = list(z_all.split(batch))
        # NOTE (method as released, kept on purpose): in CVC the other branch's embedding of
        # the same trial and view is a negative (rows f_0,i and z_0,i of the anchor block), and
        # in CMC the other views of the same trial are negatives; only the listed pairs are
        # positives.
        k = len(views)
        anchor = torch.cat([feats[0], zs[0]])
        cvc = sum(nt_xent(anchor, torch.cat([feats[v], zs[v]]), self.tau)
                  for v in range(1, k + 1)) / k
        cmc = nt_xent(torch.cat(feats), torch.cat(zs), self.tau)
        loss = ce + self.lambda_cvc * cvc + self.gamma_cmc * cmc
        self.last_losses = {"ce": ce.detach(), "cvc": cvc.detach(), "cmc": cmc.detach(),
                            "loss": loss.detach()}
        return loss, logits[0]

    # ------------------------------------------------------------------ deployment
    def _deployed_parameters(self):
        yield from self.cnn.parameters()
        yield from self.head.parameters()

    def count_parameters(self, mode: str = "deployed") -> int:
        """Number of parameters: ``'deployed'`` (CNN + head) or ``'training'`` (all)."""
        check_option(mode, ("deployed", "training"), "mode", owner=f"{_OWNER}.count_parameters")
        params = self._deployed_parameters() if mode == "deployed" else self.parameters()
        return int(sum(p.numel() for p in params))

    def deployed_state_dict(self) -> dict[str, torch.Tensor]:
        """State of the deployed part only (``cnn.*`` and ``head.*``, batch-norm buffers
        included); loads into :meth:`deployed_module` with ``strict=True``."""
        return OrderedDict((k, v) for k, v in self.state_dict().items()
                           if k.startswith(("cnn.", "head.")))

    def deployed_module(self) -> MVCNetDeployed:
        """A standalone copy of the CNN + head, in eval mode, for export and inference.

        Its output equals ``model.eval()(X)``; later training of ``model`` does not change it.
        """
        module = MVCNetDeployed(copy.deepcopy(self.cnn), copy.deepcopy(self.head))
        return module.eval()

    # ------------------------------------------------------------------ federation (spec §6)
    def shared_parameter_names(self) -> list[str]:
        """Parameters sent to the federation server: depthwise temporal conv + head."""
        return list(self.SHARED_PARAMETERS)

    def local_parameter_names(self) -> list[str]:
        """Every other parameter (spatial conv, batch norms, Transformer, projector)."""
        shared = set(self.SHARED_PARAMETERS)
        return [n for n, _ in self.named_parameters() if n not in shared]

    def extra_repr(self) -> str:
        return (f"n_chans={self.n_chans}, n_outputs={self.n_outputs}, n_times={self.n_times}, "
                f"sfreq={self.sfreq}, pool_size={self.pool_size}, "
                f"encoder_layers={self.encoder_layers}, views={self.resolved_views()}")


@register_model("MVCNetStem")
class MVCNetStem(nn.Module):
    """MVCNet's deployed network alone (IFNet stem + linear head), trained with plain
    cross-entropy: the "same stem trained with cross-entropy only" baseline of the MVCNet spec.

    Identical layers and initialisation as the ``cnn`` and ``head`` of :class:`MVCNet`
    (6,722 parameters for 22 channels, 250 Hz, 4 s); it has no ``training_loss``, so
    :class:`bcikit.train.Trainer` trains it with cross-entropy on the raw trials.
    """

    def __init__(self, n_chans: int | None = None, n_outputs: int | None = None,
                 n_times: int | None = None, sfreq: float | None = None, chs_info: Any = None,
                 *, pool_size: int | None = None):
        super().__init__()
        o = "MVCNetStem"
        n_chans = resolve_n_chans(n_chans, chs_info, o)
        for name, value in (("n_chans", n_chans), ("n_outputs", n_outputs), ("n_times", n_times)):
            if value is None:
                raise ValueError(f"{o} needs {name}.")
            validate_type(value, "int", name, owner=o)
            check_range(value, name, low=1, owner=o)
        if pool_size is None:
            if sfreq is None:
                raise ValueError(f"{o} needs sfreq (the default pool_size is round(0.5 * "
                                 "sfreq)) or an explicit pool_size.")
            pool_size = int(round(0.5 * sfreq))
        validate_type(pool_size, "int", "pool_size", owner=o)
        check_range(pool_size, "pool_size", low=1, high=n_times, owner=o)
        self.cnn = _ifnet_stem(n_chans, pool_size)
        self.head = nn.Linear(N_FILTERS * (n_times // pool_size), n_outputs)
        MVCNet._init_stem(self)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.head(self.cnn(X))
