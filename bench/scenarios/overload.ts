/**
 * Scenario `overload`: one abuse at a time against a fresh server,
 * from ≤ 50 connections (the broadcast storm `broadcast` excepted: its abusers
 * are its 1,000 ordinary clients, all sending at once; `broadcast50` sends the
 * same broadcasts to the same clients from 50 of them), while a separate prober connects and round-trips
 * one request every 250 ms (a fresh connection each time: upgrade + request +
 * reply). Reported per abuse and system: the prober's p99 and max (connect +
 * round trip), probes that failed or timed out (5 s), the server's RSS growth,
 * and what happened to the abusers.
 *
 *   node --import tsx bench/scenarios/overload.ts [--quick] [--rounds 1] [--systems supervisor,raw,socketio]
 *        [--abuses pipeline1,pipeline50,deep,broadcast,broadcast50,pingflood,nofin] [--seconds 10]
 *
 * The abusers run in their own process (bench/lib/overload-peers.mjs, raw
 * frames on /server; for Socket.IO engine.io packets on /socket.io/, the same
 * texts as the event `message`), pinned with the prober to CPU 1; the server
 * on CPU 0. The load generator's own CPU is reported (the abusers' process
 * and this one, the prober's, both on CPU 1): a saturated load core delays
 * the prober by itself. All three systems answer through the
 * same codec (src/protocol/codec.ts), so its bounded parse protects raw `ws`
 * and Socket.IO from the deep-JSON abuse too.
 *
 * Target: prober p99 ≤ 100 ms in every abuse (ws-supervisor).
 * --quick: 3 s per abuse, 300 broadcast clients, supervisor + raw (default: all three systems).
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  alternatingRounds,
  connectClient,
  finishScenario,
  percentile,
  pinned,
  procStats,
  selfCpuUs,
  pinSelf,
  Recorder,
  scenarioArgs,
  sleep,
  startServer,
  type Check,
  type ServerHandle,
  type System,
} from '../lib/harness.ts';

const common = scenarioArgs(['supervisor', 'raw']);
const { values } = parseArgs({ args: common.rest, options: { abuses: { type: 'string' }, seconds: { type: 'string' } } });
const QUICK = common.quick;
const SECONDS = Number(values.seconds ?? (QUICK ? 3 : 10));
const BROADCAST_CLIENTS = QUICK ? 300 : 1000;
const ALL = ['pipeline1', 'pipeline50', 'deep', 'broadcast', 'broadcast50', 'pingflood', 'nofin'] as const;
type Abuse = (typeof ALL)[number];
const ABUSES = (values.abuses?.split(',') ?? [...ALL]) as Abuse[];
for (const a of ABUSES) if (!ALL.includes(a)) throw new Error(`unknown abuse ${a} (${ALL.join(' | ')})`);
const SYSTEMS: System[] = common.systems;
const PROBE_EVERY_MS = 250;
const PROBE_TIMEOUT_MS = 5_000;
const PEERS = fileURLToPath(new URL('../lib/overload-peers.mjs', import.meta.url));

const SPECS: Record<Abuse, { what: string; spec: Record<string, unknown> }> = {
  pipeline1: { what: '1 connection pipelining requests as fast as it can', spec: { kind: 'pipeline', peers: 1, durationMs: SECONDS * 1000 } },
  pipeline50: { what: '50 connections pipelining as fast as they can (≤ 2k unanswered each)', spec: { kind: 'pipeline', peers: 50, durationMs: SECONDS * 1000, window: 2000 } },
  deep: { what: '4 connections streaming 500k-deep [[[…]]] (< 1 MiB), the next when the last is answered', spec: { kind: 'deeploop', peers: 4, durationMs: SECONDS * 1000 } },
  broadcast: { what: `${BROADCAST_CLIENTS} clients × 2 broadcast requests at once`, spec: { kind: 'broadcast', peers: BROADCAST_CLIENTS, timeoutMs: 120_000 } },
  // The same 2 × clients broadcasts to the same clients, sent by 50 of them (the target's "from ≤ 50 connections").
  broadcast50: {
    what: `50 of ${BROADCAST_CLIENTS} clients × ${(2 * BROADCAST_CLIENTS) / 50} broadcast requests at once (the same broadcasts from 50 abusers)`,
    spec: { kind: 'broadcast', peers: BROADCAST_CLIENTS, senders: 50, each: (2 * BROADCAST_CLIENTS) / 50, timeoutMs: 120_000 },
  },
  pingflood: { what: '10 connections sending ping frames as fast as they can', spec: { kind: 'pingflood', peers: 10, durationMs: SECONDS * 1000 } },
  nofin: { what: '50 connections: close frame, read the echo, never close TCP', spec: { kind: 'nofin', peers: 50, durationMs: SECONDS * 1000 } },
};

pinSelf(1);

interface PeerReport {
  count: number;
  closeCode: number | null;
  closeReason: string;
  ended: boolean;
  sent?: number | null;
  inOrder?: boolean;
  pushes?: number;
  orderErrors?: number;
}

/** One probe: a fresh connection, one request, its reply. ms; PROBE_TIMEOUT_MS when not answered by then, or on failure (JSON has no Infinity). */
interface Probe {
  ms: number;
  /** Of ms, until the upgrade completed (the rest is the request's round trip); null when it never did. */
  connectMs: number | null;
  /** When it started (performance.now()). */
  at: number;
}
async function probe(server: ServerHandle): Promise<Probe> {
  const t0 = performance.now();
  let connectMs: number | null = null;
  let client: Awaited<ReturnType<typeof connectClient>> | null = null;
  try {
    const ms = await Promise.race([
      (async () => {
        client = await connectClient(server);
        connectMs = performance.now() - t0;
        const reply = new Promise<void>((resolve) => client!.onMessage(() => resolve()));
        client.send('{"requestID":7,"command":"probe"}');
        await reply;
        return performance.now() - t0;
      })(),
      sleep(PROBE_TIMEOUT_MS).then(() => PROBE_TIMEOUT_MS),
    ]);
    return { ms, connectMs, at: t0 };
  } catch {
    return { ms: PROBE_TIMEOUT_MS, connectMs, at: t0 };
  } finally {
    (client as { terminate(): void } | null)?.terminate();
  }
}

