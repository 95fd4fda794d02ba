// The live dashboard (src/observe/dashboard/, docs/dashboard.md).
// (a) in process, against startDemoServer on 127.0.0.1:0 and a library mount:
//     the page, the diagram drawn from the machine definition (every atomic
//     state, every transition), the event stream's snapshots against live
//     connections and closures, the subscriber cap, pagination, and that the
//     snapshot timer runs only while someone subscribes.
// (b) headless Chromium (Debian's chromium via playwright-core; SKIPPED unless
//     installed, a failure under CI=true) against the CLI server: rows, live
//     RTT, the diagram's counts, closures by the peer and by heartbeat timeout.
//     UPDATE_SCREENSHOTS=1 writes docs/images/dashboard.png.
import { after, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import type { Page } from 'playwright-core';
import { CHROMIUM, CHROMIUM_INSTALL, newPage, WAIT } from '../helpers/chromium.ts';
import { pace } from '../helpers/pace.ts';
import { connectionMachine } from '../../machines/connection.machine.ts';
import { sessionMachine } from '../../machines/session.machine.ts';
import { machineStructure } from '../../scripts/render-diagram.ts';
import { startDemoServer, type DemoServer } from '../../src/cli/demo-server.ts';
import { createDashboard, type DashboardSnapshot } from '../../src/index.ts';
import { eventLabel, type StateNodeLike, type TransitionLike } from '../../src/observe/machine-walk.ts';
import { httpGet, REPO_ROOT, startCliServer } from '../helpers/cli.ts';
import { closeOf, openClient, startSupervisor, waitFor } from '../helpers/server.ts';
import { requireBinary } from '../interop/require-binary.ts';

// ---------------------------------------------------------------------------
// The machine, walked here independently of the dashboard's own walker.

interface WalkedState {
  path: string;
  node: StateNodeLike;
}

function walk(node: StateNodeLike, prefix = ''): WalkedState[] {
  return Object.values(node.states).flatMap((child) => {
    const path = prefix ? `${prefix}.${child.key}` : child.key;
    return [{ path, node: child }, ...walk(child, path)];
  });
}

const STATES = walk(connectionMachine.root as unknown as StateNodeLike);
const ATOMIC = STATES.filter((s) => Object.keys(s.node.states).length === 0).map((s) => s.path);
const pathOf = (n: StateNodeLike): string => STATES.find((s) => s.node === n)!.path;
/** Every (transition, target) pair: source path, target path, label. */
const TRANSITIONS = STATES.flatMap(({ path, node }) =>
  [...node.transitions.values()].flat().flatMap((t: TransitionLike) =>
    // A transition without a target (it only runs actions) is drawn as a loop marked "(stays)".
    (t.target ?? [t.source]).map((target) => ({ source: path, target: pathOf(target), label: t.target ? eventLabel(t) : `${eventLabel(t)} (stays)` })),
  ),
);
const xml = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

// ---------------------------------------------------------------------------
// An event-stream reader.

interface Stream {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** Every snapshot so far; `closures` carried over from the last one that had them. */
  snapshots: DashboardSnapshot[];
  /** Resolves with the first snapshot (already received or not) that satisfies `pred`. */
  until(pred: (s: DashboardSnapshot) => boolean, timeoutMs?: number, what?: string): Promise<DashboardSnapshot>;
  /** Resolves when the server ends the stream. */
  ended: Promise<void>;
  close(): void;
}

function stream(url: string): Promise<Stream> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, headers: { Accept: 'text/event-stream', Connection: 'close' } }, (res) => {
      const snapshots: DashboardSnapshot[] = [];
      const waiters = new Set<() => void>();
      let buffer = '';
      let closures: DashboardSnapshot['closures'] = [];
      const ended = new Promise<void>((r) => {
        res.once('end', r);
        res.once('close', r);
      });
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffer += chunk;
        let i: number;
        while ((i = buffer.indexOf('\n\n')) !== -1) {
          const event = buffer.slice(0, i);
          buffer = buffer.slice(i + 2);
          const data = event
            .split('\n')
            .filter((l) => l.startsWith('data: '))
            .map((l) => l.slice(6))
            .join('\n');
          if (!data) continue;
          const s = JSON.parse(data) as DashboardSnapshot;
          if (s.closures) closures = s.closures;
          else s.closures = closures;
          snapshots.push(s);
        }
        for (const w of waiters) w();
      });
      res.on('error', () => undefined);
      resolve({
        status: res.statusCode ?? 0,
        headers: res.headers,
        snapshots,
        ended,
        until(pred, timeoutMs = 5000, what = 'a matching snapshot') {
          return new Promise((done, fail) => {
            const check = (): void => {
              const hit = snapshots.find(pred);
              if (!hit) return;
              cleanup();
              done(hit);
            };
            const timer = setTimeout(() => {
              cleanup();
              fail(new Error(`no snapshot with ${what} within ${timeoutMs} ms; last: ${JSON.stringify(snapshots.at(-1))}`));
            }, timeoutMs);
            const cleanup = (): void => {
              clearTimeout(timer);
              waiters.delete(check);
            };
            waiters.add(check);
            check();
          });
        },
        close() {
          req.destroy();
        },
      });
    });
    req.on('error', reject);
  });
}

