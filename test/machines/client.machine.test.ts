/**
 * Model-based tests of the client machine (machines/client.machine.ts), R22.
 *
 * Model: the machine itself, walked by `xstate/graph`'s TestModel (docs/testing.md).
 * System under test: the same machine, provided once with two fakes:
 *   - `dialer`: a callback actor that registers itself with the fake network
 *     (handed to it as `input.transport`); the test makes it report
 *     `dial.ready` / `dial.failed` through its own `sendBack`, as the Node
 *     dialer does, and sees it stopped when an attempt is abandoned;
 *   - `connection`: a tiny stand-in for the connection machine that records
 *     the `close` commands the client forwards, and finishes with whatever
 *     Closure the test tells it to.
 * and a simulated clock. "The connection ended with closure X" is a model step:
 * the model's event is the very `xstate.done.actor.connection` event the
 * machine reacts to (a model-only event type would leave the model's state
 * unchanged, so TestModel would never reach `waiting`/`closed` that way); its
 * executor does not send that event, it makes the fake child finish, and the
 * machine takes its own `onDone` transition.
 *
 * Each step is checked against `rulesSay`, a short independent statement of
 * R22 for the events executed so far. Afterwards the runs must have taken every
 * transition of the definition (guarded branches included), had an executor
 * for every generated event type, and checked every state node: TestModel
 * skips the first and the last gap silently.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  assign,
  createActor,
  fromCallback,
  setup,
  type AnyActorRef,
  type EventObject,
  type InspectionEvent,
  type SnapshotFrom,
} from 'xstate';
import type { TestPath } from 'xstate/graph';
import {
  clientMachine,
  type ClientEvent,
  type ClientInput,
  type ClientOutput,
  type DialerInput,
} from '../../machines/client.machine.ts';
import type { ConnectionCommand, ConnectionInput, ConnectionMachine } from '../../machines/connection.machine.ts';
import { backoffDelay, type BackoffOptions } from '../../machines/backoff.ts';
import type { Closure } from '../../machines/close-codes.ts';
import { TimerTableClock, coverageSuite, recordTransitions, pathTests, pathTitle } from '../helpers/model-coverage.ts';
import {
  ABANDON,
  CLIENT_ID,
  CONNECTION_DONE,
  NETWORK_DROP,
  SERVER_RESTART,
  UNSUPPORTED_CLOSE,
  answered,
  backoff,
  failedAttempt,
  label,
  models,
  sessionBackoff,
  timeouts,
  timing,
  type ConnectionDone,
  type DelayName,
} from '../helpers/client-model.ts';

// ---------------------------------------------------------------------------
// The machine's shape, pinned

/**
 * Every state node and every transition (`on`, `after`, each guarded branch),
 * as test/helpers/model-coverage.ts names them. The coverage tests hold the
 * machine to these lists and the executed paths to every transition in them,
 * so a transition dropped from the machine fails here instead of quietly
 * shrinking the target. Changing the machine means changing these lists.
 */
const CLIENT_MACHINE_STATES: readonly string[] = [
  '#client', '#client.connecting', '#client.connected',
  // Sessions: the resume step and its two ways out; without sessions a connection is `ready` at once.
  '#client.connected.resuming', '#client.connected.ready', '#client.connected.unsupported', '#client.connected.abandoned',
  '#client.waiting', '#client.closed',
];
const CLIENT_MACHINE_TRANSITIONS: readonly string[] = [
  'client.connecting: dial.ready[0] if session → client.connected.resuming',
  'client.connecting: dial.ready[1] otherwise → client.connected',
  'client.connecting: dial.failed[0] if canRetry → client.waiting',
  'client.connecting: dial.failed[1] otherwise → client.closed',
  'client.connecting: close → client.closed',
  // Sessions: the dialer saw the session upgrade refused (a server with sessions off): no retry.
  'client.connecting: session.unsupported → client.closed',
  'client.connecting: xstate.after.connectTimeout.client.connecting[0] if canRetry → client.waiting',
  'client.connecting: xstate.after.connectTimeout.client.connecting[1] otherwise → client.closed',
  'client.connected: close → (no target)',
  'client.connected: xstate.done.actor.connection[0] if deliberate → client.closed',
  'client.connected: xstate.done.actor.connection[1] if canRetry → client.waiting',
  'client.connected: xstate.done.actor.connection[2] otherwise → client.closed',
  'client.connected: xstate.after.stableAfter.client.connected → (no target)',
  // Sessions: the resume step and its two ways out.
  'client.connected.resuming: session.attached → client.connected.ready',
  'client.connected.resuming: session.unsupported → client.connected.unsupported',
  // Sessions: a server with sessions off closes 4501 before attaching: no retry.
  'client.connected.resuming: xstate.done.actor.connection if sessionsRefused → client.closed',
  'client.connected.resuming: xstate.after.resumeTimeout.client.connected.resuming → client.connected.abandoned',
  'client.waiting: close → client.closed',
  'client.waiting: xstate.after.backoff.client.waiting → client.connecting',
];

// ---------------------------------------------------------------------------
// Timing, backoff, samples and the generated paths: test/helpers/client-model.ts
// (one generator, shared with test/conformance/client-paths.test.ts, which
// replays the same paths against the real client and a scripted server).

