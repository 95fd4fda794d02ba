/**
 * A server with N receivers and one sender, kept up between single
 * broadcasts, each measured on its own: shared by the broadcast scenario's
 * interleaved part (bench/scenarios/broadcast.ts) and bench/fanout-counts.ts.
 *
 * interleave() runs two of them at once and alternates one broadcast to each
 * per round (which one goes first alternates too): whatever else loads the
 * machine then loads both alike, and the per-round ratio is the figure that
 * holds still on a shared machine, where passes run one after the other
 * minutes apart drift ±15–20%.
 */
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import type WebSocket from 'ws';
import { BROADCAST_PUSH } from './broadcast-timing.ts';
import { closeAll, connectClient, connectMany, median, selfCpuUs, sleep, startServer, waitForConnections, type BenchClient, type ServerOptions, type System } from './harness.ts';

/** One single broadcast, measured. */
export interface BroadcastRow {
  /** Time from the send until the first / half / last receiver had it, ms. */
  first: number;
  half: number;
  last: number;
  /** The load generator's CPU from the send until the last receiver had it, per delivery, µs. */
  clientUs: number;
  /** The load generator's CPU over that time / the time (1 = a whole core: the time is then client-bound). */
  clientShare: number;
  /** The server's CPU (its own process.cpuUsage) over the broadcast and the quiet gap after it, per delivery, µs. */
  serverUs: number;
  /** Bytes each receiver's socket read per delivery (socket.bytesRead). */
  bytes: number;
  /** Socket 'data' events per delivery (the reads that carried bytes). */
  dataEvents: number;
  /** Heartbeat pings the receivers got during the broadcast, per delivery. */
  pings: number;
}

/** What went wrong so far: every receiver must get every broadcast exactly once, and the sender the right reply to each. */
export interface BroadcastIntegrity {
  broadcasts: number;
  missing: number;
  duplicated: number;
  /** Messages that were not the broadcast in flight (a late duplicate, anything unexpected). */
  strays: number;
  /** Replies to the sender that were wrong, or missing. */
  badReplies: number;
  /** Set when a broadcast did not reach everyone in time. */
  timedOut: string | null;
}

export interface LiveBroadcast {
  system: System;
  serverPid: number;
  receivers: number;
  /** One broadcast, measured (throws after `timeoutMs` if it did not reach everyone). */
  one(): Promise<BroadcastRow>;
  integrity(): BroadcastIntegrity;
  close(): Promise<void>;
}

export interface LiveBroadcastOptions {
  receivers: number;
  /** Broadcasts sent and thrown away before the measured ones (JIT warm-up). */
  warmup: number;
  /** Quiet time after each broadcast, ms (default 50, as the scenario's single broadcasts). */
  gapMs?: number;
  /** A broadcast that has not reached every receiver by then fails. Default 15 000. */
  timeoutMs?: number;
  /** Server options (heartbeat); the harness defaults otherwise, as the broadcast scenario runs. */
  server?: ServerOptions;
}

