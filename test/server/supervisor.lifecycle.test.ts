/**
 * Lifecycle of supervised connections over real sockets on loopback: request/
 * response on one persistent connection (R1), the close handshake both ways
 * (R16, R17), the close timeout against a peer that never answers (R16),
 * heartbeat liveness against dead, frozen and chatty peers (R4, R5), graceful
 * drain (R18), churn without leaks (R2, R3) and the inspect option.
 *
 * On a busy machine (docs/testing.md): every wait is bounded by a time of an
 * idle machine scaled by the measured pace (test/helpers/pace.ts); margins on
 * top of a bound are scaled the same way, lower bounds ("not before
 * closeTimeout") stay exact; and where the server and its client, both in
 * this process, must answer each other within a timer (a pong within
 * pongTimeout, a close frame within closeTimeout), that timer is scaled too.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import net, { type AddressInfo } from 'node:net';
import { describe, test, type TestContext } from 'node:test';
import WebSocket from 'ws';
import type { InspectionEvent } from 'xstate';
import type { Closure, Connection, Supervisor } from '../../src/index.ts';
import { pace } from '../helpers/pace.ts';
import { closeOf, delay, nextMessage, openClient, startSupervisor, waitFor, type TestServer } from '../helpers/server.ts';

// ---------------------------------------------------------------------------
// Local fixtures
// ---------------------------------------------------------------------------

const stacks = new WeakMap<TestContext, (() => unknown)[]>();

/**
 * Registers a cleanup for when the test ends, pass or fail. Cleanups run last
 * first (clients before servers), each bounded so that a broken close path
 * fails the test instead of hanging the file.
 */
function defer(t: TestContext, fn: () => unknown): void {
  let stack = stacks.get(t);
  if (!stack) {
    const fresh: (() => unknown)[] = [];
    stacks.set(t, (stack = fresh));
    t.after(async () => {
      for (const cleanup of fresh.reverse()) {
        try {
          await within(3000, Promise.resolve().then(cleanup), 'cleanup');
        } catch {
          // Cleanup must not mask the test's own failure.
        }
      }
    });
  }
  stack.push(fn);
}

/** Starts a supervisor and registers its teardown (every socket it accepted is destroyed). */
async function serve(t: TestContext, options: Parameters<typeof startSupervisor>[0] = {}): Promise<TestServer> {
  const ts = await startSupervisor(options);
  const accepted = new Set<net.Socket>();
  ts.server.on('connection', (s) => {
    accepted.add(s);
    s.once('close', () => accepted.delete(s));
  });
  defer(t, async () => {
    try {
      await within(2000, ts.close(), 'supervisor drain and server close');
    } finally {
      for (const s of accepted) s.destroy();
    }
  });
  return ts;
}

/** Opens a ws client and terminates it when the test ends. */
async function client(t: TestContext, url: string, options: WebSocket.ClientOptions = {}): Promise<WebSocket> {
  const ws = await openClient(url, options);
  ws.on('error', () => {});
  defer(t, () => ws.terminate());
  return ws;
}

/** The next connection the supervisor admits. */
function nextConnection(supervisor: Supervisor): Promise<Connection> {
  return new Promise((resolve) => supervisor.once('connection', (c) => resolve(c)));
}

/** The closure of `connection`, as reported by the supervisor's 'close' event. */
function closeEventOf(supervisor: Supervisor, connection: Connection): Promise<Closure> {
  return new Promise((resolve) => {
    const on = (c: Connection, closure: Closure): void => {
      if (c !== connection) return;
      supervisor.off('close', on);
      resolve(closure);
    };
    supervisor.on('close', on);
  });
}

