/**
 * The session machine: the life of one session, which outlives its
 * connections (docs/sessions.md). Pure definition — no store, no socket, no
 * clock: the host (the supervisor, planned) sends the lifecycle facts, and
 * provides the one actor, `carrier`, that the machine commands (as the
 * connection machine commands its reader and writer, so that the server's
 * MachineRunner can host it: src/server/runner.ts).
 *
 *   attached ⇄ resuming ⇄ detached → expired
 *   attached | resuming ──unpersist──▶ unpersisted ──detach | resume──▶ ended
 *   detached ──unpersist──▶ ended
 *   (any live state) → overflowed | ended
 *   attached | resuming | detached ──requestLeft──▶ (stays; unsettled)
 *   attached | resuming ──requestsCounted──▶ (stays; resendAll = aheadOfRuns or unsettled)
 *
 * Like the connection machine, the data path does not run through it: the
 * messages, their sequence numbers and acknowledgements live in the session
 * store (src/adapter/session-store.ts). The machine only hears that a
 * connection left, that a client came back, that the replay is written, or
 * that a bound or the application ended the session: a handful of events per
 * connection, never one per message.
 *
 * No id of any kind is in its context or input: the session's id is the
 * host's, and the connections are named by their lease, the session's own
 * count of them (0 the one that opened it, one more per resume). So every
 * session of a host starts from the same snapshot, and the host can share
 * snapshots and steps between sessions as it does between connections (an
 * idle session costs a pointer, not a machine: src/server/runner.ts).
 */
import { assign, fromCallback, sendTo, setup } from 'xstate';

/** The one named delay. Milliseconds, > 0. */
export interface SessionTiming {
  /** How long a detached session waits for its client to resume (R12: then its messages become dead letters). */
  resumeWindow: number;
}

/** One input for every session of a host: the session starts attached, on lease 0 (the connection that opened it). */
export interface SessionInput {
  timing: SessionTiming;
}

/**
 * Which of the session's connections an event or command is about: 0 for the
 * one that opened the session, n for the one that made its n-th resume (the
 * machine assigns it on `resume`, the host keeps it with that connection).
 */
export type Lease = number;

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
  | { type: 'detach'; lease: Lease }
  /** A connection presented the session's token and a position the store can replay from: it gets the next lease. */
  | { type: 'resume' }
  /** The replay is written on the connection holding `lease`; new messages may follow it. */
  | { type: 'attach'; lease: Lease }
  /** The store expired the session (its TTL, a sweep): the same as the resume window passing. */
  | { type: 'expire'; detail: string }
  /** A bound was exceeded; the store has made the session's messages dead letters. */
  | { type: 'overflow'; kind: SessionOverflowKind; detail: string }
  /** The client sent `end`, or the application ended the session. */
  | { type: 'end'; detail: string }
  /**
   * The store failed on the session (an append, a join, an attach…): it can
   * no longer be resumed over what the store missed (docs/sessions.md,
   * "Store failures"). `detail` names the operation and the error.
   */
  | { type: 'unpersist'; detail: string }
  /**
   * A request of the session was left unrun on this host (its connection went, or the session moved, while it
   * waited on another process's count; its count failed or was read a lease late): its count may be open in the
   * store below the highest request this host ran, so the next resume here has the client re-send everything.
   */
  | { type: 'requestLeft' }
  /**
   * A resume read the store's record of the session. `aheadOfRuns`: the store counted requests past the highest
   * this host ran (another process counted them, or took them over). The machine decides what the resume asks the
   * client to re-send (`resendAll`).
   */
  | { type: 'requestsCounted'; aheadOfRuns: boolean };

/** What the machine asks of its `carrier` (the host side of the session). */
export type CarrierCommand =
  /** Terminate this connection: another one took the session over (a half-open cut the heartbeat has not found yet). */
  | { type: 'carrier.drop'; lease: Lease; reason: string }
  /**
   * The connection holding `lease` carries the session alone from now on: it
   * numbers its messages past anything the store assigned (the host's seq
   * jump, LOCAL_SEQ_JUMP in src/server/sessions.ts), so no resume continues
   * over the store's gap.
   */
  | { type: 'carrier.unpersist'; lease: Lease };

/** The carrier's input: nothing (the host knows which session it serves). */
export type CarrierInput = undefined;

export interface SessionContext {
  timing: SessionTiming;
  /**
   * The lease of the connection that carries (attached) or is resuming the
   * session; the last one's while detached. Also the number of resumes so far
   * (takeovers included).
   */
  lease: Lease;
  /** Set on reaching a final state. */
  ending: SessionEnding | null;
  /**
   * The store failed on the session (it went through `unpersisted`, or ended
   * on an `unpersist` while detached). Kept in the final snapshot: a reply of
   * a request still running must not go to the store's copy (it is being ended).
   */
  unpersisted: boolean;
  /** A request was left unrun here since the last resume that had the client re-send everything (`requestLeft`). */
  unsettled: boolean;
  /**
   * What the last resume asks of the client (`requestsCounted`): true, re-send every request it holds
   * unacknowledged (`attached.cseq` 0; the store says what each is); false, only those past the store's last count.
   */
  resendAll: boolean;
}

/**
 * What a resume asks the client to re-send (docs/sessions.md, "A process frozen past its lease"): the host reports
 * each request left unrun and, at each resume, whether the store counted past what ran here; the machine decides.
 * Not in `unpersisted`: its connection runs its requests itself, and no resume continues it.
 */
