/**
 * Scenario 3 — broadcast fan-out. N receivers (1k, then 5k) and one sender;
 * the sender sends the protocol's `broadcast` command and the server pushes
 * `{"command":"broadcast","someOtherThing":"b<k>"}` to every client. Measured
 * here: the time from the send until the LAST receiver has the push ("time
 * until all"), over ≥ 10 broadcasts one after another; p50 and p99 of that.
 *
 *   node --import tsx bench/scenarios/broadcast.ts [--quick] [--rounds 3] [--systems …]
 *        [--levels 1000,5000,10000] [--broadcasts 20] [--bursts 10] [--burst 10]
 *
 * Then bursts: 10 broadcasts sent back to back (one turn), the time until
 * every receiver has all ten, and the server's CPU per delivery over the
 * burst (the server's own process.cpuUsage), with the load generator's CPU
 * share beside it: at 1k+ receivers one load core saturates under bursts, so
 * the burst *time* is then client-bound, and CPU per delivery is the
 * comparable figure.
 *
 * Receivers run in this process (pinned to CPU 1), so the figure includes the
 * client side's reading of N frames, the same for every system.
 * Integrity: every receiver got every broadcast exactly once (and the sender
 * its reply to each, with the right requestID).
 *
 * --quick: 200 receivers, 10 broadcasts, 3 bursts, 1 round, supervisor + raw.
 */
import { parseArgs } from 'node:util';
import {
  alternatingRounds,
  closeAll,
  connectClient,
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
  type BenchClient,
  type System,
} from '../lib/harness.ts';
import { BROADCAST_PUSH, timeBroadcasts, timeBursts } from '../lib/broadcast-timing.ts';

const common = scenarioArgs(['supervisor', 'raw']);
const { values } = parseArgs({
  args: common.rest,
  options: { levels: { type: 'string' }, broadcasts: { type: 'string' }, warmup: { type: 'string' }, bursts: { type: 'string' }, burst: { type: 'string' } },
});
const QUICK = common.quick;
const LEVELS = (values.levels ?? (QUICK ? '200' : '1000,5000,10000')).split(',').map(Number);
/** Bursts per level (the first one is warm-up, not measured), each of BURST broadcasts sent back to back. */
const BURSTS = 1 + Number(values.bursts ?? (QUICK ? 3 : 10));
const BURST = Number(values.burst ?? 10);
/**
 * The first broadcasts of a level run code the JIT has not optimized yet (on
 * the first level, code never run before), so the percentiles are over the
 * broadcasts after them; the first one is reported on its own as "cold".
 */
