/**
 * What the reader and writer actors of one connection share: the socket and
 * the connection's counters and callbacks. The server's Connection is one
 * (methods, not per-connection closures); the Node client builds a plain one.
 * The machine carries it only as an opaque `io` (client) or not at all (server).
 */
import type { Duplex } from 'node:stream';
import type WebSocket from 'ws';
import type { TokenBucket } from './rate-limit.ts';
import type { TurnScheduler } from './scheduler.ts';
import type { SendQueue } from './writer.ts';

export interface SocketIO {
  readonly ws: WebSocket;
  /** The raw transport under `ws` (from the upgrade): drain/backpressure signals. */
  readonly socket: Duplex;
  readonly writer: SendQueue;
  /** Inbound messages and payload bytes, counted by the reader. */
  messagesIn: number;
  bytesIn: number;
  /** R21: the per-connection message rate limit, if one is configured. */
  readonly limiter?: TokenBucket | undefined;
  /** Fair scheduling of inbound work: the server's connections have one, the client has none. */
  readonly scheduler?: TurnScheduler | undefined;
  /** Counts an inbound message (`control`: a ping or pong frame) against the connection's budgets; the exceeded budget's close reason, or null. */
  inboundBudget?(bytes: number, control: boolean): string | null;
  /** Inbound data, straight to the application (never through the machine). */
  onMessage(data: Buffer, isBinary: boolean): void;
  /**
   * A frame whose handling costs less than deferring it (a session's ack: a
   * few compares and a trim of the session's buffer, no application code):
   * the reader takes it at once, not deferred, while the connection's own
   * share of the turn lasts, even past the turn's budget (src/server/reader.ts).
   */
  prompt?(data: Buffer, isBinary: boolean): boolean;
  /** A heartbeat round trip was measured (R4). */
  onRtt(rttMs: number): void;
}

/**
 * ws 8.23's `closeTimeout` option (WebSocketServer and client WebSocket alike),
 * missing from @types/ws 8.18: how long ws waits, after a close handshake, for
 * the peer's TCP close before destroying the socket. Its default is 30 s;
 * we pass the connection's closeTimeout (R16).
 */
export interface WsCloseTimeout {
  closeTimeout: number;
}
