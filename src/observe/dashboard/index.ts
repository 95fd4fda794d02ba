/**
 * The live dashboard: `GET ${basePath}` (HTML page), `${basePath}/diagram.svg`
 * (the connection machine drawn from its definition) and `${basePath}/events`
 * (server-sent events, one snapshot per second).
 *
 *   const dashboard = createDashboard(supervisor);
 *   server.on('request', (req, res) => {
 *     if (dashboard.handle(req, res)) return;
 *     // … your other routes
 *   });
 *   // on shutdown: dashboard.close();
 *
 * Cost model (docs/dashboard.md): ONE pass over the hub per tick, only while
 * at least one event-stream subscriber is connected; rows only for the pages
 * subscribers watch; subscribers capped.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { connectionMachine } from '../../../machines/connection.machine.ts';
import type { Closure } from '../../../machines/close-codes.ts';
import type { Connection } from '../../server/connection.ts';
import type { Supervisor } from '../../server/supervisor.ts';
import type { DetachedSessionRow } from '../../server/sessions.ts';
import { CONNECTION_DIAGRAM_SVG } from './connection-diagram.ts';
import { SESSION_DIAGRAM_SVG } from './session-diagram.ts';
import { renderPage, type RenderedPage } from './page.ts';
import {
  clampPage,
  Ring,
  stateIndex,
  takePass,
  type ClosureRow,
  type DashboardSnapshot,
  type History,
  type Pass,
} from './snapshot.ts';

export type { ClosureRow, ConnectionRow, DashboardSnapshot, PageOfRows, Totals } from './snapshot.ts';
export type { DetachedSessionRow } from '../../server/sessions.ts';

export interface DashboardOptions {
  /** Where the dashboard lives. Default '/dashboard'. */
  basePath?: string;
  /** How many recent closures to keep (a ring buffer). Default 100. */
  recentClosures?: number;
  /** Connections per page. Default 50. */
  pageSize?: number;
  /** Concurrent event-stream subscribers; beyond that, 503. Default 20. */
  maxSubscribers?: number;
  /** Time between snapshots, ms. Default 1000. */
  intervalMs?: number;
  /**
   * An event stream whose peer has read nothing for this long is ended, so that
   * a viewer that stopped reading cannot hold one of the `maxSubscribers`
   * places for good (twenty of them would lock every other viewer out). Its
   * snapshots are skipped meanwhile (memory stays bounded). Default 30000 ms:
   * thirty snapshots at the default interval. A browser tab in the background
   * still reads (the kernel reads for it), and an EventSource that was cut
   * reconnects by itself (the stream's `retry: 2000`).
   */
  stallTimeoutMs?: number;
  /** Page title. Default 'ws-supervisor dashboard'. */
  title?: string;
}

export interface Dashboard {
  readonly basePath: string;
  /**
   * Serves the request if it is one of the dashboard's paths (then returns
   * true, and the response is answered, possibly asynchronously); returns
   * false, touching nothing, for any other path.
   */
  handle(req: IncomingMessage, res: ServerResponse): boolean;
  /**
   * Renders the page now instead of on the first request. Cheap (a few string joins and one
   * hash): the diagram is laid out at build time. Kept so that code written for earlier
   * versions, which laid the diagram out at run time, still works.
   */
  ready(): Promise<void>;
  /**
   * A snapshot of page `page`, built now: one pass over the hub per call (the
   * event stream shares one pass per tick among all viewers; this does not).
   */
  snapshot(page?: number): DashboardSnapshot;
  /** Detached sessions, longest-detached first (a page of them), read from the session store now; null when sessions are off. */
  detachedSessions(): Promise<{ detached: number; rows: DetachedSessionRow[] } | null>;
  /** Event-stream subscribers connected now. */
  readonly subscribers: number;
  /** True while the snapshot timer runs (only while someone subscribes). */
  readonly ticking: boolean;
  /** Ends every event stream, stops the timer, detaches from the supervisor. Idempotent. */
  close(): void;
}

