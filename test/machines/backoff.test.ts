/**
 * R22 reconnect delays (machines/backoff.ts): exponential backoff with full
 * jitter, capped. Tested on the sequence of delays, never on wall-clock time:
 * the random number is an argument, and the one example that runs the client
 * machine does so on a simulated clock.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createActor, fromCallback, SimulatedClock, type AnyActorRef } from 'xstate';
import { backoffCeiling, backoffDelay, type BackoffOptions } from '../../machines/backoff.ts';
import { clientMachine, type ClientEvent, type DialerInput } from '../../machines/client.machine.ts';
import { connectionMachine, type ActorInput, type ReaderCommand, type WriterCommand } from '../../machines/connection.machine.ts';

type Growth = Pick<BackoffOptions, 'initialDelay' | 'maxDelay' | 'multiplier'>;

/** The client defaults (src/client/client.ts): 500 ms doubling up to 30 s. */
const defaults: Growth = { initialDelay: 500, maxDelay: 30_000, multiplier: 2 };
const optionSets: Growth[] = [
  defaults,
  { initialDelay: 100, maxDelay: 10_000, multiplier: 2 },
  { initialDelay: 250, maxDelay: 3_000, multiplier: 1.5 },
  { initialDelay: 1_000, maxDelay: 1_000, multiplier: 3 },
  { initialDelay: 7, maxDelay: 100, multiplier: 1 },
];
/** The largest double below 1: what Math.random can return at most. */
const JUST_UNDER_ONE = 1 - 2 ** -53;
const randoms = [0, Number.MIN_VALUE, 1e-9, 0.001, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999, 0.999999, JUST_UNDER_ONE];

/** The ceiling in closed form, independent of backoff.ts's loop: min(maxDelay, initialDelay × multiplier^attempt). */
function ceilingOf(attempt: number, o: Growth): number {
  return Math.min(o.maxDelay, o.initialDelay * o.multiplier ** attempt);
}

