"""Transforms fitted on training trials only: filtering, resampling, alignment, scaling.

Every transform follows the scikit-learn contract on :class:`~bcikit.data.TrialSet` objects:
``__init__`` stores its parameters, ``fit(ts)`` learns state from training trials (attributes
ending in ``_``) and returns ``self``, ``transform(ts)`` returns a new TrialSet and never changes
the fitted state. A fitted transform remembers which trials it saw (``fit_trials_``, from the
``trial_index`` column :func:`~bcikit.data.protocols.apply_split` adds), so :class:`LeakGuard`
can prove that no test trial reached a fit.

Examples
--------
>>> from bcikit.data import get_protocol, apply_split
>>> from bcikit.data.transforms import make_transforms, LeakGuard
>>> split = get_protocol("chronological").split(ts)[0]           # doctest: +SKIP
>>> train, valid, test = apply_split(ts, split)                  # doctest: +SKIP
>>> pre = make_transforms({"bandpass": [8, 32], "alignment": "euclidean"})  # doctest: +SKIP
>>> with LeakGuard(split):                                       # doctest: +SKIP
...     train = pre.fit_transform(train)
>>> test = pre.transform(test)                                   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from ..utils import check_option, validate_type
from .protocols import TRIAL_INDEX, Split, chronological_order
from .trialset import TrialSet, VoxelInfo

__all__ = ["Transform", "BandPass", "cheby2_sos", "cheby2_filter", "Resample", "EuclideanAlignment",
           "ChannelScaler", "Compose", "make_transforms", "LeakGuard", "DataLeakError",
           "check_no_leak", "TRANSFORM_KEYS"]


# ---------------------------------------------------------------------------------------- leak guard

def _mne_verbose(verbose):
    """MNE's verbosity for a transform: quiet ("error") unless the user asked for more."""
    return "error" if verbose is None else verbose

class DataLeakError(ValueError):
    """A test trial reached the ``fit`` of a transform."""


_ACTIVE_GUARDS: list["LeakGuard"] = []


def _trial_ids(ts: TrialSet) -> np.ndarray | None:
    if TRIAL_INDEX in ts.meta:
        return ts.meta[TRIAL_INDEX].to_numpy(dtype=np.int64)
    return None


class LeakGuard:
    """Make sure the test trials of a split never reach a transform's ``fit``.

    Used as a context manager, every :meth:`Transform.fit` inside the block checks its input
    against the test trials and raises :class:`DataLeakError` on an overlap (and ``ValueError``
    when the input carries no ``trial_index`` column, since it cannot be checked). After the
    fact, :meth:`check` inspects already fitted transforms.

    Parameters
    ----------
    test : Split, TrialSet or array of int
        The forbidden trials: ``split.test``, the ``trial_index`` column of a test TrialSet made
        by :func:`~bcikit.data.protocols.apply_split`, or the indices themselves.

    Attributes
    ----------
    n_fits_ : int
        How many fits were checked inside the block.
    """

    def __init__(self, test: Split | TrialSet | Sequence[int] | np.ndarray):
        if isinstance(test, Split):
            ids = test.test
            self.name = test.name
        elif isinstance(test, TrialSet):
            ids = _trial_ids(test)
            if ids is None:
                raise ValueError("LeakGuard needs a test TrialSet with a 'trial_index' column; "
                                 "make the split with bcikit.data.apply_split.")
            self.name = "test TrialSet"
        else:
            ids = np.asarray(test, dtype=np.int64).reshape(-1)
            self.name = "test indices"
        self.test_ids = np.unique(np.asarray(ids, dtype=np.int64))
        self.n_fits_ = 0

    def __enter__(self) -> "LeakGuard":
        _ACTIVE_GUARDS.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _ACTIVE_GUARDS.remove(self)

    def _check_ids(self, ids: np.ndarray | None, owner: str) -> None:
        if ids is None:
            raise ValueError(f"{owner} was fitted on trials without a 'trial_index' column, so "
                             f"LeakGuard cannot tell whether test trials were among them; make the "
                             f"split with bcikit.data.apply_split.")
        leaked = np.intersect1d(ids, self.test_ids)
        if leaked.size:
            raise DataLeakError(f"{owner} was fitted on {leaked.size} test trial(s) of "
                                f"{self.name} (trial_index {leaked[:10].tolist()}).")

    def check_fit(self, ts: TrialSet, owner: str) -> None:
        """Raise when ``ts`` (about to be fitted by ``owner``) holds a test trial."""
        self.n_fits_ += 1
        self._check_ids(_trial_ids(ts), owner)

    def check(self, *fitted: "Transform") -> None:
        """Raise when any of the fitted transforms (steps of a Compose included) saw a test trial."""
        for t in fitted:
            if isinstance(t, Compose):
                self.check(*t.steps)
            if not hasattr(t, "n_fit_trials_"):
                raise NotFittedError(f"{type(t).__name__} is not fitted; nothing to check.")
            self._check_ids(t.fit_trials_, type(t).__name__)


