#!/usr/bin/env bash
# The "main job": a real collector (hyper + rustls, embedded sled store) and a real agent on
# loopback. The agent detects real failures (a refused port, an HTTP 404), classifies them,
# seals them (Ed25519 + HPKE) and delivers them; the collector opens, verifies, enriches and
# stores them, and the demo prints the stored reports and the collector's metrics.
# (Spike detection and alerting are wired into the collector by the detection issue; the demo
# then shows an alert.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec cargo run --release --locked -p vantage-tests --bin vantage-demo -- "$@"
