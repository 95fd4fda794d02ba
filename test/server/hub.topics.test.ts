// Topics (rooms) in the hub and the supervisor, and the adapter contract with
// the in-memory adapter: join/leave/publish on real sockets, membership
// released on close (R3), clear errors for bad names, cross-supervisor
// fan-out over a shared MemoryBus without double delivery, and R12 reporting
// when the adapter cannot reach Redis.
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type WebSocket from 'ws';
import {
  MAX_TOPIC_BYTES,
  MemoryBus,
  TopicError,
  createMemoryAdapter,
  validateTopic,
  type AdapterDeadLetter,
  type Connection,
  type SupervisorOptions,
} from '../../src/index.ts';
import { createRedisAdapter } from '../../src/adapter/redis.ts';
import { startDemoServer } from '../../src/cli/demo-server.ts';
import { createSupervisor } from '../../src/server/supervisor.ts';
import type { Logger } from '../../src/base/logger.ts';
import { pace } from '../helpers/pace.ts';
import { delay, openClient, startSupervisor, waitFor, type TestServer } from '../helpers/server.ts';
import { httpGet } from '../helpers/cli.ts';

/** A client that records every message it gets. */
interface Peer {
  ws: WebSocket;
  connection: Connection;
  got: string[];
}

async function serve(t: TestContext, options: Omit<SupervisorOptions, 'server'> = {}) {
  const srv = await startSupervisor(options);
  const peers: Peer[] = [];
  t.after(async () => {
    for (const p of peers) p.ws.terminate();
    await srv.close();
  });
  const peer = async (): Promise<Peer> => {
    const opened = new Promise<Connection>((resolve) => srv.supervisor.once('connection', (c) => resolve(c)));
    const ws = await openClient(srv.url);
    const p: Peer = { ws, connection: await opened, got: [] };
    ws.on('message', (data) => p.got.push(data.toString()));
    peers.push(p);
    return p;
  };
  return { srv, sup: srv.supervisor, peer };
}

/** Internal maps, read only to prove nothing leaks (R3). */
function internals(srv: TestServer): { topics: Map<string, Set<unknown>>; memberships: Map<string, Set<string>> } {
  return srv.supervisor.hub as unknown as { topics: Map<string, Set<unknown>>; memberships: Map<string, Set<string>> };
}

/** Waits until `peer` got `marker`, then returns what it got before it (FIFO per connection: nothing else can still be coming). */
async function before(peer: Peer, marker: string): Promise<string[]> {
  await waitFor(() => peer.got.includes(marker), 5000, `${marker} at a peer`);
  return peer.got.slice(0, peer.got.indexOf(marker));
}

describe('topic names', () => {
  test(`validateTopic: non-empty, well-formed, at most ${MAX_TOPIC_BYTES} UTF-8 bytes`, () => {
    assert.equal(MAX_TOPIC_BYTES, 256);
    assert.equal(validateTopic('news'), 'news');
    assert.equal(validateTopic('x'.repeat(256)), 'x'.repeat(256));
    assert.equal(validateTopic('€'.repeat(85)), '€'.repeat(85)); // 255 bytes
    assert.equal(validateTopic('😀'.repeat(64)), '😀'.repeat(64)); // 256 bytes
    const bad: Array<[unknown, RegExp]> = [
      ['', /must not be empty/],
      ['x'.repeat(257), /257 bytes long, over the limit of 256 bytes/],
      ['€'.repeat(86), /258 bytes long/],
      [42, /must be a string, got number/],
      [null, /must be a string, got null/],
      [undefined, /must be a string, got undefined/],
      ['a\ud800b', /well-formed Unicode/],
      ['\udc00', /well-formed Unicode/],
    ];
    for (const [topic, message] of bad) {
      assert.throws(() => validateTopic(topic), (err: unknown) => err instanceof TopicError && err.code === 'invalid-topic' && message.test(err.message));
    }
  });
});

