/**
 * A lean host for a machine whose actors live outside it: the server runs one
 * connection machine per socket through this instead of an XState actor.
 *
 * XState still decides every transition: each step is `transition(machine,
 * snapshot, event)` from `xstate`, and the resulting actions (spawn/stop the
 * reader and writer, send them commands, arm and cancel the named delays) are
 * executed here. What this saves is the per-connection actor: an actor tree
 * (machine + reader + writer) costs ~15 KiB and ~50 µs of CPU per heartbeat
 * (docs/BENCHMARKS.md, before/after); a runner is a snapshot pointer, two
 * actor hosts and at most a few timers.
 *
 * Snapshots are shared. While a connection's context is the supervisor's
 * (no close requested yet), its snapshot is one of a handful of interned
 * snapshots that every such connection points to, and each step from an
 * interned snapshot on a payload-free event (the machine's PAYLOAD_FREE_EVENTS
 * and its own delayed events) is computed once and remembered. The heartbeat
 * cycle therefore costs two map lookups per step. Steps on events with a
 * payload (a close request, the peer's close) are remembered by the event's
 * JSON, a bounded number per snapshot, so the common endings are shared too;
 * each run gets its own copy of the output (the closure).
 * test/server/runner.test.ts and the machine's model-based tests run through
 * this host to hold it to the actor's semantics.
 */
import {
  initialTransition,
  transition,
  type AnyStateMachine,
  type EventFromLogic,
  type EventObject,
  type InspectionEvent,
  type Observer,
  type SnapshotFrom,
  type Subscription,
} from 'xstate';

/** What the runner needs of an actor that lives outside the machine. */
export interface HostedActor<TCommand> {
  /** A command the machine sent it (`sendTo`). */
  command(command: TCommand): void;
  /** The machine stopped it (its invoking state was left, or the machine finished). */
  stop(): void;
}

