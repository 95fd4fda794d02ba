/**
 * `ws-supervisor server --workers N` end to end (src/cli/cluster.ts): a real
 * primary and real workers on 127.0.0.1, driven by `ws` clients, plain HTTP
 * (the X-Worker header and the `worker` metric label say which worker
 * answered) and signals. Every process started is SIGKILLed at the latest in
 * the test's `after` (the primary's death also ends its workers).
 *
 * The flag checks run in-process (parseServerArgs, and usageExit: the exit
 * status and message the CLI gives a UsageError); one bad flag and --help run
 * as the CLI, to show main.ts takes that path. Starting ~30 CLI processes at
 * once for the same check failed on a busy 2-core machine (docs/testing.md).
 */
import assert from 'node:assert/strict';
import net, { type AddressInfo } from 'node:net';
import { availableParallelism } from 'node:os';
import { after, describe, test } from 'node:test';
import WebSocket from 'ws';
import { parseServerArgs, usageExit, SERVER_USAGE, UsageError, type ServerCliOptions } from '../../src/cli/args.ts';
import { createRedisAdapter } from '../../src/adapter/redis.ts';
import { parseRedisUrl, redactRedisUrl } from '../../src/adapter/redis-url.ts';
import { RESTART_DEFAULTS } from '../../src/cli/restart-intensity.ts';
import { closeOf, delay, openClient, within } from '../helpers/server.ts';
import { budgets, httpGet, metric, runCli, startCliServer, type CliServer } from '../helpers/cli.ts';
import { startRedis } from '../helpers/redis.ts';

type TestContext = { after(fn: () => void | Promise<void>): void };

/** Measured once, before the tests are declared: their timeouts scale with this machine's speed now. */
const budget = await budgets();

const READY = /worker (\d+) \(pid (\d+)\) ready/g;

interface Cluster extends CliServer {
  /** slot → pid of its latest worker, from the primary's "ready" lines. */
  workers(): Map<number, number>;
  /** Waits for a "worker <slot> (pid P) ready" line with a pid other than `not`; returns P. */
  readyAgain(slot: number, not: number, timeoutMs?: number): Promise<number>;
}

/** Every worker pid ever seen, SIGKILLed after each test (belt and braces: they exit with the primary anyway). */
function trackWorkers(srv: CliServer, t: TestContext): Cluster {
  const seen = new Set<number>();
  const workers = (): Map<number, number> => {
    const map = new Map<number, number>();
    for (const m of srv.stdout().matchAll(READY)) {
      map.set(Number(m[1]), Number(m[2]));
      seen.add(Number(m[2]));
    }
    return map;
  };
  t.after(() => {
    workers();
    for (const pid of seen) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  });
  return {
    ...srv,
    workers,
    async readyAgain(slot, not, timeoutMs = budget.startMs) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const pid = workers().get(slot);
        if (pid !== undefined && pid !== not) return pid;
        if (Date.now() > deadline) throw new Error(`worker ${slot} not ready again within ${timeoutMs} ms:\n${srv.stdout()}\n${srv.stderr()}`);
        await delay(50);
      }
    },
  };
}

async function startCluster(flags: string[], t: TestContext): Promise<Cluster> {
  // The primary starts, then its workers start together: two startups in a row.
  const srv = await startCliServer(['--workers', '2', ...flags], t, 2 * budget.startMs);
  const c = trackWorkers(srv, t);
  assert.equal(c.workers().size, 2, `two workers ready: ${srv.stdout()}`);
  return c;
}

/**
 * One cluster shared by the tests of a block, started by the first that asks
 * (each start is a primary and two workers, the bulk of this file's time) and
 * killed after the block. Tests that end the cluster (signals, the restart
 * intensity, a failed start) keep their own. Each test closes its clients;
 * the next waits until the workers have seen them go (`idle`).
 */
function sharedCluster(flags: string[], prepare?: (ctx: TestContext) => Promise<string[] | null>) {
  const cleanups: Array<() => void | Promise<void>> = [];
  const ctx: TestContext = { after: (fn) => void cleanups.push(fn) };
  let started: Promise<Cluster | null> | undefined;
  after(async () => {
    for (const fn of cleanups.reverse()) await fn();
  });
  return (): Promise<Cluster | null> =>
    (started ??= (async () => {
      const extra = prepare ? await prepare(ctx) : [];
      return extra === null ? null : startCluster([...flags, ...extra], ctx);
    })());
}

