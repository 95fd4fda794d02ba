/**
 * Server cost per request in CPU instructions (perf stat), raw `ws` vs
 * ws-supervisor, same protocol. Instruction counts do not drift with the
 * shared machine's load the way wall-clock throughput does (±30% here), so
 * this is the number to watch when changing the hot path.
 *
 *   node --import tsx bench/instructions.ts [--connections 500] [--requests 200] [--rounds 2]
 *
 * Each run counts the server's instructions for a fixed workload (N clients ×
 * K sequential requests) minus a run with no requests (start-up + connects).
 * Needs `perf` (Debian linux-perf) with hardware counters available.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { compiledEntry } from './lib/compile.ts';

const { values } = parseArgs({
  options: {
    connections: { type: 'string', default: '500' },
    requests: { type: 'string', default: '200' },
    rounds: { type: 'string', default: '2' },
  },
});
const N = Number(values.connections);
const K = Number(values.requests);
const ROUNDS = Number(values.rounds);

if (spawnSync('perf', ['stat', '-e', 'instructions', 'true']).status !== 0) {
  console.error('bench/instructions: perf with hardware counters is not available here');
  process.exit(1);
}
const pin = (cpu: number, cmd: string[]): string[] =>
  spawnSync('taskset', ['-c', '0', 'true']).status === 0 ? ['taskset', '-c', String(cpu), ...cmd] : cmd;

async function load(port: number, requests: number): Promise<void> {
  const clients: WebSocket[] = [];
  for (let i = 0; i < N; i++) {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/server`, { perMessageDeflate: false });
    clients.push(ws);
    await new Promise((r) => ws.once('open', r));
  }
  await Promise.all(
    clients.map(
      (ws, i) =>
        new Promise<void>((resolve) => {
          let id = 0;
          const next = (): void => {
            if (id === requests) return resolve();
            ws.send(`{"requestID":${++id},"command":"bench ${i}","someOtherThing":"x"}`);
          };
          ws.on('message', next);
          next();
        }),
    ),
  );
  for (const ws of clients) ws.terminate();
}

async function instructions(kind: string, requests: number, port: number): Promise<number> {
  const out = join(mkdtempSync(join(tmpdir(), 'ws-sup-perf-')), 'perf.csv');
  const server = spawn(
    'perf',
    ['stat', '-x', ',', '-e', 'instructions', '-o', out, ...pin(0, [process.execPath, compiledEntry('servers.ts'), kind, String(port)])],
    { env: { ...process.env, NODE_ENV: 'production' }, stdio: ['pipe', 'pipe', 'inherit'] },
  );
  await new Promise<void>((resolve) => server.stdout.once('data', () => resolve()));
  await load(port, requests);
  const exited = new Promise((r) => server.once('exit', r));
  // SIGINT reaches the node server (perf forwards it); it exits 0 and perf writes its count.
  spawnSync('pkill', ['-INT', '-f', `servers.mjs ${kind} ${port}`]);
  await exited;
  const line = readFileSync(out, 'utf8').split('\n').find((l) => l.includes('instructions'));
  return Number(line?.split(',')[0]);
}

if (spawnSync('taskset', ['-c', '0', 'true']).status === 0) spawnSync('taskset', ['-cp', '1', String(process.pid)]);
const perRequest: Record<string, number[]> = { raw: [], supervisor: [] };
let port = 19_700;
for (let round = 0; round < ROUNDS; round++) {
  for (const kind of ['raw', 'supervisor']) {
    const base = await instructions(kind, 0, port++);
    const full = await instructions(kind, K, port++);
    const per = (full - base) / (N * K);
    perRequest[kind]!.push(per);
    console.log(`round ${round + 1} ${kind.padEnd(10)} ${(per / 1000).toFixed(1)} k instructions per request/response`);
  }
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
console.log(
  `\n${N} clients × ${K} requests: supervisor/raw instructions per request = ${(median(perRequest.supervisor!) / median(perRequest.raw!)).toFixed(2)}×`,
);
