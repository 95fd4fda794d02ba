// The writer's corking and framing (src/server/writer.ts): the first frame of a
// turn leaves at once, later ones in the same turn leave together in one
// write at the turn's end, a broadcast is framed once, and none of
// it reorders frames, loses one (R12) or reports backpressure that a peer did
// not cause (R10).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { Duplex } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import type WebSocket from 'ws';
import type { Connection, DeadLetter } from '../../src/index.ts';
import { closeOf, countWrites, openClient, startSupervisor, waitFor } from '../helpers/server.ts';
import { Opcode, rawConnect } from '../helpers/raw-ws.ts';
import { pace } from '../helpers/pace.ts';
import { SendQueue } from '../../src/server/writer.ts';

async function serve(t: TestContext, onMessage?: (c: Connection, data: Buffer, isBinary: boolean) => void) {
  const srv = await startSupervisor({ onMessage: onMessage ?? (() => undefined), timing: { pingInterval: 24 * 3600_000 } });
  const deadLetters: DeadLetter[] = [];
  srv.supervisor.on('deadLetter', (d) => deadLetters.push(d));
  const clients: WebSocket[] = [];
  t.after(async () => {
    for (const ws of clients) ws.terminate();
    await srv.close();
  });
  const client = async (): Promise<{ ws: WebSocket; connection: Connection; got: string[] }> => {
    const opened = new Promise<Connection>((r) => srv.supervisor.once('connection', (c) => r(c)));
    const ws = await openClient(srv.url);
    clients.push(ws);
    const got: string[] = [];
    ws.on('message', (d: Buffer) => got.push(d.toString()));
    return { ws, connection: await opened, got };
  };
  return { srv, sup: srv.supervisor, deadLetters, client };
}

test('ten sends in one turn: the first leaves at once, the other nine in one write at the end of the turn, in order', async (t) => {
  const { client, deadLetters } = await serve(t);
  const { connection, got } = await client();
  await tick(); // a fresh turn
  const writes = countWrites(connection.socket);
  for (let i = 0; i < 10; i++) assert.equal(connection.send(`m${i}`), true);
  assert.equal(writes.count, 1, 'the turn\'s first frame is written at once');
  assert.equal(connection.stats.messagesOut, 1, 'only the first has reached the OS so far');
  await tick();
  await tick();
  assert.equal(writes.count, 2, 'the other nine leave in one write when the turn ends');
  assert.equal(connection.stats.messagesOut, 10, 'all ten confirmed once the batch reached the OS');
  await waitFor(() => got.length === 10, 5000, 'the client to read all ten');
  assert.deepEqual(got, Array.from({ length: 10 }, (_, i) => `m${i}`));
  assert.equal(deadLetters.length, 0);
});

test("a plain TCP socket: the turn's first frame goes to its descriptor, not through its Writable; frames behind it in the turn, behind waiting bytes, or on a socket with an idle timeout go through the stream, all in order", { skip: process.platform === 'win32' ? 'no descriptors for sockets on Windows' : false }, async (t) => {
  const { client, deadLetters } = await serve(t);
  const { connection, got } = await client();
  const socket = connection.socket as Duplex & { setTimeout(ms: number): void };
  await tick(); // a fresh turn
  const writes = countWrites(socket);
  assert.equal(connection.send('a'), true);
  assert.deepEqual([writes.fd, writes.stream], [1, 0], "the reply went to the descriptor (ws-internals.ts, item 7), not through the socket's Writable");
  assert.equal(connection.stats.messagesOut, 1, 'the descriptor took it: it reached the OS');
  assert.equal(connection.send('b'), true); // a second frame this turn: corked, through the stream
  await tick();
  await tick();
  assert.deepEqual([writes.fd, writes.stream], [1, 1], 'the second frame of the turn left through the stream at its end');
  // An idle timeout on the socket (the stream's write refreshes it): the first frame of a turn goes through the stream.
  socket.setTimeout(60_000);
  assert.equal(connection.send('c'), true);
  assert.deepEqual([writes.fd, writes.stream], [1, 2], 'a socket with a timeout is written through the stream');
  socket.setTimeout(0);
  await tick();
  await tick();
  assert.equal(connection.send('d'), true);
  assert.deepEqual([writes.fd, writes.stream], [2, 2]);
  await waitFor(() => got.length === 4, 5000, 'the client to read all four');
  assert.deepEqual(got, ['a', 'b', 'c', 'd']);
  assert.equal(connection.stats.messagesOut, 4);
  assert.equal(deadLetters.length, 0);
});

