#!/usr/bin/env bash
# Start one site's SuperNode (foreground), authenticated by the site's private key, over TLS.
#
#   start_supernode.sh SUPERLINK_HOST:PORT CA_CERT SITE_KEY NODE_CONFIG [RUNTIME_PORT]
#
# NODE_CONFIG names the site and its data, e.g.
#   'site="hospital-a" dataset-card="/data/cards/a.toml" run-dir="/data/fleeg-runs"'
#   'site="sim-A" sim="sim:small:9" run-dir="/tmp/site-a"'            (simulated site)
# Keys: site, dataset-card | sim | sites-file, task, subjects, batch-size, lr, group, data-dir,
# run-dir (bcikit.federated.flower.site_config_from_node). RUNTIME_PORT (default 9094) is the
# SuperNode's local API for its ClientApp processes: give each SuperNode on one machine its own.
# Raw EEG never leaves this machine: only the shared tensors and metrics are sent.
set -euo pipefail
SUPERLINK=${1:?usage: start_supernode.sh HOST:PORT CA_CERT SITE_KEY NODE_CONFIG [RUNTIME_PORT]}
CA=${2:?CA certificate}
KEY=${3:?site private key}
NODE_CONFIG=${4:?node config}
RUNTIME_PORT=${5:-9094}
export FLWR_TELEMETRY_ENABLED=${FLWR_TELEMETRY_ENABLED:-0}
exec flower-supernode --superlink "$SUPERLINK" --root-certificates "$CA" \
  --auth-supernode-private-key "$KEY" --node-config "$NODE_CONFIG" --port "$RUNTIME_PORT"
