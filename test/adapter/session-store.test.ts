/**
 * The in-memory session store (src/adapter/memory-session-store.ts): the
 * contract suite on a fake clock, plus what is particular to this store
 * (options, credentials, a large run across many sessions).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createMemorySessionStore, SESSION_STORE_DEFAULTS } from '../../src/adapter/memory-session-store.ts';
import { newSessionToken, newTokenBoundSession, sameOwner, tokenDigest, tokenMatches, tokenOpens, type SessionDeadLetter, type SessionRecord } from '../../src/adapter/session-store.ts';
import { describeSessionStoreContract } from '../helpers/session-store-contract.ts';

describeSessionStoreContract('memory', async (limits) => {
  let now = 1_700_000_000_000;
  const clock = () => now;
  return {
    store: createMemorySessionStore({ ...limits, now: clock }),
    advance: async (ms) => {
      now += ms;
    },
    // A process that restarted: a new, empty store.
    restarted: async () => createMemorySessionStore({ ...limits, now: clock }),
  };
});

describe('memory session store', () => {
  test('every option is checked and a bad value named (RangeError)', () => {
    for (const name of Object.keys(SESSION_STORE_DEFAULTS)) {
      for (const bad of [0, -1, 1.5, 2 ** 31]) {
        assert.throws(() => createMemorySessionStore({ [name]: bad }), (err: Error) => {
          assert.ok(err instanceof RangeError);
          assert.match(err.message, new RegExp(`option sessions\\.${name} must be a positive integer .*, got ${String(bad).replace('.', '\\.')}$`));
          return true;
        });
      }
    }
  });

  test('a store must be started before use, once', async () => {
    const store = createMemorySessionStore();
    await assert.rejects(store.create({ owner: null }), /start\(host\) the session store before using it/);
    store.start({ deadLetter: () => undefined, logger: null });
    assert.throws(() => store.start({ deadLetter: () => undefined, logger: null }), /already started/);
  });

  test('credentials: tokens are 256 random bits; digests compare in constant time; owners too', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) seen.add(newSessionToken());
    assert.equal(seen.size, 1000);
    const t = newSessionToken();
    assert.equal(Buffer.from(t, 'base64url').length, 32);
    assert.equal(tokenMatches(t, tokenDigest(t)), true);
    assert.equal(tokenMatches(t + 'x', tokenDigest(t)), false, 'a longer token is compared without throwing');
    assert.equal(tokenMatches('', tokenDigest(t)), false);
    assert.equal(sameOwner('alice', 'alice'), true);
    assert.equal(sameOwner('alice', 'bob'), false);
    assert.equal(sameOwner(null, null), true);
    assert.equal(sameOwner(null, 'alice'), false);
  });

  test("credentials: the memory store's id is the first 16 bytes of the token's SHA-256, all it keeps to check a token by", async () => {
    const { id, token } = newTokenBoundSession();
    assert.match(id, /^[A-Za-z0-9_-]{22}$/);
    assert.match(token, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(id, tokenDigest(token).subarray(0, 16).toString('base64url'));
    assert.equal(tokenOpens(token, id), true);
    assert.equal(tokenOpens(newSessionToken(), id), false);
    assert.equal(tokenOpens(token + 'x', id), false);
    assert.equal(tokenOpens(token, newTokenBoundSession().id), false);
    assert.equal(tokenOpens(token, 'short'), false, 'an id that does not decode to 16 bytes is compared without throwing');
    const store = createMemorySessionStore();
    store.start({ deadLetter: () => undefined, logger: null });
    const s = await store.create({ owner: null });
    assert.equal(tokenOpens(s.token, s.id), true, "the store's ids are bound to their tokens");
    assert.equal((await store.verify({ id: s.id, token: s.token, owner: null })).ok, true);
    const other = await store.create({ owner: null });
    assert.equal((await store.verify({ id: s.id, token: other.token, owner: null })).ok, false, "another session's token");
  });

  test("a record's times are epoch ms, a resumed session's attachedAt too (the store keeps them as ms since it began)", async () => {
    let now = 1_700_000_000_000;
    const store = createMemorySessionStore({ now: () => now });
    store.start({ deadLetter: () => undefined, logger: null });
    const s = await store.create({ owner: null });
    assert.deepEqual([s.record.createdAt, s.record.attachedAt, s.record.detachedAt], [now, now, null]);
    now += 1000;
    await store.detach(s.id);
    assert.equal((await store.get(s.id))!.detachedAt, 1_700_000_001_000);
    now += 500;
    const r = await store.resume(s.id, 0);
    assert.ok(r.ok);
    assert.equal(r.record.attachedAt, 1_700_000_001_500, 'the resume');
    assert.equal((await store.get(s.id))!.attachedAt, 1_700_000_001_500);
    assert.equal(r.record.createdAt, 1_700_000_000_000);
    now += 250;
    await store.detach(s.id);
    await store.attach(s.id);
    assert.equal((await store.get(s.id))!.attachedAt, 1_700_000_001_750, 'an attach');
  });

  test("an idle session shares one empty body: each first change (message, request, topic, data, detach) is its own, and the others stay empty", async () => {
    const store = createMemorySessionStore();
    store.start({ deadLetter: () => undefined, logger: null });
    type View = Pick<SessionRecord, 'lastSeq' | 'ackedSeq' | 'lastCseq' | 'bufferedMessages' | 'bufferedBytes' | 'topics' | 'data' | 'detachedAt'>;
    const empty: View = { lastSeq: 0, ackedSeq: 0, lastCseq: 0, bufferedMessages: 0, bufferedBytes: 0, topics: [], data: null, detachedAt: null };
    const view = (r: Awaited<ReturnType<typeof store.get>>): View => ({
      lastSeq: r!.lastSeq, ackedSeq: r!.ackedSeq, lastCseq: r!.lastCseq, bufferedMessages: r!.bufferedMessages, bufferedBytes: r!.bufferedBytes,
      topics: r!.topics, data: r!.data, detachedAt: r!.detachedAt,
    });
    const witness = await store.create({ owner: null });
    const changes: Array<[string, (id: string) => Promise<unknown>, Partial<View>]> = [
      ['append', (id) => store.append(id, { data: 'hello', binary: false }), { lastSeq: 1, bufferedMessages: 1, bufferedBytes: 5 }],
      ['beginRequest', (id) => store.beginRequest(id, 1), { lastCseq: 1 }],
      ['join', (id) => store.join(id, 't'), { topics: ['t'] }],
      ['setData', (id) => store.setData(id, { a: 1 }), { data: { a: 1 } }],
    ];
    for (const [name, change, expected] of changes) {
      const s = await store.create({ owner: null });
      assert.deepEqual(view(await store.get(s.id)), empty, `${name}: a new session is empty`);
      await change(s.id);
      assert.deepEqual(view(await store.get(s.id)), { ...empty, ...expected }, name);
      assert.deepEqual(view(await store.get(witness.id)), empty, `${name}: another session is untouched`);
    }
    const d = await store.create({ owner: null });
    await store.setData(d.id, null);
    assert.deepEqual(view(await store.get(d.id)), empty, 'setData(null) on an empty session');
    await store.detach(d.id);
    assert.notEqual((await store.get(d.id))!.detachedAt, null);
    assert.equal((await store.get(witness.id))!.detachedAt, null);
    const withData = await store.create({ owner: null, data: { plan: 'pro' } });
    assert.deepEqual((await store.get(withData.id))!.data, { plan: 'pro' });
    assert.deepEqual(view(await store.get(witness.id)), empty);
    // An ack and a resume read of an empty session change nothing (and need no body of its own).
    assert.deepEqual(await store.ack(witness.id, 0), { ok: true, trimmed: 0 });
    assert.deepEqual(await store.readAfter(witness.id, 0), { ok: true, messages: [] });
    await store.end(witness.id, 'test');
    assert.equal(await store.get(witness.id), null);
  });

  test("the sync path's slot: the record kept there is used only for its own live session; the answers are those without it", async () => {
    const store = createMemorySessionStore();
    const dead: SessionDeadLetter[] = [];
    store.start({ deadLetter: (l) => dead.push(l), logger: null });
    const sync = store.sync!;
    const a = await store.create({ owner: null });
    const b = await store.create({ owner: null });
    const slot = { storeRecord: undefined as unknown };
    assert.deepEqual(sync.append(a.id, { data: 'to a', binary: false }, undefined, slot), { ok: true, seq: 1 });
    assert.notEqual(slot.storeRecord, undefined, 'the store kept its record in the slot');
    // The same slot handed with another id: that id's session, not the one in the slot.
    assert.deepEqual(sync.append(b.id, { data: 'to b', binary: false }, undefined, slot), { ok: true, seq: 1 });
    assert.deepEqual(sync.beginRequest(a.id, 1, slot), { kind: 'new' });
    assert.deepEqual(sync.ack(a.id, 1, slot), { ok: true, trimmed: 1 });
    assert.equal((await store.get(b.id))!.bufferedMessages, 1, "b's message is b's");
    // Ended: the record in the slot is not used; the session is gone, as it is without a slot.
    await store.end(a.id, 'test');
    const r = sync.append(a.id, { data: 'late', binary: false }, undefined, slot);
    assert.equal(r.ok, false);
    assert.deepEqual(sync.beginRequest(a.id, 2, slot), { kind: 'unknown' });
    assert.equal(sync.ack(a.id, 1, slot).ok, false);
    assert.deepEqual(dead.map((l) => [l.reason, l.messages.map((m) => m.data)]), [['unknown', ['late']]], 'the late message is a dead letter (R12)');
  });

  test('a reply of more than 16 messages is remembered as too many (null), its request still never runs again', async () => {
    const store = createMemorySessionStore();
    store.start({ deadLetter: () => undefined, logger: null });
    const s = await store.create({ owner: null });
    assert.deepEqual(await store.beginRequest(s.id, 1), { kind: 'new' });
    for (let seq = 1; seq <= 16; seq++) await store.rememberReply(s.id, 1, seq);
    assert.deepEqual(await store.beginRequest(s.id, 1), { kind: 'duplicate', replySeqs: Array.from({ length: 16 }, (_, i) => i + 1) });
    await store.rememberReply(s.id, 1, 17);
    assert.deepEqual(await store.beginRequest(s.id, 1), { kind: 'duplicate', replySeqs: null });
  });

  test('a buffer emptied by an ack is written again from its start: reads give exactly the unacknowledged messages, in order, through bursts, partial and full acks (seeded)', async () => {
    let seed = 0xacc;
    const random = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x80000000);
    const store = createMemorySessionStore();
    const dead: SessionDeadLetter[] = [];
    store.start({ deadLetter: (l) => dead.push(l), logger: null });
    const s = await store.create({ owner: null });
    /** The model: every message the session holds, by seq. */
    const held = new Map<number, string>();
    let acked = 0;
    let last = 0;
    for (let step = 0; step < 3_000; step++) {
      // Mostly a few messages between acks; now and then a burst past the kept buffer's size (128 messages).
      const n = random() < 0.05 ? 100 + Math.floor(random() * 200) : Math.floor(random() * 12);
      for (let i = 0; i < n; i++) {
        const binary = random() < 0.2;
        const text = `m${last + 1}`;
        const r = await store.append(s.id, binary ? { data: Buffer.from(text), binary } : { data: text, binary });
        assert.deepEqual(r, { ok: true, seq: ++last });
        held.set(last, text);
      }
      // A full ack half of the time, else a partial one (or none).
      const to = random() < 0.5 ? last : acked + Math.floor(random() * (last - acked + 1));
      if (to > acked) {
        assert.deepEqual(await store.ack(s.id, to), { ok: true, trimmed: to - acked });
        for (let seq = acked + 1; seq <= to; seq++) held.delete(seq);
        acked = to;
      }
      const read = await store.readAfter(s.id, acked);
      assert.ok(read.ok);
      assert.deepEqual(
        read.messages.map((m) => [m.seq, Buffer.isBuffer(m.data) ? m.data.toString() : m.data, m.bytes]),
        [...held].map(([seq, text]) => [seq, text, Buffer.byteLength(text)]),
        `step ${step}: the held messages`,
      );
      const rec = (await store.get(s.id))!;
      assert.equal(rec.bufferedMessages, held.size);
      assert.equal(rec.bufferedBytes, [...held.values()].reduce((sum, text) => sum + Buffer.byteLength(text), 0));
    }
    assert.equal(dead.length, 0, 'nothing handed back: every message stayed held until acknowledged');
    // What it still holds is handed back, in order, when it ends.
    await store.end(s.id, 'test');
    assert.deepEqual(dead.flatMap((l) => l.messages.map((m) => m.seq)), [...held.keys()]);
  });

  test('random operations (seeded): the invariants hold after every step, and every message offered is held, acknowledged or handed back', async (t) => {
    let seed = 0x5eed;
    const random = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x80000000);
    const pick = <T,>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
    let now = 0;
    const limits = { resumeWindow: 500, maxMessages: 8, maxBytes: 200, maxBufferedBytes: 600, maxDetachedSessions: 4, maxRememberedReplies: 4 };
    const store = createMemorySessionStore({ ...limits, now: () => now });
    let dead = 0;
    const reasons = new Map<string, number>();
    store.start({
      deadLetter: (l) => {
        dead += l.messages.length;
        reasons.set(l.reason, (reasons.get(l.reason) ?? 0) + 1);
        assert.ok(l.messages.every((m, i, all) => i === 0 || m.seq === 0 || m.seq === all[i - 1]!.seq + 1), 'a dead letter holds consecutive seqs');
      },
      logger: null,
    });
    const ids: string[] = [];
    let offered = 0;
    let acked = 0;
    for (let step = 0; step < 6_000; step++) {
      const op = random();
      const id = ids.length > 0 ? pick(ids) : null;
      // Mostly forget ended sessions, so most operations meet live ones (and some meet the dead).
      if (id !== null && (await store.get(id)) === null && random() < 0.9) ids.splice(ids.indexOf(id), 1);
      else if (id === null || op < 0.08) ids.push((await store.create({ owner: null })).id);
      else if (op < 0.6) {
        offered++;
        await store.append(id, { data: 'x'.repeat(1 + Math.floor(random() * 60)), binary: false });
      } else if (op < 0.75) {
        const rec = await store.get(id);
        if (rec && rec.lastSeq > rec.ackedSeq) {
          const r = await store.ack(id, rec.ackedSeq + 1 + Math.floor(random() * (rec.lastSeq - rec.ackedSeq)));
          assert.ok(r.ok);
          acked += r.trimmed;
        }
      } else if (op < 0.88) await store.detach(id);
      else if (op < 0.93) await store.attach(id);
      else if (op < 0.98) now += Math.floor(random() * 300);
      else if (op < 0.995) await store.sweep();
      else await store.end(id, 'the application ended it');
      // Invariants.
      const stats = await store.stats();
      assert.ok(stats.bufferedBytes <= limits.maxBufferedBytes, `step ${step}: ${stats.bufferedBytes} bytes held`);
      assert.ok(stats.detached <= limits.maxDetachedSessions, `step ${step}: ${stats.detached} detached`);
      let bytes = 0;
      let messages = 0;
      for (const each of ids) {
        const rec = await store.get(each);
        if (rec === null) continue;
        assert.equal(rec.bufferedMessages, rec.lastSeq - rec.ackedSeq, 'a session holds exactly (ackedSeq, lastSeq]');
        assert.ok(rec.bufferedMessages <= limits.maxMessages && rec.bufferedBytes <= limits.maxBytes);
        bytes += rec.bufferedBytes;
        messages += rec.bufferedMessages;
      }
      const after = await store.stats();
      assert.deepEqual([after.bufferedBytes, after.bufferedMessages], [bytes, messages], 'the totals are the sums');
      assert.equal(offered, messages + acked + dead, `step ${step}: offered = held + acknowledged + dead letters`);
    }
    t.diagnostic(`${offered} offered, ${acked} acknowledged, ${dead} dead letters; letters by reason: ${JSON.stringify(Object.fromEntries(reasons))}`);
    for (const reason of ['overflow', 'memory', 'evicted', 'expired', 'ended', 'unknown']) assert.ok(reasons.has(reason), `the run reached ${reason}`);
  });

  test('5,000 sessions × 10 messages under a 256 KiB total: the total never exceeds the bound, and every byte is accounted for', async (t) => {
    const maxBufferedBytes = 256 * 1024;
    const store = createMemorySessionStore({ maxBufferedBytes, maxDetachedSessions: 20_000 });
    let dead = 0;
    let deadBytes = 0;
    store.start({
      deadLetter: (l: SessionDeadLetter) => {
        dead += l.messages.length;
        for (const m of l.messages) deadBytes += m.bytes;
      },
      logger: null,
    });
    const ids: string[] = [];
    for (let i = 0; i < 5_000; i++) ids.push((await store.create({ owner: null })).id);
    let offeredBytes = 0;
    let peak = 0;
    const payload = 'x'.repeat(10);
    for (let round = 0; round < 10; round++) {
      for (let i = 0; i < ids.length; i++) {
        const data = payload + i;
        offeredBytes += Buffer.byteLength(data);
        await store.append(ids[i]!, { data, binary: false });
        if (round === 0 && i % 2 === 0) await store.detach(ids[i]!);
        const { bufferedBytes } = await store.stats();
        if (bufferedBytes > peak) peak = bufferedBytes;
      }
    }
    const stats = await store.stats();
    t.diagnostic(`peak ${peak} bytes held, ${stats.sessions} sessions left, ${dead} messages handed back`);
    assert.ok(peak <= maxBufferedBytes, `peak ${peak} bytes`);
    assert.ok(dead > 0, 'the bound was reached');
    // R12: every message offered is either still held or was handed back, none twice.
    assert.equal(stats.bufferedMessages + dead, 50_000, 'held + dead letters = offered');
    assert.equal(stats.bufferedBytes + deadBytes, offeredBytes, 'the same in bytes');
  });
});
