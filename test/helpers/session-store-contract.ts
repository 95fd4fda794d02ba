/**
 * The session store contract (src/adapter/session-store.ts) as a test suite,
 * so that every store runs the same checks: the in-memory store
 * (test/adapter/session-store.test.ts) and the Redis store
 * (test/adapter/redis-session-store.test.ts).
 *
 * A store under test is made with small bounds and a clock the suite can move
 * (both stores take a fake clock: the Redis store passes it to its scripts).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { SessionDeadLetter, SessionStore, StoredMessage } from '../../src/adapter/session-store.ts';

export interface ContractLimits {
  resumeWindow: number;
  maxMessages: number;
  maxBytes: number;
  maxBufferedBytes: number;
  maxDetachedSessions: number;
  maxRememberedReplies: number;
}

export interface StoreUnderTest {
  store: SessionStore;
  /** Moves the store's clock forward by `ms`. */
  advance(ms: number): Promise<void>;
  /** A second store that lost the first one's data (a restart, a flush): a new epoch. */
  restarted(): Promise<SessionStore>;
  /**
   * For a store shared by several nodes (Redis): another node's store on the
   * same data. Such a store's close() releases this node only and leaves the
   * sessions to the others (ending them would end the cluster's sessions
   * whenever one node stops); the close test checks that instead.
   */
  peer?(): Promise<SessionStore>;
}

/** The bounds every contract test runs with: small, so that each is reached in a few calls. */
export const CONTRACT_LIMITS: ContractLimits = {
  resumeWindow: 1000,
  maxMessages: 5,
  maxBytes: 100,
  maxBufferedBytes: 160,
  maxDetachedSessions: 3,
  maxRememberedReplies: 2,
};

const text = (data: string) => ({ data, binary: false });
const seqs = (messages: readonly StoredMessage[]) => messages.map((m) => m.seq);
const datas = (messages: readonly StoredMessage[]) => messages.map((m) => String(m.data));

