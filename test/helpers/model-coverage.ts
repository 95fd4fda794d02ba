/**
 * Coverage bookkeeping for model-based tests built on `xstate/graph`'s TestModel,
 * and `coverageSuite`, the path runner and coverage tests the machine tests share.
 *
 * TestModel (xstate 5.33) has two silent gaps, found while writing these tests: an event type with no executor and a
 * state with no matching check are skipped without error. These helpers let a
 * test close them: the set of transitions is computed from the machine
 * definition itself (walking `machine.root`), the transitions actually taken
 * by the system under test are recorded through xstate's `inspect` option, and
 * the two are compared by a stable, human-readable key.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  SimulatedClock,
  type AnyMachineSnapshot,
  type AnyStateMachine,
  type AnyStateNode,
  type AnyTransitionDefinition,
  type EventObject,
  type InspectionEvent,
  type Snapshot,
} from 'xstate';
import {
  createShortestPathsGen,
  createSimplePathsGen,
  type PathGenerator,
  type StatePath,
  type TestModel,
  type TestParam,
  type TestPath,
} from 'xstate/graph';

/**
 * xstate/graph's `deduplicatePaths` (what `getShortestPaths` and `getSimplePaths` apply), the same
 * paths in the same order: sorted by length, longest first (a stable sort), a path is dropped when
 * its event sequence (each event as JSON) is a prefix of one kept before it, or equal to it. The
 * library compares each path with every kept one (a `for…in` over each sequence); here the kept
 * sequences form a trie, so each path is checked in one walk. Measured on the client model with
 * sessions, 2,613 simple paths: 1.5 s in the library's, 0.26 s here (docs/testing.md, "Wall
 * time"). test/machines/gap-reader.machine.test.ts checks both give the same paths.
 */
export function dedupPaths<S extends Snapshot<unknown>, E extends EventObject>(paths: Array<StatePath<S, E>>): Array<StatePath<S, E>> {
  type Trie = Map<string, Trie>;
  const root: Trie = new Map();
  const kept: Array<StatePath<S, E>> = [];
  const bySize = paths.map((path) => ({ path, events: path.steps.map((s) => JSON.stringify(s.event)) }));
  bySize.sort((a, z) => z.path.steps.length - a.path.steps.length);
  for (const { path, events } of bySize) {
    let node: Trie | undefined = root;
    for (const e of events) {
      node = node.get(e);
      if (node === undefined) break;
    }
    // The library keeps the first path whatever it is (there is nothing to compare it with).
    if (node !== undefined && kept.length > 0) continue;
    let at = root;
    for (const e of events) {
      let next = at.get(e);
      if (next === undefined) at.set(e, (next = new Map()));
      at = next;
    }
    kept.push(path);
  }
  return kept;
}

/**
 * `vertex` remembered per snapshot object. A snapshot is immutable, so its vertex never changes;
 * xstate/graph's simple-path walk serializes the same adjacency-map snapshots again on every visit
 * (the connection model's `vertex` took 0.6 s of the 1.4 s its paths took to generate).
 */
export function perSnapshot<S extends object>(vertex: (s: S) => string): (s: S) => string {
  const known = new WeakMap<S, string>();
  return (s) => {
    let v = known.get(s);
    if (v === undefined) known.set(s, (v = vertex(s)));
    return v;
  };
}

type GetPathsOptions<S extends Snapshot<unknown>, E extends EventObject, I> = Parameters<TestModel<S, E, I>['getPaths']>[1];

function pathsDeduplicated<S extends Snapshot<unknown>, E extends EventObject, I>(
  model: TestModel<S, E, I>,
  generator: PathGenerator<S, E, I>,
  options: GetPathsOptions<S, E, I>,
): Array<TestPath<S, E>> {
  return model.getPaths((logic, o) => dedupPaths(generator(logic, o)), { ...options, allowDuplicatePaths: true });
}

