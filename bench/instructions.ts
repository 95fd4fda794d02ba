/**
 * Server cost per request in CPU instructions, raw `ws` vs ws-supervisor, same
 * protocol. Instruction counts do not drift with the shared machine's load the
 * way wall-clock throughput does (±30% here), so this is the number to watch
 * when changing the hot path.
 *
 *   node --import tsx bench/instructions.ts [--connections 500] [--requests 200] [--rounds 2] [--tool perf|callgrind]
 *   node --import tsx bench/instructions.ts --workload broadcast [--connections 500] [--bursts 5] [--burst 10] [--rounds 2]
 *   node --import tsx bench/instructions.ts --workload heartbeat [--connections 200] [--ping 500] [--seconds 10] [--rounds 2]
 *   … --sessions memory   (ws-supervisor sessions off vs on, every client opted in: bench/lib/session-client.ts)
 *   … --node-flags=--single-threaded --warmup 50   (callgrind: flags for the server's node; requests per connection before counting, default 10)
 *   … --port 19700   (the first server's port, each run the next: two checkouts benching at once need their own)
 *
 * A/B of a change to the session path (callgrind): `--sessions memory --connections 1 --requests 5000 --warmup 20000`.
 * One connection makes every request the same work in a turn of its own (with 50, how many share a read and a turn
 * depends on timing, and the count moved by ±10%); the long warm-up and the figure without TurboFan's compiling
 * (printed per round) leave the steady state: that figure moved by ±2% between runs here.
 *
 * heartbeat (callgrind only): N idle connections, the server pinging each every
 * `--ping` ms (pong timeout 10 s); after as many seconds of warm-up, counting is
 * on for `--seconds`, and the count is per ping the clients received meanwhile
 * (the wheel's or the interval's ticks included: they are the heartbeat's too).
 * Under callgrind the server runs ~50× slower: keep N × 1000 / ping at a few
 * hundred pings a second, or the pings come late (the count stays per ping).
 *
 * broadcast: N receivers plus one sender, which sends bursts of B broadcasts
 * back to back (the next burst once every receiver has the last one); the
 * count is per delivery (N × bursts × B), the sender's replies included.
 *
 * perf (default when `perf stat -e instructions` works, i.e. hardware counters
 * are available): each run counts the server's instructions for a fixed
 * workload (N clients × K sequential requests) minus a run with no requests
 * (start-up + connects).
 * callgrind (default without hardware counters, e.g. in a VM): the server runs
 * under `valgrind --tool=callgrind --instr-atstart=no`, and counting is switched
 * on (`callgrind_control -i on`) only for the K requests, after the connects and
 * a warm-up; valgrind runs it ~50× slower, so use small N and K
 * (e.g. --connections 50 --requests 40). The count includes every thread
 * (V8's compiler and GC helpers). Simulated, but not exactly repeatable: V8
 * tiers code up on timing, so the per-request count varied by up to ±10%
 * between runs here (raw `ws` 235–273 k, ws-supervisor 249–314 k): run rounds.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { compiledEntry } from './lib/compile.ts';
import { SessionClient } from './lib/session-client.ts';

const { values } = parseArgs({
  options: {
    connections: { type: 'string', default: '500' },
    requests: { type: 'string', default: '200' },
    rounds: { type: 'string', default: '2' },
    tool: { type: 'string' },
    workload: { type: 'string', default: 'reqres' },
    bursts: { type: 'string', default: '5' },
    burst: { type: 'string', default: '10' },
    sessions: { type: 'string' },
    warmup: { type: 'string' },
    'node-flags': { type: 'string' },
    ping: { type: 'string', default: '500' },
    seconds: { type: 'string', default: '10' },
    port: { type: 'string', default: '19700' },
  },
});
const WORKLOAD = values.workload;
if (WORKLOAD !== 'reqres' && WORKLOAD !== 'broadcast' && WORKLOAD !== 'heartbeat') throw new Error(`--workload must be reqres, broadcast or heartbeat, got ${WORKLOAD}`);
if (WORKLOAD === 'heartbeat' && values.sessions !== undefined) throw new Error('--workload heartbeat compares raw ws and ws-supervisor only (no --sessions)');
const PING_MS = Number(values.ping);
const SECONDS = Number(values.seconds);
const N = Number(values.connections);
const K = WORKLOAD === 'broadcast' ? Number(values.bursts) : Number(values.requests);
const BURST = Number(values.burst);
/** Messages one run of K handles: requests, or deliveries of broadcasts. */
const PER_RUN = WORKLOAD === 'broadcast' ? N * K * BURST : N * K;
const ROUNDS = Number(values.rounds);
/** --sessions: the two systems are ws-supervisor without and with sessions (this store), not raw ws and ws-supervisor. */
const SESSIONS = values.sessions;
const KINDS = SESSIONS === undefined ? ['raw', 'supervisor'] : ['supervisor', 'sessions'];
// Acks by count only (every 32), on both sides: under callgrind the server runs ~50× slower, so the 1 s ack timers would
// fire every few requests, where at full speed (over 32 requests/s per connection) the count comes first. The spawned
// server and the session clients read it (bench/lib/systems.ts, bench/lib/session-client.ts).
if (SESSIONS !== undefined) process.env.WS_SUP_BENCH_ACK_DELAY ??= '600000';
/** The server's command line for a kind (bench/servers.ts). */
/**
 * --node-flags: flags for the server's node, e.g. `--single-threaded` under callgrind (no concurrent compiler or GC
 * threads, whose work lands in the count at moments that vary from run to run).
 */
