/**
 * Every tunable of the supervisor, with its default and the reason for it,
 * named once here (house style: gorilla's constants at the top). docs/options.md
 * is the long form of this file.
 */
import type { IncomingMessage, Server as HttpServer } from 'node:http';
import type { InspectionEvent, Observer } from 'xstate';
import type { Adapter } from '../adapter/types.ts';
import type { Logger } from '../base/logger.ts';
import { isInspector, isProtocolList, optionalObject, positiveInt, shown } from '../base/checks.ts';
import type { Connection } from './connection.ts';
import type { SessionOptions } from './sessions.ts';
import { isIP } from 'node:net';

export const DEFAULTS = {
  /** R4/R6: 25 s keeps common proxy and NAT idle timeouts (≥ 60 s) from firing, with margin. */
  pingInterval: 25_000,
  /** R4: 10 s tolerates a slow mobile round trip; a dead peer is found within 35 s. */
  pongTimeout: 10_000,
  /** R10: as gorilla's writeWait; a socket that cannot drain for 10 s is not coming back. */
  writeTimeout: 10_000,
  /** R16: 5 s for a close handshake, whoever started it, before we terminate (ws gets it too; its own default is 30 s). */
  closeTimeout: 5_000,
  /** R21: 1 MiB fits any sane JSON message; 1,000 hostile peers cannot pin more than ~1 GiB. */
  maxPayload: 1_048_576,
  /** R9: as gorilla's 256-slot send channel: messages not yet handed to the OS socket. */
  sendQueueMessages: 256,
  /** R9: 4 MiB of queued bytes per connection, so a few big messages count too. */
  sendQueueBytes: 4 * 1_048_576,
  /** Admission: an `authenticate` hook that has not settled by then is refused with 503. */
  authenticateTimeout: 10_000,
  /** R21: per-connection rate limit, frames per second — messages, pings and pongs alike (bursts up to the same number); 0 = none. */
  maxMessageRate: 0,
  /** R21: below this machine's ~19k descriptor ceiling; refused with 503 beyond it. */
  maxConnections: 10_000,
  /** R21: topics one connection may be in; bounds what one client can make us hold (each name ≤ 256 bytes). */
  maxTopicsPerConnection: 100,

  // --- Admission limits per address and the open-file check (R21) ---
  /**
   * R21: WebSocket connections (open or being admitted) from one client
   * address; the next upgrade gets 429. A tenth of the default maxConnections:
   * one address cannot take the server, and an office or campus NAT of up to
   * 1,000 simultaneous users still fits. Carrier-grade NAT needs more: raise it.
   */
  maxConnectionsPerAddress: 1000,
  /**
   * R21: sockets from one address that have not finished the upgrade (idle
   * TCP, slow heads, plain HTTP keep-alive), counted when the supervisor is
   * given `server`; the next is answered 429 and closed at once. A browser
   * holds at most 6 HTTP connections per host, so 128 covers ~20 browsers
   * behind one NAT loading at once, while one address can fill at most an
   * eighth of the CLI's 1,024 sockets of HTTP headroom (measured: 11,100 idle
   * sockets from one address locked every other client out).
   */
  maxPendingPerAddress: 128,
  // --- Fairness and cost budgets (R21; src/server/scheduler.ts). A unit is a message plus one per KiB.
  /** Units one connection may use per event-loop turn before its socket is paused: ~0.5 ms of request/response work. */
  fairShare: 32,
  /** Units all connections together may use per turn beyond each one's first message: 1.5–3 ms of request/response work (measured), so timers and upgrades run often. */
  turnBudget: 512,
  /**
   * Milliseconds of inbound work per turn (each phase), whatever the units: the budget in time for when a unit costs more than
   * measured (code not yet optimised after a start, a slower machine, an application handler that takes long).
   */
  turnTime: 5,
  /** Recipients one turn's fan-out may reach before the rest of a broadcast/publish waits for the next turn (~5–10 ms of sends). */
  fanOutSlice: 1_000,
  /** The window of the per-connection budgets, ms. */
  budgetWindow: 10_000,
  /** Messages per window per connection: 10k/s on average, ~100× a busy chat client. */
  budgetMessages: 100_000,
  /** Inbound payload bytes per window per connection: 256 max-size (1 MiB) messages. */
  budgetBytes: 256 * 1_048_576,
  /** Fan-out cost (recipients × bytes) per window per connection: ~6 MiB/s, about what one core can push. */
  budgetFanOut: 64 * 1_048_576,
  /** Control frames (pings and pongs) per window per connection: 100/s on average; a heartbeat needs one every few seconds. */
  budgetControl: 1_000,
} as const;

