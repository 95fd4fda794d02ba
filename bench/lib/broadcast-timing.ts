/**
 * One level of a broadcast measurement, shared by the broadcast and scale-out
 * scenarios: `count` broadcasts, each sent alone (a quiet gap after each), the
 * time from the send until the last receiver has it, and the integrity count
 * (every receiver got every broadcast exactly once, nothing unexpected).
 */
import { sleep, type BenchClient } from './harness.ts';

/** Pushes carry their broadcast number k: `{"command":"broadcast","someOtherThing":"b<k>"}`. */
export const BROADCAST_PUSH = /^\{"command":"broadcast","someOtherThing":"b(\d+)"\}$/;

export interface BroadcastTiming {
  /** ms per broadcast that reached everyone, in order. */
  times: number[];
  missing: number;
  duplicated: number;
  strays: number;
  /** Set when a broadcast did not reach everyone in time (the level stops there). */
  timedOut: string | null;
}

/**
 * `send()` sends the next broadcast; the k of the first one is `base + 1`,
 * then one more each time (the callers number their requests that way).
 * Each broadcast is sent alone, with a quiet gap after it.
 */
export async function timeBroadcasts(options: {
  receivers: BenchClient[];
  count: number;
  timeoutMs: number;
  base: number;
  send: () => void;
}): Promise<BroadcastTiming> {
  const { times, missing, duplicated, strays, timedOut } = await timeBursts({ ...options, bursts: options.count, burst: 1, gapMs: 50 });
  return { times, missing, duplicated, strays, timedOut };
}

export interface BurstTiming extends BroadcastTiming {
  /** ms per burst until every receiver had every broadcast of it, in order of the bursts. */
  times: number[];
  /** Server CPU per delivery (µs) of each burst: the server's CPU over the burst / (burst × receivers); empty without `serverCpuUs`. */
  cpuPerDelivery: number[];
  /** The load generator's CPU over each burst / its wall time (1 = a whole core: the time is then client-bound). */
  loadShare: number[];
}

/**
 * `bursts` bursts of `burst` broadcasts each, sent back to back (one
 * `send()` per broadcast, all in one turn); per burst, the time until every
 * receiver has all of them, and with `serverCpuUs` the server's CPU over it
 * per delivery. The k of the first broadcast is `base + 1`, then one more
 * each time.
 */
export async function timeBursts(options: {
  receivers: BenchClient[];
  bursts: number;
  burst: number;
  timeoutMs: number;
  base: number;
  send: () => void;
  /** Quiet time after each burst, ms (each is measured alone). Default 100. */
  gapMs?: number;
  serverCpuUs?: () => Promise<number>;
  selfCpuUs?: () => number;
}): Promise<BurstTiming> {
  const { receivers, bursts, burst, timeoutMs, base, send } = options;
  const total = bursts * burst;
  const counts = receivers.map(() => new Uint8Array(total));
  let first = -1; // first broadcast index of the burst in flight
  let got = 0;
  let done: (() => void) | null = null;
  let strays = 0;
  const goal = burst * receivers.length;
  receivers.forEach((r, i) => {
    r.onMessage((text) => {
      const m = BROADCAST_PUSH.exec(text);
      const b = m ? Number(m[1]) - base - 1 : -1;
      if (b < 0 || b >= total) {
        strays++;
        return;
      }
      counts[i]![b]!++;
      if (b >= first && b < first + burst && counts[i]![b] === 1 && ++got === goal) done?.();
    });
  });
  const out: BurstTiming = { times: [], cpuPerDelivery: [], loadShare: [], missing: 0, duplicated: 0, strays: 0, timedOut: null };
  for (let k = 0; k < bursts; k++) {
    first = k * burst;
    got = 0;
    const all = new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), timeoutMs);
      done = () => {
        clearTimeout(t);
        resolve(true);
      };
    });
    const cpu0 = options.serverCpuUs ? await options.serverCpuUs() : 0;
    const self0 = options.selfCpuUs?.() ?? 0;
    const t0 = performance.now();
    for (let j = 0; j < burst; j++) send();
    const ok = await all;
    const dt = performance.now() - t0;
    const self1 = options.selfCpuUs?.() ?? 0;
    const cpu1 = options.serverCpuUs ? await options.serverCpuUs() : 0;
    done = null;
    if (!ok) {
      out.timedOut = burst === 1 ? `broadcast ${k} reached ${got} of ${receivers.length} receivers in ${timeoutMs} ms` : `burst ${k} delivered ${got} of ${goal} in ${timeoutMs} ms`;
      break;
    }
    out.times.push(dt);
    if (options.serverCpuUs) out.cpuPerDelivery.push((cpu1 - cpu0) / goal);
    if (options.selfCpuUs) out.loadShare.push((self1 - self0) / 1000 / dt);
    await sleep(options.gapMs ?? 100);
  }
  await sleep(200); // late duplicates would show now
  const measured = out.times.length * burst;
  for (const c of counts) {
    for (let b = 0; b < measured; b++) {
      if (c[b] === 0) out.missing++;
      else if (c[b]! > 1) out.duplicated++;
    }
  }
  out.strays = strays;
  return out;
}
