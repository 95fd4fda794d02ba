/**
 * What the fan-out in the Redis session store costs (docs/scaling.md,
 * "Fan-out in the store"): a broadcast appended by the publishing node's
 * script to every session's stream, in chunks (FANOUT_CHUNK per call), each
 * holder node told its (session, seq) pairs. Measures, per broadcast to N
 * sessions: the wall time until the last member has it, Redis's CPU, and the
 * longest single script call (Redis is blocked for that long at most). For
 * comparison, the same message appended by the holder node session by session
 * (the store's `append` per session in one turn, grouped into `appendN`: what
 * each node did before). Not a bench/scenarios/ entry: the store alone, no sockets.
 *
 *   node --import tsx bench/session-fanout-redis.ts [--sessions 1000,5000] [--broadcasts 20]
 *
 * Starts its own redis-server (persistence off) unless REDIS_URL is set.
 */
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { createRedisSessionStore, type RedisSessionStore } from '../src/adapter/redis-session-store.ts';
import { FANOUT_CHUNK } from '../src/adapter/redis-session-scripts.ts';
import { benchRedis } from './lib/redis-probe.ts';

const { values } = parseArgs({ options: { sessions: { type: 'string', default: '1000,5000' }, broadcasts: { type: 'string', default: '20' } } });
const SIZES = values.sessions.split(',').map(Number);
const BROADCASTS = Number(values.broadcasts);
/** The articles' broadcast push, 57 bytes. */
const PUSH = JSON.stringify({ requestID: 0, command: 'push', someOtherThing: 'abcdefghi', success: true }).slice(0, 57);

const { url, server, admin, info, cpuUs: redisCpu } = await benchRedis();
await admin.config('SET', 'slowlog-log-slower-than', '0');
await admin.config('SET', 'slowlog-max-len', '100000');
/** The longest EVALSHA since the last call, µs (SLOWLOG logs every command at threshold 0). */
async function longestScript(): Promise<number> {
  const log = (await admin.call('SLOWLOG', 'GET', '100000')) as Array<[number, number, number, string[]]>;
  await admin.call('SLOWLOG', 'RESET');
  let max = 0;
  for (const [, , us, args] of log) if (/^evalsha$/i.test(String(args[0])) && us > max) max = us;
  return max;
}

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));
const prefix = 'benchfan:';
function start(): { store: RedisSessionStore; told: { n: number } } {
  const store = createRedisSessionStore({ url: url!, prefix, maxDetachedSessions: 1_000_000, maxBufferedBytes: 2 ** 31 - 1 });
  const told = { n: 0 };
  store.start({ deadLetter: (l) => { if (l.reason !== 'ended') console.error(`dead letter: ${l.reason} ${l.detail}`); }, logger: null, fanOutDelivered: (d) => (told.n += d.message === null ? 0 : d.sessions.length) });
  return { store, told };
}
const holder = start();
const publisher = start();
await holder.store.epoch();
await publisher.store.epoch();
await delay(200); // both subscribed

console.log(`# fan-out chunk ${FANOUT_CHUNK} sessions per script call; message ${PUSH.length} bytes; half the sessions attached (held by one node, told), half detached`);
for (const N of SIZES) {
  const ids: string[] = [];
  for (let i = 0; i < N; i += 500) ids.push(...(await Promise.all(Array.from({ length: Math.min(500, N - i) }, () => holder.store.create({ owner: null })))).map((s) => s.id));
  await Promise.all(ids.filter((_, i) => i % 2 === 0).map((id) => holder.store.detach(id)));
  const queueEmpty = async () => (await admin.llen(`${prefix}fq`)) === 0;

  // The fan-out: one broadcast at a time, each until the queue is empty (every member has it).
  await longestScript();
  let cpu0 = redisCpu();
  let wall = 0;
  const told0 = holder.told.n;
  for (let k = 0; k < BROADCASTS; k++) {
    const t0 = performance.now();
    const r = await publisher.store.fanOut.broadcast({ data: PUSH, binary: false });
    if (r.pending) while (!(await queueEmpty())) await delay(1);
    wall += performance.now() - t0;
  }
  let cpu = redisCpu() - cpu0;
  const longest = await longestScript();
  for (let i = 0; i < 200 && holder.told.n - told0 < (N / 2) * BROADCASTS; i++) await delay(10);
  console.log(
    `fan-out ${N} sessions: ${(wall / BROADCASTS).toFixed(1)} ms per broadcast until every member has it; Redis CPU ${(cpu / BROADCASTS / 1000).toFixed(1)} ms per broadcast = ${(cpu / BROADCASTS / N).toFixed(2)} µs per session; longest script call ${(longest / 1000).toFixed(2)} ms; holder told ${holder.told.n - told0} of ${(N / 2) * BROADCASTS}`,
  );

  // The same message appended session by session by the node (before): one append per session, grouped into appendN.
  await longestScript();
  cpu0 = redisCpu();
  wall = 0;
  for (let k = 0; k < BROADCASTS; k++) {
    const t0 = performance.now();
    await Promise.all(ids.map((id) => holder.store.append(id, { data: PUSH, binary: false })));
    wall += performance.now() - t0;
  }
  cpu = redisCpu() - cpu0;
  console.log(
    `per-session appends ${N} sessions: ${(wall / BROADCASTS).toFixed(1)} ms per broadcast; Redis CPU ${(cpu / BROADCASTS / 1000).toFixed(1)} ms per broadcast = ${(cpu / BROADCASTS / N).toFixed(2)} µs per session; longest script call ${((await longestScript()) / 1000).toFixed(2)} ms`,
  );
  await Promise.all(ids.map((id) => holder.store.end(id, 'bench')));
}
await admin.config('SET', 'slowlog-log-slower-than', '10000');
await holder.store.close();
await publisher.store.close();
admin.disconnect();
await server?.dispose();
