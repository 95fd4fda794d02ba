/**
 * A load client that speaks the session protocol (docs/sessions.md, "The
 * protocol") on a plain `ws` socket: the benchmark's stand-in for the Node
 * client's `session: true`, light enough to hold 10k of them in the load
 * process (the Node client runs an XState actor per connection, which would
 * make the load generator, not the server, the thing measured).
 *
 * It does what the real clients do, with the same defaults:
 *   - upgrade with `?ws-session=1`, first frame `open` (or `resume` with the
 *     last seq received and the epoch), wait for `attached`;
 *   - requests go out as `<cseq>:<payload>`, kept until the server acks their
 *     cseq; after a resume, the ones after `attached.cseq` are re-sent in order;
 *   - data frames `<seq>:<payload>`: a seq already received is dropped (counted),
 *     a skipped seq is an integrity failure (counted as a gap);
 *   - cumulative acks every 32 data frames (the first after a random 1…32, so
 *     clients that get the same broadcasts do not all ack after the same one)
 *     or within 5 s of the first unacknowledged one, at the next tick of the
 *     client's own 5 s ack clock (its phase random, likewise; client options
 *     `session.ackEvery` / `ackDelay` of src/client/client.ts, `scheduleAck`);
 *     a due ack rides the next request, ack frame then request in one socket
 *     write (cork), or goes alone at its bound: the end of the turn when due by
 *     count, the clock's tick when due by time (due from half a period before
 *     it), as the Node client does.
 *
 * It implements BenchClient (send / onMessage see the payloads only), so the
 * scenarios' request/response and broadcast loops run on it unchanged.
 */
import type { Socket } from 'node:net';
import WebSocket from 'ws';
import { decodeServerFrame, encodeClientAck, encodeOpen, encodeResume } from '../../src/protocol/session.ts';
import { CLIENT_DEFAULTS } from '../../src/client/client.ts';
import type { BenchClient } from './harness.ts';

/** The Node client's defaults, so the stand-in cannot drift from them. */
export const ACK_EVERY = CLIENT_DEFAULTS.session.ackEvery;
export const ACK_DELAY_MS = CLIENT_DEFAULTS.session.ackDelay;
/** The ack delay in use: ACK_DELAY_MS, unless WS_SUP_BENCH_ACK_DELAY says otherwise (bench/instructions.ts --sessions). */
const ackDelayMs = (): number => Number(process.env.WS_SUP_BENCH_ACK_DELAY ?? ACK_DELAY_MS);

export interface AttachInfo {
  resumed: boolean;
  reason?: string;
  detail?: string;
  /** Messages the server said it replays (`attached.replay`). */
  replay: number;
  /** Requests re-sent after it. */
  resent: number;
}

export interface SessionCounters {
  /** Data frames delivered (new seqs). */
  delivered: number;
  /** Data frames whose seq had already been received (dropped, as the real client does). */
  duplicatesDropped: number;
  /** Skipped seqs: messages lost (an integrity failure). */
  gaps: number;
  /** Frames that are not of the session protocol, or `error` frames. */
  protocolErrors: number;
  /** `duplicate` answers from the server (a re-sent request that had already run). */
  duplicateAnswers: number;
}

export class SessionClient implements BenchClient {
  raw!: WebSocket;
  id = '';
  private token = '';
  private epoch = '';
  /** Last seq received. */
  lastSeq = 0;
  private acked = 0;
  /** The seq whose arrival makes the next ack due: ACK_EVERY after the last, the first at random (as the Node client). */
  private ackAt = firstAckAt();
  private ackTimer: NodeJS.Timeout | null = null;
  /** An ack is due (0 no, 1 by time, 2 by count): it rides the next request, or goes alone when `ackTimer` fires. */
  private ackDue = 0;
  /** When an ack last rode a request: one ride per half period before a tick (as the Node client). */
  private lastRideAt = -Infinity;
  /** The phase of this client's ack clock, ms in [0, ack delay): its time-due acks go at its ticks (as the Node client). */
  private readonly ackPhase = Math.random() * ackDelayMs();
  private cseq = 0;
  /** Requests not yet acknowledged by the server, in cseq order. */
  private readonly unacked: Array<{ cseq: number; text: string }> = [];
  private handler: (text: string) => void = () => undefined;
  private closeHandler: () => void = () => undefined;
  private attached: ((info: AttachInfo) => void) | null = null;
  private attachFailed: ((err: Error) => void) | null = null;
  /** `attached` received on the current connection: requests may go out. */
  private isAttached = false;
  /** How the last attached connection closed (1006 with no reason for a cut). */
  lastClose: { code: number; reason: string } | null = null;
  readonly counters: SessionCounters = { delivered: 0, duplicatesDropped: 0, gaps: 0, protocolErrors: 0, duplicateAnswers: 0 };

