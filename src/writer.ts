/**
 * The write actor (R8): the only code that writes to a connection's socket.
 * It owns the bounded send queue (R9), notices a socket that stops draining
 * (R10) or a queue that overflows (R11) and tells the machine, which decides.
 * Anything accepted but not handed to the OS goes back to the application as a
 * dead letter (R12).
 *
 * Hot path: `send` on a socket that drains hands the message straight to `ws`
 * (no machine event, no timer). Only backpressure makes it queue.
 */
import type { Duplex } from 'node:stream';
import type WebSocket from 'ws';
import { fromCallback } from 'xstate';
import type { ActorInput, WriterCommand, WriterEvent } from '../machines/connection.machine.ts';
import type { SocketIO } from './socket-io.ts';

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

export class SendQueue {
  private readonly queue: Outbound[] = [];
  /** Parallel to `queue`: whether each message goes out as a binary frame. */
  private readonly binary: boolean[] = [];
  private head = 0;
  private queuedBytes = 0;
  /**
   * Messages handed to ws that the OS has not yet confirmed taking, oldest
   * first. Empty on the hot path: a write the OS takes at once (the socket's
   * buffer is empty before and after) is confirmed on the spot, with no
   * callback, because a per-write callback costs Node an after-write tick and
   * ~20% of the server's instructions per request (measured with perf stat).
   * Only while the socket buffers do writes carry the shared callback
   * `onWritten`; its firing (in order) confirms every earlier entry too.
   */
  private readonly pending: Outbound[] = [];
  private readonly pendingBinary: boolean[] = [];
  /** Whether the entry's write carries `onWritten` (else it is confirmed by a later one or an empty buffer). */
  private readonly pendingTracked: boolean[] = [];
  /**
   * Whether the OS took the whole frame at once. When a socket is destroyed
   * mid-write, Node calls that write's callback with no error, so only this
   * tells a delivered frame from a cut one (R12).
   */
  private readonly pendingSynced: boolean[] = [];
  private pendingHead = 0;
  private accepting = true;
  private released = false;
  private blocked = false;
  private progressScheduled = false;
  private sendBack: ((event: WriterEvent) => void) | null = null;
  /** Messages/bytes handed to the OS socket (for stats and the dashboard). */
  messagesOut = 0;
  bytesOut = 0;

  constructor(
    private readonly ws: WebSocket,
    private readonly socket: Duplex,
    private readonly limits: SendQueueLimits,
    private readonly onDeadLetter: (data: Outbound, binary: boolean, reason: DeadLetterReason) => void,
  ) {}

  /** Messages waiting in our queue (not yet handed to the OS socket). */
  get depth(): number {
    return this.queue.length - this.head;
  }

  get depthBytes(): number {
    return this.queuedBytes;
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
    if (this.head === this.queue.length && !this.socket.writableNeedDrain) {
      this.write(data, binary);
      return true;
    }
    const bytes = byteLength(data);
    if (this.depth + 1 > this.limits.maxMessages || this.queuedBytes + bytes > this.limits.maxBytes) {
      this.accepting = false;
      this.sendBack?.({ type: 'write.overflow', messages: this.depth, bytes: this.queuedBytes });
      return false;
    }
    this.queue.push(data);
    this.binary.push(binary);
    this.queuedBytes += bytes;
    return true;
  }

  attach(sendBack: (event: WriterEvent) => void): void {
    this.sendBack = sendBack;
  }

  ping(): void {
    if (this.released || this.ws.readyState !== 1) return;
    // The payload is the send time; the pong echoes it, so RTT needs no state (RFC 6455 §5.5.3).
    const payload = Buffer.allocUnsafe(8);
    payload.writeDoubleBE(performance.now());
    this.ws.ping(payload, undefined, ignoreError);
  }

  close(code: number, reason: string, flush: boolean): void {
    if (this.released) return;
    this.accepting = false;
    this.settle();
    if (flush) this.flushAll();
    else this.deadLetterQueue('slow-consumer');
    this.ws.close(code, reason);
  }

  /** Called when the actor stops (the connection reached `closed`): R3, R12. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.accepting = false;
    this.deadLetterQueue('closed');
    this.settleUntracked();
    this.socket.off('drain', this.onDrain);
    // `closed` means the socket is gone: terminate is a no-op if it already is.
    this.ws.terminate();
  }

  private write(data: Outbound, binary: boolean): void {
    const socket = this.socket;
    if (this.pendingHead !== this.pending.length) this.settle();
    if (this.pendingHead === this.pending.length && socket.writableLength === 0) {
      // Hot path: nothing unconfirmed and nothing buffered.
      this.ws.send(data, binary ? BINARY : TEXT);
      if (socket.writableLength === 0) this.delivered(data);
      else this.pushPending(data, binary, false, false); // the OS took only part of it
    } else {
      this.pushPending(data, binary, true, false);
      this.ws.send(data, binary ? BINARY : TEXT, this.onWritten);
      this.pendingSynced[this.pendingSynced.length - 1] = socket.writableLength === 0;
    }
    if (!this.blocked && socket.writableNeedDrain) {
      this.blocked = true;
      socket.once('drain', this.onDrain);
      this.sendBack?.({ type: 'write.blocked' });
    }
  }

  private pushPending(data: Outbound, binary: boolean, tracked: boolean, synced: boolean): void {
    this.pending.push(data);
    this.pendingBinary.push(binary);
    this.pendingTracked.push(tracked);
    this.pendingSynced.push(synced);
  }

  private delivered(data: Outbound): void {
    this.messagesOut++;
    this.bytesOut += byteLength(data);
  }

  /** A tracked write completed: it and every untracked entry before it are settled (bytes leave in order). */
  private readonly onWritten = (err?: Error | null): void => {
    const destroyed = this.socket.destroyed;
    while (this.pendingHead < this.pending.length) {
      const i = this.pendingHead++;
      const data = this.pending[i]!;
      const binary = this.pendingBinary[i]!;
      const tracked = this.pendingTracked[i]!;
      const synced = this.pendingSynced[i]!;
      this.pending[i] = '';
      if (err || (!synced && destroyed)) this.onDeadLetter(data, binary, err ? 'write-error' : 'closed');
      else this.delivered(data);
      if (tracked) break;
    }
    this.compactPending();
    // While blocked, completed writes are progress (R10): at most one event per I/O turn.
    if (!err && this.blocked && !this.progressScheduled && !this.released) {
      this.progressScheduled = true;
      setImmediate(this.emitProgress);
    }
  };

