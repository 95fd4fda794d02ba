/** The session protocol's frames (src/protocol/session.ts), docs/sessions.md "Frames on a session connection". */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  decodeBinaryData,
  decodeClientFrame,
  decodeServerFrame,
  decodeTextData,
  encodeAttached,
  encodeBinaryData,
  encodeClientAck,
  encodeDuplicate,
  encodeEnd,
  encodePing,
  encodePong,
  encodeOpen,
  encodeResume,
  encodeServerAck,
  encodeSessionError,
  encodeTextData,
  sessionRequested,
  type AttachedFrame,
} from '../../src/protocol/session.ts';
import { runInNewContext } from 'node:vm';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { newSessionId, newSessionToken } from '../../src/adapter/session-store.ts';

const ID = newSessionId();
const TOKEN = newSessionToken();

describe('the upgrade flag', () => {
  test('ws-session=1 asks for a session; its absence does not; any other value is an error naming it', () => {
    assert.deepEqual(sessionRequested('/server'), { ok: true, requested: false });
    assert.deepEqual(sessionRequested('/server?room=1'), { ok: true, requested: false });
    assert.deepEqual(sessionRequested('/server?ws-session=1'), { ok: true, requested: true });
    assert.deepEqual(sessionRequested('/server?a=b&ws-session=1&c'), { ok: true, requested: true });
    assert.deepEqual(sessionRequested('/server?ws-session=yes'), { ok: false, error: 'ws-session must be given once, as 1; got "yes"' });
    assert.deepEqual(sessionRequested('/server?ws-session=1&ws-session=1'), { ok: false, error: 'ws-session must be given once, as 1; got "1", "1"' });
    assert.deepEqual(sessionRequested('/server?ws-session'), { ok: false, error: 'ws-session must be given once, as 1; got ""' });
  });
});

describe('data frames', () => {
  test('text and binary round-trip, the payload byte for byte, whatever it holds', () => {
    for (const payload of ['', '{"requestID":1,"success":true,"someOtherThing":"x"}', '42:already a colon', '{not json', 'é😀']) {
      for (const n of [1, 9, 10, 12345, Number.MAX_SAFE_INTEGER]) {
        assert.deepEqual(decodeTextData(encodeTextData(n, payload)), { ok: true, n, payload });
      }
    }
    const bytes = Buffer.from([0x7b, 0, 0xff, 0x3a, 0x31]);
    const frame = encodeBinaryData(77, bytes);
    assert.equal(Buffer.from(frame.subarray(0, 3)).toString('latin1'), '77:');
    const d = decodeBinaryData(frame);
    assert.ok(d.ok);
    assert.equal(d.n, 77);
    assert.deepEqual([...d.payload], [...bytes]);
    assert.equal(d.payload.buffer, frame.buffer, 'the payload is a view, not a copy');
  });

  test('a bad header is refused, naming what came', () => {
    const cases: Array<[string, string]> = [
      ['', '""'],
      [':x', '":x"'],
      ['0:x', '"0:x"'],
      ['01:x', '"01:x"'],
      ['-1:x', '"-1:x"'],
      ['1.5:x', '"1.5:x"'],
      ['12', '"12"'],
      ['9007199254740992:x', '"9007199254740992:x"'],
      ['12345678901234567:x', '"12345678901234567:x"'],
      [' 1:x', '" 1:x"'],
    ];
    for (const [frame, shown] of cases) {
      assert.deepEqual(decodeTextData(frame), {
        ok: false,
        error: `a data frame must start with its number and a colon ("17:…", 1 to 9007199254740991), got ${shown}`,
      }, JSON.stringify(frame));
    }
    assert.equal(decodeBinaryData(Buffer.from('x1:')).ok, false);
    assert.match(String(!decodeTextData('y'.repeat(100)).ok && (decodeTextData('y'.repeat(100)) as { error: string }).error), /got "y{40}…"$/, 'long values are cut');
  });

  test('encoding a bad number is a programming error (RangeError)', () => {
    for (const n of [0, -1, 1.5, 2 ** 53, NaN]) {
      assert.throws(() => encodeTextData(n, 'x'), RangeError);
      assert.throws(() => encodeBinaryData(n, Buffer.alloc(1)), RangeError);
    }
  });
});

