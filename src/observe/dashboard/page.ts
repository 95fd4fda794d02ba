/**
 * The dashboard page: one self-contained HTML document (inline CSS and JS, the
 * diagram's SVG inlined, no CDN, works offline). The script opens an
 * EventSource on `${basePath}/events?page=N` and redraws from each snapshot.
 */
import { createHash } from 'node:crypto';

export interface PageInput {
  basePath: string;
  title: string;
  svg: string;
  /** The session machine's diagram, shown with the detached sessions (absent: sessions off). */
  sessionSvg?: string;
  pageSize: number;
  recentClosures: number;
  intervalMs: number;
}

const CSS = `
:root { color-scheme: light; --fg: #0f172a; --muted: #64748b; --line: #e2e8f0; --accent: #2563eb; --bad: #b91c1c; --ok: #15803d; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif; color: var(--fg); background: #f8fafc; }
header { display: flex; align-items: baseline; gap: 16px; padding: 14px 22px; background: #0f172a; color: #f8fafc; }
header h1 { margin: 0; font-size: 18px; font-weight: 650; }
header .sub { color: #94a3b8; font-size: 13px; }
#conn { margin-left: auto; font-size: 13px; padding: 2px 10px; border-radius: 999px; background: #334155; }
#conn.live { background: #166534; }
#conn.down { background: #991b1b; }
main { padding: 16px 22px 40px; max-width: 1500px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px; margin-bottom: 16px; }
h2 { margin: 0 0 10px; font-size: 15px; }
h2 .hint { font-weight: 400; color: var(--muted); font-size: 12.5px; margin-left: 8px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 8px 12px; background: #fff; }
.card .k { color: var(--muted); font-size: 12px; }
.card .v { font-size: 20px; font-weight: 650; font-variant-numeric: tabular-nums; }
.card .v small { font-size: 12px; font-weight: 400; color: var(--muted); }
#diagram { overflow-x: auto; }
#diagram svg, #session-diagram svg { display: block; max-width: 100%; height: auto; margin: 0 auto; }
#session-diagram { overflow-x: auto; margin-bottom: 10px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { font-size: 12px; color: var(--muted); font-weight: 600; background: #f8fafc; position: sticky; top: 0; }
td.num, th.num { text-align: right; }
td.mono, .mono { font-family: ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace; font-size: 12.5px; }
td .value { color: var(--muted); margin-left: 6px; }
td.id .id-prefix { color: var(--muted); }
td.id .id-local { font-weight: 650; }
.pill { display: inline-block; padding: 0 8px; border-radius: 999px; font-size: 12px; font-weight: 600; background: #e2e8f0; }
.pill.open { background: #dcfce7; color: #166534; }
.pill.pinging { background: #dbeafe; color: #1e40af; }
.pill.connecting { background: #fef9c3; color: #854d0e; }
.pill.closing, .pill.closed { background: #fee2e2; color: #991b1b; }
.pill.expected { background: #dcfce7; color: #166534; }
.pill.unexpected { background: #fee2e2; color: #991b1b; }
.empty td { color: var(--muted); text-align: center; padding: 16px; }
.pager { display: flex; align-items: center; gap: 8px; margin: 8px 0 0; }
.pager button { font: inherit; padding: 3px 12px; border: 1px solid #cbd5e1; border-radius: 6px; background: #fff; cursor: pointer; }
.pager button:disabled { opacity: 0.45; cursor: default; }
.pager .where { color: var(--muted); font-size: 13px; }
.scroll { overflow-x: auto; }
footer { color: var(--muted); font-size: 12px; padding: 0 22px 20px; }
`;

