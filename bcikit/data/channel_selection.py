"""Channel selection for intracranial recordings: by region and by contribution ranking.

Both selectors are :class:`~bcikit.data.transforms.Transform` objects: ``fit`` learns which
channels to keep from *training* trials, ``transform`` keeps those channels (in the chosen order)
in any TrialSet of the same subject. Fitting inside a :class:`~bcikit.data.transforms.LeakGuard`
block therefore proves that no test trial took part in the choice, and a protocol that refits the
selector on each training split cannot leak test data through the channel list.

- :class:`RegionSelector` keeps the channels whose anatomical region is among ``regions``
  (from an electrodes table, as :func:`bcikit.io.ieeg.regions` groups them, or from a region map
  such as a dataset card's). It looks only at channel names, never at trials.
- :class:`ContributionSelector` ranks channels by their *contribution* (Du-IN, arXiv:2405.11459):
  the mean absolute weight of each channel in the subject layer (the per-subject
  ``Linear(n_chans -> 16)`` channel mixer) of a classifier trained on the training trials, and
  keeps the top ``n_channels``. The classifier is either built and trained by a callable on the
  training trials (the default is :class:`HighGammaProbe`, a fast stand-in with the same subject
  layer), or given already fitted (then the caller vouches for what it was trained on).

The module also holds the spec's floor baseline, :class:`HighGammaLDA` (100 ms high-gamma
envelopes -> shrinkage LDA), and the feature function both use, :func:`high_gamma_features`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from ..utils import check_option, check_range, logger, validate_type
from .transforms import _ACTIVE_GUARDS, Transform
from .trialset import TrialSet

__all__ = [
    "RegionSelector",
    "ContributionSelector",
    "HighGammaProbe",
    "HighGammaLDA",
    "select_by_region",
    "channel_regions",
    "channel_contributions",
    "high_gamma_features",
]

SPEECH_REGIONS = ("vSMC", "STG")


# ------------------------------------------------------------------------------------ helpers
def _pick(ts: TrialSet, names: Sequence[str]) -> TrialSet:
    """``ts`` with only the channels ``names`` (in that order); info picked alongside."""
    import mne

    index = [ts.ch_names.index(n) for n in names]
    info = None
    if ts.info is not None and hasattr(ts.info, "ch_names"):
        info = mne.pick_info(ts.info, index, verbose="error")
    X = np.asarray(ts.X)[:, index]
    return TrialSet(X, ts.y, ts.meta.copy(), info, ts.classes, ts.tmin, check_finite=False)


def _subject_of(ts: TrialSet) -> str | None:
    subjects = pd.unique(ts.meta["subject"].astype(str))
    return str(subjects[0]) if len(subjects) == 1 else None


def _lookup_per_subject(obj: Any, subject: str | None, what: str, owner: str) -> Any:
    """``obj[subject]`` when ``obj`` is a per-subject mapping (keys are subjects), else ``obj``."""
    if isinstance(obj, Mapping) and obj and all(isinstance(v, (Mapping, pd.DataFrame))
                                                for v in obj.values()):
        if subject is None:
            raise ValueError(f"{owner}: {what} is given per subject but the TrialSet holds "
                             f"several subjects; select one subject first.")
        if str(subject) not in {str(k) for k in obj}:
            raise ValueError(f"{owner}: {what} has no entry for subject {subject!r} (it has "
                             f"{sorted(str(k) for k in obj)[:8]}).")
        return {str(k): v for k, v in obj.items()}[str(subject)]
    return obj


def channel_regions(ch_names: Sequence[str], *, electrodes: Any = None,
                    region_map: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """The region of each channel, from an electrodes table or a region map.

    Parameters
    ----------
    ch_names : sequence of str
        Channel names: monopolar contacts (``"A1"``) or bipolar derivations (``"A1-A2"``, which
        take the anode's region, as :func:`bcikit.io.ieeg.regions` does).
    electrodes : path-like or DataFrame or None
        An electrodes table (see :func:`bcikit.io.ieeg.read_electrodes`) with a region-like column.
    region_map : mapping or None
        ``{region: [channel names]}`` (e.g. from a dataset card); names are matched as given, then
        by the anode of a bipolar name.

    Returns
    -------
    list of str
        One region per channel; ``"unknown"`` when the source does not name the channel.

    Raises
    ------
    ValueError
        When neither or both sources are given, or the table has no region column.
    """
    if (electrodes is None) == (region_map is None):
        raise ValueError("channel_regions needs exactly one of electrodes= (a table with regions) "
                         "or region_map= ({region: [channels]}).")
    names = [str(n) for n in ch_names]
    if electrodes is not None:
        from ..io.ieeg import regions

        groups = regions(electrodes)
        table_names = {n for v in groups.values() for n in v}
        lookup: dict[str, str] = {}
        from ..io.ieeg import _match_key

        for region, members in groups.items():
            for m in members:
                lookup[_match_key(m)] = region
        out = []
        for n in names:
            key = _match_key(_anode(n))
            out.append(lookup.get(key, "unknown"))
        if table_names and all(r == "unknown" for r in out):
            raise ValueError(f"channel_regions: the electrodes table names none of the channels "
                             f"{names[:5]}... (table: {sorted(table_names)[:5]}...).")
        return out
    validate_type(region_map, Mapping, "region_map", owner="channel_regions")
    by_name: dict[str, str] = {}
    for region, members in region_map.items():
        if isinstance(members, str) or not isinstance(members, Sequence):
            raise ValueError(f"channel_regions: region_map[{region!r}] must be a list of channel "
                             f"names; got {members!r:.60}.")
        for m in members:
            if str(m) in by_name and by_name[str(m)] != str(region):
                raise ValueError(f"channel_regions: region_map puts channel {m!r} in both "
                                 f"{by_name[str(m)]!r} and {region!r}.")
            by_name[str(m)] = str(region)
    return [by_name.get(n, by_name.get(_anode(n), "unknown")) for n in names]


def _anode(name: str) -> str:
    from ..io.ieeg import _is_bipolar_name

    return name.split("-")[0].strip() if _is_bipolar_name(name) else name


def select_by_region(ts_or_names: TrialSet | Sequence[str], regions: str | Sequence[str] = SPEECH_REGIONS,
                     *, electrodes: Any = None,
                     region_map: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """Names of the channels that lie in ``regions`` (recording order).

    Parameters
    ----------
    ts_or_names : TrialSet or sequence of str
        The channels to choose from.
    regions : str or sequence of str
        Region labels to keep (exact, case-sensitive match with the table's labels).
    electrodes, region_map
        Where regions come from (see :func:`channel_regions`).

    Returns
    -------
    list of str

    Raises
    ------
    ValueError
        When no channel lies in the regions (the message lists the regions present).
    """
    names = ts_or_names.ch_names if isinstance(ts_or_names, TrialSet) else list(ts_or_names)
    wanted = [regions] if isinstance(regions, str) else list(regions)
    labels = channel_regions(names, electrodes=electrodes, region_map=region_map)
    keep = [n for n, r in zip(names, labels) if r in wanted]
    if not keep:
        present = sorted(set(labels))
        raise ValueError(f"select_by_region: no channel lies in {wanted}; the channels' regions "
                         f"are {present}.")
    return keep


# ------------------------------------------------------------------------------------ regions
class RegionSelector(Transform):
    """Keep the channels of the given anatomical regions.

    Parameters
    ----------
    regions : str or sequence of str
        Region labels to keep (default: vSMC and STG, the speech regions of Du-IN).
    electrodes : path-like, DataFrame, mapping or None
        Electrodes table with a region column, or ``{subject: table}``.
    region_map : mapping or None
        ``{region: [channel names]}``, or ``{subject: {region: [...]}}`` (e.g. a card's map).

    Attributes
    ----------
    channels_ : list of str
        The kept channels, in recording order.
    regions_ : list of str
        The region of each kept channel.

    Notes
    -----
    The choice depends on channel names only, so it is the same whichever trials are fitted; it
    is still a transform so that protocols treat it like every other fitted step.
    """

    _needs_signals = True

    def __init__(self, regions: str | Sequence[str] = SPEECH_REGIONS, *, electrodes: Any = None,
                 region_map: Mapping | None = None):
        self.regions = regions
        self.electrodes = electrodes
        self.region_map = region_map

    def _fit(self, ts: TrialSet) -> None:
        subject = _subject_of(ts)
        owner = type(self).__name__
        electrodes = (None if self.electrodes is None else
                      _lookup_per_subject(self.electrodes, subject, "electrodes", owner))
        region_map = (None if self.region_map is None else
                      _lookup_per_subject(self.region_map, subject, "region_map", owner))
        if isinstance(region_map, Mapping) and region_map and all(
                isinstance(v, Mapping) for v in region_map.values()):
            raise ValueError(f"{owner}: region_map looks per-subject but has no entry usable for "
                             f"this TrialSet.")
        self.channels_ = select_by_region(ts, self.regions, electrodes=electrodes,
                                          region_map=region_map)
        labels = channel_regions(self.channels_, electrodes=electrodes, region_map=region_map)
        self.regions_ = labels
        logger.info("%s: %d of %d channels in %s", owner, len(self.channels_), ts.n_chans,
                    self.regions)

    def _transform(self, ts: TrialSet) -> TrialSet:
        missing = [c for c in self.channels_ if c not in ts.ch_names]
        if missing:
            raise ValueError(f"{type(self).__name__}: the TrialSet lacks the selected channels "
                             f"{missing[:5]} (it has {ts.ch_names[:5]}...).")
        return _pick(ts, self.channels_)


# ------------------------------------------------------------------------------------ features
def high_gamma_features(X: np.ndarray, sfreq: float, *, band: tuple[float, float] = (70., 150.),
                        bin_s: float = 0.1, log: bool = True) -> np.ndarray:
    """High-gamma envelopes averaged in non-overlapping bins.

    The envelope is the analytic amplitude in ``band``, computed by FFT (brick-wall band-pass
    and Hilbert transform in one step, per trial); bins of ``bin_s`` seconds are averaged, and
    the log taken when ``log``. For continuous recordings with edge effects prefer
    :func:`bcikit.io.ieeg.high_gamma` (FIR sub-bands).

    Parameters
    ----------
    X : ndarray, shape (..., n_times)
    sfreq : float
    band : (float, float)
    bin_s : float
    log : bool

    Returns
    -------
    ndarray, shape (..., n_times // round(bin_s * sfreq)), float32
    """
    X = np.asarray(X, dtype=np.float32)
    sfreq = float(sfreq)
    if sfreq / 2 <= band[1]:
        raise ValueError(f"high_gamma_features needs sfreq > {2 * band[1]:g} Hz for the band "
                         f"{band}; got {sfreq:g} Hz.")
    n = X.shape[-1]
    step = int(round(bin_s * sfreq))
    if step < 1 or n < step:
        raise ValueError(f"high_gamma_features: bins of {bin_s} s do not fit {n} samples at "
                         f"{sfreq:g} Hz.")
    freqs = np.fft.rfftfreq(n, 1.0 / sfreq)
    keep = np.flatnonzero((freqs >= band[0]) & (freqs <= band[1]))
    n_bins = n // step
    out = np.empty(X.shape[:-1] + (n_bins,), dtype=np.float32)
    flat_in = X.reshape(-1, n)
    flat_out = out.reshape(-1, n_bins)
    for start in range(0, flat_in.shape[0], 256):  # bounded memory
        spec = np.fft.rfft(flat_in[start:start + 256], axis=-1)
        full = np.zeros((spec.shape[0], n), dtype=np.complex64)
        full[:, keep] = 2.0 * spec[:, keep]
        env = np.abs(np.fft.ifft(full, axis=-1))[:, :n_bins * step]
        env = env.reshape(env.shape[0], n_bins, step).mean(-1)
        flat_out[start:start + 256] = np.log(env + 1e-30) if log else env
    return out


class HighGammaLDA(ClassifierMixin, BaseEstimator):
    """The floor baseline of the Du-IN benchmark: 100 ms high-gamma envelopes -> shrinkage LDA.

    ``fit``/``predict`` take arrays ``(n_trials, n_chans, n_times)`` or TrialSets (then ``y`` is
    taken from the TrialSet). Features are :func:`high_gamma_features` of every channel,
    standardised with the training mean and SD; the classifier is scikit-learn's
    ``LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")``.

    Parameters
    ----------
    sfreq : float
        Sampling rate (ignored for TrialSets, which carry theirs).
    bin_s : float
        Bin width in seconds (0.1).
    tmin, tmax : float or None
        Optional window (s, relative to the trial's first sample) to take features from.
    """

    def __init__(self, sfreq: float = 1000.0, bin_s: float = 0.1, tmin: float | None = None,
                 tmax: float | None = None):
        self.sfreq = sfreq
        self.bin_s = bin_s
        self.tmin = tmin
        self.tmax = tmax

    def _features(self, X) -> np.ndarray:
        sfreq = X.sfreq if isinstance(X, TrialSet) else self.sfreq
        data = np.asarray(X.X if isinstance(X, TrialSet) else X, dtype=np.float32)
        if data.ndim != 3:
            raise ValueError(f"HighGammaLDA expects (n_trials, n_chans, n_times); got {data.shape}.")
        a = 0 if self.tmin is None else int(round(self.tmin * sfreq))
        b = data.shape[-1] if self.tmax is None else int(round(self.tmax * sfreq))
        feats = high_gamma_features(data[..., a:b], sfreq, bin_s=self.bin_s)
        return feats.reshape(len(feats), -1).astype(np.float64)

    def fit(self, X, y=None) -> "HighGammaLDA":
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
        from threadpoolctl import threadpool_limits

        if isinstance(X, TrialSet):
            y = X.y if y is None else y
        if y is None:
            raise ValueError("HighGammaLDA.fit needs y (or a TrialSet).")
        F = self._features(X)
        self.mean_ = F.mean(0)
        self.scale_ = F.std(0) + 1e-12
        with threadpool_limits(1):
            self.lda_ = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(
                (F - self.mean_) / self.scale_, np.asarray(y))
        self.classes_ = self.lda_.classes_
        return self

    def decision_function(self, X) -> np.ndarray:
        from threadpoolctl import threadpool_limits

        F = (self._features(X) - self.mean_) / self.scale_
        with threadpool_limits(1):
            return self.lda_.decision_function(F)

    def predict(self, X) -> np.ndarray:
        from threadpoolctl import threadpool_limits

        F = (self._features(X) - self.mean_) / self.scale_
        with threadpool_limits(1):
            return self.lda_.predict(F)

    def score(self, X, y=None, sample_weight=None) -> float:
        if isinstance(X, TrialSet):
            y = X.y if y is None else y
        return float(np.mean(self.predict(X) == np.asarray(y)))


# ------------------------------------------------------------------------------------ contribution
def channel_contributions(model: Any, n_chans: int | None = None, *,
                          subject: str | None = None) -> np.ndarray:
    """Each input channel's contribution: mean |W| of its weights in the subject layer.

    Parameters
    ----------
    model : object or array
        One of:

        - an object with a ``channel_contributions()`` method returning the ``(n_chans,)``
          contributions (:class:`bcikit.models.DuIN`);
        - an array: the subject layer's weight, ``(n_out, n_chans)`` as torch's ``nn.Linear``
          stores it (or ``(n_chans, n_out)`` as the official code does; the axis of length
          ``n_chans`` is the channel axis);
        - an object with a ``channel_weights(subject=None)`` (or no-argument) method returning
          such an array, or a 1-D array of contributions;
        - an ``nn.Module`` with a ``subject_layer`` attribute that is an ``nn.Linear``, or a
          ``subject_layers`` mapping (``{subject: nn.Linear}``; pass ``subject=``).
    n_chans : int or None
        Number of channels: the axis of that length is the channel axis (None: the weight is
        taken as ``(n_out, n_chans)``, torch's layout).
    subject : str or None
        Which subject's layer, for multi-subject models.

    Returns
    -------
    ndarray, shape (n_chans,)

    Raises
    ------
    TypeError
        When no subject-layer weight can be found on ``model``.
    ValueError
        When the weight's shape does not fit ``n_chans``.
    """
    W = _subject_weight(model, subject)
    W = np.abs(np.asarray(W, dtype=np.float64))
    if W.ndim == 1:
        contrib = W
    elif W.ndim == 2:
        if n_chans is None:  # nn.Linear layout: (n_out, n_chans)
            contrib = W.mean(axis=0)
        elif W.shape[1] == n_chans:
            contrib = W.mean(axis=0)
        elif W.shape[0] == n_chans:
            contrib = W.mean(axis=1)
        else:
            raise ValueError(f"channel_contributions: the subject-layer weight has shape "
                             f"{W.shape}, which has no axis of n_chans={n_chans}.")
    else:
        raise ValueError(f"channel_contributions: expected a 1-D or 2-D weight; got shape "
                         f"{W.shape}.")
    if n_chans is not None and contrib.shape != (n_chans,):
        raise ValueError(f"channel_contributions: got {contrib.shape[0]} contributions for "
                         f"n_chans={n_chans}.")
    return contrib


def _subject_weight(model: Any, subject: str | None) -> np.ndarray:
    if isinstance(model, np.ndarray):
        return model
    method = getattr(model, "channel_contributions", None)
    if callable(method):  # bcikit.models.DuIN: already the per-channel mean |W|
        try:
            return np.asarray(_to_numpy(method(subject=subject)), dtype=float).reshape(-1)
        except TypeError:
            return np.asarray(_to_numpy(method()), dtype=float).reshape(-1)
    if hasattr(model, "channel_weights") and callable(model.channel_weights):
        try:
            w = model.channel_weights(subject=subject)
        except TypeError:
            w = model.channel_weights()
        return _to_numpy(w)
    layer = getattr(model, "subject_layer", None)
    if layer is None and hasattr(model, "subject_layers"):
        layers = model.subject_layers
        keys = [str(k) for k in layers.keys()]
        if subject is None:
            if len(keys) != 1:
                raise ValueError(f"channel_contributions: the model has subject layers for "
                                 f"{keys}; pass subject=.")
            subject = keys[0]
        if str(subject) not in keys:
            raise ValueError(f"channel_contributions: the model has no subject layer for "
                             f"{subject!r} (it has {keys}).")
        layer = layers[str(subject)]
    if layer is not None and hasattr(layer, "weight"):
        return _to_numpy(layer.weight)
    if hasattr(model, "__array__"):
        return np.asarray(model)
    raise TypeError(f"channel_contributions: cannot find a subject-layer weight on "
                    f"{type(model).__name__}; give a weight array, a model with "
                    f"channel_weights(), or an nn.Module with a 'subject_layer' nn.Linear.")


def _to_numpy(w: Any) -> np.ndarray:
    if hasattr(w, "detach"):
        return w.detach().cpu().numpy()
    return np.asarray(w)


class HighGammaProbe:
    """A fast classifier with a Du-IN-style subject layer, for contribution ranking.

    Per-channel features are the 100 ms log high-gamma envelopes (:func:`high_gamma_features`),
    standardised with the training statistics; the network is ``subject_layer =
    Linear(n_chans -> 16)`` applied at every time bin (the only channel mixing, as in Du-IN),
    then flatten -> Linear(16 * n_bins -> n_classes). Trained on full-batch cross-entropy with
    SGD (momentum 0.9) and strong weight decay: plain gradient steps move each channel's weights
    in proportion to how much that channel helps (Adam's per-weight normalisation would not), and
    the decay pulls the weights of channels that only fit noise back to zero. Its
    ``subject_layer`` weight ranks channels as a trained Du-IN classifier's is meant to, at a
    fraction of the cost; pass Du-IN itself to :class:`ContributionSelector` for the spec's exact
    procedure.

    Parameters
    ----------
    n_hidden : int
        Width of the subject layer (16, as in Du-IN).
    epochs : int
        Full-batch steps.
    lr : float
    weight_decay : float
    group_lasso : float
        Optional penalty on the sum of the subject layer's column norms.
    optimizer : {'sgd', 'adamw'}
    tmin, tmax : float or None
        Window (s, in the trials' time axis) the features are taken from (default: all).
    seed : int
        Seed of the initial weights.
    """

    def __init__(self, n_hidden: int = 16, epochs: int = 100, lr: float = 0.1,
                 weight_decay: float = 1.0, group_lasso: float = 0.0, optimizer: str = "sgd",
                 tmin: float | None = None, tmax: float | None = None, seed: int = 0):
        self.n_hidden = n_hidden
        self.tmin = tmin
        self.tmax = tmax
        self.optimizer = optimizer
        self.group_lasso = group_lasso
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed

    def fit(self, ts: TrialSet) -> "HighGammaProbe":
        import torch

        validate_type(ts, TrialSet, "ts", owner="HighGammaProbe.fit")
        check_option(self.optimizer, ("sgd", "adamw"), "optimizer", owner="HighGammaProbe")
        F = self._features(ts)  # (n, C, B)
        self.mean_ = F.mean(axis=(0, 2), keepdims=True)
        self.scale_ = F.std(axis=(0, 2), keepdims=True) + 1e-6
        F = (F - self.mean_) / self.scale_
        classes, y = np.unique(ts.y, return_inverse=True)
        self.classes_ = classes
        n, C, B = F.shape
        gen = torch.Generator().manual_seed(int(self.seed))
        self.subject_layer = torch.nn.Linear(C, self.n_hidden)
        self.head = torch.nn.Linear(self.n_hidden * B, len(classes))
        for layer in (self.subject_layer, self.head):
            with torch.no_grad():
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * 0.02)
                layer.bias.zero_()
        params = list(self.subject_layer.parameters()) + list(self.head.parameters())
        if self.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=self.lr, momentum=0.9,
                                  weight_decay=self.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        Xt = torch.as_tensor(F.transpose(0, 2, 1).copy())  # (n, B, C)
        yt = torch.as_tensor(y, dtype=torch.long)
        for _ in range(int(self.epochs)):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(self._forward(Xt), yt)
            if self.group_lasso:
                loss = loss + self.group_lasso * self.subject_layer.weight.norm(dim=0).sum()
            loss.backward()
            opt.step()
        self.n_chans_ = C
        return self

    def _features(self, ts: TrialSet) -> np.ndarray:
        X = np.asarray(ts.X)
        if self.tmin is not None or self.tmax is not None:
            t0 = ts.tmin
            a = 0 if self.tmin is None else max(0, int(round((self.tmin - t0) * ts.sfreq)))
            b = X.shape[-1] if self.tmax is None else int(round((self.tmax - t0) * ts.sfreq))
            X = X[..., a:b]
        return high_gamma_features(X, ts.sfreq)

    def _forward(self, Xt):
        h = self.subject_layer(Xt)  # (n, B, 16)
        return self.head(h.flatten(1))

    def channel_weights(self, subject: str | None = None) -> np.ndarray:
        """The subject layer's weight, ``(16, n_chans)``."""
        return self.subject_layer.weight.detach().cpu().numpy()

    def predict(self, ts: TrialSet) -> np.ndarray:
        import torch

        F = (self._features(ts) - self.mean_) / self.scale_
        with torch.no_grad():
            logits = self._forward(torch.as_tensor(F.transpose(0, 2, 1).copy()))
        return self.classes_[logits.argmax(1).numpy()]


def _default_trainer(ts: TrialSet) -> HighGammaProbe:
    return HighGammaProbe().fit(ts)


class ContributionSelector(Transform):
    """Keep the ``n_channels`` channels with the largest contribution (Du-IN's channel ranking).

    A channel's contribution is the mean |W| of its weights in the subject layer of a classifier
    trained on the *training* trials given to :meth:`fit` (see :func:`channel_contributions`).

    Parameters
    ----------
    n_channels : int
        How many channels to keep (10 in the official code).
    model : callable, fitted model or None
        ``callable(train_ts) -> fitted model``: trained inside :meth:`fit` on exactly the trials
        given (the leak-proof way: refit per training split). A fitted model (anything
        :func:`channel_contributions` reads): used as is; the caller vouches that it saw training
        trials only (when it has a ``fit_trials_`` attribute of ``trial_index`` values, those are
        checked against an active :class:`~bcikit.data.transforms.LeakGuard`). None: train a
        :class:`HighGammaProbe`.
    subject : str or None
        Subject whose layer to read in a multi-subject model (default: the TrialSet's subject).

    Attributes
    ----------
    channels_ : list of str
        The kept channels, best first.
    scores_ : ndarray, shape (n_chans,)
        Contribution of every channel of the fitted TrialSet (its channel order).
    ranking_ : list of str
        All channels, best first.
    model_ : object
        The model the contributions came from.
    """

    _needs_signals = True

    def __init__(self, n_channels: int = 10, *, model: Any = None, subject: str | None = None):
        self.n_channels = n_channels
        self.model = model
        self.subject = subject

    def _fit(self, ts: TrialSet) -> None:
        owner = type(self).__name__
        validate_type(self.n_channels, "int", "n_channels", owner=owner)
        check_range(self.n_channels, "n_channels", low=1, owner=owner)
        if self.n_channels > ts.n_chans:
            raise ValueError(f"{owner}: n_channels={self.n_channels} but the TrialSet has only "
                             f"{ts.n_chans} channels.")
        model = self.model
        if model is None:
            model = _default_trainer(ts)
        elif callable(model) and not _is_fitted_model(model):
            model = model(ts)
        else:
            seen = getattr(model, "fit_trials_", None)
            if seen is not None:
                for guard in _ACTIVE_GUARDS:
                    guard._check_ids(np.asarray(seen, dtype=np.int64), f"{owner}.model")
        subject = self.subject if self.subject is not None else _subject_of(ts)
        scores = channel_contributions(model, ts.n_chans, subject=subject)
        order = np.argsort(-scores, kind="stable")
        self.model_ = model
        self.scores_ = scores
        self.ranking_ = [ts.ch_names[i] for i in order]
        self.channels_ = self.ranking_[: self.n_channels]

    def _transform(self, ts: TrialSet) -> TrialSet:
        missing = [c for c in self.channels_ if c not in ts.ch_names]
        if missing:
            raise ValueError(f"{type(self).__name__}: the TrialSet lacks the selected channels "
                             f"{missing[:5]} (it has {ts.ch_names[:5]}...).")
        return _pick(ts, self.channels_)


def _is_fitted_model(obj: Any) -> bool:
    """A model object (rather than a trainer function): it exposes a subject-layer weight."""
    if isinstance(obj, np.ndarray):
        return True
    if any(hasattr(obj, a) for a in ("channel_contributions", "channel_weights", "subject_layer",
                                     "subject_layers")):
        return True
    try:
        import torch

        return isinstance(obj, torch.nn.Module)
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
