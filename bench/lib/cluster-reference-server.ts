/**
 * A reference server (raw `ws` or Socket.IO, bench/lib/systems.ts) run as N
 * node:cluster workers on one port, the way their users scale past one
 * process's file-descriptor cap. WebSocket transport only, so Socket.IO needs
 * no sticky sessions (those are for HTTP long-polling), and the capacity
 * scenario sends no broadcast, so no cluster adapter either.
 *
 *   node bench/.build/cluster-reference-server.mjs <raw|socketio> <workers> [--ping-interval ms] [--pong-timeout ms]
 *
 * Prints "ready <port> <pid>,<pid>,…" (the workers' pids) once every worker
 * listens. Listens on 127.0.0.1, any free port (cluster shares one listen(0)
 * among the workers). SIGTERM/SIGINT or the primary's exit ends the workers.
 */
import cluster from 'node:cluster';
import { parseArgs } from 'node:util';
import { startSystem } from './systems.ts';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    'ping-interval': { type: 'string', default: '25000' },
    'pong-timeout': { type: 'string', default: '10000' },
  },
});
const [kind, workersArg] = positionals;
const workers = Number(workersArg);
if (!Number.isInteger(workers) || workers < 1) {
  console.error(`cluster-reference-server: <workers> must be a positive integer, got ${String(workersArg)}`);
  process.exit(2);
}

if (cluster.isPrimary) {
  const ready = new Map<number, number>(); // pid → port
  for (let i = 0; i < workers; i++) {
    const worker = cluster.fork();
    worker.on('message', (m: { port?: number }) => {
      if (typeof m?.port !== 'number') return;
      ready.set(worker.process.pid!, m.port);
      if (ready.size === workers) {
        const ports = new Set(ready.values());
        if (ports.size !== 1) {
          console.error(`cluster-reference-server: workers listen on different ports ${[...ports].join(', ')}`);
          process.exit(1);
        }
        console.log(`ready ${[...ports][0]} ${[...ready.keys()].join(',')}`);
      }
    });
    worker.on('exit', (code, signal) => {
      console.error(`cluster-reference-server: worker ${worker.process.pid} exited (${signal ?? code})`);
      process.exit(1);
    });
  }
  const stop = (): void => {
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGKILL');
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  const { port } = await startSystem(kind, {
    port: 0,
    pingInterval: Number(values['ping-interval']),
    pongTimeout: Number(values['pong-timeout']),
  });
  process.send?.({ port });
  // Orphaned (the primary was killed): go too.
  process.on('disconnect', () => process.exit(0));
}
