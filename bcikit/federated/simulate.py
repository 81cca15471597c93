"""Heterogeneous motor-imagery sites with known shared structure (FLEEG's simulator check).

The idea of :mod:`bcikit.simulate.motor_imagery` (latent cortical sources with mu and beta
rhythms, class-dependent desynchronisation, smooth spatial spread to the electrodes, pink
background), reduced to what a federation check needs and fast enough to build nine sites in
seconds:

*Sites* differ in montage (14 to 128 electrodes of the 10-05 system, :func:`bcikit.simulate.
resolve_channels`), sampling rate (160 to 512 Hz), trial length (1 to 7 s) and number of
subjects (4 to 50 at ``size="full"``). *Latent sources* are the same brain areas everywhere:
left and right hand areas (under C3 and C4), the foot area (Cz) and two parieto-occipital alpha
generators (PO3, PO4). Each reaches electrode ``c`` with gain ``exp(-theta^2 / (2 w^2))``
(``theta`` the angle between the source and electrode directions, ``w`` 0.45 rad: the broad,
smooth patterns of volume conduction). *Class structure* is shared: left-hand imagery
desynchronises the right hand area's mu and beta rhythms (and weakly the left one), right-hand
imagery the opposite. *Subjects* differ in source positions (0.1 rad), gains, mu / beta peak
frequencies (N(10.5, 0.8), N(21, 2) Hz) and ERD strength; trials in ERD depth. Forty background
sources with 1/f time courses and per-electrode noise complete the signal (volts).

``negative_control=True`` gives every site unrelated class structure: the hand areas carry no
class information; instead each site's classes differ in the power of a site-specific extra
source (random position) in a site-specific band (theta, alpha, beta or low gamma), with a
site-specific sign (desynchronisation or synchronisation). A federation should not help there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from ..utils import check_option, check_range, validate_type

__all__ = ["SiteSpec", "site_specs", "simulate_sites", "make_site_data", "make_sites",
           "compare_on_sites", "combine_comparisons", "gain_by_size", "plot_site_gains", "SIZES",
           "CLASSES"]

CLASSES = ["left_hand", "right_hand"]
_WIDTH = 0.45  # spatial spread of a source, radians
_N_BACKGROUND = 40
_SOURCES = {"hand_L": "C3", "hand_R": "C4", "feet": "Cz", "alpha_L": "PO3", "alpha_R": "PO4"}
_BANDS = {"theta": (6.0, 1.0), "alpha": (10.5, 1.2), "beta": (21.0, 2.5), "gamma": (34.0, 3.0)}


@dataclass(frozen=True)
class SiteSpec:
    """One simulated site: name, montage size, rate, trial length, subjects and recipe."""

    name: str
    n_chans: int
    sfreq: float
    duration: float
    n_subjects: int
    trials_per_class: int
    batch_size: int = 64
    lr: float = 0.005

    @property
    def n_times(self) -> int:
        return int(round(self.duration * self.sfreq))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "n_times": self.n_times}


# name, channels, sfreq, seconds, subjects (full size)
_FULL = (
    ("sim-A", 62, 250.0, 4.0, 50),
    ("sim-B", 64, 512.0, 3.0, 40),
    ("sim-C", 32, 250.0, 4.0, 25),
    ("sim-D", 30, 200.0, 5.0, 20),
    ("sim-E", 128, 250.0, 7.0, 12),
    ("sim-F", 60, 200.0, 4.0, 10),
    ("sim-G", 22, 250.0, 4.0, 8),
    ("sim-H", 22, 200.0, 1.0, 6),
    ("sim-I", 14, 160.0, 2.0, 4),
)
# small, fast geometries for tests: still all different
_TINY = (
    ("sim-A", 22, 160.0, 1.5, 5),
    ("sim-B", 14, 200.0, 1.0, 4),
    ("sim-C", 18, 128.0, 2.0, 3),
    ("sim-D", 16, 160.0, 1.0, 3),
    ("sim-E", 20, 100.0, 2.0, 3),
    ("sim-F", 14, 128.0, 1.5, 3),
    ("sim-G", 24, 160.0, 1.0, 3),
    ("sim-H", 15, 200.0, 1.0, 3),
    ("sim-I", 14, 100.0, 1.5, 3),
)
# the full table's ranges (14-128 channels, 160-512 Hz, 1-7 s, 4-50 subjects) at about a sixth
# of "small"'s compute per round (a thirtieth of "full"'s): the costly geometries (many
# channels, high rate, long trials) go to the sites with few subjects, so a 9-site check of
# many rounds fits a 2-core CPU
_COMPACT = (
    ("sim-A", 14, 160.0, 1.0, 50),
    ("sim-B", 14, 160.0, 1.0, 40),
    ("sim-C", 22, 160.0, 1.0, 25),
    ("sim-D", 16, 200.0, 1.5, 20),
    ("sim-E", 22, 200.0, 2.0, 12),
    ("sim-F", 64, 250.0, 1.0, 8),
    ("sim-G", 14, 512.0, 1.0, 6),
    ("sim-H", 14, 160.0, 7.0, 5),
    ("sim-I", 128, 200.0, 1.0, 4),
)
SIZES = ("full", "small", "compact", "tiny")


def site_specs(n_sites: int = 9, *, size: str = "full") -> list[SiteSpec]:
    """The site table: ``size="full"`` (14-128 channels, 160-512 Hz, 1-7 s, 4-50 subjects,
    20 trials per class and subject), ``"small"`` (the same sites with a quarter of the
    subjects, at least 4, and 15 trials per class), ``"compact"`` (the full table's ranges of
    channels, rates, lengths and subjects, 10 trials per class, the costly geometries on the
    sites with few subjects: a many-round check on a CPU) or ``"tiny"`` (small montages and
    rates, 3-5 subjects, 8 trials per class: for tests)."""
    check_option(size, SIZES, "size", owner="site_specs")
    validate_type(n_sites, "int", "n_sites", owner="site_specs")
    check_range(n_sites, "n_sites", low=1, high=len(_FULL), owner="site_specs")
    out = []
    for row_full, row_tiny, row_compact in zip(_FULL[:n_sites], _TINY[:n_sites],
                                               _COMPACT[:n_sites]):
        if size == "tiny":
            name, c, fs, dur, subj = row_tiny
            out.append(SiteSpec(name, c, fs, dur, subj, 8, batch_size=16, lr=0.005))
        elif size == "compact":
            out.append(SiteSpec(*row_compact, 10, batch_size=64, lr=0.005))
        else:
            name, c, fs, dur, subj = row_full
            if size == "small":
                subj, tpc = max(4, round(subj / 4)), 15
            else:
                tpc = 20
            out.append(SiteSpec(name, c, fs, dur, subj, tpc, batch_size=64, lr=0.005))
    return out


# ---------------------------------------------------------------------------------- geometry
@lru_cache(maxsize=1)
def _template_directions() -> dict[str, np.ndarray]:
    """Unit vectors from the fitted head-sphere centre to every template electrode."""
    import mne

    builtin = mne.channels.get_builtin_montages()
    pos: dict[str, np.ndarray] = {}
    for kind in ("1020", "1005"):
        name = f"colin27_{kind}" if f"colin27_{kind}" in builtin else f"standard_{kind}"
        pos.update(mne.channels.make_standard_montage(name).get_positions()["ch_pos"])
    names = list(pos)
    P = np.array([pos[n] for n in names])
    # least-squares sphere: |p|^2 = 2 p.c + (r^2 - |c|^2)
    A = np.c_[2 * P, np.ones(len(P))]
    sol, *_ = np.linalg.lstsq(A, (P ** 2).sum(1), rcond=None)
    d = P - sol[:3]
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return dict(zip(names, d))


def _gains(electrodes: np.ndarray, sources: np.ndarray, width: float) -> np.ndarray:
    """(C, S) gains ``exp(-theta^2 / (2 width^2))``."""
    cos = np.clip(electrodes @ sources.T, -1.0, 1.0)
    return np.exp(-np.arccos(cos) ** 2 / (2 * width ** 2))


def _jitter(v: np.ndarray, rng: np.random.Generator, sd: float) -> np.ndarray:
    w = v + rng.normal(0, sd, v.shape)
    return w / np.linalg.norm(w, axis=-1, keepdims=True)


def _random_directions(rng: np.random.Generator, n: int, *, z_min: float = 0.0) -> np.ndarray:
    out = []
    while len(out) < n:
        v = rng.normal(size=3)
        v /= np.linalg.norm(v)
        if v[2] >= z_min:
            out.append(v)
    return np.array(out)


# ---------------------------------------------------------------------------------- signals
def _shaped_noise(rng: np.random.Generator, shape: tuple[int, ...], sfreq: float,
                  amplitude) -> np.ndarray:
    """Noise with the amplitude spectrum ``amplitude(freqs)``, unit RMS over everything."""
    n = shape[-1]
    freqs = np.fft.rfftfreq(n, 1.0 / sfreq)
    spec = np.fft.rfft(rng.standard_normal(shape), axis=-1) * amplitude(freqs)
    x = np.fft.irfft(spec, n=n, axis=-1)
    rms = np.sqrt(np.mean(x ** 2))
    return x / rms if rms > 0 else x


def _band(f0: float, bw: float):
    return lambda f: np.exp(-0.5 * ((f - f0) / bw) ** 2)


def _pink(beta: float):
    return lambda f: np.where(f > 0, 1.0 / np.maximum(f, 0.5) ** (beta / 2), 0.0)


def _simulate_site(spec: SiteSpec, index: int, *, seed: int, difficulty: float,
                   negative_control: bool):
    import mne

    from ..data.trialset import TrialSet
    from ..simulate import resolve_channels

    dirs = _template_directions()
    ch_names = resolve_channels(spec.n_chans)
    E = np.array([dirs[c] for c in ch_names])
    fs, T = spec.sfreq, spec.n_times
    n_trials = 2 * spec.trials_per_class
    src_names = list(_SOURCES)
    base_src = np.array([dirs[_SOURCES[s]] for s in src_names])
    site_rng = np.random.default_rng([seed, 7, index])
    site_gain = site_rng.uniform(0.8, 1.2, len(ch_names))
    extra = None
    if negative_control:
        band = list(_BANDS)[site_rng.integers(len(_BANDS))]
        extra = {"direction": _random_directions(site_rng, 1, z_min=0.2)[0],
                 "band": _BANDS[band], "sign": float(site_rng.choice([-1.0, 1.0])),
                 "class": int(site_rng.integers(2)), "amp": 6.0}
    depth_max = 0.85 * (1.0 - difficulty)
    X = np.empty((spec.n_subjects * n_trials, len(ch_names), T), np.float32)
    y = np.empty(spec.n_subjects * n_trials, np.int64)
    rows = []
    for s in range(spec.n_subjects):
        rng = np.random.default_rng([seed, 11, index, s])
        src = _jitter(base_src, rng, 0.1)
        A = _gains(E, src, _WIDTH) * rng.uniform(0.7, 1.3, len(src_names))
        f_mu = rng.normal(10.5, 0.8)
        f_beta = rng.normal(21.0, 2.0)
        amp = {"mu": rng.uniform(5.0, 9.0), "beta": rng.uniform(2.0, 4.0),
               "alpha": rng.uniform(5.0, 10.0)}
        strength = float(np.clip(rng.normal(1.0, 0.25), 0.4, 1.4))
        codes = rng.permutation(np.repeat([0, 1], spec.trials_per_class))
        # source time courses (n_trials, S, T), unit RMS, then scaled
        mu = _shaped_noise(rng, (n_trials, len(src_names), T), fs, _band(f_mu, 1.2))
        beta = _shaped_noise(rng, (n_trials, len(src_names), T), fs, _band(f_beta, 2.5))
        depth = depth_max * strength * rng.uniform(0.5, 1.5, n_trials)
        scale_mu = np.full((n_trials, len(src_names)), amp["mu"])
        scale_beta = np.full((n_trials, len(src_names)), amp["beta"])
        for a in ("alpha_L", "alpha_R"):
            i = src_names.index(a)
            scale_mu[:, i] = amp["alpha"]
            scale_beta[:, i] = 0.0
        if not negative_control:
            hl, hr = src_names.index("hand_L"), src_names.index("hand_R")
            contra = np.where(codes == 0, hr, hl)
            ipsi = np.where(codes == 0, hl, hr)
            rows_i = np.arange(n_trials)
            for m in (scale_mu, scale_beta):
                m[rows_i, contra] *= 1.0 - np.minimum(depth, 0.95)
                m[rows_i, ipsi] *= 1.0 - 0.3 * np.minimum(depth, 0.95)
        sig = mu * scale_mu[:, :, None] + beta * scale_beta[:, :, None]
        data = np.einsum("cs,nst->nct", A, sig)
        if extra is not None:
            d_e = _jitter(extra["direction"][None], rng, 0.1)
            a_e = _gains(E, d_e, _WIDTH)[:, 0]
            f0, bw = extra["band"]
            x_e = _shaped_noise(rng, (n_trials, T), fs, _band(rng.normal(f0, 0.1 * f0), bw))
            mod = 1.0 + extra["sign"] * np.minimum(depth, 0.95) * (codes == extra["class"])
            mod = np.maximum(mod, 0.05)
            data += a_e[None, :, None] * (extra["amp"] * mod)[:, None, None] * x_e[:, None, :]
        # background sources and sensor noise
        bg_dirs = _random_directions(rng, _N_BACKGROUND, z_min=-0.3)
        bg = _shaped_noise(rng, (n_trials, _N_BACKGROUND, T), fs, _pink(rng.uniform(1.0, 1.6)))
        data += np.einsum("cb,nbt->nct", _gains(E, bg_dirs, 0.3), bg) * rng.uniform(1.5, 2.5)
        data += _shaped_noise(rng, (n_trials, len(ch_names), T), fs, _pink(1.0)) * 1.5
        data += rng.normal(0, 1.0, data.shape)
        data *= site_gain[None, :, None] * 1e-6
        sl = slice(s * n_trials, (s + 1) * n_trials)
        X[sl] = data.astype(np.float32)
        y[sl] = codes
        label = f"S{s + 1:02d}"
        rows.extend({"subject": label, "session": "0", "run": "1", "trial": t,
                     "onset": float(t * (spec.duration + 4.0)), "dataset": spec.name,
                     "site": spec.name} for t in range(n_trials))
    info = mne.create_info(ch_names, fs, "eeg")
    return TrialSet(X, y, pd.DataFrame(rows), info, CLASSES, tmin=0.0)


def simulate_sites(n_sites: int = 9, *, size: str = "full", negative_control: bool = False,
                   difficulty: float = 0.3, seed: int = 0,
                   only: Iterable[int | str] | None = None,
                   specs: Sequence[SiteSpec] | None = None,
                   jobs: int = 1) -> list[tuple[SiteSpec, Any]]:
    """Simulate heterogeneous motor-imagery sites sharing latent sources and class structure.

    Parameters
    ----------
    n_sites : int
        1 to 9 sites of the :func:`site_specs` table.
    size : {"full", "small", "compact", "tiny"}
        Table size (see :func:`site_specs`).
    negative_control : bool
        Unrelated class structure per site (see the module notes).
    difficulty : float
        In [0, 1): ERD depth is ``0.85 * (1 - difficulty)`` times subject and trial factors.
    seed : int
        Every site depends only on ``seed``, its index and the knobs.
    only : iterable of int or str, or None
        Build only these sites (indices or names), e.g. the one a Flower client holds.
    specs : sequence of SiteSpec or None
        A custom site table (overrides ``n_sites`` and ``size``).
    jobs : int
        Worker processes (one site each); the result does not depend on it.

    Returns
    -------
    list of (SiteSpec, TrialSet)
        Two classes (0 = left hand), volts, ``meta['site']`` and ``meta['dataset']`` the site
        name, subjects ``S01`` ...

    Examples
    --------
    >>> sims = simulate_sites(3, size="tiny")  # doctest: +SKIP
    >>> [(spec.name, ts.X.shape) for spec, ts in sims]  # doctest: +SKIP
    """
    owner = "simulate_sites"
    validate_type(negative_control, bool, "negative_control", owner=owner)
    validate_type(difficulty, "numeric", "difficulty", owner=owner)
    check_range(difficulty, "difficulty", low=0.0, high=1.0, high_inclusive=False, owner=owner)
    validate_type(seed, "int", "seed", owner=owner)
    table = list(specs) if specs is not None else site_specs(n_sites, size=size)
    wanted = None
    if only is not None:
        wanted = set()
        names = [sp.name for sp in table]
        for item in only:
            if isinstance(item, str):
                if item not in names:
                    raise ValueError(f"simulate_sites: no site named {item!r}; the sites are "
                                     f"{names}.")
                wanted.add(names.index(item))
            else:
                check_range(int(item), "only", low=0, high=len(table) - 1, owner=owner)
                wanted.add(int(item))
    todo = [(spec, i) for i, spec in enumerate(table) if wanted is None or i in wanted]
    kwargs = dict(seed=seed, difficulty=float(difficulty), negative_control=negative_control)
    sets = _map(lambda job: _simulate_site(job[0], job[1], **kwargs), todo, jobs)
    return [(spec, ts) for (spec, _), ts in zip(todo, sets)]


def _map(fn, items: Sequence, jobs: int) -> list:
    """``[fn(x) for x in items]``, in ``jobs`` forked processes when ``jobs > 1``."""
    validate_type(jobs, "int", "jobs")
    check_range(jobs, "jobs", low=1)
    if jobs == 1 or len(items) < 2:
        return [fn(x) for x in items]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    global _MAP_FN
    _MAP_FN = fn  # inherited by the forked workers
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(min(jobs, len(items)), mp_context=ctx) as pool:
        return list(pool.map(_call_map_fn, items))


_MAP_FN = None


def _call_map_fn(item):
    return _MAP_FN(item)


def make_site_data(sims: Sequence[tuple[SiteSpec, Any]], *, fold: int = 0,
                   n_test: int | float = 1,
                   n_folds: int | None = None, validation: str = "subject", seed: int = 123,
                   filter: bool = True, jobs: int = 1) -> list:
    """:class:`~bcikit.federated.SiteData` for simulated sites (same fold everywhere).

    ``n_folds`` defaults to the largest site's ``ceil(n_subjects / n_test)`` (spec §4: smaller
    sites reuse reshuffled subjects), or ``ceil(1 / n_test)`` for a fraction.
    """
    from .sites import SiteData

    if n_folds is None:
        n_folds = (math.ceil(1 / n_test) if isinstance(n_test, float)
                   else max(math.ceil(sp.n_subjects / n_test) for sp, _ in sims))
    return _map(lambda sim: SiteData.from_trialset(
        sim[1], sim[0].name, fold=fold, n_folds=n_folds, n_test=n_test, validation=validation,
        seed=seed, filter=filter, batch_size=sim[0].batch_size, lr=sim[0].lr), list(sims), jobs)


def make_sites(sims: Sequence[tuple[SiteSpec, Any]], *, rounds: int, fold: int = 0,
               n_test: int | float = 1, n_folds: int | None = None, validation: str = "subject",
               seed: int = 123, device: str = "cpu", filter: bool = True) -> list:
    """:class:`~bcikit.federated.Site` objects for simulated sites (see :func:`make_site_data`)."""
    from .sites import Site

    datas = make_site_data(sims, fold=fold, n_test=n_test, n_folds=n_folds,
                           validation=validation, seed=seed, filter=filter)
    return [Site(d, rounds=rounds, seed=seed, device=device) for d in datas]


def compare_on_sites(sims: Sequence[tuple[SiteSpec, Any]], *, rounds: int = 250,
                     folds: Iterable[int] = (0,), n_test: int | float = 1, seed: int = 123,
                     n_folds: int | None = None,
                     device: str = "cpu", weighting: str = "samples", jobs: int = 1,
                     kinds: Sequence[str] = ("federated", "local"),
                     verbose: bool | None = None) -> dict[str, Any]:
    """Federated versus local-only on the same splits, per site and per test subject.

    For every fold, builds the sites twice (same data, seed and splits), runs
    :func:`~bcikit.federated.run_federated` and :func:`~bcikit.federated.run_local` for
    ``rounds`` rounds / epochs, and collects per-subject test accuracies. A subject tested in
    several folds (small sites) is averaged over its repeats first.

    Returns
    -------
    dict
        ``sites``: per site ``{"n_subjects", "federated_acc", "local_acc", "gain",
        "subjects": {subject: {"federated", "local"}}}``; ``mean_gain`` over sites;
        ``paired``: Wilcoxon signed-rank and paired t-test over all (site, subject) pairs
        (``statistic``, ``pvalue``, ``n``); ``gain_vs_size``: Spearman correlation of the gain
        with the site's subject count (negative = larger gains on smaller sites); ``timing_s``;
        ``selection``: per site and arm, for every fold, the snapshot kept (``fold``; ``round``
        and ``val_loss``: the lowest validation loss; ``best_val_acc`` and
        ``best_val_acc_round``: the best validation accuracy, recorded, not used), so that a site
        scored at chance can be told from one whose lowest validation loss came before it
        learnt anything; each row also holds ``last_subject_acc`` ``{subject: acc}``, the test
        subjects scored with the last round's model (a diagnostic of the selection, summarised
        as ``last_round``, never the result). ``verbose`` prints the time of every run.

        ``n_folds`` (default: see :func:`make_site_data`) sets how many folds the subject order
        covers: more folds than one pass needs append fresh shuffles (spec §4), so folds past
        the first pass test every site's subjects again. The first pass's folds do not depend
        on it.

        With only one of ``kinds`` (e.g. to run the federated and the local-only arm in two
        processes on one GPU), the per-subject accuracies are returned as ``per`` (plus
        ``kinds``, ``timing_s``) and :func:`combine_comparisons` joins the two parts.
    """
    from .loop import run_federated, run_local

    folds = list(folds)
    per: dict[str, dict[str, dict[str, list[float]]]] = {sp.name: {} for sp, _ in sims}
    selection: dict[str, dict[str, list[dict[str, Any]]]] = {sp.name: {} for sp, _ in sims}
    import time

    from .sites import Site

    timing = {}
    for fold in folds:
        t0 = time.perf_counter()
        datas = make_site_data(sims, fold=fold, n_test=n_test, n_folds=n_folds, seed=seed,
                               jobs=jobs)
        timing[f"fold{fold}-prepare"] = time.perf_counter() - t0
        for kind, runner in (("federated", run_federated), ("local", run_local)):
            if kind not in kinds:
                continue
            t0 = time.perf_counter()
            sites = [Site(d, rounds=rounds, seed=seed, device=device) for d in datas]
            res = (runner(sites, rounds, weighting=weighting, verbose=verbose)
                   if kind == "federated" else runner(sites, rounds, verbose=verbose))
            del sites
            timing[f"fold{fold}-{kind}"] = time.perf_counter() - t0
            if verbose:
                print(f"fold {fold} {kind}: {timing[f'fold{fold}-{kind}']:.1f} s, mean test "
                      f"acc {res.mean_acc():.3f}", flush=True)
            for name, m in res.sites.items():
                selection[name].setdefault(kind, []).append(
                    {"fold": fold, "round": m["best-round"], "val_loss": m["best-val-loss"],
                     "best_val_acc": m["best-val-acc"],
                     "best_val_acc_round": m["best-val-acc-round"],
                     "last_round": m["last-round"], "last_subject_acc": m["last-subject-acc"]})
                for subj, acc in m["subject-acc"].items():
                    per[name].setdefault(subj, {"federated": [], "local": []})[kind].append(acc)
    kinds = [k for k in ("federated", "local") if k in kinds]
    if not kinds:
        raise ValueError(f"compare_on_sites: kinds must hold 'federated' and/or 'local'; got "
                         f"{list(kinds)!r}.")
    if len(kinds) == 1:
        return {"per": per, "kinds": kinds, "rounds": rounds, "folds": folds,
                "n_test": n_test, "n_folds": n_folds, "timing_s": timing,
                "selection": selection}
    out = _summarise(per, [sp for sp, _ in sims], rounds=rounds, folds=folds, n_test=n_test,
                     timing=timing, selection=selection)
    out["n_folds"] = n_folds
    return out


def combine_comparisons(parts: Sequence[dict[str, Any]],
                        specs: Sequence[SiteSpec]) -> dict[str, Any]:
    """Join the one-arm results of :func:`compare_on_sites` (``kinds=("federated",)`` and
    ``kinds=("local",)``, same sites, rounds and ``n_test``) into its two-arm result.

    Parts may hold different folds (run apart, e.g. fold 0 today and fold 1 tomorrow): both
    arms must then cover the same folds, and no (arm, fold) may come twice.
    """
    per: dict[str, dict[str, dict[str, list[float]]]] = {}
    timing: dict[str, float] = {}
    selection: dict[str, dict[str, list[dict[str, Any]]]] = {}
    done: dict[str, list[int]] = {"federated": [], "local": []}  # folds per arm
    for part in parts:
        if "per" not in part:
            raise ValueError("combine_comparisons: each part must be a one-arm result of "
                             "compare_on_sites (with a 'per' table).")
        for kind in part["kinds"]:
            done[kind].extend(part["folds"])
        timing.update(part.get("timing_s", {}))
        for site, arms in part.get("selection", {}).items():  # absent in parts before session 9
            for kind, rows in arms.items():
                selection.setdefault(site, {}).setdefault(kind, []).extend(rows)
        for site, subjects in part["per"].items():
            for subj, arms in subjects.items():
                dst = per.setdefault(site, {}).setdefault(subj, {"federated": [], "local": []})
                for kind in part["kinds"]:
                    dst[kind].extend(arms[kind])
    if not all(done.values()):
        raise ValueError(f"combine_comparisons: need a federated and a local part; got "
                         f"{sorted(k for k, f in done.items() if f)}.")
    keys = {(p["rounds"], p["n_test"]) for p in parts}
    if len(keys) != 1:
        raise ValueError(f"combine_comparisons: the parts differ in (rounds, n_test): "
                         f"{sorted(keys)}.")
    for kind, folds in done.items():
        if len(set(folds)) != len(folds):
            raise ValueError(f"combine_comparisons: the {kind} arm holds a fold twice: "
                             f"{sorted(folds)}.")
    if set(done["federated"]) != set(done["local"]):
        raise ValueError(f"combine_comparisons: the arms cover different folds: federated "
                         f"{sorted(done['federated'])}, local {sorted(done['local'])}.")
    rounds, n_test = keys.pop()
    return _summarise(per, specs, rounds=rounds, folds=sorted(done["federated"]),
                      n_test=n_test, timing=timing, selection=selection)


def _site_table(per, specs) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Per-site accuracies (subjects averaged over their repeats first), the paired tests over
    (site, subject) pairs and the site-level Spearman correlation of gain with site size."""
    from scipy import stats

    out_sites = {}
    pairs = []
    sizes, gains = [], []
    for spec in specs:
        subs = {s: {k: float(np.mean(v)) for k, v in d.items()} for s, d in per[spec.name].items()}
        fed = float(np.mean([d["federated"] for d in subs.values()]))
        loc = float(np.mean([d["local"] for d in subs.values()]))
        out_sites[spec.name] = {"n_subjects": spec.n_subjects, "federated_acc": fed,
                                "local_acc": loc, "gain": fed - loc, "subjects": subs}
        pairs.extend((d["federated"], d["local"]) for d in subs.values())
        sizes.append(spec.n_subjects)
        gains.append(fed - loc)
    f_arr = np.array([p[0] for p in pairs])
    l_arr = np.array([p[1] for p in pairs])
    paired: dict[str, Any] = {"n": len(pairs), "mean_diff": float(np.mean(f_arr - l_arr))}
    if len(pairs) > 1 and np.any(f_arr != l_arr):
        w = stats.wilcoxon(f_arr, l_arr)
        t = stats.ttest_rel(f_arr, l_arr)
        paired.update({"wilcoxon": {"statistic": float(w.statistic), "pvalue": float(w.pvalue)},
                       "ttest": {"statistic": float(t.statistic), "pvalue": float(t.pvalue)}})
    corr = (float(stats.spearmanr(sizes, gains).statistic)
            if len(set(sizes)) > 1 and len(set(gains)) > 1 and len(specs) > 2 else math.nan)
    return out_sites, paired, corr


