#!/usr/bin/env node
// Runs every test/**/*.test.ts, each file in a process of its own with node:test's reporters, each
// file bundled to plain JavaScript first (scripts/bundle-tests.mjs; TEST_TSX=1 runs the .ts files
// through tsx instead). The files are listed here explicitly, and an empty list is an error rather
// than a silent pass. Which file starts when is this runner's own scheduler (below, and
// scripts/test-scheduler.mjs), not `node --test --test-concurrency`.
//
// Usage: node scripts/run-tests.mjs [substring…]: the files whose path contains one of them.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { spawn } from 'node:child_process';
import { BUILD_STEPS, cleanDist, shell, staleBecause, writeStamp } from './build.mjs';
import { bundleTests } from './bundle-tests.mjs';
import { Admission, concurrencyOf, idleBetween, pickNext } from './test-scheduler.mjs';
import { NEEDS_DIST, QUIET, TYPECHECK, norm, runOrder, shareOf } from './test-files.mjs';

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

// --typecheck (`npm test`): the type check (package.json's `typecheck` script) runs as one more job
// among the test files, instead of alone before the runner (6.8-7.3 s of CPU on one core, single-
// threaded, ~6 s of wall time in which the other core idled): a type error still fails the run.
const flags = process.argv.slice(2).filter((a) => a.startsWith('--'));
const filter = process.argv.slice(2).filter((a) => !a.startsWith('--'));
for (const f of flags) {
  if (f !== '--typecheck') {
    console.error(`run-tests: unknown option ${f} (usage: node scripts/run-tests.mjs [--typecheck] [substring…])`);
    process.exit(2);
  }
}
const withTypecheck = flags.includes('--typecheck');
let files = walk('test').sort();
if (filter.length > 0) files = files.filter((f) => filter.some((x) => f.includes(x)));
if (files.length === 0) {
  console.error('run-tests: no test files found under test/');
  process.exit(1);
}
// The runner's order (SLOW_FIRST: the slowest files first, then path order) and the other tables
// about the files (QUIET, NEEDS_DIST, each file's time and CPU alone) are in scripts/test-files.mjs.
files = runOrder(files);

