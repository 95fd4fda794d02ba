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
import { monitorEventLoopDelay, PerformanceObserver, type IntervalHistogram } from 'node:perf_hooks';
import { WebSocketServer, type WebSocket } from 'ws';
import { Server as IoServer } from 'socket.io';
import { handleText } from '../../src/protocol/codec.ts';
import { startDemoServer } from '../../src/cli/demo-server.ts';
import { createRedisSessionStore } from '../../src/adapter/redis.ts';
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
  /**
   * Sessions on the supervisor (docs/sessions.md) for the clients that ask:
   * 'memory' (the in-memory store) or a redis:// URL (createRedisSessionStore,
   * its own key prefix per server). Absent: sessions off (`ws-session=1` is refused).
   * Other systems refuse it.
   */
  sessions?: string;
  /** Resume window of the sessions, ms (default: the store's, 120 000). */
  resumeWindow?: number;
}

export interface RunningSystem {
  /** The port the server listens on. */
  port: number;
  /** Live connections as the server counts them. */
  connections: () => number;
  /**
   * Destroys every TCP socket of the server at once (no close frame, no FIN
   * handshake to wait for: what a crashed load balancer does to its clients).
   * Returns how many were destroyed.
   */
  cut: () => number;
  /** Broadcasts `text` to every connection (and session) from the server itself: a server-side feed. */
  broadcast?: (text: string) => void;
  /** Session figures of the supervisor with sessions on (detached sessions). */
  sessionStats?: () => { detached: number; storeOps?: Record<string, number> };
}

/** Every accepted TCP socket of `server`, for cut(). */
function trackSockets(server: http.Server): () => number {
  const sockets = new Set<import('node:net').Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  return () => {
    const n = sockets.size;
    for (const s of sockets) s.destroy();
    sockets.clear();
    return n;
  };
}

export async function startSupervisor(o: SystemOptions): Promise<RunningSystem> {
  const demo = await startDemoServer({
    host: '127.0.0.1',
    port: o.port,
    maxConnections: 18_000, // + 1024 HTTP headroom + 64 must fit under the 20000 open-file limit (checked at startup)
    // Every load client comes from 127.0.0.1, opening up to 250 at once: the per-address limits are not under test here.
    maxConnectionsPerAddress: 18_000,
    maxPendingPerAddress: 1024,
    // Node's own default, as the raw ws and Socket.IO servers here have: the load generator, one core opening
    // thousands of sockets while it answers the others' pings, can write a head seconds after the server accepted it.
    headersTimeout: 60_000,
    timing: { pingInterval: o.pingInterval, pongTimeout: o.pongTimeout },
    ...(o.sessions !== undefined ? { sessions: sessionOptions(o.sessions, o.resumeWindow) } : {}),
    // An experiment's knob, never set by `npm run bench`: the recipients per turn of a broadcast (docs/performance.md,
    // "what the fan-out slice costs a single broadcast"), e.g. 1000000 for one unsliced fan-out as raw ws does.
    ...(process.env.WS_SUP_BENCH_FAN_OUT_SLICE !== undefined ? { fairness: { fanOutSlice: Number(process.env.WS_SUP_BENCH_FAN_OUT_SLICE) } } : {}),
  });
  const { onOpen, onClose } = o;
  if (onOpen) demo.supervisor.on('connection', () => onOpen());
  if (onClose) demo.supervisor.on('close', (_c, closure) => onClose(closure.cause));
  const sessions = demo.supervisor.sessions;
  if (process.env.BENCH_TRACE === '1') traceSupervisor(demo.supervisor);
  return {
    port: demo.address.port,
    connections: () => demo.supervisor.size,
    cut: trackSockets(demo.server),
    broadcast: (text) => demo.supervisor.broadcast(text),
    ...(sessions
      ? {
          sessionStats: () => {
            const store = sessions.store as { operations?: Record<string, number>; failures?: Record<string, number>; queuedOperations?: number; batches?: number };
            const ops = store.operations;
            return {
              detached: sessions.detachedCount,
              ...(ops ? { storeOps: { ...ops, '(batches)': store.batches ?? 0, '(queued)': store.queuedOperations ?? 0, ...Object.fromEntries(Object.entries(store.failures ?? {}).map(([k, v]) => [`(failed: ${k})`, v])) } } : {}),
            };
          },
        }
      : {}),
  };
}

