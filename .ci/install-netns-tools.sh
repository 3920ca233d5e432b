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

main() {
    apt_install iproute2 iptables

    # Smoke check in a throwaway namespace: the tests fail loudly without this, but saying it
    # here points at the machine rather than at the tests.
    local ns="vt-install-$$"
    ci_sudo ip netns add "$ns"
    # shellcheck disable=SC2064 # expand $ns now
    trap "ci_sudo ip netns del $ns 2>/dev/null || true" EXIT
    if ci_sudo ip netns exec "$ns" iptables -A INPUT -p tcp --dport 9 -j DROP; then
        ci_log "iptables works inside a namespace: $(iptables --version)"
    else
        ci_die "iptables cannot add a rule inside a network namespace (kernel modules missing?)"
    fi
}

main "$@"
