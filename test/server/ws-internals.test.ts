/**
 * The `ws` internals the server relies on (src/server/ws-internals.ts), checked
 * against the installed `ws`: an upgrade that renames or reshapes one fails
 * here, naming it, instead of silently degrading the server (R16's peer close
 * would then only be seen at the close timeout; the writer's hot path would
 * misread backpressure).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { writeSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { createRequire } from 'node:module';
import WebSocket, * as wsModule from 'ws';
import { WebSocketServer } from 'ws';
import { encodeBinaryData, encodeTextData } from '../../src/protocol/session.ts';
import { encodeFrame, Opcode } from '../helpers/raw-ws.ts';
import { waitFor, within } from '../helpers/server.ts';
import { pace } from '../helpers/pace.ts';
import { canHoldParser, DISCARD_ALLOWANCE, frameOf, framesDirectly, NODE_HANDLE_MEMBER, observeConclude, ParserHold, PING_FRAME, receiverOf, releaseChunkList, seqFrameOf, websocketOf, writeNow, writesToFd, WS_BACK_POINTER, WS_BUFFERED_BYTES, WS_BUFFERS, WS_CONCLUDE, WS_LOOP, WS_RECEIVER_MEMBER, WS_FINAL, WS_START_LOOP, WS_WRITE } from '../../src/server/ws-internals.ts';

const require = createRequire(import.meta.url);
const WS_VERSION = (require('ws/package.json') as { version: string }).version;
/**
 * ws's exports beyond @types/ws: its Receiver and Sender classes. From the module the server uses (the test
 * bundles inline ws, scripts/bundle-tests.mjs: a require('ws') here would load a second copy from node_modules).
 */
const wsExports = wsModule as unknown as { Receiver?: new (...args: never[]) => EventEmitter; Sender?: { frame?: unknown } };
const changed = (what: string): string =>
  `ws ${WS_VERSION} changed an internal ws-supervisor relies on: ${what} (see src/server/ws-internals.ts)`;

/** A server whose upgrade socket we keep, and one client connected to it. */
async function pair(deflate = false): Promise<{ server: WebSocket; socket: Duplex; client: WebSocket; close(): Promise<void> }> {
  const http1 = http.createServer();
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: deflate });
  const accepted = new Promise<{ server: WebSocket; socket: Duplex }>((resolve) => {
    http1.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, (server) => resolve({ server, socket })));
  });
  await new Promise<void>((r) => http1.listen(0, '127.0.0.1', r));
  const { port } = http1.address() as AddressInfo;
  const client = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: deflate });
  client.on('error', () => undefined);
  const { server, socket } = await accepted;
  if (client.readyState !== WebSocket.OPEN) await new Promise((r) => client.once('open', r));
  return {
    server,
    socket,
    client,
    async close() {
      client.terminate();
      server.terminate();
      wss.close();
      await new Promise((r) => http1.close(r));
    },
  };
}

test(`ws.${WS_RECEIVER_MEMBER} is ws's Receiver, an EventEmitter that ws itself listens to for '${WS_CONCLUDE}'`, async () => {
  const p = await pair();
  try {
    const receiver = receiverOf(p.server);
    assert.ok(receiver !== undefined, changed(`an open WebSocket has no ${WS_RECEIVER_MEMBER}`));
    assert.ok(receiver instanceof EventEmitter, changed(`${WS_RECEIVER_MEMBER} is not an EventEmitter`));
    assert.equal(typeof wsExports.Receiver, 'function', changed('ws no longer exports Receiver'));
    assert.ok(receiver instanceof wsExports.Receiver!, changed(`${WS_RECEIVER_MEMBER} is not ws's Receiver`));
    assert.ok(receiver.listenerCount(WS_CONCLUDE) >= 1, changed(`ws no longer listens to its Receiver's '${WS_CONCLUDE}'`));
  } finally {
    await p.close();
  }
});