/** Heartbeat and deadline timings, milliseconds (R4–R6, R10, R16). */
export interface TimingOptions {
  /** Idle time between pings. Default 25000. */
  pingInterval?: number;
  /** Time a ping may go unanswered by any inbound frame. Default 10000. */
  pongTimeout?: number;
  /** Time the socket may stay unable to drain before the connection is closed 1008. Default 10000. */
  writeTimeout?: number;
  /**
   * Time a close handshake may take, whoever started it (our close frame
   * unanswered, or the peer's TCP side still open after its close frame),
   * before the socket is terminated. A slow consumer's close gets at most
   * 1000 of it (STALLED_CLOSE_GRACE_MS). Default 5000.
   */
  closeTimeout?: number;
}

/** Per-connection send queue limits (R9). Overflow closes the connection with 1008 (R11). */
export interface SendQueueOptions {
  /** Messages not yet handed to the OS socket. Default 256. */
  maxMessages?: number;
  /** Bytes not yet handed to the OS socket. Default 4 MiB. */
  maxBytes?: number;
}

/**
 * R19 origin policy:
 * - `'same-origin'` (default): browsers from the same host:port as the request's
 *   Host header, and clients that send no Origin (non-browsers), are accepted;
 * - an array of exact origins (`scheme://host[:port]`): those, plus no-Origin clients;
 * - `'*'`: every origin (development only).
 */
export type OriginPolicy = 'same-origin' | '*' | readonly string[];

/** Which TCP peers are proxies whose X-Forwarded-For names the client: none (false), every peer (true), or these addresses. */
export type TrustProxy = boolean | readonly string[];

/** Result of `authenticate`: anything truthy is attached to the connection as `auth`. */
export type AuthenticateHook<Auth = unknown> = (request: IncomingMessage) => Promise<Auth | false | null | undefined> | Auth | false | null | undefined;

/**
 * Called for every inbound message (the hot path: keep it fast). `Auth` is what
 * `authenticate` returns; write `MessageHandler` alone when the handler does not read it.
 */
export type MessageHandler<Auth = unknown> = (connection: Connection<Auth>, data: Buffer, isBinary: boolean) => void;

/**
 * How inbound work is shared between connections per event-loop
 * turn (src/server/scheduler.ts). A unit is one message plus one per KiB.
 */
export interface FairnessOptions {
  /** Units one connection may use per turn; beyond it its socket is paused until a later turn (nothing is dropped). Default 32. */
  share?: number;
  /** Units all connections may use per turn (each connection's first small message of a turn always runs). Default 512. */
  turnBudget?: number;
  /** Milliseconds of inbound work per turn, whichever of this and `turnBudget` comes first. Default 5. */
  turnTime?: number;
  /** Recipients per turn of a broadcast or publish; the rest follows on later turns, in order. Default 1000. */
  fanOutSlice?: number;
}

/**
 * R21: per-connection budgets per window. Over one, the connection
 * is closed 1008 naming it (`message budget over N per 10 s`). 0 turns a
 * budget off.
 */
