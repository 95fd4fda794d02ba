/**
 * Flag parsing for the CLI, kept apart from src/cli/main.ts (which runs on import)
 * so it can be tested. Bad values are UsageErrors: the CLI prints them and exits 2.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { availableParallelism } from 'node:os';
import { DEFAULTS, normaliseOrigin, resolveTrustProxy, type OriginPolicy, type TrustProxy } from '../server/options.ts';
import { bundledWww, HTTP_HEADROOM_DEFAULT, type DemoServerOptions } from './demo-server.ts';
import { fitConnections, OpenFileLimitError, readOpenFileLimit } from '../server/fd-limit.ts';
import { RESTART_DEFAULTS } from './restart-intensity.ts';
import { parseRedisUrl, RedisUrlError } from '../adapter/redis-url.ts';
import { REDIS_DEFAULTS } from '../adapter/redis-defaults.ts';

/** The client's defaults: a request to localhost:8080/server every 2 s. */
export const CLIENT_CLI_DEFAULTS = { address: 'localhost:8080', path: '/server', interval: 2000 } as const;

/** `ws-supervisor --help`: what the program is and its subcommands. */
export const USAGE = `Usage: ws-supervisor <command> [flags]

Commands:
  server                    a WebSocket server speaking the JSON request protocol, with a
                            demo page, a live dashboard, /healthz and /metrics
  client                    a reconnecting client that sends a request every interval
  help [COMMAND]            this text, or the flags of COMMAND

Flags:
  -h, --help                this text (after a command: that command's flags)
  -v, --version             print the version and exit

Run 'ws-supervisor server --help' or 'ws-supervisor client --help' for their flags.
Documentation: https://github.com/ws-supervisor/ws-supervisor#readme
`;

