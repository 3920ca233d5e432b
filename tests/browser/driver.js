// Drives Debian's Chromium for Vantage's browser tests (tests/tests/collector_nel_chromium.rs,
// tests/tests/wasm_browser.rs), one JSON command per line on stdin, one JSON answer per line
// on stdout. Never downloads a browser: playwright-core talks to /usr/bin/chromium (or
// $CHROMIUM) over CDP, launched by launch.js with its resolver guard.
//
// Usage: node driver.js '<json config>'
//   config: {"userDataDir": DIR, "hostRules": ["MAP origin.test 127.0.0.1", ...],
//            "spkiDerHex": [HEX, ...], "extraArgs": [...]}
//   hostRules come before the fixed "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", so no name outside
//   the test ever reaches a real resolver. spkiDerHex are the DER SubjectPublicKeyInfo of the
//   test leaves; Chromium trusts exactly those keys (--ignore-certificate-errors would turn NEL
//   off altogether).
// Commands:
//   {"cmd": "goto", "url": URL, "timeoutMs": 10000}
//       -> {"ok": true, "status": 200} or {"ok": false, "error": "net::ERR_CONNECTION_REFUSED ..."}
//   {"cmd": "reload"}              -> the same, for the current page
//   {"cmd": "eval", "js": BODY}    -> {"ok": true, "value": V} | {"ok": false, "error": ...}
//        BODY is the body of an async function run in the page; V its JSON-able result.
//   {"cmd": "quit"} -> {"ok": true}, then the browser closes and the process exits 0.
// A command that fails answers {"ok": false, "error": MESSAGE, "console": [last 20 lines]}.
// Anything unexpected (bad JSON, unknown command) -> {"ok": false, "fatal": MESSAGE}, exit 1.
'use strict';

const crypto = require('node:crypto');
const readline = require('node:readline');
const { launch } = require('./launch');

function reply(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}

async function main() {
    const config = JSON.parse(process.argv[2] || '{}');
    const spki = (config.spkiDerHex || []).map((hex) =>
        crypto.createHash('sha256').update(Buffer.from(hex, 'hex')).digest('base64'));
    const context = await launch(config.userDataDir, {
        hostRules: config.hostRules,
        args: [
            ...(spki.length ? [`--ignore-certificate-errors-spki-list=${spki.join(',')}`] : []),
            ...(config.extraArgs || []),
        ],
    });
    const page = context.pages()[0] || (await context.newPage());
    const console = [];
    page.on('console', (m) => console.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => console.push(`pageerror: ${e.message}`));
    const commands = {
        goto: (cmd) => page.goto(cmd.url, { timeout: cmd.timeoutMs || 10000 }),
        reload: (cmd) => page.reload({ timeout: cmd.timeoutMs || 10000 }),
    };

    const lines = readline.createInterface({ input: process.stdin });
    for await (const line of lines) {
        if (!line.trim()) continue;
        const cmd = JSON.parse(line);
        if (cmd.cmd === 'quit') {
            await context.close();
            reply({ ok: true });
            return;
        }
        if (!(cmd.cmd in commands) && cmd.cmd !== 'eval') {
            throw new Error(`unknown command ${JSON.stringify(cmd.cmd)}`);
        }
        try {
            if (cmd.cmd === 'eval') {
                const value = await page.evaluate(`(async () => { ${cmd.js} })()`);
                reply({ ok: true, value: value === undefined ? null : value });
            } else {
                const response = await commands[cmd.cmd](cmd);
                reply({ ok: true, status: response ? response.status() : null });
            }
        } catch (e) {
            const message = String(e && e.message ? e.message : e);
            reply({ ok: false, error: cmd.cmd === 'eval' ? message : message.split('\n')[0], console: console.slice(-20) });
        }
    }
    // stdin closed without quit: close the browser anyway.
    await context.close();
}

main().then(
    () => process.exit(0),
    (e) => {
        reply({ ok: false, fatal: String(e && e.stack ? e.stack : e) });
        process.exit(1);
    },
);