def check_no_leak(fitted: "Transform | Sequence[Transform]", test: Split | TrialSet | np.ndarray
                  ) -> None:
    """Raise :class:`DataLeakError` when a fitted transform saw any trial of ``test``."""
    items = [fitted] if isinstance(fitted, Transform) else list(fitted)
    LeakGuard(test).check(*items)


# ---------------------------------------------------------------------------------------- base
class Transform(BaseEstimator):
    """Base class: ``fit`` / ``transform`` / ``fit_transform`` on TrialSets.

    Subclasses implement ``_fit(ts)`` (learn state, attributes ending in ``_``) and
    ``_transform(ts) -> TrialSet``. Every fit records ``n_fit_trials_`` and ``fit_trials_`` (the
    ``trial_index`` values it saw, or None).
    """

    _needs_signals = False

    def _check_input(self, ts: TrialSet) -> None:
        validate_type(ts, TrialSet, "ts", owner=type(self).__name__)
        if self._needs_signals:
            if ts.X.ndim != 3 or isinstance(ts.info, VoxelInfo):
                raise ValueError(f"{type(self).__name__} needs signal trials (trials, channels, "
                                 f"times); got X of shape {ts.X.shape}.")

    def fit(self, ts: TrialSet) -> "Transform":
        """Learn the transform's state from (training) trials ``ts``; returns ``self``."""
        self._check_input(ts)
        if len(ts) == 0:
            raise ValueError(f"{type(self).__name__}.fit got an empty TrialSet.")
        for guard in _ACTIVE_GUARDS:
            guard.check_fit(ts, type(self).__name__)
        self._fit(ts)
        self.n_fit_trials_ = len(ts)
        self.fit_trials_ = _trial_ids(ts)
        return self

    def transform(self, ts: TrialSet) -> TrialSet:
        """Apply the fitted transform; returns a new TrialSet (``ts`` is not modified)."""
        if not hasattr(self, "n_fit_trials_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit on the "
                                 f"training trials first.")
        self._check_input(ts)
        return self._transform(ts)

    def fit_transform(self, ts: TrialSet) -> TrialSet:
        """``fit(ts)`` then ``transform(ts)``."""
        return self.fit(ts).transform(ts)

    def _fit(self, ts: TrialSet) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _transform(self, ts: TrialSet) -> TrialSet:  # pragma: no cover - abstract
        raise NotImplementedError


def _new(ts: TrialSet, X: np.ndarray, info: Any = None) -> TrialSet:
    """The same trials with new data (and optionally new info)."""
    return TrialSet(np.asarray(X, dtype=np.float32), ts.y, ts.meta.copy(),
                    ts.info if info is None else info, ts.classes, ts.tmin, check_finite=False)


def _check_sfreq(self: Transform, ts: TrialSet) -> float:
    if ts.info is None:
        raise ValueError(f"{type(self).__name__} needs the sampling rate: the TrialSet has no "
                         f"mne.Info.")
    return ts.sfreq


