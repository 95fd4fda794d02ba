/**
 * Model-based tests of the connection machine (machines/connection.machine.ts).
 *
 * Model: the machine itself, walked by the model-based testing API that ships in
 * xstate (`xstate/graph`, the successor of `@xstate/test`: docs/testing.md says why).
 * System under test: the same machine with fake `reader`/`writer` actors
 * (provided once), a simulated clock, and events sent the way the real actors
 * send them. Model and SUT share one transition table, so the checks do not
 * compare them with each other: they hold the SUT's effects (commands to the
 * actors, armed timers, the closure, cleanup) against `rulesSay`, a short,
 * independent statement of the rules (docs/rules.md) for the events executed so far.
 *
 * Every generated path is executed twice: on an XState actor (how the client
 * runs the machine) and on the server's MachineRunner (src/server/runner.ts), which
 * computes the same transitions with `transition()` but shares snapshots and
 * remembers steps across connections (so its runs here share one input, as a
 * supervisor's connections do). The paths (test/helpers/connection-model.ts,
 * shared with test/conformance/server-paths.test.ts) come from two models:
 * the heartbeat on, every armed timer firing in either order, each path run
 * under the first of HEARTBEAT_TIMINGS that produces its order; and the
 * heartbeat off (pingInterval 0, R7). Afterwards the machine must have
 * exactly the pinned states and transitions, the runs must have taken every
 * pinned transition, had an executor for every generated event type and
 * checked every state node. TestModel checks none of this itself: it skips
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
import {
  connectionMachine,
  PAYLOAD_FREE_EVENTS,
  STALLED_CLOSE_GRACE_MS,
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
import { TimerTableClock, coverageSuite, recordTransitions, pathTests, pathTitle, type Host } from '../helpers/model-coverage.ts';
import {
  HEARTBEAT_OFF,
  HEARTBEAT_TIMINGS,
  delaysOf,
  fireDueNow,
  inputWith,
  label,
  offPaths,
  onPaths,
  samples,
  timeouts,
  timingFor,
  vertex,
  type ConnectionPath,
  type DelayName,
} from '../helpers/connection-model.ts';
import { MachineRunner, type HostedActor } from '../../src/server/runner.ts';

// ---------------------------------------------------------------------------
// The machine's shape, pinned; timings (the model, its samples and timings: test/helpers/connection-model.ts)

/**
 * The machine's shape, pinned: every state node and every transition (`on`,
 * `after`, each guarded branch), as test/helpers/model-coverage.ts names them.
 * The coverage tests hold the machine to these lists and the executed paths
 * to every transition in them, so a transition dropped from the machine fails
 * here instead of quietly shrinking the target. Changing the machine means
 * changing these lists, on purpose.
 */