// How many files at once. The base is one per core plus one (TEST_CONCURRENCY overrides it, and then
// no extras start: a number given is the number run). Measured on the 2-core machine, idle: 255 s at
// 2 files at once, 211 s at 3 (docs/testing.md, "Wall time"), and 3 passes under a busy loop on every
// core (5 runnable CPU hogs at most on 2 cores). But three files keep only ~1.44 of the 2 cores busy
// on average (the ninth session's quiet clean-clone run: ~260 s of the files' CPU in 181 s): the files
// wait (process starts, Redis restarts, the 20 s SIGSTOP freeze and the store's 10 s command timeout
// in test/cli/sessions-redis.test.ts, Chromium), and while the three running files wait, a core idles.
// A fixed fourth file was tried and dropped: its first clean-clone run failed a prober's latency bound
// (test/server/over-budget.test.ts) with the server's process on 24% of a core, four CPU-heavy files
// starving each other. So up to TEST_EXTRA more files (default: one per core) start as *extras*, each
// only when the cores were measurably idle (at least half a core idle in every 500 ms sample of the
// last 2 s, from the per-core CPU times of os.cpus(), and 2 s after the last start), and never as or
// beside a QUIET file (scripts/test-scheduler.mjs, tested by test/run-tests.scheduler.test.ts). On a
// machine busy with other work the cores are never idle and the suite runs the base number, as before.
// The files that spawn processes share one start bound through a directory (test/helpers/cli.ts: one
// process starting per core across the whole suite), so more files at once do not start more
// processes at once.
const cores = availableParallelism();
/** A count from the environment: a whole number of at least `least`, or the default; anything else is an error (not NaN, which would lift the cap). */
function countFrom(name, fallback, least) {
  const raw = process.env[name];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < least) {
    console.error(`run-tests: ${name}=${raw}: a whole number of at least ${least}, please`);
    process.exit(2);
  }
  return n;
}
const fixed = process.env.TEST_CONCURRENCY !== undefined;
const base = countFrom('TEST_CONCURRENCY', cores + 1, 1);
const extrasAllowed = fixed ? 0 : countFrom('TEST_EXTRA', cores, 0);
const admission = new Admission({ base, cap: base + extrasAllowed });
// Which file takes a base place: the first in the queue, or a later one when the first would leave the
// cores idle by the files' shares alone (scripts/test-scheduler.mjs, pickNext). TEST_PICK=order keeps
// the queue's order (the runner before the fill), for a comparison.
const pickRule = process.env.TEST_PICK ?? 'fill';
if (pickRule !== 'fill' && pickRule !== 'order') {
  console.error(`run-tests: TEST_PICK=${pickRule}: 'fill' or 'order', please`);
  process.exit(2);
}
console.log(
  `run-tests: ${base} files at once (${fixed ? 'TEST_CONCURRENCY' : `${cores} cores, plus one`})` +
    (extrasAllowed > 0 ? `, up to ${extrasAllowed} more while the cores are idle` : ''),
);
const work = mkdtempSync(join(tmpdir(), 'ws-supervisor-tests-'));
mkdirSync(join(work, 'start-slots'));
// The run's name: the files of this run share the CLI's bundle (test/helpers/compiled.ts).
const runId = String(process.pid);
const env = { ...process.env, WS_SUPERVISOR_TEST_START_SLOTS: join(work, 'start-slots'), WS_SUPERVISOR_TEST_RUN: runId };
const started = performance.now();
const seconds = (ms) => (ms / 1000).toFixed(1);
/** Runs a command to its end: its exit code (or signal) and its output, stdout and stderr as they came. */
function step(command) {
  return new Promise((done) => {
    const child = shell(command);
    const out = [];
    child.stdout.on('data', (c) => out.push(c));
    child.stderr.on('data', (c) => out.push(c));
    child.on('close', (code, signal) => done({ code, signal, out: Buffer.concat(out) }));
  });
}

// `npm pack` runs the build (`prepare`), which first deletes dist/ while other files serve the
// browser bundle from it. So the runner builds dist/ itself when it is stale, and tells
// test/pack.test.ts to pack that fresh build without running the build again (`--ignore-scripts`).
// The build runs while the test files are bundled, and the files that do not need dist/ start as
// soon as the bundles are written (before, the build and then the bundling ran one after the other,
// ~6 s before the first file). The runner runs the build's steps one by one (scripts/build.mjs, the
// same list as `npm run build`): the browser bundle first, 0.4-0.7 s, then tsc (3.9-5.8 s
// single-threaded, scripts/build.mjs), so the three files that need only dist/browser/ (two of them among the longest)
// start without waiting for tsc.
// A dist/ that a finished build wrote from the current sources (its stamp says so: scripts/build.mjs)
// is not built again: on a fresh clone `npm install` has just built it (`prepare`); a second build
// was ~10 s of CPU at the start of each run (the build's tsc was then parallel: 9.2 s CPU for the
// whole build at load 4-5, 6.8-7.0 s single-threaded).
const ready = { browser: true, all: true };
/** Called when a part of dist/ is built: the scheduler, once it exists (the bundling may still run). */
let builtSome = () => {};
const buildFailedFor = new Set();
const needsBuild = files.some((f) => NEEDS_DIST.has(norm(f)));
const stale = needsBuild ? staleBecause() : null;
if (needsBuild && stale === null) console.log('run-tests: dist/ is what a build of the current sources wrote (its stamp): not built again');
const build = !needsBuild || stale === null
  ? Promise.resolve()
  : (async () => {
      console.log(`run-tests: building dist/ (${stale})`);
      ready.browser = ready.all = false;
      cleanDist();
      for (const { builds, command } of BUILD_STEPS) {
        const r = await step(command);
        process.stdout.write(r.out);
        if (r.code !== 0) {
          console.error(`run-tests: \`${command}\` failed (exit ${r.code ?? r.signal}); what needs dist/ does not run`);
          for (const part of builds === 'all' ? ['all'] : ['browser', 'all']) buildFailedFor.add(part);
          return;
        }
        console.log(`run-tests: ${builds === 'all' ? 'dist/' : `dist/${builds}/`} built in ${seconds(performance.now() - started)} s`);
        ready[builds] = true;
        builtSome();
      }
      writeStamp();
    })();
