#!/usr/bin/env node
// A deterministic model of a `npm test` run on an idle machine, to compare the runner's pick rules
// without the run itself (a shared machine cannot measure idle wall time). It replays the runner's
// own scheduler (Admission and pickNext of scripts/test-scheduler.mjs, the order and tables of
// scripts/test-files.mjs) over each file's time alone and prints the predicted wall time and idle
// core-seconds, for the old rule (the queue's order) and the new one (fill the cores).
//
// The model, plainly:
// - Each job (a test file, the type check) needs `wall` seconds of progress and keeps `cpu / wall` of
//   a core busy while it progresses (ALONE in scripts/test-files.mjs: its time and CPU alone;
//   `--cpu-scale=k` multiplies every CPU, for the contention the model leaves out). A job not in the
//   table: 1 s of wall, 1 s of CPU.
// - Processor sharing: while the jobs' shares sum to D on C cores, every job progresses at
//   min(1, C / D) seconds per second, and max(0, C - D) cores idle. No other work on the machine.
//   A waiting file's waits stretch like its CPU under overload (the model knows one share per file),
//   and nothing else slows a file: not the process-start bound, not a pace measured under load.
// - Before the files, the bundling: 1.1 s of one core (the quiet run's log). dist/ is fresh, as after
//   `npm install` (the runner does not build it again: scripts/build.mjs, its stamp); with
//   `--stale-dist` the build runs beside the files as a job that holds no place: the browser bundle
//   0.5 s, then tsc 5 s single-threaded, one core each (NEEDS_DIST's files wait for their part).
// - The runner's loop: a CPU sample every 500 ms (the mean idle cores over it) into Admission, and a
//   schedule (admit, pick, start, as many as admitted) at every sample and every end. Time steps of
//   10 ms.
// - The runner itself, the test processes' output and the start of each process beyond the measured
//   wall time cost nothing here.
// - `--jitter=j --seeds=n`: n runs, each job's wall and CPU drawn once in [1 - j, 1 + j] × its
//   table's (seeded, so the same every time), the pick still reading the table: does a rule's gain
//   survive numbers that are off, as measured numbers are?
//
// Calibration (the table of the first measurement, 12:47 UTC): ALONE's CPU summed to 233 s with the type
// check, 243 s with the build and the bundling; the quiet run of 2026-12-06 (172 s in the runner) used
// ~289 core-s by /proc/stat, so `--cpu-scale=1.2` gave the model the same busy core-seconds. It then put
// the old rule at 158 s: optimistic by 14 s (files slow each other more than by sharing CPU), and it
// predicts ~6 idle core-seconds for the new rule where a real run had ~40. So compare the rules with each
// other, not with a clock. (ALONE re-measured at 13:53-13:59 sums to 236 s with the type check.)
//
// Usage: node scripts/simulate-schedule.mjs [--cpu-scale=1.2] [--timeline] [--stale-dist] [--jitter=0.3 --seeds=30]
import { readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Admission, concurrencyOf, pickNext } from './test-scheduler.mjs';
import { ALONE, NEEDS_DIST, QUIET, norm, runOrder, shareOf } from './test-files.mjs';

const STEP_MS = 10;

/**
 * One simulated run.
 * @param {object} o
 * @param {string[]} o.files the test files (paths as the tables name them), in the runner's order
 *   (runOrder) unless `ordered`
 * @param {'fill' | 'order'} o.rule the pick rule
 * @param {boolean} [o.ordered] `files` is the queue as it is (no type check added)
 * @param {Map<string, { wall: number, cpu: number }>} [o.table] each job alone (ALONE)
 * @param {string[]} [o.quiet] the quiet files (QUIET)
 * @param {Map<string, string>} [o.needsDist] what needs which part of dist/ (NEEDS_DIST)
 * @param {number} [o.cores]
 * @param {number} [o.cpuScale] every job's CPU × this
 * @param {boolean} [o.typecheck] the type check as a job (`npm test`)
 * @param {number} [o.extra] extras allowed (the runner's TEST_EXTRA, default one per core)
 * @param {boolean} [o.timeline] keep one line per second: idle cores and the jobs running
 * @param {boolean} [o.staleDist] dist/ is stale, so the runner builds it (else it is fresh, as after npm install)
 */
