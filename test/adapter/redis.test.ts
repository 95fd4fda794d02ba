// The Redis adapter against a REAL redis-server (test/helpers/redis.ts; no
// mock), with every node a separate process (test/fixtures/cluster-node.ts:
// the CLI's demo server plus createRedisAdapter), driven over its JSON
// protocol: broadcasts and topic publishes cross nodes exactly once; topic
// membership ends with the connection (R3); a Redis crash and restart keeps
// local delivery going and reports every message that could not cross (R12,
// event + metric); presence drops a kill -9'd node within its TTL.
// Loopback only; every process and port is released after each test.
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import net from 'node:net';
import { Redis } from 'ioredis';
import WebSocket from 'ws';
import type { NodeInfo } from '../../src/index.ts';
import { REPO_ROOT, boundedStart, budgets, httpGet, metric, metricsOf, startCliServer } from '../helpers/cli.ts';
import { createRedisAdapter, decodeFrame } from '../../src/adapter/redis.ts';
import { createSupervisor } from '../../src/server/supervisor.ts';
import type { Logger } from '../../src/base/logger.ts';
import type { AdapterDeadLetter } from '../../src/adapter/types.ts';
import { compiledEntry } from '../helpers/compiled.ts';
import { startRedis } from '../helpers/redis.ts';
import { delay, eventually, waitFor } from '../helpers/server.ts';
import { pace } from '../helpers/pace.ts';

/** Measured once, before the tests are declared: their timeouts scale with this machine's speed now (test/helpers/cli.ts). */
const budget = await budgets();

/** Fast clocks so the bounds are testable: a dead node is gone within PRESENCE_TTL_MS. */
const HEARTBEAT_MS = 200;
const PRESENCE_TTL_MS = 1000;

const spawned = new Set<ChildProcessWithoutNullStreams>();
process.on('exit', () => {
  for (const child of spawned) child.kill('SIGKILL');
});

interface DeadLetterLine {
  reason: string;
  kind: string;
  topic: string | null;
  data: string;
  error: string;
}

interface MissedLine {
  from: string;
  count: number;
  cause: string;
  error: string;
}

interface ClusterNode {
  id: string;
  port: number;
  base: string;
  wsUrl: string;
  child: ChildProcessWithoutNullStreams;
  lines: string[];
  /** Resolves with the first line matching `re` at index >= from (rejects on timeout or exit). */
  waitLine(re: RegExp, from?: number, timeoutMs?: number): Promise<number>;
  deadLetters(): DeadLetterLine[];
  /** Receiver-side reports (reason missed): another node's messages that never arrived. */
  missed(): MissedLine[];
  nodes(): Promise<NodeInfo[]>;
  kill9(): Promise<void>;
}

async function startNode(t: TestContext, redisUrl: string, id: string, extraEnv: Record<string, string> = {}): Promise<ClusterNode> {
  // One process per core starting at a time, like the CLI's (test/helpers/cli.ts).
  const child = await boundedStart(() => spawn(process.execPath, [compiledEntry('test/fixtures/cluster-node.ts')], {
    cwd: REPO_ROOT,
    env: {
      ...process.env,
      NODE_OPTIONS: '',
      REDIS_URL: redisUrl,
      NODE_ID: id,
      HEARTBEAT_MS: String(HEARTBEAT_MS),
      PRESENCE_TTL_MS: String(PRESENCE_TTL_MS),
      BACKOFF_MAX_MS: '200',
      COMMAND_TIMEOUT_MS: '1000',
      ...extraEnv,
    },
    stdio: ['pipe', 'pipe', 'pipe'],
  }));
  spawned.add(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  void exited.then(() => spawned.delete(child));
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  const lines: string[] = [];
  let stderr = '';
  let partial = '';
  const waiters = new Set<() => void>();
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    partial += chunk;
    const parts = partial.split('\n');
    partial = parts.pop()!;
    lines.push(...parts);
    for (const w of waiters) w();
  });
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const waitLine = (re: RegExp, from = 0, timeoutMs = 10_000): Promise<number> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const i = lines.findIndex((l, n) => n >= from && re.test(l));
        if (i !== -1) {
          done();
          resolve(i);
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`node ${id}: no line matching ${re} within ${timeoutMs} ms\nstdout:\n${lines.join('\n')}\nstderr:\n${stderr}`));
      }, timeoutMs);
      const onExit = (): void => {
        done();
        reject(new Error(`node ${id} exited before printing ${re}\nstdout:\n${lines.join('\n')}\nstderr:\n${stderr}`));
      };
      const done = (): void => {
        clearTimeout(timer);
        waiters.delete(check);
        child.off('exit', onExit);
      };
      waiters.add(check);
      child.once('exit', onExit);
      check();
    });
  const listening = lines[await waitLine(/^listening \d+ /, 0, budget.startMs)]!;
  const port = Number(listening.split(' ')[1]);
  return {
    id,
    port,
    base: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}/server`,
    child,
    lines,
    waitLine,
    deadLetters: () => lines.filter((l) => l.startsWith('deadletter ')).map((l) => JSON.parse(l.slice('deadletter '.length)) as DeadLetterLine),
    missed: () => lines.filter((l) => l.startsWith('missed ')).map((l) => JSON.parse(l.slice('missed '.length)) as MissedLine),
    async nodes() {
      const from = lines.length;
      child.stdin.write('nodes\n');
      const line = lines[await waitLine(/^nodes(-error)? /, from, 5000)]!;
      if (line.startsWith('nodes-error ')) throw new Error(line);
      return JSON.parse(line.slice('nodes '.length)) as NodeInfo[];
    },
    async kill9() {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** A JSON-protocol client that records every push and awaits replies by requestID. */
interface Client {
  ws: WebSocket;
  /** Pushes (messages without requestID), as text. */
  pushes: string[];
  request(body: Record<string, unknown>): Promise<{ requestID: number; success: boolean; someOtherThing?: string; error?: string }>;
}

async function connect(t: TestContext, node: ClusterNode): Promise<Client> {
  const ws = new WebSocket(node.wsUrl);
  t.after(() => ws.terminate());
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  const pushes: string[] = [];
  const pending = new Map<number, (reply: never) => void>();
  let next = 1;
  ws.on('message', (data) => {
    const text = data.toString();
    const parsed = JSON.parse(text) as { requestID?: number };
    if (parsed.requestID === undefined) pushes.push(text);
    else pending.get(parsed.requestID)?.(parsed as never);
  });
  return {
    ws,
    pushes,
    request(body) {
      const requestID = next++;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no reply to ${JSON.stringify(body)} within 5 s`)), 5000);
        pending.set(requestID, (reply) => {
          clearTimeout(timer);
          pending.delete(requestID);
          resolve(reply);
        });
        ws.send(JSON.stringify({ requestID, ...body }));
      });
    },
  };
}

const broadcastPush = (text: string): string => JSON.stringify({ command: 'broadcast', someOtherThing: text });
const topicPush = (topic: string, text: string): string => JSON.stringify({ command: 'publish', topic, someOtherThing: text });

/** Waits for `marker` among a client's pushes and returns the pushes before it (per-connection FIFO: nothing earlier can still come). */
async function pushesBefore(client: Client, marker: string, timeoutMs = 5000): Promise<string[]> {
  await waitFor(() => client.pushes.includes(marker), timeoutMs, `push ${marker}`);
  return client.pushes.slice(0, client.pushes.indexOf(marker));
}

async function startCluster(t: TestContext, env: Record<string, string> = {}) {
  const redis = await startRedis(t);
  if (!redis) return null;
  const [a, b] = await Promise.all([startNode(t, redis.url, 'node-a', env), startNode(t, redis.url, 'node-b', env)]);
  await Promise.all([a.waitLine(/^status up$/), b.waitLine(/^status up$/)]);
  return { redis, a, b };
}

/**
 * Two tests at once in the describes whose tests mostly wait (a node stopped, a Redis restarted, a heartbeat or a
 * command timeout to pass): each has its own redis-server and nodes, so they do not interfere, and process starts stay
 * bounded by boundedStart (one per core across the suite). Not the presence test (it times an expiry against a margin
 * scaled by the pace measured at the start, in a describe of its own) nor the backpressure tests (they bound this
 * process's RSS: tried beside each other, 2026-12-06, the process grew 24 MiB in the whole file against 4-11 MiB one
 * after the other, 51 MiB in a process running only these two against 37 and 20 MiB, of the 96 MiB bound). The two
 * in-process history tests, each with its own redis-server, run beside each other (`TOGETHER`), in a describe run alone.
 */
