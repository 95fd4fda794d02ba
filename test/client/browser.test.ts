// The browser client (src/client/browser.ts, bundled into
// dist/browser/ws-supervisor-client.js and served by the demo server) in
// headless Chromium against the CLI server: requests by requestID (R14),
// pushes (R24), reconnection with backoff after a server restart with a
// request made during the outage sent once afterwards (R22, R23), the
// application-level heartbeat (R7), a heartbeat timeout on a frozen server
// (R4), the bounded send buffer (R11), and sessions: a resume after a TCP
// cut, the session heartbeat, and a server with sessions off (close 4501).
// Chromium is Debian's (playwright-core drives it; nothing is downloaded);
// without it the tests print SKIPPED and skip, and fail under CI=true.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { browser, CHROMIUM, CHROMIUM_INSTALL, WAIT } from '../helpers/chromium.ts';
import WebSocket from 'ws';
import { httpGet, metric, metricsOf, REPO_ROOT, startCliServer, type CliServer } from '../helpers/cli.ts';
import { requireBinary } from '../interop/require-binary.ts';
import { pace } from '../helpers/pace.ts';

/**
 * Short server timings, so the server's own heartbeat runs during every test.
 * Chromium must answer within the pong timeout: scaled by the measured pace
 * (test/helpers/pace.ts), like every timer here that one process must beat by
 * answering another, the margins and the waits (docs/testing.md).
 */
const FAST = ['--ping-interval', '300', '--pong-timeout', String(pace.scaled(300))];

const BUNDLE = join(REPO_ROOT, 'dist/browser/ws-supervisor-client.js');
let built = false;
/** Builds the bundle when it is missing or older than its sources (the tests must never run a stale one). */
function ensureBundle(): void {
  if (built) return;
  const sources = ['src/client', 'machines'].flatMap((dir) =>
    readdirSync(join(REPO_ROOT, dir))
      .filter((f) => f.endsWith('.ts'))
      .map((f) => join(REPO_ROOT, dir, f)),
  );
  const newest = Math.max(...sources.map((f) => statSync(f).mtimeMs));
  if (!existsSync(BUNDLE) || statSync(BUNDLE).mtimeMs < newest) {
    const r = spawnSync(process.execPath, ['scripts/build-browser.mjs'], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, `node scripts/build-browser.mjs failed:\n${r.stdout}\n${r.stderr}`);
  }
  built = true;
}

/** Chromium present, bundle built: false means skip (SKIPPED printed, or failure under CI=true). */
function ready(t: TestContext): boolean {
  if (!requireBinary(t, CHROMIUM, CHROMIUM_INSTALL)) return false;
  ensureBundle();
  return true;
}

let context: Promise<BrowserContext> | null = null;
let shared: Page | null = null;
let sharedInUse = false;
/**
 * One page for the file's tests, one test at a time: each test loads its own server's page into it (a new document,
 * of that server's origin: its own port), and at the test's end the page goes to about:blank, which ends the test's
 * document (its client, its socket) before the next test's loads, in the same renderer. Nothing in these pages keeps
 * state a later document could see (no cookie, no storage; the cache is keyed by the URL, port included). A new page
 * per test cost Chromium ~1.7 s of CPU each, most of it in the renderer that held the new page's first about:blank,
 * which is swapped out at the first navigation and then works on for ~1 s; a navigation in a page stays in its
 * renderer (docs/testing.md, "The suite's CPU (the tenth session…)"). A new page only if the shared one is closed
 * (it crashed) or taken (tests at once).
 */
async function testPage(t: TestContext): Promise<Page> {
  context ??= browser().then((b) => b.newContext());
  let page: Page;
  if (shared && !shared.isClosed() && !sharedInUse) page = shared;
  else if (sharedInUse) {
    page = await (await context).newPage();
    t.after(() => page.close());
    return page;
  } else page = shared = await (await context).newPage();
  sharedInUse = true;
  t.after(async () => {
    await page.goto('about:blank', WAIT).catch(() => page.close());
    sharedInUse = false;
  });
  return page;
}