const timeouts = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

async function demo(t: TestContext): Promise<DemoServer & { base: string; wsUrl: string }> {
  const server = await startDemoServer({ host: '127.0.0.1', port: 0 });
  t.after(() => server.close());
  return Object.assign(server, { base: `http://127.0.0.1:${server.address.port}`, wsUrl: `ws://127.0.0.1:${server.address.port}/server` });
}

// ---------------------------------------------------------------------------
// (a) in process

test('GET /dashboard: a self-contained HTML page with the diagram inlined', async (t) => {
  const s = await demo(t);
  const r = await httpGet(`${s.base}/dashboard`);
  assert.equal(r.status, 200);
  assert.match(String(r.headers['content-type']), /^text\/html/);
  assert.match(String(r.headers['content-security-policy']), /default-src 'none'; script-src 'sha256-/);
  assert.match(r.body, /<svg [^>]*class="wsd"/);
  for (const path of ATOMIC) assert.ok(r.body.includes(`data-state="${path}"`), `page diagram has ${path}`);
  assert.match(r.body, /EventSource\(cfg\.basePath \+ '\/events\?page='/);
  // Offline: nothing loaded from anywhere else.
  assert.doesNotMatch(r.body, /(src|href)="(https?:)?\/\//);
  assert.equal((await httpGet(`${s.base}/dashboard/`)).status, 200);
  assert.equal((await httpGet(`${s.base}/dashboard/nope`)).status, 404);
  // The rest of the demo server is unaffected.
  assert.equal((await httpGet(`${s.base}/healthz`)).status, 200);
  assert.equal((await httpGet(`${s.base}/dashboardx`)).status, 404);
});

test('diagram.svg is drawn from the machine definition: a data-state group per atomic state, a labelled edge per transition', async (t) => {
  const s = await demo(t);
  const r = await httpGet(`${s.base}/dashboard/diagram.svg`);
  assert.equal(r.status, 200);
  assert.match(String(r.headers['content-type']), /^image\/svg\+xml/);
  const svg = r.body;
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  assert.ok(ATOMIC.length >= 8, `atomic states: ${ATOMIC.join(', ')}`);
  for (const path of ATOMIC) {
    assert.match(svg, new RegExp(`<g class="state atomic[^"]*" data-state="${path.replace(/\./g, '\\.')}"`), `state group for ${path}`);
  }
  // Compound states are drawn too (with a count of their own for `open`).
  assert.match(svg, /<g class="state compound" data-state="open" data-type="parallel">[\s\S]*?class="count"/);
  // Edges: one group per (source, target), one label line per transition.
  const edges = [...svg.matchAll(/<g class="edge" data-source="([^"]*)" data-target="([^"]*)">([\s\S]*?)<\/g>/g)].map((m) => ({
    source: m[1]!,
    target: m[2]!,
    labels: [...m[3]!.matchAll(/<tspan class="event"[^>]*>([^<]*)<\/tspan>/g)].map((x) => x[1]!),
    path: /<path d="M[\d.,]+( L[\d.,]+)+"/.test(m[3]!),
  }));
  assert.ok(TRANSITIONS.length >= 20, `transitions: ${TRANSITIONS.length}`);
  for (const tr of TRANSITIONS) {
    const edge = edges.find((e) => e.source === tr.source && e.target === tr.target);
    assert.ok(edge, `an edge ${tr.source} → ${tr.target}`);
    assert.ok(edge.path, `edge ${tr.source} → ${tr.target} has a polyline`);
    assert.ok(edge.labels.includes(xml(tr.label)), `edge ${tr.source} → ${tr.target} labelled "${tr.label}" (has ${edge.labels.join(' | ')})`);
  }
  assert.equal(edges.reduce((n, e) => n + e.labels.length, 0), TRANSITIONS.length, 'no transition drawn that the machine does not have');
  assert.match(svg, /<marker id="wsd-arrow"/);
  // Cached: the same bytes again.
  assert.equal((await httpGet(`${s.base}/dashboard/diagram.svg`)).body, svg);
});

test('events: snapshots count the live connections per state; a close by the peer shows in the recent closures', async (t) => {
  const s = await demo(t);
  const clients = await Promise.all([0, 1, 2].map(() => openClient(s.wsUrl)));
  t.after(() => clients.forEach((c) => c.terminate()));
  const events = await stream(`${s.base}/dashboard/events`);
  t.after(() => events.close());
  assert.equal(events.status, 200);
  assert.match(String(events.headers['content-type']), /^text\/event-stream/);

  const three = await events.until((x) => x.totals.live === 3, 5000, '3 live connections');
  const c = three.counts;
  assert.equal(c.connecting! + c.open! + c.closing!, 3, `top-level counts sum to 3: ${JSON.stringify(c)}`);
  assert.equal(c.open, 3);
  // Each parallel region of `open` accounts for every open connection once.
  assert.equal(c['open.heartbeat.idle']! + c['open.heartbeat.pinging']! + c['open.heartbeat.suspect']!, 3);
  assert.equal(c['open.write.flowing']! + c['open.write.blocked']!, 3);
  for (const path of STATES.map((x) => x.path)) assert.equal(typeof c[path], 'number', `a count for ${path}`);
  assert.equal(three.page.rows.length, 3);
  assert.deepEqual(three.page.rows.map((r) => r.state), ['open', 'open', 'open']);
  assert.match(three.page.rows[0]!.value, /^open\/heartbeat\.(idle|pinging|suspect)\/write\.(flowing|blocked)$/);
  assert.match(three.page.rows[0]!.remoteAddress, /^127\.0\.0\.1:\d+$/);
  const ages = three.page.rows.map((r) => r.ageMs);
  assert.deepEqual([...ages].sort((a, b) => b - a), ages, 'oldest first');
  assert.equal(three.subscribers, 1);

  // One message in, one reply out: counted on its row.
  clients[0]!.send(JSON.stringify({ requestID: 1, command: 'hi', someOtherThing: '' }));
  await events.until((x) => x.totals.messagesIn === 1 && x.totals.messagesOut === 1, 5000, 'the message counted');

  clients[1]!.close(4001, 'going');
  await closeOf(clients[1]!);
  const closedOne = await events.until((x) => x.closures.some((k) => k.code === 4001), 5000, 'closure 4001');
  const k = closedOne.closures.find((x) => x.code === 4001)!;
  assert.deepEqual(
    { code: k.code, reason: k.reason, initiator: k.initiator, cause: k.cause, expected: k.expected },
    { code: 4001, reason: 'going', initiator: 'remote', cause: 'peer', expected: false },
  );
  assert.equal(closedOne.totals.live, 2);
  assert.equal(closedOne.totals.closed, 1);
  assert.equal(closedOne.totals.unexpected, 1);
  assert.equal(closedOne.counts.open, 2);

  // demo.close() ends the stream (dashboard.close()).
  await s.close();
  await events.ended;
});

test('events: the subscriber cap answers 503; the timer runs only while someone subscribes', async (t) => {
  const s = await demo(t);
  await httpGet(`${s.base}/dashboard`); // lay out (once per process) before counting timers
  const baseline = timeouts();
  const streams: Stream[] = [];
  t.after(() => streams.forEach((x) => x.close()));
  for (let i = 0; i < 20; i++) streams.push(await stream(`${s.base}/dashboard/events`));
  assert.deepEqual(streams.map((x) => x.status), new Array(20).fill(200));
  await Promise.all(streams.map((x) => x.until(() => true, 3000, 'a first snapshot')));
  assert.ok(timeouts() > baseline, `a snapshot timer while subscribed (baseline ${baseline}, now ${timeouts()})`);

  const refused = await stream(`${s.base}/dashboard/events`);
  assert.equal(refused.status, 503);
  assert.equal(refused.headers['retry-after'], '5');
  await refused.ended;

  // One leaves: there is room again (once the server has seen the disconnect).
  streams.pop()!.close();
  let again: Stream | null = null;
  for (let i = 0; i < 50 && !again; i++) {
    const x = await stream(`${s.base}/dashboard/events`);
    if (x.status === 200) again = x;
    else await new Promise((r) => setTimeout(r, 20));
  }
  assert.ok(again, 'a subscriber slot frees when a client disconnects');
  streams.push(again);

  // Everyone leaves: the timer stops (back to the baseline number of timers).
  for (const x of streams) x.close();
  await waitFor(() => timeouts() <= baseline, 3000, `timers back to baseline ${baseline} (now ${timeouts()})`);
  await new Promise((r) => setTimeout(r, 1200)); // a tick's worth: nothing restarted it
  assert.ok(timeouts() <= baseline, `still at baseline after a tick (${timeouts()} vs ${baseline})`);
});

test('events: a subscriber that stops reading is ended after stallTimeoutMs and frees its place; one that reads is never skipped', async (t) => {
  let dashboard: ReturnType<typeof createDashboard> | null = null;
  const s = await startSupervisor({}, (req, res) => {
    if (dashboard?.handle(req, res)) return;
    res.writeHead(404);
    res.end();
  });
  t.after(() => s.close());
  // Snapshots of 60 rows every 5 ms fill the kernel's buffers of a peer that reads nothing within a
  // few seconds (a paused socket: its receive window does not grow).
  const d = (dashboard = createDashboard(s.supervisor, { pageSize: 60, intervalMs: 5, maxSubscribers: 2, stallTimeoutMs: 200 }));
  t.after(() => d.close());
  const clients = await Promise.all(Array.from({ length: 60 }, () => openClient(s.url)));
  t.after(() => clients.forEach((c) => c.terminate()));
  await waitFor(() => s.supervisor.size === 60);
  const base = `http://127.0.0.1:${s.port}`;

  const reading = await stream(`${base}/dashboard/events`);
  t.after(() => reading.close());
  const deaf = net.connect(s.port, '127.0.0.1');
  t.after(() => deaf.destroy());
  deaf.on('error', () => undefined);
  deaf.write('GET /dashboard/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n');
  deaf.pause();
  await waitFor(() => d.subscribers === 2, 3000, 'both streams subscribed');
  assert.equal((await stream(`${base}/dashboard/events`)).status, 503, 'both places taken');

  const t0 = performance.now();
  await waitFor(() => d.subscribers === 1, pace.scaled(20_000), 'the stream that reads nothing ended');
  t.diagnostic(`the deaf stream was ended ${Math.round(performance.now() - t0)} ms after it subscribed`);
  const again = await stream(`${base}/dashboard/events`);
  t.after(() => again.close());
  assert.equal(again.status, 200, 'its place is free again');

  const seen = reading.snapshots.length;
  await waitFor(() => reading.snapshots.length >= seen + 3, 3000, 'the reading stream still gets snapshots');
  assert.equal(reading.snapshots.at(-1)!.totals.live, 60);
  assert.equal(d.subscribers, 2, 'the reading stream was not ended');
});

test('library mount: createDashboard on any http server, custom basePath, pagination, close()', async (t) => {
  let dashboard: ReturnType<typeof createDashboard> | null = null;
  const s = await startSupervisor({}, (req, res) => {
    if (dashboard?.handle(req, res)) return;
    res.writeHead(418);
    res.end('mine\n');
  });
  t.after(() => s.close());
  dashboard = createDashboard(s.supervisor, { basePath: '/ops/ws/', pageSize: 2, recentClosures: 2, maxSubscribers: 1 });
  assert.equal(dashboard.basePath, '/ops/ws');
  const base = `http://127.0.0.1:${s.port}`;
  assert.equal((await httpGet(`${base}/other`)).status, 418, 'other paths are left to the host');
  assert.equal((await httpGet(`${base}/ops/ws`)).status, 200);

  const clients = await Promise.all([0, 1, 2].map(() => openClient(s.url)));
  t.after(() => clients.forEach((c) => c.terminate()));
  await waitFor(() => s.supervisor.size === 3);

  // The page splits an id at its last '-' (src/observe/dashboard/page.ts): the
  // supervisor's prefix, the same for every row, then a counter per connection.
  const ids = [...s.supervisor.hub.values()].map((c) => c.id);
  for (const id of ids) assert.match(id, /^[A-Za-z0-9_-]{8}-[0-9a-z]+$/);
  const cut = (id: string): number => id.lastIndexOf('-') + 1;
  assert.equal(new Set(ids.map((id) => id.slice(0, cut(id)))).size, 1, `one prefix: ${ids.join(', ')}`);
  assert.equal(new Set(ids.map((id) => id.slice(cut(id)))).size, 3, `distinct counters: ${ids.join(', ')}`);

  const p0 = dashboard.snapshot(0);
  assert.deepEqual({ index: p0.page.index, count: p0.page.count, rows: p0.page.rows.length }, { index: 0, count: 2, rows: 2 });
  const events = await stream(`${base}/ops/ws/events?page=1`);
  t.after(() => events.close());
  const p1 = await events.until((x) => x.totals.live === 3, 3000, '3 live');
  assert.deepEqual({ index: p1.page.index, count: p1.page.count, rows: p1.page.rows.length }, { index: 1, count: 2, rows: 1 });
  assert.equal(p1.page.rows[0]!.id, [...s.supervisor.hub.values()][2]!.id, 'page 1 holds the newest of 3 (oldest first, 2 per page)');
  const far = dashboard.snapshot(99);
  assert.equal(far.page.index, 1, 'a page past the end is clamped to the last page');
  assert.equal((await stream(`${base}/ops/ws/events`)).status, 503, 'maxSubscribers: 1');
  assert.equal(dashboard.subscribers, 1);
  assert.equal(dashboard.ticking, true);

  // The ring keeps the last 2 closures, newest first.
  for (const [i, c] of clients.entries()) {
    c.close(4000 + i);
    await closeOf(c);
  }
  await waitFor(() => dashboard!.snapshot().totals.closed === 3);
  assert.deepEqual(dashboard.snapshot().closures.map((x) => x.code), [4002, 4001]);

  dashboard.close();
  await events.ended;
  assert.equal(dashboard.ticking, false);
  assert.equal(dashboard.subscribers, 0);
  assert.equal((await httpGet(`${base}/ops/ws`)).status, 503, 'closed');
  assert.equal(s.supervisor.listenerCount('close'), 0, 'detached from the supervisor');
});

// ---------------------------------------------------------------------------
// (b) headless Chromium against the CLI server

const tmp = mkdtempSync(join(tmpdir(), 'ws-supervisor-dashboard-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const page1280 = (t: TestContext): Promise<Page> => newPage(t, { width: 1280, height: 900 });

test('chromium: the dashboard shows a live connection, its RTT, the diagram count, and closures by the peer and by heartbeat timeout', { timeout: pace.scaled(90_000) }, async (t) => {
  if (!requireBinary(t, CHROMIUM, CHROMIUM_INSTALL)) return;
  // In-process clients answer the pings: the pong timeout scaled by the measured pace.
  const server = await startCliServer(['--ping-interval', '300', '--pong-timeout', String(pace.scaled(300))], t);
  const page = await page1280(t);
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  await page.goto(`${server.base}/dashboard`, WAIT);
  await page.locator('#conn', { hasText: 'live' }).waitFor(WAIT);
  await page.locator('#connections tbody tr.empty').waitFor(WAIT);

  const ws = await openClient(server.wsUrl);
  const connectedAt = Date.now();
  t.after(() => ws.terminate());
  const row = page.locator('#connections tbody tr[data-id]');
  await row.first().waitFor(WAIT);
  assert.equal(await row.count(), 1);
  assert.match((await row.locator('td.state .pill').textContent()) ?? '', /^(open|pinging)$/);
  assert.match((await row.locator('td.state .value').textContent()) ?? '', /^open\/heartbeat\.\w+\/write\.flowing$/);
  assert.match((await row.locator('td.remote').textContent()) ?? '', /^127\.0\.0\.1:\d+$/);

  // Heartbeat every 300 ms: within ~1.5 s of connecting the row shows pinging, or the RTT of a pong.
  await page.waitForFunction(
    () => {
      const r = document.querySelector('#connections tbody tr[data-id]');
      return !!r && (r.querySelector('td.state .pill')?.textContent === 'pinging' || /ms$/.test(r.querySelector('td.rtt')?.textContent ?? ''));
    },
    undefined,
    { timeout: pace.scaled(2_500), polling: 50 },
  );
  const shownAfter = Date.now() - connectedAt;
  t.diagnostic(`pinging or RTT shown ${shownAfter} ms after connecting: RTT ${await row.locator('td.rtt').textContent()}`);
  assert.ok(shownAfter < pace.scaled(2_500), `heartbeat visible after ${shownAfter} ms (bound 2.5 s × pace ${pace.factor.toFixed(1)})`);

  // The diagram's `open` box counts it, and is shaded.
  const open = page.locator('#diagram [data-state="open"]');
  await open.locator(':scope > .badge .count', { hasText: /^1$/ }).waitFor(WAIT);
  assert.match((await open.getAttribute('class')) ?? '', /\blive\b/);
  assert.equal(await page.locator('#diagram [data-state="closing"] > .badge .count').textContent(), '0');
  assert.doesNotMatch((await page.locator('#diagram [data-state="closing"]').getAttribute('class')) ?? '', /\blive\b/);

  // The peer closes with 4001: a remote, unexpected closure.
  ws.close(4001, 'dashboard test');
  await closeOf(ws);
  const peer = page.locator('#closures tbody tr', { has: page.locator('td.code', { hasText: /^4001$/ }) });
  await peer.waitFor(WAIT);
  assert.equal(await peer.locator('td.initiator').textContent(), 'remote');
  assert.equal(await peer.locator('td.cause').textContent(), 'peer');
  assert.equal(await peer.locator('td.expected').textContent(), 'unexpected');
  assert.equal(await peer.locator('td.reason').textContent(), 'dashboard test');
  await page.locator('#connections tbody tr.empty').waitFor(WAIT);

  // A peer that never answers pings: terminated after pingInterval + pongTimeout.
  const silent = new WebSocket(server.wsUrl, { autoPong: false });
  t.after(() => silent.terminate());
  const dead = page.locator('#closures tbody tr', { has: page.locator('td.code', { hasText: /^1006$/ }) });
  await dead.waitFor(WAIT);
  assert.equal(await dead.locator('td.expected').textContent(), 'unexpected');
  assert.equal(await dead.locator('td.cause').textContent(), 'heartbeat-timeout');
  assert.equal(await dead.locator('td.initiator').textContent(), 'local');
  assert.equal(await page.locator('#t-closed').textContent(), '2');
  assert.equal(await page.locator('#diagram [data-state="closed"] > .badge .count').textContent(), '2');

  // A few busy clients for the picture.
  const busy = await Promise.all([0, 1, 2].map(() => openClient(server.wsUrl)));
  t.after(() => busy.forEach((c) => c.terminate()));
  busy.forEach((c, i) => {
    for (let n = 1; n <= 3 * (i + 1); n++) c.send(JSON.stringify({ requestID: n, command: `Eject the hot dog ${n}`, someOtherThing: '' }));
  });
  await page.locator('#connections tbody tr[data-id]').nth(2).waitFor(WAIT);
  await page.locator('#diagram [data-state="open"] > .badge .count', { hasText: /^3$/ }).waitFor(WAIT);
  await page.waitForFunction(() => document.querySelector('#t-in')?.textContent === '18', undefined, WAIT);

  // The id column: each row shows its whole id, as the logs print it (conn), the
  // prefix shared by every connection of this process dimmed and the counter,
  // which tells the rows apart, in bold; the title holds the whole id too.
  const ids = await page.locator('#connections tbody tr[data-id]').evaluateAll((trs) =>
    trs.map((tr) => {
      const td = tr.querySelector('td.id')!;
      return {
        id: (tr as HTMLElement).dataset.id!,
        shown: td.textContent,
        title: td.getAttribute('title'),
        prefix: td.querySelector('.id-prefix')?.textContent,
        local: td.querySelector('.id-local')?.textContent,
      };
    }),
  );
  assert.equal(ids.length, 3);
  for (const r of ids) {
    assert.equal(r.shown, r.id, 'the whole id is shown');
    assert.equal(r.title, r.id);
    assert.equal(`${r.prefix}${r.local}`, r.id);
  }
  assert.equal(new Set(ids.map((r) => r.prefix)).size, 1, 'one prefix per process');
  assert.equal(new Set(ids.map((r) => r.local)).size, 3, `the bold parts tell the rows apart: ${ids.map((r) => r.local).join(', ')}`);
  const closedIds = await page.locator('#closures tbody tr[data-id] td.id .id-local').allTextContents();
  assert.equal(new Set(closedIds).size, 2, `closures: ${closedIds.join(', ')}`);

  const update = process.env.UPDATE_SCREENSHOTS === '1';
  const shot = update ? join(REPO_ROOT, 'docs/images/dashboard.png') : join(tmp, 'dashboard.png');
  if (update) mkdirSync(join(REPO_ROOT, 'docs/images'), { recursive: true });
  await page.screenshot({ path: shot, fullPage: true, ...WAIT });
  assert.deepEqual([...readFileSync(shot).subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]); // PNG
  if (update) console.log(`screenshot written to ${shot}`);
  assert.deepEqual(errors, [], 'no console errors (CSP, 404s, script errors)');
});

test('sessions: detached sessions show with their age and buffered bytes (detachedSessions(), and in the event stream)', async (t) => {
  let dashboard: ReturnType<typeof createDashboard> | null = null;
  const s = await startSupervisor({ sessions: {} }, (req, res) => {
    if (!dashboard?.handle(req, res)) res.end();
  });
  t.after(() => s.close());
  dashboard = createDashboard(s.supervisor, { intervalMs: 50 });
  t.after(() => dashboard!.close());
  const ws = await openClient(`${s.url}?ws-session=1`);
  ws.send('{"session":"open"}');
  await waitFor(() => s.supervisor.size === 1);
  assert.deepEqual(await dashboard.detachedSessions(), { detached: 0, rows: [] });
  const id = [...s.supervisor.hub.values()][0]!.session!.id;
  ws.terminate();
  await waitFor(() => s.supervisor.size === 0);
  s.supervisor.broadcast('0123456789'); // 10 bytes kept for the detached session
  await new Promise((r) => setTimeout(r, 30));
  const detached = await dashboard.detachedSessions();
  assert.equal(detached?.detached, 1);
  const row = detached!.rows[0]!;
  assert.deepEqual({ ...row, detachedMs: 0 }, { id, detachedMs: 0, bufferedMessages: 1, bufferedBytes: 10, topics: 0 });
  assert.ok(row.detachedMs >= 20 && row.detachedMs < 5_000, `age ${row.detachedMs} ms`);
  // The event stream carries them (refreshed each tick).
  const body = await new Promise<string>((resolve, reject) => {
    const req = http.get(`http://127.0.0.1:${s.port}/dashboard/events`, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (chunk: string) => {
        text += chunk;
        if (/"sessions":\{"detached":1/.test(text)) {
          req.destroy();
          resolve(text);
        }
      });
    });
    req.on('error', reject);
    setTimeout(() => reject(new Error('no sessions in the event stream within 3 s')), 3_000).unref();
  });
  assert.match(body, new RegExp(`"id":"${id}"`));
  const html = (await httpGet(`http://127.0.0.1:${s.port}/dashboard`)).body;
  assert.match(html, /<h2>Detached sessions/);
  // The session machine's diagram is shown with them, and served alone, drawn from the machine.
  const served = await httpGet(`http://127.0.0.1:${s.port}/dashboard/session-diagram.svg`);
  assert.equal(served.status, 200);
  assert.match(String(served.headers['content-type']), /^image\/svg\+xml/);
  assert.ok(html.includes(`<div id="session-diagram" title="drawn from machines/session.machine.ts">${served.body}</div>`), 'the page inlines the session diagram');
  const { states, edges } = machineStructure(sessionMachine);
  assert.ok(states.length >= 6, `session states: ${states.map((x) => x.path).join(', ')}`);
  for (const st of states) assert.match(served.body, new RegExp(`<g class="state [^"]*" data-state="${st.path}"`), `state group for ${st.path}`);
  for (const e of edges) {
    const group = new RegExp(`<g class="edge" data-source="${e.source}" data-target="${e.target}">([\\s\\S]*?)</g>`).exec(served.body);
    assert.ok(group, `an edge ${e.source || '(any state)'} → ${e.target}`);
    for (const label of e.labels) assert.ok(group[1]!.includes(`>${xml(label)}</tspan>`), `edge ${e.source} → ${e.target} labelled ${label}`);
  }
  // Transitions of the whole machine (end, overflow) start at an `any state` pseudo-state.
  assert.match(served.body, /<g class="any"><title>any state of the machine<\/title>/);
  // A dashboard of a supervisor without sessions carries no session diagram.
  assert.doesNotMatch((await httpGet(`${(await demo(t)).base}/dashboard`)).body, /<div id="session-diagram"/);
});
