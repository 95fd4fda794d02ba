// The admission logic of scripts/run-tests.mjs's scheduler (scripts/test-scheduler.mjs), fed
// synthetic CPU samples: a base file starts whenever fewer than the base run; an extra only when the
// cores were idle in every sample of the window, not right after a start, never at the cap, never as
// or beside a quiet file; and a simulated run starts extras on idle cores and none on busy ones.
// The pick (pickNext): a base place goes to a later file when the first would leave the cores idle by
// the files' shares, fed synthetic shares and, through scripts/simulate-schedule.mjs, synthetic runs.
// And the runner's tables (scripts/test-files.mjs) name only files that exist.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { Admission, FILL_SLACK, concurrencyOf, idleBetween, pickNext } from '../scripts/test-scheduler.mjs';
import { ALONE, NEEDS_DIST, QUIET, SLOW_FIRST, TYPECHECK } from '../scripts/test-files.mjs';
import { simulateRun } from '../scripts/simulate-schedule.mjs';

const cpu = (user: number, idle: number) => ({ times: { user, nice: 0, sys: 0, idle, irq: 0 } });

test('idleBetween: idle cores from two readings of the per-core times', () => {
  // Core 0 idle for the whole 500 ms, core 1 busy for 400 of them: 1.2 cores idle.
  const r = idleBetween([cpu(1000, 1000), cpu(1000, 1000)], [cpu(1000, 1500), cpu(1400, 1100)]);
  assert.equal(r.ms, 500);
  assert.ok(Math.abs(r.idleCores - 1.2) < 1e-9, `${r.idleCores}`);
  assert.deepEqual(idleBetween([cpu(5, 5)], [cpu(5, 5)]), { ms: 0, idleCores: 0 }, 'no time passed: nothing idle to count');
  const nice = { times: { user: 0, nice: 500, sys: 0, idle: 0, irq: 0 } };
  assert.equal(idleBetween([cpu(0, 0)], [nice]).idleCores, 0, 'time at a lower priority (nice) is busy, not idle');
});

/** An admission with samples every 500 ms from 0 to `until`, `idle(t)` idle cores in the sample ending at t. */
function sampled(idle: (end: number) => number, until: number, o: Partial<ConstructorParameters<typeof Admission>[0]> = {}) {
  const a = new Admission({ base: 3, cap: 5, ...o });
  for (let end = 500; end <= until; end += 500) a.sample(end, 500, idle(end));
  return a;
}

test('a base file starts whenever fewer than the base run, however busy the cores', () => {
  const a = sampled(() => 0, 5000);
  a.started(4900);
  assert.equal(a.admit(5000, { running: 0, quietRunning: false }), 'base');
  assert.equal(a.admit(5000, { running: 2, quietRunning: true }), 'base');
  assert.equal(a.admit(5000, { running: 3, quietRunning: false }), null, 'busy cores: no extra');
});

test('an extra starts when the cores were idle in every sample of the window, and only then', () => {
  const idle = sampled(() => 1.0, 5000);
  assert.equal(idle.idleThroughout(5000), 1.0);
  assert.equal(idle.admit(5000, { running: 3, quietRunning: false }), 'extra');
  assert.equal(idle.admit(5000, { running: 4, quietRunning: false }), 'extra', 'a second extra, below the cap');
  assert.equal(idle.admit(5000, { running: 5, quietRunning: false }), null, 'at the cap');
  assert.equal(idle.admit(5000, { running: 3, quietRunning: true }), null, 'never beside a quiet file');

  // Idle on average over the window (1.05 cores) but busy in its last sample: a burst has begun.
  const burst = sampled((t) => (t === 5000 ? 0.1 : 1.4), 5000);
  assert.equal(burst.admit(5000, { running: 3, quietRunning: false }), null);
  // Busy up to 3 s: the window ending at 5 s starts at 3 s, so the sample over 2.5-3.0 s is not in it.
  const earlier = sampled((t) => (t <= 3000 ? 0 : 1.0), 5000);
  assert.equal(earlier.admit(5000, { running: 3, quietRunning: false }), 'extra', 'busy before the window: no matter');
  const edge = sampled((t) => (t === 3500 ? 0.2 : 1.0), 5000);
  assert.equal(edge.admit(5000, { running: 3, quietRunning: false }), null, 'the window reaches back 2 s: the sample over 3.0-3.5 s is in it');

  // Just under the threshold throughout.
  assert.equal(sampled(() => 0.49, 5000).admit(5000, { running: 3, quietRunning: false }), null);
  // A busy machine (a busy loop per core): no extra, ever.
  assert.equal(sampled(() => 0.02, 60_000).admit(60_000, { running: 3, quietRunning: false }), null);
});

