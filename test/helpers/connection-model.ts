/**
 * The connection machine's model for `xstate/graph`: the event samples, the
 * timings the paths are generated and run under, and the generated paths
 * themselves. Shared by the model-based test
 * (test/machines/connection.machine.test.ts, fake actors, simulated clock) and
 * the conformance test (test/conformance/server-paths.test.ts, the real reader
 * and writer on a loopback socket), so both run the very same paths.
 *
 * With the heartbeat on, the model lets every armed timer fire next, in either
 * order (a ping due while a write is blocked, the write deadline before or
 * after the pong timeout); which timing produces the order a path asks for is
 * `timingFor`'s business. A second model runs with the heartbeat off
 * (pingInterval 0, R7).
 */
import { __unsafe_getAllOwnEventDescriptors, createActor, type EventObject, type SnapshotFrom } from 'xstate';
import { TestModel, type TestPath } from 'xstate/graph';
import {
  connectionMachine,
  STALLED_CLOSE_GRACE_MS,
  type ConnectionEvent,
  type ConnectionInput,
  type ConnectionTiming,
} from '../../machines/connection.machine.ts';
import { TimerTableClock, delayedEventTypes, perSnapshot, shortestPathsOf, simplePathsOf, stateIdMatcher } from './model-coverage.ts';

export type ConnectionSnapshot = SnapshotFrom<typeof connectionMachine>;
export type ConnectionPath = TestPath<ConnectionSnapshot, ConnectionEvent>;
/** The machine's named delays: the four timings, and the stalled-close grace derived from closeTimeout. */
export type DelayName = keyof ConnectionTiming | 'stalledCloseTimeout';

/** Every named delay of the machine and its duration under `t` (as the machine's `delays` compute them). */
export function delaysOf(t: ConnectionTiming): Record<DelayName, number> {
  return { ...t, stalledCloseTimeout: Math.min(t.closeTimeout, STALLED_CLOSE_GRACE_MS) };
}

/**
 * The timings the heartbeat-on paths run under; within each, distinct delays,
 * so an armed timer tells which delay it belongs to (closeTimeout above
 * STALLED_CLOSE_GRACE_MS, so the stalled-close grace is the constant, and
 * pingInterval not 1000, the grace). Each generated path runs under the first
 * of these that produces its order of timeouts (`timingFor`): with the write
 * blocked early, the write deadline before the ping (700), between the ping
 * and the pong timeout (1700), after both (2500); blocked after the ping,
 * before the pong timeout (300) or after it (700).
 */
export const HEARTBEAT_TIMINGS: readonly ConnectionTiming[] = [
  { pingInterval: 1500, pongTimeout: 500, writeTimeout: 700, closeTimeout: 1200 },
  { pingInterval: 1500, pongTimeout: 500, writeTimeout: 300, closeTimeout: 1200 },
  { pingInterval: 1500, pongTimeout: 500, writeTimeout: 1700, closeTimeout: 1200 },
  { pingInterval: 1500, pongTimeout: 500, writeTimeout: 2500, closeTimeout: 1200 },
];
/**
 * R7: pingInterval 0 turns the heartbeat off (a browser client without an
 * app-level heartbeat). closeTimeout under STALLED_CLOSE_GRACE_MS: the
 * stalled close then gets closeTimeout (the other side of the `min`).
 */
export const HEARTBEAT_OFF: ConnectionTiming = { pingInterval: 0, pongTimeout: 500, writeTimeout: 700, closeTimeout: 250 };

/**
 * The concrete events the model may send, per type (a type missing here fails
 * to compile). Bounded on purpose: each distinct payload multiplies the state space.
 */
