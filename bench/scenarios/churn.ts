/**
 * Scenario 4, churn: connect/close cycles as fast as the load core allows,
 * then look for what the server kept.
 *
 *   node --import tsx bench/scenarios/churn.ts [--quick] [--rounds N] [--systems supervisor,raw,socketio]
 *                                              [--cycles N] [--concurrency N]
 *
 * Full: 100,000 cycles per run, 3 rounds, systems alternating; --quick: 5,000 cycles, 1 round.
 * A cycle opens a connection, waits for it to open, closes it with 1000 (socket.io:
 * disconnect()) and waits for the close; `concurrency` cycles run at once.
 *
 * Per run, after a warm-up of 5% of the cycles (≥ 2,000: JIT, pools, first-use
 * allocations) and after forced full GCs in the server (--expose-gc, 4 passes):
 *   before — heapUsed, RSS, process.getActiveResourcesInfo() Timeout / TCPSocketWrap counts
 *   churn  — connections per second (cycles / wall time)
 *   middle — heapUsed half-way (after GC): growth that levels off is warm-up, growth that
 *            continues through the second half (reported per 1k cycles) is a leak
 *   after  — the same, once the server reports 0 live connections
 * Targets (per system): heap after within 5% of before; no growth in Timeout or TCPSocketWrap.
 * Integrity: client opened = closed = cycles, no client errors; server opened = closed = cycles + warm-up, 0 live.
 */
import WebSocket from 'ws';
import {
  alternatingRounds,
  checkRows,
  connectClient,
  pinSelf,
  printResult,
  Recorder,
  scenarioArgs,
  sleep,
  writeResult,
  type Check,
} from '../lib/harness.ts';
import { startLifecycleServer, type LifecycleServer, type LifecycleStats } from '../lib/lifecycle.ts';

const { quick, rounds: ROUNDS, systems: SYSTEMS, flag } = scenarioArgs();
const CYCLES = flag('cycles', quick ? 5_000 : 100_000);
const CONCURRENCY = flag('concurrency', 100);
const WARMUP = Math.max(2_000, Math.round(CYCLES / 20));
const HEAP_TARGET = 1.05;
pinSelf(1);

interface ClientCounts {
  opened: number;
  closed: number;
  errors: number;
  firstError: string | null;
}

/** One connect → open → close → closed cycle. */
async function cycle(server: LifecycleServer, counts: ClientCounts): Promise<void> {
  try {
    if (server.system === 'socketio') {
      const client = await connectClient(server);
      counts.opened++;
      const closed = new Promise<void>((r) => client.onClose(r));
      client.close();
      await closed;
      counts.closed++;
      return;
    }
    const ws = new WebSocket(server.url, { perMessageDeflate: false });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    counts.opened++;
    await new Promise<void>((resolve) => {
      ws.once('close', () => resolve());
      ws.close(1000);
    });
    counts.closed++;
  } catch (err) {
    counts.errors++;
    counts.firstError ??= String(err);
  }
}

async function churn(server: LifecycleServer, n: number): Promise<{ counts: ClientCounts; seconds: number }> {
  const counts: ClientCounts = { opened: 0, closed: 0, errors: 0, firstError: null };
  let started = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(CONCURRENCY, n) }, async () => {
      while (started < n) {
        started++;
        await cycle(server, counts);
      }
    }),
  );
  return { counts, seconds: (performance.now() - t0) / 1000 };
}

async function settle(server: LifecycleServer, expectedOpened: number, timeoutMs = 30_000): Promise<LifecycleStats> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await server.stats();
    if (s.connections === 0 && s.opened === expectedOpened && s.closed === expectedOpened) return s;
    if (Date.now() > deadline) return s;
    await sleep(100);
  }
}

const MiB = 1024 * 1024;
const rec = new Recorder();
const problems: string[] = [];
const notes: string[] = [];
const targetMisses: string[] = [];
const t00 = performance.now();

