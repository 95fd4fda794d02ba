/**
 * The CLI server (`ws-supervisor server`) started as users start it, logs
 * silent, on 127.0.0.1 and any free port: the scale-out and capacity scenarios
 * measure what `--workers N` really runs (the primary and every worker).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { REPO_DIR, sleep } from './harness.ts';
import { compiledEntry } from './compile.ts';

export interface CliServer {
  system: 'supervisor';
  /** ws://127.0.0.1:PORT/server */
  url: string;
  /** http://127.0.0.1:PORT */
  base: string;
  child: ChildProcess;
  /** The primary (or the single process) and every worker. */
  pids(): number[];
  workers: number;
  /** SIGTERM (a drain), SIGKILL after 10 s. */
  stop(): Promise<void>;
}

export interface CliServerOptions {
  workers: number;
  /** --redis URL; without it and with workers > 1, --local-broadcast. */
  redis?: string;
  /** Further CLI flags (e.g. --ping-interval 1000). */
  args?: string[];
  /** Label in error messages. */
  label?: string;
}

/** Starts the CLI server; resolves once it listens (and, with --redis, every worker is healthy). */
export async function startCli(o: CliServerOptions): Promise<CliServer> {
  const label = o.label ?? `--workers ${o.workers}`;
  const args = [compiledEntry('../src/cli/main.ts'), 'server', '--address', '127.0.0.1:0', '--log-level', 'silent', '--max-connections', '18000', '--max-connections-per-address', '18000', '--max-pending-per-address', '1024', '--workers', String(o.workers)];
  if (o.redis !== undefined) args.push('--redis', o.redis);
  else if (o.workers > 1) args.push('--local-broadcast');
  args.push(...(o.args ?? []));
  const child = spawn(process.execPath, args, { cwd: REPO_DIR, env: { ...process.env, NODE_ENV: 'production' }, stdio: ['ignore', 'pipe', 'pipe'] });
  const kill = (): void => void child.kill('SIGKILL');
  process.once('exit', kill);
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${label}: not listening within 30 s: ${out} ${err}`)), 30_000);
    const early = (code: number | null): void => reject(new Error(`${label}: exited ${code}: ${err}`));
    child.once('exit', early);
    let listening = false;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = listening ? null : /ws-supervisor: listening on http:\/\/127\.0\.0\.1:(\d+)\//.exec(out);
      if (m) {
        listening = true;
        clearTimeout(timer);
        child.off('exit', early);
        resolve(Number(m[1]));
      }
    });
  });
  const base = `http://127.0.0.1:${port}`;
  const server: CliServer = {
    system: 'supervisor',
    url: `ws://127.0.0.1:${port}/server`,
    base,
    child,
    workers: o.workers,
    pids: () => (o.workers === 1 ? [child.pid!] : [child.pid!, ...[...out.matchAll(/worker \d+ \(pid (\d+)\) ready/g)].map((m) => Number(m[1]))]),
    async stop() {
      process.off('exit', kill);
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM'); // a drain: the adapter says goodbye to Redis
      const timer = setTimeout(kill, 10_000);
      await gone;
      clearTimeout(timer);
    },
  };
  // Every worker's adapter is up (subscribed) before anything is measured.
  if (o.redis !== undefined) await healthyWorkers(base, o.workers);
  return server;
}

export function get(url: string): Promise<{ status: number; worker: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (s: string) => (body += s));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, worker: String(res.headers['x-worker'] ?? '1'), body }));
    });
    req.on('error', reject);
  });
}

/** Polls /healthz (a new TCP connection each time, so the workers take turns) until every worker says ok. */
export async function healthyWorkers(base: string, workers: number, timeoutMs = 15_000): Promise<void> {
  const ok = new Set<string>();
  const deadline = Date.now() + timeoutMs;
  while (ok.size < workers) {
    const r = await get(`${base}/healthz`);
    if (r.status === 200 && r.body === 'ok\n') ok.add(r.worker);
    if (Date.now() > deadline) throw new Error(`workers not all healthy within ${timeoutMs} ms: ${r.status} ${r.body}`);
    if (ok.size < workers) await sleep(50);
  }
}
