/**
 * The Redis adapter: broadcasts and topic publishes cross to every supervisor
 * process sharing one Redis (pub/sub), and each node keeps a presence entry
 * with a TTL so the live nodes and their connection counts can be listed.
 *
 * Two connections (ioredis): `pub` for commands, `sub` for the subscription
 * (a subscribed RESP2 connection can run nothing else). Every node subscribes
 * to one channel, `<prefix>messages`; a frame is a one-line JSON header
 * (sender node id, kind, topic, binary flag) then the raw payload bytes, so
 * binary data crosses unencoded. A node skips its own frames: it delivered
 * them locally before publishing (never twice).
 *
 * Outages (R12): commands are never queued while disconnected
 * (enableOfflineQueue false), so a publish either goes out now or is reported
 * at once (`unavailable`); one that Redis does not confirm within
 * commandTimeout is reported (`error`, it may still have been delivered); one
 * that reached fewer nodes than the presence table lists is reported
 * (`partial`). Both connections reconnect forever with jittered exponential
 * backoff; local delivery never waits on any of this (R11).
 *
 * Presence: every heartbeatInterval a node SETs `<prefix>node:<id>` with a
 * PX presenceTtl and adds its id to the set `<prefix>nodes`; a Lua script reads
 * the set and drops ids whose key has expired. Redis expires the key itself,
 * so a node killed without a goodbye is gone at most presenceTtl after its last
 * heartbeat, whatever the nodes' clocks say. Standalone Redis (or a primary):
 * the script touches keys it does not declare, which Redis Cluster forbids.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { Redis, type RedisOptions } from 'ioredis';
import { positiveInt } from '../options.ts';
import { validateTopic } from '../topics.ts';
import type { Adapter, AdapterFailureReason, AdapterHost, AdapterMessage, AdapterStatus, NodeInfo } from './types.ts';

export const REDIS_DEFAULTS = {
  /** Keys and the channel start with it: several applications can share one Redis. */
  prefix: 'ws-supervisor:',
  /** 5 s: presence counts are at most this stale. */
  heartbeatInterval: 5_000,
  /** 15 s = 3 heartbeats: two lost heartbeats are tolerated; a dead node is gone within 15 s. */
  presenceTtl: 15_000,
  /** First reconnect delay; doubles per failed attempt, with jitter. */
  backoffInitialDelay: 100,
  /** Reconnect delay cap: a restarted Redis is found within ~5 s. */
  backoffMaxDelay: 5_000,
  /** A publish (or presence command) Redis has not answered by then is reported as failed. */
  commandTimeout: 2_000,
  /** Time a TCP connect + handshake to Redis may take. */
  connectTimeout: 5_000,
} as const;

export interface RedisAdapterOptions {
  /** `redis://[[user]:password@]host[:port][/db]` or `rediss://…` (TLS). */
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

const FRAME_VERSION = 1;
const NEWLINE = 0x0a;

interface FrameHeader {
  v: number;
  node: string;
  kind: AdapterMessage['kind'];
  topic: string | null;
  binary: boolean;
}

/** A frame on the channel: the JSON header (never contains a raw newline), '\n', the payload bytes. */
export function encodeFrame(nodeId: string, message: AdapterMessage): Buffer {
  const header: FrameHeader = { v: FRAME_VERSION, node: nodeId, kind: message.kind, topic: message.topic, binary: message.binary };
  return Buffer.concat([Buffer.from(JSON.stringify(header) + '\n'), message.data]);
}

/** The sender and message of a frame, or a reason it is not one of ours. */
export function decodeFrame(frame: Buffer): { node: string; message: AdapterMessage } | { error: string } {
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
    message: { kind: header.kind, topic: header.topic ?? null, binary: header.binary, data: frame.subarray(nl + 1) },
  };
}

export class RedisAdapter implements Adapter {
  readonly name = 'redis';
  readonly nodeId: string;
  private statusValue: AdapterStatus = 'degraded';
  private reason: string | null = 'connecting to redis';
  private readonly url: string;
  private readonly channel: string;
  private readonly nodesKey: string;
  private readonly nodeKeyPrefix: string;
  private readonly heartbeatInterval: number;
  private readonly presenceTtl: number;
  private readonly backoffInitial: number;
  private readonly backoffMax: number;
  private readonly commandTimeout: number;
  private readonly connectTimeout: number;
  private readonly startedAt = Date.now();
  private host: AdapterHost | null = null;
  private pub: Redis | null = null;
  private sub: Redis | null = null;
  private pubReady = false;
  private subReady = false;
  private lastError: string | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  /** Live nodes at the last presence read: a publish that reaches fewer subscribers may have missed one. */
  private knownNodes = 0;
  private presenceRead: Promise<number> | null = null;
  private closing: Promise<void> | null = null;

  constructor(options: RedisAdapterOptions) {
    if (!options || typeof options.url !== 'string' || !/^rediss?:\/\//.test(options.url)) {
      throw new RangeError(`ws-supervisor: redis adapter option url must be redis://… or rediss://…, got ${JSON.stringify(options?.url)}`);
    }
    this.url = options.url;
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
  }

  get status(): AdapterStatus {
    return this.statusValue;
  }

  get statusReason(): string | null {
    return this.reason;
  }

  /** The reconnect delay before attempt `times` (1, 2, …): exponential, capped, jittered to 50–100%. */
  backoffDelay(times: number): number {
    const base = Math.min(this.backoffMax, this.backoffInitial * 2 ** Math.min(times - 1, 30));
    return Math.round(base / 2 + (Math.random() * base) / 2);
  }