/**
 * Jitter of the SUT, cycled: each wait must draw a fresh number (the model,
 * which calls `random` while generating paths, gets a constant instead).
 * The smallest delay it yields, 25 ms, is above EVENT_GAP_MS.
 */
const JITTER = [0.5, 0.25, 1 - 2 ** -20];
/** In model runs each outside event arrives this long after the previous step. */
const EVENT_GAP_MS = 10;

// ---------------------------------------------------------------------------
// The fakes and the system under test

type Happening =
  | { kind: 'sent'; event: ClientEvent }
  | { kind: 'timeout'; delay: DelayName }
  | { kind: 'finished'; closure: Closure }
  | { kind: 'draw'; value: number }
  | { kind: 'dialer.started'; input: DialerInput }
  | { kind: 'dialer.stopped'; attempt: number }
  | { kind: 'connection.started'; input: ConnectionInput }
  | { kind: 'connection.command'; command: ConnectionCommand };
type Entry = Happening & { at: number };

interface DialerHandle {
  input: DialerInput;
  sendBack: (event: ClientEvent) => void;
  stopped: boolean;
}
interface ConnectionHandle {
  input: ConnectionInput;
  ref: AnyActorRef;
  commands: ConnectionCommand[];
}

/** Handed to the dialer as `input.transport`: the record of everything that happened. */
class FakeNetwork {
  readonly timeline: Entry[] = [];
  readonly dialers: DialerHandle[] = [];
  readonly connections: ConnectionHandle[] = [];
  constructor(readonly clock: TimerTableClock) {}
  record(happening: Happening, at = this.clock.now()): void {
    this.timeline.push({ ...happening, at });
  }
  liveDialers(): DialerHandle[] {
    return this.dialers.filter((d) => !d.stopped);
  }
  liveConnections(): ConnectionHandle[] {
    return this.connections.filter((c) => c.ref.getSnapshot().status === 'active');
  }
}

/** What a dialer hands the client in `dial.ready`: the connection child's `io`. */
class FakeSocket {
  constructor(
    readonly network: FakeNetwork,
    readonly n: number,
  ) {}
}

const fakeDialer = fromCallback<{ type: 'dialer.noop' }, DialerInput>(({ input, sendBack }) => {
  const network = input.transport as FakeNetwork;
  const handle: DialerHandle = { input, sendBack, stopped: false };
  network.dialers.push(handle);
  network.record({ kind: 'dialer.started', input });
  return () => {
    handle.stopped = true;
    network.record({ kind: 'dialer.stopped', attempt: input.attempt });
  };
});

type FakeConnectionEvent = ConnectionCommand | { type: 'test.finish'; closure: Closure };
/**
 * Stand-in for the connection machine. The client relies on nothing else of
 * its child: the input it hands over, the `close` commands it forwards and the
 * Closure it gets back.
 */
const fakeConnection = setup({
  types: {} as { context: { input: ConnectionInput; closure: Closure | null }; events: FakeConnectionEvent; input: ConnectionInput; output: Closure },
  actions: {
    recordCommand: ({ context, event, self }) => {
      const network = (context.input.io as FakeSocket).network;
      const command = event as ConnectionCommand;
      network.connections.find((c) => c.ref === self)?.commands.push(command);
      network.record({ kind: 'connection.command', command });
    },
  },
}).createMachine({
  id: 'fakeConnection',
  context: ({ input }) => ({ input, closure: null }),
  entry: ({ context, self }) => {
    const network = (context.input.io as FakeSocket).network;
    network.connections.push({ input: context.input, ref: self, commands: [] });
    network.record({ kind: 'connection.started', input: context.input });
  },
  initial: 'running',
  states: {
    running: {
      on: {
        close: { actions: 'recordCommand' },
        terminate: { actions: 'recordCommand' },
        'test.finish': { target: 'finished', actions: assign({ closure: ({ event }) => event.closure }) },
      },
    },
    finished: { type: 'final' },
  },
  output: ({ context }) => context.closure!,
});

/** Provided once, as src/client/node.ts does. */
const sut = clientMachine.provide({
  actors: { dialer: fakeDialer, connection: fakeConnection as unknown as ConnectionMachine },
});

interface RunOptions {
  backoff?: BackoffOptions;
  /** Jitter; default: JITTER, cycled. Every draw is recorded. */
  random?: () => number;
  /** Adds the key of every transition the client (not its child) takes. */
  taken?: Set<string>;
  /** The client asked for a session (each connection resumes before it is ready). */
  session?: boolean;
}