/** Waits until no worker counts a WebSocket connection (an earlier test's clients are gone). */
async function idle(base: string, timeoutMs = budget.scaled(10_000)): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const per = await connectionsPerWorker(base);
    if ([...per.values()].every((n) => n === 0)) return;
    if (Date.now() > deadline) assert.fail(`connections left from an earlier test: ${JSON.stringify([...per])}`);
    await delay(50);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function allGone(pids: Iterable<number>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const list = [...pids];
  while (list.some(alive)) {
    if (Date.now() > deadline) assert.fail(`processes still alive: ${list.filter(alive).join(', ')}`);
    await delay(50);
  }
}

/** GET `path` with a fresh TCP connection each time until every slot in `slots` has answered; returns slot → body. */
async function fromEachWorker(base: string, path: string, slots: number[], timeoutMs = 10_000): Promise<Map<number, string>> {
  const bodies = new Map<number, string>();
  const deadline = Date.now() + timeoutMs;
  while (slots.some((s) => !bodies.has(s))) {
    if (Date.now() > deadline) assert.fail(`only workers ${[...bodies.keys()].join(', ')} answered ${path}`);
    const r = await httpGet(`${base}${path}`);
    const slot = Number(r.headers['x-worker']);
    assert.ok(Number.isInteger(slot) && slot > 0, `X-Worker header on ${path}: ${String(r.headers['x-worker'])}`);
    if (r.status === 200) bodies.set(slot, r.body);
  }
  return bodies;
}

/** Waits until /healthz of every worker says ok (with --redis: its adapter is up, i.e. subscribed). */
async function adaptersUp(base: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const bodies = await fromEachWorker(base, '/healthz', [1, 2]);
    if ([...bodies.values()].every((b) => b === 'ok\n')) return;
    if (Date.now() > deadline) assert.fail(`workers not healthy: ${JSON.stringify([...bodies])}`);
    await delay(100);
  }
}

/** Counts the broadcast pushes each client receives, by payload. */
function countPushes(clients: WebSocket[]): Array<Map<string, number>> {
  return clients.map((ws) => {
    const seen = new Map<string, number>();
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString()) as { command?: string; someOtherThing?: string };
      if (m.command === 'broadcast') seen.set(m.someOtherThing!, (seen.get(m.someOtherThing!) ?? 0) + 1);
    });
    return seen;
  });
}

/** Waits until every client got `payload` once; fails on a duplicate or after timeoutMs. */
async function everyoneGot(counts: Array<Map<string, number>>, payload: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (counts.some((c) => c.get(payload) !== 1)) {
    if (Date.now() > deadline) assert.fail(`${payload}: ${counts.map((c) => c.get(payload) ?? 0).join(', ')} (one each expected)`);
    await delay(20);
  }
  await delay(200); // a duplicate would show now
  assert.deepEqual(counts.map((c) => c.get(payload)), counts.map(() => 1), `${payload} exactly once each`);
}

/** Live connections per worker, read from each worker's /metrics. */
async function connectionsPerWorker(base: string): Promise<Map<number, number>> {
  const bodies = await fromEachWorker(base, '/metrics', [1, 2]);
  return new Map([...bodies].map(([slot, text]) => [slot, metric(text, 'ws_supervisor_connections', { worker: String(slot) })]));
}

/** Opens `n` clients one after another (the primary hands connections to the workers in turn). */
async function openClients(url: string, n: number, t: TestContext): Promise<WebSocket[]> {
  const clients: WebSocket[] = [];
  t.after(() => {
    for (const ws of clients) ws.terminate();
  });
  for (let i = 0; i < n; i++) {
    const ws = await openClient(url);
    ws.on('error', () => undefined);
    clients.push(ws);
  }
  return clients;
}

