/**
 * A supervised connection: the handle the application holds. Its lifecycle is
 * the connection machine (machines/connection.machine.ts), hosted by a
 * MachineRunner (src/server/runner.ts) with the reader and writer actors; the data
 * path goes through the reader and writer directly.
 */
import type { Duplex } from 'node:stream';
import type WebSocket from 'ws';
import type { EventObject, InspectionEvent, Observer, SnapshotFrom } from 'xstate';
import {
  connectionMachine,
  connectionStateName,
  PAYLOAD_FREE_EVENTS,
  type ConnectionInput,
  type ConnectionStateName,
  type ConnectionTiming,
  type ReaderEvent,
  type WriterEvent,
} from '../../machines/connection.machine.ts';
import { isSendableCloseCode, type CloseCause, type Closure } from '../../machines/close-codes.ts';
import { TokenBucket } from './rate-limit.ts';
import { BudgetUse, type BudgetLimits, type TurnScheduler } from './scheduler.ts';
import { readerActor, SocketReader } from './reader.ts';
import { MachineRunner, type ActorParent, type HostedActor, type RunnerConfig, type RunnerHost } from './runner.ts';
import type { SocketIO } from './socket-io.ts';
import type { JsonValue, ResumeFailureReason } from '../adapter/session-store.ts';
import { isClientAck } from '../protocol/session.ts';
import { SendQueue, writerActor, type DeadLetterReason, type DeadLetterSink, type Outbound, type SendQueueLimits } from './writer.ts';

/**
 * The machine with the real actors as XState actors, provided once per
 * process (`.provide()` per socket rebuilds the state-node tree: measured over
 * 10k actors, 27.9 vs 11.5 KB each and 196 vs 76 µs to create, start and stop). The client runs it as a child actor; the server hosts the same
 * definition in a MachineRunner.
 */
export const supervisedConnectionMachine = connectionMachine.provide({
  actors: { reader: readerActor, writer: writerActor },
});

export type ConnectionSnapshot = SnapshotFrom<typeof connectionMachine>;

/**
 * What every connection of one supervisor shares with the others: the
 * machine, one input (so their snapshots are shared, src/server/runner.ts) and the
 * inspector. Make one per supervisor.
 */
export type ConnectionRunnerConfig = RunnerConfig<typeof connectionMachine>;

export function connectionRunnerConfig(
  timing: ConnectionTiming,
  inspect?: Observer<InspectionEvent> | ((event: InspectionEvent) => void),
): ConnectionRunnerConfig {
  return {
    machine: connectionMachine,
    input: { id: '', timing, io: null } satisfies ConnectionInput,
    payloadFree: PAYLOAD_FREE_EVENTS,
    ...(inspect ? { inspect } : {}),
  };
}

/** A message accepted for sending that never reached the OS socket (R12). */
export interface DeadLetter {
  connectionId: string;
  data: Outbound;
  /** Whether it was to go out as a binary frame. */
  binary: boolean;
  reason: DeadLetterReason;
}

/** Message and byte counts (payloads), in and out. */
export interface Traffic {
  messagesIn: number;
  bytesIn: number;
  messagesOut: number;
  bytesOut: number;
}

/** A connection's traffic so far (payload messages and bytes) and what waits in its send queue now. */
export interface ConnectionStats extends Traffic {
  queuedMessages: number;
  queuedBytes: number;
}

/** What `connection.session` says. */
export interface SessionInfo {
  id: string;
  /** True when this connection continues a session the client had (a resume that worked). */
  resumed: boolean;
  /** Why a resume the client asked for did not work (then this is a new session). */
  reason: ResumeFailureReason | null;
  detail: string | null;
}

/** The session side of a connection that opted in (src/server/sessions.ts implements it). */
export interface SessionHandle {
  readonly info: SessionInfo | null;
  send(data: Outbound, binary: boolean): boolean;
  receive(data: Buffer, isBinary: boolean): void;
  setData(value: JsonValue): void;
  /** The connection closed; returns whether it had been announced (a `connection` event). */
  closed(): boolean;
}

/** The owner's callbacks: one object per supervisor, shared by its connections. */
export interface ConnectionHooks<Auth = unknown> {
  onMessage(connection: Connection<Auth>, data: Buffer, isBinary: boolean): void;
  onDeadLetter(letter: DeadLetter): void;
  onRtt?(rttMs: number): void;
  /** The connection reached `closed`; called just before `closed` resolves. */
  onClose?(connection: Connection<Auth>, closure: Closure): void;
}

