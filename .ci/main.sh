#!/usr/bin/env bash
# The "main job": seal envelopes with the agent and open them with the collector, end to end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec cargo run --release --locked -p vantage-collector --example wire_demo -- "$@"
