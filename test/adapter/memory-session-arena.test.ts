/**
 * The memory store's arena (src/adapter/memory-session-store.ts): a session's
 * own small messages are held as bytes in one Buffer per session, not as the
 * strings the application sent (docs/performance.md, "Sessions, eighth
 * pass"). What must hold: every read and every dead letter gives the exact
 * bytes that were appended, in seq order; an emptied arena is written again
 * from 0; it never grows past its bound (bigger runs are held by reference);
 * a shared message (a fan-out) is never copied; every byte is still counted
 * by the session's bounds (R11, R12).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createMemorySessionStore } from '../../src/adapter/memory-session-store.ts';
import type { SessionDeadLetter, StoredMessage } from '../../src/adapter/session-store.ts';

/** What a held message is on the wire: its bytes and its frame type. */
function wire(m: StoredMessage): [number, string, boolean, number] {
  const bytes = Buffer.isBuffer(m.data) ? m.data : Buffer.from(m.data, 'utf8');
  return [m.seq, bytes.toString('hex'), m.binary, m.bytes];
}

function started(options: Parameters<typeof createMemorySessionStore>[0] = {}) {
  const store = createMemorySessionStore(options);
  const dead: SessionDeadLetter[] = [];
  store.start({ deadLetter: (l) => dead.push(l), logger: null });
  return { store, dead };
}

