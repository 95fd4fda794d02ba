/**
 * The write actor (R8): the only code that writes to a connection's socket.
 * It owns the bounded send queue (R9), notices a socket that stops draining
 * (R10) or a queue that overflows (R11) and tells the machine, which decides.
 * Anything accepted but not handed to the OS goes back to the application as a
 * dead letter (R12).
 *
 * Hot path: `send` on a socket that drains puts the message on the socket at
 * once (no machine event, no timer). Only backpressure makes it queue.
 *
 * On the server the writer frames messages itself (src/server/ws-internals.ts,
 * item 3): one Buffer per frame, written straight to the upgrade socket, and a
 * broadcast is framed once for all its receivers (src/server/hub.ts). It also
 * corks: the first frame a socket gets in an event-loop turn leaves at once
 * (a request's reply is not delayed; on a plain TCP socket with nothing
 * waiting it goes to the descriptor, not through the socket's Writable:
 * ws-internals.ts, item 7), a second one in the same turn corks the
 * socket, and every frame after it joins one write when the turn ends (one
 * shared `setImmediate` uncorks every corked socket): ten broadcasts in one
 * turn reach a receiver in two system calls, not ten. (A fan-out once corked
 * from its first frame; measured, a sliced fan-out gives a receiver one frame
 * per turn, and the cork then only cost: docs/performance.md.)
 * A corked batch stays below the socket's high-water mark (it is written early
 * rather than grow past it), so `writableNeedDrain`, and with it the write
 * deadline (R10) and `write.blocked`/`write.progress`/`write.drained`, only
 * ever reflect a peer that does not read, never the cork. Frames `ws` writes
 * itself (its pongs, the close frame) join the cork in order, so nothing
 * overtakes the data written before it.
 */
import type { Duplex } from 'node:stream';
import type WebSocket from 'ws';
import { fromCallback } from 'xstate';
import type { ActorInput, WriterCommand, WriterEvent } from '../../machines/connection.machine.ts';
import { frameOf, framesDirectly, PING_FRAME, writeNow, writesToFd } from './ws-internals.ts';

export type Outbound = string | Buffer;

/** Why an accepted message never reached the OS socket. */
export type DeadLetterReason = 'closed' | 'slow-consumer' | 'write-error';

export interface SendQueueLimits {
  maxMessages: number;
  maxBytes: number;
}

function byteLength(data: Outbound): number {
  return typeof data === 'string' ? Buffer.byteLength(data) : data.length;
}

const TEXT = { binary: false } as const;
const BINARY = { binary: true } as const;

/**
 * Buffers at least this long go out through `ws.send` (header and payload as
 * two chunks): copying them into one frame would cost more than the extra
 * chunk. Strings are always framed here (`ws` copies them into a Buffer too).
 */
const COPY_LIMIT = 16 * 1024;

// Corking (see the top of the file): one turn counter and one list of corked
// queues for the whole process, one setImmediate per turn for all of them.
/** Incremented when an event-loop turn that wrote anything ends. */
let turn = 1;
let turnEndArmed = false;
let corkedQueues: SendQueue[] = [];

function endTurn(): void {
  turnEndArmed = false;
  turn++;
  const queues = corkedQueues;
  corkedQueues = [];
  for (const queue of queues) queue.uncork();
}

function armTurnEnd(): void {
  if (turnEndArmed) return;
  turnEndArmed = true;
  setImmediate(endTurn);
}

/** Where the write actor's reports go: the machine. */
export interface WriterParent {
  report(event: WriterEvent): void;
}

/** Where accepted messages that never reached the OS go (R12). */
export interface DeadLetterSink {
  deadLetter(data: Outbound, binary: boolean, reason: DeadLetterReason): void;
}

/** What a send queue writes to, and where its dead letters go. */
export interface WriterIO extends DeadLetterSink {
  readonly ws: WebSocket;
  /** The raw transport under `ws` (from the upgrade): drain/backpressure signals. */
  readonly socket: Duplex;
}

/** Messages waiting for the socket to drain (allocated on the first backpressure). */
interface Waiting {
  data: Outbound[];
  /** Their bytes (payloads). */
  bytes: number;
  /** Parallel to `data`: whether each message goes out as a binary frame. */
  binary: boolean[];
  head: number;
}

