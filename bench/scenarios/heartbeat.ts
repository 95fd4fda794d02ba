/**
 * Scenario 5, heartbeat cost: server CPU spent keeping idle connections alive
 * with a 1 s ping interval.
 *
 *   node --import tsx bench/scenarios/heartbeat.ts [--quick] [--rounds N] [--systems supervisor,raw,socketio]
 *                                                  [--connections 10000] [--seconds 30] [--ping 1000] [--pong 1000]
 *
 * Full: 10,000 idle connections, 30 s, 3 rounds, systems alternating; --quick: 2,000 connections, 5 s, 1 round.
 * The connections live in 2 client processes (bench/lib/idle-clients.ts; the fd cap is
 * ~19k per process) pinned to CPU 1; the server to CPU 0. `ws` clients answer pings
 * by themselves, socket.io-client answers engine.io pings.
 * Metric: server CPU time over the window as % of one core (target for ws-supervisor: < 10%).
 * The clients' CPU is reported too: near 100% of CPU 1 would make them the bottleneck.
 * Integrity: no connection dropped (server and clients), pings received ≈ connections × seconds / interval.
 */
import {
  alternatingRounds,
  checkRows,
  pinSelf,
  printResult,
  procStats,
  Recorder,
  scenarioArgs,
  sleep,
  writeResult,
  type Check,
} from '../lib/harness.ts';
import { startHolder, startLifecycleServer, type ClientHolder } from '../lib/lifecycle.ts';

const { quick, rounds: ROUNDS, systems: SYSTEMS, flag } = scenarioArgs();
const N = flag('connections', quick ? 2_000 : 10_000);
const SECONDS = flag('seconds', quick ? 5 : 30);
const PING = flag('ping', 1_000);
const PONG = flag('pong', 1_000);
const HOLDERS = 2;
const TARGET_PCT = 10;
pinSelf(1);

const MiB = 1024 * 1024;
const rec = new Recorder();
const problems: string[] = [];
const notes: string[] = [];
const targetMisses: string[] = [];
const t00 = performance.now();

for (const { round, system } of alternatingRounds(ROUNDS, SYSTEMS)) {
  const server = await startLifecycleServer(system, { pingInterval: PING, pongTimeout: PONG });
  const holders: ClientHolder[] = [];
  try {
    const per = Math.ceil(N / HOLDERS);
    holders.push(...(await Promise.all(Array.from({ length: HOLDERS }, (_, i) => startHolder(system, server.url, Math.min(per, N - i * per))))));
    // Warm-up: a few heartbeat cycles at full population before measuring.
    await sleep(quick ? Math.max(2 * PING, 1_000) : Math.max(3 * PING, 2_000));
    const s0 = await server.stats();
    const h0 = await Promise.all(holders.map((h) => h.counts()));
    const hc0 = holders.map((h) => procStats(h.pid).cpuUs);
    const t0 = performance.now();
    await sleep(SECONDS * 1000);
    const s1 = await server.stats();
    const seconds = (performance.now() - t0) / 1000;
    const h1 = await Promise.all(holders.map((h) => h.counts()));
    const hc1 = holders.map((h) => procStats(h.pid).cpuUs);

    const cpuPct = ((s1.cpuUs - s0.cpuUs) / 1e6 / seconds) * 100;
    const clientPct = (hc1.reduce((a, b) => a + b, 0) - hc0.reduce((a, b) => a + b, 0)) / 1e6 / seconds * 100;
    const pings = h1.reduce((a, c) => a + c.pings, 0) - h0.reduce((a, c) => a + c.pings, 0);
    const pingRate = pings / N / seconds; // per connection per second
    const expectedRate = 1000 / PING;
    rec.add(system, 'server CPU, % of one core', '%', cpuPct);
    rec.add(system, 'server CPU per ping', 'µs', ((s1.cpuUs - s0.cpuUs) / pings));
    rec.add(system, 'server RSS', 'MiB', s1.rss / MiB);
    rec.add(system, 'client CPU (2 processes, CPU 1)', '%', clientPct);
    rec.add(system, 'pings per connection per second', '1/s', pingRate);
    console.log(
      `round ${round + 1} ${system.padEnd(10)} server CPU ${cpuPct.toFixed(1)}% of a core over ${seconds.toFixed(1)} s, ` +
        `${((s1.cpuUs - s0.cpuUs) / pings).toFixed(1)} µs/ping, RSS ${(s1.rss / MiB).toFixed(0)} MiB; clients ${clientPct.toFixed(1)}%; ` +
        `${pingRate.toFixed(3)} pings/conn/s; live ${s1.connections}`,
    );
    if (system === 'supervisor' && cpuPct >= TARGET_PCT) targetMisses.push(`round ${round + 1}: ${cpuPct.toFixed(1)}%`);
    if (clientPct > 80) notes.push(`round ${round + 1} ${system}: clients used ${clientPct.toFixed(0)}% of CPU 1: possibly load-bound`);

    const clientClosed = h1.reduce((a, c) => a + c.closed, 0);
    const clientOpen = h1.reduce((a, c) => a + c.open, 0);
    if (s1.connections !== N || s1.closed !== 0) problems.push(`round ${round + 1} ${system}: server holds ${s1.connections} of ${N}, closed ${s1.closed} (${JSON.stringify(s1.closedBy)})`);
    if (clientOpen !== N || clientClosed !== 0) problems.push(`round ${round + 1} ${system}: clients opened ${clientOpen} of ${N}, ${clientClosed} closed`);
    // The supervisor pings after an idle interval following the pong (period = interval + RTT); allow 15%.
    if (Math.abs(pingRate - expectedRate) > 0.15 * expectedRate) problems.push(`round ${round + 1} ${system}: ${pingRate.toFixed(3)} pings/conn/s, expected ≈ ${expectedRate}`);
  } finally {
    await Promise.all(holders.map((h) => h.stop()));
    await server.stop();
  }
}

const ratios = rec.ratiosVsRaw(SYSTEMS, ['server CPU, % of one core', 'server CPU per ping']);
if (SYSTEMS.includes('supervisor')) {
  notes.push(`target ws-supervisor server CPU < ${TARGET_PCT}% of one core: ${targetMisses.length ? `MISSED (${targetMisses.join('; ')})` : 'met in every round'}`);
}
notes.push(`${N} idle connections in ${HOLDERS} client processes pinned to CPU 1; ping ${PING} ms, pong timeout ${PONG} ms (raw ws: none, next tick); server pinned to CPU 0`);
notes.push(`total run time ${((performance.now() - t00) / 1000).toFixed(0)} s`);
const integrity = {
  ok: problems.length === 0,
  details: problems.length
    ? problems.join('; ')
    : `every run: all ${N} connections held to the end on both sides, 0 closed; every connection answered ≈ ${1000 / PING} ping/s`,
};
const rows = rec.toRows();
const checks = [
  checkRows(rows, 'supervisor', 'server CPU, % of one core', `< ${TARGET_PCT}% of one core (10k idle, 1 s ping)`, (v) => v < TARGET_PCT),
].filter((c): c is Check => c !== null);
const result = {
  rounds: ROUNDS,
  rows,
  checks,
  ratios,
  integrity,
  notes,
  params: { quick, connections: N, seconds: SECONDS, pingInterval: PING, pongTimeout: PONG, holders: HOLDERS, systems: SYSTEMS },
};
printResult(result);
console.log(`wrote ${writeResult(quick ? 'heartbeat-quick' : 'heartbeat', result)}`);
