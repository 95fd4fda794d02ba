/**
 * Shared benchmark harness (the performance suite). Every scenario in
 * bench/scenarios/ uses it, so its API is kept stable:
 *
 *   - startServer(system, options) starts `bench/servers.ts <system>` in its own
 *     process, pinned to CPU 0 (taskset, when present), with `--expose-gc`;
 *     the returned ServerHandle talks to it over stdin/stdout, one line each way:
 *       stats → server CPU time, RSS, heap, active handles/timers, connections
 *       gc    → forced full GC (then stats)
 *   - pinSelf() pins this (load-generating) process to CPU 1;
 *   - connectClient / connectMany open load connections for any system
 *     (plain `ws` for raw and supervisor, socket.io-client for socketio);
 *   - procStats(pid) reads /proc/<pid>/stat and /proc/<pid>/status directly
 *     (for a process that cannot answer on stdin);
 *   - percentile, median, selfCpuUs;
 *   - Result / writeResult(scenario, result) → bench/results/<scenario>.json.
 *
 * Measuring on a shared 2-core machine: absolute numbers drifted 25–30%
 * between runs while ratios held within ~5%. Alternate systems within a round (see
 * roundOrder), run ≥ 3 rounds, report medians and ratios vs raw `ws`.
 *
 * Integrity first: a scenario that saw a lost, duplicated or mismatched
 * message must set integrity.ok = false; the report shows it as FAILED,
 * never as a speed.
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { compiledEntry } from './compile.ts';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { io as ioClient, type Socket as IoSocket } from 'socket.io-client';

export type System = 'supervisor' | 'raw' | 'socketio';
export const SYSTEMS: readonly System[] = ['supervisor', 'raw', 'socketio'];

export const BENCH_DIR = fileURLToPath(new URL('..', import.meta.url));
export const REPO_DIR = join(BENCH_DIR, '..');
export const RESULTS_DIR = join(BENCH_DIR, 'results');

// ---------------------------------------------------------------------------
// CPU pinning

/** True when `taskset` can pin to CPUs 0 and 1 here. */
export const hasTaskset: boolean =
  spawnSync('taskset', ['-c', '0', 'true']).status === 0 && spawnSync('taskset', ['-c', '1', 'true']).status === 0;

/** Pins this process (the load generator) to `cpu` (default 1). No-op without taskset. */
export function pinSelf(cpu = 1): void {
  if (hasTaskset) spawnSync('taskset', ['-acp', String(cpu), String(process.pid)]);
}

/** Prefix for a command to run pinned to `cpu` (empty without taskset). */
export function pinned(cpu: number, cmd: string[]): string[] {
  return hasTaskset ? ['taskset', '-c', String(cpu), ...cmd] : cmd;
}

// ---------------------------------------------------------------------------
// Server processes

export interface ServerOptions {
  /** Port; 0 (default) lets the server pick one and report it. */
  port?: number;
  /** Heartbeat ping interval, ms (all systems). Default 25 000. */
  pingInterval?: number;
  /** Pong timeout, ms: supervisor `timing.pongTimeout`, Socket.IO `pingTimeout`; raw ws has none (it terminates on the next tick without a pong). Default 10 000. */
  pongTimeout?: number;
  /** CPU the server is pinned to. Default 0. */
  cpu?: number;
  /** Extra environment. NODE_ENV is production unless given. */
  env?: Record<string, string>;
  /** Supervisor only: sessions on with this store, 'memory' or a redis:// URL (bench/lib/systems.ts). */
  sessions?: string;
  /** Supervisor with sessions: the resume window, ms. */
  resumeWindow?: number;
  /**
   * Print V8's line per garbage collection (`--trace-gc-nvp`): the lines are
   * kept in `gcTrace` (they start with `[`, never an answer of the server's).
   */
  traceGc?: boolean;
}

export interface ServerStats {
  /** user + system CPU time of the server process so far, µs. */
  cpuUs: number;
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  /** process.getActiveResourcesInfo() counted by type (TCPSocketWrap, Timeout, …). */
  resources: Record<string, number>;
  /** Open connections as the server counts them. */
  connections: number;
  /** With BENCH_STALLS=1 in the server's environment: since the previous stats line, the longest event-loop stall beyond 10 ms and the longest GC pause (and GC total), ms. */
  stall?: { loopMaxMs: number; gcMaxMs: number; gcMs: number };
  /** With sessions on: sessions whose connection is gone, waiting for their client. */
  sessions?: { detached: number; storeOps?: Record<string, number> };
}

