// Slow consumers (R9–R12): a peer that stops reading fills its own bounded
// queue and is closed 1008, counted, and handed back its undelivered messages
// as dead letters; nobody else waits on it.
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { Duplex } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import type WebSocket from 'ws';
import type { Connection, DeadLetter, Outbound, Supervisor, SupervisorOptions } from '../../src/index.ts';
import { pace } from '../helpers/pace.ts';
import { closeOf, delay, openClient, startSupervisor, waitFor } from '../helpers/server.ts';
import { rawConnect, type RawWs } from '../helpers/raw-ws.ts';
import { SendQueue } from '../../src/server/writer.ts';
import type { WriterEvent } from '../../machines/connection.machine.ts';

const KiB = 1024;
/** A ping interval longer than any test here (a day): for raw peers, which answer no ping. */
const NO_HEARTBEAT = 24 * 3600_000;
const MiB = 1024 * KiB;

async function serve(t: TestContext, options: Omit<SupervisorOptions, 'server'>) {
  const srv = await startSupervisor({ onMessage: (c, data, isBinary) => void c.send(data, isBinary), ...options });
  const sup = srv.supervisor;
  const raws: RawWs[] = [];
  const clients: WebSocket[] = [];
  const deadLetters: DeadLetter[] = [];
  sup.on('deadLetter', (letter) => deadLetters.push(letter));
  t.after(async () => {
    for (const raw of raws) raw.destroy();
    for (const ws of clients) ws.terminate();
    await srv.close();
  });
  const nextConnection = () => new Promise<Connection>((resolve) => sup.once('connection', (c) => resolve(c)));
  /** A raw client that completes the handshake and then never reads again. */
  const nonReader = async () => {
    const opened = nextConnection();
    const raw = await rawConnect(srv.port);
    raws.push(raw);
    raw.stopReading();
    return { raw, connection: await opened };
  };
  const reader = async () => {
    const opened = nextConnection();
    const ws = await openClient(srv.url);
    clients.push(ws);
    return { ws, connection: await opened };
  };
  return { srv, sup, deadLetters, nonReader, reader };
}

