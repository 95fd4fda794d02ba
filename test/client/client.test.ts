/**
 * The session client's acks and its socket writes (src/client/client.ts,
 * `scheduleAck` / `write`; src/server/writer.ts, `SendQueue.batch`), on real
 * sockets, 127.0.0.1 only: a due ack rides the next request, the ack frame
 * then the request in one socket write, each still a frame of its own; with
 * no request it goes alone within its bound; close() still acks, in the same
 * write as its `end` (docs/sessions.md, "Acknowledgements"; R12, R13).
 *
 * What the client writes is seen where it leaves: the test wraps
 * `net.Socket.prototype._write` / `_writev` (one call each per write the
 * stream hands the OS) for the sockets whose peer is the test's server, and
 * reads the masked frames out of each write.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { test, type TestContext } from 'node:test';
import { createClient, type Client, type NodeClientOptions } from '../../src/client/node.ts';
import { createSupervisor, type Supervisor } from '../../src/index.ts';
import { handleText } from '../../src/protocol/codec.ts';
import { pace } from '../helpers/pace.ts';
import { delay, waitFor } from '../helpers/server.ts';

/** One socket write of the client: the frames in it (text payloads, unmasked), and when it happened. */
interface Write {
  at: number;
  frames: string[];
}

/** Reads the masked client frames (RFC 6455 §5.2) out of one write's bytes. */
function framesOf(bytes: Buffer): string[] {
  const out: string[] = [];
  let i = 0;
  while (i + 2 <= bytes.length) {
    const opcode = bytes[i]! & 0x0f;
    let len = bytes[i + 1]! & 0x7f;
    let at = i + 2;
    if (len === 126) {
      len = bytes.readUInt16BE(at);
      at += 2;
    } else if (len === 127) {
      len = Number(bytes.readBigUInt64BE(at));
      at += 8;
    }
    const mask = bytes.subarray(at, at + 4);
    at += 4;
    const payload = Buffer.from(bytes.subarray(at, at + len));
    for (let k = 0; k < payload.length; k++) payload[k]! ^= mask[k % 4]!;
    out.push(opcode === 0x1 ? payload.toString() : `<opcode ${opcode}>`);
    i = at + len;
  }
  return out;
}

/** Records every write of a socket connected to `port` (the client's side) until the test ends. */
function recordClientWrites(t: TestContext, port: number): Write[] {
  const writes: Write[] = [];
  const proto = net.Socket.prototype as unknown as {
    _write(chunk: Buffer, encoding: string, cb: (err?: Error) => void): void;
    _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error) => void): void;
  };
  const { _write, _writev } = proto;
  const ours = (s: net.Socket): boolean => s.remotePort === port;
  proto._write = function (this: net.Socket, chunk, encoding, cb) {
    if (ours(this)) writes.push({ at: performance.now(), frames: framesOf(Buffer.from(chunk)) });
    return _write.call(this, chunk, encoding, cb);
  };
  proto._writev = function (this: net.Socket, chunks, cb) {
    if (ours(this)) writes.push({ at: performance.now(), frames: framesOf(Buffer.concat(chunks.map((c) => Buffer.from(c.chunk)))) });
    return _writev.call(this, chunks, cb);
  };
  t.after(() => {
    proto._write = _write;
    proto._writev = _writev;
  });
  return writes;
}