export interface BudgetOptions {
  /** The window, ms. Default 10000. */
  window?: number;
  /** Inbound messages per window. Default 100000. */
  messages?: number;
  /** Inbound payload bytes per window. Default 256 MiB. */
  bytes?: number;
  /**
   * Fan-out cost per window: recipients × bytes of the broadcasts and
   * publishes charged to the connection (`broadcast(data, { from })`,
   * `connection.charge(cost)`). Default 64 MiB.
   */
  fanOut?: number;
  /**
   * Control frames (pings and pongs) per window: each costs a parse and,
   * for a ping, a pong write, for no application work. Default 1000.
   */
  control?: number;
}

export interface SupervisorOptions<Auth = unknown> {
  /** Attach to this server's `upgrade` event. Omit and call `handleUpgrade` yourself (noServer mode). */
  server?: HttpServer;
  /** The WebSocket endpoint path (query string ignored). Default: any path. */
  path?: string;
  /** R19. Default `'same-origin'`. */
  origins?: OriginPolicy;
  /**
   * R20: subprotocols this server speaks, in order of preference. When a client
   * offers some and none match, the upgrade is refused with 400. Default: none
   * (a client that offers subprotocols is refused rather than silently accepted).
   */
  protocols?: readonly string[];
  /** R20: refuse clients that offer no subprotocol when `protocols` is set. Default false. */
  requireProtocol?: boolean;
  /** R21: open + admitting connections; beyond it upgrades get 503. Default 10000. */
  maxConnections?: number;
  /** R21: largest inbound message in bytes; bigger closes with 1009. Default 1 MiB. */
  maxPayload?: number;
  /**
   * R21: frames per second one connection may send — messages, pings and
   * pongs alike (a token bucket with a burst of the same size). Over it the
   * connection is closed 1008 ("message rate over N/s") and its excess
   * messages are dropped. Default 0: no limit.
   */
  maxMessageRate?: number;
  timing?: TimingOptions;
  sendQueue?: SendQueueOptions;
  /**
   * Admission hook, run at upgrade before the handshake completes. Return a
   * value to accept (attached as `connection.auth`), or false/null/undefined to
   * refuse with 401; throw an `AdmissionError` for another status.
   */
  authenticate?: AuthenticateHook<Auth>;
  /** Time `authenticate` may take before the upgrade is refused with 503, ms. Default 10000. */
  authenticateTimeout?: number;
  /** Structured logs (e.g. `pino()`); default: none. */
  logger?: Logger;
  /** The inbound message handler. */
  onMessage?: MessageHandler<Auth>;
  /**
   * Any XState inspector (e.g. `@statelyai/inspect`'s `.inspect`); passed to
   * every connection actor. Off by default: any inspector, even a no-op callback,
   * cuts an XState actor's event throughput by more than half (measured, xstate 5.33).
   */
  inspect?: Observer<InspectionEvent> | ((event: InspectionEvent) => void);
  /**
   * Fans broadcasts and topic publishes out to the other processes (nodes)
   * and lists the live ones: `createRedisAdapter({ url })` from
   * `ws-supervisor/redis`. Default: the in-memory adapter (this process only).
   * One adapter per supervisor; `supervisor.close()` closes it.
   */
  adapter?: Adapter;
  /** R21: topics one connection may be in at once; a join beyond it throws TopicError('too-many-topics'). Default 100. */
  maxTopicsPerConnection?: number;
  /**
   * Sessions that survive a dropped connection (docs/sessions.md), for the
   * clients that ask (`ws-session=1`); everyone else is unaffected. Off when
   * absent (a `ws-session=1` upgrade is then accepted and closed at once with
   * 4501, CloseCodes.SESSIONS_UNSUPPORTED, so the clients stop instead of
   * retrying); `{}` turns them on with the defaults (in-memory store,
   * resumeWindow 120000, …).
   */
  sessions?: SessionOptions<Auth>;

