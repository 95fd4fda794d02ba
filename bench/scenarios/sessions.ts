/**
 * Scenario `sessions` — what sessions cost (docs/sessions.md): the same
 * ws-supervisor server with sessions off, and with sessions on and every
 * client opting in (`ws-session=1`, the session frames: a seq on every
 * server→client message, a cseq on every request, cumulative acks every 32),
 * side by side, in three parts:
 *
 *   reqres     N connections (1,000), one request in flight each: throughput,
 *              latency, server CPU per message (as bench/scenarios/reqres.ts)
 *   idle       RSS and heap per idle connection at 1k, 5k, 10k (as idle.ts)
 *   broadcast  time until every receiver has a broadcast, 1k and 5k receivers (as broadcast.ts),
 *              300 broadcasts per level and round: the p99 of 100 was the round's second-worst
 *              broadcast, and its ratio read 1.01× to 1.49× across four runs of trees that did not
 *              differ on that path (docs/performance.md, "The broadcast p99 of the sessions scenario")
 *
 *   node --import tsx bench/scenarios/sessions.ts [--quick] [--rounds 3] [--parts reqres,idle,broadcast]
 *        [--variants off,on,redis] [--connections 1000] [--seconds 5] [--warmup 1] [--levels 1000,5000,10000] [--receivers 1000,5000] [--broadcasts 300]
 *
 * Variants (rows are named by them):
 *   sessions off          the supervisor without the `sessions` option, plain clients
 *   sessions on           `sessions: {}` (the in-memory store), session clients (bench/lib/session-client.ts)
 *   sessions on (Redis)   the Redis session store (createRedisSessionStore) on a redis-server started here
 * Target: sessions on ≤ 1.15× sessions off on server CPU per message, RSS per
 * idle connection at 10k and broadcast p50/p99; throughput ≥ 1/1.15 = 0.87×.
 * The Redis store is reported against sessions off too, without a target
 * (its cost is Redis round trips: docs/scaling.md).
 *
 * Integrity: every reply matches its request (requestID), none lost or
 * duplicated (the broadcast sender's too, in whatever turn each comes); every receiver got every broadcast exactly once; on session
 * connections no seq skipped and no frame outside the protocol.
 *
 * --quick: reqres 50 connections × 2 s, idle 500 and 1,000, broadcast 200 receivers × 10; off and on; 1 round.
 */
import { parseArgs } from 'node:util';
import { spawnSync } from 'node:child_process';
import {
  alternatingRounds,
  closeAll,
  connectClient,
  connectMany,
  finishScenario,
  percentile,
  pinSelf,
  Recorder,
  scenarioArgs,
  selfCpuUs,
  sleep,
  startServer,
  waitForConnections,
  type BenchClient,
  type Ratio,
  type ServerHandle,
} from '../lib/harness.ts';
import { BROADCAST_PUSH, timeBroadcasts } from '../lib/broadcast-timing.ts';
import { ACK_DELAY_MS, ACK_EVERY, connectSessionMany, SessionClient } from '../lib/session-client.ts';
import { startRedisServer, type RedisServer } from '../lib/redis-server.ts';

const common = scenarioArgs();
const { values } = parseArgs({
  args: common.rest,
  options: {
    parts: { type: 'string' },
    variants: { type: 'string' },
    connections: { type: 'string' },
    seconds: { type: 'string' },
    warmup: { type: 'string' },
    levels: { type: 'string' },
    receivers: { type: 'string' },
    broadcasts: { type: 'string' },
  },
});
const QUICK = common.quick;
const ROUNDS = common.rounds;
const PARTS = (values.parts ?? 'reqres,idle,broadcast').split(',');
for (const p of PARTS) if (!['reqres', 'idle', 'broadcast'].includes(p)) throw new Error(`unknown part ${p} (reqres | idle | broadcast)`);

