// The runner's tables about the test files (scripts/run-tests.mjs), in a module of their own so that
// the schedule simulator (scripts/simulate-schedule.mjs) replays the runner's own order and
// test/run-tests.scheduler.test.ts checks that every file they name exists.

/** The queue's name for the type check (`npm test` = `run-tests.mjs --typecheck`). */
export const TYPECHECK = 'npm run typecheck';

/** A path with forward slashes, as the tables name the files. */
export const norm = (f) => f.split('\\').join('/');

// The slowest files first, so that the long ones do not start last; the rest in path order. (Under
// `node --test`, which sorts the files it is given by path, this order held only through the
// bundles' names; the scheduler starts the files in this order itself, TEST_TSX=1 too.) The
// order is each file's time alone, longest first, bundled (`node scripts/time-tests.mjs`, every file
// of at least 7 s; measured one after another at load 2-12, 2026-12-06 06:58-07:10 UTC, docs/testing.md,
// "The suite's CPU"; test/server/slow-consumer.test.ts a little earlier than its time alone: its windows
// grow with the measured pace, so beside two other files it takes 2-3 times as long).
// A model of the run from those times puts the path-order tail within a few seconds of the ideal
// longest-first order, so a kept record of the last run's times would not pay for itself; re-rank
// here when a file's time changes. The runner's pick (scripts/test-scheduler.mjs, pickNext) may start
// a later file first when this one would leave the cores idle (ALONE below).
export const SLOW_FIRST = [
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

/** A file's place in SLOW_FIRST, or after them all. */
export const rank = (f) => {
  const i = SLOW_FIRST.indexOf(norm(f));
  return i === -1 ? SLOW_FIRST.length : i;
};

/**
 * The runner's queue: SLOW_FIRST, then the rest in the order given (path order), and with
 * `typecheck` the type check after the files of SLOW_FIRST (CPU for one core, ~7 s: it never delays
 * the start of a long file, and the pick below moves it forward when the cores would idle).
 */
export function runOrder(files, { typecheck = false } = {}) {
  const queue = files.map((f, i) => [f, i]).sort((a, b) => rank(a[0]) - rank(b[0]) || a[1] - b[1]).map(([f]) => f);
  if (typecheck) queue.splice(queue.filter((f) => rank(f) < SLOW_FIRST.length).length, 0, TYPECHECK);
  return queue;
}

/**
 * Files whose bounds are about latency, a fair share of the CPU or a benchmark's ratios: never started
 * as an extra, and no extra starts while one runs. The probers (over-budget, fairness, overload) bound
 * a p90 that four files at once broke (docs/testing.md); slow-consumer bounds its readers' latency; the
 * bench smoke tests run a client and a server flat out and assert their ratios.
 */
export const QUIET = [
  'test/server/over-budget.test.ts',
  'test/server/fairness.test.ts',
  'test/cli/overload.test.ts',
  'test/server/slow-consumer.test.ts',
  'test/bench.smoke.test.ts',
  'test/bench.sessions.smoke.test.ts',
];

/**
 * Files that need dist/, and how much of it: the pack test packs all of it; the demo server serves the
 * browser bundle from dist/browser/ to the three that request it (`/ws-supervisor-client.js`: directly,
 * or through www/index.html in Chromium). Found by searching test/ for `dist`, `ws-supervisor-client`
 * and imports of the package by its name (test/docs.snippets maps those to src/ for tsc). The other
 * files start while the build still runs.
 */
export const NEEDS_DIST = new Map([
  ['test/pack.test.ts', 'all'],
  ['test/cli/server.test.ts', 'browser'],
  ['test/client/browser.test.ts', 'browser'],
  ['test/interop/browser.test.ts', 'browser'],
]);

/**
 * Each file alone: [file, wall s, CPU s], measured one after another on the 2-core machine (2026-12-06,
 * the pass of 13:53-13:59 UTC, load 0.6-2.3, after the eleventh session's changes to the files; `CI=true node scripts/time-tests.mjs --json=…`: the bundle run as the
 * runner runs it, the CPU user + system of its process and every child it waited for, redis-server,
 * CLI nodes, Chromium). CPU / wall is the share of a core a file keeps busy while it runs: 0.32 for
 * test/server/sessions.nodes.test.ts (it waits on leases and timers), 1.4 for test/pack.test.ts (npm
 * and tsc beside it). The runner's pick uses the share (shareOf); scripts/simulate-schedule.mjs uses
 * both. The numbers drift as the files change: re-measure with
 * `CI=true node scripts/time-tests.mjs --json=times.json` on a quiet machine and paste each file's
 * `seconds` and `cpu`. A file not listed counts as CPU-bound (DEFAULT_SHARE); a listed file that no
 * longer exists fails test/run-tests.scheduler.test.ts. The type check: `npm run typecheck`,
 * single-threaded tsc, 6.8-7.3 s of CPU (docs/testing.md, "CPU out of the heaviest files").
 */
export const ALONE = new Map(
  [
    [TYPECHECK, 7.0, 7.0],
    ['test/adapter/memory-session-arena.test.ts', 0.5, 0.6],
    ['test/adapter/redis-close.test.ts', 0.6, 0.7],
    ['test/adapter/redis-history.test.ts', 0.3, 0.4],
    ['test/adapter/redis-session-fanout.test.ts', 2.7, 2.6],
    ['test/adapter/redis-session-store.test.ts', 16.0, 9.3],
    ['test/adapter/redis.test.ts', 36.4, 21.4],
    ['test/adapter/session-store.test.ts', 1.2, 1.5],
    ['test/base/optional-peer.test.ts', 0.4, 0.4],
    ['test/bench.compile.test.ts', 0.3, 0.3],
    ['test/bench.sessions.smoke.test.ts', 11.1, 8.9],
    ['test/bench.smoke.test.ts', 9.7, 8.6],
    ['test/build.test.ts', 0.4, 0.4],
    ['test/cli/args.test.ts', 1.5, 2.0],
    ['test/cli/client.test.ts', 3.8, 2.9],
    ['test/cli/cluster.test.ts', 7.2, 7.4],
    ['test/cli/demo-server.test.ts', 4.7, 4.4],
    ['test/cli/limits.test.ts', 1.8, 1.9],
    ['test/cli/logs.test.ts', 2.7, 1.7],
    ['test/cli/overload.test.ts', 10.7, 7.3],
    ['test/cli/restart-intensity.test.ts', 0.2, 0.2],
    ['test/cli/server.test.ts', 6.7, 5.5],
    ['test/cli/sessions-redis.test.ts', 32.5, 16.6],
    ['test/client/browser.test.ts', 12.0, 8.7],
    ['test/client/client.test.ts', 2.8, 0.7],
    ['test/client/client.violations.test.ts', 0.9, 0.8],
    ['test/client/node.test.ts', 7.2, 0.9],
    ['test/conformance/client-paths.test.ts', 3.7, 3.1],
    ['test/conformance/server-paths.test.ts', 10.0, 3.1],
    ['test/docs.links.test.ts', 0.4, 0.5],
    ['test/docs.snippets.test.ts', 3.4, 3.9],
    ['test/docs.test.ts', 0.2, 0.2],
    ['test/interop/browser.test.ts', 10.8, 8.8],
    ['test/interop/go.test.ts', 5.8, 3.6],
    ['test/interop/python.test.ts', 3.4, 2.2],
    ['test/layout.test.ts', 0.3, 0.2],
    ['test/machines/backoff.test.ts', 0.3, 0.4],
    ['test/machines/client.machine.test.ts', 4.8, 6.3],
    ['test/machines/close-codes.test.ts', 0.2, 0.2],
    ['test/machines/connection.machine.test.ts', 4.3, 6.0],
    ['test/machines/gap-reader.machine.test.ts', 1.0, 1.7],
    ['test/machines/pending-request.machine.test.ts', 1.1, 1.6],
    ['test/machines/session.machine.test.ts', 1.0, 1.5],
    ['test/observe/dashboard.test.ts', 11.7, 5.0],
    ['test/observe/diagram.test.ts', 0.9, 1.2],
    ['test/observe/inspector.test.ts', 2.0, 1.6],
    ['test/pack.test.ts', 13.8, 16.5],
    ['test/package.test.ts', 2.1, 2.3],
    ['test/protocol/codec.test.ts', 0.8, 1.0],
    ['test/protocol/session.test.ts', 0.4, 0.4],
    ['test/protocol/topics.test.ts', 0.3, 0.3],
    ['test/run-tests.scheduler.test.ts', 0.3, 0.3],
    ['test/server/admission.test.ts', 1.7, 1.1],
    ['test/server/bad-frames.test.ts', 0.7, 0.8],
    ['test/server/close-bounded.test.ts', 3.7, 0.6],
    ['test/server/control-rate.test.ts', 1.2, 0.5],
    ['test/server/fairness.test.ts', 19.5, 6.5],
    ['test/server/fd-limit.test.ts', 0.7, 0.8],
    ['test/server/hub.fanout.test.ts', 1.3, 1.6],
    ['test/server/hub.topics.test.ts', 1.2, 0.9],
    ['test/server/log-summary.test.ts', 0.9, 0.5],
    ['test/server/metrics.test.ts', 0.7, 0.6],
    ['test/server/over-budget.test.ts', 11.9, 2.0],
    ['test/server/per-address.test.ts', 1.5, 1.0],
    ['test/server/runner.test.ts', 1.3, 0.9],
    ['test/server/sessions.failures.test.ts', 0.7, 0.7],
    ['test/server/sessions.fanout.test.ts', 11.7, 5.9],
    ['test/server/sessions.localfanout.test.ts', 0.9, 0.6],
    ['test/server/sessions.nodes.test.ts', 17.6, 5.7],
    ['test/server/sessions.requests.test.ts', 0.9, 0.8],
    ['test/server/sessions.soak.test.ts', 1.1, 1.0],
    ['test/server/sessions.sync.test.ts', 2.8, 0.6],
    ['test/server/sessions.test.ts', 7.5, 1.5],
    ['test/server/slow-consumer.test.ts', 8.3, 1.8],
    ['test/server/supervisor.lifecycle.test.ts', 7.3, 2.6],
    ['test/server/supervisor.noserver.test.ts', 0.4, 0.5],
    ['test/server/timer-wheel.test.ts', 0.7, 0.2],
    ['test/server/writer.cork.test.ts', 0.8, 0.7],
    ['test/server/ws-internals.test.ts', 0.9, 0.8],
  ].map(([file, wall, cpu]) => [file, { wall, cpu }]),
);

/**
 * The share of a file not in ALONE: most short files are their process start and imports, CPU (of the
 * 39 files under 1.5 s alone, 35 kept 0.6-1.6 of a core busy).
 */
export const DEFAULT_SHARE = 1;

/** The cores a file keeps busy while it runs alone (CPU / wall), from ALONE. */
export function shareOf(file) {
  const t = ALONE.get(norm(file));
  return t === undefined || t.wall <= 0 ? DEFAULT_SHARE : t.cpu / t.wall;
}