  // --- Admission limits per address and the open-file check (R21) ---
  /**
   * R21: the process's soft open-file limit, against which `maxConnections`
   * is checked at creation (src/server/fd-limit.ts): an explicit
   * maxConnections that does not fit (plus 64 descriptors for the process)
   * throws a RangeError naming the numbers; the default is lowered to fit, with
   * a warning. Default: read from /proc/self/limits (Linux); null: not checked
   * (other systems, unless given).
   */
  openFileLimit?: number | null;
  /**
   * R21: WebSocket connections (open or being admitted) from one client
   * address; beyond it the upgrade is refused with 429 ("too many connections
   * from ADDRESS (limit N per address)"). Default 1000.
   */
  maxConnectionsPerAddress?: number;
  /**
   * R21: sockets from one address on `server` that have not finished the
   * upgrade (idle TCP, slow request heads, plain HTTP); beyond it a new socket
   * is answered 429 and closed at once, before any request is read. Needs
   * `server` (the supervisor listens to its 'connection' event); in noServer
   * mode the application owns its sockets and this is not applied. Default 128.
   */
  maxPendingPerAddress?: number;
  /**
   * Which TCP peers are reverse proxies whose `X-Forwarded-For` names the
   * client: `false` (default: the header is ignored, so it cannot be forged),
   * `true` (every peer: only when clients cannot reach the server but through
   * the proxy), or a list of the proxies' IP addresses. Behind a trusted proxy
   * the client is the rightmost X-Forwarded-For entry (the one the proxy
   * added); its per-address limit applies to that client, and the proxy's
   * own sockets are exempt from maxPendingPerAddress (they carry many clients).
   */
  trustProxy?: TrustProxy;
  /** R21: fair scheduling of inbound work and sliced fan-out; see FairnessOptions. */
  fairness?: FairnessOptions;
  /** R21: per-connection budgets per window; see BudgetOptions. `false` turns all off. */
  budget?: BudgetOptions | false;
}

export interface ResolvedOptions {
  path: string | null;
  origins: OriginPolicy;
  protocols: readonly string[];
  requireProtocol: boolean;
  maxConnections: number;
  maxPayload: number;
  maxMessageRate: number;
  authenticateTimeout: number;
  maxTopicsPerConnection: number;
  maxConnectionsPerAddress: number;
  maxPendingPerAddress: number;
  trustProxy: TrustProxy;
  timing: Required<TimingOptions>;
  sendQueue: Required<SendQueueOptions>;
  fairness: Required<FairnessOptions>;
  /** null: no budgets. */
  budget: Required<BudgetOptions> | null;
}

/** 0 (off) or a positive integer. */
function budgetValue(name: string, value: number | undefined, fallback: number): number {
  return value === 0 ? 0 : positiveInt(name, value, fallback);
}

/** Normalises an origin allow-list entry to `scheme://host[:port]`; throws on anything else. */
export function normaliseOrigin(entry: string): string {
  let url: URL;
  try {
    url = new URL(entry);
  } catch {
    throw new RangeError(`ws-supervisor: allowed origin ${JSON.stringify(entry)} is not scheme://host[:port]`);
  }
  if (url.origin === 'null' || url.pathname.length > 1 || url.search || url.hash || url.username) {
    throw new RangeError(`ws-supervisor: allowed origin ${JSON.stringify(entry)} is not scheme://host[:port]`);
  }
  return url.origin;
}

/** An IPv4-mapped IPv6 address in its canonical hex form (`::ffff:7f00:1`). */
const MAPPED_HEX = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/;

/**
 * An address as counted and compared: one key per address however it is
 * written. IPv6 in its canonical text (RFC 5952: lower case, the longest zero
 * run compressed: `2001:DB8:0:0::1` is `2001:db8::1`), IPv4-mapped IPv6 as
 * IPv4 (`::ffff:1.2.3.4`, `::FFFF:102:304` are `1.2.3.4`). Applied to the
 * peers' addresses, to X-Forwarded-For entries and to the trustProxy list, so
 * an entry written another way than the kernel writes the peer still matches.
 */
