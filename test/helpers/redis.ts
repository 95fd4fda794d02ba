/**
 * A real redis-server for the adapter tests (no mock): Debian's redis-server
 * from PATH (or $REDIS_SERVER), on a free loopback port, with persistence off
 * so a restart starts empty (`--save '' --appendonly no`). It can be killed
 * (SIGKILL, as a crash) and started again on the same port, hung (SIGSTOP) and
 * resumed, given extra flags (`--requirepass …`), and is killed after the test
 * at the latest. Without the binary a test prints a SKIPPED
 * line and skips; under CI=true it fails instead (as test/interop/require-binary.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import type { TestContext } from 'node:test';
import { IN_CI } from '../interop/require-binary.ts';

export const REDIS_INSTALL = 'apt-get install redis-server';

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/** The redis-server binary: $REDIS_SERVER, else the first on PATH; null when there is none. */
export function findRedisServer(): string | null {
  const candidates = process.env.REDIS_SERVER
    ? [process.env.REDIS_SERVER]
    : (process.env.PATH ?? '').split(delimiter).filter(Boolean).map((dir) => join(dir, 'redis-server'));
  for (const path of candidates) {
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // next
    }
  }
  return null;
}

export interface RedisServer {
  port: number;
  /** redis://127.0.0.1:PORT */
  url: string;
  /** True while the process runs. */
  readonly running: boolean;
  /** SIGKILL (a crash: no goodbye to clients); resolves once the process has exited. */
  kill(): Promise<void>;
  /** Kills it and removes its directory (after the test). */
  dispose(): Promise<void>;
  /** Starts it again on the same port (empty: persistence is off). */
  restart(): Promise<void>;
  /** SIGSTOP: Redis hangs (connections stay open, nothing is answered), as under a long stall. */
  pause(): void;
  /** SIGCONT after pause(). */
  resume(): void;
}

export interface RedisStartOptions {
  /** Extra redis-server flags, e.g. ['--requirepass', 'secret']. */
  args?: string[];
}

/** A free loopback port (released just before redis binds it; startRedis retries on a clash). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function launch(binary: string, port: number, dir: string, extra: string[] = [], timeoutMs = 10_000): Promise<ChildProcess> {
  const child = spawn(
    binary,
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no', '--loglevel', 'notice', ...extra],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  live.add(child);
  child.once('exit', () => live.delete(child));
  let out = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error(`redis-server did not get ready within ${timeoutMs} ms:\n${out}`)), timeoutMs);
    const onData = (chunk: Buffer): void => {
      out += chunk.toString();
      if (/Ready to accept connections/.test(out)) {
        cleanup();
        resolve(child);
      }
    };
    const onExit = (code: number | null, signal: string | null): void => fail(new Error(`redis-server exited (${code ?? signal}) before it was ready:\n${out}`));
    const fail = (err: Error): void => {
      cleanup();
      child.kill('SIGKILL');
      reject(err);
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      child.stdout!.off('data', onData);
      child.stderr!.off('data', onData);
      child.off('exit', onExit);
      // Keep draining its output so a chatty server never blocks on a full pipe.
      child.stdout!.resume();
      child.stderr!.resume();
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', onExit);
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/**
 * Starts redis-server on a free loopback port, killed in `t.after`. Returns
 * null when the binary is missing (the test is then skipped, or failed under
 * CI=true): `const redis = await startRedis(t); if (!redis) return;`
 */
export async function startRedis(t: Pick<TestContext, 'after' | 'skip'>, options: RedisStartOptions = {}): Promise<RedisServer | null> {
  const extra = options.args ?? [];
  const binary = findRedisServer();
  if (binary === null) {
    const why = `redis-server not found (${REDIS_INSTALL})`;
    if (IN_CI) throw new Error(`missing prerequisite (CI=true, so this fails instead of skipping): ${why}`);
    console.log(`SKIPPED: ${why}`);
    t.skip(why);
    return null;
  }
  const server = await spawnRedisServer(binary, extra);
  t.after(() => server.dispose());
  return server;
}

/**
 * Starts redis-server (`binary`, from findRedisServer) on a free loopback
 * port, not tied to one test: the caller disposes of it (dispose() also
 * removes its directory); it dies with the test process at the latest. For a file whose
 * tests share one server (each test then uses its own key prefix).
 */
export async function spawnRedisServer(binary: string, extra: string[] = []): Promise<RedisServer> {
  const dir = mkdtempSync(join(tmpdir(), 'ws-supervisor-redis-'));
  let child: ChildProcess | null = null;
  let port = 0;
  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    try {
      child = await launch(binary, port, dir, extra);
      break;
    } catch (err) {
      if (attempt >= 3) throw err; // another process took the port between freePort and bind
    }
  }
  const server: RedisServer = {
    port,
    url: `redis://127.0.0.1:${port}`,
    get running() {
      return child !== null && child.exitCode === null && child.signalCode === null;
    },
    pause() {
      child?.kill('SIGSTOP');
    },
    resume() {
      child?.kill('SIGCONT');
    },
    async kill() {
      if (!child) return;
      const c = child;
      child = null;
      c.kill('SIGCONT'); // a paused one must not linger
      c.kill('SIGKILL');
      await exited(c);
    },
    async dispose() {
      await server.kill();
      rmSync(dir, { recursive: true, force: true });
    },
    async restart() {
      if (child) throw new Error('redis-server is still running');
      // The port may linger for a moment after a kill; retry briefly.
      for (let attempt = 1; ; attempt++) {
        try {
          child = await launch(binary, port, dir, extra);
          return;
        } catch (err) {
          if (attempt >= 5) throw err;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
    },
  };
  return server;
}