/** Sends one request and waits for its reply. */
function request(ws: WebSocket, requestID: number, timeoutMs = 5_000): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no reply to ${requestID} within ${timeoutMs} ms`)), timeoutMs);
    const onMessage = (data: WebSocket.RawData): void => {
      const m = JSON.parse(data.toString()) as Record<string, unknown>;
      if (m.requestID !== requestID) return;
      clearTimeout(timer);
      ws.off('message', onMessage);
      resolve(m);
    };
    ws.on('message', onMessage);
    ws.send(JSON.stringify({ requestID, command: 'ping' }));
  });
}

// ---------------------------------------------------------------------------

describe('cluster flags', () => {
  const parse = (args: string[]): ServerCliOptions => {
    const o = parseServerArgs(args);
    assert.notEqual(o, 'help');
    return o as ServerCliOptions;
  };

  test('defaults: one process, no Redis, restart intensity 5 within 60 s', () => {
    const o = parse([]);
    assert.equal(o.workers, 1);
    assert.equal(o.redis, null);
    assert.deepEqual(o.restart, { maxRestarts: RESTART_DEFAULTS.maxRestarts, periodMs: RESTART_DEFAULTS.periodSeconds * 1000 });
    assert.deepEqual(RESTART_DEFAULTS, { maxRestarts: 5, periodSeconds: 60 });
  });

  test('--workers N, --workers auto, --redis, --max-restarts, --restart-period', () => {
    const o = parse(['--workers', '3', '--redis', 'redis://127.0.0.1:6379/2', '--max-restarts', '0', '--restart-period', '10']);
    assert.equal(o.workers, 3);
    assert.equal(o.redis, 'redis://127.0.0.1:6379/2');
    assert.deepEqual(o.restart, { maxRestarts: 0, periodMs: 10_000 });
    assert.equal(parse(['--workers', 'auto', '--redis', 'rediss://user:pw@cache.example:6380']).workers, availableParallelism());
    assert.equal(parse(['--workers', '2', '--local-broadcast']).redis, null);
    assert.equal(parse(['--redis', 'redis://localhost']).workers, 1, '--redis alone: one process with the adapter');
  });

  const bad: Array<{ args: string[]; mentions: string[] }> = [
    { args: ['--workers', '0'], mentions: ['--workers', '"0"'] },
    { args: ['--workers', 'abc'], mentions: ['--workers', 'abc'] },
    { args: ['--workers', '1.5'], mentions: ['--workers', '1.5'] },
    { args: ['--workers', '257'], mentions: ['--workers', '257', '256'] },
    { args: ['--redis', 'http://127.0.0.1:6379'], mentions: ['--redis', 'redis://', 'http://127.0.0.1:6379'] },
    { args: ['--redis', '127.0.0.1:6379'], mentions: ['--redis', '127.0.0.1:6379'] },
    { args: ['--redis', 'redis://'], mentions: ['--redis', 'host'] },
    { args: ['--workers', '2'], mentions: ['--workers 2 without --redis', 'only', '--redis redis://', '--local-broadcast', 'docs/cluster.md'] },
    { args: ['--max-restarts', '3'], mentions: ['--max-restarts', '--workers'] },
    { args: ['--workers', '1', '--restart-period', '5'], mentions: ['--restart-period', '--workers'] },
    { args: ['--local-broadcast'], mentions: ['--local-broadcast', '--workers'] },
    { args: ['--workers', '2', '--local-broadcast', '--max-restarts', 'x'], mentions: ['--max-restarts', '"x"'] },
    { args: ['--workers', '2', '--local-broadcast', '--restart-period', '0'], mentions: ['--restart-period', '"0"'] },
    { args: ['--workers', '2', '--local-broadcast', '--restart-period', '90000'], mentions: ['--restart-period', '86400'] },
    { args: ['--workers', '2', '--redis', 'redis://x', '--local-broadcast'], mentions: ['--local-broadcast', '--redis'] },
    { args: ['--workers', '2', '--local-broadcast', '--inspect'], mentions: ['--inspect', 'single process'] },
    // D6: the path is the database number, nothing else.
    { args: ['--redis', 'redis://127.0.0.1:6379/notadb'], mentions: ['--redis', 'database', '"/notadb"'] },
    { args: ['--redis', 'redis://127.0.0.1:6379/-1'], mentions: ['--redis', 'database', '"/-1"'] },
    { args: ['--redis', 'redis://127.0.0.1:6379/0/extra'], mentions: ['--redis', '"/0/extra"'] },
    { args: ['--workers', '2', '--redis', 'redis://:s3cr3t@127.0.0.1:6379/notadb'], mentions: ['--redis', 'redis://:***@127.0.0.1:6379/notadb'] },
    // D7: what the adapter cannot use, the CLI refuses (one parser for both).
    { args: ['--redis', 'unix:///tmp/redis.sock'], mentions: ['--redis URL is a unix socket'] },
    { args: ['--redis', 'redis://127.0.0.1:99999'], mentions: ['--redis', 'not a valid URL'] },
    { args: ['--redis', 'redis://127.0.0.1:6379?enableOfflineQueue=1'], mentions: ['--redis', 'unsupported query parameter "enableOfflineQueue"'] },
    { args: ['--redis', 'redis://127.0.0.1:6379?family=5'], mentions: ['--redis', 'family'] },
    { args: ['--redis-env', 'WS_SUPERVISOR_SURELY_UNSET_VAR'], mentions: ['--redis-env WS_SUPERVISOR_SURELY_UNSET_VAR', 'not set'] },
    { args: ['--redis', 'redis://x', '--redis-env', 'X'], mentions: ['--redis-env', 'choose one'] },
    // D9: a negative number gets the flag's own message, not parseArgs' "ambiguous".
    { args: ['--workers', '-1'], mentions: ['--workers must be auto or an integer from 1 to 256, got "-1"'] },
    { args: ['--workers', '2', '--local-broadcast', '--max-restarts', '-1'], mentions: ['--max-restarts must be an integer ≥ 0, got "-1"'] },
    { args: ['--workers', '2', '--local-broadcast', '--restart-period', '-5'], mentions: ['--restart-period must be a positive integer, got "-5"'] },
  ];
  /** What the CLI prints and exits with for `args` (in-process: parseServerArgs, then usageExit as main.ts does). */
  const usageOf = (args: string[]): { exitCode: number; stderr: string } => {
    let thrown: unknown;
    try {
      parseServerArgs(args);
    } catch (err) {
      thrown = err;
    }
    assert.ok(thrown instanceof UsageError, `a UsageError for ${args.join(' ')}: ${String(thrown)}`);
    const exit = usageExit(thrown, ['server', ...args]);
    assert.ok(exit !== null);
    return exit;
  };
  const namesTheProblem = (stderr: string, mentions: string[]): void => {
    for (const m of mentions) assert.ok(stderr.includes(m), `stderr names ${m}: ${stderr}`);
    assert.match(stderr, /^ws-supervisor: /);
    assert.match(stderr, /Run 'ws-supervisor server --help' for the flags\.\n$/);
    assert.doesNotMatch(stderr, /ambiguous|\n\s+at /, 'no parseArgs wording, no stack trace');
    assert.ok(!stderr.includes('s3cr3t'), 'a password in the URL is masked in the message');
  };
  for (const { args, mentions } of bad) {
    test(`server ${args.join(' ')} exits 2 naming the problem`, () => {
      const { exitCode, stderr } = usageOf(args);
      assert.equal(exitCode, 2);
      namesTheProblem(stderr, mentions);
    });
  }

  test('as the CLI: a bad cluster flag exits 2 with that message, before anything starts', { timeout: budget.scaled(20_000) }, async () => {
    const args = ['--workers', '2', '--redis', 'redis://:s3cr3t@127.0.0.1:6379/notadb'];
    const r = await runCli(['server', ...args]);
    assert.equal(r.timedOut, false, 'the CLI must not start serving');
    assert.equal(r.code, 2, `exit code (stderr: ${r.stderr})`);
    assert.equal(r.stderr, usageOf(args).stderr, 'exactly what usageExit says, nothing else');
    namesTheProblem(r.stderr, ['--redis', 'redis://:***@127.0.0.1:6379/notadb']);
    assert.doesNotMatch(r.stdout, /listening|ready/);
  });

  test('D7: the CLI and createRedisAdapter accept and refuse the same URLs (one parser)', () => {
    const accepted = [
      'REDIS://127.0.0.1:6379',
      'Redis://127.0.0.1:6379/3',
      ' redis://127.0.0.1:6379 ',
      'rediss://user:p%40ss@cache.example:6380/2',
      'redis://[::1]:6379',
      'redis://127.0.0.1:6379?family=6',
      'redis://127.0.0.1:6379/0?password=pw',
      'redis://127.0.0.1:6379?db=2',
      'redis://127.0.0.1',
    ];
    const refused = [
      'http://127.0.0.1:6379', 'redis://', 'redis://127.0.0.1:6379/notadb', 'redis://127.0.0.1:6379/16x', 'redis://127.0.0.1:6379/-1',
      'unix:///tmp/redis.sock', 'redis://127.0.0.1:6379?tls=1', 'redis://h:1/2?db=3', 'redis://:a@h?password=b', 'redis://h#x', 'redis://h /0',
    ];
    for (const url of accepted) {
      assert.doesNotThrow(() => parse(['--redis', url]), url);
      assert.doesNotThrow(() => createRedisAdapter({ url }), url);
    }
    for (const url of refused) {
      assert.throws(() => parse(['--redis', url]), UsageError, url);
      assert.throws(() => createRedisAdapter({ url }), RangeError, url);
    }
    assert.equal(parse(['--redis', ' REDIS://127.0.0.1:6379 ']).redis, 'REDIS://127.0.0.1:6379', 'trimmed');
    const target = parseRedisUrl('rediss://user:p%40ss@cache.example:6380/2');
    assert.deepEqual(
      { ...target },
      { host: 'cache.example', port: 6380, username: 'user', password: 'p@ss', db: 2, tls: true, family: undefined, display: 'rediss://user:***@cache.example:6380/2' },
    );
    assert.equal(parseRedisUrl('redis://[::1]').host, '::1');
    assert.equal(redactRedisUrl('redis://h:1/0?password=pw&token=t&family=4'), 'redis://h:1/0?password=***&token=***&family=4');
    assert.equal(redactRedisUrl('not a url redis://:pw@h?password=x'), 'not a url redis://:***@h?password=***');
  });

  test('--redis-env NAME reads the URL from the environment', () => {
    assert.equal((parseServerArgs(['--redis-env', 'MY_REDIS'], { MY_REDIS: 'redis://127.0.0.1:6379/1' }) as ServerCliOptions).redis, 'redis://127.0.0.1:6379/1');
    assert.throws(() => parseServerArgs(['--redis-env', 'MY_REDIS'], { MY_REDIS: 'redis://h/x' }), /--redis-env MY_REDIS: the URL in MY_REDIS has a bad path/);
    assert.equal((parseServerArgs(['--workers', '2', '--redis-env', 'R'], { R: 'redis://h' }) as ServerCliOptions).workers, 2, 'counts as --redis for --workers');
  });

  test('server --help lists the cluster flags', () => {
    // `server --help` prints SERVER_USAGE (test/cli/server.test.ts runs it as the CLI).
    assert.equal(parseServerArgs(['--help']), 'help');
    for (const flag of ['--redis URL', '--workers N', '--local-broadcast', '--max-restarts N', '--restart-period SECONDS']) {
      assert.ok(SERVER_USAGE.includes(flag), `--help lists ${flag}`);
    }
  });
});

// ---------------------------------------------------------------------------

describe('cluster: --workers 2', { timeout: budget.scaled(180_000) }, () => {
  // Serving, --local-broadcast and worker restarts share one cluster (3 restarts, under the default intensity of 5 in 60 s).
  const shared = sharedCluster(['--local-broadcast', '--log-level', 'debug']);

  test('both workers serve HTTP and WebSockets; X-Worker, the worker label and the logs say which', { timeout: budget.scaled(60_000) }, async (t) => {
    const srv = (await shared())!;
    await idle(srv.base);
    assert.match(srv.stderr(), /warning: --local-broadcast/);
    assert.match(srv.stdout(), /listening on http:\/\/127\.0\.0\.1:\d+\/ \(WebSocket ws:\/\/127\.0\.0\.1:\d+\/server\), 2 workers/);
    const health = await fromEachWorker(srv.base, '/healthz', [1, 2]);
    for (const body of health.values()) assert.equal(body, 'ok\n');

    const clients = await openClients(srv.wsUrl, 6, t);
    for (const [i, ws] of clients.entries()) assert.equal((await request(ws, i + 1)).success, true);
    const perWorker = await connectionsPerWorker(srv.base);
    console.log(`connections per worker: ${JSON.stringify([...perWorker])}`);
    assert.equal(perWorker.get(1)! + perWorker.get(2)!, 6, 'every client is on one of the two workers');
    assert.ok(perWorker.get(1)! >= 1 && perWorker.get(2)! >= 1, 'both workers hold WebSocket connections');

    // pino lines from both workers carry their slot next to the connection id.
    const slots = new Set<number>();
    for (const line of srv.stdout().split('\n')) {
      if (!line.startsWith('{')) continue;
      const entry = JSON.parse(line) as { worker?: number; conn?: string };
      if (entry.conn !== undefined) {
        assert.ok(entry.worker === 1 || entry.worker === 2, `a connection log line without its worker: ${line}`);
        slots.add(entry.worker);
      }
    }
    assert.deepEqual([...slots].sort(), [1, 2], 'connection logs from both workers');
  });

  test('--local-broadcast: a broadcast reaches only the sender\'s worker, as documented', { timeout: budget.scaled(60_000) }, async (t) => {
    const srv = (await shared())!;
    await idle(srv.base);
    const clients = await openClients(srv.wsUrl, 6, t);
    const perWorker = await connectionsPerWorker(srv.base);
    assert.ok(perWorker.get(1)! >= 1 && perWorker.get(2)! >= 1, 'clients on both workers');
    const got = clients.map(() => 0);
    clients.forEach((ws, i) =>
      ws.on('message', (data) => {
        if (JSON.parse(data.toString()).command === 'broadcast') got[i]!++;
      }),
    );
    clients[0]!.send('{"requestID":1,"command":"broadcast","someOtherThing":"hello"}');
    await delay(500);
    const reached = got.filter((n) => n === 1).length;
    assert.ok(got.every((n) => n <= 1), 'no duplicates');
    assert.ok([perWorker.get(1), perWorker.get(2)].includes(reached), `reached ${reached}: exactly the sender's worker's clients (${JSON.stringify([...perWorker])})`);
    assert.ok(reached < clients.length, 'not the other worker\'s');
  });

  test('a SIGKILLed worker is restarted and serves again; the other worker\'s clients are untouched', { timeout: budget.scaled(60_000) }, async (t) => {
    const srv = (await shared())!;
    await idle(srv.base);
    const clients = await openClients(srv.wsUrl, 4, t);
    const closes = clients.map((ws) => closeOf(ws));
    const victim = srv.workers().get(1)!;
    const survivor = srv.workers().get(2)!;
    process.kill(victim, 'SIGKILL');

    const replacement = await srv.readyAgain(1, victim);
    assert.notEqual(replacement, victim);
    assert.ok(alive(survivor), 'worker 2 kept running');
    assert.match(srv.stderr(), new RegExp(`worker 1 \\(pid ${victim}\\) was killed by SIGKILL: restarting it \\(restart 1 of at most ${RESTART_DEFAULTS.maxRestarts} within ${RESTART_DEFAULTS.periodSeconds} s\\)`));

    // The killed worker's clients lost their connection (no close frame); worker 2's still answer.
    await delay(200);
    const cut = clients.filter((ws) => ws.readyState !== WebSocket.OPEN);
    const kept = clients.filter((ws) => ws.readyState === WebSocket.OPEN);
    assert.ok(cut.length >= 1 && kept.length >= 1, `cut ${cut.length}, kept ${kept.length}`);
    for (const [i, ws] of cut.entries()) assert.equal((await closes[clients.indexOf(ws)]!).code, 1006, `client ${i}`);
    for (const [i, ws] of kept.entries()) assert.equal((await request(ws, 100 + i)).success, true);

    // The replacement serves HTTP and new WebSocket clients.
    const health = await fromEachWorker(srv.base, '/healthz', [1, 2]);
    assert.equal(health.get(1), 'ok\n');
    const fresh = await openClients(srv.wsUrl, 4, t);
    for (const [i, ws] of fresh.entries()) assert.equal((await request(ws, 200 + i)).success, true);
    const perWorker = await connectionsPerWorker(srv.base);
    assert.ok(perWorker.get(1)! >= 1, `the new worker 1 holds connections: ${JSON.stringify([...perWorker])}`);
    assert.equal(perWorker.get(1)! + perWorker.get(2)!, kept.length + fresh.length);
    assert.equal(srv.child.exitCode, null, 'the primary is still running');
  });

  test('both workers SIGKILLed at once come back on the same port (--address :0)', { timeout: budget.scaled(60_000) }, async (t) => {
    const srv = (await shared())!;
    const [one, two] = [srv.workers().get(1)!, srv.workers().get(2)!];
    process.kill(one, 'SIGKILL');
    process.kill(two, 'SIGKILL');
    await srv.readyAgain(1, one);
    await srv.readyAgain(2, two);
    // Both answer on the port the cluster started with (a replacement that landed elsewhere is replaced again).
    const health = await fromEachWorker(srv.base, '/healthz', [1, 2]);
    assert.deepEqual([...health.values()], ['ok\n', 'ok\n']);
    const clients = await openClients(srv.wsUrl, 4, t);
    for (const [i, ws] of clients.entries()) assert.equal((await request(ws, i + 1)).success, true);
    assert.equal(srv.child.exitCode, null, 'the primary is still running');
  });
});

/**
 * The tests that end their cluster (the restart intensity, the signals, a worker that cannot start) each start their
 * own: they mostly wait (a drain's close timeout, restarts, the primary's exit), so two run at once; process starts
 * stay under the suite's start bound (test/helpers/cli.ts).
 */
describe('cluster: --workers 2, a cluster of its own per test', { timeout: budget.scaled(180_000), concurrency: 2 }, () => {
  test('exceeding the restart intensity drains the other workers and exits 1', { timeout: budget.scaled(60_000) }, async (t) => {
    const srv = await startCluster(['--local-broadcast', '--max-restarts', '1', '--restart-period', '60', '--close-timeout', '1000'], t);
    const first = srv.workers().get(1)!;
    const other = srv.workers().get(2)!;
    process.kill(first, 'SIGKILL');
    const second = await srv.readyAgain(1, first);
    const clients = await openClients(srv.wsUrl, 4, t);
    const closes = clients.map((ws) => closeOf(ws));
    process.kill(second, 'SIGKILL');

    const exit = await within(srv.exited, budget.scaled(20_000));
    assert.deepEqual(exit, { code: 1, signal: null }, `primary exit\n${srv.stderr()}`);
    assert.match(srv.stderr(), new RegExp(`worker 1 \\(pid ${second}\\) was killed by SIGKILL: 2 crashes within 60 s exceed the restart intensity \\(--max-restarts 1 within --restart-period 60\\)`));
    assert.match(srv.stdout(), /\[worker 2\]: primary asked: draining \d+ connection\(s\)/);
    // Worker 2's clients got the drain's 1001, worker 1's lost their connection.
    const codes = (await Promise.all(closes)).map((c) => c.code).sort();
    assert.ok(codes.includes(1001), `worker 2's clients got 1001: ${codes.join(', ')}`);
    assert.ok(codes.every((c) => c === 1001 || c === 1006), `codes: ${codes.join(', ')}`);
    await allGone([first, second, other]);
  });

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    test(`${signal} to the primary drains every worker (1001 to all clients) and exits 0`, { timeout: budget.scaled(60_000) }, async (t) => {
      const srv = await startCluster(['--local-broadcast', '--close-timeout', '1500'], t);
      const pids = [...srv.workers().values()];
      const clients = await openClients(srv.wsUrl, 6, t);
      const perWorker = await connectionsPerWorker(srv.base);
      assert.ok(perWorker.get(1)! >= 1 && perWorker.get(2)! >= 1, 'clients on both workers');
      const closes = clients.map((ws) => closeOf(ws));
      const sentAt = Date.now();
      srv.child.kill(signal);
      const exit = await within(srv.exited, budget.scaled(20_000));
      const elapsed = Date.now() - sentAt;
      assert.deepEqual(exit, { code: 0, signal: null }, `primary exit\n${srv.stdout()}\n${srv.stderr()}`);
      for (const c of await Promise.all(closes)) assert.equal(c.code, 1001);
      const out = srv.stdout();
      assert.match(out, new RegExp(`ws-supervisor: ${signal}: draining 2 worker\\(s\\)`));
      for (const slot of [1, 2]) {
        assert.match(out, new RegExp(`\\[worker ${slot}\\]: primary asked: draining ${perWorker.get(slot)} connection\\(s\\)`));
        assert.match(out, new RegExp(`\\[worker ${slot}\\]: drained, bye`));
      }
      assert.match(out, /ws-supervisor: all workers drained, bye/);
      console.log(`${signal}: cluster drained and exited after ${elapsed} ms`);
      assert.ok(elapsed < 1500 + budget.scaled(5_000), `bounded (${elapsed} ms)`);
      await allGone(pids);
    });
  }

  test('a worker that cannot start (address in use) stops the cluster with exit 1', { timeout: budget.scaled(60_000) }, async (t) => {
    // The port is held by a listener of this process, not by another CLI (one CLI start fewer, ~0.4 s
    // of CPU): what is checked is the cluster's answer to EADDRINUSE, whoever holds the port.
    const holder = net.createServer();
    await new Promise<void>((resolve, reject) => holder.once('error', reject).listen(0, '127.0.0.1', resolve));
    t.after(() => holder.close());
    const taken = { port: (holder.address() as AddressInfo).port };
    const r = await runCli(['server', '--address', `127.0.0.1:${taken.port}`, '--workers', '2', '--local-broadcast'], 2 * budget.startMs);
    assert.equal(r.timedOut, false);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /cannot listen: .*EADDRINUSE/);
    assert.match(r.stderr, /worker \d \(pid \d+\) exited with code 1 before it was ready: stopping the other workers/);
    assert.doesNotMatch(r.stdout, /listening on/);
    assert.doesNotMatch(r.stderr, /restarting/);
  });
});

