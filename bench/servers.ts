/**
 * Benchmark servers, one per process:
 *
 *   node --expose-gc --import tsx bench/servers.ts <kind> <port> [--ping-interval ms] [--pong-timeout ms]
 *        [--sessions memory|redis://…] [--resume-window ms]   (supervisor only: sessions on, docs/sessions.md)
 *
 * kind: raw | supervisor | socketio — the servers of bench/lib/systems.ts, which
 * also backs bench/lib/lifecycle-server.ts.
 *
 * stdout/stdin are line protocols (bench/lib/harness.ts):
 *   → "ready <port>" once listening
 *   ← "stats"  → "stats {cpuUs, rss, heapUsed, heapTotal, external, arrayBuffers, resources, connections[, sessions: {detached}]}"
 *   ← "gc"     → two full GCs (needs --expose-gc), then the same "stats …" line
 *   ← "snapshot <file>" → GC, then a V8 heap snapshot to <file> (bench/memory-profile.ts)
 *   ← "cut"    → destroys every TCP socket at once (no close frame) → "cut <sockets destroyed>"
 *   ← "cpu"    → "cpu <µs> rss <bytes>" (kept for bench/throughput.ts)
 *   ← "profile start [cpu|heap|both]" → starts V8's CPU profiler and/or sampling heap profiler (default both) → "profile started"
 *   ← "profile stop <dir>" → writes <dir>/cpu.cpuprofile and/or <dir>/heap.heapprofile → "profile <dir>"
 *                            (bench/profile.ts: only the load phase is profiled, not start-up or connects)
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { join } from 'node:path';
import { writeHeapSnapshot } from 'node:v8';
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';
import { processStats, startSystem, trace } from './lib/systems.ts';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    'ping-interval': { type: 'string', default: '25000' },
    'pong-timeout': { type: 'string', default: '10000' },
    sessions: { type: 'string' },
    'resume-window': { type: 'string' },
  },
});
const [kind, portArg] = positionals;
const { port, connections, cut, sessionStats, broadcast } = await startSystem(kind, {
  port: Number(portArg ?? 0),
  pingInterval: Number(values['ping-interval']),
  pongTimeout: Number(values['pong-timeout']),
  ...(values.sessions !== undefined ? { sessions: values.sessions } : {}),
  ...(values['resume-window'] !== undefined ? { resumeWindow: Number(values['resume-window']) } : {}),
});

const stats = (): string => `stats ${JSON.stringify({ ...processStats(connections()), ...(sessionStats ? { sessions: sessionStats() } : {}) })}`;

console.log(`ready ${port}`);
createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = line.trim();
  if (cmd === 'stats') console.log(stats());
  else if (cmd === 'gc') {
    const gc = (globalThis as { gc?: () => void }).gc;
    if (gc) {
      gc();
      gc();
    }
    console.log(stats());
  } else if (cmd.startsWith('snapshot ')) {
    (globalThis as { gc?: () => void }).gc?.();
    console.log(`snapshot ${writeHeapSnapshot(cmd.slice(9))}`);
  } else if (cmd === 'cut') console.log(`cut ${cut()}`);
  else if (cmd === 'trace' || cmd.startsWith('trace ')) {
    // BENCH_TRACE=1 (bench/broadcast-trace.ts): the timeline so far, into the file named (not on stdout, where
    // --trace-gc-nvp's lines would cut into it), then it starts over.
    if (cmd.length > 6) writeFileSync(cmd.slice(6), JSON.stringify(trace));
    console.log('trace');
    trace.broadcasts.length = trace.acks.length = trace.defers.length = trace.gc.length = 0;
  }
  else if (cmd.startsWith('feed ')) console.log(feed(cmd.slice(5)));
  else if (cmd === 'cpu') {
    const u = process.cpuUsage();
    console.log(`cpu ${u.user + u.system} rss ${process.memoryUsage().rss}`);
  } else if (cmd === 'profile start' || cmd.startsWith('profile start ')) void profileStart(cmd.slice(14) || 'both').then(() => console.log('profile started'));
  else if (cmd.startsWith('profile stop ')) void profileStop(cmd.slice(13)).then((dir) => console.log(`profile ${dir}`));
  else console.log(`error unknown command ${cmd}`);
});
process.on('SIGINT', () => process.exit(0));

/**
 * `feed <ms>`: the server broadcasts {"command":"broadcast","someOtherThing":"b<k>"}, k = 1, 2, …, every <ms>
 * (a server-side feed: it goes on whatever its clients do); `feed stop` stops it and answers the last k.
 */
let feedTimer: NodeJS.Timeout | null = null;
let feedK = 0;
function feed(arg: string): string {
  if (!broadcast) return 'error this system has no server-side broadcast';
  if (arg === 'stop') {
    if (feedTimer) clearInterval(feedTimer);
    feedTimer = null;
    return `feed ${feedK}`;
  }
  const ms = Number(arg);
  if (!(ms > 0)) return `error feed needs a period in ms, got ${arg}`;
  if (feedTimer) clearInterval(feedTimer);
  feedTimer = setInterval(() => broadcast(`{"command":"broadcast","someOtherThing":"b${++feedK}"}`), ms);
  return `feed ${feedK}`;
}

let session: Session | null = null;
/** Which profilers run: both, or one alone (the heap sampler's stack captures charge allocating functions in the CPU profile). */
let profiling = { cpu: true, heap: true };
async function profileStart(which: string): Promise<void> {
  profiling = { cpu: which !== 'heap', heap: which !== 'cpu' };
  session = new Session();
  session.connect();
  if (profiling.cpu) {
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: 100 }); // µs
  }
  if (profiling.heap) {
    await session.post('HeapProfiler.enable');
    // Every sampled allocation, collected or not: bytes allocated per message, not only what stays live.
    const sampling = { samplingInterval: 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true };
    await session.post('HeapProfiler.startSampling', sampling);
  }
  if (profiling.cpu) await session.post('Profiler.start');
}
async function profileStop(dir: string): Promise<string> {
  const s = session!;
  if (profiling.cpu) {
    const { profile } = await s.post('Profiler.stop');
    writeFileSync(join(dir, 'cpu.cpuprofile'), JSON.stringify(profile));
  }
  if (profiling.heap) {
    const { profile: heap } = await s.post('HeapProfiler.stopSampling');
    writeFileSync(join(dir, 'heap.heapprofile'), JSON.stringify(heap));
  }
  s.disconnect();
  session = null;
  return dir;
}
