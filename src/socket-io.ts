/**
 * The per-connection handle that the machine carries as its opaque `io` and
 * hands to its reader and writer actors. Only src/ looks inside.
 */
import type { Duplex } from 'node:stream';
import type WebSocket from 'ws';
import type { TokenBucket } from './rate-limit.ts';
import type { SendQueue } from './writer.ts';

export interface ConnectionStats {
  messagesIn: number;
  bytesIn: number;
}

export interface SocketIO {
  ws: WebSocket;
  /** The raw transport under `ws` (from the upgrade): drain/backpressure signals. */
  socket: Duplex;
  writer: SendQueue;
  stats: ConnectionStats;
  /** Inbound data, straight to the application (never through the machine). */
  onMessage(data: Buffer, isBinary: boolean): void;
  /** R21: the per-connection message rate limit, if one is configured. */
  limiter?: TokenBucket;
  /** A heartbeat round trip was measured (R4), for the RTT histogram. */
  onRtt?(rttMs: number): void;
}