test(`ws's Receiver keeps its unparsed chunks in ${WS_BUFFERS} (emptied as it parses) and counts them in ${WS_BUFFERED_BYTES}; releaseChunkList swaps the empty list for a new one and the next messages arrive as before`, async () => {
  const p = await pair();
  try {
    const receiver = receiverOf(p.server) as unknown as Record<string, unknown>;
    const got: string[] = [];
    p.server.on('message', (data: Buffer) => got.push(data.toString()));
    p.client.send('one');
    await waitFor(() => got.length === 1, 5000, 'the first message');
    const chunks = receiver[WS_BUFFERS];
    assert.ok(Array.isArray(chunks), changed(`the Receiver has no ${WS_BUFFERS} array`));
    assert.equal(chunks.length, 0, changed(`${WS_BUFFERS} is not emptied once its frame is parsed`));
    assert.equal(receiver[WS_BUFFERED_BYTES], 0, changed(`${WS_BUFFERED_BYTES} is not 0 once every frame is parsed`));
    releaseChunkList(p.server);
    assert.notEqual(receiver[WS_BUFFERS], chunks, 'an empty chunk list is replaced');
    assert.deepEqual(receiver[WS_BUFFERS], []);
    p.client.send('two');
    p.client.send('three');
    await waitFor(() => got.length === 3, 5000, 'the next two messages');
    assert.deepEqual(got, ['one', 'two', 'three']);
  } finally {
    await p.close();
  }
});

test(`the peer's close frame: '${WS_CONCLUDE}' (code, reason Buffer) after ws echoed it, before the socket's 'close'`, async () => {
  const p = await pair();
  try {
    const receiver = receiverOf(p.server)!;
    const order: string[] = [];
    const concluded = new Promise<{ code: unknown; reason: unknown; readyState: number }>((resolve) => {
      receiver.on(WS_CONCLUDE, (code: unknown, reason: unknown) => {
        order.push('conclude');
        resolve({ code, reason, readyState: p.server.readyState });
      });
    });
    const closed = new Promise<void>((resolve) => p.server.once('close', () => resolve(void order.push('close'))));
    p.client.close(4001, 'bye');
    const c = await concluded;
    assert.equal(c.code, 4001, changed(`'${WS_CONCLUDE}' no longer passes the close code first`));
    assert.ok(Buffer.isBuffer(c.reason), changed(`'${WS_CONCLUDE}' no longer passes the reason as a Buffer`));
    assert.equal((c.reason as Buffer).toString(), 'bye');
    // ws's own listener ran first: it has answered the close frame (R16), the socket is CLOSING.
    assert.equal(c.readyState, WebSocket.CLOSING, changed(`ws had not echoed the close frame when '${WS_CONCLUDE}' reached us`));
    await closed;
    assert.deepEqual(order, ['conclude', 'close'], changed(`'${WS_CONCLUDE}' no longer comes before 'close'`));
  } finally {
    await p.close();
  }
});

test(`observeConclude: the Receiver's back-pointer (symbol '${WS_BACK_POINTER}') leads to its WebSocket; the handler runs after ws's own listener, before 'close', and adds no listener`, async () => {
  const p = await pair();
  try {
    const receiver = receiverOf(p.server)!;
    assert.equal(websocketOf(receiver), p.server, changed(`the Receiver has no '${WS_BACK_POINTER}' symbol pointing to its WebSocket`));
    const order: string[] = [];
    let seen: { ws: unknown; code: number; reason: string; readyState: number } | null = null;
    // The reader's handler in the server; here one that records (one handler per process: the test file's own process).
    const handler = (ws: WebSocket, code: number, reason: Buffer): void => {
      if (ws !== p.server) return;
      order.push('conclude');
      seen = { ws, code, reason: reason.toString(), readyState: ws.readyState };
    };
    assert.equal(observeConclude(receiver, handler), true);
    assert.equal(receiver.listenerCount(WS_CONCLUDE), 1, "no listener of ours: ws's stays the only one (no listener array)");
    const closed = new Promise<void>((resolve) => p.server.once('close', () => resolve(void order.push('close'))));
    p.client.close(4002, 'later');
    await closed;
    assert.deepEqual(seen, { ws: p.server, code: 4002, reason: 'later', readyState: WebSocket.CLOSING }, changed("the observed 'conclude' no longer follows ws's echo of the close frame"));
    assert.deepEqual(order, ['conclude', 'close']);
  } finally {
    await p.close();
  }
});

