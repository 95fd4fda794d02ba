/**
 * Scenario `reconnect` — the mass reconnect (docs/sessions.md, docs/scaling.md):
 * N clients with sessions (2,000, then 10,000, each level on a fresh server)
 * receive a steady stream of broadcasts; every client sends a request, and at
 * once the server destroys every TCP socket (no close frame: what a crashed
 * load balancer or a network cut does). Every client reconnects with the Node
 * client's backoff (full jitter, first delay under 500 ms) and resumes. The
 * broadcasts go on meanwhile, so the detached sessions buffer them and the
 * resumes replay them. They come from the server itself (a feed, `feed <ms>`
 * in bench/servers.ts), not from a client: a client sender is a session that
 * resumes in the same storm, and its broadcast requests, held while its own
 * resume waited in the store's queue, then ran as one burst (seen at 10k: 15
 * broadcasts, 150,000 appends, at once, and 42 more refused by the store's
 * bound), which is a burst test, not the steady stream this one measures.
 *
 *   node --import tsx bench/scenarios/reconnect.ts [--quick] [--rounds 3] [--levels 2000,10000]
 *        [--stores memory,redis] [--rate 2] [--appends 4000] [--jitter 500] [--steady 3] [--resume-window 120000]
 *        [--kill-levels 2000] [--kill-tick 2000]
 *
 * Reported per store and level: time from the cut until every session has
 * resumed (and its replay arrived), the per-client p50/p99, messages replayed,
 * requests re-sent, the server's CPU over the storm (% of a core, µs per
 * resume), the load generator's own CPU, and the store's memory per detached
 * session (every client then gone for good: the in-memory store's heap after
 * GC, or Redis's used_memory, against the same reading before any session).
 *
 * Stores: `memory` (the supervisor's default) and `redis` (createRedisSessionStore
 * on a redis-server started here, persistence off). One server process; the
 * cut is the server destroying its sockets.
 *
 * Then the worker kill (`--kill-levels`, default 2000; with the Redis store):
 * `ws-supervisor server --workers 2 --sessions --redis URL` (the CLI, as users
 * run it), N clients each joined to a topic of its own and sending a publish
 * to it every `--kill-tick` ms (its reply and its push come back: both
 * directions), one worker SIGKILLed under that load. Its clients see 1006 and
 * reconnect with the same backoff, to the survivor or to the worker the
 * primary restarts. Reported: time from the kill until every client of the
 * killed worker has resumed, per-client p50/p99, requests re-sent, and the
 * server's CPU (primary and workers, the restarted one included) and Redis's
 * over that time. Integrity: every reply and every push exactly once and in
 * order, every resume `resumed: true`.
 *
 * Integrity (each client): every broadcast exactly once and in order across
 * the cut (seq and payload), its request before the cut answered exactly
 * once, every resume `resumed: true`.
 *
 * --quick: 500 sessions, memory store, 1 round.
 */