/** `ws-supervisor server --help`. */
export const SERVER_USAGE = `Usage: ws-supervisor server [flags]

Runs a WebSocket server that speaks the JSON request protocol on --path
({"requestID":1,"command":"…","someOtherThing":"…"} → a reply with the same
requestID), with a demo page at /, a live dashboard at /dashboard, /healthz,
/metrics and /cluster.

Flags:
  --address HOST:PORT       listen address (default localhost:8080; port 0 = any free port)
  --path PATH               WebSocket endpoint (default /server)
  --www DIR                 static files for / (default: the bundled www/)
  --ping-interval MS        idle time between heartbeat pings (default ${DEFAULTS.pingInterval})
  --pong-timeout MS         time a ping may go unanswered (default ${DEFAULTS.pongTimeout})
  --write-timeout MS        time the socket may stay undrained (default ${DEFAULTS.writeTimeout})
  --close-timeout MS        time a close handshake may take, whoever started it (default ${DEFAULTS.closeTimeout})
  --headers-timeout MS      time a client gets to send a complete request head (an upgrade or
                            a GET); slower is answered 408 (default 10000; raise it when a
                            connect storm queues heads behind a busy event loop)
  --max-payload BYTES       largest inbound message; bigger closes 1009 (default ${DEFAULTS.maxPayload})
  --send-queue N            messages not yet handed to the OS socket, per connection (default ${DEFAULTS.sendQueueMessages})
  --max-connections N       upgrades beyond this get 503 (default ${DEFAULTS.maxConnections}); with the HTTP
                            headroom (1024) and 64 more it must fit under the open-file limit
                            (ulimit -n), else exit 2; the default is lowered to fit, with a warning
  --max-connections-per-address N
                            WebSocket connections from one client address; the next upgrade
                            gets 429 (default ${DEFAULTS.maxConnectionsPerAddress})
  --max-pending-per-address N
                            sockets from one address that have not finished the upgrade (idle
                            TCP, slow heads, plain HTTP); the next is answered 429 and closed
                            at once (default ${DEFAULTS.maxPendingPerAddress})
  --trust-proxy LIST        comma-separated IP addresses of reverse proxies whose
                            X-Forwarded-For names the client (for the per-address limits and
                            the logs); * trusts every peer (only when clients cannot reach
                            the server but through the proxy). Default: none, the header is ignored
  --max-message-rate N      frames (messages, pings, pongs) per second per connection; over
                            it the connection is closed 1008 (default: no limit)
  --fair-share N            work units (a message + 1 per KiB) one connection may use per
                            event-loop turn before its reading is paused (default ${DEFAULTS.fairShare})
  --turn-budget N           units all connections may use per turn (default ${DEFAULTS.turnBudget})
  --turn-time MS            milliseconds of inbound work per turn, whichever comes first (default ${DEFAULTS.turnTime})
  --fan-out-slice N         recipients of a broadcast/publish per turn; the rest follows on
                            the next turns, in order (default ${DEFAULTS.fanOutSlice})
  --budget-window MS        the window of the per-connection budgets (default ${DEFAULTS.budgetWindow})
  --budget-messages N       messages per window per connection; over it closes 1008
                            (default ${DEFAULTS.budgetMessages}; 0 = none)
  --budget-bytes N          inbound bytes per window per connection (default ${DEFAULTS.budgetBytes}; 0 = none)
  --budget-fan-out N        fan-out cost (recipients x bytes) per window per connection
                            (default ${DEFAULTS.budgetFanOut}; 0 = none)
  --budget-control N        control frames (pings, pongs) per window per connection
                            (default ${DEFAULTS.budgetControl}; 0 = none)

  --allowed-origins LIST    comma-separated scheme://host[:port] origins allowed instead of
                            the same-origin rule; * allows every origin (development only)
  --log-level LEVEL         fatal, error, warn, info (default), debug (every state transition),
                            trace or silent; JSON lines on stdout, each with the connection id
  --inspect                 report every connection actor to a local Stately inspector relay
                            (works offline; see docs/inspect.md)
  --inspect-port PORT       port of that relay (default 8081)
  --redis URL               fan broadcasts and topic publishes out through Redis pub/sub
                            to every process using that Redis: redis://[[user]:password@]host[:port][/db]
                            or rediss://… (TLS); the password is masked in every log line
  --redis-env NAME          the same, with the URL read from the environment variable NAME
                            (keeps the password out of the process list)
  --redis-max-in-flight BYTES
                            bytes handed to Redis and not yet answered; beyond it a broadcast
                            or publish is not sent to the other nodes but reported at once
                            (dead letter, reason unavailable), so a hung Redis cannot fill
                            the memory (default ${REDIS_DEFAULTS.maxInFlightBytes}; needs --redis or --redis-env)
  --redis-history           each node also keeps its broadcasts and publishes in a bounded Redis
                            stream, so a node that missed some (paused, cut by Redis's output
                            buffer limit) reads their content back in order instead of only
                            counting them (default off: it costs Redis CPU and memory; needs
                            --redis or --redis-env)
  --workers N               worker processes on the same port (node:cluster), or auto
                            (one per CPU: ${availableParallelism()} here); default 1, a single process.
                            More than 1 needs --redis (or --local-broadcast)
  --local-broadcast         with --workers > 1 and no --redis: accept that a broadcast (or
                            publish) reaches only the clients of the worker that received it
  --sessions                sessions for clients that ask (ws-session=1): a client that comes
                            back within the resume window gets its session back, replayed and
                            exactly once, or is told why not (docs/sessions.md). Kept in Redis
                            with --redis (any worker or server sharing it resumes them), else
                            in this process (then no --workers)
  --session-store KIND      where sessions live: memory (this process) or redis (the --redis
                            URL, shared by every worker and server using it). Default: redis
                            when --redis or --redis-env is given, else memory (needs --sessions)
  --resume-window MS        how long a detached session waits for its client (default 120000;
                            needs --sessions)
  --max-restarts N          restart intensity: a crashed worker is restarted at most N times
                            within --restart-period; one more crash stops the server
                            with exit 1 (default ${RESTART_DEFAULTS.maxRestarts}; needs --workers > 1)
  --restart-period SECONDS  the window of --max-restarts (default ${RESTART_DEFAULTS.periodSeconds})
  -h, --help                show this help

Signals: SIGTERM or SIGINT drains (new upgrades and /healthz get 503, every
connection gets close 1001, stragglers are terminated after the close timeout)
and exits 0. With --workers, signal the primary: it drains every worker.
Run this process itself under your process manager (not 'npm start': npm does
not pass the signal on and exits, leaving the server holding the port).

The client side: ws-supervisor client --help.
`;

