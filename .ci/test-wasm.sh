#!/usr/bin/env bash
# The wasm module's tests, in Debian's headless Chromium:
#   1. the wasm-bindgen-test suite (wasm/tests: golden vectors, the exported Core) through
#      chromedriver;
#   2. the package (.ci/build-wasm-pkg.sh) in a page on 127.0.0.1 driven by playwright-core,
#      against a real collector (tests/tests/wasm_browser.rs);
#   3. with VANTAGE_WASM_BENCH=1, the benchmark page (sizes, record() -> stored, main-thread
#      time per record).
# Installs what is missing first (.ci/install-wasm-tools.sh, idempotent). Non-zero on failure.
# Chromium always runs with --host-resolver-rules="MAP * ~NOTFOUND, EXCLUDE 127.0.0.1".
# VANTAGE_WASM_BUILD_DIR overrides the wasm target dir (as in .ci/build-wasm-pkg.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CI_LOG_TAG=test-wasm
# shellcheck source=.ci/lib.sh
source .ci/lib.sh

start=$(date +%s)
bash .ci/install-wasm-tools.sh

step() {
    ci_log "== $1 ($(ci_fmt_secs $(($(date +%s) - start))) so far)"
}

step "wasm-bindgen-test in headless Chromium"
(
    # shellcheck source=.ci/wasm-env.sh
    source .ci/wasm-env.sh
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    cat >"$work/webdriver.json" <<'JSON'
{
  "goog:chromeOptions": {
    "binary": "/usr/bin/chromium",
    "args": [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--disable-dev-shm-usage",
      "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
    ]
  }
}
JSON
    export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER="$VANTAGE_CI_CACHE/tools/bin/wasm-bindgen-test-runner"
    export CHROMEDRIVER=/usr/bin/chromedriver
    export WASM_BINDGEN_TEST_WEBDRIVER_JSON="$work/webdriver.json"
    export WASM_BINDGEN_TEST_TIMEOUT=60
    "$VANTAGE_WASM_CARGO" test -p vantage-wasm --locked --target wasm32-unknown-unknown \
        --target-dir "${VANTAGE_WASM_BUILD_DIR:-$VANTAGE_WASM_TARGET_DIR}" \
        "${VANTAGE_WASM_CARGO_ARGS[@]}" --tests
)

step "package build"
bash .ci/build-wasm-pkg.sh

step "the package in Chromium against a real collector"
# --workspace --all-features: the feature set of the test command's workspace step, so the
# agent, the collector and the test harness built here are reused there, not built twice.
VANTAGE_WASM_PKG_DIR="${VANTAGE_WASM_PKG_DIR:-$ROOT/target/wasm-pkg}" \
    cargo test --workspace --all-features --locked --test wasm_browser -- --test-threads=1

if [[ "${VANTAGE_WASM_BENCH:-0}" == 1 ]]; then
    step "benchmark"
    VANTAGE_WASM_PKG_DIR="${VANTAGE_WASM_PKG_DIR:-$ROOT/target/wasm-pkg}" \
        cargo test -p vantage-tests --locked --test wasm_browser -- --ignored --nocapture bench
fi

ci_log "wasm tests passed in $(ci_fmt_secs $(($(date +%s) - start)))"
