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
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { Redis } from 'ioredis';
import { createRedisSessionStore, SessionStoreUnavailableError, type RedisSessionStore, type RedisSessionStoreOptions } from '../../src/adapter/redis.ts';
import type { SessionDeadLetter, SessionStore } from '../../src/adapter/session-store.ts';
import { createMemorySessionStore } from '../../src/adapter/memory-session-store.ts';
import { describeSessionStoreContract } from '../helpers/session-store-contract.ts';
import { findRedisServer, REDIS_INSTALL, spawnRedisServer, type RedisServer } from '../helpers/redis.ts';
import { IN_CI } from '../interop/require-binary.ts';
import { REPO_ROOT } from '../helpers/cli.ts';
import { compiledEntry } from '../helpers/compiled.ts';
import { delay, within } from '../helpers/server.ts';
import { pace } from '../helpers/pace.ts';

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

/** Two store nodes on the same Redis and prefix (`options` each), tracked for closing, with their dead letters. */
function twoNodes(options: RedisSessionStoreOptions): { a: RedisSessionStore; b: RedisSessionStore; lettersA: SessionDeadLetter[]; lettersB: SessionDeadLetter[] } {
  const a = track(createRedisSessionStore(options));
  const b = track(createRedisSessionStore(options));
  return { a, b, lettersA: collect(a), lettersB: collect(b) };
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

// ---------------------------------------------------------------------------
// What only a store in Redis has

function collect(store: RedisSessionStore, logger: { warns: string[] } | null = null): SessionDeadLetter[] {
  const letters: SessionDeadLetter[] = [];
  const log = logger
    ? {
        debug: () => undefined,
        info: () => undefined,
        warn: (_o: object, msg?: string) => void logger.warns.push(msg ?? ''),
        error: () => undefined,
        child() {
          return this;
        },
      }
    : null;
  store.start({ deadLetter: (l) => letters.push(l), logger: log });
  return letters;
}

function untilStatus(store: RedisSessionStore, status: 'up' | 'degraded', timeoutMs = 10_000): Promise<string | null> {
  if (store.status === status) return Promise.resolve(store.statusReason);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`store not ${status} within ${timeoutMs} ms (${store.status}: ${store.statusReason})`)), timeoutMs);
    const on = (s: string, reason: string | null) => {
      if (s !== status) return;
      clearTimeout(timer);
      store.off('status', on);
      resolve(reason);
    };
    store.on('status', on);
  });
}

const fast = { backoff: { initialDelay: 20, maxDelay: 200 } } satisfies Partial<RedisSessionStoreOptions>;
const text = (data: string) => ({ data, binary: false });

