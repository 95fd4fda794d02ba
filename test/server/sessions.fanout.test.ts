/**
 * Fan-out in the store (docs/sessions.md, "Fan-out in the store"): with the
 * Redis session store, a broadcast or publish is appended to every member
 * session's stream by the publishing node, in Redis, once; the nodes that
 * hold members attached deliver it from the store's notification. So:
 *
 * - a session whose process was SIGKILLed, held by no process, still gets
 *   every broadcast and publish made meanwhile: its resume on another node
 *   replays each once, in order (before, no process appended them: lost, and
 *   nobody could name them);
 * - a session moving between two nodes while broadcasts flow gets each once,
 *   in order (before, both nodes could append one, or one's append was
 *   refused `moved` before the other routed the session: twice, or missed);
 * - a detached session past its bound still ends `overflow`.
 *
 * Real sockets, raw session frames, a real redis-server (test/helpers/redis.ts).
 * Without redis-server: SKIPPED (under CI=true: a failure).
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { test, type TestContext } from 'node:test';
import WebSocket from 'ws';
import { createRedisAdapter } from '../../src/adapter/redis.ts';
import { createRedisSessionStore, type RedisSessionStore, type RedisSessionStoreOptions } from '../../src/adapter/redis-session-store.ts';
import type { SessionDeadLetter } from '../../src/adapter/session-store.ts';
import { startDemoServer, type DemoServer } from '../../src/cli/demo-server.ts';
import { decodeServerFrame, encodeOpen, encodeResume, encodeTextData, type ServerFrame } from '../../src/protocol/session.ts';
import type { SessionLifecycleEvent } from '../../src/server/sessions.ts';
import { startCliServer } from '../helpers/cli.ts';
import { startRedis } from '../helpers/redis.ts';
import { delay, waitFor } from '../helpers/server.ts';

interface Node {
  demo: DemoServer;
  store: RedisSessionStore;
  url: string;
  events: SessionLifecycleEvent[];
  letters: SessionDeadLetter[];
}

/** A demo server with the Redis session store and the Redis adapter (the CLI's default prefixes unless `prefix`). */
async function node(
  t: TestContext,
  redisUrl: string,
  name: string,
  opts: { prefix?: string; store?: Partial<RedisSessionStoreOptions>; sweepInterval?: number; copyDelay?: number } = {},
): Promise<Node> {
  const store = createRedisSessionStore({ url: redisUrl, ...(opts.prefix ? { prefix: `${opts.prefix}:session:` } : {}), ...opts.store });
  const adapter = createRedisAdapter({ url: redisUrl, ...(opts.prefix ? { prefix: `${opts.prefix}:` } : {}), nodeId: name });
  const copyDelay = opts.copyDelay;
  if (copyDelay !== undefined) {
    // The adapter's copies reach the node `copyDelay` ms late (in order): the store's notifications come first.
    const attachHost = adapter.attach.bind(adapter);
    adapter.attach = (host) => attachHost({ ...host, deliver: (message) => void setTimeout(() => host.deliver(message), copyDelay) });
  }
  const sessions = { store, ...(opts.sweepInterval !== undefined ? { sweepInterval: opts.sweepInterval } : {}) };
  const demo = await startDemoServer({ host: '127.0.0.1', port: 0, sessions, adapter });
  const events: SessionLifecycleEvent[] = [];
  const letters: SessionDeadLetter[] = [];
  demo.supervisor.on('session', (e) => events.push(e));
  demo.supervisor.on('sessionDeadLetter', (l) => letters.push(l));
  t.after(() => demo.close());
  await waitFor(() => store.status === 'up' && demo.supervisor.adapter.status === 'up', 10_000, `${name}'s session store and adapter to reach redis`);
  return { demo, store, events, letters, url: `ws://127.0.0.1:${demo.address.port}/server?ws-session=1` };
}

/** A raw session connection: every frame it got, decoded (until `stop()`: then, as a client that moved on, it reads no more). */
/** One append of session `id` on node `a` fails (the reply to a `noop` request): the session goes unpersisted. */
async function unpersistOnce(a: Node, raw: Raw, id: string): Promise<void> {
  const append = a.store.append.bind(a.store);
  let failed = false;
  a.store.append = (sid, message, cseq) => {
    if (!failed && sid === id) {
      failed = true;
      return Promise.reject(new Error('injected append failure'));
    }
    return append(sid, message, cseq);
  };
  raw.request({ command: 'noop' });
  await waitFor(() => a.events.some((e) => e.type === 'unpersisted' && e.id === id), 10_000, 'the session to go unpersisted');
}

