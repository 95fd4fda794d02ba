// R21: sliced fan-out and fair scheduling at the library level, on real
// sockets. A broadcast or publish bigger than a turn's slice continues on the
// next turns (R11: still never waits), in FIFO order, reaching exactly the
// connections (members) there at the call; a charged fan-out over budget
// sends nothing and closes the sender 1008.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type WebSocket from 'ws';
import type { Connection, SupervisorOptions } from '../../src/index.ts';
import { closeOf, countWrites, openClient, startSupervisor, waitFor } from '../helpers/server.ts';

const T = { timeout: 20_000 };

async function serve(t: TestContext, n: number, options: Omit<SupervisorOptions, 'server'> = {}) {
  const srv = await startSupervisor(options);
  const clients: { ws: WebSocket; got: string[] }[] = [];
  const connections: Connection[] = [];
  srv.supervisor.on('connection', (c) => connections.push(c));
  t.after(async () => {
    for (const c of clients) c.ws.terminate();
    await srv.close();
  });
  const add = async (): Promise<{ ws: WebSocket; got: string[] }> => {
    const ws = await openClient(srv.url);
    const client = { ws, got: [] as string[] };
    ws.on('message', (d) => client.got.push(d.toString()));
    clients.push(client);
    return client;
  };
  for (let i = 0; i < n; i++) await add();
  await waitFor(() => srv.supervisor.size === n, 5_000, 'all registered');
  return { srv, sup: srv.supervisor, clients, connections, add };
}

test('a broadcast over the slice is finished on later turns, in FIFO order with the next ones; newcomers are not included', T, async (t) => {
  const { sup, clients, add } = await serve(t, 35, { fairness: { fanOutSlice: 10 } });
  const first = sup.broadcast('b1');
  assert.equal(first.accepted + first.refused, 10, 'the first slice goes out at once');
  assert.equal(first.deferred, 25, 'the rest is deferred, and said so');
  // Queued behind b1 (even though nothing of it can go now): no receiver sees b2 before b1.
  const second = sup.broadcast('b2');
  assert.deepEqual(second, { accepted: 0, refused: 0, deferred: 35 });
  assert.equal(sup.hub.pendingFanOuts, 2);
  const late = await add(); // registered after both calls
  await waitFor(() => clients.slice(0, 35).every((c) => c.got.length === 2), 5_000, 'both broadcasts everywhere');
  for (const c of clients.slice(0, 35)) assert.deepEqual(c.got, ['b1', 'b2']);
  assert.equal(sup.hub.pendingFanOuts, 0);
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(late.got, [], 'a connection registered after the call does not get it');
});

test('a burst of queued broadcasts runs receiver by receiver: every receiver gets them in order, in one write, within the slice budget', T, async (t) => {
  // 12 receivers, a slice of 12 messages: b0 goes at once and uses the turn's slice; b1..b6 queue in one group.
  const { sup, clients, connections } = await serve(t, 12, { fairness: { fanOutSlice: 12 } });
  const writes = connections.map((c) => countWrites(c.socket));
  assert.deepEqual(sup.broadcast('b0'), { accepted: 12, refused: 0 });
  const burst = ['b1', 'b2', 'b3', 'b4', 'b5', 'b6'];
  for (const m of burst) assert.deepEqual(sup.broadcast(m), { accepted: 0, refused: 0, deferred: 12 });
  assert.equal(sup.hub.pendingFanOuts, 6);
  // The slice counts messages: 12 per turn is 2 receivers × 6, so the burst needs 6 more turns, not fewer.
  await new Promise<void>((r) => setImmediate(r));
  assert.ok(sup.hub.pendingFanOuts > 0, 'a burst over the slice still takes several turns');
  await waitFor(() => clients.every((c) => c.got.length === 7), 5_000, 'the burst everywhere');
  for (const c of clients) assert.deepEqual(c.got, ['b0', ...burst], 'each receiver in order');
  assert.equal(sup.hub.pendingFanOuts, 0);
  // b0 in one write, the six of the burst in one more (corked together), per receiver.
  assert.deepEqual(writes.map((w) => w.count), connections.map(() => 2));
});