describe('topics on one supervisor', () => {
  test('join, publish to members only, leave; broadcast stays everyone', { timeout: pace.scaled(10_000) }, async (t) => {
    const { sup, peer } = await serve(t);
    const [a, b, c] = [await peer(), await peer(), await peer()];
    assert.equal(sup.join(a.connection, 'news'), true);
    assert.equal(sup.join(a.connection, 'news'), false, 'joining twice is a no-op');
    assert.equal(sup.join(b.connection, 'news'), true);
    assert.equal(sup.join(b.connection, 'sport'), true);
    assert.deepEqual(sup.topicsOf(b.connection), ['news', 'sport']);
    assert.deepEqual(sup.membersOf('news').map((m) => m.id), [a.connection.id, b.connection.id]);
    assert.equal(sup.memberCount('news'), 2);
    assert.equal(sup.memberCount('nobody'), 0);

    assert.deepEqual(sup.publish('news', 'n1'), { accepted: 2, refused: 0 });
    assert.deepEqual(sup.publish('nobody', 'n0'), { accepted: 0, refused: 0 });
    assert.deepEqual(sup.broadcast('all1'), { accepted: 3, refused: 0 });
    assert.deepEqual(await before(a, 'all1'), ['n1']);
    assert.deepEqual(await before(b, 'all1'), ['n1']);
    assert.deepEqual(await before(c, 'all1'), [], 'a non-member gets no publish');

    assert.equal(sup.leave(b.connection, 'news'), true);
    assert.equal(sup.leave(b.connection, 'news'), false, 'not a member any more');
    assert.equal(sup.leave(c.connection, 'news'), false);
    sup.publish('news', Buffer.from('n2')); // binary
    sup.broadcast('all2');
    assert.deepEqual((await before(a, 'all2')).slice(-1), ['n2']);
    assert.deepEqual((await before(b, 'all2')).slice(-1), ['all1'], 'left: no more publishes');
    assert.deepEqual(sup.topicsOf(b.connection), ['sport']);
  });

  test('R3: a closed connection leaves every topic; emptied topics are deleted; churn leaks nothing', { timeout: pace.scaled(15_000) }, async (t) => {
    const { srv, sup, peer } = await serve(t);
    const stay = await peer();
    sup.join(stay.connection, 'shared');
    const churn: Peer[] = [];
    for (let i = 0; i < 30; i++) {
      const p = await peer();
      sup.join(p.connection, 'shared');
      sup.join(p.connection, `own-${i}`);
      sup.join(p.connection, `pair-${i % 2}`);
      churn.push(p);
    }
    assert.equal(sup.memberCount('shared'), 31);
    assert.equal(sup.hub.topicCount, 1 + 30 + 2);
    for (const p of churn) p.ws.close(1000);
    await waitFor(() => sup.size === 1, 5000, 'every churned connection to close');
    for (const p of churn) assert.deepEqual(sup.topicsOf(p.connection), [], 'a closed connection is in no topic');
    assert.deepEqual(sup.hub.topicNames(), ['shared'], 'emptied topics are deleted, not kept empty');
    assert.deepEqual(sup.membersOf('shared').map((m) => m.id), [stay.connection.id]);
    const { topics, memberships } = internals(srv);
    assert.equal(topics.size, 1);
    assert.equal(memberships.size, 1, 'only the live member has a membership entry');
    const text = await sup.metrics.registry.metrics();
    assert.match(text, /^ws_supervisor_topics 1$/m);

    stay.ws.close(1000);
    await waitFor(() => sup.size === 0, 5000, 'the last connection to close');
    assert.equal(topics.size, 0, 'the last topic entry is deleted');
    assert.equal(memberships.size, 0);
    assert.equal(sup.memberCount('shared'), 0);
  });

  test('clear errors: bad names, a closed connection, the per-connection topic limit', { timeout: pace.scaled(10_000) }, async (t) => {
    const { sup, peer } = await serve(t, { maxTopicsPerConnection: 3 });
    const a = await peer();
    assert.throws(() => sup.join(a.connection, ''), { name: 'TopicError', code: 'invalid-topic', message: 'topic must not be empty' });
    assert.throws(() => sup.join(a.connection, 'x'.repeat(300)), { code: 'invalid-topic', message: /over the limit of 256 bytes/ });
    assert.throws(() => sup.join(a.connection, 7 as unknown as string), { code: 'invalid-topic', message: /must be a string, got number/ });
    assert.throws(() => sup.leave(a.connection, ''), { code: 'invalid-topic' });
    assert.throws(() => sup.publish('', 'x'), { code: 'invalid-topic' });
    for (const topic of ['t1', 't2', 't3']) sup.join(a.connection, topic);
    assert.throws(() => sup.join(a.connection, 't4'), { code: 'too-many-topics', message: 'already in 3 topics (the limit per connection)' });
    assert.equal(sup.join(a.connection, 't3'), false, 'rejoining one it is in is not over the limit');
    a.ws.close(1000);
    await a.connection.closed;
    await waitFor(() => sup.size === 0);
    assert.throws(() => sup.join(a.connection, 'late'), { code: 'not-connected', message: /is not open on this supervisor/ });
    assert.equal(sup.hub.topicCount, 0, 'nothing recorded for the closed connection');
    await assert.rejects(startSupervisor({ maxTopicsPerConnection: 0 }), /option maxTopicsPerConnection must be a positive integer no larger than 2147483647, got 0/);
  });
});

