/**
 * A supervised connection: the handle the application holds. Its lifecycle is
 * the connection machine (machines/connection.machine.ts) running as an actor;
 * the data path goes through the reader and writer actors' shared SocketIO.
 */
import type { Duplex } from 'node:stream';
import type WebSocket from 'ws';
import { createActor, type Actor, type AnyActorRef, type InspectionEvent, type Observer, type SnapshotFrom } from 'xstate';
import {
  connectionMachine,
  connectionStateName,
  type ConnectionStateName,
  type ConnectionTiming,
} from '../machines/connection.machine.ts';
import { isSendableCloseCode, type CloseCause, type Closure } from '../machines/close-codes.ts';
import { TokenBucket } from './rate-limit.ts';
import { readerActor } from './reader.ts';
import type { SocketIO } from './socket-io.ts';
import { SendQueue, writerActor, type DeadLetterReason, type Outbound, type SendQueueLimits } from './writer.ts';

/**
 * The machine with the real actors, provided once per process (FACTS.md:
 * `.provide()` per socket costs 2.4× memory and 2.6× create time).
 */
export const supervisedConnectionMachine = connectionMachine.provide({
  actors: { reader: readerActor, writer: writerActor },
});

export type ConnectionSnapshot = SnapshotFrom<typeof supervisedConnectionMachine>;

/** A message accepted for sending that never reached the OS socket (R12). */
export interface DeadLetter {
  connectionId: string;
  data: Outbound;
  /** Whether it was to go out as a binary frame. */
  binary: boolean;
  reason: DeadLetterReason;
}

export interface ConnectionInit<Auth> {
  id: string;
  ws: WebSocket;
  socket: Duplex;
  timing: ConnectionTiming;
  sendQueue: SendQueueLimits;
  remoteAddress: string;
  protocol: string;
  auth: Auth;
  inspect?: Observer<InspectionEvent> | ((event: InspectionEvent) => void) | undefined;
  /**
   * An actor whose system this connection joins (the supervisor's root): one
   * shared actor system instead of one per connection saves ~2 KiB each.
   * Its inspector, if any, then sees this connection; `inspect` is ignored.
   */
  parent?: AnyActorRef | undefined;
  onMessage(connection: Connection<Auth>, data: Buffer, isBinary: boolean): void;
  onDeadLetter(letter: DeadLetter): void;
  onRtt?(rttMs: number): void;
  /** R21: messages per second this connection may send; 0 = no limit. */
  maxMessageRate?: number;
}

/** Close codes an application may send (RFC 6455 §7.4): 1000, 1001…1014 minus reserved, 3000–4999. */
export function assertSendableCloseCode(code: number): void {
  if (!isSendableCloseCode(code)) throw new RangeError(`ws-supervisor: invalid close code ${String(code)}: use 1000, 1001–1014 (not 1004–1006) or 3000–4999`);
}

export class Connection<Auth = unknown> {
  readonly id: string;
  readonly remoteAddress: string;
  /** The negotiated subprotocol ('' when none), R20. */
  readonly protocol: string;
  /** What `authenticate` returned for this connection. */
  readonly auth: Auth;
  readonly openedAt: number = Date.now();
  /** Resolves with the closure once the machine reaches `closed` (exactly once, R2). */
  readonly closed: Promise<Closure>;
  private readonly actor: Actor<typeof supervisedConnectionMachine>;
  private readonly io: SocketIO;

  constructor(init: ConnectionInit<Auth>) {
    this.id = init.id;
    this.remoteAddress = init.remoteAddress;
    this.protocol = init.protocol;
    this.auth = init.auth;
    const writer = new SendQueue(init.ws, init.socket, init.sendQueue, (data, binary, reason) =>
      init.onDeadLetter({ connectionId: init.id, data, binary, reason }),
    );
    this.io = {
      ws: init.ws,
      socket: init.socket,
      writer,
      stats: { messagesIn: 0, bytesIn: 0 },
      onMessage: (data, isBinary) => init.onMessage(this, data, isBinary),
      ...(init.onRtt ? { onRtt: init.onRtt } : {}),
      ...(init.maxMessageRate ? { limiter: new TokenBucket(init.maxMessageRate) } : {}),
    };
    this.actor = createActor(supervisedConnectionMachine, {
      id: `connection:${init.id}`,
      input: { id: init.id, timing: init.timing, io: this.io },
      ...(init.parent ? { parent: init.parent } : init.inspect ? { inspect: init.inspect } : {}),
    });
    this.closed = new Promise((resolve) => {
      this.actor.subscribe({
        complete: () => resolve(this.actor.getSnapshot().output!),
        // A throwing actor implementation is a bug in this library; still end cleanly.
        error: () =>
          resolve({
            code: 1011,
            reason: 'internal error',
            initiator: 'local',
            cause: 'terminated',
            expected: false,
            receivedCode: null,
          }),
      });
    });
  }

  /** Starts the machine (the reader reports the socket open at once). */
  start(): this {
    this.actor.start();
    return this;
  }

  /**
   * Queue a message (R9). Returns false if it was refused: the connection is
   * not open, or its queue is full (then it is closed as a slow consumer, R11).
   * An accepted message reaches the OS socket or comes back as a dead letter (R12).
   */
  send(data: Outbound, binary: boolean = typeof data !== 'string'): boolean {
    return this.io.writer.send(data, binary);
  }

  /** Start the close handshake (R16). Resolves when closed. */
  close(code = 1000, reason = '', cause?: CloseCause): Promise<Closure> {
    assertSendableCloseCode(code);
    if (Buffer.byteLength(reason) > 123) {
      throw new RangeError(`ws-supervisor: close reason must be at most 123 bytes, got ${Buffer.byteLength(reason)}`);
    }
    this.actor.send({ type: 'close', code, reason, ...(cause ? { cause } : {}) });
    return this.closed;
  }

  /** Drop the connection without a handshake. Resolves when closed. */
  terminate(reason = 'terminated'): Promise<Closure> {
    this.actor.send({ type: 'terminate', reason });
    return this.closed;
  }

  /** The machine's current state value, e.g. `{ open: { heartbeat: 'pinging', write: 'flowing' } }`. */
  get state(): ConnectionSnapshot['value'] {
    return this.actor.getSnapshot().value;
  }

  /** A flat name for the state: connecting | open | pinging | closing | closed (blocked writes show as open/pinging). */
  get stateName(): ConnectionStateName {
    return connectionStateName(this.actor.getSnapshot());
  }

  get isWriteBlocked(): boolean {
    return this.actor.getSnapshot().matches({ open: { write: 'blocked' } });
  }

  /** Last ping→pong round trip in ms (R4), null before the first pong. */
  get rttMs(): number | null {
    return this.actor.getSnapshot().context.rttMs;
  }

  get closure(): Closure | null {
    return this.actor.getSnapshot().context.closure;
  }

  get stats(): {
    messagesIn: number;
    bytesIn: number;
    messagesOut: number;
    bytesOut: number;
    queuedMessages: number;
    queuedBytes: number;
  } {
    const w = this.io.writer;
    return {
      messagesIn: this.io.stats.messagesIn,
      bytesIn: this.io.stats.bytesIn,
      messagesOut: w.messagesOut,
      bytesOut: w.bytesOut,
      queuedMessages: w.depth,
      queuedBytes: w.depthBytes,
    };
  }

  /** The underlying actor, for inspection and tests. */
  get machine(): Actor<typeof supervisedConnectionMachine> {
    return this.actor;
  }
}