/** A page of the server's own origin (R19) with a client from the bundle in `window.h`; its page errors fail the test. */
/** `setup`: page code run right after the client is made, in the same turn (before any frame can arrive); `h` is in scope. */
async function clientPage(t: TestContext, server: CliServer, options: Record<string, unknown>, setup = ''): Promise<Page> {
  const page = await testPage(t);
  const errors: string[] = [];
  const onError = (err: Error): void => void errors.push(err.message);
  page.on('pageerror', onError);
  t.after(() => {
    page.off('pageerror', onError);
    assert.deepEqual(errors, [], 'page errors');
  });
  await page.goto(`${server.base}/`, WAIT);
  await page.evaluate(`(async () => {
    const { createClient } = await import('/ws-supervisor-client.js');
    const client = createClient(${JSON.stringify(server.wsUrl)}, ${JSON.stringify(options)});
    const h = { client, states: [client.state], closes: [], pushes: [] };
    client.on('state', (e) => h.states.push(e.state));
    client.on('close', (c) => h.closes.push(c));
    client.on('push', (p) => h.pushes.push(p));
    window.h = h;
    ${setup}
  })()`);
  return page;
}

/** Waits (bounded: `idleTimeout` of an idle machine, scaled by the pace) until the page expression is truthy. */
async function until(page: Page, expression: string, idleTimeout = 10_000): Promise<void> {
  await page.waitForFunction(expression, undefined, { timeout: pace.scaled(idleTimeout), polling: 20 });
}

function states(page: Page): Promise<string[]> {
  return page.evaluate('h.states') as Promise<string[]>;
}

/** Resolves with the exit, or null after timeoutMs of an idle machine (scaled by the pace). */
async function exitWithin(server: CliServer, idleTimeoutMs: number): Promise<unknown> {
  const timeoutMs = pace.scaled(idleTimeoutMs);
  let timer: NodeJS.Timeout | undefined;
  const exit = await Promise.race([server.exited, new Promise<null>((r) => (timer = setTimeout(() => r(null), timeoutMs)))]);
  clearTimeout(timer);
  return exit;
}

test('browser client: the bundle is served, requests get their replies by requestID, close(1000) is clean', { timeout: pace.scaled(60_000) }, async (t) => {
  if (!ready(t)) return;
  const server = await startCliServer(FAST, t);
  const head = await httpGet(`${server.base}/ws-supervisor-client.js`);
  assert.equal(head.status, 200);
  assert.match(String(head.headers['content-type']), /^text\/javascript/);
  assert.equal((await httpGet(`${server.base}/ws-supervisor-client.js.map`)).status, 200);

  const page = await clientPage(t, server, {});
  await until(page, 'h.client.state === "open"');
  const reply = await page.evaluate(`h.client.request('Eject the hot dog', 'urgent')`);
  assert.deepEqual(reply, { requestID: 1, success: true, someOtherThing: 'Server processed command: Eject the hot dog' });
  // Twenty at once: each reply finds its own request.
  const replies = (await page.evaluate(
    `Promise.all(Array.from({ length: 20 }, (_, i) => h.client.request('c' + i)))`,
  )) as { requestID: number; someOtherThing: string }[];
  assert.deepEqual(
    replies.map((r) => [r.requestID, r.someOtherThing]),
    Array.from({ length: 20 }, (_, i) => [i + 2, `Server processed command: c${i}`]),
  );
  // No app heartbeat by default (R7): the server pinged this page every 300 ms and Chromium answered.
  assert.equal(await page.evaluate('h.client.rttMs'), null);

  const end = (await page.evaluate(`h.client.close(1000, 'bye')`)) as { reason: string; lastClosure: Record<string, unknown> };
  assert.equal(end.reason, 'closed');
  assert.deepEqual(end.lastClosure, { code: 1000, reason: 'bye', initiator: 'local', cause: 'normal', expected: true, receivedCode: 1000 });
  assert.deepEqual(await states(page), ['connecting', 'open', 'closing', 'closed']);
  const rejected = await page.evaluate(`h.client.request('late').then(() => 'resolved', (e) => e.code)`);
  assert.equal(rejected, 'client-closed');
  const m = await metricsOf(server.base);
  assert.equal(metric(m, 'ws_supervisor_messages_received_total'), 21);
  assert.equal(metric(m, 'ws_supervisor_closes_total', { code: '1000' }), 1);
});

