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

/**
 * Runs a one-shot page script: reads the JSON config in argv[2] (`userDataDir`, `url`,
 * `timeoutMs`, default 20000), launches Chromium, opens a page that records console errors,
 * page errors and failed requests (4xx/5xx too) in `seen`, goes to `config.url` and calls
 * `body({ config, timeout, context, page, response, seen })`. Prints ONE JSON line,
 * `{"ok": true, ...seen}` or `{"ok": false, "error": MESSAGE, ...what was seen so far}`, and
 * exits 0 or 1.
 * @param {{viewport?: object, seen?: object}} opts launch options; extra fields of `seen`
 * @param {function} body the script
 */
function runPageScript(opts, body) {
    const seen = { consoleErrors: [], pageErrors: [], failedRequests: [], ...(opts.seen || {}) };
    const main = async () => {
        const config = JSON.parse(process.argv[2] || '{}');
        const timeout = config.timeoutMs || 20000;
        const context = await launch(config.userDataDir, { viewport: opts.viewport });
        try {
            const page = context.pages()[0] || (await context.newPage());
            page.on('console', (m) => {
                if (m.type() === 'error') seen.consoleErrors.push(m.text());
            });
            page.on('pageerror', (e) => seen.pageErrors.push(String(e.message)));
            page.on('requestfailed', (r) => seen.failedRequests.push(r.url() + ' ' + (r.failure() || {}).errorText));
            page.on('response', (r) => {
                if (r.status() >= 400) seen.failedRequests.push(r.url() + ' ' + r.status());
            });
            const response = await page.goto(config.url, { timeout });
            await body({ config, timeout, context, page, response, seen });
            process.stdout.write(JSON.stringify({ ok: true, ...seen }) + '\n');
        } finally {
            await context.close();
        }
    };
    main().then(
        () => process.exit(0),
        (e) => {
            process.stdout.write(JSON.stringify({ ...seen, ok: false, error: String(e && e.stack ? e.stack : e) }) + '\n');
            process.exit(1);
        },
    );
}

module.exports = { launch, runPageScript };
