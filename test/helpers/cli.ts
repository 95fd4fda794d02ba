/**
 * Test helpers for the CLI: spawn `src/cli/main.ts` through tsx (in-process, so
 * signals reach the server itself), plain HTTP requests, Prometheus text
 * parsing, and a minimal raw WebSocket client over TCP for the frames a real
 * client library will not send (bad UTF-8, unmasked frames) and for peers
 * that misbehave (never answer a close frame, never read).
 *
 * Loopback only. Every spawned process is tracked and SIGKILLed at the latest
 * when the test process exits.
 *
 * Built for a busy 2-core laptop (docs/testing.md): at most one process per
 * core is *starting* at any moment (the rest wait for a slot), and the time a
 * process is given to start is derived from a startup measured on this
 * machine, now, rather than a constant.
 */
import { spawn, type ChildProcess, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { compiledEntry } from './compiled.ts';
import { pace } from './pace.ts';

/** The repository root (where `tsx` and `src/cli/main.ts` live). */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

const live = new Set<ChildProcessWithoutNullStreams>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

// ---------------------------------------------------------------------------
// How many processes start at once, and how long they may take

/**
 * Processes allowed to be starting at the same time: one per core. 29 CLI
 * processes started at once on 2 cores took 14–19 s each (0.55 s alone), so a
 * suite that starts them unbounded fails on a busy laptop. scripts/run-tests.mjs
 * runs up to one test file per core at once and hands them a directory
 * (START_SLOTS_DIR_ENV) in which the slots are shared across test processes,
 * so the bound holds for the whole suite; a file run alone bounds itself.
 */
export const START_SLOTS = Math.max(1, availableParallelism());
/** The environment variable naming the directory of the suite's shared start slots. */
export const START_SLOTS_DIR_ENV = 'WS_SUPERVISOR_TEST_START_SLOTS';

/** A counting semaphore: `acquire` resolves with a release function once a slot is free. */
class Slots {
  #free: number;
  readonly #waiting: Array<() => void> = [];
  constructor(n: number) {
    this.#free = n;
  }
  async acquire(): Promise<() => void> {
    if (this.#free > 0) this.#free--;
    else await new Promise<void>((resolve) => this.#waiting.push(resolve));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#waiting.shift();
      if (next) next();
      else this.#free++;
    };
  }
}

/**
 * The same bound across the test processes of one suite run: slot i is held
 * while the directory `dir/i` exists (mkdir is atomic), with the holder's pid
 * inside, so a slot of a process that died is taken back. Polled every 20 ms.
 */
class SharedSlots {
  constructor(
    readonly dir: string,
    readonly n: number,
  ) {}
  async acquire(): Promise<() => void> {
    for (;;) {
      for (let i = 0; i < this.n; i++) {
        const slot = join(this.dir, String(i));
        if (this.tryTake(slot)) {
          let released = false;
          return () => {
            if (released) return;
            released = true;
            rmSync(slot, { recursive: true, force: true });
          };
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  private tryTake(slot: string): boolean {
    try {
      mkdirSync(slot);
    } catch {
      // Held: by a live process, or left by a dead one (then free it for the next poll).
      try {
        const pid = Number(readFileSync(join(slot, 'pid'), 'utf8'));
        if (pid > 0 && !alive(pid)) rmSync(slot, { recursive: true, force: true });
      } catch {
        // being created or removed right now
      }
      return false;
    }
    writeFileSync(join(slot, 'pid'), String(process.pid));
    return true;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const sharedDir = process.env[START_SLOTS_DIR_ENV];
const startSlots: { acquire(): Promise<() => void> } = sharedDir ? new SharedSlots(sharedDir, START_SLOTS) : new Slots(START_SLOTS);

/**
 * Holds a start slot until `child` has started: its first output (the CLI's
 * first line comes after every import is loaded) or its exit. Use it for any
 * process a test spawns (CLI, fixture, third-party client).
 */
export async function boundedStart<C extends ChildProcess>(start: () => C): Promise<C> {
  const release = await startSlots.acquire();
  let child: C;
  try {
    child = start();
  } catch (err) {
    release();
    throw err;
  }
  child.stdout?.once('data', release);
  child.stderr?.once('data', release);
  child.once('close', release);
  child.once('error', release);
  return child;
}

/**
 * What a start of the CLI through tsx (`node --import tsx src/cli/main.ts --help`) took on an idle
 * 2-core machine (measured: 0.55 s): the reference the start budgets were set against.
 */
const IDLE_STARTUP_MS = 600;
/**
 * What the start `budgets()` times, `node <the CLI's bundle> --help`, takes on the same idle machine:
 * the reference for `slowdown`. Both starts back to back, alternating (2026-12-06): 702 ms and 289 ms
 * at load ~0, medians 1,258 and 470 ms at load 2-3, 1,344 and 554 ms at load ~5: the bundle takes
 * 1/2.4-1/2.7 of the tsx start's wall time, so 600 / 2.4 = 250 ms. Since its packages are inlined
 * (test/helpers/compiled.ts, PACKAGES_INLINED) the bundle starts in 0.56-0.67 of that wall time
 * (medians of 15 alternating pairs each, load 7-9: 626 → 417 ms, 602 → 335 ms), so 250 × 0.6: the
 * slowdown reads as before, or a little higher (more generous budgets).
 */
const IDLE_BUNDLED_STARTUP_MS = 150;
/**
 * The least time a process is given to start. A budget exists to end a test
 * that hangs, not to measure speed: generous, so that only a real hang ends it.
 */
const START_FLOOR_MS = 15_000;
/** A start may take this many tsx startups at the measured slowdown: up to START_SLOTS start together, on a machine that is busy with more. */
const STARTUPS_PER_START = 12;

export interface Budgets {
  /** One `node <the CLI's bundle> --help` on this machine, measured when first asked for (ms). */
  startupMs: number;
  /** measured startup / its idle reference, at least 1: how much slower than an idle machine this one is now. */
  slowdown: number;
  /** How long a spawned CLI may take to print its first line or exit (ms): max(15 s, 12 tsx startups at this slowdown). */
  startMs: number;
  /** `ms` of an idle machine, scaled by the slowdown: for test timeouts and timing margins. */
  scaled(ms: number): number;
}

let measured: Promise<Budgets> | undefined;

/**
 * Budgets derived from one CLI startup measured now (memoised per test
 * process). Test files that need them for their own timeouts take them with a
 * top-level `await budgets()`.
 *
 * The start timed is the CLI's bundle (test/helpers/compiled.ts: what spawnCli
 * starts, shared by the files of a run), not a tsx start: 0.39-0.44 s of CPU
 * instead of 1.06-1.26 s (medians of 7-9 starts, load 2-5), in each of the 16
 * files that start the CLI. Its slowdown reads as the tsx start's did
 * (IDLE_BUNDLED_STARTUP_MS: at load ~5, 554 / 250 = 2.2 against 1,344 / 600 =
 * 2.24), and `startMs` stays 12 tsx startups at that slowdown, so the
 * budgets are the ones the tests were tuned with.
 */
export function budgets(): Promise<Budgets> {
  measured ??= (async () => {
    const main = compiledEntry('src/cli/main.ts');
    const release = await startSlots.acquire();
    const t0 = performance.now();
    try {
      await new Promise<void>((resolve, reject) => {
        const child = spawn(process.execPath, [main, '--help'], {
          cwd: REPO_ROOT,
          env: { ...process.env, NODE_OPTIONS: '' },
          stdio: 'ignore',
        });
        child.once('error', reject);
        child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`ws-supervisor --help exited ${code}`))));
      });
    } finally {
      release();
    }
    const startupMs = Math.round(performance.now() - t0);
    const slowdown = Math.max(1, startupMs / IDLE_BUNDLED_STARTUP_MS);
    return {
      startupMs,
      slowdown,
      startMs: Math.max(START_FLOOR_MS, Math.round(STARTUPS_PER_START * IDLE_STARTUP_MS * slowdown)),
      scaled: (ms) => Math.round(ms * slowdown),
    };
  })();
  return measured;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface CliProcess {
  child: ChildProcessWithoutNullStreams;
  /** Everything written so far. */
  stdout(): string;
  stderr(): string;
  /** Resolves when the process has exited. */
  exited: Promise<Exit>;
  /** Resolves once stdout contains `text` (rejects after timeoutMs or if the process exits first). */
  waitForStdout(text: string | RegExp, timeoutMs?: number): Promise<string>;
  /** SIGKILL if still running (idempotent). */
  kill(): void;
}

/**
 * Spawns `src/cli/main.ts ...args` in the repo root, bundled once per test
 * process (test/helpers/compiled.ts: a third of tsx's start CPU), once a
 * start slot is free (`boundedStart`). `waitForStdout` defaults to the start budget.
 */
export async function spawnCli(args: string[]): Promise<CliProcess> {
  const { startMs } = await budgets();
  const main = compiledEntry('src/cli/main.ts');
  const child = await boundedStart(() =>
    spawn(process.execPath, [main, ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, NODE_OPTIONS: '' },
      stdio: ['pipe', 'pipe', 'pipe'],
    }),
  );
  live.add(child);
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
  // 'close', not 'exit': 'exit' can come before the last stdout/stderr chunks
  // are read, and a test would see an empty stderr (seen under CI load).
  const exited = new Promise<Exit>((resolve) => {
    child.once('close', (code, signal) => {
      live.delete(child);
      resolve({ code, signal });
    });
  });
  let done = false;
  void exited.then(() => (done = true));
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitForStdout(text, timeoutMs = startMs) {
      const match = (): string | null => {
        if (typeof text === 'string') return out.includes(text) ? text : null;
        const m = text.exec(out);
        return m ? m[0] : null;
      };
      return new Promise<string>((resolve, reject) => {
        const check = (): void => {
          const m = match();
          if (m !== null) {
            cleanup();
            resolve(m);
          }
        };
        const onExit = (): void => {
          cleanup();
          reject(new Error(`CLI exited before printing ${String(text)}\nstdout: ${out}\nstderr: ${err}`));
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${String(text)}\nstdout: ${out}\nstderr: ${err}`));
        }, timeoutMs);
        const cleanup = (): void => {
          clearTimeout(timer);
          child.stdout.off('data', check);
          child.off('exit', onExit);
        };
        child.stdout.on('data', check);
        child.once('exit', onExit);
        check();
        if (done) onExit();
      });
    },
    kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

/** Runs the CLI to completion (SIGKILLed after timeoutMs, by default the start budget). */
export async function runCli(args: string[], timeoutMs?: number): Promise<Exit & { stdout: string; stderr: string; timedOut: boolean }> {
  timeoutMs ??= (await budgets()).startMs;
  const p = await spawnCli(args);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    p.kill();
  }, timeoutMs);
  const exit = await p.exited;
  clearTimeout(timer);
  return { ...exit, stdout: p.stdout(), stderr: p.stderr(), timedOut };
}

export interface CliServer extends CliProcess {
  port: number;
  /** http://127.0.0.1:PORT */
  base: string;
  /** ws://127.0.0.1:PORT/server */
  wsUrl: string;
}

const LISTENING = /ws-supervisor: listening on http:\/\/127\.0\.0\.1:(\d+)\/ /;

/**
 * Spawns `ws-supervisor server --address 127.0.0.1:0 ...flags` and waits for
 * its "listening" line (by default for the start budget). Pass the test
 * context to have it killed in `t.after`.
 */
export async function startCliServer(
  flags: string[] = [],
  t?: { after(fn: () => void | Promise<void>): void },
  timeoutMs?: number,
): Promise<CliServer> {
  timeoutMs ??= (await budgets()).startMs;
  const p = await spawnCli(['server', '--address', '127.0.0.1:0', ...flags]);
  t?.after(() => p.kill());
  try {
    const line = await p.waitForStdout(LISTENING, timeoutMs);
    const port = Number(LISTENING.exec(line)![1]);
    return { ...p, port, base: `http://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}/server` };
  } catch (err) {
    p.kill();
    throw err;
  }
}

// ---------------------------------------------------------------------------
// HTTP

export interface HttpResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/**
 * A GET without keep-alive (so a draining server never waits on us). The
 * timeouts of this section are an idle machine's, scaled by the pace measured
 * in this process (test/helpers/pace.ts): they end hangs, they measure nothing.
 */
export function httpGet(url: string, headers: Record<string, string> = {}, timeoutMs = 5_000): Promise<HttpResult> {
  timeoutMs = pace.scaled(timeoutMs);
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, headers: { Connection: 'close', ...headers } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (s: string) => (body += s));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`GET ${url}: no response within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/**
 * The value of one Prometheus sample, e.g. `metric(text, 'ws_supervisor_closes_total', { code: '1000' })`;
 * 0 when the series is absent (counters with labels appear on first use).
 */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  const want = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .sort()
    .join(',');
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = (m[2] ?? '')
      .split(',')
      .filter(Boolean)
      .sort()
      .join(',');
    if (got === want) return Number(m[3]);
  }
  return 0;
}

export async function metricsOf(base: string): Promise<string> {
  const r = await httpGet(`${base}/metrics`);
  if (r.status !== 200) throw new Error(`GET /metrics: ${r.status}`);
  return r.body;
}

/** Opens a `ws` client; resolves with the HTTP status: 101 when it opened (the socket is then closed), else the refusal's status. */
export function upgradeStatus(url: string, options: WebSocket.ClientOptions = {}, timeoutMs = 5_000): Promise<{ status: number; body: string }> {
  timeoutMs = pace.scaled(timeoutMs);
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, options);
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`upgrade to ${url}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    ws.on('open', () => {
      clearTimeout(timer);
      ws.close(1000);
      resolve({ status: 101, body: '' });
    });
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (s: string) => (body += s));
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, body });
      });
      res.on('error', () => undefined);
    });
    ws.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

