/**
 * The browser platform's actors, on the native `WebSocket`: the dialer opens
 * one socket per attempt; the reader and writer keep the contracts of the
 * server's (src/server/reader.ts, src/server/writer.ts) within what a browser allows:
 *
 * - R7: page scripts cannot send ping frames, so the heartbeat is an
 *   application-level request, `{"requestID":-N,"command":"ping"}`. The
 *   tutorials' server answers every command with a reply carrying the same
 *   requestID, and negative ids never collide with the client's (positive)
 *   ones: that reply is the pong. Any other inbound message still proves
 *   liveness (R5).
 * - R9/R10: there is no drain event either, so the writer watches
 *   `bufferedAmount`: over the high-water mark it is blocked (and polls for
 *   progress), over the hard limit a send is refused as a slow consumer.
 * - R12: a browser never says which buffered bytes were lost when a socket
 *   closed, so no dead letters are reported here: requests sent on a
 *   connection that closed are rejected by the client instead (R14).
 *
 * No Node imports: this file is bundled for browsers (scripts/build-browser.mjs).
 */
import { fromCallback } from 'xstate';
import type { DialerInput } from '../../machines/client.machine.ts';
import type { ActorInput, ReaderCommand, ReaderEvent, WriterCommand, WriterEvent } from '../../machines/connection.machine.ts';
import { CloseCodes } from '../../machines/close-codes.ts';
import { encodePing, SESSION_PONG } from '../protocol/session.ts';
import { LivenessReport } from '../server/liveness.ts';
import type { TransportHooks } from './client.ts';

/** Bounds on what the browser may hold for one socket (`bufferedAmount`, bytes). */
export interface SendLimits {
  /** Above this the socket counts as blocked and must make progress within the write timeout (R10). Default 1 MiB. */
  highWaterMark: number;
  /** A send that would go above this is refused: a slow consumer (R11). Default 4 MiB. An empty buffer takes any one message. */
  maxBytes: number;
}

export const DEFAULT_SEND_LIMITS: SendLimits = { highWaterMark: 1 << 20, maxBytes: 4 << 20 };

/** What the dialer gets from the client (the machine's opaque `transport`). */
export interface BrowserTransport {
  url: string;
  protocols: string[];
  hooks: TransportHooks;
  limits: SendLimits;
  /** The client asked for a session: the heartbeat is the session's `ping` control frame (a data frame would be numbered and kept). */
  session: boolean;
}

/** The connection machine's opaque `io`: shared by the reader and the writer. */
export interface BrowserIO {
  ws: WebSocket;
  hooks: TransportHooks;
  writer: BrowserWriter;
}

// WebSocket.readyState values, spelled out so this module loads where there is no WebSocket global.
const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 3;
/** How often a blocked writer looks at bufferedAmount again, ms. */
const POLL_MS = 100;
/** What every reply to one of our heartbeats starts with (the server writes requestID first). */
const HEARTBEAT_REPLY = '{"requestID":-';
const HEARTBEAT_ID = /^\{"requestID":(-\d+)[,}]/;
/** Browsers refuse a close reason over 123 bytes of UTF-8 (RFC 6455 §5.5). */
const MAX_REASON_BYTES = 123;

/**
 * The write side of one browser socket: bounded sends (R9–R11), heartbeats
 * (R7) and the close. Created by the dialer, because the client may send as
 * soon as the socket opens; the writer actor attaches to it.
 */
export class BrowserWriter {
  private sendBack: ((event: WriterEvent) => void) | null = null;
  private accepting = true;
  private released = false;
  private blocked = false;
  /** Messages sent since the socket became blocked (reported with an overflow). */
  private sentWhileBlocked = 0;
  private lastBuffered = 0;
  private poll: ReturnType<typeof setTimeout> | null = null;
  private pings = 0;
  /** The heartbeat in flight: its requestID and send time (performance.now()). */
  private ping_: { id: number; sentAt: number } | null = null;

  constructor(
    readonly ws: WebSocket,
    private readonly limits: SendLimits,
    /** A session connection: pings are `{"session":"ping"}`, answered by `{"session":"pong"}` (docs/sessions.md). */
    private readonly session = false,
  ) {}

  attach(sendBack: (event: WriterEvent) => void): void {
    this.sendBack = sendBack;
    // Facts from before the actor existed (the client sends as soon as the socket opens).
    if (!this.accepting && !this.released) sendBack({ type: 'write.overflow', messages: this.sentWhileBlocked, bytes: this.ws.bufferedAmount });
    else if (this.blocked) sendBack({ type: 'write.blocked' });
  }

