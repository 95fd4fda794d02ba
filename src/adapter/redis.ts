/**
 * The Redis adapter: broadcasts and topic publishes cross to every supervisor
 * process sharing one Redis (pub/sub), and each node keeps a presence entry
 * with a TTL so the live nodes and their connection counts can be listed.
 *
 * Two connections (ioredis): `pub` for commands, `sub` for the subscription
 * (a subscribed RESP2 connection can run nothing else). Every node subscribes
 * to one channel, `<prefix>messages`; a frame is a one-line JSON header
 * (sender node id, its session and sequence number, kind, topic, binary flag)
 * then the raw payload bytes, so binary data crosses unencoded. A node skips
 * its own frames: it delivered them locally before publishing (never twice).
 *
 * Outages (R12), sender side: commands are never queued while disconnected
 * (enableOfflineQueue false), so a publish either goes out now or is reported
 * at once (`unavailable`); one that Redis does not confirm within
 * commandTimeout is reported (`error`: unconfirmed, it may still be delivered)
 * and turns the status 'degraded' until a command succeeds again; one that
 * reached fewer nodes than the presence table lists is reported (`partial`).
 * Backpressure: the bytes handed to Redis and not yet answered are
 * capped (maxInFlightBytes). A command that times out is still held (in
 * ioredis's queue and the socket's buffer) until Redis answers a later one or
 * the connection closes, so it stays counted until then; beyond the cap a
 * publish is reported `unavailable` at once instead of piling up in memory
 * while Redis hangs.
 * Both connections reconnect forever with jittered exponential backoff; local
 * delivery never waits on any of this (R11).
 *
 * Receiver side (R12): pub/sub drops what a node was not subscribed to hear
 * (while it reconnects, or when Redis closes a subscriber whose output buffer
 * overflowed), and the sender cannot always tell: after an outage the first
 * node back sees only itself. So each frame carries the sender's session id
 * and a per-session sequence number; each node remembers the last number seen
 * per sender and reports a gap as `missed` (count, sender). Each presence
 * entry carries the sender's latest number too, so a gap is found even when
 * the sender publishes nothing more: after every presence read, a PING on the
 * subscriber connection flushes the frames already on their way, and any
 * number up to the sender's latest that has not arrived by then never will.
 *
 * Content recovery (the `history` option, src/adapter/redis-history.ts): a
 * sender also XADDs each frame to its own bounded stream (entry id = seq) in
 * the same script as the PUBLISH; a receiver that finds a gap in a sender
 * that keeps one reads the range back (XRANGE), delivers it in order before
 * that sender's newer frames (held meanwhile, within maxInFlightBytes), drops
 * what it already delivered, and reports only what the stream no longer has
 * (`missed` with a cause: trimmed, or restarted when the Redis epoch changed).
 *
 * Presence: every heartbeatInterval a node SETs `<prefix>node:<id>` with a
 * PX presenceTtl and adds its id to the set `<prefix>nodes`; a Lua script reads
 * the set and drops ids whose key has expired. Redis expires the key itself,
 * so a node killed without a goodbye is gone at most presenceTtl after its last
 * heartbeat, whatever the nodes' clocks say. Standalone Redis (or a primary):
 * the script touches keys it does not declare, which Redis Cluster forbids.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { backoffCeiling } from '../../machines/backoff.ts';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import type { Redis, RedisOptions } from 'ioredis';
import { requirePeer } from '../base/optional-peer.ts';
import { positiveInt } from '../base/checks.ts';
import { validateTopic } from '../protocol/topics.ts';
import { parseRedisUrl, RedisUrlError, type RedisTarget } from './redis-url.ts';
import { REDIS_DEFAULTS } from './redis-defaults.ts';
import { endRedisClient } from './redis-close.ts';
import type { Adapter, AdapterFailureReason, AdapterHost, AdapterMessage, AdapterMissedCause, AdapterStatus, NodeInfo } from './types.ts';
import {
  EPOCH_LUA,
  HistoryRetention,
  PUBLISH_WITH_HISTORY_LUA,
  entrySeq,
  historyConfig,
  type HistoryConfig,
  type RedisHistoryOptions,
} from './redis-history.ts';

export { parseRedisUrl, redactRedisUrl, RedisUrlError, type RedisTarget } from './redis-url.ts';

/**
 * ioredis is an optional peer dependency (only this entry point uses it): loaded
 * when 'ws-supervisor/redis' is imported, and named in the error if it is missing.
 */
const { Redis: RedisClient } = requirePeer<typeof import('ioredis')>('ioredis', 'the Redis adapter (ws-supervisor/redis, --redis)');

export { REDIS_DEFAULTS } from './redis-defaults.ts';
export { REDIS_HISTORY_DEFAULTS, type RedisHistoryOptions } from './redis-history.ts';

export interface RedisAdapterOptions {
  /**
   * `redis://[[user]:password@]host[:port][/db]` or `rediss://…` (TLS); the
   * path is `/` or `/<database number>`; query parameters: `password`, `db`,
   * `family` (4 or 6) only. Checked by parseRedisUrl (RangeError).
   */
  url: string;
  /** Prefix of every key and of the channel. Default `'ws-supervisor:'`. Nodes of one cluster must share it. */
  prefix?: string;
  /** This node's id, unique in the cluster. Default `<hostname>:<pid>:<8 random hex>`. */
  nodeId?: string;
  /** How often the presence entry (and connection count) is refreshed, ms. Default 5000. */
  heartbeatInterval?: number;
  /** Lifetime of a presence entry, ms: a node that stops heartbeating is gone within it. Default 15000; must exceed heartbeatInterval. */
  presenceTtl?: number;
  /** Reconnect backoff: `initialDelay` doubling up to `maxDelay`, each delay jittered to 50–100%. Defaults 100 / 5000 ms. */
  backoff?: { initialDelay?: number; maxDelay?: number };
  /** A command not answered within it fails (a publish is then reported), ms. Default 2000. */
  commandTimeout?: number;
  /** TCP connect + handshake timeout, ms. Default 5000. */
  connectTimeout?: number;
  /**
   * Bytes of frames handed to Redis and not yet answered (a timed-out command
   * counts until Redis answers a later one or the connection closes). Beyond
   * it a publish is reported `unavailable` at once (R12), so a hung Redis
   * cannot make the process hold every message. A single frame larger than it
   * is still sent when nothing else is in flight. Default 16 MiB.
   */
  maxInFlightBytes?: number;
  /**
   * Content recovery (docs/scaling.md, "Recovering missed messages"): this
   * node also writes every frame it publishes to a Redis Stream of its own,
   * bounded by `maxMessages`, `maxBytes` and `maxAge` (MINID ~ on each write,
   * and a key TTL of maxAge), so that a node that missed some of them reads
   * them back and delivers them in order, exactly once. `true` for the
   * defaults. Default false: every publish costs a stream write. Nodes
   * recover from every sender that keeps a history, whatever their own setting.
   */
  history?: boolean | RedisHistoryOptions;
}