describe('redis session store', () => {
  test('options are checked and a bad value named (RangeError)', () => {
    assert.throws(() => createRedisSessionStore({ url: 'http://x' }), /redis session store option url/);
    assert.throws(() => createRedisSessionStore({ url: 'redis://127.0.0.1', maxMessages: 0 }), /option sessions\.maxMessages must be a positive integer .*, got 0$/);
    assert.throws(() => createRedisSessionStore({ url: 'redis://127.0.0.1', leaseTtl: 1.5 }), /option sessions\.leaseTtl/);
    assert.throws(() => createRedisSessionStore({ url: 'redis://127.0.0.1', prefix: '' }), /prefix must be a non-empty string/);
  });

  test('the byte bound is cluster-wide: node B\'s append ends the oldest detached session of node A (memory), and B gets the dead letters', async (t) => {
    if (binary === null) return void (await ownRedis(t));
    const { url } = await sharedRedis();
    const p = prefix();
    const options = { url, prefix: p, maxBufferedBytes: 100, ...fast };
    const { a, b, lettersA: aLetters, lettersB: bLetters } = twoNodes(options);
    const onA = await a.create({ owner: null });
    await a.append(onA.id, text('a'.repeat(60)));
    await a.detach(onA.id);
    const onB = await b.create({ owner: null });
    assert.deepEqual(await b.append(onB.id, text('b'.repeat(30))), { ok: true, seq: 1 }, '90 bytes: fits');
    assert.deepEqual(await b.append(onB.id, text('b'.repeat(30))), { ok: true, seq: 2 });
    assert.equal(aLetters.length, 0);
    assert.deepEqual(bLetters.map((l) => [l.sessionId, l.reason, l.detail, l.messages.length]), [
      [onA.id, 'memory', '120 bytes held by all sessions, over sessions.maxBufferedBytes 100', 1],
    ]);
    assert.deepEqual(await a.stats(), { sessions: 1, detached: 0, bufferedMessages: 2, bufferedBytes: 60, tombstones: 1 }, 'both nodes see one total');
  });

  test('TTLs on the real clock: every key has one; the window expires a detached session (dead letters at the sweep); Redis drops what no node swept, and the counters follow', async (t) => {
    if (binary === null) return void (await ownRedis(t));
    const { url } = await sharedRedis();
    const p = prefix();
    const limits = { resumeWindow: 400, leaseTtl: 150 };
    const keyTtl = limits.leaseTtl + 2 * limits.resumeWindow;
    const store = track(createRedisSessionStore({ url, prefix: p, ...limits, ...fast }));
    const letters = collect(store);
    const admin = new Redis(url);
    t.after(() => admin.disconnect());
    const s = await store.create({ owner: null });
    await store.append(s.id, text('kept'));
    await store.beginRequest(s.id, 1);
    const detachedAt = Date.now();
    await store.detach(s.id);
    for (const key of [`h:${s.id}`, `x:${s.id}`, `r:${s.id}`]) {
      const ttl = await admin.pttl(p + key);
      assert.ok(ttl > 0 && ttl <= keyTtl, `${key}: PTTL ${ttl}, want (0, ${keyTtl}]`);
    }
    const early = await store.verify({ id: s.id, token: s.token, owner: null });
    if (Date.now() - detachedAt < limits.resumeWindow) assert.equal(early.ok, true, 'inside the window');
    await delay(limits.resumeWindow + 50);
    assert.equal(await store.sweep(), 1);
    assert.deepEqual(letters.map((l) => [l.sessionId, l.reason, l.messages.map((m) => m.data)]), [[s.id, 'expired', ['kept']]]);
    assert.equal(await admin.exists(p + `h:${s.id}`, p + `x:${s.id}`, p + `r:${s.id}`), 0, 'the sweep deleted its keys');
    assert.deepEqual(await store.verify({ id: s.id, token: s.token, owner: null }), { ok: false, reason: 'expired', detail: 'detached for the resume window (400 ms)' });

    // A node that detaches a session and is never followed by a sweep: Redis's TTL is the backstop.
    const lone = track(createRedisSessionStore({ url, prefix: p, ...limits, ...fast }));
    collect(lone);
    const orphan = await lone.create({ owner: null });
    await lone.append(orphan.id, text('x'.repeat(10)));
    await lone.detach(orphan.id);
    await lone.close();
    assert.equal((await store.stats()).bufferedBytes, 10);
    await delay(keyTtl + 100);
    assert.equal(await admin.exists(p + `h:${orphan.id}`, p + `x:${orphan.id}`), 0, 'Redis expired the keys by their TTL');
    assert.equal(await store.sweep(), 0, 'nothing left to hand over');
    assert.deepEqual(await store.stats(), { sessions: 0, detached: 0, bufferedMessages: 0, bufferedBytes: 0, tombstones: 0 }, 'the stale index entry is dropped and the counters recounted');
  });

  test('Redis restarted empty: operations fail fast while it is down (reported), the epoch changes, a resume with the old one gets restarted, the store works again', async (t) => {
    const redis = await ownRedis(t);
    if (!redis) return;
    const logger = { warns: [] as string[] };
    // Not the bound under test (a down Redis fails at once, below): long enough for a loaded machine's first commands.
    const store = track(createRedisSessionStore({ url: redis.url, commandTimeout: 5_000, ...fast }));
    collect(store, logger);
    const s = await store.create({ owner: 'alice' });
    await store.append(s.id, text('lost with redis'));
    await store.detach(s.id);
    const epochChanged = new Promise<[string, string]>((resolve) => store.once('epochChanged', (a, b) => resolve([a, b])));
    await redis.kill();
    await untilStatus(store, 'degraded');
    const started = Date.now();
    const failures = await Promise.allSettled([store.append(s.id, text('a')), store.get(s.id), store.create({ owner: null })]);
    const elapsed = Date.now() - started;
    for (const f of failures) {
      assert.equal(f.status, 'rejected');
      const err = (f as PromiseRejectedResult).reason as SessionStoreUnavailableError;
      assert.ok(err instanceof SessionStoreUnavailableError, String(err));
      assert.equal(err.kind, 'unavailable');
      assert.equal(err.applied, 'no');
    }
    assert.ok(elapsed < 1000, `failed in ${elapsed} ms: at once, not after a timeout`);
    assert.equal(store.failures.unavailable, 3);
    const failureWarns = logger.warns.filter((w) => /failed \(unavailable\)/.test(w));
    assert.equal(failureWarns.length, 1, `one log line for the kind, not one per operation: ${JSON.stringify(logger.warns)}`);
    await redis.restart();
    const [previous, current] = await epochChanged;
    assert.equal(previous, s.epoch);
    assert.notEqual(current, s.epoch);
    await untilStatus(store, 'up');
    assert.deepEqual(await store.verify({ id: s.id, token: s.token, owner: 'alice', epoch: s.epoch }), {
      ok: false, reason: 'restarted', detail: `the session store restarted (epoch ${JSON.stringify(s.epoch)} is gone)`,
    });
    assert.equal(await store.epoch(), current);
    const fresh = await store.create({ owner: 'alice' });
    assert.equal(fresh.epoch, current);
    assert.deepEqual(await store.append(fresh.id, text('works')), { ok: true, seq: 1 });
  });

  test("after a reconnect the fan-out channel is subscribed again by the store alone, not also by ioredis (whose resubscribe's promise has no handler: a reconnect that dropped as it became ready rejected it, an unhandled rejection, which ends a Node process)", async (t) => {
    // Seen once in a clean-clone run under a busy loop per core (2026-12-06): "Stream isn't writeable and
    // enableOfflineQueue options is false" from ioredis's own resubscribe, unhandled, during "Redis restarted empty".
    // That race is not reproducible here at will; what makes it possible is: ioredis resubscribing on its own.
    const redis = await ownRedis(t);
    if (!redis) return;
    const p = prefix();
    const store = track(createRedisSessionStore({ url: redis.url, prefix: p, ...fast }));
    const letters = collect(store);
    const channel = `${p}node:${store.nodeId}`;
    const admin = new Redis(redis.url);
    t.after(() => admin.disconnect());
    const subscribers = async () => Number((await admin.pubsub('NUMSUB', channel))[1]);
    const until = async (what: string, ok: () => Promise<boolean>) => {
      const started = Date.now();
      while (!(await ok())) {
        if (Date.now() - started > 10_000) throw new Error(`not within 10 s: ${what}`);
        await delay(20);
      }
    };
    await until('the fan-out channel subscribed', async () => (await subscribers()) === 1);
    // monitor() opens a connection of its own: the client it is called on is only a template (lazy: never connects).
    const monitor = await new Redis(redis.url, { lazyConnect: true }).monitor();
    t.after(() => monitor.disconnect());
    const subscribes: string[] = [];
    monitor.on('monitor', (_time: string, args: string[]) => {
      if (String(args[0]).toLowerCase() === 'subscribe') subscribes.push(args.slice(1).join(' '));
    });
    await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
    await until('subscribed again after the kill', async () => subscribes.length > 0 && (await subscribers()) === 1);
    // ioredis's resubscribe goes out in the same turn as the store's (just before its 'ready'): had it gone, it is here by
    // the time a command sent after it is answered.
    await until('a later command answered', async () => (await store.get('none')) === null);
    assert.deepEqual(subscribes, [channel], 'one SUBSCRIBE on the new connection, the store\'s');
    assert.deepEqual(letters, []);
  });

  test('FLUSHALL: the epoch key is gone, a resume with the old epoch gets restarted; the next call makes a new epoch', async (t) => {
    if (binary === null) return void (await ownRedis(t));
    const { url } = await sharedRedis();
    const store = track(createRedisSessionStore({ url, prefix: prefix(), ...fast }));
    collect(store);
    const s = await store.create({ owner: null });
    await store.detach(s.id);
    const epochChanged = new Promise<string>((resolve) => store.once('epochChanged', (_a, b) => resolve(b)));
    const admin = new Redis(url);
    await admin.flushall();
    admin.disconnect();
    const v = await store.verify({ id: s.id, token: s.token, owner: null, epoch: s.epoch });
    assert.equal(!v.ok && v.reason, 'restarted');
    const v2 = await store.verify({ id: s.id, token: s.token, owner: null });
    assert.equal(!v2.ok && v2.reason, 'unknown', 'without an epoch the client is told unknown');
    const next = await store.epoch();
    assert.notEqual(next, s.epoch);
    assert.equal(await epochChanged, next);
  });

  test('Redis hung (SIGSTOP): operations fail within commandTimeout as unconfirmed (timeout), the store is degraded; after SIGCONT it works, with its data and epoch', async (t) => {
    const redis = await ownRedis(t);
    if (!redis) return;
    // Scaled with the measured pace: the set-up before Redis is paused (create, append) must get its answers
    // within it (a fixed 300 ms timed out a create under a busy loop on every core).
    const commandTimeout = pace.scaled(300);
    const logger = { warns: [] as string[] };
    const store = track(createRedisSessionStore({ url: redis.url, commandTimeout, ...fast }));
    collect(store, logger);
    const s = await store.create({ owner: null });
    await store.append(s.id, text('before'));
    redis.pause();
    t.after(() => redis.resume());
    const started = Date.now();
    const results = await Promise.allSettled([store.append(s.id, text('during')), store.get(s.id), store.stats()]);
    const elapsed = Date.now() - started;
    for (const r of results) {
      const err = (r as PromiseRejectedResult).reason as SessionStoreUnavailableError;
      assert.ok(err instanceof SessionStoreUnavailableError, String(err));
      assert.deepEqual([err.kind, err.applied], ['timeout', 'unknown']);
    }
    assert.equal((results[0] as PromiseRejectedResult).reason.sessionId, s.id);
    // One clock, on the oldest batch (the three went in one): they fail together, after commandTimeout and not long after.
    assert.ok(elapsed >= commandTimeout - 20, `failed after ${elapsed} ms`);
    assert.ok(elapsed < commandTimeout + 2000, `failed after ${elapsed} ms (commandTimeout ${commandTimeout})`);
    assert.equal(store.status, 'degraded');
    assert.match(store.statusReason ?? '', /timed out/);
    assert.equal(logger.warns.filter((w) => /failed \(timeout\)/.test(w)).length, 1, 'one line for the kind');
    redis.resume();
    // The first command that succeeds brings the store back up.
    let back: Awaited<ReturnType<RedisSessionStore['readAfter']>> | null = null;
    const deadline = Date.now() + 10_000;
    while (back === null) {
      try {
        back = await store.readAfter(s.id, 0);
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await delay(50);
      }
    }
    assert.equal(store.status, 'up');
    assert.ok(back.ok);
    // The unconfirmed append was applied once Redis woke: why a timeout says "it may still be applied".
    assert.deepEqual(back.messages.map((m) => [m.seq, m.data]), [[1, 'before'], [2, 'during']]);
    assert.equal(await store.epoch(), s.epoch, 'Redis came back with its data: the same epoch');
  });

  test('Redis hung: operations waiting on the node for their batch are capped (maxQueuedBytes, counted as the memory they hold, a broadcast\'s message once): beyond it one fails at once; the queued ones fail, not applied, once Redis has answered nothing for commandTimeout', async (t) => {
    const redis = await ownRedis(t);
    if (!redis) return;
    // Scaled with the measured pace: the set-up before Redis is paused (create, append) must get its answers
    // within it (a fixed 300 ms timed out a create under a busy loop on every core).
    const commandTimeout = pace.scaled(400);
    // Room for one batch in flight (~2 ops of 3 KB) and a queue of ~10 small appends (768 bytes each counted).
    const store = track(createRedisSessionStore({ url: redis.url, commandTimeout, maxInFlightBytes: 4000, maxQueuedBytes: 10_000, ...fast }));
    collect(store);
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) ids.push((await store.create({ owner: null })).id);
    redis.pause();
    t.after(() => redis.resume());
    const sent = store.append(ids[0]!, text('a'.repeat(3000))).catch((err: SessionStoreUnavailableError) => err);
    await delay(20); // its batch is on its way: in flight
    // A broadcast: one message, 39 sessions. Counted once, its message fits many more appends than 10 000 / (768 + 3000).
    const big = 'b'.repeat(3000);
    const fanOut = ids.slice(1).map((id) => store.append(id, text(big)).then(() => 'applied', (err: SessionStoreUnavailableError) => `${err.kind}/${err.applied}: ${err.message}`));
    const outcomes = await Promise.all(fanOut);
    const refusedAtOnce = outcomes.filter((o) => /would pass maxQueuedBytes 10000/.test(o));
    const timedOut = outcomes.filter((o) => o.startsWith('unavailable/no') && !/maxQueuedBytes/.test(o));
    assert.ok(refusedAtOnce.length > 0, `some refused by the bound: ${outcomes.slice(0, 3)}`);
    // 10 000 bytes: the message once (3 000) and 768 + ~60 per session: 8 sessions queued, the rest refused.
    assert.ok(timedOut.length >= 5 && timedOut.length <= 12, `a broadcast's message is counted once: ${timedOut.length} queued (failed at the timeout, never sent)`);
    assert.equal(refusedAtOnce.length + timedOut.length, 39);
    const first = await sent;
    assert.ok(first instanceof SessionStoreUnavailableError && first.kind === 'timeout');
  });

  test('Redis hung: the bytes awaiting its answer are capped (maxInFlightBytes): beyond it an operation fails at once, not applied; a timed-out one stays counted until Redis answers', async (t) => {
    const redis = await ownRedis(t);
    if (!redis) return;
    // Scaled with the measured pace: the set-up before Redis is paused (create, append) must get its answers
    // within it (a fixed 300 ms timed out a create under a busy loop on every core).
    const commandTimeout = pace.scaled(300);
    const store = track(createRedisSessionStore({ url: redis.url, commandTimeout, maxInFlightBytes: 4000, ...fast }));
    collect(store);
    const s = await store.create({ owner: null });
    redis.pause();
    t.after(() => redis.resume());
    const timedOut = await store.append(s.id, text('a'.repeat(3000))).catch((err: SessionStoreUnavailableError) => err);
    assert.ok(timedOut instanceof SessionStoreUnavailableError);
    assert.equal(timedOut.kind, 'timeout');
    const started = Date.now();
    const refused = await store.append(s.id, text('b'.repeat(3000))).catch((err: SessionStoreUnavailableError) => err);
    const elapsed = Date.now() - started;
    assert.ok(refused instanceof SessionStoreUnavailableError);
    assert.deepEqual([refused.kind, refused.applied], ['unavailable', 'no']);
    assert.match(refused.message, /bytes of operations await Redis's answer; \d+ more would pass maxInFlightBytes 4000/);
    assert.ok(elapsed < commandTimeout, `refused after ${elapsed} ms: at once, not after a timeout`);
    redis.resume();
    // A probe (PING) finds Redis answering again; then operations are sent again.
    // A retry only of what was not applied: on a loaded machine Redis can answer slower than this 300 ms
    // commandTimeout even after SIGCONT, and an append that timed out may still be applied (`applied: 'unknown'`),
    // so appending 'c' again then would store it twice (seen once, at load 18). Read before retrying such a one.
    let appended = false;
    const deadline = Date.now() + 10_000;
    while (!appended) {
      try {
        await store.append(s.id, text('c'));
        appended = true;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await delay(50);
        if ((err as SessionStoreUnavailableError).applied !== 'no') {
          // Ask until Redis answers whether it was applied (a read changes nothing, so it may be repeated).
          let seen: Awaited<ReturnType<RedisSessionStore['readAfter']>> | null = null;
          while (seen === null) {
            seen = await store.readAfter(s.id, 0).catch(() => null);
            if (seen === null && Date.now() > deadline) throw err;
            if (seen === null) await delay(50);
          }
          if (seen.ok && seen.messages.some((m) => String(m.data)[0] === 'c')) appended = true;
        }
      }
    }
    const replay = await store.readAfter(s.id, 0);
    assert.ok(replay.ok);
    assert.deepEqual(replay.messages.map((m) => String(m.data)[0]), ['a', 'c'], 'the timed-out append was applied late; the refused one never was');
  });
});

