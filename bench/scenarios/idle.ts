/**
 * Scenario 2 — memory per idle connection. Opens 1k, then 5k, then 10k idle
 * connections (cumulative) and, at each level, forces a full GC in the server
 * (servers run with --expose-gc) and reads its RSS and heap.
 *
 *   node --import tsx bench/scenarios/idle.ts [--quick] [--rounds 3] [--systems …] [--levels 1000,5000,10000]
 *
 * RSS per connection at N = (RSS at N − RSS with no connection) / N; the
 * marginal slope between the last two levels (5k → 10k) excludes one-off
 * costs (code warm-up, pools). The file-descriptor cap here is 20,000
 * (`ulimit -n`): this process holds one client socket per connection and the
 * server one more, each below the cap at 10k.
 * Integrity: the server counts exactly the connections opened at every level,
 * and none closed while idle.
 *
 * --quick: levels 500 and 1000, 1 round, supervisor + raw.
 */
import { parseArgs } from 'node:util';
import {
  alternatingRounds,
  closeAll,
  connectMany,
  finishScenario,
  pinSelf,
  Recorder,
  scenarioArgs,
  sleep,
  startServer,
  waitForConnections,
  type BenchClient,
  type System,
} from '../lib/harness.ts';

const common = scenarioArgs(['supervisor', 'raw']);
const { values } = parseArgs({ args: common.rest, options: { levels: { type: 'string' }, settle: { type: 'string' } } });
const QUICK = common.quick;
const LEVELS = (values.levels ?? (QUICK ? '500,1000' : '1000,5000,10000')).split(',').map(Number);
const SETTLE_MS = Number(values.settle ?? (QUICK ? 300 : 1000));
const ROUNDS = common.rounds;
const SYSTEMS: System[] = common.systems;
const KiB = 1024;
const label = (n: number): string => (n % 1000 === 0 ? `${n / 1000}k` : String(n));

pinSelf(1);

async function runOnce(system: System, rec: Recorder): Promise<string[]> {
  const problems: string[] = [];
  const server = await startServer(system);
  const clients: BenchClient[] = [];
  let closed = 0;
  try {
    await sleep(SETTLE_MS);
    const base = await server.gc();
    let prev = { n: 0, rss: base.rss, heap: base.heapUsed };
    const line: string[] = [];
    for (const n of LEVELS) {
      const more = await connectMany(server, n - clients.length, { batch: 250 });
      for (const c of more) c.onClose(() => closed++);
      clients.push(...more);
      await waitForConnections(server, n, 60_000);
      await sleep(SETTLE_MS);
      const s = await server.gc();
      if (s.connections !== n) problems.push(`${system}: server counts ${s.connections} connections at level ${n}`);
      rec.add(system, `RSS per idle connection @${label(n)}`, 'KiB', (s.rss - base.rss) / n / KiB);
      rec.add(system, `heap per idle connection @${label(n)}`, 'KiB', (s.heapUsed - base.heapUsed) / n / KiB);
      if (n === LEVELS[LEVELS.length - 1] && prev.n > 0) {
        rec.add(system, `RSS marginal ${label(prev.n)}→${label(n)}`, 'KiB', (s.rss - prev.rss) / (n - prev.n) / KiB);
        rec.add(system, `heap marginal ${label(prev.n)}→${label(n)}`, 'KiB', (s.heapUsed - prev.heap) / (n - prev.n) / KiB);
      }
      line.push(`${label(n)}: ${((s.rss - base.rss) / n / KiB).toFixed(1)} KiB RSS, ${((s.heapUsed - base.heapUsed) / n / KiB).toFixed(1)} KiB heap`);
      prev = { n, rss: s.rss, heap: s.heapUsed };
    }
    if (closed > 0) problems.push(`${system}: ${closed} idle connections closed during the run`);
    console.log(`${system.padEnd(10)} ${line.join('  |  ')}`);
  } finally {
    await closeAll(clients);
    await server.stop();
  }
  return problems;
}

const started = Date.now();
const rec = new Recorder();
const problems: string[] = [];
for (const { system } of alternatingRounds(ROUNDS, SYSTEMS, true)) problems.push(...(await runOnce(system, rec)));
const last = LEVELS[LEVELS.length - 1]!;
const ratios = rec.ratiosVsRaw(SYSTEMS, [
  [`RSS per idle connection @${label(last)}`, last === 10_000 ? '<= 1.15' : undefined],
  `RSS marginal ${label(LEVELS[LEVELS.length - 2] ?? 0)}→${label(last)}`,
  `heap per idle connection @${label(last)}`,
]);
const result = {
  rounds: ROUNDS,
  rows: rec.toRows(),
  ratios,
  integrity: {
    ok: problems.length === 0,
    details:
      problems.length === 0
        ? `at every level (${LEVELS.join(', ')}) each server counted exactly the connections opened; none closed while idle`
        : problems.join('; '),
  },
  notes: ['RSS and heap read in the server after two forced full GCs (--expose-gc), minus the same reading before any connection'],
  params: { levels: LEVELS, settleMs: SETTLE_MS, quick: QUICK, systems: SYSTEMS, durationSeconds: (Date.now() - started) / 1000 },
};
finishScenario('idle', QUICK, started, result);