/** The supervisor option `sessions` for `--sessions memory|redis://…`. */
function sessionOptions(kind: string, resumeWindow: number | undefined): NonNullable<NonNullable<Parameters<typeof startDemoServer>[0]>['sessions']> {
  const bounds = {
    ...(resumeWindow !== undefined ? { resumeWindow } : {}),
    // 10k sessions, all detached at once in the mass reconnect: the default cap (10,000) would refuse the last ones.
    maxDetachedSessions: 20_000,
  };
  // bench/instructions.ts --sessions: acks by count only (see there).
  const ack = process.env.WS_SUP_BENCH_ACK_DELAY !== undefined ? { ackDelay: Number(process.env.WS_SUP_BENCH_ACK_DELAY) } : {};
  if (kind === 'memory') return { ...bounds, ...ack };
  if (/^rediss?:\/\//.test(kind)) {
    // A prefix per server process: one Redis can serve several benchmark runs without their sessions meeting.
    return { store: createRedisSessionStore({ url: kind, prefix: `bench:${process.pid}:`, ...bounds }), ...ack };
  }
  throw new Error(`--sessions must be memory or a redis:// URL, got ${kind}`);
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
  const cut = trackSockets(server);
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
  return { port: await listen(server, o.port), connections: () => wss.clients.size, cut };
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
  const cut = trackSockets(server);
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
  return { port: await listen(server, o.port), connections: () => io.engine.clientsCount, cut };
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
  if (o.sessions !== undefined && kind !== 'supervisor') {
    console.error(`--sessions is an option of the supervisor only, not of ${kind}`);
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

/**
 * With BENCH_STALLS=1 (set by the scenarios that explain a latency spike, never by the CPU and
 * memory ones: the monitor wakes the loop every 10 ms): the longest event-loop stall and the
 * longest GC pause since the previous `stats` line, so a slow probe can be told apart as the
 * server's loop (a long task), its GC, or neither (the kernel, the load generator).
 */
let stalls: { loop: IntervalHistogram; gcMaxMs: number; gcMs: number; since: number } | null = null;
if (process.env.BENCH_STALLS === '1') {
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  const s = { loop, gcMaxMs: 0, gcMs: 0, since: 0 };
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      // Entries arrive after the fact: one that began before the last stats line (the forced GCs of `gc`) is not this interval's.
      if (e.startTime < s.since) continue;
      s.gcMaxMs = Math.max(s.gcMaxMs, e.duration);
      s.gcMs += e.duration;
    }
  }).observe({ entryTypes: ['gc'] });
  stalls = s;
}

/** The process figures both entry points report in their `stats` line. */
export function processStats(connections: number): ServerStats {
  const u = process.cpuUsage();
  const m = process.memoryUsage();
  const resources: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) resources[r] = (resources[r] ?? 0) + 1;
  let stall: ServerStats['stall'];
  if (stalls) {
    // The histogram counts delay beyond the 10 ms resolution tick: max is the longest turn's excess.
    stall = { loopMaxMs: stalls.loop.max / 1e6, gcMaxMs: stalls.gcMaxMs, gcMs: stalls.gcMs };
    stalls.loop.reset();
    stalls.gcMaxMs = 0;
    stalls.gcMs = 0;
    stalls.since = performance.now();
  }
  return {
    ...(stall ? { stall } : {}),
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

/**
 * With BENCH_TRACE=1 (bench/broadcast-trace.ts only: it wraps a method per call): a timeline of the
 * server, on the clock both processes share (performance.timeOrigin + now, ms): each broadcast call's
 * start and end (the sessions' fan-out runs inside it; the hub's slices may run on after it) and the
 * readers the fair scheduler had deferred at its start, each session ack the store was given
 * (in-memory store), each reader deferred, each GC (start, duration, kind). `trace <file>` writes
 * it and starts over.
 */
export const trace = {
  broadcasts: [] as Array<[number, number, number]>,
  acks: [] as number[],
  defers: [] as number[],
  gc: [] as Array<[number, number, number]>,
};
function traceSupervisor(supervisor: Awaited<ReturnType<typeof startDemoServer>>['supervisor']): void {
  const at = (): number => performance.timeOrigin + performance.now();
  const scheduler = (supervisor as unknown as { scheduler: { deferred: number; defer(r: unknown): void } }).scheduler;
  const defer = scheduler.defer.bind(scheduler);
  scheduler.defer = (r: unknown) => {
    trace.defers.push(at());
    defer(r);
  };
  const broadcast = supervisor.broadcast.bind(supervisor);
  supervisor.broadcast = ((...args: Parameters<typeof broadcast>) => {
    const t = at();
    const waiting = scheduler.deferred;
    const r = broadcast(...args);
    trace.broadcasts.push([t, at(), waiting]);
    return r;
  }) as typeof broadcast;
  const sync = supervisor.sessions?.sync as { ack?: (...a: unknown[]) => unknown } | null | undefined;
  if (sync?.ack) {
    const ack = sync.ack;
    sync.ack = (...a: unknown[]) => {
      trace.acks.push(at());
      return ack(...a);
    };
  }
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) trace.gc.push([performance.timeOrigin + e.startTime, e.duration, ((e as unknown as { detail?: { kind?: number } }).detail?.kind ?? 0)]);
  }).observe({ entryTypes: ['gc'] });
}