test('ws.send (no permessage-deflate) writes the frame to the upgrade socket synchronously', async () => {
  const p = await pair();
  try {
    const socket = p.socket as Duplex & { bytesWritten: number };
    const before = socket.bytesWritten;
    p.server.send('hello'); // a 2-byte header + 5 bytes of payload
    assert.equal(socket.bytesWritten - before, 7, changed('ws.send no longer writes to the upgrade socket before it returns (the writer reads writableLength right after it)'));
    const got = await new Promise<string>((r) => p.client.once('message', (d: Buffer) => r(d.toString())));
    assert.equal(got, 'hello');
  } finally {
    await p.close();
  }
});

test("ws's Sender.frame frames an unmasked text frame (the reference frameOf is checked against)", () => {
  const frame = wsExports.Sender?.frame;
  assert.equal(typeof frame, 'function', changed('ws no longer exports Sender.frame'));
  const parts = (frame as (data: Buffer, o: object) => Buffer[])(Buffer.from('hi'), { fin: true, opcode: 1, mask: false, readOnly: false, rsv1: false });
  assert.ok(Array.isArray(parts), changed('Sender.frame no longer returns a list of Buffers'));
  assert.deepEqual([...Buffer.concat(parts)], [0x81, 0x02, 0x68, 0x69], changed('Sender.frame produced another frame for "hi"'));
});

type SenderFrame = (data: Buffer | string, o: object) => Buffer[];
/** ws's own framing of one whole unmasked message, as one Buffer. */
function wsFrame(data: Buffer, opcode: number): Buffer {
  return Buffer.concat((wsExports.Sender!.frame as SenderFrame)(data, { fin: true, opcode, mask: false, readOnly: false, rsv1: false }));
}

test("frameOf and PING_FRAME make byte for byte the frames ws's Sender makes, at every header length", () => {
  for (const n of [0, 1, 125, 126, 127, 65_535, 65_536, 70_000]) {
    const text = 'é'.repeat(Math.floor(n / 2)) + 'x'.repeat(n % 2); // n bytes of UTF-8, multi-byte characters included
    const bytes = Buffer.from(text);
    assert.equal(bytes.length, n);
    assert.ok(frameOf(text, false).equals(wsFrame(bytes, 1)), changed(`a ${n}-byte text frame differs from ws's`));
    assert.ok(frameOf(bytes, false).equals(wsFrame(bytes, 1)), changed(`a ${n}-byte text frame (from a Buffer) differs from ws's`));
    assert.ok(frameOf(bytes, true).equals(wsFrame(bytes, 2)), changed(`a ${n}-byte binary frame differs from ws's`));
  }
  assert.ok(PING_FRAME.equals(wsFrame(Buffer.alloc(0), 0x9)), changed("the ping frame differs from ws's"));
});