/**
 * Messages handed to ws that the OS has not yet confirmed taking, oldest
 * first (allocated the first time the socket buffers). Empty on the hot path:
 * a write the OS takes at once (the socket's buffer is empty before and after)
 * is confirmed on the spot, with no callback, because a per-write callback
 * costs Node an after-write tick and ~20% of the server's instructions per
 * request (measured with perf stat). Only while the socket buffers do writes
 * carry the shared callback `onWritten`; its firing (in order) confirms every
 * earlier entry too.
 */
interface Unconfirmed {
  data: Outbound[];
  binary: boolean[];
  /** Whether the entry's write carries `onWritten` (else it is confirmed by a later one or an empty buffer). */
  tracked: boolean[];
  /**
   * Whether the OS took the whole frame at once. When a socket is destroyed
   * mid-write, Node calls that write's callback with no error, so only this
   * tells a delivered frame from a cut one (R12).
   */
  synced: boolean[];
  head: number;
}

// SendQueue's booleans, one bit each of `state` (one field, not seven: memory per idle connection).
const ACCEPTING = 1;
const RELEASED = 2;
const BLOCKED = 4;
const REPORTED_BLOCKED = 8;
const PROGRESS_SCHEDULED = 16;
const CORKED = 32;
const DIRECT = 64;
const BATCHING = 128;
const TO_FD = 256;

export class SendQueue {
  /** null until the socket first pushes back: an idle connection holds no queue arrays. */
  private waiting: Waiting | null = null;
  private unconfirmed: Unconfirmed | null = null;
  /** The flags above, read through the accessors below. */
  private state = ACCEPTING;
  /** The machine, once the write actor runs (on the server, its run itself: no closure per connection). */
  private parent: WriterParent | null = null;
  /** Callbacks handed to the socket, made the first time they are needed. */
  private writtenCallback: ((err?: Error | null) => void) | null = null;
  private drainListener: (() => void) | null = null;
  /** Called when the socket drained after pushing back (sessions pace their stream by it: src/server/sessions.ts). */
  onDrained: (() => void) | null = null;
  /** Messages/bytes handed to the OS socket (for stats and the dashboard). */
  messagesOut = 0;
  bytesOut = 0;
  /** The turn this queue last wrote in (a second write in the same turn corks the socket). */
  private lastTurn = 0;

  constructor(
    /** The socket and where dead letters go: on the server, the Connection itself (one pointer, not three). */
    private readonly io: WriterIO,
    private readonly limits: SendQueueLimits,
    /** Server side: frame and cork here (client frames must be masked, so the client leaves framing to `ws`). */
    frameHere = false,
  ) {
    if (frameHere && framesDirectly(io.ws)) this.state |= DIRECT | (writesToFd(io.socket) ? TO_FD : 0);
  }

  private get ws(): WebSocket {
    return this.io.ws;
  }

  private get socket(): Duplex {
    return this.io.socket;
  }

  private flag(bit: number, on: boolean): void {
    this.state = on ? this.state | bit : this.state & ~bit;
  }

  /** Sends are accepted (not closing, not overflowed). */
  private get accepting(): boolean {
    return (this.state & ACCEPTING) !== 0;
  }
  private set accepting(on: boolean) {
    this.flag(ACCEPTING, on);
  }
  /** The actor stopped: the socket is given up (R3). */
  private get released(): boolean {
    return (this.state & RELEASED) !== 0;
  }
  private set released(on: boolean) {
    this.flag(RELEASED, on);
  }
  /** Waiting for the socket's 'drain'. */
  private get blocked(): boolean {
    return (this.state & BLOCKED) !== 0;
  }
  private set blocked(on: boolean) {
    this.flag(BLOCKED, on);
  }
  /** The machine was told `write.blocked` and has not yet been told `write.drained` (R10). */
  private get reportedBlocked(): boolean {
    return (this.state & REPORTED_BLOCKED) !== 0;
  }
  private set reportedBlocked(on: boolean) {
    this.flag(REPORTED_BLOCKED, on);
  }
  private get progressScheduled(): boolean {
    return (this.state & PROGRESS_SCHEDULED) !== 0;
  }
  private set progressScheduled(on: boolean) {
    this.flag(PROGRESS_SCHEDULED, on);
  }
  /** This queue holds a cork on the socket until the turn ends (it is in `corkedQueues`). */
  private get corked(): boolean {
    return (this.state & CORKED) !== 0;
  }
  private set corked(on: boolean) {
    this.flag(CORKED, on);
  }
  /** Inside batch(): the socket is corked by it, and writes through ws take the hot path's bookkeeping. */
  private get batching(): boolean {
    return (this.state & BATCHING) !== 0;
  }
  /** Frames are made here and written to the socket, not through `ws.send` (the server's sockets). */
  private get direct(): boolean {
    return (this.state & DIRECT) !== 0;
  }

