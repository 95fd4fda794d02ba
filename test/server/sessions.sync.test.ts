/**
 * Sessions on a store with a data path without promises (`SessionStore.sync`,
 * the in-memory store; docs/sessions.md, "The store contract"): the server
 * appends, counts requests and takes acks through it and never through the
 * async methods, in call order; a failure thrown there is handled as a
 * rejection of the async call would be (docs/sessions.md, "Store failures").
 * The async path (a store without `sync`) is held to the same order by
 * test/server/sessions.requests.test.ts (a store whose answers come late) and
 * the Redis store's tests. Raw `ws` clients on 127.0.0.1.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import WebSocket from 'ws';
import { MemorySessionStore } from '../../src/adapter/memory-session-store.ts';
import type { SessionStoreSync } from '../../src/adapter/session-store.ts';
import { decodeServerFrame, encodeTextData, type ServerFrame } from '../../src/protocol/session.ts';
import type { SessionLifecycleEvent } from '../../src/server/sessions.ts';
import { closeOf, delay, startSupervisor, waitFor } from '../helpers/server.ts';
import { pace } from '../helpers/pace.ts';

/** The in-memory store, counting its calls by path, and able to fail one sync operation on demand. */
class CountingStore extends MemorySessionStore {
  readonly calls = { sync: new Map<string, number>(), async: new Map<string, number>() };
  failing: keyof SessionStoreSync | null = null;

  constructor() {
    super();
    const sync = this.sync!;
    for (const op of ['append', 'beginRequest', 'ack'] as const) {
      const inner = sync[op].bind(sync) as (...args: unknown[]) => unknown;
      (sync as unknown as Record<string, unknown>)[op] = (...args: unknown[]) => {
        this.calls.sync.set(op, (this.calls.sync.get(op) ?? 0) + 1);
        if (this.failing === op) throw new Error(`${op}: the store failed (test)`);
        return inner(...args);
      };
    }
    // Counted on the instance, not overridden in the class: the store keeps its `sync` (a subclass override loses it).
    for (const op of ['append', 'beginRequest', 'ack'] as const) {
      const inner = this[op].bind(this) as (...args: unknown[]) => Promise<unknown>;
      (this as unknown as Record<string, unknown>)[op] = (...args: unknown[]) => {
        this.calls.async.set(op, (this.calls.async.get(op) ?? 0) + 1);
        return inner(...args);
      };
    }
  }
}

async function start(t: TestContext, acks: { ackEvery?: number; ackDelay?: number } = {}) {
  const store = new CountingStore();
  /** requestID → how many times the handler ran it. */
  const runs = new Map<number, number>();
  const srv = await startSupervisor({
    sessions: { store, ackEvery: 4, ...acks },
    timing: { closeTimeout: 300 },
    onMessage(connection, data) {
      const request = JSON.parse(data.toString()) as { requestID: number; someOtherThing: string };
      runs.set(request.requestID, (runs.get(request.requestID) ?? 0) + 1);
      // Two messages per reply: both are kept, in order, and remembered as the request's reply.
      connection.send(JSON.stringify({ requestID: request.requestID, success: true, someOtherThing: request.someOtherThing }));
      connection.send(JSON.stringify({ after: request.requestID }));
    },
  });
  t.after(() => srv.close());
  const events: SessionLifecycleEvent[] = [];
  srv.supervisor.on('session', (e) => events.push(e));
  return { store, runs, events, url: `${srv.url}?ws-session=1` };
}

/** A raw session client: opened, its frames decoded as they come. */
async function open(t: TestContext, url: string): Promise<{ ws: WebSocket; frames: ServerFrame[] }> {
  const ws = new WebSocket(url);
  t.after(() => ws.terminate());
  const frames: ServerFrame[] = [];
  ws.on('message', (d, isBinary) => frames.push(decodeServerFrame(isBinary ? (d as Buffer) : d.toString(), isBinary)));
  await new Promise((r) => ws.once('open', r));
  ws.send('{"session":"open"}');
  await waitFor(() => frames.length === 1, 5_000, 'attached');
  assert.equal(frames[0]!.kind, 'attached');
  return { ws, frames };
}