/** A sample of the supervisor's Prometheus text, e.g. metric(s, 'ws_supervisor_closes_total', '{code="1000"}'). */
async function metric(supervisor: Supervisor, name: string, labels = ''): Promise<number | undefined> {
  const text = await supervisor.metrics.registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/**
 * Rejects after `ms` of an idle machine, scaled by the measured pace (a bound
 * on anything that could otherwise hang the file, not a measurement).
 */
function within<T>(idleMs: number, p: Promise<T>, what: string): Promise<T> {
  const ms = pace.scaled(idleMs);
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

interface RawPeer {
  socket: net.Socket;
  /** Everything the server sent after the 101 response. */
  received(): Buffer;
  /** Resolves when the TCP socket is closed (by the server: this peer never closes it). */
  closed: Promise<void>;
  ended: boolean;
}

/**
 * A WebSocket peer that completes the opening handshake by hand over node:net
 * and then ignores everything: it never answers pings or close frames.
 */
async function rawPeer(t: TestContext, port: number, path = '/server'): Promise<RawPeer> {
  const key = randomBytes(16).toString('base64');
  const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
  const socket = net.connect(port, '127.0.0.1');
  defer(t, () => socket.destroy());
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  let buffered = Buffer.alloc(0);
  let handshakeDone = false;
  const peer: RawPeer = { socket, received: () => buffered, closed, ended: false };
  socket.once('end', () => {
    peer.ended = true;
  });
  await within(
    2000,
    new Promise<void>((resolve, reject) => {
      socket.once('connect', () =>
        socket.write(
          `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
            `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
        ),
      );
      socket.on('data', (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk]);
        if (handshakeDone) return;
        const end = buffered.indexOf('\r\n\r\n');
        if (end === -1) return;
        const head = buffered.subarray(0, end).toString('latin1');
        buffered = buffered.subarray(end + 4);
        handshakeDone = true;
        if (!head.startsWith('HTTP/1.1 101 ')) return reject(new Error(`handshake refused: ${head.split('\r\n')[0]}`));
        if (!head.toLowerCase().includes(`sec-websocket-accept: ${accept.toLowerCase()}`)) {
          return reject(new Error('bad Sec-WebSocket-Accept'));
        }
        resolve();
      });
      socket.once('close', () => reject(new Error('closed during handshake')));
    }),
    'raw handshake',
  );
  return peer;
}

/**
 * A TCP proxy between a client and the server that can be frozen: both TCP
 * connections stay open, but nothing is forwarded either way (a half-open
 * path, like a NAT that silently dropped the mapping).
 */