describe('adapters: supervisors sharing a MemoryBus (one process)', () => {
  test('broadcast and publish cross supervisors exactly once; local and filtered ones stay; nodes() lists both', { timeout: pace.scaled(10_000) }, async (t) => {
    const bus = new MemoryBus();
    const one = await serve(t, { adapter: createMemoryAdapter({ bus, nodeId: 'one' }) });
    const two = await serve(t, { adapter: createMemoryAdapter({ bus, nodeId: 'two' }) });
    const a = await one.peer(); // member, on the publishing node
    const b = await two.peer(); // member, remote
    const c = await two.peer(); // not a member
    one.sup.join(a.connection, 'room');
    two.sup.join(b.connection, 'room');

    one.sup.broadcast('hello');
    one.sup.publish('room', 'r1');
    one.sup.publish('room', 'r-local', { local: true });
    one.sup.broadcast('b-local', { local: true });
    one.sup.broadcast('b-filtered', { filter: () => true });
    one.sup.broadcast('end1'); // the bus keeps one sender's order: whatever crossed arrives before it
    assert.deepEqual(await before(a, 'end1'), ['hello', 'r1', 'r-local', 'b-local', 'b-filtered'], 'the publisher node delivers once, locally');
    assert.deepEqual(await before(b, 'end1'), ['hello', 'r1'], 'local and filtered sends never cross');
    assert.deepEqual(await before(c, 'end1'), ['hello']);
    await delay(pace.scaled(20)); // time for a (wrong) second copy to arrive
    for (const p of [a, b, c]) p.got.length = 0; // everything sent so far has arrived
    two.sup.publish('room', 'r2'); // the other way
    two.sup.broadcast('end2');
    assert.deepEqual(await before(a, 'end2'), ['r2']);
    assert.deepEqual(await before(b, 'end2'), ['r2']);
    assert.deepEqual(await before(c, 'end2'), []);

    const nodes = await one.sup.nodes();
    assert.deepEqual(nodes.map((n) => [n.id, n.connections, n.self]), [['one', 1, true], ['two', 2, false]]);
    assert.deepEqual(await two.sup.clusterSize(), { nodes: 2, connections: 3 });
    assert.equal(one.sup.adapter.status, 'up');
    const text = await one.sup.metrics.registry.metrics();
    assert.match(text, /^ws_supervisor_adapter_up 1$/m);
    assert.match(text, /^ws_supervisor_adapter_messages_total\{direction="out",kind="broadcast"\} 2$/m);
    assert.match(text, /^ws_supervisor_adapter_messages_total\{direction="in",kind="broadcast"\} 1$/m);
    assert.match(text, /^ws_supervisor_adapter_messages_total\{direction="out",kind="publish"\} 1$/m);
    assert.match(text, /^ws_supervisor_adapter_messages_total\{direction="in",kind="publish"\} 1$/m);

    await two.srv.close();
    assert.deepEqual((await one.sup.nodes()).map((n) => n.id), ['one'], 'a closed supervisor leaves the bus');
  });

  test('an adapter belongs to one supervisor', async (t) => {
    const adapter = createMemoryAdapter();
    const one = await serve(t, { adapter });
    assert.equal(one.sup.adapter, adapter);
    await assert.rejects(startSupervisor({ adapter }), /already attached to a supervisor/);
  });
});