  /**
   * Whether this queue writes whole frames it is handed (`fanOut`'s `frame`)
   * as they are: the server's sockets without an extension (ws-internals.ts,
   * item 3). Sessions frame their `<seq>:` messages themselves then, in one
   * Buffer (src/server/sessions.ts).
   */
  get framesHere(): boolean {
    return this.direct;
  }

  /** True when a send now would wait in our queue (the socket has pushed back). */
  get pushingBack(): boolean {
    return this.depth > 0 || this.socket.writableNeedDrain;
  }

  /** Messages waiting in our queue (not yet handed to the OS socket). */
  get depth(): number {
    const w = this.waiting;
    return w === null ? 0 : w.data.length - w.head;
  }

  get depthBytes(): number {
    return this.waiting?.bytes ?? 0;
  }

  get isAccepting(): boolean {
    return this.accepting;
  }

  /**
   * Accept a message for delivery. Returns false when it is refused: the
   * connection is closing/closed, or the queue is full (which also closes the
   * connection as a slow consumer, R11). A refused message is the caller's;
   * an accepted one is delivered or comes back as a dead letter.
   * `binary` defaults to "data is a Buffer"; pass false to send a pre-encoded
   * UTF-8 Buffer as a text frame (broadcast encodes once for everyone).
   */
  send(data: Outbound, binary: boolean = typeof data !== 'string'): boolean {
    if (!this.accepting || this.ws.readyState !== 1) return false;
    if (this.depth === 0 && !this.socket.writableNeedDrain) {
      this.write(data, binary, null, false);
      return true;
    }
    return this.enqueue(data, binary);
  }

  /**
   * @internal A broadcast or publish: `frame` is `data` framed once for every
   * receiver (src/server/hub.ts; `frameOf(data, binary)`), written as is. Same
   * acceptance and corking as `send`; `cork` corks from this frame on (the
   * hub hands a receiver several fan-outs at once: they leave in one write
   * when the turn ends).
   */
  fanOut(data: Outbound, binary: boolean, frame: Buffer, cork = false): boolean {
    if (!this.accepting || this.ws.readyState !== 1) return false;
    if (this.depth === 0 && !this.socket.writableNeedDrain) {
      this.write(data, binary, this.direct ? frame : null, cork);
      return true;
    }
    return this.enqueue(data, binary);
  }

  private enqueue(data: Outbound, binary: boolean): boolean {
    const bytes = byteLength(data);
    if (this.depth + 1 > this.limits.maxMessages || this.depthBytes + bytes > this.limits.maxBytes) {
      this.accepting = false;
      this.parent?.report({ type: 'write.overflow', messages: this.depth, bytes: this.depthBytes });
      return false;
    }
    const w = (this.waiting ??= { data: [], bytes: 0, binary: [], head: 0 });
    w.data.push(data);
    w.binary.push(binary);
    w.bytes += bytes;
    return true;
  }

  /** Starts the write actor: from now on it reports to the machine. */
  attach(parent: WriterParent): this {
    this.parent = parent;
    return this;
  }

  /** A command from the machine (R8: every write the machine asks for goes through here). */
  command(command: WriterCommand): void {
    if (command.type === 'writer.ping') this.ping();
    else this.close(command.code, command.reason, command.flush);
  }

  /** The machine stopped the write actor: release the socket (R3, R12). */
  stop(): void {
    this.release();
  }

  /**
   * R4: a ping with no payload (the reader times the round trip from the
   * moment it is told a ping went out: src/server/reader.ts). On the
   * server's plain TCP sockets it is one shared 2-byte frame written to the
   * socket's descriptor while nothing waits in the stream (ws-internals.ts,
   * item 7): no write request, no after-write tick, no callback per ping.
   * Behind queued or corked bytes it goes through the stream, after them.
   */
  ping(): void {
    if (this.released || this.ws.readyState !== 1) return;
    const state = this.state;
    if ((state & TO_FD) !== 0) writeNow(this.socket, PING_FRAME);
    else if ((state & DIRECT) !== 0) this.socket.write(PING_FRAME);
    else this.ws.ping(undefined, undefined, ignoreError);
  }

