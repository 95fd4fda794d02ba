/**
 * The reconnecting client, platform-neutral: the same class runs in Node (on
 * `ws`, src/client/node.ts) and in browsers (on the native WebSocket,
 * src/client/browser.ts). Its lifecycle is the client machine
 * (machines/client.machine.ts); this file adds the request/response layer of
 * the tutorials' protocol (R13, R14), the offline buffer (R23) and events (R24).
 * No Node-only imports here: this file is bundled for browsers.
 */
import { createActor, type Actor, type AnyActorRef, type InspectionEvent, type Observer } from 'xstate';
import type { BackoffOptions } from '../../machines/backoff.ts';
import type { ClientMachine, ClientOutput, ClientTiming } from '../../machines/client.machine.ts';
import { connectionStateName } from '../../machines/connection.machine.ts';
import { capCloseReason, CloseCodes, type Closure } from '../../machines/close-codes.ts';
import { isInspector, isPlainObject, isProtocolList, optionalObject, positiveInt, shown } from '../base/checks.ts';
import {
  decodeServerFrame,
  encodeClientAck,
  encodeEnd,
  encodeOpen,
  encodeResume,
  encodeTextData,
  SESSION_QUERY_PARAM,
  UNPERSISTED_SEQ_JUMP,
  type ResumeFailureReason,
} from '../protocol/session.ts';

/** The client's state, flattened from the client machine and its connection child. */
export type ClientState = 'connecting' | 'resuming' | 'open' | 'pinging' | 'closing' | 'waiting' | 'closed';

/** A reply to a request (R14). Extra fields the server adds are kept. */
export interface Reply {
  requestID: number;
  success: boolean;
  someOtherThing?: string;
  error?: string;
  [field: string]: unknown;
}

/** A server push: any message without a requestID (R24). */
export type Push = Record<string, unknown>;

/** Why a request or send did not complete. `code` tells them apart without instanceof. */
export class ClientError extends Error {
  constructor(
    readonly code: 'timeout' | 'connection-closed' | 'client-closed' | 'not-connected' | 'buffer-full' | 'server-error' | 'session-lost',
    message: string,
    /** The server's reply, for `server-error`. */
    readonly reply?: Reply,
  ) {
    super(message);
    this.name = 'ClientError';
  }
}

export interface ClientOptions {
  /**
   * Heartbeat and deadlines (ms). pingInterval 0 turns the heartbeat off.
   * Defaults: pingInterval 25000 (Node: protocol pings; browser: 0 unless
   * `appHeartbeat`), pongTimeout 10000, writeTimeout 10000, closeTimeout 5000,
   * connectTimeout 10000, resumeTimeout 10000 (sessions: the wait for `attached`).
   */
  timing?: Partial<ClientTiming>;
  /**
   * R22. Defaults: initialDelay 500, maxDelay 30000, multiplier 2,
   * maxAttempts 0 (never give up), stableAfter 10000.
   */
  backoff?: Partial<BackoffOptions>;
  /**
   * R23: what `request`/`send` do while disconnected: `'buffer'` (default)
   * queues up to `offlineBuffer` messages and sends them in order once
   * connected; `'reject'` fails at once with a `not-connected` ClientError.
   */
  offline?: 'buffer' | 'reject';
  /** Messages held while disconnected. Default 100. Overflow rejects with `buffer-full`. */
  offlineBuffer?: number;
  /** Default request timeout, ms (from the call, including time spent buffered). Default 10000. */
  requestTimeout?: number;
  /** Subprotocols to offer (R20). */
  protocols?: string[];
  /** Any XState inspector, for the client actor and its connection children. */
  inspect?: Observer<InspectionEvent> | ((event: InspectionEvent) => void);
  /** Jitter source in [0, 1); default Math.random. */
  random?: () => number;
  /**
   * Ask the server for a session (docs/sessions.md): after an unexpected
   * close the client resumes it — every server message exactly once and in
   * order, unanswered requests re-sent and run once — or learns why it could
   * not (`resume` event, `client.resumed`, `client.resumeReason`). `true`, or
   * the acknowledgement cadence: `ackEvery` messages (default 32), or
   * `ackBytes` characters of them (default 1 MiB: a quarter of the server's
   * default `maxBytes`, so that large messages do not overflow the session
   * of a client reading at full speed), or
   * within `ackDelay` ms of the first unacknowledged one (default 5000; at
   * the next tick of the client's own ack clock, whose phase is random). A
   * due ack rides the next request, in the same socket write (within 1.5 ×
   * ackDelay then: docs/sessions.md, "Acknowledgements").
   * Default false: the articles' protocol, unchanged.
   */
  session?: boolean | SessionClientOptions;
}

export interface SessionClientOptions {
  ackEvery?: number;
  /** Ack once the data frames received since the last ack hold this many characters (UTF-16 code units), whatever their count. */
  ackBytes?: number;
  ackDelay?: number;
}

