"""Du-IN: sEEG word decoding with region-level tokens and masked code modelling (``specs/duin.md``).

H. Zheng et al., "Du-IN: Discrete units-guided mask modeling for decoding speech from
Intracranial Neural signals", NeurIPS 2024, arXiv 2405.11459. Re-implemented from the paper and
the spec; the official repository (liulab-repository/Du-IN) was read for facts only.

The method has three stages that share one encoder layout:

* :class:`DuINVQVAE` (stage 1): encoder -> vector quantiser (2048 x 64 codebook, cosine lookup,
  EMA updates, k-means initialisation) -> decoder -> regressor; reconstructs 4 s crops.
* :class:`DuINMAE` (stage 2): a fresh encoder predicts the frozen VQ-VAE's code of every token
  from two complementary masked views.
* :class:`DuIN` (stage 3): the word classifier, initialised from either stage with
  :meth:`DuIN.load_pretrained`.

The encoder (all stages): one ``Linear(C_s -> 16)`` per subject (the only channel mixing; local
to a subject when federating), a linear patch tokenizer (100-sample patches -> 160-d tokens),
fixed sinusoidal positions, and a post-norm Transformer with LayerNorm on queries and keys.

Trials are ``(batch, channels, samples)`` at 1000 Hz (the official code uses ``(batch, samples,
channels)``). Normalisation belongs to the data pipeline (fitted on training data).

Several subjects in one model (multi-subject pre-training): ``subjects={"S01": 12, "S02": 9}``.
A batch may mix subjects: trials are zero-padded to the widest subject and the subject code of
each trial (its position in ``subjects``) is passed as ``subject`` (or as the Trainer's ``y`` of
the pre-training stages).

Where bcikit differs from the spec (session 4, measured on the CPU; see the class notes):

* the tokenizer's batch norms keep bias-corrected running statistics
  (:class:`RunningStatsBatchNorm1d`). Training computes exactly as before. Eval mode no longer
  spends its first ~100 steps dividing by a variance that is still near its initial 1, which
  is up to 1000 times too large: before, every input got the same VQ code and the same class.
* ``DuINVQVAE(restart_dead_codes=k)`` (opt-in; default None = the spec) re-seeds codes unused
  for ``k`` steps. Without it the EMA codebook goes stale and only a few codes stay in use.

The vector quantiser is written here rather than taken from ``vector-quantize-pytorch``: that
library's cosine codebook keeps an EMA of code sums and counts with Laplace smoothing (not the
spec's normalised EMA of the codebook itself), has no tanh pre-projection and registers different
state, so it cannot reproduce the spec's update rule or the official parameter count.
"""

from __future__ import annotations

import copy
import math
import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..utils import check_option, check_range, logger, validate_type
from . import register_model
from ._signal import resolve_n_chans

__all__ = ["DuIN", "DuINVQVAE", "DuINMAE", "DuINEncoder", "SubjectLayer", "PatchTokenizer",
           "RunningStatsBatchNorm1d", "DuINTransformer", "DuINBlock", "VectorQuantizer",
           "TimeRegressor", "CodebookMonitor",
           "sinusoidal_table", "kmeans_cosine", "complementary_masks", "random_shift",
           "stage_loss", "save_duin", "load_duin", "PATCH_LEN", "D_MODEL", "D_NEURAL", "SFREQ"]

#: Samples per token (100 ms at 1000 Hz).
PATCH_LEN = 100
#: The sampling rate the tokenizer geometry is defined for.
SFREQ = 1000.0
#: Channels of the common region-level signal after the subject layer.
D_NEURAL = 16
#: Token width: 10 tokenizer steps x 16 filters.
D_MODEL = 160
N_HEADS = 8
D_HEAD = 64
D_FF = 320
#: Tokenizer: Conv1d filters, kernels, strides (padding 9, 1, 1).
TOKENIZER_FILTERS = (128, 128, 16)
TOKENIZER_KERNELS = (19, 3, 3)
TOKENIZER_STRIDES = (10, 1, 1)
#: Regressor: ConvTranspose1d filters, kernels, strides (spec §2.2).
REGRESSOR_FILTERS = (128, 128, 128, 128, 16)
REGRESSOR_KERNELS = (3, 3, 10, 9, 19)
REGRESSOR_STRIDES = (1, 1, 10, 1, 10)
#: Training-time random shift of the classifier, in samples (spec §2.4).
DEFAULT_MAX_SHIFT = 300
#: Classifier hidden width.
D_HIDDEN = 128
#: The official classifier's contrastive block: two Linear(160 -> 32) and a fixed temperature.
OFFICIAL_D_CONTRA = 32
_CHECKPOINT_FORMAT = 1
_TRUNC_STD = 0.02


# --------------------------------------------------------------------------------------------
# small functional pieces
# --------------------------------------------------------------------------------------------
def _trunc_normal_(w: torch.Tensor, std: float = _TRUNC_STD) -> None:
    nn.init.trunc_normal_(w, mean=0.0, std=std, a=-2 * std, b=2 * std)


def _init_linear(m: nn.Linear) -> None:
    _trunc_normal_(m.weight)
    if m.bias is not None:
        nn.init.zeros_(m.bias)