describe('what the server receives', () => {
  test('open, resume, ack, end and data, from the client encoders', () => {
    assert.deepEqual(decodeClientFrame(encodeOpen(), false), { kind: 'open' });
    assert.deepEqual(decodeClientFrame(encodeEnd(), false), { kind: 'end' });
    // The browser client's heartbeat on a session connection, and its answer (never numbered).
    assert.deepEqual(decodeClientFrame(encodePing(), false), { kind: 'ping' });
    assert.deepEqual(decodeClientFrame(encodeClientAck(41), false), { kind: 'ack', seq: 41 });
    assert.deepEqual(decodeClientFrame(encodeClientAck(0), false), { kind: 'ack', seq: 0 });
    assert.deepEqual(decodeClientFrame(encodeResume({ id: ID, token: TOKEN, lastSeq: 41, epoch: 'e1' }), false), {
      kind: 'resume', id: ID, token: TOKEN, lastSeq: 41, epoch: 'e1',
    });
    assert.deepEqual(decodeClientFrame(encodeResume({ id: ID, token: TOKEN, lastSeq: 0 }), false), {
      kind: 'resume', id: ID, token: TOKEN, lastSeq: 0, epoch: undefined,
    });
    assert.deepEqual(decodeClientFrame('3:{"requestID":1,"command":"x"}', false), {
      kind: 'data', cseq: 3, payload: '{"requestID":1,"command":"x"}', binary: false,
    });
    assert.deepEqual(decodeClientFrame(Buffer.from('3:{"requestID":1}'), false), {
      kind: 'data', cseq: 3, payload: '{"requestID":1}', binary: false,
    }, 'a text frame as ws hands it (a Buffer)');
    const bin = decodeClientFrame(Buffer.from('4:\u0000\u0001'), true);
    assert.equal(bin.kind, 'data');
    assert.equal(bin.kind === 'data' && bin.binary, true);
  });

  test('field names match case-insensitively (R13); unknown fields are ignored', () => {
    assert.deepEqual(decodeClientFrame(`{"Session":"resume","ID":"${ID}","Token":"${TOKEN}","LASTSEQ":5,"extra":[1]}`, false), {
      kind: 'resume', id: ID, token: TOKEN, lastSeq: 5, epoch: undefined,
    });
    assert.deepEqual(decodeClientFrame('{"SESSION":"ack","Seq":3}', false), { kind: 'ack', seq: 3 });
  });

  test('R15: a malformed control frame is answered with an error naming the field and the value', () => {
    const cases: Array<[string, string]> = [
      ['{', 'a session control frame must be JSON: '],
      ['{"session":1}', '"session" must be a string, got 1'],
      ['{"command":"open"}', 'a session control frame needs a "session" field naming its kind'],
      ['{"session":"hello"}', 'unknown session frame "hello" (a client sends open, resume, ack, end or ping)'],
      ['{"session":"ack"}', 'ack: "seq" is required'],
      ['{"session":"ack","seq":-1}', 'ack: "seq" must be an integer from 0 to 9007199254740991, got -1'],
      ['{"session":"ack","seq":"4"}', 'ack: "seq" must be an integer from 0 to 9007199254740991, got "4"'],
      ['{"session":"ack","seq":1.5}', 'ack: "seq" must be an integer from 0 to 9007199254740991, got 1.5'],
      ['{"session":"resume","id":"abc"}', 'resume: "id" must be the 22-character session id from "attached", got "abc"'],
      [`{"session":"resume","id":"${ID}","token":"short-secret"}`, 'resume: "token" must be the 43-character token from "attached", got 12 characters'],
      [`{"session":"resume","id":"${ID}","token":7}`, 'resume: "token" must be the 43-character token from "attached", got 7'],
      [`{"session":"resume","id":"${ID}","token":"${TOKEN}"}`, 'resume: "lastSeq" is required'],
      [`{"session":"resume","id":"${ID}","token":"${TOKEN}","lastSeq":1,"epoch":{}}`, 'resume: "epoch" must be the epoch from "attached" (1 to 64 characters), got an object'],
      ['[1]', 'a data frame must start with its number and a colon'],
      [`{"session":"open","pad":"${'x'.repeat(5000)}"}`, 'a session control frame is at most 4096 characters, got 5027'],
    ];
    for (const [frame, error] of cases) {
      const d = decodeClientFrame(frame, false);
      const got = d.kind === 'invalid' ? d.error : `a ${d.kind} frame`;
      assert.ok(got.startsWith(error), `${frame.slice(0, 60)} → ${got}`);
      assert.ok(!got.includes('short-secret'), 'a token is never echoed, even a wrong one');
    }
    assert.deepEqual(decodeClientFrame('x', false), {
      kind: 'invalid', error: 'a data frame must start with its number and a colon ("17:…", 1 to 9007199254740991), got "x"',
    });
  });
});