test('seqFrameOf makes the frame of `<seq>:payload` byte for byte as ws frames encodeTextData / encodeBinaryData, at every header and seq length', () => {
  const seqs = [1, 9, 10, 99, 100, 12_345, 99_999, 100_000, 4_294_967_296 + 7, Number.MAX_SAFE_INTEGER];
  for (const n of [0, 1, 120, 125, 126, 65_520, 65_535, 65_536, 70_000]) {
    const text = 'é'.repeat(Math.floor(n / 2)) + 'x'.repeat(n % 2);
    const bytes = Buffer.from(text);
    for (const seq of seqs) {
      const asText = Buffer.from(encodeTextData(seq, text));
      const asBinary = Buffer.from(encodeBinaryData(seq, bytes));
      assert.ok(seqFrameOf(seq, text, false).equals(wsFrame(asText, 1)), `seq ${seq}, ${n}-byte text payload`);
      assert.ok(seqFrameOf(seq, bytes, false).equals(wsFrame(asText, 1)), `seq ${seq}, ${n}-byte payload from a Buffer, as text`);
      assert.ok(seqFrameOf(seq, bytes, true).equals(wsFrame(asBinary, 2)), `seq ${seq}, ${n}-byte binary payload`);
    }
  }
  // A short frame after it, in the same Buffer: the two frames ws would write one after the other.
  const ack = '{"session":"ack","cseq":32}';
  assert.ok(seqFrameOf(7, 'hello', false, ack).equals(Buffer.concat([wsFrame(Buffer.from('7:hello'), 1), wsFrame(Buffer.from(ack), 1)])));
  assert.ok(seqFrameOf(7, Buffer.from('x'.repeat(300)), true, ack).equals(Buffer.concat([wsFrame(Buffer.from('7:' + 'x'.repeat(300)), 2), wsFrame(Buffer.from(ack), 1)])));
  assert.throws(() => seqFrameOf(1, 'x', false, 'é'), RangeError);
  assert.throws(() => seqFrameOf(1, 'x', false, 'x'.repeat(126)), RangeError);
});

test('frames written to the upgrade socket beside ws (no permessage-deflate): ws queues nothing, the peer reads them in socket order with ws\'s ping and close', async () => {
  const p = await pair();
  try {
    assert.equal(framesDirectly(p.server), true);
    const sender = (p.server as unknown as { _sender?: { _queue?: unknown[]; _bufferedBytes?: number } })._sender;
    const got: string[] = [];
    p.client.on('message', (d: Buffer, isBinary: boolean) => got.push(`${isBinary ? 'bin' : 'text'}:${d.toString()}`));
    p.client.on('ping', (d: Buffer) => got.push(`ping:${d.length}`));
    const closed = new Promise<number>((r) => p.client.once('close', (code: number) => r(code)));
    p.socket.cork(); // as the writer corks: ws's own frames join the same batch, in order
    p.socket.write(frameOf('one', false));
    p.server.send('two');
    p.socket.write(frameOf(Buffer.from('three'), true));
    p.server.ping(Buffer.alloc(8));
    p.socket.write(PING_FRAME);
    p.socket.write(frameOf('four', false));
    p.server.close(4002, 'done');
    p.socket.uncork();
    assert.equal(sender?._queue?.length ?? 0, 0, changed("ws's Sender queued a frame with permessage-deflate off"));
    assert.equal(sender?._bufferedBytes ?? 0, 0, changed("ws's Sender buffered bytes with permessage-deflate off"));
    assert.equal(await closed, 4002);
    assert.deepEqual(got, ['text:one', 'text:two', 'bin:three', 'ping:8', 'ping:0', 'text:four'], changed('frames written beside ws did not arrive in socket order'));
  } finally {
    await p.close();
  }
});

/** Counts the writes that reach the socket's Writable (`_write`/`_writev`), as test/helpers/server.ts countWrites. */
function streamWrites(socket: Duplex): { count: number } {
  const s = socket as unknown as Record<'_write' | '_writev', (...a: unknown[]) => unknown>;
  const counter = { count: 0 };
  for (const name of ['_write', '_writev'] as const) {
    const original = s[name];
    s[name] = function (this: unknown, ...a: unknown[]) {
      counter.count++;
      return original.apply(this, a);
    };
  }
  return counter;
}

const nodeChanged = (what: string): string => `Node ${process.version} changed an internal ws-supervisor relies on: ${what} (see src/server/ws-internals.ts, item 7)`;

const encodersChanged = (what: string): string => `Node ${process.version} changed an internal ws-supervisor relies on: ${what} (see src/server/ws-internals.ts, item 8)`;