class Raw {
  readonly ws: WebSocket;
  readonly frames: ServerFrame[] = [];
  private cseq = 0;
  private stopped = false;
  constructor(t: TestContext, url: string) {
    this.ws = new WebSocket(url);
    this.ws.on('message', (d, binary) => {
      if (!this.stopped) this.frames.push(decodeServerFrame(binary ? (d as Buffer) : d.toString(), binary));
    });
    this.ws.on('error', () => undefined);
    t.after(() => this.ws.terminate());
  }
  async opened(): Promise<void> {
    if (this.ws.readyState !== WebSocket.OPEN) await new Promise((r, j) => (this.ws.once('open', r), this.ws.once('close', () => j(new Error('closed before open')))));
  }
  stop(): void {
    this.stopped = true;
  }
  request(body: Record<string, unknown>): void {
    this.cseq++;
    this.ws.send(encodeTextData(this.cseq, JSON.stringify({ requestID: this.cseq, ...body })));
  }
  data(): Array<{ seq: number; payload: string }> {
    return this.frames.flatMap((f) => (f.kind === 'data' ? [{ seq: f.seq, payload: String(f.payload) }] : []));
  }
  attached(): Extract<ServerFrame, { kind: 'attached' }> | undefined {
    const f = this.frames.find((x) => x.kind === 'attached');
    return f && f.kind === 'attached' ? f : undefined;
  }
}

async function attach(raw: Raw, frame: string): Promise<Extract<ServerFrame, { kind: 'attached' }>> {
  await raw.opened();
  raw.ws.send(frame);
  await waitFor(() => raw.attached() !== undefined, 10_000, 'attached');
  return raw.attached()!;
}

test('a session whose process was SIGKILLed, held by no process: every broadcast and publish made meanwhile on another node reaches it, once each, in order, when it resumes there', async (t) => {
  const redis = await startRedis(t);
  if (!redis) return;
  // Node A: a real process, killed without a goodbye. Node B: in this process, same Redis, the CLI's prefixes.
  const a = await startCliServer(['--sessions', '--redis', redis.url, '--log-level', 'warn'], t);
  const b = await node(t, redis.url, 'node-b');

  const onA = new Raw(t, `${a.wsUrl}?ws-session=1`);
  const { id, token, epoch } = await attach(onA, encodeOpen());
  onA.request({ command: 'join', topic: 'room' });
  await waitFor(() => onA.data().length >= 1, 10_000, 'the join reply on A');
  const lastSeq = onA.data().at(-1)!.seq;

  a.kill();
  await a.exited;
  await waitFor(() => onA.ws.readyState === WebSocket.CLOSED, 10_000, "the client to see A's socket close");

  // Nobody holds the session now (A's lease has not lapsed: Redis still counts it attached to a dead process).
  const N = 40;
  for (let k = 1; k <= N; k++) {
    b.demo.supervisor.broadcast(`{"b":${k}}`);
    b.demo.supervisor.publish('room', `{"p":${k}}`);
    if (k % 10 === 0) await delay(5);
  }
  await waitFor(() => b.store.queuedOperations === 0, 10_000, "B's fan-outs to be sent");
  let held = 0;
  for (const deadline = Date.now() + 10_000; held < lastSeq + 2 * N && Date.now() < deadline; await delay(20)) held = (await b.store.get(id))?.lastSeq ?? -1;
  assert.equal(held, lastSeq + 2 * N, 'every broadcast and publish is in the stream of the session no process holds');

  const onB = new Raw(t, b.url);
  const attached = await attach(onB, encodeResume({ id, token, lastSeq, epoch }));
  assert.equal(attached.resumed, true, JSON.stringify(attached));
  // And what comes after the resume, live through B's attach.
  for (let k = N + 1; k <= N + 10; k++) {
    b.demo.supervisor.broadcast(`{"b":${k}}`);
    b.demo.supervisor.publish('room', `{"p":${k}}`);
  }
  await waitFor(() => onB.data().length >= 2 * (N + 10), 10_000, `${2 * (N + 10)} messages on B (got ${onB.data().length})`);
  await delay(200); // nothing more may come
  const got = onB.data();
  assert.deepEqual(got.map((m) => m.seq), Array.from({ length: 2 * (N + 10) }, (_, i) => lastSeq + 1 + i), 'seqs in order, none twice, none skipped');
  const parsed = got.map((m) => JSON.parse(m.payload) as { b?: number; p?: number });
  assert.deepEqual(parsed.filter((m) => m.b !== undefined).map((m) => m.b), Array.from({ length: N + 10 }, (_, i) => i + 1), 'every broadcast once, in order');
  assert.deepEqual(parsed.filter((m) => m.p !== undefined).map((m) => m.p), Array.from({ length: N + 10 }, (_, i) => i + 1), 'every publish once, in order');
  assert.deepEqual(b.letters, [], 'no dead letter');
});

