/**
 * Control timers for checking a real machine's timers under any load: in the
 * synchronous step in which the machine arms a timer of (what should be)
 * `delay` ms, the test arms two of its own, of `delay − BRACKET_MS` and
 * `delay + BRACKET_MS`. All three are Node timers armed at the same loop
 * time, and Node runs expired timers in order of expiry, so a machine timer
 * with the right delay fires after the first control and before the second
 * — however late the loaded machine runs them all. (The bracket widens by
 * the duration of the step that armed the timer: microseconds, milliseconds
 * when the process is preempted in it.) Wall-clock bounds cannot
 * tell a wrong delay from a busy machine (measured here, load average 15 on 2
 * cores: timers 450 ms late, and 20 ms between two timers of one expiry, the
 * process preempted between them); the order can.
 */

/** Half the width of the bracket: far below the gaps between the machines' delays (≥ 25 ms). */
export const BRACKET_MS = 10;

let sequence = 0;
/** A global order of events: control timers and the machine's timer firings. */
export function nextSequence(): number {
  return ++sequence;
}

export interface ControlFiring {
  delay: number;
  /** Order of firing (nextSequence), null until it fired. */
  seq: number | null;
  timer: ReturnType<typeof setTimeout>;
}

export interface Control {
  /** performance.now() when the machine received the event that armed its timer. */
  armedAt: number;
  delay: number;
  early: ControlFiring;
  late: ControlFiring;
}

function control(delay: number, after: number): ControlFiring {
  const c: ControlFiring = { delay, seq: null, timer: setTimeout(() => (c.seq = nextSequence()), Math.max(0, after)) };
  return c;
}

export class ControlTimers {
  private readonly armed = new Map<string, Control>();

  /**
   * The machine (re)armed the timer `key`, which should be of `delay` ms, in
   * the step of the event it received at `armedAt` (performance.now()); this
   * is called at the end of that step. Node stamps a timer with the time it is
   * armed, somewhere in that step, and a loaded process may be preempted in
   * it: the early control counts from the start of the step, the late one from
   * its end, so both bracket a correct timer whatever the preemption.
   */
  arm(key: string, delay: number, armedAt: number): void {
    this.cancel(this.armed.get(key));
    const stepTook = performance.now() - armedAt;
    this.armed.set(key, {
      armedAt,
      delay,
      early: control(delay - BRACKET_MS, Math.floor(delay - BRACKET_MS - stepTook)),
      late: control(delay + BRACKET_MS, Math.ceil(delay + BRACKET_MS)),
    });
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
  }

  private cancel(c: Control | undefined): void {
    if (!c) return;
    clearTimeout(c.early.timer);
    clearTimeout(c.late.timer);
  }
}

/**
 * Why the machine's timer, fired as event number `seq`, was not of the
 * control's delay — or null when it fired between the two controls. Waits
 * for the later control to fire.
 */
export async function bracketError(c: Control, seq: number, timeoutMs = 5000): Promise<string | null> {
  const deadline = performance.now() + timeoutMs;
  while (c.late.seq === null) {
    if (performance.now() > deadline) return `the ${c.late.delay} ms control timer did not fire within ${timeoutMs} ms`;
    await new Promise((r) => setTimeout(r, 2));
  }
  if (c.early.seq === null || c.early.seq > seq) return `fired before a ${c.early.delay} ms timer armed with it: its delay is under ${c.delay} − ${BRACKET_MS} ms`;
  if (c.late.seq < seq) return `fired after a ${c.late.delay} ms timer armed with it: its delay is over ${c.delay} + ${BRACKET_MS} ms`;
  return null;
}
