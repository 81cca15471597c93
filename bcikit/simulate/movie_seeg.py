"""Movie-watching sEEG simulator with ground truth for encoding-model tests (spec §7).

A synthetic movie has scenes (a cut every 2-8 s) and dialogue (about 40 % of the time, about
2.5 words/s). Each scene carries a visual latent ``v`` (16-d, drifting from scene to scene: an
AR(1) with coefficient 0.5), each sentence a language latent ``l`` (16-d, correlated 0.3 with the
scene's ``v``) and each word a word-specific part (``l_word = l_sentence + 0.4 * eta``). A frame
also carries a noisy copy of the current sentence's ``l`` (as lips or captions would), so an
image-only network can see both modalities.

Electrodes (per subject, ``n_electrodes`` analysed contacts on 8-contact shafts) come in five
classes, in the proportions 15 % vision-only, 15 % language-only, 10 % non-linear multimodal,
10 % additive and 50 % null. Their DKT (Desikan-Killiany) labels follow the class (occipital and
ventral temporal for vision, auditory and inferior frontal for language, the temporo-parietal
junction, insula and dorsal frontal cortex for multimodal sites...). Each event drives a
responsive electrode with a scalar:

=========  ===========================  ==================================================
class      scene cuts                   word onsets
=========  ===========================  ==================================================
vision     ``w.v``                      --
language   --                           ``u.l_word``
nonlinear  ``a.(v * P l) + 0.3 (w.v + u.l)`` / SD, with ``l`` the closest preceding sentence's
           latent at cuts and ``l_word`` at words
additive   ``(w.v + u.l) / sqrt(2)``
null       --                           --
=========  ===========================  ==================================================

(``P`` is one fixed random rotation; each drive is scaled to unit SD over events). The drive
multiplies a gamma kernel (mode ``peak_ms`` in 100-400 ms, full width at half maximum
``width_ms`` in 150-300 ms) and overlapping responses add up. Noise is 1/f (flat below 0.5 Hz),
half shared within a shaft, plus 60 Hz line noise; ``snr`` scales the responses to word onsets
against unit-SD noise and ``cut_gain * snr`` the responses to scene cuts (a cut changes the whole
visual field). Signals are stored in microvolts (noise SD 20 uV).

Calibration (spec §7: "trained median r about 0.1 at responsive electrodes"). The r is the
spec's electrode score, as :func:`bcikit.encoding.pipeline.analyse_alignment` computes it: mean
test r over the electrode's kept bins (bins shared by the networks compared), median over the
electrodes that respond to the alignment's events, median over the trained networks. The
defaults ``snr = 0.27`` and ``cut_gain = 5.5`` give, on a 60-min movie at 512 Hz (40
electrodes, the 14 networks of ``pipelines/encoding.toml``, 200 out-of-fold resamples),
0.109 for word onsets (3,234 events) and 0.092 for scene cuts (706 events); random twins 0.00-0.01.
The two alignments need different amplitudes because word responses overlap (about 2.5 words/s,
neighbouring words share their sentence's latent, so most of the 161 bins carry predictable
signal), whereas cuts come every 2-8 s and only the 10-20 bins around the response peak do,
while the kept-bin average runs over the bins any network keeps. The earlier default (``snr =
0.12``, ``cut_gain = 1``) matched r = 0.1 only at the response's peak bins (mean test r within
+-150 ms of the peak): its electrode scores were 0.026 (words) and 0.019 (cuts). At 2048 Hz
the same ``snr`` gives r about 8 % higher (the unit-SD noise spreads over a wider band, so
less of it survives the 200-ms window means).

Each subject's session is written in the Brain Treebank layout (:mod:`bcikit.io.braintreebank`)
with two corrupted electrodes, one trigger channel (``TRIG1``), some labels marked with ``*`` or
``#``, and triggers about 1 s apart (jittered) mapping movie time to samples through a clock that
starts 5-15 s into the recording and drifts by up to 20 ppm; the last words and cuts fall after
the last trigger. Ground truth goes to ``<out_dir>/truth/``.

Synthetic feature extractors stand in for the networks of the spec (§2.4) so that the statistics
can be checked against known answers (see :data:`SYNTHETIC_MODELS`):

- "trained" vision / language networks: fixed maps recovering ``v`` (scene) / ``l`` (sentence)
  with some error, plus nuisance dimensions (non-linear functions of image or text content that
  drive no electrode), mixed by a random rotation;
- multimodal networks add the interaction ``v * P l``; SLIP-Combo-vision is SLIP-SimCLR plus
  interactions computed from the image alone (with the image's noisy copy of ``l``);
  MultiCat is the concatenation [SimCSE ; SLIP-SimCLR];
- random-initialisation twins (``"<name>-random"``) are random two-layer ReLU networks of the raw
  inputs (images and sentences rendered as high-frequency sinusoidal codes of their latents and
  nuisance content), which hold almost no linear information about ``v`` or ``l``.

Examples
--------
>>> sim = simulate_movie_seeg("sim", n_subjects=1, n_electrodes=40, duration=600,
...                           sfreq=512)  # doctest: +SKIP
>>> from bcikit.encoding.events import make_events
>>> events = make_events(sim.session("1"), "language")  # doctest: +SKIP
>>> X = sim.features("ALBEF", events)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..utils import logger, progress, set_log_level, validate_type

__all__ = [
    "CLASSES",
    "CLASS_FRACTIONS",
    "SYNTHETIC_MODELS",
    "MovieSimulation",
    "simulate_movie_seeg",
    "load_movie_simulation",
    "model_catalog",
]

#: Electrode classes of the simulator's ground truth.
CLASSES = ("vision", "language", "nonlinear", "additive", "null")
#: Share of each class among a subject's analysed electrodes.
CLASS_FRACTIONS = {"vision": 0.15, "language": 0.15, "nonlinear": 0.10, "additive": 0.10,
                   "null": 0.50}
#: DKT regions per class.
CLASS_REGIONS = {
    "vision": ("lateraloccipital", "lingual", "cuneus", "fusiform", "pericalcarine"),
    "language": ("transversetemporal", "parsopercularis", "parstriangularis", "temporalpole"),
    "nonlinear": ("superiortemporal", "middletemporal", "inferiorparietal", "supramarginal",
                  "insula", "superiorfrontal", "caudalmiddlefrontal", "bankssts"),
    "additive": ("precuneus", "superiorparietal", "rostralmiddlefrontal", "inferiortemporal"),
    "null": ("entorhinal", "parahippocampal", "medialorbitofrontal", "lateralorbitofrontal",
             "postcentral", "precentral", "posteriorcingulate"),
}
# approximate MNI centroids (mm) of the left-hemisphere regions (x flips for the right)
_CENTROIDS = {
    "lateraloccipital": (-32, -86, 2), "lingual": (-12, -74, -4), "cuneus": (-8, -80, 22),
    "fusiform": (-34, -52, -16), "pericalcarine": (-10, -84, 6),
    "transversetemporal": (-44, -22, 10), "parsopercularis": (-48, 12, 14),
    "parstriangularis": (-46, 28, 6), "temporalpole": (-34, 12, -32),
    "superiortemporal": (-54, -18, 2), "middletemporal": (-60, -30, -8),
    "inferiorparietal": (-44, -64, 32), "supramarginal": (-52, -40, 32), "insula": (-36, -2, 4),
    "superiorfrontal": (-12, 28, 48), "caudalmiddlefrontal": (-38, 8, 46),
    "bankssts": (-52, -44, 8), "precuneus": (-8, -58, 40), "superiorparietal": (-24, -62, 52),
    "rostralmiddlefrontal": (-36, 40, 20), "inferiortemporal": (-50, -40, -20),
    "entorhinal": (-24, -8, -32), "parahippocampal": (-24, -32, -14),
    "medialorbitofrontal": (-6, 40, -14), "lateralorbitofrontal": (-26, 30, -14),
    "postcentral": (-42, -26, 50), "precentral": (-38, -12, 50),
    "posteriorcingulate": (-6, -20, 36),
}

_D = 16                  # latent dimension (v and l)
_CORR_VL = 0.3           # corr(v, l) per dimension
_DRIFT = 0.5             # AR(1) coefficient of v across scenes
_WORD_PART = 0.4         # scale of the word-specific part of l
_IMG_L_NOISE = 0.6       # SD of the noise on the image's copy of l
_RECOVERY_NOISE = 0.3    # SD of a trained network's error on v / l
_OWN_NOISE_SHARE = 0.1   # share of that error's variance specific to one network (the rest is
                         # the part of the latents no network recovers from the stimulus, common
                         # to all), so networks holding the same latents differ by little more
                         # than their nuisance dimensions and none wins by a lucky draw
_NOISE_SD_UV = 20.0      # noise SD in microvolts
_SHAFT_SHARE = 0.5       # share of noise variance common to a shaft
_LINE_SD = 0.3           # 60 Hz amplitude (RMS) relative to the noise SD
_RAW_DIM = 64            # size of the raw image / text codes
_RAW_FREQ = 1.0          # SD of the frequencies of the raw codes
_HIDDEN = 128            # width of the random twins

#: Nuisance sizes are chosen so that no network is better than another by design where they
#: hold the same information: the language towers of the SLIP models have at least as many
#: nuisance dimensions as SBERT/SimCSE (so they do not beat the best unimodal network at
#: language-only electrodes), and each fusion network carries at least as many dimensions that
#: are irrelevant to an additive electrode (its nuisance plus ``vPl``) as MultiCat (the other
#: network's nuisance), so additive electrodes are not called sites.
#: Synthetic networks: ``kind`` (as the statistics' catalog names it), ``input`` (what the
#: network sees: ``"image"``, ``"text"`` or ``"image+text"``), the ``parts`` its features hold
#: (``v``/``l`` recovered latents, ``l_img`` the image's copy of ``l``, ``vPl`` the interaction
#: from both inputs, ``vPl_img`` the interaction from the image alone, ``nuis_img``/``nuis_txt``
#: nuisance dimensions) with ``n_nuisance`` nuisance dimensions per source, or ``concat`` (feature
#: blocks of other networks, in order) / ``base`` plus ``parts``.
SYNTHETIC_MODELS: dict[str, dict] = {
    "ALBEF": {"kind": "multimodal", "input": "image+text",
              "parts": ("v", "l", "vPl", "nuis_img", "nuis_txt"), "n_nuisance": 12},
    "BLIP": {"kind": "multimodal", "input": "image+text",
             "parts": ("v", "l", "vPl", "nuis_img", "nuis_txt"), "n_nuisance": 16},
    "FLAVA": {"kind": "multimodal", "input": "image+text",
              "parts": ("v", "l", "vPl", "nuis_img", "nuis_txt"), "n_nuisance": 24},
    "SLIP-CLIP-vision": {"kind": "multimodal", "input": "image",
                         "parts": ("v", "l_img", "vPl_img", "nuis_img"), "n_nuisance": 16},
    "SLIP-Combo-vision": {"kind": "multimodal", "input": "image", "base": "SLIP-SimCLR",
                          "parts": ("vPl_img",), "n_nuisance": 0},
    "SLIP-CLIP-language": {"kind": "multimodal", "input": "text", "parts": ("l", "nuis_txt"),
                           "n_nuisance": 24},
    "SLIP-Combo-language": {"kind": "multimodal", "input": "text", "parts": ("l", "nuis_txt"),
                            "n_nuisance": 28},
    "SLIP-SimCLR": {"kind": "vision", "input": "image", "parts": ("v", "nuis_img"),
                    "n_nuisance": 16},
    "BEiT": {"kind": "vision", "input": "image", "parts": ("v", "nuis_img"), "n_nuisance": 40},
    "ConvNeXt": {"kind": "vision", "input": "image", "parts": ("v", "nuis_img"),
                 "n_nuisance": 24},
    "SBERT": {"kind": "language", "input": "text", "parts": ("l", "nuis_txt"), "n_nuisance": 24},
    "SimCSE": {"kind": "language", "input": "text", "parts": ("l", "nuis_txt"),
               "n_nuisance": 24},
    "MultiCat": {"kind": "linear", "input": "image+text", "concat": ("SimCSE", "SLIP-SimCLR")},
}
_RANDOM_SUFFIX = "-random"


def model_catalog() -> pd.DataFrame:
    """The synthetic networks and their random twins.

    Returns
    -------
    DataFrame
        ``model``, ``kind`` (``'multimodal'``, ``'vision'``, ``'language'``, ``'linear'``),
        ``trained`` (bool), ``twin`` (the random twin's name for trained networks, else None),
        ``input``.
    """
    rows = []
    for name, spec in SYNTHETIC_MODELS.items():
        rows.append({"model": name, "kind": spec["kind"], "trained": True,
                     "twin": name + _RANDOM_SUFFIX, "input": spec["input"]})
    for name, spec in SYNTHETIC_MODELS.items():
        rows.append({"model": name + _RANDOM_SUFFIX, "kind": spec["kind"], "trained": False,
                     "twin": None, "input": spec["input"]})
    return pd.DataFrame(rows)


def _seed(*parts) -> list[int]:
    """Entropy for ``default_rng`` from ints and strings (strings through CRC-32)."""
    return [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]


def _orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))[None, :]


# ------------------------------------------------------------------------------------- movie
def _make_movie(rng: np.random.Generator, duration: float) -> dict:
    """Scenes, sentences and words of a synthetic movie, with their latents."""
    cuts = []
    t = float(rng.uniform(0.5, 3.0))
    while t < duration - 2.0:
        cuts.append(round(t, 3))
        t += float(rng.uniform(2.0, 8.0))
    # a last cut just before the end: it falls after the last trigger, so readers drop it
    cuts.append(round(duration - 0.25, 3))
    cuts = np.asarray(cuts)
    n_scenes = cuts.size + 1
    v = np.empty((n_scenes, _D))
    v[0] = rng.standard_normal(_D)
    for s in range(1, n_scenes):
        v[s] = _DRIFT * v[s - 1] + np.sqrt(1 - _DRIFT ** 2) * rng.standard_normal(_D)

    # dialogue: alternating silences (mean 15 s) and dialogue (mean 10 s) -> ~40 % dialogue
    starts, sent_of_word, idx_in, w_start, w_end = [], [], [], [], []
    t = float(rng.uniform(1.0, 6.0))
    n_sent = 0
    while t < duration:
        block_end = t + float(rng.uniform(4.0, 16.0))
        while t < min(block_end, duration):
            n_words = int(rng.integers(3, 13))
            starts.append(round(t, 3))
            for k in range(n_words):
                gap = float(rng.uniform(0.25, 0.55))
                w_start.append(round(t, 3))
                w_end.append(round(t + 0.8 * gap, 3))
                sent_of_word.append(n_sent)
                idx_in.append(k)
                t += gap
            n_sent += 1
            t += float(rng.uniform(0.3, 0.8))
        t += float(rng.uniform(6.0, 24.0))
    w_start = np.asarray(w_start)
    keep = w_start < duration
    w_start = w_start[keep]
    w_end = np.minimum(np.asarray(w_end)[keep], duration)
    sent_of_word = np.asarray(sent_of_word, dtype=np.int64)[keep]
    idx_in = np.asarray(idx_in, dtype=np.int64)[keep]
    n_sent = int(sent_of_word.max()) + 1 if sent_of_word.size else 0
    sent_start = np.asarray(starts[:n_sent])
    scene_of_sent = np.searchsorted(cuts, sent_start, side="right")
    l_sent = (_CORR_VL * v[scene_of_sent]
              + np.sqrt(1 - _CORR_VL ** 2) * rng.standard_normal((n_sent, _D)))
    l_word = l_sent[sent_of_word] + _WORD_PART * rng.standard_normal((w_start.size, _D))
    vocab = np.array([f"w{i:03d}" for i in range(400)])
    tokens = vocab[rng.integers(0, vocab.size, size=w_start.size)]
    return {
        "duration": float(duration), "cut_times": cuts, "v": v, "sent_start": sent_start,
        "l_sent": l_sent, "word_start": w_start, "word_end": w_end,
        "word_sentence": sent_of_word, "word_idx_in_sentence": idx_in, "l_word": l_word,
        "tokens": tokens,
        "P": _orthogonal(rng, _D),
        "nuis_img": rng.standard_normal((n_scenes, _D)),
        "nuis_txt": rng.standard_normal((n_sent + 1, _D)),
        "zeta_scene": rng.standard_normal((n_scenes, _D)),
        "zeta_sent": rng.standard_normal((n_sent + 1, _D)),
        "omega_img": rng.normal(0, _RAW_FREQ, (_RAW_DIM, 3 * _D)),
        "phase_img": rng.uniform(0, 2 * np.pi, _RAW_DIM),
        "omega_txt": rng.normal(0, _RAW_FREQ, (_RAW_DIM, 2 * _D)),
        "phase_txt": rng.uniform(0, 2 * np.pi, _RAW_DIM),
    }


def _transcript(movie: dict) -> pd.DataFrame:
    sent = movie["word_sentence"]
    tokens = movie["tokens"]
    sentences = {}
    for s in np.unique(sent):
        sentences[int(s)] = " ".join(tokens[sent == s])
    is_last = np.r_[sent[1:] != sent[:-1], True] if sent.size else np.zeros(0, bool)
    return pd.DataFrame({
        "text": tokens, "start": movie["word_start"], "end": movie["word_end"],
        "sentence": [sentences[int(s)] for s in sent], "sentence_idx": sent,
        "idx_in_sentence": movie["word_idx_in_sentence"],
        "is_onset": (movie["word_idx_in_sentence"] == 0).astype(int),
        "is_offset": is_last.astype(int),
    })


def _context_sentence(movie: dict, times: np.ndarray) -> np.ndarray:
    """Sentence of the last word starting at or before each time (-1 when none)."""
    last = np.searchsorted(movie["word_start"], times, side="right") - 1
    return np.where(last >= 0, movie["word_sentence"][np.clip(last, 0, None)], -1)


def _scene_at(movie: dict, times: np.ndarray) -> np.ndarray:
    return np.searchsorted(movie["cut_times"], times, side="right")


# ------------------------------------------------------------------------------- electrodes
def _gamma_fwhm(k: float, peak_ms: float) -> float:
    """Full width at half maximum of a gamma kernel with shape ``k`` and mode ``peak_ms``:
    the half-maximum points ``u = t / peak`` solve ``ln u - u + 1 = -ln 2 / (k - 1)``, whose
    roots are ``-W(-exp(-1 - c))`` on the two real branches of Lambert's W."""
    from scipy.special import lambertw

    z = -np.exp(-1.0 - np.log(2.0) / (k - 1.0))
    u1 = -lambertw(z, 0).real
    u2 = -lambertw(z, -1).real
    return float(peak_ms * (u2 - u1))


def _gamma_kernel(peak_ms: float, width_ms: float, sfreq: float) -> np.ndarray:
    """Gamma-shaped kernel with mode ``peak_ms`` and FWHM ``width_ms``, peak 1, at ``sfreq``."""
    lo, hi = 1.0 + 1e-6, 1e6
    for _ in range(100):  # the FWHM shrinks as the shape grows (mode fixed)
        k = np.sqrt(lo * hi)
        if _gamma_fwhm(k, peak_ms) > width_ms:
            lo = k
        else:
            hi = k
    k = np.sqrt(lo * hi)
    theta = peak_ms / (k - 1)
    t = np.arange(0, int(np.ceil((peak_ms + 12 * theta * np.sqrt(k)) * sfreq / 1000)) + 1)
    t_ms = t * 1000.0 / sfreq
    with np.errstate(divide="ignore"):
        h = np.exp((k - 1) * np.log(np.maximum(t_ms, 1e-12) / peak_ms)
                   - (t_ms - peak_ms) / theta)
    h[0] = 0.0
    cut = np.flatnonzero((t_ms > peak_ms) & (h < 1e-4))
    return h[: cut[0]] if cut.size else h


def _window_peak_ms(kernel: np.ndarray, sfreq: float, width_s: float = 0.2) -> float:
    """Centre (ms) of the ``width_s`` window holding most of the kernel: where the binned
    response of the targets peaks."""
    n = int(round(width_s * sfreq))
    padded = np.r_[np.zeros(n), kernel, np.zeros(n)]
    cs = np.r_[0.0, np.cumsum(padded)]
    sums = cs[n:] - cs[:-n]
    start = int(np.argmax(sums)) - n
    return (start + n / 2.0) * 1000.0 / sfreq


def _class_counts(n: int) -> dict[str, int]:
    raw = {c: CLASS_FRACTIONS[c] * n for c in CLASSES}
    counts = {c: int(np.floor(v)) for c, v in raw.items()}
    for c in sorted(CLASSES, key=lambda c: -(raw[c] - counts[c]))[: n - sum(counts.values())]:
        counts[c] += 1
    return counts


def _pink_spectrum(rng: np.random.Generator, n_fft: int, sfreq: float,
                   f_floor: float = 0.5) -> np.ndarray:
    """rfft of noise with a 1/f spectrum above ``f_floor`` (flat below), no DC, scaled so that
    its inverse transform has unit variance (Parseval)."""
    n_freq = n_fft // 2 + 1
    spec = rng.standard_normal(n_freq) + 1j * rng.standard_normal(n_freq)
    f = np.arange(n_freq) * (sfreq / n_fft)
    spec /= np.sqrt(np.maximum(f, f_floor))
    spec[0] = 0.0
    if n_fft % 2 == 0:
        spec[-1] = spec[-1].real
    weights = np.full(n_freq, 2.0)
    weights[0] = 1.0
    if n_fft % 2 == 0:
        weights[-1] = 1.0
    var = float((weights * np.abs(spec) ** 2).sum()) / n_fft ** 2
    return spec / np.sqrt(var)


# ------------------------------------------------------------------------------- container
@dataclass
class MovieSimulation:
    """A simulated Brain Treebank release plus its ground truth.

    Build it with :func:`simulate_movie_seeg` or :func:`load_movie_simulation`.

    Attributes
    ----------
    root : Path
        The release folder (Brain Treebank layout; truth in ``root/truth``).
    subjects : list of str
        Subject ids.
    trial : int
        Trial number of every session (0).
    movie : str
        Movie id.
    sfreq : float
        Sampling rate (Hz).
    params : dict
        The simulation's parameters (seed, sizes, snr...).
    truth : DataFrame
        One row per analysed electrode: ``subject``, ``electrode``, ``class``, ``region``,
        ``responsive`` (class is not null), ``responsive_language`` / ``responsive_vision``
        (the electrode responds to word onsets / scene cuts), ``peak_ms`` (kernel mode),
        ``width_ms`` (kernel FWHM), ``window_peak_ms`` (centre of the 200-ms window where the
        binned response peaks), ``x``, ``y``, ``z`` (MNI-like mm).
    """

    root: Path
    subjects: list[str]
    trial: int
    movie: str
    sfreq: float
    params: dict
    truth: pd.DataFrame
    _movie: dict = field(repr=False, default_factory=dict)
    _sessions: dict = field(repr=False, default_factory=dict)

    def __repr__(self) -> str:
        return (f"<MovieSimulation {len(self.subjects)} subject(s), "
                f"{len(self.truth) // max(len(self.subjects), 1)} electrodes each, "
                f"{self.params['duration']:g} s at {self.sfreq:g} Hz, in {str(self.root)!r}>")

    # ----------------------------------------------------------------------------- sessions
    def session(self, subject: str | int):
        """The subject's session, read back through :func:`bcikit.io.braintreebank.read_session`."""
        from ..io.braintreebank import read_session

        subject = self._subject(subject)
        if subject not in self._sessions:
            self._sessions[subject] = read_session(self.root, subject, self.trial)
        return self._sessions[subject]

    def _subject(self, subject) -> str:
        subject = str(subject)
        if subject not in self.subjects:
            raise ValueError(f"Subject {subject!r} is not simulated; subjects: {self.subjects}.")
        return subject

    def true_samples(self, subject: str | int, times) -> np.ndarray:
        """Exact samples of movie times in the subject's recording (the simulator's clock)."""
        info = self.params["sessions"][self._subject(subject)]
        t = np.asarray(times, dtype=np.float64)
        return np.floor((info["t0"] + t * (1 + info["drift"])) * self.sfreq + 0.5).astype(np.int64)

    # ------------------------------------------------------------------------------ features
    def model_catalog(self) -> pd.DataFrame:
        """See :func:`model_catalog`."""
        return model_catalog()

    def model_names(self, *, trained: bool | None = None) -> list[str]:
        """Names of the synthetic networks (``trained=True``: trained only; False: twins only)."""
        cat = model_catalog()
        if trained is not None:
            cat = cat[cat["trained"] == trained]
        return list(cat["model"])

    def _event_keys(self, events: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        validate_type(events, pd.DataFrame, "events", owner="MovieSimulation.features")
        missing = [c for c in ("time", "sentence_idx") if c not in events.columns]
        if missing:
            raise ValueError(f"MovieSimulation.features: events lack column(s) {missing} "
                             f"(make them with bcikit.encoding.events.make_events).")
        times = events["time"].to_numpy(np.float64)
        sent = events["sentence_idx"].to_numpy()
        n_sent = self._movie["l_sent"].shape[0]
        if not np.issubdtype(sent.dtype, np.integer) or np.any((sent < -1) | (sent >= n_sent)):
            raise ValueError(f"MovieSimulation.features: events['sentence_idx'] must be integers "
                             f"in [-1, {n_sent}) for this movie.")
        return _scene_at(self._movie, times), sent.astype(np.int64)

    def features(self, model: str, events: pd.DataFrame) -> np.ndarray:
        """Features of one synthetic network for each event.

        Parameters
        ----------
        model : str
            A name of :func:`model_catalog` (trained network or ``"<name>-random"`` twin).
        events : DataFrame
            Events with ``time`` (movie s) and ``sentence_idx`` columns
            (:func:`bcikit.encoding.events.make_events`): the image is the frame at ``time``
            and the text is sentence ``sentence_idx`` (-1: no sentence).

        Returns
        -------
        ndarray, shape (n_events, n_features), float32
            The same for every subject (features depend on the movie only).
        """
        validate_type(model, str, "model", owner="MovieSimulation.features")
        scene, sent = self._event_keys(events)
        return _features(self._movie, int(self.params["seed"]), model, scene, sent).astype(
            np.float32)

    def feature_sets(self, models: Sequence[str] | None, events: pd.DataFrame
                     ) -> dict[str, np.ndarray]:
        """``{model: features}`` for several networks (default: all, twins included)."""
        names = self.model_names() if models is None else list(models)
        return {m: self.features(m, events) for m in names}

    def latents(self, events: pd.DataFrame) -> dict[str, np.ndarray]:
        """True latents of each event: ``v`` (the scene's, at ``time``), ``l`` (sentence
        ``sentence_idx``; zeros for -1) and ``vPl`` (``v * P l``), each (n_events, 16)."""
        scene, sent = self._event_keys(events)
        m = self._movie
        v = m["v"][scene]
        lat = np.vstack([m["l_sent"], np.zeros((1, _D))])[sent]
        return {"v": v, "l": lat, "vPl": v * (lat @ m["P"].T)}

    def drives(self, subject: str | int, events: pd.DataFrame) -> np.ndarray:
        """The true drive of every electrode at each event (n_events, n_electrodes), in the
        order of ``truth`` rows of that subject; zero where the electrode ignores the event type
        (``events['alignment']`` says which)."""
        subject = self._subject(subject)
        if "alignment" not in events.columns:
            raise ValueError("MovieSimulation.drives: events need an 'alignment' column.")
        scene, sent = self._event_keys(events)
        times = events["time"].to_numpy(np.float64)
        is_word = (events["alignment"] == "language").to_numpy()
        weights = _load_weights(self.root, subject)
        m = self._movie
        l_ctx = np.vstack([m["l_sent"], np.zeros((1, _D))])[sent]
        if is_word.any():
            word = np.searchsorted(m["word_start"], times[is_word], side="left")
            word = np.clip(word, 0, m["word_start"].size - 1)
            l_ctx[is_word] = m["l_word"][word]
        v = m["v"][scene]
        return _drive(weights, v, l_ctx, m["P"], is_word)


def _drive(weights: dict, v: np.ndarray, l: np.ndarray, P: np.ndarray,
           is_word: np.ndarray) -> np.ndarray:
    """Drives (n_events, n_electrodes) before the per-electrode scaling in ``weights``."""
    cls = weights["cls"]
    lin_v = v @ weights["w"].T
    lin_l = l @ weights["u"].T
    inter = (v[:, None, :] * (l @ P.T)[:, None, :] * weights["a"][None, :, :]).sum(-1)
    out = np.zeros_like(lin_v)
    out[:, cls == 0] = np.where(is_word[:, None], 0.0, lin_v[:, cls == 0])
    out[:, cls == 1] = np.where(is_word[:, None], lin_l[:, cls == 1], 0.0)
    out[:, cls == 2] = inter[:, cls == 2] + 0.3 * (lin_v[:, cls == 2] + lin_l[:, cls == 2])
    out[:, cls == 3] = (lin_v[:, cls == 3] + lin_l[:, cls == 3]) / np.sqrt(2)
    return out * weights["scale"][None, :]


# ----------------------------------------------------------------------------- extractors
def _parts(movie: dict, seed: int, name: str, spec: dict, scene: np.ndarray,
           sent: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(_seed(seed, 2, name))
    n_scenes, n_sent = movie["v"].shape[0], movie["l_sent"].shape[0]
    l_ext = np.vstack([movie["l_sent"], np.zeros((1, _D))])
    common = np.random.default_rng(_seed(seed, 2, "recovery"))
    v_err = (np.sqrt(1 - _OWN_NOISE_SHARE) * common.standard_normal((n_scenes, _D))
             + np.sqrt(_OWN_NOISE_SHARE) * rng.standard_normal((n_scenes, _D)))
    l_err = (np.sqrt(1 - _OWN_NOISE_SHARE) * common.standard_normal((n_sent + 1, _D))
             + np.sqrt(_OWN_NOISE_SHARE) * rng.standard_normal((n_sent + 1, _D)))
    v_hat = movie["v"][scene] + _RECOVERY_NOISE * v_err[scene]
    l_hat = l_ext[sent] + _RECOVERY_NOISE * l_err[sent]
    l_img = l_ext[sent] + _IMG_L_NOISE * (movie["zeta_scene"][scene]
                                          + movie["zeta_sent"][sent]) / np.sqrt(2)
    k = int(spec.get("n_nuisance", 0))
    b_img = rng.standard_normal((k, _D)) / np.sqrt(_D) * 2.0
    b_txt = rng.standard_normal((k, _D)) / np.sqrt(_D) * 2.0
    P = movie["P"]
    blocks = []
    for part in spec["parts"]:
        if part == "v":
            blocks.append(v_hat)
        elif part == "l":
            blocks.append(l_hat)
        elif part == "l_img":
            blocks.append(l_img)
        elif part == "vPl":
            blocks.append(v_hat * (l_hat @ P.T))
        elif part == "vPl_img":
            blocks.append(v_hat * (l_img @ P.T))
        elif part == "nuis_img":
            blocks.append(np.tanh(movie["nuis_img"][scene] @ b_img.T))
        elif part == "nuis_txt":
            blocks.append(np.tanh(movie["nuis_txt"][sent] @ b_txt.T))
        else:  # pragma: no cover - SYNTHETIC_MODELS is fixed
            raise ValueError(f"unknown feature part {part!r}")
    z = np.hstack(blocks)
    return z @ _orthogonal(rng, z.shape[1]).T


def _raw_inputs(movie: dict, scene: np.ndarray, sent: np.ndarray, kind: str) -> np.ndarray:
    l_ext = np.vstack([movie["l_sent"], np.zeros((1, _D))])
    codes = []
    if "image" in kind:
        l_img = l_ext[sent] + _IMG_L_NOISE * (movie["zeta_scene"][scene]
                                              + movie["zeta_sent"][sent]) / np.sqrt(2)
        z = np.hstack([movie["v"][scene], l_img, movie["nuis_img"][scene]])
        codes.append(np.sin(z @ movie["omega_img"].T + movie["phase_img"]))
    if "text" in kind:
        z = np.hstack([l_ext[sent], movie["nuis_txt"][sent]])
        codes.append(np.sin(z @ movie["omega_txt"].T + movie["phase_txt"]))
    return np.hstack(codes)


def _n_features(name: str) -> int:
    spec = SYNTHETIC_MODELS[name]
    if "concat" in spec:
        return sum(_n_features(m) for m in spec["concat"])
    dims = {"v": _D, "l": _D, "l_img": _D, "vPl": _D, "vPl_img": _D,
            "nuis_img": spec.get("n_nuisance", 0), "nuis_txt": spec.get("n_nuisance", 0)}
    own = sum(dims[p] for p in spec["parts"])
    return own + (_n_features(spec["base"]) if "base" in spec else 0)


def _features(movie: dict, seed: int, model: str, scene: np.ndarray,
              sent: np.ndarray) -> np.ndarray:
    random = model.endswith(_RANDOM_SUFFIX)
    name = model[: -len(_RANDOM_SUFFIX)] if random else model
    if name not in SYNTHETIC_MODELS:
        raise ValueError(f"Unknown synthetic model {model!r}; known: "
                         f"{list(model_catalog()['model'])}.")
    spec = SYNTHETIC_MODELS[name]
    if "concat" in spec:
        suffix = _RANDOM_SUFFIX if random else ""
        return np.hstack([_features(movie, seed, m + suffix, scene, sent)
                          for m in spec["concat"]])
    if random:
        x = _raw_inputs(movie, scene, sent, spec["input"])
        rng = np.random.default_rng(_seed(seed, 3, name))
        w1 = rng.standard_normal((_HIDDEN, x.shape[1])) * np.sqrt(2.0 / x.shape[1])
        b1 = 0.1 * rng.standard_normal(_HIDDEN)
        w2 = rng.standard_normal((_n_features(name), _HIDDEN)) * np.sqrt(2.0 / _HIDDEN)
        return np.maximum(x @ w1.T + b1, 0.0) @ w2.T
    out = _parts(movie, seed, name, spec, scene, sent)
    if "base" in spec:
        out = np.hstack([_features(movie, seed, spec["base"], scene, sent), out])
    return out


# ------------------------------------------------------------------------------- writing
def _load_weights(root: Path, subject: str) -> dict:
    with np.load(Path(root) / "truth" / f"weights_sub_{subject}.npz") as f:
        return {k: f[k] for k in f.files}


def _save_movie(path: Path, movie: dict) -> None:
    np.savez_compressed(path, **{k: np.asarray(v) for k, v in movie.items()})


def _load_movie(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as f:
        out = {k: f[k] for k in f.files}
    out["duration"] = float(out["duration"])
    return out


def _subject_electrodes(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Labels, shafts, classes, regions and positions of one subject's contacts (analysed
    ones plus two corrupted)."""
    n_total = n + 2
    n_shafts = int(np.ceil(n_total / 8))
    letters = [chr(ord("A") + i) for i in range(26)]
    names = []
    for s in range(n_shafts):
        side = "L" if rng.random() < 0.6 else "R"
        # letters only (LA, LB, ..., LAA): a digit would merge with the contact number
        shaft = f"{side}{letters[s // 26 - 1] if s >= 26 else ''}{letters[s % 26]}"
        names.extend((shaft, c) for c in range(1, 9))
    names = names[:n_total]
    corrupted = set(rng.choice(n_total, size=2, replace=False).tolist())
    counts = _class_counts(n)
    classes = np.array([c for c in CLASSES for _ in range(counts[c])])
    rng.shuffle(classes)
    rows, k = [], 0
    for i, (shaft, contact) in enumerate(names):
        bad = i in corrupted
        cls = "null" if bad else classes[k]
        k += 0 if bad else 1
        region = str(rng.choice(CLASS_REGIONS[cls]))
        hemi = "lh" if shaft.startswith("L") else "rh"
        cx, cy, cz = _CENTROIDS[region]
        x = (cx if hemi == "lh" else -cx) + rng.normal(0, 4)
        rows.append({"electrode": f"{shaft}{contact}", "shaft": shaft, "contact": contact,
                     "corrupted": bad, "class": cls, "region": f"ctx-{hemi}-{region}",
                     "x": round(x, 2), "y": round(cy + rng.normal(0, 4), 2),
                     "z": round(cz + rng.normal(0, 4), 2)})
    return pd.DataFrame(rows)


def _refuse_existing(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"The simulation folder {str(out)!r} already exists and is not "
                              f"empty; choose another folder (outputs are never overwritten).")


def simulate_movie_seeg(out_dir: str | Path, *, n_subjects: int = 7, n_electrodes: int = 156,
                        duration: float = 3600.0, sfreq: float = 2048.0, snr: float = 0.27,
                        cut_gain: float = 5.5, seed: int = 0,
                        verbose: bool | str | None = None) -> MovieSimulation:
    """Simulate subjects watching one movie and write Brain Treebank files plus ground truth.

    Parameters
    ----------
    out_dir : path-like
        New (or empty) folder for the release; never overwritten.
    n_subjects : int
        Number of subjects (default 7, as the paper).
    n_electrodes : int
        Analysed electrodes per subject (default 156; two corrupted electrodes and a trigger
        channel are added to each file).
    duration : float
        Movie length in seconds (default 3600; tests use 600).
    sfreq : float
        Sampling rate (default 2048 Hz as the release; tests use 512).
    snr : float
        Amplitude of the responses to word onsets against unit-SD noise (a unit-SD drive
        times a kernel of peak ``snr``). The defaults of ``snr`` and ``cut_gain`` give the
        trained networks a median electrode r of about 0.1 at responsive electrodes in both
        alignments on a 60-min movie (0.11 words, 0.09 scene cuts; see the module docstring).
    cut_gain : float
        Amplitude of the responses to scene cuts relative to word onsets (default 5.5).
    seed : int
        Seed of everything (movie, electrodes, noise, synthetic networks).
    verbose : bool, str or None
        Logging level (and progress bars) for this call.

    Returns
    -------
    MovieSimulation

    Raises
    ------
    FileExistsError
        ``out_dir`` exists and is not empty.

    Notes
    -----
    Signals are stored as float32: the default size (7 subjects x 159 channels x about 62 min
    at 2048 Hz) takes about 32 GB of disk; the test size (1 subject, 40 electrodes, 600 s at
    512 Hz) about 55 MB and a few seconds of CPU.
    """
    import h5py
    from scipy.fft import irfft, next_fast_len, rfft

    set_log_level(verbose)
    validate_type(out_dir, "path-like", "out_dir", owner="simulate_movie_seeg")
    for name, value, low in (("n_subjects", n_subjects, 1), ("n_electrodes", n_electrodes, 10)):
        validate_type(value, "int", name, owner="simulate_movie_seeg")
        if value < low:
            raise ValueError(f"The {name!r} parameter of simulate_movie_seeg must be >= {low}. "
                             f"Got {value!r} instead.")
    validate_type(duration, "numeric", "duration", owner="simulate_movie_seeg")
    validate_type(sfreq, "numeric", "sfreq", owner="simulate_movie_seeg")
    validate_type(snr, "numeric", "snr", owner="simulate_movie_seeg")
    validate_type(cut_gain, "numeric", "cut_gain", owner="simulate_movie_seeg")
    validate_type(seed, "int", "seed", owner="simulate_movie_seeg")
    if duration < 60:
        raise ValueError(f"The 'duration' parameter of simulate_movie_seeg must be >= 60 s. "
                         f"Got {duration!r} instead.")
    if sfreq < 200:
        raise ValueError(f"The 'sfreq' parameter of simulate_movie_seeg must be >= 200 Hz (60 Hz "
                         f"line noise and the kernels need it). Got {sfreq!r} instead.")
    if snr < 0:
        raise ValueError(f"The 'snr' parameter of simulate_movie_seeg must be >= 0. Got {snr!r}.")
    if cut_gain < 0:
        raise ValueError(f"The 'cut_gain' parameter of simulate_movie_seeg must be >= 0. "
                         f"Got {cut_gain!r}.")
    out = Path(out_dir).expanduser()
    _refuse_existing(out)
    sfreq = float(sfreq)
    movie_id = "sim-movie"
    movie = _make_movie(np.random.default_rng(_seed(seed, 0)), float(duration))
    transcript = _transcript(movie)

    out.mkdir(parents=True, exist_ok=True)
    truth_dir = out / "truth"
    truth_dir.mkdir()
    (out / "transcripts" / movie_id).mkdir(parents=True)
    transcript.to_csv(out / "transcripts" / movie_id / "features.csv", index=True)
    (out / "scene_annotations" / movie_id).mkdir(parents=True)
    pd.DataFrame({"start": movie["cut_times"]}).to_csv(
        out / "scene_annotations" / movie_id / "scenes.csv", index=False)
    _save_movie(truth_dir / "movie.npz", movie)

    # events of the movie, as the brain sees them
    cut_t = movie["cut_times"]
    word_t = movie["word_start"]
    ev_t = np.r_[cut_t, word_t]
    is_word = np.r_[np.zeros(cut_t.size, bool), np.ones(word_t.size, bool)]
    scene = _scene_at(movie, ev_t)
    l_ev = np.vstack([movie["l_sent"], np.zeros((1, _D))])[_context_sentence(movie, ev_t)]
    l_ev[is_word] = movie["l_word"]
    v_ev = movie["v"][scene]
    gain = np.where(is_word, 1.0, float(cut_gain))

    corrupted_json: dict[str, list[str]] = {}
    truth_rows = []
    sessions = {}
    subjects = [str(i + 1) for i in range(n_subjects)]
    bar = verbose if isinstance(verbose, bool) else None
    for si, subject in enumerate(progress(subjects, desc="simulate_movie_seeg", verbose=bar)):
        rng = np.random.default_rng(_seed(seed, 1, si))
        table = _subject_electrodes(rng, n_electrodes)
        good = table[~table["corrupted"]].reset_index(drop=True)
        n_good = len(good)
        code = {c: i for i, c in enumerate(CLASSES)}
        cls = good["class"].map(code).to_numpy()
        unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
        weights = {"cls": cls, "w": unit(rng.standard_normal((n_good, _D))),
                   "u": unit(rng.standard_normal((n_good, _D))),
                   "a": unit(rng.standard_normal((n_good, _D))), "scale": np.ones(n_good)}
        d = _drive(weights, v_ev, l_ev, movie["P"], is_word)
        sd = np.array([d[(~is_word) if c == 0 else is_word if c == 1 else slice(None), j].std()
                       for j, c in enumerate(cls)])
        weights["scale"] = np.where(sd > 0, 1.0 / np.where(sd > 0, sd, 1.0), 0.0)
        d = d * weights["scale"][None, :]
        np.savez(truth_dir / f"weights_sub_{subject}.npz", **weights)

        t0 = float(rng.uniform(5.0, 15.0))
        drift = float(rng.uniform(-2e-5, 2e-5))
        tail = float(rng.uniform(5.0, 10.0))
        n_samples = int(np.ceil((t0 + duration * (1 + drift) + tail) * sfreq))
        sessions[subject] = {"t0": t0, "drift": drift, "n_samples": n_samples}
        to_sample = lambda t: np.floor((t0 + np.asarray(t) * (1 + drift)) * sfreq  # noqa: E731
                                       + 0.5).astype(np.int64)
        ev_s = to_sample(ev_t)

        # triggers about 1 s apart, the last one before the movie ends
        mt = [float(rng.uniform(0.0, 0.3))]
        while mt[-1] + 1.15 < duration - 1.0:
            mt.append(mt[-1] + float(rng.uniform(0.85, 1.15)))
        mt = np.round(np.asarray(mt), 6)
        trig_idx = to_sample(mt)
        pd.DataFrame({"movie_time": mt, "index": trig_idx}).to_csv(
            _mk(out / "subject_timings" / f"sub_{subject}_trial000_timings.csv"), index=False)
        _mk(out / "subject_metadata" / f"sub_{subject}_trial000_metadata.json").write_text(
            json.dumps({"filename": movie_id, "title": "Simulated movie"}))

        # kernels
        peaks = rng.uniform(100.0, 400.0, n_good)
        widths = rng.uniform(150.0, 300.0, n_good)
        kernels = [_gamma_kernel(p, w, sfreq) for p, w in zip(peaks, widths)]
        wpeaks = [_window_peak_ms(k, sfreq) for k in kernels]

        # labels in h5 order: contacts with the trigger channel at a random position
        labels = list(table["electrode"])
        trig_pos = int(rng.integers(0, len(labels) + 1))
        labels.insert(trig_pos, "TRIG1")
        marked = [lab + ("*" if rng.random() < 0.08 else "#" if rng.random() < 0.08 else "")
                  for lab in labels]
        _mk(out / "electrode_labels" / f"sub_{subject}" / "electrode_labels.json").write_text(
            json.dumps(marked))
        corrupted_json[f"sub_{subject}"] = [lab for lab, bad in
                                            zip(table["electrode"], table["corrupted"]) if bad]
        loc = pd.DataFrame({"Electrode": table["electrode"], "L": -table["x"], "P": -table["y"],
                            "I": -table["z"], "DesikanKilliany": table["region"],
                            "Hemisphere": np.where(table["shaft"].str.startswith("L"), "L", "R")})
        loc.to_csv(_mk(out / "localization" / f"sub_{subject}" / "depth-wm.csv"), index=False)

        # signals, electrode by electrode, summed in the frequency domain: responses (event
        # trains times the kernel's transform) + shaft and own 1/f noise, then one inverse FFT
        longest = max(k.size for k in kernels)
        n_fft = next_fast_len(n_samples + longest)
        shaft_noise: dict[str, np.ndarray] = {}
        good_index = {name: j for j, name in enumerate(good["electrode"])}
        t_axis = np.arange(n_samples) / sfreq
        with h5py.File(out / f"sub_{subject}_trial000.h5", "w") as f:
            group = f.create_group("data")
            group.attrs["sfreq"] = sfreq
            for h5_i, label in enumerate(labels):
                if label == "TRIG1":
                    x = np.zeros(n_samples)
                    width = max(1, int(0.01 * sfreq))
                    for s in trig_idx:
                        x[s:s + width] = 1000.0
                    group.create_dataset(f"electrode_{h5_i}", data=x.astype(np.float32))
                    continue
                row = table.loc[table["electrode"] == label].iloc[0]
                if row["corrupted"]:
                    x = rng.standard_normal(n_samples) * 50.0
                    x[rng.integers(0, n_samples, 20)] += 5e4
                    group.create_dataset(f"electrode_{h5_i}",
                                         data=(x * _NOISE_SD_UV).astype(np.float32))
                    continue
                shaft = row["shaft"]
                if shaft not in shaft_noise:
                    shaft_noise[shaft] = _pink_spectrum(rng, n_fft, sfreq)
                spec = (np.sqrt(_SHAFT_SHARE) * shaft_noise[shaft]
                        + np.sqrt(1 - _SHAFT_SHARE) * _pink_spectrum(rng, n_fft, sfreq))
                j = good_index[label]
                if cls[j] != code["null"]:
                    train = np.zeros(n_fft)
                    np.add.at(train, ev_s, d[:, j] * gain)
                    spec += snr * rfft(train) * rfft(kernels[j], n_fft)
                noise = irfft(spec, n_fft)[:n_samples]
                noise += _LINE_SD * np.sqrt(2) * np.sin(2 * np.pi * 60.0 * t_axis
                                                        + rng.uniform(0, 2 * np.pi))
                group.create_dataset(f"electrode_{h5_i}",
                                     data=(noise * _NOISE_SD_UV).astype(np.float32))
        for j, row in good.iterrows():
            c = row["class"]
            truth_rows.append({
                "subject": subject, "electrode": row["electrode"], "class": c,
                "region": row["region"], "responsive": c != "null",
                "responsive_language": c in ("language", "nonlinear", "additive"),
                "responsive_vision": c in ("vision", "nonlinear", "additive"),
                "peak_ms": round(float(peaks[j]), 3), "width_ms": round(float(widths[j]), 3),
                "window_peak_ms": round(float(wpeaks[j]), 3),
                "x": row["x"], "y": row["y"], "z": row["z"]})
        logger.info("simulate_movie_seeg: subject %s written (%d samples)", subject, n_samples)

    (out / "corrupted_elec.json").write_text(json.dumps(corrupted_json))
    truth = pd.DataFrame(truth_rows)
    truth.to_csv(truth_dir / "electrodes.csv", index=False)
    params = {"seed": seed, "n_subjects": n_subjects, "n_electrodes": n_electrodes,
              "duration": float(duration), "sfreq": sfreq, "snr": float(snr),
              "cut_gain": float(cut_gain), "movie": movie_id,
              "trial": 0, "subjects": subjects, "sessions": sessions,
              "generator": "bcikit.simulate.movie_seeg/1"}
    (truth_dir / "simulation.json").write_text(json.dumps(params, indent=2))
    return MovieSimulation(root=out, subjects=subjects, trial=0, movie=movie_id, sfreq=sfreq,
                           params=params, truth=truth, _movie=movie)


def _mk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def load_movie_simulation(out_dir: str | Path) -> MovieSimulation:
    """A simulation written before by :func:`simulate_movie_seeg`.

    Raises
    ------
    ValueError
        ``out_dir`` holds no simulation (``truth/simulation.json`` is missing).
    """
    validate_type(out_dir, "path-like", "out_dir", owner="load_movie_simulation")
    root = Path(out_dir).expanduser()
    meta = root / "truth" / "simulation.json"
    if not meta.is_file():
        raise ValueError(f"{str(root)!r} holds no movie simulation ({str(meta)!r} is missing).")
    params = json.loads(meta.read_text())
    truth = pd.read_csv(root / "truth" / "electrodes.csv", dtype={"subject": str},
                        keep_default_na=False, na_values=[""])  # the class "null" is not NA
    return MovieSimulation(root=root, subjects=list(params["subjects"]),
                           trial=int(params["trial"]), movie=params["movie"],
                           sfreq=float(params["sfreq"]), params=params, truth=truth,
                           _movie=_load_movie(root / "truth" / "movie.npz"))
