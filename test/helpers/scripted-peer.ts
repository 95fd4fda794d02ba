/**
 * Scripted raw WebSocket peers over node:net, for the conformance tests
 * (test/conformance/): each method does on the wire what one model event
 * means, and nothing happens by itself — the client peer never answers a
 * ping or a close frame unless told to, the server script never answers
 * anything it was not told to. Frames are built with test/helpers/raw-ws.ts.
 *
 * Both parsers stream: data frames are counted, not kept (a blocked writer
 * leaves megabytes in flight), control frames are kept with their payload.
 */
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { closePayload, encodeFrame, Opcode } from './raw-ws.ts';

export interface ControlFrame {
  opcode: number;
  payload: Buffer;
  /** performance.now() when it was parsed. */
  at: number;
}

/**
 * Incremental RFC 6455 frame parser. `masked` frames (client → server) are
 * unmasked; data payloads are skipped and only counted.
 */
class FrameStream {
  readonly control: ControlFrame[] = [];
  dataFrames = 0;
  dataBytes = 0;
  private buf: Buffer = Buffer.alloc(0);
  /** Bytes of a data payload still to skip. */
  private skip = 0;

  constructor(private readonly onControl: (f: ControlFrame) => void) {}

  push(chunk: Buffer): void {
    if (this.skip > 0) {
      const n = Math.min(this.skip, chunk.length);
      this.skip -= n;
      this.dataBytes += n;
      chunk = chunk.subarray(n);
      if (chunk.length === 0) return;
    }
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    for (;;) {
      const p = this.buf;
      if (p.length < 2) return;
      const opcode = p[0]! & 0x0f;
      let length = p[1]! & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (p.length < 4) return;
        length = p.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (p.length < 10) return;
        length = Number(p.readBigUInt64BE(2));
        offset = 10;
      }
      const masked = (p[1]! & 0x80) !== 0;
      const key = masked ? p.subarray(offset, offset + 4) : null;
      if (masked) offset += 4;
      if (p.length < offset) return;
      if (opcode < 0x8) {
        // Data frame: count it, skip its payload (possibly across chunks).
        this.dataFrames++;
        const here = Math.min(length, p.length - offset);
        this.dataBytes += here;
        this.skip = length - here;
        this.buf = p.subarray(offset + here);
        if (this.skip > 0) return;
        continue;
      }
      if (p.length < offset + length) return;
      const payload = Buffer.from(p.subarray(offset, offset + length));
      if (key) for (let i = 0; i < payload.length; i++) payload[i] = payload[i]! ^ key[i & 3]!;
      this.buf = p.subarray(offset + length);
      const frame = { opcode, payload, at: performance.now() };
      this.control.push(frame);
      this.onControl(frame);
    }
  }
}

export interface CloseFrame {
  code: number | null;
  reason: string;
  at: number;
}

function closeOf(f: ControlFrame): CloseFrame {
  return { code: f.payload.length >= 2 ? f.payload.readUInt16BE(0) : null, reason: f.payload.subarray(2).toString(), at: f.at };
}

/**
 * A client-side peer of the server under test. Passive: it reads (unless
 * paused) and records, and only sends what it is told to.
 */
export class ScriptedClientPeer {
  private readonly frames: FrameStream;
  /** Resolves when the TCP socket is fully closed. */
  readonly closed: Promise<void>;
  /** performance.now() when the socket closed; null while open. */
  closedAt: number | null = null;
  /** The server sent FIN. */
  ended = false;
  private waiters: Array<() => void> = [];

