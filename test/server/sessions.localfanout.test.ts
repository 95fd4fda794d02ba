/**
 * Which sessions a late notification of a failed fan-out skips
 * (docs/sessions.md, "A fan-out the store fails on", "An unpersisted
 * session"), made on demand without Redis: the in-memory store given a
 * `fanOut` whose calls the test answers, and whose notifications the test
 * sends (`SessionStoreHost.fanOutDelivered`), as the Redis store's would come.
 *
 * A broadcast of this node times out unconfirmed (`applied: 'unknown'`): its
 * failure path writes it to the member sessions the node runs (unpersisted
 * by it). Redis runs it late (a fan-out larger than one chunk reaches its
 * later members in later calls), and its notification names a session that
 * came to this node after the failure and went unpersisted for another
 * reason: the failure path never wrote to that one, so the notification
 * must. Before, every unpersisted session named in such a notification was
 * skipped: that session never got the message.
 *
 * And a notification that comes after the node ended an unpersisted
 * session's store copy (a store whose `answered()` does not vouch for its
 * notifications: the method is optional in the contract), of a fan-out whose
 * copy the node wrote to the session already: not written again. Before, the
 * session dropped the names its copies brought at that end, and the late
 * notification wrote the message a second time.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import WebSocket from 'ws';
import { MemorySessionStore } from '../../src/adapter/memory-session-store.ts';
import type { AppendResult, FanOutResult, SessionFanOut, SessionMessage, SessionStoreHost } from '../../src/adapter/session-store.ts';
import { decodeServerFrame, encodeOpen, encodeTextData, type ServerFrame } from '../../src/protocol/session.ts';
import type { SessionLifecycleEvent } from '../../src/server/sessions.ts';
import { startSupervisor, waitFor } from '../helpers/server.ts';

/** A fan-out call of the node, answered by the test. */
interface Call {
  id: string;
  message: SessionMessage;
  reject(err: Error): void;
}

/** The in-memory store with a fan-out of its own (as the Redis store), answered and notified by the test. */
class FanOutStore extends MemorySessionStore {
  host: SessionStoreHost | null = null;
  readonly calls: Call[] = [];
  /** Sessions whose appends reject (the store failed on them). */
  readonly failing = new Set<string>();
  readonly fanOut: SessionFanOut = {
    broadcast: (message, id) => this.#call(message, id),
    publish: (_topic, message, id) => this.#call(message, id),
  };

  #call(message: SessionMessage, id: string | undefined): Promise<FanOutResult> {
    return new Promise((_resolve, reject) => this.calls.push({ id: id ?? '', message, reject }));
  }

  override start(host: SessionStoreHost): void {
    super.start(host);
    this.host = host;
  }

  override async append(id: string, message: SessionMessage, replyTo?: number): Promise<AppendResult> {
    if (this.failing.has(id)) throw new Error('append: the store failed (test)');
    return super.append(id, message, replyTo);
  }
}

/** Every handled promise callback of this turn has run. */
const settled = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

async function start(t: TestContext, sweepInterval?: number) {
  const store = new FanOutStore();
  const srv = await startSupervisor({
    sessions: { store, ...(sweepInterval !== undefined ? { sweepInterval } : {}) },
    onMessage(connection, data) {
      const request = JSON.parse(data.toString()) as { requestID: number };
      connection.send(JSON.stringify({ requestID: request.requestID, success: true }));
    },
  });
  t.after(() => srv.close());
  const events: SessionLifecycleEvent[] = [];
  srv.supervisor.on('session', (e) => events.push(e));
  return { store, srv, events, url: `${srv.url}?ws-session=1` };
}

async function connect(t: TestContext, url: string) {
  const ws = new WebSocket(url);
  t.after(() => ws.terminate());
  const frames: ServerFrame[] = [];
  ws.on('message', (d, isBinary) => frames.push(decodeServerFrame(isBinary ? (d as Buffer) : d.toString(), isBinary)));
  await new Promise((r) => ws.once('open', r));
  ws.send(encodeOpen());
  await waitFor(() => frames.length >= 1, 5_000, 'the attached frame');
  const attached = frames[0]!;
  if (attached.kind !== 'attached') throw new Error(`not attached: ${JSON.stringify(attached)}`);
  const payloads = (): string[] => frames.flatMap((f) => (f.kind === 'data' ? [String(f.payload)] : []));
  return { ws, id: attached.id, payloads };
}

