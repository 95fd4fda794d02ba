// The pure part of scripts/run-tests.mjs's scheduler: when the next test file may start, and which.
// No clock, no processes, no /proc here: the runner feeds the CPU samples and the times in, so
// test/run-tests.scheduler.test.ts can drive it with synthetic ones.
//
// Why a scheduler of our own instead of `node --test --test-concurrency=N`: a fixed N leaves cores
// idle. The files spend much of their time waiting (process starts, Redis restarts, a 20 s SIGSTOP
// freeze and the session store's 10 s command timeout in test/cli/sessions-redis.test.ts, Chromium),
// so three files at once on two cores kept only ~1.44 cores busy on average (the ninth session's
// quiet clean-clone run: ~260 s of CPU in 181 s). A fixed fourth file was tried and dropped: on its
// first run four CPU-heavy files starved each other and a prober's latency bound failed
// (test/server/over-budget.test.ts). So the number of files is the base (cores + 1, which passed
// idle and under a busy loop per core) plus extras that start only while the cores are measurably
// idle, never as or beside a file whose bounds are about latency or CPU share:
//
// - **base**: fewer than `base` files run → the next file starts (as `node --test` did).
// - **extra**: `base` or more run, fewer than `cap`, and the machine had at least `minIdleCores` of
//   idle cores in *every* sample of the last `windowMs` (not on average: a burst that has just
//   begun must not be averaged away), and no file started in the last `settleMs` (a new file's own
//   start, its imports and its pace measurement must show in the samples before another is added).
//   On a machine busy with other work the idle share is ~0 and no extra starts: the suite is the
//   base number of files, as it was.
// - **quiet files** (a prober's latency, a fair share of CPU, a benchmark's ratio) never start as an
//   extra, and no extra starts while one runs. A quiet file can still start beside an extra that was
//   already running (it then takes a base place: fewer than `base` files were running), so it never
//   shares the machine with more than `base` - 1 other files when it starts, as under `node --test`.
// - **which file** (pickNext): a base place goes to the first ready file of the queue, unless the
//   files' CPU shares alone (each file's CPU / wall alone, scripts/test-files.mjs) say it would leave
//   half a core or more idle beside the running ones; then to the first later file that would not.
//   Waiting files (and quiet files that wait) then run beside CPU-bound ones instead of holding all
//   the base places together while the cores idle, where no extra may help when one is quiet.

/**
 * The idle cores between two readings of the per-core CPU times (os.cpus()[i].times, in ms): the idle
 * time summed over the cores / the interval, so 2 on two idle cores, 0 on two busy ones.
 * `ms` is the interval measured by the cores' own clocks (total time / cores).
 */
export function idleBetween(before, after) {
  let idle = 0;
  let total = 0;
  const n = Math.min(before.length, after.length);
  for (let i = 0; i < n; i++) {
    const a = before[i].times;
    const b = after[i].times;
    idle += b.idle - a.idle;
    total += b.user + b.nice + b.sys + b.idle + b.irq - (a.user + a.nice + a.sys + a.idle + a.irq);
  }
  if (n === 0 || total <= 0) return { ms: 0, idleCores: 0 };
  const ms = total / n;
  return { ms, idleCores: Math.max(0, Math.min(n, idle / ms)) };
}

export class Admission {
  /**
   * @param {object} o
   * @param {number} o.base files at once whatever the load (cores + 1, or TEST_CONCURRENCY)
   * @param {number} o.cap the most files at once with the extras (base when extras are off)
   * @param {number} [o.windowMs] how long the cores must have been idle before an extra starts
   * @param {number} [o.minIdleCores] how idle: this many cores' worth in every sample of the window
   * @param {number} [o.settleMs] no extra within this long after any file started
   */
  constructor({ base, cap, windowMs = 2000, minIdleCores = 0.5, settleMs = 2000 }) {
    this.base = base;
    this.cap = Math.max(base, cap);
    this.windowMs = windowMs;
    this.minIdleCores = minIdleCores;
    this.settleMs = settleMs;
    /** @type {{ end: number, ms: number, idleCores: number }[]} */
    this.samples = [];
    this.lastStart = -Infinity;
  }

  /** One CPU sample: `idleCores` cores' worth of idle time over the `ms` before `end`. */
  sample(end, ms, idleCores) {
    this.samples.push({ end, ms, idleCores });
    // Keep what covers the window (and one more, so the window's start is covered).
    while (this.samples.length > 2 && this.samples[1].end - this.samples[1].ms <= end - this.windowMs) this.samples.shift();
  }