interface Subscriber {
  res: ServerResponse;
  page: number;
  /** The closures version this subscriber last received (-1: none yet). */
  closuresVersion: number;
  /** When a snapshot was first skipped because the stream was not draining (null: it drains). */
  stalledSince: number | null;
}

/** Passes closer together than this are served from the last one (a reconnect storm costs nothing extra). */
const MIN_PASS_GAP_MS = 250;

function positiveInt(name: string, value: number | undefined, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < min) throw new RangeError(`ws-supervisor dashboard: ${name} must be an integer ≥ ${min}, got ${String(value)}`);
  return value;
}

function normalizeBase(base: string): string {
  if (!base.startsWith('/')) throw new RangeError(`ws-supervisor dashboard: basePath must start with '/', got ${JSON.stringify(base)}`);
  return base.replace(/\/+$/, '');
}

/** Creates the dashboard for `supervisor`'s connections; see DashboardOptions. */
export function createDashboard<Auth = unknown>(supervisor: Supervisor<Auth>, options: DashboardOptions = {}): Dashboard {
  const basePath = normalizeBase(options.basePath ?? '/dashboard');
  const pageSize = positiveInt('pageSize', options.pageSize, 50);
  const recentClosures = positiveInt('recentClosures', options.recentClosures, 100, 0);
  const maxSubscribers = positiveInt('maxSubscribers', options.maxSubscribers, 20);
  const intervalMs = positiveInt('intervalMs', options.intervalMs, 1000);
  const stallTimeoutMs = positiveInt('stallTimeoutMs', options.stallTimeoutMs, 30_000);
  const title = options.title ?? 'ws-supervisor dashboard';

  const index = stateIndex(connectionMachine);
  const history = { opened: 0, closed: 0, expected: 0, unexpected: 0 };
  // Traffic since the dashboard was created: the hub's closed totals minus where they stood then.
  const trafficAtStart = { ...supervisor.hub.closedTraffic };
  const closures = new Ring<ClosureRow>(recentClosures);
  let closuresJson = '[]';
  let closuresJsonVersion = 0;
  const subscribers = new Set<Subscriber>();
  /** Detached sessions (null: sessions off), refreshed from the store each tick (so at most one tick old). */
  let sessions: { detached: number; rows: DetachedSessionRow[] } | null = null;
  const refreshSessions = (): void => {
    supervisor.sessions?.detachedRows(pageSize).then(
      (s) => (sessions = s),
      () => undefined,
    );
  };
  let timer: NodeJS.Timeout | null = null;
  let last: Pass | null = null;
  let closed = false;

  // The page is rendered on first request (or ready()), then served from memory.
  let page: RenderedPage | null = null;
  const pageHtml = (): RenderedPage =>
    (page ??= renderPage({
      basePath, title, svg: CONNECTION_DIAGRAM_SVG, pageSize, recentClosures, intervalMs,
      ...(supervisor.sessions ? { sessionSvg: SESSION_DIAGRAM_SVG } : {}),
    }));

  const onConnection = (): void => {
    history.opened++;
  };
  const onClose = (c: Connection<Auth>, closure: Closure): void => {
    const s = c.stats;
    history.closed++;
    if (closure.expected) history.expected++;
    else history.unexpected++;
    const now = Date.now();
    closures.push({
      id: c.id,
      remoteAddress: c.remoteAddress,
      at: now,
      ageMs: now - c.openedAt,
      code: closure.code,
      reason: closure.reason,
      expected: closure.expected,
      initiator: closure.initiator,
      cause: closure.cause,
      receivedCode: closure.receivedCode,
      messagesIn: s.messagesIn,
      messagesOut: s.messagesOut,
    });
  };
  supervisor.on('connection', onConnection);
  supervisor.on('close', onClose);

  const pass = (pages: Iterable<number>): Pass => {
    const t = supervisor.hub.closedTraffic;
    const since: History = {
      ...history,
      messagesIn: t.messagesIn - trafficAtStart.messagesIn,
      bytesIn: t.bytesIn - trafficAtStart.bytesIn,
      messagesOut: t.messagesOut - trafficAtStart.messagesOut,
      bytesOut: t.bytesOut - trafficAtStart.bytesOut,
    };
    return takePass(supervisor.hub.values() as Iterable<Connection<unknown>>, supervisor.hub.size, index, since, pages, pageSize);
  };

  const closuresNow = (): string => {
    if (closuresJsonVersion !== closures.version) {
      closuresJson = JSON.stringify(closures.newestFirst());
      closuresJsonVersion = closures.version;
    }
    return closuresJson;
  };

  /** The snapshot of one page from a pass, serialized; closures included only if `withClosures`. */
  const serialize = (p: Pass, pageIndex: number, withClosures: boolean): string => {
    const rows = p.pages.get(pageIndex)!;
    return (
      `{"at":${p.at},"counts":${JSON.stringify(p.counts)},"totals":${JSON.stringify(p.totals)},` +
      `"subscribers":${subscribers.size},"page":${JSON.stringify(rows)}` +
      (sessions !== null ? `,"sessions":${JSON.stringify(sessions)}` : '') +
      (withClosures ? `,"closures":${closuresNow()}` : '') +
      '}'
    );
  };

  /**
   * Writes one snapshot to one subscriber; a subscriber that is not draining skips this one (bounded
   * memory), and one that has not drained for stallTimeoutMs is ended (its place frees on 'close').
   */
  const send = (sub: Subscriber, p: Pass, cache: Map<string, string>): void => {
    if (sub.res.destroyed) return;
    if (sub.res.writableNeedDrain) {
      const now = Date.now();
      if (sub.stalledSince === null) sub.stalledSince = now;
      else if (now - sub.stalledSince >= stallTimeoutMs) sub.res.destroy();
      return;
    }
    sub.stalledSince = null;
    const pageIndex = clampPage(sub.page, p.totals.live, pageSize);
    const withClosures = sub.closuresVersion !== closures.version;
    const key = `${pageIndex}:${withClosures}`;
    let data = cache.get(key);
    if (data === undefined) cache.set(key, (data = serialize(p, p.pages.has(pageIndex) ? pageIndex : [...p.pages.keys()][0]!, withClosures)));
    sub.res.write(`data: ${data}\n\n`);
    if (withClosures) sub.closuresVersion = closures.version;
  };

  const tick = (): void => {
    if (subscribers.size === 0) return stopTimer();
    refreshSessions();
    try {
      last = pass(new Set([...subscribers].map((s) => s.page)));
      const cache = new Map<string, string>();
      for (const sub of subscribers) send(sub, last, cache);
    } catch (err) {
      // A bug here must never take the server down with it: report it and try again next tick.
      process.emitWarning(`ws-supervisor dashboard: snapshot failed: ${String(err)}`);
    }
  };

  const startTimer = (): void => {
    if (timer === null && !closed) timer = setInterval(tick, intervalMs);
  };
  const stopTimer = (): void => {
    if (timer !== null) clearInterval(timer);
    timer = null;
  };

  const subscribe = (req: IncomingMessage, res: ServerResponse, url: URL): void => {
    if (subscribers.size >= maxSubscribers) {
      res.writeHead(503, { 'Content-Type': 'text/plain; charset=utf-8', 'Retry-After': '5', 'Cache-Control': 'no-store' });
      res.end(`too many dashboard subscribers (limit ${maxSubscribers})\n`);
      return;
    }
    const sub: Subscriber = { res, page: Math.max(0, Math.floor(Number(url.searchParams.get('page'))) || 0), closuresVersion: -1, stalledSince: null };
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-store',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
    res.write(`retry: 2000\n\n`);
    subscribers.add(sub);
    const gone = (): void => {
      subscribers.delete(sub);
      if (subscribers.size === 0) stopTimer();
    };
    res.once('close', gone);
    req.socket.setNoDelay(true);
    // First snapshot at once: from the last pass if it is fresh and has this page, else a new pass
    // (unless one ran within MIN_PASS_GAP_MS: then the next tick serves this subscriber).
    const now = Date.now();
    const page = last ? clampPage(sub.page, last.totals.live, pageSize) : -1;
    if (last && now - last.at < MIN_PASS_GAP_MS && last.pages.has(page)) send(sub, last, new Map());
    else if (!last || now - last.at >= MIN_PASS_GAP_MS) {
      last = pass(new Set([...subscribers].map((s) => s.page)));
      send(sub, last, new Map());
    }
    startTimer();
  };

  const text = (res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void => {
    res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-store', ...headers });
    res.end(body);
  };

  const serveAsync = (res: ServerResponse, head: boolean, build: () => Promise<{ type: string; body: string; headers?: Record<string, string> }>): void => {
    build().then(
      ({ type, body, headers }) => {
        if (res.destroyed) return;
        res.writeHead(200, { 'Content-Type': type, 'Cache-Control': 'no-cache', 'Content-Length': Buffer.byteLength(body), ...headers });
        res.end(head ? undefined : body);
      },
      (err: unknown) => {
        if (!res.headersSent) text(res, 500, `dashboard failed: ${String(err)}\n`);
        else res.destroy();
      },
    );
  };

  const snapshot = (pageNumber = 0): DashboardSnapshot => {
    const p = pass([pageNumber]);
    const rows = p.pages.values().next().value!;
    return { at: p.at, counts: p.counts, totals: p.totals, page: rows, closures: closures.newestFirst(), subscribers: subscribers.size, sessions };
  };
  const detachedSessions = async (): Promise<{ detached: number; rows: DetachedSessionRow[] } | null> =>
    (await supervisor.sessions?.detachedRows(pageSize)) ?? null;

  return {
    basePath,
    get subscribers() {
      return subscribers.size;
    },
    get ticking() {
      return timer !== null;
    },
    snapshot,
    detachedSessions,
    ready: async () => {
      pageHtml();
    },
    handle(req, res) {
      const url = new URL(req.url ?? '/', 'http://dashboard.invalid');
      const path = url.pathname;
      if (path !== basePath && path !== `${basePath}/` && !path.startsWith(`${basePath}/`)) return false;
      if (closed) {
        text(res, 503, 'dashboard closed\n');
        return true;
      }
      const method = req.method ?? 'GET';
      if (method !== 'GET' && method !== 'HEAD') {
        text(res, 405, `${method} not allowed\n`, { Allow: 'GET, HEAD' });
        return true;
      }
      const head = method === 'HEAD';
      const sub = path === basePath || path === `${basePath}/` ? '' : path.slice(basePath.length);
      switch (sub) {
        case '':
          serveAsync(res, head, async () => {
            const p = pageHtml();
            return { type: 'text/html; charset=utf-8', body: p.html, headers: { 'Content-Security-Policy': p.csp } };
          });
          return true;
        case '/diagram.svg':
          serveAsync(res, head, async () => ({ type: 'image/svg+xml; charset=utf-8', body: CONNECTION_DIAGRAM_SVG }));
          return true;
        case '/session-diagram.svg':
          serveAsync(res, head, async () => ({ type: 'image/svg+xml; charset=utf-8', body: SESSION_DIAGRAM_SVG }));
          return true;
        case '/events':
          if (head) text(res, 200, '', { 'Content-Type': 'text/event-stream; charset=utf-8' });
          else subscribe(req, res, url);
          return true;
        default:
          text(res, 404, `not found: ${path}\n`);
          return true;
      }
    },
    close() {
      if (closed) return;
      closed = true;
      stopTimer();
      supervisor.off('connection', onConnection);
      supervisor.off('close', onClose);
      for (const sub of subscribers) sub.res.end();
      subscribers.clear();
    },
  };
}