/** What happened to the abusers, in a few words. */
function fate(abuse: Abuse, peers: PeerReport[], connectionsAfter: number): string {
  const closes = new Map<string, number>();
  for (const p of peers) {
    const key = p.closeCode !== null ? `${p.closeCode} ${p.closeReason}`.trim() : p.ended ? 'dropped (no close frame)' : 'open';
    closes.set(key, (closes.get(key) ?? 0) + 1);
  }
  const parts = [...closes].map(([k, n]) => `${n}× ${k}`);
  if (abuse === 'pipeline1' || abuse === 'pipeline50') {
    const answered = peers.reduce((n, p) => n + p.count, 0);
    parts.push(`${answered} requests answered${peers.every((p) => p.inOrder !== false) ? ', in order' : ', OUT OF ORDER'}`);
  } else if (SPECS[abuse].spec.kind === 'broadcast') {
    const pushes = peers.reduce((n, p) => n + (p.pushes ?? 0), 0);
    const spec = SPECS[abuse].spec as { senders?: number; each?: number };
    const sent = (spec.senders ?? peers.length) * (spec.each ?? 2);
    parts.push(`${pushes} of ${peers.length * sent} pushes delivered, ${peers.reduce((n, p) => n + (p.orderErrors ?? 0), 0)} out of order`);
  } else if (abuse === 'deep') {
    parts.push(`${peers.reduce((n, p) => n + p.count, 0)} deep messages answered`);
  } else if (abuse === 'pingflood') {
    parts.push(`${peers.reduce((n, p) => n + (p.sent ?? 0), 0)} pings sent`);
  } else if (abuse === 'nofin') {
    parts.push(`${connectionsAfter} of ${peers.length} still counted by the server after ${SECONDS} s`);
  }
  return parts.join('; ');
}

