/**
 * Model-based tests of the session machine (machines/session.machine.ts),
 * docs/sessions.md.
 *
 * Model: the machine itself, walked by `xstate/graph`'s TestModel.
 * System under test: the same machine on a simulated clock with a fake
 * `carrier` that records its commands, run on both hosts: an XState actor and
 * the server's MachineRunner (src/server/runner.ts), which computes the same
 * transitions with `transition()`. Each step is held against
 * `rulesSay`, a short independent statement of the session rules for the
 * events executed so far (not the machine's own table). Afterwards the runs
 * must have taken every transition of the definition (pinned below, so a
 * renamed guard or a new transition fails here), had an executor for every
 * generated event type and checked every state node: TestModel skips the
 * first and the last gap silently.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { __unsafe_getAllOwnEventDescriptors, createActor, fromCallback, initialTransition, type EventObject, type SnapshotFrom } from 'xstate';
import { TestModel } from 'xstate/graph';
import {
  sessionMachine,
  type CarrierCommand,
  type CarrierInput,
  type SessionEnding,
  type SessionEvent,
  type SessionInput,
  type SessionTiming,
} from '../../machines/session.machine.ts';
import { MachineRunner, type HostedActor } from '../../src/server/runner.ts';
import { TimerTableClock, coverageSuite, delayedEventTypes, recordTransitions, shortestPathsOf, simplePathsOf, stateIdMatcher, type Host } from '../helpers/model-coverage.ts';

const timing: SessionTiming = { resumeWindow: 1000 };
/** Each outside event arrives this long after the previous step: the window must run from the detach, not from the start. */
const EVENT_GAP_MS = 10;
/** The lease of the connection that opened the session. */
const FIRST = 0;
/** Leases told apart by the model's vertices; above it, one more resume reaches no new kind of state. */
const LEASES_SEEN = 2;

const timeouts = new Map<string, 'resumeWindow'>(
  [...delayedEventTypes(sessionMachine)].map(([type, delay]) => {
    if (delay !== 'resumeWindow') throw new Error(`${type}: unknown delay ${delay}`);
    return [type, delay];
  }),
);

/**
 * The events the model may send. Reports about three leases: the first
 * connection's, the second's and the third's, so that stale reports (a detach
 * or attach from a connection the session has left behind, even two behind)
 * and reports about a lease not given yet are generated too.
 */
const samples: { [T in SessionEvent['type']]: Array<Extract<SessionEvent, { type: T }>> } = {
  detach: [0, 1, 2].map((lease) => ({ type: 'detach' as const, lease })),
  resume: [{ type: 'resume' }],
  attach: [0, 1, 2].map((lease) => ({ type: 'attach' as const, lease })),
  expire: [{ type: 'expire', detail: 'store TTL' }],
  overflow: [
    { type: 'overflow', kind: 'overflow', detail: '4097 messages, over maxMessages 4096' },
    { type: 'overflow', kind: 'evicted', detail: 'maxDetachedSessions 10000' },
  ],
  end: [{ type: 'end', detail: 'client sent end' }],
  unpersist: [{ type: 'unpersist', detail: 'session store append failed: connection refused' }],
  requestLeft: [{ type: 'requestLeft' }],
  requestsCounted: [false, true].map((aheadOfRuns) => ({ type: 'requestsCounted' as const, aheadOfRuns })),
};
const allSamples: SessionEvent[] = Object.values(samples).flat();

// ---------------------------------------------------------------------------
// The system under test

type Happening =
  | { kind: 'sent'; event: SessionEvent }
  | { kind: 'timeout' }
  | { kind: 'command'; command: CarrierCommand }
  | { kind: 'started' | 'stopped' };
type Entry = Happening & { at: number };

/** Where the fake carrier records: handed over by the run (the actor host reaches it through a module-level slot). */
let recording: Run | null = null;
const fakeCarrier = fromCallback<CarrierCommand, CarrierInput>(({ receive }) => {
  const run = recording!;
  run.record({ kind: 'started' });
  receive((command) => run.record({ kind: 'command', command }));
  return () => run.record({ kind: 'stopped' });
});
/** Provided once, as a host would. */
const sut = sessionMachine.provide({ actors: { carrier: fakeCarrier } });
/** One input for every run, as a host shares it between its sessions. */
const INPUT: SessionInput = { timing };

interface Running {
  start(): void;
  stop(): void;
  send(event: SessionEvent): void;
  getSnapshot(): SnapshotFrom<typeof sessionMachine>;
}