  constructor(
    readonly url: string,
    private readonly localAddress?: string,
  ) {}

  /** Opens a new session (or, with `resume`, continues this one) and resolves with the `attached` answer. */
  connect(resume = false): Promise<AttachInfo> {
    this.isAttached = false;
    const url = this.url + (this.url.includes('?') ? '&' : '?') + 'ws-session=1';
    const ws = new WebSocket(url, { perMessageDeflate: false, ...(this.localAddress ? { localAddress: this.localAddress } : {}) });
    this.raw = ws;
    ws.on('message', (data: Buffer, isBinary: boolean) => this.onFrame(ws, data, isBinary));
    ws.on('error', () => undefined);
    return new Promise<AttachInfo>((resolve, reject) => {
      this.attached = resolve;
      this.attachFailed = reject;
      ws.once('open', () => ws.send(resume && this.id ? encodeResume({ id: this.id, token: this.token, lastSeq: this.lastSeq, epoch: this.epoch }) : encodeOpen()));
      ws.once('close', (code: number, reason: Buffer) => {
        this.stopAckTimer();
        if (this.attached) {
          // Never attached: the caller's promise says so (the close handler is for attached connections).
          this.attached = null;
          reject(new Error(`closed before attached (${code}${reason.length ? ` ${reason.toString()}` : ''})`));
        } else if (ws === this.raw) {
          this.lastClose = { code, reason: reason.toString() };
          this.closeHandler();
        }
      });
    });
  }

  private onFrame(ws: WebSocket, data: Buffer, isBinary: boolean): void {
    if (ws !== this.raw) return; // a frame from a connection we already left
    // A data frame's `<seq>:` is read from the bytes and only the payload decoded (one string, as a plain client's
    // `data.toString()`): this process is the load generator of 10k clients, and its cost per message is in every
    // broadcast latency it measures. Anything else (a control frame, a malformed header) goes through the codec.
    let seq = 0;
    let i = 0;
    for (; i < data.length && i <= 16; i++) {
      const c = data[i]!;
      if (c < 0x30 || c > 0x39 || (i === 0 && c === 0x30)) break;
      seq = seq * 10 + (c - 0x30);
    }
    if (i > 0 && i < data.length && data[i] === 0x3a && Number.isSafeInteger(seq)) return this.onData(seq, data.toString('utf8', i + 1));
    const f = decodeServerFrame(isBinary ? data : data.toString(), isBinary);
    switch (f.kind) {
      case 'data':
        return this.onData(f.seq, typeof f.payload === 'string' ? f.payload : Buffer.from(f.payload).toString());
      case 'attached': {
        const wasResume = this.id !== '';
        this.id = f.id;
        this.token = f.token;
        this.epoch = f.epoch;
        if (!f.resumed) {
          // A new session: seqs start over; requests of the old one are lost (a failed resume reports them).
          this.lastSeq = 0;
          this.acked = 0;
          this.ackAt = firstAckAt();
          this.unacked.length = 0;
          this.cseq = 0;
        }
        // Requests the server has run are forgotten; the rest go again, in order.
        while (this.unacked.length > 0 && this.unacked[0]!.cseq <= f.cseq) this.unacked.shift();
        for (const r of this.unacked) ws.send(`${r.cseq}:${r.text}`);
        this.isAttached = true;
        const info: AttachInfo = { resumed: f.resumed, replay: f.replay, resent: this.unacked.length };
        if (f.reason !== undefined) info.reason = f.reason;
        if (f.detail !== undefined) info.detail = f.detail;
        if (wasResume && !f.resumed && f.reason === undefined) this.counters.protocolErrors++;
        const done = this.attached;
        this.attached = null;
        done?.(info);
        return;
      }
      case 'ack':
        while (this.unacked.length > 0 && this.unacked[0]!.cseq <= f.cseq) this.unacked.shift();
        return;
      case 'duplicate':
        this.counters.duplicateAnswers++;
        return;
      case 'pong':
        return;
      default:
        this.counters.protocolErrors++;
        if (this.attached) {
          const fail = this.attachFailed;
          this.attached = null;
          fail?.(new Error(`not a session answer: ${f.error}`));
        }
    }
  }