test("Buffer's own encoders (item 8) write what buf.write writes; frameOf and seqFrameOf frame ASCII text (the Latin-1 copy), other text and lone surrogates (UTF-8) as ws does", () => {
  const proto = Buffer.prototype as unknown as Record<string, unknown>;
  for (const name of ['latin1Write', 'utf8Write']) assert.equal(typeof proto[name], 'function', encodersChanged(`Buffer.prototype.${name} is gone (frameOf and the memory session store write with it)`));
  for (const text of ['', 'x', '{"requestID":1,"success":true}', 'x'.repeat(125), 'x'.repeat(126), 'x'.repeat(70_000), 'é', 'aé', '€x', '😀', '\ud800', 'a\udc00b', '\u0080'.repeat(3), '\u007f']) {
    const bytes = Buffer.from(text);
    const a = Buffer.alloc(bytes.length + 2, 0xee);
    const b = Buffer.alloc(bytes.length + 2, 0xee);
    a.write(text, 1, bytes.length, 'utf8');
    const e = b as Buffer & { latin1Write(s: string, o: number, n: number): number; utf8Write(s: string, o: number, n: number): number };
    const written = bytes.length === text.length ? e.latin1Write(text, 1, bytes.length) : e.utf8Write(text, 1, bytes.length);
    assert.equal(written, bytes.length, encodersChanged(`an encoder wrote ${written} of ${bytes.length} bytes`));
    assert.ok(a.equals(b), encodersChanged(`Buffer's encoder wrote other bytes than buf.write for ${JSON.stringify(text)}`));
    assert.ok(frameOf(text, false).equals(wsFrame(bytes, 1)), `frameOf ${JSON.stringify(text.slice(0, 20))}`);
    assert.ok(seqFrameOf(42, text, false).equals(wsFrame(Buffer.from(encodeTextData(42, text)), 1)), `seqFrameOf ${JSON.stringify(text.slice(0, 20))}`);
  }
});


test(`a plain TCP upgrade socket keeps its descriptor at ${NODE_HANDLE_MEMBER}.fd; writeNow puts the ping there (not through the stream) in order with ws's frames; a TLS socket is never written that way`, { skip: process.platform === 'win32' ? 'no descriptors for sockets on Windows: writesToFd is false there' : false }, async () => {
  const p = await pair();
  try {
    const handle = (p.socket as unknown as Record<string, { fd?: unknown; constructor: { name: string } } | null>)[NODE_HANDLE_MEMBER];
    assert.ok(handle != null, nodeChanged(`a net.Socket has no ${NODE_HANDLE_MEMBER}`));
    assert.equal(handle.constructor.name, 'TCP', nodeChanged(`a TCP socket's ${NODE_HANDLE_MEMBER} is no longer a TCP handle`));
    assert.equal(typeof handle.fd, 'number', nodeChanged(`${NODE_HANDLE_MEMBER}.fd is not a number`));
    assert.ok((handle.fd as number) >= 0, nodeChanged(`${NODE_HANDLE_MEMBER}.fd of an open socket is ${String(handle.fd)}`));
    assert.equal(writesToFd(p.socket), true);
    assert.equal((p.socket as Duplex & { timeout?: number }).timeout, 0, changed('ws no longer sets the upgrade socket\'s timeout to 0 (writeNow would then always go through the stream)'));

    const got: string[] = [];
    p.client.on('message', (d: Buffer) => got.push(`text:${d.toString()}`));
    p.client.on('ping', (d: Buffer) => got.push(`ping:${d.length}`));
    const writes = streamWrites(p.socket);
    p.server.send('one');
    writeNow(p.socket, PING_FRAME);
    p.server.send('two');
    assert.equal(writes.count, 2, 'the two sends went through the stream, the ping did not');
    await waitFor(() => got.length === 3, 5000, 'the three frames');
    assert.deepEqual(got, ['text:one', 'ping:0', 'text:two'], nodeChanged('a frame written to the descriptor did not arrive between the frames written before and after it'));

    // What the descriptor does not take goes through the stream, after the part that left.
    const fd = handle.fd as number;
    writeNow(p.socket, PING_FRAME, (f, b) => writeSync(f, b.subarray(0, 1))); // a partial write: 1 byte of 2
    assert.equal(fd, (p.socket as unknown as Record<string, { fd: number }>)[NODE_HANDLE_MEMBER]!.fd);
    writeNow(p.socket, PING_FRAME, () => {
      throw Object.assign(new Error('EAGAIN: resource temporarily unavailable, write'), { code: 'EAGAIN' });
    });
    p.server.send('three');
    assert.equal(writes.count, 5, 'the rest of the partial ping, the refused ping and the send went through the stream');
    await waitFor(() => got.length === 6, 5000, 'the three frames');
    assert.deepEqual(got.slice(3), ['ping:0', 'ping:0', 'text:three']);

    // An idle timeout on the socket: the stream's write refreshes it, so the ping goes that way.
    (p.socket as net.Socket).setTimeout(60_000);
    writeNow(p.socket, PING_FRAME);
    assert.equal(writes.count, 6, 'a socket with a timeout is written through the stream');
    (p.socket as net.Socket).setTimeout(0);
    await waitFor(() => got.length === 7, 5000, 'the ping');

    // A TLS socket (its handle is a TLSWrap, its bytes must be encrypted): never.
    const tlsSocket = new tls.TLSSocket(new net.Socket());
    try {
      assert.equal(writesToFd(tlsSocket), false, 'a TLS socket is not written to its descriptor');
    } finally {
      tlsSocket.destroy();
    }
  } finally {
    await p.close();
  }
});