/** Timers: real ones by default; a simulated clock in tests (xstate's `Clock` shape). */
export interface RunnerClock {
  setTimeout(fn: (...args: unknown[]) => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
}

/**
 * What every run of one machine with one input shares: create one per
 * supervisor (not per connection), so its runs share snapshots and steps.
 */
export interface RunnerConfig<TMachine extends AnyStateMachine> {
  /**
   * Its guards, actions and delays must be pure functions of context and
   * event (as `transition()` requires): steps are remembered and shared.
   */
  machine: TMachine;
  /** Input for the initial snapshot (the same object for every run). */
  input: unknown;
  /** Event types whose payload the machine never reads (see PAYLOAD_FREE_EVENTS). */
  payloadFree: ReadonlySet<string>;
  clock?: RunnerClock | undefined;
  /** An XState inspector; off by default (inspection costs per event). */
  inspect?: Observer<InspectionEvent> | ((event: InspectionEvent) => void) | undefined;
}

/** The per-run side: the object that owns the run (the server's Connection). Methods, not closures: nothing extra per run. */
export interface RunnerHost {
  /** Shown to inspectors and in logs, e.g. `connection:<id>`. Read only when someone looks. */
  readonly actorId: string;
  /** Starts the hosted actor the machine invokes as `id`; it reports to the machine through `report`. */
  spawn(id: string, report: (event: EventObject) => void): HostedActor<never>;
  /** The machine reached a final state: its output (this run's own copy), once. */
  done(output: unknown): void;
  /** An action threw (a bug in a hosted actor); the runner has stopped its actors. */
  failed(error: unknown): void;
}

type Step = readonly [next: object, actions: readonly Action[]];
interface Action {
  type: string;
  params?: unknown;
}

/** Per machine and input: the interned initial step, interned snapshots and remembered steps. */
interface Shared {
  initial: Step;
  /** context object → `${status}|${JSON value}` → the one snapshot with that context and value. */
  interned: WeakMap<object, Map<string, object>>;
  /** snapshot → event type → step. */
  steps: WeakMap<object, Map<string, Step>>;
}
const sharedByMachine = new WeakMap<AnyStateMachine, WeakMap<object, Shared>>();

function sharedFor(machine: AnyStateMachine, input: unknown): Shared {
  let byInput = sharedByMachine.get(machine);
  if (!byInput) sharedByMachine.set(machine, (byInput = new WeakMap()));
  const key = input as object;
  let shared = byInput.get(key);
  if (!shared) {
    assertNoHistory(machine.root as unknown as StateNodeLike);
    const [snapshot, actions] = initialTransition(machine, input as never) as unknown as [object, Action[]];
    shared = { initial: [snapshot, actions], interned: new WeakMap(), steps: new WeakMap() };
    intern(shared, snapshot as Snap);
    byInput.set(key, shared);
  }
  return shared;
}

interface Snap {
  status: string;
  value: unknown;
  context: object;
  children: Record<string, unknown>;
  output?: unknown;
}

interface StateNodeLike {
  id: string;
  type: string;
  states: Record<string, StateNodeLike>;
}

/**
 * Interning treats two snapshots with the same context, value and children as
 * one; a history state would add state that this key does not see.
 */
function assertNoHistory(node: StateNodeLike): void {
  if (node.type === 'history') throw new Error(`MachineRunner: history states are not supported (${node.id})`);
  for (const child of Object.values(node.states)) assertNoHistory(child);
}

function intern(shared: Shared, snapshot: Snap): object {
  let byValue = shared.interned.get(snapshot.context);
  if (!byValue) shared.interned.set(snapshot.context, (byValue = new Map()));
  const key = `${snapshot.status}|${JSON.stringify(snapshot.value)}|${Object.keys(snapshot.children).join()}`;
  const existing = byValue.get(key);
  if (existing) return existing;
  byValue.set(key, snapshot);
  return snapshot;
}

/** A real timer's callback: its arguments are fixed when the `Timeout` is made (it is reused, see `arm`). */
function fireTimer(runner: MachineRunner<AnyStateMachine>, sendId: string): void {
  runner.fired(sendId);
}

/** Shared, never written: a run with no hosted actor points here. */
const EMPTY: unknown[] = [];

function stopAll(hosted: unknown[]): void {
  for (let i = 1; i < hosted.length; i += 2) (hosted[i] as HostedActor<unknown>).stop();
}

let sessions = 0;

/** Remembered steps per snapshot, at most (payload-free events always fit: there are few). */
export const STEPS_PER_SNAPSHOT = 64;
/** Events whose JSON is longer than this are not remembered. */
const MAX_PAYLOAD_KEY = 512;

/** The key of a step on an event with a payload: its JSON (it always starts with `{`, a type never does). */
function payloadKey(event: EventObject): string | null {
  const key = JSON.stringify(event);
  return key.length <= MAX_PAYLOAD_KEY ? key : null;
}

/**
 * One machine run. Looks like an actor to its users (`send`, `getSnapshot`,
 * `subscribe`, `id`/`sessionId` for inspectors), but holds only a snapshot
 * pointer, its hosted actors and its armed timers.
 */
export class MachineRunner<TMachine extends AnyStateMachine> {
  private readonly config: RunnerConfig<TMachine>;
  private readonly host: RunnerHost;
  private readonly shared: Shared;
  private snapshot: object;
  /**
   * Hosted actors, as pairs [id, actor, …]. Arrays here are replaced by
   * exact-size copies rather than grown (a push on a full array gives it room
   * for 16 more: ~200 bytes per idle connection for each of them).
   */
  private hosted: unknown[] = EMPTY;
  /**
   * Delayed events, as quadruples [sendId, timer handle, ms, event, …]:
   * rarely more than two (an exact-size array, replaced rather than grown).
   * `event` is null once the delay fired: the entry keeps its real `Timeout`,
   * and the next arm of that sendId with the same length re-arms it with
   * `refresh()` instead of making a new one (the heartbeat re-arms
   * `pingInterval` on every pong: no `Timeout`, argument array or entry array
   * per ping). A refreshed timer goes to the end of its length's list with a
   * new start, exactly as a new `setTimeout` would, so the delay's meaning
   * and its order against other timers of that length are unchanged
   * (test/conformance/server-paths.test.ts checks that order). A cancelled
   * delay's timer is cleared (a cleared `Timeout` cannot be re-armed) and its
   * slot kept with a null handle, for the next arm of that sendId.
   */
  private timers: unknown[] | null = null;
  /** Events sent while a step runs (an actor reporting synchronously): processed after it, in order. */
  private queue: EventObject[] | null = null;
  private busy = false;
  private started = false;
  private stopped = false;
  private observers: Array<Partial<Observer<SnapshotFrom<TMachine>>>> | null = null;
  private session: string | null = null;
  /** The one function the hosted actors report through (made on first spawn). */
  private reportTo: ((event: EventObject) => void) | null = null;

  constructor(config: RunnerConfig<TMachine>, host: RunnerHost) {
    this.config = config;
    this.host = host;
    this.shared = sharedFor(config.machine, config.input);
    this.snapshot = this.shared.initial[0];
  }

  /** For inspectors and logs. */
  get id(): string {
    return this.host.actorId;
  }

  /** For inspectors: unique per run, made when first asked for. */
  get sessionId(): string {
    return (this.session ??= `runner:${++sessions}`);
  }