test('no extra right after a start, nor on samples that do not cover the window', () => {
  const a = sampled(() => 2, 5000);
  a.started(4000);
  assert.equal(a.admit(5000, { running: 3, quietRunning: false }), null, '1 s after a start');
  assert.equal(a.admit(6000, { running: 3, quietRunning: false }), null, 'the samples stop at 5 s: stale at 6 s');
  a.sample(5500, 500, 2);
  a.sample(6000, 500, 2);
  assert.equal(a.admit(6000, { running: 3, quietRunning: false }), 'extra', '2 s after it, the window idle');

  const young = sampled(() => 2, 1500);
  assert.equal(young.idleThroughout(1500), null, '1.5 s of samples do not cover a 2 s window');
  assert.equal(young.admit(1500, { running: 3, quietRunning: false }), null);
});

test('extras are off when the cap is the base', () => {
  const a = sampled(() => 2, 10_000, { cap: 3 });
  assert.equal(a.admit(10_000, { running: 3, quietRunning: false }), null);
});

test('pickNext in order: the first ready file; for an extra, the first ready file that is not quiet', () => {
  const queue = ['needs-dist', 'quiet', 'plain', 'plain-2'];
  const o = { ready: (f: string) => f !== 'needs-dist', quiet: (f: string) => f === 'quiet', rule: 'order' as const };
  assert.equal(pickNext(queue, 'base', o), 1);
  assert.equal(pickNext(queue, 'extra', o), 2);
  assert.equal(pickNext(['needs-dist'], 'base', o), -1);
  assert.equal(pickNext(['quiet'], 'extra', o), -1);
});

/**
 * The fill's inputs, synthetic: a file's share is the number in its name after the last '-' (the cores
 * it keeps busy alone), `q…` files are quiet, `nd…` files not ready (dist/ not built yet).
 */
const shares = {
  ready: (f: string) => !f.startsWith('nd'),
  quiet: (f: string) => f.startsWith('q'),
  share: (f: string) => Number(f.slice(f.lastIndexOf('-') + 1)),
  cores: 2,
  base: 3,
};
const pick = (queue: string[], running: string[], kind: 'base' | 'extra' = 'base') => {
  const i = pickNext(queue, kind, { ...shares, running });
  return i === -1 ? null : queue[i];
};

test('pickNext fills: a base place goes to the first later file that fills the cores when the first would leave them idle', () => {
  // Two waiting files run (0.4 cores); the first queued waits too: 0.6 < 2 - 0.5.
  assert.equal(pick(['w-0.2', 'c-0.9', 'c-1.2'], ['w-0.2', 'w-0.2']), 'c-1.2', 'the first that reaches 1.5 cores, in the queue order');
  assert.equal(pick(['w-0.2', 'c-1.1', 'c-1.2'], ['w-0.2', 'w-0.2']), 'c-1.1', 'not the largest: the first that fills');
  // Exactly at cores - FILL_SLACK counts as filled: the first file keeps its turn.
  assert.equal(pick(['w-0.5', 'c-1.0'], ['c-0.7', 'w-0.3']), 'w-0.5');
  assert.equal(FILL_SLACK, 0.5);
  // The first file fills: the queue's order, however light the file.
  assert.equal(pick(['w-0.2', 'c-1.0'], ['c-1.0', 'c-0.4']), 'w-0.2');
  // A file that is not ready is not a candidate, however well it would fill.
  assert.equal(pick(['w-0.2', 'nd-1.4', 'c-0.3'], ['w-0.2', 'w-0.2']), 'w-0.2', 'nothing ready fills: the first');
  assert.equal(pick(['nd-1.4'], ['w-0.2', 'w-0.2']), null);
  // An extra takes the first ready file that is not quiet, as before: it starts on measured idle.
  assert.equal(pick(['q-0.2', 'w-0.2', 'c-1.4'], ['w-0.2', 'w-0.2', 'w-0.2'], 'extra'), 'w-0.2');
});