async function metric(sup: Supervisor<any>, series: string): Promise<number> {
  const text = await sup.metrics.registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

/** A message of `size` bytes whose first 8 bytes are its sequence number; even ones binary, odd ones text. */
function message(seq: number, size: number): Outbound {
  const tag = String(seq).padStart(8, '0');
  return seq % 2 === 0 ? Buffer.from(tag.padEnd(size, 'b')) : tag.padEnd(size, 't');
}
const seqOf = (data: Outbound): number => Number(typeof data === 'string' ? data.slice(0, 8) : data.subarray(0, 8).toString());

/** Sends to `connection` until the writer has queued `queued` messages (the socket is blocked), or it refuses. */
async function fillUntilQueued(connection: Connection, queued: number, size: number, accepted: Outbound[], limit = 4000) {
  for (let seq = accepted.length; seq < limit; seq++) {
    if (connection.stats.queuedMessages >= queued) return;
    const data = message(seq, size);
    if (!connection.send(data)) return;
    accepted.push(data);
    await tick();
  }
  assert.fail(`the socket never blocked after ${limit} messages of ${size} bytes`);
}

/** R12 bookkeeping: once closed, every accepted message was written or came back, exactly once. */
async function assertNothingVanished(connection: Connection, accepted: Outbound[], deadLetters: DeadLetter[]): Promise<void> {
  const mine = () => deadLetters.filter((d) => d.connectionId === connection.id);
  // Write callbacks of a destroyed socket fire on the next ticks.
  await waitFor(() => connection.stats.messagesOut + mine().length >= accepted.length, 2000, 'every accepted message to be accounted for').catch(() => {});
  await delay(20);
  const letters = mine();
  assert.equal(
    connection.stats.messagesOut + letters.length,
    accepted.length,
    `accepted ${accepted.length} = written ${connection.stats.messagesOut} + dead letters ${letters.length}`,
  );
  const seqs = letters.map((d) => seqOf(d.data));
  assert.equal(new Set(seqs).size, seqs.length, 'no message is dead-lettered twice');
  for (const letter of letters) {
    assert.equal(letter.binary, typeof letter.data !== 'string', `binary flag of #${seqOf(letter.data)}`);
    assert.ok(accepted.includes(letter.data), 'a dead letter carries the very data that was accepted');
  }
}

describe('R9–R12 slow consumers', () => {
  test('R9/R11/R12 queue overflow: a non-reading peer is closed 1008 slow-consumer, counted, and its queue comes back as dead letters', { timeout: pace.scaled(15_000) }, async (t) => {
    const { sup, deadLetters, nonReader, reader } = await serve(t, {
      sendQueue: { maxMessages: 16, maxBytes: 1 * MiB },
      timing: { closeTimeout: 500 },
    });
    const slow = await nonReader();
    // Control: a client that reads gets the same paced stream and is never closed.
    const control = await reader();
    let controlReceived = 0;
    control.ws.on('message', () => controlReceived++);

    const accepted: Outbound[] = [];
    let refusedAt = -1;
    for (let seq = 0; seq < 2000; seq++) {
      const data = message(seq, 64 * KiB);
      assert.ok(control.connection.send(data), `the reading client accepts #${seq}`);
      if (!slow.connection.send(data)) {
        refusedAt = seq;
        break;
      }
      accepted.push(data);
      await tick();
    }
    t.diagnostic(`refused at #${refusedAt}; written ${slow.connection.stats.messagesOut}; dead letters ${deadLetters.length}`);
    assert.ok(refusedAt > 16, `the slow consumer was refused at #${refusedAt}, after its kernel buffers filled`);
    // Once overflowed, it refuses everything (R12: refused, so the caller still owns it).
    assert.equal(slow.connection.send('more'), false);
    assert.equal(slow.connection.send(Buffer.alloc(1)), false);

    const closure = await slow.connection.closed;
    assert.equal(closure.code, 1008);
    assert.equal(closure.cause, 'slow-consumer');
    assert.equal(closure.initiator, 'local');
    assert.equal(closure.expected, false);
    assert.match(closure.reason, /overflow/);
    assert.equal(closure.receivedCode, null, 'a peer that does not read never answers the close frame');
    assert.equal(await metric(sup, 'ws_supervisor_slow_consumer_closes_total{cause="slow-consumer"}'), 1);

    // R12: the 16 queued messages come back in order, as the tail of what was accepted.
    await assertNothingVanished(slow.connection, accepted, deadLetters);
    const queued = deadLetters.filter((d) => d.connectionId === slow.connection.id && d.reason === 'slow-consumer');
    assert.equal(queued.length, 16, 'exactly the full queue (maxMessages) was dead-lettered');
    assert.deepEqual(
      queued.map((d) => seqOf(d.data)),
      accepted.slice(-16).map(seqOf),
    );
    assert.equal(await metric(sup, 'ws_supervisor_dead_letters_total{reason="slow-consumer"}'), 16);

    // The reader kept up: still open, and gets everything it was sent.
    assert.notEqual(control.connection.stateName, 'closed');
    await waitFor(() => controlReceived === refusedAt + 1, 5000, 'the reading client to receive every message');
    assert.equal(deadLetters.filter((d) => d.connectionId === control.connection.id).length, 0);
  });

  test('R10 write timeout: a socket that stops draining is closed 1008 write-timeout within writeTimeout + closeTimeout', { timeout: pace.scaled(15_000) }, async (t) => {
    const writeTimeout = 300;
    const closeTimeout = 300;
    const { sup, deadLetters, nonReader } = await serve(t, {
      sendQueue: { maxMessages: 100_000, maxBytes: 1024 * MiB }, // never overflows here
      timing: { writeTimeout, closeTimeout },
    });
    const slow = await nonReader();
    let closingAt = 0;
    const sub = slow.connection.machine.subscribe((s) => {
      if (!closingAt && s.matches('closing')) closingAt = performance.now();
    });
    t.after(() => sub.unsubscribe());

    const accepted: Outbound[] = [];
    await fillUntilQueued(slow.connection, 8, 64 * KiB, accepted);
    const stalledAt = performance.now();
    assert.ok(slow.connection.isWriteBlocked, 'the machine is in open.write.blocked');
    // Keep offering messages while it is stalled: accepted (queue not full), but no progress.
    for (let i = 0; i < 10; i++) {
      const data = message(accepted.length, 64 * KiB);
      if (slow.connection.send(data)) accepted.push(data);
      await delay(10);
    }

    const closure = await slow.connection.closed;
    const closedAt = performance.now();
    assert.equal(closure.code, 1008);
    assert.equal(closure.cause, 'write-timeout');
    assert.equal(closure.initiator, 'local');
    assert.equal(closure.expected, false);
    assert.match(closure.reason, /write timeout/);
    assert.ok(closingAt > 0, 'went through closing (close frame attempted)');
    const toClosing = closingAt - stalledAt;
    const toClosed = closedAt - stalledAt;
    t.diagnostic(`stall → closing ${toClosing.toFixed(0)} ms, closing → closed ${(closedAt - closingAt).toFixed(0)} ms; accepted ${accepted.length}`);
    // Margins scaled by the measured pace (test/helpers/pace.ts); the lower bound stays exact.
    assert.ok(toClosing <= writeTimeout + pace.scaled(150), `closing ${toClosing.toFixed(0)} ms after the stall (writeTimeout ${writeTimeout}, margin ${pace.scaled(150)})`);
    assert.ok(closedAt - closingAt >= closeTimeout - 20, `closing lasted ${(closedAt - closingAt).toFixed(0)} ms (closeTimeout ${closeTimeout})`);
    assert.ok(toClosed <= writeTimeout + closeTimeout + pace.scaled(300), `closed ${toClosed.toFixed(0)} ms after the stall (margin ${pace.scaled(300)})`);
    assert.equal(await metric(sup, 'ws_supervisor_slow_consumer_closes_total{cause="write-timeout"}'), 1);
    assert.equal(await metric(sup, 'ws_supervisor_slow_consumer_closes_total{cause="slow-consumer"}'), 0);
    assert.equal(slow.connection.send('late'), false);
    await assertNothingVanished(slow.connection, accepted, deadLetters);
    assert.ok(deadLetters.some((d) => d.reason === 'slow-consumer'), 'the stalled queue came back as dead letters');
  });

  test('R10 a socket that blocks and then recovers goes back to flowing: no write timeout once it has drained', { timeout: pace.scaled(15_000) }, async (t) => {
    // The peer reads from this process: its draining must beat the write
    // deadline on this machine, now, so the deadline is scaled by the pace.
    const writeTimeout = pace.scaled(600);
    const { sup, deadLetters, nonReader } = await serve(t, {
      sendQueue: { maxMessages: 100_000, maxBytes: 1024 * MiB },
      // The raw peer answers no ping: no heartbeat in this test, however long a busy machine makes it.
      timing: { writeTimeout, closeTimeout: 300, pingInterval: NO_HEARTBEAT },
    });
    const peer = await nonReader();
    let closure: unknown = null;
    void peer.connection.closed.then((c) => (closure = c));
    const accepted: Outbound[] = [];
    await fillUntilQueued(peer.connection, 8, 64 * KiB, accepted);
    assert.ok(peer.connection.isWriteBlocked, 'the machine is in open.write.blocked');
    await delay(writeTimeout / 6);

    // The peer reads again: everything queued goes out, and the writer says so (write.drained).
    peer.raw.socket.resume();
    await waitFor(() => peer.connection.stats.queuedMessages === 0 && peer.raw.frames.length === accepted.length, 5000, 'the queue to drain to the peer');
    await waitFor(() => !peer.connection.isWriteBlocked, writeTimeout / 2, 'the machine to hear the socket drained (write.drained)');
    assert.deepEqual(peer.connection.state, { open: { heartbeat: 'idle', write: 'flowing' } });

    // Idle for longer than the write deadline: a drained socket has none armed.
    await delay(2 * writeTimeout);
    assert.equal(closure, null, `closed: ${JSON.stringify(closure)}`);
    assert.equal(peer.connection.send(message(accepted.length, 1 * KiB)), true, 'still usable');
    assert.equal(await metric(sup, 'ws_supervisor_slow_consumer_closes_total{cause="write-timeout"}'), 0);
    assert.deepEqual(deadLetters, []);
    assert.deepEqual(peer.raw.frames.slice(0, accepted.length).map((f) => seqOf(f.payload)), accepted.map(seqOf), 'in order, none lost');
  });

  test('R10 a slow consumer that keeps draining in short bursts is not closed as write-timeout, though blocked far longer than the write timeout', { timeout: pace.scaled(20_000) }, async (t) => {
    // The write deadline counts from the last progress the writer saw: each
    // burst must free enough of the kernel buffers for the server's socket to
    // take more (a few KiB would not wake it), well within the deadline.
    // The bursts come from this process: on a busy machine the deadline and
    // the bursts stretch together (scaled by the measured pace), keeping the
    // same 40 bursts and their proportions.
    const writeTimeout = pace.scaled(1000);
    const burstEvery = writeTimeout / 10;
    const burstBytes = 512 * KiB;
    const backlog = 64; // messages of 64 KiB kept queued: more than a burst frees
    const { sup, deadLetters, nonReader } = await serve(t, {
      sendQueue: { maxMessages: 100_000, maxBytes: 1024 * MiB }, // never overflows here
      timing: { writeTimeout, closeTimeout: 300, pingInterval: NO_HEARTBEAT }, // as above
    });
    const peer = await nonReader();
    let closure: unknown = null;
    void peer.connection.closed.then((c) => (closure = c));
    // Stretches spent in open.write.blocked, from the machine's own snapshots.
    let blockedSince: number | null = null;
    let longestBlocked = 0;
    const sub = peer.connection.machine.subscribe((s) => {
      const blocked = s.matches({ open: { write: 'blocked' } });
      if (blocked && blockedSince === null) blockedSince = performance.now();
      if (!blocked && blockedSince !== null) {
        longestBlocked = Math.max(longestBlocked, performance.now() - blockedSince);
        blockedSince = null;
      }
    });
    t.after(() => sub.unsubscribe());

    // A steady stream that keeps a backlog queued (so the socket stays blocked), never overflowing...
    let sent = 0;
    const producer = setInterval(() => {
      while (peer.connection.stats.queuedMessages < backlog && peer.connection.send(message(sent, 64 * KiB))) sent++;
    }, 5);
    t.after(() => clearInterval(producer));
    // ...against a peer that reads burstBytes every burstEvery ms and nothing in between.
    let left = 0;
    peer.raw.socket.on('data', (chunk: Buffer) => {
      left -= chunk.length;
      if (left <= 0) peer.raw.socket.pause();
    });
    const burst = setInterval(() => {
      left = burstBytes;
      peer.raw.socket.resume();
    }, burstEvery);
    t.after(() => clearInterval(burst));
    // What the peer got, in order (payloads dropped as they come: this streams tens of MiB).
    const got: number[] = [];
    const collect = (): void => {
      for (const f of peer.raw.frames.splice(0)) got.push(seqOf(f.payload));
    };

    const started = performance.now();
    const received: number[] = [];
    while (performance.now() - started < 4 * writeTimeout) {
      await delay(writeTimeout / 2);
      collect();
      received.push(got.length);
      assert.equal(closure, null, `closed after ${(performance.now() - started).toFixed(0)} ms: ${JSON.stringify(closure)}`);
    }
    clearInterval(producer);
    clearInterval(burst);
    if (blockedSince !== null) longestBlocked = Math.max(longestBlocked, performance.now() - blockedSince);
    t.diagnostic(`pace ${pace.factor.toFixed(1)}; frames read by each ${writeTimeout / 2} ms: ${received.join(', ')}; longest blocked stretch ${longestBlocked.toFixed(0)} ms`);
    // A slow consumer indeed: blocked without a break for longer than the write timeout, reading all along.
    assert.ok(longestBlocked > 2 * writeTimeout, `blocked ${longestBlocked.toFixed(0)} ms without a break (write timeout ${writeTimeout})`);
    for (let i = 1; i < received.length; i++) assert.ok(received[i]! > received[i - 1]!, `the peer read something every ${writeTimeout / 2} ms: ${received.join(', ')}`);

    // Now it reads everything: nothing was lost, and the connection is fine.
    left = Infinity;
    peer.raw.socket.resume();
    await waitFor(() => (collect(), got.length === sent), 10_000, 'the peer to read every accepted message');
    await waitFor(() => !peer.connection.isWriteBlocked, writeTimeout, 'flowing again');
    assert.equal(closure, null);
    assert.equal(await metric(sup, 'ws_supervisor_slow_consumer_closes_total{cause="write-timeout"}'), 0);
    assert.deepEqual(deadLetters, []);
    assert.deepEqual(got, Array.from({ length: sent }, (_, i) => i), 'in order, none lost');
  });

  test('R11 broadcast isolation: 20 readers get all 200 messages in order with low latency while a stalled peer is closed', { timeout: pace.scaled(30_000) }, async (t) => {
    const { sup, deadLetters, nonReader, reader } = await serve(t, {
      sendQueue: { maxMessages: 16, maxBytes: 1 * MiB },
      timing: { closeTimeout: 500 },
    });
    const readers: Array<Awaited<ReturnType<typeof reader>>> = [];
    for (let i = 0; i < 20; i++) readers.push(await reader()); // one at a time: pairs each ws with its connection
    const received = readers.map(() => [] as number[]);
    let probeReply: ((text: string) => void) | null = null;
    readers.forEach(({ ws }, i) =>
      ws.on('message', (data) => {
        const text = data.toString();
        if (text.startsWith('probe:')) probeReply?.(text);
        else received[i]!.push(Number(text.slice(0, 8)));
      }),
    );
    const slow = await nonReader();
    // A peer that already stopped reading: fill its kernel buffers (~4 MiB on
    // Linux loopback, more than the whole broadcast) until its writer queues.
    await fillUntilQueued(slow.connection, 1, 64 * KiB, []);

    // Request/echo round trips from reader 0 while the broadcast runs.
    const rtts: number[] = [];
    let broadcasting = true;
    const probing = (async () => {
      for (let n = 0; broadcasting; n++) {
        const started = performance.now();
        const reply = new Promise<string>((resolve) => (probeReply = resolve));
        readers[0]!.ws.send(`probe:${n}`);
        assert.equal(await reply, `probe:${n}`);
        rtts.push(performance.now() - started);
        await delay(5);
      }
    })();

    const results: Array<{ accepted: number; refused: number }> = [];
    const started = performance.now();
    for (let seq = 0; seq < 200; seq++) {
      results.push(sup.broadcast(String(seq).padStart(8, '0').padEnd(16 * KiB, 'x')));
      await tick();
    }
    const broadcastMs = performance.now() - started;
    await waitFor(() => received.every((r) => r.length === 200), 10_000, 'every reader to receive all 200');
    broadcasting = false;
    await probing;

    const expected = Array.from({ length: 200 }, (_, i) => i);
    received.forEach((r, i) => assert.deepEqual(r, expected, `reader ${i} received all 200 in order`));
    for (const { connection } of readers) assert.notEqual(connection.stateName, 'closed');

    // The stalled one is closed as a slow consumer, and counted.
    const closure = await slow.connection.closed;
    assert.equal(closure.code, 1008);
    assert.equal(closure.cause, 'slow-consumer');
    assert.equal(await metric(sup, 'ws_supervisor_slow_consumer_closes_total{cause="slow-consumer"}'), 1);
    assert.ok(deadLetters.every((d) => d.connectionId === slow.connection.id), 'no reader lost anything');

    // broadcast never refused a reader: it reports 21 accepted until the overflow, then 20 accepted + the slow one refused.
    assert.ok(results.every((r) => r.accepted >= 20), 'every broadcast reached all 20 readers');
    assert.ok(results.some((r) => r.accepted === 21 && r.refused === 0), 'the stalled peer accepted some before its queue filled');
    const refusedTotal = results.reduce((s, r) => s + r.refused, 0);
    assert.ok(refusedTotal >= 1, 'the overflow shows up as refused');
    assert.ok(results.every((r) => r.refused <= 1));

    rtts.sort((a, b) => a - b);
    const p50 = rtts[Math.floor(rtts.length / 2)]!;
    const max = rtts[rtts.length - 1]!;
    t.diagnostic(`broadcast 200 × 16 KiB to 21 in ${broadcastMs.toFixed(0)} ms; ${rtts.length} probes, p50 ${p50.toFixed(1)} ms, max ${max.toFixed(1)} ms; refused ${refusedTotal}`);
    assert.ok(rtts.length >= 3, `enough probes (${rtts.length})`);
    assert.ok(p50 < pace.scaled(50), `request/echo p50 ${p50.toFixed(1)} ms during the stall (bound ${pace.scaled(50)} ms: 50 ms × pace ${pace.factor.toFixed(1)})`);
  });

  test('R12 a message whose write was still in progress when the socket was torn down is a dead letter, not "written"', {
    timeout: pace.scaled(10_000),
  }, async (t) => {
    // Ground truth: after the server gives up on a stalled peer, the peer
    // resumes reading and counts the complete messages it really got (the
    // kernel still delivers what it had accepted). Every message the writer
    // counts as written must be among them; the rest must be dead letters.
    const { deadLetters, nonReader } = await serve(t, {
      sendQueue: { maxMessages: 1000, maxBytes: 256 * MiB },
      timing: { writeTimeout: 200, closeTimeout: 200 },
    });
    const slow = await nonReader();
    const accepted: Outbound[] = [];
    await fillUntilQueued(slow.connection, 4, 64 * KiB, accepted);
    const closure = await slow.connection.closed;
    assert.equal(closure.cause, 'write-timeout');
    slow.raw.socket.resume();
    await slow.raw.closed;
    const delivered = slow.raw.frames.filter((f) => f.opcode === 1 || f.opcode === 2).map((f) => seqOf(f.payload));
    const written = slow.connection.stats.messagesOut;
    const lettered = deadLetters.map((d) => seqOf(d.data));
    t.diagnostic(`accepted ${accepted.length}, delivered ${delivered.length}, counted written ${written}, dead letters ${lettered.length} (${deadLetters.map((d) => d.reason).join(',')})`);
    assert.deepEqual(delivered, accepted.slice(0, delivered.length).map(seqOf), 'the peer got a prefix, in order');
    assert.equal(written, delivered.length, 'messagesOut counts only messages that fully reached the socket');
    assert.deepEqual(lettered.sort((a, b) => a - b), accepted.slice(delivered.length).map(seqOf), 'everything else came back');
  });

  test('R12 the peer closes while messages are queued: each is delivered before the echo or comes back; messagesOut counts only the delivered', { timeout: pace.scaled(15_000) }, async (t) => {
    const { sup, deadLetters, nonReader } = await serve(t, {
      sendQueue: { maxMessages: 10_000, maxBytes: 64 * MiB },
      timing: { closeTimeout: 2000 },
    });
    const { raw, connection } = await nonReader();
    const closed = new Promise<void>((resolve) => sup.once('close', () => resolve()));
    const accepted: Outbound[] = [];
    await fillUntilQueued(connection, 20, 100 * KiB, accepted);
    // The peer's close frame arrives while our queue waits for the socket to drain.
    raw.send({ opcode: 0x8, payload: Buffer.from([0x03, 0xe8]) });
    await waitFor(() => connection.stateName === 'closing' || connection.stateName === 'closed', 2000, 'the server to read the close frame');
    raw.socket.resume();
    await closed;
    await raw.closed;
    const received = raw.frames.filter((f) => f.opcode === 0x1 || f.opcode === 0x2).length;
    await assertNothingVanished(connection, accepted, deadLetters);
    assert.equal(connection.stats.messagesOut, received, 'written = what the peer received');
    assert.ok(deadLetters.length > 0, 'the queue that could not follow the close frame came back');
  });

  test('R12 send after close is refused (false), not dead-lettered', { timeout: pace.scaled(10_000) }, async (t) => {
    const { sup, deadLetters, reader } = await serve(t, { timing: { closeTimeout: 500 } });
    const { ws, connection } = await reader();
    assert.equal(connection.send('while open'), true);
    ws.close(1000, 'bye');
    await closeOf(ws);
    const closure = await connection.closed;
    assert.equal(closure.cause, 'peer');
    assert.equal(connection.send('after close'), false);
    assert.equal(connection.send(Buffer.from('after close')), false);
    await delay(pace.scaled(20)); // time for a (wrong) dead letter to show up
    assert.equal(deadLetters.length, 0);
    assert.equal(await metric(sup, 'ws_supervisor_dead_letters_total{reason="closed"}'), 0);
  });

  test('R12 a peer reset with messages queued: each comes back as a deadLetter event (connectionId, data, binary, reason)', { timeout: pace.scaled(10_000) }, async (t) => {
    const { sup, deadLetters, nonReader } = await serve(t, {
      sendQueue: { maxMessages: 1000, maxBytes: 256 * MiB },
      timing: { closeTimeout: 500 },
    });
    const slow = await nonReader();
    const accepted: Outbound[] = [];
    await fillUntilQueued(slow.connection, 6, 64 * KiB, accepted);
    const queuedSeqs = accepted.slice(-slow.connection.stats.queuedMessages).map(seqOf);
    slow.raw.reset();
    const closure = await slow.connection.closed;
    assert.equal(closure.code, 1006);
    assert.equal(closure.initiator, 'remote');
    assert.equal(closure.cause, 'socket-error');
    await assertNothingVanished(slow.connection, accepted, deadLetters);
    const closedLetters = deadLetters.filter((d) => d.reason === 'closed');
    t.diagnostic(`accepted ${accepted.length}, written ${slow.connection.stats.messagesOut}, dead letters ${deadLetters.map((d) => d.reason).join(',')}`);
    // The queued ones come back in order (a write in flight at the reset may come back too).
    assert.deepEqual(
      closedLetters.map((d) => seqOf(d.data)).filter((seq) => queuedSeqs.includes(seq)),
      queuedSeqs,
      'every queued message, in order',
    );
    for (const letter of deadLetters) {
      assert.deepEqual(Object.keys(letter).sort(), ['binary', 'connectionId', 'data', 'reason']);
      assert.equal(letter.connectionId, slow.connection.id);
      assert.ok(['closed', 'write-error'].includes(letter.reason), letter.reason);
    }
    assert.equal(await metric(sup, 'ws_supervisor_dead_letters_total{reason="closed"}'), closedLetters.length);
  });
});

// On loopback the kernel wakes a blocked writer only once a large share of its
// send buffer is free, so every pending write completes together and progress
// reaches the machine through drain + refill (tested above). A write that
// completes while others still wait behind it cannot be produced reliably on a
// real socket; this socket completes its writes one at a time, on command.
describe('R10 the writer on a socket that completes writes one at a time', () => {
  test('a write completing while the socket still pushes back is write.progress; the last one is write.drained', async () => {
    const completions: Array<() => void> = [];
    const socket = new Duplex({
      highWaterMark: 16 * KiB,
      read() {},
      write(_chunk, _encoding, done) {
        completions.push(() => done());
      },
    });
    // The part of a ws WebSocket the writer uses: one socket write per message.
    const ws = {
      readyState: 1,
      send: (data: Outbound, _options: unknown, cb?: (err?: Error | null) => void) => void (cb ? socket.write(data, cb) : socket.write(data)),
      ping() {},
      close() {},
      terminate() {},
    } as unknown as WebSocket;
    const letters: unknown[] = [];
    const events: WriterEvent['type'][] = [];
    const queue = new SendQueue({ ws, socket, deadLetter: (...args) => void letters.push(args) }, { maxMessages: 100, maxBytes: MiB });
    queue.attach({ report: (e) => void events.push(e.type) });

    for (let seq = 0; seq < 3; seq++) assert.equal(queue.send(message(seq, 6 * KiB)), true);
    assert.equal(socket.writableNeedDrain, true, '18 KiB waiting in a 16 KiB socket');
    assert.deepEqual(events, ['write.blocked']);

    completions.shift()!(); // the first write reaches the OS
    completions.shift()!(); // the second too; the third still waits
    await tick();
    assert.equal(socket.writableLength, 6 * KiB);
    assert.deepEqual(events, ['write.blocked', 'write.progress'], 'R10: progress while still blocked restarts the write deadline');
    assert.equal(queue.messagesOut, 2);

    completions.shift()!();
    await tick();
    assert.deepEqual(events, ['write.blocked', 'write.progress', 'write.drained']);
    assert.equal(queue.messagesOut, 3);
    assert.deepEqual(letters, []);
  });
});