const WAITING = { concurrency: 2 };
/** The two tests of a describe at once, in a describe run alone (see WAITING). */
const TOGETHER = { concurrency: 2 };

describe('Redis adapter: two node processes, one real redis-server', WAITING, () => {
  test('broadcast crosses; a topic publish reaches members on both nodes exactly once and no one else; membership ends with the connection', { timeout: budget.scaled(60_000) }, async (t) => {
    const cluster = await startCluster(t);
    if (!cluster) return;
    const { a, b } = cluster;
    const a1 = await connect(t, a); // publisher, not a member
    const a2 = await connect(t, a); // member on the publisher's node
    const b1 = await connect(t, b); // member on the other node
    const b2 = await connect(t, b); // not a member
    assert.deepEqual(await a2.request({ command: 'join', topic: 'news' }), {
      requestID: 1, success: true, someOtherThing: 'joined news', topic: 'news',
    } as never);
    assert.equal((await b1.request({ command: 'join', someOtherThing: 'news' })).someOtherThing, 'joined news', 'three-field clients join by someOtherThing');

    await a1.request({ command: 'broadcast', someOtherThing: 'hello' });
    assert.equal((await a1.request({ command: 'publish', topic: 'news', someOtherThing: 'n1' })).success, true);
    await a1.request({ command: 'broadcast', someOtherThing: 'mark1' }); // same sender, same channel: arrives after n1 everywhere
    assert.deepEqual(await pushesBefore(a1, broadcastPush('mark1')), [broadcastPush('hello')], 'the publisher is no member');
    assert.deepEqual(await pushesBefore(a2, broadcastPush('mark1')), [broadcastPush('hello'), topicPush('news', 'n1')], 'local member: once, not echoed back by Redis');
    assert.deepEqual(await pushesBefore(b1, broadcastPush('mark1')), [broadcastPush('hello'), topicPush('news', 'n1')], 'remote member');
    assert.deepEqual(await pushesBefore(b2, broadcastPush('mark1')), [broadcastPush('hello')], 'remote non-member');

    // The other way: B publishes, A's member gets it.
    await b2.request({ command: 'publish', topic: 'news', someOtherThing: 'n2' });
    await b2.request({ command: 'broadcast', someOtherThing: 'mark2' });
    assert.deepEqual((await pushesBefore(a2, broadcastPush('mark2'))).slice(3), [topicPush('news', 'n2')]);
    assert.deepEqual((await pushesBefore(a1, broadcastPush('mark2'))).slice(1), [broadcastPush('mark1')]);

    // R3: B's only member closes; a new connection on B that did not join gets nothing.
    b1.ws.close(1000);
    await waitFor(() => b1.ws.readyState === WebSocket.CLOSED, 5000, 'b1 closed');
    const deadline = Date.now() + pace.scaled(5000);
    let bMetrics = await metricsOf(b.base);
    while (metric(bMetrics, 'ws_supervisor_connections') !== 1 && Date.now() < deadline) {
      await delay(20);
      bMetrics = await metricsOf(b.base);
    }
    assert.equal(metric(bMetrics, 'ws_supervisor_connections'), 1, 'b1 is gone from node B');
    assert.equal(metric(bMetrics, 'ws_supervisor_topics'), 0, 'its topic entry on B is deleted (no empty set left behind)');
    const b3 = await connect(t, b);
    await a1.request({ command: 'publish', topic: 'news', someOtherThing: 'n3' });
    await a1.request({ command: 'broadcast', someOtherThing: 'mark3' });
    assert.deepEqual(await pushesBefore(b3, broadcastPush('mark3')), [], 'a new connection that did not join');
    assert.deepEqual((await pushesBefore(a2, broadcastPush('mark3'))).slice(-2), [broadcastPush('mark2'), topicPush('news', 'n3')]);
    assert.equal(metric(await metricsOf(a.base), 'ws_supervisor_topics'), 1, 'A still has its member');

    // Presence counts: each node reports its own live connections (as of its next heartbeat).
    await eventually(async () => {
      const nodes = await a.nodes();
      assert.deepEqual(
        nodes.map((n) => [n.id, n.connections, n.self]).sort(),
        [['node-a', 2, true], ['node-b', 2, false]],
      );
    });
    assert.deepEqual([...a.deadLetters(), ...b.deadLetters()], [], 'nothing was reported while Redis was up');
    assert.deepEqual([...a.missed(), ...b.missed()], [], 'no false gap: every numbered message arrived');
  });

  test('Redis killed and restarted: local delivery continues; every message that could not cross is reported (event + metric); cross-node delivery resumes', { timeout: budget.scaled(60_000) }, async (t) => {
    const cluster = await startCluster(t);
    if (!cluster) return;
    const { redis, a, b } = cluster;
    const a1 = await connect(t, a);
    const b1 = await connect(t, b);
    await a1.request({ command: 'join', topic: 't' });
    await b1.request({ command: 'join', topic: 't' });

    // Before: crosses.
    for (let i = 0; i < 3; i++) await a1.request({ command: 'broadcast', someOtherThing: `pre-${i}` });
    await a1.request({ command: 'publish', topic: 't', someOtherThing: 'pre-p' });
    await a1.request({ command: 'broadcast', someOtherThing: 'pre-mark' });
    assert.deepEqual(await pushesBefore(b1, broadcastPush('pre-mark')), [
      broadcastPush('pre-0'), broadcastPush('pre-1'), broadcastPush('pre-2'), topicPush('t', 'pre-p'),
    ]);

    // Outage.
    const fromA = a.lines.length;
    const fromB = b.lines.length;
    await redis.kill();
    await Promise.all([a.waitLine(/^status degraded redis unavailable/, fromA), b.waitLine(/^status degraded redis unavailable/, fromB)]);
    const health = await httpGet(`${a.base}/healthz`);
    assert.equal(health.status, 200, 'a degraded node stays in the load balancer');
    assert.match(health.body, /^degraded: redis unavailable/);

    const outageFromA: string[] = [];
    for (let i = 0; i < 10; i++) {
      const text = `out-${i}`;
      const reply = await a1.request(i % 2 === 0 ? { command: 'broadcast', someOtherThing: text } : { command: 'publish', topic: 't', someOtherThing: text });
      assert.equal(reply.success, true, 'the sender is answered as usual');
      outageFromA.push(i % 2 === 0 ? broadcastPush(text) : topicPush('t', text));
    }
    const outageFromB: string[] = [];
    for (let i = 0; i < 4; i++) {
      await b1.request({ command: 'broadcast', someOtherThing: `bout-${i}` });
      outageFromB.push(broadcastPush(`bout-${i}`));
    }
    // Local delivery kept working on both nodes.
    await waitFor(() => outageFromA.every((m) => a1.pushes.includes(m)), 5000, 'local delivery on A during the outage');
    await waitFor(() => outageFromB.every((m) => b1.pushes.includes(m)), 5000, 'local delivery on B during the outage');

    // Restart; wait until both nodes are subscribed again.
    const upFromA = a.lines.length;
    const upFromB = b.lines.length;
    await redis.restart();
    await Promise.all([a.waitLine(/^status up$/, upFromA, 15_000), b.waitLine(/^status up$/, upFromB, 15_000)]);
    assert.equal((await httpGet(`${a.base}/healthz`)).body, 'ok\n');

    // After: crosses again, both ways.
    for (let i = 0; i < 3; i++) await a1.request({ command: 'broadcast', someOtherThing: `post-${i}` });
    await a1.request({ command: 'publish', topic: 't', someOtherThing: 'post-p' });
    await a1.request({ command: 'broadcast', someOtherThing: 'post-mark' });
    const bAfterPre = (await pushesBefore(b1, broadcastPush('post-mark'), 10_000)).slice(5);
    await b1.request({ command: 'broadcast', someOtherThing: 'b-post-mark' });
    await pushesBefore(a1, broadcastPush('b-post-mark'), 10_000);

    // R12 accounting: what did not reach the other node was reported, one for one.
    const undeliveredFromA = outageFromA.filter((m) => !b1.pushes.includes(m));
    const undeliveredFromB = outageFromB.filter((m) => !a1.pushes.includes(m));
    const lettersA = a.deadLetters();
    const lettersB = b.deadLetters();
    t.diagnostic(`undelivered A→B ${undeliveredFromA.length}, reported by A ${lettersA.length}; B→A ${undeliveredFromB.length}, reported by B ${lettersB.length}`);
    assert.equal(undeliveredFromA.length, outageFromA.length, 'nothing crossed while Redis was down');
    assert.equal(lettersA.length, undeliveredFromA.length, 'A reported every message it could not send');
    assert.deepEqual(lettersA.map((l) => l.data), undeliveredFromA, 'with the very data, in order');
    assert.ok(lettersA.every((l) => l.reason === 'unavailable' && /^redis unavailable/.test(l.error)));
    assert.deepEqual(lettersA.map((l) => [l.kind, l.topic]), outageFromA.map((_, i) => (i % 2 === 0 ? ['broadcast', null] : ['publish', 't'])));
    assert.equal(lettersB.length, undeliveredFromB.length);
    assert.deepEqual(lettersB.map((l) => l.data), undeliveredFromB);
    assert.equal(metric(await metricsOf(a.base), 'ws_supervisor_adapter_publish_failures_total', { reason: 'unavailable' }), lettersA.length);
    assert.equal(metric(await metricsOf(b.base), 'ws_supervisor_adapter_publish_failures_total', { reason: 'unavailable' }), lettersB.length);
    assert.equal(metric(await metricsOf(a.base), 'ws_supervisor_adapter_up'), 1);

    // Resumed: B got A's post-restart messages (after the outage's local-only ones), in order.
    assert.deepEqual(bAfterPre.filter((m) => !outageFromB.includes(m)), [
      broadcastPush('post-0'), broadcastPush('post-1'), broadcastPush('post-2'), topicPush('t', 'post-p'),
    ]);
    // Both nodes re-register in the restarted (empty) Redis: B at its first presence write after its reconnect, which
    // can still be on its way (a presence read begun against the old Redis fails, and the next heartbeat writes it).
    await eventually(async () => assert.deepEqual((await a.nodes()).map((n) => n.id).sort(), ['node-a', 'node-b']));
    // Unsent messages (`unavailable`) get no sequence number: the receivers see no gap, nothing is reported twice.
    await delay(pace.scaled(HEARTBEAT_MS * 3)); // time for a (wrong) report
    assert.deepEqual([...a.missed(), ...b.missed()], []);
  });
});

