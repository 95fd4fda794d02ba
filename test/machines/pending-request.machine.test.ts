/**
 * Model-based tests of the pending-request machine
 * (machines/pending-request.machine.ts): the wait of a session request that
 * another process counted (docs/sessions.md, "Requests run once").
 *
 * Model: the machine itself, walked by `xstate/graph`'s TestModel.
 * System under test: the same machine on a simulated clock with a fake
 * `asker` that records its commands, on both hosts (an XState actor and the
 * server's MachineRunner, which hosts it in src/server/sessions.ts). Each
 * step is held against `rulesSay`, a short independent statement of the
 * rules (ask again after a doubling wait; a count of this process is settled
 * here when no connection runs it, or once overdue). Afterwards the runs must
 * have taken every transition of the definition (pinned below), had an
 * executor for every generated event type and checked every state node.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { __unsafe_getAllOwnEventDescriptors, createActor, fromCallback, type EventObject, type SnapshotFrom } from 'xstate';
import { TestModel } from 'xstate/graph';
import {
  pendingRequestMachine,
  PENDING_REQUEST_PAYLOAD_FREE_EVENTS,
  type AskerCommand,
  type PendingRequestEvent,
  type PendingRequestInput,
  type PendingRequestOutcome,
} from '../../machines/pending-request.machine.ts';
import { MachineRunner, type HostedActor } from '../../src/server/runner.ts';
import { TimerTableClock, coverageSuite, delayedEventTypes, recordTransitions, shortestPathsOf, simplePathsOf, stateIdMatcher, type Host } from '../helpers/model-coverage.ts';

/**
 * hereMax is far above any run of waits a path makes (a path is short), so the
 * retry timer always fires before it; hereMax is fired where no retry is armed.
 */
const INPUT: PendingRequestInput = { timing: { first: 100, max: 400, hereMax: 1_000_000 } };
const { first, max, hereMax } = INPUT.timing;
/** Each outside event arrives this long after the previous step: a wait must run from entering it. */
const EVENT_GAP_MS = 1;

const delays = delayedEventTypes(pendingRequestMachine);
const RETRY = [...delays].find(([, d]) => d === 'retry')![0];
const HERE_MAX = [...delays].find(([, d]) => d === 'hereMax')![0];

const samples: PendingRequestEvent[] = [
  { type: 'pending', here: false, running: false, ran: false },
  { type: 'pending', here: true, running: false, ran: false },
  { type: 'pending', here: true, running: true, ran: false },
  { type: 'pending', here: true, running: false, ran: true },
  { type: 'pending', here: true, running: true, ran: true },
  { type: 'settled' },
  { type: 'gone' },
  { type: 'failed' },
  { type: 'local' },
];

// ---------------------------------------------------------------------------
// The system under test

type Happening = { kind: 'sent'; event: PendingRequestEvent } | { kind: 'timeout'; delay: 'retry' | 'hereMax' } | { kind: 'ask' } | { kind: 'started' | 'stopped' };
type Entry = Happening & { at: number };

let recording: Run | null = null;
const fakeAsker = fromCallback<AskerCommand, undefined>(({ receive }) => {
  const run = recording!;
  run.record({ kind: 'started' });
  receive(() => run.record({ kind: 'ask' }));
  return () => run.record({ kind: 'stopped' });
});
const sut = pendingRequestMachine.provide({ actors: { asker: fakeAsker } });
const runnerConfig = (clock: TimerTableClock) => ({ machine: pendingRequestMachine, input: INPUT, payloadFree: PENDING_REQUEST_PAYLOAD_FREE_EVENTS, clock });

type Snapshot = SnapshotFrom<typeof pendingRequestMachine>;

