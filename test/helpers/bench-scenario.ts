/**
 * Runs one benchmark scenario (bench/scenarios/<file>.ts) with --quick and the
 * given arguments in a child process, its results written to a temp folder
 * (never bench/results/), and returns the result it wrote. The bench smoke
 * tests use it: they check the scenarios' plumbing and integrity, not speed.
 * The temp folder is removed when the run ends, passed or failed.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Result } from '../../bench/lib/harness.ts';
import { pace } from './pace.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));

/** Where the scenario's temp folder goes: `tmpRoot` (the system's temp folder unless given). */
export interface QuickScenarioOptions {
  tmpRoot?: string;
}

/** Exit 0 within `budgetMs` (scaled by the measured pace; a hang is killed), then `<file>-quick.json`. */
export async function runQuickScenario(file: string, args: string[], budgetMs: number, { tmpRoot = tmpdir() }: QuickScenarioOptions = {}): Promise<Result> {
  const dir = mkdtempSync(join(tmpRoot, 'ws-supervisor-bench-'));
  try {
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
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