// Alone: it times an expiry against a margin scaled by the pace measured at the file's start.
describe('Redis adapter: presence', () => {
  test('presence: two nodes listed with their counts; a kill -9\'d node disappears within the presence TTL; a closed one at once', { timeout: budget.scaled(60_000) }, async (t) => {
    const cluster = await startCluster(t);
    if (!cluster) return;
    const { redis, a, b } = cluster;
    await connect(t, a);
    await connect(t, b);
    await connect(t, b);
    // As of the next heartbeats (not a fixed wait: a busy machine delays them).
    await eventually(async () => assert.deepEqual((await a.nodes()).map((n) => [n.id, n.connections]).sort(), [['node-a', 1], ['node-b', 2]]));
    const nodes = await a.nodes();
    for (const n of nodes) {
      assert.equal(n.self, n.id === 'node-a');
      assert.ok(n.pid > 0 && n.hostname.length > 0 && n.startedAt > 0 && n.updatedAt >= n.startedAt);
    }

    // A graceful node says goodbye: gone at once.
    const c = await startNode(t, redis.url, 'node-c');
    await c.waitLine(/^status up$/);
    // Its presence entry is written just after it turns up (the adapter's first heartbeat then): as of that write.
    await eventually(async () => assert.equal((await a.nodes()).length, 3));
    c.child.stdin.write('close\n');
    await new Promise<void>((resolve) => c.child.once('exit', () => resolve()));
    assert.deepEqual((await a.nodes()).map((n) => n.id).sort(), ['node-a', 'node-b'], 'goodbye: removed without waiting for the TTL');

    // kill -9: no goodbye; Redis expires its entry within the TTL of its last heartbeat.
    const killedAt = Date.now();
    await b.kill9();
    // R12 meanwhile: a broadcast that the dead node (still listed) cannot receive is reported as partial.
    const a1 = await connect(t, a);
    await a1.request({ command: 'broadcast', someOtherThing: 'to-a-dead-node' });
    // The margin covers the polling round trip and a late Redis expiry on a
    // loaded machine: scaled by the pace, but kept well under the 15 s default
    // TTL, so a presenceTtl that was not applied still fails.
    const margin = Math.min(pace.scaled(750), 7_000);
    let gone = 0;
    while (Date.now() - killedAt < PRESENCE_TTL_MS + margin + 2000) {
      const ids = (await a.nodes()).map((n) => n.id);
      if (!ids.includes('node-b')) {
        gone = Date.now() - killedAt;
        break;
      }
      await delay(50);
    }
    t.diagnostic(`node-b gone from presence ${gone} ms after kill -9 (TTL ${PRESENCE_TTL_MS} ms, heartbeat ${HEARTBEAT_MS} ms)`);
    assert.ok(gone > 0, 'node-b disappeared');
    assert.ok(gone <= PRESENCE_TTL_MS + margin, `within the TTL + ${margin} ms (${gone} ms)`);
    assert.deepEqual((await a.nodes()).map((n) => n.id), ['node-a']);
    await a.waitLine(/^deadletter .*"reason":"partial"/, 0, 5000);
    const partial = a.deadLetters().filter((l) => l.reason === 'partial');
    assert.deepEqual(partial.map((l) => l.data), [broadcastPush('to-a-dead-node')]);
    assert.match(partial[0]!.error, /^reached 1 of 2 nodes$/);
    assert.equal(metric(await metricsOf(a.base), 'ws_supervisor_adapter_publish_failures_total', { reason: 'partial' }), 1);
  });
});

/** A plain client for setup and inspection (CONFIG SET, SELECT, KEYS). */
async function admin(t: TestContext, url: string): Promise<Redis> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  r.on('error', () => undefined); // reconnect attempts after the server is gone (the test is over): not a failure
  await r.connect();
  t.after(() => r.disconnect());
  return r;
}

/** A logger that keeps every line. */
function recordingLogger(): { logger: Logger; lines: Array<{ level: string; msg: string; fields: Record<string, unknown> }> } {
  const lines: Array<{ level: string; msg: string; fields: Record<string, unknown> }> = [];
  const at = (level: string) => (fields: object, msg = ''): void => void lines.push({ level, msg, fields: fields as Record<string, unknown> });
  const logger: Logger = { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), child: () => logger };
  return { logger, lines };
}

/** waitFor with an async condition (HTTP polls). */
async function waitUntil(cond: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(50);
  }
}

const sum = (missed: MissedLine[]): number => missed.reduce((n, m) => n + m.count, 0);

/** A and B each have a client; a broadcast from A reached B's ('pre'); then B is stopped (SIGSTOP; continued at the end of the test). */
async function stopBAfterPre(t: TestContext, cluster: NonNullable<Awaited<ReturnType<typeof startCluster>>>) {
  const { a, b } = cluster;
  const a1 = await connect(t, a);
  const b1 = await connect(t, b);
  await a1.request({ command: 'broadcast', someOtherThing: 'pre' });
  await waitFor(() => b1.pushes.includes(broadcastPush('pre')), 5000, 'pre crosses');
  b.child.kill('SIGSTOP');
  t.after(() => void b.child.kill('SIGCONT'));
  return { a1, b1 };
}

/**
 * A client on each node, one broadcast crossing; then B stalls (a long GC
 * pause, an overloaded host: SIGSTOP) while Redis restarts empty, and A comes
 * back alone. B stays stopped: the caller resumes it.
 */
async function stallBAcrossEmptyRedis(t: TestContext, cluster: NonNullable<Awaited<ReturnType<typeof startCluster>>>) {
  const { redis, a, b } = cluster;
  const { a1, b1 } = await stopBAfterPre(t, cluster);
  const fromA = a.lines.length;
  await redis.kill();
  await redis.restart();
  await a.waitLine(/^status up$/, fromA, 15_000);
  return { a1, b1 };
}

