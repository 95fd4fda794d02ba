/**
 * Restart intensity, as an OTP supervisor counts it: children may be restarted
 * at most `maxRestarts` times within any `periodMs`. One crash more means the
 * fault is not transient (a crash loop, a poisonous input, a dead dependency),
 * so the supervisor gives up and hands the failure to whatever supervises it
 * (systemd, Kubernetes) rather than restarting forever.
 *
 * Pure: the clock is an argument, so it is tested without processes or timers.
 * src/cli/cluster.ts is the process glue.
 */

export interface RestartIntensityOptions {
  /** Restarts allowed within any `periodMs`; 0 = the first crash ends everything. */
  maxRestarts: number;
  /** Sliding window, ms. */
  periodMs: number;
}

export interface RestartDecision {
  /** true: restart the child; false: the limit is exceeded, shut everything down. */
  restart: boolean;
  /** Crashes within the window ending now, this one included. */
  count: number;
}

export const RESTART_DEFAULTS = {
  /**
   * 5 restarts within 60 s: rides out a crash in each of a few workers (one
   * bad input can crash several at once) while a crash loop (a worker boots in
   * ~1 s) is stopped within seconds. OTP's 1 in 5 s suits Erlang processes
   * that restart in microseconds, not Node processes.
   */
  maxRestarts: 5,
  periodSeconds: 60,
} as const;

export class RestartIntensity {
  /** Times (ms) of the crashes still inside the window, oldest first. */
  private readonly crashes: number[] = [];

  constructor(readonly options: RestartIntensityOptions) {
    const { maxRestarts, periodMs } = options;
    if (!Number.isInteger(maxRestarts) || maxRestarts < 0) throw new RangeError(`maxRestarts must be an integer ≥ 0, got ${maxRestarts}`);
    if (!Number.isFinite(periodMs) || periodMs <= 0) throw new RangeError(`periodMs must be > 0, got ${periodMs}`);
  }

  /** A child crashed at `now` (ms, non-decreasing): restart it, or give up? */
  crashed(now: number): RestartDecision {
    // A crash exactly periodMs ago has left the window.
    while (this.crashes.length > 0 && this.crashes[0]! <= now - this.options.periodMs) this.crashes.shift();
    this.crashes.push(now);
    const count = this.crashes.length;
    return { restart: count <= this.options.maxRestarts, count };
  }

  /** Crashes inside the window ending at `now`. */
  recent(now: number): number {
    return this.crashes.filter((t) => t > now - this.options.periodMs).length;
  }
}