export interface ServerHandle {
  system: System;
  port: number;
  pid: number;
  /** With `traceGc`: V8's `--trace-gc-nvp` lines so far, in order. */
  gcTrace: string[];
  child: ChildProcessWithoutNullStreams;
  /** WebSocket URL of the system's endpoint (for socketio: the http origin). */
  url: string;
  stats(): Promise<ServerStats>;
  /** Forces a full GC in the server (twice), then returns its stats. */
  gc(): Promise<ServerStats>;
  /** Sends a raw command line and resolves with the server's one-line answer. */
  command(line: string): Promise<string>;
  stop(): Promise<void>;
}

/** Starts `bench/servers.ts <system>` pinned to CPU 0; resolves once it listens. */
export async function startServer(system: System, options: ServerOptions = {}): Promise<ServerHandle> {
  const args = [
    '--expose-gc',
    ...(options.traceGc ? ['--trace-gc-nvp'] : []),
    compiledEntry('servers.ts'),
    system,
    String(options.port ?? 0),
    '--ping-interval',
    String(options.pingInterval ?? 25_000),
    '--pong-timeout',
    String(options.pongTimeout ?? 10_000),
    ...(options.sessions !== undefined ? ['--sessions', options.sessions] : []),
    ...(options.resumeWindow !== undefined ? ['--resume-window', String(options.resumeWindow)] : []),
  ];
  const cmd = pinned(options.cpu ?? 0, [process.execPath, ...args]);
  const child = spawn(cmd[0]!, cmd.slice(1), {
    cwd: REPO_DIR,
    env: { ...process.env, NODE_ENV: 'production', ...options.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (stderr.length > 20_000) stderr = stderr.slice(-10_000);
  });
  const lines = createInterface({ input: child.stdout });
  const waiting: Array<(line: string) => void> = [];
  let exited = false;
  let stopping = false;
  const ready = new Promise<number>((resolve, reject) => {
    const onExit = (code: number | null): void => reject(new Error(`server ${system} exited ${code} before ready: ${stderr.trim()}`));
    child.once('exit', onExit);
    waiting.push((line) => {
      child.off('exit', onExit);
      const m = /^ready (\d+)/.exec(line);
      if (m) resolve(Number(m[1]));
      else reject(new Error(`server ${system}: expected "ready <port>", got ${line}`));
    });
  });
  const gcTrace: string[] = [];
  lines.on('line', (line) => {
    if (options.traceGc && line.startsWith('[')) {
      gcTrace.push(line);
      return;
    }
    const w = waiting.shift();
    if (w) w(line);
  });
  child.once('exit', (code, signal) => {
    exited = true;
    if (process.env.BENCH_DEBUG && !stopping) console.error(`server ${system} exited (${code ?? signal}): ${stderr.trim()}`);
    for (const w of waiting.splice(0)) w('exited');
  });
  const port = await ready;
  const command = (line: string): Promise<string> =>
    new Promise((resolve, reject) => {
      if (exited) return reject(new Error(`server ${system} has exited: ${stderr.trim()}`));
      waiting.push((answer) => (answer === 'exited' ? reject(new Error(`server ${system} exited: ${stderr.trim()}`)) : resolve(answer)));
      child.stdin.write(`${line}\n`);
    });
  const parseStats = (answer: string): ServerStats => {
    const m = /^stats (.*)$/.exec(answer);
    if (!m) throw new Error(`server ${system}: expected "stats {…}", got ${answer}`);
    return JSON.parse(m[1]!) as ServerStats;
  };
  return {
    system,
    port,
    pid: child.pid!,
    gcTrace,
    child,
    url: system === 'socketio' ? `http://127.0.0.1:${port}` : `ws://127.0.0.1:${port}/server`,
    command,
    stats: async () => parseStats(await command('stats')),
    gc: async () => parseStats(await command('gc')),
    async stop() {
      if (exited) return;
      stopping = true;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await gone;
    },
  };
}

/** CPU time (µs) and RSS (bytes) of any local process, from /proc. */
export function procStats(pid: number): { cpuUs: number; rss: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  const hz = 100; // USER_HZ is 100 on Linux
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
  return { cpuUs: (ticks * 1_000_000) / hz, rss: rssKb * 1024 };
}

/** CPU time (user + system, µs) of this process. */
export function selfCpuUs(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

// ---------------------------------------------------------------------------
// Load clients

/** One load connection, whatever the system. Text frames only (the JSON protocol). */
export interface BenchClient {
  send(text: string): void;
  /** Replaces the message handler. */
  onMessage(handler: (text: string) => void): void;
  /** Called once when the connection closes for any reason. */
  onClose(handler: () => void): void;
  close(): void;
  /** Immediate teardown (no close handshake). */
  terminate(): void;
  /** The underlying `ws` client (raw, supervisor) or socket.io-client Socket (socketio). */
  raw: WebSocket | IoSocket;
}

export interface ClientOptions {
  /** `ws` option: answer pings automatically (default true). false makes a dead peer for detection tests. */
  autoPong?: boolean;
}

/** Opens one client to `server` (or a URL + system) and resolves once open. */
export function connectClient(server: Pick<ServerHandle, 'system' | 'url'>, options: ClientOptions = {}): Promise<BenchClient> {
  if (server.system === 'socketio') {
    const socket = ioClient(server.url, { transports: ['websocket'], forceNew: true, reconnection: false, timeout: 60_000 });
    let handler: (text: string) => void = () => undefined;
    socket.on('message', (text: string) => handler(text));
    const client: BenchClient = {
      send: (text) => void socket.emit('message', text),
      onMessage: (h) => void (handler = h),
      onClose: (h) => void socket.once('disconnect', () => h()),
      close: () => void socket.disconnect(),
      terminate: () => {
        socket.io.engine?.close();
        socket.disconnect();
      },
      raw: socket,
    };
    return new Promise((resolve, reject) => {
      socket.once('connect', () => resolve(client));
      socket.once('connect_error', reject);
    });
  }
  const ws = new WebSocket(server.url, { perMessageDeflate: false, autoPong: options.autoPong ?? true });
  let handler: (text: string) => void = () => undefined;
  ws.on('message', (data: Buffer) => handler(data.toString()));
  ws.on('error', () => undefined);
  const client: BenchClient = {
    send: (text) => ws.send(text),
    onMessage: (h) => void (handler = h),
    onClose: (h) => void ws.once('close', () => h()),
    close: () => ws.close(),
    terminate: () => ws.terminate(),
    raw: ws,
  };
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(client));
    ws.once('error', reject);
  });
}