/**
 * Redis cuts B's subscriber for its output buffer: a small pubsub limit
 * (256 KB), B stopped (SIGSTOP) while A sends `n` broadcasts `big-<i>-<pad>`,
 * then B resumed. Returns once the 'pre' broadcast crossed, the n were sent
 * and B was continued; `fromB` is B's log position then.
 */
async function cutBByOutputBuffer(t: TestContext, cluster: NonNullable<Awaited<ReturnType<typeof startCluster>>>, n: number, pad: string) {
  const { redis, a, b } = cluster;
  const r = await admin(t, redis.url);
  // A small limit so a few MB overflow it (the default, 32 MB hard, needs more traffic than a test should send).
  await r.config('SET', 'client-output-buffer-limit', 'pubsub 256kb 0 0');
  const { a1, b1 } = await stopBAfterPre(t, cluster);
  for (let i = 0; i < n; i++) await a1.request({ command: 'broadcast', someOtherThing: `big-${i}-${pad}` });
  return { a1, b1, fromB: b.lines.length };
}

describe('Redis adapter: nothing lost without a trace (receiver-side gaps, hangs, bad URLs)', WAITING, () => {
  test('D1: the sender sees only itself after Redis lost everything; the node that comes back later reports what it missed (count, sender)', { timeout: budget.scaled(60_000) }, async (t) => {
    const cluster = await startCluster(t);
    if (!cluster) return;
    const { a, b } = cluster;
    const { a1, b1 } = await stallBAcrossEmptyRedis(t, cluster);
    await eventually(async () => assert.deepEqual((await a.nodes()).map((n) => n.id), ['node-a'], 'A knows no other node: it cannot report partial'));
    for (let i = 0; i < 5; i++) assert.equal((await a1.request({ command: 'broadcast', someOtherThing: `gap-${i}` })).success, true);
    await delay(pace.scaled(HEARTBEAT_MS * 2)); // A's presence entry now carries its latest number (a heartbeat, scaled by the pace)

    // B comes back; A publishes nothing more: B finds the gap through A's presence entry.
    const fromB = b.lines.length;
    b.child.kill('SIGCONT');
    await b.waitLine(/^missed /, fromB, 15_000);
    await delay(pace.scaled(HEARTBEAT_MS * 3)); // no second report of the same gap (window scaled by the pace)
    assert.deepEqual(b.missed().map((m) => [m.from, m.count]), [['node-a', 5]]);
    assert.match(b.missed()[0]!.error, /^missed 5 messages from node node-a: its presence entry lists 6 messages, 1 arrived$/);
    assert.equal(metric(await metricsOf(b.base), 'ws_supervisor_adapter_missed_total', { cause: 'no-history' }), 5);
    assert.deepEqual(a.deadLetters(), [], 'the sender could not tell: only the receiver can');
    assert.ok(b1.pushes.every((p) => !p.includes('gap-')), 'none of them arrived');

    // Delivery resumes without a false report.
    await a1.request({ command: 'broadcast', someOtherThing: 'post' });
    await waitFor(() => b1.pushes.includes(broadcastPush('post')), 10_000, 'post crosses');
    await delay(pace.scaled(HEARTBEAT_MS * 3)); // time for a (wrong) report
    assert.equal(sum(b.missed()), 5);
  });

  test('D1: a gap is also found from the next frame of the sender', { timeout: budget.scaled(60_000) }, async (t) => {
    // Heartbeats far apart (none falls within the test): the presence entry cannot reveal the gap, the next frame must.
    const cluster = await startCluster(t, { HEARTBEAT_MS: '600000', PRESENCE_TTL_MS: '1200000' });
    if (!cluster) return;
    const { a, b } = cluster;
    const { a1, b1 } = await stallBAcrossEmptyRedis(t, cluster);
    // A's presence read after the restart is done (it knows only itself): its publishes below reach as many
    // subscribers as it knows nodes, so none of them re-reads presence, which would write A's new count into
    // its entry and let B find the gap there first (seen once in CI, on a loaded machine).
    await eventually(async () => assert.deepEqual((await a.nodes()).map((n) => n.id), ['node-a']));
    for (let i = 0; i < 3; i++) await a1.request({ command: 'broadcast', someOtherThing: `gap-${i}` });
    const fromB = b.lines.length;
    b.child.kill('SIGCONT');
    await b.waitLine(/^status up$/, fromB, 15_000);
    await a1.request({ command: 'broadcast', someOtherThing: 'post' });
    await waitFor(() => b1.pushes.includes(broadcastPush('post')), 10_000, 'post crosses');
    await b.waitLine(/^missed /, fromB, 5000);
    assert.deepEqual(b.missed().map((m) => [m.from, m.count]), [['node-a', 3]]);
    assert.match(b.missed()[0]!.error, /its messages 2–4 never arrived/);
  });

  test('D2: Redis drops a stalled subscriber (client-output-buffer-limit pubsub): what it never got is reported by it, one for one', { timeout: budget.scaled(90_000) }, async (t) => {
    const cluster = await startCluster(t);
    if (!cluster) return;
    const { a, b } = cluster;
    const N = 100;
    // 20 MB in all: more than the loopback socket buffers hold.
    const { b1 } = await cutBByOutputBuffer(t, cluster, N, 'x'.repeat(200_000));
    await delay(300);
    const fromB = b.lines.length;
    b.child.kill('SIGCONT');
    await b.waitLine(/^status degraded/, fromB, 10_000);
    await b.waitLine(/^status up$/, fromB, 15_000);
    const received = (): number => b1.pushes.filter((p) => p.startsWith('{"command":"broadcast","someOtherThing":"big-')).length;
    await waitFor(() => received() + sum(b.missed()) >= N, 15_000, `received ${received()} + missed ${sum(b.missed())} = ${N}`);
    await delay(pace.scaled(HEARTBEAT_MS * 3)); // time for a (wrong) report
    t.diagnostic(`B received ${received()} of ${N}, reported ${sum(b.missed())} missed; A reported ${a.deadLetters().length} partial`);
    assert.ok(received() < N, 'Redis closed the subscriber: some were lost');
    assert.equal(received() + sum(b.missed()), N, 'every message arrived or was reported missed, none twice');
    assert.ok(b.missed().every((m) => m.from === 'node-a'));
    assert.equal(metric(await metricsOf(b.base), 'ws_supervisor_adapter_missed_total', { cause: 'no-history' }), N - received());
  });

  test('D3: a hung Redis (SIGSTOP) turns the status degraded ("command timed out") and back up; an unconfirmed publish is `error` and may still arrive', { timeout: budget.scaled(60_000) }, async (t) => {
    const cluster = await startCluster(t);
    if (!cluster) return;
    const { redis, a, b } = cluster;
    const a1 = await connect(t, a);
    const b1 = await connect(t, b);
    const fromA = a.lines.length;
    redis.pause();
    t.after(() => redis.resume());
    await a.waitLine(/^status degraded redis command timed out \(no reply within 1000 ms\)$/, fromA, 5000);
    const health = await httpGet(`${a.base}/healthz`);
    assert.equal(health.status, 200);
    assert.equal(health.body, 'degraded: redis command timed out (no reply within 1000 ms)\n');
    assert.equal(metric(await metricsOf(a.base), 'ws_supervisor_adapter_up'), 0);
    await a1.request({ command: 'broadcast', someOtherThing: 'during-hang' });
    await a.waitLine(/^deadletter .*"reason":"error"/, fromA, 5000);
    assert.match(a.deadLetters().at(-1)!.error, /^publish not confirmed \(it may still be delivered\): Command timed out/);

    const upFrom = a.lines.length;
    redis.resume();
    await a.waitLine(/^status up$/, upFrom, 10_000);
    // Redis had it all along: it is delivered late, and B reports no gap (the `error` was "unconfirmed", not "lost").
    await waitFor(() => b1.pushes.includes(broadcastPush('during-hang')), 10_000, 'the unconfirmed message arrives late');
    await delay(pace.scaled(HEARTBEAT_MS * 3)); // time for a (wrong) report
    assert.deepEqual(b.missed(), []);
    assert.equal((await httpGet(`${a.base}/healthz`)).body, 'ok\n');
  });

  test('D6: a database Redis does not have (/16) stays degraded with the reason, never db 0; /3 keeps presence in db 3', { timeout: budget.scaled(30_000) }, async (t) => {
    const redis = await startRedis(t);
    if (!redis) return;
    const { logger, lines } = recordingLogger();
    const bad = createRedisAdapter({ url: `${redis.url}/16`, nodeId: 'bad', backoff: { initialDelay: 20, maxDelay: 200 } });
    const supBad = createSupervisor({ adapter: bad, logger });
    t.after(() => supBad.close());
    const letters: AdapterDeadLetter[] = [];
    supBad.on('adapterDeadLetter', (l) => letters.push(l));
    await waitFor(() => /cannot select database 16/.test(bad.statusReason ?? ''), 5000, 'SELECT 16 refused');
    assert.match(bad.statusReason!, /^redis unavailable: cannot select database 16: ERR DB index is out of range/);
    await delay(pace.scaled(600)); // retried (every backoff.maxDelay): still degraded, and warned once
    assert.equal(bad.status, 'degraded');
    assert.equal(lines.filter((l) => l.level === 'warn' && /cannot select database 16/.test(l.msg)).length, 1);
    supBad.broadcast('x');
    assert.deepEqual(letters.map((l) => l.reason), ['unavailable'], 'not sent to db 0 as if all were well');
    await assert.rejects(supBad.nodes(), /cannot select database 16/);

    const good = createRedisAdapter({ url: `${redis.url}/3`, nodeId: 'good', backoff: { initialDelay: 20, maxDelay: 200 } });
    const supGood = createSupervisor({ adapter: good });
    t.after(() => supGood.close());
    await waitFor(() => good.status === 'up', 5000, 'db 3 up');
    await supGood.nodes();
    const r = await admin(t, redis.url);
    assert.equal(await r.exists('ws-supervisor:node:good'), 0, 'nothing in db 0');
    await r.select(3);
    assert.equal(await r.exists('ws-supervisor:node:good'), 1, 'the presence entry is in db 3');

    assert.throws(() => createRedisAdapter({ url: `${redis.url}/notadb` }), (err: Error) => err instanceof RangeError && /"\/notadb"/.test(err.message));
  });

  test('D4: a wrong password at startup: one warning with WRONGPASS, degraded with the reason; the password is never logged', { timeout: budget.scaled(30_000) }, async (t) => {
    const redis = await startRedis(t, { args: ['--requirepass', 's3cr3t-P4ss'] });
    if (!redis) return;
    const { logger, lines } = recordingLogger();
    const adapter = createRedisAdapter({ url: `redis://:wrong-Pa55@127.0.0.1:${redis.port}`, backoff: { initialDelay: 20, maxDelay: 50 } });
    const sup = createSupervisor({ adapter, logger });
    t.after(() => sup.close());
    await waitFor(() => lines.filter((l) => l.msg.startsWith('redis adapter: connection error')).length >= 4, 10_000, 'several attempts');
    const warnings = lines.filter((l) => l.level === 'warn' && l.msg.startsWith('redis adapter: connection error'));
    assert.equal(warnings.length, 1, JSON.stringify(warnings));
    assert.match(warnings[0]!.msg, /WRONGPASS/);
    assert.match(adapter.statusReason ?? '', /^redis unavailable: WRONGPASS/);
    assert.ok(!JSON.stringify(lines).includes('wrong-Pa55'));

    // The right password in ?password= (ioredis's form) works, and is masked too.
    const ok = createRedisAdapter({ url: `redis://127.0.0.1:${redis.port}/0?password=s3cr3t-P4ss` });
    assert.equal(ok.displayUrl, `redis://:***@127.0.0.1:${redis.port}/0`);
    const supOk = createSupervisor({ adapter: ok });
    t.after(() => supOk.close());
    await waitFor(() => ok.status === 'up', 5000, 'authenticated');
  });
});