class Run {
  readonly clock = new TimerTableClock();
  readonly timeline: Entry[] = [];
  readonly start: () => void;
  readonly stop: () => void;
  readonly sendRaw: (e: PendingRequestEvent) => void;
  readonly getSnapshot: () => Snapshot;
  constructor(host: Host, taken?: Set<string>) {
    if (host === 'runner') {
      let stopped = false;
      const runner = new MachineRunner(runnerConfig(this.clock), {
        actorId: 'pending:s1:1',
        spawn: () => {
          this.record({ kind: 'started' });
          return {
            command: () => this.record({ kind: 'ask' }),
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
      });
      this.start = () => void runner.start();
      this.stop = () => runner.stop();
      this.sendRaw = (e) => runner.send(e);
      this.getSnapshot = () => runner.getSnapshot();
    } else {
      const actor = createActor(sut, { input: INPUT, clock: this.clock, ...(taken && { inspect: recordTransitions(taken) }) });
      this.start = () => {
        recording = this;
        try {
          actor.start();
        } finally {
          recording = null;
        }
      };
      this.stop = () => actor.stop();
      this.sendRaw = (e) => actor.send(e);
      this.getSnapshot = () => actor.getSnapshot();
    }
  }
  record(h: Happening, at = this.clock.now()): void {
    this.timeline.push({ ...h, at });
  }
  send(event: PendingRequestEvent): void {
    this.record({ kind: 'sent', event });
    this.sendRaw(event);
  }
  deliver(event: PendingRequestEvent): void {
    this.clock.advanceQuietly(EVENT_GAP_MS);
    this.send(event);
  }
  fire(delay: 'retry' | 'hereMax', ms: number): void {
    this.record({ kind: 'timeout', delay }, this.clock.nextDeadline(ms));
    this.clock.fireTimer(ms);
  }
  count(kind: 'ask' | 'started' | 'stopped'): number {
    return this.timeline.filter((e) => e.kind === kind).length;
  }
}

// ---------------------------------------------------------------------------
// What the rules say (docs/sessions.md, "Requests run once")

interface Expectation {
  phase: 'checking' | 'asking' | 'backingOff' | PendingRequestOutcome;
  /** The wait armed on entering backingOff (or the next one). */
  delay: number;
  /** When backingOff was entered. */
  since: number;
  overdue: boolean;
  asks: number;
}

const FINAL = new Set(['answered', 'run', 'replied', 'abandoned']);

function rulesSay(timeline: readonly Entry[]): Expectation {
  const x: Expectation = { phase: 'checking', delay: first, since: -1, overdue: false, asks: 0 };
  for (const h of timeline) {
    if (FINAL.has(x.phase)) break;
    if (h.kind === 'timeout') {
      if (h.delay === 'hereMax') x.overdue = true;
      else if (x.phase === 'backingOff') {
        // Asked again; the next wait is twice as long, capped.
        x.phase = 'asking';
        x.asks++;
        x.delay = Math.min(x.delay * 2, max);
      }
      continue;
    }
    if (h.kind !== 'sent' || x.phase === 'backingOff') continue; // nothing is asked while it waits: stray reports change nothing
    const e = h.event;
    if (e.type === 'settled') x.phase = 'answered';
    else if (e.type === 'gone' || e.type === 'failed') x.phase = 'abandoned';
    else if (e.type === 'local') x.phase = 'run'; // the store failed on the session: its connection runs its requests in order
    else if (e.here && !e.running && !e.ran) x.phase = 'run'; // counted here, nobody here runs it, never ran: its count's answer was lost
    else if (e.here && x.overdue) x.phase = e.ran ? 'replied' : 'run'; // a count of this process, settled once overdue
    else {
      x.phase = 'backingOff';
      x.since = h.at;
    }
  }
  return x;
}

// ---------------------------------------------------------------------------
// Checks, one per state node

type Check = (run: Run, x: Expectation, model: Snapshot) => void;

function finalCheck(run: Run, x: Expectation): void {
  const s = run.getSnapshot();
  assert.equal(s.status, 'done');
  assert.equal(s.value, x.phase, 'the outcome the rules call for');
  assert.deepEqual(run.clock.pending(), [], 'R3: no timer survives the wait');
  assert.equal(run.count('stopped'), 1, 'R3: the asker is stopped');
  const before = run.timeline.length;
  for (const e of samples) run.send(e);
  assert.equal(run.getSnapshot().value, x.phase, 'a final state is final');
  assert.ok(run.timeline.slice(before).every((e) => e.kind === 'sent'), 'no effect after the end');
}

const hereMaxTimers = (x: Expectation): number[] => (x.overdue ? [] : [hereMax]);

const checks: Record<string, Check> = {
  '#pendingRequest': (run, x, model) => {
    const s = run.getSnapshot();
    assert.deepEqual(s.value, model.value, 'the SUT follows the model');
    assert.equal(run.count('ask'), x.asks, 'the store asked again once per wait, no more');
    assert.equal(run.count('started'), 1, 'one asker per wait');
    if (s.status === 'active') assert.equal(s.context.overdue, x.overdue);
  },
  '#pendingRequest.waiting': (run, x) => {
    assert.deepEqual(run.clock.pendingDurations(), hereMaxTimers(x), 'no retry armed while a verdict is due');
  },
  '#pendingRequest.waiting.checking': (run, x) => {
    assert.deepEqual(run.getSnapshot().value, { waiting: 'checking' });
    assert.equal(x.phase, 'checking');
    assert.equal(x.asks, 0, 'the first verdict came with the request');
  },
  '#pendingRequest.waiting.asking': (run, x) => {
    assert.deepEqual(run.getSnapshot().value, { waiting: 'asking' });
    assert.equal(x.phase, 'asking');
  },
  '#pendingRequest.backingOff': (run, x) => {
    assert.equal(x.phase, 'backingOff');
    const retry = run.clock.pending().filter((t) => t.timeout !== hereMax);
    assert.deepEqual(retry.map((t) => [t.start, t.timeout]), [[x.since, x.delay]], 'one wait, doubling from first up to max, from entering it');
  },
  '#pendingRequest.answered': finalCheck,
  '#pendingRequest.run': finalCheck,
  '#pendingRequest.replied': finalCheck,
  '#pendingRequest.abandoned': finalCheck,
};

// ---------------------------------------------------------------------------
// Executors and the model

type Executor = (run: Run, event: EventObject) => void;
const executors: Record<string, Executor> = {
  'xstate.init': (run) => run.start(),
  pending: (run, e) => run.deliver(e as PendingRequestEvent),
  settled: (run, e) => run.deliver(e as PendingRequestEvent),
  gone: (run, e) => run.deliver(e as PendingRequestEvent),
  failed: (run, e) => run.deliver(e as PendingRequestEvent),
  local: (run, e) => run.deliver(e as PendingRequestEvent),
  [RETRY]: (run) => run.fire('retry', run.getSnapshot().context.delay),
  [HERE_MAX]: (run) => run.fire('hereMax', hereMax),
};

const vertex = (s: Snapshot): string => JSON.stringify([s.status, s.value, s.context.delay, s.context.overdue]);

const model = new TestModel(pendingRequestMachine, {
  input: INPUT,
  events: (snapshot) => {
    if (snapshot.status !== 'active') return [];
    const own = __unsafe_getAllOwnEventDescriptors(snapshot);
    return [
      ...samples,
      ...(own.includes(RETRY) ? [{ type: RETRY }] : []),
      // hereMax can fire first only where no retry is armed (its deadline is far beyond any path's waits).
      ...(!snapshot.matches('backingOff') && own.includes(HERE_MAX) && !snapshot.context.overdue ? [{ type: HERE_MAX }] : []),
    ] as PendingRequestEvent[];
  },
  stateMatcher: stateIdMatcher(pendingRequestMachine),
});

const edgePaths = shortestPathsOf(model, {
  serializeState: (s, e, prev) => (e && prev ? `${vertex(s)} via ${JSON.stringify(e)} from ${vertex(prev)}` : vertex(s)),
});
const simplePaths = simplePathsOf(model, { serializeState: vertex });

const label = (e: EventObject): string => {
  if (e.type === RETRY) return '⏰retry';
  if (e.type === HERE_MAX) return '⏰hereMax';
  const p = e as PendingRequestEvent;
  return p.type === 'pending' ? `pending(${p.here ? 'here' : 'elsewhere'}${p.running ? ',running' : ''}${p.ran ? ',ran' : ''})` : p.type;
};

/** The definition's transitions, pinned: a new, renamed or re-guarded transition must be seen here first. */
const EXPECTED_TRANSITIONS = [
  'pendingRequest: xstate.after.hereMax.pendingRequest → (no target)',
  'pendingRequest.waiting: pending[0] if countLostHere → pendingRequest.run',
  'pendingRequest.waiting: pending[1] if overdueRanHere → pendingRequest.replied',
  'pendingRequest.waiting: pending[2] if overdueHere → pendingRequest.run',
  'pendingRequest.waiting: pending[3] otherwise → pendingRequest.backingOff',
  'pendingRequest.waiting: settled → pendingRequest.answered',
  'pendingRequest.waiting: gone → pendingRequest.abandoned',
  'pendingRequest.waiting: failed → pendingRequest.abandoned',
  'pendingRequest.waiting: local → pendingRequest.run',
  'pendingRequest.backingOff: xstate.after.retry.pendingRequest.backingOff → pendingRequest.waiting.asking',
];

const suite = coverageSuite({
  machine: pendingRequestMachine,
  transitions: EXPECTED_TRANSITIONS,
  executors,
  checks,
  rulesSay: (run: Run) => rulesSay(run.timeline),
  stop: (run) => run.stop(),
  label,
});

describe('pending-request machine, model-based (docs/sessions.md, requests run once)', () => {
  test('the model yields paths', () => {
    assert.ok(edgePaths.length > 0 && simplePaths.length >= edgePaths.length);
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

describe('pending-request machine, examples', () => {
  test('the waits double from first and stay at max: 100, 200, 400, 400 ms', () => {
    const run = new Run('runner');
    run.start();
    run.send({ type: 'pending', here: false, running: false, ran: false });
    const waits: number[] = [];
    for (let i = 0; i < 4; i++) {
      const retry = run.clock.pending().find((t) => t.timeout !== hereMax)!;
      waits.push(retry.timeout);
      run.fire('retry', retry.timeout);
      run.send({ type: 'pending', here: false, running: false, ran: false });
    }
    assert.deepEqual(waits, [first, 2 * first, max, max]);
    assert.equal(run.count('ask'), 4);
    run.stop();
  });
});