# ---------------------------------------------------------------------------------------- filters
def cheby2_sos(sfreq: float, l_freq: float | None, h_freq: float | None, *,
               l_stop: float | None = None, h_stop: float | None = None, gpass: float = 1.0,
               gstop: float = 40.0, return_order: bool = False) -> np.ndarray:
    """Second-order sections of the Chebyshev type II filter :class:`BandPass` designs.

    The order is the smallest :func:`scipy.signal.cheb2ord` finds for at most ``gpass`` dB
    ripple in the pass band (``l_freq``-``h_freq``) and at least ``gstop`` dB attenuation below
    ``l_stop`` and above ``h_stop``; :func:`scipy.signal.cheby2` designs it from the natural
    frequencies ``cheb2ord`` returns. ``l_freq`` None gives a low-pass, ``h_freq`` None a
    high-pass. Stop edges default to ``l_freq / 3`` and ``1.125 * h_freq`` (FLEEG: 0.1 and 45 Hz
    around 0.3-40 Hz).

    Returns
    -------
    sos : ndarray, shape (n_sections, 6)
    order : int
        The prototype order ``cheb2ord`` chose (only with ``return_order=True``).

    Raises
    ------
    ValueError
        When the edges are not ordered ``0 < l_stop < l_freq < h_freq < h_stop < Nyquist``.
    """
    from scipy import signal

    owner = "BandPass"
    for key, value in (("l_stop", l_stop), ("h_stop", h_stop)):
        validate_type(value, ("numeric", None), key, owner=owner)
    for key, value in (("gpass", gpass), ("gstop", gstop)):
        validate_type(value, "numeric", key, owner=owner)
    if not 0 < gpass < gstop:
        raise ValueError(f"BandPass needs 0 < gpass < gstop (dB); got {gpass} and {gstop}.")
    nyq = float(sfreq) / 2.0
    if l_freq is not None and l_stop is None:
        l_stop = l_freq / 3.0
    if h_freq is not None and h_stop is None:
        h_stop = 1.125 * h_freq
    edges = [e for e in (l_stop, l_freq, h_freq, h_stop) if e is not None]
    if not (edges[0] > 0 and all(a < b for a, b in zip(edges, edges[1:])) and edges[-1] < nyq):
        raise ValueError(f"BandPass(method='cheby2') needs 0 < l_stop < l_freq < h_freq < "
                         f"h_stop < Nyquist ({nyq:g} Hz at {float(sfreq):g} Hz); got l_stop="
                         f"{l_stop}, l_freq={l_freq}, h_freq={h_freq}, h_stop={h_stop}.")
    if l_freq is not None and h_freq is not None:
        wp, ws, btype = [l_freq, h_freq], [l_stop, h_stop], "bandpass"
    elif l_freq is not None:
        wp, ws, btype = l_freq, l_stop, "highpass"
    else:
        wp, ws, btype = h_freq, h_stop, "lowpass"
    order, wn = signal.cheb2ord(wp, ws, gpass, gstop, fs=sfreq)
    sos = signal.cheby2(order, gstop, wn, btype=btype, output="sos", fs=sfreq)
    return (sos, int(order)) if return_order else sos


def cheby2_filter(X: np.ndarray, sos: np.ndarray) -> np.ndarray:
    """Zero-phase application of :func:`cheby2_sos` sections along the last axis
    (:func:`scipy.signal.sosfiltfilt` in float64), cast to float32."""
    from scipy import signal

    X = np.asarray(X)
    return signal.sosfiltfilt(sos, X.astype(np.float64, copy=False), axis=-1).astype(np.float32)