describe('CLI with Redis: startup warning, masked passwords, --redis-env, GET /cluster', WAITING, () => {
  test('D4: Redis not reachable at startup: the server serves, and says so on stderr', { timeout: budget.scaled(30_000) }, async (t) => {
    const dead = net.createServer();
    await new Promise<void>((resolve) => dead.listen(0, '127.0.0.1', resolve));
    const port = (dead.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => dead.close(() => resolve()));
    const srv = await startCliServer(['--redis', `redis://127.0.0.1:${port}`], t);
    await waitFor(() => /warning: Redis/.test(srv.stderr()), 10_000, 'the startup warning');
    assert.match(
      srv.stderr(),
      new RegExp(`^ws-supervisor: warning: Redis at redis://127\\.0\\.0\\.1:${port}/0 is not reachable \\(redis unavailable: connect ECONNREFUSED 127\\.0\\.0\\.1:${port}\\): serving this process's clients only`, 'm'),
    );
    assert.equal((await httpGet(`${srv.base}/healthz`)).status, 200, 'it serves meanwhile');
    const warns = srv.stdout().split('\n').filter((l) => l.includes('"level":40') && l.includes('ECONNREFUSED') && l.includes('connection error'));
    assert.equal(warns.length, 1, `one JSON warning for the repeated refusals:\n${srv.stdout()}`);
  });

  test('D4 + D6: Redis answered but refused the database (/99 of 16): the warning says what Redis answered, not "not reachable"', { timeout: budget.scaled(30_000) }, async (t) => {
    const redis = await startRedis(t);
    if (!redis) return;
    const srv = await startCliServer(['--redis', `${redis.url}/99`], t);
    await waitFor(() => /warning: Redis/.test(srv.stderr()), 10_000, 'the startup warning');
    // Before, this said "is not reachable (redis unavailable: cannot select database 99: …)" of a Redis that had answered.
    assert.match(
      srv.stderr(),
      new RegExp(`^ws-supervisor: warning: Redis at redis://127\\.0\\.0\\.1:${redis.port}/99 refused database 99: ERR DB index is out of range: serving this process's clients only`, 'm'),
    );
    assert.doesNotMatch(srv.stderr(), /not reachable/);
    assert.equal((await httpGet(`${srv.base}/healthz`)).status, 200, 'it serves meanwhile');
  });

  test('D5 + D8: ?password= is masked in every line; --redis-env reads the URL from the environment; /cluster lists both nodes', { timeout: budget.scaled(60_000) }, async (t) => {
    const redis = await startRedis(t, { args: ['--requirepass', 's3cr3t-P4ss'] });
    if (!redis) return;
    const url = `redis://127.0.0.1:${redis.port}/0?password=s3cr3t-P4ss`;
    const one = await startCliServer(['--redis', url, '--log-level', 'debug'], t);
    assert.match(one.stdout(), new RegExp(`broadcasts through redis://:\\*\\*\\*@127\\.0\\.0\\.1:${redis.port}/0\\n`));
    process.env.WS_SUPERVISOR_TEST_REDIS = url;
    t.after(() => void delete process.env.WS_SUPERVISOR_TEST_REDIS);
    const two = await startCliServer(['--redis-env', 'WS_SUPERVISOR_TEST_REDIS', '--log-level', 'debug'], t);
    for (const srv of [one, two]) await waitUntil(async () => (await httpGet(`${srv.base}/healthz`)).body === 'ok\n', 10_000, 'adapter up');
    await waitUntil(async () => (JSON.parse((await httpGet(`${one.base}/cluster`)).body) as { nodes: unknown[] }).nodes.length === 2, 10_000, 'both nodes listed');
    const ws = new WebSocket(`ws://127.0.0.1:${two.port}/server`);
    t.after(() => ws.terminate());
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    // As of the other node's next heartbeat (every 5 s: its count is as of its last one), read until it shows,
    // instead of sleeping a whole heartbeat first: the same bound (5.5 s + 6 s, scaled by the pace), ~2.5 s less on average.
    await eventually(async () => {
      const r = await httpGet(`${one.base}/cluster`);
      assert.equal(r.status, 200);
      const body = JSON.parse(r.body) as { nodes: NodeInfo[]; connections: number };
      assert.equal(body.connections, 1);
      assert.deepEqual(body.nodes.map((n) => [n.self, n.connections]).sort(), [[false, 1], [true, 0]]);
    }, 5_500 + 6_000);
    for (const srv of [one, two]) assert.ok(!(srv.stdout() + srv.stderr()).includes('s3cr3t-P4ss'), `the password leaked:\n${srv.stdout()}`);

    await redis.kill();
    await waitUntil(async () => (await httpGet(`${one.base}/cluster`)).status === 503, 10_000, '/cluster 503 while Redis is down');
    assert.match((JSON.parse((await httpGet(`${one.base}/cluster`)).body) as { error: string }).error, /^redis unavailable/);
  });
});

