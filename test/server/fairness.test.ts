// R21: fair scheduling of inbound work (src/server/scheduler.ts), at the
// library level, on real sockets. A peer over its share of a turn has ws's
// parser held (src/server/ws-internals.ts, item 4): its frames stay bytes
// until its next turn, so a turn's work is bounded by the limits, not by how
// much a peer managed to send; the scheduler runs one turn per event-loop
// iteration; nothing is dropped or reordered; and a newcomer's upgrade and
// round trip come through while many peers pipeline as fast as they can.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import type { Connection, SupervisorOptions } from '../../src/index.ts';
import { TurnScheduler, type Deferrable } from '../../src/server/scheduler.ts';
import { receiverOf, WS_START_LOOP } from '../../src/server/ws-internals.ts';
import { encodeFrame, Opcode, rawConnect, type RawWs } from '../helpers/raw-ws.ts';
import { delay, everyIteration, startSupervisor, waitFor, within } from '../helpers/server.ts';

const T = { timeout: 60_000 };

/** `count` pipelined requests as one buffer, requestIDs from `first`. */
function requests(first: number, count: number): Buffer {
  const frames: Buffer[] = [];
  for (let id = first; id < first + count; id++) frames.push(encodeFrame({ opcode: Opcode.TEXT, payload: `{"requestID":${id},"command":"work"}` }));
  return Buffer.concat(frames);
}

const REQUEST_ID = /"requestID":(\d+)/;

interface Served {
  port: number;
  connections: Connection[];
  /** Per connection: the requestIDs delivered to the application, in order, and the scheduler turn of each. */
  delivered: Map<Connection, { ids: number[]; turns: number[] }>;
  /** The supervisor's 'close' events: how many messages the connection had been given by then. */
  closed: Array<{ code: number; delivered: number }>;
  /** Connections registered now. */
  size(): number;
  scheduler(): TurnScheduler;
}

/** A supervisor that answers every request with its requestID (the shape overload-peers.mjs checks), recording what it delivered. */
async function serve(t: TestContext, options: Omit<SupervisorOptions, 'server'> = {}): Promise<Served> {
  const delivered = new Map<Connection, { ids: number[]; turns: number[] }>();
  const connections: Connection[] = [];
  const srv = await startSupervisor({
    budget: false,
    maxConnectionsPerAddress: 10_000,
    maxPendingPerAddress: 10_000,
    ...options,
    onMessage(connection, data) {
      const text = data.toString();
      const id = Number(REQUEST_ID.exec(text)?.[1] ?? -1);
      let record = delivered.get(connection);
      if (record === undefined) delivered.set(connection, (record = { ids: [], turns: [] }));
      record.ids.push(id);
      record.turns.push(connection.scheduler!.turn);
      connection.send(`{"requestID":${id},"success":true}`);
    },
  });
  const closed: Array<{ code: number; delivered: number }> = [];
  srv.supervisor.on('connection', (c) => connections.push(c));
  srv.supervisor.on('close', (c, closure) => closed.push({ code: closure.code, delivered: delivered.get(c)?.ids.length ?? 0 }));
  t.after(() => srv.close());
  return {
    port: srv.port,
    connections,
    delivered,
    closed,
    size: () => srv.supervisor.size,
    scheduler: () => connections[0]!.scheduler!,
  };
}

/** The replies a raw peer has received, as requestIDs. */
function replyIds(peer: RawWs): number[] {
  return peer.texts.map((s) => Number(REQUEST_ID.exec(s)?.[1] ?? -1));
}

const range = (first: number, count: number): number[] => Array.from({ length: count }, (_, k) => first + k);


