/**
 * Closing the Redis adapter and the Redis session store after their
 * redis-server was killed (src/adapter/redis-close.ts): close() resolves, and
 * every socket and timer they held is released, about as fast as when they
 * close with Redis up. Before, ioredis's disconnect fallback timer
 * (`disconnectTimeout`, 2 s) was armed on a socket that had closed already and
 * kept the process alive 2 s after close (docs/testing.md). Against a REAL
 * redis-server (test/helpers/redis.ts); without it SKIPPED (under CI=true: a
 * failure).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createRedisAdapter } from '../../src/adapter/redis.ts';
import { createRedisSessionStore } from '../../src/adapter/redis-session-store.ts';
import { startRedis, type RedisServer } from '../helpers/redis.ts';
import { delay, waitFor } from '../helpers/server.ts';
import { pace } from '../helpers/pace.ts';

/** ioredis's default `disconnectTimeout`, which neither the adapter nor the store changes: what a close lingered before. */
const IOREDIS_DISCONNECT_TIMEOUT_MS = 2_000;

/** The process's active handles, requests and timers, counted by kind (a client holds a TCPSocketWrap and Timeouts). */
function held(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const kind of process.getActiveResourcesInfo()) counts.set(kind, (counts.get(kind) ?? 0) + 1);
  return counts;
}

/** What `now` holds beyond `before`, by kind (empty: nothing left). */
function beyond(now: Map<string, number>, before: Map<string, number>): string[] {
  return [...now].filter(([kind, n]) => n > (before.get(kind) ?? 0)).map(([kind, n]) => `${kind} ${n - (before.get(kind) ?? 0)}`);
}

interface Closed {
  /** close() called → resolved. */
  closeMs: number;
  /** close() called → no handle, request or timer left beyond what the process held before it was made. */
  releasedMs: number;
}

/** Closes, then polls (1 ms sleeps, whose own timer is over when read) until the handles are back to `before`, up to `limitMs`. */
async function closeAndRelease(close: () => Promise<void>, before: Map<string, number>, limitMs: number): Promise<Closed> {
  const start = performance.now();
  await close();
  const closeMs = performance.now() - start;
  for (;;) {
    const left = beyond(held(), before);
    if (left.length === 0) return { closeMs, releasedMs: performance.now() - start };
    if (performance.now() - start > limitMs) assert.fail(`still held ${Math.round(performance.now() - start)} ms after close(): ${left.join(', ')}`);
    await delay(1);
  }
}

interface Closable {
  readonly status: string;
  close(): Promise<void>;
}

/** Makes one, waits until it is up, closes it (Redis up): the baseline. Then another, Redis killed under it, closed. */
async function upThenKilled(t: TestContext, make: (redis: RedisServer) => Closable): Promise<{ up: Closed; killed: Closed } | null> {
  const redis = await startRedis(t);
  if (!redis) return null; // skipped (SKIPPED printed), or failed under CI=true
  // Released well before the linger the fix removes, or the test could not tell them apart.
  const limitMs = IOREDIS_DISCONNECT_TIMEOUT_MS + pace.scaled(1_000);

  let before = held();
  const a = make(redis);
  await waitFor(() => a.status === 'up', pace.scaled(10_000), 'the first to reach redis');
  const up = await closeAndRelease(() => a.close(), before, limitMs);

  before = held();
  const b = make(redis);
  await waitFor(() => b.status === 'up', pace.scaled(10_000), 'the second to reach redis');
  await redis.kill();
  await waitFor(() => b.status === 'degraded', pace.scaled(10_000), 'the second to see redis gone');
  const killed = await closeAndRelease(() => b.close(), before, limitMs);
  t.diagnostic(`Redis up: close() ${up.closeMs.toFixed(1)} ms, released ${up.releasedMs.toFixed(1)} ms; killed: ${killed.closeMs.toFixed(1)} ms, ${killed.releasedMs.toFixed(1)} ms (pace ${pace.factor.toFixed(1)})`);
  return { up, killed };
}

/**
 * The killed one must be released within the baseline plus a scaled margin for a busy machine, kept
 * under half of ioredis's linger so that the linger can never pass.
 */
function assertNoLinger(result: { up: Closed; killed: Closed } | null): void {
  if (result === null) return;
  const { up, killed } = result;
  const bound = (baseline: number) => Math.min(baseline + pace.scaled(50), IOREDIS_DISCONNECT_TIMEOUT_MS / 2);
  assert.ok(killed.closeMs <= bound(up.closeMs), `close() resolved in ${killed.closeMs.toFixed(1)} ms, bound ${bound(up.closeMs).toFixed(1)} ms`);
  assert.ok(killed.releasedMs <= bound(up.releasedMs), `released in ${killed.releasedMs.toFixed(1)} ms, bound ${bound(up.releasedMs).toFixed(1)} ms`);
}

test('the Redis adapter, closed after its redis-server was killed, releases its sockets and timers as fast as with Redis up (R3), not after ioredis\'s 2 s disconnect timer', async (t) => {
  const result = await upThenKilled(t, (redis) => {
    const adapter = createRedisAdapter({ url: redis.url, prefix: `close-${randomBytes(4).toString('hex')}:`, backoff: { initialDelay: 50, maxDelay: 200 } });
    adapter.attach({ deliver: () => undefined, deadLetter: () => undefined, statusChanged: () => undefined, connections: () => 0, logger: null });
    return adapter;
  });
  assertNoLinger(result);
});

test('the Redis session store, closed after its redis-server was killed, releases its sockets and timers as fast as with Redis up (R3), not after ioredis\'s 2 s disconnect timer', async (t) => {
  const result = await upThenKilled(t, (redis) => {
    const store = createRedisSessionStore({ url: redis.url, prefix: `close-${randomBytes(4).toString('hex')}:` });
    store.start({ logger: null, deadLetter: () => undefined, fanOutDelivered: () => undefined, fanOutResync: () => undefined });
    return store;
  });
  assertNoLinger(result);
});
