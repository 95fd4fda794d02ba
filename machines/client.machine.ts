/**
 * The client machine: a connection that comes back. Pure definition, like the
 * connection machine — and it reuses it: every successful attempt runs the
 * very same connection machine as a child (open ⇄ pinging → closing → closed,
 * heartbeat, write deadline, close handshake), so client and server share
 * one lifecycle, not two copies of it.
 *
 *   connecting ──dial.ready──▶ connected (child: connection machine) ──done──▶ waiting ──after backoff──▶ connecting
 *        │ dial.failed / after connectTimeout ────────────────────────────────▶ waiting
 *        └──── close (deliberate) / attempts exhausted ──────────────────────▶ closed
 *
 * With sessions (docs/sessions.md) a connection starts in `connected.resuming`:
 * the client has sent `open`/`resume` and waits for the server's `attached`
 * (then `connected.ready`), at most `resumeTimeout` (then the connection is
 * terminated and retried, R22). A server that answers anything else does not
 * speak sessions: the client closes for good (`unsupported`) rather than
 * carry on without the guarantee; so it does when a server with sessions off
 * closes the connection with 4501 before `attached` (SESSIONS_UNSUPPORTED),
 * or the dialer reports that such a server refused the session upgrade (the
 * HTTP 400 of servers before 4501; only the Node client can read it).
 *
 * R22: exponential backoff with full jitter, capped, optional max attempts,
 * never after a deliberate close, reset only after the connection has stayed
 * up for `stableAfter`.
 */
import { assign, fromCallback, sendTo, setup } from 'xstate';
import { backoffDelay, type BackoffOptions } from './backoff.ts';
import { CloseCodes, type Closure } from './close-codes.ts';
import { connectionMachine, type ConnectionTiming } from './connection.machine.ts';

export interface ClientTiming extends ConnectionTiming {
  /** A connect attempt (TCP + upgrade) that takes longer is abandoned and retried. */
  connectTimeout: number;
  /** Sessions: the server's `attached` answer must arrive within this, else the connection is dropped and retried. */
  resumeTimeout: number;
}

export interface ClientInput {
  id: string;
  timing: ClientTiming;
  backoff: BackoffOptions;
  /** Source of jitter in [0, 1): Math.random in src/, a fixed sequence in tests. */
  random: () => number;
  /** Opaque: what the dialer needs to open a transport (URL, options). */
  transport: unknown;
  /** The client asked for a session: each connection resumes (or opens) it before it is ready. Default false. */
  session?: boolean;
}

export type ClientEvent =
  /** The dialer opened a transport; `io` goes to the connection machine. */
  | { type: 'dial.ready'; io: unknown }
  /** The attempt failed before the connection opened (refused, DNS, HTTP error…). */
  | { type: 'dial.failed'; message: string }
  /** Deliberate close by the application: never reconnects (R22). */
  | { type: 'close'; code?: number; reason?: string }
  /** Sessions: the server answered `open`/`resume` with `attached` (resumed or not). */
  | { type: 'session.attached' }
  /**
   * Sessions: the server does not speak them. While connected: its first answer was not `attached`.
   * While connecting: the dialer saw the server refuse the session upgrade for that reason (Node: HTTP 400
   * `sessions are not enabled on this server`, from servers before the 4501 close); retrying the same
   * upgrade would be refused the same way.
   */
  | { type: 'session.unsupported'; message: string };

export interface DialerInput {
  id: string;
  attempt: number;
  transport: unknown;
}

export interface ClientOutput {
  /** Why the client stopped: the application closed it, it ran out of attempts, or the server does not speak sessions. */
  reason: 'closed' | 'gave-up' | 'unsupported';
  /** How the last connection (or attempt) ended; null if none was ever made. */
  lastClosure: Closure | null;
}

