/**
 * Where a server's CPU and allocations go per message: V8's CPU profiler and
 * sampling heap profiler over the load phase only (not start-up, not the
 * connects), and optionally the syscalls (strace -c) over the same load.
 *
 *   node --import tsx bench/profile.ts [--system supervisor|raw|socketio] [--workload reqres|broadcast|heartbeat]
 *        [--connections 500] [--requests 200]                (reqres: N clients × K sequential requests)
 *        [--receivers 2000] [--bursts 20] [--burst 10]       (broadcast: bursts of B back-to-back broadcasts)
 *        [--connections N] [--ping 1000] [--seconds 10]      (heartbeat: N idle connections, a message = a ping)
 *        [--top 25] [--strace] [--out dir] [--profile both|cpu|heap|none]
 *                                                            (none: the server's CPU by thread only, no profiler running)
 *        [--sessions memory|redis://…]                      (supervisor with sessions on, session clients: bench/lib/session-client.ts)
 *        [--gc-trace]                                        (the server under --trace-gc-nvp: per message over the load, the
 *                                                             scavenges, full GCs, bytes promoted and surviving, GC pause; counts
 *                                                             that a loaded machine does not move, unlike CPU times)
 *
 * It also prints the server's CPU per message by thread (/proc/<pid>/task): the
 * CPU profile samples the main thread only, while V8's GC helpers (parallel
 * scavenging, concurrent marking and sweeping) run on threads of their own, on
 * the same pinned core, and count in the process's CPU per message.
 *
 * The server is bench/servers.ts (compiled, pinned to CPU 0), driven over its
 * stdin ("profile start" / "profile stop"); this process is the load generator
 * (CPU 1). Functions are named as V8 sees them; the module is the esbuild
 * bundle's `// src/…` marker above the function's line. Prints markdown tables:
 * self time per function (% of the profile's non-idle samples, µs per message),
 * self time per module, allocated bytes per message per function, and with
 * --strace, syscalls per message, of the server and of the load generator.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { closeAll, connectClient, connectMany, pinSelf, selfCpuUs, sleep, startServer, waitForConnections, type BenchClient, type System } from './lib/harness.ts';
import { compiledEntry } from './lib/compile.ts';
import { connectSessionMany, SessionClient } from './lib/session-client.ts';
import type WebSocket from 'ws';

const { values } = parseArgs({
  options: {
    system: { type: 'string', default: 'supervisor' },
    workload: { type: 'string', default: 'reqres' },
    connections: { type: 'string', default: '500' },
    requests: { type: 'string', default: '200' },
    receivers: { type: 'string', default: '2000' },
    bursts: { type: 'string', default: '20' },
    burst: { type: 'string', default: '10' },
    top: { type: 'string', default: '25' },
    ping: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '10' },
    strace: { type: 'boolean', default: false },
    sessions: { type: 'string' },
    out: { type: 'string' },
    profile: { type: 'string', default: 'both' },
    'gc-trace': { type: 'boolean', default: false },
  },
});
const SYSTEM = values.system as System;
const WORKLOAD = values.workload as 'reqres' | 'broadcast' | 'heartbeat';
if (!['reqres', 'broadcast', 'heartbeat'].includes(WORKLOAD)) throw new Error(`--workload must be reqres, broadcast or heartbeat, got ${WORKLOAD}`);
const TOP = Number(values.top);
const PROFILE = values.profile!;
if (!['both', 'cpu', 'heap', 'none'].includes(PROFILE)) throw new Error(`--profile must be both, cpu, heap or none, got ${PROFILE}`);
pinSelf(1);

// ---------------------------------------------------------------------------
// Workloads: each resolves with the number of messages it made the server handle
// (requests answered, or deliveries of broadcasts).

async function reqres(clients: BenchClient[], requests: number): Promise<number> {
  await Promise.all(
    clients.map(
      (c, i) =>
        new Promise<void>((resolve) => {
          let id = 0;
          const next = (): void => {
            if (id === requests) return resolve();
            c.send(`{"requestID":${++id},"command":"bench ${i}","someOtherThing":"x"}`);
          };
          c.onMessage(next);
          next();
        }),
    ),
  );
  return clients.length * requests;
}

async function broadcast(sender: BenchClient, receivers: BenchClient[], bursts: number, burst: number): Promise<number> {
  let k = 0;
  for (let b = 0; b < bursts; b++) {
    let got = 0;
    const all = new Promise<void>((resolve) => {
      for (const r of receivers) r.onMessage(() => void (++got === receivers.length * burst && resolve()));
    });
    sender.onMessage(() => undefined);
    // B broadcasts back to back: the writes of one event-loop turn, per socket.
    for (let i = 0; i < burst; i++) sender.send(`{"requestID":${++k},"command":"broadcast","someOtherThing":"b${k}"}`);
    await all;
  }
  return receivers.length * bursts * burst;
}

/** Idle connections for `seconds`: resolves with the pings the clients received (each answered by ws). */
async function heartbeat(clients: BenchClient[], seconds: number): Promise<number> {
  let pings = 0;
  const count = (): void => void pings++;
  for (const c of clients) (c.raw as WebSocket).on('ping', count);
  await sleep(seconds * 1000);
  for (const c of clients) (c.raw as WebSocket).off('ping', count);
  return pings;
}

