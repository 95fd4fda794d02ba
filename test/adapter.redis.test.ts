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
import WebSocket from 'ws';
import type { NodeInfo } from '../src/index.ts';
import { REPO_ROOT, httpGet, metric, metricsOf } from './helpers/cli.ts';
import { startRedis } from './helpers/redis.ts';
import { delay, waitFor } from './helpers/server.ts';

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
  nodes(): Promise<NodeInfo[]>;
  kill9(): Promise<void>;
}

async function startNode(t: TestContext, redisUrl: string, id: string): Promise<ClusterNode> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/cluster-node.ts'], {
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
    },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
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
  const listening = lines[await waitLine(/^listening \d+ /, 0, 20_000)]!;
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

async function startCluster(t: TestContext) {
  const redis = await startRedis(t);
  if (!redis) return null;
  const [a, b] = await Promise.all([startNode(t, redis.url, 'node-a'), startNode(t, redis.url, 'node-b')]);
  await Promise.all([a.waitLine(/^status up$/), b.waitLine(/^status up$/)]);
  return { redis, a, b };
}

describe('Redis adapter: two node processes, one real redis-server', () => {
  test('broadcast crosses; a topic publish reaches members on both nodes exactly once and no one else; membership ends with the connection', { timeout: 60_000 }, async (t) => {
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
    const deadline = Date.now() + 5000;
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

    // Presence counts: each node reports its own live connections.
    await delay(HEARTBEAT_MS * 2);
    const nodes = await a.nodes();
    assert.deepEqual(
      nodes.map((n) => [n.id, n.connections, n.self]).sort(),
      [['node-a', 2, true], ['node-b', 2, false]],
    );
    assert.deepEqual([...a.deadLetters(), ...b.deadLetters()], [], 'nothing was reported while Redis was up');
  });

  test('Redis killed and restarted: local delivery continues; every message that could not cross is reported (event + metric); cross-node delivery resumes', { timeout: 60_000 }, async (t) => {
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
    // Both nodes re-registered in the restarted (empty) Redis.
    assert.deepEqual((await a.nodes()).map((n) => n.id).sort(), ['node-a', 'node-b']);
  });

  test('presence: two nodes listed with their counts; a kill -9\'d node disappears within the presence TTL; a closed one at once', { timeout: 60_000 }, async (t) => {
    const cluster = await startCluster(t);
    if (!cluster) return;
    const { redis, a, b } = cluster;
    await connect(t, a);
    await connect(t, b);
    await connect(t, b);
    await delay(HEARTBEAT_MS * 2);
    const nodes = await a.nodes();
    assert.deepEqual(nodes.map((n) => [n.id, n.connections]).sort(), [['node-a', 1], ['node-b', 2]]);
    for (const n of nodes) {
      assert.equal(n.self, n.id === 'node-a');
      assert.ok(n.pid > 0 && n.hostname.length > 0 && n.startedAt > 0 && n.updatedAt >= n.startedAt);
    }

    // A graceful node says goodbye: gone at once.
    const c = await startNode(t, redis.url, 'node-c');
    await c.waitLine(/^status up$/);
    assert.equal((await a.nodes()).length, 3);
    c.child.stdin.write('close\n');
    await new Promise<void>((resolve) => c.child.once('exit', () => resolve()));
    assert.deepEqual((await a.nodes()).map((n) => n.id).sort(), ['node-a', 'node-b'], 'goodbye: removed without waiting for the TTL');

    // kill -9: no goodbye; Redis expires its entry within the TTL of its last heartbeat.
    const killedAt = Date.now();
    await b.kill9();
    // R12 meanwhile: a broadcast that the dead node (still listed) cannot receive is reported as partial.
    const a1 = await connect(t, a);
    await a1.request({ command: 'broadcast', someOtherThing: 'to-a-dead-node' });
    let gone = 0;
    while (Date.now() - killedAt < PRESENCE_TTL_MS + 3000) {
      const ids = (await a.nodes()).map((n) => n.id);
      if (!ids.includes('node-b')) {
        gone = Date.now() - killedAt;
        break;
      }
      await delay(50);
    }
    t.diagnostic(`node-b gone from presence ${gone} ms after kill -9 (TTL ${PRESENCE_TTL_MS} ms, heartbeat ${HEARTBEAT_MS} ms)`);
    assert.ok(gone > 0, 'node-b disappeared');
    // The bound is the TTL; the margin covers the polling round trip on a loaded machine.
    assert.ok(gone <= PRESENCE_TTL_MS + 750, `within the TTL (${gone} ms)`);
    assert.deepEqual((await a.nodes()).map((n) => n.id), ['node-a']);
    await a.waitLine(/^deadletter .*"reason":"partial"/, 0, 5000);
    const partial = a.deadLetters().filter((l) => l.reason === 'partial');
    assert.deepEqual(partial.map((l) => l.data), [broadcastPush('to-a-dead-node')]);
    assert.match(partial[0]!.error, /^reached 1 of 2 nodes$/);
    assert.equal(metric(await metricsOf(a.base), 'ws_supervisor_adapter_publish_failures_total', { reason: 'partial' }), 1);
  });
});
