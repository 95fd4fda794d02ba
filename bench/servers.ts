/**
 * Benchmark servers, one per process:
 *
 *   node --expose-gc --import tsx bench/servers.ts <kind> <port> [--ping-interval ms] [--pong-timeout ms]
 *
 * Every kind answers the same JSON protocol (src/protocol/codec.ts) so only the
 * connection handling differs:
 *   raw         — plain `ws`, the thinnest correct server: the standard hand-rolled
 *                 heartbeat (ping every interval, terminate if no pong since the last one)
 *   supervisor  — what users run: the CLI's server (startDemoServer, logger off),
 *                 machine per connection, reader/writer actors, /metrics, dashboard
 *   socketio    — Socket.IO 4.8 with `transports: ['websocket']`; a `message` event
 *                 carries the same JSON text and is answered with the same reply text
 *                 on `message`; broadcasts go out with `io.emit`
 *
 * stdout/stdin are line protocols (bench/lib/harness.ts):
 *   → "ready <port>" once listening
 *   ← "stats"  → "stats {cpuUs, rss, heapUsed, heapTotal, external, arrayBuffers, resources, connections}"
 *   ← "gc"     → two full GCs (needs --expose-gc), then the same "stats …" line
 *   ← "snapshot <file>" → GC, then a V8 heap snapshot to <file> (bench/memory-profile.ts)
 *   ← "cpu"    → "cpu <µs> rss <bytes>" (kept for bench/throughput.ts)
 */
import http from 'node:http';
import { writeHeapSnapshot } from 'node:v8';
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';
import { WebSocketServer, type WebSocket } from 'ws';
import { Server as IoServer } from 'socket.io';
import { handleText } from '../src/protocol/codec.ts';
import { startDemoServer } from '../src/demo-server.ts';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    'ping-interval': { type: 'string', default: '25000' },
    'pong-timeout': { type: 'string', default: '10000' },
  },
});
const [kind, portArg] = positionals;
const requestedPort = Number(portArg ?? 0);
const PING_INTERVAL = Number(values['ping-interval']);
const PONG_TIMEOUT = Number(values['pong-timeout']);

let connections: () => number;
let port: number;

if (kind === 'raw') {
  const server = http.createServer();
  const wss = new WebSocketServer({ server, path: '/server', perMessageDeflate: false, maxPayload: 1_048_576 });
  const alive = new WeakMap<WebSocket, boolean>();
  wss.on('connection', (ws) => {
    alive.set(ws, true);
    ws.on('pong', () => alive.set(ws, true));
    ws.on('error', () => undefined);
    ws.on('message', (data) => {
      const { reply, broadcast } = handleText(data.toString());
      ws.send(reply);
      if (broadcast) for (const c of wss.clients) c.send(broadcast);
    });
  });
  setInterval(() => {
    for (const ws of wss.clients) {
      if (!alive.get(ws)) ws.terminate();
      else {
        alive.set(ws, false);
        ws.ping();
      }
    }
  }, PING_INTERVAL).unref();
  connections = () => wss.clients.size;
  port = await listen(server, requestedPort);
} else if (kind === 'supervisor') {
  const demo = await startDemoServer({
    host: '127.0.0.1',
    port: requestedPort,
    maxConnections: 19_000,
    timing: { pingInterval: PING_INTERVAL, pongTimeout: PONG_TIMEOUT },
  });
  connections = () => demo.supervisor.size;
  port = demo.address.port;
} else if (kind === 'socketio') {
  const server = http.createServer();
  const io = new IoServer(server, {
    transports: ['websocket'],
    serveClient: false,
    perMessageDeflate: false,
    pingInterval: PING_INTERVAL,
    pingTimeout: PONG_TIMEOUT,
    maxHttpBufferSize: 1_048_576,
  });
  io.on('connection', (socket) => {
    socket.on('message', (text: unknown) => {
      const { reply, broadcast } = handleText(String(text));
      socket.emit('message', reply);
      if (broadcast) io.emit('message', broadcast);
    });
  });
  connections = () => io.engine.clientsCount;
  port = await listen(server, requestedPort);
} else {
  console.error(`unknown server kind ${String(kind)} (raw | supervisor | socketio)`);
  process.exit(2);
}

function listen(server: http.Server, p: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(p, '127.0.0.1', () => {
      const a = server.address();
      resolve(typeof a === 'object' && a !== null ? a.port : p);
    });
  });
}

function stats(): string {
  const u = process.cpuUsage();
  const m = process.memoryUsage();
  const resources: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) resources[r] = (resources[r] ?? 0) + 1;
  return `stats ${JSON.stringify({
    cpuUs: u.user + u.system,
    rss: m.rss,
    heapUsed: m.heapUsed,
    heapTotal: m.heapTotal,
    external: m.external,
    arrayBuffers: m.arrayBuffers,
    resources,
    connections: connections(),
  })}`;
}

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
  } else if (cmd === 'cpu') {
    const u = process.cpuUsage();
    console.log(`cpu ${u.user + u.system} rss ${process.memoryUsage().rss}`);
  } else console.log(`error unknown command ${cmd}`);
});
process.on('SIGINT', () => process.exit(0));