describe('acks as the encoders write them (read without JSON.parse)', () => {
  test('the encoders\' acks, as text or bytes, decode as the general decoder reads them; near misses still go the general way', () => {
    const general = (text: string): unknown => decodeClientFrame(text.replace('{', '{ '), false); // a space after the brace: never the short path
    for (const n of [0, 1, 9, 10, 41, 1000, 2 ** 32 + 1, Number.MAX_SAFE_INTEGER]) {
      assert.deepEqual(decodeClientFrame(encodeClientAck(n), false), { kind: 'ack', seq: n });
      assert.deepEqual(decodeClientFrame(new TextEncoder().encode(encodeClientAck(n)), false), { kind: 'ack', seq: n });
      assert.deepEqual(decodeClientFrame(encodeClientAck(n), false), general(encodeClientAck(n)));
      assert.deepEqual(decodeServerFrame(encodeServerAck(n), false), { kind: 'ack', cseq: n });
    }
    for (const near of [
      '{"session":"ack","seq":}',
      '{"session":"ack","seq":01}',
      '{"session":"ack","seq":-1}',
      '{"session":"ack","seq":1.5}',
      '{"session":"ack","seq":1e3}',
      '{"session":"ack","seq":9007199254740992}',
      '{"session":"ack","seq":12345678901234567}',
      '{"session":"ack","seq":4 }',
      '{"session":"ack","seq":4',
      '{"session":"ack","seq":4,"x":1}',
      '{"session":"ACK","seq":4}',
      '{"Session":"ack","Seq":4}',
    ]) {
      // The same answer as the general reader's (an error's position told from the unspaced text).
      const expected = decodeClientFrame(near, false);
      const g = general(near) as { kind: string };
      assert.equal(expected.kind, g.kind, near);
      if (g.kind !== 'invalid') assert.deepEqual(expected, g, near);
      assert.deepEqual(decodeClientFrame(new TextEncoder().encode(near), false), expected, `${near} (bytes)`);
    }
    assert.deepEqual(decodeServerFrame('{"session":"ack","cseq":07}', false).kind, 'invalid');
    assert.deepEqual(decodeServerFrame('{"session":"ack","cseq":7 }', false), { kind: 'ack', cseq: 7 });
  });
});