class BandPass(Transform):
    """Zero-phase band-pass (or low/high-pass) filter of every trial.

    ``method="iir"`` and ``"fir"`` equal :func:`mne.filter.filter_data` with the same
    parameters (it is called directly), cast to float32. ``method="cheby2"`` is the Chebyshev
    type II filter whose order follows from a pass-band ripple and a stop-band attenuation
    (FLEEG, spec ``fleeg.md`` §3: 1 dB / 40 dB, stop edges 0.1 and 45 Hz around 0.3-40 Hz),
    designed with scipy (:func:`cheby2_sos`) in ``fit`` and run forwards and backwards
    (:func:`scipy.signal.sosfiltfilt`).

    Parameters
    ----------
    l_freq, h_freq : float or None
        Pass band edges in Hz; None for a low-pass (``l_freq``) or high-pass (``h_freq``).
    method : {"iir", "fir", "cheby2"}
        ``"iir"``: Butterworth, order 4 by default, second-order sections, applied forwards and
        backwards (zero phase). ``"fir"``: MNE's default windowed FIR (``fir_design``).
        ``"cheby2"``: Chebyshev type II from ``gpass``/``gstop`` and the stop edges.
    iir_params : dict or None
        Passed to MNE with ``method="iir"`` (default:
        ``dict(order=4, ftype="butter", output="sos")``).
    fir_design : str
        MNE's FIR design (``"firwin"``).
    l_stop, h_stop : float or None
        ``"cheby2"`` only: stop-band edges in Hz (default ``l_freq / 3`` and ``1.125 * h_freq``).
    gpass, gstop : float
        ``"cheby2"`` only: largest pass-band ripple and smallest stop-band attenuation in dB
        (1 and 40).
    verbose : bool, str or None
        MNE verbosity.

    Attributes
    ----------
    sfreq_ : float
        The sampling rate the filter was fitted for; other rates raise in ``transform``.
    sos_ : ndarray or None
        ``"cheby2"``: the designed second-order sections (None for the MNE methods).
    order_ : int or None
        ``"cheby2"``: the filter order ``cheb2ord`` chose.

    Examples
    --------
    >>> fleeg = BandPass(0.3, 40, method="cheby2", l_stop=0.1, h_stop=45)  # doctest: +SKIP
    >>> train = fleeg.fit_transform(train)                                   # doctest: +SKIP
    """

    _needs_signals = True

    def __init__(self, l_freq: float | None, h_freq: float | None, *, method: str = "iir",
                 iir_params: dict | None = None, fir_design: str = "firwin",
                 l_stop: float | None = None, h_stop: float | None = None, gpass: float = 1.0,
                 gstop: float = 40.0, verbose: bool | str | None = None):
        self.l_freq = l_freq
        self.h_freq = h_freq
        self.method = method
        self.iir_params = iir_params
        self.fir_design = fir_design
        self.l_stop = l_stop
        self.h_stop = h_stop
        self.gpass = gpass
        self.gstop = gstop
        self.verbose = verbose

    def _fit(self, ts: TrialSet) -> None:
        owner = "BandPass"
        check_option(self.method, ("iir", "fir", "cheby2"), "method", owner=owner)
        validate_type(self.l_freq, ("numeric", None), "l_freq", owner=owner)
        validate_type(self.h_freq, ("numeric", None), "h_freq", owner=owner)
        sfreq = _check_sfreq(self, ts)
        if self.l_freq is None and self.h_freq is None:
            raise ValueError("BandPass needs l_freq, h_freq or both; got None for both.")
        if self.l_freq is not None and self.l_freq <= 0:
            raise ValueError(f"BandPass l_freq must be > 0 Hz; got {self.l_freq}.")
        if self.h_freq is not None and not self.h_freq < sfreq / 2:
            raise ValueError(f"BandPass h_freq must be below the Nyquist frequency {sfreq / 2:g} Hz; "
                             f"got {self.h_freq}.")
        if self.l_freq is not None and self.h_freq is not None and not self.l_freq < self.h_freq:
            raise ValueError(f"BandPass needs l_freq < h_freq; got {self.l_freq} and {self.h_freq}.")
        if self.method != "cheby2" and (self.l_stop is not None or self.h_stop is not None):
            raise ValueError(f"BandPass l_stop/h_stop apply to method='cheby2' only; got "
                             f"method={self.method!r}.")
        self.sfreq_ = sfreq
        if self.method == "cheby2":
            self.sos_, self.order_ = cheby2_sos(
                sfreq, self.l_freq, self.h_freq, l_stop=self.l_stop, h_stop=self.h_stop,
                gpass=self.gpass, gstop=self.gstop, return_order=True)
        else:
            self.sos_ = None
            self.order_ = None

    def _mne_kwargs(self) -> dict:
        kw: dict[str, Any] = dict(method=self.method, phase="zero", verbose=_mne_verbose(self.verbose))
        if self.method == "iir":
            kw["iir_params"] = (dict(order=4, ftype="butter", output="sos")
                                if self.iir_params is None else dict(self.iir_params))
        else:
            kw["fir_design"] = self.fir_design
        return kw

    def _transform(self, ts: TrialSet) -> TrialSet:
        sfreq = _check_sfreq(self, ts)
        if sfreq != self.sfreq_:
            raise ValueError(f"BandPass was fitted at {self.sfreq_:g} Hz but the TrialSet is sampled "
                             f"at {sfreq:g} Hz.")
        if self.method == "cheby2":
            X = cheby2_filter(ts.X, self.sos_)
        else:
            import mne

            X = mne.filter.filter_data(np.asarray(ts.X, dtype=np.float64), sfreq, self.l_freq,
                                       self.h_freq, **self._mne_kwargs())
        info = ts.info.copy()
        with info._unlock():
            if self.l_freq is not None:
                info["highpass"] = max(float(info["highpass"] or 0.0), float(self.l_freq))
            if self.h_freq is not None:
                info["lowpass"] = min(float(info["lowpass"] or sfreq / 2), float(self.h_freq))
        return _new(ts, X, info)