/** `model.getShortestPaths(options)`, the same paths, deduplicated by `dedupPaths`. */
export function shortestPathsOf<S extends Snapshot<unknown>, E extends EventObject, I>(model: TestModel<S, E, I>, options?: GetPathsOptions<S, E, I>): Array<TestPath<S, E>> {
  return pathsDeduplicated(model, createShortestPathsGen<S, E, I>(), options);
}

/** `model.getSimplePaths(options)`, the same paths, deduplicated by `dedupPaths`. */
export function simplePathsOf<S extends Snapshot<unknown>, E extends EventObject, I>(model: TestModel<S, E, I>, options?: GetPathsOptions<S, E, I>): Array<TestPath<S, E>> {
  return pathsDeduplicated(model, createSimplePathsGen<S, E, I>(), options);
}

/** Every state node of `machine`, the root first, in document order. */
export function allStateNodes(machine: AnyStateMachine): AnyStateNode[] {
  const out: AnyStateNode[] = [];
  const visit = (node: AnyStateNode): void => {
    out.push(node);
    for (const child of Object.values(node.states)) visit(child);
  };
  visit(machine.root);
  return out;
}

function guardLabel(t: AnyTransitionDefinition): string | null {
  const g: unknown = t.guard;
  if (g === undefined) return null;
  if (typeof g === 'string') return g;
  if (typeof g === 'function') return g.name || 'inline guard';
  if (typeof g === 'object' && g !== null && 'type' in g) return String(g.type);
  return 'guard';
}

/**
 * A stable name for one transition, the same for the model machine and for a
 * `.provide()`d copy of it (which rebuilds the node tree, so object identity
 * cannot be used). Guarded alternatives of one event are told apart by index:
 *
 *   connection.open: close[0] if isSendableCode → connection.closing
 *   connection.open: close[1] otherwise → connection.closed
 */
export function transitionKey(t: AnyTransitionDefinition): string {
  const siblings = t.source.transitions.get(t.eventType) ?? [t];
  const targets = t.target?.map((n) => n.id).join(', ') ?? '(no target)';
  let event = t.eventType;
  if (siblings.length > 1) {
    const index = siblings.indexOf(t);
    const guard = guardLabel(t);
    event += `[${index}] ${guard === null ? 'otherwise' : `if ${guard}`}`;
  } else if (guardLabel(t) !== null) {
    event += ` if ${guardLabel(t)}`;
  }
  return `${t.source.id}: ${event} → ${targets}${t.reenter ? ' (reenter)' : ''}`;
}

/** Every transition of the machine (`on`, `after`, guarded alternatives), by key. */
export function allTransitionKeys(machine: AnyStateMachine): string[] {
  return allStateNodes(machine).flatMap((node) =>
    [...node.transitions.values()].flat().map((t) => transitionKey(t)),
  );
}

/** `xstate.after.<delay>.<stateId>` event types of the machine, mapped to their delay (a name or ms). */
export function delayedEventTypes(machine: AnyStateMachine): Map<string, string | number> {
  const out = new Map<string, string | number>();
  for (const node of allStateNodes(machine)) {
    for (const t of node.after) {
      if (typeof t.delay === 'function') throw new Error(`${t.eventType}: inline delay functions are not supported here`);
      out.set(t.eventType, t.delay);
    }
  }
  return out;
}

/** Whether `node` is active in `snapshot` (the root always is). */
export function isActive(snapshot: AnyMachineSnapshot, node: AnyStateNode): boolean {
  return snapshot._nodes.some((n) => n.id === node.id);
}

/**
 * A TestModel `stateMatcher` for check keys written as `#stateId`: a check runs
 * whenever that state node is active (so several run on a parallel state).
 */
export function stateIdMatcher(machine: AnyStateMachine) {
  return (snapshot: AnyMachineSnapshot, key: string): boolean =>
    isActive(snapshot, machine.getStateNodeById(key));
}

