/**
 * The Redis session store: sessions that any node sharing one Redis can
 * resume (docs/sessions.md, "The store on Redis"; keys and failure table in
 * docs/scaling.md, "The session store"). It implements the session store
 * contract (session-store.ts) exactly as the in-memory store does, bounds and
 * dead letters included (R12); the data lives in Redis, each operation one
 * Lua script (redis-session-scripts.ts), so it is atomic however many nodes
 * share the store.
 *
 * Where it differs, by necessity:
 * - `close()` releases this node's connection and leaves the sessions in
 *   Redis (the other nodes resume them); the sessions this node still holds
 *   attached are detached, so their resume window starts.
 * - A node that dies holds its attached sessions by a lease (`leaseTtl`,
 *   renewed every third of it): once it lapses, any node's `sweep()` detaches
 *   them, and the resume window runs from then.
 * - Operations go to Redis in batches (one script call runs many, in call
 *   order; docs/scaling.md, "Batches and the reconnect storm"): while Redis
 *   answers, a storm waits its turn on the node instead of timing out.
 * - Redis may be unreachable: an operation then fails at once (no offline
 *   queue) or once Redis has answered nothing for `commandTimeout` (hung),
 *   rejecting with a SessionStoreUnavailableError that says whether it may
 *   still have been applied; the store's `status` turns 'degraded' (a 'status' event) and the
 *   failures are logged once per kind per outage, counted in `failures`.
 * - The epoch is a key: when Redis comes back without it (restarted empty,
 *   flushed), the first call after creates a new one, so a resume that
 *   presents the old epoch is answered `restarted`.
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import type { Redis, RedisOptions } from 'ioredis';
import { backoffCeiling } from '../../machines/backoff.ts';
import { positiveInt } from '../base/checks.ts';
import { requirePeer } from '../base/optional-peer.ts';
import { SESSION_STORE_DEFAULTS } from './memory-session-store.ts';
import { parseRedisUrl, RedisUrlError, type RedisTarget } from './redis-url.ts';
import { endRedisClient } from './redis-close.ts';
import { SESSION_BATCH_SCRIPT, type SessionOpName } from './redis-session-scripts.ts';
import {
  messageBytes,
  newSessionId,
  newSessionToken,
  sameOwner,
  tokenDigest,
  tokenMatches,
  type AckResult,
  type AppendResult,
  type CreatedSession,
  type FanOutDelivery,
  type FanOutFence,
  type FanOutResult,
  type SessionFanOut,
  type JsonValue,
  type ReadResult,
  type RequestVerdict,
  type ResumeClaim,
  type ResumeResult,
  type ResumeFailureReason,
  type SessionDeadLetter,
  type SessionDeadLetterReason,
  type SessionMessage,
  type SessionRecord,
  type SessionStore,
  type SessionStoreHost,
  type SessionStoreStats,
  type StoredMessage,
  type VerifyResult,
} from './session-store.ts';

const { Redis: RedisClient } = requirePeer<typeof import('ioredis')>('ioredis', 'the Redis adapter (ws-supervisor/redis, --redis)');

export const REDIS_SESSION_STORE_DEFAULTS = {
  ...SESSION_STORE_DEFAULTS,
  /** Keys start with it; several applications (or clusters) can share one Redis. As the adapter's default, plus `session:`. */
  prefix: 'ws-supervisor:session:',
  /** 15 s: a node that died holds its attached sessions this long at most before they count as detached (as the adapter's presenceTtl). */
  leaseTtl: 15_000,
  /**
   * Redis answering nothing for this long (the oldest batch sent unanswered)
   * fails what was sent (unconfirmed: it may still be applied) and what is
   * queued (not applied); time spent queued on the node does not count. 10 s, not the adapter's 2 s: a session whose operation
   * fails can no longer be resumed (docs/sessions.md, "Store failures"), and
   * on a loaded host a busy event loop alone delays answers past 2 s (seen in
   * the 2,000-client reconnect test); a hung Redis under traffic is still
   * refused sooner, by maxInFlightBytes.
   */
  commandTimeout: 10_000,
  /** TCP connect + handshake; also how long the first operations wait for the first connection. */
  connectTimeout: 5_000,
  backoffInitialDelay: 100,
  backoffMaxDelay: 5_000,
  /**
   * 16 MiB of operations sent and not yet answered (as the adapter's): what
   * ioredis and the socket hold. Beyond it no further batch is sent until
   * Redis answers; operations wait in the queue (maxQueuedBytes).
   */
  maxInFlightBytes: 16 * 1_048_576,
  /**
   * 128 MiB of operations waiting on the node for their batch, counted as the
   * memory they hold (OP_HEAP_BYTES each plus their arguments, a fan-out's
   * message once): beyond it an operation fails at once (`unavailable`), so a
   * hung or overloaded Redis cannot make the node hold every message appended
   * meanwhile. Sized to carry a 10,000-session reconnect storm under a steady
   * broadcast (docs/scaling.md, "Batches and the reconnect storm"): some
   * 170,000 queued fan-out appends, or 8.5 s of 2 broadcasts a second to
   * 10,000 sessions, about commandTimeout's worth of that load.
   */
  maxQueuedBytes: 128 * 1_048_576,
  /**
   * Overdue sessions expired per script call: one call holds Redis for a
   * bounded time, and its reply (their held messages, up to maxBytes each) stays
   * bounded too (32 × 4 MiB at worst).
   */
  sweepBatch: 32,
} as const;

/** Reply seqs remembered per request: a reply of more messages is remembered as "too many" (null). As the memory store. */
const MAX_SEQS_PER_REPLY = 16;
const MAX_SEQS_PER_REPLY_ARG = String(MAX_SEQS_PER_REPLY);

function appendResult(r: Reply[]): AppendResult {
  if (r[1] === 1) return { ok: true, seq: r[2] as number };
  return { ok: false, reason: String(r[2]) as SessionDeadLetterReason, detail: String(r[3]) };
}

function isOne(r: Reply[]): boolean {
  return r[1] === 1;
}

function verdictOf(r: Reply[]): RequestVerdict {
  const kind = String(r[1]);
  if (kind === 'new') return { kind: 'new' };
  if (kind === 'unknown') return { kind: 'unknown' };
  if (kind === 'gap') return { kind: 'gap', expected: r[2] as number };
  if (kind === 'pending') return { kind: 'pending', here: r[2] === 1 };
  if (kind === 'moved') return { kind: 'moved' };
  const seqs = String(r[2]);
  return { kind: 'duplicate', replySeqs: seqs === '*' ? null : seqs === '' ? [] : seqs.split(',').map(Number) };
}

function ackResult(r: Reply[]): AckResult {
  return r[1] === 1 ? { ok: true, trimmed: r[2] as number } : { ok: false, error: String(r[2]) };
}
/** Renewals per operation (each one operation of a batch). */
const RENEW_BATCH = 500;
/**
 * Operations per script call. A batch holds Redis for its whole run (an
 * append is a dozen Redis calls, 4 µs of Redis CPU in a batch): 512 keep one
 * batch to a few milliseconds, and cut the per-call costs (the round trip,
 * the script's start, ioredis's per-command work) 512-fold under load.
 */
const BATCH_MAX_OPS = 512;
/** A `fanout` operation's arguments without a fence (key, message, binary, id); a fence adds three (#fanOut). */
const FANOUT_ARGS = 4;
/** Bytes of arguments per script call (a batch of large messages goes in several). */
const BATCH_MAX_BYTES = 1_048_576;
/**
 * Batches sent and unanswered at once. A node under load takes one event-loop
 * turn (tens of milliseconds, with 10,000 sockets) to read an answer and send
 * the next batch, so what one turn can send bounds the throughput: 8 × 512
 * operations per turn (seen: with 2 × 256, a 10k-session storm sent under
 * 2 batches a second, and its queue grew past maxInFlightBytes). Yet only
 * some 16 ms of Redis work are
 * in its socket at once: commandTimeout still measures Redis, not the queue.
 */
const BATCHES_IN_FLIGHT = 8;
/**
 * What an operation holds beyond its arguments while it waits or is in flight:
 * its PendingOp, argument array, promise and the caller's continuation.
 * Measured: 755 bytes of heap per queued fan-out append, the supervisor's
 * bookkeeping included (200,000 appends queued against a stopped Redis). So the
 * byte bounds count memory, not just the wire (32 bytes of framing would
 * undercount a queued append 6-fold).
 */
const OP_HEAP_BYTES = 768;

