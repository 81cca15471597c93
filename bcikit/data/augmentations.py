"""Augmented views of EEG trials for multi-view training (MVCNet, ``specs/mvcnet.md`` §3).

Two layers, as in braindecode:

* a **functional core** of pure tensor functions on batches ``X`` of shape
  ``(batch, n_chans, n_times)``: :func:`flip`, :func:`scale`, :func:`noise`, :func:`fshift`,
  :func:`fsurr`, :func:`cr` and :func:`hs`. They never modify their input, keep its dtype and
  device, and keep row ``i`` of the output the transform of trial ``i``;
* thin **stateful wrappers** (:class:`Flip`, :class:`Scale`, :class:`Noise`,
  :class:`FrequencyShift`, :class:`FTSurrogate`, :class:`ChannelReflection`,
  :class:`HemisphereSwap`) that hold the context a view needs (sampling rate, channel names,
  class names, random generator) and are called as ``view(X, y) -> (X_view, y_view)``.
  :data:`VIEWS` maps the short names to them and :func:`make_view` builds one by name.

Channel reflection and hemisphere swap pair electrodes from their 10-20 / 10-10 / 10-05 names
(:func:`mirror_pairs`); reflection also mirrors the labels (:func:`mirror_label_map`).

Random views draw from torch's global generator of the data's device unless given a
``generator`` (functional core) or a ``seed`` (wrappers). The global generator is what
:func:`bcikit.train.set_seed` seeds and what the Trainer's checkpoints capture, so training with
random views stays reproducible and resumable.

This module imports torch; ``import bcikit.data`` does not import it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from ..utils import check_option, check_range, validate_type

__all__ = [
    "flip", "scale", "noise", "fshift", "fsurr", "cr", "hs",
    "mirror_pairs", "mirror_label_map", "hemisphere_indices",
    "View", "Flip", "Scale", "Noise", "FrequencyShift", "FTSurrogate", "ChannelReflection",
    "HemisphereSwap", "VIEWS", "make_view", "REFERENCE_FSHIFT_STEP",
]

#: Time step (seconds) the official MVCNet code hard-codes in its frequency shift
#: (``reference_quirks=True`` of :func:`fshift`).
REFERENCE_FSHIFT_STEP = 1.0 / 250.0


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _check_batch(X: Any, owner: str) -> torch.Tensor:
    if not isinstance(X, torch.Tensor):
        raise TypeError(f"{owner} needs a torch.Tensor of shape (batch, n_chans, n_times). "
                        f"Got {type(X).__name__}.")
    if X.ndim != 3:
        raise ValueError(f"{owner} needs X of shape (batch, n_chans, n_times). "
                         f"Got shape {tuple(X.shape)}.")
    if not X.is_floating_point():
        raise TypeError(f"{owner} needs floating-point X. Got dtype {X.dtype}.")
    return X


def _check_labels(y: Any, n: int, owner: str) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{owner} needs y as a torch.Tensor of integer class codes. "
                        f"Got {type(y).__name__}.")
    if y.ndim != 1 or y.shape[0] != n or y.is_floating_point():
        raise ValueError(f"{owner} needs y as a 1-D tensor of {n} integer class codes. "
                         f"Got dtype {y.dtype}, shape {tuple(y.shape)}.")
    return y


def _compute_dtype(X: torch.Tensor) -> torch.dtype:
    # FFTs run in at least float32 (half-precision FFTs are restricted to powers of two on CUDA)
    return torch.float64 if X.dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------------------------
# functional core: time domain
# --------------------------------------------------------------------------------------------
def flip(X: torch.Tensor) -> torch.Tensor:
    """Sign flip ``x -> -x`` (time-domain view; labels kept).

    Parameters
    ----------
    X : Tensor, shape (batch, n_chans, n_times)

    Returns
    -------
    Tensor, same shape, dtype and device
    """
    return -_check_batch(X, "flip")


def scale(X: torch.Tensor, factor: float = 0.8) -> torch.Tensor:
    """Amplitude scaling ``x -> factor * x`` (the spec's "scale, parameter 0.2": ``1 - 0.2``).

    Parameters
    ----------
    X : Tensor, shape (batch, n_chans, n_times)
    factor : float
        Multiplier (> 0), 0.8 by default.
    """
    _check_batch(X, "scale")
    validate_type(factor, "numeric", "factor", owner="scale")
    check_range(factor, "factor", low=0, low_inclusive=False, owner="scale")
    return X * factor


def noise(X: torch.Tensor, scale: float = 1.0, *,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """Additive uniform noise scaled by each trial's standard deviation.

    ``x + scale * U(-0.5, 0.5) * std(trial)``, with an independent draw for every sample of
    every channel and ``std(trial)`` the (population) standard deviation over all channels and
    samples of that trial. ``scale = 1`` is the setting the official code runs with (it
    overwrites its own parameter with 1); here the parameter is honoured.

    Parameters
    ----------
    X : Tensor, shape (batch, n_chans, n_times)
    scale : float
        Noise amplitude relative to the trial's standard deviation (>= 0).
    generator : torch.Generator or None
        On ``X``'s device; ``None`` uses torch's global generator.
    """
    _check_batch(X, "noise")
    validate_type(scale, "numeric", "scale", owner="noise")
    check_range(scale, "scale", low=0, owner="noise")
    dt = _compute_dtype(X)
    x = X.to(dt)
    std = x.std(dim=(1, 2), correction=0, keepdim=True)
    u = torch.rand(X.shape, generator=generator, device=X.device, dtype=dt) - 0.5
    return (x + scale * u * std).to(X.dtype)


# --------------------------------------------------------------------------------------------
# functional core: frequency domain
# --------------------------------------------------------------------------------------------
def _next_pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def fshift(X: torch.Tensor, sfreq: float, delta_f: float = 0.1, *,
           reference_quirks: bool = False) -> torch.Tensor:
    """Frequency shift by ``delta_f`` Hz through the analytic signal.

    Each channel is zero-padded to the next power of two ``N >= n_times``, turned into its
    analytic signal with the FFT Hilbert transform (the spectrum weighted by 1 at DC and, for
    even ``N``, at Nyquist, 2 on positive and 0 on negative frequencies), multiplied by
    ``exp(i 2 pi delta_f n / sfreq)`` for ``n = 0..N-1``, and the real part of the first
    ``n_times`` samples is returned. A sinusoid of frequency ``f`` comes out at ``f + delta_f``.

    Parameters
    ----------
    X : Tensor, shape (batch, n_chans, n_times)
    sfreq : float
        The true sampling rate of ``X`` in Hz.
    delta_f : float
        Shift in Hz (+0.1 by default; negative values shift down).
    reference_quirks : bool
        Use the official code's hard-coded time step of 1/250 s whatever ``sfreq`` is (at 512 Hz
        a ``delta_f`` of 0.1 Hz then shifts by 0.2048 Hz). For comparison runs only.

    Returns
    -------
    Tensor, same shape, dtype and device
    """
    _check_batch(X, "fshift")
    validate_type(sfreq, "numeric", "sfreq", owner="fshift")
    check_range(sfreq, "sfreq", low=0, low_inclusive=False, owner="fshift")
    validate_type(delta_f, "numeric", "delta_f", owner="fshift")
    validate_type(reference_quirks, bool, "reference_quirks", owner="fshift")
    n_times = X.shape[-1]
    n_fft = _next_pow2(n_times)
    dt = _compute_dtype(X)
    spec = torch.fft.fft(X.to(dt), n=n_fft, dim=-1)
    h = torch.zeros(n_fft, dtype=dt, device=X.device)
    h[0] = 1.0
    if n_fft % 2 == 0:
        h[n_fft // 2] = 1.0
        h[1:n_fft // 2] = 2.0
    else:
        h[1:(n_fft + 1) // 2] = 2.0
    analytic = torch.fft.ifft(spec * h, dim=-1)[..., :n_times]
    step = REFERENCE_FSHIFT_STEP if reference_quirks else 1.0 / float(sfreq)
    # the phase ramp is built in float64 on the CPU (exact for long windows, any device)
    phase = 2.0 * math.pi * float(delta_f) * step * torch.arange(n_times, dtype=torch.float64)
    ramp = torch.polar(torch.ones_like(phase), phase).to(device=X.device,
                                                         dtype=analytic.dtype)
    return (analytic * ramp).real.to(X.dtype)


def _surrogate_phase(batch: int, n: int, magnitude: float, *, generator, device,
                     dtype: torch.dtype) -> torch.Tensor:
    """Antisymmetric random phase (zero at DC and Nyquist) of shape (batch, 1, n)."""
    n_pos = (n - 1) // 2  # strictly positive frequencies below Nyquist
    u = torch.rand((batch, 1, n_pos), generator=generator, device=device, dtype=dtype)
    pos = magnitude * 2.0 * math.pi * u
    zero = torch.zeros((batch, 1, 1), device=device, dtype=dtype)
    parts = [zero, pos]
    if n % 2 == 0:
        parts.append(zero)  # Nyquist
    parts.append(-torch.flip(pos, dims=[-1]))
    return torch.cat(parts, dim=-1)


def fsurr(X: torch.Tensor, magnitude: float = 0.5, *,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """Fourier-transform surrogate: randomise the phases, keep the amplitude spectrum.

    For each trial one random phase ``phi_k = magnitude * 2 pi * U(0, 1)`` is drawn per
    positive frequency ``k`` (the negative frequency gets ``-phi_k``; DC and Nyquist get 0),
    and the **same** phases are added to every channel, so the cross-spectra between channels
    (the spatial structure) are kept. The output is the (real) inverse FFT.

    Parameters
    ----------
    X : Tensor, shape (batch, n_chans, n_times)
    magnitude : float
        Phase-noise magnitude in [0, 1] (0.5 by default; 0 returns ``X``).
    generator : torch.Generator or None
        On ``X``'s device; ``None`` uses torch's global generator.
    """
    _check_batch(X, "fsurr")
    validate_type(magnitude, "numeric", "magnitude", owner="fsurr")
    check_range(magnitude, "magnitude", low=0, high=1, owner="fsurr")
    dt = _compute_dtype(X)
    n = X.shape[-1]
    spec = torch.fft.fft(X.to(dt), dim=-1)
    phase = _surrogate_phase(X.shape[0], n, float(magnitude), generator=generator,
                             device=X.device, dtype=dt)
    rot = torch.polar(torch.ones_like(phase), phase)
    return torch.fft.ifft(spec * rot, dim=-1).real.to(X.dtype)


# --------------------------------------------------------------------------------------------
# electrode names and class names
# --------------------------------------------------------------------------------------------
#: ``<letters><number or z>[h]``: 10-20, 10-10 and 10-05 names (C3, Fp1, FCz, FFC3h, T7 ...).
_ELECTRODE = re.compile(r"^([A-Za-z]+?)(\d+|[zZ])(h?)$")


def _lateral(name: str) -> tuple[str, int | None, str] | None:
    """(prefix, number or None for midline, suffix), or None when not a 10-20 style name."""
    m = _ELECTRODE.match(name)
    if m is None:
        return None
    prefix, pos, suffix = m.groups()
    if pos in ("z", "Z"):
        return prefix, None, suffix
    return prefix, int(pos), suffix


def mirror_pairs(ch_names: Sequence[str]) -> list[tuple[int, int]]:
    """Left/right mirror-image electrode pairs, found from 10-20 / 10-10 / 10-05 names.

    Odd numbers lie over the left hemisphere, even numbers over the right, and ``k`` mirrors
    ``k + 1`` for odd ``k`` (C3-C4, FC1-FC2, F7-F8, T7-T8, P9-P10, FFC3h-FFC4h, also the old
    T3-T4 and T5-T6). Names ending in ``z`` are midline and mirror themselves. Matching is
    case-insensitive (``FP1`` pairs with ``Fp2``).

    Parameters
    ----------
    ch_names : sequence of str

    Returns
    -------
    pairs : list of (int, int)
        ``(left_index, right_index)`` for every lateral pair, sorted by the left index. Channels
        in no pair are midline.

    Raises
    ------
    ValueError
        Naming the channel: a name that is not a 10-20 style electrode name, a lateral channel
        whose mirror image is missing, or a name given twice.

    Examples
    --------
    >>> mirror_pairs(["C3", "Cz", "C4"])
    [(0, 2)]
    """
    if isinstance(ch_names, str) or not isinstance(ch_names, Iterable):
        raise TypeError("The 'ch_names' parameter of mirror_pairs must be a sequence of str. "
                        f"Got {type(ch_names).__name__}.")
    ch_names = list(ch_names)
    index: dict[str, int] = {}
    for i, name in enumerate(ch_names):
        if not isinstance(name, str):
            raise TypeError(f"Channel names must be str. Got {name!r} at position {i}.")
        key = name.lower()
        if key in index:
            raise ValueError(f"Channel {name!r} appears twice (positions {index[key]} and {i}); "
                             "mirror pairs need unique channel names.")
        index[key] = i
    pairs = []
    for i, name in enumerate(ch_names):
        parsed = _lateral(name)
        if parsed is None or parsed[1] == 0:
            raise ValueError(
                f"Channel {name!r} is not a 10-20/10-10/10-05 electrode name (letters followed "
                "by a number or 'z', e.g. 'C3', 'Cz', 'FFC3h'), so its mirror image is unknown. "
                "Rename the channels (mne's rename_channels) or drop the channel.")
        prefix, k, suffix = parsed
        if k is None:
            continue  # midline
        if k % 2 == 0:
            continue  # right: found from its left partner
        partner = f"{prefix}{k + 1}{suffix}"
        j = index.get(partner.lower())
        if j is None:
            raise ValueError(f"Channel {name!r} (left hemisphere) has no mirror image: "
                             f"{partner!r} is not among the channels {list(ch_names)}.")
        pairs.append((i, j))
    paired = {j for _, j in pairs}
    for i, name in enumerate(ch_names):
        prefix, k, suffix = _lateral(name)  # type: ignore[misc]
        if k is not None and k % 2 == 0 and i not in paired:
            raise ValueError(f"Channel {name!r} (right hemisphere) has no mirror image: "
                             f"{prefix}{k - 1}{suffix!s} is not among the channels "
                             f"{list(ch_names)}.")
    return pairs


def hemisphere_indices(ch_names: Sequence[str]) -> tuple[list[int], list[int], list[int]]:
    """``(left, midline, right)`` channel indices, ``left[i]`` mirroring ``right[i]``.

    Raises the errors of :func:`mirror_pairs`.
    """
    pairs = mirror_pairs(ch_names)
    left = [i for i, _ in pairs]
    right = [j for _, j in pairs]
    lateral = set(left) | set(right)
    midline = [i for i in range(len(ch_names)) if i not in lateral]
    return left, midline, right


#: Motor-imagery classes that are their own mirror image (normalised: lower case, no separators).
_BILATERAL = frozenset({"feet", "foot", "bothfeet", "tongue", "rest", "idle", "relax",
                        "baseline", "hands", "bothhands", "bothhand"})
_SIDE = re.compile(r"left|right", re.IGNORECASE)


def _normalise_class(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.lower())


def mirror_label_map(classes: Sequence[str], *, dataset: str | None = None) -> list[int]:
    """The class each class becomes under left/right reflection, as a permutation of codes.

    Class names containing ``left``/``right`` swap them (``left_hand`` <-> ``right_hand``,
    ``left`` <-> ``right``); bilateral classes (``feet``, ``tongue``, ``rest``, ``both_hands``
    ...) map to themselves.

    Parameters
    ----------
    classes : sequence of str
        Class names in code order.
    dataset : str or None
        Named in error messages.

    Returns
    -------
    perm : list of int
        ``perm[c]`` is the code of the mirror image of class ``c`` (an involution).

    Raises
    ------
    ValueError
        When the class set is not closed under mirroring (naming the dataset and the classes),
        e.g. ``["right_hand", "feet"]`` (BNCI2014_002): a reflected right-hand trial would look
        like a left-hand trial, which is not a class. Also for a class name whose laterality
        cannot be told (neither ``left``/``right`` nor a known bilateral class).

    Examples
    --------
    >>> mirror_label_map(["left_hand", "right_hand", "feet", "tongue"])
    [1, 0, 2, 3]
    """
    if isinstance(classes, str) or not isinstance(classes, Iterable):
        raise TypeError("The 'classes' parameter of mirror_label_map must be a sequence of "
                        f"class names. Got {type(classes).__name__}.")
    names = [str(c) for c in classes]
    where = f"dataset {dataset!r}, classes {names}" if dataset else f"classes {names}"
    norm = [_normalise_class(c) for c in names]
    lookup = {n: i for i, n in enumerate(norm)}
    perm = []
    for c, n in zip(names, norm):
        if _SIDE.search(n):
            mirrored = _SIDE.sub(lambda m: "right" if m.group(0) == "left" else "left", n)
            j = lookup.get(mirrored)
            if j is None:
                raise ValueError(
                    f"Channel reflection (CR) swaps left and right, so it needs a class set that "
                    f"is closed under mirroring ({where}): the mirror image of {c!r} is not a "
                    "class. Use views without 'cr' (e.g. ('flip', 'fshift')).")
            perm.append(j)
        elif n in _BILATERAL:
            perm.append(lookup[n])
        else:
            raise ValueError(
                f"Channel reflection (CR) cannot tell whether class {c!r} is lateralised "
                f"({where}); it knows class names containing 'left'/'right' and the bilateral "
                f"classes {sorted(_BILATERAL)}. Use views without 'cr'.")
    return perm


# --------------------------------------------------------------------------------------------
# functional core: space
# --------------------------------------------------------------------------------------------
def _check_pairs(pairs: Sequence[tuple[int, int]], n_chans: int, owner: str) -> list[list[int]]:
    left, right = [], []
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"{owner}: every pair must be (left_index, right_index). "
                             f"Got {pair!r}.")
        i, j = int(pair[0]), int(pair[1])
        if not (0 <= i < n_chans and 0 <= j < n_chans) or i == j:
            raise ValueError(f"{owner}: pair {pair!r} is not two distinct channel indices in "
                             f"[0, {n_chans - 1}].")
        left.append(i)
        right.append(j)
    if len(set(left) | set(right)) != 2 * len(left):
        raise ValueError(f"{owner}: a channel appears in more than one pair ({list(pairs)}).")
    return [left, right]


def cr(X: torch.Tensor, pairs: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Channel reflection: swap the signals of mirrored electrodes; midline channels kept.

    Use :func:`mirror_pairs` for ``pairs`` and :func:`mirror_label_map` for the labels (a
    reflected left-hand trial is a right-hand trial). Applying it twice gives ``X`` back.

    Parameters
    ----------
    X : Tensor, shape (batch, n_chans, n_times)
    pairs : sequence of (int, int)
        Mirrored channel indices.
    """
    _check_batch(X, "cr")
    left, right = _check_pairs(pairs, X.shape[1], "cr")
    perm = list(range(X.shape[1]))
    for i, j in zip(left, right):
        perm[i], perm[j] = j, i
    return X[:, torch.tensor(perm, device=X.device)]


