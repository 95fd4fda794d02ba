/**
 * Sessions on real sockets (docs/sessions.md), 127.0.0.1 only: the supervisor
 * with `sessions` on, the Node client with `session: true`, and a TCP proxy
 * between them that can freeze (half-open) or cut its connections.
 *
 * Covered: a resume replays what the client missed, in order, once; each
 * `resumed: false` reason (expired, unknown, overflow, restarted, forbidden)
 * reaches the client; the failure cases of Socket.IO's recovery, as named
 * tests (a reconnect before the server sent anything, an idle session beyond
 * two heartbeat periods, requests in flight at the cut, a cut found by the
 * heartbeat); topics and `connection.data` come back; clients that do not
 * opt in see nothing new; the upgrade refuses a malformed or unserved
 * `ws-session`.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { describe, test, type TestContext } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import { createClient, type Client, type NodeClientOptions, type Push } from '../../src/client/node.ts';
import type { ResumeEvent } from '../../src/client/client.ts';
import { CloseCodes, createSupervisor, type Connection, type Supervisor, type SupervisorOptions } from '../../src/index.ts';
import { handleText, type TopicMembership } from '../../src/protocol/codec.ts';
import type { SessionLifecycleEvent } from '../../src/server/sessions.ts';
import { delay, waitFor } from '../helpers/server.ts';
import { pace } from '../helpers/pace.ts';
import { rawUpgrade } from '../helpers/raw-ws.ts';

// ---------------------------------------------------------------------------
// Fixtures

interface SessionServer {
  port: number;
  url: string;
  supervisor: Supervisor;
  /** requestID → how many times the handler ran it. */
  runs: Map<number, number>;
  events: SessionLifecycleEvent[];
  /** Stops the supervisor and the http server (sessions die with the process's store). */
  close(): Promise<void>;
}

/**
 * A supervisor answering the demo protocol (src/protocol/codec.ts) with topics,
 * counting how often its handler ran each requestID. `hold` delays the reply
 * to a request whose someOtherThing is "slow" (a request in flight at a cut).
 */
async function startSessionServer(
  t: TestContext,
  options: Omit<SupervisorOptions, 'server'> & { port?: number; runs?: Map<number, number> } = {},
): Promise<SessionServer> {
  const runs = options.runs ?? new Map<number, number>();
  const server = http.createServer();
  let supervisor!: Supervisor;
  const topics: TopicMembership<Connection> = {
    join: (c, topic) => supervisor.join(c, topic),
    leave: (c, topic) => supervisor.leave(c, topic),
  };
  supervisor = createSupervisor({
    path: '/server',
    sessions: {},
    ...options,
    timing: { closeTimeout: 300, ...options.timing },
    server,
    onMessage(connection, data) {
      const text = data.toString();
      const request = JSON.parse(text) as { requestID?: number; someOtherThing?: string };
      if (typeof request.requestID === 'number') runs.set(request.requestID, (runs.get(request.requestID) ?? 0) + 1);
      if (request.someOtherThing === 'remember') connection.data = { remembered: request.requestID ?? 0 };
      const handled = handleText(text, topics, connection);
      const answer = (): void => {
        connection.send(handled.reply);
        if (handled.broadcast) supervisor.broadcast(handled.broadcast);
        if (handled.publish) supervisor.publish(handled.publish.topic, handled.publish.push);
      };
      if (request.someOtherThing === 'slow') setTimeout(answer, 150);
      else answer();
    },
  });
  const events: SessionLifecycleEvent[] = [];
  supervisor.on('session', (e) => events.push(e));
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  let closing: Promise<void> | null = null;
  const result: SessionServer = {
    port,
    url: `ws://127.0.0.1:${port}/server`,
    supervisor,
    runs,
    events,
    close() {
      closing ??= (async () => {
        await supervisor.close();
        supervisor.detach();
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      })();
      return closing;
    },
  };
  t.after(() => bounded(result.close(), 'the server to close'));
  return result;
}

/** Small timings: every test runs in well under a second of waiting. */
function sessionClient(t: TestContext, url: string, options: NodeClientOptions = {}): Client {
  const client = createClient(url, {
    session: true,
    requestTimeout: 8_000,
    ...options,
    timing: { connectTimeout: 2_000, closeTimeout: 300, pingInterval: 0, ...options.timing },
    backoff: { initialDelay: 30, maxDelay: 100, multiplier: 2, ...options.backoff },
  });
  t.after(() => bounded(client.close(), `the client to close (state ${client.state})`));
  return client;
}

