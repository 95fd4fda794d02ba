/**
 * Runs every scenario in bench/scenarios/ one after another (never in parallel:
 * they share the two cores), each in its own process so one scenario's sockets
 * and heap never weigh on the next.
 *
 *   npm run bench [-- --quick] [-- --only reqres,idle] [other flags passed through]
 *
 * Results land in bench/results/<scenario>.json; `npm run bench:report` turns
 * them into docs/BENCHMARKS.md and docs/images/bench-ratios.svg.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { BENCH_DIR, REPO_DIR } from './lib/harness.ts';

const argv = process.argv.slice(2);
let only: string[] | null = null;
const pass: string[] = [];
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--only') only = argv[++i]!.split(',');
  else if (argv[i]!.startsWith('--only=')) only = argv[i]!.slice(7).split(',');
  else pass.push(argv[i]!);
}

// The three headline scenarios first (reqres, idle, broadcast), then anything else alphabetically.
const ORDER = ['reqres', 'idle', 'broadcast', 'churn', 'heartbeat', 'detection', 'scaleout', 'overload', 'capacity', 'sessions', 'reconnect'];
const scenarios = readdirSync(join(BENCH_DIR, 'scenarios'))
  .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
  .map((f) => f.slice(0, -3))
  .filter((s) => only === null || only.includes(s))
  .sort((a, b) => (ORDER.indexOf(a) + 1 || 99) - (ORDER.indexOf(b) + 1 || 99) || a.localeCompare(b));

if (scenarios.length === 0) {
  console.error('bench: no scenarios found in bench/scenarios/');
  process.exit(1);
}
const failed: string[] = [];
const started = Date.now();
for (const s of scenarios) {
  console.log(`\n=== ${s} ${pass.join(' ')}`);
  const t0 = Date.now();
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(BENCH_DIR, 'scenarios', `${s}.ts`), ...pass], {
    cwd: REPO_DIR,
    stdio: 'inherit',
    env: { ...process.env, NODE_ENV: 'production' },
  });
  console.log(`=== ${s}: ${r.status === 0 ? 'ok' : `FAILED (exit ${r.status ?? r.signal})`} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  if (r.status !== 0) failed.push(s);
}
console.log(`\n${scenarios.length} scenario(s) in ${((Date.now() - started) / 1000).toFixed(1)} s${failed.length ? `; failed: ${failed.join(', ')}` : ''}`);
console.log('next: npm run bench:report');
process.exit(failed.length ? 1 : 0);
