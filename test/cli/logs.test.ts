/**
 * Structured logs (pino JSON lines) from `ws-supervisor server --log-level`:
 * every line about a connection carries its id; transitions at debug;
 * unexpected closures at warn.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { budgets, startCliServer } from '../helpers/cli.ts';
import { waitFor } from '../helpers/server.ts';
import { pace } from '../helpers/pace.ts';

/** Measured once, before the tests are declared: their timeouts scale with this machine's speed now (test/helpers/cli.ts). */
const budget = await budgets();

interface LogLine {
  level: number;
  msg: string;
  conn?: string;
  state?: unknown;
  cause?: string;
  code?: number;
  expected?: boolean;
}

const DEBUG = 20;
const INFO = 30;
const WARN = 40;

function logLines(stdout: string): LogLine[] {
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine);
}

test('--log-level debug: transitions at debug, a clean close at info, a heartbeat timeout at warn; each line carries the connection id', { timeout: budget.scaled(20_000) }, async (t) => {
  const server = await startCliServer(['--log-level', 'debug', '--ping-interval', '150', '--pong-timeout', '150'], t);
  const good = new WebSocket(server.wsUrl);
  await new Promise((r) => good.once('open', r));
  const dead = new WebSocket(server.wsUrl, { autoPong: false });
  await new Promise((r) => dead.once('open', r));
  await new Promise((r) => dead.once('close', r)); // heartbeat timeout
  good.close(1000, 'bye');
  await new Promise((r) => good.once('close', r));
  await waitFor(() => logLines(server.stdout()).filter((l) => l.msg.startsWith('connection closed')).length === 2, 5000, 'both closures logged');

  const lines = logLines(server.stdout());
  const opened = lines.filter((l) => l.msg === 'connection opened');
  assert.equal(opened.length, 2);
  const ids = opened.map((l) => l.conn!);
  for (const id of ids) assert.match(id, /^[A-Za-z0-9_-]{8}-[0-9a-z]+$/);
  for (const l of lines.filter((x) => x.msg === 'transition' || x.msg.startsWith('connection'))) {
    assert.ok(l.conn && ids.includes(l.conn), `connection id on: ${JSON.stringify(l)}`);
  }
  const transitions = lines.filter((l) => l.msg === 'transition');
  assert.ok(transitions.length >= 4, 'transitions logged');
  assert.ok(transitions.every((l) => l.level === DEBUG), 'transitions at debug');
  assert.ok(transitions.some((l) => JSON.stringify(l.state).includes('pinging')));

  const unexpected = lines.find((l) => l.msg.startsWith('connection closed unexpectedly'));
  assert.equal(unexpected?.level, WARN);
  assert.equal(unexpected?.cause, 'heartbeat-timeout');
  assert.equal(unexpected?.code, 1006);
  const clean = lines.find((l) => l.msg === 'connection closed');
  assert.equal(clean?.level, INFO);
  assert.equal(clean?.expected, true);
  assert.equal(clean?.code, 1000);
});

test('--log-level info: no transition lines; --log-level silent: no log lines at all', { timeout: budget.scaled(20_000) }, async (t) => {
  for (const level of ['info', 'silent']) {
    const server = await startCliServer(['--log-level', level, '--ping-interval', '100'], t);
    const ws = new WebSocket(server.wsUrl);
    await new Promise((r) => ws.once('open', r));
    // Several heartbeats (--ping-interval 100) that would log transitions: the
    // window scaled by the measured pace, the server being busy too.
    await new Promise((r) => setTimeout(r, pace.scaled(300)));
    ws.close();
    await new Promise((r) => ws.once('close', r));
    if (level === 'info') await waitFor(() => logLines(server.stdout()).some((l) => l.msg.startsWith('connection closed')), 5000, 'the close to be logged');
    else await new Promise((r) => setTimeout(r, pace.scaled(100))); // time for a (wrong) line
    const lines = logLines(server.stdout());
    assert.equal(lines.filter((l) => l.msg === 'transition').length, 0, `${level}: no transitions`);
    if (level === 'silent') assert.equal(lines.length, 0);
    else assert.ok(lines.some((l) => l.msg === 'connection opened' && l.level === INFO));
    server.kill();
  }
});