// ---------------------------------------------------------------------------
// Batches: a storm queues on the node instead of timing out in Redis's socket

describe('redis session store, requests across nodes', () => {
  test('a request counted by node A, then the session resumed on B: B is told pending while A lives (never runs it); A counts and appends nothing more (moved), but its reply to the counted request is kept, in seq order, and B then gets it as the duplicate\'s reply', async (t) => {
    const redis = await ownRedis(t);
    if (!redis) return;
    const p = prefix();
    const { a, b } = twoNodes({ url: redis.url, prefix: p });
    const s = await a.create({ owner: null });
    assert.deepEqual(await a.beginRequest(s.id, 1), { kind: 'new' }, 'A counts request 1 (and is slow to run it)');
    const r = await b.resume(s.id, 0);
    assert.ok(r.ok);
    assert.equal(r.record.lastCseq, 1);
    assert.deepEqual(await b.beginRequest(s.id, 1), { kind: 'pending', here: false }, 'counted by A, alive: B waits');
    assert.deepEqual(await a.beginRequest(s.id, 2), { kind: 'moved' }, 'A holds a stale attach: it counts nothing');
    assert.equal((await a.get(s.id))!.lastCseq, 1);
    const pushed = await a.append(s.id, { data: 'a broadcast A still routes', binary: false });
    assert.equal(!pushed.ok && pushed.reason, 'moved');
    assert.deepEqual(await a.append(s.id, { data: 'reply 1', binary: false }, 1), { ok: true, seq: 1 }, "A's reply to the request it counted is kept");
    assert.deepEqual(await b.beginRequest(s.id, 1), { kind: 'duplicate', replySeqs: [1] });
    const read = await b.readAfter(s.id, 0);
    assert.ok(read.ok);
    assert.deepEqual(read.messages.map((m) => String(m.data)), ['reply 1']);
    // A reply from B to a request B did not count, from a stale hold, stays refused (only the counting node's passes).
    assert.deepEqual(await b.beginRequest(s.id, 2), { kind: 'new' });
    const c = track(createRedisSessionStore({ url: redis.url, prefix: p }));
    collect(c);
    assert.ok((await c.resume(s.id, 1)).ok);
    assert.deepEqual(await b.append(s.id, { data: 'reply 2', binary: false }, 2), { ok: true, seq: 2 }, 'B counted 2: its reply is kept after C attached');
    const stray = await a.append(s.id, { data: 'not a reply of A', binary: false }, 2);
    assert.equal(!stray.ok && stray.reason, 'moved', 'a reply to a request another node counted is refused');
  });

  test('a request counted by node A and unfinished is not forgotten while B counts maxRememberedReplies later ones: B is told pending (not an old duplicate), and A\'s reply is then kept and remembered', async (t) => {
    // A resumed client re-sends every request A never answered; B counts the later ones as they arrive while it
    // waits on the first (counting runs ahead of running). Forgotten past the window, the first read as long answered
    // (duplicate, reply not remembered): B moved past it, and A ran it later with its reply refused.
    const redis = await ownRedis(t);
    if (!redis) return;
    const p = prefix();
    const window = 4;
    const { a, b } = twoNodes({ url: redis.url, prefix: p, maxRememberedReplies: window });
    const s = await a.create({ owner: null });
    assert.deepEqual(await a.beginRequest(s.id, 1), { kind: 'new' }, 'A counts request 1 (and stalls before running it)');
    assert.ok((await b.resume(s.id, 0)).ok);
    assert.deepEqual(await b.beginRequest(s.id, 1), { kind: 'pending', here: false });
    for (let c = 2; c <= 2 + 3 * window; c++) {
      assert.deepEqual(await b.beginRequest(s.id, c), { kind: 'new' }, `B counts ${c}`);
      await b.endRequest(s.id, c);
    }
    assert.deepEqual(await b.beginRequest(s.id, 1), { kind: 'pending', here: false }, 'still counted by A, alive: B waits, it does not move past it');
    assert.deepEqual(await b.beginRequest(s.id, 2), { kind: 'duplicate', replySeqs: null }, 'a finished request past the window is forgotten (as before)');
    const reply = await a.append(s.id, { data: 'reply 1', binary: false }, 1);
    assert.deepEqual(reply, { ok: true, seq: 1 }, "A's reply to the request it counted is kept, though another node holds the session");
    assert.deepEqual(await b.beginRequest(s.id, 1), { kind: 'duplicate', replySeqs: [1] }, 'and B answers it with that reply');
  });

  test('a request counted by a node that died (its key lapsed after leaseTtl) runs on the node that asks: counted there (new), once', async (t) => {
    const redis = await ownRedis(t);
    if (!redis) return;
    const p = prefix();
    const leaseTtl = 300;
    const { a, b } = twoNodes({ url: redis.url, prefix: p, leaseTtl });
    const s = await a.create({ owner: null });
    assert.deepEqual(await a.beginRequest(s.id, 1), { kind: 'new' });
    await a.close(); // A stops renewing its key (as a SIGKILLed process)
    assert.ok((await b.resume(s.id, 0)).ok);
    const started = Date.now();
    let v = await b.beginRequest(s.id, 1);
    while (v.kind === 'pending' && Date.now() - started < 10 * leaseTtl) {
      await delay(20);
      v = await b.beginRequest(s.id, 1);
    }
    assert.deepEqual(v, { kind: 'new' }, 'taken over once A is known dead');
    assert.ok(Date.now() - started >= leaseTtl / 3, 'not before its key could lapse');
    assert.deepEqual(await b.beginRequest(s.id, 1), { kind: 'pending', here: true }, 'counted by B now: not run a third time');
    await b.endRequest(s.id, 1);
    assert.deepEqual(await b.beginRequest(s.id, 1), { kind: 'duplicate', replySeqs: [] });
  });
});

