// Drives Debian's Chromium through the collector dashboard while a service-wide outage fires,
// for tests/tests/collector_dashboard.rs (launched as in dashboard.js: Debian's binary, the
// resolver guard, never a download).
//
// Usage: node dashboard_incident.js '<json config>'
//   config: {"userDataDir": DIR, "url": "http://127.0.0.1:P/", "service": "shop",
//            "screenshots": {"incident": PNG, "expanded": PNG, "reports": PNG},
//            "filter": "AS64503", "timeoutMs": 20000}
// Steps: open the page; wait for the incident card of `service` with narrower alerts folded
// under it; wait until the card's client figures and the heat map's "All" cell of the service
// come from the same window (they must then agree); read the card (visible text and the
// statistics hidden in its closed <details>), the strip and the heat map; screenshot; unfold
// the children (a click, which chooses no series; Enter folds them again); screenshot; filter the heat map (text, then top 3); press "Show its reports" and
// read the reports table; screenshot. Prints ONE JSON line:
//   {"ok": true, "incidents": [{id, label, inhibited, headline, visibleText, statsText,
//    foldSummary, foldCount, childIds, childInhibitedBy, foldOpen}], "firstCardId",
//    "sameWindow": {card: {failing, active, ratio, t}, cell: {...}},
//    "strip": [{label, child, firing, cells}], "heat": {filtered: {note, keys}, top: {keys}},
//    "reports": {note, rows: [{service, type, asn, country}], form: {...}},
//    "consoleErrors", "pageErrors", "failedRequests", "screenshots"}
// With "mode": "recent" (after the outage resolved): wait for Recent to list the resolved alert
// with the ones it covered indented under it, read its rows {id, child, label} and screenshot
// to screenshots.recent.
// or {"ok": false, "error": MESSAGE, ...what was seen so far} (exit 1).
'use strict';

const { runPageScript } = require('./launch');

