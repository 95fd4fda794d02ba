/**
 * The session machine: the life of one session, which outlives its
 * connections (docs/sessions.md). Pure definition — no store, no socket, no
 * clock: the host (the supervisor, planned) sends the lifecycle facts, and
 * provides the one actor, `carrier`, that the machine commands (as the
 * connection machine commands its reader and writer, so that the server's
 * MachineRunner can host it: src/server/runner.ts).
 *
 *   attached ⇄ resuming ⇄ detached → expired
 *   (any live state) → overflowed | ended
 *
 * Like the connection machine, the data path does not run through it: the
 * messages, their sequence numbers and acknowledgements live in the session
 * store (src/adapter/session-store.ts). The machine only hears that a
 * connection left, that a client came back, that the replay is written, or
 * that a bound or the application ended the session: a handful of events per
 * connection, never one per message.
 */
import { assign, fromCallback, sendTo, setup } from 'xstate';

/** The one named delay. Milliseconds, > 0. */
export interface SessionTiming {
  /** How long a detached session waits for its client to resume (R12: then its messages become dead letters). */
  resumeWindow: number;
}

export interface SessionInput {
  /** Session id (the store's). */
  id: string;
  /** The connection that opened the session: a session starts attached. */
  connectionId: string;
  timing: SessionTiming;
}

/** Why a session ended for good. */
export type SessionEndReason = 'expired' | 'overflow' | 'ended';

/** Which bound ended a session: its own buffer, the store's total bytes, or the cap on detached sessions. */
export type SessionOverflowKind = 'overflow' | 'memory' | 'evicted';

/** The machine's output, and the tombstone a later resume is answered from. */
export interface SessionEnding {
  reason: SessionEndReason;
  /** For people: which bound, which numbers, who ended it. */
  detail: string;
}

export type SessionEvent =
  /** The connection carrying the session closed (any code: 1000 too, unless the client sent `end` first). */
  | { type: 'detach'; connectionId: string }
  /** A connection presented the session's token and a position the store can replay from. */
  | { type: 'resume'; connectionId: string }
  /** The replay is written on `connectionId`; new messages may follow it. */
  | { type: 'attach'; connectionId: string }
  /** The store expired the session (its TTL, a sweep): the same as the resume window passing. */
  | { type: 'expire'; detail: string }
  /** A bound was exceeded; the store has made the session's messages dead letters. */
  | { type: 'overflow'; kind: SessionOverflowKind; detail: string }
  /** The client sent `end`, or the application ended the session. */
  | { type: 'end'; detail: string };

/** What the machine asks of its `carrier` (the host side of the session). */
export type CarrierCommand =
  /** Terminate this connection: another one took the session over (a half-open cut the heartbeat has not found yet). */
  { type: 'carrier.drop'; connectionId: string; reason: string };

export interface CarrierInput {
  /** Session id. */
  id: string;
}

export interface SessionContext {
  id: string;
  timing: SessionTiming;
  /** The connection that carries (attached) or is resuming the session; the last one while detached. */
  connectionId: string;
  /** Resumes so far (takeovers included). */
  resumes: number;
  /** Set on reaching a final state. */
  ending: SessionEnding | null;
}

export const sessionMachine = setup({
  types: {} as {
    context: SessionContext;
    events: SessionEvent;
    input: SessionInput;
    output: SessionEnding;
  },
  actors: {
    /**
     * The host side of the session: drops replaced connections. Lives as long
     * as the session; stopping it (a final state) releases what the host holds
     * for the session (R3).
     */
    carrier: fromCallback<CarrierCommand, CarrierInput>(() => undefined),
  },
  delays: {
    resumeWindow: ({ context }) => context.timing.resumeWindow,
  },
  guards: {
    /** A detach or attach about a connection the session has since left behind (taken over) changes nothing. */
    fromCurrentConnection: ({ context, event }) =>
      (event.type === 'detach' || event.type === 'attach') && event.connectionId === context.connectionId,
  },
  actions: {
    takeConnection: assign({
      connectionId: ({ event }) => (event as Extract<SessionEvent, { type: 'resume' }>).connectionId,
      resumes: ({ context }) => context.resumes + 1,
    }),
    /** The connection being replaced is still open (half-open or still replaying): the host terminates it. */
    dropCurrentConnection: sendTo('carrier', ({ context }) => ({
      type: 'carrier.drop' as const,
      connectionId: context.connectionId,
      reason: 'session resumed on another connection',
    })),
    recordOverflow: assign({
      ending: ({ event }) => {
        const e = event as Extract<SessionEvent, { type: 'overflow' }>;
        return { reason: 'overflow' as const, detail: `${e.kind}: ${e.detail}` };
      },
    }),
    recordEnd: assign({
      ending: ({ event }) => ({ reason: 'ended' as const, detail: (event as Extract<SessionEvent, { type: 'end' }>).detail }),
    }),
    recordExpireEvent: assign({
      ending: ({ event }) => ({ reason: 'expired' as const, detail: (event as Extract<SessionEvent, { type: 'expire' }>).detail }),
    }),
    recordWindowPassed: assign({
      ending: ({ context }) => ({ reason: 'expired' as const, detail: `detached for the resume window (${context.timing.resumeWindow} ms)` }),
    }),
  },
}).createMachine({
  id: 'session',
  context: ({ input }) => ({
    id: input.id,
    timing: input.timing,
    connectionId: input.connectionId,
    resumes: 0,
    ending: null,
  }),
  invoke: { id: 'carrier', src: 'carrier', input: ({ context }) => ({ id: context.id }) },
  initial: 'attached',
  // R12/R11: a bound ends the session in any live state; so does an explicit end.
  on: {
    overflow: { target: '.overflowed', actions: 'recordOverflow' },
    end: { target: '.ended', actions: 'recordEnd' },
  },
  states: {
    attached: {
      description: 'A connection carries the session: messages are written and kept until the client acknowledges them.',
      on: {
        detach: { guard: 'fromCurrentConnection', target: 'detached' },
        // The client came back before the old connection was found dead (half-open, R4): take it over.
        resume: { target: 'resuming', actions: ['dropCurrentConnection', 'takeConnection'] },
      },
    },
    resuming: {
      description: 'A valid token and position arrived: the replay is written first, new messages wait behind it.',
      on: {
        attach: { guard: 'fromCurrentConnection', target: 'attached' },
        detach: { guard: 'fromCurrentConnection', target: 'detached' },
        // A second resume while replaying: the newest connection wins.
        resume: { target: 'resuming', reenter: true, actions: ['dropCurrentConnection', 'takeConnection'] },
      },
    },
    detached: {
      description: 'No connection: messages are kept for the client, within the bounds, for one resume window from the detach.',
      on: {
        resume: { target: 'resuming', actions: 'takeConnection' },
        expire: { target: 'expired', actions: 'recordExpireEvent' },
      },
      after: {
        // R12: the window passed; the store makes the kept messages dead letters.
        resumeWindow: { target: 'expired', actions: 'recordWindowPassed' },
      },
    },
    expired: {
      description: 'The resume window passed while detached; a resume gets `expired` while the tombstone lasts.',
      type: 'final',
    },
    overflowed: {
      description: 'A bound was exceeded (the session buffer, the store total, the detached cap); a resume gets `overflow`.',
      type: 'final',
    },
    ended: {
      description: 'Ended by the client (`end`) or the application; a resume gets `unknown`.',
      type: 'final',
    },
  },
  output: ({ context }) => context.ending!,
});

export type SessionMachine = typeof sessionMachine;