  /** False when refused: not open, closing, or over the hard limit (which closes the connection, R11). */
  send(text: string): boolean {
    const ws = this.ws;
    if (!this.accepting || ws.readyState !== OPEN) return false;
    // text.length: a cheap lower bound of the UTF-8 size, good enough for a limit.
    // An empty buffer takes one message of any size (as a drained socket does on Node).
    if (ws.bufferedAmount > 0 && ws.bufferedAmount + text.length > this.limits.maxBytes) {
      this.accepting = false;
      this.sendBack?.({ type: 'write.overflow', messages: this.sentWhileBlocked, bytes: ws.bufferedAmount });
      return false;
    }
    ws.send(text);
    if (this.blocked) this.sentWhileBlocked++;
    else if (ws.bufferedAmount > this.limits.highWaterMark) {
      this.blocked = true;
      this.sentWhileBlocked = 1;
      this.lastBuffered = ws.bufferedAmount;
      this.sendBack?.({ type: 'write.blocked' });
      this.poll = setTimeout(this.check, POLL_MS);
    }
    return true;
  }

  /** R7: an application-level ping; the reply's requestID names it. */
  ping(): void {
    if (this.released || this.ws.readyState !== OPEN) return;
    const id = -++this.pings;
    this.ping_ = { id, sentAt: performance.now() };
    // On a session connection every data frame is numbered, kept and run once: the heartbeat is a control frame.
    this.ws.send(this.session ? encodePing() : `{"requestID":${id},"command":"ping"}`);
  }

  /**
   * For the reader: whether `text` is a reply to one of our heartbeats, and if
   * it answers the one in flight, the round trip in ms.
   */
  heartbeatReply(text: string): { rttMs: number | null } | null {
    if (this.session) {
      // One ping in flight at a time (the machine waits for its pong or its timeout), so a pong answers it.
      if (text !== SESSION_PONG) return null;
      if (this.ping_ === null) return { rttMs: null };
      const rttMs = performance.now() - this.ping_.sentAt;
      this.ping_ = null;
      return { rttMs };
    }
    if (!text.startsWith(HEARTBEAT_REPLY)) return null;
    const id = Number(HEARTBEAT_ID.exec(text)?.[1]);
    if (this.ping_ === null || id !== this.ping_.id) return { rttMs: null };
    const rttMs = performance.now() - this.ping_.sentAt;
    this.ping_ = null;
    return { rttMs };
  }

  /** R16: start the close handshake (the browser sends what it has buffered first, whatever `flush` says). */
  close(code: number, reason: string): void {
    if (this.released) return;
    this.accepting = false;
    const [c, r] = browserCloseArgs(code, reason);
    try {
      this.ws.close(c, r);
    } catch {
      this.ws.close(); // never leave a connection open because of its close arguments
    }
  }

  /** The writer actor stopped (the connection reached `closed`): the socket must not outlive it (R3). */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.accepting = false;
    if (this.poll !== null) clearTimeout(this.poll);
    if (this.ws.readyState === CONNECTING || this.ws.readyState === OPEN) this.ws.close();
  }

  /** While blocked: did bufferedAmount go down (R10 progress), or back under the high-water mark? */
  private readonly check = (): void => {
    this.poll = null;
    if (this.released || this.ws.readyState !== OPEN) return; // the reader reports the close
    const buffered = this.ws.bufferedAmount;
    if (buffered <= this.limits.highWaterMark) {
      this.blocked = false;
      this.sendBack?.({ type: 'write.drained' });
      return;
    }
    if (buffered < this.lastBuffered) this.sendBack?.({ type: 'write.progress' });
    this.lastBuffered = buffered;
    this.poll = setTimeout(this.check, POLL_MS);
  };
}

/**
 * `WebSocket.close` throws on a code other than 1000 or 3000–4999 and on a
 * reason over 123 bytes. Another code (1001, 1008 for a slow consumer…) goes
 * out as 1000 with the code at the front of the reason; the machine still
 * records the code it asked for.
 */
export function browserCloseArgs(code: number, reason: string): [number, string] {
  if (code !== CloseCodes.NORMAL && !(code >= 3000 && code <= 4999)) {
    reason = reason ? `${code} ${reason}` : String(code);
    code = CloseCodes.NORMAL;
  }
  const encoder = new TextEncoder();
  while (encoder.encode(reason).length > MAX_REASON_BYTES) reason = reason.slice(0, -1);
  return [code, reason];
}

