// Vantage collector dashboard: polls the admin JSON API (/v1/alerts, /v1/heatmap, /v1/series,
// /v1/agent_drops)
// every 5 s and draws alert cards, a heat map table and inline SVG series. No framework, no
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
  // An alert's slice as a series selection; failure-group cuts show the whole service.
  function selectionOf(slice) {
    const d = slice.dim || {};
    if (d.kind === 'asn' || d.kind === 'country') {
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
    return dim === 'asn' || dim === 'country'
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
      const [alerts, heat, drops] = await Promise.all([
        getJson('/v1/alerts'),
        getJson('/v1/heatmap?dim=' + encodeURIComponent(state.dim)),
        getJson('/v1/agent_drops'),
      ]);
      if (seq !== state.seq) return;
      state.alerts = alerts;
      state.heat = heat;
      const missing = followAlertLink();
      renderFiring();
      renderRecent();
      renderDrops(drops);
      renderHeat();
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
  function breakdownText(b) {
    const parts = Object.entries(b || {}).sort((x, y) => y[1] - x[1]);
    return parts.length ? parts.map(([k, n]) => k + ' ' + n).join(' · ') : '–';
  }
  function topText(list, fmt) {
    return list && list.length ? list.map(([k, n]) => fmt(k) + ' (' + n + ')').join(', ') : '–';
  }
  function evidence(a) {
    if (a.kind === 'silence') {
      return ['Active clients', a.clients + ' (expected ' + a.active_clients + '), ' + a.networks + ' networks'];
    }
    return ['Failure ratio', pct(a.observed_ratio) + ' vs baseline ' + pct(a.baseline_ratio)];
  }

  function alertCard(a) {
    const inhibited = !!a.inhibited_by;
    const card = el('article', {
      class: 'card' + (inhibited ? ' inhibited' : ''),
      tabindex: 0,
      'data-alert-id': a.id,
      'data-kind': a.kind,
      'data-inhibited': inhibited ? a.inhibited_by : '',
      'aria-label': a.label + ', ' + a.kind + (inhibited ? ', inhibited' : '') + '. Show its series.',
    });
    const h = el('h3', null, el('span', { class: 'label' }, a.label));
    h.append(el('span', { class: 'badge kind-' + a.kind }, a.kind));
    if (inhibited) h.append(el('span', { class: 'badge inhibited' }, 'inhibited'));
    card.append(h);
    const [evName, evText] = evidence(a);
    const rows = [
      ['Since', iso(a.start_ms) + ' (' + duration(state.alerts.now_ms - a.start_ms) + ')'],
      ['Clients', a.kind === 'silence' ? null : a.clients + ' failing of ' + a.active_clients + ' active, ' + a.networks + ' networks'],
      [evName, evText],
      ['Failure types', breakdownText(a.breakdown)],
      ['Top ASNs', topText(a.top_asns, (k) => 'AS' + k)],
      ['Top countries', topText(a.top_countries, (k) => k)],
      ['Evidence', '−ln p = ' + Number(a.score).toFixed(1)],
      ['Inhibited by', inhibited ? labelOfId(a.inhibited_by) + ' (not notified)' : null],
    ];
    const dl = el('dl');
    for (const [k, v] of rows) {
      if (v !== null) dl.append(el('dt', null, k), el('dd', null, v));
    }
    card.append(dl);
    return card;
  }

  function renderFiring() {
    const firing = state.alerts.firing || [];
    $('firing-count').textContent = '(' + firing.length + ')';
    const box = $('firing');
    box.replaceChildren();
    if (!firing.length) {
      box.append(el('p', { class: 'empty' }, 'Nothing is firing.'));
      return;
    }
    // Alerts that notify first, inhibited ones after them; newest first within each.
    const sorted = [...firing.filter((a) => !a.inhibited_by), ...firing.filter((a) => a.inhibited_by)];
    for (const a of sorted) box.append(alertCard(a));
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
    for (const h of ['Alert', 'Kind', 'Start', 'End', 'Lasted', 'Clients', 'Networks', 'Ratio vs baseline']) {
      head.append(el('th', { scope: 'col' }, h));
    }
    const body = el('tbody');
    for (const a of recent) {
      const end = a.end_ms === null || a.end_ms === undefined ? null : a.end_ms;
      const tr = el('tr', { tabindex: 0, 'data-alert-id': a.id, 'data-kind': a.kind });
      tr.append(
        el('th', { scope: 'row' }, a.label),
        el('td', null, a.kind),
        el('td', null, iso(a.start_ms)),
        el('td', null, iso(end)),
        el('td', null, end === null ? '–' : duration(end - a.start_ms)),
        el('td', null, a.clients),
        el('td', null, a.networks),
        el('td', null, a.kind === 'silence' ? '–' : pct(a.observed_ratio) + ' vs ' + pct(a.baseline_ratio)),
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
    $('heat-note').textContent = rows.length && columns.length
      ? 'Services × ' + what + ', last ' + duration(heat.window_ms) + ' up to ' + iso(heat.now_ms)
       + '; colour = ' + (state.colour === 'ratio' ? 'mean per-client failure ratio' : 'failing clients')
       + '. An outlined cell has a firing alert. Choose a cell for its series.'
      : 'No data in the current window yet.';
    if (!rows.length || !columns.length) {
      renderLegend(maxFailing, false);
      return;
    }
    table.append(el('caption', { class: 'note' }, 'Heat map of services by ' + what));
    const head = el('tr', null, el('th', { scope: 'col' }, 'Service'));
    for (const col of columns) {
      head.append(el('th', { scope: 'col', title: col.label + ': ' + col.active_clients + ' active clients' }, col.label));
    }
    const body = el('tbody');
    for (const row of rows) {
      const tr = el('tr', null, el('th', { scope: 'row' }, row));
      for (const col of columns) {
        const c = cells.get(row + '\u0000' + col.key);
        if (!c) {
          tr.append(el('td', { class: 'nodata', title: row + ' × ' + col.label + ': no data' }));
          continue;
        }
        const ratio = c.failure_ratio === null || c.failure_ratio === undefined ? null : c.failure_ratio;
        const tip = row + ' × ' + col.label + ': failure ratio ' + pct(ratio) + ' (baseline '
          + pct(c.baseline_ratio) + '), ' + c.failing_clients + ' of ' + c.active_clients
          + ' clients failing' + (c.alert ? '; firing alert ' + labelOfId(c.alert) : '');
        const td = el('td', {
          class: 'cell' + (c.alert ? ' alert' : ''),
          title: tip,
          'data-row': row,
          'data-key': col.key,
          'data-dim': heat.dim,
          'data-ratio': ratio === null ? '' : ratio,
          'data-failing': c.failing_clients,
          'data-active': c.active_clients,
          'data-alert': c.alert || '',
        });
        const v = cellValue(c, maxFailing);
        const text = state.colour === 'failing' ? String(c.failing_clients) : ratio === null ? '–' : pct(ratio).replace(' ', '');
        const button = el('button', { type: 'button', 'aria-label': tip }, (c.alert ? '! ' : '') + text);
        if (v !== null) {
          button.style.background = rampColour(v);
          button.style.color = v > 0.55 ? '#fff' : '#1d1f23';
        }
        td.append(button);
        tr.append(td);
      }
      body.append(tr);
    }
    table.append(el('thead', null, head), body);
    renderLegend(maxFailing, true);
    markSelection();
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

  // wiring
  function onActivate(container, selector, handler) {
    container.addEventListener('click', (ev) => {
      const target = ev.target.closest(selector);
      if (target && container.contains(target)) handler(target);
    });
    container.addEventListener('keydown', (ev) => {
      if (ev.key !== 'Enter' && ev.key !== ' ') return;
      const target = ev.target.closest(selector);
      // Buttons already turn Enter and Space into a click.
      if (!target || ev.target.tagName === 'BUTTON') return;
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
    onActivate($('firing'), '.card', (card) => {
      const a = alertById(card.dataset.alertId);
      if (a) select(selectionOf(a.slice));
    });
    onActivate($('recent'), 'tbody tr', (tr) => {
      const a = alertById(tr.dataset.alertId);
      if (a) select(selectionOf(a.slice));
    });
    $('heat-controls').addEventListener('change', (ev) => {
      if (ev.target.name === 'dim') {
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
    state.selected = selectionFromHash();
    refresh();
  }

  document.addEventListener('DOMContentLoaded', start);
})();