def gain_by_size(sites: dict[str, Any]) -> dict[str, Any]:
    """Is the gain largest on the smallest sites? Tests over subjects (spec §8.4).

    ``sites`` is the ``sites`` table of :func:`compare_on_sites`. Every test subject's gain
    (averaged over its repeats) is paired with its site's subject count.

    Returns
    -------
    dict
        ``spearman``: ``{"rho", "pvalue", "n"}``, the subject-level Spearman correlation of
        gain with site size (negative = larger gains on smaller sites; two-sided p);
        ``median_size``; ``small`` (sites up to the median site size) and ``large`` (above it):
        ``{"sites", "n", "mean_gain", "wilcoxon_p"}`` (gain over that group's subjects, two-sided
        signed-rank); ``mannwhitney_p``: one-sided test that the small sites' subjects gain more
        than the large sites'. NaN where a test is undefined (too few subjects, no variation).
    """
    from scipy import stats

    rows = [(row["n_subjects"], d["federated"] - d["local"], name)
            for name, row in sites.items() for d in row["subjects"].values()]
    sizes = np.array([r[0] for r in rows], dtype=float)
    gains = np.array([r[1] for r in rows], dtype=float)
    rho = p_rho = math.nan
    if len(rows) > 2 and len(set(sizes)) > 1 and len(set(gains)) > 1:
        res = stats.spearmanr(sizes, gains)
        rho, p_rho = float(res.statistic), float(res.pvalue)
    median = float(np.median([row["n_subjects"] for row in sites.values()]))
    out: dict[str, Any] = {"spearman": {"rho": rho, "pvalue": p_rho, "n": len(rows)},
                           "median_size": median}
    for group, mask in (("small", sizes <= median), ("large", sizes > median)):
        g = gains[mask]
        p = (float(stats.wilcoxon(g).pvalue) if g.size > 1 and np.any(g != 0) else math.nan)
        out[group] = {"sites": sorted({r[2] for r, m in zip(rows, mask) if m}),
                      "n": int(g.size), "mean_gain": float(g.mean()) if g.size else math.nan,
                      "wilcoxon_p": p}
    small, large = gains[sizes <= median], gains[sizes > median]
    out["mannwhitney_p"] = (float(stats.mannwhitneyu(small, large, alternative="greater").pvalue)
                            if small.size and large.size else math.nan)
    return out