async function freezableProxy(
  t: TestContext,
  targetPort: number,
): Promise<{ port: number; freeze(): void; upstreamClosed: Promise<void> }> {
  let frozen = false;
  let onUpstreamClosed!: () => void;
  const upstreamClosed = new Promise<void>((resolve) => (onUpstreamClosed = resolve));
  const sockets = new Set<net.Socket>();
  const track = (s: net.Socket): void => {
    sockets.add(s);
    s.on('error', () => {});
    s.once('close', () => sockets.delete(s));
  };
  const server = net.createServer((downstream) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    track(downstream);
    track(upstream);
    upstream.once('close', () => onUpstreamClosed());
    // Keep reading (so no TCP backpressure tells anyone anything) but drop the bytes when frozen.
    downstream.on('data', (chunk) => void (frozen || upstream.write(chunk)));
    upstream.on('data', (chunk) => void (frozen || downstream.write(chunk)));
    // A FIN is forwarded only while thawed: a frozen path says nothing at all.
    downstream.on('end', () => void (frozen || upstream.end()));
    upstream.on('end', () => void (frozen || downstream.end()));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  defer(t, async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return {
    port: (server.address() as AddressInfo).port,
    freeze() {
      frozen = true;
    },
    /** Resolves when the server side of the (first) proxied connection is closed. */
    upstreamClosed,
  };
}

/** The HTTP status a WebSocket upgrade attempt gets (101 if it opened). */
function upgradeStatus(url: string): Promise<number> {
  const ws = new WebSocket(url);
  ws.on('error', () => {});
  return within(
    2000,
    new Promise<number>((resolve) => {
      ws.once('unexpected-response', (req, res) => {
        res.resume();
        req.destroy();
        resolve(res.statusCode ?? 0);
      });
      ws.once('open', () => {
        ws.terminate();
        resolve(101);
      });
    }),
    'upgrade response',
  );
}

function countResources(): { timeouts: number; sockets: number } {
  const info = process.getActiveResourcesInfo();
  return {
    timeouts: info.filter((r) => r === 'Timeout').length,
    sockets: info.filter((r) => r === 'TCPSocketWrap').length,
  };
}

const echo = (c: Connection, data: Buffer, isBinary: boolean): void => void c.send(data, isBinary);

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

describe('supervisor lifecycle (real sockets, loopback)', { timeout: pace.scaled(30_000) }, () => {
  test('R1: one connection carries 1,000 sequential request/replies through onMessage without closing', { timeout: pace.scaled(10_000) }, async (t) => {
    const ts = await serve(t, { onMessage: echo, timing: { pingInterval: 200, pongTimeout: pace.scaled(200) } });
    const admitted = nextConnection(ts.supervisor);
    const ws = await client(t, ts.url);
    const connection = await admitted;
    let closes = 0;
    ws.on('close', () => closes++);

    for (let i = 0; i < 1000; i++) {
      const reply = nextMessage(ws);
      ws.send(JSON.stringify({ requestID: `r${i}`, command: 'echo', someOtherThing: i }));
      assert.deepEqual(JSON.parse(await reply), { requestID: `r${i}`, command: 'echo', someOtherThing: i });
    }

    assert.equal(closes, 0);
    assert.equal(ws.readyState, WebSocket.OPEN);
    assert.ok(['open', 'pinging'].includes(connection.stateName), `state ${connection.stateName}`);
    assert.equal(ts.supervisor.size, 1);
    await waitFor(() => connection.stats.messagesOut === 1000, 1000, 'write callbacks');
    const stats = connection.stats;
    assert.equal(stats.messagesIn, 1000);
    assert.equal(stats.messagesOut, 1000);
    assert.ok(stats.bytesIn > 1000 * 40, `bytesIn ${stats.bytesIn}`);
    assert.equal(stats.bytesOut, stats.bytesIn);
    assert.equal(stats.queuedMessages, 0);
    assert.equal(stats.queuedBytes, 0);
  });

  test('R16/R17: a client close 1000 is echoed; closure is remote/peer/expected; hub empty; closes_total{code="1000"} 1', async (t) => {
    const ts = await serve(t, { timing: { closeTimeout: pace.scaled(300) } });
    const admitted = nextConnection(ts.supervisor);
    const ws = await client(t, ts.url);
    const connection = await admitted;
    const closeEvent = closeEventOf(ts.supervisor, connection);
    const clientClose = closeOf(ws);

    ws.close(1000, 'bye');

    assert.deepEqual(await within(2000, clientClose, 'client close'), { code: 1000, reason: 'bye' });
    const closure = await within(2000, closeEvent, "supervisor 'close'");
    assert.deepEqual(closure, {
      code: 1000,
      reason: 'bye',
      initiator: 'remote',
      cause: 'peer',
      expected: true,
      receivedCode: 1000,
    });
    assert.deepEqual(connection.closure, closure);
    assert.equal(connection.stateName, 'closed');
    assert.equal(ts.supervisor.size, 0);
    assert.equal(ts.supervisor.hub.get(connection.id), undefined);
    assert.equal(await metric(ts.supervisor, 'ws_supervisor_closes_total', '{code="1000"}'), 1);
    assert.equal(await metric(ts.supervisor, 'ws_supervisor_connections'), 0);
    assert.equal(connection.send('late'), false, 'nothing is written to a closed connection (R2)');
  });

  test('R17: two connections that end the same way get equal closures, each its own object (machine snapshots are shared)', async (t) => {
    const ts = await serve(t, { timing: { closeTimeout: pace.scaled(300) } });
    const closures: Closure[] = [];
    for (let i = 0; i < 2; i++) {
      const admitted = nextConnection(ts.supervisor);
      const ws = await client(t, ts.url);
      const connection = await admitted;
      const closeEvent = closeEventOf(ts.supervisor, connection);
      ws.close(4000, 'same');
      closures.push(await within(2000, closeEvent, "supervisor 'close'"));
      assert.deepEqual(connection.closure, closures[i]);
    }
    const [a, b] = closures as [Closure, Closure];
    assert.deepEqual(a, b);
    assert.notEqual(a, b, 'not one shared object');
    (a as { reason: string }).reason = 'changed by the application';
    assert.equal(b.reason, 'same', "one connection's closure cannot change another's");
  });

  test('R16: server close(4001) reaches the client; closure is local with receivedCode 4001; unsendable codes throw RangeError', async (t) => {
    const ts = await serve(t, { timing: { closeTimeout: pace.scaled(300) } });
    const admitted = nextConnection(ts.supervisor);
    const ws = await client(t, ts.url);
    const connection = await admitted;

    for (const code of [1006, 999, 5000, 1005, 1004, 1015, 2999, 1000.5]) {
      assert.throws(() => void connection.close(code, 'x'), RangeError, `code ${code}`);
    }
    assert.throws(() => void connection.close(1000, 'x'.repeat(124)), RangeError, 'reason over 123 bytes');
    assert.equal(connection.stateName, 'open', 'a refused close leaves the connection alone');

    const clientClose = closeOf(ws);
    const closure = await within(2000, connection.close(4001, 'x'), 'server close');
    assert.deepEqual(await within(2000, clientClose, 'client close'), { code: 4001, reason: 'x' });
    assert.deepEqual(closure, {
      code: 4001,
      reason: 'x',
      initiator: 'local',
      cause: 'normal',
      expected: false, // R17: only 1000/1001 are expected
      receivedCode: 4001,
    });
    assert.equal(ts.supervisor.size, 0);
  });

  test('R16 close timeout: a peer that never answers our close frame is terminated after closeTimeout', { timeout: pace.scaled(5000) }, async (t) => {
    const closeTimeout = 250;
    const ts = await serve(t, { timing: { closeTimeout, pingInterval: 10_000 } });
    await delay(10);
    const baseline = countResources();
    const admitted = nextConnection(ts.supervisor);
    const peer = await rawPeer(t, ts.port);
    const connection = await within(2000, admitted, 'connection');

    const started = performance.now();
    const closure = await within(2000, connection.close(1000, 'done'), 'closure');
    const elapsed = performance.now() - started;

    assert.ok(elapsed >= closeTimeout - 15, `closed after ${elapsed.toFixed(0)} ms, before closeTimeout ${closeTimeout}`);
    // The bug this catches: ws's own 30 s close timer holding the socket.
    const margin = pace.scaled(500);
    assert.ok(elapsed < closeTimeout + margin, `closed after ${elapsed.toFixed(0)} ms (bound closeTimeout + ${margin} ms)`);
    assert.deepEqual(closure, {
      code: 1000,
      reason: 'done',
      initiator: 'local',
      cause: 'normal',
      expected: false, // R17: the peer never answered our close: not a clean closure
      receivedCode: null,
    });
    assert.equal(connection.stateName, 'closed');
    // The close frame did go out: FIN + opcode 8, unmasked, payload = 1000 + 'done'.
    const frame = peer.received();
    assert.equal(frame[0], 0x88);
    assert.equal(frame[1], 6);
    assert.equal(frame.readUInt16BE(2), 1000);
    assert.equal(frame.subarray(4, 8).toString(), 'done');
    // The server destroyed the TCP connection: the raw peer sees it close.
    await within(1000, peer.closed, 'raw socket close');
    assert.equal(ts.supervisor.size, 0);
    // R3: no timer survives (ours, or ws's own 30 s close timer) and no socket.
    await waitFor(() => {
      const now = countResources();
      return now.timeouts <= baseline.timeouts && now.sockets <= baseline.sockets;
    }, 1000, `resources back to baseline ${JSON.stringify(baseline)}`);
  });

  test('R4 heartbeat: a client that never answers pings is terminated after pingInterval+pongTimeout as a heartbeat timeout', { timeout: pace.scaled(5000) }, async (t) => {
    const pingInterval = 150;
    const pongTimeout = 150;
    const ts = await serve(t, { timing: { pingInterval, pongTimeout } });
    const admitted = nextConnection(ts.supervisor);
    const ws = await client(t, ts.url, { autoPong: false });
    const connection = await admitted;
    const opened = performance.now();
    let pings = 0;
    ws.on('ping', () => pings++);
    const clientClose = closeOf(ws);

    const closure = await within(3000, closeEventOf(ts.supervisor, connection), 'heartbeat timeout');
    const elapsed = performance.now() - opened;

    assert.ok(elapsed >= pingInterval + pongTimeout - 15, `terminated after ${elapsed.toFixed(0)} ms`);
    const margin = pace.scaled(700);
    assert.ok(elapsed < pingInterval + pongTimeout + margin, `terminated after ${elapsed.toFixed(0)} ms (bound +${margin} ms)`);
    assert.equal(closure.code, 1006);
    assert.equal(closure.cause, 'heartbeat-timeout');
    assert.equal(closure.initiator, 'local');
    assert.equal(closure.expected, false);
    assert.equal(closure.receivedCode, null);
    assert.equal(pings, 1, 'exactly one ping went unanswered');
    assert.equal((await within(1000, clientClose, 'client close')).code, 1006, 'no close frame: terminated');
    assert.equal(await metric(ts.supervisor, 'ws_supervisor_heartbeat_timeouts_total'), 1);
    assert.equal(await metric(ts.supervisor, 'ws_supervisor_closes_total', '{code="1006"}'), 1);
    assert.equal(ts.supervisor.size, 0);
  });

  test('R4 heartbeat: a client that answers pings stays connected; state cycles open → pinging → open; rttMs is small and positive', { timeout: pace.scaled(5000) }, async (t) => {
    // The client answers from this process: its pong must beat pongTimeout
    // on this machine, now. Equal timers, so an RTT that wrongly included the
    // interval would still fail `rtt < pongTimeout`.
    const pingInterval = pace.scaled(100);
    const pongTimeout = pace.scaled(100);
    const ts = await serve(t, { timing: { pingInterval, pongTimeout } });
    const admitted = nextConnection(ts.supervisor);
    const ws = await client(t, ts.url);
    const connection = await admitted;
    let pings = 0;
    ws.on('ping', () => pings++);
    const names: string[] = [];
    const sub = connection.machine.subscribe(() => {
      const name = connection.stateName;
      if (names.at(-1) !== name) names.push(name);
    });
    defer(t, () => sub.unsubscribe());
    let serverCloses = 0;
    ts.supervisor.on('close', () => serverCloses++);

    const cycles = (): number => names.filter((n, i) => n === 'open' && names[i - 1] === 'pinging').length;
    await waitFor(() => serverCloses > 0 || (pings >= 3 && cycles() >= 3), 6 * (100 + 10), 'three heartbeat cycles');

    assert.equal(serverCloses, 0);
    assert.equal(ws.readyState, WebSocket.OPEN);
    assert.ok(['open', 'pinging'].includes(connection.stateName));
    assert.ok(pings >= 3, `${pings} pings`);
    assert.ok(cycles() >= 3, `state sequence ${names.join(' → ')}`);
    assert.ok(names.every((n) => n === 'open' || n === 'pinging'), `state sequence ${names.join(' → ')}`);
    const rtt = connection.rttMs;
    assert.ok(rtt !== null && rtt > 0 && rtt < pongTimeout, `rttMs ${String(rtt)}`);
    assert.equal(await metric(ts.supervisor, 'ws_supervisor_heartbeat_timeouts_total'), 0);
  });

  test('R4: behind a frozen TCP path (both connections open, nothing forwarded) the peer is terminated as a heartbeat timeout', { timeout: pace.scaled(5000) }, async (t) => {
    const pingInterval = 150;
    const pongTimeout = pace.scaled(150); // pongs come back through the proxy, in this process

    const ts = await serve(t, { onMessage: echo, timing: { pingInterval, pongTimeout } });
    const proxy = await freezableProxy(t, ts.port);
    const admitted = nextConnection(ts.supervisor);
    const ws = await client(t, `ws://127.0.0.1:${proxy.port}/server`);
    const connection = await admitted;

    // The path works, including through a heartbeat or two.
    await delay(pingInterval + 50);
    await waitFor(() => connection.rttMs !== null || connection.closure !== null, pingInterval + 150, 'a heartbeat through the proxy');
    const reply = nextMessage(ws);
    ws.send('through the proxy');
    assert.equal(await within(1000, reply, 'echo'), 'through the proxy');
    assert.notEqual(connection.rttMs, null, 'pongs came back through the proxy');

    const closeEvent = closeEventOf(ts.supervisor, connection);
    proxy.freeze();
    const frozenAt = performance.now();
    const closure = await within(3000, closeEvent, 'heartbeat timeout');
    const elapsed = performance.now() - frozenAt;

    const margin = pace.scaled(300);
    assert.ok(elapsed < pingInterval + pongTimeout + margin, `terminated ${elapsed.toFixed(0)} ms after the freeze (bound +${margin} ms)`);
    assert.equal(closure.cause, 'heartbeat-timeout');
    assert.equal(closure.code, 1006);
    assert.equal(closure.expected, false);
    assert.equal(ws.readyState, WebSocket.OPEN, 'the client, behind the frozen path, never heard of it');
    await within(1000, proxy.upstreamClosed, 'the server to drop its TCP connection');
    assert.equal(ts.supervisor.size, 0);
    assert.equal(await metric(ts.supervisor, 'ws_supervisor_heartbeat_timeouts_total'), 1);
  });

  test('R5: a client that never answers pings but keeps sending data is not terminated (any inbound traffic proves liveness)', { timeout: pace.scaled(5000) }, async (t) => {
    const pingInterval = 100;
    const pongTimeout = pace.scaled(200);
    const ts = await serve(t, { timing: { pingInterval, pongTimeout } });
    const admitted = nextConnection(ts.supervisor);
    const ws = await client(t, ts.url, { autoPong: false });
    const connection = await admitted;
    let pings = 0;
    ws.on('ping', () => pings++);
    let closure: Closure | null = null;
    void connection.closed.then((c) => (closure = c));

    const chatter = setInterval(() => ws.send('still here'), 25); // well inside pongTimeout
    defer(t, () => clearInterval(chatter));
    // At least as long as an idle machine needs for the counts below; then
    // until they are reached (each unanswered ping alone would end it).
    await delay(4 * (pingInterval + 200));
    await waitFor(() => closure !== null || (pings >= 4 && connection.stats.messagesIn >= 20), 4 * (pingInterval + 200), 'four pings and twenty messages');

    assert.equal(closure, null, `closed: ${JSON.stringify(closure)}`);
    assert.equal(ws.readyState, WebSocket.OPEN);
    assert.ok(pings >= 4, `${pings} unanswered pings`);
    assert.ok(connection.stats.messagesIn >= 20, `${connection.stats.messagesIn} messages in`);
    assert.equal(connection.rttMs, null, 'no pong was ever received');

    // Silence now: the next unanswered ping ends it.
    clearInterval(chatter);
    const silentAt = performance.now();
    const final = await within(2000, connection.closed, 'heartbeat timeout after silence');
    const elapsed = performance.now() - silentAt;
    assert.equal(final.cause, 'heartbeat-timeout');
    const margin = pace.scaled(300);
    assert.ok(elapsed < pingInterval + pongTimeout + margin, `terminated ${elapsed.toFixed(0)} ms after the chatter stopped (bound +${margin} ms)`);
  });

  test('R5: a client that never answers pings but sends ping frames of its own is not terminated (a ping is inbound traffic too)', { timeout: pace.scaled(5000) }, async (t) => {
    const pingInterval = 100;
    const pongTimeout = pace.scaled(200);
    const ts = await serve(t, { timing: { pingInterval, pongTimeout } });
    const admitted = nextConnection(ts.supervisor);
    const ws = await client(t, ts.url, { autoPong: false });
    const connection = await admitted;
    let pings = 0;
    let pongs = 0;
    ws.on('ping', () => pings++);
    ws.on('pong', () => pongs++);
    let closure: Closure | null = null;
    void connection.closed.then((c) => (closure = c));

    // Only control frames: no data message, no pong, just the client's own heartbeat.
    const heartbeat = setInterval(() => ws.ping(), 25); // well inside pongTimeout
    defer(t, () => clearInterval(heartbeat));
    await delay(4 * (pingInterval + 200));
    await waitFor(() => closure !== null || (pings >= 4 && pongs >= 20), 4 * (pingInterval + 200), 'four pings and twenty pongs');

    assert.equal(closure, null, `closed: ${JSON.stringify(closure)}`);
    assert.equal(ws.readyState, WebSocket.OPEN);
    assert.ok(pings >= 4, `${pings} unanswered pings from the server`);
    assert.ok(pongs >= 20, `the server answered ${pongs} of our pings`);
    assert.equal(connection.stats.messagesIn, 0, 'no data message: only ping frames kept it alive');
    assert.equal(connection.rttMs, null, 'no pong was ever received');

    // Silence now: the next unanswered ping ends it.
    clearInterval(heartbeat);
    const final = await within(2000, connection.closed, 'heartbeat timeout after silence');
    assert.equal(final.cause, 'heartbeat-timeout');
  });

  test('R18 drain: close() sends 1001 to all 20 clients, refuses upgrades with 503, and a silent peer holds it only ~closeTimeout', { timeout: pace.scaled(8000) }, async (t) => {
    // The 20 clients answer our close frame from this process: within closeTimeout, on this machine, now.
    const closeTimeout = pace.scaled(300);
    const ts = await serve(t, { timing: { closeTimeout } });
    const clients = await Promise.all(Array.from({ length: 20 }, () => client(t, ts.url)));
    const codes = clients.map((ws) => closeOf(ws));
    const peer = await rawPeer(t, ts.port);
    await waitFor(() => ts.supervisor.size === 21, 2000, '21 connections');
    const closures: Closure[] = [];
    ts.supervisor.on('close', (_c, closure) => closures.push(closure));

    assert.equal(ts.supervisor.isDraining, false);
    const started = performance.now();
    const drained = ts.supervisor.close();
    let drainOver = false;
    void drained.then(() => (drainOver = true));
    assert.equal(ts.supervisor.isDraining, true);
    assert.equal(ts.supervisor.close(), drained, 'close() is idempotent');

    // During the drain (the silent peer holds it open for closeTimeout).
    const during = await upgradeStatus(ts.url);
    assert.equal(drainOver, false, 'the upgrade was tried during the drain');
    assert.equal(during, 503);

    const clientCodes = await within(2000, Promise.all(codes), 'client closes');
    assert.deepEqual(
      clientCodes.map((c) => c.code),
      Array(20).fill(1001),
    );
    assert.ok(clientCodes.every((c) => c.reason === 'server shutting down'));

    await within(closeTimeout + 1000, drained, 'drain');
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= closeTimeout - 15, `drained after ${elapsed.toFixed(0)} ms: the silent peer was given closeTimeout`);
    const margin = pace.scaled(500);
    assert.ok(elapsed < closeTimeout + margin, `drained after ${elapsed.toFixed(0)} ms (bound closeTimeout + ${margin} ms)`);
    await within(1000, peer.closed, 'silent peer terminated');

    assert.equal(ts.supervisor.isDraining, true);
    assert.equal(ts.supervisor.size, 0);
    assert.equal(closures.length, 21);
    assert.equal(closures.filter((c) => c.code === 1001 && c.cause === 'shutdown').length, 21);
    // R17: only the 20 that answered our close frame closed cleanly.
    assert.equal(closures.filter((c) => c.expected).length, 20);
    assert.equal(closures.filter((c) => c.receivedCode === 1001).length, 20);
    assert.equal(closures.filter((c) => c.receivedCode === null).length, 1, 'the silent peer never answered');

    // After the drain (the http server is still listening and the supervisor attached).
    assert.equal(ts.server.listening, true);
    assert.equal(await upgradeStatus(ts.url), 503);
    assert.equal(await metric(ts.supervisor, 'ws_supervisor_refused_upgrades_total', '{reason="draining"}'), 2);
    assert.equal(await metric(ts.supervisor, 'ws_supervisor_closes_total', '{code="1001"}'), 21);
  });

  test('R2/R3 churn: 300 connect/close cycles (client close, server close, client terminate) leave nothing behind', { timeout: pace.scaled(20_000) }, async (t) => {
    const ts = await serve(t, { timing: { closeTimeout: pace.scaled(300), pingInterval: 150, pongTimeout: pace.scaled(150) } });
    await delay(20);
    const baseline = countResources();

    const byCycle = new Map<string, Connection>();
    ts.supervisor.on('connection', (c, request) => byCycle.set(String(request.headers['x-cycle']), c));
    const closeCounts = new Map<string, number>();
    const causes = new Map<string, number>();
    ts.supervisor.on('close', (c, closure) => {
      closeCounts.set(c.id, (closeCounts.get(c.id) ?? 0) + 1);
      const key = `${closure.initiator}/${closure.cause}/${closure.code}`;
      causes.set(key, (causes.get(key) ?? 0) + 1);
    });

    const cycle = async (i: number): Promise<void> => {
      const ws = await openClient(ts.url, { headers: { 'x-cycle': String(i) } });
      ws.on('error', () => {});
      defer(t, () => ws.terminate());
      await waitFor(() => byCycle.has(String(i)), 2000, `connection ${i}`);
      const connection = byCycle.get(String(i))!;
      // Some traffic first, so the data path is exercised too.
      ws.send(`hello ${i}`);
      await waitFor(() => connection.stats.messagesIn === 1, 2000, `message ${i}`);
      switch (i % 3) {
        case 0: {
          const closed = closeOf(ws);
          ws.close(1000, 'client done');
          assert.equal((await closed).code, 1000);
          await connection.closed;
          break;
        }
        case 1: {
          const closed = closeOf(ws);
          await connection.close(1000, 'server done');
          assert.equal((await closed).code, 1000);
          break;
        }
        default: {
          const closed = closeOf(ws);
          ws.terminate();
          await closed;
          await connection.closed;
        }
      }
    };

    const total = 300;
    const batch = 50;
    for (let start = 0; start < total; start += batch) {
      await within(
        5000,
        Promise.all(Array.from({ length: batch }, (_, k) => cycle(start + k))),
        `batch at ${start}`,
      );
    }

    await waitFor(() => closeCounts.size === total, 2000, 'all close events');
    assert.equal(ts.supervisor.size, 0);
    assert.equal(await metric(ts.supervisor, 'ws_supervisor_connections'), 0);
    assert.equal(byCycle.size, total);
    assert.equal(closeCounts.size, total);
    assert.deepEqual(
      [...closeCounts.values()].filter((n) => n !== 1),
      [],
      "every connection's 'close' fired exactly once",
    );
    for (const c of byCycle.values()) assert.ok(closeCounts.has(c.id));
    assert.deepEqual(Object.fromEntries([...causes].sort()), {
      'local/normal/1000': 100,
      'remote/peer/1000': 100,
      'remote/socket-error/1006': 100,
    });
    assert.equal(await metric(ts.supervisor, 'ws_supervisor_closes_total', '{code="1000"}'), 200);
    assert.equal(await metric(ts.supervisor, 'ws_supervisor_closes_total', '{code="1006"}'), 100);

    // The supervisor is closed; the http server still listens.
    await ts.supervisor.close();
    assert.equal(ts.server.listening, true);
    let now = countResources();
    try {
      await waitFor(
        () => {
          now = countResources();
          return now.timeouts <= baseline.timeouts && now.sockets <= baseline.sockets;
        },
        2000,
        'resource counts back to baseline',
      );
    } catch {
      assert.fail(`leaked handles: baseline ${JSON.stringify(baseline)}, now ${JSON.stringify(now)}: ${process.getActiveResourcesInfo().join(', ')}`);
    }
  });

  test('inspect option: @xstate.snapshot events trace connecting → open → pinging → closing → closed on a server-initiated close', { timeout: pace.scaled(5000) }, async (t) => {
    const events: InspectionEvent[] = [];
    const ts = await serve(t, {
      timing: { pingInterval: 50, pongTimeout: pace.scaled(200), closeTimeout: pace.scaled(300) },
      inspect: (e) => events.push(e),
    });
    const admitted = nextConnection(ts.supervisor);
    const ws = await client(t, ts.url);
    const connection = await admitted;
    await waitFor(() => connection.rttMs !== null, 2000, 'a heartbeat round trip');
    const clientClose = closeOf(ws);
    await within(2000, connection.close(1000, 'bye'), 'server close');
    assert.equal((await clientClose).code, 1000);

    const values = events
      .filter((e): e is Extract<InspectionEvent, { type: '@xstate.snapshot' }> => e.type === '@xstate.snapshot')
      .filter((e) => e.actorRef === connection.machine)
      .map((e) => JSON.stringify((e.snapshot as { value?: unknown }).value));
    const distinct = values.filter((v, i) => v !== values[i - 1]);
    const expected = [
      '"connecting"',
      '{"open":{"heartbeat":"idle","write":"flowing"}}',
      '{"open":{"heartbeat":"pinging","write":"flowing"}}',
      '{"closing":"handshake"}',
      '"closed"',
    ];
    for (const v of expected) assert.ok(distinct.includes(v), `missing ${v} in ${distinct.join(' → ')}`);
    assert.equal(distinct[0], '"connecting"');
    assert.equal(distinct.at(-1), '"closed"');
    assert.equal(distinct.at(-2), '{"closing":"handshake"}');
    const pinging = distinct.indexOf(expected[2]!);
    assert.equal(distinct[pinging + 1], expected[1], 'a pong leads from pinging back to idle');
    // One actor per connection as inspectors see it: its reader and writer are hosted by it (src/server/runner.ts).
    assert.equal(events.filter((e) => e.type === '@xstate.actor' && e.actorRef === connection.machine).length, 1);
    assert.ok(events.every((e) => e.actorRef === connection.machine), 'no other actors: the reader and writer are hosted');
  });

  test('R4: an event-loop stall longer than the pong timeout does not kill a peer whose pong is already waiting', { timeout: pace.scaled(10_000) }, async (t) => {
    // The peer runs in another process, so it answers the ping while this
    // process is blocked; when the loop resumes the overdue pong timer fires
    // first, and the machine's `suspect` state lets the waiting pong be read.
    const pongTimeout = 100;
    // Longer than the pong timeout, and long enough for the peer (another
    // process, on this machine, now) to answer the ping during the stall.
    const stallMs = pongTimeout + pace.scaled(200);
    const ts = await serve(t, { timing: { pingInterval: 150, pongTimeout, closeTimeout: 200 } });
    const admitted = nextConnection(ts.supervisor);
    const { spawn } = await import('node:child_process');
    const peer = spawn(
      process.execPath,
      ['-e', `const W=require('ws');const w=new W(${JSON.stringify(ts.url)});w.on('open',()=>console.log('open'));setTimeout(()=>process.exit(0),${pace.scaled(8000) + 3 * stallMs})`],
      { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'inherit'] },
    );
    defer(t, () => peer.kill('SIGKILL'));
    const connection = await within(5000, admitted, 'the child peer connects');
    const seen: string[] = [];
    let stalls = 0;
    const sub = connection.machine.subscribe((snap) => {
      const name = connection.stateName;
      if (seen.at(-1) !== name) seen.push(name);
      if (snap.matches({ open: { heartbeat: 'pinging' } }) && stalls < 3) {
        stalls++;
        // Once the ping is on the wire (the writer runs synchronously after this
        // transition), block the loop for longer than the pong timeout, before any I/O is read.
        queueMicrotask(() => {
          const until = performance.now() + stallMs;
          while (performance.now() < until);
        });
      }
    });
    defer(t, () => sub.unsubscribe());
    await waitFor(() => stalls >= 3 && connection.stateName === 'open', 5000, 'three stalled heartbeats');
    assert.equal(connection.closure, null, `the peer was kept through ${stalls} stalls (states: ${seen.join(' → ')})`);
    assert.ok(connection.rttMs !== null && connection.rttMs >= stallMs - 50, `rttMs ${connection.rttMs} includes the ${stallMs} ms stall`);
  });
});