/** An `inspect` callback that adds the key of every transition the actor takes to `into`. */
export function recordTransitions(into: Set<string>): (e: InspectionEvent) => void {
  return (e) => {
    if (e.type === '@xstate.microstep') for (const t of e._transitions) into.add(transitionKey(t));
  };
}

/** `expected` minus `observed`, in the order of `expected`. */
export function missing(expected: Iterable<string>, observed: ReadonlySet<string>): string[] {
  return [...expected].filter((k) => !observed.has(k));
}

export interface PendingTimer {
  id: number;
  /** Simulated time at which it was armed. */
  start: number;
  /** Its duration, ms. */
  timeout: number;
}

/**
 * xstate's SimulatedClock, plus a table of the timers currently armed, so a
 * test can assert which timers a state holds (and that none leak), and fire
 * the timer behind a model's delayed event by advancing the clock to exactly
 * its deadline.
 */
export class TimerTableClock extends SimulatedClock {
  readonly #pending = new Map<number, PendingTimer>();

  override setTimeout(fn: (...args: any[]) => void, timeout: number): number {
    const start = this.now();
    const id: number = super.setTimeout(() => {
      this.#pending.delete(id);
      fn();
    }, timeout);
    this.#pending.set(id, { id, start, timeout });
    return id;
  }

  override clearTimeout(id: number): void {
    this.#pending.delete(id);
    super.clearTimeout(id);
  }

