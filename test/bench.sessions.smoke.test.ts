/**
 * Smoke tests of the session benchmarks (bench/scenarios/sessions.ts and
 * reconnect.ts) in --quick mode, scaled down (sessions: reqres 0.5 s, 50
 * receivers × 3 broadcasts; reconnect: 200 sessions): each runs end to end against a
 * real server and writes a result with integrity ok (every reply, push and
 * replay exactly once, every resume `resumed: true`). They check that the
 * scenarios and the session load client work, not how fast anything is.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runQuickScenario as runScenario } from './helpers/bench-scenario.ts';
import { pace } from './helpers/pace.ts';

test('bench/scenarios/sessions.ts --quick: sessions off and on side by side, ratios against sessions off', { timeout: pace.scaled(120_000) }, async () => {
  // Smaller than --quick (reqres 2 s after 0.5 s, broadcast 200 receivers × 10): the same rows,
  // ratios and integrity checks, from fewer messages; the figures are not what this checks.
  const result = await runScenario('sessions', ['--parts', 'reqres,broadcast', '--variants', 'off,on', '--seconds', '0.5', '--warmup', '0.25', '--receivers', '50', '--broadcasts', '3'], 110_000);
  assert.equal(result.integrity.ok, true, result.integrity.details);
  for (const system of ['sessions off', 'sessions on']) {
    for (const metric of ['throughput', 'server CPU per message', 'broadcast to all @50 p50']) {
      const row = result.rows.find((r) => r.system === system && r.metric === metric);
      assert.ok(row && Number.isFinite(row.median) && row.median > 0, `row ${system} ${metric}: ${JSON.stringify(row)}`);
    }
  }
  const cpu = result.ratios.find((r) => r.metric === 'server CPU per message' && r.system === 'sessions on');
  assert.ok(cpu && cpu.vs === 'sessions off' && cpu.target === '<= 1.15' && typeof cpu.met === 'boolean', JSON.stringify(cpu));
});

test('bench/scenarios/reconnect.ts --quick: every session cut and resumed, nothing lost', { timeout: pace.scaled(120_000) }, async () => {
  const result = await runScenario('reconnect', ['--levels', '200', '--stores', 'memory'], 110_000);
  assert.equal(result.integrity.ok, true, result.integrity.details);
  const replayed = result.rows.find((r) => r.system === 'memory store' && r.metric === 'messages replayed @200');
  const all = result.rows.find((r) => r.system === 'memory store' && r.metric === 'time until all resumed @200');
  assert.ok(replayed && replayed.median >= 0, JSON.stringify(replayed));
  assert.ok(all && Number.isFinite(all.median) && all.median > 0, JSON.stringify(all));
});