test('broadcasts and publishes flowing from a third node while the session moves between A and B again and again (each move a takeover of a still-open connection): every one once, in order, and no `moved` dead letter', async (t) => {
  const redis = await startRedis(t);
  if (!redis) return;
  const prefix = `fanout-${process.pid}`;
  const [a, b, p] = [await node(t, redis.url, 'node-a', { prefix }), await node(t, redis.url, 'node-b', { prefix }), await node(t, redis.url, 'node-p', { prefix })];

  let current = new Raw(t, a.url);
  const { id, token, epoch } = await attach(current, encodeOpen());
  current.request({ command: 'join', topic: 'room' });
  await waitFor(() => current.data().length >= 1, 10_000, 'the join reply');
  const accepted: Array<{ seq: number; payload: string }> = [];

  // The publisher: a broadcast and a publish every 2 ms, numbered, until told to stop.
  let sent = 0;
  let publishing = true;
  const publisher = (async () => {
    while (publishing) {
      sent++;
      p.demo.supervisor.broadcast(`{"b":${sent}}`);
      p.demo.supervisor.publish('room', `{"p":${sent}}`);
      await delay(2);
    }
  })();

  const MOVES = 12;
  for (let move = 1; move <= MOVES; move++) {
    await delay(40 + (move % 4) * 25);
    // The client moves on: it reads nothing more from the old connection, which stays open (half-open), and
    // resumes on the other node from the last seq it has.
    current.stop();
    const had = current.data();
    accepted.push(...had.filter((m) => m.seq > (accepted.at(-1)?.seq ?? 0)));
    const lastSeq = accepted.at(-1)!.seq;
    const old = current;
    current = new Raw(t, move % 2 === 1 ? b.url : a.url);
    const attached = await attach(current, encodeResume({ id, token, lastSeq, epoch }));
    assert.equal(attached.resumed, true, `move ${move}: ${JSON.stringify(attached)}`);
    old.ws.terminate();
  }
  publishing = false;
  await publisher;
  // The last of them reaches the last connection.
  await waitFor(() => current.data().filter((m) => m.payload.startsWith('{"b"')).some((m) => (JSON.parse(m.payload) as { b: number }).b === sent), 15_000, `broadcast ${sent} on the last connection`);
  await waitFor(() => current.data().filter((m) => m.payload.startsWith('{"p"')).some((m) => (JSON.parse(m.payload) as { p: number }).p === sent), 15_000, `publish ${sent} on the last connection`);
  await delay(200);
  accepted.push(...current.data().filter((m) => m.seq > accepted.at(-1)!.seq));

  const seqs = accepted.map((m) => m.seq);
  assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => 1 + i), 'seqs 1… in order, none twice, none skipped');
  const parsed = accepted.map((m) => JSON.parse(m.payload) as { b?: number; p?: number });
  assert.deepEqual(parsed.filter((m) => m.b !== undefined).map((m) => m.b), Array.from({ length: sent }, (_, i) => i + 1), `every one of ${sent} broadcasts once, in order`);
  assert.deepEqual(parsed.filter((m) => m.p !== undefined).map((m) => m.p), Array.from({ length: sent }, (_, i) => i + 1), `every one of ${sent} publishes once, in order`);
  for (const n of [a, b, p]) {
    assert.deepEqual(n.letters.filter((l) => l.reason === 'moved' || l.sessionId === '*'), [], 'no moved dead letter, no failed fan-out');
  }
  const peeks = (n: Node) => n.store.operations['peekAfter'] ?? 0;
  console.log(
    `# ${sent} broadcasts and ${sent} publishes over ${MOVES} moves; moved events: A ${a.events.filter((e) => e.type === 'moved').length}, ` +
      `B ${b.events.filter((e) => e.type === 'moved').length}; gap reads (peekAfter) A ${peeks(a)}, B ${peeks(b)}; notifications A ${a.store.fanOutStats.notifications}, B ${b.store.fanOutStats.notifications}`,
  );
});

for (const where of ['another node', 'the same node'] as const) {
  test(`a fan-out notification of a seq past the resume's replay, handled before the resume's answer (two Redis connections, no order between them), with nothing after it: the connection resumed on ${where} still gets it`, async (t) => {
    const redis = await startRedis(t);
    if (!redis) return;
    const prefix = `fanout-${process.pid}-early-${where === 'the same node' ? 'same' : 'other'}`;
    const [a, b] = [await node(t, redis.url, 'node-a', { prefix }), await node(t, redis.url, 'node-b', { prefix })];
    const to = where === 'the same node' ? a : b;
    const onA = new Raw(t, a.url);
    const { id, token, epoch } = await attach(onA, encodeOpen());
    a.demo.supervisor.broadcast('{"b":1}');
    await waitFor(() => onA.data().length === 1, 10_000, 'broadcast 1 on A');
    onA.stop();

    // The interleaving, driven: the resume has run in Redis (its node holds the session: the fan-out tells it), and a
    // broadcast's notification reaches that node before it goes on with the resume's answer. The notification went to
    // no connection (another node: none carried the session there yet) or to the old one (the same node), and with no
    // later seq to show the gap, broadcast 2 never reached the resumed connection.
    const resume = to.store.resume.bind(to.store);
    let heldBack = 0;
    to.store.resume = async (sid, seq) => {
      const answer = await resume(sid, seq);
      const before = to.store.fanOutStats.notifications;
      a.demo.supervisor.broadcast('{"b":2}');
      await waitFor(() => to.store.fanOutStats.notifications > before, 10_000, "broadcast 2's notification");
      heldBack++;
      return answer;
    };
    const resumed = new Raw(t, to.url);
    const attached = await attach(resumed, encodeResume({ id, token, lastSeq: 1, epoch }));
    assert.equal(attached.resumed, true, JSON.stringify(attached));
    assert.equal(heldBack, 1, 'the resume went through the interleaving');
    onA.ws.terminate();
    await waitFor(() => resumed.data().length >= 1, 5_000, `broadcast 2 on the resumed connection (got ${JSON.stringify(resumed.data())})`);
    await delay(100); // nothing more may come
    assert.deepEqual(resumed.data(), [{ seq: 2, payload: '{"b":2}' }], 'broadcast 2, once, under its seq');
    assert.deepEqual([...a.letters, ...b.letters], [], 'no dead letter');
  });
}

