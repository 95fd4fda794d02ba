/**
 * Model-based tests of the connection machine (machines/connection.machine.ts).
 *
 * Model: the machine itself, walked by the model-based testing API that ships in
 * xstate (`xstate/graph`, the successor of `@xstate/test`: FACTS.md).
 * System under test: the same machine with fake `reader`/`writer` actors
 * (provided once), a simulated clock, and events sent the way the real actors
 * send them. Model and SUT share one transition table, so the checks do not
 * compare them with each other: they hold the SUT's effects (commands to the
 * actors, armed timers, the closure, cleanup) against `rulesSay`, a short,
 * independent statement of RULES.md for the events executed so far.
 *
 * Every generated path is executed twice: on an XState actor (how the client
 * runs the machine) and on the server's MachineRunner (src/server/runner.ts), which
 * computes the same transitions with `transition()` but shares snapshots and
 * remembers steps across connections (so its runs here share one input, as a
 * supervisor's connections do). Afterwards the runs must have taken every
 * transition of the definition, had an executor for every generated event type
 * and checked every state node. TestModel checks none of this itself: it skips
 * an event type without an executor, and a state without a check, silently.
 */
import { beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  createActor,
  fromCallback,
  transition,
  type EventObject,
  type SnapshotFrom,
} from 'xstate';
import type { TestParam, TestPath } from 'xstate/graph';
import {
  connectionMachine,
  PAYLOAD_FREE_EVENTS,
  type ActorInput,
  type ConnectionEvent,
  type ConnectionInput,
  type ConnectionTiming,
  type ReaderCommand,
  type ReaderEvent,
  type WriterCommand,
  type WriterEvent,
} from '../../machines/connection.machine.ts';
import type { CloseCause, Closure } from '../../machines/close-codes.ts';
import {
  TimerTableClock,
  allStateNodes,
  allTransitionKeys,
  missing,
  recordTransitions,
  pathTitle,
} from '../helpers/model-coverage.ts';
import { edgePaths, label, modelTiming, samples, simplePaths, timeouts, vertex, type DelayName } from '../helpers/connection-model.ts';
import { MachineRunner, type HostedActor } from '../../src/server/runner.ts';

// ---------------------------------------------------------------------------
// Timing and event samples

/** The timing the shared paths were generated with (test/helpers/connection-model.ts). */
const timing: ConnectionTiming = modelTiming;
/**
 * In model runs each event arrives this long after the previous step, so a
 * timer that should restart on an event (R10) visibly does. Small against the
 * differences between the delays, so timers armed together still fire in
 * order of duration (Run.fire and advanceQuietly fail loudly if not).
 */
const EVENT_GAP_MS = 10;

// ---------------------------------------------------------------------------
// The system under test: the real machine with recording fake actors

type ActorName = 'reader' | 'writer';
type Command = ReaderCommand | WriterCommand;
type Happening =
  | { kind: 'sent'; event: ConnectionEvent }
  | { kind: 'timeout'; delay: DelayName }
  | { kind: 'command'; actor: ActorName; command: Command }
  | { kind: 'started' | 'stopped'; actor: ActorName };
type Entry = Happening & { at: number };

function lastIndexWhere<T>(items: readonly T[], predicate: (item: T) => boolean): number {
  for (let i = items.length - 1; i >= 0; i -= 1) if (predicate(items[i] as T)) return i;
  return -1;
}

/** Handed to the fake actors as `input.io`: the record of everything that happened. */
class FakeTransport {
  readonly timeline: Entry[] = [];
  constructor(readonly clock: TimerTableClock) {}
  record(happening: Happening, at = this.clock.now()): void {
    this.timeline.push({ ...happening, at });
  }
}

function fakeActor<TCommand extends Command, TReport extends EventObject>(actor: ActorName) {
  return fromCallback<TCommand, ActorInput>(({ input, receive }) => {
    const io = input.io as FakeTransport;
    io.record({ kind: 'started', actor });
    receive((command) => io.record({ kind: 'command', actor, command }));
    return () => io.record({ kind: 'stopped', actor });
  });
}

/** Provided once, as src/ does (FACTS.md: never per connection). */
const sut = connectionMachine.provide({
  actors: {
    reader: fakeActor<ReaderCommand, ReaderEvent>('reader'),
    writer: fakeActor<WriterCommand, WriterEvent>('writer'),
  },
});

function inputWith(io: unknown): ConnectionInput {
  return { id: 'c1', timing, io };
}

