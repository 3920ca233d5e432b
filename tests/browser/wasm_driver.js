// Drives Debian's Chromium for the wasm package tests (tests/tests/wasm_browser.rs), one JSON
// command per line on stdin, one JSON answer per line on stdout. Never downloads a browser:
// playwright-core (tests/browser/node_modules) talks to /usr/bin/chromium (or $CHROMIUM).
//
// Usage: node wasm_driver.js '{"userDataDir": DIR}'
// Chromium always gets --host-resolver-rules="MAP * ~NOTFOUND, EXCLUDE 127.0.0.1": no name
// ever reaches a real resolver.
// Commands:
//   {"cmd": "goto", "url": URL}      -> {"ok": true, "status": 200} | {"ok": false, "error": ...}
//   {"cmd": "reload"}                -> the same, for the current page
//   {"cmd": "eval", "js": BODY}      -> {"ok": true, "value": V} | {"ok": false, "error": ...}
//        BODY is the body of an async function run in the page; V its JSON-able result.
//   {"cmd": "quit"}                  -> {"ok": true}, then exit 0
'use strict';

const readline = require('node:readline');
const { launch } = require('./launch');

function reply(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}

async function main() {
    const config = JSON.parse(process.argv[2] || '{}');
    const context = await launch(config.userDataDir);
    const page = context.pages()[0] || (await context.newPage());
    const console = [];
    page.on('console', (m) => console.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => console.push(`pageerror: ${e.message}`));

    const lines = readline.createInterface({ input: process.stdin });
    for await (const line of lines) {
        if (!line.trim()) continue;
        const cmd = JSON.parse(line);
        try {
            if (cmd.cmd === 'goto' || cmd.cmd === 'reload') {
                const response = cmd.cmd === 'goto'
                    ? await page.goto(cmd.url, { timeout: cmd.timeoutMs || 10000 })
                    : await page.reload({ timeout: cmd.timeoutMs || 10000 });
                reply({ ok: true, status: response ? response.status() : null });
            } else if (cmd.cmd === 'eval') {
                const value = await page.evaluate(`(async () => { ${cmd.js} })()`);
                reply({ ok: true, value: value === undefined ? null : value });
            } else if (cmd.cmd === 'quit') {
                await context.close();
                reply({ ok: true });
                return;
            } else {
                throw new Error(`unknown command ${JSON.stringify(cmd.cmd)}`);
            }
        } catch (e) {
            reply({ ok: false, error: String(e && e.message ? e.message : e), console: console.slice(-20) });
        }
    }
    await context.close();
}

main().then(
    () => process.exit(0),
    (e) => {
        reply({ ok: false, fatal: String(e && e.stack ? e.stack : e) });
        process.exit(1);
    },
);
