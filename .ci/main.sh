#!/usr/bin/env bash
# The "main job": `vantage-collector demo`. A real collector with a fresh dev key on an embedded
# sled store (no other services), and a simulated fleet of 120 real agent cores on 40 loopback
# /24s (mapped to 10 test ASNs) whose sealed, signed envelopes go through the real ingest path.
# Normal traffic until the detector has learned it, then an outage of the service `shop`: the
# demo prints the alert, the dashboard URL and the resolution (under a minute in all), then
# exits. `bash .ci/main.sh --hold` keeps the collector, the fleet and the dashboard up until
# Ctrl-C; `--dir DIR` keeps the key and the sled store. Ctrl-C stops it cleanly at any point.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec cargo run --release --locked -p vantage-collector -- demo "$@"
