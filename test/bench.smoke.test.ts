/**
 * Smoke tests of the performance suite (bench/): the request/response
 * scenario in --quick mode (50 connections, 1 round, supervisor + raw; 0.5 s
 * measured instead of 2) runs end to end and writes a result with integrity ok; the broadcast
 * scenario, cut smaller than --quick, writes its interleaved single-broadcast
 * ratio with the target on it (the sequential ones without). It checks that the
 * harness, the servers and the scenario work, not how fast anything is; the
 * benchmarks themselves are not part of `npm test` (`npm run bench`).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { runQuickScenario } from './helpers/bench-scenario.ts';
import { pace } from './helpers/pace.ts';

test('bench/scenarios/reqres.ts --quick produces a result with integrity ok', { timeout: pace.scaled(60_000) }, async () => {
  // Shorter than --quick's 2 s (and 0.5 s warmup): every row and ratio is there from the first
  // replies; the benchmark's figures are not what this checks.
  // In a temp root of its own, to check the scenario's temp folder is gone afterwards (the runs of the
  // suite left one per scenario run in the system's temp folder before).
  const tmpRoot = mkdtempSync(join(tmpdir(), 'ws-supervisor-bench-root-'));
  let leftBehind: string[] = [];
  const result = await runQuickScenario('reqres', ['--seconds', '0.5', '--warmup', '0.25'], 55_000, { tmpRoot }).finally(() => {
    leftBehind = readdirSync(tmpRoot);
    rmSync(tmpRoot, { recursive: true, force: true });
  });
  assert.deepEqual(leftBehind, [], 'the scenario left its temp folder behind');
  assert.equal(result.scenario, 'reqres-quick');
  assert.equal(result.integrity.ok, true, result.integrity.details);
  assert.equal(result.rounds, 1);
  assert.ok(!Number.isNaN(Date.parse(result.date)));
  assert.ok(result.machine.cpus >= 1 && result.machine.node.startsWith('v'));
  for (const system of ['supervisor', 'raw']) {
    for (const metric of ['throughput', 'latency p50', 'latency p99', 'server CPU per message']) {
      const row = result.rows.find((r) => r.system === system && r.metric === metric);
      assert.ok(row, `row ${system} ${metric}`);
      assert.equal(row.values.length, 1);
      assert.ok(Number.isFinite(row.median) && row.median > 0, `${system} ${metric} = ${row.median}`);
    }
  }
  const cpu = result.ratios.find((r) => r.metric === 'server CPU per message' && r.system === 'supervisor');
  assert.ok(cpu && cpu.vs === 'raw' && cpu.target === '<= 1.05' && typeof cpu.met === 'boolean');
});

test('bench/scenarios/broadcast.ts --quick judges single broadcasts on interleaved rounds, integrity ok', { timeout: pace.scaled(60_000) }, async () => {
  // Smaller than --quick's 200 receivers: the scenario's plumbing, not its figures.
  const result = await runQuickScenario('broadcast', ['--levels', '50', '--broadcasts', '3', '--bursts', '1', '--interleaved-levels', '50', '--interleaved-rounds', '4'], 55_000);
  assert.equal(result.integrity.ok, true, result.integrity.details);
  assert.match(result.integrity.details, /1 \+ 4 interleaved single broadcasts per system at 50 receivers/);
  for (const system of ['supervisor', 'raw']) {
    for (const metric of ['single broadcast to all @50 p50, interleaved', 'server CPU per delivery, interleaved singles @50', 'broadcast to all @50 p50, sequential passes']) {
      const row = result.rows.find((r) => r.system === system && r.metric === metric);
      assert.ok(row && Number.isFinite(row.median) && row.median > 0, `row ${system} ${metric} = ${row?.median}`);
    }
  }
  // The single-broadcast target sits on the interleaved ratio; the sequential one is shown without it.
  const single = result.ratios.find((r) => r.metric === 'single broadcast to all @50, interleaved');
  assert.ok(single && single.system === 'supervisor' && single.vs === 'raw' && single.target === '<= 1.0' && typeof single.met === 'boolean' && single.ratio > 0);
  const sequential = result.ratios.find((r) => r.metric === 'broadcast to all @50 p50, sequential passes');
  assert.ok(sequential && sequential.target === undefined);
  assert.ok(result.notes?.some((n) => /Socket\.IO runs in the sequential passes only/.test(n)));
});