export function normaliseAddress(address: string | undefined): string {
  if (address === undefined || address === '') return '?';
  // The kernel's form of an IPv4 peer on a dual-stack socket (every such connection): no URL parse.
  if (address.startsWith('::ffff:') && isIP(address.slice(7)) === 4) return address.slice(7);
  if (isIP(address) !== 6) return address.toLowerCase();
  let canonical: string;
  try {
    canonical = new URL(`http://[${address}]/`).hostname.slice(1, -1);
  } catch {
    return address.toLowerCase(); // a zone id (`fe80::1%eth0`): compared as written
  }
  const mapped = MAPPED_HEX.exec(canonical);
  if (mapped === null) return canonical;
  const hi = parseInt(mapped[1]!, 16);
  const lo = parseInt(mapped[2]!, 16);
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

/** The trustProxy option, checked: a list holds IP addresses only (normalised as the peers' are). */
export function resolveTrustProxy(value: unknown): TrustProxy {
  if (value === undefined || value === false) return false;
  if (value === true) return true;
  if (!Array.isArray(value)) throw new RangeError(`ws-supervisor: option trustProxy must be true, false or a list of IP addresses, got ${JSON.stringify(value)}`);
  return value.map((entry: unknown) => {
    if (typeof entry !== 'string' || isIP(entry) === 0) throw new RangeError(`ws-supervisor: option trustProxy: ${JSON.stringify(entry)} is not an IP address`);
    return normaliseAddress(entry);
  });
}

/** An option that must have these methods (a logger, an adapter, a server): absent, or an object that has them. */
function withMethods(name: string, value: unknown, what: string, methods: readonly string[]): void {
  if (value === undefined) return;
  const missing = typeof value === 'object' && value !== null ? methods.filter((m) => typeof (value as Record<string, unknown>)[m] !== 'function') : methods;
  if (missing.length > 0) {
    throw new RangeError(`ws-supervisor: option ${name} must be ${what} (with ${methods.join(', ')}), got ${shown(value)}${missing.length < methods.length ? ` without ${missing.join(', ')}` : ''}`);
  }
}

/**
 * The options TypeScript types but JavaScript callers can still get wrong, checked as the numbers are: a RangeError
 * naming the option and the value at creation, not a TypeError at the first upgrade or message. A `protocols` string
 * instead of a list was the worst: iterated character by character, it accepted a client offering `c` for 'chat'.
 */
function checkShapes(options: SupervisorOptions<unknown>): void {
  if (options.path !== undefined && (typeof options.path !== 'string' || !options.path.startsWith('/'))) {
    throw new RangeError(`ws-supervisor: option path must start with "/", got ${shown(options.path)}`);
  }
  const { protocols } = options;
  if (protocols !== undefined && !isProtocolList(protocols)) {
    throw new RangeError(`ws-supervisor: option protocols must be a list of subprotocol names, got ${Array.isArray(protocols) ? JSON.stringify(protocols) : shown(protocols)}`);
  }
  if (options.requireProtocol !== undefined && typeof options.requireProtocol !== 'boolean') {
    throw new RangeError(`ws-supervisor: option requireProtocol must be true or false, got ${shown(options.requireProtocol)}`);
  }
  for (const name of ['authenticate', 'onMessage'] as const) {
    if (options[name] !== undefined && typeof options[name] !== 'function') {
      throw new RangeError(`ws-supervisor: option ${name} must be a function, got ${shown(options[name])}`);
    }
  }
  const { inspect } = options;
  if (inspect !== undefined && !isInspector(inspect)) {
    throw new RangeError(`ws-supervisor: option inspect must be an XState inspector (a function, or an observer with next), got ${shown(inspect)}`);
  }
  optionalObject('timing', options.timing);
  optionalObject('sendQueue', options.sendQueue);
  optionalObject('fairness', options.fairness);
  if (options.budget !== false) optionalObject('budget', options.budget);
  withMethods('server', options.server, 'an http.Server', ['on', 'off', 'listenerCount']);
  withMethods('logger', options.logger, 'a pino-compatible logger', ['debug', 'info', 'warn', 'error', 'child']);
  withMethods('adapter', options.adapter, 'an Adapter', ['attach', 'publish', 'nodes', 'close']);
}

export function resolveOptions(options: SupervisorOptions<unknown>): ResolvedOptions {
  checkShapes(options);
  const t = options.timing ?? {};
  const q = options.sendQueue ?? {};
  const f = options.fairness ?? {};
  const b = options.budget;
  let origins: OriginPolicy = options.origins ?? 'same-origin';
  if (Array.isArray(origins)) origins = origins.map(normaliseOrigin);
  else if (origins !== 'same-origin' && origins !== '*') {
    throw new RangeError(`ws-supervisor: option origins must be 'same-origin', '*' or a list, got ${String(origins)}`);
  }
  return {
    path: options.path ?? null,
    origins,
    protocols: options.protocols ?? [],
    requireProtocol: options.requireProtocol ?? false,
    maxConnections: positiveInt('maxConnections', options.maxConnections, DEFAULTS.maxConnections),
    maxPayload: positiveInt('maxPayload', options.maxPayload, DEFAULTS.maxPayload),
    maxMessageRate: options.maxMessageRate ? positiveInt('maxMessageRate', options.maxMessageRate, 0) : DEFAULTS.maxMessageRate,
    authenticateTimeout: positiveInt('authenticateTimeout', options.authenticateTimeout, DEFAULTS.authenticateTimeout),
    maxTopicsPerConnection: positiveInt('maxTopicsPerConnection', options.maxTopicsPerConnection, DEFAULTS.maxTopicsPerConnection),
    maxConnectionsPerAddress: positiveInt('maxConnectionsPerAddress', options.maxConnectionsPerAddress, DEFAULTS.maxConnectionsPerAddress),
    maxPendingPerAddress: positiveInt('maxPendingPerAddress', options.maxPendingPerAddress, DEFAULTS.maxPendingPerAddress),
    trustProxy: resolveTrustProxy(options.trustProxy),
    timing: {
      pingInterval: positiveInt('timing.pingInterval', t.pingInterval, DEFAULTS.pingInterval),
      pongTimeout: positiveInt('timing.pongTimeout', t.pongTimeout, DEFAULTS.pongTimeout),
      writeTimeout: positiveInt('timing.writeTimeout', t.writeTimeout, DEFAULTS.writeTimeout),
      closeTimeout: positiveInt('timing.closeTimeout', t.closeTimeout, DEFAULTS.closeTimeout),
    },
    sendQueue: {
      maxMessages: positiveInt('sendQueue.maxMessages', q.maxMessages, DEFAULTS.sendQueueMessages),
      maxBytes: positiveInt('sendQueue.maxBytes', q.maxBytes, DEFAULTS.sendQueueBytes),
    },
    fairness: {
      share: positiveInt('fairness.share', f.share, DEFAULTS.fairShare),
      turnBudget: positiveInt('fairness.turnBudget', f.turnBudget, DEFAULTS.turnBudget),
      turnTime: positiveInt('fairness.turnTime', f.turnTime, DEFAULTS.turnTime),
      fanOutSlice: positiveInt('fairness.fanOutSlice', f.fanOutSlice, DEFAULTS.fanOutSlice),
    },
    budget:
      b === false
        ? null
        : {
            window: positiveInt('budget.window', b?.window, DEFAULTS.budgetWindow),
            messages: budgetValue('budget.messages', b?.messages, DEFAULTS.budgetMessages),
            bytes: budgetValue('budget.bytes', b?.bytes, DEFAULTS.budgetBytes),
            fanOut: budgetValue('budget.fanOut', b?.fanOut, DEFAULTS.budgetFanOut),
            control: budgetValue('budget.control', b?.control, DEFAULTS.budgetControl),
          },
  };
}
