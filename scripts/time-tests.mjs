#!/usr/bin/env node
// Times each test file on its own (`node --import tsx --test FILE`), one after another, and prints
// a table sorted slowest first: wall seconds, tests passed/failed. The numbers include each file's
// process start (tsx compiling), which `npm test` pays once per file too (it runs files one at a
// time in their own processes). Usage: node scripts/time-tests.mjs [substring...] [--json=out.json]
import { readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';

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

function run(file) {
  return new Promise((resolve) => {
    const start = process.hrtime.bigint();
    const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=tap', file], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let tap = '';
    child.stdout.on('data', (d) => { tap += d; });
    child.on('close', (code) => {
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      const count = (name) => Number(new RegExp(`^# ${name} (\\d+)$`, 'm').exec(tap)?.[1] ?? 0);
      resolve({ file, seconds, pass: count('pass'), fail: count('fail') + count('cancelled'), skipped: count('skipped'), code });
    });
  });
}

const results = [];
for (const file of files) {
  const r = await run(file);
  results.push(r);
  console.error(`${r.seconds.toFixed(1).padStart(7)} s  ${String(r.pass).padStart(5)} pass ${r.fail} fail  ${file}`);
}
results.sort((a, b) => b.seconds - a.seconds);
const total = results.reduce((s, r) => s + r.seconds, 0);
console.log('| file | wall (s) | passed | failed |\n|---|---|---|---|');
for (const r of results) console.log(`| \`${r.file}\` | ${r.seconds.toFixed(1)} | ${r.pass} | ${r.fail} |`);
console.log(`| total (sum) | ${total.toFixed(1)} | ${results.reduce((s, r) => s + r.pass, 0)} | ${results.reduce((s, r) => s + r.fail, 0)} |`);
if (jsonOut) writeFileSync(jsonOut, JSON.stringify(results, null, 2));
process.exit(results.some((r) => r.fail > 0 || r.code !== 0) ? 1 : 0);
