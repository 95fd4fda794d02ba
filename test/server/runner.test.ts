/**
 * The MachineRunner (src/server/runner.ts) as a host: what the model-based tests in
 * test/machines/connection.machine.test.ts do not show — that connections
 * share snapshots and remembered steps (the point of it: memory and CPU per
 * connection), that this sharing stays bounded over many heartbeats, that
 * inspectors see it as an actor, and that it fails loudly and cleanly.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setup, type InspectionEvent } from 'xstate';
import {
  connectionMachine,
  PAYLOAD_FREE_EVENTS,
  type ConnectionInput,
  type ConnectionTiming,
} from '../../machines/connection.machine.ts';
import { MachineRunner, STEPS_PER_SNAPSHOT, type HostedActor } from '../../src/server/runner.ts';
import { TimerTableClock } from '../helpers/model-coverage.ts';
import { timerWheel } from '../../src/server/timer-wheel.ts';

const timing: ConnectionTiming = { pingInterval: 1000, pongTimeout: 500, writeTimeout: 700, closeTimeout: 300 };

interface Fake {
  runner: MachineRunner<typeof connectionMachine>;
  commands: string[];
  stopped: string[];
  done: unknown[];
  errors: unknown[];
}

function fake(input: ConnectionInput, clock: TimerTableClock, options: { inspect?: (e: InspectionEvent) => void; throwOn?: string } = {}): Fake {
  const f: Omit<Fake, 'runner'> = { commands: [], stopped: [], done: [], errors: [] };
  const runner = new MachineRunner(
    { machine: connectionMachine, input, payloadFree: PAYLOAD_FREE_EVENTS, clock, inspect: options.inspect },
    {
      actorId: 'connection:test',
      spawn: (id) =>
        ({
          command: (c: { type: string }) => {
            if (c.type === options.throwOn) throw new Error(`${id} failed on ${c.type}`);
            f.commands.push(`${id}:${c.type}`);
          },
          stop: () => f.stopped.push(id),
        }) as HostedActor<never>,
      done: (output) => f.done.push(output),
      failed: (err) => f.errors.push(err),
    },
  );
  return { runner, ...f };
}

const input = (): ConnectionInput => ({ id: '', timing, io: null });
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('MachineRunner: shared snapshots (R3: nothing per connection the machine does not need)', () => {
  test('connections of one input point to one snapshot per state, across any number of heartbeats', () => {
    const clock = new TimerTableClock();
    const shared = input();
    const runs = Array.from({ length: 50 }, () => fake(shared, clock));
    for (const r of runs) {
      r.runner.start();
      r.runner.send({ type: 'socket.open' });
    }
    const idle = runs[0]!.runner.getSnapshot();
    assert.ok(runs.every((r) => r.runner.getSnapshot() === idle), 'every open connection shares the idle snapshot');
    const seen = new Set<object>([idle]);
    for (let cycle = 0; cycle < 200; cycle++) {
      clock.increment(timing.pingInterval); // all ping
      for (const r of runs) seen.add(r.runner.getSnapshot());
      for (const r of runs) r.runner.send({ type: 'socket.pong', rttMs: cycle });
      for (const r of runs) seen.add(r.runner.getSnapshot());
    }
    assert.equal(seen.size, 2, 'idle and pinging: two snapshot objects for 50 connections × 200 heartbeats');
    assert.equal(runs[7]!.commands.filter((c) => c === 'writer:writer.ping').length, 200, 'R4: one ping per interval each');
    assert.deepEqual(clock.pendingDurations(), Array(50).fill(timing.pingInterval), 'one timer per connection');
  });

  test('a close gives that connection its own snapshot; the others keep theirs', () => {
    const clock = new TimerTableClock();
    const shared = input();
    const [a, b] = [fake(shared, clock), fake(shared, clock)];
    for (const r of [a, b]) r.runner.start().send({ type: 'socket.open' });
    a.runner.send({ type: 'close', code: 4000, reason: 'mine' });
    assert.deepEqual(a.runner.getSnapshot().value, { closing: 'handshake' });
    assert.deepEqual(a.runner.getSnapshot().context.closeRequest, { code: 4000, reason: 'mine', cause: 'normal' });
    assert.equal(b.runner.getSnapshot().context.closeRequest, null);
    assert.deepEqual(b.runner.getSnapshot().value, { open: { heartbeat: 'idle', write: 'flowing' } });
  });

  test('the same ending from the same state is one shared step; each run still gets the output of its own event', async () => {
    const clock = new TimerTableClock();
    const shared = input();
    const runs = Array.from({ length: 150 }, () => fake(shared, clock));
    for (const r of runs) r.runner.start().send({ type: 'socket.open' });
    // Two common endings, then more distinct peer reasons than the runner remembers per snapshot.
    runs.forEach((r, i) => {
      const reason = i < 50 ? 'bye' : i < 100 ? 'going away' : `reason ${i}`;
      r.runner.send({ type: 'socket.closed', code: i < 50 ? 1000 : 1001, reason });
    });
    await tick();
    assert.equal(runs[0]!.runner.getSnapshot(), runs[49]!.runner.getSnapshot(), 'one shared closed snapshot for one ending');
    assert.notEqual(runs[0]!.runner.getSnapshot(), runs[50]!.runner.getSnapshot());
    runs.forEach((r, i) => {
      const reason = i < 50 ? 'bye' : i < 100 ? 'going away' : `reason ${i}`;
      assert.deepEqual(r.done, [{ code: i < 50 ? 1000 : 1001, reason, initiator: 'remote', cause: 'peer', expected: true, receivedCode: i < 50 ? 1000 : 1001 }], `run ${i}`);
      assert.deepEqual(r.stopped.sort(), ['reader', 'writer']);
    });
    assert.notEqual(runs[0]!.done[0], runs[1]!.done[0], 'each run gets its own output object');
  });

  test('reaching closed stops both actors, clears every timer and reports the output once', async () => {
    const clock = new TimerTableClock();
    const r = fake(input(), clock);
    r.runner.start().send({ type: 'socket.open' });
    r.runner.send({ type: 'write.blocked' });
    assert.equal(clock.pending().length, 2, 'ping interval and write deadline armed');
    r.runner.send({ type: 'socket.closed', code: 1000, reason: 'bye' });
    r.runner.send({ type: 'socket.closed', code: 1001, reason: 'late' });
    await tick();
    assert.deepEqual(r.stopped.sort(), ['reader', 'writer']);
    assert.deepEqual(clock.pending(), [], 'R3: no timer survives');
    assert.equal(r.done.length, 1);
    assert.deepEqual(r.done[0], { code: 1000, reason: 'bye', initiator: 'remote', cause: 'peer', expected: true, receivedCode: 1000 });
  });
  test(`at most STEPS_PER_SNAPSHOT (${STEPS_PER_SNAPSHOT}) steps on events with a payload are remembered per snapshot: a peer choosing its close reasons cannot grow them`, async () => {
    const clock = new TimerTableClock();
    const shared = input();
    const closedWith = (reason: string): object => {
      const r = fake(shared, clock);
      r.runner.start().send({ type: 'socket.open' });
      r.runner.send({ type: 'socket.closed', code: 1000, reason });
      return r.runner.getSnapshot();
    };
    // A remembered step hands every run that takes it the same next snapshot; a step computed afresh, a new one.
    const first = closedWith('reason 0');
    assert.equal(closedWith('reason 0'), first, 'a remembered step is shared');
    for (let i = 1; i < STEPS_PER_SNAPSHOT; i++) closedWith(`reason ${i}`);
    assert.equal(closedWith(`reason ${STEPS_PER_SNAPSHOT - 1}`), closedWith(`reason ${STEPS_PER_SNAPSHOT - 1}`), 'the last that fits is remembered');
    const beyond = closedWith('one reason too many');
    assert.notEqual(closedWith('one reason too many'), beyond, 'past the bound, the step is computed per run and not kept');
    assert.equal(closedWith('reason 0'), first, 'the remembered ones stay');
    await tick();
  });
});

describe('MachineRunner: stop()', () => {
  test('stop() clears every armed timer and stops both actors, with no output; nothing runs afterwards (R3)', async () => {
    const clock = new TimerTableClock();
    const r = fake(input(), clock);
    r.runner.start().send({ type: 'socket.open' });
    r.runner.send({ type: 'write.blocked' });
    assert.deepEqual(clock.pendingDurations(), [timing.writeTimeout, timing.pingInterval], 'ping interval and write deadline armed');
    r.runner.stop();
    assert.deepEqual(clock.pending(), [], 'R3: stop() leaves no timer armed');
    assert.deepEqual(r.stopped.sort(), ['reader', 'writer']);
    const commands = r.commands.length;
    clock.increment(10 * (timing.pingInterval + timing.writeTimeout));
    r.runner.send({ type: 'close', code: 1000 });
    await tick();
    assert.equal(r.commands.length, commands, 'no ping, no close frame after stop()');
    assert.deepEqual(r.done, [], 'stopped, not finished: no output');
    assert.deepEqual(r.errors, []);
    r.runner.stop();
    assert.deepEqual(r.stopped.sort(), ['reader', 'writer'], 'a second stop() is a no-op');
  });

  test('stop() in the middle of a close handshake clears the close timeout', () => {
    const clock = new TimerTableClock();
    const r = fake(input(), clock);
    r.runner.start().send({ type: 'socket.open' });
    r.runner.send({ type: 'close', code: 1000, reason: 'bye' });
    assert.deepEqual(clock.pendingDurations(), [timing.closeTimeout]);
    r.runner.stop();
    assert.deepEqual(clock.pending(), [], 'R3: no close timeout survives stop()');
  });
});

describe('MachineRunner: actor semantics', () => {
  test('an event an actor reports during a step is processed after that step, in order', () => {
    const clock = new TimerTableClock();
    const order: string[] = [];
    let runner!: MachineRunner<typeof connectionMachine>;
    runner = new MachineRunner(
      { machine: connectionMachine, input: input(), payloadFree: PAYLOAD_FREE_EVENTS, clock },
      {
        actorId: 'connection:reentrant',
        spawn: (id, parent) =>
          ({
            command: (c: { type: string }) => {
              order.push(`${id}:${c.type} in ${JSON.stringify(runner.getSnapshot().value)}`);
              // The writer's ping makes the peer's pong arrive at once (as a synchronous report).
              if (c.type === 'writer.ping') parent.report({ type: 'socket.pong', rttMs: 1 } as { type: string });
            },
            stop: () => undefined,
          }) as HostedActor<never>,
        done: () => undefined,
        failed: (err) => {
          throw err;
        },
      },
    );
    runner.start().send({ type: 'socket.open' });
    clock.increment(timing.pingInterval);
    assert.deepEqual(order, [
      'writer:writer.ping in {"open":{"heartbeat":"pinging","write":"flowing"}}',
      'reader:reader.expectLiveness in {"open":{"heartbeat":"pinging","write":"flowing"}}',
    ], 'both entry actions ran before the pong was processed');
    assert.deepEqual(runner.getSnapshot().value, { open: { heartbeat: 'idle', write: 'flowing' } });
  });

  test('inspectors see an actor: @xstate.actor, then an @xstate.event and @xstate.snapshot per event, with the machine definition', () => {
    const events: InspectionEvent[] = [];
    const r = fake(input(), new TimerTableClock(), { inspect: (e) => events.push(e) });
    r.runner.start().send({ type: 'socket.open' });
    assert.deepEqual(events.map((e) => e.type), ['@xstate.actor', '@xstate.snapshot', '@xstate.event', '@xstate.snapshot']);
    assert.ok(events.every((e) => e.actorRef === (r.runner as unknown)));
    assert.equal((r.runner.logic as { config: { id: string } }).config.id, 'connection');
    assert.match(r.runner.sessionId, /^runner:\d+$/);
    assert.equal(r.runner.id, 'connection:test');
    const last = events.at(-1) as Extract<InspectionEvent, { type: '@xstate.snapshot' }>;
    assert.deepEqual((last.snapshot as unknown as { value: unknown }).value, { open: { heartbeat: 'idle', write: 'flowing' } });
  });

  test('subscribe: next per step, complete at the end, unsubscribe stops it', async () => {
    const r = fake(input(), new TimerTableClock());
    const seen: unknown[] = [];
    let completed = 0;
    const sub = r.runner.subscribe({ next: (s) => seen.push(s.value), complete: () => completed++ });
    r.runner.start().send({ type: 'socket.open' });
    r.runner.send({ type: 'close', code: 1000 });
    sub.unsubscribe();
    r.runner.send({ type: 'socket.closed', code: 1000, reason: '' });
    await tick();
    assert.deepEqual(seen, ['connecting', { open: { heartbeat: 'idle', write: 'flowing' } }, { closing: 'handshake' }]);
    assert.equal(completed, 0, 'unsubscribed before the end');
  });

  test('an actor that throws ends the run: onError once, every actor stopped, no timer left, later events ignored', () => {
    const clock = new TimerTableClock();
    const r = fake(input(), clock, { throwOn: 'writer.ping' });
    r.runner.start().send({ type: 'socket.open' });
    clock.increment(timing.pingInterval);
    assert.equal(r.errors.length, 1);
    assert.match(String(r.errors[0]), /writer failed on writer.ping/);
    assert.deepEqual(r.stopped.sort(), ['reader', 'writer']);
    assert.deepEqual(clock.pending(), []);
    r.runner.send({ type: 'close', code: 1000 });
    assert.equal(r.errors.length, 1);
  });

  test('a machine with a history state is refused up front (interning could not see its history)', () => {
    const machine = setup({}).createMachine({ id: 'h', initial: 'a', states: { a: { initial: 'x', states: { x: {}, hist: { type: 'history' } } } } });
    const host = { actorId: 'h', spawn: () => ({ command: () => undefined, stop: () => undefined }), done: () => undefined, failed: () => undefined };
    assert.throws(() => new MachineRunner({ machine, input: {}, payloadFree: new Set() }, host), /history states are not supported \(h\.a\.hist\)/);
  });

  test('a machine with an action this host does not execute fails loudly instead of skipping it', () => {
    const machine = setup({}).createMachine({ id: 'm', initial: 'a', states: { a: { on: { go: { target: 'b', actions: () => undefined } } }, b: {} } });
    const errors: unknown[] = [];
    const runner = new MachineRunner(
      { machine, input: {}, payloadFree: new Set() },
      {
        actorId: 'm',
        spawn: () => ({ command: () => undefined, stop: () => undefined }),
        done: () => undefined,
        failed: (err) => errors.push(err),
      },
    );
    runner.start().send({ type: 'go' });
    assert.equal(errors.length, 1);
    assert.match(String(errors[0]), /not supported by this host/);
  });
});

describe('MachineRunner: real-clock delays', () => {
  /** A machine that arms `after` delays of the lengths it is told, and counts the ones that fire. */
  const delays = setup({ types: {} as { events: { type: 'arm' } | { type: 'disarm' } } }).createMachine({
    id: 'delays',
    initial: 'idle',
    states: {
      idle: { on: { arm: 'armed' } },
      armed: { after: { 40: 'short', 120: 'long' }, on: { disarm: 'idle' } },
      short: { after: { 120: 'long' }, on: { disarm: 'idle' } },
      long: { type: 'final' },
    },
  });
  const host = (done: Array<[number, number]>, i: number, t0: () => number) => ({
    actorId: `delays:${i}`,
    spawn: () => ({ command() {}, stop() {} }) as HostedActor<never>,
    done: () => done.push([i, performance.now() - t0()]),
    failed: (err: unknown) => assert.fail(String(err)),
  });

  test('delays fire no earlier than their length, in arming order; cancelled ones never fire; nothing is left armed', async () => {
    const done: Array<[number, number]> = [];
    const started: number[] = [];
    const sharedInput = {};
    const runs = Array.from({ length: 200 }, (_, i) => new MachineRunner({ machine: delays, input: sharedInput, payloadFree: new Set(['arm', 'disarm']) }, host(done, i, () => started[i]!)));
    for (const [i, r] of runs.entries()) {
      r.start();
      started[i] = performance.now();
      r.send({ type: 'arm' });
    }
    // Half are cancelled while in `short` or `armed` (their delays are dropped, never fired).
    await new Promise((r) => setTimeout(r, 60));
    for (let i = 0; i < runs.length; i += 2) runs[i]!.send({ type: 'disarm' });
    await new Promise((r) => setTimeout(r, 300));
    const finished = done.map(([i]) => i);
    assert.deepEqual(finished, runs.map((_, i) => i).filter((i) => i % 2 === 1), 'the odd runs finished, in the order they were armed');
    // `short` after 40 ms, then `long` 120 ms after that: no earlier than 160 ms from `arm`. The delays wait on the
    // timer wheel (src/server/timer-wheel.ts), which measures them with performance.now() and never fires one early
    // (Node's own timers count from the loop's cached whole-ms clock and could end 1 ms early per chained delay).
    for (const [, ms] of done) assert.ok(ms >= 160, `finished after ${ms.toFixed(1)} ms, before its 40 + 120 ms`);
    for (let i = 0; i < runs.length; i += 2) assert.equal(runs[i]!.getSnapshot().value, 'idle');
  });
});