/** `ws-supervisor client --help`. */
export const CLIENT_USAGE = `Usage: ws-supervisor client [flags]

A reconnecting client of the server's JSON protocol. Connects to --url (or
ws://ADDRESS/PATH) and every interval sends
{"requestID":N,"command":"Eject the hot dog N.","someOtherThing":""} with
N = 1, 2, 3… counting on across reconnects. Requests made while disconnected
are buffered and sent once reconnected (R23). Prints each request
("request N: …", marked "(buffered while STATE)" when not connected), each reply
("reply N: {…}"), each push ("push: {…}"), each failed request ("request N
failed: CODE: why"), every state change ("state: open → pinging") and each
connection close (code, reason, expected). Reconnects with backoff and jitter
after an unexpected close (R22).

Flags:
  --url URL                 server URL, ws://HOST:PORT/PATH or wss://… (TLS); instead of
                            --address and --path
  --address HOST:PORT       server address (default ${CLIENT_CLI_DEFAULTS.address})
  --path PATH               WebSocket endpoint (default ${CLIENT_CLI_DEFAULTS.path})
  --interval MS             time between requests (default ${CLIENT_CLI_DEFAULTS.interval})
  --session                 ask for a session (the server must offer them): after an unexpected
                            close the client resumes it and prints "resumed" (nothing lost or
                            run twice) or "not resumed: REASON" (docs/sessions.md)
  -h, --help                show this help

Signals: SIGTERM or SIGINT closes the connection (close 1000, waiting for the
server's close frame up to the close timeout) and exits 0.

The server side: ws-supervisor server --help.
`;

export class UsageError extends Error {}

/**
 * How the CLI ends on a usage error: exit status 2 and one message on stderr
 * (no stack trace) that points at the flags of the subcommand argv names.
 * null for any other error. Kept here, not in main.ts, so tests check it in-process.
 */
export function usageExit(err: unknown, argv: readonly string[]): { exitCode: 2; stderr: string } | null {
  if (!(err instanceof UsageError)) return null;
  return { exitCode: 2, stderr: `ws-supervisor: ${err.message}\nRun '${helpHint(argv)}' for the flags.\n` };
}

function positive(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^[0-9]+$/.test(value) || Number(value) <= 0 || !Number.isSafeInteger(Number(value))) {
    throw new UsageError(`--${flag} must be a positive integer, got ${JSON.stringify(value)}`);
  }
  // Node's timers (and any sane limit) stop at 2^31-1.
  if (Number(value) > 2_147_483_647) throw new UsageError(`--${flag} must be at most 2147483647, got ${value}`);
  return Number(value);
}

function nonNegative(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^[0-9]+$/.test(value) || !Number.isSafeInteger(Number(value))) {
    throw new UsageError(`--${flag} must be an integer ≥ 0, got ${JSON.stringify(value)}`);
  }
  return Number(value);
}

/** A budget: 0 turns it off; at most 2^31-1. */
function budgetFlag(flag: string, value: string | undefined): number | undefined {
  const n = nonNegative(flag, value);
  if (n !== undefined && n > 2_147_483_647) throw new UsageError(`--${flag} must be at most 2147483647, got ${n}`);
  return n;
}

/** HOST:PORT, [IPv6]:PORT or :PORT (all interfaces). */
export function parseAddress(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):([0-9]{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new UsageError(`--address must be HOST:PORT (e.g. localhost:8080, 127.0.0.1:0, [::1]:8080), got ${JSON.stringify(value)}`);
  }
  return { host: m[1] ?? (m[2] || '::'), port };
}

