/**
 * Scenario 6, dead-peer detection: how long after a peer freezes does the
 * server close its connection, against the configured bound?
 *
 *   node --import tsx bench/scenarios/detection.ts [--quick] [--rounds N] [--systems supervisor,raw,socketio]
 *                                                  [--ping 500] [--pong 500] [--peers 20] [--controls 10]
 *
 * Every client connects through a TCP proxy (bench/lib/freeze-proxy.ts). A frozen
 * connection stops forwarding in both directions while both sockets stay open, so
 * the server sees a silent peer, not a close. The delay is measured by the proxy,
 * from the freeze to the server giving the connection up as seen on the proxy's
 * upstream socket — its FIN/RST, or a close frame if one comes first (Socket.IO
 * starts a close handshake the frozen peer cannot answer) — one clock, no
 * cross-process timing. Peers are frozen at random moments spread over one bound
 * so every phase of the heartbeat cycle is sampled.
 *
 * Bounds: ws-supervisor and Socket.IO detect within pingInterval + pongTimeout of the
 * last proof of life (target: max ≤ bound + 50 ms); raw `ws`'s standard heartbeat
 * (terminate on the tick after an unanswered ping) within 2 × pingInterval by design.
 * Integrity: every frozen peer detected (and counted as a heartbeat close by the
 * server); no live control client dropped (they answer pings through the same proxy).
 * Full: 3 rounds × 20 frozen peers; --quick: 1 round.
 */
import {
  alternatingRounds,
  checkRows,
  connectClient,
  percentile,
  pinSelf,
  printResult,
  Recorder,
  scenarioArgs,
  sleep,
  writeResult,
  type Check,
  type BenchClient,
  type System,
} from '../lib/harness.ts';
import { startFreezeProxy, type ProxiedConnection } from '../lib/freeze-proxy.ts';
import { startLifecycleServer } from '../lib/lifecycle.ts';

const { quick, rounds: ROUNDS, systems: SYSTEMS, flag } = scenarioArgs();
const PING = flag('ping', 500);
const PONG = flag('pong', 500);
const PEERS = flag('peers', 20);
const CONTROLS = flag('controls', 10);
const SLACK = 50;
pinSelf(1);

/** Detection bound by design, ms. */
const bound = (system: System): number => (system === 'raw' ? 2 * PING : PING + PONG);

interface Pair {
  client: BenchClient;
  proxied: ProxiedConnection;
  clientClosed: boolean;
}

const rec = new Recorder();
const problems: string[] = [];
const notes: string[] = [];
const pooled = new Map<System, number[]>();
const t00 = performance.now();

