/**
 * What the Redis adapter's `history` option costs against pure pub/sub
 * (docs/scaling.md, "Recovering missed messages"): one node publishes, another
 * receives (two adapters, no sockets), with and without the history:
 *
 * - latency: one publish at a time, from `publish()` on node A to delivery on
 *   node B (a full round trip through Redis), median and p99;
 * - throughput: `--burst` publishes at once (within maxInFlightBytes), until B
 *   has them all: messages/s and Redis's CPU per publish (from /proc);
 * - memory: Redis `used_memory` growth and the stream's `MEMORY USAGE` once
 *   the history holds `--held` frames.
 *
 *   node --import tsx bench/adapter-history-redis.ts [--sizes 100,8192] [--latency 2000] [--burst 20000] [--held 10000] [--runs 3]
 *
 * Starts its own redis-server (persistence off) unless REDIS_URL is set.
 */
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { createRedisAdapter, REDIS_HISTORY_DEFAULTS, type RedisAdapter } from '../src/adapter/redis.ts';
import type { AdapterHost, AdapterMessage } from '../src/adapter/types.ts';
import { benchRedis } from './lib/redis-probe.ts';

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '100,8192' },
    latency: { type: 'string', default: '2000' },
    burst: { type: 'string', default: '20000' },
    held: { type: 'string', default: '10000' },
    runs: { type: 'string', default: '3' },
  },
});
const SIZES = values.sizes.split(',').map(Number);
const LATENCY_N = Number(values.latency);
const BURST = Number(values.burst);
const HELD = Number(values.held);
const RUNS = Number(values.runs);

const { url, server, admin, info, cpuUs: redisCpu } = await benchRedis();
// A burst must not be cut by Redis for B's output buffer (that is the other test): no pub/sub limit here.
await admin.config('SET', 'client-output-buffer-limit', 'pubsub 0 0 0');

interface Pair {
  a: RedisAdapter;
  b: RedisAdapter;
  /** Resolves when B has delivered `n` messages in all. */
  received(n: number): Promise<void>;
  close(): Promise<void>;
}

async function pair(prefix: string, history: boolean): Promise<Pair> {
  let count = 0;
  let waiter: { n: number; resolve: () => void } | null = null;
  const host = (deliver: (m: AdapterMessage) => void): AdapterHost => ({
    deliver,
    deadLetter: (letter) => {
      // `partial`: A published while B's subscription was cut (the recovery phase): expected, B reads them back.
      if (letter.reason !== 'partial') throw new Error(`unexpected dead letter: ${letter.reason} ${letter.error}`);
    },
    statusChanged: () => undefined,
    connections: () => 0,
    logger: null,
  });
  const options = { url: url!, prefix, history, maxInFlightBytes: 256 * 1_048_576, commandTimeout: 30_000 };
  const a = createRedisAdapter({ ...options, nodeId: 'bench-a' });
  const b = createRedisAdapter({ ...options, nodeId: 'bench-b' });
  a.attach(host(() => undefined));
  b.attach(
    host(() => {
      count++;
      if (waiter && count >= waiter.n) {
        const w = waiter;
        waiter = null;
        w.resolve();
      }
    }),
  );
  const until = Date.now() + 10_000;
  while (a.status !== 'up' || b.status !== 'up' || (await a.nodes()).length < 2) {
    if (Date.now() > until) throw new Error('adapters not up');
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    a,
    b,
    received: (n) => (count >= n ? Promise.resolve() : new Promise((resolve) => (waiter = { n, resolve }))),
    close: async () => {
      await a.close();
      await b.close();
    },
  };
}

const pct = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;

interface Result {
  p50: number;
  p99: number;
  rate: number;
  cpuPer: number;
  memPerMsg: number;
  stream: number;
  held: number;
  recoveryMs: number;
  recovered: number;
}

