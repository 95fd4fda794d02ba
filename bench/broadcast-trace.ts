/**
 * The sessions scenario's broadcast part, traced broadcast by broadcast (docs/performance.md, "The
 * broadcast tail with sessions on"): the same server and clients as `bench/scenarios/sessions.ts
 * --parts broadcast` (one sender, N receivers, each broadcast alone with 50 ms after it), and for
 * every broadcast what happened inside it, on both sides, on one clock (performance.timeOrigin +
 * now, ms, shared by the two processes of this machine):
 *
 *   server (BENCH_TRACE=1, bench/lib/systems.ts): when its broadcast call began and ended after the
 *     send, the session acks the store was given, its GC pauses (count, ms, the major ones);
 *   load generator: when the first, the median and the last receiver had it, the acks its session
 *     clients sent, its own GC pauses, its CPU over the broadcast ÷ the broadcast's time.
 *
 * Then the slowest broadcasts next to the typical ones, per variant, and the totals per 100
 * broadcasts (robust on a shared machine: counts, not times).
 *
 *   node --import tsx bench/broadcast-trace.ts [--variants off,on] [--receivers 5000] [--broadcasts 300] [--pairs 1]
 *
 * The trace wraps the server's broadcast call and the store's ack (one closure call each): it is a
 * probe, not the scenario; its times are not the scenario's. Written to
 * $BENCH_RESULTS_DIR/broadcast-trace.json (default bench/results/).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { constants, PerformanceObserver } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { closeAll, connectClient, connectMany, percentile, pinSelf, RESULTS_DIR, selfCpuUs, sleep, startServer, waitForConnections, type BenchClient } from './lib/harness.ts';
import { BROADCAST_PUSH } from './lib/broadcast-timing.ts';
import { heapDelta, summarizeHeap, type HeapSummary } from './lib/heap-summary.ts';
import { connectSessionMany, SessionClient } from './lib/session-client.ts';

const { values } = parseArgs({
  options: {
    variants: { type: 'string', default: 'off,on' },
    receivers: { type: 'string', default: '5000' },
    broadcasts: { type: 'string', default: '300' },
    pairs: { type: 'string', default: '1' },
    warmup: { type: 'string', default: '3' },
    'gc-trace': { type: 'boolean', default: false },
    snapshot: { type: 'boolean', default: false },
  },
});
const VARIANTS = values.variants.split(',') as Array<'off' | 'on'>;
const N = Number(values.receivers);
const WARMUP = Number(values.warmup);
const COUNT = WARMUP + Number(values.broadcasts);
const PAIRS = Number(values.pairs);
const GAP_MS = 50; // as timeBroadcasts

pinSelf(1);
const now = (): number => performance.timeOrigin + performance.now();

// The load generator's GC pauses and its session clients' acks, on the shared clock.
const clientGc: Array<[number, number, number]> = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) clientGc.push([performance.timeOrigin + e.startTime, e.duration, ((e as unknown as { detail?: { kind?: number } }).detail?.kind ?? 0)]);
}).observe({ entryTypes: ['gc'] });
const acksSent: number[] = [];
{
  const proto = SessionClient.prototype as unknown as { ack(this: { lastSeq: number; acked: number }): void };
  const ack = proto.ack;
  proto.ack = function (this: { lastSeq: number; acked: number }) {
    if (this.lastSeq !== this.acked) acksSent.push(now());
    ack.call(this);
  };
}

interface Traced {
  k: number;
  ms: number;
  /** Server: its broadcast call's start after the send, and how long the call took. */
  serverStart: number;
  serverCall: number;
  serverAcks: number;
  /** Readers the fair scheduler held deferred when the broadcast call began; readers it deferred during the broadcast. */
  serverWaiting: number;
  serverDefers: number;
  serverGcN: number;
  serverGcMs: number;
  serverMajor: number;
  /** Load generator. */
  first: number;
  median: number;
  acksSent: number;
  clientGcN: number;
  clientGcMs: number;
  clientMajor: number;
  clientShare: number;
  /** The ms from the 90th percentile receiver to the last. */
  lastTenth: number;
}

/** A mark-compact (perf_hooks' GC kind; minor = a scavenge). */
const MAJOR = constants.NODE_PERFORMANCE_GC_MAJOR;

function within<T extends [number, ...number[]]>(xs: readonly T[], from: number, to: number): T[] {
  return xs.filter((x) => x[0] >= from && x[0] < to);
}
function countWithin(xs: readonly number[], from: number, to: number): number {
  let n = 0;
  for (const x of xs) if (x >= from && x < to) n++;
  return n;
}