  attach(host: AdapterHost): void {
    if (this.host) throw new Error('ws-supervisor: this adapter is already attached to a supervisor');
    if (this.closing) throw new Error('ws-supervisor: this adapter is closed');
    this.host = host;
    const common: RedisOptions = {
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
    const pub = (this.pub = new Redis(this.url, { ...common, connectionName: `${name}:pub` }));
    const sub = (this.sub = new Redis(this.url, { ...common, connectionName: `${name}:sub` }));

    pub.on('ready', () => {
      this.pubReady = true;
      this.update();
      void this.beat().catch(() => undefined); // re-register at once (a restarted Redis has forgotten us)
    });
    pub.on('close', () => {
      this.pubReady = false;
      this.update();
    });
    sub.on('ready', () => {
      sub.subscribe(this.channel).then(
        () => {
          this.subReady = true;
          this.update();
        },
        (err: Error) => {
          this.lastError = err.message;
          host.logger?.error({ err, channel: this.channel }, 'redis adapter: subscribe failed; reconnecting');
          sub.disconnect(true);
        },
      );
    });
    sub.on('close', () => {
      this.subReady = false;
      this.update();
    });
    for (const client of [pub, sub]) {
      // ioredis emits one per failed attempt; the status change is the news, these are detail.
      client.on('error', (err: Error) => {
        this.lastError = err.message;
        host.logger?.debug({ err: err.message }, 'redis adapter: connection error');
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
    pub.publish(this.channel, encodeFrame(this.nodeId, message)).then(
      (receivers) => {
        if (receivers < expected) void this.checkPartial(message, receivers);
      },
      (err: Error) => this.fail(message, 'error', `publish not confirmed: ${err.message}`),
    );
  }

  async nodes(): Promise<NodeInfo[]> {
    const entries = await this.presence();
    const nodes: NodeInfo[] = [];
    for (const text of entries) {
      let entry: Partial<NodeInfo>;
      try {
        entry = JSON.parse(text) as Partial<NodeInfo>;
      } catch {
        continue; // not ours: ignore rather than fail the whole list
      }
      if (typeof entry.id !== 'string') continue;
      const self = entry.id === this.nodeId;
      nodes.push({
        id: entry.id,
        connections: self ? (this.host?.connections() ?? 0) : Number(entry.connections) || 0,
        startedAt: Number(entry.startedAt) || 0,
        updatedAt: Number(entry.updatedAt) || 0,
        hostname: String(entry.hostname ?? ''),
        pid: Number(entry.pid) || 0,
        self,
      });
    }
    return nodes.sort((a, b) => a.startedAt - b.startedAt || a.id.localeCompare(b.id));
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
      this.heartbeatTimer = null;
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
      this.reason = 'adapter closed';
      if (this.statusValue !== 'degraded') {
        this.statusValue = 'degraded';
        this.host?.statusChanged('degraded', this.reason);
      }
      // disconnect() stops reconnecting and ends the sockets at once (R3).
      pub?.disconnect();
      sub?.disconnect();
      this.host = null;
    })();
    return this.closing;
  }

  // -------------------------------------------------------------------------

  private receive(frame: Buffer): void {
    const decoded = decodeFrame(frame);
    if ('error' in decoded) {
      this.host?.logger?.warn({ error: decoded.error, bytes: frame.length }, `redis adapter: ignored a frame on ${this.channel}`);
      return;
    }
    if (decoded.node === this.nodeId) return; // delivered locally when it was published
    this.host?.deliver(decoded.message);
  }

  /** Registers (refreshes) this node and returns the live entries. */
  private async presence(): Promise<string[]> {
    const pub = this.pub;
    if (!pub || !this.pubReady) throw new Error(`redis unavailable${this.lastError ? `: ${this.lastError}` : ''}`);
    const entry = JSON.stringify({
      id: this.nodeId,
      connections: this.host?.connections() ?? 0,
      startedAt: this.startedAt,
      updatedAt: Date.now(),
      hostname: hostname(),
      pid: process.pid,
    });
    const result = (await pub.eval(PRESENCE_LUA, 1, this.nodesKey, this.nodeKeyPrefix, this.nodeId, entry, this.presenceTtl)) as unknown;
    const entries = Array.isArray(result) ? result.map((e) => String(e)) : [];
    this.knownNodes = entries.length;
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

  private fail(message: AdapterMessage, reason: AdapterFailureReason, error: string): void {
    this.host?.deadLetter({ ...message, reason, error });
  }

  private update(): void {
    if (this.closing) return;
    const up = this.pubReady && this.subReady;
    const status: AdapterStatus = up ? 'up' : 'degraded';
    const reason = up ? null : `redis unavailable${this.lastError ? `: ${this.lastError}` : ''}`;
    if (status === this.statusValue) {
      if (!up) this.reason = reason;
      return;
    }
    this.statusValue = status;
    this.reason = reason;
    if (up) this.lastError = null;
    const log = this.host?.logger;
    if (up) log?.info({ url: redactUrl(this.url) }, 'redis adapter up');
    else log?.warn({ url: redactUrl(this.url), reason }, 'redis adapter degraded: cross-node delivery paused, local delivery continues');
    this.host?.statusChanged(status, reason);
  }
}

/** The url without its password, for logs. */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'redis://?';
  }
}

/**
 * An adapter that fans broadcasts and topic publishes out to every supervisor
 * sharing the Redis at `options.url`, with per-node presence. Pass it as the
 * supervisor's `adapter` option; the supervisor attaches (connects) it and
 * closes it on `supervisor.close()`.
 */
export function createRedisAdapter(options: RedisAdapterOptions): RedisAdapter {
  return new RedisAdapter(options);
}
