// Hostile frames after a successful handshake (R15, R2): every protocol
// violation ends that one connection with the right close code, recorded as a
// local, unexpected, protocol-error closure, and the server keeps serving.
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { Closure, Connection } from '../../src/index.ts';
import { pace } from '../helpers/pace.ts';
import { openClient, startSupervisor, waitFor } from '../helpers/server.ts';
import { closePayload, encodeFrame, Opcode, rawConnect, type RawWs } from '../helpers/raw-ws.ts';

const T = { timeout: pace.scaled(10_000) };
const MAX_PAYLOAD = 1024;

async function serve(t: TestContext) {
  const srv = await startSupervisor({
    maxPayload: MAX_PAYLOAD,
    // Short, so a peer that never finishes the handshake cannot stretch a test.
    timing: { closeTimeout: 1000 },
    onMessage: (c, data, isBinary) => void c.send(data, isBinary),
  });
  const raws: RawWs[] = [];
  t.after(async () => {
    for (const raw of raws) raw.destroy();
    await srv.close();
  });
  const sup = srv.supervisor;
  /** Opens a raw client and the server-side connection + its closure. */
  const connect = async () => {
    const opened = new Promise<Connection>((resolve) => sup.once('connection', (c) => resolve(c)));
    const raw = await rawConnect(srv.port);
    raws.push(raw);
    const connection = await opened;
    return { raw, connection };
  };
  /** Echo round trip with a fresh `ws` client: the server still serves (R2: one bad peer ends only itself). */
  const assertServes = async (): Promise<void> => {
    const ws = await openClient(srv.url);
    try {
      const echoed = new Promise<string>((resolve) => ws.once('message', (d) => resolve(d.toString())));
      ws.send('hello after the storm');
      assert.equal(await echoed, 'hello after the storm');
    } finally {
      ws.terminate();
    }
  };
  return { srv, sup, connect, assertServes };
}

/**
 * Sends `bytes` on a fresh raw connection and checks the whole outcome: the
 * close frame the server sent carries `code`; the supervisor's closure is
 * (code, protocol-error, local, unexpected); the server still serves.
 */
async function expectProtocolClose(t: TestContext, code: number, ...frames: Buffer[]): Promise<Closure> {
  const { sup, connect, assertServes } = await serve(t);
  const { raw, connection } = await connect();
  const closeEvents: Closure[] = [];
  sup.on('close', (c, closure) => {
    if (c === connection) closeEvents.push(closure);
  });
  for (const f of frames) raw.sendRaw(f);
  const frame = await raw.closeFrame();
  assert.ok(frame, 'the server sent a close frame before closing TCP');
  assert.equal(frame.code, code, `close frame code (reason: ${frame.reason})`);
  raw.answerClose(frame.code);
  const closure = await connection.closed;
  assert.equal(closure.code, code);
  assert.equal(closure.cause, 'protocol-error');
  assert.equal(closure.initiator, 'local');
  assert.equal(closure.expected, false);
  await waitFor(() => closeEvents.length === 1 && sup.size === 0, 2000, 'the close event and registry cleanup');
  assert.deepEqual(closeEvents[0], closure, "the supervisor's close event carries the same closure");
  await assertServes();
  return closure;
}

