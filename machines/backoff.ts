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
  // Computed in the exponent's log space would lose nothing here; just stop growing once capped.
  let ceiling = options.initialDelay;
  for (let i = 0; i < attempt && ceiling < options.maxDelay; i++) ceiling *= options.multiplier;
  return Math.min(options.maxDelay, ceiling);
}

/** Full jitter: uniform in [0, ceiling). `random` is in [0, 1). */
export function backoffDelay(
  attempt: number,
  options: Pick<BackoffOptions, 'initialDelay' | 'maxDelay' | 'multiplier'>,
  random: number,
): number {
  const r = Math.min(Math.max(random, 0), 1);
  return Math.floor(r * backoffCeiling(attempt, options));
}
