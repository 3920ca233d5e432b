#!/usr/bin/env bash
# THE test command: installs what is missing, then runs every check in order and stops at the
# first failure. Fits a 2-core machine well within 30 minutes once the dependencies are there.
#
#   bash .ci/test.sh                 everything
#   VANTAGE_SKIP_INSTALL=1 ...       skip .ci/install-deps.sh
#   VANTAGE_FUZZ_SECS=N ...          seconds per fuzz target (default 20; see .ci/fuzz-smoke.sh)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=.ci/lib.sh
source .ci/lib.sh

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
# A clean clone builds everything once: incremental caches only cost time and disk here.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

T0=$(date +%s)
STEP_TIMES=()

step() {
    local name="$1" start rc
    shift
    printf '\n'
    printf '=%.0s' {1..100}
    printf '\n== STEP: %s\n==   $ %s\n' "$name" "$*"
    printf '=%.0s' {1..100}
    printf '\n'
    start=$(date +%s)
    rc=0
    "$@" || rc=$?
    local took=$(($(date +%s) - start))
    STEP_TIMES+=("$(printf '%8s  %s' "$(ci_fmt_secs "$took")" "$name")")
    if [[ $rc -ne 0 ]]; then
        printf '\n!! STEP FAILED (exit %d, after %s): %s\n' "$rc" "$(ci_fmt_secs "$took")" "$name" >&2
        summary
        exit "$rc"
    fi
    printf -- '-- step ok in %s: %s\n' "$(ci_fmt_secs "$took")" "$name"
}

# With VANTAGE_CI_TRIM=1 (set by .ci/run) build outputs that no later step reads are deleted
# as soon as their step is done, so the disk peak is the workspace tests' build alone: CI
# machines have less free disk than this one, and a full run once ran out while linking.
TRIM="${VANTAGE_CI_TRIM:-0}"
trim() {
    [[ $TRIM == 1 ]] || return 0
    rm -rf -- "$@"
    df_line
}

df_line() {
    printf -- '-- disk: target %s, %s free\n' "$(du -sh target 2>/dev/null | cut -f1)" \
        "$(df -h --output=avail . | tail -n1 | tr -d ' ')"
}

summary() {
    df_line
    printf '\n== step times\n'
    printf '%s\n' "${STEP_TIMES[@]}"
    printf '%8s  total\n' "$(ci_fmt_secs $(($(date +%s) - T0)))"
}

if [[ "${VANTAGE_SKIP_INSTALL:-0}" != 1 ]]; then
    step "install dependencies" bash .ci/install-deps.sh
fi
step "rustfmt" cargo fmt --all -- --check
# --all-targets type-checks the benches and examples too (no separate optimised bench build).
# In its own target dir when trimming: check-only artefacts that no later step reads.
if [[ $TRIM == 1 ]]; then
    step "clippy" env CARGO_TARGET_DIR=target/clippy \
        cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
    trim target/clippy
else
    step "clippy" cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
fi
# Builds the wasm package (target/wasm-pkg) that tests/tests/wasm_browser.rs loads, so it
# comes before the workspace tests.
step "wasm module in Chromium" bash .ci/test-wasm.sh
# target/wasm-pkg stays (the browser tests load it); the wasm32 build step below rebuilds.
trim target/wasm target/wasm-min target/wasm-debian target/wasm-debian-min
# The C library: header regenerated and diffed, release builds, sizes. Its C tests (ffi_c,
# ffi_valgrind) run with the workspace tests below.
step "C library (header, release build, sizes)" env VANTAGE_FFI_SKIP_CARGO_TESTS=1 bash .ci/test-ffi.sh
# The tests below build their own libraries (profile dev, target/debug).
trim target/release-ffi target/x86_64-unknown-linux-gnu
step "tests (all features)" cargo test --workspace --all-features --locked
# The test executables (the only files in deps/ without a hard link in target/debug/): no
# later step runs them, and the fuzz build needs the room.
if [[ $TRIM == 1 ]]; then
    find target/debug/deps -maxdepth 1 -type f -executable -links 1 -delete
    df_line
fi
step "tests (agent, no default features)" cargo test -p vantage-agent --no-default-features --locked
step "deploy kit (promtool, amtool, systemd-analyze, configs, local fleet)" bash .ci/test-deploy.sh
step "docs (no broken links)" env RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --locked
step "build agent for wasm32" bash .ci/check-wasm.sh
step "fuzz smoke" bash .ci/fuzz-smoke.sh

summary
echo "ALL CHECKS PASSED"
