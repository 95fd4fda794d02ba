/**
 * A TCP proxy that can freeze one connection: it stops forwarding in both
 * directions but keeps both sockets open and keeps reading (and discarding)
 * what arrives, so the server sees a peer that is there but silent (a frozen
 * tab, a half-open path) and the proxy sees the moment the server closes.
 */
import net from 'node:net';

export interface ProxiedConnection {
  /** performance.now() when frozen; null while live. */
  frozenAt: number | null;
  /** performance.now() when the server side closed (FIN, RST or error); null while open. */
  serverClosedAt: number | null;
  /** performance.now() when a WebSocket close frame from the server arrived; null if none. */
  serverCloseFrameAt: number | null;
  /** The earlier of serverCloseFrameAt and serverClosedAt: when the server gave the connection up. */
  readonly serverGaveUpAt: number | null;
  /** performance.now() when the client side closed; null while open. */
  clientClosedAt: number | null;
  freeze(): void;
}

export interface FreezeProxy {
  port: number;
  /** Connections in accept order. */
  connections: ProxiedConnection[];
  /** Resolves with the next accepted connection. */
  nextConnection(): Promise<ProxiedConnection>;
  close(): Promise<void>;
}

export async function startFreezeProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<FreezeProxy> {
  const connections: ProxiedConnection[] = [];
  const waiters: Array<(c: ProxiedConnection) => void> = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ noDelay: true }, (client) => {
    const upstream = net.connect({ port: targetPort, host: targetHost, noDelay: true });
    sockets.add(client);
    sockets.add(upstream);
    const conn: ProxiedConnection = {
      frozenAt: null,
      serverClosedAt: null,
      serverCloseFrameAt: null,
      get serverGaveUpAt() {
        const xs = [conn.serverClosedAt, conn.serverCloseFrameAt].filter((x): x is number => x !== null);
        return xs.length ? Math.min(...xs) : null;
      },
      clientClosedAt: null,
      freeze() {
        if (conn.frozenAt === null) conn.frozenAt = performance.now();
      },
    };
    const live = (): boolean => conn.frozenAt === null;
    client.on('data', (d) => {
      if (live()) upstream.write(d);
    });
    const frames = new ServerFrameScanner(() => (conn.serverCloseFrameAt ??= performance.now()));
    upstream.on('data', (d: Buffer) => {
      frames.push(d);
      if (live()) client.write(d);
    });
    const serverGone = (): void => {
      conn.serverClosedAt ??= performance.now();
      if (live()) client.end();
    };
    const clientGone = (): void => {
      conn.clientClosedAt ??= performance.now();
      if (live()) upstream.end();
    };
    upstream.on('end', serverGone);
    upstream.on('close', serverGone);
    upstream.on('error', serverGone);
    client.on('end', clientGone);
    client.on('close', clientGone);
    client.on('error', clientGone);
    upstream.on('close', () => sockets.delete(upstream));
    client.on('close', () => sockets.delete(client));
    connections.push(conn);
    const w = waiters.shift();
    if (w) w(conn);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  let accepted = 0;
  return {
    port: (server.address() as net.AddressInfo).port,
    connections,
    nextConnection() {
      const i = accepted++;
      if (connections[i]) return Promise.resolve(connections[i]!);
      return new Promise((r) => waiters.push(r));
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

/**
 * Follows the server → client byte stream (HTTP 101 response, then unmasked
 * RFC 6455 frames) just far enough to notice a close frame (opcode 0x8): a
 * server may give a connection up with a close handshake that the frozen
 * peer never answers, long before it drops the TCP connection.
 */
class ServerFrameScanner {
  private buf: Buffer = Buffer.alloc(0);
  private upgraded = false;
  private done = false;
  constructor(private readonly onClose: () => void) {}

  push(chunk: Buffer): void {
    if (this.done) return;
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    if (!this.upgraded) {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end === -1) return;
      this.upgraded = true;
      this.buf = this.buf.subarray(end + 4);
    }
    for (;;) {
      if (this.buf.length < 2) return;
      const opcode = this.buf[0]! & 0x0f;
      let len = this.buf[1]! & 0x7f;
      let header = 2;
      if (len === 126) {
        if (this.buf.length < 4) return;
        len = this.buf.readUInt16BE(2);
        header = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) return;
        len = Number(this.buf.readBigUInt64BE(2));
        header = 10;
      }
      if (this.buf[1]! & 0x80) header += 4; // masked (not expected from a server)
      if (opcode === 0x8) {
        this.done = true;
        this.onClose();
        return;
      }
      if (this.buf.length < header + len) return;
      this.buf = this.buf.subarray(header + len);
    }
  }
}