// ---------------------------------------------------------------------------
// Raw WebSocket over TCP (RFC 6455 framing by hand)

export interface Frame {
  fin: boolean;
  opcode: number;
  payload: Buffer;
}

export const OP = { CONT: 0x0, TEXT: 0x1, BINARY: 0x2, CLOSE: 0x8, PING: 0x9, PONG: 0xa } as const;

/** Encodes one frame; client frames are masked unless `mask: false`. */
export function encodeFrame(opcode: number, payload: Buffer, { fin = true, mask = true }: { fin?: boolean; mask?: boolean } = {}): Buffer {
  const len = payload.length;
  const lenBytes = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const header = Buffer.alloc(2 + lenBytes + (mask ? 4 : 0));
  header[0] = (fin ? 0x80 : 0) | opcode;
  header[1] = (mask ? 0x80 : 0) | (lenBytes === 0 ? len : lenBytes === 2 ? 126 : 127);
  if (lenBytes === 2) header.writeUInt16BE(len, 2);
  if (lenBytes === 8) header.writeBigUInt64BE(BigInt(len), 2);
  if (!mask) return Buffer.concat([header, payload]);
  const key = randomBytes(4);
  key.copy(header, 2 + lenBytes);
  const masked = Buffer.alloc(len);
  for (let i = 0; i < len; i++) masked[i] = payload[i]! ^ key[i & 3]!;
  return Buffer.concat([header, masked]);
}