def hs(X: torch.Tensor, y: torch.Tensor, pairs: Sequence[tuple[int, int]], *,
       generator: torch.Generator | None = None) -> torch.Tensor:
    """Hemisphere swap: replace one hemisphere by that of another random same-class trial.

    For a trial of class 0 the left-hemisphere channels (the first member of each pair), for
    class 1 the right-hemisphere channels, are copied from another trial of the same class in
    the batch, drawn uniformly. Midline channels and the other hemisphere are kept, and row
    ``i`` of the output is still trial ``i`` (the official code returns the batch sorted by
    class; this does not). A trial that is the only one of its class in the batch is returned
    unchanged. Labels are kept.

    Parameters
    ----------
    X : Tensor, shape (batch, n_chans, n_times)
    y : Tensor of int, shape (batch,)
        Class codes 0 and 1 only (two-class motor imagery; class 0 = left hand).
    pairs : sequence of (int, int)
        ``(left_index, right_index)`` pairs from :func:`mirror_pairs`.
    generator : torch.Generator or None
        A **CPU** generator for the donor draw; ``None`` uses torch's global CPU generator.

    Raises
    ------
    ValueError
        For class codes other than 0 and 1.
    """
    _check_batch(X, "hs")
    y = _check_labels(y, X.shape[0], "hs")
    left, right = _check_pairs(pairs, X.shape[1], "hs")
    yc = y.detach().to("cpu")
    if yc.numel() and (int(yc.min()) < 0 or int(yc.max()) > 1):
        raise ValueError("hs (hemisphere swap) is defined for two classes: class 0 gets its left "
                         "hemisphere, class 1 its right hemisphere from another trial. Got class "
                         f"codes {sorted(set(yc.tolist()))}.")
    out = X.clone()
    for code, channels in ((0, left), (1, right)):
        rows = torch.nonzero(yc == code).flatten()
        n = rows.numel()
        if n < 2 or not channels:
            continue
        # another member of the class, uniformly: shift each position by 1..n-1 (mod n)
        offset = torch.randint(1, n, (n,), generator=generator)
        donors = rows[(torch.arange(n) + offset) % n]
        ch = torch.tensor(channels)
        rows_d, donors_d, ch_d = (t.to(X.device) for t in (rows, donors, ch))
        out[rows_d[:, None], ch_d[None, :]] = X[donors_d[:, None], ch_d[None, :]]
    return out


