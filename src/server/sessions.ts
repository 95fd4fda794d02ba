/**
 * Sessions on the server (docs/sessions.md): a session outlives its
 * connections. This file is the supervisor's side of it:
 *
 * - `SessionBinding`, one per connection that opted in (`ws-session=1`): it
 *   speaks the session frames (src/protocol/session.ts) on that connection —
 *   the first frame `open`/`resume`, the `attached` answer and the replay,
 *   `<seq>:` headers on every message, acks both ways, requests run once;
 * - `Sessions`, one per supervisor: the store (src/adapter/session-store.ts),
 *   one session machine per session (machines/session.machine.ts) hosted on
 *   a MachineRunner as connections are, and the routing that makes every
 *   broadcast and publish reach every session exactly once: appended to each
 *   session this node runs, at the call; or, with a store that fans out
 *   itself (Redis), handed to the store once for every session of the
 *   cluster, its notifications delivered here (session-fanout.ts).
 *
 * Ordering: every message of a session is appended to the store, and written
 * to the connection when its append resolves. Stores resolve in call order,
 * and a binding writes seqs strictly in order anyway (a seq that arrives
 * early waits for the one before it; one already written by the replay is
 * skipped), so the client sees seq n+1 right after seq n, and the replay
 * before anything new.
 *
 * A store that answers in this process (the in-memory one) offers the data
 * path without promises (`SessionStore.sync`): an append is written in the
 * turn it is made, a request runs in the turn its frame arrived, an ack is
 * applied at once, each only when nothing of the session waits for the async
 * path before it (so the order above holds either way).
 */
import { randomBytes } from 'node:crypto';
import { capCloseReason, type Closure } from '../../machines/close-codes.ts';
import {
  SESSION_PAYLOAD_FREE_EVENTS,
  sessionMachine,
  type CarrierCommand,
  type Lease,
  type SessionEnding,
  type SessionEvent,
  type SessionMachine,
} from '../../machines/session.machine.ts';
import {
  GAP_READER_PAYLOAD_FREE_EVENTS,
  gapReaderMachine,
  type GapReaderEvent,
  type GapReaderMachine,
  type GapStoreCommand,
  type ReadOutcome,
} from '../../machines/gap-reader.machine.ts';
import {
  PENDING_REQUEST_PAYLOAD_FREE_EVENTS,
  pendingRequestMachine,
  type PendingRequestEvent,
  type PendingRequestMachine,
  type PendingRequestOutcome,
} from '../../machines/pending-request.machine.ts';
import { createMemorySessionStore, SESSION_STORE_DEFAULTS, type MemorySessionStoreOptions } from '../adapter/memory-session-store.ts';
import type {
  AckResult,
  AppendResult,
  RequestVerdict,
  JsonValue,
  SessionDeadLetter,
  ResumeResult,
  SessionRecord,
  SessionMessage,
  SessionSlot,
  SessionStore,
  StoredMessage,
  SessionStoreSync,
  SessionFanOut,
} from '../adapter/session-store.ts';
import { messageBytes } from '../adapter/session-store.ts';
import type { Logger } from '../base/logger.ts';
import { positiveInt } from '../base/checks.ts';
import {
  decodeBinaryData,
  decodeClientFrame,
  encodeAttached,
  encodeBinaryData,
  encodeDuplicate,
  encodePong,
  encodeServerAck,
  encodeSessionError,
  encodeTextData,
  type ResumeFailureReason,
} from '../protocol/session.ts';
import { TopicError, validateTopic } from '../protocol/topics.ts';
import type { Connection, SessionHandle, SessionInfo } from './connection.ts';
import { MachineRunner, type HostedActor, type RunnerConfig, type RunnerHost } from './runner.ts';
import { timerWheel, WheelTimer } from './timer-wheel.ts';
import { LogSummary } from './log-summary.ts';
import { fanOutFailureDetail, fanOutRefusedDetail, routeFanOut } from './session-fanout.ts';
import type { Outbound } from './writer.ts';
import { releaseChunkList, seqFrameOf } from './ws-internals.ts';

/** The supervisor option `sessions`: on when present. Store bounds go to the in-memory store (ignored when `store` is given). */
export interface SessionOptions<Auth = unknown> extends Omit<MemorySessionStoreOptions, 'now'> {
  /** Where sessions live. Default: `createMemorySessionStore(this object's bounds)`. `supervisor.close()` closes it. */
  store?: SessionStore;
  /**
   * The identity a session is bound to (a resume from another identity is
   * `forbidden`). Default: `auth` itself when a string or number, else its
   * `id` or `sub` property when that is one, else null (anonymous).
   */
  owner?: (auth: Auth) => string | null;
  /** Acknowledge client requests after this many. Default 32 (docs/sessions.md, "Acknowledgements"). */
  ackEvery?: number;
  /** …or this long after the first unacknowledged one, ms. Default 1000. */
  ackDelay?: number;
  /** A session connection must send `open` or `resume` within this many ms, else it is closed 1008. Default 10000 (as authenticateTimeout). */
  attachTimeout?: number;
  /**
   * How often this node calls the store's `sweep()` (expires sessions past
   * their window that no node's timer expires: a node that died) and retries
   * what a store failure left to do, ms. Default 5000 (docs/options.md).
   */
  sweepInterval?: number;
}

export const SESSION_DEFAULTS = {
  /** One 25-byte ack per 32 requests costs less than a field on every reply. */
  ackEvery: 32,
  /** A quiet client still learns within a second which requests ran (and forgets them). */
  ackDelay: 1000,
  /** As authenticateTimeout: a client that does not say open/resume in 10 s holds a slot for nothing. */
  attachTimeout: 10_000,
  /**
   * One cheap script per node per 5 s (nothing due: one sorted-set read); a
   * dead node's sessions expire at most 5 s late, and a session a store
   * failure left unpersisted is ended in the store within 5 s of its return.
   */
  sweepInterval: 5_000,
} as const;

/**
 * The seq jump of an unpersisted session (docs/sessions.md, "Store failures"):
 * its connection goes on numbering from 2^32 past what the store could have
 * assigned, so a later resume, on any node, presents a position the store
 * never reached and is answered `restarted` instead of continuing over the gap.
 */
/**
 * The detail of the store's copy of an unpersisted session, ended by `tick` (its tombstone: a later resume, on any
 * process, is answered `expired` with it). Before, it read as the resume window's ("detached for the resume window
 * (120000 ms)"), told to a client a second after its cut: `detail` must say why.
 */
export const UNPERSISTED_END_DETAIL = 'the session store failed on it: what was sent to it meanwhile is not in the store, so it cannot be resumed';

export const LOCAL_SEQ_JUMP = 2 ** 32;

/** A resume of a session the store failed on here: answered as if the store had lost it. */
function notPersistedFailure(): { reason: ResumeFailureReason; detail: string } {
  return { reason: 'restarted', detail: 'the session could not be persisted (the session store failed): it cannot be resumed' };
}


export interface ResolvedSessionOptions<Auth = unknown> {
  store: SessionStore;
  owner: (auth: Auth) => string | null;
  ackEvery: number;
  ackDelay: number;
  attachTimeout: number;
  sweepInterval: number;
  resumeWindow: number;
}

export function resolveSessionOptions<Auth>(options: SessionOptions<Auth>): ResolvedSessionOptions<Auth> {
  if (typeof options !== 'object' || options === null) {
    throw new RangeError(`ws-supervisor: option sessions must be an object ({} turns sessions on with the defaults), got ${String(options)}`);
  }
  const resumeWindow = positiveInt('sessions.resumeWindow', options.resumeWindow, SESSION_STORE_DEFAULTS.resumeWindow);
  return {
    // The memory store checks its own bounds and names a bad one.
    store: options.store ?? createMemorySessionStore({ ...options, resumeWindow }),
    owner: options.owner ?? defaultOwner,
    ackEvery: positiveInt('sessions.ackEvery', options.ackEvery, SESSION_DEFAULTS.ackEvery),
    ackDelay: positiveInt('sessions.ackDelay', options.ackDelay, SESSION_DEFAULTS.ackDelay),
    attachTimeout: positiveInt('sessions.attachTimeout', options.attachTimeout, SESSION_DEFAULTS.attachTimeout),
    sweepInterval: positiveInt('sessions.sweepInterval', options.sweepInterval, SESSION_DEFAULTS.sweepInterval),
    resumeWindow,
  };
}

/** docs/sessions.md, "Identity": the auth value itself when a string or number, else its id or sub. */
export function defaultOwner(auth: unknown): string | null {
  if (typeof auth === 'string') return auth;
  if (typeof auth === 'number') return String(auth);
  if (typeof auth === 'object' && auth !== null) {
    for (const key of ['id', 'sub'] as const) {
      const v = (auth as Record<string, unknown>)[key];
      if (typeof v === 'string') return v;
      if (typeof v === 'number') return String(v);
    }
  }
  return null;
}

export type { SessionInfo };

/** The supervisor's `session` event. */
export type SessionLifecycleEvent<Auth = unknown> =
  | { type: 'attached'; id: string; connection: Connection<Auth>; resumeFailed: { reason: ResumeFailureReason; detail: string } | null }
  | { type: 'resumed'; id: string; connection: Connection<Auth>; replayed: number }
  | { type: 'detached'; id: string; connection: Connection<Auth> }
  /** The session ended for good: `reason` expired (the resume window), overflow (a bound), ended (the client's `end` or the application). */
  | { type: 'expired' | 'overflowed' | 'ended'; id: string; detail: string }
  /**
   * The store failed on this session (`operation`): it cannot be resumed any
   * more (a resume gets `restarted`); its connection, if any, goes on carrying
   * it locally until it closes (docs/sessions.md, "Store failures").
   */
  | { type: 'unpersisted'; id: string; reason: 'store-failed'; operation: string; detail: string }
  /** A shared store's session was resumed on another node: this node's stale copy is dropped. */
  | { type: 'moved'; id: string; detail: string };

/** What the sessions need of their supervisor. */
export interface SessionsHost<Auth> {
  readonly logger: Logger | null;
  /** Makes a connection live: the hub registers it, joins it to `topics` (the session's), and the `connection` event fires. */
  announce(connection: Connection<Auth>, topics: Iterable<string>): void;
  emitSession(event: SessionLifecycleEvent<Auth>): void;
  deadLetter(letter: SessionDeadLetter): void;
  /**
   * R21: detached sessions one client address may hold here (the supervisor's maxConnectionsPerAddress). A detach
   * beyond it ends that address's oldest detached session, so that one address opening and cutting sessions in a loop
   * cannot push every other client's detached session out of the store's global bound (maxDetachedSessions).
   */
  readonly maxDetachedPerAddress: number;
  metrics: {
    resume(result: 'resumed' | 'failed', reason: ResumeFailureReason | 'none'): void;
    replayed(n: number): void;
    /** A store operation failed (rejected): counted by operation. */
    storeFailed(operation: string): void;
  };
}

/** An append in call order: handled when it and every append before it of the session have settled. */
interface PendingAppend {
  data: Outbound;
  binary: boolean;
  cseq: number;
  /** A broadcast or publish (reaches every node by itself) rather than a message sent to this session. */
  fanOut: boolean;
  settled: boolean;
  result: AppendResult | null;
  error: unknown;
  /** A request's reply whose store answer its ack waits for (SessionBinding.request): called once it settles. */
  stored?: () => void;
}

/** Entry's rarely used fields (Entry.rare). */
class EntryRare {
  /** The session's machine, once started (Entry.runner). */
  runner: MachineRunner<SessionMachine> | null = null;
  detachedAt: number | null = null;
  appends: (PendingAppend | undefined)[] | null = null;
  appendHead = 0;
  counting: Map<number, number> | null = null;
}

/** Entry's flags. */
const ENTRY_ENDED = 1;
const ENTRY_INCOMING = 2;

/**
 * One live session here: the host of its machine (machines/session.machine.ts)
 * and the machine's `carrier`, which terminates connections the session left
 * behind and whose stop releases the entry (R3).
 *
 * The machine is started at the session's first lifecycle event (`runner`),
 * not when the session opens: until then it would sit in the initial state
 * every session shares (attached, lease 0), which arms no delay and commands
 * nothing (test/machines/session.machine.test.ts holds the machine to that),
 * so starting it later changes nothing but the cost: an attached session that
 * never detaches holds no runner.
 */
class Entry<Auth> implements HostedActor<CarrierCommand>, RunnerHost, SessionSlot {
  /** The binding that carries the session (attached) or is replaying it; null while detached. */
  carrier: SessionBinding<Auth> | null = null;
  /**
   * The open connection holding the lease the machine last gave (carrying, replaying, or taken over and not yet
   * closed); from `carry` until its connection closes.
   */
  holder: SessionBinding<Auth> | null = null;
  /** Topic memberships (the store's, mirrored here so publishes route synchronously). NO_TOPICS (shared) until the first. */
  topics: ReadonlySet<string> = NO_TOPICS;
  /** `ended`, `incoming` (the accessors below), one bit each: one field where two took 8 bytes each. */
  private bits = 0;
  /** The highest request cseq this process ran for the session. */
  lastCseqRun = 0;
  /** The store's own record of the session, kept for it (SessionSlot: the sync data path finds it here, not by id). */
  storeRecord: unknown = undefined;
  /**
   * What few sessions ever need (the machine's runner, `detachedAt`,
   * `appends`, `appendHead`, `counting`: the accessors below), made on the
   * first non-empty one: an idle attached session holds one null instead of
   * five fields (docs/performance.md, "Sessions: idle" and "ninth pass").
   */
  private rare: EntryRare | null = null;

  constructor(
    private readonly sessions: Sessions<Auth>,
    readonly id: string,
  ) {}

  /** The session's machine if it was started, else null (no lifecycle event yet). */
  private get machine(): MachineRunner<SessionMachine> | null {
    const rare = this.rare;
    return rare === null ? null : rare.runner;
  }

  /** The session's machine, started on first use (an ended entry's never starts: events to it change nothing). */
  get runner(): MachineRunner<SessionMachine> {
    let runner = this.machine;
    if (runner === null) {
      runner = (this.rare ??= new EntryRare()).runner = new MachineRunner(this.sessions.machineConfig, this);
      if (this.ended) runner.stop();
      else runner.start();
    }
    return runner;
  }

  /** The lease the machine gave last (0, the opening connection's, until it is started). */
  get lease(): Lease {
    const runner = this.machine;
    return runner === null ? 0 : runner.getSnapshot().context.lease;
  }

  /**
   * The store failed on it (the machine's `unpersisted` state, kept in its
   * context through the end): no resume may continue it; its connection
   * carries it locally (docs/sessions.md, "Store failures"). False while
   * the machine is not started (no lifecycle event yet).
   */
  get unpersisted(): boolean {
    const runner = this.machine;
    return runner !== null && runner.getSnapshot().context.unpersisted;
  }

  /** Stops the machine without finishing it, if it was started. */
  stopMachine(): void {
    this.machine?.stop();
  }

  /** Set when the machine finished: entries are deleted then (R3). */
  get ended(): boolean {
    return (this.bits & ENTRY_ENDED) !== 0;
  }
  set ended(on: boolean) {
    this.bits = on ? this.bits | ENTRY_ENDED : this.bits & ~ENTRY_ENDED;
  }
  /** Made for a resume under way (Sessions.incoming): routed for fan-outs, no machine, no carrier yet. */
  get incoming(): boolean {
    return (this.bits & ENTRY_INCOMING) !== 0;
  }
  set incoming(on: boolean) {
    this.bits = on ? this.bits | ENTRY_INCOMING : this.bits & ~ENTRY_INCOMING;
  }

