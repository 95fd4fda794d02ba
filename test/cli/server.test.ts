/**
 * The CLI end to end: `node --import tsx src/cli/main.ts server ...` spawned as a
 * real process on 127.0.0.1, driven by `ws` clients, a hand-rolled raw
 * WebSocket client (for frames `ws` will not send and peers that misbehave),
 * plain HTTP and signals.
 *
 * Rules covered: R4–R6 (heartbeat flags), R9/R11 (send queue, slow consumer),
 * R13–R15 (protocol, bad input, close codes 1002/1007/1009), R17 (1006 on a
 * dead peer), R18 (SIGTERM/SIGINT drain), R19 (origins), R21 (max payload).
 */
import assert from 'node:assert/strict';
import net, { type AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { closeOf, delay, openClient, within } from '../helpers/server.ts';
import {
  budgets,
  httpGet,
  metric,
  metricsOf,
  OP,
  RawWsClient,
  runCli,
  startCliServer,
  upgradeStatus,
  type CliServer,
} from '../helpers/cli.ts';

/** Measured once, before the tests are declared: their timeouts and margins scale with this machine's speed now. */
const budget = await budgets();


/** Collects every message a `ws` client receives, in order (no message can slip between two awaits). */
class Inbox {
  readonly messages: string[] = [];
  private waiters: Array<() => void> = [];
  constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      this.messages.push(data.toString());
      const w = this.waiters;
      this.waiters = [];
      for (const fn of w) fn();
    });
    ws.on('error', () => undefined); // a late socket error must not crash the runner
  }

  /** Waits until at least `n` messages have arrived; returns them all. */
  async atLeast(n: number, timeoutMs = 5_000): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.messages.length < n) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`expected ${n} message(s) within ${timeoutMs} ms, got ${this.messages.length}: ${this.messages.join(' | ').slice(0, 500)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.messages;
  }

  /** The first message (removing it and everything before it) that parses to something `pred` accepts. */
  async take(pred: (m: Record<string, unknown>) => boolean, timeoutMs = 5_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (let i = 0; i < this.messages.length; i++) {
        const m = JSON.parse(this.messages[i]!) as Record<string, unknown>;
        if (pred(m)) {
          this.messages.splice(0, i + 1);
          return m;
        }
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no matching message within ${timeoutMs} ms (have ${this.messages.length})`);
      await this.atLeast(this.messages.length + 1, left).catch(() => undefined);
    }
  }

  /** The reply with `requestID`. */
  reply(requestID: number, timeoutMs = 5_000): Promise<Record<string, unknown>> {
    return this.take((m) => m.requestID === requestID, timeoutMs);
  }
}

async function client(url: string, options: WebSocket.ClientOptions = {}): Promise<Inbox> {
  return new Inbox(await openClient(url, options));
}

/** Closes `ws` clients that are still open (cleanup, never throws). */
function closeAll(clients: Iterable<WebSocket>): void {
  for (const ws of clients) if (ws.readyState !== WebSocket.CLOSED) ws.terminate();
}

// ---------------------------------------------------------------------------

// In-process: parse errors need no server, and ~30 CLI processes started at
// once for them failed on a busy 2-core machine (docs/testing.md). One bad
// flag, an unknown command and --help run as the CLI: one per exit path of main.ts.
// Bad flags, --help and the CLI's exit paths: test/cli/args.test.ts (in-process, and one CLI run per exit path of main.ts).

// ---------------------------------------------------------------------------