/** Which host runs the machine: an XState actor (the client) or the server's MachineRunner. */
type Host = 'actor' | 'runner';

/** One input for every runner run, as one supervisor passes one for all its connections. */
const runnerInput = inputWith(null);

/** What a test does with the machine, whichever host runs it. */
interface Running {
  start(): void;
  stop(): void;
  send(event: ConnectionEvent): void;
  getSnapshot(): SnapshotFrom<typeof connectionMachine>;
}

function hostedFake(actor: ActorName, io: FakeTransport): HostedActor<never> {
  io.record({ kind: 'started', actor });
  let stopped = false;
  return {
    command: (command: Command) => io.record({ kind: 'command', actor, command }),
    stop: () => {
      if (stopped) return;
      stopped = true;
      io.record({ kind: 'stopped', actor });
    },
  } as HostedActor<never>;
}

/** One config for every runner run, as a supervisor makes one for all its connections. */
const runnerConfig = { machine: connectionMachine, input: runnerInput, payloadFree: PAYLOAD_FREE_EVENTS };

function runnerOf(io: FakeTransport, clock: TimerTableClock): Running {
  const runner = new MachineRunner(
    { ...runnerConfig, clock },
    {
      actorId: 'connection:c1',
      spawn: (id) => hostedFake(id as ActorName, io),
      done: () => undefined,
      failed: (err) => {
        throw err;
      },
    },
  );
  return {
    start: () => void runner.start(),
    stop: () => runner.stop(),
    send: (event) => runner.send(event),
    getSnapshot: () => runner.getSnapshot(),
  };
}

/** One execution: the SUT on one host, its clock and its timeline. */
class Run {
  readonly clock = new TimerTableClock();
  readonly io = new FakeTransport(this.clock);
  readonly actor: Running;
  constructor(host: Host = 'actor', takenTransitions?: Set<string>) {
    this.actor =
      host === 'runner'
        ? runnerOf(this.io, this.clock)
        : createActor(sut, {
            input: inputWith(this.io),
            clock: this.clock,
            ...(takenTransitions && { inspect: recordTransitions(takenTransitions) }),
          });
  }
  get snapshot() {
    return this.actor.getSnapshot();
  }
  send(event: ConnectionEvent): void {
    this.io.record({ kind: 'sent', event });
    this.actor.send(event);
  }
  /** Executes a model's event: it arrives EVENT_GAP_MS after the previous step. */
  deliver(event: ConnectionEvent): void {
    this.clock.advanceQuietly(EVENT_GAP_MS);
    this.send(event);
  }
  /** Executes a model's delayed event: advance the clock until exactly that timer fires. */
  fire(delay: DelayName): void {
    const deadline = this.clock.nextDeadline(timing[delay]);
    this.io.record({ kind: 'timeout', delay }, deadline);
    this.clock.fireTimer(timing[delay]);
  }
  commands(actor: ActorName, timeline: readonly Entry[] = this.io.timeline): Command[] {
    return timeline.flatMap((e) => (e.kind === 'command' && e.actor === actor ? [e.command] : []));
  }
  count(kind: 'started' | 'stopped', actor: ActorName): number {
    return this.io.timeline.filter((e) => e.kind === kind && e.actor === actor).length;
  }
  /** The timeline after the last entry matching `isMark` (none when no entry does). */
  since(isMark: (e: Entry) => boolean): Entry[] {
    const i = lastIndexWhere(this.io.timeline, isMark);
    return i < 0 ? [] : this.io.timeline.slice(i + 1);
  }
}

// ---------------------------------------------------------------------------
// What the rules say, for the events executed so far (the oracle)

interface Expectation {
  phase: 'connecting' | 'open' | 'closing' | 'closed';
  heartbeat: 'idle' | 'pinging' | 'suspect';
  write: 'flowing' | 'blocked';
  /** When the heartbeat entered its state: the ping interval / pong timeout counts from here (R4). */
  heartbeatSince: number;
  /** When the write deadline started: the block, or the last progress since (R10). */
  writeSince: number;
  /** R4: one ping per elapsed ping interval. */
  pings: number;
  /**
   * R16: the close frame we asked the writer to send, if we started a handshake.
   * `flush` (queued messages go out first) is false for a slow consumer (R11/R12).
   */
  closeFrame: { code: number; reason: string; flush: boolean } | null;
  closure: Closure | null;
}

/**
 * R17 as close-codes.ts documents it: clean codes, from a deliberate close,
 * are expected — and a close we started only if the peer answered it.
 */
