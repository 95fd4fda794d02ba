/**
 * Model-based tests of the gap reader (machines/gap-reader.machine.ts): when
 * a session connection reads the seqs it missed from the store.
 *
 * Model: the machine itself, walked by `xstate/graph`'s TestModel, for both
 * kinds of store (one that says when it has answered what is in flight, and
 * one that does not). System under test: the same machine with a fake
 * `store` that records its commands, on both hosts (an XState actor and the
 * server's MachineRunner, which hosts it in src/server/sessions.ts). Each step
 * is held against `rulesSay`, a short independent statement of the rules
 * (one read at a time; a position asked for during a read is read again
 * after it; an early seq waits for the answers in flight first; a gap the
 * store cannot fill gives up). Afterwards the runs must have taken every
 * transition of the definition (pinned below), had an executor for every
 * generated event type and checked every state node.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createActor, fromCallback, type EventObject, type SnapshotFrom } from 'xstate';
import { TestModel } from 'xstate/graph';
import {
  gapReaderMachine,
  GAP_READER_PAYLOAD_FREE_EVENTS,
  type GapReaderEvent,
  type GapReaderInput,
  type GapStoreCommand,
} from '../../machines/gap-reader.machine.ts';
import { MachineRunner, type HostedActor } from '../../src/server/runner.ts';
import { coverageSuite, dedupPaths, recordTransitions, shortestPathsOf, simplePathsOf, stateIdMatcher, type Host } from '../helpers/model-coverage.ts';

/**
 * Positions: the connection has written up to 4 or 10 when a read ends; a
 * catchUp or expect names 5 (past 4, not past 10) or 9.
 */
const samples: GapReaderEvent[] = [
  { type: 'gap' },
  { type: 'answered', missing: true },
  { type: 'answered', missing: false },
  { type: 'catchUp', seq: 9 },
  { type: 'expect', seq: 5, paused: false },
  { type: 'expect', seq: 9, paused: true },
  { type: 'readDone', outcome: 'done', written: 4 },
  { type: 'readDone', outcome: 'done', written: 10 },
  { type: 'readDone', outcome: 'inFlight', written: 4 },
  { type: 'readDone', outcome: 'inFlight', written: 10 },
  { type: 'readDone', outcome: 'lost', written: 4 },
  { type: 'readDone', outcome: 'failed', written: 4 },
  { type: 'readDone', outcome: 'gone', written: 4 },
];

// ---------------------------------------------------------------------------
// The system under test

type Happening = { kind: 'sent'; event: GapReaderEvent } | { kind: 'command'; command: GapStoreCommand } | { kind: 'started' | 'stopped' };
type Snapshot = SnapshotFrom<typeof gapReaderMachine>;

let recording: Run | null = null;
const fakeStore = fromCallback<GapStoreCommand, undefined>(({ receive }) => {
  const run = recording!;
  run.record({ kind: 'started' });
  receive((command) => run.record({ kind: 'command', command }));
  return () => run.record({ kind: 'stopped' });
});
const sut = gapReaderMachine.provide({ actors: { store: fakeStore } });