describe('Redis adapter: backpressure while Redis hangs', () => {
  // With the history option the frame goes out in a script (XADD + PUBLISH): the same bound and reports must hold.
  for (const history of [false, true]) test(`Redis hung (SIGSTOP) under ~2k msg/s of 8 KiB broadcasts${history ? ', history on' : ''}: bytes in flight stay under maxInFlightBytes, RSS stays bounded, the excess is reported unavailable at once, every message is delivered or reported, warnings are aggregated`, { timeout: 60_000 }, async (t) => {
    const redis = await startRedis(t);
    if (!redis) return;
    // The other node, reduced to what matters here: a subscriber that records which messages crossed.
    const listener = await admin(t, redis.url);
    const delivered = new Set<number>();
    listener.on('messageBuffer', (_channel: Buffer, frame: Buffer) => {
      const decoded = decodeFrame(frame);
      if (!('error' in decoded)) delivered.add(indexOf(decoded.message.data));
    });
    await listener.subscribe('ws-supervisor:messages');

    const CAP = 512 * 1024;
    const SIZE = 8 * 1024;
    const { logger, lines } = recordingLogger();
    const adapter = createRedisAdapter({ url: redis.url, nodeId: 'sender', commandTimeout: 500, maxInFlightBytes: CAP, backoff: { initialDelay: 20, maxDelay: 200 }, history });
    const sup = createSupervisor({ adapter, logger });
    t.after(() => sup.close());
    await waitFor(() => adapter.status === 'up', 5000, 'adapter up');

    const reported = new Map<number, string>();
    let current = -1;
    let reportedAtOnce = 0;
    sup.on('adapterDeadLetter', (letter) => {
      if (letter.reason === 'missed') return;
      const i = indexOf(letter.data);
      assert.ok(!reported.has(i), `message ${i} reported twice`);
      reported.set(i, letter.reason);
      if (i === current && letter.reason === 'unavailable') reportedAtOnce++;
    });

    // 20 messages every 10 ms (~2k/s) for ~0.5 s up, HANG_MS hung, ~1 s after the resume.
    const HANG_MS = 4000;
    let sent = 0;
    let maxInFlight = 0;
    global.gc?.();
    const rssBefore = process.memoryUsage().rss;
    let rssMax = rssBefore;
    const sendFor = async (ms: number): Promise<void> => {
      const end = Date.now() + ms;
      while (Date.now() < end) {
        for (let k = 0; k < 20; k++) {
          current = sent++;
          sup.broadcast(payload(current, SIZE));
          maxInFlight = Math.max(maxInFlight, adapter.inFlightBytes);
        }
        rssMax = Math.max(rssMax, process.memoryUsage().rss);
        await delay(10);
      }
      current = -1;
    };
    await sendFor(500);
    redis.pause();
    t.after(() => redis.resume());
    await sendFor(HANG_MS);
    redis.resume();
    await sendFor(1000);
    const inFlight = (): number => adapter.inFlightBytes;
    await waitFor(() => delivered.size + [...reported.values()].filter((r) => r === 'unavailable').length >= sent && inFlight() === 0, 15_000, 'every message delivered or reported');
    await delay(pace.scaled(300)); // time for a (wrong) second report

    const unavailable = [...reported].filter(([, r]) => r === 'unavailable').map(([i]) => i);
    const errors = [...reported].filter(([, r]) => r === 'error').map(([i]) => i);
    const warns = lines.filter((l) => l.level === 'warn');
    t.diagnostic(
      `sent ${sent} (${((sent * SIZE) / 1048576).toFixed(1)} MiB), delivered ${delivered.size}, unavailable ${unavailable.length} (${reportedAtOnce} at once), ` +
        `error ${errors.length}; max in flight ${maxInFlight} B (cap ${CAP}); RSS ${(rssBefore / 1048576).toFixed(0)} → max ${(rssMax / 1048576).toFixed(0)} MiB; ${warns.length} warn lines`,
    );
    assert.ok(maxInFlight <= CAP + SIZE + 512, `bytes in flight ${maxInFlight} stayed under the cap ${CAP} (plus one frame)`);
    assert.ok(unavailable.length > 0, 'beyond the cap, messages were refused');
    assert.equal(reportedAtOnce, unavailable.length, 'each refused message was reported within its broadcast call');
    for (let i = 0; i < sent; i++) assert.ok(delivered.has(i) || reported.has(i), `message ${i} was neither delivered nor reported`);
    assert.ok(unavailable.every((i) => !delivered.has(i)), 'an unavailable message was never sent');
    assert.equal(delivered.size + unavailable.length, sent, 'delivered + unavailable = sent (the hung Redis delivered every unconfirmed one late)');
    assert.equal(metric(await sup.metrics.registry.metrics(), 'ws_supervisor_adapter_publish_failures_total', { reason: 'unavailable' }), unavailable.length);
    // Old code: the socket buffer and ioredis's queue held every frame (~2 copies of all 8 KiB payloads).
    assert.ok(rssMax - rssBefore < 96 * 1048576, `RSS grew ${((rssMax - rssBefore) / 1048576).toFixed(0)} MiB`);
    // Old code: one warn line per dead letter (thousands). Now: the status changes, the first report, a summary per interval / on recovery.
    assert.ok(warns.length <= 10, `${warns.length} warn lines:\n${warns.map((w) => w.msg).join('\n')}`);
    const summary = lines.find((l) => /^adapter dead letters: /.test(l.msg));
    assert.ok(summary, 'a summary line with the counts');
    if (history) {
      // Every frame sent is in the history too (the script writes it before publishing), none that was refused.
      const r = await admin(t, redis.url);
      const ids = (await r.xrange(adapter.historyKey, '-', '+')).map(([id]) => Number(id.split('-')[0]));
      t.diagnostic(`history holds ${ids.length} entries`);
      assert.equal(ids.length, delivered.size, 'one history entry per message sent');
    }
  });
});

/** An 8 KiB-ish payload that starts with its index. */
function payload(i: number, size: number): Buffer {
  const b = Buffer.alloc(size, 0x78);
  b.write(String(i).padStart(10, '0'));
  return b;
}

function indexOf(data: Buffer): number {
  return Number(data.subarray(0, 10).toString());
}

/** Kills a node's subscriber connection (CLIENT KILL by its id, found by its connection name): Redis drops it, and what is published meanwhile never reaches that node. */
async function killSubscriber(r: Redis, nodeId: string): Promise<void> {
  const list = String(await r.client('LIST'));
  const line = list.split('\n').find((l) => l.includes(` name=ws-supervisor:${nodeId}:sub `));
  const id = line && /\bid=(\d+)/.exec(line)?.[1];
  if (!id) throw new Error(`no subscriber connection of ${nodeId} in CLIENT LIST:\n${list}`);
  assert.equal(await r.client('KILL', 'ID', id), 1);
}

/** The pushes of `client` that start with `prefix`, as their text after it (e.g. broadcast `gap-7` → `7`). */
function pushesOf(client: Client, kind: 'broadcast' | 'publish', tag: string, topic = 'room'): string[] {
  const head = kind === 'broadcast' ? broadcastPush(tag) : topicPush(topic, tag);
  const prefix = head.slice(0, -2); // without the closing `"}`
  return client.pushes.filter((p) => p.startsWith(prefix)).map((p) => (JSON.parse(p) as { someOtherThing: string }).someOtherThing.slice(tag.length));
}

const range = (from: number, to: number): string[] => Array.from({ length: to - from }, (_, i) => String(from + i));

