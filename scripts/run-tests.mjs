#!/usr/bin/env node
// Runs every test/**/*.test.ts with Node's test runner, each file bundled to plain JavaScript first
// (scripts/bundle-tests.mjs; TEST_TSX=1 runs the .ts files through tsx instead, as before).
// Node 20's `node --test` with no file arguments finds no .ts files and exits 0
// with "# tests 0" (checked with Node 20.20), so the files are listed here explicitly, and an
// empty list is an error rather than a silent pass.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { spawnSync } from 'node:child_process';
import { bundleTests } from './bundle-tests.mjs';

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

const filter = process.argv.slice(2);
let files = walk('test').sort();
if (filter.length > 0) files = files.filter((f) => filter.some((x) => f.includes(x)));
if (files.length === 0) {
  console.error('run-tests: no test files found under test/');
  process.exit(1);
}
// The slowest files first, so that the long ones do not start last; the rest in path order.
// Node 20's `node --test` sorts the files it is given by path, so this order holds only through
// the bundles' names (scripts/bundle-tests.mjs puts each under its position); with TEST_TSX=1 the
// files run in path order (as every run did before the bundles: this list had no effect). The
// order is each file's time alone, longest first, bundled (`node scripts/time-tests.mjs`, every file
// of at least 7 s; measured one after another at load 2-12, 2026-12-06 06:58-07:10 UTC, docs/testing.md,
// "The suite's CPU"; test/server/slow-consumer.test.ts a little earlier than its time alone: its windows
// grow with the measured pace, so beside two other files it takes 2-3 times as long).
// A model of the run from those times puts the path-order tail within a few seconds of the ideal
// longest-first order, so a kept record of the last run's times would not pay for itself; re-rank
// here when a file's time changes.
const SLOW_FIRST = [
  'test/cli/sessions-redis.test.ts',
  'test/adapter/redis.test.ts',
  'test/cli/server.test.ts',
  'test/client/browser.test.ts',
  'test/pack.test.ts',
  'test/cli/cluster.test.ts',
  'test/interop/browser.test.ts',
  'test/adapter/redis-session-store.test.ts',
  'test/bench.sessions.smoke.test.ts',
  'test/observe/dashboard.test.ts',
  'test/server/slow-consumer.test.ts',
  'test/bench.smoke.test.ts',
  'test/cli/overload.test.ts',
  'test/server/sessions.fanout.test.ts',
  'test/server/fairness.test.ts',
  'test/cli/demo-server.test.ts',
  'test/server/over-budget.test.ts',
  'test/server/sessions.nodes.test.ts',
  'test/observe/inspector.test.ts',
  'test/server/sessions.test.ts',
  'test/machines/client.machine.test.ts',
  'test/machines/connection.machine.test.ts',
  'test/server/supervisor.lifecycle.test.ts',
  'test/conformance/server-paths.test.ts',
  'test/cli/client.test.ts',
  'test/interop/go.test.ts',
  'test/client/node.test.ts',
  'test/cli/limits.test.ts',
  'test/cli/args.test.ts',
  'test/interop/python.test.ts',
  'test/machines/session.machine.test.ts',
  'test/docs.snippets.test.ts',
];
const rank = (f) => {
  const i = SLOW_FIRST.indexOf(f.split('\\').join('/'));
  return i === -1 ? SLOW_FIRST.length : i;
};
files = files.map((f, i) => [f, i]).sort((a, b) => rank(a[0]) - rank(b[0]) || a[1] - b[1]).map(([f]) => f);
// How many files at once (TEST_CONCURRENCY overrides): one per core, plus one. The files spend
// much of their time waiting (process starts, Redis restarts, timeouts), so a core-count of files
// keeps only ~1.5 of 2 cores busy. Measured on the 2-core machine, idle: 255 s at 2 files at once,
// 211 s at 3 (docs/testing.md, "Wall time"), and 3 passes under a busy loop on every core (5
// runnable CPU hogs at most on 2 cores). A fourth file when the cores were idle at the start was
// tried and dropped: its first clean-clone run failed a prober's latency bound
// (test/server/over-budget.test.ts) with the server's process on 24% of a core, the four files
// starving each other, for 195 s of wall time. The files that spawn processes share one start bound
// through this directory (test/helpers/cli.ts: one process starting per core across the whole
// suite), so more files at once do not start more processes at once.
const cores = availableParallelism();
const concurrency = Math.max(1, Number(process.env.TEST_CONCURRENCY ?? cores + 1));
console.log(`run-tests: ${concurrency} files at once (${process.env.TEST_CONCURRENCY === undefined ? `${cores} cores, plus one` : 'TEST_CONCURRENCY'})`);

