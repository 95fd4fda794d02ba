/**
 * Sessions: a request the store has admitted runs exactly once, whatever
 * happens to the connection it came on (docs/sessions.md, "Requests run
 * once"). Real sockets on 127.0.0.1; the store is the in-memory one with its
 * `beginRequest` answer held back by a gate, which reproduces, on demand, the
 * interleaving the sessions soak (test/server/sessions.soak.test.ts) hit at
 * random:
 *
 *   the request frame arrives → the store records it as run (lastCseq) →
 *   the connection closes (the TCP cut; `ws` hands over the frames still
 *   buffered in the socket in the same turn as its close) → the store's
 *   verdict `new` comes back.
 *
 * Before the fix the binding dropped that verdict (its connection was no
 * longer live, or another connection had taken the session over): the
 * handler never ran, yet the store said it had, so the resume told the client
 * not to re-send it, and the request was never answered. Now the handler runs
 * and its reply goes to the session, which replays it.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type net from 'node:net';
import { test, type TestContext } from 'node:test';
import WebSocket from 'ws';
import { MemorySessionStore } from '../../src/adapter/memory-session-store.ts';
import type { RequestVerdict, ResumeClaim, VerifyResult } from '../../src/adapter/session-store.ts';
import { createClient } from '../../src/client/node.ts';
import { createSupervisor, type Connection, type Supervisor } from '../../src/index.ts';
import type { TopicError } from '../../src/protocol/topics.ts';
import { decodeServerFrame, encodeResume, encodeTextData } from '../../src/protocol/session.ts';
import type { SessionLifecycleEvent } from '../../src/server/sessions.ts';
import { waitFor } from '../helpers/server.ts';
import { VerdictGate } from '../helpers/verdict-gate.ts';

/** The in-memory store, whose verdicts on requests can be held back. */
class GatedStore extends MemorySessionStore {
  readonly gate = new VerdictGate();
  /** cseqs whose answer was held. */
  get held(): number[] {
    return this.gate.held;
  }
  hold(): void {
    this.gate.hold();
  }
  release(): void {
    this.gate.release();
  }

  /** Called as a resume's token is verified, before the session is taken over (the old connection still carries it). */
  onVerify: (() => void) | null = null;

  override async verify(claim: ResumeClaim): Promise<VerifyResult> {
    const verdict = await super.verify(claim);
    this.onVerify?.();
    return verdict;
  }

  override async beginRequest(id: string, cseq: number): Promise<RequestVerdict> {
    // The store decides now (as a store would, at the call); only its answer is late.
    const verdict = await super.beginRequest(id, cseq);
    return this.gate.pass(cseq, verdict);
  }
}

interface Server {
  supervisor: Supervisor;
  store: GatedStore;
  url: string;
  /** requestID → how many times the handler ran it. */
  runs: Map<number, number>;
  events: SessionLifecycleEvent[];
}

interface Request {
  requestID: number;
  command: string;
  someOtherThing: string;
}

/**
 * What the handler does after counting the run; default: echo `someOtherThing`.
 * Commands: `join`/`leave` the topic named in someOtherThing (the reply says
 * what supervisor.join/leave answered, or the error it threw); `filtered`:
 * a broadcast with a filter that keeps every connection.
 */
function handle(supervisor: Supervisor, connection: Connection, request: Request): void {
  const reply = (fields: object): void => void connection.send(JSON.stringify({ requestID: request.requestID, ...fields }));
  try {
    if (request.command === 'join') return reply({ success: true, someOtherThing: String(supervisor.join(connection, request.someOtherThing)) });
    if (request.command === 'leave') return reply({ success: true, someOtherThing: String(supervisor.leave(connection, request.someOtherThing)) });
  } catch (err) {
    return reply({ success: false, error: `${(err as TopicError).code}: ${(err as Error).message}` });
  }
  if (request.command === 'filtered') supervisor.broadcast(`{"command":"filtered","someOtherThing":${JSON.stringify(request.someOtherThing)}}`, { filter: () => true });
  reply({ success: true, someOtherThing: request.someOtherThing });
}

