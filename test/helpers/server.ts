/** Shared test fixtures: a supervisor on a loopback http server, clients, waiting. */
import fs from 'node:fs';
import http from 'node:http';
import { syncBuiltinESMExports } from 'node:module';
import type { AddressInfo } from 'node:net';
import WebSocket, { type ClientOptions } from 'ws';
import { createSupervisor, type Supervisor, type SupervisorOptions } from '../../src/index.ts';
import { pace } from './pace.ts';

export interface TestServer<Auth = unknown> {
  server: http.Server;
  supervisor: Supervisor<Auth>;
  port: number;
  /** ws://127.0.0.1:PORT + path */
  url: string;
  /** Drains the supervisor and closes the http server (idempotent). */
  close(): Promise<void>;
}

/** Starts a supervisor embedded in a fresh http server on 127.0.0.1 (random port). */
export async function startSupervisor<Auth = unknown>(
  options: Omit<SupervisorOptions<Auth>, 'server'> = {},
  onRequest?: http.RequestListener,
): Promise<TestServer<Auth>> {
  const server = http.createServer(onRequest);
  const supervisor = createSupervisor<Auth>({ path: '/server', ...options, server });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  let closing: Promise<void> | null = null;
  return {
    server,
    supervisor,
    port,
    url: `ws://127.0.0.1:${port}${options.path ?? '/server'}`,
    close() {
      closing ??= (async () => {
        await supervisor.close();
        supervisor.detach();
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      })();
      return closing;
    },
  };
}

/** Opens a `ws` client and waits for it to be open. */
export async function openClient(url: string, options: ClientOptions = {}, protocols?: string | string[]): Promise<WebSocket> {
  const ws = new WebSocket(url, protocols, options);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return ws;
}

/** Resolves with the client's close code and reason. */
export function closeOf(ws: WebSocket): Promise<{ code: number; reason: string }> {
  if (ws.readyState === WebSocket.CLOSED) return Promise.resolve({ code: -1, reason: 'already closed' });
  return new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
}

/** The next message the client receives, as text. */
export function nextMessage(ws: WebSocket): Promise<string> {
  return new Promise((resolve) => ws.once('message', (data) => resolve(data.toString())));
}

/**
 * Polls `condition` every 5 ms until true, or throws after `timeoutMs` of an
 * idle machine, scaled by this process's measured pace (test/helpers/pace.ts):
 * the timeout ends a hang, it does not measure speed.
 */
export async function waitFor(condition: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const budget = pace.scaled(timeoutMs);
  const deadline = Date.now() + budget;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${budget} ms (${timeoutMs} ms × pace ${pace.factor.toFixed(1)}) waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Runs `check` (assertions, possibly async) until it passes, every 50 ms, for
 * at most `timeoutMs` of an idle machine scaled by the measured pace; then
 * throws its last error. For "after the next heartbeat, X holds" where the
 * heartbeat's time is not observable: instead of a fixed wait that assumes an
 * idle machine.
 */
export async function eventually(check: () => unknown, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + pace.scaled(timeoutMs);
  for (;;) {
    try {
      await check();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
    await delay(50);
  }
}

/**
 * `p`'s value, or null if it takes longer than `ms`. The timer is cleared as
 * soon as `p` settles: a pending `delay()` in a race would keep the test process
 * alive for its whole length after the test is over.
 */
export async function within<T>(p: Promise<T>, ms: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Counts a server socket's writes: `count` every write (one system call each when the OS takes it), `stream` those
 * through its Writable (`_write` and `_writev` calls), `fd` the frames the server's writer put on its descriptor
 * with `fs.writeSync` (src/server/ws-internals.ts, item 7: the heartbeat's ping, the first frame of a turn).
 */
export function countWrites(socket: unknown): { readonly count: number; readonly stream: number; readonly fd: number } {
  const s = socket as { _write: (...a: unknown[]) => void; _writev?: (...a: unknown[]) => void; _handle?: { fd?: number } | null };
  const counter = {
    stream: 0,
    fd: 0,
    get count(): number {
      return this.stream + this.fd;
    },
  };
  const write = s._write;
  s._write = function (this: unknown, ...a: unknown[]) {
    counter.stream++;
    return write.apply(this, a);
  };
  const writev = s._writev;
  if (writev) {
    s._writev = function (this: unknown, ...a: unknown[]) {
      counter.stream++;
      return writev.apply(this, a);
    };
  }
  const fd = s._handle?.fd;
  if (typeof fd === 'number' && fd >= 0) fdCounters.set(fd, counter);
  countFdWrites();
  return counter;
}

/** countWrites' counters by descriptor (a descriptor closed and reused later counts for the last socket asked about). */
const fdCounters = new Map<number, { fd: number }>();
let fdWritesCounted = false;
/**
 * `fs.writeSync` wrapped once for the process: the writer calls it through its ESM import of `node:fs`, which
 * `syncBuiltinESMExports` points at the wrapper.
 */
function countFdWrites(): void {
  if (fdWritesCounted) return;
  fdWritesCounted = true;
  const original = fs.writeSync;
  fs.writeSync = function (this: unknown, fd: number, ...rest: unknown[]) {
    const counter = fdCounters.get(fd);
    if (counter !== undefined) counter.fd++;
    return (original as (...a: unknown[]) => number).call(this, fd, ...rest);
  } as typeof fs.writeSync;
  syncBuiltinESMExports();
}

/**
 * Runs `sample` once per event-loop iteration (a setImmediate that queues
 * itself: it runs exactly once in every check phase) until stopped.
 */
export function everyIteration(sample: () => void): () => void {
  let on = true;
  const step = (): void => {
    if (!on) return;
    sample();
    setImmediate(step);
  };
  setImmediate(step);
  return () => void (on = false);
}