  /** For inspectors: the machine, whose `config` they draw. */
  get logic(): TMachine {
    return this.config.machine;
  }

  /** Enters the initial state: spawns the invoked actors, arms its delays. */
  start(): this {
    if (this.started) return this;
    this.started = true;
    this.inspect({ type: '@xstate.actor' });
    this.busy = true;
    try {
      this.execute(this.shared.initial[1], { type: 'xstate.init' });
      this.notify({ type: 'xstate.init' });
      this.drain();
    } catch (err) {
      this.fail(err);
    } finally {
      this.busy = false;
    }
    return this;
  }

  send(event: EventFromLogic<TMachine>): void {
    this.receive(event);
  }

  /** `send` for events the machine's own actors and timers produce. */
  private receive(event: EventObject): void {
    if (this.stopped) return;
    if (this.busy || !this.started) {
      (this.queue ??= []).push(event);
      return;
    }
    this.busy = true;
    try {
      this.step(event);
      this.drain();
    } catch (err) {
      this.fail(err);
    } finally {
      this.busy = false;
    }
  }

  getSnapshot(): SnapshotFrom<TMachine> {
    return this.snapshot as SnapshotFrom<TMachine>;
  }

  subscribe(observer: Partial<Observer<SnapshotFrom<TMachine>>> | ((snapshot: SnapshotFrom<TMachine>) => void)): Subscription {
    const o = typeof observer === 'function' ? { next: observer } : observer;
    (this.observers ??= []).push(o);
    return {
      unsubscribe: () => {
        const i = this.observers?.indexOf(o) ?? -1;
        if (i >= 0) this.observers!.splice(i, 1);
      },
    };
  }

  /** Stops without finishing (like `actor.stop()`): hosted actors stopped, timers cleared, no output. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.clearTimers();
    stopAll(this.hosted);
    this.hosted = EMPTY;
  }

  private drain(): void {
    const queue = this.queue;
    if (queue === null) return;
    while (queue.length > 0 && !this.stopped) this.step(queue.shift()!);
    if (queue.length === 0 && this.queue === queue) this.queue = null; // an idle run holds no queue
  }

  private step(event: EventObject): void {
    const current = this.snapshot as Snap;
    if (current.status !== 'active') return;
    if (this.config.inspect) this.inspect({ type: '@xstate.event', event, sourceRef: undefined });
    const type = event.type;
    const free = this.config.payloadFree.has(type) || type.startsWith('xstate.after.');
    const key = free ? type : payloadKey(event);
    let byEvent = this.shared.steps.get(current);
    let step = key === null ? undefined : byEvent?.get(key);
    if (step === undefined) {
      const [next, actions] = transition(this.config.machine, current as never, event as never) as unknown as [Snap, Action[]];
      // Unchanged context: the next snapshot is the shared one for that state.
      step = [next.context === current.context ? intern(this.shared, next) : next, actions];
      // A step is a pure function of (snapshot, event): remember it for every run
      // that takes it from this snapshot — events with a payload by their JSON,
      // a bounded number per snapshot (a peer chooses its close reasons).
      if (key !== null && (free || (byEvent?.size ?? 0) < STEPS_PER_SNAPSHOT)) {
        if (!byEvent) this.shared.steps.set(current, (byEvent = new Map()));
        byEvent.set(key, step);
      }
    }
    this.snapshot = step[0];
    this.execute(step[1], event);
    if (this.config.inspect !== undefined || this.observers !== null) this.notify(event);
  }

  private execute(actions: readonly Action[], event: EventObject): void {
    for (let a = 0; a < actions.length; a++) {
      const action = actions[a]!;
      const params = action.params as Record<string, unknown>;
      switch (action.type) {
        case 'xstate.spawnChild': {
          const id = params.id as string;
          this.hosted = this.hosted.concat(id, this.host.spawn(id, (this.reportTo ??= (e) => this.receive(e))));
          break;
        }
        case 'xstate.stopChild': {
          const i = this.hosted.indexOf((params as { id: string }).id);
          if (i >= 0) {
            const actor = this.hosted[i + 1] as HostedActor<unknown>;
            this.hosted = this.hosted.filter((_, j) => j !== i && j !== i + 1);
            actor.stop();
          }
          break;
        }
        case 'xstate.sendTo': {
          const to = params.to as { id: string } | string;
          const i = this.hosted.indexOf(typeof to === 'string' ? to : to.id);
          if (i >= 0) (this.hosted[i + 1] as HostedActor<unknown>).command(params.event);
          break;
        }
        case 'xstate.raise': {
          const raised = params.event as EventObject;
          if (typeof params.delay === 'number') this.arm(params.id as string, raised, params.delay);
          else (this.queue ??= []).push(raised);
          break;
        }
        case 'xstate.cancel':
          this.cancel(params.sendId as string);
          break;
        default:
          throw new Error(`MachineRunner: action ${action.type} (on ${event.type}) is not supported by this host`);
      }
    }
    if ((this.snapshot as Snap).status !== 'active') this.finish();
  }

  private arm(sendId: string, event: EventObject, ms: number): void {
    const clock = this.config.clock;
    const timers = this.timers;
    if (timers !== null) {
      for (let i = 0; i < timers.length; i += 4) {
        if (timers[i] !== sendId) continue;
        const handle = timers[i + 1];
        if (clock === undefined && handle !== null && timers[i + 2] === ms) {
          // Armed or fired, the same length: refresh() re-arms it as a new setTimeout would.
          timers[i + 3] = event;
          (handle as NodeJS.Timeout).refresh();
        } else {
          if (handle !== null) this.clearHandle(handle);
          timers[i + 1] = this.newTimer(sendId, ms);
          timers[i + 2] = ms;
          timers[i + 3] = event;
        }
        return;
      }
    }
    const handle = this.newTimer(sendId, ms);
    this.timers = timers === null ? [sendId, handle, ms, event] : timers.concat(sendId, handle, ms, event);
  }

  private newTimer(sendId: string, ms: number): unknown {
    const clock = this.config.clock;
    return clock ? clock.setTimeout(() => this.fired(sendId), ms) : setTimeout(fireTimer, ms, this, sendId);
  }

  /** A delay's timer fired: its event, if it is still armed. */
  fired(sendId: string): void {
    const timers = this.timers;
    if (timers === null) return;
    for (let i = 0; i < timers.length; i += 4) {
      if (timers[i] !== sendId) continue;
      const event = timers[i + 3] as EventObject | null;
      if (event === null) return;
      timers[i + 3] = null;
      this.receive(event);
      return;
    }
  }