describe('redis session store, counts of a live node that is still working on them', () => {
  test("a node's unfinished counts age from its last wait on the session, not from the count: while it asks about an earlier request (told pending), another node asking about a later one waits; once it stops, a lease later, or at once when it releases them, the other takes them over", async (t) => {
    // Seen in test/cli/sessions-redis.test.ts (a worker frozen past the lease, under load): the worker the clients
    // resumed on counted their later requests while it waited on the frozen worker's counts. A lease after those
    // counts, the client moved to the continued worker, which took them over by their age although the first was
    // alive and ran them as soon as its wait ended: run twice (the fence kept each push once), and out of order (the
    // taker ran them after the first had run the later ones).
    const redis = await ownRedis(t);
    if (!redis) return;
    const p = prefix();
    // Scaled with the measured pace: C must ask within a lease of B's last wait (a fixed 400 ms was once exceeded
    // under a busy loop per core, 2026-12-06: 'new' against 'pending').
    const leaseTtl = pace.scaled(600);
    const { a: b, b: c, lettersA: lettersB, lettersB: lettersC } = twoNodes({ url: redis.url, prefix: p, leaseTtl });
    const s = await b.create({ owner: null });
    assert.equal(await b.join(s.id, 'room'), true);
    // B counts 1, 2 and 3; one of its connections runs 1 (slowly), another waits on it and asks again and again.
    for (const n of [1, 2, 3]) assert.deepEqual(await b.beginRequest(s.id, n), { kind: 'new' }, `B counts ${n}`);
    const counted = Date.now();
    while (Date.now() - counted < 2 * leaseTtl) {
      assert.deepEqual(await b.beginRequest(s.id, 1), { kind: 'pending', here: true }, 'B waits on its own count of 1');
      await delay(40);
    }
    // Its counts are two leases old. The client moves to C, which asks about them: B works on them, so C waits.
    assert.ok((await c.resume(s.id, 0)).ok);
    assert.deepEqual(await c.beginRequest(s.id, 2), { kind: 'pending', here: false }, 'B waited on the session less than a lease ago: its count of 2 is not taken over');
    assert.deepEqual(await c.beginRequest(s.id, 3), { kind: 'pending', here: false });
    // B's connection left 2 unrun (it went while waiting): B releases it, and C runs it at once.
    await b.releaseRequests(s.id, [2]);
    const fenced = await b.fanOut.publish('room', text('B runs 2 after all'), undefined, { sessionId: s.id, cseq: 2 });
    assert.match(fenced.refused ?? '', /request 2 .*\(none: released\)/, "a fan-out of B's run of a count it released is refused");
    assert.deepEqual(await c.beginRequest(s.id, 2), { kind: 'new' }, 'released: taken over at once');
    assert.deepEqual(await b.beginRequest(s.id, 2), { kind: 'moved' }, 'B holds a stale attach: it counts nothing');
    // 3 is still B's, which no longer asks about the session (its connection went): a lease later C takes it over.
    await b.releaseRequests(s.id, [99]); // a count B does not hold changes nothing
    assert.deepEqual(await c.beginRequest(s.id, 3), { kind: 'pending', here: false });
    await delay(leaseTtl + 50);
    assert.deepEqual(await c.beginRequest(s.id, 3), { kind: 'new' }, 'a lease after B last waited on the session');
    // A finished count is not released: 1 ran on B (its reply stored), and C answers it as a duplicate.
    assert.ok((await b.append(s.id, text('reply 1'), 1)).ok);
    await b.releaseRequests(s.id, [1]);
    const one = await c.beginRequest(s.id, 1);
    assert.equal(one.kind, 'duplicate');
    assert.deepEqual([lettersB, lettersC], [[], []]);
  });
});