export function simulateRun({
  files,
  rule,
  ordered = false,
  table = ALONE,
  quiet = QUIET,
  needsDist = NEEDS_DIST,
  cores = 2,
  cpuScale = 1,
  typecheck = true,
  extra = cores,
  timeline = false,
  staleDist = false,
  jitter = 0,
  seed = 1,
}) {
  const admission = new Admission({ base: cores + 1, cap: cores + 1 + extra });
  const queue = ordered ? [...files] : runOrder(files, { typecheck });
  const isQuiet = (f) => quiet.includes(norm(f));
  const shareIn = (f) => {
    const t = table.get(norm(f));
    return t === undefined ? shareOf(f) : t.cpu / t.wall;
  };
  // Each job's wall and CPU × a factor in [1 - jitter, 1 + jitter], drawn once per job from a
  // seeded generator (mulberry32): the same seed, the same run. The pick still reads ALONE's shares.
  let state = seed >>> 0;
  const random = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const drawn = new Map();
  const alone = (f) => {
    if (!drawn.has(f)) {
      const t = table.get(norm(f)) ?? { wall: 1, cpu: 1 };
      drawn.set(f, { wall: t.wall * (1 + jitter * (2 * random() - 1)), cpu: t.cpu * (1 + jitter * (2 * random() - 1)) });
    }
    return drawn.get(f);
  };
  for (const f of queue) alone(f);
  /** The jobs progressing: each { file, left (s of progress), share (cores), start, place (holds a place) }. */
  const jobs = [];
  const spans = [];
  const lines = [];
  let extras = 0;
  let idleMs = 0;
  let busyMs = 0;
  // As the runner: the build runs when dist/ is stale and a file needs it, else nothing waits.
  const building = staleDist && queue.some((f) => needsDist.has(norm(f)));
  const ready = { browser: !building, all: !building };
  const BUNDLE_MS = 1100;
  const build = [
    { part: 'browser', left: 0.5 },
    { part: 'all', left: 5 },
  ];
  if (building) jobs.push({ file: 'build', left: build[0].left, share: 1, start: 0, place: false });
  let sampleIdle = 0;
  let lastSample = 0;
  let secondIdle = 0;
  const isReady = (f) => {
    const need = needsDist.get(norm(f));
    return need === undefined || ready[need];
  };
  const schedule = (now) => {
    if (now < BUNDLE_MS) return;
    for (;;) {
      if (queue.length === 0) return;
      const placed = jobs.filter((j) => j.place);
      const kind = admission.admit(now, { running: placed.length, quietRunning: placed.some((j) => isQuiet(j.file)) });
      if (kind === null) return;
      const i = pickNext(queue, kind, {
        ready: isReady,
        quiet: isQuiet,
        share: shareIn,
        running: placed.map((j) => j.file),
        cores,
        base: cores + 1,
        rule,
      });
      if (i === -1) return;
      const [file] = queue.splice(i, 1);
      const t = alone(file);
      jobs.push({ file, left: t.wall, share: (t.cpu * cpuScale) / t.wall, start: now, place: true });
      if (kind === 'extra') extras++;
      admission.started(now);
    }
  };
  let now = 0;
  schedule(now);
  while (jobs.length > 0 || queue.length > 0) {
    if (now > 3_600_000) throw new Error(`simulateRun: no end after an hour (queue: ${queue.join(', ')})`);
    const demand = jobs.reduce((s, j) => s + j.share, 0) + (now < BUNDLE_MS ? 1 : 0);
    const rate = demand > cores ? cores / demand : 1;
    const idle = Math.max(0, cores - demand);
    idleMs += idle * STEP_MS;
    busyMs += Math.min(cores, demand) * STEP_MS;
    sampleIdle += idle * STEP_MS;
    secondIdle += idle * STEP_MS;
    now += STEP_MS;
    let ended = false;
    for (let k = jobs.length - 1; k >= 0; k--) {
      const j = jobs[k];
      j.left -= (rate * STEP_MS) / 1000;
      if (j.left > 1e-9) continue;
      jobs.splice(k, 1);
      if (j.file === 'build') {
        const done = build.shift();
        ready[done.part] = true;
        if (build.length > 0) jobs.push({ file: 'build', left: build[0].left, share: 1, start: now, place: false });
      } else {
        spans.push([j.start, now]);
      }
      ended = true;
    }
    if (timeline && now % 1000 === 0) {
      lines.push(`${String(now / 1000).padStart(4)} ${(secondIdle / 1000).toFixed(2)}  ${jobs.map((j) => j.file.replace(/^.*\//, '').replace(/\.test\.ts$/, '')).join(' ')}`);
      secondIdle = 0;
    }
    if (now - lastSample >= 500) {
      admission.sample(now, now - lastSample, sampleIdle / (now - lastSample));
      sampleIdle = 0;
      lastSample = now;
      schedule(now);
    } else if (ended || now === BUNDLE_MS) schedule(now);
  }
  const { mean, max } = concurrencyOf(spans);
  return { wall: now / 1000, idle: idleMs / 1000, busy: busyMs / 1000, extras, mean, max, lines };
}

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (name.endsWith('.test.ts')) out.push(norm(p));
  }
  return out;
}