const CONNECTION_MACHINE_STATES: readonly string[] = [
  '#connection',
  '#connection.connecting',
  '#connection.open',
  '#connection.open.heartbeat',
  '#connection.open.heartbeat.idle',
  '#connection.open.heartbeat.pinging',
  '#connection.open.heartbeat.suspect',
  '#connection.open.write',
  '#connection.open.write.flowing',
  '#connection.open.write.blocked',
  '#connection.closing',
  '#connection.closing.handshake',
  '#connection.closing.stalled',
  '#connection.peerClosing',
  '#connection.closed',
];
const CONNECTION_MACHINE_TRANSITIONS: readonly string[] = [
  'connection.connecting: socket.open → connection.open',
  'connection.connecting: socket.closed → connection.closed',
  'connection.connecting: close → connection.closed',
  'connection.connecting: terminate → connection.closed',
  'connection.open: socket.closed → connection.closed',
  'connection.open: socket.closing → connection.peerClosing',
  'connection.open: socket.error → connection.closing',
  'connection.open: close[0] if isSendableCode → connection.closing',
  'connection.open: close[1] otherwise → connection.closed',
  'connection.open: terminate → connection.closed',
  'connection.open: write.overflow → connection.closing.stalled',
  'connection.open: socket.flood → connection.closing',
  'connection.open.heartbeat.idle: xstate.after.pingInterval.connection.open.heartbeat.idle if heartbeatEnabled → connection.open.heartbeat.pinging',
  'connection.open.heartbeat.pinging: socket.pong → connection.open.heartbeat.idle',
  'connection.open.heartbeat.pinging: socket.activity → connection.open.heartbeat.idle',
  'connection.open.heartbeat.pinging: xstate.after.pongTimeout.connection.open.heartbeat.pinging → connection.open.heartbeat.suspect',
  'connection.open.heartbeat.suspect: socket.pong → connection.open.heartbeat.idle',
  'connection.open.heartbeat.suspect: socket.activity → connection.open.heartbeat.idle',
  'connection.open.heartbeat.suspect: socket.silent → connection.closed',
  'connection.open.write.flowing: write.blocked → connection.open.write.blocked',
  'connection.open.write.blocked: write.progress → connection.open.write.blocked (reenter)',
  'connection.open.write.blocked: write.drained → connection.open.write.flowing',
  'connection.open.write.blocked: xstate.after.writeTimeout.connection.open.write.blocked → connection.closing.stalled',
  'connection.closing: socket.closing → (no target)',
  'connection.closing: socket.closed → connection.closed',
  'connection.closing: terminate → connection.closed',
  'connection.closing.handshake: xstate.after.closeTimeout.connection.closing.handshake → connection.closed',
  'connection.closing.stalled: xstate.after.stalledCloseTimeout.connection.closing.stalled → connection.closed',
  'connection.peerClosing: socket.closed → connection.closed',
  'connection.peerClosing: terminate → connection.closed',
  'connection.peerClosing: xstate.after.closeTimeout.connection.peerClosing → connection.closed',
];

/** The focused examples' timing (closeTimeout 1200: the stalled close gets the 1 s grace). */
const timing: ConnectionTiming = HEARTBEAT_TIMINGS[0]!;
/**
 * In model runs each event arrives this long after the previous step, so a
 * timer that should restart on an event (R10) visibly does. Small against the
 * differences between the delays, so the order in which armed timers fire is
 * the timing's, not the gaps' (Run.fire and advanceQuietly fail loudly if a
 * path asks for an order its timing cannot produce).
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

/** Provided once, as src/ does (never per connection: `.provide()` rebuilds the state-node tree). */
const sut = connectionMachine.provide({
  actors: {
    reader: fakeActor<ReaderCommand, ReaderEvent>('reader'),
    writer: fakeActor<WriterCommand, WriterEvent>('writer'),
  },
});

/** Which host runs the machine: an XState actor (the client) or the server's MachineRunner. */

/** One input per timing for every runner run, as one supervisor passes one for all its connections. */
const runnerInputs = new Map<ConnectionTiming, ConnectionInput>();
const runnerInput = (t: ConnectionTiming): ConnectionInput => {
  let input = runnerInputs.get(t);
  if (!input) runnerInputs.set(t, (input = inputWith(null, t)));
  return input;
};

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