  /** Armed timers, earliest deadline first. */
  pending(): PendingTimer[] {
    return [...this.#pending.values()].sort((a, b) => a.start + a.timeout - (b.start + b.timeout));
  }

  /** Durations of the armed timers, ascending. */
  pendingDurations(): number[] {
    return this.pending()
      .map((t) => t.timeout)
      .sort((a, b) => a - b);
  }

  /**
   * The deadline of the one armed timer of `timeout` ms, provided it is the
   * next to fire. Throws when no such timer is armed, or another one is due no
   * later than it: a path that asks for that timeout next asks for an order of
   * timeouts this timing cannot produce, and firing some other timer first
   * would make the run diverge from the path silently.
   */
  nextDeadline(timeout: number): number {
    const [timer, ...more] = this.pending().filter((t) => t.timeout === timeout);
    const armed = JSON.stringify(this.pending());
    if (timer === undefined || more.length > 0) {
      throw new Error(`expected exactly one armed ${timeout} ms timer at t=${this.now()}, armed: ${armed}`);
    }
    const deadline = timer.start + timer.timeout;
    if (this.pending().some((t) => t !== timer && t.start + t.timeout <= deadline)) {
      throw new Error(`the ${timeout} ms timer cannot fire next at t=${this.now()}: another is due first; armed: ${armed}`);
    }
    return deadline;
  }

  /** Advances the clock by `ms`, which must not reach any armed timer's deadline. */
  advanceQuietly(ms: number): void {
    const [first] = this.pending();
    if (first !== undefined && first.start + first.timeout <= this.now() + ms) {
      throw new Error(`advancing ${ms} ms at t=${this.now()} would fire the ${first.timeout} ms timer armed at t=${first.start}`);
    }
    this.increment(ms);
  }

  /** Advances the clock to `nextDeadline(timeout)`, which fires that timer (and only it). */
  fireTimer(timeout: number): void {
    this.increment(this.nextDeadline(timeout) - this.now());
  }
}

/** A generated path's test title: its number and its events (without the initial `xstate.init`), each as `label` shows it. */
export function pathTitle<E extends EventObject>(i: number, path: { steps: ReadonlyArray<{ event: E }> }, label: (e: E) => string): string {
  const events = path.steps.map((s) => s.event).filter((e) => e.type !== 'xstate.init');
  return `#${i + 1}: ${events.map(label).join(' → ') || '(initial state)'}`;
}

/**
 * Paths walked per `test()` by `pathTests`. node:test costs ~1 ms of CPU per test in the file's process
 * and the runner's (an async-hook resource per test, its events serialized to the runner and formatted
 * by each reporter): 4,400 empty tests took 4.3 s of CPU under `node --test` with the runner's reporters
 * here, and the model files register ~11,400 (docs/testing.md, "The suite's CPU, 2026-12-06").
 */
export const PATHS_PER_TEST = 100;

/**
 * Registers one test per PATHS_PER_TEST of `paths` (in order), each walking its paths one after another,
 * as separate tests would (node:test runs a file's tests one at a time). A path that fails does not stop
 * the others: the test fails at its end naming every failed path (its title, as a test of its own would
 * be named) with its error.
 */
export function pathTests<P>(paths: readonly P[], title: (i: number, p: P) => string, walk: (p: P, i: number) => Promise<void>): void {
  for (let from = 0; from < paths.length; from += PATHS_PER_TEST) {
    const to = Math.min(paths.length, from + PATHS_PER_TEST);
    test(`paths #${from + 1}–#${to} of ${paths.length}`, async () => {
      const failed: string[] = [];
      for (let i = from; i < to; i++) {
        try {
          await walk(paths[i]!, i);
        } catch (err) {
          failed.push(`${title(i, paths[i]!)}\n${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
        }
      }
      if (failed.length > 0) assert.fail(`${failed.length} of ${to - from} paths failed:\n\n${failed.join('\n\n')}`);
    });
  }
}

/**
 * A sample of paths that still takes every transition any candidate takes:
 * greedy set cover, each time the candidate with the most uncovered keys per
 * unit of cost (run time).
 */
export function greedyCover<T>(candidates: readonly T[], keysOf: (c: T) => ReadonlySet<string>, costOf: (c: T) => number): T[] {
  const keys = candidates.map(keysOf);
  const uncovered = new Set(keys.flatMap((k) => [...k]));
  const chosen: T[] = [];
  while (uncovered.size > 0) {
    let best = -1;
    let bestScore = 0;
    candidates.forEach((c, i) => {
      const gain = [...keys[i]!].filter((k) => uncovered.has(k)).length;
      const score = gain / costOf(c);
      if (score > bestScore) [best, bestScore] = [i, score];
    });
    chosen.push(candidates[best]!);
    for (const k of keys[best]!) uncovered.delete(k);
  }
  return chosen;
}

/** The two hosts a machine test runs its paths on: an XState actor, and the server's MachineRunner (src/server/runner.ts). */
export type Host = 'actor' | 'runner';
const HOST_TITLES: Record<Host, string> = { actor: 'on an XState actor', runner: 'on the server MachineRunner' };

export interface CoverageSuiteOptions<R, X, S extends AnyMachineSnapshot, E extends EventObject> {
  machine: AnyStateMachine;
  /** The definition's transitions, pinned: a new, renamed or re-guarded transition must be seen in the test first. */
  transitions: readonly string[];
  /** The definition's state nodes (`#id`), pinned too, where the test lists them. */
  states?: readonly string[];
  /** One per generated event type, each driving a run as that event says. */
  executors: Record<string, (run: R, event: EventObject) => void>;
  /** One per state node (`#id`), run whenever that node is active, given what the rules say the run should be. */
  checks: Record<string, (run: R, x: X, model: S) => void>;
  /** The test's own statement of the rules for the run so far (not the machine's table). */
  rulesSay: (run: R) => X;
  /** Stops a run when its path has been walked, passed or failed. */
  stop: (run: R) => void;
  /** How a path's events read in its test title. */
  label: (e: EventObject) => string;
}

/**
 * What every model-based machine test does with the paths TestModel generates:
 * walk each on a fresh run on both hosts, with every executor and check bound
 * to that run, and afterwards show that TestModel's silent gaps stayed closed:
 * the pinned transitions all taken (recorded on the actor host through
 * `inspect`, as the runner computes the same transitions with `transition()`),
 * every generated event type executed, every state node checked.
 */
export function coverageSuite<R, X, S extends AnyMachineSnapshot, E extends EventObject>(o: CoverageSuiteOptions<R, X, S, E>) {
  const taken = new Set<string>();
  const generatedTypes = new Set<string>();
  const checkedStates = new Set<string>();

  const execute = async (path: TestPath<S, E>, run: R): Promise<void> => {
    const params: TestParam<S, E> = {
      events: Object.fromEntries(
        Object.entries(o.executors).map(([type, exec]) => [type, (step: { event: EventObject }) => exec(run, step.event)]),
      ) as unknown as TestParam<S, E>['events'], // keyed by the type strings TestModel generates
      states: Object.fromEntries(
        Object.entries(o.checks).map(([id, check]) => [
          id,
          (modelSnapshot: S) => {
            checkedStates.add(id);
            check(run, o.rulesSay(run), modelSnapshot);
          },
        ]),
      ),
    };
    for (const step of path.steps) generatedTypes.add(step.event.type);
    try {
      await path.test(params);
    } finally {
      o.stop(run);
    }
  };

  return {
    /** Where the actor host records the transitions it takes (`recordTransitions`). */
    taken,
    /** Walks one path on `run` (a fresh one per path), with every executor and check bound to it; stops it after. */
    execute,
    /**
     * Registers, for each host, one describe per group of paths, a test per PATHS_PER_TEST paths (`pathTests`), each
     * path on a fresh `newRun(host, recorder)` (the recorder is the set of taken transitions on the actor host,
     * undefined on the runner).
     */
    pathTests(groups: ReadonlyArray<readonly [title: string, paths: ReadonlyArray<TestPath<S, E>>]>, newRun: (host: Host, taken: Set<string> | undefined) => R): void {
      for (const host of ['actor', 'runner'] as const) {
        describe(HOST_TITLES[host], () => {
          for (const [title, paths] of groups) {
            describe(`${title} (${paths.length} paths)`, () => {
              pathTests(paths, (i, path) => pathTitle(i, path, o.label), (path) => execute(path, newRun(host, host === 'actor' ? taken : undefined)));
            });
          }
        });
      }
    },

    /** Registers the three coverage tests (to run after every path of this suite). */
    coverageTests(): void {
      test('the definition has exactly the pinned transitions, and every one was taken by an executed path', (t) => {
        const all = allTransitionKeys(o.machine);
        assert.deepEqual(all, o.transitions);
        const uncovered = missing(all, taken);
        t.diagnostic(`transitions taken: ${all.length - uncovered.length}/${all.length}`);
        assert.deepEqual(uncovered, [], 'transitions no executed path took');
        assert.deepEqual(missing(taken, new Set(all)), [], 'taken transitions unknown to the definition');
      });

      test('every generated event type has an executor, and every executor ran', (t) => {
        t.diagnostic(`event types generated: ${[...generatedTypes].join(', ')}`);
        assert.deepEqual(missing(generatedTypes, new Set(Object.keys(o.executors))), []);
        assert.deepEqual(missing(Object.keys(o.executors), generatedTypes), [], 'executors for events never generated');
      });

      test('every state node has a check, and every check ran', (t) => {
        const ids = allStateNodes(o.machine).map((n) => `#${n.id}`);
        if (o.states) assert.deepEqual(ids, o.states, 'the definition has exactly the pinned state nodes');
        t.diagnostic(`state nodes checked: ${ids.filter((id) => checkedStates.has(id)).length}/${ids.length}`);
        assert.deepEqual(missing(ids, new Set(Object.keys(o.checks))), [], 'state nodes without a check');
        assert.deepEqual(missing(Object.keys(o.checks), new Set(ids)), [], 'checks for no state node');
        assert.deepEqual(missing(ids, checkedStates), [], 'state nodes never reached and checked');
      });
    },
  };
}
