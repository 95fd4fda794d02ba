/**
 * The ready-made server behind `ws-supervisor server`: an http.Server with the
 * supervisor embedded on one path, speaking the Go tutorials' JSON protocol
 * (src/protocol/codec.ts) plus topics (join/leave/publish), with /healthz,
 * /metrics, /cluster (the live nodes) and the static demo page. Pass an `adapter` (e.g. createRedisAdapter)
 * to share broadcasts and topics with other processes.
 */
import { existsSync, readFile } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import sirv from 'sirv';
import { encodeError, handleText, type TopicMembership } from '../protocol/codec.ts';
import type { Connection } from '../server/connection.ts';
import { createSupervisor, type Supervisor } from '../server/supervisor.ts';
import { createDashboard } from '../observe/dashboard/index.ts';
import { positiveInt } from '../base/checks.ts';
import { DEFAULTS, type SupervisorOptions } from '../server/options.ts';
import { fitConnections, resolveOpenFileLimit } from '../server/fd-limit.ts';

/** TCP sockets beyond maxConnections for HTTP requests and upgrades in progress (see DemoServerOptions.httpHeadroom). */
export const HTTP_HEADROOM_DEFAULT = 1024;

export interface DemoServerOptions extends Omit<SupervisorOptions, 'server' | 'onMessage' | 'path'> {
  /** Interface to listen on. Default 'localhost'. */
  host?: string;
  /** Port; 0 picks a free one. Default 8080. */
  port?: number;
  /** WebSocket endpoint. Default '/server' (the tutorials' path). */
  path?: string;
  /** Static files for GET /. Default: the bundled www/. */
  www?: string;
  /**
   * How long a client may take to send a complete request head (an upgrade
   * or a plain GET), ms. Default 10000: a real client sends its head at once;
   * a slowloris peer holding half-sent heads is cut after this (Node's own
   * default would hold each for up to ~90 s).
   */
  headersTimeout?: number;
  /**
   * TCP sockets allowed beyond `maxConnections` for HTTP requests and
   * upgrades in progress. Default 1024. Past maxConnections + this, Node
   * drops new sockets at accept: a flood of half-open sockets cannot use up
   * the process's file descriptors. Both must fit under the open-file limit
   *: an explicit maxConnections that does not is refused
   * (OpenFileLimitError); the default is lowered to fit, with a warning.
   */
  httpHeadroom?: number;
}

export interface DemoServer {
  server: http.Server;
  supervisor: Supervisor;
  /** The bound address (port resolved when 0 was asked for). */
  address: AddressInfo;
  /** R18: drain the supervisor (health turns 503), then close the http server. */
  close(): Promise<void>;
}

/** The bundled www/ folder, from src/cli/ (tsx) or dist/src/cli/ (built). */
export function bundledWww(): string {
  for (const rel of ['../../www/', '../../../www/']) {
    const dir = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(`${dir}index.html`)) return dir;
  }
  throw new Error('ws-supervisor: bundled www/ folder not found');
}

/** The browser client bundle (scripts/build-browser.mjs), served at /ws-supervisor-client.js. */
export const CLIENT_BUNDLE = 'ws-supervisor-client.js';

/** The folder holding the browser bundle (dist/browser/), from src/cli/ (tsx) or dist/src/cli/ (built); null until `npm run build`. */
export function bundledClientDir(): string | null {
  for (const rel of ['../../dist/browser/', '../../browser/']) {
    const dir = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(`${dir}${CLIENT_BUNDLE}`)) return dir;
  }
  return null;
}

