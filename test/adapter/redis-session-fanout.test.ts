/**
 * The fan-out in the Redis session store (docs/sessions.md, "Fan-out in the
 * store"), against a REAL redis-server (test/helpers/redis.ts): a broadcast or
 * publish is appended by ONE script of the publishing node to every member
 * session's stream (each under its next seq), whatever node holds it or none;
 * each node holding members attached is told which seq each got. Large
 * fan-outs go in chunks (FANOUT_CHUNK members per call), in order. Without
 * redis-server: SKIPPED (under CI=true: a failure).
 */
import { after, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { createRedisSessionStore, type RedisSessionStore, type RedisSessionStoreOptions } from '../../src/adapter/redis-session-store.ts';
import { FANOUT_CHUNK } from '../../src/adapter/redis-session-scripts.ts';
import type { FanOutDelivery, SessionDeadLetter } from '../../src/adapter/session-store.ts';
import { findRedisServer, spawnRedisServer, startRedis, type RedisServer } from '../helpers/redis.ts';
import { delay, waitFor } from '../helpers/server.ts';
import { pace } from '../helpers/pace.ts';

let shared: Promise<RedisServer> | null = null;
/**
 * One redis-server for the file (each test has its own key prefix), disposed after the file's tests, so a
 * test's stores close while it still runs. A redis-server of the test's own was killed first (`t.after`
 * hooks run in the order they were added) and the stores' close then waited out ioredis's 2 s disconnect
 * timer, past the file's last test: 2–3 s more for the file's process. Without the binary: startRedis skips
 * (or fails under CI=true).
 */
async function redisFor(t: TestContext): Promise<RedisServer | null> {
  const binary = findRedisServer();
  if (binary === null) return startRedis(t);
  shared ??= spawnRedisServer(binary);
  return shared;
}
after(async () => {
  if (shared) await (await shared).dispose();
});

interface Node {
  store: RedisSessionStore;
  deliveries: FanOutDelivery[];
  letters: SessionDeadLetter[];
  resyncs: number;
}

async function node(t: TestContext, redis: RedisServer, prefix: string, extra: Partial<RedisSessionStoreOptions> = {}): Promise<Node> {
  const store = createRedisSessionStore({ url: redis.url, prefix, ...extra });
  const n: Node = { store, deliveries: [], letters: [], resyncs: 0 };
  store.start({
    logger: null,
    deadLetter: (l) => n.letters.push(l),
    fanOutDelivered: (d) => n.deliveries.push(d),
    fanOutResync: () => n.resyncs++,
  });
  t.after(() => store.close());
  await waitFor(() => store.status === 'up' && n.resyncs > 0, 10_000, 'the store to reach redis and subscribe its channel');
  return n;
}

/** Every (session, seq, payload) this node was told of. */
function told(n: Node): Array<{ id: string; seq: number; data: string }> {
  return n.deliveries.flatMap((d) => (d.message === null ? [] : d.sessions.map((s) => ({ id: s.id, seq: s.seq, data: String(d.message!.data) }))));
}

test('a publish reaches the members of its topic, a broadcast every session: each appended once under its next seq, held attached or detached, and each holder node told its pairs', async (t) => {
  const redis = await redisFor(t);
  if (!redis) return;
  const prefix = `fan-${randomBytes(4).toString('hex')}:`;
  const [a, b] = [await node(t, redis, prefix), await node(t, redis, prefix)];
  const s1 = await a.store.create({ owner: null });
  const s2 = await a.store.create({ owner: null });
  const s3 = await b.store.create({ owner: null });
  assert.equal(await a.store.join(s1.id, 'room'), true);
  assert.equal(await b.store.join(s3.id, 'room'), true);
  assert.equal(await b.store.detach(s3.id), true);

  const p = await b.store.fanOut.publish('room', { data: 'm1', binary: false });
  assert.deepEqual(p, { appended: 2, pending: false });
  const q = await a.store.fanOut.broadcast({ data: Buffer.from([1, 2, 3]), binary: true });
  assert.deepEqual(q, { appended: 3, pending: false });

  await waitFor(() => told(a).length >= 3, 5_000, "A's notifications");
  assert.deepEqual(told(a), [
    { id: s1.id, seq: 1, data: 'm1' },
    { id: s1.id, seq: 2, data: '\u0001\u0002\u0003' },
    { id: s2.id, seq: 1, data: '\u0001\u0002\u0003' },
  ]);
  const binary = a.deliveries.find((d) => d.message?.binary === true)!;
  assert.ok(Buffer.isBuffer(binary.message!.data), 'a binary message arrives as bytes');
  // s3 is detached: no node is told; its stream holds both for the resume.
  assert.deepEqual(told(b), []);
  const read = await b.store.readAfter(s3.id, 0);
  assert.ok(read.ok);
  assert.deepEqual(read.messages.map((m) => [m.seq, m.binary, Buffer.from(m.data).toString('hex')]), [
    [1, false, Buffer.from('m1').toString('hex')],
    [2, true, '010203'],
  ]);
  // Left the topic: a publish no longer reaches it; ended: nothing reaches it.
  assert.equal(await a.store.leave(s1.id, 'room'), true);
  assert.deepEqual(await a.store.fanOut.publish('room', { data: 'm3', binary: false }), { appended: 1, pending: false });
  await a.store.end(s2.id, 'test');
  assert.deepEqual(await a.store.fanOut.broadcast({ data: 'm4', binary: false }), { appended: 2, pending: false });
  assert.equal((await a.store.get(s1.id))!.lastSeq, 3);
  assert.equal((await b.store.get(s3.id))!.lastSeq, 4);
});

test('attach names the node: a fan-out after it is told to the new holder, and the attach itself reports the last seq (one appended between the replay read and the attach)', async (t) => {
  const redis = await redisFor(t);
  if (!redis) return;
  const prefix = `fan-${randomBytes(4).toString('hex')}:`;
  const [a, b] = [await node(t, redis, prefix), await node(t, redis, prefix)];
  const s = await a.store.create({ owner: null });
  await a.store.fanOut.broadcast({ data: 'before', binary: false });
  await waitFor(() => told(a).length === 1, 5_000, 'A told');
  // B takes it over: the fan-out told A, so B's attach reports seq 1 as a position (no message).
  assert.equal(await b.store.attach(s.id), true);
  assert.deepEqual(b.deliveries.at(-1), { message: null, sessions: [{ id: s.id, seq: 1 }], ended: [] });
  await a.store.fanOut.broadcast({ data: 'after', binary: false });
  await waitFor(() => told(b).length === 1, 5_000, 'B told');
  assert.deepEqual(told(b), [{ id: s.id, seq: 2, data: 'after' }]);
  assert.equal(told(a).length, 1, 'A is no longer told');
});

test(`a broadcast to more sessions than one call appends (${FANOUT_CHUNK}) goes on in later calls, in order: every session gets every broadcast once, and two broadcasts in the order they were made`, async (t) => {
  const redis = await redisFor(t);
  if (!redis) return;
  const prefix = `fan-${randomBytes(4).toString('hex')}:`;
  const a = await node(t, redis, prefix);
  const b = await node(t, redis, prefix);
  const N = FANOUT_CHUNK * 2 + 100;
  const ids: string[] = [];
  for (let i = 0; i < N; i += 200) {
    const made = await Promise.all(Array.from({ length: Math.min(200, N - i) }, () => a.store.create({ owner: null })));
    ids.push(...made.map((m) => m.id));
  }
  // Half detached: their appends wait in the stream, the rest are told to A.
  await Promise.all(ids.filter((_, i) => i % 2 === 0).map((id) => a.store.detach(id)));
  // Two nodes publish at once: each node's broadcasts keep their order in every stream.
  const results = await Promise.all([
    a.store.fanOut.broadcast({ data: 'a1', binary: false }, 'a1'),
    a.store.fanOut.broadcast({ data: 'a2', binary: false }, 'a2'),
    b.store.fanOut.broadcast({ data: 'b1', binary: false }, 'b1'),
    b.store.fanOut.broadcast({ data: 'b2', binary: false }, 'b2'),
  ]);
  assert.ok(results.some((r) => r.pending), `a fan-out of ${N} sessions does not fit one call: ${JSON.stringify(results)}`);
  assert.ok(results.every((r) => r.appended <= FANOUT_CHUNK), 'no call appends more than its budget');
  const probe = new Redis(redis.url);
  t.after(() => probe.disconnect());
  let queued = -1;
  const drained = (): boolean => queued === 0;
  const poll = setInterval(() => void probe.llen(`${prefix}fq`).then((n) => (queued = n)), 20);
  t.after(() => clearInterval(poll));
  await waitFor(drained, 20_000, 'the fan-out queue to drain');
  clearInterval(poll);
  for (const id of ids) {
    const read = await a.store.readAfter(id, 0);
    assert.ok(read.ok);
    const got = read.messages.map((m) => String(m.data));
    assert.deepEqual(read.messages.map((m) => m.seq), [1, 2, 3, 4], `session ${id}: seqs`);
    assert.deepEqual(got.filter((m) => m.startsWith('a')), ['a1', 'a2'], `session ${id}: A's in order`);
    assert.deepEqual(got.filter((m) => m.startsWith('b')), ['b1', 'b2'], `session ${id}: B's in order`);
  }
  // The attached ones were told to A, each seq once.
  await waitFor(() => told(a).length >= (N / 2) * 4, 10_000, 'every notification');
  const pairs = told(a).map((x) => `${x.id}:${x.seq}`);
  assert.equal(new Set(pairs).size, pairs.length, 'no pair told twice');
  assert.equal(pairs.length, (N / 2) * 4);
  // Every notification names its fan-out, those of its queued chunks (fanWork, maybe another node's) too.
  assert.deepEqual(a.deliveries.filter((d) => d.message !== null && d.fanOut !== String(d.message.data)), []);
});

test("a fan-out its caller named: each notification carries the name, also that of one Redis ran after the call had timed out (the caller, whose failure path delivered it to its own sessions already, tells it from the others); a name that could break the notification's line is refused", async (t) => {
  // Its own redis-server: it is stopped (SIGSTOP) for a while.
  const redis = await startRedis(t);
  if (!redis) return;
  const prefix = `fan-${randomBytes(4).toString('hex')}:`;
  const commandTimeout = 500;
  const a = await node(t, redis, prefix, { commandTimeout });
  const s = await a.store.create({ owner: null });
  assert.deepEqual(await a.store.fanOut.broadcast({ data: 'named', binary: false }, 'node-a.1'), { appended: 1, pending: false });
  assert.deepEqual(await a.store.fanOut.publish('nobody', { data: 'none', binary: false }, 'node-a.2'), { appended: 0, pending: false });
  assert.deepEqual(await a.store.fanOut.broadcast({ data: 'anonymous', binary: false }), { appended: 1, pending: false });
  await waitFor(() => told(a).length >= 2, 5_000, 'the notifications');
  assert.deepEqual(a.deliveries.map((d) => [d.fanOut, String(d.message?.data)]), [['node-a.1', 'named'], [undefined, 'anonymous']]);

  redis.pause();
  const late = a.store.fanOut.broadcast({ data: 'late', binary: false }, 'node-a.3');
  await assert.rejects(late, (err: { kind?: string; applied?: string }) => err.kind === 'timeout' && err.applied === 'unknown');
  redis.resume();
  await waitFor(() => told(a).some((x) => x.data === 'late'), 10_000, "the late fan-out's notification");
  assert.deepEqual(a.deliveries.at(-1), { message: { data: 'late', binary: false, bytes: 4 }, sessions: [{ id: s.id, seq: 3 }], ended: [], fanOut: 'node-a.3' });

  await assert.rejects(a.store.fanOut.broadcast({ data: 'x', binary: false }, 'two words'), RangeError);
  await assert.rejects(a.store.fanOut.broadcast({ data: 'x', binary: false }, 'line\nbreak'), RangeError);
  assert.equal((await a.store.get(s.id))!.lastSeq, 3);
});

test('a detached session past its bound during a fan-out: it ends (overflow) with its messages and the refused one as dead letters of the publishing node, its holder is told, and a resume gets overflow', async (t) => {
  const redis = await redisFor(t);
  if (!redis) return;
  const prefix = `fan-${randomBytes(4).toString('hex')}:`;
  const a = await node(t, redis, prefix, { maxMessages: 2 });
  const b = await node(t, redis, prefix, { maxMessages: 2 });
  const s = await a.store.create({ owner: null });
  await a.store.detach(s.id);
  for (const m of ['x1', 'x2']) assert.deepEqual(await b.store.fanOut.broadcast({ data: m, binary: false }), { appended: 1, pending: false });
  assert.deepEqual(await b.store.fanOut.broadcast({ data: 'x3', binary: false }), { appended: 0, pending: false });
  assert.equal(b.letters.length, 1);
  const letter = b.letters[0]!;
  assert.equal(letter.reason, 'overflow');
  assert.deepEqual(letter.messages.map((m) => [m.seq, String(m.data)]), [[1, 'x1'], [2, 'x2'], [0, 'x3']]);
  await waitFor(() => a.deliveries.some((d) => d.ended.length > 0), 5_000, 'the holder to be told');
  assert.equal(a.deliveries.find((d) => d.ended.length > 0)!.ended[0]!.id, s.id);
  assert.equal(a.deliveries.find((d) => d.ended.length > 0)!.ended[0]!.reason, 'overflow');
  const v = await a.store.verify({ id: s.id, token: s.token, owner: null });
  assert.equal(v.ok, false);
  assert.equal(!v.ok && v.reason, 'overflow');
});

test('peekAfter reads what a connection lacks without trimming (the node wrote more than its client may have received); readAfter, the resume, trims', async (t) => {
  const redis = await redisFor(t);
  if (!redis) return;
  const a = await node(t, redis, `fan-${randomBytes(4).toString('hex')}:`);
  const s = await a.store.create({ owner: null });
  for (const m of ['m1', 'm2', 'm3']) await a.store.fanOut.broadcast({ data: m, binary: false });
  const peek = await a.store.peekAfter(s.id, 1);
  assert.ok(peek.ok);
  assert.deepEqual(peek.messages.map((m) => [m.seq, String(m.data)]), [[2, 'm2'], [3, 'm3']]);
  assert.equal((await a.store.get(s.id))!.ackedSeq, 0, 'nothing trimmed');
  // A client that got only seq 1 still resumes over all of it.
  const read = await a.store.readAfter(s.id, 1);
  assert.ok(read.ok);
  assert.deepEqual(read.messages.map((m) => m.seq), [2, 3]);
  assert.equal((await a.store.get(s.id))!.ackedSeq, 1, 'the resume trims to its position');
  // Below the acknowledged seq: what is still held (the caller sees the seqs it lacks are gone); beyond the last: restarted.
  assert.deepEqual((await a.store.peekAfter(s.id, 0)).ok && (await a.store.peekAfter(s.id, 0) as { messages: { seq: number }[] }).messages.map((m) => m.seq), [2, 3]);
  const beyond = await a.store.peekAfter(s.id, 9);
  assert.equal(!beyond.ok && beyond.reason, 'restarted');
});

test('the fan-out counts what it appends once per chunk: the cluster-wide byte bound (maxBufferedBytes) still ends the oldest detached session in the middle of a chunk, and the held messages and bytes stay exact', async (t) => {
  const redis = await startRedis(t);
  if (!redis) return;
  const prefix = `fan-${randomBytes(4).toString('hex')}:`;
  // Room for 9 messages of 10 bytes over all sessions: the second broadcast to 5 sessions passes it at its fifth member.
  const a = await node(t, redis, prefix, { maxBufferedBytes: 90 });
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) ids.push((await a.store.create({ owner: null })).id);
  for (const id of ids.slice(0, 2)) await a.store.detach(id);
  assert.deepEqual(await a.store.fanOut.broadcast({ data: '0123456789', binary: false }), { appended: 5, pending: false });
  assert.deepEqual(await a.store.stats(), { sessions: 5, detached: 2, bufferedMessages: 5, bufferedBytes: 50, tombstones: 0 });
  // 4 more fit (90 bytes); the fifth ends the oldest detached session (its held message freed), then is appended.
  assert.deepEqual(await a.store.fanOut.broadcast({ data: 'abcdefghij', binary: false }), { appended: 5, pending: false });
  assert.equal(a.letters.length, 1);
  assert.equal(a.letters[0]!.reason, 'memory');
  assert.equal(a.letters[0]!.sessionId, ids[0]);
  assert.deepEqual(a.letters[0]!.messages.map((m) => [m.seq, String(m.data)]), [[1, '0123456789'], [2, 'abcdefghij']]);
  // 4 live sessions × 2 messages of 10 bytes: the counters match the streams (no append counted twice or missed).
  assert.deepEqual(await a.store.stats(), { sessions: 4, detached: 1, bufferedMessages: 8, bufferedBytes: 80, tombstones: 1 });
});

