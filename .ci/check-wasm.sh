#!/usr/bin/env bash
# Builds the sans-IO agent core for wasm32-unknown-unknown (no default features), by whichever
# route .ci/install-deps.sh installed, in a target dir of its own. Extra args go to cargo,
# e.g. `.ci/check-wasm.sh --release`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=.ci/wasm-env.sh
source .ci/wasm-env.sh

echo "[check-wasm] route $VANTAGE_WASM_ROUTE: $("${RUSTC:-rustc}" -V)," \
    "CC_wasm32_unknown_unknown=$CC_wasm32_unknown_unknown, target dir $VANTAGE_WASM_TARGET_DIR"
set -x
"$VANTAGE_WASM_CARGO" build -p vantage-agent --no-default-features --locked \
    --target wasm32-unknown-unknown --target-dir "$VANTAGE_WASM_TARGET_DIR" \
    "${VANTAGE_WASM_CARGO_ARGS[@]}" "$@"