/** What every connection of one supervisor shares: one object per supervisor (each connection holds a pointer, not copies). */
export interface ConnectionShared<Auth = unknown> {
  hooks: ConnectionHooks<Auth>;
  /** From `connectionRunnerConfig(timing, inspect)`. */
  runner: ConnectionRunnerConfig;
  sendQueue: SendQueueLimits;
  /** R21: messages per second a connection may send; 0 = no limit. */
  maxMessageRate?: number;
  /** The supervisor's fair scheduler of inbound work. */
  scheduler?: TurnScheduler;
  /** Per-connection budgets per window. */
  budget?: BudgetLimits;
  /**
   * The supervisor's sessions (src/server/sessions.ts), when on: what a
   * connection's session binding reaches through its connection, one pointer
   * per supervisor instead of one per session (docs/performance.md,
   * "Sessions, ninth pass").
   */
  sessions?: unknown;
}

export interface ConnectionInit<Auth = unknown> {
  id: string;
  ws: WebSocket;
  socket: Duplex;
  /** The peer's address and port, as the socket reports them. */
  remoteHost: string;
  remotePort: number | undefined;
  protocol: string;
  auth: Auth;
  /** The supervisor's, the same object for all its connections. */
  shared: ConnectionShared<Auth>;
}

/**
 * `openedAt` is kept as ms since this instant: a small integer fits in the
 * field itself (a `Date.now()` is a heap number, 16 bytes more per connection).
 */
const EPOCH = Date.now();

function openedNow(): number {
  const ms = Date.now() - EPOCH;
  return ms <= 0x3fffffff ? ms | 0 : ms;
}

/** Close codes an application may send (RFC 6455 §7.4): 1000, 1001…1014 minus reserved, 3000–4999. */
export function assertSendableCloseCode(code: number): void {
  if (!isSendableCloseCode(code)) throw new RangeError(`ws-supervisor: invalid close code ${String(code)}: use 1000, 1001–1014 (not 1004–1006) or 3000–4999`);
}

const INTERNAL_ERROR: Closure = { code: 1011, reason: 'internal error', initiator: 'local', cause: 'terminated', expected: false, receivedCode: null };

/**
 * One supervised connection. It is itself what its reader and writer share
 * (SocketIO), the host of its machine run (RunnerHost) and the sink of its
 * dead letters: per-connection state lives in fields, behaviour on the
 * prototype, so an idle connection costs little more than its socket.
 */
export class Connection<Auth = unknown> implements SocketIO, RunnerHost, DeadLetterSink {
  readonly id: string;
  /** The negotiated subprotocol ('' when none), R20. */
  readonly protocol: string;
  /** What `authenticate` returned for this connection. */
  readonly auth: Auth;
  readonly ws: WebSocket;
  readonly socket: Duplex;
  readonly writer: SendQueue;
  readonly limiter: TokenBucket | undefined;
  messagesIn = 0;
  bytesIn = 0;
  /** Ms from EPOCH to the open: a small integer (`| 0`), held in the field itself, for the first 24 days of the process. */
  private readonly opened: number = openedNow();
  private readonly remoteHost: string;
  private readonly remotePort: number | undefined;
  private readonly shared: ConnectionShared<Auth>;
  private readonly runner: MachineRunner<typeof connectionMachine>;
  /** `closed`, made when first asked for (most connections are never awaited: no promise per idle connection). */
  private waiter: { promise: Promise<Closure>; settle: ((closure: Closure) => void) | null } | null = null;
  private rtt: number | null = null;
  /** This window's use of the budgets, and the budget exceeded; made on first use (an idle connection holds none). */
  private budgetUse: BudgetUse | null = null;
  /** This connection's closure, once ended (the runner hands each run its own copy of the output). */
  private ended: Closure | null = null;
  /** @internal Set for a connection that opted into a session (src/server/sessions.ts); null otherwise. */
  sessionBinding: SessionHandle | null = null;
  private appData: JsonValue = null;

  constructor(init: ConnectionInit<Auth>) {
    const shared = init.shared;
    this.id = init.id;
    this.protocol = init.protocol;
    this.auth = init.auth;
    this.ws = init.ws;
    this.socket = init.socket;
    this.remoteHost = init.remoteHost;
    this.remotePort = init.remotePort;
    this.shared = shared;
    this.limiter = shared.maxMessageRate ? new TokenBucket(shared.maxMessageRate) : undefined;
    this.writer = new SendQueue(this, shared.sendQueue, true);
    this.runner = new MachineRunner(shared.runner, this);
  }

  /** When it opened (ms since the epoch, as `Date.now()`). */
  get openedAt(): number {
    return EPOCH + this.opened;
  }

  /** @internal The supervisor's sessions (ConnectionShared.sessions), for the session binding. */
  get sessionsHost(): unknown {
    return this.shared.sessions;
  }