/** GET/HEAD of the bundle or its source map; looked up per request, so a build after start is picked up. */
function serveClientBundle(req: http.IncomingMessage, res: http.ServerResponse, file: string): void {
  const dir = bundledClientDir();
  if (dir === null) {
    res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' });
    res.end(`not found: /${file} has not been built: run npm run build\n`);
    return;
  }
  readFile(`${dir}${file}`, (err, body) => {
    if (err) {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end(`not found: /${file} (${err.code ?? err.message}): run npm run build\n`);
      return;
    }
    res.writeHead(200, {
      'Content-Type': file.endsWith('.map') ? 'application/json; charset=utf-8' : 'text/javascript; charset=utf-8',
      'Content-Length': body.length,
      'Cache-Control': 'no-cache',
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
}

const BINARY_NOT_SUPPORTED = encodeError(0, 'binary frames are not supported: send JSON text');

export async function startDemoServer(options: DemoServerOptions = {}): Promise<DemoServer> {
  const {
    host = 'localhost',
    port = 8080,
    path = '/server',
    www = bundledWww(),
    headersTimeout = 10_000,
    httpHeadroom = HTTP_HEADROOM_DEFAULT,
    ...supervisorOptions
  } = options;
  positiveInt('headersTimeout', headersTimeout, 10_000);
  positiveInt('httpHeadroom', httpHeadroom, HTTP_HEADROOM_DEFAULT);
  // WebSockets + HTTP headroom + the process's own descriptors must fit under the open-file limit,
  // or at saturation accept() fails and clients get resets instead of 503 (and /healthz, /metrics go dark).
  const openFileLimit = resolveOpenFileLimit(supervisorOptions.openFileLimit);
  const fit = fitConnections({
    maxConnections: positiveInt('maxConnections', supervisorOptions.maxConnections, DEFAULTS.maxConnections),
    explicit: supervisorOptions.maxConnections !== undefined,
    headroom: httpHeadroom,
    limit: openFileLimit,
  });
  if (fit.warning !== null) {
    if (supervisorOptions.logger) supervisorOptions.logger.warn({ openFileLimit, maxConnections: fit.maxConnections, httpHeadroom: fit.headroom }, fit.warning);
    else process.emitWarning(fit.warning, 'WsSupervisorWarning');
  }
  const statics = sirv(www, { dev: false, etag: true, dotfiles: false });
  // The head must arrive within headersTimeout; Node checks every second, not every 30 s.
  const server = http.createServer({ headersTimeout, requestTimeout: Math.max(headersTimeout, 30_000), connectionsCheckingInterval: 1000 });
  // One object for the server's life: handleText gets the sender as an argument (no per-message closure).
  const topics: TopicMembership<Connection> = {
    join: (connection, topic) => supervisor.join(connection, topic),
    leave: (connection, topic) => supervisor.leave(connection, topic),
  };
  const supervisor: Supervisor = createSupervisor({
    ...supervisorOptions,
    maxConnections: fit.maxConnections,
    openFileLimit,
    server,
    path,
    // R13–R15: reply first, then push (per-connection FIFO keeps that order).
    onMessage(connection, data, isBinary) {
      if (isBinary) {
        connection.send(BINARY_NOT_SUPPORTED);
        return;
      }
      const handled = handleText(data.toString(), topics, connection);
      connection.send(handled.reply);
      // R21: the fan-out is charged to the requesting connection's budget (recipients × bytes).
      if (handled.broadcast !== null) supervisor.broadcast(handled.broadcast, { from: connection });
      if (handled.publish) supervisor.publish(handled.publish.topic, handled.publish.push, { from: connection });
    },
  });

  // Every socket counts, upgraded or not: the WebSocket limit plus room for HTTP and upgrades in progress.
  server.maxConnections = supervisor.options.maxConnections + fit.headroom;

  // GET /dashboard: live connections and the machine diagram (src/observe/dashboard/, docs/dashboard.md).
  const dashboard = createDashboard(supervisor);

  server.on('request', (req, res) => {
    const url = req.url ?? '/';
    const pathname = url.split('?', 1)[0]!;
    if (pathname === '/healthz') {
      // Draining: 503, so the load balancer stops sending. A degraded adapter
      // (Redis down): still 200, since this node serves its own clients and
      // pulling every node at once would turn a Redis outage into a full one.
      const draining = supervisor.isDraining;
      const { adapter } = supervisor;
      const body = draining
        ? 'draining'
        : adapter.status === 'up'
          ? 'ok'
          : `degraded: ${adapter.statusReason ?? `${adapter.name} unavailable`}`;
      res.writeHead(draining ? 503 : 200, { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-store' });
      res.end(body + '\n');
      return;
    }
    if (pathname === '/cluster') {
      // The adapter's presence table: every live node (process) with its connection count.
      const headers = { 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'no-store' };
      supervisor.nodes().then(
        (nodes) => {
          res.writeHead(200, headers);
          res.end(JSON.stringify({ nodes, connections: nodes.reduce((sum, n) => sum + n.connections, 0) }) + '\n');
        },
        (err: unknown) => {
          // The adapter cannot tell (Redis down): say so rather than list this node alone as if it were the cluster.
          res.writeHead(503, { ...headers, 'Retry-After': '5' });
          res.end(JSON.stringify({ error: err instanceof Error ? err.message : String(err), adapter: supervisor.adapter.name, status: supervisor.adapter.status }) + '\n');
        },
      );
      return;
    }
    if (pathname === '/metrics') {
      supervisor.metrics.registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'Content-Type': supervisor.metrics.registry.contentType });
          res.end(text);
        },
        (err: unknown) => {
          res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' });
          res.end(`metrics failed: ${String(err)}\n`);
        },
      );
      return;
    }
    if (pathname === path) {
      // A plain GET on the WebSocket path: say what it is (RFC 7231 §6.5.15).
      res.writeHead(426, { Upgrade: 'websocket', Connection: 'Upgrade', 'Content-Type': 'text/plain; charset=utf-8' });
      res.end(`${path} is a WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket)\n`);
      return;
    }
    if ((pathname === '/' || pathname === '/index.html') && path !== '/server' && !url.includes('?')) {
      // The demo page connects to /server unless its URL names the endpoint (?path=): with --path moved, it is sent
      // to the URL that does, so the page the startup line points to connects.
      res.writeHead(302, { Location: `/?path=${encodeURIComponent(path)}`, 'Content-Type': 'text/plain; charset=utf-8' });
      res.end(`the WebSocket endpoint is ${path}: /?path=${encodeURIComponent(path)}\n`);
      return;
    }
    if (pathname === `/${CLIENT_BUNDLE}` || pathname === `/${CLIENT_BUNDLE}.map`) {
      serveClientBundle(req, res, pathname.slice(1));
      return;
    }
    if (dashboard.handle(req, res)) return;
    statics(req, res, () => {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end(`not found: ${pathname}\n`);
    });
  });
  // A hostile or broken HTTP client gets a 400, never a crash: 408 for a head not complete within headersTimeout,
  // 431 for a head over Node's limit (16 KiB, --max-http-header-size), as Node itself answers without this handler
  // and RFC 6585 §5 says (a 100 KB header was answered a bare 400 before).
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (err.code === 'ECONNRESET' || !socket.writable) return socket.destroy();
    const status =
      err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request';
    // Then let go of the socket, whether or not the peer ever reads the answer or closes its side.
    socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`, () => socket.destroy());
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });

  let closing: Promise<void> | null = null;
  return {
    server,
    supervisor,
    address: server.address() as AddressInfo,
    close() {
      closing ??= (async () => {
        dashboard.close(); // ends its event streams, which would otherwise hold server.close() up
        await supervisor.close();
        supervisor.detach();
        server.closeIdleConnections();
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          // Keep-alive HTTP clients must not hold the exit hostage.
          setTimeout(() => server.closeAllConnections(), 1000).unref();
        });
      })();
      return closing;
    },
  };
}
