/**
 * Conformance: the client machine's generated model paths
 * (test/helpers/client-model.ts, the very paths of
 * test/machines/client.machine.test.ts) replayed against the REAL Node client
 * (createClient: its dialer, the connection child with the real reader and
 * writer, real timers) and a scripted WebSocket server on 127.0.0.1
 * (test/helpers/scripted-peer.ts) that does on the wire what each model event
 * means: accept the upgrade, refuse it (HTTP 503), never answer it, close
 * with 1001, cut TCP, answer the client's close; with sessions, answer the
 * client's open/resume with `attached`, or with a plain message (a server
 * without sessions), or not at all, or close 4501 (sessions off), or refuse
 * the upgrade with 400 (sessions off, a server from before 4501).
 *
 * After each step the client's snapshot (from its `inspect` stream, right
 * after the step's event) must equal the model's — the path's events replayed
 * through the pure machine, since simple paths share vertices across routes —
 * and the client must have received that event and nothing else; a timer must
 * fire no earlier than its delay, and with a control timer armed with it
 * (test/helpers/control-timer.ts: order, not wall time). At the end: the
 * client's output (R22: closed or gave up, with the last closure), the close
 * frames the server saw, and every TCP connection released.
 *
 * `npm test` runs a greedy set cover of the transitions; CONFORMANCE=full runs every path.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { initialTransition, transition, type EventObject, type InspectionEvent } from 'xstate';
import { clientMachine, type ClientEvent } from '../../machines/client.machine.ts';
import { backoffDelay } from '../../machines/backoff.ts';
import type { Closure } from '../../machines/close-codes.ts';
import { createClient, type Client } from '../../src/client/node.ts';
import { encodeAttached } from '../../src/protocol/session.ts';
import {
  ABANDONED,
  CONNECTION_DONE,
  NETWORK_DROP,
  SERVER_RESTART,
  SESSIONS_OFF,
  UNSUPPORTED_CLOSE,
  backoff,
  label,
  modelInput,
  models,
  sessionBackoff,
  sessionModelInput,
  timeouts,
  type ClientPath,
  type ClientSnapshot,
  type ConnectionDone,
  type DelayName,
} from '../helpers/client-model.ts';
import { allStateNodes, allTransitionKeys, greedyCover, isActive, missing, pathTitle, transitionKey } from '../helpers/model-coverage.ts';
import { ControlTimers, StepRecord, bracketError, type StepEntry } from '../helpers/control-timer.ts';
import { ScriptedServer, type UpgradeScript } from '../helpers/scripted-peer.ts';
import { pace } from '../helpers/pace.ts';

/**
 * The client's output once it ended, or null after `ms`. The timer is cleared when it ends: a pending one
 * kept this file's process alive ~4.5 s after its last test (holding a slot of the suite run).
 */
