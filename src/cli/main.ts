#!/usr/bin/env node
/**
 * `ws-supervisor server [flags]`: the ready-made server. This process is the
 * server itself, so SIGTERM/SIGINT reach it directly and drain it (R18).
 * With --workers N > 1 it is the cluster primary instead (src/cli/cluster.ts): it
 * forks N workers that run this same file, and signals to it drain them all.
 *
 * `ws-supervisor client [flags]`: the tutorials' client (a request every 2 s,
 * replies read while it keeps sending, R24), made to survive server restarts
 * (R22, R23). This process is the client itself, so SIGINT/SIGTERM close it
 * with 1000 and it exits once the close handshake is done.
 */
import type http from 'node:http';
import pino from 'pino';
import { startDemoServer, type DemoServer } from './demo-server.ts';
import { onDrainRequest, reportReady, runPrimary, workerPortOverride, workerSlot } from './cluster.ts';
import { DEFAULTS } from '../server/options.ts';
import type { InspectorHandle } from '../observe/inspector.ts';
import { packageVersion, parseCommand, usageExit, type ClientCliOptions, type ServerCliOptions } from './args.ts';
import { parseRedisUrl } from '../adapter/redis-url.ts';
import { MissingPeerError } from '../base/optional-peer.ts';
import { ClientError, createClient } from '../client/node.ts';
import { CLIENT_DEFAULTS } from '../client/client.ts';

/** The line tests and users wait for: the server is up (in a cluster: every worker). */
function listeningLine(address: string, port: number, path: string, suffix = ''): string {
  const shown = address.includes(':') ? `[${address}]` : address;
  return `ws-supervisor: listening on http://${shown}:${port}/ (WebSocket ws://${shown}:${port}${path})${suffix}`;
}

/** The URL without its password (before @ or in ?password=), for every line we print. */
function redactUrl(url: string): string {
  return parseRedisUrl(url).display;
}

/** How long the CLI lets Redis answer at startup before saying it cannot reach it (the server serves meanwhile). */
const REDIS_STARTUP_GRACE_MS = 3_000;

