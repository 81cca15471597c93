"""A motor-imagery EEG simulator with known ground truth.

The generative model, per subject
---------------------------------
*Head and sensors.* Electrodes sit at the positions of MNE's template 10-05 montage (Colin27);
the head is a four-shell sphere (brain, CSF, skull, scalp: MNE's ``make_sphere_model`` defaults)
fitted to the 10-10 positions, and every source reaches the electrodes through MNE's sphere forward model
(``make_forward_dipole``), so spatial patterns are smooth and broad the way skull conduction makes
them, and they change when the cap moves.

*Sources.* Current dipoles with a radial orientation tilted at random, in fixed cortical areas:
left and right hand areas (under C3 and C4), the foot area (deep, under Cz/CPz), left and right
tongue areas (lateral, inferior: towards FC5/C5/T7 and their right twins) and two parieto-occipital
alpha generators (PO3/PO4). Each sensorimotor source carries a mu rhythm (at the subject's alpha
peak) and a beta rhythm; the occipital sources carry alpha. Rhythms are narrow-band noise whose
amplitude waxes and wanes spontaneously (a slow log-normal envelope).

*Task.* During imagery (from the cue for ``trial_duration`` seconds, onset ramp 0.2-0.8 s) the
rhythms of the area of the imagined limb desynchronise (event-related desynchronisation, ERD):
left hand -> right-hemisphere hand area (C4), right hand -> left-hemisphere hand area (C3), feet
-> midline foot area (Cz), tongue -> both lateral tongue areas. The ipsilateral hand area
desynchronises weakly; foot and tongue imagery enhance the hand-area mu ("focal ERD / surround
ERS"); beta rebounds (ERS) after the imagery ends. ERD depth = ``0.85 * (1 - difficulty)`` times the
subject's ERD strength times a trial-to-trial factor, so ``difficulty=1`` leaves no class
information.

*Background.* Forty dipoles at random positions and orientations with 1/f^beta ("pink") time
courses (beta per subject in [1.0, 1.6]) give spatially correlated background activity; each
electrode adds its own pink and white noise.

*Subjects* differ in source positions (0.1 rad, about 7 mm at the cortex), orientations (tilt
up to 35 degrees), alpha peak frequency (N(10, 0.9) Hz), beta peak frequency (N(20, 2.5) Hz),
rhythm amplitudes, ERD strength (N(1, 0.25), clipped to [0.4, 1.4]), 1/f exponent and background
level. *Sessions* differ by ``session_shift``: the cap is put on again (a rotation of
``0.12 * session_shift`` rad standard deviation, about 11 mm x ``session_shift`` at the scalp),
electrode gains, background level, rhythm amplitudes, ERD strength and peak frequencies drift.

*Artifacts* (``artifact_rate`` per trial length of recording, anywhere in the run): eye blinks on
frontal channels (80-200 uV at Fp1/Fp2, decaying with distance from the eyes), muscle bursts
(20-120 Hz noise over temporal/frontal-lateral channels, one side or both) and electrode pops
(a step of 100-400 uV on one channel, decaying exponentially).

Everything is in volts and deterministic given ``seed``; subject ``k`` depends only on the seed,
``k`` and the knobs, not on ``n_subjects``.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import mne
import numpy as np
import pandas as pd

from ..utils import check_option, check_range, logger, progress, set_log_level, validate_type

__all__ = [
    "MI_CLASSES",
    "BNCI2014_001_CHANNELS",
    "make_motor_imagery",
    "motor_imagery_oracle",
    "MIOracle",
    "simulate_mi_raws",
    "resolve_channels",
]

MI_CLASSES: tuple[str, ...] = ("left_hand", "right_hand", "feet", "tongue")
"""Class names in code order; ``n_classes=k`` uses the first ``k``."""

BNCI2014_001_CHANNELS: tuple[str, ...] = (
    "Fz", "FC3", "FC1", "FCz", "FC2", "FC4", "C5", "C3", "C1", "Cz", "C2", "C4", "C6",
    "CP3", "CP1", "CPz", "CP2", "CP4", "P1", "Pz", "P2", "POz",
)
"""The 22 EEG channels of BCI Competition IV 2a (BNCI2014_001), the default layout."""

DATASET = "sim-mi"
SITE = "sim"
LINE_FREQ = 50.0
PRE_CUE = 2.0  # seconds from trial start (fixation cross) to the cue, as in BCI IV 2a
REST = (1.5, 2.5)  # inter-trial rest, uniform, seconds
LEAD_IN = 2.0
TAIL = 2.0
ERD_MAX = 0.85
N_BACKGROUND = 40

# (ERD factor per source) for each class; negative = enhancement (ERS).
_CLASS_ERD: dict[str, dict[str, float]] = {
    "left_hand": {"hand_R": 1.0, "hand_L": 0.3, "feet": 0.1, "tongue_L": 0.1, "tongue_R": 0.1},
    "right_hand": {"hand_L": 1.0, "hand_R": 0.3, "feet": 0.1, "tongue_L": 0.1, "tongue_R": 0.1},
    "feet": {"feet": 1.0, "hand_L": -0.4, "hand_R": -0.4, "tongue_L": 0.1, "tongue_R": 0.1},
    "tongue": {"tongue_L": 1.0, "tongue_R": 1.0, "hand_L": -0.3, "hand_R": -0.3, "feet": 0.1},
}

# name: (electrode directions averaged with weights, eccentricity as a fraction of head radius,
#        mu/alpha RMS at the peak electrode in uV, beta RMS in uV)
_SOURCES: dict[str, tuple[dict[str, float], float, float, float]] = {
    "hand_L": ({"C3": 0.8, "CP3": 0.2}, 0.74, 7.0, 3.0),
    "hand_R": ({"C4": 0.8, "CP4": 0.2}, 0.74, 7.0, 3.0),
    "feet": ({"Cz": 0.7, "CPz": 0.3}, 0.62, 5.0, 2.5),
    "tongue_L": ({"FC5": 1.0, "C5": 1.0, "FT7": 1.0, "T7": 1.0}, 0.72, 4.0, 2.0),
    "tongue_R": ({"FC6": 1.0, "C6": 1.0, "FT8": 1.0, "T8": 1.0}, 0.72, 4.0, 2.0),
    "alpha_L": ({"PO3": 1.0}, 0.70, 8.0, 0.0),
    "alpha_R": ({"PO4": 1.0}, 0.70, 8.0, 0.0),
}
_TASK_SOURCES = ("hand_L", "hand_R", "feet", "tongue_L", "tongue_R")

_ARTIFACT_KINDS = ("blink", "muscle", "pop")
_ARTIFACT_P = (0.5, 0.3, 0.2)
_MUSCLE_SITES = (("T7", "T8"), ("FT7", "FT8"), ("F7", "F8"), ("TP7", "TP8"))

_TEN_TWENTY_CORE = ("Fp1", "Fpz", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4",
                    "T8", "P7", "P3", "Pz", "P4", "P8", "O1", "Oz", "O2")
_ALIASES = ("T3", "T4", "T5", "T6", "M1", "M2", "A1", "A2")


@contextmanager
def _verbosity(verbose: bool | str | int | None):
    """Set bcikit's log level for the duration of a call (as MNE's ``verbose=`` does)."""
    level = logger.level
    set_log_level(verbose)
    try:
        yield
    finally:
        logger.setLevel(level)


# ---------------------------------------------------------------------------------- geometry
def _montage_name(kind: str) -> str:
    """Colin27 template names (MNE >= 1.13), falling back to the older ``standard_*`` names."""
    builtin = mne.channels.get_builtin_montages()
    name = f"colin27_{kind}"
    return name if name in builtin else f"standard_{kind}"


@lru_cache(maxsize=1)
def _montage() -> mne.channels.DigMontage:
    """The template 10-05 montage plus the two 10-10 positions it lacks (O9, O10)."""
    full = mne.channels.make_standard_montage(_montage_name("1005")).get_positions()
    extra = mne.channels.make_standard_montage(_montage_name("1020")).get_positions()
    ch_pos = dict(full["ch_pos"])
    ch_pos.update({n: p for n, p in extra["ch_pos"].items() if n not in ch_pos})
    return mne.channels.make_dig_montage(ch_pos=ch_pos, nasion=full["nasion"], lpa=full["lpa"],
                                         rpa=full["rpa"], coord_frame=full["coord_frame"])


@lru_cache(maxsize=1)
def _geometry() -> dict[str, Any]:
    """Head-frame positions of every template electrode and the fitted head sphere."""
    montage = _montage()
    info = mne.create_info(montage.ch_names, 1000.0, "eeg")
    info.set_montage(montage, verbose=False)
    pos = {ch["ch_name"]: ch["loc"][:3].copy() for ch in info["chs"]}
    names_1020 = [n for n in mne.channels.make_standard_montage(_montage_name("1020")).ch_names
                  if n not in _ALIASES]
    names = [n for n in montage.ch_names if n not in _ALIASES and n not in names_1020]
    names = names_1020 + names
    # Fit the sphere to the 10-10 positions at and above the temporal line (the scalp there is
    # close to spherical); the same head serves every channel subset.
    upper = np.array([pos[n] for n in names_1020 if pos[n][2] >= pos["T7"][2] - 0.005])
    A = np.c_[2 * upper, np.ones(len(upper))]
    b = (upper ** 2).sum(1)
    sol = np.linalg.lstsq(A, b, rcond=None)[0]
    r0 = sol[:3]
    radius = float(np.sqrt(sol[3] + r0 @ r0))
    return {"pos": pos, "names_1005": names, "names_1020": names_1020, "r0": r0, "R": radius}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _direction(names_weights: dict[str, float]) -> np.ndarray:
    g = _geometry()
    v = sum(w * _unit(g["pos"][n] - g["r0"]) for n, w in names_weights.items())
    return _unit(np.asarray(v, float))


def _farthest_point(candidates: list[str], chosen: list[str], n: int) -> list[str]:
    """Greedy farthest-point sampling on the sphere (deterministic; ties by candidate order)."""
    g = _geometry()
    chosen = list(chosen)
    pool = [c for c in candidates if c not in chosen]
    if n <= 0 or not pool:
        return chosen
    P = _unit(np.array([g["pos"][c] - g["r0"] for c in pool]))
    C = _unit(np.array([g["pos"][c] - g["r0"] for c in chosen])) if chosen else np.zeros((0, 3))
    mind = np.full(len(pool), np.inf) if not chosen else np.min(
        np.arccos(np.clip(P @ C.T, -1, 1)), axis=1)
    taken = np.zeros(len(pool), bool)
    for _ in range(min(n, len(pool))):
        score = np.where(taken, -1.0, mind)
        i = int(np.argmax(score))
        taken[i] = True
        chosen.append(pool[i])
        mind = np.minimum(mind, np.arccos(np.clip(P @ P[i], -1, 1)))
    return chosen


def resolve_channels(ch_names: None | str | int | Sequence[str] = None) -> list[str]:
    """The electrode names a simulation uses.

    Parameters
    ----------
    ch_names : None, "standard_1020", int or list of str
        ``None``: the 22 channels of BCI Competition IV 2a. ``"standard_1020"``: every 10-20/10-10
        position of the template (86 channels; the aliases T3-T6 and the ear/mastoid reference
        sites are left out). An int from 14 to 128: a spread-out subset that always holds C3, Cz and
        C4: classic 10-20 positions first, then 10-10, then (above 86) 10-05 positions at or above
        the temporal line, each tier filled by farthest-point sampling on the sphere. A list: those
        template names (matched case-insensitively, returned in the template's spelling).

    Returns
    -------
    list of str

    Raises
    ------
    ValueError
        For an unknown option, a count out of range, unknown or duplicated names.
    """
    g = _geometry()
    if ch_names is None:
        return list(BNCI2014_001_CHANNELS)
    if isinstance(ch_names, str):
        check_option(ch_names, ("standard_1020",), "ch_names")
        return list(g["names_1020"])
    if isinstance(ch_names, (int, np.integer)) and not isinstance(ch_names, bool):
        n = int(ch_names)
        check_range(n, "ch_names", low=14, high=128)
        chosen = _farthest_point(list(_TEN_TWENTY_CORE), ["C3", "Cz", "C4"],
                                 min(n, len(_TEN_TWENTY_CORE)) - 3)
        if n > len(chosen):
            ring = ("9", "10")
            tier2 = [c for c in g["names_1020"] if not c.endswith(ring) and c != "Iz"]
            chosen = _farthest_point(tier2, chosen, n - len(chosen))
        if n > len(chosen):
            chosen = _farthest_point(g["names_1020"], chosen, n - len(chosen))
        if n > len(chosen):
            low = g["pos"]["T7"][2] - 0.005
            tier4 = [c for c in g["names_1005"] if g["pos"][c][2] >= low]
            chosen = _farthest_point(tier4, chosen, n - len(chosen))
        order = {name: i for i, name in enumerate(g["names_1005"])}
        return sorted(chosen, key=order.__getitem__)
    validate_type(ch_names, (list, tuple), "ch_names")
    if len(ch_names) < 2:
        raise ValueError(f"The 'ch_names' parameter needs at least 2 channel names. "
                         f"Got {ch_names!r}.")
    lookup = {n.lower(): n for n in g["pos"]}
    out: list[str] = []
    unknown = []
    for name in ch_names:
        validate_type(name, str, "ch_names[i]")
        canon = lookup.get(name.lower())
        if canon is None:
            unknown.append(name)
        else:
            out.append(canon)
    if unknown:
        raise ValueError(f"The 'ch_names' parameter holds names that are not 10-20/10-10/10-05 "
                         f"positions of the template montage: {unknown}.")
    dup = sorted({n for n in out if out.count(n) > 1})
    if dup:
        raise ValueError(f"The 'ch_names' parameter lists {dup} more than once.")
    return out


def _positions(names: Sequence[str]) -> np.ndarray:
    """Head-frame positions (m) of template electrodes (aliases such as T3 included)."""
    pos = _geometry()["pos"]
    return np.array([pos[n] for n in names])


def _make_info(names: Sequence[str], sfreq: float) -> mne.Info:
    info = mne.create_info(list(names), sfreq, "eeg")
    info.set_montage(_montage(), verbose=False)
    info["line_freq"] = LINE_FREQ
    info["description"] = "bcikit simulated motor imagery (sim-mi)"
    return info


def _rotation(rng: np.random.Generator, angle_sd: float) -> np.ndarray:
    axis = _unit(rng.standard_normal(3))
    angle = rng.normal(0.0, angle_sd)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def _leadfield(names: Sequence[str], pos: np.ndarray, ori: np.ndarray) -> np.ndarray:
    """Volts per A*m at ``names`` for dipoles at ``pos`` (head frame, m) oriented ``ori``."""
    g = _geometry()
    info = mne.create_info(list(names), 1000.0, "eeg")
    info.set_montage(_montage(), verbose=False)
    sphere = mne.make_sphere_model(r0=tuple(g["r0"]), head_radius=g["R"], verbose=False)
    n = len(pos)
    dip = mne.Dipole(np.zeros(n), pos, np.ones(n), ori, np.ones(n))
    fwd, _ = mne.make_forward_dipole(dip, sphere, info, verbose=False)
    return np.asarray(fwd["sol"]["data"], float)


# ---------------------------------------------------------------------------------- subjects
@dataclass
class _Subject:
    label: str
    src_names: list[str]
    src_pos: np.ndarray  # (n_src, 3) task + alpha sources, then background
    src_ori: np.ndarray
    moments: np.ndarray  # A*m giving unit-RMS time courses their target amplitude
    mu_freq: dict[str, float]
    beta_freq: dict[str, float]
    erd_strength: float
    pink_exponent: float
    scale: float
    extra: dict = field(default_factory=dict)


def _make_subject(seed: int, index: int) -> _Subject:
    rng = np.random.default_rng([seed, 0, index])
    g = _geometry()
    r0, R = g["r0"], g["R"]
    names, pos, ori, amp = [], [], [], []
    iaf = float(np.clip(rng.normal(10.0, 0.9), 8.0, 12.8))
    mu_freq, beta_freq = {}, {}
    mu_gain = rng.uniform(0.7, 1.4)
    for name, (where, ecc, mu_uv, beta_uv) in _SOURCES.items():
        d = _direction(where)
        tang = _unit(np.cross(d, rng.standard_normal(3)))
        d = _unit(d + rng.normal(0.0, 0.1) * tang)  # ~0.1 rad (about 8 mm) position jitter
        e = float(np.clip(ecc + rng.normal(0.0, 0.03), 0.5, 0.82))
        tilt = np.tan(np.deg2rad(rng.uniform(0.0, 35.0)))
        o = _unit(d + tilt * _unit(np.cross(d, rng.standard_normal(3))))
        names.append(name)
        pos.append(r0 + e * R * d)
        ori.append(o)
        amp.append(mu_uv * mu_gain * rng.uniform(0.8, 1.25))
        mu_freq[name] = float(np.clip(iaf + rng.normal(0.0, 0.4), 7.5, 13.5))
        beta_freq[name] = float(np.clip(rng.normal(20.0, 2.5), 15.0, 27.0))
        if beta_uv:
            names.append(name + ".beta")
            pos.append(pos[-1])
            ori.append(o)
            amp.append(beta_uv * mu_gain * rng.uniform(0.8, 1.25))
    n_task = len(names)
    # background: random positions in the upper part of the brain, random orientations
    bg_dir = []
    while len(bg_dir) < N_BACKGROUND:
        v = _unit(rng.standard_normal(3))
        if v[2] > -0.25:
            bg_dir.append(v)
    bg_dir = np.array(bg_dir)
    bg_ecc = rng.uniform(0.45, 0.82, N_BACKGROUND)
    bg_pos = r0 + (bg_ecc * R)[:, None] * bg_dir
    bg_ori = _unit(rng.standard_normal((N_BACKGROUND, 3)))
    all_pos = np.vstack([np.array(pos), bg_pos])
    all_ori = np.vstack([np.array(ori), bg_ori])
    # Moments from the nominal cap over the 10-10 set, so amplitudes do not depend on the subset.
    L = _leadfield(g["names_1020"], all_pos, all_ori)
    peak = np.abs(L).max(axis=0)
    moments = np.empty(len(all_pos))
    moments[:n_task] = np.array(amp) * 1e-6 / peak[:n_task]
    bg = 1.0 / peak[n_task:]
    rms = np.sqrt(((L[:, n_task:] * bg) ** 2).sum(axis=1))
    bg_level = 12e-6 * rng.uniform(0.8, 1.25)
    moments[n_task:] = bg * bg_level / np.median(rms)
    return _Subject(
        label=f"S{index + 1:02d}", src_names=names + [f"bg{i}" for i in range(N_BACKGROUND)],
        src_pos=all_pos, src_ori=all_ori, moments=moments, mu_freq=mu_freq, beta_freq=beta_freq,
        erd_strength=float(np.clip(rng.normal(1.0, 0.25), 0.4, 1.4)),
        pink_exponent=float(rng.uniform(1.0, 1.6)), scale=float(rng.lognormal(0.0, 0.15)),
        extra={"iaf": iaf, "n_task": n_task},
    )


@dataclass
class _Session:
    gain: np.ndarray  # over channels
    leadfield: np.ndarray  # (n_ch, n_src) with moments applied: volts per unit time course
    bg_level: float
    rhythm_level: np.ndarray  # over task sources
    erd_factor: float
    freq_shift: float


def _make_session(subject: _Subject, seed: int, s_index: int, sess: int, names: Sequence[str],
                  shift: float) -> _Session:
    rng = np.random.default_rng([seed, 1, s_index, sess])
    g = _geometry()
    rot = _rotation(rng, 0.12 * shift)  # the cap sits differently: rotate the head under it
    pos = (subject.src_pos - g["r0"]) @ rot + g["r0"]
    ori = subject.src_ori @ rot
    L = _leadfield(names, pos, ori) * subject.moments * subject.scale
    n_task = subject.extra["n_task"]
    return _Session(
        gain=rng.lognormal(0.0, 0.25 * shift, len(names)),
        leadfield=L,
        bg_level=float(rng.lognormal(0.0, 0.3 * shift)),
        rhythm_level=rng.lognormal(0.0, 0.3 * shift, n_task),
        erd_factor=float(rng.lognormal(0.0, 0.2 * shift)),
        freq_shift=float(rng.normal(0.0, 0.3 * shift)),
    )


# ---------------------------------------------------------------------------------- signals
def _spectral_noise(rng: np.random.Generator, n_series: int, n: int,
                    amplitude: np.ndarray) -> np.ndarray:
    """Stationary Gaussian noise, unit variance, with the given amplitude spectrum.

    ``amplitude`` is given over ``rfftfreq(n)``; random numbers are drawn only for the bins
    where it is not negligible, so narrow-band series are cheap. Returns complex spectra,
    shape ``(n_series, n // 2 + 1)`` (complex64); ``irfft(..., n)`` gives the series.
    """
    n_f = n // 2 + 1
    nonzero = np.flatnonzero(amplitude > 1e-6 * amplitude.max())
    keep = slice(int(nonzero[0]), int(nonzero[-1]) + 1)
    a = amplitude[keep].astype(np.float64)
    a *= n / (2.0 * np.sqrt((a ** 2).sum()))  # irfft variance = 4 / n**2 * sum(|S_k|**2 / 2)
    a = (a / np.sqrt(2.0)).astype(np.float32)
    spec = np.zeros((n_series, n_f), np.complex64)
    spec.real[:, keep] = rng.standard_normal((n_series, len(a)), dtype=np.float32) * a
    spec.imag[:, keep] = rng.standard_normal((n_series, len(a)), dtype=np.float32) * a
    return spec


def _pink_amplitude(n, sfreq, exponent, f_lo=0.5):
    f = np.fft.rfftfreq(n, 1.0 / sfreq)
    amp = np.maximum(f, f_lo) ** (-exponent / 2.0)
    amp[0] = 0.0
    return amp


def _narrowband(rng, freqs, widths, n, sfreq):
    """One unit-variance narrow-band series per (Gaussian spectral peak, width)."""
    f = np.fft.rfftfreq(n, 1.0 / sfreq)
    out = np.empty((len(freqs), n), np.float32)
    for i, (f0, w) in enumerate(zip(freqs, widths)):
        amp = np.exp(-0.5 * ((f - f0) / w) ** 2)
        out[i] = np.fft.irfft(_spectral_noise(rng, 1, n, amp), n=n)[0]
    return out


def _slow_envelope(rng, n_series, n, sfreq, sigma=0.35):
    """Spontaneous waxing and waning: log-normal envelopes with power below about 0.3 Hz."""
    f = np.fft.rfftfreq(n, 1.0 / sfreq)
    amp = np.exp(-0.5 * (f / 0.15) ** 2)
    amp[0] = 0.0
    g = np.fft.irfft(_spectral_noise(rng, n_series, n, amp), n=n)
    return np.exp(sigma * g - sigma ** 2 / 2)


def _ramp(t: np.ndarray, start: float, stop: float) -> np.ndarray:
    x = np.clip((t - start) / (stop - start), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * x)


def _erd_templates(trial_duration: float, sfreq: float) -> tuple[np.ndarray, np.ndarray]:
    """Shape of the ERD (0..1) and of the post-imagery beta rebound, from the cue on."""
    t = np.arange(int(np.ceil((trial_duration + 2.0) * sfreq))) / sfreq
    erd = _ramp(t, 0.2, 0.8) * (1.0 - _ramp(t, trial_duration, trial_duration + 0.7))
    rebound = np.exp(-0.5 * ((t - trial_duration - 0.9) / 0.35) ** 2)
    return erd, rebound


@dataclass
class _Run:
    data: np.ndarray  # (n_ch, n_times) volts, float32
    cues: np.ndarray  # cue sample of each trial
    codes: np.ndarray  # class code of each trial
    artifacts: list[tuple[str, float, float, tuple[str, ...]]]  # kind, onset s, duration s, chans


def _layout(rng, codes, sfreq, trial_duration):
    cues = []
    t = LEAD_IN
    for _ in codes:
        cues.append(int(round((t + PRE_CUE) * sfreq)))
        t += PRE_CUE + trial_duration + rng.uniform(*REST)
    total = t + TAIL
    # whole seconds when the rate is an integer, so EDF data records need no padding
    if float(sfreq).is_integer():
        n = int(np.ceil(total)) * int(sfreq)
    else:
        n = int(np.ceil(total * sfreq))
    return np.array(cues, int), n


def _task_sources(subject: _Subject, session: _Session, codes: np.ndarray,
                  classes: Sequence[str], *, sfreq: float, trial_duration: float, depth: float,
                  rng: np.random.Generator,
                  fast_length: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """The run's layout and its noise-free task-source time courses, ERD applied.

    Returns ``(cues, sources, n)``: cue samples, ``(n_task, n)`` float32 source time courses
    (unit-RMS rhythms times their envelopes, levels and task modulation) and the run length.
    ``fast_length`` pads the run with rest to a length the FFT handles fast (the oracle's
    trials; the simulated recordings keep whole seconds).
    """
    cues, n = _layout(rng, codes, sfreq, trial_duration)
    if fast_length:
        from scipy.fft import next_fast_len

        n = next_fast_len(n, real=True)
    n_task = subject.extra["n_task"]
    task_names = subject.src_names[:n_task]
    # rhythms: frequency, width, spontaneous envelope
    freqs, widths = [], []
    for name in task_names:
        base = name.split(".")[0]
        if name.endswith(".beta"):
            freqs.append(subject.beta_freq[base] + 2 * session.freq_shift)
            widths.append(2.5)
        else:
            freqs.append(subject.mu_freq[base] + session.freq_shift)
            widths.append(1.0)
    rhythms = _narrowband(rng, freqs, widths, n, sfreq)
    rhythms *= _slow_envelope(rng, n_task, n, sfreq)
    rhythms *= session.rhythm_level[:, None]
    # task modulation
    erd, rebound = _erd_templates(trial_duration, sfreq)
    mod = np.ones((n_task, n), np.float32)
    trial_gain = np.clip(rng.normal(1.0, 0.3, len(codes)), 0.2, 1.6)
    for k, (cue, code) in enumerate(zip(cues, codes)):
        table = _CLASS_ERD[classes[code]]
        stop = min(n, cue + len(erd))
        seg = slice(cue, stop)
        for i, name in enumerate(task_names):
            base, is_beta = name.split(".")[0], name.endswith(".beta")
            factor = table.get(base, 0.0)
            if factor == 0.0:
                continue
            d = factor * depth * subject.erd_strength * session.erd_factor * trial_gain[k]
            d = float(np.clip(d * (0.8 if is_beta else 1.0), -1.0, 0.92))
            mod[i, seg] -= d * erd[: stop - cue]
            if is_beta and d > 0:
                mod[i, seg] += 0.6 * d * rebound[: stop - cue]
    rhythms *= mod
    return cues, rhythms, n


def _simulate_run(subject: _Subject, session: _Session, names: Sequence[str], codes: np.ndarray,
                  classes: Sequence[str], *, sfreq: float, trial_duration: float, depth: float,
                  artifact_rate: float, rng: np.random.Generator) -> _Run:
    cues, rhythms, n = _task_sources(subject, session, codes, classes, sfreq=sfreq,
                                     trial_duration=trial_duration, depth=depth, rng=rng)
    n_task = subject.extra["n_task"]
    # Background: 1/f dipoles plus each electrode's own 1/f noise. All share one spectrum, so
    # draw channel-space noise with their joint covariance (n_ch series instead of n_bg + n_ch).
    n_ch = len(names)
    mix = np.hstack([session.leadfield[:, n_task:] * session.bg_level,
                     np.eye(n_ch) * 2e-6 * subject.scale])
    chol = np.linalg.cholesky(mix @ mix.T)
    spec = _spectral_noise(rng, n_ch, n, _pink_amplitude(n, sfreq, subject.pink_exponent))
    # float32 throughout (amplitudes are ~1e-5 V, far above float32 resolution)
    data = session.leadfield[:, :n_task].astype(np.float32) @ rhythms
    data += chol.astype(np.float32) @ np.fft.irfft(spec, n=n)
    data += np.float32(0.7e-6 * subject.scale) * rng.standard_normal((n_ch, n), dtype=np.float32)
    data *= session.gain.astype(np.float32)[:, None]
    artifacts = _add_artifacts(data, rng, names, sfreq, artifact_rate / trial_duration)
    return _Run(data=data, cues=cues, codes=np.asarray(codes), artifacts=artifacts)


def _add_artifacts(data, rng, names, sfreq, per_second):
    n_ch, n = data.shape
    duration = n / sfreq
    count = int(rng.poisson(per_second * duration)) if per_second > 0 else 0
    if count == 0:
        return []
    g = _geometry()
    pos = _positions(names)
    out = []
    eye = g["pos"]["Fpz"] + np.array([0.0, -0.01, -0.035])
    d_fp = np.linalg.norm(g["pos"]["Fp1"] - eye)
    dist_eye = np.linalg.norm(pos - eye, axis=1)
    for _ in range(count):
        kind = _ARTIFACT_KINDS[rng.choice(3, p=_ARTIFACT_P)]
        onset = rng.uniform(0.0, max(duration - 2.0, 0.1))
        i0 = int(onset * sfreq)
        if kind == "blink":
            dur = rng.uniform(0.25, 0.45)
            m = max(int(dur * sfreq), 2)
            shape = np.sin(np.pi * np.arange(m) / m) ** 2
            amp = rng.uniform(80e-6, 200e-6)
            pattern = amp * np.minimum(np.exp(-(dist_eye - d_fp) / 0.035), 1.3)
            chans = tuple(np.asarray(names)[pattern > 20e-6])
        elif kind == "muscle":
            dur = rng.uniform(0.3, 1.5)
            m = max(int(dur * sfreq), 8)
            left, right = _MUSCLE_SITES[rng.integers(len(_MUSCLE_SITES))]
            sides = [left, right] if rng.random() < 0.4 else [(left, right)[rng.integers(2)]]
            pattern = np.zeros(n_ch)
            for site in sides:
                site_pos = g["pos"][site]
                pattern += np.exp(-np.linalg.norm(pos - site_pos, axis=1) / 0.03)
            pattern *= rng.uniform(15e-6, 50e-6)
            f = np.fft.rfftfreq(m, 1.0 / sfreq)
            band = ((f >= 20.0) & (f <= min(120.0, 0.45 * sfreq))).astype(float)
            burst = np.fft.irfft(_spectral_noise(rng, 1, m, band), n=m)[0]
            shape = burst * np.hanning(m) / np.sqrt(0.375)
            chans = tuple(np.asarray(names)[pattern > 5e-6])
        else:  # pop
            tau = rng.uniform(0.1, 0.6)
            dur = 3 * tau
            m = max(int(dur * sfreq), 2)
            shape = np.exp(-np.arange(m) / (tau * sfreq))
            pattern = np.zeros(n_ch)
            ch = int(rng.integers(n_ch))
            pattern[ch] = rng.choice([-1.0, 1.0]) * rng.uniform(100e-6, 400e-6)
            chans = (names[ch],)
        m = min(len(shape), n - i0)
        data[:, i0:i0 + m] += pattern[:, None] * shape[None, :m]
        out.append((kind, i0 / sfreq, m / sfreq, chans))
    return out


# ---------------------------------------------------------------------------------- drivers
@dataclass
class _Knobs:
    n_subjects: int
    n_sessions: int
    n_runs: int
    n_classes: int
    n_trials_per_class: int
    sfreq: float
    trial_duration: float
    ch_names: list[str]
    difficulty: float
    artifact_rate: float
    session_shift: float
    seed: int

    @property
    def classes(self) -> list[str]:
        return list(MI_CLASSES[: self.n_classes])


def _check_knobs(owner: str, *, n_subjects, n_sessions, n_runs, n_classes, n_trials_per_class,
                 sfreq, trial_duration, ch_names, difficulty, artifact_rate, session_shift,
                 seed) -> _Knobs:
    for name, value, low, high in (("n_subjects", n_subjects, 1, 999),
                                   ("n_sessions", n_sessions, 1, 100),
                                   ("n_runs", n_runs, 1, 100),
                                   ("n_classes", n_classes, 2, 4),
                                   ("n_trials_per_class", n_trials_per_class, 1, 10000)):
        validate_type(value, "int", name, owner=owner)
        check_range(value, name, low=low, high=high, owner=owner)
    if n_trials_per_class * n_classes < n_runs:
        raise ValueError(f"The 'n_runs' parameter of {owner} ({n_runs}) exceeds the number of "
                         f"trials per session ({n_trials_per_class} x {n_classes} classes); every "
                         f"run needs at least one trial.")
    validate_type(sfreq, "numeric", "sfreq", owner=owner)
    check_range(sfreq, "sfreq", low=64.0, high=5000.0, owner=owner)
    validate_type(trial_duration, "numeric", "trial_duration", owner=owner)
    check_range(trial_duration, "trial_duration", low=1.0, high=30.0, owner=owner)
    for name, value, high in (("difficulty", difficulty, 1.0),
                              ("artifact_rate", artifact_rate, 5.0),
                              ("session_shift", session_shift, 1.0)):
        validate_type(value, "numeric", name, owner=owner)
        check_range(value, name, low=0.0, high=high, owner=owner)
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2 ** 63))
    validate_type(seed, ("int", np.integer), "seed", owner=owner)
    check_range(int(seed), "seed", low=0, owner=owner)
    return _Knobs(int(n_subjects), int(n_sessions), int(n_runs), int(n_classes),
                  int(n_trials_per_class), float(sfreq), float(trial_duration),
                  resolve_channels(ch_names), float(difficulty), float(artifact_rate),
                  float(session_shift), int(seed))


def _iter_sessions(k: _Knobs, *, desc: str,
                   verbose=None) -> Iterator[tuple[int, int, _Subject, _Session]]:
    """(subject index, session index, subject, session) for every session of the knobs."""
    pairs = [(s, sess) for s in range(k.n_subjects) for sess in range(k.n_sessions)]
    subject = None
    for s, sess in progress(pairs, desc=desc, verbose=verbose):
        if subject is None or subject.label != f"S{s + 1:02d}":
            subject = _make_subject(k.seed, s)
        yield s, sess, subject, _make_session(subject, k.seed, s, sess, k.ch_names,
                                              k.session_shift)


def _iter_runs(k: _Knobs, *, verbose=None) -> Iterator[tuple[str, str, str, _Run]]:
    """Simulate run by run: (subject, session, run, _Run)."""
    classes = k.classes
    depth = ERD_MAX * (1.0 - k.difficulty)
    for s, sess, subject, session in _iter_sessions(k, desc="simulating", verbose=verbose):
        rng = np.random.default_rng([k.seed, 2, s, sess])
        codes = rng.permutation(np.repeat(np.arange(k.n_classes), k.n_trials_per_class))
        for r, run_codes in enumerate(np.array_split(codes, k.n_runs)):
            run_rng = np.random.default_rng([k.seed, 3, s, sess, r])
            run = _simulate_run(subject, session, k.ch_names, run_codes, classes, sfreq=k.sfreq,
                                trial_duration=k.trial_duration, depth=depth,
                                artifact_rate=k.artifact_rate, rng=run_rng)
            logger.info("simulated %s session %d run %d: %d trials, %d artifacts", subject.label,
                        sess, r + 1, len(run_codes), len(run.artifacts))
            yield subject.label, str(sess), str(r + 1), run


def _meas_date(s: int, sess: int, run: int) -> datetime.datetime:
    base = datetime.datetime(2020, 1, 6, 9, 0, tzinfo=datetime.timezone.utc)
    return base + datetime.timedelta(days=60 * s + 7 * sess, hours=run)


def _to_raw(run: _Run, k: _Knobs, subject: str, session: str, run_label: str,
            annotate_artifacts: bool) -> mne.io.RawArray:
    info = _make_info(k.ch_names, k.sfreq)
    raw = mne.io.RawArray(run.data, info, verbose=False)
    raw.set_meas_date(_meas_date(int(subject[1:]) - 1, int(session), int(run_label)))
    classes = k.classes
    onsets = list(run.cues / k.sfreq)
    durations = [k.trial_duration] * len(run.cues)
    desc = [classes[c] for c in run.codes]
    if annotate_artifacts:
        for kind, onset, dur, _ in run.artifacts:
            onsets.append(onset)
            durations.append(dur)
            desc.append(f"BAD_{kind}")
    order = np.argsort(onsets, kind="stable")
    raw.set_annotations(mne.Annotations(np.asarray(onsets)[order], np.asarray(durations)[order],
                                        np.asarray(desc)[order]))
    return raw


_KNOB_DOC = """
    n_subjects : int
        Number of subjects (labels "S01", "S02", ...).
    n_sessions : int
        Sessions per subject (labels "0", "1", ...).
    n_runs : int
        Runs per session (labels "1", "2", ...); a session's trials are split evenly over them.
    n_classes : int
        2 to 4: the first ``n_classes`` of ("left_hand", "right_hand", "feet", "tongue").
    n_trials_per_class : int
        Trials per class and session, in random order.
    sfreq : float
        Sampling rate in Hz (at least 64).
    trial_duration : float
        Seconds of imagery after each cue (the epoch length).
    ch_names : None, "standard_1020", int or list of str
        Electrodes; see :func:`resolve_channels` (default: the 22 channels of BCI IV 2a).
    difficulty : float
        In [0, 1]: ERD depth is ``0.85 * (1 - difficulty)`` (times subject and trial factors),
        so 0 is easy and 1 leaves no class information.
    artifact_rate : float
        Expected artifacts per ``trial_duration`` seconds of recording (so roughly the fraction
        of epochs that hold one), anywhere in the run; 0 for none.
    session_shift : float
        In [0, 1]: size of the between-session covariate shift (cap placement, gains, background
        level, rhythm amplitudes and frequencies); 0 makes sessions statistically alike.
    seed : int or None
        Seed; the same seed gives the same data. ``None`` draws a fresh one.
    verbose : bool or None
        Progress bar and log messages (``None``: bar only on a terminal).
"""


def simulate_mi_raws(*, n_subjects: int = 4, n_sessions: int = 2, n_runs: int = 2,
                     n_classes: int = 2, n_trials_per_class: int = 40, sfreq: float = 250.0,
                     trial_duration: float = 4.0,
                     ch_names: None | str | int | Sequence[str] = None, difficulty: float = 0.3,
                     artifact_rate: float = 0.05, session_shift: float = 0.2, seed: int | None = 0,
                     annotate_artifacts: bool = False, verbose: bool | None = None,
                     ) -> list[tuple[mne.io.RawArray, dict[str, str]]]:
    """Simulate continuous motor-imagery runs.

    Each run starts with 2 s of rest; each trial is a fixation period of 2 s, the cue (annotated
    with the class name, lasting ``trial_duration``) and imagery for ``trial_duration`` seconds,
    then 1.5-2.5 s of rest, as in BCI Competition IV 2a. The model is described in
    :mod:`bcikit.simulate.motor_imagery`.

    Parameters
    ----------
    %(knobs)s
    annotate_artifacts : bool
        Also annotate each artifact as ``BAD_blink`` / ``BAD_muscle`` / ``BAD_pop`` (off by
        default, so files hold only the class cues).

    Returns
    -------
    list of (mne.io.RawArray, dict)
        One pair per run, ordered by subject, session and run; the dict holds ``subject``,
        ``session`` and ``run`` as strings. Data in volts, montage set, ``line_freq`` 50.

    Examples
    --------
    >>> raws = simulate_mi_raws(n_subjects=1, n_sessions=1, n_trials_per_class=10)
    >>> raw, ids = raws[0]
    >>> ids
    {'subject': 'S01', 'session': '0', 'run': '1'}
    """
    owner = "simulate_mi_raws"
    validate_type(annotate_artifacts, bool, "annotate_artifacts", owner=owner)
    k = _check_knobs(owner, n_subjects=n_subjects, n_sessions=n_sessions, n_runs=n_runs,
                     n_classes=n_classes, n_trials_per_class=n_trials_per_class, sfreq=sfreq,
                     trial_duration=trial_duration, ch_names=ch_names, difficulty=difficulty,
                     artifact_rate=artifact_rate, session_shift=session_shift, seed=seed)
    with _verbosity(verbose):
        return list(_iter_raws(k, annotate_artifacts=annotate_artifacts, verbose=verbose))


def _iter_raws(k: _Knobs, *, annotate_artifacts: bool = False, verbose=None):
    """Like :func:`simulate_mi_raws` but one run at a time (for writing to disk)."""
    for subject, session, run_label, run in _iter_runs(k, verbose=verbose):
        raw = _to_raw(run, k, subject, session, run_label, annotate_artifacts)
        yield raw, {"subject": subject, "session": session, "run": run_label}


def make_motor_imagery(*, n_subjects: int = 4, n_sessions: int = 2, n_runs: int = 2,
                       n_classes: int = 2, n_trials_per_class: int = 40, sfreq: float = 250.0,
                       trial_duration: float = 4.0,
                       ch_names: None | str | int | Sequence[str] = None,
                       difficulty: float = 0.3, artifact_rate: float = 0.05,
                       session_shift: float = 0.2, seed: int | None = 0,
                       verbose: bool | None = None):
    """Simulated motor-imagery epochs with known ground truth.

    The epochs are the imagery windows ``[cue, cue + trial_duration)`` cut from the same
    continuous runs that :func:`simulate_mi_raws` returns for the same knobs.

    Parameters
    ----------
    %(knobs)s

    Returns
    -------
    TrialSet
        ``X`` float32 volts ``(n_subjects * n_sessions * n_classes * n_trials_per_class,
        n_channels, round(trial_duration * sfreq))``; ``y`` codes into ``classes``; ``meta`` with
        subject, session, run, trial (index in the run), onset (seconds of the cue in the run),
        artifact ("none" or the kinds overlapping the epoch, joined by "+"), dataset "sim-mi",
        site "sim"; ``info`` an :class:`mne.Info` with the montage; ``tmin`` 0.

    Examples
    --------
    >>> ts = make_motor_imagery(n_subjects=2, n_sessions=1, n_trials_per_class=20)
    >>> ts.X.shape
    (80, 22, 1000)
    """
    from ..data.trialset import TrialSet

    owner = "make_motor_imagery"
    k = _check_knobs(owner, n_subjects=n_subjects, n_sessions=n_sessions, n_runs=n_runs,
                     n_classes=n_classes, n_trials_per_class=n_trials_per_class, sfreq=sfreq,
                     trial_duration=trial_duration, ch_names=ch_names, difficulty=difficulty,
                     artifact_rate=artifact_rate, session_shift=session_shift, seed=seed)
    n_times = int(round(k.trial_duration * k.sfreq))
    n_total = k.n_subjects * k.n_sessions * k.n_classes * k.n_trials_per_class
    X = np.empty((n_total, len(k.ch_names), n_times), np.float32)
    y = np.empty(n_total, np.int64)
    rows = []
    i = 0
    with _verbosity(verbose):
        for subject, session, run_label, run in _iter_runs(k, verbose=verbose):
            for t, (cue, code) in enumerate(zip(run.cues, run.codes)):
                X[i] = run.data[:, cue:cue + n_times]
                y[i] = code
                start, stop = cue / k.sfreq, (cue + n_times) / k.sfreq
                kinds = sorted({a[0] for a in run.artifacts
                                if a[1] < stop and a[1] + a[2] > start})
                rows.append({"subject": subject, "session": session, "run": run_label,
                             "trial": t, "onset": start, "artifact": "+".join(kinds) or "none",
                             "dataset": DATASET, "site": SITE})
                i += 1
    info = _make_info(k.ch_names, k.sfreq)
    meta = pd.DataFrame(rows)
    return TrialSet(X, y, meta, info, k.classes, tmin=0.0)


# ---------------------------------------------------------------------------------- oracle
ORACLE_WINDOW_START = 0.8  # s after the cue: the ERD ramp (0.2-0.8 s) is complete
_ORACLE_RUN_TRIALS = 100


@dataclass
class MIOracle:
    """Accuracy of the simulator's oracle (see :func:`motor_imagery_oracle`).

    Attributes
    ----------
    per_subject : pandas.DataFrame
        One row per subject: ``subject``, ``accuracy``, ``n_test``, ``ci_low``, ``ci_high``
        (Wilson 95 % interval).
    mean : float
        Mean of the per-subject accuracies (how pipelines summarise a run).
    ci_low, ci_high : float
        95 % normal interval of ``mean`` from the per-subject binomial variances.
    classes : list of str
        The classes the oracle decides between.
    method : str
        One sentence saying what the oracle is.
    """

    per_subject: pd.DataFrame
    mean: float
    ci_low: float
    ci_high: float
    classes: list[str]
    method: str

    def to_dict(self) -> dict:
        """JSON-serialisable form (what a run's ``metrics.json`` holds under ``oracle``)."""
        return {"mean": self.mean, "ci95": [self.ci_low, self.ci_high],
                "classes": list(self.classes), "method": self.method,
                "per_subject": {str(r.subject): {"accuracy": float(r.accuracy),
                                                 "n_test": int(r.n_test),
                                                 "ci95": [float(r.ci_low), float(r.ci_high)]}
                                for r in self.per_subject.itertuples()}}

    def bound(self, n_test: int, level: float = 0.95) -> float:
        """Highest mean accuracy compatible with this oracle for a decoder tested on ``n_test``
        pooled test trials (:func:`bcikit.evaluate.oracle_bound`)."""
        from ..evaluate.metrics import oracle_bound

        return oracle_bound(self.mean, (self.ci_low, self.ci_high), n_test, level)


def motor_imagery_oracle(*, n_subjects: int = 4, n_sessions: int = 2, n_runs: int = 2,
                         n_classes: int = 2, n_trials_per_class: int = 40,
                         sfreq: float = 250.0, trial_duration: float = 4.0,
                         ch_names: None | str | int | Sequence[str] = None,
                         difficulty: float = 0.3, artifact_rate: float = 0.05,
                         session_shift: float = 0.2, seed: int | None = 0,
                         classes: Sequence[str] | None = None, n_oracle_trials: int = 400,
                         train_frac: float = 0.8,
                         window: Sequence[float] | None = None,
                         verbose: bool | None = None) -> MIOracle:
    """The accuracy of a decoder that sees the simulator's sources without noise.

    For each subject and session of the simulated data (the same subjects and sessions as
    :func:`make_motor_imagery` with these knobs), ``n_oracle_trials`` fresh trials per class are
    drawn from the same generative model, but only the task sources are kept: the mu and beta
    rhythms of the hand, foot and tongue areas (and the occipital alpha), with their spontaneous
    envelopes, levels and the task's ERD, before volume conduction, background activity, sensor
    noise and artifacts. The oracle is shrinkage LDA on the log-variance of each source over the
    ERD plateau (``0.8 s`` after the cue to the end of the epoch), trained on the first
    ``train_frac`` of each class's trials and tested on the rest (chronological, as the CO
    protocol splits). It knows where the class information is and sees it without any noise, so
    a decoder of the sensor data should not beat it; what limits it is what limits every
    decoder here: trial-to-trial ERD strength and the spontaneous waxing and waning of the
    rhythms. ``difficulty`` sets the level (spec settings: about 0.85 at difficulty 0.575).

    Parameters
    ----------
    n_subjects, n_sessions, n_runs, n_classes, n_trials_per_class, sfreq, trial_duration, \
ch_names, difficulty, artifact_rate, session_shift, seed
        The knobs of :func:`make_motor_imagery` (``n_runs``, ``n_trials_per_class`` and
        ``artifact_rate`` do not change the oracle; they are accepted so that one set of
        knobs serves both functions).
    classes : list of str or None
        The classes to decide between (a subset of the simulated ones, as a pipeline's
        ``[data] classes``); None: all ``n_classes``.
    n_oracle_trials : int
        Fresh trials per class, subject and session (at least 20). The default 400 gives a
        per-subject standard error of about 3 points.
    train_frac : float
        Fraction of each class's trials (in time order) that trains the LDA.
    window : (tmin, tmax) or None
        The part of the epoch (seconds from the cue) the decoders see, as a pipeline's
        ``[data] window`` crops it: the oracle then reads its sources only there (the ERD
        plateau inside it, or the whole window when the plateau is not in it). None: the whole
        epoch.
    verbose : bool or None
        Progress bar.

    Returns
    -------
    MIOracle

    Examples
    --------
    >>> o = motor_imagery_oracle(n_subjects=2, n_sessions=1, difficulty=0.575)  # doctest: +SKIP
    >>> round(o.mean, 2)                                                        # doctest: +SKIP
    0.86
    """
    from scipy.stats import norm
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    from ..evaluate.metrics import wilson_interval

    owner = "motor_imagery_oracle"
    k = _check_knobs(owner, n_subjects=n_subjects, n_sessions=n_sessions, n_runs=n_runs,
                     n_classes=n_classes, n_trials_per_class=n_trials_per_class, sfreq=sfreq,
                     trial_duration=trial_duration, ch_names=ch_names, difficulty=difficulty,
                     artifact_rate=artifact_rate, session_shift=session_shift, seed=seed)
    validate_type(n_oracle_trials, "int", "n_oracle_trials", owner=owner)
    check_range(n_oracle_trials, "n_oracle_trials", low=20, high=100000, owner=owner)
    validate_type(train_frac, "numeric", "train_frac", owner=owner)
    if not 0.0 < float(train_frac) < 1.0:
        raise ValueError(f"The 'train_frac' parameter of {owner} must be in (0, 1); "
                         f"got {train_frac!r}.")
    if classes is None:
        codes_used = list(range(k.n_classes))
    else:
        validate_type(classes, (list, tuple), "classes", owner=owner)
        unknown = [c for c in classes if c not in k.classes]
        if unknown or len(set(classes)) < 2:
            raise ValueError(f"The 'classes' parameter of {owner} must name at least two of the "
                             f"simulated classes {k.classes}; got {list(classes)}.")
        codes_used = [k.classes.index(c) for c in dict.fromkeys(classes)]
    depth = ERD_MAX * (1.0 - k.difficulty)
    lo, hi = 0.0, k.trial_duration
    if window is not None:
        validate_type(window, (list, tuple), "window", owner=owner)
        lo, hi = (float(v) for v in window)
        if not 0.0 <= lo < hi <= k.trial_duration:
            raise ValueError(f"The 'window' parameter of {owner} must lie inside the epoch "
                             f"[0, {k.trial_duration:g}] s with tmin < tmax; got {list(window)}.")
    plateau = max(lo, min(ORACLE_WINDOW_START, k.trial_duration / 2))
    start = int(round((plateau if plateau < hi else lo) * k.sfreq))
    stop = int(round(hi * k.sfreq))
    rows = []
    correct: dict[str, list[int]] = {}
    with _verbosity(verbose):
        for s, sess, subject, session in _iter_sessions(k, desc="oracle", verbose=verbose):
            # streams 12 and 13: disjoint from the data's trial streams (2 and 3)
            rng = np.random.default_rng([k.seed, 12, s, sess])
            codes = rng.permutation(np.repeat(np.asarray(codes_used), n_oracle_trials))
            n_chunks = int(np.ceil(len(codes) / _ORACLE_RUN_TRIALS))
            feats, labels = [], []
            for r, chunk in enumerate(np.array_split(codes, n_chunks)):
                run_rng = np.random.default_rng([k.seed, 13, s, sess, r])
                cues, src, _ = _task_sources(subject, session, chunk, k.classes, sfreq=k.sfreq,
                                             trial_duration=k.trial_duration, depth=depth,
                                             rng=run_rng, fast_length=True)
                for cue in cues:
                    feats.append(np.log(src[:, cue + start:cue + stop].var(axis=1) + 1e-12))
                labels.append(chunk)
            X, y = np.asarray(feats), np.concatenate(labels)
            train = np.zeros(len(y), bool)
            for c in codes_used:
                idx = np.flatnonzero(y == c)
                train[idx[:int(np.ceil(train_frac * len(idx)))]] = True
            if train.all():
                raise ValueError(f"{owner}: train_frac={train_frac} leaves no test trial.")
            lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
            hits = lda.fit(X[train], y[train]).predict(X[~train]) == y[~train]
            correct.setdefault(subject.label, []).extend(hits.astype(int).tolist())
    for label, hits in correct.items():
        n_ok, n = int(np.sum(hits)), len(hits)
        lo, hi = wilson_interval(n_ok, n)
        rows.append({"subject": label, "accuracy": n_ok / n, "n_test": n,
                     "ci_low": lo, "ci_high": hi})
    table = pd.DataFrame(rows)
    p, n = table["accuracy"].to_numpy(), table["n_test"].to_numpy()
    mean = float(p.mean())
    half = float(norm.ppf(0.975)) * float(np.sqrt((p * (1 - p) / n).sum())) / len(p)
    method = (f"shrinkage LDA on the log-variance of the {subject.extra['n_task']} noise-free "
              f"task sources over {start / k.sfreq:g}-{stop / k.sfreq:g} s after the cue; "
              f"{n_oracle_trials} fresh trials per class, subject and session, the first "
              f"{train_frac:g} of each class trains")
    logger.info("oracle: mean accuracy %.3f [%.3f, %.3f] over %d subjects", mean, mean - half,
                mean + half, len(p))
    return MIOracle(per_subject=table, mean=mean, ci_low=mean - half, ci_high=mean + half,
                    classes=[k.classes[c] for c in codes_used], method=method)


for _func in (simulate_mi_raws, make_motor_imagery):
    _func.__doc__ = _func.__doc__.replace("%(knobs)s", _KNOB_DOC.strip("\n").lstrip())
del _func