/** The `resume` event: how a reconnect went for the session. */
export interface ResumeEvent {
  /** True: nothing was lost; false: a new session (`reason` says why, `detail` for people). */
  resumed: boolean;
  reason: ResumeFailureReason | null;
  detail: string | null;
  /** Messages the server replayed (resumed), else 0. */
  replayed: number;
  /** Requests re-sent after the resume (not yet run by the server). */
  resent: number;
  /** Requests of the old session whose outcome is unknown (resumed: false): rejected with `session-lost`. */
  lost: number;
}

export const CLIENT_DEFAULTS = {
  timing: { pingInterval: 25_000, pongTimeout: 10_000, writeTimeout: 10_000, closeTimeout: 5_000, connectTimeout: 10_000 },
  backoff: { initialDelay: 500, maxDelay: 30_000, multiplier: 2, maxAttempts: 0, stableAfter: 10_000 },
  offlineBuffer: 100,
  requestTimeout: 10_000,
  /**
   * As docs/sessions.md, "Acknowledgements": one 25-byte ack per 32 messages, or five seconds after the first. The count
   * bounds what an attached session holds whatever the delay; the delay only clears a slow stream's few messages, and
   * each ack is a frame the server reads on its own (a second made a 5,000-receiver broadcast stream cost 5,000 acks a second).
   */
  session: { ackEvery: 32, ackBytes: 1024 * 1024, ackDelay: 5000, resumeTimeout: 10_000 },
} as const;

/** What a platform hands the client: its provided machine and how to write to the current connection. */
export interface ClientPlatform {
  machine: ClientMachine;
  /** The transport description the dialer gets (opaque to the machine). */
  transport(url: string, options: ClientOptions, hooks: TransportHooks): unknown;
  /** Default pingInterval on this platform (browsers cannot send protocol pings). */
  defaultPingInterval: number;
}

/** Callbacks from the platform's transport into the client. */
export interface TransportHooks {
  /** An inbound text message (binary frames arrive as their UTF-8 decoding). */
  onMessage(text: string): void;
  /**
   * A new connection is open; `send` writes to it (false: refused). `batch`,
   * where the platform can, runs its function with the socket corked: the
   * messages it sends leave in one socket write, each its own frame (Node: a
   * due session ack and the request it rides with; a browser WebSocket cannot
   * cork, so there the two are sent back to back in the same task).
   */
  onOpen(send: (text: string) => boolean, batch?: (fn: () => void) => void): void;
  /** An accepted message never reached the network (R12). */
  onDeadLetter(text: string): void;
  /** A heartbeat round trip was measured (R4). */
  onRtt(rttMs: number): void;
}

export interface ClientEvents {
  /** A message without a requestID (R24). */
  push: Push;
  /** Every state change, e.g. open → pinging → open, or waiting → connecting. */
  state: { state: ClientState; previous: ClientState };
  /** Each connection's end (R17), and each failed attempt. */
  close: Closure;
  /**
   * A message that was accepted but never reached the network (R12). With a session: only a raw `send` the
   * session never acknowledged, when a resume fails or the client ends without resuming it (everything else is
   * re-sent after the resume).
   */
  deadLetter: { data: string };
  /** The client stopped for good: deliberately, or out of attempts. */
  end: ClientOutput;
  /** Sessions: a reconnect attached the session again (resumed) or could not (a new session, and why). */
  resume: ResumeEvent;
}

interface Pending {
  resolve(reply: Reply): void;
  reject(error: ClientError): void;
  timer: ReturnType<typeof setTimeout>;
  sent: boolean;
}

let clientCounter = 0;

/**
 * The options TypeScript types but JavaScript callers can still get wrong, refused at creation with a RangeError
 * naming the option and the value, as the numbers are. Before, each was taken as given: `random: 1` left the client
 * in `connecting` for good after its first failed attempt (the backoff threw inside the machine, and nothing said
 * so), `offline: 'drop'` buffered as `'buffer'` does, `session: 'yes'` asked for a session.
 */
function checkClientShapes(options: ClientOptions): void {
  const bad = (name: string, what: string, value: unknown): RangeError => new RangeError(`ws-supervisor client: option ${name} must be ${what}, got ${shown(value)}`);
  const { offline, random, session, protocols, inspect, timing, backoff } = options;
  if (offline !== undefined && offline !== 'buffer' && offline !== 'reject') throw bad('offline', "'buffer' or 'reject'", offline);
  if (random !== undefined && typeof random !== 'function') throw bad('random', 'a function returning a number in [0, 1)', random);
  if (session !== undefined && typeof session !== 'boolean' && !isPlainObject(session)) throw bad('session', 'true, false or { ackEvery, ackDelay }', session);
  if (protocols !== undefined && !isProtocolList(protocols)) {
    throw bad('protocols', 'a list of subprotocol names', Array.isArray(protocols) ? JSON.stringify(protocols) : protocols);
  }
  if (inspect !== undefined && !isInspector(inspect)) throw bad('inspect', 'an XState inspector (a function, or an observer with next)', inspect);
  optionalObject('timing', timing, 'ws-supervisor client');
  optionalObject('backoff', backoff, 'ws-supervisor client');
}

