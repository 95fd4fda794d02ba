/**
 * The demo server in-process (startDemoServer on 127.0.0.1, port 0): many
 * concurrent clients doing request/response, and the close metrics.
 *
 * Rules covered: R1 (one connection serves many requests), R3 (the registry
 * and the connections gauge return to 0), R13/R14 (every request gets exactly
 * its own reply, in order), R17 (clean closes are counted under 1000).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import WebSocket from 'ws';
import { startDemoServer, type DemoServer } from '../../src/cli/demo-server.ts';
import { closeOf, openClient, waitFor } from '../helpers/server.ts';
import { httpGet, metric } from '../helpers/cli.ts';
import { pace } from '../helpers/pace.ts';

async function start(t: { after(fn: () => Promise<void> | void): void }): Promise<{ demo: DemoServer; url: string; base: string }> {
  const demo = await startDemoServer({ host: '127.0.0.1', port: 0 });
  t.after(() => demo.close());
  const { port } = demo.address;
  return { demo, url: `ws://127.0.0.1:${port}/server`, base: `http://127.0.0.1:${port}` };
}

/** Opens `n` clients, `batch` handshakes at a time (no SYN flood). */
async function openMany(url: string, n: number, batch: number, into: WebSocket[]): Promise<WebSocket[]> {
  const out: WebSocket[] = [];
  for (let i = 0; i < n; i += batch) {
    const opened = await Promise.all(Array.from({ length: Math.min(batch, n - i) }, () => openClient(url)));
    for (const ws of opened) ws.on('error', () => undefined);
    out.push(...opened);
    into.push(...opened);
  }
  return out;
}

async function closesByCode(demo: DemoServer): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const v of (await demo.supervisor.metrics.closesTotal.get()).values) out[String(v.labels.code)] = v.value;
  return out;
}

async function gauge(demo: DemoServer): Promise<number> {
  return (await demo.supervisor.metrics.connections.get()).values[0]?.value ?? 0;
}

interface Received {
  requestID: unknown;
  success: unknown;
  someOtherThing: unknown;
}

/**
 * Sends `requests` requests one after another, each only once the previous
 * one's reply is in. Resolves when the last reply arrives; records every
 * message received (duplicates and strays included) in `sink`.
 */
function runClient(ws: WebSocket, index: number, requests: number, sink: Received[]): Promise<void> {
  const request = (id: number): string => JSON.stringify({ requestID: id, command: `c${index}r${id}`, someOtherThing: '' });
  return new Promise((resolve, reject) => {
    let outstanding = 1;
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString()) as Received;
      sink.push(m);
      if (m.requestID !== outstanding) return; // a stray or duplicate: recorded, judged later
      if (outstanding === requests) {
        resolve();
        return;
      }
      outstanding++;
      ws.send(request(outstanding));
    });
    ws.once('close', (code) => reject(new Error(`client ${index} closed (${code}) after ${sink.length} replies`)));
    ws.send(request(1));
  });
}

