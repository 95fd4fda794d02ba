/**
 * The server process of the lifecycle scenarios (churn, heartbeat, detection):
 *
 *   node --expose-gc --import tsx bench/lib/lifecycle-server.ts <kind> <port> [pingMs] [pongMs]
 *
 * The same three servers as bench/servers.ts (both come from bench/lib/systems.ts),
 * plus counts of connections opened and closed (by cause), which the integrity checks need.
 *
 * Speaks the protocol of bench/lib/harness.ts (`ready <port>`; `stats` / `gc` on stdin, each
 * answered by one line `stats <json>`), with extra fields for integrity checks:
 *   { cpuUs, rss, heapUsed, heapTotal, external, arrayBuffers, resources: {Timeout: n, TCPSocketWrap: n, …},
 *     connections, opened, closed, closedBy: {cause: n} }
 * `gc` forces full GCs (needs --expose-gc) before answering.
 */
import { processStats, startSystem } from './systems.ts';

const [kind, portArg, pingArg, pongArg] = process.argv.slice(2);

let opened = 0;
let closed = 0;
const closedBy: Record<string, number> = {};
const { port: listeningPort, connections } = await startSystem(kind, {
  port: Number(portArg ?? 0),
  pingInterval: Number(pingArg ?? 25_000),
  pongTimeout: Number(pongArg ?? 10_000),
  onOpen: () => opened++,
  onClose: (cause) => {
    closed++;
    closedBy[cause] = (closedBy[cause] ?? 0) + 1;
  },
});

function stats(): Record<string, unknown> {
  return { ...processStats(connections()), opened, closed, closedBy };
}

async function fullGc(): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run the server with --expose-gc');
  // Several passes with turns of the event loop between them: weak callbacks and
  // FinalizationRegistry cleanups run between GCs.
  for (let i = 0; i < 4; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, 20));
  }
}

let buffered = '';
process.stdin.on('data', (d: Buffer) => {
  buffered += d.toString();
  let nl: number;
  while ((nl = buffered.indexOf('\n')) !== -1) {
    const command = buffered.slice(0, nl).trim();
    buffered = buffered.slice(nl + 1);
    if (command === 'stats') console.log(`stats ${JSON.stringify(stats())}`);
    else if (command === 'gc') void fullGc().then(() => console.log(`stats ${JSON.stringify(stats())}`));
  }
});
process.on('SIGINT', () => process.exit(0));
console.log(`ready ${listeningPort}`);