  /**
   * The least idle cores over the samples of the window ending at `now`, or null when the samples do
   * not cover it (the runner has just started, or sampling stalled: a runner that cannot sample is
   * itself starved, no time for an extra).
   */
  idleThroughout(now) {
    const inWindow = this.samples.filter((s) => s.end > now - this.windowMs);
    if (inWindow.length === 0) return null;
    const first = inWindow[0];
    const last = inWindow[inWindow.length - 1];
    // Covered: the first sample reaches back to the window's start; the last is recent (a sample
    // older than one sample interval plus a little means the runner's own timer ran late).
    if (first.end - first.ms > now - this.windowMs + 1) return null;
    if (now - last.end > Math.max(last.ms, 1) * 1.5) return null;
    return Math.min(...inWindow.map((s) => s.idleCores));
  }

  /**
   * What may start at `now`: 'base', 'extra' or null.
   * @param {number} now
   * @param {{ running: number, quietRunning: boolean }} state `running`: files running now;
   *   `quietRunning`: one of them is a quiet file
   */
  admit(now, { running, quietRunning }) {
    if (running < this.base) return 'base';
    if (running >= this.cap || quietRunning) return null;
    if (now - this.lastStart < this.settleMs) return null;
    const idle = this.idleThroughout(now);
    return idle !== null && idle >= this.minIdleCores ? 'extra' : null;
  }

  /** A file started at `now`. */
  started(now) {
    this.lastStart = now;
  }
}

/**
 * How much idle a base pick may leave, in cores, by the files' shares alone: the half core an extra
 * needs (minIdleCores). A pick that would leave more starts a later file that fills the cores instead.
 */
export const FILL_SLACK = 0.5;

/**
 * Which queued file starts, for an admission of `kind`. -1: none may start now. The candidates are the
 * queued files that are ready (their prerequisites done: dist/ built for the files that serve or pack
 * it), for an extra also not quiet, in the queue's order (the runner's: SLOW_FIRST, then the rest).
 *
 * - rule 'order' (the runner before the fill, `TEST_PICK=order`), and every extra: the first candidate.
 *   An extra starts because the cores were measured idle, and the queue's order keeps the long files
 *   early.
 * - rule 'fill', the last free base place (`base` - 1 files running; while more are free, as at the
 *   start, the next picks fill them at once, and the longest files keep their turn): the first
 *   candidate, unless the running files' shares and its own
 *   (`share`: CPU / wall of each file alone, scripts/test-files.mjs) sum to less than `cores` -
 *   FILL_SLACK: then the first candidate that reaches it, and if none does, the first. Why: three
 *   files that mostly wait can hold all the base places while the cores idle, and when one of them is
 *   quiet no extra may start beside it (the quiet run of 2026-12-06: fairness, over-budget and
 *   sessions.nodes together, 105-113 s, 1.6-1.8 cores idle). Starting a CPU-bound file there instead
 *   keeps the cores busy, and the waiting file starts at the next place, beside it. A quiet file that
 *   waits (over-budget, fairness, slow-consumer) thus starts beside CPU-bound work rather than beside
 *   other waiting files, and waiting files start beside each other when nothing that fills is left.
 *   The number of files is not changed: a base pick fills a base place, as before.
 *
 * @param {string[]} queue
 * @param {'base' | 'extra'} kind
 * @param {object} o
 * @param {(file: string) => boolean} o.ready
 * @param {(file: string) => boolean} o.quiet
 * @param {'fill' | 'order'} [o.rule]
 * @param {(file: string) => number} [o.share] the cores a file keeps busy (needed for 'fill')
 * @param {string[]} [o.running] the files running now (needed for 'fill')
 * @param {number} [o.cores] (needed for 'fill')
 * @param {number} [o.base] the base number of places (needed for 'fill')
 */
export function pickNext(queue, kind, { ready, quiet, rule = 'fill', share, running, cores, base }) {
  const candidates = [];
  for (let i = 0; i < queue.length; i++) if (ready(queue[i]) && (kind === 'base' || !quiet(queue[i]))) candidates.push(i);
  if (candidates.length === 0) return -1;
  if (rule === 'order' || kind === 'extra' || running.length + 1 < base) return candidates[0];
  const load = running.reduce((sum, f) => sum + share(f), 0);
  const fills = (i) => load + share(queue[i]) >= cores - FILL_SLACK;
  return candidates.find(fills) ?? candidates[0];
}

/**
 * Files at once over the run: the time-weighted mean of the number running, from the first start to
 * the last end, and the most at any moment. `spans` are [start, end] per file.
 * @param {[number, number][]} spans
 */
export function concurrencyOf(spans) {
  if (spans.length === 0) return { mean: 0, max: 0 };
  const events = spans.flatMap(([s, e]) => [[s, 1], [e, -1]]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let running = 0;
  let max = 0;
  let area = 0;
  let last = events[0][0];
  for (const [t, d] of events) {
    area += running * (t - last);
    last = t;
    running += d;
    max = Math.max(max, running);
  }
  const total = events[events.length - 1][0] - events[0][0];
  return { mean: total > 0 ? area / total : spans.length, max };
}