function expectedClosure(
  code: number,
  reason: string,
  initiator: Closure['initiator'],
  cause: CloseCause,
  receivedCode: number | null,
): Closure {
  const answered = initiator === 'remote' || receivedCode !== null;
  const expected = answered && [1000, 1001, 1005].includes(code) && ['normal', 'peer', 'shutdown'].includes(cause);
  return { code, reason, initiator, cause, expected, receivedCode };
}

/** RFC 6455 §7.4: codes an endpoint may put in a close frame. */
function sendableCloseCode(code: number | undefined): boolean {
  if (code === undefined) return true;
  return (code >= 1000 && code <= 1014 && ![1004, 1005, 1006].includes(code)) || (code >= 3000 && code <= 4999);
}

function rulesSay(timeline: readonly Entry[]): Expectation {
  const x: Expectation = {
    phase: 'connecting', heartbeat: 'idle', write: 'flowing', heartbeatSince: 0, writeSince: 0,
    pings: 0, closeFrame: null, closure: null,
  };
  let request: { code: number; reason: string; cause: CloseCause } | null = null;
  const startClose = (code: number, reason: string, cause: CloseCause): void => {
    request = { code, reason, cause };
    x.closeFrame = { code, reason, flush: cause !== 'slow-consumer' && cause !== 'write-timeout' };
    x.phase = 'closing';
  };
  const end = (closure: Closure): void => {
    x.phase = 'closed';
    x.closure = closure;
  };
  const dropped = (reason: string, cause: CloseCause): Closure => expectedClosure(1006, reason, 'local', cause, null);

  for (const h of timeline) {
    if (h.kind !== 'sent' && h.kind !== 'timeout') continue;
    const e = h.kind === 'sent' ? h.event : { type: 'timeout' as const, delay: h.delay };
    if (x.phase === 'connecting') {
      if (e.type === 'socket.open') {
        x.phase = 'open';
        x.heartbeatSince = h.at;
      }
      // R2: the transport died before it opened.
      else if (e.type === 'socket.closed')
        end(expectedClosure(e.code, e.reason, 'remote', e.code === 1006 ? 'socket-error' : 'peer', e.code));
      else if (e.type === 'close') end(dropped(e.reason ?? 'closed before open', e.cause ?? 'normal'));
      else if (e.type === 'terminate') end(dropped(e.reason ?? 'terminated', 'terminated'));
    } else if (x.phase === 'open') {
      const pinging = x.heartbeat === 'pinging';
      const suspect = x.heartbeat === 'suspect';
      const blocked = x.write === 'blocked';
      if (e.type === 'timeout' && e.delay === 'pingInterval') {
        x.heartbeat = 'pinging';
        x.heartbeatSince = h.at;
        x.pings += 1;
      } else if (e.type === 'timeout' && e.delay === 'pongTimeout') {
        // R4: before declaring the peer dead, the reader reads what is already waiting.
        x.heartbeat = 'suspect';
        x.heartbeatSince = h.at;
      } else if (e.type === 'socket.silent' && suspect) end(dropped('heartbeat timeout', 'heartbeat-timeout')); // R4
      // R5: any inbound frame answers the outstanding ping (with none outstanding, a report changes nothing).
      else if ((e.type === 'socket.pong' || e.type === 'socket.activity') && (pinging || suspect)) {
        x.heartbeat = 'idle';
        x.heartbeatSince = h.at;
      }
      // R10: the write deadline runs from the block, restarts on progress, ends on drain.
      else if (e.type === 'write.blocked' && !blocked) {
        x.write = 'blocked';
        x.writeSince = h.at;
      } else if (e.type === 'write.progress' && blocked) x.writeSince = h.at;
      else if (e.type === 'write.drained') x.write = 'flowing';
      else if (e.type === 'timeout' && e.delay === 'writeTimeout') startClose(1008, 'slow consumer: write timeout', 'write-timeout'); // R10
      else if (e.type === 'write.overflow') startClose(1008, 'slow consumer: send queue overflow', 'slow-consumer'); // R11
      else if (e.type === 'socket.flood') startClose(1008, `message rate over ${e.rate}/s`, 'rate-limit'); // R21
      else if (e.type === 'socket.error') startClose(e.code, e.message, 'protocol-error'); // R15
      else if (e.type === 'close' && sendableCloseCode(e.code)) {
        startClose(e.code ?? 1000, e.reason ?? '', e.cause ?? (e.code === 1001 ? 'shutdown' : 'normal')); // R16, R18
      } else if (e.type === 'close') end(dropped(e.reason ?? 'terminated', e.cause ?? 'terminated'));
      else if (e.type === 'terminate') end(dropped(e.reason ?? 'terminated', 'terminated'));
      // R16/R17: the peer closed (1006: the network did).
      else if (e.type === 'socket.closed') {
        end(expectedClosure(e.code, e.reason, 'remote', e.code === 1006 ? 'socket-error' : 'peer', e.code));
      }
    } else if (x.phase === 'closing' && request !== null) {
      const r: { code: number; reason: string; cause: CloseCause } = request;
      // R16: the peer answered our close frame, or did not in time, or the app gave up.
      if (e.type === 'socket.closed') end(expectedClosure(r.code, r.reason, 'local', r.cause, e.code));
      else if (e.type === 'timeout' && e.delay === 'closeTimeout') end(expectedClosure(r.code, r.reason, 'local', r.cause, null));
      else if (e.type === 'terminate') end(expectedClosure(r.code, e.reason ?? r.reason, 'local', r.cause, null));
    }
    // R2: once closed, nothing changes.
  }
  return x;
}

