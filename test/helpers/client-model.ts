/**
 * The client machine's model for `xstate/graph`: timing, backoff, event
 * samples and the generated paths. Shared by the model-based test
 * (test/machines/client.machine.test.ts, fake dialer and child, simulated
 * clock) and the conformance test (test/conformance/client-paths.test.ts, the
 * real Node client against a scripted server), so both run the very same paths.
 */
import { __unsafe_getAllOwnEventDescriptors, type EventObject, type SnapshotFrom } from 'xstate';
import { TestModel, getAdjacencyMap, type TestPath } from 'xstate/graph';
import { clientMachine, type ClientEvent, type ClientInput, type ClientTiming } from '../../machines/client.machine.ts';
import type { BackoffOptions } from '../../machines/backoff.ts';
import type { Closure } from '../../machines/close-codes.ts';
import { delayedEventTypes, stateIdMatcher } from './model-coverage.ts';

export type ClientSnapshot = SnapshotFrom<typeof clientMachine>;
export type ClientPath = TestPath<ClientSnapshot, ClientEvent>;

/** Distinct values, so an armed timer tells which delay it belongs to. */
export const timing: ClientTiming = { pingInterval: 1000, pongTimeout: 500, writeTimeout: 700, closeTimeout: 300, connectTimeout: 2000, resumeTimeout: 1500 };
/**
 * maxAttempts 3 (three consecutive failed attempts, two waits) makes `canRetry`
 * false reachable and bounds the attempt count, so the state space is finite
 * and small: 230 shortest paths to every transition, 714 simple paths.
 * Ceilings 100, then 150 (200 capped): the cap is reached inside the model too.
 */
export const backoff: BackoffOptions = { initialDelay: 100, maxDelay: 150, multiplier: 2, maxAttempts: 3, stableAfter: 5000 };
export const CLIENT_ID = 'client-1';

export type DelayName = 'connectTimeout' | 'backoff' | 'stableAfter' | 'resumeTimeout';
export const timeouts = new Map<string, DelayName>(
  [...delayedEventTypes(clientMachine)].map(([type, delay]) => {
    if (delay !== 'connectTimeout' && delay !== 'backoff' && delay !== 'stableAfter' && delay !== 'resumeTimeout') throw new Error(`${type}: unknown delay ${delay}`);
    return [type, delay];
  }),
);
export const STABLE_AFTER_EVENT = [...timeouts].find(([, d]) => d === 'stableAfter')![0];
export const CONNECTION_DONE = 'xstate.done.actor.connection';

/** How a failed attempt is recorded (R17 fields): the network's 1006, the failure as the reason. */
export function failedAttempt(reason: string): Closure {
  return { code: 1006, reason, initiator: 'remote', cause: 'socket-error', expected: false, receivedCode: null };
}
export const SERVER_RESTART: Closure = { code: 1001, reason: 'server restart', initiator: 'remote', cause: 'peer', expected: true, receivedCode: 1001 };
export const NETWORK_DROP: Closure = { code: 1006, reason: '', initiator: 'remote', cause: 'socket-error', expected: false, receivedCode: 1006 };
/** The connection machine's closure when the peer answers our close frame. */
export function answered(request: { code: number; reason: string }): Closure {
  const expected = request.code === 1000 || request.code === 1001;
  return { code: request.code, reason: request.reason, initiator: 'local', cause: 'normal', expected, receivedCode: request.code };
}

export const dialSamples: ClientEvent[] = [
  // The io is a placeholder for the model; executors hand the SUT a fresh FakeSocket.
  { type: 'dial.ready', io: 'socket' },
  { type: 'dial.failed', message: 'connect ECONNREFUSED 127.0.0.1:9' },
];
export const closeSamples: ClientEvent[] = [
  { type: 'close' },
  { type: 'close', code: 4000, reason: 'user logged out' },
];
export interface ConnectionDone {
  type: typeof CONNECTION_DONE;
  output: Closure;
  actorId: 'connection';
}
/** How a connection may end: the peer or the network ends it, or the peer answers our close. */
export function doneSamples(closeRequest: { code: number; reason: string } | null): ConnectionDone[] {
  const endings = closeRequest === null ? [SERVER_RESTART, NETWORK_DROP] : [answered(closeRequest), NETWORK_DROP];
  return endings.map((output) => ({ type: CONNECTION_DONE, output, actorId: 'connection' }));
}

