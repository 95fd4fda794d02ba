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
 */
export async function timeBroadcasts(options: {
  receivers: BenchClient[];
  count: number;
  timeoutMs: number;
  base: number;
  send: () => void;
}): Promise<BroadcastTiming> {
  const { receivers, count, timeoutMs, base, send } = options;
  const counts = receivers.map(() => new Uint8Array(count));
  let current = -1;
  let got = 0;
  let done: (() => void) | null = null;
  let strays = 0;
  receivers.forEach((r, i) => {
    r.onMessage((text) => {
      const m = BROADCAST_PUSH.exec(text);
      const b = m ? Number(m[1]) - base - 1 : -1;
      if (b < 0 || b >= count) {
        strays++;
        return;
      }
      counts[i]![b]!++;
      if (b === current && counts[i]![b] === 1 && ++got === receivers.length) done?.();
    });
  });
  const times: number[] = [];
  let timedOut: string | null = null;
  for (let b = 0; b < count; b++) {
    current = b;
    got = 0;
    const all = new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), timeoutMs);
      done = () => {
        clearTimeout(t);
        resolve(true);
      };
    });
    const t0 = performance.now();
    send();
    const ok = await all;
    const dt = performance.now() - t0;
    done = null;
    if (!ok) {
      timedOut = `broadcast ${b} reached ${got} of ${receivers.length} receivers in ${timeoutMs} ms`;
      break;
    }
    times.push(dt);
    await sleep(50); // quiet gap: each broadcast is measured alone
  }
  await sleep(200); // late duplicates would show now
  let missing = 0;
  let duplicated = 0;
  for (const c of counts) {
    for (let b = 0; b < times.length; b++) {
      if (c[b] === 0) missing++;
      else if (c[b]! > 1) duplicated++;
    }
  }
  return { times, missing, duplicated, strays, timedOut };
}