function stateValueOf(x: Expectation): unknown {
  return x.phase === 'open' ? { open: { heartbeat: x.heartbeat, write: x.write } } : x.phase;
}

// ---------------------------------------------------------------------------
// State checks: one per state node, keyed by id (a missing one is skipped
// silently by TestModel, hence the coverage test below)

type Snapshot = SnapshotFrom<typeof connectionMachine>;
type Check = (run: Run, x: Expectation, model: Snapshot) => void;

const isSent = (type: ConnectionEvent['type']) => (e: Entry) => e.kind === 'sent' && e.event.type === type;
const isTimeout = (delay: DelayName) => (e: Entry) => e.kind === 'timeout' && e.delay === delay;
const armed = (run: Run, delay: DelayName) => run.clock.pending().filter((t) => t.timeout === timing[delay]);

const checks: Record<string, Check> = {
  '#connection': (run, x, model) => {
    const sutValue: unknown = run.snapshot.value;
    assert.deepEqual(sutValue, model.value, 'the SUT follows the model');
    assert.deepEqual(sutValue, stateValueOf(x), 'the state the rules call for');
    assert.equal(run.count('started', 'reader'), 1, 'R8: one reader per connection');
    assert.equal(run.count('started', 'writer'), 1, 'R8: one writer per connection');
  },
  '#connection.connecting': (run) => {
    assert.deepEqual(run.commands('writer'), [], 'nothing is written before open');
    assert.deepEqual(run.commands('reader'), []);
    assert.deepEqual(run.clock.pending(), [], 'no heartbeat before open');
  },
  '#connection.open': (run) => {
    assert.equal(run.count('stopped', 'reader'), 0, 'R1: the reader runs while open');
    assert.equal(run.count('stopped', 'writer'), 0, 'R1: the writer runs while open');
  },
  '#connection.open.heartbeat': (run, x) => {
    const pings = run.commands('writer').filter((c) => c.type === 'writer.ping').length;
    const expects = run.commands('reader').filter((c) => c.type === 'reader.expectLiveness').length;
    assert.equal(pings, x.pings, 'R4: one ping per elapsed ping interval');
    assert.equal(expects, x.pings, 'R4/R5: the reader is told to expect liveness with each ping');
  },
  '#connection.open.heartbeat.idle': (run, x) => {
    assert.deepEqual(
      armed(run, 'pingInterval').map((t) => t.start),
      [x.heartbeatSince],
      'R4: the ping interval runs from open or from the last answer to a ping',
    );
    assert.equal(armed(run, 'pongTimeout').length, 0, 'R5: no pong timeout while idle');
  },
  '#connection.open.heartbeat.pinging': (run, x) => {
    const sincePing = run.since(isTimeout('pingInterval'));
    assert.deepEqual(
      sincePing.flatMap((e) => (e.kind === 'command' ? [[e.actor, e.command.type]] : [])),
      [['writer', 'writer.ping'], ['reader', 'reader.expectLiveness']],
      'R4: entering pinging sends one ping and arms the reader',
    );
    assert.deepEqual(armed(run, 'pongTimeout').map((t) => t.start), [x.heartbeatSince], 'R4: the pong timeout runs from the ping');
    assert.equal(armed(run, 'pingInterval').length, 0);
  },
  '#connection.open.heartbeat.suspect': (run) => {
    const sinceTimeout = run.since(isTimeout('pongTimeout'));
    assert.deepEqual(
      sinceTimeout.flatMap((e) => (e.kind === 'command' ? [[e.actor, e.command.type]] : [])),
      [['reader', 'reader.confirmSilence']],
      'R4: when the pong timeout fires, the reader first reads what is waiting',
    );
    assert.equal(armed(run, 'pongTimeout').length, 0, 'no timer: the reader answers within one I/O turn');
    assert.equal(armed(run, 'pingInterval').length, 0);
    assert.equal(run.count('stopped', 'reader'), 0, 'not dead yet');
  },
  '#connection.open.write': (run) => {
    const notPings = run.commands('writer').filter((c) => c.type !== 'writer.ping');
    assert.deepEqual(notPings, [], 'R8: while open the machine only pings through the writer (data bypasses it)');
  },
  '#connection.open.write.flowing': (run) => {
    assert.equal(armed(run, 'writeTimeout').length, 0, 'R10: no write deadline while the socket drains');
  },
  '#connection.open.write.blocked': (run, x) => {
    assert.deepEqual(
      armed(run, 'writeTimeout').map((t) => t.start),
      [x.writeSince],
      'R10: the write deadline runs from the block or the last progress since',
    );
  },
  '#connection.closing': (run, x) => {
    const closes = run.commands('writer').filter((c) => c.type === 'writer.close');
    assert.ok(x.closeFrame, 'the rules call for a handshake on this path');
    assert.deepEqual(closes, [{ type: 'writer.close', ...x.closeFrame }], 'R16: exactly one close frame, with our code');
    assert.equal(run.commands('writer').at(-1)?.type, 'writer.close', 'R2: nothing is written after the close frame');
    assert.deepEqual(run.clock.pendingDurations(), [timing.closeTimeout], 'R3/R16: only the close timeout is armed');
    assert.equal(run.count('stopped', 'writer'), 0, 'the writer stays up to flush the close frame');
  },
  '#connection.closed': (run, x) => {
    const snap = run.snapshot;
    assert.equal(snap.status, 'done');
    assert.deepEqual(snap.output, x.closure, 'R17: code, initiator, cause, expected, receivedCode');
    assert.equal(run.count('stopped', 'reader'), 1, 'R3: the reader is stopped');
    assert.equal(run.count('stopped', 'writer'), 1, 'R3: the writer is stopped (it releases the socket)');
    assert.deepEqual(run.clock.pending(), [], 'R3: no timer survives');
    const closes = run.commands('writer').filter((c) => c.type === 'writer.close');
    assert.deepEqual(closes, x.closeFrame ? [{ type: 'writer.close', ...x.closeFrame }] : [], 'R2/R16: at most one close frame');
    assert.deepEqual(run.commands('writer', run.since(isSent('socket.closed'))), [], 'R2: nothing written to a dead socket');

    // R2: closed is reached once; later reports change nothing.
    const before = run.io.timeline.length;
    run.send({ type: 'socket.closed', code: 1001, reason: 'late' });
    run.send({ type: 'close', code: 1000 });
    run.send({ type: 'terminate' });
    assert.deepEqual(run.snapshot.output, x.closure, 'R2: the closure is final');
    assert.ok(run.io.timeline.slice(before).every((e) => e.kind === 'sent'), 'R2: no effect after closed');
  },
};