export const modelInput: ClientInput = { id: CLIENT_ID, timing, backoff, random: () => 0.5, transport: null };

/** Every event the model may take in `snapshot`. */
export function modelEvents(snapshot: ClientSnapshot): ClientEvent[] {
  if (snapshot.status !== 'active') return [];
  const timers = __unsafe_getAllOwnEventDescriptors(snapshot)
    .filter((type) => timeouts.has(type))
    // stableAfter is a targetless transition: its timer is not re-armed once it
    // fired, but the model would offer it again. Offered while attempt > 0 only:
    // once it fired attempt is 0 and stays 0 until the connection ends, and
    // on a connection that starts at 0 it would change nothing.
    .filter((type) => type !== STABLE_AFTER_EVENT || snapshot.context.attempt > 0)
    .map((type) => ({ type }) as unknown as ClientEvent);
  return [
    // The dialer only lives (and reports) while connecting; the connection child while connected.
    ...(snapshot.value === 'connecting' ? dialSamples : []),
    ...(snapshot.matches('connected') ? (doneSamples(snapshot.context.closeRequest) as unknown as ClientEvent[]) : []),
    ...closeSamples,
    ...timers,
  ];
}

const model = new TestModel(clientMachine, {
  input: modelInput,
  events: modelEvents,
  stateMatcher: stateIdMatcher(clientMachine),
});

/** A model vertex: io (an opaque handle), random and the constant input are left out. */
export const vertex = (s: ClientSnapshot): string =>
  JSON.stringify([s.status, s.value, s.context.attempt, s.context.delayMs, s.context.closeRequest, s.context.lastClosure, s.context.gaveUp]);
/**
 * The coarser vertex of the simple paths: lastClosure (a function of the last
 * step) left out; with it the simple paths number 17,058 instead of ~700.
 */
export const simpleVertex = (s: ClientSnapshot): string =>
  JSON.stringify([s.status, s.value, s.context.attempt, s.context.closeRequest, s.context.gaveUp]);

/**
 * Guards against a machine change that makes the model's state space infinite
 * (e.g. an attempt count that grows without bound) or too big to enumerate
 * simple paths in (their number grows exponentially with the vertices): path
 * generation would then run forever at import time. Now: ~300 traversal steps,
 * 21 simple-path vertices. Exceeded, the file fails at once, saying which.
 */
const TRAVERSAL_LIMIT = 5_000;
const MAX_SIMPLE_PATH_VERTICES = 30;
export let generationError: string | null = null;
export let edgePaths: Array<TestPath<ClientSnapshot, ClientEvent>> = [];
export let simplePaths: Array<TestPath<ClientSnapshot, ClientEvent>> = [];
try {
  /** Shortest paths to every *transition*: the vertex includes the step that led to it. */
  edgePaths = model.getShortestPaths({
    serializeState: (s, e, prev) => (e && prev ? `${vertex(s)} via ${JSON.stringify(e)} from ${vertex(prev)}` : vertex(s)),
    limit: TRAVERSAL_LIMIT,
  });
  const vertices = Object.keys(
    getAdjacencyMap(clientMachine, { input: modelInput, events: modelEvents, serializeState: simpleVertex, limit: TRAVERSAL_LIMIT }),
  ).length;
  if (vertices > MAX_SIMPLE_PATH_VERTICES) {
    throw new Error(`the model has ${vertices} simple-path vertices (at most ${MAX_SIMPLE_PATH_VERTICES} expected): too many to enumerate simple paths`);
  }
  /** Every cycle-free route to every state: longer histories (retries, resets, repeated closes) for the oracle. */
  simplePaths = model.getSimplePaths({ serializeState: simpleVertex, limit: TRAVERSAL_LIMIT });
} catch (error) {
  generationError = error instanceof Error ? error.message : String(error);
}

export function label(e: EventObject): string {
  const delay = timeouts.get(e.type);
  if (delay) return `⏰${delay}`;
  if (e.type === CONNECTION_DONE) return `connection ended(${(e as unknown as ConnectionDone).output.code})`;
  const c = e as ClientEvent;
  if (c.type === 'close') return `close(${c.code ?? ''})`;
  return c.type;
}