async function run(variant: 'off' | 'on'): Promise<{ variant: string; traced: Traced[]; gcTrace: string[] }> {
  const server = await startServer('supervisor', { ...(variant === 'on' ? { sessions: 'memory' } : {}), env: { BENCH_TRACE: '1' }, traceGc: values['gc-trace'] });
  let sender: BenchClient | null = null;
  let receivers: BenchClient[] = [];
  try {
    if (variant === 'off') sender = await connectClient(server);
    else {
      const s = new SessionClient(server.url);
      await s.connect();
      sender = s;
    }
    sender.onMessage(() => undefined);
    receivers = variant === 'off' ? await connectMany(server, N, { batch: 250 }) : await connectSessionMany(server.url, N, { batch: 250 });
    await waitForConnections(server, N + 1, 60_000);
    const arrived = new Float64Array(N);
    let current = -1;
    let got = 0;
    let done: (() => void) | null = null;
    let bad = 0;
    receivers.forEach((r, i) => {
      r.onMessage((text) => {
        const m = BROADCAST_PUSH.exec(text);
        if (!m || Number(m[1]) !== current) {
          bad++;
          return;
        }
        arrived[i] = now();
        if (++got === N) done?.();
      });
    });
    await sleep(500);
    const snapDir = process.env.BENCH_RESULTS_DIR ?? RESULTS_DIR;
    mkdirSync(snapDir, { recursive: true });
    if (values.snapshot) await server.command(`snapshot ${join(snapDir, `trace-${variant}-before.heapsnapshot`)}`);
    await server.command('trace'); // start the server's timeline here
    const cpu0 = (await server.stats()).cpuUs;
    const gc0 = server.gcTrace.length;
    clientGc.length = 0;
    acksSent.length = 0;
    const sends: Array<{ k: number; t0: number; t1: number; cpu: number; first: number; median: number; p90: number }> = [];
    for (let k = 1; k <= COUNT; k++) {
      current = k;
      got = 0;
      const all = new Promise<boolean>((resolve) => {
        const t = setTimeout(() => resolve(false), 15_000);
        done = () => {
          clearTimeout(t);
          resolve(true);
        };
      });
      const c0 = selfCpuUs();
      const t0 = now();
      sender.send(`{"requestID":${k},"command":"broadcast","someOtherThing":"b${k}"}`);
      if (!(await all)) throw new Error(`${variant}: broadcast ${k} reached ${got} of ${N}`);
      if (values.snapshot && k === COUNT >> 1) await server.command(`snapshot ${join(snapDir, `trace-${variant}-mid.heapsnapshot`)}`);
      const t1 = now();
      const cpu = (selfCpuUs() - c0) / 1000;
      const sorted = Float64Array.from(arrived).sort();
      sends.push({ k, t0, t1, cpu, first: sorted[0]! - t0, median: sorted[N >> 1]! - t0, p90: sorted[Math.floor(N * 0.9)]! - t0 });
      done = null;
      await sleep(GAP_MS);
    }
    const serverCpuMs = ((await server.stats()).cpuUs - cpu0) / 1000;
    if (values.snapshot) {
      // At once after the last broadcast (the sessions hold what their clients have not acknowledged yet): what the
      // broadcasts left on the heap, by constructor, against the snapshot before them.
      await server.command(`snapshot ${join(snapDir, `trace-${variant}-after.heapsnapshot`)}`);
      printDelta(variant, summarize(join(snapDir, `trace-${variant}-before.heapsnapshot`)), summarize(join(snapDir, `trace-${variant}-after.heapsnapshot`)));
      // Objects live at the end that were not at the middle (snapshot node ids are stable): what the second half's
      // broadcasts and acks left behind for longer than a GC, e.g. state a connection replaces on each message.
      printNew(variant, join(snapDir, `trace-${variant}-mid.heapsnapshot`), join(snapDir, `trace-${variant}-after.heapsnapshot`));
    }
    await sleep(200);
    const traceFile = join(snapDir, `trace-${variant}.json`);
    await server.command(`trace ${traceFile}`);
    const st = JSON.parse(readFileSync(traceFile, 'utf8')) as { broadcasts: Array<[number, number, number]>; acks: number[]; defers: number[]; gc: Array<[number, number, number]> };
    if (st.broadcasts.length !== COUNT) throw new Error(`${variant}: the server traced ${st.broadcasts.length} broadcasts, ${COUNT} sent`);
    if (bad) console.log(`${variant}: ${bad} unexpected frames`);
    const traced: Traced[] = sends.slice(WARMUP).map((s) => {
      const [b0, b1, waiting] = st.broadcasts[s.k - 1]!;
      const sgc = within(st.gc, s.t0, s.t1);
      const cgc = within(clientGc, s.t0, s.t1);
      return {
        k: s.k,
        ms: s.t1 - s.t0,
        serverStart: b0 - s.t0,
        serverCall: b1 - b0,
        serverAcks: countWithin(st.acks, s.t0, s.t1),
        serverWaiting: waiting,
        serverDefers: countWithin(st.defers, s.t0, s.t1),
        serverGcN: sgc.length,
        serverGcMs: sgc.reduce((a, g) => a + g[1], 0),
        serverMajor: sgc.filter((g) => g[2] === MAJOR).reduce((a, g) => a + g[1], 0),
        first: s.first,
        median: s.median,
        acksSent: countWithin(acksSent, s.t0, s.t1),
        clientGcN: cgc.length,
        clientGcMs: cgc.reduce((a, g) => a + g[1], 0),
        clientMajor: cgc.filter((g) => g[2] === MAJOR).reduce((a, g) => a + g[1], 0),
        clientShare: s.cpu / (s.t1 - s.t0),
        lastTenth: s.t1 - s.t0 - s.p90,
      };
    });
    // Over the whole run (the gaps too): per 100 broadcasts.
    const span = [sends[WARMUP]!.t0, sends[sends.length - 1]!.t1 + GAP_MS] as const;
    const per100 = 100 / (COUNT - WARMUP);
    const sgc = within(st.gc, span[0], span[1]);
    const cgc = within(clientGc, span[0], span[1]);
    console.log(
      `${variant}: per 100 broadcasts: server CPU ${(serverCpuMs * per100).toFixed(0)} ms, server GC ${(sgc.length * per100).toFixed(0)} (major ${(sgc.filter((g) => g[2] === MAJOR).length * per100).toFixed(1)}, ${(sgc.reduce((a, g) => a + g[1], 0) * per100).toFixed(0)} ms), ` +
        `acks processed ${(countWithin(st.acks, span[0], span[1]) * per100).toFixed(0)}, readers deferred ${(countWithin(st.defers, span[0], span[1]) * per100).toFixed(0)}, acks sent ${(countWithin(acksSent, span[0], span[1]) * per100).toFixed(0)}, ` +
        `client GC ${(cgc.length * per100).toFixed(0)} (major ${(cgc.filter((g) => g[2] === MAJOR).length * per100).toFixed(1)}, ${(cgc.reduce((a, g) => a + g[1], 0) * per100).toFixed(0)} ms)`,
    );
    if (values['gc-trace']) gcSummary(variant, server.gcTrace.slice(gc0), COUNT);
    report(variant, traced);
    return { variant, traced, gcTrace: values['gc-trace'] ? server.gcTrace.slice(gc0) : [] };
  } finally {
    await closeAll(sender ? [sender, ...receivers] : receivers);
    await server.stop();
  }
}