test('a peer over its share: ws parses none of its further frames until its next turn, and every request is answered in order', T, async (t) => {
  const SHARE = 8;
  const N = 3_000; // ~130 KB: two 64 KiB reads and more, all in the kernel before the server reads any of it
  const s = await serve(t, { fairness: { share: SHARE, turnBudget: 64 } });
  const peer = await rawConnect(s.port);
  t.after(() => peer.destroy());
  await waitFor(() => s.connections.length === 1, 5_000, 'the connection');
  const connection = s.connections[0]!;
  // Parsed by ws but not yet given to the application, sampled between every two callbacks of a turn's check phase.
  let mostParsedAhead = 0;
  const stop = everyIteration(() => {
    const record = s.delivered.get(connection);
    mostParsedAhead = Math.max(mostParsedAhead, connection.messagesIn - (record?.ids.length ?? 0));
  });
  t.after(stop);
  void peer.write(requests(1, N));
  await waitFor(() => peer.texts.length === N, 20_000, `${N} replies`);
  stop();
  const record = s.delivered.get(connection)!;
  assert.deepEqual(record.ids, range(1, N), 'delivered once each, in order');
  assert.deepEqual(replyIds(peer), range(1, N), 'answered once each, in order');
  // The one message that found the share used up waits in the reader; the frames behind it are still bytes.
  // (Before the hold, ws parsed each whole 64 KiB read at once: ~1,500 of these messages ahead.)
  assert.ok(mostParsedAhead <= 1, `ws had parsed ${mostParsedAhead} messages ahead of the application`);
  // Per scheduler turn, the connection gets its share (the message that crosses it included), no more.
  const perTurn = new Map<number, number>();
  for (const turn of record.turns) perTurn.set(turn, (perTurn.get(turn) ?? 0) + 1);
  const most = Math.max(...perTurn.values());
  assert.ok(most <= SHARE, `${most} messages delivered in one turn (share ${SHARE})`);
  assert.ok(perTurn.size >= N / SHARE, `${perTurn.size} turns for ${N} messages at ${SHARE} per turn`);
});

test("a deferred message with nothing behind it does not hold ws's parser; more bytes from the peer before its turn are held from there on; all answered in order", T, async (t) => {
  const s = await serve(t, { fairness: { share: 1, turnBudget: 64 } });
  const peer = await rawConnect(s.port);
  t.after(() => peer.destroy());
  await waitFor(() => s.connections.length === 1, 5_000, 'the connection');
  const connection = s.connections[0]!;
  const receiver = receiverOf(connection.ws) as unknown as Record<string, unknown>;
  const ownLoop = (): boolean => Object.prototype.hasOwnProperty.call(receiver, WS_START_LOOP);
  // Two requests in one write: the second finds the share (1) used and is deferred, and ws has parsed every byte.
  void peer.write(requests(1, 2));
  await waitFor(() => peer.texts.length === 2, 5_000, 'two replies');
  assert.equal(ownLoop(), false, "a lone deferred message left ws's parse loop as it was (no hold installed)");
  assert.deepEqual(s.delivered.get(connection)!.ids, [1, 2]);
  const turns = s.delivered.get(connection)!.turns;
  assert.ok(turns[1]! > turns[0]!, 'the second request waited for a later turn');
  // Three in one write: the second is deferred with the third still bytes in ws: held, as before.
  void peer.write(requests(3, 3));
  await waitFor(() => peer.texts.length === 5, 5_000, 'five replies');
  assert.equal(ownLoop(), true, "a deferred message with more behind it holds ws's parser");
  assert.deepEqual(s.delivered.get(connection)!.ids, range(1, 5), 'delivered once each, in order');
  assert.deepEqual(replyIds(peer), range(1, 5), 'answered once each, in order');
  const more = s.delivered.get(connection)!.turns.slice(2);
  assert.equal(new Set(more).size, 3, 'one of the three per turn (share 1)');
});

test('many peers over their share: one scheduler turn per event-loop iteration, and an iteration does bounded work', T, async (t) => {
  const SHARE = 16;
  const BUDGET = 128;
  const PEERS = 20;
  const N = 2_000;
  const s = await serve(t, { fairness: { share: SHARE, turnBudget: BUDGET } });
  const peers = await Promise.all(Array.from({ length: PEERS }, () => rawConnect(s.port)));
  t.after(() => peers.forEach((p) => p.destroy()));
  await waitFor(() => s.connections.length === PEERS, 5_000, 'the connections');
  const scheduler = s.scheduler();
  const total = (): number => [...s.delivered.values()].reduce((n, r) => n + r.ids.length, 0);
  let lastTurn = scheduler.turn;
  let lastTotal = total();
  let mostTurns = 0;
  let mostWork = 0;
  const stop = everyIteration(() => {
    const turn = scheduler.turn;
    const done = total();
    mostTurns = Math.max(mostTurns, turn - lastTurn);
    mostWork = Math.max(mostWork, done - lastTotal);
    lastTurn = turn;
    lastTotal = done;
  });
  t.after(stop);
  for (const p of peers) void p.write(requests(1, N));
  await waitFor(() => peers.every((p) => p.texts.length === N), 30_000, `${PEERS} × ${N} replies`);
  stop();
  for (const p of peers) assert.deepEqual(replyIds(p), range(1, N), 'every reply, in order');
  // A reader that defers itself again while being drained must not arm a second turn (the bug: turns
  // doubled every iteration, 387 turns and 100k messages in one 0.4–1 s iteration with 50 peers).
  assert.ok(mostTurns <= 1, `${mostTurns} scheduler turns ran in one event-loop iteration`);
  // An iteration: a poll phase (the turn's budget, plus each peer's first message of the turn) and a check phase
  // (the deferred readers, up to the budget); each may overshoot by the share of the reader that crosses it.
  const bound = 2 * (BUDGET + SHARE) + PEERS;
  assert.ok(mostWork <= bound, `${mostWork} messages in one event-loop iteration (bound ${bound})`);
});

