/**
 * The client machine's model for `xstate/graph`: timing, backoff, event
 * samples and the generated paths, without sessions and with them. The one
 * generator, shared by the model-based test (test/machines/client.machine.test.ts,
 * fake dialer and child, simulated clock) and the conformance test
 * (test/conformance/client-paths.test.ts, the real Node client against a
 * scripted server), so both run the very same paths.
 */
import { __unsafe_getAllOwnEventDescriptors, type EventObject, type SnapshotFrom } from 'xstate';
import { TestModel, getAdjacencyMap, type TestPath } from 'xstate/graph';
import { clientMachine, type ClientEvent, type ClientInput, type ClientTiming } from '../../machines/client.machine.ts';
import type { BackoffOptions } from '../../machines/backoff.ts';
import type { Closure } from '../../machines/close-codes.ts';
import { delayedEventTypes, perSnapshot, shortestPathsOf, simplePathsOf, stateIdMatcher } from './model-coverage.ts';

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
/**
 * With sessions, maxAttempts 2: the resume step multiplies the states of a
 * connection, and with 3 attempts the simple paths no longer enumerate in
 * reasonable time (57 vertices measured); 2 attempts still reach every guard.
 */
export const sessionBackoff: BackoffOptions = { ...backoff, maxAttempts: 2 };
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
/** Sessions: what the client reports of the server's first answer on a connection. */
export const sessionSamples: ClientEvent[] = [
  { type: 'session.attached' },
  { type: 'session.unsupported', message: 'the server answered {"requestID":0,…}' },
];
/** How the connection machine is told to drop a connection whose resume got no answer. */
export const ABANDON = { type: 'terminate', reason: 'no session answer in time' } as const;
/**
 * The connection machine's closure for ABANDON on an open connection (R17:
 * terminated by us, no close frame): the only way an abandoned connection
 * ends when no close was asked for, and at once (the child is terminated in
 * the same step, so no network drop or server close can come first).
 */
export const ABANDONED: Closure = { code: 1006, reason: ABANDON.reason, initiator: 'local', cause: 'terminated', expected: false, receivedCode: null };
/** What the Node dialer reports when the server refuses the session upgrade (sessions off). */
export const REFUSED_UPGRADE: ClientEvent = { type: 'session.unsupported', message: 'server refused the upgrade: HTTP 400 sessions are not enabled on this server' };
export const UNSUPPORTED_CLOSE = { code: 1000, reason: 'sessions unsupported by the server' };
/** How a server of this library with sessions off ends a session connection before attaching (the client echoes it). */
export const SESSIONS_OFF: Closure = { code: 4501, reason: 'sessions are not enabled on this server', initiator: 'remote', cause: 'peer', expected: false, receivedCode: 4501 };
export const closeSamples: ClientEvent[] = [
  { type: 'close' },
  { type: 'close', code: 4000, reason: 'user logged out' },
];
export interface ConnectionDone {
  type: typeof CONNECTION_DONE;
  output: Closure;
  actorId: 'connection';
}
/**
 * How a connection may end: the peer or the network ends it, or the peer
 * answers our close; an abandoned resume (no close asked for) ends by its
 * terminate; while resuming, a server with sessions off closes it 4501.
 */
export function doneSamples(snapshot: ClientSnapshot): ConnectionDone[] {
  const { closeRequest } = snapshot.context;
  const endings =
    closeRequest !== null ? [answered(closeRequest), NETWORK_DROP]
    : snapshot.matches({ connected: 'abandoned' }) ? [ABANDONED]
    : snapshot.matches({ connected: 'resuming' }) ? [SERVER_RESTART, NETWORK_DROP, SESSIONS_OFF]
    : [SERVER_RESTART, NETWORK_DROP];
  return endings.map((output) => ({ type: CONNECTION_DONE, output, actorId: 'connection' }));
}