describe('CLI protocol (R13–R15)', { timeout: budget.scaled(60_000) }, () => {
  let srv: CliServer;
  const clients: WebSocket[] = [];
  const open = async (): Promise<Inbox> => {
    const c = await client(srv.wsUrl);
    clients.push(c.ws);
    return c;
  };
  before(async () => {
    srv = await startCliServer();
  });
  after(() => {
    closeAll(clients);
    srv?.kill();
  });

  test('a request gets its reply (R13, R14)', { timeout: budget.scaled(10_000) }, async () => {
    const a = await open();
    a.ws.send('{"requestID":1,"command":"hello","someOtherThing":"x"}');
    const [reply] = await a.atLeast(1);
    assert.equal(reply, '{"requestID":1,"success":true,"someOtherThing":"Server processed command: hello"}');
    a.ws.close(1000);
  });

  test('field names are matched case-insensitively (R13)', { timeout: budget.scaled(10_000) }, async () => {
    const a = await open();
    a.ws.send('{"RequestID":2,"Command":"Pause downloader","SomeOtherThing":"urgent"}');
    const reply = await a.reply(2);
    assert.deepEqual(reply, { requestID: 2, success: true, someOtherThing: 'Server processed command: Pause downloader' });
    a.ws.close(1000);
  });

  test('broadcast: the sender gets its reply before the push; all three get the push', { timeout: budget.scaled(10_000) }, async () => {
    const [a, b, c] = [await open(), await open(), await open()];
    a.ws.send('{"requestID":3,"command":"broadcast","someOtherThing":"to everyone"}');
    const [first, second] = await a.atLeast(2);
    assert.equal(first, '{"requestID":3,"success":true,"someOtherThing":"to everyone"}', 'reply first');
    assert.equal(second, '{"command":"broadcast","someOtherThing":"to everyone"}', 'then the push');
    for (const other of [b, c]) {
      const [push] = await other.atLeast(1);
      assert.deepEqual(JSON.parse(push!), { command: 'broadcast', someOtherThing: 'to everyone' });
      assert.ok(!('requestID' in JSON.parse(push!)), 'a push carries no requestID');
    }
    await delay(100);
    assert.equal(a.messages.length, 2, 'exactly one reply and one push');
    assert.equal(b.messages.length, 1);
    assert.equal(c.messages.length, 1);
    for (const x of [a, b, c]) x.ws.close(1000);
  });

  const badInputs: Array<[string, string | Buffer]> = [
    ['malformed JSON', '{"requestID":1,'],
    ['a JSON array', '[1,2,3]'],
    ['a string requestID', '{"requestID":"7"}'],
    ['a fractional requestID', '{"requestID":1.5}'],
  ];
  for (const [name, input] of badInputs) {
    test(`${name} gets an error reply and the connection stays usable (R15)`, { timeout: budget.scaled(10_000) }, async () => {
      const a = await open();
      a.ws.send(input);
      const [raw] = await a.atLeast(1);
      const err = JSON.parse(raw!) as Record<string, unknown>;
      assert.equal(err.requestID, 0);
      assert.equal(err.success, false);
      assert.equal(typeof err.error, 'string');
      assert.ok((err.error as string).length > 0);
      a.ws.send('{"requestID":11,"command":"still here"}');
      assert.deepEqual(await a.reply(11), { requestID: 11, success: true, someOtherThing: 'Server processed command: still here' });
      assert.equal(a.ws.readyState, WebSocket.OPEN);
      a.ws.close(1000);
    });
  }

  test('a binary frame gets an error reply and the connection stays usable (R15)', { timeout: budget.scaled(10_000) }, async () => {
    const a = await open();
    a.ws.send(Buffer.from('{"requestID":5,"command":"hello"}'), { binary: true });
    const [raw] = await a.atLeast(1);
    const err = JSON.parse(raw!) as Record<string, unknown>;
    assert.equal(err.success, false);
    assert.equal(err.requestID, 0);
    assert.match(String(err.error), /binary/);
    a.ws.send('{"requestID":12,"command":"text"}');
    assert.equal((await a.reply(12)).success, true);
    a.ws.close(1000);
  });
});

// ---------------------------------------------------------------------------