test('a held peer that resets its connection is closed and released; what ws had read is delivered in order, before the close', T, async (t) => {
  const SHARE = 8;
  const N = 3_000;
  const s = await serve(t, { fairness: { share: SHARE, turnBudget: 64 } });
  const peer = await rawConnect(s.port);
  await waitFor(() => s.connections.length === 1, 5_000, 'the connection');
  const connection = s.connections[0]!;
  await peer.write(requests(1, N));
  // Held after its share: most of the requests are still bytes (in ws and the kernel) when the peer resets.
  await waitFor(() => (s.delivered.get(connection)?.ids.length ?? 0) >= SHARE, 5_000, 'the first share');
  peer.socket.resetAndDestroy();
  await waitFor(() => s.closed.length === 1, 5_000, 'the close');
  const atClose = s.closed[0]!.delivered;
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  const ids = s.delivered.get(connection)!.ids;
  // ws emits 'close' once its Receiver has finished: what it had read was parsed and delivered first, in order.
  assert.deepEqual(ids, range(1, ids.length), 'delivered in order, without gaps');
  assert.equal(ids.length, atClose, 'nothing delivered after the close');
  assert.equal(s.size(), 0, 'the connection was released');
});

test('a held peer that half-closes (FIN, no close frame) has every request it sent delivered, in order, before the close', T, async (t) => {
  const SHARE = 8;
  const s = await serve(t, { fairness: { share: SHARE, turnBudget: 64 } });
  // ~34 KB: one read, so the first hold is installed inside the parse loop ws runs itself. 1,001: the last
  // request is the one that crosses a share, deferred with nothing behind it (no parser held for it).
  for (const [k, N] of [1_000, 1_001].entries()) {
    const peer = await rawConnect(s.port);
    t.after(() => peer.destroy());
    await waitFor(() => s.connections.length === k + 1, 5_000, 'the connection');
    const connection = s.connections[k]!;
    // The requests and the FIN in one go: the server has every byte (and the end of the input) before its
    // second turn for this peer. ws ends its own side on the FIN; the replies after that have nowhere to go.
    peer.socket.end(requests(1, N));
    await waitFor(() => s.closed.length === k + 1, 10_000, 'the close');
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    const ids = s.delivered.get(connection)?.ids ?? [];
    // Before: ws's Receiver finished on the FIN with the held bytes unparsed, ws emitted 'close' at once and the
    // stopped reader dropped them (65 of 1,000 delivered in the CLI server); then, the last of 1,001 came after the close.
    assert.equal(s.closed[k]!.delivered, N, `every request sent before the FIN reached the application before the close (${N})`);
    assert.deepEqual(ids, range(1, N), 'delivered once each, in order, none after the close');
    assert.equal(s.closed[k]!.code, 1006, 'no close frame: abnormal closure');
  }
  assert.equal(s.size(), 0, 'the connections were released');
});

/** One probe: connect, one request, its reply. Milliseconds; Infinity on failure (after 5 s). */
async function probeOnce(port: number): Promise<number> {
  const t0 = performance.now();
  const ws = new WebSocket(`ws://127.0.0.1:${port}/server`);
  try {
    // within(): the 5 s timer is cleared with the reply. A raw delay() in the race stayed pending, and the
    // last probes' kept the file's process alive ~5 s after its last test, holding a slot of the suite run.
    const ms = await within(
      new Promise<number>((resolve, reject) => {
        ws.once('error', reject);
        ws.once('open', () => ws.send('{"requestID":7,"command":"probe"}'));
        ws.once('message', () => resolve(performance.now() - t0));
      }),
      5_000,
    );
    return ms ?? Infinity;
  } catch {
    return Infinity;
  } finally {
    ws.terminate();
  }
}