const NODE_FLAGS = (values['node-flags'] ?? '').split(/\s+/).filter((f) => f !== '');
/** --warmup: requests per connection (reqres) before the counting starts under callgrind. Default 10 (then at most --requests); a given one is used as given (it was capped at --requests: `--requests 5000 --warmup 20000` warmed up with 5,000). */
const WARMUP = values.warmup === undefined ? 10 : Number(values.warmup);
const serverArgs = (kind: string, port: number): string[] => [
  ...NODE_FLAGS,
  ...(kind === 'sessions' ? [compiledEntry('servers.ts'), 'supervisor', String(port), '--sessions', SESSIONS!] : [compiledEntry('servers.ts'), kind, String(port)]),
  ...(WORKLOAD === 'heartbeat' ? ['--ping-interval', String(PING_MS), '--pong-timeout', '10000'] : []),
];

/** A load connection: a plain ws, or a session client (its payloads only; acks and seqs as the Node client's). */
interface LoadClient {
  send(text: string): void;
  on(handler: () => void): void;
  off(): void;
  terminate(): void;
}
async function connect(kind: string, port: number): Promise<LoadClient> {
  const url = `ws://127.0.0.1:${port}/server`;
  if (kind === 'sessions') {
    const c = new SessionClient(url);
    await c.connect();
    return { send: (t) => c.send(t), on: (h) => c.onMessage(h), off: () => c.onMessage(() => undefined), terminate: () => c.terminate() };
  }
  const ws = new WebSocket(url, { perMessageDeflate: false });
  await new Promise((r) => ws.once('open', r));
  let current: (() => void) | null = null;
  return {
    send: (t) => ws.send(t),
    on: (h) => {
      if (current) ws.off('message', current);
      ws.on('message', (current = h));
    },
    off: () => {
      if (current) ws.off('message', current);
      current = null;
    },
    terminate: () => ws.terminate(),
  };
}

// perf exits 0 even when the counter is "<not supported>": look at what it printed.
const perfProbe = spawnSync('perf', ['stat', '-e', 'instructions', 'true'], { encoding: 'utf8' });
const hasPerf = perfProbe.status === 0 && !/not supported|not counted/.test(perfProbe.stderr ?? '');
const hasCallgrind = spawnSync('valgrind', ['--version']).status === 0 && spawnSync('callgrind_control', ['-h']).status === 0;
const TOOL = values.tool ?? (hasPerf ? 'perf' : 'callgrind');
if (TOOL === 'perf' && !hasPerf) {
  console.error('bench/instructions: perf with hardware counters is not available here (try --tool callgrind)');
  process.exit(1);
}
if (TOOL === 'callgrind' && !hasCallgrind) {
  console.error('bench/instructions: neither perf hardware counters nor valgrind/callgrind_control are available here');
  process.exit(1);
}
const pin = (cpu: number, cmd: string[]): string[] =>
  spawnSync('taskset', ['-c', '0', 'true']).status === 0 ? ['taskset', '-c', String(cpu), ...cmd] : cmd;

