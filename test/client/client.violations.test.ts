/**
 * The session layer of the client (src/client/client.ts) against a server
 * that breaks the session protocol (docs/sessions.md, "Frames on a session
 * connection"): a `ws` server on 127.0.0.1 that follows a script per
 * connection, and the real Node client. The promise under test: nothing the
 * server sent is lost silently and every request is answered or rejected
 * with a reason. A frame the client cannot square with what it sent or
 * received (a seq that skips, an ack or duplicate for a request never sent, a
 * resume that claims a position the client never reached, a second
 * `attached`, a data frame without its number) closes the connection 1002
 * (R15, as the server does for the client's violations) and the client
 * resumes from its own position: the server replays what it skipped, the
 * client re-sends what it forgot, and the `close` event names the violation.
 *
 * Timings: the server and the client run in this process; the waits for the
 * client are scaled by the measured pace (test/helpers/pace.ts).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import type net from 'node:net';
import { describe, test, type TestContext } from 'node:test';
import { WebSocketServer, type WebSocket } from 'ws';
import type { ClientOutput } from '../../machines/client.machine.ts';
import type { Closure } from '../../machines/close-codes.ts';
import type { ResumeEvent } from '../../src/client/client.ts';
import { createClient, type Client, type NodeClientOptions } from '../../src/client/node.ts';
import { createSupervisor } from '../../src/index.ts';
import { handleText } from '../../src/protocol/codec.ts';
import { UNPERSISTED_SEQ_JUMP } from '../../src/protocol/session.ts';
import { LOCAL_SEQ_JUMP } from '../../src/server/sessions.ts';
import { pace } from '../helpers/pace.ts';

const ID = 'S'.repeat(22);
const TOKEN = 'T'.repeat(43);
const EPOCH = 'e1';

function attached(f: { resumed: boolean; lastSeq?: number; replay?: number; cseq?: number; id?: string }): string {
  return JSON.stringify({
    session: 'attached', id: f.id ?? ID, token: TOKEN, epoch: EPOCH, resumed: f.resumed,
    lastSeq: f.lastSeq ?? 0, replay: f.replay ?? 0, cseq: f.cseq ?? 0, resumeWindow: 60_000,
  });
}

/** One server-side connection, as a script sees it: the frames it receives, in order. */
class Peer {
  private readonly inbox: string[] = [];
  private waiter: ((text: string) => void) | null = null;
  readonly closed: Promise<void>;
  constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const text = data.toString();
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = null;
        w(text);
      } else this.inbox.push(text);
    });
    this.closed = once(ws, 'close').then(() => undefined);
  }

  /** The next frame from the client (acks included only when `acks`). */
  async next(acks = false): Promise<string> {
    for (;;) {
      const text = this.inbox.length > 0 ? this.inbox.shift()! : await new Promise<string>((resolve) => (this.waiter = resolve));
      if (acks || !text.startsWith('{"session":"ack"')) return text;
    }
  }

  send(text: string): void {
    this.ws.send(text);
  }
}

type Script = (peer: Peer) => Promise<void>;

/** A server that runs scripts[i] on its i-th connection (and the last one on any after). */
async function scriptedServer(t: TestContext, scripts: Script[]): Promise<{ url: string; errors: unknown[]; connections: () => number }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await once(wss, 'listening');
  let n = 0;
  const errors: unknown[] = [];
  wss.on('connection', (ws) => {
    ws.on('error', () => undefined);
    const script = scripts[Math.min(n++, scripts.length - 1)]!;
    script(new Peer(ws)).catch((err: unknown) => errors.push(err));
  });
  t.after(async () => {
    for (const ws of wss.clients) ws.terminate();
    await new Promise((resolve) => wss.close(resolve));
  });
  const { port } = wss.address() as { port: number };
  return { url: `ws://127.0.0.1:${port}/server`, errors, connections: () => n };
}

function sessionClient(t: TestContext, url: string, options: NodeClientOptions = {}): Client {
  const client = createClient(url, {
    session: { ackDelay: 50 },
    timing: { connectTimeout: pace.scaled(2_000), closeTimeout: pace.scaled(500), pingInterval: 0 },
    backoff: { initialDelay: 20, maxDelay: 50 },
    requestTimeout: pace.scaled(5_000),
    ...options,
  });
  t.after(async () => {
    await client.close();
  });
  return client;
}