  private constructor(
    readonly socket: net.Socket,
    leftover: Buffer,
  ) {
    this.frames = new FrameStream(() => this.wake());
    socket.on('error', () => {}); // a reset by the server is an outcome here, not a crash
    socket.on('end', () => {
      this.ended = true;
      this.wake();
    });
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.closedAt = performance.now();
        this.wake();
        resolve();
      }),
    );
    socket.on('data', (chunk: Buffer) => this.frames.push(chunk));
    if (leftover.length > 0) this.frames.push(leftover);
  }

  /** Upgrades a fresh TCP connection to `ws://127.0.0.1:port/path`; throws unless the server answers 101. */
  static connect(port: number, path: string, timeoutMs = 5000): Promise<ScriptedClientPeer> {
    return new Promise((resolve, reject) => {
      // allowHalfOpen: the server's FIN does not make this peer close; it closes only when told to.
      const socket = net.connect({ port, host: '127.0.0.1', noDelay: true, allowHalfOpen: true });
      let buf = Buffer.alloc(0);
      const timer = setTimeout(() => fail(new Error(`scripted peer: no upgrade reply within ${timeoutMs} ms`)), timeoutMs);
      const fail = (err: Error): void => {
        clearTimeout(timer);
        socket.destroy();
        reject(err);
      };
      const onData = (chunk: Buffer): void => {
        buf = Buffer.concat([buf, chunk]);
        const end = buf.indexOf('\r\n\r\n');
        if (end === -1) return;
        const status = buf.subarray(0, end).toString('latin1').split('\r\n')[0] ?? '';
        if (!/^HTTP\/1\.1 101 /.test(status)) return fail(new Error(`scripted peer: upgrade refused: ${status}`));
        clearTimeout(timer);
        socket.off('data', onData);
        socket.off('error', fail);
        resolve(new ScriptedClientPeer(socket, buf.subarray(end + 4)));
      };
      socket.on('data', onData);
      socket.on('error', fail);
      socket.write(
        `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
  }

  /** Ping payloads the server sent, in order. */
  get pings(): Buffer[] {
    return this.frames.control.filter((f) => f.opcode === Opcode.PING).map((f) => f.payload);
  }

  /** Close frames the server sent, in order. */
  get closeFrames(): CloseFrame[] {
    return this.frames.control.filter((f) => f.opcode === Opcode.CLOSE).map(closeOf);
  }

  get dataFrames(): number {
    return this.frames.dataFrames;
  }

  get dataBytes(): number {
    return this.frames.dataBytes;
  }

  /** Bytes this peer has handed to the kernel (compare with the server socket's bytesRead). */
  get bytesWritten(): number {
    return this.socket.bytesWritten;
  }

  get isOpen(): boolean {
    return !this.socket.destroyed;
  }

  private write(bytes: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(bytes);
  }

  /** Answers the server's latest ping: a pong echoing its payload (RFC 6455 §5.5.3). */
  answerPing(): void {
    const ping = this.pings.at(-1);
    if (ping === undefined) throw new Error('scripted peer: no ping to answer');
    this.write(encodeFrame({ opcode: Opcode.PONG, payload: ping }));
  }

  /** An unsolicited pong (a unidirectional heartbeat, RFC 6455 §5.5.3) with a payload that is no ping of the server's. */
  unsolicitedPong(): void {
    this.write(encodeFrame({ opcode: Opcode.PONG, payload: 'unsolicited' }));
  }

  /** One text message. */
  text(data: string): void {
    this.write(encodeFrame({ opcode: Opcode.TEXT, payload: data }));
  }

  /** A text frame that is not UTF-8 (R15: the server must close 1007). */
  invalidUtf8(): void {
    this.write(encodeFrame({ opcode: Opcode.TEXT, payload: Buffer.from([0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80]) }));
  }

  /** `n` small messages in one write (R21: over the message rate). */
  flood(n: number): void {
    this.write(Buffer.concat(Array.from({ length: n }, (_, i) => encodeFrame({ opcode: Opcode.TEXT, payload: `flood ${i}` }))));
  }

  /** Sends a close frame and ends our half of TCP; keeps reading to the end, as a closing client does. */
  close(code: number, reason: string): void {
    this.write(encodeFrame({ opcode: Opcode.CLOSE, payload: closePayload(code, reason) }));
    this.socket.end();
    this.resume();
  }

  /**
   * Sends a close frame and nothing else: TCP stays open (R16: a peer that
   * starts or answers the close handshake and never closes its side).
   */
  sendClose(code: number, reason: string): void {
    this.write(encodeFrame({ opcode: Opcode.CLOSE, payload: closePayload(code, reason) }));
  }

  /** Ends our half of TCP (after a close frame sent earlier) and reads to the end. */
  end(): void {
    this.socket.end();
    this.resume();
  }

  /** Cuts TCP without a close frame. */
  cut(): void {
    this.socket.destroy();
  }

  /** Stops reading: the kernel buffers fill and the server's writes block. */
  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  get isPaused(): boolean {
    return this.socket.isPaused();
  }

  /** Resolves when `condition` holds (checked on every frame, FIN and close), or throws after `timeoutMs`. */
  async waitFor(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (!condition()) {
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`scripted peer: timed out after ${timeoutMs} ms waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, Math.min(left, 20));
        function done(): void {
          clearTimeout(timer);
          resolve();
        }
        this.waiters.push(done);
      });
    }
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}

// ---------------------------------------------------------------------------
// The server side: a scripted WebSocket server for the client under test

/** What the scripted server does with the next upgrade request. */
export type UpgradeScript =
  | { kind: 'accept' }
  /** Answer the upgrade with this HTTP status (and body: default names the script). */
  | { kind: 'refuse'; status: number; body?: string }
  /** Accept TCP, read the request, never answer (a connect timeout). */
  | { kind: 'hang' };

/** One accepted (101) connection of the scripted server. */
export class ScriptedServerConnection {
  private readonly frames: FrameStream;
  readonly closed: Promise<void>;
  closedAt: number | null = null;