test("a takeover on the same node whose old connection closes while the resume is on its way to Redis: the old connection's refused detach does not undo the node's new hold (its lease is renewed, its requests are counted)", async (t) => {
  const redis = await startRedis(t);
  if (!redis) return;
  const a = await node(t, redis.url, 'node-a', { prefix: `fanout-${process.pid}-hold` });
  const first = new Raw(t, a.url);
  const { id, token, epoch } = await attach(first, encodeOpen());
  first.request({ command: 'echo', someOtherThing: 'one' });
  await waitFor(() => first.data().length >= 1, 10_000, 'the reply to request 1');
  const lastSeq = first.data().at(-1)!.seq;
  first.stop();

  // The order, driven: Redis stops once the resume's verify is answered, so that the resume is sent, then the old
  // connection closes and its detach (presenting the hold the resume replaces) is sent behind it; Redis goes on
  // once the session's detached event fired here, and runs both in that order: the resume (a new hold), then the
  // detach, refused. Its answer deleted the new hold: no lease renewal (a sweep would detach the session under its
  // connection, and fan-outs stop telling this node), and every later request was refused `moved` (connection dropped).
  const detached = new Promise<void>((resolve) => a.demo.supervisor.on('session', (e) => e.type === 'detached' && e.id === id && resolve()));
  const verify = a.store.verify.bind(a.store);
  a.store.verify = (claim) => verify(claim).then((v) => (redis.pause(), v));
  const resume = a.store.resume.bind(a.store);
  a.store.resume = (sid, seq) => {
    const answer = resume(sid, seq);
    first.ws.terminate();
    void detached.then(() => redis.resume());
    return answer;
  };
  const second = new Raw(t, a.url);
  const attached = await attach(second, encodeResume({ id, token, lastSeq, epoch }));
  assert.equal(attached.resumed, true, JSON.stringify(attached));
  await waitFor(() => a.store.queuedOperations === 0, 10_000, 'the detach answered');
  await a.store.get(id); // answered after the detach (one connection, in order)
  const held = a.store.heldSessions;
  second.ws.send(encodeTextData(2, JSON.stringify({ requestID: 2, command: 'echo', someOtherThing: 'two' })));
  const reply2 = (): number => second.data().filter((m) => m.payload.includes('"requestID":2')).length;
  await waitFor(() => reply2() > 0 || second.ws.readyState !== WebSocket.OPEN, 10_000, 'the reply to request 2');
  await delay(100); // nothing more may come
  assert.equal(second.ws.readyState, WebSocket.OPEN, 'the resumed connection is not dropped as moved');
  assert.equal(reply2(), 1, 'request 2 answered once');
  assert.deepEqual(a.events.filter((e) => e.type === 'moved'), [], 'no moved event');
  assert.equal(held, 1, 'the node still holds the session it resumed');
});

test("a broadcast whose fan-out the node saw time out (Redis stopped) and that Redis ran once it went on: the node's own session gets it once, from the failure path, and not again from the late notification", async (t) => {
  const redis = await startRedis(t);
  if (!redis) return;
  const a = await node(t, redis.url, 'node-a', { prefix: `fanout-${process.pid}-late`, store: { commandTimeout: 500 } });
  const raw = new Raw(t, a.url);
  const { id } = await attach(raw, encodeOpen());
  a.demo.supervisor.broadcast('{"b":1}');
  await waitFor(() => raw.data().length === 1, 10_000, 'broadcast 1');

  redis.pause();
  const told = a.store.fanOutStats.notifications;
  a.demo.supervisor.broadcast('{"b":2}');
  // commandTimeout passes: the fan-out may or may not have been applied; the node delivers it to its session itself.
  await waitFor(() => raw.data().length === 2, 10_000, 'broadcast 2 from the failure path');
  assert.ok(a.events.some((e) => e.type === 'unpersisted' && e.id === id), 'the session is unpersisted');
  assert.deepEqual(a.letters.map((l) => [l.sessionId, l.reason]), [['*', 'fanout']]);
  assert.match(a.letters[0]!.detail, /may still have been appended/);
  redis.resume();
  // Redis runs the fan-out it held: its notification comes to this node, which delivered the message already.
  await waitFor(() => a.store.fanOutStats.notifications > told, 10_000, "the late fan-out's notification");
  await delay(100); // nothing more may come
  assert.deepEqual(raw.data().map((m) => m.payload), ['{"b":1}', '{"b":2}'], 'broadcast 2 once');
  assert.equal(raw.ws.readyState, WebSocket.OPEN, 'the connection goes on, carrying the session locally');
});