env.WS_SUPERVISOR_TEST_DIST_BUILT = '1';
const distNeed = (f) => NEEDS_DIST.get(norm(f));
const isReady = (f) => distNeed(f) === undefined || ready[distNeed(f)];

// Each test process loads its file as one bundle instead of loading tsx and compiling every module
// through its loader thread: 0.3–0.5 s less CPU per file (docs/testing.md, "Wall time"). The bundles
// keep each module's import.meta.url and map stack traces to the .ts sources.
const viaTsx = process.env.TEST_TSX === '1';
const bundleDir = resolve('test', '.build', `suite-${process.pid}`);
/** What the test processes run: the bundle of each file, or the file itself through tsx. */
let runnable = new Map(files.map((f) => [f, f]));
if (!viaTsx) {
  try {
    const bundles = await bundleTests(files, bundleDir);
    runnable = new Map([...bundles].map(([bundle, file]) => [file, bundle]));
  } catch (error) {
    console.error(`run-tests: bundling the test files failed: ${error instanceof Error ? error.message : error}`);
    await build;
    rmSync(work, { recursive: true, force: true });
    process.exit(1);
  }
  console.log(`run-tests: ${files.length} test files bundled in ${seconds(performance.now() - started)} s (in the wall time below)`);
}

// Each file runs as `node [--enable-source-maps | --import tsx] --test-reporter=… FILE`: the file's
// own process with the three reporters, which Node 20 supports without `--test` (checked with Node
// 20.20: spec, tap and scripts/test-file-times.mjs write the same as under `node --test`, and a failed
// test exits 1). `node --test FILE` would start a second process per file, the runner that reads the
// file's events and formats them: measured here, ~0.15 s more CPU per file (0.31-0.39 s against
// 0.15-0.20 s for a 3-test file, five pairs), and every test's events serialized twice.
// Each file's output (its spec report, and whatever it writes to stdout and stderr) is printed whole
// when it ends, so the files' reports do not interleave.
const timesReporter = new URL('./test-file-times.mjs', import.meta.url).href;
// Node's own warning when a process has three reporters (they add listeners to one stream), in a
// file's stderr now and then (under `node --test` it came once, from the parent): not about the tests.
const REPORTERS_WARNING = /^\(node:\d+\) MaxListenersExceededWarning: Possible EventEmitter memory leak detected\. \d+ end listeners added to \[TestsStream\]\..*\n\(Use `node --trace-warnings \.\.\.` to show where the warning was created\)\n/m;
const queue = runOrder(files, { typecheck: withTypecheck });
/** @type {Map<import('node:child_process').ChildProcess, { file: string, quiet: boolean }>} */
const running = new Map();
const taps = [];
const timeFiles = [];
/** [start, end] of each file, for the mean number at once. */
const spans = [];
const extras = [];
/** Jobs that took a base place before the first of the queue (pickNext's fill). */
let startedEarly = 0;
const crashed = [];
const failedFiles = [];
let status = 0;
let finished;
const allDone = new Promise((resolve) => (finished = resolve));

/** The type check's own command (package.json's `typecheck` script), through the shell as npm runs it, without npm. */
const startTypecheck = () => shell(JSON.parse(readFileSync('package.json', 'utf8')).scripts.typecheck);