  /** @internal Fair scheduling of this connection's inbound work. */
  get scheduler(): TurnScheduler | undefined {
    return this.shared.scheduler;
  }

  /** The close reason of the budget this connection exceeded, once it has. */
  private get exceeded(): string | null {
    return this.budgetUse?.exceeded ?? null;
  }

  /** Resolves with the closure once the machine reaches `closed` (exactly once, R2). */
  get closed(): Promise<Closure> {
    let waiter = this.waiter;
    if (waiter === null) {
      const ended = this.ended;
      if (ended !== null) waiter = { promise: Promise.resolve(ended), settle: null };
      else {
        let settle!: (closure: Closure) => void;
        waiter = { promise: new Promise((resolve) => (settle = resolve)), settle };
      }
      this.waiter = waiter;
    }
    return waiter.promise;
  }

  /** Last ping→pong round trip in ms (R4), null before the first pong. */
  get rttMs(): number | null {
    return this.rtt;
  }

  /** `address:port` of the peer. */
  get remoteAddress(): string {
    return `${this.remoteHost}:${this.remotePort ?? '?'}`;
  }

  /** Starts the machine (the reader reports the socket open at once). */
  start(): this {
    this.runner.start();
    return this;
  }

  /**
   * Queue a message (R9). Returns false if it was refused: the connection is
   * not open, or its queue is full (then it is closed as a slow consumer, R11).
   * An accepted message reaches the OS socket or comes back as a dead letter (R12).
   */
  send(data: Outbound, binary: boolean = typeof data !== 'string'): boolean {
    // A session connection numbers and keeps every message (docs/sessions.md).
    if (this.sessionBinding !== null) return this.sessionBinding.send(data, binary);
    return this.writer.send(data, binary);
  }

  /**
   * @internal The hub's broadcast or publish. A session connection takes no
   * part: the supervisor appends every broadcast and publish to the sessions
   * themselves, at the call (docs/sessions.md, "Routing"), so a sliced
   * fan-out that reaches this connection late, or after it closed, can neither
   * skip nor repeat a message of its session.
   */
  fanOut(data: Outbound, binary: boolean, frame: Buffer, cork = false): boolean {
    if (this.sessionBinding !== null) return true;
    return this.writer.fanOut(data, binary, frame, cork);
  }

  /**
   * @internal A filtered broadcast: like `send`, but a connection without a
   * session writes `frame`, the message framed once for every receiver.
   */
  sendFramed(data: Outbound, binary: boolean, frame: Buffer, cork = false): boolean {
    if (this.sessionBinding !== null) return this.sessionBinding.send(data, binary);
    return this.writer.fanOut(data, binary, frame, cork);
  }

  /**
   * The session this connection carries: `{ id, resumed, reason, detail }`,
   * or null for a connection without one (it did not ask, or is not attached yet).
   */
  get session(): SessionInfo | null {
    return this.sessionBinding?.info ?? null;
  }

  /**
   * The application's per-connection data (JSON). On a session connection it
   * is kept in the session and comes back with it on a resume. Default null.
   */
  get data(): JsonValue {
    return this.appData;
  }

  set data(value: JsonValue) {
    this.appData = value;
    this.sessionBinding?.setData(value);
  }

  /** @internal A resumed session's data, without writing it back. */
  restoreData(value: JsonValue): void {
    this.appData = value;
  }

  /**
   * Charges fan-out cost to this connection: `cost` is recipients ×
   * bytes of a broadcast or publish made on its behalf (`supervisor.broadcast(data,
   * { from: connection })` does it for you). Returns false when this takes it
   * over its fan-out budget per window (`budget.fanOut`): the connection is then
   * closed 1008 (`fan-out budget over N per W s`) and the caller should not fan out.
   */
  charge(cost: number): boolean {
    if (this.exceeded !== null) return false;
    const limits = this.shared.budget;
    if (limits === undefined || limits.fanOut === 0) return true;
    const now = this.scheduler?.now ?? performance.now();
    const use = (this.budgetUse ??= new BudgetUse(now));
    const over = use.charge(limits, now, cost);
    if (over === null) return true;
    use.exceeded = over;
    this.runner.send({ type: 'socket.flood', rate: 0, reason: over });
    return false;
  }

  /** Start the close handshake (R16). Resolves when closed. */
  close(code = 1000, reason = '', cause?: CloseCause): Promise<Closure> {
    assertSendableCloseCode(code);
    if (Buffer.byteLength(reason) > 123) {
      throw new RangeError(`ws-supervisor: close reason must be at most 123 bytes, got ${Buffer.byteLength(reason)}`);
    }
    this.runner.send({ type: 'close', code, reason, ...(cause ? { cause } : {}) });
    return this.closed;
  }