async function runOnce(system: System, abuse: Abuse, rec: Recorder, fates: string[]): Promise<string[]> {
  const problems: string[] = [];
  const server = await startServer(system, { env: { BENCH_STALLS: '1' } });
  try {
    await sleep(200);
    const before = await server.gc();
    const spec = { port: server.port, ...SPECS[abuse].spec, ...(system === 'socketio' ? { proto: 'eio' } : {}) };
    const cmd = pinned(1, [process.execPath, PEERS, JSON.stringify(spec)]);
    const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['pipe', 'pipe', 'inherit'] });
    const lines = createInterface({ input: child.stdout });
    const next = (): Promise<string> =>
      new Promise((resolve, reject) => {
        lines.once('line', resolve);
        child.once('exit', (code) => reject(new Error(`overload peers exited ${code}`)));
      });
    try {
      if ((await next()) !== 'ready') throw new Error('overload peers: no ready line');
      const result = next();
      let finished = false;
      void result.then(
        () => (finished = true),
        () => (finished = true),
      );
      let peak = before.rss;
      const peersPid = child.pid!;
      const a0 = procStats(peersPid).cpuUs;
      const p0 = selfCpuUs();
      let a1 = a0;
      child.stdin.write('go\n');
      const t0 = performance.now();
      const probes: Promise<Probe>[] = [];
      // The server's longest loop stall and GC pause over the abuse (BENCH_STALLS: each stats line covers the time since the last).
      let loopMaxMs = 0;
      let gcMaxMs = 0;
      let gcMs = 0;
      const stallsOf = (st: Awaited<ReturnType<ServerHandle['stats']>>): void => {
        peak = Math.max(peak, st.rss);
        loopMaxMs = Math.max(loopMaxMs, st.stall?.loopMaxMs ?? 0);
        gcMaxMs = Math.max(gcMaxMs, st.stall?.gcMaxMs ?? 0);
        gcMs += st.stall?.gcMs ?? 0;
      };
      // Probe every 250 ms for the abuse's duration (and until the abusers are done), at least 8 times.
      while (probes.length < 8 || !finished) {
        probes.push(probe(server));
        if (probes.length % 4 === 0) stallsOf(await server.stats());
        await sleep(PROBE_EVERY_MS);
        if (performance.now() - t0 > 180_000) break;
      }
      const done = await Promise.all(probes);
      const times = done.map((p) => p.ms);
      const report = JSON.parse(await result) as { peers: PeerReport[]; ms: number };
      try {
        a1 = procStats(peersPid).cpuUs; // the abusers wait for their kill after the report
      } catch {
        a1 = NaN;
      }
      const wall = (performance.now() - t0) / 1000;
      const abusersShare = (a1 - a0) / 1e6 / wall;
      const proberShare = (selfCpuUs() - p0) / 1e6 / wall;
      const after = await server.stats();
      stallsOf(after);
      const slowest = done.reduce((a, b) => (b.ms > a.ms ? b : a));
      const finite = times.filter((ms) => ms < PROBE_TIMEOUT_MS);
      const failed = times.length - finite.length;
      const p99 = percentile(times, 99);
      rec.add(system, `${abuse}: prober p99`, 'ms', p99);
      rec.add(system, `${abuse}: prober max`, 'ms', Math.max(...times));
      rec.add(system, `${abuse}: probes failed`, 'count', failed);
      rec.add(system, `${abuse}: RSS growth (peak)`, 'MiB', (peak - before.rss) / 1048576);
      rec.add(system, `${abuse}: load generator CPU (abusers)`, '% core', 100 * abusersShare);
      rec.add(system, `${abuse}: load generator CPU (prober)`, '% core', 100 * proberShare);
      // Why the slowest probe was slow: its upgrade or its round trip, against the server's longest stall.
      rec.add(system, `${abuse}: slowest probe's connect`, 'ms', slowest.connectMs ?? PROBE_TIMEOUT_MS);
      rec.add(system, `${abuse}: server's longest loop stall`, 'ms', loopMaxMs);
      rec.add(system, `${abuse}: server's longest GC pause`, 'ms', gcMaxMs);
      rec.add(system, `${abuse}: server GC time`, 'ms', gcMs);
      if (abusersShare + proberShare > 0.9) loadNotes.push(`${system} ${abuse}: the load core (abusers ${(100 * abusersShare).toFixed(0)}% + prober ${(100 * proberShare).toFixed(0)}%) was saturated: part of the prober's delay is its own core's`);
      const f = fate(abuse, report.peers, after.connections);
      fates.push(`${system} ${abuse}: ${f}`);
      console.log(
        `${system.padEnd(10)} ${abuse.padEnd(10)} probes ${times.length}, p50 ${percentile(finite, 50).toFixed(1)} ms, p99 ${p99.toFixed(1)} ms, max ${Math.max(...times).toFixed(1)} ms (probe ${done.indexOf(slowest) + 1}, ${(slowest.at - t0).toFixed(0)} ms into the abuse; connect ${slowest.connectMs?.toFixed(1) ?? '-'}), failed ${failed}; server stall ≤ ${loopMaxMs.toFixed(0)} ms, GC pause ≤ ${gcMaxMs.toFixed(0)} ms (${gcMs.toFixed(0)} ms in all); RSS +${((peak - before.rss) / 1048576).toFixed(1)} MiB; load core: abusers ${(100 * abusersShare).toFixed(0)}%, prober ${(100 * proberShare).toFixed(0)}%; ${f}`,
      );
      if (abuse.startsWith('pipeline') && report.peers.some((p) => p.inOrder === false)) problems.push(`${system} ${abuse}: replies out of order`);
      if (SPECS[abuse].spec.kind === 'broadcast' && report.peers.some((p) => (p.orderErrors ?? 0) > 0)) problems.push(`${system} ${abuse}: pushes out of order`);
    } finally {
      child.kill('SIGKILL');
    }
  } finally {
    await server.stop();
  }
  return problems;
}

