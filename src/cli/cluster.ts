/**
 * `ws-supervisor server --workers N` (N > 1): N worker processes serve one
 * port through node:cluster. Each worker is the ordinary single-process server
 * (its own supervisor, drain, /healthz, /metrics); the primary serves nothing.
 * It forks the workers, restarts one that dies within the restart intensity
 * (src/cli/restart-intensity.ts, OTP's rule), and on SIGTERM/SIGINT asks every
 * worker to drain, then exits. See docs/cluster.md.
 *
 * Primary ⇄ worker messages go over cluster's IPC channel:
 *   worker → primary  { wsSupervisor: 'ready', address, port }  once it serves
 *   primary → worker  { wsSupervisor: 'drain' }                 on shutdown
 */
import cluster, { type Worker } from 'node:cluster';
import { RestartIntensity } from './restart-intensity.ts';

/** Set in each worker's environment: its slot, 1..N, kept by the worker that replaces it. */
export const WORKER_ENV = 'WS_SUPERVISOR_WORKER';
/** A concrete port for a worker forked while no worker holds the shared socket (when port 0 was asked). */
const PORT_ENV = 'WS_SUPERVISOR_PORT';

/**
 * Beyond a worker's own drain bound (close timeout, then 1 s for keep-alive
 * HTTP): process exit, log flush and scheduling on a loaded host. After that
 * the primary kills what is left.
 */
const DRAIN_MARGIN_MS = 5_000;

export interface ReadyMessage {
  wsSupervisor: 'ready';
  address: string;
  family: string;
  port: number;
}

interface DrainMessage {
  wsSupervisor: 'drain';
}

function isMessage<T extends { wsSupervisor: string }>(m: unknown, kind: T['wsSupervisor']): m is T {
  return typeof m === 'object' && m !== null && (m as { wsSupervisor?: unknown }).wsSupervisor === kind;
}

/** This process's worker slot (1..N) when a ws-supervisor primary forked it, else null. */
export function workerSlot(): number | null {
  if (!cluster.isWorker) return null;
  const slot = Number(process.env[WORKER_ENV]);
  return Number.isInteger(slot) && slot > 0 ? slot : null;
}

/** The port a replacement worker must listen on instead of the asked-for 0, if any. */
export function workerPortOverride(): number | null {
  const port = Number(process.env[PORT_ENV]);
  return workerSlot() !== null && Number.isInteger(port) && port > 0 ? port : null;
}

/** Worker side: tell the primary this worker serves. */
export function reportReady(address: { address: string; family: string; port: number }): void {
  const message: ReadyMessage = { wsSupervisor: 'ready', address: address.address, family: address.family, port: address.port };
  process.send?.(message);
}

/** Worker side: run `drain` when the primary asks for it. */
export function onDrainRequest(drain: () => void): void {
  process.on('message', (m: unknown) => {
    if (isMessage<DrainMessage>(m, 'drain')) drain();
  });
}

export interface PrimaryOptions {
  workers: number;
  /** Restart intensity: at most this many restarts within `restartPeriodMs`. */
  maxRestarts: number;
  restartPeriodMs: number;
  /** The port asked for; 0 = any (the first worker's pick is then kept). */
  port: number;
  /** A worker's drain bound (its close timeout); the primary waits this + DRAIN_MARGIN_MS before killing. */
  drainTimeoutMs: number;
  /** Called once, when every worker serves for the first time. */
  onServing(address: ReadyMessage): void;
  /** Progress lines (stdout). */
  log?(line: string): void;
  /** Failures (stderr). */
  warn?(line: string): void;
}

/**
 * Runs the primary: forks `workers` workers (re-running this script with the
 * same arguments), supervises them, and exits the process when they are gone:
 * 0 after a signal-initiated drain, 1 when a worker failed to start or the
 * restart intensity was exceeded.
 */