class Resample(Transform):
    """Resample every trial to ``sfreq`` with :func:`mne.filter.resample`; updates ``info``.

    Parameters
    ----------
    sfreq : float
        New sampling rate in Hz. The trial length becomes ``round(n_times * sfreq / old)``.
    method : {"polyphase", "fft"}
        Polyphase filtering (scipy ``resample_poly`` through MNE; no wrap-around at trial edges)
        or MNE's padded FFT method.
    verbose : bool, str or None
        MNE verbosity.

    Attributes
    ----------
    sfreq_in_ : float
        The input rate seen in ``fit``.
    """

    _needs_signals = True

    def __init__(self, sfreq: float, *, method: str = "polyphase",
                 verbose: bool | str | None = None):
        self.sfreq = sfreq
        self.method = method
        self.verbose = verbose

    def _fit(self, ts: TrialSet) -> None:
        validate_type(self.sfreq, "numeric", "sfreq", owner="Resample")
        if self.sfreq <= 0:
            raise ValueError(f"Resample sfreq must be > 0 Hz; got {self.sfreq}.")
        check_option(self.method, ("polyphase", "fft"), "method", owner="Resample")
        self.sfreq_in_ = _check_sfreq(self, ts)

    def _transform(self, ts: TrialSet) -> TrialSet:
        import mne

        old = _check_sfreq(self, ts)
        if old != self.sfreq_in_:
            raise ValueError(f"Resample was fitted on data at {self.sfreq_in_:g} Hz but the TrialSet "
                             f"is sampled at {old:g} Hz.")
        if old == self.sfreq:
            return _new(ts, np.array(ts.X, dtype=np.float32))
        X = mne.filter.resample(np.asarray(ts.X, dtype=np.float64), up=float(self.sfreq),
                                down=old, method=self.method, verbose=_mne_verbose(self.verbose))
        info = ts.info.copy()
        with info._unlock():
            info["sfreq"] = float(self.sfreq)
            info["lowpass"] = min(float(info["lowpass"] or self.sfreq / 2), float(self.sfreq) / 2)
        return _new(ts, X, info)


