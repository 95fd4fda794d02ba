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

/** A value as an error message shows it: strings quoted, the kind of anything that has no short form. */
export function shown(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'function') return 'a function';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object' && value !== null) return 'an object';
  return String(value);
}

/** An object of options (not null, not an array). */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** An object option (timing, sendQueue, backoff, …): absent, or a plain object; a RangeError naming it otherwise. */
export function optionalObject(name: string, value: unknown, who = 'ws-supervisor'): void {
  if (value !== undefined && !isPlainObject(value)) throw new RangeError(`${who}: option ${name} must be an object, got ${shown(value)}`);
}

/** A list of subprotocol names (non-empty strings): a single string, iterated, would offer each of its characters. */
export function isProtocolList(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((p) => typeof p === 'string' && p !== '');
}

/** An XState inspector: a function, or an observer with `next`. */
export function isInspector(value: unknown): boolean {
  return typeof value === 'function' || (typeof value === 'object' && value !== null && typeof (value as { next?: unknown }).next === 'function');
}