// ---------------------------------------------------------------------------
// Event executors (the model and its paths: test/helpers/connection-model.ts)

type Executor = (run: Run, event: EventObject) => void;
const executors: Record<string, Executor> = {
  'xstate.init': (run) => {
    run.actor.start();
  },
  ...Object.fromEntries(
    Object.keys(samples).map((type): [string, Executor] => [type, (run, e) => run.deliver(e as ConnectionEvent)]),
  ),
  ...Object.fromEntries(
    [...timeouts].map(([type, delay]): [string, Executor] => [type, (run) => run.fire(delay)]),
  ),
};

const taken = new Set<string>();
const generatedTypes = new Set<string>();
const checkedStates = new Set<string>();

async function execute(path: TestPath<Snapshot, ConnectionEvent>, host: Host): Promise<void> {
  const run = new Run(host, host === 'actor' ? taken : undefined);
  const params: TestParam<Snapshot, ConnectionEvent> = {
    events: Object.fromEntries(
      Object.entries(executors).map(([type, exec]) => [type, (step: { event: EventObject }) => exec(run, step.event)]),
    ),
    states: Object.fromEntries(
      Object.entries(checks).map(([id, check]) => [
        id,
        (modelSnapshot: Snapshot) => {
          checkedStates.add(id);
          check(run, rulesSay(run.io.timeline), modelSnapshot);
        },
      ]),
    ),
  };
  for (const step of path.steps) generatedTypes.add(step.event.type);
  try {
    await path.test(params);
  } finally {
    run.actor.stop();
  }
}