describe('redis session store, the fan-out fence', () => {
  test("a publish made by a request whose count another node took over (its node stalled past the lease, the fan-out reached Redis only after) is refused whole, appended to none; one made while the session was not moved, while the count is still the node's (a slow node), for a session gone, or with no fence at all goes out", async (t) => {
    // Seen before the fence (a worker SIGSTOPped past its lease, then continued): the publish its handler had handed to
    // its Redis connection before the freeze was appended after the other worker had run the same request again, and
    // the client got that push twice. Here the late arrival is made by the order of the calls.
    const redis = await ownRedis(t);
    if (!redis) return;
    const p = prefix();
    const leaseTtl = pace.scaled(300); // A's count of 2 must still be younger than a lease when its fan-out arrives
    const { a, b, lettersA, lettersB } = twoNodes({ url: redis.url, prefix: p, leaseTtl });
    const s = await a.create({ owner: null });
    assert.equal(await a.join(s.id, 'room'), true);
    const fenced = (store: RedisSessionStore, data: string, cseq: number, sessionId = s.id) => store.fanOut.publish('room', text(data), undefined, { sessionId, cseq });

    // Nobody else attached the session: A's fan-out of its own request goes out.
    assert.deepEqual(await a.beginRequest(s.id, 1), { kind: 'new' });
    assert.deepEqual(await fenced(a, 'p1', 1), { appended: 1, pending: false });
    await a.endRequest(s.id, 1);
    // The client sent three more; A counts them, then stalls: its client resumes on B.
    for (const c of [2, 3, 4]) assert.deepEqual(await a.beginRequest(s.id, c), { kind: 'new' }, `A counts ${c}`);
    assert.ok((await b.resume(s.id, 0)).ok);
    // A slow node, not a dead one: its count of 2 is still its own (B, asking, would wait: pending); its run is the only one.
    assert.deepEqual(await fenced(a, 'p2', 2), { appended: 1, pending: false }, "A's count: its fan-out goes out although B holds the session");
    await a.endRequest(s.id, 2);
    // A stalls past the lease: B takes its counts of 3 and 4 over and runs them (3 publishes and replies, 4 neither).
    const started = Date.now();
    /** B's answer for request c once it is no longer pending (A's count of it a lease old), or the last pending one. */
    const takenOver = async (c: number) => {
      let v = await b.beginRequest(s.id, c);
      while (v.kind === 'pending' && Date.now() - started < 30 * leaseTtl) {
        await delay(20);
        v = await b.beginRequest(s.id, c);
      }
      return v;
    };
    assert.deepEqual(await takenOver(3), { kind: 'new' }, "B takes A's count of 3 over once it is a lease old");
    assert.deepEqual(await fenced(b, 'p3', 3), { appended: 1, pending: false }, "B's run of 3 publishes");
    assert.ok((await b.append(s.id, text('reply 3'), 3)).ok);
    // A counted 4 a round trip after 3, so its count may still be younger than a lease here: B asks until it is not
    // (under a busy loop per core it was once still pending, 2026-12-06: 'pending' against 'new').
    assert.deepEqual(await takenOver(4), { kind: 'new' }, 'and 4');
    await b.endRequest(s.id, 4);

    // A continues: the fan-outs its handlers made before the stall reach Redis now. Refused, appended to none.
    const late3 = await fenced(a, 'p3', 3);
    assert.equal(late3.appended, 0);
    assert.equal(late3.pending, false);
    assert.match(late3.refused ?? '', new RegExp(`request 3 of session ${s.id} .*node ${b.nodeId}`), 'the count is B\'s now');
    const late4 = await fenced(a, 'p4', 4);
    assert.match(late4.refused ?? '', /request 4 .*none: ended or forgotten/, "B ended it: the count is nobody's");
    // Not a request's fan-out (a timer's, say): no fence, never refused by it.
    assert.deepEqual(await a.fanOut.publish('room', text('unfenced')), { appended: 1, pending: false });
    // The request's session gone (ended meanwhile, here on another node): no hold to compare, it goes out.
    const s2 = await a.create({ owner: null });
    assert.deepEqual(await a.beginRequest(s2.id, 1), { kind: 'new' });
    assert.equal(await b.end(s2.id, 'ended by the application'), true);
    assert.deepEqual(await fenced(a, 'after end', 1, s2.id), { appended: 1, pending: false });

    const read = await b.readAfter(s.id, 0);
    assert.ok(read.ok);
    assert.deepEqual(read.messages.map((m) => String(m.data)), ['p1', 'p2', 'p3', 'reply 3', 'unfenced', 'after end'], "each push once: none of A's late ones");
    // The store answers the refusal to its caller (the supervisor makes it a dead letter); it ends no session.
    assert.deepEqual([lettersA, lettersB], [[], []]);
  });
});

