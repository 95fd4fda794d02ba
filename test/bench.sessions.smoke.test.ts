/**
 * Smoke tests of the session benchmarks (bench/scenarios/sessions.ts and
 * reconnect.ts) in --quick mode, scaled down: each runs end to end against a
 * real server and writes a result with integrity ok (every reply, push and
 * replay exactly once, every resume `resumed: true`). They check that the
 * scenarios and the session load client work, not how fast anything is.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { Result } from '../bench/lib/harness.ts';
import { pace } from './helpers/pace.ts';

const REPO = fileURLToPath(new URL('..', import.meta.url));

async function runScenario(file: string, args: string[], budgetMs: number): Promise<Result> {
  const dir = mkdtempSync(join(tmpdir(), 'ws-supervisor-bench-'));
  const child = spawn(process.execPath, ['--import', 'tsx', `bench/scenarios/${file}.ts`, '--quick', ...args], {
    cwd: REPO,
    env: { ...process.env, BENCH_RESULTS_DIR: dir, NODE_ENV: 'production' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const killer = setTimeout(() => child.kill('SIGKILL'), pace.scaled(budgetMs)); // ends a hang: scaled by the measured pace
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  clearTimeout(killer);
  assert.equal(code, 0, output);
  return JSON.parse(readFileSync(join(dir, `${file}-quick.json`), 'utf8')) as Result;
}

test('bench/scenarios/sessions.ts --quick: sessions off and on side by side, ratios against sessions off', { timeout: pace.scaled(120_000) }, async () => {
  const result = await runScenario('sessions', ['--parts', 'reqres,broadcast', '--variants', 'off,on'], 110_000);
  assert.equal(result.integrity.ok, true, result.integrity.details);
  for (const system of ['sessions off', 'sessions on']) {
    for (const metric of ['throughput', 'server CPU per message', 'broadcast to all @200 p50']) {
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
