#!/usr/bin/env bash
# Register sites' SuperNode public keys on the SuperLink (only registered keys may connect).
#
#   register_supernodes.sh CONNECTION SITE.pub [SITE.pub ...]
#
# CONNECTION is a [superlink.<name>] entry of $FLWR_HOME/config.toml (default ~/.flwr) with
# `address` and `root-certificates` (see README.md). Each key is registered under its file name.
set -euo pipefail
CONN=${1:?usage: register_supernodes.sh CONNECTION SITE.pub [SITE.pub ...]}
shift
export FLWR_TELEMETRY_ENABLED=${FLWR_TELEMETRY_ENABLED:-0}
for pub in "$@"; do
  flwr supernode register "$pub" "$CONN" --name "$(basename "$pub" .pub)"
done
