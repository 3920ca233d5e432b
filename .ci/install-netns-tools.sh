#!/usr/bin/env bash
# Installs what the network-namespace fault tests (tests/tests/agent_faults.rs) need on a Debian
# machine of this project's kind: `ip` (iproute2) for namespaces, veth pairs and routes, and
# `iptables` for REJECT/DROP rules inside the server namespace.
#
# Idempotent: packages that are installed are skipped, and `apt-get update` runs only when
# something is missing. Runs as root, or through `sudo -n`.
#
# After installing, it checks that the iptables found on PATH can add a rule inside a fresh
# network namespace (the nft-backed and the legacy backends both can on current kernels, but a
# kernel without nf_tables or x_tables modules cannot) and says which backend it is.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CI_LOG_TAG=install-netns-tools
# shellcheck source=.ci/lib.sh
source "$ROOT/.ci/lib.sh"

export DEBIAN_FRONTEND=noninteractive

SUDO=()
if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null 2>&1 || ci_die "not root and no sudo: cannot install Debian packages"
    SUDO=(sudo -n)
fi

apt_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

main() {
    local wanted=(iproute2 iptables) missing=() p
    for p in "${wanted[@]}"; do
        apt_installed "$p" || missing+=("$p")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        ci_log "apt: ${wanted[*]} already installed (skip)"
    else
        ci_log "apt-get update"
        "${SUDO[@]}" apt-get update -q >/dev/null
        ci_log "apt-get install ${missing[*]}"
        "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    fi

    # Smoke check in a throwaway namespace: the tests fail loudly without this, but saying it
    # here points at the machine rather than at the tests.
    local ns="vt-install-$$"
    "${SUDO[@]}" ip netns add "$ns"
    # shellcheck disable=SC2064 # expand $ns now
    trap "${SUDO[*]} ip netns del $ns 2>/dev/null || true" EXIT
    if "${SUDO[@]}" ip netns exec "$ns" iptables -A INPUT -p tcp --dport 9 -j DROP; then
        ci_log "iptables works inside a namespace: $(iptables --version)"
    else
        ci_die "iptables cannot add a rule inside a network namespace (kernel modules missing?)"
    fi
}

main "$@"