test("a late notification of this node's failed fan-out: skipped by the sessions its failure path wrote to, written to a session that came to the node after the failure and went unpersisted for another reason", async (t) => {
  const { store, srv, events, url } = await start(t);
  const a = await connect(t, url);
  srv.supervisor.broadcast('{"b":"X"}');
  assert.equal(store.calls.length, 1, 'one fan-out call, in the store');
  const call = store.calls[0]!;
  // The call times out, unconfirmed: A's session is unpersisted and the failure path writes X on its connection.
  call.reject(Object.assign(new Error('fanout: Redis answered nothing within commandTimeout (test)'), { applied: 'unknown' }));
  await waitFor(() => a.payloads().length === 1, 5_000, 'X on A from the failure path');
  assert.ok(events.some((e) => e.type === 'unpersisted' && e.id === a.id), "A's session is unpersisted");

  // B's session comes to this node after the failure, and goes unpersisted for another reason (a reply's append fails).
  const b = await connect(t, url);
  store.failing.add(b.id);
  b.ws.send(encodeTextData(1, '{"requestID":1}'));
  await waitFor(() => events.some((e) => e.type === 'unpersisted' && e.id === b.id), 5_000, "B's session to go unpersisted");
  await waitFor(() => b.payloads().length === 1, 5_000, 'the reply on B');

  // Redis ran the fan-out after all: its notification names both sessions (B's in a later chunk, after B attached here).
  const message: SessionMessage = { ...call.message };
  store.host!.fanOutDelivered!({ message, sessions: [{ id: a.id, seq: 1 }, { id: b.id, seq: 2 }], ended: [], fanOut: call.id });
  await waitFor(() => b.payloads().length === 2, 5_000, `X on B from the notification (B has ${JSON.stringify(b.payloads())})`);
  await settled();
  await new Promise((r) => setTimeout(r, 100)); // nothing more may come
  assert.deepEqual(a.payloads(), ['{"b":"X"}'], 'A: X once, from the failure path, not again from the notification');
  assert.deepEqual(b.payloads(), ['{"requestID":1,"success":true}', '{"b":"X"}'], 'B: X once, from the notification');
});

test("a notification that comes after the node ended an unpersisted session's store copy, of a fan-out whose copy the node wrote to it already: not written again", async (t) => {
  const { store, srv, events, url } = await start(t, 50);
  const a = await connect(t, url);
  // The session goes unpersisted (a reply's append fails): its connection carries it alone.
  store.failing.add(a.id);
  a.ws.send(encodeTextData(1, '{"requestID":1}'));
  await waitFor(() => events.some((e) => e.type === 'unpersisted' && e.id === a.id), 5_000, 'the session to go unpersisted');
  // Another node's broadcast: its adapter copy comes first, and is written to the session by its name.
  const data = Buffer.from('{"b":"Y"}');
  srv.supervisor.sessions!.fanOutCopy('other-node.1', null, data, false);
  await waitFor(() => a.payloads().length === 2, 5_000, 'Y from the copy');
  // The node ends the session's store copy (the sweep, every 50 ms); this store has no answered() to wait on.
  let record: unknown = {};
  for (const deadline = Date.now() + 10_000; record !== null && Date.now() < deadline; await new Promise((r) => setTimeout(r, 20))) record = await store.get(a.id);
  assert.equal(record, null, "the session's store copy is ended");
  await settled();
  // The store's notification of that broadcast comes only now.
  store.host!.fanOutDelivered!({ message: { data, binary: false, bytes: data.length }, sessions: [{ id: a.id, seq: 2 }], ended: [], fanOut: 'other-node.1' });
  await settled();
  await new Promise((r) => setTimeout(r, 100)); // nothing more may come
  assert.deepEqual(a.payloads(), ['{"requestID":1,"success":true}', '{"b":"Y"}'], 'Y once');
});
