// R21, admission limits as the CLI user meets them: maxConnections
// against the open-file limit (the CLI run under `prlimit --nofile`), and the
// adapter's --redis-max-in-flight flag. Loopback only; every process is
// killed after its test.
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import WebSocket from 'ws';
import { REPO_ROOT, httpGet, startCliServer, upgradeStatus } from '../helpers/cli.ts';
import { parseServerArgs, UsageError, type ServerCliOptions } from '../../src/cli/args.ts';
import { REDIS_DEFAULTS } from '../../src/adapter/redis-defaults.ts';
import { FD_RESERVE } from '../../src/server/fd-limit.ts';
import { IN_CI } from '../interop/require-binary.ts';
import { pace } from '../helpers/pace.ts';
import { compiledEntry } from '../helpers/compiled.ts';

const HAS_PRLIMIT = spawnSync('prlimit', ['--version']).status === 0;

interface LimitedCli {
  child: ChildProcessWithoutNullStreams;
  stdout(): string;
  stderr(): string;
  exited: Promise<number | null>;
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
}

/** `ws-supervisor server …` with its open-file limit (soft and hard) set to `nofile`. */
function cliUnderLimit(t: TestContext, nofile: number, args: string[]): LimitedCli | null {
  if (!HAS_PRLIMIT) {
    const why = 'prlimit not found (util-linux)';
    if (IN_CI) throw new Error(`missing prerequisite (CI=true, so this fails instead of skipping): ${why}`);
    console.log(`SKIPPED: ${why}`);
    t.skip(why);
    return null;
  }
  // The CLI as every other CLI test runs it: bundled (test/helpers/compiled.ts), not through tsx.
  const child = spawn('prlimit', [`--nofile=${nofile}:${nofile}`, process.execPath, compiledEntry('src/cli/main.ts'), 'server', ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, NODE_OPTIONS: '' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    async waitFor(re, timeoutMs = 20_000) {
      const deadline = Date.now() + pace.scaled(timeoutMs); // ends a hang: scaled by the measured pace
      for (;;) {
        const m = re.exec(out);
        if (m) return m;
        if (child.exitCode !== null || Date.now() > deadline) {
          throw new Error(`no ${re} (exit ${child.exitCode})\nstdout:\n${out}\nstderr:\n${err}`);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    },
  };
}

describe('maxConnections against the open-file limit', () => {
  test('--max-connections beyond what the open-file limit allows: exit 2 naming the numbers, nothing served', { timeout: pace.scaled(30_000) }, async (t) => {
    const cli = cliUnderLimit(t, 500, ['--address', '127.0.0.1:0', '--max-connections', '490']);
    if (!cli) return;
    const timer = setTimeout(() => cli.child.kill('SIGKILL'), pace.scaled(15_000));
    const code = await cli.exited;
    clearTimeout(timer);
    assert.equal(code, 2, `exit code (stdout: ${cli.stdout()}; stderr: ${cli.stderr()})`);
    const fits = 500 - FD_RESERVE - 1024;
    assert.equal(
      cli.stderr().split('\n')[0],
      `ws-supervisor: --max-connections 490 needs 490 + 1024 (HTTP headroom) + ${FD_RESERVE} (the process's own) = ${490 + 1024 + FD_RESERVE} file descriptors, ` +
        `but the open-file limit (ulimit -n) is 500: ${fits > 0 ? `use --max-connections ${fits} or less, or raise the limit` : 'raise the limit (the HTTP headroom alone does not fit)'}`,
    );
    assert.doesNotMatch(cli.stdout(), /listening/);
  });

  test('the default maxConnections under a low open-file limit: lowered with a warning naming the numbers; at saturation the next upgrade gets 503 and /healthz and /metrics still answer', { timeout: pace.scaled(60_000) }, async (t) => {
    const NOFILE = 300;
    const cli = cliUnderLimit(t, NOFILE, ['--address', '127.0.0.1:0']);
    if (!cli) return;
    const port = Number((await cli.waitFor(/listening on http:\/\/127\.0\.0\.1:(\d+)\//))[1]);
    const available = NOFILE - FD_RESERVE;
    const headroom = Math.floor(available / 4);
    const max = available - headroom;
    const warning = cli.stdout().split('\n').find((l) => l.includes('open-file limit'));
    assert.ok(warning, `a warning about the open-file limit:\n${cli.stdout()}\n${cli.stderr()}`);
    const line = JSON.parse(warning) as { level: number; msg: string };
    assert.equal(line.level, 40, 'warn');
    assert.match(line.msg, new RegExp(`open-file limit \\(ulimit -n\\) is ${NOFILE}: the default maxConnections 10000 would need ${10000 + 1024 + FD_RESERVE} file descriptors .*lowered to ${max} with ${headroom} for HTTP`));

    // Fill every slot (in small batches: one address), then one more.
    const url = `ws://127.0.0.1:${port}/server`;
    const open: WebSocket[] = [];
    t.after(() => open.forEach((ws) => ws.terminate()));
    while (open.length < max) {
      const batch = Math.min(20, max - open.length);
      open.push(
        ...(await Promise.all(
          Array.from({ length: batch }, () =>
            new Promise<WebSocket>((resolve, reject) => {
              const ws = new WebSocket(url);
              ws.once('open', () => resolve(ws));
              ws.once('error', reject);
            }),
          ),
        )),
      );
    }
    const refused = await upgradeStatus(url);
    assert.equal(refused.status, 503, 'a clear 503, not a reset');
    assert.match(refused.body, new RegExp(`too many connections \\(limit ${max}\\)`));
    const health = await httpGet(`http://127.0.0.1:${port}/healthz`);
    assert.equal(health.status, 200);
    const metrics = await httpGet(`http://127.0.0.1:${port}/metrics`);
    assert.equal(metrics.status, 200);
    assert.match(metrics.body, new RegExp(`^ws_supervisor_connections ${max}$`, 'm'));
  });
});

describe('--redis-max-in-flight', () => {
  const parse = (args: string[]): ServerCliOptions => parseServerArgs(args) as ServerCliOptions;
  test('sets the Redis adapter\'s maxInFlightBytes; needs --redis; a positive integer', () => {
    assert.equal(parse(['--redis', 'redis://127.0.0.1', '--redis-max-in-flight', '1048576']).redisMaxInFlightBytes, 1_048_576);
    assert.equal(parse(['--redis', 'redis://127.0.0.1']).redisMaxInFlightBytes, undefined, 'the adapter default');
    assert.equal(REDIS_DEFAULTS.maxInFlightBytes, 16 * 1_048_576);
    assert.throws(() => parse(['--redis-max-in-flight', '1048576']), (e: Error) => e instanceof UsageError && /--redis-max-in-flight needs --redis or --redis-env/.test(e.message));
    assert.throws(() => parse(['--redis', 'redis://h', '--redis-max-in-flight', '0']), (e: Error) => e instanceof UsageError && /--redis-max-in-flight must be a positive integer, got "0"/.test(e.message));
  });
});

describe('--headers-timeout', () => {
  const parse = (args: string[]): ServerCliOptions => parseServerArgs(args) as ServerCliOptions;
  test("sets the HTTP server's headersTimeout (slower heads get 408); default 10000 ms; a positive integer", () => {
    assert.equal(parse(['--headers-timeout', '30000']).headersTimeout, 30_000);
    assert.equal(parse([]).headersTimeout, undefined, "startDemoServer's default (10000 ms)");
    assert.throws(() => parse(['--headers-timeout', '0']), (e: Error) => e instanceof UsageError && /--headers-timeout must be a positive integer, got "0"/.test(e.message));
  });
});

describe('per-address flags', () => {
  const parse = (args: string[]): ServerCliOptions => parseServerArgs(args) as ServerCliOptions;
  test('--max-connections-per-address, --max-pending-per-address, --trust-proxy parse and are checked', () => {
    const o = parse(['--max-connections-per-address', '5', '--max-pending-per-address', '7', '--trust-proxy', '10.0.0.1, ::ffff:10.0.0.2,::1']);
    assert.equal(o.maxConnectionsPerAddress, 5);
    assert.equal(o.maxPendingPerAddress, 7);
    assert.deepEqual(o.trustProxy, ['10.0.0.1', '10.0.0.2', '::1']);
    assert.equal(parse(['--trust-proxy', '*']).trustProxy, true);
    assert.equal(parse([]).trustProxy, undefined, 'default: no proxy trusted');
    for (const [args, re] of [
      [['--trust-proxy', 'proxy.local'], /--trust-proxy: "proxy\.local" is not an IP address/],
      [['--trust-proxy', '*,10.0.0.1'], /--trust-proxy: \* cannot be combined/],
      [['--max-connections-per-address', '0'], /--max-connections-per-address must be a positive integer, got "0"/],
      [['--max-pending-per-address', 'x'], /--max-pending-per-address must be a positive integer, got "x"/],
    ] as const) {
      assert.throws(() => parse([...args]), (e: Error) => e instanceof UsageError && re.test(e.message), args.join(' '));
    }
  });

  test('the CLI server: --max-connections-per-address 2 refuses a third upgrade from one address with 429, serves another address', { timeout: pace.scaled(30_000) }, async (t) => {
    const srv = await startCliServer(['--max-connections-per-address', '2'], t);
    const from = (localAddress: string): WebSocket.ClientOptions => ({ localAddress }) as WebSocket.ClientOptions;
    const held = await Promise.all([0, 1].map(() => new Promise<WebSocket>((resolve, reject) => {
      const ws = new WebSocket(srv.wsUrl, from('127.0.0.2'));
      ws.once('open', () => resolve(ws)).once('error', reject);
    })));
    t.after(() => held.forEach((ws) => ws.terminate()));
    const third = await upgradeStatus(srv.wsUrl, from('127.0.0.2'));
    assert.equal(third.status, 429);
    assert.equal(third.body, 'too many connections from 127.0.0.2 (limit 2 per address)\n');
    assert.equal((await upgradeStatus(srv.wsUrl, from('127.0.0.3'))).status, 101);
  });
});