export interface RedisSessionStoreOptions {
  /** As the adapter's `url` (parseRedisUrl): `redis://[[user]:password@]host[:port][/db]` or `rediss://…`. */
  url: string;
  /** Prefix of every key. Default `'ws-supervisor:session:'`. Every node of one cluster must use the same. */
  prefix?: string;
  /** How long a detached session waits for its client, ms. Default 120000 (as the memory store). */
  resumeWindow?: number;
  /** Held (unacknowledged) messages per session. Default 4096. */
  maxMessages?: number;
  /** Held bytes per session. Default 4 MiB. */
  maxBytes?: number;
  /** Held bytes over all sessions of the store, cluster-wide (one Redis counter). Default 256 MiB. */
  maxBufferedBytes?: number;
  /** Detached sessions at once, cluster-wide (and tombstones kept). Default 10000. */
  maxDetachedSessions?: number;
  /** Requests per session whose reply seqs are remembered for `duplicate` answers. Default 64. */
  maxRememberedReplies?: number;
  /** How long this node's hold on its attached sessions lasts without renewal, ms (renewed every third). Default 15000. */
  leaseTtl?: number;
  /** Redis answering nothing for this long (the oldest batch sent) fails what was sent and what is queued, ms. Default 10000. */
  commandTimeout?: number;
  /** TCP connect + handshake timeout, ms. Default 5000. */
  connectTimeout?: number;
  /**
   * Bytes of operations sent to Redis and not yet answered (a timed-out one
   * counts until Redis answers a later one or the connection closes): beyond
   * it no further batch goes until Redis answers; the rest wait in the queue.
   * A single operation larger than it is still sent when nothing else is in
   * flight. Default 16 MiB.
   */
  maxInFlightBytes?: number;
  /**
   * Bytes of operations waiting on this node for their batch, as the memory
   * they hold (768 bytes each plus their arguments; a broadcast's message
   * counted once for all its sessions). Beyond it an operation fails at once
   * (`unavailable`, not applied). Default 128 MiB.
   */
  maxQueuedBytes?: number;
  /** Reconnect backoff: doubling from `initialDelay` up to `maxDelay`, jittered to 50–100%. Defaults 100 / 5000 ms. */
  backoff?: { initialDelay?: number; maxDelay?: number };
  /**
   * The clock of the resume window and tombstones, epoch ms. Default: Redis's
   * own clock (TIME, inside each script), one clock for every node whatever
   * theirs say. Tests pass a fake one.
   */
  now?: () => number;
}

/** Why an operation did not reach Redis, or was not confirmed. */
export type SessionStoreFailureKind =
  /**
   * Not connected, or too many bytes await Redis's answer (maxInFlightBytes):
   * never sent, nothing changed; or the connection closed after it was sent
   * (`applied: 'unknown'`).
   */
  | 'unavailable'
  /** Sent, not answered within commandTimeout (Redis hung or overloaded): it may still be applied. */
  | 'timeout'
  /** Redis answered with an error (out of memory, a script error…): nothing changed. */
  | 'error';

/**
 * An operation of the Redis session store that failed because of Redis. The
 * supervisor can count it (`kind`) and keep serving the connection locally.
 */
export class SessionStoreUnavailableError extends Error {
  static {
    this.prototype.name = 'SessionStoreUnavailableError';
  }
  constructor(
    readonly kind: SessionStoreFailureKind,
    /** The store method, e.g. `append`. */
    readonly operation: string,
    /** The session concerned, or null. */
    readonly sessionId: string | null,
    /** `no`: nothing changed in Redis; `unknown`: it may have been applied (a timeout). */
    readonly applied: 'no' | 'unknown',
    message: string,
    options?: { cause: unknown },
  ) {
    super(message, options);
  }
}

export type RedisSessionStoreStatus = 'up' | 'degraded';

export interface RedisSessionStoreEvents {
  /** The store became usable ('up') or not ('degraded', with why). */
  status: [status: RedisSessionStoreStatus, reason: string | null];
  /** Redis came back (or was found) with another epoch than this node knew: every session of the old one is gone. */
  epochChanged: [previous: string, current: string];
}

/** Raw script replies (ioredis's Buffer variants: bulk strings as Buffers, integers as numbers). */
type Reply = Buffer | number | null | Reply[];
type LetterReply = [Buffer, Buffer, Buffer, EntryReply[], number];
type EntryReply = [Buffer, Buffer[]];

type ScriptClient = Redis & { wsSessBatchBuffer: (...args: (string | Buffer | number)[]) => Promise<Reply[]> };

/** An operation waiting for its batch, or in one on its way to Redis. */
interface PendingOp {
  operation: string;
  id: string | null;
  op: SessionOpName;
  args: (string | Buffer)[];
  bytes: number;
  /** The message an append refused (it goes into the dead letter of its session). */
  refused: SessionMessage | undefined;
  /** The caller's answer from the reply (letters already handed over). */
  map: (reply: Reply[]) => unknown;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  /** When it was queued (performance.now()): a fan-out sent a lease late is refused (#pump). */
  at: number;
}

const asReply = (reply: Reply[]): Reply[] => reply;

/** A batch sent and not settled yet. */
interface Batch {
  ops: PendingOp[];
  settled: boolean;
  /** `answered()` callers waiting for this batch (and so every batch before it). */
  waiters?: (() => void)[];
}

/** A settled batch's waiters run after its operations' continuations (a macrotask later). */
function release(batch: Batch): void {
  const waiters = batch.waiters;
  if (waiters === undefined) return;
  batch.waiters = undefined;
  setImmediate(() => {
    for (const w of waiters) w();
  });
}

