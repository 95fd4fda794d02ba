/**
 * A deliberately minimal WebSocket client over node:net, for hostile tests:
 * it performs the HTTP upgrade by hand (any headers, or none), reports the
 * status line/headers/body of a refusal, and after a 101 sends hand-built
 * frames (masked or not, any opcode, RSV bits, lying lengths, raw garbage)
 * and parses the server's frames (unmasked, per RFC 6455 §5.2).
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { pace } from './pace.ts';

export interface HttpReply {
  status: number;
  statusLine: string;
  /** Header names lower-cased. */
  headers: Record<string, string>;
  body: string;
}

export interface RawUpgradeOptions {
  /** Request target. Default '/server' (the fixtures' endpoint). */
  path?: string;
  /** Request method. Default 'GET' (the only one a handshake may use). */
  method?: string;
  /**
   * Extra or overriding request headers (names matched case-insensitively).
   * A null value removes a default header (e.g. `'Sec-WebSocket-Key': null`).
   */
  headers?: Record<string, string | null>;
  /** Give up after this long on an idle machine (scaled by the measured pace, test/helpers/pace.ts). Default 3000 ms. */
  timeoutMs?: number;
  /**
   * Keep our half of TCP open after the server's FIN (a peer that never closes
   * its side). Default false: like most clients, answer the FIN with ours.
   */
  allowHalfOpen?: boolean;
}

/** One frame as the server sent it. */
export interface Frame {
  fin: boolean;
  rsv: number;
  opcode: number;
  payload: Buffer;
}

/** A frame to send. Defaults: fin true, mask true, no RSV bits, empty payload. */
export interface FrameSpec {
  opcode: number;
  payload?: Buffer | string;
  fin?: boolean;
  /** RSV1..3 as a 3-bit number (4 = RSV1). */
  rsv?: number;
  mask?: boolean;
  /** Put this length in the header instead of the real one (a lying length). */
  declaredLength?: number;
}

export const Opcode = { CONTINUATION: 0x0, TEXT: 0x1, BINARY: 0x2, CLOSE: 0x8, PING: 0x9, PONG: 0xa } as const;

/** Encodes one client frame. */
export function encodeFrame(spec: FrameSpec): Buffer {
  const payload = typeof spec.payload === 'string' ? Buffer.from(spec.payload) : (spec.payload ?? Buffer.alloc(0));
  const mask = spec.mask ?? true;
  const length = spec.declaredLength ?? payload.length;
  const b0 = ((spec.fin ?? true) ? 0x80 : 0) | ((spec.rsv ?? 0) << 4) | (spec.opcode & 0x0f);
  let header: Buffer;
  if (length < 126) {
    header = Buffer.from([b0, length]);
  } else if (length < 65536) {
    header = Buffer.alloc(4);
    header[0] = b0;
    header[1] = 126;
    header.writeUInt16BE(length, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = b0;
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(length), 2);
  }
  if (!mask) return Buffer.concat([header, payload]);
  header[1] = header[1]! | 0x80;
  const key = randomBytes(4);
  const masked = Buffer.from(payload);
  for (let i = 0; i < masked.length; i++) masked[i] = masked[i]! ^ key[i & 3]!;
  return Buffer.concat([header, key, masked]);
}

/** A close frame payload: 2-byte code + UTF-8 reason. */
export function closePayload(code: number, reason = ''): Buffer {
  const b = Buffer.alloc(2 + Buffer.byteLength(reason));
  b.writeUInt16BE(code, 0);
  b.write(reason, 2);
  return b;
}