test('browser client: a broadcast from another client arrives as a push', { timeout: pace.scaled(60_000) }, async (t) => {
  if (!ready(t)) return;
  const server = await startCliServer(FAST, t);
  const page = await clientPage(t, server, {});
  await until(page, 'h.client.state === "open"');

  const other = new WebSocket(server.wsUrl);
  t.after(() => other.terminate());
  await new Promise<void>((resolve, reject) => {
    other.once('open', resolve);
    other.once('error', reject);
  });
  other.send(JSON.stringify({ requestID: 7, command: 'broadcast', someOtherThing: 'hello from Node' }));
  await until(page, 'h.pushes.length > 0');
  assert.deepEqual(await page.evaluate('h.pushes'), [{ command: 'broadcast', someOtherThing: 'hello from Node' }]);

  // A browser may only send 1000 or 3000–4999: close(1001) goes out as 1000 "1001 …"; the closure keeps 1001.
  const end = (await page.evaluate(`h.client.close(1001, 'leaving')`)) as { lastClosure: Record<string, unknown> };
  assert.deepEqual(end.lastClosure, { code: 1001, reason: 'leaving', initiator: 'local', cause: 'shutdown', expected: true, receivedCode: 1000 });
  assert.equal(metric(await metricsOf(server.base), 'ws_supervisor_closes_total', { code: '1000' }), 1);
});

test('browser client: a burst over the send buffer limit closes the connection as a slow consumer (R11)', { timeout: pace.scaled(60_000) }, async (t) => {
  if (!ready(t)) return;
  const server = await startCliServer(FAST, t);
  const page = await clientPage(t, server, { sendBuffer: { highWaterMark: 16_384, maxBytes: 65_536 }, backoff: { maxAttempts: 1 } });
  await until(page, 'h.client.state === "open"');
  // bufferedAmount only goes down between tasks, so eight 16 KiB sends in one task overflow at the fifth.
  const end = (await page.evaluate(`(() => {
    window.dead = [];
    h.client.on('deadLetter', (d) => dead.push(d.data[0]));
    for (let i = 0; i < 8; i++) h.client.send(String(i).repeat(16_384));
    return h.client.ended;
  })()`)) as { reason: string; lastClosure: Record<string, unknown> };
  assert.deepEqual(end, {
    reason: 'gave-up',
    lastClosure: { code: 1008, reason: 'slow consumer: send queue overflow', initiator: 'local', cause: 'slow-consumer', expected: false, receivedCode: 1000 },
  });
  // Refused by the writer, still in the client's buffer when it gave up: handed back (R12).
  assert.deepEqual(await page.evaluate('dead'), ['4', '5', '6', '7']);
  const m = await metricsOf(server.base);
  assert.equal(metric(m, 'ws_supervisor_messages_received_total'), 4);
  assert.equal(metric(m, 'ws_supervisor_closes_total', { code: '1000' }), 1); // sent as 1000 "1008 slow consumer: …"
});