function runnerOf(io: FakeTransport, clock: TimerTableClock, t: ConnectionTiming): Running {
  // One config per timing for every runner run, as a supervisor makes one for all its connections.
  const runner = new MachineRunner(
    { machine: connectionMachine, input: runnerInput(t), payloadFree: PAYLOAD_FREE_EVENTS, clock },
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
  readonly delays: Record<DelayName, number>;
  constructor(
    host: Host = 'actor',
    readonly timing: ConnectionTiming = HEARTBEAT_TIMINGS[0]!,
    takenTransitions?: Set<string>,
  ) {
    this.delays = delaysOf(timing);
    this.actor =
      host === 'runner'
        ? runnerOf(this.io, this.clock, timing)
        : createActor(sut, {
            input: inputWith(this.io, timing),
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
    this.fireDueNow();
  }
  /** R7: with pingInterval 0, the 0 ms timer armed on entering idle fires at once (and its guard keeps the heartbeat off). */
  fireDueNow(): void {
    fireDueNow(this.clock, () => this.io.record({ kind: 'timeout', delay: 'pingInterval' }));
  }
  /** Executes a model's event: it arrives EVENT_GAP_MS after the previous step. */
  deliver(event: ConnectionEvent): void {
    this.clock.advanceQuietly(EVENT_GAP_MS);
    this.send(event);
  }
  /** Executes a model's delayed event: advance the clock until exactly that timer fires. */
  fire(delay: DelayName): void {
    const deadline = this.clock.nextDeadline(this.delays[delay]);
    this.io.record({ kind: 'timeout', delay }, deadline);
    this.clock.fireTimer(this.delays[delay]);
    this.fireDueNow();
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
  phase: 'connecting' | 'open' | 'closing' | 'peerClosing' | 'closed';
  /**
   * While closing: `stalled` when the socket is known not to drain (R10/R11),
   * so the close frame only gets the short grace; else `handshake`.
   */
  closing: 'handshake' | 'stalled';
  /** R16: when the peer's close frame started peerClosing: its close timeout counts from here. */
  peerClosingSince: number;
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

function rulesSay(timeline: readonly Entry[], t: ConnectionTiming): Expectation {
  const x: Expectation = {
    phase: 'connecting', closing: 'handshake', peerClosingSince: 0, heartbeat: 'idle', write: 'flowing', heartbeatSince: 0, writeSince: 0,
    pings: 0, closeFrame: null, closure: null,
  };
  let request: { code: number; reason: string; cause: CloseCause } | null = null;
  /** R16: the peer's close frame, when one arrived (it started the close, or answered ours). */
  let peer: { code: number; reason: string } | null = null;
  const startClose = (code: number, reason: string, cause: CloseCause): void => {
    request = { code, reason, cause };
    const stalled = cause === 'slow-consumer' || cause === 'write-timeout';
    x.closeFrame = { code, reason, flush: !stalled };
    x.phase = 'closing';
    x.closing = stalled ? 'stalled' : 'handshake';
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
      if (e.type === 'timeout' && e.delay === 'pingInterval' && t.pingInterval === 0) {
        // R7: heartbeat off: the interval never starts a ping.
      } else if (e.type === 'timeout' && e.delay === 'pingInterval') {
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
      // R16: the peer's close frame; the transport has echoed it, its TCP side is still open.
      else if (e.type === 'socket.closing') {
        peer = { code: e.code, reason: e.reason };
        x.phase = 'peerClosing';
        x.peerClosingSince = h.at;
      }
    } else if (x.phase === 'closing' && request !== null) {
      const r: { code: number; reason: string; cause: CloseCause } = request;
      // R17: an answer to our close frame makes the close clean (1006 is no answer).
      const answer = (): number | null => peer?.code ?? null;
      const limit: DelayName = x.closing === 'stalled' ? 'stalledCloseTimeout' : 'closeTimeout';
      // R16: the peer answered our close frame, or did not in time, or the app gave up.
      if (e.type === 'socket.closing') peer = { code: e.code, reason: e.reason };
      else if (e.type === 'socket.closed') end(expectedClosure(r.code, r.reason, 'local', r.cause, answer() ?? (e.code === 1006 ? null : e.code)));
      else if (e.type === 'timeout' && e.delay === limit) end(expectedClosure(r.code, r.reason, 'local', r.cause, answer()));
      else if (e.type === 'terminate') end(expectedClosure(r.code, e.reason ?? r.reason, 'local', r.cause, answer()));
    } else if (x.phase === 'peerClosing' && peer !== null) {
      // R16: the peer started the handshake and finished it; only its TCP close is awaited, at most closeTimeout.
      const p: { code: number; reason: string } = peer;
      const theirs = expectedClosure(p.code, p.reason, 'remote', 'peer', p.code);
      if (e.type === 'socket.closed' || e.type === 'terminate' || (e.type === 'timeout' && e.delay === 'closeTimeout')) end(theirs);
    }
    // R2: once closed, nothing changes.
  }
  return x;
}

function stateValueOf(x: Expectation): unknown {
  if (x.phase === 'open') return { open: { heartbeat: x.heartbeat, write: x.write } };
  return x.phase === 'closing' ? { closing: x.closing } : x.phase;
}

// ---------------------------------------------------------------------------
// State checks: one per state node, keyed by id (a missing one is skipped
// silently by TestModel, hence the coverage test below)

type Snapshot = SnapshotFrom<typeof connectionMachine>;
type Check = (run: Run, x: Expectation, model: Snapshot) => void;

const isSent = (type: ConnectionEvent['type']) => (e: Entry) => e.kind === 'sent' && e.event.type === type;
const isTimeout = (delay: DelayName) => (e: Entry) => e.kind === 'timeout' && e.delay === delay;
const armed = (run: Run, delay: DelayName) => run.clock.pending().filter((t) => t.timeout === run.delays[delay]);

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
    if (run.timing.pingInterval === 0) {
      assert.deepEqual(run.clock.pending().filter((t) => t.timeout !== run.timing.writeTimeout), [], 'R7: heartbeat off: no heartbeat timer at all');
      assert.equal(x.pings, 0, 'R7: heartbeat off: no ping');
      return;
    }
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
    assert.equal(run.count('stopped', 'writer'), 0, 'the writer stays up to flush the close frame');
  },
  '#connection.closing.handshake': (run, x) => {
    assert.equal(x.closeFrame?.flush, true, 'R16: a socket that drains gets the queued messages, then the close frame');
    assert.deepEqual(run.clock.pendingDurations(), [run.delays.closeTimeout], 'R3/R16: only the close timeout is armed');
  },
  '#connection.closing.stalled': (run, x) => {
    assert.equal(x.closeFrame?.flush, false, 'R12: a stalled queue is not flushed (dead letters)');
    assert.deepEqual(
      run.clock.pendingDurations(),
      [Math.min(run.timing.closeTimeout, STALLED_CLOSE_GRACE_MS)],
      'R10/R11: a socket that does not drain gets the short grace, not the close timeout',
    );
  },
  '#connection.peerClosing': (run, x) => {
    assert.deepEqual(run.commands('writer').filter((c) => c.type === 'writer.close'), [], 'R16: the transport echoed the peer; no close frame of ours');
    assert.deepEqual(run.commands('writer', run.since(isSent('socket.closing'))), [], 'no ping after the peer closed');
    assert.deepEqual(armed(run, 'closeTimeout').map((t) => t.start), [x.peerClosingSince], "R16: the close timeout runs from the peer's close frame");
    assert.deepEqual(run.clock.pendingDurations(), [run.delays.closeTimeout], 'R3: no heartbeat or write deadline survives');
    assert.equal(run.count('stopped', 'reader') + run.count('stopped', 'writer'), 0, 'the socket is still held, for at most closeTimeout');
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
// Event executors, and the model

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

interface Planned {
  path: ConnectionPath;
  timing: ConnectionTiming;
}

/** Events arrive EVENT_GAP_MS apart in model runs (Run.deliver). */
const modelGap = (): number => EVENT_GAP_MS;

/**
 * Each path with the first of `candidates` under which it runs as generated
 * (test/helpers/connection-model.ts: `timingFor`). A path no timing produces
 * is reported by a test below, not skipped silently.
 */
function plan(paths: ConnectionPath[], candidates: readonly ConnectionTiming[], unrealised: string[]): Planned[] {
  return paths.flatMap((path, i) => {
    const t = timingFor(path, candidates, modelGap);
    if (t === null) unrealised.push(pathTitle(i, path, label));
    return t === null ? [] : [{ path, timing: t }];
  });
}

const unrealised: string[] = [];
/** Every generated path with the timing it runs under, by heartbeat and kind of path. */
const planned = {
  on: { edge: plan(onPaths.edge, HEARTBEAT_TIMINGS, unrealised), simple: plan(onPaths.simple, HEARTBEAT_TIMINGS, unrealised) },
  off: { edge: plan(offPaths.edge, [HEARTBEAT_OFF], unrealised), simple: plan(offPaths.simple, [HEARTBEAT_OFF], unrealised) },
};
const allPlanned = [...planned.on.edge, ...planned.on.simple, ...planned.off.edge, ...planned.off.simple];

const suite = coverageSuite({
  machine: connectionMachine,
  transitions: CONNECTION_MACHINE_TRANSITIONS,
  states: CONNECTION_MACHINE_STATES,
  executors,
  checks,
  rulesSay: (run: Run) => rulesSay(run.io.timeline, run.timing),
  stop: (run) => run.actor.stop(),
  label,
});

/** A planned path on a fresh run of its timing. */
const execute = ({ path, timing: t }: Planned, host: Host): Promise<void> =>
  suite.execute(path, new Run(host, t, host === 'actor' ? suite.taken : undefined));

function pathName(i: number, path: ConnectionPath): string {
  return pathTitle(i, path, label);
}

// ---------------------------------------------------------------------------
// The tests

describe('connection machine, model-based (R1–R5, R7, R8, R10, R11, R15–R17; R2 closed once, R3 cleanup)', () => {
  test('the timings tell the delays apart, and the models yield paths', (t) => {
    for (const timing of HEARTBEAT_TIMINGS) {
      const d = delaysOf(timing);
      assert.equal(new Set(Object.values(d)).size, Object.keys(d).length, JSON.stringify(d));
      assert.ok(timing.closeTimeout > STALLED_CLOSE_GRACE_MS, 'the stalled close gets the grace, not closeTimeout');
    }
    // R7: heartbeat off, and closeTimeout under the grace: the stalled close gets closeTimeout (the `min`).
    const off = delaysOf(HEARTBEAT_OFF);
    assert.equal(new Set(Object.values(HEARTBEAT_OFF)).size, Object.keys(HEARTBEAT_OFF).length, JSON.stringify(HEARTBEAT_OFF));
    assert.equal(off.stalledCloseTimeout, HEARTBEAT_OFF.closeTimeout);
    assert.ok(HEARTBEAT_OFF.closeTimeout < STALLED_CLOSE_GRACE_MS);
    for (const paths of [onPaths, offPaths]) assert.ok(paths.edge.length > 0 && paths.simple.length > 0);
    const used = HEARTBEAT_TIMINGS.map((timing) => [...planned.on.edge, ...planned.on.simple].filter((p) => p.timing === timing).length);
    t.diagnostic(`heartbeat on: ${onPaths.edge.length} + ${onPaths.simple.length} paths, run under writeTimeout ${HEARTBEAT_TIMINGS.map((h, i) => `${h.writeTimeout}: ${used[i]}`).join(', ')}; heartbeat off: ${offPaths.edge.length} + ${offPaths.simple.length} paths`);
    assert.ok(used.every((n) => n > 0), `every timing is needed by some path: ${used.join(', ')}`);
  });

  test('every generated path runs under one of the timings (none dropped)', () => {
    assert.deepEqual(unrealised, [], 'paths whose order of timeouts no timing produces');
  });

  for (const host of ['actor', 'runner'] as const) {
    describe(`on ${host === 'actor' ? 'an XState actor' : 'the server MachineRunner'}`, () => {
      for (const [heartbeat, kinds] of Object.entries(planned)) {
        const name = heartbeat === 'on' ? 'heartbeat on' : 'heartbeat off (pingInterval 0, R7)';
        describe(`${name}: shortest path to every transition (${kinds.edge.length} paths)`, () => {
          pathTests(kinds.edge, (i, p) => pathName(i, p.path), (p) => execute(p, host));
        });
        describe(`${name}: every simple path (${kinds.simple.length} paths)`, () => {
          pathTests(kinds.simple, (i, p) => pathName(i, p.path), (p) => execute(p, host));
        });
      }
    });
  }

  describe('coverage (TestModel skips these gaps silently)', () => {
    suite.coverageTests();

    test('PAYLOAD_FREE_EVENTS: in every reachable state, the payload of those events changes nothing the machine does', () => {
      // The runner remembers one step per (shared snapshot, event type): only sound if this holds.
      const states = new Map<string, Snapshot>();
      for (const { path } of allPlanned) for (const step of path.steps) states.set(vertex(step.state), step.state);
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
    assert.deepEqual(valueOf(run), { closing: 'stalled' });
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

  test('R16: the peer closes and its TCP side lingers: peerClosing, then terminated after closeTimeout with the peer\'s closure', () => {
    const run = openRun();
    run.clock.increment(100);
    run.send({ type: 'socket.closing', code: 1001, reason: 'tab closed' });
    assert.equal(valueOf(run), 'peerClosing');
    run.clock.increment(timing.closeTimeout - 1);
    assert.equal(statusOf(run), 'active', 'the peer has closeTimeout to close TCP');
    assert.deepEqual(writerCommands(run), [], 'R16: no close frame of ours (the transport echoed the peer\'s), no ping');
    run.clock.increment(1);
    assert.equal(statusOf(run), 'done');
    assert.deepEqual(run.snapshot.output, {
      code: 1001, reason: 'tab closed', initiator: 'remote', cause: 'peer', expected: true, receivedCode: 1001,
    });
    assert.equal(run.count('stopped', 'writer'), 1, 'R3: the writer released (terminated) the socket');
  });

  test('R10/R11: a stalled consumer\'s close frame gets STALLED_CLOSE_GRACE_MS, not closeTimeout', () => {
    for (const event of [{ type: 'write.overflow', messages: 300, bytes: 1 } as const, { type: 'write.blocked' } as const]) {
      const run = openRun();
      run.send(event);
      if (event.type === 'write.blocked') run.clock.increment(timing.writeTimeout);
      assert.deepEqual(valueOf(run), { closing: 'stalled' }, event.type);
      const grace = Math.min(timing.closeTimeout, STALLED_CLOSE_GRACE_MS);
      run.clock.increment(grace - 1);
      assert.equal(statusOf(run), 'active');
      run.clock.increment(1);
      assert.equal(statusOf(run), 'done', `${event.type}: terminated after ${grace} ms`);
      assert.equal(run.snapshot.output?.receivedCode, null);
    }
  });

  test('R16/R17: our close answered, the peer\'s TCP side lingers: terminated after closeTimeout, and the answer counts', () => {
    const run = openRun();
    run.send({ type: 'close', code: 1000, reason: 'done' });
    run.send({ type: 'socket.closing', code: 1000, reason: '' });
    assert.deepEqual(valueOf(run), { closing: 'handshake' }, 'the answer does not end the handshake: the TCP close does');
    run.clock.increment(timing.closeTimeout);
    assert.deepEqual(run.snapshot.output, {
      code: 1000, reason: 'done', initiator: 'local', cause: 'normal', expected: true, receivedCode: 1000,
    });
  });

  test('R17: the transport dying during our close (1006) is no answer', () => {
    const run = openRun();
    run.send({ type: 'close', code: 1000, reason: 'done' });
    run.send({ type: 'socket.closed', code: 1006, reason: '' });
    assert.deepEqual(run.snapshot.output, {
      code: 1000, reason: 'done', initiator: 'local', cause: 'normal', expected: false, receivedCode: null,
    });
  });

  test('R16/R17: the app may only send a close code RFC 6455 allows; anything else drops the connection', () => {
    for (const code of [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999]) {
      const run = openRun();
      run.send({ type: 'close', code });
      assert.deepEqual(valueOf(run), { closing: 'handshake' }, `close(${code}) starts a handshake`);
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
