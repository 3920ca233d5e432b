// Reads the dashboard's "Agent drops" panel in Debian's Chromium for
// tests/tests/collector_dashboard.rs (launched as in launch.js, with its resolver guard).
//
// Usage: node drops.js '<json config>'
//   config: {"userDataDir": DIR, "url": "http://127.0.0.1:P/", "total": 8, "timeoutMs": 20000}
// Steps: open the page; wait until the panel's count says `total`; read its rows. Prints ONE
// JSON line: {"ok": true, "total": N, "count": TEXT, "rows": [{reason, count, text}],
// "consoleErrors": [...], "pageErrors": [...], "failedRequests": [...]}
// or {"ok": false, "error": MESSAGE, ...what was seen so far} (exit 1).
'use strict';

const { launch } = require('./launch');

const seen = { consoleErrors: [], pageErrors: [], failedRequests: [] };

async function main() {
    const config = JSON.parse(process.argv[2] || '{}');
    const timeout = config.timeoutMs || 20000;
    const context = await launch(config.userDataDir);
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
        await page.goto(config.url, { timeout });
        await page.waitForFunction(
            (total) => document.getElementById('drops-count').dataset.total === String(total),
            config.total,
            { timeout, polling: 100 },
        );
        Object.assign(
            seen,
            await page.evaluate(() => ({
                total: Number(document.getElementById('drops-count').dataset.total),
                count: document.getElementById('drops-count').textContent,
                rows: [...document.querySelectorAll('#drops tbody tr')].map((tr) => ({
                    reason: tr.dataset.reason,
                    count: Number(tr.dataset.count),
                    text: tr.textContent,
                })),
            })),
        );
        process.stdout.write(JSON.stringify({ ok: true, ...seen }) + '\n');
    } finally {
        await context.close();
    }
}

main().then(
    () => process.exit(0),
    (e) => {
        process.stdout.write(JSON.stringify({ ...seen, ok: false, error: String(e && e.stack ? e.stack : e) }) + '\n');
        process.exit(1);
    },
);