function pathName(i: number, path: TestPath<Snapshot, ConnectionEvent>): string {
  return pathTitle(i, path, label);
}

// ---------------------------------------------------------------------------
// The tests

describe('connection machine, model-based (R1–R5, R8, R10, R11, R15–R17; R2 closed once, R3 cleanup)', () => {
  test('the timings tell the delays apart, and the model yields paths', () => {
    assert.equal(new Set(Object.values(timing)).size, Object.keys(timing).length);
    assert.ok(edgePaths.length > 0 && simplePaths.length > 0);
  });

  for (const host of ['actor', 'runner'] as const) {
    describe(`on ${host === 'actor' ? 'an XState actor' : 'the server MachineRunner'}`, () => {
      describe(`shortest path to every transition (${edgePaths.length} paths)`, () => {
        edgePaths.forEach((path, i) => test(pathName(i, path), () => execute(path, host)));
      });

      describe(`every simple path (${simplePaths.length} paths)`, () => {
        simplePaths.forEach((path, i) => test(pathName(i, path), () => execute(path, host)));
      });
    });
  }

  describe('coverage (TestModel skips these gaps silently)', () => {
    test('every transition of the definition was taken by an executed path', (t) => {
      const all = allTransitionKeys(connectionMachine);
      const uncovered = missing(all, taken);
      t.diagnostic(`transitions taken: ${all.length - uncovered.length}/${all.length}`);
      assert.deepEqual(uncovered, [], 'transitions no executed path took');
      assert.deepEqual(missing(taken, new Set(all)), [], 'taken transitions unknown to the definition');
    });

    test('every generated event type has an executor', (t) => {
      t.diagnostic(`event types generated: ${[...generatedTypes].join(', ')}`);
      assert.deepEqual(missing(generatedTypes, new Set(Object.keys(executors))), []);
    });

    test('PAYLOAD_FREE_EVENTS: in every reachable state, the payload of those events changes nothing the machine does', () => {
      // The runner remembers one step per (shared snapshot, event type): only sound if this holds.
      const states = new Map<string, Snapshot>();
      for (const path of simplePaths) for (const step of path.steps) states.set(vertex(step.state), step.state);
      // What the runner executes: each action's type and params (refs by id).
      const strip = (actions: unknown[]) =>
        JSON.stringify(actions.map((a) => {
          const { type, params } = a as { type: string; params?: unknown };
          return { type, params };
        }), (k, v: unknown) => (k === 'actorRef' || k === 'to' ? (v as { id?: string } | undefined)?.id : k === 'logic' ? undefined : v));
      let compared = 0;
      for (const snapshot of states.values()) {
        if (snapshot.status !== 'active') continue;
        for (const type of PAYLOAD_FREE_EVENTS) {
          const a: [Snapshot, unknown[]] = transition(connectionMachine, snapshot, { type, rttMs: 1 } as ConnectionEvent);
          const b: [Snapshot, unknown[]] = transition(connectionMachine, snapshot, { type, rttMs: 987, code: 4000, reason: 'x', extra: true } as unknown as ConnectionEvent);
          assert.deepEqual(b[0].value, a[0].value, `${type} in ${vertex(snapshot)}`);
          assert.deepEqual(b[0].context, a[0].context, `${type} in ${vertex(snapshot)}`);
          assert.equal(strip(b[1]), strip(a[1]), `${type} in ${vertex(snapshot)}: actions`);
          compared++;
        }
      }
      assert.ok(states.size > 10 && compared > 50, `${states.size} states, ${compared} comparisons`);
    });

    test('every state node has a check, and every check ran', (t) => {
      const ids = allStateNodes(connectionMachine).map((n) => `#${n.id}`);
      t.diagnostic(`state nodes checked: ${ids.filter((id) => checkedStates.has(id)).length}/${ids.length}`);
      assert.deepEqual(missing(ids, new Set(Object.keys(checks))), [], 'state nodes without a check');
      assert.deepEqual(missing(Object.keys(checks), new Set(ids)), [], 'checks for no state node');
      assert.deepEqual(missing(ids, checkedStates), [], 'state nodes never reached and checked');
    });
  });
});