/**
 * Registers this node (when ARGV[2] is not empty), then lists the live nodes'
 * entries, dropping ids whose entry has expired.
 * KEYS[1] = the id set; ARGV = entry key prefix, node id, entry, ttl ms.
 */
const PRESENCE_LUA = `
if ARGV[2] ~= '' then
  redis.call('SET', ARGV[1] .. ARGV[2], ARGV[3], 'PX', ARGV[4])
  redis.call('SADD', KEYS[1], ARGV[2])
end
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local entry = redis.call('GET', ARGV[1] .. id)
  if entry then table.insert(out, entry) else redis.call('SREM', KEYS[1], id) end
end
return out`;

/**
 * Still 1: `session` and `seq` are optional, so nodes with and without them
 * understand each other's frames during a rolling upgrade (frames without
 * them are delivered, just not checked for gaps).
 */
const FRAME_VERSION = 1;
const NEWLINE = 0x0a;

interface FrameHeader {
  v: number;
  node: string;
  /** The sender's session (one per adapter instance): its sequence numbers count from 1 within it. */
  session?: string;
  seq?: number;
  kind: AdapterMessage['kind'];
  topic: string | null;
  binary: boolean;
  /** True when the sender also wrote the frame to its history stream (recoverable by its seq). */
  h?: true;
  /** AdapterMessage.sessionsReached (absent: false; receivers that do not know the field ignore it). */
  s?: true;
  /** AdapterMessage.fanOut (with `s`). */
  f?: string;
}

/** The sender's session and the frame's sequence number in it. */
export interface FrameSequence {
  session: string;
  seq: number;
  /** The sender keeps a history: the frame is in `<prefix>history:<session>` as entry `<seq>-0`. */
  history?: boolean;
}

/** A frame on the channel: the JSON header (never contains a raw newline), '\n', the payload bytes. */
export function encodeFrame(nodeId: string, message: AdapterMessage, sequence?: FrameSequence): Buffer {
  const header: FrameHeader = {
    v: FRAME_VERSION,
    node: nodeId,
    ...(sequence ? { session: sequence.session, seq: sequence.seq } : {}),
    kind: message.kind,
    topic: message.topic,
    binary: message.binary,
    ...(sequence?.history ? { h: true as const } : {}),
    ...(message.sessionsReached ? { s: true as const } : {}),
    ...(message.sessionsReached && message.fanOut !== undefined ? { f: message.fanOut } : {}),
  };
  return Buffer.concat([Buffer.from(JSON.stringify(header) + '\n'), message.data]);
}

/** The sender, its sequence (null for a frame without one) and the message of a frame, or a reason it is not one of ours. */
export function decodeFrame(frame: Buffer): { node: string; sequence: FrameSequence | null; message: AdapterMessage } | { error: string } {
  const nl = frame.indexOf(NEWLINE);
  if (nl === -1) return { error: 'no header line' };
  let header: Partial<FrameHeader>;
  try {
    header = JSON.parse(frame.subarray(0, nl).toString()) as Partial<FrameHeader>;
  } catch {
    return { error: 'header is not JSON' };
  }
  if (header === null || typeof header !== 'object' || header.v !== FRAME_VERSION) return { error: `unknown frame version ${String(header?.v)}` };
  if (typeof header.node !== 'string' || typeof header.binary !== 'boolean') return { error: 'bad header' };
  let sequence: FrameSequence | null = null;
  if (header.session !== undefined || header.seq !== undefined) {
    if (typeof header.session !== 'string' || !isSeq(header.seq)) return { error: 'bad session or seq' };
    sequence = { session: header.session, seq: header.seq, ...(header.h === true ? { history: true } : {}) };
  }
  if (header.kind === 'broadcast') {
    if (header.topic !== null) return { error: 'a broadcast has no topic' };
  } else if (header.kind === 'publish') {
    try {
      validateTopic(header.topic);
    } catch (err) {
      return { error: (err as Error).message };
    }
  } else return { error: `unknown kind ${String(header.kind)}` };
  return {
    node: header.node,
    sequence,
    message: { kind: header.kind, topic: header.topic ?? null, binary: header.binary, data: frame.subarray(nl + 1), ...(header.s === true ? { sessionsReached: true, ...(typeof header.f === 'string' ? { fanOut: header.f } : {}) } : {}) },
  };
}

function isSeq(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}

/** What this node knows of another node's sequence numbers. */
interface SenderState {
  node: string;
  session: string;
  /** Every number up to this one has been delivered, or reported missed. */
  seq: number;
  /** Last time a frame or presence entry of this sender was seen (to forget departed nodes first). */
  seenAt: number;
  /** The sender keeps a history (its frames and presence entry say so): gaps are read back from it. */
  history: boolean;
  /** A gap to recover: numbers up to this one exist (> seq while recovering). */
  target: number;
  /** How the gap was found, for the report. */
  how: string;
  /** The Redis epoch under which this node last heard from the sender without a gap (null: not read yet). */
  epoch: string | null;
  /** Frames of this sender that arrived while a gap before them was being recovered, by increasing seq. */
  held: { seq: number; message: AdapterMessage; bytes: number }[];
  /** A recovery loop runs for this sender. */
  recovering: boolean;
  /** Entries asked for by the next XRANGE (RECOVERY_BATCH, adapted to the frames' size). */
  batch: number;
}

/** Entries read at most per XRANGE while recovering a gap. */
const RECOVERY_BATCH = 64;
/**
 * Bytes aimed at per XRANGE: the next read asks for as many entries as the
 * last ones' average size fits in it (at least 1), so one read of large frames
 * neither holds tens of MB at once nor lands in a client's send queue as one
 * burst; a read that timed out halves the count.
 */
const RECOVERY_BATCH_BYTES = 1_048_576;