/** Sessions made by `n`, in join order (the order the fan-out walks them: `P all` by score). */
async function joined(n: Node, probe: Redis, prefix: string, count: number): Promise<string[]> {
  for (let i = 0; i < count; i += 200) await Promise.all(Array.from({ length: Math.min(200, count - i) }, () => n.store.create({ owner: null })));
  const order = await probe.zrange(`${prefix}all`, '0', '-1');
  assert.equal(order.length, count);
  return order;
}

/** Each session's held messages, as `seq:data`, straight from its stream. */
async function streams(probe: Redis, prefix: string, ids: string[]): Promise<string[][]> {
  const replies = (await probe.pipeline(ids.map((id) => ['xrange', `${prefix}x:${id}`, '-', '+'])).exec())!;
  return replies.map(([err, entries]) => {
    assert.equal(err, null);
    return (entries as [string, string[]][]).map(([entryId, fields]) => `${entryId.split('-')[0]}:${fields[fields.indexOf('d') + 1]}`);
  });
}

test('an append that fails in the middle of a queued chunk (a member whose stream key is not a stream) does not start the job over: every other member gets the message once, told once; the failing one is a dead letter (fanout) and lives on; the queue drains', async (t) => {
  const redis = await redisFor(t);
  if (!redis) return;
  const prefix = `fan-${randomBytes(4).toString('hex')}:`;
  const a = await node(t, redis, prefix);
  const probe = new Redis(redis.url);
  t.after(() => probe.disconnect());
  const N = FANOUT_CHUNK + 20;
  const order = await joined(a, probe, prefix, N);
  // The third member of the second chunk (a fanWork's): XADD to it fails (WRONGTYPE), after two appends of that chunk.
  const bad = order[FANOUT_CHUNK + 2]!;
  const before = order[FANOUT_CHUNK + 1]!;
  await probe.set(`${prefix}x:${bad}`, 'not a stream');
  assert.deepEqual(await a.store.fanOut.broadcast({ data: 'once', binary: false }), { appended: FANOUT_CHUNK, pending: true });
  // Each batch the store sends while it owes a fanWork carries one: before the fix, each appended the message again to
  // the members before the failing one (new seqs, new notifications), and the job never got past it.
  const budget = pace.scaled(20_000);
  const deadline = Date.now() + budget;
  for (;;) {
    await a.store.stats();
    const [left, copies] = await Promise.all([probe.llen(`${prefix}fq`), probe.xlen(`${prefix}x:${before}`)]);
    assert.ok(copies <= 1, `session ${before}, before the failing member, was appended to ${copies} times`);
    if (left === 0) break;
    assert.ok(Date.now() < deadline, `the fan-out queue drains within ${budget} ms (${left} left)`);
    await delay(20);
  }
  const others = order.filter((id) => id !== bad);
  const held = await streams(probe, prefix, others);
  others.forEach((id, i) => assert.deepEqual(held[i], ['1:once'], `session ${id}`));
  const letters = a.letters.filter((l) => l.reason === 'fanout');
  assert.equal(letters.length, 1, JSON.stringify(a.letters.map((l) => [l.sessionId, l.reason, l.detail])));
  assert.equal(letters[0]!.sessionId, bad);
  assert.match(letters[0]!.detail, /WRONGTYPE/);
  assert.deepEqual(letters[0]!.messages.map((m) => [m.seq, String(m.data)]), [[0, 'once']]);
  assert.equal((await a.store.get(bad))?.lastSeq, 0, 'the failing member lives on, without a seq for the message');
  // Every member (attached here) told once, the failing one never.
  await waitFor(() => told(a).length >= others.length, 10_000, 'every notification');
  await a.store.stats();
  const pairs = told(a).map((x) => `${x.id}:${x.seq}:${x.data}`);
  assert.deepEqual(pairs.sort(), others.map((id) => `${id}:1:once`).sort());
  // Nothing is owed: no batch carries a fanWork any more.
  const riding = a.store.operations['fanWork'] ?? 0;
  for (let i = 0; i < 5; i++) await a.store.stats();
  assert.equal(a.store.operations['fanWork'] ?? 0, riding);
  assert.deepEqual((await a.store.stats()).bufferedMessages, others.length);
});

