# shellcheck shell=bash
# shellcheck disable=SC2034 # APT_PICKED is read by the scripts that source this file
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

# ---------------------------------------------------------------------------------------------
# Debian packages, for the install scripts. `apt-get update` runs at most once per process, and
# only when something is missing. Runs as root, or through `sudo -n`.

export DEBIAN_FRONTEND=noninteractive
CI_APT_UPDATED=0

# Runs a command as root: directly when we are root, else through `sudo -n`.
ci_sudo() {
    if [[ "$(id -u)" == 0 ]]; then
        "$@"
    else
        command -v sudo >/dev/null 2>&1 || ci_die "not root and no sudo: cannot run $1"
        sudo -n "$@"
    fi
}

apt_update_once() {
    if [[ "$CI_APT_UPDATED" == 0 ]]; then
        ci_log "apt-get update"
        ci_sudo apt-get update -q >/dev/null
        CI_APT_UPDATED=1
    fi
}

apt_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# Candidate version of a package, or nothing when the package lists do not know it.
apt_candidate() {
    apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { if ($2 != "(none)") print $2 }'
}

# Installs the packages that are missing; says so when all are there.
apt_install() {
    local missing=() p
    for p in "$@"; do
        apt_installed "$p" || missing+=("$p")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        ci_log "  apt: $* already installed (skip)"
        return 0
    fi
    apt_update_once
    ci_log "  apt-get install ${missing[*]}"
    ci_sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# Sets APT_PICKED to the first of the given package names that is installed, else to the first
# one apt can install. (A global, not output: apt_update_once must not run in a subshell.)
APT_PICKED=
apt_pick() {
    local p pass
    APT_PICKED=
    for p in "$@"; do
        apt_installed "$p" && { APT_PICKED="$p"; return 0; }
    done
    for pass in 1 2; do
        for p in "$@"; do
            [[ -n "$(apt_candidate "$p")" ]] && { APT_PICKED="$p"; return 0; }
        done
        [[ $pass == 1 ]] && apt_update_once
    done
    return 1
}
