// Admission at upgrade (R19 origin, R20 subprotocols, R21 limits, authenticate):
// every refusal is an HTTP response with a status and a one-line reason, and
// no hostile or broken upgrade can crash the server or leak an admission slot.
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type WebSocket from 'ws';
import { AdmissionError, createSupervisor, type Connection, type Supervisor, type SupervisorOptions } from '../../src/index.ts';
import { closeOf, delay, openClient, startSupervisor, waitFor, type TestServer } from '../helpers/server.ts';
import { rawConnect, rawUpgrade, type HttpReply, type RawUpgradeOptions } from '../helpers/raw-ws.ts';
import { pace } from '../helpers/pace.ts';
import type { Logger } from '../../src/base/logger.ts';

const T = { timeout: pace.scaled(10_000) };

/** A supervisor whose clients are all dropped before it is drained (bounded cleanup). */
async function serve<Auth = unknown>(t: TestContext, options: Omit<SupervisorOptions<Auth>, 'server'> = {}) {
  const srv: TestServer<Auth> = await startSupervisor<Auth>({
    timing: { closeTimeout: 500 },
    onMessage: (c, data, isBinary) => void c.send(data, isBinary),
    ...options,
  });
  const clients: WebSocket[] = [];
  t.after(async () => {
    for (const ws of clients) ws.terminate();
    await srv.close();
  });
  const client = async (opts: Parameters<typeof openClient>[1] = {}, protocols?: string | string[]): Promise<WebSocket> => {
    const ws = await openClient(srv.url, opts, protocols);
    clients.push(ws);
    return ws;
  };
  /** Hand-written upgrade; an accepted one is closed right away (only the reply matters). */
  const upgrade = async (opts: RawUpgradeOptions = {}): Promise<HttpReply> => {
    const { reply, ws } = await rawUpgrade(srv.port, opts);
    ws?.destroy();
    return reply;
  };
  return { srv, sup: srv.supervisor, client, upgrade };
}

