#!/usr/bin/env node
// Times each test file on its own (`node --enable-source-maps --test-reporter=tap BUNDLE`, the file
// bundled and run directly as `npm test` runs it, scripts/bundle-tests.mjs and scripts/run-tests.mjs;
// with --tsx, `node --import tsx --test-reporter=tap FILE`), one after another, and prints a table sorted slowest first: wall seconds, tests
// passed/failed. The numbers include each file's process start, which `npm test` pays once per
// file too (it runs each file in its own process). With /usr/bin/time present it also prints each file's CPU time
// (user + system of the file's processes and every child they waited for: redis-server, cluster
// nodes, Chromium), so CPU / wall says how much of a file is waiting (timers, process starts)
// rather than computing: the model behind the runner's concurrency (docs/testing.md, "Wall time").
// Usage: node scripts/time-tests.mjs [substring...] [--tsx] [--json=out.json]
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { spawn } from 'node:child_process';
import { bundleTests } from './bundle-tests.mjs';

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

const args = process.argv.slice(2);
const jsonOut = args.find((a) => a.startsWith('--json='))?.slice('--json='.length);
const filter = args.filter((a) => !a.startsWith('--'));
let files = walk('test').sort();
if (filter.length > 0) files = files.filter((f) => filter.some((x) => f.includes(x)));

const viaTsx = args.includes('--tsx');
const bundleDir = resolve('test', '.build', `time-${process.pid}`);
const runnable = viaTsx ? new Map(files.map((f) => [f, f])) : new Map([...(await bundleTests(files, bundleDir))].map(([bundle, f]) => [f, bundle]));

const TIME = '/usr/bin/time';
const hasTime = existsSync(TIME);
const scratch = mkdtempSync(join(tmpdir(), 'time-tests-'));

function run(file) {
  return new Promise((resolve) => {
    const start = process.hrtime.bigint();
    const node = [process.execPath, ...(viaTsx ? ['--import', 'tsx'] : ['--enable-source-maps']), '--test-reporter=tap', runnable.get(file)];
    const usage = join(scratch, 'usage');
    const [cmd, ...argv] = hasTime ? [TIME, '-f', '%U %S', '-o', usage, ...node] : node;
    const child = spawn(cmd, argv, {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let tap = '';
    child.stdout.on('data', (d) => { tap += d; });
    child.on('close', (code) => {
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      const count = (name) => Number(new RegExp(`^# ${name} (\\d+)$`, 'm').exec(tap)?.[1] ?? 0);
      // The time in the file's top-level tests (as scripts/test-file-times.mjs counts it for `npm test`); the rest of
      // the wall time is outside them: process start, tsx, imports, top-level awaits, teardown.
      const inTests = [...tap.matchAll(/^(?:not )?ok \d+ .*\n {2}---\n {2}duration_ms: ([\d.]+)$/gm)].reduce((s, m) => s + Number(m[1]) / 1000, 0);
      let cpu = null;
      if (hasTime && existsSync(usage)) {
        const m = /([\d.]+) ([\d.]+)\s*$/.exec(readFileSync(usage, 'utf8'));
        if (m) cpu = Number(m[1]) + Number(m[2]);
        rmSync(usage, { force: true });
      }
      resolve({ file, seconds, cpu, inTests, pass: count('pass'), fail: count('fail') + count('cancelled'), skipped: count('skipped'), code });
    });
  });
}

const results = [];
for (const file of files) {
  const r = await run(file);
  results.push(r);
  console.error(`${r.seconds.toFixed(1).padStart(7)} s (${r.inTests.toFixed(1)} s in tests) ${r.cpu === null ? '' : `${r.cpu.toFixed(1).padStart(6)} s CPU `} ${String(r.pass).padStart(5)} pass ${r.fail} fail  ${file}`);
}
results.sort((a, b) => b.seconds - a.seconds);
const total = results.reduce((s, r) => s + r.seconds, 0);
const cpuTotal = results.reduce((s, r) => s + (r.cpu ?? 0), 0);
const cpuCell = (v) => (hasTime ? ` ${v === null ? '?' : v.toFixed(1)} |` : '');
const inTestsTotal = results.reduce((s, r) => s + r.inTests, 0);
console.log(`| file | wall (s) | in tests (s) |${hasTime ? ' CPU (s) |' : ''} passed | failed |\n|---|---|---|${hasTime ? '---|' : ''}---|---|`);
for (const r of results) console.log(`| \`${r.file}\` | ${r.seconds.toFixed(1)} | ${r.inTests.toFixed(1)} |${cpuCell(r.cpu)} ${r.pass} | ${r.fail} |`);
console.log(`| total (sum) | ${total.toFixed(1)} | ${inTestsTotal.toFixed(1)} |${cpuCell(cpuTotal)} ${results.reduce((s, r) => s + r.pass, 0)} | ${results.reduce((s, r) => s + r.fail, 0)} |`);
rmSync(scratch, { recursive: true, force: true });
rmSync(bundleDir, { recursive: true, force: true });
if (jsonOut) writeFileSync(jsonOut, JSON.stringify(results, null, 2));
process.exit(results.some((r) => r.fail > 0 || r.code !== 0) ? 1 : 0);
