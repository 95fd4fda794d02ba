/**
 * A throwaway redis-server for benchmarks: loopback, a free port, no
 * persistence, killed by stop() (and at the latest when this process exits).
 * Needs `redis-server` on PATH (or REDIS_SERVER=/path/to/redis-server).
 */
import { spawn } from 'node:child_process';
import net from 'node:net';

export interface RedisServer {
  /** redis://127.0.0.1:PORT */
  url: string;
  pid: number;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

export async function startRedisServer(timeoutMs = 10_000): Promise<RedisServer> {
  const bin = process.env.REDIS_SERVER ?? 'redis-server';
  const port = await freePort();
  const child = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const kill = (): void => void child.kill('SIGKILL');
  process.once('exit', kill);
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      kill();
      reject(new Error(`redis-server did not start within ${timeoutMs} ms: ${out}`));
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${bin} (set REDIS_SERVER): ${err.message}`));
    });
    const early = (code: number | null): void => {
      clearTimeout(timer);
      reject(new Error(`redis-server exited ${code}: ${out}`));
    };
    child.once('exit', early);
    let ready = false;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!ready && out.includes('Ready to accept connections')) {
        ready = true;
        clearTimeout(timer);
        child.off('exit', early);
        resolve();
      }
    });
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  });
  return {
    url: `redis://127.0.0.1:${port}`,
    pid: child.pid!,
    async stop() {
      process.off('exit', kill);
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      kill();
      await gone;
    },
  };
}
