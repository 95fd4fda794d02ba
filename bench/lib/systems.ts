/**
 * The three benchmarked servers, in one place, used by both server entry points
 * (bench/servers.ts and bench/lib/lifecycle-server.ts). Every system answers the
 * same JSON protocol (src/protocol/codec.ts) so only the connection handling differs:
 *
 *   supervisor — what users run: the CLI's server (startDemoServer, logger off),
 *                machine per connection, reader/writer actors, /metrics, dashboard
 *   raw        — plain `ws`, the thinnest correct server: the standard hand-rolled
 *                heartbeat (setInterval(pingInterval): terminate if no pong since the last
 *                tick, else ping); it has no separate pong timeout
 *   socketio   — Socket.IO 4.8 with `transports: ['websocket']` and the engine.io heartbeat
 *                (pingInterval/pingTimeout); a `message` event carries the same JSON text and
 *                is answered with the same reply text on `message`; broadcasts use `io.emit`
 *
 * The optional hooks (onOpen / onClose with a cause) are only attached when given,
 * so bench/servers.ts runs the servers without any extra per-connection listener.
 */
import http from 'node:http';
import { WebSocketServer, type WebSocket } from 'ws';
import { Server as IoServer } from 'socket.io';
import { handleText } from '../../src/protocol/codec.ts';
import { startDemoServer } from '../../src/cli/demo-server.ts';
import type { ServerStats, System } from './harness.ts';

export interface SystemOptions {
  /** Port to listen on (0: any). */
  port: number;
  pingInterval: number;
  pongTimeout: number;
  /** Called once per accepted connection. */
  onOpen?: () => void;
  /** Called once per closed connection with its cause ('heartbeat-timeout' for a heartbeat close). */
  onClose?: (cause: string) => void;
}

export interface RunningSystem {
  /** The port the server listens on. */
  port: number;
  /** Live connections as the server counts them. */
  connections: () => number;
}

export async function startSupervisor(o: SystemOptions): Promise<RunningSystem> {
  const demo = await startDemoServer({
    host: '127.0.0.1',
    port: o.port,
    maxConnections: 18_000, // + 1024 HTTP headroom + 64 must fit under the 20000 open-file limit (checked at startup)
    // Every load client comes from 127.0.0.1, opening up to 250 at once: the per-address limits are not under test here.
    maxConnectionsPerAddress: 18_000,
    maxPendingPerAddress: 1024,
    timing: { pingInterval: o.pingInterval, pongTimeout: o.pongTimeout },
  });
  const { onOpen, onClose } = o;
  if (onOpen) demo.supervisor.on('connection', () => onOpen());
  if (onClose) demo.supervisor.on('close', (_c, closure) => onClose(closure.cause));
  return { port: demo.address.port, connections: () => demo.supervisor.size };
}

export async function startRaw(o: SystemOptions): Promise<RunningSystem> {
  const server = http.createServer();
  const wss = new WebSocketServer({ server, path: '/server', perMessageDeflate: false, maxPayload: 1_048_576 });
  const alive = new WeakMap<WebSocket, boolean>();
  const { onOpen, onClose } = o;
  const terminated = onClose ? new WeakSet<WebSocket>() : null;
  wss.on('connection', (ws) => {
    onOpen?.();
    alive.set(ws, true);
    ws.on('pong', () => alive.set(ws, true));
    ws.on('error', () => undefined);
    if (onClose) ws.on('close', () => onClose(terminated?.has(ws) ? 'heartbeat-timeout' : 'peer'));
    ws.on('message', (data) => {
      const { reply, broadcast } = handleText(data.toString());
      ws.send(reply);
      if (broadcast) for (const c of wss.clients) c.send(broadcast);
    });
  });
  setInterval(() => {
    for (const ws of wss.clients) {
      if (!alive.get(ws)) {
        terminated?.add(ws);
        ws.terminate();
      } else {
        alive.set(ws, false);
        ws.ping();
      }
    }
  }, o.pingInterval).unref();
  return { port: await listen(server, o.port), connections: () => wss.clients.size };
}

export async function startSocketIo(o: SystemOptions): Promise<RunningSystem> {
  const server = http.createServer();
  const io = new IoServer(server, {
    transports: ['websocket'],
    serveClient: false,
    perMessageDeflate: false,
    pingInterval: o.pingInterval,
    pingTimeout: o.pongTimeout,
    maxHttpBufferSize: 1_048_576,
  });
  const { onOpen, onClose } = o;
  io.on('connection', (socket) => {
    onOpen?.();
    if (onClose) socket.on('disconnect', (reason) => onClose(reason === 'ping timeout' ? 'heartbeat-timeout' : reason));
    socket.on('message', (text: unknown) => {
      const { reply, broadcast } = handleText(String(text));
      socket.emit('message', reply);
      if (broadcast) io.emit('message', broadcast);
    });
  });
  return { port: await listen(server, o.port), connections: () => io.engine.clientsCount };
}

const starters: Record<System, (o: SystemOptions) => Promise<RunningSystem>> = {
  supervisor: startSupervisor,
  raw: startRaw,
  socketio: startSocketIo,
};

/** Starts `kind`; exits the process with code 2 on an unknown kind (both entry points did). */
export function startSystem(kind: string | undefined, o: SystemOptions): Promise<RunningSystem> {
  const start = Object.hasOwn(starters, kind ?? '') ? starters[kind as System] : undefined;
  if (!start) {
    console.error(`unknown server kind ${String(kind)} (raw | supervisor | socketio)`);
    process.exit(2);
  }
  return start(o);
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

/** The process figures both entry points report in their `stats` line. */
export function processStats(connections: number): ServerStats {
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
    connections,
  };
}
