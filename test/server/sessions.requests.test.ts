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
import type { RequestVerdict } from '../../src/adapter/session-store.ts';
import { createClient } from '../../src/client/node.ts';
import { createSupervisor, type Supervisor } from '../../src/index.ts';
import { decodeServerFrame, encodeResume, encodeTextData } from '../../src/protocol/session.ts';
import type { SessionLifecycleEvent } from '../../src/server/sessions.ts';
import { waitFor } from '../helpers/server.ts';

/** The in-memory store, whose verdicts on requests can be held back. */
class GatedStore extends MemorySessionStore {
  private gate: { promise: Promise<void>; open(): void } | null = null;
  /** cseqs whose verdict is being held. */
  readonly held: number[] = [];

  /** Hold every verdict from now until `release()`. */
  hold(): void {
    let open!: () => void;
    const promise = new Promise<void>((resolve) => (open = resolve));
    this.gate = { promise, open };
  }

  release(): void {
    const gate = this.gate;
    this.gate = null;
    gate?.open();
  }

  override async beginRequest(id: string, cseq: number): Promise<RequestVerdict> {
    // The store decides now (as a store would, at the call); only its answer is late.
    const verdict = await super.beginRequest(id, cseq);
    const gate = this.gate;
    if (gate !== null) {
      this.held.push(cseq);
      await gate.promise;
    }
    return verdict;
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

async function start(t: TestContext): Promise<Server> {
  const store = new GatedStore();
  const runs = new Map<number, number>();
  const server = http.createServer();
  const supervisor = createSupervisor({
    server,
    path: '/server',
    sessions: { store },
    timing: { closeTimeout: 300 },
    onMessage(connection, data) {
      const request = JSON.parse(data.toString()) as { requestID: number; someOtherThing: string };
      runs.set(request.requestID, (runs.get(request.requestID) ?? 0) + 1);
      connection.send(JSON.stringify({ requestID: request.requestID, success: true, someOtherThing: request.someOtherThing }));
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