/**
 * A hand-rolled client: handshake, then frames in and out. It never answers
 * anything by itself (no pong, no close echo) unless told to.
 */
export class RawWsClient {
  readonly frames: Frame[] = [];
  /** Resolves when the TCP connection is closed (by either side). */
  readonly ended: Promise<void>;
  private buffer: Buffer = Buffer.alloc(0);
  private waiters: Array<() => void> = [];

  private constructor(readonly socket: net.Socket) {
    this.ended = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
      this.parse();
    });
    socket.on('close', () => this.wake());
  }

  /** Connects and completes the opening handshake; rejects on a non-101 answer. */
  static connect(port: number, path = '/server', headers: Record<string, string> = {}, timeoutMs = 5_000): Promise<RawWsClient> {
    timeoutMs = pace.scaled(timeoutMs);
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error('raw handshake timed out'));
      }, timeoutMs);
      let head = Buffer.alloc(0);
      const onData = (chunk: Buffer): void => {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf('\r\n\r\n');
        if (end === -1) return;
        socket.off('data', onData);
        clearTimeout(timer);
        const statusLine = head.subarray(0, head.indexOf('\r\n')).toString('latin1');
        if (!/^HTTP\/1\.1 101 /.test(statusLine)) {
          socket.destroy();
          reject(new Error(`raw handshake refused: ${head.toString('latin1')}`));
          return;
        }
        const client = new RawWsClient(socket);
        const rest = head.subarray(end + 4);
        if (rest.length > 0) socket.emit('data', rest);
        resolve(client);
      };
      socket.on('data', onData);
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      socket.once('connect', () => {
        const extra = Object.entries(headers)
          .map(([k, v]) => `${k}: ${v}\r\n`)
          .join('');
        socket.write(
          `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
            `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`,
        );
      });
    });
  }

  send(opcode: number, payload: Buffer | string, options?: { fin?: boolean; mask?: boolean }): void {
    this.socket.write(encodeFrame(opcode, typeof payload === 'string' ? Buffer.from(payload) : payload, options));
  }

  /** Sends a close frame with `code`. */
  sendClose(code = 1000, reason = ''): void {
    const payload = Buffer.alloc(2 + Buffer.byteLength(reason));
    payload.writeUInt16BE(code, 0);
    payload.write(reason, 2);
    this.send(OP.CLOSE, payload);
  }

  /** The first frame with `opcode` (waits for it); rejects after timeoutMs or if the connection ends first. */
  async nextFrame(opcode: number, timeoutMs = 5_000): Promise<Frame> {
    timeoutMs = pace.scaled(timeoutMs);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.frames.findIndex((f) => f.opcode === opcode);
      if (i !== -1) return this.frames.splice(i, 1)[0]!;
      if (this.socket.destroyed) throw new Error(`connection ended without a frame of opcode ${opcode}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no frame of opcode ${opcode} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Waits for the server's close frame and decodes it (code 1005 when it has no payload). */
  async closeFrame(timeoutMs = 5_000): Promise<{ code: number; reason: string }> {
    const f = await this.nextFrame(OP.CLOSE, timeoutMs);
    if (f.payload.length < 2) return { code: 1005, reason: '' };
    return { code: f.payload.readUInt16BE(0), reason: f.payload.subarray(2).toString() };
  }

  destroy(): void {
    this.socket.destroy();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }

  private parse(): void {
    let got = false;
    for (;;) {
      const b = this.buffer;
      if (b.length < 2) break;
      const masked = (b[1]! & 0x80) !== 0;
      let len = b[1]! & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) break;
        len = b.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (b.length < 10) break;
        len = Number(b.readBigUInt64BE(2));
        off = 10;
      }
      const keyOff = off;
      if (masked) off += 4;
      if (b.length < off + len) break;
      let payload = b.subarray(off, off + len);
      if (masked) {
        const key = b.subarray(keyOff, keyOff + 4);
        payload = Buffer.from(payload.map((x, i) => x ^ key[i & 3]!));
      }
      this.frames.push({ fin: (b[0]! & 0x80) !== 0, opcode: b[0]! & 0x0f, payload: Buffer.from(payload) });
      this.buffer = b.subarray(off + len);
      got = true;
    }
    if (got) this.wake();
  }
}