class Run {
  readonly clock = new TimerTableClock();
  readonly timeline: Entry[] = [];
  readonly actor: Running;
  constructor(host: Host = 'actor', taken?: Set<string>) {
    if (host === 'runner') {
      const runner = new MachineRunner(
        { machine: sessionMachine, input: INPUT, payloadFree: new Set(), clock: this.clock },
        {
          actorId: 'session:s1',
          spawn: () => {
            this.record({ kind: 'started' });
            let stopped = false;
            return {
              command: (command: CarrierCommand) => this.record({ kind: 'command', command }),
              stop: () => {
                if (!stopped) this.record({ kind: 'stopped' });
                stopped = true;
              },
            } as HostedActor<never>;
          },
          done: () => undefined,
          failed: (err) => {
            throw err;
          },
        },
      );
      this.actor = {
        start: () => void runner.start(),
        stop: () => runner.stop(),
        send: (e) => runner.send(e),
        getSnapshot: () => runner.getSnapshot(),
      };
    } else {
      const actor = createActor(sut, { input: INPUT, clock: this.clock, ...(taken && { inspect: recordTransitions(taken) }) });
      this.actor = {
        start: () => {
          recording = this;
          try {
            actor.start();
          } finally {
            recording = null;
          }
        },
        stop: () => actor.stop(),
        send: (e) => actor.send(e),
        getSnapshot: () => actor.getSnapshot(),
      };
    }
  }
  get snapshot() {
    return this.actor.getSnapshot();
  }
  record(h: Happening, at = this.clock.now()): void {
    this.timeline.push({ ...h, at });
  }
  send(event: SessionEvent): void {
    this.record({ kind: 'sent', event });
    this.actor.send(event);
  }
  deliver(event: SessionEvent): void {
    this.clock.advanceQuietly(EVENT_GAP_MS);
    this.send(event);
  }
  fireWindow(): void {
    this.record({ kind: 'timeout' }, this.clock.nextDeadline(timing.resumeWindow));
    this.clock.fireTimer(timing.resumeWindow);
  }
  commands(): CarrierCommand[] {
    return this.timeline.flatMap((e) => (e.kind === 'command' ? [e.command] : []));
  }
  drops(): Array<Extract<CarrierCommand, { type: 'carrier.drop' }>> {
    return this.commands().flatMap((c) => (c.type === 'carrier.drop' ? [c] : []));
  }
  locals(): number[] {
    return this.commands().flatMap((c) => (c.type === 'carrier.unpersist' ? [c.lease] : []));
  }
  count(kind: 'started' | 'stopped'): number {
    return this.timeline.filter((e) => e.kind === kind).length;
  }
}

// ---------------------------------------------------------------------------
// What the rules say (docs/sessions.md, "The session machine")

interface Expectation {
  phase: 'attached' | 'resuming' | 'detached' | 'unpersisted' | 'expired' | 'overflowed' | 'ended';
  lease: number;
  /** When the session was last detached: the resume window runs from here. */
  detachedAt: number;
  /** The leases of every connection the session left behind while it was still open (takeovers). */
  drops: number[];
  /** The leases told to carry the session alone (the store failed while they carried it). */
  locals: number[];
  /** The store failed on the session at some point (kept through the end). */
  unpersisted: boolean;
  /** A request was left unrun since the last resume that asked the client to re-send everything. */
  unsettled: boolean;
  /** The last resume asks the client to re-send every request it holds unacknowledged. */
  resendAll: boolean;
  ending: SessionEnding | null;
}