for (const { round, system } of alternatingRounds(ROUNDS, SYSTEMS)) {
  const server = await startLifecycleServer(system, { pingInterval: PING, pongTimeout: PONG });
  const proxy = await startFreezeProxy(server.port);
  const url = system === 'socketio' ? `http://127.0.0.1:${proxy.port}` : `ws://127.0.0.1:${proxy.port}/server`;
  const pairs: Pair[] = [];
  try {
    // One at a time, so the proxy's accept order pairs each client with its proxied connection.
    for (let i = 0; i < PEERS + CONTROLS; i++) {
      const proxied = proxy.nextConnection();
      const client = await connectClient({ system, url });
      const pair: Pair = { client, proxied: await proxied, clientClosed: false };
      client.onClose(() => (pair.clientClosed = true));
      pairs.push(pair);
    }
    const peers = pairs.slice(0, PEERS);
    const controls = pairs.slice(PEERS);
    // Let the heartbeat run for a while, then freeze each peer at a random moment within one bound.
    await sleep(2 * bound(system));
    const b = bound(system);
    await Promise.all(
      peers.map(async (p) => {
        await sleep(Math.random() * b);
        p.proxied.freeze();
      }),
    );
    const deadline = performance.now() + 5 * b;
    while (performance.now() < deadline && peers.some((p) => p.proxied.serverGaveUpAt === null)) await sleep(10);
    // Controls must survive at least one more full bound after the last detection.
    await sleep(b + 200);

    const delays = peers.filter((p) => p.proxied.serverGaveUpAt !== null).map((p) => p.proxied.serverGaveUpAt! - p.proxied.frozenAt!);
    const byCloseFrame = peers.filter((p) => p.proxied.serverCloseFrameAt !== null && p.proxied.serverCloseFrameAt === p.proxied.serverGaveUpAt).length;
    const tcpStillOpen = peers.filter((p) => p.proxied.serverClosedAt === null).length;
    if (byCloseFrame) {
      notes.push(
        `round ${round + 1} ${system}: ${byCloseFrame} of ${PEERS} frozen peers were given up with a close frame (delay measured to it); ` +
          `${tcpStillOpen} TCP connections still open ${(b + 200) / 1000} s later (closing handshake pending)`,
      );
    }
    const missed = PEERS - delays.length;
    const early = delays.filter((d) => d < 0).length;
    pooled.set(system, [...(pooled.get(system) ?? []), ...delays]);
    const p50 = percentile(delays, 50);
    const p99 = percentile(delays, 99);
    const max = Math.max(...delays);
    const min = Math.min(...delays);
    rec.add(system, 'detection delay p50', 'ms', p50);
    rec.add(system, 'detection delay p99', 'ms', p99);
    rec.add(system, 'detection delay max', 'ms', max);
    rec.add(system, 'detection delay min', 'ms', min);
    rec.add(system, 'max delay / design bound', 'ratio', max / b);

    const s = await server.stats();
    const droppedControls = controls.filter((c) => c.proxied.serverGaveUpAt !== null || c.clientClosed).length;
    const heartbeatCloses = s.closedBy['heartbeat-timeout'] ?? 0;
    console.log(
      `round ${round + 1} ${system.padEnd(10)} bound ${b} ms: p50 ${p50.toFixed(0)} p99 ${p99.toFixed(0)} max ${max.toFixed(0)} min ${min.toFixed(0)} ms; ` +
        `detected ${delays.length}/${PEERS}, server heartbeat closes ${heartbeatCloses}, controls dropped ${droppedControls}/${CONTROLS}, live ${s.connections}`,
    );
    if (missed) problems.push(`round ${round + 1} ${system}: ${missed} of ${PEERS} frozen peers not detected within ${5 * b} ms`);
    if (early) problems.push(`round ${round + 1} ${system}: ${early} closes before the freeze`);
    if (droppedControls) problems.push(`round ${round + 1} ${system}: ${droppedControls} of ${CONTROLS} live control clients dropped`);
    if (heartbeatCloses !== PEERS) problems.push(`round ${round + 1} ${system}: server counted ${heartbeatCloses} heartbeat closes, expected ${PEERS} (${JSON.stringify(s.closedBy)})`);
    if (s.connections !== CONTROLS) problems.push(`round ${round + 1} ${system}: server holds ${s.connections} connections, expected the ${CONTROLS} controls`);
  } finally {
    for (const p of pairs) p.client.terminate();
    await proxy.close();
    await server.stop();
  }
}

const ratios = rec.ratiosVsRaw(SYSTEMS, ['detection delay p50', 'detection delay max']);
for (const system of SYSTEMS) {
  const all = pooled.get(system) ?? [];
  const b = bound(system);
  const max = Math.max(...all);
  const over = all.filter((d) => d > b + SLACK).length;
  const label = system === 'raw' ? `2 × ping ${PING} ms (by design)` : `ping ${PING} + pong ${PONG} ms`;
  notes.push(
    `${system}: ${all.length} detections pooled over ${ROUNDS} round(s): p50 ${percentile(all, 50).toFixed(0)}, p99 ${percentile(all, 99).toFixed(0)}, ` +
      `max ${max.toFixed(0)} ms vs bound ${b} ms (${label}) + ${SLACK} ms: ${over === 0 ? 'met' : `MISSED by ${over} of ${all.length} (max ${(max - b).toFixed(0)} ms over the bound)`}`,
  );
}
notes.push('delay = (server FIN/RST or close frame, whichever first, seen by the proxy) − freeze; freezes are spread uniformly over one bound; load process and proxy pinned to CPU 1, server to CPU 0');
notes.push(`total run time ${((performance.now() - t00) / 1000).toFixed(0)} s`);
const integrity = {
  ok: problems.length === 0,
  details: problems.length
    ? problems.join('; ')
    : `every round: ${PEERS}/${PEERS} frozen peers detected and counted as heartbeat closes by the server; 0 of ${CONTROLS} live controls dropped`,
};
const rows = rec.toRows();
const checks = [
  ...SYSTEMS.map((system) => checkRows(rows, system, 'detection delay max', `≤ ${bound(system)} + ${SLACK} ms`, (v) => v <= bound(system) + SLACK)),
].filter((c): c is Check => c !== null);
const result = {
  rounds: ROUNDS,
  rows,
  checks,
  ratios,
  integrity,
  notes,
  params: { quick, pingInterval: PING, pongTimeout: PONG, peers: PEERS, controls: CONTROLS, slackMs: SLACK, systems: SYSTEMS },
};
printResult(result);
console.log(`wrote ${writeResult(quick ? 'detection-quick' : 'detection', result)}`);
