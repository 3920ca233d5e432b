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

const { runPageScript } = require('./launch');

runPageScript({}, async ({ config, timeout, page, seen }) => {
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
});