export const samples: { [T in ConnectionEvent['type']]: Array<Extract<ConnectionEvent, { type: T }>> } = {
  'socket.open': [{ type: 'socket.open' }],
  'socket.pong': [{ type: 'socket.pong', rttMs: 5 }],
  'socket.activity': [{ type: 'socket.activity' }],
  'socket.silent': [{ type: 'socket.silent' }],
  'socket.closing': [{ type: 'socket.closing', code: 1000, reason: 'bye' }],
  'socket.closed': [
    { type: 'socket.closed', code: 1000, reason: 'bye' },
    { type: 'socket.closed', code: 1006, reason: '' },
  ],
  'socket.error': [{ type: 'socket.error', code: 1007, message: 'invalid UTF-8' }],
  close: [
    { type: 'close', code: 1000, reason: 'done' },
    { type: 'close', code: 1001, reason: 'server shutdown' },
    { type: 'close', code: 4000, reason: 'app-defined' },
    // Unsendable (RFC 6455 §7.4.1): the guard's second branch drops the connection.
    { type: 'close', code: 1006, reason: 'drop' },
  ],
  terminate: [{ type: 'terminate', reason: 'admin' }],
  'write.blocked': [{ type: 'write.blocked' }],
  'write.progress': [{ type: 'write.progress' }],
  'write.drained': [{ type: 'write.drained' }],
  'write.overflow': [{ type: 'write.overflow', messages: 1001, bytes: 1_048_576 }],
  'socket.flood': [{ type: 'socket.flood', rate: 20 }],
};
const allSamples: ConnectionEvent[] = Object.values(samples).flat();

/** `xstate.after.<delay>.<stateId>` → delay name, from the definition itself. */
export const timeouts = new Map<string, DelayName>(
  [...delayedEventTypes(connectionMachine)].map(([type, delay]) => {
    if (typeof delay !== 'string' || !Object.hasOwn(delaysOf(HEARTBEAT_OFF), delay)) throw new Error(`${type}: unknown delay ${delay}`);
    return [type, delay as DelayName];
  }),
);

/** A model vertex: the constant id/timing/io are left out. */
export const vertex = perSnapshot((s: ConnectionSnapshot): string =>
  JSON.stringify([s.status, s.value, s.context.closeRequest, s.context.peerClose, s.context.closure]));

export function inputWith(io: unknown, t: ConnectionTiming): ConnectionInput {
  return { id: 'c1', timing: t, io };
}

/**
 * A model of the machine under one timing. Every event in every live state,
 * not only the ones the state handles: a missing transition, or an event that
 * should be ignored and is not, then shows up as a disagreement with the
 * oracle. (`closed` ignores everything.) Plus every timer the state has armed,
 * in any order. With the heartbeat off the ping interval's timer is not
 * offered: it fires at once by itself (`fireDueNow`) and changes nothing (R7).
 */
export function modelFor(t: ConnectionTiming) {
  return new TestModel(connectionMachine, {
    input: inputWith({}, t),
    events: (snapshot) =>
      snapshot.status !== 'active'
        ? []
        : [
            ...allSamples,
            ...__unsafe_getAllOwnEventDescriptors(snapshot)
              .filter((type) => timeouts.has(type) && !(t.pingInterval === 0 && timeouts.get(type) === 'pingInterval'))
              // `xstate.after.<delay>.<stateId>` is not a ConnectionEvent, but the machine takes it.
              .map((type) => ({ type }) as unknown as ConnectionEvent),
          ],
    stateMatcher: stateIdMatcher(connectionMachine),
  });
}

/**
 * Shortest paths to every *transition*: the vertex includes the step that led
 * to it, so each edge of the state graph (self-loops such as write.progress
 * included) ends some shortest path. Then every cycle-free route to every
 * state: longer histories for the oracle.
 */
function pathsOf(model: ReturnType<typeof modelFor>): { edge: ConnectionPath[]; simple: ConnectionPath[] } {
  return {
    edge: shortestPathsOf(model, {
      serializeState: (s, e, prev) => (e && prev ? `${vertex(s)} via ${JSON.stringify(e)} from ${vertex(prev)}` : vertex(s)),
    }),
    simple: simplePathsOf(model, { serializeState: vertex }),
  };
}

/** The paths with the heartbeat on (timers in every order) and off (R7). */
export const onPaths = pathsOf(modelFor(HEARTBEAT_TIMINGS[0]!));
export const offPaths = pathsOf(modelFor(HEARTBEAT_OFF));

/**
 * pingInterval 0 (R7) arms a 0 ms timer on entering idle, whose guard then
 * keeps the heartbeat off: it is due at once, so it fires before anything
 * else. Calls `fired` for each such firing.
 */
export function fireDueNow(clock: TimerTableClock, fired: () => void = () => undefined): void {
  while (clock.pending().some((t) => t.timeout === 0 && t.start <= clock.now())) {
    fired();
    clock.increment(0);
  }
}

/** How long an event takes to arrive after the previous step, ms. */
export type Gap = (event: EventObject) => number;

/**
 * Whether `path` runs as generated under timing `t` when each event arrives
 * `gap(event)` after the previous step: each timer the path fires is the next
 * one due, and no timer falls due while an event is on its way. On the
 * machine itself (its actors do nothing) with a simulated clock.
 */