const REPLY = /^\{"requestID":(\d+),"success":true/;

function socketOf(c: BenchClient): Socket {
  return (c.raw as unknown as { _socket: Socket })._socket;
}

/** A server of `system` with N receivers and a sender, warmed up. `ws` systems only (raw, supervisor). */
export async function liveBroadcast(system: System, options: LiveBroadcastOptions): Promise<LiveBroadcast> {
  if (system === 'socketio') throw new Error('liveBroadcast counts socket reads of `ws` clients: raw or supervisor, not socketio');
  const N = options.receivers;
  const gapMs = options.gapMs ?? 50;
  const timeoutMs = options.timeoutMs ?? 15_000;
  const server = await startServer(system, options.server ?? {});
  let receivers: BenchClient[] = [];
  let sender: BenchClient | null = null;
  const close = async (): Promise<void> => {
    await closeAll(sender ? [sender, ...receivers] : receivers);
    await server.stop();
  };
  try {
    receivers = await connectMany(server, N, { batch: 250 });
    sender = await connectClient(server);
    await waitForConnections(server, N + 1, 60_000);
  } catch (err) {
    await close();
    throw err;
  }
  const integrity: BroadcastIntegrity = { broadcasts: 0, missing: 0, duplicated: 0, strays: 0, badReplies: 0, timedOut: null };
  let data = 0;
  const countData = (): void => void data++;
  let pings = 0;
  const countPing = (): void => void pings++;
  // Per receiver, how many times it got the broadcast in flight.
  const got = new Uint8Array(N);
  let k = 0;
  let reached = 0;
  let arrivals: number[] = [];
  let t0 = 0;
  let done: (() => void) | null = null;
  receivers.forEach((r, i) => {
    socketOf(r).on('data', countData);
    (r.raw as WebSocket).on('ping', countPing);
    r.onMessage((text) => {
      const m = BROADCAST_PUSH.exec(text);
      if (!m || Number(m[1]) !== k) {
        integrity.strays++;
        return;
      }
      if (++got[i]! > 1) return;
      arrivals.push(performance.now() - t0);
      if (++reached === N) done?.();
    });
  });
  const unanswered = new Set<number>();
  sender!.onMessage((text) => {
    const m = REPLY.exec(text);
    if (m) {
      if (!unanswered.delete(Number(m[1]))) integrity.badReplies++;
    } else if (!BROADCAST_PUSH.test(text)) integrity.badReplies++; // the sender is a client too: it gets the push
  });
  const one = async (): Promise<BroadcastRow> => {
    got.fill(0);
    reached = 0;
    arrivals = [];
    data = 0;
    pings = 0;
    const bytes0 = receivers.reduce((s, r) => s + socketOf(r).bytesRead, 0);
    const s0 = (await server.stats()).cpuUs;
    let timer: NodeJS.Timeout | undefined;
    const all = new Promise<boolean>((resolve) => {
      done = () => resolve(true);
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    const c0 = selfCpuUs();
    t0 = performance.now();
    k++;
    unanswered.add(k);
    sender!.send(`{"requestID":${k},"command":"broadcast","someOtherThing":"b${k}"}`);
    const ok = await all;
    const c1 = selfCpuUs();
    clearTimeout(timer);
    done = null;
    const events = data;
    const pinged = pings;
    integrity.broadcasts++;
    if (!ok) {
      integrity.missing += N - reached;
      integrity.timedOut = `${system}: broadcast ${k} reached ${reached} of ${N} receivers in ${timeoutMs} ms`;
      throw new Error(integrity.timedOut);
    }
    await sleep(gapMs);
    // Counted after the gap: a duplicate of this broadcast would have come by now.
    for (const c of got) if (c > 1) integrity.duplicated++;
    const s1 = (await server.stats()).cpuUs;
    const bytes1 = receivers.reduce((s, r) => s + socketOf(r).bytesRead, 0);
    const last = arrivals[N - 1]!;
    return {
      first: arrivals[0]!,
      half: arrivals[(N >> 1) - 1]!,
      last,
      clientUs: (c1 - c0) / N,
      clientShare: (c1 - c0) / 1000 / last,
      serverUs: (s1 - s0) / N,
      bytes: (bytes1 - bytes0) / N,
      dataEvents: events / N,
      pings: pinged / N,
    };
  };
  try {
    for (let i = 0; i < options.warmup; i++) await one();
  } catch (err) {
    await close();
    throw err;
  }
  await sleep(200);
  return {
    system,
    serverPid: server.pid,
    receivers: N,
    one,
    integrity: () => ({ ...integrity, badReplies: integrity.badReplies + unanswered.size }),
    close,
  };
}

/** This process's open-file limit (Infinity when unknown). */
export function openFileLimit(): number {
  try {
    return Number(/Max open files\s+(\d+)/.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1] ?? Infinity);
  } catch {
    return Infinity;
  }
}

/** The most receivers two servers' sets of client sockets fit under `limit` (two senders and some room for the rest). */
export function interleavedCapacity(limit = openFileLimit()): number {
  return Math.floor((limit - 100) / 2);
}

/**
 * Both systems up at once with N receivers each; `rounds` rounds of one
 * single broadcast to each, the first system first in even rounds, second
 * first in odd ones. Returns each system's rows, round by round, and both
 * integrities; closes both.
 */
export async function interleave(
  a: System,
  b: System,
  rounds: number,
  options: LiveBroadcastOptions,
): Promise<{ rows: Record<string, BroadcastRow[]>; integrity: Record<string, BroadcastIntegrity> }> {
  const limit = openFileLimit();
  if (2 * options.receivers + 64 > limit) {
    throw new Error(`interleaved broadcasts need 2 × ${options.receivers} client sockets and some room: over this process's open-file limit ${limit}`);
  }
  const la = await liveBroadcast(a, options);
  let lb: LiveBroadcast;
  try {
    lb = await liveBroadcast(b, options);
  } catch (err) {
    await la.close();
    throw err;
  }
  const ra: BroadcastRow[] = [];
  const rb: BroadcastRow[] = [];
  try {
    for (let i = 0; i < rounds; i++) {
      if (i % 2 === 0) {
        ra.push(await la.one());
        rb.push(await lb.one());
      } else {
        rb.push(await lb.one());
        ra.push(await la.one());
      }
    }
  } catch (err) {
    // A broadcast that timed out: its integrity says so; the caller reports it.
    if (!la.integrity().timedOut && !lb.integrity().timedOut) throw err;
  } finally {
    await la.close();
    await lb.close();
  }
  return { rows: { [a]: ra, [b]: rb }, integrity: { [a]: la.integrity(), [b]: lb.integrity() } };
}

/** Median of the per-round ratios a[i][key] / b[i][key], and in how many rounds a was lower. */
export function roundRatio(a: readonly BroadcastRow[], b: readonly BroadcastRow[], key: keyof BroadcastRow): { ratio: number; lower: number; rounds: number } {
  const n = Math.min(a.length, b.length);
  const rs = Array.from({ length: n }, (_, i) => a[i]![key] / b[i]![key]);
  return { ratio: median(rs), lower: rs.filter((x) => x < 1).length, rounds: n };
}