async function run(size: number, history: boolean, round: number): Promise<Result> {
  const prefix = `bench${round}${history ? 'h' : 'p'}${size}:`;
  const p = await pair(prefix, history);
  const data = Buffer.alloc(size, 0x61);
  const message: AdapterMessage = { kind: 'publish', topic: 'room:1', data, binary: false };
  let sent = 0;
  // Latency: one at a time, publish → delivered on B.
  const lat: number[] = [];
  for (let i = 0; i < LATENCY_N; i++) {
    const t0 = process.hrtime.bigint();
    p.a.publish(message);
    await p.received(++sent);
    lat.push(Number(process.hrtime.bigint() - t0) / 1e3);
  }
  lat.sort((x, y) => x - y);
  // Throughput and Redis CPU: a burst.
  const cpu0 = redisCpu();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < BURST; i++) p.a.publish(message);
  sent += BURST;
  await p.received(sent);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = redisCpu() - cpu0;
  // Memory: what the history holds after HELD more (compared with before them, same run).
  let memPerMsg = 0;
  let stream = 0;
  let held = 0;
  let recoveryMs = 0;
  let recovered = 0;
  if (history) {
    await admin.del(p.a.historyKey);
    const before = await info('memory', 'used_memory');
    held = Math.min(HELD, Math.floor((REDIS_HISTORY_DEFAULTS.maxBytes * 0.9) / (size + 120))); // within the bytes bound: nothing trimmed
    for (let i = 0; i < held; i++) p.a.publish(message);
    sent += held;
    await p.received(sent);
    const after = await info('memory', 'used_memory');
    memPerMsg = (after - before) / held;
    stream = Number(await admin.call('MEMORY', 'USAGE', p.a.historyKey, 'SAMPLES', '0'));
    // Recovery: B's subscription killed, A publishes RECOVER more, B reads them back once resubscribed.
    const list = String(await admin.client('LIST'));
    const id = /\bid=(\d+)\b[^\n]* name=ws-supervisor:bench-b:sub /.exec(list)![1]!;
    const recovered0 = p.b.recovered;
    const recover = Math.min(held, 5000);
    await admin.client('KILL', 'ID', id);
    const r0 = process.hrtime.bigint();
    for (let i = 0; i < recover; i++) p.a.publish(message);
    sent += recover;
    await p.received(sent);
    recoveryMs = Number(process.hrtime.bigint() - r0) / 1e6;
    recovered = p.b.recovered - recovered0;
  }
  await p.close();
  const keys = await admin.keys(`${prefix}*`);
  if (keys.length) await admin.del(...keys);
  return { p50: pct(lat, 0.5), p99: pct(lat, 0.99), rate: BURST / seconds, cpuPer: cpu / BURST, memPerMsg, stream, held, recoveryMs, recovered };
}

console.log(`redis-server ${(await admin.info('server')).match(/redis_version:(\S+)/)![1]}, ${LATENCY_N} one-at-a-time + ${BURST} burst publishes per run, ${RUNS} runs, A/B interleaved`);
for (const size of SIZES) {
  for (let round = 0; round < RUNS; round++) {
    for (const history of [false, true]) {
      const r = await run(size, history, round);
      console.log(
        `size ${size} B ${history ? 'history ' : 'pub/sub '} run ${round + 1}: latency p50 ${r.p50.toFixed(0)} µs p99 ${r.p99.toFixed(0)} µs; ` +
          `burst ${Math.round(r.rate)} msg/s, Redis CPU ${r.cpuPer.toFixed(1)} µs/publish` +
          (history ? `; history memory ${r.memPerMsg.toFixed(0)} B/message (used_memory), stream MEMORY USAGE ${r.stream} B for ${r.held}; ` +
              `subscription killed: ${r.recovered} read back from history, all delivered ${r.recoveryMs.toFixed(0)} ms after the kill` : ''),
      );
    }
  }
}
admin.disconnect();
await server?.dispose();