/** Resolves with the first value `take` accepts, or rejects after ms (scaled) naming what. */
function until<T>(client: Client, what: string, ms: number, wire: (done: (v: T) => void) => () => void): Promise<T> {
  const limit = pace.scaled(ms);
  return new Promise<T>((resolve, reject) => {
    let off = (): void => undefined;
    const timer = setTimeout(() => {
      off();
      reject(new Error(`${what}: not within ${limit} ms (client ${client.state})`));
    }, limit);
    off = wire((v) => {
      clearTimeout(timer);
      off();
      resolve(v);
    });
  });
}

const push = (n: number): string => `${n}:${JSON.stringify({ n })}`;

/** A script that resumes honestly: checks the client's position, replays from it up to `upTo`, then idles. */
function honestResume(expectLastSeq: number, upTo: number, seen: { resume: string | null }): Script {
  return async (peer) => {
    const first = await peer.next();
    seen.resume = first;
    const r = JSON.parse(first) as { session: string; lastSeq: number };
    assert.equal(r.session, 'resume');
    assert.equal(r.lastSeq, expectLastSeq, `the client resumes from its own position: ${first}`);
    peer.send(attached({ resumed: true, lastSeq: r.lastSeq, replay: upTo - r.lastSeq }));
    for (let seq = r.lastSeq + 1; seq <= upTo; seq++) peer.send(push(seq));
    await peer.closed;
  };
}

