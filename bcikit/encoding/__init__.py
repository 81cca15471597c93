"""Encoding models: DNN features of movie events -> sEEG responses, and the statistics that find
vision-language integration sites (``specs/encoding.md``).

Everything is exported lazily: ``import bcikit.encoding`` imports neither torch, himalaya nor
nilearn; a name is imported from its submodule the first time it is used.

- :mod:`~bcikit.encoding.events` / :mod:`~bcikit.encoding.targets`: movie events (word onsets,
  scene cuts) and the binned neural targets around them.
- :mod:`~bcikit.encoding.features`: one vector per event from any torch model (local weights).
- :mod:`~bcikit.encoding.ridge`: closed-form ridge (one SVD per fold, every alpha at once) on
  himalaya backends, the paper's cross-validation protocol (with ``purge``) and the nested
  protocol (himalaya ``RidgeCV``).
- :mod:`~bcikit.encoding.stats`: shared bootstrap (``refit`` / ``oof``; resampling whole
  sentences or single events), kept bins, electrode scores, A > B tests, Benjamini-Hochberg
  FDR, site calling, region summaries, detection metrics.
- :mod:`~bcikit.encoding.figures`: glass-brain r maps, per-region bars, time courses of r,
  model-comparison scatter plots.
"""

from __future__ import annotations

from ..utils import lazy_exports

_LAZY = {
    # events (helper M)
    "ALIGNMENTS": "events",
    "make_events": "events",
    # targets (helper M)
    "N_BINS": "targets",
    "bin_times": "targets",
    "bin_edges": "targets",
    "binned_targets": "targets",
    "make_targets": "targets",
    "EncodingTargets": "targets",
    # features (helper O)
    "FeatureExtractor": "features",
    "extract_features": "features",
    "resolve_module": "features",
    "module_paths": "features",
    "jl_dim": "features",
    "srp_project": "features",
    "concat_features": "features",
    "hf_model": "features",
    "timm_model": "features",
    "open_clip_model": "features",
    "torchvision_model": "features",
    "torch_model": "features",
    # ridge
    "ALPHAS": "ridge",
    "PURGE_WINDOW_S": "ridge",
    "pearson_r": "ridge",
    "resolve_backend": "ridge",
    "fit_ridge_path": "ridge",
    "RidgePath": "ridge",
    "Fold": "ridge",
    "paper_folds": "ridge",
    "paper_cv": "ridge",
    "PaperCVResult": "ridge",
    "nested_cv": "ridge",
    "NestedCVResult": "ridge",
    # stats
    "bootstrap_indices": "stats",
    "bootstrap_blocks": "stats",
    "BOOTSTRAP_UNITS": "stats",
    "indices_digest": "stats",
    "bootstrap_encoding": "stats",
    "EncodingResult": "stats",
    "percentile_ci": "stats",
    "kept_bins": "stats",
    "electrode_scores": "stats",
    "ElectrodeScores": "stats",
    "group_electrode_scores": "stats",
    "MODEL_KINDS": "stats",
    "p_greater": "stats",
    "fdr_bh": "stats",
    "COMPARISONS": "stats",
    "make_catalog": "stats",
    "compare_models": "stats",
    "call_sites": "stats",
    "sites_both_alignments": "stats",
    "site_summary": "stats",
    "region_summary": "stats",
    "site_detection_metrics": "stats",
    # figures
    "plot_glass_brain_r": "figures",
    "plot_region_bars": "figures",
    "plot_r_timecourse": "figures",
    "plot_model_scatter": "figures",
    # estimator and pipeline (lead)
    "RidgeEncoder": "estimator",
    "analyse_alignment": "pipeline",
    "run_encoding": "pipeline",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
