// Interop with a third-party client that is not the `ws` package: Python's
// `websockets` library (Debian's python3-websockets, asyncio API), driven by
// test/interop/python/client.py against the CLI server (`ws-supervisor server`).
// R4 (server pings answered by the client), R13 (Go-style capitalised names),
// R14 (requestID correlation), R15 (malformed JSON answered; 1009 over the
// size limit), R16 (close 1000 echoed), broadcast (reply, then push).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { budgets, metric, metricsOf, startCliServer } from '../helpers/cli.ts';
import { startRedis } from '../helpers/redis.ts';
import { requireBinary } from './require-binary.ts';
import { assertServerHealthy, jsonSummary, runProgram } from './spawn.ts';

/** Measured once, before the tests are declared: their timeouts scale with this machine's speed now (test/helpers/cli.ts). */
const budget = await budgets();

/** Debian's interpreter, not the pyenv `python3` that may come first on PATH (INTEROP_PYTHON overrides). */
const PYTHON = process.env.INTEROP_PYTHON ?? '/usr/bin/python3';
const INSTALL = 'apt-get install python3 python3-websockets';
const CLIENT = fileURLToPath(new URL('./python/client.py', import.meta.url));

/** A clean environment for the system interpreter: no pyenv/venv paths, no .pyc files in the repo. */
function pythonEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PYTHONDONTWRITEBYTECODE: '1', PYTHONNOUSERSITE: '1' };
  for (const key of ['PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV', 'PYENV_VERSION']) delete env[key];
  return env;
}

/** websockets >= 10 (legacy asyncio client with open_timeout) importable by /usr/bin/python3. */
function websocketsImportable(): string | null {
  const r = spawnSync(
    PYTHON,
    ['-c', 'import websockets, websockets.legacy.client; v = websockets.__version__; assert int(v.split(".")[0]) >= 10, v; print(v)'],
    { env: pythonEnv(), encoding: 'utf8', timeout: 10_000 },
  );
  return r.status === 0 ? null : `${PYTHON} cannot import websockets >= 10: ${(r.stderr || r.error?.message || '').trim().split('\n').pop()}`;
}

function requirePython(t: TestContext): boolean {
  return requireBinary(t, PYTHON, INSTALL, websocketsImportable);
}