function failureKind(err: Error & { code?: unknown }): string {
  if (typeof err.code === 'string' && err.code !== '') return err.code;
  const redisCode = /^[A-Z]{3,}\b/.exec(err.message);
  if (redisCode) return redisCode[0];
  return err.message.split(/[,:(]/, 1)[0]!.replace(/[0-9]+/g, 'N').trim().slice(0, 80) || err.name;
}

export class RedisSessionStore extends EventEmitter<RedisSessionStoreEvents> implements SessionStore {
  readonly name = 'redis';

  /** How long a count of this node holds without its lease renewed (SessionStore.leaseTtl). */
  get leaseTtl(): number {
    return this.#limits.leaseTtl;
  }

  /**
   * This store instance in Redis (the script's NODE, random per store): the
   * session records it attaches name it; the fan-out tells it on the pub/sub
   * channel `<prefix>node:<id>` which of its sessions got which seq
   * (docs/sessions.md, "Fan-out in the store"); it is who counted a request,
   * and its key `node:<id>` (renewed with the leases; keys and channels are
   * separate in Redis) says it is alive: a request it counted is not run
   * elsewhere while it lives.
   */
  readonly nodeId = randomBytes(12).toString('base64url');
  /** Broadcasts and publishes appended to the member sessions in Redis, by the publishing node alone. */
  readonly fanOut: SessionFanOut = {
    broadcast: (message, id, fence) => this.#fanOut('broadcast', 'all', message, id, fence),
    publish: (topic, message, id, fence) => this.#fanOut('publish', `m:${topic}`, message, id, fence),
  };
  /** Fan-out notifications received (messages on this node's channel) and sessions they named: benchmarks, tests. */
  readonly fanOutStats = { notifications: 0, sessions: 0, malformed: 0 };
  #sub: Redis | null = null;
  #pingOut: Promise<void> | null = null;
  #pingNext: Promise<void> | null = null;
  #fanPumping = false;
  #fanAgain = false;
  /** A fan-out started here is unfinished in Redis (its last reply said pending): every batch sent carries a fanWork (#pump). */
  #fanOwed = false;
  readonly #limits: {
    resumeWindow: number;
    maxMessages: number;
    maxBytes: number;
    maxBufferedBytes: number;
    maxDetachedSessions: number;
    maxRememberedReplies: number;
    leaseTtl: number;
  };
  readonly #target: RedisTarget;
  readonly #prefix: string;
  readonly #commandTimeout: number;
  readonly #connectTimeout: number;
  readonly #backoffInitial: number;
  readonly #backoffMax: number;
  readonly #now: (() => number) | null;
  /** The ten arguments every script starts with (all but the clock). */
  readonly #common: string[];
  #host: SessionStoreHost | null = null;
  #client: ScriptClient | null = null;
  #ready = false;
  #everReady: Promise<void> | null = null;
  #wasReady = false;
  #closed: Promise<void> | null = null;
  #status: RedisSessionStoreStatus = 'degraded';
  #reason: string | null = 'connecting to redis';
  #lastError: string | null = null;
  #knownEpoch: string | null = null;
  /** Sessions this node holds attached, with the attach generation it holds (its detach must not undo another node's takeover). */
  readonly #held = new Map<string, string>();
  /** Sessions this node detached, with the attach generation then: its own expire must not end one resumed since. */
  readonly #detachedHere = new Map<string, string>();
  /** Sessions whose attach is on its way to Redis (their generation is about to change), with how many. */
  readonly #attaching = new Map<string, number>();
  #renewTimer: NodeJS.Timeout | null = null;
  readonly #loggedFailures = new Set<string>();
  /** Failed operations, by kind, since the store started (metrics); `failedSinceUp` for the recovery log line. */
  readonly failures: Record<SessionStoreFailureKind, number> = { unavailable: 0, timeout: 0, error: 0 };
  #failedSinceUp = 0;
  /** Scripts sent to Redis, by store operation, since the store started (benchmarks, metrics): the round trips a resume or a message costs. */
  readonly operations: Record<string, number> = {};
  readonly #maxInFlightBytes: number;
  readonly #maxQueuedBytes: number;
  /** Commands sent and not yet answered (their bytes are held by ioredis and the socket until then), oldest first. */
  #inFlight: { seq: number; bytes: number }[] = [];
  #inFlightHead = 0;
  #inFlightSeq = 0;
  #inFlightBytes = 0;
  #probing = false;
  /** Operations waiting for their batch, in call order (from `queueHead`), and their bytes. */
  #queue: PendingOp[] = [];
  #queueHead = 0;
  #queuedBytes = 0;
  #pumpScheduled = false;
  /** The ack operation of each session still in the queue (a later ack joins it). */
  readonly #queuedAcks = new Map<string, PendingOp>();
  /** Batches sent and not yet settled (answered, failed, or their connection closed), oldest first. */
  readonly #batches = new Set<Batch>();
  /** commandTimeout of the oldest batch (#armHead). */
  #headTimer: NodeJS.Timeout | null = null;
  /** Script calls (batches) sent to Redis since the store started: with `operations`, the operations per round trip. */
  batches = 0;

  constructor(options: RedisSessionStoreOptions) {
    super();
    try {
      this.#target = parseRedisUrl(options?.url);
    } catch (err) {
      if (err instanceof RedisUrlError) throw new RangeError(`ws-supervisor: redis session store option url ${err.message}`);
      throw err;
    }
    const d = REDIS_SESSION_STORE_DEFAULTS;
    const prefix = options.prefix ?? d.prefix;
    if (typeof prefix !== 'string' || prefix === '') throw new RangeError(`ws-supervisor: redis session store option prefix must be a non-empty string, got ${JSON.stringify(prefix)}`);
    this.#prefix = prefix;
    this.#limits = {
      resumeWindow: positiveInt('sessions.resumeWindow', options.resumeWindow, d.resumeWindow),
      maxMessages: positiveInt('sessions.maxMessages', options.maxMessages, d.maxMessages),
      maxBytes: positiveInt('sessions.maxBytes', options.maxBytes, d.maxBytes),
      maxBufferedBytes: positiveInt('sessions.maxBufferedBytes', options.maxBufferedBytes, d.maxBufferedBytes),
      maxDetachedSessions: positiveInt('sessions.maxDetachedSessions', options.maxDetachedSessions, d.maxDetachedSessions),
      maxRememberedReplies: positiveInt('sessions.maxRememberedReplies', options.maxRememberedReplies, d.maxRememberedReplies),
      leaseTtl: positiveInt('sessions.leaseTtl', options.leaseTtl, d.leaseTtl),
    };
    if (this.#limits.leaseTtl < 3) throw new RangeError(`ws-supervisor: option sessions.leaseTtl must be at least 3 ms (renewed every third), got ${this.#limits.leaseTtl}`);
    this.#commandTimeout = positiveInt('redis.commandTimeout', options.commandTimeout, d.commandTimeout);
    this.#maxInFlightBytes = positiveInt('redis.maxInFlightBytes', options.maxInFlightBytes, d.maxInFlightBytes);
    this.#maxQueuedBytes = positiveInt('redis.maxQueuedBytes', options.maxQueuedBytes, d.maxQueuedBytes);
    this.#connectTimeout = positiveInt('redis.connectTimeout', options.connectTimeout, d.connectTimeout);
    this.#backoffInitial = positiveInt('redis.backoff.initialDelay', options.backoff?.initialDelay, d.backoffInitialDelay);
    this.#backoffMax = positiveInt('redis.backoff.maxDelay', options.backoff?.maxDelay, d.backoffMaxDelay);
    this.#now = options.now ?? null;
    const l = this.#limits;
    // Keys outlive the session's own deadline by one more window and the lease: a sweep
    // (any node's) hands their messages over as dead letters first; Redis's TTL is the backstop
    // for a cluster where no node runs at all, not the policy (a TTL drop has no one to tell).
    const keyTtl = l.leaseTtl + 2 * l.resumeWindow;
    this.#common = [prefix, l.resumeWindow, l.maxMessages, l.maxBytes, l.maxBufferedBytes, l.maxDetachedSessions, l.maxRememberedReplies, l.leaseTtl, keyTtl].map(String);
  }

  /** 'up' while Redis answers; 'degraded' (with `statusReason`) while it cannot be reached or leaves commands unanswered. */
  get status(): RedisSessionStoreStatus {
    return this.#status;
  }

  get statusReason(): string | null {
    return this.#reason;
  }

  /** The prefix of every key (the nodes of one cluster share it). */
  get prefix(): string {
    return this.#prefix;
  }

  /** The Redis URL with its password masked. */
  get displayUrl(): string {
    return this.#target.display;
  }

  /** Operations waiting for their batch (sent ones not counted): how far this node is behind Redis. */
  get queuedOperations(): number {
    return this.#queue.length - this.#queueHead;
  }

  /** Sessions this node holds attached (their leases are renewed by it). */
  get heldSessions(): number {
    return this.#held.size;
  }

  start(host: SessionStoreHost): void {
    if (this.#host !== null) throw new Error('ws-supervisor: this session store is already started (one host per store)');
    if (this.#closed) throw new Error('ws-supervisor: the session store is closed');
    this.#host = host;
    const t = this.#target;
    const options: RedisOptions = {
      host: t.host,
      port: t.port,
      ...(t.username !== undefined ? { username: t.username } : {}),
      ...(t.password !== undefined ? { password: t.password } : {}),
      ...(t.family !== undefined ? { family: t.family } : {}),
      ...(t.tls ? { tls: isIP(t.host) ? {} : { servername: t.host } } : {}),
      connectTimeout: this.#connectTimeout,
      // No ioredis commandTimeout: the store times its batches itself (#send), and checks for the answer before it
      // declares one lost (a busy event loop runs an overdue timer before it reads the answer waiting in the socket).
      retryStrategy: (times) => {
        const base = backoffCeiling(times - 1, { initialDelay: this.#backoffInitial, maxDelay: this.#backoffMax, multiplier: 2 });
        return Math.round(base / 2 + (Math.random() * base) / 2);
      },
      maxRetriesPerRequest: null,
      // R12: a command runs now or fails now, and is never resent behind the caller's back.
      enableOfflineQueue: false,
      autoResendUnfulfilledCommands: false,
      connectionName: 'ws-supervisor:sessions',
      lazyConnect: false,
    };
    const client = new RedisClient(options) as ScriptClient;
    client.defineCommand('wsSessBatch', { lua: SESSION_BATCH_SCRIPT, numberOfKeys: 0 });
    this.#client = client;
    // The fan-out's notifications for this node (docs/sessions.md, "Fan-out in the store"). Each (re)subscription
    // may have missed some: the host then catches every carried session up from its stream.
    // autoResubscribe off, as on the adapter's subscriber: the 'ready' handler below subscribes again itself. ioredis's
    // own resubscribe drops the promise of its SUBSCRIBE, which (no offline queue) is rejected when the connection
    // drops again as it becomes ready: an unhandled rejection, which ends a Node process (seen once while Redis
    // restarted, under a busy loop per core).
    const sub = new RedisClient({ ...options, autoResubscribe: false, connectionName: 'ws-supervisor:sessions-fanout' });
    this.#sub = sub;
    const channel = `${this.#prefix}node:${this.nodeId}`;
    sub.on('messageBuffer', (_channel: Buffer, message: Buffer) => this.#notified(message));
    sub.on('ready', () => {
      sub.subscribe(channel).then(
        () => this.#host?.fanOutResync?.(),
        (err: Error) => this.#logFailure(err, 'fan-out channel subscribe failed'),
      );
    });
    sub.on('error', (err: Error) => this.#logFailure(err, 'fan-out channel'));
    this.#everReady = new Promise<void>((resolve) => {
      client.on('ready', () => {
        void this.#connected(client).then(resolve);
      });
    });
    client.on('close', () => {
      // A closed connection holds nothing any more: what was sent is answered or rejected.
      this.#inFlight = [];
      this.#inFlightHead = 0;
      this.#inFlightBytes = 0;
      // ioredis would reject what was sent at its commandTimeout only (nothing is resent): settle it now, and what waits.
      const lost = new Error('Connection is closed before redis answered');
      for (const batch of this.#batches) {
        batch.settled = true;
        for (const o of batch.ops) o.reject(this.#failed('unavailable', o.operation, o.id, 'unknown', lost));
        release(batch);
      }
      this.#batches.clear();
      this.#armHead();
      this.#failQueue(new Error('redis connection closed'));
      if (!this.#ready) return;
      this.#ready = false;
      this.#setStatus('degraded', `redis unavailable${this.#lastError ? `: ${this.#lastError}` : ''}`);
    });
    client.on('error', (err: Error) => {
      this.#lastError = err.message;
      this.#logFailure(err, 'connection error');
      if (!this.#ready) this.#reason = `redis unavailable: ${err.message}`;
    });
    this.#renewTimer = setInterval(() => void this.#renew(), Math.max(1, Math.floor(this.#limits.leaseTtl / 3)));
    this.#renewTimer.unref();
  }

  // Most methods return the operation's own promise, its answer mapped as the batch settles (no async frame): every
  // caller's continuation then runs in the order Redis ran the operations (the supervisor writes a resumed session's
  // replay before the appends that followed its readAfter; an extra await in one method but not another would let
  // an append's continuation overtake the resume's).
  epoch(): Promise<string> {
    return this.#run('epoch', null, 'epoch', [newEpoch()], (r) => this.#noteEpoch(String(r[1])));
  }

  async create(init: { owner: string | null; data?: JsonValue }): Promise<CreatedSession> {
    const data = JSON.stringify(init.data ?? null);
    for (;;) {
      const id = newSessionId();
      const token = newSessionToken();
      const r = await this.#run('create', id, 'create', [id, tokenDigest(token), init.owner ?? '', init.owner === null ? '0' : '1', data, newEpoch(), this.nodeId]);
      if (r[1] !== 1) continue; // 2^-128: never, but cheap to be sure
      const epoch = this.#noteEpoch(String(r[2]));
      this.#held.set(id, '1');
      return { id, token, epoch, record: toRecord(id, r[3] as Buffer[]) };
    }
  }

  get(id: string): Promise<SessionRecord | null> {
    return this.#run('get', id, 'get', [id], (r) => (r[1] === 1 ? toRecord(id, r[2] as Buffer[]) : null));
  }

  verify(claim: ResumeClaim): Promise<VerifyResult> {
    const hasEpoch = claim.epoch !== undefined;
    return this.#run('verify', claim.id, 'verify', [claim.id, hasEpoch ? '1' : '0', claim.epoch ?? ''], (r) => this.#verified(claim, r));
  }

  #verified(claim: ResumeClaim, r: Reply[]): VerifyResult {
    if (r[1] !== 1) {
      const reason = String(r[2]) as ResumeFailureReason;
      if (reason === 'restarted') {
        const current = String(r[3]);
        if (current !== '') this.#noteEpoch(current);
        return { ok: false, reason, detail: `the session store restarted (epoch ${JSON.stringify(claim.epoch)} is gone)` };
      }
      return { ok: false, reason, detail: String(r[3]) };
    }
    const fields = hashOf(r[2] as Buffer[]);
    // Both compared, whatever the first says: the answer's timing tells nothing about which failed.
    const tokenOk = tokenMatches(claim.token, fields.get('dg') ?? Buffer.alloc(32));
    const ownerOk = sameOwner(claim.owner, fields.has('o') ? fields.get('o')!.toString() : null);
    if (!tokenOk) return { ok: false, reason: 'forbidden', detail: 'the resume token does not match' };
    if (!ownerOk) return { ok: false, reason: 'forbidden', detail: 'the session belongs to another identity' };
    // The script found the claim's epoch current: this node may not have seen it yet (another node's created it).
    if (claim.epoch !== undefined) this.#noteEpoch(claim.epoch);
    return { ok: true, record: recordOf(claim.id, fields) };
  }

  // append and ack are the hot paths (every message, every client's acks): no async frames, one promise each.
  append(id: string, message: SessionMessage, replyTo?: number): Promise<AppendResult> {
    // The generation this node holds (attached, or detached by it): a stale one is refused (`moved`), so a node
    // whose copy of the session was resumed elsewhere stops appending to it. None while an attach is on its way.
    const generation = this.#generation(id);
    const args = [id, message.data, message.binary ? '1' : '0', generation, replyTo === undefined ? '' : String(replyTo), MAX_SEQS_PER_REPLY_ARG];
    return this.#run('append', id, 'append', args, appendResult, message);
  }

  ack(id: string, seq: number): Promise<AckResult> {
    if (!Number.isSafeInteger(seq) || seq < 0) return Promise.resolve({ ok: false, error: `ack seq must be an integer ≥ 0, got ${String(seq)}` });
    const queued = this.#queuedAcks.get(id);
    if (queued !== undefined && this.#host !== null && !this.#closed) {
      // An ack of this session still waits for its batch: it takes this one's seq too (acks are cumulative, and every
      // seq the client has was assigned before anything still queued ran). One operation instead of two; both answered.
      if (seq > Number(queued.args[1])) queued.args[1] = String(seq);
      this.operations['ack (merged)'] = (this.operations['ack (merged)'] ?? 0) + 1;
      return new Promise<AckResult>((resolve, reject) => {
        const { resolve: first, reject: firstFailed } = queued;
        queued.resolve = (value) => {
          first(value);
          const r = value as AckResult;
          resolve(r.ok ? { ok: true, trimmed: 0 } : r);
        };
        queued.reject = (err) => (firstFailed(err), reject(err));
      });
    }
    return this.#run('ack', id, 'ack', [id, String(seq)], ackResult);
  }

  readAfter(id: string, seq: number): Promise<ReadResult> {
    if (!Number.isSafeInteger(seq) || seq < 0) {
      // The memory store looks the session up first; the answer for a bad position is the same either way.
      return Promise.resolve({ ok: false, reason: 'unknown', detail: `lastSeq must be an integer ≥ 0, got ${String(seq)}` });
    }
    return this.#run('readAfter', id, 'readAfter', [id, String(seq)], (r): ReadResult => {
      if (r[1] !== 1) return { ok: false, reason: String(r[2]) as ResumeFailureReason, detail: String(r[3]) };
      return { ok: true, messages: (r[2] as EntryReply[]).map(toMessage) };
    });
  }

  /**
   * readAfter and attach in one script (one moment in Redis); the generation it gives is this node's hold from
   * then. The operation's own promise (no async frame), as readAfter's: the caller's continuation runs before those
   * of the appends called after it.
   */
  resume(id: string, seq: number): Promise<ResumeResult> {
    if (!Number.isSafeInteger(seq) || seq < 0) return Promise.resolve({ ok: false, reason: 'unknown', detail: `lastSeq must be an integer ≥ 0, got ${String(seq)}` });
    // As attach: appends called meanwhile must not present the generation this attach replaces.
    this.#attaching.set(id, (this.#attaching.get(id) ?? 0) + 1);
    let settled = false;
    const done = (): void => {
      if (settled) return;
      settled = true;
      const n = this.#attaching.get(id)! - 1;
      if (n === 0) this.#attaching.delete(id);
      else this.#attaching.set(id, n);
    };
    const answer = this.#run('resume', id, 'resume', [id, String(seq)], (r): ResumeResult => {
      done();
      if (r[1] !== 1) return { ok: false, reason: String(r[2]) as ResumeFailureReason, detail: String(r[3]) };
      this.#held.set(id, String(r[2]));
      this.#detachedHere.delete(id);
      return { ok: true, record: toRecord(id, r[4] as Buffer[]), messages: (r[3] as EntryReply[]).map(toMessage) };
    });
    answer.catch(done);
    return answer;
  }

  /**
   * Resolves once every batch sent so far is answered or failed (Redis
   * answers one connection in order: the newest one), and every fan-out
   * notification Redis sent this node before now has been handed over (a
   * PING on the notification connection comes back after them).
   */
  answered(): Promise<void> {
    let last: Batch | undefined;
    for (const b of this.#batches) last = b;
    const batches = last === undefined ? Promise.resolve() : new Promise<void>((resolve) => (last.waiters ??= []).push(resolve));
    return Promise.all([batches, this.#notified_()]).then(() => undefined);
  }

  /**
   * A PING on the notification connection, sent after this call (one in
   * flight at a time: callers that come while one is out wait for the next,
   * since the one out may have left before the notification they miss).
   */
  #notified_(): Promise<void> {
    const sub = this.#sub;
    if (sub === null || sub.status !== 'ready') return Promise.resolve();
    const ping = (): Promise<void> => {
      const p = sub.ping().then(() => undefined, () => undefined).finally(() => {
        if (this.#pingOut === p) this.#pingOut = null;
      });
      this.#pingOut = p;
      return p;
    };
    if (this.#pingOut === null) return ping();
    this.#pingNext ??= this.#pingOut.then(() => {
      this.#pingNext = null;
      return ping();
    });
    return this.#pingNext;
  }

  /** As readAfter, trimming nothing: what a node reads to fill a seq gap (it may have written more than its client got). */
  peekAfter(id: string, seq: number): Promise<ReadResult> {
    if (!Number.isSafeInteger(seq) || seq < 0) return Promise.resolve({ ok: false, reason: 'unknown', detail: `seq must be an integer ≥ 0, got ${String(seq)}` });
    return this.#run('peekAfter', id, 'peekAfter', [id, String(seq)], (r): ReadResult => {
      if (r[1] !== 1) return { ok: false, reason: String(r[2]) as ResumeFailureReason, detail: String(r[3]) };
      return { ok: true, messages: (r[2] as EntryReply[]).map(toMessage) };
    });
  }

  beginRequest(id: string, cseq: number): Promise<RequestVerdict> {
    if (!Number.isSafeInteger(cseq) || cseq < 1) return Promise.reject(new RangeError(`cseq must be an integer ≥ 1, got ${String(cseq)}`));
    // The generation this node holds, as append's: a node whose hold is stale counts nothing (`moved`).
    return this.#run('beginRequest', id, 'beginRequest', [id, String(cseq), this.#generation(id)], verdictOf);
  }

  endRequest(id: string, cseq: number): Promise<void> {
    return this.#run('endRequest', id, 'endRequest', [id, String(cseq)], () => undefined);
  }

  releaseRequests(id: string, cseqs: readonly number[]): Promise<void> {
    return this.#run('releaseRequests', id, 'releaseRequests', [id, ...cseqs.map(String)], () => undefined);
  }

  /** The attach generation this node presents for `id`: held (attached, or detached by it); '' (unchecked) while an attach is on its way or none is known. */
  #generation(id: string): string {
    return this.#attaching.has(id) ? '' : (this.#held.get(id) ?? this.#detachedHere.get(id) ?? '');
  }

  rememberReply(id: string, cseq: number, seq: number): Promise<void> {
    return this.#run('rememberReply', id, 'rememberReply', [id, String(cseq), String(seq), MAX_SEQS_PER_REPLY_ARG], () => undefined);
  }

  join(id: string, topic: string): Promise<boolean> {
    return this.#run('join', id, 'topic', [id, 'join', topic], isOne);
  }

  leave(id: string, topic: string): Promise<boolean> {
    return this.#run('leave', id, 'topic', [id, 'leave', topic], isOne);
  }

  setData(id: string, data: JsonValue): Promise<boolean> {
    return this.#run('setData', id, 'setData', [id, JSON.stringify(data)], isOne);
  }

  /** Kept async (its bookkeeping runs however it ends): nothing of the supervisor's ordering hangs on its continuation. */
  async attach(id: string): Promise<boolean> {
    // Appends called from now on run after this attach (one connection, in order): they must not present the old generation.
    this.#attaching.set(id, (this.#attaching.get(id) ?? 0) + 1);
    try {
      const r = await this.#run('attach', id, 'attach', [id, this.nodeId]);
      if (r[1] !== 1) return false;
      this.#held.set(id, String(r[2]));
      this.#detachedHere.delete(id);
      // A fan-out between the resume's read and this attach told no node of its seq (the session named another, or
      // none): the host reads what its connection lacks.
      const last = r[3] as number;
      if (last > 0) this.#host?.fanOutDelivered?.({ message: null, sessions: [{ id, seq: last }], ended: [] });
      return true;
    } finally {
      const n = this.#attaching.get(id)! - 1;
      if (n === 0) this.#attaching.delete(id);
      else this.#attaching.set(id, n);
    }
  }

  /** False also when another node attached the session since this node did (a takeover: the session is not this node's to detach). */
  async detach(id: string): Promise<boolean> {
    const generation = this.#held.get(id) ?? '';
    const r = await this.#run('detach', id, 'detach', [id, generation]);
    const ok = r[1] === 1;
    // A resume or attach of this node that Redis ran before this detach answered first: its hold is newer than the
    // one presented here (a takeover on this node while the old connection closed), and stays: deleted, its lease went
    // unrenewed (a sweep detached the session under its connection) and every later append and request was `moved`.
    const held = this.#held.get(id);
    if (held !== undefined && held !== generation) return ok;
    this.#held.delete(id);
    // Detached: the generation then (its own expire must not end one resumed since). Refused (taken over, or gone):
    // the generation it held, so that an append this node still makes is refused (`moved`), not kept unchecked —
    // the session's seqs are the new holder's alone.
    const remembered = ok ? String(r[2]) : generation;
    if (remembered === '') return ok;
    this.#detachedHere.delete(id);
    this.#detachedHere.set(id, remembered);
    // Bounded: the oldest are forgotten first (an expire of one of those is then unconditional, as the contract's).
    if (this.#detachedHere.size > this.#limits.maxDetachedSessions) this.#detachedHere.delete(this.#detachedHere.keys().next().value!);
    return ok;
  }

  /**
   * False also when the session was attached since this node detached it (on
   * any node): this node's resume-window timer is stale, the session's window
   * restarted elsewhere.
   */
  async expire(id: string, detail?: string): Promise<boolean> {
    const generation = this.#detachedHere.get(id) ?? '';
    this.#detachedHere.delete(id);
    const expired = (await this.#run('expire', id, 'expire', [id, generation, detail ?? '']))[1] === 1;
    if (expired) this.#held.delete(id);
    return expired;
  }

  async end(id: string, detail: string): Promise<boolean> {
    this.#held.delete(id);
    return (await this.#run('end', id, 'end', [id, detail]))[1] === 1;
  }

  async sweep(): Promise<number> {
    let expired = 0;
    for (;;) {
      const r = await this.#run('sweep', null, 'sweep', [String(REDIS_SESSION_STORE_DEFAULTS.sweepBatch)]);
      expired += r[1] as number;
      if (r[2] !== 1) break;
    }
    // A fan-out whose node died (or failed) half-way is finished by whichever node sweeps.
    this.#pumpFanOut();
    return expired;
  }

  /**
   * One fan-out: one operation of the next batch; a large one goes on in later calls (#pumpFanOut). With a fence
   * (the request whose handler made it), the script checks it first, against the attach generation this node holds
   * now (as the request's reply presents it: `append`): refused there, atomically with everything before it in Redis,
   * when another node took the request over (fan_fenced in redis-session-scripts.ts). Three more arguments of the
   * operation already sent; no round trip of its own.
   */
  #fanOut(operation: 'broadcast' | 'publish', key: string, message: SessionMessage, id = '', fence?: FanOutFence): Promise<FanOutResult> {
    if (!/^[\w.:-]{0,64}$/.test(id)) return Promise.reject(new RangeError(`ws-supervisor: a fan-out's id must be up to 64 letters, digits, '_', '-', '.' or ':', got ${JSON.stringify(id)}`));
    const args: (string | Buffer)[] = [key, message.data, message.binary ? '1' : '0', id];
    if (fence !== undefined) args.push(fence.sessionId, this.#generation(fence.sessionId), String(fence.cseq));
    return this.#run(operation, null, 'fanout', args, (r): FanOutResult => {
      if (r[3] != null) return { appended: 0, pending: false, refused: String(r[3]) };
      const pending = r[1] === 1;
      if (pending) {
        this.#fanOwed = true;
        this.#pumpFanOut();
      }
      return { appended: r[2] as number, pending };
    });
  }

  /**
   * Sends `fanWork` operations, one at a time, while unfinished fan-outs are
   * left in Redis: each call appends at most FANOUT_CHUNK member sessions, so
   * other nodes' operations run between the chunks. A failure stops it (the
   * operation's failure is counted and logged): the queue stays in Redis, and
   * the next sweep (this node's or another's) goes on with it.
   */
  #pumpFanOut(): void {
    if (this.#fanPumping) {
      this.#fanAgain = true;
      return;
    }
    this.#fanPumping = true;
    void (async () => {
      try {
        for (;;) {
          this.#fanAgain = false;
          if (!this.#ready || this.#closed) return;
          const r = await this.#call('fanWork', null, 'fanWork', []);
          this.#fanOwed = r[1] === 1;
          if (r[1] !== 1 && !this.#fanAgain) return;
        }
      } catch {
        // Counted and logged by #failed; the queue waits in Redis for the next sweep (no batch carries a fanWork meanwhile).
        this.#fanOwed = false;
      } finally {
        this.#fanPumping = false;
      }
    })();
  }

  /** A notification on this node's channel: which of its attached sessions got which seq of one fan-out. */
  #notified(frame: Buffer): void {
    const end = frame.indexOf('\n\n');
    if (end < 1 || (frame[0] !== 0x30 && frame[0] !== 0x31)) {
      this.fanOutStats.malformed++;
      return;
    }
    const binary = frame[0] === 0x31;
    const data = frame.subarray(end + 2);
    const delivery: FanOutDelivery = { message: { data: binary ? data : data.toString('utf8'), binary, bytes: data.length }, sessions: [], ended: [] };
    // ' <fan-out id>' after the flag when its caller named it.
    let from = 2;
    if (frame[1] === 0x20) {
      from = frame.indexOf(0x0a, 2) + 1;
      delivery.fanOut = frame.toString('latin1', 2, from - 1);
    }
    for (const line of frame.toString('utf8', from, end).split('\n')) {
      const a = line.indexOf(' ');
      const b = line.indexOf(' ', a + 1);
      const id = line.slice(0, a);
      const seq = Number(b === -1 ? line.slice(a + 1) : line.slice(a + 1, b));
      if (a < 1 || !Number.isSafeInteger(seq)) {
        this.fanOutStats.malformed++;
        continue;
      }
      if (seq > 0) delivery.sessions.push({ id, seq });
      else {
        const c = line.indexOf(' ', b + 1);
        delivery.ended.push({ id, reason: line.slice(b + 1, c === -1 ? undefined : c) as SessionDeadLetterReason, detail: c === -1 ? '' : line.slice(c + 1) });
      }
    }
    this.fanOutStats.notifications++;
    this.fanOutStats.sessions += delivery.sessions.length;
    this.#host?.fanOutDelivered?.(delivery);
  }

  async stats(): Promise<SessionStoreStats> {
    const r = await this.#run('stats', null, 'stats', []);
    return { sessions: r[1] as number, detached: r[2] as number, bufferedMessages: r[3] as number, bufferedBytes: r[4] as number, tombstones: r[5] as number };
  }

  /**
   * This node leaves: the sessions it still holds attached are detached (their
   * resume window starts; any node can resume them), and its Redis connection
   * closes. The sessions stay in Redis: closing one node must not end the
   * cluster's sessions. Idempotent.
   */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      if (this.#renewTimer) clearInterval(this.#renewTimer);
      this.#renewTimer = null;
      const client = this.#client;
      if (client && this.#ready) {
        await Promise.all([...this.#held.keys()].map((id) => this.#call('detach', id, 'detach', [id, this.#held.get(id) ?? '']).catch(() => undefined)));
      }
      this.#held.clear();
      this.#ready = false;
      this.#status = 'degraded';
      this.#reason = 'session store closed';
      // Stops reconnecting and ends the sockets at once (R3), with no timer left when Redis is gone.
      if (client) endRedisClient(client);
      if (this.#sub) endRedisClient(this.#sub);
    })();
    return this.#closed;
  }

  // -------------------------------------------------------------------------

  async #connected(client: Redis): Promise<void> {
    if (this.#closed || this.#client !== client) return;
    try {
      if (this.#target.db !== 0) await client.select(this.#target.db);
      // Came back with our data, or without (restarted empty, flushed): the epoch tells.
      let timer: NodeJS.Timeout | undefined;
      const [reply] = await Promise.race([
        (client as ScriptClient).wsSessBatchBuffer(...this.#batchArgs([{ op: 'epoch', args: [newEpoch()] }])),
        new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`Command timed out: no epoch from redis within ${this.#commandTimeout} ms`)), this.#commandTimeout))),
      ]).finally(() => clearTimeout(timer));
      const [letters, epoch] = reply as Reply[];
      if (!Array.isArray(letters)) throw new Error(`redis session store: the epoch script failed: ${String(letters)}`);
      this.#noteEpoch(String(epoch));
    } catch (err) {
      this.#lastError = (err as Error).message;
      this.#logFailure(err as Error, 'cannot use redis');
      client.disconnect(true); // reconnect, with backoff
      return;
    }
    this.#ready = true;
    this.#wasReady = true;
    this.#lastError = null;
    this.#setStatus('up', null);
    void this.#renew();
  }

  #noteEpoch(epoch: string): string {
    const previous = this.#knownEpoch;
    this.#knownEpoch = epoch;
    if (previous !== null && previous !== epoch) {
      // Every session this node held is gone with the old epoch.
      this.#held.clear();
      this.#host?.logger?.warn(
        { url: this.#target.display, previous, epoch },
        'redis session store: redis lost the session data (restarted empty or flushed): every session of the previous epoch is gone; their resumes are answered restarted',
      );
      this.emit('epochChanged', previous, epoch);
    }
    return epoch;
  }

  /** Renews the leases of the sessions this node holds attached, in batches. */
  async #renew(): Promise<void> {
    if (!this.#ready || this.#closed) return;
    const ids = [...this.#held.keys()];
    // At least one call, holding none: it renews this node's own key too (requests it counted are its to finish).
    for (let i = 0; i === 0 || i < ids.length; i += RENEW_BATCH) {
      try {
        const batch = ids.slice(i, i + RENEW_BATCH);
        const generations = new Map(batch.map((id) => [id, this.#held.get(id)]));
        const [, lost, epoch, moved] = await this.#call('renew', null, 'renew', [newEpoch(), ...batch.flatMap((id) => [id, generations.get(id) ?? ''])]);
        // Flushed (no reconnect tells it): a new epoch, and every session of the old one is gone ('epochChanged').
        // First: those are not lapsed leases (it clears what this node holds).
        this.#noteEpoch(String(epoch));
        const gone: string[] = [];
        for (const b of lost as Buffer[]) {
          const id = b.toString();
          // Held as when the renewal left, and no attach of it on its way: else a newer hold of this node (a resume
          // that Redis ran after the renewal) is not this renewal's to drop.
          if (this.#held.get(id) !== generations.get(id) || this.#attaching.has(id)) continue;
          this.#held.delete(id);
          gone.push(id);
        }
        if (gone.length > 0) this.#host?.attachLost?.(gone);
        // Attached by another node since (a takeover there): kept in #held, with the generation this node held, so
        // that the detach its connection's close makes is refused (deleted, that detach would be unconditional and
        // detach the session under the other node's connection). The host terminates that connection; until it
        // has, each renewal names the session again.
        const taken: string[] = [];
        for (const b of moved as Buffer[]) {
          const id = b.toString();
          if (this.#held.get(id) !== generations.get(id) || this.#attaching.has(id)) continue;
          taken.push(id);
        }
        if (taken.length > 0) this.#host?.attachMoved?.(taken);
      } catch {
        return; // reported by #call; the next renewal tries again
      }
    }
  }

  /** The script's arguments for `ops`: the common ones, the clock, then each operation as name, argc, args. */
  #batchArgs(ops: readonly { op: SessionOpName; args: (string | Buffer)[] }[]): (string | Buffer)[] {
    const out: (string | Buffer)[] = [...this.#common, this.#now === null ? '' : String(this.#now()), this.nodeId];
    for (const o of ops) out.push(o.op, String(o.args.length), ...o.args);
    return out;
  }

  /**
   * Queues operation `name` for the next batch (one script call runs a batch,
   * in call order: the order of operations on this connection is the order of
   * the calls). Settles with `map` of its own reply, after the sessions it
   * ended are handed to the host as dead letters (R12), or fails as its batch
   * failed. Never throws: every failure is a rejection.
   */
  #run<T = Reply[]>(operation: string, id: string | null, name: SessionOpName, extra: (string | Buffer)[], map?: (reply: Reply[]) => T, refused?: SessionMessage): Promise<T> {
    if (this.#host === null) return Promise.reject(new Error('ws-supervisor: start(host) the session store before using it (dead letters need a host)'));
    if (this.#closed) return Promise.reject(new Error('ws-supervisor: the session store is closed'));
    return this.#call(operation, id, name, extra, (map ?? asReply) as (reply: Reply[]) => T, refused);
  }

  #call<T = Reply[]>(operation: string, id: string | null, name: SessionOpName, extra: (string | Buffer)[], map: (reply: Reply[]) => T = asReply as (reply: Reply[]) => T, refused?: SessionMessage): Promise<T> {
    if (!this.#ready && !this.#wasReady && this.#everReady) {
      // The first connection may still be on its way: wait for it (bounded); after that, never wait on an outage.
      let timer: NodeJS.Timeout | undefined;
      return Promise.race([this.#everReady, new Promise<void>((resolve) => (timer = setTimeout(resolve, this.#connectTimeout)))]).then(() => {
        clearTimeout(timer);
        return this.#enqueue(operation, id, name, extra, map, refused);
      });
    }
    return this.#enqueue(operation, id, name, extra, map, refused);
  }

  #enqueue<T>(operation: string, id: string | null, name: SessionOpName, extra: (string | Buffer)[], map: (reply: Reply[]) => T, refused: SessionMessage | undefined): Promise<T> {
    const client = this.#client!;
    if (!this.#ready) {
      return Promise.reject(this.#failed('unavailable', operation, id, 'no', new Error(`redis unavailable${this.#lastError ? `: ${this.#lastError}` : ''}`)));
    }
    let bytes = OP_HEAP_BYTES + name.length;
    // A broadcast's appends, one per session in a row, share its message: held once, sent once per batch (appendN).
    const last = this.#queue.length > this.#queueHead ? this.#queue[this.#queue.length - 1]! : null;
    const shared = name === 'append' && last !== null && last.op === 'append' && last.args[1] === extra[1] && last.args[2] === extra[2];
    for (let i = 0; i < extra.length; i++) {
      if (shared && i === 1) continue;
      const a = extra[i]!;
      bytes += typeof a === 'string' ? Buffer.byteLength(a) : a.length;
    }
    const inFlight = this.#inFlightBytes;
    if (this.#batches.size === 0 && inFlight > 0 && inFlight + bytes > this.#maxInFlightBytes) {
      // Only batches that timed out are unanswered (Redis hung): nothing is sent until it answers (a PING finds out),
      // and nothing would time this one out meanwhile: refused now.
      this.#probe(client);
      return Promise.reject(this.#failed(
        'unavailable',
        operation,
        id,
        'no',
        new Error(`${inFlight} bytes of operations await Redis's answer; ${bytes} more would pass maxInFlightBytes ${this.#maxInFlightBytes}`),
      ));
    }
    const queued = this.#queuedBytes;
    if (queued > 0 && queued + bytes > this.#maxQueuedBytes) {
      // Redis is not answering fast enough (hung, overloaded): refuse now rather than hold every message in memory.
      if (this.#inFlightBytes > 0) this.#probe(client);
      return Promise.reject(this.#failed(
        'unavailable',
        operation,
        id,
        'no',
        new Error(`${queued} bytes of operations wait for their batch (${this.#inFlightBytes} more sent, unanswered); ${bytes} more would pass maxQueuedBytes ${this.#maxQueuedBytes}`),
      ));
    }
    this.operations[operation] = (this.operations[operation] ?? 0) + 1;
    return new Promise<T>((resolve, reject) => {
      const op: PendingOp = { operation, id, op: name, args: extra, bytes, refused, map, resolve: resolve as (value: unknown) => void, reject, at: performance.now() };
      this.#queue.push(op);
      if (name === 'ack') this.#queuedAcks.set(id!, op);
      this.#queuedBytes += bytes;
      if (!this.#pumpScheduled) {
        this.#pumpScheduled = true;
        // The rest of this turn's operations (a broadcast to every session, the frames of one read) join the batch.
        setImmediate(this.#scheduledPump);
      }
    });
  }

  /** An operation's reply: the sessions it ended go to the host as dead letters (R12), then its caller gets its answer. */
  #settle(o: PendingOp, reply: Reply[]): void {
    try {
      for (const letter of reply[0] as LetterReply[]) {
        const dead = toLetter(letter, o.refused);
        // A fan-out's letter for a member it could not append to (reason fanout): that session goes on.
        if (dead.reason !== 'fanout') this.#held.delete(dead.sessionId);
        this.#host?.deadLetter(dead);
      }
      o.resolve(o.map(reply));
    } catch (err) {
      o.reject(err as Error);
    }
  }

  readonly #scheduledPump = (): void => {
    this.#pumpScheduled = false;
    this.#pump();
  };

  /**
   * Sends queued operations, in order, in batches (at most BATCH_MAX_OPS
   * operations or BATCH_MAX_BYTES each), while fewer than BATCHES_IN_FLIGHT
   * are unanswered. The rest wait here, in order, not in Redis's socket: so a
   * storm queues instead of timing out (commandTimeout runs from the send,
   * and measures Redis, not the depth of the queue), and the batch that goes
   * next collects everything that arrived meanwhile.
   */
  #pump(): void {
    const client = this.#client;
    while (this.#queueHead < this.#queue.length && this.#batches.size < BATCHES_IN_FLIGHT) {
      if (client === null || !this.#ready) return this.#failQueue(new Error(`redis unavailable${this.#lastError ? `: ${this.#lastError}` : ''}`));
      // maxInFlightBytes: what ioredis and the socket hold waits for Redis's answers (a PING finds out when a
      // timed-out batch, still counted, has been answered after all).
      const room = this.#maxInFlightBytes - this.#inFlightBytes;
      if (this.#inFlightBytes > 0 && this.#queue[this.#queueHead]!.bytes > room) return this.#probe(client);
      const ops: PendingOp[] = [];
      let bytes = 0;
      let extra = 0;
      if (this.#fanOwed) {
        ops.push(this.#fanWorkOp());
        extra = bytes = ops[0]!.bytes;
      }
      // A fan-out without a fence (FanOutFence: made outside a request's turn, or by a request run locally) queued
      // two thirds of a lease ago (this process stalled: frozen, swapped) is not sent: a request that made it may have
      // been taken over meanwhile by another node (its count unfinished past this node's lease) and run there, its
      // push made there; sent now, it would come twice, the second far out of order. Refused: its message is a dead
      // letter of the fan-out (R12), never delivered twice. A fenced one goes: the script refuses it exactly when its
      // request was taken over, and passes it when the request ran here alone (its count still this node's: the other
      // node waits for it). Refused by its age, that push was lost though its request ran once (a frozen worker's
      // clients missed pushes p7 and p8 of test/cli/sessions-redis.test.ts, under load, their replies delivered).
      const staleBefore = performance.now() - Math.floor((this.#limits.leaseTtl * 2) / 3);
      while (this.#queueHead < this.#queue.length && ops.length < BATCH_MAX_OPS) {
        const next = this.#queue[this.#queueHead]!;
        if (next.op === 'fanout' && next.at <= staleBefore && next.args.length === FANOUT_ARGS) {
          this.#queue[this.#queueHead++] = undefined!;
          this.#queuedBytes -= next.bytes;
          const waited = Math.round(performance.now() - next.at);
          // Answered as refused (FanOutResult.refused), as the fence refuses one in Redis: not a failure of the store.
          // A failure made every member session this node runs unpersisted, and an unpersisted session's connection
          // runs its requests itself: at SIGCONT it ran those its client had sent before it saw the freeze (still in
          // the socket), which the other node had run already, and their publishes went to the store unfenced.
          next.resolve({ appended: 0, pending: false, refused: `not sent: queued ${waited} ms ago (this process stalled over two thirds of leaseTtl ${this.#limits.leaseTtl}); the request that made it may have run on another node since` });
          continue;
        }
        if (ops.length > (extra > 0 ? 1 : 0) && (bytes + next.bytes > BATCH_MAX_BYTES || bytes + next.bytes > room)) break;
        ops.push(next);
        bytes += next.bytes;
        if (next.op === 'ack' && this.#queuedAcks.get(next.id!) === next) this.#queuedAcks.delete(next.id!);
        this.#queue[this.#queueHead++] = undefined!;
      }
      this.#queuedBytes -= bytes - extra;
      if (this.#queueHead === this.#queue.length) {
        this.#queue = [];
        this.#queueHead = 0;
      } else if (this.#queueHead > 1024 && this.#queueHead * 2 > this.#queue.length) {
        this.#queue.splice(0, this.#queueHead);
        this.#queueHead = 0;
      }
      if (ops.length === 0) continue; // every one refused (stale fan-outs)
      this.#send(client, ops, bytes);
    }
  }

  /**
   * A fanWork that rides in a batch sent anyway, while a fan-out started here
   * is unfinished (#fanOwed): one chunk of FANOUT_CHUNK members per batch
   * (the script's budget is per call, so one per batch), up to
   * BATCHES_IN_FLIGHT chunks per event-loop turn. #pumpFanOut alone sends one
   * chunk per round trip, each behind the operations queued before it: under
   * a storm (10,000 sessions, 2 broadcasts a second: 40 chunks a second) a
   * turn takes tens of milliseconds and the fan-outs fell behind without end
   * (docs/scaling.md, "Fan-out in the store"). A failure is counted and
   * logged by #failed, and ends the riding (#fanOwed false, as a failure
   * stops #pumpFanOut): the sweep goes on with the queue in Redis.
   */
  #fanWorkOp(): PendingOp {
    this.operations['fanWork'] = (this.operations['fanWork'] ?? 0) + 1;
    return {
      operation: 'fanWork',
      id: null,
      op: 'fanWork',
      args: [],
      at: performance.now(),
      bytes: OP_HEAP_BYTES + 7,
      refused: undefined,
      map: asReply,
      resolve: (r) => {
        // The latest answer wins: a batch sent earlier answers first (Redis answers one connection in order).
        this.#fanOwed = (r as Reply[])[1] === 1;
      },
      // As #pumpFanOut: a failure stops it (a fanWork that fails every time rode in every batch, each failing
      // again); the queue waits in Redis for the next sweep.
      reject: () => {
        this.#fanOwed = false;
      },
    };
  }

  #send(client: ScriptClient, ops: PendingOp[], bytes: number): void {
    const batch: Batch = { ops, settled: false };
    this.#batches.add(batch);
    const seq = this.#sent(bytes);
    this.batches++;
    const settle = (): boolean => {
      if (batch.settled) return false;
      batch.settled = true;
      this.#batches.delete(batch);
      release(batch);
      this.#armHead(); // Redis answers in order: the next batch is the oldest now
      return true;
    };
    const wire = groupFanOut(ops);
    if (this.#batches.size === 1) this.#armHead();
    client.wsSessBatchBuffer(...this.#batchArgs(wire.map(wireOp))).then(
      (replies) => {
        this.#answered(seq);
        if (!settle()) return;
        if (this.#status !== 'up' && this.#ready) this.#setStatus('up', null);
        wire.forEach((w, i) => {
          const r = replies[i] as Reply[] | undefined;
          const group = Array.isArray(w) ? w : [w];
          const subs = Array.isArray(w) ? r : [r];
          if (Array.isArray(r) && Array.isArray(r[0])) {
            group.forEach((o, k) => {
              const sub = (subs as Reply[])[k] as Reply[] | undefined;
              if (Array.isArray(sub) && Array.isArray(sub[0])) this.#settle(o, sub);
              else o.reject(this.#failed('error', o.operation, o.id, 'unknown', new Error(`no reply for operation ${k + 1} of a fan-out of ${group.length}`)));
            });
          } else {
            const message = Array.isArray(r) && r[0] != null ? String(r[0]) : `no reply for operation ${i + 1} of ${wire.length}`;
            for (const o of group) o.reject(this.#failed('error', o.operation, o.id, 'unknown', new Error(message)));
          }
        });
        this.#pump();
      },
      (err: Error) => {
        if (!settle()) return;
        const kind = this.#failureOf(err, seq);
        for (const o of ops) o.reject(this.#failed(kind.kind, o.operation, o.id, kind.applied, err));
        this.#pump();
      },
    );
  }

  /**
   * commandTimeout runs on the oldest unanswered batch, from when it became
   * the oldest: Redis answers one connection in order, so this measures how
   * long Redis has answered nothing, whatever the number of batches behind it
   * (a per-batch clock from its send would count the batches before it, and
   * other clients' scripts). When it fires, the answer may be in the socket,
   * unread (a busy event loop runs an overdue timer before it reads): the
   * check runs after this turn's I/O (setImmediate), which tells a hung Redis
   * from a busy node. Hung: every batch sent fails (`timeout`, may be
   * applied), and every queued operation (`unavailable`, never sent).
   */
  #armHead(): void {
    if (this.#headTimer !== null) clearTimeout(this.#headTimer);
    this.#headTimer = null;
    const head = this.#batches.values().next().value as Batch | undefined;
    if (head === undefined) return;
    this.#headTimer = setTimeout(() => {
      this.#headTimer = null;
      setImmediate(() => {
        if (head.settled) return;
        // Still in ioredis's queue and the socket: counted until Redis answers a later command or the connection closes.
        if (this.#status === 'up') this.#setStatus('degraded', `redis command timed out (no reply within ${this.#commandTimeout} ms)`);
        const err = new Error(`Command timed out: no reply from redis within ${this.#commandTimeout} ms`);
        const sent = [...this.#batches];
        this.#batches.clear();
        for (const batch of sent) {
          batch.settled = true;
          for (const o of batch.ops) o.reject(this.#failed('timeout', o.operation, o.id, 'unknown', err));
          release(batch);
        }
        this.#failQueue(new Error(`redis answered nothing within ${this.#commandTimeout} ms`));
      });
    }, this.#commandTimeout);
  }

  /** What a failed batch means: a timeout (may be applied), a closed connection (may be applied), a refusal (not applied). */
  #failureOf(e: Error, seq: number): { kind: SessionStoreFailureKind; applied: 'no' | 'unknown' } {
    if (/writeable|enableOfflineQueue/i.test(e.message)) {
      this.#answered(seq);
      return { kind: 'unavailable', applied: 'no' };
    }
    // Sent, and the connection closed before the answer: Redis may have run it.
    if (/Connection is closed/i.test(e.message)) return { kind: 'unavailable', applied: 'unknown' };
    this.#answered(seq);
    // A script error of the batch as a whole: no operation ran.
    return { kind: 'error', applied: 'no' };
  }

  /** Every queued (never sent) operation fails now: nothing of them reached Redis. */
  #failQueue(cause: Error): void {
    this.#queuedAcks.clear();
    const queued = this.#queue.slice(this.#queueHead);
    this.#queue = [];
    this.#queueHead = 0;
    this.#queuedBytes = 0;
    for (const o of queued) o.reject(this.#failed('unavailable', o.operation, o.id, 'no', cause));
  }

  /** Counts a command's bytes as awaiting Redis's answer; returns its place in the connection's order. */
  #sent(bytes: number): number {
    this.#inFlight.push({ seq: ++this.#inFlightSeq, bytes });
    this.#inFlightBytes += bytes;
    return this.#inFlightSeq;
  }

  /** Redis answers in order on one connection: an answer to `seq` means every command sent before it is answered too. */
  #answered(seq: number): void {
    while (this.#inFlightHead < this.#inFlight.length && this.#inFlight[this.#inFlightHead]!.seq <= seq) {
      this.#inFlightBytes -= this.#inFlight[this.#inFlightHead]!.bytes;
      this.#inFlightHead++;
    }
    if (this.#inFlightHead > 1024 && this.#inFlightHead * 2 > this.#inFlight.length) {
      this.#inFlight.splice(0, this.#inFlightHead);
      this.#inFlightHead = 0;
    }
  }

  /** Nothing answered may clear the count while every call is refused: a PING (not counted) finds out when Redis answers again. */
  #probe(client: Redis): void {
    if (this.#probing) return;
    this.#probing = true;
    const seq = this.#inFlightSeq;
    client.ping().then(
      () => {
        this.#answered(seq);
        this.#pump(); // batches held back by maxInFlightBytes may go now
      },
      () => undefined,
    ).finally(() => (this.#probing = false));
  }

  #failed(kind: SessionStoreFailureKind, operation: string, id: string | null, applied: 'no' | 'unknown', cause: Error): SessionStoreUnavailableError {
    this.failures[kind]++;
    this.#failedSinceUp++;
    this.#logFailure(cause, `${operation} failed (${kind})`);
    const what = applied === 'unknown' ? 'not confirmed, it may still be applied' : 'not applied';
    return new SessionStoreUnavailableError(
      kind,
      operation,
      id,
      applied,
      `ws-supervisor: session store ${operation}${id ? ` of session ${id}` : ''} failed (${what}): ${cause.message}`,
      { cause },
    );
  }

  #setStatus(status: RedisSessionStoreStatus, reason: string | null): void {
    this.#reason = reason;
    if (status === this.#status) return;
    this.#status = status;
    const log = this.#host?.logger;
    if (status === 'up') {
      log?.info({ url: this.#target.display, failedWhileDown: this.#failedSinceUp }, `redis session store up${this.#failedSinceUp ? ` (${this.#failedSinceUp} operations failed meanwhile)` : ''}`);
      this.#failedSinceUp = 0;
      this.#loggedFailures.clear();
    } else log?.warn({ url: this.#target.display, reason }, 'redis session store degraded: sessions cannot be persisted or resumed meanwhile');
    this.emit('status', status, reason);
  }

  /** The first failure of each kind per outage is a warning; repeats are debug (one line per kind, not per operation). */
  #logFailure(err: Error, what: string): void {
    const log = this.#host?.logger;
    if (!log) return;
    const kind = failureKind(err);
    if (this.#loggedFailures.has(kind) || this.#loggedFailures.size >= 8) {
      log.debug({ err: err.message, kind }, `redis session store: ${what}`);
      return;
    }
    this.#loggedFailures.add(kind);
    log.warn({ url: this.#target.display, err: err.message, kind }, `redis session store: ${what}: ${err.message} (logged once per kind of failure until redis is up)`);
  }
}

/**
 * Consecutive appends of the same message (a broadcast, a publish: one call
 * per session, in one turn) go as one `appendN` operation: the message once,
 * then each session's id and generation. Redis runs each as its own append.
 */
function groupFanOut(ops: PendingOp[]): (PendingOp | PendingOp[])[] {
  const out: (PendingOp | PendingOp[])[] = [];
  for (let i = 0; i < ops.length; ) {
    const o = ops[i]!;
    let j = i + 1;
    if (o.op === 'append' && o.args[4] === '') {
      while (j < ops.length) {
        const n = ops[j]!;
        if (n.op !== 'append' || n.args[4] !== '' || n.args[2] !== o.args[2] || !sameData(n.args[1]!, o.args[1]!)) break;
        j++;
      }
    }
    out.push(j - i > 1 ? ops.slice(i, j) : o);
    i = j;
  }
  return out;
}

function sameData(a: string | Buffer, b: string | Buffer): boolean {
  if (a === b) return true;
  if (typeof a === 'string' || typeof b === 'string') return false;
  return a.length === b.length && a.equals(b);
}

/** What goes on the wire for one entry of groupFanOut. */
function wireOp(w: PendingOp | PendingOp[]): { op: SessionOpName; args: (string | Buffer)[] } {
  if (!Array.isArray(w)) return w;
  const first = w[0]!;
  // append's arguments: id, data, binary, generation, replyTo, max seqs per reply.
  const args: (string | Buffer)[] = [first.args[1]!, first.args[2]!, first.args[5]!];
  for (const o of w) args.push(o.args[0]!, o.args[3]!);
  return { op: 'appendN', args };
}

function newEpoch(): string {
  return randomBytes(9).toString('base64url');
}

function hashOf(flat: Buffer[]): Map<string, Buffer> {
  const m = new Map<string, Buffer>();
  for (let i = 0; i + 1 < flat.length; i += 2) m.set(flat[i]!.toString(), flat[i + 1]!);
  return m;
}

function toRecord(id: string, flat: Buffer[]): SessionRecord {
  return recordOf(id, hashOf(flat));
}

function recordOf(id: string, f: Map<string, Buffer>): SessionRecord {
  const num = (k: string) => Number(f.get(k)?.toString() ?? '0');
  const lastSeq = num('ls');
  const ackedSeq = num('as');
  return {
    id,
    owner: f.has('o') ? f.get('o')!.toString() : null,
    state: f.get('st')?.toString() === 'd' ? 'detached' : 'attached',
    createdAt: num('ca'),
    attachedAt: num('aa'),
    detachedAt: f.has('da') ? num('da') : null,
    lastSeq,
    ackedSeq,
    lastCseq: num('lc'),
    bufferedMessages: lastSeq - ackedSeq,
    bufferedBytes: num('cb') - num('ab'),
    topics: JSON.parse(f.get('t')?.toString() ?? '[]') as string[],
    data: JSON.parse(f.get('dt')?.toString() ?? 'null') as JsonValue,
  };
}

function toMessage([id, fields]: EntryReply): StoredMessage {
  const seq = Number(id.toString().split('-', 1)[0]);
  let binary = false;
  let data: Buffer = Buffer.alloc(0);
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const k = fields[i]!.toString();
    if (k === 'b') binary = fields[i + 1]!.toString() === '1';
    else if (k === 'd') data = fields[i + 1]!;
  }
  return { seq, data: binary ? data : data.toString('utf8'), binary, bytes: data.length };
}

function toLetter([id, reason, detail, entries, refusedFlag]: LetterReply, refused: SessionMessage | undefined): SessionDeadLetter {
  const messages = entries.map(toMessage);
  if (refusedFlag === 1 && refused) messages.push({ seq: 0, data: refused.data, binary: refused.binary, bytes: messageBytes(refused.data) });
  return { sessionId: id.toString(), reason: reason.toString() as SessionDeadLetterReason, detail: detail.toString(), messages };
}

/**
 * A session store in Redis, shared by every node (process, machine) that uses
 * the same `url` and `prefix`: a client detached from one node resumes on
 * any other. Pass it as the supervisor's session store; the host calls
 * `start(host)` (which connects) and `close()`. Options: see
 * RedisSessionStoreOptions; a bad value throws RangeError naming it.
 */
export function createRedisSessionStore(options: RedisSessionStoreOptions): RedisSessionStore {
  return new RedisSessionStore(options);
}
