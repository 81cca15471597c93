#!/usr/bin/env bash
# Submit the FLEEG app to a running SuperLink and stream its log until it finishes.
#
#   run_app.sh CONNECTION [RUN_CONFIG.toml]
#
# RUN_CONFIG.toml overrides [tool.flwr.app.config] of federated/pyproject.toml, e.g.
#   num-sites = 3
#   num-rounds = 250
#   run-dir = "/srv/fleeg-runs"
# The server writes <run-dir>/<run-name>/fold-<k>/server/result.json.
set -euo pipefail
CONN=${1:?usage: run_app.sh CONNECTION [RUN_CONFIG.toml]}
APP="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export FLWR_TELEMETRY_ENABLED=${FLWR_TELEMETRY_ENABLED:-0}
args=("$APP" "$CONN" --stream)
if [ -n "${2:-}" ]; then args+=(--run-config "$2"); fi
exec flwr run "${args[@]}"