async function runClient(t: TestContext, args: string[]) {
  const r = await runProgram(PYTHON, [CLIENT, ...args], { timeoutMs: budget.scaled(20_000), env: pythonEnv(), signal: t.signal });
  assert.equal(r.timedOut, false, `client.py timed out\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  assert.equal(r.code, 0, `client.py exited ${r.code ?? r.signal}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

/** Polls /metrics until `ok` holds (close bookkeeping on the server may trail the client's view by a tick). */
async function metricsWhen(base: string, ok: (text: string) => boolean, timeoutMs = 3_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await metricsOf(base);
    if (ok(text) || Date.now() > deadline) return text;
    await new Promise((r) => setTimeout(r, 25));
  }
}

interface ProtocolSummary {
  library: string;
  requests: number;
  replies_ok: number;
  reply_errors: unknown[];
  broadcast_reply: unknown;
  broadcast_push: unknown;
  malformed_reply: { requestID: unknown; success: unknown; error: unknown };
  after_malformed_reply: unknown;
  idle_seconds: number;
  pings_answered_while_idle: number;
  open_after_idle: boolean;
  after_idle_reply: unknown;
  close_code: number;
  close_reason: string;
}

test('python websockets: Go-style requests, broadcast, malformed JSON, idle across server pings, close 1000', { timeout: budget.scaled(45_000) }, async (t) => {
  if (!requirePython(t)) return;
  const server = await startCliServer(['--ping-interval', '300', '--pong-timeout', '300'], t);
  const r = await runClient(t, [server.wsUrl, 'protocol', '--ping-wait', '1.2']);
  const s = jsonSummary<ProtocolSummary>(r);
  t.diagnostic(`${s.library}: ${r.ms} ms; ${s.pings_answered_while_idle} server pings answered in ${s.idle_seconds} s idle`);

  // R13 + R14: capitalised names decoded, each reply carries its requestID.
  assert.equal(s.requests, 20);
  assert.deepEqual(s.reply_errors, []);
  assert.equal(s.replies_ok, 20);

  // Broadcast: the sender's reply first, then the push (no requestID).
  assert.deepEqual(s.broadcast_reply, { requestID: 100, success: true, someOtherThing: 'hello from python' });
  assert.deepEqual(s.broadcast_push, { command: 'broadcast', someOtherThing: 'hello from python' });

  // R15: malformed JSON gets an error reply with requestID 0; the connection stays usable.
  assert.equal(s.malformed_reply.requestID, 0);
  assert.equal(s.malformed_reply.success, false);
  assert.match(String(s.malformed_reply.error), /^invalid JSON: /);
  assert.deepEqual(s.after_malformed_reply, { requestID: 101, success: true, someOtherThing: 'Server processed command: after malformed' });

  // R4: the server pinged at least twice while the client was idle; websockets answered; still open.
  assert.ok(s.pings_answered_while_idle >= 2, `expected >= 2 server pings in ${s.idle_seconds} s, got ${s.pings_answered_while_idle}`);
  assert.equal(s.open_after_idle, true);
  assert.deepEqual(s.after_idle_reply, { requestID: 102, success: true, someOtherThing: 'Server processed command: after idle' });

  // R16: the server echoed close 1000.
  assert.equal(s.close_code, 1000);

  const m = await metricsWhen(server.base, (x) => metric(x, 'ws_supervisor_connections') === 0);
  assert.equal(metric(m, 'ws_supervisor_connections'), 0);
  assert.equal(metric(m, 'ws_supervisor_closes_total', { code: '1000' }), 1);
  assert.equal(metric(m, 'ws_supervisor_heartbeat_timeouts_total'), 0);
  assertServerHealthy(server);
});

test('python websockets: a 4 KiB message over --max-payload 1024 is closed with 1009', { timeout: budget.scaled(30_000) }, async (t) => {
  if (!requirePython(t)) return;
  const server = await startCliServer(['--max-payload', '1024'], t);
  const r = await runClient(t, [server.wsUrl, 'oversize', '--size', '4096']);
  const s = jsonSummary<{ sent_bytes: number; exception?: string; unexpected_message?: string; close_code: number }>(r);
  t.diagnostic(`${r.ms} ms; client saw ${s.exception ?? 'no exception'}, close ${s.close_code}`);
  assert.equal(s.unexpected_message, undefined);
  assert.equal(s.exception, 'ConnectionClosedError'); // websockets: a close code other than 1000/1001
  assert.equal(s.close_code, 1009);
  const m = await metricsWhen(server.base, (x) => metric(x, 'ws_supervisor_closes_total', { code: '1009' }) === 1);
  assert.equal(metric(m, 'ws_supervisor_closes_total', { code: '1009' }), 1);
  assertServerHealthy(server);
});

interface SessionSummary {
  burst_cut_after: number;
  takeover_old_close: number | null;
  forbidden: { resumed: boolean; reason: string; lastSeq: number; cseq: number };
  forbidden_new_id: boolean;
  forbidden_session_reply: unknown[];
  end_close_code: number;
  requests: number;
  reply_counts: Record<string, number>;
  runs: Record<string, number>;
  own_pushes_in_order: boolean;
  burst: number;
  burst_in_order_once: boolean;
  burst_received: number;
  resumes: Array<{ resumed: boolean; lastSeq: number; replay: number; cseq: number; reason: string | null }>;
  violations: string[];
}

// Sessions (docs/sessions.md, "Writing a client") from a client that shares no code with ours: the frames as the
// docs spell them, and the promise (nothing sent either way lost or doubled across cuts) checked from outside.
/**
 * The session client's promise, whichever servers it ran against: no protocol violation, every request run once (its
 * broadcast seen once by `watcher`) and answered once, its own pushes and the burst each once and in order, and every
 * one of its four resumes resumed.
 */
function assertExactlyOnce(s: SessionSummary, watcher: string): void {
  assert.deepEqual(s.violations, []);
  const once = Object.fromEntries(Array.from({ length: s.requests }, (_, i) => [String(i + 1), 1]));
  assert.deepEqual(s.runs, once, `each request run once (its broadcast seen once by ${watcher})`);
  assert.deepEqual(s.reply_counts, once, 'each reply received once');
  assert.equal(s.own_pushes_in_order, true);
  assert.equal(s.burst_received, s.burst);
  assert.equal(s.burst_in_order_once, true);
  assert.deepEqual(s.resumes.map((x) => [x.resumed, x.reason]), Array.from({ length: 4 }, () => [true, null]));
}

test('python websockets: a session client written from the docs, cut mid-frame, before the ack, mid-burst and left open (takeover): every request run once, every message once and in order', { timeout: budget.scaled(45_000) }, async (t) => {
  if (!requirePython(t)) return;
  const server = await startCliServer(['--sessions'], t);
  const r = await runClient(t, [server.wsUrl, 'session', '--burst', '300']);
  const s = jsonSummary<SessionSummary>(r);
  t.diagnostic(`${r.ms} ms; burst cut after ${s.burst_cut_after} of ${s.burst}; resumes ${JSON.stringify(s.resumes)}`);
  assert.equal(s.requests, 11);
  assertExactlyOnce(s, 'a plain connection');
  // The frame cut half-way never ran (cseq 5). Of the three sent right before the next cut, the server may have read
  // some or all (an abort can discard what the client's socket had not sent yet): it says which (6 to 9).
  assert.equal(s.resumes[0]!.cseq, 5);
  assert.ok(s.resumes[1]!.cseq >= 6 && s.resumes[1]!.cseq <= 9, `cseq ${s.resumes[1]!.cseq}`);
  assert.equal(s.burst_cut_after, Math.floor(s.burst / 3), 'cut in the middle of the burst, as its 100th push was read');
  assert.equal(s.takeover_old_close, 1006, 'the connection a resume took over is terminated');
  assert.deepEqual([s.forbidden.resumed, s.forbidden.reason, s.forbidden.lastSeq, s.forbidden.cseq, s.forbidden_new_id], [false, 'forbidden', 0, 0, true]);
  assert.deepEqual(s.forbidden_session_reply, [{ requestID: 1, success: true, someOtherThing: 'Server processed command: after forbidden' }]);
  assert.equal(s.end_close_code, 1000);
  assertServerHealthy(server);
});

test('python websockets: the same session client against two servers sharing a Redis, each connection on the other server: every request run once, every message once and in order', { timeout: budget.scaled(60_000) }, async (t) => {
  if (!requirePython(t)) return;
  const redis = await startRedis(t);
  if (!redis) return;
  const flags = ['--sessions', '--redis', redis.url, '--log-level', 'warn'];
  const [a, b] = await Promise.all([startCliServer(flags, t), startCliServer(flags, t)]);
  const r = await runClient(t, [`${a.wsUrl},${b.wsUrl}`, 'session', '--burst', '300']);
  const s = jsonSummary<SessionSummary & { servers: number }>(r);
  t.diagnostic(`${r.ms} ms; burst cut after ${s.burst_cut_after} of ${s.burst}; resumes ${JSON.stringify(s.resumes)}`);
  assert.equal(s.servers, 2);
  assertExactlyOnce(s, 'a plain connection on the other server');
  // A resume on the other server answers cseq 0 when requests were counted there that it did not run (the client
  // then re-sends all it holds, answered duplicate or run), else the last one run.
  assert.ok([0, 5].includes(s.resumes[0]!.cseq), `cseq ${s.resumes[0]!.cseq}`);
  assert.equal(s.takeover_old_close, 1006);
  assert.deepEqual([s.forbidden.resumed, s.forbidden.reason], [false, 'forbidden']);
  assert.equal(s.end_close_code, 1000);
  assertServerHealthy(a);
  assertServerHealthy(b);
});