describe('session client against a server that breaks the session protocol (R12, R15)', { timeout: pace.scaled(60_000) }, () => {
  const violations: Array<{ name: string; reason: RegExp; hostile: Script; expectLastSeq: number; upTo: number }> = [
    {
      name: 'a data frame whose seq skips one (1, then 3)',
      reason: /seq 3 after 1/,
      hostile: async (peer) => {
        await peer.next();
        peer.send(attached({ resumed: false }));
        peer.send(push(1));
        peer.send(push(3));
        await peer.closed;
      },
      expectLastSeq: 1,
      upTo: 3,
    },
    {
      name: 'a data frame without its seq header',
      reason: /data frame/,
      hostile: async (peer) => {
        await peer.next();
        peer.send(attached({ resumed: false }));
        peer.send(push(1));
        peer.send('{"n":2} ');
        peer.send('hello');
        await peer.closed;
      },
      expectLastSeq: 1,
      upTo: 2,
    },
    {
      name: 'a second attached on the same connection',
      reason: /attached/,
      hostile: async (peer) => {
        await peer.next();
        peer.send(attached({ resumed: false }));
        peer.send(push(1));
        peer.send(attached({ resumed: false, id: 'X'.repeat(22) }));
        peer.send(push(2));
        await peer.closed;
      },
      expectLastSeq: 1,
      upTo: 2,
    },
    {
      name: 'a duplicate for a request never sent',
      reason: /duplicate/,
      hostile: async (peer) => {
        await peer.next();
        peer.send(attached({ resumed: false }));
        peer.send(push(1));
        peer.send('{"session":"duplicate","cseq":3,"replySeqs":[]}');
        await peer.closed;
      },
      expectLastSeq: 1,
      upTo: 2,
    },
  ];
  for (const v of violations) {
    test(`${v.name}: the client closes 1002 naming it, resumes from its own position, and gets every message once, in order`, async (t) => {
      const seen = { resume: null as string | null };
      const server = await scriptedServer(t, [v.hostile, honestResume(v.expectLastSeq, v.upTo, seen)]);
      const client = sessionClient(t, server.url);
      const got: number[] = [];
      client.on('push', (p) => got.push(p.n as number));
      const closes: Closure[] = [];
      client.on('close', (c) => closes.push(c));
      const resumed = until<ResumeEvent>(client, 'resume', 10_000, (done) => client.on('resume', done));
      const ev = await resumed;
      assert.equal(ev.resumed, true);
      await until(client, `message ${v.upTo}`, 10_000, (done) => {
        const check = (): void => {
          if (got.length >= v.upTo) done(undefined);
        };
        const off = client.on('push', check);
        check();
        return off;
      });
      assert.deepEqual(got, Array.from({ length: v.upTo }, (_, i) => i + 1), 'every message once, in order');
      assert.equal(closes.length, 1, JSON.stringify(closes));
      assert.equal(closes[0]!.code, 1002);
      assert.equal(closes[0]!.cause, 'protocol-error');
      assert.equal(closes[0]!.initiator, 'local');
      assert.match(closes[0]!.reason, v.reason);
      assert.deepEqual(server.errors, []);
    });
  }

  test('a resume answered resumed: true from a position the client never reached: closed 1002, resumed again from its own, nothing skipped', async (t) => {
    const seen = { resume: null as string | null };
    const server = await scriptedServer(t, [
      async (peer) => {
        await peer.next();
        peer.send(attached({ resumed: false }));
        peer.send(push(1));
        await peer.next(true); // the client's ack of seq 1 (ackDelay 50)
        peer.ws.terminate();
      },
      async (peer) => {
        const r = JSON.parse(await peer.next()) as { lastSeq: number };
        assert.equal(r.lastSeq, 1);
        peer.send(attached({ resumed: true, lastSeq: 4, replay: 0 })); // claims the client had 2…4
        peer.send(push(5));
        await peer.closed;
      },
      honestResume(1, 5, seen),
    ]);
    const client = sessionClient(t, server.url);
    const got: number[] = [];
    client.on('push', (p) => got.push(p.n as number));
    const closes: Closure[] = [];
    client.on('close', (c) => closes.push(c));
    await until(client, 'message 5', 10_000, (done) => client.on('push', (p) => p.n === 5 && done(undefined)));
    assert.deepEqual(got, [1, 2, 3, 4, 5]);
    assert.equal(server.connections(), 3);
    const violation = closes.find((c) => c.code === 1002);
    assert.ok(violation, JSON.stringify(closes));
    assert.match(violation.reason, /lastSeq 4/);
    assert.deepEqual(server.errors, []);
  });

  test('an ack for a request never sent does not make the client forget the one it did send: it is re-sent after the resume and answered', async (t) => {
    const server = await scriptedServer(t, [
      async (peer) => {
        await peer.next();
        peer.send(attached({ resumed: false }));
        const request = await peer.next();
        assert.match(request, /^1:\{"requestID":1,/);
        peer.send('{"session":"ack","cseq":5}'); // only cseq 1 was ever sent
        await peer.closed;
      },
      async (peer) => {
        const r = JSON.parse(await peer.next()) as { session: string };
        assert.equal(r.session, 'resume');
        peer.send(attached({ resumed: true, lastSeq: 0, replay: 0, cseq: 0 }));
        const again = await peer.next();
        assert.match(again, /^1:\{"requestID":1,/, 'the request is re-sent');
        peer.send(`1:${JSON.stringify({ requestID: 1, success: true, someOtherThing: 'ran once' })}`);
        await peer.closed;
      },
    ]);
    const client = sessionClient(t, server.url);
    const closes: Closure[] = [];
    client.on('close', (c) => closes.push(c));
    const reply = await client.request('eject');
    assert.equal(reply.someOtherThing, 'ran once');
    assert.equal(closes.length, 1);
    assert.equal(closes[0]!.code, 1002);
    assert.match(closes[0]!.reason, /ack.*cseq 5/);
    assert.deepEqual(server.errors, []);
  });

  test("the one gap that is not a loss, the server's jump of an unpersisted session (2^32, docs/sessions.md \"Store failures\"), is delivered on the same connection", async (t) => {
    assert.equal(UNPERSISTED_SEQ_JUMP, LOCAL_SEQ_JUMP, 'the client accepts exactly the jump the server makes');
    const jumped = 2 + LOCAL_SEQ_JUMP;
    let ack = '';
    const server = await scriptedServer(t, [
      async (peer) => {
        await peer.next();
        peer.send(attached({ resumed: false }));
        peer.send(push(1));
        peer.send(`${jumped}:${JSON.stringify({ n: 2 })}`);
        peer.send(`${jumped + 1}:${JSON.stringify({ n: 3 })}`);
        // Cumulative acks (the first by count, at random, may come at the jump): the last covers seq jumped + 1.
        while (ack !== `{"session":"ack","seq":${jumped + 1}}`) ack = await peer.next(true);
        await peer.closed;
      },
    ]);
    const client = sessionClient(t, server.url);
    const got: number[] = [];
    client.on('push', (p) => got.push(p.n as number));
    const closes: Closure[] = [];
    client.on('close', (c) => closes.push(c));
    await until(client, 'message 3', 10_000, (done) => client.on('push', (p) => p.n === 3 && done(undefined)));
    await until(client, 'the ack', 10_000, (done) => {
      const timer = setInterval(() => ack === `{"session":"ack","seq":${jumped + 1}}` && done(undefined), 10);
      return () => clearInterval(timer);
    });
    assert.equal(ack, `{"session":"ack","seq":${jumped + 1}}`, 'acknowledged up to the jumped seq');
    assert.deepEqual(got, [1, 2, 3]);
    assert.deepEqual(closes, []);
    assert.equal(server.connections(), 1);
  });
});

describe('session client: what it wrote is re-sent or reported, never both (R12)', { timeout: pace.scaled(60_000) }, () => {
  test("a burst over the client's own send queue (R9: closed 1008 as a slow consumer) is re-sent after the resume, each request run once; no deadLetter for what is re-sent", async (t) => {
    const runs = new Map<number, number>();
    const server = http.createServer();
    const supervisor = createSupervisor({
      server, path: '/server', sessions: {}, timing: { closeTimeout: 300 },
      onMessage(connection, data) {
        const text = data.toString();
        const id = (JSON.parse(text) as { requestID: number }).requestID;
        runs.set(id, (runs.get(id) ?? 0) + 1);
        connection.send(handleText(text, { join: () => true, leave: () => true }, connection).reply);
      },
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.after(async () => {
      await supervisor.close();
      supervisor.detach();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    });
    const url = `ws://127.0.0.1:${(server.address() as net.AddressInfo).port}/server`;
    const client = sessionClient(t, url, { session: true, sendQueue: { maxMessages: 2 } });
    const dead: string[] = [];
    client.on('deadLetter', (d) => dead.push(d.data.slice(0, 40)));
    const closes: Closure[] = [];
    client.on('close', (c) => closes.push(c));
    await until<undefined>(client, 'open', 5_000, (done) => client.on('state', (s) => s.state === 'open' && done(undefined)));
    const big = 'x'.repeat(100_000); // over the socket's 16 KiB high-water mark: each one after the first waits in the queue
    const replies = await Promise.all([1, 2, 3, 4, 5].map(() => client.request('echo', big)));
    assert.deepEqual(replies.map((r) => r.requestID), [1, 2, 3, 4, 5]);
    assert.ok(closes.some((c) => c.code === 1008 && c.cause === 'slow-consumer'), `the burst overflowed the queue: ${JSON.stringify(closes)}`);
    assert.deepEqual([...runs.entries()].sort((a, b) => a[0] - b[0]), [[1, 1], [2, 1], [3, 1], [4, 1], [5, 1]], 'each request ran once');
    assert.deepEqual(dead, [], 'nothing re-sent is reported lost');
  });

  test('raw sends the old session never acknowledged, when the resume fails (resumed: false): handed back as deadLetter, not dropped', async (t) => {
    const server = await scriptedServer(t, [
      async (peer) => {
        await peer.next();
        peer.send(attached({ resumed: false }));
        assert.equal(await peer.next(), '1:hello');
        peer.ws.terminate(); // never acknowledged
      },
      async (peer) => {
        assert.equal((JSON.parse(await peer.next()) as { session: string }).session, 'resume');
        peer.send(JSON.stringify({ ...JSON.parse(attached({ resumed: false, id: 'N'.repeat(22) })), reason: 'expired', detail: 'test' }));
        await peer.closed;
      },
    ]);
    const client = sessionClient(t, server.url);
    const dead: string[] = [];
    client.on('deadLetter', (d) => dead.push(d.data));
    await until<undefined>(client, 'open', 5_000, (done) => client.on('state', (s) => s.state === 'open' && done(undefined)));
    client.send('hello');
    const ev = await until<ResumeEvent>(client, 'resume', 10_000, (done) => client.on('resume', done));
    assert.equal(ev.resumed, false);
    assert.equal(ev.reason, 'expired');
    assert.deepEqual(dead, ['hello']);
    assert.deepEqual(server.errors, []);
  });

  test('raw sends the session never acknowledged, when the client stops without resuming it (gave up): handed back as deadLetter', async (t) => {
    const server = await scriptedServer(t, [
      async (peer) => {
        await peer.next();
        peer.send(attached({ resumed: false }));
        assert.equal(await peer.next(), '1:hello');
        // Never acknowledged; the server goes away for good: this connection is cut and the next attempts refused.
        peer.ws.terminate();
      },
      async (peer) => {
        peer.ws.terminate();
      },
    ]);
    const client = sessionClient(t, server.url, { session: true, backoff: { initialDelay: 20, maxDelay: 50, maxAttempts: 2 } });
    const dead: string[] = [];
    client.on('deadLetter', (d) => dead.push(d.data));
    await until<undefined>(client, 'open', 5_000, (done) => client.on('state', (s) => s.state === 'open' && done(undefined)));
    client.send('hello');
    const output = await until<ClientOutput>(client, 'the end', 10_000, (done) => client.on('end', done));
    assert.equal(output.reason, 'gave-up');
    assert.deepEqual(dead, ['hello']);
    assert.deepEqual(server.errors, []);
  });
});
