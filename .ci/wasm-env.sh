# shellcheck shell=bash
# Source this (in a script or subshell, never in a login profile) to build for
# wasm32-unknown-unknown by whichever route .ci/install-deps.sh set up. It exports the
# compiler environment and defines:
#   VANTAGE_WASM_ROUTE       A (rustup target) or B (Debian rustc-web + -Z build-std)
#   VANTAGE_WASM_CARGO       the cargo to run
#   VANTAGE_WASM_TARGET_DIR  a target dir of its own (never shared with host builds)
#   VANTAGE_WASM_CARGO_ARGS  array of extra cargo args (the -Z build-std flags on route B)
# Usage:
#   source .ci/wasm-env.sh
#   "$VANTAGE_WASM_CARGO" build --target wasm32-unknown-unknown \
#       --target-dir "$VANTAGE_WASM_TARGET_DIR" "${VANTAGE_WASM_CARGO_ARGS[@]}" -p vantage-agent
# Route is taken from $VANTAGE_WASM_ROUTE if set, else from what install-deps.sh recorded,
# else detected.

_vw_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=.ci/lib.sh
source "$_vw_root/.ci/lib.sh"

_vw_route="${VANTAGE_WASM_ROUTE:-}"
if [[ -z "$_vw_route" && -f "$VANTAGE_CI_CACHE/wasm-route" ]]; then
    _vw_route="$(cat "$VANTAGE_CI_CACHE/wasm-route")"
fi
if [[ -z "$_vw_route" ]]; then
    if [[ -d "$(rustc --print sysroot 2>/dev/null)/lib/rustlib/wasm32-unknown-unknown/lib" ]]; then
        _vw_route=A
    elif [[ -x /usr/bin/rustc && -d /usr/lib/rustlib/src/rust/library ]]; then
        _vw_route=B
    else
        echo "wasm-env.sh: no wasm32 toolchain found; run .ci/install-deps.sh" >&2
        return 1
    fi
fi

case "$_vw_route" in
A | a)
    VANTAGE_WASM_ROUTE=A
    VANTAGE_WASM_CARGO=cargo
    VANTAGE_WASM_TARGET_DIR="$_vw_root/target/wasm"
    # shellcheck disable=SC2034 # used by the scripts that source this file
    VANTAGE_WASM_CARGO_ARGS=()
    _vw_cc="$(ci_find_wasm_clang "$(ci_llvm_major rustc)")" || {
        echo "wasm-env.sh: no wasm-capable clang-N found; run .ci/install-deps.sh" >&2
        return 1
    }
    export CC_wasm32_unknown_unknown="$_vw_cc"
    ;;
B | b)
    VANTAGE_WASM_ROUTE=B
    VANTAGE_WASM_CARGO=/usr/bin/cargo
    # Debian's rustc is a different compiler: keep its artifacts apart from route A's.
    VANTAGE_WASM_TARGET_DIR="$_vw_root/target/wasm-debian"
    # shellcheck disable=SC2034 # used by the scripts that source this file
    VANTAGE_WASM_CARGO_ARGS=(-Z "build-std=std,panic_abort")
    _vw_major="$(ci_llvm_major /usr/bin/rustc)"
    export RUSTC=/usr/bin/rustc
    export RUSTDOC=/usr/bin/rustdoc
    export RUSTC_BOOTSTRAP=1
    export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="wasm-ld-$_vw_major"
    export CC_wasm32_unknown_unknown="clang-$_vw_major"
    ;;
*)
    echo "wasm-env.sh: unknown route '$_vw_route' (want A or B)" >&2
    return 1
    ;;
esac
export VANTAGE_WASM_ROUTE VANTAGE_WASM_CARGO VANTAGE_WASM_TARGET_DIR
unset _vw_root _vw_route _vw_cc _vw_major
