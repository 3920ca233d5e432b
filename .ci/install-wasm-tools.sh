#!/usr/bin/env bash
# Installs what the wasm package build and its browser tests need, skipping what is there:
#   - the wasm32 toolchain route (rustup target, else Debian's rustc-web; .ci/install-deps.sh
#     install_wasm) when .ci/wasm-env.sh finds none;
#   - Debian's chromium + chromium-driver, node/npm and playwright-core (.ci/install-chromium.sh);
#   - wasm-bindgen-cli at exactly the version wasm/Cargo.toml pins, into
#     $VANTAGE_CI_CACHE/tools/bin (about 6-7 minutes to compile the first time);
#   - wasm-opt from the npm package binaryen@132 (wasm/tools/package-lock.json), never Debian's;
#   - on route A, rustup's rust-src component: the package build rebuilds std for size
#     (.ci/build-wasm-pkg.sh, -Z build-std).
# Prints the tool paths at the end. Runs as root, or with `sudo -n` for apt.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CI_LOG_TAG=install-wasm-tools
# shellcheck source=.ci/lib.sh
source "$ROOT/.ci/lib.sh"

TOOLS="$VANTAGE_CI_CACHE/tools"

wasm_bindgen_version() {
    sed -n 's/^wasm-bindgen = "=\([0-9.]*\)".*/\1/p' "$ROOT/wasm/Cargo.toml"
}

ensure_wasm_route() {
    if (source "$ROOT/.ci/wasm-env.sh") >/dev/null 2>&1; then
        ci_log "wasm32 route present (skip)"
        return 0
    fi
    # install-deps.sh is idempotent; its install_wasm tries `rustup target add` first and falls
    # back to Debian's rustc-web route.
    ci_log "no wasm32 route yet: running .ci/install-deps.sh"
    bash "$ROOT/.ci/install-deps.sh"
}

ensure_browser() {
    bash "$ROOT/.ci/install-chromium.sh"
}

ensure_wasm_bindgen() {
    local want have=""
    want="$(wasm_bindgen_version)"
    [[ -n "$want" ]] || ci_die "wasm/Cargo.toml pins no wasm-bindgen version (want = \"=X\")"
    if [[ -x "$TOOLS/bin/wasm-bindgen" ]]; then
        have="$("$TOOLS/bin/wasm-bindgen" --version | awk '{print $2}')"
    fi
    if [[ "$have" == "$want" && -x "$TOOLS/bin/wasm-bindgen-test-runner" ]]; then
        ci_log "wasm-bindgen-cli $want present (skip)"
        return 0
    fi
    ci_log "cargo install wasm-bindgen-cli $want (have '${have:-none}') into $TOOLS"
    # No --locked: its lock file names crate versions a registry mirror may lack. A target dir
    # of its own, removed afterwards, keeps the build out of the workspace's.
    local tmp
    tmp="$(mktemp -d)"
    # A tool that turns one small module into bindings needs no optimiser passes or LTO: with
    # opt-level 1 and many codegen units it compiles in about half the time on 2 cores.
    CARGO_TARGET_DIR="$tmp" CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=false \
        CARGO_PROFILE_RELEASE_CODEGEN_UNITS=64 CARGO_PROFILE_RELEASE_DEBUG=false \
        CARGO_INCREMENTAL=0 \
        cargo install wasm-bindgen-cli --version "$want" --root "$TOOLS" --force
    rm -rf "$tmp"
}

ensure_wasm_opt() {
    local dir="$ROOT/wasm/tools"
    local stamp="$dir/node_modules/.vantage-lock.sha256" want
    want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$dir/node_modules/.bin/wasm-opt" ]]; then
        ci_log "npm: binaryen in wasm/tools matches package-lock.json (skip)"
        return 0
    fi
    ci_log "npm ci in wasm/tools (binaryen)"
    (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
    echo "$want" >"$stamp"
}

ensure_rust_src() {
    local route
    route="$(source "$ROOT/.ci/wasm-env.sh" && echo "$VANTAGE_WASM_ROUTE")"
    [[ "$route" == A ]] || return 0
    if rustup component list --installed | grep -q '^rust-src'; then
        ci_log "rust-src present (skip)"
        return 0
    fi
    ci_log "rustup component add rust-src (std sources for the size build)"
    timeout 300 rustup component add rust-src
}

main() {
    ensure_wasm_route
    ensure_rust_src
    ensure_browser
    ensure_wasm_bindgen
    ensure_wasm_opt
    ci_log "wasm-bindgen: $("$TOOLS/bin/wasm-bindgen" --version)"
    ci_log "wasm-opt: $("$ROOT/wasm/tools/node_modules/.bin/wasm-opt" --version)"
}

main "$@"