  /** When the session last detached (epoch ms); null while a connection carries it. */
  get detachedAt(): number | null {
    return this.rare === null ? null : this.rare.detachedAt;
  }
  set detachedAt(at: number | null) {
    if (this.rare !== null) this.rare.detachedAt = at;
    else if (at !== null) (this.rare = new EntryRare()).detachedAt = at;
  }
  /** Appends not yet handled, in call order (from `appendHead`): bounded by what the store has in flight. Made on the first async one. */
  get appends(): (PendingAppend | undefined)[] | null {
    return this.rare === null ? null : this.rare.appends;
  }
  set appends(appends: (PendingAppend | undefined)[] | null) {
    if (this.rare !== null) this.rare.appends = appends;
    else if (appends !== null) (this.rare = new EntryRare()).appends = appends;
  }
  /** No append waits in `appends` (one read of `rare`, on every append). */
  get appendsIdle(): boolean {
    const rare = this.rare;
    return rare === null || rare.appends === null || rare.appendHead >= rare.appends.length;
  }
  get appendHead(): number {
    return this.rare === null ? 0 : this.rare.appendHead;
  }
  set appendHead(head: number) {
    if (this.rare !== null) this.rare.appendHead = head;
    else if (head !== 0) (this.rare = new EntryRare()).appendHead = head;
  }
  /**
   * Requests whose `beginRequest` a binding of this process sent and has not
   * handled yet, by cseq (how many bindings): a `pending` verdict counted here
   * is waited for while one is, and run when none is (its count's answer was
   * lost). Made on the first; only the store's async path uses it.
   */
  get counting(): Map<number, number> | null {
    return this.rare === null ? null : this.rare.counting;
  }
  set counting(counting: Map<number, number> | null) {
    if (this.rare !== null) this.rare.counting = counting;
    else if (counting !== null) (this.rare = new EntryRare()).counting = counting;
  }

  /**
   * The live hub connection through which the application's sends reach this session; null while none carries it:
   * the holder's (set and cleared with it: a field of its own was 8 bytes per session).
   */
  get routed(): Connection<Auth> | null {
    const holder = this.holder;
    return holder === null ? null : holder.connection;
  }

  /** Made when an inspector or a log asks, not per session. */
  get actorId(): string {
    return `session:${this.id}`;
  }
  command(command: CarrierCommand): void {
    if (command.type === 'carrier.drop') this.sessions.dropConnection(this, command.lease, command.reason);
    else this.sessions.goLocal(this, command.lease);
  }
  stop(): void {
    this.sessions.release(this);
  }
  spawn(): HostedActor<never> {
    return this as unknown as HostedActor<never>;
  }
  done(output: unknown): void {
    this.sessions.finished(this, output as SessionEnding);
  }
  failed(error: unknown): void {
    this.sessions.host.logger?.error({ err: error, session: this.id }, 'session machine failed');
    this.sessions.release(this);
  }
}

/** The hub's topic membership (src/server/hub.ts; named here by shape: the hub's room imports the options, which import this file). */
export interface TopicMembers<Auth> {
  join(connection: Connection<Auth>, topic: string): boolean;
  leave(connection: Connection<Auth>, topic: string): boolean;
}

/** A detached session, for the dashboard. */
export interface DetachedSessionRow {
  id: string;
  /** Time since its connection went, ms. */
  detachedMs: number;
  bufferedMessages: number;
  bufferedBytes: number;
  topics: number;
}

export class Sessions<Auth = unknown> {
  readonly options: ResolvedSessionOptions<Auth>;
  readonly store: SessionStore;
  /** The store's data path without promises, when it offers one (the in-memory store). */
  readonly sync: SessionStoreSync | null;
  /** The store's own fan-out, when it has one (the Redis store): broadcasts and publishes go there once (session-fanout.ts). */
  readonly fanOut: SessionFanOut | null;
  /** Live sessions this supervisor runs a machine for. */
  private readonly entries = new Map<string, Entry<Auth>>();
  /** Client address → its detached sessions here, oldest first (R21, SessionsHost.maxDetachedPerAddress). Never an empty set. */
  private readonly detachedByAddress = new Map<string, Set<Entry<Auth>>>();
  /** The address each of those sessions is counted under. */
  private readonly detachedAddress = new Map<Entry<Auth>, string>();
  /** topic → the live sessions in it (attached or not). Never holds an empty set. */
  private readonly topicIndex = new Map<string, Set<Entry<Auth>>>();
  /** Session connections that have not sent `open`/`resume` yet (they count against maxConnections). */
  readonly pending = new Set<Connection<Auth>>();
  /** @internal One for every session's machine: no id in its input, so sessions share snapshots and steps (src/server/runner.ts). */
  readonly machineConfig: RunnerConfig<SessionMachine>;
  /** @internal One for every wait on a request another process counted (SessionBinding.settlePending). */
  readonly pendingConfig: RunnerConfig<PendingRequestMachine> = {
    machine: pendingRequestMachine,
    input: { timing: { first: PENDING_RETRY_FIRST, max: PENDING_RETRY_MAX, hereMax: PENDING_HERE_MAX } },
    payloadFree: PENDING_REQUEST_PAYLOAD_FREE_EVENTS,
  };
  /** @internal One for every connection's gap reader (SessionBinding; started at its first gap). */
  readonly gapConfig: RunnerConfig<GapReaderMachine>;
  private epoch: string | null = null;
  /**
   * Resumes under way here, by session: how many, and the highest seq a
   * fan-out notification named for the session meanwhile. The store runs the
   * resume (read and attach at one moment) and from then on tells this node
   * of the session's new seqs; but the notification comes on another Redis
   * connection than the resume's answer, and may be handled first, when no
   * connection here carries the session yet (or the old one still does): the
   * resumed connection reads up to that seq once it is attached (`resumed`).
   */
  private readonly resuming = new Map<string, { n: number; told: number }>();
  /** This supervisor's fan-outs are named `<fanOutBase>.<n>` (SessionFanOut's `id`): unique in the cluster. */
  private readonly fanOutBase = randomBytes(9).toString('base64url');
  private fanOutCount = 0;
  /**
   * This supervisor's fan-outs the store has not answered yet, by name: true
   * once a notification of one came (the store ran it, whatever its answer
   * says later: a lost connection, a timeout).
   */
  private readonly ownFanOuts = new Map<string, boolean>();
  /**
   * This supervisor's fan-outs that failed unconfirmed (`applied: 'unknown'`:
   * a timeout, a lost connection) with no notification of them here, by name,
   * with the `localClock` tick after their failure path: it delivered each to
   * the member sessions this node runs (unpersisted by it, or before), so a
   * late notification of one (the store ran it after all) is not delivered
   * again to a session that was local by that tick; one that went local later
   * (a session that came to this node since) gets it. The newest MAX_FAILED_FAN_OUTS.
   */
  private readonly failedFanOuts = new Map<string, number>();
  /**
   * The unpersisted sessions a connection here carries alone: every cluster
   * fan-out is written to them here (fanOutCopy, localFanOut), since the store
   * stops naming them once their copy is ended. Constant per session (no
   * names: those are kept once per node, `copied`, `awaitingCopy`).
   */
  private readonly localOnly = new Map<Entry<Auth>, LocalFanOuts>();
  /**
   * One clock for the moments that decide which path writes a fan-out to an
   * unpersisted session: a session going local (LocalFanOuts.from), a named
   * fan-out's copy taken (`copied`), a failure path run (`failedFanOuts`).
   */
  private localClock = 0;
  /**
   * Cross-node fan-outs whose adapter copy came, or that this node made
   * (MAX_FAN_OUT_NAMES), by name, with the `localClock` tick of that copy:
   * their notifications need no record; and the copy was written then to
   * every session local before that tick, so a notification of it that names
   * one of those is not written again (the node-wide record that replaced a
   * per-session one: docs/sessions.md, "An unpersisted session").
   */
  private readonly copied = new Map<string, number>();
  /**
   * Fan-outs notified here before their adapter copy came, with the sessions
   * each notification named (written under their seqs while attached): a
   * session that went local since must not get the copy as well.
   */
  private readonly awaitingCopy = new Map<string, Array<readonly { id: string }[]>>();
  /** Sessions named in `awaitingCopy`, over all its lists (MAX_AWAITING_SESSIONS). */
  private awaitingSessions = 0;
  /**
   * Unpersisted sessions still to be ended in the store (so that no node
   * resumes them over their gap), oldest first; retried every sweep and as
   * soon as the store says it is up. Bounded (MAX_TO_END): past it the oldest
   * is forgotten with a warning (its client's jumped seq still tells a resume
   * it cannot continue, see LOCAL_SEQ_JUMP).
   */
  private readonly toEnd = new Set<string>();
  /** Detaches that failed, retried by `tick` (bounded as toEnd). */
  private readonly toDetach = new Set<string>();
  /** Store failures: the first of a burst logged with its error, the rest one line per interval (LogSummary). */
  private readonly failureLog: LogSummary;
  private sweepTimer: NodeJS.Timeout | null = null;
  private sweeping = false;
  /** A tick was asked for while one ran (`tick`): run again once it ends; true if that one must sweep too. */
  private tickAgain: boolean | null = null;
  private closed_ = false;
  private readonly onStoreStatus = (status: string): void => {
    if (status === 'up') void this.tick(false);
  };
  private readonly onStoreEpoch = (_previous: string, current: string): void => this.learnEpoch(current);

  constructor(
    options: ResolvedSessionOptions<Auth>,
    readonly host: SessionsHost<Auth>,
  ) {
    this.options = options;
    this.store = options.store;
    this.sync = options.store.sync ?? null;
    this.fanOut = options.store.fanOut ?? null;
    this.machineConfig = { machine: sessionMachine, input: { timing: { resumeWindow: options.resumeWindow } }, payloadFree: SESSION_PAYLOAD_FREE_EVENTS };
    this.gapConfig = { machine: gapReaderMachine, input: { awaitAnswers: options.store.answered !== undefined }, payloadFree: GAP_READER_PAYLOAD_FREE_EVENTS };
    this.failureLog = new LogSummary({ logger: host.logger, what: `session store (${options.store.name}) failures` });
    this.store.start({
      logger: host.logger,
      deadLetter: (letter) => this.onStoreDeadLetter(letter),
      fanOutDelivered: (delivery) => {
        const name = delivery.fanOut;
        // A fan-out of this node that failed unconfirmed, run by Redis late: the failure path wrote it to the sessions
        // local by its tick (and only to those: a session that came here since gets it from this notification).
        const failedAt = name === undefined || this.ownFanOuts.has(name) ? undefined : this.failedFanOuts.get(name);
        if (name !== undefined) {
          if (this.ownFanOuts.has(name)) this.ownFanOuts.set(name, true);
          if (delivery.message !== null && !this.copied.has(name)) this.awaitCopy(name, delivery.sessions);
        }
        if (this.resuming.size > 0) {
          for (const { id, seq } of delivery.sessions) {
            const r = this.resuming.get(id);
            if (r !== undefined && seq > r.told) r.told = seq;
          }
        }
        routeFanOut(delivery, (id) => this.entries.get(id), (entry, reason, detail) => {
          this.overflowed(entry, reason === 'memory' || reason === 'evicted' ? reason : 'overflow', detail);
        }, (data, binary) => new FanOutFrames(data, binary), failedAt === undefined ? undefined : (entry) => {
          const local = this.localOnly.get(entry);
          return local !== undefined && local.from < failedAt;
        }, (entry, data, binary) => {
          this.localFanOut(entry, name ?? null, 2, data, binary, null);
        });
      },
      attachLost: (ids) => this.attachLost(ids),
      attachMoved: (ids) => this.attachMoved(ids),
      fanOutResync: () => {
        for (const entry of this.entries.values()) entry.carrier?.catchUp(Number.POSITIVE_INFINITY);
        for (const r of this.resuming.values()) r.told = Number.POSITIVE_INFINITY;
      },
    });
    // A shared store says when it is back (RedisSessionStore's 'status' event): what failed is retried at once.
    (this.store as Partial<StatusEmitter>).on?.('status', this.onStoreStatus);
    (this.store as Partial<EpochEmitter>).on?.('epochChanged', this.onStoreEpoch);
    this.sweepTimer = setInterval(() => void this.tick(true), options.sweepInterval);
    this.sweepTimer.unref();
  }

  /**
   * Every sweepInterval: the store's `sweep()` (a shared store: sessions
   * whose node died), and the ends of unpersisted sessions left to do. Every
   * store promise is awaited here; a failure is reported, never thrown.
   */
  private async tick(sweep: boolean): Promise<void> {
    if (this.closed_) return;
    if (this.sweeping) {
      // Not dropped: the store's 'up' often comes while a tick still awaits a store call made during the outage, and
      // the ends that tick took its list of before the outage was over are not those of the sessions unpersisted
      // since. Dropped, they waited a whole sweepInterval, and another process resumed such a session over the gap
      // meanwhile (resumed: true, the outage's messages missing: seen with Redis SIGSTOPped past commandTimeout).
      this.tickAgain = (this.tickAgain ?? false) || sweep;
      return;
    }
    this.sweeping = true;
    try {
      for (const id of [...this.toEnd]) {
        try {
          // Detach, then expire: both change nothing if another process attached the session since (a shared store
          // checks the attach generation), so a session resumed elsewhere is never ended under its new connection.
          await this.store.detach(id);
          await this.store.expire(id, UNPERSISTED_END_DETAIL);
          this.toEnd.delete(id);
          const entry = this.entries.get(id);
          const local = entry === undefined ? undefined : this.localOnly.get(entry);
          if (local !== undefined) {
            // Every notification Redis sent before the end handed over (the Redis store's `answered` waits for a PING
            // on the notification connection too): none names the session any more, so a fan-out its sender does not
            // name is written from its copy from now on. Named ones need nothing here: `copied` is node-wide and
            // kept by count, not dropped at the end, so a notification later than this barrier still finds it.
            await this.store.answered?.();
            local.storeGone = true;
          }
        } catch (err) {
          this.reportFailure('end', id, err);
          return; // still failing: the next tick tries again
        }
      }
      for (const id of [...this.toDetach]) {
        try {
          // A session resumed since (here or elsewhere) is not this process's to detach: the store checks.
          if (this.entries.get(id)?.carrier == null) await this.store.detach(id);
          this.toDetach.delete(id);
        } catch (err) {
          this.reportFailure('detach', id, err);
          return;
        }
      }
      if (sweep) {
        try {
          await this.store.sweep();
        } catch (err) {
          this.reportFailure('sweep', null, err);
        }
      }
    } finally {
      this.sweeping = false;
      const again = this.tickAgain;
      this.tickAgain = null;
      if (again !== null) void this.tick(again);
    }
  }

  /** A store call failed: counted (metric), logged once per burst plus one line per interval. */
  private reportFailure(operation: string, id: string | null, err: unknown): void {
    this.host.metrics.storeFailed(operation);
    const message = err instanceof Error ? err.message : String(err);
    this.failureLog.note(operation, 0, { err: message, operation, session: id }, `session store ${operation} failed: ${message}`);
  }

  /**
   * The store failed on `entry`: it can no longer be resumed over what the
   * store missed. Its connection (if any) carries it locally from now on;
   * the store's copy is ended as soon as the store answers.
   */
  private unpersist(entry: Entry<Auth>, operation: string, err: unknown): void {
    this.reportFailure(operation, entry.id, err);
    if (entry.unpersisted || entry.ended) return;
    const detail = `session store ${operation} failed: ${err instanceof Error ? err.message : String(err)}`;
    if (this.toEnd.size >= MAX_TO_END) {
      const oldest = this.toEnd.values().next().value!;
      this.toEnd.delete(oldest);
      this.host.logger?.warn({ session: oldest }, 'unpersisted sessions to end in the store: too many, forgetting the oldest (its client still cannot resume over the gap: its seqs jumped)');
    }
    this.toEnd.add(entry.id);
    this.host.emitSession({ type: 'unpersisted', id: entry.id, reason: 'store-failed', operation, detail });
    // A resume under way of another process's session (no machine, no connection yet): nothing here to carry it.
    if (entry.incoming) return entry.runner.send({ type: 'end', detail: `not persisted: ${detail}` });
    // The machine decides: carried (attached, resuming) → `unpersisted`, whose carrier goes local (goLocal); detached → ended.
    entry.runner.send({ type: 'unpersist', detail });
  }

