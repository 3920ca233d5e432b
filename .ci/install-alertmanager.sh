#!/usr/bin/env bash
# Installs what the notification tests (tests/tests/collector_notify.rs) need on a Debian
# machine of this project's kind: Debian's Prometheus Alertmanager. The test starts its own
# instance (temp dir, loopback port, clustering off); the packaged service is never started
# here.
#
# Idempotent: an installed package is skipped, and `apt-get update` runs only when it is
# missing. Runs as root, or through `sudo -n`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CI_LOG_TAG=install-alertmanager
# shellcheck source=.ci/lib.sh
source "$ROOT/.ci/lib.sh"

BIN=/usr/bin/prometheus-alertmanager
POLICY=/usr/sbin/policy-rc.d

main() {
    if apt_installed prometheus-alertmanager && [[ -x "$BIN" ]]; then
        ci_log "apt: prometheus-alertmanager already installed (skip)"
    else
        # On a machine without a policy-rc.d, the package's maintainer scripts would start the
        # system service (listening on :9093/:9094); the tests need only the binary. A
        # temporary policy that forbids starting services is removed again on exit.
        if [[ ! -e "$POLICY" ]]; then
            printf '#!/bin/sh\nexit 101\n' | ci_sudo tee "$POLICY" >/dev/null
            ci_sudo chmod 0755 "$POLICY"
            # shellcheck disable=SC2064 # expand $POLICY now
            trap "ci_sudo rm -f $POLICY" EXIT
        fi
        apt_install prometheus-alertmanager
    fi
    [[ -x "$BIN" ]] || ci_die "$BIN missing after installing prometheus-alertmanager"
    ci_log "$("$BIN" --version 2>&1 | head -n 1)"
}

main "$@"