/**
 * A TCP proxy in front of Redis for the session store: `dropAnswers` makes the
 * store's command connection (named `ws-supervisor:sessions`) lose what Redis
 * sends back from then on, as a reply lost with its connection; the
 * notification connection and the rest pass untouched. `cut()` closes the
 * command connection (the store reconnects).
 */
async function answerDropper(t: TestContext, redisUrl: string): Promise<{ url: string; dropAnswers: boolean; cut(): void }> {
  const target = new URL(redisUrl);
  const commands = new Set<net.Socket>();
  const proxy = { url: '', dropAnswers: false, cut: () => commands.forEach((c) => c.destroy()) };
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port), target.hostname);
    let sniffed = '';
    let command = false;
    client.on('data', (d) => {
      if (!command && sniffed.length < 4096) {
        sniffed += d.toString('latin1');
        if (sniffed.includes('ws-supervisor:sessions\r\n')) {
          command = true;
          commands.add(client);
        }
      }
      upstream.write(d);
    });
    upstream.on('data', (d) => {
      if (!(command && proxy.dropAnswers)) client.write(d);
    });
    const close = (): void => {
      client.destroy();
      upstream.destroy();
      commands.delete(client);
    };
    client.on('close', close).on('error', close);
    upstream.on('close', close).on('error', close);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    proxy.cut();
    server.close();
  });
  proxy.url = `redis://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  return proxy;
}

test("a broadcast whose fan-out Redis ran but whose answer the node lost (it saw the call time out) after the notification came: the node's own session gets it once, from the notification; nothing is unpersisted and no dead letter is made", async (t) => {
  const redis = await startRedis(t);
  if (!redis) return;
  const proxy = await answerDropper(t, redis.url);
  const a = await node(t, proxy.url, 'node-a', { prefix: `fanout-${process.pid}-lost`, store: { commandTimeout: 500 } });
  const raw = new Raw(t, a.url);
  const { id } = await attach(raw, encodeOpen());
  a.demo.supervisor.broadcast('{"b":1}');
  await waitFor(() => raw.data().length === 1, 10_000, 'broadcast 1');

  proxy.dropAnswers = true;
  const timeouts = a.store.failures.timeout;
  a.demo.supervisor.broadcast('{"b":2}');
  // Redis runs it: the notification comes (delivered under seq 2), the answer does not, and commandTimeout passes.
  await waitFor(() => a.store.failures.timeout > timeouts, 10_000, "the fan-out's call to time out");
  await delay(100); // nothing more may come
  proxy.cut();
  assert.deepEqual(raw.data(), [{ seq: 1, payload: '{"b":1}' }, { seq: 2, payload: '{"b":2}' }], 'broadcast 2 once, under its seq');
  assert.deepEqual(a.events.filter((e) => e.type === 'unpersisted' && e.id === id), [], 'the session stays persisted: the store holds broadcast 2');
  assert.deepEqual(a.letters, [], 'no dead letter: every member got it');
});

test('a detached session past its bound while another node broadcasts: it ends overflow (dead letters on the publishing node, the refused message with them), its node is told, and the resume gets overflow as before', async (t) => {
  const redis = await startRedis(t);
  if (!redis) return;
  const prefix = `fanout-${process.pid}-bound`;
  const store = { maxMessages: 20 };
  const [a, b] = [await node(t, redis.url, 'node-a', { prefix, store }), await node(t, redis.url, 'node-b', { prefix, store })];
  const onA = new Raw(t, a.url);
  const { id, token, epoch } = await attach(onA, encodeOpen());
  onA.ws.close();
  await waitFor(() => a.events.some((e) => e.type === 'detached' && e.id === id), 10_000, 'detached on A');
  for (let k = 1; k <= 25; k++) b.demo.supervisor.broadcast(`{"b":${k}}`);
  await waitFor(() => b.letters.some((l) => l.sessionId === id), 10_000, 'the dead letter on B, the publishing node');
  const letter = b.letters.find((l) => l.sessionId === id)!;
  assert.equal(letter.reason, 'overflow');
  assert.deepEqual(letter.messages.map((m) => m.seq), [...Array.from({ length: 20 }, (_, i) => i + 1), 0], 'the 20 held, then the refused one (seq 0)');
  assert.equal(String(letter.messages.at(-1)!.data), '{"b":21}');
  await waitFor(() => a.events.some((e) => e.type === 'overflowed' && e.id === id), 10_000, "A (which runs the session's machine) told: overflowed");
  const onB = new Raw(t, b.url);
  const attached = await attach(onB, encodeResume({ id, token, lastSeq: 0, epoch }));
  assert.equal(attached.resumed, false);
  assert.equal(attached.reason, 'overflow', JSON.stringify(attached));
});

test('replies and publishes of 20 sessions interleaved (the reply answered on one Redis connection, the push told on another): every message once, in order, no connection closed for a gap, and gap reads far fewer than messages', async (t) => {
  const redis = await startRedis(t);
  if (!redis) return;
  const n = await node(t, redis.url, 'node-a', { prefix: `fanout-${process.pid}-mix` });
  const CLIENTS = 20;
  const ROUNDS = 50;
  const raws = await Promise.all(
    Array.from({ length: CLIENTS }, async (_, i) => {
      const raw = new Raw(t, n.url);
      await attach(raw, encodeOpen());
      raw.request({ command: 'join', topic: `t${i}` });
      return raw;
    }),
  );
  await waitFor(() => raws.every((r) => r.data().length >= 1), 10_000, 'the join replies');
  for (let k = 1; k <= ROUNDS; k++) {
    raws.forEach((r, i) => {
      r.request({ command: 'publish', topic: `t${i}`, someOtherThing: `p${k}` });
      r.request({ command: 'echo', someOtherThing: `r${k}` });
    });
    await delay(10);
  }
  const want = 1 + 3 * ROUNDS;
  await waitFor(() => raws.every((r) => r.data().length >= want || r.ws.readyState !== WebSocket.OPEN), 60_000, 'every reply and push');
  for (const [i, r] of raws.entries()) {
    assert.equal(r.ws.readyState, WebSocket.OPEN, `client ${i} still connected`);
    const got = r.data();
    assert.deepEqual(got.map((m) => m.seq), Array.from({ length: want }, (_, j) => j + 1), `client ${i}: seqs in order, once`);
    const pushes = got.filter((m) => m.payload.startsWith('{"command":"publish"')).map((m) => (JSON.parse(m.payload) as { someOtherThing: string }).someOtherThing);
    assert.deepEqual(pushes, Array.from({ length: ROUNDS }, (_, j) => `p${j + 1}`), `client ${i}: every push once, in order`);
  }
  const peeks = n.store.operations['peekAfter'] ?? 0;
  console.log(`# ${CLIENTS * ROUNDS} publishes answered with their replies: ${peeks} gap reads, ${n.store.fanOutStats.notifications} notifications`);
  assert.ok(peeks < (CLIENTS * ROUNDS) / 2, `gap reads ${peeks}: most early seqs wait for the other connection's answer instead of a read`);
});

