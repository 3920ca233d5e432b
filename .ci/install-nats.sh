#!/usr/bin/env bash
# Installs what the fleet-mode tests (tests/tests/collector_fleet.rs) need on a Debian machine of
# this project's kind: Debian's `nats-server` (JetStream included), which the tests start on
# loopback with a temporary store directory.
#
# Idempotent: an installed package is skipped, and `apt-get update` runs only when something is
# missing. Runs as root, or through `sudo -n`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CI_LOG_TAG=install-nats
# shellcheck source=.ci/lib.sh
source "$ROOT/.ci/lib.sh"

main() {
    apt_install nats-server
    local bin
    bin="$(command -v nats-server || echo /usr/sbin/nats-server)"
    [[ -x "$bin" ]] || ci_die "nats-server installed but $bin is not executable"
    ci_log "nats-server: $("$bin" --version)"
}

main "$@"