// `npm pack` runs the build (`prepare`), which first deletes dist/ while other files serve the
// browser bundle from it. So the runner builds dist/ once here, before any file (3.7 s on this
// machine), and tells test/pack.test.ts to pack that fresh build without running the build again
// (`--ignore-scripts`): the pack test then runs beside the others instead of alone first (it took
// ~37 s alone, the whole machine waiting on npm). A file whose process must run alone goes in ALONE.
const ALONE = [];
const alone = files.filter((f) => ALONE.includes(f.split('\\').join('/')));
const together = files.filter((f) => !alone.includes(f));
const work = mkdtempSync(join(tmpdir(), 'ws-supervisor-tests-'));
mkdirSync(join(work, 'start-slots'));
// The run's name: the files of this run share the CLI's bundle (test/helpers/compiled.ts).
const runId = String(process.pid);
const env = { ...process.env, WS_SUPERVISOR_TEST_START_SLOTS: join(work, 'start-slots'), WS_SUPERVISOR_TEST_RUN: runId };
if (files.some((f) => f.split('\\').join('/') === 'test/pack.test.ts')) {
  const build = spawnSync(process.platform === 'win32' ? 'npm.cmd' : 'npm', ['run', 'build'], { stdio: 'inherit' });
  if (build.status !== 0) {
    console.error(`run-tests: \`npm run build\` failed (exit ${build.status ?? build.signal}): the pack test and the tests that serve dist/ need it`);
    process.exit(build.status || 1);
  }
  env.WS_SUPERVISOR_TEST_DIST_BUILT = '1';
}
// Each test process loads its file as one bundle instead of loading tsx and compiling every module
// through its loader thread: 0.3–0.5 s less CPU per file (docs/testing.md, "Wall time"). The bundles
// keep each module's import.meta.url and map stack traces to the .ts sources.
const started = performance.now();
const viaTsx = process.env.TEST_TSX === '1';
const bundleDir = resolve('test', '.build', `suite-${process.pid}`);
/** What the test processes run: the bundle of each file, or the file itself through tsx. */
let runnable = new Map(files.map((f) => [f, f]));
/** A file the runner reports (a bundle's path or a .ts path) as its test file. */
let sourceOf = (file) => file;
if (!viaTsx) {
  try {
    const bundles = await bundleTests(files, bundleDir);
    runnable = new Map([...bundles].map(([bundle, file]) => [file, bundle]));
    sourceOf = (file) => bundles.get(resolve(file)) ?? file;
  } catch (error) {
    console.error(`run-tests: bundling the test files failed: ${error instanceof Error ? error.message : error}`);
    rmSync(work, { recursive: true, force: true });
    process.exit(1);
  }
  console.log(`run-tests: ${files.length} test files bundled in ${((performance.now() - started) / 1000).toFixed(1)} s (in the wall time below)`);
}
const taps = [];
const timeFiles = [];
let status = 0;
for (const [group, n] of [[alone, 1], [together, concurrency]]) {
  if (group.length === 0) continue;
  const tap = join(work, `results-${taps.length}.tap`);
  const times = join(work, `times-${taps.length}.txt`);
  taps.push(tap);
  timeFiles.push(times);
  const r = spawnSync(
    process.execPath,
    [
      ...(viaTsx ? ['--import', 'tsx'] : ['--enable-source-maps']), '--test', `--test-concurrency=${n}`,
      '--test-reporter=spec', '--test-reporter-destination=stdout',
      '--test-reporter=tap', `--test-reporter-destination=${tap}`,
      `--test-reporter=${new URL('./test-file-times.mjs', import.meta.url).href}`, `--test-reporter-destination=${times}`,
      ...group.map((f) => runnable.get(f)),
    ],
    { stdio: 'inherit', env },
  );
  if (r.status !== 0) status = r.status ?? 1;
}
// Where the time went: the slowest files (the time in their top-level tests), then the wall time.
const perFile = timeFiles
  .flatMap((f) => (existsSync(f) ? readFileSync(f, 'utf8').split('\n') : []))
  .map((line) => /^(\d+) (\d+) (.+)$/.exec(line))
  .filter((m) => m !== null)
  .map((m) => ({ ms: Number(m[1]), tests: Number(m[2]), file: relative(process.cwd(), sourceOf(m[3])) }))
  .sort((a, b) => b.ms - a.ms);
if (perFile.length > 0) {
  const inTests = perFile.reduce((sum, f) => sum + f.ms, 0);
  console.log(`\nslowest test files (time in their tests; ${(inTests / 1000).toFixed(0)} s over ${perFile.length} files, ${concurrency} at once):`);
  for (const f of perFile.slice(0, 12)) console.log(`  ${(f.ms / 1000).toFixed(1).padStart(6)} s  ${String(f.tests).padStart(5)} tests  ${f.file}`);
}
console.log(`wall time ${((performance.now() - started) / 1000).toFixed(0)} s`);
// One plain closing line for whoever reads the log.
const summaries = taps.map((tap) => (existsSync(tap) ? readFileSync(tap, 'utf8') : ''));
const count = (name) => summaries.reduce((sum, text) => sum + Number(new RegExp(`^# ${name} (\\d+)$`, 'm').exec(text)?.[1] ?? 0), 0);
console.log(`${count('pass')} passed, ${count('fail') + count('cancelled')} failed, ${count('skipped')} skipped`);
rmSync(work, { recursive: true, force: true });
rmSync(bundleDir, { recursive: true, force: true });
const buildDir = join('test', '.build');
for (const f of existsSync(buildDir) ? readdirSync(buildDir) : []) if (f.includes(`-run-${runId}.mjs`)) rmSync(join(buildDir, f), { force: true });
process.exit(status);