  close(code: number, reason: string, flush: boolean): void {
    if (this.released) return;
    this.accepting = false;
    this.settle();
    if (flush) this.flushAll();
    else this.deadLetterQueue('slow-consumer');
    this.ws.close(code, reason);
    this.uncork(); // the close frame (behind any corked frames) leaves now
  }

  /** Called when the actor stops (the connection reached `closed`): R3, R12. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.accepting = false;
    this.deadLetterQueue('closed');
    // Still corked: the socket is gone or about to be; its corked frames are settled below.
    this.corked = false;
    this.settleUntracked();
    if (this.drainListener) this.socket.off('drain', this.drainListener);
    // `closed` means the socket is gone: terminate is a no-op if it already is.
    this.ws.terminate();
  }

  /**
   * Puts one message on the socket. `frame` is its pre-made frame (a fan-out),
   * `cork` says to cork from this frame on (a fan-out) rather than from the
   * turn's second frame.
   */
  private write(data: Outbound, binary: boolean, frame: Buffer | null, cork: boolean): void {
    // ws drops a send on a closing socket without a word (no callback): once the
    // peer's close frame is in, what is still queued can no longer go out (R12).
    if (this.ws.readyState !== 1) {
      this.io.deadLetter(data, binary, 'closed');
      return;
    }
    const socket = this.socket;
    if (this.direct && (frame !== null || typeof data === 'string' || data.length < COPY_LIMIT)) {
      frame ??= frameOf(data, binary);
      if (this.corked) {
        // Joins the turn's batch while the batch stays below the high-water mark; else the batch goes now.
        if (socket.writableLength + frame.length < socket.writableHighWaterMark) {
          socket.write(frame);
          this.pushUnconfirmed(data, binary, false, false);
          return;
        }
        this.uncork();
      }
      const u = this.unconfirmed;
      if (u !== null && u.head !== u.data.length) this.settle();
      if ((u === null || u.head === u.data.length) && socket.writableLength === 0) {
        if ((cork || this.lastTurn === turn) && frame.length < socket.writableHighWaterMark) {
          // A second frame this turn (or a fan-out): cork; it leaves with the rest at the turn's end.
          socket.cork();
          this.corked = true;
          corkedQueues.push(this);
          armTurnEnd();
          socket.write(frame);
          this.pushUnconfirmed(data, binary, false, false);
          return;
        }
        // Hot path: the turn's first frame, nothing unconfirmed and nothing buffered. On a plain TCP socket it goes
        // straight to the descriptor (ws-internals.ts, item 7), as the ping does: no write request, no `onwrite`,
        // no after-write tick; what the kernel does not take at once goes through the stream, after the part that left.
        this.lastTurn = turn;
        armTurnEnd();
        if ((this.state & TO_FD) !== 0) writeNow(socket, frame);
        else socket.write(frame);
        if (socket.writableLength === 0) this.delivered(data);
        else this.pushUnconfirmed(data, binary, false, false); // the OS took only part of it
      } else {
        const entry = this.pushUnconfirmed(data, binary, true, false);
        socket.write(frame, (this.writtenCallback ??= (err) => this.onWritten(err)));
        this.unconfirmed!.synced[entry] = socket.writableLength === 0;
      }
      if (!this.blocked && socket.writableNeedDrain) this.block();
      return;
    }
    // Through ws: the client (frames must be masked) and big Buffers on the server.
    if (this.corked) this.uncork();
    const u = this.unconfirmed;
    if (u !== null && u.head !== u.data.length) this.settle();
    if (((u === null || u.head === u.data.length) && socket.writableLength === 0) || this.batching) {
      // Hot path: nothing unconfirmed and nothing buffered (or corked by batch(): settled when it uncorks).
      this.ws.send(data, binary ? BINARY : TEXT);
      if (socket.writableLength === 0) this.delivered(data);
      else this.pushUnconfirmed(data, binary, false, false); // the OS took only part of it
    } else {
      const entry = this.pushUnconfirmed(data, binary, true, false);
      this.ws.send(data, binary ? BINARY : TEXT, (this.writtenCallback ??= (err) => this.onWritten(err)));
      this.unconfirmed!.synced[entry] = socket.writableLength === 0;
    }
    if (!this.blocked && socket.writableNeedDrain) this.block();
  }