/** Polls the store until the session's record is gone (the unpersisted session's copy ended). */
async function storeCopyEnded(store: RedisSessionStore, id: string): Promise<void> {
  let record: unknown = {};
  for (const deadline = Date.now() + 10_000; record !== null && Date.now() < deadline; await delay(20)) record = await store.get(id);
  assert.equal(record, null, "the unpersisted session's store copy is ended");
}

test("an unpersisted session whose store copy was ended: every later broadcast and publish of its topics, from any node, still reaches its open connection, once", async (t) => {
  const redis = await startRedis(t);
  if (!redis) return;
  const prefix = `fanout-${process.pid}-gone`;
  const a = await node(t, redis.url, 'node-a', { prefix, store: { commandTimeout: 500 }, sweepInterval: 100 });
  const b = await node(t, redis.url, 'node-b', { prefix, store: { commandTimeout: 500 } });
  const raw = new Raw(t, a.url);
  const { id } = await attach(raw, encodeOpen());
  raw.request({ command: 'join', topic: 'room' });
  await waitFor(() => raw.data().length === 1, 10_000, 'the join reply');
  a.demo.supervisor.broadcast('{"b":1}');
  await waitFor(() => raw.data().length === 2, 10_000, 'broadcast 1');

  // Redis hangs: A's broadcast 2 times out in the store, the session goes local (unpersisted), 2 is written on it.
  redis.pause();
  a.demo.supervisor.broadcast('{"b":2}');
  await waitFor(() => raw.data().length === 3, 10_000, 'broadcast 2 from the failure path');
  assert.ok(a.events.some((e) => e.type === 'unpersisted' && e.id === id), 'the session is unpersisted');
  redis.resume();
  // A ends the store's copy (so that nothing resumes it over the gap): from then on the session is no member in Redis.
  await storeCopyEnded(a.store, id);
  await waitFor(() => b.store.status === 'up' && b.demo.supervisor.adapter.status === 'up', 10_000, 'B back');

  b.demo.supervisor.broadcast('{"b":3}');
  b.demo.supervisor.publish('room', '{"p":3}');
  b.demo.supervisor.publish('elsewhere', '{"x":3}');
  a.demo.supervisor.broadcast('{"b":4}');
  a.demo.supervisor.publish('room', '{"p":4}');
  a.demo.supervisor.publish('elsewhere', '{"x":4}');
  await waitFor(() => raw.data().length >= 7, 10_000, `the four messages after the store copy ended (got ${JSON.stringify(raw.data().slice(3).map((m) => m.payload))})`);
  await delay(300); // nothing more may come
  const after = raw.data().slice(3).map((m) => m.payload);
  assert.deepEqual([...after].sort(), ['{"b":3}', '{"b":4}', '{"p":3}', '{"p":4}'], 'each once, none of a topic it is not in');
  assert.ok(after.indexOf('{"b":3}') < after.indexOf('{"p":3}') && after.indexOf('{"b":4}') < after.indexOf('{"p":4}'), "each node's messages in their order");
  assert.equal(raw.ws.readyState, WebSocket.OPEN, 'the connection goes on');
  assert.deepEqual(b.letters, [], 'no dead letter on B');

  // A's own broadcast whose store call fails now: written at the call, and not again by the failure path.
  redis.pause();
  a.demo.supervisor.broadcast('{"b":5}');
  await waitFor(() => a.letters.filter((l) => l.reason === 'fanout').length === 2, 10_000, "broadcast 5's fan-out to fail");
  redis.resume();
  await delay(300); // nothing more may come
  assert.deepEqual(raw.data().slice(7).map((m) => m.payload), ['{"b":5}'], 'broadcast 5 once');
  // On A: the failed fan-out's (broadcast 2, written here all the same), and the store copy's held messages, made
  // `expired` by its end (docs/sessions.md, "Store failures": some reached the client on its connection). None after.
  assert.deepEqual(a.letters.map((l) => [l.sessionId, l.reason]).filter(([, r]) => r !== 'expired'), [['*', 'fanout'], ['*', 'fanout']], 'on A no other dead letter');
  assert.ok(a.letters.filter((l) => l.reason === 'expired').every((l) => l.sessionId === id && l.messages.every((m) => !['{"b":3}', '{"p":3}', '{"b":4}', '{"p":4}'].includes(String(m.data)))), 'nothing after the end is a dead letter');
});