async function runServer(options: ServerCliOptions): Promise<void> {
  const { logLevel, inspectPort, redis, redisMaxInFlightBytes, redisHistory, workers, restart, sessionStore, ...serverOptions } = options;
  const slot = workerSlot();
  if (workers > 1 && slot === null) {
    // The primary: forks the workers (each re-runs this CLI with the same flags) and serves nothing.
    if (redis === null) console.error('ws-supervisor: warning: --local-broadcast: a broadcast or publish reaches only the clients of the worker that received it');
    // A missing optional ioredis is reported once, here, rather than by every worker the primary would fork and restart.
    else await import('../adapter/redis.ts');
    runPrimary({
      workers,
      maxRestarts: restart.maxRestarts,
      restartPeriodMs: restart.periodMs,
      port: serverOptions.port ?? 8080,
      drainTimeoutMs: serverOptions.timing?.closeTimeout ?? DEFAULTS.closeTimeout,
      onServing: (a) =>
        console.log(
          listeningLine(
            a.address,
            a.port,
            options.path ?? '/server',
            `, ${workers} workers${redis ? `, broadcasts through ${redactUrl(redis)}` : ''}${sessionStore === 'redis' ? ', sessions in redis' : ''}`,
          ),
        ),
    });
    return;
  }
  // Worker lines carry the worker's slot, in the text and in every JSON log line.
  const tag = slot === null ? 'ws-supervisor' : `ws-supervisor[worker ${slot}]`;
  let demo: DemoServer | null = null;
  let inspector: InspectorHandle | null = null;
  let draining = false;
  let signals = 0;
  const drain = (why: string): void => {
    if (draining) return;
    draining = true;
    if (demo === null) {
      // Asked to stop while still starting: nothing is served yet.
      console.log(`${tag}: ${why} before ready, bye`);
      process.exit(0);
    }
    const live = demo.supervisor.size;
    console.log(`${tag}: ${why}: draining ${live} connection(s)`);
    demo
      .close()
      // @statelyai/inspect defers each event by a macrotask and offers no flush:
      // give the last transitions (closing → closed) a moment to reach the relay.
      .then(() => (inspector !== null ? new Promise((r) => setTimeout(r, 200)) : undefined))
      .then(
        () => {
          inspector?.stop();
          console.log(`${tag}: drained, bye`);
          process.exit(0);
        },
        (err: unknown) => {
          console.error(`${tag}: drain failed:`, err);
          process.exit(1);
        },
      );
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    // Counted apart from the primary's drain request: a terminal's Ctrl-C reaches the primary and the workers alike.
    if (++signals > 1) {
      console.error(`${tag}: ${signal} again, exiting without waiting`);
      process.exit(1);
    }
    drain(signal);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  if (slot !== null) onDrainRequest(() => drain('primary asked'));

  // Structured logs (JSON lines on stdout) from the supervisor, each with its connection id (and worker slot).
  const root = pino({ level: logLevel });
  const logger = slot === null ? root : root.child({ worker: slot });
  // Loaded only for --inspect: the Stately inspector client is not needed otherwise.
  inspector = inspectPort === null ? null : await (await import('../observe/inspector.ts')).startInspector(inspectPort);
  // Loaded only for --redis: its client is not needed otherwise.
  const adapter = redis === null ? null : (await import('../adapter/redis.ts')).createRedisAdapter({
          url: redis,
          ...(redisMaxInFlightBytes !== undefined ? { maxInFlightBytes: redisMaxInFlightBytes } : {}),
          ...(redisHistory ? { history: true } : {}),
        });
  // --sessions with Redis: the session store lives there, shared by every worker and server using it (docs/cluster.md).
  const sessions = serverOptions.sessions && sessionStore === 'redis' && redis !== null
    ? {
        ...serverOptions.sessions,
        store: (await import('../adapter/redis-session-store.ts')).createRedisSessionStore({
          url: redis,
          ...(serverOptions.sessions.resumeWindow !== undefined ? { resumeWindow: serverOptions.sessions.resumeWindow } : {}),
        }),
      }
    : serverOptions.sessions;
  const port = workerPortOverride() ?? serverOptions.port;
  demo = await startDemoServer({
    ...serverOptions,
    ...(sessions !== undefined ? { sessions } : {}),
    ...(port !== undefined ? { port } : {}),
    logger,
    ...(inspector !== null ? { inspect: inspector.inspect } : {}),
    ...(adapter ? { adapter } : {}),
  });
  const { address } = demo;
  if (slot !== null) {
    // Which worker answered: a header on every HTTP response, a label on every metric.
    const value = String(slot);
    demo.server.prependListener('request', (_req: http.IncomingMessage, res: http.ServerResponse) => res.setHeader('X-Worker', value));
    demo.supervisor.metrics.registry.setDefaultLabels({ worker: value });
    reportReady(address);
  } else {
    console.log(
      listeningLine(
        address.address,
        address.port,
        options.path ?? '/server',
        `${redis ? `, broadcasts through ${redactUrl(redis)}` : ''}${sessionStore === 'redis' ? ', sessions in redis' : sessionStore === 'memory' ? ', sessions in memory' : ''}`,
      ),
    );
  }
  if (adapter && adapter.status !== 'up') {
    // D4: say it plainly when Redis cannot be reached at startup; the server serves its own clients meanwhile.
    const timer = setTimeout(() => {
      if (adapter.status === 'up' || draining) return;
      // Redis answered but refused (a database it does not have): say what it answered, not that it cannot be reached.
      const refused = adapter.refusal;
      const what = refused !== null ? `refused ${refused}` : `is not reachable (${adapter.statusReason ?? 'connecting'})`;
      console.error(
        `${tag}: warning: Redis at ${adapter.displayUrl} ${what}: ` +
          'serving this process\'s clients only, cross-process broadcasts are reported as dead letters; retrying in the background',
      );
    }, REDIS_STARTUP_GRACE_MS);
    timer.unref();
    demo.supervisor.on('adapterStatus', (status) => {
      if (status === 'up') clearTimeout(timer);
    });
  }
  if (inspector) {
    const shown = address.address.includes(':') ? `[${address.address}]` : address.address;
    console.log(
      `ws-supervisor: inspector relay on ${inspector.relayUrl}: open ${inspector.pageUrl} (Stately UI, needs internet in your browser), ` +
        `read the events from ${inspector.relayUrl} with any WebSocket client, or watch offline at http://${shown}:${address.port}/dashboard`,
    );
  }
}

async function runClient(options: ClientCliOptions): Promise<void> {
  // Library defaults throughout: buffer while offline (R23), reconnect forever (R22).
  const client = createClient(options.url, { offline: 'buffer', session: options.session });
  console.log(`ws-supervisor: client connecting to ${options.url}, a request every ${options.interval} ms${options.session ? ', with a session' : ''}`);
  // Sessions: how each reconnect went (docs/sessions.md): nothing lost, or why not.
  client.on('resume', (r) =>
    console.log(
      r.resumed
        ? `resumed: session ${client.sessionId}, ${r.replayed} message(s) replayed, ${r.resent} request(s) re-sent`
        : `not resumed: ${r.reason} (${r.detail ?? ''}); new session ${client.sessionId}${r.lost > 0 ? `, ${r.lost} request(s) lost` : ''}`,
    ),
  );
  client.on('state', ({ state, previous }) => {
    let detail = '';
    if (state === 'waiting') {
      // Say here why we wait, and how long (R22). A cut connection (a killed server, a reset) has no reason
      // text: its code and cause say what happened instead of an empty ': )'.
      const { delayMs, attempt, lastClosure } = client.machine.getSnapshot().context;
      const why = lastClosure === null ? '' : `: ${lastClosure.reason || `code ${lastClosure.code}, ${lastClosure.cause}`}`;
      detail = ` (attempt ${attempt}, retry in ${delayMs} ms${why})`;
    }
    console.log(`state: ${previous} → ${state}${detail}`);
  });
  client.on('push', (push) => console.log(`push: ${JSON.stringify(push)}`));
  client.on('close', (c) =>
    console.log(`close: code ${c.code} reason ${JSON.stringify(c.reason)} expected ${c.expected} (${c.initiator}, ${c.cause})`),
  );
  client.on('deadLetter', ({ data }) => console.log(`dead letter: ${data}`));

  // The tutorials' main loop: the request number counts on across reconnects.
  let n = 0;
  const timer = setInterval(() => {
    const i = ++n;
    const command = `Eject the hot dog ${i}.`;
    // As the tutorials' client ("Client sent: …"); while disconnected the request waits in the offline buffer (R23).
    const connected = client.state === 'open' || client.state === 'pinging';
    console.log(`request ${i}: ${command}${connected ? '' : ` (buffered while ${client.state})`}`);
    client.request(command, '').then(
      (reply) => console.log(`reply ${i}: ${JSON.stringify(reply)}`),
      (err: unknown) => {
        const why = err instanceof ClientError ? `${err.code}: ${err.message}` : String(err);
        console.log(`request ${i} failed: ${why}`);
      },
    );
  }, options.interval);

  let signalled = false;
  void client.ended.then((output) => {
    if (signalled) return;
    // Only reachable if the client gives up (maxAttempts) or fails: not a clean exit.
    clearInterval(timer);
    console.error(`ws-supervisor: client stopped (${output.reason})`);
    process.exit(1);
  });
  const onSignal = (signal: NodeJS.Signals): void => {
    if (signalled) {
      console.error(`ws-supervisor: ${signal} again, exiting without waiting`);
      process.exit(1);
    }
    signalled = true;
    clearInterval(timer);
    console.log(`ws-supervisor: ${signal}: closing (state ${client.state})`);
    // The machine bounds the handshake by the close timeout; this only guards against a bug there.
    setTimeout(() => {
      console.error('ws-supervisor: close did not complete, exiting');
      process.exit(1);
    }, CLIENT_DEFAULTS.timing.closeTimeout + 2_000).unref();
    client.close(1000, 'client exiting').then(
      (output) => {
        const last = output.lastClosure;
        console.log(`ws-supervisor: closed${last ? ` (last close: code ${last.code}, expected ${last.expected})` : ''}, bye`);
        process.exit(0);
      },
      (err: unknown) => {
        console.error('ws-supervisor: close failed:', err);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

async function main(argv: string[]): Promise<void> {
  const command = parseCommand(argv);
  switch (command.kind) {
    case 'server':
      return runServer(command.options);
    case 'client':
      return runClient(command.options);
    case 'help':
      process.stdout.write(command.text);
      process.exitCode = command.exitCode;
      return;
    case 'version':
      process.stdout.write(`${packageVersion()}\n`);
      return;
  }
}

const argv = process.argv.slice(2);
main(argv).catch((err: unknown) => {
  if (err instanceof MissingPeerError) {
    console.error(err.message); // names the package and the command that installs it
    process.exit(1);
  }
  const usage = usageExit(err, argv);
  if (usage) {
    process.stderr.write(usage.stderr);
    process.exit(usage.exitCode);
  }
  const e = err as NodeJS.ErrnoException;
  if (e.code === 'EADDRINUSE' || e.code === 'EACCES' || e.code === 'EADDRNOTAVAIL' || e.code === 'ENOTFOUND') {
    console.error(`ws-supervisor: cannot listen: ${e.message}`);
    process.exit(1);
  }
  console.error(err);
  process.exit(1);
});
