// Interop with a third-party client that is not the `ws` package: a Go program
// in the Go tutorials' style on golang.org/x/net/websocket (Debian's
// golang-golang-x-net-dev, built offline in GOPATH mode), test/interop/go/client.go,
// against the CLI server (`ws-supervisor server`).
// R1/R13/R14 (N requests on one connection, each reply correlated), R19 (the
// tutorials' Origin "http://HOST/" — trailing slash — is same-origin; a foreign
// Origin gets 403), R4 (server pings answered by x/net/websocket while its
// read loop runs; not answered while nobody reads).
import { after, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { budgets, metric, metricsOf, REPO_ROOT, startCliServer } from '../helpers/cli.ts';
import { fileExists, requireBinary } from './require-binary.ts';
import { pace } from '../helpers/pace.ts';
import { assertServerHealthy, jsonSummary, runProgram } from './spawn.ts';

/** Measured once, before the tests are declared: their timeouts scale with this machine's speed now (test/helpers/cli.ts). */
const budget = await budgets();

const GO = process.env.INTEROP_GO ?? '/usr/bin/go';
const GOPATH = process.env.INTEROP_GOPATH ?? '/usr/share/gocode';
const INSTALL = 'apt-get install golang-go golang-golang-x-net-dev';
const SOURCE = fileURLToPath(new URL('./go/client.go', import.meta.url));

function requireGo(t: TestContext): boolean {
  return requireBinary(
    t,
    GO,
    INSTALL,
    fileExists(join(GOPATH, 'src/golang.org/x/net/websocket/websocket.go'), 'golang.org/x/net/websocket source'),
  );
}

// One build per test run, shared by the tests (first build: up to ~120 s on a cold machine).
const buildDir = mkdtempSync(join(tmpdir(), 'ws-supervisor-go-interop-'));
after(() => rmSync(buildDir, { recursive: true, force: true }));
let built: Promise<string> | null = null;
function buildClient(): Promise<string> {
  built ??= (async () => {
    const binary = join(buildDir, 'client');
    const r = await runProgram(GO, ['build', '-o', binary, SOURCE], {
      timeoutMs: budget.scaled(120_000),
      cwd: REPO_ROOT,
      env: {
        ...process.env,
        GO111MODULE: 'off', // GOPATH mode: x/net comes from Debian's /usr/share/gocode, no network
        GOPATH,
        GOCACHE: join(buildDir, 'gocache'),
        GOFLAGS: '',
        GOENV: 'off', // ignore the user's go env file (GOFLAGS, GOPROXY …)
        GOTOOLCHAIN: 'local',
      },
    });
    if (r.timedOut || r.code !== 0) {
      throw new Error(`go build failed (${r.timedOut ? 'timed out' : `exit ${r.code ?? r.signal}`}, ${r.ms} ms):\n${r.stderr}${r.stdout}`);
    }
    console.log(`go build of test/interop/go/client.go: ${r.ms} ms`);
    return binary;
  })();
  return built;
}

interface GoSummary {
  connected: boolean;
  sent: number;
  replies: number;
  ok: number;
  mismatches: string[];
  error?: string;
  pongsSent: number;
  closeError?: string;
  elapsedMs: number;
  readerMode: string;
  firstReply?: string;
}

async function runGoClient(t: TestContext, args: string[]): Promise<GoSummary> {
  const binary = await buildClient();
  const r = await runProgram(binary, args, { timeoutMs: budget.scaled(20_000), signal: t.signal });
  assert.equal(r.timedOut, false, `Go client timed out\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  assert.equal(r.code, 0, `Go client exited ${r.code ?? r.signal}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  const s = jsonSummary<GoSummary>(r);
  t.diagnostic(`Go client (${args.join(' ')}): ${JSON.stringify({ ...s, firstReply: undefined })}`);
  return s;
}

/** Polls /metrics until `ok` holds (the server's close bookkeeping may trail the client by a tick). */
async function metricsWhen(base: string, ok: (text: string) => boolean, timeoutMs = 3_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await metricsOf(base);
    if (ok(text) || Date.now() > deadline) return text;
    await new Promise((r) => setTimeout(r, 25));
  }
}

const hostOf = (base: string): string => new URL(base).host;

test('go x/net/websocket: the articles\' client sends 10 requests on one connection, each reply correlated, then closes 1000', { timeout: budget.scaled(150_000) }, async (t) => {
  if (!requireGo(t)) return;
  await buildClient(); // before the server starts, so a slow first build cannot eat the server's time
  const server = await startCliServer([], t);
  const s = await runGoClient(t, ['-host', hostOf(server.base), '-n', '10']);
  assert.equal(s.error, undefined);
  assert.equal(s.connected, true, 'websocket.Dial with Origin "http://HOST/" must be accepted as same-origin (R19)');
  assert.equal(s.sent, 10);
  assert.deepEqual(s.mismatches, []);
  assert.equal(s.ok, 10);
  assert.equal(s.closeError, undefined);
  // The reply decoded into the tutorials' struct (Command is empty: replies carry no command).
  assert.deepEqual(JSON.parse(s.firstReply!), { requestID: 1, command: '', someOtherThing: 'Server processed command: cmd 1', success: true });
  // x/net/websocket's Close sends close 1000 and drops TCP at once: the server records 1000 received.
  const m = await metricsWhen(server.base, (x) => metric(x, 'ws_supervisor_connections') === 0);
  assert.equal(metric(m, 'ws_supervisor_connections'), 0);
  assert.equal(metric(m, 'ws_supervisor_closes_total', { code: '1000' }), 1);
  assertServerHealthy(server);
});

test('go x/net/websocket: a cross-origin Origin is refused at the handshake (403)', { timeout: budget.scaled(150_000) }, async (t) => {
  if (!requireGo(t)) return;
  await buildClient();
  const server = await startCliServer([], t);
  const s = await runGoClient(t, ['-host', hostOf(server.base), '-n', '1', '-origin', 'http://evil.example/']);
  assert.equal(s.connected, false);
  assert.match(s.error ?? '', /^dial: .*bad status/); // x/net/websocket's ErrBadStatus for a non-101 answer
  const m = await metricsOf(server.base);
  assert.equal(metric(m, 'ws_supervisor_refused_upgrades_total', { reason: 'origin' }), 1);
  assertServerHealthy(server);
});

test('go x/net/websocket: with a read loop running, the connection survives server pings (200 ms interval, 1 s pause)', { timeout: budget.scaled(150_000) }, async (t) => {
  if (!requireGo(t)) return;
  await buildClient();
  const server = await startCliServer(['--ping-interval', '200', '--pong-timeout', '200'], t);
  const s = await runGoClient(t, ['-host', hostOf(server.base), '-n', '2', '-interval', '1s', '-reader', 'loop', '-count-pongs']);
  assert.equal(s.error, undefined);
  assert.equal(s.ok, 2, 'the request after the 1 s pause must still be answered');
  // Pongs are the client's answers to the server's pings (R4): several in the 1 s pause. A ping is due 200 ms
  // after the last pong, so on an idle machine 4–5 fit; a loaded one stretches each cycle (2 seen under a busy
  // loop per core), so the count expected scales with this machine's measured pace, never below 2.
  const expected = Math.max(2, Math.min(3, Math.floor(1000 / pace.scaled(250))));
  assert.ok(s.pongsSent >= expected, `expected >= ${expected} pongs in a 1 s pause with a 200 ms ping interval, got ${s.pongsSent}`);
  const m = await metricsWhen(server.base, (x) => metric(x, 'ws_supervisor_connections') === 0);
  assert.equal(metric(m, 'ws_supervisor_heartbeat_timeouts_total'), 0);
  assert.equal(metric(m, 'ws_supervisor_closes_total', { code: '1000' }), 1);
  assertServerHealthy(server);
});

// Control for the test above: it shows the server really pings and really
// enforces the pong timeout against this client. x/net/websocket writes a pong
// only from inside Read, so the tutorials' loop (send, receive, sleep) leaves
// the pings unanswered while it sleeps, and a heartbeat shorter than the sleep
// terminates it. (With the defaults, 25 s interval + 10 s timeout, the
// tutorials' 2 s sleep is harmless.)
test('go x/net/websocket: without a read loop (the articles\' send/receive/sleep), a pause longer than ping+pong timeout is a heartbeat timeout', { timeout: budget.scaled(150_000) }, async (t) => {
  if (!requireGo(t)) return;
  await buildClient();
  const server = await startCliServer(['--ping-interval', '200', '--pong-timeout', '200'], t);
  const s = await runGoClient(t, ['-host', hostOf(server.base), '-n', '2', '-interval', '1500ms', '-reader', 'inline', '-count-pongs']);
  assert.equal(s.ok, 1, 'the first request is answered');
  assert.ok(s.error !== undefined && /^(send|receive) 2: /.test(s.error), `the second request must fail, got ${s.error}`);
  const m = await metricsWhen(server.base, (x) => metric(x, 'ws_supervisor_heartbeat_timeouts_total') === 1);
  assert.equal(metric(m, 'ws_supervisor_heartbeat_timeouts_total'), 1);
  assert.equal(metric(m, 'ws_supervisor_closes_total', { code: '1006' }), 1); // terminated, no close frame (R4, R17)
  assertServerHealthy(server);
});
