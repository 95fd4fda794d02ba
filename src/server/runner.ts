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
 * actor hosts and at most a few timers. The timers wait on the process's one
 * timer wheel (src/server/timer-wheel.ts: never early, at most
 * WHEEL_TICK_MS late), not in a Node `Timeout` each.
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
import { timerWheel, TimerSource, WheelTimer } from './timer-wheel.ts';

/**
 * What a hosted actor reports to: its machine run (`report` is the run's own
 * method, so an actor holds the run itself, not a closure over it).
 */
export interface ActorParent<TEvent extends EventObject = EventObject> {
  report(event: TEvent): void;
}

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
  /** Starts the hosted actor the machine invokes as `id`; it reports to the machine through `parent.report`. */
  spawn(id: string, parent: ActorParent): HostedActor<never>;
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

/**
 * One named delay of a run (per sendId, made at its first arm and reused for
 * every later one: the heartbeat re-arms `pingInterval` and `pongTimeout` on
 * every ping, with no allocation). A run's delays form a short list (`next`):
 * rarely more than two.
 */
class Delay extends WheelTimer {
  /** The event it raises when it fires (the step's own, shared by every run). */
  event: EventObject | null = null;

  constructor(
    private readonly run: MachineRunner<AnyStateMachine>,
    readonly sendId: string,
    readonly next: Delay | null,
  ) {
    super();
  }

  fire(): void {
    this.run.fired(this);
  }
}

/** A test's simulated clock as a timer source (one per clock): each armed delay is one of its timeouts. */
class ClockTimers implements TimerSource {
  private readonly handles = new Map<WheelTimer, unknown>();

  constructor(private readonly clock: RunnerClock) {}

  schedule(timer: WheelTimer, ms: number): void {
    this.cancel(timer);
    timer.due = 0; // armed
    this.handles.set(
      timer,
      this.clock.setTimeout(() => {
        this.handles.delete(timer);
        timer.due = -1;
        timer.fire();
      }, ms),
    );
  }

  cancel(timer: WheelTimer): void {
    const handle = this.handles.get(timer);
    if (handle === undefined) return;
    this.handles.delete(timer);
    timer.due = -1;
    this.clock.clearTimeout(handle);
  }
}
const clockTimers = new WeakMap<RunnerClock, ClockTimers>();

function timerSource(clock: RunnerClock | undefined): TimerSource {
  if (clock === undefined) return timerWheel;
  let source = clockTimers.get(clock);
  if (source === undefined) clockTimers.set(clock, (source = new ClockTimers(clock)));
  return source;
}

/** A config with what its runs share (made at its first run). */
interface Bound {
  config: RunnerConfig<AnyStateMachine>;
  shared: Shared;
  timers: TimerSource;
}
const boundConfigs = new WeakMap<object, Bound>();

interface Extras<S> {
  /** Hosted actors beyond the first two, as pairs [id, actor, …]. */
  more: unknown[] | null;
  observers: Array<Partial<Observer<S>>> | null;
  session: string | null;
}

function newExtras<S>(): Extras<S> {
  return { more: null, observers: null, session: null };
}

const BUSY = 1;
const STARTED = 2;
const STOPPED = 4;

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
 * pointer, its hosted actors and its armed timers. Every field counts: there
 * is one run per connection (docs/performance.md, idle memory).
 */
export class MachineRunner<TMachine extends AnyStateMachine> implements ActorParent {
  /** Its config, what runs of its machine and input share, its timer source: one object per config. */
  private readonly bound: Bound;
  private readonly host: RunnerHost;
  private snapshot: object;
  /**
   * Hosted actors: the first two in fields (the connection machine has two,
   * its reader and writer), any more in `extras`. No array per run: an
   * array is ~80 bytes per idle connection.
   */
  private firstId: string | null = null;
  private first: HostedActor<unknown> | null = null;
  private secondId: string | null = null;
  private second: HostedActor<unknown> | null = null;

  /** Its delays, one per sendId armed so far (armed, fired or cancelled), as a list. */
  private delays: Delay | null = null;
  /** Events sent while a step runs (an actor reporting synchronously): processed after it, in order. */
  private queue: EventObject[] | null = null;
  /** BUSY | STARTED | STOPPED. */
  private flags = 0;
  /** What few runs need (more than two hosted actors, subscribers, an inspector's session id): made on first use. */
  private extras: Extras<SnapshotFrom<TMachine>> | null = null;

