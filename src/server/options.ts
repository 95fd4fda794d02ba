/**
 * Every tunable of the supervisor, with its default and the reason for it,
 * named once here (house style: gorilla's constants at the top). docs/options.md
 * is the long form of this file.
 */
import type { IncomingMessage, Server as HttpServer } from 'node:http';
import type { InspectionEvent, Observer } from 'xstate';
import type { Adapter } from '../adapter/types.ts';
import type { Logger } from '../base/logger.ts';
import { positiveInt } from '../base/checks.ts';
import type { Connection } from './connection.ts';
import type { SessionOptions } from './sessions.ts';

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

/** Result of `authenticate`: anything truthy is attached to the connection as `auth`. */
export type AuthenticateHook<Auth = unknown> = (request: IncomingMessage) => Promise<Auth | false | null | undefined> | Auth | false | null | undefined;

/**
 * Called for every inbound message (the hot path: keep it fast). `Auth` is what
 * `authenticate` returns; write `MessageHandler` alone when the handler does not read it.
 */
export type MessageHandler<Auth = unknown> = (connection: Connection<Auth>, data: Buffer, isBinary: boolean) => void;

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
   * absent (and `ws-session=1` is then refused with 400); `{}` turns them on
   * with the defaults (in-memory store, resumeWindow 120000, …).
   */
  sessions?: SessionOptions<Auth>;
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
  timing: Required<TimingOptions>;
  sendQueue: Required<SendQueueOptions>;
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

export function resolveOptions(options: SupervisorOptions<unknown>): ResolvedOptions {
  const t = options.timing ?? {};
  const q = options.sendQueue ?? {};
  let origins: OriginPolicy = options.origins ?? 'same-origin';
  if (Array.isArray(origins)) origins = origins.map(normaliseOrigin);
  else if (origins !== 'same-origin' && origins !== '*') {
    throw new RangeError(`ws-supervisor: option origins must be 'same-origin', '*' or a list, got ${String(origins)}`);
  }
  if (options.path !== undefined && !options.path.startsWith('/')) {
    throw new RangeError(`ws-supervisor: option path must start with "/", got ${JSON.stringify(options.path)}`);
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
  };
}
