/**
 * Scenario 8, capacity: 50,000 concurrent idle connections on one 2-core
 * machine, heartbeat on at its default interval, and every connection
 * answering a request at the end.
 *
 *   node --import tsx bench/scenarios/capacity.ts [--quick] [--rounds N] [--systems supervisor,raw,socketio]
 *        [--steps 10000,20000,30000,40000,50000] [--workers 4] [--window MS] [--ping MS]
 *
 * The file-descriptor cap here is 20,000 per process (`ulimit -n`, hard limit
 * too), so neither side fits in one process:
 *   - servers: ws-supervisor as users scale it, `ws-supervisor server --workers N`
 *     (src/cli/cluster.ts, node:cluster round-robin: the primary accepts and
 *     hands each socket to a worker); raw `ws` and Socket.IO as N node:cluster
 *     workers of the same bench servers (bench/lib/cluster-server.ts; WebSocket
 *     transport only, so Socket.IO needs no sticky sessions). N = 4 by default:
 *     12.5k sockets per worker at 50k.
 *   - load: one client process per step (bench/lib/idle-clients.ts), each holding
 *     that step's new connections from its own loopback source address
 *     (127.0.0.11, .12, …): one source address has ~28k ephemeral ports.
 * Nothing is pinned (the workers need both cores), so the load generator and
 * the servers share the cores, and the other work on the machine too: the
 * load average is recorded at every step.
 *
 * At each step (10k, 20k, … cumulative), after the new connections are open:
 *   - connect rate: the step's new connections / the time from their first
 *     handshake to the last open (measured in the client process);
 *   - RSS per connection: (RSS of every server process − the same before any
 *     connection) / connections, and the marginal RSS of the step's connections
 *     (no forced GC: the CLI's workers are measured as users run them);
 *   - heartbeat CPU: server CPU (all processes) over one ping interval of idle
 *     time (default 25 s, each connection pinged about once), as % of one core,
 *     and per ping received by the clients in that window.
 * Then every connection sends one request and must get the reply with its own
 * requestID. A system that cannot hold a step (a refused upgrade, a worker
 * dying, a connect timeout) stops there; the result says where and why.
 *
 * Integrity: every connection of every completed step opened, none closed while
 * idle, and each got its own reply at the end (for ws-supervisor; a reference
 * server that cannot is reported with where it stopped, as its limit). No reply
 * may carry another connection's requestID, whoever the server.
 *
 * --quick: 2 steps of 500, 2 workers, a 1 s ping interval and a 2 s window,
 * ws-supervisor and raw `ws`, 1 round (25 s at a load average of 11 here, 46 s at 13: two CLI
 * clusters and four client processes start). It is not part of the bench smoke
 * test (test/bench.smoke.test.ts), which stays on reqres.
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import {
  alternatingRounds,
  commonArgs,
  finishScenario,
  procStats,
  Recorder,
  scenarioArgs,
  sleep,
  type Check,
  type System,
} from '../lib/harness.ts';
import { startCli } from '../lib/cli-server.ts';
import { startClusterServer } from '../lib/cluster-reference.ts';
import { startHolder, type ClientHolder } from '../lib/lifecycle.ts';
import { DEFAULTS } from '../../src/server/options.ts';

const common = scenarioArgs(['supervisor', 'raw']);
const { values } = parseArgs({
  args: common.rest,
  options: { steps: { type: 'string' }, workers: { type: 'string' }, window: { type: 'string' }, ping: { type: 'string' } },
});
const QUICK = common.quick;
const STEPS = (values.steps ?? (QUICK ? '500,1000' : '10000,20000,30000,40000,50000')).split(',').map(Number);
const WORKERS = Number(values.workers ?? (QUICK ? 2 : 4));
/** The heartbeat: ws-supervisor's default unless --ping (quick: 1 s, to see pings in a short window). */
const PING_MS = Number(values.ping ?? (QUICK ? 1_000 : DEFAULTS.pingInterval));
const PONG_MS = DEFAULTS.pongTimeout;
const WINDOW_MS = Number(values.window ?? (QUICK ? 2_000 : PING_MS));
// One round unless --rounds: a full round holds 50k sockets per system for ~3–4 minutes.
const ROUNDS = commonArgs().rounds ?? 1;
const SYSTEMS: System[] = common.systems;
const SETTLE_MS = QUICK ? 300 : 2_000;
const KiB = 1024;
const label = (n: number): string => (n % 1000 === 0 ? `${n / 1000}k` : String(n));
const sourceAddress = (step: number): string => `127.0.0.${11 + step}`;
/**
 * Handshakes each client process keeps in flight. The CLI gives a request head
 * 10 s (its headersTimeout, a slowloris bound) and answers 408 after that; with
 * 250 in flight at a load average of 17 on 2 cores, handshakes queued behind
 * each other past it (measured: 7,750 of 10,000 open, then a 408). 50 keeps the
 * server busy without queueing that deep.
 */