def l2norm(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise the last dimension."""
    return F.normalize(x, p=2.0, dim=-1, eps=1e-12)


def sinusoidal_table(n_positions: int, d_model: int = D_MODEL) -> torch.Tensor:
    """Fixed sinusoidal positions ``(n_positions, d_model)``: sin on even, cos on odd columns.

    ``PE[p, 2i] = sin(p / 10000^(2i/d))`` and ``PE[p, 2i+1] = cos(p / 10000^(2i/d))``.
    """
    if d_model % 2:
        raise ValueError(f"sinusoidal_table needs an even d_model. Got {d_model}.")
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(1e4) / d_model))
    table = torch.zeros(n_positions, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div)
    return table.float()


def kmeans_cosine(samples: torch.Tensor, n_clusters: int, n_iters: int = 10,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Spherical k-means: ``n_clusters`` L2-normalised means of L2-normalised ``samples``.

    Means start from randomly drawn samples (without replacement when there are at least
    ``n_clusters`` samples, with replacement otherwise). Each iteration assigns every sample to
    the mean of highest cosine similarity and replaces each mean by the L2-normalised average
    of its samples; a mean without samples keeps its value.

    Parameters
    ----------
    samples : Tensor, shape (n, d)
    n_clusters : int
    n_iters : int
    generator : torch.Generator or None

    Returns
    -------
    means : Tensor, shape (n_clusters, d)
    """
    n = samples.shape[0]
    if n == 0:
        raise ValueError("kmeans_cosine needs at least one sample.")
    samples = l2norm(samples.float())
    dev = samples.device
    if n >= n_clusters:
        idx = torch.randperm(n, generator=generator, device="cpu")[:n_clusters]
    else:
        idx = torch.randint(0, n, (n_clusters,), generator=generator, device="cpu")
    means = samples[idx.to(dev)].clone()
    for _ in range(n_iters):
        assign = (samples @ means.T).argmax(dim=1)
        counts = torch.bincount(assign, minlength=n_clusters)
        sums = torch.zeros_like(means).index_add_(0, assign, samples)
        new = l2norm(sums / counts.clamp_min(1)[:, None].to(sums.dtype))
        means = torch.where((counts == 0)[:, None], means, new)
    return means


def complementary_masks(batch_size: int, n_tokens: int, mask_ratio: float = 0.5, *,
                        device: torch.device | str | None = None,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Random token masks: ``True`` where a token is masked in the first view.

    ``floor(n_tokens * (1 - mask_ratio))`` tokens per sample are kept (chosen uniformly at
    random, independently per sample) and the others masked. The second view masks the
    complement (``~mask``), so every token is masked in exactly one of the two views.

    Returns
    -------
    mask : Tensor of bool, shape (batch_size, n_tokens)
    """
    keep = int(n_tokens * (1.0 - mask_ratio))
    noise = torch.rand(batch_size, n_tokens, generator=generator, device=device)
    ranks = noise.argsort(dim=1).argsort(dim=1)
    return ranks >= keep


def random_shift(X: torch.Tensor, max_shift: int, *,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift each trial in time by an integer drawn uniformly from ``[-max_shift, max_shift]``.

    ``out[b, :, t] = X[b, :, t - s_b]`` where ``0 <= t - s_b < T``, and 0 elsewhere
    (zero-filled; a positive shift delays the signal).

    Returns
    -------
    shifted : Tensor, shape of ``X``
    shifts : Tensor of int64, shape (batch,)
    """
    B, _, T = X.shape
    s = torch.randint(-max_shift, max_shift + 1, (B,), generator=generator,
                      device="cpu").to(X.device)
    src = torch.arange(T, device=X.device)[None, :] - s[:, None]
    valid = (src >= 0) & (src < T)
    gathered = torch.gather(X, 2, src.clamp(0, T - 1)[:, None, :].expand_as(X))
    return torch.where(valid[:, None, :], gathered, torch.zeros((), dtype=X.dtype,
                                                                  device=X.device)), s


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------
def _check_subject_name(name: Any, owner: str) -> str:
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"Subject names of {owner} must be non-empty strings without '.'. "
                         f"Got {name!r}.")
    return name


class SubjectLayer(nn.Module):
    """One ``Linear`` per subject between its channels and the common 16-d signal.

    ``direction="in"``: ``(B, C_max, T) -> (B, T, 16)`` with ``Linear(C_s -> 16)`` on the first
    ``C_s`` channels of the trials of subject ``s``. ``direction="out"``: ``(B, T, 16) ->
    (B, C_max, T)`` with ``Linear(16 -> C_s)``, zeros in the padded channels.

    Weights trunc-normal (std 0.02), biases 0. The layers live in ``layers[<subject>]``.
    """

    def __init__(self, subjects: Mapping[str, int], d_neural: int = D_NEURAL,
                 direction: str = "in"):
        super().__init__()
        check_option(direction, ("in", "out"), "direction", owner="SubjectLayer")
        self.subjects = dict(subjects)
        self.names = list(self.subjects)
        self.direction = direction
        self.d_neural = d_neural
        self.n_chans = max(self.subjects.values())
        self.layers = nn.ModuleDict()
        for name, c in self.subjects.items():
            lin = nn.Linear(c, d_neural) if direction == "in" else nn.Linear(d_neural, c)
            _init_linear(lin)
            self.layers[name] = lin

    def forward(self, X: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
        if len(self.names) == 1 or codes is None:
            name = self.names[0]
            lin = self.layers[name]
            c = self.subjects[name]
            if self.direction == "in":
                return lin(X[:, :c].transpose(1, 2))
            out = lin(X).transpose(1, 2)
            if c < self.n_chans:
                out = F.pad(out, (0, 0, 0, self.n_chans - c))
            return out
        B = X.shape[0]
        if self.direction == "in":
            out = X.new_zeros(B, X.shape[2], self.d_neural)
        else:
            out = X.new_zeros(B, self.n_chans, X.shape[1])
        for k, name in enumerate(self.names):
            idx = (codes == k).nonzero(as_tuple=True)[0]
            if idx.numel() == 0:
                continue
            c = self.subjects[name]
            lin = self.layers[name]
            if self.direction == "in":
                part = lin(X[idx, :c].transpose(1, 2))
            else:
                part = F.pad(lin(X[idx]).transpose(1, 2), (0, 0, 0, self.n_chans - c))
            out = out.index_copy(0, idx, part.to(out.dtype))
        return out


class RunningStatsBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` whose running statistics are a bias-corrected moving average.

    Training mode is exactly ``nn.BatchNorm1d`` (batch statistics). Only the running
    statistics used in eval mode differ: the ``k``-th training batch (from 1) updates them with
    momentum ``max(momentum, 1 / k)`` instead of ``momentum``, so the first batch replaces the
    initial ``mean = 0, var = 1`` and the first ``1 / momentum`` batches are averaged equally
    (the bias correction of an exponential average, as in Adam); afterwards it is the usual
    exponential average (momentum 0.1).

    Why: the subject layer's trunc-normal (std 0.02) initialisation makes the first
    convolution's output variance about 1e-3 of the (z-scored) input's. With PyTorch's plain
    update the eval-mode variance estimate keeps ``0.9 ** k`` of its initial 1, so for the first
    ~100 steps eval mode divides by a variance up to 1000 times too large: the tokens shrink to
    the convolution biases and every input gives nearly the same tokens (the same VQ code, the
    same class). Short runs (validation after every epoch, the held-out codebook usage of a
    pre-training of a few hundred steps) then measure an input-independent model that training
    mode never was. The parameters, the buffers and the training-mode computation are those of
    ``nn.BatchNorm1d`` (the spec's BN), so checkpoints and parameter counts are unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.track_running_stats:
            base = getattr(self, "_base_momentum", None)
            if base is None:
                base = self._base_momentum = 0.1 if self.momentum is None else self.momentum
            self.momentum = max(float(base), 1.0 / (int(self.num_batches_tracked) + 1))
        return super().forward(x)


class PatchTokenizer(nn.Module):
    """Linear patch embedding: 100-sample patches of the 16-d signal -> 160-d tokens.

    Per patch ``(16, 100)``: ``Conv1d(16, 128, 19, stride 10, padding 9)`` + BN ->
    ``Conv1d(128, 128, 3, padding 1)`` + BN -> ``Conv1d(128, 16, 3, padding 1)`` + BN, no
    activations by default (``activation="gelu"`` adds a GELU after each batch norm), then the
    ``(10 steps, 16 filters)`` output is flattened time-major to 160. Convolutions keep PyTorch's
    default initialisation; batch norms weight 1, bias 0, with bias-corrected running statistics
    (:class:`RunningStatsBatchNorm1d`; the training-mode computation is plain batch norm).
    """

    def __init__(self, d_neural: int = D_NEURAL, patch_len: int = PATCH_LEN,
                 activation: str | None = None):
        super().__init__()
        check_option(activation, (None, "gelu"), "tokenizer_activation", owner="PatchTokenizer")
        self.patch_len = patch_len
        self.activation = activation
        layers: list[tuple[str, nn.Module]] = []
        cin = d_neural
        for i, (f, k, s) in enumerate(zip(TOKENIZER_FILTERS, TOKENIZER_KERNELS,
                                          TOKENIZER_STRIDES), start=1):
            layers.append((f"conv{i}", nn.Conv1d(cin, f, k, stride=s, padding=(k - 1) // 2)))
            layers.append((f"bn{i}", RunningStatsBatchNorm1d(f)))
            if activation == "gelu":
                layers.append((f"act{i}", nn.GELU()))
            cin = f
        self.convs = nn.Sequential(OrderedDict(layers))

    def forward(self, H: torch.Tensor) -> torch.Tensor:
        """``(B, T, 16) -> (B, T // 100, 160)``."""
        B, T, D = H.shape
        n = T // self.patch_len
        P = H.reshape(B * n, self.patch_len, D).transpose(1, 2)
        out = self.convs(P)  # (B*n, 16, 10)
        return out.transpose(1, 2).reshape(B, n, -1)


class DuINBlock(nn.Module):
    """Post-norm Transformer block with LayerNorm on queries and keys.

    ``x = LN(x + MHA(x))``; ``x = LN(x + FFN(x))``. MHA: 8 heads of 64 (Q, K, V
    ``Linear(160 -> 512)`` with bias, ``LayerNorm(64)`` on each head's Q and K, fixed scale
    1/8, dropout on the attention weights, output ``Linear(512 -> 160)``). FFN:
    ``Linear(160 -> 320)`` -> ReLU -> dropout -> ``Linear(320 -> 160)``.
    """

    def __init__(self, d_model: int = D_MODEL, n_heads: int = N_HEADS, d_head: int = D_HEAD,
                 d_ff: int = D_FF, dropout: float = 0.2):
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_head
        self.dropout = float(dropout)
        #: The official code registers this as a frozen parameter (one per block).
        self.scale = 1.0 / math.sqrt(d_head)
        inner = n_heads * d_head
        self.q = nn.Linear(d_model, inner)
        self.k = nn.Linear(d_model, inner)
        self.v = nn.Linear(d_model, inner)
        self.norm_q = nn.LayerNorm(d_head)
        self.norm_k = nn.LayerNorm(d_head)
        self.proj = nn.Linear(inner, d_model)
        self.norm_attn = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(OrderedDict([
            ("fc1", nn.Linear(d_model, d_ff)), ("act", nn.ReLU()),
            ("drop", nn.Dropout(dropout)), ("fc2", nn.Linear(d_ff, d_model))]))
        self.norm_ffn = nn.LayerNorm(d_model)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                _init_linear(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        q = self.norm_q(self.q(x).view(B, N, self.n_heads, self.d_head)).transpose(1, 2)
        k = self.norm_k(self.k(x).view(B, N, self.n_heads, self.d_head)).transpose(1, 2)
        v = self.v(x).view(B, N, self.n_heads, self.d_head).transpose(1, 2)
        p = self.dropout if self.training else 0.0
        if q.device.type == "cuda":
            a = F.scaled_dot_product_attention(q, k, v, dropout_p=p, scale=self.scale)
        else:  # the same computation; torch's CPU flash kernel is slow for 30-40 tokens
            w = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
            a = F.dropout(w, p, training=p > 0) @ v
        a = a.transpose(1, 2).reshape(B, N, self.n_heads * self.d_head)
        x = self.norm_attn(x + self.proj(a))
        return self.norm_ffn(x + self.ffn(x))


class DuINTransformer(nn.Module):
    """A stack of :class:`DuINBlock`; the Linear weights of block ``i`` (from 0) are divided by
    ``sqrt(2 (i + 1))`` after their trunc-normal (std 0.02) initialisation."""

    def __init__(self, n_blocks: int, *, dropout: float = 0.2):
        super().__init__()
        self.blocks = nn.ModuleList(DuINBlock(dropout=dropout) for _ in range(n_blocks))
        with torch.no_grad():
            for i, block in enumerate(self.blocks):
                for m in block.modules():
                    if isinstance(m, nn.Linear):
                        m.weight.div_(math.sqrt(2.0 * (i + 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class DuINEncoder(nn.Module):
    """Subject layer -> patch tokenizer -> sinusoidal positions -> Transformer.

    :meth:`tokens` gives the tokenizer output (before positions; the masked code model swaps
    masked tokens there), :meth:`transform` adds the positions and runs the blocks.
    """

    def __init__(self, subjects: Mapping[str, int], n_tokens: int, *, n_blocks: int = 8,
                 tokenizer_activation: str | None = None, dropout: float = 0.2):
        super().__init__()
        self.subject = SubjectLayer(subjects, direction="in")
        self.tokenizer = PatchTokenizer(activation=tokenizer_activation)
        self.transformer = DuINTransformer(n_blocks, dropout=dropout)
        # fixed; not saved (rebuilt from n_tokens), so encoders of different crop lengths share
        # state dicts
        self.register_buffer("positions", sinusoidal_table(n_tokens), persistent=False)

    def tokens(self, X: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
        """``(B, C, T) -> (B, T // 100, 160)`` (subject layer and tokenizer)."""
        return self.tokenizer(self.subject(X, codes))

    def add_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens + self.positions[: tokens.shape[1]].to(tokens.dtype)

    def transform(self, tokens: torch.Tensor) -> torch.Tensor:
        """Add positions and run the Transformer: ``(B, N, 160) -> (B, N, 160)``."""
        return self.transformer(self.add_positions(tokens))

    def forward(self, X: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        return self.transform(self.tokens(X, codes))


class VectorQuantizer(nn.Module):
    """Normalised-EMA vector quantiser with cosine lookup (spec §2.2).

    ``z -> Linear(160, 160) -> tanh -> Linear(160, 64) -> L2-normalise = z_e``; the code of a
    token is the codebook row of highest cosine similarity; ``z_q`` (the unit-norm code vector)
    passes the gradient straight through to ``z_e``; then ``LayerNorm(64) -> Linear(64, 160)``.

    Loss: ``beta * MSE(z_e, sg(z_q))`` (mean over all elements).

    The codebook (``n_codes x 64``, unit rows) gets no gradients. In training mode:

    * on the first batch (``initialised == 0``) it is set by :func:`kmeans_cosine` on the
      batch's ``z_e`` (10 iterations; under ``torch.distributed`` computed on rank 0 and
      broadcast);
    * after the lookup, with ``n_k`` the batch count and ``m_k`` the L2-normalised mean ``z_e``
      of code ``k``: ``cluster_size = d * cluster_size + (1 - d) * n``, and for every code with
      ``n_k > 0``: ``codebook_k = l2norm(d * codebook_k + (1 - d) * m_k)`` (``d`` = decay
      0.99); codes not used in the batch are unchanged (counts and sums are summed over
      processes first). Dead codes are never restarted (the spec), unless ``restart_after``
      is set (a bcikit option, see below).

    ``restart_after`` (default None = the spec): a code that no token (of any process) has
    chosen for ``restart_after`` consecutive training steps is re-seeded with the ``z_e`` of a
    random token of the current batch (drawn on rank 0 and broadcast). **Not in the spec**
    (``specs/duin.md`` §2.2: "dead codes are logged, not restarted"). Why it exists: the EMA
    moves only the codes in use, by 1 % per step, while early training moves ``z_e`` much faster
    (Adam steps on the std-0.02 pre-projection); the codes that k-means placed on the first
    batch are soon far from every ``z_e`` and are never chosen again. Measured on crops made of
    8 known 100 ms patterns (session 4): the encoder kept the patterns apart (cosine 1.0 within
    a pattern, about 0 between), but the cosine of ``z_e`` to its nearest code fell from 0.97 to
    0.54 in 80 steps and only 3 of 16 codes stayed in use. With ``restart_after=5``, 11 of 16
    codes were in use and the nearest-code cosine stayed at 0.98. A lr warm-up alone did not help.
    The step counter is not saved (a resumed run starts it at 0); :attr:`n_restarted` counts
    the restarts.

    Buffers (saved): ``codebook``, ``cluster_size`` (the EMA counts) and ``initialised``.
    """

    def __init__(self, d_model: int = D_MODEL, n_codes: int = 2048, d_code: int = 64, *,
                 decay: float = 0.99, beta: float = 1.0, kmeans_iters: int = 10,
                 restart_after: int | None = None):
        super().__init__()
        self.n_codes, self.d_code = int(n_codes), int(d_code)
        self.decay, self.beta, self.kmeans_iters = float(decay), float(beta), int(kmeans_iters)
        validate_type(restart_after, ("int", None), "restart_after", owner="VectorQuantizer")
        if restart_after is not None:
            check_range(restart_after, "restart_after", low=1, owner="VectorQuantizer")
        self.restart_after = None if restart_after is None else int(restart_after)
        # steps since each code was last chosen (a plain tensor, not a buffer: the official
        # parameter count includes the quantiser's buffers)
        self._unused: torch.Tensor | None = None
        #: number of codes re-seeded so far (``restart_after``)
        self.n_restarted = 0
        self.proj_in = nn.Sequential(OrderedDict([
            ("fc1", nn.Linear(d_model, d_model)), ("tanh", nn.Tanh()),
            ("fc2", nn.Linear(d_model, d_code))]))
        self.register_buffer("codebook", l2norm(torch.randn(n_codes, d_code)))
        self.register_buffer("cluster_size", torch.zeros(n_codes))
        self.register_buffer("initialised", torch.zeros(()))
        self.norm = nn.LayerNorm(d_code)
        self.proj_out = nn.Linear(d_code, d_model)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                _init_linear(m)

    # -------------------------------------------------------------- pieces
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """``z_e``: the unit-norm 64-d projection (float32), shape ``(..., 64)``."""
        return l2norm(self.proj_in(z).float())

    def lookup(self, z_e: torch.Tensor) -> torch.Tensor:
        """Code of maximal cosine similarity for each row of ``z_e`` (int64, ``z_e.shape[:-1]``)."""
        return (z_e.float() @ self.codebook.T).argmax(dim=-1)

    @torch.no_grad()
    def init_codebook(self, z_e: torch.Tensor) -> None:
        """k-means (cosine) initialisation from ``z_e`` ``(n, 64)``; sets ``initialised``."""
        dist = torch.distributed
        distributed = dist.is_available() and dist.is_initialized()
        if not distributed or dist.get_rank() == 0:
            means = kmeans_cosine(z_e.detach().float(), self.n_codes, self.kmeans_iters)
        else:
            means = torch.empty_like(self.codebook)
        if distributed:
            dist.broadcast(means, 0)
        self.codebook.copy_(l2norm(means))
        self.initialised.fill_(1.0)
        logger.info("VectorQuantizer: codebook (%d x %d) initialised by k-means on %d vectors.",
                    self.n_codes, self.d_code, z_e.shape[0])

    @torch.no_grad()
    def ema_update(self, z_e: torch.Tensor, codes: torch.Tensor) -> None:
        """The EMA update of ``cluster_size`` and ``codebook`` from flat ``z_e`` and ``codes``."""
        z_e = z_e.detach().float()
        counts = torch.bincount(codes, minlength=self.n_codes).to(z_e.dtype)
        sums = torch.zeros(self.n_codes, self.d_code, dtype=z_e.dtype,
                           device=z_e.device).index_add_(0, codes, z_e)
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        d = self.decay
        self.cluster_size.mul_(d).add_(counts, alpha=1.0 - d)
        used = counts > 0
        means = l2norm(sums / counts.clamp_min(1.0)[:, None])
        updated = l2norm(d * self.codebook + (1.0 - d) * means)
        self.codebook.copy_(torch.where(used[:, None], updated, self.codebook))
        if self.restart_after is not None:
            self._restart_unused(z_e, used)

    @torch.no_grad()
    def _restart_unused(self, z_e: torch.Tensor, used: torch.Tensor) -> None:
        """Re-seed the codes unused for ``restart_after`` steps (``used``: summed over processes,
        so every process finds the same codes)."""
        if self._unused is None or self._unused.device != used.device:
            self._unused = torch.zeros(self.n_codes, dtype=torch.long, device=used.device)
        self._unused = torch.where(used, torch.zeros_like(self._unused), self._unused + 1)
        dead = (self._unused >= self.restart_after).nonzero(as_tuple=True)[0]
        if dead.numel() == 0:
            return
        dist = torch.distributed
        distributed = dist.is_available() and dist.is_initialized()
        if not distributed or dist.get_rank() == 0:
            pick = torch.randint(0, z_e.shape[0], (dead.numel(),), device="cpu").to(z_e.device)
            new = l2norm(z_e[pick])
        else:
            new = torch.empty(dead.numel(), self.d_code, dtype=z_e.dtype, device=z_e.device)
        if distributed:
            dist.broadcast(new, 0)
        self.codebook[dead] = new.to(self.codebook.dtype)
        self._unused[dead] = 0
        self.n_restarted += int(dead.numel())

    def dead_codes(self, threshold: float = 1e-3) -> int:
        """Number of codes whose EMA count is below ``threshold``."""
        return int((self.cluster_size < threshold).sum())

    # -------------------------------------------------------------- forward
    def forward(self, z: torch.Tensor, *, update: bool | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantise ``z`` ``(B, N, d_model)``.

        Parameters
        ----------
        update : bool or None
            Initialise (first call) and EMA-update the codebook; None: in training mode.

        Returns
        -------
        out : Tensor, shape (B, N, d_model)
            ``proj_out(norm(z_q))`` with the straight-through gradient.
        loss : Tensor
            ``beta * MSE(z_e, sg(z_q))``.
        codes : Tensor of int64, shape (B, N)
        """
        update = self.training if update is None else update
        z_e = self.encode(z)
        flat = z_e.reshape(-1, self.d_code)
        dev_type = z.device.type if z.device.type in ("cpu", "cuda", "mps", "xpu") else "cpu"
        with torch.autocast(device_type=dev_type, enabled=False):
            if update and not bool(self.initialised):
                self.init_codebook(flat)
            codes = self.lookup(flat)
            z_q = F.embedding(codes, self.codebook).view_as(z_e)
            loss = self.beta * F.mse_loss(z_e, z_q.detach())
            z_q = z_e + (z_q - z_e).detach()
            if update:
                self.ema_update(flat, codes)
        out = self.proj_out(self.norm(z_q))
        return out, loss, codes.view(z_e.shape[:-1])


class TimeRegressor(nn.Module):
    """Tokens back to the 16-d signal: 5 ``ConvTranspose1d`` (no activations) + ``Linear(16, 16)``.

    Filters ``[128, 128, 128, 128, 16]``, kernels ``[3, 3, 10, 9, 19]``, strides
    ``[1, 1, 10, 1, 10]``; each layer multiplies the length by its stride exactly (padding
    ``ceil((k - s) / 2)``, output padding ``2 * padding - (k - s)``), so ``N`` tokens give
    ``100 N`` samples: ``(B, N, 160) -> (B, 100 N, 16)``.
    """

    def __init__(self, d_model: int = D_MODEL, d_neural: int = D_NEURAL):
        super().__init__()
        layers = []
        cin = d_model
        for i, (f, k, s) in enumerate(zip(REGRESSOR_FILTERS, REGRESSOR_KERNELS,
                                          REGRESSOR_STRIDES), start=1):
            pad = math.ceil((k - s) / 2)
            layers.append((f"deconv{i}", nn.ConvTranspose1d(cin, f, k, stride=s, padding=pad,
                                                            output_padding=2 * pad - (k - s))))
            cin = f
        self.deconvs = nn.Sequential(OrderedDict(layers))
        self.linear = nn.Linear(REGRESSOR_FILTERS[-1], d_neural)
        _init_linear(self.linear)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(self.deconvs(h.transpose(1, 2)).transpose(1, 2))


# --------------------------------------------------------------------------------------------
# shared argument handling
# --------------------------------------------------------------------------------------------
def _resolve_subjects(n_chans: Any, subjects: Any, chs_info: Any, owner: str) -> dict[str, int]:
    if subjects is not None:
        if not isinstance(subjects, Mapping) or not subjects:
            raise TypeError(f"The 'subjects' parameter of {owner} must be a non-empty mapping "
                            f"subject name -> number of channels. Got {subjects!r:.80}.")
        out = {}
        for name, c in subjects.items():
            _check_subject_name(name, owner)
            validate_type(c, "int", f"subjects[{name!r}]", owner=owner)
            check_range(c, f"subjects[{name!r}]", low=1, owner=owner)
            out[name] = int(c)
        if n_chans is not None and n_chans != max(out.values()):
            raise ValueError(f"The 'n_chans' parameter of {owner} ({n_chans}) must be the widest "
                             f"subject's channel count ({max(out.values())}) when 'subjects' is "
                             "given (trials of narrower subjects are zero-padded).")
        return out
    return {"0": resolve_n_chans(n_chans, chs_info, owner,
                                 alternatives="n_chans, chs_info or subjects")}


def _check_signal(n_times: Any, sfreq: Any, owner: str) -> tuple[int, float | None]:
    if n_times is None:
        raise ValueError(f"{owner} needs the number of samples per trial: pass n_times.")
    validate_type(n_times, "int", "n_times", owner=owner)
    if n_times < PATCH_LEN or n_times % PATCH_LEN:
        raise ValueError(f"The 'n_times' parameter of {owner} must be a positive multiple of "
                         f"{PATCH_LEN} (100-sample tokens). Got {n_times}; crop the trials.")
    validate_type(sfreq, ("numeric", None), "sfreq", owner=owner)
    if sfreq is not None and float(sfreq) != SFREQ:
        raise ValueError(f"The 'sfreq' parameter of {owner} must be {SFREQ:g} Hz: the tokenizer "
                         f"cuts 100-sample (100 ms) patches. Got {sfreq}; resample the trials to "
                         "1000 Hz.")
    return int(n_times), None if sfreq is None else float(sfreq)


def _check_common(owner: str, tokenizer_activation: Any, dropout: Any, n_blocks: Any) -> None:
    check_option(tokenizer_activation, (None, "gelu"), "tokenizer_activation", owner=owner)
    validate_type(dropout, "numeric", "dropout", owner=owner)
    check_range(dropout, "dropout", low=0.0, high=1.0, high_inclusive=False, owner=owner)
    validate_type(n_blocks, "int", "n_blocks", owner=owner)
    check_range(n_blocks, "n_blocks", low=1, owner=owner)


class _DuINBase(nn.Module):
    """Argument checks and helpers shared by the three stages."""

    _OWNER = "DuIN"
    shared_modules: tuple[str, ...] = ()

    def _subject_codes(self, subject: Any, X: torch.Tensor) -> torch.Tensor | None:
        """Subject codes ``(B,)`` (or None for a one-subject model) from ``subject``."""
        names = self.encoder.subject.names
        B = X.shape[0]
        if subject is None:
            if len(names) > 1:
                raise ValueError(f"{type(self).__name__} holds {len(names)} subjects {names}: "
                                 "pass the subject of each trial (codes or a name).")
            return None
        if isinstance(subject, str):
            if subject not in names:
                raise ValueError(f"Unknown subject {subject!r} for {type(self).__name__}; its "
                                 f"subjects are {names}.")
            codes = torch.full((B,), names.index(subject), dtype=torch.long, device=X.device)
        elif isinstance(subject, (int, np.integer)) and not isinstance(subject, bool):
            codes = torch.full((B,), int(subject), dtype=torch.long, device=X.device)
        else:
            codes = torch.as_tensor(subject, device=X.device)
            if codes.is_floating_point():
                if not torch.equal(codes, codes.round()):
                    raise ValueError("Subject codes must be integers (the subject's position "
                                     f"in {names}).")
            codes = codes.long().reshape(-1)
            if codes.numel() != B:
                raise ValueError(f"Got {codes.numel()} subject codes for {B} trials.")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= len(names)):
            raise ValueError(f"Subject codes must be in [0, {len(names) - 1}] (subjects "
                             f"{names}). Got codes from {int(codes.min())} to "
                             f"{int(codes.max())}; for one-subject pre-training pass y=None or "
                             "zeros.")
        return None if len(names) == 1 else codes

    def _check_X(self, X: Any, *, exact_times: bool) -> torch.Tensor:
        if not isinstance(X, torch.Tensor):
            raise TypeError(f"{type(self).__name__} takes a torch.Tensor of trials (batch, "
                            f"channels, samples). Got {type(X).__name__}.")
        C = self.encoder.subject.n_chans
        ok = X.ndim == 3 and X.shape[1] == C
        if ok:
            T = X.shape[2]
            ok = (T == self.n_times) if exact_times else (
                PATCH_LEN <= T <= self.n_times and T % PATCH_LEN == 0)
        if not ok:
            want = (f"{self.n_times}" if exact_times
                    else f"a multiple of {PATCH_LEN} up to {self.n_times}")
            raise ValueError(f"{type(self).__name__} expects trials of shape (batch, {C}, T) with "
                             f"T = {want}. Got {tuple(X.shape)}.")
        return X

    @property
    def subjects(self) -> dict[str, int]:
        """Subject name -> channel count (codes are positions in this order)."""
        return dict(self.encoder.subject.subjects)

    def shared_parameter_names(self) -> list[str]:
        """Parameter names under :attr:`shared_modules` (everything but the subject layers;
        normalisation parameters are kept local by :mod:`bcikit.federated`)."""
        return [n for n, _ in self.named_parameters()
                if n.startswith(tuple(p + "." for p in self.shared_modules))
                or n in self.shared_modules]

    def count_parameters(self, mode: str = "used") -> int:
        """``"used"``: trainable parameters; ``"total"``: every parameter of the module."""
        check_option(mode, ("used", "total"), "mode",
                     owner=f"{type(self).__name__}.count_parameters")
        return int(sum(p.numel() for p in self.parameters() if mode == "total" or p.requires_grad))


# --------------------------------------------------------------------------------------------
# stage 1: VQ-VAE
# --------------------------------------------------------------------------------------------
@register_model("DuINVQVAE")
class DuINVQVAE(_DuINBase):
    """Stage 1 of Du-IN: the VQ-VAE neural tokenizer (spec §2.2).

    Encoder (subject layer, tokenizer, positions, ``n_blocks`` blocks) -> :class:`VectorQuantizer`
    -> decoder (positions + ``n_decoder_blocks`` blocks) -> :class:`TimeRegressor` -> per-subject
    ``Linear(16 -> C_s)``. Trained on 4 s crops (40 tokens) to reconstruct the (z-scored) input.

    Parameters
    ----------
    n_chans : int or None
        Channels of the (one) subject; with ``subjects``, the widest subject (or None).
    n_outputs : None
        Unused (pre-training has no classes); accepted for the common model signature.
    n_times : int
        Crop length in samples (4000: 40 tokens); shorter multiples of 100 are accepted too.
    sfreq : float or None
        Must be 1000 (or None).
    chs_info : list or None
        Channel descriptions (their number gives ``n_chans``).
    subjects : mapping str -> int or None
        Several subjects: name -> channel count (order = subject codes).
    tokenizer_activation : {None, "gelu"}
    n_codes, d_code : int
        Codebook size (2048) and code width (64).
    decay, beta : float
        EMA decay (0.99) and VQ loss weight (1).
    kmeans_iters : int
        k-means iterations of the codebook initialisation (10).
    n_blocks, n_decoder_blocks : int
        Encoder (8) and decoder (4) depth.
    dropout : float
        Attention-weight and FFN-hidden dropout (0.2).
    restart_dead_codes : int or None
        None (the spec): dead codes are only logged. An integer ``k``: a code unused for ``k``
        consecutive training steps is re-seeded from a random token's ``z_e`` (not in the spec;
        see :class:`VectorQuantizer` for why and what it changed on data with known structure).

    Attributes
    ----------
    last_losses : dict
        ``loss``, ``rec`` and ``vq`` (floats) of the last :meth:`training_loss`.
    config : dict
        The constructor arguments (plain types), saved with checkpoints.

    Notes
    -----
    Loss of a batch: ``rec + vq`` where ``rec`` is the mean over (trial, channel) pairs of the
    time-averaged squared error, counting only each trial's own channels (zero-padded channels
    of narrower subjects have weight 0), and ``vq`` is the quantiser's ``beta * MSE``.
    """

    _OWNER = "DuINVQVAE"
    shared_modules = ("encoder.tokenizer", "encoder.transformer", "quantizer", "decoder",
                      "regressor")

    def __init__(self, n_chans: int | None = None, n_outputs: int | None = None,
                 n_times: int = 4000, sfreq: float | None = SFREQ, chs_info: Any = None, *,
                 subjects: Mapping[str, int] | None = None,
                 tokenizer_activation: str | None = None, n_codes: int = 2048,
                 d_code: int = 64, decay: float = 0.99, beta: float = 1.0,
                 kmeans_iters: int = 10, n_blocks: int = 8, n_decoder_blocks: int = 4,
                 dropout: float = 0.2, restart_dead_codes: int | None = None):
        super().__init__()
        o = self._OWNER
        subj = _resolve_subjects(n_chans, subjects, chs_info, o)
        n_times, sfreq = _check_signal(n_times, sfreq, o)
        _check_common(o, tokenizer_activation, dropout, n_blocks)
        for name, val, low in (("n_codes", n_codes, 2), ("d_code", d_code, 1),
                               ("kmeans_iters", kmeans_iters, 1),
                               ("n_decoder_blocks", n_decoder_blocks, 1)):
            validate_type(val, "int", name, owner=o)
            check_range(val, name, low=low, owner=o)
        validate_type(decay, "numeric", "decay", owner=o)
        check_range(decay, "decay", low=0.0, high=1.0, high_inclusive=False, owner=o)
        validate_type(beta, "numeric", "beta", owner=o)
        check_range(beta, "beta", low=0.0, owner=o)
        validate_type(restart_dead_codes, ("int", None), "restart_dead_codes", owner=o)
        if restart_dead_codes is not None:
            check_range(restart_dead_codes, "restart_dead_codes", low=1, owner=o)
        self.n_times, self.sfreq = n_times, sfreq
        self.config = {"subjects": dict(subj), "n_times": n_times, "sfreq": sfreq,
                       "tokenizer_activation": tokenizer_activation, "n_codes": int(n_codes),
                       "d_code": int(d_code), "decay": float(decay), "beta": float(beta),
                       "kmeans_iters": int(kmeans_iters), "n_blocks": int(n_blocks),
                       "n_decoder_blocks": int(n_decoder_blocks), "dropout": float(dropout),
                       "restart_dead_codes": (None if restart_dead_codes is None
                                              else int(restart_dead_codes))}
        n_tokens = n_times // PATCH_LEN
        self.encoder = DuINEncoder(subj, n_tokens, n_blocks=n_blocks,
                                   tokenizer_activation=tokenizer_activation, dropout=dropout)
        self.quantizer = VectorQuantizer(n_codes=n_codes, d_code=d_code, decay=decay, beta=beta,
                                         kmeans_iters=kmeans_iters,
                                         restart_after=self.config["restart_dead_codes"])
        self.decoder = DuINTransformer(n_decoder_blocks, dropout=dropout)
        self.regressor = TimeRegressor()
        self.out_subject = SubjectLayer(subj, direction="out")
        self.last_losses: dict[str, float] = {}

    def _reconstruct(self, X: torch.Tensor, codes_s: torch.Tensor | None, *,
                     update: bool | None = None):
        h = self.encoder(X, codes_s)
        zq, vq_loss, codes = self.quantizer(h, update=update)
        d = self.decoder(self.encoder.add_positions(zq))
        X_rec = self.out_subject(self.regressor(d), codes_s)
        return X_rec, vq_loss, codes

    def forward(self, X: torch.Tensor, subject: Any = None) -> torch.Tensor:
        """Reconstruction ``(B, C, T)`` of trials ``X`` ``(B, C, T)`` (training mode updates the
        codebook, as in :meth:`training_loss`)."""
        X = self._check_X(X, exact_times=False)
        return self._reconstruct(X, self._subject_codes(subject, X))[0]

    def _channel_weights(self, X: torch.Tensor, codes_s: torch.Tensor | None) -> torch.Tensor:
        subj = self.encoder.subject
        counts = torch.tensor([subj.subjects[n] for n in subj.names], device=X.device)
        per_trial = counts[codes_s] if codes_s is not None else counts[:1].expand(X.shape[0])
        return (torch.arange(X.shape[1], device=X.device)[None, :]
                < per_trial[:, None]).to(torch.float32)

    def reconstruction_loss(self, X_rec: torch.Tensor, X: torch.Tensor,
                            weight: torch.Tensor) -> torch.Tensor:
        """Channel-weighted mean of the time-averaged squared error (float32)."""
        per = (X_rec.float() - X.float()).pow(2).mean(dim=2)  # (B, C)
        return (per * weight).sum() / (weight.sum() + 1e-12)

    def training_loss(self, X: torch.Tensor, y: Any = None) -> tuple[torch.Tensor, None]:
        """``(rec + vq, None)`` for a batch; ``y``: subject codes per crop (None: one subject)."""
        X = self._check_X(X, exact_times=False)
        codes_s = self._subject_codes(y, X)
        X_rec, vq_loss, _ = self._reconstruct(X, codes_s)
        rec = self.reconstruction_loss(X_rec, X, self._channel_weights(X, codes_s))
        loss = rec + vq_loss
        self.last_losses = {"loss": float(loss.detach()), "rec": float(rec.detach()),
                            "vq": float(vq_loss.detach())}
        return loss, None

    @torch.no_grad()
    def quantize(self, X: torch.Tensor, subject: Any = None) -> torch.Tensor:
        """Code indices ``(B, T // 100)`` of trials ``X``; never updates the codebook (batch
        norms follow the module's mode: call ``eval()`` first for frozen statistics)."""
        X = self._check_X(X, exact_times=False)
        h = self.encoder(X, self._subject_codes(subject, X))
        return self.quantizer.lookup(self.quantizer.encode(h))

    @torch.no_grad()
    def code_histogram(self, X: torch.Tensor, subject: Any = None, *,
                       batch_size: int = 64) -> np.ndarray:
        """Counts of each code over the tokens of ``X`` (eval mode; e.g. held-out crops)."""
        was = self.training
        self.eval()
        try:
            counts = torch.zeros(self.quantizer.n_codes, dtype=torch.long)
            for start in range(0, X.shape[0], batch_size):
                xb = X[start:start + batch_size]
                sb = subject[start:start + batch_size] if isinstance(
                    subject, (torch.Tensor, np.ndarray, list)) else subject
                c = self.quantize(xb, sb).reshape(-1).cpu()
                counts += torch.bincount(c, minlength=self.quantizer.n_codes)
        finally:
            self.train(was)
        return counts.numpy()

    def codebook_usage(self, threshold: float = 1e-3) -> dict[str, float]:
        """From the EMA counts: ``n_codes``, ``n_dead`` (EMA count < ``threshold``),
        ``used_fraction``, ``top_share`` (the largest count over the sum) and ``perplexity``
        (``exp`` of the entropy of the counts: the number of equally used codes that would give
        the same entropy; 1 = every token takes one code).

        Read ``top_share`` and ``perplexity`` for collapse. ``n_dead`` moves slowly: a code
        chosen once by the first batch starts at an EMA count of about 0.01, which falls by
        1 % per unused step and crosses ``threshold`` only after about 230 steps. In session
        12 a 40-epoch pre-training (160 steps) used 2 codes on held-out crops while
        ``used_fraction`` read 0.60."""
        n_dead = self.quantizer.dead_codes(threshold)
        n = self.quantizer.n_codes
        counts = self.quantizer.cluster_size.detach().double().cpu()
        total = float(counts.sum())
        if total > 0:
            p = counts[counts > 0] / total
            top, perplexity = float(p.max()), float(torch.exp(-(p * p.log()).sum()))
        else:  # before the first training step
            top, perplexity = float("nan"), float("nan")
        return {"n_codes": n, "n_dead": n_dead, "used_fraction": (n - n_dead) / n,
                "top_share": top, "perplexity": perplexity}


# --------------------------------------------------------------------------------------------
# stage 2: masked code modelling
# --------------------------------------------------------------------------------------------
@register_model("DuINMAE")
class DuINMAE(_DuINBase):
    """Stage 2 of Du-IN: masked code modelling against a frozen VQ-VAE (spec §2.3).

    A freshly initialised encoder (not copied from the VQ-VAE) sees two views of each crop:
    after the tokenizer, the masked tokens are replaced by a learnable 160-d mask token
    (trunc-normal, std 0.02) before the positions are added. View 1 masks a random half of the
    tokens (``floor(N (1 - mask_ratio))`` kept per sample), view 2 the complement. A
    ``Linear(160 -> n_codes)`` head predicts each token's VQ-VAE code from the view in which it
    is masked; the loss is the cross-entropy over all ``N`` tokens.

    Parameters
    ----------
    n_chans, n_outputs, n_times, sfreq, chs_info
        As :class:`DuINVQVAE`; ``n_chans``/``subjects`` default to the VQ-VAE's and must match it.
    vqvae : DuINVQVAE or dict
        The trained stage-1 model (a frozen copy is kept, always in eval mode, saved in this
        model's state dict as ``vqvae.*``), or its ``config`` (when rebuilding from a
        checkpoint).
    subjects : mapping or None
    mask_ratio : float
        0.5.
    tokenizer_activation, n_blocks, dropout
        Encoder options (defaults: None, 8, 0.2).

    Attributes
    ----------
    last_losses : dict
        ``loss``, ``accuracy`` (top-1 of the predicted codes, all tokens) and ``majority`` (the
        rate of the batch's most frequent code) of the last :meth:`training_loss`.
    """

    _OWNER = "DuINMAE"
    shared_modules = ("encoder.tokenizer", "encoder.transformer", "mask_token", "head")

    def __init__(self, n_chans: int | None = None, n_outputs: int | None = None,
                 n_times: int | None = None, sfreq: float | None = SFREQ, chs_info: Any = None,
                 *, vqvae: DuINVQVAE | Mapping[str, Any] | None = None,
                 subjects: Mapping[str, int] | None = None, mask_ratio: float = 0.5,
                 tokenizer_activation: str | None = None, n_blocks: int = 8,
                 dropout: float = 0.2):
        super().__init__()
        o = self._OWNER
        if vqvae is None:
            raise ValueError(f"{o} needs the trained VQ-VAE: pass vqvae=DuINVQVAE(...) (or its "
                             "config when rebuilding from a checkpoint).")
        if isinstance(vqvae, Mapping):
            vqvae = DuINVQVAE(**dict(vqvae))
        if not isinstance(vqvae, DuINVQVAE):
            raise TypeError(f"The 'vqvae' parameter of {o} must be a DuINVQVAE or its config "
                            f"dict. Got {type(vqvae).__name__}.")
        if subjects is None and n_chans is None and chs_info is None:
            subjects = vqvae.subjects
        subj = _resolve_subjects(n_chans, subjects, chs_info, o)
        if subj != vqvae.subjects:
            raise ValueError(f"The subjects of {o} {subj} differ from those of its VQ-VAE "
                             f"{vqvae.subjects}; the VQ-VAE must tokenize every crop.")
        n_times = vqvae.n_times if n_times is None else n_times
        n_times, sfreq = _check_signal(n_times, sfreq, o)
        if n_times > vqvae.n_times:
            raise ValueError(f"The 'n_times' parameter of {o} ({n_times}) exceeds the VQ-VAE's "
                             f"crop length ({vqvae.n_times}).")
        _check_common(o, tokenizer_activation, dropout, n_blocks)
        validate_type(mask_ratio, "numeric", "mask_ratio", owner=o)
        check_range(mask_ratio, "mask_ratio", low=0.0, high=1.0, low_inclusive=False,
                    high_inclusive=False, owner=o)
        self.n_times, self.sfreq = n_times, sfreq
        self.mask_ratio = float(mask_ratio)
        self.config = {"subjects": dict(subj), "n_times": n_times, "sfreq": sfreq,
                       "vqvae": dict(vqvae.config), "mask_ratio": float(mask_ratio),
                       "tokenizer_activation": tokenizer_activation, "n_blocks": int(n_blocks),
                       "dropout": float(dropout)}
        self.encoder = DuINEncoder(subj, n_times // PATCH_LEN, n_blocks=n_blocks,
                                   tokenizer_activation=tokenizer_activation, dropout=dropout)
        self.mask_token = nn.Parameter(torch.empty(D_MODEL))
        _trunc_normal_(self.mask_token)
        self.head = nn.Linear(D_MODEL, vqvae.quantizer.n_codes)
        _init_linear(self.head)
        self.vqvae = copy.deepcopy(vqvae)  # a frozen copy: the caller's model is not touched
        self.vqvae.requires_grad_(False)
        self.vqvae.eval()
        self.last_losses: dict[str, float] = {}

    def train(self, mode: bool = True) -> "DuINMAE":
        super().train(mode)
        self.vqvae.eval()  # the targets come from the frozen tokenizer in eval mode
        return self

    @torch.no_grad()
    def targets(self, X: torch.Tensor, codes_s: torch.Tensor | None) -> torch.Tensor:
        """The frozen VQ-VAE's codes ``(B, N)`` of ``X``."""
        if not bool(self.vqvae.quantizer.initialised):
            raise ValueError("The VQ-VAE of DuINMAE has never been trained (its codebook was "
                             "never initialised): train it first or load its checkpoint.")
        self.vqvae.eval()
        h = self.vqvae.encoder(X, codes_s)
        return self.vqvae.quantizer.lookup(self.vqvae.quantizer.encode(h))

    def view_logits(self, X: torch.Tensor, mask: torch.Tensor, subject: Any = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Code logits of both views and the combined prediction.

        Parameters
        ----------
        X : Tensor (B, C, T)
        mask : Tensor of bool (B, N)
            True where view 1 masks a token (view 2 masks ``~mask``).

        Returns
        -------
        logits1, logits2, logits : Tensor (B, N, n_codes)
            ``logits[b, n]`` is ``logits1[b, n]`` where ``mask[b, n]``, else ``logits2[b, n]``.
        """
        X = self._check_X(X, exact_times=False)
        codes_s = self._subject_codes(subject, X)
        return self._view_logits(X, mask, codes_s)

    def _view_logits(self, X, mask, codes_s):
        tok = self.encoder.tokens(X, codes_s)
        if mask.shape != tok.shape[:2]:
            raise ValueError(f"The mask has shape {tuple(mask.shape)}; expected "
                             f"{tuple(tok.shape[:2])} (batch, tokens).")
        m = mask[..., None]
        mt = self.mask_token.to(tok.dtype)
        view1 = torch.where(m, mt, tok)
        view2 = torch.where(m, tok, mt)
        h = self.encoder.transform(torch.cat([view1, view2]))
        logits1, logits2 = self.head(h).chunk(2)
        return logits1, logits2, torch.where(m, logits1, logits2)

    def training_loss(self, X: torch.Tensor, y: Any = None, *,
                      mask: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        """Cross-entropy over all tokens; ``y``: subject codes per crop (None: one subject);
        ``mask``: a fixed view-1 mask (default: :func:`complementary_masks`)."""
        X = self._check_X(X, exact_times=False)
        codes_s = self._subject_codes(y, X)
        target = self.targets(X, codes_s)
        if mask is None:
            mask = complementary_masks(X.shape[0], target.shape[1], self.mask_ratio,
                                       device=X.device)
        *_, logits = self._view_logits(X, mask.to(X.device), codes_s)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1))
        with torch.no_grad():
            acc = (logits.argmax(-1) == target).float().mean()
            majority = torch.bincount(target.reshape(-1)).max().float() / target.numel()
        self.last_losses = {"loss": float(loss.detach()), "accuracy": float(acc),
                            "majority": float(majority)}
        return loss, None

    @torch.no_grad()
    def score_codes(self, X: torch.Tensor, subject: Any = None, *, seed: int = 0,
                    batch_size: int = 64) -> dict[str, float]:
        """Masked-code top-1 accuracy and majority-code rate on ``X`` (eval mode, seeded masks)."""
        was = self.training
        self.eval()
        gen = torch.Generator().manual_seed(seed)
        correct = total = 0
        counts = torch.zeros(self.head.out_features, dtype=torch.long)
        try:
            for start in range(0, X.shape[0], batch_size):
                xb = self._check_X(X[start:start + batch_size], exact_times=False)
                sb = subject[start:start + batch_size] if isinstance(
                    subject, (torch.Tensor, np.ndarray, list)) else subject
                codes_s = self._subject_codes(sb, xb)
                target = self.targets(xb, codes_s)
                mask = complementary_masks(xb.shape[0], target.shape[1], self.mask_ratio,
                                           generator=gen).to(xb.device)
                *_, logits = self._view_logits(xb, mask, codes_s)
                correct += int((logits.argmax(-1) == target).sum())
                total += target.numel()
                counts += torch.bincount(target.reshape(-1).cpu(), minlength=len(counts))
        finally:
            self.train(was)
        return {"accuracy": correct / total, "majority": float(counts.max()) / total}

    def count_parameters(self, mode: str = "used") -> int:
        """``"used"``: trainable parameters (the VQ-VAE is frozen); ``"total"``: all."""
        return super().count_parameters(mode)


# --------------------------------------------------------------------------------------------
# stage 3: classifier
# --------------------------------------------------------------------------------------------
@register_model("DuIN")
class DuIN(_DuINBase):
    """Du-IN word classifier (spec §2.1, §2.4).

    Encoder (subject layer ``Linear(C -> 16)``, linear patch tokenizer, sinusoidal positions,
    8 post-norm blocks) -> flatten ``N x 160`` -> ``Linear(160 N -> 128)`` -> ReLU ->
    ``Linear(128 -> n_outputs)``. ``DuIN(n_chans=10, n_outputs=61, n_times=3000, sfreq=1000)``
    is the reference configuration (30 tokens).

    Parameters
    ----------
    n_chans : int or None
        Number of contacts (inferred from ``chs_info`` when None).
    n_outputs : int
        Number of words (61).
    n_times : int
        Samples per trial (3000 = 3 s at 1000 Hz); a multiple of 100.
    sfreq : float or None
        Must be 1000 (or None).
    chs_info : list or None
    tokenizer_activation : {None, "gelu"}
        None (the official, linear tokenizer) or a GELU after each tokenizer batch norm.
    official_quirks : bool
        Apply the official code's sigmoid to the outputs before the cross-entropy (caps the
        softmax confidence at e/(e+60) ~ 4.3 % for 61 words). Default False: CE on raw logits.
    max_shift : int or None
        Training-time random shift in ``[-max_shift, max_shift]`` samples, zero-filled. None:
        300 (0.3 s, the spec), or ``n_times // 2`` for trials shorter than 600 samples.
    n_blocks : int
        Encoder depth (8).
    dropout : float
        Attention-weight and FFN-hidden dropout (0.2).

    Notes
    -----
    :meth:`training_loss` (used by :class:`bcikit.train.Trainer` for training steps) shifts each
    trial at random, then takes the cross-entropy; :meth:`forward` never shifts (validation,
    test and prediction).

    ``count_parameters("used")`` counts the trainable parameters (4,182,813 in the reference
    configuration); ``count_parameters("official")`` adds what the official model also
    registers as parameters but bcikit does not build or keeps as constants: the sinusoidal
    table (``N x 160``), the fixed attention scale of each block, the unused VQ block of the
    classifier (:class:`VectorQuantizer` with its codebook, EMA counts and flag) and the
    contrastive projection (weight 0 in the loss: two ``Linear(160 -> 32)`` and a temperature);
    4,377,639 in the reference configuration (the paper's 4.38 M).

    The subject layer is local to a site when federating; everything else is shared
    (:attr:`shared_modules`).

    Examples
    --------
    >>> model = DuIN(n_chans=10, n_outputs=61, n_times=3000, sfreq=1000)  # doctest: +SKIP
    >>> model.count_parameters("official"), model.count_parameters("used")  # doctest: +SKIP
    (4377639, 4182813)
    """

    _OWNER = "DuIN"
    shared_modules = ("encoder.tokenizer", "encoder.transformer", "head")

    def __init__(self, n_chans: int | None = None, n_outputs: int | None = 61,
                 n_times: int | None = 3000, sfreq: float | None = SFREQ, chs_info: Any = None,
                 *, tokenizer_activation: str | None = None, official_quirks: bool = False,
                 max_shift: int | None = None, n_blocks: int = 8, dropout: float = 0.2):
        super().__init__()
        o = self._OWNER
        subj = _resolve_subjects(n_chans, None, chs_info, o)
        if n_outputs is None:
            raise ValueError(f"{o} needs the number of classes: pass n_outputs.")
        validate_type(n_outputs, "int", "n_outputs", owner=o)
        check_range(n_outputs, "n_outputs", low=2, owner=o)
        n_times, sfreq = _check_signal(n_times, sfreq, o)
        _check_common(o, tokenizer_activation, dropout, n_blocks)
        validate_type(official_quirks, bool, "official_quirks", owner=o)
        if max_shift is None:
            max_shift = min(DEFAULT_MAX_SHIFT, n_times // 2)
        validate_type(max_shift, "int", "max_shift", owner=o)
        check_range(max_shift, "max_shift", low=0, high=n_times - 1, owner=o)
        self.n_chans = subj["0"]
        self.n_outputs = int(n_outputs)
        self.n_times, self.sfreq = n_times, sfreq
        self.official_quirks = official_quirks
        self.max_shift = int(max_shift)
        self.config = {"n_chans": self.n_chans, "n_outputs": self.n_outputs, "n_times": n_times,
                       "sfreq": sfreq, "tokenizer_activation": tokenizer_activation,
                       "official_quirks": official_quirks, "max_shift": self.max_shift,
                       "n_blocks": int(n_blocks), "dropout": float(dropout)}
        n_tokens = n_times // PATCH_LEN
        self.encoder = DuINEncoder(subj, n_tokens, n_blocks=n_blocks,
                                   tokenizer_activation=tokenizer_activation, dropout=dropout)
        self.head = nn.Sequential(OrderedDict([
            ("flatten", nn.Flatten()), ("fc1", nn.Linear(n_tokens * D_MODEL, D_HIDDEN)),
            ("act", nn.ReLU()), ("fc2", nn.Linear(D_HIDDEN, self.n_outputs))]))
        for m in self.head.modules():
            if isinstance(m, nn.Linear):
                _init_linear(m)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Class scores ``(B, n_outputs)`` of trials ``(B, C, T)``: logits, or their sigmoid
        with ``official_quirks=True``."""
        X = self._check_X(X, exact_times=True)
        z = self.head(self.encoder(X))
        return torch.sigmoid(z) if self.official_quirks else z

    def training_loss(self, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Random shift (zero-filled, per trial), then cross-entropy against class codes ``y``."""
        X = self._check_X(X, exact_times=True)
        if y is None:
            raise ValueError("DuIN.training_loss needs the class codes y.")
        if self.max_shift > 0:
            X, _ = random_shift(X, self.max_shift)
        out = self(X)
        if int(y.max()) >= self.n_outputs or int(y.min()) < 0:
            raise ValueError(f"'y' holds class codes outside [0, {self.n_outputs - 1}] "
                             f"(DuIN has n_outputs={self.n_outputs}).")
        return F.cross_entropy(out.float(), y.long()), out

    # -------------------------------------------------------------- channels
    @property
    def subject_layer(self) -> nn.Linear:
        """The ``Linear(C -> 16)`` subject layer (weight ``(16, C)``)."""
        return self.encoder.subject.layers["0"]

    def channel_weights(self, subject: str | None = None) -> np.ndarray:
        """The subject layer's weight ``(16, C)`` as a NumPy array (column ``c``: channel ``c``)."""
        if subject not in (None, "0"):
            raise ValueError(f"DuIN holds one subject; got subject={subject!r}.")
        return self.subject_layer.weight.detach().cpu().numpy().copy()

    def channel_contributions(self, subject: str | None = None) -> np.ndarray:
        """Contribution of each input channel ``(C,)``: mean ``|W|`` over its 16 weights."""
        return np.abs(self.channel_weights(subject)).mean(axis=0)

    # -------------------------------------------------------------- counts
    def count_parameters(self, mode: str = "used") -> int:
        """``"used"`` (trainable), ``"total"`` (every parameter of this module) or
        ``"official"`` (what the official classifier registers; see the class notes)."""
        check_option(mode, ("used", "total", "official"), "mode",
                     owner="DuIN.count_parameters")
        if mode != "official":
            return super().count_parameters(mode)
        used = super().count_parameters("used")
        n_blocks = len(self.encoder.transformer.blocks)
        fixed = self.encoder.positions.numel() + n_blocks  # table + one scale per block
        # the parts bcikit does not build into the classifier, built here only to be counted
        # (a few milliseconds; the meta device costs seconds on first use)
        vq = VectorQuantizer()
        contra = nn.ModuleList([nn.Linear(D_MODEL, OFFICIAL_D_CONTRA) for _ in range(2)])
        vq_count = (sum(p.numel() for p in vq.parameters())
                    + sum(b.numel() for b in vq.buffers()))
        contra_count = sum(p.numel() for p in contra.parameters()) + 1  # + temperature
        return int(used + fixed + vq_count + contra_count)

    # -------------------------------------------------------------- pre-trained weights
    def load_pretrained(self, source: Any, *, subject: str | None = None) -> list[str]:
        """Copy the subject layer, tokenizer and Transformer from a pre-trained stage.

        Parameters
        ----------
        source : DuINVQVAE, DuINMAE, path-like or dict
            A model, a file written by :func:`save_duin`, such a checkpoint already loaded, or
            a bare state dict of a stage model.
        subject : str or None
            Which subject of a multi-subject source to take; None: its only subject.

        Returns
        -------
        keys : list of str
            The state-dict keys of this model that were overwritten (``encoder.subject.*``,
            ``encoder.tokenizer.*`` including batch-norm statistics, ``encoder.transformer.*``).
            The head stays as initialised.

        Raises
        ------
        ValueError
            For an unknown or ambiguous subject, a different channel count, a different
            tokenizer, a different depth, or a source without an encoder.
        """
        state, cfg, what = _source_state(source)
        if cfg is not None and cfg.get("tokenizer_activation") != self.config[
                "tokenizer_activation"]:
            raise ValueError(f"{what} was trained with tokenizer_activation="
                             f"{cfg.get('tokenizer_activation')!r}; this DuIN has "
                             f"{self.config['tokenizer_activation']!r}.")
        prefix = "encoder.subject.layers."
        names = sorted({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})
        if not names:
            raise ValueError(f"{what} holds no encoder subject layer (keys 'encoder.subject.*'); "
                             "is it a DuINVQVAE or DuINMAE?")
        if subject is None:
            if len(names) > 1:
                raise ValueError(f"{what} holds {len(names)} subjects {names}: pass subject=.")
            subject = names[0]
        elif subject not in names:
            raise ValueError(f"Subject {subject!r} is not in {what}; its subjects are {names}.")
        own = self.state_dict()
        new: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            if key.startswith(f"{prefix}{subject}."):
                target = f"{prefix}0." + key[len(f"{prefix}{subject}."):]
            elif key.startswith(("encoder.tokenizer.", "encoder.transformer.")):
                target = key
            else:
                continue
            if target not in own:
                raise ValueError(f"{what} has {key!r}, which this DuIN does not have (different "
                                 "depth or tokenizer?).")
            if own[target].shape != value.shape:
                raise ValueError(f"{what}: {key!r} has shape {tuple(value.shape)} but this DuIN's "
                                 f"{target!r} has {tuple(own[target].shape)} (channels: "
                                 f"{self.n_chans} here).")
            new[target] = value
        expected = [k for k in own if k.startswith(("encoder.subject.", "encoder.tokenizer.",
                                                    "encoder.transformer."))]
        missing = sorted(set(expected) - set(new))
        if missing:
            raise ValueError(f"{what} lacks {len(missing)} encoder tensors of this DuIN, e.g. "
                             f"{missing[:3]} (different depth?).")
        with torch.no_grad():
            for k, v in new.items():
                own[k].copy_(v.to(own[k].device, own[k].dtype))
        logger.info("DuIN: loaded %d encoder tensors of subject %r from %s.", len(new), subject,
                    what)
        return sorted(new)


# --------------------------------------------------------------------------------------------
# Trainer glue, checkpoints, monitoring
# --------------------------------------------------------------------------------------------
def stage_loss(model: nn.Module, X: torch.Tensor, y: torch.Tensor | None
               ) -> tuple[torch.Tensor, Any]:
    """``model.training_loss(X, y)``: the ``loss=`` of :class:`bcikit.train.Trainer` for the
    pre-training stages (the same objective then serves as the validation loss)."""
    return model.training_loss(X, y)


class CodebookMonitor:
    """Trainer callback that logs the VQ-VAE's dead codes after every epoch.

    ``history_`` gets one ``{"epoch", "n_dead", "used_fraction", "top_share", "perplexity",
    "n_restarted"}`` row per epoch (see :meth:`DuINVQVAE.codebook_usage`; ``n_restarted``:
    codes re-seeded so far, 0 unless the quantiser's ``restart_after`` is set). A warning is
    logged the first time one code holds more than half of the EMA counts (a collapsed
    codebook: every token gets nearly the same code, and the decoder can only reconstruct a
    constant).
    """

    def __init__(self, threshold: float = 1e-3):
        self.threshold = threshold
        self.history_: list[dict[str, float]] = []
        self._warned = False

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict) -> None:
        model = trainer.model
        vq = model.vqvae if isinstance(model, DuINMAE) else model
        usage = vq.codebook_usage(self.threshold)
        self.history_.append({"epoch": epoch, "n_dead": usage["n_dead"],
                              "used_fraction": usage["used_fraction"],
                              "top_share": usage["top_share"],
                              "perplexity": usage["perplexity"],
                              "n_restarted": vq.quantizer.n_restarted})
        logger.info("epoch %d: %d of %d codes dead (EMA count < %g), top code %.1f %%, "
                    "perplexity %.1f", epoch, usage["n_dead"], usage["n_codes"], self.threshold,
                    100 * usage["top_share"], usage["perplexity"])
        if usage["top_share"] > 0.5 and not self._warned:
            self._warned = True
            logger.warning("Du-IN VQ-VAE, epoch %d: one code holds %.0f %% of the EMA counts "
                           "(perplexity %.1f of %d codes); the codebook has collapsed. Without "
                           "restarts it rarely recovers; bcikit's opt-in "
                           "restart_dead_codes (e.g. [pretrain.vqvae_params] "
                           "restart_dead_codes = 10, not in the spec) re-seeds unused codes.",
                           epoch, 100 * usage["top_share"], usage["perplexity"],
                           usage["n_codes"])


_CLASSES = {"DuIN": DuIN, "DuINVQVAE": DuINVQVAE, "DuINMAE": DuINMAE}


def _source_state(source: Any) -> tuple[Mapping[str, torch.Tensor], dict | None, str]:
    if isinstance(source, (DuINVQVAE, DuINMAE, DuIN)):
        return source.state_dict(), dict(source.config), type(source).__name__
    if isinstance(source, (str, os.PathLike)):
        ckpt = _read_checkpoint(source)
        return ckpt["state_dict"], ckpt["config"], f"checkpoint {str(source)!r}"
    if isinstance(source, Mapping):
        if "state_dict" in source:
            return source["state_dict"], source.get("config"), "the checkpoint dict"
        if source and all(isinstance(v, torch.Tensor) for v in source.values()):
            return source, None, "the state dict"
    raise TypeError("The pre-trained source must be a DuINVQVAE/DuINMAE, a checkpoint path, a "
                    f"checkpoint dict or a state dict. Got {type(source).__name__}.")


def save_duin(model: nn.Module, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``{"format", "class", "config", "state_dict"}`` (plain types and tensors only).

    Raises
    ------
    FileExistsError
        When ``path`` exists and ``overwrite`` is False.
    """
    from ..train.checkpoint import save_checkpoint

    if type(model).__name__ not in _CLASSES or not isinstance(model, _DuINBase):
        raise TypeError(f"save_duin saves DuIN, DuINVQVAE or DuINMAE models. Got "
                        f"{type(model).__name__}.")
    validate_type(path, "path-like", "path", owner="save_duin")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"The checkpoint {str(path)!r} already exists; pass overwrite=True "
                              "or choose another path.")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_checkpoint({"format": _CHECKPOINT_FORMAT, "class": type(model).__name__,
                            "config": _plain(model.config), "state_dict": state}, path)


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _read_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"The Du-IN checkpoint {str(path)!r} does not exist.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling errors come in many types
        raise ValueError(f"{str(path)!r} is not a readable Du-IN checkpoint: {err}") from None
    if not (isinstance(ckpt, dict) and {"class", "config", "state_dict"} <= set(ckpt)
            and ckpt["class"] in _CLASSES):
        raise ValueError(f"{str(path)!r} is not a Du-IN checkpoint written by save_duin (needs "
                         "'class', 'config' and 'state_dict').")
    return ckpt


def load_duin(path: str | os.PathLike) -> nn.Module:
    """Rebuild the model saved by :func:`save_duin` (on the CPU) from its config and weights."""
    ckpt = _read_checkpoint(path)
    cls = _CLASSES[ckpt["class"]]
    model = cls(**ckpt["config"])
    state = ckpt["state_dict"]
    model.load_state_dict(state)
    return model