// ---------------------------------------------------------------------------

describe('cluster: --workers 2 --redis', { timeout: budget.scaled(120_000) }, () => {
  // One Redis and one cluster for both tests (startRedis prints SKIPPED, or fails under CI, without redis-server).
  let redisPort = 0;
  let skipped: string | undefined;
  const shared = sharedCluster([], async (ctx) => {
    const redis = await startRedis({ after: ctx.after, skip: (why?: string) => void (skipped = why) });
    if (!redis) return null;
    redisPort = redis.port;
    return ['--redis', redis.url];
  });

  test('a broadcast reaches the clients on both workers, exactly once', { timeout: budget.scaled(60_000) }, async (t) => {
    const srv = await shared();
    if (!srv) return t.skip(skipped);
    assert.match(srv.stdout(), new RegExp(`2 workers, broadcasts through redis://127\\.0\\.0\\.1:${redisPort}`));
    await adaptersUp(srv.base);
    const clients = await openClients(srv.wsUrl, 6, t);
    const perWorker = await connectionsPerWorker(srv.base);
    assert.ok(perWorker.get(1)! >= 1 && perWorker.get(2)! >= 1, `clients on both workers: ${JSON.stringify([...perWorker])}`);
    const counts = countPushes(clients);
    // From two senders (the primary hands connections out in turn, so they sit on different workers).
    for (const [i, sender] of [clients[0]!, clients[1]!].entries()) {
      const payload = `to everyone ${i}`;
      sender.send(JSON.stringify({ requestID: 10 + i, command: 'broadcast', someOtherThing: payload }));
      await everyoneGot(counts, payload);
    }
  });

  test('a restarted worker rejoins the fan-out', { timeout: budget.scaled(60_000) }, async (t) => {
    const srv = await shared();
    if (!srv) return t.skip(skipped);
    await idle(srv.base);
    const victim = srv.workers().get(1)!;
    process.kill(victim, 'SIGKILL');
    await srv.readyAgain(1, victim);
    await adaptersUp(srv.base);
    const clients = await openClients(srv.wsUrl, 6, t);
    const perWorker = await connectionsPerWorker(srv.base);
    assert.ok(perWorker.get(1)! >= 1 && perWorker.get(2)! >= 1, `clients on both workers: ${JSON.stringify([...perWorker])}`);
    const counts = countPushes(clients);
    clients[0]!.send('{"requestID":1,"command":"broadcast","someOtherThing":"after the restart"}');
    await everyoneGot(counts, 'after the restart');
  });
});
