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
 * Which queued file starts, for an admission of `kind`: the first in the queue (the runner's order)
 * that is ready (its prerequisites done: dist/ built for the files that serve or pack it), and for
 * an extra also not quiet. -1: none may start now.
 * @param {string[]} queue
 * @param {'base' | 'extra'} kind
 * @param {{ ready(file: string): boolean, quiet(file: string): boolean }} o
 */
export function pickNext(queue, kind, { ready, quiet }) {
  return queue.findIndex((f) => ready(f) && (kind === 'base' || !quiet(f)));
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