  /**
   * The store failed on session `id` here: its machine is unpersisted, or
   * its store copy is still to be ended (`toEnd`: also once its entry has
   * gone). A resume must not continue it over what the store missed.
   */
  private notPersisted(id: string): boolean {
    return this.entries.get(id)?.unpersisted === true || this.toEnd.has(id);
  }

  /**
   * The store no longer counts these sessions attached here (their lease
   * lapsed: this node stalled past `leaseTtl`, and a sweep detached them; or
   * another node ended one, say the application's `end` there):
   * fan-outs go on appending to their streams but tell no node, so a
   * connection here would miss them, silently. Each connection that still
   * carries one (persisted, no resume of it under way) is closed 1011
   * `session lease lapsed`: its client resumes (here or anywhere), and the
   * replay brings what it missed. The session is not ended: the store holds
   * it, detached, for its resume window.
   */
  private attachLost(ids: string[]): void {
    let closed = 0;
    for (const id of ids) {
      const entry = this.entries.get(id);
      const carrier = entry?.carrier;
      if (entry === undefined || carrier == null || entry.ended || entry.incoming || entry.unpersisted || this.resuming.has(id)) continue;
      closed++;
      void carrier.connection.close(1011, 'session lease lapsed');
    }
    // One line per renewal, however many (a stall lapses every lease of the node at once).
    if (closed > 0) this.host.logger?.warn({ sessions: closed, first: ids[0] }, `session store: the leases of ${closed} attached sessions lapsed (this process stalled past leaseTtl; another detached them): their connections are closed, their clients resume`);
  }

  /**
   * Another node attached these sessions since this one did (a takeover
   * across nodes: the client resumed there while its connection here stayed
   * open, half-open, or simply left open by the client). As a takeover on
   * one node does (`carrier.drop`), the connection is terminated: no close
   * handshake with a peer that has moved on. Its close then runs the usual
   * detach, which the store refuses (another node holds a newer attach), and
   * this node's copy of the session goes (`moved`). Not while a resume of the
   * session is under way here (the store's answer to it decides).
   */
  private attachMoved(ids: string[]): void {
    for (const id of ids) {
      const entry = this.entries.get(id);
      const carrier = entry?.carrier;
      if (entry === undefined || carrier == null || entry.ended || entry.incoming || entry.unpersisted || this.resuming.has(id)) continue;
      void carrier.connection.terminate('session resumed on another node');
    }
  }

  /**
   * The store's epoch is `epoch` (its 'epochChanged' event: the Redis store
   * notes the epoch of every answer that says one, in the order Redis ran
   * them, before the caller's continuation: a reconnect, a renewal, a
   * created session, a resume claim it found current). Another than this
   * node knew: the store lost its data (Redis restarted empty, or flushed),
   * and with it every session this node runs (all attached under the old
   * epoch: the node learns a new one before it attaches anything under it).
   * No fan-out names them any more, so a connection left open would get no
   * cluster broadcast or publish, and no word of why: each ends here, its
   * connection closed 1011 `session store restarted`; its client resumes and
   * is answered `restarted` (docs/sessions.md, "Store failures"). Not the
   * unpersisted ones (their connections carry them alone already), nor a
   * resume under way of another node's session (the store answers it).
   */
  private learnEpoch(epoch: string): void {
    const known = this.epoch;
    this.epoch = epoch;
    if (known === null || known === epoch) return;
    const detail = 'the session store lost its data (redis restarted empty or was flushed): the session is gone';
    for (const entry of [...this.entries.values()]) {
      if (entry.ended || entry.incoming || entry.unpersisted) continue;
      const carrier = entry.carrier;
      entry.runner.send({ type: 'end', detail });
      if (carrier !== null) void carrier.connection.close(1011, 'session store restarted');
    }
  }

  /**
   * @internal carrier.unpersist: the connection holding `lease` carries the session alone from now on (its seqs jump).
   *
   * The no-carrier branch stays here, not in the session machine: whether a connection of `lease` is here is this
   * host's fact, which the machine cannot see. It enters `unpersisted` only from attached or resuming, where the host
   * always holds a carrier of its lease (set in the turn of the open or resume, cleared in the turn of the detach), so
   * the branch only guards that invariant. If it breaks, the fact goes in the machine's own word for it (that lease's
   * connection is gone: `detach`) and the machine decides as for a close (unpersisted → ended); a new event would
   * repeat `detach`, or add guarded transitions for a state this host does not produce.
   */
  goLocal(entry: Entry<Auth>, lease: Lease): void {
    const carrier = entry.carrier;
    if (carrier !== null && carrier.lease === lease) {
      carrier.unpersist();
      // With a store that fans out itself, the cluster's fan-outs reach it from here on through this node (fanOutCopy).
      if (this.fanOut !== null && !this.localOnly.has(entry)) this.localOnly.set(entry, { from: ++this.localClock, storeGone: false, since: this.fanOutCount });
    } else if (carrier === null) entry.runner.send({ type: 'detach', lease });
  }

