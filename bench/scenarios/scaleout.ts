/**
 * Scale-out: what `--workers 2 --redis` gains or costs against one
 * process, all started as users start them (`ws-supervisor server`, logs
 * silent). Three servers:
 *
 *   one process        --workers 1                 broadcasts stay in-process
 *   one process+redis  --workers 1 --redis URL     same, plus the Redis adapter's publish
 *   2 workers+redis    --workers 2 --redis URL     node:cluster; a broadcast crosses to the
 *                                                  other worker through Redis pub/sub
 *
 * Per server, on a fresh start:
 *   (b) connection capacity: open C connections, 200 handshakes at a time
 *       ("connect rate", connections/s from the first handshake to the last
 *       open), then the RSS of every server process (primary + workers, from
 *       /proc; Redis not included) and its growth per connection; each of the C
 *       then sends one request and must get its own reply;
 *   (a) broadcast fan-out at each level (same total receivers whatever the
 *       server, about half on each worker): time from the send until the LAST
 *       receiver has the push, p50 and p99 over the broadcasts, and the server
 *       CPU (all processes) per broadcast.
 *
 *   node --import tsx bench/scenarios/scaleout.ts [--quick] [--rounds 3]
 *        [--levels 1000,2000] [--broadcasts 20] [--connections 10000]
 *
 * The load generator is pinned to CPU 1; the servers are not pinned (two
 * workers on one core would measure nothing), so on a 2-core machine the
 * second worker and Redis share CPU 1 with the load generator.
 * Integrity: every connection opened and got its own reply; every receiver
 * got every broadcast exactly once.
 *
 * --quick: 1000 connections, 200 and 400 receivers, 10 broadcasts, 1 round.
 * Needs redis-server (bench/lib/redis-server.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  alternatingRounds,
  closeAll,
  connectClient,
  connectMany,
  finishScenario,
  percentile,
  pinSelf,
  procStats,
  Recorder,
  REPO_DIR,
  scenarioArgs,
  sleep,
  type BenchClient,
} from '../lib/harness.ts';
import { startRedisServer, type RedisServer } from '../lib/redis-server.ts';
import { compiledEntry } from '../lib/compile.ts';
import { BROADCAST_PUSH, timeBroadcasts } from '../lib/broadcast-timing.ts';

const common = scenarioArgs();
const { values } = parseArgs({
  args: common.rest,
  options: { levels: { type: 'string' }, broadcasts: { type: 'string' }, connections: { type: 'string' } },
});
const QUICK = common.quick;
const LEVELS = (values.levels ?? (QUICK ? '200,400' : '1000,2000')).split(',').map(Number);
const BROADCASTS = Number(values.broadcasts ?? (QUICK ? 10 : 20));
const CONNECTIONS = Number(values.connections ?? (QUICK ? 1000 : 10_000));
const ROUNDS = common.rounds;
const TIMEOUT_MS = QUICK ? 5_000 : 15_000;
const label = (n: number): string => (n % 1000 === 0 ? `${n / 1000}k` : String(n));
const WARM = /^\{"command":"broadcast","someOtherThing":"w(\d+)"\}$/;
const REPLY = /^\{"requestID":(\d+),"success":true/;

type Variant = 'one process' | 'one process+redis' | '2 workers+redis';
const VARIANTS: Variant[] = ['one process', 'one process+redis', '2 workers+redis'];

pinSelf(1);

// ---------------------------------------------------------------------------
// The CLI server

interface CliServer {
  system: 'supervisor';
  /** ws://127.0.0.1:PORT/server */
  url: string;
  base: string;
  child: ChildProcess;
  /** The primary (or the single process) and every worker. */
  pids(): number[];
  workers: number;
  stop(): Promise<void>;
}

async function startCli(variant: Variant, redis: RedisServer): Promise<CliServer> {
  const workers = variant === '2 workers+redis' ? 2 : 1;
  const args = [compiledEntry('../src/cli/main.ts'), 'server', '--address', '127.0.0.1:0', '--log-level', 'silent', '--max-connections', '18000', '--max-connections-per-address', '18000', '--max-pending-per-address', '1024', '--workers', String(workers)];
  if (variant !== 'one process') args.push('--redis', redis.url);
  const child = spawn(process.execPath, args, { cwd: REPO_DIR, env: { ...process.env, NODE_ENV: 'production' }, stdio: ['ignore', 'pipe', 'pipe'] });
  const kill = (): void => void child.kill('SIGKILL');
  process.once('exit', kill);
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${variant}: not listening within 30 s: ${out} ${err}`)), 30_000);
    const early = (code: number | null): void => reject(new Error(`${variant}: exited ${code}: ${err}`));
    child.once('exit', early);
    let listening = false;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = listening ? null : /ws-supervisor: listening on http:\/\/127\.0\.0\.1:(\d+)\//.exec(out);
      if (m) {
        listening = true;
        clearTimeout(timer);
        child.off('exit', early);
        resolve(Number(m[1]));
      }
    });
  });
  const base = `http://127.0.0.1:${port}`;
  const server: CliServer = {
    system: 'supervisor',
    url: `ws://127.0.0.1:${port}/server`,
    base,
    child,
    workers,
    pids: () => (workers === 1 ? [child.pid!] : [child.pid!, ...[...out.matchAll(/worker \d+ \(pid (\d+)\) ready/g)].map((m) => Number(m[1]))]),
    async stop() {
      process.off('exit', kill);
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM'); // a drain: the adapter says goodbye to Redis
      const timer = setTimeout(kill, 10_000);
      await gone;
      clearTimeout(timer);
    },
  };
  // Every worker's adapter is up (subscribed) before anything is measured.
  if (variant !== 'one process') await healthyWorkers(base, workers);
  return server;
}

