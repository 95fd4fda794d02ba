/**
 * The wait for a request another process counted (docs/sessions.md,
 * "Requests run once, even when the connection goes meanwhile"). When a
 * session connection re-sends a request and the store answers `pending` (a
 * process counted it and has not finished it: slow, or still on its way to
 * run it), the request must not run here meanwhile (it would run twice). So
 * the connection asks the store again, after a delay that doubles, until the
 * answer is something else (its reply: `duplicate`; the counting process is
 * gone: `new`) or the connection goes. Later requests of the session wait
 * behind it (request order).
 *
 *   checking ──pending──▶ backingOff ──after retry (doubling)──▶ asking ──pending──▶ backingOff …
 *   checking | asking ──settled──▶ answered ;  ──gone | failed──▶ abandoned ;  ──local──▶ run
 *   ──pending, counted here by no connection and not run──▶ run
 *   ──pending, counted here, past hereMax──▶ replied (it ran here) | run
 *
 * A count made by this process is only this process's to judge: if none of
 * its connections still runs the request and it never ran, the count's
 * answer was lost (a store failure) and it runs here, once; and a count of
 * this process that none of its connections finishes within `hereMax` is
 * settled then (as the Redis store's lease bounds another process's count).
 * Once the store failed on the session (it is unpersisted: its connection
 * carries it alone and numbers its requests itself), the store's verdicts say
 * nothing any more: the request runs on that connection, in order, once.
 *
 * Pure definition: no store, no clock. The host (src/server/sessions.ts,
 * `SessionBinding.settlePending`) sends each verdict with the facts it knows
 * (`here`, `running`, `ran`), and provides `asker`, the one actor the machine
 * commands (`ask`: ask the store again). Hosted on the server's MachineRunner,
 * so its delays wait on the process's timer wheel. One per pending request,
 * only while it waits: an idle session has none.
 */
import { assign, fromCallback, sendTo, setup } from 'xstate';

/** Milliseconds, > 0. */
export interface PendingRequestTiming {
  /** The first wait before asking again: soon, the usual case is a reply already on its way. */
  first: number;
  /** The cap of the doubling wait. */
  max: number;
  /** A count of this process that none of its connections finishes within this long is settled. */
  hereMax: number;
}

/** One input for every wait of a host. */
export interface PendingRequestInput {
  timing: PendingRequestTiming;
}

export type PendingRequestEvent =
  /**
   * The store answered `pending` again. `here`: the count is this process's;
   * then `running`: one of its connections runs the request now, `ran`: it
   * ran here (its reply or end is on its way to the store).
   */
  | { type: 'pending'; here: boolean; running: boolean; ran: boolean }
  /** The store's answer is no longer `pending` (its reply, `new`, …): the host goes on with it. */
  | { type: 'settled' }
  /** The connection closed or was taken over, or the session ended: the client re-sends the request on its next resume. */
  | { type: 'gone' }
  /** The store failed when asked again (the host reports it and closes the connection: the client resumes). */
  | { type: 'failed' }
  /**
   * The session went local (the store failed on it, before this verdict or in
   * this ask: docs/sessions.md, "Store failures"): its connection runs its
   * requests in order, once each, without the store; the store is not asked again.
   */
  | { type: 'local' };

/** What the machine asks of its `asker`. */
export type AskerCommand = { type: 'ask' };

/** How the wait ended: the final state's name. */
export type PendingRequestOutcome = 'answered' | 'run' | 'replied' | 'abandoned';

export interface PendingRequestContext {
  timing: PendingRequestTiming;
  /** The next wait, ms. */
  delay: number;
  /** `hereMax` has passed since the wait began. */
  overdue: boolean;
}

export const pendingRequestMachine = setup({
  types: {} as {
    context: PendingRequestContext;
    events: PendingRequestEvent;
    input: PendingRequestInput;
  },
  actors: {
    /** The host's side: asks the store about the request again and reports the verdict. */
    asker: fromCallback<AskerCommand, undefined>(() => undefined),
  },
  delays: {
    retry: ({ context }) => context.delay,
    hereMax: ({ context }) => context.timing.hereMax,
  },
  guards: {
    /** Counted here, run by no connection here, and never run here: its count's answer was lost. */
    countLostHere: ({ event }) => event.type === 'pending' && event.here && !event.running && !event.ran,
    /** Counted here, past hereMax, and it ran here: its reply is on its way. */
    overdueRanHere: ({ context, event }) => event.type === 'pending' && event.here && context.overdue && event.ran,
    /** Counted here, past hereMax, and still not run (a connection of this process holds it for too long). */
    overdueHere: ({ context, event }) => event.type === 'pending' && event.here && context.overdue,
  },
  actions: {
    ask: sendTo('asker', { type: 'ask' }),
    /** The next wait is twice as long, up to the cap. */
    doubleDelay: assign({ delay: ({ context }) => Math.min(context.delay * 2, context.timing.max) }),
    markOverdue: assign({ overdue: true }),
  },
}).createMachine({
  id: 'pendingRequest',
  context: ({ input }) => ({ timing: input.timing, delay: input.timing.first, overdue: false }),
  invoke: { id: 'asker', src: 'asker' },
  initial: 'waiting',
  // Judged at the next verdict (with its facts), not at the timer.
  after: { hereMax: { actions: 'markOverdue' } },
  states: {
    waiting: {
      description: 'A verdict is due: the one that began the wait (`checking`), or the store is asked again (`asking`).',
      initial: 'checking',
      states: {
        checking: {
          description: 'The store answered `pending` when the request arrived; the host reports its facts.',
        },
        asking: {
          description: 'The store is asked about the request again.',
          entry: 'ask',
        },
      },
      on: {
        pending: [
          { guard: 'countLostHere', target: 'run' },
          { guard: 'overdueRanHere', target: 'replied' },
          { guard: 'overdueHere', target: 'run' },
          { target: 'backingOff' },
        ],
        settled: { target: 'answered' },
        gone: { target: 'abandoned' },
        failed: { target: 'abandoned' },
        // Not abandoned: with the session local no resume will re-send it (the client's next request would skip it).
        local: { target: 'run' },
      },
    },
    backingOff: {
      description: 'Still counted elsewhere: asked again after a wait that doubles, from `first` up to `max`.',
      after: { retry: { target: 'waiting.asking', actions: 'doubleDelay' } },
    },
    answered: { type: 'final', description: 'The store answered (its reply, or `new`): the host goes on with that answer.' },
    run: {
      type: 'final',
      description: 'It runs here, once: this process counted it and its count is settled here, or the session went local (its connection runs its requests in order).',
    },
    replied: { type: 'final', description: 'This process ran it; its reply is on its way: answered as a duplicate.' },
    abandoned: { type: 'final', description: 'The connection went (the client re-sends it on resume) or the store failed.' },
  },
});

export type PendingRequestMachine = typeof pendingRequestMachine;

/** Event types whose payload the machine never reads (a host may share their steps by type: src/server/runner.ts). */
export const PENDING_REQUEST_PAYLOAD_FREE_EVENTS: ReadonlySet<PendingRequestEvent['type']> = new Set<PendingRequestEvent['type']>(['settled', 'gone', 'failed', 'local']);