const VARIANT_NAMES = { off: 'sessions off', on: 'sessions on', redis: 'sessions on (Redis)' } as const;
type Variant = keyof typeof VARIANT_NAMES;
const redisFound = spawnSync(process.env.REDIS_SERVER ?? 'redis-server', ['--version']).status === 0;
const VARIANTS = (values.variants ?? (QUICK || !redisFound ? 'off,on' : 'off,on,redis')).split(',') as Variant[];
for (const v of VARIANTS) if (!(v in VARIANT_NAMES)) throw new Error(`unknown variant ${v} (off | on | redis)`);
if (!VARIANTS.includes('off')) throw new Error('--variants must include off: every ratio is against it');

const CONNECTIONS = Number(values.connections ?? (QUICK ? 50 : 1000));
const SECONDS = Number(values.seconds ?? (QUICK ? 2 : 5));
const WARMUP_S = Number(values.warmup ?? (QUICK ? 0.5 : 1));
const LEVELS = (values.levels ?? (QUICK ? '500,1000' : '1000,5000,10000')).split(',').map(Number);
const RECEIVERS = (values.receivers ?? (QUICK ? '200' : '1000,5000')).split(',').map(Number);
const BCAST_WARMUP = QUICK ? 1 : 3;
const BROADCASTS = BCAST_WARMUP + Number(values.broadcasts ?? (QUICK ? 10 : 300));
const KiB = 1024;
const label = (n: number): string => (n % 1000 === 0 ? `${n / 1000}k` : String(n));
const OFF = VARIANT_NAMES.off;

pinSelf(1);

let redis = null as RedisServer | null;
async function start(v: Variant): Promise<ServerHandle> {
  if (v === 'off') return startServer('supervisor');
  if (v === 'on') return startServer('supervisor', { sessions: 'memory' });
  redis ??= await startRedisServer();
  return startServer('supervisor', { sessions: redis.url });
}

async function clientsFor(v: Variant, server: ServerHandle, n: number, batch = 200): Promise<BenchClient[]> {
  return v === 'off' ? connectMany(server, n, { batch }) : connectSessionMany(server.url, n, { batch });
}

/** Seq gaps and protocol errors seen by session clients (none for plain ones). */
function sessionProblems(name: string, clients: BenchClient[]): string[] {
  let gaps = 0;
  let errors = 0;
  for (const c of clients) {
    if (c instanceof SessionClient) {
      gaps += c.counters.gaps;
      errors += c.counters.protocolErrors;
    }
  }
  const out: string[] = [];
  if (gaps) out.push(`${name}: ${gaps} seqs skipped (messages lost)`);
  if (errors) out.push(`${name}: ${errors} frames outside the session protocol`);
  return out;
}

// ---------------------------------------------------------------------------
// reqres

