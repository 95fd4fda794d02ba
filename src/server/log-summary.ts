/**
 * Repeated warnings, summarised: during an outage or a flood the
 * same warning can repeat thousands of times a second (a hung Redis: one
 * adapter dead letter per broadcast; a socket flood: one refusal per socket).
 * The first of a burst is logged at once, with its details, so the operator
 * learns why without delay; the rest are counted and logged as one line per
 * interval with the counts, until an interval passes without any.
 */
import type { Logger } from '../base/logger.ts';

/** One summary line per 10 s at most while a burst lasts: an operator's tail shows it within seconds, a 20 s outage costs ~3 lines. */
export const LOG_SUMMARY_INTERVAL_MS = 10_000;

export interface LogSummaryOptions {
  logger: Logger | null;
  /** The summary line's message prefix, e.g. 'adapter dead letters'. */
  what: string;
  intervalMs?: number;
}

export class LogSummary {
  private readonly logger: Logger | null;
  private readonly what: string;
  private readonly intervalMs: number;
  /** Counts by key (e.g. reason) since the last line, and their bytes. */
  private counts = new Map<string, number>();
  private bytes = 0;
  private since = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(options: LogSummaryOptions) {
    this.logger = options.logger;
    this.what = options.what;
    this.intervalMs = options.intervalMs ?? LOG_SUMMARY_INTERVAL_MS;
  }

  /**
   * One occurrence of `key`. The first of a burst is logged now (warn, with
   * `fields` and `msg`); later ones are counted into the next summary line.
   */
  note(key: string, bytes: number, fields: object, msg: string): void {
    if (!this.logger) return;
    if (this.timer === null) {
      this.logger.warn(fields, msg);
      this.since = Date.now();
      this.arm();
      return;
    }
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
    this.bytes += bytes;
  }

  /** True while a burst is being summarised (until an interval passes without any occurrence). */
  get active(): boolean {
    return this.timer !== null;
  }

  /** Logs what was counted (if anything) now, e.g. when the outage ends. The burst goes on being summarised until a quiet interval. */
  flush(): void {
    if (!this.logger || this.counts.size === 0) return;
    let total = 0;
    const byKey: Record<string, number> = {};
    for (const [key, n] of this.counts) {
      byKey[key] = n;
      total += n;
    }
    const parts = [...this.counts].map(([key, n]) => `${key} ${n}`).join(', ');
    const seconds = ((Date.now() - this.since) / 1000).toFixed(1);
    this.logger.warn(
      { count: total, byKey, bytes: this.bytes, seconds: Number(seconds) },
      `${this.what}: ${total} more in the last ${seconds} s (${parts}; ${this.bytes} bytes)`,
    );
    this.counts = new Map();
    this.bytes = 0;
    this.since = Date.now();
  }

  /** Logs what is left and stops the timer (R3). */
  close(): void {
    this.flush();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private arm(): void {
    this.timer = setTimeout(() => {
      if (this.counts.size === 0) {
        this.timer = null; // a quiet interval: the next one is the first of a new burst
        return;
      }
      this.flush();
      this.arm();
    }, this.intervalMs);
    this.timer.unref();
  }
}