async function load(kind: string, port: number, requests: number, between?: { before(): Promise<void>; after(): void }): Promise<void> {
  const clients: LoadClient[] = [];
  for (let i = 0; i < N; i++) clients.push(await connect(kind, port));
  const sender = WORKLOAD === 'broadcast' ? await connect(kind, port) : null;
  let seq = 0;
  const bursts = async (k: number): Promise<void> => {
    for (let b = 0; b < k; b++) {
      let got = 0;
      let one = (): void => undefined;
      const all = new Promise<void>((resolve) => {
        one = () => void (++got === N * BURST && resolve());
        for (const c of clients) c.on(one);
      });
      for (let i = 0; i < BURST; i++) sender!.send(`{"requestID":${++seq},"command":"broadcast","someOtherThing":"b${seq}"}`);
      await all;
      for (const c of clients) c.off();
    }
  };
  const run = (k: number): Promise<unknown> =>
    sender ? bursts(k) : Promise.all(
      clients.map(
        (ws, i) =>
          new Promise<void>((resolve) => {
            let id = 0;
            const next = (): void => {
              if (id === k) {
                ws.off();
                return resolve();
              }
              ws.send(`{"requestID":${++id},"command":"bench ${i}","someOtherThing":"x"}`);
            };
            ws.on(next);
            next();
          }),
      ),
    );
  if (between) {
    // Warm-up, not counted (a broadcast run is short: as many bursts again, so the JIT has settled).
    await run(sender ? requests : values.warmup === undefined ? Math.min(WARMUP, requests) : WARMUP);
    await between.before();
  }
  await run(requests);
  between?.after();
  sender?.terminate();
  for (const ws of clients) ws.terminate();
}