const WARMUP = Number(values.warmup ?? (QUICK ? 1 : 3));
// 100 measured per level: a p99 of 20 samples would be just their maximum.
const BROADCASTS = WARMUP + Number(values.broadcasts ?? (QUICK ? 10 : 100));
const ROUNDS = common.rounds;
const SYSTEMS: System[] = common.systems;
const TIMEOUT_MS = QUICK ? 5_000 : 15_000;
const label = (n: number): string => (n % 1000 === 0 ? `${n / 1000}k` : String(n));
const REPLY = /^\{"requestID":(\d+),"success":true/;

pinSelf(1);

async function runOnce(system: System, rec: Recorder): Promise<string[]> {
  const problems: string[] = [];
  const server = await startServer(system);
  const receivers: BenchClient[] = [];
  let sender: BenchClient | null = null;
  try {
    sender = await connectClient(server);
    // Each broadcast request's reply exactly once (single or in a burst): unknown or repeated ids are wrong.
    const unanswered = new Set<number>();
    let k = 0; // broadcast sequence number, across levels
    let badReplies = 0;
    sender.onMessage((text) => {
      const m = REPLY.exec(text);
      if (m) {
        if (!unanswered.delete(Number(m[1]))) badReplies++;
      } else if (!BROADCAST_PUSH.test(text)) badReplies++;
    });
    const sendBroadcast = (): void => {
      unanswered.add(++k);
      sender!.send(`{"requestID":${k},"command":"broadcast","someOtherThing":"b${k}"}`);
    };
    const line: string[] = [];
    for (const n of LEVELS) {
      const more = await connectMany(server, n - receivers.length, { batch: 250 });
      receivers.push(...more);
      await waitForConnections(server, n + 1, 60_000);
      const { times, missing, duplicated, strays, timedOut } = await timeBroadcasts({
        receivers,
        count: BROADCASTS,
        timeoutMs: TIMEOUT_MS,
        base: k,
        send: sendBroadcast,
      });
      if (timedOut) problems.push(`${system} @${label(n)}: ${timedOut}`);
      if (missing || duplicated || strays) problems.push(`${system} @${label(n)}: ${missing} missing, ${duplicated} duplicated, ${strays} unexpected deliveries`);
      const steady = times.slice(WARMUP);
      rec.add(system, `broadcast to all @${label(n)} p50`, 'ms', percentile(steady, 50));
      rec.add(system, `broadcast to all @${label(n)} p99`, 'ms', percentile(steady, 99));
      rec.add(system, `broadcast to all @${label(n)} first (cold)`, 'ms', times[0]!);
      line.push(`${label(n)}: p50 ${percentile(steady, 50).toFixed(1)} ms p99 ${percentile(steady, 99).toFixed(1)} ms first ${times[0]!.toFixed(1)} ms`);

      const bursts = await timeBursts({
        receivers,
        bursts: BURSTS,
        burst: BURST,
        timeoutMs: TIMEOUT_MS * 2,
        base: k,
        send: sendBroadcast,
        serverCpuUs: async () => (await server.stats()).cpuUs,
        selfCpuUs,
      });
      if (bursts.timedOut) problems.push(`${system} @${label(n)} bursts: ${bursts.timedOut}`);
      if (bursts.missing || bursts.duplicated || bursts.strays) {
        problems.push(`${system} @${label(n)} bursts: ${bursts.missing} missing, ${bursts.duplicated} duplicated, ${bursts.strays} unexpected deliveries`);
      }
      const bt = bursts.times.slice(1);
      const cpu = bursts.cpuPerDelivery.slice(1);
      const share = bursts.loadShare.slice(1);
      rec.add(system, `burst of ${BURST} to all @${label(n)} p50`, 'ms', percentile(bt, 50));
      rec.add(system, `server CPU per delivery, bursts @${label(n)}`, 'µs', percentile(cpu, 50));
      rec.add(system, `load-generator core share, bursts @${label(n)}`, '%', 100 * percentile(share, 50));
      line.push(`burst ${percentile(bt, 50).toFixed(1)} ms ${percentile(cpu, 50).toFixed(2)} µs/delivery (load ${(100 * percentile(share, 50)).toFixed(0)}%)`);
    }
    if (badReplies) problems.push(`${system}: ${badReplies} wrong or unexpected replies to the sender`);
    if (unanswered.size > 0) problems.push(`${system}: ${unanswered.size} broadcast requests never answered`);
    console.log(`${system.padEnd(10)} ${line.join('  |  ')}`);
  } finally {
    await closeAll(sender ? [sender, ...receivers] : receivers);
    await server.stop();
  }
  return problems;
}

const started = Date.now();
const rec = new Recorder();
const problems: string[] = [];
for (const { system } of alternatingRounds(ROUNDS, SYSTEMS, true)) problems.push(...(await runOnce(system, rec)));
const ratios = rec.ratiosVsRaw(
  SYSTEMS,
  LEVELS.flatMap((n) => [
    // Targets: not slower than raw ws, single and burst; under bursts, CPU per delivery at most 0.8× raw's.
    [`broadcast to all @${label(n)} p50`, '<= 1.0'] as const,
    `broadcast to all @${label(n)} p99`,
    `broadcast to all @${label(n)} first (cold)`,
    [`burst of ${BURST} to all @${label(n)} p50`, '<= 1.0'] as const,
    [`server CPU per delivery, bursts @${label(n)}`, '<= 0.8'] as const,
    `load-generator core share, bursts @${label(n)}`,
  ]),
);
const result = {
  rounds: ROUNDS,
  rows: rec.toRows(),
  ratios,
  integrity: {
    ok: problems.length === 0,
    details:
      problems.length === 0
        ? `${BROADCASTS} broadcasts at each level (${WARMUP} of them warm-up) (${LEVELS.join(', ')} receivers): every receiver got every broadcast exactly once; the sender got the right reply to each`
        : problems.join('; '),
  },
  notes: [
    `time from the sender's send until the last receiver has the push; receivers read in the load process (CPU 1)`,
    `p50/p99 over the ${BROADCASTS - WARMUP} broadcasts after ${WARMUP} warm-up ones per level (all are integrity-checked); "first (cold)" is each level's first broadcast, JIT warm-up included`,
    `bursts: ${BURSTS - 1} bursts of ${BURST} broadcasts sent back to back per level (after 1 warm-up burst), medians; server CPU per delivery = the server's CPU over the burst / (${BURST} × receivers); a load-generator core share near 100% means the burst time is bounded by the client, not the server`,
  ],
  params: { levels: LEVELS, broadcasts: BROADCASTS, bursts: BURSTS, burst: BURST, quick: QUICK, systems: SYSTEMS, durationSeconds: (Date.now() - started) / 1000 },
};
finishScenario('broadcast', QUICK, started, result);
