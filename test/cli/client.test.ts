/**
 * `ws-supervisor client` end to end: the tutorials' client (a request every
 * interval, replies read while it keeps sending) as a real process, against a
 * real `ws-supervisor server` process that is killed and restarted under it.
 *
 * Rules covered: R14 (every request answered or failed, never lost), R17
 * (close lines say expected or not), R22 (reconnect after the server comes
 * back), R23 (requests made during the outage are buffered and sent after the
 * reconnect), R24 (replies printed while requests keep going out), and the
 * client's own signal handling (close 1000, exit 0).
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, test } from 'node:test';
import { startDemoServer } from '../../src/cli/demo-server.ts';
import { budgets, metric, metricsOf, runCli, spawnCli, startCliServer, type CliProcess } from '../helpers/cli.ts';
import { waitFor } from '../helpers/server.ts';

/** Measured once, before the tests are declared: their timeouts scale with this machine's speed now. */
const budget = await budgets();


/** A line of the client's stdout and when the test saw it. */
interface Line {
  text: string;
  at: number;
}

/** Timestamps every stdout line of a spawned CLI as it arrives. */
function timedLines(p: CliProcess): Line[] {
  const lines: Line[] = [];
  let partial = '';
  p.child.stdout.on('data', (s: string) => {
    const now = Date.now();
    partial += s;
    const parts = partial.split('\n');
    partial = parts.pop()!;
    for (const text of parts) lines.push({ text, at: now });
  });
  return lines;
}

interface Outcomes {
  /** N → how many times request N was announced ("request N: …"). */
  made: Map<number, number>;
  /** Requests announced as buffered (made while not connected, R23). */
  buffered: number[];
  /** N → how many times a reply to request N was printed. */
  replies: Map<number, number>;
  /** N → how many times request N was printed as failed. */
  failures: Map<number, number>;
  /** Reply numbers in the order they were printed. */
  replyOrder: number[];
  maxN: number;
}

const REPLY = /^reply (\d+): (\{.*\})$/;
const FAILED = /^request (\d+) failed: (\S+)/;
const MADE = /^request (\d+): Eject the hot dog (\d+)\.( \(buffered while (\w+)\))?$/;

function outcomes(stdout: string): Outcomes {
  const made = new Map<number, number>();
  const buffered: number[] = [];
  const replies = new Map<number, number>();
  const failures = new Map<number, number>();
  const replyOrder: number[] = [];
  let maxN = 0;
  for (const line of stdout.split('\n')) {
    const m = MADE.exec(line);
    if (m) {
      const n = Number(m[1]);
      assert.equal(Number(m[2]), n, line);
      made.set(n, (made.get(n) ?? 0) + 1);
      if (m[3]) buffered.push(n);
      maxN = Math.max(maxN, n);
    }
    const r = REPLY.exec(line);
    if (r) {
      const n = Number(r[1]);
      const body = JSON.parse(r[2]!) as { requestID: unknown; success: unknown; someOtherThing: unknown };
      assert.equal(body.requestID, n, `the reply printed as ${n} carries requestID ${n}: ${line}`);
      assert.equal(body.success, true, line);
      assert.equal(body.someOtherThing, `Server processed command: Eject the hot dog ${n}.`, line);
      replies.set(n, (replies.get(n) ?? 0) + 1);
      replyOrder.push(n);
      maxN = Math.max(maxN, n);
    }
    const f = FAILED.exec(line);
    if (f) {
      const n = Number(f[1]);
      failures.set(n, (failures.get(n) ?? 0) + 1);
      maxN = Math.max(maxN, n);
    }
  }
  return { made, buffered, replies, failures, replyOrder, maxN };
}

/** Every request 1..maxN was made once and printed exactly once, as a reply or as a failure (R12, R14). */
function assertEachOnce(o: Outcomes): void {
  for (let n = 1; n <= o.maxN; n++) {
    assert.equal(o.made.get(n) ?? 0, 1, `request ${n} announced once`);
    const r = o.replies.get(n) ?? 0;
    const f = o.failures.get(n) ?? 0;
    assert.equal(r + f, 1, `request ${n}: printed ${r} reply(ies) and ${f} failure(s); expected exactly one of them`);
  }
}

function count(text: string, re: RegExp): number {
  return text.match(new RegExp(re.source, 'gm'))?.length ?? 0;
}

/** The server's count of closes with code 1000, polled until it reaches `atLeast` (or 5 s pass). */
async function closes1000(base: string, atLeast: number): Promise<number> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const n = metric(await metricsOf(base), 'ws_supervisor_closes_total', { code: '1000' });
    if (n >= atLeast || Date.now() > deadline) return n;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A port with nothing listening on it (bound, read, released). */
async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

// ---------------------------------------------------------------------------

// Bad flags, --help and no command: test/cli/args.test.ts (in-process: parse
// errors need no process; and one CLI run per exit path of main.ts).

