// Drives Debian's Chromium for Vantage's browser tests, one command per line on stdin, one JSON
// answer per line on stdout. Never downloads a browser: playwright-core talks to
// /usr/bin/chromium (or $CHROMIUM) over CDP.
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
//   {"cmd": "quit"} -> {"ok": true}, then the browser closes and the process exits 0.
// Anything unexpected -> {"ok": false, "fatal": MESSAGE} and exit 1.
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

    const lines = readline.createInterface({ input: process.stdin });
    for await (const line of lines) {
        if (!line.trim()) continue;
        const cmd = JSON.parse(line);
        if (cmd.cmd === 'goto') {
            try {
                const response = await page.goto(cmd.url, { timeout: cmd.timeoutMs || 10000 });
                reply({ ok: true, status: response ? response.status() : null });
            } catch (e) {
                reply({ ok: false, error: String(e.message).split('\n')[0] });
            }
        } else if (cmd.cmd === 'quit') {
            await context.close();
            reply({ ok: true });
            return;
        } else {
            throw new Error(`unknown command ${JSON.stringify(cmd.cmd)}`);
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
