/**
 * Every use of `ws` internals, in one place (any use of `ws` internals is
 * isolated in one module). `ws` is pinned to 8.x; its
 * underscore members and undocumented events may change in any release, so
 * test/server/ws-internals.test.ts checks each one against the installed `ws`
 * and fails, naming the member, when an upgrade moves it.
 *
 * What the server relies on beyond `ws`'s documented API:
 *   1. `ws._receiver`, the frame parser (ws/lib/receiver.js): an EventEmitter
 *      that emits 'conclude' (code: number, reason: Buffer) when the peer's
 *      close frame arrives. ws has no public event for it (its 'close' comes
 *      only once TCP is closed); ws's own 'conclude' listener, registered
 *      first, has echoed the close frame (readyState CLOSING) by the time ours
 *      runs. The reader learns of it for R16 (`socket.closing`) through
 *      `observeConclude`: not as a second listener (that turns the
 *      Receiver's listener entry into an array, ~64 bytes per connection) but
 *      through one shared `emit` set on the Receiver, which runs ws's own
 *      listener first, then ours. It finds the WebSocket through the
 *      Receiver's back-pointer, ws's `kWebSocket` symbol (description
 *      'websocket', set by `setSocket`).
 *   2. `ws.send` with permessage-deflate off writes the frame to the upgrade
 *      socket synchronously, so the writer (src/server/writer.ts) reads the
 *      socket's `writableLength` right after a send to learn whether the OS
 *      took it. Not a member name, a behaviour: the test checks it.
 *   3. Frames written straight to the upgrade socket, beside `ws`: with
 *      permessage-deflate off, `ws`'s Sender keeps no state between whole
 *      messages and never queues a frame (it queues only while deflating or
 *      reading a Blob, neither of which the server does), so a complete
 *      frame the writer puts on the socket itself (`frameOf`, `PING_FRAME`)
 *      is indistinguishable from one `ws.send` / `ws.ping` would have written,
 *      and frames from both stay in socket order. That is what lets the
 *      writer frame a message in one Buffer (one write instead of `ws`'s
 *      header + payload pair), frame a broadcast once for every receiver, and
 *      cork a socket for the rest of an event-loop turn (src/server/writer.ts).
 *      `framesDirectly` says whether a socket qualifies (no extension
 *      negotiated); the test checks the frames byte for byte against
 *      `ws`'s own `Sender.frame` and the interleaving against `ws.ping`/`ws.close`.
 *   4. The Receiver's parse loop: the Receiver is a Writable whose
 *      `_write(chunk, _, cb)` appends the chunk to its buffered bytes and calls
 *      `startLoop(cb)`, which parses frame after frame, emitting each message
 *      synchronously, while its `_loop` is true, and calls `cb()` when the
 *      bytes run out. A 'message' listener that sets `_loop = false` ends the
 *      loop after that message (ws does the same itself to wait for more
 *      bytes); the frames after it stay unparsed bytes. While `cb` is kept,
 *      the Writable is busy: later chunks queue in it and, past its high-water
 *      mark, ws pauses the socket itself (its 'data' listener) and resumes it
 *      on the Writable's 'drain'. `ParserHold` below does exactly that for the
 *      fair scheduler (src/server/scheduler.ts): a peer over its share of a
 *      turn keeps its frames as bytes in `ws` and the kernel, not as parsed
 *      messages in ours, and nothing is parsed for it until its next turn.
 *      A hold installed inside a loop ws runs itself cannot keep that loop's
 *      `cb` (ws calls it), so the Writable could finish with held bytes
 *      unparsed when the peer's input ends (its FIN): the hold also sets the
 *      Receiver's `_final` (Node's Writable calls it, if set, before
 *      'finish'), which waits until the held bytes are parsed or dropped;
 *      ws's 'close' waits for 'finish', so the peer's last messages still
 *      come, in order, before it.
 *   5. The Receiver's chunk list: `_buffers`, the chunks not parsed yet (an
 *      array ws pushes each read to and shifts as it parses), and
 *      `_bufferedBytes`, their byte count. An array once pushed to keeps its
 *      backing store (~150 bytes) when shifted empty: a connection that sent
 *      one frame and went quiet (a session's `open`) holds it for its whole
 *      life. `releaseChunkList` swaps an empty list for a fresh `[]` (no
 *      backing store) while nothing is buffered, which ws cannot tell apart.
 *   6. The Receiver's `_write` and its buffered bytes (`_buffers`,
 *      `_bufferedBytes`): once a peer is over a budget (R21, the connection is
 *      closing 1008), `ParserHold.discard()` empties the bytes not yet parsed
 *      and sets an instance `_write` that drops every later chunk and calls
 *      back at once, unparsed (ws does the same itself after a close frame).
 *      The Writable still ends and finishes, so ws still emits 'close'; the
 *      socket flows until `DISCARD_ALLOWANCE` bytes were dropped (a well-behaved
 *      peer's last frames and its FIN come within it), then ws pauses it and
 *      TCP pushes back on the peer until the close timeout ends the socket.
 *   7. Node's, not ws's: a plain TCP (or pipe) socket's file descriptor, for
 *      the heartbeat's ping and the first frame a connection writes in a turn
 *      (a reply, a fan-out's frame: `writeNow`). A `net.Socket` keeps its libuv handle
 *      in `_handle` (a `TCP` or `Pipe` object; TLS has a `TLSWrap` there, whose
 *      bytes must be encrypted, and is never written to this way), and the
 *      handle's `fd` is the descriptor (-1 once closed, and on Windows). While
 *      the socket's `writableLength` is 0 nothing it was given is still
 *      waiting, in the Writable or in libuv's write queue (Node counts a
 *      pending write until its callback), so a frame written to the
 *      descriptor now with `fs.writeSync` leaves after everything written
 *      before it, as `socket.write` would have put it, and a later
 *      `socket.write` leaves after it. A socket with an idle timeout
 *      (`socket.timeout`: ws sets 0) is written through the stream, which
 *      refreshes that timer; so is every socket while anything waits. What
 *      the descriptor does not take at once (its kernel buffer is full:
 *      EAGAIN, or a partial write) goes through the stream after the part
 *      that left; an error (EPIPE, ECONNRESET) is met again by that stream
 *      write, which handles it as it handles any write error. The bytes do
 *      not count in `socket.bytesWritten`. Why: the Writable's work around a
 *      2-byte ping (`Writable.write`, `Socket._write`, a write request,
 *      `onwrite` and its after-write tick) is as much again as the JS that
 *      writes it this way, once per connection per ping interval
 *      (docs/performance.md, "Heartbeat, fifth pass"), and the same work
 *      around every reply, less `fs.writeSync`'s own trace-event checks
 *      (docs/performance.md, "Request/response, 2026-12-06").
 *   8. Node's too: Buffer's own encoders `latin1Write` and `utf8Write`
 *      (`Encoders`), what `buf.write` calls once it has checked its arguments.
 *      The frames here are sized first, so the checks are done; the memory
 *      session store writes its arena with them the same way.
 */