test('1,000 concurrent clients × 50 sequential requests: no reply lost, duplicated or reordered (R1, R3, R13, R14)', { timeout: pace.scaled(90_000) }, async (t) => {
  const CLIENTS = 1000;
  const REQUESTS = 50;
  const BATCH = 100;
  const { demo, url } = await start(t);
  const all: WebSocket[] = [];
  t.after(() => {
    for (const ws of all) ws.terminate();
  });

  const openedAt = performance.now();
  const clients = await openMany(url, CLIENTS, BATCH, all);
  await waitFor(() => demo.supervisor.size === CLIENTS, 10_000, `${CLIENTS} supervised connections`);
  assert.equal(await gauge(demo), CLIENTS);
  const openMs = performance.now() - openedAt;

  const sinks: Received[][] = clients.map(() => []);
  const started = performance.now();
  let watchdog: NodeJS.Timeout | undefined;
  const watchdogMs = pace.scaled(45_000); // ends a hang; scaled by the measured pace (test/helpers/pace.ts)
  await Promise.race([
    Promise.all(clients.map((ws, i) => runClient(ws, i, REQUESTS, sinks[i]!))),
    new Promise<never>((_, reject) => {
      watchdog = setTimeout(() => {
        const stuck = sinks.filter((s) => s.length < REQUESTS).length;
        reject(new Error(`${stuck} of ${CLIENTS} clients still waiting for replies after ${watchdogMs} ms`));
      }, watchdogMs);
    }),
  ]).finally(() => clearTimeout(watchdog));
  const elapsedMs = performance.now() - started;
  const total = CLIENTS * REQUESTS;
  console.log(
    `opened ${CLIENTS} clients in ${openMs.toFixed(0)} ms; ${total} request/reply round trips in ${elapsedMs.toFixed(0)} ms ` +
      `(${Math.round((total / elapsedMs) * 1000)} req/s)`,
  );

  // Close every client cleanly; any late duplicate would arrive before our close completes.
  const closedAt = performance.now();
  const codes = await Promise.all(
    clients.map((ws) => {
      const closed = closeOf(ws);
      ws.close(1000);
      return closed;
    }),
  );
  for (const c of codes) assert.equal(c.code, 1000);
  await waitFor(() => demo.supervisor.size === 0, 10_000, 'supervisor size 0');
  console.log(`closed ${CLIENTS} clients in ${(performance.now() - closedAt).toFixed(0)} ms`);

  for (let i = 0; i < CLIENTS; i++) {
    const got = sinks[i]!;
    assert.equal(got.length, REQUESTS, `client ${i}: exactly ${REQUESTS} replies`);
    got.forEach((m, k) => {
      const id = k + 1;
      assert.deepEqual(m, { requestID: id, success: true, someOtherThing: `Server processed command: c${i}r${id}` }, `client ${i} reply ${id}`);
    });
  }

  assert.equal(demo.supervisor.size, 0);
  assert.equal([...demo.supervisor.hub].length, 0, 'registry empty (R3)');
  assert.equal(await gauge(demo), 0, 'connections gauge back to 0');
  assert.deepEqual(await closesByCode(demo), { '1000': CLIENTS });
});

test('metrics: N clean closes (client- or server-initiated) count N under code 1000 (R17)', { timeout: pace.scaled(30_000) }, async (t) => {
  const N = 20;
  const { demo, url, base } = await start(t);
  const all: WebSocket[] = [];
  t.after(() => {
    for (const ws of all) ws.terminate();
  });
  const clients = await openMany(url, N, 10, all);
  await waitFor(() => demo.supervisor.size === N, 5_000, `${N} connections`);

  // Half close from the client side, half from the server (Connection#close defaults to 1000).
  const closes = clients.map((ws) => closeOf(ws));
  const clientSide = clients.slice(0, N / 2);
  const serverSidePorts = new Set(clients.slice(N / 2).map((ws) => `127.0.0.1:${(ws as unknown as { _socket: { localPort: number } })._socket.localPort}`));
  const serverSide = [...demo.supervisor.hub].filter((c) => serverSidePorts.has(c.remoteAddress));
  assert.equal(serverSide.length, N / 2);
  for (const ws of clientSide) ws.close(1000, 'client done');
  for (const c of serverSide) void c.close();
  for (const { code } of await Promise.all(closes)) assert.equal(code, 1000);
  await waitFor(() => demo.supervisor.size === 0, 5_000, 'supervisor size 0');

  assert.deepEqual(await closesByCode(demo), { '1000': N });
  const r = await httpGet(`${base}/metrics`);
  assert.equal(r.status, 200);
  assert.equal(metric(r.body, 'ws_supervisor_closes_total', { code: '1000' }), N);
  assert.equal(metric(r.body, 'ws_supervisor_connections'), 0);
});

/** A socket that sends half an upgrade request and then nothing (slowloris). */
function halfUpgrade(port: number): Promise<{ socket: import('node:net').Socket; closedAt: Promise<number> }> {
  return import('node:net').then(({ default: net }) => new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.write('GET /server HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n');
      resolve({ socket, closedAt: new Promise((r) => socket.once('close', () => r(performance.now()))) });
    });
    socket.on('error', () => undefined);
    socket.once('error', reject);
  }));
}