describe('backoff delays (R22: exponential, full jitter, capped)', () => {
  test('R22: 0 ≤ delay < ceiling, an integer number of ms, for every random in [0, 1)', () => {
    for (const o of optionSets) {
      for (let attempt = 0; attempt <= 20; attempt++) {
        const ceiling = backoffCeiling(attempt, o);
        for (const r of randoms) {
          const d = backoffDelay(attempt, o, r);
          assert.ok(Number.isInteger(d), `${JSON.stringify(o)} attempt ${attempt} r ${r}: ${d} is whole ms`);
          assert.ok(d >= 0 && d < ceiling, `${JSON.stringify(o)} attempt ${attempt} r ${r}: 0 ≤ ${d} < ${ceiling}`);
        }
      }
    }
  });

  test('R22: ceilings start at initialDelay, grow by the multiplier per attempt and stop at maxDelay', () => {
    const o = { initialDelay: 100, maxDelay: 10_000, multiplier: 2 };
    const ceilings = Array.from({ length: 10 }, (_, k) => backoffCeiling(k, o));
    assert.deepEqual(ceilings, [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000], 'doubling, then the cap');
    assert.deepEqual(
      Array.from({ length: 12 }, (_, k) => backoffCeiling(k, defaults)),
      [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000, 30_000, 30_000, 30_000],
      'the client defaults',
    );
    for (const set of optionSets) {
      for (let k = 0; k <= 40; k++) {
        const c = backoffCeiling(k, set);
        assert.ok(Math.abs(c - ceilingOf(k, set)) <= 1e-9 * c, `${JSON.stringify(set)} attempt ${k}: ${c} = min(max, init × m^k)`);
        assert.ok(c >= backoffCeiling(Math.max(0, k - 1), set), 'never shrinks');
        assert.ok(c <= set.maxDelay, 'capped');
      }
    }
    assert.deepEqual([0, 1, 5, 50].map((k) => backoffCeiling(k, { initialDelay: 7, maxDelay: 100, multiplier: 1 })), [7, 7, 7, 7], 'multiplier 1: constant');
  });

  test('R22: random 0 → delay 0 (full jitter: an immediate retry is possible)', () => {
    for (const o of optionSets) for (let k = 0; k <= 20; k++) assert.equal(backoffDelay(k, o, 0), 0);
  });

  test('R22: random just under 1 → just under the ceiling', () => {
    for (const o of optionSets) {
      for (let k = 0; k <= 20; k++) {
        const ceiling = backoffCeiling(k, o);
        const d = backoffDelay(k, o, JUST_UNDER_ONE);
        assert.equal(d, Math.ceil(ceiling) - 1, `${JSON.stringify(o)} attempt ${k}: ceiling ${ceiling}`);
      }
    }
    assert.equal(backoffDelay(3, { initialDelay: 100, maxDelay: 10_000, multiplier: 2 }, 0.999999), 799);
  });

  test('R22: delay = floor(r × ceiling) — spot values', () => {
    const o = { initialDelay: 100, maxDelay: 10_000, multiplier: 2 };
    assert.equal(backoffDelay(0, o, 0.5), 50);
    assert.equal(backoffDelay(1, o, 0.5), 100);
    assert.equal(backoffDelay(2, o, 0.25), 100);
    assert.equal(backoffDelay(9, o, 0.5), 5_000, 'capped ceiling');
    assert.equal(backoffDelay(2, { initialDelay: 250, maxDelay: 3_000, multiplier: 1.5 }, 0.5), 281, 'floor(0.5 × 562.5)');
  });

  test('R22: random below 0 is clamped to 0', () => {
    for (const r of [-0.5, -1, -Infinity, -Number.MIN_VALUE]) assert.equal(backoffDelay(4, defaults, r), 0, `r ${r}`);
  });

  test(
    'R22: random ≥ 1 is clamped below the ceiling',
    {},
    () => {
      for (const r of [1, 1.5, 2, Infinity]) {
        const d = backoffDelay(2, defaults, r);
        assert.ok(d >= 0 && d < backoffCeiling(2, defaults), `r ${r}: delay ${d} < ceiling ${backoffCeiling(2, defaults)}`);
      }
    },
  );

  test(
    'R22: a NaN random yields a valid delay, not NaN',
    {},
    () => {
      const d = backoffDelay(2, defaults, NaN);
      assert.ok(Number.isInteger(d) && d >= 0 && d < backoffCeiling(2, defaults), `delay ${d}`);
    },
  );

  test('R22: big attempt numbers stay at the cap, finite, and return at once (no overflow, no long loop)', () => {
    for (const attempt of [10_000, 1e9, Number.MAX_SAFE_INTEGER, Infinity]) {
      assert.equal(backoffCeiling(attempt, defaults), defaults.maxDelay, `attempt ${attempt}`);
      const d = backoffDelay(attempt, defaults, JUST_UNDER_ONE);
      assert.equal(d, defaults.maxDelay - 1);
    }
    // A cap so large the growth overflows double precision first: still finite.
    const huge = { initialDelay: 100, maxDelay: Number.MAX_VALUE, multiplier: 2 };
    assert.equal(backoffCeiling(10_000, huge), Number.MAX_VALUE);
    assert.ok(Number.isFinite(backoffDelay(10_000, huge, 0.5)));
    // The loop stops once capped: 10,000 calls at attempt 10,000 take a handful of steps each.
    // CPU time, not wall time: what the loop costs, whatever else the machine runs.
    const before = process.cpuUsage();
    for (let i = 0; i < 10_000; i++) backoffDelay(10_000, defaults, 0.5);
    const used = process.cpuUsage(before);
    const ms = (used.user + used.system) / 1000;
    assert.ok(ms < 500, `10,000 delays at attempt 10,000 took ${ms.toFixed(1)} ms of CPU`);
    // multiplier 1 never reaches a cap above initialDelay, so the loop runs `attempt` times: still fine at 10,000.
    assert.equal(backoffCeiling(10_000, { initialDelay: 7, maxDelay: 100, multiplier: 1 }), 7);
  });

  test('R22: with Math.random, the mean delay of attempt k is about ceiling/2 and spans the whole range (10,000 samples)', () => {
    const N = 10_000;
    for (const k of [0, 1, 3, 6, 10]) {
      const ceiling = backoffCeiling(k, defaults);
      let sum = 0;
      let low = 0;
      let high = 0;
      for (let i = 0; i < N; i++) {
        const d = backoffDelay(k, defaults, Math.random());
        assert.ok(d >= 0 && d < ceiling);
        sum += d;
        if (d < ceiling / 4) low += 1;
        if (d >= (3 * ceiling) / 4) high += 1;
      }
      const mean = sum / N;
      // Uniform on [0, c): mean c/2, standard error c/√(12N) ≈ 0.003c; ±5% of c is >15 standard errors.
      assert.ok(Math.abs(mean - ceiling / 2) < 0.05 * ceiling, `attempt ${k}: mean ${mean.toFixed(1)} vs ceiling/2 ${ceiling / 2}`);
      // Full jitter, not "equal jitter": each quarter of the range gets about a quarter of the samples.
      assert.ok(low > 0.2 * N && high > 0.2 * N, `attempt ${k}: ${low} below c/4, ${high} above 3c/4`);
    }
  });
});