/** One attempt: `dial.ready` once the socket is open; stopping it abandons an attempt that did not open. */
export const browserDialer = fromCallback<{ type: 'dialer.noop' }, DialerInput>(({ input, sendBack }) => {
  const { url, protocols, hooks, limits, session } = input.transport as BrowserTransport;
  let settled = false;
  let handedOver = false;
  const fail = (message: string): void => {
    if (settled) return;
    settled = true; // error and close both fire: report once
    sendBack({ type: 'dial.failed', message });
  };
  let ws: WebSocket;
  try {
    ws = new WebSocket(url, protocols);
  } catch (err) {
    queueMicrotask(() => fail(`cannot open ${url}: ${String(err)}`));
    return undefined;
  }
  ws.binaryType = 'arraybuffer';
  // Browsers tell a page nothing about why a handshake failed (refused, HTTP 403…): the console does.
  const onError = (): void => fail(`could not connect to ${url}`);
  const onClose = (event: CloseEvent): void => fail(`connection to ${url} closed before it opened (code ${event.code})`);
  const onOpen = (): void => {
    if (settled) return;
    settled = handedOver = true;
    detach();
    const io: BrowserIO = { ws, hooks, writer: new BrowserWriter(ws, limits, session) };
    hooks.onOpen((text) => io.writer.send(text));
    sendBack({ type: 'dial.ready', io });
  };
  const detach = (): void => {
    ws.removeEventListener('open', onOpen);
    ws.removeEventListener('error', onError);
    ws.removeEventListener('close', onClose);
  };
  ws.addEventListener('open', onOpen);
  ws.addEventListener('error', onError);
  ws.addEventListener('close', onClose);
  return () => {
    detach();
    // An attempt abandoned (connect timeout, deliberate close) must not linger; a no-op once closed.
    if (!handedOver) ws.close();
  };
});

/** R8: the one place that listens to the socket; the machine hears only lifecycle facts. */
export const browserReader = fromCallback<ReaderCommand, ActorInput>(({ input, sendBack: send, receive }) => {
  const sendBack = (event: ReaderEvent): void => send(event);
  const { ws, hooks, writer } = input.io as BrowserIO;
  const decoder = new TextDecoder(); // UTF-8, bad bytes become U+FFFD
  // One macrotask later, every message that had already arrived has been dispatched.
  const report = new LivenessReport({ report: sendBack });
  let stopped = false;

  const deliver = (text: string): void => {
    const heartbeat = writer.heartbeatReply(text);
    if (typeof heartbeat?.rttMs === 'number' && report.expecting) hooks.onRtt(heartbeat.rttMs);
    report.inbound(heartbeat?.rttMs ?? null);
    if (heartbeat === null) hooks.onMessage(text); // our heartbeat replies are not the application's
  };
  const onMessage = (event: MessageEvent): void => {
    const data: unknown = event.data;
    if (typeof data === 'string') deliver(data);
    else if (data instanceof ArrayBuffer) deliver(decoder.decode(data));
    // Only if someone set binaryType back to 'blob' (decoding is then asynchronous).
    else if (data instanceof Blob) void data.text().then((text) => stopped || deliver(text));
  };
  const onClose = (event: { code: number; reason: string }): void => report.close(event.code, event.reason);
  const onOpen = (): void => sendBack({ type: 'socket.open' });

  ws.addEventListener('message', onMessage);
  ws.addEventListener('close', onClose);
  receive((command) => report.command(command));
  if (ws.readyState === OPEN) sendBack({ type: 'socket.open' });
  else if (ws.readyState === CONNECTING) ws.addEventListener('open', onOpen, { once: true });
  else if (ws.readyState === CLOSED) queueMicrotask(() => onClose({ code: CloseCodes.ABNORMAL, reason: '' }));
  // CLOSING: the close event is on its way.

  return () => {
    stopped = true;
    report.stop();
    ws.removeEventListener('message', onMessage);
    ws.removeEventListener('close', onClose);
    ws.removeEventListener('open', onOpen);
  };
});

/** R8: the one place that writes; the machine's commands become socket calls. */
export const browserWriter = fromCallback<WriterCommand, ActorInput>(({ input, sendBack, receive }) => {
  const { writer } = input.io as BrowserIO;
  writer.attach((event: WriterEvent) => sendBack(event));
  receive((command) => {
    if (command.type === 'writer.ping') writer.ping();
    else writer.close(command.code, command.reason);
  });
  return () => writer.release();
});