/** Opens `n` clients, `batch` handshakes at a time. */
export async function connectMany(
  server: Pick<ServerHandle, 'system' | 'url'>,
  n: number,
  options: ClientOptions & { batch?: number } = {},
): Promise<BenchClient[]> {
  const batch = options.batch ?? 200;
  const clients: BenchClient[] = [];
  for (let i = 0; i < n; i += batch) {
    clients.push(...(await Promise.all(Array.from({ length: Math.min(batch, n - i) }, () => connectClient(server, options)))));
  }
  return clients;
}

/** Terminates every client and waits a tick for the sockets to go. */
export async function closeAll(clients: BenchClient[]): Promise<void> {
  for (const c of clients) c.terminate();
  await sleep(50);
}

/** Polls `server.stats()` until it reports `n` connections (or throws after `timeoutMs`). */
export async function waitForConnections(server: ServerHandle, n: number, timeoutMs = 30_000): Promise<ServerStats> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await server.stats();
    if (s.connections === n) return s;
    if (Date.now() > deadline) throw new Error(`server ${server.system}: ${s.connections} connections, expected ${n}`);
    await sleep(100);
  }
}

// ---------------------------------------------------------------------------
// Statistics

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Nearest-rank percentile, p in [0, 100]. NaN for an empty list. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

/** Median (mean of the two middle values for an even count). NaN for an empty list. */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Systems in alternating order: round 0 as given, round 1 reversed, … (cancels drift). */
export function roundOrder<T>(systems: readonly T[], round: number): T[] {
  return round % 2 === 0 ? [...systems] : [...systems].reverse();
}

// ---------------------------------------------------------------------------
// Results

export interface Row {
  system: string;
  metric: string;
  unit: string;
  values: number[];
  median: number;
}