const REQUEST_LEFT = { requestLeft: { actions: 'markUnsettled' as const } };
const REQUESTS_COUNTED = {
  requestsCounted: [{ guard: 'mustResendAll' as const, actions: 'askResendAll' as const }, { actions: 'askResendLater' as const }],
};

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
      (event.type === 'detach' || event.type === 'attach') && event.lease === context.lease,
    /**
     * A resume must have the client re-send every request it holds unacknowledged: the store counted requests this
     * host did not run, or a request was left unrun here (below the highest one run here, where a resume that told
     * the client the store's last count had it re-send nothing, and that request was never answered).
     */
    mustResendAll: ({ context, event }) => event.type === 'requestsCounted' && (event.aheadOfRuns || context.unsettled),
  },
  actions: {
    /** The resuming connection gets the next lease; reports about the previous one change nothing from now on. */
    takeConnection: assign({ lease: ({ context }) => context.lease + 1 }),
    /** The connection being replaced is still open (half-open or still replaying): the host terminates it. */
    dropCurrentConnection: sendTo('carrier', ({ context }) => ({
      type: 'carrier.drop' as const,
      lease: context.lease,
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
    /** The connection goes on carrying the session locally; the host ends the store's copy once the store answers. */
    goLocal: sendTo('carrier', ({ context }) => ({ type: 'carrier.unpersist' as const, lease: context.lease })),
    markUnpersisted: assign({ unpersisted: true }),
    /** Detached when the store failed: nothing carries it, and no resume may continue it. */
    recordNotPersisted: assign({
      unpersisted: true,
      ending: ({ event }) => ({ reason: 'ended' as const, detail: `not persisted: ${(event as Extract<SessionEvent, { type: 'unpersist' }>).detail}` }),
    }),
    /** Its connection closed: nothing can carry it any more. */
    recordLocalEnd: assign({
      ending: { reason: 'ended' as const, detail: 'its connection closed, and the session could not be persisted' },
    }),
    /** A resume reached it: its client is on another connection, and nothing may continue it over the store's gap. */
    recordResumeOverGap: assign({
      ending: { reason: 'ended' as const, detail: 'a resume came after the store failed on it: it cannot continue over the gap' },
    }),
    markUnsettled: assign({ unsettled: true }),
    /** This resume has the client re-send everything: what was left unrun is settled by the store's answers to it. */
    askResendAll: assign({ resendAll: true, unsettled: false }),
    askResendLater: assign({ resendAll: false }),
    recordWindowPassed: assign({
      ending: ({ context }) => ({ reason: 'expired' as const, detail: `detached for the resume window (${context.timing.resumeWindow} ms)` }),
    }),
  },
}).createMachine({
  id: 'session',
  context: ({ input }) => ({ timing: input.timing, lease: 0, ending: null, unpersisted: false, unsettled: false, resendAll: false }),
  invoke: { id: 'carrier', src: 'carrier' },
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
        unpersist: { target: 'unpersisted' },
        ...REQUEST_LEFT,
        // A session this host runs no machine for starts here on its resume (the store attached it: src/server/sessions.ts).
        ...REQUESTS_COUNTED,
      },
    },
    resuming: {
      description: 'A valid token and position arrived: the replay is written first, new messages wait behind it.',
      on: {
        attach: { guard: 'fromCurrentConnection', target: 'attached' },
        detach: { guard: 'fromCurrentConnection', target: 'detached' },
        // A second resume while replaying: the newest connection wins.
        resume: { target: 'resuming', reenter: true, actions: ['dropCurrentConnection', 'takeConnection'] },
        unpersist: { target: 'unpersisted' },
        ...REQUEST_LEFT,
        ...REQUESTS_COUNTED,
      },
    },
    detached: {
      description: 'No connection: messages are kept for the client, within the bounds, for one resume window from the detach.',
      on: {
        resume: { target: 'resuming', actions: 'takeConnection' },
        expire: { target: 'expired', actions: 'recordExpireEvent' },
        unpersist: { target: 'ended', actions: 'recordNotPersisted' },
        // A connection's wait on another process's count ends after its close (it asks again at most 4 times a second).
        ...REQUEST_LEFT,
      },
      after: {
        // R12: the window passed; the store makes the kept messages dead letters.
        resumeWindow: { target: 'expired', actions: 'recordWindowPassed' },
      },
    },
    unpersisted: {
      description:
        'The store failed on it: its connection carries it alone, its seqs jumped past the store\'s; no resume continues it (`restarted`; a resume that reaches it ends it and drops that connection).',
      entry: ['markUnpersisted', 'goLocal'],
      on: {
        // A takeover's stale detach changes nothing.
        detach: { guard: 'fromCurrentConnection', target: 'ended', actions: 'recordLocalEnd' },
        // The host answers a resume `restarted` instead of sending it, checking before and after the store's answers
        // (the store may fail on the session meanwhile). Should one reach it all the same, it is not ignored: the
        // client has left the connection that carries the session (half-open, R4), so that one goes, and the session
        // ends rather than going on with no client or continuing over the gap.
        resume: { target: 'ended', actions: ['dropCurrentConnection', 'recordResumeOverGap'] },
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
      description: 'Ended by the client (`end`), the application, or, unpersisted, by its connection\'s close or a resume; a resume gets `unknown` (`restarted` while the host remembers it unpersisted).',
      type: 'final',
    },
  },
  output: ({ context }) => context.ending!,
});

export type SessionMachine = typeof sessionMachine;

/** Event types whose payload the machine never reads (a host may share their steps by type: src/server/runner.ts). */
export const SESSION_PAYLOAD_FREE_EVENTS: ReadonlySet<SessionEvent['type']> = new Set<SessionEvent['type']>(['resume', 'requestLeft']);