// ---------------------------------------------------------------------------

interface CpuNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface HeapNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: HeapNode[];
}

/** Bundle line → the source module esbuild wrote above it (`// src/server/writer.ts`). */
function moduleMap(bundle: string): (url: string, line: number) => string {
  const lines = readFileSync(bundle, 'utf8').split('\n');
  const marks: Array<[number, string]> = [];
  lines.forEach((l, i) => {
    const m = /^\/\/ ((?:src|bench|machines)\/\S+\.ts)$/.exec(l);
    if (m) marks.push([i, m[1]!]);
  });
  return (url, line) => {
    if (!url) return '(native)';
    if (!url.endsWith('servers.mjs')) {
      const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
      return m ? m[1]! : url.replace(/^file:\/\//, '');
    }
    let mod = 'bench/servers.ts';
    for (const [at, name] of marks) if (at <= line) mod = name;
    return mod;
  };
}

/** CPU time (µs) per thread of process `pid` from /proc (Linux; empty elsewhere), by thread name (`comm`), summed over threads of one name. */
function threadCpu(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tasks) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // utime and stime (fields 14, 15) in USER_HZ ticks (100 per second on Linux); the main thread is named after the process.
      const key = tid === String(pid) ? `${name} (main)` : name;
      out.set(key, (out.get(key) ?? 0) + ((Number(fields[11]) + Number(fields[12])) * 1_000_000) / 100);
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

function table(title: string, head: string[], rows: Array<Array<string | number>>): void {
  console.log(`\n#### ${title}\n`);
  console.log(`| ${head.join(' | ')} |`);
  console.log(`|${head.map(() => '---').join('|')}|`);
  for (const r of rows) console.log(`| ${r.join(' | ')} |`);
}

async function run(withStrace: boolean): Promise<void> {
  const SESSIONS = values.sessions;
  const server = await startServer(SYSTEM, {
    ...(WORKLOAD === 'heartbeat' ? { pingInterval: Number(values.ping), pongTimeout: 10_000 } : {}),
    ...(SESSIONS !== undefined ? { sessions: SESSIONS } : {}),
    ...(values['gc-trace'] ? { traceGc: true } : {}),
  });
  const dir = values.out ?? mkdtempSync(join(tmpdir(), `ws-sup-profile-${SYSTEM}-`));
  mkdirSync(dir, { recursive: true });
  let clients: BenchClient[] = [];
  let sender: BenchClient | null = null;
  try {
    const n = WORKLOAD === 'broadcast' ? Number(values.receivers) : Number(values.connections);
    clients = SESSIONS !== undefined ? await connectSessionMany(server.url, n, { batch: 250 }) : await connectMany(server, n, { batch: 250 });
    if (WORKLOAD === 'broadcast' && SESSIONS !== undefined) {
      const s = new SessionClient(server.url);
      await s.connect();
      sender = s;
    } else if (WORKLOAD === 'broadcast') sender = await connectClient(server);
    await waitForConnections(server, n + (sender ? 1 : 0), 60_000);
    // Warm-up: the JIT has seen the hot path before the profile starts.
    if (WORKLOAD === 'reqres') await reqres(clients, 20);
    else if (WORKLOAD === 'broadcast') await broadcast(sender!, clients, 3, Number(values.burst));
    else await heartbeat(clients, (3 * Number(values.ping)) / 1000);
    await sleep(200);

    let strace: ReturnType<typeof spawn> | null = null;
    let straceSelf: ReturnType<typeof spawn> | null = null;
    const straceOut = join(dir, 'strace.txt');
    const straceSelfOut = join(dir, 'strace-load.txt');
    if (withStrace) {
      strace = spawn('strace', ['-f', '-c', '-o', straceOut, '-p', String(server.pid)], { stdio: 'ignore' });
      // The load generator too (this process: its clients' reads and writes per message).
      straceSelf = spawn('strace', ['-f', '-c', '-o', straceSelfOut, '-p', String(process.pid)], { stdio: 'ignore' });
      await sleep(1000); // attached to every thread
    } else if (PROFILE !== 'none') await server.command(`profile start ${PROFILE}`);
    const th0 = threadCpu(server.pid);
    const s0 = await server.stats();
    const gc0 = server.gcTrace.length;
    const c0 = selfCpuUs();
    const t0 = performance.now();
    const messages =
      WORKLOAD === 'reqres'
        ? await reqres(clients, Number(values.requests))
        : WORKLOAD === 'broadcast'
          ? await broadcast(sender!, clients, Number(values.bursts), Number(values.burst))
          : await heartbeat(clients, Number(values.seconds));
    const ms = performance.now() - t0;
    const s1 = await server.stats();
    const gc1 = server.gcTrace.length;
    const th1 = threadCpu(server.pid);
    const loadCpu = selfCpuUs() - c0;
    const cpuPerMsg = (s1.cpuUs - s0.cpuUs) / messages;
    console.log(
      `\n### ${SYSTEM}${SESSIONS !== undefined ? ` (sessions: ${SESSIONS})` : ''}, ${WORKLOAD}${withStrace ? ' (under strace: CPU figures inflated)' : ''}: ${messages} ${{ reqres: 'requests', broadcast: 'deliveries', heartbeat: 'pings' }[WORKLOAD]} in ${ms.toFixed(0)} ms; ` +
        `server CPU ${cpuPerMsg.toFixed(2)} µs per message (${(((s1.cpuUs - s0.cpuUs) / 1000 / ms) * 100).toFixed(1)}% of a core); load generator at ${((loadCpu / 1000 / ms) * 100).toFixed(0)}% of a core`,
    );

    if (th1.size > 0) {
      const rows = [...th1.entries()].map(([name, us]) => [name, us - (th0.get(name) ?? 0)] as const).filter(([, us]) => us > 0).sort((a, b) => b[1] - a[1]);
      const all = rows.reduce((sum, [, us]) => sum + us, 0);
      table(
        `${SYSTEM} ${WORKLOAD}: server CPU by thread (/proc, 10 ms ticks; the CPU profile below samples the main thread only)`,
        ['thread', 'µs per message', '% of the process'],
        rows.map(([name, us]) => [name, (us / messages).toFixed(2), ((us / all) * 100).toFixed(1)]),
      );
    }

    if (values['gc-trace']) {
      // The GCs the load made (the stats answers around it bracket them: the lines come in order on the same stdout).
      const sum = { s: 0, full: 0, promoted: 0, survived: 0, pause: 0 };
      for (const line of server.gcTrace.slice(gc0, gc1)) {
        const field = (name: string): number => Number(new RegExp(`\\b${name}=([\\d.]+)`).exec(line)?.[1] ?? 0);
        if (/\bgc=s\b/.test(line)) {
          sum.s++;
          sum.promoted += field('promoted');
          sum.survived += field('new_space_survived');
        } else sum.full++;
        sum.pause += field('pause');
      }
      table(
        `${SYSTEM} ${WORKLOAD}: garbage collections during the load (--trace-gc-nvp), per 1,000 messages`,
        ['scavenges', 'full GCs (mark-compact, any kind)', 'bytes promoted', 'bytes surviving a scavenge', 'GC pause, main thread, ms'],
        [[(sum.s * 1000 / messages).toFixed(2), (sum.full * 1000 / messages).toFixed(2), (sum.promoted * 1000 / messages).toFixed(0), (sum.survived * 1000 / messages).toFixed(0), (sum.pause * 1000 / messages).toFixed(2)]],
      );
    }

    if (strace) {
      for (const p of [strace, straceSelf!]) {
        const exited = new Promise((r) => p.once('exit', r));
        p.kill('SIGINT');
        await exited;
      }
      const rowsOf = (file: string): Array<Array<string | number>> => {
        const rows: Array<Array<string | number>> = [];
        for (const line of readFileSync(file, 'utf8').split('\n')) {
          // % time, seconds, usecs/call, calls, [errors,] syscall
          const m = /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)\s*$/.exec(line);
          if (m && m[3] !== 'total') rows.push([m[3]!, Number(m[1]), (Number(m[1]) / messages).toFixed(3), m[2] ?? '']);
        }
        return rows.sort((a, b) => Number(b[1]) - Number(a[1])).slice(0, 12);
      };
      table(`syscalls of the ${SYSTEM} server (strace -c -f over the load)`, ['syscall', 'calls', 'per message', 'errors'], rowsOf(straceOut));
      table('syscalls of the load generator (this process, its clients: strace -c -f over the load)', ['syscall', 'calls', 'per message', 'errors'], rowsOf(straceSelfOut));
      return;
    }

    if (PROFILE === 'none') return;
    await server.command(`profile stop ${dir}`);
    const where = moduleMap(compiledEntry('servers.ts'));
    if (PROFILE !== 'heap') {
    const cpu = JSON.parse(readFileSync(join(dir, 'cpu.cpuprofile'), 'utf8')) as { nodes: CpuNode[]; samples: number[]; startTime: number; endTime: number };
    const profileUs = cpu.endTime - cpu.startTime;
    const usPerSample = profileUs / cpu.samples.length;
    const self = new Map<string, number>();
    const perModule = new Map<string, number>();
    let idle = 0;
    for (const node of cpu.nodes) {
      const hits = node.hitCount ?? 0;
      if (hits === 0) continue;
      const f = node.callFrame;
      if (f.functionName === '(idle)') {
        idle += hits;
        continue;
      }
      const mod = f.functionName.startsWith('(') ? '(V8)' : where(f.url, f.lineNumber);
      const key = `${f.functionName || '(anonymous)'}\u0000${mod}`;
      self.set(key, (self.get(key) ?? 0) + hits);
      perModule.set(mod, (perModule.get(mod) ?? 0) + hits);
    }
    const busy = cpu.samples.length - idle;
    const pct = (h: number): string => ((h / busy) * 100).toFixed(1);
    // A function's share of the busy samples times the server's measured CPU per message (the samples'
    // wall-clock spacing stretches when the machine is loaded; the share does not).
    const usPer = (h: number): string => ((h / busy) * cpuPerMsg).toFixed(2);
    table(
      `${SYSTEM} ${WORKLOAD}: self time, top ${TOP} functions (${busy} busy samples, one per ~${usPerSample.toFixed(0)} µs of wall time)`,
      ['function', 'module', '% of busy', 'µs per message'],
      [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, TOP).map(([k, h]) => [...k.split('\u0000'), pct(h), usPer(h)]),
    );
    table(
      `${SYSTEM} ${WORKLOAD}: self time per module`,
      ['module', '% of busy', 'µs per message'],
      [...perModule.entries()].sort((a, b) => b[1] - a[1]).slice(0, TOP).map(([m, h]) => [m, pct(h), usPer(h)]),
    );
    }
    if (PROFILE === 'cpu') return;

    const heap = JSON.parse(readFileSync(join(dir, 'heap.heapprofile'), 'utf8')) as { head: HeapNode };
    const bytes = new Map<string, number>();
    let total = 0;
    const walk = (node: HeapNode): void => {
      if (node.selfSize > 0) {
        const f = node.callFrame;
        const key = `${f.functionName || '(anonymous)'}\u0000${f.functionName.startsWith('(') ? '(V8)' : where(f.url, f.lineNumber)}`;
        bytes.set(key, (bytes.get(key) ?? 0) + node.selfSize);
        total += node.selfSize;
      }
      for (const c of node.children) walk(c);
    };
    walk(heap.head);
    table(
      `${SYSTEM} ${WORKLOAD}: sampled allocations, ${(total / messages).toFixed(0)} bytes per message in all (objects still alive and collected alike)`,
      ['function', 'module', 'bytes per message'],
      [...bytes.entries()].sort((a, b) => b[1] - a[1]).slice(0, 15).map(([k, b]) => [...k.split('\u0000'), (b / messages).toFixed(0)]),
    );
    console.log(`\nprofiles in ${dir} (open cpu.cpuprofile in Chrome DevTools › Performance)`);
  } finally {
    await closeAll(sender ? [sender, ...clients] : clients);
    await server.stop();
  }
}

await run(false);
if (values.strace) {
  if (spawnSync('strace', ['-V']).status !== 0) console.error('bench/profile: --strace needs strace');
  else await run(true);
}
process.exit(0);