  /** Sessions whose connection is gone, waiting for their client. */
  get detachedCount(): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.carrier === null) n++;
    return n;
  }

  /** The `limit` longest-detached sessions, with what the store holds for each (the dashboard). */
  async detachedRows(limit: number): Promise<{ detached: number; rows: DetachedSessionRow[] }> {
    const detached = [...this.entries.values()].filter((e) => e.carrier === null && !e.ended && e.detachedAt !== null);
    detached.sort((a, b) => a.detachedAt! - b.detachedAt!);
    const now = Date.now();
    const rows: DetachedSessionRow[] = [];
    for (const e of detached.slice(0, limit)) {
      const record = await this.store.get(e.id);
      if (record === null) continue;
      rows.push({ id: e.id, detachedMs: now - e.detachedAt!, bufferedMessages: record.bufferedMessages, bufferedBytes: record.bufferedBytes, topics: record.topics.length });
    }
    return { detached: detached.length, rows };
  }

  /** A new connection asked for a session: it speaks the session frames from its first one. */
  bind(connection: Connection<Auth>): SessionBinding<Auth> {
    this.pending.add(connection);
    return new SessionBinding(this, connection);
  }

  // -------------------------------------------------------------------------
  // Fan-out: every session gets every broadcast and publish here, at the call,
  // attached or not (the hub skips session connections: Connection.fanOut), so
  // a connection that closes or arrives while a sliced fan-out is under way
  // changes nothing for its session.

  /**
   * `scope` 'cluster': a broadcast made on this node for the whole cluster.
   * With a store that fans out itself it goes there, once, for every session
   * of the cluster (returns the fan-out's name: the other nodes must not
   * append it again, and write it by that name to their unpersisted sessions
   * only), and is written at once to this node's unpersisted sessions;
   * otherwise, and for 'local' (`broadcast(…, { local: true })`, or another
   * node's broadcast that its store did not fan out), it is appended to each
   * session this node runs (null).
   */
  broadcastSessions(data: Outbound, binary: boolean, scope: 'cluster' | 'local' = 'local'): string | null {
    if (scope === 'cluster' && this.fanOut !== null) return this.clusterFanOut(this.fanOut, null, data, binary);
    // One message object, counted once, for every session (the store keeps its data by reference), and its frames
    // shared by the sessions at the same seq.
    const message: FanOutMessage = { data, binary, bytes: messageBytes(data), shared: true, frames: new FanOutFrames(data, binary) };
    for (const entry of this.entries.values()) if (!entry.ended) this.append(entry, data, binary, 0, true, message);
    return null;
  }

  /**
   * A filtered broadcast (the filter sees connections, and stays on this
   * node): appended at the call to every session a connection here carries
   * and the filter keeps, judged on that connection. Returns how many.
   * Not a fan-out: like a send to the session, one that moved to another node
   * meanwhile becomes a dead letter (`moved`, R12), since no other node gets it.
   */
  broadcastFiltered(filter: (connection: Connection<Auth>) => boolean, data: Outbound, binary: boolean): number {
    let n = 0;
    // One message for all (the memory store holds it by reference, not a copy in each session's arena).
    const message: SessionMessage = { data, binary, bytes: messageBytes(data), shared: true };
    for (const entry of this.entries.values()) {
      const route = entry.routed;
      if (entry.ended || route === null || !filter(route)) continue;
      this.append(entry, data, binary, 0, false, message);
      n++;
    }
    return n;
  }

  /** As `broadcastSessions`, for the sessions in `topic`. */
  publishSessions(topic: string, data: Outbound, binary: boolean, scope: 'cluster' | 'local' = 'local'): string | null {
    if (scope === 'cluster' && this.fanOut !== null) return this.clusterFanOut(this.fanOut, topic, data, binary);
    const members = this.topicIndex.get(topic);
    if (!members) return null;
    const message: FanOutMessage = { data, binary, bytes: messageBytes(data), shared: true, frames: new FanOutFrames(data, binary) };
    for (const entry of members) this.append(entry, data, binary, 0, true, message);
    return null;
  }

  /**
   * A cluster fan-out's message as this node has it besides the store's
   * notifications: another node's, by the adapter (`sessionsReached`), or its
   * own at the call. Written to the unpersisted sessions here in it (the
   * store stops naming them once their copy is ended), unless the store's
   * notification wrote it to the session first (`awaitingCopy`: the sessions
   * its notifications named, before or after the session went local). Its
   * tick in `copied` tells a later notification which sessions it was
   * written to: those local before it. `name` null: a sender that does not
   * name its fan-outs; written only where no notification can come.
   *
   * Cost: one pass over the unpersisted sessions here (or over the topic's
   * members, when fewer), no copy of either; memory: nothing per session.
   */
  fanOutCopy(name: string | null, topic: string | null, data: Outbound, binary: boolean): void {
    let notified: Array<readonly { id: string }[]> | undefined;
    const tick = ++this.localClock;
    if (name !== null) {
      notified = this.awaitingCopy.get(name);
      if (notified !== undefined) this.forgetAwaiting(name, notified);
      // A copy brought twice (never expected) keeps its first tick: the sessions written then are not written again.
      if (!this.copied.has(name)) {
        if (this.copied.size >= MAX_FAN_OUT_NAMES) this.copied.delete(this.copied.keys().next().value!);
        this.copied.set(name, tick);
      } else return;
    }
    if (this.localOnly.size === 0) return;
    let before: Set<string> | null = null;
    if (notified !== undefined) {
      before = new Set();
      for (const sessions of notified) for (const { id } of sessions) before.add(id);
    }
    const members = topic === null ? undefined : this.topicIndex.get(topic);
    if (topic !== null && members === undefined) return;
    // Map and Set iteration survive deletes (a connection that closes on a write); a session going local meanwhile
    // is visited but skipped (its `from` is past `tick`: a notification of this fan-out still writes it).
    const pass: Iterable<Entry<Auth>> = members !== undefined && members.size < this.localOnly.size ? members : this.localOnly.keys();
    for (const entry of pass) {
      const local = this.localOnly.get(entry);
      if (local === undefined || local.from > tick) continue;
      if (topic !== null && !entry.topics.has(topic)) continue;
      if (!this.localFanOut(entry, name, 1, data, binary, before)) {
        const bytes = messageBytes(data);
        this.host.deadLetter({
          sessionId: entry.id,
          reason: 'unavailable',
          detail: 'the session store failed on the session and its connection could not take a cluster fan-out',
          messages: [{ seq: 0, data, binary, bytes }],
        });
      }
    }
  }

  /**
   * Writes fan-out `name` to the unpersisted session `entry` unless it was
   * written already. `path` 1: the adapter's copy or the call (fanOutCopy:
   * skipped where a notification came first, `before`); 2: the store's
   * notification (skipped where the copy came first: `copied` holds a tick
   * after the session went local). False only when it was due and the
   * connection could not take it.
   */
  private localFanOut(entry: Entry<Auth>, name: string | null, path: 1 | 2, data: Outbound, binary: boolean, before: Set<string> | null): boolean {
    const carrier = entry.carrier;
    if (entry.ended || carrier === null) return true; // its end (a connection that closed) reports what it held
    const local = this.localOnly.get(entry);
    if (local === undefined) return carrier.deliverLocal(data, binary);
    if (name === null) return path === 2 || local.storeGone ? carrier.deliverLocal(data, binary) : true;
    if (path === 1) {
      if (before?.has(entry.id)) return true;
    } else {
      const copiedAt = this.copied.get(name);
      if (copiedAt !== undefined && copiedAt > local.from) return true;
    }
    return carrier.deliverLocal(data, binary);
  }

  /**
   * @internal Test hook: what the fan-out bookkeeping of unpersisted sessions holds (docs/sessions.md, "An
   * unpersisted session"): the sessions, and every fan-out name kept for them, node-wide (a name counted once per
   * record that holds it). Bounded by MAX_FAN_OUT_NAMES × 3, whatever the number of sessions.
   */
  localFanOutState(): { unpersisted: number; names: number } {
    return { unpersisted: this.localOnly.size, names: this.copied.size + this.failedFanOuts.size + this.awaitingCopy.size };
  }

  /** A notification of fan-out `name` came before its adapter copy: the sessions it named (attached) have it. */
  private awaitCopy(name: string, sessions: readonly { id: string }[]): void {
    this.awaitingSessions += sessions.length;
    const list = this.awaitingCopy.get(name);
    if (list !== undefined) list.push(sessions);
    else this.awaitingCopy.set(name, [sessions]);
    // The oldest first (never the one just noted unless it alone is past the bound).
    while (this.awaitingCopy.size > MAX_FAN_OUT_NAMES || (this.awaitingSessions > MAX_AWAITING_SESSIONS && this.awaitingCopy.size > 1)) {
      const [oldest, lists] = this.awaitingCopy.entries().next().value!;
      this.forgetAwaiting(oldest, lists);
    }
  }

  private forgetAwaiting(name: string, lists: Array<readonly { id: string }[]>): void {
    this.awaitingCopy.delete(name);
    for (const sessions of lists) this.awaitingSessions -= sessions.length;
  }

  /**
   * A broadcast (`topic` null) or publish made here for the whole cluster: to the store, once, under a new name
   * (`ownFanOuts` until it answers; its failure path on a rejection), and at once to this node's unpersisted
   * sessions (fanOutCopy). Returns the name.
   */
  private clusterFanOut(fanOut: SessionFanOut, topic: string | null, data: Outbound, binary: boolean): string {
    const message: SessionMessage = { data, binary, bytes: messageBytes(data) };
    const name = `${this.fanOutBase}.${++this.fanOutCount}`;
    const n = this.fanOutCount;
    this.ownFanOuts.set(name, false);
    // Made by a request's handler in its turn: the store fences it by that request's count (FanOutFence, RUNNING).
    const fence = RUNNING.fence !== null && RUNNING.owner === this ? { sessionId: RUNNING.fence, cseq: RUNNING.cseq } : undefined;
    const call = topic === null ? fanOut.broadcast(message, name, fence) : fanOut.publish(topic, message, name, fence);
    const kind = topic === null ? 'broadcast' : 'publish';
    call.then(
      (r) => {
        this.ownFanOuts.delete(name);
        if (r.refused !== undefined) this.fanOutRefused(kind, topic, message, r.refused);
      },
      (err: unknown) => this.fanOutFailed(kind, topic, message, err, name, n),
    );
    this.fanOutCopy(name, topic, data, binary);
    return name;
  }

  /**
   * The store refused a fan-out made here: its fence (FanOutFence: another node attached the request's session since
   * and took its count over, this process having stalled past its lease, so the request ran again there and made its
   * fan-out there), or its age (one without a fence, queued two thirds of a lease: the Redis store's own queue); it reached no session. R12: one dead letter (reason
   * `fanout`, session `*`: its members are not known here), never a silent drop nor a second push. Not a failure of
   * the store: nothing goes unpersisted, and no failure is counted.
   */
  private fanOutRefused(kind: 'broadcast' | 'publish', topic: string | null, message: SessionMessage, why: string): void {
    const detail = fanOutRefusedDetail(kind, topic, why);
    this.host.logger?.warn({ topic, detail }, 'session fan-out refused by the store, appended to no session (this process stalled past its lease)');
    const bytes = message.bytes ?? messageBytes(message.data);
    this.host.deadLetter({ sessionId: '*', reason: 'fanout', detail, messages: [{ seq: 0, data: message.data, binary: message.binary, bytes }] });
  }

  /**
   * The store failed on a fan-out (R12: reported, never a silent gap): the
   * failure metric; one dead letter (reason `fanout`, session `*`) for the
   * cluster's sessions, which this node cannot name; and each member session this node runs is
   * handled as when its own append fails: unpersisted, the message written
   * on its connection, or a dead letter of its own when it has none.
   * Except when a notification of it came: the store ran it (its answer was
   * lost), so every member gets it from the store, once: counted only.
   * Unconfirmed, a late notification of it is not delivered again to the
   * sessions this delivered it to (`failedFanOuts`).
   */
  private fanOutFailed(kind: 'broadcast' | 'publish', topic: string | null, message: SessionMessage, err: unknown, name: string, n: number): void {
    this.reportFailure(kind, null, err);
    const told = this.ownFanOuts.get(name) === true;
    this.ownFanOuts.delete(name);
    if (told) return;
    const bytes = message.bytes ?? messageBytes(message.data);
    const stored = { seq: 0, data: message.data, binary: message.binary, bytes };
    this.host.deadLetter({ sessionId: '*', reason: 'fanout', detail: fanOutFailureDetail(kind, topic, err), messages: [stored] });
    const members = topic === null ? [...this.entries.values()] : [...(this.topicIndex.get(topic) ?? [])];
    for (const entry of members) {
      if (entry.ended) continue;
      this.unpersist(entry, kind, err);
      // Written once: a session that went local before the call (its `since` below the fan-out's number) got it at
      // the call (fanOutCopy); one that went local since gets it here (no notification of it came: `told`).
      if ((this.localOnly.get(entry)?.since ?? n) < n) continue;
      if (entry.carrier !== null && this.localFanOut(entry, name, 1, message.data, message.binary, null)) continue;
      this.host.deadLetter({ sessionId: entry.id, reason: 'unavailable', detail: 'the session store failed on a fan-out and no connection carries the session here', messages: [stored] });
    }
    if ((err as { applied?: unknown } | null)?.applied === 'unknown') {
      // After the walk: every session it wrote to (or that got it at the call) is local by this tick.
      if (this.failedFanOuts.size >= MAX_FAILED_FAN_OUTS) this.failedFanOuts.delete(this.failedFanOuts.keys().next().value!);
      this.failedFanOuts.set(name, ++this.localClock);
    }
  }

  /**
   * `supervisor.join` on a session connection: the session joins, and the
   * connection that carries it now, if any, joins the hub's topic (for
   * `topicsOf`, `memberCount`). That may be another connection than the one
   * given, or none: a handler can run for a connection that has closed since,
   * or that a resume took over (a request the store admitted runs whatever
   * became of its connection: `SessionBinding.request`). The session outlives
   * its connection, so its membership follows: publishes are kept for it while
   * detached, and a resume restores it. True if the session joined, false if
   * it was a member. Throws TopicError as `Hub.join` (`not-connected` only
   * for a connection whose session has ended).
   */
  join(connection: Connection<Auth>, topic: string, hub: TopicMembers<Auth>, maxTopics: number): boolean {
    const entry = this.liveEntryOf(connection);
    if (entry === null) return hub.join(connection, topic);
    validateTopic(topic);
    const route = entry.routed;
    const had = entry.topics.has(topic);
    // The hub checks the limit of the connection that carries the session; with none, the same limit on the session.
    if (route !== null) hub.join(route, topic);
    else if (!had && entry.topics.size >= maxTopics) throw new TopicError('too-many-topics', `already in ${maxTopics} topics (the limit per connection)`);
    if (had) return false;
    if (entry.topics === NO_TOPICS) entry.topics = new Set();
    (entry.topics as Set<string>).add(topic);
    this.index(entry, topic, true);
    // Not kept: a resume elsewhere would come back without it, so the session must not be resumed at all.
    if (!entry.unpersisted) this.store.join(entry.id, topic).catch((err: unknown) => this.unpersist(entry, 'join', err));
    return true;
  }

  /** `supervisor.leave` on a session connection: as `join`, the session leaves, and the connection that carries it. */
  leave(connection: Connection<Auth>, topic: string, hub: TopicMembers<Auth>): boolean {
    const entry = this.liveEntryOf(connection);
    if (entry === null) return hub.leave(connection, topic);
    validateTopic(topic);
    const route = entry.routed;
    const hubLeft = route !== null && hub.leave(route, topic);
    if (!(entry.topics as Set<string>).delete(topic)) return hubLeft;
    this.index(entry, topic, false);
    if (!entry.unpersisted) this.store.leave(entry.id, topic).catch((err: unknown) => this.unpersist(entry, 'leave', err));
    // Unpersisted, its store copy still names it in the topic until it is ended, and a store that fans out itself
    // would go on telling this node of the topic's publishes, whose notifications do not say the topic (localFanOut
    // cannot check it): left there too, best effort (a failure is counted; the end removes it anyway).
    else if (this.fanOut !== null) this.store.leave(entry.id, topic).catch((err: unknown) => this.reportFailure('leave', entry.id, err));
    return true;
  }

  /** The live session a connection carries or carried (attached, detached, or taken over since); null if none or ended. */
  private liveEntryOf(connection: Connection<Auth>): Entry<Auth> | null {
    const entry = (connection.sessionBinding as SessionBinding<Auth> | null)?.entry ?? null;
    return entry !== null && !entry.ended ? entry : null;
  }

  // -------------------------------------------------------------------------
  // Appending: every message of a session goes through here

  /**
   * `cseq`: the request whose handler is running (its reply seqs are remembered), 0 none.
   * `fanOut`: a broadcast or publish (every node gets it by itself).
   *
   * Appends are handled in call order (`appends`), whatever order the store
   * settles them in: a failure between two successes cannot reorder them.
   */
  append(entry: Entry<Auth>, data: Outbound, binary: boolean, cseq: number, fanOut = false, message?: SessionMessage): void {
    const sync = this.sync;
    const idle = entry.appendsIdle;
    let result: AppendResult | null = null;
    let error: unknown = null;
    if (sync !== null && !entry.unpersisted) {
      // Counted once here: the store bounds the session with it, and the frame is sized by it (`deliver`).
      const m = message ?? { data, binary, bytes: messageBytes(data) };
      // Answered now (the in-memory store): no promise; handled in call order all the same (after any still queued).
      try {
        result = sync.append(entry.id, m, cseq !== 0 ? cseq : undefined, entry);
      } catch (err) {
        error = err ?? new Error('session store append failed');
      }
      // The usual case, handled here without an item: kept, and nothing queued before it.
      if (idle && result !== null && result.ok) {
        entry.carrier?.deliver(result.seq, data, binary, (message as FanOutMessage | undefined)?.frames ?? null, m.bytes);
        return;
      }
    }
    const item: PendingAppend = { data, binary, cseq, fanOut, settled: entry.unpersisted || sync !== null, result, error };
    if (sync !== null && idle) return this.settleAppend(entry, item);
    if (!item.settled) {
      this.store.append(entry.id, message ?? { data, binary }, cseq !== 0 ? cseq : undefined).then(
        (r) => {
          item.settled = true;
          item.result = r;
          this.flushAppends(entry);
          item.stored?.();
        },
        (err: unknown) => {
          item.settled = true;
          item.error = err ?? new Error('session store append failed');
          this.flushAppends(entry);
          item.stored?.();
        },
      );
    }
    (entry.appends ??= []).push(item);
    if (item.settled) this.flushAppends(entry);
  }

  private flushAppends(entry: Entry<Auth>): void {
    const q = entry.appends;
    if (q === null) return;
    while (entry.appendHead < q.length) {
      const item = q[entry.appendHead]!;
      if (!item.settled) return;
      q[entry.appendHead++] = undefined;
      this.settleAppend(entry, item);
    }
    q.length = 0;
    entry.appendHead = 0;
  }

  private settleAppend(entry: Entry<Auth>, item: PendingAppend): void {
    const id = entry.id;
    const r = item.result;
    if (item.error !== null) this.unpersist(entry, 'append', item.error);
    else if (r !== null && !r.ok) {
      if (r.reason === 'moved') return this.moved(entry, item, r.detail);
      // The store made it a dead letter (handed to the host already). A bound ended the session.
      if (r.reason === 'overflow' || r.reason === 'memory') this.overflowed(entry, r.reason, r.detail);
      return;
    } else if (r !== null && !entry.unpersisted) {
      entry.carrier?.deliver(r.seq, item.data, item.binary);
      return;
    }
    // Unpersisted: the connection carries it, numbered locally; with none, it is a dead letter (R12).
    if (entry.carrier?.deliverLocal(item.data, item.binary)) return;
    const bytes = typeof item.data === 'string' ? Buffer.byteLength(item.data) : item.data.length;
    this.host.deadLetter({
      sessionId: id,
      reason: 'unavailable',
      detail: 'the session store failed and no connection carries the session here',
      messages: [{ seq: 0, data: item.data, binary: item.binary, bytes }],
    });
  }

  /** The shared store says another node attached the session since this one held it: this copy is stale. */
  private moved(entry: Entry<Auth>, item: PendingAppend, detail: string): void {
    if (!item.fanOut) {
      // Sent to this session here (a reply, the application's send): it cannot follow the session to the other node.
      const bytes = typeof item.data === 'string' ? Buffer.byteLength(item.data) : item.data.length;
      this.host.deadLetter({ sessionId: entry.id, reason: 'moved', detail, messages: [{ seq: 0, data: item.data, binary: item.binary, bytes }] });
    }
    this.drop(entry, detail);
  }

  /**
   * This node's copy of the session is stale (the store holds a newer attach,
   * from another node): it goes, with its connection if one is still open
   * here, so that it appends nothing more to the session.
   */
  private drop(entry: Entry<Auth>, detail: string): void {
    if (entry.ended) return;
    const carrier = entry.carrier;
    entry.stopMachine();
    this.release(entry);
    // Still open here (half-open, or slow to notice): the session lives on the other node now.
    if (carrier !== null) {
      carrier.leave();
      void carrier.connection.terminate('session resumed on another node');
    }
    this.host.emitSession({ type: 'moved', id: entry.id, detail });
  }

  /** @internal The store refused to count a request of this process (`moved`): its copy of the session is stale. */
  bindingMoved(binding: SessionBinding<Auth>): void {
    const entry = binding.entry;
    if (entry !== null) this.drop(entry, 'the session store refused to count a request: the session was attached on another node since');
  }

  /**
   * @internal A `new` verdict this process may no longer own if read this
   * late (ms): a count of a process is taken over once its node key lapses,
   * which can be two thirds of the lease after the process asked (it renews
   * every third of it). Infinity: a store of one process (no takeover).
   */
  get staleVerdictMs(): number {
    const lease = this.store.leaseTtl;
    return lease === undefined ? Infinity : Math.floor((lease * 2) / 3);
  }

  /**
   * @internal Request `cseq` of the binding's connection is left unrun here (SessionBinding.abandon): its count, if
   * still this process's and unfinished, is released in the store, so the process that gets the client's re-send
   * runs it at once, in order, instead of waiting a lease for it. Not while another connection here carries the
   * session: its own verdicts decide what runs (a count of this process re-sent there runs there).
   */
  requestLeft(binding: SessionBinding<Auth>, cseq: number): void {
    const entry = binding.entry;
    const store = this.store;
    if (entry === null || entry.unpersisted || store.releaseRequests === undefined) return;
    if (entry.carrier !== null && entry.carrier !== binding) return;
    store.releaseRequests(entry.id, [cseq]).catch((err: unknown) => this.reportFailure('releaseRequests', entry.id, err));
  }

  /** @internal The verdict of request `cseq` came too late to be this process's (SessionBinding.queueRequest): not run. */
  staleVerdict(binding: SessionBinding<Auth>, cseq: number): void {
    this.host.logger?.warn({ session: binding.entry?.id ?? null, cseq }, 'session request: its count was answered too late to run here (this process stalled past the lease); the connection is closed, its client resumes');
    void binding.connection.close(1011, 'session lease lapsed');
  }

  /**
   * @internal Request `cseq` ran here and sent no reply in its handler's turn: a duplicate of it is answered at once
   * (not `pending`). Returns, for an async store, when the store has answered (its ack waits for it), else null.
   */
  requestEnded(entry: Entry<Auth>, cseq: number): Promise<void> | null {
    if (entry.unpersisted) return null;
    const sync = this.sync;
    if (sync !== null) {
      try {
        sync.endRequest(entry.id, cseq, entry);
      } catch (err) {
        this.reportFailure('endRequest', entry.id, err);
      }
      return null;
    }
    // Failing, a duplicate elsewhere waits for it up to a lease, then runs it again (docs/sessions.md): counted only.
    return this.store.endRequest(entry.id, cseq).catch((err: unknown) => this.reportFailure('endRequest', entry.id, err));
  }

  private overflowed(entry: Entry<Auth>, kind: 'overflow' | 'memory' | 'evicted', detail: string): void {
    if (entry.ended) return;
    // R11: a client that does not acknowledge is a slow consumer: its connection goes too.
    const carrier = entry.carrier;
    entry.runner.send({ type: 'overflow', kind, detail });
    if (carrier) void carrier.connection.close(1008, 'session buffer overflow', 'slow-consumer');
  }

  /** @internal The binding's store call failed (`beginRequest`, `ack`, `setData`, `readAfter`). */
  bindingStoreFailed(binding: SessionBinding<Auth>, operation: string, err: unknown): void {
    const entry = binding.entry;
    // An ack only trims (the next covers it); a failed gap read closes its connection (the resume reads again):
    // counted, the session stays persisted.
    if (entry === null || operation === 'ack' || operation === 'readAfter') return this.reportFailure(operation, entry?.id ?? null, err);
    if (operation === 'beginRequest' && !entry.unpersisted) {
      // Not run here, and the store may or may not have counted it: the client comes back (R22) and resumes, and the
      // store then says what ran (a count without a reply runs on the resume: SessionBinding.request). Nothing is lost.
      this.reportFailure(operation, entry.id, err);
      void binding.connection.close(1011, 'session store unavailable');
      return;
    }
    this.unpersist(entry, operation, err);
  }

  private onStoreDeadLetter(letter: SessionDeadLetter): void {
    this.host.deadLetter(letter);
    const entry = this.entries.get(letter.sessionId);
    if (!entry || entry.ended) return;
    if (letter.reason === 'evicted' || letter.reason === 'memory' || letter.reason === 'overflow') this.overflowed(entry, letter.reason, letter.detail);
    else if (letter.reason === 'expired') entry.runner.send({ type: 'expire', detail: letter.detail });
    else if (letter.reason === 'ended') entry.runner.send({ type: 'end', detail: letter.detail });
  }

  // -------------------------------------------------------------------------
  // Attaching: `open` and `resume`

  /** @internal From the binding: the first frame was `open` or a `resume` (already decoded). */
  async attach(binding: SessionBinding<Auth>, claim: { id: string; token: string; lastSeq: number; epoch: string | undefined } | null): Promise<void> {
    const connection = binding.connection;
    const owner = this.options.owner(connection.auth);
    let failed: { reason: ResumeFailureReason; detail: string } | null = null;
    let incoming: Entry<Auth> | null = null;
    try {
      if (this.epoch === null) this.learnEpoch(await this.store.epoch());
      if (claim !== null && this.notPersisted(claim.id)) {
        // The store missed some of it: continuing would be a gap. As when the store lost it.
        failed = notPersistedFailure();
        this.host.metrics.resume('failed', failed.reason);
      } else if (claim !== null) {
        const verdict = await this.store.verify({ id: claim.id, token: claim.token, owner, ...(claim.epoch !== undefined ? { epoch: claim.epoch } : {}) });
        // The store may fail on the session while it answers (an append, a join…): checked again after each answer.
        if (verdict.ok && this.notPersisted(claim.id)) failed = notPersistedFailure();
        else if (verdict.ok) {
          // A session this process runs no machine for (another process's): routed here for the broadcasts and
          // publishes that arrive from now on, before the store attaches it here. Else one the other process can no
          // longer append once the attach lands (`moved`) would reach neither: this process's appends go after the
          // resume, in call order, so they land after the attach.
          incoming = this.entries.has(claim.id) ? null : this.incoming(claim.id, verdict.record.topics);
          // The read, the attach and the record at one moment (docs/sessions.md, "Across nodes"): what another
          // process counts or appends for the session from then on is refused (`moved`), except its reply to a
          // request it had counted, which lands in the stream after the read and is written in order.
          const resuming = this.resuming.get(claim.id) ?? { n: 0, told: 0 };
          resuming.n++;
          this.resuming.set(claim.id, resuming);
          let read: ResumeResult;
          try {
            read = await this.store.resume(claim.id, claim.lastSeq);
          } finally {
            if (--resuming.n === 0) this.resuming.delete(claim.id);
          }
          // Unpersisted meanwhile, the connection carrying it (the old one, or none) went local: resumed, the client
          // would go on over the store's gap, and the message that failed would have gone to the old connection only.
          if (read.ok && !this.notPersisted(claim.id)) {
            this.resumed(binding, read.record, claim.token, claim.lastSeq, read.messages);
            // Seqs the store told this node of before its answer (past the replay, or the old connection got them).
            if (resuming.told > 0) binding.catchUp(resuming.told);
            return;
          }
          this.dropIncoming(incoming);
          incoming = null;
          failed = read.ok ? notPersistedFailure() : { reason: read.reason, detail: read.detail };
        } else failed = { reason: verdict.reason, detail: verdict.detail };
        this.host.metrics.resume('failed', failed.reason);
      }
      const created = await this.store.create({ owner });
      const entry = this.newEntry(created.id);
      this.carry(binding, entry, {
        id: created.id, token: created.token, epoch: created.epoch, resumed: false,
        ...(failed ? { reason: failed.reason, detail: failed.detail } : {}),
        lastSeq: 0, replay: 0, cseq: 0, resumeWindow: this.options.resumeWindow,
      }, [], created.record, false);
      if (binding.live) this.host.emitSession({ type: 'attached', id: created.id, connection, resumeFailed: failed });
    } catch (err) {
      this.dropIncoming(incoming);
      // No session can be opened or resumed without its store: the client retries (R22), and resumes once it answers.
      this.reportFailure(claim === null ? 'open' : 'resume', claim?.id ?? null, err);
      void connection.close(1011, 'session store unavailable');
    }
  }

  private resumed(binding: SessionBinding<Auth>, record: SessionRecord, token: string, lastSeq: number, replay: StoredMessage[]): void {
    const connection = binding.connection;
    let entry = this.entries.get(record.id);
    if (entry === undefined || entry.incoming) {
      // A session this process runs no machine for (a shared store, another node's session): run one from here.
      entry ??= this.newEntry(record.id);
      entry.incoming = false;
    } else {
      const previous = entry.carrier;
      if (previous) previous.leave();
      entry.carrier = null;
      // Takeover (the old connection is still open: half-open, R4) or a resume of a detached session.
      entry.runner.send({ type: 'resume' });
    }
    this.host.metrics.resume('resumed', 'none');
    this.host.metrics.replayed(replay.length);
    // Requests were counted that this process did not run: taken over from another process (or the one before this
    // connection counted one and closed before running it). The client re-sends every request it holds
    // unacknowledged (cseq 0), and the store says what each is (SessionBinding.request): answered (`duplicate`),
    // still running where it was counted (`pending`: waited for), or counted by a process now dead (`new`: runs here).
    // `lastCseqRun` is the highest cseq run here, not a count of every one below it: a request a connection here left
    // unrun (the machine's `unsettled`: it waited on another process's count when its connection went) hides below
    // it, and a resume that told the client `lastCseqRun` had it re-send nothing: that request was never answered (the
    // frozen worker of test/cli/sessions-redis.test.ts, under load). The machine decides (`requestsCounted`).
    entry.runner.send({ type: 'requestsCounted', aheadOfRuns: record.lastCseq > entry.lastCseqRun });
    const cseq = entry.runner.getSnapshot().context.resendAll ? 0 : record.lastCseq;
    this.carry(binding, entry, {
      id: record.id, token, epoch: this.epoch!, resumed: true,
      lastSeq, replay: replay.length, cseq, resumeWindow: this.options.resumeWindow,
    }, replay, record, true);
    entry.runner.send({ type: 'attach', lease: binding.lease });
    if (binding.live) this.host.emitSession({ type: 'resumed', id: record.id, connection, replayed: replay.length });
  }

  /** An entry for a resume under way of a session this process runs no machine for: in the topic index, carried by nothing yet. */
  private incoming(id: string, topics: string[]): Entry<Auth> {
    const entry = this.newEntry(id);
    entry.incoming = true;
    entry.topics = topics.length === 0 ? NO_TOPICS : new Set(topics);
    for (const topic of entry.topics) this.index(entry, topic, true);
    return entry;
  }

  /** The resume did not go on: its incoming entry goes (what it appended meanwhile went to the session in the store). */
  private dropIncoming(entry: Entry<Auth> | null): void {
    if (entry === null || !entry.incoming) return;
    entry.incoming = false;
    this.release(entry);
  }

  private newEntry(id: string): Entry<Auth> {
    const entry = new Entry<Auth>(this, id);
    this.entries.set(id, entry);
    return entry;
  }

  /**
   * Writes `attached` and the replay on the binding's connection, then makes it the session's route.
   * `storeAttached`: the store attached it already (`resume`); else it is attached now.
   */
  private carry(binding: SessionBinding<Auth>, entry: Entry<Auth>, attached: Parameters<typeof encodeAttached>[0], replay: StoredMessage[], record: SessionRecord, storeAttached: boolean): void {
    const connection = binding.connection;
    this.pending.delete(connection);
    entry.carrier = binding;
    entry.detachedAt = null;
    this.forgetDetached(entry);
    // The lease the machine gave this connection (0 on open; the next one on a resume, just sent).
    binding.lease = entry.lease;
    binding.attached(entry, {
      id: entry.id, resumed: attached.resumed, reason: attached.reason ?? null, detail: attached.detail ?? null,
    }, encodeAttached(attached), replay, attached.lastSeq, record.lastCseq);
    for (const topic of entry.topics) this.index(entry, topic, false);
    entry.topics = record.topics.length === 0 ? NO_TOPICS : new Set(record.topics);
    for (const topic of entry.topics) this.index(entry, topic, true);
    connection.restoreData(record.data);
    if (!binding.live) {
      // The connection closed while the store answered: the session is detached from the start.
      // After the machine's attach (resumed() sends it when this returns), as an attach's answer would come.
      if (storeAttached) return void Promise.resolve().then(() => this.detach(binding));
      this.store.attach(entry.id).then(
        () => this.detach(binding),
        (err: unknown) => {
          this.unpersist(entry, 'attach', err);
          this.detach(binding);
        },
      );
      return;
    }
    if (!storeAttached) this.store.attach(entry.id).catch((err: unknown) => this.unpersist(entry, 'attach', err));
    // The application's sends now go through the new connection (broadcasts reach the session anyway).
    const old = entry.routed;
    entry.holder = binding;
    if (old !== null && old !== connection) this.host.logger?.debug?.({ session: entry.id, from: old.id, to: connection.id }, 'session taken over');
    this.host.announce(connection, entry.topics);
  }

  // -------------------------------------------------------------------------
  // Detaching

  /** @internal The binding's connection closed. Returns whether it had been announced (a `connection` event). */
  closed(binding: SessionBinding<Auth>): boolean {
    const connection = binding.connection;
    const announced = !this.pending.delete(connection) && binding.entry !== null;
    const entry = binding.entry;
    // The route goes with it (Entry.routed).
    if (entry !== null && entry.holder === binding) entry.holder = null;
    if (entry !== null && entry.carrier === binding) this.detach(binding);
    return announced;
  }

  private detach(binding: SessionBinding<Auth>): void {
    const entry = binding.entry!;
    if (entry.carrier !== binding) return;
    entry.carrier = null;
    if (entry.ended) return;
    const connection = binding.connection;
    if (entry.unpersisted) {
      // Nothing to resume (the store missed some of it): the machine ends it (unpersisted → ended); the store's copy
      // is ended by `tick`.
      entry.runner.send({ type: 'detach', lease: binding.lease });
      return;
    }
    if (binding.endRequested) {
      this.store.end(entry.id, 'the client ended it').catch((err: unknown) => {
        this.reportFailure('end', entry.id, err);
        this.toEnd.add(entry.id);
      });
      entry.runner.send({ type: 'end', detail: 'the client ended it' });
      return;
    }
    entry.runner.send({ type: 'detach', lease: binding.lease });
    entry.detachedAt = Date.now();
    // remoteAddress is `HOST:PORT` (behind a trusted proxy, the client X-Forwarded-For names, port `?`).
    const remote = connection.remoteAddress;
    this.noteDetached(entry, remote.slice(0, remote.lastIndexOf(':')));
    // Not recorded as detached: the store still counts it attached to this node; its resume window must not go unkept.
    this.store.detach(entry.id).then((ok) => {
      // Refused: another node attached the session since this one did (its connection was resumed there while this
      // one was still open, or before this node saw it close). Kept, this copy would go on appending every publish
      // of its topics a second time, under seqs the other node's connection never writes (it would wait for them).
      if (!ok && entry.carrier === null) this.drop(entry, 'the session store refused its detach: the session was attached on another node since');
    }, (err: unknown) => {
      // Retried by `tick` until the store answers: its resume window must start there too.
      this.reportFailure('detach', entry.id, err);
      // Bounded: past it the oldest is left to its lease (once it lapses, any process's sweep detaches it).
      if (this.toDetach.size >= MAX_TO_END) this.toDetach.delete(this.toDetach.values().next().value!);
      this.toDetach.add(entry.id);
    });
    this.host.emitSession({ type: 'detached', id: entry.id, connection });
  }

  /** R21: counts a detached session under its client's address; over the bound, that address's oldest one ends. */
  private noteDetached(entry: Entry<Auth>, address: string): void {
    this.forgetDetached(entry);
    let set = this.detachedByAddress.get(address);
    if (!set) this.detachedByAddress.set(address, (set = new Set()));
    set.add(entry);
    this.detachedAddress.set(entry, address);
    const limit = this.host.maxDetachedPerAddress;
    if (set.size <= limit) return;
    const oldest = set.values().next().value!;
    this.forgetDetached(oldest);
    // Ended as the application ends one (a later resume: unknown); its messages are dead letters `ended` with this detail.
    this.end(oldest.id, `evicted: more than ${limit} detached sessions from ${address} (maxConnectionsPerAddress)`).catch((err: unknown) => {
      this.reportFailure('end', oldest.id, err);
    });
  }

  private forgetDetached(entry: Entry<Auth>): void {
    const address = this.detachedAddress.get(entry);
    if (address === undefined) return;
    this.detachedAddress.delete(entry);
    const set = this.detachedByAddress.get(address)!;
    set.delete(entry);
    if (set.size === 0) this.detachedByAddress.delete(address);
  }

  private index(entry: Entry<Auth>, topic: string, member: boolean): void {
    let set = this.topicIndex.get(topic);
    if (member) {
      if (!set) this.topicIndex.set(topic, (set = new Set()));
      set.add(entry);
    } else if (set?.delete(entry) && set.size === 0) this.topicIndex.delete(topic);
  }

  // -------------------------------------------------------------------------
  // The machine's side

  /** @internal carrier.drop: the session moved on; terminate the connection it left (the one holding `lease`, if still open). */
  dropConnection(entry: Entry<Auth>, lease: Lease, reason: string): void {
    const binding = entry.holder;
    if (binding !== null && binding.lease === lease) void binding.connection.terminate(reason);
  }

  /** @internal The machine reached a final state. */
  finished(entry: Entry<Auth>, ending: SessionEnding): void {
    const type = ending.reason === 'expired' ? 'expired' : ending.reason === 'overflow' ? 'overflowed' : 'ended';
    // The window ran out in the machine: the store expires it too (its messages become dead letters).
    if (ending.reason === 'expired') {
      // Failing, the store's own sweep (any node's) expires it later: counted only.
      this.store.expire(entry.id).catch((err: unknown) => this.reportFailure('expire', entry.id, err));
    }
    this.host.emitSession({ type, id: entry.id, detail: ending.detail });
  }

  /** @internal The carrier stopped (a final state): nothing of the session stays here (R3). */
  release(entry: Entry<Auth>): void {
    if (entry.ended) return;
    entry.ended = true;
    this.entries.delete(entry.id);
    this.forgetDetached(entry);
    this.localOnly.delete(entry);
    for (const topic of entry.topics) this.index(entry, topic, false);
    entry.carrier = null;
  }

  /** Ends a session for good (the application): a later resume gets `unknown`. */
  async end(id: string, detail = 'ended by the application'): Promise<boolean> {
    const entry = this.entries.get(id);
    const ended = await this.store.end(id, detail);
    if (entry && !entry.ended) {
      const carrier = entry.carrier;
      entry.runner.send({ type: 'end', detail });
      if (carrier) void carrier.connection.close(1000, 'session ended');
    }
    return ended;
  }

  /** R3 at shutdown: every machine stopped, the store closed (its held messages become dead letters). */
  async close(): Promise<void> {
    this.closed_ = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    (this.store as Partial<StatusEmitter>).off?.('status', this.onStoreStatus);
    (this.store as Partial<EpochEmitter>).off?.('epochChanged', this.onStoreEpoch);
    this.failureLog.close();
    for (const entry of [...this.entries.values()]) {
      entry.stopMachine();
      this.release(entry);
    }
    await this.store.close();
  }
}