export class Client {
  readonly id: string;
  private readonly actor: Actor<ClientMachine>;
  private readonly listeners = new Map<keyof ClientEvents, Set<(value: never) => void>>();
  private readonly pending = new Map<number, Pending>();
  /** R23: messages waiting for a connection, oldest first. */
  private readonly outbox: { requestID: number | null; text: string }[] = [];
  private send_: ((text: string) => boolean) | null = null;
  /** The connection's cork (TransportHooks.onOpen), or one that just runs its function. */
  private batch_: (fn: () => void) => void = runNow;
  private rtt: number | null = null;
  private nextRequestID = 1;
  private current: ClientState = 'connecting';
  private child: AnyActorRef | null = null;
  private childSubscription: { unsubscribe(): void } | null = null;
  private readonly offline: 'buffer' | 'reject';
  private readonly offlineBuffer: number;
  private readonly requestTimeout: number;
  /** Sessions: null when off. */
  private readonly sess: SessionState | null;
  private lastResume: ResumeEvent | null = null;
  /** Jitter: reconnect backoff (the machine's) and the phase of session acks. */
  private readonly random: () => number;
  /** Resolves when the client has stopped for good. */
  readonly ended: Promise<ClientOutput>;

  constructor(
    readonly url: string,
    options: ClientOptions,
    platform: ClientPlatform,
  ) {
    checkClientShapes(options);
    this.id = `client-${++clientCounter}`;
    this.offline = options.offline ?? 'buffer';
    this.offlineBuffer = positiveInt('offlineBuffer', options.offlineBuffer, CLIENT_DEFAULTS.offlineBuffer);
    this.requestTimeout = positiveInt('requestTimeout', options.requestTimeout, CLIENT_DEFAULTS.requestTimeout);
    const t = { ...CLIENT_DEFAULTS.timing, resumeTimeout: CLIENT_DEFAULTS.session.resumeTimeout, pingInterval: platform.defaultPingInterval, ...options.timing };
    this.random = options.random ?? Math.random;
    if (options.session) {
      const o = options.session === true ? {} : options.session;
      const ackEvery = positiveInt('session.ackEvery', o.ackEvery, CLIENT_DEFAULTS.session.ackEvery);
      const ackDelay = positiveInt('session.ackDelay', o.ackDelay, CLIENT_DEFAULTS.session.ackDelay);
      const ackBytes = positiveInt('session.ackBytes', o.ackBytes, CLIENT_DEFAULTS.session.ackBytes);
      this.sess = {
        ackEvery,
        ackBytes,
        ackDelay,
        id: null, token: null, epoch: null, lastSeq: 0, ackedSeq: 0, ackAt: firstAckAt(ackEvery, this.random), unackedChars: 0, ackTimer: null, ackDue: NOT_DUE, lastRideAt: -Infinity,
        ackPhase: this.random() * ackDelay,
        awaitingAttached: false, violated: false, endSent: false, nextCseq: 1, unacked: [],
      };
    } else this.sess = null;
    for (const [k, v] of Object.entries(t)) {
      if (!Number.isInteger(v) || v < 0 || v > 2_147_483_647 || (v === 0 && k !== 'pingInterval')) {
        throw new RangeError(`ws-supervisor client: timing.${k} must be a ${k === 'pingInterval' ? 'non-negative' : 'positive'} integer, got ${String(v)}`);
      }
    }
    const backoff = { ...CLIENT_DEFAULTS.backoff, ...options.backoff };
    // Node runs a timer over 2^31-1 ms after 1 ms: such a delay would disable the backoff.
    const MAX_TIMER = 2_147_483_647;
    if (
      !(backoff.initialDelay > 0 && backoff.maxDelay >= backoff.initialDelay && backoff.maxDelay <= MAX_TIMER &&
        backoff.multiplier >= 1 && Number.isFinite(backoff.multiplier) && Number.isInteger(backoff.maxAttempts) &&
        backoff.maxAttempts >= 0 && backoff.stableAfter > 0 && backoff.stableAfter <= MAX_TIMER)
    ) {
      throw new RangeError(`ws-supervisor client: invalid backoff ${JSON.stringify(backoff)}`);
    }
    const hooks: TransportHooks = {
      onMessage: (text) => this.onMessage(text),
      onOpen: (send, batch) => {
        this.rtt = null; // a new connection: no round trip measured on it yet
        this.send_ = send;
        this.batch_ = batch ?? runNow;
        if (this.sess !== null) return this.openSession(send);
        this.flush();
      },
      onDeadLetter: (text) => {
        // Sessions: every message written is kept until the server acks it and re-sent after a resume (or handed back
        // when the session is lost: sessionLost); the rest are control frames. Nothing the transport drops is lost.
        if (this.sess === null) this.emit('deadLetter', { data: text });
      },
      onRtt: (ms) => {
        this.rtt = ms;
      },
    };
    this.actor = createActor(platform.machine, {
      id: this.id,
      input: {
        id: this.id,
        timing: t,
        backoff,
        random: this.random,
        transport: platform.transport(this.sess !== null ? withSessionParam(url) : url, options, hooks),
        session: this.sess !== null,
      },
      ...(options.inspect ? { inspect: options.inspect } : {}),
    });
    this.ended = new Promise((resolve) => {
      this.actor.subscribe({
        next: () => this.onSnapshot(),
        complete: () => {
          this.onSnapshot();
          const output = this.actor.getSnapshot().output!;
          this.failAll('client-closed', output.reason === 'gave-up' ? 'the client gave up reconnecting'
            : output.reason === 'unsupported' ? `the server does not speak sessions (${output.lastClosure?.reason ?? 'no detail'})` : 'the client was closed');
          this.emit('end', output);
          resolve(output);
        },
        error: (err) => {
          this.failAll('client-closed', `client failed: ${String(err)}`);
          resolve({ reason: 'closed', lastClosure: null });
        },
      });
    });
    this.actor.start();
  }