const HANDSHAKES_IN_FLIGHT = 50;

for (const [i, n] of STEPS.entries()) {
  if (!Number.isInteger(n) || n <= (STEPS[i - 1] ?? 0)) throw new Error(`--steps must be increasing positive integers, got ${STEPS.join(',')}`);
  const perWorker = n / WORKERS;
  if (perWorker > 19_000) throw new Error(`--steps ${n} over --workers ${WORKERS} is ${perWorker} sockets per worker: over the 20,000 file-descriptor cap`);
}

interface Running {
  url: string;
  pids(): number[];
  stop(): Promise<void>;
}

async function startServerFor(system: System): Promise<Running> {
  if (system === 'supervisor') {
    // The default interval is what the CLI uses without the flag; pass it only when asked for another.
    const args = PING_MS === DEFAULTS.pingInterval ? [] : ['--ping-interval', String(PING_MS)];
    return startCli({ workers: WORKERS, args, label: `ws-supervisor --workers ${WORKERS}` });
  }
  return startClusterServer(system, WORKERS, { pingInterval: PING_MS, pongTimeout: PONG_MS });
}

const sum = (pids: number[], f: (s: { cpuUs: number; rss: number }) => number): number => pids.reduce((a, pid) => a + f(procStats(pid)), 0);

async function runOnce(system: System, rec: Recorder, notes: string[]): Promise<{ problems: string[]; reached: number; answered: number }> {
  const problems: string[] = [];
  const server = await startServerFor(system);
  const holders: ClientHolder[] = [];
  let reached = 0;
  let answered = 0;
  try {
    await sleep(SETTLE_MS);
    const pids = server.pids();
    if (pids.length !== WORKERS + 1) throw new Error(`${system}: expected ${WORKERS + 1} server processes (primary + workers), found ${pids.length}`);
    const baseRss = sum(pids, (s) => s.rss);
    let prevRss = baseRss;
    let prevN = 0;
    const line: string[] = [];
    for (const [step, n] of STEPS.entries()) {
      const at = `@${label(n)}`;
      let holder: ClientHolder;
      try {
        holder = await startHolder(system, server.url, n - prevN, { cpu: null, localAddress: sourceAddress(step), batch: HANDSHAKES_IN_FLIGHT });
      } catch (err) {
        const message = (err as Error).message;
        const why = (/failed: .*/.exec(message)?.[0] ?? message.split('\n')[0]!).slice(0, 300);
        notes.push(`${system} stopped at step ${label(n)} (held ${label(prevN)}): ${why}`);
        console.log(`${system.padEnd(10)} stopped at ${label(n)}: ${why}`);
        if (system === 'supervisor') problems.push(`${system}: could not open step ${label(n)}: ${why}`);
        break;
      }
      holders.push(holder);
      rec.add(system, `connect rate ${at}`, 'conn/s', holder.opened / (holder.connectMs / 1000));
      await sleep(SETTLE_MS);
      const rss = sum(pids, (s) => s.rss);
      rec.add(system, `RSS per connection ${at}`, 'KiB', (rss - baseRss) / n / KiB);
      rec.add(system, `RSS marginal per connection ${at}`, 'KiB', (rss - prevRss) / (n - prevN) / KiB);
      rec.add(system, `server RSS ${at}`, 'MB', rss / 1e6);

      // Heartbeat: one window of idle time (each connection pinged about once per interval).
      const c0 = await Promise.all(holders.map((h) => h.counts()));
      const cpu0 = sum(pids, (s) => s.cpuUs);
      const load0 = sum(holders.map((h) => h.pid), (s) => s.cpuUs);
      const t0 = performance.now();
      await sleep(WINDOW_MS);
      const cpu1 = sum(pids, (s) => s.cpuUs);
      const load1 = sum(holders.map((h) => h.pid), (s) => s.cpuUs);
      const seconds = (performance.now() - t0) / 1000;
      const c1 = await Promise.all(holders.map((h) => h.counts()));
      const pings = c1.reduce((a, c, i) => a + c.pings - c0[i]!.pings, 0);
      const closed = c1.reduce((a, c) => a + c.closed, 0);
      const open = c1.reduce((a, c) => a + c.open, 0);
      const cpuPct = ((cpu1 - cpu0) / 1e6 / seconds) * 100;
      rec.add(system, `heartbeat CPU ${at}`, '% of a core', cpuPct);
      rec.add(system, `server CPU per ping ${at}`, 'µs', pings > 0 ? (cpu1 - cpu0) / pings : NaN);
      rec.add(system, `pings per second ${at}`, '/s', pings / seconds);
      rec.add(system, `load generator CPU ${at}`, '% of a core', ((load1 - load0) / 1e6 / seconds) * 100);
      rec.add(system, `load average (1 min) ${at}`, '', os.loadavg()[0]!);
      if (open !== n) problems.push(`${system} ${at}: ${open} connections open, expected ${n}`);
      if (closed > 0) problems.push(`${system} ${at}: ${closed} connections closed while idle`);
      // Over a whole interval, expect about one ping per connection; far fewer means the heartbeat is not
      // running. (A shorter window sees the pings of whichever connections happen to fall due in it.)
      const expected = (n * seconds * 1000) / PING_MS;
      if (WINDOW_MS >= PING_MS && pings < expected * 0.5) problems.push(`${system} ${at}: ${pings} pings in ${seconds.toFixed(1)} s, expected about ${Math.round(expected)}`);
      line.push(`${label(n)}: ${(holder.opened / (holder.connectMs / 1000)).toFixed(0)} conn/s, ${((rss - baseRss) / n / KiB).toFixed(1)} KiB/conn, heartbeat ${cpuPct.toFixed(1)}% (${pings} pings), load ${os.loadavg()[0]!.toFixed(1)}`);
      console.log(`${system.padEnd(10)} ${line[line.length - 1]}`);
      prevRss = rss;
      prevN = n;
      reached = n;
    }

    // Every connection answers: one request each, its own reply.
    if (holders.length > 0) {
      const t0 = performance.now();
      const outcomes = await Promise.all(holders.map((h) => h.request()));
      const ms = performance.now() - t0;
      answered = outcomes.reduce((a, o) => a + o.ok, 0);
      const wrong = outcomes.reduce((a, o) => a + o.wrong, 0);
      const missing = outcomes.reduce((a, o) => a + o.missing, 0);
      rec.add(system, `requests answered @${label(reached)}`, 'conn', answered);
      rec.add(system, `time until all answered @${label(reached)}`, 'ms', ms);
      // A wrong reply is a broken measurement whoever sent it; a missing one is ws-supervisor's failure,
      // and for a reference server the limit it reached (reported, as for a step it could not open).
      if (wrong) problems.push(`${system} @${label(reached)}: ${wrong} wrong replies`);
      if (missing && system === 'supervisor') problems.push(`${system} @${label(reached)}: ${missing} connections got no reply`);
      else if (missing) notes.push(`${system} @${label(reached)}: ${missing} of ${reached} connections got no reply within 60 s`);
      console.log(`${system.padEnd(10)} ${answered} of ${reached} connections answered their request in ${ms.toFixed(0)} ms`);
    }
  } finally {
    await Promise.all(holders.map((h) => h.stop()));
    await server.stop();
  }
  return { problems, reached, answered };
}

