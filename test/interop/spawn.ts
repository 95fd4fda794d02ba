/**
 * Runs a third-party client program (python3, a Go binary, the go tool) to
 * completion, bounded in time. The server side is test/helpers/cli.ts
 * (startCliServer); this is only for the clients.
 *
 * Every child is SIGKILLed on timeout, when the test's AbortSignal fires
 * (test timeout or cancellation), and at the latest when the test process exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  ms: number;
}

export interface RunOptions {
  timeoutMs: number;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Usually the test context's `t.signal`. */
  signal?: AbortSignal;
}

export function runProgram(file: string, args: string[], options: RunOptions): Promise<RunResult> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    live.add(child);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const kill = (): void => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    };
    const timer = setTimeout(() => {
      timedOut = true;
      kill();
    }, options.timeoutMs);
    options.signal?.addEventListener('abort', kill, { once: true });
    child.once('error', (err) => {
      clearTimeout(timer);
      live.delete(child);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      live.delete(child);
      options.signal?.removeEventListener('abort', kill);
      resolve({ code, signal, stdout, stderr, timedOut, ms: Date.now() - started });
    });
  });
}

/** The last line of stdout parsed as JSON; throws with the whole output when there is none. */
export function jsonSummary<T>(r: RunResult): T {
  const lines = r.stdout.trim().split('\n');
  const last = lines[lines.length - 1] ?? '';
  try {
    return JSON.parse(last) as T;
  } catch {
    throw new Error(
      `no JSON summary (exit ${r.code ?? r.signal}${r.timedOut ? ', timed out' : ''})\nstdout: ${r.stdout}\nstderr: ${r.stderr}`,
    );
  }
}

/** The CLI server is still running and has written nothing to stderr (no crash, no logged error). */
export function assertServerHealthy(server: { child: ChildProcess; stderr(): string; stdout(): string }): void {
  if (server.child.exitCode !== null || server.child.signalCode !== null) {
    throw new Error(`the server exited (${server.child.exitCode ?? server.child.signalCode})\nstdout: ${server.stdout()}\nstderr: ${server.stderr()}`);
  }
  if (server.stderr() !== '') throw new Error(`the server wrote to stderr:\n${server.stderr()}`);
}