test("an append that fails in a fan-out's first chunk: the fan-out succeeds for the others (the node's failure path, which delivers to its members itself, does not run: the notifications are the only delivery), the failing member is a dead letter (fanout)", async (t) => {
  const redis = await redisFor(t);
  if (!redis) return;
  const prefix = `fan-${randomBytes(4).toString('hex')}:`;
  const [a, b] = [await node(t, redis, prefix), await node(t, redis, prefix)];
  const probe = new Redis(redis.url);
  t.after(() => probe.disconnect());
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) ids.push((await (i % 2 === 0 ? a : b).store.create({ owner: null })).id);
  const bad = ids[2]!;
  await probe.set(`${prefix}x:${bad}`, 'not a stream');
  // Before the fix: rejected (WRONGTYPE) after ids[0] and ids[1] were appended and their holders told.
  assert.deepEqual(await b.store.fanOut.broadcast({ data: 'm', binary: false }), { appended: 4, pending: false });
  const others = ids.filter((id) => id !== bad);
  assert.deepEqual(await streams(probe, prefix, others), others.map(() => ['1:m']));
  assert.deepEqual(b.letters.map((l) => [l.sessionId, l.reason, l.messages.map((m) => [m.seq, String(m.data)])]), [[bad, 'fanout', [[0, 'm']]]]);
  await waitFor(() => told(a).length + told(b).length >= 4, 5_000, 'the holders told');
  assert.deepEqual(told(a).map((x) => x.id).sort(), [ids[0]!, ids[4]!].sort());
  assert.deepEqual(told(b).map((x) => x.id), [ids[1]!, ids[3]!]);
  // The next fan-out goes on as before: the failing member keeps failing alone.
  assert.deepEqual(await a.store.fanOut.broadcast({ data: 'n', binary: false }), { appended: 4, pending: false });
  assert.equal(a.letters.filter((l) => l.sessionId === bad).length, 1);
});

