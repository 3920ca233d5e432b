#!/usr/bin/env bash
# Installs what the deploy-kit checks (.ci/test-deploy.sh) need on a Debian machine of this
# project's kind:
#   prometheus              for promtool (check rules/config, rule unit tests)
#   prometheus-alertmanager for amtool (check-config, route tests)
#   systemd                 for systemd-analyze (verify, security)
#   nats-server             for deploy/local-fleet.sh
#   openssl                 for the local fleet's self-signed certificates
#   curl and ShellCheck     for the smoke run and the script checks
#   python3                 for the dashboard and metric-name checks
#   strace                  to hold the collector's system calls against the unit's filter
# Only the binaries are needed: the packaged services are never started (a temporary
# policy-rc.d forbids it while installing, when the machine has none).
#
# Idempotent: installed packages are skipped, and `apt-get update` runs only when one is
# missing. Runs as root, or through `sudo -n`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CI_LOG_TAG=install-deploy-tools
# shellcheck source=.ci/lib.sh
source "$ROOT/.ci/lib.sh"

POLICY=/usr/sbin/policy-rc.d
PACKAGES=(prometheus prometheus-alertmanager systemd nats-server openssl shellcheck curl python3
    strace)
# package:binary it must provide
BINARIES=(prometheus:promtool prometheus-alertmanager:amtool systemd:systemd-analyze
    nats-server:nats-server openssl:openssl shellcheck:shellcheck curl:curl python3:python3 strace:strace)

main() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        apt_installed "$p" || missing+=("$p")
    done
    if [[ ${#missing[@]} -gt 0 && ! -e "$POLICY" ]]; then
        # Without a policy-rc.d, the maintainer scripts of prometheus and alertmanager would
        # start system services on :9090/:9093; the checks need only the binaries.
        printf '#!/bin/sh\nexit 101\n' | ci_sudo tee "$POLICY" >/dev/null
        ci_sudo chmod 0755 "$POLICY"
        # shellcheck disable=SC2064 # expand $POLICY now
        trap "ci_sudo rm -f $POLICY" EXIT
    fi
    apt_install "${PACKAGES[@]}"

    local pair bin
    for pair in "${BINARIES[@]}"; do
        bin="${pair#*:}"
        command -v "$bin" >/dev/null 2>&1 || ci_die "$bin missing after installing ${pair%%:*}"
    done
    ci_log "$(promtool --version 2>&1 | head -n 1)"
    ci_log "$(amtool --version 2>&1 | head -n 1)"
    ci_log "$(systemd-analyze --version 2>&1 | head -n 1)"
    ci_log "nats-server $(nats-server --version 2>&1 | head -n 1)"
}

main "$@"
