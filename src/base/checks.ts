/**
 * Option checks shared by the server, the client and the adapters: a bad value
 * is a RangeError that names the option and the value, never a silent default.
 */

/** A positive integer option (timer-safe: at most 2^31-1), or its default; a RangeError naming it otherwise. */
export function positiveInt(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  // Above 2^31-1 Node runs timers after 1 ms (and no sane limit is that big).
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0 || value > 2_147_483_647) {
    throw new RangeError(`ws-supervisor: option ${name} must be a positive integer no larger than 2147483647, got ${String(value)}`);
  }
  return value;
}
