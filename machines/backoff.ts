/**
 * R22 reconnect delays: exponential backoff with full jitter
 * (delay = random × min(maxDelay, initialDelay × multiplier^attempt)), as in
 * AWS's "Exponential Backoff and Jitter": full jitter spreads a crowd of
 * clients that lost the same server, so they do not all come back at once.
 * Pure: the random number is an argument.
 */
export interface BackoffOptions {
  /** Upper bound of the first delay, ms. */
  initialDelay: number;
  /** Cap on the upper bound, ms. */
  maxDelay: number;
  /** Growth of the upper bound per failed attempt. */
  multiplier: number;
  /** Give up after this many consecutive failed attempts (1 = never retry); 0 = never give up. */
  maxAttempts: number;
  /** A connection that stayed open this long resets the attempt count, ms. */
  stableAfter: number;
}

/** The upper bound of the delay before attempt number `attempt` (0-based). */
export function backoffCeiling(attempt: number, options: Pick<BackoffOptions, 'initialDelay' | 'maxDelay' | 'multiplier'>): number {
  // Closed form (no loop: multiplier 1 and huge attempt numbers stay O(1)); capped.
  const ceiling = options.initialDelay * options.multiplier ** Math.max(0, attempt);
  return Number.isFinite(ceiling) ? Math.min(options.maxDelay, ceiling) : options.maxDelay;
}

/** The largest double below 1: random values are clamped to [0, 1). */
const BELOW_ONE = 1 - 2 ** -53;

/** Full jitter: uniform in [0, ceiling). `random` is in [0, 1). */
export function backoffDelay(
  attempt: number,
  options: Pick<BackoffOptions, 'initialDelay' | 'maxDelay' | 'multiplier'>,
  random: number,
): number {
  // A broken random source (NaN, ≥ 1, < 0) must not disable or exceed the backoff.
  const r = Number.isFinite(random) ? Math.min(Math.max(random, 0), BELOW_ONE) : 0;
  return Math.floor(r * backoffCeiling(attempt, options));
}
