"""scikit-learn classifiers over bcikit's networks: ``fit(X, y)`` / ``predict(X)`` on trial arrays.

:class:`BCIClassifier` wraps any network :func:`bcikit.models.get_model` can build (a bcikit
model or a braindecode one) with Euclidean alignment and :class:`bcikit.train.Trainer`;
:class:`MVCNetClassifier` is the same machine with MVCNet's published training recipe as its
defaults (spec ``mvcnet.md`` §3).

``X`` is a float array ``(n_trials, n_chans, n_times)``; a 2-D ``X`` is read as single-channel
trials ``(n_trials, n_times)``. ``y`` holds one label per trial, of any type (strings included):
the labels are encoded with a :class:`~sklearn.preprocessing.LabelEncoder` and ``predict``
returns them as given. Both estimators pass scikit-learn's estimator checks, so they work in
``Pipeline``, ``cross_val_score``, ``GridSearchCV`` and with ``clone``.

Alignment
---------
With ``alignment="euclidean"`` (He & Wu 2020), ``fit`` computes the mean ``R`` of the per-trial
spatial covariances (time mean removed, divided by ``n_times - 1``) of the training trials only,
stores ``R^(-1/2)`` as ``R_inv_sqrt_`` and trains on ``R^(-1/2) X``; ``predict`` aligns new trials
with that same training reference (no statistics of the test trials are used). The estimators
see arrays without subject labels, so there is one reference for all training trials: fit one
estimator per subject for per-subject alignment, or use ``bcikit run`` with a protocol.

Torch is imported when an estimator is fitted, not when this module is imported.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .utils import check_option, check_range, validate_type

__all__ = ["BCIClassifier", "MVCNetClassifier", "ALIGNMENTS", "OPTIMIZERS"]

ALIGNMENTS = ("euclidean", None)
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = (None, "cosine")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_SIGNAL_PARAMS = ("n_chans", "n_outputs", "n_times", "sfreq", "chs_info")


def _as_3d(X: np.ndarray) -> np.ndarray:
    """(n, T) single-channel trials -> (n, 1, T); 3-D arrays unchanged."""
    return X[:, None, :] if X.ndim == 2 else X


class BCIClassifier(ClassifierMixin, BaseEstimator):
    """A scikit-learn classifier around a bcikit or braindecode network.

    ``fit`` encodes the labels, fits Euclidean alignment on the training trials, builds the
    network for the data's shape and trains it with :class:`bcikit.train.Trainer`; ``predict``
    aligns new trials with the training reference and returns the label of the largest logit.

    Parameters
    ----------
    model : str or callable
        A name :func:`bcikit.models.get_model` knows (a registered bcikit model such as
        ``"MVCNet"``, or a braindecode class name such as ``"ShallowFBCSPNet"``, ``"EEGNet"``),
        or a callable (an ``nn.Module`` class) taking the braindecode signal parameters
        ``n_chans``, ``n_outputs``, ``n_times`` and optionally ``sfreq``, ``chs_info``.
        The classical baselines (``"csp_lda"``, ``"ts_lr"``) are scikit-learn pipelines already:
        use ``bcikit.models.get_model`` for them.
    sfreq : float or None
        Sampling rate of ``X`` in Hz, for models that need it.
    ch_names : sequence of str or None
        Channel names, one per channel of ``X`` (passed to the model as ``chs_info``).
    model_params : dict or None
        Hyperparameters of the model (``[model.params]`` of a pipeline file).
    epochs : int
        Training epochs (all of them are run unless ``patience`` stops early).
    batch_size : int
        Trials per optimiser step.
    lr : float
        Learning rate.
    optimizer : {'adamw', 'adam', 'sgd'} or callable
        As :class:`bcikit.train.Trainer`; a callable is called as
        ``optimizer(params, lr=lr, weight_decay=weight_decay)``.
    weight_decay : float
        Weight decay (>= 0).
    scheduler : None or 'cosine'
        Learning-rate schedule.
    alignment : {'euclidean', None}
        Euclidean alignment fitted on the training trials (see the module notes) or none.
    validation_fraction : float
        Fraction in ``[0, 1)`` of each class's training trials, the last ones in the order
        given (chronological when ``X`` is in recording order), held out to monitor training
        (``val_loss``/``val_accuracy`` in ``history_``) and for early stopping. The alignment
        reference is fitted on the remaining trials.
    patience : int or None
        Early stopping on the validation loss (needs ``validation_fraction > 0``); the weights
        of the best epoch are restored.
    precision : {'auto', 'fp32', 'bf16', 'fp16'}
        Autocast precision for training (``'auto'``: bf16 or fp16 on CUDA, fp32 on CPU).
        Prediction always runs in fp32.
    deterministic : bool
        Ask torch for deterministic kernels while training (slower on GPUs).
    device : str
        ``'auto'`` (CUDA when available), ``'cpu'``, ``'cuda'``, ``'cuda:N'``, ``'mps'``.
    random_state : int, numpy RandomState or None
        Seeds the model's initial weights and the training (batch order, dropout). An int is
        used as the seed itself, so ``random_state=k`` equals seed ``k`` of ``bcikit run``.
        ``None`` draws a fresh seed at each ``fit``.
    verbose : bool or None
        Progress bar and per-epoch log lines (``None``: a bar only when stderr is a terminal).

    Attributes
    ----------
    classes_ : ndarray
        The labels, sorted (as :class:`~sklearn.preprocessing.LabelEncoder` sorts them).
    n_chans_, n_times_ : int
        Shape of the training trials.
    n_features_in_ : int
        ``X.shape[1]`` at fit (channels for 3-D ``X``, time samples for 2-D ``X``).
    R_inv_sqrt_ : ndarray of shape (n_chans, n_chans) or None
        Inverse square root of the training trials' mean covariance (None without alignment).
    model_ : torch.nn.Module
        The trained network (in eval mode after ``fit``).
    history_ : list of dict
        One row per epoch (:data:`bcikit.train.HISTORY_KEYS`).
    seed_ : int
        The seed the fit used.
    device_ : torch.device
        Where the model lives.

    Examples
    --------
    >>> from bcikit.simulate import make_motor_imagery
    >>> ts = make_motor_imagery(n_subjects=1, n_sessions=1, sfreq=128.0)   # doctest: +SKIP
    >>> clf = BCIClassifier("ShallowFBCSPNet", sfreq=128.0, epochs=30,
    ...                     random_state=0).fit(ts.X, ts.label_names)       # doctest: +SKIP
    >>> clf.predict(ts.X[:3])                                              # doctest: +SKIP
    array(['left_hand', 'right_hand', 'left_hand'], dtype=object)
    """

    def __init__(self, model: str | Callable = "ShallowFBCSPNet", *, sfreq: float | None = None,
                 ch_names: Sequence[str] | None = None, model_params: dict | None = None,
                 epochs: int = 100, batch_size: int = 64, lr: float = 1e-3,
                 optimizer: str | Callable = "adamw", weight_decay: float = 0.0,
                 scheduler: str | None = None, alignment: str | None = "euclidean",
                 validation_fraction: float = 0.0, patience: int | None = None,
                 precision: str = "auto", deterministic: bool = False, device: str = "auto",
                 random_state: int | np.random.RandomState | None = None,
                 verbose: bool | None = None):
        self.model = model
        self.sfreq = sfreq
        self.ch_names = ch_names
        self.model_params = model_params
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.scheduler = scheduler
        self.alignment = alignment
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.precision = precision
        self.deterministic = deterministic
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ hooks for subclasses
    def _model_spec(self) -> tuple[str | Callable, dict]:
        """(model name or factory, model hyperparameters)."""
        return self.model, dict(self.model_params or {})

    def _training_spec(self) -> dict:
        """Trainer settings that a subclass may fix (the recipe)."""
        return {"optimizer": self.optimizer, "weight_decay": self.weight_decay,
                "scheduler": self.scheduler, "patience": self.patience}

    def _check_model_params(self, n_chans: int, n_times: int, classes: np.ndarray) -> None:
        """Checks of the model-specific parameters once the data are known (subclasses)."""

    # ------------------------------------------------------------------ parameter checks
    @property
    def _owner(self) -> str:
        return type(self).__name__

    def _validate_params(self) -> None:
        o = self._owner
        model, params = self._model_spec()
        if isinstance(model, str):
            from .models import is_classical

            if is_classical(model):
                raise ValueError(
                    f"The 'model' parameter of {o} is {model!r}, a classical baseline that is "
                    f"already a scikit-learn estimator: use bcikit.models.get_model({model!r}) "
                    f"directly.")
        elif not callable(model):
            raise TypeError(f"The 'model' parameter of {o} must be an instance of str or a "
                            f"callable (an nn.Module class). Got {type(model).__name__} "
                            f"({model!r:.60}) instead.")
        validate_type(self.sfreq, ("numeric", None), "sfreq", owner=o)
        if self.sfreq is not None:
            check_range(self.sfreq, "sfreq", low=0, low_inclusive=False, owner=o)
        if self.ch_names is not None:
            validate_type(self.ch_names, (list, tuple, np.ndarray), "ch_names", owner=o)
            bad = [c for c in self.ch_names if not isinstance(c, str)]
            if bad:
                raise TypeError(f"The 'ch_names' parameter of {o} must hold strings. Got "
                                f"{bad[0]!r} ({type(bad[0]).__name__}) instead.")
        if hasattr(self, "model_params"):
            validate_type(self.model_params, (dict, None), "model_params", owner=o)
            clash = [k for k in (self.model_params or {}) if k in _SIGNAL_PARAMS]
            if clash:
                raise ValueError(f"The 'model_params' parameter of {o} must not set {clash}: "
                                 f"the signal parameters come from the data (X, sfreq, "
                                 f"ch_names).")
        validate_type(self.epochs, "int", "epochs", owner=o)
        check_range(self.epochs, "epochs", low=1, owner=o)
        validate_type(self.batch_size, "int", "batch_size", owner=o)
        check_range(self.batch_size, "batch_size", low=1, owner=o)
        validate_type(self.lr, "numeric", "lr", owner=o)
        check_range(self.lr, "lr", low=0, low_inclusive=False, owner=o)
        spec = self._training_spec()
        if not callable(spec["optimizer"]):
            check_option(spec["optimizer"], OPTIMIZERS, "optimizer", owner=o)
        validate_type(spec["weight_decay"], "numeric", "weight_decay", owner=o)
        check_range(spec["weight_decay"], "weight_decay", low=0, owner=o)
        check_option(spec["scheduler"], SCHEDULERS, "scheduler", owner=o)
        check_option(self.alignment, ALIGNMENTS, "alignment", owner=o)
        validate_type(self.validation_fraction, "numeric", "validation_fraction", owner=o)
        check_range(self.validation_fraction, "validation_fraction", low=0, high=1,
                    high_inclusive=False, owner=o)
        validate_type(spec["patience"], ("int", None), "patience", owner=o)
        if spec["patience"] is not None:
            check_range(spec["patience"], "patience", low=1, owner=o)
            if self.validation_fraction == 0:
                raise ValueError(f"The 'patience' parameter of {o} is {spec['patience']}, but "
                                 "early stopping needs validation trials: set "
                                 "validation_fraction > 0 (for example 0.2), or patience=None.")
        check_option(self.precision, PRECISIONS, "precision", owner=o)
        validate_type(self.deterministic, bool, "deterministic", owner=o)
        if not isinstance(self.device, str):
            import torch

            validate_type(self.device, (str, torch.device), "device", owner=o)
        if not (self.random_state is None or isinstance(self.random_state, np.random.RandomState)
                or (isinstance(self.random_state, (int, np.integer))
                    and not isinstance(self.random_state, bool))):
            raise TypeError(f"The 'random_state' parameter of {o} must be an instance of int, "
                            f"numpy.random.RandomState or None. Got "
                            f"{type(self.random_state).__name__} ({self.random_state!r:.60}) "
                            "instead.")
        if isinstance(self.random_state, (int, np.integer)):
            check_range(int(self.random_state), "random_state", low=0, high=2**32 - 1, owner=o)
        validate_type(self.verbose, (bool, None), "verbose", owner=o)

    def _draw_seed(self) -> int:
        if isinstance(self.random_state, (int, np.integer)):
            return int(self.random_state)
        rs = (self.random_state if isinstance(self.random_state, np.random.RandomState)
              else np.random.RandomState())
        return int(rs.randint(0, 2**31 - 1))

    # ------------------------------------------------------------------ data checks
    def _check_X(self, X: Any, method: str, *, reset: bool, y: Any = None):
        """Validate ``X`` (and ``y`` at fit); return float arrays of shape (n, C, T)."""
        o = f"{self._owner}.{method}"
        if not reset:
            check_is_fitted(self)
        shape = getattr(X, "shape", None)  # checked early for clear messages; lists come later
        if shape is not None:
            self._check_shape(tuple(shape), o, reset=reset)
        kwargs = dict(allow_nd=True, dtype=[np.float32, np.float64])
        if reset:
            X, y = validate_data(self, X, y, reset=True, ensure_min_samples=2, **kwargs)
        else:
            X = validate_data(self, X, reset=False, **kwargs)
        self._check_shape(X.shape, o, reset=reset)
        if reset:
            self._input_ndim = X.ndim
        return (_as_3d(X), y) if reset else _as_3d(X)

    def _check_shape(self, shape: tuple, o: str, *, reset: bool) -> None:
        ndim = len(shape)
        if ndim == 1:
            return  # scikit-learn's own message ("Expected 2D array ... Reshape your data")
        if ndim not in (2, 3):
            raise ValueError(f"The 'X' parameter of {o} must be a 3-D array (n_trials, n_chans, "
                             f"n_times), or 2-D (n_trials, n_times) for single-channel trials. "
                             f"Got an array of shape {shape} instead.")
        if reset:
            return
        if ndim != self._input_ndim:
            fitted = (f"(n_trials, {self.n_chans_}, {self.n_times_})" if self._input_ndim == 3
                      else f"(n_trials, {self.n_times_})")
            raise ValueError(f"The 'X' parameter of {o} is {ndim}-D (shape {shape}), but "
                             f"{self._owner} was fitted on {self._input_ndim}-D trials: pass X "
                             f"of shape {fitted}.")
        if ndim == 3:
            if shape[1] != self.n_chans_:
                raise ValueError(f"X has {shape[1]} channels per trial, but {self._owner} was "
                                 f"fitted on {self.n_chans_} (n_chans_): the 'X' parameter of "
                                 f"{o} must have shape (n_trials, {self.n_chans_}, "
                                 f"{self.n_times_}).")
            if shape[2] != self.n_times_:
                raise ValueError(f"X has {shape[2]} time samples per trial, but {self._owner} "
                                 f"was fitted on {self.n_times_} (n_times_): the 'X' parameter "
                                 f"of {o} must have shape (n_trials, {self.n_chans_}, "
                                 f"{self.n_times_}).")
        elif shape[1] != self.n_times_:
            raise ValueError(f"X has {shape[1]} features, but {self._owner} is expecting "
                             f"{self.n_times_} features as input (the time samples of "
                             f"single-channel trials).")


    # ------------------------------------------------------------------ alignment
    def _fit_alignment(self, X: np.ndarray) -> np.ndarray | None:
        if self.alignment is None:
            return None
        from .data.transforms import _inv_sqrtm, trial_covariances

        if X.shape[2] < 2:
            raise ValueError(f"Euclidean alignment in {self._owner}.fit needs at least 2 time "
                             f"samples per trial; X has n_times = {X.shape[2]} (a 2-D X is read "
                             f"as (n_trials, n_times): n_features = {X.shape[2]}). Use "
                             "alignment=None.")
        R = trial_covariances(X).mean(axis=0)
        try:
            return _inv_sqrtm(R, "the training trials")
        except ValueError:
            w = np.linalg.eigvalsh((R + R.T) / 2)
            raise ValueError(
                f"Euclidean alignment in {self._owner}.fit: the mean covariance of the training "
                f"trials is singular (eigenvalues {w.min():.3g} .. {w.max():.3g}), so it has no "
                "inverse square root. Remove linearly dependent channels (one after a common "
                "average reference) or constant trials, or use alignment=None.") from None

    def _align(self, X: np.ndarray) -> np.ndarray:
        if self.R_inv_sqrt_ is None:
            return np.ascontiguousarray(X, dtype=np.float32)
        out = np.matmul(self.R_inv_sqrt_, np.asarray(X, dtype=np.float64))
        return out.astype(np.float32)

    # ------------------------------------------------------------------ model
    def _chs_info(self, n_chans: int) -> list | None:
        if self.ch_names is None:
            return None
        if len(self.ch_names) != n_chans:
            raise ValueError(f"The 'ch_names' parameter of {self._owner} holds "
                             f"{len(self.ch_names)} names, but X has {n_chans} channels.")
        if len(set(self.ch_names)) != len(self.ch_names):
            dup = sorted({c for c in self.ch_names if list(self.ch_names).count(c) > 1})
            raise ValueError(f"The 'ch_names' parameter of {self._owner} repeats {dup}.")
        import mne

        info = mne.create_info(list(self.ch_names), float(self.sfreq or 1.0), "eeg")
        return list(info["chs"])

    def _model_kwargs(self, classes: np.ndarray) -> dict:
        """Extra keyword arguments for the model that depend on the data (subclasses)."""
        return {}

    def _build_model(self, n_chans: int, n_times: int, n_outputs: int, classes: np.ndarray):
        model, params = self._model_spec()
        params.update(self._model_kwargs(classes))
        signal = dict(n_chans=n_chans, n_outputs=n_outputs, n_times=n_times, sfreq=self.sfreq,
                      chs_info=self._chs_info(n_chans))
        if isinstance(model, str):
            from .models import get_model

            return get_model(model, **signal, **params)
        try:
            sig = inspect.signature(model)
        except (TypeError, ValueError):
            sig = None
        if sig is None or any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            kwargs = {k: v for k, v in signal.items() if v is not None}
        else:
            kwargs = {k: v for k, v in signal.items()
                      if v is not None and k in sig.parameters}
        import torch

        net = model(**kwargs, **params)
        if not isinstance(net, torch.nn.Module):
            raise TypeError(f"The 'model' callable of {self._owner} must return a "
                            f"torch.nn.Module. Got {type(net).__name__}.")
        return net

    # ------------------------------------------------------------------ fit
    def _validation_mask(self, y_codes: np.ndarray) -> np.ndarray:
        """True for the last ``validation_fraction`` of each class's trials (in the given order)."""
        mask = np.zeros(len(y_codes), dtype=bool)
        if self.validation_fraction == 0:
            return mask
        for c in np.unique(y_codes):
            idx = np.flatnonzero(y_codes == c)
            n_val = int(math.ceil(self.validation_fraction * len(idx)))
            if n_val >= len(idx):
                raise ValueError(f"validation_fraction={self.validation_fraction} of "
                                 f"{self._owner} leaves no training trial of class "
                                 f"{self.classes_[c]!r} ({len(idx)} trial(s)).")
            mask[idx[len(idx) - n_val:]] = True
        return mask

    def fit(self, X: Any, y: Any) -> "BCIClassifier":
        """Fit alignment and network on training trials.

        Parameters
        ----------
        X : array-like of shape (n_trials, n_chans, n_times) or (n_trials, n_times)
            Training trials (floats; a 2-D array is read as single-channel trials).
        y : array-like of shape (n_trials,)
            Labels of any type, at least two classes.

        Returns
        -------
        self : BCIClassifier

        Raises
        ------
        ValueError, TypeError
            For bad parameters (naming them) or bad data (shape, NaN, one class, a singular
            covariance for the alignment).
        """
        self._validate_params()
        X, y = self._check_X(X, "fit", reset=True, y=y)
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        classes = encoder.classes_
        if len(classes) < 2:
            raise ValueError(f"{self._owner}.fit needs at least 2 classes in y; got 1 class "
                             f"({classes[0]!r}).")
        self._check_model_params(X.shape[1], X.shape[2], classes)
        y_codes = encoder.transform(y).astype(np.int64)
        self.classes_ = classes
        self.n_chans_, self.n_times_ = int(X.shape[1]), int(X.shape[2])
        valid = self._validation_mask(y_codes)
        train = ~valid
        self.R_inv_sqrt_ = self._fit_alignment(X[train])

        from .train import Trainer, resolve_device, set_seed

        device = resolve_device(self.device, owner=self._owner)
        seed = self._draw_seed()
        set_seed(seed)  # initial weights, as in `bcikit run`
        model = self._build_model(self.n_chans_, self.n_times_, len(classes), classes)
        spec = self._training_spec()
        trainer = Trainer(model, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                          optimizer=spec["optimizer"], weight_decay=spec["weight_decay"],
                          scheduler=spec["scheduler"], patience=spec["patience"],
                          device=device, precision=self.precision, seed=seed,
                          deterministic=self.deterministic, verbose=self.verbose)
        Xa = self._align(X)
        if valid.any():
            trainer.fit(Xa[train], y_codes[train], Xa[valid], y_codes[valid])
        else:
            trainer.fit(Xa, y_codes)
        model.eval()
        self.model_ = model
        self.history_ = list(trainer.history_)
        self.seed_ = seed
        self.device_ = trainer.device_
        self.n_epochs_run_ = int(trainer.n_epochs_run_)
        return self

    # ------------------------------------------------------------------ inference
    def _logits(self, X: Any, method: str) -> np.ndarray:
        import torch

        Xa = self._align(self._check_X(X, method, reset=False))
        model = self.model_
        was_training = model.training
        model.eval()
        out = []
        try:
            with torch.no_grad():
                for start in range(0, len(Xa), self.batch_size):
                    xb = torch.from_numpy(Xa[start:start + self.batch_size]).to(self.device_)
                    logits = model(xb)
                    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
                        raise TypeError(f"{self._owner} needs the model to return logits of "
                                        f"shape (batch, n_classes); {type(model).__name__} "
                                        "returned something else.")
                    out.append(logits.detach().float().cpu().numpy())
        finally:
            model.train(was_training)
        return np.concatenate(out).astype(np.float64)

    def decision_function(self, X: Any) -> np.ndarray:
        """The network's logits: shape ``(n_trials,)`` (class 1 minus class 0) for two classes,
        ``(n_trials, n_classes)`` otherwise."""
        logits = self._logits(X, "decision_function")
        if len(self.classes_) == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (softmax of the logits), shape ``(n_trials, n_classes)``, columns
        in the order of ``classes_``."""
        logits = self._logits(X, "predict_proba")
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """The label (from ``classes_``) with the largest logit for each trial."""
        codes = self._logits(X, "predict").argmax(axis=1)
        return self.classes_[codes]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags


class MVCNetClassifier(BCIClassifier):
    """MVCNet (Wang et al. 2025) with its published training recipe, as a scikit-learn classifier.

    A one-band CNN (IFNet stem) and a linear head are deployed; a Transformer branch trained
    beside them with contrastive losses across augmented views is used for training only
    (:class:`bcikit.models.mvcnet.MVCNet`). The defaults are the recipe of spec ``mvcnet.md``
    §3: Adam (lr 1e-3, betas (0.9, 0.999), no weight decay, no schedule), 100 epochs, batch 64
    (the paper uses 32 for cross-validation), no early stopping (the last epoch is the model),
    ``L = CE + lambda_cvc * CVC + gamma_cmc * CMC`` with λ = γ = 0.1 and τ = 0.2, a two-layer
    encoder, Euclidean alignment fitted on the training trials.

    Parameters
    ----------
    sfreq : float
        Sampling rate of ``X`` in Hz (required: the frequency-shift view and the pooling size
        depend on it).
    ch_names : sequence of str or None
        Channel names. With mirrorable 10-20 names and mirror-closed classes (left/right hand)
        the default views are flip, frequency shift and channel reflection (CR); otherwise
        flip and frequency shift.
    pool_size : int or None
        Temporal pooling of the CNN (default ``round(0.5 * sfreq)``).
    encoder_layers, n_heads : int
        Transformer encoder depth and heads (2 and 2; the official code uses 1 layer).
    views : sequence of str or None
        The three (or two) augmented views, names of :mod:`bcikit.data.augmentations`
        (``"flip"``, ``"scale"``, ``"noise"``, ``"fshift"``, ``"fsurr"``, ``"cr"``, ``"hs"``);
        ``None`` for the default above.
    lambda_cvc, gamma_cmc : float
        Weights of the cross-view and cross-model contrastive losses.
    tau : float
        NT-Xent temperature.
    reference_quirks : bool
        Reproduce the official code's frequency-shift step (1/250 s at any rate); for
        comparison runs only.
    epochs, batch_size, lr, alignment, validation_fraction, precision, deterministic, device, \