/** A broadcast's or publish's message, as `broadcastSessions` / `publishSessions` hand it to every session. */
interface FanOutMessage extends SessionMessage {
  frames: FanOutFrames;
}

/**
 * A fan-out's frames by seq. Each session numbers the message with its own
 * seq, so there is no one frame for all (as the hub has for connections
 * without sessions); but sessions at the same seq get the same bytes, and
 * most do (sessions that joined together and receive the same fan-outs):
 * they share one frame, made once. At most MAX_FRAMES_PER_FAN_OUT seqs are
 * kept; a session at another seq gets a frame of its own (one allocation,
 * the payload copied once: ws-internals.ts `seqFrameOf`). Lives for the
 * fan-out call only.
 */
class FanOutFrames {
  private readonly seqs: number[] = [];
  private readonly frames: Buffer[] = [];
  private last = -1;

  constructor(
    private readonly data: Outbound,
    private readonly binary: boolean,
  ) {}

  frame(seq: number): Buffer {
    const seqs = this.seqs;
    // Most sessions are at the seq of the one before.
    if (this.last >= 0 && seqs[this.last] === seq) return this.frames[this.last]!;
    const i = seqs.indexOf(seq);
    if (i !== -1) {
      this.last = i;
      return this.frames[i]!;
    }
    const frame = seqFrameOf(seq, this.data, this.binary);
    if (seqs.length < MAX_FRAMES_PER_FAN_OUT) {
      this.last = seqs.length;
      seqs.push(seq);
      this.frames.push(frame);
    }
    return frame;
  }
}

/** Seqs whose frame a fan-out keeps for the sessions after: a linear search over them costs less than a frame. */
const MAX_FRAMES_PER_FAN_OUT = 16;

