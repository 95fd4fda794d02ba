/**
 * Request/response throughput, side by side: raw `ws` (+ standard heartbeat)
 * vs ws-supervisor, same protocol, alternating runs, reported as ratios
 * (absolute numbers drift 25–30% between runs on a shared 2-core machine; the
 * ratios of side-by-side runs held within 5%).
 *
 *   node --import tsx bench/throughput.ts [--connections 1000] [--seconds 5] [--rounds 3]
 *
 * The server is pinned to CPU 0 (taskset, when present) and this load
 * generator to CPU 1, so the server's cost per request is what is measured.
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { compiledEntry } from './lib/compile.ts';

const { values } = parseArgs({
  options: {
    connections: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '3' },
  },
});
const CONNECTIONS = Number(values.connections);
const SECONDS = Number(values.seconds);
const ROUNDS = Number(values.rounds);
const hasTaskset = spawnSync('taskset', ['-c', '1', 'true']).status === 0;
if (hasTaskset) spawnSync('taskset', ['-cp', '1', String(process.pid)]);

interface Result {
  kind: string;
  msgsPerSec: number;
  cpuUsPerReq: number;
}

async function startServer(kind: string, port: number): Promise<ChildProcessWithoutNullStreams> {
  const args = [compiledEntry('servers.ts'), kind, String(port)];
  const child = hasTaskset
    ? spawn('taskset', ['-c', '0', process.execPath, ...args], { env: { ...process.env, NODE_ENV: 'production' } })
    : spawn(process.execPath, args, { env: { ...process.env, NODE_ENV: 'production' } });
  await new Promise<void>((resolve, reject) => {
    child.stdout.once('data', (d: Buffer) => (d.toString().includes('ready') ? resolve() : reject(new Error(d.toString()))));
    child.once('exit', (code) => reject(new Error(`server ${kind} exited ${code}`)));
  });
  return child;
}

function serverCpu(child: ChildProcessWithoutNullStreams): Promise<number> {
  return new Promise((resolve) => {
    child.stdout.once('data', (d: Buffer) => resolve(Number(/cpu (\d+)/.exec(d.toString())?.[1] ?? NaN)));
    child.stdin.write('cpu\n');
  });
}

async function run(kind: string, port: number): Promise<Result> {
  const child = await startServer(kind, port);
  const clients: WebSocket[] = [];
  try {
    for (let i = 0; i < CONNECTIONS; i += 100) {
      const batch = Array.from({ length: Math.min(100, CONNECTIONS - i) }, () => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/server`, { perMessageDeflate: false });
        clients.push(ws);
        return new Promise((r, j) => {
          ws.once('open', r);
          ws.once('error', j);
        });
      });
      await Promise.all(batch);
    }
    let replies = 0;
    let running = true;
    for (const [i, ws] of clients.entries()) {
      let id = 0;
      const sendNext = (): void => {
        if (running) ws.send(`{"requestID":${++id},"command":"bench ${i}","someOtherThing":"x"}`);
      };
      ws.on('message', () => {
        replies++;
        sendNext();
      });
      sendNext();
    }
    await new Promise((r) => setTimeout(r, 1000)); // warm-up
    const r0 = replies;
    const c0 = await serverCpu(child);
    await new Promise((r) => setTimeout(r, SECONDS * 1000));
    const r1 = replies;
    const c1 = await serverCpu(child);
    running = false;
    return { kind, msgsPerSec: (r1 - r0) / SECONDS, cpuUsPerReq: (c1 - c0) / (r1 - r0) };
  } finally {
    for (const ws of clients) ws.terminate();
    child.kill('SIGKILL');
  }
}

const results: Result[] = [];
let port = 19_300;
for (let round = 0; round < ROUNDS; round++) {
  for (const kind of round % 2 === 0 ? ['raw', 'supervisor'] : ['supervisor', 'raw']) {
    const r = await run(kind, port++);
    results.push(r);
    console.log(`round ${round + 1} ${kind.padEnd(10)} ${r.msgsPerSec.toFixed(0).padStart(7)} msg/s  ${r.cpuUsPerReq.toFixed(2)} µs server CPU/req`);
  }
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const m = (kind: string, f: (r: Result) => number): number => median(results.filter((r) => r.kind === kind).map(f));
console.log(`\n${CONNECTIONS} connections, 1 request in flight each, ${SECONDS} s × ${ROUNDS} rounds, medians:`);
console.log(`throughput  supervisor/raw = ${(m('supervisor', (r) => r.msgsPerSec) / m('raw', (r) => r.msgsPerSec)).toFixed(2)}×`);
console.log(`server CPU per request  supervisor/raw = ${(m('supervisor', (r) => r.cpuUsPerReq) / m('raw', (r) => r.cpuUsPerReq)).toFixed(2)}×`);
