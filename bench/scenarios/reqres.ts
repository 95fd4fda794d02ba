/**
 * Scenario 1 — request/response. N connections (default 1,000), one request in
 * flight on each; every system answers the same JSON protocol.
 *
 *   node --import tsx bench/scenarios/reqres.ts [--quick] [--rounds 3] [--systems supervisor,raw,socketio]
 *        [--connections 1000] [--seconds 5]
 *
 * Metrics per system and round (server pinned to CPU 0, this load generator to CPU 1):
 *   throughput (replies/s), p50/p99 latency (per request, measured here, send → reply),
 *   server CPU per message (µs, from the server's process.cpuUsage over the window),
 *   load-generator CPU per message and its share of its core.
 * Integrity: every reply's requestID equals the request in flight on that
 * connection; no reply without a request (duplication); after the window every
 * request is answered (no loss); no error replies.
 *
 * --quick: 50 connections, 2 s, 1 round, supervisor + raw (the smoke test's run).
 */
import { parseArgs } from 'node:util';
import {
  alternatingRounds,
  closeAll,
  connectMany,
  finishScenario,
  percentile,
  pinSelf,
  Recorder,
  scenarioArgs,
  selfCpuUs,
  sleep,
  startServer,
  waitForConnections,
  type System,
} from '../lib/harness.ts';

const common = scenarioArgs(['supervisor', 'raw']);
const { values } = parseArgs({
  args: common.rest,
  options: { connections: { type: 'string' }, seconds: { type: 'string' }, warmup: { type: 'string' } },
});
const QUICK = common.quick;
const CONNECTIONS = Number(values.connections ?? (QUICK ? 50 : 1000));
const SECONDS = Number(values.seconds ?? (QUICK ? 2 : 5));
const WARMUP = Number(values.warmup ?? (QUICK ? 0.5 : 1));
const ROUNDS = common.rounds;
const SYSTEMS: System[] = common.systems;

pinSelf(1);

interface Integrity {
  mismatched: number;
  duplicates: number;
  lost: number;
  errors: number;
  sent: number;
  answered: number;
}

const REPLY_ID = /^\{"requestID":(-?\d+),"success":(true|false)/;

async function runOnce(system: System, rec: Recorder, notes: string[]): Promise<Integrity> {
  const server = await startServer(system);
  const integrity: Integrity = { mismatched: 0, duplicates: 0, lost: 0, errors: 0, sent: 0, answered: 0 };
  try {
    const clients = await connectMany(server, CONNECTIONS);
    await waitForConnections(server, CONNECTIONS);
    let running = true;
    let measuring = false;
    let replies = 0;
    const latencies: number[] = [];
    const outstanding = new Array<number>(CONNECTIONS).fill(0); // requestID in flight, 0 = none
    const sentAt = new Float64Array(CONNECTIONS);
    clients.forEach((client, i) => {
      let id = 0;
      const sendNext = (): void => {
        if (!running) return;
        outstanding[i] = ++id;
        integrity.sent++;
        sentAt[i] = performance.now();
        client.send(`{"requestID":${id},"command":"bench ${i}","someOtherThing":"x"}`);
      };
      client.onMessage((text) => {
        const now = performance.now();
        const m = REPLY_ID.exec(text);
        const got = m ? Number(m[1]) : NaN;
        if (m?.[2] !== 'true') integrity.errors++;
        if (outstanding[i] === 0) integrity.duplicates++;
        else if (got !== outstanding[i]) integrity.mismatched++;
        else {
          integrity.answered++;
          outstanding[i] = 0;
          if (measuring) {
            replies++;
            latencies.push(now - sentAt[i]!);
          }
          sendNext();
        }
      });
      sendNext();
    });
    await sleep(WARMUP * 1000);
    const s0 = await server.stats();
    const l0 = selfCpuUs();
    const t0 = performance.now();
    measuring = true;
    await sleep(SECONDS * 1000);
    measuring = false;
    const s1 = await server.stats();
    const l1 = selfCpuUs();
    const wall = (performance.now() - t0) / 1000;
    running = false;
    // Let the requests in flight come back, then count what never did.
    const deadline = Date.now() + 5000;
    while (outstanding.some((x) => x !== 0) && Date.now() < deadline) await sleep(20);
    await sleep(50); // a late duplicate would arrive now
    integrity.lost = outstanding.filter((x) => x !== 0).length;

    const serverCpu = s1.cpuUs - s0.cpuUs;
    const loadCpu = l1 - l0;
    const loadShare = loadCpu / 1e6 / wall;
    rec.add(system, 'throughput', 'msg/s', replies / wall);
    rec.add(system, 'latency p50', 'ms', percentile(latencies, 50));
    rec.add(system, 'latency p99', 'ms', percentile(latencies, 99));
    rec.add(system, 'server CPU per message', 'µs', serverCpu / replies);
    rec.add(system, 'server core share', '%', (100 * serverCpu) / 1e6 / wall);
    rec.add(system, 'load-generator CPU per message', 'µs', loadCpu / replies);
    rec.add(system, 'load-generator core share', '%', 100 * loadShare);
    if (loadShare > 0.9) {
      const note = `${system}: the load generator used ${(100 * loadShare).toFixed(0)}% of its core: throughput and latency are bounded by the client${system === 'socketio' ? ' (socket.io-client costs more per message than a ws client)' : ''}; server CPU per message is the comparable figure`;
      if (!notes.includes(note.replace(/\d+%/, ''))) notes.push(note);
    }
    console.log(
      `${system.padEnd(10)} ${(replies / wall).toFixed(0).padStart(7)} msg/s  p50 ${percentile(latencies, 50).toFixed(2)} ms  p99 ${percentile(latencies, 99).toFixed(2)} ms  server ${(serverCpu / replies).toFixed(2)} µs/msg  load core ${(100 * loadShare).toFixed(0)}%`,
    );
    await closeAll(clients);
    return integrity;
  } finally {
    await server.stop();
  }
}

const started = Date.now();
const rec = new Recorder();
const notes: string[] = [];
const problems: string[] = [];
let totalAnswered = 0;
for (const { round, system } of alternatingRounds(ROUNDS, SYSTEMS, true)) {
  const i = await runOnce(system, rec, notes);
  totalAnswered += i.answered;
  const bad = (['mismatched', 'duplicates', 'lost', 'errors'] as const).filter((k) => i[k] > 0).map((k) => `${k} ${i[k]}`);
  if (bad.length > 0) problems.push(`${system} round ${round + 1}: ${bad.join(', ')} (of ${i.sent} sent)`);
  if (i.answered === 0) problems.push(`${system} round ${round + 1}: no replies at all`);
}

// The targets are ws-supervisor's; Socket.IO is shown for comparison.
const ratios = rec.ratiosVsRaw(SYSTEMS, [
  ['server CPU per message', '<= 1.05'],
  ['throughput', '>= 0.95'],
  ['latency p99', '<= 1.1'],
  'latency p50',
  'load-generator CPU per message',
]);
const result = {
  rounds: ROUNDS,
  rows: rec.toRows(),
  ratios,
  integrity: {
    ok: problems.length === 0,
    details:
      problems.length === 0
        ? `${totalAnswered} requests over ${ROUNDS} round(s) × ${SYSTEMS.length} systems: every reply matched its request's requestID, none lost, none duplicated, no error replies`
        : problems.join('; '),
  },
  notes,
  params: { connections: CONNECTIONS, seconds: SECONDS, warmup: WARMUP, quick: QUICK, systems: SYSTEMS, durationSeconds: (Date.now() - started) / 1000 },
};
finishScenario('reqres', QUICK, started, result);