/** A value of the supervisor's Prometheus exposition, 0 when the series does not exist yet. */
async function metric(sup: Supervisor<any>, series: string): Promise<number> {
  const text = await sup.metrics.registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

/** Echo round trip: proves the server still serves normal clients. */
async function assertServes(url: string): Promise<void> {
  const ws = await openClient(url);
  try {
    const echoed = new Promise<string>((resolve) => ws.once('message', (d) => resolve(d.toString())));
    ws.send('still alive');
    assert.equal(await echoed, 'still alive');
  } finally {
    ws.terminate();
  }
}

function refused(reply: HttpReply, status: number, bodyIncludes?: string): void {
  assert.equal(reply.status, status, `expected ${status}, got ${reply.statusLine} ${reply.body}`);
  assert.equal(reply.headers.connection?.toLowerCase(), 'close');
  if (bodyIncludes !== undefined) assert.ok(reply.body.includes(bodyIncludes), `body ${JSON.stringify(reply.body)} lacks ${JSON.stringify(bodyIncludes)}`);
}

describe('R19 origin check', () => {
  test('R19 default same-origin: no Origin, same host:port, and a trailing-slash origin are accepted', T, async (t) => {
    const { srv, upgrade } = await serve(t);
    const host = `127.0.0.1:${srv.port}`;
    assert.equal((await upgrade()).status, 101, 'no Origin (non-browser client)');
    assert.equal((await upgrade({ headers: { Origin: `http://${host}` } })).status, 101, 'same host:port');
    // Go's x/net/websocket client sends the origin URL with a trailing slash.
    assert.equal((await upgrade({ headers: { Origin: `http://${host}/` } })).status, 101, 'trailing slash');
    // Scheme is not compared (TLS may end at a proxy): https from the same host:port is same-origin.
    assert.equal((await upgrade({ headers: { Origin: `https://${host}` } })).status, 101, 'https, same host:port');
  });

  test('R19 default same-origin: a Host naming the default port matches an Origin without it (http 80, https 443), and only that port', T, async (t) => {
    const { upgrade } = await serve(t);
    // A proxy or client may write the default port in Host; the browser never writes it in Origin.
    const same: Array<[host: string, origin: string]> = [
      ['example.com:80', 'http://example.com'],
      ['example.com', 'http://example.com:80'],
      ['example.com:443', 'https://example.com'],
      ['EXAMPLE.com:443', 'https://example.COM'],
      ['[::1]:80', 'http://[::1]'],
    ];
    for (const [host, origin] of same) {
      assert.equal((await upgrade({ headers: { Host: host, Origin: origin } })).status, 101, `Host ${host}, Origin ${origin}`);
    }
    // The default port of the Origin's scheme only: these are other origins.
    const cross: Array<[host: string, origin: string]> = [
      ['example.com:443', 'http://example.com'],
      ['example.com:80', 'https://example.com'],
      ['example.com:8080', 'http://example.com'],
      ['example.com', 'http://example.com:8080'],
    ];
    for (const [host, origin] of cross) {
      assert.equal((await upgrade({ headers: { Host: host, Origin: origin } })).status, 403, `Host ${host}, Origin ${origin}`);
    }
  });

  test('R19 default same-origin: a cross-origin browser gets 403 naming the origin; "null" gets 403', T, async (t) => {
    const { srv, sup, upgrade, client } = await serve(t);
    const evil = await upgrade({ headers: { Origin: 'http://evil.example' } });
    refused(evil, 403, 'http://evil.example');
    assert.match(evil.body, /not allowed/);
    // Same host, other port: not the same origin.
    refused(await upgrade({ headers: { Origin: `http://127.0.0.1:${srv.port + 1}` } }), 403);
    refused(await upgrade({ headers: { Origin: 'null' } }), 403, 'null');
    assert.equal(await metric(sup, 'ws_supervisor_refused_upgrades_total{reason="origin"}'), 3);
    // A `ws` client setting a same-origin Origin works end to end.
    const ws = await client({ origin: `http://127.0.0.1:${srv.port}` });
    assert.equal(ws.readyState, ws.OPEN);
  });

  test('R19 allow-list: listed origin accepted, others 403, no Origin accepted', T, async (t) => {
    const { sup, upgrade } = await serve(t, { origins: ['https://app.example'] });
    assert.equal((await upgrade({ headers: { Origin: 'https://app.example' } })).status, 101);
    assert.equal((await upgrade()).status, 101, 'no Origin');
    refused(await upgrade({ headers: { Origin: 'https://evil.example' } }), 403, 'https://evil.example');
    refused(await upgrade({ headers: { Origin: 'http://app.example' } }), 403, 'http://app.example'); // scheme matters here
    refused(await upgrade({ headers: { Origin: 'https://app.example:8443' } }), 403);
    assert.equal(await metric(sup, 'ws_supervisor_refused_upgrades_total{reason="origin"}'), 3);
  });

  test("R19 origins: '*' accepts any origin (development)", T, async (t) => {
    const { upgrade } = await serve(t, { origins: '*' });
    for (const origin of ['http://evil.example', 'null', 'https://anything.test:1234']) {
      assert.equal((await upgrade({ headers: { Origin: origin } })).status, 101, origin);
    }
  });

  test('R19 an invalid allow-list entry throws RangeError from createSupervisor', () => {
    for (const entry of ['app.example', 'https://x/path', 'https://x/?q=1', 'not a url']) {
      assert.throws(() => createSupervisor({ origins: [entry] }), RangeError, entry);
    }
    assert.throws(() => createSupervisor({ origins: 'same-site' as never }), RangeError);
  });
});

test('options that are not numbers are checked at creation too: a RangeError naming the option and the value (docs/options.md)', () => {
  // What a JavaScript caller (no types) can pass. Before, each was accepted and went wrong later: protocols 'chat' was
  // iterated character by character (a client offering 'c' got it, and one offering 'chat' threw a TypeError out of the
  // upgrade handler, which ended the process), onMessage 1 closed every connection 1011 at its first message,
  // authenticate 1 answered every upgrade 500, path 5 and adapter {} threw a TypeError about a method.
  const bad: [string, Record<string, unknown>, RegExp][] = [
    ['path', { path: 5 }, /option path must start with "\/", got 5$/],
    ['protocols', { protocols: 'chat' }, /option protocols must be a list of subprotocol names, got "chat"$/],
    ['protocols', { protocols: ['chat', 7] }, /option protocols must be a list of subprotocol names, got \["chat",7\]$/],
    ['requireProtocol', { requireProtocol: 'yes' }, /option requireProtocol must be true or false, got "yes"$/],
    ['onMessage', { onMessage: 1 }, /option onMessage must be a function, got 1$/],
    ['authenticate', { authenticate: 'token' }, /option authenticate must be a function, got "token"$/],
    ['inspect', { inspect: true }, /option inspect must be an XState inspector \(a function, or an observer with next\), got true$/],
    ['timing', { timing: 5000 }, /option timing must be an object, got 5000$/],
    ['budget', { budget: true }, /option budget must be an object, got true$/],
    ['adapter', { adapter: {} }, /option adapter must be an Adapter \(with attach, publish, nodes, close\), got an object$/],
    ['logger', { logger: console }, /option logger must be a pino-compatible logger \(with debug, info, warn, error, child\), got an object without child$/],
    ['server', { server: 8080 }, /option server must be an http.Server \(with on, off, listenerCount\), got 8080$/],
  ];
  for (const [name, options, message] of bad) {
    assert.throws(() => createSupervisor(options as SupervisorOptions), (err: Error) => err instanceof RangeError && message.test(err.message), `${name}: ${JSON.stringify(options)}`);
  }
  // What is documented still passes: budget false, an observer object, the list forms.
  for (const options of [{ budget: false }, { inspect: { next: () => undefined } }, { protocols: ['v1'], requireProtocol: true }] as SupervisorOptions[]) {
    void createSupervisor(options).close();
  }
});

describe('R20 subprotocol negotiation', () => {
  const protocols = ['v2.json', 'v1.json'];

  test('R20 the offered protocol we speak is selected; with both offered the server preference wins', T, async (t) => {
    const { sup, client } = await serve(t, { protocols });
    const seen: string[] = [];
    sup.on('connection', (c) => seen.push(c.protocol));
    const v1 = await client({}, 'v1.json');
    assert.equal(v1.protocol, 'v1.json');
    const both = await client({}, ['v1.json', 'v2.json']); // client prefers v1; the server's order decides
    assert.equal(both.protocol, 'v2.json');
    const none = await client();
    assert.equal(none.protocol, '');
    assert.deepEqual(seen, ['v1.json', 'v2.json', '']);
  });

  test('R20 a mismatch is refused with 400 and the reason, never accepted silently', T, async (t) => {
    const { sup, upgrade } = await serve(t, { protocols });
    const chat = await upgrade({ headers: { 'Sec-WebSocket-Protocol': 'chat' } });
    refused(chat, 400, 'chat');
    assert.match(chat.body, /supported: v2\.json, v1\.json/);
    // A malformed header is a 400 too (ours, before ws sees it).
    refused(await upgrade({ headers: { 'Sec-WebSocket-Protocol': 'v1.json, v1.json' } }), 400);
    assert.equal(await metric(sup, 'ws_supervisor_refused_upgrades_total{reason="subprotocol"}'), 1);
    assert.equal(await metric(sup, 'ws_supervisor_refused_upgrades_total{reason="bad-request"}'), 1);
  });

  test('R20 requireProtocol: true refuses a client that offers none', T, async (t) => {
    const { upgrade } = await serve(t, { protocols, requireProtocol: true });
    refused(await upgrade(), 400, 'required');
    const ok = await upgrade({ headers: { 'Sec-WebSocket-Protocol': 'v1.json' } });
    assert.equal(ok.status, 101);
    assert.equal(ok.headers['sec-websocket-protocol'], 'v1.json');
  });

  test('R20 a server with no protocols refuses a client that offers one', T, async (t) => {
    const { upgrade, srv } = await serve(t);
    refused(await upgrade({ headers: { 'Sec-WebSocket-Protocol': 'v1.json' } }), 400, 'speaks none');
    // The ws client sees the refusal as an unexpected response, not an open socket.
    await assert.rejects(openClient(srv.url, {}, 'v1.json'), /Unexpected server response: 400/);
  });
});

describe('R21 limits and admission hooks', () => {
  test('R21 maxConnections: 3 → the 4th upgrade gets 503 with a reason; after one closes a new one is accepted', T, async (t) => {
    const { sup, client, upgrade } = await serve(t, { maxConnections: 3 });
    const open = [await client(), await client(), await client()];
    const fourth = await upgrade();
    refused(fourth, 503, 'too many connections (limit 3)');
    assert.equal(fourth.headers['retry-after'], '5');
    assert.equal(await metric(sup, 'ws_supervisor_refused_upgrades_total{reason="max-connections"}'), 1);
    open[0]!.close(1000);
    await closeOf(open[0]!);
    await waitFor(() => sup.size === 2, 2000, 'the closed connection to leave the registry');
    const again = await client();
    assert.equal(again.readyState, again.OPEN);
    assert.equal(sup.size, 3);
  });

  type Auth = { user: string };
  /** authenticate driven by an x-test-auth request header. */
  function authHook(pending: { resolve?: (v: Auth) => void }) {
    return async (request: import('node:http').IncomingMessage): Promise<Auth | false> => {
      await delay(1); // genuinely async
      switch (request.headers['x-test-auth']) {
        case 'deny':
          return false;
        case '429':
          throw new AdmissionError(429, 'slow down');
        case 'throw':
          throw new Error('database on fire');
        case 'hang':
          return new Promise<Auth>((resolve) => (pending.resolve = resolve));
        default:
          return { user: String(request.headers['x-test-auth'] ?? 'ann') };
      }
    };
  }

  test('R21 authenticate: the returned value becomes connection.auth', T, async (t) => {
    const { sup, client } = await serve<Auth>(t, { authenticate: authHook({}) });
    const connected = new Promise<Connection<Auth>>((resolve) => sup.once('connection', resolve));
    await client({ headers: { 'x-test-auth': 'ann' } });
    assert.deepEqual((await connected).auth, { user: 'ann' });
  });

  test('R21 authenticate: false → 401; AdmissionError(429) → 429 with its message', T, async (t) => {
    const { sup, upgrade } = await serve<Auth>(t, { authenticate: authHook({}) });
    refused(await upgrade({ headers: { 'x-test-auth': 'deny' } }), 401, 'authentication required');
    const slow = await upgrade({ headers: { 'x-test-auth': '429' } });
    refused(slow, 429);
    assert.equal(slow.body, 'slow down\n');
    assert.equal(await metric(sup, 'ws_supervisor_refused_upgrades_total{reason="unauthenticated"}'), 1);
    assert.equal(await metric(sup, 'ws_supervisor_refused_upgrades_total{reason="auth-rejected"}'), 1);
    assert.equal(sup.size, 0);
  });

  test('R21 authenticate: a plain Error → 500, reported as handlerError, and the server keeps serving', T, async (t) => {
    const { sup, srv, upgrade } = await serve<Auth>(t, { authenticate: authHook({}) });
    const errors: unknown[] = [];
    sup.on('handlerError', (err, connection) => {
      assert.equal(connection, null);
      errors.push(err);
    });
    const reply = await upgrade({ headers: { 'x-test-auth': 'throw' } });
    refused(reply, 500, 'authentication failed');
    assert.ok(!reply.body.includes('database on fire'), 'the internal error message must not leak to the client');
    assert.equal(errors.length, 1);
    assert.match(String(errors[0]), /database on fire/);
    assert.equal(await metric(sup, 'ws_supervisor_refused_upgrades_total{reason="auth-error"}'), 1);
    await assertServes(srv.url);
  });

  test('R21 authenticate: a client that disconnects while authenticate is pending leaks no slot and crashes nothing', T, async (t) => {
    const pending: { resolve?: (v: Auth) => void } = {};
    const { sup, client, srv } = await serve<Auth>(t, { authenticate: authHook(pending), maxConnections: 2 });
    const connections: Connection<Auth>[] = [];
    sup.on('connection', (c) => connections.push(c));
    // Send the upgrade, wait until authenticate is running, then vanish (RST, then FIN).
    for (const vanish of ['reset', 'end'] as const) {
      pending.resolve = undefined;
      const serverSide = new Promise<net.Socket>((resolve) => srv.server.once('connection', resolve));
      const socket = net.connect(srv.port, '127.0.0.1');
      socket.on('error', () => {});
      await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
      socket.write(
        `GET /server HTTP/1.1\r\nHost: 127.0.0.1:${srv.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nx-test-auth: hang\r\n\r\n',
      );
      const server = await serverSide;
      await waitFor(() => pending.resolve !== undefined, 2000, 'authenticate to be pending');
      if (vanish === 'reset') socket.resetAndDestroy();
      else socket.end();
      // Until the server has read the RST or FIN (not a fixed delay: a busy machine takes longer).
      await waitFor(() => server.destroyed || server.readableEnded, 2000, `the server to see the ${vanish}`);
      pending.resolve!({ user: 'too late' });
      await delay(pace.scaled(50)); // time for a (wrong) connection to show up
      socket.destroy();
    }
    assert.equal(connections.length, 0, 'the vanished client must not become a connection');
    // Both slots are free again: maxConnections clients get in.
    await client({ headers: { 'x-test-auth': 'bea' } });
    await client({ headers: { 'x-test-auth': 'cy' } });
    assert.deepEqual(connections.map((c) => c.auth.user), ['bea', 'cy']);
  });

  test('R21 wrong path → 404 naming the endpoint; refusals are counted per reason', T, async (t) => {
    const { sup, upgrade } = await serve(t);
    refused(await upgrade({ path: '/nope' }), 404, '/nope');
    refused(await upgrade({ path: '/nope?x=1' }), 404, '/server');
    assert.equal((await upgrade({ path: '/server?token=abc' })).status, 101, 'the query string is ignored');
    // The absolute form of the target (RFC 6455 4.2.1, RFC 7230 5.3.2): its path is what counts.
    assert.equal((await upgrade({ path: `http://127.0.0.1/server` })).status, 101, 'absolute-form http target');
    assert.equal((await upgrade({ path: `HTTPS://example.com:443/server?ws-x=1` })).status, 101, 'absolute-form https target, with a query');
    refused(await upgrade({ path: 'http://127.0.0.1/nope' }), 404, '/nope');
    refused(await upgrade({ path: 'http://127.0.0.1' }), 404, 'at / ');
    refused(await upgrade({ headers: { Origin: 'http://evil.example' } }), 403);
    refused(await upgrade({ headers: { 'Sec-WebSocket-Protocol': 'chat' } }), 400);
    assert.equal(await metric(sup, 'ws_supervisor_refused_upgrades_total{reason="path"}'), 4);
    assert.equal(await metric(sup, 'ws_supervisor_refused_upgrades_total{reason="origin"}'), 1);
    assert.equal(await metric(sup, 'ws_supervisor_refused_upgrades_total{reason="subprotocol"}'), 1);
  });

  test("R21 a refusal's reason and log line are bounded whatever the peer sends: a 10 KB path, query or Origin is cut", T, async (t) => {
    const lines: Array<{ fields: Record<string, unknown>; msg: string }> = [];
    const noop = (): void => {};
    const logger: Logger = { debug: noop, warn: noop, error: noop, info: (fields, msg = '') => void lines.push({ fields: fields as Record<string, unknown>, msg }), child: () => logger };
    const { upgrade } = await serve(t, { logger });
    const long = 'a'.repeat(10_000);
    const path = await upgrade({ path: `/${long}` });
    refused(path, 404, `/${long.slice(0, 40)}`);
    refused(await upgrade({ path: `/server?ws-session=${long}` }), 400, 'ws-session');
    refused(await upgrade({ headers: { Origin: `http://${long}.example` } }), 403);
    assert.ok(path.body.length < 300, `a 404 body of ${path.body.length} characters`);
    assert.equal(lines.length, 3, 'each refusal logged');
    for (const { fields, msg } of lines) {
      // Before: the 404's line carried the path twice (url and reason), ~20 KB for a 10 KB path.
      const size = JSON.stringify(fields).length + msg.length;
      assert.ok(size < 1_000, `a refusal line of ${size} characters: ${msg.slice(0, 60)}`);
    }
    assert.equal((lines[0]!.fields.url as string).slice(0, 41), `/${long.slice(0, 40)}`, 'the URL is cut, not dropped');
  });

  test('R21 a malformed upgrade (no Sec-WebSocket-Key) gets 400 from ws, no crash, no leaked slot', T, async (t) => {
    const { sup, client, upgrade } = await serve(t, { maxConnections: 2 });
    for (let i = 0; i < 5; i++) {
      refused(await upgrade({ headers: { 'Sec-WebSocket-Key': null } }), 400, 'Sec-WebSocket-Key');
    }
    refused(await upgrade({ headers: { 'Sec-WebSocket-Version': '7' } }), 400);
    // Neither refusal held on to an admission slot.
    await client();
    await client();
    assert.equal(sup.size, 2);
  });

  test('R15/R21 a malformed handshake is refused as every other refusal: plain text naming the fault, counted (bad-request), logged, and before authenticate runs', T, async (t) => {
    const infos: Array<{ fields: Record<string, unknown>; msg: string }> = [];
    const noop = (): void => {};
    const logger: Logger = { debug: noop, warn: noop, error: noop, info: (fields, msg = '') => void infos.push({ fields: fields as Record<string, unknown>, msg }), child: () => logger };
    let authenticated = 0;
    const { sup, upgrade } = await serve(t, {
      logger,
      authenticate: () => {
        authenticated++;
        return { id: 'u' };
      },
    });
    const plain = (reply: HttpReply, status: number, bodyIncludes: string): void => {
      refused(reply, status, bodyIncludes);
      assert.match(reply.headers['content-type'] ?? '', /^text\/plain/, `${status} ${reply.body}: a plain-text reason (docs/protocol.md)`);
      assert.ok(reply.body.endsWith('\n'), 'one line');
    };
    // RFC 6455 §4.1: the handshake is a GET; anything else is 405 with the one method allowed.
    const post = await upgrade({ method: 'POST' });
    plain(post, 405, 'GET');
    assert.equal(post.headers.allow, 'GET');
    plain(await upgrade({ headers: { Upgrade: 'h2c' } }), 400, 'Upgrade');
    plain(await upgrade({ headers: { 'Sec-WebSocket-Key': null } }), 400, 'Sec-WebSocket-Key');
    plain(await upgrade({ headers: { 'Sec-WebSocket-Key': 'short' } }), 400, 'Sec-WebSocket-Key');
    // RFC 6455 §4.4: a version the server does not speak is answered with the versions it does.
    const v7 = await upgrade({ headers: { 'Sec-WebSocket-Version': '7' } });
    plain(v7, 400, 'Sec-WebSocket-Version must be 13 (or 8), got "7"');
    assert.equal(v7.headers['sec-websocket-version'], '13, 8');
    plain(await upgrade({ headers: { 'Sec-WebSocket-Version': null } }), 400, 'Sec-WebSocket-Version');
    assert.equal(await metric(sup, 'ws_supervisor_refused_upgrades_total{reason="bad-request"}'), 6);
    assert.equal(infos.filter((l) => l.msg.startsWith('upgrade refused:') && l.fields.reason === 'bad-request').length, 6, 'each refusal logged');
    assert.equal(authenticated, 0, 'authenticate is not asked about a request that cannot be upgraded');
    // Both versions ws speaks still upgrade.
    assert.equal((await upgrade({ headers: { 'Sec-WebSocket-Version': '8' } })).status, 101);
    assert.equal((await upgrade()).status, 101);
    assert.equal(authenticated, 2);
  });

  test('R21 an abrupt TCP reset in the middle of (or right after) the upgrade request does not crash or leak', T, async (t) => {
    const { sup, srv, client } = await serve(t, { maxConnections: 2 });
    const full =
      `GET /server HTTP/1.1\r\nHost: 127.0.0.1:${srv.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';
    const cuts = [20, full.length - 10, full.length]; // inside the request line, inside the headers, complete
    for (let round = 0; round < 5; round++) {
      for (const cut of cuts) {
        const socket = net.connect(srv.port, '127.0.0.1');
        socket.on('error', () => {});
        await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
        socket.write(full.slice(0, cut));
        if (round % 2 === 1) await delay(5); // sometimes after the server has read it
        socket.resetAndDestroy();
      }
    }
    await delay(100);
    await waitFor(() => sup.size === 0, 2000, 'any half-admitted connection to close');
    const a = await client();
    await client();
    assert.equal(sup.size, 2);
    const echoed = new Promise<string>((resolve) => a.once('message', (d) => resolve(d.toString())));
    a.send('still alive');
    assert.equal(await echoed, 'still alive');
    const raw = await rawConnect(srv.port).catch((err: Error) => err);
    assert.ok(raw instanceof Error && /503/.test(raw.message), 'a third connection is still refused: the limit holds');
  });
});

test('R21 authenticate: a hook that never settles is refused with 503 after authenticateTimeout, freeing its slot', T, async (t) => {
  const { startSupervisor } = await import('../helpers/server.ts');
  const { rawUpgrade } = await import('../helpers/raw-ws.ts');
  const ts = await startSupervisor({
    maxConnections: 1,
    authenticateTimeout: 200,
    authenticate: () => new Promise<never>(() => undefined),
    timing: { closeTimeout: 200 },
  });
  t.after(() => ts.close());
  const started = Date.now();
  const { reply: answer } = await rawUpgrade(ts.port, { path: '/server' });
  const elapsed = Date.now() - started;
  assert.equal(answer.status, 503);
  assert.match(answer.body, /authentication timed out after 200 ms/);
  // Not before authenticateTimeout (Date.now() may round down: 10 ms); after it, a margin scaled by the measured pace.
  assert.ok(elapsed >= 190 && elapsed < 200 + pace.scaled(1800), `refused after ${elapsed} ms (bound ${200 + pace.scaled(1800)} ms)`);
  // The slot is free again: the next one also gets to authenticate (and time out), not a max-connections 503.
  const { reply: again } = await rawUpgrade(ts.port, { path: '/server' });
  assert.match(again.body, /authentication timed out/);
});

test('R21 maxMessageRate: a connection over the rate is closed 1008 and its excess dropped; others are unaffected', { timeout: pace.scaled(10_000) }, async (t) => {
  const { startSupervisor, openClient, closeOf, nextMessage } = await import('../helpers/server.ts');
  let handled = 0;
  let firstAt = 0;
  let lastAt = 0;
  const ts = await startSupervisor({
    maxMessageRate: 20,
    timing: { closeTimeout: 200 },
    onMessage: (c, data) => {
      handled++;
      lastAt = performance.now();
      if (handled === 1) firstAt = lastAt;
      c.send(data);
    },
  });
  t.after(() => ts.close());
  const calm = await openClient(ts.url);
  const flood = await openClient(ts.url);
  const closed = closeOf(flood);
  for (let i = 0; i < 100; i++) flood.send(`m${i}`);
  const { code, reason } = await closed;
  assert.equal(code, 1008);
  assert.equal(reason, 'message rate over 20/s');
  // A token bucket: the burst of 20, plus 20/s refilled while the server was
  // reading the flood (on a busy machine that takes a while), plus rounding.
  const refilled = Math.ceil((20 * (lastAt - firstAt)) / 1000);
  assert.ok(handled >= 20 && handled <= 22 + refilled, `the burst (20) was handled, the excess dropped: ${handled} (${refilled} refilled in ${(lastAt - firstAt).toFixed(0)} ms)`);
  // The calm client keeps its own budget.
  for (let i = 0; i < 5; i++) {
    const reply = nextMessage(calm);
    calm.send(`c${i}`);
    assert.equal(await reply, `c${i}`);
  }
  const text = await ts.supervisor.metrics.registry.metrics();
  assert.match(text, /ws_supervisor_closes_by_cause_total\{cause="rate-limit",expected="false",initiator="local"\} 1/);
  calm.close();
});