  constructor(readonly socket: net.Socket) {
    this.frames = new FrameStream(() => undefined);
    socket.on('error', () => {});
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.closedAt = performance.now();
        resolve();
      }),
    );
  }

  push(chunk: Buffer): void {
    this.frames.push(chunk);
  }

  /** Close frames the client sent. */
  get closeFrames(): CloseFrame[] {
    return this.frames.control.filter((f) => f.opcode === Opcode.CLOSE).map(closeOf);
  }

  /** Ping payloads the client sent, in order. */
  get pings(): Buffer[] {
    return this.frames.control.filter((f) => f.opcode === Opcode.PING).map((f) => f.payload);
  }

  /** Data frames (text or binary) the client sent: counted, not kept. */
  get dataFrames(): number {
    return this.frames.dataFrames;
  }

  /** Sends one text frame. */
  sendText(text: string): void {
    this.write(Opcode.TEXT, Buffer.from(text));
  }

  private write(opcode: number, payload: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(encodeFrame({ opcode, payload, mask: false }));
  }

  /** Starts a close handshake: a close frame with `code`, then waits for the client's. */
  sendClose(code: number, reason: string): void {
    this.write(Opcode.CLOSE, closePayload(code, reason));
  }

  /** Answers the client's close frame: echoes its code (RFC 6455 §5.5.1) and closes TCP. */
  answerClose(): void {
    const theirs = this.closeFrames[0];
    this.write(Opcode.CLOSE, theirs?.code == null ? Buffer.alloc(0) : closePayload(theirs.code));
    this.socket.end();
  }

  /** Cuts TCP without a close frame. */
  cut(): void {
    this.socket.destroy();
  }
}

/**
 * A scripted WebSocket server on 127.0.0.1: each upgrade request is handled
 * by the next script in `scripts` (default: accept). It answers pings with
 * pongs (a live server) and nothing else by itself.
 */
export class ScriptedServer {
  readonly scripts: UpgradeScript[] = [];
  readonly connections: ScriptedServerConnection[] = [];
  /** Every TCP connection it accepted, upgraded or not (for the release check). */
  readonly sockets = new Set<net.Socket>();
  requests = 0;
  private readonly server: net.Server;
  private waiters: Array<() => void> = [];

  private constructor() {
    this.server = net.createServer({ noDelay: true }, (socket) => this.accept(socket));
  }

  static async start(): Promise<ScriptedServer> {
    const s = new ScriptedServer();
    await new Promise<void>((resolve) => s.server.listen(0, '127.0.0.1', resolve));
    return s;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  /** Sockets still open. */
  get openSockets(): number {
    return [...this.sockets].filter((s) => !s.destroyed).length;
  }

  async waitFor(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (!condition()) {
      if (performance.now() > deadline) throw new Error(`scripted server: timed out after ${timeoutMs} ms waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, 10);
        function done(): void {
          clearTimeout(timer);
          resolve();
        }
        this.waiters.push(done);
      });
    }
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  private accept(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => this.wake());
    let buf = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) return;
      socket.off('data', onData);
      this.requests++;
      const script = this.scripts.shift() ?? { kind: 'accept' };
      const head = buf.subarray(0, end).toString('latin1');
      const key = /^sec-websocket-key:\s*(.+)$/im.exec(head)?.[1]?.trim() ?? '';
      if (script.kind === 'hang') {
        socket.resume(); // read and drop: a server that never answers
      } else if (script.kind === 'refuse') {
        const body = script.body ?? `refused by script (${script.status})`;
        socket.end(`HTTP/1.1 ${script.status} Refused\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
      } else {
        const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
        socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
        const conn = new ScriptedServerConnection(socket);
        this.connections.push(conn);
        socket.on('data', (chunk: Buffer) => {
          const pingsBefore = conn.pings.length;
          conn.push(chunk);
          // A live server answers pings, echoing their payload (the client's heartbeat, R4/R7).
          for (const payload of conn.pings.slice(pingsBefore)) socket.write(encodeFrame({ opcode: Opcode.PONG, payload, mask: false }));
          this.wake();
        });
        const rest = buf.subarray(end + 4);
        if (rest.length > 0) conn.push(rest);
      }
      this.wake();
    };
    socket.on('data', onData);
  }
}

/**
 * How long this process takes, now, to move `bytes` over a loopback TCP
 * connection whose both ends it hosts (as the conformance tests host the
 * server and the scripted peer), the sender writing 256 KiB at a time as the
 * socket drains (as the writer does): the median of `runs` transfers after
 * one discarded warm-up (the first one pays for compiling and growing the
 * kernel's buffers), ms. A drain of a paused peer's backlog is such a
 * transfer, so this is what a bulk step costs at the machine's present load.
 */
export async function measureLoopbackMs(bytes: number, runs = 3): Promise<number> {
  const chunk = Buffer.alloc(256 << 10, 0x61);
  const times: number[] = [];
  for (let r = 0; r <= runs; r++) {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as net.AddressInfo;
    server.on('connection', (s) => {
      s.on('error', () => {});
      let sent = 0;
      const pump = (): void => {
        while (sent < bytes && !s.destroyed) {
          sent += chunk.length;
          if (!s.write(chunk)) return void s.once('drain', pump);
        }
      };
      pump();
    });
    const t0 = performance.now();
    await new Promise<void>((resolve, reject) => {
      const c = net.connect(port, '127.0.0.1');
      let got = 0;
      c.on('error', reject);
      c.on('data', (d: Buffer) => {
        got += d.length;
        if (got >= bytes) {
          c.destroy();
          resolve();
        }
      });
    });
    if (r > 0) times.push(performance.now() - t0);
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  return times.sort((a, b) => a - b)[runs >> 1]!;
}