  /**
   * @internal The client's cork: what `fn` sends leaves in one socket write,
   * each message its own frame (`ws` frames each one, masked, and corks
   * around its header and payload; the cork nests, so ours holds them all).
   * The client puts a due session ack and the request it rides with in one
   * write this way (src/client/client.ts, `write`). Messages the queue holds
   * back (the socket pushed back) wait in order as always.
   */
  batch(fn: () => void): void {
    const socket = this.socket;
    if (this.batching || this.corked || this.released || socket.destroyed) return fn();
    socket.cork();
    this.flag(BATCHING, true);
    try {
      fn();
    } finally {
      this.flag(BATCHING, false);
      socket.uncork();
      this.settle();
      if (!this.blocked && !this.released && socket.writableNeedDrain) this.block();
    }
  }

  /**
   * @internal Corks the socket for the rest of this turn, from now on: the
   * frames `ws` writes itself meanwhile (its automatic pongs) leave together
   * at the turn's end, in order with ours. The reader calls it on a peer's
   * pings: a burst of them (at most the peer's share per turn) costs one write,
   * not one per pong. The server's sockets only (frames made here).
   */
  corkForTurn(): void {
    if (this.corked || !this.direct || this.released) return;
    const socket = this.socket;
    if (socket.destroyed || socket.writableNeedDrain) return;
    socket.cork();
    this.corked = true;
    corkedQueues.push(this);
    armTurnEnd();
  }

  /**
   * @internal The turn ended (or the batch must go now): the corked frames
   * leave in one write. With the socket's buffer empty after it, they reached
   * the OS; otherwise they stay unconfirmed, settled like a partly taken write.
   */
  uncork(): void {
    if (!this.corked) return;
    this.corked = false;
    const socket = this.socket;
    if (socket.destroyed) return; // release() settles what was corked
    socket.uncork();
    this.settle();
    if (!this.blocked && !this.released && socket.writableNeedDrain) this.block();
  }

  /**
   * The socket pushed back: wait for 'drain' and tell the machine (R10). The
   * first push-back starts the write deadline; one while refilling after a
   * drain the machine has not heard of yet is progress, which restarts it
   * (a slow consumer that keeps draining is not stalled).
   */
  private block(): void {
    this.blocked = true;
    this.socket.once('drain', (this.drainListener ??= () => this.onDrain()));
    this.parent?.report({ type: this.reportedBlocked ? 'write.progress' : 'write.blocked' });
    this.reportedBlocked = true;
  }

  private pushUnconfirmed(data: Outbound, binary: boolean, tracked: boolean, synced: boolean): number {
    const u = (this.unconfirmed ??= { data: [], binary: [], tracked: [], synced: [], head: 0 });
    u.data.push(data);
    u.binary.push(binary);
    u.tracked.push(tracked);
    u.synced.push(synced);
    return u.data.length - 1;
  }

  private delivered(data: Outbound): void {
    this.messagesOut++;
    this.bytesOut += byteLength(data);
  }

  /** A tracked write completed: it and every untracked entry before it are settled (bytes leave in order). */
  private onWritten(err?: Error | null): void {
    const u = this.unconfirmed!;
    const destroyed = this.socket.destroyed;
    while (u.head < u.data.length) {
      const i = u.head++;
      const data = u.data[i]!;
      u.data[i] = '';
      if (err || (!u.synced[i] && destroyed)) this.io.deadLetter(data, u.binary[i]!, err ? 'write-error' : 'closed');
      else this.delivered(data);
      if (u.tracked[i]) break;
    }
    this.compactUnconfirmed();
    // While blocked, completed writes are progress (R10): at most one event per I/O turn.
    if (!err && this.blocked && !this.progressScheduled && !this.released) {
      this.progressScheduled = true;
      setImmediate(emitProgress, this);
    }
  }

  /** With the socket's buffer empty, every untracked entry at the head has reached the OS. */
  private settle(): void {
    const u = this.unconfirmed;
    if (u === null || this.socket.destroyed || this.socket.writableLength !== 0) return;
    while (u.head < u.data.length && !u.tracked[u.head]) {
      const data = u.data[u.head]!;
      u.data[u.head++] = '';
      this.delivered(data);
    }
    this.compactUnconfirmed();
  }