  private onData(seq: number, payload: string): void {
    if (seq <= this.lastSeq) {
      this.counters.duplicatesDropped++;
      return;
    }
    if (seq !== this.lastSeq + 1) this.counters.gaps += seq - this.lastSeq - 1;
    this.lastSeq = seq;
    this.counters.delivered++;
    if (this.ackDue !== 2) {
      if (this.lastSeq >= this.ackAt) {
        this.stopAckTimer();
        this.ackDue = 2;
        this.ackTimer = setTimeout(this.ackAlone, 0);
      } else if (this.ackTimer === null) {
        const d = ackDelayMs();
        const now = performance.now();
        const r = (now - this.ackPhase) % d;
        let untilTick = d - (r < 0 ? r + d : r);
        if (this.lastRideAt >= now + untilTick - d / 2) untilTick += d; // an ack rode a request in this tick's half period

        if (untilTick <= d / 2) {
          this.ackDue = 1;
          this.ackTimer = setTimeout(this.ackAlone, untilTick);
        } else {
          this.ackTimer = setTimeout(() => {
            this.ackDue = 1;
            this.ackTimer = setTimeout(this.ackAlone, d / 2);
          }, untilTick - d / 2);
        }
      }
    }
    this.handler(payload);
  }

  private readonly ackAlone = (): void => {
    this.ackTimer = null;
    this.ack();
  };

  private ack(): void {
    this.stopAckTimer();
    if (this.lastSeq === this.acked) return;
    this.acked = this.lastSeq;
    this.ackAt = this.lastSeq + ACK_EVERY;
    if (this.isAttached && this.raw.readyState === WebSocket.OPEN) this.raw.send(encodeClientAck(this.lastSeq));
  }

  private stopAckTimer(): void {
    if (this.ackTimer !== null) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    this.ackDue = 0;
  }

  /** Requests not yet acknowledged by the server. */
  get pendingRequests(): number {
    return this.unacked.length;
  }

  // BenchClient

  send(text: string): void {
    const cseq = ++this.cseq;
    this.unacked.push({ cseq, text });
    // Not before `attached` (a data frame then is a protocol violation): the attach re-sends it with the others.
    if (!this.isAttached || this.raw.readyState !== WebSocket.OPEN) return;
    if (this.ackDue === 0) return this.raw.send(`${cseq}:${text}`);
    // The due ack, then the request: two frames, one socket write (ws corks around each frame; the cork nests).
    const socket = (this.raw as unknown as { _socket: Socket })._socket;
    socket.cork();
    if (this.lastSeq !== this.acked) this.lastRideAt = performance.now();
    this.ack();
    this.raw.send(`${cseq}:${text}`);
    socket.uncork();
  }
  onMessage(handler: (text: string) => void): void {
    this.handler = handler;
  }
  onClose(handler: () => void): void {
    this.closeHandler = handler;
  }
  close(): void {
    this.stopAckTimer();
    this.raw.close();
  }
  terminate(): void {
    this.stopAckTimer();
    this.raw.terminate();
  }
}

/** Opens `n` session clients to `url` (the server's ws URL), `batch` handshakes at a time. */
export async function connectSessionMany(url: string, n: number, options: { batch?: number; localAddress?: string } = {}): Promise<SessionClient[]> {
  const batch = options.batch ?? 200;
  const clients: SessionClient[] = [];
  for (let i = 0; i < n; i += batch) {
    const more = Array.from({ length: Math.min(batch, n - i) }, () => new SessionClient(url, options.localAddress));
    // On a loaded machine an attach can miss the server's attachTimeout (1008) or the socket be reset: the set-up is not
    // what is measured, so such a client tries again (3 times at most) instead of failing the run.
    await Promise.all(more.map((c) => c.connect().catch(() => c.connect()).catch(() => c.connect())));
    clients.push(...more);
  }
  return clients;
}

/** As the Node client's first ack (src/client/client.ts `firstAckAt`): at a random count in 1…ACK_EVERY. */
function firstAckAt(n = ACK_EVERY): number {
  return 1 + Math.min(n - 1, Math.floor(Math.random() * n));
}