/** The topics of a session in none (most): one empty set for all, never added to (a Set costs ~160 bytes empty). */
const NO_TOPICS: ReadonlySet<string> = new Set();

/** Unpersisted sessions remembered for their end in the store (a few dozen bytes each). */
const MAX_TO_END = 100_000;

/**
 * Unconfirmed failed fan-outs remembered by name (Sessions.failedFanOuts, some
 * 40 bytes each): a fan-out Redis runs later than 4,096 further such failures
 * of this node could reach its sessions twice. Each timed-out batch holds at
 * most 512 operations, 8 batches in flight.
 */
const MAX_FAILED_FAN_OUTS = 4096;

/**
 * Cross-node fan-outs remembered by name for the cutover of a session going
 * unpersisted (Sessions.fanOutCopy): those whose adapter copy came (or that
 * this node made), and the notifications of those whose copy has not come
 * yet. The copy and the notifications of one fan-out normally arrive within
 * a few ms of each other; 4096 is a lag of seconds at a thousand fan-outs a
 * second. Past it the oldest is forgotten: a session going local in exactly
 * that lag could get that one message twice (never miss it).
 */
const MAX_FAN_OUT_NAMES = 4096;

/**
 * Session names kept in `awaitingCopy` at most, over all its fan-outs (the
 * lists are the notifications' own, kept a little longer): a lag of 26
 * broadcasts at 10,000 sessions a node, and some 20 MB (estimated, ~80 bytes a name) when the
 * copies never come (a node whose adapter is not the cluster's). Past it the
 * oldest fan-out is forgotten, as past MAX_FAN_OUT_NAMES.
 */
const MAX_AWAITING_SESSIONS = 262_144;

/**
 * An unpersisted session with a connection here (docs/sessions.md, "Store
 * failures"): the store stops reaching it once its copy is ended, so this
 * node writes every cluster fan-out to it itself, from the adapter's copy (or
 * at the call, for its own), and from the store's notification while those
 * still come: whichever comes first, once by the fan-out's name.
 */
interface LocalFanOuts {
  /** The node's `localClock` tick when it went local: a fan-out whose copy has a later tick (`copied`) was written to it then. */
  readonly from: number;
  /** Its store copy is ended and every notification sent before that handed over: none comes for it any more. */
  storeGone: boolean;
  /** This node's fan-outs named so far when it went local: the later ones were written to it at their call. */
  readonly since: number;
}

/** What a shared store may offer: a 'status' event ('up' | 'degraded'). */
interface StatusEmitter {
  on(event: 'status', listener: (status: string) => void): unknown;
  off(event: 'status', listener: (status: string) => void): unknown;
}

/** What a shared store may offer: an 'epochChanged' event (RedisSessionStore: Redis came back without its data). */
interface EpochEmitter {
  on(event: 'epochChanged', listener: (previous: string, current: string) => void): unknown;
  off(event: 'epochChanged', listener: (previous: string, current: string) => void): unknown;
}

const OPEN_BRACE = 0x7b;

/** SessionBinding's flags. */
const LIVE = 1;
const END_REQUESTED = 2;
const PAUSED = 4;
const LOCAL = 8;
const REPLIED = 16;
/** The phase's two bits (PHASES[bits]); 0: awaiting, the phase a binding starts in. */
const PHASE_SHIFT = 5;
const PHASE_MASK = 3 << PHASE_SHIFT;
/** The phase bits of `attached` (PHASES[2]). */
const ATTACHED_BITS = 2 << PHASE_SHIFT;
type Phase = 'awaiting' | 'attaching' | 'attached' | 'left';
const PHASES: readonly Phase[] = ['awaiting', 'attaching', 'attached', 'left'];
const ACK_DUE = 1 << 7;
/** A request of this connection was left unrun (SessionBinding.abandon): its later ones are not run here either. */
const ABANDONED = 1 << 8;

/**
 * The session request whose handler runs now: its binding (SessionBinding.running: its sends are its reply) and, when
 * the store counted it for this process, its session (`fence`) and supervisor (`owner`): a broadcast or publish its
 * handler makes in that turn carries it to the store's fencing check (FanOutFence, Sessions.clusterFanOut), which
 * refuses the fan-out once another node took the request over and ran it again. `fence` is null for a request run
 * locally (unpersisted: not tied to a count) and outside a handler's turn (a timer, a continuation after an await).
 * A handler runs synchronously in `request`, which sets these around it and puts back what was there (a handler that
 * makes another connection's request run inside it, were there a way, would find its own again after it). One for
 * the process, not a field per binding or supervisor: nothing is allocated per request.
 */
const RUNNING: { binding: object | null; cseq: number; fence: string | null; owner: object | null } = { binding: null, cseq: 0, fence: null, owner: null };

/** SessionBinding's rarely used fields (SessionBinding.rare). */
class BindingRare {
  lease: Lease = 0;
  resumeInfo: SessionInfo | null = null;
  early: Map<number, { data: Outbound; binary: boolean }> | null = null;
  inbox: Array<[Buffer, boolean]> | null = null;
  gapReader: MachineRunner<GapReaderMachine> | null = null;
  requests: Promise<void> | null = null;
  waiting = 0;
  /** With an async store: the highest request whose outcome (reply, or its end) the store has answered; -1 untracked (SessionBinding.ackTo). */
  stored = -1;
  /**
   * When (performance.now()) this connection last asked the store about a request and was told to wait (`pending`):
   * the store noted then that this process works on the session's requests, so its later counts age from there.
   */
  worked = 0;
}

/**
 * A request counted by a process that has not finished it (`pending`) is
 * asked about again after these delays, doubling (machines/pending-request.machine.ts):
 * the first soon (the usual case is a reply already on its way), then at most
 * 4 times a second. The wait is bounded by the store (a shared store answers
 * `new` once the counting process is dead or a lease has passed) and, for a
 * count made in this process, by PENDING_HERE_MAX.
 */
const PENDING_RETRY_FIRST = 5;
const PENDING_RETRY_MAX = 250;
/** A count of this process that none of its connections finishes within this long (as the Redis store's lease, 15 s). */
const PENDING_HERE_MAX = 15_000;

/**
 * A connection's session side: what `Connection.send` and `Connection.onMessage` turn into on a session connection.
 *
 * The binding is its own timer on the process's timer wheel (src/server/timer-wheel.ts, `fire`): the attach timer
 * while `awaiting` (disarmed by `open`/`resume`), then the ack timer's two halves (only ever armed once attached),
 * never two at once. No Node `Timeout` and no closure per arming: a request/response client at under `ackEvery`
 * requests per `ackDelay` arms it after nearly every ack (docs/performance.md, "Sessions, sixth pass").
 */
export class SessionBinding<Auth = unknown> extends WheelTimer implements SessionHandle {
  entry: Entry<Auth> | null = null;
  /**
   * The binding's booleans, one bit each, and its phase in two bits (see the
   * accessors below: `phase`, `live`, `endRequested`, `paused`, `local`,
   * `replied`, `ackDue`): one field where seven took 8 bytes each, on every
   * idle session (docs/performance.md).
   */
  private flags = LIVE;
  /** The highest seq written on this connection. */
  private written = 0;
  /** The client has every seq up to this one (its resume position, then its acks): what a gap read may forget. */
  private clientAcked = 0;
  private lastRun = 0;
  private lastAcked = 0;
  /**
   * What an idle attached connection never needs (`lease`, `resumeInfo`,
   * `early`, `inbox`, `gapReader`, `requests`, `waiting`: the accessors
   * below), made on the first non-empty one: one null instead of seven
   * fields on every idle session (docs/performance.md, "Sessions: idle" and
   * "ninth pass").
   */
  private rare: BindingRare | null = null;

  /**
   * Which of its session's connections this is, as the session machine numbers them (machines/session.machine.ts):
   * 0 for the connection that opened it, kept with the rare fields since only a resume's is more (and a resume's
   * binding makes them anyway, for its `resumeInfo`).
   */
  get lease(): Lease {
    return this.rare === null ? 0 : this.rare.lease;
  }
  set lease(lease: Lease) {
    if (lease !== 0 || this.rare !== null) this.more.lease = lease;
  }
  /**
   * The request whose handler runs now (its sends are its reply), 0 none. One for the process (`RUNNING`), not a
   * field per binding: a handler runs synchronously, one at a time (nested ones saved and restored, `request`).
   */
  private get running(): number {
    return RUNNING.binding === this ? RUNNING.cseq : 0;
  }

  /** The rare fields, made on first use. */
  private get more(): BindingRare {
    return (this.rare ??= new BindingRare());
  }
  /** awaiting: no `open`/`resume` yet; attaching: the store is answering; attached: carrying; left: another connection took over. */
  private get phase(): Phase {
    return PHASES[(this.flags & PHASE_MASK) >> PHASE_SHIFT]!;
  }
  private set phase(phase: Phase) {
    this.flags = (this.flags & ~PHASE_MASK) | (PHASES.indexOf(phase) << PHASE_SHIFT);
  }
  /**
   * The session as `connection.session` shows it, kept only for a resume or a
   * failed one: a plain `open` (most sessions) has its info made when asked
   * for (`info`), not held by each of 10k idle connections.
   */
  private get resumeInfo(): SessionInfo | null {
    return this.rare === null ? null : this.rare.resumeInfo;
  }
  private set resumeInfo(info: SessionInfo | null) {
    if (info !== null || this.rare !== null) this.more.resumeInfo = info;
  }
  /** Seqs resolved before their turn (or before the replay was written), or held while the socket pushes back. */
  private get early(): Map<number, { data: Outbound; binary: boolean }> | null {
    return this.rare === null ? null : this.rare.early;
  }
  private set early(early: Map<number, { data: Outbound; binary: boolean }> | null) {
    if (early !== null || this.rare !== null) this.more.early = early;
  }
  /** Frames received while the store answered `open`/`resume`: handled after `attached`. */
  private get inbox(): Array<[Buffer, boolean]> | null {
    return this.rare === null ? null : this.rare.inbox;
  }
  private set inbox(inbox: Array<[Buffer, boolean]> | null) {
    if (inbox !== null || this.rare !== null) this.more.inbox = inbox;
  }
  /**
   * Reads what the store holds and this connection missed (machines/gap-reader.machine.ts): started at the
   * connection's first gap; null on most connections, which never have one.
   */
  private get gapReader(): MachineRunner<GapReaderMachine> | null {
    return this.rare === null ? null : this.rare.gapReader;
  }
  private set gapReader(reader: MachineRunner<GapReaderMachine> | null) {
    if (reader !== null || this.rare !== null) this.more.gapReader = reader;
  }
  /** The requests' verdicts from an async store, handled in order (made on the first). */
  private get requests(): Promise<void> | null {
    return this.rare === null ? null : this.rare.requests;
  }
  private set requests(requests: Promise<void> | null) {
    if (requests !== null || this.rare !== null) this.more.requests = requests;
  }
  /** Requests on `requests` not handled yet: while any, a later one queues behind them (even with a sync store). */
  private get waiting(): number {
    return this.rare === null ? 0 : this.rare.waiting;
  }
  private set waiting(n: number) {
    if (n !== 0 || this.rare !== null) this.more.waiting = n;
  }
  /** The ack timer is half through: the next reply carries the ack (`write`, `scheduleAck`). */
  private get ackDue(): boolean {
    return (this.flags & ACK_DUE) !== 0;
  }
  private set ackDue(on: boolean) {
    this.flags = on ? this.flags | ACK_DUE : this.flags & ~ACK_DUE;
  }
  /** The running request's handler sent something (its reply). */
  private get replied(): boolean {
    return (this.flags & REPLIED) !== 0;
  }
  private set replied(on: boolean) {
    this.flags = on ? this.flags | REPLIED : this.flags & ~REPLIED;
  }

  /** The session, or null before it is attached: `{ id, resumed, reason, detail }` (Connection.session). */
  get info(): SessionInfo | null {
    const entry = this.entry;
    if (entry === null || this.phase === 'awaiting' || this.phase === 'attaching') return null;
    return this.resumeInfo ?? { id: entry.id, resumed: false, reason: null, detail: null };
  }

  /** False once the connection closed. */
  get live(): boolean {
    return (this.flags & LIVE) !== 0;
  }
  set live(on: boolean) {
    this.flags = on ? this.flags | LIVE : this.flags & ~LIVE;
  }
  /** The client sent `end`: its close ends the session. */
  get endRequested(): boolean {
    return (this.flags & END_REQUESTED) !== 0;
  }
  set endRequested(on: boolean) {
    this.flags = on ? this.flags | END_REQUESTED : this.flags & ~END_REQUESTED;
  }
  /**
   * The socket pushed back: further seqs wait in `early` until it drains, so a
   * replay or a burst never overflows the send queue (which would close the
   * connection, and the next resume would replay the same backlog again). The
   * write deadline still runs (R10): a client that does not read is closed.
   */
  private get paused(): boolean {
    return (this.flags & PAUSED) !== 0;
  }
  private set paused(on: boolean) {
    this.flags = on ? this.flags | PAUSED : this.flags & ~PAUSED;
  }
  /** The session is unpersisted (the store failed): this connection numbers and carries it alone, plainly. */
  private get local(): boolean {
    return (this.flags & LOCAL) !== 0;
  }
  private set local(on: boolean) {
    this.flags = on ? this.flags | LOCAL : this.flags & ~LOCAL;
  }
  constructor(
    sessions: Sessions<Auth>,
    readonly connection: Connection<Auth>,
  ) {
    super();
    if (connection.sessionsHost !== sessions) throw new Error('ws-supervisor: a session binding must be made by its connection\'s sessions');
    // The attach timer (`fire` while awaiting).
    timerWheel.schedule(this, sessions.options.attachTimeout);
  }

  /** The supervisor's sessions, through the connection (ConnectionShared.sessions): not a field on every binding. */
  private get sessions(): Sessions<Auth> {
    return this.connection.sessionsHost as Sessions<Auth>;
  }

  /**
   * @internal The wheel's timer went off. Awaiting: no `open`/`resume` in time.
   * Attached: the ack timer's first half (the ack is due: the next reply
   * carries it, `write`), or its second (no reply came: the ack goes alone).
   */
  fire(): void {
    const phase = this.phase;
    if (phase === 'awaiting') {
      void this.connection.close(1008, 'no session open or resume in time');
      return;
    }
    if (phase !== 'attached' || !this.live) return;
    if (this.ackDue) return this.sendAck();
    this.ackDue = true;
    const delay = this.sessions.options.ackDelay;
    timerWheel.schedule(this, delay - (delay >> 1));
  }

  /** Connection.send on a session connection: kept in the session, written when its seq is known. */
  send(data: Outbound, binary: boolean): boolean {
    const entry = this.entry;
    // The reply of a request the store counted goes to the store even once this copy of the session is gone (dropped:
    // another process holds it, and waits for this reply; `append` then accepts it from the process that counted it).
    // Which request runs now, read once (RUNNING): every test below and the append need it.
    const running = RUNNING.binding === this ? RUNNING.cseq : 0;
    if (entry === null || (entry.ended && running === 0)) return false;
    // The route of the session, a reply of a request running here, or the application answering on a connection
    // that has closed since (a reply outlives its connection: the session keeps it). Anything else on a connection
    // taken over but not yet closed is refused: the application's send to the connection it had, not to the session.
    // (Broadcasts never come this way: the supervisor appends them to the sessions at the call, `broadcastSessions`,
    // `broadcastFiltered`, so a fan-out that reaches the old connection late cannot add a copy nor skip the session.)
    if (running === 0) {
      if (entry.routed !== this.connection && this.live) return false;
    } else this.flags |= REPLIED;
    this.sessions.append(entry, data, binary, running);
    return true;
  }