for (const copyDelay of [0, 40]) test(`a session going unpersisted while another node broadcasts and publishes every 2 ms, then its store copy ended: every message once, none skipped, across both moments (adapter copies ${copyDelay} ms late)`, async (t) => {
  const redis = await startRedis(t);
  if (!redis) return;
  const prefix = `fanout-${process.pid}-cut${copyDelay}`;
  const a = await node(t, redis.url, 'node-a', { prefix, sweepInterval: 50, copyDelay });
  const b = await node(t, redis.url, 'node-b', { prefix });
  const raw = new Raw(t, a.url);
  const { id } = await attach(raw, encodeOpen());
  raw.request({ command: 'join', topic: 'room' });
  await waitFor(() => raw.data().length === 1, 10_000, 'the join reply');

  let k = 0;
  let flowing = true;
  const flow = (async () => {
    while (flowing) {
      k++;
      b.demo.supervisor.broadcast(`{"b":${k}}`);
      b.demo.supervisor.publish('room', `{"p":${k}}`);
      await delay(2);
    }
  })();
  t.after(() => void (flowing = false));
  await waitFor(() => raw.data().length > 40, 10_000, 'the flow to reach the session');

  // One append of this session fails (the reply to a request): the session goes local mid-flow.
  await unpersistOnce(a, raw, id);
  const atUnpersist = k;
  await storeCopyEnded(a.store, id);
  const atEnd = k;
  await waitFor(() => k > atEnd + 40, 10_000, 'the flow to go on after the store copy ended');
  flowing = false;
  await flow;
  const last = k;
  const want = 1 + 1 + 2 * last; // the join reply, the noop reply, every broadcast and publish
  await waitFor(() => raw.data().length >= want, 10_000, `every message (got ${raw.data().length} of ${want})`);
  await delay(300); // nothing more may come
  const parsed = raw.data().map((m) => JSON.parse(m.payload) as { b?: number; p?: number });
  const bs = parsed.flatMap((m) => (m.b !== undefined ? [m.b] : []));
  const ps = parsed.flatMap((m) => (m.p !== undefined ? [m.p] : []));
  const all = Array.from({ length: last }, (_, i) => i + 1);
  t.diagnostic(`flow: ${last} broadcasts and ${last} publishes; unpersisted at ${atUnpersist}, store copy ended at ${atEnd}`);
  assert.deepEqual([...bs].sort((x, y) => x - y), all, 'every broadcast once');
  assert.deepEqual([...ps].sort((x, y) => x - y), all, 'every publish once');
  assert.equal(raw.data().length, want, 'nothing else, nothing twice');
  assert.equal(raw.ws.readyState, WebSocket.OPEN, 'the connection goes on');
  assert.deepEqual(b.letters, [], 'no dead letter on B');
  // The store copy's held messages are made `expired` by its end (docs/sessions.md, "Store failures"); nothing else.
  assert.deepEqual(a.letters.filter((l) => !(l.reason === 'expired' && l.sessionId === id)), [], 'no other dead letter on A');
});

