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
   * Messages handed to ws whose write callback has not fired yet, oldest
   * first (socket write callbacks fire in order). One shared callback for all
   * writes lets Node batch its after-write ticks: a closure per message would
   * cost a tick each.
   */
  private readonly inflight: Outbound[] = [];
  private readonly inflightBinary: boolean[] = [];
  /**
   * Parallel to `inflight`: whether the OS took the whole frame at once. When
   * a socket is destroyed mid-write, Node calls that write's callback with no
   * error, so only this tells a delivered frame from a cut one (R12).
   */
  private readonly inflightSynced: boolean[] = [];
  private inflightHead = 0;
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
    this.socket.off('drain', this.onDrain);
    // `closed` means the socket is gone: terminate is a no-op if it already is.
    this.ws.terminate();
  }

  private write(data: Outbound, binary: boolean): void {
    this.inflight.push(data);
    this.inflightBinary.push(binary);
    this.ws.send(data, binary ? BINARY : TEXT, this.onWritten);
    this.inflightSynced.push(this.socket.writableLength === 0);
    if (!this.blocked && this.socket.writableNeedDrain) {
      this.blocked = true;
      this.socket.once('drain', this.onDrain);
      this.sendBack?.({ type: 'write.blocked' });
    }
  }

  private readonly onWritten = (err?: Error | null): void => {
    const i = this.inflightHead++;
    const data = this.inflight[i]!;
    const binary = this.inflightBinary[i]!;
    const synced = this.inflightSynced[i]!;
    if (this.inflightHead === this.inflight.length) {
      this.inflight.length = 0;
      this.inflightBinary.length = 0;
      this.inflightSynced.length = 0;
      this.inflightHead = 0;
    } else if (this.inflightHead > 1024 && this.inflightHead * 2 > this.inflight.length) {
      this.inflight.splice(0, this.inflightHead);
      this.inflightBinary.splice(0, this.inflightHead);
      this.inflightSynced.splice(0, this.inflightHead);
      this.inflightHead = 0;
    } else {
      this.inflight[i] = '';
    }
    if (err || (!synced && this.socket.destroyed)) {
      this.onDeadLetter(data, binary, err ? 'write-error' : 'closed');
      return;
    }
    this.messagesOut++;
    this.bytesOut += byteLength(data);
    // While blocked, completed writes are progress (R10): at most one event per I/O turn.
    if (this.blocked && !this.progressScheduled && !this.released) {
      this.progressScheduled = true;
      setImmediate(this.emitProgress);
    }
  };

  private readonly emitProgress = (): void => {
    this.progressScheduled = false;
    if (this.blocked && !this.released) this.sendBack?.({ type: 'write.progress' });
  };

  private readonly onDrain = (): void => {
    if (this.released) return;
    this.blocked = false;
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