/** A loopback port with nothing listening: connections to it are refused at once. */
async function deadPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('R12 when Redis is unreachable (no redis-server needed)', () => {
  test('local delivery continues; every cross-node send is reported (event + metric); /healthz says degraded with 200', { timeout: pace.scaled(15_000) }, async (t) => {
    const adapter = createRedisAdapter({ url: `redis://127.0.0.1:${await deadPort()}`, backoff: { initialDelay: 50, maxDelay: 200 } });
    assert.throws(() => createRedisAdapter({ url: 'localhost:6379' }), /url must start with redis:\/\/ or rediss:\/\//);
    assert.throws(() => createRedisAdapter({ url: 'redis://x', heartbeatInterval: 1000, presenceTtl: 1000 }), /presenceTtl \(1000\) must exceed heartbeatInterval \(1000\)/);
    const demo = await startDemoServer({ host: '127.0.0.1', port: 0, adapter });
    t.after(() => demo.close());
    const sup = demo.supervisor;
    const letters: AdapterDeadLetter[] = [];
    sup.on('adapterDeadLetter', (letter) => letters.push(letter));
    // Refused connection attempts: degraded, with the reason (waited for: a busy machine takes longer than 300 ms).
    await delay(300);
    await waitFor(() => adapter.status === 'degraded', 2000, 'the adapter to report degraded');
    assert.equal(adapter.status, 'degraded');
    assert.match(adapter.statusReason ?? '', /^redis unavailable: .*ECONNREFUSED/);
    const health = await httpGet(`http://127.0.0.1:${demo.address.port}/healthz`);
    assert.equal(health.status, 200, 'a degraded node still serves its own clients');
    assert.match(health.body, /^degraded: redis unavailable/);

    const ws = await openClient(`ws://127.0.0.1:${demo.address.port}/server`);
    t.after(() => ws.terminate());
    const got: string[] = [];
    ws.on('message', (data) => got.push(data.toString()));
    ws.send('{"requestID":1,"command":"join","topic":"news"}');
    ws.send('{"requestID":2,"command":"broadcast","someOtherThing":"b"}');
    ws.send('{"requestID":3,"command":"publish","topic":"news","someOtherThing":"p"}');
    await waitFor(() => got.length === 5, 5000, 'replies and local pushes');
    assert.deepEqual(got, [
      '{"requestID":1,"success":true,"someOtherThing":"joined news","topic":"news"}',
      '{"requestID":2,"success":true,"someOtherThing":"b"}',
      '{"command":"broadcast","someOtherThing":"b"}',
      '{"requestID":3,"success":true,"someOtherThing":"p","topic":"news"}',
      '{"command":"publish","topic":"news","someOtherThing":"p"}',
    ]);
    assert.deepEqual(
      letters.map((l) => [l.reason, l.kind, l.topic, l.data?.toString(), l.binary]),
      [
        ['unavailable', 'broadcast', null, '{"command":"broadcast","someOtherThing":"b"}', false],
        ['unavailable', 'publish', 'news', '{"command":"publish","topic":"news","someOtherThing":"p"}', false],
      ],
    );
    assert.match(letters[0]!.error, /^redis unavailable/);
    const text = await sup.metrics.registry.metrics();
    assert.match(text, /^ws_supervisor_adapter_publish_failures_total\{reason="unavailable"\} 2$/m);
    assert.match(text, /^ws_supervisor_adapter_up 0$/m);
    await assert.rejects(sup.clusterSize(), /redis unavailable/);
    // D8: /cluster cannot list the cluster while Redis is down: 503 with why, never this node alone.
    const cluster = await httpGet(`http://127.0.0.1:${demo.address.port}/cluster`);
    assert.equal(cluster.status, 503);
    assert.match(String(cluster.headers['content-type']), /^application\/json/);
    const body = JSON.parse(cluster.body) as { error: string; adapter: string; status: string };
    assert.match(body.error, /^redis unavailable: .*ECONNREFUSED/);
    assert.deepEqual([body.adapter, body.status], ['redis', 'degraded']);
  });

  // D4: an unreachable or wrong Redis at startup is a warning at once, with its reason, once per kind of failure (no flood).
  for (const kind of ['refused', 'garbage'] as const) {
    test(`startup against ${kind === 'refused' ? 'a closed port' : 'a server that speaks garbage'}: one warning with the reason, not one per retry`, { timeout: pace.scaled(15_000) }, async (t) => {
      let port: number;
      if (kind === 'refused') port = await deadPort();
      else {
        const garbage = net.createServer((socket) => {
          socket.on('error', () => undefined);
          socket.on('data', () => socket.write('\x00\xffGARBAGE!!\r\nzz\r\n'));
        });
        await new Promise<void>((resolve) => garbage.listen(0, '127.0.0.1', resolve));
        t.after(() => new Promise<void>((resolve) => garbage.close(() => resolve())));
        port = (garbage.address() as net.AddressInfo).port;
      }
      const lines: Array<{ level: string; msg: string; fields: Record<string, unknown> }> = [];
      const logger: Logger = {
        debug: (fields, msg = '') => void lines.push({ level: 'debug', msg, fields: fields as Record<string, unknown> }),
        info: (fields, msg = '') => void lines.push({ level: 'info', msg, fields: fields as Record<string, unknown> }),
        warn: (fields, msg = '') => void lines.push({ level: 'warn', msg, fields: fields as Record<string, unknown> }),
        error: (fields, msg = '') => void lines.push({ level: 'error', msg, fields: fields as Record<string, unknown> }),
        child: () => logger,
      };
      const adapter = createRedisAdapter({ url: `redis://:pw-secret@127.0.0.1:${port}`, backoff: { initialDelay: 20, maxDelay: 50 } });
      const sup = createSupervisor({ adapter, logger });
      t.after(() => sup.close());
      await waitFor(() => lines.filter((l) => l.msg.startsWith('redis adapter: connection error')).length >= 6, 10_000, 'several failed attempts');
      const warnings = lines.filter((l) => l.level === 'warn' && l.msg.startsWith('redis adapter: connection error'));
      assert.equal(warnings.length, 1, `one warning for repeated failures of one kind: ${JSON.stringify(warnings)}`);
      assert.match(warnings[0]!.msg, kind === 'refused' ? /ECONNREFUSED/ : /not a Redis server\? \(protocol error: /);
      assert.equal(warnings[0]!.fields.url, `redis://:***@127.0.0.1:${port}/0`, 'the password is masked');
      assert.ok(!JSON.stringify(lines).includes('pw-secret'), 'the password never reaches the log');
      assert.equal(adapter.status, 'degraded');
      assert.match(adapter.statusReason ?? '', kind === 'refused' ? /^redis unavailable: .*ECONNREFUSED/ : /^redis unavailable: not a Redis server\?/);
    });
  }
});

describe('GET /cluster (D8)', () => {
  test('with the in-memory adapter: this node alone, with its live connections', { timeout: pace.scaled(15_000) }, async (t) => {
    const demo = await startDemoServer({ host: '127.0.0.1', port: 0 });
    t.after(() => demo.close());
    const ws = await openClient(`ws://127.0.0.1:${demo.address.port}/server`);
    t.after(() => ws.terminate());
    const r = await httpGet(`http://127.0.0.1:${demo.address.port}/cluster`);
    assert.equal(r.status, 200);
    assert.match(String(r.headers['content-type']), /^application\/json/);
    assert.equal(r.headers['cache-control'], 'no-store');
    const body = JSON.parse(r.body) as { nodes: Array<Record<string, unknown>>; connections: number };
    assert.equal(body.connections, 1);
    assert.equal(body.nodes.length, 1);
    assert.deepEqual(Object.keys(body.nodes[0]!).sort(), ['connections', 'hostname', 'id', 'pid', 'self', 'startedAt', 'updatedAt']);
    assert.equal(body.nodes[0]!.id, demo.supervisor.adapter.nodeId);
    assert.equal(body.nodes[0]!.self, true);
    assert.equal(body.nodes[0]!.connections, 1);
  });
});