describe('CLI close codes and HTTP endpoints', { timeout: budget.scaled(60_000) }, () => {
  let srv: CliServer;
  before(async () => {
    srv = await startCliServer(['--max-payload', '1024']);
  });
  after(() => srv?.kill());

  test('a text frame that is not UTF-8 closes 1007 (R15)', { timeout: budget.scaled(10_000) }, async (t) => {
    const raw = await RawWsClient.connect(srv.port);
    t.after(() => raw.destroy());
    raw.send(OP.TEXT, Buffer.from([0xff, 0xfe]));
    assert.equal((await raw.closeFrame()).code, 1007);
    await raw.ended;
  });

  test('a message over --max-payload closes 1009 (R15, R21)', { timeout: budget.scaled(10_000) }, async (t) => {
    const ws = await openClient(srv.wsUrl);
    t.after(() => ws.terminate());
    ws.on('error', () => undefined);
    const closed = closeOf(ws);
    ws.send(JSON.stringify({ requestID: 1, command: 'x', someOtherThing: 'y'.repeat(2048) }));
    assert.equal((await closed).code, 1009);
  });

  test('a message at --max-payload is fine', { timeout: budget.scaled(10_000) }, async (t) => {
    const a = await client(srv.wsUrl);
    t.after(() => a.ws.terminate());
    const head = '{"requestID":9,"command":"x","someOtherThing":"';
    const msg = head + 'y'.repeat(1024 - head.length - 2) + '"}';
    assert.equal(Buffer.byteLength(msg), 1024);
    a.ws.send(msg);
    assert.equal((await a.reply(9)).success, true);
    a.ws.close(1000);
  });

  test('an unmasked client frame closes 1002 (R15)', { timeout: budget.scaled(10_000) }, async (t) => {
    const raw = await RawWsClient.connect(srv.port);
    t.after(() => raw.destroy());
    raw.send(OP.TEXT, '{"requestID":1}', { mask: false });
    assert.equal((await raw.closeFrame()).code, 1002);
    await raw.ended;
  });

  test('a plain GET on /server is 426 with Upgrade: websocket', { timeout: budget.scaled(10_000) }, async () => {
    const r = await httpGet(`${srv.base}/server`);
    assert.equal(r.status, 426);
    assert.equal(r.headers.upgrade?.toLowerCase(), 'websocket');
  });

  test('GET /healthz is 200 ok', { timeout: budget.scaled(10_000) }, async () => {
    const r = await httpGet(`${srv.base}/healthz`);
    assert.equal(r.status, 200);
    assert.equal(r.body.trim(), 'ok');
  });

  test('GET / serves the HTML demo client', { timeout: budget.scaled(10_000) }, async () => {
    const r = await httpGet(`${srv.base}/`);
    assert.equal(r.status, 200);
    assert.match(String(r.headers['content-type']), /text\/html/);
    assert.match(r.body, /<html/i);
    // The page runs the browser client bundle (R7, R22), served by the same server.
    assert.match(r.body, /from '\/ws-supervisor-client\.js'/);
    assert.match(r.body, /createClient\(/);
    const bundle = await httpGet(`${srv.base}/ws-supervisor-client.js`);
    assert.equal(bundle.status, 200, 'the bundle is built (npm run build) and served');
    assert.match(String(bundle.headers['content-type']), /javascript/);
  });

  test('GET /nope is 404', { timeout: budget.scaled(10_000) }, async () => {
    const r = await httpGet(`${srv.base}/nope`);
    assert.equal(r.status, 404);
  });

  test('GET /metrics counts connections and closes by code', { timeout: budget.scaled(10_000) }, async () => {
    const before = await metricsOf(srv.base);
    assert.match(before, /ws_supervisor_connections /);
    const n0 = metric(before, 'ws_supervisor_closes_total', { code: '1000' });
    const clients = await Promise.all([1, 2, 3].map(() => openClient(srv.wsUrl)));
    const during = await metricsOf(srv.base);
    assert.equal(metric(during, 'ws_supervisor_connections'), 3);
    await Promise.all(
      clients.map((ws) => {
        const c = closeOf(ws);
        ws.close(1000);
        return c;
      }),
    );
    let text = '';
    const deadline = Date.now() + 5_000;
    do {
      text = await metricsOf(srv.base);
      if (metric(text, 'ws_supervisor_closes_total', { code: '1000' }) - n0 === 3) break;
      await delay(20);
    } while (Date.now() < deadline);
    assert.match(text, /ws_supervisor_closes_total\{code="1000"\} \d+/);
    assert.equal(metric(text, 'ws_supervisor_closes_total', { code: '1000' }) - n0, 3);
    assert.equal(metric(text, 'ws_supervisor_connections'), 0);
    // The earlier protocol violations were counted under their own codes.
    assert.equal(metric(text, 'ws_supervisor_closes_total', { code: '1007' }), 1);
    assert.equal(metric(text, 'ws_supervisor_closes_total', { code: '1009' }), 1);
    assert.equal(metric(text, 'ws_supervisor_closes_total', { code: '1002' }), 1);
  });
});

// ---------------------------------------------------------------------------

describe('CLI origins (R19)', { concurrency: true, timeout: budget.scaled(60_000) }, () => {
  test('default: same-origin and no-Origin accepted, cross-origin 403', { timeout: budget.scaled(20_000) }, async (t) => {
    const srv = await startCliServer([], t);
    assert.equal((await upgradeStatus(srv.wsUrl, { origin: 'http://evil.example' })).status, 403);
    assert.equal((await upgradeStatus(srv.wsUrl, { origin: `http://127.0.0.1:${srv.port}` })).status, 101);
    assert.equal((await upgradeStatus(srv.wsUrl)).status, 101);
  });

  test('--allowed-origins replaces the same-origin rule', { timeout: budget.scaled(20_000) }, async (t) => {
    const srv = await startCliServer(['--allowed-origins', 'http://evil.example'], t);
    assert.equal((await upgradeStatus(srv.wsUrl, { origin: 'http://evil.example' })).status, 101);
    assert.equal((await upgradeStatus(srv.wsUrl, { origin: `http://127.0.0.1:${srv.port}` })).status, 403);
    assert.equal((await upgradeStatus(srv.wsUrl, { origin: 'http://other.example' })).status, 403);
    assert.equal((await upgradeStatus(srv.wsUrl)).status, 101, 'non-browser clients (no Origin) still accepted');
  });

  test("--allowed-origins '*' accepts any origin", { timeout: budget.scaled(20_000) }, async (t) => {
    const srv = await startCliServer(['--allowed-origins', '*'], t);
    for (const origin of ['http://evil.example', 'https://anything.test:8443', `http://127.0.0.1:${srv.port}`]) {
      assert.equal((await upgradeStatus(srv.wsUrl, { origin })).status, 101, origin);
    }
  });
});

// ---------------------------------------------------------------------------

describe('CLI limits, path and address', { concurrency: true, timeout: budget.scaled(60_000) }, () => {
  // The two --path /ws tests share one server (one CLI start fewer, ~0.4 s of CPU): one speaks
  // WebSocket on /ws and GETs /server and /ws, the other only GETs pages; neither changes what the
  // other sees.
  let movedPath: Promise<CliServer> | undefined;
  const pathServer = (): Promise<CliServer> => (movedPath ??= startCliServer(['--path', '/ws']));
  after(async () => (await movedPath?.catch(() => undefined))?.kill());

  test('--max-connections 2: a third upgrade gets 503, a freed slot is reusable (R21)', { timeout: budget.scaled(20_000) }, async (t) => {
    const srv = await startCliServer(['--max-connections', '2'], t);
    const [a, b] = [await openClient(srv.wsUrl), await openClient(srv.wsUrl)];
    t.after(() => closeAll([a, b]));
    const refused = await upgradeStatus(srv.wsUrl);
    assert.equal(refused.status, 503);
    assert.match(refused.body, /too many connections/);
    const closed = closeOf(a);
    a.close(1000);
    await closed;
    let status = 0;
    const deadline = Date.now() + 5_000;
    while (Date.now() < deadline && (status = (await upgradeStatus(srv.wsUrl)).status) !== 101) await delay(20);
    assert.equal(status, 101);
  });

  test('--path /ws moves the endpoint; other paths get 404 (R21)', { timeout: budget.scaled(20_000) }, async (t) => {
    const srv = await pathServer();
    assert.match(srv.stdout(), new RegExp(`WebSocket ws://127\\.0\\.0\\.1:${srv.port}/ws\\)`));
    const a = await client(`ws://127.0.0.1:${srv.port}/ws`);
    t.after(() => a.ws.terminate());
    a.ws.send('{"requestID":1,"command":"hi"}');
    assert.equal((await a.reply(1)).success, true);
    assert.equal((await upgradeStatus(srv.wsUrl)).status, 404);
    assert.equal((await httpGet(`${srv.base}/ws`)).status, 426);
  });

  test('--path /ws: the demo page at / is sent to /?path=/ws, so it connects to the moved endpoint (not /server, a 404)', { timeout: budget.scaled(20_000) }, async () => {
    const srv = await pathServer();
    for (const page of ['/', '/index.html']) {
      const r = await httpGet(`${srv.base}${page}`);
      assert.equal(r.status, 302, `GET ${page}`);
      assert.equal(r.headers.location, '/?path=%2Fws');
    }
    const page = await httpGet(`${srv.base}/?path=%2Fws`);
    assert.equal(page.status, 200);
    assert.match(page.body, /<script type="module">/);
    // Other pages are untouched (the default --path serves / as it is: 'GET / serves the HTML demo client').
    assert.equal((await httpGet(`${srv.base}/ws-supervisor-client.js`)).status, 200);
  });

  test('an address already in use exits 1 with a clear message', { timeout: budget.scaled(20_000) }, async (t) => {
    // The port is held by a listener of this process, not by a second CLI (one CLI start fewer): what
    // is checked is the CLI's answer to EADDRINUSE, whoever holds the port (Node 20's listen has no
    // port sharing between processes, so a CLI holding it would refuse the same way).
    const holder = net.createServer();
    await new Promise<void>((resolve, reject) => holder.once('error', reject).listen(0, '127.0.0.1', resolve));
    t.after(() => holder.close());
    const r = await runCli(['server', '--address', `127.0.0.1:${(holder.address() as AddressInfo).port}`]);
    assert.equal(r.timedOut, false);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot listen/);
    assert.match(r.stderr, /EADDRINUSE/);
  });
});