  /** Drop the connection without a handshake. Resolves when closed. */
  terminate(reason = 'terminated'): Promise<Closure> {
    this.runner.send({ type: 'terminate', reason });
    return this.closed;
  }

  /** The machine's current state value, e.g. `{ open: { heartbeat: 'pinging', write: 'flowing' } }`. */
  get state(): ConnectionSnapshot['value'] {
    return this.runner.getSnapshot().value;
  }

  /** A flat name for the state: connecting | open | pinging | closing | closed (blocked writes show as open/pinging). */
  get stateName(): ConnectionStateName {
    return connectionStateName(this.runner.getSnapshot());
  }

  get isWriteBlocked(): boolean {
    return this.runner.getSnapshot().matches({ open: { write: 'blocked' } });
  }

  /** How it ended (R17), once `closed`; null before. */
  get closure(): Closure | null {
    if (this.ended !== null) return this.ended;
    const shared = this.runner.getSnapshot().context.closure;
    return shared === null ? null : { ...shared };
  }

  get stats(): ConnectionStats {
    const w = this.writer;
    return {
      messagesIn: this.messagesIn,
      bytesIn: this.bytesIn,
      messagesOut: w.messagesOut,
      bytesOut: w.bytesOut,
      queuedMessages: w.depth,
      queuedBytes: w.depthBytes,
    };
  }

  /**
   * The running machine, for inspection and tests: `getSnapshot()`,
   * `subscribe()`, and the `actorRef` of this connection's inspection events.
   */
  get machine(): MachineRunner<typeof connectionMachine> {
    return this.runner;
  }

  // SocketIO: what the reader calls.

  /** @internal Inbound data, straight to the application. */
  onMessage(data: Buffer, isBinary: boolean): void {
    if (this.sessionBinding !== null) return this.sessionBinding.receive(data, isBinary);
    this.shared.hooks.onMessage(this, data, isBinary);
  }

  /** @internal A session's ack (SocketIO.prompt): taken by the reader at once, not deferred to a later turn. */
  prompt(data: Buffer, isBinary: boolean): boolean {
    return this.sessionBinding !== null && !isBinary && isClientAck(data);
  }

  /** @internal A session request to run (once: src/server/sessions.ts decided). */
  runHandler(data: Buffer, isBinary: boolean): void {
    this.shared.hooks.onMessage(this, data, isBinary);
  }

  /** @internal Counts an inbound message (`control`: a ping or pong) against the budgets; the exceeded budget's close reason, or null. */
  inboundBudget(bytes: number, control = false): string | null {
    if (this.exceeded !== null) return this.exceeded;
    const limits = this.shared.budget;
    if (limits === undefined) return null;
    const now = this.scheduler?.now ?? performance.now();
    const use = (this.budgetUse ??= new BudgetUse(now));
    const over = use.inbound(limits, now, bytes, control);
    if (over !== null) use.exceeded = over;
    return over;
  }

  /** @internal */
  onRtt(rttMs: number): void {
    this.rtt = rttMs;
    this.shared.hooks.onRtt?.(rttMs);
  }

  // DeadLetterSink: what the writer calls (R12).

  /** @internal */
  deadLetter(data: Outbound, binary: boolean, reason: DeadLetterReason): void {
    // A session connection's frames are the store's to replay or hand back (its own dead letters, R12).
    if (this.sessionBinding !== null) return;
    this.shared.hooks.onDeadLetter({ connectionId: this.id, data, binary, reason });
  }

  // RunnerHost: what the machine run calls.

  /** @internal */
  get actorId(): string {
    return `connection:${this.id}`;
  }

  /** @internal R8: the machine's two actors, started when it invokes them and stopped when it reaches `closed`. */
  spawn(id: string, parent: ActorParent): HostedActor<never> {
    if (id === 'reader') return new SocketReader(this, parent as ActorParent<ReaderEvent>);
    return this.writer.attach(parent as ActorParent<WriterEvent>);
  }

  /** @internal */
  done(output: unknown): void {
    this.end(output as Closure);
  }

  /** @internal A throwing actor is a bug in this library; still end cleanly. */
  failed(): void {
    this.end(INTERNAL_ERROR);
  }

  private end(closure: Closure): void {
    if (this.ended !== null) return;
    this.ended = closure;
    const waiter = this.waiter;
    const settle = waiter?.settle;
    if (waiter) waiter.settle = null;
    settle?.(closure); // its reactions run after onClose: the owner's bookkeeping comes first
    this.shared.hooks.onClose?.(this, closure);
  }
}