test("Node counts a write libuv has not finished in the socket's writableLength (writeNow's order rests on it), and a destroyed socket has no handle", async () => {
  const p = await pair();
  try {
    // The client stops reading: the kernel's buffers fill and libuv keeps the rest of a big write.
    (p.client as unknown as { _socket: Duplex })._socket.pause();
    const big = Buffer.alloc(32 * 1024 * 1024);
    let done = false;
    p.socket.write(big, () => (done = true));
    assert.equal(done, false);
    assert.ok(p.socket.writableLength > 0, nodeChanged('a write libuv is still sending does not count in writableLength'));
    const pending = p.socket.writableLength;
    writeNow(p.socket, PING_FRAME);
    assert.equal(p.socket.writableLength, pending + PING_FRAME.length, 'behind a pending write, the ping goes through the stream (after it)');
    p.socket.destroy();
    assert.equal((p.socket as unknown as Record<string, unknown>)[NODE_HANDLE_MEMBER], null, nodeChanged(`a destroyed socket still has a ${NODE_HANDLE_MEMBER}`));
    assert.doesNotThrow(() => writeNow(p.socket, PING_FRAME));
  } finally {
    await p.close();
  }
});

test('framesDirectly is false once permessage-deflate is negotiated (the writer then leaves framing to ws)', async () => {
  const p = await pair(true);
  try {
    assert.notEqual(p.server.extensions, '', 'permessage-deflate was negotiated');
    assert.equal(framesDirectly(p.server), false);
  } finally {
    await p.close();
  }
});