test('MachineRunner: thousands of delays, two in three cancelled: the live ones fire once, none of the cancelled', async () => {
  const machine = setup({ types: {} as { events: { type: 'arm' } | { type: 'disarm' } } }).createMachine({
    initial: 'idle',
    states: { idle: { on: { arm: 'armed' } }, armed: { after: { 80: 'fired' }, on: { disarm: 'idle' } }, fired: { type: 'final' } },
  });
  const sharedInput = {};
  let finished = 0;
  const runs = Array.from({ length: 3000 }, (_, i) => new MachineRunner(
    { machine, input: sharedInput, payloadFree: new Set(['arm', 'disarm']) },
    { actorId: `d:${i}`, spawn: () => ({ command() {}, stop() {} }) as HostedActor<never>, done: () => void finished++, failed: (e) => assert.fail(String(e)) },
  ));
  for (const r of runs) r.start().send({ type: 'arm' });
  // Two in three cancel, then re-arm some.
  for (let i = 0; i < runs.length; i++) if (i % 3 !== 0) runs[i]!.send({ type: 'disarm' });
  for (let i = 1; i < runs.length; i += 3) runs[i]!.send({ type: 'arm' });
  await new Promise((r) => setTimeout(r, 400));
  assert.equal(finished, 2000, 'every run still armed fired once, none of the cancelled');
  for (let i = 2; i < runs.length; i += 3) assert.equal(runs[i]!.getSnapshot().value, 'idle');
});

test('MachineRunner: real-clock delays share the wheel\'s one timer; stopped runs keep none (a stopped run must not hold the process open)', () => {
  const machine = setup({ types: {} as { events: { type: 'arm' } } }).createMachine({
    initial: 'idle',
    states: { idle: { on: { arm: 'armed' } }, armed: { after: { 3_600_000: 'idle' } } },
  });
  const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const before = timers();
  const sharedInput = {};
  const runs = Array.from({ length: 10 }, (_, i) => new MachineRunner(
    { machine, input: sharedInput, payloadFree: new Set(['arm']) },
    { actorId: `h:${i}`, spawn: () => ({ command() {}, stop() {} }) as HostedActor<never>, done() {}, failed: (e) => assert.fail(String(e)) },
  ));
  for (const r of runs) r.start().send({ type: 'arm' });
  assert.equal(timers(), before + 1, 'one timer (the wheel\'s) for every armed delay');
  assert.equal(timerWheel.size, 10, 'ten delays armed on the wheel');
  for (const r of runs) r.stop();
  assert.equal(timerWheel.size, 0, 'R3: stop() leaves no delay on the wheel');
  assert.equal(timers(), before, 'no timer left once the runs stopped');
});