test('a sliced publish keeps FIFO order with broadcasts and skips members who joined after the call', T, async (t) => {
  const { sup, clients, connections } = await serve(t, 24, { fairness: { fanOutSlice: 8 } });
  for (const c of connections.slice(0, 20)) sup.join(c, 'room');
  const p1 = sup.publish('room', 'p1');
  assert.equal(p1.deferred, 12);
  sup.join(connections[22]!, 'room'); // joined after p1
  sup.broadcast('all');
  await waitFor(() => clients.every((c) => c.got.includes('all')), 5_000, 'the broadcast everywhere');
  for (let i = 0; i < 24; i++) assert.deepEqual(clients[i]!.got, i < 20 ? ['p1', 'all'] : ['all'], `client ${i}`);
});

test('broadcast({ from }) charges recipients × bytes to the sender; over budget nothing is sent and it is closed 1008', T, async (t) => {
  const { sup, clients, connections } = await serve(t, 4, { budget: { fanOut: 100 } });
  const sender = connections[0]!;
  assert.deepEqual(sup.broadcast('0123456789', { from: sender }), { accepted: 4, refused: 0 }); // 4 × 10 = 40
  assert.deepEqual(sup.broadcast('0123456789', { from: sender }), { accepted: 4, refused: 0 }); // 80
  assert.deepEqual(sup.broadcast('0123456789', { from: sender }), { accepted: 0, refused: 0, overBudget: true }); // 120 > 100
  assert.deepEqual(await closeOf(clients[0]!.ws), { code: 1008, reason: 'fan-out budget over 100 per 10 s' });
  assert.equal((await sender.closed).cause, 'rate-limit');
  await waitFor(() => clients[1]!.got.length === 2, 2_000, 'the two broadcasts within budget');
  assert.equal(clients[1]!.got.length, 2, 'the one over budget reached nobody');
  // Publishing charges the topic's local members.
  sup.join(connections[1]!, 't');
  assert.equal(connections[1]!.charge(0), true);
  assert.deepEqual(sup.publish('t', 'x'.repeat(60), { from: connections[1]! }), { accepted: 1, refused: 0 });
  assert.deepEqual(sup.publish('t', 'x'.repeat(60), { from: connections[1]! }), { accepted: 0, refused: 0, overBudget: true });
});

test('fair scheduling: a connection over its share is held (ws pauses its socket) and resumed; its messages arrive complete and in order', T, async (t) => {
  const got: number[] = [];
  const { clients, connections } = await serve(t, 1, {
    fairness: { share: 4, turnBudget: 8 },
    onMessage: (c, data) => {
      got.push(Number(data.toString()));
      c.send(data);
    },
  });
  const conn = connections[0]!;
  // Held, ws's parser takes no more chunks; past its Receiver's high-water mark (16 KiB) ws pauses the socket itself.
  let pauses = 0;
  const socket = conn.socket as import('node:net').Socket;
  const pause = socket.pause.bind(socket);
  socket.pause = () => {
    pauses++;
    return pause();
  };
  const N = 20_000; // ~250 KB: several reads, more than ws's Receiver buffers
  const ws = clients[0]!.ws;
  for (let i = 1; i <= N; i++) ws.send(String(i));
  await waitFor(() => got.length === N, 20_000, 'every message');
  assert.deepEqual(got, Array.from({ length: N }, (_, i) => i + 1));
  await waitFor(() => clients[0]!.got.length === N, 5_000, 'every echo');
  assert.ok(pauses > 0, 'its socket was paused while over its share');
  assert.equal(socket.isPaused(), false, 'and resumed once its held messages were delivered');
  assert.equal(conn.ws.isPaused, false);
});