const COLS: Array<[keyof Traced, string, number]> = [
  ['ms', 'ms', 1],
  ['first', 'first', 1],
  ['median', 'p50 rcv', 1],
  ['lastTenth', 'p90→last', 1],
  ['serverStart', 'srv start', 1],
  ['serverCall', 'srv call', 1],
  ['serverAcks', 'srv acks', 0],
  ['serverWaiting', 'srv wait', 0],
  ['serverDefers', 'srv defer', 0],
  ['serverGcN', 'srv gc n', 0],
  ['serverGcMs', 'srv gc ms', 1],
  ['serverMajor', 'srv major', 1],
  ['acksSent', 'acks sent', 0],
  ['clientGcN', 'cli gc n', 0],
  ['clientGcMs', 'cli gc ms', 1],
  ['clientMajor', 'cli major', 1],
  ['clientShare', 'cli share', 2],
];

type Summary = HeapSummary;
const summarize = summarizeHeap;
function printDelta(variant: string, a: Summary, b: Summary): void {
  const rows = [...heapDelta(a, b)].map(([k, v]) => ({ k, ...v }));
  rows.sort((x, y) => Math.abs(y.size) - Math.abs(x.size));
  console.log(`${variant}: heap after the broadcasts − before, largest (bytes, objects):`);
  for (const r of rows.slice(0, 15)) console.log(`  ${String(r.size).padStart(10)} ${String(r.count).padStart(8)}  ${r.k}`);
}