function get(url: string): Promise<{ status: number; worker: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (s: string) => (body += s));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, worker: String(res.headers['x-worker'] ?? '1'), body }));
    });
    req.on('error', reject);
  });
}

/** Polls /healthz (a new TCP connection each time, so the workers take turns) until every worker says ok. */
async function healthyWorkers(base: string, workers: number, timeoutMs = 15_000): Promise<void> {
  const ok = new Set<string>();
  const deadline = Date.now() + timeoutMs;
  while (ok.size < workers) {
    const r = await get(`${base}/healthz`);
    if (r.status === 200 && r.body === 'ok\n') ok.add(r.worker);
    if (Date.now() > deadline) throw new Error(`workers not all healthy within ${timeoutMs} ms: ${r.status} ${r.body}`);
    if (ok.size < workers) await sleep(50);
  }
}

const rssOf = (pids: number[]): number => pids.reduce((sum, pid) => sum + procStats(pid).rss, 0);
const cpuOf = (pids: number[]): number => pids.reduce((sum, pid) => sum + procStats(pid).cpuUs, 0);

// ---------------------------------------------------------------------------
// (b) connection capacity

async function capacity(variant: Variant, server: CliServer, rec: Recorder): Promise<string[]> {
  const problems: string[] = [];
  const before = rssOf(server.pids());
  const t0 = performance.now();
  let clients: BenchClient[] = [];
  try {
    clients = await connectMany(server, CONNECTIONS, { batch: 200 });
  } catch (err) {
    problems.push(`${variant}: connecting ${CONNECTIONS} failed: ${(err as Error).message}`);
    return problems;
  }
  const seconds = (performance.now() - t0) / 1000;
  await sleep(500);
  const after = rssOf(server.pids());
  // Every connection is served: each sends one request and must get its own reply.
  let replies = 0;
  let wrong = 0;
  const all = new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), TIMEOUT_MS * 2);
    clients.forEach((c, i) =>
      c.onMessage((text) => {
        const m = REPLY.exec(text);
        if (!m || Number(m[1]) !== i + 1) wrong++;
        else if (++replies === clients.length) {
          clearTimeout(timer);
          resolve(true);
        }
      }),
    );
  });
  clients.forEach((c, i) => c.send(`{"requestID":${i + 1},"command":"c${i + 1}"}`));
  if (!(await all)) problems.push(`${variant}: ${replies} of ${clients.length} connections answered`);
  if (wrong) problems.push(`${variant}: ${wrong} wrong replies`);
  const at = label(CONNECTIONS);
  rec.add(variant, `connect rate @${at}`, 'conn/s', CONNECTIONS / seconds);
  rec.add(variant, `server RSS @${at}`, 'MB', after / 1e6);
  rec.add(variant, `RSS growth per connection @${at}`, 'KiB', (after - before) / CONNECTIONS / 1024);
  console.log(`${variant.padEnd(18)} ${at} connections in ${seconds.toFixed(2)} s (${(CONNECTIONS / seconds).toFixed(0)}/s), RSS ${(after / 1e6).toFixed(0)} MB (+${((after - before) / CONNECTIONS / 1024).toFixed(1)} KiB/conn)`);
  await closeAll(clients);
  await sleep(500);
  return problems;
}

// ---------------------------------------------------------------------------
// (a) broadcast fan-out (as bench/scenarios/broadcast.ts, plus a warm-up per level)