// ---------------------------------------------------------------------------
// The reset, shown through the client machine (with the real connection machine as its child)

describe('backoff reset through the client machine (R22)', () => {
  test('R22: after a connection stayed up for stableAfter, the next delay ceiling is back to initialDelay', () => {
    const backoff: BackoffOptions = { initialDelay: 100, maxDelay: 10_000, multiplier: 2, maxAttempts: 0, stableAfter: 5_000 };
    const clock = new SimulatedClock();
    /** The sendBack of the dialer of the attempt in progress. */
    const dial: { sendBack: ((event: ClientEvent) => void) | null } = { sendBack: null };
    const machine = clientMachine.provide({
      actors: {
        dialer: fromCallback<{ type: 'dialer.noop' }, DialerInput>(({ sendBack }) => {
          dial.sendBack = sendBack;
          return () => {
            dial.sendBack = null;
          };
        }),
        connection: connectionMachine.provide({
          actors: {
            reader: fromCallback<ReaderCommand, ActorInput>(() => undefined),
            writer: fromCallback<WriterCommand, ActorInput>(() => undefined),
          },
        }),
      },
    });
    const client = createActor(machine, {
      clock,
      input: {
        id: 'reset',
        // No heartbeat: nothing but the test ends a connection.
        timing: { pingInterval: 0, pongTimeout: 500, writeTimeout: 700, closeTimeout: 300, connectTimeout: 2_000, resumeTimeout: 2_500 },
        backoff,
        // delay = ceiling - 1: the ceiling shows in every delay.
        random: () => 1 - 2 ** -20,
        transport: null,
      },
    }).start();

    const ceilings: number[] = [];
    const nextCeiling = (): void => {
      const { delayMs } = client.getSnapshot().context;
      ceilings.push(delayMs + 1);
      clock.increment(delayMs);
      assert.equal(client.getSnapshot().value, 'connecting');
    };
    const connectFor = (ms: number): void => {
      assert.ok(dial.sendBack, 'a dialer runs');
      dial.sendBack({ type: 'dial.ready', io: {} });
      const child = client.getSnapshot().children.connection as AnyActorRef;
      child.send({ type: 'socket.open' });
      clock.increment(ms);
      child.send({ type: 'socket.closed', code: 1006, reason: '' }); // the network drops it
      assert.equal(client.getSnapshot().value, 'waiting');
    };

    dial.sendBack!({ type: 'dial.failed', message: 'refused' });
    nextCeiling();
    dial.sendBack!({ type: 'dial.failed', message: 'refused' });
    nextCeiling();
    connectFor(backoff.stableAfter - 1); // not stable: counts as one more failed attempt
    nextCeiling();
    assert.deepEqual(ceilings, [100, 200, 400], 'growing while nothing stays up');
    connectFor(backoff.stableAfter); // stable: the count resets
    nextCeiling();
    connectFor(10);
    nextCeiling();
    assert.deepEqual(ceilings, [100, 200, 400, 100, 200], 'R22: back to initialDelay, then growing again');
    client.stop();
  });
});
