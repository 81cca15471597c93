#!/usr/bin/env bash
# Start the FLEEG SuperLink with TLS and SuperNode authentication (one process, foreground).
#
#   start_superlink.sh CERT_DIR [PORT] [HOST]
#
# CERT_DIR holds ca.crt, server.pem and server.key (make_certs.py). PORT (default 8000) serves
# the Fleet, Control and Runtime HTTP APIs; HOST (default 0.0.0.0) is the address to bind.
# Set SUPERLINK_DATABASE=/path/state.db to keep the SuperLink's state across restarts.
# Apps are never installed at run time: bcikit must already be installed here.
set -euo pipefail
CERTS=${1:?usage: start_superlink.sh CERT_DIR [PORT] [HOST]}
PORT=${2:-8000}
HOST=${3:-0.0.0.0}
export FLWR_TELEMETRY_ENABLED=${FLWR_TELEMETRY_ENABLED:-0}
args=(--host "$HOST" --port "$PORT"
      --ssl-ca-certfile "$CERTS/ca.crt" --ssl-certfile "$CERTS/server.pem"
      --ssl-keyfile "$CERTS/server.key"
      --enable-supernode-auth --disable-runtime-dependency-installation)
if [ -n "${SUPERLINK_DATABASE:-}" ]; then args+=(--database "$SUPERLINK_DATABASE"); fi
exec flower-superlink "${args[@]}"
