// Drives Debian's Chromium through the collector dashboard for tests/tests/collector_dashboard.rs.
// Never downloads a browser: playwright-core talks to /usr/bin/chromium (or $CHROMIUM) over CDP,
// launched as in driver.js, with the same resolver guard ("MAP * ~NOTFOUND, EXCLUDE 127.0.0.1":
// no name ever reaches a real resolver; the dashboard is on an IP literal anyway).
//
// Usage: node dashboard.js '<json config>'
//   config: {"userDataDir": DIR, "url": "http://127.0.0.1:P/", "screenshot": PATH,
//            "alertLabel": "shop / AS64503", "row": "shop", "key": "64503",
//            "timeoutMs": 20000}
// Steps: open the page; wait until a firing alert card shows alertLabel and the heat map cell
// (row, key) carries a data-alert; read every card and cell; click the cell; wait until the
// series of that slice is drawn; save a full-page screenshot; then switch the heat map to
// countries and to colour by failing clients, and read it again; open `?alert=ID` (the link in
// notifications) in a new tab and wait for that alert's series, and an unknown id for its
// status note; last, read the page in a tab with JavaScript off. Prints ONE JSON line:
//   (cells and countryCells leave out the whole-service "All" column)
//   {"ok": true, "cards": [{id, label, kind, inhibited, text}], "cells": [{row, key, ratio,
//    failing, active, alert, title, outlined}], "series": {label, slice, points, paths: {cls: d}},
//    "selectedCell": bool, "linked": {slice, hash, search, selectedCards}, "linkedMissing": TEXT,
//    "countryCells": [{row, key, dim, ratio, failing, shown}], "legend",
//    "noScript": {text, refreshes},
//    "consoleErrors": [...], "pageErrors": [...], "failedRequests": [...],
//    "screenshot": PATH}
// or {"ok": false, "error": MESSAGE, ...what was seen so far} (exit 1).
'use strict';

const { runPageScript } = require('./launch');

// CSS.escape exists in the page, not in node: enough of it for attribute values.
const CSS = { escape: (s) => String(s).replace(/["\\]/g, '\\$&') };

runPageScript({ viewport: { width: 1280, height: 900 } }, async ({ config, timeout, page, seen, context, response }) => {
    seen.status = response ? response.status() : null;
    seen.csp = response ? response.headers()['content-security-policy'] || null : null;

    // The page polls every 5 s: wait for a render that has the alert and its cell.
    await page.waitForFunction(
        ({ label, row, key }) => {
            const cards = [...document.querySelectorAll('#firing .card .label')];
            const cell = [...document.querySelectorAll('#heatmap td.cell')].find(
                (td) => td.dataset.row === row && td.dataset.key === key,
            );
            return cards.some((c) => c.textContent === label) && cell && cell.dataset.alert !== '';
        },
        { label: config.alertLabel, row: config.row, key: config.key },
        { timeout, polling: 200 },
    );

    const snapshot = await page.evaluate(() => ({
        cards: [...document.querySelectorAll('#firing .card')].map((c) => ({
            id: c.dataset.alertId,
            label: c.querySelector('.label').textContent,
            kind: c.dataset.kind,
            inhibited: c.dataset.inhibited,
            text: c.textContent,
        })),
        cells: [...document.querySelectorAll('#heatmap td.cell:not(.all)')].map((td) => ({
            row: td.dataset.row,
            key: td.dataset.key,
            ratio: td.dataset.ratio === '' ? null : Number(td.dataset.ratio),
            failing: Number(td.dataset.failing),
            active: Number(td.dataset.active),
            alert: td.dataset.alert,
            title: td.title,
            outlined: getComputedStyle(td.querySelector('button')).outlineStyle !== 'none',
            background: td.querySelector('button').style.background,
        })),
        headings: [...document.querySelectorAll('h1, h2')].map((h) => h.textContent.trim()),
    }));
    Object.assign(seen, snapshot);

    // Choose the cell: its series must be drawn.
    const selector = `#heatmap td.cell[data-row="${CSS.escape(config.row)}"][data-key="${CSS.escape(config.key)}"] button`;
    await page.click(selector, { timeout });
    const slice = config.alertLabel;
    await page.waitForFunction(
        (want) => {
            const box = document.getElementById('series');
            return box.dataset.slice === want && box.querySelector('path.ratio') !== null;
        },
        slice,
        { timeout, polling: 100 },
    );
    seen.series = await page.evaluate(() => {
        const box = document.getElementById('series');
        const paths = {};
        for (const p of box.querySelectorAll('path')) paths[p.getAttribute('class')] = p.getAttribute('d');
        return {
            label: document.getElementById('series-label').textContent,
            slice: box.dataset.slice,
            points: Number(box.dataset.points),
            charts: box.querySelectorAll('svg').length,
            paths,
        };
    });
    seen.selectedCell = await page.evaluate(
        (sel) => document.querySelector(sel).closest('td').classList.contains('selected'),
        selector,
    );
    await page.screenshot({ path: config.screenshot, fullPage: true });
    seen.screenshot = config.screenshot;

    // The toggles: countries as columns, then colour by failing clients.
    await page.check('input[name="dim"][value="country"]');
    await page.waitForSelector('#heatmap td.cell[data-dim="country"]', { timeout });
    await page.check('input[name="colour"][value="failing"]');
    seen.countryCells = await page.evaluate(() =>
        [...document.querySelectorAll('#heatmap td.cell:not(.all)')].map((td) => ({
            row: td.dataset.row,
            key: td.dataset.key,
            dim: td.dataset.dim,
            ratio: td.dataset.ratio === '' ? null : Number(td.dataset.ratio),
            failing: Number(td.dataset.failing),
            shown: td.querySelector('button').textContent.replace(/^! /, ''),
        })),
    );
    seen.legend = await page.evaluate(() => document.getElementById('legend').textContent);

    // A notification's link, `/?alert=ID`, opens the page on that alert's slice; an unknown
    // id says so in the status line.
    const alertId = (seen.cards.find((c) => c.label === config.alertLabel) || {}).id;
    const linked = await context.newPage();
    await linked.goto(config.url + '?alert=' + encodeURIComponent(alertId), { timeout });
    await linked.waitForFunction(
        (want) => {
            const box = document.getElementById('series');
            return box.dataset.slice === want && box.querySelector('path.ratio') !== null;
        },
        config.alertLabel,
        { timeout, polling: 100 },
    );
    seen.linked = await linked.evaluate(() => ({
        slice: document.getElementById('series').dataset.slice,
        hash: location.hash,
        search: location.search,
        selectedCards: [...document.querySelectorAll('#firing .card.selected')].map((c) => c.dataset.alertId),
    }));
    await linked.goto(config.url + '?alert=ffffffffffffffff', { timeout });
    await linked.waitForFunction(() => /not among/.test(document.getElementById('status').textContent), null, {
        timeout,
        polling: 100,
    });
    seen.linkedMissing = await linked.evaluate(() => document.getElementById('status').textContent);
    await linked.close();

    // With JavaScript off the page still says what it is and where the data is.
    const plain = await context.newPage();
    const cdp = await context.newCDPSession(plain);
    await cdp.send('Emulation.setScriptExecutionDisabled', { value: true });
    await plain.goto(config.url, { timeout });
    seen.noScript = {
        text: await plain.innerText('body'),
        refreshes: await plain.getAttribute('html', 'data-refreshes'),
    };
});
