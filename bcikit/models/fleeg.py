"""FLEEGNet: the hierarchical personalised DeepConvNet of FLEEG (``specs/fleeg.md``).

R. Liu, Y. Chen, A. Li, Y. Ding, H. Yu, C. Guan, "Aggregating intrinsic information to enhance
BCI performance through federated learning", Neural Networks 172 (2024) 106100,
arXiv 2308.11636. Re-implemented from the paper and the spec (the official code's licence is
non-commercial; nothing is copied from it).

Every site keeps its own input front-end (blocks 1-3 and every batch norm), sized for its
montage, sampling rate and trial length, so that block 4 outputs 7 samples everywhere; the
deep block-4 convolution and the classifier head are the same shape at every site and are the
only tensors a federation averages (:attr:`FLEEGNet.shared_modules`).

This module also holds the FLEEG preprocessing (:func:`bandpass`, :func:`preprocess`): a
zero-phase Chebyshev type II band-pass 0.3-40 Hz on epoched trials.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..utils import check_option, check_range, validate_type
from . import register_model
from ._signal import resolve_n_chans

__all__ = ["FLEEGNet", "REFERENCE_SITES", "fleeg_geometry", "solve_geometry", "bandpass",
           "FLEEG_BAND", "preprocess", "N_FILTERS", "L4"]

_OWNER = "FLEEGNet"
#: Filters of blocks 1 to 4.
N_FILTERS = (25, 50, 100, 200)
#: Block-4 kernel and pool (shared, the same at every site).
K4, P4 = 10, 3
#: Length every site's block 4 must output (the head's kernel).
L4 = 7
#: Max-norm per output filter: all convolutions of blocks 1-4, and the head.
MAX_NORM_BLOCKS = 2.0
MAX_NORM_HEAD = 0.5

#: The nine official clients (spec §2 table): bcikit / MOABB name -> geometry and recipe.
#: ``n_chans``, ``sfreq`` (after resampling) and ``n_times`` describe the data the official
#: configuration expects; ``batch_size`` and ``lr`` are its per-client recipe.
REFERENCE_SITES: dict[str, dict[str, Any]] = {
    "Lee2019_MI": dict(official="KoreaU_MI", n_subjects=54, n_chans=62, sfreq=250.0,
                       n_times=1000, kernels=(10, 10, 10), pools=(3, 3, 3), batch_size=512,
                       lr=0.01, official_weight=21600),
    "Shin2017A": dict(official="Shin_MI", n_subjects=29, n_chans=30, sfreq=200.0, n_times=2000,
                      kernels=(8, 8, 8), pools=(5, 4, 3), batch_size=512, lr=0.005,
                      official_weight=1740),
    "SHU": dict(official="ShanghaiU_MI", n_subjects=25, n_chans=32, sfreq=250.0, n_times=1000,
                kernels=(10, 10, 10), pools=(3, 3, 3), batch_size=512, lr=0.005,
                official_weight=11988),
    "BNCI2014_001": dict(official="BCI2a_MI", n_subjects=9, n_chans=22, sfreq=250.0,
                         n_times=1000, kernels=(10, 10, 10), pools=(3, 3, 3), batch_size=512,
                         lr=0.01, official_weight=2448),
    "Weibo2014": dict(official="Weibo2014", n_subjects=10, n_chans=60, sfreq=200.0, n_times=800,
                      kernels=(8, 8, 8), pools=(2, 3, 4), batch_size=512, lr=0.005,
                      official_weight=1740),
    "Cho2017": dict(official="Cho2017", n_subjects=52, n_chans=64, sfreq=512.0, n_times=1536,
                    kernels=(22, 22, 22), pools=(4, 3, 3), batch_size=512, lr=0.01,
                    official_weight=9800),
    "GrosseWentrup2009": dict(official="MunichMI", n_subjects=10, n_chans=128, sfreq=250.0,
                              n_times=1750, kernels=(10, 10, 10), pools=(4, 4, 3),
                              batch_size=128, lr=0.01, official_weight=3000),
    "Schirrmeister2017": dict(official="Schirrmeister2017", n_subjects=14, n_chans=128,
                              sfreq=500.0, n_times=2000, kernels=(20, 20, 10), pools=(6, 3, 3),
                              batch_size=128, lr=0.01, official_weight=6742),
    "Kaya2018": dict(official="Murat2018", n_subjects=11, n_chans=22, sfreq=200.0, n_times=200,
                     kernels=(6, 6, 6), pools=(1, 2, 3), batch_size=512, lr=0.01,
                     official_weight=17515),
}
_ALIASES = {v["official"].lower(): k for k, v in REFERENCE_SITES.items()}
_ALIASES.update({k.lower(): k for k in REFERENCE_SITES})
_ALIASES.update({"murat2018": "Kaya2018", "bci2a": "BNCI2014_001", "munich": "GrosseWentrup2009"})


def reference_site(dataset: str) -> str:
    """The :data:`REFERENCE_SITES` key for a dataset or official client name (case-insensitive).

    Raises
    ------
    ValueError
        When the name is not one of the nine sites.
    """
    validate_type(dataset, str, "dataset", owner=_OWNER)
    key = _ALIASES.get(dataset.lower())
    if key is None:
        raise ValueError(f"The 'dataset' parameter of {_OWNER} must name one of the nine "
                         f"reference sites {sorted(REFERENCE_SITES)} (or their official client "
                         f"names) with stem_geometry='reference'. Got {dataset!r}; use "
                         f"stem_geometry='solve' for a new site.")
    return key


def _lengths(n_times: int, kernels: Sequence[int], pools: Sequence[int]) -> tuple[int, ...]:
    """Output lengths of blocks 1-4: ``L_out = floor((L_in - k + 1) / p)`` (0 when too short)."""
    out = []
    length = n_times
    for k, p in zip((*kernels, K4), (*pools, P4)):
        length = max(length - k + 1, 0) // p
        out.append(length)
    return tuple(out)


def solve_geometry(n_times: int, sfreq: float, *, site: str | None = None
                   ) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Kernels and pools for a new site (``stem_geometry="solve"``, spec §2).

    ``k = round(0.04 * sfreq)`` in blocks 1-3; pools ``p1, p2, p3`` in 1..6 such that block 3
    outputs 30 to 32 samples and block 4 outputs :data:`L4`; among those, the smallest largest
    pool, then the larger early pools (lexicographically largest ``(p1, p2, p3)``).

    Raises
    ------
    ValueError
        Naming the site, ``n_times`` and ``sfreq`` when no pools fit.
    """
    k = max(int(round(0.04 * float(sfreq))), 1)
    kernels = (k, k, k)
    best = None
    for p1 in range(1, 7):
        for p2 in range(1, 7):
            for p3 in range(1, 7):
                lengths = _lengths(n_times, kernels, (p1, p2, p3))
                if not (30 <= lengths[2] <= 32 and lengths[3] == L4):
                    continue
                rank = (max(p1, p2, p3), -p1, -p2, -p3)
                if best is None or rank < best[0]:
                    best = (rank, (p1, p2, p3))
    if best is None:
        name = f"site {site!r}" if site else "this site"
        raise ValueError(f"{_OWNER} found no pool sizes for {name}: with T={n_times} samples at "
                         f"{sfreq:g} Hz (kernels {kernels}) no p1, p2, p3 in 1..6 gives block-3 "
                         f"length 30-32 and block-4 length {L4}. Crop or resample the trials, "
                         f"or pass kernels= and pools= explicitly.")
    return kernels, best[1]