runPageScript({ viewport: { width: 1280, height: 900 }, seen: { screenshots: [] } }, async ({ config, timeout, page, seen }) => {
    const shots = config.screenshots;

    if (config.mode === 'recent') {
        // After the outage: the resolved alert in Recent, the ones it covered under it.
        await page.waitForFunction(() => document.querySelector('#recent tbody tr.child'), null, { timeout, polling: 200 });
        seen.recent = await page.evaluate(() => [...document.querySelectorAll('#recent tbody tr')].map((tr) => ({
            id: tr.dataset.alertId,
            child: tr.classList.contains('child'),
            label: tr.querySelector('th').textContent,
        })));
        seen.firingText = await page.textContent('#firing');
        await page.screenshot({ path: shots.recent, fullPage: true });
        seen.screenshots.push(shots.recent);
        return;
    }

    // The incident: the service's card, children folded under it.
    await page.waitForFunction(
        (service) => [...document.querySelectorAll('#firing > .card')].some(
            (c) => c.querySelector('.label').textContent === service && c.querySelector('details.children')),
        config.service,
        { timeout, polling: 200 },
    );
    // Card and map from one window: wait for a render where both show the same window.
    await page.waitForFunction(
        (service) => {
            const card = [...document.querySelectorAll('#firing > .card')].find(
                (c) => c.querySelector('.label').textContent === service);
            const cell = [...document.querySelectorAll('#heatmap td.cell.all')].find((td) => td.dataset.row === service);
            return card && cell && card.dataset.t && card.dataset.t === cell.dataset.t;
        },
        config.service,
        { timeout, polling: 100 },
    );
    Object.assign(seen, await page.evaluate((service) => {
        const pick = (d) => ({ failing: Number(d.failing), active: Number(d.active), ratio: Number(d.ratio), t: Number(d.t) });
        const card = [...document.querySelectorAll('#firing > .card')].find((c) => c.querySelector('.label').textContent === service);
        const cell = [...document.querySelectorAll('#heatmap td.cell.all')].find((td) => td.dataset.row === service);
        return {
            firstCardId: document.querySelector('#firing > .card').dataset.alertId,
            firingCount: document.getElementById('firing-count').textContent,
            windowNote: document.getElementById('window-note').textContent,
            incidents: [...document.querySelectorAll('#firing > .card')].map((c) => {
                const fold = c.querySelector('details.children');
                const kids = fold ? [...fold.querySelectorAll('.card.child')] : [];
                return {
                    id: c.dataset.alertId,
                    label: c.querySelector('.label').textContent,
                    inhibited: c.dataset.inhibited,
                    headline: c.querySelector('.headline').textContent,
                    visibleText: c.innerText,
                    statsText: (c.querySelector('details.stats') || {}).textContent || '',
                    foldSummary: fold ? fold.querySelector('summary').textContent : null,
                    foldCount: fold ? Number(fold.dataset.count) : 0,
                    foldOpen: fold ? fold.open : null,
                    childIds: kids.map((k) => k.dataset.alertId),
                    childInhibitedBy: kids.map((k) => k.dataset.inhibited),
                    childVisible: kids.some((k) => k.getBoundingClientRect().height > 0),
                };
            }),
            sameWindow: { card: pick(card.dataset), cell: pick(cell.dataset), cellOutlined: cell.classList.contains('alert') },
            strip: [...document.querySelectorAll('#strip tbody tr')].map((tr) => ({
                label: tr.dataset.label,
                child: tr.classList.contains('child'),
                firing: Number(tr.dataset.firing),
                cells: tr.querySelectorAll('td').length,
            })),
            stripNote: document.getElementById('strip-note').textContent,
        };
    }, config.service));
    await page.screenshot({ path: shots.incident, fullPage: true });
    seen.screenshots.push(shots.incident);

    // Unfold the children.
    await page.click('#firing > .card details.children summary');
    await page.waitForFunction(() => {
        const kid = document.querySelector('#firing details.children .card.child');
        return kid && kid.getBoundingClientRect().height > 0;
    }, null, { timeout, polling: 100 });
    seen.unfolded = await page.evaluate(() => document.querySelector('#firing details.children').open);
    await page.screenshot({ path: shots.expanded, fullPage: false });
    seen.screenshots.push(shots.expanded);
    // A poll re-renders the cards: what the reader unfolded stays unfolded.
    const before = await page.evaluate(() => Number(document.documentElement.dataset.refreshes));
    await page.waitForFunction((n) => Number(document.documentElement.dataset.refreshes) > n, before, { timeout, polling: 100 });
    seen.stillUnfolded = await page.evaluate(() => document.querySelector('#firing details.children').open);
    // Unfolding chose nothing; the keyboard folds them again.
    seen.seriesAfterUnfold = await page.evaluate(() => document.getElementById('series').dataset.slice || null);
    await page.focus('#firing > .card details.children summary');
    await page.keyboard.press('Enter');
    seen.keyboardFolded = await page.evaluate(() => !document.querySelector('#firing details.children').open);

    // Heat map columns: the filter and top-N run on the collector.
    await page.fill('#heat-controls input[name="filter"]', config.filter);
    await page.waitForFunction(
        (f) => document.getElementById('heat-note').textContent.includes('match “' + f + '”'),
        config.filter,
        { timeout, polling: 100 },
    );
    const columnKeys = () => page.evaluate(() => [...new Set([...document.querySelectorAll('#heatmap td.cell:not(.all)')].map((td) => td.dataset.key))]);
    seen.heat = { filtered: { note: await page.textContent('#heat-note'), keys: await columnKeys() } };
    await page.fill('#heat-controls input[name="filter"]', '');
    await page.selectOption('#heat-controls select[name="top"]', '5');
    await page.waitForFunction(() => !document.getElementById('heat-note').textContent.includes('match'), null, { timeout, polling: 100 });
    seen.heat.top = { note: await page.textContent('#heat-note'), keys: await columnKeys() };

    // The reports of the incident, from its card.
    await page.click('#firing > .card button.show-reports');
    await page.waitForFunction(() => /reports? shown/.test(document.getElementById('reports-note').textContent), null, { timeout, polling: 100 });
    seen.reports = await page.evaluate(() => {
        const f = document.getElementById('reports-form').elements;
        return {
            note: document.getElementById('reports-note').textContent,
            form: { service: f.service.value, type: f.type.value, asn: f.asn.value, country: f.country.value },
            headers: [...document.querySelectorAll('#reports thead th')].map((th) => th.textContent),
            rows: [...document.querySelectorAll('#reports tbody tr')].map((tr) => ({ ...tr.dataset })),
            more: !document.getElementById('reports-more').hidden,
        };
    });
    // Then a filter typed by hand: one type, one network.
    await page.fill('#reports-form input[name="type"]', 'tcp.refused');
    await page.fill('#reports-form input[name="asn"]', config.filter.replace(/^AS/, ''));
    await page.click('#reports-form button[type="submit"]');
    await page.waitForFunction(
        (asn) => {
            const rows = [...document.querySelectorAll('#reports tbody tr')];
            return rows.length > 0 && rows.every((tr) => tr.dataset.asn === asn);
        },
        config.filter.replace(/^AS/, ''),
        { timeout, polling: 100 },
    );
    seen.reportsFiltered = await page.evaluate(() => [...document.querySelectorAll('#reports tbody tr')].map((tr) => ({ ...tr.dataset })));
    await page.fill('#reports-form input[name="asn"]', 'sixty');
    await page.click('#reports-form button[type="submit"]');
    await page.waitForFunction(() => /Cannot load/.test(document.getElementById('reports-note').textContent), null, { timeout, polling: 100 });
    seen.reportsError = await page.textContent('#reports-note');
    await page.fill('#reports-form input[name="asn"]', config.filter.replace(/^AS/, ''));
    await page.click('#reports-form button[type="submit"]');
    await page.waitForFunction(() => /reports? shown/.test(document.getElementById('reports-note').textContent), null, { timeout, polling: 100 });
    await page.screenshot({ path: shots.reports, fullPage: true });
    seen.screenshots.push(shots.reports);
});
