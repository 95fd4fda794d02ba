/**
 * The server process of the lifecycle scenarios (churn, heartbeat, detection):
 *
 *   node --expose-gc --import tsx bench/lib/lifecycle-server.ts <kind> <port> [pingMs] [pongMs]
 *
 * The same three servers as bench/servers.ts (keep them identical), plus counts of
 * connections opened and closed (by cause), which the integrity checks need.
 * kinds:
 *   supervisor — `startDemoServer` (the CLI's code path) with logging off, timing from the arguments
 *   raw        — plain `ws` with the standard heartbeat of bench/servers.ts (setInterval(pingMs):
 *                terminate if no pong since the last tick, else ping); it has no separate pong timeout
 *   socketio   — Socket.IO 4.8 (websocket transport only), engine.io heartbeat pingInterval/pingTimeout
 *
 * Speaks the protocol of bench/lib/harness.ts (`ready <port>`; `stats` / `gc` on stdin, each
 * answered by one line `stats <json>`), with extra fields for integrity checks:
 *   { cpuUs, rss, heapUsed, heapTotal, external, arrayBuffers, resources: {Timeout: n, TCPSocketWrap: n, …},
 *     connections, opened, closed, closedBy: {cause: n} }
 * `gc` forces full GCs (needs --expose-gc) before answering.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { handleText } from '../../src/protocol/codec.ts';
import { startDemoServer } from '../../src/demo-server.ts';

const [kind, portArg, pingArg, pongArg] = process.argv.slice(2);
const port = Number(portArg ?? 0);
const pingMs = Number(pingArg ?? 25_000);
const pongMs = Number(pongArg ?? 10_000);

let listeningPort = port;
let opened = 0;
let closed = 0;
let live = (): number => opened - closed;
const closedBy: Record<string, number> = {};
const countClose = (cause: string): void => {
  closed++;
  closedBy[cause] = (closedBy[cause] ?? 0) + 1;
};

if (kind === 'supervisor') {
  const demo = await startDemoServer({
    host: '127.0.0.1',
    port,
    maxConnections: 19_000,
    timing: { pingInterval: pingMs, pongTimeout: pongMs },
  });
  demo.supervisor.on('connection', () => opened++);
  demo.supervisor.on('close', (_c, closure) => countClose(closure.cause));
  live = () => demo.supervisor.size;
  listeningPort = demo.address.port;
} else if (kind === 'raw') {
  // Identical to bench/servers.ts `raw`, with the interval as an argument and closes counted.
  const server = http.createServer();
  const wss = new WebSocketServer({ server, path: '/server', perMessageDeflate: false, maxPayload: 1_048_576 });
  const alive = new WeakMap<WebSocket, boolean>();
  const terminated = new WeakSet<WebSocket>();
  wss.on('connection', (ws) => {
    opened++;
    alive.set(ws, true);
    ws.on('pong', () => alive.set(ws, true));
    ws.on('error', () => undefined);
    ws.on('close', () => countClose(terminated.has(ws) ? 'heartbeat-timeout' : 'peer'));
    ws.on('message', (data) => {
      const { reply, broadcast } = handleText(data.toString());
      ws.send(reply);
      if (broadcast) for (const c of wss.clients) c.send(broadcast);
    });
  });
  setInterval(() => {
    for (const ws of wss.clients) {
      if (!alive.get(ws)) {
        terminated.add(ws);
        ws.terminate();
      } else {
        alive.set(ws, false);
        ws.ping();
      }
    }
  }, pingMs).unref();
  live = () => wss.clients.size;
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  listeningPort = (server.address() as AddressInfo).port;
} else if (kind === 'socketio') {
  const { Server } = await import('socket.io');
  const server = http.createServer();
  const io = new Server(server, {
    transports: ['websocket'],
    serveClient: false,
    perMessageDeflate: false,
    pingInterval: pingMs,
    pingTimeout: pongMs,
    maxHttpBufferSize: 1_048_576,
  });
  io.on('connection', (socket) => {
    opened++;
    socket.on('disconnect', (reason) => countClose(reason === 'ping timeout' ? 'heartbeat-timeout' : reason));
    socket.on('message', (text: unknown) => {
      const { reply, broadcast } = handleText(String(text));
      socket.emit('message', reply);
      if (broadcast) io.emit('message', broadcast);
    });
  });
  live = () => io.engine.clientsCount;
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  listeningPort = (server.address() as AddressInfo).port;
} else {
  console.error(`unknown server kind ${String(kind)} (raw | supervisor | socketio)`);
  process.exit(2);
}

function stats(): Record<string, unknown> {
  const u = process.cpuUsage();
  const m = process.memoryUsage();
  const resources: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) resources[r] = (resources[r] ?? 0) + 1;
  return {
    cpuUs: u.user + u.system,
    rss: m.rss,
    heapUsed: m.heapUsed,
    heapTotal: m.heapTotal,
    external: m.external,
    arrayBuffers: m.arrayBuffers,
    resources,
    connections: live(),
    opened,
    closed,
    closedBy,
  };
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