function parseOrigins(value: string | undefined): OriginPolicy | undefined {
  if (value === undefined) return undefined;
  const entries = value.split(',').map((s) => s.trim()).filter(Boolean);
  if (entries.length === 0) throw new UsageError('--allowed-origins must list at least one origin');
  if (entries.includes('*')) {
    if (entries.length > 1) throw new UsageError('--allowed-origins: * cannot be combined with other origins');
    return '*';
  }
  try {
    return entries.map(normaliseOrigin);
  } catch (err) {
    throw new UsageError(`--allowed-origins: ${(err as Error).message.replace('ws-supervisor: allowed origin ', '')}`);
  }
}

/** --trust-proxy: `*` (every peer) or comma-separated IP addresses, checked as the trustProxy option is. */
function parseTrustProxy(value: string | undefined): TrustProxy | undefined {
  if (value === undefined) return undefined;
  const entries = value.split(',').map((s) => s.trim()).filter(Boolean);
  if (entries.length === 0) throw new UsageError('--trust-proxy must list at least one IP address (or *)');
  if (entries.includes('*')) {
    if (entries.length > 1) throw new UsageError('--trust-proxy: * cannot be combined with addresses');
    return true;
  }
  try {
    return resolveTrustProxy(entries);
  } catch (err) {
    throw new UsageError(`--trust-proxy: ${(err as Error).message.replace('ws-supervisor: option trustProxy: ', '')}`);
  }
}

/** Server CLI options: the demo server's, plus what only the CLI does (logging, inspector, processes). */
export interface ServerCliOptions extends DemoServerOptions {
  logLevel: LogLevel;
  /** Port of the local Stately inspector relay, or null without --inspect. */
  inspectPort: number | null;
  /** Redis URL for the broadcast adapter (from --redis or --redis-env; checked by parseRedisUrl), or null: broadcasts stay in this process. */
  redis: string | null;
  /** --redis-max-in-flight: the Redis adapter's maxInFlightBytes, or undefined for its default. */
  redisMaxInFlightBytes: number | undefined;
  /** --redis-history: the Redis adapter keeps its frames in a stream for content recovery (its `history` option). */
  redisHistory: boolean;
  /** Worker processes (node:cluster); 1 = a single process, no cluster. */
  workers: number;
  /** Restart intensity of the workers (docs/cluster.md). */
  restart: { maxRestarts: number; periodMs: number };
  /** Where sessions live (--session-store; default redis with --redis), null without --sessions. */
  sessionStore: 'memory' | 'redis' | null;
}

/** Far above any core count; catches a typo before it forks thousands of processes. */
export const MAX_WORKERS = 256;

function parseWorkers(value: string | undefined): number {
  if (value === undefined) return 1;
  if (value === 'auto') return availableParallelism();
  if (!/^[0-9]+$/.test(value) || Number(value) < 1 || Number(value) > MAX_WORKERS) {
    throw new UsageError(`--workers must be auto or an integer from 1 to ${MAX_WORKERS}, got ${JSON.stringify(value)}`);
  }
  return Number(value);
}

