/**
 * What one broadcast costs per delivery, on both sides of the wire: the
 * counts behind the broadcast scenario's single-broadcast time, which on
 * this machine is bounded by the load generator (one core at ~100%).
 *
 *   node --import tsx bench/fanout-counts.ts [--systems supervisor,raw] [--receivers 10000]
 *        [--count 30] [--warmup 5] [--pairs 3] [--counts | --interleaved]
 *        [--ping-interval ms] [--json file]
 *
 * Per system (alternating, `--pairs` times): N receivers and one sender
 * (bench/lib/harness.ts, the server pinned to CPU 0, this process to CPU 1),
 * `--warmup` broadcasts, then `--count` single broadcasts with a 50 ms gap,
 * as bench/scenarios/broadcast.ts sends them. Reported per broadcast
 * (medians over the measured ones):
 *   - time until the first / half / last receiver had it (ms);
 *   - the load generator's CPU over the broadcast, per delivery (µs), and
 *     the server's (its own process.cpuUsage, over the broadcast + gap);
 *   - bytes each receiver's socket read per delivery (socket.bytesRead);
 *   - socket 'data' events per delivery (the reads that carried bytes).
 * With --counts, every pass runs under `perf stat` of both processes (the
 * times are then inflated; the counts are what to read): per delivery, the
 * client's read / epoll_pwait / write calls and the server's write / writev /
 * read calls, and the loopback packets each sends and receives in its own
 * context (net:net_dev_xmit, net:netif_rx: data segments, ACKs); the
 * server's epoll_pwait calls (event-loop turns) per broadcast.
 * With --interleaved, both systems' servers run at once and their
 * broadcasts alternate, one of each per round: on a machine shared with
 * other work, the per-round ratios are the figure that holds still (2N
 * client sockets: at most ~9,950 receivers each under a 20,000-file limit).
 * The broadcast scenario (bench/scenarios/broadcast.ts) runs the same
 * interleaved rounds (bench/lib/live-broadcast.ts) for its verdict.
 * --json writes the interleaved rounds' rows to a file. --ping-interval
 * sets the servers' heartbeat (default 25 s, as the scenario runs).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { median, pinSelf, sleep, type System } from './lib/harness.ts';
import { interleave, liveBroadcast, roundRatio, type BroadcastRow, type LiveBroadcast } from './lib/live-broadcast.ts';

const { values } = parseArgs({
  options: {
    systems: { type: 'string', default: 'supervisor,raw' },
    receivers: { type: 'string', default: '10000' },
    count: { type: 'string', default: '30' },
    warmup: { type: 'string', default: '5' },
    pairs: { type: 'string', default: '3' },
    counts: { type: 'boolean', default: false },
    interleaved: { type: 'boolean', default: false },
    'ping-interval': { type: 'string' },
    json: { type: 'string' },
  },
});
const SYSTEMS = values.systems.split(',') as System[];
const N = Number(values.receivers);
const COUNT = Number(values.count);
const WARMUP = Number(values.warmup);
const PAIRS = Number(values.pairs);
/** The servers' heartbeat interval, ms (default: the harness's, 25 s, as the broadcast scenario runs). */
const PING_INTERVAL = values['ping-interval'] !== undefined ? Number(values['ping-interval']) : undefined;
const COUNTS = values.counts;
pinSelf(1);

type Row = BroadcastRow;

/** Counted per process with --counts: system calls, and packets put on (net_dev_xmit) and taken off (netif_rx) loopback in its context. */
const EVENTS = [
  ...['read', 'write', 'writev', 'epoll_pwait'].map((s) => `syscalls:sys_enter_${s}`),
  'net:net_dev_xmit',
  'net:netif_rx',
];

/** `perf stat -x ,` output → syscall → calls. */
function parsePerf(file: string): Map<string, number> {
  const calls = new Map<string, number>();
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^(\d+),[^,]*,(?:syscalls:sys_enter_)?([\w:]+)/.exec(line);
    if (m) calls.set(m[2]!, Number(m[1]));
  }
  return calls;
}

/** A server of `system` with N receivers and a sender, warmed up (bench/lib/live-broadcast.ts). */
const setUp = (system: System): Promise<LiveBroadcast> =>
  liveBroadcast(system, { receivers: N, warmup: WARMUP, ...(PING_INTERVAL !== undefined ? { server: { pingInterval: PING_INTERVAL } } : {}) });