function rulesSay(timeline: readonly Entry[]): Expectation {
  const x: Expectation = { phase: 'attached', lease: FIRST, detachedAt: -1, drops: [], locals: [], unpersisted: false, unsettled: false, resendAll: false, ending: null };
  const live = (): boolean => x.phase === 'attached' || x.phase === 'resuming' || x.phase === 'detached' || x.phase === 'unpersisted';
  for (const h of timeline) {
    if ((h.kind !== 'sent' && h.kind !== 'timeout') || !live()) continue;
    if (h.kind === 'timeout') {
      // R12: the window passed while detached.
      if (x.phase === 'detached') {
        x.phase = 'expired';
        x.ending = { reason: 'expired', detail: `detached for the resume window (${timing.resumeWindow} ms)` };
      }
      continue;
    }
    const e = h.event;
    const current = 'lease' in e && e.lease === x.lease;
    if (e.type === 'requestLeft') {
      // A request left unrun: the next resume has the client re-send everything. Unpersisted, no resume continues it.
      if (x.phase !== 'unpersisted') x.unsettled = true;
    } else if (e.type === 'requestsCounted') {
      // A resume (carried or replaying) asks for everything when the store counted past what ran here, or a request
      // was left unrun here; that re-send settles what was left.
      if (x.phase === 'attached' || x.phase === 'resuming') {
        x.resendAll = e.aheadOfRuns || x.unsettled;
        if (x.resendAll) x.unsettled = false;
      }
    } else if (e.type === 'overflow') {
      x.phase = 'overflowed';
      x.ending = { reason: 'overflow', detail: `${e.kind}: ${e.detail}` };
    } else if (e.type === 'end') {
      x.phase = 'ended';
      x.ending = { reason: 'ended', detail: e.detail };
    } else if (e.type === 'unpersist') {
      // Store failures: a carried session goes on locally on its connection; a detached one has nothing to carry it.
      if (x.phase === 'detached') {
        x.phase = 'ended';
        x.ending = { reason: 'ended', detail: `not persisted: ${e.detail}` };
        x.unpersisted = true;
      } else if (x.phase !== 'unpersisted') {
        x.phase = 'unpersisted';
        x.locals.push(x.lease);
        x.unpersisted = true;
      }
    } else if (x.phase === 'unpersisted') {
      // Its own connection's close ends it. No resume may continue it (the host answers `restarted` instead); one that
      // reaches it all the same is not ignored: the client left the connection carrying it, which goes, and it ends.
      if (e.type === 'detach' && current) {
        x.phase = 'ended';
        x.ending = { reason: 'ended', detail: 'its connection closed, and the session could not be persisted' };
      } else if (e.type === 'resume') {
        x.drops.push(x.lease);
        x.phase = 'ended';
        x.ending = { reason: 'ended', detail: 'a resume came after the store failed on it: it cannot continue over the gap' };
      }
    } else if (e.type === 'resume') {
      // A connection still carrying (or replaying) the session is dropped: one connection per session.
      if (x.phase !== 'detached') x.drops.push(x.lease);
      // The resuming connection is the session's next one.
      x.lease += 1;
      x.phase = 'resuming';
    } else if (e.type === 'detach' && current && x.phase !== 'detached') {
      x.phase = 'detached';
      x.detachedAt = h.at;
    } else if (e.type === 'attach' && current && x.phase === 'resuming') {
      x.phase = 'attached';
    } else if (e.type === 'expire' && x.phase === 'detached') {
      x.phase = 'expired';
      x.ending = { reason: 'expired', detail: e.detail };
    }
    // Anything else (a stale connection's report, expire while a connection carries it, an unpersisted session's
    // expire or attach) changes nothing.
  }
  return x;
}

// ---------------------------------------------------------------------------
// Checks, one per state node

type Snapshot = SnapshotFrom<typeof sessionMachine>;
type Check = (run: Run, x: Expectation, model: Snapshot) => void;

function finalCheck(run: Run, x: Expectation): void {
  assert.equal(run.snapshot.status, 'done');
  assert.deepEqual(run.snapshot.output, x.ending, 'the ending names its reason and detail');
  assert.deepEqual(run.clock.pending(), [], 'R3: no timer survives the session');
  assert.equal(run.count('stopped'), 1, 'R3: the carrier is stopped: the host releases what it holds for the session');
  const before = run.timeline.length;
  for (const e of allSamples) run.send(e);
  assert.deepEqual(run.snapshot.output, x.ending, 'a final state is final');
  assert.ok(run.timeline.slice(before).every((e) => e.kind === 'sent'), 'no effect after the end');
}