/** ioredis commands defined by the adapter (defineCommand: EVALSHA, EVAL on NOSCRIPT). */
interface HistoryCommands {
  wsPublishHistory(key: string, id: string, minId: string, ttl: number, channel: string, frame: Buffer): Promise<number>;
}

/** The value of `name` in a stream entry's flat field list (raw bytes), or null. */
function fieldValue(fields: Buffer[], name: string): Buffer | null {
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i]!.toString() === name) return fields[i + 1]!;
  return null;
}

/** A failure after which the same read may succeed later (connection lost, timeout, not connected), not an answer of Redis. */
function transient(err: Error): boolean {
  return err.name !== 'ReplyError';
}

/** Senders remembered at most; beyond it, the longest unseen that are not in the presence table are forgotten. */
const MAX_SENDERS = 4096;

/** A presence entry as stored (NodeInfo's fields plus the sequence, minus `self`). */
type PresenceEntry = Omit<NodeInfo, 'self'> & { session?: string; seq?: number; history?: boolean };

export interface RedisAdapterEvents {
  /**
   * Redis lost its data since this node last looked (restarted empty,
   * flushed): the epoch key was gone and a new epoch was made. Other nodes'
   * messages this node missed before cannot be recovered (`missed`, cause
   * `restarted`).
   */
  epochChanged: [previous: string, current: string];
}