async function measure(system: System, withCounts: boolean): Promise<{ rows: Row[]; counts?: { client: Map<string, number>; server: Map<string, number> } }> {
  const live = await setUp(system);
  const { one } = live;
  try {
    if (!withCounts) {
      const rows: Row[] = [];
      for (let i = 0; i < COUNT; i++) rows.push(await one());
      return { rows };
    }
    const dir = mkdtempSync(join(tmpdir(), 'fanout-counts-'));
    const events = EVENTS.join(',');
    const tracers = [
      spawn('perf', ['stat', '-x', ',', '-e', events, '-o', join(dir, 'client.txt'), '-p', String(process.pid)], { stdio: 'ignore' }),
      spawn('perf', ['stat', '-x', ',', '-e', events, '-o', join(dir, 'server.txt'), '-p', String(live.serverPid)], { stdio: 'ignore' }),
    ];
    await sleep(1000);
    const rows: Row[] = [];
    for (let i = 0; i < COUNT; i++) rows.push(await one());
    for (const t of tracers) {
      const exited = new Promise((r) => t.once('exit', r));
      t.kill('SIGINT');
      await exited;
    }
    return { rows, counts: { client: parsePerf(join(dir, 'client.txt')), server: parsePerf(join(dir, 'server.txt')) } };
  } finally {
    await live.close();
  }
}

/**
 * --interleaved: both systems' servers up at once (N receivers each), and
 * their broadcasts alternate, one of each per round (which goes first
 * alternates too): whatever else loads the machine loads both alike. Per
 * round, the ratio of the first system's figure to the second's.
 */
async function interleaved(): Promise<void> {
  const [a, b] = SYSTEMS as [System, System];
  if (SYSTEMS.length !== 2) throw new Error(`--interleaved compares two systems, got --systems ${values.systems}`);
  const { rows, integrity } = await interleave(a, b, COUNT, { receivers: N, warmup: WARMUP, ...(PING_INTERVAL !== undefined ? { server: { pingInterval: PING_INTERVAL } } : {}) });
  const ra = rows[a]!;
  const rb = rows[b]!;
  if (values.json) writeFileSync(values.json, JSON.stringify({ [a]: ra, [b]: rb }));
  console.log(`${a.padEnd(10)} ${summary(ra)}`);
  console.log(`${b.padEnd(10)} ${summary(rb)}`);
  const ratio = (key: keyof Row): string => {
    const r = roundRatio(ra, rb, key);
    return `${f(r.ratio)} (${a} lower in ${r.lower} of ${r.rounds})`;
  };
  console.log(`${a} ÷ ${b}, median of the per-round ratios: last ${ratio('last')}, half ${ratio('half')}, client CPU per delivery ${ratio('clientUs')}, server CPU per delivery ${ratio('serverUs')}`);
  for (const s of [a, b]) {
    const i = integrity[s]!;
    if (i.timedOut || i.missing || i.duplicated || i.strays || i.badReplies) console.log(`${s} integrity: ${JSON.stringify(i)}`);
  }
}

const f = (x: number, d = 2): string => x.toFixed(d);
const summary = (rows: Row[]): string => {
  const m = (key: keyof Row): number => median(rows.map((r) => r[key]));
  return `first ${f(m('first'), 1)} half ${f(m('half'), 1)} last ${f(m('last'), 1)} ms | client ${f(m('clientUs'))} µs/delivery, server ${f(m('serverUs'))} µs/delivery | ${f(m('bytes'), 1)} B/delivery, ${f(m('dataEvents'), 3)} data events/delivery, pings per delivery: median ${f(m('pings'), 4)} mean ${f(rows.reduce((a, r) => a + r.pings, 0) / rows.length, 4)}`;
};

if (values.interleaved) {
  console.log(`${N} receivers per system, ${COUNT} rounds of one single broadcast per system, interleaved (after ${WARMUP} warm-up each)`);
  await interleaved();
  process.exit(0);
}
console.log(`${N} receivers, ${COUNT} single broadcasts (after ${WARMUP} warm-up), ${PAIRS} pairs; medians per broadcast${COUNTS ? '; counts per delivery under perf stat' : ''}`);
for (let p = 0; p < PAIRS; p++) {
  for (const system of p % 2 === 0 ? SYSTEMS : [...SYSTEMS].reverse()) {
    const { rows, counts } = await measure(system, COUNTS);
    console.log(`pair ${p + 1} ${system.padEnd(10)} ${summary(rows)}`);
    if (counts) {
      const per = (m: Map<string, number>, name: string): string => f((m.get(name) ?? 0) / (COUNT * N), 3);
      const c = counts.client;
      const s = counts.server;
      console.log(
        `    client: read ${per(c, 'read')} epoll_pwait ${per(c, 'epoll_pwait')} write ${per(c, 'write')} packets out ${per(c, 'net:net_dev_xmit')} in ${per(c, 'net:netif_rx')} | ` +
          `server: write ${per(s, 'write')} writev ${per(s, 'writev')} read ${per(s, 'read')} packets out ${per(s, 'net:net_dev_xmit')} in ${per(s, 'net:netif_rx')} epoll_pwait ${f((s.get('epoll_pwait') ?? 0) / COUNT, 1)} per broadcast`,
      );
    }
  }
}
process.exit(0);