// ---------------------------------------------------------------------------

describe('CLI drain on signal (R18)', { concurrency: true, timeout: budget.scaled(60_000) }, () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    test(`${signal}: 1001 to all, 503 while draining, exit 0 within the close timeout`, { timeout: budget.scaled(20_000) }, async (t) => {
      const closeTimeout = 1500;
      const srv = await startCliServer(['--close-timeout', String(closeTimeout)], t);
      const clients = await Promise.all([1, 2, 3, 4, 5].map(() => openClient(srv.wsUrl)));
      t.after(() => closeAll(clients));
      for (const ws of clients) ws.on('error', () => undefined);
      // A peer that never answers our close frame holds the drain open for closeTimeout.
      const straggler = await RawWsClient.connect(srv.port);
      t.after(() => straggler.destroy());
      // Every connection is registered (the raw one included) before the signal.
      assert.equal(metric(await metricsOf(srv.base), 'ws_supervisor_connections'), 6);
      const closes = clients.map((ws) => closeOf(ws));
      const sentAt = Date.now();
      srv.child.kill(signal);
      await srv.waitForStdout(`${signal}: draining 6 connection(s)`, 5_000);

      const health = await httpGet(`${srv.base}/healthz`);
      assert.equal(health.status, 503, '/healthz while draining');
      assert.equal((await upgradeStatus(srv.wsUrl)).status, 503, 'a new upgrade while draining');

      for (const c of await Promise.all(closes)) assert.equal(c.code, 1001);
      assert.equal((await straggler.closeFrame()).code, 1001);

      const exit = await srv.exited;
      const elapsed = Date.now() - sentAt;
      console.log(`${signal}: exited ${exit.code} after ${elapsed} ms (close timeout ${closeTimeout} ms)`);
      assert.deepEqual(exit, { code: 0, signal: null });
      assert.ok(elapsed >= closeTimeout - 100, `waited for the straggler (${elapsed} ms)`);
      assert.ok(elapsed <= closeTimeout + budget.scaled(3_000), `bounded by the close timeout (${elapsed} ms)`);
      assert.match(srv.stdout(), /drained, bye/);
      await straggler.ended;
    });
  }
});