/** The first word of a failure that stays the same while it repeats (an error code, WRONGPASS, …): one log line per kind. */
function failureKind(err: Error & { code?: unknown }): string {
  if (typeof err.code === 'string' && err.code !== '') return err.code; // ECONNREFUSED, ETIMEDOUT, TLS codes
  if (/Unknown RESP type|Protocol error/i.test(err.message)) return 'PROTOCOL'; // the stray byte varies: one kind
  const redisCode = /^[A-Z]{3,}\b/.exec(err.message); // WRONGPASS, NOAUTH, ERR, LOADING, …
  if (redisCode) return redisCode[0];
  return err.message.split(/[,:(]/, 1)[0]!.replace(/[0-9]+/g, 'N').trim().slice(0, 80) || err.name;
}

/** An error as the operator should read it (the status reason, the log). */
function describeError(err: Error): string {
  // ioredis words a reply it cannot parse as its own bug; it is the peer that does not speak Redis.
  if (/Unknown RESP type|Protocol error/i.test(err.message)) {
    return `not a Redis server? (protocol error: ${err.message.replace(/\.?\s*Please report this\.?/, '')})`;
  }
  return err.message;
}

/** At most this many distinct failure kinds are logged per outage; a server spitting ever-new garbage cannot flood the log. */
const MAX_LOGGED_FAILURE_KINDS = 8;

export class RedisAdapter extends EventEmitter<RedisAdapterEvents> implements Adapter {
  readonly name = 'redis';
  readonly nodeId: string;
  /** This instance's session: a restarted node with the same id counts its messages anew. */
  readonly session = randomBytes(6).toString('hex');
  private statusValue: AdapterStatus = 'degraded';
  private reason: string | null = 'connecting to redis';
  private readonly target: RedisTarget;
  private readonly channel: string;
  private readonly nodesKey: string;
  private readonly nodeKeyPrefix: string;
  private readonly heartbeatInterval: number;
  private readonly presenceTtl: number;
  private readonly backoffInitial: number;
  private readonly backoffMax: number;
  private readonly commandTimeout: number;
  private readonly connectTimeout: number;
  private readonly maxInFlightBytes: number;
  /** Frames handed to Redis and not yet answered, oldest first: their sequence numbers and sizes. */
  private readonly inFlight: { seq: number; bytes: number }[] = [];
  private inFlightHead = 0;
  private inFlightTotal = 0;
  private readonly startedAt = Date.now();
  private host: AdapterHost | null = null;
  private pub: Redis | null = null;
  private sub: Redis | null = null;
  private pubReady = false;
  private subReady = false;
  private lastError: string | null = null;
  /**
   * What Redis answered when it refused what the adapter needs to start (today: SELECT of the URL's database), as
   * `database 99: ERR DB index is out of range`; null when the last failure was not an answer (a refused or lost
   * connection, a timeout) or the adapter is up. The CLI's startup warning says "refused …" then, not "not reachable".
   */
  private refusalValue: string | null = null;
  /** Set while Redis leaves commands unanswered (hung, overloaded): degraded until a command succeeds. */
  private stalled: string | null = null;
  /** Failure kinds already logged since the adapter was last up (D4: the first of each, no flood). */
  private readonly loggedFailures = new Set<string>();
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private selectRetry: NodeJS.Timeout | null = null;
  /** Live nodes at the last presence read: a publish that reaches fewer subscribers may have missed one. */
  private knownNodes = 0;
  private presenceRead: Promise<number> | null = null;
  private closing: Promise<void> | null = null;
  /** The sequence number of this node's last frame handed to Redis (0: none yet). */
  private seq = 0;
  /** Other nodes' sequence numbers as far as this node has accounted for them. */
  private readonly senders = new Map<string, SenderState>();
  /** Replaced sessions (a sender restarted under the same id) whose gap is still open: retried and reported like the others. */
  private readonly retired = new Set<SenderState>();
  /** Successful subscriptions so far: from the second on, this node has been deaf for a while. */
  private subscriptions = 0;
  /** The `history` option (null: off): this node writes its frames to `historyKey`. */
  private readonly history: HistoryConfig | null;
  private readonly retention: HistoryRetention | null;
  private readonly historyPrefix: string;
  private readonly epochKey: string;
  /** The Redis epoch as last read (null: not yet). */
  private epochValue: string | null = null;
  /** Bytes of frames held back while a gap before them is recovered (all senders); capped by maxInFlightBytes. */
  private heldBytes = 0;
  /** Other nodes' messages read back from their history and delivered. */
  private recoveredCount = 0;

  constructor(options: RedisAdapterOptions) {
    super();
    try {
      this.target = parseRedisUrl(options?.url);
    } catch (err) {
      if (err instanceof RedisUrlError) throw new RangeError(`ws-supervisor: redis adapter option url ${err.message}`);
      throw err;
    }
    const prefix = options.prefix ?? REDIS_DEFAULTS.prefix;
    if (typeof prefix !== 'string') throw new RangeError('ws-supervisor: redis adapter option prefix must be a string');
    this.channel = `${prefix}messages`;
    this.nodesKey = `${prefix}nodes`;
    this.nodeKeyPrefix = `${prefix}node:`;
    this.nodeId = options.nodeId ?? `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
    if (typeof this.nodeId !== 'string' || this.nodeId.length === 0) {
      throw new RangeError('ws-supervisor: redis adapter option nodeId must be a non-empty string');
    }
    this.heartbeatInterval = positiveInt('redis.heartbeatInterval', options.heartbeatInterval, REDIS_DEFAULTS.heartbeatInterval);
    this.presenceTtl = positiveInt('redis.presenceTtl', options.presenceTtl, REDIS_DEFAULTS.presenceTtl);
    if (this.presenceTtl <= this.heartbeatInterval) {
      throw new RangeError(
        `ws-supervisor: redis adapter option presenceTtl (${this.presenceTtl}) must exceed heartbeatInterval (${this.heartbeatInterval})`,
      );
    }
    this.backoffInitial = positiveInt('redis.backoff.initialDelay', options.backoff?.initialDelay, REDIS_DEFAULTS.backoffInitialDelay);
    this.backoffMax = positiveInt('redis.backoff.maxDelay', options.backoff?.maxDelay, REDIS_DEFAULTS.backoffMaxDelay);
    this.commandTimeout = positiveInt('redis.commandTimeout', options.commandTimeout, REDIS_DEFAULTS.commandTimeout);
    this.connectTimeout = positiveInt('redis.connectTimeout', options.connectTimeout, REDIS_DEFAULTS.connectTimeout);
    this.maxInFlightBytes = positiveInt('redis.maxInFlightBytes', options.maxInFlightBytes, REDIS_DEFAULTS.maxInFlightBytes);
    this.history = historyConfig(options.history);
    this.retention = this.history ? new HistoryRetention(this.history) : null;
    this.historyPrefix = `${prefix}history:`;
    this.epochKey = `${prefix}epoch`;
  }

  /** The Redis key of this node's history stream (written only with the `history` option). */
  get historyKey(): string {
    return this.historyPrefix + this.session;
  }

  /** The Redis epoch as last read (null until the first connection): changes when Redis lost its data. */
  get epoch(): string | null {
    return this.epochValue;
  }

  /** Bytes of other nodes' frames held back while a gap before them is recovered (at most maxInFlightBytes, or one frame). */
  get heldBytesNow(): number {
    return this.heldBytes;
  }

  /** Other nodes' messages this node missed and then recovered from their history (delivered in order). */
  get recovered(): number {
    return this.recoveredCount;
  }

  /** Bytes of frames handed to Redis and not yet answered (bounded by maxInFlightBytes, plus at most one frame). */
  get inFlightBytes(): number {
    return this.inFlightTotal;
  }

  get status(): AdapterStatus {
    return this.statusValue;
  }

  get statusReason(): string | null {
    return this.reason;
  }

  /** While degraded because Redis answered a refusal (a database it does not have): what it refused and its answer; else null. */
  get refusal(): string | null {
    return this.refusalValue;
  }

  /** The Redis URL with its password masked (for logs and banners). */
  get displayUrl(): string {
    return this.target.display;
  }

  /** The reconnect delay before attempt `times` (1, 2, …): exponential, capped, jittered to 50–100%. */
  backoffDelay(times: number): number {
    // The clients' ceiling (machines/backoff.ts), with equal jitter: never an immediate retry against a Redis that just failed.
    const base = backoffCeiling(times - 1, { initialDelay: this.backoffInitial, maxDelay: this.backoffMax, multiplier: 2 });
    return Math.round(base / 2 + (Math.random() * base) / 2);
  }

  attach(host: AdapterHost): void {
    if (this.host) throw new Error('ws-supervisor: this adapter is already attached to a supervisor');
    if (this.closing) throw new Error('ws-supervisor: this adapter is closed');
    this.host = host;
    const t = this.target;
    const common: RedisOptions = {
      // From our own parse of the URL, never ioredis's: it would copy every query parameter into these options.
      host: t.host,
      port: t.port,
      ...(t.username !== undefined ? { username: t.username } : {}),
      ...(t.password !== undefined ? { password: t.password } : {}),
      ...(t.family !== undefined ? { family: t.family } : {}),
      ...(t.tls ? { tls: isIP(t.host) ? {} : { servername: t.host } } : {}),
      // No `db`: ioredis falls back to db 0 when SELECT fails; we select it ourselves and stay degraded instead (selectDb).
      connectTimeout: this.connectTimeout,
      commandTimeout: this.commandTimeout,
      retryStrategy: (times) => this.backoffDelay(times), // never gives up: Redis may come back
      maxRetriesPerRequest: null,
      // R12: no offline queue and no silent resend: a command runs now or fails now.
      enableOfflineQueue: false,
      autoResendUnfulfilledCommands: false,
      // We resubscribe ourselves, to know when the subscription is live again.
      autoResubscribe: false,
    };
    // CLIENT SETNAME refuses spaces and control characters.
    const name = `ws-supervisor:${this.nodeId.replace(/[^\w.:-]/g, '_')}`;
    const pub = (this.pub = new RedisClient({ ...common, connectionName: `${name}:pub` }));
    if (this.history) pub.defineCommand('wsPublishHistory', { numberOfKeys: 1, lua: PUBLISH_WITH_HISTORY_LUA });
    const sub = (this.sub = new RedisClient({ ...common, connectionName: `${name}:sub` }));

    pub.on('ready', () => void this.pubConnected(pub));
    pub.on('close', () => {
      this.pubReady = false;
      // ioredis rejected whatever was queued and the socket's buffer is gone with it.
      this.releaseInFlight(Infinity);
      this.update();
    });
    sub.on('ready', () => {
      sub.subscribe(this.channel).then(
        () => {
          this.subReady = true;
          this.subscriptions++;
          this.update();
          // Deaf until now: compare with every sender's latest number at once (checkGaps), not at the next heartbeat.
          void this.beat().catch(() => undefined);
        },
        (err: Error) => {
          this.lastError = `subscribe failed: ${err.message}`;
          this.logFailure(err, 'subscribe failed; reconnecting');
          sub.disconnect(true);
        },
      );
    });
    sub.on('close', () => {
      this.subReady = false;
      this.update();
    });
    for (const client of [pub, sub]) {
      // ioredis emits one per failed attempt: the first of each kind is logged, the rest only at debug.
      client.on('error', (err: Error) => {
        this.lastError = describeError(err);
        this.refusalValue = null; // a connection failure now, whatever Redis answered before
        this.logFailure(err, 'connection error');
        this.update();
      });
    }
    sub.on('messageBuffer', (_channel: Buffer, frame: Buffer) => this.receive(frame));

    this.heartbeatTimer = setInterval(() => void this.beat().catch(() => undefined), this.heartbeatInterval);
    this.heartbeatTimer.unref();
  }

  publish(message: AdapterMessage): void {
    const pub = this.pub;
    if (!pub || !this.pubReady) {
      this.fail(message, 'unavailable', this.closing ? 'adapter closed' : `redis unavailable${this.lastError ? `: ${this.lastError}` : ''}`);
      return;
    }
    const expected = this.knownNodes;
    // Numbered only once handed to Redis: an `unavailable` message leaves no gap for the others to report twice.
    const frame = encodeFrame(this.nodeId, message, { session: this.session, seq: this.seq + 1, history: this.history !== null });
    if (this.inFlightTotal > 0 && this.inFlightTotal + frame.length > this.maxInFlightBytes) {
      this.fail(
        message,
        'unavailable',
        `redis backpressure: ${this.inFlightTotal} bytes handed to redis are not answered yet (maxInFlightBytes ${this.maxInFlightBytes}): not sent`,
      );
      return;
    }
    const seq = ++this.seq;
    this.inFlight.push({ seq, bytes: frame.length });
    this.inFlightTotal += frame.length;
    // With a history: XADD (trimmed to its bounds) and PUBLISH in one script, the entry first.
    const sent = this.retention
      ? (pub as unknown as HistoryCommands).wsPublishHistory(
          this.historyKey,
          `${seq}-0`,
          `${this.retention.add(seq, frame.length, Date.now())}-0`,
          this.history!.maxAge,
          this.channel,
          frame,
        )
      : pub.publish(this.channel, frame);
    sent.then(
      (receivers) => {
        this.releaseInFlight(seq);
        this.commandSucceeded();
        if (receivers < expected) void this.checkPartial(message, receivers);
      },
      (err: Error) => {
        // A timed-out command is still queued and buffered: it stays counted until Redis answers a later one.
        if (!/timed out/i.test(err.message)) this.releaseInFlight(seq);
        this.commandFailed(err);
        this.fail(message, 'error', `publish not confirmed (it may still be delivered): ${err.message}`);
      },
    );
  }

  async nodes(): Promise<NodeInfo[]> {
    const entries = await this.presence();
    return entries
      .map((entry) => {
        const self = entry.id === this.nodeId;
        return {
          id: entry.id,
          connections: self ? (this.host?.connections() ?? 0) : entry.connections,
          startedAt: entry.startedAt,
          updatedAt: entry.updatedAt,
          hostname: entry.hostname,
          pid: entry.pid,
          self,
        };
      })
      .sort((a, b) => a.startedAt - b.startedAt || a.id.localeCompare(b.id));
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
      this.heartbeatTimer = null;
      if (this.selectRetry) clearTimeout(this.selectRetry);
      this.selectRetry = null;
      const { pub, sub } = this;
      // Goodbye: leave the presence table now rather than after presenceTtl.
      if (pub && this.pubReady) {
        await pub
          .multi()
          .del(this.nodeKeyPrefix + this.nodeId)
          .srem(this.nodesKey, this.nodeId)
          .exec()
          .catch(() => undefined);
      }
      this.pubReady = false;
      this.subReady = false;
      this.reportOpenGaps(); // R12: never a silent gap, even at the end
      this.reason = 'adapter closed';
      if (this.statusValue !== 'degraded') {
        this.statusValue = 'degraded';
        this.host?.statusChanged('degraded', this.reason);
      }
      // Stops reconnecting and ends the sockets at once (R3), with no timer left when Redis is gone.
      if (pub) endRedisClient(pub);
      if (sub) endRedisClient(sub);
      this.host = null;
    })();
    return this.closing;
  }

  // -------------------------------------------------------------------------

  /** pub is connected: select the database (D6), then serve and re-register at once (a restarted Redis has forgotten us). */
  private async pubConnected(pub: Redis): Promise<void> {
    if (this.closing || this.pub !== pub) return;
    if (this.target.db !== 0) {
      try {
        await pub.select(this.target.db);
      } catch (err) {
        // Never db 0 instead, never an unhandled rejection: degraded with the reason, retried while connected.
        this.lastError = `cannot select database ${this.target.db}: ${describeError(err as Error)}`;
        // ioredis names Redis's own error replies ReplyError; anything else (the connection closed meanwhile, a command
        // timeout) is not an answer.
        this.refusalValue = (err as Error).name === 'ReplyError' ? `database ${this.target.db}: ${(err as Error).message}` : null;
        this.logFailure(err as Error, `cannot select database ${this.target.db}`);
        this.update();
        if (this.selectRetry) clearTimeout(this.selectRetry);
        this.selectRetry = setTimeout(() => {
          this.selectRetry = null;
          if (pub.status === 'ready' && !this.pubReady) void this.pubConnected(pub);
        }, this.backoffMax);
        this.selectRetry.unref();
        return;
      }
      if (this.closing || pub.status !== 'ready') return;
    }
    this.pubReady = true;
    this.update();
    // The epoch first (one round trip, in order on this connection): a Redis that lost its data is known before a gap is read back.
    void this.readEpoch(pub);
    void this.beat().catch(() => undefined);
  }

  private receive(frame: Buffer): void {
    const decoded = decodeFrame(frame);
    if ('error' in decoded) {
      this.host?.logger?.warn({ error: decoded.error, bytes: frame.length }, `redis adapter: ignored a frame on ${this.channel}`);
      return;
    }
    if (decoded.node === this.nodeId) return; // delivered locally when it was published
    if (decoded.sequence && !this.account(decoded.node, decoded.sequence, 'frame', decoded.message, frame.length)) return;
    this.host?.deliver(decoded.message);
  }

  /**
   * Accounts for `sender`'s numbers up to `sequence.seq`: a frame (`seq`
   * arrived; anything between the last accounted and it did not) or a
   * presence entry read before a flush of the subscription (everything up to
   * `seq` has arrived by now or never will). A gap is recovered from the
   * sender's history if it keeps one (the frame is held until the gap before
   * it is filled), else reported as `missed`. Returns true when the frame is
   * to be delivered now.
   */
  private account(sender: string, sequence: FrameSequence, via: 'frame' | 'presence', message?: AdapterMessage, bytes = 0): boolean {
    const { session, seq } = sequence;
    const arrived = via === 'frame' ? 1 : 0;
    const now = Date.now();
    let known = this.senders.get(sender);
    if (!known || known.session !== session) {
      // A sender (or session) heard of for the first time. While this node has been
      // subscribed without a break, what it sent before is not ours to miss: it
      // predates us. After a resubscription this node was deaf for a while, and a
      // sender it never heard of sent its first messages then: count them.
      // (A replaced session with a gap still open is kept aside: read back or reported like the others.)
      if (known && (known.target > known.seq || known.held.length > 0)) this.retired.add(known);
      const missing = this.subscriptions > 1 ? seq - arrived : 0;
      known = {
        node: sender,
        session,
        seq: seq - arrived - missing,
        seenAt: now,
        history: sequence.history === true,
        target: 0,
        how: '',
        epoch: this.epochValue,
        held: [],
        recovering: false,
        batch: RECOVERY_BATCH,
      };
      known.target = known.seq;
      this.senders.set(sender, known);
      if (missing > 0) return this.gap(known, seq - arrived, `first heard of after this node resubscribed, at its message ${seq}`, via, message, bytes, seq);
      if (via === 'frame') known.seq = seq;
      return true;
    }
    known.seenAt = now;
    if (sequence.history !== undefined || via === 'frame') known.history = sequence.history === true;
    if (via === 'presence') {
      const top = Math.max(known.seq, known.target, known.held.at(-1)?.seq ?? 0);
      if (seq > top) this.gap(known, seq, `its presence entry lists ${seq} messages, ${known.seq} arrived`, via);
      return false;
    }
    if (seq <= known.seq) return false; // already delivered (read back from its history): exactly once
    if (known.recovering || known.target > known.seq || known.held.length > 0) {
      // A gap before it is being recovered: it waits its turn (or is read back from the history too).
      this.hold(known, seq, message!, bytes);
      if (!known.recovering) void this.recover(known);
      return false;
    }
    if (seq === known.seq + 1) {
      known.seq = seq;
      known.epoch = this.epochValue;
      return true;
    }
    return this.gap(known, seq - 1, `its messages ${known.seq + 1}–${seq - 1} never arrived`, via, message, bytes, seq);
  }

  /**
   * Numbers `known.seq + 1 … upTo` never arrived. Without a history they are
   * reported at once (and a frame that revealed the gap is delivered: true).
   * With one they are read back first, and the frame waits for them (false).
   */
  private gap(known: SenderState, upTo: number, how: string, via: 'frame' | 'presence', message?: AdapterMessage, bytes = 0, seq = 0): boolean {
    if (!known.history) {
      this.missed(known.node, upTo - known.seq, how, 'no-history');
      known.seq = via === 'frame' ? seq : upTo;
      known.target = known.seq;
      return via === 'frame';
    }
    if (upTo > known.target) {
      known.target = upTo;
      known.how = how;
    }
    if (via === 'frame') this.hold(known, seq, message!, bytes);
    void this.recover(known);
    return false;
  }

  /** Holds a frame until the gap before it is filled; past the cap it is not held but read back from the history with the gap. */
  private hold(known: SenderState, seq: number, message: AdapterMessage, bytes: number): void {
    if (this.heldBytes + bytes > this.maxInFlightBytes && this.heldBytes > 0) {
      if (seq > known.target) known.target = seq;
      return;
    }
    known.held.push({ seq, message, bytes });
    this.heldBytes += bytes;
  }

  /** Delivers the held frames that come next, drops those already delivered. */
  private releaseHeld(known: SenderState): void {
    while (known.held.length > 0 && known.held[0]!.seq <= known.seq + 1) {
      const next = known.held.shift()!;
      this.heldBytes -= next.bytes;
      if (next.seq <= known.seq) continue;
      known.seq = next.seq;
      this.host?.deliver(next.message);
    }
  }

  /**
   * Reads the sender's missing numbers back from its history stream, in
   * batches, and delivers them in order, each before the held frames that
   * follow it; numbers the stream no longer has are reported `missed` with the
   * cause (`trimmed`, or `restarted` when the Redis epoch changed since this
   * node last heard from the sender). When Redis cannot be asked now (not
   * connected, a timeout), the gap stays open and the next presence check
   * (every heartbeat, and at once after a reconnect) tries again; a node that
   * closes meanwhile reports it (`closed`). One loop per sender at a time.
   */
  private async recover(known: SenderState): Promise<void> {
    if (known.recovering) return;
    known.recovering = true;
    let recovered = 0;
    let first = 0;
    try {
      for (;;) {
        this.releaseHeld(known);
        const next = known.held[0]?.seq;
        if (next !== undefined && next - 1 > known.target) known.target = next - 1;
        if (known.target <= known.seq) {
          if (known.held.length === 0) {
            known.epoch = this.epochValue ?? known.epoch;
            return;
          }
          continue;
        }
        const pub = this.pub;
        if (!pub || !this.pubReady || this.closing || !this.host) return; // retried after the next presence read
        const start = known.seq + 1;
        const end = next !== undefined ? Math.min(known.target, next - 1) : known.target;
        let epoch: string | null;
        let entries: [Buffer, Buffer[]][];
        try {
          const results = await pub
            .pipeline()
            .eval(EPOCH_LUA, 1, this.epochKey, randomBytes(8).toString('hex'))
            .xrangeBuffer(this.historyPrefix + known.session, `${start}-0`, `${end}-0`, 'COUNT', known.batch)
            .exec();
          if (!results) throw new Error('pipeline not run');
          const [[epochErr, epochReply], [rangeErr, rangeReply]] = results as [[Error | null, unknown], [Error | null, unknown]];
          if (epochErr) throw epochErr;
          if (rangeErr) throw rangeErr;
          epoch = epochReply === null || epochReply === undefined ? null : String(epochReply);
          entries = rangeReply as [Buffer, Buffer[]][];
        } catch (err) {
          if (transient(err as Error)) {
            if (/timed out/i.test((err as Error).message)) known.batch = Math.max(1, known.batch >> 1);
            this.commandFailed(err as Error);
            return; // the gap stays open: the next presence check retries
          }
          this.missed(known.node, end - known.seq, `${known.how}; its history could not be read: ${(err as Error).message}`, 'unreadable');
          known.seq = end;
          continue;
        }
        this.commandSucceeded();
        if (epoch !== null) this.noteEpoch(epoch);
        if (known.seq !== start - 1) continue; // another path moved it meanwhile (cannot happen: one loop per sender)
        const cause: AdapterMissedCause = known.epoch !== null && epoch !== null && known.epoch !== epoch ? 'restarted' : 'trimmed';
        const why = cause === 'restarted' ? 'redis lost its data (epoch changed)' : 'no longer in its history (trimmed or expired)';
        const asked = known.batch;
        let bytes = 0;
        for (const [, fields] of entries) for (const f of fields) bytes += f.length;
        if (entries.length > 0) known.batch = Math.max(1, Math.min(RECOVERY_BATCH, Math.floor(RECOVERY_BATCH_BYTES / (bytes / entries.length))));
        for (const [rawId, fields] of entries) {
          const s = entrySeq(rawId.toString());
          if (s === null || s <= known.seq || s > end) continue;
          const frame = fieldValue(fields, 'f');
          const decoded = frame ? decodeFrame(frame) : { error: 'no frame field' };
          if (s > known.seq + 1) this.missed(known.node, s - known.seq - 1, `${known.how}; ${known.seq + 1}–${s - 1} ${why}`, cause);
          known.seq = s;
          if ('error' in decoded || decoded.node !== known.node || decoded.sequence?.seq !== s) {
            // Not a frame of this sender (another writer on the key?): its number is reported, and the read moves past it.
            this.missed(known.node, 1, `${known.how}; history entry ${s} is not its frame (${'error' in decoded ? decoded.error : 'another sender or number'})`, 'unreadable');
            continue;
          }
          if (recovered === 0) first = s;
          recovered++;
          this.host?.deliver(decoded.message);
        }
        if (entries.length < asked && known.seq < end) {
          // The stream has nothing more up to `end`: the rest is gone.
          this.missed(known.node, end - known.seq, `${known.how}; ${known.seq + 1}–${end} ${why}`, cause);
          known.seq = end;
        }
      }
    } finally {
      known.recovering = false;
      if (recovered > 0) {
        this.recoveredCount += recovered;
        this.host?.logger?.info(
          { from: known.node, count: recovered, first, last: known.seq },
          `redis adapter: recovered ${recovered} missed message${recovered === 1 ? '' : 's'} from node ${known.node} from its history, delivered in order`,
        );
        this.host?.recovered?.(known.node, recovered);
      }
    }
  }

  /** The epoch as read now: a different one than before means Redis lost its data (warned once per change, and an `epochChanged` event). */
  private noteEpoch(epoch: string): void {
    const previous = this.epochValue;
    if (previous === epoch) return;
    this.epochValue = epoch;
    if (previous === null) return;
    this.host?.logger?.warn(
      { previous, current: epoch },
      'redis adapter: redis lost its data (epoch changed: restarted empty or flushed); messages missed before cannot be recovered from history',
    );
    this.emit('epochChanged', previous, epoch);
  }

  /** Reads (or creates) the epoch: when connected, so a change is known before any gap is recovered. */
  private async readEpoch(pub: Redis): Promise<void> {
    try {
      const epoch = await pub.eval(EPOCH_LUA, 1, this.epochKey, randomBytes(8).toString('hex'));
      if (typeof epoch === 'string' && this.pub === pub) this.noteEpoch(epoch);
    } catch {
      // read again by the next recovery
    }
  }

  private missed(from: string, count: number, how: string, cause: AdapterMissedCause): void {
    this.host?.deadLetter({
      reason: 'missed',
      cause,
      from,
      count,
      kind: null,
      topic: null,
      data: null,
      binary: null,
      error: `missed ${count} message${count === 1 ? '' : 's'} from node ${from}: ${how}`,
    });
  }

  /**
   * After a presence read: flush the subscription (a PING answered after every
   * frame Redis queued for us before it), then account for each sender's
   * latest number. Senders publish a number before they write it to their
   * entry, and we read the entries before the PING, so a number not arrived by
   * the PONG never will. Gaps whose recovery had to wait (Redis was not
   * reachable) are tried again.
   */
  private async checkGaps(entries: PresenceEntry[]): Promise<void> {
    const sub = this.sub;
    if (!sub || !this.subReady || this.closing) return;
    try {
      await sub.ping();
    } catch (err) {
      this.commandFailed(err as Error);
      return; // the next presence read checks again
    }
    const live = new Set<string>();
    for (const entry of entries) {
      live.add(entry.id);
      if (entry.id === this.nodeId || typeof entry.session !== 'string' || !isSeq(entry.seq)) continue;
      this.account(entry.id, { session: entry.session, seq: entry.seq, ...(entry.history !== undefined ? { history: entry.history } : {}) }, 'presence');
    }
    for (const known of [...this.senders.values(), ...this.retired]) {
      const open = known.target > known.seq || known.held.length > 0;
      if (!open && !known.recovering) this.retired.delete(known);
      else if (open && !known.recovering) void this.recover(known);
    }
    if (this.senders.size > MAX_SENDERS) {
      // Forget departed nodes, the longest unseen first (node ids are unique per process by default), never one being recovered.
      const gone = [...this.senders].filter(([id, s]) => !live.has(id) && !s.recovering && s.target <= s.seq && s.held.length === 0).sort((a, b) => a[1].seenAt - b[1].seenAt);
      for (const [id] of gone.slice(0, this.senders.size - MAX_SENDERS)) this.senders.delete(id);
    }
  }

  /** Reports every gap still open (`closed`): this node stops before it could read them back. */
  private reportOpenGaps(): void {
    for (const known of [...this.senders.values(), ...this.retired]) {
      const top = Math.max(known.target, known.held.at(-1)?.seq ?? 0);
      if (top > known.seq) this.missed(known.node, top - known.seq, `${known.how ? `${known.how}; ` : ''}this node closed before reading them back`, 'closed');
      known.seq = top;
      known.target = top;
      for (const h of known.held) this.heldBytes -= h.bytes;
      known.held = [];
    }
  }
  /** Registers (refreshes) this node and returns the live entries. */
  private async presence(): Promise<PresenceEntry[]> {
    const pub = this.pub;
    if (!pub || !this.pubReady) throw new Error(`redis unavailable${this.lastError ? `: ${this.lastError}` : ''}`);
    const own: PresenceEntry = {
      id: this.nodeId,
      connections: this.host?.connections() ?? 0,
      startedAt: this.startedAt,
      updatedAt: Date.now(),
      hostname: hostname(),
      pid: process.pid,
      // The latest number handed to Redis: the others find their gaps with it even if we publish nothing more.
      session: this.session,
      seq: this.seq,
      ...(this.history ? { history: true } : {}),
    };
    let result: unknown;
    const sentBefore = this.seq;
    try {
      result = await pub.eval(PRESENCE_LUA, 1, this.nodesKey, this.nodeKeyPrefix, this.nodeId, JSON.stringify(own), this.presenceTtl);
    } catch (err) {
      this.commandFailed(err as Error);
      throw err;
    }
    // Redis answers one connection's commands in order: every publish sent before this one has been answered.
    if (this.pub === pub) this.releaseInFlight(sentBefore);
    this.commandSucceeded();
    const entries: PresenceEntry[] = [];
    for (const text of Array.isArray(result) ? result : []) {
      let e: Partial<PresenceEntry>;
      try {
        e = JSON.parse(String(text)) as Partial<PresenceEntry>;
      } catch {
        continue; // not ours: ignore rather than fail the whole list
      }
      if (e === null || typeof e !== 'object' || typeof e.id !== 'string') continue;
      entries.push({
        id: e.id,
        connections: Number(e.connections) || 0,
        startedAt: Number(e.startedAt) || 0,
        updatedAt: Number(e.updatedAt) || 0,
        hostname: String(e.hostname ?? ''),
        pid: Number(e.pid) || 0,
        ...(typeof e.session === 'string' && isSeq(e.seq) ? { session: e.session, seq: e.seq, history: e.history === true } : {}),
      });
    }
    this.knownNodes = entries.length;
    void this.checkGaps(entries);
    return entries;
  }

  /** One presence round trip at a time, shared by every caller meanwhile. */
  private beat(): Promise<number> {
    if (this.closing) return Promise.resolve(this.knownNodes);
    this.presenceRead ??= this.presence()
      .then((entries) => entries.length)
      .finally(() => (this.presenceRead = null));
    return this.presenceRead;
  }

  /** A publish reached fewer subscribers than nodes we knew of: ask again before reporting. */
  private async checkPartial(message: AdapterMessage, receivers: number): Promise<void> {
    let live: number;
    try {
      live = await this.beat();
    } catch {
      live = this.knownNodes;
    }
    if (receivers < live) this.fail(message, 'partial', `reached ${receivers} of ${live} nodes`);
  }

  /** Redis answered every frame numbered up to `seq` (or the connection that held them closed): they are no longer held. */
  private releaseInFlight(seq: number): void {
    const q = this.inFlight;
    while (this.inFlightHead < q.length && q[this.inFlightHead]!.seq <= seq) {
      this.inFlightTotal -= q[this.inFlightHead]!.bytes;
      this.inFlightHead++;
    }
    if (this.inFlightHead === q.length) {
      q.length = 0;
      this.inFlightHead = 0;
      this.inFlightTotal = 0;
    } else if (this.inFlightHead > 1024 && this.inFlightHead * 2 > q.length) {
      q.splice(0, this.inFlightHead);
      this.inFlightHead = 0;
    }
  }

  private fail(message: AdapterMessage, reason: AdapterFailureReason, error: string): void {
    this.host?.deadLetter({ ...message, reason, error });
  }

  /** D3: a command Redis left unanswered means Redis is hung or overloaded: degraded until one succeeds. */
  private commandFailed(err: Error): void {
    if (this.closing || !/timed out/i.test(err.message)) return;
    if (this.stalled === null) {
      this.stalled = `redis command timed out (no reply within ${this.commandTimeout} ms)`;
      this.update();
    }
  }

  private commandSucceeded(): void {
    if (this.stalled === null) return;
    this.stalled = null;
    this.update();
  }

  /** D4: the first failure of each kind is a warning (the operator learns why at once); repeats are debug. */
  private logFailure(err: Error, what: string): void {
    const log = this.host?.logger;
    if (!log) return;
    const kind = failureKind(err);
    if (this.statusValue === 'up' || this.loggedFailures.has(kind) || this.loggedFailures.size >= MAX_LOGGED_FAILURE_KINDS) {
      log.debug({ err: err.message, kind }, `redis adapter: ${what}`);
      return;
    }
    this.loggedFailures.add(kind);
    const message = describeError(err);
    log.warn({ url: this.target.display, err: message, kind }, `redis adapter: ${what}: ${message} (retrying; logged once per kind of failure until redis is up)`);
  }

  private update(): void {
    if (this.closing) return;
    const connected = this.pubReady && this.subReady;
    const up = connected && this.stalled === null;
    const status: AdapterStatus = up ? 'up' : 'degraded';
    const reason = up ? null : connected ? this.stalled : `redis unavailable${this.lastError ? `: ${this.lastError}` : ''}`;
    if (status === this.statusValue) {
      if (!up) this.reason = reason;
      return;
    }
    this.statusValue = status;
    this.reason = reason;
    if (up) {
      this.lastError = null;
      this.refusalValue = null;
      this.loggedFailures.clear();
    }
    const log = this.host?.logger;
    if (up) log?.info({ url: this.target.display }, 'redis adapter up');
    else log?.warn({ url: this.target.display, reason }, 'redis adapter degraded: cross-node delivery paused, local delivery continues');
    this.host?.statusChanged(status, reason);
  }
}

/**
 * An adapter that fans broadcasts and topic publishes out to every supervisor
 * sharing the Redis at `options.url`, with per-node presence. Pass it as the
 * supervisor's `adapter` option; the supervisor attaches (connects) it and
 * closes it on `supervisor.close()`. Throws RangeError for a bad option (the
 * URL: see parseRedisUrl).
 */
export function createRedisAdapter(options: RedisAdapterOptions): RedisAdapter {
  return new RedisAdapter(options);
}

export {
  createRedisSessionStore,
  RedisSessionStore,
  REDIS_SESSION_STORE_DEFAULTS,
  SessionStoreUnavailableError,
  type RedisSessionStoreEvents,
  type RedisSessionStoreOptions,
  type RedisSessionStoreStatus,
  type SessionStoreFailureKind,
} from './redis-session-store.ts';