test('a burst of ten broadcasts reaches each receiver in two writes, framed once, in order', async (t) => {
  const { sup, client, deadLetters } = await serve(t);
  const peers = [await client(), await client(), await client()];
  await tick();
  const writes = peers.map((p) => countWrites(p.connection.socket));
  for (let i = 0; i < 10; i++) assert.deepEqual(sup.broadcast(`b${i}`), { accepted: 3, refused: 0 });
  assert.deepEqual(writes.map((w) => w.count), [1, 1, 1], 'the first broadcast leaves at once');
  await tick();
  await tick();
  assert.deepEqual(writes.map((w) => w.count), [2, 2, 2], 'the other nine leave in one write per receiver');
  for (const p of peers) {
    await waitFor(() => p.got.length === 10, 5000, 'every receiver to read the burst');
    assert.deepEqual(p.got, Array.from({ length: 10 }, (_, i) => `b${i}`));
    assert.equal(p.connection.stats.messagesOut, 10);
  }
  // Binary and filtered broadcasts take the same path.
  sup.broadcast(Buffer.from([1, 2, 3]), { filter: (c) => c === peers[0]!.connection });
  await waitFor(() => peers[0]!.got.length === 11, 5000, 'the filtered binary broadcast');
  assert.equal(peers[1]!.got.length, 10);
  assert.equal(deadLetters.length, 0);
});

test('a close behind corked frames: the frames go first, then the close frame', async (t) => {
  const { client, deadLetters } = await serve(t);
  const { ws, connection, got } = await client();
  const closed = closeOf(ws);
  await tick();
  for (let i = 0; i < 5; i++) connection.send(`m${i}`);
  void connection.close(4000, 'bye');
  const close = await closed;
  assert.equal(close.code, 4000);
  assert.deepEqual(got, ['m0', 'm1', 'm2', 'm3', 'm4']);
  assert.equal(deadLetters.length, 0);
});

test("R12/R16 the peer's close frame behind pipelined requests: every reply (corked) still goes out before the echoed close", async (t) => {
  const { srv } = await serve(t, (c, data) => void c.send(`re:${data.toString()}`));
  const raw = await rawConnect(srv.port);
  t.after(() => raw.destroy());
  // Three requests and a close frame in one TCP write: parsed in one turn, the close last.
  raw.sendRaw(
    Buffer.concat([
      ...['a', 'b', 'c'].map((p) => encode(Opcode.TEXT, Buffer.from(p))),
      encode(Opcode.CLOSE, Buffer.from([0x03, 0xe8])),
    ]),
  );
  const close = await raw.waitForFrame((f) => f.opcode === Opcode.CLOSE);
  assert.ok(close, 'the server echoed the close');
  const texts = raw.frames.filter((f) => f.opcode === Opcode.TEXT).map((f) => f.payload.toString());
  assert.deepEqual(texts, ['re:a', 're:b', 're:c']);
  assert.equal(raw.frames.at(-1)!.opcode, Opcode.CLOSE, 'nothing after the close frame');
});

test('R10 a corked batch never makes the socket report backpressure: a burst above the high-water mark is written early, not blocked', async (t) => {
  const { client, deadLetters } = await serve(t);
  const { connection, got } = await client();
  const events: string[] = [];
  connection.machine.subscribe(() => events.push(connection.isWriteBlocked ? 'blocked' : 'flowing'));
  await tick();
  const writes = countWrites(connection.socket);
  const hwm = connection.socket.writableHighWaterMark;
  const size = 1000;
  const n = Math.ceil((3 * hwm) / size); // three high-water marks' worth in one turn
  for (let i = 0; i < n; i++) connection.send(String(i).padEnd(size, '.'));
  assert.ok(connection.socket.writableLength < hwm, 'the corked batch stays below the high-water mark');
  assert.ok(writes.count >= 3, `batches were written as they reached the high-water mark (${writes.count} writes)`);
  await waitFor(() => got.length === n, 5000, 'the client to read every message');
  assert.deepEqual(got.map((m) => Number(m.replace(/\.+$/, ''))), Array.from({ length: n }, (_, i) => i));
  assert.ok(writes.count < n / 4, `far fewer writes than messages (${writes.count} for ${n})`);
  assert.ok(!events.includes('blocked'), 'write.blocked was never reported for a reading peer');
  assert.equal(deadLetters.length, 0);
});

test('R12 a socket destroyed while corked: the corked frames come back as dead letters, none is counted as sent', async (t) => {
  const { client, deadLetters } = await serve(t);
  const { connection } = await client();
  await tick();
  connection.send('first'); // leaves at once
  const corked = ['c1', 'c2', 'c3'];
  for (const m of corked) connection.send(m);
  connection.socket.destroy(); // before the turn ends: the corked frames never reach the OS
  await connection.closed;
  await waitFor(() => deadLetters.length === 3, 5000, 'the corked frames to come back');
  assert.deepEqual(deadLetters.map((d) => String(d.data)), corked);
  assert.ok(deadLetters.every((d) => d.reason === 'closed'));
  assert.equal(connection.stats.messagesOut, 1);
});

/** A masked client frame. */
function encode(opcode: number, payload: Buffer): Buffer {
  const mask = Buffer.from([1, 2, 3, 4]);
  const head = Buffer.from([0x80 | opcode, 0x80 | payload.length]);
  const body = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!));
  return Buffer.concat([head, mask, body]);
}