async function startServer(t: TestContext): Promise<{ port: number; url: string; supervisor: Supervisor }> {
  const server = http.createServer();
  const supervisor = createSupervisor({
    server,
    path: '/s',
    sessions: {},
    timing: { closeTimeout: 300 },
    onMessage(connection, data) {
      connection.send(handleText(data.toString(), { join: () => false, leave: () => false }, connection).reply);
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  t.after(async () => {
    await supervisor.close();
    supervisor.detach();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { port, url: `ws://127.0.0.1:${port}/s`, supervisor };
}

function sessionClient(t: TestContext, url: string, options: NodeClientOptions): Client {
  const client = createClient(url, {
    requestTimeout: pace.scaled(8_000),
    ...options,
    timing: { connectTimeout: pace.scaled(2_000), closeTimeout: 300, pingInterval: 0 },
    backoff: { initialDelay: 30, maxDelay: 100 },
  });
  t.after(() => client.close());
  return client;
}

const ACK = /^\{"session":"ack","seq":(\d+)\}$/;
const ackSeq = (frame: string): number | null => {
  const m = ACK.exec(frame);
  return m ? Number(m[1]) : null;
};
const isRequest = (frame: string): boolean => /^\d+:\{"requestID"/.test(frame);

test('a count-due ack rides the next request: the ack frame, then the request, in one socket write', async (t) => {
  const srv = await startServer(t);
  const writes = recordClientWrites(t, srv.port);
  // ackEvery 4, the first ack at 4 too (random near 1: 1 + 3); the ack clock a minute away: only the count acks.
  const client = sessionClient(t, srv.url, { session: { ackEvery: 4, ackDelay: 60_000 }, random: () => 0.9999 });
  await waitFor(() => client.state === 'open' && client.sessionId !== null, 5_000, 'the session to attach');
  // A request/response loop: each reply is a data frame (seq n for request n); the next request goes in the reply's turn.
  for (let n = 1; n <= 12; n++) assert.equal((await client.request(`r${n}`)).requestID, n);
  // After the 12th reply (an ack due by count) no request follows: the ack goes alone at the end of that turn, before
  // any timer armed after the reply (Node runs timers in the order they fall due: the ack's 0 ms one comes first).
  const afterLast = writes.length;
  await delay(5);
  const lone = writes.slice(afterLast).filter((w) => w.frames.some((f) => ackSeq(f) !== null));
  assert.deepEqual(lone.map((w) => w.frames), [['{"session":"ack","seq":12}']], 'the last ack alone, and at once');
  const withAcks = writes.filter((w) => w.frames.some((f) => ackSeq(f) !== null));
  assert.deepEqual(
    withAcks.map((w) => w.frames.map((f) => ackSeq(f) ?? (isRequest(f) ? 'request' : f))),
    [[4, 'request'], [8, 'request'], [12]],
    'acks 4 and 8 in the same write as the next request (the ack first), 12 alone',
  );
  // Each is still a frame of its own, the request's cseq the next one: the wire format is unchanged.
  assert.match(withAcks[0]!.frames[1]!, /^5:\{"requestID":5,/);
  assert.match(withAcks[1]!.frames[1]!, /^9:\{"requestID":9,/);
  const deadline = performance.now() + pace.scaled(2_000);
  while ((await srv.supervisor.sessions!.store.get(client.sessionId!))?.ackedSeq !== 12) {
    assert.ok(performance.now() < deadline, 'the server holds ack 12');
    await delay(5);
  }
});

test('a time-due ack rides a request sent in the half period before its tick; with none it goes alone at the tick, within ackDelay', async (t) => {
  const srv = await startServer(t);
  const writes = recordClientWrites(t, srv.port);
  const D = pace.scaled(600);
  // The count never acks (1000); the clock's phase is the second draw.
  const draws = [0.9999, 0.5];
  const client = sessionClient(t, srv.url, { session: { ackEvery: 1000, ackDelay: D }, random: () => draws.shift() ?? 0.5 });
  await waitFor(() => client.state === 'open' && client.sessionId !== null, 5_000, 'the session to attach');

  // Alone: one request, then silence. Its reply (seq 1) is acknowledged at the clock's next tick: within D.
  await client.request('one');
  const replied = performance.now();
  await waitFor(() => writes.some((w) => w.frames.some((f) => ackSeq(f) === 1)), D + 2_000, 'the ack of seq 1');
  const lone = writes.find((w) => w.frames.some((f) => ackSeq(f) === 1))!;
  assert.deepEqual(lone.frames, ['{"session":"ack","seq":1}'], 'no request to ride: the ack alone');
  // The tick is at most D after the reply; the timer may fire late on a busy machine by up to the pace's margin.
  assert.ok(lone.at - replied <= D + pace.scaled(100), `acknowledged ${(lone.at - replied).toFixed(0)} ms after the reply (ackDelay ${D})`);

  // Riding: requests every D/10 for 3 periods, so a request always goes within the half period before each tick.
  const from = writes.length;
  const until = performance.now() + 3 * D;
  while (performance.now() < until) {
    await client.request('tick');
    await delay(D / 10);
  }
  const acks = writes.slice(from).filter((w) => w.frames.some((f) => ackSeq(f) !== null));
  assert.ok(acks.length >= 2, `the clock's ticks acknowledged the replies (${acks.length} acks in ${3 * D} ms)`);
  // Every ack but possibly the last (its window may have closed after the loop stopped sending) rode a request.
  for (const w of acks.slice(0, -1)) assert.ok(w.frames.length === 2 && isRequest(w.frames[1]!), `an ack in the same write as a request: ${JSON.stringify(w.frames)}`);
  // At most one ack per tick: the riding does not ack every reply.
  assert.ok(acks.length <= 4, `${acks.length} acks in three periods`);
});

test('close() acknowledges what arrived, in the same write as its end', async (t) => {
  const srv = await startServer(t);
  const writes = recordClientWrites(t, srv.port);
  const client = sessionClient(t, srv.url, { session: { ackEvery: 32, ackDelay: 60_000 }, random: () => 0.9999 });
  await waitFor(() => client.state === 'open' && client.sessionId !== null, 5_000, 'the session to attach');
  for (let n = 1; n <= 3; n++) await client.request(`r${n}`);
  const id = client.sessionId!;
  assert.equal((await srv.supervisor.sessions!.store.get(id))!.ackedSeq, 0, 'nothing acknowledged before close()');
  await client.close();
  const last = writes.find((w) => w.frames.some((f) => ackSeq(f) !== null));
  assert.deepEqual(last?.frames, ['{"session":"ack","seq":3}', '{"session":"end"}'], 'the ack of all three replies, then end, in one write');
});

test("a stream of large messages is acknowledged by bytes too: a client reading at full speed keeps its session under the server's default maxBytes (4 MiB)", async (t) => {
  // Measured before (the Node client and a Python one from the docs, both acking every 32 messages): 40 broadcasts of
  // 200 KB, 5 ms apart, to a session client that read each at once: closed 1008 `session buffer overflow` after 20
  // (4,200,978 unacknowledged bytes, over maxBytes 4,194,304), the session ended `overflow`: 32 messages of up to
  // maxPayload (1 MiB) each are 32 MiB, eight times what the server holds for a session.
  const srv = await startServer(t);
  const client = sessionClient(t, srv.url, { session: { ackDelay: 60_000 }, random: () => 0.9999 });
  await waitFor(() => client.state === 'open' && client.sessionId !== null, 5_000, 'the session to attach');
  const id = client.sessionId!;
  let pushes = 0;
  client.on('push', () => pushes++);
  const closes: number[] = [];
  client.on('close', (c) => closes.push(c.code));
  const big = 'x'.repeat(200_000);
  for (let i = 1; i <= 40; i++) {
    srv.supervisor.broadcast(JSON.stringify({ command: 'broadcast', someOtherThing: `b${i}:${big}` }));
    await delay(5);
  }
  await waitFor(() => pushes >= 40 || closes.length > 0, 10_000, 'the 40 pushes');
  assert.deepEqual(closes, [], 'the connection stayed (no session buffer overflow)');
  assert.equal(pushes, 40);
  assert.equal(client.sessionId, id, 'the same session');
  const held = await srv.supervisor.sessions!.store.get(id);
  assert.ok(held !== null && held.bufferedBytes <= 2 * 1024 * 1024, `the server holds at most ~1 MiB unacknowledged (${held?.bufferedBytes} bytes)`);
});