test('a fan-out Redis refuses before it writes anything (out of memory) fails whole: appended to none, so the node reports it and no notification follows; it works once Redis takes writes again', async (t) => {
  const redis = await redisFor(t);
  if (!redis) return;
  const prefix = `fan-${randomBytes(4).toString('hex')}:`;
  const a = await node(t, redis, prefix);
  const probe = new Redis(redis.url);
  // The file's tests share the server: its memory limit is lifted again whatever happens here.
  const restore = () => probe.config('SET', 'maxmemory', '0');
  t.after(async () => {
    await restore().catch(() => undefined);
    probe.disconnect();
  });
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) ids.push((await a.store.create({ owner: null })).id);
  // maxmemory 1 (noeviction): the script's first write is refused (OOM); later writes of a script never are.
  await probe.config('SET', 'maxmemory', '1');
  await assert.rejects(a.store.fanOut.broadcast({ data: 'refused', binary: false }), /OOM/);
  await restore();
  for (const id of ids) assert.equal((await a.store.get(id))?.lastSeq, 0);
  assert.deepEqual(a.letters, []);
  assert.deepEqual(await a.store.fanOut.broadcast({ data: 'later', binary: false }), { appended: 3, pending: false });
  await waitFor(() => told(a).length >= 3, 5_000, 'the notifications');
  assert.deepEqual(told(a).map((x) => `${x.seq}:${x.data}`), ['1:later', '1:later', '1:later']);
});