const checks: Record<string, Check> = {
  '#session': (run, x, model) => {
    assert.deepEqual(run.snapshot.value, model.value, 'the SUT follows the model');
    assert.equal(run.snapshot.value, x.phase, 'the state the rules call for');
    assert.equal(run.snapshot.context.lease, x.lease, 'the connection the rules say carries the session');
    assert.deepEqual(run.drops().map((d) => d.lease), x.drops, 'every replaced connection dropped, once');
    assert.deepEqual(run.locals(), x.locals, 'the carrying connection told to go local once, when the store failed');
    assert.equal(run.snapshot.context.unpersisted, x.unpersisted, 'the store failure is remembered, through the end');
    assert.equal(run.snapshot.context.unsettled, x.unsettled, 'a request left unrun is remembered until a resume asks for everything');
    assert.equal(run.snapshot.context.resendAll, x.resendAll, 'what the last resume asks the client to re-send');
    assert.equal(run.count('started'), 1, 'one carrier per session');
  },
  '#session.attached': (run) => {
    assert.equal(run.count('stopped'), 0, 'the carrier lives while the session does');
    assert.deepEqual(run.clock.pending(), [], 'no resume window while a connection carries the session');
  },
  '#session.resuming': (run) => {
    assert.deepEqual(run.clock.pending(), [], 'no resume window while replaying: the client is here');
  },
  '#session.detached': (run, x) => {
    assert.deepEqual(
      run.clock.pending().map((t) => [t.start, t.timeout]),
      [[x.detachedAt, timing.resumeWindow]],
      'one resume window, from the last detach',
    );
  },
  '#session.unpersisted': (run) => {
    assert.equal(run.count('stopped'), 0, 'the carrier lives while its connection carries the session');
    assert.deepEqual(run.clock.pending(), [], 'no resume window: nothing may resume it');
  },
  '#session.expired': finalCheck,
  '#session.overflowed': finalCheck,
  '#session.ended': finalCheck,
};

// ---------------------------------------------------------------------------
// Executors and the model

type Executor = (run: Run, event: EventObject) => void;
const executors: Record<string, Executor> = {
  'xstate.init': (run) => void run.actor.start(),
  ...Object.fromEntries(Object.keys(samples).map((type): [string, Executor] => [type, (run, e) => run.deliver(e as SessionEvent)])),
  ...Object.fromEntries([...timeouts.keys()].map((type): [string, Executor] => [type, (run) => run.fireWindow()])),
};

const vertex = (s: Snapshot): string => JSON.stringify([s.status, s.value, Math.min(s.context.lease, LEASES_SEEN), s.context.ending]);

const model = new TestModel(sessionMachine, {
  input: INPUT,
  // Every event in every live state, handled or not: an event that should be ignored and is not shows up against rulesSay.
  events: (snapshot) =>
    snapshot.status !== 'active'
      ? []
      : [
          ...allSamples,
          ...__unsafe_getAllOwnEventDescriptors(snapshot)
            .filter((type) => timeouts.has(type))
            .map((type) => ({ type }) as unknown as SessionEvent),
        ],
  stateMatcher: stateIdMatcher(sessionMachine),
});

/** Shortest paths to every transition (the vertex includes the step that led to it, so self-loops end some path too). */
const edgePaths = shortestPathsOf(model, {
  serializeState: (s, e, prev) => (e && prev ? `${vertex(s)} via ${JSON.stringify(e)} from ${vertex(prev)}` : vertex(s)),
});
/** Every cycle-free route to every state: longer histories (takeover after resume, stale reports) for the oracle. */
const simplePaths = simplePathsOf(model, { serializeState: vertex });

const label = (e: EventObject): string => {
  if (timeouts.has(e.type)) return '⏰resumeWindow';
  const s = e as SessionEvent;
  if (s.type === 'requestsCounted') return `${s.type}(${s.aheadOfRuns ? 'ahead' : 'not ahead'})`;
  return 'lease' in s ? `${s.type}(${s.lease})` : 'kind' in s ? `${s.type}(${s.kind})` : s.type;
};

/** The definition's transitions, pinned: a new, renamed or re-guarded transition must be seen here first. */
const EXPECTED_TRANSITIONS = [
  'session: overflow → session.overflowed',
  'session: end → session.ended',
  'session.attached: detach if fromCurrentConnection → session.detached',
  'session.attached: resume → session.resuming',
  'session.attached: unpersist → session.unpersisted',
  'session.attached: requestLeft → (no target)',
  'session.attached: requestsCounted[0] if mustResendAll → (no target)',
  'session.attached: requestsCounted[1] otherwise → (no target)',
  'session.resuming: attach if fromCurrentConnection → session.attached',
  'session.resuming: detach if fromCurrentConnection → session.detached',
  'session.resuming: resume → session.resuming (reenter)',
  'session.resuming: unpersist → session.unpersisted',
  'session.resuming: requestLeft → (no target)',
  'session.resuming: requestsCounted[0] if mustResendAll → (no target)',
  'session.resuming: requestsCounted[1] otherwise → (no target)',
  'session.detached: resume → session.resuming',
  'session.detached: expire → session.expired',
  'session.detached: unpersist → session.ended',
  'session.detached: requestLeft → (no target)',
  'session.detached: xstate.after.resumeWindow.session.detached → session.expired',
  'session.unpersisted: detach if fromCurrentConnection → session.ended',
  'session.unpersisted: resume → session.ended',
];