describe('Redis adapter history: a node that missed messages recovers their content (XADD + XRANGE)', WAITING, () => {
  const HISTORY = { HISTORY: 'true', LOG: '1' };

  test('output-buffer cut (client-output-buffer-limit pubsub, SIGSTOP): after it returns, its clients get all N in order, exactly once; nothing reported missed', { timeout: budget.scaled(90_000) }, async (t) => {
    const cluster = await startCluster(t, HISTORY);
    if (!cluster) return;
    const { b } = cluster;
    // 6 MB in all: far over the 256 KB limit, within the default history (32 MiB); 20 KB each, so
    // that what reaches B's client at once stays within its send queue (4 MiB), as live traffic would.
    const N = 300;
    const { a1, b1, fromB } = await cutBByOutputBuffer(t, cluster, N, 'x'.repeat(20_000));
    b.child.kill('SIGCONT');
    await b.waitLine(/^status degraded/, fromB, 10_000); // Redis did cut it
    const got = (): string[] => pushesOf(b1, 'broadcast', 'big-').map((x) => x.slice(0, x.indexOf('-')));
    await waitFor(() => got().length >= N, pace.scaled(20_000), `B's client has ${got().length} of ${N}`).catch((err: Error) => {
      throw new Error(`${err.message}\nB:\n${b.lines.slice(-60).join('\n').slice(0, 20_000)}`);
    });
    await a1.request({ command: 'broadcast', someOtherThing: 'post' });
    await waitFor(() => b1.pushes.includes(broadcastPush('post')), 10_000, 'post crosses');
    await delay(pace.scaled(HEARTBEAT_MS * 3)); // time for a (wrong) report or a duplicate
    assert.deepEqual(got(), range(0, N), 'all N, in order, exactly once');
    assert.equal(b1.pushes.at(-1), broadcastPush('post'), 'the recovered ones came before the newer one');
    assert.deepEqual(b.missed(), []);
    const metrics = await metricsOf(b.base);
    const recovered = metric(metrics, 'ws_supervisor_adapter_recovered_total');
    t.diagnostic(`B recovered ${recovered} of ${N} from A's history (the rest had reached it before the cut)`);
    assert.ok(recovered > 0 && recovered <= N, `recovered ${recovered}`);
  });

  test('subscriber killed (CLIENT KILL) while stopped; the sender keeps publishing after it returns: broadcasts and topic publishes all arrive, in order, exactly once, the recovered before the newer', { timeout: budget.scaled(90_000) }, async (t) => {
    const cluster = await startCluster(t, HISTORY);
    if (!cluster) return;
    const { redis, a, b } = cluster;
    const r = await admin(t, redis.url);
    const a1 = await connect(t, a);
    const b1 = await connect(t, b);
    assert.equal((await b1.request({ command: 'join', topic: 'room' })).success, true);
    await a1.request({ command: 'broadcast', someOtherThing: 'pre' });
    await waitFor(() => b1.pushes.includes(broadcastPush('pre')), 5000, 'pre crosses');

    b.child.kill('SIGSTOP');
    t.after(() => void b.child.kill('SIGCONT'));
    await killSubscriber(r, 'node-b');
    const N = 300;
    for (let i = 0; i < N; i++) {
      await a1.request(i % 3 === 0 ? { command: 'publish', topic: 'room', someOtherThing: `gap-${i}` } : { command: 'broadcast', someOtherThing: `gap-${i}` });
    }
    b.child.kill('SIGCONT');
    // A goes on publishing at once: these race with B's reconnect and must come after the recovered ones.
    const M = 50;
    for (let i = 0; i < M; i++) await a1.request({ command: 'broadcast', someOtherThing: `post-${i}` });
    await waitFor(() => b1.pushes.includes(broadcastPush(`post-${M - 1}`)), pace.scaled(20_000), 'the last post crosses');
    await delay(pace.scaled(HEARTBEAT_MS * 3));
    const order = b1.pushes.map((p) => (JSON.parse(p) as { someOtherThing: string }).someOtherThing).filter((x) => x !== 'pre');
    const expected = [...range(0, N).map((i) => `gap-${i}`), ...range(0, M).map((i) => `post-${i}`)];
    assert.deepEqual(order, expected, 'every message once, in the order A sent them');
    const topics = b1.pushes.filter((p) => p.startsWith('{"command":"publish"'));
    assert.equal(topics.length, N / 3, 'topic publishes recovered as topic publishes');
    assert.deepEqual(b.missed(), []);
    const metrics = await metricsOf(b.base);
    assert.ok(metric(metrics, 'ws_supervisor_adapter_recovered_total') >= N - 1, 'read back from the history, not received live');
  });

  test('a gap the history no longer holds (trimmed to 10 messages): the newest are recovered, the rest reported missed with cause `trimmed`, one for one', { timeout: budget.scaled(90_000) }, async (t) => {
    const cluster = await startCluster(t, { HISTORY: JSON.stringify({ maxMessages: 10 }) });
    if (!cluster) return;
    const { redis, a, b } = cluster;
    const r = await admin(t, redis.url);
    // MINID ~ frees whole stream nodes only: small nodes so the trim is close to the bound.
    await r.config('SET', 'stream-node-max-entries', '2');
    const { a1, b1 } = await stopBAfterPre(t, cluster);
    await killSubscriber(r, 'node-b');
    const N = 50;
    for (let i = 0; i < N; i++) await a1.request({ command: 'broadcast', someOtherThing: `gap-${i}` });
    const key = `ws-supervisor:history:${(await historySession(r))}`;
    // A reply does not wait for its broadcast's stream write: the stream's length counts once the last one is in it
    // (measured earlier, a later write could still leave one more entry beside it: MINID ~ trims whole nodes).
    const lastIn = Date.now() + pace.scaled(5_000);
    while (!JSON.stringify(await r.xrevrange(key, '+', '-', 'COUNT', 1)).includes(`gap-${N - 1}`)) {
      assert.ok(Date.now() < lastIn, `gap-${N - 1} never reached A's history stream`);
      await delay(20);
    }
    const held = await r.xlen(key);
    const fromB = b.lines.length;
    b.child.kill('SIGCONT');
    await b.waitLine(/^missed /, fromB, 15_000);
    const got = (): string[] => pushesOf(b1, 'broadcast', 'gap-');
    await waitFor(() => got().length + sum(b.missed()) >= N, pace.scaled(10_000), `received ${got().length} + missed ${sum(b.missed())} = ${N}`);
    await delay(pace.scaled(HEARTBEAT_MS * 3));
    const k = got().length;
    t.diagnostic(`A's stream held ${held} entries (bound 10, MINID ~); B recovered ${k}, reported ${sum(b.missed())} missed`);
    assert.ok(k >= 10 && k <= held, `recovered ${k}: at least the bound, at most what the stream held`);
    assert.deepEqual(got(), range(N - k, N), 'the newest, in order, once');
    assert.deepEqual(b.missed().map((m) => [m.from, m.count, m.cause]), [['node-a', N - k, 'trimmed']]);
    assert.match(b.missed()[0]!.error, new RegExp(`^missed ${N - k} messages from node node-a: .*; 2–${N - k + 1} no longer in its history \\(trimmed or expired\\)$`));
    const metrics = await metricsOf(b.base);
    assert.equal(metric(metrics, 'ws_supervisor_adapter_missed_total', { cause: 'trimmed' }), N - k);
    assert.equal(metric(metrics, 'ws_supervisor_adapter_recovered_total'), k);
  });

  test('Redis restarted empty while a node was stopped: the epoch change is reported (event, warning), what was lost is reported missed with cause `restarted`, what was published after is recovered', { timeout: budget.scaled(90_000) }, async (t) => {
    const cluster = await startCluster(t, HISTORY);
    if (!cluster) return;
    const { redis, a, b } = cluster;
    const { a1, b1 } = await stopBAfterPre(t, cluster);
    // B's subscription cut first: otherwise what A publishes next may already sit in B's socket buffer, and survive Redis.
    const r = await admin(t, redis.url);
    await killSubscriber(r, 'node-b');
    r.disconnect();
    const LOST = 5;
    for (let i = 0; i < LOST; i++) await a1.request({ command: 'broadcast', someOtherThing: `lost-${i}` }); // only in A's history now: gone with Redis
    const fromA = a.lines.length;
    await redis.kill();
    await redis.restart();
    await a.waitLine(/^status up$/, fromA, 15_000);
    await a.waitLine(/^epoch \S+ \S+$/, fromA, 5000); // A saw it too
    const AFTER = 3;
    for (let i = 0; i < AFTER; i++) assert.equal((await a1.request({ command: 'broadcast', someOtherThing: `after-${i}` })).success, true);
    const fromB = b.lines.length;
    b.child.kill('SIGCONT');
    await b.waitLine(/^epoch \S+ \S+$/, fromB, 15_000);
    await b.waitLine(/^missed /, fromB, 15_000);
    await waitFor(() => pushesOf(b1, 'broadcast', 'after-').length >= AFTER, pace.scaled(10_000), 'the later ones recovered');
    await delay(pace.scaled(HEARTBEAT_MS * 3));
    assert.deepEqual(pushesOf(b1, 'broadcast', 'after-'), range(0, AFTER));
    assert.deepEqual(pushesOf(b1, 'broadcast', 'lost-'), []);
    assert.deepEqual(b.missed().map((m) => [m.from, m.count, m.cause]), [['node-a', LOST, 'restarted']]);
    assert.match(b.missed()[0]!.error, /redis lost its data \(epoch changed\)$/);
    const [, previous, current] = b.lines.find((l) => l.startsWith('epoch '))!.split(' ');
    assert.notEqual(previous, current);
    assert.equal(metric(await metricsOf(b.base), 'ws_supervisor_adapter_missed_total', { cause: 'restarted' }), LOST);
    assert.ok(b.lines.some((l) => l.startsWith('log warn redis adapter: redis lost its data (epoch changed')), 'a warning says why');
    assert.ok(b.lines.some((l) => l.startsWith('log warn adapter missed: ') && l.includes('"cause":"restarted"')), 'the missed report is logged with its cause');
  });
});