describe('R15 bad input after the handshake', () => {
  test('R15 a text frame with invalid UTF-8 closes 1007', T, async (t) => {
    await expectProtocolClose(t, 1007, encodeFrame({ opcode: Opcode.TEXT, payload: Buffer.from([0x68, 0x69, 0xff, 0xfe]) }));
  });

  test('R15 invalid UTF-8 split across fragments closes 1007', T, async (t) => {
    // 0xe2 0x82 0xac is "€"; cut after two bytes and continue with an ASCII byte.
    await expectProtocolClose(
      t,
      1007,
      encodeFrame({ opcode: Opcode.TEXT, fin: false, payload: Buffer.from([0x61, 0xe2, 0x82]) }),
      encodeFrame({ opcode: Opcode.CONTINUATION, payload: Buffer.from([0x61]) }),
    );
  });

  test('R15/R21 a single frame whose length header exceeds maxPayload closes 1009 (before the payload arrives)', T, async (t) => {
    // Lying length: 1 MB declared, 16 bytes sent. The header alone must be enough.
    await expectProtocolClose(t, 1009, encodeFrame({ opcode: Opcode.BINARY, payload: Buffer.alloc(16), declaredLength: 1_000_000 }));
  });

  test('R15/R21 a single frame with a real payload one byte over maxPayload closes 1009', T, async (t) => {
    await expectProtocolClose(t, 1009, encodeFrame({ opcode: Opcode.BINARY, payload: Buffer.alloc(MAX_PAYLOAD + 1) }));
  });

  test('R15/R21 fragments whose total exceeds maxPayload close 1009', T, async (t) => {
    const part = Buffer.alloc(600, 0x61); // each fragment is fine, the message is not
    await expectProtocolClose(
      t,
      1009,
      encodeFrame({ opcode: Opcode.TEXT, fin: false, payload: part }),
      encodeFrame({ opcode: Opcode.CONTINUATION, fin: false, payload: part }),
      encodeFrame({ opcode: Opcode.CONTINUATION, payload: part }),
    );
  });

  test('R15 an unmasked client frame closes 1002', T, async (t) => {
    await expectProtocolClose(t, 1002, encodeFrame({ opcode: Opcode.TEXT, payload: 'hello', mask: false }));
  });

  test('R15 a reserved data opcode (0x3) closes 1002', T, async (t) => {
    await expectProtocolClose(t, 1002, encodeFrame({ opcode: 0x3, payload: 'x' }));
  });

  test('R15 a reserved control opcode (0xB) closes 1002', T, async (t) => {
    await expectProtocolClose(t, 1002, encodeFrame({ opcode: 0xb }));
  });

  test('R15 RSV1 set without a negotiated extension closes 1002', T, async (t) => {
    await expectProtocolClose(t, 1002, encodeFrame({ opcode: Opcode.TEXT, rsv: 0b100, payload: 'x' }));
  });

  test('R15 RSV2/RSV3 set closes 1002', T, async (t) => {
    await expectProtocolClose(t, 1002, encodeFrame({ opcode: Opcode.TEXT, rsv: 0b011, payload: 'x' }));
  });

  test('R15 a control frame with a payload over 125 bytes closes 1002', T, async (t) => {
    await expectProtocolClose(t, 1002, encodeFrame({ opcode: Opcode.PING, payload: Buffer.alloc(126) }));
  });

  test('R15 a fragmented ping (FIN clear on a control frame) closes 1002', T, async (t) => {
    await expectProtocolClose(t, 1002, encodeFrame({ opcode: Opcode.PING, fin: false, payload: 'p' }));
  });

  test('R15 a continuation frame with no message to continue closes 1002', T, async (t) => {
    await expectProtocolClose(t, 1002, encodeFrame({ opcode: Opcode.CONTINUATION, payload: 'orphan' }));
  });

  test('R15 a close frame with reserved code 1005 closes 1002', T, async (t) => {
    await expectProtocolClose(t, 1002, encodeFrame({ opcode: Opcode.CLOSE, payload: closePayload(1005) }));
  });

  test('R15 a close frame with out-of-range code 999 closes 1002', T, async (t) => {
    await expectProtocolClose(t, 1002, encodeFrame({ opcode: Opcode.CLOSE, payload: closePayload(999) }));
  });

  test('R15 a close frame with a one-byte payload closes 1002', T, async (t) => {
    await expectProtocolClose(t, 1002, encodeFrame({ opcode: Opcode.CLOSE, payload: Buffer.from([0x03]) }));
  });

  test('R15 a close frame whose reason is invalid UTF-8 closes 1007', T, async (t) => {
    await expectProtocolClose(
      t,
      1007,
      encodeFrame({ opcode: Opcode.CLOSE, payload: Buffer.concat([closePayload(1000), Buffer.from([0xff])]) }),
    );
  });

  test('R15 a bad frame after good traffic: the good message is answered, then 1002', T, async (t) => {
    const { connect, assertServes } = await serve(t);
    const { raw, connection } = await connect();
    raw.send({ opcode: Opcode.TEXT, payload: 'fine' });
    const echo = await raw.waitForFrame((f) => f.opcode === Opcode.TEXT);
    assert.equal(echo?.payload.toString(), 'fine');
    raw.send({ opcode: Opcode.TEXT, payload: 'bad', mask: false });
    const frame = await raw.closeFrame();
    assert.equal(frame?.code, 1002);
    raw.answerClose(1002);
    const closure = await connection.closed;
    assert.equal(closure.cause, 'protocol-error');
    assert.equal(connection.stats.messagesIn, 1);
    await assertServes();
  });

  test('R15/R2 pure garbage bytes after the handshake end that connection; the server keeps serving', T, async (t) => {
    const { sup, connect, assertServes } = await serve(t);
    // Each case: a fixed byte pattern that is not a valid first frame.
    const garbage = [
      Buffer.from('GET / HTTP/1.1\r\n\r\n'), // 'G' = 0x47: RSV bits set
      Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
      Buffer.from([0x00, 0x00, 0x00, 0x00]), // orphan, unmasked continuation
      Buffer.from('8f3a1c9e0b7d24e6a5f1c3b9', 'hex'),
    ];
    for (const bytes of garbage) {
      const { raw, connection } = await connect();
      raw.sendRaw(bytes);
      const frame = await raw.closeFrame();
      // Either a close frame (1002) or just the end of the connection is acceptable.
      if (frame) assert.equal(frame.code, 1002, `close code for ${bytes.toString('hex')}`);
      raw.answerClose(frame?.code ?? null);
      const closure = await connection.closed;
      assert.equal(closure.expected, false);
      assert.ok(
        closure.cause === 'protocol-error' ? closure.code === 1002 : closure.code === 1006,
        `closure for ${bytes.toString('hex')}: ${JSON.stringify(closure)}`,
      );
    }
    await waitFor(() => sup.size === 0, 2000, 'registry cleanup');
    await assertServes();
  });

  test('R2/R17 an abrupt TCP reset: closure 1006, remote, socket-error; the server keeps serving', T, async (t) => {
    const { sup, connect, assertServes } = await serve(t);
    const { raw, connection } = await connect();
    raw.send({ opcode: Opcode.TEXT, payload: 'before the cut' });
    await raw.waitForFrame((f) => f.opcode === Opcode.TEXT);
    raw.reset();
    const closure = await connection.closed;
    assert.equal(closure.code, 1006);
    assert.equal(closure.initiator, 'remote');
    assert.equal(closure.cause, 'socket-error');
    assert.equal(closure.expected, false);
    assert.equal(closure.receivedCode, 1006);
    // R2: nothing is written to the dead socket afterwards; send is refused, not queued.
    assert.equal(connection.send('into the void'), false);
    await waitFor(() => sup.size === 0, 2000, 'registry cleanup');
    await assertServes();
  });
});