  private cancel(sendId: string): void {
    const timers = this.timers;
    if (timers === null) return;
    for (let i = 0; i < timers.length; i += 4) {
      if (timers[i] !== sendId) continue;
      if (timers[i + 3] === null) return; // fired or cancelled: nothing to cancel
      this.clearHandle(timers[i + 1]);
      // The slot stays (handle null): the heartbeat cancels `pongTimeout` on
      // every pong and arms it again on the next ping, so dropping the entry
      // would mean a new array per ping. The sendIds are the machine's few.
      timers[i + 1] = null;
      timers[i + 3] = null;
      return;
    }
  }

  private clearHandle(handle: unknown): void {
    const clock = this.config.clock;
    if (clock) clock.clearTimeout(handle);
    else clearTimeout(handle as NodeJS.Timeout);
  }

  /** The machine is done: no timer survives, every hosted actor is stopped (R3). */
  private finish(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.clearTimers();
    stopAll(this.hosted);
    this.hosted = EMPTY;
    // Snapshots, and so their output, are shared between runs: each host gets its own copy.
    const shared = (this.snapshot as Snap).output;
    const output = typeof shared === 'object' && shared !== null ? { ...shared } : shared;
    queueMicrotask(() => {
      for (const o of this.observers ?? []) o.complete?.();
      this.host.done(output);
    });
  }

  private fail(err: unknown): void {
    if (this.stopped) return;
    this.stopped = true;
    this.clearTimers();
    for (let i = 1; i < this.hosted.length; i += 2) {
      try {
        (this.hosted[i] as HostedActor<unknown>).stop();
      } catch {
        // already failing; the first error is the one reported
      }
    }
    this.hosted = EMPTY;
    for (const o of this.observers ?? []) o.error?.(err);
    this.host.failed(err);
  }

  private clearTimers(): void {
    const timers = this.timers;
    if (timers === null) return;
    for (let i = 1; i < timers.length; i += 4) if (timers[i] !== null) this.clearHandle(timers[i]);
    this.timers = null;
  }

  private notify(event: EventObject): void {
    const snapshot = this.snapshot as SnapshotFrom<TMachine>;
    if (this.config.inspect) this.inspect({ type: '@xstate.snapshot', event, snapshot });
    const observers = this.observers;
    if (observers === null) return;
    for (const o of observers.slice()) o.next?.(snapshot);
  }

  private inspect(fields: Record<string, unknown>): void {
    const inspect = this.config.inspect;
    if (!inspect) return;
    const event = { ...fields, actorRef: this, rootId: this.sessionId } as unknown as InspectionEvent;
    if (typeof inspect === 'function') inspect(event);
    else inspect.next?.(event);
  }
}
