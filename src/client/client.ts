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
import type { Closure } from '../../machines/close-codes.ts';
import { positiveInt } from '../base/checks.ts';

/** The client's state, flattened from the client machine and its connection child. */
export type ClientState = 'connecting' | 'open' | 'pinging' | 'closing' | 'waiting' | 'closed';

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
    readonly code: 'timeout' | 'connection-closed' | 'client-closed' | 'not-connected' | 'buffer-full' | 'server-error',
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
   * connectTimeout 10000.
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
}

export const CLIENT_DEFAULTS = {
  timing: { pingInterval: 25_000, pongTimeout: 10_000, writeTimeout: 10_000, closeTimeout: 5_000, connectTimeout: 10_000 },
  backoff: { initialDelay: 500, maxDelay: 30_000, multiplier: 2, maxAttempts: 0, stableAfter: 10_000 },
  offlineBuffer: 100,
  requestTimeout: 10_000,
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
  /** A new connection is open; `send` writes to it (false: refused). */
  onOpen(send: (text: string) => boolean): void;
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
  /** A message that was accepted but never reached the network (R12). */
  deadLetter: { data: string };
  /** The client stopped for good: deliberately, or out of attempts. */
  end: ClientOutput;
}

interface Pending {
  resolve(reply: Reply): void;
  reject(error: ClientError): void;
  timer: ReturnType<typeof setTimeout>;
  sent: boolean;
}

let clientCounter = 0;

export class Client {
  readonly id: string;
  private readonly actor: Actor<ClientMachine>;
  private readonly listeners = new Map<keyof ClientEvents, Set<(value: never) => void>>();
  private readonly pending = new Map<number, Pending>();
  /** R23: messages waiting for a connection, oldest first. */
  private readonly outbox: { requestID: number | null; text: string }[] = [];
  private send_: ((text: string) => boolean) | null = null;
  private rtt: number | null = null;
  private nextRequestID = 1;
  private current: ClientState = 'connecting';
  private child: AnyActorRef | null = null;
  private childSubscription: { unsubscribe(): void } | null = null;
  private readonly offline: 'buffer' | 'reject';
  private readonly offlineBuffer: number;
  private readonly requestTimeout: number;
  /** Resolves when the client has stopped for good. */
  readonly ended: Promise<ClientOutput>;

  constructor(
    readonly url: string,
    options: ClientOptions,
    platform: ClientPlatform,
  ) {
    this.id = `client-${++clientCounter}`;
    this.offline = options.offline ?? 'buffer';
    this.offlineBuffer = positiveInt('offlineBuffer', options.offlineBuffer, CLIENT_DEFAULTS.offlineBuffer);
    this.requestTimeout = positiveInt('requestTimeout', options.requestTimeout, CLIENT_DEFAULTS.requestTimeout);
    const t = { ...CLIENT_DEFAULTS.timing, pingInterval: platform.defaultPingInterval, ...options.timing };
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
      onOpen: (send) => {
        this.rtt = null; // a new connection: no round trip measured on it yet
        this.send_ = send;
        this.flush();
      },
      onDeadLetter: (text) => this.emit('deadLetter', { data: text }),
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
        random: options.random ?? Math.random,
        transport: platform.transport(url, options, hooks),
      },
      ...(options.inspect ? { inspect: options.inspect } : {}),
    });
    this.ended = new Promise((resolve) => {
      this.actor.subscribe({
        next: () => this.onSnapshot(),
        complete: () => {
          this.onSnapshot();
          const output = this.actor.getSnapshot().output!;
          this.failAll('client-closed', output.reason === 'gave-up' ? 'the client gave up reconnecting' : 'the client was closed');
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
      if (!this.send_(next.text)) return;
      this.outbox.shift();
      if (next.requestID !== null) {
        const p = this.pending.get(next.requestID);
        if (p) p.sent = true;
      }
    }
  }

  private onMessage(text: string): void {
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
    for (const [id, p] of this.pending) {
      if (!p.sent) continue;
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.reject(new ClientError('connection-closed', `connection closed (${closure.code}${closure.reason ? ` ${closure.reason}` : ''}) before the reply to request ${id}`));
    }
    this.emit('close', closure);
  }

  private failAll(code: ClientError['code'], message: string): void {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new ClientError(code, `${message}: request ${id} not answered`));
    }
    this.pending.clear();
    // Raw messages still waiting never reached the network: hand them back (R12).
    for (const m of this.outbox) if (m.requestID === null) this.emit('deadLetter', { data: m.text });
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