export const modelInput: ClientInput = { id: CLIENT_ID, timing, backoff, random: () => 0.5, transport: null };
export const sessionModelInput: ClientInput = { ...modelInput, backoff: sessionBackoff, session: true };

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
    // Time orders these two: both start when the connection opens, and resumeTimeout < stableAfter
    // (asserted by the tests), so stableAfter cannot fire while the resume is still unanswered.
    .filter((type) => type !== STABLE_AFTER_EVENT || !snapshot.matches({ connected: 'resuming' }))
    .map((type) => ({ type }) as unknown as ClientEvent);
  return [
    // The dialer only lives (and reports) while connecting; the connection child while connected.
    ...(snapshot.value === 'connecting' ? dialSamples : []),
    // A session client's dialer may see the session upgrade refused (a server with sessions off).
    ...(snapshot.value === 'connecting' && snapshot.context.session ? [REFUSED_UPGRADE] : []),
    ...(snapshot.matches('connected') ? (doneSamples(snapshot) as unknown as ClientEvent[]) : []),
    // The server's first answer only matters while resuming (the client reports it once per connection).
    ...(snapshot.matches({ connected: 'resuming' }) ? sessionSamples : []),
    ...closeSamples,
    ...timers,
  ];
}

/** A model vertex: io (an opaque handle), random and the constant input are left out. */
export const vertex = perSnapshot((s: ClientSnapshot): string =>
  JSON.stringify([s.status, s.value, s.context.attempt, s.context.delayMs, s.context.closeRequest, s.context.lastClosure, s.context.gaveUp, s.context.unsupported]));
/**
 * The coarser vertex of the simple paths: lastClosure (a function of the last
 * step) left out; with it the simple paths number 17,058 instead of ~700.
 */
export const simpleVertex = perSnapshot((s: ClientSnapshot): string =>
  JSON.stringify([s.status, s.value, s.context.attempt, s.context.closeRequest, s.context.gaveUp, s.context.unsupported]));

/**
 * Guards against a machine change that makes the model's state space infinite
 * (e.g. an attempt count that grows without bound) or too big to enumerate
 * simple paths in (their number grows exponentially with the vertices): path
 * generation would then run forever at import time. Exceeded, the file fails
 * at once, saying which.
 */
const TRAVERSAL_LIMIT = 5_000;
/** Without sessions: 21 simple-path vertices; with them the resume step adds its states (measured: see the diagnostics). */
const MAX_SIMPLE_PATH_VERTICES = { plain: 30, session: 45 } as const;

export interface Generated {
  edgePaths: ClientPath[];
  simplePaths: ClientPath[];
  vertices: number;
  error: string | null;
}

function generate(input: ClientInput, maxVertices: number): Generated {
  const model = new TestModel(clientMachine, { input, events: modelEvents, stateMatcher: stateIdMatcher(clientMachine) });
  const out: Generated = { edgePaths: [], simplePaths: [], vertices: 0, error: null };
  try {
    /** Shortest paths to every *transition*: the vertex includes the step that led to it. */
    out.edgePaths = shortestPathsOf(model, {
      serializeState: (s, e, prev) => (e && prev ? `${vertex(s)} via ${JSON.stringify(e)} from ${vertex(prev)}` : vertex(s)),
      limit: TRAVERSAL_LIMIT,
    });
    out.vertices = Object.keys(
      getAdjacencyMap(clientMachine, { input, events: modelEvents, serializeState: simpleVertex, limit: TRAVERSAL_LIMIT }),
    ).length;
    if (out.vertices > maxVertices) {
      throw new Error(`the model has ${out.vertices} simple-path vertices (at most ${maxVertices} expected): too many to enumerate simple paths`);
    }
    /** Every cycle-free route to every state: longer histories (retries, resets, repeated closes) for the oracle. */
    out.simplePaths = simplePathsOf(model, { serializeState: simpleVertex, limit: TRAVERSAL_LIMIT });
  } catch (error) {
    out.error = error instanceof Error ? error.message : String(error);
  }
  return out;
}

/** The generated paths: a client without sessions, and one with `session: true`. */
export const models: { plain: Generated; session: Generated } = {
  plain: generate(modelInput, MAX_SIMPLE_PATH_VERTICES.plain),
  session: generate(sessionModelInput, MAX_SIMPLE_PATH_VERTICES.session),
};

export function label(e: EventObject): string {
  const delay = timeouts.get(e.type);
  if (delay) return `⏰${delay}`;
  if (e.type === CONNECTION_DONE) return `connection ended(${(e as unknown as ConnectionDone).output.code})`;
  const c = e as ClientEvent;
  if (c.type === 'close') return `close(${c.code ?? ''})`;
  return c.type;
}