test('50 peers pipelining as fast as they can: a newcomer connects and round-trips within a few turns; every abuser answered in order', T, async (t) => {
  const s = await serve(t);
  // The yardstick: this machine, now, idle (the median of 5 probes).
  const idle: number[] = [];
  for (let i = 0; i < 5; i++) idle.push(await probeOnce(s.port));
  const base = idle.sort((a, b) => a - b)[2]!;
  const PEERS = 50;
  const child = spawn(
    process.execPath,
    [fileURLToPath(new URL('../../bench/lib/overload-peers.mjs', import.meta.url)), JSON.stringify({ port: s.port, kind: 'pipeline', peers: PEERS, durationMs: 2_000, window: 2_000 })],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  t.after(() => child.kill('SIGKILL'));
  const lines = createInterface({ input: child.stdout });
  const next = (): Promise<string> => new Promise((resolve) => lines.once('line', resolve));
  assert.equal(await next(), 'ready');
  const result = next();
  let finished = false;
  void result.then(() => (finished = true));
  child.stdin.write('go\n');
  const probes: Promise<number>[] = [];
  while (probes.length < 10 || !finished) {
    probes.push(probeOnce(s.port));
    if (probes.length >= 200) break;
    await delay(50);
  }
  const times = (await Promise.all(probes)).sort((a, b) => a - b);
  const report = JSON.parse(await result) as { peers: Array<{ count: number; sent: number | null; inOrder: boolean; closeCode: number | null }>; ms: number };
  const p90 = times[Math.ceil(times.length * 0.9) - 1]!;
  t.diagnostic(`idle ${base.toFixed(1)} ms; under abuse: ${times.length} probes, median ${times[times.length >> 1]!.toFixed(1)} ms, p90 ${p90.toFixed(1)} ms, max ${times[times.length - 1]!.toFixed(1)} ms; ${report.peers.reduce((n, p) => n + p.count, 0)} requests answered in ${report.ms.toFixed(0)} ms`);
  for (const p of report.peers) assert.deepEqual([p.closeCode, p.count, p.inOrder], [null, p.sent, true], 'every abuser request answered, in order');
  // Measured here: p90 14–60 ms under this abuse (idle probe 4–13 ms) with the machine busy with other work, up to
  // 107 ms with a benchmark running beside it; a blocked loop holds probes for seconds. A probe needs a few
  // event-loop iterations (accept, upgrade, request, reply), so the bound scales with the idle round trip on this
  // machine, now: 10 of them, never below 250 ms (the bound of test/cli/overload.test.ts).
  const limit = Math.max(250, base * 10);
  assert.ok(p90 <= limit, `probe p90 ${p90.toFixed(1)} ms > ${limit.toFixed(0)} ms (idle ${base.toFixed(1)} ms)`);
  assert.ok(times[times.length - 1]! < 5_000, 'no probe timed out');
});

test('a thousand peers whose first messages of a turn arrive at once: past turnTime, even a first small message waits for the check phase', () => {
  // The 1,000-sender broadcast storm: every client's first request of the turn was admitted in the poll phase, whatever
  // the time, so that phase handled all 1,000 (~106 ms measured) before the next socket, a newcomer's upgrade, was read.
  const TURN_TIME = 5;
  const scheduler = new TurnScheduler({ share: 32, turnBudget: 512, turnTime: TURN_TIME });
  const readers = Array.from({ length: 1_000 }, () => ({ fairTurn: 0, fairUsed: 0, drain: () => true }));
  const t0 = performance.now();
  let admitted = 0;
  for (const reader of readers) {
    if (!scheduler.admit(reader, 1)) break;
    admitted++;
    // A broadcast request's handling: ~100 µs of work.
    const until = performance.now() + 0.1;
    while (performance.now() < until);
  }
  const ms = performance.now() - t0;
  // Refused once the phase is past turnTime, read every 32 units: each admitted one took ≥ 0.1 ms, so at most
  // TURN_TIME / 0.1 of them fit in the phase's time, and up to 32 more before the clock is read again.
  assert.ok(admitted < readers.length, `all ${admitted} first messages admitted in one phase (${ms.toFixed(0)} ms)`);
  assert.ok(admitted >= 32, `${admitted} admitted: the first ones of a phase run`);
  assert.ok(admitted <= TURN_TIME / 0.1 + 32, `${admitted} admitted in ${ms.toFixed(0)} ms (turnTime ${TURN_TIME} ms)`);
});

test("a session's ack past the turn's budget is taken at once, not deferred; one behind a deferred request waits for it, in order", T, async (t) => {
  // After a fan-out to thousands of sessions (one long turn) their receivers' acks arrive at once, past the phase's
  // turnTime. Deferred, each made a backlog and a parser hold and queued its reader, and a request read with them (the
  // next broadcast) waited behind them all, round-robin (docs/performance.md, "The broadcast tail with sessions on").
  const { MemorySessionStore } = await import('../../src/adapter/memory-session-store.ts');
  const { decodeServerFrame, encodeTextData } = await import('../../src/protocol/session.ts');
  const store = new MemorySessionStore();
  const log: string[] = [];
  const sync = store.sync!;
  const ack = sync.ack.bind(sync);
  sync.ack = (id, seq, ref) => {
    log.push(`ack ${seq}`);
    return ack(id, seq, ref);
  };
  const srv = await startSupervisor({
    budget: false,
    sessions: { store },
    onMessage(connection, data) {
      const id = Number(REQUEST_ID.exec(data.toString())?.[1] ?? -1);
      log.push(`request ${id}`);
      connection.send(`{"requestID":${id},"success":true}`);
    },
  });
  t.after(() => srv.close());
  const connections: Connection[] = [];
  srv.supervisor.on('connection', (c) => connections.push(c));
  const ws = new WebSocket(`${srv.url}?ws-session=1`);
  t.after(() => ws.terminate());
  const seqs: number[] = [];
  ws.on('message', (d, isBinary) => {
    const f = decodeServerFrame(isBinary ? (d as Buffer) : d.toString(), isBinary);
    if (f.kind === 'data') seqs.push(f.seq);
    else if (f.kind === 'attached') seqs.push(0);
  });
  await new Promise((r) => ws.once('open', r));
  ws.send('{"session":"open"}');
  await waitFor(() => seqs.length === 1, 5_000, 'attached');
  srv.supervisor.broadcast('{"command":"broadcast"}');
  srv.supervisor.broadcast('{"command":"broadcast"}');
  await waitFor(() => seqs.length === 3, 5_000, 'two broadcasts');

  // Every turn from here is spent (as past turnTime): each message is refused the turn's budget, a connection's own
  // share untouched. The scheduler's turns go on as ever (its check phase drains what was deferred).
  await waitFor(() => connections.length === 1, 5_000, 'the connection');
  const scheduler = connections[0]!.scheduler!;
  const admit = scheduler.admit.bind(scheduler);
  const deferred: number[] = [];
  scheduler.admit = (reader: Deferrable) => {
    if (reader.fairTurn !== scheduler.turn) {
      reader.fairTurn = scheduler.turn;
      reader.fairUsed = 0;
    }
    return false;
  };
  const defer = scheduler.defer.bind(scheduler);
  scheduler.defer = (reader: Deferrable) => {
    deferred.push(scheduler.turn);
    defer(reader);
  };
  t.after(() => {
    scheduler.admit = admit;
    scheduler.defer = defer;
  });

  // An ack alone: taken in the turn it is read, no reader deferred.
  ws.send('{"session":"ack","seq":1}');
  await waitFor(() => log.includes('ack 1'), 5_000, 'the ack taken');
  assert.deepEqual(deferred, [], 'the ack was deferred to a later turn');

  // A request, then an ack, two frames in one write (one read): the request is deferred (it runs the application's code), and the ack
  // behind it waits in its backlog, taken after it, in order.
  const socket = (ws as unknown as { _socket: import('node:net').Socket })._socket;
  socket.cork();
  ws.send(encodeTextData(1, '{"requestID":7,"command":"work"}'));
  ws.send('{"session":"ack","seq":2}');
  socket.uncork();
  await waitFor(() => log.includes('ack 2'), 5_000, `the second ack taken (log: ${log.join(', ')}; deferred in turns ${deferred.join(', ')})`);
  assert.equal(deferred.length, 1, 'the request was deferred once, the ack behind it not on its own');
  assert.deepEqual(log.slice(-2), ['request 7', 'ack 2'], 'the ack taken before the request it came behind');
});
