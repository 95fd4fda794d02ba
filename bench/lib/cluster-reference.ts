/**
 * Starts a reference server (raw `ws` or Socket.IO) as N node:cluster workers
 * (bench/lib/cluster-reference-server.ts): the capacity scenario's
 * counterpart of `ws-supervisor server --workers N` (bench/lib/cli-server.ts).
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { REPO_DIR, type System } from './harness.ts';
import { compiledEntry } from './compile.ts';

export interface ClusterServer {
  system: System;
  /** ws://…/server for raw, the http origin for socketio. */
  url: string;
  /** The primary and every worker. */
  pids(): number[];
  stop(): Promise<void>;
}

export async function startClusterServer(
  system: Exclude<System, 'supervisor'>,
  workers: number,
  o: { pingInterval: number; pongTimeout: number },
): Promise<ClusterServer> {
  const child = spawn(
    process.execPath,
    [compiledEntry('lib/cluster-reference-server.ts'), system, String(workers), '--ping-interval', String(o.pingInterval), '--pong-timeout', String(o.pongTimeout)],
    { cwd: REPO_DIR, env: { ...process.env, NODE_ENV: 'production' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const kill = (): void => void child.kill('SIGKILL');
  process.once('exit', kill);
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const { port, pids } = await new Promise<{ port: number; pids: number[] }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${system} ×${workers}: not ready within 120 s: ${err}`)), 120_000); // 4 workers starting on a loaded 2-core machine
    const early = (code: number | null): void => reject(new Error(`${system} ×${workers}: exited ${code}: ${err}`));
    child.once('exit', early);
    createInterface({ input: child.stdout }).once('line', (line) => {
      clearTimeout(timer);
      child.off('exit', early);
      const m = /^ready (\d+) ([\d,]+)$/.exec(line);
      if (m) resolve({ port: Number(m[1]), pids: m[2]!.split(',').map(Number) });
      else reject(new Error(`${system} ×${workers}: expected "ready <port> <pids>", got ${line}`));
    });
  });
  return {
    system,
    url: system === 'socketio' ? `http://127.0.0.1:${port}` : `ws://127.0.0.1:${port}/server`,
    pids: () => [child.pid!, ...pids],
    async stop() {
      process.off('exit', kill);
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM'); // the primary SIGKILLs its workers
      await gone;
    },
  };
}