async function fanOut(variant: Variant, server: CliServer, rec: Recorder): Promise<string[]> {
  const problems: string[] = [];
  const receivers: BenchClient[] = [];
  const sender = await connectClient(server);
  try {
    let replyFor = 0;
    let badReplies = 0;
    sender.onMessage((text) => {
      const m = REPLY.exec(text);
      if (m) {
        if (Number(m[1]) !== replyFor) badReplies++;
        replyFor = -1;
      } else if (!BROADCAST_PUSH.test(text) && !WARM.test(text)) badReplies++;
    });
    let k = 0;
    const line: string[] = [];
    for (const n of LEVELS) {
      receivers.push(...(await connectMany(server, n - receivers.length, { batch: 200 })));
      // Warm-up: one broadcast every receiver must get (connections registered, subscriptions live).
      let warmed = 0;
      const warm = new Promise<boolean>((resolve) => {
        const t = setTimeout(() => resolve(false), TIMEOUT_MS);
        for (const r of receivers) {
          let seen = false;
          r.onMessage((text) => {
            if (!seen && WARM.test(text)) {
              seen = true;
              if (++warmed === receivers.length) {
                clearTimeout(t);
                resolve(true);
              }
            }
          });
        }
      });
      replyFor = ++k;
      sender.send(`{"requestID":${k},"command":"broadcast","someOtherThing":"w${k}"}`);
      if (!(await warm)) {
        problems.push(`${variant} @${label(n)}: the warm-up broadcast reached ${warmed} of ${receivers.length}`);
        break;
      }
      await sleep(100);

      const cpu0 = cpuOf(server.pids());
      const { times, missing, duplicated, strays, timedOut } = await timeBroadcasts({
        receivers,
        count: BROADCASTS,
        timeoutMs: TIMEOUT_MS,
        base: k,
        send: () => {
          replyFor = ++k;
          sender.send(`{"requestID":${k},"command":"broadcast","someOtherThing":"b${k}"}`);
        },
      });
      // Includes the helper's 200 ms wait for late duplicates: an idle server, next to nothing.
      const cpuMs = (cpuOf(server.pids()) - cpu0) / 1000 / Math.max(1, times.length);
      if (timedOut) problems.push(`${variant} @${label(n)}: ${timedOut}`);
      if (missing || duplicated || strays) problems.push(`${variant} @${label(n)}: ${missing} missing, ${duplicated} duplicated, ${strays} unexpected deliveries`);
      rec.add(variant, `broadcast to all @${label(n)} p50`, 'ms', percentile(times, 50));
      rec.add(variant, `broadcast to all @${label(n)} p99`, 'ms', percentile(times, 99));
      rec.add(variant, `server CPU per broadcast @${label(n)}`, 'ms', cpuMs);
      line.push(`${label(n)}: p50 ${percentile(times, 50).toFixed(1)} ms p99 ${percentile(times, 99).toFixed(1)} ms CPU ${cpuMs.toFixed(1)} ms`);
    }
    if (badReplies) problems.push(`${variant}: ${badReplies} wrong or unexpected replies to the sender`);
    console.log(`${variant.padEnd(18)} ${line.join('  |  ')}`);
  } finally {
    await closeAll([sender, ...receivers]);
  }
  return problems;
}

// ---------------------------------------------------------------------------

const started = Date.now();
const rec = new Recorder();
const problems: string[] = [];
const redis = await startRedisServer();
try {
  for (const { system: variant } of alternatingRounds(ROUNDS, VARIANTS, true)) {
    const server = await startCli(variant, redis);
    try {
      problems.push(...(await capacity(variant, server, rec)));
      problems.push(...(await fanOut(variant, server, rec)));
    } finally {
      await server.stop();
    }
  }
} finally {
  await redis.stop();
}

const rows = rec.toRows();
const med = (system: Variant, metric: string): number => rows.find((r) => r.system === system && r.metric === metric)?.median ?? NaN;
const notes: string[] = [];
const vs = (metric: string, what: string): void => {
  const one = med('one process', metric);
  const two = med('2 workers+redis', metric);
  if (Number.isFinite(one) && Number.isFinite(two)) notes.push(`${what}: 2 workers+redis / one process = ${(two / one).toFixed(2)}×`);
};
vs(`connect rate @${label(CONNECTIONS)}`, `connect rate @${label(CONNECTIONS)}`);
vs(`server RSS @${label(CONNECTIONS)}`, `server RSS @${label(CONNECTIONS)}`);
for (const n of LEVELS) {
  vs(`broadcast to all @${label(n)} p50`, `broadcast to all @${label(n)} p50`);
  vs(`server CPU per broadcast @${label(n)}`, `server CPU per broadcast @${label(n)}`);
}
notes.push(
  'servers are started as users start them (ws-supervisor server, --log-level silent) and are not pinned; the load generator is pinned to CPU 1, so on a 2-core machine the second worker and redis-server share CPU 1 with it',
  'server RSS and CPU sum the primary and every worker (redis-server not included); in a cluster the primary accepts every connection and hands it to a worker (node:cluster round-robin)',
);
const result = {
  rounds: ROUNDS,
  rows,
  ratios: [],
  integrity: {
    ok: problems.length === 0,
    details:
      problems.length === 0
        ? `${CONNECTIONS} connections per server each got its own reply; ${BROADCASTS} broadcasts at each level (${LEVELS.join(', ')} receivers): every receiver got every broadcast exactly once; the sender got the right reply to each`
        : problems.join('; '),
  },
  notes,
  params: {
    servers: VARIANTS,
    connections: CONNECTIONS,
    levels: LEVELS,
    broadcasts: BROADCASTS,
    quick: QUICK,
    durationSeconds: (Date.now() - started) / 1000,
  },
};
finishScenario('scaleout', QUICK, started, result);
// The redis-server and CLI children are gone; stray handles (none expected) must not hold the exit.
process.exit(process.exitCode ?? 0);
