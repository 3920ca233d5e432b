#!/usr/bin/env bash
# Installs what the browser tests (tests/tests/collector_nel_chromium.rs) need on a Debian
# machine of this project's kind: Debian's Chromium (and chromedriver, for wasm-bindgen-test),
# Node.js with npm, and playwright-core from tests/browser/package-lock.json.
#
# Never downloads a browser build of its own: playwright-core drives /usr/bin/chromium, and
# `npx playwright install` is never run (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD guards npm ci too).
#
# Idempotent: installed packages are skipped, `apt-get update` runs only when something is
# missing, and `npm ci` runs only when node_modules does not match the lock file. Runs as root,
# or through `sudo -n` for apt.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CI_LOG_TAG=install-chromium
# shellcheck source=.ci/lib.sh
source "$ROOT/.ci/lib.sh"

export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

install_packages() {
    local wanted=(chromium chromium-driver nodejs npm) missing=() p
    for p in "${wanted[@]}"; do
        apt_installed "$p" || missing+=("$p")
    done
    # A node/npm that came from elsewhere (nodesource, a tarball) is fine as it is.
    if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
        local keep=()
        for p in "${missing[@]}"; do
            [[ "$p" == nodejs || "$p" == npm ]] || keep+=("$p")
        done
        missing=("${keep[@]}")
    fi
    if [[ ${#missing[@]} -eq 0 ]]; then
        ci_log "apt: ${wanted[*]} present (skip)"
    else
        apt_install "${missing[@]}"
    fi
    [[ -x /usr/bin/chromium ]] || ci_die "/usr/bin/chromium missing after install"
    ci_log "$(/usr/bin/chromium --version 2>/dev/null || echo 'chromium: version unknown')"
}

install_playwright_core() {
    local dir="$ROOT/tests/browser"
    local stamp="$dir/node_modules/.vantage-lock.sha256"
    local want
    want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -d "$dir/node_modules/playwright-core" ]]; then
        ci_log "npm: tests/browser/node_modules matches package-lock.json (skip)"
        return 0
    fi
    ci_log "npm ci in tests/browser"
    (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
    echo "$want" >"$stamp"
    ci_log "playwright-core $(node -p "require('$dir/node_modules/playwright-core/package.json').version")"
}

main() {
    install_packages
    install_playwright_core
}

main "$@"