// ---------------------------------------------------------------------------
// Focused examples, on real timing (not model-generated)

let host: Host = 'actor';
function openRun(): Run {
  const run = new Run(host);
  run.actor.start();
  run.send({ type: 'socket.open' });
  return run;
}
// Read through functions: TypeScript would keep a narrowing of `run.snapshot.status` across clock moves.
const valueOf = (run: Run): unknown => run.snapshot.value;
const statusOf = (run: Run): string => run.snapshot.status;
const writerCommands = (run: Run) => run.commands('writer').map((c) => c.type);

for (const each of ['actor', 'runner'] as const) describe(`connection machine, examples, on ${each === 'actor' ? 'an XState actor' : 'the server MachineRunner'}`, () => {
  beforeEach(() => {
    host = each;
  });

  test('R4/R6 heartbeat cadence: ping after exactly one interval, terminate after interval + pong timeout', () => {
    const run = openRun();
    run.clock.increment(timing.pingInterval - 1);
    assert.deepEqual(writerCommands(run), [], 'no ping before the interval');
    assert.deepEqual(valueOf(run), { open: { heartbeat: 'idle', write: 'flowing' } });
    run.clock.increment(1);
    assert.deepEqual(writerCommands(run), ['writer.ping']);
    assert.deepEqual(run.commands('reader'), [{ type: 'reader.expectLiveness' }]);
    run.clock.increment(timing.pongTimeout - 1);
    assert.equal(statusOf(run), 'active', 'still waiting one ms before the pong timeout');
    run.clock.increment(1);
    assert.equal(run.clock.now(), timing.pingInterval + timing.pongTimeout);
    assert.deepEqual(valueOf(run), { open: { heartbeat: 'suspect', write: 'flowing' } });
    assert.deepEqual(run.commands('reader'), [{ type: 'reader.expectLiveness' }, { type: 'reader.confirmSilence' }]);
    run.send({ type: 'socket.silent' });
    assert.equal(statusOf(run), 'done');
    assert.deepEqual(run.snapshot.output, {
      code: 1006, reason: 'heartbeat timeout', initiator: 'local', cause: 'heartbeat-timeout', expected: false, receivedCode: null,
    });
    assert.deepEqual(writerCommands(run), ['writer.ping'], 'R4: terminated without a close frame');
    assert.equal(run.count('stopped', 'writer') + run.count('stopped', 'reader'), 2, 'R3');
  });

  test('R4: after a pong the next ping comes one interval later', () => {
    const run = openRun();
    run.clock.increment(timing.pingInterval + 200);
    run.send({ type: 'socket.pong', rttMs: 42 });
    run.clock.increment(timing.pingInterval - 1);
    assert.deepEqual(writerCommands(run), ['writer.ping']);
    run.clock.increment(1);
    assert.deepEqual(writerCommands(run), ['writer.ping', 'writer.ping']);
  });

  test('R4: a pong read after the pong timeout fired (stalled event loop) keeps the peer', () => {
    const run = openRun();
    run.clock.increment(timing.pingInterval);
    run.clock.increment(timing.pongTimeout);
    assert.deepEqual(valueOf(run), { open: { heartbeat: 'suspect', write: 'flowing' } });
    run.send({ type: 'socket.pong', rttMs: 9 });
    assert.deepEqual(valueOf(run), { open: { heartbeat: 'idle', write: 'flowing' } });
    run.send({ type: 'socket.silent' });
    assert.equal(statusOf(run), 'active', 'a late silent report changes nothing once idle');
  });

  test('R5: any inbound traffic while pinging returns to idle', () => {
    const run = openRun();
    run.clock.increment(timing.pingInterval);
    run.send({ type: 'socket.pong', rttMs: 7 });
    run.clock.increment(timing.pingInterval);
    assert.deepEqual(valueOf(run), { open: { heartbeat: 'pinging', write: 'flowing' } });
    run.send({ type: 'socket.activity' });
    assert.deepEqual(valueOf(run), { open: { heartbeat: 'idle', write: 'flowing' } });
    run.clock.increment(timing.pongTimeout);
    assert.equal(statusOf(run), 'active', 'R5: the pong timeout was cancelled');
  });

  test('R10: write.progress while blocked restarts the write deadline', () => {
    const run = openRun();
    run.send({ type: 'write.blocked' });
    run.clock.increment(600);
    run.send({ type: 'write.progress' });
    run.clock.increment(600);
    assert.ok(run.snapshot.matches({ open: { write: 'blocked' } }), '1200 ms blocked, but progress 600 ms ago');
    run.clock.increment(200);
    assert.equal(valueOf(run), 'closing');
    assert.deepEqual(run.snapshot.context.closeRequest, {
      code: 1008, reason: 'slow consumer: write timeout', cause: 'write-timeout',
    });
    assert.deepEqual(run.commands('writer').at(-1), {
      type: 'writer.close', code: 1008, reason: 'slow consumer: write timeout', flush: false,
    }, 'R12: a stalled queue is not flushed');
  });

  test('R16/R17: closures of typical endings, spelled out', () => {
    const local = { initiator: 'local' } as const;
    const remote = { initiator: 'remote' } as const;
    const cases: Array<[string, ConnectionEvent[], number, Closure]> = [
      ['close(1000), peer answers', [{ type: 'close', code: 1000, reason: 'done' }, { type: 'socket.closed', code: 1000, reason: 'done' }], 0,
        { code: 1000, reason: 'done', ...local, cause: 'normal', expected: true, receivedCode: 1000 }],
      ['close(1001), peer never answers', [{ type: 'close', code: 1001, reason: 'server shutdown' }], timing.closeTimeout,
        { code: 1001, reason: 'server shutdown', ...local, cause: 'shutdown', expected: false, receivedCode: null }],
      ['peer closes with 1000', [{ type: 'socket.closed', code: 1000, reason: 'bye' }], 0,
        { code: 1000, reason: 'bye', ...remote, cause: 'peer', expected: true, receivedCode: 1000 }],
      ['network cut (1006)', [{ type: 'socket.closed', code: 1006, reason: '' }], 0,
        { code: 1006, reason: '', ...remote, cause: 'socket-error', expected: false, receivedCode: 1006 }],
      ['bad UTF-8 (R15)', [{ type: 'socket.error', code: 1007, message: 'invalid UTF-8' }, { type: 'socket.closed', code: 1007, reason: '' }], 0,
        { code: 1007, reason: 'invalid UTF-8', ...local, cause: 'protocol-error', expected: false, receivedCode: 1007 }],
      ['terminate', [{ type: 'terminate' }], 0,
        { code: 1006, reason: 'terminated', ...local, cause: 'terminated', expected: false, receivedCode: null }],
    ];
    for (const [name, events, wait, closure] of cases) {
      const run = openRun();
      for (const event of events) run.send(event);
      run.clock.increment(wait);
      assert.deepEqual(run.snapshot.output, closure, name);
      assert.equal(run.count('stopped', 'reader') + run.count('stopped', 'writer'), 2, `${name}: R3 cleanup`);
    }
  });

  test('R11: a send-queue overflow closes with 1008 slow-consumer, and R16 the handshake ends on the peer close', () => {
    const run = openRun();
    run.send({ type: 'write.overflow', messages: 1001, bytes: 1 << 20 });
    assert.deepEqual(run.commands('writer').at(-1), {
      type: 'writer.close', code: 1008, reason: 'slow consumer: send queue overflow', flush: false,
    }, 'R12: an overflowing queue is not flushed');
    run.send({ type: 'socket.closed', code: 1008, reason: 'slow consumer: send queue overflow' });
    assert.deepEqual(run.snapshot.output, {
      code: 1008, reason: 'slow consumer: send queue overflow', initiator: 'local', cause: 'slow-consumer', expected: false, receivedCode: 1008,
    });
  });

  test('R16/R17: the app may only send a close code RFC 6455 allows; anything else drops the connection', () => {
    for (const code of [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999]) {
      const run = openRun();
      run.send({ type: 'close', code });
      assert.equal(valueOf(run), 'closing', `close(${code}) starts a handshake`);
      assert.deepEqual(run.commands('writer'), [{ type: 'writer.close', code, reason: '', flush: true }]);
    }
    for (const code of [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000]) {
      const run = openRun();
      run.send({ type: 'close', code });
      assert.equal(statusOf(run), 'done', `close(${code}) cannot be sent`);
      assert.equal(run.snapshot.output?.code, 1006);
      assert.deepEqual(run.commands('writer'), [], 'no close frame with a forbidden code');
    }
  });
});
