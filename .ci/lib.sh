# shellcheck shell=bash
# Helpers shared by the .ci scripts. Sourced, never run.

# Cache for probes and stamps that outlive one run (not inside the work tree, so a fresh clone
# on the same machine still finds them).
VANTAGE_CI_CACHE="${VANTAGE_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vantage-ci}"

ci_log() { printf '[%s] %s\n' "${CI_LOG_TAG:-ci}" "$*"; }
ci_warn() { printf '[%s] WARNING: %s\n' "${CI_LOG_TAG:-ci}" "$*" >&2; }
ci_die() {
    printf '[%s] ERROR: %s\n' "${CI_LOG_TAG:-ci}" "$*" >&2
    exit 1
}

# Whole seconds as "Mm SSs".
ci_fmt_secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# The LLVM major version a rustc was built with: `ci_llvm_major /usr/bin/rustc` -> 22.
ci_llvm_major() {
    "${1:-rustc}" -vV 2>/dev/null | sed -n 's/^LLVM version: \([0-9][0-9]*\).*/\1/p'
}

# Print the name of an installed clang that can target wasm32, preferring the given LLVM
# major (matching rustc's LLVM keeps object files and the linker in step), then the newest.
ci_find_wasm_clang() {
    local want="${1:-}" c
    local candidates=()
    [[ -n "$want" ]] && candidates+=("clang-$want")
    for v in 30 29 28 27 26 25 24 23 22 21 20 19 18 17 16 15; do
        candidates+=("clang-$v")
    done
    for c in "${candidates[@]}"; do
        if command -v "$c" >/dev/null 2>&1 && "$c" --print-targets 2>/dev/null | grep -q 'wasm32'; then
            echo "$c"
            return 0
        fi
    done
    return 1
}