test('many unpersisted sessions and many broadcasts while Redis hangs: the names kept for them are per node, not per session (bounded whatever their number), and every broadcast reaches every session once, in order', async (t) => {
  const redis = await startRedis(t);
  if (!redis) return;
  const a = await node(t, redis.url, 'node-a', { prefix: `fanout-${process.pid}-bound`, store: { commandTimeout: 500 }, sweepInterval: 100 });
  const sessions = a.demo.supervisor.sessions!;
  const n = 40;
  const raws = Array.from({ length: n }, () => new Raw(t, a.url));
  const ids = (await Promise.all(raws.map((raw) => attach(raw, encodeOpen())))).map((x) => x.id);
  a.demo.supervisor.broadcast('{"b":0}');
  await waitFor(() => raws.every((raw) => raw.data().length === 1), 10_000, 'broadcast 0');

  // Redis hangs: broadcast 1 times out in the store, and its failure path unpersists every session of the node.
  redis.pause();
  a.demo.supervisor.broadcast('{"b":1}');
  await waitFor(() => sessions.localFanOutState().unpersisted === n, 10_000, 'every session to go local');
  // Each later broadcast is written at its call to every one of them (fanOutCopy), while no store copy can be ended.
  const broadcasts = 150;
  for (let k = 2; k <= broadcasts; k++) a.demo.supervisor.broadcast(`{"b":${k}}`);
  await waitFor(() => raws.every((raw) => raw.data().length === broadcasts + 1), 10_000, 'every broadcast on every connection');
  const held = sessions.localFanOutState();
  t.diagnostic(`during the outage: ${held.unpersisted} unpersisted sessions, ${held.names} fan-out names kept for them (${broadcasts + 1} fan-outs made)`);
  assert.equal(held.unpersisted, n);
  // Per node: at most the fan-outs' names, each in its copy record and its failure record. Per session (before), the
  // names written by the call or the failure path and not yet brought by a notification: n × broadcasts = 6,000 here.
  assert.ok(held.names <= 2 * (broadcasts + 1), `names kept: ${held.names}, not growing with the sessions`);

  // Redis goes on: it runs what it held (late notifications of fan-outs the node saw fail), the store copies are ended.
  redis.resume();
  for (const id of ids) await storeCopyEnded(a.store, id);
  await delay(300); // nothing more may come
  const want = Array.from({ length: broadcasts + 1 }, (_, k) => `{"b":${k}}`);
  for (const raw of raws) {
    assert.deepEqual(raw.data().map((m) => m.payload), want, 'every broadcast once, in order');
    assert.equal(raw.ws.readyState, WebSocket.OPEN, 'the connection goes on');
  }
  assert.ok(sessions.localFanOutState().names <= 2 * (broadcasts + 1), 'still bounded after');
});

test("a topic an unpersisted session leaves before its store copy is ended: the store's notifications of that topic's later publishes (which do not say the topic, and come before the adapter's copy) no longer reach it", async (t) => {
  const redis = await startRedis(t);
  if (!redis) return;
  const prefix = `fanout-${process.pid}-leave`;
  // No sweep meanwhile: the store copy is ended only at the end of the test. The adapter's copies 40 ms late.
  const a = await node(t, redis.url, 'node-a', { prefix, sweepInterval: 60_000, copyDelay: 40 });
  const b = await node(t, redis.url, 'node-b', { prefix });
  const raw = new Raw(t, a.url);
  const { id } = await attach(raw, encodeOpen());
  raw.request({ command: 'join', topic: 'room' });
  await waitFor(() => raw.data().length === 1, 10_000, 'the join reply');
  await unpersistOnce(a, raw, id);
  raw.request({ command: 'leave', topic: 'room' });
  await waitFor(() => raw.data().length === 3, 10_000, 'the leave reply');
  // The leave reached the store (it is sent there now): its record no longer lists the topic.
  let topics: string[] | undefined = ['room'];
  for (const deadline = Date.now() + 10_000; topics?.includes('room') === true && Date.now() < deadline; await delay(20)) topics = (await a.store.get(id))?.topics;

  b.demo.supervisor.publish('room', '{"p":1}');
  b.demo.supervisor.broadcast('{"b":1}');
  await waitFor(() => raw.data().some((m) => m.payload === '{"b":1}'), 10_000, 'the broadcast after the leave');
  await delay(300); // nothing more may come
  assert.deepEqual(raw.data().slice(3).map((m) => m.payload), ['{"b":1}'], 'no publish of a topic it left');
  assert.equal(await a.store.get(id).then((r) => r !== null), true, 'its store copy was not ended meanwhile (the gap this holds)');
});