describe('redis session store, batches', () => {
  test('a storm in one turn goes in batches: 4,000 operations on 1,000 sessions (a broadcast of 3 messages, an ack each) run in call order in a few dozen script calls', async (t) => {
    if (binary === null) return void (await ownRedis(t));
    const { url } = await sharedRedis();
    const store = track(createRedisSessionStore({ url, prefix: prefix(), maxDetachedSessions: 2_000, ...fast }));
    const letters = collect(store);
    const admin = new Redis(url);
    t.after(() => admin.disconnect());
    const scripts = async (): Promise<number> => {
      let n = 0;
      for (const m of (await admin.info('commandstats')).matchAll(/^cmdstat_(?:evalsha|eval):calls=(\d+)/gm)) n += Number(m[1]);
      return n;
    };
    const sessions = await Promise.all(Array.from({ length: 1_000 }, () => store.create({ owner: null })));
    const before = await scripts();
    const batchesBefore = store.batches;
    // One turn: each message to every session (as a broadcast does), then every session acks the first.
    const appends = ['m1', 'm2', 'm3'].map((m) => sessions.map((s) => store.append(s.id, text(m))));
    const acks = sessions.map((s) => store.ack(s.id, 1));
    const results = await Promise.all(appends.flat());
    assert.deepEqual(new Set(results.map((r) => JSON.stringify(r))), new Set([1, 2, 3].map((seq) => JSON.stringify({ ok: true, seq }))));
    appends.forEach((round, k) => round.forEach((p, i) => void p.then((r) => assert.deepEqual(r, { ok: true, seq: k + 1 }, `session ${i}, message ${k + 1}`))));
    for (const a of await Promise.all(acks)) assert.equal(a.ok, true);
    const calls = (await scripts()) - before;
    const batches = store.batches - batchesBefore;
    // 4,000 operations, at most 512 per batch: 8 at least; one per operation would be 4,000.
    assert.ok(batches >= 8 && batches <= 40, `${batches} batches`);
    assert.equal(calls, batches, 'one script call (EVALSHA) per batch');
    for (const s of sessions.slice(0, 5)) {
      const r = await store.readAfter(s.id, 1);
      assert.ok(r.ok);
      assert.deepEqual(r.messages.map((m) => [m.seq, m.data]), [[2, 'm2'], [3, 'm3']], 'the ack ran after the appends it follows');
    }
    assert.deepEqual(letters, []);
  });

  test('a busy Redis delays, never fails: operations queued behind it far longer than commandTimeout all succeed, as Redis keeps answering within it', async (t) => {
    if (binary === null) return void (await ownRedis(t));
    const { url } = await sharedRedis();
    // Another client keeps Redis busy with scripts of `hogMs`, back to back: each of the store's batches waits for one at
    // most (a quarter of commandTimeout), but 24,000 operations take six rounds of batches or more (8 batches of 512 in
    // flight), so the last wait longer. Redis spins through every script: the test costs a core for as long as it runs.
    // Measured (2026-12-06, load ~8): Redis answers about 2 batches per script, so the 47-48 batches take 23-27 scripts;
    // with scripts of 250 ms that was 7-10 s of wall time and as much of Redis's CPU, 2.3-3.4 s with 100 ms. The scripts
    // are 100 ms scaled by the pace (at most the 250 ms the test had). The slack under commandTimeout after a script
    // stays the 750 ms it was (three scripts of 250 ms): it is how long Redis or this process may go without a core
    // while the suite runs CPU-bound files beside this one, not a multiple of the script. Three scripts' worth (315 ms
    // at a pace of 1.05) was too little: a quiet clean-clone run timed out 19,392 operations at 420 ms. A per-batch
    // clock from the send (the bug the head's clock avoids) still fails thousands: the queue lasts ~25 scripts.
    const hogMs = Math.min(250, pace.scaled(100));
    const commandTimeout = hogMs + 750;
    const store = track(createRedisSessionStore({ url, prefix: prefix(), commandTimeout, maxDetachedSessions: 5_000, ...fast }));
    collect(store);
    const sessions = await Promise.all(Array.from({ length: 2_000 }, () => store.create({ owner: null })));
    const admin = new Redis(url);
    t.after(() => admin.disconnect());
    const busy = `local t0 = redis.call('TIME') repeat local t = redis.call('TIME') until (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > ${hogMs * 1000} return 1`;
    let done = false;
    let scripts = 0;
    const hog = (async () => {
      while (!done) {
        await admin.eval(busy, 0);
        scripts++;
      }
    })();
    await delay(50);
    let slowest = 0;
    const batchesBefore = store.batches;
    const started = performance.now();
    const results = await Promise.allSettled(
      Array.from({ length: 12 }, (_, k) => sessions.map((s) => store.append(s.id, text(`m${k}`)).finally(() => (slowest = Math.max(slowest, performance.now() - started))))).flat(),
    );
    done = true;
    await hog;
    const failed = results.filter((r) => r.status === 'rejected');
    assert.equal(failed.length, 0, `${failed.length} failed, e.g. ${String((failed[0] as PromiseRejectedResult | undefined)?.reason)}`);
    assert.deepEqual(store.failures, { unavailable: 0, timeout: 0, error: 0 });
    assert.equal(store.status, 'up');
    t.diagnostic(`scripts of ${hogMs} ms, commandTimeout ${commandTimeout} ms: ${store.batches - batchesBefore} batches behind ${scripts} scripts, the slowest operation ${slowest.toFixed(0)} ms`);
    // What makes the test mean something: the last operations waited longer than commandTimeout.
    assert.ok(slowest > commandTimeout, `the slowest operation took ${slowest.toFixed(0)} ms: the queue did not outlast commandTimeout (${commandTimeout} ms)`);
  });

  test('a busy event loop is not a hung Redis: an answer that arrived while the loop was blocked past commandTimeout is taken, not timed out', async (t) => {
    if (binary === null) return void (await ownRedis(t));
    const { url } = await sharedRedis();
    // Scaled with the measured pace: the set-up before Redis is paused (create, append) must get its answers
    // within it (a fixed 300 ms timed out a create under a busy loop on every core).
    const commandTimeout = pace.scaled(200);
    const store = track(createRedisSessionStore({ url, prefix: prefix(), commandTimeout, ...fast }));
    collect(store);
    const s = await store.create({ owner: null });
    const appended = store.append(s.id, text('while blocked'));
    // The batch goes out on the next check phase; then the loop is blocked three times commandTimeout (Redis answers meanwhile).
    await new Promise((resolve) => setImmediate(resolve));
    const until = Date.now() + 3 * commandTimeout;
    while (Date.now() < until) {
      // blocked: no timer, no I/O
    }
    assert.deepEqual(await appended, { ok: true, seq: 1 });
    assert.deepEqual(store.failures, { unavailable: 0, timeout: 0, error: 0 });
    assert.equal(store.status, 'up');
  });
});