/** One execution: an actor of the SUT, its clock and its fake network. */
class Run {
  readonly clock = new TimerTableClock();
  readonly network = new FakeNetwork(this.clock);
  readonly backoff: BackoffOptions;
  readonly session: boolean;
  readonly actor;
  #sockets = 0;
  constructor(options: RunOptions = {}) {
    this.backoff = options.backoff ?? backoff;
    this.session = options.session ?? false;
    let draws = 0;
    const random = options.random ?? (() => JITTER[draws++ % JITTER.length]!);
    const input: ClientInput = {
      id: CLIENT_ID,
      timing,
      backoff: this.backoff,
      random: () => {
        const value = random();
        this.network.record({ kind: 'draw', value });
        return value;
      },
      transport: this.network,
      session: this.session,
    };
    const record = options.taken && recordTransitions(options.taken);
    this.actor = createActor(sut, {
      input,
      clock: this.clock,
      // The client's own transitions only: the fake child's are not the client machine's.
      ...(record && { inspect: (e: InspectionEvent) => e.actorRef.sessionId === e.rootId && record(e) }),
    });
  }
  get snapshot() {
    return this.actor.getSnapshot();
  }
  start(): this {
    this.actor.start();
    return this;
  }
  /** The one dialer of the attempt in progress (throws if there is not exactly one). */
  dialer(): DialerHandle {
    const live = this.network.liveDialers();
    assert.equal(live.length, 1, 'exactly one dialer runs');
    return live[0]!;
  }
  /** The one connection child (throws if there is not exactly one). */
  connection(): ConnectionHandle {
    const live = this.network.liveConnections();
    assert.equal(live.length, 1, 'exactly one connection child runs');
    return live[0]!;
  }
  send(event: ClientEvent): void {
    this.network.record({ kind: 'sent', event });
    this.actor.send(event);
  }
  /** The dialer of the current attempt reports, through its own sendBack. */
  fromDialer(event: ClientEvent): void {
    const dialer = this.dialer();
    this.network.record({ kind: 'sent', event });
    dialer.sendBack(event);
  }
  dialReady(): FakeSocket {
    const io = new FakeSocket(this.network, ++this.#sockets);
    this.fromDialer({ type: 'dial.ready', io });
    return io;
  }
  dialFailed(message: string): void {
    this.fromDialer({ type: 'dial.failed', message });
  }
  /** The connection child ends with `closure`; the client then takes its own `onDone`. */
  finish(closure: Closure): void {
    const child = this.connection();
    this.network.record({ kind: 'finished', closure });
    child.ref.send({ type: 'test.finish', closure });
  }
  durationOf(delay: DelayName): number {
    if (delay === 'connectTimeout') return timing.connectTimeout;
    if (delay === 'stableAfter') return this.backoff.stableAfter;
    if (delay === 'resumeTimeout') return timing.resumeTimeout;
    return this.snapshot.context.delayMs; // the waiting check holds delayMs against the rules
  }
  /** Advances the clock until exactly that timer fires (and fails if another would fire first). */
  fire(delay: DelayName): void {
    const duration = this.durationOf(delay);
    this.network.record({ kind: 'timeout', delay }, this.clock.nextDeadline(duration));
    this.clock.fireTimer(duration);
  }
  dialAttempts(): number[] {
    return this.network.dialers.map((d) => d.input.attempt);
  }
  draws(): number[] {
    return this.network.timeline.flatMap((e) => (e.kind === 'draw' ? [e.value] : []));
  }
}

/**
 * Identity, asserted without printing the values: fakes and handles reach into
 * the actor system, and assert's diff of such a graph runs out of memory.
 */
function same(actual: unknown, expected: unknown, message: string): void {
  assert.ok(actual === expected, message);
}
const socketName = (io: unknown): string => (io instanceof FakeSocket ? `socket #${io.n}` : String(io));

// ---------------------------------------------------------------------------
// What R22 says, for the events executed so far (the oracle)

interface Expectation {
  phase: 'connecting' | 'connected' | 'waiting' | 'closed';
  /** Within connected: sessions add the resume step and its two ways out (without sessions: always ready). */
  sub: 'resuming' | 'ready' | 'unsupported' | 'abandoned';
  /** When the phase was entered: the connect timeout / stableAfter / backoff count from here. */
  since: number;
  /** The server does not speak sessions: the client stops with 'unsupported'. */
  unsupported: boolean;
  /** Consecutive retries since the connection last stayed up for stableAfter: the next attempt's number. */
  retries: number;
  /** The attempt number each dialer was started with, in order. */
  dialAttempts: number[];
  /** The io of each dial.ready, in order: each one went to a connection child. */
  ios: unknown[];
  /** The current connection has stayed up for stableAfter. */
  stable: boolean;
  /** The current wait: ceiling min(maxDelay, initialDelay × multiplier^retries), full jitter. */
  wait: { ceiling: number; r: number | undefined; delay: number } | null;
  /** Jitter numbers drawn so far: one per wait. */
  waits: number;
  closeRequest: { code: number; reason: string } | null;
  /** Close commands forwarded to the current connection child. */
  forwarded: ConnectionCommand[];
  /** Index in the timeline of the deliberate close, if any. */
  closedAt: number | null;
  lastClosure: Closure | null;
  output: ClientOutput | null;
}

function rulesSay(timeline: readonly Entry[], options: BackoffOptions, session: boolean): Expectation {
  const x: Expectation = {
    phase: 'connecting', sub: 'ready', unsupported: false, since: 0, retries: 0, dialAttempts: [0], ios: [], stable: false, wait: null, waits: 0,
    closeRequest: null, forwarded: [], closedAt: null, lastClosure: null, output: null,
  };
  const draws = timeline.flatMap((e) => (e.kind === 'draw' ? [e.value] : []));
  const enter = (phase: Expectation['phase'], at: number): void => {
    x.phase = phase;
    x.since = at;
  };
  // R22: an attempt or a connection ended without being asked to: retry after a
  // growing, capped, fully jittered delay — unless this was failure number
  // maxAttempts in a row (BackoffOptions: 1 = never retry; 0 = never give up).
  const ended = (closure: Closure, at: number): void => {
    x.lastClosure = closure;
    const failures = x.retries + 1;
    if (options.maxAttempts === 0 || failures < options.maxAttempts) {
      const ceiling = Math.min(options.maxDelay, options.initialDelay * options.multiplier ** x.retries);
      const r = draws[x.waits];
      x.wait = { ceiling, r, delay: r === undefined ? NaN : Math.floor(r * ceiling) };
      x.waits += 1;
      x.retries += 1;
      enter('waiting', at);
    } else {
      x.output = { reason: 'gave-up', lastClosure: closure };
      enter('closed', at);
    }
  };
  // R22: a deliberate close ends the client for good.
  const deliberate = (e: Extract<ClientEvent, { type: 'close' }>, index: number): void => {
    x.closeRequest = { code: e.code ?? 1000, reason: e.reason ?? '' };
    x.closedAt ??= index;
  };

  timeline.forEach((h, index) => {
    if (h.kind !== 'sent' && h.kind !== 'timeout' && h.kind !== 'finished') return;
    const e = h.kind === 'sent' ? h.event : h.kind === 'timeout' ? { type: 'timeout' as const, delay: h.delay } : { type: 'finished' as const, closure: h.closure };
    if (x.phase === 'connecting') {
      if (e.type === 'dial.ready') {
        enter('connected', h.at);
        // Sessions: a connection is not ready before the server attached the session.
        x.sub = session ? 'resuming' : 'ready';
        x.ios.push(e.io);
        x.stable = false;
        x.forwarded = [];
      } else if (e.type === 'dial.failed') ended(failedAttempt(e.message), h.at);
      else if (e.type === 'timeout' && e.delay === 'connectTimeout') ended(failedAttempt('connect timeout'), h.at);
      else if (e.type === 'session.unsupported') {
        // The server refused the session upgrade: stop for good, no retry (R22 would get the same answer).
        x.unsupported = true;
        x.lastClosure = failedAttempt(e.message);
        x.output = { reason: 'unsupported', lastClosure: x.lastClosure };
        x.closedAt ??= index;
        enter('closed', h.at);
      } else if (e.type === 'close') {
        deliberate(e, index);
        x.output = { reason: 'closed', lastClosure: x.lastClosure };
        enter('closed', h.at);
      }
    } else if (x.phase === 'connected') {
      if (e.type === 'close') {
        // The connection runs its close handshake; the client waits for its end.
        deliberate(e, index);
        x.forwarded.push({ type: 'close', ...x.closeRequest! });
      } else if (x.sub === 'resuming' && e.type === 'session.attached') x.sub = 'ready';
      else if (x.sub === 'resuming' && e.type === 'session.unsupported') {
        // Never carry on without the guarantee: close for good, saying why.
        x.sub = 'unsupported';
        x.unsupported = true;
        x.closeRequest = UNSUPPORTED_CLOSE;
        x.closedAt ??= index;
        x.forwarded.push({ type: 'close', ...UNSUPPORTED_CLOSE });
      } else if (x.sub === 'resuming' && e.type === 'timeout' && e.delay === 'resumeTimeout') {
        // No answer in time: drop the connection; its end is an ordinary failure (R22 retries).
        x.sub = 'abandoned';
        x.forwarded.push(ABANDON as unknown as ConnectionCommand);
      } else if (e.type === 'timeout' && e.delay === 'stableAfter') {
        // R22: the backoff resets only once a connection has stayed up this long.
        x.retries = 0;
        x.stable = true;
      } else if (e.type === 'finished') {
        if (x.sub === 'resuming' && e.closure.receivedCode === 4501) {
          // A server with sessions off closed it before attaching: stop for good, saying why (R22 would get the same answer).
          x.unsupported = true;
          x.lastClosure = e.closure;
          x.output = { reason: 'unsupported', lastClosure: e.closure };
          x.closedAt ??= index;
          enter('closed', h.at);
        } else if (x.closeRequest !== null) {
          x.lastClosure = e.closure;
          x.output = { reason: x.unsupported ? 'unsupported' : 'closed', lastClosure: e.closure };
          enter('closed', h.at);
        } else ended(e.closure, h.at);
      }
    } else if (x.phase === 'waiting') {
      if (e.type === 'timeout' && e.delay === 'backoff') {
        enter('connecting', h.at);
        x.dialAttempts.push(x.retries);
      } else if (e.type === 'close') {
        deliberate(e, index);
        x.output = { reason: 'closed', lastClosure: x.lastClosure };
        enter('closed', h.at);
      }
    }
    // closed: nothing changes, ever (R22: no reconnect).
  });
  return x;
}

// ---------------------------------------------------------------------------
// State checks, one per state node (a missing one is skipped silently by TestModel)

type Snapshot = SnapshotFrom<typeof clientMachine>;
type Check = (run: Run, x: Expectation, model: Snapshot) => void;

const armed = (run: Run) => run.clock.pending().map((t) => ({ start: t.start, timeout: t.timeout }));

const checks: Record<string, Check> = {
  '#client': (run, x, model) => {
    const snap = run.snapshot;
    assert.deepEqual(snap.value, model.value, 'the SUT follows the model');
    assert.deepEqual(snap.value, x.phase === 'connected' ? { connected: x.sub } : x.phase, 'the state R22 (and sessions) call for');
    assert.equal(snap.context.attempt, model.context.attempt, 'attempt count, as in the model');
    assert.equal(snap.context.attempt, x.retries, 'R22: consecutive retries since the last stable connection');
    // (Not lastClosure against the model: simple paths leave it out of the vertex, so
    // the model snapshot of a step may come from another route to the same vertex.)
    assert.deepEqual(snap.context.lastClosure, x.lastClosure, 'how the last attempt or connection ended');
    assert.deepEqual(snap.context.closeRequest, x.closeRequest);
    assert.deepEqual(run.dialAttempts(), x.dialAttempts, 'one dialer per attempt, told its attempt number');
    for (const d of run.network.dialers) {
      assert.equal(d.input.id, CLIENT_ID);
      same(d.input.transport, run.network, 'the dialer gets the transport unchanged');
    }
    assert.deepEqual(run.network.connections.map((c) => socketName(c.input.io)), x.ios.map(socketName), 'one connection child per dial.ready, with its io');
    assert.equal(run.draws().length, x.waits, 'R22: exactly one jitter draw per wait');
    assert.ok(run.network.liveDialers().length <= 1 && run.network.liveConnections().length <= 1);
  },
  '#client.connecting': (run, x) => {
    const dialer = run.dialer();
    assert.equal(dialer.input.attempt, x.retries, 'the dialer of this attempt, with its attempt number');
    same(dialer, run.network.dialers.at(-1), 'the latest dialer is the live one');
    assert.equal(run.network.liveConnections().length, 0, 'no connection child while dialing');
    assert.deepEqual(armed(run), [{ start: x.since, timeout: timing.connectTimeout }], 'the attempt is bounded by the connect timeout');
  },
  '#client.connected': (run, x) => {
    const child = run.connection();
    assert.equal(run.network.liveDialers().length, 0, 'the dialer is done once the transport is handed over');
    same(child.input.io, x.ios.at(-1), 'the connection child got the io from dial.ready');
    same(run.snapshot.context.io, x.ios.at(-1), 'context.io is the io from dial.ready');
    assert.equal(child.input.id, CLIENT_ID);
    assert.deepEqual(child.input.timing, timing, 'the child gets the client timing (heartbeat, deadlines)');
    assert.deepEqual(child.commands, x.forwarded, 'R22: a deliberate close is forwarded to the connection, once per close');
    const expected = [
      ...(x.stable ? [] : [{ start: x.since, timeout: run.backoff.stableAfter }]),
      // Sessions: the server must attach within resumeTimeout of the connection opening.
      ...(x.sub === 'resuming' ? [{ start: x.since, timeout: timing.resumeTimeout }] : []),
    ];
    const order = (a: { timeout: number }, b: { timeout: number }): number => a.timeout - b.timeout;
    assert.deepEqual(armed(run).sort(order), expected.sort(order), 'R22: stableAfter runs from the moment the connection opened, once; resumeTimeout while resuming');
  },
  '#client.connected.resuming': (run, x) => {
    assert.ok(run.session, 'only a session client resumes');
    assert.equal(x.sub, 'resuming');
    assert.ok(!run.network.liveConnections()[0]!.commands.some((c) => (c as { type: string }).type === 'terminate'), 'nothing dropped yet');
  },
  '#client.connected.ready': (run, x) => {
    assert.equal(x.sub, 'ready');
    assert.equal(run.snapshot.context.unsupported, false);
  },
  '#client.connected.unsupported': (run, x) => {
    assert.ok(run.session);
    assert.ok(x.unsupported);
    assert.equal(run.snapshot.context.unsupported, true);
    // Closing for good, saying why (the application's close() before or after changes the reason, not the outcome).
    const closes = run.connection().commands.filter((c) => (c as { type: string }).type === 'close');
    assert.ok(closes.some((c) => (c as { reason?: string }).reason === UNSUPPORTED_CLOSE.reason), 'the connection was told to close, with the reason');
  },
  '#client.connected.abandoned': (run) => {
    assert.ok(run.session);
    assert.deepEqual(run.connection().commands.filter((c) => (c as { type: string }).type === 'terminate'), [ABANDON], 'the connection is dropped, once');
  },
  '#client.waiting': (run, x) => {
    const { attempt, delayMs, io } = run.snapshot.context;
    const r = run.draws().at(-1);
    assert.ok(x.wait && r !== undefined);
    assert.equal(delayMs, backoffDelay(attempt - 1, run.backoff, r), 'delayMs = backoffDelay(attempt - 1, backoff, r)');
    assert.equal(r, x.wait.r, 'a fresh jitter number for this wait');
    assert.equal(delayMs, x.wait.delay, 'R22: full jitter below the ceiling for this retry');
    assert.ok(delayMs >= 0 && delayMs < x.wait.ceiling, `R22: 0 ≤ ${delayMs} < ceiling ${x.wait.ceiling}`);
    assert.deepEqual(armed(run), [{ start: x.since, timeout: delayMs }], 'only the backoff timer is armed');
    assert.equal(run.network.liveDialers().length, 0, 'no attempt in progress while waiting');
    assert.equal(run.network.liveConnections().length, 0, 'the connection child has ended');
    same(io, null, 'the io of the ended connection is released');
  },
  '#client.closed': (run, x) => {
    const snap = run.snapshot;
    assert.equal(snap.status, 'done');
    assert.deepEqual(snap.output, x.output, "output: 'closed' after a deliberate close, 'gave-up' when attempts ran out, 'unsupported' for a server without sessions");
    assert.deepEqual(run.clock.pending(), [], 'no timer survives');
    assert.equal(run.network.liveDialers().length, 0, 'an attempt in progress is abandoned');
    assert.equal(run.network.liveConnections().length, 0, 'no connection child survives');
    if (x.closedAt !== null) {
      const after = run.network.timeline.slice(x.closedAt);
      assert.ok(!after.some((e) => e.kind === 'dialer.started'), 'R22: no attempt after a deliberate close');
    }
    // R22: never reconnects, however long we wait and whatever arrives late.
    const dialers = run.network.dialers.length;
    run.clock.increment(10 * (timing.connectTimeout + run.backoff.maxDelay + run.backoff.stableAfter));
    run.send({ type: 'dial.failed', message: 'late' });
    run.send({ type: 'close', code: 1000 });
    assert.equal(run.network.dialers.length, dialers, 'R22: closed never dials again');
    assert.deepEqual(run.snapshot.output, x.output, 'the output is final');
  },
};

// ---------------------------------------------------------------------------
// Event executors, and the model

type Executor = (run: Run, event: EventObject) => void;
const executors: Record<string, Executor> = {
  'xstate.init': (run) => {
    run.start();
  },
  'dial.ready': (run) => {
    run.clock.advanceQuietly(EVENT_GAP_MS);
    run.dialReady();
  },
  'dial.failed': (run, e) => {
    run.clock.advanceQuietly(EVENT_GAP_MS);
    run.dialFailed((e as Extract<ClientEvent, { type: 'dial.failed' }>).message);
  },
  close: (run, e) => {
    run.clock.advanceQuietly(EVENT_GAP_MS);
    run.send(e as ClientEvent);
  },
  // What src/client/client.ts sends when the server's first answer arrives.
  'session.attached': (run, e) => {
    run.clock.advanceQuietly(EVENT_GAP_MS);
    run.send(e as ClientEvent);
  },
  'session.unsupported': (run, e) => {
    run.clock.advanceQuietly(EVENT_GAP_MS);
    run.send(e as ClientEvent);
  },
  // Not sent: the fake child is made to finish, and the machine takes its onDone.
  [CONNECTION_DONE]: (run, e) => {
    run.clock.advanceQuietly(EVENT_GAP_MS);
    run.finish((e as unknown as ConnectionDone).output);
  },
  ...Object.fromEntries([...timeouts].map(([type, delay]): [string, Executor] => [type, (run) => run.fire(delay)])),
};

const suite = coverageSuite({
  machine: clientMachine,
  transitions: CLIENT_MACHINE_TRANSITIONS,
  states: CLIENT_MACHINE_STATES,
  executors,
  checks,
  rulesSay: (run: Run) => rulesSay(run.network.timeline, run.backoff, run.session),
  stop: (run) => run.actor.stop(),
  label,
});

/** The client machine has one host (src/client/client.ts runs it as an XState actor). */
const execute = (path: TestPath<Snapshot, ClientEvent>, session: boolean): Promise<void> =>
  suite.execute(path, new Run({ taken: suite.taken, session, backoff: session ? sessionBackoff : backoff }));

// ---------------------------------------------------------------------------
// The model-based tests

describe('client machine, model-based (R22: backoff, jitter, cap, max attempts, stableAfter reset, no reconnect after a deliberate close)', () => {
  test('the timings tell the delays apart, and the model is finite, small, and yields paths', (t) => {
    const durations = [timing.connectTimeout, backoff.stableAfter, backoff.maxDelay, timing.resumeTimeout];
    assert.equal(new Set(durations).size, durations.length);
    assert.ok(Math.min(...JITTER) * backoff.initialDelay > EVENT_GAP_MS, 'a wait outlasts one event gap');
    assert.ok(timing.resumeTimeout < backoff.stableAfter, 'the model offers no stableAfter while resuming');
    for (const [name, g] of Object.entries(models)) {
      t.diagnostic(`${name}: ${g.vertices} simple-path vertices, ${g.edgePaths.length} shortest paths, ${g.simplePaths.length} simple paths`);
      assert.equal(g.error, null, `path generation (${name})`);
      assert.ok(g.edgePaths.length > 0 && g.simplePaths.length > 0, name);
    }
  });

  for (const [name, g] of Object.entries(models)) {
    const session = name === 'session';
    describe(`${session ? 'with sessions' : 'without sessions'}: shortest path to every transition (${g.edgePaths.length} paths)`, () => {
      pathTests(g.edgePaths, (i, path) => pathTitle(i, path, label), (path) => execute(path, session));
    });

    describe(`${session ? 'with sessions' : 'without sessions'}: every simple path (${g.simplePaths.length} paths)`, () => {
      pathTests(g.simplePaths, (i, path) => pathTitle(i, path, label), (path) => execute(path, session));
    });
  }

  describe('coverage (TestModel skips these gaps silently)', () => suite.coverageTests());
});

// ---------------------------------------------------------------------------
// Focused examples, on real timing (not model-generated)

const valueOf = (run: Run): unknown => run.snapshot.value;
const statusOf = (run: Run): string => run.snapshot.status;
/** A random source that makes each delay ceiling - 1: the ceiling shows. */
const nearlyOne = () => 1 - 2 ** -20;

describe('client machine, examples (R22)', () => {
  test('R22: never reconnects after a deliberate close (close while connected → child told to close → child done → closed, not waiting)', () => {
    const run = new Run().start();
    const io = run.dialReady();
    same(run.connection().input.io, io, 'the child got the io');
    run.send({ type: 'close', code: 4000, reason: 'user logged out' });
    assert.deepEqual(valueOf(run), { connected: 'ready' }, 'the connection runs its close handshake first');
    assert.deepEqual(run.connection().commands, [{ type: 'close', code: 4000, reason: 'user logged out' }]);
    const closure = answered({ code: 4000, reason: 'user logged out' });
    run.finish(closure);
    assert.equal(statusOf(run), 'done');
    assert.deepEqual(run.snapshot.output, { reason: 'closed', lastClosure: closure });
    run.clock.increment(3_600_000);
    assert.deepEqual(run.dialAttempts(), [0], 'no second attempt, an hour later');
    assert.deepEqual(run.clock.pending(), []);
  });

  test('R22: a deliberate close wins over a crossing network drop (the drop ends the handshake: still closed)', () => {
    const run = new Run().start();
    run.dialReady();
    run.send({ type: 'close' });
    assert.deepEqual(run.connection().commands, [{ type: 'close', code: 1000, reason: '' }], 'defaults: 1000, no reason');
    run.finish(NETWORK_DROP);
    assert.deepEqual(run.snapshot.output, { reason: 'closed', lastClosure: NETWORK_DROP });
    assert.deepEqual(run.dialAttempts(), [0]);
  });

  test('R22: a deliberate close while connecting abandons the attempt; while waiting, cancels the retry', () => {
    const connecting = new Run().start();
    connecting.send({ type: 'close' });
    assert.deepEqual(connecting.snapshot.output, { reason: 'closed', lastClosure: null }, 'no connection was ever made');
    assert.equal(connecting.network.liveDialers().length, 0, 'the dialer is stopped');
    assert.deepEqual(connecting.clock.pending(), [], 'the connect timeout is cancelled');

    const waiting = new Run().start();
    waiting.dialFailed('connect ECONNREFUSED');
    assert.equal(valueOf(waiting), 'waiting');
    waiting.send({ type: 'close' });
    assert.deepEqual(waiting.snapshot.output, { reason: 'closed', lastClosure: failedAttempt('connect ECONNREFUSED') });
    waiting.clock.increment(3_600_000);
    assert.deepEqual(waiting.dialAttempts(), [0], 'R22: the scheduled retry never happens');
  });

  test('R22: stableAfter resets attempt to 0 only after the connection stayed up that long', () => {
    const run = new Run({ backoff: { ...backoff, maxAttempts: 0, maxDelay: 10_000 }, random: nearlyOne }).start();
    const ceilings: number[] = [];
    const waitCeiling = (): void => {
      assert.equal(valueOf(run), 'waiting');
      ceilings.push(run.snapshot.context.delayMs + 1);
      run.clock.fireTimer(run.snapshot.context.delayMs);
      assert.equal(valueOf(run), 'connecting');
    };
    run.dialFailed('refused');
    waitCeiling();
    // Two connections that drop one ms short of stableAfter: the ceiling keeps growing.
    for (let i = 0; i < 2; i++) {
      run.dialReady();
      run.clock.increment(backoff.stableAfter - 1);
      assert.equal(run.snapshot.context.attempt, i + 1, 'no reset before stableAfter');
      run.finish(NETWORK_DROP);
      waitCeiling();
    }
    assert.deepEqual(ceilings, [100, 200, 400]);
    // One that stays up exactly stableAfter: the next wait starts from initialDelay again.
    run.dialReady();
    run.clock.increment(backoff.stableAfter);
    assert.equal(run.snapshot.context.attempt, 0, 'R22: reset after stableAfter of uptime');
    assert.deepEqual(run.clock.pending(), [], 'stableAfter fires once per connection');
    run.clock.increment(60_000);
    run.finish(SERVER_RESTART);
    waitCeiling();
    assert.deepEqual(ceilings, [100, 200, 400, 100]);
    assert.deepEqual(run.dialAttempts(), [0, 1, 2, 3, 1], 'the dialer after the reset is attempt 1 again');
  });

  test('R22: connect timeout abandons the attempt (dialer stopped) and retries', () => {
    const run = new Run().start();
    const first = run.dialer();
    run.clock.increment(timing.connectTimeout - 1);
    assert.equal(valueOf(run), 'connecting');
    assert.equal(first.stopped, false);
    run.clock.increment(1);
    assert.equal(valueOf(run), 'waiting');
    assert.equal(first.stopped, true, 'the abandoned attempt is stopped (its socket released)');
    assert.deepEqual(run.snapshot.context.lastClosure, failedAttempt('connect timeout'));
    // A late success of the abandoned attempt is not taken for a connection.
    first.sendBack({ type: 'dial.ready', io: 'stale socket' });
    assert.equal(valueOf(run), 'waiting', 'a stopped dialer cannot report');
    run.clock.fireTimer(run.snapshot.context.delayMs);
    assert.equal(valueOf(run), 'connecting');
    const second = run.dialer();
    assert.ok(second !== first, 'a new dialer');
    assert.equal(second.input.attempt, 1, 'the retry is attempt 1');
    assert.deepEqual(run.clock.pendingDurations(), [timing.connectTimeout], 'the retry gets a full connect timeout of its own');
    const io = run.dialReady();
    same(run.connection().input.io, io, 'the child got the io of the retry');
  });

  test('R22: maxAttempts counts consecutive failed attempts — 3 attempts, then gave-up with the last failure', () => {
    for (const fail of ['dial.failed', 'connect timeout', 'short connection'] as const) {
      const run = new Run().start(); // maxAttempts 3
      for (let attempt = 0; attempt < 3; attempt++) {
        assert.equal(run.dialer().input.attempt, attempt);
        if (attempt < 2 || fail === 'dial.failed') run.dialFailed(`refused #${attempt}`);
        else if (fail === 'connect timeout') run.clock.fireTimer(timing.connectTimeout);
        else {
          // A connection that drops before stableAfter is one more failed attempt.
          run.dialReady();
          run.clock.increment(backoff.stableAfter - 1);
          run.finish(NETWORK_DROP);
        }
        if (attempt < 2) run.clock.fireTimer(run.snapshot.context.delayMs);
      }
      const last = fail === 'dial.failed' ? failedAttempt('refused #2') : fail === 'connect timeout' ? failedAttempt('connect timeout') : NETWORK_DROP;
      assert.deepEqual(run.snapshot.output, { reason: 'gave-up', lastClosure: last }, fail);
      assert.deepEqual(run.dialAttempts(), [0, 1, 2], fail);
      assert.deepEqual(run.clock.pending(), []);
    }
  });

  test('R22: maxAttempts 1 never retries — not even after a connection that was stable', () => {
    const refused = new Run({ backoff: { ...backoff, maxAttempts: 1 } }).start();
    refused.dialFailed('refused');
    assert.deepEqual(refused.snapshot.output, { reason: 'gave-up', lastClosure: failedAttempt('refused') });
    assert.deepEqual(refused.draws(), [], 'no wait, no jitter drawn');

    const dropped = new Run({ backoff: { ...backoff, maxAttempts: 1 } }).start();
    dropped.dialReady();
    dropped.clock.increment(backoff.stableAfter * 10);
    dropped.finish(NETWORK_DROP);
    assert.deepEqual(dropped.snapshot.output, { reason: 'gave-up', lastClosure: NETWORK_DROP });
    assert.deepEqual(dropped.dialAttempts(), [0]);
  });

  test('R22: maxAttempts 0 never gives up; the delay ceiling grows to maxDelay and stays there', () => {
    const run = new Run({ backoff: { ...backoff, maxAttempts: 0 }, random: nearlyOne }).start();
    const ceilings: number[] = [];
    for (let i = 0; i < 50; i++) {
      run.dialFailed('refused');
      assert.equal(valueOf(run), 'waiting', `retry ${i + 1}`);
      ceilings.push(run.snapshot.context.delayMs + 1);
      run.clock.fireTimer(run.snapshot.context.delayMs);
    }
    assert.deepEqual(ceilings.slice(0, 4), [100, 150, 150, 150]);
    assert.ok(ceilings.every((c) => c <= backoff.maxDelay));
    assert.equal(run.dialer().input.attempt, 50);
    assert.equal(statusOf(run), 'active');
  });

  test('R22: full jitter — each wait draws once, and random 0 retries at once', () => {
    const values = [0, 0.5];
    const run = new Run({ backoff: { ...backoff, maxDelay: 10_000 }, random: () => values.shift() ?? 0.5 }).start();
    run.dialFailed('refused');
    assert.equal(run.snapshot.context.delayMs, 0, 'random 0: delay 0');
    run.clock.increment(0);
    assert.equal(valueOf(run), 'connecting', 'a zero delay still goes through waiting, then dials');
    run.dialFailed('refused');
    assert.equal(run.snapshot.context.delayMs, 100, 'random 0.5 on ceiling 200');
    assert.deepEqual(run.draws(), [0, 0.5]);
  });
});