export interface Ratio {
  metric: string;
  system: string;
  /** The baseline system: raw ws in most scenarios; e.g. 'sessions off' in the sessions scenario. */
  vs: string;
  ratio: number;
  /** ws-supervisor's target, e.g. "<= 1.1" or ">= 0.9". */
  target?: string;
  met?: boolean;
}

export interface Check {
  metric: string;
  system: string;
  value: number;
  unit: string;
  target: string;
  met: boolean;
}

export interface Result {
  scenario: string;
  date: string;
  /** loadAverage: the 1-minute load average when the result was written (a shared machine shows it: > cpus × 1.5 is labelled "measured under load"). */
  machine: { cpus: number; node: string; loadAverage?: number };
  rounds: number;
  rows: Row[];
  ratios: Ratio[];
  integrity: { ok: boolean; details: string };
  /**
   * Absolute targets that are not ratios vs raw (e.g. heartbeat "< 25% of a
   * core", detection "<= ping interval + pong timeout + 50 ms"): the report
   * lists them with the ratios.
   */
  checks?: Check[];
  /** Free-form remarks (e.g. "Socket.IO client saturated the load core"). */
  notes?: string[];
  /** Scenario parameters (connections, seconds, quick, …). */
  params?: Record<string, unknown>;
}

/** Collects per-round values and builds rows / ratios. */
export class Recorder {
  private readonly rows = new Map<string, { system: string; metric: string; unit: string; values: number[] }>();

  add(system: string, metric: string, unit: string, value: number): void {
    const key = `${system}\u0000${metric}`;
    let row = this.rows.get(key);
    if (!row) this.rows.set(key, (row = { system, metric, unit, values: [] }));
    row.values.push(value);
  }

  toRows(): Row[] {
    return [...this.rows.values()].map((r) => ({ ...r, median: median(r.values) }));
  }

  /** median(system) / median(vs) for `metric` (vs: raw unless given), with an optional target like "<= 1.1". */
  ratio(metric: string, system: string, target?: string, vs = 'raw'): Ratio | null {
    const a = this.rows.get(`${system}\u0000${metric}`);
    const b = this.rows.get(`${vs}\u0000${metric}`);
    if (!a || !b) return null;
    const ratio = median(a.values) / median(b.values);
    const r: Ratio = { metric, system, vs, ratio };
    if (target !== undefined) {
      r.target = target;
      r.met = meetsTarget(ratio, target);
    }
    return r;
  }

  /**
   * Every system but raw against raw, for each metric. A metric given as
   * [metric, target] carries ws-supervisor's target
   * (the others are shown for comparison).
   */
  ratiosVsRaw(systems: readonly string[], metrics: ReadonlyArray<string | readonly [string, string | undefined]>): Ratio[] {
    const out: Ratio[] = [];
    for (const system of systems.filter((s) => s !== 'raw')) {
      for (const m of metrics) {
        const [metric, target] = typeof m === 'string' ? [m, undefined] : m;
        const r = this.ratio(metric, system, system === 'supervisor' ? target : undefined);
        if (r) out.push(r);
      }
    }
    return out;
  }
}

/** `target` is "<= x", "< x", ">= x" or "> x". */
export function meetsTarget(value: number, target: string): boolean {
  const m = /^\s*(<=|<|>=|>)\s*([\d.]+)/.exec(target);
  if (!m || !Number.isFinite(value)) return false;
  const t = Number(m[2]);
  switch (m[1]) {
    case '<=': return value <= t;
    case '<': return value < t;
    case '>=': return value >= t;
    default: return value > t;
  }
}