test(`ws's Receiver parse loop (${WS_START_LOOP}, ${WS_LOOP}) can be held between two messages: the rest stays bytes, ws pauses the socket, and parsing goes on in order on release`, { timeout: 20_000 }, async () => {
  const p = await pair();
  try {
    const receiver = receiverOf(p.server) as unknown as Record<string, unknown>;
    assert.equal(typeof receiver[WS_START_LOOP], 'function', changed(`the Receiver has no ${WS_START_LOOP}()`));
    assert.equal(typeof receiver[WS_LOOP], 'boolean', changed(`the Receiver has no boolean ${WS_LOOP}`));
    assert.ok(canHoldParser(receiverOf(p.server)));
    const hold = new ParserHold(receiverOf(p.server)!);
    const got: number[] = [];
    let every = 10;
    p.server.on('message', (data) => {
      got.push(Number(data.toString().slice(0, 8)));
      if (got.length % every === 0) hold.hold();
    });
    const N = 2_000; // 200 KB: more than the Receiver (16 KiB) and the socket (16–64 KiB) buffer before pushing back
    for (let i = 0; i < N; i++) p.client.send(String(i).padStart(8, '0') + 'x'.repeat(92));
    const settle = async (): Promise<void> => {
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
      await new Promise((r) => setTimeout(r, 50));
    };
    await settle();
    assert.equal(got.length, 10, changed('setting _loop = false in a message listener did not end the parse loop'));
    assert.equal(hold.held, true);
    assert.ok(p.socket.isPaused(), changed("ws did not pause the socket while its Receiver's write was unfinished"));
    for (let k = 1; k <= 3; k++) {
      hold.release();
      assert.equal(got.length, 10 * (k + 1), 'release parses on, synchronously, up to the next hold');
    }
    every = Infinity;
    while (got.length < N) {
      if (hold.held) hold.release();
      await settle();
    }
    assert.deepEqual(got, Array.from({ length: N }, (_, i) => i), 'every message once, in order');
    assert.ok(!p.socket.isPaused(), 'the socket is resumed once the Receiver has taken everything');
  } finally {
    await p.close();
  }
});

/** 200 numbered text frames of 100 bytes each (21 KB: one read on the server), as the peer writes them. */
const NUMBERED_FRAMES = 200;
const numberedFrames = (): Buffer =>
  Buffer.concat(Array.from({ length: NUMBERED_FRAMES }, (_, i) => encodeFrame({ opcode: Opcode.TEXT, payload: String(i).padStart(8, '0') + 'x'.repeat(92) })));

/**
 * The server side of `p` records the numbers of the messages it gets, and is held at the 10th from inside a parse
 * loop ws runs itself (as the reader's first hold: ws calls that write's callback when the loop ends, the bytes after
 * it unparsed); `closedAt` is set when ws emits 'close', by `at`.
 */
function holdAtTenth(p: Awaited<ReturnType<typeof pair>>, at: () => number): { got: number[]; hold: () => ParserHold | null; closedAt: () => number } {
  let hold: ParserHold | null = null;
  let closedAt = -1;
  const got: number[] = [];
  p.server.on('message', (data) => {
    got.push(Number(data.toString().slice(0, 8)));
    if (got.length === 10) (hold = new ParserHold(receiverOf(p.server)!)).hold();
  });
  p.server.once('close', () => (closedAt = at()));
  return { got, hold: () => hold, closedAt: () => closedAt };
}

test(`a hold keeps ws's Receiver from finishing (Node's Writable ${WS_FINAL}): on the peer's FIN, ws's 'close' waits until the held bytes are parsed, in order`, { timeout: 20_000 }, async () => {
  const p = await pair();
  try {
    const held = holdAtTenth(p, () => held.got.length);
    const { got } = held;
    // 21 KB in one write (one read on the server, so the hold falls inside ws's loop over it), then the FIN (no
    // close frame). Written under the client's WebSocket, which is only its TCP socket's holder here.
    const N = NUMBERED_FRAMES;
    (p.client as unknown as { _socket: net.Socket })._socket.end(numberedFrames());
    await waitFor(() => (p.socket as net.Socket).readableEnded, 5_000, "the server socket's end");
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(got.length, 10, 'held: nothing more parsed');
    // Node's Writable calls an instance _final before 'finish'; ws's 'close' waits for 'finish'.
    assert.equal(held.closedAt(), -1, changed("ws emitted 'close' with the held bytes unparsed (its Receiver finished without calling _final)"));
    held.hold()!.release();
    await waitFor(() => held.closedAt() !== -1, 5_000, "ws's 'close'");
    assert.equal(held.closedAt(), N, "every message before ws's 'close'");
    assert.deepEqual(got, Array.from({ length: N }, (_, i) => i), 'every message once, in order');
  } finally {
    await p.close();
  }
});