const REPLY_ID = /^\{"requestID":(-?\d+),"success":(true|false)/;

async function reqres(v: Variant, rec: Recorder, notes: string[]): Promise<{ problems: string[]; answered: number }> {
  const name = VARIANT_NAMES[v];
  const server = await start(v);
  const problems: string[] = [];
  const integrity = { mismatched: 0, duplicates: 0, lost: 0, errors: 0, answered: 0 };
  let clients: BenchClient[] = [];
  try {
    try {
      clients = await clientsFor(v, server, CONNECTIONS);
    } catch (err) {
      problems.push(`reqres ${name}: a client could not connect: ${(err as Error).message}`);
      return { problems, answered: 0 };
    }
    await waitForConnections(server, CONNECTIONS);
    let running = true;
    let measuring = false;
    let replies = 0;
    const latencies: number[] = [];
    const outstanding = new Array<number>(CONNECTIONS).fill(0);
    const sentAt = new Float64Array(CONNECTIONS);
    clients.forEach((client, i) => {
      let id = 0;
      const sendNext = (): void => {
        if (!running) return;
        outstanding[i] = ++id;
        sentAt[i] = performance.now();
        client.send(`{"requestID":${id},"command":"bench ${i}","someOtherThing":"x"}`);
      };
      client.onMessage((text) => {
        const now = performance.now();
        const m = REPLY_ID.exec(text);
        if (m?.[2] !== 'true') integrity.errors++;
        if (outstanding[i] === 0) integrity.duplicates++;
        else if ((m ? Number(m[1]) : NaN) !== outstanding[i]) integrity.mismatched++;
        else {
          integrity.answered++;
          outstanding[i] = 0;
          if (measuring) {
            replies++;
            latencies.push(now - sentAt[i]!);
          }
          sendNext();
        }
      });
      sendNext();
    });
    await sleep(WARMUP_S * 1000);
    const s0 = await server.stats();
    const l0 = selfCpuUs();
    const t0 = performance.now();
    measuring = true;
    await sleep(SECONDS * 1000);
    measuring = false;
    const s1 = await server.stats();
    const l1 = selfCpuUs();
    const wall = (performance.now() - t0) / 1000;
    running = false;
    const deadline = Date.now() + 5000;
    while (outstanding.some((x) => x !== 0) && Date.now() < deadline) await sleep(20);
    await sleep(50);
    integrity.lost = outstanding.filter((x) => x !== 0).length;
    const serverCpu = s1.cpuUs - s0.cpuUs;
    const loadShare = (l1 - l0) / 1e6 / wall;
    rec.add(name, 'throughput', 'msg/s', replies / wall);
    rec.add(name, 'latency p50', 'ms', percentile(latencies, 50));
    rec.add(name, 'latency p99', 'ms', percentile(latencies, 99));
    rec.add(name, 'server CPU per message', 'µs', serverCpu / replies);
    rec.add(name, 'server core share', '%', (100 * serverCpu) / 1e6 / wall);
    rec.add(name, 'load-generator CPU per message', 'µs', (l1 - l0) / replies);
    rec.add(name, 'load-generator core share', '%', 100 * loadShare);
    if (loadShare > 0.9) notes.push(`reqres ${name}: the load generator used ${(100 * loadShare).toFixed(0)}% of its core: throughput is bounded by the client; server CPU per message is the comparable figure`);
    console.log(
      `reqres ${name.padEnd(20)} ${(replies / wall).toFixed(0).padStart(7)} msg/s  p50 ${percentile(latencies, 50).toFixed(2)} ms  p99 ${percentile(latencies, 99).toFixed(2)} ms  server ${(serverCpu / replies).toFixed(2)} µs/msg  load core ${(100 * loadShare).toFixed(0)}%`,
    );
    const bad = (['mismatched', 'duplicates', 'lost', 'errors'] as const).filter((k) => integrity[k] > 0).map((k) => `${k} ${integrity[k]}`);
    if (bad.length) problems.push(`reqres ${name}: ${bad.join(', ')}`);
    if (integrity.answered === 0) problems.push(`reqres ${name}: no replies at all`);
    problems.push(...sessionProblems(`reqres ${name}`, clients));
  } finally {
    await closeAll(clients);
    await server.stop();
  }
  return { problems, answered: integrity.answered };
}

// ---------------------------------------------------------------------------
// idle

async function idle(v: Variant, rec: Recorder): Promise<string[]> {
  const name = VARIANT_NAMES[v];
  const problems: string[] = [];
  const server = await start(v);
  const clients: BenchClient[] = [];
  let closed = 0;
  try {
    await sleep(QUICK ? 300 : 1000);
    const base = await server.gc();
    let prev = { n: 0, rss: base.rss, heap: base.heapUsed };
    const line: string[] = [];
    for (const n of LEVELS) {
      let more: BenchClient[];
      try {
        more = await clientsFor(v, server, n - clients.length, 250);
      } catch (err) {
        // A session that could not attach (e.g. `session store failed`, 1011) is a failure of the run, reported, not a crash.
        problems.push(`idle ${name} @${label(n)}: a client could not connect: ${(err as Error).message}`);
        break;
      }
      for (const c of more) c.onClose(() => closed++);
      clients.push(...more);
      await waitForConnections(server, n, 60_000);
      await sleep(QUICK ? 300 : 1000);
      const s = await server.gc();
      rec.add(name, `RSS per idle connection @${label(n)}`, 'KiB', (s.rss - base.rss) / n / KiB);
      rec.add(name, `heap per idle connection @${label(n)}`, 'KiB', (s.heapUsed - base.heapUsed) / n / KiB);
      if (n === LEVELS[LEVELS.length - 1] && prev.n > 0) {
        rec.add(name, `RSS marginal ${label(prev.n)}→${label(n)}`, 'KiB', (s.rss - prev.rss) / (n - prev.n) / KiB);
      }
      line.push(`${label(n)}: ${((s.rss - base.rss) / n / KiB).toFixed(1)} KiB RSS, ${((s.heapUsed - base.heapUsed) / n / KiB).toFixed(1)} KiB heap`);
      prev = { n, rss: s.rss, heap: s.heapUsed };
    }
    if (closed > 0) problems.push(`idle ${name}: ${closed} idle connections closed during the run`);
    problems.push(...sessionProblems(`idle ${name}`, clients));
    console.log(`idle   ${name.padEnd(20)} ${line.join('  |  ')}`);
  } finally {
    await closeAll(clients);
    await server.stop();
  }
  return problems;
}

// ---------------------------------------------------------------------------
// broadcast

const BCAST_REPLY = /^\{"requestID":(\d+),"success":true/;

async function broadcast(v: Variant, rec: Recorder): Promise<string[]> {
  const name = VARIANT_NAMES[v];
  const problems: string[] = [];
  const server = await start(v);
  const receivers: BenchClient[] = [];
  let sender: BenchClient | null = null;
  try {
    if (v === 'off') sender = await connectClient(server);
    else {
      const s = new SessionClient(server.url);
      await s.connect();
      sender = s;
    }
    // Each broadcast request is answered exactly once. The reply may come after the next request is sent (timeBroadcasts
    // sends the next once every receiver has the last push, and a session reply waits for its store append, a Redis round
    // trip): so replies are matched against the set of requests not yet answered, not against the last one sent.
    const unanswered = new Set<number>();
    let badReplies = 0;
    sender.onMessage((text) => {
      const m = BCAST_REPLY.exec(text);
      if (m) {
        // A reply to a request never sent, or a second reply to one: wrong either way.
        if (!unanswered.delete(Number(m[1]))) badReplies++;
      } else if (!BROADCAST_PUSH.test(text)) badReplies++;
    });
    let k = 0;
    const line: string[] = [];
    for (const n of RECEIVERS) {
      try {
        receivers.push(...(await clientsFor(v, server, n - receivers.length, 250)));
      } catch (err) {
        problems.push(`broadcast ${name} @${label(n)}: a receiver could not connect: ${(err as Error).message}`);
        break;
      }
      await waitForConnections(server, n + 1, 60_000);
      const t = await timeBroadcasts({
        receivers,
        count: BROADCASTS,
        timeoutMs: QUICK ? 5_000 : 15_000,
        base: k,
        send: () => {
          unanswered.add(++k);
          sender!.send(`{"requestID":${k},"command":"broadcast","someOtherThing":"b${k}"}`);
        },
      });
      if (t.timedOut) problems.push(`broadcast ${name} @${label(n)}: ${t.timedOut}`);
      if (t.missing || t.duplicated || t.strays) problems.push(`broadcast ${name} @${label(n)}: ${t.missing} missing, ${t.duplicated} duplicated, ${t.strays} unexpected`);
      const steady = t.times.slice(BCAST_WARMUP);
      rec.add(name, `broadcast to all @${label(n)} p50`, 'ms', percentile(steady, 50));
      rec.add(name, `broadcast to all @${label(n)} p99`, 'ms', percentile(steady, 99));
      line.push(`${label(n)}: p50 ${percentile(steady, 50).toFixed(1)} ms p99 ${percentile(steady, 99).toFixed(1)} ms`);
    }
    // The last replies may still be on their way: wait for them (bounded), then every one missing is lost.
    const deadline = Date.now() + (QUICK ? 5_000 : 15_000);
    while (unanswered.size > 0 && Date.now() < deadline) await sleep(20);
    if (badReplies) problems.push(`broadcast ${name}: ${badReplies} wrong, duplicated or unexpected replies to the sender`);
    if (unanswered.size) problems.push(`broadcast ${name}: ${unanswered.size} requests of the sender never answered`);
    problems.push(...sessionProblems(`broadcast ${name}`, [sender, ...receivers]));
    console.log(`bcast  ${name.padEnd(20)} ${line.join('  |  ')}`);
  } finally {
    await closeAll(sender ? [sender, ...receivers] : receivers);
    await server.stop();
  }
  return problems;
}

// ---------------------------------------------------------------------------

const started = Date.now();
const rec = new Recorder();
const notes: string[] = [];
const problems: string[] = [];
const names = VARIANTS.map((v) => VARIANT_NAMES[v]);
let answered = 0;
try {
  if (PARTS.includes('reqres')) {
    console.log('--- reqres');
    for (const { system } of alternatingRounds(ROUNDS, VARIANTS, true)) {
      const r = await reqres(system, rec, notes);
      problems.push(...r.problems);
      answered += r.answered;
    }
  }
  if (PARTS.includes('idle')) {
    console.log('--- idle');
    for (const { system } of alternatingRounds(ROUNDS, VARIANTS, true)) problems.push(...(await idle(system, rec)));
  }
  if (PARTS.includes('broadcast')) {
    console.log('--- broadcast');
    for (const { system } of alternatingRounds(ROUNDS, VARIANTS, true)) problems.push(...(await broadcast(system, rec)));
  }
} finally {
  await redis?.stop();
}

/** The target applies to the in-memory store; the Redis store is shown against the same baseline without one. */
const TARGETED: Array<readonly [string, string | undefined]> = [
  ['server CPU per message', '<= 1.15'],
  ['throughput', '>= 0.87'],
  ['latency p99', undefined],
  ['load-generator CPU per message', undefined],
  [`RSS per idle connection @${label(LEVELS[LEVELS.length - 1]!)}`, LEVELS[LEVELS.length - 1] === 10_000 ? '<= 1.15' : undefined],
  [`heap per idle connection @${label(LEVELS[LEVELS.length - 1]!)}`, undefined],
  ...RECEIVERS.flatMap((n) => [[`broadcast to all @${label(n)} p50`, '<= 1.15'] as const, [`broadcast to all @${label(n)} p99`, '<= 1.15'] as const]),
];
const ratios: Ratio[] = [];
for (const name of names.filter((x) => x !== OFF)) {
  for (const [metric, target] of TARGETED) {
    const r = rec.ratio(metric, name, name === VARIANT_NAMES.on ? target : undefined, OFF);
    if (r) ratios.push(r);
  }
}
const result = {
  rounds: ROUNDS,
  rows: rec.toRows(),
  ratios,
  integrity: {
    ok: problems.length === 0,
    details:
      problems.length === 0
        ? `${answered} requests (${PARTS.join(', ')}; ${names.join(', ')}): every reply matched its request, none lost or duplicated; every receiver got every broadcast exactly once; no session seq skipped, no frame outside the protocol`
        : problems.join('; '),
  },
  notes: [
    'ratios are against sessions off (the same ws-supervisor server without the `sessions` option, plain clients), not raw ws',
    `sessions on: every client opts in (ws-session=1) and acks every ${ACK_EVERY} messages or ${ACK_DELAY_MS / 1000} s, as the Node client does; the target (≤ 1.15×, throughput ≥ 0.87×) applies to the in-memory store`,
    ...(VARIANTS.includes('redis') ? ['sessions on (Redis): the Redis session store on a local redis-server (persistence off), shown without a target: each appended message is a Redis round trip'] : [!redisFound ? 'sessions on (Redis) not run: redis-server not found' : 'sessions on (Redis) not run (--variants)']),
    ...notes,
  ],
  params: {
    parts: PARTS,
    variants: names,
    connections: CONNECTIONS,
    seconds: SECONDS,
    levels: LEVELS,
    receivers: RECEIVERS,
    broadcasts: BROADCASTS,
    quick: QUICK,
    durationSeconds: (Date.now() - started) / 1000,
  },
};
finishScenario('sessions', QUICK, started, result);