export function runPrimary(o: PrimaryOptions): void {
  const log = o.log ?? ((line: string) => console.log(`ws-supervisor: ${line}`));
  const warn = o.warn ?? ((line: string) => console.error(`ws-supervisor: ${line}`));
  const intensity = new RestartIntensity({ maxRestarts: o.maxRestarts, periodMs: o.restartPeriodMs });
  const periodS = o.restartPeriodMs / 1000;
  const live = new Map<number, Worker>(); // slot → its current worker process
  const ready = new Set<number>(); // slots whose worker serves
  let serving = false; // every slot has been ready once: startup is over
  let boundPort: number | null = null;
  // Port 0: workers that asked for 0 share the socket cluster opened for the first one.
  const askedZero = new Set<Worker>();
  // Workers that landed on another port than the others, killed to be replaced (not a crash).
  const misplaced = new Set<Worker>();
  let stopping: { code: number } | null = null;
  let signals = 0;

  const finish = (): void => {
    const code = stopping?.code ?? 1;
    if (code === 0) log('all workers drained, bye');
    else warn('stopped');
    process.exit(code);
  };

  const stop = (code: number): void => {
    if (stopping) return;
    stopping = { code };
    if (live.size === 0) return finish();
    for (const worker of live.values()) if (worker.isConnected()) worker.send({ wsSupervisor: 'drain' } satisfies DrainMessage);
    setTimeout(() => {
      warn(`${live.size} worker(s) did not drain within ${o.drainTimeoutMs + DRAIN_MARGIN_MS} ms: killing them`);
      stopping!.code = 1;
      for (const worker of live.values()) worker.process.kill('SIGKILL');
    }, o.drainTimeoutMs + DRAIN_MARGIN_MS);
  };

  const fork = (slot: number): void => {
    const env: Record<string, string> = { [WORKER_ENV]: String(slot) };
    // Port 0: a new listen(0) joins the shared socket only while a worker holds it;
    // once none does, cluster closes it, so ask for the port it had instead.
    const holder = [...live.entries()].some(([s, w]) => askedZero.has(w) && ready.has(s));
    if (o.port === 0 && boundPort !== null && !holder) env[PORT_ENV] = String(boundPort);
    const worker = cluster.fork(env);
    const pid = worker.process.pid;
    live.set(slot, worker);
    if (o.port === 0 && env[PORT_ENV] === undefined) askedZero.add(worker);
    worker.on('error', (err) => warn(`worker ${slot} (pid ${pid}): ${err.message}`));
    worker.on('message', (m: unknown) => {
      if (!isMessage<ReadyMessage>(m, 'ready')) return;
      if (boundPort !== null && m.port !== boundPort) {
        // Its listen(0) came after the shared socket closed (every worker died at once): replace it on the right port.
        warn(`worker ${slot} (pid ${pid}) listens on port ${m.port}, not ${boundPort}: replacing it`);
        misplaced.add(worker);
        worker.process.kill('SIGKILL');
        return;
      }
      ready.add(slot);
      boundPort ??= m.port;
      log(`worker ${slot} (pid ${pid}) ready`);
      // Started while we were already shutting down: it drains at once.
      if (stopping) worker.send({ wsSupervisor: 'drain' } satisfies DrainMessage);
      if (!serving && ready.size === o.workers) {
        serving = true;
        o.onServing(m);
      }
    });
    worker.on('exit', (code, signal) => {
      if (live.get(slot) === worker) live.delete(slot);
      ready.delete(slot);
      askedZero.delete(worker);
      if (misplaced.delete(worker)) {
        if (!stopping) return fork(slot);
        if (live.size === 0) finish();
        return;
      }
      const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
      if (stopping) {
        if (signal || code !== 0) {
          warn(`worker ${slot} (pid ${pid}) ${how} while draining`);
          stopping.code = 1;
        }
        if (live.size === 0) finish();
        return;
      }
      if (!serving) {
        // OTP's start_link: a child that fails to start fails the supervisor's start; a restart would fail the same way.
        warn(`worker ${slot} (pid ${pid}) ${how} before it was ready: stopping the other workers`);
        return stop(1);
      }
      const decision = intensity.crashed(Date.now());
      if (!decision.restart) {
        warn(
          `worker ${slot} (pid ${pid}) ${how}: ${decision.count} crashes within ${periodS} s exceed the restart intensity ` +
            `(--max-restarts ${o.maxRestarts} within --restart-period ${periodS}): giving up, draining the other workers`,
        );
        return stop(1);
      }
      warn(`worker ${slot} (pid ${pid}) ${how}: restarting it (restart ${decision.count} of at most ${o.maxRestarts} within ${periodS} s)`);
      fork(slot);
    });
  };

  const onSignal = (signal: NodeJS.Signals): void => {
    if (++signals > 1) {
      warn(`${signal} again, killing the workers without waiting`);
      for (const worker of live.values()) worker.process.kill('SIGKILL');
      process.exit(1);
    }
    log(`${signal}: draining ${live.size} worker(s)`);
    stop(0);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  for (let slot = 1; slot <= o.workers; slot++) fork(slot);
}
