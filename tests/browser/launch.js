// The one place that starts Chromium for the browser tests: Debian's binary (never a downloaded
// build), headless, and ALWAYS with the host-resolver guard, so the browser cannot look up any
// outside name (this machine must never send such traffic). Extra MAP rules for test host
// names go before the guard.
'use strict';

const { chromium } = require('playwright-core');

const BASE_ARGS = [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
];

/**
 * Launches a persistent context in `userDataDir`.
 * @param {string} userDataDir a new empty directory
 * @param {{hostRules?: string[], args?: string[], viewport?: object}} [opts]
 */
async function launch(userDataDir, opts = {}) {
    const rules = [...(opts.hostRules || []), 'MAP * ~NOTFOUND', 'EXCLUDE 127.0.0.1'].join(', ');
    const options = {
        executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
        headless: true,
        args: [...BASE_ARGS, `--host-resolver-rules=${rules}`, ...(opts.args || [])],
    };
    if (opts.viewport) {
        options.viewport = opts.viewport;
    }
    return chromium.launchPersistentContext(userDataDir, options);
}

module.exports = { launch };