for (const { round, system } of alternatingRounds(ROUNDS, SYSTEMS)) {
  const server = await startLifecycleServer(system);
  try {
    const warm = await churn(server, WARMUP);
    await settle(server, WARMUP);
    await sleep(200);
    const before = await server.gc();
    // Two halves with a snapshot between: warm-up effects (JIT, pools) level off,
    // a leak keeps growing from the middle to the end.
    const half = Math.floor(CYCLES / 2);
    const run1 = await churn(server, half);
    await settle(server, WARMUP + half);
    const mid = await server.gc();
    const run2 = await churn(server, CYCLES - half);
    const run = {
      seconds: run1.seconds + run2.seconds,
      counts: {
        opened: run1.counts.opened + run2.counts.opened,
        closed: run1.counts.closed + run2.counts.closed,
        errors: run1.counts.errors + run2.counts.errors,
        firstError: run1.counts.firstError ?? run2.counts.firstError,
      },
    };
    const settled = await settle(server, WARMUP + CYCLES);
    await sleep(200);
    const after = await server.gc();

    const rate = CYCLES / run.seconds;
    const secondHalfKiBPer1k = (after.heapUsed - mid.heapUsed) / 1024 / ((CYCLES - half) / 1000);
    rec.add(system, 'heap used at half-way (after GC)', 'MiB', mid.heapUsed / MiB);
    rec.add(system, 'heap growth, 2nd half, per 1k cycles', 'KiB', secondHalfKiBPer1k);
    const heapRatio = after.heapUsed / before.heapUsed;
    const res = (s: LifecycleStats, k: string): number => s.resources[k] ?? 0;
    rec.add(system, 'connections per second', 'conn/s', rate);
    rec.add(system, 'heap used before (after GC)', 'MiB', before.heapUsed / MiB);
    rec.add(system, 'heap used after (after GC)', 'MiB', after.heapUsed / MiB);
    rec.add(system, 'heap after / before', 'ratio', heapRatio);
    rec.add(system, 'RSS before', 'MiB', before.rss / MiB);
    rec.add(system, 'RSS after', 'MiB', after.rss / MiB);
    rec.add(system, 'Timeout handles before', 'count', res(before, 'Timeout'));
    rec.add(system, 'Timeout handles after', 'count', res(after, 'Timeout'));
    rec.add(system, 'TCPSocketWrap before', 'count', res(before, 'TCPSocketWrap'));
    rec.add(system, 'TCPSocketWrap after', 'count', res(after, 'TCPSocketWrap'));
    const resourceKinds = [...new Set([...Object.keys(before.resources), ...Object.keys(after.resources)])].sort();
    const resLine = resourceKinds.map((k) => `${k} ${res(before, k)}→${res(after, k)}`).join(', ');
    console.log(
      `round ${round + 1} ${system.padEnd(10)} ${rate.toFixed(0).padStart(6)} conn/s (${run.seconds.toFixed(1)} s)  ` +
        `heap ${(before.heapUsed / MiB).toFixed(2)}→${(mid.heapUsed / MiB).toFixed(2)}→${(after.heapUsed / MiB).toFixed(2)} MiB (${((heapRatio - 1) * 100).toFixed(1)}%)  ` +
        `RSS ${(before.rss / MiB).toFixed(0)}→${(after.rss / MiB).toFixed(0)} MiB  ${resLine}`,
    );

    if (heapRatio > HEAP_TARGET) targetMisses.push(`round ${round + 1} ${system}: heap ${(before.heapUsed / MiB).toFixed(2)} → ${(after.heapUsed / MiB).toFixed(2)} MiB (+${((heapRatio - 1) * 100).toFixed(1)}%)`);
    for (const k of ['Timeout', 'TCPSocketWrap']) {
      if (res(after, k) > res(before, k)) targetMisses.push(`round ${round + 1} ${system}: ${k} ${res(before, k)} → ${res(after, k)}`);
    }

    // Integrity: every connection opened and closed, counted on both sides.
    const c = run.counts;
    const w = warm.counts;
    if (w.errors || c.errors) problems.push(`round ${round + 1} ${system}: ${w.errors + c.errors} client errors (first: ${c.firstError ?? w.firstError})`);
    if (c.opened !== CYCLES || c.closed !== CYCLES) problems.push(`round ${round + 1} ${system}: client opened ${c.opened}, closed ${c.closed} of ${CYCLES}`);
    const total = WARMUP + CYCLES;
    if (settled.opened !== total || settled.closed !== total || settled.connections !== 0) {
      problems.push(`round ${round + 1} ${system}: server opened ${settled.opened}, closed ${settled.closed}, live ${settled.connections}, expected ${total}/${total}/0`);
    }
    const unexpected = Object.entries(settled.closedBy).filter(([cause]) => !['peer', 'normal', 'client namespace disconnect', 'transport close'].includes(cause));
    if (unexpected.length) notes.push(`round ${round + 1} ${system}: server close causes ${JSON.stringify(settled.closedBy)}`);
  } finally {
    await server.stop();
  }
}

const ratios = rec.ratiosVsRaw(SYSTEMS, ['connections per second', 'heap after / before']);
notes.push(
  `targets per system: heap after GC within ${((HEAP_TARGET - 1) * 100).toFixed(0)}% of its start, no growth in Timeout / TCPSocketWrap: ` +
    (targetMisses.length ? `MISSED: ${targetMisses.join('; ')}` : 'met in every run'),
);
notes.push(`warm-up of ${WARMUP} cycles before the 'before' snapshot; load process pinned to CPU 1 (it bounds conn/s: it does as much handshake work as the server)`);
notes.push(`total run time ${((performance.now() - t00) / 1000).toFixed(0)} s`);
const integrity = {
  ok: problems.length === 0,
  details: problems.length
    ? problems.join('; ')
    : `every run: client opened = closed = ${CYCLES}, 0 errors; server opened = closed = ${WARMUP + CYCLES} (incl. warm-up), 0 live`,
};
const rows = rec.toRows();
const checks = [
  ...SYSTEMS.map((system) => checkRows(rows, system, 'heap after / before', `≤ ${HEAP_TARGET} after GC (and no Timeout/TCPSocketWrap growth)`, (v) => v <= HEAP_TARGET && targetMisses.length === 0)),
].filter((c): c is Check => c !== null);
const result = {
  rounds: ROUNDS,
  rows,
  checks,
  ratios,
  integrity,
  notes,
  params: { quick, cycles: CYCLES, concurrency: CONCURRENCY, warmup: WARMUP, systems: SYSTEMS },
};
printResult(result);
console.log(`wrote ${writeResult(quick ? 'churn-quick' : 'churn', result)}`);