function startFile(file, kind) {
  const i = taps.length;
  const tap = join(work, `results-${i}.tap`);
  const times = join(work, `times-${i}.txt`);
  if (file !== TYPECHECK) {
    taps.push(tap);
    timeFiles.push({ path: times, file });
  }
  const child =
    file === TYPECHECK
      ? startTypecheck()
      : spawn(
          process.execPath,
          [
            ...(viaTsx ? ['--import', 'tsx'] : ['--enable-source-maps']),
            '--test-reporter=spec', '--test-reporter-destination=stdout',
            '--test-reporter=tap', `--test-reporter-destination=${tap}`,
            `--test-reporter=${timesReporter}`, `--test-reporter-destination=${times}`,
            runnable.get(file),
          ],
          { stdio: ['ignore', 'pipe', 'pipe'], env },
        );
  const t0 = performance.now();
  const beside = running.size;
  running.set(child, { file, quiet: QUIET.includes(norm(file)) });
  const out = [];
  child.stdout.on('data', (c) => out.push(c));
  child.stderr.on('data', (c) => out.push(c));
  // A process that could not start: its error goes in its output, and 'close' follows with a code.
  child.on('error', (error) => out.push(Buffer.from(`run-tests: ${error.message}\n`)));
  child.on('close', (code, signal) => {
    const t1 = performance.now();
    running.delete(child);
    spans.push([t0, t1]);
    const text = Buffer.concat(out).toString('utf8').replace(REPORTERS_WARNING, '');
    console.log(`\n# ${norm(file)}: ${seconds(t1 - t0)} s${kind === 'extra' ? `, an extra beside ${beside}` : ''}${code === 0 ? '' : `, exit ${code ?? signal}`}`);
    process.stdout.write(text.endsWith('\n') || text === '' ? text : `${text}\n`);
    if (code !== 0) {
      status = code || 1;
      failedFiles.push(norm(file));
      // A process that died without a failed test in its report (a crash, a signal, an exit code of
      // its own) is a failure all the same, as `node --test` counted it.
      const report = existsSync(tap) ? readFileSync(tap, 'utf8') : '';
      if (!/^# (?:fail|cancelled) [1-9]/m.test(report)) crashed.push(norm(file));
    }
    schedule();
  });
  if (kind === 'extra') extras.push(norm(file));
}

/** Starts what may start now: the base number, then extras while the cores are idle. */
function schedule() {
  for (;;) {
    if (queue.length === 0) break;
    const now = performance.now();
    const kind = admission.admit(now, { running: running.size, quietRunning: [...running.values()].some((r) => r.quiet) });
    if (kind === null) break;
    const o = { ready: isReady, quiet: (f) => QUIET.includes(norm(f)), share: shareOf, running: [...running.values()].map((r) => r.file), cores, base };
    const i = pickNext(queue, kind, { ...o, rule: pickRule });
    if (i === -1) break;
    const first = pickNext(queue, kind, { ...o, rule: 'order' });
    if (i !== first) {
      startedEarly++;
      const load = o.running.reduce((sum, f) => sum + shareOf(f), 0);
      console.log(`run-tests: ${norm(queue[i])} (${shareOf(queue[i]).toFixed(2)} of a core alone) starts before ${norm(queue[first])} (${shareOf(queue[first]).toFixed(2)}), beside files of ${load.toFixed(2)} cores`);
    }
    const [file] = queue.splice(i, 1);
    if (kind === 'extra') console.log(`run-tests: ${norm(file)} starts as an extra (${running.size} running, at least ${admission.idleThroughout(now)?.toFixed(2)} cores idle throughout the last ${admission.windowMs / 1000} s)`);
    startFile(file, kind);
    admission.started(now);
  }
  if (buildFailedFor.size > 0) {
    // What needs the part of dist/ that failed to build cannot run: counted as failed, not dropped.
    for (const f of queue.filter((q) => buildFailedFor.has(distNeed(q)))) {
      queue.splice(queue.indexOf(f), 1);
      failedFiles.push(norm(f));
      crashed.push(norm(f));
      status = 1;
    }
  }
  if (queue.length === 0 && running.size === 0) finished();
}

// The CPU samples: every 500 ms, the idle share of all cores since the last sample. Summed for the
// closing lines: the cores' idle time over the run, and how much of it came after the last file
// started (the tail, when nothing is left to start beside the files still running).
let lastCpus = cpus();
let lastSample = performance.now();
const idleTime = { all: 0, tail: 0, measured: 0 };
const sampler = setInterval(() => {
  const now = performance.now();
  const next = cpus();
  const { ms, idleCores } = idleBetween(lastCpus, next);
  admission.sample(now, now - lastSample, idleCores);
  idleTime.all += (idleCores * ms) / 1000;
  idleTime.measured += ms / 1000;
  if (queue.length === 0) idleTime.tail += (idleCores * ms) / 1000;
  lastCpus = next;
  lastSample = now;
  schedule();
}, 500);
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    for (const child of running.keys()) child.kill(signal);
    rmSync(work, { recursive: true, force: true });
    rmSync(bundleDir, { recursive: true, force: true });
    process.exit(signal === 'SIGINT' ? 130 : 143);
  });
}
builtSome = schedule;
build.then(schedule);
schedule();
await allDone;
await build;
clearInterval(sampler);
const ended = performance.now();