def _last_round_per(selection, specs) -> dict[str, Any] | None:
    """The ``per`` table of the last round's models, from the selection rows; None unless every
    site's rows in both arms carry ``last_subject_acc`` (parts before session 11 do not)."""
    per: dict[str, dict[str, dict[str, list[float]]]] = {}
    for spec in specs:
        arms = selection.get(spec.name, {})
        rows = [(kind, r) for kind in ("federated", "local") for r in arms.get(kind, [])]
        if not rows or any("last_subject_acc" not in r for _, r in rows) or \
                {k for k, _ in rows} != {"federated", "local"}:
            return None
        for kind, r in rows:
            for subj, acc in r["last_subject_acc"].items():
                per.setdefault(spec.name, {}).setdefault(
                    subj, {"federated": [], "local": []})[kind].append(acc)
    return per


def _summarise(per, specs, *, rounds, folds, n_test, timing, selection) -> dict[str, Any]:
    out_sites, paired, corr = _site_table(per, specs)
    out = {"sites": out_sites,
           "mean_gain": float(np.mean([r["gain"] for r in out_sites.values()])),
           "paired": paired, "gain_vs_size": corr, "rounds": rounds, "folds": list(folds),
           "n_test": n_test, "timing_s": timing, "selection": selection,
           "gain_by_size": gain_by_size(out_sites)}
    last = _last_round_per(selection, specs)
    if last is not None:  # diagnostic: the same table scored with the last round's models
        l_sites, l_paired, l_corr = _site_table(last, specs)
        out["last_round"] = {
            "sites": {n: {k: r[k] for k in ("federated_acc", "local_acc", "gain")}
                      for n, r in l_sites.items()},
            "mean_gain": float(np.mean([r["gain"] for r in l_sites.values()])),
            "paired": l_paired, "gain_vs_size": l_corr, "gain_by_size": gain_by_size(l_sites)}
    return out


