// The Redis adapter's history bounds, its option and its frame flag, without
// Redis: the MINID each publish trims to (count, bytes, age), the option's
// errors naming the bad value, the stream ids, and that a frame says whether
// its sender keeps a history. The recovery itself runs against a real
// redis-server in test/adapter/redis.test.ts ("Redis adapter history: …").
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HistoryRetention, REDIS_HISTORY_DEFAULTS, entrySeq, historyConfig } from '../../src/adapter/redis-history.ts';
import { createRedisAdapter, decodeFrame, encodeFrame } from '../../src/adapter/redis.ts';

const message = { kind: 'publish' as const, topic: 'room', data: Buffer.from('hi'), binary: false };

test('history option: off by default; true takes the documented defaults; bounds are checked and named', () => {
  assert.equal(historyConfig(undefined), null);
  assert.equal(historyConfig(false), null);
  assert.deepEqual(historyConfig(true), { maxMessages: 100_000, maxBytes: 32 * 1_048_576, maxAge: 30_000 });
  assert.equal(REDIS_HISTORY_DEFAULTS.enabled, false);
  assert.deepEqual(historyConfig({ maxMessages: 10 }), { maxMessages: 10, maxBytes: 32 * 1_048_576, maxAge: 30_000 });
  assert.throws(() => historyConfig({ maxMessages: 0 }), /redis\.history\.maxMessages/);
  assert.throws(() => historyConfig({ maxAge: -1 }), /redis\.history\.maxAge/);
  assert.throws(() => historyConfig({ maxBytes: 1.5 }), /redis\.history\.maxBytes/);
  assert.throws(() => historyConfig('yes' as never), /history must be a boolean or an object, got string/);
  assert.throws(() => createRedisAdapter({ url: 'redis://127.0.0.1', history: { maxMessages: 0 } }), /redis\.history\.maxMessages/);
  const adapter = createRedisAdapter({ url: 'redis://127.0.0.1', prefix: 'p:', history: true });
  assert.equal(adapter.historyKey, `p:history:${adapter.session}`);
});

test('retention: the MINID kept is the first seq within the count, bytes and age bounds; the newest frame is always kept', () => {
  const byCount = new HistoryRetention({ maxMessages: 3, maxBytes: 1e9, maxAge: 1e9 });
  assert.deepEqual([1, 2, 3, 4, 5].map((seq) => byCount.add(seq, 10, 0)), [1, 1, 1, 2, 3]);
  assert.deepEqual(byCount.held, { messages: 3, bytes: 30 });

  const byBytes = new HistoryRetention({ maxMessages: 1e9, maxBytes: 100, maxAge: 1e9 });
  assert.equal(byBytes.add(1, 40, 0), 1);
  assert.equal(byBytes.add(2, 40, 0), 1);
  assert.equal(byBytes.add(3, 40, 0), 2, '120 bytes: the oldest goes');
  assert.equal(byBytes.add(4, 500, 0), 4, 'one frame over the bound is still kept, alone');
  assert.deepEqual(byBytes.held, { messages: 1, bytes: 500 });

  const byAge = new HistoryRetention({ maxMessages: 1e9, maxBytes: 1e9, maxAge: 1000 });
  assert.equal(byAge.add(1, 1, 0), 1);
  assert.equal(byAge.add(2, 1, 500), 1);
  assert.equal(byAge.add(3, 1, 1200), 2, 'seq 1 is older than 1000 ms');
  assert.equal(byAge.add(4, 1, 5000), 4);

  // Long runs compact the arrays but keep the answer.
  const long = new HistoryRetention({ maxMessages: 10, maxBytes: 1e9, maxAge: 1e9 });
  let last = 0;
  for (let seq = 1; seq <= 10_000; seq++) last = long.add(seq, 1, seq);
  assert.equal(last, 9_991);
  assert.deepEqual(long.held, { messages: 10, bytes: 10 });
});

test('stream ids: `<seq>-0` is the sender\'s seq; anything else is not one of ours', () => {
  assert.equal(entrySeq('42-0'), 42);
  assert.equal(entrySeq('42-1'), null);
  assert.equal(entrySeq('1700000000000-0'), 1_700_000_000_000);
  assert.equal(entrySeq('x-0'), null);
});

test('frames say whether their sender keeps a history; frames without the flag (older nodes) still decode', () => {
  const withHistory = decodeFrame(encodeFrame('n1', message, { session: 's', seq: 7, history: true }));
  assert.ok(!('error' in withHistory));
  assert.deepEqual(withHistory.sequence, { session: 's', seq: 7, history: true });
  const without = decodeFrame(encodeFrame('n1', message, { session: 's', seq: 7 }));
  assert.ok(!('error' in without));
  assert.deepEqual(without.sequence, { session: 's', seq: 7 });
  assert.equal(without.message.data.toString(), 'hi');
});

test("frames carry a store fan-out's name with sessionsReached (a node writes it by that name to its unpersisted sessions); frames without it still decode", () => {
  const named = decodeFrame(encodeFrame('n1', { ...message, sessionsReached: true, fanOut: 'abc.7' }));
  assert.ok(!('error' in named));
  assert.equal(named.message.sessionsReached, true);
  assert.equal(named.message.fanOut, 'abc.7');
  const unnamed = decodeFrame(encodeFrame('n1', { ...message, sessionsReached: true }));
  assert.ok(!('error' in unnamed));
  assert.equal(unnamed.message.sessionsReached, true);
  assert.equal(unnamed.message.fanOut, undefined);
  // A name without sessionsReached is not sent: it means nothing there.
  const stray = decodeFrame(encodeFrame('n1', { ...message, fanOut: 'abc.8' }));
  assert.ok(!('error' in stray));
  assert.equal(stray.message.fanOut, undefined);
});
