/**
 * The gap reader of a session connection (docs/sessions.md, "Across nodes"
 * and "Fan-out in the store"): the seqs of a session are written strictly in
 * order, so when a later seq is here and the one before it is not, or the
 * store says the stream reaches a seq this connection has not written, the
 * missing seqs are read from the store, one read at a time.
 *
 *   idle ──gap──▶ waiting (for the store's answers in flight) ──answered, still missing──▶ reading
 *   idle | waiting ──catchUp | expect──▶ reading ──readDone──▶ idle | reading (again) | waiting | failed
 *
 * - `waiting`: with a store that fans out itself, a seq that comes early is
 *   mostly the other message still on its way (this process's own append
 *   answered after the fan-out's notification, or the other way round); so
 *   the reader first waits until the store has answered what is in flight,
 *   and reads only what is still missing then. A store without that promise
 *   is read at once.
 * - `reading`: one read under way. A position asked for meanwhile (`catchUp`,
 *   `expect`) is read again after it, if still not written then (`again`).
 * - `failed`: the store did not give a seq it holds, or the read failed: the
 *   connection is closed (1011) and the client's resume replays what the
 *   store holds, rather than the connection waiting for it for ever.
 *
 * Pure definition: the host (src/server/sessions.ts, `SessionBinding`) checks
 * that its connection carries the session before it reports anything,
 * classifies each read's result (`readDone`), and provides `store`, the one
 * actor the machine commands (wait for the answers in flight, read, give up).
 * Its context holds positions only, no id: an idle reader is the snapshot
 * every reader shares, and the host starts one at a connection's first gap.
 */
import { assign, fromCallback, sendTo, setup } from 'xstate';

/** One input for every reader of a host. */
export interface GapReaderInput {
  /** The store can say when it has answered what is in flight (`SessionStore.answered`): wait for that before reading. */
  awaitAnswers: boolean;
}

/** How a read ended, as the host classifies it. */
export type ReadOutcome =
  /** Everything up to what is here is written now (or nothing was missing any more). */
  | 'done'
  /** A later seq is held and the one before it is newer than the read saw: on its way, as any early seq's predecessor. */
  | 'inFlight'
  /** The store did not give a seq it was said to hold, or one the read should have had. */
  | 'lost'
  /** The store failed. */
  | 'failed'
  /** The connection no longer carries the session (closed, taken over, unpersisted): nothing to read for it. */
  | 'gone';

export type GapReaderEvent =
  /** A later seq is held and the one before it is missing (the connection is not pushing back). */
  | { type: 'gap' }
  /** The store answered what was in flight when `waiting` began. `missing`: the gap is still there. */
  | { type: 'answered'; missing: boolean }
  /** The session's stream reaches `seq` (a store that fans out itself says so), past what this connection wrote. */
  | { type: 'catchUp'; seq: number }
  /**
   * Seq `seq` is in the store (a reply another process stored), past what this
   * connection wrote. `paused`: the socket pushes back; it is read with the
   * next gap.
   */
  | { type: 'expect'; seq: number; paused: boolean }
  /** The read finished: how, and the highest seq written on the connection now. */
  | { type: 'readDone'; outcome: ReadOutcome; written: number };

export type GapStoreCommand =
  /** Tell the machine (`answered`) once the store has answered what is in flight. */
  | { type: 'awaitAnswers' }
  /** Read what follows the last seq written; `expecting`: a seq the store holds that the read must give (0 none). */
  | { type: 'read'; expecting: number }
  /** Close the connection (1011, `reason`): the client resumes, and the store's replay fills the gap. */
  | { type: 'giveUp'; reason: string };

export interface GapReaderContext {
  awaitAnswers: boolean;
  /** A seq known to be in the store that the connection must write (a reply stored by another process), 0 none. */
  expecting: number;
  /** A position asked for while a read was under way: read again after it if still not written, 0 none. */
  again: number;
}