  constructor(config: RunnerConfig<TMachine>, host: RunnerHost) {
    let bound = boundConfigs.get(config);
    if (bound === undefined) boundConfigs.set(config, (bound = { config, shared: sharedFor(config.machine, config.input), timers: timerSource(config.clock) }));
    this.bound = bound;
    this.host = host;
    this.snapshot = bound.shared.initial[0];
  }

  private get config(): RunnerConfig<TMachine> {
    return this.bound.config as RunnerConfig<TMachine>;
  }

  private get shared(): Shared {
    return this.bound.shared;
  }

  /** For inspectors and logs. */
  get id(): string {
    return this.host.actorId;
  }

  /** For inspectors: unique per run, made when first asked for. */
  get sessionId(): string {
    return ((this.extras ??= newExtras()).session ??= `runner:${++sessions}`);
  }

  /** For inspectors: the machine, whose `config` they draw. */
  get logic(): TMachine {
    return this.config.machine;
  }

  /** Enters the initial state: spawns the invoked actors, arms its delays. */
  start(): this {
    if ((this.flags & STARTED) !== 0) return this;
    this.flags |= STARTED | BUSY;
    this.inspect({ type: '@xstate.actor' });
    try {
      this.execute(this.shared.initial[1], { type: 'xstate.init' });
      this.notify({ type: 'xstate.init' });
      this.drain();
    } catch (err) {
      this.fail(err);
    } finally {
      this.flags &= ~BUSY;
    }
    return this;
  }

  send(event: EventFromLogic<TMachine>): void {
    this.report(event);
  }

  /** `send` for the events the machine's own actors (ActorParent) and timers produce. */
  report(event: EventObject): void {
    const flags = this.flags;
    if ((flags & STOPPED) !== 0) return;
    if ((flags & (BUSY | STARTED)) !== STARTED) {
      (this.queue ??= []).push(event);
      return;
    }
    this.flags = flags | BUSY;
    try {
      this.step(event);
      this.drain();
    } catch (err) {
      this.fail(err);
    } finally {
      this.flags &= ~BUSY;
    }
  }

  getSnapshot(): SnapshotFrom<TMachine> {
    return this.snapshot as SnapshotFrom<TMachine>;
  }

  subscribe(observer: Partial<Observer<SnapshotFrom<TMachine>>> | ((snapshot: SnapshotFrom<TMachine>) => void)): Subscription {
    const o = typeof observer === 'function' ? { next: observer } : observer;
    const extras = (this.extras ??= newExtras());
    (extras.observers ??= []).push(o);
    return {
      unsubscribe: () => {
        const i = extras.observers?.indexOf(o) ?? -1;
        if (i >= 0) extras.observers!.splice(i, 1);
      },
    };
  }

  /** Stops without finishing (like `actor.stop()`): hosted actors stopped, timers cleared, no output. */
  stop(): void {
    if ((this.flags & STOPPED) !== 0) return;
    this.flags |= STOPPED;
    this.clearTimers();
    this.stopActors(false);
  }

  private get stopped(): boolean {
    return (this.flags & STOPPED) !== 0;
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
    if (this.config.inspect !== undefined || this.extras?.observers != null) this.notify(event);
  }