describe('what the client receives', () => {
  const attached: AttachedFrame = { id: ID, token: TOKEN, epoch: 'e1', resumed: true, lastSeq: 41, replay: 7, cseq: 12, resumeWindow: 120000 };

  test('attached round-trips, resumed or not, with the reason only after a failed resume', () => {
    assert.equal(
      encodeAttached(attached),
      `{"session":"attached","id":"${ID}","token":"${TOKEN}","epoch":"e1","resumed":true,"lastSeq":41,"replay":7,"cseq":12,"resumeWindow":120000}`,
    );
    assert.deepEqual(decodeServerFrame(encodeAttached(attached), false), { kind: 'attached', ...attached });
    const failed: AttachedFrame = { ...attached, resumed: false, reason: 'overflow', detail: '4097 unacknowledged messages', lastSeq: 0, replay: 0, cseq: 0 };
    assert.deepEqual(decodeServerFrame(encodeAttached(failed), false), { kind: 'attached', ...failed });
    assert.throws(() => encodeAttached({ ...attached, reason: 'expired' }), /a resumed session has no failure reason/);
  });

  test('every resume reason is accepted, anything else refused', () => {
    for (const reason of ['expired', 'unknown', 'overflow', 'restarted', 'forbidden'] as const) {
      const f = decodeServerFrame(encodeAttached({ ...attached, resumed: false, reason }), false);
      assert.equal(f.kind === 'attached' && f.reason, reason);
    }
    const bad = decodeServerFrame(encodeAttached(attached).replace('"resumed":true', '"resumed":false,"reason":"lost"'), false);
    assert.deepEqual(bad, { kind: 'invalid', error: 'attached: "reason" must be one of expired, unknown, overflow, restarted, forbidden, got "lost"' });
  });

  test('ack, duplicate, error and data', () => {
    assert.deepEqual(decodeServerFrame(encodeServerAck(12), false), { kind: 'ack', cseq: 12 });
    assert.deepEqual(decodeServerFrame(encodePong(), false), { kind: 'pong' });
    assert.deepEqual(decodeServerFrame(encodeDuplicate(9, [30, 31]), false), { kind: 'duplicate', cseq: 9, replySeqs: [30, 31] });
    assert.deepEqual(decodeServerFrame(encodeDuplicate(9, null), false), { kind: 'duplicate', cseq: 9, replySeqs: null });
    assert.deepEqual(decodeServerFrame(encodeDuplicate(9, []), false), { kind: 'duplicate', cseq: 9, replySeqs: [] });
    assert.deepEqual(decodeServerFrame(encodeSessionError('ack: "seq" is required'), false), { kind: 'error', error: 'ack: "seq" is required' });
    assert.deepEqual(decodeServerFrame(encodeTextData(42, '{"command":"broadcast","someOtherThing":"hi"}'), false), {
      kind: 'data', seq: 42, payload: '{"command":"broadcast","someOtherThing":"hi"}', binary: false,
    });
  });

  test('a server without sessions is told apart: its first answer is not a session frame', () => {
    // What the articles' demo server answers to {"session":"open"}: an ordinary reply.
    const reply = '{"requestID":0,"success":true,"someOtherThing":"Server processed command: "}';
    assert.deepEqual(decodeServerFrame(reply, false), { kind: 'invalid', error: 'a session control frame needs a "session" field naming its kind' });
    assert.equal(decodeServerFrame('{"command":"broadcast","someOtherThing":"hi"}', false).kind, 'invalid');
    assert.equal(decodeServerFrame('{"session":"resumed"}', false).kind, 'invalid');
  });
});

describe('browser-safe', () => {
  test('the codec, bundled for the browser, runs where there is no Buffer and no Node module', async () => {
    const bundle = await build({
      entryPoints: [fileURLToPath(new URL('../../src/protocol/session.ts', import.meta.url))],
      bundle: true,
      platform: 'browser',
      format: 'iife',
      globalName: 'sessionCodec',
      write: false,
    });
    // Only what a browser has that the codec uses: no Buffer, no require, no process.
    const context = { TextDecoder, TextEncoder, URLSearchParams, Uint8Array };
    const results = runInNewContext(`${bundle.outputFiles[0]!.text}
      const c = sessionCodec;
      const bin = c.encodeBinaryData(5, new Uint8Array([1, 2, 3]));
      const fromBin = c.decodeServerFrame(bin, true);
      const fromText = c.decodeServerFrame(c.encodeTextData(6, 'hi'), false);
      const fromBytes = c.decodeClientFrame(new TextEncoder().encode('7:{"requestID":1}'), false);
      const ack = c.decodeClientFrame(c.encodeClientAck(3), false);
      ({ typeofBuffer: typeof Buffer, fromBin: [fromBin.kind, fromBin.seq, Array.from(fromBin.payload)], fromText, fromBytes, ack,
         flag: c.sessionRequested('/x?ws-session=1') });`, context) as Record<string, unknown>;
    assert.deepEqual(JSON.parse(JSON.stringify(results)), {
      typeofBuffer: 'undefined',
      fromBin: ['data', 5, [1, 2, 3]],
      fromText: { kind: 'data', seq: 6, payload: 'hi', binary: false },
      fromBytes: { kind: 'data', cseq: 7, payload: '{"requestID":1}', binary: false },
      ack: { kind: 'ack', seq: 3 },
      flag: { ok: true, requested: true },
    });
  });
});