random_state, verbose
        As :class:`BCIClassifier`.

    Attributes
    ----------
    model_ : bcikit.models.mvcnet.MVCNetDeployed
        The deployed network (CNN + head, eval mode). The training-only Transformer branch is
        not kept; train :class:`~bcikit.models.mvcnet.MVCNet` with
        :class:`bcikit.train.Trainer` to inspect it.
    views_ : list of str
        The views the model trained with.
    n_params_deployed_, n_params_training_ : int
        Parameters of the deployed part and of the whole training network.
    classes_, n_chans_, n_times_, n_features_in_, R_inv_sqrt_, history_, seed_, device_
        As :class:`BCIClassifier`.

    Examples
    --------
    >>> from bcikit.simulate import make_motor_imagery
    >>> ts = make_motor_imagery(n_subjects=1, n_sessions=1)               # doctest: +SKIP
    >>> clf = MVCNetClassifier(sfreq=ts.sfreq, ch_names=ts.ch_names,
    ...                        random_state=1)                         # doctest: +SKIP
    >>> clf.fit(ts.X, ts.label_names).views_                              # doctest: +SKIP
    ['flip', 'fshift', 'cr']
    """

    def __init__(self, *, sfreq: float | None = None, ch_names: Sequence[str] | None = None,
                 pool_size: int | None = None, encoder_layers: int = 2, n_heads: int = 2,
                 views: Sequence[str] | None = None, lambda_cvc: float = 0.1,
                 gamma_cmc: float = 0.1, tau: float = 0.2, reference_quirks: bool = False,
                 epochs: int = 100, batch_size: int = 64, lr: float = 1e-3,
                 alignment: str | None = "euclidean", validation_fraction: float = 0.0,
                 precision: str = "auto", deterministic: bool = True, device: str = "auto",
                 random_state: int | np.random.RandomState | None = None,
                 verbose: bool | None = None):
        self.sfreq = sfreq
        self.ch_names = ch_names
        self.pool_size = pool_size
        self.encoder_layers = encoder_layers
        self.n_heads = n_heads
        self.views = views
        self.lambda_cvc = lambda_cvc
        self.gamma_cmc = gamma_cmc
        self.tau = tau
        self.reference_quirks = reference_quirks
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.alignment = alignment
        self.validation_fraction = validation_fraction
        self.precision = precision
        self.deterministic = deterministic
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _model_spec(self) -> tuple[Callable, dict]:
        from .models.mvcnet import MVCNet

        return MVCNet, {"pool_size": self.pool_size, "encoder_layers": self.encoder_layers,
                          "n_heads": self.n_heads, "lambda_cvc": self.lambda_cvc,
                          "gamma_cmc": self.gamma_cmc, "tau": self.tau,
                          "reference_quirks": self.reference_quirks}

    def _training_spec(self) -> dict:
        # the recipe: Adam (torch's default betas 0.9, 0.999), no decay, no schedule, no early stop
        return {"optimizer": "adam", "weight_decay": 0.0, "scheduler": None, "patience": None}

    def _validate_params(self) -> None:
        o = self._owner
        validate_type(self.sfreq, ("numeric", None), "sfreq", owner=o)
        if self.sfreq is None:
            raise ValueError(f"The 'sfreq' parameter of {o} is required: the frequency-shift "
                             "view and the pooling size depend on the sampling rate. Pass "
                             "sfreq=<Hz>.")
        validate_type(self.pool_size, ("int", None), "pool_size", owner=o)
        if self.pool_size is not None:
            check_range(self.pool_size, "pool_size", low=1, owner=o)
        validate_type(self.encoder_layers, "int", "encoder_layers", owner=o)
        check_range(self.encoder_layers, "encoder_layers", low=1, owner=o)
        validate_type(self.n_heads, "int", "n_heads", owner=o)
        check_range(self.n_heads, "n_heads", low=1, owner=o)
        for name in ("lambda_cvc", "gamma_cmc"):
            validate_type(getattr(self, name), "numeric", name, owner=o)
            check_range(getattr(self, name), name, low=0, owner=o)
        validate_type(self.tau, "numeric", "tau", owner=o)
        check_range(self.tau, "tau", low=0, low_inclusive=False, owner=o)
        validate_type(self.reference_quirks, bool, "reference_quirks", owner=o)
        if self.views is not None:
            validate_type(self.views, (list, tuple), "views", owner=o)
            from .data.augmentations import VIEWS

            for v in self.views:
                check_option(v, tuple(VIEWS), "views", owner=o)
        super()._validate_params()

    def _check_model_params(self, n_chans: int, n_times: int, classes: np.ndarray) -> None:
        o = self._owner
        if n_times % self.n_heads:
            raise ValueError(f"X has {n_times} time samples per trial, but the Transformer of "
                             f"{o} uses them as d_model, split over n_heads={self.n_heads} "
                             f"heads: crop or resample the trials to a multiple of "
                             f"{self.n_heads} samples, or change n_heads.")
        pool = self.pool_size if self.pool_size is not None else int(round(0.5 * self.sfreq))
        if pool > n_times:
            raise ValueError(f"The pooling window of {o} ({pool} samples"
                             f"{'' if self.pool_size is not None else ', round(0.5 * sfreq)'}) "
                             f"is longer than the trials ({n_times} samples): pass a smaller "
                             f"pool_size or check sfreq={self.sfreq}.")

    def _model_kwargs(self, classes: np.ndarray) -> dict:
        return {"views": None if self.views is None else list(self.views),
                "classes": [str(c) for c in classes]}

    def fit(self, X: Any, y: Any) -> "MVCNetClassifier":
        """Fit alignment and MVCNet on training trials (see :meth:`BCIClassifier.fit`)."""
        super().fit(X, y)
        full = self.model_
        self.views_ = list(full.resolved_views())
        self.n_params_deployed_ = int(full.count_parameters("deployed"))
        self.n_params_training_ = int(full.count_parameters("training"))
        # keep what predicts: the CNN + head (the Transformer branch is for training only and
        # holds 50-300 M parameters at real sizes); the full network is freed here
        self.model_ = full.deployed_module()
        del full
        return self