const suite = coverageSuite({
  machine: sessionMachine,
  transitions: EXPECTED_TRANSITIONS,
  executors,
  checks,
  rulesSay: (run: Run) => rulesSay(run.timeline),
  stop: (run) => run.actor.stop(),
  label,
});

describe('session machine, model-based (docs/sessions.md; R12 expiry, R3 no timer left)', () => {
  test('the model yields paths', () => {
    assert.ok(edgePaths.length > 0 && simplePaths.length > edgePaths.length);
  });

  suite.pathTests(
    [
      ['shortest path to every transition', edgePaths],
      ['every simple path', simplePaths],
    ],
    (host, taken) => new Run(host, taken),
  );

  describe('coverage (TestModel skips these gaps silently)', () => suite.coverageTests());
});

// ---------------------------------------------------------------------------
// Focused examples

for (const host of ['actor', 'runner'] as const) describe(`session machine, examples, on ${host === 'actor' ? 'an XState actor' : 'the server MachineRunner'}`, () => {
  test('the resume window runs from the last detach, not the first: a resume and a second cut restart it', () => {
    const run = new Run(host);
    run.actor.start();
    run.send({ type: 'detach', lease: 0 });
    run.clock.increment(timing.resumeWindow - 1);
    run.send({ type: 'resume' });
    run.send({ type: 'attach', lease: 1 });
    run.send({ type: 'detach', lease: 1 });
    run.clock.increment(timing.resumeWindow - 1);
    assert.equal(run.snapshot.value, 'detached', 'one ms before the second window ends');
    run.clock.increment(1);
    assert.equal(run.snapshot.status, 'done');
    assert.deepEqual(run.snapshot.output, { reason: 'expired', detail: 'detached for the resume window (1000 ms)' });
  });

  test('a takeover (half-open cut, R4 not yet fired) drops the old connection, and its late detach changes nothing', () => {
    const run = new Run(host);
    run.actor.start();
    run.send({ type: 'resume' });
    assert.deepEqual(run.drops(), [{ type: 'carrier.drop', lease: 0, reason: 'session resumed on another connection' }]);
    run.send({ type: 'detach', lease: 0 }); // the heartbeat finds the first connection dead later
    assert.equal(run.snapshot.value, 'resuming');
    run.send({ type: 'attach', lease: 1 });
    assert.equal(run.snapshot.value, 'attached');
    assert.deepEqual(run.clock.pending(), []);
  });

  test('a store failure while carried: the carrier goes local once; its connection\'s close ends it, remembered as unpersisted', () => {
    const run = new Run(host);
    run.actor.start();
    run.send({ type: 'unpersist', detail: 'session store append failed: timeout' });
    assert.equal(run.snapshot.value, 'unpersisted');
    run.send({ type: 'unpersist', detail: 'session store join failed: timeout' });
    assert.deepEqual(run.locals(), [0], 'told once, for the connection that carries it');
    run.send({ type: 'detach', lease: 1 });
    run.send({ type: 'attach', lease: 0 });
    assert.equal(run.snapshot.value, 'unpersisted', 'a report about a lease never given, and an attach, change nothing');
    assert.deepEqual(run.clock.pending(), []);
    run.send({ type: 'detach', lease: 0 });
    assert.equal(run.snapshot.status, 'done');
    assert.deepEqual(run.snapshot.output, { reason: 'ended', detail: 'its connection closed, and the session could not be persisted' });
    assert.equal(run.snapshot.context.unpersisted, true, 'kept through the end: a late reply must not go to the store');
  });

  test('a resume that reaches an unpersisted session is not ignored: the connection carrying it is dropped and the session ends (it cannot continue over the gap)', () => {
    const run = new Run(host);
    run.actor.start();
    run.send({ type: 'unpersist', detail: 'session store append failed: timeout' });
    run.send({ type: 'resume' });
    assert.deepEqual(run.drops(), [{ type: 'carrier.drop', lease: 0, reason: 'session resumed on another connection' }], 'the connection it carried on goes (its client left it)');
    assert.equal(run.snapshot.status, 'done');
    assert.deepEqual(run.snapshot.output, { reason: 'ended', detail: 'a resume came after the store failed on it: it cannot continue over the gap' });
    assert.equal(run.snapshot.context.lease, 0, 'no lease given: nothing resumed it');
    assert.equal(run.snapshot.context.unpersisted, true);
    assert.equal(run.count('stopped'), 1, 'R3: the carrier is stopped');
  });

  test('a store failure while detached ends the session at once: nothing carries it', () => {
    const run = new Run(host);
    run.actor.start();
    run.send({ type: 'detach', lease: 0 });
    run.send({ type: 'unpersist', detail: 'session store append failed: timeout' });
    assert.deepEqual(run.snapshot.output, { reason: 'ended', detail: 'not persisted: session store append failed: timeout' });
    assert.deepEqual(run.locals(), []);
    assert.deepEqual(run.clock.pending(), [], 'R3: the resume window is cancelled');
  });

  test('a request left unrun makes the next resume ask the client for everything, once: the resume after it asks only for what the store counted past what ran here', () => {
    const run = new Run(host);
    run.actor.start();
    run.send({ type: 'requestLeft' }); // its connection went while it waited on another process's count
    run.send({ type: 'detach', lease: 0 });
    run.send({ type: 'resume' });
    run.send({ type: 'requestsCounted', aheadOfRuns: false });
    assert.deepEqual([run.snapshot.context.resendAll, run.snapshot.context.unsettled], [true, false], 'everything: the store\'s last count is past the request left');
    run.send({ type: 'attach', lease: 1 });
    run.send({ type: 'detach', lease: 1 });
    run.send({ type: 'resume' });
    run.send({ type: 'requestsCounted', aheadOfRuns: false });
    assert.equal(run.snapshot.context.resendAll, false, 'settled by the re-send: only what comes after the store\'s last count');
    run.send({ type: 'requestsCounted', aheadOfRuns: true });
    assert.equal(run.snapshot.context.resendAll, true, 'the store counted past what ran here (another process ran them): everything');
    assert.equal(run.snapshot.value, 'resuming', 'neither changes the state');
  });

  test('a bound ends the session in any live state, naming the bound', () => {
    for (const prefix of [[], [{ type: 'detach', lease: 0 }], [{ type: 'resume' }], [{ type: 'unpersist', detail: 'x' }]] as SessionEvent[][]) {
      const run = new Run(host);
      run.actor.start();
      for (const e of prefix) run.send(e);
      run.send({ type: 'overflow', kind: 'memory', detail: 'maxBufferedBytes 268435456' });
      assert.deepEqual(run.snapshot.output, { reason: 'overflow', detail: 'memory: maxBufferedBytes 268435456' });
      assert.deepEqual(run.clock.pending(), []);
    }
  });
});