  /** connection.data = …: kept in the session. */
  setData(value: JsonValue): void {
    const entry = this.entry;
    if (entry !== null && !entry.ended && !entry.unpersisted && entry.routed === this.connection) {
      this.sessions.store.setData(entry.id, value).catch((err: unknown) => this.sessions.bindingStoreFailed(this, 'setData', err));
    }
  }

  /** Connection.onMessage on a session connection. */
  receive(data: Buffer, isBinary: boolean): void {
    // The usual frame first, in one test of the flags: a request (`<cseq>:`, never `{`) on an attached connection.
    if ((this.flags & PHASE_MASK) === ATTACHED_BITS && (isBinary || data[0] !== OPEN_BRACE)) return this.dataFrame(data, isBinary);
    const phase = this.phase;
    if (phase === 'attaching') {
      // A heartbeat is answered at once (the store may take a while); everything else waits for `attached`.
      if (!isBinary && data[0] === OPEN_BRACE && decodeClientFrame(data, false).kind === 'ping') return this.writeControl(encodePong());
      (this.inbox ??= []).push([data, isBinary]);
      return;
    }
    if (phase === 'left') return;
    if (!isBinary && data[0] === OPEN_BRACE) return this.control(data);
    if (phase === 'awaiting') return this.violation('the first frame of a session connection must be {"session":"open"} or {"session":"resume",…}');
    this.dataFrame(data, isBinary);
  }

  /** A data frame on an attached connection: `<cseq>:<payload>`; the payload is a view of the frame, not a copy. */
  private dataFrame(data: Buffer, isBinary: boolean): void {
    const d = decodeBinaryData(data);
    if (!d.ok) return this.violation(d.error);
    const entry = this.entry!;
    // Read out at once: only these are kept (the async path's closure), so the result object need not outlive this line.
    const cseq = d.n;
    const payload = d.payload;
    const sync = this.sessions.sync;
    if (sync !== null && this.waiting === 0) {
      // The in-memory store answers now: the request runs in this turn, as it would without sessions.
      let v: RequestVerdict | null = null;
      if (!this.local) {
        try {
          v = sync.beginRequest(entry.id, cseq, entry);
        } catch (err) {
          this.sessions.bindingStoreFailed(this, 'beginRequest', err);
          if (!this.local) return;
        }
      }
      // Pending (counted here, not finished: a connection of this process still runs it): waited for, in order.
      if (v === null || v.kind !== 'pending') return this.request(cseq, v, payload, isBinary);
      return this.queueRequest(cseq, Promise.resolve(v), false, payload, isBinary);
    }
    this.queueRequest(cseq, this.local ? null : this.sessions.store.beginRequest(entry.id, cseq), !this.local, payload, isBinary);
  }

  /**
   * Verdicts are handled in request order, whatever order the store settles
   * them in (a failure between two). `counting`: this binding's own
   * beginRequest is on its way (entry.counting says so until it is handled).
   */
  private queueRequest(cseq: number, verdict: Promise<RequestVerdict> | null, counting: boolean, payload: Buffer, isBinary: boolean): void {
    const entry = this.entry!;
    // An async store: acks wait for the store's answer to each request's outcome (ackTo); from the position attached.
    if (this.sessions.sync === null && this.more.stored < 0) this.more.stored = this.lastRun;
    if (counting) (entry.counting ??= new Map()).set(cseq, (entry.counting.get(cseq) ?? 0) + 1);
    const uncount = (): void => {
      if (!counting) return;
      counting = false;
      const n = entry.counting!.get(cseq)! - 1;
      if (n === 0) entry.counting!.delete(cseq);
      else entry.counting!.set(cseq, n);
    };
    this.waiting++;
    /** A `new` answer asked at `since` (performance.now()) is too late to run here: two thirds of a lease or more. */
    const tooLate = (since: number): boolean => !this.local && performance.now() - since >= this.sessions.staleVerdictMs;
    // How long the store took to answer this connection's own count (not how long it then waited behind the requests
    // before it, which may be a lease: a pending one): measured when the answer is read, as a stalled process reads it.
    let answeredIn = 0;
    let asked = 0;
    if (counting && verdict !== null) {
      asked = performance.now();
      verdict = verdict.then((v) => {
        answeredIn = performance.now() - asked;
        if (v.kind === 'pending') this.noteWorked(asked);
        return v;
      });
    }
    // Awaited in request order (below), so possibly only after the requests before it are done: its rejection (the
    // store failed) can come first. Marked handled now, still thrown where it is awaited. Before, that rejection had
    // no handler yet and killed the process (Node's unhandled rejection): with Redis SIGKILLed under a client that
    // pipelined its requests, the node died, every connection with it.
    verdict?.catch(() => undefined);
    this.requests = (this.requests ?? Promise.resolve()).then(async () => {
      try {
        let v: RequestVerdict | null = null;
        if (verdict !== null) {
          try {
            v = await verdict;
          } catch (err) {
            uncount();
            this.sessions.bindingStoreFailed(this, 'beginRequest', err);
            // Closed (1011) unless the session went local meanwhile: then this connection runs it.
            if (!this.local) return this.abandon(cseq);
          }
        }
        // An earlier request of this connection was left unrun: this one is not run here either (below).
        if (this.abandoned && !this.local) return this.sessions.requestLeft(this, cseq);
        // Counted here, but its answer read so late (this process stalled: a freeze, a swap), or its turn come so late
        // (it waited behind an earlier request, on another process's count or a slow answer) with no word from this
        // process to the store since, that its count may have been taken over by its age meanwhile and run elsewhere:
        // run here too, it ran twice, its push out of order and its reply refused. Not run: the connection closes, its
        // client resumes and re-sends it, and the store says who runs it (a count of this process is settled here:
        // 'pending', here). While this connection waits on an earlier request, its asking tells the store it works on
        // its counts (`worked`), so an ordinary wait of a lease does not come here.
        if (v !== null && v.kind === 'new' && counting && !this.local && (answeredIn >= this.sessions.staleVerdictMs || tooLate(Math.max(asked, this.more.worked)))) {
          uncount();
          return this.leaveLate(cseq);
        }
        if (v !== null && v.kind === 'pending') {
          uncount(); // not this binding's to run: it waits for whoever counted it
          const decided = { at: asked };
          v = await this.settlePending(cseq, v, decided);
          if (v === null) return this.abandon(cseq);
          // The answer that made it this process's (a takeover, or its own count found lost) was asked this long ago:
          // as a count read late, it may have been taken over from this process meanwhile. Not run.
          if (v.kind === 'new' && tooLate(decided.at)) return this.leaveLate(cseq);
        }
        this.request(cseq, v, payload, isBinary);
      } finally {
        uncount();
        this.waiting--;
      }
    }).catch((err: unknown) => {
      // Never left rejected: the next request's turn must still come.
      this.sessions.host.logger?.error({ err, session: entry.id, cseq }, 'session request failed');
    });
  }

  /**
   * A request of this connection is left unrun (its connection went while it waited on another process's count, the
   * store failed on its count, or its count was read a lease late): the client re-sends it on its next resume. Every
   * later request of this connection is then left too, even one the store counted here (`new`): run now, it would
   * run before the one left (its push out of order), and the session's `lastCseqRun` would pass over the one left,
   * so that a resume here told the client it had nothing to re-send (the session machine's `requestLeft`). Each request
   * left is released in the store (Sessions.requestLeft): the process that gets the client's re-send, this one or
   * another, runs it at once, in order (docs/sessions.md, "Across nodes"); before, another waited up to a lease for it.
   */
  private abandon(cseq: number): void {
    this.flags |= ABANDONED;
    const entry = this.entry;
    if (entry !== null) entry.runner.send(REQUEST_LEFT);
    this.sessions.requestLeft(this, cseq);
  }

  /** Request `cseq`'s count came (or its turn) too late to run here: left, and the connection closed (Sessions.staleVerdict). */
  private leaveLate(cseq: number): void {
    this.abandon(cseq);
    this.sessions.staleVerdict(this, cseq);
  }

  /** The store was told, asked at `at` (performance.now()), that this process waits on a request of the session. */
  private noteWorked(at: number): void {
    const rare = this.more;
    if (at > rare.worked) rare.worked = at;
  }

  private get abandoned(): boolean {
    return (this.flags & ABANDONED) !== 0;
  }

  /**
   * Request `cseq` was counted by a process that has not finished it (alive:
   * slow, or still on its way to run it). It must not run here meanwhile (it
   * would run twice), so this connection asks the store again until the
   * answer is its reply (`duplicate`: written in order, below) or that the
   * counting process is gone (`new`: it runs here). Later requests wait behind
   * it (request order). Null: this connection closed meanwhile (the client
   * re-sends it on its next resume).
   */
  private settlePending(cseq: number, verdict: RequestVerdict, decided: { at: number }): Promise<RequestVerdict | null> {
    // The wait is the machine's (machines/pending-request.machine.ts: when to ask again, when a count of this process
    // is settled here); this side tells it each verdict with the facts only this process knows, and asks the store.
    const entry = this.entry!;
    const sessions = this.sessions;
    return new Promise((resolve) => {
      let answer = verdict;
      const gone = (): boolean => !this.live || this.phase !== 'attached' || entry.ended;
      const tell = (v: RequestVerdict): void => {
        if (gone()) return runner.send(PENDING_GONE);
        // The session went local meanwhile: the store's verdicts say nothing any more; this connection runs it, in order.
        if (this.local) return runner.send(PENDING_LOCAL);
        if (v.kind !== 'pending') {
          answer = v;
          return runner.send({ type: 'settled' });
        }
        // Only this process can tell whether one of its connections still runs a count of its own, or ran it (its
        // reply, or endRequest, is on its way to the store).
        runner.send({ type: 'pending', here: v.here, running: (entry.counting?.get(cseq) ?? 0) > 0, ran: cseq <= entry.lastCseqRun });
      };
      const runner: MachineRunner<PendingRequestMachine> = new MachineRunner(sessions.pendingConfig, {
        get actorId() {
          return `request:${entry.id}:${cseq}`;
        },
        spawn: () => ({
          command: () => {
            if (gone()) return runner.send(PENDING_GONE);
            if (this.local) return runner.send(PENDING_LOCAL);
            const at = performance.now();
            sessions.store.beginRequest(entry.id, cseq).then((v) => {
              // When the answer that ends the wait was asked (`decided`): a `new` read two thirds of a lease later is not run.
              decided.at = at;
              if (v.kind === 'pending') this.noteWorked(at);
              tell(v);
            }, (err: unknown) => {
              sessions.bindingStoreFailed(this, 'beginRequest', err);
              // Persisted, the connection is closed (1011) and the client re-sends it on its resume. Local (before or
              // by this failure), no resume will: it runs here, as a first verdict's failure does (queueRequest).
              runner.send(gone() ? PENDING_GONE : this.local ? PENDING_LOCAL : PENDING_FAILED);
            });
          },
          stop: () => undefined,
        }),
        done: () => {
          const outcome = runner.getSnapshot().value as PendingRequestOutcome;
          if (outcome === 'answered') resolve(answer);
          else if (outcome === 'run') resolve({ kind: 'new' });
          else if (outcome === 'replied') resolve({ kind: 'duplicate', replySeqs: [] });
          else resolve(null);
        },
        failed: (err: unknown) => {
          sessions.host.logger?.error({ err, session: entry.id, cseq }, 'pending request wait failed');
          resolve(null);
        },
      });
      runner.start();
      tell(verdict);
    });
  }

  /** Runs request `cseq` once: as the store says, or (unpersisted, `verdict` null) as this connection has seen. */
  private request(cseq: number, verdict: RequestVerdict | null, payload: Buffer, isBinary: boolean): void {
    // Left with an earlier one of this connection (abandon): the client re-sends both.
    if ((this.flags & (ABANDONED | LOCAL)) === ABANDONED) return;
    const admitted = verdict !== null && !this.local && verdict.kind === 'new';
    // A request the store admitted (counted as run) runs now, whatever became of this connection meanwhile (closed by
    // a cut, whose last frames `ws` delivers in the same turn as its close; or taken over by a resume): else the
    // store's count says it ran and nothing ever runs it. Its reply goes to the session (`send` lets a running
    // request through), which replays it.
    if (!admitted && (!this.live || this.phase !== 'attached')) return;
    if (verdict === null || this.local) {
      // The store cannot tell: this connection runs them in order, once each (a client re-sends only after a resume).
      if (cseq <= this.lastRun) return this.writeControl(encodeDuplicate(cseq, null));
      if (cseq !== this.lastRun + 1) return this.violation(`request ${cseq} skips ahead: the next one is ${this.lastRun + 1}`);
      verdict = { kind: 'new' };
    }
    const entry = this.entry!;
    switch (verdict.kind) {
      case 'new': {
        if (cseq > entry.lastCseqRun) entry.lastCseqRun = cseq;
        const { binding: outer, cseq: outerCseq, fence: outerFence, owner: outerOwner } = RUNNING;
        RUNNING.binding = this;
        RUNNING.cseq = cseq;
        // Counted by the store for this process: the fan-outs of its turn carry the count.
        RUNNING.fence = admitted ? entry.id : null;
        RUNNING.owner = this.sessions;
        this.flags &= ~REPLIED;
        try {
          this.connection.runHandler(payload, isBinary);
        } finally {
          RUNNING.binding = outer;
          RUNNING.cseq = outerCseq;
          RUNNING.fence = outerFence;
          RUNNING.owner = outerOwner;
        }
        // No reply in its turn: the store is told, so that a duplicate elsewhere is answered at once, not waited for.
        const ended = (this.flags & (REPLIED | LOCAL)) === 0 ? this.sessions.requestEnded(entry, cseq) : null;
        if ((this.flags & (LIVE | PHASE_MASK)) !== (LIVE | ATTACHED_BITS)) return;
        if (cseq > this.lastRun) this.lastRun = cseq;
        const rare = this.rare;
        if (rare === null || rare.stored < 0 || this.local) return this.scheduleAck();
        // The ack tells the client it may forget the request: not before its outcome is in the store. Sent earlier,
        // a process frozen (or killed) with the reply and the fan-outs still in its store's queue had acknowledged a
        // request whose count stayed its own and unfinished: the client, resuming elsewhere, did not re-send it, so
        // the other process ran the later ones without waiting for it, and its push came after theirs when the frozen
        // one continued (out of order), or never (killed).
        const stored = (): void => {
          if (cseq > rare.stored) rare.stored = cseq;
          this.scheduleAck();
        };
        if (ended !== null) return void ended.then(stored);
        const q = entry.appends;
        const reply = q !== null && q.length > entry.appendHead ? q[q.length - 1] : undefined;
        if (reply !== undefined && reply.cseq === cseq && !reply.settled) reply.stored = stored;
        else stored();
        return;
      }
      case 'duplicate':
        this.writeControl(encodeDuplicate(cseq, verdict.replySeqs));
        // Its reply may be in the store only (appended by the process that ran it after this connection's replay was
        // read): fetched and written in order, as a seq gap is.
        if (verdict.replySeqs !== null && verdict.replySeqs.length > 0) this.expect(Math.max(...verdict.replySeqs));
        return;
      case 'pending':
        return; // settled before request() (settlePending)
      case 'moved':
        // Another process attached the session since this one held it: nothing of it runs here any more. Nor do the
        // later requests this connection had counted before (the answer to a wait on an earlier one): the process the
        // client is on now runs them after this one, in order, once they are released.
        this.abandon(cseq);
        this.sessions.bindingMoved(this);
        return;
      case 'gap':
        return this.violation(`request ${cseq} skips ahead: the next one is ${verdict.expected}`);
      case 'unknown':
        void this.connection.close(1011, 'session is gone');
        return;
    }
  }