test('pickNext fills only the last free base place: at the start of a run the longest files keep their turn', () => {
  // The first run with the fill took a 1.5-core file of 4 s before the longest file (0.47 cores, 34 s
  // alone) when nothing ran yet. Three places are free at the start: the next two picks fill them at
  // once, so only the last one is chosen by the shares.
  const queue = ['long-0.47', 'long-0.55', 'long-0.84', 'short-1.5'];
  assert.equal(pick(queue, []), 'long-0.47');
  assert.equal(pick(queue.slice(1), ['long-0.47']), 'long-0.55');
  assert.equal(pick(['w-0.3', 'short-1.5'], ['long-0.47', 'long-0.55']), 'short-1.5', 'the last place: 1.32 cores would leave the cores idle');
  assert.equal(pick(queue.slice(2), ['long-0.47', 'long-0.55']), 'long-0.84', 'the last place, filled by the first file');
});

test('pickNext fills: a quiet file that waits starts beside CPU-bound work, not beside waiting files', () => {
  // The quiet run's 103 s: fairness (quiet, 0.30) and sessions.fanout (0.52) ran, over-budget (quiet,
  // 0.17) was next: 0.99 cores. A CPU-bound file takes the place; over-budget waits for the next one.
  assert.equal(pick(['q-0.17', 'w-0.17', 'c-1.3'], ['q-0.30', 'w-0.52']), 'c-1.3');
  // Beside a CPU-bound file and another, the quiet file takes its turn.
  assert.equal(pick(['q-0.17', 'w-0.17', 'c-1.3'], ['q-0.30', 'c-1.3']), 'q-0.17');
  // A quiet file that is CPU-bound itself (a bench smoke test) fills, and starts in its turn.
  assert.equal(pick(['q-0.85', 'c-1.3'], ['w-0.3', 'w-0.4']), 'q-0.85');
});

test('pickNext fills: waiting files start beside each other only when nothing that fills is left', () => {
  assert.equal(pick(['w-0.2', 'w-0.3', 'c-1.3', 'w-0.1'], ['w-0.2', 'w-0.3']), 'c-1.3');
  // Once the CPU-bound file runs, the waiting files keep their order beside it.
  assert.equal(pick(['w-0.2', 'w-0.3', 'w-0.1'], ['w-0.3', 'c-1.3']), 'w-0.2');
  // Nothing left that fills: the first waiting file, beside the other waiting files.
  assert.equal(pick(['w-0.2', 'w-0.3', 'c-0.6'], ['w-0.2', 'w-0.3']), 'w-0.2');
});

test('pickNext fills: a simulated run idles less and ends sooner than in order, on the same files', () => {
  // Synthetic files (scripts/simulate-schedule.mjs: processor sharing on 2 cores, the runner's
  // Admission and pickNext): two long waiting files, a quiet waiting one, three short waiting ones, and
  // CPU-bound files at the end of the queue (as the small files are, in path order).
  const table = new Map<string, { wall: number; cpu: number }>([
    ['long-a', { wall: 30, cpu: 6 }],
    ['long-b', { wall: 30, cpu: 6 }],
    ['q-prober', { wall: 20, cpu: 4 }],
    ['wait-1', { wall: 10, cpu: 2 }],
    ['wait-2', { wall: 10, cpu: 2 }],
    ['wait-3', { wall: 10, cpu: 2 }],
    ...Array.from({ length: 12 }, (_, i) => [`cpu-${i}`, { wall: 4, cpu: 4.8 }] as [string, { wall: number; cpu: number }]),
  ]);
  const run = (rule: 'fill' | 'order') =>
    simulateRun({ files: [...table.keys()], rule, ordered: true, table, quiet: ['q-prober'], needsDist: new Map() });
  const order = run('order');
  const fill = run('fill');
  assert.ok(fill.idle < order.idle - 5, `idle core-s: fill ${fill.idle.toFixed(1)}, order ${order.idle.toFixed(1)}`);
  assert.ok(fill.wall < order.wall - 2, `wall: fill ${fill.wall.toFixed(1)} s, order ${order.wall.toFixed(1)} s`);
  assert.ok(fill.max <= 5 && order.max <= 5, 'never past the cap');
  // The work is the same: only where it lands moves.
  assert.ok(Math.abs(fill.busy - order.busy) < 0.5, `busy core-s: ${fill.busy.toFixed(1)} and ${order.busy.toFixed(1)}`);
});