export const gapReaderMachine = setup({
  types: {} as {
    context: GapReaderContext;
    events: GapReaderEvent;
    input: GapReaderInput;
  },
  actors: {
    /** The host's side: the store's answers in flight, the read, and the connection's close. */
    store: fromCallback<GapStoreCommand, undefined>(() => undefined),
  },
  guards: {
    awaitAnswers: ({ context }) => context.awaitAnswers,
    stillMissing: ({ event }) => event.type === 'answered' && event.missing,
    paused: ({ event }) => event.type === 'expect' && event.paused,
    /** Held by the store and not given, or the store failed. */
    readLost: ({ event }) => event.type === 'readDone' && (event.outcome === 'lost' || event.outcome === 'failed'),
    /** A position asked for during the read is still not written: the read began before it. */
    askedAgain: ({ context, event }) => event.type === 'readDone' && event.outcome !== 'gone' && context.again > event.written,
    readInFlight: ({ event }) => event.type === 'readDone' && event.outcome === 'inFlight',
    readInFlightAwait: ({ context, event }) => event.type === 'readDone' && event.outcome === 'inFlight' && context.awaitAnswers,
  },
  actions: {
    awaitAnswers: sendTo('store', { type: 'awaitAnswers' }),
    /** This read covers every position asked for so far. */
    read: sendTo('store', ({ context }) => ({ type: 'read' as const, expecting: context.expecting })),
    startRead: assign({ again: 0 }),
    giveUp: sendTo('store', ({ event }) => ({
      type: 'giveUp' as const,
      reason: event.type === 'readDone' && event.outcome === 'failed' ? 'session store unavailable' : 'session seq gap',
    })),
    recordExpected: assign({
      expecting: ({ context, event }) => (event.type === 'expect' ? Math.max(context.expecting, event.seq) : context.expecting),
    }),
    readAgainAfter: assign({
      again: ({ context, event }) => (event.type === 'expect' || event.type === 'catchUp' ? Math.max(context.again, event.seq) : context.again),
    }),
  },
}).createMachine({
  id: 'gapReader',
  context: ({ input }) => ({ awaitAnswers: input.awaitAnswers, expecting: 0, again: 0 }),
  invoke: { id: 'store', src: 'store' },
  initial: 'idle',
  states: {
    idle: {
      description: 'Every seq is written in order as it comes; nothing is missing, or a missing one waits for the next gap.',
      on: {
        gap: [{ guard: 'awaitAnswers', target: 'waiting' }, { target: 'reading' }],
        catchUp: { target: 'reading' },
        expect: [{ guard: 'paused', actions: 'recordExpected' }, { target: 'reading', actions: 'recordExpected' }],
      },
    },
    waiting: {
      description: 'A seq came early: the store answers what is in flight first (the missing one is mostly on its way).',
      entry: 'awaitAnswers',
      on: {
        answered: [{ guard: 'stillMissing', target: 'reading' }, { target: 'idle' }],
        catchUp: { target: 'reading' },
        expect: [{ guard: 'paused', actions: 'recordExpected' }, { target: 'reading', actions: 'recordExpected' }],
      },
    },
    reading: {
      description: 'One read of what follows the last seq written; positions asked for meanwhile are read again after it.',
      entry: ['startRead', 'read'],
      on: {
        catchUp: { actions: 'readAgainAfter' },
        expect: { actions: ['recordExpected', 'readAgainAfter'] },
        readDone: [
          { guard: 'readLost', target: 'failed' },
          { guard: 'askedAgain', target: 'reading', reenter: true },
          { guard: 'readInFlightAwait', target: 'waiting' },
          { guard: 'readInFlight', target: 'reading', reenter: true },
          { target: 'idle' },
        ],
      },
    },
    failed: {
      description: 'A gap the store cannot fill: the connection is closed (1011); the client resumes and the replay fills it.',
      type: 'final',
      entry: 'giveUp',
    },
  },
});

export type GapReaderMachine = typeof gapReaderMachine;

/** Event types whose payload the machine never reads (a host may share their steps by type: src/server/runner.ts). */
export const GAP_READER_PAYLOAD_FREE_EVENTS: ReadonlySet<GapReaderEvent['type']> = new Set<GapReaderEvent['type']>(['gap']);
