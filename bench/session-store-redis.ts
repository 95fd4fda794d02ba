/**
 * What the Redis session store costs (docs/scaling.md, "The session store"):
 * Redis memory per detached session, and append/ack throughput with Redis's
 * own CPU per operation. Not a bench/scenarios/ entry (it measures the store
 * alone, no sockets):
 *
 *   node --import tsx bench/session-store-redis.ts [--sessions 1000] [--messages 20] [--ops 20000]
 *
 * Starts its own redis-server (persistence off) unless REDIS_URL is set.
 */
import { parseArgs } from 'node:util';
import { createRedisSessionStore } from '../src/adapter/redis.ts';
import { benchRedis } from './lib/redis-probe.ts';

const { values } = parseArgs({ options: { sessions: { type: 'string', default: '1000' }, messages: { type: 'string', default: '20' }, ops: { type: 'string', default: '20000' } } });
const SESSIONS = Number(values.sessions);
const MESSAGES = Number(values.messages);
const OPS = Number(values.ops);
/** The articles' broadcast push, 57 bytes. */
const PUSH = JSON.stringify({ requestID: 0, command: 'push', someOtherThing: 'abcdefghi', success: true }).slice(0, 57);

const { url, server, admin, info, cpuUs: redisCpu } = await benchRedis();

const store = createRedisSessionStore({ url, prefix: 'bench:', maxDetachedSessions: 1_000_000, maxBufferedBytes: 2 ** 31 - 1 });
store.start({ deadLetter: () => undefined, logger: null });
await store.epoch();

// --- memory per detached session
const before = await info('memory', 'used_memory');
const ids: string[] = [];
for (let i = 0; i < SESSIONS; i++) {
  const s = await store.create({ owner: `user${i}` });
  ids.push(s.id);
  await Promise.all(Array.from({ length: MESSAGES }, () => store.append(s.id, { data: PUSH, binary: false })));
  await store.detach(s.id);
}
const after = await info('memory', 'used_memory');
const sample = ids[Math.floor(SESSIONS / 2)]!;
const usage = async (key: string) => (await admin.call('MEMORY', 'USAGE', `bench:${key}`, 'SAMPLES', '0')) as number | null;
const [h, x] = [await usage(`h:${sample}`), await usage(`x:${sample}`)];
const stats = await store.stats();
console.log(`memory: ${SESSIONS} detached sessions × ${MESSAGES} messages of ${PUSH.length} bytes: used_memory +${after - before} bytes = ${((after - before) / SESSIONS / 1024).toFixed(2)} KiB per session`);
console.log(`memory: one session's keys (MEMORY USAGE): record hash ${h} bytes, stream ${x} bytes; payload held ${(MESSAGES * PUSH.length)} bytes`);
console.log(`stats: ${JSON.stringify(stats)}`);
for (const id of ids) await store.end(id, 'bench');

// --- append / ack throughput (an ack every 32 appends, as the client acks)
async function run(label: string, inFlight: number): Promise<void> {
  const sessions = await Promise.all(Array.from({ length: inFlight }, () => store.create({ owner: null })));
  const per = Math.ceil(OPS / inFlight);
  const cpu0 = redisCpu();
  const t0 = process.hrtime.bigint();
  let acks = 0;
  await Promise.all(
    sessions.map(async (s) => {
      for (let i = 1; i <= per; i++) {
        const r = await store.append(s.id, { data: PUSH, binary: false });
        if (!r.ok) throw new Error(r.detail);
        if (r.seq % 32 === 0) {
          await store.ack(s.id, r.seq);
          acks++;
        }
      }
    }),
  );
  const ns = Number(process.hrtime.bigint() - t0);
  const cpu = redisCpu() - cpu0;
  const appends = per * inFlight;
  console.log(
    `${label}: ${appends} appends + ${acks} acks in ${(ns / 1e6).toFixed(0)} ms: ${Math.round(appends / (ns / 1e9))} appends/s, ` +
      `${(ns / 1e3 / appends).toFixed(1)} µs wall per append, Redis CPU ${(cpu / (appends + acks)).toFixed(1)} µs per operation`,
  );
  for (const s of sessions) await store.end(s.id, 'bench');
}
await run('sequential (1 in flight)', 1);
await run('pipelined (64 sessions in flight)', 64);

await store.close();
admin.disconnect();
await server?.dispose();