  private execute(actions: readonly Action[], event: EventObject): void {
    for (let a = 0; a < actions.length; a++) {
      const action = actions[a]!;
      const params = action.params as Record<string, unknown>;
      switch (action.type) {
        case 'xstate.spawnChild': {
          const id = params.id as string;
          this.addActor(id, this.host.spawn(id, this));
          break;
        }
        case 'xstate.stopChild':
          this.removeActor((params as { id: string }).id)?.stop();
          break;
        case 'xstate.sendTo': {
          const to = params.to as { id: string } | string;
          this.actor(typeof to === 'string' ? to : to.id)?.command(params.event);
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

  private addActor(id: string, actor: HostedActor<unknown>): void {
    if (this.first === null) {
      this.firstId = id;
      this.first = actor;
    } else if (this.second === null) {
      this.secondId = id;
      this.second = actor;
    } else {
      const extras = (this.extras ??= newExtras());
      extras.more = (extras.more ?? []).concat(id, actor);
    }
  }

  private actor(id: string): HostedActor<unknown> | undefined {
    if (this.firstId === id) return this.first ?? undefined;
    if (this.secondId === id) return this.second ?? undefined;
    const more = this.extras?.more ?? null;
    const i = more === null ? -1 : more.indexOf(id);
    return i >= 0 ? (more![i + 1] as HostedActor<unknown>) : undefined;
  }

  private removeActor(id: string): HostedActor<unknown> | undefined {
    let actor: HostedActor<unknown> | null = null;
    if (this.firstId === id) {
      actor = this.first;
      this.firstId = null;
      this.first = null;
    } else if (this.secondId === id) {
      actor = this.second;
      this.secondId = null;
      this.second = null;
    } else {
      const extras = this.extras;
      const i = extras?.more?.indexOf(id) ?? -1;
      if (i >= 0) {
        actor = extras!.more![i + 1] as HostedActor<unknown>;
        extras!.more = extras!.more!.filter((_, j) => j !== i && j !== i + 1);
      }
    }
    return actor ?? undefined;
  }

  /** Stops every hosted actor (`quietly`: a failing run, whose first error is the one reported). */
  private stopActors(quietly: boolean): void {
    const actors: Array<HostedActor<unknown> | null> = [this.first, this.second];
    const extras = this.extras;
    const more = extras?.more ?? null;
    if (more !== null) for (let i = 1; i < more.length; i += 2) actors.push(more[i] as HostedActor<unknown>);
    this.firstId = this.secondId = null;
    this.first = this.second = null;
    if (extras !== null) extras.more = null;
    for (const actor of actors) {
      if (actor === null) continue;
      if (!quietly) actor.stop();
      else {
        try {
          actor.stop();
        } catch {
          // already failing; the first error is the one reported
        }
      }
    }
  }

  /** The source of this run's timers: the process's wheel, or a test's clock. */
  private get timers(): TimerSource {
    return this.bound.timers;
  }

  /**
   * Arms (or re-arms) a delay. Its `Delay` is made at the first arm of that
   * sendId and reused: a re-arm puts it at the end of its new tick, as a new
   * timer would, so the delay's meaning and its order against other timers
   * are unchanged (test/conformance/server-paths.test.ts checks that order).
   */
  private arm(sendId: string, event: EventObject, ms: number): void {
    let delay = this.delays;
    while (delay !== null && delay.sendId !== sendId) delay = delay.next;
    if (delay === null) this.delays = delay = new Delay(this as MachineRunner<AnyStateMachine>, sendId, this.delays);
    delay.event = event;
    this.timers.schedule(delay, ms);
  }

  /** @internal A delay's time has come (from the wheel): its event. */
  fired(delay: Delay): void {
    const event = delay.event;
    if (event === null) return;
    delay.event = null;
    this.report(event);
  }

  private cancel(sendId: string): void {
    let delay = this.delays;
    while (delay !== null && delay.sendId !== sendId) delay = delay.next;
    if (delay === null || !delay.armed) return; // fired or cancelled: nothing to cancel
    // The Delay stays in the list: the heartbeat cancels `pongTimeout` on every pong and arms it again on the next ping.
    this.timers.cancel(delay);
    delay.event = null;
  }

  /** The machine is done: no timer survives, every hosted actor is stopped (R3). */
  private finish(): void {
    if (this.stopped) return;
    this.flags |= STOPPED;
    this.clearTimers();
    this.stopActors(false);
    // Snapshots, and so their output, are shared between runs: each host gets its own copy.
    const shared = (this.snapshot as Snap).output;
    const output = typeof shared === 'object' && shared !== null ? { ...shared } : shared;
    queueMicrotask(() => {
      for (const o of this.extras?.observers ?? []) o.complete?.();
      this.host.done(output);
    });
  }

  private fail(err: unknown): void {
    if (this.stopped) return;
    this.flags |= STOPPED;
    this.clearTimers();
    this.stopActors(true);
    for (const o of this.extras?.observers ?? []) o.error?.(err);
    this.host.failed(err);
  }

  /** R3: every armed delay is taken off the wheel (which then holds nothing of this run). */
  private clearTimers(): void {
    const timers = this.timers;
    for (let delay = this.delays; delay !== null; delay = delay.next) {
      timers.cancel(delay);
      delay.event = null;
    }
    this.delays = null;
  }

  private notify(event: EventObject): void {
    const snapshot = this.snapshot as SnapshotFrom<TMachine>;
    if (this.config.inspect) this.inspect({ type: '@xstate.snapshot', event, snapshot });
    const observers = this.extras?.observers ?? null;
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