/** Live objects of snapshot `b` that `a` did not have (by node id), per "type:name": count and bytes. */
function printNew(variant: string, a: string, b: string): void {
  type Snap = { snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } }; nodes: number[]; strings: string[] };
  const ids = (s: Snap, width: number, iId: number): Set<number> => {
    const out = new Set<number>();
    for (let i = 0; i < s.nodes.length; i += width) out.add(s.nodes[i + iId]!);
    return out;
  };
  const sa = JSON.parse(readFileSync(a, 'utf8')) as Snap;
  const f = sa.snapshot.meta.node_fields;
  const width = f.length;
  const [iType, iName, iSize, iId] = [f.indexOf('type'), f.indexOf('name'), f.indexOf('self_size'), f.indexOf('id')];
  const old = ids(sa, width, iId);
  const sb = JSON.parse(readFileSync(b, 'utf8')) as Snap;
  const types = sb.snapshot.meta.node_types[0];
  const by = new Map<string, { size: number; count: number }>();
  for (let i = 0; i < sb.nodes.length; i += width) {
    if (old.has(sb.nodes[i + iId]!)) continue;
    const type = types[sb.nodes[i + iType]!]!;
    const name = type === 'code' || type === 'string' || type === 'number' ? '' : sb.strings[sb.nodes[i + iName]!]!;
    const key = `${type}${name ? `:${name.slice(0, 60)}` : ''}`;
    const e = by.get(key) ?? { size: 0, count: 0 };
    e.size += sb.nodes[i + iSize]!;
    e.count++;
    by.set(key, e);
  }
  console.log(`${variant}: objects live at the end and not at the middle snapshot, largest (bytes, objects):`);
  for (const [k, v] of [...by].sort((x, y) => y[1].size - x[1].size).slice(0, 20)) console.log(`  ${String(v.size).padStart(10)} ${String(v.count).padStart(8)}  ${k}`);
}

/** The server's scavenges and full GCs (--trace-gc-nvp), per 100 broadcasts: count, pause, bytes surviving and promoted. */
function gcSummary(variant: string, lines: string[], broadcasts: number): void {
  const sum = { s: 0, full: 0, promoted: 0, survived: 0, pause: 0, maxPause: 0 };
  for (const line of lines) {
    const field = (name: string): number => Number(new RegExp(`\\b${name}=([\\d.]+)`).exec(line)?.[1] ?? 0);
    if (/\bgc=s\b/.test(line)) {
      sum.s++;
      sum.promoted += field('promoted');
      sum.survived += field('new_space_survived');
    } else sum.full++;
    sum.pause += field('pause');
    sum.maxPause = Math.max(sum.maxPause, field('pause'));
  }
  const k = 100 / broadcasts;
  console.log(
    `${variant}: server GC per 100 broadcasts (--trace-gc-nvp): ${(sum.s * k).toFixed(1)} scavenges, ${(sum.full * k).toFixed(1)} full, ` +
      `${((sum.survived * k) / 1024).toFixed(0)} KiB surviving, ${((sum.promoted * k) / 1024).toFixed(0)} KiB promoted, pause ${(sum.pause * k).toFixed(0)} ms (longest ${sum.maxPause.toFixed(1)})`,
  );
}

function report(variant: string, traced: Traced[]): void {
  const bySpeed = [...traced].sort((a, b) => b.ms - a.ms);
  const head = COLS.map(([, h]) => h.padStart(9)).join(' ');
  console.log(`${variant}: p50 ${percentile(traced.map((t) => t.ms), 50).toFixed(1)} ms, p99 ${percentile(traced.map((t) => t.ms), 99).toFixed(1)} ms`);
  console.log(`  ${'k'.padStart(4)} ${head}`);
  const row = (label: string, t: Record<string, number>): void => console.log(`  ${label.padStart(4)} ${COLS.map(([k, , d]) => t[k]!.toFixed(d).padStart(9)).join(' ')}`);
  for (const t of bySpeed.slice(0, 8)) row(String(t.k), t as unknown as Record<string, number>);
  // The typical broadcast: medians of each column over the middle half.
  const mid = bySpeed.slice(Math.floor(bySpeed.length / 4), Math.ceil((3 * bySpeed.length) / 4));
  const med: Record<string, number> = {};
  for (const [k] of COLS) med[k] = percentile(mid.map((t) => t[k] as number), 50);
  row('mid', med);
}

const out: Array<{ variant: string; traced: Traced[]; gcTrace: string[] }> = [];
for (let p = 0; p < PAIRS; p++) for (const v of p % 2 === 0 ? VARIANTS : [...VARIANTS].reverse()) out.push(await run(v));
const dir = process.env.BENCH_RESULTS_DIR ?? RESULTS_DIR;
mkdirSync(dir, { recursive: true });
writeFileSync(join(dir, 'broadcast-trace.json'), JSON.stringify({ receivers: N, broadcasts: COUNT - WARMUP, runs: out }, null, 1));
console.log(`wrote ${join(dir, 'broadcast-trace.json')}`);