test('browser client: reconnects with backoff after a server restart; a request made during the outage is answered once', { timeout: pace.scaled(60_000) }, async (t) => {
  if (!ready(t)) return;
  const first = await startCliServer(FAST, t);
  const page = await clientPage(t, first, {
    backoff: { initialDelay: 100, maxDelay: 400, multiplier: 2, stableAfter: 60_000 },
    // connectTimeout stays at its default (10 s): after a run of failed
    // connects Chromium delays a page's next WebSocket by up to 5 s (its
    // per-process WebSocket throttle); a shorter connect timeout abandons the
    // delayed attempts, and each abandoned one counts as another failure.
    requestTimeout: pace.scaled(20_000),
  });
  await until(page, 'h.client.state === "open"');

  // R18: SIGTERM drains: close 1001, expected; the client does not give up but waits and retries.
  first.child.kill('SIGTERM');
  assert.deepEqual(await exitWithin(first, 10_000), { code: 0, signal: null });
  await until(page, 'h.closes.length >= 1'); // then one per failed attempt
  const closure = (await page.evaluate('h.closes[0]')) as { code: number; expected: boolean; initiator: string };
  assert.deepEqual([closure.code, closure.expected, closure.initiator], [1001, true, 'remote']);
  await until(page, 'h.states.includes("waiting") && h.states.filter((s) => s === "connecting").length >= 3'); // retried in vain

  // R23: buffered while offline, sent once connected again.
  await page.evaluate(`window.outage = { replies: [], errors: [] };
    void h.client.request('made during the outage', 'x').then((r) => outage.replies.push(r), (e) => outage.errors.push(e.code + ': ' + e.message))`);
  assert.ok(['waiting', 'connecting'].includes((await page.evaluate('h.client.state')) as string));

  const second = await startCliServer(['--address', `127.0.0.1:${first.port}`, ...FAST], t);
  assert.equal(second.port, first.port);
  await until(page, 'outage.replies.length + outage.errors.length > 0', 15_000);
  await new Promise((r) => setTimeout(r, pace.scaled(300))); // room for a duplicate, if there were one
  assert.deepEqual(await page.evaluate('outage'), {
    replies: [{ requestID: 1, success: true, someOtherThing: 'Server processed command: made during the outage' }],
    errors: [],
  });
  assert.equal(metric(await metricsOf(second.base), 'ws_supervisor_messages_received_total'), 1);
  const seen = await states(page);
  assert.deepEqual(seen.slice(0, 3), ['connecting', 'open', 'waiting']);
  assert.equal(seen.at(-1), 'open');
  assert.equal(seen.filter((s) => s === 'open').length, 2);
  t.diagnostic(`states: ${seen.join(' → ')}`);
});

test('browser client: the app heartbeat measures rttMs and cycles open ⇄ pinging', { timeout: pace.scaled(60_000) }, async (t) => {
  if (!ready(t)) return;
  const server = await startCliServer(FAST, t);
  const pongTimeout = pace.scaled(1_000); // the CLI server answers: scaled by the pace
  const page = await clientPage(t, server, { appHeartbeat: true, timing: { pingInterval: 200, pongTimeout } });
  await until(page, 'h.client.rttMs !== null && h.states.filter((s) => s === "pinging").length >= 3');
  const rtt = (await page.evaluate('h.client.rttMs')) as number;
  assert.ok(typeof rtt === 'number' && rtt >= 0 && rtt < pongTimeout, `rttMs ${rtt}`);
  const seen = await states(page);
  assert.deepEqual(seen.slice(0, 5), ['connecting', 'open', 'pinging', 'open', 'pinging']);
  // Heartbeat replies are the client's own: no push, no close.
  assert.deepEqual(await page.evaluate('[h.pushes.length, h.closes.length]'), [0, 0]);
  assert.ok(metric(await metricsOf(server.base), 'ws_supervisor_messages_received_total') >= 3);
  // A request still works between heartbeats.
  assert.equal(((await page.evaluate(`h.client.request('still here')`)) as { requestID: number }).requestID, 1);
  t.diagnostic(`rttMs ${rtt.toFixed(2)}`);
});

test('browser client: a frozen server (SIGSTOP) is dropped by the app heartbeat, and rejoined once it thaws', { timeout: pace.scaled(60_000) }, async (t) => {
  if (!ready(t)) return;
  const server = await startCliServer(FAST, t);
  t.after(() => void server.child.kill('SIGCONT'));
  const page = await clientPage(t, server, {
    appHeartbeat: true,
    // The CLI server answers pings and upgrades: those deadlines scaled by the pace.
    timing: { pingInterval: 200, pongTimeout: pace.scaled(300), connectTimeout: pace.scaled(500) },
    backoff: { initialDelay: 100, maxDelay: 200 },
  });
  await until(page, 'h.client.state === "open"');
  server.child.kill('SIGSTOP');
  await until(page, 'h.closes.length >= 1'); // then one per attempt timed out while frozen
  const closure = (await page.evaluate('h.closes[0]')) as Record<string, unknown>;
  assert.deepEqual(closure, { code: 1006, reason: 'heartbeat timeout', initiator: 'local', cause: 'heartbeat-timeout', expected: false, receivedCode: null });
  server.child.kill('SIGCONT');
  await until(page, 'h.client.state === "open" || h.client.state === "pinging"');
  assert.equal(((await page.evaluate(`h.client.request('back')`)) as { requestID: number }).requestID, 1);
});