/** Fills date and machine; writes bench/results/<scenario>.json; returns its path. */
export function writeResult(scenario: string, result: Omit<Result, 'scenario' | 'date' | 'machine'> & Partial<Result>): string {
  const full: Result = {
    scenario,
    date: result.date ?? new Date().toISOString(),
    machine: result.machine ?? { cpus: os.cpus().length, node: process.version, loadAverage: os.loadavg()[0]! },
    ...result,
  };
  full.scenario = scenario;
  const file = join(process.env.BENCH_RESULTS_DIR ?? RESULTS_DIR, `${scenario}.json`);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(full, null, 2)}\n`);
  return file;
}

/** Prints a compact table of the result to stdout. */
export function printResult(result: Pick<Result, 'rows' | 'ratios' | 'integrity'> & { notes?: string[] }): void {
  for (const r of result.rows) {
    console.log(`${r.system.padEnd(11)} ${r.metric.padEnd(34)} ${fmt(r.median).padStart(10)} ${r.unit.padEnd(8)} [${r.values.map(fmt).join(', ')}]`);
  }
  for (const r of result.ratios) {
    console.log(`ratio ${r.system}/${r.vs} ${r.metric.padEnd(34)} ${r.ratio.toFixed(2)}×${r.target ? `  target ${r.target}: ${r.met ? 'met' : 'MISSED'}` : ''}`);
  }
  for (const n of result.notes ?? []) console.log(`note: ${n}`);
  console.log(`integrity: ${result.integrity.ok ? 'ok' : 'FAILED'} — ${result.integrity.details}`);
}

function fmt(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  return Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 1 ? x.toFixed(2) : x.toPrecision(3);
}

/** Common flags: --quick, --rounds N, --systems a,b. */
export function commonArgs(argv: string[] = process.argv.slice(2)): { quick: boolean; rounds: number | null; systems: System[] | null; rest: string[] } {
  let quick = false;
  let rounds: number | null = null;
  let systems: System[] | null = null;
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--quick') quick = true;
    else if (a === '--rounds') rounds = Number(argv[++i]);
    else if (a.startsWith('--rounds=')) rounds = Number(a.slice(9));
    else if (a === '--systems') systems = argv[++i]!.split(',') as System[];
    else if (a.startsWith('--systems=')) systems = a.slice(10).split(',') as System[];
    else rest.push(a);
  }
  if (systems) for (const s of systems) if (!SYSTEMS.includes(s)) throw new Error(`unknown system ${s} (${SYSTEMS.join(' | ')})`);
  return { quick, rounds, systems, rest };
}

/**
 * The flags every scenario shares, with their defaults applied: --quick,
 * --rounds N (default 3, quick 1), --systems a,b (default all three; under
 * --quick `quickSystems`). `flag(name, fallback)` reads a numeric `--name N`
 * from the remaining arguments.
 */
export function scenarioArgs(
  quickSystems: readonly System[] = SYSTEMS,
  argv: string[] = process.argv.slice(2),
): { quick: boolean; rounds: number; systems: System[]; rest: string[]; flag: (name: string, fallback: number) => number } {
  const common = commonArgs(argv);
  const { quick, rest } = common;
  return {
    quick,
    rounds: common.rounds ?? (quick ? 1 : 3),
    systems: common.systems ?? [...(quick ? quickSystems : SYSTEMS)],
    rest,
    flag: (name, fallback) => {
      const i = rest.indexOf(`--${name}`);
      return i >= 0 ? Number(rest[i + 1]) : fallback;
    },
  };
}

/**
 * Every (round, system) pair in run order: the systems alternate direction from
 * one round to the next (roundOrder). With `announce`, prints "round i/n" as each round starts.
 */
export function* alternatingRounds<T>(rounds: number, systems: readonly T[], announce = false): Generator<{ round: number; system: T }> {
  for (let round = 0; round < rounds; round++) {
    if (announce) console.log(`round ${round + 1}/${rounds}`);
    for (const system of roundOrder(systems, round)) yield { round, system };
  }
}

/**
 * Writes `<scenario>[-quick].json`, prints the result and the file written with
 * the time since `started`, and fails the process when integrity failed.
 */
export function finishScenario(
  scenario: string,
  quick: boolean,
  started: number,
  result: Parameters<typeof writeResult>[1] & Parameters<typeof printResult>[0],
): void {
  const file = writeResult(quick ? `${scenario}-quick` : scenario, result);
  printResult(result);
  console.log(`wrote ${file} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  if (!result.integrity.ok) process.exitCode = 1;
}

/**
 * An absolute target checked on every round's value of one row (not the
 * median: a target "met" must hold in each round).
 */
export function checkRows(
  rows: Row[],
  system: string,
  metric: string,
  target: string,
  holds: (value: number) => boolean,
): Check | null {
  const row = rows.find((r) => r.system === system && r.metric === metric);
  if (!row) return null;
  return { metric, system, value: row.median, unit: row.unit, target, met: row.values.every(holds) };
}