async function start(t: TestContext, options: { fanOutSlice?: number } = {}): Promise<Server> {
  const store = new GatedStore();
  const runs = new Map<number, number>();
  const server = http.createServer();
  const supervisor: Supervisor = createSupervisor({
    server,
    path: '/server',
    sessions: { store },
    timing: { closeTimeout: 300 },
    ...(options.fanOutSlice !== undefined ? { fairness: { fanOutSlice: options.fanOutSlice } } : {}),
    onMessage(connection, data) {
      const request = JSON.parse(data.toString()) as Request;
      runs.set(request.requestID, (runs.get(request.requestID) ?? 0) + 1);
      handle(supervisor, connection, request);
    },
  });
  const events: SessionLifecycleEvent[] = [];
  supervisor.on('session', (e) => events.push(e));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(async () => {
    store.release();
    await supervisor.close();
    supervisor.detach();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { supervisor, store, runs, events, url: `ws://127.0.0.1:${(server.address() as net.AddressInfo).port}/server` };
}

function sessionClient(t: TestContext, url: string) {
  const client = createClient(url, {
    session: true,
    requestTimeout: 8_000,
    timing: { connectTimeout: 2_000, closeTimeout: 300, pingInterval: 0 },
    backoff: { initialDelay: 20, maxDelay: 50, multiplier: 2 },
  });
  t.after(async () => {
    await client.close();
  });
  return client;
}

/** Destroys the server's side of the one live connection (a reset: no close frame). */
function cut(srv: Server): void {
  const live = [...srv.supervisor.hub.values()];
  assert.equal(live.length, 1, 'one live connection');
  live[0]!.socket.destroy();
}

for (const when of ['before the client resumes', 'after the client resumed'] as const) {
  test(`a request admitted by the store, whose connection is cut before the verdict comes back: it runs once and is answered (verdict ${when})`, async (t) => {
    const srv = await start(t);
    const client = sessionClient(t, srv.url);
    await waitFor(() => client.state === 'open' && client.sessionId !== null, 5_000, 'the session to attach');
    assert.equal((await client.request('echo', 'first')).someOtherThing, 'first');

    srv.store.hold();
    const reply = client.request('echo', 'cut');
    await waitFor(() => srv.store.held.length === 1, 5_000, 'the store to admit request 2');
    cut(srv);
    await waitFor(() => srv.events.some((e) => e.type === 'detached'), 5_000, 'the session to detach');
    if (when === 'after the client resumed') {
      await waitFor(() => srv.events.some((e) => e.type === 'resumed'), 5_000, 'the client to resume');
    }
    srv.store.release();

    const answered = await reply;
    assert.equal(answered.someOtherThing, 'cut');
    assert.equal(answered.requestID, 2);
    if (when === 'before the client resumes') await waitFor(() => client.resumed === true, 5_000, 'the resume');
    assert.equal(client.resumed, true);
    assert.equal(srv.runs.get(2), 1, 'the handler ran request 2 exactly once');
    // Still one session, still in order: a request after it is answered too.
    assert.equal((await client.request('echo', 'after')).someOtherThing, 'after');
    assert.deepEqual([...srv.runs.values()], [1, 1, 1]);
  });
}

test('a request admitted by the store on a connection the session was taken over from (half-open): it runs once, its reply reaches the new connection', async (t) => {
  const srv = await start(t);
  // Raw clients: the first connection stays open (the server does not know it is gone) while the second resumes.
  const a = new WebSocket(`${srv.url}?ws-session=1`);
  t.after(() => a.terminate());
  const framesA: string[] = [];
  a.on('message', (d) => framesA.push(d.toString()));
  await new Promise((r) => a.once('open', r));
  a.send('{"session":"open"}');
  await waitFor(() => framesA.length === 1, 5_000, 'attached on the first connection');
  const attached = decodeServerFrame(framesA[0]!, false);
  assert.equal(attached.kind, 'attached');
  if (attached.kind !== 'attached') return;

  srv.store.hold();
  a.send(encodeTextData(1, '{"requestID":1,"command":"echo","someOtherThing":"taken over"}'));
  await waitFor(() => srv.store.held.length === 1, 5_000, 'the store to admit request 1');

  const b = new WebSocket(`${srv.url}?ws-session=1`);
  t.after(() => b.terminate());
  const framesB: string[] = [];
  b.on('message', (d) => framesB.push(d.toString()));
  await new Promise((r) => b.once('open', r));
  b.send(encodeResume({ id: attached.id, token: attached.token, lastSeq: 0, epoch: attached.epoch }));
  await waitFor(() => framesB.length >= 1, 5_000, 'attached on the second connection');
  const resumed = decodeServerFrame(framesB[0]!, false);
  assert.equal(resumed.kind, 'attached');
  if (resumed.kind !== 'attached') return;
  assert.equal(resumed.resumed, true);
  // The store counted request 1 but this process has not run it yet: the client is told to re-send what it holds
  // unanswered (cseq 0), and the store's count decides what runs.
  assert.equal(resumed.cseq, 0);

  srv.store.release();
  await waitFor(() => framesB.length >= 2, 5_000, 'the reply on the second connection');
  const reply = decodeServerFrame(framesB[1]!, false);
  assert.deepEqual(reply, { kind: 'data', seq: 1, payload: '{"requestID":1,"success":true,"someOtherThing":"taken over"}', binary: false });
  assert.equal(srv.runs.get(1), 1, 'the handler ran request 1 exactly once');
  // The client re-sends it (it had no reply when it resumed): answered as a duplicate naming its reply, not run again.
  b.send(encodeTextData(1, '{"requestID":1,"command":"echo","someOtherThing":"taken over"}'));
  await waitFor(() => framesB.length >= 3, 5_000, 'the answer to the re-sent request');
  assert.deepEqual(decodeServerFrame(framesB[2]!, false), { kind: 'duplicate', cseq: 1, replySeqs: [1] });
  assert.equal(srv.runs.get(1), 1, 'the re-sent request did not run again');
});

// ---------------------------------------------------------------------------
// A filtered broadcast (`filter` sees connections) while a session moves from one connection to another: each
// session gets it exactly once (docs/sessions.md, "Integration", fan-out).

/** A raw session connection (the test drives the frames), with the frames it received. */
async function rawSession(t: TestContext, url: string, first: string): Promise<{ ws: WebSocket; frames: string[] }> {
  const ws = new WebSocket(`${url}?ws-session=1`);
  t.after(() => ws.terminate());
  const frames: string[] = [];
  ws.on('message', (d) => frames.push(d.toString()));
  await new Promise((r) => ws.once('open', r));
  ws.send(first);
  await waitFor(() => frames.length >= 1, 5_000, 'the attached frame');
  return { ws, frames };
}

function attachedOf(frame: string) {
  const f = decodeServerFrame(frame, false);
  assert.equal(f.kind, 'attached');
  if (f.kind !== 'attached') throw new Error('not attached');
  return f;
}

/** The data payloads among `frames` that are the filtered broadcast `text`. */
function filteredCopies(frames: string[], text: string): number {
  return frames.filter((f) => {
    const d = decodeServerFrame(f, false);
    return d.kind === 'data' && d.payload === `{"command":"filtered","someOtherThing":"${text}"}`;
  }).length;
}

test('a filtered broadcast in the turn of a takeover, while the old connection is still in the hub, reaches the session once', async (t) => {
  const srv = await start(t);
  const a = await rawSession(t, srv.url, '{"session":"open"}');
  const attached = attachedOf(a.frames[0]!);
  // The application broadcasts as the session is taken over: the old connection is being terminated (its machine
  // closed) but the hub lets go of it only after this turn's event, so the fan-out still visits it.
  let hubAtTakeover: string[] = [];
  srv.supervisor.on('session', (e) => {
    if (e.type !== 'resumed') return;
    hubAtTakeover = [...srv.supervisor.hub.values()].map((c) => c.id);
    srv.supervisor.broadcast('{"command":"filtered","someOtherThing":"takeover"}', { filter: () => true });
  });
  const b = await rawSession(t, srv.url, encodeResume({ id: attached.id, token: attached.token, lastSeq: 0, epoch: attached.epoch }));
  assert.equal(attachedOf(b.frames[0]!).resumed, true);
  assert.equal(hubAtTakeover.length, 2, 'both connections were in the hub (the interleaving under test)');
  b.ws.send(encodeTextData(1, '{"requestID":1,"command":"echo","someOtherThing":"probe"}'));
  await waitFor(() => b.frames.some((f) => f.includes('"probe"')), 5_000, 'the probe reply');
  assert.equal(filteredCopies(b.frames, 'takeover') + filteredCopies(a.frames.slice(1), 'takeover'), 1, `once: B ${JSON.stringify(b.frames)}`);
  const seqs = b.frames.map((f) => decodeServerFrame(f, false)).flatMap((d) => (d.kind === 'data' ? [d.seq] : []));
  assert.deepEqual(seqs, [1, 2], 'the broadcast, then the probe reply');
});

test('a sliced filtered broadcast that reaches a session\'s old connection after a takeover still reaches the session, once', async (t) => {
  // One recipient per turn: the fan-out is under way over several turns.
  const srv = await start(t, { fanOutSlice: 1 });
  // Plain connections registered before the session's: the slices reach them first.
  const plain: WebSocket[] = [];
  for (let i = 0; i < 3; i++) {
    const ws = new WebSocket(srv.url);
    t.after(() => ws.terminate());
    await new Promise((r) => ws.once('open', r));
    plain.push(ws);
  }
  const a = await rawSession(t, srv.url, '{"session":"open"}');
  const attached = attachedOf(a.frames[0]!);
  assert.equal(srv.supervisor.hub.size, 4);
  // The broadcast is called while connection A still carries the session, in the turn that takes it over (as the
  // resume is verified, before its replay is read): the slices reach A only after B carries the session.
  let result: ReturnType<Supervisor['broadcast']> | null = null;
  srv.store.onVerify = () => {
    srv.store.onVerify = null;
    result = srv.supervisor.broadcast('{"command":"filtered","someOtherThing":"sliced"}', { filter: () => true });
  };
  const b = await rawSession(t, srv.url, encodeResume({ id: attached.id, token: attached.token, lastSeq: 0, epoch: attached.epoch }));
  assert.equal(attachedOf(b.frames[0]!).resumed, true);
  assert.ok(result !== null && (result as { deferred?: number }).deferred !== undefined, `the broadcast was sliced: ${JSON.stringify(result)}`);
  await waitFor(() => srv.supervisor.hub.pendingFanOuts === 0, 5_000, 'the fan-out to finish');
  b.ws.send(encodeTextData(1, '{"requestID":1,"command":"echo","someOtherThing":"probe"}'));
  await waitFor(() => b.frames.some((f) => f.includes('"probe"')), 5_000, 'the probe reply');
  // The client's stream is B's (A is half-open in real life: what A was written, the client dedupes by seq).
  assert.equal(filteredCopies(b.frames, 'sliced'), 1, `the session got the filtered broadcast once: B ${JSON.stringify(b.frames)}`);
  const seqs = b.frames.map((f) => decodeServerFrame(f, false)).flatMap((d) => (d.kind === 'data' ? [d.seq] : []));
  assert.deepEqual(seqs, [1, 2], 'the broadcast (replayed), then the probe reply');
});

test('a sliced filtered broadcast and an unfiltered one after it reach a session in the order they were sent, as a plain connection', async (t) => {
  const srv = await start(t, { fanOutSlice: 1 });
  const plainFrames: string[] = [];
  const plain = new WebSocket(srv.url);
  t.after(() => plain.terminate());
  plain.on('message', (d) => plainFrames.push(d.toString()));
  await new Promise((r) => plain.once('open', r));
  const s = await rawSession(t, srv.url, '{"session":"open"}');
  const first = srv.supervisor.broadcast('{"command":"filtered","someOtherThing":"first"}', { filter: () => true });
  srv.supervisor.broadcast('{"command":"broadcast","someOtherThing":"second"}');
  assert.ok(first.deferred !== undefined, `the filtered broadcast was sliced: ${JSON.stringify(first)}`);
  await waitFor(() => plainFrames.length === 2 && s.frames.length === 3, 5_000, 'both broadcasts on both connections');
  assert.deepEqual(plainFrames.map((f) => JSON.parse(f).someOtherThing), ['first', 'second']);
  const payloads = s.frames.slice(1).map((f) => decodeServerFrame(f, false)).map((d) => (d.kind === 'data' ? JSON.parse(d.payload as string).someOtherThing : d.kind));
  assert.deepEqual(payloads, ['first', 'second'], 'the session got them in the order sent');
});

// ---------------------------------------------------------------------------
// A join (or leave) run for a connection that has closed since: the session's membership follows, since the
// session outlives its connection (docs/sessions.md, "Topics while detached").

for (const when of ['while the session is detached', 'after the client resumed'] as const) {
  test(`a join admitted by the store, whose connection is cut before it runs, joins the session (${when}): answered, publishes reach it, the resume restores it`, async (t) => {
    const srv = await start(t);
    const client = sessionClient(t, srv.url);
    const pushed: string[] = [];
    client.on('push', (p) => pushed.push(String(p.someOtherThing)));
    await waitFor(() => client.state === 'open' && client.sessionId !== null, 5_000, 'the session to attach');

    srv.store.hold();
    const reply = client.request('join', 'news');
    await waitFor(() => srv.store.held.length === 1, 5_000, 'the store to admit the join');
    cut(srv);
    await waitFor(() => srv.events.some((e) => e.type === 'detached'), 5_000, 'the session to detach');
    if (when === 'after the client resumed') await waitFor(() => srv.events.some((e) => e.type === 'resumed'), 5_000, 'the client to resume');
    srv.store.release();
    // The handler ran for the closed connection: supervisor.join answered true (joined), it did not throw not-connected.
    const answered = await reply;
    assert.equal(answered.success, true, `the join was answered without an error: ${JSON.stringify(answered)}`);
    assert.equal(answered.someOtherThing, 'true');
    assert.equal(srv.runs.get(1), 1);
    // A publish now reaches the session (kept for it while detached, written once it is back).
    srv.supervisor.publish('news', '{"command":"publish","topic":"news","someOtherThing":"joined late"}');
    await waitFor(() => client.resumed === true, 5_000, 'the resume');
    await waitFor(() => pushed.length === 1, 5_000, 'the publish');
    assert.deepEqual(pushed, ['joined late']);
    const live = [...srv.supervisor.hub.values()];
    assert.equal(live.length, 1);
    assert.deepEqual(srv.supervisor.topicsOf(live[0]!), ['news'], 'the new connection is in the topic');
    assert.equal((await client.request('echo', 'after')).someOtherThing, 'after');
  });
}

test('a leave admitted by the store, whose connection is cut before it runs, leaves the session\'s topic', async (t) => {
  const srv = await start(t);
  const client = sessionClient(t, srv.url);
  const pushed: string[] = [];
  client.on('push', (p) => pushed.push(String(p.someOtherThing)));
  await waitFor(() => client.state === 'open' && client.sessionId !== null, 5_000, 'the session to attach');
  assert.equal((await client.request('join', 'news')).someOtherThing, 'true');

  srv.store.hold();
  const reply = client.request('leave', 'news');
  await waitFor(() => srv.store.held.length === 1, 5_000, 'the store to admit the leave');
  cut(srv);
  await waitFor(() => srv.events.some((e) => e.type === 'detached'), 5_000, 'the session to detach');
  srv.store.release();
  const answered = await reply;
  assert.equal(answered.success, true, JSON.stringify(answered));
  assert.equal(answered.someOtherThing, 'true', 'it was a member: left');
  srv.supervisor.publish('news', '{"command":"publish","topic":"news","someOtherThing":"not for it"}');
  await waitFor(() => client.resumed === true, 5_000, 'the resume');
  // A probe request answered after the publish: the publish, had it been kept for the session, came before it.
  assert.equal((await client.request('echo', 'probe')).someOtherThing, 'probe');
  assert.deepEqual(pushed, []);
  assert.deepEqual(srv.supervisor.topicsOf([...srv.supervisor.hub.values()][0]!), []);
});

test('a broadcast appended after the resume read its replay but before the new connection carries the session: the new connection reads it from the store (a seq gap) and writes it in order, instead of waiting for it', async (t) => {
  const srv = await start(t);
  const a = await rawSession(t, srv.url, '{"session":"open"}');
  const attached = attachedOf(a.frames[0]!);
  // The broadcast lands in the one turn between the store's answer to the resume's read and the takeover: the old
  // connection still carries the session, so it gets the seq; the new one's replay does not hold it.
  const read = srv.store.resume.bind(srv.store);
  let injected = false;
  srv.store.resume = async (id: string, seq: number) => {
    const r = await read(id, seq);
    if (!injected) {
      injected = true;
      srv.supervisor.broadcast('{"command":"broadcast","someOtherThing":"in the gap"}');
    }
    return r;
  };
  const b = await rawSession(t, srv.url, encodeResume({ id: attached.id, token: attached.token, lastSeq: 0, epoch: attached.epoch }));
  b.ws.send(encodeTextData(1, '{"requestID":1,"command":"echo","someOtherThing":"probe"}'));
  await waitFor(() => b.frames.some((f) => f.includes('"probe"')), 5_000, 'the probe reply');
  const data = b.frames.map((f) => decodeServerFrame(f, false)).flatMap((f) => (f.kind === 'data' ? [[f.seq, String(f.payload)]] : []));
  assert.deepEqual(data, [
    [1, '{"command":"broadcast","someOtherThing":"in the gap"}'],
    [2, '{"requestID":1,"success":true,"someOtherThing":"probe"}'],
  ]);
});