  get state(): ClientState {
    return this.current;
  }

  /** The last measured heartbeat round trip, ms (null when none yet, or the heartbeat is off). */
  get rttMs(): number | null {
    return this.rtt;
  }

  /** Sessions: whether the last reconnect resumed the session (null: no reconnect yet, or sessions off). */
  get resumed(): boolean | null {
    return this.lastResume?.resumed ?? null;
  }

  /** Sessions: why the last resume did not work (null when it did, or none was tried). */
  get resumeReason(): ResumeFailureReason | null {
    return this.lastResume?.reason ?? null;
  }

  /** Sessions: the session id (null before the first `attached`, or sessions off). */
  get sessionId(): string | null {
    return this.sess?.id ?? null;
  }

  /** The client actor, for inspection and tests. */
  get machine(): Actor<ClientMachine> {
    return this.actor;
  }

  on<K extends keyof ClientEvents>(type: K, listener: (value: ClientEvents[K]) => void): () => void {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(listener as (value: never) => void);
    return () => set.delete(listener as (value: never) => void);
  }

  /**
   * R14: send `{"requestID":N,"command":…,"someOtherThing":…}` and resolve with
   * the reply carrying the same requestID. Rejects with a ClientError:
   * `timeout`, `connection-closed` (sent, but the connection closed before the
   * reply: it may or may not have been processed, so it is never resent),
   * `not-connected` / `buffer-full` (R23), `client-closed`, or `server-error`
   * (the reply had success: false).
   */
  request(command: string, someOtherThing = '', options: { timeout?: number } = {}): Promise<Reply> {
    const requestID = this.nextRequestID++;
    const text = JSON.stringify({ requestID, command, someOtherThing });
    return new Promise<Reply>((resolve, reject) => {
      const refusal = this.admit();
      if (refusal) return reject(refusal);
      const timeoutMs = options.timeout ?? this.requestTimeout;
      const timer = setTimeout(() => {
        this.pending.delete(requestID);
        const queued = this.outbox.findIndex((m) => m.requestID === requestID);
        if (queued !== -1) this.outbox.splice(queued, 1); // never sent later: R23
        reject(new ClientError('timeout', `request ${requestID} (${command}) timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(requestID, { resolve, reject, timer, sent: false });
      this.enqueue(requestID, text);
    });
  }

  /**
   * Send a raw text message (no reply expected). Returns true when it was
   * written or buffered (R23); throws a ClientError when refused.
   */
  send(text: string): true {
    const refusal = this.admit();
    if (refusal) throw refusal;
    this.enqueue(null, text);
    return true;
  }

  /** Deliberate close: never reconnects (R22). Resolves when the client has stopped. */
  close(code = 1000, reason = ''): Promise<ClientOutput> {
    // Sessions: a deliberate close ends the session too (nothing to resume). What arrived is acknowledged first: the
    // server counts every message unacknowledged at the end as a dead letter (R12), delivered or not.
    // Both in one socket write where the platform can cork.
    if (this.sess !== null && this.sess.id !== null && this.send_ !== null && !this.actor.getSnapshot().context.closeRequest) {
      const s = this.sess;
      this.batch_(() => {
        this.sendAck();
        if (this.send_ !== null && this.send_(encodeEnd()) && !s.awaitingAttached) s.endSent = true;
      });
    }
    this.actor.send({ type: 'close', code, reason });
    return this.ended;
  }

  private admit(): ClientError | null {
    if (this.actor.getSnapshot().status !== 'active' || this.actor.getSnapshot().context.closeRequest) {
      return new ClientError('client-closed', 'the client is closed');
    }
    const connected = this.send_ !== null && (this.current === 'open' || this.current === 'pinging');
    if (connected) return null;
    if (this.offline === 'reject') return new ClientError('not-connected', `not connected (state ${this.current})`);
    if (this.outbox.length >= this.offlineBuffer) {
      return new ClientError('buffer-full', `offline buffer full (${this.offlineBuffer} messages)`);
    }
    return null;
  }

  private enqueue(requestID: number | null, text: string): void {
    this.outbox.push({ requestID, text });
    if (this.send_ !== null && (this.current === 'open' || this.current === 'pinging')) this.flush();
  }

  /** Sends the outbox in order (R23); stops at the first refusal and keeps the rest. */
  private flush(): void {
    while (this.outbox.length > 0 && this.send_ !== null) {
      const next = this.outbox[0]!;
      if (!this.write(next.text, next.requestID)) return;
      this.outbox.shift();
      if (next.requestID !== null) {
        const p = this.pending.get(next.requestID);
        if (p) p.sent = true;
      }
    }
  }

  /**
   * Writes one message; with a session it is numbered (cseq) and kept until
   * the server acks it. A due ack rides with it: the ack frame, then the
   * request, in one socket write (docs/sessions.md, "Acknowledgements").
   */
  private write(text: string, requestID: number | null): boolean {
    const s = this.sess;
    if (s === null) return this.send_!(text);
    const framed = encodeTextData(s.nextCseq, text);
    let sent: boolean;
    if (s.ackDue !== NOT_DUE) {
      sent = false;
      const acked = s.ackedSeq;
      this.batch_(() => {
        this.sendAck();
        sent = this.send_ !== null && this.send_(framed);
      });
      if (s.ackedSeq !== acked) s.lastRideAt = performance.now();
    } else sent = this.send_!(framed);
    if (!sent) return false;
    s.unacked.push({ cseq: s.nextCseq++, framed, raw: requestID === null ? text : null });
    return true;
  }

  // -------------------------------------------------------------------------
  // Sessions (docs/sessions.md)

  private openSession(send: (text: string) => boolean): void {
    const s = this.sess!;
    s.awaitingAttached = true;
    s.violated = false;
    send(s.id === null ? encodeOpen() : encodeResume({ id: s.id, token: s.token!, lastSeq: s.lastSeq, epoch: s.epoch! }));
  }

  private onSessionFrame(text: string): void {
    const s = this.sess!;
    if (s.violated) return; // this connection is closing (1002): the resume after it starts from what was delivered
    const frame = decodeServerFrame(text, false);
    if (s.awaitingAttached) {
      if (frame.kind !== 'attached') {
        this.actor.send({ type: 'session.unsupported', message: `the server's first answer was not a session frame (${text.slice(0, 60)})` });
        return;
      }
      const resuming = s.id !== null;
      // An answer the client cannot square with what it sent: acting on it would skip messages or forget requests.
      if (frame.resumed && !resuming) return this.violation(`attached: resumed: true answering open`);
      if (frame.resumed && frame.id !== s.id) return this.violation(`attached: resumed a session other than ${s.id}`);
      if (frame.resumed && frame.lastSeq > s.lastSeq) {
        return this.violation(`attached: resumed after lastSeq ${frame.lastSeq}, this client has ${s.lastSeq}`);
      }
      if (frame.resumed && frame.cseq >= s.nextCseq) return this.violation(`attached: cseq ${frame.cseq}, last sent ${s.nextCseq - 1}`);
      s.awaitingAttached = false;
      let resent = 0;
      let lost = 0;
      if (frame.resumed) {
        // Requests the server has not run yet go again, in order (it runs each once).
        s.unacked = s.unacked.filter((r) => r.cseq > frame.cseq);
        for (const r of s.unacked) if (this.send_!(r.framed)) resent++;
      } else {
        // A new session: what the old one had not answered may or may not have run.
        lost = this.loseSessionRequests(frame.reason ?? 'unknown');
        // Raw sends the old session never acknowledged may or may not have reached it: handed back (R12).
        for (const r of s.unacked) if (r.raw !== null) this.emit('deadLetter', { data: r.raw });
        s.unacked = [];
        s.nextCseq = 1;
        s.lastSeq = 0;
        s.ackedSeq = 0;
        s.ackAt = firstAckAt(s.ackEvery, this.random);
        s.unackedChars = 0;
      }
      s.id = frame.id;
      s.token = frame.token;
      s.epoch = frame.epoch;
      if (resuming) {
        this.lastResume = { resumed: frame.resumed, reason: frame.reason ?? null, detail: frame.detail ?? null, replayed: frame.replay, resent, lost };
        this.emit('resume', this.lastResume);
      }
      this.actor.send({ type: 'session.attached' });
      return;
    }
    switch (frame.kind) {
      case 'data': {
        if (frame.seq <= s.lastSeq) return; // sent twice (before the cut, and in the replay): delivered once
        // Contiguous, or the documented jump of a session whose server store failed (no message between).
        if (frame.seq !== s.lastSeq + 1 && frame.seq - s.lastSeq - 1 < UNPERSISTED_SEQ_JUMP) {
          return this.violation(`seq ${frame.seq} after ${s.lastSeq}`);
        }
        s.lastSeq = frame.seq;
        s.unackedChars += text.length;
        this.scheduleAck();
        this.onPayload(typeof frame.payload === 'string' ? frame.payload : new TextDecoder().decode(frame.payload));
        return;
      }
      case 'ack':
        if (frame.cseq >= s.nextCseq) return this.violation(`ack of cseq ${frame.cseq}, last sent ${s.nextCseq - 1}`);
        if (s.unacked.length > 0 && s.unacked[0]!.cseq <= frame.cseq) s.unacked = s.unacked.filter((r) => r.cseq > frame.cseq);
        return;
      case 'duplicate':
        // The reply comes in the stream: nothing to do, unless the request was never sent.
        if (frame.cseq >= s.nextCseq) return this.violation(`duplicate of cseq ${frame.cseq}, last sent ${s.nextCseq - 1}`);
        return;
      case 'attached':
        return this.violation('a second attached on one connection');
      case 'invalid':
        // A data frame the client cannot number is a message it would lose; a malformed control frame carries
        // only state that a later one supersedes (ack, pong), or an answer to a frame the client never sends.
        if (!text.startsWith('{')) return this.violation(`data frame: ${frame.error}`);
        return;
      default:
        // error, pong: nothing to do here.
        return;
    }
  }

  /**
   * The server broke the session protocol (docs/sessions.md, "Frames on a session connection"): close this
   * connection 1002 (R15, as the server does with a client's violations) and resume from what was delivered. The
   * server replays what it skipped; the client re-sends what it has not seen acknowledged. The `close` event
   * carries the reason; frames after it on this connection are ignored.
   */
  private violation(reason: string): void {
    const s = this.sess!;
    s.violated = true;
    const child = (this.actor.getSnapshot().children as Record<string, AnyActorRef | undefined>).connection;
    child?.send({ type: 'close', code: CloseCodes.PROTOCOL_ERROR, reason: capCloseReason(`session protocol: ${reason}`), cause: 'protocol-error' });
  }

  /**
   * A data frame arrived. An ack that falls due is not written at once: it
   * rides the client's next request, in the same socket write (write()), or
   * goes alone at its bound. By count (ackEvery frames): the bound is the end
   * of this turn (a 0 ms timer), which catches the request an application
   * sends in reply to the frame that made it due, in the same turn (its await
   * continuation) — a request/response loop. By time: the ack is due from the
   * half-way point before this client's next ack-clock tick (so at most half
   * of ackDelay early) and goes alone at the tick, as before, if no request
   * took it. One ride per such half period: a message that arrives after an
   * ack rode a request in it is acknowledged in the next tick's (so within
   * 1.5 × ackDelay, and only on a client that sends requests; a client that
   * only receives acks at its ticks, within ackDelay, as before).
   */
  private scheduleAck(): void {
    const s = this.sess!;
    if (s.ackDue === DUE_BY_COUNT) return; // rides the next write, or goes alone at the end of the turn
    if (s.lastSeq >= s.ackAt || s.unackedChars >= s.ackBytes) {
      if (s.ackTimer !== null) clearTimeout(s.ackTimer);
      s.ackDue = DUE_BY_COUNT;
      s.ackTimer = setTimeout(this.ackAlone, 0);
      return;
    }
    if (s.ackTimer !== null) return; // the clock's half-way point or tick is armed already
    // At the next tick of this client's own ack clock (period ackDelay, its phase drawn at random once): at most
    // ackDelay after the first unacknowledged message, as before, but at a moment of the client's own. A wait counted
    // from that message's arrival put every receiver that acked between the same two broadcasts in step again at the
    // next one (they all armed on its arrival): their acks came in bursts, in the middle of later fan-outs, and the
    // bursts only grew (docs/sessions.md, "Acknowledgements").
    const d = s.ackDelay;
    const now = performance.now();
    const r = (now - s.ackPhase) % d;
    let untilTick = d - (r < 0 ? r + d : r);
    // An ack rode a request in this tick's half period already: the tick is spent, the next one acks. Else a client
    // sending requests all through the half period would put an ack on each of them. (A client that sends no requests
    // acks at the tick, as before.)
    if (s.lastRideAt >= now + untilTick - d / 2) untilTick += d;
    if (untilTick <= d / 2) {
      s.ackDue = DUE_BY_TIME;
      s.ackTimer = setTimeout(this.ackAlone, untilTick);
      return;
    }
    s.ackTimer = setTimeout(() => {
      s.ackDue = DUE_BY_TIME;
      s.ackTimer = setTimeout(this.ackAlone, d / 2);
    }, untilTick - d / 2);
  }

  /** The due ack's bound passed and no request took it: it goes alone. */
  private readonly ackAlone = (): void => {
    this.sess!.ackTimer = null;
    this.sendAck();
  };

  private sendAck(): void {
    const s = this.sess!;
    if (s.ackTimer !== null) clearTimeout(s.ackTimer);
    s.ackTimer = null;
    s.ackDue = NOT_DUE;
    if (s.lastSeq <= s.ackedSeq || this.send_ === null || s.awaitingAttached) return;
    if (this.send_(encodeClientAck(s.lastSeq))) {
      s.ackedSeq = s.lastSeq;
      s.ackAt = s.lastSeq + s.ackEvery;
      s.unackedChars = 0;
    }
  }

  /** Rejects the requests sent in a session that could not be resumed; returns how many. */
  private loseSessionRequests(reason: string): number {
    let lost = 0;
    for (const [id, p] of this.pending) {
      if (!p.sent) continue;
      lost++;
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.reject(new ClientError('session-lost', `the session could not be resumed (${reason}) before the reply to request ${id}: it may or may not have run`));
    }
    return lost;
  }

  private onMessage(text: string): void {
    if (this.sess !== null) return this.onSessionFrame(text);
    this.onPayload(text);
  }

  private onPayload(text: string): void {
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch {
      return; // not the tutorials' protocol: nothing to correlate
    }
    if (typeof message !== 'object' || message === null || Array.isArray(message)) return;
    const m = message as Record<string, unknown>;
    const id = m.requestID ?? m.RequestID;
    if (typeof id !== 'number') {
      this.emit('push', m);
      return;
    }
    const p = this.pending.get(id);
    if (!p) return; // a heartbeat reply (negative id) or a late reply after a timeout
    this.pending.delete(id);
    clearTimeout(p.timer);
    const reply = m as Reply;
    if (reply.success === false) p.reject(new ClientError('server-error', `request ${id} failed: ${String(reply.error)}`, reply));
    else p.resolve(reply);
  }

  private onSnapshot(): void {
    const snap = this.actor.getSnapshot();
    const child = (snap.children as Record<string, AnyActorRef | undefined>).connection ?? null;
    if (child !== this.child) {
      this.childSubscription?.unsubscribe();
      this.child = child;
      this.childSubscription = child?.subscribe({ next: () => this.onSnapshot(), error: () => undefined }) ?? null;
    }
    let state: ClientState;
    if (snap.status !== 'active' || snap.matches('closed')) state = 'closed';
    else if (snap.matches({ connected: 'resuming' }) && child && child.getSnapshot().status !== 'done' && connectionStateName(child.getSnapshot() as never) !== 'closing') state = 'resuming';
    else if (snap.matches('waiting')) state = 'waiting';
    else if (snap.matches('connecting') || !child) state = 'connecting';
    else {
      const c = child.getSnapshot() as { status: string; value: unknown; matches(v: unknown): boolean };
      if (c.status === 'done') {
        // The connection ended; the client machine's own next state (waiting or
        // closed) follows in its snapshot, so no made-up 'closing' here.
        this.onConnectionClosed((c as unknown as { output: Closure }).output);
        return;
      }
      const name = connectionStateName(c);
      state = name === 'closed' ? 'closing' : name; // stopped but not done: on its way out
    }
    // A failed attempt (refused, timed out) is a closure too (R17): report it once.
    if ((state === 'waiting' || state === 'closed') && this.current === 'connecting' && snap.context.lastClosure) {
      this.onConnectionClosed(snap.context.lastClosure);
    }
    if (state === 'waiting' || state === 'closed') this.send_ = null;
    if (state !== this.current) {
      const previous = this.current;
      this.current = state;
      this.emit('state', { state, previous });
      if ((state === 'open' || state === 'pinging') && previous !== 'open' && previous !== 'pinging') this.flush();
    }
  }

  private closedOnce = new WeakSet<object>();

  /** R14: requests sent on a connection that closed are rejected, never resent. */
  private onConnectionClosed(closure: Closure): void {
    if (this.closedOnce.has(closure)) return;
    this.closedOnce.add(closure);
    this.send_ = null;
    if (this.sess !== null) {
      // Sessions: what was sent is re-sent after the resume (or rejected if the session is lost).
      // A due ack goes no further: the resume presents the last seq received, which acknowledges it.
      if (this.sess.ackTimer !== null) clearTimeout(this.sess.ackTimer);
      this.sess.ackTimer = null;
      this.sess.ackDue = NOT_DUE;
      this.sess.awaitingAttached = false;
      this.emit('close', closure);
      return;
    }
    for (const [id, p] of this.pending) {
      if (!p.sent) continue;
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.reject(new ClientError('connection-closed', `connection closed (${closure.code}${closure.reason ? ` ${closure.reason}` : ''}) before the reply to request ${id}`));
    }
    this.emit('close', closure);
  }

  private failAll(code: ClientError['code'], message: string): void {
    if (this.sess?.ackTimer) clearTimeout(this.sess.ackTimer);
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new ClientError(code, `${message}: request ${id} not answered`));
    }
    this.pending.clear();
    // Raw messages still waiting never reached the network: hand them back (R12).
    for (const m of this.outbox) if (m.requestID === null) this.emit('deadLetter', { data: m.text });
    // Sessions: raw sends the server never acknowledged may or may not have reached it, unless `end` followed them on
    // the same connection (they went before it: close flushes): hand them back too.
    if (this.sess !== null && !this.sess.endSent) for (const r of this.sess.unacked) if (r.raw !== null) this.emit('deadLetter', { data: r.raw });
    if (this.sess !== null) this.sess.unacked = [];
    this.outbox.length = 0;
  }

  private emit<K extends keyof ClientEvents>(type: K, value: ClientEvents[K]): void {
    for (const listener of this.listeners.get(type) ?? []) {
      try {
        (listener as (v: ClientEvents[K]) => void)(value);
      } catch (err) {
        // A throwing listener must not break the client; surface it asynchronously.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}

interface SessionState {
  ackEvery: number;
  ackBytes: number;
  ackDelay: number;
  id: string | null;
  token: string | null;
  epoch: string | null;
  /** Every seq up to this one was delivered. */
  lastSeq: number;
  /** …and acknowledged up to this one. */
  ackedSeq: number;
  /** The seq whose arrival makes the next ack due by count: ackEvery after the last ack; the first one at random (firstAckAt). */
  ackAt: number;
  /**
   * Characters of the data frames received since the last ack: at ackBytes the ack is due as by count. The count
   * alone let 32 large messages (up to maxPayload, 1 MiB, each) wait unacknowledged: the server ends a session
   * past its maxBytes (4 MiB by default), and did so under a client reading at full speed (40 broadcasts of 200 KB:
   * closed 1008 after 20). Characters, not bytes: no encoding per frame; a text of multi-byte characters weighs up
   * to 3 bytes per character on the server, still under its default bound.
   */
  unackedChars: number;
  /** The pending ack's timer: the half-way point before the clock's tick, or the due ack's bound (scheduleAck). */
  ackTimer: ReturnType<typeof setTimeout> | null;
  /** Whether an ack is due (and why): it rides the next request's write, or goes alone when `ackTimer` fires. */
  ackDue: typeof NOT_DUE | typeof DUE_BY_TIME | typeof DUE_BY_COUNT;
  /** When an ack last rode a request (performance.now()): one per half period before a tick (scheduleAck). */
  lastRideAt: number;
  /** The phase of the client's ack clock, ms in [0, ackDelay), drawn at random: its time-due acks go at its ticks (scheduleAck). */
  ackPhase: number;
  /** open/resume sent on this connection, `attached` not yet received. */
  awaitingAttached: boolean;
  /** The server broke the protocol on this connection: it is closing, its frames are ignored. */
  violated: boolean;
  /** close() sent `end` on a live connection: what was written before it reaches the server first. */
  endSent: boolean;
  nextCseq: number;
  /** Requests written and not yet acknowledged by the server, in cseq order. */
  unacked: { cseq: number; framed: string; raw: string | null }[];
}

/**
 * The count at which a session's first ack falls due: at random in
 * 1…ackEvery, then every ackEvery. Clients that receive the same broadcasts
 * then ack after different ones, a share at each, instead of every one of
 * them after the same broadcast (a burst of acks the server reads in the
 * turn it fans the next one out: docs/sessions.md, "Acknowledgements").
 * (Broadcasts slower than ackEvery per ackDelay are acknowledged by the
 * timer instead, at the ticks of each client's own ack clock: scheduleAck.)
 */
function firstAckAt(ackEvery: number, random: () => number): number {
  return 1 + Math.min(ackEvery - 1, Math.floor(random() * ackEvery));
}

/** SessionState.ackDue: not due; due by the ack clock (alone at its tick); due by count (alone at the turn's end). */
const NOT_DUE = 0;
const DUE_BY_TIME = 1;
const DUE_BY_COUNT = 2;

function runNow(fn: () => void): void {
  fn();
}

/** The URL with `ws-session=1` (docs/sessions.md, "Opting in"). */
function withSessionParam(url: string): string {
  const u = new URL(url);
  u.searchParams.set(SESSION_QUERY_PARAM, '1');
  return u.href;
}

/** Throws a TypeError naming the URL unless it is an absolute ws: or wss: URL. */
export function assertWebSocketUrl(url: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new TypeError(`ws-supervisor client: invalid URL ${JSON.stringify(url)}`);
  }
  if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') {
    throw new TypeError(`ws-supervisor client: URL must start with ws:// or wss://, got ${JSON.stringify(url)}`);
  }
}