# --------------------------------------------------------------------------------------------
# stateful wrappers
# --------------------------------------------------------------------------------------------
class View:
    """Base class: ``view(X, y) -> (X_view, y_view)`` on a batch ``(batch, n_chans, n_times)``.

    Attributes
    ----------
    name : str
        The key in :data:`VIEWS`.
    changes_labels : bool
        True when ``y_view`` may differ from ``y`` (channel reflection).
    """

    name = "view"
    changes_labels = False

    def __call__(self, X: torch.Tensor, y: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.transform(X, y), y

    def transform(self, X: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({params})"

    def _params(self) -> dict:
        return {}


class _SeededView(View):
    """A random view with an optional private generator per device (``seed``)."""

    def __init__(self, seed: int | None = None):
        validate_type(seed, ("int", None), "seed", owner=type(self).__name__)
        self.seed = seed
        self._generators: dict[str, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]


class Flip(View):
    """:func:`flip` as a view."""

    name = "flip"

    def transform(self, X, y=None):
        return flip(X)


class Scale(View):
    """:func:`scale` as a view."""

    name = "scale"

    def __init__(self, factor: float = 0.8):
        validate_type(factor, "numeric", "factor", owner="Scale")
        check_range(factor, "factor", low=0, low_inclusive=False, owner="Scale")
        self.factor = factor

    def transform(self, X, y=None):
        return scale(X, self.factor)

    def _params(self):
        return {"factor": self.factor}


class Noise(_SeededView):
    """:func:`noise` as a view (``seed=None``: torch's global generator)."""

    name = "noise"

    def __init__(self, scale: float = 1.0, seed: int | None = None):
        validate_type(scale, "numeric", "scale", owner="Noise")
        check_range(scale, "scale", low=0, owner="Noise")
        super().__init__(seed)
        self.scale = scale

    def transform(self, X, y=None):
        return noise(X, self.scale, generator=self._generator(X.device))

    def _params(self):
        return {"scale": self.scale, "seed": self.seed}


class FrequencyShift(View):
    """:func:`fshift` as a view."""

    name = "fshift"

    def __init__(self, sfreq: float, delta_f: float = 0.1, reference_quirks: bool = False):
        validate_type(sfreq, "numeric", "sfreq", owner="FrequencyShift")
        check_range(sfreq, "sfreq", low=0, low_inclusive=False, owner="FrequencyShift")
        validate_type(delta_f, "numeric", "delta_f", owner="FrequencyShift")
        validate_type(reference_quirks, bool, "reference_quirks", owner="FrequencyShift")
        self.sfreq = sfreq
        self.delta_f = delta_f
        self.reference_quirks = reference_quirks

    def transform(self, X, y=None):
        return fshift(X, self.sfreq, self.delta_f, reference_quirks=self.reference_quirks)

    def _params(self):
        return {"sfreq": self.sfreq, "delta_f": self.delta_f,
                "reference_quirks": self.reference_quirks}


class FTSurrogate(_SeededView):
    """:func:`fsurr` as a view (``seed=None``: torch's global generator)."""

    name = "fsurr"

    def __init__(self, magnitude: float = 0.5, seed: int | None = None):
        validate_type(magnitude, "numeric", "magnitude", owner="FTSurrogate")
        check_range(magnitude, "magnitude", low=0, high=1, owner="FTSurrogate")
        super().__init__(seed)
        self.magnitude = magnitude

    def transform(self, X, y=None):
        return fsurr(X, self.magnitude, generator=self._generator(X.device))

    def _params(self):
        return {"magnitude": self.magnitude, "seed": self.seed}


class ChannelReflection(View):
    """:func:`cr` as a view, with the labels mirrored (``left_hand`` <-> ``right_hand``).

    Parameters
    ----------
    ch_names : sequence of str
        Channel names in the order of ``X``'s rows (10-20 style, see :func:`mirror_pairs`).
    classes : sequence of str
        Class names in code order; must be closed under mirroring (:func:`mirror_label_map`).
    dataset : str or None
        Named in error messages.

    Raises
    ------
    ValueError
        From :func:`mirror_pairs` (unmatched lateral channel) or :func:`mirror_label_map`
        (class set not closed under mirroring, e.g. right hand / feet).
    """

    name = "cr"
    changes_labels = True

    def __init__(self, ch_names: Sequence[str], classes: Sequence[str],
                 dataset: str | None = None):
        self.ch_names = list(ch_names)
        self.classes = list(classes)
        self.dataset = dataset
        self.pairs = mirror_pairs(self.ch_names)
        self.label_map = mirror_label_map(self.classes, dataset=dataset)
        self._maps: dict[str, torch.Tensor] = {}

    def __call__(self, X, y=None):
        Xv = cr(X, self.pairs)
        if y is None:
            return Xv, None
        y = _check_labels(y, X.shape[0], "ChannelReflection")
        key = str(y.device)
        if key not in self._maps:
            self._maps[key] = torch.tensor(self.label_map, dtype=torch.long, device=y.device)
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= len(self.label_map)):
            raise ValueError(f"ChannelReflection: class codes must be in [0, "
                             f"{len(self.label_map) - 1}] (classes {self.classes}). "
                             f"Got {sorted(set(y.tolist()))}.")
        return Xv, self._maps[key][y].to(y.dtype)

    def transform(self, X, y=None):
        return cr(X, self.pairs)

    def _params(self):
        return {"ch_names": self.ch_names, "classes": self.classes}


class HemisphereSwap(_SeededView):
    """:func:`hs` as a view (labels kept; ``seed=None``: torch's global CPU generator).

    Parameters
    ----------
    ch_names : sequence of str
        Channel names (10-20 style, see :func:`mirror_pairs`).
    seed : int or None
    """

    name = "hs"

    def __init__(self, ch_names: Sequence[str], seed: int | None = None):
        super().__init__(seed)
        self.ch_names = list(ch_names)
        self.pairs = mirror_pairs(self.ch_names)

    def __call__(self, X, y=None):
        if y is None:
            raise ValueError("HemisphereSwap needs the labels y: donors are trials of the same "
                             "class.")
        return hs(X, y, self.pairs, generator=self._generator(torch.device("cpu"))), y

    def transform(self, X, y=None):
        return self(X, y)[0]

    def _params(self):
        return {"ch_names": self.ch_names, "seed": self.seed}


#: Short view names (as in the spec and pipeline files) -> view classes.
VIEWS: dict[str, type[View]] = {
    "flip": Flip,
    "scale": Scale,
    "noise": Noise,
    "fshift": FrequencyShift,
    "fsurr": FTSurrogate,
    "cr": ChannelReflection,
    "hs": HemisphereSwap,
}

#: Context each view needs from the data (keyword of :func:`make_view` -> what it is).
_CONTEXT = ("sfreq", "ch_names", "classes", "dataset", "reference_quirks")


def make_view(name: str, *, sfreq: float | None = None, ch_names: Sequence[str] | None = None,
              classes: Sequence[str] | None = None, dataset: str | None = None,
              reference_quirks: bool = False, **params: Any) -> View:
    """Build the view called ``name`` from :data:`VIEWS`, passing the context it needs.

    Parameters
    ----------
    name : str
        One of ``'flip', 'scale', 'noise', 'fshift', 'fsurr', 'cr', 'hs'``.
    sfreq : float or None
        Needed by ``'fshift'``.
    ch_names : sequence of str or None
        Needed by ``'cr'`` and ``'hs'``.
    classes : sequence of str or None
        Needed by ``'cr'``.
    dataset : str or None
        Named in ``'cr'`` errors.
    reference_quirks : bool
        Passed to ``'fshift'`` (the official 1/250 s step).
    **params
        The view's own parameters (``factor``, ``scale``, ``delta_f``, ``magnitude``, ``seed``).

    Raises
    ------
    ValueError
        For an unknown name, missing context (naming it) or a parameter the view does not take.
    """
    check_option(name, tuple(VIEWS), "name", owner="make_view")
    cls = VIEWS[name]
    import inspect

    accepted = [p for p in inspect.signature(cls).parameters if p != "self"]
    for key in params:
        if key not in accepted or key in _CONTEXT:
            own = [p for p in accepted if p not in _CONTEXT]
            raise ValueError(f"The view {name!r} has no parameter {key!r}. It takes: {own}.")
    context = {"sfreq": sfreq, "ch_names": ch_names, "classes": classes, "dataset": dataset,
               "reference_quirks": reference_quirks}
    kwargs = dict(params)
    required = {"fshift": ("sfreq",), "cr": ("ch_names", "classes"), "hs": ("ch_names",)}
    for key in required.get(name, ()):
        if context[key] is None:
            why = {"sfreq": "the sampling rate (sfreq)",
                   "ch_names": "the channel names (chs_info / ch_names)",
                   "classes": "the class names (classes)"}[key]
            raise ValueError(f"The view {name!r} needs {why}; got None.")
    for key in _CONTEXT:
        if key in accepted:
            kwargs[key] = context[key]
    return cls(**kwargs)