export function realises(path: ConnectionPath, t: ConnectionTiming, gap: Gap): boolean {
  const clock = new TimerTableClock();
  const delays = delaysOf(t);
  const actor = createActor(connectionMachine, { input: inputWith(null, t), clock });
  try {
    for (const step of path.steps) {
      const event: EventObject = step.event;
      const delay = timeouts.get(event.type);
      if (event.type === 'xstate.init') actor.start();
      else if (delay !== undefined) clock.fireTimer(delays[delay]);
      else {
        clock.advanceQuietly(gap(event));
        actor.send(event as ConnectionEvent);
      }
      fireDueNow(clock);
    }
    return true;
  } catch {
    return false;
  } finally {
    actor.stop();
  }
}

/** The first of `candidates` under which `path` runs as generated with events `gap` apart (null when none does). */
export function timingFor(path: ConnectionPath, candidates: readonly ConnectionTiming[], gap: Gap): ConnectionTiming | null {
  return candidates.find((t) => realises(path, t, gap)) ?? null;
}

/** A time as a constant plus the durations of some steps (each step's between its bounds). */
interface Form {
  c: number;
  steps: ReadonlySet<number>;
}

/**
 * Whether `path` runs as generated under `t` for EVERY duration of each event
 * step between `gap.min(e)` and `gap.max(e)`, ms. Every time on the path is a
 * constant plus a sum of step durations (an event: the previous step's time
 * plus its duration; a timer: when it was armed plus its delay), so each
 * ordering constraint (an event arrives before every armed timer is due; a
 * fired timer is due before every other) is affine in the durations, and its
 * worst case is computed exactly: the difference of two such sums, with each
 * duration at whichever bound hurts. Which timers are armed at each step is
 * read from a replay on the machine with every step at its shortest.
 */
export function realisesForAny(path: ConnectionPath, t: ConnectionTiming, gap: { min: Gap; max: Gap }): boolean {
  const clock = new TimerTableClock();
  const delays = delaysOf(t);
  const actor = createActor(connectionMachine, { input: inputWith(null, t), clock });
  const lo: number[] = [];
  const hi: number[] = [];
  /** The worst case (largest value) of a − b. */
  const worst = (a: Form, b: Form): number => {
    let v = a.c - b.c;
    for (const i of a.steps) if (!b.steps.has(i)) v += hi[i]!;
    for (const i of b.steps) if (!a.steps.has(i)) v -= lo[i]!;
    return v;
  };
  const armedAt = new Map<number, Form>();
  const due = (id: number, timeout: number): Form => {
    const a = armedAt.get(id)!;
    return { c: a.c + timeout, steps: a.steps };
  };
  let now: Form = { c: 0, steps: new Set() };
  const noteArmed = (): void => {
    for (const p of clock.pending()) if (!armedAt.has(p.id)) armedAt.set(p.id, now);
  };
  try {
    for (const [i, step] of path.steps.entries()) {
      const event: EventObject = step.event;
      const delay = timeouts.get(event.type);
      if (event.type === 'xstate.init') actor.start();
      else if (delay !== undefined) {
        const timer = clock.pending().find((p) => p.timeout === delays[delay]);
        if (!timer) return false;
        const mine = due(timer.id, timer.timeout);
        for (const other of clock.pending()) if (other !== timer && worst(mine, due(other.id, other.timeout)) >= 0) return false;
        clock.fireTimer(delays[delay]);
        now = mine;
      } else {
        lo[i] = gap.min(event);
        hi[i] = gap.max(event);
        now = { c: now.c, steps: new Set([...now.steps, i]) };
        for (const other of clock.pending()) if (worst(now, due(other.id, other.timeout)) >= 0) return false;
        clock.advanceQuietly(lo[i]!);
        actor.send(event as ConnectionEvent);
      }
      noteArmed();
    }
    return true;
  } catch {
    return false;
  } finally {
    actor.stop();
  }
}

/** A step's event as a path title shows it: `⏰delay`, `type(code)`. */
export function label(e: EventObject): string {
  const delay = timeouts.get(e.type);
  if (delay) return `⏰${delay}`;
  const { type, ...rest } = e as ConnectionEvent;
  const arg = 'code' in rest ? rest.code : 'rttMs' in rest ? rest.rttMs : undefined;
  return arg === undefined ? type : `${type}(${arg})`;
}