/** Cleanup that cannot hang the file: fails naming what did not finish. */
async function bounded(p: Promise<unknown>, what: string, ms = 5_000): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([p, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`cleanup: waited ${ms} ms for ${what}`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

function pushes(client: Client): Push[] {
  const out: Push[] = [];
  client.on('push', (p) => out.push(p));
  return out;
}

function nextResume(client: Client, timeoutMs = 5_000): Promise<ResumeEvent> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no resume event within ${timeoutMs} ms (client ${client.state})`));
    }, timeoutMs);
    const off = client.on('resume', (e) => {
      clearTimeout(timer);
      off();
      resolve(e);
    });
  });
}

async function opened(client: Client, timeoutMs = 5_000): Promise<void> {
  await waitFor(() => client.state === 'open' && client.sessionId !== null, timeoutMs, 'the client to attach its session');
}

/** The server side of the (one) live connection. */
function serverConnection(srv: SessionServer): Connection {
  const live = [...srv.supervisor.hub.values()];
  assert.equal(live.length, 1, 'one live connection on the server');
  return live[0]!;
}

/** A cut the server sees as a reset: its TCP socket is destroyed (no close frame either way). */
function cut(srv: SessionServer): Connection {
  const c = serverConnection(srv);
  c.socket.destroy();
  return c;
}

/**
 * Runs `act` as the session detaches, from the lifecycle event itself. A test that polled for the
 * detach and then broadcast raced the client's reconnect (30 ms of backoff): under load the client
 * resumed first and the message came live after the resume (replayed 0), not in the replay under test.
 */
function onDetach(srv: SessionServer, act: () => void): Promise<void> {
  return new Promise<void>((resolve) => {
    const listener = (e: SessionLifecycleEvent): void => {
      if (e.type !== 'detached') return;
      srv.supervisor.off('session', listener);
      act();
      resolve();
    };
    srv.supervisor.on('session', listener);
  });
}

/** A TCP proxy whose current connections can be frozen (nothing forwarded, nothing closed: half-open) or cut. */
async function startProxy(t: TestContext, upstreamPort: number) {
  const pairs = new Set<{ down: net.Socket; up: net.Socket; frozen: boolean }>();
  /** Every socket still open, frozen or not: the cleanup destroys them all (server.close waits for them). */
  const sockets = new Set<net.Socket>();
  const server = net.createServer((down) => {
    const up = net.connect(upstreamPort, '127.0.0.1');
    for (const s of [down, up]) {
      sockets.add(s);
      s.once('close', () => sockets.delete(s));
    }
    const pair = { down, up, frozen: false };
    pairs.add(pair);
    const forward = (from: net.Socket, to: net.Socket): void => {
      from.on('data', (chunk) => {
        if (!pair.frozen && !to.destroyed) to.write(chunk);
      });
      from.on('close', () => {
        // A frozen pair keeps its other side open (half-open) until cut: it stays listed until both are closed.
        if (to.destroyed) pairs.delete(pair);
        if (!pair.frozen) to.destroy();
      });
      from.on('error', () => undefined);
    };
    forward(down, up);
    forward(up, down);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const proxy = {
    port,
    url: `ws://127.0.0.1:${port}/server`,
    /** Freeze the connections open now (new ones flow). */
    freeze(): void {
      for (const p of pairs) p.frozen = true;
    },
    /** Destroy the connections open now, both sides. */
    cut(): void {
      for (const p of [...pairs]) {
        p.frozen = true;
        p.down.destroy();
        p.up.destroy();
        pairs.delete(p);
      }
    },
    /** Destroy only the client's side (the server's side stays half-open). */
    cutClientSide(): void {
      for (const p of [...pairs]) {
        p.frozen = true;
        p.down.destroy();
      }
    },
  };
  t.after(async () => {
    for (const socket of sockets) socket.destroy();
    await bounded(new Promise<void>((resolve) => server.close(() => resolve())), 'the proxy to close');
  });
  return proxy;
}

function assertOnce(runs: Map<number, number>, ids: number[]): void {
  for (const id of ids) assert.equal(runs.get(id), 1, `request ${id} ran ${runs.get(id) ?? 0} time(s) on the server, expected exactly once`);
}

// ---------------------------------------------------------------------------