describe('client CLI against a server', { concurrency: true, timeout: budget.scaled(120_000) }, () => {
  test('replies in order; survives a server restart with no request number skipped or doubled; SIGINT closes 1000 and exits 0', { timeout: budget.scaled(60_000) }, async (t) => {
    const started = Date.now();
    const srv = await startCliServer([], t);
    const port = srv.port;
    const client = await spawnCli(['client', '--address', `127.0.0.1:${port}`, '--interval', '200']);
    t.after(() => client.kill());
    const lines = timedLines(client);

    // The tutorials' loop: replies 1, 2, 3 in order (R14, R24).
    await client.waitForStdout(/^reply 3: /m, budget.startMs);
    assert.deepEqual(outcomes(client.stdout()).replyOrder.slice(0, 3), [1, 2, 3]);
    assert.match(client.stdout(), /^state: connecting → open$/m);

    // The server goes away (SIGTERM drains it: close 1001, expected, R17).
    const lastBeforeOutage = Math.max(...outcomes(client.stdout()).replyOrder);
    const killedAt = Date.now();
    srv.child.kill('SIGTERM');
    assert.deepEqual(await srv.exited, { code: 0, signal: null });
    await client.waitForStdout(/^close: code 1001 reason "[^"]*" expected true/m, budget.scaled(10_000));
    await client.waitForStdout(/^state: \w+ → waiting/m, budget.scaled(10_000));
    await client.waitForStdout(/^state: waiting → connecting$/m, budget.scaled(10_000));

    // Back on the same port. Requests kept being made meanwhile (every 200 ms).
    const srv2 = await startCliServer(['--address', `127.0.0.1:${port}`], t);
    assert.equal(srv2.port, port);
    const restartedAt = Date.now();
    await waitFor(() => count(client.stdout(), /^state: connecting → open$/) >= 2, budget.scaled(20_000), 'the client to reconnect');
    const reopened = lines.filter((l) => l.text === 'state: connecting → open')[1]!;
    const outageMs = reopened.at - killedAt;

    // Numbering continues: wait for a few fresh replies after the reconnect.
    const target = outcomes(client.stdout()).maxN + 3;
    await client.waitForStdout(new RegExp(`^reply ${target}: `, 'm'), budget.scaled(15_000));

    // R23: what was asked during the outage was buffered, then answered after the reconnect.
    const o1 = outcomes(client.stdout());
    const duringOutage = o1.buffered.filter((n) => n > lastBeforeOutage);
    const burst = lines.filter((l) => REPLY.test(l.text) && l.at >= reopened.at && l.at - reopened.at < 150);
    console.log(
      `client CLI: outage ${outageMs} ms (server restart took ${restartedAt - killedAt} ms), ` +
        `requests ${duringOutage.join(', ')} buffered meanwhile, ${burst.length} reply(ies) within 150 ms of the reconnect; ` +
        `last answered before the outage ${lastBeforeOutage}`,
    );
    assert.ok(duringOutage.length >= 2, `requests were made (and buffered) during the outage: ${duringOutage.join(', ')}`);
    for (const n of duringOutage) {
      assert.equal((o1.replies.get(n) ?? 0) + (o1.failures.get(n) ?? 0), 1, `buffered request ${n} answered or failed once`);
    }
    const replyLine = (n: number): Line | undefined => lines.find((l) => l.text.startsWith(`reply ${n}: `));
    for (const n of duringOutage) {
      const at = replyLine(n)?.at;
      if (at !== undefined) assert.ok(at >= reopened.at, `buffered request ${n} answered after the reconnect`);
    }

    // SIGINT: the client itself handles it, closes 1000 and exits 0.
    const before = metric(await metricsOf(srv2.base), 'ws_supervisor_closes_total', { code: '1000' });
    client.child.kill('SIGINT');
    const exit = await client.exited;
    assert.deepEqual(exit, { code: 0, signal: null }, `stderr: ${client.stderr()}`);
    const out = client.stdout();
    assert.match(out, /^ws-supervisor: SIGINT: closing/m);
    assert.match(out, /^close: code 1000 reason "client exiting" expected true/m);
    assert.match(out, /^state: closing → closed$/m);
    assert.match(out, /bye$/m);

    // Every request number up to the last is accounted for exactly once (R12, R14).
    const o = outcomes(out);
    assert.ok(o.maxN >= target);
    assertEachOnce(o);
    // Replies come back in request order, across the reconnect too (buffer flushed in order).
    assert.deepEqual(o.replyOrder, [...o.replyOrder].sort((a, b) => a - b));
    if (o.failures.size > 0) console.log(`client CLI: printed failures: ${[...o.failures.keys()].join(', ')}`);

    // The server saw the client's 1000.
    assert.equal(await closes1000(srv2.base, before + 1), before + 1, 'the server counted one close 1000');
    console.log(`client CLI: whole scenario ${Date.now() - started} ms, ${o.maxN} requests`);
  });

  test('SIGTERM also closes 1000 and exits 0', { timeout: budget.scaled(30_000) }, async (t) => {
    const srv = await startCliServer([], t);
    const client = await spawnCli(['client', '--address', `127.0.0.1:${srv.port}`, '--interval', '100']);
    t.after(() => client.kill());
    await client.waitForStdout(/^reply 2: /m);
    const t0 = Date.now();
    client.child.kill('SIGTERM');
    assert.deepEqual(await client.exited, { code: 0, signal: null }, client.stderr());
    console.log(`client CLI: SIGTERM → exit in ${Date.now() - t0} ms`);
    assert.match(client.stdout(), /^close: code 1000 reason "client exiting" expected true/m);
    assertEachOnce(outcomes(client.stdout()));
    assert.equal(await closes1000(srv.base, 1), 1, 'the server counted one close 1000');
  });

  test('with no server: keeps retrying; SIGINT fails the buffered requests visibly and exits 0 at once', { timeout: budget.scaled(30_000) }, async (t) => {
    const port = await closedPort();
    const client = await spawnCli(['client', '--address', `127.0.0.1:${port}`, '--interval', '100']);
    t.after(() => client.kill());
    await client.waitForStdout(/^ws-supervisor: client connecting to ws:\/\/127\.0\.0\.1:\d+\/server/m);
    // A few failed attempts (each says why and how long it waits), a few buffered requests.
    await waitFor(() => count(client.stdout(), /^state: connecting → waiting/) >= 2, budget.startMs, 'two failed attempts');
    assert.match(client.stdout(), /^state: connecting → waiting \(attempt \d+, retry in \d+ ms: .*ECONNREFUSED.*\)$/m);
    assert.equal(client.child.exitCode, null, 'still running: it never gives up');
    await new Promise((r) => setTimeout(r, 350));
    const t0 = Date.now();
    client.child.kill('SIGINT');
    assert.deepEqual(await client.exited, { code: 0, signal: null }, client.stderr());
    const elapsed = Date.now() - t0;
    console.log(`client CLI: SIGINT while disconnected → exit in ${elapsed} ms`);
    assert.ok(elapsed < budget.scaled(3_000), `no connection to close: exits at once (${elapsed} ms)`);
    const o = outcomes(client.stdout());
    assert.equal(o.replies.size, 0);
    assert.ok(o.failures.size >= 2, 'the requests buffered when the client closed are printed as failed');
    assertEachOnce(o);
    assert.match(client.stdout(), /^request 1 failed: client-closed: /m);
    // No connection was ever open: the only closes are the failed attempts (R17: 1006, unexpected).
    const closes = client.stdout().split('\n').filter((l) => l.startsWith('close: '));
    assert.ok(closes.length >= 1, 'each failed attempt is reported');
    for (const line of closes) assert.match(line, /^close: code 1006 reason "connect ECONNREFUSED [^"]*" expected false/);
  });

  test('--session: after a server-side cut the client prints "resumed", and every request is answered once', { timeout: 30_000 }, async (t) => {
    const demo = await startDemoServer({ host: '127.0.0.1', port: 0, sessions: {}, timing: { closeTimeout: 300 } });
    t.after(() => demo.close());
    const client = await spawnCli(['client', '--session', '--url', `ws://127.0.0.1:${demo.address.port}/server`, '--interval', '100']);
    t.after(() => client.kill());
    await client.waitForStdout(/^reply 2: /m, 10_000);
    // The TCP connection dies under the client (no close frame: 1006, unexpected).
    for (const c of demo.supervisor.hub) c.socket.destroy();
    await client.waitForStdout(/^resumed: session \S+, \d+ message\(s\) replayed, \d+ request\(s\) re-sent$/m, 10_000);
    // The cut has no reason text: the waiting line names its code and cause instead of ending in an empty ': )'.
    assert.match(client.stdout(), /^state: \w+ → waiting \(attempt 1, retry in \d+ ms: code 1006, [a-z-]+\)$/m);
    assert.doesNotMatch(client.stdout(), / ms: \)$/m);
    const after = client.stdout().split('\n').filter((l) => REPLY.test(l)).length;
    await waitFor(() => client.stdout().split('\n').filter((l) => REPLY.test(l)).length >= after + 3, 10_000, 'replies after the resume');
    client.child.kill('SIGINT');
    assert.deepEqual(await client.exited, { code: 0, signal: null }, client.stderr());
    const o = outcomes(client.stdout());
    // Only a request in flight at the SIGINT may fail (client-closed): none was lost to the cut.
    const failed = client.stdout().split('\n').filter((l) => FAILED.test(l));
    assert.ok(failed.every((l) => / failed: client-closed: /.test(l)), failed.join('\n'));
    assert.ok(failed.length <= 2, failed.join('\n'));
    assertEachOnce(o);
    assert.match(client.stdout(), /with a session/);
  });
});
