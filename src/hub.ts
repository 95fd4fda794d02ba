/**
 * The hub (registry) of live connections, owned by the supervisor: register on
 * open, unregister on close (R3), and a broadcast that never waits on any one
 * connection (R11): it only enqueues into each connection's own send queue.
 */
import type { Connection } from './connection.ts';

export interface BroadcastResult {
  /** Connections whose send queue accepted the message. */
  accepted: number;
  /** Connections that refused it: closing, or over their queue limit (then closed as slow consumers). */
  refused: number;
}

/** Message and byte counts (payloads), in and out. */
export interface Traffic {
  messagesIn: number;
  bytesIn: number;
  messagesOut: number;
  bytesOut: number;
}

export class Hub<Auth = unknown> {
  private readonly live = new Map<string, Connection<Auth>>();
  /**
   * The traffic of every connection unregistered so far: what metrics and
   * the dashboard add to the live connections' counts for totals.
   */
  readonly closedTraffic: Traffic = { messagesIn: 0, bytesIn: 0, messagesOut: 0, bytesOut: 0 };

  register(connection: Connection<Auth>): void {
    this.live.set(connection.id, connection);
  }

  unregister(connection: Connection<Auth>): void {
    if (!this.live.delete(connection.id)) return;
    const s = connection.stats;
    this.closedTraffic.messagesIn += s.messagesIn;
    this.closedTraffic.bytesIn += s.bytesIn;
    this.closedTraffic.messagesOut += s.messagesOut;
    this.closedTraffic.bytesOut += s.bytesOut;
  }

  get size(): number {
    return this.live.size;
  }

  get(id: string): Connection<Auth> | undefined {
    return this.live.get(id);
  }

  /** Live connections (not yet closed), in order of arrival. */
  values(): IterableIterator<Connection<Auth>> {
    return this.live.values();
  }

  [Symbol.iterator](): IterableIterator<Connection<Auth>> {
    return this.live.values();
  }

  /**
   * Sends to every live connection (or those `filter` keeps). A string is
   * encoded once and goes out as a text frame; a Buffer as binary unless
   * `binary` is false.
   */
  broadcast(data: string | Buffer, options: { binary?: boolean; filter?: (c: Connection<Auth>) => boolean } = {}): BroadcastResult {
    const binary = options.binary ?? typeof data !== 'string';
    const payload = typeof data === 'string' ? Buffer.from(data) : data;
    let accepted = 0;
    let refused = 0;
    for (const connection of this.live.values()) {
      if (options.filter && !options.filter(connection)) continue;
      if (connection.send(payload, binary)) accepted++;
      else refused++;
    }
    return { accepted, refused };
  }
}
