/**
 * Sessions across processes, on real processes and a real redis-server
 * (docs/sessions.md, "Across nodes"; docs/scaling.md, "The session store on
 * Redis"): `ws-supervisor server --sessions --redis URL` keeps its sessions in
 * Redis, so a client resumes on whichever process it reaches next.
 *
 * - `--workers 2`: resumable clients with a steady stream of requests and
 *   pushes, one worker SIGKILLed: every client of that worker reconnects,
 *   resumes, and in the end has every push exactly once and in order (each
 *   push is made by one of its own requests, so a request run twice or not at
 *   all shows too) and every reply exactly once. The time until all resumed
 *   and the servers' CPU meanwhile are printed. 200 clients here; the 2,000 of
 *   docs/scaling.md with WS_SESSIONS_STORM=2000.
 * - two servers on different ports, one Redis: the clients switch from one to
 *   the other (a proxy moves them, as a load balancer would) with nothing lost.
 * - Redis restarted empty while the clients are detached: each gets
 *   `resumed: false`, `restarted`; what the server could still name (the
 *   pushes it could not keep) is counted as dead letters.
 *
 * Without redis-server: SKIPPED (under CI=true: a failure).
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, test, type TestContext } from 'node:test';
import { createClient, type Client } from '../../src/client/node.ts';
import type { ResumeEvent } from '../../src/client/client.ts';
import { budgets, metric, metricsOf, startCliServer, type CliServer } from '../helpers/cli.ts';
import { startRedis } from '../helpers/redis.ts';
import { childrenOf, procCpuUs } from '../../bench/lib/proc.ts';

const B = await budgets();
const STORM = Number(process.env.WS_SESSIONS_STORM ?? '') || 200;
/** One request and one own-topic publish per client per tick: ~2 × STORM / TICK_MS × 1000 messages/s each way. */
const TICK_MS = STORM > 500 ? 2_000 : 500;
/** Clients started at once (bounded: a 2-core laptop shared with other work). */
const CONNECT_BATCH = 50;

const HIGH_LIMITS = ['--max-connections-per-address', String(STORM * 2 + 100), '--max-pending-per-address', String(STORM * 2 + 100)];

/** One resumable client: its own topic, a request and a publish to that topic per tick, and what came back. */
class Peer {
  readonly client: Client;
  readonly topic: string;
  /** Pushes of its topic, in arrival order (`p<k>`). */
  readonly pushes: string[] = [];
  readonly replies = new Map<number, number>();
  readonly failures: string[] = [];
  readonly resumes: ResumeEvent[] = [];
  /** When the last resume came (performance.now()). */
  resumedAt = 0;
  /** Connections lost (each 'close': a connection's end, or a failed attempt), and whether one was since its last resume. */
  drops = 0;
  down = false;
  sent = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(url: string, i: number, timing?: { pingInterval: number; pongTimeout: number }) {
    this.topic = `t${i}`;
    this.client = createClient(url, {
      session: true,
      ...(timing ? { timing } : {}),
      // Reconnect fast (R22) and never give up; requests wait as long as a resume can take under load.
      backoff: { initialDelay: 50, maxDelay: 1_000 },
      requestTimeout: B.scaled(120_000),
      offlineBuffer: 10_000,
    });
    this.client.on('push', (m) => {
      if ((m as { topic?: unknown }).topic === this.topic) this.pushes.push(String((m as { someOtherThing?: unknown }).someOtherThing));
    });
    this.client.on('resume', (r) => {
      this.resumes.push(r);
      this.resumedAt = performance.now();
      this.down = false;
    });
    this.client.on('close', () => {
      this.drops++;
      this.down = true;
    });
  }

  async start(): Promise<void> {
    await this.client.request('join', this.topic);
  }

  tick(): void {
    const k = ++this.sent;
    // A publish to its own topic: the push is made by this request, on whichever process runs it.
    this.client.send(JSON.stringify({ requestID: 1_000_000 + k, command: 'publish', topic: this.topic, someOtherThing: `p${k}` }));
    this.client.request(`r${k}`).then(
      (reply) => {
        assert.equal(reply.someOtherThing, `Server processed command: r${k}`);
        this.replies.set(k, (this.replies.get(k) ?? 0) + 1);
      },
      (err: unknown) => this.failures.push(`r${k}: ${String(err)}`),
    );
  }