class Run {
  readonly timeline: Happening[] = [];
  readonly start: () => void;
  readonly stop: () => void;
  readonly sendRaw: (e: GapReaderEvent) => void;
  readonly getSnapshot: () => Snapshot;
  constructor(host: Host, readonly input: GapReaderInput, taken?: Set<string>) {
    if (host === 'runner') {
      let stopped = false;
      const runner = new MachineRunner(
        { machine: gapReaderMachine, input, payloadFree: GAP_READER_PAYLOAD_FREE_EVENTS },
        {
          actorId: 'gap-reader:c1',
          spawn: () => {
            this.record({ kind: 'started' });
            return {
              command: (command: GapStoreCommand) => this.record({ kind: 'command', command }),
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
      this.start = () => void runner.start();
      this.stop = () => runner.stop();
      this.sendRaw = (e) => runner.send(e);
      this.getSnapshot = () => runner.getSnapshot();
    } else {
      const actor = createActor(sut, { input, ...(taken && { inspect: recordTransitions(taken) }) });
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
  record(h: Happening): void {
    this.timeline.push(h);
  }
  send(event: GapReaderEvent): void {
    this.record({ kind: 'sent', event });
    this.sendRaw(event);
  }
  commands(): GapStoreCommand[] {
    return this.timeline.flatMap((h) => (h.kind === 'command' ? [h.command] : []));
  }
  count(kind: 'started' | 'stopped'): number {
    return this.timeline.filter((h) => h.kind === kind).length;
  }
}

// ---------------------------------------------------------------------------
// What the rules say (docs/sessions.md, "Fan-out in the store")

interface Expectation {
  phase: 'idle' | 'waiting' | 'reading' | 'failed';
  expecting: number;
  again: number;
  commands: GapStoreCommand[];
}

function rulesSay(timeline: readonly Happening[], input: GapReaderInput): Expectation {
  const x: Expectation = { phase: 'idle', expecting: 0, again: 0, commands: [] };
  // One read at a time, covering every position asked for so far.
  const read = (): void => {
    x.phase = 'reading';
    x.again = 0;
    x.commands.push({ type: 'read', expecting: x.expecting });
  };
  // An early seq is mostly the other message on its way: wait for the store's answers in flight, if it can say.
  const waitOrRead = (): void => {
    if (!input.awaitAnswers) return read();
    x.phase = 'waiting';
    x.commands.push({ type: 'awaitAnswers' });
  };
  for (const h of timeline) {
    if (h.kind !== 'sent' || x.phase === 'failed') continue;
    const e = h.event;
    if (e.type === 'expect') x.expecting = Math.max(x.expecting, e.seq);
    if (x.phase === 'reading') {
      if (e.type === 'catchUp' || e.type === 'expect') x.again = Math.max(x.again, e.seq);
      else if (e.type === 'readDone') {
        if (e.outcome === 'lost' || e.outcome === 'failed') {
          x.phase = 'failed';
          x.commands.push({ type: 'giveUp', reason: e.outcome === 'failed' ? 'session store unavailable' : 'session seq gap' });
        } else if (e.outcome === 'gone') x.phase = 'idle';
        else if (x.again > e.written) read(); // asked for after this read began
        else if (e.outcome === 'inFlight') waitOrRead();
        else x.phase = 'idle';
      }
      continue;
    }
    // idle or waiting
    if (e.type === 'catchUp' || (e.type === 'expect' && !e.paused)) read();
    else if (e.type === 'gap' && x.phase === 'idle') waitOrRead();
    else if (e.type === 'answered' && x.phase === 'waiting') {
      if (e.missing) read();
      else x.phase = 'idle';
    }
  }
  return x;
}

// ---------------------------------------------------------------------------
// Checks, one per state node

type Check = (run: Run, x: Expectation, model: Snapshot) => void;

const checks: Record<string, Check> = {
  '#gapReader': (run, x, model) => {
    const s = run.getSnapshot();
    assert.deepEqual(s.value, model.value, 'the SUT follows the model');
    assert.equal(s.value, x.phase, 'the state the rules call for');
    assert.deepEqual(run.commands(), x.commands, 'the store asked exactly what the rules call for, in order');
    assert.equal(s.context.expecting, x.expecting, 'the seq the store holds for this connection is remembered');
    assert.equal(run.count('started'), 1);
  },
  '#gapReader.idle': (run) => assert.equal(run.count('stopped'), 0),
  '#gapReader.waiting': (run) => assert.equal(run.commands().at(-1)?.type, 'awaitAnswers', 'the wait began by asking for the answers in flight'),
  '#gapReader.reading': (run, x) => {
    assert.equal(run.commands().at(-1)?.type, 'read', 'a read is under way');
    assert.equal(run.getSnapshot().context.again, x.again, 'positions asked for during the read');
  },
  '#gapReader.failed': (run) => {
    assert.equal(run.getSnapshot().status, 'done');
    assert.equal(run.count('stopped'), 1, 'R3: the store side is stopped');
    const before = run.commands().length;
    for (const e of samples) run.send(e);
    assert.equal(run.commands().length, before, 'nothing after giving up');
  },
};

// ---------------------------------------------------------------------------
// Executors and the models

const deliver = (run: Run, e: EventObject): void => run.send(e as GapReaderEvent);
const executors: Record<string, (run: Run, event: EventObject) => void> = {
  'xstate.init': (run) => run.start(),
  gap: deliver,
  answered: deliver,
  catchUp: deliver,
  expect: deliver,
  readDone: deliver,
};

const vertex = (s: Snapshot): string => JSON.stringify([s.status, s.value, s.context.expecting, s.context.again]);

const label = (e: EventObject): string => {
  const g = e as GapReaderEvent;
  switch (g.type) {
    case 'answered':
      return `answered(${g.missing ? 'missing' : 'here'})`;
    case 'catchUp':
      return `catchUp(${g.seq})`;
    case 'expect':
      return `expect(${g.seq}${g.paused ? ',paused' : ''})`;
    case 'readDone':
      return `readDone(${g.outcome}@${g.written})`;
    default:
      return g.type;
  }
};

/** The definition's transitions, pinned: a new, renamed or re-guarded transition must be seen here first. */
const EXPECTED_TRANSITIONS = [
  'gapReader.idle: gap[0] if awaitAnswers → gapReader.waiting',
  'gapReader.idle: gap[1] otherwise → gapReader.reading',
  'gapReader.idle: catchUp → gapReader.reading',
  'gapReader.idle: expect[0] if paused → (no target)',
  'gapReader.idle: expect[1] otherwise → gapReader.reading',
  'gapReader.waiting: answered[0] if stillMissing → gapReader.reading',
  'gapReader.waiting: answered[1] otherwise → gapReader.idle',
  'gapReader.waiting: catchUp → gapReader.reading',
  'gapReader.waiting: expect[0] if paused → (no target)',
  'gapReader.waiting: expect[1] otherwise → gapReader.reading',
  'gapReader.reading: catchUp → (no target)',
  'gapReader.reading: expect → (no target)',
  'gapReader.reading: readDone[0] if readLost → gapReader.failed',
  'gapReader.reading: readDone[1] if askedAgain → gapReader.reading (reenter)',
  'gapReader.reading: readDone[2] if readInFlightAwait → gapReader.waiting',
  'gapReader.reading: readDone[3] if readInFlight → gapReader.reading (reenter)',
  'gapReader.reading: readDone[4] otherwise → gapReader.idle',
];

const suite = coverageSuite({
  machine: gapReaderMachine,
  transitions: EXPECTED_TRANSITIONS,
  executors,
  checks,
  rulesSay: (run: Run) => rulesSay(run.timeline, run.input),
  stop: (run) => run.stop(),
  label,
});

for (const input of [{ awaitAnswers: true }, { awaitAnswers: false }] satisfies GapReaderInput[]) {
  const model = new TestModel(gapReaderMachine, {
    input,
    // Every event in every live state, handled or not: one that should be ignored and is not shows up against rulesSay.
    events: (snapshot) => (snapshot.status !== 'active' ? [] : samples),
    stateMatcher: stateIdMatcher(gapReaderMachine),
  });
  const edgeOptions = {
    serializeState: (s: Snapshot, e: GapReaderEvent | undefined, prev: Snapshot | undefined) =>
      e && prev ? `${vertex(s)} via ${JSON.stringify(e)} from ${vertex(prev)}` : vertex(s),
  };
  // Every cycle-free route through the states (by state only: with the positions too there are thousands).
  const simpleOptions = { serializeState: (s: Snapshot) => JSON.stringify([s.status, s.value]) };
  const edgePaths = shortestPathsOf(model, edgeOptions);
  const simplePaths = simplePathsOf(model, simpleOptions);

  describe(`gap reader, model-based, a store that ${input.awaitAnswers ? 'says when it has answered what is in flight' : 'cannot say'} (docs/sessions.md)`, () => {
    test('the model yields paths', () => {
      assert.ok(edgePaths.length > 0 && simplePaths.length > 0);
    });
    // Every model test deduplicates its paths with dedupPaths (test/helpers/model-coverage.ts)
    // instead of the library's slower pass: the same paths, in the same order.
    test("the paths are the library's own (getShortestPaths, getSimplePaths), in its order", () => {
      const same = (ours: typeof edgePaths, theirs: typeof edgePaths): void =>
        assert.deepEqual(
          ours.map((p) => [p.description, p.steps.map((step) => step.event)]),
          theirs.map((p) => [p.description, p.steps.map((step) => step.event)]),
        );
      same(edgePaths, model.getShortestPaths(edgeOptions));
      same(simplePaths, model.getSimplePaths(simpleOptions));
    });
    suite.pathTests(
      [
        ['shortest path to every transition', edgePaths],
        ['every simple path', simplePaths],
      ],
      (host, taken) => new Run(host, input, taken),
    );
  });
}

test("dedupPaths drops what the library's deduplication drops: prefixes and repeats of a longer path, whatever their order", () => {
  const model = new TestModel(gapReaderMachine, { input: { awaitAnswers: true }, events: () => samples });
  const state = createActor(gapReaderMachine, { input: { awaitAnswers: true } }).getSnapshot();
  const path = (...types: string[]) => ({
    state,
    weight: types.length,
    steps: types.map((type) => ({ state, event: { type } as GapReaderEvent })),
  });
  const paths = [
    path(), path('gap'), path('gap', 'expect'), path('expect', 'gap'), path('gap', 'expect', 'gap'), path('gap', 'expect'),
    path('catchUp'), path('gap', 'catchUp'), path('catchUp'), path('expect', 'gap', 'gap'), path('gap', 'expect', 'catchUp'),
  ];
  const events = (ps: Array<{ steps: Array<{ event: GapReaderEvent }> }>) => ps.map((p) => p.steps.map((step) => step.event.type).join(' '));
  const theirs = events(model.getPaths(() => paths));
  assert.deepEqual(events(dedupPaths(paths)), theirs);
  assert.deepEqual(theirs, ['gap expect gap', 'expect gap gap', 'gap expect catchUp', 'gap catchUp', 'catchUp'], 'the cases it covers');
  assert.deepEqual(events(dedupPaths([path()])), [''], 'a lone empty path is kept');
});

describe('gap reader, coverage over both kinds of store (TestModel skips these gaps silently)', () => {
  suite.coverageTests();

  test('an idle reader is one snapshot for every connection (no id in its context): a connection with no gap costs nothing', () => {
    const host = { actorId: 'g', spawn: () => ({ command: () => undefined, stop: () => undefined }) as HostedActor<never>, done: () => undefined, failed: (err: unknown) => { throw err; } };
    const config = { machine: gapReaderMachine, input: { awaitAnswers: true }, payloadFree: GAP_READER_PAYLOAD_FREE_EVENTS };
    const a = new MachineRunner(config, host).start();
    const b = new MachineRunner(config, host).start();
    assert.equal(a.getSnapshot(), b.getSnapshot());
    for (const event of [{ type: 'gap' }, { type: 'answered', missing: false }] as GapReaderEvent[]) {
      a.send(event);
      b.send(event);
      assert.equal(a.getSnapshot(), b.getSnapshot(), `the same snapshot after ${event.type}`);
    }
    a.stop();
    b.stop();
  });
});