test("the client's batch (SendQueue.batch, through ws: frames masked): what it sends leaves in one write, each its own frame, in order, confirmed", async (t) => {
  const got: string[] = [];
  const { client } = await serve(t, (_c, data) => got.push(data.toString()));
  const { ws } = await client();
  const socket = (ws as unknown as { _socket: Duplex })._socket;
  const queue = new SendQueue({ ws, socket, deadLetter: () => assert.fail('no dead letter') }, { maxMessages: 16, maxBytes: 1 << 20 });
  await tick();
  const writes = countWrites(socket);
  queue.batch(() => {
    assert.equal(queue.send('{"session":"ack","seq":4}'), true);
    assert.equal(queue.send('5:{"requestID":5}'), true);
  });
  assert.equal(writes.count, 1, 'one write for both');
  assert.equal(queue.messagesOut, 2, 'both reached the OS when the batch uncorked');
  assert.equal(queue.send('6:{"requestID":6}'), true);
  assert.equal(writes.count, 2, 'a send outside a batch writes on its own, as before');
  await waitFor(() => got.length === 3, 5000, 'the server to read the three');
  assert.deepEqual(got, ['{"session":"ack","seq":4}', '5:{"requestID":5}', '6:{"requestID":6}']);
});

test('the heartbeat ping: one empty ping frame put on the socket without its Writable while nothing waits there, behind waiting frames through it; the round trip is timed from it', { timeout: pace.scaled(10_000) }, async (t) => {
  // The client answers from this process: the pong timeout scaled by the measured pace.
  const srv = await startSupervisor({ onMessage: () => undefined, timing: { pingInterval: 40, pongTimeout: pace.scaled(2_000) } });
  const opened = new Promise<Connection>((r) => srv.supervisor.once('connection', (c) => r(c)));
  const ws = await openClient(srv.url);
  t.after(async () => {
    ws.terminate();
    await srv.close();
  });
  const connection = await opened;
  const socket = connection.socket;
  // Every ping the writer sends, and those of them handed to the socket's write() (the Writable), by their ordinal.
  let pings = 0;
  const throughStream: number[] = [];
  const writer = connection.writer as unknown as { ping(): void };
  const ping = writer.ping.bind(writer);
  writer.ping = () => {
    pings++;
    ping();
  };
  const write = socket.write;
  socket.write = function (this: Duplex, chunk: unknown, ...rest: unknown[]): boolean {
    if (Buffer.isBuffer(chunk) && chunk.length === 2 && chunk[0] === 0x89) throughStream.push(pings);
    return (write as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
  } as typeof socket.write;
  const writes = countWrites(socket);
  const seen: string[] = [];
  ws.on('ping', (d: Buffer) => seen.push(`ping:${d.length}`));
  ws.on('message', (d: Buffer) => seen.push(d.toString().slice(0, 8)));
  await waitFor(() => seen.length >= 3 && connection.rttMs !== null, 5_000, 'three pings and a round trip');
  assert.deepEqual(seen.slice(0, 3), ['ping:0', 'ping:0', 'ping:0'], 'the ping carries no payload');
  assert.equal(writes.stream, 0, "no ping went through the socket's Writable");
  assert.deepEqual(throughStream, [], 'no ping was handed to socket.write');
  const rtt = connection.rttMs!;
  assert.ok(rtt > 0 && rtt < pace.scaled(2_000), `rttMs ${rtt}`);

  // The client stops reading: the server's frames wait in the socket's Writable, and the next ping goes behind them.
  // Paused right after a pong (no ping waiting for its answer, which the paused client would not give), in the same turn.
  const clientSocket = (ws as unknown as { _socket: Duplex })._socket;
  await waitFor(() => connection.stateName === 'open', 2_000, 'a pong (the heartbeat idle)');
  clientSocket.pause();
  const big = 'x'.repeat(64 * 1024);
  let n = 0;
  while (!connection.writer.pushingBack && n < 2_000) connection.send(`${String(n++).padStart(8, '0')}${big}`);
  assert.ok(connection.writer.pushingBack, 'the socket pushed back');
  await waitFor(() => throughStream.length > 0, 2_000, 'a ping handed to the stream behind the waiting frames');
  const ordinal = throughStream[0]!;
  clientSocket.resume();
  const pingsSeen = (): number => seen.filter((x) => x.startsWith('ping')).length;
  await waitFor(() => seen.length - pingsSeen() === n && pingsSeen() >= ordinal, 5_000, 'every message and the ping behind them');
  let at = -1;
  for (let i = 0, k = 0; i < seen.length && at < 0; i++) if (seen[i]!.startsWith('ping') && ++k === ordinal) at = i;
  let lastMessage = -1;
  seen.forEach((x, i) => {
    if (!x.startsWith('ping')) lastMessage = i;
  });
  assert.ok(at > lastMessage, `ping ${ordinal}, written behind the waiting frames, arrived after all ${n} of them (at ${at}, the last message at ${lastMessage})`);
  assert.equal(seen[lastMessage], String(n - 1).padStart(8, '0'));
  assert.notEqual(connection.stateName, 'closed');
});
