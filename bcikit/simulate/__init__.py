"""Ground-truth simulators: the embedded default data of the pipelines.

``bcikit.simulate`` imports MNE only when a simulator is used (and never torch).

- :func:`make_motor_imagery`: motor-imagery EEG epochs as a :class:`~bcikit.data.TrialSet`.
- :func:`simulate_mi_raws`: the continuous runs behind them (``mne.io.RawArray`` + ids).
- :func:`motor_imagery_oracle`: the accuracy of a decoder that sees the task sources without
  noise (the ceiling a pipeline on the simulated sensors should stay under).
- :func:`write_recordings`: write runs as EDF / BrainVision / FIF files or a BIDS tree.
- :func:`simulate_to_disk`: simulate and write in one go (the ``bcikit simulate`` command).
- :func:`make_seeg_words`: sEEG word-reading trials + pre-training recordings (Du-IN).
- :func:`simulate_movie_seeg`: movie-watching sEEG in the Brain Treebank layout, with ground
  truth and synthetic feature extractors (encoding models); :func:`load_movie_simulation`.
"""

from __future__ import annotations

from ..utils import lazy_exports

_LAZY = {
    "make_motor_imagery": "motor_imagery",
    "simulate_mi_raws": "motor_imagery",
    "motor_imagery_oracle": "motor_imagery",
    "MIOracle": "motor_imagery",
    "resolve_channels": "motor_imagery",
    "MI_CLASSES": "motor_imagery",
    "BNCI2014_001_CHANNELS": "motor_imagery",
    "write_recordings": "write",
    "simulate_to_disk": "write",
    "recording_paths": "write",
    "make_seeg_words": "seeg_words",
    "SEEGWords": "seeg_words",
    "write_electrodes": "seeg_words",
    "simulate_movie_seeg": "movie_seeg",
    "load_movie_simulation": "movie_seeg",
    "MovieSimulation": "movie_seeg",
    "model_catalog": "movie_seeg",
    "SYNTHETIC_MODELS": "movie_seeg",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