test("the runner's tables name only test files that exist", () => {
  const named = [...SLOW_FIRST, ...QUIET, ...NEEDS_DIST.keys(), ...[...ALONE.keys()].filter((f) => f !== TYPECHECK)];
  const missing = named.filter((f) => !existsSync(f));
  assert.deepEqual(missing, [], 'scripts/test-files.mjs names files that are gone: re-measure or remove them');
  assert.ok(ALONE.has(TYPECHECK));
  for (const [file, { wall, cpu }] of ALONE) assert.ok(wall > 0 && cpu > 0, `${file}: ${wall} s, ${cpu} s of CPU`);
});

test('concurrencyOf: the time-weighted mean number of files at once and the most', () => {
  assert.deepEqual(concurrencyOf([[0, 10], [0, 10]]), { mean: 2, max: 2 });
  const r = concurrencyOf([[0, 10], [5, 10], [10, 20]]);
  assert.equal(r.max, 2, 'a file ending as another starts is not counted with it');
  assert.ok(Math.abs(r.mean - 25 / 20) < 1e-9, `${r.mean}`);
  assert.deepEqual(concurrencyOf([]), { mean: 0, max: 0 });
});

/**
 * A run of 20 files simulated in 250 ms steps on 2 cores: each file runs 30 s and needs `need` cores
 * while it runs (a waiting file: 0.3), `busy` cores are taken by other work. The runner's loop: a
 * sample every 500 ms, admissions every step.
 */
function simulate(need: number, busy: number) {
  const cores = 2;
  const a = new Admission({ base: cores + 1, cap: 2 * cores + 1 });
  const queue = Array.from({ length: 20 }, (_, i) => `f${i}`);
  const running: { end: number }[] = [];
  const spans: [number, number][] = [];
  let extras = 0;
  let most = 0;
  for (let now = 0; queue.length > 0 || running.length > 0; now += 250) {
    for (let i = running.length - 1; i >= 0; i--) if (running[i]!.end <= now) running.splice(i, 1);
    if (now % 500 === 0 && now > 0) a.sample(now, 500, Math.max(0, cores - busy - need * running.length));
    for (;;) {
      const kind = queue.length > 0 ? a.admit(now, { running: running.length, quietRunning: false }) : null;
      if (kind === null) break;
      queue.shift();
      if (kind === 'extra') extras++;
      running.push({ end: now + 30_000 });
      spans.push([now, now + 30_000]);
      a.started(now);
    }
    most = Math.max(most, running.length);
  }
  return { extras, most, ...concurrencyOf(spans) };
}

test('a simulated run: extras on idle cores, none on busy ones, never past the cap', () => {
  const waiting = simulate(0.3, 0);
  assert.ok(waiting.extras >= 2, `waiting files on idle cores: ${waiting.extras} extras`);
  assert.equal(waiting.most, 5, 'up to the cap (2 cores + 3 files idle = 0.5 core at 5 files: the fifth still fits)');
  assert.ok(waiting.mean > 3.5, `files at once on average: ${waiting.mean.toFixed(2)}`);

  const heavy = simulate(0.7, 0);
  assert.equal(heavy.extras, 0, 'three files of 0.7 cores leave 0.1 idle: no extra');
  assert.equal(heavy.most, 3);

  const underBusyLoops = simulate(0.3, 2);
  assert.equal(underBusyLoops.extras, 0, 'a busy loop per core: no extra');
  assert.equal(underBusyLoops.most, 3);
});