/** Sends a hand-written upgrade request; resolves with the reply and, on 101, an open RawWs. */
export function rawUpgrade(port: number, options: RawUpgradeOptions = {}): Promise<{ reply: HttpReply; ws: RawWs | null }> {
  const timeoutMs = pace.scaled(options.timeoutMs ?? 3000);
  const defaults: Record<string, string> = {
    Host: `127.0.0.1:${port}`,
    Upgrade: 'websocket',
    Connection: 'Upgrade',
    'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
    'Sec-WebSocket-Version': '13',
  };
  const headers = new Map<string, [string, string]>();
  for (const [k, v] of Object.entries(defaults)) headers.set(k.toLowerCase(), [k, v]);
  for (const [k, v] of Object.entries(options.headers ?? {})) {
    if (v === null) headers.delete(k.toLowerCase());
    else headers.set(k.toLowerCase(), [k, v]);
  }
  const request =
    `${options.method ?? 'GET'} ${options.path ?? '/server'} HTTP/1.1\r\n` +
    [...headers.values()].map(([k, v]) => `${k}: ${v}\r\n`).join('') +
    '\r\n';

  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: options.allowHalfOpen ?? false });
    let buffered = Buffer.alloc(0);
    let reply: HttpReply | null = null;
    const timer = setTimeout(() => fail(new Error(`raw upgrade: no complete reply within ${timeoutMs} ms`)), timeoutMs);
    const fail = (err: Error): void => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    const finishRefusal = (): void => {
      clearTimeout(timer);
      socket.destroy();
      reply!.body = buffered.toString();
      resolve({ reply: reply!, ws: null });
    };
    const onData = (chunk: Buffer): void => {
      buffered = Buffer.concat([buffered, chunk]);
      if (!reply) {
        const end = buffered.indexOf('\r\n\r\n');
        if (end === -1) return;
        const [statusLine = '', ...lines] = buffered.subarray(0, end).toString('latin1').split('\r\n');
        const parsed: Record<string, string> = {};
        for (const line of lines) {
          const colon = line.indexOf(':');
          parsed[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
        }
        reply = { status: Number(statusLine.split(' ')[1]), statusLine, headers: parsed, body: '' };
        buffered = buffered.subarray(end + 4);
        if (reply.status === 101) {
          clearTimeout(timer);
          socket.off('data', onData);
          socket.off('error', fail);
          socket.off('close', onClose);
          resolve({ reply, ws: new RawWs(socket, buffered) });
          return;
        }
      }
      const length = Number(reply.headers['content-length'] ?? NaN);
      if (buffered.length >= length) finishRefusal();
    };
    const onClose = (): void => (reply ? finishRefusal() : fail(new Error('raw upgrade: socket closed before a reply')));
    socket.on('data', onData);
    socket.on('error', fail);
    socket.on('close', onClose);
    socket.write(request);
  });
}

/** Connects and expects a 101; throws with the reply otherwise. */
export async function rawConnect(port: number, options: RawUpgradeOptions = {}): Promise<RawWs> {
  const { reply, ws } = await rawUpgrade(port, options);
  if (!ws) throw new Error(`raw upgrade refused: ${reply.statusLine} ${reply.body}`);
  return ws;
}

/** An upgraded raw connection. */
export class RawWs {
  /** Frames received so far, in order. */
  readonly frames: Frame[] = [];
  /** Resolves when the TCP socket is closed (either side). */
  readonly closed: Promise<void>;
  /** Set when the TCP socket emits 'end' (the server sent FIN). */
  ended = false;
  private pending: Buffer = Buffer.alloc(0);
  private waiters: Array<() => void> = [];

  constructor(
    readonly socket: net.Socket,
    leftover: Buffer,
  ) {
    // A reset from the server is an expected outcome in these tests, not a crash.
    socket.on('error', () => {});
    socket.on('end', () => {
      this.ended = true;
      this.wake();
    });
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    void this.closed.then(() => this.wake());
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    if (leftover.length > 0) this.onData(leftover);
  }

  send(spec: FrameSpec): boolean {
    return this.sendRaw(encodeFrame(spec));
  }

  /** Writes bytes as they are (garbage, partial frames). */
  sendRaw(bytes: Buffer): boolean {
    if (this.socket.destroyed) return false;
    return this.socket.write(bytes);
  }

