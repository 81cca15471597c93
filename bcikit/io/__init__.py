"""Readers: recordings in, MNE Raw / TrialSet out.

- :func:`read_raw` reads one EEG/iEEG file (EDF, BDF, GDF, BrainVision, FIF, EEGLAB) with checks
  for damaged or truncated files and non-finite samples; iEEG files go through
  :func:`bcikit.io.ieeg.read_ieeg`.
- :func:`read_bids` reads the EEG/iEEG runs of a BIDS dataset with mne-bids.
- :func:`epochs_from_raw` cuts labelled trials into a :class:`~bcikit.data.TrialSet` (volts).
- :func:`load_card`, :func:`list_cards`, :class:`DatasetCard` and :func:`load_dataset` turn dataset
  cards (``datasets/*.toml``) or BIDS roots into TrialSets.
- :func:`describe` summarises a file, a BIDS root or a card (``bcikit info``).

Names are imported on first use, so ``import bcikit.io`` does not import MNE.
"""

from __future__ import annotations

import importlib

# Imported eagerly (describe.py imports nothing heavy at module level) so that the name
# ``bcikit.io.describe`` is the function, not the submodule of the same name.
from .describe import describe

_LAZY = {
    "read_raw": "eeg",
    "read_raw_file": "eeg",
    "read_bids": "eeg",
    "epochs_from_raw": "eeg",
    "check_edf_size": "eeg",
    "SUPPORTED_EXTENSIONS": "eeg",
    "DatasetCard": "cards",
    "TaskSpec": "cards",
    "load_card": "cards",
    "list_cards": "cards",
    "load_dataset": "cards",
    "read_ieeg": "ieeg",
    "is_ieeg_path": "ieeg",
}


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f"bcikit.io.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'bcikit.io' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))


__all__ = sorted([*_LAZY, "describe"])
