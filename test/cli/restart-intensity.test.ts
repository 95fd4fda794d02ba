/**
 * The restart intensity (src/cli/restart-intensity.ts) on its own: OTP's rule,
 * "at most R restarts within T", with the clock passed in.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RESTART_DEFAULTS, RestartIntensity } from '../../src/cli/restart-intensity.ts';

describe('RestartIntensity', () => {
  test('allows maxRestarts crashes within the period; the next one gives up', () => {
    const r = new RestartIntensity({ maxRestarts: 3, periodMs: 10_000 });
    assert.deepEqual(r.crashed(0), { restart: true, count: 1 });
    assert.deepEqual(r.crashed(100), { restart: true, count: 2 });
    assert.deepEqual(r.crashed(200), { restart: true, count: 3 });
    assert.deepEqual(r.crashed(300), { restart: false, count: 4 });
  });

  test('crashes older than the period no longer count (a sliding window)', () => {
    const r = new RestartIntensity({ maxRestarts: 2, periodMs: 1_000 });
    assert.equal(r.crashed(0).restart, true);
    assert.equal(r.crashed(500).restart, true);
    // The crash at 0 is exactly one period old at 1000: out of the window.
    assert.deepEqual(r.crashed(1_000), { restart: true, count: 2 });
    assert.deepEqual(r.crashed(1_400), { restart: false, count: 3 });
    assert.equal(r.recent(1_400), 3);
    assert.equal(r.recent(10_000), 0);
  });

  test('one crash at a time, spaced wider than the period, is restarted forever', () => {
    const r = new RestartIntensity({ maxRestarts: 1, periodMs: 1_000 });
    for (let t = 0; t < 100_000; t += 1_001) assert.deepEqual(r.crashed(t), { restart: true, count: 1 });
  });

  test('maxRestarts 0: the first crash gives up', () => {
    assert.deepEqual(new RestartIntensity({ maxRestarts: 0, periodMs: 1_000 }).crashed(0), { restart: false, count: 1 });
  });

  test('a crash loop at the defaults is stopped on the sixth crash', () => {
    const r = new RestartIntensity({ maxRestarts: RESTART_DEFAULTS.maxRestarts, periodMs: RESTART_DEFAULTS.periodSeconds * 1000 });
    const decisions = [0, 1, 2, 3, 4, 5].map((i) => r.crashed(i * 1_000).restart);
    assert.deepEqual(decisions, [true, true, true, true, true, false]);
  });

  test('bad limits are refused', () => {
    assert.throws(() => new RestartIntensity({ maxRestarts: -1, periodMs: 1 }), RangeError);
    assert.throws(() => new RestartIntensity({ maxRestarts: 1.5, periodMs: 1 }), RangeError);
    assert.throws(() => new RestartIntensity({ maxRestarts: 1, periodMs: 0 }), RangeError);
    assert.throws(() => new RestartIntensity({ maxRestarts: 1, periodMs: Number.NaN }), RangeError);
  });
});