// Interrupted: exit through process.exit so the servers' exit hooks kill them (the client processes go when stdin closes).
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));

const started = Date.now();
const rec = new Recorder();
const problems: string[] = [];
const notes: string[] = [];
const reached = new Map<System, number[]>();
for (const { system } of alternatingRounds(ROUNDS, SYSTEMS, true)) {
  const r = await runOnce(system, rec, notes);
  problems.push(...r.problems);
  reached.set(system, [...(reached.get(system) ?? []), r.answered]);
  // Let the sockets' TIME_WAIT and the kernel's memory settle before the next system.
  await sleep(QUICK ? 200 : 3_000);
}

const last = STEPS[STEPS.length - 1]!;
const at = `@${label(last)}`;
const ratios = rec.ratiosVsRaw(SYSTEMS, [`RSS per connection ${at}`, `heartbeat CPU ${at}`, `server CPU per ping ${at}`, `connect rate ${at}`]);
const checks: Check[] = [];
if (SYSTEMS.includes('supervisor')) {
  const answered = reached.get('supervisor') ?? [0];
  checks.push({
    metric: `connections held with the heartbeat on, each answering a request`,
    system: 'supervisor',
    value: Math.min(...answered),
    unit: 'conn',
    target: `>= ${last}`,
    met: answered.every((a) => a >= last),
  });
}
const rows = rec.toRows();
const growth = (system: System, metric: string): string | null => {
  const first = rows.find((r) => r.system === system && r.metric === `${metric} @${label(STEPS[0]!)}`);
  const end = rows.find((r) => r.system === system && r.metric === `${metric} ${at}`);
  return first && end ? `${(end.median / first.median).toFixed(2)}×` : null;
};
for (const system of SYSTEMS) {
  const g = ['RSS per connection', 'heartbeat CPU', 'server CPU per ping', 'connect rate'].map((m) => [m, growth(system, m)] as const).filter(([, v]) => v !== null);
  if (g.length > 0) notes.push(`${system}, ${label(STEPS[0]!)} → ${label(last)}: ${g.map(([m, v]) => `${m} ${v}`).join(', ')}`);
}
notes.push(
  `servers: ws-supervisor is \`ws-supervisor server --workers ${WORKERS}\` (the CLI, node:cluster); raw ws and Socket.IO are ${WORKERS} node:cluster workers of the bench servers; RSS and CPU sum the primary and every worker, read from /proc without a forced GC`,
  `heartbeat: ping interval ${PING_MS} ms (${PING_MS === DEFAULTS.pingInterval ? "ws-supervisor's default" : 'not the default'}), pong timeout ${PONG_MS} ms, measured over ${WINDOW_MS} ms of idle time at each step; server CPU per ping = server CPU in the window / pings the clients received in it (the idle servers' own background work included)`,
  `load: nothing pinned; one client process per step (a source address each, 127.0.0.11…) shares the 2 cores with the servers and with whatever else runs on the machine (the load average is in the rows)`,
);
const result = {
  rounds: ROUNDS,
  rows,
  ratios,
  checks,
  integrity: {
    ok: problems.length === 0,
    details:
      problems.length === 0
        ? `every connection of every completed step opened and stayed open while idle, and each answered its own request at the end (${SYSTEMS.map((s) => `${s}: ${(reached.get(s) ?? []).join(', ')}`).join('; ')})`
        : problems.join('; '),
  },
  notes,
  params: {
    steps: STEPS,
    workers: WORKERS,
    pingIntervalMs: PING_MS,
    windowMs: WINDOW_MS,
    quick: QUICK,
    systems: SYSTEMS,
    durationSeconds: (Date.now() - started) / 1000,
  },
};
finishScenario('capacity', QUICK, started, result);
process.exit(process.exitCode ?? 0);