export interface ClientContext extends Omit<ClientInput, 'transport'> {
  transport: unknown;
  /** Consecutive failed attempts (reset after `stableAfter` of uptime). */
  attempt: number;
  /** The delay chosen for the current wait, ms. */
  delayMs: number;
  io: unknown;
  closeRequest: { code: number; reason: string } | null;
  lastClosure: Closure | null;
  gaveUp: boolean;
  session: boolean;
  unsupported: boolean;
}

function failedAttempt(reason: string): Closure {
  return { code: CloseCodes.ABNORMAL, reason, initiator: 'remote', cause: 'socket-error', expected: false, receivedCode: null };
}

export const clientMachine = setup({
  types: {} as {
    context: ClientContext;
    events: ClientEvent;
    input: ClientInput;
    output: ClientOutput;
  },
  actors: {
    /** Opens one transport per attempt; stopping it abandons an attempt in progress. Provided by src/. */
    dialer: fromCallback<{ type: 'dialer.noop' }, DialerInput>(() => undefined),
    /** The shared connection machine; src/ provides it with the platform's reader and writer. */
    connection: connectionMachine,
  },
  delays: {
    connectTimeout: ({ context }) => context.timing.connectTimeout,
    resumeTimeout: ({ context }) => context.timing.resumeTimeout,
    backoff: ({ context }) => context.delayMs,
    stableAfter: ({ context }) => context.backoff.stableAfter,
  },
  guards: {
    deliberate: ({ context }) => context.closeRequest !== null,
    /** The client asked for a session: a connection resumes it before it is ready. */
    session: ({ context }) => context.session,
    /** Sessions: the server closed the connection with SESSIONS_UNSUPPORTED (4501): it has sessions off. */
    sessionsRefused: ({ event }) => (event as { output?: Closure }).output?.receivedCode === CloseCodes.SESSIONS_UNSUPPORTED,
    /** R22: the failure being handled is consecutive failure number attempt + 1. */
    canRetry: ({ context }) => context.backoff.maxAttempts === 0 || context.attempt + 1 < context.backoff.maxAttempts,
  },
  actions: {
    chooseDelay: assign({
      delayMs: ({ context }) => backoffDelay(context.attempt, context.backoff, context.random()),
      attempt: ({ context }) => context.attempt + 1,
    }),
    resetBackoff: assign({ attempt: 0 }),
    requestClose: assign({
      closeRequest: ({ event }) => {
        const e = event as Extract<ClientEvent, { type: 'close' }>;
        return { code: e.code ?? CloseCodes.NORMAL, reason: e.reason ?? '' };
      },
    }),
    forwardClose: sendTo('connection', ({ context }) => ({
      type: 'close' as const,
      code: context.closeRequest?.code ?? CloseCodes.NORMAL,
      reason: context.closeRequest?.reason ?? '',
    })),
    giveUp: assign({ gaveUp: true }),
    /** The server does not speak sessions: close for good, saying why. */
    refuseUnsupported: assign({
      closeRequest: () => ({ code: CloseCodes.NORMAL, reason: 'sessions unsupported by the server' }),
      unsupported: true,
    }),
    /** The server refused the session (its 400, or its 4501 close): nothing to close, the client stops with `unsupported`. */
    markUnsupported: assign({ unsupported: true }),
    /** No `attached` in time: drop this connection (R22 retries). */
    abandonResume: sendTo('connection', { type: 'terminate' as const, reason: 'no session answer in time' }),
  },
}).createMachine({
  id: 'client',
  context: ({ input }) => ({
    ...input,
    attempt: 0,
    delayMs: 0,
    io: null,
    closeRequest: null,
    lastClosure: null,
    gaveUp: false,
    session: input.session ?? false,
    unsupported: false,
  }),
  initial: 'connecting',
  states: {
    connecting: {
      description: 'One attempt: TCP connect and WebSocket upgrade, bounded by the connect timeout.',
      invoke: {
        id: 'dialer',
        src: 'dialer',
        input: ({ context }) => ({ id: context.id, attempt: context.attempt, transport: context.transport }),
      },
      on: {
        'dial.ready': [
          { guard: 'session', target: 'connected.resuming', actions: assign({ io: ({ event }) => event.io }) },
          { target: 'connected', actions: assign({ io: ({ event }) => event.io }) },
        ],
        'dial.failed': [
          { guard: 'canRetry', target: 'waiting', actions: assign({ lastClosure: ({ event }) => failedAttempt(event.message) }) },
          { target: 'closed', actions: [assign({ lastClosure: ({ event }) => failedAttempt(event.message) }), 'giveUp'] },
        ],
        close: { target: 'closed', actions: 'requestClose' },
        // Sessions: the upgrade was refused because the server has no sessions: stop, saying why (no retry).
        'session.unsupported': { target: 'closed', actions: [assign({ lastClosure: ({ event }) => failedAttempt(event.message) }), 'markUnsupported'] },
      },
      after: {
        connectTimeout: [
          { guard: 'canRetry', target: 'waiting', actions: assign({ lastClosure: () => failedAttempt('connect timeout') }) },
          { target: 'closed', actions: [assign({ lastClosure: () => failedAttempt('connect timeout') }), 'giveUp'] },
        ],
      },
    },
    connected: {
      description: 'The connection machine runs this connection: open ⇄ pinging → closing → closed.',
      invoke: {
        id: 'connection',
        src: 'connection',
        input: ({ context }) => ({ id: context.id, timing: context.timing, io: context.io }),
        onDone: [
          { guard: 'deliberate', target: 'closed', actions: assign({ lastClosure: ({ event }) => event.output }) },
          { guard: 'canRetry', target: 'waiting', actions: assign({ lastClosure: ({ event }) => event.output }) },
          { target: 'closed', actions: [assign({ lastClosure: ({ event }) => event.output }), 'giveUp'] },
        ],
      },
      exit: assign({ io: null }),
      after: {
        // R22: only a connection that stayed up resets the backoff.
        stableAfter: { actions: 'resetBackoff' },
      },
      on: {
        close: { actions: ['requestClose', 'forwardClose'] },
      },
      initial: 'ready',
      states: {
        resuming: {
          description: 'Sessions: open/resume sent; waiting for the server to attach the session (and replay what was missed).',
          on: {
            'session.attached': { target: 'ready' },
            'session.unsupported': { target: 'unsupported', actions: ['refuseUnsupported', 'forwardClose'] },
            // A server with sessions off closes 4501 before attaching: stop, saying why (no retry: it would be closed the same way).
            'xstate.done.actor.connection': {
              guard: 'sessionsRefused',
              target: '#client.closed',
              actions: [assign({ lastClosure: ({ event }) => event.output }), 'markUnsupported'],
            },
          },
          after: { resumeTimeout: { target: 'abandoned', actions: 'abandonResume' } },
        },
        ready: {
          description: 'The connection carries messages (with sessions: the session is attached).',
        },
        unsupported: {
          description: 'Sessions: the server does not speak them; the connection closes, and the client stops (never without the guarantee).',
        },
        abandoned: {
          description: 'Sessions: no answer to open/resume in time; the connection is terminated, then retried (R22).',
        },
      },
    },
    waiting: {
      description: 'R22: wait a jittered, capped, growing delay before the next attempt.',
      entry: 'chooseDelay',
      after: { backoff: { target: 'connecting' } },
      on: { close: { target: 'closed', actions: 'requestClose' } },
    },
    closed: {
      description: 'Deliberately closed, or out of attempts. Never reconnects.',
      type: 'final',
    },
  },
  output: ({ context }) => ({
    reason: context.unsupported ? 'unsupported' : context.gaveUp ? 'gave-up' : 'closed',
    lastClosure: context.lastClosure,
  }),
});

export type ClientMachine = typeof clientMachine;