async function endedWithin(client: Client, ms: number): Promise<Awaited<Client['ended']> | null> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([client.ended, new Promise<null>((r) => (timer = setTimeout(() => r(null), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------
// Timing

/**
 * The client's own delays. In each client state at most one of them is armed,
 * so only their length matters: connectTimeout and stableAfter long against a
 * step on loopback (1–10 ms; with 8 paths at once and a load average of 15
 * from other work, a refused upgrade took over 300 ms) so that they fire only
 * when a path waits for them. The backoff is the model's (its delays are part of the
 * model's state; random 0.5 as in the model: 50, then 75 ms).
 */
const CONNECT_TIMEOUT = 1000;
const STABLE_AFTER = 1500;
/**
 * Sessions: the server must attach within this of the connection opening.
 * Under STABLE_AFTER (the model offers no stableAfter while resuming) by more
 * than a step takes, and distinct from CONNECT_TIMEOUT.
 */
const RESUME_TIMEOUT = 800;
/**
 * The connection child: heartbeat off (pingInterval 0, R7: the model has no
 * heartbeat ending), and a close timeout the scripted server always beats.
 */
const CHILD_TIMING = { pingInterval: 0, closeTimeout: pace.scaled(3000) };
/** Hang guards (waits for the client, the server, a close frame): idle-machine numbers scaled by the measured pace (test/helpers/pace.ts). */
const guard = (ms: number): number => pace.scaled(ms);
const CONCURRENCY = Number(process.env.CONFORMANCE_CONCURRENCY ?? 4);
const FULL = process.env.CONFORMANCE === 'full';
const GREP = process.env.CONFORMANCE_GREP;

// ---------------------------------------------------------------------------
// What cannot be produced on a real socket, and why

const NOT_PRODUCIBLE = {
  dropWhileClosing:
    'the connection ended by a network drop after a deliberate close: the model samples NETWORK_DROP (remote, 1006), but the real connection machine is in `closing` then and records our close (local, its code) with receivedCode null: a 1006 while closing is no answer (R17) — a different closure, so the step cannot be produced as sampled',
  abandonedEnds:
    'anything but the terminate\'s own end in `abandoned`: the client terminates the connection in the step that abandons the resume, so the connection ends at once, by itself, with the terminate\'s closure (no close, server close, network drop or timer can come first); with a close asked for before, that closure records our close and the terminate\'s reason, not a sampled answer',
  secondClose:
    'a second close with another code or reason while the first close handshake runs: the client machine records the second request and forwards it, but the connection child is already closing and ignores it, so the connection ends with the first code, not with the model\'s sample (the peer answering the latest request)',
} as const;
type Reason = keyof typeof NOT_PRODUCIBLE;

/** `firstClose`: the close request that started the handshake of the current connection, if any. */
function notProducible(before: ClientSnapshot, event: EventObject, firstClose: unknown): Reason | null {
  if (before.matches({ connected: 'abandoned' })) {
    const own = event.type === CONNECTION_DONE && (event as unknown as ConnectionDone).output === ABANDONED;
    return own ? null : 'abandonedEnds';
  }
  if (event.type !== CONNECTION_DONE || before.context.closeRequest === null) return null;
  if ((event as unknown as ConnectionDone).output === NETWORK_DROP) return 'dropWhileClosing';
  if (JSON.stringify(firstClose) !== JSON.stringify(before.context.closeRequest)) return 'secondClose';
  return null;
}

function firstObstacle(path: ClientPath): Reason | null {
  let firstClose: unknown = null;
  for (let i = 1; i < path.steps.length; i++) {
    const before = path.steps[i - 1]!.state;
    const reason = notProducible(before, path.steps[i]!.event, firstClose);
    if (reason) return reason;
    const after = path.steps[i]!.state;
    if (!after.matches('connected')) firstClose = null;
    else if (firstClose === null && after.context.closeRequest !== null) firstClose = after.context.closeRequest;
  }
  return null;
}

/** The path's events through the pure machine: the model's snapshot after each step, for this route. */
function replay(path: ClientPath, session: boolean): ClientSnapshot[] {
  const [initial] = initialTransition(clientMachine, session ? sessionModelInput : modelInput);
  const out: ClientSnapshot[] = [initial];
  for (let i = 1; i < path.steps.length; i++) out.push(transition(clientMachine, out[i - 1]!, path.steps[i]!.event)[0]);
  return out;
}

// ---------------------------------------------------------------------------
// One run

type Entry = StepEntry<ClientSnapshot>;

const timerNodes = new Map([...timeouts.keys()].map((type) => [type, clientMachine.getStateNodeById(type.split('.').slice(3).join('.'))]));
const lateness: number[] = [];


/** What a ws-supervisor server with sessions off answers a session upgrade (src/server/supervisor.ts). */
const SESSIONS_OFF_BODY = 'sessions are not enabled on this server';

function scriptFor(next: EventObject | undefined): UpgradeScript {
  if (next?.type === 'dial.ready') return { kind: 'accept' };
  if (next?.type === 'dial.failed') return { kind: 'refuse', status: 503 };
  // While connecting, session.unsupported is the dialer's report of a server with sessions off (its 400).
  if (next?.type === 'session.unsupported') return { kind: 'refuse', status: 400, body: SESSIONS_OFF_BODY };
  return { kind: 'hang' }; // a connect timeout, a close while connecting, or the end of the path
}

class ClientRun {
  /** The client's steps, its timers and their controls (test/helpers/control-timer.ts). */
  readonly record = new StepRecord<ClientSnapshot>(timerNodes, () => this.expectedDelays());
  server!: ScriptedServer;
  client!: Client;
  /** Per accepted connection (by index): the close code the client should have sent, if any. */
  readonly expectedFromClient = new Map<number, number>();
  /** Sessions: `attached` frames sent (the first attaches a new session, later ones resume it). */
  attached = 0;

  private constructor(readonly session: boolean) {}

  get backoff() {
    return this.session ? sessionBackoff : backoff;
  }

  static async start(session: boolean): Promise<ClientRun> {
    const run = new ClientRun(session);
    run.server = await ScriptedServer.start();
    return run;
  }

  open(): void {
    this.client = createClient(`ws://127.0.0.1:${this.server.port}/`, {
      timing: { ...CHILD_TIMING, connectTimeout: CONNECT_TIMEOUT, resumeTimeout: RESUME_TIMEOUT },
      backoff: { ...this.backoff, stableAfter: STABLE_AFTER },
      random: () => 0.5,
      ...(this.session ? { session: true } : {}),
      inspect: (e: InspectionEvent) => this.onInspect(e),
    });
  }

  onInspect(e: InspectionEvent): void {
    // The client's own steps (not its children's).
    if (e.actorRef.sessionId !== e.rootId) return;
    this.record.onInspect(e);
  }

  get entries(): Entry[] {
    return this.record.entries;
  }
  get cursor(): number {
    return this.record.cursor;
  }
  set cursor(i: number) {
    this.record.cursor = i;
  }
  get controls(): ControlTimers {
    return this.record.controls;
  }

  /** The delay each of the client's timers should have if this step arms it (the backoff: its next delay, jitter 0.5). */
  expectedDelays(): Map<string, number> {
    const attempt = this.entries.at(-1)?.snapshot.context.attempt ?? 0;
    const waits: Record<DelayName, number> = {
      connectTimeout: CONNECT_TIMEOUT,
      stableAfter: STABLE_AFTER,
      backoff: backoffDelay(attempt, this.backoff, 0.5),
      resumeTimeout: RESUME_TIMEOUT,
    };
    return new Map([...timeouts].map(([type, delay]) => [type, waits[delay]]));
  }

  get connection() {
    const c = this.server.connections.at(-1);
    assert.ok(c, 'the scripted server has a connection');
    return c;
  }

  reported(type: string, timeoutMs: number): Promise<number> {
    return this.record.reported(type, timeoutMs);
  }

  async dispose(): Promise<void> {
    this.controls.clear();
    if (this.client && this.client.machine.getSnapshot().status === 'active') {
      void this.client.close();
      await new Promise((r) => setTimeout(r, 20));
    }
    await this.server.close();
    if (this.client) await endedWithin(this.client, guard(3000));
  }
}

// ---------------------------------------------------------------------------
// Event → what the scripted server (or the application) does

interface ServerAction {
  means: string;
  /**
   * `before` is the model's state before the step, which the real client has
   * been checked to be in: the real client may have moved on since (a refusal
   * scripted by the step before can reach it first), so an action decides by
   * the model's.
   */
  act(run: ClientRun, event: EventObject, next: EventObject | undefined, before: ClientSnapshot): void | Promise<void>;
}

const SERVER_ACTIONS: Record<string, ServerAction> = {
  'xstate.init': {
    means: 'the application creates the client; it dials at once (the server is told how to answer the upgrade by the next step)',
    act: (run, _e, next) => {
      run.server.scripts.push(scriptFor(next));
      run.open();
    },
  },
  'dial.ready': { means: 'the server answers the upgrade with 101', act: () => undefined },
  'dial.failed': { means: 'the server refuses the upgrade with HTTP 503', act: () => undefined },
  close: {
    means: 'the application calls client.close(code, reason) (R22: deliberate)',
    act: (run, e) => {
      const { code, reason } = e as Extract<ClientEvent, { type: 'close' }>;
      const live = run.client.machine.getSnapshot().matches('connected');
      const request = run.client.machine.getSnapshot().context.closeRequest;
      if (live && request === null) run.expectedFromClient.set(run.server.connections.length - 1, code ?? 1000);
      void run.client.close(code, reason);
    },
  },
  'session.attached': {
    means: 'sessions: the server answers the client\'s open (or resume) frame with `attached` (a new session the first time, the same one resumed after)',
    act: async (run) => {
      const conn = run.connection;
      await run.server.waitFor(() => conn.dataFrames > 0, guard(3000), "the client's open or resume frame");
      const resumed = run.attached++ > 0;
      conn.sendText(encodeAttached({ id: 'session-1', token: 'token-1', epoch: 'epoch-1', resumed, lastSeq: 0, replay: 0, cseq: 0, resumeWindow: 60_000 }));
    },
  },
  'session.unsupported': {
    means: 'sessions: while connecting, the server refuses the session upgrade with HTTP 400 (sessions off, a server from before the 4501 close: scripted by the step before); once connected, the server answers the client\'s open frame with a plain message (a server without sessions); either way the client stops for good (closing 1000 when connected)',
    act: async (run, _e, _next, before) => {
      // While connecting, the refusal was scripted by the step before, and may have reached the client already
      // (under load, once in a full run): the real client is then past `connecting`, and the connection before it
      // (which the client closed 1001) must not be taken for the one to answer.
      if (before.matches('connecting')) return;
      const conn = run.connection;
      await run.server.waitFor(() => conn.dataFrames > 0, guard(3000), "the client's open or resume frame");
      if (before.context.closeRequest === null) run.expectedFromClient.set(run.server.connections.length - 1, UNSUPPORTED_CLOSE.code);
      conn.sendText('{"requestID":0,"result":"hello"}');
    },
  },
  [CONNECTION_DONE]: {
    means: 'SERVER_RESTART: the server sends close 1001 "server restart" (the client echoes it); SESSIONS_OFF: the server sends close 4501 "sessions are not enabled on this server" before attaching (a server of this library with sessions off; the client echoes it and stops); NETWORK_DROP: the server cuts TCP; answered: the server echoes the client\'s close frame and ends TCP; ABANDONED: nothing (the client terminated the connection itself when the resume timed out)',
    act: async (run, e) => {
      const { output } = e as unknown as ConnectionDone;
      if (output === ABANDONED) return;
      const conn = run.connection;
      if (output === SERVER_RESTART || output === SESSIONS_OFF) {
        run.expectedFromClient.set(run.server.connections.length - 1, output.code);
        conn.sendClose(output.code, output.reason);
      } else if (output === NETWORK_DROP) conn.cut();
      else {
        await run.server.waitFor(() => conn.closeFrames.length > 0, guard(3000), "the client's close frame");
        conn.answerClose();
      }
    },
  },
  ...Object.fromEntries(
    [...timeouts].map(([type, delay]): [string, ServerAction] => [
      type,
      {
        means: `the real ${delay} timer fires${delay === 'connectTimeout' ? ' (the server never answers the upgrade)' : ''}${delay === 'backoff' ? ' (the server is told how to answer the next attempt)' : ''}${delay === 'resumeTimeout' ? ' (the server never answers the open or resume frame; the client terminates the connection)' : ''}`,
        act: (run, _e, next) => {
          if (delay === 'backoff') run.server.scripts.push(scriptFor(next));
        },
      },
    ]),
  ),
};

// ---------------------------------------------------------------------------
// Checks

const isDialFailure = (c: Closure | null): boolean =>
  c !== null && c.initiator === 'remote' && c.cause === 'socket-error' && c.receivedCode === null && c.reason !== 'connect timeout';

/** A dial failure's reason is the dialer's message (model: a sample ECONNREFUSED; here: the 503 refusal). */
function comparable(s: ClientSnapshot): unknown {
  const last = s.context.lastClosure;
  const { attempt, delayMs, closeRequest, gaveUp, unsupported } = s.context;
  return {
    status: s.status,
    value: s.value,
    context: { attempt, delayMs, closeRequest, gaveUp, unsupported, lastClosure: isDialFailure(last) ? { ...last, reason: '(dial failure)' } : last },
    output: s.output ? { ...s.output, lastClosure: isDialFailure(s.output.lastClosure) ? { ...s.output.lastClosure, reason: '(dial failure)' } : s.output.lastClosure } : undefined,
  };
}

function delayOf(delay: DelayName, snapshot: ClientSnapshot): number {
  if (delay === 'connectTimeout') return CONNECT_TIMEOUT;
  if (delay === 'stableAfter') return STABLE_AFTER;
  if (delay === 'resumeTimeout') return RESUME_TIMEOUT;
  return snapshot.context.delayMs;
}

async function runPath(path: ClientPath, session: boolean): Promise<void> {
  const model = replay(path, session);
  const run = await ClientRun.start(session);
  try {
    for (let i = 0; i < path.steps.length; i++) {
      const step = path.steps[i]!;
      const type: string = step.event.type;
      const action = SERVER_ACTIONS[type];
      assert.ok(action, `no server action for event type ${type}: add one to SERVER_ACTIONS`);
      const before = model[i - 1] ?? model[0]!;
      await action.act(run, step.event, path.steps[i + 1]?.event, before);
      const delay = timeouts.get(type);
      const at = await run.reported(type, delay ? delayOf(delay, before) + guard(5000) : guard(5000));
      const consumed = run.entries.slice(run.cursor, at + 1);
      run.cursor = at + 1;
      const unexpected = consumed.slice(0, -1).map((e) => e.event.type);
      assert.deepEqual(unexpected, [], `step ${i} (${label(step.event)}): the client received events the step does not cause`);
      assert.deepEqual(comparable(consumed.at(-1)!.snapshot), comparable(model[i]!), `step ${i} (${label(step.event)}): the real client is where the model is`);
      if (delay) {
        const fired = consumed.at(-1)!;
        const expected = delayOf(delay, before);
        assert.ok(fired.elapsed !== undefined && fired.control, `${type} fired but was never armed`);
        assert.equal(fired.control.delay, expected, `the ${delay} timer's control has the model's delay`);
        const bracket = await bracketError(fired.control, fired.seq!);
        lateness.push(fired.elapsed - expected);
        assert.ok(fired.elapsed >= expected - 2, `step ${i}: ${delay} fired ${fired.elapsed.toFixed(1)} ms after it was armed, before its ${expected} ms`);
        assert.equal(bracket, null, `step ${i}: ${delay} (${expected} ms)`);
      }
    }
    const final = model.at(-1)!;
    if (final.status === 'done') {
      const output = await endedWithin(run.client, guard(3000));
      assert.ok(output, 'the client ended');
      assert.deepEqual(comparable({ ...final, output } as ClientSnapshot), comparable(final), "R22: the client's output is the model's");
      // R3: every TCP connection of every attempt is released.
      await run.server.waitFor(() => run.server.openSockets === 0, guard(3000), 'every TCP connection closed');
      // R16: the close frames the client sent — its deliberate close, or its echo of the server's 1001.
      for (const [k, code] of run.expectedFromClient) {
        assert.equal(run.server.connections[k]?.closeFrames[0]?.code, code, `connection #${k + 1}: the client's close frame`);
      }
    }
  } finally {
    await run.dispose();
  }
}

// ---------------------------------------------------------------------------
// Selection

interface Candidate {
  kind: 'shortest' | 'simple';
  /** The client asked for a session (`session: true`): the paths of the session model. */
  session: boolean;
  path: ClientPath;
}
const allPaths: Candidate[] = (['plain', 'session'] as const).flatMap((name) => [
  ...models[name].edgePaths.map((path) => ({ kind: 'shortest' as const, session: name === 'session', path })),
  ...models[name].simplePaths.map((path) => ({ kind: 'simple' as const, session: name === 'session', path })),
]);
const sessionOf = new WeakMap<ClientPath, boolean>(allPaths.map((c) => [c.path, c.session]));
const obstacles = allPaths.map(({ path }) => firstObstacle(path));
const runnable = allPaths.filter((_, i) => obstacles[i] === null);

const transitionsMemo = new WeakMap<ClientPath, Set<string>>();
function transitionsOf(path: ClientPath): Set<string> {
  const memo = transitionsMemo.get(path);
  if (memo) return memo;
  const keys = new Set<string>();
  transitionsMemo.set(path, keys);
  const model = replay(path, sessionOf.get(path)!);
  for (let i = 1; i < path.steps.length; i++) {
    for (const t of clientMachine.getTransitionData(model[i - 1]! as never, path.steps[i]!.event as never)) keys.add(transitionKey(t));
  }
  return keys;
}

function costOf(path: ClientPath): number {
  const waits: Record<DelayName, number> = { connectTimeout: CONNECT_TIMEOUT, stableAfter: STABLE_AFTER, backoff: backoff.maxDelay, resumeTimeout: RESUME_TIMEOUT };
  return 30 + path.steps.reduce((sum, s) => sum + (timeouts.has(s.event.type) ? waits[timeouts.get(s.event.type)!] : 5), 0);
}

const setCover = <T extends { path: ClientPath }>(candidates: T[]): T[] => greedyCover(candidates, (c) => transitionsOf(c.path), (c) => costOf(c.path));

const sample = setCover(runnable);
const selected = (FULL || GREP ? runnable : sample).filter(({ path }) => !GREP || pathTitle(0, path, label).includes(GREP));
let ran = 0;

describe(`client machine paths against a scripted server (${FULL ? 'full' : 'sampled'}: ${selected.length} of ${runnable.length} runnable paths)`, () => {
  test('paths were generated, and every step type has a server action', () => {
    assert.equal(models.plain.error, null);
    assert.equal(models.session.error, null);
    assert.ok(RESUME_TIMEOUT < STABLE_AFTER && new Set<number>([RESUME_TIMEOUT, CONNECT_TIMEOUT, STABLE_AFTER]).size === 3, 'the model offers no stableAfter while resuming; the delays are told apart');
    const types = new Set(allPaths.flatMap(({ path }) => path.steps.map((s): string => s.event.type)));
    assert.deepEqual(missing(types, new Set(Object.keys(SERVER_ACTIONS))), [], 'event types without a server action');
  });

  test('what cannot be produced is listed, and the runnable paths (and the sample) take every state and transition, sessions included', (t) => {
    const byReason = new Map<Reason, number>();
    for (const o of obstacles) if (o) byReason.set(o, (byReason.get(o) ?? 0) + 1);
    for (const name of ['plain', 'session'] as const) {
      const n = runnable.filter((c) => c.session === (name === 'session')).length;
      t.diagnostic(`${name === 'plain' ? 'without' : 'with'} sessions: ${models[name].edgePaths.length} shortest + ${models[name].simplePaths.length} simple paths, ${n} runnable`);
    }
    t.diagnostic(`paths: ${allPaths.length} generated, ${runnable.length} runnable, ${sample.length} in the sample (${sample.filter((c) => c.session).length} with sessions)`);
    for (const [reason, n] of byReason) t.diagnostic(`not run, ${n} paths: ${NOT_PRODUCIBLE[reason]}`);
    const all = allTransitionKeys(clientMachine);
    const taken = new Set(runnable.flatMap(({ path }) => [...transitionsOf(path)]));
    assert.deepEqual(missing(all, taken), [], 'transitions no runnable path takes');
    const sampled = new Set(sample.flatMap(({ path }) => [...transitionsOf(path)]));
    assert.deepEqual(missing(taken, sampled), [], 'the sample takes every transition');
    // A path's steps carry the model's snapshots: their state values are the path's own (the vertex includes the value).
    const nodes = allStateNodes(clientMachine);
    const states = (cs: Candidate[]) => {
      const byValue = new Map<string, ClientSnapshot>();
      for (const c of cs) for (const step of c.path.steps) byValue.set(JSON.stringify([step.state.status, step.state.value]), step.state);
      return new Set([...byValue.values()].flatMap((snap) => nodes.filter((n) => isActive(snap, n)).map((n) => `#${n.id}`)));
    };
    const ids = allStateNodes(clientMachine).map((n) => `#${n.id}`);
    assert.deepEqual(missing(ids, states(runnable)), [], 'states no runnable path reaches');
    assert.deepEqual(missing(ids, states(sample)), [], 'states the sample does not reach');
  });

  describe('paths', { concurrency: CONCURRENCY }, () => {
    selected.forEach(({ kind, session, path }, i) => {
      test(`${session ? 'session ' : ''}${kind} ${pathTitle(i, path, label)}`, { timeout: guard(30_000) }, async () => {
        await runPath(path, session);
        ran++;
      });
    });
  });

  test('every selected path ran, and the timers kept time', (t) => {
    const sorted = [...lateness].sort((a, b) => a - b);
    if (sorted.length > 0) {
      const q = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!.toFixed(1);
      t.diagnostic(`timers fired: ${sorted.length}; lateness ms min ${q(0)}, median ${q(0.5)}, p95 ${q(0.95)}, max ${q(1)} (not checked: load); each fired between two control timers of its delay, armed before and after it`);
    }
    assert.equal(ran, selected.length);
  });
});
