"""Readers (and fetchers) of public dataset formats that MNE does not read.

A reader takes a file and returns an :class:`mne.io.Raw` in volts with the trials' cues as
annotations, so that :func:`bcikit.io.epochs_from_raw` and dataset cards cut it like any other
recording. A card names one with ``[files] format = "<name>"``; a fetcher with
``[files] fetcher = "<name>"``.

=========  ========================================  ============================================
name       data                                      functions
=========  ========================================  ============================================
bciiv1     BCI Competition IV data set 1 (Berlin,    :func:`~bcikit.io.formats.bciiv1.read_bciiv1`,
           "Blankertz2007"), MATLAB ``.mat`` files   :func:`~bcikit.io.formats.bciiv1.fetch_bciiv1`
duin       Du-IN sEEG word reading (Xuanwu),         :func:`~bcikit.io.formats.duin.load_duin`,
           pickled trials (restricted unpickler)     :func:`~bcikit.io.formats.duin.fetch_duin`
braintree  Brain Treebank sEEG during movies,         :func:`~bcikit.io.braintreebank.read_braintreebank`,
bank       per-session HDF5 + annotation files        :func:`~bcikit.io.braintreebank.fetch_for_card`
=========  ========================================  ============================================

Formats whose files already hold cut trials (not continuous recordings) register a *trial
reader* in :data:`TRIAL_READERS` instead: ``f(card, *, task, subjects, root, download, cache,
verbose) -> TrialSet | {subject: TrialSet}``; :meth:`bcikit.io.cards.DatasetCard.load` hands the
whole load to it.

The registries name ``module:function`` pairs, imported on first use, so importing this package
imports neither MNE nor SciPy.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

#: Reader name -> ``(module, function)``; the function is ``f(path, *, verbose=None) -> Raw``.
READERS: dict[str, tuple[str, str]] = {
    "bciiv1": ("bcikit.io.formats.bciiv1", "read_bciiv1"),
    "braintreebank": ("bcikit.io.braintreebank", "read_braintreebank"),
}

#: Trial-reader name -> ``(module, function)`` (see the module docstring).
TRIAL_READERS: dict[str, tuple[str, str]] = {
    "duin": ("bcikit.io.formats.duin", "load_for_card"),
}

#: Fetcher name -> ``(module, function)``; the function is
#: ``f(card, missing_recordings, root, verbose) -> None`` (see :mod:`bcikit.io.cards`).
FETCHERS: dict[str, tuple[str, str]] = {
    "braintreebank": ("bcikit.io.braintreebank", "fetch_for_card"),
    "bciiv1": ("bcikit.io.formats.bciiv1", "fetch_for_card"),
}


def _resolve(table: dict[str, tuple[str, str]], name: str, what: str) -> Callable:
    if not isinstance(name, str):
        raise TypeError(f"The {what} name must be a string; got {type(name).__name__}.")
    if name not in table:
        raise ValueError(f"Unknown {what} {name!r}; bcikit.io.formats has {sorted(table)}.")
    module, function = table[name]
    return getattr(importlib.import_module(module), function)


def get_reader(name: str) -> Callable:
    """The reader registered as ``name`` in :data:`READERS`.

    Raises
    ------
    ValueError
        No reader has that name (the message lists the known ones).
    """
    return _resolve(READERS, name, "reader")


def get_trial_reader(name: str) -> Callable:
    """The trial reader registered as ``name`` in :data:`TRIAL_READERS`.

    Raises
    ------
    ValueError
        No trial reader has that name.
    """
    return _resolve(TRIAL_READERS, name, "trial reader")


def get_fetcher(name: str) -> Callable:
    """The fetcher registered as ``name`` in :data:`FETCHERS`.

    Raises
    ------
    ValueError
        No fetcher has that name (the message lists the known ones).
    """
    return _resolve(FETCHERS, name, "fetcher")


__all__ = ["FETCHERS", "READERS", "TRIAL_READERS", "get_fetcher", "get_reader",
           "get_trial_reader"]