  /** With the socket's buffer empty, every untracked entry at the head has reached the OS. */
  private settle(): void {
    if (this.socket.destroyed || this.socket.writableLength !== 0) return;
    while (this.pendingHead < this.pending.length && !this.pendingTracked[this.pendingHead]) {
      const data = this.pending[this.pendingHead]!;
      this.pending[this.pendingHead++] = '';
      this.delivered(data);
    }
    this.compactPending();
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
    const keep: number[] = [];
    for (let i = this.pendingHead; i < this.pending.length; i++) {
      if (this.pendingTracked[i]) keep.push(i);
      else this.onDeadLetter(this.pending[i]!, this.pendingBinary[i]!, 'closed');
    }
    const pick = <T>(xs: T[]): T[] => keep.map((i) => xs[i]!);
    const [p, b, t, y] = [pick(this.pending), pick(this.pendingBinary), pick(this.pendingTracked), pick(this.pendingSynced)];
    this.pending.length = this.pendingBinary.length = this.pendingTracked.length = this.pendingSynced.length = 0;
    this.pendingHead = 0;
    this.pending.push(...p);
    this.pendingBinary.push(...b);
    this.pendingTracked.push(...t);
    this.pendingSynced.push(...y);
  }

  private compactPending(): void {
    if (this.pendingHead === this.pending.length) {
      this.pending.length = this.pendingBinary.length = this.pendingTracked.length = this.pendingSynced.length = 0;
      this.pendingHead = 0;
    } else if (this.pendingHead > 1024 && this.pendingHead * 2 > this.pending.length) {
      for (const xs of [this.pending, this.pendingBinary, this.pendingTracked, this.pendingSynced] as unknown[][]) {
        xs.splice(0, this.pendingHead);
      }
      this.pendingHead = 0;
    }
  }

  private readonly emitProgress = (): void => {
    this.progressScheduled = false;
    if (this.blocked && !this.released) this.sendBack?.({ type: 'write.progress' });
  };

  private readonly onDrain = (): void => {
    if (this.released) return;
    this.blocked = false;
    this.settle();
    this.pump();
    if (!this.blocked) this.sendBack?.({ type: 'write.drained' });
  };

  /** Moves queued messages to the socket until it pushes back. */
  private pump(): void {
    while (this.head < this.queue.length && !this.socket.writableNeedDrain) {
      this.shiftAndWrite();
    }
    this.compact();
    if (!this.blocked && this.socket.writableNeedDrain) {
      this.blocked = true;
      this.socket.once('drain', this.onDrain);
      this.sendBack?.({ type: 'write.progress' });
    }
  }

  private shiftAndWrite(): void {
    const data = this.queue[this.head]!;
    const binary = this.binary[this.head]!;
    this.queue[this.head++] = '';
    this.queuedBytes -= byteLength(data);
    this.write(data, binary);
  }

  /** Clean close: everything queued goes out ahead of the close frame. */
  private flushAll(): void {
    if (this.ws.readyState !== 1) {
      this.deadLetterQueue('closed');
      return;
    }
    while (this.head < this.queue.length) this.shiftAndWrite();
    this.compact();
  }

  private deadLetterQueue(reason: DeadLetterReason): void {
    const pending = this.queue.slice(this.head);
    const binary = this.binary.slice(this.head);
    this.queue.length = 0;
    this.binary.length = 0;
    this.head = 0;
    this.queuedBytes = 0;
    pending.forEach((data, i) => this.onDeadLetter(data, binary[i]!, reason));
  }

  private compact(): void {
    if (this.head === this.queue.length) {
      this.queue.length = 0;
      this.binary.length = 0;
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.binary.splice(0, this.head);
      this.head = 0;
    }
  }
}

function ignoreError(): void {}

/** The write actor as the machine's `writer`. */
export const writerActor = fromCallback<WriterCommand, ActorInput>(({ input, sendBack: send, receive }) => {
  // Typed: the machine's events are checked here, at the actor boundary.
  const sendBack = (event: WriterEvent): void => send(event);
  const queue = (input.io as SocketIO).writer;
  queue.attach(sendBack);
  receive((command) => {
    if (command.type === 'writer.ping') queue.ping();
    else queue.close(command.code, command.reason, command.flush);
  });
  return () => queue.release();
});
