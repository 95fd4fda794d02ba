/**
 * Helpers of the lifecycle scenarios (churn, heartbeat, detection), on top of
 * bench/lib/harness.ts: a server process that also counts connections opened
 * and closed by cause (bench/lib/lifecycle-server.ts), and client holder
 * processes (bench/lib/idle-clients.ts) for more sockets than one process may hold.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { pinned, REPO_DIR, type ServerHandle, type ServerOptions, type ServerStats, type System } from './harness.ts';
import { compiledEntry } from './compile.ts';

export interface LifecycleStats extends ServerStats {
  /** Connections the server accepted since start. */
  opened: number;
  /** Connections the server saw close since start. */
  closed: number;
  /** Closes by cause (supervisor: Closure.cause; raw: heartbeat-timeout | peer; socketio: heartbeat-timeout | disconnect reason). */
  closedBy: Record<string, number>;
}

export interface LifecycleServer extends Omit<ServerHandle, 'stats' | 'gc' | 'gcTrace'> {
  stats(): Promise<LifecycleStats>;
  /** Four full GCs with event-loop turns between them (weak callbacks, finalizers), then stats. */
  gc(): Promise<LifecycleStats>;
}

/** Line-protocol child: resolves each command with the next stdout line. */
function lineChild(cmd: string[], label: string, cpu: number | null, env: Record<string, string> = {}) {
  const full = cpu === null ? cmd : pinned(cpu, cmd);
  const child = spawn(full[0]!, full.slice(1), {
    cwd: REPO_DIR,
    env: { ...process.env, NODE_ENV: 'production', ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (stderr.length > 20_000) stderr = stderr.slice(-10_000);
  });
  const waiting: Array<(line: string | null) => void> = [];
  let exited = false;
  createInterface({ input: child.stdout }).on('line', (line) => waiting.shift()?.(line));
  child.once('exit', () => {
    exited = true;
    for (const w of waiting.splice(0)) w(null);
  });
  const next = (): Promise<string> =>
    new Promise((resolve, reject) => {
      if (exited) return reject(new Error(`${label} has exited: ${stderr.trim()}`));
      waiting.push((line) => (line === null ? reject(new Error(`${label} exited: ${stderr.trim()}`)) : resolve(line)));
    });
  const command = (line: string): Promise<string> => {
    const answer = next();
    child.stdin.write(`${line}\n`);
    return answer;
  };
  const stop = async (): Promise<void> => {
    if (exited) return;
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await gone;
  };
  return { child, next, command, stop, stderr: () => stderr };
}

/** Starts bench/lib/lifecycle-server.ts <system> pinned to CPU 0 (default) with --expose-gc. */
export async function startLifecycleServer(system: System, options: ServerOptions = {}): Promise<LifecycleServer> {
  const p = lineChild(
    [
      process.execPath,
      '--expose-gc',
      compiledEntry('lib/lifecycle-server.ts'),
      system,
      String(options.port ?? 0),
      String(options.pingInterval ?? 25_000),
      String(options.pongTimeout ?? 10_000),
    ],
    `server ${system}`,
    options.cpu ?? 0,
    options.env,
  );
  const ready = await p.next();
  const m = /^ready (\d+)/.exec(ready);
  if (!m) throw new Error(`server ${system}: expected "ready <port>", got ${ready}`);
  const port = Number(m[1]);
  const parse = (answer: string): LifecycleStats => {
    const s = /^stats (.*)$/.exec(answer);
    if (!s) throw new Error(`server ${system}: expected "stats {…}", got ${answer}`);
    return JSON.parse(s[1]!) as LifecycleStats;
  };
  return {
    system,
    port,
    pid: p.child.pid!,
    child: p.child,
    url: system === 'socketio' ? `http://127.0.0.1:${port}` : `ws://127.0.0.1:${port}/server`,
    command: p.command,
    stats: async () => parse(await p.command('stats')),
    gc: async () => parse(await p.command('gc')),
    stop: p.stop,
  };
}

export interface HolderCounts {
  /** Connections opened so far. */
  open: number;
  /** Connections that closed (server-side close or error) since opened. */
  closed: number;
  /** Heartbeat pings received (ws ping frames; engine.io pings for socketio). */
  pings: number;
  errors: number;
}

/** What `request` saw: every connection sent one request; ok = got the reply with its own requestID. */
export interface RequestOutcome {
  ok: number;
  wrong: number;
  missing: number;
  /** From the first send to the last reply (or the 60 s give-up). */
  ms: number;
}

export interface ClientHolder {
  pid: number;
  /** Connections opened, and how long opening them took (first handshake to last open). */
  opened: number;
  connectMs: number;
  counts(): Promise<HolderCounts>;
  /** Every held connection sends one request and waits for its own reply. */
  request(): Promise<RequestOutcome>;
  stop(): Promise<void>;
}

export interface HolderOptions {
  /** CPU to pin the holder to (default 1); null: not pinned. */
  cpu?: number | null;
  /** Source address of every connection (e.g. 127.0.0.11): ~28k ephemeral ports per source address. */
  localAddress?: string;
  /** Handshakes in flight at once (default 250). */
  batch?: number;
}

/** Starts a process holding `n` idle connections to `url`; resolves once all are open. */
export async function startHolder(system: System, url: string, n: number, options: HolderOptions = {}): Promise<ClientHolder> {
  const p = lineChild(
    [process.execPath, compiledEntry('lib/idle-clients.ts'), system, url, String(n), options.localAddress ?? '', String(options.batch ?? 250)],
    'client holder',
    options.cpu === undefined ? 1 : options.cpu,
  );
  const line = await p.next();
  const m = /^open (\d+) (\d+)/.exec(line);
  if (!m) throw new Error(`client holder: expected "open <n> <ms>", got ${line}: ${p.stderr()}`);
  return {
    pid: p.child.pid!,
    opened: Number(m[1]),
    connectMs: Number(m[2]),
    counts: async () => {
      const a = await p.command('counts');
      return JSON.parse(a.replace(/^counts /, '')) as HolderCounts;
    },
    request: async () => {
      const a = await p.command('request');
      if (!a.startsWith('replied ')) throw new Error(`client holder: expected "replied {…}", got ${a}`);
      return JSON.parse(a.slice(8)) as RequestOutcome;
    },
    stop: p.stop,
  };
}