/** The --redis URL (or the one in the variable --redis-env names), checked exactly as createRedisAdapter checks it. */
function parseRedis(value: string | undefined, envName: string | undefined, env: NodeJS.ProcessEnv): string | null {
  if (value !== undefined && envName !== undefined) throw new UsageError('--redis and --redis-env both give the Redis URL: choose one');
  let url = value;
  let what = '--redis URL';
  if (envName !== undefined) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(envName)) throw new UsageError(`--redis-env must name an environment variable, got ${JSON.stringify(envName)}`);
    url = env[envName];
    what = `--redis-env ${envName}: the URL in ${envName}`;
    if (url === undefined || url.trim() === '') throw new UsageError(`--redis-env ${envName}: the environment variable ${envName} is not set (or empty)`);
  }
  if (url === undefined) return null;
  try {
    parseRedisUrl(url);
  } catch (err) {
    if (err instanceof RedisUrlError) throw new UsageError(`${what} ${err.message}`);
    throw err;
  }
  return url.trim();
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** node:util parseArgs, strict, no positionals; its errors become UsageErrors (exit 2). */
function parseFlags<T extends ParseArgsConfig['options']>(args: string[], options: T) {
  // parseArgs calls `--workers -1` "ambiguous" (the value looks like a flag); as `--workers=-1`
  // it reaches the flag's own check, which says what the flag accepts.
  const joined: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const next = args[i + 1];
    const name = arg.startsWith('--') && !arg.includes('=') ? arg.slice(2) : null;
    if (name !== null && options?.[name]?.type === 'string' && next !== undefined && /^-[0-9.]/.test(next)) {
      joined.push(`${arg}=${next}`);
      i++;
    } else joined.push(arg);
  }
  try {
    return parseArgs({ args: joined, strict: true, allowPositionals: false, options });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/**
 * `openFileLimit`: this process's soft open-file limit (read from
 * /proc/self/limits by default; null: unknown). An explicit --max-connections
 * that cannot fit under it is a UsageError (exit 2), in the cluster primary as
 * in a single process: each worker has the same limit.
 */
export function parseServerArgs(args: string[], env: NodeJS.ProcessEnv = process.env, openFileLimit: number | null = readOpenFileLimit()): ServerCliOptions | 'help' {
  const parsed = parseFlags(args, {
    address: { type: 'string' },
    path: { type: 'string' },
    www: { type: 'string' },
    'ping-interval': { type: 'string' },
    'pong-timeout': { type: 'string' },
    'write-timeout': { type: 'string' },
    'close-timeout': { type: 'string' },
    'headers-timeout': { type: 'string' },
    'max-payload': { type: 'string' },
    'send-queue': { type: 'string' },
    'max-connections': { type: 'string' },
    'max-message-rate': { type: 'string' },
    'max-connections-per-address': { type: 'string' },
    'max-pending-per-address': { type: 'string' },
    'trust-proxy': { type: 'string' },
    'fair-share': { type: 'string' },
    'turn-budget': { type: 'string' },
    'turn-time': { type: 'string' },
    'fan-out-slice': { type: 'string' },
    'budget-window': { type: 'string' },
    'budget-messages': { type: 'string' },
    'budget-bytes': { type: 'string' },
    'budget-fan-out': { type: 'string' },
    'budget-control': { type: 'string' },
    'allowed-origins': { type: 'string' },
    'log-level': { type: 'string' },
    inspect: { type: 'boolean' },
    'inspect-port': { type: 'string' },
    redis: { type: 'string' },
    'redis-env': { type: 'string' },
    'redis-max-in-flight': { type: 'string' },
    'redis-history': { type: 'boolean' },
    workers: { type: 'string' },
    'local-broadcast': { type: 'boolean' },
    'max-restarts': { type: 'string' },
    'restart-period': { type: 'string' },
    sessions: { type: 'boolean' },
    'session-store': { type: 'string' },
    'resume-window': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  const v = parsed.values;
  if (v.help) return 'help';
  const resumeWindow = positive('resume-window', v['resume-window']);
  if (resumeWindow !== undefined && !v.sessions) throw new UsageError('--resume-window needs --sessions');
  const logLevel = (v['log-level'] ?? 'info') as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(v['log-level'])}`);
  }
  const inspectPort = positive('inspect-port', v['inspect-port']);
  if (inspectPort !== undefined && inspectPort > 65535) throw new UsageError(`--inspect-port must be at most 65535, got ${inspectPort}`);
  if (inspectPort !== undefined && !v.inspect) throw new UsageError('--inspect-port needs --inspect');
  const { host, port } = parseAddress(v.address ?? 'localhost:8080');
  const path = v.path ?? '/server';
  if (!/^\/[^\s?#]*$/.test(path)) throw new UsageError(`--path must start with / and hold no spaces, ? or #, got ${JSON.stringify(path)}`);
  const www = v.www ?? bundledWww();
  if (!existsSync(www) || !statSync(www).isDirectory()) throw new UsageError(`--www ${JSON.stringify(www)} is not a directory`);
  const origins = parseOrigins(v['allowed-origins']);
  const redis = parseRedis(v.redis, v['redis-env'], env);
  const maxConnections = positive('max-connections', v['max-connections']);
  if (maxConnections !== undefined) {
    try {
      fitConnections({ maxConnections, explicit: true, headroom: HTTP_HEADROOM_DEFAULT, limit: openFileLimit, name: '--max-connections' });
    } catch (err) {
      if (err instanceof OpenFileLimitError) throw new UsageError(err.message.replace(/^ws-supervisor: /, ''));
      throw err;
    }
  }
  const trustProxy = parseTrustProxy(v['trust-proxy']);
  const redisMaxInFlightBytes = positive('redis-max-in-flight', v['redis-max-in-flight']);
  if (redisMaxInFlightBytes !== undefined && redis === null) throw new UsageError('--redis-max-in-flight needs --redis or --redis-env');
  const redisHistory = v['redis-history'] === true;
  if (redisHistory && redis === null) throw new UsageError('--redis-history needs --redis or --redis-env: the history is kept in that Redis');
  const workers = parseWorkers(v.workers);
  // `auto` may come to 1 on a one-CPU host: the cluster flags are then accepted and unused.
  const clustered = workers > 1 || v.workers === 'auto';
  for (const flag of ['max-restarts', 'restart-period', 'local-broadcast'] as const) {
    if (v[flag] !== undefined && !clustered) throw new UsageError(`--${flag} needs --workers 2 or more (or auto)`);
  }
  if (workers > 1 && redis === null && !v['local-broadcast']) {
    throw new UsageError(
      `--workers ${workers} without --redis: each worker is a separate process, so a broadcast would reach only ` +
        `the clients of the worker that received it (about 1 in ${workers}). Add --redis redis://HOST:PORT to fan ` +
        'broadcasts out to every worker, or --local-broadcast if per-worker broadcasts are what you want (docs/cluster.md)',
    );
  }
  if (v['local-broadcast'] && redis !== null) throw new UsageError('--local-broadcast contradicts --redis: choose one');
  const storeFlag = v['session-store'];
  if (storeFlag !== undefined && storeFlag !== 'memory' && storeFlag !== 'redis') {
    throw new UsageError(`--session-store must be memory or redis, got ${JSON.stringify(storeFlag)}`);
  }
  if (storeFlag !== undefined && !v.sessions) throw new UsageError('--session-store needs --sessions');
  if (storeFlag === 'redis' && redis === null) throw new UsageError('--session-store redis needs --redis URL (or --redis-env NAME): the Redis to keep the sessions in');
  // With Redis at hand, sessions go there: every worker and server sharing it can resume them (docs/cluster.md).
  const sessionStore = !v.sessions ? null : (storeFlag ?? (redis !== null ? 'redis' : 'memory'));
  if (sessionStore === 'memory' && clustered) {
    // Each worker's in-memory store would know only its own sessions: a resume landing on another worker fails.
    throw new UsageError(
      '--sessions with the memory store keeps sessions in one process, but with --workers a reconnecting client lands on any worker: ' +
        'add --redis URL (sessions then live in Redis, shared by every worker), or run a single process',
    );
  }
  if (v.inspect && workers > 1) {
    throw new UsageError('--inspect watches the actors of one process: use it with a single process (no --workers)');
  }
  const maxRestarts = nonNegative('max-restarts', v['max-restarts']) ?? RESTART_DEFAULTS.maxRestarts;
  const periodSeconds = positive('restart-period', v['restart-period']) ?? RESTART_DEFAULTS.periodSeconds;
  // Beyond a day the limit stops being a rate and becomes a lifetime count.
  if (periodSeconds > 86_400) throw new UsageError(`--restart-period must be at most 86400 seconds (a day), got ${periodSeconds}`);
  const options: ServerCliOptions = {
    logLevel,
    inspectPort: v.inspect ? (inspectPort ?? 8081) : null,
    redis,
    redisMaxInFlightBytes,
    redisHistory,
    workers,
    restart: { maxRestarts, periodMs: periodSeconds * 1000 },
    sessionStore,
    host,
    port,
    path,
    www,
    timing: {
      pingInterval: positive('ping-interval', v['ping-interval']),
      pongTimeout: positive('pong-timeout', v['pong-timeout']),
      writeTimeout: positive('write-timeout', v['write-timeout']),
      closeTimeout: positive('close-timeout', v['close-timeout']),
    },
    headersTimeout: positive('headers-timeout', v['headers-timeout']),
    sendQueue: { maxMessages: positive('send-queue', v['send-queue']) },
    maxPayload: positive('max-payload', v['max-payload']),
    maxConnections,
    maxMessageRate: positive('max-message-rate', v['max-message-rate']),
    // R21: fairness and per-connection budgets.
    fairness: {
      share: positive('fair-share', v['fair-share']),
      turnBudget: positive('turn-budget', v['turn-budget']),
      turnTime: positive('turn-time', v['turn-time']),
      fanOutSlice: positive('fan-out-slice', v['fan-out-slice']),
    },
    budget: {
      window: positive('budget-window', v['budget-window']),
      messages: budgetFlag('budget-messages', v['budget-messages']),
      bytes: budgetFlag('budget-bytes', v['budget-bytes']),
      fanOut: budgetFlag('budget-fan-out', v['budget-fan-out']),
      control: budgetFlag('budget-control', v['budget-control']),
    },
    ...(origins !== undefined ? { origins } : {}),
    // Per-address limits (R21).
    maxConnectionsPerAddress: positive('max-connections-per-address', v['max-connections-per-address']),
    maxPendingPerAddress: positive('max-pending-per-address', v['max-pending-per-address']),
    ...(trustProxy !== undefined ? { trustProxy } : {}),
    ...(v.sessions ? { sessions: resumeWindow !== undefined ? { resumeWindow } : {} } : {}),
  };
  return options;
}


export interface ClientCliOptions {
  /** ws://HOST:PORT/PATH */
  url: string;
  /** Time between requests, ms. */
  interval: number;
  /** --session: ask for a session. */
  session: boolean;
}


export function parseClientArgs(args: string[]): ClientCliOptions | 'help' {
  const parsed = parseFlags(args, {
    url: { type: 'string' },
    address: { type: 'string' },
    path: { type: 'string' },
    interval: { type: 'string' },
    session: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  const v = parsed.values;
  if (v.help) return 'help';
  const interval = positive('interval', v.interval) ?? CLIENT_CLI_DEFAULTS.interval;
  // Node's timers cap at 2^31-1 ms (and silently fire after 1 ms beyond it).
  if (interval > 2 ** 31 - 1) throw new UsageError(`--interval must be at most ${2 ** 31 - 1} ms, got ${JSON.stringify(v.interval)}`);
  if (v.url !== undefined) {
    for (const flag of ['address', 'path'] as const) {
      if (v[flag] !== undefined) throw new UsageError(`--url and --${flag} both say where to connect: give the whole URL with --url, or --address and --path`);
    }
    return { url: parseClientUrl(v.url), interval, session: v.session ?? false };
  }
  const { host, port } = parseAddress(v.address ?? CLIENT_CLI_DEFAULTS.address);
  if (port === 0) throw new UsageError(`--address: a client needs a port to connect to, got ${JSON.stringify(v.address)}`);
  const path = v.path ?? CLIENT_CLI_DEFAULTS.path;
  if (!/^\/[^\s?#]*$/.test(path)) throw new UsageError(`--path must start with / and hold no spaces, ? or #, got ${JSON.stringify(path)}`);
  // ':PORT' means "all interfaces" to a server; a client dials the local host.
  const dial = host === '::' ? 'localhost' : host;
  const shown = dial.includes(':') ? `[${dial}]` : dial;
  const url = `ws://${shown}:${port}${path}`;
  try {
    new URL(url);
  } catch {
    throw new UsageError(`--address: ${JSON.stringify(v.address)} does not make a valid URL (${url})`);
  }
  return { url, interval, session: v.session ?? false };
}

/** --url: a ws:// or wss:// URL with a host, as the client (and `ws`) will dial it. */
export function parseClientUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new UsageError(`--url must be a ws:// or wss:// URL (e.g. ws://localhost:8080/server), got ${JSON.stringify(value)}`);
  }
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
    throw new UsageError(`--url must start with ws:// or wss://, got ${JSON.stringify(value)}`);
  }
  if (url.hostname === '') throw new UsageError(`--url names no host: ${JSON.stringify(value)}`);
  if (url.port === '0') throw new UsageError(`--url: a client needs a port to connect to, got ${JSON.stringify(value)}`);
  if (url.hash !== '') throw new UsageError(`--url: a WebSocket URL has no #fragment, got ${JSON.stringify(value)}`);
  return url.href;
}

/** What the command line asks for: one subcommand with its options, a help text, or the version. */
export type Command =
  | { kind: 'server'; options: ServerCliOptions }
  | { kind: 'client'; options: ClientCliOptions }
  | { kind: 'help'; text: string; exitCode: 0 | 2 }
  | { kind: 'version' };

export const COMMANDS = ['server', 'client'] as const;

/** The whole command line (without `node main.js`). Bad input throws UsageError (exit 2). */
export function parseCommand(argv: string[], env: NodeJS.ProcessEnv = process.env): Command {
  const [command, ...rest] = argv;
  switch (command) {
    case undefined:
      return { kind: 'help', text: USAGE, exitCode: 2 };
    case '-h':
    case '--help':
      return { kind: 'help', text: USAGE, exitCode: 0 };
    case '-v':
    case '--version':
      // Like every other command, nothing unexpected after it is ignored: `--version extra` printed the version.
      if (rest.length > 0) throw new UsageError(`${command} takes no arguments, got ${JSON.stringify(rest.join(' '))}`);
      return { kind: 'version' };
    case 'help': {
      const [topic, ...extra] = rest;
      if (extra.length > 0) throw new UsageError(`help takes at most one command, got ${JSON.stringify(rest.join(' '))}`);
      if (topic === undefined) return { kind: 'help', text: USAGE, exitCode: 0 };
      if (topic === 'server') return { kind: 'help', text: SERVER_USAGE, exitCode: 0 };
      if (topic === 'client') return { kind: 'help', text: CLIENT_USAGE, exitCode: 0 };
      throw new UsageError(`unknown command ${JSON.stringify(topic)} (expected: ${COMMANDS.join(' or ')})`);
    }
    case 'server': {
      const options = parseServerArgs(rest, env);
      return options === 'help' ? { kind: 'help', text: SERVER_USAGE, exitCode: 0 } : { kind: 'server', options };
    }
    case 'client': {
      const options = parseClientArgs(rest);
      return options === 'help' ? { kind: 'help', text: CLIENT_USAGE, exitCode: 0 } : { kind: 'client', options };
    }
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)} (expected: ${COMMANDS.join(' or ')}; --help lists them)`);
  }
}

/** Where a UsageError sends the user for help: the subcommand's flags, or the command list. */
export function helpHint(argv: readonly string[]): string {
  const command = argv[0];
  return command === 'server' || command === 'client' ? `ws-supervisor ${command} --help` : 'ws-supervisor --help';
}

/** The version in this package's package.json (found from src/cli/ under tsx, dist/src/cli/ when built). */
export function packageVersion(): string {
  for (const rel of ['../../package.json', '../../../package.json']) {
    const file = fileURLToPath(new URL(rel, import.meta.url));
    if (!existsSync(file)) continue;
    const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: unknown; version?: unknown };
    if (pkg.name === 'ws-supervisor' && typeof pkg.version === 'string') return pkg.version;
  }
  throw new Error('ws-supervisor: its package.json was not found next to the CLI');
}