// ---------------------------------------------------------------------------

describe('CLI heartbeat (R4–R6)', { concurrency: true, timeout: budget.scaled(60_000) }, () => {
  test('--ping-interval/--pong-timeout: a peer that never pongs is cut off (R4, R6, R17)', { timeout: budget.scaled(20_000) }, async (t) => {
    const srv = await startCliServer(['--ping-interval', '200', '--pong-timeout', '200'], t);
    const ws = await openClient(srv.wsUrl, { autoPong: false });
    t.after(() => ws.terminate());
    ws.on('error', () => undefined);
    const openedAt = Date.now();
    const { code } = await closeOf(ws);
    const elapsed = Date.now() - openedAt;
    console.log(`heartbeat: silent peer cut off after ${elapsed} ms`);
    assert.equal(code, 1006, 'no close frame: the server terminated the socket');
    // ~400 ms expected (ping after 200, pong timeout 200); the margin absorbs a loaded CI machine.
    assert.ok(elapsed < budget.scaled(2_000), `cut off after ${elapsed} ms (ping 200 + pong timeout 200)`);
    let text = '';
    const deadline = Date.now() + 3_000;
    do {
      text = await metricsOf(srv.base);
      if (metric(text, 'ws_supervisor_closes_total', { code: '1006' }) >= 1) break;
      await delay(20);
    } while (Date.now() < deadline);
    assert.equal(metric(text, 'ws_supervisor_closes_total', { code: '1006' }), 1);
    assert.equal(metric(text, 'ws_supervisor_heartbeat_timeouts_total'), 1);
    assert.equal(metric(text, 'ws_supervisor_connections'), 0);
  });

  test('a live client that pongs is kept (R4, R5)', { timeout: budget.scaled(20_000) }, async (t) => {
    // A generous pong timeout: this checks that answered pings keep a connection, not how fast the runner is.
    const srv = await startCliServer(['--ping-interval', '100', '--pong-timeout', '1000'], t);
    const a = await client(srv.wsUrl);
    t.after(() => a.ws.terminate());
    let pings = 0;
    a.ws.on('ping', () => pings++);
    await delay(1_200);
    assert.equal(a.ws.readyState, WebSocket.OPEN);
    assert.ok(pings >= 3, `the server kept pinging (${pings} pings) and every pong kept the connection`);
    a.ws.send('{"requestID":1,"command":"alive"}');
    assert.equal((await a.reply(1)).success, true);
    const text = await metricsOf(srv.base);
    assert.equal(metric(text, 'ws_supervisor_heartbeat_timeouts_total'), 0);
    assert.equal(metric(text, 'ws_supervisor_connections'), 1);
  });
});

