#!/usr/bin/env bash
# The "main job": a real collector (hyper + rustls, embedded sled store) and a real agent on
# loopback. The agent detects real failures (a refused port, an HTTP 404), classifies them,
# seals them (Ed25519 + HPKE) and delivers them; the collector opens, verifies, enriches and
# stores them, and the demo prints the stored reports and the collector's metrics. Then a
# simulated fleet (120 agent cores on 40 loopback /24s) reports normal traffic, then an outage
# of one service: the demo prints the alert, the dashboard URL and the resolution (about a
# minute in all). `bash .ci/main.sh --hold` keeps the collector and dashboard up until Ctrl-C.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec cargo run --release --locked -p vantage-tests --bin vantage-demo -- "$@"