import { parseArgs } from 'node:util';
import { spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import { Redis } from 'ioredis';
import { backoffDelay } from '../../machines/backoff.ts';
import {
  alternatingRounds,
  finishScenario,
  hasTaskset,
  percentile,
  pinSelf,
  Recorder,
  scenarioArgs,
  selfCpuUs,
  sleep,
  startServer,
  waitForConnections,
  type ServerHandle,
} from '../lib/harness.ts';
import { connectSessionMany, SessionClient, type AttachInfo } from '../lib/session-client.ts';
import { startRedisServer, type RedisServer } from '../lib/redis-server.ts';
import { startCli, type CliServer } from '../lib/cli-server.ts';
import { childrenOf, procCpuUs } from '../lib/proc.ts';

const common = scenarioArgs();
const { values } = parseArgs({
  args: common.rest,
  options: {
    levels: { type: 'string' },
    stores: { type: 'string' },
    rate: { type: 'string' },
    jitter: { type: 'string' },
    steady: { type: 'string' },
    'resume-window': { type: 'string' },
    appends: { type: 'string' },
    'kill-levels': { type: 'string' },
    'kill-tick': { type: 'string' },
  },
});
const QUICK = common.quick;
const ROUNDS = common.rounds;
const LEVELS = (values.levels ?? (QUICK ? '500' : '2000,10000')).split(',').map(Number);
const redisFound = spawnSync(process.env.REDIS_SERVER ?? 'redis-server', ['--version']).status === 0;
type Store = 'memory' | 'redis';
const STORES = (values.stores ?? (QUICK || !redisFound ? 'memory' : 'memory,redis')).split(',') as Store[];
for (const s of STORES) if (s !== 'memory' && s !== 'redis') throw new Error(`unknown store ${s} (memory | redis)`);
/** Broadcasts per second, before, during and after the storm. */
const RATE = Number(values.rate ?? 2);
/**
 * Session appends a second the stream may cost (broadcasts a second × sessions): above it the broadcast rate of a
 * level is lowered to fit. 4,000: 2 broadcasts a second at 2k. At 10k, 2 a second is 20,000 appends a second, and
 * the stream alone then took 99% of the Redis-store server's core before the cut (the 10k run of 2026-12-05 13:02):
 * no core left for the storm this scenario measures, whose backlog then grows past any bound. Pass a larger
 * --appends to measure that.
 */
const APPENDS = Number(values.appends ?? 4000);
const rateAt = (n: number): number => Math.min(RATE, APPENDS / n);
/** Ceiling of the first reconnect delay, ms: the Node client's backoff.initialDelay. */
const JITTER = Number(values.jitter ?? 500);
const STEADY_S = Number(values.steady ?? (QUICK ? 1 : 3));
/** The sessions' resume window, ms (the product default, 120 000, unless given): a storm longer than it expires sessions. */
const RESUME_WINDOW = values['resume-window'] !== undefined ? Number(values['resume-window']) : undefined;
const STORM_TIMEOUT_MS = Math.max(120_000, RESUME_WINDOW ?? 0);
/** Client counts of the worker-kill run (empty: not run). Only with the Redis store: sessions across workers need it. */
const KILL_LEVELS = (values['kill-levels'] ?? (QUICK || !STORES.includes('redis') ? '' : '2000')).split(',').filter(Boolean).map(Number);
/** Each client's publish period in the worker-kill run, ms (as the 2,000-client CLI test's tick). */
const KILL_TICK_MS = Number(values['kill-tick'] ?? 2000);
const STORE_NAMES: Record<Store, string> = { memory: 'memory store', redis: 'Redis store' };
const label = (n: number): string => (n % 1000 === 0 ? `${n / 1000}k` : String(n));
const PUSH = /^\{"command":"broadcast","someOtherThing":"b(\d+)"\}$/;
const REPLY = /^\{"requestID":(\d+),"success":true/;

pinSelf(1);

let redis = null as RedisServer | null;
let admin = null as Redis | null;
/** Scripts Redis ran (EVALSHA + EVAL) and the CPU it used, seconds. */
const redisCounters = async (): Promise<{ scripts: number; cpuS: number }> => {
  const stats = await admin!.info('commandstats');
  const cpu = await admin!.info('cpu');
  let scripts = 0;
  for (const m of stats.matchAll(/^cmdstat_(?:evalsha|eval):calls=(\d+)/gm)) scripts += Number(m[1]);
  const user = Number(/^used_cpu_user:([\d.]+)/m.exec(cpu)![1]);
  const sys = Number(/^used_cpu_sys:([\d.]+)/m.exec(cpu)![1]);
  return { scripts, cpuS: user + sys };
};
/** The store operations a resume itself makes (the rest of the storm: appends of the broadcasts, the client's ack, its re-sent request). */
const RESUME_OPS = new Set(['epoch', 'verify', 'readAfter', 'attach', 'resume', 'create']);
const usedMemory = async (): Promise<number> => Number(/^used_memory:(\d+)/m.exec(await admin!.info('memory'))![1]);

/** A receiver's view: the broadcasts (k in order), its one request's replies, its resume. */
interface Tracker {
  nextK: number;
  outOfOrder: number;
  replies: number;
  /** ms from the cut to `attached`, and to the last replayed frame. */
  attachedAt: number;
  replayedAt: number;
  /** Replayed frames still expected. */
  replayLeft: number;
  info: AttachInfo | null;
  attempts: number;
  /** ms from the cut until this client saw its connection close. */
  closedAt: number;
}

async function runOnce(store: Store, n: number, rec: Recorder): Promise<string[]> {
  const name = STORE_NAMES[store];
  const problems: string[] = [];
  const at = `${name} @${label(n)}`;
  if (store === 'redis' && !redis) {
    redis = await startRedisServer();
    // Started from this process, Redis inherits its pin to the load generator's CPU, where 10k client sockets starve it
    // (seen: 10 s of scripts in 2.7 s of Redis CPU). Redis is the store's server, not load: the scheduler places it.
    if (hasTaskset) spawnSync('taskset', ['-acp', `0-${cpus().length - 1}`, String(redis.pid)]);
    admin = new Redis(redis.url);
  }
  const memBefore = store === 'redis' ? await usedMemory() : 0;
  const server: ServerHandle = await startServer('supervisor', { sessions: store === 'redis' ? redis!.url : 'memory', ...(RESUME_WINDOW !== undefined ? { resumeWindow: RESUME_WINDOW } : {}) });
  const clients: SessionClient[] = [];
  let feeding = false;
  let stopped = false;
  let watch: NodeJS.Timeout | null = null;
  try {
    await sleep(300);
    const heapBefore = (await server.gc()).heapUsed;
    clients.push(...(await connectSessionMany(server.url, n, { batch: 250 })));
    await waitForConnections(server, n, 60_000);

    const trackers: Tracker[] = clients.map(() => ({ nextK: 1, outOfOrder: 0, replies: 0, attachedAt: NaN, replayedAt: NaN, replayLeft: 0, info: null, attempts: 0, closedAt: NaN }));
    let cutAt = Infinity;
    clients.forEach((c, i) => {
      const t = trackers[i]!;
      c.onMessage((text) => {
        const m = PUSH.exec(text);
        if (m) {
          if (Number(m[1]) !== t.nextK) {
            t.outOfOrder++;
            if (process.env.BENCH_DEBUG && i < 3) console.log(`client ${i}: expected b${t.nextK}, got b${m[1]} (seq ${clients[i]!.lastSeq}, ${(performance.now() - cutAt).toFixed(0)} ms after the cut)`);
          }
          t.nextK = Number(m[1]) + 1;
        } else if (REPLY.test(text)) t.replies++;
        else t.outOfOrder++;
        if (t.replayLeft > 0 && --t.replayLeft === 0) t.replayedAt = performance.now() - cutAt;
      });
    });
    // The broadcast stream: numbered, rateAt(n) per second, from the server's own feed.
    const fed = await server.command(`feed ${Math.round(1000 / rateAt(n))}`);
    if (!/^feed \d+$/.test(fed)) throw new Error(`server: expected "feed <k>", got ${fed}`);
    feeding = true;
    watch = process.env.BENCH_DEBUG && store === 'redis'
      ? setInterval(() => void server.stats().then((st) => console.log(`t=${((performance.now() - cutAt) / 1000).toFixed(1)} s rss ${(st.rss / 1e6).toFixed(0)} MB`, JSON.stringify(st.sessions?.storeOps)), () => undefined), 2000)
      : null;
    // The steady stream's own cost, measured over the second half of the steady phase (the first half warms up).
    await sleep((STEADY_S * 1000) / 2);
    const q0 = await server.stats();
    const w0 = performance.now();
    await sleep((STEADY_S * 1000) / 2);
    const q1 = await server.stats();
    const steadyShare = (q1.cpuUs - q0.cpuUs) / 1e6 / ((performance.now() - w0) / 1000);

    let resumed = 0;
    let failed = 0;
    let recut = 0;
    const recutWhy = new Map<string, number>();
    const reasons = new Map<string, number>();
    const allResumed = new Promise<void>((resolve) => {
      const reconnect = (c: SessionClient, t: Tracker, attempt: number): void => {
        if (stopped) return;
        const delay = backoffDelay(attempt, { initialDelay: JITTER, maxDelay: 30_000, multiplier: 2 }, Math.random());
        setTimeout(() => {
          if (stopped) return; // the run is over (a failed one leaves clients still retrying: they must not hold the process open)
          t.attempts++;
          c.connect(true).then(
            (info) => {
              const first = t.info === null;
              t.info = info;
              if (first) t.attachedAt = performance.now() - cutAt;
              t.replayLeft = info.replay;
              if (info.replay === 0 && first) t.replayedAt = t.attachedAt;
              if (!info.resumed) {
                failed++;
                reasons.set(info.reason ?? '?', (reasons.get(info.reason ?? '?') ?? 0) + 1);
              }
              // Each client counts once, at its first attach after the cut (a later cut of the same client is counted apart).
              if (first && ++resumed === n) resolve();
            },
            () => reconnect(c, t, attempt + 1),
          );
        }, delay);
      };
      clients.forEach((c, i) =>
        c.onClose(() => {
          const t = trackers[i]!;
          if (Number.isNaN(t.closedAt)) t.closedAt = performance.now() - cutAt;
          else {
            // Attached again after the cut, and lost again: by which close?
            recut++;
            const why = `${c.lastClose?.code ?? '?'} ${c.lastClose?.reason ?? ''}`.trim();
            recutWhy.set(why, (recutWhy.get(why) ?? 0) + 1);
          }
          reconnect(c, t, 0);
        }),
      );
    });
    // Every client sends a request, and the cut follows at once: some are in flight, some answered, some replies lost with the socket.
    clients.forEach((c, i) => c.send(`{"requestID":${1_000_000 + i},"command":"before the cut"}`));
    const s0 = await server.stats();
    const r0 = store === 'redis' ? await redisCounters() : null;
    const l0 = selfCpuUs();
    cutAt = performance.now();
    const cut = await server.command('cut');
    if (!/^cut \d+$/.test(cut)) throw new Error(`server: expected "cut <n>", got ${cut}`);

    let stormTimer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([allResumed.then(() => false), new Promise<boolean>((r) => (stormTimer = setTimeout(() => r(true), STORM_TIMEOUT_MS)))]);
    clearTimeout(stormTimer); // else it holds the process open for up to 2 minutes after the result
    const allAttachedMs = performance.now() - cutAt;
    // Replays land right after `attached`: wait for the last one.
    const replayDeadline = Date.now() + 30_000;
    while (trackers.some((t) => t.replayLeft > 0) && Date.now() < replayDeadline) await sleep(20);
    const stormMs = Math.max(allAttachedMs, ...trackers.map((t) => (Number.isFinite(t.replayedAt) ? t.replayedAt : 0)));
    const s1 = await server.stats();
    const l1 = selfCpuUs();
    const r1 = store === 'redis' ? await redisCounters() : null;
    if (timedOut) problems.push(`${at}: ${resumed} of ${n} sessions came back within ${STORM_TIMEOUT_MS / 1000} s`);
    rec.add(name, `connections lost again after resuming @${label(n)}`, 'count', recut);

    // A second of broadcasts after the storm, then stop and let the last ones arrive.
    await sleep(1000);
    const stoppedAt = await server.command('feed stop');
    feeding = false;
    const lastK = Number(/^feed (\d+)$/.exec(stoppedAt)?.[1] ?? NaN);
    if (!Number.isFinite(lastK)) throw new Error(`server: expected "feed <k>", got ${stoppedAt}`);
    const settle = Date.now() + 15_000;
    while (trackers.some((t) => t.nextK <= lastK) && Date.now() < settle) await sleep(50);

    if (watch) clearInterval(watch);
    const attachTimes = trackers.map((t) => t.attachedAt).filter(Number.isFinite);
    const replayed = trackers.reduce((s, t) => s + (t.info?.replay ?? 0), 0);
    const resent = trackers.reduce((s, t) => s + (t.info?.resent ?? 0), 0);
    const stormCpu = s1.cpuUs - s0.cpuUs;
    const stormWall = stormMs / 1000;
    rec.add(name, `time until all resumed @${label(n)}`, 'ms', allAttachedMs);
    rec.add(name, `time until all replays arrived @${label(n)}`, 'ms', stormMs);
    rec.add(name, `resume time p50 @${label(n)}`, 'ms', percentile(attachTimes, 50));
    rec.add(name, `resume time p99 @${label(n)}`, 'ms', percentile(attachTimes, 99));
    rec.add(name, `messages replayed @${label(n)}`, 'msgs', replayed);
    rec.add(name, `messages replayed per session @${label(n)}`, 'msgs', replayed / n);
    rec.add(name, `requests re-sent @${label(n)}`, 'reqs', resent);
    rec.add(name, `server CPU during the storm @${label(n)}`, '% core', (100 * stormCpu) / 1e6 / stormWall);
    rec.add(name, `server CPU before the cut (the stream alone) @${label(n)}`, '% core', 100 * steadyShare);
    rec.add(name, `server CPU per resume @${label(n)}`, 'µs', stormCpu / n);
    // What the storm costs beyond the broadcast stream that goes on meanwhile (at its steady rate).
    rec.add(name, `server CPU per resume, beyond the stream @${label(n)}`, 'µs', Math.max(0, stormCpu - steadyShare * 1e6 * stormWall) / n);
    rec.add(name, `load-generator CPU during the storm @${label(n)}`, '% core', (100 * (l1 - l0)) / 1e6 / stormWall);
    if (r0 && r1) {
      // What the storm cost Redis: its own CPU, and the scripts the store sent, by operation (the server's count).
      rec.add(name, `Redis CPU during the storm @${label(n)}`, '% core', (100 * (r1.cpuS - r0.cpuS)) / stormWall);
      rec.add(name, `Redis script calls (round trips) during the storm per resume @${label(n)}`, 'calls', (r1.scripts - r0.scripts) / n);
      const ops0 = s0.sessions?.storeOps ?? {};
      const ops1 = s1.sessions?.storeOps ?? {};
      const perResume = Object.keys(ops1)
        .map((op) => [op, ((ops1[op] ?? 0) - (ops0[op] ?? 0)) / n] as const)
        .filter(([op, v]) => v > 0 && op !== '(queued)')
        .sort((a, b) => b[1] - a[1]);
      const resumePath = perResume.filter(([op]) => RESUME_OPS.has(op)).reduce((sum, [, v]) => sum + v, 0);
      rec.add(name, `store operations of the resume itself @${label(n)}`, 'calls', resumePath);
      console.log(`${at}: store operations per resume during the storm: ${perResume.map(([op, v]) => `${op} ${v.toFixed(2)}`).join(', ')}; Redis ${((100 * (r1.cpuS - r0.cpuS)) / stormWall).toFixed(0)}% core`);
    }
    const closeTimes = trackers.map((t) => t.closedAt).filter(Number.isFinite);
    rec.add(name, `cut seen by the client p99 @${label(n)}`, 'ms', percentile(closeTimes, 99));
    if (process.env.BENCH_DEBUG) console.log({ closeP50: percentile(closeTimes, 50), closeP99: percentile(closeTimes, 99), attempts: trackers.map((t) => t.attempts).sort((a, b) => b - a).slice(0, 10) });
    rec.add(name, `reconnect attempts per session @${label(n)}`, 'count', trackers.reduce((s, t) => s + t.attempts, 0) / n);

    // Integrity, per client.
    let missing = 0;
    let outOfOrder = 0;
    let replyProblems = 0;
    let gaps = 0;
    let protocolErrors = 0;
    trackers.forEach((t, i) => {
      if (t.nextK !== lastK + 1) missing++;
      outOfOrder += t.outOfOrder;
      if (t.replies !== 1) replyProblems++;
      gaps += clients[i]!.counters.gaps;
      protocolErrors += clients[i]!.counters.protocolErrors;
    });
    if (recut) problems.push(`${at}: ${recut} resumed connections were closed again (${[...recutWhy].map(([w, c]) => `${c}× ${w}`).join(', ')})`);
    if (failed) problems.push(`${at}: ${failed} resumes failed (${[...reasons].map(([r, c]) => `${c}× ${r}`).join(', ')})`);
    if (missing) problems.push(`${at}: ${missing} clients did not get every broadcast up to ${lastK}`);
    if (outOfOrder) problems.push(`${at}: ${outOfOrder} broadcasts out of order or unexpected frames`);
    if (replyProblems) problems.push(`${at}: ${replyProblems} clients did not get exactly one reply to the request sent at the cut`);
    if (gaps || protocolErrors) problems.push(`${at}: ${gaps} seqs skipped, ${protocolErrors} frames outside the protocol`);

    // Every client gone for good: all N sessions detached, each holding what it had not acknowledged.
    for (const c of clients) c.onClose(() => undefined); // no reconnect now
    for (const c of clients) c.terminate();
    const detachDeadline = Date.now() + 30_000;
    let detached = 0;
    while (Date.now() < detachDeadline) {
      detached = (await server.stats()).sessions?.detached ?? 0;
      if (detached >= n) break;
      await sleep(100);
    }
    if (detached < n) problems.push(`${at}: ${detached} of ${n} sessions detached after the clients left`);
    else if (store === 'redis') rec.add(name, `store memory per detached session @${label(n)}`, 'KiB', ((await usedMemory()) - memBefore) / n / 1024);
    else rec.add(name, `store memory per detached session @${label(n)}`, 'KiB', ((await server.gc()).heapUsed - heapBefore) / n / 1024);

    console.log(
      `${at.padEnd(22)} all resumed in ${allAttachedMs.toFixed(0)} ms (replays in ${stormMs.toFixed(0)} ms; p50 ${percentile(attachTimes, 50).toFixed(0)} ms, p99 ${percentile(attachTimes, 99).toFixed(0)} ms); ` +
        `${replayed} replayed, ${resent} re-sent; server ${((100 * stormCpu) / 1e6 / stormWall).toFixed(0)}% core, ${(stormCpu / n).toFixed(0)} µs/resume; load ${((100 * (l1 - l0)) / 1e6 / stormWall).toFixed(0)}% core; ${lastK} broadcasts`,
    );
  } finally {
    stopped = true;
    if (watch) clearInterval(watch);
    if (feeding) await server.command('feed stop').catch(() => undefined);
    for (const c of clients) c.onClose(() => undefined);
    for (const c of clients) c.terminate();
    await server.stop();
    if (store === 'redis') await admin!.flushall();
  }
  return problems;
}




const PUBLISH_PUSH = /^\{"command":"publish","topic":"t(\d+)","someOtherThing":"p(\d+)"\}$/;

/** One client of the worker-kill run: what it sent and what came back. */
interface KillTracker {
  sent: number;
  /** Replies per request k (index k). */
  replies: number[];
  nextPush: number;
  pushProblems: number;
  closedAt: number;
  attachedAt: number;
  info: AttachInfo | null;
  attempts: number;
}

/**
 * The worker kill: the CLI with --workers 2 on the Redis store, N clients with
 * a steady stream of requests both ways, one worker SIGKILLed (docs/scaling.md,
 * "Mass reconnect after a worker is killed").
 */
async function runWorkerKill(n: number, rec: Recorder): Promise<string[]> {
  const name = 'Redis store, --workers 2, worker SIGKILL';
  const at = `${name} @${label(n)}`;
  const problems: string[] = [];
  if (!redis) {
    redis = await startRedisServer();
    if (hasTaskset) spawnSync('taskset', ['-acp', `0-${cpus().length - 1}`, String(redis.pid)]);
    admin = new Redis(redis.url);
  }
  const cli: CliServer = await startCli({
    workers: 2,
    redis: redis.url,
    args: ['--sessions', ...(RESUME_WINDOW !== undefined ? ['--resume-window', String(RESUME_WINDOW)] : [])],
    label: at,
  });
  const clients: SessionClient[] = [];
  let ticker: NodeJS.Timeout | null = null;
  let stopped = false;
  try {
    clients.push(...(await connectSessionMany(cli.url, n, { batch: 250 })));
    const trackers: KillTracker[] = clients.map(() => ({ sent: 0, replies: [], nextPush: 1, pushProblems: 0, closedAt: NaN, attachedAt: NaN, info: null, attempts: 0 }));
    clients.forEach((c, i) => {
      const t = trackers[i]!;
      c.onMessage((text) => {
        const push = PUBLISH_PUSH.exec(text);
        if (push) {
          if (Number(push[1]) !== i || Number(push[2]) !== t.nextPush) t.pushProblems++;
          t.nextPush = Number(push[2]) + 1;
          return;
        }
        const reply = REPLY.exec(text);
        if (reply) {
          const k = Number(reply[1]);
          t.replies[k] = (t.replies[k] ?? 0) + 1;
        } else t.pushProblems++;
      });
      // Its own topic: request 0 (its reply counted apart: k 0).
      c.send(`{"requestID":0,"command":"join","topic":"t${i}"}`);
    });
    await sleep(2000);
    // Each client publishes every KILL_TICK_MS, the clients spread evenly over the tick.
    const SLICE_MS = 20;
    const perSlice = Math.max(1, Math.ceil((n * SLICE_MS) / KILL_TICK_MS));
    let next = 0;
    ticker = setInterval(() => {
      for (let j = 0; j < perSlice; j++) {
        const i = next;
        next = (next + 1) % n;
        const t = trackers[i]!;
        const k = ++t.sent;
        clients[i]!.send(`{"requestID":${k},"command":"publish","topic":"t${i}","someOtherThing":"p${k}"}`);
      }
    }, SLICE_MS);
    await sleep(KILL_TICK_MS);
    const workers = childrenOf(cli.child.pid!);
    if (workers.length !== 2) throw new Error(`${at}: expected 2 workers under the primary, found ${workers.join(', ')}`);
    // The steady load's own cost (one tick), to set the storm's against.
    const serverCpu = (): number => [cli.child.pid!, ...workers].reduce((sum, pid) => sum + procCpuUs(pid), 0);
    const steady0 = serverCpu();
    const steadyW0 = performance.now();
    await sleep(KILL_TICK_MS);
    const steadyShare = (serverCpu() - steady0) / 1e6 / ((performance.now() - steadyW0) / 1000);

    const victim = workers[0]!;
    const cpuBefore = new Map([cli.child.pid!, ...workers].map((pid) => [pid, procCpuUs(pid)]));
    const r0 = await redisCounters();
    let killAt = performance.now();
    let affected = 0;
    let resumed = 0;
    let failed = 0;
    const reasons = new Map<string, number>();
    const allResumed = new Promise<void>((resolve) => {
      const reconnect = (c: SessionClient, t: KillTracker, attempt: number): void => {
        if (stopped) return;
        const delay = backoffDelay(attempt, { initialDelay: JITTER, maxDelay: 30_000, multiplier: 2 }, Math.random());
        setTimeout(() => {
          if (stopped) return;
          t.attempts++;
          c.connect(true).then(
            (info) => {
              const first = t.info === null;
              t.info = info;
              if (first) t.attachedAt = performance.now() - killAt;
              if (!info.resumed) {
                failed++;
                reasons.set(info.reason ?? '?', (reasons.get(info.reason ?? '?') ?? 0) + 1);
              }
              if (first) ++resumed;
              if (resumed === affected) resolve();
            },
            () => reconnect(c, t, attempt + 1),
          );
        }, delay);
      };
      clients.forEach((c, i) =>
        c.onClose(() => {
          const t = trackers[i]!;
          if (Number.isNaN(t.closedAt)) {
            t.closedAt = performance.now() - killAt;
            affected++;
          } else problems.push(`${at}: client ${i} lost its connection again after resuming (${c.lastClose?.code ?? '?'} ${c.lastClose?.reason ?? ''})`);
          reconnect(c, t, 0);
        }),
      );
    });
    killAt = performance.now();
    process.kill(victim, 'SIGKILL');
    // Its clients' closes come within milliseconds (the kernel resets its sockets); none for 2 s after: all seen.
    let lastAffected = -1;
    while (affected !== lastAffected) {
      lastAffected = affected;
      await sleep(2000);
    }
    let stormTimer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([allResumed.then(() => false), new Promise<boolean>((r) => (stormTimer = setTimeout(() => r(true), STORM_TIMEOUT_MS)))]);
    clearTimeout(stormTimer);
    const stormMs = Math.max(...trackers.map((t) => (Number.isFinite(t.attachedAt) ? t.attachedAt : 0)));
    const pidsAfter = [cli.child.pid!, ...childrenOf(cli.child.pid!), victim];
    const stormCpu = [...new Set(pidsAfter)].reduce((sum, pid) => sum + Math.max(0, procCpuUs(pid) - (cpuBefore.get(pid) ?? 0)), 0);
    const r1 = await redisCounters();
    // Read once every client of the killed worker is back (and no close came for 2 s): over that wall time.
    const cpuWallS = (performance.now() - killAt) / 1000;
    if (timedOut) problems.push(`${at}: ${resumed} of ${affected} clients of the killed worker resumed within ${STORM_TIMEOUT_MS / 1000} s`);
    if (failed) problems.push(`${at}: ${failed} resumes failed (${[...reasons].map(([r, c]) => `${c}× ${r}`).join(', ')})`);
    if (affected === 0 || affected === n) problems.push(`${at}: ${affected} of ${n} clients were on the killed worker (expected some, not all)`);

    // Two more ticks, then stop and let the last replies and pushes arrive.
    await sleep(2 * KILL_TICK_MS);
    clearInterval(ticker);
    ticker = null;
    const settle = Date.now() + 60_000;
    const complete = (t: KillTracker): boolean => t.nextPush > t.sent && t.replies.length > t.sent;
    while (trackers.some((t) => !complete(t)) && Date.now() < settle) await sleep(100);

    let missingReplies = 0;
    let duplicateReplies = 0;
    let missingPushes = 0;
    let pushProblems = 0;
    let gaps = 0;
    trackers.forEach((t, i) => {
      for (let k = 0; k <= t.sent; k++) {
        const r = t.replies[k] ?? 0;
        if (r === 0) missingReplies++;
        else if (r > 1) duplicateReplies += r - 1;
      }
      if (t.nextPush <= t.sent) missingPushes += t.sent - t.nextPush + 1;
      pushProblems += t.pushProblems;
      gaps += clients[i]!.counters.gaps + clients[i]!.counters.protocolErrors;
    });
    if (missingReplies || duplicateReplies) problems.push(`${at}: ${missingReplies} replies missing, ${duplicateReplies} duplicated`);
    if (missingPushes || pushProblems) problems.push(`${at}: ${missingPushes} pushes missing, ${pushProblems} out of order, duplicated or unexpected`);
    if (gaps) problems.push(`${at}: ${gaps} seqs skipped or frames outside the protocol`);

    const attachTimes = trackers.map((t) => t.attachedAt).filter(Number.isFinite);
    const resent = trackers.reduce((s2, t) => s2 + (t.info?.resent ?? 0), 0);
    const replayed = trackers.reduce((s2, t) => s2 + (t.info?.replay ?? 0), 0);
    rec.add(name, `clients on the killed worker @${label(n)}`, 'count', affected);
    rec.add(name, `time until all resumed @${label(n)}`, 'ms', stormMs);
    rec.add(name, `resume time p50 @${label(n)}`, 'ms', percentile(attachTimes, 50));
    rec.add(name, `resume time p99 @${label(n)}`, 'ms', percentile(attachTimes, 99));
    rec.add(name, `messages replayed @${label(n)}`, 'msgs', replayed);
    rec.add(name, `requests re-sent @${label(n)}`, 'reqs', resent);
    // A connection the primary hands to the worker being restarted fails until it listens: the backoff then decides.
    rec.add(name, `reconnect attempts per resumed client @${label(n)}`, 'count', trackers.reduce((s2, t) => s2 + t.attempts, 0) / Math.max(1, affected));
    rec.add(name, `server CPU from the kill until all resumed @${label(n)}`, '% core', (100 * stormCpu) / 1e6 / cpuWallS);
    rec.add(name, `server CPU before the kill (the steady load alone) @${label(n)}`, '% core', 100 * steadyShare);
    rec.add(name, `server CPU per resumed client @${label(n)}`, 'µs', stormCpu / Math.max(1, affected));
    rec.add(name, `Redis CPU from the kill until all resumed @${label(n)}`, '% core', (100 * (r1.cpuS - r0.cpuS)) / cpuWallS);
    console.log(
      `${at}: ${affected} of ${n} clients on the killed worker, all resumed in ${stormMs.toFixed(0)} ms (p50 ${percentile(attachTimes, 50).toFixed(0)} ms, p99 ${percentile(attachTimes, 99).toFixed(0)} ms); ` +
        `${replayed} replayed, ${resent} re-sent; server ${((100 * stormCpu) / 1e6 / cpuWallS).toFixed(0)}% core (steady ${(100 * steadyShare).toFixed(0)}%) over ${cpuWallS.toFixed(1)} s (${(stormCpu / 1e6).toFixed(2)} s CPU), Redis ${((100 * (r1.cpuS - r0.cpuS)) / cpuWallS).toFixed(0)}% core`,
    );
  } finally {
    stopped = true;
    if (ticker) clearInterval(ticker);
    for (const c of clients) c.onClose(() => undefined);
    for (const c of clients) c.terminate();
    await cli.stop();
    await admin!.flushall();
  }
  return problems;
}

const started = Date.now();
const rec = new Recorder();
const problems: string[] = [];
try {
  for (const n of LEVELS) {
    console.log(`--- ${label(n)} sessions`);
    for (const { system } of alternatingRounds(ROUNDS, STORES)) problems.push(...(await runOnce(system, n, rec)));
  }
  for (const n of KILL_LEVELS) {
    console.log(`--- worker SIGKILL, ${label(n)} sessions on --workers 2`);
    for (let r = 0; r < ROUNDS; r++) problems.push(...(await runWorkerKill(n, rec)));
  }
} finally {
  admin?.disconnect();
  await redis?.stop();
}
const names = STORES.map((s) => STORE_NAMES[s]);
const ratios = STORES.includes('redis') && STORES.includes('memory')
  ? LEVELS.flatMap((n) =>
      [`time until all resumed @${label(n)}`, `server CPU per resume @${label(n)}`].map((m) => rec.ratio(m, STORE_NAMES.redis, undefined, STORE_NAMES.memory)).filter((r) => r !== null),
    )
  : [];
const result = {
  rounds: ROUNDS,
  rows: rec.toRows(),
  ratios,
  integrity: {
    ok: problems.length === 0,
    details:
      problems.length === 0
        ? `every client of every level (${LEVELS.join(', ')}; ${names.join(', ')}) resumed (resumed: true), got every broadcast exactly once and in order across the cut, and exactly one reply to the request it sent at the cut; no seq skipped`
        : problems.join('; '),
  },
  notes: [
    `the cut: the server destroys every TCP socket at once (no close frame); clients reconnect after a full-jitter delay under ${JITTER} ms (the Node client's first backoff)`,
    `${LEVELS.map((n) => `${rateAt(n)} broadcasts per second @${label(n)}`).join(', ')} (at most ${RATE} a second, and at most ${APPENDS} session appends a second: at 10k sessions, 2 a second cost the Redis-store server 99% of its core before the cut, leaving none for the storm) to every session throughout (${STEADY_S} s before the cut, during the storm, 1 s after), from the server's own feed (not a client: a client sender resumes in the same storm, and its broadcasts held meanwhile then run as one burst); every client sends one request just before the cut`,
    'server CPU during the storm: the server process over the cut → last replay, broadcast stream included; "beyond the stream" subtracts the stream\'s cost at its rate before the cut; load generator: this process (all clients) over the same window',
    'store memory per detached session: every client gone, each session holding the messages it had not acknowledged (up to 31 plus the last second); in-memory store: the server heap after GC, minus before any session; Redis store: used_memory, minus before',
    ...(STORES.includes('redis') ? [] : [redisFound ? 'Redis store not run (--stores)' : 'Redis store not run: redis-server not found']),
    ...(KILL_LEVELS.length > 0
      ? [`worker SIGKILL (${KILL_LEVELS.map(label).join(', ')}): the CLI with --workers 2 --sessions --redis; each client publishes to its own topic every ${KILL_TICK_MS} ms (reply and push back); one worker SIGKILLed; "time until all resumed" runs from the kill to the last of its clients attached again; server CPU: primary and workers (the restarted one included) over that time, from /proc`]
      : ['worker SIGKILL not run (--kill-levels, or no Redis store)']),
    ...(STORES.includes('redis') ? ['redis-server: not pinned (the server is pinned to CPU 0, the load generator to CPU 1; Redis, the store\'s own server, runs where the scheduler puts it)'] : []),
  ],
  params: { steps: LEVELS, killLevels: KILL_LEVELS, killTickMs: KILL_TICK_MS, stores: names, resumeWindowMs: RESUME_WINDOW ?? 120_000, rate: RATE, appendsPerSecond: APPENDS, jitterMs: JITTER, steadySeconds: STEADY_S, quick: QUICK, durationSeconds: (Date.now() - started) / 1000 },
};
finishScenario('reconnect', QUICK, started, result);
