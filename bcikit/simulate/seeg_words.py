"""An sEEG word-reading simulator with known ground truth (the Du-IN default data).

The generative model
--------------------
*Word code (shared by every subject).* 24 "articulatory units", each an 80-200 ms
spatio-temporal pattern over ``K = 8`` latent sources (2-3 sources active, each a raised-cosine
bump with its own delay inside the unit). Each of the 61 words is a fixed sequence of 3-5 units
(no unit twice in a row; every sequence different), played one after the other with 30 ms gaps
from the speech onset. Words are named by their units' syllables (``"badiku"``); the lexicon and
the unit patterns depend on a fixed seed only, so they are the same in every call and every
subject.

*Implantation (per subject).* 40-120 contacts on 6-12 shafts (``size="test"``: 40-60). Contacts
are numbered from the deep tip (1, 2, ...) 3.5 mm apart. Each shaft has a target region among
vSMC, STG, IFG, MTG and hippocampus (the first two shafts target vSMC and STG) that holds its
deepest contacts (vSMC/STG: 6-9 contacts); its other contacts lie in white matter. Shafts are
named with letters, with a prime for the left hemisphere (``"B'3"``), as in clinical montages.

*Signal.* Every contact records
``x = gain_run * (background + evoked + carrier * (1 + g * m) + reading) + line + offset_run``:

- ``background``: 1/f^2 noise (knee 1 Hz), the sum of a shaft-wide component and a
  contact-specific one (correlation 0.64 within a shaft);
- ``evoked``: a word-independent cue-evoked response (damped 6 Hz wave 0.1 s after the cue),
  with a per-contact amplitude;
- ``carrier``: 70-150 Hz band-limited noise (the high-gamma band);
- ``m = W @ s``: the word-specific modulation, only on vSMC/STG contacts. ``s`` are the K source
  time courses of the trial's unit sequence, ``W`` the subject's mixing (non-negative, smooth along
  the shaft: Gaussian bumps over the contact index, per-contact strength 0.3-1). STG contacts see
  the sources 100 ms later (auditory feedback). ``g = 2 * snr``, so ``snr=0`` gives null data;
- ``reading``: a word-independent high-gamma increase 0.15-0.6 s after the cue on IFG and MTG
  contacts (active, but not informative);
- ``line``: 50 Hz mains with a random phase per trial and per-contact gain jitter (5 %);
- ``gain_run`` (log-normal, sd 0.15) and ``offset_run`` (with a slow drift over the run): per run
  and contact, so models trained and tested inside one run look better than across runs.

*Trials.* ``n_trials_per_word`` trials of each word, spread evenly over ``n_runs`` runs in random
order, 4 s apart (+-0.5 s). Each is cut -0.5...+2.5 s around the cue at 1000 Hz. Speech starts
0.6-1.0 s after the cue (one value per subject), with a +-100 ms jitter per trial.

*Referencing.* The signals are generated monopolar, then each contact minus the next contact of
its shaft (``"A1-A2"``, the rule of :func:`bcikit.io.ieeg.bipolar_reference`). A bipolar channel
takes its anode's region; with the speech regions at the deep end of their shafts, the informative
bipolar channels are exactly those whose anode lies in vSMC/STG.

*Pre-training recordings.* Separate sessions (``session="pretrain"``) of continuous signals with
the same model: random unit sequences (80 % non-task pseudo-words of 3-5 units, 20 % task words)
separated by 0.3-2 s pauses, with no cue-evoked response; cut into 60 s segments.

*Truth.* Per subject: which channels are informative, their regions, each channel's SNR (variance
of the word-specific part over the variance of the rest), the mixing, the unit sequence of every
trial, and the accuracy of an oracle: shrinkage LDA on the true source time courses (100 ms bins,
leave-one-run-out), the ceiling set by the word code and the timing jitter alone (it does not
depend on ``snr``; the recordings' own accuracy does).

Everything is in volts, float32, and deterministic given ``random_state``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..utils import check_option, check_random_state, check_range, logger, progress, \
    set_log_level, validate_type

__all__ = [
    "REGIONS",
    "SPEECH_REGIONS",
    "N_UNITS",
    "N_SOURCES",
    "SIZES",
    "SEEGWords",
    "SubjectTruth",
    "make_seeg_words",
    "word_lexicon",
    "unit_patterns",
    "write_electrodes",
]

REGIONS: tuple[str, ...] = ("vSMC", "STG", "IFG", "MTG", "hippocampus", "white matter")
"""Region labels of the simulated contacts."""
SPEECH_REGIONS: tuple[str, ...] = ("vSMC", "STG")
"""Regions whose contacts carry the word-specific signal."""
N_UNITS = 24
N_SOURCES = 8
DATASET = "seeg_words"
SITE = "sim"
_LEXICON_SEED = 20240511
_GAP_S = 0.030
_CONTACT_SPACING_MM = 3.5
_STG_LAG_S = 0.100

#: Size presets. Explicit arguments of :func:`make_seeg_words` override them.
SIZES: dict[str, dict[str, Any]] = {
    "default": dict(n_subjects=4, n_trials_per_word=40, n_runs=5, n_words=61,
                    pretrain_minutes=30.0, n_contacts=(40, 120)),
    "test": dict(n_subjects=2, n_trials_per_word=8, n_runs=2, n_words=61,
                 pretrain_minutes=5.0, n_contacts=(40, 60)),
    "tiny": dict(n_subjects=2, n_trials_per_word=6, n_runs=2, n_words=8,
                 pretrain_minutes=1.0, n_contacts=(40, 48)),
}

# amplitudes (volts)
_BG_RMS = 30e-6
_HG_RMS = 3e-6
_EVOKED_UV = 10e-6
_LINE_UV = (10e-6, 30e-6)
_OFFSET_UV = 50e-6
_G_PER_SNR = 2.0
#: amplitude of the opt-in word-locked low-frequency potential per unit of ``lfp_snr``
_LFP_UV = 10e-6


# ------------------------------------------------------------------------------------ word code
_CONSONANTS = "bdgkmnpt"
_VOWELS = "aiu"


@lru_cache(maxsize=1)
def _lexicon_all() -> tuple[tuple[str, tuple[int, ...]], ...]:
    rng = np.random.default_rng(_LEXICON_SEED)
    seen: set[tuple[int, ...]] = set()
    words = []
    while len(words) < 61:
        n = int(rng.integers(3, 6))
        seq = [int(rng.integers(N_UNITS))]
        while len(seq) < n:
            u = int(rng.integers(N_UNITS))
            if u != seq[-1]:
                seq.append(u)
        t = tuple(seq)
        if t in seen:
            continue
        seen.add(t)
        words.append(("".join(_syllable(u) for u in t), t))
    return tuple(words)


def _syllable(unit: int) -> str:
    return _CONSONANTS[unit // len(_VOWELS)] + _VOWELS[unit % len(_VOWELS)]


def word_lexicon(n_words: int = 61) -> dict[str, tuple[int, ...]]:
    """The word code: ``{word: unit sequence}`` for the first ``n_words`` words (1-61).

    The lexicon depends on a fixed seed only: every subject and every call share it. A word's name
    spells its units (unit ``u`` is the syllable ``"bdgkmnpt"[u // 3] + "aiu"[u % 3]``).

    Examples
    --------
    >>> lex = word_lexicon(3)
    >>> all(3 <= len(seq) <= 5 for seq in lex.values())
    True
    """
    validate_type(n_words, "int", "n_words", owner="word_lexicon")
    check_range(n_words, "n_words", low=2, high=61, owner="word_lexicon")
    return dict(_lexicon_all()[:n_words])


@lru_cache(maxsize=4)
def _unit_params() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Durations (s), loadings (units, K) and delays (fraction of the duration)."""
    rng = np.random.default_rng(_LEXICON_SEED + 1)
    durations = rng.uniform(0.080, 0.200, N_UNITS)
    loadings = np.zeros((N_UNITS, N_SOURCES))
    for u in range(N_UNITS):
        active = rng.choice(N_SOURCES, size=int(rng.integers(2, 4)), replace=False)
        loadings[u, active] = rng.uniform(0.5, 1.0, active.size)
    delays = rng.uniform(0.0, 0.3, (N_UNITS, N_SOURCES))
    return durations, loadings, delays


def unit_patterns(sfreq: float = 1000.0) -> tuple[np.ndarray, np.ndarray]:
    """The 24 articulatory units sampled at ``sfreq``.

    Returns
    -------
    patterns : ndarray, shape (24, 8, n_max)
        Unit ``u``'s time course on each latent source (zero-padded after its duration).
    lengths : ndarray of int, shape (24,)
        Each unit's duration in samples (80-200 ms).
    """
    patterns, lengths = _unit_patterns(float(sfreq))
    return patterns.copy(), lengths.copy()


@lru_cache(maxsize=4)
def _unit_patterns(sfreq: float) -> tuple[np.ndarray, np.ndarray]:
    durations, loadings, delays = _unit_params()
    lengths = np.maximum(1, np.round(durations * sfreq).astype(int))
    out = np.zeros((N_UNITS, N_SOURCES, int(lengths.max())), dtype=np.float32)
    for u in range(N_UNITS):
        tau = np.arange(lengths[u]) / lengths[u]  # 0..1 over the unit
        width = 0.7
        phase = (tau[None, :] - delays[u][:, None]) / width
        bump = np.where((phase >= 0) & (phase <= 1), np.sin(np.pi * np.clip(phase, 0, 1)) ** 2, 0)
        out[u, :, :lengths[u]] = loadings[u][:, None] * bump
    return out, lengths


def _place_sequences(sources: np.ndarray, sequences: Sequence[Sequence[int]],
                     starts: np.ndarray, sfreq: float) -> None:
    """Add each sequence's unit patterns to ``sources[i]`` (K, T) from sample ``starts[i]``."""
    patterns, lengths = _unit_patterns(float(sfreq))
    gap = int(round(_GAP_S * sfreq))
    n_times = sources.shape[-1]
    for i, (seq, start) in enumerate(zip(sequences, starts)):
        pos = int(start)
        for u in seq:
            L = int(lengths[u])
            a, b = max(pos, 0), min(pos + L, n_times)
            if b > a:
                sources[i, :, a:b] += patterns[u, :, a - pos:b - pos]
            pos += L + gap


# ------------------------------------------------------------------------------------ layout
@dataclass
class _Layout:
    names: list[str]
    shaft: np.ndarray          # shaft index per contact
    shaft_names: list[str]
    contact: np.ndarray        # contact number per contact (1 = deepest)
    region: np.ndarray         # region label per contact
    xyz_mm: np.ndarray
    mixing: np.ndarray         # (n_contacts, K)
    lag: np.ndarray            # samples of delay per contact (STG)
    evoked_amp: np.ndarray
    line_gain: np.ndarray
    reading: np.ndarray        # bool: IFG/MTG contacts with the word-independent HG response
    pairs: np.ndarray          # (n_bipolar, 2) anode, cathode indices
    speech_onset: float


_SHAFT_LETTERS = "ABCDEFGHKLMNOPQRSTUVWXYZ"


#: the smallest and largest layouts _make_layout can draw (6 shafts, two of >= 10 contacts; 12 x 16)
_MIN_CONTACTS, _MAX_CONTACTS = 2 * 10 + 4 * 5, 12 * 16


def _make_layout(rng: np.random.Generator, n_contacts: tuple[int, int], sfreq: float) -> _Layout:
    lo, hi = n_contacts
    while True:
        n_shafts = int(rng.integers(6, 13))
        counts = rng.integers(5, 17, size=n_shafts)
        counts[:2] = np.maximum(counts[:2], 10)  # speech shafts hold a 6-9 contact block + WM
        if lo <= counts.sum() <= hi:
            break
    left = bool(rng.random() < 0.5)
    letters = rng.choice(list(_SHAFT_LETTERS), size=n_shafts, replace=False)
    shaft_names = [f"{c}'" if left else str(c) for c in letters]
    others = ("IFG", "MTG", "hippocampus")
    names, shaft, contact, region, xyz = [], [], [], [], []
    for s in range(n_shafts):
        n = int(counts[s])
        if s < 2:
            target = SPEECH_REGIONS[s]
            block = int(rng.integers(6, 10))
        else:
            target = others[(s - 2) % 3] if rng.random() < 0.8 else "white matter"
            block = int(rng.integers(3, n - 1))
        block = min(block, n - 1)
        # geometry: a straight shaft entering from the lateral surface towards the centre
        theta, phi = rng.uniform(0.3, 2.8), rng.uniform(-1.2, 1.2)
        direction = -np.array([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi),
                               np.cos(theta)])
        if left:
            direction[0] = abs(direction[0])  # entering from the left: pointing to +x
        else:
            direction[0] = -abs(direction[0])
        tip = -direction * rng.uniform(20.0, 40.0)
        for k in range(n):
            names.append(f"{shaft_names[s]}{k + 1}")
            shaft.append(s)
            contact.append(k + 1)
            region.append(target if k < block else "white matter")
            xyz.append(tip - direction * _CONTACT_SPACING_MM * k)
    shaft = np.array(shaft)
    contact = np.array(contact)
    region = np.array(region, dtype=object)
    n_total = len(names)
    mixing = np.zeros((n_total, N_SOURCES))
    for s in range(2):
        idx = np.flatnonzero((shaft == s) & (region == SPEECH_REGIONS[s]))
        pos = np.arange(idx.size, dtype=float)
        for k in range(N_SOURCES):
            mu = rng.uniform(-0.5, idx.size - 0.5)
            sigma = rng.uniform(1.5, 3.0)
            mixing[idx, k] += rng.uniform(0.4, 1.0) * np.exp(-(pos - mu) ** 2 / (2 * sigma ** 2))
        mixing[idx] *= rng.uniform(0.3, 1.0, (idx.size, 1))
    lag = np.where(region == "STG", int(round(_STG_LAG_S * sfreq)), 0)
    pairs = np.array([(i, i + 1) for i in range(n_total - 1) if shaft[i] == shaft[i + 1]])
    return _Layout(names=names, shaft=shaft, shaft_names=shaft_names, contact=contact,
                   region=region, xyz_mm=np.array(xyz), mixing=mixing, lag=lag,
                   evoked_amp=rng.normal(0.0, 1.0, n_total),
                   line_gain=1.0 + 0.05 * rng.standard_normal(n_total),
                   reading=np.isin(region, ("IFG", "MTG")), pairs=pairs,
                   speech_onset=float(rng.uniform(0.6, 1.0)))


# ------------------------------------------------------------------------------------ synthesis
def _spectral_noise(rng: np.random.Generator, shape: tuple[int, ...], n_times: int,
                    sfreq: float, *, kind: str) -> np.ndarray:
    """Gaussian noise with a given spectrum, unit variance, synthesised in the frequency domain.

    ``kind="pink"``: power ~ 1 / (1 + (f / 1 Hz)^2) (1/f^2 above a 1 Hz knee), no DC.
    ``kind="hg"``: flat 70-150 Hz, nothing outside.
    """
    freqs = np.fft.rfftfreq(n_times, 1.0 / sfreq)
    if kind == "pink":
        amp = 1.0 / np.sqrt(1.0 + (freqs / 1.0) ** 2)
        amp[0] = 0.0
        band = slice(None)
    else:
        sel = np.flatnonzero((freqs >= 70.0) & (freqs <= 150.0))
        band = slice(int(sel[0]), int(sel[-1]) + 1)
        amp = np.zeros(freqs.size)
        amp[band] = 1.0
    amp = amp[band]
    # irfft of coefficients with E|c|^2 = 2 a^2 gives variance 2 * sum(a^2) / n^2 per sample
    scale = (amp / np.sqrt(2.0 * np.sum(amp ** 2)) * n_times / np.sqrt(2.0)).astype(np.float32)
    n_band = amp.size
    coef = np.zeros(shape + (freqs.size,), dtype=np.complex64)
    noise = rng.standard_normal(shape + (2 * n_band,), dtype=np.float32).view(np.complex64)
    noise *= scale
    coef[..., band] = noise
    del noise
    return np.fft.irfft(coef, n=n_times, axis=-1)


def _evoked_waveform(n_times: int, sfreq: float, tmin: float) -> np.ndarray:
    t = tmin + np.arange(n_times) / sfreq - 0.1
    wave = np.where(t > 0, np.exp(-t / 0.15) * np.sin(2 * np.pi * 6.0 * t), 0.0)
    return wave.astype(np.float32)


def _reading_envelope(n_times: int, sfreq: float, tmin: float) -> np.ndarray:
    t = tmin + np.arange(n_times) / sfreq
    phase = (t - 0.15) / 0.45
    return np.where((phase >= 0) & (phase <= 1), np.sin(np.pi * np.clip(phase, 0, 1)) ** 2,
                    0.0).astype(np.float32)


def _shift(sources: np.ndarray, lag: int) -> np.ndarray:
    if lag == 0:
        return sources
    out = np.zeros_like(sources)
    out[..., lag:] = sources[..., :-lag]
    return out


def _render(rng: np.random.Generator, lay: _Layout, sources: np.ndarray, *, g: float,
            sfreq: float, tmin: float, cue: bool, gains: np.ndarray, offsets: np.ndarray,
            line_amp: np.ndarray, lfp: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Monopolar signals of one chunk of trials (or segments).

    ``sources`` (n, K, T); ``gains``/``offsets`` (n, C) per trial; ``line_amp`` (n,).
    Returns the signals (n, C, T) and the word-specific part on the speech contacts
    (n, n_speech, T) (both before the bipolar step, in volts).
    """
    n, _, n_times = sources.shape
    n_contacts = len(lay.names)
    n_shafts = len(lay.shaft_names)
    shaft_bg = _spectral_noise(rng, (n, n_shafts), n_times, sfreq, kind="pink")
    own_bg = _spectral_noise(rng, (n, n_contacts), n_times, sfreq, kind="pink")
    x = (0.8 * shaft_bg[:, lay.shaft] + 0.6 * own_bg) * np.float32(_BG_RMS)
    del shaft_bg, own_bg
    carrier = _spectral_noise(rng, (n, n_contacts), n_times, sfreq, kind="hg")
    carrier *= np.float32(_HG_RMS)
    speech = np.flatnonzero(lay.mixing.any(axis=1))
    signal = np.zeros((n, speech.size, n_times), dtype=np.float32)
    if speech.size and (g > 0 or lfp > 0):
        mix = lay.mixing[speech].astype(np.float32)
        for lag in np.unique(lay.lag[speech]):
            rows = np.flatnonzero(lay.lag[speech] == lag)
            m = np.einsum("ck,nkt->nct", mix[rows], _shift(sources, int(lag)))
            signal[:, rows] = carrier[:, speech[rows]] * (np.float32(g) * m)
            if lfp > 0:  # opt-in word-locked low-frequency potential (not in the spec)
                signal[:, rows] += np.float32(lfp * _LFP_UV) * m
    x += carrier
    if lay.reading.any():  # word-independent reading response: carrier * (1 + r(t))
        x[:, lay.reading] += carrier[:, lay.reading] * _reading_envelope(n_times, sfreq, tmin)
    x[:, speech] += signal
    del carrier
    if cue:
        wave = _evoked_waveform(n_times, sfreq, tmin)
        jitter = rng.uniform(0.8, 1.2, (n, 1)).astype(np.float32)
        x += (np.float32(_EVOKED_UV) * jitter * lay.evoked_amp[None, :].astype(np.float32)
              )[..., None] * wave[None, None, :]
    t = np.arange(n_times, dtype=np.float32) / np.float32(sfreq)
    phase = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    line = np.sin(np.float32(2 * np.pi * 50.0) * t[None, :] + phase[:, None]) * line_amp[:, None]
    x *= gains[..., None].astype(np.float32)
    signal *= gains[:, speech, None].astype(np.float32)
    x += line[:, None, :].astype(np.float32) * lay.line_gain[None, :, None].astype(np.float32)
    x += offsets[..., None].astype(np.float32)
    return x, signal


def _bipolar(x: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    return x[:, pairs[:, 0]] - x[:, pairs[:, 1]]


# ------------------------------------------------------------------------------------ outputs
@dataclass
class SubjectTruth:
    """Ground truth of one simulated subject.

    Attributes
    ----------
    channels : DataFrame
        One row per returned channel: ``name``, ``region``, ``shaft``, ``informative`` (bool),
        ``snr`` (variance of the word-specific part / variance of the rest, over the trials),
        and for bipolar channels ``anode``/``cathode`` (contact names).
    informative : ndarray of bool
        Per returned channel: it carries the word-specific signal.
    mixing : ndarray, shape (n_contacts, 8)
        Monopolar mixing from the latent sources to each contact's high-gamma modulation
        (rows of contacts outside vSMC/STG are zero); rows follow ``contacts``.
    contacts : list of str
        The monopolar contact names (rows of ``mixing``).
    unit_sequences : list of tuple
        The unit sequence of each trial (trial order of the TrialSet).
    speech_onset : float
        The subject's mean speech onset after the cue (s).
    oracle_accuracy : float
        Leave-one-run-out accuracy of shrinkage LDA on the true source time courses (100 ms
        bins). None when the trials have a single run.
    chance : float
        1 / number of words.
    pretrain_events : DataFrame
        Sequences spoken in the pre-training recordings: run, onset (s), units, task_word.
    """

    channels: pd.DataFrame
    informative: np.ndarray
    mixing: np.ndarray
    contacts: list[str]
    unit_sequences: list[tuple[int, ...]]
    speech_onset: float
    oracle_accuracy: float | None
    chance: float
    pretrain_events: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass
class SEEGWords:
    """What :func:`make_seeg_words` returns.

    Attributes
    ----------
    trials : dict of str to TrialSet
        Word-reading trials per subject (subjects have different channels).
    pretrain : dict of str to TrialSet
        Unlabelled pre-training segments per subject (same channels as the trials; ``y`` is 0,
        ``classes`` None; ``meta.session == "pretrain"``).
    electrodes : dict of str to DataFrame
        Monopolar contacts in :func:`bcikit.io.ieeg.read_electrodes` form (``name``, ``x``,
        ``y``, ``z`` in metres, ``shaft``, ``contact``, ``region``, ``type``).
    truth : dict of str to SubjectTruth
    lexicon : dict of str to tuple
        Word -> unit sequence (shared by all subjects).
    classes : list of str
        Word names in class-code order (sorted, as the official loader orders them).
    params : dict
        The arguments the data were made with.
    """

    trials: dict
    pretrain: dict
    electrodes: dict
    truth: dict
    lexicon: dict
    classes: list
    params: dict

    @property
    def subjects(self) -> list[str]:
        return list(self.trials)

    def region_map(self, subject: str) -> dict[str, list[str]]:
        """``{region: [channel names]}`` of a subject's returned channels."""
        ch = self.truth[subject].channels
        return {r: ch["name"][ch["region"] == r].tolist() for r in pd.unique(ch["region"])}


def write_electrodes(table: pd.DataFrame, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write an electrodes table as a BIDS ``*_electrodes.tsv`` (millimetres, ``n/a`` for gaps).

    Parameters
    ----------
    table : DataFrame
        A table in :func:`bcikit.io.ieeg.read_electrodes` form (``x``/``y``/``z`` in metres).
    path : path-like
        The ``.tsv`` file to write.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
        The file written; :func:`bcikit.io.ieeg.read_electrodes` reads it back.
    """
    validate_type(table, pd.DataFrame, "table", owner="write_electrodes")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} already exists; pass overwrite=True to replace it.")
    out = pd.DataFrame({"name": table["name"]})
    for c in ("x", "y", "z"):
        out[c] = np.round(table[c].to_numpy(float) * 1000.0, 3)
    out["size"] = "n/a"
    for c in ("type", "region", "shaft", "contact"):
        if c in table.columns:
            out[c] = table[c].to_numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, sep="\t", index=False, na_rep="n/a")
    return path


def _electrodes_table(lay: _Layout) -> pd.DataFrame:
    df = pd.DataFrame({
        "name": lay.names,
        "x": lay.xyz_mm[:, 0] / 1000.0, "y": lay.xyz_mm[:, 1] / 1000.0,
        "z": lay.xyz_mm[:, 2] / 1000.0,
        "shaft": [lay.shaft_names[s] for s in lay.shaft],
        "contact": pd.array(lay.contact, dtype="Int64"),
        "region": np.array(lay.region, dtype=object),
        "type": "depth",
    })
    df.attrs.update(units="m", coord_frame="ras", region_column="region", file=None)
    return df


def _info(names: list[str], pos_mm: np.ndarray, sfreq: float):
    import mne

    info = mne.create_info(list(names), sfreq, "seeg")
    for ch, p in zip(info["chs"], pos_mm):
        ch["loc"][:3] = p / 1000.0
    return info


def _binned(a: np.ndarray, sfreq: float, bin_s: float = 0.1) -> np.ndarray:
    step = int(round(bin_s * sfreq))
    n_bins = a.shape[-1] // step
    return a[..., :n_bins * step].reshape(a.shape[:-1] + (n_bins, step)).mean(-1)


def shrinkage_lda_predict(X_train: np.ndarray, y_train: np.ndarray,
                          X_test: np.ndarray) -> np.ndarray:
    """Shrinkage LDA (pooled within-class covariance, Ledoit-Wolf shrinkage, equal priors).

    The decision rule of scikit-learn's ``LinearDiscriminantAnalysis(solver="lsqr",
    shrinkage="auto")`` with uniform priors, except that the shrinkage is estimated once on the
    pooled centred data instead of per class (much faster with many classes).
    """
    from sklearn.covariance import ledoit_wolf
    from threadpoolctl import threadpool_limits

    X_train = np.asarray(X_train, np.float64)
    classes = np.unique(y_train)
    means = np.stack([X_train[y_train == c].mean(0) for c in classes])
    centred = X_train - means[np.searchsorted(classes, y_train)]
    with threadpool_limits(1):  # small problems: threads only add overhead
        cov, _ = ledoit_wolf(centred, assume_centered=True)
        # a tiny ridge keeps the solve defined when the classes have one trial each
        ridge = 1e-6 * (np.trace(cov) / cov.shape[0] if np.trace(cov) > 0 else 1.0)
        coef = np.linalg.solve(cov + ridge * np.eye(cov.shape[0]), means.T)  # (n_features, n_classes)
    intercept = -0.5 * np.sum(means.T * coef, axis=0)
    scores = np.asarray(X_test, np.float64) @ coef + intercept
    return classes[np.argmax(scores, axis=1)]


def _loro_lda(features: np.ndarray, y: np.ndarray, runs: np.ndarray) -> float | None:
    uruns = pd.unique(runs)
    if len(uruns) < 2:
        return None
    correct = 0
    for r in uruns:
        test = runs == r
        pred = shrinkage_lda_predict(features[~test], y[~test], features[test])
        correct += int((pred == y[test]).sum())
    return correct / len(y)


# ------------------------------------------------------------------------------------ main
def make_seeg_words(n_subjects: int | None = None, *, size: str = "default",
                    n_trials_per_word: int | None = None, n_runs: int | None = None,
                    n_words: int | None = None, snr: float = 1.0,
                    pretrain_minutes: float | None = None,
                    n_contacts: tuple[int, int] | None = None, reference: str = "bipolar",
                    sfreq: float = 1000.0, chunk_size: int = 64, random_state: Any = None,
                    lfp_snr: float = 0.0,
                    verbose: bool | str | int | None = None) -> SEEGWords:
    """Simulate sEEG word-reading trials and unlabelled pre-training recordings.

    See the module docstring for the generative model.

    Parameters
    ----------
    n_subjects : int or None
        Number of subjects (``"S01"``, ``"S02"``...). None: the size preset's.
    size : {'default', 'test', 'tiny'}
        Preset (:data:`SIZES`): ``'default'`` 4 subjects, 61 words x 40 trials over 5 runs, 30 min
        of pre-training each; ``'test'`` 2 subjects, 61 x 8 over 2 runs, 5 min, 40-60 contacts;
        ``'tiny'`` 2 subjects, 8 words x 6 over 2 runs, 1 min (for unit tests).
    n_trials_per_word, n_runs, n_words, pretrain_minutes, n_contacts
        Override the preset. ``n_trials_per_word`` must be a multiple of ``n_runs`` (each run
        holds every word equally often). ``pretrain_minutes=0`` makes no pre-training data.
        ``n_contacts=(low, high)`` bounds the monopolar contacts per subject (low >= 30,
        high >= 40: the smallest layout has 40).
    snr : float
        Strength of the word-specific high-gamma modulation (``g = 2 * snr``); 0 gives null data
        (with ``lfp_snr=0``).
    reference : {'bipolar', 'monopolar'}
        Return bipolar derivations within shafts (default) or the monopolar contacts.
    sfreq : float
        Sampling rate in Hz (> 300, so that the 70-150 Hz band exists).
    chunk_size : int
        Trials synthesised at once (memory vs speed).
    random_state : None, int or numpy Generator
        Seed of everything subject-specific (the lexicon is fixed).
    lfp_snr : float
        Opt-in, **not in the spec** (``specs/duin.md`` §5 puts the word information in high
        gamma only): a word-locked low-frequency potential on the vSMC/STG contacts,
        ``lfp_snr * 10 uV * m(t)`` with the same sources, mixing and lags ``m = W @ s`` that
        modulate the carrier (80-200 ms bumps, so mostly below 15 Hz). Real speech sEEG carries
        word information in such evoked components as well as in high gamma; a linear patch
        tokenizer (Du-IN's) can use them directly, while the high-gamma envelope must first be
        rectified. 0 (default) leaves the spec's simulator unchanged (bit for bit: no random
        draws are added).
    verbose : bool, str, int or None
        Progress bar and logging.

    Returns
    -------
    SEEGWords

    Raises
    ------
    ValueError
        On a bad size, reference or count.

    Examples
    --------
    >>> sim = make_seeg_words(size="tiny", random_state=0)  # doctest: +SKIP
    >>> ts = sim.trials["S01"]; ts.X.shape[2]  # doctest: +SKIP
    3000
    """
    owner = "make_seeg_words"
    set_log_level(verbose)
    check_option(size, tuple(SIZES), "size", owner=owner)
    check_option(reference, ("bipolar", "monopolar"), "reference", owner=owner)
    preset = dict(SIZES[size])
    given = dict(n_subjects=n_subjects, n_trials_per_word=n_trials_per_word, n_runs=n_runs,
                 n_words=n_words, pretrain_minutes=pretrain_minutes, n_contacts=n_contacts)
    cfg = {k: (preset[k] if v is None else v) for k, v in given.items()}
    for key in ("n_subjects", "n_trials_per_word", "n_runs", "n_words"):
        validate_type(cfg[key], "int", key, owner=owner)
    check_range(cfg["n_subjects"], "n_subjects", low=1, owner=owner)
    check_range(cfg["n_runs"], "n_runs", low=1, owner=owner)
    check_range(cfg["n_words"], "n_words", low=2, high=61, owner=owner)
    check_range(cfg["n_trials_per_word"], "n_trials_per_word", low=1, owner=owner)
    if cfg["n_trials_per_word"] % cfg["n_runs"]:
        raise ValueError(f"The 'n_trials_per_word' parameter of {owner} must be a multiple of "
                         f"n_runs={cfg['n_runs']} (every run holds each word equally often). "
                         f"Got {cfg['n_trials_per_word']} instead.")
    validate_type(snr, "numeric", "snr", owner=owner)
    check_range(float(snr), "snr", low=0.0, owner=owner)
    validate_type(lfp_snr, "numeric", "lfp_snr", owner=owner)
    check_range(float(lfp_snr), "lfp_snr", low=0.0, owner=owner)
    cfg["lfp"] = float(lfp_snr)
    validate_type(cfg["pretrain_minutes"], "numeric", "pretrain_minutes", owner=owner)
    check_range(float(cfg["pretrain_minutes"]), "pretrain_minutes", low=0.0, owner=owner)
    lo_hi = cfg["n_contacts"]
    if (not isinstance(lo_hi, (tuple, list)) or len(lo_hi) != 2 or not all(
            isinstance(v, (int, np.integer)) for v in lo_hi) or not 30 <= lo_hi[0] <= lo_hi[1]
            or lo_hi[1] < _MIN_CONTACTS or lo_hi[0] > _MAX_CONTACTS):
        raise ValueError(f"The 'n_contacts' parameter of {owner} must be (low, high) integers "
                         f"with 30 <= low <= high, high >= {_MIN_CONTACTS} and low <= "
                         f"{_MAX_CONTACTS} (a layout has 6-12 shafts of 5-16 contacts, the two "
                         f"speech shafts at least 10). Got {lo_hi!r} instead.")
    validate_type(sfreq, "numeric", "sfreq", owner=owner)
    check_range(float(sfreq), "sfreq", low=300.0, low_inclusive=False, owner=owner)
    validate_type(chunk_size, "int", "chunk_size", owner=owner)
    check_range(chunk_size, "chunk_size", low=1, owner=owner)
    sfreq = float(sfreq)
    rng = check_random_state(random_state)

    lexicon = word_lexicon(cfg["n_words"])
    classes = sorted(lexicon)
    tmin, tmax = -0.5, 2.5
    n_times = int(round((tmax - tmin) * sfreq))
    g = _G_PER_SNR * float(snr)
    subject_seeds = rng.integers(0, 2 ** 63 - 1, size=cfg["n_subjects"])

    trials, pretrain, electrodes, truth = {}, {}, {}, {}
    for si in progress(range(cfg["n_subjects"]), desc=f"{owner}: subjects", verbose=verbose):
        subject = f"S{si + 1:02d}"
        srng = np.random.default_rng(int(subject_seeds[si]))
        lay = _make_layout(srng, (int(lo_hi[0]), int(lo_hi[1])), sfreq)
        ts, tr = _make_trials(srng, lay, subject, lexicon, classes, cfg, g=g, sfreq=sfreq,
                              tmin=tmin, n_times=n_times, reference=reference,
                              chunk_size=chunk_size)
        pt, events = _make_pretrain(srng, lay, subject, lexicon, cfg, g=g, sfreq=sfreq,
                                    reference=reference)
        tr.pretrain_events = events
        trials[subject], pretrain[subject], truth[subject] = ts, pt, tr
        electrodes[subject] = _electrodes_table(lay)
        logger.info("%s: %d contacts on %d shafts, %d channels (%d informative), oracle %.2f",
                    subject, len(lay.names), len(lay.shaft_names), ts.n_chans,
                    int(tr.informative.sum()), tr.oracle_accuracy or float("nan"))
    params = dict({k: v for k, v in cfg.items() if k != "lfp"}, size=size, snr=float(snr),
                  lfp_snr=float(lfp_snr), reference=reference, sfreq=sfreq,
                  random_state=random_state if isinstance(random_state, (int, type(None)))
                  else "generator")
    return SEEGWords(trials=trials, pretrain=pretrain, electrodes=electrodes, truth=truth,
                     lexicon=lexicon, classes=classes, params=params)


def _run_gains(rng, n_runs: int, n_contacts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gains = np.exp(0.15 * rng.standard_normal((n_runs, n_contacts)))
    offsets = _OFFSET_UV * rng.standard_normal((n_runs, n_contacts))
    drift = 0.5 * _OFFSET_UV * rng.standard_normal((n_runs, n_contacts))
    return gains, offsets, drift


def _channel_table(lay: _Layout, reference: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    informative_contact = lay.mixing.any(axis=1)
    if reference == "bipolar":
        a, k = lay.pairs[:, 0], lay.pairs[:, 1]
        names = [f"{lay.names[i]}-{lay.names[j]}" for i, j in zip(a, k)]
        df = pd.DataFrame({"name": names, "region": lay.region[a],
                           "shaft": [lay.shaft_names[s] for s in lay.shaft[a]],
                           "informative": informative_contact[a] | informative_contact[k],
                           "anode": [lay.names[i] for i in a],
                           "cathode": [lay.names[j] for j in k]})
        pos = (lay.xyz_mm[a] + lay.xyz_mm[k]) / 2.0
    else:
        df = pd.DataFrame({"name": lay.names, "region": lay.region,
                           "shaft": [lay.shaft_names[s] for s in lay.shaft],
                           "informative": informative_contact})
        pos = lay.xyz_mm
    return df, pos, informative_contact


def _make_trials(rng, lay: _Layout, subject: str, lexicon: dict, classes: list, cfg: dict, *,
                 g: float, sfreq: float, tmin: float, n_times: int, reference: str,
                 chunk_size: int):
    from ..data.trialset import TrialSet

    n_runs, per_word = cfg["n_runs"], cfg["n_trials_per_word"] // cfg["n_runs"]
    words = list(lexicon)
    run_of, word_of = [], []
    for r in range(n_runs):
        order = rng.permutation(np.repeat(np.arange(len(words)), per_word))
        run_of.extend([r] * order.size)
        word_of.extend(order.tolist())
    run_of = np.array(run_of)
    n = run_of.size
    seqs = [lexicon[words[w]] for w in word_of]
    speech_onset = lay.speech_onset + rng.uniform(-0.1, 0.1, n)
    starts = np.round((speech_onset - tmin) * sfreq).astype(int)
    # trial onsets in the run: 4 s apart +- 0.5 s, the first at 5 s
    onset = np.zeros(n)
    for r in range(n_runs):
        idx = np.flatnonzero(run_of == r)
        onset[idx] = 5.0 + np.cumsum(np.r_[0.0, rng.uniform(3.5, 4.5, idx.size - 1)])
    gains_r, offsets_r, drift_r = _run_gains(rng, n_runs, len(lay.names))
    frac = np.zeros(n)
    for r in range(n_runs):
        idx = np.flatnonzero(run_of == r)
        frac[idx] = np.linspace(0.0, 1.0, idx.size) if idx.size > 1 else 0.0
    gains = gains_r[run_of]
    offsets = offsets_r[run_of] + drift_r[run_of] * frac[:, None]
    line_amp = rng.uniform(*_LINE_UV, n_runs)[run_of].astype(np.float32)

    table, pos, informative_contact = _channel_table(lay, reference)
    n_out = len(table)
    X = np.empty((n, n_out, n_times), dtype=np.float32)
    speech = np.flatnonzero(informative_contact)
    var_sig = np.zeros(n_out)
    var_rest = np.zeros(n_out)
    src_feat = np.zeros((n, N_SOURCES, int(n_times // round(0.1 * sfreq))), dtype=np.float32)
    for c0 in range(0, n, chunk_size):
        sl = slice(c0, min(n, c0 + chunk_size))
        m = sl.stop - sl.start
        sources = np.zeros((m, N_SOURCES, n_times), dtype=np.float32)
        _place_sequences(sources, seqs[sl], starts[sl], sfreq)
        x, sig = _render(rng, lay, sources, g=g, sfreq=sfreq, tmin=tmin, cue=True,
                         gains=gains[sl], offsets=offsets[sl], line_amp=line_amp[sl],
                         lfp=cfg["lfp"])
        src_feat[sl] = _binned(sources, sfreq)
        if reference == "bipolar":
            np.subtract(x[:, lay.pairs[:, 0]], x[:, lay.pairs[:, 1]], out=X[sl])
        else:
            X[sl] = x
        # SNR of the channels that carry signal (the others have none: SNR 0)
        full_sig = np.zeros((m, len(lay.names), n_times), dtype=np.float32)
        full_sig[:, speech] = sig
        if reference == "bipolar":
            rows = np.flatnonzero(table["informative"].to_numpy(bool))
            out_sig = full_sig[:, lay.pairs[rows, 0]] - full_sig[:, lay.pairs[rows, 1]]
        else:
            rows = speech
            out_sig = sig
        var_sig[rows] += out_sig.var(axis=-1).sum(axis=0)
        var_rest[rows] += (X[sl][:, rows] - out_sig).var(axis=-1).sum(axis=0)
        del x, sig, full_sig, out_sig, sources
    table["snr"] = var_sig / np.maximum(var_rest, 1e-30)
    info = _info(table["name"].tolist(), pos, sfreq)
    y = np.array([classes.index(words[w]) for w in word_of], dtype=np.int64)
    meta = pd.DataFrame({
        "subject": subject, "session": "task", "run": [f"run{r + 1}" for r in run_of],
        "dataset": DATASET, "site": SITE, "onset": onset,
        "word": [words[w] for w in word_of],
        "units": ["-".join(str(u) for u in s) for s in seqs],
        "speech_onset": speech_onset,
    })
    ts = TrialSet(X, y, meta, info, classes, tmin, check_finite=False)
    # oracles (leave-one-run-out shrinkage LDA)
    runs = meta["run"].to_numpy()
    oracle = _loro_lda(src_feat.reshape(n, -1), y, runs)
    tr = SubjectTruth(channels=table, informative=table["informative"].to_numpy(bool),
                      mixing=lay.mixing.copy(), contacts=list(lay.names), unit_sequences=seqs,
                      speech_onset=lay.speech_onset, oracle_accuracy=oracle,
                      chance=1.0 / len(lexicon))
    return ts, tr


def _make_pretrain(rng, lay: _Layout, subject: str, lexicon: dict, cfg: dict, *, g: float,
                   sfreq: float, reference: str):
    from ..data.trialset import TrialSet

    minutes = float(cfg["pretrain_minutes"])
    seg_s = 60.0
    n_seg = int(np.ceil(minutes * 60.0 / seg_s - 1e-9)) if minutes > 0 else 0
    seg_len = int(round(seg_s * sfreq))
    if n_seg and minutes * 60.0 < seg_s:
        seg_len = int(round(minutes * 60.0 * sfreq))
    table, pos, _ = _channel_table(lay, reference)
    info = _info(table["name"].tolist(), pos, sfreq)
    if n_seg == 0:
        empty = np.zeros((0, len(table), 0), dtype=np.float32)
        return (TrialSet(empty, np.zeros(0, np.int64), None, info, None, 0.0),
                pd.DataFrame(columns=["run", "onset", "units", "task_word"]))
    # one recording ("run") per 5 minutes, cut into 60 s segments
    seg_per_run = 5
    run_of = np.arange(n_seg) // seg_per_run
    n_runs = int(run_of.max()) + 1
    gains_r, offsets_r, drift_r = _run_gains(rng, n_runs, len(lay.names))
    words = list(lexicon.values())
    X = np.empty((n_seg, len(table), seg_len), dtype=np.float32)
    events = []
    for s in range(n_seg):
        seqs, starts = [], []
        t = rng.uniform(0.2, 1.0)
        while True:
            if rng.random() < 0.2:
                seq = words[int(rng.integers(len(words)))]
                task = True
            else:
                k = int(rng.integers(3, 6))
                seq = tuple(int(u) for u in rng.integers(0, N_UNITS, k))
                task = False
            dur = 0.2 * len(seq)
            if t + dur > seg_len / sfreq:
                break
            seqs.append(seq)
            starts.append(int(round(t * sfreq)))
            events.append({"run": f"pt{run_of[s] + 1}", "segment": s,
                           "onset": (s % seg_per_run) * seg_s + t,
                           "units": "-".join(map(str, seq)), "task_word": task})
            t += dur + rng.uniform(0.3, 2.0)
        sources = np.zeros((1, N_SOURCES, seg_len), dtype=np.float32)
        for seq, st in zip(seqs, starts):
            _place_sequences(sources, [seq], np.array([st]), sfreq)
        r = run_of[s]
        frac = (s % seg_per_run) / seg_per_run
        x, _ = _render(rng, lay, sources, g=g, sfreq=sfreq, tmin=0.0, cue=False,
                       gains=gains_r[r][None], offsets=(offsets_r[r] + drift_r[r] * frac)[None],
                       line_amp=np.array([rng.uniform(*_LINE_UV)], dtype=np.float32),
                       lfp=cfg["lfp"])
        X[s] = _bipolar(x, lay.pairs)[0] if reference == "bipolar" else x[0]
    meta = pd.DataFrame({"subject": subject, "session": "pretrain",
                         "run": [f"pt{r + 1}" for r in run_of], "dataset": DATASET,
                         "site": SITE, "onset": (np.arange(n_seg) % seg_per_run) * seg_s,
                         "segment": np.arange(n_seg)})
    ts = TrialSet(X, np.zeros(n_seg, np.int64), meta, info, None, 0.0, check_finite=False)
    return ts, pd.DataFrame(events)