test('browser client: session: true resumes after a TCP cut — pushes sent meanwhile replayed once, a request made during the cut answered once', { timeout: 60_000 }, async (t) => {
  if (!ready(t)) return;
  const server = await startCliServer([...FAST, '--sessions'], t);
  // The page and its socket go through a TCP proxy whose connections the test destroys (1006, no close frame).
  const sockets = new Set<net.Socket>();
  const proxy = net.createServer((down) => {
    const up = net.connect(server.port, '127.0.0.1');
    for (const s of [down, up]) {
      sockets.add(s);
      s.once('close', () => sockets.delete(s));
      s.on('error', () => undefined);
    }
    down.pipe(up);
    up.pipe(down);
    down.once('close', () => up.destroy());
    up.once('close', () => down.destroy());
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((resolve) => proxy.close(() => resolve()));
  });
  const port = (proxy.address() as net.AddressInfo).port;
  const viaProxy = { ...server, base: `http://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}/server` };
  const page = await clientPage(t, viaProxy, { session: true, backoff: { initialDelay: 50, maxDelay: 200 }, requestTimeout: 20_000 });
  await page.evaluate(`h.resumes = []; h.client.on('resume', (e) => h.resumes.push(e));`);
  await until(page, 'h.client.state === "open" && h.client.sessionId !== null');
  assert.equal((await page.evaluate(`h.client.request('before')`) as { requestID: number }).requestID, 1);

  for (const s of sockets) s.destroy();
  await until(page, 'h.closes.length >= 1');
  // Meanwhile: a broadcast from another client (straight to the server), and a request from the page.
  const other = new WebSocket(server.wsUrl);
  t.after(() => other.terminate());
  await new Promise<void>((resolve, reject) => {
    other.once('open', resolve);
    other.once('error', reject);
  });
  other.send(JSON.stringify({ requestID: 1, command: 'broadcast', someOtherThing: 'while cut' }));
  await page.evaluate(`window.during = { replies: [], errors: [] };
    void h.client.request('during the cut').then((r) => during.replies.push(r), (e) => during.errors.push(e.code + ': ' + e.message))`);

  await until(page, 'h.resumes.length >= 1 && during.replies.length + during.errors.length > 0', 15_000);
  await new Promise((r) => setTimeout(r, 300)); // room for a duplicate, if there were one
  const resume = (await page.evaluate('h.resumes[0]')) as { resumed: boolean; reason: string | null };
  assert.deepEqual([resume.resumed, resume.reason], [true, null]);
  assert.equal(await page.evaluate('h.client.resumed'), true);
  assert.deepEqual(await page.evaluate('h.pushes'), [{ command: 'broadcast', someOtherThing: 'while cut' }]);
  assert.deepEqual(await page.evaluate('during'), {
    replies: [{ requestID: 2, success: true, someOtherThing: 'Server processed command: during the cut' }],
    errors: [],
  });
  const m = await metricsOf(server.base);
  assert.equal(metric(m, 'ws_supervisor_session_resumes_total', { result: 'resumed', reason: 'none' }), 1);
  // (That the server ran each request once is held by test/server/sessions*.test.ts, where the handler counts.)
});

