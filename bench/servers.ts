/**
 * Benchmark servers, one per process: `node --import tsx bench/servers.ts <kind> <port>`.
 * Every kind answers the same JSON protocol (src/protocol/codec.ts) so only the
 * connection handling differs:
 *   raw         — plain `ws` with the standard hand-rolled heartbeat (ping every interval, terminate if no pong)
 *   supervisor  — ws-supervisor (machine per connection, reader/writer actors)
 * Prints "ready" when listening; on "cpu" from stdin prints its CPU time in µs.
 */
import http from 'node:http';
import { WebSocketServer, type WebSocket } from 'ws';
import { handleText } from '../src/protocol/codec.ts';
import { createSupervisor } from '../src/index.ts';

const [kind, portArg] = process.argv.slice(2);
const port = Number(portArg ?? 0);
const PING_INTERVAL = 25_000;
const server = http.createServer();

if (kind === 'raw') {
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
} else if (kind === 'supervisor') {
  const supervisor = createSupervisor({
    server,
    path: '/server',
    maxConnections: 19_000,
    timing: { pingInterval: PING_INTERVAL },
    onMessage(connection, data) {
      const { reply, broadcast } = handleText(data.toString());
      connection.send(reply);
      if (broadcast) supervisor.broadcast(broadcast);
    },
  });
} else {
  console.error(`unknown server kind ${String(kind)} (raw | supervisor)`);
  process.exit(2);
}

server.listen(port, '127.0.0.1', () => console.log('ready'));
process.stdin.on('data', (d) => {
  if (d.toString().trim() === 'cpu') {
    const u = process.cpuUsage();
    console.log(`cpu ${u.user + u.system} rss ${process.memoryUsage().rss}`);
  }
});
process.on('SIGINT', () => process.exit(0));
