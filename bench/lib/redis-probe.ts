/**
 * The Redis the stand-alone Redis benchmarks measure (bench/session-store-redis.ts,
 * bench/session-fanout-redis.ts, bench/adapter-history-redis.ts): REDIS_URL when
 * set, else a redis-server of their own (persistence off, test/helpers/redis.ts);
 * an admin client, INFO fields as numbers, and Redis's CPU time from /proc (so
 * the server must run on this machine).
 */
import { Redis } from 'ioredis';
import { procCpuUs } from './proc.ts';
import { findRedisServer, spawnRedisServer, type RedisServer } from '../../test/helpers/redis.ts';

export interface BenchRedis {
  url: string;
  /** The redis-server started here; null with REDIS_URL. */
  server: RedisServer | null;
  admin: Redis;
  /** A numeric field of `INFO <section>`. */
  info(section: string, field: string): Promise<number>;
  /** Redis's user + system CPU time so far, µs. */
  cpuUs(): number;
}

export async function benchRedis(): Promise<BenchRedis> {
  let server: RedisServer | null = null;
  let url = process.env.REDIS_URL;
  if (!url) {
    const binary = findRedisServer();
    if (!binary) throw new Error('redis-server not found (apt-get install redis-server), or set REDIS_URL');
    server = await spawnRedisServer(binary);
    url = server.url;
  }
  const admin = new Redis(url);
  const info = async (section: string, field: string): Promise<number> => Number(new RegExp(`^${field}:(\\S+)`, 'm').exec(await admin.info(section))![1]);
  const pid = await info('server', 'process_id');
  const cpuUs = (): number => procCpuUs(pid);
  return { url, server, admin, info, cpuUs };
}
