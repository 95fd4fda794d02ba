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
import { ParserHold, receiverOf, WS_START_LOOP } from '../../src/server/ws-internals.ts';
import { pace } from '../helpers/pace.ts';
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
  closed: Array<{ code: number; delivered: number; at: number }>;
  /** Connections registered now. */
  size(): number;
  /** The supervisor's close (drain, R18). */
  close(): Promise<void>;
  scheduler(): TurnScheduler;
}

/** A supervisor that answers every request with its requestID (the shape overload-peers.mjs checks), recording what it delivered. */
async function serve(t: TestContext, options: Omit<SupervisorOptions, 'server'> = {}, onDelivered?: (connection: Connection, id: number) => void): Promise<Served> {
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
      onDelivered?.(connection, id);
    },
  });
  const closed: Array<{ code: number; delivered: number; at: number }> = [];
  srv.supervisor.on('connection', (c) => connections.push(c));
  srv.supervisor.on('close', (c, closure) => closed.push({ code: closure.code, delivered: delivered.get(c)?.ids.length ?? 0, at: performance.now() }));
  t.after(() => srv.close());
  return {
    port: srv.port,
    connections,
    delivered,
    closed,
    size: () => srv.supervisor.size,
    close: () => srv.supervisor.close(),
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

/** 500 pipelined requests (~17 KB), made once: `pump` writes it again and again. */
const PUMPED = requests(1, 500);

/**
 * Keeps `peer` pipelining (the same 500 requests over and over) as fast as the server takes them, until its socket
 * ends: one write per event-loop iteration at most (the kernel takes megabytes on loopback: writing until a write is
 * refused blocked this process, server included, for ~300 ms).
 */
function pump(peer: RawWs): void {
  const more = (): void => {
    if (peer.socket.destroyed || !peer.socket.writable) return;
    if (peer.socket.write(PUMPED)) setImmediate(more);
    else peer.socket.once('drain', more);
  };
  more();
}

/** The parser hold the reader installed on a connection's ws Receiver (src/server/ws-internals.ts, item 4), if any. */
function holdOf(connection: Connection): ParserHold | undefined {
  const receiver = receiverOf(connection.ws) as unknown as Record<symbol, unknown> | undefined;
  if (receiver === undefined) return undefined;
  const key = Object.getOwnPropertySymbols(receiver).find((k) => k.description === 'ws-supervisor.hold');
  return key === undefined ? undefined : (receiver[key] as ParserHold);
}

/** The hold keeps the Receiver's `_final` callback: the peer's input ended (FIN) while held, and ws's 'close' waits. */
const finalKept = (hold: ParserHold): boolean => (hold as unknown as { final: unknown }).final !== null;

/** What the hold was when the reader dropped the connection's input (`discard()`: a budget over, or the reader stopped). */
function watchDiscard(hold: ParserHold): Array<{ held: boolean; finalKept: boolean }> {
  const seen: Array<{ held: boolean; finalKept: boolean }> = [];
  const own = hold.discard.bind(hold);
  hold.discard = () => {
    seen.push({ held: hold.held, finalKept: finalKept(hold) });
    own();
  };
  return seen;
}

test("a held peer's connection ended by us (terminate; close() with the peer silent till closeTimeout; a budget over), its FIN kept or not: ws's 'close' and the supervisor's come within a bound, and it is released", T, async (t) => {
  const SHARE = 8;
  const CLOSE_TIMEOUT = 100;
  const MARGIN = pace.scaled(500);
  // Armed by a case: at the first message delivered while the parser is held (a drain turn delivers the deferred one
  // before it releases the parser) and, for a peer that sent its FIN, once the hold keeps the Receiver's `_final`.
  let armed: { connection: Connection; fin: boolean; fire(connection: Connection, hold: ParserHold): void } | null = null;
  const onDelivered = (connection: Connection): void => {
    const hold = armed?.connection === connection ? holdOf(connection) : undefined;
    if (hold === undefined || !hold.held || (armed!.fin && !finalKept(hold))) return;
    const { fire } = armed!;
    armed = null;
    fire(connection, hold);
  };
  const options = { fairness: { share: SHARE, turnBudget: 64 }, timing: { closeTimeout: CLOSE_TIMEOUT } };
  const plain = await serve(t, options, onDelivered);
  // Over at the 25th message: one delivered from the backlog while held (the 8k + 1st, share 8).
  const budgeted = await serve(t, { ...options, budget: { messages: 24, window: 60_000 } }, onDelivered);
  // `parsed`: the close waits for nothing of ours, so the held bytes are parsed on the next turns (after a FIN, every
  // request delivered) and that completes the Receiver; otherwise the input is dropped while held, which completes it.
  // `timer`: the input is dropped when closeTimeout fires (the reader stops at `closed`, as on terminate()), between
  // two turns: held then in 5 of 6 runs; in the other, ws had parsed all it had read of the pumping peer by then (47,392
  // requests in the 106 ms), and the input was dropped unheld. Either way the bound holds; the held drop is the one the
  // terminate() cases make deterministically (the same stop, the same discard()).
  const cases: Array<{ name: string; s: Served; fin: boolean; end?: (c: Connection, peer: RawWs) => void; wait: number; parsed?: true; timer?: true }> = [
    { name: 'terminate()', s: plain, fin: false, end: (c) => void c.terminate(), wait: 0 },
    { name: 'terminate() after a FIN', s: plain, fin: true, end: (c) => void c.terminate(), wait: 0 },
    { name: 'close(), the peer silent', s: plain, fin: false, end: (c) => void c.close(1000), wait: CLOSE_TIMEOUT, timer: true },
    { name: 'close() after a FIN', s: plain, fin: true, end: (c) => void c.close(1000), wait: 0, parsed: true },
    { name: 'a budget over, the peer silent', s: budgeted, fin: false, wait: CLOSE_TIMEOUT },
    { name: 'a budget over after a FIN', s: budgeted, fin: true, wait: 0 },
    // The peer's RST while held: ws parses what it had read (the socket's buffer and its own) on the next turns.
    { name: "the peer's RST", s: plain, fin: false, end: (_c, peer) => void peer.socket.resetAndDestroy(), wait: 0, parsed: true },
  ];
  for (const c of cases) {
    const k = c.s.connections.length;
    const peer = await rawConnect(c.s.port);
    t.after(() => peer.destroy());
    await waitFor(() => c.s.connections.length === k + 1, 5_000, 'the connection');
    const connection = c.s.connections[k]!;
    let wsClosedAt = -1;
    connection.ws.once('close', () => (wsClosedAt = performance.now()));
    let endedAt = -1;
    let seen: Array<{ held: boolean; finalKept: boolean }> = [];
    armed = {
      connection,
      fin: c.fin,
      fire(conn, hold) {
        seen = watchDiscard(hold);
        endedAt = performance.now();
        c.end?.(conn, peer);
      },
    };
    // With a FIN: ~34 KB then the end of the input, every byte read before the second turn. Without: requests as
    // fast as the server reads them (8 per turn), so it is held at every turn's end until its input is dropped.
    if (c.fin) peer.socket.end(requests(1, 1_000));
    else pump(peer);
    await waitFor(() => endedAt !== -1, 5_000, `${c.name}: a delivery while held`);
    await waitFor(() => c.s.closed.length === k + 1 && wsClosedAt !== -1, c.wait + 5_000, `${c.name}: the closes`);
    const closedAt = c.s.closed[k]!.at;
    const bound = c.wait + MARGIN;
    assert.ok(seen.length >= 1, `${c.name}: the reader dropped the input`);
    if (c.parsed) {
      assert.deepEqual(seen[0], { held: false, finalKept: false }, `${c.name}: nothing left held when the reader stopped`);
      if (c.fin) assert.deepEqual(c.s.delivered.get(connection)!.ids, range(1, 1_000), `${c.name}: every request delivered, in order, before the close`);
    } else if (!c.timer) {
      // The path under test: the input dropped while the parser was held (and, after a FIN, its _final kept).
      assert.equal(seen[0]!.held, true, `${c.name}: held when the input was dropped (${JSON.stringify(seen)}, ${c.s.closed[k]!.delivered} delivered, closed after ${(closedAt - endedAt).toFixed(1)} ms)`);
      if (c.fin) assert.equal(seen[0]!.finalKept, true, `${c.name}: ws's Receiver was waiting for the held bytes`);
    }
    assert.ok(closedAt - endedAt <= bound, `${c.name}: the supervisor's 'close' ${(closedAt - endedAt).toFixed(0)} ms after (bound ${bound})`);
    assert.ok(wsClosedAt - endedAt <= bound, `${c.name}: ws's 'close' ${(wsClosedAt - endedAt).toFixed(0)} ms after (bound ${bound})`);
    t.diagnostic(`${c.name}: supervisor 'close' +${(closedAt - endedAt).toFixed(1)} ms, ws 'close' +${(wsClosedAt - endedAt).toFixed(1)} ms (input dropped ${seen[0]!.held ? 'while held' : 'unheld'})`);
    const delivered = c.s.delivered.get(connection)!.ids.length;
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    assert.equal(c.s.delivered.get(connection)!.ids.length, delivered, `${c.name}: nothing delivered after the close`);
    assert.equal(c.s.size(), 0, `${c.name}: released`);
  }
  // A protocol error behind the held bytes, then the FIN: the parse that the next turn releases ends in ws's error
  // (an unmasked frame: 1002), which ends the Receiver instead of its kept _final; ws's 'close' follows at once.
  {
    const k = plain.connections.length;
    const peer = await rawConnect(plain.port);
    t.after(() => peer.destroy());
    await waitFor(() => plain.connections.length === k + 1, 5_000, 'the connection');
    const connection = plain.connections[k]!;
    let wsClosedAt = -1;
    connection.ws.once('close', () => (wsClosedAt = performance.now()));
    let heldAt = -1;
    armed = { connection, fin: true, fire: () => (heldAt = performance.now()) };
    peer.socket.end(Buffer.concat([requests(1, 1_000), encodeFrame({ opcode: Opcode.TEXT, payload: 'unmasked', mask: false })]));
    await waitFor(() => heldAt !== -1, 5_000, 'held with its FIN kept');
    await waitFor(() => plain.closed.length === k + 1 && wsClosedAt !== -1, 5_000, 'the closes');
    const closedAt = plain.closed[k]!.at;
    assert.ok(closedAt - heldAt <= MARGIN && wsClosedAt - heldAt <= MARGIN, `a protocol error behind the held bytes: the closes ${(closedAt - heldAt).toFixed(0)} and ${(wsClosedAt - heldAt).toFixed(0)} ms after (bound ${MARGIN})`);
    assert.deepEqual(plain.delivered.get(connection)!.ids, range(1, 1_000), 'every request before the bad frame delivered, in order');
    assert.equal(plain.closed[k]!.code, 1002, 'closed for the protocol error');
    assert.equal(plain.size(), 0, 'released');
    t.diagnostic(`a protocol error behind the held bytes after a FIN: supervisor 'close' +${(closedAt - heldAt).toFixed(1)} ms, ws 'close' +${(wsClosedAt - heldAt).toFixed(1)} ms`);
  }
  // The drain (R18) with peers held: three pipelining without end, one whose FIN is kept, none answering the close.
  const first = plain.connections.length;
  const peers: RawWs[] = [];
  for (let k = 0; k < 4; k++) {
    const peer = await rawConnect(plain.port);
    t.after(() => peer.destroy());
    peers.push(peer);
  }
  await waitFor(() => plain.connections.length === first + 4, 5_000, 'the connections');
  const connections = plain.connections.slice(first);
  const wsClosed = connections.map((c) => new Promise<void>((resolve) => c.ws.once('close', () => resolve())));
  let t0 = -1;
  let closing: Promise<void> | null = null;
  let othersHeld = false;
  // Started while the fourth peer's parser is held with its FIN kept, and the other three are held too.
  armed = {
    connection: connections[3]!,
    fin: true,
    fire: () => {
      othersHeld = connections.slice(0, 3).every((c) => holdOf(c)?.held === true);
      t0 = performance.now();
      closing = plain.close();
    },
  };
  for (const peer of peers.slice(0, 3)) pump(peer);
  await waitFor(() => connections.slice(0, 3).every((c) => holdOf(c)?.held === true), 5_000, 'three held');
  peers[3]!.socket.end(requests(1, 1_000));
  await waitFor(() => closing !== null, 5_000, "the fourth held with its FIN kept");
  assert.equal(othersHeld, true, 'the other three were held when the drain began');
  const drained = await within(closing!, pace.scaled(5_000) + CLOSE_TIMEOUT);
  const took = performance.now() - t0;
  assert.notEqual(drained, null, 'supervisor.close() resolved');
  assert.ok(took <= CLOSE_TIMEOUT + MARGIN, `supervisor.close() took ${took.toFixed(0)} ms (bound ${CLOSE_TIMEOUT + MARGIN})`);
  assert.notEqual(await within(Promise.all(wsClosed), MARGIN), null, "ws's 'close' on every socket");
  assert.equal(plain.size(), 0, 'every connection released');
  t.diagnostic(`supervisor.close() with 4 held peers: ${took.toFixed(1)} ms (closeTimeout ${CLOSE_TIMEOUT})`);
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