# ---------------------------------------------------------------------------------------- alignment
def trial_covariances(X: np.ndarray) -> np.ndarray:
    """Per-trial spatial covariances, time mean removed, divided by ``n_times - 1`` (float64).

    Parameters
    ----------
    X : ndarray, shape (n_trials, n_channels, n_times)

    Returns
    -------
    ndarray, shape (n_trials, n_channels, n_channels)
    """
    X = np.asarray(X, dtype=np.float64)
    if X.shape[-1] < 2:
        raise ValueError(f"Covariances need at least 2 time samples; got {X.shape[-1]}.")
    Xc = X - X.mean(axis=-1, keepdims=True)
    return Xc @ Xc.transpose(0, 2, 1) / (X.shape[-1] - 1)


def _inv_sqrtm(R: np.ndarray, where: str) -> np.ndarray:
    """R^(-1/2) of a symmetric positive definite matrix, via its eigendecomposition."""
    w, V = np.linalg.eigh((R + R.T) / 2)
    if w.min() <= max(w.max(), 0.0) * 1e-12:
        raise ValueError(f"EuclideanAlignment: the mean covariance of {where} is singular "
                         f"(eigenvalues {w.min():.3g} .. {w.max():.3g}); drop a channel after "
                         f"re-referencing or set reg > 0.")
    return (V / np.sqrt(w)) @ V.T


class EuclideanAlignment(Transform):
    """Euclidean alignment (He & Wu 2020): whiten each group's trials by its mean covariance.

    ``R`` is the mean of the per-trial covariances (time mean removed, divided by ``T - 1``) of
    the trials seen in ``fit`` (the training trials) of each group; ``transform`` replaces every
    trial ``X`` by ``R^(-1/2) X``. The aligned training trials then have the identity as their
    mean covariance.

    Parameters
    ----------
    per : {"subject", "session", "all"}
        One reference per subject, per subject and session, or one for all trials.
    test_mode : {"fit", "causal", "transductive"}
        What ``transform`` does with a group not seen in ``fit``: ``"fit"`` raises;
        ``"causal"`` aligns trial ``i`` (in recording order) with the mean covariance of that
        group's trials ``0..i`` (running-mean, online EA); ``"transductive"`` uses the mean over
        all of the group's trials given to ``transform`` (no labels, but every test trial).
    reg : float
        Shrinkage: ``R + reg * trace(R) / C * I`` (0 for none).

    Attributes
    ----------
    references_ : dict
        Group -> ``R`` (float64).
    whiteners_ : dict
        Group -> ``R^(-1/2)``.
    """

    _needs_signals = True

    def __init__(self, per: str = "subject", *, test_mode: str = "fit", reg: float = 0.0):
        self.per = per
        self.test_mode = test_mode
        self.reg = reg

    def _group_keys(self, ts: TrialSet) -> np.ndarray:
        if self.per == "all":
            return np.full(len(ts), "all", dtype=object)
        subject = ts.meta["subject"].astype(str).to_numpy()
        if self.per == "subject":
            return subject
        return (ts.meta["subject"].astype(str) + "/" + ts.meta["session"].astype(str)).to_numpy()

    def _reference(self, covs: np.ndarray) -> np.ndarray:
        R = covs.mean(axis=0)
        if self.reg:
            R = R + self.reg * np.trace(R) / R.shape[0] * np.eye(R.shape[0])
        return R

    def _fit(self, ts: TrialSet) -> None:
        owner = "EuclideanAlignment"
        check_option(self.per, ("subject", "session", "all"), "per", owner=owner)
        check_option(self.test_mode, ("fit", "causal", "transductive"), "test_mode", owner=owner)
        validate_type(self.reg, "numeric", "reg", owner=owner)
        if self.reg < 0:
            raise ValueError(f"EuclideanAlignment reg must be >= 0; got {self.reg}.")
        keys = self._group_keys(ts)
        covs = trial_covariances(ts.X)
        self.references_, self.whiteners_ = {}, {}
        for g in dict.fromkeys(keys):
            R = self._reference(covs[keys == g])
            self.references_[g] = R
            self.whiteners_[g] = _inv_sqrtm(R, f"{self.per} {g!r}")
        self.n_chans_ = ts.n_chans

    def _transform(self, ts: TrialSet) -> TrialSet:
        if ts.n_chans != self.n_chans_:
            raise ValueError(f"EuclideanAlignment was fitted on {self.n_chans_} channels; the "
                             f"TrialSet has {ts.n_chans}.")
        keys = self._group_keys(ts)
        X = np.asarray(ts.X, dtype=np.float64)
        out = np.empty(X.shape, dtype=np.float64)
        for g in dict.fromkeys(keys):
            idx = np.flatnonzero(keys == g)
            if g in self.whiteners_:
                out[idx] = self.whiteners_[g] @ X[idx]
            elif self.test_mode == "fit":
                raise ValueError(f"EuclideanAlignment: {self.per} {g!r} was not seen in fit (fitted "
                                 f"on {list(self.whiteners_)}); use test_mode='causal' or "
                                 f"'transductive' for unseen {self.per}s.")
            elif self.test_mode == "transductive":
                W = _inv_sqrtm(self._reference(trial_covariances(X[idx])), f"{self.per} {g!r}")
                out[idx] = W @ X[idx]
            else:  # causal: trial i sees the mean covariance of trials 0..i in recording order
                order = chronological_order(ts, idx)
                covs = trial_covariances(X[order])
                running = np.cumsum(covs, axis=0) / np.arange(1, len(order) + 1)[:, None, None]
                for i, trial in enumerate(order):
                    R = running[i]
                    if self.reg:
                        R = R + self.reg * np.trace(R) / R.shape[0] * np.eye(R.shape[0])
                    out[trial] = _inv_sqrtm(R, f"{self.per} {g!r} (causal, trial {i})") @ X[trial]
        return _new(ts, out)