// ---------------------------------------------------------------------------
// Two nodes, two processes, one Redis


interface StoreNode {
  child: ChildProcessWithoutNullStreams;
  call<T = unknown>(op: string, ...args: unknown[]): Promise<T>;
  deadLetters: { sessionId: string; reason: string; messages: { seq: number; data: string }[] }[];
  kill9(): Promise<void>;
}

async function startStoreNode(t: TestContext, env: Record<string, string>): Promise<StoreNode> {
  const child = spawn(process.execPath, [compiledEntry('test/fixtures/session-store-node.ts')], {
    cwd: REPO_ROOT,
    env: { ...process.env, NODE_OPTIONS: '', ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  t.after(async () => {
    child.kill('SIGKILL');
    await exited;
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  const deadLetters: StoreNode['deadLetters'] = [];
  createInterface({ input: child.stdout }).on('line', (line) => {
    const msg = JSON.parse(line) as { n?: number; result?: unknown; error?: string; deadLetter?: StoreNode['deadLetters'][number] };
    if (msg.deadLetter) deadLetters.push(msg.deadLetter);
    if (msg.n === undefined) return;
    const p = pending.get(msg.n);
    pending.delete(msg.n);
    if (msg.error !== undefined) p?.reject(new Error(msg.error));
    else p?.resolve(msg.result);
  });
  void exited.then(() => {
    for (const p of pending.values()) p.reject(new Error(`store node exited: ${stderr}`));
    pending.clear();
  });
  let n = 0;
  const node: StoreNode = {
    child,
    deadLetters,
    call: <T,>(op: string, ...args: unknown[]) =>
      new Promise<T>((resolve, reject) => {
        pending.set(++n, { resolve: resolve as (v: unknown) => void, reject });
        child.stdin.write(JSON.stringify({ n, op, args }) + '\n');
      }),
    async kill9() {
      child.kill('SIGKILL');
      await exited;
    },
  };
  // A busy 2-core machine can take ~15 s to start a tsx process (measured: 14–19 s with ~29 at once).
  // within(): the 40 s timer is cleared once the node is up. A raw delay() in the race stayed pending and kept
  // this file's process alive up to 40 s after its last test (measured: 16 s at load ~9), holding a slot of the suite run.
  if ((await within(node.call('ready').then(() => true), 40_000)) === null) throw new Error(`store node not up in 40 s: ${stderr}`);
  return node;
}

describe('redis session store across processes', () => {
  test('a session created on node A resumes on node B with its buffered messages in order; a session of a node killed with SIGKILL is taken over, and its lease lapses into the resume window', { timeout: 120_000 }, async (t) => {
    if (binary === null) return void (await ownRedis(t));
    const { url } = await sharedRedis();
    const env = { REDIS_URL: url, PREFIX: prefix(), RESUME_WINDOW_MS: '1500', LEASE_TTL_MS: '1500' };
    const [a, b] = await Promise.all([startStoreNode(t, env), startStoreNode(t, env)]);

    type Created = { id: string; token: string; epoch: string };
    const s = await a.call<Created>('create', { owner: 'alice', data: { cart: 3 } });
    for (let i = 1; i <= 50; i++) await a.call('append', s.id, text(`m${i}`));
    await a.call('join', s.id, 'news');
    await a.call('ack', s.id, 10);
    assert.equal(await a.call('detach', s.id), true);
    const v = await b.call<{ ok: boolean; record: { state: string; topics: string[]; data: unknown; lastSeq: number } }>('verify', { id: s.id, token: s.token, owner: 'alice', epoch: s.epoch });
    assert.equal(v.ok, true);
    assert.deepEqual([v.record.state, v.record.topics, v.record.data, v.record.lastSeq], ['detached', ['news'], { cart: 3 }, 50]);
    const replay = await b.call<{ ok: boolean; messages: { seq: number; data: string }[] }>('readAfter', s.id, 10);
    assert.ok(replay.ok);
    assert.deepEqual(replay.messages.map((m) => m.seq), Array.from({ length: 40 }, (_, i) => i + 11), 'in order, from after the client position');
    assert.deepEqual(replay.messages.map((m) => m.data), Array.from({ length: 40 }, (_, i) => `m${i + 11}`));
    assert.equal(await b.call('attach', s.id), true);
    assert.deepEqual(await b.call('append', s.id, text('new on B')), { ok: true, seq: 51 }, 'B continues the numbering');

    // A takeover: the client left A without A noticing (half-open) and resumed on B; A's late detach must not undo it.
    const half = await a.call<Created>('create', { owner: null });
    assert.equal((await b.call<{ ok: boolean }>('verify', { id: half.id, token: half.token, owner: null, epoch: half.epoch })).ok, true);
    assert.equal(await b.call('attach', half.id), true);
    assert.equal(await a.call('detach', half.id), false, 'A no longer holds it');
    assert.equal((await b.call<{ state: string }>('get', half.id)).state, 'attached');
    // A stale resume-window timer: A detached s, B resumed it and detached it again; A's expire must not end it.
    const hop = await a.call<Created>('create', { owner: null });
    assert.equal(await a.call('detach', hop.id), true);
    assert.equal(await b.call('attach', hop.id), true);
    assert.equal(await b.call('detach', hop.id), true);
    assert.equal(await a.call('expire', hop.id), false, 'its window restarted on B');
    assert.equal((await b.call<{ state: string }>('get', hop.id)).state, 'detached');

    // A node dies holding sessions: one is taken over at once; the other's lease lapses, and a sweep on B detaches it.
    const taken = await a.call<Created>('create', { owner: null });
    const orphan = await a.call<Created>('create', { owner: null });
    for (const x of [taken, orphan]) for (let i = 1; i <= 3; i++) await a.call('append', x.id, text(`${x.id.slice(0, 4)}-${i}`));
    await a.kill9();
    const tv = await b.call<{ ok: boolean; record: { state: string } }>('verify', { id: taken.id, token: taken.token, owner: null, epoch: taken.epoch });
    assert.deepEqual([tv.ok, tv.record.state], [true, 'attached'], 'still attached to the dead node: a resume is a takeover');
    const tr = await b.call<{ ok: boolean; messages: unknown[] }>('readAfter', taken.id, 1);
    assert.deepEqual([tr.ok, tr.messages.length], [true, 2]);
    assert.equal(await b.call('attach', taken.id), true);
    await delay(1700); // past A's lease (1500 ms from its last renewal)
    await b.call('sweep');
    assert.equal((await b.call<{ state: string }>('get', orphan.id)).state, 'detached', 'the lapsed lease detached it: its resume window runs');
    assert.equal((await b.call<{ state: string }>('get', taken.id)).state, 'attached', 'B renews the one it took over');
    await delay(1600); // past the resume window
    assert.equal(await b.call('sweep'), 1);
    assert.deepEqual(b.deadLetters.map((l) => [l.sessionId, l.reason, l.messages.map((m) => m.seq)]), [[orphan.id, 'expired', [1, 2, 3]]], 'the sweeping node hands the dead node\'s messages over (R12)');
  });
});

// ---------------------------------------------------------------------------
// The same as the memory store, step by step

describe('redis session store, differential', () => {
  test('random operations (seeded) give the same answers, records, dead letters and stats as the memory store, on one fake clock', { timeout: 120_000 }, async (t) => {
    if (binary === null) return void (await ownRedis(t));
    const { url } = await sharedRedis();
    let seed = 0xc0ffee;
    const random = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x80000000);
    let now = 1_700_000_000_000;
    const limits = { resumeWindow: 500, maxMessages: 8, maxBytes: 200, maxBufferedBytes: 1200, maxDetachedSessions: 3, maxRememberedReplies: 3, now: () => now };
    const memory = createMemorySessionStore(limits);
    const redis = track(createRedisSessionStore({ url, prefix: prefix(), ...limits, commandTimeout: 5_000 }));
    const memLetters: SessionDeadLetter[] = [];
    const redisLetters: SessionDeadLetter[] = [];
    memory.start({ deadLetter: (l) => memLetters.push(l), logger: null });
    redis.start({ deadLetter: (l) => redisLetters.push(l), logger: null });
    // Session i is memIds[i] in one store and redisIds[i] in the other; answers are compared with ids replaced by `#i`.
    const memIds: string[] = [];
    const redisIds: string[] = [];
    const tokens: [string, string][] = [];
    const label = (value: unknown, ids: string[]): unknown =>
      value === undefined ? undefined : JSON.parse(JSON.stringify(value, (_k, v: unknown) => (typeof v === 'string' ? ids.reduce((s, id, i) => s.split(id).join(`#${i}`), v) : v)));
    const same = async (what: string, op: (store: SessionStore, id: string, i: number) => Promise<unknown>, i: number) => {
      const m = await op(memory, memIds[i]!, 0);
      const r = await op(redis, redisIds[i]!, 1);
      assert.deepEqual(label(r, redisIds), label(m, memIds), what);
    };
    const counts = new Map<string, number>();
    let compared = 0;
    const STEPS = Number(process.env.DIFF_STEPS ?? 1500);
    for (let step = 0; step < STEPS; step++) {
      const op = random();
      const i = Math.floor(random() * Math.max(1, memIds.length));
      const at = `step ${step}`;
      let name: string;
      if (memIds.length === 0 || op < 0.07) {
        name = 'create';
        const m = await memory.create({ owner: op < 0.03 ? 'alice' : null, data: { step } });
        const r = await redis.create({ owner: op < 0.03 ? 'alice' : null, data: { step } });
        memIds.push(m.id);
        redisIds.push(r.id);
        tokens.push([m.token, r.token]);
        assert.deepEqual(label(r.record, redisIds), label(m.record, memIds), `${at} create`);
      } else if (op < 0.45) {
        name = 'append';
        const data = 'x'.repeat(1 + Math.floor(random() * 60));
        await same(`${at} append`, (s, id) => s.append(id, { data, binary: false }), i);
      } else if (op < 0.55) {
        name = 'ack';
        const rec = await memory.get(memIds[i]!);
        const seq = rec ? Math.floor(random() * (rec.lastSeq + 1)) : 0;
        await same(`${at} ack ${seq}`, (s, id) => s.ack(id, seq), i);
      } else if (op < 0.6) {
        name = 'readAfter';
        const rec = await memory.get(memIds[i]!);
        const seq = rec ? Math.floor(random() * (rec.lastSeq + 2)) : 0;
        await same(`${at} readAfter ${seq}`, (s, id) => s.readAfter(id, seq), i);
      } else if (op < 0.7) {
        name = 'detach';
        await same(`${at} detach`, (s, id) => s.detach(id), i);
      } else if (op < 0.75) {
        name = 'attach';
        await same(`${at} attach`, (s, id) => s.attach(id), i);
      } else if (op < 0.8) {
        name = 'request';
        const rec = await memory.get(memIds[i]!);
        const cseq = rec ? Math.max(1, rec.lastCseq + Math.floor(random() * 3) - 1) : 1;
        await same(`${at} beginRequest ${cseq}`, (s, id) => s.beginRequest(id, cseq), i);
        const seq = 1 + Math.floor(random() * 20);
        await same(`${at} rememberReply`, (s, id) => s.rememberReply(id, cseq, seq), i);
      } else if (op < 0.84) {
        name = 'topic';
        const topic = `t${Math.floor(random() * 3)}`;
        const join = random() < 0.6;
        await same(`${at} ${join ? 'join' : 'leave'} ${topic}`, (s, id) => (join ? s.join(id, topic) : s.leave(id, topic)), i);
      } else if (op < 0.88) {
        name = 'verify';
        await same(`${at} verify`, (s, id, which) => s.verify({ id, token: tokens[i]![which]!, owner: null }), i);
      } else if (op < 0.94) {
        name = 'clock';
        now += Math.floor(random() * 200);
      } else if (op < 0.97) {
        name = 'sweep';
        assert.equal(await redis.sweep(), await memory.sweep(), `${at} sweep`);
      } else if (op < 0.985) {
        name = 'expire';
        await same(`${at} expire`, (s, id) => s.expire(id), i);
      } else {
        name = 'end';
        await same(`${at} end`, (s, id) => s.end(id, 'the application ended it'), i);
      }
      counts.set(name, (counts.get(name) ?? 0) + 1);
      await same(`${at} (${name}) get`, (s, id) => s.get(id), i);
      assert.deepEqual(label(redisLetters.slice(compared), redisIds), label(memLetters.slice(compared), memIds), `${at} (${name}): the same dead letters, in the same order`);
      compared = memLetters.length;
      if (step % 25 === 0) assert.deepEqual(await redis.stats(), await memory.stats(), `${at} stats`);
    }
    assert.deepEqual(await redis.stats(), await memory.stats(), 'stats at the end');
    const reasons = new Set(memLetters.map((l) => l.reason));
    t.diagnostic(`${memIds.length} sessions, ${memLetters.length} dead letters (${[...reasons].join(', ')}); ops ${JSON.stringify(Object.fromEntries(counts))}`);
    for (const reason of ['overflow', 'memory', 'evicted', 'expired', 'ended', 'unknown']) assert.ok(reasons.has(reason as never), `the run reached ${reason}`);
  });
});
