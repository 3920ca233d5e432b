// Vantage collector dashboard: polls the admin JSON API (/v1/alerts, /v1/heatmap, /v1/strip,
// /v1/series, /v1/agent_drops) every 5 s and draws incident cards (children folded under their
// parent), a slices x time strip, a heat map table, inline SVG series and the agent drop counts;
// lists /v1/reports on demand. No framework, no
// build step, no external origin. Text from the API only ever goes through textContent and
// setAttribute, never through an HTML parser, so a hostile service name stays text.
'use strict';

(function () {
  const POLL_MS = 5000;
  const SVG_NS = 'http://www.w3.org/2000/svg';
  // Viridis stops after a pale start, light (no failures) to dark (all failing): readable
  // with common colour blindness and in greyscale, since lightness falls monotonically.
  const RAMP = ['#fcfdbf', '#fde725', '#5ec962', '#21918c', '#3b528b', '#440154'];

  const state = {
    dim: 'asn',
    colour: 'ratio',
    top: '40',
    sort: 'failing',
    filter: '',
    strip: null,
    reports: { query: null, cursor: null, rows: 0 },
    selected: null, // {service, dim: 'service'|'asn'|'country', key}
    alerts: null,
    heat: null,
    refreshes: 0,
    seq: 0,
    timer: null,
    // `?alert=ID` (the link in notifications): selected once the alert list is in.
    linkedAlert: new URLSearchParams(location.search).get('alert'),
    linkMissing: null,
  };
  const $ = (id) => document.getElementById(id);

  // small DOM helpers
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(typeof c === 'string' || typeof c === 'number' ? String(c) : c);
    }
    return node;
  }
  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function setAttrs(node, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined && v !== false) node.setAttribute(k, String(v));
    }
  }

  // formatting
  function iso(ms) {
    return ms === null || ms === undefined ? '—' : new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
  }
  function clock(ms) {
    return new Date(ms).toISOString().slice(11, 19);
  }
  function pct(r) {
    if (r === null || r === undefined) return '–';
    const p = r * 100;
    if (p === 0) return '0 %';
    return (p < 1 ? p.toFixed(2) : p < 10 ? p.toFixed(1) : p.toFixed(0)) + ' %';
  }
  function duration(ms) {
    if (ms > 0 && ms < 10000 && ms % 1000) return (ms / 1000).toFixed(1) + ' s';
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 120) return s + ' s';
    const m = Math.round(s / 60);
    return m < 120 ? m + ' min' : (m / 60).toFixed(1) + ' h';
  }
  function dimLabel(dim, key) {
    return dim === 'asn' ? 'AS' + key : key;
  }
  function sliceLabel(sel) {
    return sel.dim === 'service' ? sel.service : sel.service + ' / ' + dimLabel(sel.dim, sel.key);
  }

  // colour
  function hexRgb(h) {
    return [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16));
  }
  function rampColour(t) {
    const x = Math.min(1, Math.max(0, t)) * (RAMP.length - 1);
    const i = Math.min(RAMP.length - 2, Math.floor(x));
    const [a, b] = [hexRgb(RAMP[i]), hexRgb(RAMP[i + 1])];
    const f = x - i;
    return 'rgb(' + a.map((v, j) => Math.round(v + (b[j] - v) * f)).join(',') + ')';
  }

  // slices
  // An alert's slice as a series selection (service, failure group, ASN or country).
  function selectionOf(slice) {
    const d = slice.dim || {};
    if (d.kind === 'asn' || d.kind === 'country' || d.kind === 'group') {
      return { service: slice.service, dim: d.kind, key: String(d.value) };
    }
    return { service: slice.service, dim: 'service', key: '' };
  }
  function sameSelection(a, b) {
    return !!a && !!b && a.service === b.service && a.dim === b.dim && a.key === b.key;
  }
  // The query naming a slice, for /v1/series and for the page's #fragment.
  function sliceQuery(sel) {
    const q = new URLSearchParams({ service: sel.service });
    if (sel.dim !== 'service') {
      q.set('dim', sel.dim);
      q.set('key', sel.key);
    }
    return q.toString();
  }
  function select(sel) {
    state.selected = sel;
    history.replaceState(null, '', '#' + sliceQuery(sel));
    markSelection();
    loadSeries();
  }
  function selectionFromHash() {
    const q = new URLSearchParams(location.hash.slice(1));
    const service = q.get('service');
    if (!service) return null;
    const dim = q.get('dim');
    return dim === 'asn' || dim === 'country' || dim === 'group'
      ? { service, dim, key: q.get('key') || '' }
      : { service, dim: 'service', key: '' };
  }

  // fetching
  // With server.admin_token_file set, the API answers 401 until the page sends the token: it is
  // asked for once per tab and kept in sessionStorage (never in a URL, gone with the tab).
  const TOKEN_KEY = 'vantage-admin-token';
  let asking = null;
  let declined = false;
  function headers() {
    const h = { accept: 'application/json' };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) h.authorization = 'Bearer ' + token;
    return h;
  }
  function askToken() {
    if (declined) return Promise.resolve(false);
    asking ??= new Promise((resolve) => {
      setTimeout(() => {
        const token = (window.prompt('Admin token for this collector:') || '').trim();
        if (token) sessionStorage.setItem(TOKEN_KEY, token);
        else declined = true;
        asking = null;
        resolve(!!token);
      }, 0);
    });
    return asking;
  }
  async function getJson(url) {
    let r = await fetch(url, { cache: 'no-store', headers: headers() });
    if (r.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      if (await askToken()) r = await fetch(url, { cache: 'no-store', headers: headers() });
    }
    let body = null;
    try {
      body = await r.json();
    } catch (_) {
      body = null;
    }
    if (!r.ok) {
      const err = new Error((body && body.error) || url + ': HTTP ' + r.status);
      err.status = r.status;
      throw err;
    }
    return body;
  }

  // One poll; a newer call (a toggle) supersedes one in flight, so only the newest renders
  // and only one timer chain exists.
  async function refresh() {
    clearTimeout(state.timer);
    const seq = ++state.seq;
    const status = $('status');
    try {
      const [alerts, heat, strip, drops] = await Promise.all([
        getJson('/v1/alerts'),
        getJson('/v1/heatmap?dim=' + encodeURIComponent(state.dim) + heatParams()),
        getJson('/v1/strip'),
        getJson('/v1/agent_drops'),
      ]);
      if (seq !== state.seq) return;
      state.alerts = alerts;
      state.heat = heat;
      state.strip = strip;
      const missing = followAlertLink();
      renderFiring();
      renderRecent();
      renderDrops(drops);
      renderHeat();
      renderStrip();
      if (state.selected) await loadSeries();
      state.refreshes += 1;
      document.documentElement.dataset.refreshes = String(state.refreshes);
      status.classList.remove('error');
      status.textContent =
        'Updated ' + iso(alerts.now_ms) + '.' + (missing ? ' Alert ' + missing + ' is not among the firing or recent alerts.' : '');
    } catch (e) {
      if (seq !== state.seq) return;
      status.classList.add('error');
      status.textContent = 'Cannot load data: ' + e.message + ' (retrying).';
    }
    if (seq === state.seq) state.timer = setTimeout(refresh, POLL_MS);
  }

  // firing alerts
  function labelOfId(id) {
    const all = [...(state.alerts.firing || []), ...(state.alerts.recent || [])];
    const a = all.find((x) => x.id === id);
    return a ? a.label : id;
  }
  function topText(list, fmt) {
    return list && list.length ? list.map(([k, n]) => fmt(k) + ' (' + n + ')').join(', ') : '–';
  }
  // Plain words for failure groups (the detector's breakdown keys).
  const GROUP_WORDS = {
    dns: 'DNS lookups', tcp: 'connections', tls: 'TLS handshakes', http: 'HTTP errors',
    other: 'other failures', unreported: 'failures without a report',
  };
  function causeText(b) {
    const parts = Object.entries(b || {}).sort((x, y) => y[1] - x[1]);
    return parts.length ? parts.map(([k, n]) => (GROUP_WORDS[k] || k) + ' (' + n + ' failures)').join(', ') : '–';
  }
  function plural(n, one, many) {
    return n + ' ' + (n === 1 ? one : many);
  }
  // The window every figure on the page comes from (cards, heat map, strip).
  function windowText() {
    const a = state.alerts;
    return 'the last ' + duration(a.window_ms) + ' up to ' + clock(a.now_ms) + 'Z';
  }
  // "120 of 120 clients failing on 40 networks": the current window (the heat map's figures),
  // networks from the alert (the most failing networks in one window since it began).
  function plainNow(a) {
    const w = a.window;
    if (a.kind === 'silence') {
      const now = w ? w.active_clients : a.clients;
      return now + ' of ' + plural(a.active_clients, 'expected client', 'expected clients') + ' reporting';
    }
    if (!w) return plural(a.clients, 'client', 'clients') + ' failing on ' + plural(a.networks, 'network', 'networks') + ' (no fresh window)';
    return w.failing_clients + ' of ' + plural(w.active_clients, 'client', 'clients') + ' failing on '
      + plural(a.networks, 'network', 'networks');
  }
  function plainRatio(a) {
    const w = a.window;
    if (a.kind === 'silence' || !w || w.failure_ratio === null || w.failure_ratio === undefined) return null;
    return pct(w.failure_ratio) + ' of their requests fail (usually ' + pct(w.baseline_ratio) + ')';
  }

  function alertCard(a, children) {
    const inhibited = !!a.inhibited_by;
    const child = children === null;
    const w = a.window || {};
    const card = el(child ? 'li' : 'article', {
      class: 'card' + (inhibited ? ' inhibited' : '') + (child ? ' child' : ' incident'),
      tabindex: 0,
      'data-alert-id': a.id,
      'data-kind': a.kind,
      'data-inhibited': inhibited ? a.inhibited_by : '',
      'data-failing': w.failing_clients,
      'data-active': w.active_clients,
      'data-ratio': w.failure_ratio,
      'data-t': w.t_ms,
      'aria-label': a.label + ', ' + a.kind + (inhibited ? ', covered by ' + labelOfId(a.inhibited_by) : '') + '. Show its series.',
    });
    const h = el(child ? 'h4' : 'h3', null, el('span', { class: 'label' }, a.label));
    h.append(el('span', { class: 'badge kind-' + a.kind }, a.kind === 'failures' ? 'failing' : a.kind));
    if (inhibited && !child) h.append(el('span', { class: 'badge inhibited' }, 'not notified'));
    card.append(h);
    card.append(el('p', { class: 'headline', title: 'Clients: ' + windowText() + '. Networks: the most with failing clients in one window since it began.' }, plainNow(a)));
    if (child) return card;
    const ratio = plainRatio(a);
    if (ratio) card.append(el('p', { class: 'plain' }, ratio));
    const rows = [
      ['Since', clock(a.start_ms) + 'Z (' + duration(state.alerts.now_ms - a.start_ms) + ' ago)'],
      ['What fails', a.kind === 'silence' ? 'clients stopped reporting' : causeText(a.breakdown)],
      ['Where', topText(a.top_asns, (k) => 'AS' + k) + '; ' + topText(a.top_countries, (k) => k) + ' (failing clients)'],
      ['Covered by', inhibited ? labelOfId(a.inhibited_by) + ' (this one is not notified)' : null],
    ];
    const dl = el('dl');
    for (const [k, v] of rows) {
      if (v !== null) dl.append(el('dt', null, k), el('dd', null, v));
    }
    card.append(dl);
    const stats = el('details', { class: 'stats' }, el('summary', null, 'Statistics'));
    stats.append(el('p', { class: 'note' },
      'Evidence −ln p = ' + Number(a.score).toFixed(1) + ' (how unlikely this is under the baseline; larger is stronger). '
      + 'When raised: failure ratio ' + pct(a.observed_ratio) + ' vs baseline ' + pct(a.baseline_ratio) + ', '
      + a.clients + ' failing of ' + a.active_clients + ' active clients. Alert ' + a.id + '.'));
    card.append(stats);
    card.append(el('p', { class: 'actions' }, el('button', { type: 'button', class: 'show-reports', 'data-alert-id': a.id }, 'Show its reports')));
    if (children && children.length) {
      const names = children.slice(0, 3).map((c) => c.label.replace(a.slice.service + ' / ', '')).join(', ');
      const fold = el('details', { class: 'children', 'data-count': children.length });
      fold.append(el('summary', null, '+ ' + plural(children.length, 'narrower alert', 'narrower alerts')
        + ' (' + names + (children.length > 3 ? ', …' : '') + '), covered by this one'));
      const list = el('ul', { class: 'child-list' });
      for (const c of children) list.append(alertCard(c, null));
      fold.append(list);
      card.append(fold);
    }
    return card;
  }

  // The alert at the top of a's chain of covering alerts (among those in byId).
  function rootOf(a, byId) {
    for (let n = 0; n < 8 && a.inhibited_by && byId.has(a.inhibited_by); n++) a = byId.get(a.inhibited_by);
    return a;
  }

  // One card per incident: an alert that notifies, with the alerts it covers (inhibited_by
  // it) folded under it. An alert whose parent is not firing stands alone.
  function renderFiring() {
    const firing = state.alerts.firing || [];
    const byId = new Map(firing.map((a) => [a.id, a]));
    const parents = firing.filter((a) => rootOf(a, byId) === a);
    const incidents = parents.length;
    $('firing-count').textContent = '(' + plural(incidents, 'incident', 'incidents')
      + (firing.length > incidents ? ', ' + firing.length + ' alerts' : '') + ')';
    $('window-note').textContent = firing.length
      ? 'Client counts on cards, the heat map and the strip all come from ' + windowText() + '.'
      : '';
    const box = $('firing');
    const open = new Set([...box.querySelectorAll('details[open]')].map((d) => (d.closest('[data-alert-id]') || {}).dataset?.alertId + '/' + d.className));
    box.replaceChildren();
    if (!firing.length) {
      box.append(el('p', { class: 'empty' }, 'Nothing is firing.'));
      return;
    }
    // Incidents that notify first; newest first within each.
    const sorted = [...parents.filter((a) => !a.inhibited_by), ...parents.filter((a) => a.inhibited_by)];
    for (const a of sorted) {
      // Children: failure groups, then ASNs, then countries, each by name.
      const order = { group: 0, asn: 1, country: 2 };
      const children = firing.filter((c) => c !== a && rootOf(c, byId) === a).sort((x, y) =>
        (order[x.slice.dim.kind] ?? 3) - (order[y.slice.dim.kind] ?? 3) || x.label.localeCompare(y.label));
      const card = alertCard(a, children);
      // A poll keeps what the reader unfolded.
      for (const d of card.querySelectorAll('details')) {
        if (open.has(a.id + '/' + d.className)) d.open = true;
      }
      box.append(card);
    }
    markSelection();
  }

  // recent alerts
  function renderRecent() {
    const recent = state.alerts.recent || [];
    $('recent-count').textContent = '(' + recent.length + ')';
    const table = $('recent');
    table.replaceChildren();
    if (!recent.length) {
      table.append(el('caption', { class: 'empty' }, 'No resolved or retrospective alerts.'));
      return;
    }
    const head = el('tr');
    for (const h of ['Alert', 'Kind', 'Start', 'End', 'Lasted', 'Clients', 'Networks', 'Ratio when raised (usual)']) {
      head.append(el('th', { scope: 'col' }, h));
    }
    const body = el('tbody');
    // Each alert that notified, then the narrower ones it covered, indented under it.
    const ids = new Set(recent.map((a) => a.id));
    const ordered = [];
    for (const p of recent.filter((a) => !a.inhibited_by || !ids.has(a.inhibited_by))) {
      ordered.push(p, ...recent.filter((c) => c.inhibited_by === p.id));
    }
    // (A chain of covering alerts: nothing is left out.)
    ordered.push(...recent.filter((a) => !ordered.includes(a)));
    for (const a of ordered) {
      const end = a.end_ms === null || a.end_ms === undefined ? null : a.end_ms;
      const child = !!a.inhibited_by && ids.has(a.inhibited_by);
      const tr = el('tr', { tabindex: 0, 'data-alert-id': a.id, 'data-kind': a.kind, class: child ? 'child' : null });
      tr.append(
        el('th', { scope: 'row', title: child ? 'covered by ' + labelOfId(a.inhibited_by) : null }, (child ? '↳ ' : '') + a.label),
        el('td', null, a.kind),
        el('td', null, iso(a.start_ms)),
        el('td', null, iso(end)),
        el('td', null, end === null ? '–' : duration(end - a.start_ms)),
        el('td', null, a.clients),
        el('td', null, a.networks),
        el('td', null, a.kind === 'silence' ? '–' : pct(a.observed_ratio) + ' (' + pct(a.baseline_ratio) + ')'),
      );
      body.append(tr);
    }
    table.append(el('thead', null, head), body);
  }

  // Agent drop counts: one row per reason with drops (all zero: a caption says so).
  function renderDrops(drops) {
    const reasons = (drops && drops.reasons) || [];
    const total = (drops && drops.total) || 0;
    const count = $('drops-count');
    count.textContent = '(' + total + ')';
    count.dataset.total = String(total);
    const table = $('drops');
    table.replaceChildren();
    const rows = reasons.filter((r) => r.count > 0);
    if (!rows.length) {
      table.append(el('caption', { class: 'empty' }, 'No agent reported dropping anything.'));
      return;
    }
    const head = el('tr');
    for (const h of ['Reason', 'Reports dropped', 'Share']) head.append(el('th', { scope: 'col' }, h));
    const body = el('tbody');
    for (const r of rows) {
      body.append(
        el(
          'tr',
          { 'data-reason': r.reason, 'data-count': r.count },
          el('th', { scope: 'row' }, r.reason),
          el('td', null, r.count),
          el('td', null, pct(r.count / total)),
        ),
      );
    }
    table.append(el('thead', null, head), body);
  }

  // heat map
  // Ratios on a square-root scale, so 1 % and 10 % differ visibly; counts linear to the max.
  function cellValue(c, maxFailing) {
    if (state.colour === 'failing') return c.failing_clients / maxFailing;
    return c.failure_ratio === null || c.failure_ratio === undefined ? null : Math.sqrt(c.failure_ratio);
  }

  // Top-N, ranking and the filter run on the collector: the page never holds thousands of columns.
  function heatParams() {
    const q = new URLSearchParams({ top: state.top, sort: state.sort });
    if (state.filter) q.set('filter', state.filter);
    return '&' + q.toString();
  }

  function renderHeat() {
    const heat = state.heat;
    const table = $('heatmap');
    table.replaceChildren();
    const columns = heat.columns || [];
    const rows = heat.rows || [];
    const cells = new Map();
    let maxFailing = 1;
    for (const c of heat.cells || []) {
      cells.set(c.row + '\u0000' + c.key, c);
      maxFailing = Math.max(maxFailing, c.failing_clients);
    }
    const what = heat.dim === 'country' ? 'countries' : 'ASNs';
    const totals = new Map((heat.totals || []).map((t) => [t.row, t]));
    for (const t of heat.totals || []) maxFailing = Math.max(maxFailing, t.failing_clients);
    const shown = 'Showing ' + columns.length + ' of ' + (heat.columns_total ?? columns.length) + ' ' + what
      + (heat.filter ? ' (' + heat.columns_matched + ' match “' + heat.filter + '”)' : '')
      + ', most ' + (heat.sort === 'active' ? 'active' : 'failing') + ' clients first. ';
    $('heat-note').textContent = rows.length
      ? shown + 'Services × ' + what + ', the last ' + duration(heat.window_ms) + ' up to ' + clock(heat.now_ms)
       + 'Z; colour = ' + (state.colour === 'ratio' ? 'mean per-client failure ratio' : 'failing clients')
       + '. An outlined cell has a firing alert; “All” is the whole service. Choose a cell for its series.'
      : 'No data in the current window yet.';
    if (!rows.length) {
      renderLegend(maxFailing, false);
      return;
    }
    table.append(el('caption', { class: 'note' }, 'Heat map of services by ' + what));
    const head = el('tr', null, el('th', { scope: 'col' }, 'Service'), el('th', { scope: 'col', class: 'all', title: 'All of the service\'s clients' }, 'All'));
    for (const col of columns) {
      head.append(el('th', { scope: 'col', title: col.label + ': ' + col.active_clients + ' active clients' }, col.label));
    }
    const body = el('tbody');
    for (const row of rows) {
      const tr = el('tr', null, el('th', { scope: 'row' }, row));
      const total = totals.get(row);
      tr.append(total ? heatCell(row, { key: '', label: 'all clients' }, total, maxFailing, 'service')
        : el('td', { class: 'nodata', title: row + ': no data' }));
      for (const col of columns) {
        const c = cells.get(row + '\u0000' + col.key);
        if (!c) {
          tr.append(el('td', { class: 'nodata', title: row + ' × ' + col.label + ': no data' }));
          continue;
        }
        tr.append(heatCell(row, col, c, maxFailing, heat.dim));
      }
      body.append(tr);
    }
    table.append(el('thead', null, head), body);
    renderLegend(maxFailing, true);
    markSelection();
  }

  function heatCell(row, col, c, maxFailing, dim) {
    const ratio = c.failure_ratio === null || c.failure_ratio === undefined ? null : c.failure_ratio;
    const tip = row + ' × ' + col.label + ': ' + c.failing_clients + ' of ' + c.active_clients
      + ' clients failing, failure ratio ' + pct(ratio) + ' (usually ' + pct(c.baseline_ratio) + ')'
      + (c.alert ? '; firing alert ' + labelOfId(c.alert) : '');
    const td = el('td', {
      class: 'cell' + (c.alert ? ' alert' : '') + (dim === 'service' ? ' all' : ''),
      title: tip,
      'data-row': row,
      'data-key': col.key,
      'data-dim': dim,
      'data-ratio': ratio === null ? '' : ratio,
      'data-failing': c.failing_clients,
      'data-active': c.active_clients,
      'data-alert': c.alert || '',
      'data-t': c.t_ms,
    });
    const v = cellValue(c, maxFailing);
    const text = state.colour === 'failing' ? String(c.failing_clients) : ratio === null ? '–' : pct(ratio).replace(' ', '');
    const button = el('button', { type: 'button', 'aria-label': tip }, (c.alert ? '! ' : '') + text);
    if (v !== null) {
      button.style.background = rampColour(v);
      button.style.color = v > 0.55 ? '#fff' : '#1d1f23';
    }
    td.append(button);
    return td;
  }

  function renderLegend(maxFailing, shown) {
    const box = $('legend');
    box.replaceChildren();
    if (!shown) return;
    const ramp = el('span', { class: 'ramp' });
    ramp.style.background = 'linear-gradient(to right, ' + RAMP.join(', ') + ')';
    const ticks = state.colour === 'ratio'
      ? [0, 0.05, 0.25, 0.5, 1].map((r) => [Math.sqrt(r), pct(r)])
      : [0, 0.5, 1].map((f) => [f, String(Math.round(f * maxFailing))]);
    for (const [at, text] of ticks) {
      const tick = el('span', { class: 'tick' }, text);
      tick.style.left = (at * 100).toFixed(1) + '%';
      ramp.append(tick);
    }
    const what = state.colour === 'ratio' ? 'failure ratio' : 'failing clients';
    box.append(el('span', null, what), ramp, el('span', { class: 'mark' }), el('span', null, 'firing alert'));
  }

  function markSelection() {
    const sel = state.selected;
    for (const td of document.querySelectorAll('#heatmap td.cell')) {
      const d = td.dataset;
      td.classList.toggle('selected', !!sel && sel.service === d.row && sel.dim === d.dim && sel.key === d.key);
    }
    for (const card of document.querySelectorAll('#firing .card')) {
      const a = (state.alerts.firing || []).find((x) => x.id === card.dataset.alertId);
      card.classList.toggle('selected', !!a && sameSelection(selectionOf(a.slice), sel));
    }
  }

  // series
  async function loadSeries() {
    const sel = state.selected;
    if (!sel) return;
    const label = $('series-label');
    try {
      const s = await getJson('/v1/series?' + sliceQuery(sel));
      if (!sameSelection(sel, state.selected)) return; // a newer choice won
      renderSeries(s, sel);
    } catch (e) {
      if (!sameSelection(sel, state.selected)) return;
      $('series').replaceChildren();
      $('series').removeAttribute('data-slice');
      label.textContent = e.status === 404 ? 'No data for ' + sliceLabel(sel) + ' in the last hour.' : 'Cannot load the series: ' + e.message;
    }
  }

  // A path through the points with a value, broken where the value is missing.
  function linePath(points, x, y, value) {
    let d = '';
    let pen = false;
    for (const p of points) {
      const v = value(p);
      if (v === null || v === undefined) {
        pen = false;
        continue;
      }
      d += (pen ? 'L' : 'M') + x(p.t_ms).toFixed(1) + ' ' + y(v).toFixed(1) + ' ';
      pen = true;
    }
    return d.trim();
  }

  function chart(opts) {
    const { points, lines, max, title, fmt, spans } = opts;
    const W = 760, H = 190, L = 56, R = 12, T = 22, B = 26;
    const t0 = points[0].t_ms;
    const t1 = Math.max(points[points.length - 1].t_ms, t0 + 1);
    const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
    const y = (v) => T + (1 - v / max) * (H - T - B);
    const root = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, width: W, height: H, role: 'img', 'aria-label': title });
    root.append(svg('title', null, title));
    for (const [a, b] of spans) {
      const xa = x(Math.max(a, t0)), xb = x(Math.min(b, t1));
      if (xb > xa) root.append(svg('rect', { class: 'span', x: xa, y: T, width: xb - xa, height: H - T - B }));
    }
    for (const f of [0, 0.5, 1]) {
      root.append(svg('line', { class: 'axis', x1: L, x2: W - R, y1: y(max * f), y2: y(max * f) }));
      root.append(svg('text', { x: L - 6, y: y(max * f) + 4, 'text-anchor': 'end' }, fmt(max * f)));
    }
    for (const [t, anchor] of [[t0, 'start'], [(t0 + t1) / 2, 'middle'], [t1, 'end']]) {
      root.append(svg('text', { x: x(t), y: H - 8, 'text-anchor': anchor }, clock(t) + 'Z'));
    }
    let lx = L;
    for (const line of lines) {
      const d = linePath(points, x, y, line.value);
      if (d) root.append(svg('path', { class: line.cls, d }));
      root.append(svg('line', { class: line.cls, x1: lx, x2: lx + 18, y1: 10, y2: 10 }));
      root.append(svg('text', { x: lx + 22, y: 14 }, line.name));
      lx += 30 + line.name.length * 6.5;
    }
    return root;
  }

  function renderSeries(s, sel) {
    const box = $('series');
    const points = s.points || [];
    box.replaceChildren();
    box.dataset.slice = sliceLabel(sel);
    box.dataset.points = String(points.length);
    if (!points.length) {
      $('series-label').textContent = s.label + ': no points yet.';
      return;
    }
    const last = points[points.length - 1];
    $('series-label').textContent = s.label + ': ' + points.length + ' buckets of ' + duration(s.bucket_ms)
      + ', ' + iso(points[0].t_ms) + ' to ' + iso(last.t_ms) + '.';
    const spans = [...(state.alerts ? state.alerts.firing || [] : []), ...(state.alerts ? state.alerts.recent || [] : [])]
      .filter((a) => sameSelection(selectionOf(a.slice), sel))
      .map((a) => [a.start_ms, a.end_ms === null || a.end_ms === undefined ? last.t_ms : a.end_ms]);
    let maxRatio = 0.01;
    let maxClients = 1;
    for (const p of points) {
      maxRatio = Math.max(maxRatio, p.failure_ratio || 0, p.baseline_ratio || 0);
      maxClients = Math.max(maxClients, p.active_clients, p.failing_clients);
    }
    maxRatio = Math.min(1, maxRatio * 1.1);
    box.append(chart({
      points,
      spans,
      max: maxRatio,
      fmt: pct,
      title: 'Failure ratio of ' + s.label + ': latest ' + pct(last.failure_ratio) + ', baseline ' + pct(last.baseline_ratio),
      lines: [
        { cls: 'ratio', name: 'failure ratio', value: (p) => p.failure_ratio },
        { cls: 'baseline', name: 'baseline', value: (p) => p.baseline_ratio },
      ],
    }));
    box.append(chart({
      points,
      spans,
      max: Math.ceil(maxClients * 1.1),
      fmt: (v) => String(Math.round(v)),
      title: 'Clients of ' + s.label + ': latest ' + last.active_clients + ' active, ' + last.failing_clients + ' failing',
      lines: [
        { cls: 'active', name: 'active clients', value: (p) => p.active_clients },
        { cls: 'failing', name: 'failing clients', value: (p) => p.failing_clients },
      ],
    }));
  }

  // the last hour: slices x time
  function renderStrip() {
    const strip = state.strip;
    const table = $('strip');
    table.replaceChildren();
    const rows = strip.rows || [];
    if (!rows.length) {
      $('strip-note').textContent = 'No slice has data in the last hour yet.';
      return;
    }
    const n = strip.columns;
    $('strip-note').textContent = 'Which slices failed when: ' + n + ' columns of ' + duration(strip.column_ms)
      + ' from ' + clock(strip.from_ms) + 'Z to ' + clock(strip.to_ms ?? strip.now_ms) + 'Z; colour = highest failure ratio in the column; '
      + 'an outlined cell is within an alert (its start to its end, as on its card). Slices with an alert come first, under their service.'
      + (strip.more_rows ? ' ' + strip.more_rows + ' more not shown.' : '');
    const head = el('tr', null, el('th', { scope: 'col' }, 'Slice'));
    for (let i = 0; i < n; i += 10) {
      head.append(el('th', { scope: 'col', colspan: Math.min(10, n - i), class: 'time' }, clock(strip.from_ms + i * strip.column_ms) + 'Z'));
    }
    const body = el('tbody');
    for (const r of rows) {
      const sel = selectionOf(r.slice);
      const tr = el('tr', {
        tabindex: 0,
        class: (r.child ? 'child' : 'service') + (r.inhibited ? ' inhibited' : ''),
        'data-label': r.label,
        'data-service': sel.service,
        'data-dim': sel.dim,
        'data-key': sel.key,
        'data-firing': r.firing.filter(Boolean).length,
      });
      tr.append(el('th', { scope: 'row', title: r.label + (r.inhibited ? ' (covered by its service alert)' : '') }, r.label));
      for (let i = 0; i < n; i++) {
        const ratio = r.ratio[i];
        const t0 = strip.from_ms + i * strip.column_ms;
        const tip = r.label + ', ' + clock(t0) + '–' + clock(t0 + strip.column_ms) + 'Z: '
          + (ratio === null ? 'no data' : 'failure ratio up to ' + pct(ratio) + ', up to ' + r.failing[i] + ' failing clients')
          + (r.firing[i] ? '; alert firing' : '');
        const td = el('td', { class: r.firing[i] ? 'firing' : null, title: tip });
        if (ratio !== null) td.style.background = rampColour(Math.sqrt(ratio));
        tr.append(td);
      }
      body.append(tr);
    }
    table.append(el('thead', null, head), body);
  }

  // reports
  function reportQuery(form, cursor) {
    const q = new URLSearchParams();
    for (const name of ['service', 'type', 'asn', 'country']) {
      const v = form.elements[name].value.trim();
      if (v) q.set(name, v);
    }
    q.set('since', String(Date.now() - Number(form.elements.span.value)));
    q.set('limit', '50');
    if (cursor) q.set('cursor', cursor);
    return q;
  }
  async function loadReports(more) {
    const form = $('reports-form');
    const note = $('reports-note');
    const table = $('reports');
    const r = state.reports;
    if (!more) {
      r.query = reportQuery(form, null);
      r.rows = 0;
      r.scanned = 0;
    }
    const q = new URLSearchParams(r.query);
    if (more && r.cursor) q.set('cursor', r.cursor);
    note.textContent = 'Loading …';
    try {
      const page = await getJson('/v1/reports?' + q.toString());
      if (!more) {
        table.replaceChildren();
        const head = el('tr');
        for (const h of ['Time (UTC)', 'Service', 'Host', 'Type', 'Phase', 'Status', 'ASN', 'Country', 'Network', 'Source', 'Count']) {
          head.append(el('th', { scope: 'col' }, h));
        }
        table.append(el('thead', null, head), el('tbody'));
      }
      const body = table.querySelector('tbody');
      for (const x of page.reports) {
        body.append(el('tr', { 'data-service': x.service, 'data-type': x.type, 'data-asn': x.asn ?? '', 'data-country': x.country ?? '' },
          el('td', null, iso(x.event_ms)), el('td', null, x.service), el('td', null, x.host), el('td', null, x.type),
          el('td', null, x.phase), el('td', null, x.status ?? '–'), el('td', null, x.asn === null ? '–' : 'AS' + x.asn),
          el('td', null, x.country ?? '–'), el('td', null, x.network), el('td', null, x.source), el('td', null, x.count)));
      }
      r.rows += page.reports.length;
      r.scanned += page.scanned;
      r.cursor = page.next_cursor;
      $('reports-more').hidden = !r.cursor;
      note.textContent = plural(r.rows, 'report', 'reports') + ' shown, newest first'
        + (r.cursor ? '; there are older ones' : '; that is all in this time range')
        + ' (' + r.scanned + ' stored reports read).';
    } catch (e) {
      note.textContent = 'Cannot load reports: ' + e.message;
      $('reports-more').hidden = true;
    }
  }
  // "Show its reports" on a card: the alert's slice as filters.
  function reportsOf(a) {
    const form = $('reports-form');
    const d = a.slice.dim || {};
    form.elements.service.value = a.slice.service;
    form.elements.type.value = d.kind === 'group' ? String(d.value) : '';
    form.elements.asn.value = d.kind === 'asn' ? String(d.value) : '';
    form.elements.country.value = d.kind === 'country' ? String(d.value) : '';
    form.elements.span.value = state.alerts.now_ms - a.start_ms < 3_000_000 ? '3600000' : '86400000';
    loadReports(false);
    $('h-reports').scrollIntoView();
  }

  // wiring
  function onActivate(container, selector, handler) {
    container.addEventListener('click', (ev) => {
      // Unfolding a card's <details> is not choosing the card.
      if (ev.target.closest('summary')) return;
      const target = ev.target.closest(selector);
      if (target && container.contains(target)) handler(target);
    });
    container.addEventListener('keydown', (ev) => {
      if (ev.key !== 'Enter' && ev.key !== ' ') return;
      const target = ev.target.closest(selector);
      // Buttons and summaries already turn Enter and Space into a click or a toggle.
      if (!target || ev.target.tagName === 'BUTTON' || ev.target.tagName === 'SUMMARY') return;
      ev.preventDefault();
      handler(target);
    });
  }
  function alertById(id) {
    const all = [...(state.alerts.firing || []), ...(state.alerts.recent || [])];
    return all.find((a) => a.id === id);
  }

  // Selects the slice of the alert a notification linked to; returns its id if it is unknown.
  function followAlertLink() {
    const id = state.linkedAlert;
    if (!id) return state.linkMissing;
    state.linkedAlert = null;
    const a = alertById(id);
    if (!a) {
      state.linkMissing = id;
      return id;
    }
    state.selected = selectionOf(a.slice);
    // The fragment carries the selection from now on, so a reload keeps it.
    history.replaceState(null, '', location.pathname + '#' + sliceQuery(state.selected));
    return null;
  }

  function start() {
    onActivate($('heatmap'), 'td.cell', (td) => select({ service: td.dataset.row, dim: td.dataset.dim, key: td.dataset.key }));
    $('firing').addEventListener('click', (ev) => {
      const b = ev.target.closest('button.show-reports');
      if (!b) return;
      ev.stopImmediatePropagation();
      const a = alertById(b.dataset.alertId);
      if (a) reportsOf(a);
    });
    onActivate($('firing'), '.card', (card) => {
      const a = alertById(card.dataset.alertId);
      if (a) select(selectionOf(a.slice));
    });
    onActivate($('strip'), 'tbody tr', (tr) => select({ service: tr.dataset.service, dim: tr.dataset.dim, key: tr.dataset.key }));
    $('reports-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      loadReports(false);
    });
    $('reports-more').addEventListener('click', () => loadReports(true));
    onActivate($('recent'), 'tbody tr', (tr) => {
      const a = alertById(tr.dataset.alertId);
      if (a) select(selectionOf(a.slice));
    });
    let typing = null;
    $('heat-controls').addEventListener('input', (ev) => {
      if (ev.target.name !== 'filter') return;
      clearTimeout(typing);
      typing = setTimeout(() => {
        state.filter = ev.target.value.trim();
        refresh();
      }, 300);
    });
    $('heat-controls').addEventListener('change', (ev) => {
      if (ev.target.name === 'top' || ev.target.name === 'sort') {
        state[ev.target.name] = ev.target.value;
        refresh();
      } else if (ev.target.name === 'dim') {
        state.dim = ev.target.value;
        refresh();
      } else if (ev.target.name === 'colour') {
        state.colour = ev.target.value;
        if (state.heat) renderHeat();
      }
    });
    $('heat-controls').addEventListener('submit', (ev) => ev.preventDefault());
    // A reload may restore the radio buttons' last state.
    const form = $('heat-controls');
    state.dim = form.elements.dim.value || 'asn';
    state.colour = form.elements.colour.value || 'ratio';
    state.top = form.elements.top.value || '40';
    state.sort = form.elements.sort.value || 'failing';
    state.filter = form.elements.filter.value.trim();
    state.selected = selectionFromHash();
    refresh();
  }

  document.addEventListener('DOMContentLoaded', start);
})();
