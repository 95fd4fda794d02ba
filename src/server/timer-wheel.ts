/**
 * One timer wheel for every machine run of the process (src/server/runner.ts):
 * the connections' named delays (ping interval, pong timeout, write and close
 * timeouts: R4, R10, R16) wait here instead of in a Node `Timeout` each.
 *
 * Why: a `Timeout` is ~120 bytes with its argument array and start time, per
 * idle connection, and the heartbeat made one per ping (the pong timeout is
 * cancelled by every pong). Here an armed delay is a slot in an array, and
 * one Node timer serves them all (docs/performance.md, "Fourth pass").
 *
 * Precision: time is cut into ticks of WHEEL_TICK_MS. A delay of `ms` armed
 * at `t` (performance.now()) fires at the first tick boundary at or after
 * `t + ms`: never early, and at most WHEEL_TICK_MS late plus however late
 * Node runs the wheel's one timer (about 1 ms on an idle loop).
 *
 * Order: delays fire in the order of their tick, and within a tick in the
 * order they were armed (a re-armed delay goes to the end, as a new one
 * would). So of two delays of one length, the one armed first fires first,
 * as with Node's per-length timer lists; across lengths the order is by due
 * time, however late the loop runs them.
 *
 * The wheel's Node timer is armed only while some delay is (it then holds the
 * process open, as a `Timeout` per delay did); with none armed there is no
 * timer at all. A cancelled delay leaves a hole (null) in its slot, so the
 * wheel never keeps a stopped run (and its connection) reachable.
 */

/** The wheel's granularity, ms: how late at most (beyond the loop's own lateness) a delay fires. */
export const WHEEL_TICK_MS = 8;
/**
 * Slots in the process's wheel: one turn is 4096 × WHEEL_TICK_MS (32.8 s,
 * above the default ping interval); a longer delay waits its turn in its slot.
 */
const SLOTS = 4096;
/** `due` of a timer that is not armed. */
const IDLE = -1;

/**
 * Something that fires after a delay: what the wheel schedules. Subclass it
 * (the runner's delays are, src/server/runner.ts); `due` and `pos` are the
 * wheel's.
 */
export abstract class WheelTimer {
  /** @internal The tick it fires at; IDLE when not armed. */
  due = IDLE;
  /** @internal Its index in its slot's array while armed. */
  pos = 0;

  /** The delay has passed. Called once per arming, from the wheel's timer. */
  abstract fire(): void;

  get armed(): boolean {
    return this.due !== IDLE;
  }
}

/** Where timers wait: the process's wheel, or a test's simulated clock (src/server/runner.ts). */
export interface TimerSource {
  /** Arms `timer` to fire after `ms`; if it is armed already, this re-arms it (as if cancelled first). */
  schedule(timer: WheelTimer, ms: number): void;
  /** Disarms `timer` (no-op when it is not armed). */
  cancel(timer: WheelTimer): void;
}

export class TimerWheel implements TimerSource {
  private readonly slots: Array<Array<WheelTimer | null>>;
  private readonly mask: number;
  /** Every tick up to this one has been processed. */
  private cursor = tickOf(performance.now());
  /** Delays armed now. */
  private count = 0;
  /** The wheel's one Node timer, and the tick it is set for. */
  private timer: NodeJS.Timeout | null = null;
  private timerTick = Infinity;
  /** Scratch list of the timers one tick fires (reused: no allocation per tick). */
  private firing: WheelTimer[] = [];
  private readonly onTimer = (): void => this.advance();

  /** `slots`: a power of two (tests use small wheels to see delays longer than one turn). */
  constructor(slots = SLOTS) {
    if (!Number.isInteger(slots) || slots < 2 || (slots & (slots - 1)) !== 0) throw new RangeError(`TimerWheel: slots must be a power of two, got ${slots}`);
    this.slots = Array.from({ length: slots }, () => []);
    this.mask = slots - 1;
  }