// Run as a script, not when imported (test/run-tests.scheduler.test.ts imports it; its bundle gives this
// module its own import.meta.url: scripts/bundle-tests.mjs).
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const scale = Number(args.find((a) => a.startsWith('--cpu-scale='))?.slice('--cpu-scale='.length) ?? 1);
  const withTimeline = args.includes('--timeline');
  const staleDist = args.includes('--stale-dist');
  const jitter = Number(args.find((a) => a.startsWith('--jitter='))?.slice('--jitter='.length) ?? 0);
  const seeds = Number(args.find((a) => a.startsWith('--seeds='))?.slice('--seeds='.length) ?? 1);
  const files = walk('test').sort();
  console.log(`${files.length} test files and the type check on 2 cores, CPU × ${scale}; time and CPU alone from ALONE (scripts/test-files.mjs)`);
  if (seeds > 1) {
    const runs = Array.from({ length: seeds }, (_, k) => ['order', 'fill'].map((rule) => simulateRun({ files, rule, cpuScale: scale, jitter, seed: k + 1, staleDist })));
    const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const diff = runs.map(([o, n]) => n.wall - o.wall);
    console.log(`${seeds} runs, each job's wall and CPU × [${1 - jitter}, ${1 + jitter}]: old ${mean(runs.map((r) => r[0].wall)).toFixed(1)} s wall, ${mean(runs.map((r) => r[0].idle)).toFixed(1)} idle core-s; new ${mean(runs.map((r) => r[1].wall)).toFixed(1)} s, ${mean(runs.map((r) => r[1].idle)).toFixed(1)}; new - old ${Math.min(...diff).toFixed(1)} to ${Math.max(...diff).toFixed(1)} s, shorter in ${diff.filter((d) => d < 0).length}`);
  }
  for (const rule of ['order', 'fill']) {
    const r = simulateRun({ files, rule, cpuScale: scale, timeline: withTimeline, staleDist });
    console.log(
      `${rule === 'order' ? 'old (the queue order)' : 'new (fill the cores)'}: wall ${r.wall.toFixed(1)} s, idle ${r.idle.toFixed(1)} core-s, busy ${r.busy.toFixed(1)} core-s; ` +
        `${r.extras} extras, ${r.mean.toFixed(2)} at once on average, ${r.max} at most`,
    );
    if (withTimeline) console.log(r.lines.join('\n'));
  }
}