describe('session machine, shared between sessions (no id in its context or input)', () => {
  test('its initial state arms no delay and commands nothing: a host may start it at the session\'s first event (src/server/sessions.ts)', () => {
    const [snapshot, actions] = initialTransition(sessionMachine, { timing });
    assert.equal(snapshot.value, 'attached');
    assert.equal(snapshot.context.lease, 0);
    assert.deepEqual(
      actions.map((a) => [a.type, (a.params as { id?: string } | undefined)?.id]),
      [['xstate.spawnChild', 'carrier']],
      'entering it only starts the carrier, which does nothing until commanded',
    );
  });


  test('runs of one input start from one snapshot and share it through a detach, a resume and an attach', () => {
    const input: SessionInput = { timing };
    const host = { actorId: 'session', spawn: () => ({ command: () => undefined, stop: () => undefined }) as HostedActor<never>, done: () => undefined, failed: (err: unknown) => { throw err; } };
    const config = { machine: sessionMachine, input, payloadFree: new Set<string>(), clock: new TimerTableClock() };
    const a = new MachineRunner(config, host).start();
    const b = new MachineRunner(config, host).start();
    assert.equal(a.getSnapshot(), b.getSnapshot(), 'one initial snapshot for every session');
    for (const event of [{ type: 'detach', lease: 0 }, { type: 'resume' }, { type: 'attach', lease: 1 }] as SessionEvent[]) {
      a.send(event);
      b.send(event);
      assert.equal(a.getSnapshot(), b.getSnapshot(), `the same snapshot after ${event.type}`);
    }
    assert.equal(a.getSnapshot().context.lease, 1);
    a.stop();
    b.stop();
  });
});