describe('memory session store: the arena', () => {
  test('an arena emptied by an ack is written again from 0, and a small one is kept', async () => {
    const { store } = started();
    const s = await store.create({ owner: null });
    assert.deepEqual(store.arenaOf(s.id), { size: 0, end: 0 }, 'no arena before the first message');
    for (let round = 1; round <= 50; round++) {
      const r1 = await store.append(s.id, { data: `{"reply":${round}}`, binary: false });
      const r2 = await store.append(s.id, { data: Buffer.from([round, 0, 255]), binary: true });
      assert.ok(r1.ok && r2.ok);
      const a = store.arenaOf(s.id)!;
      assert.equal(a.end, Buffer.byteLength(`{"reply":${round}}`) + 3, `round ${round}: both messages in the arena, from 0`);
      assert.equal(a.size, 256, 'the first arena, kept');
      assert.deepEqual(await store.ack(s.id, r2.seq), { ok: true, trimmed: 2 });
      assert.deepEqual(store.arenaOf(s.id), { size: 256, end: 0 });
    }
  });

  test('a message appended from a Buffer is held as a copy: the caller may reuse its Buffer', async () => {
    const { store } = started();
    const s = await store.create({ owner: null });
    const scratch = Buffer.from('abc');
    await store.append(s.id, { data: scratch, binary: true });
    scratch.fill(0x7a);
    const read = await store.readAfter(s.id, 0);
    assert.ok(read.ok);
    assert.deepEqual(read.messages.map(wire), [[1, Buffer.from('abc').toString('hex'), true, 3]]);
  });

  test('a shared message (a fan-out) and a big one are held by reference, not copied', async () => {
    const { store } = started();
    const s = await store.create({ owner: null });
    const shared = Buffer.from('to everyone');
    const big = 'b'.repeat(5000);
    await store.append(s.id, { data: shared, binary: true, shared: true });
    await store.append(s.id, { data: big, binary: false });
    assert.deepEqual(store.arenaOf(s.id), { size: 0, end: 0 }, 'neither went into an arena');
    const read = await store.readAfter(s.id, 0);
    assert.ok(read.ok);
    assert.equal(read.messages[0]!.data, shared, 'the same Buffer');
    assert.equal(read.messages[1]!.data, big);
  });

  test('the arena stops at 16 KiB: past it, messages are held by reference, in order, and every byte counts', async () => {
    const { store } = started();
    const s = await store.create({ owner: null });
    const sent: string[] = [];
    for (let i = 0; i < 100; i++) {
      const text = `${i}:${'x'.repeat(1000)}`;
      sent.push(text);
      assert.deepEqual(await store.append(s.id, { data: text, binary: false }), { ok: true, seq: i + 1 });
      assert.ok(store.arenaOf(s.id)!.size <= 16 * 1024, `message ${i + 1}: arena of ${store.arenaOf(s.id)!.size} bytes`);
    }
    const rec = (await store.get(s.id))!;
    assert.equal(rec.bufferedBytes, sent.reduce((n, t) => n + Buffer.byteLength(t), 0));
    const read = await store.readAfter(s.id, 0);
    assert.ok(read.ok);
    assert.deepEqual(read.messages.map((m) => m.data), sent);
    // A big buffer emptied by an ack goes; the next message starts a small one.
    await store.ack(s.id, 100);
    assert.deepEqual(store.arenaOf(s.id), { size: 0, end: 0 });
    await store.append(s.id, { data: 'again', binary: false });
    assert.deepEqual(store.arenaOf(s.id), { size: 256, end: 5 });
  });

  test('bounds and dead letters: an overflow hands back the exact bytes held, the refused message included', async () => {
    const { store, dead } = started({ maxMessages: 4 });
    const s = await store.create({ owner: null });
    const texts = ['plain', 'é ü 中文 😀', 'lone \ud800 surrogate'];
    for (const t of texts) await store.append(s.id, { data: t, binary: false });
    await store.append(s.id, { data: Buffer.from([0, 1, 2, 254]), binary: true });
    const r = await store.append(s.id, { data: 'one too many', binary: false });
    assert.equal(r.ok, false);
    assert.equal(dead.length, 1);
    assert.equal(dead[0]!.reason, 'overflow');
    // The lone surrogate is sent as U+FFFD (UTF-8 EF BF BD), as the frame carries it: the same bytes.
    assert.deepEqual(dead[0]!.messages.map(wire), [
      ...texts.map((t, i) => [i + 1, Buffer.from(t, 'utf8').toString('hex'), false, Buffer.byteLength(t)] as [number, string, boolean, number]),
      [4, '000102fe', true, 4],
      [0, Buffer.from('one too many').toString('hex'), false, 12],
    ]);
    assert.equal(store.arenaOf(s.id), null, 'the session is gone');
    assert.equal((await store.stats()).bufferedBytes, 0);
  });

  test('random appends, partial and full acks, resumes (seeded): every read gives the exact bytes held, and the arena stays bounded', async () => {
    let seed = 0xa7e4a;
    const random = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x80000000);
    const { store, dead } = started();
    const s = await store.create({ owner: null });
    const held = new Map<number, [string, boolean]>();
    const alphabet = ['a', 'é', '中', '😀', '{', '"', '\ud800'];
    let acked = 0;
    let last = 0;
    let maxArena = 0;
    for (let step = 0; step < 2_000; step++) {
      const n = random() < 0.05 ? 30 + Math.floor(random() * 60) : Math.floor(random() * 8);
      for (let i = 0; i < n; i++) {
        const size = random() < 0.05 ? 900 + Math.floor(random() * 400) : Math.floor(random() * 80);
        let text = '';
        while (text.length < size) text += alphabet[Math.floor(random() * alphabet.length)];
        const binary = random() < 0.25;
        const shared = random() < 0.1;
        const data = binary ? Buffer.from(text) : text;
        assert.deepEqual(await store.append(s.id, { data, binary, shared }), { ok: true, seq: ++last });
        // A small one of its own was copied into the arena: the caller's Buffer may change (a big or shared one is held by reference).
        if (binary && !shared && (data as Buffer).length <= 1024) (data as Buffer).fill(0);
        held.set(last, [Buffer.from(text).toString('hex'), binary]);
      }
      const to = random() < 0.4 ? last : acked + Math.floor(random() * (last - acked + 1));
      if (to > acked) {
        // Now and then through a resume's read (it trims what the client says it has), else an ack.
        if (random() < 0.1) assert.ok((await store.readAfter(s.id, to)).ok);
        else assert.deepEqual(await store.ack(s.id, to), { ok: true, trimmed: to - acked });
        for (let seq = acked + 1; seq <= to; seq++) held.delete(seq);
        acked = to;
      }
      maxArena = Math.max(maxArena, store.arenaOf(s.id)!.size);
      const read = await store.readAfter(s.id, acked);
      assert.ok(read.ok);
      assert.deepEqual(
        read.messages.map((m) => [m.seq, (Buffer.isBuffer(m.data) ? m.data : Buffer.from(m.data)).toString('hex'), m.binary]),
        [...held].map(([seq, [hex, binary]]) => [seq, hex, binary]),
        `step ${step}: the held messages`,
      );
    }
    assert.ok(maxArena <= 16 * 1024, `the arena stayed within 16 KiB (largest ${maxArena})`);
    assert.equal(dead.length, 0);
    await store.end(s.id, 'test');
    assert.deepEqual(
      dead.flatMap((l) => l.messages.map((m) => [m.seq, (Buffer.isBuffer(m.data) ? m.data : Buffer.from(m.data)).toString('hex')])),
      [...held].map(([seq, [hex]]) => [seq, hex]),
      'its end hands back exactly what it held',
    );
  });
});
