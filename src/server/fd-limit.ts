/**
 * maxConnections against the process's open-file limit (R21).
 * Every WebSocket is a file descriptor, and so is every HTTP socket, the
 * listening socket, Redis's two connections, stdio, log files. A limit the
 * process cannot reach is a lie: at saturation accept() fails with EMFILE, so
 * clients get resets instead of the documented 503, and /healthz and /metrics
 * go dark with them. So the limit is checked at startup:
 *
 * - an explicit maxConnections that cannot fit is refused (RangeError naming
 *   the numbers; the CLI exits 2): the operator asked for something the
 *   process cannot deliver;
 * - the default that cannot fit (a shell's common `ulimit -n` of 1024 is
 *   below the default 10000) is lowered to what fits, with a warning naming
 *   the numbers: the server still starts, and answers 503 at its real limit.
 *
 * Per process: each --workers process has its own descriptors and its own limit.
 */
import { readFileSync } from 'node:fs';
import { positiveInt } from '../base/checks.ts';

/**
 * Descriptors a process needs besides its client sockets: stdio, the
 * listening socket, Redis (2), the inspector relay, log files, the event
 * loop's own (epoll, eventfd), a loader's pipes. A bare CLI server uses ~25.
 */
export const FD_RESERVE = 64;

/** The soft "Max open files" of /proc/<pid>/limits text; null when unlimited or absent. */
export function parseOpenFileLimit(limitsText: string): number | null {
  const m = /^Max open files\s+(\S+)\s+/m.exec(limitsText);
  if (!m || m[1] === 'unlimited') return null;
  const n = Number(m[1]);
  return Number.isSafeInteger(n) && n > 0 ? n : null;
}

/** This process's soft open-file limit (Linux: /proc/self/limits); null where it cannot be read (other systems) or is unlimited. */
export function readOpenFileLimit(): number | null {
  try {
    return parseOpenFileLimit(readFileSync('/proc/self/limits', 'utf8'));
  } catch {
    return null;
  }
}

/** The `openFileLimit` option: undefined reads the process's own, null checks nothing, a number is checked and used. */
export function resolveOpenFileLimit(value: number | null | undefined): number | null {
  if (value === null) return null;
  if (value === undefined) return readOpenFileLimit();
  return positiveInt('openFileLimit', value, 0);
}

export interface ConnectionFit {
  /** The WebSocket limit to use. */
  maxConnections: number;
  /** Sockets to allow beyond it for HTTP and upgrades in progress. */
  headroom: number;
  /** Set when the default was lowered to fit: the numbers, for a warning. */
  warning: string | null;
}

export interface FitOptions {
  /** The WebSocket limit asked for (or the default). */
  maxConnections: number;
  /** True when the user set it (then it is refused rather than lowered). */
  explicit: boolean;
  /** Sockets wanted beyond it for HTTP (the CLI's httpHeadroom; 0 for the bare supervisor). */
  headroom: number;
  /** The soft open-file limit; null: unknown, nothing is checked. */
  limit: number | null;
  /** How the limit is called in messages: 'maxConnections' or '--max-connections'. */
  name?: string;
}

/** Thrown when an explicit maxConnections cannot fit under the open-file limit. */
export class OpenFileLimitError extends RangeError {
  constructor(
    message: string,
    readonly limit: number,
    readonly fits: number,
  ) {
    super(message);
    this.name = 'OpenFileLimitError';
  }
}

/**
 * Fits maxConnections (plus `headroom` HTTP sockets plus FD_RESERVE) under
 * the open-file limit. Explicit and too large: OpenFileLimitError. The default
 * and too large: lowered, the headroom shrunk to at most a quarter of what is
 * available, and a warning.
 */
export function fitConnections(o: FitOptions): ConnectionFit {
  const name = o.name ?? 'maxConnections';
  if (o.limit === null) return { maxConnections: o.maxConnections, headroom: o.headroom, warning: null };
  const available = o.limit - FD_RESERVE;
  const needed = o.maxConnections + o.headroom + FD_RESERVE;
  if (needed <= o.limit) return { maxConnections: o.maxConnections, headroom: o.headroom, warning: null };
  const parts = `${o.maxConnections}${o.headroom > 0 ? ` + ${o.headroom} (HTTP headroom)` : ''} + ${FD_RESERVE} (the process's own)`;
  if (o.explicit) {
    const fits = available - o.headroom;
    throw new OpenFileLimitError(
      `ws-supervisor: ${name} ${o.maxConnections} needs ${parts} = ${needed} file descriptors, but the open-file limit (ulimit -n) is ${o.limit}: ` +
        (fits > 0 ? `use ${name} ${fits} or less, or raise the limit` : `raise the limit (the HTTP headroom alone does not fit)`),
      o.limit,
      Math.max(0, fits),
    );
  }
  const headroom = Math.min(o.headroom, Math.floor(available / 4));
  const maxConnections = available - headroom;
  if (maxConnections < 1) {
    throw new OpenFileLimitError(
      `ws-supervisor: the open-file limit (ulimit -n) is ${o.limit}, below the ${FD_RESERVE} descriptors the process needs for itself: raise it`,
      o.limit,
      0,
    );
  }
  return {
    maxConnections,
    headroom,
    warning:
      `the open-file limit (ulimit -n) is ${o.limit}: the default ${name} ${o.maxConnections} would need ${needed} file descriptors ` +
      `(${parts}); lowered to ${maxConnections}${o.headroom > 0 ? ` with ${headroom} for HTTP` : ''}, so the next client gets 503 instead of a reset. ` +
      `Raise the limit for more`,
  };
}
