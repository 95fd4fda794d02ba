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
}

export interface ClientInput {
  id: string;
  timing: ClientTiming;
  backoff: BackoffOptions;
  /** Source of jitter in [0, 1): Math.random in src/, a fixed sequence in tests. */
  random: () => number;
  /** Opaque: what the dialer needs to open a transport (URL, options). */
  transport: unknown;
}

export type ClientEvent =
  /** The dialer opened a transport; `io` goes to the connection machine. */
  | { type: 'dial.ready'; io: unknown }
  /** The attempt failed before the connection opened (refused, DNS, HTTP error…). */
  | { type: 'dial.failed'; message: string }
  /** Deliberate close by the application: never reconnects (R22). */
  | { type: 'close'; code?: number; reason?: string };

export interface DialerInput {
  id: string;
  attempt: number;
  transport: unknown;
}

export interface ClientOutput {
  /** Why the client stopped: the application closed it, or it ran out of attempts. */
  reason: 'closed' | 'gave-up';
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
    backoff: ({ context }) => context.delayMs,
    stableAfter: ({ context }) => context.backoff.stableAfter,
  },
  guards: {
    deliberate: ({ context }) => context.closeRequest !== null,
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
        'dial.ready': { target: 'connected', actions: assign({ io: ({ event }) => event.io }) },
        'dial.failed': [
          { guard: 'canRetry', target: 'waiting', actions: assign({ lastClosure: ({ event }) => failedAttempt(event.message) }) },
          { target: 'closed', actions: [assign({ lastClosure: ({ event }) => failedAttempt(event.message) }), 'giveUp'] },
        ],
        close: { target: 'closed', actions: 'requestClose' },
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
  output: ({ context }) => ({ reason: context.gaveUp ? 'gave-up' : 'closed', lastClosure: context.lastClosure }),
});

export type ClientMachine = typeof clientMachine;
