// Interop with a real browser: headless Chromium (Debian's chromium, driven by
// playwright-core; no browser is downloaded) against the CLI server.
// - the bundled demo page (www/index.html) connects same-origin (R19), gets
//   its reply by requestID (R14), sees the broadcast reply and push, and a
//   second page sees the push too; SIGTERM drains the server and both pages
//   show close 1001 (R17, R18);
// - a page of another origin, and an opaque-origin page (about:blank), are
//   refused at the handshake: Chromium reports error + close 1006 (R19).
// UPDATE_SCREENSHOTS=1 writes docs/images/demo-page.png; otherwise the
// screenshot goes to a temp dir that is removed afterwards.
import { after, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { browser, CHROMIUM, CHROMIUM_INSTALL, newPage, WAIT } from '../helpers/chromium.ts';
import { pace } from '../helpers/pace.ts';
import { metric, metricsOf, REPO_ROOT, startCliServer, type CliServer } from '../helpers/cli.ts';
import { requireBinary } from './require-binary.ts';
import { assertServerHealthy } from './spawn.ts';

const tmp = mkdtempSync(join(tmpdir(), 'ws-supervisor-browser-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Text of every #log line, in order. */
async function logLines(page: Page): Promise<string[]> {
  return page.locator('#log > div').allTextContents();
}

async function openDemo(t: TestContext, server: CliServer): Promise<Page> {
  const page = await newPage(t);
  await page.goto(`${server.base}/`, WAIT);
  await page.click('#connect', WAIT);
  await page.locator('#status', { hasText: /^open$/ }).waitFor(WAIT);
  return page;
}

test('chromium: the demo page connects, gets its reply by requestID, broadcasts to two pages, and shows close 1001 on SIGTERM', { timeout: pace.scaled(90_000) }, async (t) => {
  if (!requireBinary(t, CHROMIUM, CHROMIUM_INSTALL)) return;
  const server = await startCliServer(['--close-timeout', '2000'], t);

  const page1 = await openDemo(t, server);
  await page1.fill('#command', 'Eject the hot dog');
  await page1.fill('#other', 'urgent');
  await page1.click('#send', WAIT);
  const reply1 = '← {"requestID":1,"success":true,"someOtherThing":"Server processed command: Eject the hot dog"}';
  await page1.locator('#log > div.in', { hasText: reply1 }).waitFor(WAIT);

  const page2 = await openDemo(t, server);
  await page1.click('#broadcast', WAIT);
  const reply2 = '← {"requestID":2,"success":true,"someOtherThing":"urgent"}';
  const push = '⇐ push {"command":"broadcast","someOtherThing":"urgent"}';
  await page1.locator('#log > div.push', { hasText: push }).waitFor(WAIT);
  await page2.locator('#log > div.push', { hasText: push }).waitFor(WAIT);
  // The sender gets its reply first, then the push.
  const lines1 = await logLines(page1);
  const iReply = lines1.findIndex((l) => l.includes(reply2));
  const iPush = lines1.findIndex((l) => l.includes(push));
  assert.ok(iReply !== -1 && iReply < iPush, `reply before push in page 1's log:\n${lines1.join('\n')}`);
  // Page 2 sent nothing: the push is its only message besides "connected".
  assert.equal((await logLines(page2)).filter((l) => l.includes('←')).length, 0);

  const update = process.env.UPDATE_SCREENSHOTS === '1';
  const shot = update ? join(REPO_ROOT, 'docs/images/demo-page.png') : join(tmp, 'demo-page.png');
  if (update) mkdirSync(join(REPO_ROOT, 'docs/images'), { recursive: true });
  await page1.screenshot({ path: shot, ...WAIT });
  assert.deepEqual([...readFileSync(shot).subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]); // PNG
  if (update) console.log(`screenshot written to ${shot}`);

  // R18: SIGTERM drains: every page gets close 1001 (going away), cleanly.
  server.child.kill('SIGTERM');
  for (const page of [page1, page2]) {
    await page.locator('#status', { hasText: /^closed 1001\b/ }).waitFor(WAIT);
    const closed = (await logLines(page)).find((l) => l.includes('closed: code'));
    assert.ok(closed?.includes('closed: code 1001') && !closed.includes('not clean'), `clean 1001 close, got ${closed}`);
  }
  let timer: NodeJS.Timeout | undefined;
  const exit = await Promise.race([server.exited, new Promise<null>((r) => (timer = setTimeout(() => r(null), pace.scaled(10_000))))]);
  clearTimeout(timer);
  assert.deepEqual(exit, { code: 0, signal: null }, `server exit after SIGTERM\nstdout: ${server.stdout()}\nstderr: ${server.stderr()}`);
  assert.match(server.stdout(), /draining 2 connection\(s\)/);
  assert.match(server.stdout(), /drained, bye/);
  assert.equal(server.stderr(), '');
});

/** Opens a WebSocket from the page and reports what the page sees (bounded). */
async function tryWebSocket(page: Page, url: string): Promise<{ events: string[]; code: number | null; wasClean: boolean | null }> {
  return page.evaluate(`new Promise((resolve) => {
    const events = [];
    const ws = new WebSocket(${JSON.stringify(url)});
    const timer = setTimeout(() => resolve({ events: [...events, 'timeout'], code: null, wasClean: null }), ${pace.scaled(8000)});
    ws.onopen = () => events.push('open');
    ws.onerror = () => events.push('error');
    ws.onclose = (e) => { clearTimeout(timer); events.push('close'); resolve({ events, code: e.code, wasClean: e.wasClean }); };
  })`);
}

interface Watch {
  /** The Origin header of each WebSocket handshake Chromium sent (from the DevTools protocol). */
  origins: string[];
  /** The page's console messages (Chromium logs why a WebSocket failed there). */
  console: string[];
}

/** Starts watching `page`: handshake Origin headers and console messages. */
async function watch(page: Page): Promise<Watch> {
  const seen: Watch = { origins: [], console: [] };
  page.on('console', (msg) => seen.console.push(msg.text()));
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  cdp.on('Network.webSocketWillSendHandshakeRequest', (e) => {
    const headers = e.request.headers as Record<string, string>;
    const key = Object.keys(headers).find((k) => k.toLowerCase() === 'origin');
    seen.origins.push(key === undefined ? '(none)' : headers[key]!);
  });
  return seen;
}

/** A second loopback http server (another origin: same host, other port) serving one page with `headers`. */
async function otherOrigin(t: TestContext, headers: Record<string, string> = {}): Promise<string> {
  const other = http.createServer((_req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', Connection: 'close', ...headers });
    res.end('<!doctype html><title>elsewhere</title><p>another origin</p>');
  });
  await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
  t.after(
    () =>
      new Promise<void>((resolve) => {
        other.closeAllConnections();
        other.close(() => resolve());
      }),
  );
  return `http://127.0.0.1:${(other.address() as AddressInfo).port}`;
}

const REFUSED_403 = /WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/server' failed: Error during WebSocket handshake: Unexpected response code: 403/;

test('chromium: a page of another origin (another port) is refused at the handshake: 403, error + close 1006', { timeout: pace.scaled(60_000) }, async (t) => {
  if (!requireBinary(t, CHROMIUM, CHROMIUM_INSTALL)) return;
  const server = await startCliServer([], t);
  const origin = await otherOrigin(t);
  const page = await newPage(t);
  await page.goto(`${origin}/`, WAIT);
  const seen = await watch(page);
  const result = await tryWebSocket(page, server.wsUrl);
  t.diagnostic(`Chromium sent Origin ${seen.origins.join(', ')}; page saw ${JSON.stringify(result)}; console: ${seen.console.join(' | ')}`);
  assert.deepEqual(seen.origins, [origin]);
  assert.deepEqual(result, { events: ['error', 'close'], code: 1006, wasClean: false });
  assert.ok(seen.console.some((m) => REFUSED_403.test(m)), `Chromium must report the 403, console: ${seen.console.join(' | ')}`);
  const m = await metricsOf(server.base);
  assert.equal(metric(m, 'ws_supervisor_refused_upgrades_total', { reason: 'origin' }), 1);
  assert.equal(metric(m, 'ws_supervisor_connections'), 0);
  assertServerHealthy(server);
});

// An opaque origin sends `Origin: null`, which R19 refuses. A sandboxed page
// (CSP `sandbox allow-scripts`) has an opaque origin; it is served from
// loopback so Chromium's Local Network Access checks let the request out
// (from about:blank they do not: see the next test).
test('chromium: an opaque-origin page (CSP sandbox, Origin: null) is refused at the handshake: 403, error + close 1006', { timeout: pace.scaled(60_000) }, async (t) => {
  if (!requireBinary(t, CHROMIUM, CHROMIUM_INSTALL)) return;
  const server = await startCliServer([], t);
  const origin = await otherOrigin(t, { 'Content-Security-Policy': 'sandbox allow-scripts' });
  const page = await newPage(t);
  await page.goto(`${origin}/`, WAIT);
  assert.equal(await page.evaluate('self.origin'), 'null');
  const seen = await watch(page);
  const result = await tryWebSocket(page, server.wsUrl);
  t.diagnostic(`Chromium sent Origin ${seen.origins.join(', ')}; page saw ${JSON.stringify(result)}; console: ${seen.console.join(' | ')}`);
  assert.deepEqual(seen.origins, ['null']);
  assert.deepEqual(result, { events: ['error', 'close'], code: 1006, wasClean: false });
  assert.ok(seen.console.some((m) => REFUSED_403.test(m)), `Chromium must report the 403, console: ${seen.console.join(' | ')}`);
  const m = await metricsOf(server.base);
  assert.equal(metric(m, 'ws_supervisor_refused_upgrades_total', { reason: 'origin' }), 1);
  assert.equal(metric(m, 'ws_supervisor_connections'), 0);
  assertServerHealthy(server);
});

// From about:blank (opaque origin, no network address of its own) Chromium
// 142+ blocks a WebSocket to loopback itself (Local Network Access:
// net::ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS) and the server never sees
// it. Either way the page must not get a connection: accept a local block or
// the server's 403, and say which happened.
test('chromium: a WebSocket from about:blank never opens (blocked by Chromium or refused by the server)', { timeout: pace.scaled(60_000) }, async (t) => {
  if (!requireBinary(t, CHROMIUM, CHROMIUM_INSTALL)) return;
  const server = await startCliServer([], t);
  const page = await newPage(t);
  await page.goto('about:blank', WAIT);
  const seen = await watch(page);
  const result = await tryWebSocket(page, server.wsUrl);
  assert.deepEqual(result, { events: ['error', 'close'], code: 1006, wasClean: false });
  const m = await metricsOf(server.base);
  const refused = metric(m, 'ws_supervisor_refused_upgrades_total', { reason: 'origin' });
  const blockedLocally = seen.console.some((msg) => msg.includes('ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS'));
  t.diagnostic(
    `about:blank: ${blockedLocally ? 'blocked by Chromium (Local Network Access), never sent' : `sent with Origin ${seen.origins.join(', ')}, server refused ${refused}`}; console: ${seen.console.join(' | ')}`,
  );
  assert.ok(blockedLocally !== (refused === 1), `exactly one of: blocked by Chromium, refused by the server (refused=${refused}, console: ${seen.console.join(' | ')})`);
  if (!blockedLocally) assert.ok(seen.console.some((msg) => REFUSED_403.test(msg)));
  assert.equal(metric(m, 'ws_supervisor_connections'), 0);
  assertServerHealthy(server);
});

test('chromium: the demo page\'s ?path= names a path on its own server only: "?path=@host:port/…" does not make it connect to another host', { timeout: pace.scaled(60_000) }, async (t) => {
  if (!requireBinary(t, CHROMIUM, CHROMIUM_INSTALL)) return;
  const server = await startCliServer([], t);
  // Another server on loopback stands for the host a crafted link would name; it records every upgrade it gets.
  const upgrades: string[] = [];
  const other = http.createServer();
  other.on('upgrade', (req, socket) => {
    upgrades.push(`${req.headers.host} ${req.url}`);
    socket.destroy();
  });
  await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => other.close(() => resolve())));
  const otherHost = `127.0.0.1:${(other.address() as AddressInfo).port}`;
  // One page, loaded afresh for each link (a new document: its own log and client; the last one's socket closes as it
  // unloads): a new page in a new context for each cost ~0.6 s more of Chromium's CPU apiece (a context, a page, its
  // first renderer; docs/testing.md, "The suite's CPU (the tenth session…)"), and nothing here depends on a new one.
  const page = await newPage(t);
  for (const crafted of [`@${otherHost}/server`, `//${otherHost}/server`, `\\\\${otherHost}/server`, `:1@${otherHost}/server`]) {
    // Without the check, `ws://${location.host}${path}` is ws://127.0.0.1:PORT@OTHER/server: OTHER is the host.
    await page.goto(`${server.base}/?path=${encodeURIComponent(crafted)}`, WAIT);
    await page.click('#connect', WAIT);
    await page.locator('#status', { hasText: /^open$/ }).waitFor(WAIT);
    const lines = await logLines(page);
    assert.ok(lines.some((l) => l.includes(`client for ws://${new URL(server.base).host}/server `)), `?path=${crafted}: the page's own endpoint, log:\n${lines.join('\n')}`);
    assert.ok(lines.some((l) => l.includes('ignored ?path=')), `?path=${crafted}: the page says why, log:\n${lines.join('\n')}`);
  }
  assert.deepEqual(upgrades, [], 'no upgrade reached the other host');
});