const started = Date.now();
const rec = new Recorder();
const problems: string[] = [];
const fates: string[] = [];
const loadNotes: string[] = [];
for (const abuse of ABUSES) {
  console.log(`\n--- ${abuse}: ${SPECS[abuse].what}`);
  for (const { system } of alternatingRounds(common.rounds, SYSTEMS)) problems.push(...(await runOnce(system, abuse, rec, fates)));
}
const rows = rec.toRows();
const checks: Check[] = [];
for (const abuse of ABUSES) {
  const row = rows.find((r) => r.system === 'supervisor' && r.metric === `${abuse}: prober p99`);
  // The target holds in every round, so the value shown beside the verdict is the worst round's (the medians are in the table).
  if (row) checks.push({ metric: `${row.metric}, worst round`, system: 'supervisor', value: Math.max(...row.values), unit: 'ms', target: '<= 100 in every round', met: row.values.every((v) => v <= 100) });
}
const result = {
  rounds: common.rounds,
  rows,
  ratios: rec.ratiosVsRaw(SYSTEMS, ABUSES.map((a) => `${a}: prober p99`)),
  checks,
  integrity: {
    ok: problems.length === 0,
    details: problems.length === 0 ? 'every pipelined reply and every broadcast push in order; no abuser-visible reordering' : problems.join('; '),
  },
  notes: [
    ...ABUSES.map((a) => `${a}: ${SPECS[a].what}`),
    ...fates,
    'prober: a fresh connection every 250 ms, one request, its reply (connect + round trip); a probe not answered within 5 s counts as failed and as 5000 ms in p99 and max',
    'Socket.IO: the abusers speak engine.io (the same texts as the event `message`, pings answered); its prober is socket.io-client',
    "slowest probe's connect: of the slowest probe's time, the part until its upgrade completed; server's longest loop stall / GC pause: over the abuse, from the server's own event-loop delay monitor (10 ms resolution: the excess over it) and GC observer, so a spike reads as the server's loop, its GC, or neither (the kernel, the load core)",
    'load generator CPU: the abusers\' process and this process (the prober), both pinned to CPU 1, as % of a core over the abuse',
    ...loadNotes,
    'all systems answer through the same codec, so its bounded parse (depth ≤ 32) also shields raw ws and Socket.IO from the deep-JSON abuse',
  ],
  params: { quick: QUICK, seconds: SECONDS, abuses: ABUSES, systems: SYSTEMS, broadcastClients: BROADCAST_CLIENTS, durationSeconds: (Date.now() - started) / 1000 },
};
finishScenario('overload', QUICK, started, result);
