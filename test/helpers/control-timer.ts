/**
 * Control timers for checking a real machine's timers under any load.
 *
 * For each timer the machine may arm, the test arms a control timer of the
 * delay it should have when the machine receives an event (before the step),
 * and, if the step did arm it, a second one of the same delay when the step
 * has ended. Node keeps timers of one duration in one list, in the order they
 * were armed, and runs them in that order: a machine timer of the right delay
 * fires after the first control and before the second, however late a loaded
 * machine runs them. Wall-clock bounds cannot tell a wrong delay from a busy
 * machine (measured here, load average 15 on 2 cores: timers 1.3 s late, and
 * 20 ms between two timers of one expiry when the process was preempted
 * between them); the order can. A machine timer of another delay lives in
 * another list: it fires out of the bracket (caught) unless the loop was
 * starved past both, when Node may run whole lists out of order — then the
 * check passes without proving anything, and the lower bound (no timer fires
 * before its delay) still holds.
 *
 * A server's machine timers wait on the timer wheel (src/server/timer-wheel.ts),
 * not on Node's lists; its controls are then armed on the same wheel
 * (`wheelControls`). The wheel fires by due tick, and within a tick in arming
 * order, so the same bracket holds for a timer of the right delay whatever the
 * load; one of another delay fires out of it as soon as the two differ by
 * more than a tick (WHEEL_TICK_MS) plus the step's own duration, and the wheel
 * never runs two ticks out of order, so a starved loop proves as much as an
 * idle one.
 */

import type { AnyMachineSnapshot, AnyStateNode, EventObject, InspectionEvent } from 'xstate';
import { timerWheel, WheelTimer } from '../../src/server/timer-wheel.ts';
import { isActive } from './model-coverage.ts';

let sequence = 0;
/** A global order of events: control timers and the machine's timer firings. */
export function nextSequence(): number {
  return ++sequence;
}

export interface ControlFiring {
  /** Order of firing (nextSequence), null until it fired. */
  seq: number | null;
  timer: unknown;
}

/** Where the control timers run: where the machine's own timers do. */
export interface ControlClock {
  set(fn: () => void, ms: number): unknown;
  clear(timer: unknown): void;
}

/** Node's timers (an XState actor's delays: the client). */
export const nodeControls: ControlClock = {
  set: (fn, ms) => setTimeout(fn, ms),
  clear: (timer) => clearTimeout(timer as ReturnType<typeof setTimeout>),
};

class WheelControl extends WheelTimer {
  constructor(private readonly fn: () => void) {
    super();
  }
  fire(): void {
    this.fn();
  }
}

/** The server's timer wheel (src/server/timer-wheel.ts): the server's machine timers wait there. */
export const wheelControls: ControlClock = {
  set: (fn, ms) => {
    const timer = new WheelControl(fn);
    timerWheel.schedule(timer, ms);
    return timer;
  },
  clear: (timer) => timerWheel.cancel(timer as WheelControl),
};

export interface Control {
  /** performance.now() when the machine received the event that armed its timer. */
  armedAt: number;
  delay: number;
  early: ControlFiring;
  late: ControlFiring;
}

function control(clock: ControlClock, delay: number): ControlFiring {
  const c: ControlFiring = { seq: null, timer: null };
  c.timer = clock.set(() => (c.seq = nextSequence()), delay);
  return c;
}

/** The early controls of one step, armed when the machine received its event. */
export type PendingControls = Map<string, { delay: number; early: ControlFiring }>;

export class ControlTimers {
  private readonly armed = new Map<string, Control>();
  /** Steps begun and not ended: a step's event may arrive before the previous step's snapshot (an event raised within it). */
  private readonly pending = new Set<PendingControls>();

  constructor(private readonly clock: ControlClock = nodeControls) {}

  /** The machine received an event: arm an early control for each timer it might arm in this step. */
  begin(delays: ReadonlyMap<string, number>): PendingControls {
    const p: PendingControls = new Map();
    for (const [key, delay] of delays) p.set(key, { delay, early: control(this.clock, delay) });
    this.pending.add(p);
    return p;
  }

  /** The step begun with `step` ended having (re)armed the timers `keys`, at `armedAt` (when the machine received the event). */
  end(step: PendingControls, keys: readonly string[], armedAt: number): void {
    for (const key of keys) {
      const p = step.get(key);
      if (!p) continue;
      step.delete(key);
      this.cancel(this.armed.get(key));
      this.armed.set(key, { armedAt, delay: p.delay, early: p.early, late: control(this.clock, p.delay) });
    }
    this.drop(step);
  }

  /** The machine's timer `key` fired: its controls (they keep running until they fire). */
  take(key: string): Control | undefined {
    const c = this.armed.get(key);
    this.armed.delete(key);
    return c;
  }

  clear(): void {
    for (const c of this.armed.values()) this.cancel(c);
    this.armed.clear();
    for (const p of [...this.pending]) this.drop(p);
  }

  private drop(step: PendingControls): void {
    for (const p of step.values()) this.clock.clear(p.early.timer);
    this.pending.delete(step);
  }

  private cancel(c: Control | undefined): void {
    if (!c) return;
    this.clock.clear(c.early.timer);
    this.clock.clear(c.late.timer);
  }
}

/**
 * Why the machine's timer, fired as event number `seq`, was not of the
 * controls' delay — or null when it fired between them. Waits for the later
 * control to fire.
 */