# ---------------------------------------------------------------------------------------- scaling
class ChannelScaler(Transform):
    """Standardise each channel (or voxel) with the mean and standard deviation of training data.

    Statistics are taken over trials and time samples of the fitted trials.

    Attributes
    ----------
    mean_, scale_ : ndarray, shape (n_channels,) or (n_voxels,)
    """

    def _fit(self, ts: TrialSet) -> None:
        X = np.asarray(ts.X, dtype=np.float64)
        axes = (0, 2) if X.ndim == 3 else (0,)
        self.mean_ = X.mean(axis=axes)
        self.scale_ = X.std(axis=axes)
        flat = np.flatnonzero(self.scale_ == 0)
        if flat.size:
            names = [ts.ch_names[i] for i in flat[:5]] if X.ndim == 3 else flat[:5].tolist()
            raise ValueError(f"ChannelScaler: {flat.size} channel(s) are constant in the training "
                             f"data ({names}); drop them before scaling.")

    def _transform(self, ts: TrialSet) -> TrialSet:
        X = np.asarray(ts.X, dtype=np.float64)
        if X.shape[1] != self.mean_.shape[0]:
            raise ValueError(f"ChannelScaler was fitted on {self.mean_.shape[0]} channels; the "
                             f"TrialSet has {X.shape[1]}.")
        shape = (1, -1, 1) if X.ndim == 3 else (1, -1)
        return _new(ts, (X - self.mean_.reshape(shape)) / self.scale_.reshape(shape))


# ---------------------------------------------------------------------------------------- compose
class Compose(Transform):
    """Apply transforms one after another; ``fit`` fits each on the output of the previous ones.

    Parameters
    ----------
    steps : list of Transform
    """

    def __init__(self, steps: Sequence[Transform]):
        self.steps = steps

    def _check_steps(self) -> None:
        validate_type(self.steps, (list, tuple), "steps", owner="Compose")
        for i, step in enumerate(self.steps):
            if not (hasattr(step, "fit") and hasattr(step, "transform")):
                raise TypeError(f"Compose step {i} ({step!r}) has no fit/transform methods.")

    def fit(self, ts: TrialSet) -> "Compose":
        self.fit_transform(ts)
        return self

    def fit_transform(self, ts: TrialSet) -> TrialSet:
        self._check_steps()
        self._check_input(ts)
        for guard in _ACTIVE_GUARDS:
            guard.check_fit(ts, "Compose")
        out = ts
        for step in self.steps:
            out = step.fit_transform(out)
        self.n_fit_trials_ = len(ts)
        self.fit_trials_ = _trial_ids(ts)
        return out

    def _transform(self, ts: TrialSet) -> TrialSet:
        for step in self.steps:
            ts = step.transform(ts)
        return ts

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> Transform:
        return self.steps[i]


