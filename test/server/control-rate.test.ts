// R21: control frames count against the peer's message rate like any other
// frame. A peer streaming pings (each one costs a parse and an automatic pong)
// or unsolicited pongs under --max-message-rate is closed 1008, as a peer
// streaming messages is. Real loopback sockets, numbers scaled down (the issue
// saw 50–99k pings/s under a rate of 10).
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { Connection } from '../../src/index.ts';
import { pace } from '../helpers/pace.ts';
import { delay, startSupervisor } from '../helpers/server.ts';
import { Opcode, rawConnect, type RawWs } from '../helpers/raw-ws.ts';

const RATE = 10;

async function serve(t: TestContext) {
  const srv = await startSupervisor({ maxMessageRate: RATE, timing: { closeTimeout: 300 }, onMessage: (c, data, isBinary) => void c.send(data, isBinary) });
  const raws: RawWs[] = [];
  t.after(async () => {
    for (const raw of raws) raw.destroy();
    await srv.close();
  });
  const raw = async () => {
    const opened = new Promise<Connection>((resolve) => srv.supervisor.once('connection', (c) => resolve(c)));
    const ws = await rawConnect(srv.port);
    raws.push(ws);
    return { raw: ws, connection: await opened };
  };
  return { srv, raw };
}

describe('R21 control frames count against maxMessageRate', () => {
  for (const [name, opcode] of [['pings', Opcode.PING], ['unsolicited pongs', Opcode.PONG]] as const) {
    test(`a stream of ${name} over the rate is closed 1008 with the rate's reason`, { timeout: pace.scaled(10_000) }, async (t) => {
      const { raw } = await serve(t);
      const peer = await raw();
      // 20 × the burst, in one write: far over RATE per second.
      const frames = Array.from({ length: RATE * 20 }, (_, i) => ({ opcode, payload: `p${i}` }));
      for (const f of frames) peer.raw.send(f);
      const frame = await peer.raw.closeFrame(5000).catch(() => null);
      assert.deepEqual(frame, { code: 1008, reason: `message rate over ${RATE}/s` }, `a close frame 1008 after ${frames.length} ${name}`);
      const closure = await peer.connection.closed;
      assert.equal(closure.cause, 'rate-limit');
      assert.equal(closure.code, 1008);
    });
  }

  test('pings and messages share one budget; a peer within the rate is not cut', { timeout: pace.scaled(10_000) }, async (t) => {
    const { raw } = await serve(t);
    // Within the rate: a burst of RATE / 2 pings and RATE / 2 - 1 messages, then silence.
    const calm = await raw();
    for (let i = 0; i < RATE / 2; i++) calm.raw.send({ opcode: Opcode.PING, payload: `c${i}` });
    for (let i = 0; i < RATE / 2 - 1; i++) calm.raw.send({ opcode: Opcode.TEXT, payload: `m${i}` });
    await calm.raw.waitForFrame((f) => f.opcode === Opcode.TEXT && f.payload.toString() === `m${RATE / 2 - 2}`);
    await delay(pace.scaled(100)); // time for a (wrong) close to happen
    assert.notEqual(calm.connection.stateName, 'closed', 'within the budget');
    assert.equal(calm.raw.frames.filter((f) => f.opcode === Opcode.CLOSE).length, 0);

    // Over it only when counted together: RATE pings + RATE messages.
    const mixed = await raw();
    for (let i = 0; i < RATE; i++) mixed.raw.send({ opcode: Opcode.PING, payload: `x${i}` });
    for (let i = 0; i < RATE; i++) mixed.raw.send({ opcode: Opcode.TEXT, payload: `y${i}` });
    const frame = await mixed.raw.closeFrame(5000).catch(() => null);
    assert.deepEqual(frame, { code: 1008, reason: `message rate over ${RATE}/s` });
  });
});