  /** Writes bytes as they are and resolves once the socket has taken them (after 'drain' if it pushed back). */
  write(bytes: Buffer): Promise<void> {
    if (this.socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => (this.socket.write(bytes) ? resolve() : this.socket.once('drain', () => resolve())));
  }

  /** The text frames received so far, decoded. */
  get texts(): string[] {
    return this.frames.filter((f) => f.opcode === Opcode.TEXT).map((f) => f.payload.toString());
  }

  /** The first close frame received so far (code null if empty), or null. */
  get closeReceived(): { code: number | null; reason: string } | null {
    const f = this.frames.find((x) => x.opcode === Opcode.CLOSE);
    return f ? { code: f.payload.length >= 2 ? f.payload.readUInt16BE(0) : null, reason: f.payload.subarray(2).toString() } : null;
  }

  /** Stops reading: the kernel buffers fill and the server's writes block. */
  stopReading(): void {
    this.socket.pause();
  }

  /** The first close frame from the server: its code (null if empty) and reason; or null if the socket closed without one. */
  async closeFrame(timeoutMs = 3000): Promise<{ code: number | null; reason: string } | null> {
    const frame = await this.waitForFrame((f) => f.opcode === Opcode.CLOSE, timeoutMs);
    if (!frame) return null;
    return {
      code: frame.payload.length >= 2 ? frame.payload.readUInt16BE(0) : null,
      reason: frame.payload.subarray(2).toString(),
    };
  }

  /**
   * Finishes the closing handshake from our side after the server's close
   * frame: echo its code (masked, as a client must) and end our half of TCP.
   */
  answerClose(code: number | null): void {
    if (this.socket.destroyed) return;
    this.send({ opcode: Opcode.CLOSE, payload: code === null ? Buffer.alloc(0) : closePayload(code) });
    this.socket.end();
  }

  /**
   * Waits for a received frame matching `match`; null if the socket ends first.
   * Throws after timeoutMs of an idle machine, scaled by the measured pace.
   */
  async waitForFrame(match: (f: Frame) => boolean, idleTimeoutMs = 3000): Promise<Frame | null> {
    const timeoutMs = pace.scaled(idleTimeoutMs);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.frames.find(match);
      if (found) return found;
      if (this.ended || this.socket.destroyed) return null;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`raw ws: no matching frame within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, left);
        function done(): void {
          clearTimeout(timer);
          resolve();
        }
        this.waiters.push(done);
      });
    }
  }

  /** RST instead of FIN (Node ≥ 16.17). */
  reset(): void {
    if (!this.socket.destroyed) this.socket.resetAndDestroy();
  }

  destroy(): void {
    this.socket.destroy();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  private onData(chunk: Buffer): void {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    for (;;) {
      const frame = this.parseOne();
      if (!frame) break;
      this.frames.push(frame);
    }
    this.wake();
  }

  /** Parses one unmasked server frame off `pending`, or returns null if incomplete. */
  private parseOne(): Frame | null {
    const p = this.pending;
    if (p.length < 2) return null;
    let length = p[1]! & 0x7f;
    let offset = 2;
    if (length === 126) {
      if (p.length < 4) return null;
      length = p.readUInt16BE(2);
      offset = 4;
    } else if (length === 127) {
      if (p.length < 10) return null;
      length = Number(p.readBigUInt64BE(2));
      offset = 10;
    }
    if (p[1]! & 0x80) offset += 4; // a masked server frame is a server bug; skip the key
    if (p.length < offset + length) return null;
    const frame: Frame = {
      fin: (p[0]! & 0x80) !== 0,
      rsv: (p[0]! >> 4) & 0x07,
      opcode: p[0]! & 0x0f,
      payload: Buffer.from(p.subarray(offset, offset + length)),
    };
    this.pending = p.subarray(offset + length);
    return frame;
  }
}