def _build(cls: type, params: dict, key: str) -> Transform:
    import inspect

    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for p in params:
        if p not in allowed:
            raise ValueError(f"Unknown parameter {p!r} in preprocessing {key!r}; allowed: {allowed}.")
    return cls(**params)


TRANSFORM_KEYS = ("bandpass", "resample", "alignment", "scale")
"""Keys of :func:`make_transforms` configs, in the order the transforms are applied."""


def make_transforms(config: dict | None) -> Compose:
    """Build the preprocessing chain of a pipeline file's ``[preprocessing]`` table.

    Parameters
    ----------
    config : dict or None
        Any of (applied in this order, whatever the dict order; a None/False value skips):

        - ``"bandpass"``: ``[l_freq, h_freq]`` or ``{"l_freq", "h_freq", "method", ...}``
          (:class:`BandPass` keywords).
        - ``"resample"``: a rate in Hz or ``{"sfreq", "method"}``.
        - ``"alignment"``: ``"euclidean"`` or ``{"method": "euclidean", "per", "test_mode",
          "reg"}``.
        - ``"scale"``: ``"channel"``.

    Returns
    -------
    Compose

    Raises
    ------
    ValueError
        For an unknown key or value, naming it and listing what is allowed.

    Examples
    --------
    >>> make_transforms({"bandpass": [8, 32], "alignment": "euclidean"})  # doctest: +ELLIPSIS
    Compose(steps=[BandPass(h_freq=32, l_freq=8), EuclideanAlignment()])
    """
    if config is None:
        return Compose([])
    validate_type(config, dict, "config", owner="make_transforms")
    for key in config:
        if key not in TRANSFORM_KEYS:
            raise ValueError(f"Unknown preprocessing key {key!r}; allowed: {list(TRANSFORM_KEYS)}.")
    steps: list[Transform] = []
    bp = config.get("bandpass")
    if bp not in (None, False):
        if isinstance(bp, dict):
            steps.append(_build(BandPass, bp, "bandpass"))
        elif isinstance(bp, (list, tuple)) and len(bp) == 2:
            steps.append(BandPass(bp[0], bp[1]))
        else:
            raise ValueError(f"preprocessing 'bandpass' must be [l_freq, h_freq] or a table of "
                             f"BandPass parameters; got {bp!r}.")
    rs = config.get("resample")
    if rs not in (None, False):
        if isinstance(rs, dict):
            steps.append(_build(Resample, rs, "resample"))
        else:
            validate_type(rs, "numeric", "resample", owner="make_transforms")
            steps.append(Resample(rs))
    al = config.get("alignment")
    if al not in (None, False):
        if isinstance(al, str):
            check_option(al, ("euclidean", "none"), "alignment", owner="make_transforms")
            if al == "euclidean":
                steps.append(EuclideanAlignment())
        elif isinstance(al, dict):
            params = dict(al)
            method = params.pop("method", "euclidean")
            check_option(method, ("euclidean",), "alignment.method", owner="make_transforms")
            steps.append(_build(EuclideanAlignment, params, "alignment"))
        else:
            raise ValueError(f"preprocessing 'alignment' must be 'euclidean' or a table; got {al!r}.")
    sc = config.get("scale")
    if sc not in (None, False):
        check_option(sc, ("channel", "none"), "scale", owner="make_transforms")
        if sc == "channel":
            steps.append(ChannelScaler())
    return Compose(steps)