test(`a hold's kept ${WS_FINAL} ends with discard(): ws's input ended while held (the peer's FIN, or our terminate()) has ws's 'close' wait, and discard() lets it come at once, nothing more parsed`, { timeout: 20_000 }, async () => {
  const frames = numberedFrames();
  for (const end of ['fin', 'terminate'] as const) {
    const p = await pair();
    try {
      const { got, hold, closedAt } = holdAtTenth(p, () => performance.now());
      const clientSocket = (p.client as unknown as { _socket: net.Socket })._socket;
      if (end === 'fin') {
        clientSocket.end(frames);
        await waitFor(() => (p.socket as net.Socket).readableEnded, 5_000, "the server socket's end");
      } else {
        clientSocket.write(frames);
        await waitFor(() => hold() !== null, 5_000, 'the hold');
        p.server.terminate();
        await waitFor(() => p.socket.destroyed, 5_000, 'the server socket destroyed');
      }
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(got.length, 10, `${end}: held, nothing more parsed`);
      // Nothing but the hold's owner ends this wait: the reader does it at its next turn (release) or when it stops (discard).
      assert.equal(closedAt(), -1, `${end}: ws's 'close' waits for the held bytes`);
      assert.equal((p.server as unknown as { _receiver: { _writableState: { ending: boolean } } })._receiver._writableState.ending, true, `${end}: ws ended its Receiver`);
      const t0 = performance.now();
      hold()!.discard();
      await waitFor(() => closedAt() !== -1, 5_000, `${end}: ws's 'close'`);
      // discard() completes the kept _final synchronously; 'finish' (and ws's 'close') follow within a few ticks.
      assert.ok(closedAt() - t0 < pace.scaled(100), `${end}: ws's 'close' ${(closedAt() - t0).toFixed(1)} ms after discard()`);
      assert.equal(got.length, 10, `${end}: the held bytes were dropped, not parsed`);
    } finally {
      await p.close();
    }
  }
});

test(`ws's Receiver can discard its input (${WS_WRITE}, ${WS_BUFFERS}, ${WS_BUFFERED_BYTES}): nothing more is parsed, ws still reads the socket, and 'close' still comes`, { timeout: 20_000 }, async () => {
  const p = await pair();
  try {
    const receiver = receiverOf(p.server) as unknown as Record<string, unknown>;
    assert.equal(typeof receiver[WS_WRITE], 'function', changed(`the Receiver has no ${WS_WRITE}()`));
    assert.ok(Array.isArray(receiver[WS_BUFFERS]), changed(`the Receiver has no ${WS_BUFFERS} array`));
    assert.equal(typeof receiver[WS_BUFFERED_BYTES], 'number', changed(`the Receiver has no number ${WS_BUFFERED_BYTES}`));
    const hold = new ParserHold(receiverOf(p.server)!);
    let got = 0;
    p.server.on('message', () => {
      if (++got === 10) hold.discard();
    });
    const N = 2_000; // 200 KB, sent in one go: most of it is read after the discard
    for (let i = 0; i < N; i++) p.client.send('x'.repeat(100));
    const sent = new Promise<void>((r) => p.client.send('last', () => r()));
    await sent;
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(got, 10, changed('messages were parsed after the discard'));
    assert.equal(hold.discarding, true);
    assert.equal(receiver[WS_BUFFERED_BYTES], 0, 'no bytes kept');
    assert.ok(hold.discarded > 0, changed('the discarding _write was not called for later chunks'));
    assert.ok(hold.discarded <= DISCARD_ALLOWANCE + 65_536, `${hold.discarded} bytes discarded`);
    // The client goes away: ws ends its discarding Receiver, which finishes (no write is kept), so ws emits 'close' as ever.
    const closed = new Promise<number>((r) => p.server.once('close', (code) => r(code)));
    p.client.terminate();
    // within() clears its guard timer: a raw 5 s timer kept the file's process alive 5 s after its last test.
    assert.equal(typeof (await within(closed, 5_000)), 'number', changed("ws emitted no 'close' for a discarding Receiver"));
  } finally {
    await p.close();
  }
});