// Where the time went: the slowest files (the time in their top-level tests), then the wall time.
// Each file has a times file of its own, so the lines' file names are not needed: run directly, the
// reporter names the source-mapped file of each test's definition, so a file whose tests are made by
// a helper (the model files' pathTests) has a line for the helper too; summed into the test file.
const perFile = timeFiles
  .map(({ path, file }) => {
    const lines = (existsSync(path) ? readFileSync(path, 'utf8').split('\n') : []).map((line) => /^(\d+) (\d+) /.exec(line)).filter((m) => m !== null);
    return { ms: lines.reduce((sum, m) => sum + Number(m[1]), 0), tests: lines.reduce((sum, m) => sum + Number(m[2]), 0), file: norm(file), lines: lines.length };
  })
  .filter((f) => f.lines > 0)
  .sort((a, b) => b.ms - a.ms);
const { mean, max } = concurrencyOf(spans);
if (perFile.length > 0) {
  const inTests = perFile.reduce((sum, f) => sum + f.ms, 0);
  console.log(`\nslowest test files (time in their tests; ${(inTests / 1000).toFixed(0)} s over ${perFile.length} files):`);
  for (const f of perFile.slice(0, 12)) console.log(`  ${(f.ms / 1000).toFixed(1).padStart(6)} s  ${String(f.tests).padStart(5)} tests  ${f.file}`);
}
// One line for every log: how many files ran beside the base number, and how many ran at once.
console.log(`run-tests: ${extras.length} of ${spans.length} ${withTypecheck ? 'jobs (the test files and the type check)' : 'files'} ran as extras on idle cores, ${startedEarly} started before their turn to fill the cores; at once: ${mean.toFixed(2)} on average, ${max} at most (base ${base})`);
console.log(`wall time ${((ended - started) / 1000).toFixed(0)} s (the build and the bundling included)`);
// What the wall time could not use: idle core-seconds, from the samples above (every process on the
// machine counts, the suite's or not; the bundling before the first sample is not in it).
if (idleTime.measured > 0) {
  console.log(`idle cores: ${idleTime.all.toFixed(0)} core-seconds of ${(idleTime.measured * cores).toFixed(0)} (${((100 * idleTime.all) / (idleTime.measured * cores)).toFixed(0)} %), ${idleTime.tail.toFixed(0)} of them after the last file started`);
}
// One plain closing line for whoever reads the log.
const summaries = taps.map((tap) => (existsSync(tap) ? readFileSync(tap, 'utf8') : ''));
const count = (name) => summaries.reduce((sum, text) => sum + Number(new RegExp(`^# ${name} (\\d+)$`, 'm').exec(text)?.[1] ?? 0), 0);
if (failedFiles.length > 0) console.log(`failed files: ${failedFiles.join(', ')}${crashed.length > 0 ? ` (with no failed test in their report: ${crashed.join(', ')})` : ''}`);
console.log(`${count('pass')} passed, ${count('fail') + count('cancelled') + crashed.length} failed, ${count('skipped')} skipped`);
rmSync(work, { recursive: true, force: true });
rmSync(bundleDir, { recursive: true, force: true });
const buildDir = join('test', '.build');
for (const f of existsSync(buildDir) ? readdirSync(buildDir) : []) if (f.includes(`-run-${runId}.mjs`)) rmSync(join(buildDir, f), { force: true });
process.exit(status);