def plot_site_gains(result: dict[str, Any], path=None, *, chance: float = 0.5):
    """Federated against local-only, per site (sorted by subject count) and per test subject.

    Left: the two arms' test accuracy per site (mean over its test subjects). Right: each test
    subject's gain (federated - local, faint points) and each site's mean gain (dots) against
    the site's subject count, with the paired test and the size correlation in the title.
    ``result`` is :func:`compare_on_sites`'s (or :func:`combine_comparisons`'s) two-arm output.
    Returns the figure, or the saved ``path``.
    """
    from ..evaluate.figures import _plt, _save

    plt = _plt()
    sites = sorted(result["sites"].items(), key=lambda kv: kv[1]["n_subjects"])
    labels = [f"{name}\n({row['n_subjects']})" for name, row in sites]
    x = np.arange(len(sites))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.2))
    ax.bar(x - 0.2, [r["federated_acc"] for _, r in sites], 0.4, label="federated",
           color="tab:blue")
    ax.bar(x + 0.2, [r["local_acc"] for _, r in sites], 0.4, label="local only",
           color="tab:gray")
    ax.axhline(chance, color="k", ls="--", lw=1, label=f"chance {chance:.2f}")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test accuracy (mean over test subjects)")
    ax.set_xlabel("site (subjects)")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    rng = np.random.default_rng(0)
    for _, row in sites:
        g = [d["federated"] - d["local"] for d in row["subjects"].values()]
        jitter = np.exp(rng.uniform(-0.06, 0.06, len(g)))
        bx.scatter(row["n_subjects"] * jitter, g, s=12, color="tab:blue", alpha=0.3, lw=0)
    bx.scatter([r["n_subjects"] for _, r in sites], [r["gain"] for _, r in sites], s=40,
               color="tab:blue", zorder=3, label="site mean")
    bx.axhline(0, color="k", lw=1)
    bx.set_xscale("log")
    sizes = sorted({r["n_subjects"] for _, r in sites})
    bx.set_xticks(sizes, [str(n) for n in sizes])
    bx.minorticks_off()
    bx.set_xlabel("subjects at the site")
    bx.set_ylabel("gain: federated - local")
    bx.legend(loc="upper right", fontsize=8)
    bx.grid(alpha=0.3)
    paired = result.get("paired", {})
    p = paired.get("wilcoxon", {}).get("pvalue", math.nan)
    fig.suptitle(f"{'Negative control: ' if result.get('negative_control') else ''}"
                 f"mean gain {result['mean_gain']:+.3f} over sites; Wilcoxon p = {p:.2g} over "
                 f"{paired.get('n', 0)} test subjects\nSpearman(gain, subjects) = "
                 f"{result['gain_vs_size']:.2f}; {result['rounds']} rounds")
    fig.tight_layout()
    return _save(fig, path)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m bcikit.federated.simulate``: the simulator check of spec §8.4.

    Runs :func:`compare_on_sites` on the 9-site table (and, with ``--negative-control``, on the
    unrelated-structure sites) and writes the result as JSON (``--out``, never overwritten) with
    :func:`plot_site_gains`'s figure beside it (same name, ``.png``).
    """
    import argparse
    import json
    import time
    from pathlib import Path

    p = argparse.ArgumentParser(prog="python -m bcikit.federated.simulate",
                                description=main.__doc__.splitlines()[0])
    p.add_argument("--size", default="full", choices=SIZES)
    p.add_argument("--sites", type=int, default=9)
    p.add_argument("--rounds", type=int, default=250)
    p.add_argument("--folds", type=int, default=1, help="run N folds (default 1)")
    p.add_argument("--first-fold", type=int, default=0,
                   help="the first of them (default 0): folds K..K+N-1")
    p.add_argument("--n-test", type=float, default=1,
                   help="test subjects per site and fold (int), or a fraction in (0, 1)")
    p.add_argument("--n-folds", type=int, default=None,
                   help="folds the subject order covers (default: one pass); more append fresh "
                        "shuffles, so folds past the first pass test the subjects again")
    p.add_argument("--trials-per-class", type=int, default=None)
    p.add_argument("--difficulty", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--negative-control", action="store_true")
    p.add_argument("--verbose", action="store_true", help="progress and timings")
    p.add_argument("--jobs", type=int, default=1, help="processes for simulation and filtering")
    p.add_argument("--kind", default="both", choices=("both", "federated", "local"),
                   help="run one arm only (writes a part for --combine)")
    p.add_argument("--combine", nargs="+", default=None, metavar="PART",
                   help="join one-arm JSON parts (same settings) instead of running")
    p.add_argument("--out", default=None, help="JSON file to write (must not exist)")
    args = p.parse_args(argv)
    for taken in ([args.out, str(Path(args.out).with_suffix(".png"))] if args.out else []):
        if Path(taken).exists():
            raise SystemExit(f"{taken!r} exists; choose another --out.")
    specs = site_specs(args.sites, size=args.size)
    if args.trials_per_class:
        from dataclasses import replace

        specs = [replace(s, trials_per_class=args.trials_per_class) for s in specs]
    if args.combine:
        parts = [json.loads(Path(f).read_text()) for f in args.combine]
        for f, part in zip(args.combine, parts):
            if part.get("size") != args.size or part.get("negative_control") != \
                    args.negative_control:
                raise SystemExit(f"{f}: size/negative-control differ from this command's.")
        wanted = [s.to_dict() for s in specs]
        for f, part in zip(args.combine, parts):
            if part.get("specs") != wanted:
                got = {d["name"]: d for d in part.get("specs") or []}
                diff = [f"{w['name']}: {k} {got.get(w['name'], {}).get(k)!r} (this command: "
                        f"{w[k]!r})" for w in wanted for k in w
                        if got.get(w["name"], {}).get(k) != w[k]]
                raise SystemExit(f"{f}: its sites differ from this command's (--sites, --size, "
                                 f"--trials-per-class): {'; '.join(diff[:4]) or 'extra sites'}.")
        drawn = {(part.get("seed"), part.get("difficulty")) for part in parts}
        if len(drawn) != 1:
            raise SystemExit(f"The parts come from different simulations (seed, difficulty): "
                             f"{sorted(drawn, key=str)}; join parts of one simulation only.")
        out = combine_comparisons(parts, [s for s in specs])
        out.update({k: parts[0][k] for k in ("negative_control", "size", "specs",
                                                "difficulty", "seed") if k in parts[0]})
        out["parts"] = {f: {"kinds": p["kinds"], "folds": p["folds"],
                            "n_folds": p.get("n_folds"), "total_s": p.get("total_s")}
                        for f, p in zip(args.combine, parts)}
        return _report(out, args.out)
    if args.device != "cpu":
        import torch

        torch.backends.cudnn.benchmark = True  # fixed shapes per site; speed over bitwise repeats
    t0 = time.perf_counter()
    sims = simulate_sites(specs=specs, seed=args.seed, difficulty=args.difficulty,
                          negative_control=args.negative_control, jobs=args.jobs)
    t_sim = time.perf_counter() - t0
    if args.verbose:
        print(f"simulated {len(sims)} sites in {t_sim:.1f} s", flush=True)
    n_test = int(args.n_test) if args.n_test >= 1 else float(args.n_test)
    kinds = ("federated", "local") if args.kind == "both" else (args.kind,)
    folds = range(args.first_fold, args.first_fold + args.folds)
    out = compare_on_sites(sims, rounds=args.rounds, folds=folds, n_test=n_test,
                           n_folds=args.n_folds, device=args.device, jobs=args.jobs, kinds=kinds,
                           verbose=args.verbose)
    out.update({"negative_control": args.negative_control, "size": args.size,
                "specs": [s.to_dict() for s in specs], "simulate_s": t_sim,
                "total_s": time.perf_counter() - t0, "difficulty": args.difficulty,
                "seed": args.seed})
    if "per" in out:  # one arm: a part for --combine
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(out, indent=1))
        print(f"{args.kind} arm done in {out['total_s']:.0f} s")
        return out
    return _report(out, args.out)


def _report(out: dict[str, Any], path: str | None) -> dict[str, Any]:
    import json
    from pathlib import Path

    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(out, indent=1))
        plot_site_gains(out, Path(path).with_suffix(".png"))
    for name, row in out["sites"].items():
        kept = out.get("selection", {}).get(name, {})
        rounds = "  ".join(f"{k} kept round {[r['round'] for r in kept[k]]}" for k in kept)
        print(f"{name}: {row['n_subjects']:3d} subjects  federated {row['federated_acc']:.3f}  "
              f"local {row['local_acc']:.3f}  gain {row['gain']:+.3f}  {rounds}".rstrip())
    print(f"mean gain {out['mean_gain']:+.3f}; paired {out['paired']}; "
          f"gain vs size (Spearman) {out['gain_vs_size']:.2f}")
    by = out.get("gain_by_size")
    if by:
        print(f"over subjects: Spearman(gain, site size) {by['spearman']['rho']:+.2f} "
              f"(p {by['spearman']['pvalue']:.3g}, n {by['spearman']['n']}); sites <= "
              f"{by['median_size']:g} subjects {by['small']['mean_gain']:+.3f} (p "
              f"{by['small']['wilcoxon_p']:.3g}), larger {by['large']['mean_gain']:+.3f} (p "
              f"{by['large']['wilcoxon_p']:.3g}); small > large: Mann-Whitney p "
              f"{by['mannwhitney_p']:.3g}")
    if "last_round" in out:
        last = out["last_round"]
        print(f"last round's models (diagnostic, not the result): mean gain "
              f"{last['mean_gain']:+.3f}; paired {last['paired']}; "
              + "; ".join(f"{n} {r['gain']:+.3f}" for n, r in last["sites"].items()))
    return out


if __name__ == "__main__":  # pragma: no cover
    main()