export async function bracketError(c: Control, seq: number, timeoutMs = 10_000): Promise<string | null> {
  const deadline = performance.now() + timeoutMs;
  while (c.late.seq === null) {
    if (performance.now() > deadline) return `the ${c.delay} ms control timer did not fire within ${timeoutMs} ms`;
    await new Promise((r) => setTimeout(r, 2));
  }
  if (c.early.seq === null || c.early.seq > seq) return `fired before a ${c.delay} ms timer armed before it: its delay is under ${c.delay} ms`;
  if (c.late.seq < seq) return `fired after a ${c.delay} ms timer armed after it: its delay is over ${c.delay} ms`;
  return null;
}

// ---------------------------------------------------------------------------
// The record of a real machine's steps, for the conformance runners

/** One step the real machine took: the event it received, the snapshot after it, when. */
export interface StepEntry<S> {
  event: EventObject;
  snapshot: S;
  /** performance.now() when the machine received the event (before the step armed or fired anything). */
  at: number;
  /** For a timer's event: ms since it was armed. */
  elapsed?: number;
  /** For a timer's event: the control timers armed with it, and its place in the order of firings. */
  control?: Control;
  seq?: number;
}

/**
 * The bookkeeping both conformance runners share: fed the machine's own
 * inspection events, it records each step (StepEntry), notes when each
 * timer is armed (its state node entered, or re-entered when `rearmed` says
 * so) and arms the control timers around it (ControlTimers).
 */
export class StepRecord<S extends AnyMachineSnapshot> {
  readonly entries: Array<StepEntry<S>> = [];
  /** Per delayed event type: when its timer was last armed. */
  readonly armedAt = new Map<string, number>();
  readonly controls: ControlTimers;
  /** Entries before this one have been checked by a step. */
  cursor = 0;
  /**
   * Events received whose step has not ended yet, in order: when the machine
   * received each, its place in the order of firings, its early controls.
   * Usually one; more when a step raises an event that the machine receives
   * before it reports the step's snapshot.
   */
  private readonly received: Array<{ event: unknown; at: number; seq: number; controls: PendingControls }> = [];

  constructor(
    /** Each delayed event type's source state node. */
    private readonly timerNodes: ReadonlyMap<string, AnyStateNode>,
    /** The delay each timer should have if the next step arms it. */
    private readonly expectedDelays: () => ReadonlyMap<string, number>,
    /** A timer re-armed without leaving its state node (e.g. the write deadline on progress). */
    private readonly rearmed: (event: EventObject, node: AnyStateNode) => boolean = () => false,
    /** Where the machine's timers run (the controls are armed there too). */
    clock: ControlClock = nodeControls,
  ) {
    this.controls = new ControlTimers(clock);
  }

  /** Feeds one inspection event of the machine; returns the recorded step and the snapshot before it, if it was one. */
  onInspect(e: InspectionEvent): { entry: StepEntry<S>; previous: S | undefined } | null {
    if (e.type === '@xstate.event') {
      const at = performance.now();
      const seq = nextSequence();
      this.received.push({ event: e.event, at, seq, controls: this.controls.begin(this.expectedDelays()) });
      return null;
    }
    if (e.type !== '@xstate.snapshot') return null;
    const index = this.received.findIndex((r) => r.event === e.event);
    const [received] = index >= 0 ? this.received.splice(index, 1) : [undefined];
    const at = received?.at ?? performance.now();
    const snapshot = e.snapshot as S;
    const previous = this.entries.at(-1)?.snapshot;
    const timer = this.timerNodes.has(e.event.type);
    const armed = timer ? this.armedAt.get(e.event.type) : undefined;
    const control = timer ? this.controls.take(e.event.type) : undefined;
    const entry: StepEntry<S> = { event: e.event, snapshot, at, ...(armed !== undefined ? { elapsed: at - armed } : {}), ...(control && received ? { control, seq: received.seq } : {}) };
    this.entries.push(entry);
    const armedNow: string[] = [];
    for (const [type, node] of this.timerNodes) {
      const now = snapshot.status === 'active' && isActive(snapshot, node);
      const was = previous !== undefined && previous.status === 'active' && isActive(previous, node);
      if (now && (!was || this.rearmed(e.event, node))) {
        this.armedAt.set(type, at);
        armedNow.push(type);
      }
    }
    if (received) this.controls.end(received.controls, armedNow, at);
    return { entry, previous };
  }

  /**
   * Waits until the machine has received an event of `type` (or `or`) at or
   * after the cursor; returns its index. Throws after `timeoutMs`, listing
   * what it received instead.
   */
  async reported(type: string, timeoutMs: number, or?: string): Promise<number> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const i = this.entries.findIndex((e, j) => j >= this.cursor && (e.event.type === type || e.event.type === or));
      if (i >= 0) return i;
      if (performance.now() > deadline) {
        const got = this.entries.slice(this.cursor).map((e) => `${e.event.type} (${(e.at - (this.entries[this.cursor - 1]?.at ?? e.at)).toFixed(0)} ms after the last step)`);
        throw new Error(`the machine did not receive ${type} within ${timeoutMs} ms (received since the last step: ${got.join(', ') || 'nothing'})`);
      }
      await new Promise((r) => setTimeout(r, 2));
    }
  }
}