/** The data frames so far (the server's acks and answers come between them). */
const dataOf = (frames: ServerFrame[]) => frames.flatMap((f) => (f.kind === 'data' ? [f] : []));

const request = (n: number): string => encodeTextData(n, `{"requestID":${n},"command":"echo","someOtherThing":"r${n}"}`);

test('the in-memory store offers sync; a subclass overriding an async data-path method does not', () => {
  assert.notEqual(new MemorySessionStore().sync, undefined);
  class Late extends MemorySessionStore {
    override async ack(id: string, seq: number) {
      return super.ack(id, seq);
    }
  }
  assert.equal(new Late().sync, undefined, 'its override would be bypassed');
});

test('with a sync store every append, request and ack goes through it, none through a promise; replies in request order, each seq once', async (t) => {
  const srv = await start(t);
  const { ws, frames } = await open(t, srv.url);
  const N = 20;
  // All at once: each runs in the turn its frame arrives, in order.
  for (let n = 1; n <= N; n++) ws.send(request(n));
  await waitFor(() => dataOf(frames).length === 2 * N, 5_000, 'every reply');
  const data = dataOf(frames);
  assert.deepEqual(data.map((f) => f.seq), Array.from({ length: 2 * N }, (_, i) => i + 1), 'seqs 1…2N, each once, in order');
  assert.deepEqual(
    data.map((f) => JSON.parse(f.payload as string) as { requestID?: number; after?: number }).map((m) => m.requestID ?? m.after),
    Array.from({ length: 2 * N }, (_, i) => Math.floor(i / 2) + 1),
    'replies in request order',
  );
  ws.send(`{"session":"ack","seq":${2 * N}}`);
  // A duplicate is answered with the seqs of its reply, from the same bookkeeping, and not run again.
  ws.send(request(3));
  await waitFor(() => frames.some((f) => f.kind === 'duplicate'), 5_000, 'the duplicate answer');
  assert.deepEqual(frames.find((f) => f.kind === 'duplicate'), { kind: 'duplicate', cseq: 3, replySeqs: [5, 6] });
  assert.deepEqual([...srv.runs.values()], new Array(N).fill(1), 'each request ran once');
  assert.equal(srv.store.calls.sync.get('append'), 2 * N);
  assert.equal(srv.store.calls.sync.get('beginRequest'), N + 1);
  assert.equal(srv.store.calls.sync.get('ack'), 1);
  assert.deepEqual([...srv.store.calls.async.keys()], [], 'no async data-path call');
  assert.equal((await srv.store.stats()).bufferedMessages, 0, 'the ack trimmed every message');
});

test('a sync append that throws: the session is unpersisted, its connection carries it on (seqs jump), nothing is lost', async (t) => {
  const srv = await start(t);
  const { ws, frames } = await open(t, srv.url);
  ws.send(request(1));
  await waitFor(() => dataOf(frames).length === 2, 5_000, 'the first reply');
  srv.store.failing = 'append';
  ws.send(request(2));
  await waitFor(() => dataOf(frames).length === 4, 5_000, 'the second reply, carried locally');
  const event = srv.events.find((e) => e.type === 'unpersisted');
  assert.ok(event && event.type === 'unpersisted' && event.operation === 'append', 'reported as unpersisted by a failed append');
  const seqs = dataOf(frames).map((f) => f.seq);
  assert.deepEqual(seqs.slice(0, 2), [1, 2]);
  // LOCAL_SEQ_JUMP: past anything the store could have assigned, so no resume continues over the gap.
  assert.ok(seqs[2]! > 2 ** 32 && seqs[3] === seqs[2]! + 1, `local seqs follow the jump: ${seqs.join(', ')}`);
  assert.equal((JSON.parse(dataOf(frames)[3]!.payload as string) as { after: number }).after, 2);
});

