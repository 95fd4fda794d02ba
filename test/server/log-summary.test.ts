// Repeated warnings summarised (src/server/log-summary.ts): the
// first of a burst at once, then one line per interval with the counts, a
// quiet interval ends the burst.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LogSummary } from '../../src/server/log-summary.ts';
import type { Logger } from '../../src/base/logger.ts';
import { waitFor } from '../helpers/server.ts';

test('LogSummary: the first of a burst logged at once, the rest one line per interval with counts by key and bytes; a quiet interval starts a new burst', async () => {
  const lines: Array<{ fields: Record<string, unknown>; msg: string }> = [];
  const noop = (): void => undefined;
  const logger: Logger = { debug: noop, info: noop, error: noop, warn: (fields, msg = '') => void lines.push({ fields: fields as Record<string, unknown>, msg }), child: () => logger };
  const INTERVAL = 150;
  const log = new LogSummary({ logger, what: 'things', intervalMs: INTERVAL });
  log.note('a', 10, { first: true }, 'thing a happened');
  for (let i = 0; i < 500; i++) log.note(i % 5 === 0 ? 'b' : 'a', 10, {}, 'never logged');
  assert.deepEqual([...lines], [{ fields: { first: true }, msg: 'thing a happened' }], 'only the first, at once');
  await waitFor(() => lines.length === 2, 5000, 'the summary');
  assert.match(lines[1]!.msg, /^things: 500 more in the last \d+\.\d s \(b 100, a 400; 5000 bytes\)$/);
  assert.deepEqual(lines[1]!.fields.byKey, { a: 400, b: 100 });
  // The burst goes on: still counted, not logged one by one.
  log.note('a', 1, {}, 'never logged');
  await waitFor(() => lines.length === 3, 5000, 'the next summary');
  assert.match(lines[2]!.msg, /^things: 1 more/);
  // A quiet interval ends the burst: the next is logged at once again.
  await waitFor(() => !log.active, 5000, 'a quiet interval');
  log.note('c', 0, {}, 'thing c happened');
  assert.equal(lines.at(-1)!.msg, 'thing c happened');
  log.note('c', 0, {}, 'never logged');
  log.close(); // flushes what is left and stops the timer (R3)
  assert.match(lines.at(-1)!.msg, /^things: 1 more .*\(c 1; 0 bytes\)$/);
  assert.equal(lines.length, 5);
});