/** Runs in the browser. Plain ES2017, no imports; data is written with textContent only (never innerHTML). */
const SCRIPT = String.raw`
(() => {
  const cfg = JSON.parse(document.getElementById('dashboard-config').textContent);
  const $ = (id) => document.getElementById(id);
  const fmtInt = (n) => Number(n).toLocaleString('en-US');
  const fmtBytes = (n) => {
    if (n < 1024) return n + ' B';
    const u = ['KiB', 'MiB', 'GiB', 'TiB']; let i = -1;
    do { n /= 1024; i++; } while (n >= 1024 && i < u.length - 1);
    return n.toFixed(n < 10 ? 1 : 0) + ' ' + u[i];
  };
  const fmtAge = (ms) => {
    const s = Math.floor(ms / 1000);
    if (s < 60) return s + 's';
    const m = Math.floor(s / 60);
    if (m < 60) return m + 'm ' + String(s % 60).padStart(2, '0') + 's';
    const h = Math.floor(m / 60);
    if (h < 24) return h + 'h ' + String(m % 60).padStart(2, '0') + 'm';
    return Math.floor(h / 24) + 'd ' + (h % 24) + 'h';
  };
  const fmtTime = (t) => new Date(t).toLocaleTimeString('en-GB', { hour12: false });
  const cell = (tr, text, cls, title) => {
    const td = document.createElement('td');
    if (cls) td.className = cls;
    if (title) td.title = title;
    if (text instanceof Node) td.append(text); else td.textContent = text;
    tr.append(td);
    return td;
  };
  // A connection id is the supervisor's prefix (the same on every row of one
  // process), '-', and a counter: shown whole, as the logs print it (conn), with
  // the counter, which tells the rows apart, in bold and the prefix dimmed.
  const idView = (id) => {
    const cut = id.lastIndexOf('-') + 1;
    const whole = document.createElement('span');
    const prefix = document.createElement('span'); prefix.className = 'id-prefix'; prefix.textContent = id.slice(0, cut);
    const local = document.createElement('span'); local.className = 'id-local'; local.textContent = id.slice(cut);
    whole.append(prefix, local);
    return whole;
  };
  const pill = (text, cls) => { const s = document.createElement('span'); s.className = 'pill ' + cls; s.textContent = text; return s; };

  const states = [...document.querySelectorAll('#diagram [data-state]')];
  let page = Math.max(0, Number(new URLSearchParams(location.search).get('page')) || 0);
  let closures = [];
  let es = null;

  function connect() {
    if (es) es.close();
    es = new EventSource(cfg.basePath + '/events?page=' + page);
    es.onopen = () => { $('conn').textContent = 'live'; $('conn').className = 'live'; };
    es.onerror = () => { $('conn').textContent = es.readyState === 2 ? 'disconnected (reload)' : 'reconnecting…'; $('conn').className = 'down'; };
    es.onmessage = (e) => render(JSON.parse(e.data));
  }

  function render(s) {
    for (const g of states) {
      const final = g.getAttribute('data-type') === 'final';
      const n = final ? s.totals.closed : (s.counts[g.getAttribute('data-state')] || 0);
      const text = g.querySelector(':scope > .badge .count');
      if (!text) continue; // a region of a parallel state: its parent's count says it all
      text.textContent = n > 99999 ? Math.round(n / 1000) + 'k' : String(n);
      g.classList.toggle('live', !final && n > 0);
    }
    const t = s.totals;
    $('t-live').textContent = fmtInt(t.live);
    $('t-opened').textContent = fmtInt(t.opened);
    $('t-closed').textContent = fmtInt(t.closed);
    $('t-closed-detail').textContent = fmtInt(t.expected) + ' expected · ' + fmtInt(t.unexpected) + ' unexpected';
    $('t-in').textContent = fmtInt(t.messagesIn);
    $('t-in-bytes').textContent = fmtBytes(t.bytesIn);
    $('t-out').textContent = fmtInt(t.messagesOut);
    $('t-out-bytes').textContent = fmtBytes(t.bytesOut);
    $('t-queued').textContent = fmtInt(t.queuedMessages);
    $('t-queued-bytes').textContent = fmtBytes(t.queuedBytes);
    $('t-subscribers').textContent = fmtInt(s.subscribers);
    $('updated').textContent = 'updated ' + fmtTime(s.at);

    const p = s.page;
    if (p.index !== page) { page = p.index; history.replaceState(null, '', '?page=' + page); }
    const body = $('connections').tBodies[0];
    const rows = p.rows.map((r) => {
      const tr = document.createElement('tr');
      tr.dataset.id = r.id;
      cell(tr, idView(r.id), 'mono id', r.id);
      const st = cell(tr, pill(r.state, r.state), 'state');
      const v = document.createElement('span'); v.className = 'value mono'; v.textContent = r.value; st.append(v);
      cell(tr, r.remoteAddress, 'mono remote');
      cell(tr, fmtAge(r.ageMs), 'num age', 'opened ' + new Date(r.openedAt).toISOString());
      cell(tr, r.rttMs === null ? '—' : (r.rttMs < 10 ? r.rttMs.toFixed(1) : Math.round(r.rttMs)) + ' ms', 'num rtt');
      cell(tr, fmtInt(r.queuedMessages) + ' / ' + fmtBytes(r.queuedBytes), 'num queue');
      cell(tr, fmtInt(r.messagesIn) + ' / ' + fmtBytes(r.bytesIn), 'num in');
      cell(tr, fmtInt(r.messagesOut) + ' / ' + fmtBytes(r.bytesOut), 'num out');
      return tr;
    });
    if (rows.length === 0) {
      const tr = document.createElement('tr'); tr.className = 'empty';
      cell(tr, 'no live connections').colSpan = 8; rows.push(tr);
    }
    body.replaceChildren(...rows);
    const first = p.index * p.size;
    $('where').textContent = 'page ' + (p.index + 1) + ' of ' + p.count +
      (t.live ? ' · connections ' + (first + 1) + '–' + (first + p.rows.length) + ' of ' + fmtInt(t.live) : '');
    $('prev').disabled = p.index === 0;
    $('next').disabled = p.index >= p.count - 1;

    if (s.closures) { closures = s.closures; renderClosures(); }
    if (s.sessions) renderSessions(s.sessions);
  }

  function renderSessions(sessions) {
    $('sessions-section').hidden = false;
    $('sessions-count').textContent = fmtInt(sessions.detached) + ' detached';
    // The session machine: the detached state counts this node's detached sessions; the others are not counted here.
    for (const g of document.querySelectorAll('#session-diagram [data-state]')) {
      const text = g.querySelector(':scope > .badge .count');
      if (!text) continue;
      const detached = g.getAttribute('data-state') === 'detached';
      text.textContent = detached ? String(sessions.detached) : '–';
      g.classList.toggle('live', detached && sessions.detached > 0);
    }
    const rows = sessions.rows.map((r) => {
      const tr = document.createElement('tr');
      cell(tr, idView(r.id), 'mono id', r.id);
      cell(tr, fmtAge(r.detachedMs), 'num age');
      cell(tr, fmtInt(r.bufferedMessages) + ' / ' + fmtInt(r.bufferedBytes), 'num');
      cell(tr, fmtInt(r.topics), 'num');
      return tr;
    });
    if (rows.length === 0) {
      const tr = document.createElement('tr'); tr.className = 'empty';
      cell(tr, 'no detached sessions').colSpan = 4; rows.push(tr);
    }
    $('sessions').tBodies[0].replaceChildren(...rows);
  }

  function renderClosures() {
    const rows = closures.map((c) => {
      const tr = document.createElement('tr');
      tr.dataset.id = c.id;
      cell(tr, fmtTime(c.at), 'time', new Date(c.at).toISOString());
      cell(tr, idView(c.id), 'mono id', c.id);
      cell(tr, c.remoteAddress, 'mono remote');
      cell(tr, String(c.code), 'num code');
      cell(tr, c.reason, 'reason');
      cell(tr, pill(c.expected ? 'expected' : 'unexpected', c.expected ? 'expected' : 'unexpected'), 'expected');
      cell(tr, c.initiator, 'initiator');
      cell(tr, c.cause, 'cause');
      cell(tr, fmtAge(c.ageMs), 'num age');
      return tr;
    });
    if (rows.length === 0) {
      const tr = document.createElement('tr'); tr.className = 'empty';
      cell(tr, 'no closures yet').colSpan = 9; rows.push(tr);
    }
    $('closures').tBodies[0].replaceChildren(...rows);
  }

  const go = (p) => { page = Math.max(0, p); history.replaceState(null, '', '?page=' + page); connect(); };
  $('prev').onclick = () => go(page - 1);
  $('next').onclick = () => go(page + 1);
  connect();
})();
`;

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** JSON safe inside a <script> element. */
const scriptJson = (v: unknown): string => JSON.stringify(v).replace(/</g, '\\u003c');