/** heartbeat: N idle connections; warm-up, then `between.before()`, SECONDS of pings, `between.after()`. Resolves with the pings in between. */
async function heartbeatLoad(port: number, between: { before(): Promise<void>; after(): void }): Promise<number> {
  const clients: WebSocket[] = [];
  let counting = false;
  let pings = 0;
  const count = (): void => {
    if (counting) pings++;
  };
  for (let i = 0; i < N; i++) {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/server`, { perMessageDeflate: false });
    await new Promise((r) => ws.once('open', r));
    ws.on('ping', count);
    clients.push(ws);
  }
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  await sleep(SECONDS * 1000); // warm-up: every connection pinged several times, the JIT settled
  await between.before();
  counting = true;
  await sleep(SECONDS * 1000);
  counting = false;
  between.after();
  for (const ws of clients) ws.terminate();
  return pings;
}

/**
 * Instructions of the server over exactly the K requests (callgrind, switched on and off around them): all of them,
 * and those of V8's optimizing compiler (`v8::internal::compiler::` functions, read with callgrind_annotate; 0 when
 * that is not installed). A window right after the warm-up still holds compiling (TurboFan tiers code up on counts,
 * and the session path has more code to tier up), which the steady state of a long run does not: on this machine it
 * was 1–15 k instructions per request and moved by several k from run to run, more than the differences looked for.
 */
async function callgrindInstructions(kind: string, requests: number, port: number): Promise<{ total: number; compile: number; gc: number; messages: number }> {
  const out = join(mkdtempSync(join(tmpdir(), 'ws-sup-callgrind-')), 'callgrind.out');
  const server = spawn(
    'valgrind',
    ['--tool=callgrind', '--instr-atstart=no', `--callgrind-out-file=${out}`, process.execPath, ...serverArgs(kind, port)],
    { env: { ...process.env, NODE_ENV: 'production' }, stdio: ['pipe', 'pipe', 'pipe'] },
  );
  // Pinned like the perf runs (valgrind runs the server in its own process, so pin that).
  if (spawnSync('taskset', ['-c', '0', 'true']).status === 0) spawnSync('taskset', ['-acp', '0', String(server.pid)]);
  await new Promise<void>((resolve, reject) => {
    server.stdout.once('data', () => resolve());
    server.once('exit', (code) => reject(new Error(`valgrind ${kind} exited ${code} before ready`)));
  });
  const control = (flag: string): void => {
    const r = spawnSync('callgrind_control', [flag, String(server.pid)], { encoding: 'utf8' });
    if (r.status !== 0 || !/OK/.test(r.stdout)) throw new Error(`callgrind_control ${flag} ${server.pid}: ${r.stdout} ${r.stderr}`);
  };
  const between = { before: async (): Promise<void> => control('--instr=on'), after: () => control('--instr=off') };
  let messages = PER_RUN;
  if (WORKLOAD === 'heartbeat') messages = await heartbeatLoad(port, between);
  else await load(kind, port, requests, between);
  const exited = new Promise((r) => server.once('exit', r));
  spawnSync('pkill', ['-INT', '-f', `servers.mjs ${kind === 'sessions' ? 'supervisor' : kind} ${port}`]); // valgrind passes it on; the server exits 0 and callgrind writes its totals
  await exited;
  const totals = /^totals:\s+(\d+)/m.exec(readFileSync(out, 'utf8'));
  if (!totals) throw new Error(`no totals in ${out}`);
  console.log(`${kind}: callgrind output ${out} (per function: callgrind_annotate ${out})`);
  return { total: Number(totals[1]), ...compilerAndGcInstructions(out), messages };
}

/**
 * V8's garbage collector, by the names callgrind_annotate gives its functions: scavenges, marking (concurrent and on
 * the main thread), sweeping, evacuation, and the slot and page bookkeeping around them.
 */
const GC_FUNCTION = /v8::internal::(Scavenge|MarkCompact|Marking|MainMarking|ConcurrentMarking|Sweeper|MinorMarkCompact|Heap::|MemoryChunk|MemoryAllocator|PagedSpace|Evacuat|FullEvacuator|RecordMigrated|IncrementalMarking|RootScavengeVisitor|IterateObjectCache|GlobalHandles|SlotSet|RememberedSet|TypedSlot|ArrayBufferSweeper|PointersUpdating|LiveObject|WeakObjects|ExternalStringTable|MarkingBarrier|GCTracer)|heap::base::|cppgc::|BodyDescriptorBase|MarkingVisitorBase|std::__detail::_Map_base<v8::internal::MemoryChunk/;

/**
 * Instructions callgrind_annotate puts in V8's optimizing compiler, and in its garbage collector (0 if
 * callgrind_annotate is missing). A major GC is ~100 M instructions here: one falls in a 10,000-request window or not
 * by chance (~10 k per request when it does), as TurboFan's jobs do; the figure without either is the steadiest.
 */
function compilerAndGcInstructions(out: string): { compile: number; gc: number } {
  const r = spawnSync('callgrind_annotate', ['--threshold=100', out], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  if (r.status !== 0) return { compile: 0, gc: 0 };
  let compile = 0;
  let gc = 0;
  for (const line of r.stdout.split('\n')) {
    const m = /^\s*([\d,]+) \([^)]*\)\s+(.*)$/.exec(line);
    if (m === null || m[2]!.includes('PROGRAM TOTALS')) continue;
    if (m[2]!.includes('v8::internal::compiler::')) compile += Number(m[1]!.replace(/,/g, ''));
    else if (GC_FUNCTION.test(m[2]!)) gc += Number(m[1]!.replace(/,/g, ''));
  }
  return { compile, gc };
}

async function instructions(kind: string, requests: number, port: number): Promise<number> {
  const out = join(mkdtempSync(join(tmpdir(), 'ws-sup-perf-')), 'perf.csv');
  const server = spawn(
    'perf',
    ['stat', '-x', ',', '-e', 'instructions', '-o', out, ...pin(0, [process.execPath, ...serverArgs(kind, port)])],
    { env: { ...process.env, NODE_ENV: 'production' }, stdio: ['pipe', 'pipe', 'inherit'] },
  );
  await new Promise<void>((resolve) => server.stdout.once('data', () => resolve()));
  await load(kind, port, requests);
  const exited = new Promise((r) => server.once('exit', r));
  // SIGINT reaches the node server (perf forwards it); it exits 0 and perf writes its count.
  server.kill('SIGINT');
  await exited;
  const line = readFileSync(out, 'utf8').split('\n').find((l) => l.includes('instructions'));
  rmSync(dirname(out), { recursive: true, force: true }); // perf's count is read; callgrind's output above stays, for callgrind_annotate
  return Number(line?.split(',')[0]);
}

const WHAT = WORKLOAD === 'broadcast' ? 'delivery' : WORKLOAD === 'heartbeat' ? 'ping' : 'request/response';
if (WORKLOAD === 'heartbeat' && TOOL !== 'callgrind') {
  console.error('bench/instructions: --workload heartbeat runs under callgrind only (--tool callgrind)');
  process.exit(1);
}
if (spawnSync('taskset', ['-c', '0', 'true']).status === 0) spawnSync('taskset', ['-cp', '1', String(process.pid)]);
const perRequest: Record<string, number[]> = Object.fromEntries(KINDS.map((k) => [k, []]));
/** callgrind: per request without the optimizing compiler's instructions (callgrindInstructions). */
const steady: Record<string, number[]> = Object.fromEntries(KINDS.map((k) => [k, []]));
/** callgrind: per request without the optimizing compiler's nor the garbage collector's instructions. */
const mutator: Record<string, number[]> = Object.fromEntries(KINDS.map((k) => [k, []]));
/** --port: the first server's port (each run takes the next); another checkout's bench on the same machine needs its own. */
let port = Number(values.port);
for (let round = 0; round < ROUNDS; round++) {
  for (const kind of KINDS) {
    let per: number;
    let compile = 0;
    let gc = 0;
    if (TOOL === 'callgrind') {
      const c = await callgrindInstructions(kind, K, port++);
      per = c.total / c.messages;
      compile = c.compile / c.messages;
      gc = c.gc / c.messages;
      if (WORKLOAD === 'heartbeat') console.log(`round ${round + 1} ${kind.padEnd(10)} ${c.messages} pings in ${SECONDS} s counted (${N} connections, ${PING_MS} ms interval)`);
      steady[kind]!.push(per - compile);
      mutator[kind]!.push(per - compile - gc);
    }
    else {
      const base = await instructions(kind, 0, port++);
      const full = await instructions(kind, K, port++);
      per = (full - base) / PER_RUN;
    }
    perRequest[kind]!.push(per);
    console.log(
      `round ${round + 1} ${kind.padEnd(10)} ${(per / 1000).toFixed(1)} k instructions per ${WHAT}` +
        (TOOL === 'callgrind' ? ` (${((per - compile) / 1000).toFixed(1)} k without the ${(compile / 1000).toFixed(1)} k of TurboFan compiling; ${((per - compile - gc) / 1000).toFixed(1)} k without it and the ${(gc / 1000).toFixed(1)} k of GC)` : ''),
    );
  }
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
console.log(
  `\n${WORKLOAD === 'broadcast' ? `${N} receivers × ${K} bursts of ${BURST}` : WORKLOAD === 'heartbeat' ? `${N} idle connections, ${PING_MS} ms ping, ${SECONDS} s` : `${N} clients × ${K} requests`} (${TOOL}): ${KINDS[1]}/${KINDS[0]} instructions per ${WHAT} = ${(median(perRequest[KINDS[1]!]!) / median(perRequest[KINDS[0]!]!)).toFixed(2)}×`,
);
if (TOOL === 'callgrind' && steady[KINDS[0]!]!.length > 0) {
  console.log(`without TurboFan compiling: ${KINDS[1]}/${KINDS[0]} = ${(median(steady[KINDS[1]!]!) / median(steady[KINDS[0]!]!)).toFixed(3)}× (medians ${(median(steady[KINDS[1]!]!) / 1000).toFixed(1)} k / ${(median(steady[KINDS[0]!]!) / 1000).toFixed(1)} k)`);
  console.log(`without TurboFan compiling and GC: ${KINDS[1]}/${KINDS[0]} = ${(median(mutator[KINDS[1]!]!) / median(mutator[KINDS[0]!]!)).toFixed(3)}× (medians ${(median(mutator[KINDS[1]!]!) / 1000).toFixed(1)} k / ${(median(mutator[KINDS[0]!]!) / 1000).toFixed(1)} k)`);
}