  /**
   * At teardown: untracked entries get no callback, so each is settled now —
   * delivered if the buffer is empty, else handed back (R12; in the rare race
   * where its bytes left after the last look, reported undelivered although
   * sent: at-least-once, never silent loss). Tracked ones keep their slot for
   * their callback, which the teardown fires with an error.
   */
  private settleUntracked(): void {
    this.settle();
    const u = this.unconfirmed;
    if (u === null) return;
    const keep: number[] = [];
    for (let i = u.head; i < u.data.length; i++) {
      if (u.tracked[i]) keep.push(i);
      else this.io.deadLetter(u.data[i]!, u.binary[i]!, 'closed');
    }
    u.data = keep.map((i) => u.data[i]!);
    u.binary = keep.map((i) => u.binary[i]!);
    u.tracked = keep.map((i) => u.tracked[i]!);
    u.synced = keep.map((i) => u.synced[i]!);
    u.head = 0;
  }

  private compactUnconfirmed(): void {
    const u = this.unconfirmed!;
    if (u.head === u.data.length) {
      u.data.length = u.binary.length = u.tracked.length = u.synced.length = 0;
      u.head = 0;
    } else if (u.head > 1024 && u.head * 2 > u.data.length) {
      for (const xs of [u.data, u.binary, u.tracked, u.synced] as unknown[][]) xs.splice(0, u.head);
      u.head = 0;
    }
  }

  /** Called (via setImmediate) at most once per I/O turn while blocked. */
  emitProgress(): void {
    this.progressScheduled = false;
    if (this.blocked && !this.released) this.parent?.report({ type: 'write.progress' });
  }

  private onDrain(): void {
    if (this.released) return;
    this.blocked = false;
    this.settle();
    this.pump();
    if (!this.blocked) {
      this.reportedBlocked = false;
      this.parent?.report({ type: 'write.drained' });
      this.onDrained?.();
    }
  }

  /** Moves queued messages to the socket until it pushes back. */
  private pump(): void {
    if (this.ws.readyState !== 1) {
      this.accepting = false;
      this.deadLetterQueue('closed');
      return;
    }
    while (this.depth > 0 && !this.socket.writableNeedDrain) this.shiftAndWrite();
    this.compact();
    if (!this.blocked && this.socket.writableNeedDrain) this.block();
  }

  private shiftAndWrite(): void {
    const w = this.waiting!;
    const data = w.data[w.head]!;
    const binary = w.binary[w.head]!;
    w.data[w.head++] = '';
    w.bytes -= byteLength(data);
    this.write(data, binary, null, false);
  }

  /** Clean close: everything queued goes out ahead of the close frame. */
  private flushAll(): void {
    if (this.ws.readyState !== 1) {
      this.deadLetterQueue('closed');
      return;
    }
    while (this.depth > 0) this.shiftAndWrite();
    this.compact();
  }

  private deadLetterQueue(reason: DeadLetterReason): void {
    const w = this.waiting;
    if (w === null) return;
    const data = w.data.slice(w.head);
    const binary = w.binary.slice(w.head);
    w.data.length = w.binary.length = w.head = w.bytes = 0;
    for (let i = 0; i < data.length; i++) this.io.deadLetter(data[i]!, binary[i]!, reason);
  }

  private compact(): void {
    const w = this.waiting;
    if (w === null) return;
    if (w.head === w.data.length) {
      w.data.length = w.binary.length = w.head = 0;
    } else if (w.head > 1024 && w.head * 2 > w.data.length) {
      w.data.splice(0, w.head);
      w.binary.splice(0, w.head);
      w.head = 0;
    }
  }
}

function emitProgress(queue: SendQueue): void {
  queue.emitProgress();
}

function ignoreError(): void {}

/** The write actor as an XState actor, for the machine run as an actor (the client). */
export const writerActor = fromCallback<WriterCommand, ActorInput>(({ input, sendBack, receive }) => {
  // The io is a SocketIO (src/server/socket-io.ts); only its send queue is the writer's.
  const queue = (input.io as { readonly writer: SendQueue }).writer.attach({ report: (event) => sendBack(event) });
  receive((command) => queue.command(command));
  return () => queue.stop();
});
