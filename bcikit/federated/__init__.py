"""Federation as a capability of bcikit models (spec ``fleeg.md`` §6).

A model declares which parameters a federation shares (``shared_modules`` prefixes, or
``shared_parameter_names()``); everything else, every normalisation parameter and every buffer
included, stays at the site. This package holds the pieces that do not depend on Flower:

- state helpers: :func:`shared_keys`, :func:`split_state`, :func:`merge_state`,
  :func:`shared_signature`, :func:`check_signatures`, :func:`fedavg`, :func:`fedavg_weights`,
  :func:`initial_shared`, :func:`to_numpy`, :func:`from_numpy`;
- sites: :func:`split_site`, :class:`SiteData`, :class:`Site` (model, optimiser and schedule
  state, random streams, best snapshot, atomic checkpoints);
- loops: :func:`run_federated` (the in-process reference), baselines :func:`run_local`,
  :func:`run_fedavg_all`, :func:`run_pooled`, :func:`results_json`, :func:`compare_on_sites`;
- :func:`simulate_sites`: heterogeneous motor-imagery sites with known structure.

The Flower app (``federated/`` and :mod:`bcikit.federated.flower`) wraps these. Nothing here
imports flwr; torch is imported on first use of a name, so ``import bcikit`` stays light.
"""

from __future__ import annotations

from ..utils import lazy_exports

_LAZY = {
    "shared_keys": "state", "split_state": "state", "merge_state": "state",
    "shared_signature": "state", "check_signatures": "state", "fedavg": "state",
    "fedavg_weights": "state", "initial_shared": "state", "to_numpy": "state",
    "from_numpy": "state",
    "split_site": "sites", "SiteData": "sites", "Site": "sites",
    "FederatedResult": "loop", "run_federated": "loop", "run_local": "loop",
    "run_fedavg_all": "loop", "run_pooled": "loop", "results_json": "loop",
    "default_initial": "loop", "common_keys": "loop", "site_checkpoint": "loop",
    "simulate_sites": "simulate", "site_specs": "simulate", "make_sites": "simulate",
    "make_site_data": "simulate", "SiteSpec": "simulate",
    "compare_on_sites": "simulate",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