test('a sync beginRequest that throws: the connection closes 1011 and the request does not run', async (t) => {
  const srv = await start(t);
  const { ws } = await open(t, srv.url);
  srv.store.failing = 'beginRequest';
  const closed = closeOf(ws);
  ws.send(request(1));
  assert.deepEqual(await closed, { code: 1011, reason: 'session store unavailable' });
  assert.equal(srv.runs.size, 0, 'not run: the client resumes and re-sends it, and the store then says what ran');
});

test('a sync ack that throws is counted only: the session goes on', async (t) => {
  const srv = await start(t);
  const { ws, frames } = await open(t, srv.url);
  ws.send(request(1));
  await waitFor(() => dataOf(frames).length === 2, 5_000, 'the first reply');
  srv.store.failing = 'ack';
  ws.send('{"session":"ack","seq":2}');
  await waitFor(() => srv.store.calls.sync.get('ack') === 1, 5_000, 'the ack to reach the store');
  srv.store.failing = null;
  ws.send(request(2));
  await waitFor(() => dataOf(frames).length === 4, 5_000, 'the second reply');
  assert.deepEqual(dataOf(frames).map((f) => f.seq), [1, 2, 3, 4]);
  assert.equal((await srv.store.stats()).bufferedMessages, 4, 'the failed ack trimmed nothing');
  assert.equal(srv.events.some((e) => e.type === 'unpersisted'), false);
});

test("the server's ack rides with the reply that makes it due: right after that reply's first message, in its write, not after the handler", async (t) => {
  const srv = await start(t); // ackEvery 4; two messages per reply (request n: seqs 2n-1, 2n)
  const { ws, frames } = await open(t, srv.url);
  for (let n = 1; n <= 8; n++) ws.send(request(n));
  await waitFor(() => dataOf(frames).length === 16 && frames.filter((f) => f.kind === 'ack').length === 2, 5_000, 'every reply and two acks');
  const order = frames.slice(1).map((f) => (f.kind === 'data' ? `d${f.seq}` : f.kind === 'ack' ? `a${f.cseq}` : f.kind));
  // Before, the ack was written after the handler returned (after seq 8), in a write of its own.
  assert.deepEqual(order.slice(6, 9), ['d7', 'a4', 'd8'], `request 4's ack follows its first message: ${order.join(' ')}`);
  assert.deepEqual(order.slice(15, 18), ['d15', 'a8', 'd16'], `request 8's ack follows its first message: ${order.join(' ')}`);
  assert.equal(order.length, 18, `16 messages and 2 acks, nothing else: ${order.join(' ')}`);
});

test("a time-due ack: once the ack timer is half through, the next reply carries it; with no reply in the second half it goes alone, ackDelay after the first unacknowledged request", async (t) => {
  // Scaled by this machine's measured pace: request 2 goes at three quarters of the delay, a quarter from either half's end.
  const ackDelay = pace.scaled(1_200);
  const srv = await start(t, { ackEvery: 1_000, ackDelay });
  const { ws, frames } = await open(t, srv.url);
  const order = (): string[] => frames.slice(1).map((f) => (f.kind === 'data' ? `d${f.seq}` : f.kind === 'ack' ? `a${f.cseq}` : f.kind));
  ws.send(request(1));
  await waitFor(() => dataOf(frames).length === 2, 5_000, 'the first reply');
  await delay(Math.round(ackDelay * 0.75));
  ws.send(request(2));
  await waitFor(() => dataOf(frames).length === 4, 5_000, 'the second reply');
  assert.deepEqual(order(), ['d1', 'd2', 'd3', 'a2', 'd4'], `the ack rides with reply 2, none came alone before: ${order().join(' ')}`);
  const sent = Date.now();
  ws.send(request(3));
  await waitFor(() => frames.some((f) => f.kind === 'ack' && f.cseq === 3), pace.scaled(5_000) + ackDelay, 'the ack of request 3');
  const waited = Date.now() - sent;
  assert.ok(waited >= ackDelay * 0.9, `the lone ack came after the whole delay (${waited} ms of ${ackDelay})`);
  assert.deepEqual(order().slice(5), ['d5', 'd6', 'a3'], `alone, after the reply: ${order().join(' ')}`);
});
