/**
 * The Redis session store (src/adapter/redis-session-store.ts) against a REAL
 * redis-server (test/helpers/redis.ts; no mock): the shared contract suite
 * (test/helpers/session-store-contract.ts, on a fake clock the store passes
 * to its scripts, one key prefix per test), then what only Redis has: TTLs on
 * the real clock, Redis restarted empty and FLUSHALL (`restarted`), two nodes
 * in two processes sharing one Redis (test/fixtures/session-store-node.ts),
 * a node killed while it holds sessions (its lease lapses), and a hung Redis
 * (SIGSTOP: operations fail within commandTimeout, reported; SIGCONT: back).
 */
import { after, afterEach, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { createRedisSessionStore, SessionStoreUnavailableError, type RedisSessionStore, type RedisSessionStoreOptions } from '../../src/adapter/redis.ts';
import type { SessionDeadLetter } from '../../src/adapter/session-store.ts';
import { describeSessionStoreContract } from '../helpers/session-store-contract.ts';
import { findRedisServer, REDIS_INSTALL, spawnRedisServer, type RedisServer } from '../helpers/redis.ts';
import { IN_CI } from '../interop/require-binary.ts';

const binary = findRedisServer();
let shared: Promise<RedisServer> | null = null;
/** One redis-server for the contract tests (each test has its own prefix); tests that kill or stop Redis start their own. */
function sharedRedis(): Promise<RedisServer> {
  shared ??= spawnRedisServer(binary!);
  return shared;
}
after(async () => {
  if (shared) await (await shared).dispose();
});

const opened = new Set<RedisSessionStore>();
afterEach(async () => {
  await Promise.all([...opened].map((s) => s.close()));
  opened.clear();
});
function track(store: RedisSessionStore): RedisSessionStore {
  opened.add(store);
  return store;
}

const prefix = () => `test:${randomBytes(6).toString('hex')}:`;

/** Skips (or fails under CI=true) when redis-server is missing; else a fresh server of this test's own. */
async function ownRedis(t: TestContext): Promise<RedisServer | null> {
  if (binary === null) {
    const why = `redis-server not found (${REDIS_INSTALL})`;
    if (IN_CI) throw new Error(`missing prerequisite (CI=true, so this fails instead of skipping): ${why}`);
    console.log(`SKIPPED: ${t.name}: ${why}`);
    t.skip(why);
    return null;
  }
  const server = await spawnRedisServer(binary);
  t.after(() => server.dispose());
  return server;
}

if (binary === null) {
  test('session store contract: redis', (t) => {
    const why = `redis-server not found (${REDIS_INSTALL})`;
    if (IN_CI) throw new Error(`missing prerequisite (CI=true, so this fails instead of skipping): ${why}`);
    console.log(`SKIPPED: session store contract: redis: ${why}`);
    t.skip(why);
  });
} else {
  describeSessionStoreContract('redis', async (limits) => {
    const { url } = await sharedRedis();
    let now = 1_700_000_000_000;
    const p = prefix();
    const make = () => track(createRedisSessionStore({ url, prefix: p, ...limits, now: () => now, commandTimeout: 5_000 }));
    return {
      store: make(),
      advance: async (ms) => {
        now += ms;
      },
      // Redis lost the data: FLUSHALL (the contract tests run one at a time), then a store on it.
      restarted: async () => {
        const admin = new Redis(url);
        await admin.flushall();
        admin.disconnect();
        return make();
      },
      peer: async () => make(),
    };
  });
}