  /** Delays armed now. */
  get size(): number {
    return this.count;
  }

  schedule(timer: WheelTimer, ms: number): void {
    const now = performance.now();
    if (timer.due !== IDLE) this.unlink(timer);
    else if (this.count++ === 0) this.cursor = Math.max(this.cursor, tickOf(now)); // nothing was armed: the ticks before now are done
    // The first boundary at or after now + ms, and never a tick already processed (or being processed).
    const due = Math.max(Math.ceil((now + ms) / WHEEL_TICK_MS), this.cursor + 1);
    const slot = this.slots[due & this.mask]!;
    timer.due = due;
    timer.pos = slot.length;
    slot.push(timer);
    if (due < this.timerTick) this.arm(due);
  }

  cancel(timer: WheelTimer): void {
    if (timer.due === IDLE) return;
    this.unlink(timer);
    timer.due = IDLE;
    if (--this.count === 0) this.disarm();
  }

  /** Leaves a hole: the order of the others in the slot is kept. */
  private unlink(timer: WheelTimer): void {
    this.slots[timer.due & this.mask]![timer.pos] = null;
  }

  private arm(tick: number): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timerTick = tick;
    // Node may run a timer up to 1 ms before performance.now() says it is due: advance() checks.
    this.timer = setTimeout(this.onTimer, Math.max(1, Math.ceil(tick * WHEEL_TICK_MS - performance.now())));
  }

  private disarm(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.timerTick = Infinity;
  }

  /** The Node timer fired: every tick whose boundary has passed, in order. */
  private advance(): void {
    this.timer = null;
    // While the ticks run, what they arm does not set the timer (an earlier tick may still hold timers): set once, after.
    this.timerTick = -Infinity;
    const last = tickOf(performance.now());
    try {
      while (this.cursor < last && this.count > 0) this.process(++this.cursor);
    } finally {
      this.timerTick = Infinity;
      if (this.count === 0) this.cursor = Math.max(this.cursor, last);
      else this.arm(this.nextTick());
    }
  }

  /** Fires the timers due at `tick`; keeps, in order, those of a later turn of the wheel. */
  private process(tick: number): void {
    const slot = this.slots[tick & this.mask]!;
    if (slot.length === 0) return;
    const firing = this.firing;
    let kept = 0;
    for (let i = 0; i < slot.length; i++) {
      const t = slot[i]!;
      if (t === null) continue;
      if (t.due === tick) firing.push(t);
      else {
        t.pos = kept;
        slot[kept++] = t;
      }
    }
    slot.length = kept;
    for (let i = 0; i < firing.length; i++) {
      const t = firing[i]!;
      firing[i] = undefined as unknown as WheelTimer;
      // An earlier one of this tick may have cancelled or re-armed it.
      if (t.due !== tick) continue;
      t.due = IDLE;
      this.count--;
      try {
        t.fire();
      } catch (err) {
        // One timer's bug must not stop the others (nor the wheel): it surfaces as an uncaught exception, as from its own Timeout.
        process.nextTick(rethrow, err);
      }
    }
    firing.length = 0;
  }

  /**
   * The first tick after the cursor whose slot holds an armed timer (due
   * then, or on a later turn of the wheel: then that tick fires nothing and
   * the search goes on from there).
   */
  private nextTick(): number {
    const n = this.slots.length;
    for (let tick = this.cursor + 1; tick <= this.cursor + n; tick++) {
      const slot = this.slots[tick & this.mask]!;
      for (let i = 0; i < slot.length; i++) if (slot[i] !== null) return tick;
    }
    return this.cursor + n; // not reached while count > 0
  }
}

function tickOf(ms: number): number {
  return Math.floor(ms / WHEEL_TICK_MS);
}

function rethrow(err: unknown): never {
  throw err;
}

/** The process's wheel: every connection of every supervisor shares it. */
export const timerWheel = new TimerWheel();