export function describeSessionStoreContract(name: string, make: (limits: ContractLimits) => Promise<StoreUnderTest>): void {
  async function setup() {
    const sut = await make(CONTRACT_LIMITS);
    const letters: SessionDeadLetter[] = [];
    sut.store.start({ deadLetter: (l) => letters.push(l), logger: null });
    return { ...sut, letters };
  }

  describe(`session store contract: ${name}`, () => {
    test('create: an attached session with an unguessable id and token; the token is never kept in clear', async () => {
      const { store } = await setup();
      const a = await store.create({ owner: 'alice', data: { plan: 'pro' } });
      const b = await store.create({ owner: null });
      assert.match(a.id, /^[A-Za-z0-9_-]{22}$/);
      assert.match(a.token, /^[A-Za-z0-9_-]{43}$/);
      assert.notEqual(a.id, b.id);
      assert.notEqual(a.token, b.token);
      assert.equal(a.epoch, await store.epoch());
      assert.equal(a.record.state, 'attached');
      assert.deepEqual(
        { lastSeq: a.record.lastSeq, ackedSeq: a.record.ackedSeq, lastCseq: a.record.lastCseq, data: a.record.data, owner: a.record.owner },
        { lastSeq: 0, ackedSeq: 0, lastCseq: 0, data: { plan: 'pro' }, owner: 'alice' },
      );
      assert.ok(!JSON.stringify(await store.get(a.id)).includes(a.token), 'the record does not carry the token');
    });

    test('verify: the right token and owner pass; a wrong token or another owner is forbidden; no such id is unknown', async () => {
      const { store } = await setup();
      const s = await store.create({ owner: 'alice' });
      const epoch = await store.epoch();
      assert.equal((await store.verify({ id: s.id, token: s.token, owner: 'alice', epoch })).ok, true);
      assert.equal((await store.verify({ id: s.id, token: s.token, owner: 'alice' })).ok, true, 'without an epoch: not checked');
      const wrongToken = s.token.slice(0, -1) + (s.token.endsWith('A') ? 'B' : 'A');
      assert.deepEqual(await store.verify({ id: s.id, token: wrongToken, owner: 'alice', epoch }), {
        ok: false, reason: 'forbidden', detail: 'the resume token does not match',
      });
      assert.deepEqual(await store.verify({ id: s.id, token: '', owner: 'alice', epoch }), {
        ok: false, reason: 'forbidden', detail: 'the resume token does not match',
      });
      assert.deepEqual(await store.verify({ id: s.id, token: s.token, owner: 'mallory', epoch }), {
        ok: false, reason: 'forbidden', detail: 'the session belongs to another identity',
      });
      assert.deepEqual(await store.verify({ id: s.id, token: s.token, owner: null, epoch }), {
        ok: false, reason: 'forbidden', detail: 'the session belongs to another identity',
      }, 'an anonymous connection cannot take an owned session');
      assert.deepEqual(await store.verify({ id: 'A'.repeat(22), token: s.token, owner: 'alice', epoch }), {
        ok: false, reason: 'unknown', detail: 'no such session',
      });
    });

    test('epoch: a store that lost its data answers restarted to the old epoch, unknown without one', async () => {
      const { store, restarted } = await setup();
      const s = await store.create({ owner: null });
      const old = await store.epoch();
      const fresh = await restarted();
      fresh.start({ deadLetter: () => undefined, logger: null });
      assert.notEqual(await fresh.epoch(), old);
      const r = await fresh.verify({ id: s.id, token: s.token, owner: null, epoch: old });
      assert.equal(r.ok, false);
      assert.equal(!r.ok && r.reason, 'restarted');
      const r2 = await fresh.verify({ id: s.id, token: s.token, owner: null });
      assert.equal(!r2.ok && r2.reason, 'unknown');
    });

    test('append: seqs 1, 2, 3… per session; readAfter replays in order after a position', async () => {
      const { store } = await setup();
      const a = await store.create({ owner: null });
      const b = await store.create({ owner: null });
      for (const d of ['a1', 'a2', 'a3']) assert.equal((await store.append(a.id, text(d))).ok, true);
      assert.deepEqual(await store.append(b.id, { data: Buffer.from([0, 1, 2]), binary: true }), { ok: true, seq: 1 }, 'seqs are per session');
      assert.deepEqual(await store.append(a.id, text('a4')), { ok: true, seq: 4 });
      const all = await store.readAfter(a.id, 0);
      assert.ok(all.ok);
      assert.deepEqual(seqs(all.messages), [1, 2, 3, 4]);
      assert.deepEqual(datas(all.messages), ['a1', 'a2', 'a3', 'a4']);
      const bin = await store.readAfter(b.id, 0);
      assert.ok(bin.ok);
      assert.deepEqual(bin.messages, [{ seq: 1, data: Buffer.from([0, 1, 2]), binary: true, bytes: 3 }]);
      const after2 = await store.readAfter(a.id, 2);
      assert.ok(after2.ok);
      assert.deepEqual(seqs(after2.messages), [3, 4], 'the replay starts after the client position');
      assert.equal((await store.get(a.id))!.ackedSeq, 2, 'a resume position counts as an ack');
      const none = await store.readAfter(a.id, 4);
      assert.ok(none.ok);
      assert.deepEqual(none.messages, [], 'a client that has everything gets an empty replay');
    });

    test('readAfter: a position behind the acknowledged one is overflow, one beyond the last seq is restarted', async () => {
      const { store } = await setup();
      const s = await store.create({ owner: null });
      for (const d of ['1', '2', '3']) await store.append(s.id, text(d));
      await store.ack(s.id, 2);
      const behind = await store.readAfter(s.id, 1);
      assert.deepEqual(behind, { ok: false, reason: 'overflow', detail: 'lastSeq 1 is behind the acknowledged 2: seqs 2…2 are no longer held' });
      const beyond = await store.readAfter(s.id, 9);
      assert.deepEqual(beyond, { ok: false, reason: 'restarted', detail: 'lastSeq 9 is beyond the last seq this store assigned, 3' });
    });

    test('ack: trims cumulatively, frees the bytes, ignores an old ack, refuses one beyond the last seq', async () => {
      const { store } = await setup();
      const s = await store.create({ owner: null });
      for (const d of ['aaaa', 'bbbb', 'cccc', 'dddd']) await store.append(s.id, text(d));
      assert.deepEqual(await store.stats(), { sessions: 1, detached: 0, bufferedMessages: 4, bufferedBytes: 16, tombstones: 0 });
      assert.deepEqual(await store.ack(s.id, 3), { ok: true, trimmed: 3 });
      assert.deepEqual(await store.ack(s.id, 2), { ok: true, trimmed: 0 }, 'acks are cumulative: an older one changes nothing');
      assert.deepEqual(await store.ack(s.id, 5), { ok: false, error: 'ack 5 is beyond the last seq sent, 4' });
      assert.deepEqual(await store.ack(s.id, 1.5), { ok: false, error: 'ack seq must be an integer ≥ 0, got 1.5' });
      const rec = (await store.get(s.id))!;
      assert.deepEqual([rec.ackedSeq, rec.bufferedMessages, rec.bufferedBytes], [3, 1, 4]);
      assert.deepEqual((await store.stats()).bufferedBytes, 4, 'the store total follows');
      const rest = await store.readAfter(s.id, 3);
      assert.ok(rest.ok);
      assert.deepEqual(datas(rest.messages), ['dddd']);
      // Trimming keeps making room: far more messages than maxMessages pass through an acking session.
      for (let i = 0; i < 50; i++) {
        const r = await store.append(s.id, text('x'));
        assert.ok(r.ok, `append ${i}`);
        await store.ack(s.id, r.seq);
      }
      assert.equal((await store.get(s.id))!.lastSeq, 54);
    });

    test('bounds: one message over maxMessages ends the session, every held message and the refused one become overflow dead letters', async () => {
      const { store, letters } = await setup();
      const s = await store.create({ owner: null });
      for (let i = 1; i <= CONTRACT_LIMITS.maxMessages; i++) assert.ok((await store.append(s.id, text(`m${i}`))).ok);
      const r = await store.append(s.id, text('one too many'));
      assert.deepEqual(r, { ok: false, reason: 'overflow', detail: '6 unacknowledged messages, over sessions.maxMessages 5' });
      assert.equal(letters.length, 1);
      assert.equal(letters[0]!.sessionId, s.id);
      assert.equal(letters[0]!.reason, 'overflow');
      assert.deepEqual(seqs(letters[0]!.messages), [1, 2, 3, 4, 5, 0], 'in seq order; the refused one never got a seq');
      assert.deepEqual(datas(letters[0]!.messages).at(-1), 'one too many');
      assert.equal(await store.get(s.id), null);
      assert.deepEqual(await store.verify({ id: s.id, token: s.token, owner: null }), {
        ok: false, reason: 'overflow', detail: '6 unacknowledged messages, over sessions.maxMessages 5',
      }, 'a resume is told why');
      assert.deepEqual((await store.stats()).bufferedBytes, 0, 'the bytes are released');
    });

    test('bounds: maxBytes counts UTF-8 bytes; a single message bigger than the bound overflows at once', async () => {
      const { store, letters } = await setup();
      const s = await store.create({ owner: null });
      assert.ok((await store.append(s.id, text('é'.repeat(45)))).ok, '90 bytes');
      const r = await store.append(s.id, text('é'.repeat(6)));
      assert.deepEqual(r, { ok: false, reason: 'overflow', detail: '102 unacknowledged bytes, over sessions.maxBytes 100' });
      assert.deepEqual(letters.map((l) => [l.reason, l.messages.length]), [['overflow', 2]]);
      const t = await store.create({ owner: null });
      const big = await store.append(t.id, { data: Buffer.alloc(101), binary: true });
      assert.equal(!big.ok && big.reason, 'overflow');
    });

    test('memory bound across sessions: the oldest detached sessions make room first, with reason memory', async () => {
      const { store, letters } = await setup();
      const old = await store.create({ owner: null });
      const older = await store.create({ owner: null });
      const active = await store.create({ owner: null });
      await store.append(older.id, text('o'.repeat(60)));
      await store.append(old.id, text('p'.repeat(60)));
      await store.detach(older.id);
      await store.detach(old.id);
      assert.equal((await store.stats()).bufferedBytes, 120);
      const r = await store.append(active.id, text('n'.repeat(50)));
      assert.deepEqual(r, { ok: true, seq: 1 });
      assert.deepEqual(letters.map((l) => [l.sessionId, l.reason, l.detail]), [
        [older.id, 'memory', '170 bytes held by all sessions, over sessions.maxBufferedBytes 160'],
      ], 'only the oldest detached session, and only as many as needed');
      assert.notEqual(await store.get(old.id), null);
      const v = await store.verify({ id: older.id, token: older.token, owner: null });
      assert.deepEqual(v, { ok: false, reason: 'overflow', detail: 'memory: 170 bytes held by all sessions, over sessions.maxBufferedBytes 160' });
      assert.equal((await store.stats()).bufferedBytes, 110);
    });

    test('memory bound across sessions: with no detached session to end, the appending session ends', async () => {
      const { store, letters } = await setup();
      const a = await store.create({ owner: null });
      const b = await store.create({ owner: null });
      await store.append(a.id, text('a'.repeat(90)));
      await store.append(b.id, text('b'.repeat(60)));
      const r = await store.append(b.id, text('b'.repeat(20)));
      assert.deepEqual(r, { ok: false, reason: 'memory', detail: '170 bytes held by all sessions, over sessions.maxBufferedBytes 160' });
      assert.deepEqual(letters.map((l) => [l.sessionId, l.reason, l.messages.length]), [[b.id, 'memory', 2]]);
      assert.notEqual(await store.get(a.id), null, 'an attached session that did not grow is left alone');
      const stats = await store.stats();
      assert.ok(stats.bufferedBytes <= CONTRACT_LIMITS.maxBufferedBytes, `held ${stats.bufferedBytes}`);
    });

    test('the cap on detached sessions ends the oldest detached one (evicted), and a resume says overflow', async () => {
      const { store, letters } = await setup();
      const made = [];
      for (let i = 0; i < CONTRACT_LIMITS.maxDetachedSessions + 1; i++) {
        const s = await store.create({ owner: null });
        await store.append(s.id, text(`s${i}`));
        made.push(s);
      }
      for (const s of made) await store.detach(s.id);
      assert.equal((await store.stats()).detached, CONTRACT_LIMITS.maxDetachedSessions);
      assert.deepEqual(letters.map((l) => [l.sessionId, l.reason, datas(l.messages)]), [[made[0]!.id, 'evicted', ['s0']]]);
      const v = await store.verify({ id: made[0]!.id, token: made[0]!.token, owner: null });
      assert.deepEqual(v, { ok: false, reason: 'overflow', detail: 'evicted: 4 detached sessions, over sessions.maxDetachedSessions 3' });
      // An attach takes a session out of the count; a re-detach makes it the newest.
      await store.attach(made[1]!.id);
      await store.detach(made[1]!.id);
      const s5 = await store.create({ owner: null });
      await store.detach(s5.id);
      assert.equal(letters.at(-1)!.sessionId, made[2]!.id, 'the oldest detach goes first');
    });

    test('expiry: the resume window runs from the detach; then expired, with dead letters; later unknown', async () => {
      const { store, letters, advance } = await setup();
      const s = await store.create({ owner: null });
      await store.append(s.id, text('kept'));
      await advance(5 * CONTRACT_LIMITS.resumeWindow);
      assert.notEqual(await store.get(s.id), null, 'an attached session does not expire, however idle');
      await store.detach(s.id);
      await advance(CONTRACT_LIMITS.resumeWindow - 1);
      assert.equal((await store.verify({ id: s.id, token: s.token, owner: null })).ok, true, 'one ms before the window ends');
      await advance(1);
      assert.deepEqual(await store.verify({ id: s.id, token: s.token, owner: null }), {
        ok: false, reason: 'expired', detail: 'detached for the resume window (1000 ms)',
      });
      assert.deepEqual(letters.map((l) => [l.reason, datas(l.messages)]), [['expired', ['kept']]]);
      await advance(CONTRACT_LIMITS.resumeWindow);
      await store.sweep();
      assert.deepEqual(await store.verify({ id: s.id, token: s.token, owner: null }), { ok: false, reason: 'unknown', detail: 'no such session' },
        'the tombstone lasts one more window');
      assert.equal((await store.stats()).tombstones, 0);
    });

    test('expiry: sweep expires every overdue detached session, the oldest first; expire() ends one at once', async () => {
      const { store, letters, advance } = await setup();
      const a = await store.create({ owner: null });
      const b = await store.create({ owner: null });
      const c = await store.create({ owner: null });
      for (const s of [a, b, c]) await store.append(s.id, text(s.id));
      await store.detach(a.id);
      await advance(500);
      await store.detach(b.id);
      await advance(600);
      assert.equal(await store.sweep(), 1, 'only a is past its window');
      assert.deepEqual(letters.map((l) => l.sessionId), [a.id]);
      assert.equal(await store.expire(c.id), false, 'an attached session has no window to run out');
      assert.equal(await store.expire(b.id), true);
      assert.deepEqual(letters.map((l) => [l.sessionId, l.reason]), [[a.id, 'expired'], [b.id, 'expired']]);
      // The tombstone tells a later resume why: the window's detail, or the one expire() was given.
      const window = await store.verify({ id: b.id, token: b.token, owner: null });
      assert.ok(!window.ok && window.reason === 'expired' && /resume window/.test(window.detail), JSON.stringify(window));
      await store.detach(c.id);
      assert.equal(await store.expire(c.id, 'the session store failed on it (test)'), true);
      assert.deepEqual(await store.verify({ id: c.id, token: c.token, owner: null }), { ok: false, reason: 'expired', detail: 'the session store failed on it (test)' });
      assert.equal(letters.at(-1)?.detail, 'the session store failed on it (test)');
    });

    test('beginRequest: the next cseq runs once; a repeat is a duplicate with its reply seqs; a skip is a gap', async () => {
      const { store } = await setup();
      const s = await store.create({ owner: null });
      assert.deepEqual(await store.beginRequest(s.id, 1), { kind: 'new' });
      const r1 = await store.append(s.id, text('reply 1'));
      assert.ok(r1.ok);
      await store.rememberReply(s.id, 1, r1.seq);
      assert.deepEqual(await store.beginRequest(s.id, 1), { kind: 'duplicate', replySeqs: [1] });
      assert.deepEqual(await store.beginRequest(s.id, 3), { kind: 'gap', expected: 2 });
      assert.deepEqual(await store.beginRequest(s.id, 2), { kind: 'new' });
      assert.deepEqual(await store.beginRequest(s.id, 2), { kind: 'pending', here: true }, 'counted here, not finished: its process runs it');
      await store.endRequest(s.id, 2);
      assert.deepEqual(await store.beginRequest(s.id, 2), { kind: 'duplicate', replySeqs: [] }, 'ran, and sent no reply');
      assert.equal((await store.get(s.id))!.lastCseq, 2);
      await assert.rejects(store.beginRequest(s.id, 0), /cseq must be an integer ≥ 1, got 0/);
    });

    test('resume: reads after the position and attaches at one moment; the record is of that moment; a position it cannot continue from attaches nothing', async () => {
      const { store } = await setup();
      const s = await store.create({ owner: null });
      await store.append(s.id, text('m1'));
      await store.append(s.id, text('m2'));
      assert.deepEqual(await store.beginRequest(s.id, 1), { kind: 'new' });
      await store.detach(s.id);
      const beyond = await store.resume(s.id, 9);
      assert.equal(!beyond.ok && beyond.reason, 'restarted');
      assert.equal((await store.get(s.id))!.state, 'detached', 'a failed resume attaches nothing');
      const r = await store.resume(s.id, 1);
      assert.ok(r.ok);
      assert.deepEqual(datas(r.messages), ['m2']);
      assert.deepEqual([r.record.state, r.record.lastSeq, r.record.ackedSeq, r.record.lastCseq], ['attached', 2, 1, 1]);
      assert.equal((await store.get(s.id))!.state, 'attached');
      const gone = await store.resume('no-such-session', 0);
      assert.equal(!gone.ok && gone.reason, 'unknown');
    });

    test('remembered replies are bounded; a forgotten one still never runs again', async () => {
      const { store } = await setup();
      const s = await store.create({ owner: null });
      for (let cseq = 1; cseq <= 4; cseq++) {
        assert.deepEqual(await store.beginRequest(s.id, cseq), { kind: 'new' });
        await store.rememberReply(s.id, cseq, 10 * cseq);
        await store.rememberReply(s.id, cseq, 10 * cseq + 1);
      }
      assert.deepEqual(await store.beginRequest(s.id, 1), { kind: 'duplicate', replySeqs: null }, 'forgotten (maxRememberedReplies 2)');
      assert.deepEqual(await store.beginRequest(s.id, 2), { kind: 'duplicate', replySeqs: null });
      assert.deepEqual(await store.beginRequest(s.id, 3), { kind: 'duplicate', replySeqs: [30, 31] });
      assert.deepEqual(await store.beginRequest(s.id, 4), { kind: 'duplicate', replySeqs: [40, 41] });
      await store.rememberReply(s.id, 9, 90);
      assert.deepEqual(await store.beginRequest(s.id, 9), { kind: 'gap', expected: 5 }, 'a reply to a request never run is not remembered');
    });

    test('topics and data come back with the session, as copies', async () => {
      const { store } = await setup();
      const s = await store.create({ owner: null, data: { n: 1 } });
      assert.equal(await store.join(s.id, 'news'), true);
      assert.equal(await store.join(s.id, 'news'), false);
      assert.equal(await store.join(s.id, 'sport'), true);
      assert.equal(await store.leave(s.id, 'news'), true);
      assert.equal(await store.leave(s.id, 'news'), false);
      assert.equal(await store.setData(s.id, { n: 2, tags: ['a'] }), true);
      await store.detach(s.id);
      const rec = (await store.get(s.id))!;
      assert.deepEqual([rec.topics, rec.data, rec.state], [['sport'], { n: 2, tags: ['a'] }, 'detached']);
      (rec.data as { n: number }).n = 99;
      rec.topics.push('x');
      const again = (await store.get(s.id))!;
      assert.deepEqual([again.topics, again.data], [['sport'], { n: 2, tags: ['a'] }], 'a record is a copy');
      assert.equal(await store.attach(s.id), true);
      assert.equal((await store.get(s.id))!.state, 'attached');
    });

    test('end: the session is gone, its messages are dead letters (ended), a resume gets unknown; appends after it are refused', async () => {
      const { store, letters } = await setup();
      const s = await store.create({ owner: null });
      await store.append(s.id, text('unsent'));
      assert.equal(await store.end(s.id, 'the client sent end'), true);
      assert.deepEqual(letters.map((l) => [l.reason, l.detail, datas(l.messages)]), [['ended', 'the client sent end', ['unsent']]]);
      assert.equal((await store.verify({ id: s.id, token: s.token, owner: null })).ok === false, true);
      const v = await store.verify({ id: s.id, token: s.token, owner: null });
      assert.equal(!v.ok && v.reason, 'unknown');
      const r = await store.append(s.id, text('late'));
      assert.equal(!r.ok && r.reason, 'unknown');
      assert.deepEqual(letters.at(-1)!.messages.map((m) => [m.seq, m.data]), [[0, 'late']], 'R12: even the refused message is handed back');
      assert.equal(await store.end(s.id, 'again'), false);
    });

    test('close: every held message becomes a dead letter (ended); a shared store leaves its sessions to the other nodes', async () => {
      const { store, letters, peer } = await setup();
      const a = await store.create({ owner: null });
      const b = await store.create({ owner: null });
      await store.append(a.id, text('a'));
      await store.append(b.id, text('b'));
      await store.detach(b.id);
      await store.close();
      await store.close();
      await assert.rejects(store.create({ owner: null }), /the session store is closed/);
      if (peer !== undefined) {
        assert.equal(letters.length, 0, 'one node leaving ends no session');
        const other = await peer();
        other.start({ deadLetter: (l) => letters.push(l), logger: null });
        for (const [s, data] of [[a, 'a'], [b, 'b']] as const) {
          const rec = await other.get(s.id);
          assert.equal(rec?.state, 'detached', 'the sessions it held attached are detached: their resume window runs');
          const replay = await other.readAfter(s.id, 0);
          assert.ok(replay.ok);
          assert.deepEqual(datas(replay.messages), [data]);
        }
        await other.close();
        return;
      }
      assert.deepEqual(letters.map((l) => [l.reason, datas(l.messages)]).sort(), [['ended', ['a']], ['ended', ['b']]]);
      assert.deepEqual(await store.stats(), { sessions: 0, detached: 0, bufferedMessages: 0, bufferedBytes: 0, tombstones: 0 });
    });
  });
}