def fleeg_geometry(n_times: int, sfreq: float | None = None, *, stem_geometry: str = "solve",
                   dataset: str | None = None, kernels: Sequence[int] | None = None,
                   pools: Sequence[int] | None = None, site: str | None = None
                   ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Resolve ``(kernels, pools, lengths)`` of blocks 1-3 for one site.

    Parameters
    ----------
    n_times : int
        Samples per trial ``T``.
    sfreq : float or None
        Sampling rate (needed by ``"solve"``).
    stem_geometry : {"solve", "reference"}
        ``"reference"``: the spec table row of ``dataset``; ``"solve"``: :func:`solve_geometry`.
    dataset : str or None
        Dataset name for ``"reference"``.
    kernels, pools : sequence of 3 int or None
        Explicit geometry (both together); overrides ``stem_geometry``.
    site : str or None
        Name used in error messages (default: ``dataset``).

    Returns
    -------
    kernels, pools : tuple of 3 int
    lengths : tuple of 4 int
        ``(L1, L2, L3, L4)``.

    Raises
    ------
    ValueError
        When block 4 would not output :data:`L4` samples (naming the site, ``T`` and the
        lengths), for an unknown dataset, or when ``"solve"`` finds no pools.
    """
    o = _OWNER
    site = site or dataset
    validate_type(n_times, "int", "n_times", owner=o)
    check_range(n_times, "n_times", low=1, owner=o)
    if (kernels is None) != (pools is None):
        raise ValueError(f"{o} needs kernels and pools together (or neither).")
    if kernels is not None:
        kernels, pools = tuple(kernels), tuple(pools)
        for name, value in (("kernels", kernels), ("pools", pools)):
            if len(value) != 3 or not all(isinstance(v, (int, np.integer)) and v >= 1
                                          for v in value):
                raise ValueError(f"The {name!r} parameter of {o} must be three positive ints "
                                 f"(blocks 1-3). Got {value!r}.")
        kernels = tuple(int(v) for v in kernels)
        pools = tuple(int(v) for v in pools)
    else:
        check_option(stem_geometry, ("solve", "reference"), "stem_geometry", owner=o)
        if stem_geometry == "reference":
            if dataset is None:
                raise ValueError(f"{o} with stem_geometry='reference' needs dataset= (one of "
                                 f"{sorted(REFERENCE_SITES)}).")
            row = REFERENCE_SITES[reference_site(dataset)]
            kernels, pools = row["kernels"], row["pools"]
        else:
            if sfreq is None:
                raise ValueError(f"{o} with stem_geometry='solve' needs sfreq (kernels are "
                                 f"round(0.04 * sfreq)).")
            kernels, pools = solve_geometry(n_times, sfreq, site=site)
    lengths = _lengths(n_times, kernels, pools)
    if lengths[3] != L4:
        name = f"site {site!r}" if site else "this site"
        raise ValueError(f"{o} geometry for {name} does not reach the shared length: T={n_times} "
                         f"with kernels {kernels} and pools {pools} gives block lengths "
                         f"L1-L4 = {lengths}, but block 4 must output L4 = {L4}. Check the "
                         f"trial length and sampling rate against the spec table, or use "
                         f"stem_geometry='solve'.")
    return kernels, pools, lengths


@register_model("FLEEGNet")
class FLEEGNet(nn.Module):
    """The FLEEG DeepConvNet variant with per-site stems and a shared deep block and head.

    Input ``(B, C, T)`` (or ``(B, 1, C, T)``); output log-probabilities ``(B, n_outputs)``.

    ====== =============================================================== ===========
    block  layers                                                          federation
    ====== =============================================================== ===========
    1      Conv2d 1->25 (1, k1) + bias; Conv2d 25->25 (C, 1); BN; ELU;     local
           MaxPool (1, p1)
    2      Dropout; Conv2d 25->50 (1, k2); BN; ELU; MaxPool (1, p2)        local
    3      Dropout; Conv2d 50->100 (1, k3); BN; ELU; MaxPool (1, p3)       local
    4      Dropout; Conv2d 100->200 (1, 10); BN; ELU; MaxPool (1, 3)       conv shared, BN local
    head   Conv2d 200->n_outputs (1, 7) + bias; LogSoftmax                 shared
    ====== =============================================================== ===========

    Parameters
    ----------
    n_chans : int or None
        Channels ``C``; inferred from ``chs_info`` when None.
    n_outputs : int
        Number of classes.
    n_times : int
        Samples per trial ``T``.
    sfreq : float or None
        Sampling rate in Hz (needed by ``stem_geometry="solve"``).
    chs_info : list or None
        ``mne.Info['chs']`` or channel names (only their count is used).
    stem_geometry : {"solve", "reference"}
        How kernels ``k1-k3`` and pools ``p1-p3`` are chosen: ``"reference"`` takes the spec
        table row of ``dataset``; ``"solve"`` (bcikit) uses ``k = round(0.04 * sfreq)`` and the
        pools that bring block 3 to 30-32 and block 4 to 7 samples (see :func:`solve_geometry`).
    dataset : str or None
        Dataset name (MOABB or official client name) for ``"reference"``.
    kernels, pools : sequence of 3 int or None
        Explicit block 1-3 geometry, overriding ``stem_geometry``.
    drop_prob : float
        Dropout before blocks 2, 3 and 4 (0.5).
    site : str or None
        Site name for error messages (default: ``dataset``).

    Attributes
    ----------
    shared_modules : tuple of str
        ``("block4.conv", "head.conv")``: the module prefixes a federation averages.
    kernels, pools : tuple of 3 int
    lengths : tuple of 4 int
        Output lengths of blocks 1-4 (``lengths[3] == 7``).

    Raises
    ------
    ValueError
        For missing signal parameters, or a geometry whose block 4 does not output 7 samples
        (the message names the site, ``T`` and the lengths).

    Notes
    -----
    Initialisation: convolution weights Xavier-uniform, biases 0, batch norms weight 1 and bias
    0. Max-norm constraints (per output filter: 2.0 on every convolution of blocks 1-4, 0.5 on
    the head) are applied by :meth:`apply_max_norm`, which the training loop calls after every
    optimiser step and every merge of received weights.

    Examples
    --------
    >>> model = FLEEGNet(22, 2, 1000, 250.0, stem_geometry="reference", dataset="BNCI2014_001")
    >>> model.count_parameters("shared"), model.count_parameters("local")
    (202802, 77275)
    """

    shared_modules: tuple[str, ...] = ("block4.conv", "head.conv")

    def __init__(self, n_chans: int | None = None, n_outputs: int | None = None,
                 n_times: int | None = None, sfreq: float | None = None, chs_info: Any = None,
                 *, stem_geometry: str = "solve", dataset: str | None = None,
                 kernels: Sequence[int] | None = None, pools: Sequence[int] | None = None,
                 drop_prob: float = 0.5, site: str | None = None):
        super().__init__()
        o = _OWNER
        n_chans = resolve_n_chans(n_chans, chs_info, o)
        if n_outputs is None:
            raise ValueError(f"{o} needs the number of classes: pass n_outputs.")
        validate_type(n_outputs, "int", "n_outputs", owner=o)
        check_range(n_outputs, "n_outputs", low=2, owner=o)
        if n_times is None:
            raise ValueError(f"{o} needs the number of samples per trial: pass n_times.")
        validate_type(sfreq, ("numeric", None), "sfreq", owner=o)
        if sfreq is not None:
            check_range(sfreq, "sfreq", low=0, low_inclusive=False, owner=o)
        validate_type(drop_prob, "numeric", "drop_prob", owner=o)
        check_range(drop_prob, "drop_prob", low=0.0, high=1.0, high_inclusive=False, owner=o)
        validate_type(site, (str, None), "site", owner=o)
        kernels, pools, lengths = fleeg_geometry(n_times, sfreq, stem_geometry=stem_geometry,
                                                 dataset=dataset, kernels=kernels, pools=pools,
                                                 site=site)
        self.n_chans = int(n_chans)
        self.n_outputs = int(n_outputs)
        self.n_times = int(n_times)
        self.sfreq = None if sfreq is None else float(sfreq)
        self.stem_geometry = stem_geometry
        self.dataset = dataset
        self.site = site
        self.kernels = kernels
        self.pools = pools
        self.lengths = lengths
        self.drop_prob = float(drop_prob)

        f1, f2, f3, f4 = N_FILTERS
        k1, k2, k3 = kernels
        p1, p2, p3 = pools
        self.block1 = nn.Sequential(OrderedDict([
            ("temporal", nn.Conv2d(1, f1, (1, k1), bias=True)),
            ("spatial", nn.Conv2d(f1, f1, (self.n_chans, 1), bias=False)),
            ("bn", nn.BatchNorm2d(f1)),
            ("elu", nn.ELU()),
            ("pool", nn.MaxPool2d((1, p1), stride=(1, p1))),
        ]))
        for i, (fin, fout, k, p) in enumerate(((f1, f2, k2, p2), (f2, f3, k3, p3),
                                               (f3, f4, K4, P4)), start=2):
            self.add_module(f"block{i}", nn.Sequential(OrderedDict([
                ("drop", nn.Dropout(self.drop_prob)),
                ("conv", nn.Conv2d(fin, fout, (1, k), bias=False)),
                ("bn", nn.BatchNorm2d(fout)),
                ("elu", nn.ELU()),
                ("pool", nn.MaxPool2d((1, p), stride=(1, p))),
            ])))
        self.head = nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(f4, self.n_outputs, (1, L4), bias=True)),
        ]))
        self.reset_parameters()

    # ------------------------------------------------------------------ parameters
    def reset_parameters(self) -> None:
        """Xavier-uniform convolution weights, zero biases, batch norms (1, 0) and fresh stats."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()

    def _constrained(self):
        yield self.block1.temporal, MAX_NORM_BLOCKS
        yield self.block1.spatial, MAX_NORM_BLOCKS
        for i in (2, 3, 4):
            yield getattr(self, f"block{i}").conv, MAX_NORM_BLOCKS
        yield self.head.conv, MAX_NORM_HEAD

    @torch.no_grad()
    def apply_max_norm(self) -> None:
        """Renormalise each output filter's weight to L2 norm at most 2.0 (blocks 1-4) and 0.5
        (head), in place. Call after every optimiser step and every merge."""
        for conv, max_norm in self._constrained():
            conv.weight.copy_(torch.renorm(conv.weight, p=2, dim=0, maxnorm=max_norm))

    def shared_parameter_names(self) -> list[str]:
        """Parameter names under :attr:`shared_modules` (batch norms excluded)."""
        return [n for n, _ in self.named_parameters()
                if n.startswith(tuple(p + "." for p in self.shared_modules))]

    def count_parameters(self, mode: str = "total") -> int:
        """Number of parameters: ``"total"``, ``"shared"`` (block-4 conv + head) or
        ``"local"`` (everything else, every batch norm included)."""
        check_option(mode, ("total", "shared", "local"), "mode",
                     owner=f"{_OWNER}.count_parameters")
        shared = set(self.shared_parameter_names())
        return int(sum(p.numel() for n, p in self.named_parameters()
                       if mode == "total" or (n in shared) == (mode == "shared")))

    # ------------------------------------------------------------------ forward
    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Log-probabilities ``(batch, n_outputs)`` of trials ``(batch, C, T)``."""
        if X.ndim == 3:
            X = X.unsqueeze(1)
        if X.ndim != 4 or X.shape[1] != 1 or X.shape[2] != self.n_chans \
                or X.shape[3] != self.n_times:
            raise ValueError(f"{_OWNER} expects trials of shape (batch, {self.n_chans}, "
                             f"{self.n_times}) or (batch, 1, {self.n_chans}, {self.n_times}); "
                             f"got {tuple(X.shape)}.")
        for block in (self.block1, self.block2, self.block3, self.block4):
            X = block(X)
        X = self.head(X)
        return F.log_softmax(X.flatten(1), dim=1)

    def extra_repr(self) -> str:
        return (f"n_chans={self.n_chans}, n_outputs={self.n_outputs}, n_times={self.n_times}, "
                f"sfreq={self.sfreq}, kernels={self.kernels}, pools={self.pools}, "
                f"lengths={self.lengths}")


# ---------------------------------------------------------------------------------- filtering
def bandpass(X: np.ndarray, sfreq: float, *, l_freq: float = 0.3, h_freq: float = 40.0,
             l_stop: float = 0.1, h_stop: float = 45.0, gpass: float = 1.0,
             gstop: float = 40.0) -> np.ndarray:
    """Zero-phase Chebyshev type II band-pass of epoched trials (FLEEG, spec §3).

    A thin call to the filter of :class:`bcikit.data.transforms.BandPass` with
    ``method="cheby2"`` (:func:`~bcikit.data.transforms.cheby2_sos`, then
    :func:`~bcikit.data.transforms.cheby2_filter`) for a plain array: the order comes from
    :func:`scipy.signal.cheb2ord` (pass band ``l_freq``-``h_freq`` with at most ``gpass`` dB
    ripple, stop bands below ``l_stop`` and above ``h_stop`` attenuated by ``gstop`` dB); the
    filter runs forwards and backwards along the last axis. On a TrialSet, use
    ``BandPass(0.3, 40, method="cheby2", l_stop=0.1, h_stop=45)`` (what :func:`preprocess`
    does).

    Parameters
    ----------
    X : array, shape (..., n_times)
    sfreq : float
        Sampling rate in Hz; its Nyquist frequency must exceed ``h_stop``.

    Returns
    -------
    array, float32, same shape

    Raises
    ------
    ValueError
        When the band edges are not ordered below the Nyquist frequency.
    """
    from ..data.transforms import cheby2_filter, cheby2_sos

    validate_type(sfreq, "numeric", "sfreq", owner="bandpass")
    sos = cheby2_sos(float(sfreq), l_freq, h_freq, l_stop=l_stop, h_stop=h_stop, gpass=gpass,
                     gstop=gstop)
    return cheby2_filter(X, sos)


#: The FLEEG band-pass as a bcikit transform's parameters (spec §3).
FLEEG_BAND = {"l_freq": 0.3, "h_freq": 40.0, "method": "cheby2", "l_stop": 0.1, "h_stop": 45.0,
              "gpass": 1.0, "gstop": 40.0}


def preprocess(ts, *, sfreq: float | None = None):
    """FLEEG preprocessing of a :class:`~bcikit.data.TrialSet`: optional resampling to
    ``sfreq`` (:class:`bcikit.data.transforms.Resample`, polyphase), then the Chebyshev-II
    band-pass ``BandPass(**FLEEG_BAND)`` (:class:`bcikit.data.transforms.BandPass`,
    ``method="cheby2"``). No alignment, no scaling. The filter has no fitted statistics (its
    design depends on the sampling rate only), so fitting it on all of a site's trials leaks
    nothing.

    Returns
    -------
    TrialSet
        A new TrialSet (float32), ``info`` updated (rate, high-pass, low-pass).
    """
    from ..data.transforms import BandPass

    if sfreq is not None and not math.isclose(float(sfreq), float(ts.sfreq)):
        from ..data.transforms import Resample

        ts = Resample(float(sfreq)).fit_transform(ts)
    return BandPass(**FLEEG_BAND).fit_transform(ts)
