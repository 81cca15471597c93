"""Neural targets of encoding models: binned, event-locked electrode activity (spec §2.3).

Around each event, **161 windows of 200 ms** start at -2.000, -1.975, ..., +2.000 s (25 ms
apart; the epoch spans -2.0 to +2.2 s). A window's value is the mean of its samples
``[s + lo_k, s + hi_k)`` with ``lo_k = round(t_k * sfreq)`` and ``hi_k = round((t_k + 0.2) *
sfreq)`` rounded to samples independently (halves upwards); ``times`` labels each window by its
start in milliseconds. Every (electrode, window) pair is one target, so ``Y`` has shape
``(n_events, n_electrodes * 161)``, **electrode-major** (column ``e * 161 + k``).

Window means come from cumulative sums of each signal (one pass per electrode, with the
electrode's mean removed first to keep the sums small), which equals a naive loop over windows to
rounding error. Signals are read one electrode (or, for shaft-wise references, one shaft) at a
time, so a session never has to fit in memory.

Signal options (``signal=``): ``"broadband"`` (the stored voltage, the official default),
``"zscore"`` (each electrode z-scored over the whole session), ``"high_gamma"`` (70-150 Hz
envelope by :func:`bcikit.io.ieeg.high_gamma`) and ``"despike"`` (samples further than
``despike_threshold`` robust SDs from the median clipped to that bound). Reference options
(``reference=``): ``None`` (as recorded), ``"car"`` (common average of the picked electrodes),
``"shaft_car"`` (average of each shaft's picked contacts), ``"laplacian"`` (shaft Laplacian:
each contact minus the mean of its adjacent contacts on the shaft) and ``"bipolar"`` (adjacent
contacts, pairs formed by :func:`bcikit.io.ieeg.bipolar_reference`'s rule). The re-reference is
applied first, then the signal option.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..utils import check_option, logger, set_log_level, validate_type

__all__ = [
    "N_BINS",
    "BIN_START",
    "BIN_STEP",
    "BIN_WIDTH",
    "SIGNALS",
    "REFERENCES",
    "bin_times",
    "bin_edges",
    "seconds_to_samples",
    "binned_targets",
    "make_targets",
    "EncodingTargets",
]

N_BINS = 161
BIN_START = -2.0
BIN_STEP = 0.025
BIN_WIDTH = 0.2
SIGNALS = ("broadband", "zscore", "high_gamma", "despike")
REFERENCES = (None, "car", "shaft_car", "laplacian", "bipolar")


def seconds_to_samples(seconds, sfreq: float) -> np.ndarray:
    """Sample offsets of times in seconds: ``floor(ms * sfreq / 1000 + 0.5)`` with the times
    first rounded to 1e-6 ms, so that e.g. 0.025 s at 500 Hz is exactly 12.5 -> 13 samples."""
    ms = np.round(np.asarray(seconds, dtype=np.float64) * 1000.0, 6)
    return np.floor(ms * float(sfreq) / 1000.0 + 0.5).astype(np.int64)


def bin_times(start: float = BIN_START, step: float = BIN_STEP,
              n_bins: int = N_BINS) -> np.ndarray:
    """Window starts in milliseconds: ``-2000, -1975, ..., 2000`` by default (int64)."""
    return np.round((start + step * np.arange(n_bins)) * 1000.0).astype(np.int64)


def bin_edges(sfreq: float, *, start: float = BIN_START, step: float = BIN_STEP,
              width: float = BIN_WIDTH, n_bins: int = N_BINS) -> tuple[np.ndarray, np.ndarray]:
    """Sample offsets of the windows relative to the event sample.

    Returns
    -------
    lo, hi : ndarray of int64, shape (n_bins,)
        Window ``k`` covers samples ``[s + lo[k], s + hi[k])``; both edges are rounded
        independently (``round((start + k*step) * sfreq)`` and ``round((start + k*step + width)
        * sfreq)``, halves upwards).
    """
    validate_type(sfreq, "numeric", "sfreq", owner="bin_edges")
    if not sfreq > 0:
        raise ValueError(f"The 'sfreq' parameter of bin_edges must be > 0. Got {sfreq!r}.")
    validate_type(n_bins, "int", "n_bins", owner="bin_edges")
    if n_bins < 1 or not width > 0 or not step > 0:
        raise ValueError(f"bin_edges needs n_bins >= 1, width > 0 and step > 0; got "
                         f"n_bins={n_bins}, width={width}, step={step}.")
    t = start + step * np.arange(n_bins)
    lo = seconds_to_samples(t, sfreq)
    hi = seconds_to_samples(t + width, sfreq)
    if np.any(hi <= lo):
        raise ValueError(f"Windows of {width} s hold no sample at {sfreq} Hz.")
    return lo, hi


def _window_means(x: np.ndarray, samples: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                  out: np.ndarray) -> None:
    """Means of ``x[s + lo_k : s + hi_k]`` for every event ``s`` and window ``k`` into ``out``
    (n_events, n_bins), through the cumulative sum of ``x`` minus its mean."""
    x = np.asarray(x, dtype=np.float64)
    mean = float(x.mean())
    cs = np.empty(x.shape[0] + 1, dtype=np.float64)
    cs[0] = 0.0
    np.cumsum(x - mean, out=cs[1:])
    a = samples[:, None] + lo[None, :]
    b = samples[:, None] + hi[None, :]
    out[...] = (cs[b] - cs[a]) / (hi - lo)[None, :] + mean


def _check_windows(samples: np.ndarray, lo: np.ndarray, hi: np.ndarray, n_times: int) -> None:
    first = samples + lo.min()
    last = samples + hi.max()
    bad = np.flatnonzero((first < 0) | (last > n_times))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{bad.size} event(s) have windows leaving the recording (samples "
                         f"0..{n_times}), e.g. event {i} at sample {int(samples[i])} needs "
                         f"[{int(first[i])}, {int(last[i])}); drop them first "
                         f"(bcikit.encoding.events.make_events does).")


def binned_targets(data, samples, sfreq: float, *, start: float = BIN_START,
                   step: float = BIN_STEP, width: float = BIN_WIDTH,
                   n_bins: int = N_BINS) -> np.ndarray:
    """Window means of signals around events.

    Parameters
    ----------
    data : array, shape (n_channels, n_times) or (n_times,)
        Signals.
    samples : array of int, shape (n_events,)
        Event samples.
    sfreq : float
        Sampling rate (Hz).
    start, step, width, n_bins
        Windows (see :func:`bin_edges`).

    Returns
    -------
    ndarray, shape (n_events, n_channels, n_bins), float64

    Raises
    ------
    ValueError
        An event's windows leave the signal.
    """
    x = np.asarray(data)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"binned_targets expects data (n_channels, n_times); got shape "
                         f"{x.shape}.")
    s = np.asarray(samples)
    if s.ndim != 1 or not np.issubdtype(s.dtype, np.integer):
        raise ValueError("binned_targets expects integer event samples of shape (n_events,).")
    s = s.astype(np.int64)
    lo, hi = bin_edges(sfreq, start=start, step=step, width=width, n_bins=n_bins)
    _check_windows(s, lo, hi, x.shape[1])
    out = np.empty((s.size, x.shape[0], n_bins), dtype=np.float64)
    buf = np.empty((s.size, n_bins), dtype=np.float64)
    for c in range(x.shape[0]):
        _window_means(x[c], s, lo, hi, buf)
        out[:, c, :] = buf
    return out


# ------------------------------------------------------------------------------ transforms
def _despike(x: np.ndarray, threshold: float) -> np.ndarray:
    med = float(np.median(x))
    mad = float(np.median(np.abs(x - med))) * 1.4826
    if mad == 0:
        return x
    return np.clip(x, med - threshold * mad, med + threshold * mad)


def _apply_signal(x: np.ndarray, signal: str, sfreq: float, hg_kw: dict,
                  threshold: float) -> np.ndarray:
    if signal == "broadband":
        return x
    if signal == "zscore":
        sd = float(x.std())
        return (x - x.mean()) / (sd if sd > 0 else 1.0)
    if signal == "despike":
        return _despike(x, threshold)
    from ..io.ieeg import high_gamma

    return high_gamma(x, sfreq=sfreq, **hg_kw)


# ------------------------------------------------------------------------------- container
@dataclass
class EncodingTargets:
    """Binned targets of one session and alignment.

    Attributes
    ----------
    Y : ndarray, shape (n_events, n_electrodes * n_bins)
        Window means, electrode-major (column ``e * n_bins + k``).
    times : ndarray of int64, shape (n_bins,)
        Window starts in milliseconds.
    electrodes : DataFrame
        One row per target electrode (or bipolar pair): ``name``, ``region``, ``x``, ``y``,
        ``z``, ``shaft`` (and the session table's other columns where they apply).
    events : DataFrame
        The events, one row per row of ``Y``.
    sfreq : float
        Sampling rate of the signals.
    config : dict
        How the targets were made (signal, reference, windows, dropped electrodes).
    """

    Y: np.ndarray
    times: np.ndarray
    electrodes: pd.DataFrame
    events: pd.DataFrame
    sfreq: float
    config: dict = field(default_factory=dict)

    @property
    def n_bins(self) -> int:
        return int(self.times.size)

    @property
    def n_electrodes(self) -> int:
        return len(self.electrodes)

    def cube(self) -> np.ndarray:
        """``Y`` viewed as ``(n_events, n_electrodes, n_bins)``."""
        return self.Y.reshape(self.Y.shape[0], self.n_electrodes, self.n_bins)

    def target_names(self) -> list[str]:
        """``"<electrode>@<t_ms>"`` for every column of ``Y``."""
        return [f"{e}@{t}" for e in self.electrodes["name"] for t in self.times]

    def __repr__(self) -> str:
        return (f"<EncodingTargets {self.Y.shape[0]} events x {self.n_electrodes} electrodes x "
                f"{self.n_bins} bins, signal={self.config.get('signal')!r}, "
                f"reference={self.config.get('reference')!r}>")


# ------------------------------------------------------------------------- channel plans
def _shaft_groups(table: pd.DataFrame) -> dict[str, list[tuple[int, str]]]:
    from ..io.ieeg import parse_contact_name

    shafts: dict[str, list[tuple[int, str]]] = {}
    for name in table["name"]:
        shaft, contact = parse_contact_name(name)
        shafts.setdefault(shaft, []).append((-1 if contact is None else int(contact), name))
    for items in shafts.values():
        items.sort()
    return shafts


def _bipolar_pairs(names: list[str], sfreq: float) -> list[tuple[str, str]]:
    """Anode/cathode pairs by :func:`bcikit.io.ieeg.bipolar_reference`'s rule, found on a
    two-sample stand-in recording (no signal is read)."""
    import mne

    from ..io.ieeg import bipolar_reference

    info = mne.create_info(names, sfreq, ["seeg"] * len(names), verbose="error")
    stand_in = mne.io.RawArray(np.zeros((len(names), 2)), info, verbose="error")
    out = bipolar_reference(stand_in, verbose="error")
    pairs = []
    for ch in out.ch_names:
        if "-" in ch:
            a, k = ch.split("-", 1)
            if a in names and k in names:
                pairs.append((a, k))
    return pairs


def _plan(session, picks: list[str], reference) -> tuple[list[dict], dict[str, str]]:
    """Derived channels: list of {name, members, weights} plus dropped picks and why."""
    table = session.electrodes.set_index("name").loc[picks].reset_index()
    dropped: dict[str, str] = {}
    plan: list[dict] = []
    if reference in (None, "car"):
        plan = [{"name": n, "anode": n, "members": [n], "weights": [1.0]} for n in picks]
        return plan, dropped
    if reference == "bipolar":
        pairs = _bipolar_pairs(picks, session.sfreq)
        used = {n for p in pairs for n in p}
        for n in picks:
            if n not in used:
                dropped[n] = "no adjacent contact for a bipolar pair"
        plan = [{"name": f"{a}-{k}", "anode": a, "members": [a, k], "weights": [1.0, -1.0]}
                for a, k in pairs]
        return plan, dropped
    shafts = _shaft_groups(table)
    for shaft, items in shafts.items():
        names = [n for _, n in items]
        if reference == "shaft_car":
            if len(names) < 2:
                dropped[names[0]] = f"shaft {shaft!r} has one picked contact (CAR would be zero)"
                continue
            k = len(names)
            for n in names:
                plan.append({"name": n, "anode": n, "members": names,
                             "weights": [1.0 - 1.0 / k if m == n else -1.0 / k for m in names]})
        else:  # laplacian
            for c, n in items:
                nbrs = [m for cm, m in items if c >= 0 and cm >= 0 and abs(cm - c) == 1]
                if not nbrs:
                    dropped[n] = "no adjacent contact on its shaft for the Laplacian"
                    continue
                members = [n, *nbrs]
                weights = [1.0] + [-1.0 / len(nbrs)] * len(nbrs)
                plan.append({"name": n, "anode": n, "members": members, "weights": weights})
    order = {n: i for i, n in enumerate(picks)}
    plan.sort(key=lambda p: order[p["anode"]])
    return plan, dropped


def make_targets(session, events: pd.DataFrame, *, signal: str = "broadband",
                 reference: str | None = None, picks: Sequence[str] | None = None,
                 start: float = BIN_START, step: float = BIN_STEP, width: float = BIN_WIDTH,
                 n_bins: int = N_BINS, dtype=np.float32, high_gamma_kw: dict | None = None,
                 despike_threshold: float = 5.0,
                 verbose: bool | str | None = None) -> EncodingTargets:
    """Binned targets of a session's electrodes around events.

    Parameters
    ----------
    session : BrainTreebankSession
        The recording (:func:`bcikit.io.braintreebank.read_session`); anything with
        ``electrodes`` (DataFrame with ``name``), ``sfreq``, ``n_samples`` and
        ``iter_data(picks)`` works.
    events : DataFrame
        Events with an integer ``sample`` column, in time order
        (:func:`bcikit.encoding.events.make_events`).
    signal : {'broadband', 'zscore', 'high_gamma', 'despike'}
        Signal transform (see the module docstring).
    reference : {None, 'car', 'shaft_car', 'laplacian', 'bipolar'}
        Re-referencing before the transform.
    picks : sequence of str or None
        Electrodes to use (default: all kept electrodes).
    start, step, width, n_bins
        Windows (default: the spec's 161 windows of 200 ms from -2 s every 25 ms).
    dtype : numpy dtype
        Type of ``Y`` (float32 by default; computations are in float64).
    high_gamma_kw : dict or None
        Keyword arguments of :func:`bcikit.io.ieeg.high_gamma` (``band``, ``n_bands``,
        ``notch``, ``normalize``).
    despike_threshold : float
        Clipping bound of ``signal='despike'`` in robust SDs (1.4826 x median absolute
        deviation).
    verbose : bool, str or None
        Logging level for this call.

    Returns
    -------
    EncodingTargets

    Raises
    ------
    ValueError
        Bad options, unknown electrodes, no events, or events whose windows leave the recording.
    """
    set_log_level(verbose)
    check_option(signal, SIGNALS, "signal", owner="make_targets")
    check_option(reference, REFERENCES, "reference", owner="make_targets")
    validate_type(events, pd.DataFrame, "events", owner="make_targets")
    if "sample" not in events.columns:
        raise ValueError("make_targets: events has no 'sample' column (make them with "
                         "bcikit.encoding.events.make_events).")
    if len(events) == 0:
        raise ValueError("make_targets: no events.")
    samples = events["sample"].to_numpy()
    if not np.issubdtype(samples.dtype, np.integer):
        raise ValueError(f"make_targets: events['sample'] must be integers; got dtype "
                         f"{samples.dtype}.")
    samples = samples.astype(np.int64)
    if np.any(np.diff(samples) < 0):
        raise ValueError("make_targets: events must be in time order (non-decreasing samples).")
    hg_kw = dict(high_gamma_kw or {})
    if hg_kw and signal != "high_gamma":
        raise ValueError("make_targets: high_gamma_kw is given but signal is not 'high_gamma'.")
    sfreq = float(session.sfreq)
    lo, hi = bin_edges(sfreq, start=start, step=step, width=width, n_bins=n_bins)
    _check_windows(samples, lo, hi, int(session.n_samples))

    all_names = list(session.electrodes["name"])
    if picks is None:
        picks = all_names
    else:
        if isinstance(picks, str):
            picks = [picks]
        unknown = [p for p in picks if p not in all_names]
        if unknown:
            raise ValueError(f"make_targets: electrode(s) {unknown} are not among the session's "
                             f"kept electrodes.")
        picks = list(dict.fromkeys(picks))
    plan, dropped = _plan(session, picks, reference)
    if not plan:
        raise ValueError(f"make_targets: no target electrode is left with reference="
                         f"{reference!r} ({len(dropped)} dropped).")
    if dropped:
        logger.info("make_targets: %d electrode(s) dropped by reference=%r: %s", len(dropped),
                    reference, dict(list(dropped.items())[:5]))

    car = None
    if reference == "car":
        car = np.zeros(int(session.n_samples), dtype=np.float64)
        for _, x in session.iter_data(picks):
            car += x
        car /= len(picks)

    n_ev = samples.size
    Y = np.empty((n_ev, len(plan) * n_bins), dtype=dtype)
    buf = np.empty((n_ev, n_bins), dtype=np.float64)

    def emit(k: int, x: np.ndarray) -> None:
        x = _apply_signal(x, signal, sfreq, hg_kw, despike_threshold)
        _window_means(x, samples, lo, hi, buf)
        Y[:, k * n_bins:(k + 1) * n_bins] = buf

    if reference in (None, "car"):
        for k, (_, x) in enumerate(session.iter_data(picks)):
            emit(k, x - car if car is not None else x)
    else:
        # one shaft (or pair) in memory at a time: read the members of consecutive plan rows
        cache: dict[str, np.ndarray] = {}
        for k, row in enumerate(plan):
            need = [m for m in row["members"] if m not in cache]
            for name, x in session.iter_data(need):
                cache[name] = x
            x = sum(w * cache[m] for m, w in zip(row["members"], row["weights"]))
            emit(k, np.asarray(x, dtype=np.float64))
            later = {m for r in plan[k + 1:k + 40] for m in r["members"]}
            for m in [m for m in cache if m not in later]:
                del cache[m]

    table = session.electrodes.set_index("name")
    rows = []
    for row in plan:
        info: dict[str, Any] = {"name": row["name"]}
        members = row["members"] if reference == "bipolar" else [row["anode"]]
        coords = table.loc[members, ["x", "y", "z"]].to_numpy(np.float64).mean(axis=0)
        info.update({"x": coords[0], "y": coords[1], "z": coords[2]})
        for col in table.columns:
            if col not in ("x", "y", "z"):
                info[col] = table.at[row["anode"], col]
        if reference == "bipolar":
            info["anode"], info["cathode"] = row["members"]
        rows.append(info)
    electrodes = pd.DataFrame(rows)
    config = {
        "signal": signal, "reference": reference, "start": start, "step": step, "width": width,
        "n_bins": n_bins, "sfreq": sfreq, "dropped": dropped,
        "high_gamma_kw": hg_kw if signal == "high_gamma" else None,
        "despike_threshold": despike_threshold if signal == "despike" else None,
    }
    return EncodingTargets(Y=Y, times=bin_times(start, step, n_bins), electrodes=electrodes,
                           events=events.reset_index(drop=True), sfreq=sfreq, config=config)