  private control(data: Buffer): void {
    const frame = decodeClientFrame(data, false);
    switch (frame.kind) {
      case 'invalid':
        this.writeControl(encodeSessionError(frame.error));
        return;
      case 'open':
      case 'resume':
        if (this.phase !== 'awaiting') {
          this.writeControl(encodeSessionError(`${frame.kind}: this connection already carries session ${this.entry?.id ?? '?'}`));
          return;
        }
        this.phase = 'attaching';
        timerWheel.cancel(this); // the attach timer
        void this.sessions.attach(this, frame.kind === 'open' ? null : frame);
        return;
      case 'ack': {
        if (this.phase === 'awaiting') return this.violation('ack before the session is attached');
        // Unpersisted: the client acknowledges seqs the store never assigned (LOCAL_SEQ_JUMP); the store's copy is ended anyway.
        if (this.local) return;
        if (frame.seq > this.clientAcked && frame.seq <= this.written) this.clientAcked = frame.seq;
        const sync = this.sessions.sync;
        if (sync !== null) {
          let r: AckResult;
          try {
            r = sync.ack(this.entry!.id, frame.seq, this.entry!);
          } catch (err) {
            return this.sessions.bindingStoreFailed(this, 'ack', err);
          }
          return this.acked(r);
        }
        this.sessions.store.ack(this.entry!.id, frame.seq).then((r) => this.acked(r), (err: unknown) => this.sessions.bindingStoreFailed(this, 'ack', err));
        return;
      }
      case 'ping':
        this.writeControl(encodePong());
        return;
      case 'end':
        if (this.phase === 'awaiting') return this.violation('end before the session is attached');
        this.endRequested = true;
        return;
      case 'data':
        // decodeClientFrame only yields data for frames not starting with `{`.
        return;
    }
  }

  private acked(r: AckResult): void {
    if (!r.ok && this.live && this.phase === 'attached' && !this.local) this.violation(r.error);
  }

  /** @internal The store answered: write `attached` and the replay, then what arrived meanwhile. */
  attached(entry: Entry<Auth>, info: SessionInfo, attachedFrame: string, replay: StoredMessage[], lastSeq: number, lastCseq: number): void {
    this.entry = entry;
    // A plain open's info is made when asked for (`info`).
    this.resumeInfo = info.resumed || info.reason !== null ? info : null;
    this.written = this.clientAcked = lastSeq;
    this.lastRun = this.lastAcked = lastCseq;
    if (this.live) {
      this.connection.writer.send(attachedFrame, false);
      for (const m of replay) {
        if (this.paused) (this.early ??= new Map()).set(m.seq, { data: m.data, binary: m.binary });
        else this.write(m.seq, m.data, m.binary);
      }
    }
    this.phase = 'attached';
    this.drainEarly();
    const inbox = this.inbox;
    this.inbox = null;
    if (inbox && this.live) for (const [data, isBinary] of inbox) this.receive(data, isBinary);
    // Most session connections sit idle from here, their `open` the only frame they sent: ws's chunk list lets go of
    // the backing store that frame left it (~150 bytes each; src/server/ws-internals.ts, item 5).
    if (this.live) releaseChunkList(this.connection.ws);
  }

  /**
   * @internal A message of the session got its seq: write it in order. `frames`: a fan-out's, shared by sessions at
   * the same seq; `bytes`: `data`'s length in bytes when known (else counted when framed).
   */
  deliver(seq: number, data: Outbound, binary: boolean, frames: FanOutFrames | null = null, bytes?: number): void {
    // The usual case in one test of the flags: live, attached, not paused, and the next seq.
    if ((this.flags & (LIVE | PHASE_MASK | PAUSED)) === (LIVE | ATTACHED_BITS) && seq === this.written + 1) {
      this.write(seq, data, binary, frames, bytes);
      if (this.rare !== null && this.rare.early !== null) this.drainEarly();
      return;
    }
    if (!this.live || this.phase === 'left') return;
    if (seq <= this.written) return; // in the replay already
    if (this.phase !== 'attached' || seq > this.written + 1 || this.paused) {
      (this.early ??= new Map()).set(seq, { data, binary });
      if (this.phase === 'attached' && !this.paused) this.tellGap(GAP);
      return;
    }
    this.write(seq, data, binary, frames);
    if (this.early !== null) this.drainEarly();
  }

  private drainEarly(): void {
    const early = this.early;
    if (early === null) return;
    for (const seq of [...early.keys()]) if (seq <= this.written) early.delete(seq);
    let next = early.get(this.written + 1);
    while (next !== undefined && !this.paused) {
      early.delete(this.written + 1);
      this.write(this.written + 1, next.data, next.binary);
      next = early.get(this.written + 1);
    }
    if (early.size === 0) this.early = null;
    else if (!this.paused) this.tellGap(GAP);
  }

  /**
   * The gap reader (machines/gap-reader.machine.ts) decides when the store is
   * read: a later seq is here and the next one is not (another node appended
   * it: a shared store, while this node attached the session; or a fan-out's
   * notification and this node's own append crossed), a reply another
   * process stored (`expect`), or the store says the stream reaches further
   * (`catchUp`). This side tells it those facts, only while its connection
   * carries the session, and does what it commands (`gapCommand`).
   */
  private tellGap(event: GapReaderEvent): void {
    let reader = this.gapReader;
    if (reader === null) reader = this.gapReader = new MachineRunner(this.sessions.gapConfig, new GapReaderHost(this)).start();
    reader.send(event);
  }

  /** @internal The gap reader threw (a bug): logged, and the connection closed (1011) so the client resumes. */
  gapReaderFailed(error: unknown): void {
    this.sessions.host.logger?.error({ err: error, session: this.entry?.id }, 'session gap reader failed');
    if (this.live) void this.connection.close(1011, 'session seq gap');
  }

  /** @internal What the gap reader asks of this connection. */
  gapCommand(command: GapStoreCommand): void {
    switch (command.type) {
      case 'awaitAnswers':
        this.sessions.store.answered!().then(() => {
          const early = this.early;
          const carrying = early !== null && !this.paused && this.live && this.phase === 'attached';
          const next = carrying && early.has(this.written + 1);
          this.tellGap({ type: 'answered', missing: carrying && !next });
          if (next) this.drainEarly();
        }, () => this.tellGap({ type: 'answered', missing: false }));
        return;
      case 'read':
        return this.readGap(command.expecting);
      case 'giveUp':
        if (this.live) void this.connection.close(1011, command.reason);
        return;
    }
  }

  /**
   * One read of what follows the last seq written, its result classified for
   * the gap reader. A gap the store cannot fill closes the connection (the
   * reader's `failed`): the client's resume replays what the store holds.
   * `expected`: a seq the store was said to hold when this read began.
   */
  private readGap(expected: number): void {
    if (this.local || !this.live || this.phase !== 'attached') return this.tellGap({ type: 'readDone', outcome: 'gone', written: this.written });
    const entry = this.entry!;
    const from = this.written;
    // What this node wrote, its client may not have received (a cut may follow): this read must not forget it.
    // peekAfter trims nothing; a store without it is read after what the client acknowledged (readAfter trims
    // what it reads after).
    const store = this.sessions.store;
    (store.peekAfter ? store.peekAfter(entry.id, from) : store.readAfter(entry.id, Math.min(this.clientAcked, from))).then(
      (read) => {
        if (!this.live || this.phase !== 'attached' || this.local) return this.tellGap({ type: 'readDone', outcome: 'gone', written: this.written });
        if (read.ok) {
          for (const m of read.messages) {
            if (m.seq > this.written && !this.early?.has(m.seq)) (this.early ??= new Map()).set(m.seq, { data: m.data, binary: m.binary });
          }
          let outcome: ReadOutcome | null = null;
          // Nothing missing (any more): what was asked for arrived meanwhile, or was not there to read. Except a seq
          // the store was said to hold when this read began (expect: a reply another process stored): not held.
          if (this.early === null && expected <= this.written) outcome = 'done';
          else if (this.early !== null && this.early.has(this.written + 1)) {
            this.drainEarly();
            // A seq still missing after what the read gave is newer than the read: on its way (the reader waits).
            outcome = this.early !== null && !this.paused ? 'inFlight' : 'done';
          } else {
            // What arrived meanwhile wrote past the read, and the seq missing now is newer than what it saw (the
            // read's last): on its way, as any early seq's predecessor. Only one the store held and did not give is lost.
            const seen = read.messages.length === 0 ? from : read.messages[read.messages.length - 1]!.seq;
            if (this.early !== null && this.written + 1 > seen) outcome = 'inFlight';
          }
          if (outcome !== null) return this.tellGap({ type: 'readDone', outcome, written: this.written });
        }
        this.sessions.host.logger?.warn({ session: entry.id, after: from, reason: read.ok ? 'not held' : read.reason }, 'session seq gap the store could not fill: closing the connection, the client resumes');
        this.tellGap({ type: 'readDone', outcome: 'lost', written: this.written });
      },
      (err: unknown) => {
        this.sessions.bindingStoreFailed(this, 'readAfter', err);
        // As an answer would be: a connection that no longer carries the session in the store (closed, taken over,
        // local since) has nothing to read. Closing a local session's connection (1011) would end the session.
        const gone = !this.live || this.phase !== 'attached' || this.local;
        this.tellGap({ type: 'readDone', outcome: gone ? 'gone' : 'failed', written: this.written });
      },
    );
  }

  /** Seq `seq` exists in the store (a reply another process stored): written in order once this connection gets to it. */
  private expect(seq: number): void {
    if (seq <= this.written || this.local || !this.live || this.phase !== 'attached' || this.early?.has(seq)) return;
    this.tellGap({ type: 'expect', seq, paused: this.paused });
  }

  /**
   * @internal The session's stream reaches `seq` (a store that fans out
   * itself says so: a fan-out that no node was told of, or notifications that
   * may have been lost; Infinity: whatever it holds): what this connection has
   * not written is read from the store and written in order.
   */
  catchUp(seq: number): void {
    if (this.local || !this.live || this.phase !== 'attached' || seq <= this.written) return;
    this.tellGap({ type: 'catchUp', seq });
  }

  private write(seq: number, data: Outbound, binary: boolean, frames: FanOutFrames | null = null, bytes?: number): void {
    this.written = seq;
    const writer = this.connection.writer;
    if (writer.framesHere && !writer.pushingBack) {
      // Framed here, `<seq>:` and payload in one Buffer (a fan-out's shared by the sessions at this seq), written as is.
      // Only while nothing waits in the send queue: what waits there is framed when it leaves, so it must hold the
      // `<seq>:` itself (below). The writer counts `data`'s bytes; its dead letters are the store's (Connection.deadLetter).
      let frame: Buffer;
      const running = frames === null && RUNNING.binding === this ? RUNNING.cseq : 0;
      if (frames !== null) frame = frames.frame(seq);
      else if (running > this.lastAcked && (running - this.lastAcked >= this.sessions.options.ackEvery || this.ackDue)) {
        // The reply of the request that makes the ack due (its count was taken by the store: it has run, and this reply
        // is stored), or any reply once the ack timer is half through, carries the ack in the same write, a second frame
        // after it: no write of its own (docs/sessions.md, "Acknowledgements").
        frame = seqFrameOf(seq, data, binary, encodeServerAck(running), bytes);
        this.lastAcked = running;
        this.ackDue = false;
        timerWheel.cancel(this); // the ack timer
      } else frame = seqFrameOf(seq, data, binary, null, bytes);
      writer.fanOut(data, binary, frame);
    } else if (typeof data === 'string') writer.send(encodeTextData(seq, data), binary);
    else {
      const framed = encodeBinaryData(seq, data);
      writer.send(Buffer.from(framed.buffer, framed.byteOffset, framed.length), binary);
    }
    if (writer.pushingBack && !this.local) {
      this.paused = true;
      // Made the first time the socket pushes back (most connections never do): the drain lets the held seqs go.
      writer.onDrained ??= () => {
        this.paused = false;
        this.drainEarly();
      };
    }
  }

  private writeControl(frame: string): void {
    if (this.live) this.connection.writer.send(frame, false);
  }

  /**
   * The cseq the next ack may name: the last request run here, or, with an async store, the last whose outcome the
   * store has answered (BindingRare.stored); local (unpersisted), the last run.
   */
  private get ackTo(): number {
    const rare = this.rare;
    return rare === null || rare.stored < 0 || this.local ? this.lastRun : Math.min(this.lastRun, rare.stored);
  }

  private scheduleAck(): void {
    const to = this.ackTo;
    // Acknowledged already (with its reply: `write`).
    if (to <= this.lastAcked) return;
    if (to - this.lastAcked >= this.sessions.options.ackEvery) return this.sendAck();
    // In two halves (`fire`): after the first the ack is due, and the next reply carries it (`write`); only a client
    // that sends nothing in the second half gets it alone, ackDelay after the first unacknowledged request as before.
    // A client slower than ackEvery requests per ackDelay (most) then gets its acks with its replies, not in writes of
    // their own. Armed already (either half): it runs on.
    if (!this.armed) timerWheel.schedule(this, this.sessions.options.ackDelay >> 1);
  }

  private sendAck(): void {
    timerWheel.cancel(this);
    this.ackDue = false;
    const to = this.ackTo;
    if (to <= this.lastAcked || !this.live) return;
    this.lastAcked = to;
    this.writeControl(encodeServerAck(to));
  }

  private violation(message: string): void {
    // R15: a protocol violation closes 1002 (the reason is capped at 123 bytes).
    void this.connection.close(1002, capCloseReason(message));
  }

  /**
   * @internal The store failed on this session: from now on this connection
   * carries it alone. Its seqs jump by LOCAL_SEQ_JUMP (so no resume can
   * continue over what the store missed); what waited for an earlier seq is
   * written now, in order; further messages go straight to the send queue,
   * bounded as any connection's (R9, R11).
   */
  unpersist(): void {
    if (this.local) return;
    this.local = true;
    const early = this.early;
    this.early = null;
    this.paused = false;
    this.written += LOCAL_SEQ_JUMP;
    if (early === null || !this.live || this.phase !== 'attached') return;
    for (const seq of [...early.keys()].sort((a, b) => a - b)) {
      const m = early.get(seq)!;
      this.write(this.written + 1, m.data, m.binary);
    }
  }

  /** @internal A message of an unpersisted session: written now under the next local seq. False when this connection cannot (closed, left). */
  deliverLocal(data: Outbound, binary: boolean): boolean {
    if (!this.live || this.phase !== 'attached') return false;
    this.write(this.written + 1, data, binary);
    return true;
  }

  /** @internal Another connection took the session over: this one carries nothing any more. */
  leave(): void {
    this.phase = 'left';
    this.early = null;
  }

  /** @internal The connection closed (R3: timers go). Returns whether the connection had been announced. */
  closed(): boolean {
    this.live = false;
    timerWheel.cancel(this); // the attach or the ack timer
    this.early = null;
    this.inbox = null;
    // Its reads' answers change nothing from now on.
    this.gapReader?.stop();
    return this.sessions.closed(this);
  }
}

/** The one `gap` event (no payload): every gap report sends this object. */
const GAP: GapReaderEvent = { type: 'gap' };
/** The pending-request machine's events without a payload, one object each. */
const PENDING_GONE: PendingRequestEvent = { type: 'gone' };
const PENDING_FAILED: PendingRequestEvent = { type: 'failed' };
const PENDING_LOCAL: PendingRequestEvent = { type: 'local' };
/** The session machine's `requestLeft` (no payload): one object for every report. */
const REQUEST_LEFT: SessionEvent = { type: 'requestLeft' };

/** A connection's gap reader's host: made with it, at the connection's first gap. */
class GapReaderHost<Auth> implements RunnerHost, HostedActor<GapStoreCommand> {
  constructor(private readonly binding: SessionBinding<Auth>) {}
  get actorId(): string {
    return `gap-reader:${this.binding.connection.id}`;
  }
  spawn(): HostedActor<never> {
    return this as unknown as HostedActor<never>;
  }
  command(command: GapStoreCommand): void {
    this.binding.gapCommand(command);
  }
  stop(): void {}
  done(): void {}
  failed(error: unknown): void {
    this.binding.gapReaderFailed(error);
  }
}

export type { JsonValue, Closure };