test('slowloris: half-sent request heads are cut after headersTimeout (408) even if the peer never reads, and sockets beyond maxConnections + httpHeadroom are refused at accept; a real client is served again at once', { timeout: pace.scaled(20_000) }, async (t) => {
  const demo = await startDemoServer({ host: '127.0.0.1', port: 0, maxConnections: 3, httpHeadroom: 2, headersTimeout: 600 });
  t.after(() => demo.close());
  const { port } = demo.address;
  const connections = (): Promise<number> => new Promise((r, j) => demo.server.getConnections((e, n) => (e ? j(e) : r(n))));
  const started = performance.now();
  const held = await Promise.all(Array.from({ length: 5 }, () => halfUpgrade(port)));
  t.after(() => held.forEach((h) => h.socket.destroy()));
  for (let i = 0; (await connections()) < 5; i++) {
    assert.ok(i < 100, 'the server accepted the 5 sockets');
    await new Promise((r) => setTimeout(r, 10));
  }
  // 5 = 3 + 2 sockets: the next one is dropped by Node at accept, never held.
  const extra = await halfUpgrade(port);
  extra.socket.resume();
  let extraTimer: NodeJS.Timeout | undefined;
  const extraClosed = await Promise.race([extra.closedAt, new Promise<number>((r) => (extraTimer = setTimeout(() => r(-1), pace.scaled(500))))]);
  clearTimeout(extraTimer);
  assert.ok(extraClosed > 0, 'a socket over maxConnections + httpHeadroom is closed at once');
  // The held peers never read: the server still lets go of them. The margin is
  // scaled by the pace, and kept below the 30 s requestTimeout (the next bound
  // that would let them go), so a headersTimeout that does not apply still fails.
  const margin = Math.min(pace.scaled(2000), 15_000);
  for (;;) {
    if ((await connections()) === 0) break;
    assert.ok(performance.now() - started < 600 + margin, `half-sent heads are let go within headersTimeout + ${margin} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
  held[0]!.socket.resume();
  const answer = await new Promise<string>((r) => held[0]!.socket.once('data', (d: Buffer) => r(d.toString())));
  assert.match(answer, /^HTTP\/1\.1 408 Request Timeout/);
  const ws = await openClient(`ws://127.0.0.1:${port}/server`);
  ws.close();
  await closeOf(ws);
});

test('a request head over the HTTP header limit (an upgrade or a GET) is answered 431 Request Header Fields Too Large and closed; the server keeps serving', { timeout: pace.scaled(20_000) }, async (t) => {
  const { url } = await start(t);
  const { port } = new URL(url);
  const { default: net } = await import('node:net');
  // Node's limit on a request head is 16 KiB (--max-http-header-size); this one is 100 KB in one header.
  const oversized = (head: string): Promise<string> =>
    new Promise((resolve, reject) => {
      const socket = net.connect(Number(port), '127.0.0.1', () => socket.write(`${head}X-Big: ${'a'.repeat(100_000)}\r\n\r\n`));
      let answer = '';
      socket.on('data', (d: Buffer) => (answer += d.toString()));
      socket.on('error', () => undefined);
      socket.once('close', () => resolve(answer));
      setTimeout(() => reject(new Error(`no close; answered ${JSON.stringify(answer)}`)), pace.scaled(5_000)).unref();
    });
  const upgrade = 'GET /server HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n';
  // RFC 6585 §5 (and Node's own answer without a clientError handler): 431, not a bare 400.
  assert.match(await oversized(upgrade), /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/);
  assert.match(await oversized('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n'), /^HTTP\/1\.1 431 /);
  const ws = await openClient(url);
  ws.close();
  await closeOf(ws);
});

test('the demo page links to the dashboard; both pages declare their icon, so a browser asks for no /favicon.ico (which would 404)', { timeout: pace.scaled(20_000) }, async (t) => {
  const { base } = await start(t);
  const demo = await httpGet(`${base}/`);
  assert.equal(demo.status, 200);
  const link = /<a href="([^"]+)"[^>]*>dashboard<\/a>/.exec(demo.body);
  assert.ok(link, 'the demo page has a link to the dashboard');
  const dashboard = await httpGet(new URL(link[1]!, `${base}/`).href);
  assert.equal(dashboard.status, 200, `GET ${link[1]}`);
  assert.match(String(dashboard.headers['content-type']), /^text\/html/);
  assert.match(dashboard.body, /<h1>/);

  for (const [name, html] of [['demo page', demo.body], ['dashboard', dashboard.body]] as const) {
    const icon = /<link rel="icon" href="([^"]*)">/.exec(html);
    assert.ok(icon, `the ${name} declares an icon in its <head>`);
    assert.ok(html.indexOf(icon[0]) < html.indexOf('</head>'), `the ${name}'s icon is in <head>`);
    const href = icon[1]!;
    if (href.startsWith('data:')) continue; // inline: nothing to fetch
    const got = await httpGet(new URL(href, `${base}/`).href);
    assert.equal(got.status, 200, `the ${name}'s icon ${href} is served`);
  }
});