test('browser client: session: true against a server with sessions off stops at once — unsupported, the 4501 close and its reason, no retry', { timeout: pace.scaled(60_000) }, async (t) => {
  if (!ready(t)) return;
  // No --sessions. A browser cannot read a refused upgrade's status; the server accepts the upgrade and closes 4501.
  const server = await startCliServer(FAST, t);
  // The request is made in the turn the client is made: the 4501 close cannot have come yet, so it is pending then.
  const page = await clientPage(t, server, { session: true, backoff: { initialDelay: 20, maxDelay: 50 } }, `window.during = { errors: [] };
    h.client.ended.then((o) => (h.end = o));
    void h.client.request('never').then(() => during.errors.push('resolved'), (e) => during.errors.push(e.code + ': ' + e.message));`);
  await until(page, 'h.end !== undefined && during.errors.length === 1');
  const end = (await page.evaluate('h.end')) as { reason: string; lastClosure: Record<string, unknown> };
  assert.equal(end.reason, 'unsupported');
  assert.deepEqual(end.lastClosure, { code: 4501, reason: 'sessions are not enabled on this server', initiator: 'remote', cause: 'peer', expected: false, receivedCode: 4501 });
  assert.deepEqual(await page.evaluate('during.errors'), ['client-closed: the server does not speak sessions (sessions are not enabled on this server): request 1 not answered']);
  await new Promise((r) => setTimeout(r, 300)); // a retry (backoff ≤ 50 ms) would be here by now
  assert.deepEqual(await states(page), ['connecting', 'resuming', 'closed'], 'one attempt, then closed for good');
  assert.equal((await page.evaluate('h.closes') as unknown[]).length, 1);
  const m = await metricsOf(server.base);
  assert.equal(metric(m, 'ws_supervisor_refused_upgrades_total', { reason: 'sessions-off' }), 1);
  assert.equal(metric(m, 'ws_supervisor_connections_opened_total'), 0, 'not a connection of the application');
});

test('browser client: session with the app heartbeat — the heartbeat is the session ping (rttMs, open ⇄ pinging, nothing numbered), and a frozen server is dropped and the session resumed', { timeout: pace.scaled(60_000) }, async (t) => {
  if (!ready(t)) return;
  const server = await startCliServer([...FAST, '--sessions'], t);
  t.after(() => void server.child.kill('SIGCONT'));
  const pongTimeout = pace.scaled(300); // the CLI server answers: scaled by the pace
  const page = await clientPage(t, server, {
    session: true,
    appHeartbeat: true,
    timing: { pingInterval: 200, pongTimeout, connectTimeout: pace.scaled(500) },
    backoff: { initialDelay: 100, maxDelay: 200 },
    requestTimeout: 20_000,
  });
  await page.evaluate(`h.resumes = []; h.client.on('resume', (e) => h.resumes.push(e));`);
  await until(page, 'h.client.sessionId !== null && h.client.rttMs !== null && h.states.filter((s) => s === "pinging").length >= 3');
  const rtt = (await page.evaluate('h.client.rttMs')) as number;
  assert.ok(typeof rtt === 'number' && rtt >= 0 && rtt < pongTimeout, `rttMs ${rtt}`);
  assert.deepEqual((await states(page)).slice(0, 4), ['connecting', 'resuming', 'open', 'pinging']);
  // Heartbeats are not requests: no push, no close, and the first request is still requestID 1, answered.
  assert.deepEqual(await page.evaluate('[h.pushes.length, h.closes.length]'), [0, 0]);
  assert.equal(((await page.evaluate(`h.client.request('still here')`)) as { requestID: number }).requestID, 1);

  // A frozen server: found by the heartbeat (R4), then the session resumes once it thaws.
  server.child.kill('SIGSTOP');
  await until(page, 'h.closes.length >= 1');
  const closure = (await page.evaluate('h.closes[0]')) as Record<string, unknown>;
  assert.deepEqual([closure.reason, closure.cause], ['heartbeat timeout', 'heartbeat-timeout']);
  server.child.kill('SIGCONT');
  await until(page, 'h.resumes.length >= 1 && (h.client.state === "open" || h.client.state === "pinging")', 15_000);
  const resume = (await page.evaluate('h.resumes.at(-1)')) as { resumed: boolean; reason: string | null };
  assert.deepEqual([resume.resumed, resume.reason], [true, null]);
  assert.equal(((await page.evaluate(`h.client.request('back')`)) as { requestID: number; someOtherThing: string }).requestID, 2);
  t.diagnostic(`rttMs ${rtt.toFixed(2)}`);
});