import type { EventEmitter } from 'node:events';
import { writeSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import type WebSocket from 'ws';

/** ws's Receiver: the parts we use. */
export type WsReceiver = EventEmitter;

/** The Receiver event for the peer's close frame: (code: number, reason: Buffer). */
export const WS_CONCLUDE = 'conclude';

/** The name of the member holding a WebSocket's Receiver (set once the socket is open). */
export const WS_RECEIVER_MEMBER = '_receiver';

/** ws's frame parser of an open socket; undefined before the socket is set (or if a ws upgrade renamed it). */
export function receiverOf(ws: WebSocket): WsReceiver | undefined {
  return (ws as unknown as Record<typeof WS_RECEIVER_MEMBER, WsReceiver | undefined>)[WS_RECEIVER_MEMBER];
}

/** The Receiver's chunk list and its byte count (items 5 and 6): the member names, checked by the test. */
export const WS_BUFFERS = '_buffers';
export const WS_BUFFERED_BYTES = '_bufferedBytes';

/**
 * Whether `ws`'s Receiver has parsed every byte it was given (items 4 and 5:
 * its `_bufferedBytes` is 0; ws takes a frame's payload out of its chunks
 * before it emits the message, so from a 'message' listener this says the
 * message being delivered is the last of what ws has read). The fair
 * scheduler then defers a peer's message without holding the parser: ws's
 * loop ends by itself, and the hold is installed if the peer's next bytes
 * come before its turn (src/server/reader.ts). False when unknown (no
 * Receiver, or a ws upgrade renamed the member): hold, as before.
 */
export function parsedAll(receiver: WsReceiver | undefined): boolean {
  return receiver !== undefined && (receiver as unknown as Record<string, unknown>)[WS_BUFFERED_BYTES] === 0;
}

/**
 * Lets go of the backing store of `ws`'s Receiver's chunk list when nothing
 * is buffered (item 5): for a connection about to sit idle. A no-op while
 * bytes wait, and when a ws upgrade renamed the members.
 */
export function releaseChunkList(ws: WebSocket): void {
  const receiver = receiverOf(ws) as unknown as Record<string, unknown> | undefined;
  if (receiver === undefined) return;
  const chunks = receiver[WS_BUFFERS];
  if (receiver[WS_BUFFERED_BYTES] === 0 && Array.isArray(chunks) && chunks.length === 0) receiver[WS_BUFFERS] = [];
}

/** The description of ws's `kWebSocket` symbol, the Receiver's back-pointer to its WebSocket (item 1). */
export const WS_BACK_POINTER = 'websocket';

type ConcludeHandler = (ws: WebSocket, code: number, reason: Buffer) => void;
let kWebSocket: symbol | null | undefined;
let concludeHandler: ConcludeHandler | null = null;
let protoEmit: ((this: EventEmitter, event: string | symbol, ...args: unknown[]) => boolean) | undefined;

/** ws's back-pointer from a Receiver to its WebSocket (item 1); undefined if a ws upgrade removed it. */
export function websocketOf(receiver: WsReceiver): WebSocket | undefined {
  if (kWebSocket === undefined) kWebSocket = Object.getOwnPropertySymbols(receiver).find((s) => s.description === WS_BACK_POINTER) ?? null;
  return kWebSocket === null ? undefined : ((receiver as unknown as Record<symbol, WebSocket | undefined>)[kWebSocket] ?? undefined);
}

/**
 * The Receiver's `emit` once observed (one function for every Receiver:
 * `this` is the Receiver). ws's listeners run first, as they did; then, for
 * 'conclude', the handler. ws emits at most two arguments.
 */
function observedEmit(this: EventEmitter, event: string | symbol, a?: unknown, b?: unknown): boolean {
  const n = arguments.length;
  const result = n === 1 ? protoEmit!.call(this, event) : n === 2 ? protoEmit!.call(this, event, a) : n === 3 ? protoEmit!.call(this, event, a, b) : protoEmit!.apply(this, Array.prototype.slice.call(arguments) as [string]);
  if (event === WS_CONCLUDE) {
    const ws = websocketOf(this);
    if (ws !== undefined) concludeHandler!(ws, a as number, b as Buffer);
  }
  return result;
}

/**
 * Calls `handler(ws, code, reason)` when the peer's close frame arrives on
 * `receiver`, after ws's own listener (item 1). `handler` is one function for
 * the whole process (it looks up what it needs on `ws`). False when this ws
 * has no back-pointer (then the peer's close is only seen when TCP closes,
 * bounded by the close timeout).
 */
export function observeConclude(receiver: WsReceiver, handler: ConcludeHandler): boolean {
  if (websocketOf(receiver) === undefined) return false;
  if (concludeHandler !== null && concludeHandler !== handler) throw new Error('observeConclude: one handler per process');
  concludeHandler = handler;
  protoEmit ??= (Object.getPrototypeOf(receiver) as EventEmitter).emit;
  if (receiver.emit !== observedEmit) receiver.emit = observedEmit;
  return true;
}

/** The Receiver's parse loop (item 4): the member names, checked by the test. */
export const WS_START_LOOP = 'startLoop';
export const WS_LOOP = '_loop';
/** The Receiver's Writable `_write` (item 6; its unparsed bytes are WS_BUFFERS, WS_BUFFERED_BYTES above). */
export const WS_WRITE = '_write';
/** Node's Writable `_final` (item 4), which the Writable calls, if set, before it emits 'finish'. */
export const WS_FINAL = '_final';

/**
 * Bytes a discarding Receiver still takes from the socket before ws pauses it
 * (item 6): a peer that stops sending when it reads our close frame (a client
 * over a budget) has its last frames and its FIN read within it, so its close
 * ends at once; a flooder's further bytes cost no more than this, then TCP
 * pushes back on it until the close timeout.
 */
export const DISCARD_ALLOWANCE = 1 << 20;

type LoopCallback = (err?: Error | null) => void;
const HOLD = Symbol('ws-supervisor.hold');
interface ParseLoop {
  [WS_START_LOOP]: (cb: LoopCallback) => void;
  [WS_LOOP]: boolean;
  [WS_WRITE]: (chunk: Buffer, encoding: string, cb: LoopCallback) => void;
  [WS_FINAL]?: (cb: LoopCallback) => void;
  [WS_BUFFERS]: Buffer[];
  [WS_BUFFERED_BYTES]: number;
  readonly destroyed: boolean;
  destroy(err?: Error): void;
  [HOLD]?: ParserHold;
}

/** ws's own `startLoop` (from the Receiver's prototype), captured at the first hold. */
let protoStartLoop: ((this: ParseLoop, cb: LoopCallback) => void) | undefined;

/** The callback of a loop the hold restarted itself (no `_write` waiting on it): errors go to the Receiver as `_write`'s would. */
function outOfBand(): void {}

/**
 * The Receiver's `startLoop` while a hold is installed (one function for
 * every Receiver: `this` is the Receiver). Held: the write's callback is kept
 * and nothing is parsed. Otherwise ws's own loop runs, and if a 'message'
 * listener held the parser meanwhile, the callback is kept instead of called.
 */
function heldStartLoop(this: ParseLoop, cb: LoopCallback): void {
  const hold = this[HOLD];
  if (hold === undefined) return protoStartLoop!.call(this, cb);
  if (hold.held) return hold.park(cb);
  protoStartLoop!.call(this, (err) => {
    if (!err && hold.held) return hold.park(cb);
    if (cb !== outOfBand) cb(err);
    else if (err) this.destroy(err); // what the Writable does with an error from `_write`
    if (!err) hold.finishIfKept(); // the bytes ran out unheld: an `end()` that was waiting for them completes now
  });
}

/**
 * The Receiver's `_final` once a hold is installed (one function for every
 * Receiver: `this` is the Receiver). The Writable calls it when the peer's
 * input has ended (ws calls `end()` on the peer's FIN, or when the socket
 * closes) and every write has called back. A hold installed during a parse
 * loop that ws runs itself leaves its write's callback to ws, which calls it
 * when the loop ends, bytes unparsed or not: while held, those bytes are
 * still to come, so 'finish' (and with it ws's 'close', which waits for it)
 * waits until they are parsed, or dropped (`discard()`). Without this, a peer
 * that pipelined past its share and half-closed (FIN, no close frame) lost
 * every message behind the hold: ws emitted 'close' at once and the reader,
 * stopped, dropped them (1,000 requests then FIN: 65 delivered).
 */
function heldFinal(this: ParseLoop, cb: LoopCallback): void {
  const hold = this[HOLD];
  if (hold === undefined || !hold.held) return cb();
  hold.keepFinal(cb);
}

/**
 * The Receiver's `_write` while discarding (item 6; one function for every
 * Receiver: `this` is the Receiver): the chunk is dropped unparsed. Past
 * `DISCARD_ALLOWANCE` bytes, ws pauses the socket (its public `pause()`).
 */
function discardWrite(this: ParseLoop, chunk: Buffer, _encoding: string, cb: LoopCallback): void {
  const hold = this[HOLD];
  if (hold !== undefined) {
    hold.discarded += chunk.length;
    if (hold.discarded > DISCARD_ALLOWANCE) websocketOf(this as unknown as WsReceiver)?.pause();
  }
  cb();
}

/** Whether `receiver` has the parse loop and buffers `ParserHold` needs (items 4 and 5); false after a `ws` upgrade that changed them. */
export function canHoldParser(receiver: WsReceiver | undefined): receiver is WsReceiver {
  if (receiver === undefined) return false;
  const loop = receiver as unknown as ParseLoop;
  return (
    typeof loop[WS_START_LOOP] === 'function' &&
    typeof loop[WS_LOOP] === 'boolean' &&
    typeof loop.destroy === 'function' &&
    typeof loop[WS_WRITE] === 'function' &&
    Array.isArray(loop[WS_BUFFERS]) &&
    typeof loop[WS_BUFFERED_BYTES] === 'number'
  );
}

/**
 * Holds a Receiver's parse loop between two messages (item 4). `hold()`, from
 * a 'message' listener, ends the loop after the current message; `release()`
 * parses on, synchronously, until the bytes run out or `hold()` is called
 * again. Frames keep their order: they are parsed in order, only later.
 * Installed on a Receiver at its first hold (a quiet connection never gets
 * one); after `dispose()` it holds no more and ws's loop runs as ws wrote it.
 */
export class ParserHold {
  /** True from `hold()` to `release()`. */
  held = false;
  /** Bytes dropped unparsed since `discard()` (item 6). */
  discarded = 0;
  /** The callback of the write whose bytes are not all parsed (or `outOfBand`); null when none is kept. */
  private parked: LoopCallback | null = null;
  /** The Writable's `_final` callback, kept while held (`heldFinal`); null when none is kept. */
  private final: LoopCallback | null = null;
  private disposed = false;
  private readonly loop: ParseLoop;

  constructor(receiver: WsReceiver) {
    const loop = receiver as unknown as ParseLoop;
    this.loop = loop;
    protoStartLoop ??= (Object.getPrototypeOf(loop) as ParseLoop)[WS_START_LOOP];
    loop[HOLD] = this;
    loop[WS_START_LOOP] = heldStartLoop;
    loop[WS_FINAL] = heldFinal;
  }

  /** Ends the current parse loop after the message being delivered. False once disposed (the loop goes on). */
  hold(): boolean {
    if (this.disposed) return false;
    this.held = true;
    this.loop[WS_LOOP] = false;
    // The loop running now may be one whose callback ws calls itself (the hold was installed during it):
    // the bytes after this message are then restarted out of band.
    this.parked ??= outOfBand;
    return true;
  }

  /** @internal A loop ended held: keep its callback (a write's own over the out-of-band one). */
  park(cb: LoopCallback): void {
    if (cb !== outOfBand || this.parked === null) this.parked = cb;
  }

  /** @internal The input ended while held (`heldFinal`): 'finish' waits for the held bytes. */
  keepFinal(cb: LoopCallback): void {
    this.final = cb;
  }

  /** @internal The held bytes are parsed (or dropped): a kept `_final` completes, and the Writable finishes. */
  finishIfKept(): void {
    const cb = this.final;
    if (cb === null) return;
    this.final = null;
    if (!this.loop.destroyed) cb();
  }

  /** Parses on, now: messages are emitted until the bytes run out (the write's callback is then called) or `hold()`. */
  release(): void {
    const cb = this.parked ?? outOfBand;
    this.held = false;
    this.parked = null;
    if (this.loop.destroyed) return; // errored or torn down: nothing more is parsed, or written
    heldStartLoop.call(this.loop, cb);
  }

  /** No more holds; releases the parser if held (what it has buffered is parsed now, in order). */
  dispose(): void {
    this.disposed = true;
    if (this.held) this.release();
  }

  /** True once `discard()` was called: nothing more is parsed. */
  get discarding(): boolean {
    return this.loop[WS_WRITE] === discardWrite;
  }

  /**
   * Nothing more is parsed, ever (item 6): the bytes not yet parsed are
   * dropped, and so is every later chunk. Called from a listener of the parse
   * loop, the loop ends after the frame being delivered; called while held,
   * the kept write completes (the Writable takes the next chunks, dropped).
   */
  discard(): void {
    if (this.discarding) return;
    const loop = this.loop;
    this.disposed = true;
    loop[WS_WRITE] = discardWrite;
    loop[WS_LOOP] = false;
    loop[WS_BUFFERS].length = 0;
    loop[WS_BUFFERED_BYTES] = 0;
    const cb = this.parked;
    this.held = false;
    this.parked = null;
    if (cb !== null && cb !== outOfBand && !loop.destroyed) cb();
    this.finishIfKept();
  }
}

/**
 * Whether the writer may put its own frames on this socket (item 3 above):
 * only when no extension was negotiated (permessage-deflate sets RSV1 and
 * keeps compression state in the Sender). The server always turns
 * permessage-deflate off; this guards the rule, not a setting.
 */
export function framesDirectly(ws: WebSocket): boolean {
  return ws.extensions === '';
}

const OPCODE_TEXT = 0x1;
const OPCODE_BINARY = 0x2;
const OPCODE_PING = 0x9;
const FIN = 0x80;

/** Header length of an unmasked frame with `n` payload bytes (RFC 6455 §5.2). */
function headerLength(n: number): number {
  return n < 126 ? 2 : n < 65536 ? 4 : 10;
}

function writeHeader(target: Buffer, opcode: number, n: number): number {
  target[0] = FIN | opcode;
  if (n < 126) {
    target[1] = n;
    return 2;
  }
  if (n < 65536) {
    target[1] = 126;
    target.writeUInt16BE(n, 2);
    return 4;
  }
  target[1] = 127;
  target.writeUInt32BE(Math.floor(n / 0x1_0000_0000), 2);
  target.writeUInt32BE(n >>> 0, 6);
  return 10;
}

/**
 * Buffer's own encoders (item 8: on Buffer.prototype since Node 0.x, not in
 * its typings): `buf.write(s, offset, length, encoding)` is one of these after
 * checking its arguments (two `validateOffset` calls, each behind Node's
 * `hideStackFrames` wrapper), which the framing here has done already: a
 * frame is sized by the string's byte length and written once.
 */
export type Encoders = Buffer & {
  latin1Write(s: string, offset: number, length: number): number;
  utf8Write(s: string, offset: number, length: number): number;
};

/**
 * Writes `s`, `bytes` long in UTF-8, into `target` at `at`. A string of as
 * many bytes as characters is ASCII (any other character takes 2 to 4
 * bytes, a lone surrogate 3), whose Latin-1 bytes are its UTF-8 bytes: the
 * one-byte copy, not the UTF-8 encoder (a JSON reply is ASCII as a rule).
 */
function writeText(target: Buffer, s: string, at: number, bytes: number): void {
  if (bytes === s.length) (target as Encoders).latin1Write(s, at, bytes);
  else (target as Encoders).utf8Write(s, at, bytes);
}

/**
 * One whole unmasked data frame (FIN set, RSV bits clear) carrying `data`, as
 * a single Buffer: header and payload together, so it leaves in one write.
 * A string is encoded as UTF-8 straight into the frame (a text frame unless
 * `binary`); a Buffer is copied after the header. Server-to-client frames are
 * never masked (RFC 6455 §5.1).
 */
export function frameOf(data: string | Buffer, binary: boolean): Buffer {
  const opcode = binary ? OPCODE_BINARY : OPCODE_TEXT;
  if (typeof data === 'string') {
    const n = Buffer.byteLength(data);
    const frame = Buffer.allocUnsafe(headerLength(n) + n);
    writeText(frame, data, writeHeader(frame, opcode, n), n);
    return frame;
  }
  const n = data.length;
  const frame = Buffer.allocUnsafe(headerLength(n) + n);
  data.copy(frame, writeHeader(frame, opcode, n));
  return frame;
}

/**
 * One whole unmasked data frame carrying a session message: `<seq>:` and then
 * `payload` (docs/sessions.md, "The protocol"), framed as `frameOf` would
 * frame `encodeTextData(seq, payload)` / `encodeBinaryData(seq, payload)`,
 * but in one allocation: the seq's digits are written into the frame, the
 * payload encoded (a string) or copied (a Buffer) once after them, no
 * intermediate string or array. `seq` is a seq the store assigned (an integer
 * from 1 to 2^53-1). `then`: a short ASCII text message (≤ 125 bytes) framed
 * right after it in the same Buffer (a session's ack rides with a reply).
 * `payloadBytes`: the payload's length in bytes, when the caller has it
 * (the session store counted it): a string is not measured twice.
 */
export function seqFrameOf(seq: number, payload: string | Buffer, binary: boolean, then: string | null = null, payloadBytes?: number): Buffer {
  const opcode = binary ? OPCODE_BINARY : OPCODE_TEXT;
  const digits = seq < 10 ? 1 : seq < 100 ? 2 : seq < 1000 ? 3 : seq < 10_000 ? 4 : seq < 100_000 ? 5 : String(seq).length;
  const p = payloadBytes ?? (typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length);
  const n = digits + 1 + p;
  const length = headerLength(n) + n;
  if (then !== null && (then.length > 125 || Buffer.byteLength(then) !== then.length)) throw new RangeError(`seqFrameOf: a following frame must be ASCII and at most 125 bytes, got ${then.length} characters`);
  const frame = Buffer.allocUnsafe(then === null ? length : length + 2 + then.length);
  if (then !== null) {
    // A second, short text frame after the first (a session ack): both leave in one write.
    frame[length] = FIN | OPCODE_TEXT;
    frame[length + 1] = then.length;
    (frame as Encoders).latin1Write(then, length + 2, then.length);
  }
  const at = writeHeader(frame, opcode, n);
  // Digits from the last one back (integer division is exact below 2^53).
  let v = seq;
  for (let i = at + digits - 1; i >= at; i--) {
    const q = Math.floor(v / 10);
    frame[i] = 0x30 + (v - q * 10);
    v = q;
  }
  frame[at + digits] = 0x3a; // ':'
  if (typeof payload === 'string') writeText(frame, payload, at + digits + 1, p);
  else payload.copy(frame, at + digits + 1);
  return frame;
}

/**
 * The server's ping (R4): a ping frame with no payload, 2 bytes, the same
 * Buffer for every ping of the process (it is never written into). The
 * round trip is timed by the reader from when the ping went out
 * (src/server/reader.ts), not from a payload the pong echoes.
 */
export const PING_FRAME: Buffer = Buffer.from([FIN | OPCODE_PING, 0]);

/** The member of a `net.Socket` holding its libuv handle (item 7). */
export const NODE_HANDLE_MEMBER = '_handle';
/** The handles whose `fd` is the socket's own descriptor, bytes written to it are the bytes on the wire (item 7). */
const FD_HANDLES: ReadonlySet<string> = new Set(['TCP', 'Pipe']);

interface FdHandle {
  readonly fd?: number;
}
type HandleOf = Duplex & { readonly [NODE_HANDLE_MEMBER]?: FdHandle | null; readonly timeout?: number; readonly encrypted?: boolean };

/**
 * Whether frames for `socket` may be written to its file descriptor (item 7):
 * a plain TCP or pipe socket with an open descriptor, not TLS. Asked once per
 * connection; `writeNow` still checks the descriptor at every write.
 */
export function writesToFd(socket: Duplex): boolean {
  const s = socket as HandleOf;
  if (s.encrypted === true) return false;
  const handle = s[NODE_HANDLE_MEMBER];
  return handle != null && FD_HANDLES.has(handle.constructor.name) && typeof handle.fd === 'number' && handle.fd >= 0;
}

/** `fs.writeSync`'s shape, as `writeNow` calls it (a test hands it a partial or failing one). */
export type FdWrite = (fd: number, buffer: Buffer) => number;

/**
 * Puts `frame` (a whole frame, never changed afterwards) on a socket for
 * which `writesToFd` said yes, in order with everything written to it
 * before (item 7): straight to its descriptor while nothing waits in the
 * stream, else (or for what the descriptor did not take) with
 * `socket.write`.
 */
export function writeNow(socket: Duplex, frame: Buffer, write: FdWrite = writeSync): void {
  const s = socket as HandleOf;
  if (s.writableLength === 0 && !s.timeout) {
    const fd = s[NODE_HANDLE_MEMBER]?.fd ?? -1;
    if (fd >= 0) {
      let n = 0;
      try {
        n = write(fd, frame);
      } catch {
        // EAGAIN (the kernel's buffer is full), or an error the stream's write below meets too.
      }
      if (n === frame.length) return;
      socket.write(n > 0 ? frame.subarray(n) : frame);
      return;
    }
  }
  socket.write(frame);
}