test('a fanWork that fails every time (a queued job it cannot read) rides in no further batch: the failure stops the work, as it stops the pump, and the sweep goes on with it', async (t) => {
  const redis = await redisFor(t);
  if (!redis) return;
  const prefix = `fan-${randomBytes(4).toString('hex')}:`;
  const a = await node(t, redis, prefix);
  const probe = new Redis(redis.url);
  t.after(() => probe.disconnect());
  const order = await joined(a, probe, prefix, FANOUT_CHUNK + 10);
  // Two queued fan-outs: one larger than a call's budget (so the pump's first fanWork says pending, and the store owes
  // one from then on), then one whose highest join order is not a number (every fanWork that reaches it fails).
  const max = await probe.get(`${prefix}mseq`);
  await probe.hset(`${prefix}fj:q1`, 'k', `${prefix}all`, 'c', '0', 'x', max!, 'd', 'queued', 'b', '0');
  await probe.hset(`${prefix}fj:q2`, 'k', `${prefix}all`, 'c', '0', 'x', 'not a number', 'd', 'unreadable', 'b', '0');
  await probe.rpush(`${prefix}fq`, 'q1', 'q2');
  const failed = a.store.failures.error;
  // The sweep starts the pump; operations meanwhile go in batches that may carry a fanWork of their own.
  await Promise.all([a.store.sweep(), ...Array.from({ length: 4 }, () => a.store.stats())]);
  let head: string | null = null;
  const poll = setInterval(() => void probe.lindex(`${prefix}fq`, 0).then((h) => (head = h)), 20);
  t.after(() => clearInterval(poll));
  await waitFor(() => head === 'q2' && a.store.failures.error > failed, 20_000, 'the first job done and a fanWork failed on the second');
  clearInterval(poll);
  await delay(50);
  await a.store.stats();
  const riding = a.store.operations['fanWork'] ?? 0;
  for (let i = 0; i < 5; i++) await a.store.stats();
  assert.equal(a.store.operations['fanWork'] ?? 0, riding, 'no batch carries a fanWork after it failed');
  const held = await streams(probe, prefix, order);
  order.forEach((id, i) => assert.deepEqual(held[i], ['1:queued'], `session ${id}`));
});
