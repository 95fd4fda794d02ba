/**
 * The connection machine's model for `xstate/graph`: the event samples, the
 * timing the paths are generated with, and the generated paths themselves.
 * Shared by the model-based test (test/machines/connection.machine.test.ts,
 * fake actors, simulated clock) and the conformance test
 * (test/conformance/server-paths.test.ts, the real reader and writer on a
 * loopback socket), so both run the very same paths.
 */
import { __unsafe_getAllOwnEventDescriptors, type EventObject, type SnapshotFrom } from 'xstate';
import { TestModel, type TestPath } from 'xstate/graph';
import { connectionMachine, type ConnectionEvent, type ConnectionInput, type ConnectionTiming } from '../../machines/connection.machine.ts';
import { delayedEventTypes, stateIdMatcher } from './model-coverage.ts';

export type ConnectionSnapshot = SnapshotFrom<typeof connectionMachine>;
export type ConnectionPath = TestPath<ConnectionSnapshot, ConnectionEvent>;
export type DelayName = keyof ConnectionTiming;

/** Distinct values, so an armed timer tells which delay it belongs to. Only their order shapes the paths. */
export const modelTiming: ConnectionTiming = { pingInterval: 1000, pongTimeout: 500, writeTimeout: 700, closeTimeout: 300 };

/**
 * The concrete events the model may send, per type (a type missing here fails
 * to compile). Bounded on purpose: each distinct payload multiplies the state space.
 */
export const samples: { [T in ConnectionEvent['type']]: Array<Extract<ConnectionEvent, { type: T }>> } = {
  'socket.open': [{ type: 'socket.open' }],
  'socket.pong': [{ type: 'socket.pong', rttMs: 5 }],
  'socket.activity': [{ type: 'socket.activity' }],
  'socket.silent': [{ type: 'socket.silent' }],
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
    if (typeof delay !== 'string' || !Object.hasOwn(modelTiming, delay)) throw new Error(`${type}: unknown delay ${delay}`);
    return [type, delay as DelayName];
  }),
);

/**
 * Events from outside arrive close together in model runs, so timers armed
 * together fire shortest first: a delayed event is offered only when no other
 * armed timer is shorter.
 */
function timerCanFireNext(snapshot: ConnectionSnapshot, event: EventObject): boolean {
  const delay = timeouts.get(event.type);
  if (delay === undefined) return true;
  const others = __unsafe_getAllOwnEventDescriptors(snapshot).flatMap((t) => {
    const d = timeouts.get(t);
    return d === undefined ? [] : [modelTiming[d]];
  });
  return modelTiming[delay] === Math.min(...others);
}

/** A model vertex: the constant id/timing/io are left out. */
export const vertex = (s: ConnectionSnapshot): string =>
  JSON.stringify([s.status, s.value, s.context.closeRequest, s.context.closure]);

export const modelInput: ConnectionInput = { id: 'c1', timing: modelTiming, io: {} };

const model = new TestModel(connectionMachine, {
  input: modelInput,
  // Every event in every live state, not only the ones the state handles: a
  // missing transition, or an event that should be ignored and is not, then
  // shows up as a disagreement with the oracle. (`closed` ignores everything.)
  // Plus the timers the state has armed.
  events: (snapshot) =>
    snapshot.status !== 'active'
      ? []
      : [
          ...allSamples,
          ...__unsafe_getAllOwnEventDescriptors(snapshot)
            .filter((type) => timeouts.has(type))
            // `xstate.after.<delay>.<stateId>` is not a ConnectionEvent, but the machine takes it.
            .map((type) => ({ type }) as unknown as ConnectionEvent),
        ],
  filterEvents: timerCanFireNext,
  stateMatcher: stateIdMatcher(connectionMachine),
});

/**
 * Shortest paths to every *transition*: the vertex includes the step that led
 * to it, so each edge of the state graph (self-loops such as write.progress
 * included) ends some shortest path.
 */
export const edgePaths: ConnectionPath[] = model.getShortestPaths({
  serializeState: (s, e, prev) => (e && prev ? `${vertex(s)} via ${JSON.stringify(e)} from ${vertex(prev)}` : vertex(s)),
});
/** Every cycle-free route to every state: longer histories for the oracle. */
export const simplePaths: ConnectionPath[] = model.getSimplePaths({ serializeState: vertex });

/** A step's event as a path title shows it: `⏰delay`, `type(code)`. */
export function label(e: EventObject): string {
  const delay = timeouts.get(e.type);
  if (delay) return `⏰${delay}`;
  const { type, ...rest } = e as ConnectionEvent;
  const arg = 'code' in rest ? rest.code : 'rttMs' in rest ? rest.rttMs : undefined;
  return arg === undefined ? type : `${type}(${arg})`;
}