// Alone, not concurrently with the heartbeat tests: it loads the machine on purpose.
describe('CLI slow consumer (R9, R11)', { timeout: budget.scaled(90_000) }, () => {
  test('--send-queue 4: a client that never reads is closed 1008, the others carry on (R9, R11)', { timeout: budget.scaled(60_000) }, async (t) => {
    const srv = await startCliServer(['--send-queue', '4', '--close-timeout', '200'], t);
    const slow = await RawWsClient.connect(srv.port);
    t.after(() => slow.destroy());
    slow.socket.pause(); // never reads: its kernel buffers fill, then our queue
    const a = await client(srv.wsUrl);
    const b = await client(srv.wsUrl);
    t.after(() => closeAll([a.ws, b.ws]));
    let bPushes = 0;
    b.ws.on('message', (data) => {
      if (data.toString().startsWith('{"command":"broadcast"')) bPushes++;
    });
    const big = 'x'.repeat(100 * 1024);
    let id = 0;
    let closes1008 = 0;
    const started = Date.now();
    const deadline = started + 40_000;
    while (Date.now() < deadline) {
      if (id < 500) {
        a.ws.send(JSON.stringify({ requestID: ++id, command: 'broadcast', someOtherThing: big }));
        const reply = await a.reply(id, 10_000);
        assert.equal(reply.success, true, `broadcast ${id} answered`);
        a.messages.length = 0;
        b.messages.length = 0;
      } else {
        await delay(50);
      }
      if (id % 10 === 0) {
        closes1008 = metric(await metricsOf(srv.base), 'ws_supervisor_closes_total', { code: '1008' });
        if (closes1008 >= 1) break;
      }
    }
    console.log(`slow consumer: 1008 counted after ${id} broadcasts of 100 KiB, ${Date.now() - started} ms`);
    assert.equal(closes1008, 1, 'the slow consumer was closed with 1008');
    const text = await metricsOf(srv.base);
    assert.equal(metric(text, 'ws_supervisor_connections'), 2);
    // Queue overflow, not the (default 10 s) write timeout.
    assert.equal(metric(text, 'ws_supervisor_slow_consumer_closes_total', { cause: 'slow-consumer' }), 1);
    assert.equal(metric(text, 'ws_supervisor_slow_consumer_closes_total', { cause: 'write-timeout' }), 0);
    // The others were never disturbed.
    for (const [c, n] of [[a, 100001], [b, 100002]] as const) {
      c.ws.send(JSON.stringify({ requestID: n, command: 'still there' }));
      assert.equal((await c.reply(n)).success, true);
      assert.equal(c.ws.readyState, WebSocket.OPEN);
    }
    a.ws.send(JSON.stringify({ requestID: 100003, command: 'broadcast', someOtherThing: 'after' }));
    assert.equal((await a.reply(100003)).success, true);
    assert.deepEqual(await b.take((m) => m.command === 'broadcast' && m.someOtherThing === 'after'), { command: 'broadcast', someOtherThing: 'after' });
    assert.equal(bPushes, id + 1, 'the reading client got every broadcast, none lost to the slow one (R11)');
    // The slow peer's socket is gone: once it reads again it sees the end.
    slow.socket.resume();
    assert.notEqual(await within(slow.ended.then(() => 'ended'), budget.scaled(10_000)), null, 'slow peer never saw its connection end');
  });
});