describe('Redis adapter history, in process: held frames are bounded; bad entries are reported', TOGETHER, () => {
  test('frames that arrive while a gap is read back are held within maxInFlightBytes; past it they are read back too: still every message, in order, once', { timeout: budget.scaled(60_000) }, async (t) => {
    const redis = await startRedis(t);
    if (!redis) return;
    const r = await admin(t, redis.url);
    const letters: AdapterDeadLetter[] = [];
    const make = (nodeId: string, cap: number, deliver: (data: Buffer) => void) => {
      const adapter = createRedisAdapter({ url: redis.url, nodeId, history: true, maxInFlightBytes: cap, heartbeatInterval: HEARTBEAT_MS, presenceTtl: PRESENCE_TTL_MS, backoff: { initialDelay: 20, maxDelay: 200 } });
      adapter.attach({ deliver: (m) => deliver(m.data), deadLetter: (l) => void letters.push(l), statusChanged: () => undefined, connections: () => 0, logger: null });
      t.after(() => adapter.close());
      return adapter;
    };
    const CAP = 16 * 1024;
    const SIZE = 1024;
    const got: number[] = [];
    const a = make('a', 64 * 1_048_576, () => undefined);
    let maxHeld = 0;
    const b = make('b', CAP, (data) => {
      got.push(indexOf(data));
      maxHeld = Math.max(maxHeld, b.heldBytesNow); // sampled at every delivery: during a recovery, what waits behind it
    });
    await waitUntil(async () => a.status === 'up' && b.status === 'up' && (await b.nodes()).length === 2, 10_000, 'both up');
    const publish = (i: number): void => a.publish({ kind: 'broadcast', topic: null, data: payload(i, SIZE), binary: false });
    for (let i = 0; i < 10; i++) publish(i);
    await waitFor(() => got.length === 10, 5000, 'the first 10 cross');

    await killSubscriber(r, 'b');
    // A burst while B is deaf (a gap of ~2,000 to read back, 64 per read), then a steady stream that
    // arrives live while B reads: those frames wait behind the gap, within the cap.
    const N = 3000;
    const GAP = 2000;
    for (let i = 10; i < GAP; i++) publish(i);
    for (let i = GAP; i < N; i += 20) {
      for (let k = i; k < Math.min(N, i + 20); k++) publish(k);
      await delay(5);
    }
    await waitFor(() => got.length >= N, pace.scaled(20_000), `B got ${got.length} of ${N}`);
    await delay(pace.scaled(HEARTBEAT_MS * 3));
    t.diagnostic(`B recovered ${b.recovered} of ${N} from A's history; held at most ${maxHeld} B (cap ${CAP})`);
    assert.deepEqual(got, Array.from({ length: N }, (_, i) => i), 'every message, in order, once');
    assert.deepEqual(letters.filter((l) => l.reason === 'missed'), []);
    assert.ok(b.recovered > 0, 'read back from the history'); // how many depends on when B resubscribed during the burst
    assert.ok(maxHeld > 0, 'frames were held behind the gap');
    assert.ok(maxHeld <= CAP, `held ${maxHeld} B, cap ${CAP}`);
    assert.equal(b.heldBytesNow, 0, 'nothing left held');
  });

  test('history entries that are not the sender\'s frames are reported `unreadable`, one each, and the read moves past them; entries gone are `trimmed`', { timeout: budget.scaled(60_000) }, async (t) => {
    const redis = await startRedis(t);
    if (!redis) return;
    const r = await admin(t, redis.url);
    const letters: AdapterDeadLetter[] = [];
    const got: number[] = [];
    const make = (nodeId: string, deliver: (data: Buffer) => void, backoff = { initialDelay: 20, maxDelay: 200 }) => {
      // Heartbeats far apart: A's presence entry keeps its first number, so the gap is found from A's next frame, after the stream was replaced.
      const adapter = createRedisAdapter({ url: redis.url, nodeId, history: true, heartbeatInterval: 30_000, presenceTtl: 60_000, backoff });
      adapter.attach({ deliver: (m) => deliver(m.data), deadLetter: (l) => void letters.push(l), statusChanged: () => undefined, connections: () => 0, logger: null });
      t.after(() => adapter.close());
      return adapter;
    };
    const a = make('a', () => undefined);
    // B resubscribes 0.5-1 s (scaled by the pace) after its subscriber is killed, not 10-20 ms: it must stay deaf while A
    // publishes and the stream is replaced. With 20 ms a loaded run had B back before A's publishes reached Redis: B got
    // them live, found no gap, and reported nothing (missed [] against the four reports).
    const b = make('b', (data) => void got.push(indexOf(data)), { initialDelay: pace.scaled(1_000), maxDelay: pace.scaled(1_000) });
    await waitUntil(async () => a.status === 'up' && b.status === 'up' && (await b.nodes()).length === 2, 10_000, 'both up');
    const publish = (i: number): void => a.publish({ kind: 'broadcast', topic: null, data: payload(i, 64), binary: false });
    publish(0);
    await waitFor(() => got.length === 1, 5000, 'the first crosses');
    // B is deaf while A sends seqs 2..6; then A's stream is replaced by three entries that are not A's frames (2, 3, 4): 5 and 6 are gone.
    b.once('epochChanged', () => assert.fail('the epoch did not change'));
    await killSubscriber(r, 'b');
    for (let i = 1; i <= 5; i++) publish(i);
    await waitUntil(async () => (await r.xlen(a.historyKey)) === 6, 5000, 'A wrote them');
    await r.del(a.historyKey);
    for (const seq of [2, 3, 4]) await r.xadd(a.historyKey, `${seq}-0`, 'f', seq === 3 ? 'garbage' : 'x\ny');
    const resubscribed = async (): Promise<boolean> => / name=ws-supervisor:b:sub .*\bsub=1\b/.test(String(await r.client('LIST')));
    assert.equal(await resubscribed(), false, 'B is still deaf: A published and the stream was replaced before it came back');
    assert.deepEqual(got, [0], 'B got nothing while deaf');
    await waitUntil(resubscribed, 5000, 'B resubscribed');
    publish(6); // seq 7: reveals the gap, and is delivered after it
    await waitFor(() => got.includes(6), pace.scaled(10_000), 'the next one crosses');
    await delay(pace.scaled(300)); // time for a (wrong) extra report
    const missed = letters.filter((l) => l.reason === 'missed').map((l) => [l.cause, l.count]);
    assert.deepEqual(missed, [['unreadable', 1], ['unreadable', 1], ['unreadable', 1], ['trimmed', 2]]);
    assert.deepEqual(got, [0, 6]);
  });
});

/** The session of the one node that wrote a history (its stream's key suffix). */
async function historySession(r: Redis): Promise<string> {
  const keys = await r.keys('ws-supervisor:history:*');
  assert.equal(keys.length, 1, `one history stream: ${keys.join(', ')}`);
  return keys[0]!.slice('ws-supervisor:history:'.length);
}