  run(tickMs = TICK_MS): void {
    // Spread over the tick so the load is steady, not in bursts.
    setTimeout(() => {
      this.tick();
      this.timer = setInterval(() => this.tick(), tickMs);
    }, Math.random() * tickMs).unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Everything it sent came back: each push and reply once, pushes in order. */
  complete(): boolean {
    // A rejected request (its session could not be resumed) makes no push: check() reports it.
    return this.pushes.length + this.failures.length >= this.sent && this.replies.size + this.failures.length >= this.sent;
  }

  check(): string[] {
    const problems: string[] = [];
    const expected = Array.from({ length: this.sent }, (_, i) => `p${i + 1}`);
    if (this.pushes.join(',') !== expected.join(',')) {
      const seen = new Set<string>();
      const dup = this.pushes.filter((p) => (seen.has(p) ? true : (seen.add(p), false)));
      const missing = expected.filter((p) => !seen.has(p));
      problems.push(`${this.topic}: pushes ${this.pushes.length}/${this.sent}, duplicated [${dup.slice(0, 5)}], missing [${missing.slice(0, 5)}]`);
    }
    for (let k = 1; k <= this.sent; k++) if (this.replies.get(k) !== 1) problems.push(`${this.topic}: reply r${k} ×${this.replies.get(k) ?? 0}`);
    problems.push(...this.failures.map((f) => `${this.topic}: ${f}`));
    for (const r of this.resumes) if (!r.resumed) problems.push(`${this.topic}: not resumed: ${r.reason} ${r.detail}`);
    return problems;
  }
}

async function connectAll(url: (i: number) => string, n: number, timing?: { pingInterval: number; pongTimeout: number }): Promise<Peer[]> {
  const peers: Peer[] = [];
  for (let i = 0; i < n; i += CONNECT_BATCH) {
    const batch = Array.from({ length: Math.min(CONNECT_BATCH, n - i) }, (_, j) => new Peer(url(i + j), i + j, timing));
    await Promise.all(batch.map((p) => p.start()));
    peers.push(...batch);
  }
  return peers;
}

/** Connected and attached (open, or checking liveness). */
function isUp(c: Client): boolean {
  return c.state === 'open' || c.state === 'pinging';
}

async function until(what: string, check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function finish(peers: Peer[], timeoutMs: number, quietMs = Math.min(B.scaled(15_000), 60_000), diagnose?: () => Promise<string>): Promise<void> {
  for (const p of peers) p.stop();
  // Until everything arrived, or nothing more arrives for a while (then check() names what is missing).
  let seen = -1;
  let progressAt = Date.now();
  await until(
    'every push and reply',
    () => {
      const n = peers.reduce((sum, p) => sum + p.pushes.length + p.replies.size, 0);
      if (n !== seen) (seen = n), (progressAt = Date.now());
      return peers.every((p) => p.complete()) || Date.now() - progressAt > quietMs;
    },
    timeoutMs,
  ).catch(() => undefined);
  const problems = peers.flatMap((p) => p.check());
  if (problems.length > 0) {
    // What the first incomplete clients were doing, for the report.
    for (const p of peers.filter((x) => !x.complete()).slice(0, 3)) {
      console.log(`# incomplete ${p.topic}: state ${p.client.state}, sent ${p.sent}, pushes ${p.pushes.length}, replies ${p.replies.size}, resumes ${JSON.stringify(p.resumes)}`);
    }
    if (diagnose) console.log((await diagnose()).split('\n').filter((l) => /session|adapter_up|failed/.test(l) && !l.startsWith('#')).join('\n'));
  }
  await Promise.all(peers.map((p) => p.client.close()));
  assert.deepEqual(problems.slice(0, 20), [], `${problems.length} problem(s)`);
}



/** A TCP proxy the clients connect through: `to(port)` moves it; `cut()` destroys every connection (no close frame: 1006). */
async function proxy(t: TestContext, port: number): Promise<{ url: string; to(port: number): void; cut(): void; refuse(on: boolean): void }> {
  let target = port;
  let refusing = false;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((inbound) => {
    if (refusing) return inbound.destroy();
    const outbound = net.connect(target, '127.0.0.1');
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        sockets.delete(s);
        inbound.destroy();
        outbound.destroy();
      });
    }
    inbound.pipe(outbound);
    outbound.pipe(inbound);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  const { port: own } = server.address() as net.AddressInfo;
  return {
    url: `ws://127.0.0.1:${own}/server`,
    to: (p) => (target = p),
    cut: () => {
      for (const s of sockets) s.destroy();
    },
    refuse: (on) => (refusing = on),
  };
}

async function startServer(t: TestContext, redisUrl: string, extra: string[] = []): Promise<CliServer> {
  return startCliServer(['--sessions', '--redis', redisUrl, '--log-level', 'warn', ...HIGH_LIMITS, ...extra], t);
}

test(`--workers 2 --sessions --redis: a worker SIGKILLed under load, each of its ${STORM} clients resumes on a worker with nothing lost or duplicated`, { timeout: B.scaled(600_000) }, async (t) => {
  const redis = await startRedis(t);
  if (!redis) return;
  const server = await startServer(t, redis.url, ['--workers', '2']);
  assert.match(server.stdout(), /sessions in redis/);
  const workers = childrenOf(server.child.pid!);
  assert.equal(workers.length, 2, `two workers under the primary (${workers}); its output:\n${server.stdout().slice(-3000)}`);
  t.after(() => {
    for (const pid of childrenOf(server.child.pid!)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  });
  const peers = await connectAll(() => server.wsUrl, STORM);
  for (const p of peers) p.run();
  // Steady traffic for a few ticks before the kill.
  await new Promise((r) => setTimeout(r, 3 * TICK_MS));
  const victim = workers[0]!;
  const cpuBefore = new Map(workers.map((pid) => [pid, procCpuUs(pid) / 1e6]));
  const killedAt = performance.now();
  process.kill(victim, 'SIGKILL');
  // Its clients see 1006 and resume, on the survivor or on the restarted worker.
  await until('the clients of the killed worker to start resuming', () => peers.some((p) => p.resumes.length > 0), B.scaled(30_000));
  const affected = (): Peer[] => peers.filter((p) => p.resumes.length > 0);
  // All resumed: every client that lost its connection (a 'close', the kill's or a failed attempt's) has resumed since,
  // and is connected again. Until 2026-12-06 this waited for 2 s without a new resume instead: 2 s more of the storm's
  // traffic after the last resume (the kill's SIGKILL closes all of the worker's sockets at once; a close read later
  // than that would still be waited for by finish(), whose check() needs every resume to have resumed).
  await until(
    'every client that lost its connection to resume',
    () => {
      const dropped = peers.filter((p) => p.drops > 0);
      return dropped.length > 0 && dropped.every((p) => !p.down && isUp(p.client));
    },
    B.scaled(300_000),
  );
  const allResumedMs = Math.round(Math.max(...affected().map((p) => p.resumedAt)) - killedAt);
  const pids = childrenOf(server.child.pid!);
  const cpu = pids.reduce((sum, pid) => sum + procCpuUs(pid) / 1e6 - (cpuBefore.get(pid) ?? 0), 0);
  const n = affected().length;
  console.log(
    `# storm: ${n} of ${STORM} clients resumed within ${allResumedMs} ms of the SIGKILL; worker CPU meanwhile ${cpu.toFixed(2)} s ` +
      `over ${((performance.now() - killedAt) / 1000).toFixed(1)} s wall (slowdown ${B.slowdown.toFixed(1)})`,
  );
  // Roughly half were on the killed worker (round robin); every one of them resumed.
  assert.ok(n > 0 && n < STORM, `some, not all, clients were on the killed worker (${n})`);
  for (const p of affected()) assert.ok(p.resumes.every((r) => r.resumed), `${p.topic} resumed: ${JSON.stringify(p.resumes)}`);
  // A few more ticks after, then everything must have arrived exactly once.
  await new Promise((r) => setTimeout(r, 2 * TICK_MS));
  await finish(peers, B.scaled(120_000), Math.min(B.scaled(15_000), 60_000), async () => {
    const failed = server.stdout().split('\n').filter((l) => /session request failed|session store .* failed/.test(l));
    return `${failed.slice(0, 5).join('\n')}\n${await metricsOf(server.base)}`;
  });
});


// These four mostly wait (ticks of light traffic, a proxy cut, a Redis restart, the store's commandTimeout of
// 10 s, which the CLI does not expose; a worker frozen for 20 s): they run at once, each with its own redis-server,
// servers and proxy. The worker storm above, which loads both cores, runs alone before them. The frozen worker ran
// alone after the storm until 2026-12-06: ~27 s of waiting (its 2 s, 20 s and 3 s pauses) in which this file held a
// slot of the suite with little to run.
describe('one server per test, light traffic', { concurrency: true }, () => {
  // Measured before the fix: 3 failures in 7 runs, each the same shape. On the client: the publish of a request sent
  // just before SIGSTOP arrived some 0.6 s after SIGCONT, after ~200 later ones, and its reply never (the request pending
  // until its requestTimeout). Traced: the worker the client resumed on counted the re-sent later requests while it
  // waited on the frozen worker's unfinished count, which pushed that count out of maxRememberedReplies: read as long
  // answered, it ran nowhere but on the frozen worker once continued, its reply refused there (moved). Fixed with its two
  // neighbours (docs/sessions.md, "Across nodes": a process frozen past its lease); the unit tests are in
  // test/server/sessions.nodes.test.ts ("a node frozen past the lease") and test/adapter/redis-session-store.test.ts.
  // Then, in the first clean-clone run after that fix (2026-12-06): one client's pushes p8 and p9 twice. A publish the
  // frozen worker had already handed to its Redis connection before the freeze reached Redis at SIGCONT, after the
  // other worker had run the same request again (the store's age check only holds back fan-outs still in its own
  // queue). Fixed by the fan-out fence: the store's script refuses a fan-out made by a request whose count the worker
  // no longer holds (a dead letter, reason fanout, on the frozen worker); its tests are "the fan-out fence"
  // (test/adapter/redis-session-store.test.ts) and "a node frozen past the lease with a publish already handed to its
  // Redis connection" (test/server/sessions.nodes.test.ts), which hold the publish on the wire and fail without it.
  // After the fence (2026-12-06): alone, 8 of 8 runs passed (load average 4.5-8.7), the fence refusing nothing. Beside
  // test/server/sessions* (load average 6-12), 18 runs: the fence refused 12 to 43 fan-outs in 6 of them (5 of those
  // passed: each refusal a push that would have come twice), and 4 failed in shapes it does not touch. In 2, 6 and 7
  // clients got some 15 pushes each (p17-p31, p6-p19: the requests sent to the frozen worker before the client saw the
  // freeze, re-sent to and run on the other) a second time about 20 s late, nothing refused in those runs (cause not
  // traced: an unpersisted session running them at SIGCONT is one candidate, no longer made by the age refusal; the
  // 6 runs since that change passed, but the age refusal never fired in them, so they say nothing of it). In 1, one
  // client's two ticks (p12, p13, r12, r13) never answered though its second resume re-sent nothing; in 1, one client's
  // pushes all once but one out of order. Reproduced (2026-12-06) under a busy loop per core: 3 of 4 runs failed (2 to 8
  // clients each: pushes missing or out of order, replies missing; resumes that re-sent nothing). Traced with temporary logging of every
  // resume, verdict and pending wait in the workers: a client's connection to the other worker went while that worker
  // waited on the frozen one's counts; the wait gave up on them (the client re-sends them on its resume) but the worker
  // ran the requests it had counted behind them, its lastCseqRun passed the ones left, and the client's next resume
  // there was told to re-send nothing: never answered (r8-r10 and their pushes), or run at SIGCONT by the frozen worker,
  // out of order (p9-p11 after p83). And the push of a request the frozen worker had run alone just before the freeze
  // was refused by its age in the queue, its reply delivered (p7, p8 missing). The late-duplicate shape was not seen
  // in any run of this work. Fixed: a connection that leaves a
  // request unrun leaves its later ones too, and the next resume re-sends everything ("a connection that goes while it
  // waits on another node's count", test/server/sessions.nodes.test.ts); the age refusal holds back only unfenced
  // fan-outs, the fence decides the others ("a fan-out made by a request's handler and held that long"). After these
  // two: 24 of 25 runs passed (alone, under a busy loop per core, beside test/server/sessions*; load average 8-21), the
  // fence refusing up to 53 fan-outs a run. The failure: one client's p4 after p5 and p6 (not traced in that run); a
  // mechanism that gives that order, reproduced with a proxy holding the frozen worker's Redis connection: it had
  // acknowledged a request whose reply and publish were still in its store's queue, so the client did not re-send it.
  // Fixed by acknowledging a request only once the store has its outcome ("a request is acknowledged only once the
  // store has its outcome"). After that, 5 of 6 runs passed (3 alone, 3 under a busy
  // loop; load average 10-15). The failure: one client's pushes p10-p17 after p68, each once; the other worker's pushes
  // of requests 20-34 were refused by the fence (the continued worker held their counts). Inferred (not logged): that
  // worker had counted them while it waited on the frozen one's counts, and the continued worker took them over by
  // their age (a lease since the count) although it was alive and ran them when its wait ended. Made with three nodes
  // in test/server/sessions.nodes.test.ts ("a node that counted a client's later requests while it waited on an
  // earlier one ..."): pushes p1, p4, p2, p3. Fixed (docs/sessions.md, "Across nodes"): a live node's counts age from
  // its last wait on the session, a count runs only while fresh, a wait answered moved leaves the later requests, and
  // every request left unrun is released. After that, `todo` removed: 15 of 15 runs of this file passed, 9 alone (load
  // average 2-19 from other work on the machine) and 6 under a busy loop per core (load average 5-19). A failure prints
  // the failing clients (where the order breaks, their resumes) and what the workers logged of their sessions.
  test(
    '--workers 2 --sessions --redis: a worker frozen (SIGSTOP) past the lease while its clients resume on the other, then continued (SIGCONT): every push and reply once, in order',
    { timeout: B.scaled(300_000) },
    async (t) => {
      const redis = await startRedis(t);
      if (!redis) return;
      const server = await startServer(t, redis.url, ['--workers', '2']);
      const workers = childrenOf(server.child.pid!);
      assert.equal(workers.length, 2, `two workers under the primary (${workers})`);
      t.after(() => {
        for (const pid of childrenOf(server.child.pid!)) {
          try {
            process.kill(pid, 'SIGCONT');
            process.kill(pid, 'SIGKILL');
          } catch {
            // gone
          }
        }
      });
      // The clients' heartbeat finds the frozen worker in 1 to 2 s (R4); the store's lease is 15 s (its default).
      const peers = await connectAll(() => server.wsUrl, 40, { pingInterval: 1_000, pongTimeout: 1_000 });
      for (const p of peers) p.run(100);
      await new Promise((r) => setTimeout(r, 2_000));
      const victim = workers[0]!;
      process.kill(victim, 'SIGSTOP');
      await new Promise((r) => setTimeout(r, 20_000));
      const resumed = peers.filter((p) => p.resumes.length > 0).length;
      process.kill(victim, 'SIGCONT');
      assert.ok(resumed > 0 && resumed < peers.length, `the frozen worker's clients, and only they, resumed (${resumed})`);
      await new Promise((r) => setTimeout(r, 3_000));
      // What the continued worker held back (each a warning of its own): how often each rule had something to do.
      const lines = server.stdout().split('\n');
      const count = (text: string): number => lines.filter((l) => l.includes(text)).length;
      console.log(
        `# frozen worker: ${resumed} of ${peers.length} clients resumed on the other; after SIGCONT, ${count('whose count this node no longer holds')} fan-out(s) refused by the fence, ` +
          `${count('not sent: queued')} by their age in the queue, ${count('answered too late to run here')} count(s) answered too late not run, ` +
          `${count('failed (timeout)')} kind(s) of store timeout logged`,
      );
      // On a failure: what the workers logged about the failing clients' sessions (a late verdict, a failed request
      // name the session).
      await finish(peers, B.scaled(120_000), undefined, async () => {
        const ids = peers.filter((p) => p.check().length > 0).slice(0, 3).map((p) => `${p.topic} ${p.client.sessionId}`);
        const about = lines.concat(server.stdout().split('\n').slice(lines.length)).filter((l) => ids.some((x) => l.includes(x.split(' ')[1]!)));
        return `sessions of the failing clients: ${ids.join(', ')}\n${about.slice(0, 40).join('\n')}`;
      });
    },
  );

  test('two servers sharing a Redis: clients switched from one to the other resume with nothing lost', { timeout: B.scaled(180_000) }, async (t) => {
    const redis = await startRedis(t);
    if (!redis) return;
    const [one, two] = await Promise.all([startServer(t, redis.url), startServer(t, redis.url)]);
    assert.notEqual(one.port, two.port);
    const lb = await proxy(t, one.port);
    const peers = await connectAll(() => lb.url, 50);
    for (const p of peers) p.run();
    await new Promise((r) => setTimeout(r, 3 * TICK_MS));
    // The load balancer sends them to the other server now, and cuts them (no close frame).
    lb.to(two.port);
    lb.cut();
    await until('every client to resume on the second server', () => peers.every((p) => p.resumes.length === 1 && isUp(p.client)), B.scaled(60_000));
    for (const p of peers) assert.equal(p.resumes[0]!.resumed, true, `${p.topic}: ${JSON.stringify(p.resumes[0])}`);
    await new Promise((r) => setTimeout(r, 3 * TICK_MS));
    // And back: the first server's stale copies of these sessions must not append to them (moved).
    lb.to(one.port);
    lb.cut();
    await until('every client to resume on the first server again', () => peers.every((p) => p.resumes.length === 2 && isUp(p.client)), B.scaled(60_000));
    await new Promise((r) => setTimeout(r, 2 * TICK_MS));
    await finish(peers, B.scaled(60_000));
    const m2 = await metricsOf(two.base);
    assert.equal(metric(m2, 'ws_supervisor_session_resumes_total', { result: 'resumed', reason: 'none' }), peers.length, 'the second server resumed each once');
  });

  test('Redis restarted empty while clients are detached: each gets resumed: false, restarted; the pushes it could not keep are dead letters', { timeout: B.scaled(180_000) }, async (t) => {
    const redis = await startRedis(t);
    if (!redis) return;
    const server = await startServer(t, redis.url);
    const lb = await proxy(t, server.port);
    const N = 20;
    const peers = await connectAll(() => lb.url, N);
    const epochs = new Set(peers.map((p) => p.client.sessionId));
    assert.equal(epochs.size, N);
    // A publisher without a session, straight to the server.
    const publisher = createClient(server.wsUrl, { backoff: { initialDelay: 50, maxDelay: 500 } });
    t.after(() => publisher.close());
    await publisher.request('hello');
    // The clients are cut and cannot come back yet: their sessions are detached.
    lb.refuse(true);
    lb.cut();
    await until('the sessions to detach', () => peers.every((p) => !isUp(p.client)), B.scaled(20_000));
    await new Promise((r) => setTimeout(r, 500));
    await redis.kill();
    // A push for each detached session while Redis is down: nowhere to keep it, and the server names each one. The
    // session cannot be resumed over that gap, so it ends there (unpersisted); a later publish finds no member.
    const publishes = 1;
    for (const p of peers) publisher.send(JSON.stringify({ requestID: 0, command: 'publish', topic: p.topic, someOtherThing: 'lost1' }));
    let m = '';
    const deadline = Date.now() + B.scaled(20_000);
    for (;;) {
      m = await metricsOf(server.base);
      if (metric(m, 'ws_supervisor_session_dead_letters_total', { reason: 'unavailable' }) >= N * publishes || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(metric(m, 'ws_supervisor_session_dead_letters_total', { reason: 'unavailable' }), N * publishes, 'every push it could not keep, named');
    assert.equal(metric(m, 'ws_supervisor_session_events_total', { event: 'unpersisted' }), N, 'every session reported unpersisted');
    // A publish is one fan-out in the store (docs/sessions.md, "Fan-out in the store"): its failure is counted as the
    // publish's, and once more for each member session this server runs; one more letter names the members it cannot.
    assert.ok(metric(m, 'ws_supervisor_session_store_failures_total', { operation: 'publish' }) >= N, 'the failures counted');
    assert.equal(metric(m, 'ws_supervisor_session_dead_letters_total', { reason: 'fanout' }), N * publishes, "each failed fan-out reported for the other nodes' members");
    // Redis back, empty; the clients come back.
    await redis.restart();
    lb.refuse(false);
    await until('every client to get its answer', () => peers.every((p) => p.resumes.length >= 1 && isUp(p.client)), B.scaled(60_000));
    for (const p of peers) {
      const r = p.resumes.at(-1)!;
      assert.equal(r.resumed, false, `${p.topic}: ${JSON.stringify(r)}`);
      assert.equal(r.reason, 'restarted', `${p.topic}: ${JSON.stringify(r)}`);
      assert.equal(p.pushes.filter((x) => x.startsWith('lost')).length, 0, 'nothing of the outage arrives as if it had been kept');
    }
    // After Redis returned, sessions work again: a new one resumes.
    const again = peers[0]!;
    await again.client.request('join', again.topic);
    lb.cut();
    await until('a resume after Redis returned', () => again.resumes.length >= 2 && isUp(again.client), B.scaled(30_000));
    assert.equal(again.resumes.at(-1)!.resumed, true, JSON.stringify(again.resumes.at(-1)));
    await Promise.all(peers.map((p) => p.client.close()));
  });

  test('Redis hung while a client is attached: its pushes keep arriving on its connection; once cut, it is told it cannot resume', { timeout: B.scaled(180_000) }, async (t) => {
    const redis = await startRedis(t);
    if (!redis) return;
    const server = await startServer(t, redis.url);
    const lb = await proxy(t, server.port);
    const [peer] = await connectAll(() => lb.url, 1);
    const publisher = createClient(server.wsUrl, { backoff: { initialDelay: 50, maxDelay: 500 } });
    t.after(() => publisher.close());
    await publisher.request('hello');
    const push = (text: string) => publisher.send(JSON.stringify({ requestID: 0, command: 'publish', topic: peer!.topic, someOtherThing: text }));
    push('before');
    await until('the first push', () => peer!.pushes.length === 1, B.scaled(10_000));
    // Redis stops answering: the appends time out (commandTimeout), the session is unpersisted, delivery goes on locally.
    redis.pause();
    t.after(() => redis.resume());
    const pausedAt = Date.now();
    for (const text of ['during1', 'during2', 'during3']) push(text);
    await until('the pushes made while Redis hung', () => peer!.pushes.length === 4, B.scaled(30_000));
    const pushesAfter = Date.now() - pausedAt;
    assert.deepEqual(peer!.pushes, ['before', 'during1', 'during2', 'during3'], 'in order, each once');
    let m = '';
    const deadline = Date.now() + B.scaled(20_000);
    for (;;) {
      m = await metricsOf(server.base);
      if (metric(m, 'ws_supervisor_session_events_total', { event: 'unpersisted' }) >= 1 || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(metric(m, 'ws_supervisor_session_events_total', { event: 'unpersisted' }), 1, `the session reported unpersisted (session ${peer!.client.sessionId}; the pushes came ${pushesAfter} ms after the pause)\n${m.split('\n').filter((l) => l.startsWith('ws_supervisor_session')).join('\n')}\n${server.stdout().slice(-4000)}`);
    // Its requests still run, once each, on this connection.
    const reply = await peer!.client.request('still-here');
    assert.equal(reply.someOtherThing, 'Server processed command: still-here');
    // Redis answers again, with its data; the client is cut and comes back: the session could not be kept, and it is told.
    redis.resume();
    lb.cut();
    await until('the answer to the resume', () => peer!.resumes.length === 1 && isUp(peer!.client), B.scaled(60_000));
    const r = peer!.resumes[0]!;
    assert.equal(r.resumed, false, JSON.stringify(r));
    assert.ok(r.reason === 'restarted' || r.reason === 'expired', JSON.stringify(r));
    // And a new session resumes normally now.
    await peer!.client.request('join', peer!.topic);
    push('after');
    await until('a push to the new session', () => peer!.pushes.includes('after'), B.scaled(10_000));
    lb.cut();
    await until('a resume after Redis returned', () => peer!.resumes.length === 2 && isUp(peer!.client), B.scaled(30_000));
    assert.equal(peer!.resumes[1]!.resumed, true, JSON.stringify(peer!.resumes[1]));
    await peer!.client.close();
  });
});