describe('sessions on real sockets: resume with replay, both directions', () => {
  test('a cut resumes the session: what was broadcast while detached is replayed in order, once, before anything new', async (t) => {
    const srv = await startSessionServer(t);
    const client = sessionClient(t, srv.url);
    const got = pushes(client);
    await opened(client);
    const id = client.sessionId;
    await client.request('broadcast', 'before');
    await waitFor(() => got.length === 1);
    const resume = nextResume(client);
    const detached = onDetach(srv, () => {
      for (let i = 0; i < 5; i++) srv.supervisor.broadcast(JSON.stringify({ command: 'broadcast', someOtherThing: `away ${i}` }));
    });
    cut(srv);
    await detached;
    const r = await resume;
    assert.deepEqual({ resumed: r.resumed, reason: r.reason, replayed: r.replayed }, { resumed: true, reason: null, replayed: 5 });
    assert.equal(client.resumed, true);
    assert.equal(client.sessionId, id, 'the same session');
    await client.request('broadcast', 'after');
    await waitFor(() => got.length === 7);
    assert.deepEqual(got.map((p) => p.someOtherThing), ['before', 'away 0', 'away 1', 'away 2', 'away 3', 'away 4', 'after']);
    assert.deepEqual(srv.events.map((e) => e.type), ['attached', 'detached', 'resumed']);
    const resumed = srv.events[2] as Extract<SessionLifecycleEvent, { type: 'resumed' }>;
    assert.equal(resumed.replayed, 5);
    assert.deepEqual(resumed.connection.session, { id, resumed: true, reason: null, detail: null });
    const metrics = await srv.supervisor.metrics.registry.metrics();
    assert.match(metrics, /ws_supervisor_session_resumes_total\{result="resumed",reason="none"\} 1/);
    assert.match(metrics, /ws_supervisor_session_replayed_messages_total 5/);
  });

  test('zero-event reconnect (fails in Socket.IO): a cut before the server sent anything still resumes (lastSeq 0 is a position)', async (t) => {
    const srv = await startSessionServer(t);
    const client = sessionClient(t, srv.url);
    await opened(client);
    const resume = nextResume(client);
    const got = pushes(client);
    const detached = onDetach(srv, () => srv.supervisor.broadcast('{"command":"broadcast","someOtherThing":"first ever"}'));
    cut(srv);
    await detached;
    const r = await resume;
    assert.equal(r.resumed, true, `resumed (reason ${r.reason}: ${r.detail})`);
    assert.equal(r.replayed, 1);
    await waitFor(() => got.length === 1);
    assert.equal(got[0]!.someOtherThing, 'first ever');
  });

  test('an idle session beyond two heartbeat periods, then cut (fails in Socket.IO): resumes, with what came meanwhile', async (t) => {
    const timing = { pingInterval: 60, pongTimeout: 60 };
    const srv = await startSessionServer(t, { timing });
    const client = sessionClient(t, srv.url, { timing: { pingInterval: 60, pongTimeout: 200 } });
    const got = pushes(client);
    await opened(client);
    await client.request('broadcast', 'one');
    // Idle: only heartbeats cross for more than two periods (ping + pong timeout) of both sides.
    await delay(5 * (timing.pingInterval + timing.pongTimeout));
    assert.ok(srv.supervisor.hub.size === 1 && client.state !== 'closed', 'still connected after the idle time');
    const resume = nextResume(client);
    const detached = onDetach(srv, () => srv.supervisor.broadcast('{"command":"broadcast","someOtherThing":"two"}'));
    cut(srv);
    await detached;
    const r = await resume;
    assert.equal(r.resumed, true, `resumed (reason ${r.reason}: ${r.detail})`);
    await waitFor(() => got.length === 2);
    assert.deepEqual(got.map((p) => p.someOtherThing), ['one', 'two']);
  });

  test('requests in flight at the cut (not resent by Socket.IO): each answered once, each run once on the server', async (t) => {
    const srv = await startSessionServer(t);
    const proxy = await startProxy(t, srv.port);
    const client = sessionClient(t, proxy.url);
    await opened(client);
    // Run and answered before the cut.
    const before = await client.request('echo', 'fast');
    // Received and run, the reply delayed past the cut (it is kept, then replayed).
    const slow = client.request('echo', 'slow');
    await waitFor(() => srv.runs.get(2) === 1, 2_000, 'the slow request to run');
    // Never reached the server: the proxy holds them (then drops them with the cut).
    proxy.freeze();
    const lost = [client.request('echo', 'a'), client.request('echo', 'b'), client.request('echo', 'c')];
    await delay(30);
    const resume = nextResume(client);
    proxy.cut();
    const r = await resume;
    assert.equal(r.resumed, true, `resumed (reason ${r.reason}: ${r.detail})`);
    assert.equal(r.resent, 3, 'the three requests the server never got are resent');
    const replies = await Promise.all([slow, ...lost]);
    assert.deepEqual(
      [before, ...replies].map((x) => x.requestID),
      [1, 2, 3, 4, 5],
    );
    assert.deepEqual(replies.map((x) => x.someOtherThing), ['Server processed command: echo', 'Server processed command: echo', 'Server processed command: echo', 'Server processed command: echo']);
    await delay(100); // anything run twice would show by now
    assertOnce(srv.runs, [1, 2, 3, 4, 5]);
  });

  test('a half-open cut found by the client heartbeat: the resume takes the session over, the old connection is dropped', async (t) => {
    // The server would notice only after 10 s; the client after 150 + 150 ms.
    const srv = await startSessionServer(t, { timing: { pingInterval: 10_000, pongTimeout: 10_000 } });
    const proxy = await startProxy(t, srv.port);
    const client = sessionClient(t, proxy.url, { timing: { pingInterval: 150, pongTimeout: 150 } });
    const got = pushes(client);
    await opened(client);
    await client.request('broadcast', 'before');
    const old = serverConnection(srv);
    const resume = nextResume(client);
    proxy.freeze();
    srv.supervisor.broadcast('{"command":"broadcast","someOtherThing":"into the void"}');
    const closes: string[] = [];
    srv.supervisor.on('close', (c, closure) => c === old && closes.push(closure.reason));
    const r = await resume;
    assert.equal(r.resumed, true, `resumed (reason ${r.reason}: ${r.detail})`);
    await waitFor(() => closes.length === 1, 2_000, 'the old connection to be dropped');
    assert.deepEqual(closes, ['session resumed on another connection']);
    await waitFor(() => got.length === 2);
    assert.deepEqual(got.map((p) => p.someOtherThing), ['before', 'into the void']);
    assert.ok(!srv.events.some((e) => e.type === 'detached'), 'a takeover never detaches the session');
    await client.request('broadcast', 'after');
    await waitFor(() => got.length === 3);
    assert.equal(got[2]!.someOtherThing, 'after');
  });

  test('a half-open cut found by the server heartbeat: the session detaches, keeps what comes, and resumes', async (t) => {
    const srv = await startSessionServer(t, { timing: { pingInterval: 100, pongTimeout: 100 } });
    const proxy = await startProxy(t, srv.port);
    const client = sessionClient(t, proxy.url, { timing: { pingInterval: 0 } });
    const got = pushes(client);
    await opened(client);
    const closures: string[] = [];
    srv.supervisor.on('close', (_c, closure) => closures.push(closure.cause));
    proxy.freeze();
    await waitFor(() => srv.events.some((e) => e.type === 'detached'), 3_000, 'the server heartbeat to find the cut');
    assert.deepEqual(closures, ['heartbeat-timeout']);
    srv.supervisor.broadcast('{"command":"broadcast","someOtherThing":"while detached"}');
    const resume = nextResume(client);
    proxy.cutClientSide(); // the client learns of it now
    const r = await resume;
    assert.equal(r.resumed, true, `resumed (reason ${r.reason}: ${r.detail})`);
    await waitFor(() => got.length === 1);
    assert.equal(got[0]!.someOtherThing, 'while detached');
  });

  test('a sliced fan-out (over several turns) and a cut in the middle of it: the session still gets every broadcast once, in order', async (t) => {
    // One recipient per slice: each broadcast to three clients takes three turns.
    const srv = await startSessionServer(t, { fairness: { fanOutSlice: 1 } });
    const clients = [0, 1, 2].map(() => sessionClient(t, srv.url));
    const got = clients.map((c) => pushes(c));
    for (const c of clients) await opened(c);
    const victim = clients[2]!;
    const resume = nextResume(victim);
    for (let i = 0; i < 10; i++) srv.supervisor.broadcast(`{"command":"broadcast","someOtherThing":"${i}"}`);
    // Cut the last client's connection while the slices are under way.
    [...srv.supervisor.hub.values()].find((c) => c.session?.id === victim.sessionId)!.socket.destroy();
    assert.equal((await resume).resumed, true);
    await waitFor(() => got.every((g) => g.length >= 10), 5_000, 'every client to get the ten broadcasts');
    await delay(50);
    for (const g of got) assert.deepEqual(g.map((p) => p.someOtherThing), ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
  });

  test('topic memberships and connection.data come back; publishes to a detached session are kept for it', async (t) => {
    const srv = await startSessionServer(t);
    const client = sessionClient(t, srv.url);
    const got = pushes(client);
    await opened(client);
    await client.request('join', 'news');
    await client.request('echo', 'remember');
    assert.deepEqual(serverConnection(srv).data, { remembered: 2 });
    const resume = nextResume(client);
    const detached = onDetach(srv, () => {
      srv.supervisor.publish('news', '{"command":"publish","topic":"news","someOtherThing":"while away"}');
      srv.supervisor.publish('sports', '{"command":"publish","topic":"sports","someOtherThing":"not a member"}');
    });
    cut(srv);
    await detached;
    assert.equal((await resume).resumed, true);
    const c = serverConnection(srv);
    assert.deepEqual(srv.supervisor.topicsOf(c), ['news'], 'the membership is back in the hub');
    assert.deepEqual(c.data, { remembered: 2 });
    srv.supervisor.publish('news', '{"command":"publish","topic":"news","someOtherThing":"back"}');
    await waitFor(() => got.length === 2);
    assert.deepEqual(got.map((p) => p.someOtherThing), ['while away', 'back']);
  });
});

describe('sessions: client acks', () => {
  test("a client's first ack falls due at a random count in 1…ackEvery, then every ackEvery (receivers of the same broadcasts do not all ack after the same one)", async (t) => {
    const srv = await startSessionServer(t);
    // The ack timers never fire within the test: only the count sends acks. The first draw is the count: random 0, the
    // first ack at 1; near 1, at 32. The second is the phase of the client's ack clock (ackDelay a minute): its next
    // tick half a minute from now.
    const halfAMinuteOff = (): number => ((performance.now() + 30_000) % 60_000) / 60_000;
    const earlyDraws = [0, halfAMinuteOff()];
    const lateDraws = [0.9999, halfAMinuteOff()];
    const early = sessionClient(t, srv.url, { session: { ackDelay: 60_000 }, random: () => earlyDraws.shift() ?? 0 });
    const late = sessionClient(t, srv.url, { session: { ackDelay: 60_000 }, random: () => lateDraws.shift() ?? 0.9999 });
    const got = [pushes(early), pushes(late)];
    await opened(early);
    await opened(late);
    const store = srv.supervisor.sessions!.store;
    const acked = async (c: Client): Promise<number> => (await store.get(c.sessionId!))!.ackedSeq;
    /** waitFor, for a condition the store answers (a promise). */
    const until = async (cond: () => Promise<boolean>, what: string): Promise<void> => {
      const deadline = Date.now() + pace.scaled(2_000);
      while (!(await cond())) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: early acked ${await acked(early)}, late ${await acked(late)}`);
        await delay(5);
      }
    };
    const push = (n: number): void => void srv.supervisor.broadcast(JSON.stringify({ command: 'broadcast', someOtherThing: `b${n}` }));
    push(1);
    await waitFor(() => got.every((g) => g.length === 1));
    await until(async () => (await acked(early)) === 1, 'the early client to ack after its first message');
    assert.equal(await acked(late), 0, 'the late client has not acked yet');
    // One broadcast at a time: an ack that falls due by count goes at the end of the turn its frame arrived in (it
    // would ride a request sent in that turn: docs/sessions.md, "Acknowledgements"), acknowledging everything
    // received by then; a broadcast in the same read would be in it too.
    for (let n = 2; n <= 31; n++) {
      push(n);
      await waitFor(() => got.every((g) => g.length === n));
    }
    await delay(20);
    assert.equal(await acked(early), 1, 'the early client: nothing due since its first ack');
    assert.equal(await acked(late), 0, 'the late client: nothing due before 32');
    push(32);
    await until(async () => (await acked(late)) === 32, 'the late client to ack at 32');
    assert.equal(await acked(early), 1, 'the early client not yet');
    push(33);
    await until(async () => (await acked(early)) === 33, 'the early client to ack at 33 (1 + 32)');
    assert.equal(await acked(late), 32, 'the late client: its next ack is due at 64');
  });

  test('close() acknowledges what the client received before it ends the session: no dead letter for a delivered message (R12)', async (t) => {
    const srv = await startSessionServer(t);
    const letters: unknown[] = [];
    srv.supervisor.on('sessionDeadLetter', (letter) => letters.push(letter));
    // Neither the count (first ack at 32: random near 1) nor the timer (a minute) acks within the test.
    const client = sessionClient(t, srv.url, { session: { ackDelay: 60_000 }, random: () => 0.9999 });
    const got = pushes(client);
    await opened(client);
    const id = client.sessionId!;
    for (let n = 1; n <= 5; n++) void srv.supervisor.broadcast(JSON.stringify({ command: 'broadcast', someOtherThing: `b${n}` }));
    const reply = await client.request('hello', '');
    assert.equal(reply.success, true);
    await waitFor(() => got.length === 5);
    assert.equal((await srv.supervisor.sessions!.store.get(id))!.ackedSeq, 0, 'nothing acknowledged before close()');
    await client.close();
    await waitFor(() => srv.events.some((e) => e.type === 'ended' && e.id === id), 2_000, 'the session to end');
    assert.deepEqual(letters, [], 'the five pushes and the reply reached the client: none is a dead letter');
  });
});

describe('sessions: client ack timer', () => {
  test("a client's time-due acks go at the ticks of its own ack clock (period ackDelay, random phase): within ackDelay of the first unacknowledged message, and receivers of the same broadcasts not in step", async (t) => {
    const srv = await startSessionServer(t);
    // Broadcasts every tenth of ackDelay, far fewer than ackEvery: only the timers ack. Two clients whose clocks tick half
    // a period apart (the phase is the second draw; the first, near 1, puts the count's first ack at 1000). With a wait
    // counted from the first unacknowledged message both would arm on the same broadcast, and ack in the same moment.
    const D = pace.scaled(600);
    const t0 = performance.now();
    const phaseAt = (offset: number): number => (((t0 + offset) % D) + D) % D / D;
    const aDraws = [0.9999, phaseAt(0)];
    const bDraws = [0.9999, phaseAt(D / 2)];
    const a = sessionClient(t, srv.url, { session: { ackEvery: 1000, ackDelay: D }, random: () => aDraws.shift() ?? 0.5 });
    const b = sessionClient(t, srv.url, { session: { ackEvery: 1000, ackDelay: D }, random: () => bDraws.shift() ?? 0.5 });
    /** When each push reached `a`, by its number. */
    const receivedA: number[] = [];
    a.on('push', () => receivedA.push(performance.now()));
    await opened(a);
    await opened(b);
    const store = srv.supervisor.sessions!.store;
    const acked = async (c: Client): Promise<number> => (await store.get(c.sessionId!))!.ackedSeq;
    /** Each client's acks as the store saw them: [when, the seq acknowledged]. */
    const acks: Array<Array<[number, number]>> = [[], []];
    let pushing = true;
    const polling = (async () => {
      const last = [0, 0];
      while (pushing) {
        for (const [i, c] of [a, b].entries()) {
          const seq = await acked(c);
          if (seq !== last[i]) acks[i]!.push([performance.now(), (last[i] = seq)]);
        }
        await delay(2);
      }
    })();
    let n = 0;
    const until = performance.now() + 3.5 * D;
    while (performance.now() < until) {
      void srv.supervisor.broadcast(JSON.stringify({ command: 'broadcast', someOtherThing: `b${++n}` }));
      await delay(D / 10);
    }
    await delay(D * 1.3); // the last ones' acks
    pushing = false;
    await polling;
    const [ackA, ackB] = acks as [Array<[number, number]>, Array<[number, number]>];
    assert.ok(ackA.length >= 2 && ackB.length >= 2, `each client acked at least twice: ${ackA.length}, ${ackB.length}`);
    // Late by at most a third of a period (a timer fired late, the store polled every few ms on a busy machine): the two
    // clocks' ticks are half a period apart, so each ack still says whose tick it was.
    const late = D / 3;
    // A tick's ack can also land a hair before the grid line: Node fires a timer up to a
    // millisecond early (its timers count whole milliseconds; seen here: an ack 0.01 ms before
    // the line, read as 600 ms off). Early by at most EARLY ms counts as on the tick (0 off), not
    // as a period late.
    const EARLY = 5;
    const offGrid = (when: number, offset: number): number => {
      const off = (((when - t0 - offset) % D) + D) % D;
      return D - off <= EARLY ? 0 : off;
    };
    for (const [when] of ackA) assert.ok(offGrid(when, 0) < late, `a's ack ${(when - t0).toFixed(0)} ms in is on its clock's ticks (every ${D} ms from 0): ${offGrid(when, 0).toFixed(0)} ms off`);
    for (const [when] of ackB) assert.ok(offGrid(when, D / 2) < late, `b's ack ${(when - t0).toFixed(0)} ms in is on its ticks (every ${D} ms from ${D / 2}): ${offGrid(when, D / 2).toFixed(0)} ms off`);
    // The bound: every message a received is acknowledged within ackDelay (and the lateness above).
    for (const [i, at] of receivedA.entries()) {
      const ack = ackA.find(([, seq]) => seq >= i + 1);
      assert.ok(ack !== undefined, `push ${i + 1} acknowledged`);
      assert.ok(ack[0] - at <= D + late, `push ${i + 1} acknowledged ${(ack[0] - at).toFixed(0)} ms after it came (ackDelay ${D})`);
    }
  });
});

describe('sessions: every resumed: false reason reaches the client', () => {
  test('expired: the client came back after the resume window', async (t) => {
    // The window is 400 ms, and its tombstone (the answer `expired`) lasts one more window: the client comes back
    // after 600 ms (jitter 1 - ε of a 601 ms ceiling), 200 ms from either edge.
    const srv = await startSessionServer(t, { sessions: { resumeWindow: 400 } });
    const client = sessionClient(t, srv.url, { backoff: { initialDelay: 601, maxDelay: 601 }, random: () => 0.9999 });
    await opened(client);
    const old = client.sessionId;
    const resume = nextResume(client);
    cut(srv);
    const r = await resume;
    assert.deepEqual([r.resumed, r.reason], [false, 'expired']);
    assert.match(r.detail ?? '', /resume window \(400 ms\)/);
    assert.equal(client.resumeReason, 'expired');
    assert.notEqual(client.sessionId, old, 'a new session');
    assert.ok(srv.events.some((e) => e.type === 'expired'), 'the server reported the expiry');
    await client.request('echo', 'works in the new session');
  });

  test('unknown: the application ended the session', async (t) => {
    const srv = await startSessionServer(t);
    const client = sessionClient(t, srv.url);
    await opened(client);
    const resume = nextResume(client);
    assert.equal(await srv.supervisor.sessions!.end(client.sessionId!), true);
    const r = await resume;
    assert.deepEqual([r.resumed, r.reason], [false, 'unknown']);
  });

  test('overflow: a detached session over its message bound; the lost messages are dead letters (R12)', async (t) => {
    const srv = await startSessionServer(t, { sessions: { maxMessages: 4 } });
    const letters: Array<{ reason: string; n: number }> = [];
    srv.supervisor.on('sessionDeadLetter', (l) => letters.push({ reason: l.reason, n: l.messages.length }));
    const client = sessionClient(t, srv.url, { backoff: { initialDelay: 300, maxDelay: 300 }, random: () => 0.999 });
    await opened(client);
    const resume = nextResume(client);
    cut(srv);
    await waitFor(() => srv.events.some((e) => e.type === 'detached'), 2_000);
    for (let i = 0; i < 5; i++) srv.supervisor.broadcast(`{"command":"broadcast","someOtherThing":"${i}"}`);
    const r = await resume;
    assert.deepEqual([r.resumed, r.reason], [false, 'overflow']);
    assert.match(r.detail ?? '', /maxMessages 4/);
    assert.deepEqual(letters, [{ reason: 'overflow', n: 5 }]);
    const metrics = await srv.supervisor.metrics.registry.metrics();
    assert.match(metrics, /ws_supervisor_session_resumes_total\{result="failed",reason="overflow"\} 1/);
    assert.match(metrics, /ws_supervisor_session_dead_letters_total\{reason="overflow"\} 5/);
  });

  test('restarted: the server restarted with its in-memory store (a new epoch); requests of the old session are rejected as lost', async (t) => {
    const first = await startSessionServer(t, {});
    const client = sessionClient(t, first.url);
    await opened(client);
    const port = first.port;
    const resume = nextResume(client);
    await first.close();
    const second = await startSessionServer(t, { port });
    const r = await resume;
    assert.deepEqual([r.resumed, r.reason], [false, 'restarted']);
    assert.equal((await client.request('echo', 'new session')).success, true);
    assert.deepEqual([...second.runs.keys()], [1]);
  });

  test('forbidden: the resume comes from another identity (the authenticate result)', async (t) => {
    let user = 'alice';
    const srv = await startSessionServer(t, { authenticate: () => ({ id: user }) });
    const client = sessionClient(t, srv.url);
    await opened(client);
    const resume = nextResume(client);
    user = 'mallory';
    cut(srv);
    const r = await resume;
    assert.deepEqual([r.resumed, r.reason], [false, 'forbidden']);
    assert.match(r.detail ?? '', /another identity/);
  });

  test('forbidden: a wrong token (a raw client)', async (t) => {
    const srv = await startSessionServer(t);
    const ws = new WebSocket(`${srv.url}?ws-session=1`);
    t.after(() => ws.terminate());
    const frames: string[] = [];
    ws.on('message', (d) => frames.push(d.toString()));
    await new Promise((r) => ws.once('open', r));
    ws.send('{"session":"open"}');
    await waitFor(() => frames.length === 1);
    const attached = JSON.parse(frames[0]!) as { id: string; epoch: string };
    const ws2 = new WebSocket(`${srv.url}?ws-session=1`);
    t.after(() => ws2.terminate());
    const frames2: string[] = [];
    ws2.on('message', (d) => frames2.push(d.toString()));
    await new Promise((r) => ws2.once('open', r));
    ws2.send(JSON.stringify({ session: 'resume', id: attached.id, token: 'A'.repeat(43), lastSeq: 0, epoch: attached.epoch }));
    await waitFor(() => frames2.length === 1);
    const answer = JSON.parse(frames2[0]!) as { resumed: boolean; reason: string; id: string };
    assert.deepEqual([answer.resumed, answer.reason], [false, 'forbidden']);
    assert.notEqual(answer.id, attached.id);
  });
});

describe('sessions: one address cannot evict everyone else\'s detached sessions', () => {
  /** Opens a session from `from` (a loopback address) with a raw ws client, cuts it, and returns its resume frame. */
  async function detachedSession(url: string, from: string): Promise<string> {
    const ws = new WebSocket(`${url}?ws-session=1`, { localAddress: from } as WebSocket.ClientOptions);
    const attached = new Promise<{ id: string; token: string; epoch: string }>((resolve, reject) => {
      ws.once('message', (d) => resolve(JSON.parse(d.toString())));
      ws.once('error', reject);
    });
    ws.once('open', () => ws.send('{"session":"open"}'));
    const a = await attached;
    const closed = new Promise((resolve) => ws.once('close', resolve));
    ws.terminate();
    await closed;
    return JSON.stringify({ session: 'resume', id: a.id, token: a.token, lastSeq: 0, epoch: a.epoch });
  }
  async function resume(url: string, frame: string): Promise<{ resumed: boolean; reason?: string }> {
    const ws = new WebSocket(`${url}?ws-session=1`);
    try {
      const answer = new Promise<{ resumed: boolean; reason?: string }>((resolve, reject) => {
        ws.once('message', (d) => resolve(JSON.parse(d.toString())));
        ws.once('error', reject);
      });
      ws.once('open', () => ws.send(frame));
      return await answer;
    } finally {
      ws.terminate();
    }
  }

  test('R21: an address holds at most maxConnectionsPerAddress detached sessions; a churn of open-and-cut from it ends its own oldest, not the sessions of other addresses', async (t) => {
    // The global bound (maxDetachedSessions 8) is what the churn would otherwise exhaust: every detach over it ends the
    // oldest detached session of anyone.
    const srv = await startSessionServer(t, { maxConnectionsPerAddress: 3, sessions: { maxDetachedSessions: 8 } });
    const victims = [await detachedSession(srv.url, '127.0.0.2'), await detachedSession(srv.url, '127.0.0.3')];
    const churned: string[] = [];
    for (let i = 0; i < 12; i++) churned.push(await detachedSession(srv.url, '127.0.0.4'));
    await waitFor(() => srv.supervisor.sessions!.detachedCount <= 5, 2_000, 'the churning address to be held to 3 detached sessions');
    for (const v of victims) assert.equal((await resume(srv.url, v)).resumed, true, 'a session of another address survives the churn');
    // The churner's last three are still there; its older ones were ended (a later resume: unknown).
    assert.equal((await resume(srv.url, churned[11]!)).resumed, true);
    assert.deepEqual(await resume(srv.url, churned[0]!).then((a) => [a.resumed, a.reason]), [false, 'unknown']);
  });
});

describe('sessions: attachTimeout', () => {
  test('a session connection that never sends open or resume is closed 1008 after attachTimeout, pings or not (they are answered, they do not hold the slot)', async (t) => {
    const attachTimeout = 300;
    const srv = await startSessionServer(t, { sessions: { attachTimeout } });
    const closes = await Promise.all([false, true].map(async (pinging) => {
      const ws = new WebSocket(`${srv.url}?ws-session=1`);
      const pongs: string[] = [];
      ws.on('message', (d) => pongs.push(d.toString()));
      await new Promise((resolve) => ws.once('open', resolve));
      const opened = performance.now();
      const timer = pinging ? setInterval(() => ws.send('{"session":"ping"}'), 50) : undefined;
      const [code, reason] = await new Promise<[number, string]>((resolve) => ws.once('close', (c, r) => resolve([c, r.toString()])));
      clearInterval(timer);
      return { pinging, code, reason, afterMs: performance.now() - opened, pongs };
    }));
    for (const c of closes) {
      assert.deepEqual([c.code, c.reason], [1008, 'no session open or resume in time'], `pinging ${c.pinging}`);
      // Never early; the timer wheel fires at its first 8 ms tick after the deadline, plus however late the loop runs.
      assert.ok(c.afterMs >= attachTimeout - 10, `pinging ${c.pinging}: closed after ${c.afterMs.toFixed(0)} ms, before attachTimeout ${attachTimeout}`);
      assert.ok(c.afterMs < pace.scaled(attachTimeout + 2_000), `pinging ${c.pinging}: closed after ${c.afterMs.toFixed(0)} ms`);
    }
    const pinger = closes.find((c) => c.pinging)!;
    assert.ok(pinger.pongs.length >= 2 && pinger.pongs.every((p) => p === '{"session":"pong"}'), `pongs: ${pinger.pongs.join(' ')}`);
    await waitFor(() => srv.supervisor.sessions!.pending.size === 0, 2_000, 'the slots to be freed');
  });
});

describe('sessions: opting in, and nobody else sees a change', () => {
  test('a client without ws-session=1 on a server with sessions: plain frames, no session', async (t) => {
    const srv = await startSessionServer(t);
    const client = createClient(srv.url, { timing: { pingInterval: 0 } });
    t.after(async () => {
      await client.close();
    });
    const ws = new WebSocket(srv.url);
    t.after(() => ws.terminate());
    const raw: string[] = [];
    ws.on('message', (d) => raw.push(d.toString()));
    await new Promise((r) => ws.once('open', r));
    ws.send('{"requestID":7,"command":"broadcast","someOtherThing":"hi"}');
    await waitFor(() => raw.length === 2);
    assert.deepEqual(raw, ['{"requestID":7,"success":true,"someOtherThing":"hi"}', '{"command":"broadcast","someOtherThing":"hi"}']);
    assert.equal((await client.request('echo')).success, true);
    assert.equal(srv.supervisor.hub.size, 2);
    assert.ok([...srv.supervisor.hub.values()].every((c) => c.session === null), 'no connection has a session');
    assert.deepEqual(srv.events, [], 'no session events');
  });

  test('the upgrade refuses ws-session other than 1 (400, with the reason); a server without sessions accepts ws-session=1 and closes it at once with 4501 and the reason', async (t) => {
    const srv = await startSessionServer(t);
    const { reply: bad } = await rawUpgrade(srv.port, { path: '/server?ws-session=yes' });
    assert.equal(bad.status, 400);
    assert.match(bad.body, /ws-session must be given once, as 1; got "yes"/);
    const off = await startSessionServer(t, { sessions: undefined });
    const announced: Connection[] = [];
    off.supervisor.on('connection', (c) => announced.push(c));
    const ws = new WebSocket(`${off.url}?ws-session=1`);
    const frames: string[] = [];
    ws.on('message', (d) => frames.push(d.toString()));
    ws.once('open', () => ws.send('{"session":"open"}'));
    const closed = await new Promise<{ code: number; reason: string }>((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    assert.deepEqual(closed, { code: CloseCodes.SESSIONS_UNSUPPORTED, reason: 'sessions are not enabled on this server' });
    assert.equal(closed.code, 4501);
    assert.deepEqual(frames, [], 'nothing but the close');
    assert.deepEqual(announced, [], 'not a connection of the application');
    assert.equal(off.supervisor.hub.size, 0);
    assert.match(await off.supervisor.metrics.registry.metrics(), /ws_supervisor_refused_upgrades_total\{reason="sessions-off"\} 1/);
    // The clients that do not ask for a session are served as before.
    const plain = new WebSocket(off.url);
    t.after(() => plain.terminate());
    await new Promise((r) => plain.once('open', r));
    plain.send('{"requestID":1,"command":"echo"}');
    assert.equal(JSON.parse((await new Promise<WebSocket.RawData>((r) => plain.once('message', r))).toString()).success, true);
  });

  test('a server without sessions bounds the 4501 close by closeTimeout (R16): a peer that never answers it is terminated', async (t) => {
    const off = await startSessionServer(t, { sessions: undefined }); // closeTimeout 300 ms
    const { reply, ws } = await rawUpgrade(off.port, { path: '/server?ws-session=1', allowHalfOpen: true });
    assert.equal(reply.status, 101);
    assert.ok(ws);
    const frame = await ws.closeFrame();
    const at = performance.now();
    assert.deepEqual(frame, { code: 4501, reason: 'sessions are not enabled on this server' });
    t.after(() => ws.socket.destroy());
    // No answer from us: the server waits for it up to closeTimeout, then drops the socket (its FIN: we keep our half open).
    await waitFor(() => ws.ended, 5_000, 'the server to drop the socket');
    const waited = performance.now() - at;
    t.diagnostic(`dropped ${waited.toFixed(0)} ms after its close frame arrived`);
    assert.ok(waited >= 200, `the server waited for the answer (${waited.toFixed(0)} ms of its 300 ms closeTimeout)`);
  });

  test('a session client against a server that does not speak sessions closes for good: unsupported', async (t) => {
    // A plain ws server: accepts the upgrade, ignores the parameter, answers the first frame with a non-session reply.
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    t.after(() => new Promise<void>((resolve) => wss.close(() => resolve())));
    await new Promise((r) => wss.once('listening', r));
    wss.on('connection', (ws) => ws.on('message', () => ws.send('{"requestID":0,"success":false,"error":"bad request"}')));
    const client = createClient(`ws://127.0.0.1:${(wss.address() as net.AddressInfo).port}/`, { session: true, timing: { pingInterval: 0, closeTimeout: 300 } });
    const output = await client.ended;
    assert.equal(output.reason, 'unsupported');
    assert.equal(output.lastClosure?.reason, 'sessions unsupported by the server');
  });

  test('a session client against this library with sessions off (close 4501) stops at once: unsupported, with the reason, no retry', async (t) => {
    const off = await startSessionServer(t, { sessions: undefined });
    let upgrades = 0;
    off.supervisor.on('refused', () => assert.fail('no HTTP refusal'));
    const client = createClient(off.url, { session: true, timing: { pingInterval: 0, closeTimeout: 300 }, backoff: { initialDelay: 10, maxDelay: 20 } });
    client.on('state', (s) => s.state === 'resuming' && upgrades++);
    const closes: Array<{ code: number; reason: string }> = [];
    client.on('close', (c) => closes.push({ code: c.code, reason: c.reason }));
    const request = client.request('echo', 'x');
    await bounded(client.ended, 'the client to stop');
    const output = await client.ended;
    assert.equal(output.reason, 'unsupported');
    assert.equal(output.lastClosure?.code, 4501);
    assert.equal(output.lastClosure?.receivedCode, 4501);
    assert.equal(output.lastClosure?.reason, 'sessions are not enabled on this server');
    assert.deepEqual(closes, [{ code: 4501, reason: 'sessions are not enabled on this server' }], 'one connection, reported once');
    assert.equal(client.state, 'closed');
    assert.equal(client.resumed, null, 'no session, so nothing resumed');
    await assert.rejects(request, (err: Error & { code?: string }) => err.code === 'client-closed' && /does not speak sessions \(sessions are not enabled on this server\)/.test(err.message));
    await delay(100); // a retry would be here by now (backoff ≤ 20 ms)
    assert.equal(upgrades, 1, 'the upgrade was made once');
  });

  test('a session client against a server of this library from before 4501 (HTTP 400) stops at once too: unsupported, with the reason, no retry', async (t) => {
    // That server refused the session upgrade with 400 and this body.
    let upgrades = 0;
    const server = http.createServer();
    server.on('upgrade', (_req, socket: net.Socket) => {
      upgrades++;
      const body = 'sessions are not enabled on this server';
      socket.end(`HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const client = createClient(`ws://127.0.0.1:${(server.address() as net.AddressInfo).port}/server`, { session: true, timing: { pingInterval: 0, closeTimeout: 300 }, backoff: { initialDelay: 10, maxDelay: 20 } });
    const closes: string[] = [];
    client.on('close', (c) => closes.push(c.reason));
    const request = client.request('echo', 'x');
    await bounded(client.ended, 'the client to stop');
    const output = await client.ended;
    assert.equal(output.reason, 'unsupported');
    assert.equal(output.lastClosure?.reason, 'server refused the upgrade: HTTP 400 sessions are not enabled on this server');
    assert.deepEqual(closes, [output.lastClosure?.reason], 'one attempt, reported once');
    await assert.rejects(request, (err: Error & { code?: string }) => err.code === 'client-closed' && /does not speak sessions \(server refused the upgrade: HTTP 400/.test(err.message));
    await delay(100);
    assert.equal(upgrades, 1, 'the upgrade was tried once');
  });

  test('a session ping is answered at once with pong, before and after open, and is not numbered (the browser heartbeat)', async (t) => {
    const srv = await startSessionServer(t);
    const ws = new WebSocket(`${srv.url}?ws-session=1`);
    t.after(() => ws.terminate());
    const frames: string[] = [];
    ws.on('message', (d) => frames.push(d.toString()));
    await new Promise((r) => ws.once('open', r));
    ws.send('{"session":"ping"}');
    await waitFor(() => frames.length === 1);
    assert.equal(frames[0], '{"session":"pong"}');
    ws.send('{"session":"open"}');
    ws.send('{"session":"ping"}');
    ws.send('1:{"requestID":1,"command":"echo","someOtherThing":"x"}');
    await waitFor(() => frames.length === 4);
    // The pong does not wait for the store (it may come before `attached`); the reply is seq 1 all the same.
    assert.deepEqual(frames.slice(1, 3).map((f) => f.slice(0, 19)).sort(), ['{"session":"attache', '{"session":"pong"}']);
    assert.equal(frames[3], '1:{"requestID":1,"success":true,"someOtherThing":"Server processed command: echo"}');
    assert.equal(srv.runs.get(1), 1);
  });

  test('a session connection must open or resume first: a data frame first is a protocol violation (1002)', async (t) => {
    const srv = await startSessionServer(t);
    const ws = new WebSocket(`${srv.url}?ws-session=1`);
    t.after(() => ws.terminate());
    await new Promise((r) => ws.once('open', r));
    const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
    ws.send('1:{"requestID":1,"command":"x"}');
    assert.equal(await closed, 1002);
  });
});
