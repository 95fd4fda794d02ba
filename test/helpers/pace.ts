/**
 * How fast this machine runs *this* test process, now: a factor for the time
 * budgets and timing margins of in-process tests (docs/testing.md, "On a busy
 * laptop"). The CLI tests' `budgets()` (test/helpers/cli.ts) times a process
 * start; an in-process test needs no process for that, so this measures in
 * the test process itself, once, synchronously, when the module is first
 * imported: importers read `pace` as a plain value.
 *
 * The measurement (~150 ms of wall time): six bursts of 25 ms, each doing a
 * fixed small unit of work (a JSON round trip) in batches of 20.
 * - share = wall time / CPU time this process got during the bursts. 1 on an
 *   idle core; on 2 cores with a busy loop on each plus other work at load
 *   ~18, a `nice -n 5` test process measured 12–15: it ran about 1/13 of the
 *   time, and so does everything a test waits for (the server and the client
 *   live in the same process).
 * - speed = time per unit of work in the fastest batch / the same on the
 *   reference machine (this shared 2-core machine), at least 1: a slower CPU
 *   scales the budgets too. A batch takes ~35 µs, so most run unpreempted and
 *   the fastest one measures the CPU, not the load (1.0–1.1 here, loaded).
 *
 * Timer lateness (how late a setTimeout fires) was tried and is not used: a
 * sleeping process that wakes is scheduled promptly, so timers fired 0–80 ms
 * late under the same load that made the work after them 13× slower.
 *
 * `factor` = share × speed, between 1 and MAX_FACTOR. Use it for margins on
 * top of a bound (`bound + pace.scaled(500)`, never the bound itself: a lower
 * bound such as "not before closeTimeout" stays exact) and for hang guards.
 * MAX_FACTOR keeps a scaled margin meaningful: 500 ms × 25 = 12.5 s, still far
 * below the 30 s that ws's own close timer held a socket for before R16, the
 * bug such margins exist to catch.
 */

/** The most a margin is scaled by. See above: margins must stay below the bugs they catch. */
export const MAX_FACTOR = 25;

/** µs per work unit on the reference machine (the shared 2-core machine, fastest batch: 1.66–1.78 µs, measured 2026-12). */
const REFERENCE_UNIT_US = 1.7;

const BURSTS = 6;
const BURST_MS = 25;
/** Work units between two clock readings. */
const BATCH = 20;

export interface Pace {
  /** Wall time / CPU time of this process while it tried to run flat out (1 = a core of its own). */
  share: number;
  /** Time per unit of work (fastest batch) / the reference machine's, at least 1. */
  speed: number;
  /** share × speed, clamped to [1, MAX_FACTOR]: how much longer than on an idle reference machine things take here, now. */
  factor: number;
  /** `ms` of an idle reference machine, scaled by `factor` (rounded up). */
  scaled(ms: number): number;
}

const sample = { id: 12345, name: 'connection', tags: ['a', 'b', 'c'], stats: { in: 1.5, out: 2 } };

function unit(): number {
  return JSON.stringify(JSON.parse(JSON.stringify(sample))).length;
}

/** Measures now (synchronous, ~BURSTS × BURST_MS of wall time). Exported for the test of this helper. */
export function measurePace(bursts = BURSTS, burstMs = BURST_MS): Pace {
  let wall = 0;
  let cpu = 0;
  let bestUnitUs = Infinity;
  let sink = 0;
  for (let i = 0; i < bursts; i++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    let now = t0;
    while (now - t0 < burstMs) {
      const b0 = now;
      for (let k = 0; k < BATCH; k++) sink += unit();
      now = performance.now();
      // A batch takes ~30 µs: most run without being preempted, so the
      // fastest one is the CPU's own speed, whatever the load.
      bestUnitUs = Math.min(bestUnitUs, ((now - b0) * 1000) / BATCH);
    }
    const used = process.cpuUsage(c0);
    const cpuMs = (used.user + used.system) / 1000;
    wall += now - t0;
    cpu += cpuMs;
  }
  if (sink < 0) throw new Error('unreachable'); // keeps the work from being optimised away
  const share = cpu > 0 ? Math.max(1, wall / cpu) : 1;
  const speed = Number.isFinite(bestUnitUs) ? Math.max(1, bestUnitUs / REFERENCE_UNIT_US) : 1;
  const factor = Math.min(MAX_FACTOR, Math.max(1, share * speed));
  return { share, speed, factor, scaled: (ms) => Math.ceil(ms * factor) };
}

/** This test process's pace, measured when the module was first imported. */
export const pace: Pace = measurePace();