export interface RenderedPage {
  html: string;
  /** Content-Security-Policy allowing exactly the inline script (by hash), nothing from elsewhere. */
  csp: string;
}

export function renderPage(input: PageInput): RenderedPage {
  const hash = createHash('sha256').update(SCRIPT).digest('base64');
  const csp = [
    "default-src 'none'",
    `script-src 'sha256-${hash}'`,
    "style-src 'unsafe-inline'",
    "connect-src 'self'",
    "img-src 'self' data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
  const config = { basePath: input.basePath, pageSize: input.pageSize };
  const seconds = input.intervalMs / 1000;
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(input.title)}</title>
<link rel="icon" href="data:,">
<style>${CSS}</style>
</head>
<body>
<header><h1>${esc(input.title)}</h1><span class="sub" id="updated">waiting for the first snapshot…</span><span id="conn">connecting…</span></header>
<main>
<section aria-label="totals">
<div class="cards">
<div class="card"><div class="k">live connections</div><div class="v" id="t-live">–</div></div>
<div class="card"><div class="k">opened</div><div class="v" id="t-opened">–</div></div>
<div class="card"><div class="k">closed</div><div class="v" id="t-closed">–</div><div class="k" id="t-closed-detail"></div></div>
<div class="card"><div class="k">messages in</div><div class="v"><span id="t-in">–</span> <small id="t-in-bytes"></small></div></div>
<div class="card"><div class="k">messages out</div><div class="v"><span id="t-out">–</span> <small id="t-out-bytes"></small></div></div>
<div class="card"><div class="k">queued to send</div><div class="v"><span id="t-queued">–</span> <small id="t-queued-bytes"></small></div></div>
<div class="card"><div class="k">dashboard viewers</div><div class="v" id="t-subscribers">–</div></div>
</div>
</section>
<section>
<h2>Connection machine<span class="hint">drawn from machines/connection.machine.ts; each box shows how many live connections are in that state (closed: since the dashboard started)</span></h2>
<div id="diagram">${input.svg}</div>
</section>
<section>
<h2>Live connections<span class="hint">oldest first, ${input.pageSize} per page, refreshed every ${seconds} s</span></h2>
<div class="scroll">
<table id="connections">
<thead><tr><th title="as the logs print it (conn)">id</th><th>state</th><th>remote address</th><th class="num">age</th><th class="num">last RTT</th><th class="num">queued (msgs / bytes)</th><th class="num">in (msgs / bytes)</th><th class="num">out (msgs / bytes)</th></tr></thead>
<tbody><tr class="empty"><td colspan="8">waiting for the first snapshot…</td></tr></tbody>
</table>
</div>
<div class="pager"><button id="prev" type="button" disabled>‹ prev</button><button id="next" type="button" disabled>next ›</button><span class="where" id="where"></span></div>
</section>
<section id="sessions-section" hidden>
<h2>Detached sessions<span class="hint" id="sessions-count"></span></h2>
${input.sessionSvg ? `<div id="session-diagram" title="drawn from machines/session.machine.ts">${input.sessionSvg}</div>` : ''}
<div class="scroll">
<table id="sessions">
<thead><tr><th title="the session id">session</th><th class="num">detached for</th><th class="num">buffered (msgs / bytes)</th><th class="num">topics</th></tr></thead>
<tbody><tr class="empty"><td colspan="4">waiting for the first snapshot…</td></tr></tbody>
</table>
</div>
</section>
<section>
<h2>Recent closures<span class="hint">the last ${input.recentClosures}, newest first</span></h2>
<div class="scroll">
<table id="closures">
<thead><tr><th>time</th><th title="as the logs print it (conn)">id</th><th>remote address</th><th class="num">code</th><th>reason</th><th>expected?</th><th>initiator</th><th>cause</th><th class="num">lived</th></tr></thead>
<tbody><tr class="empty"><td colspan="9">waiting for the first snapshot…</td></tr></tbody>
</table>
</div>
</section>
</main>
<footer>ws-supervisor dashboard · server-sent events from <span class="mono">${esc(input.basePath)}/events</span> · diagram: <a href="${esc(input.basePath)}/diagram.svg">${esc(input.basePath)}/diagram.svg</a></footer>
<script type="application/json" id="dashboard-config">${scriptJson(config)}</script>
<script>${SCRIPT}</script>
</body>
</html>
`;
  return { html, csp };
}
