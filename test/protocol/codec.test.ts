// Tests for src/protocol/codec.ts. Where a case states Go's behaviour, the
// expected value was checked against encoding/json (go1.19) unmarshalling into
// the tutorials' Message struct: same ok/error outcome, same requestID, command
// and someOtherThing, and the same field named by the first error.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  BROADCAST_COMMAND,
  decodeRequest,
  encodeError,
  encodePush,
  encodeReply,
  handleRequest,
  handleText,
  checkShape,
  PARSE_LIMITS,
  type DecodeResult,
  type ParseLimits,
  type Request,
} from '../../src/protocol/codec.ts';

function ok(text: string, limits?: ParseLimits): Request {
  const r = decodeRequest(text, limits);
  if (!r.ok) assert.fail(`expected ${JSON.stringify(text.slice(0, 80))} to decode, got error ${r.error}`);
  return r.request;
}

function bad(text: string, limits?: ParseLimits): Extract<DecodeResult, { ok: false }> {
  const r = decodeRequest(text, limits);
  if (r.ok) assert.fail(`expected ${JSON.stringify(text.slice(0, 80))} to fail, got ${JSON.stringify(r.request)}`);
  return r;
}

describe('decodeRequest: field names (R13)', () => {
  it("decodes the tutorials' browser client message (Go field-name casing)", () => {
    assert.deepEqual(ok('{"RequestID":1,"Command":"Pause downloader","SomeOtherThing":"urgent"}'), {
      requestID: 1,
      command: 'Pause downloader',
      someOtherThing: 'urgent',
    });
  });

  it('decodes the lower-camel tag names', () => {
    assert.deepEqual(ok('{"requestID":2,"command":"c","someOtherThing":"s"}'), { requestID: 2, command: 'c', someOtherThing: 's' });
  });

  it('matches names case-insensitively (ASCII)', () => {
    assert.deepEqual(ok('{"REQUESTID":11,"COMMAND":"X","SOMEOTHERTHING":"Y"}'), { requestID: 11, command: 'X', someOtherThing: 'Y' });
    assert.deepEqual(ok('{"requestid":12,"cOmMaNd":"x","someotherthing":"y"}'), { requestID: 12, command: 'x', someOtherThing: 'y' });
  });

  it('matches keys written with escapes by their decoded name', () => {
    assert.equal(ok('{"\\u0072equestID":8}').requestID, 8);
    assert.equal(ok('{"\\u0043OMMAND":"z"}').command, 'z');
  });

  it('does not fold non-ASCII letters (Go would accept the long s U+017F; we ignore the key)', () => {
    assert.deepEqual(ok('{"ſomeOtherThing":"x","requeſtID":3,"\u212Aey":1}'), { requestID: 0, command: '', someOtherThing: '' });
    // İ lower-cases to two code units and must not match either.
    assert.equal(ok('{"requestİD":3}').requestID, 0);
  });

  it('lets a later duplicate key overwrite an earlier one, whatever its case', () => {
    assert.equal(ok('{"requestID":1,"RequestID":2}').requestID, 2);
    assert.equal(ok('{"RequestID":2,"requestID":1}').requestID, 1);
    // JSON.parse alone would give 2 here (one property per exact spelling, first position).
    assert.equal(ok('{"requestID":1,"RequestID":2,"requestID":3}').requestID, 3);
    assert.deepEqual(ok('{"command":"a","COMMAND":"b","Command":"c","someOtherThing":"x","SomeOtherThing":"y"}'), {
      requestID: 0,
      command: 'c',
      someOtherThing: 'y',
    });
  });

  it('ignores unknown fields, including nested ones that look like ours', () => {
    assert.deepEqual(
      ok('{"x":{"requestID":9,"y":[1,2,{"z":"\\"}]"}]},"requestID":4,"extra":[{"command":"no"}],"n":-1.5e+3,"t":true,"f":false,"nil":null}'),
      { requestID: 4, command: '', someOtherThing: '' },
    );
    assert.deepEqual(ok('{"request_id":1,"requestIDs":2,"comman":"c","id":3}'), { requestID: 0, command: '', someOtherThing: '' });
  });

  it('accepts whitespace anywhere JSON allows it', () => {
    assert.deepEqual(ok(' \n{ "requestID" : 6 ,\t"command" :\t"x"\r\n} \n'), { requestID: 6, command: 'x', someOtherThing: '' });
  });
});

describe('decodeRequest: zero values and null (Go semantics)', () => {
  it('gives zero values for missing fields', () => {
    assert.deepEqual(ok('{}'), { requestID: 0, command: '', someOtherThing: '' });
    assert.deepEqual(ok(' { } '), { requestID: 0, command: '', someOtherThing: '' });
    assert.equal(ok('{"command":"x"}').requestID, 0);
  });

  it('treats null as "leave the field alone"', () => {
    assert.deepEqual(ok('{"requestID":null,"command":null,"someOtherThing":null}'), { requestID: 0, command: '', someOtherThing: '' });
    assert.equal(ok('{"requestID":5,"requestID":null}').requestID, 5);
    assert.equal(ok('{"command":"a","Command":null}').command, 'a');
  });
});

describe('decodeRequest: requestID (R14, Go int)', () => {
  it('accepts integer literals, negative ones included', () => {
    assert.equal(ok('{"requestID":0}').requestID, 0);
    assert.equal(ok('{"requestID":-42}').requestID, -42);
    assert.equal(ok('{"requestID":123456789}').requestID, 123456789);
  });

  it('reads -0 as 0 (not -0)', () => {
    const id = ok('{"requestID":-0}').requestID;
    assert.ok(Object.is(id, 0));
    assert.equal(handleText('{"requestID":-0}').reply, '{"requestID":0,"success":true,"someOtherThing":"Server processed command: "}');
  });

  it('accepts the whole safe-integer range', () => {
    assert.equal(ok('{"requestID":9007199254740991}').requestID, Number.MAX_SAFE_INTEGER);
    assert.equal(ok('{"requestID":-9007199254740991}').requestID, -Number.MAX_SAFE_INTEGER);
  });

  it('rejects numbers beyond the safe-integer range (Go int64 would take some of them)', () => {
    const r = bad('{"requestID":9007199254740992}');
    assert.equal(r.requestID, 0);
    assert.equal(r.error, 'requestID must be an integer between -9007199254740991 and 9007199254740991, got 9007199254740992');
    assert.match(bad('{"requestID":-9007199254740993}').error, /got -9007199254740993$/);
    const huge = bad(`{"requestID":1${'0'.repeat(400)}}`);
    assert.ok(huge.error.endsWith('got 1' + '0'.repeat(39) + '…'), huge.error);
  });

  it('rejects fractions and exponents, as Go does: only an integer literal is an int', () => {
    assert.deepEqual(bad('{"requestID":1.5}'), { ok: false, requestID: 0, error: 'requestID must be an integer, got 1.5' });
    assert.equal(bad('{"requestID":1.0}').error, 'requestID must be an integer, got 1.0');
    assert.equal(bad('{"requestID":1e3}').error, 'requestID must be an integer, got 1e3');
    assert.equal(bad('{"requestID":1E3}').error, 'requestID must be an integer, got 1E3');
    assert.equal(bad('{"requestID":-2e-0}').error, 'requestID must be an integer, got -2e-0');
    assert.equal(bad('{"requestID":0.0}').error, 'requestID must be an integer, got 0.0');
  });

  it('rejects non-numbers, describing them', () => {
    assert.deepEqual(bad('{"requestID":"7"}'), { ok: false, requestID: 0, error: 'requestID must be an integer, got string "7"' });
    assert.equal(bad('{"requestID":true}').error, 'requestID must be an integer, got boolean true');
    assert.equal(bad('{"requestID":false}').error, 'requestID must be an integer, got boolean false');
    assert.equal(bad('{"requestID":[1]}').error, 'requestID must be an integer, got array');
    assert.equal(bad('{"requestID":{"a":1}}').error, 'requestID must be an integer, got object');
  });

  it('keeps a valid requestID from another key when a duplicate is bad (Go keeps decoding)', () => {
    assert.deepEqual(bad('{"requestID":3,"requestID":1.5}'), { ok: false, requestID: 3, error: 'requestID must be an integer, got 1.5' });
    assert.equal(bad('{"requestID":1.5,"requestID":3}').requestID, 3);
    assert.deepEqual(bad('{"requestID":1,"requestID":2,"RequestId":"bad","requestID":4}'), {
      ok: false,
      requestID: 4,
      error: 'requestID must be an integer, got string "bad"',
    });
  });
});

describe('decodeRequest: string fields', () => {
  it('rejects non-strings for command and someOtherThing, echoing the good requestID', () => {
    assert.deepEqual(bad('{"requestID":7,"command":5}'), { ok: false, requestID: 7, error: 'command must be a string, got number 5' });
    // Go decodes every key before returning the first error, so a requestID after the bad field counts too.
    assert.deepEqual(bad('{"command":5,"requestID":7}'), { ok: false, requestID: 7, error: 'command must be a string, got number 5' });
    assert.equal(bad('{"someOtherThing":true}').error, 'someOtherThing must be a string, got boolean true');
    assert.equal(bad('{"command":["a"]}').error, 'command must be a string, got array');
    assert.equal(bad('{"SomeOtherThing":{"a":"b"}}').error, 'someOtherThing must be a string, got object');
    assert.equal(bad('{"command":-1.25e+2}').error, 'command must be a string, got number -1.25e+2');
  });

  it('reports the first error in document order', () => {
    assert.deepEqual(bad('{"requestID":7,"command":5,"someOtherThing":true}'), {
      ok: false,
      requestID: 7,
      error: 'command must be a string, got number 5',
    });
    assert.equal(bad('{"someOtherThing":1,"requestID":"x","command":2}').error, 'someOtherThing must be a string, got number 1');
  });

  it('reports the first error whichever kinds of error follow it (each check keeps an earlier error)', () => {
    // One later error of every kind the decoder finds, each after an earlier one: none may replace it.
    const later = [
      '"requestID":1.5', // an integer literal that is not one
      '"requestID":"x"', // not a number at all
      '"success":"yes"',
      '"topic":"\\ud800"', // a lone surrogate escape
      '"someOtherThing":7',
    ];
    for (const tail of later) {
      assert.deepEqual(bad(`{"command":5,${tail}}`), { ok: false, requestID: 0, error: 'command must be a string, got number 5' }, tail);
      assert.equal(bad(`{"success":1,${tail}}`).error, 'success must be a boolean, got number 1', tail);
    }
    assert.equal(bad('{"requestID":1e3,"success":0,"command":1}').error, 'requestID must be an integer, got 1e3');
    assert.equal(bad('{"topic":"\\udc00","command":1}').error, 'topic must be well-formed Unicode (it has a lone surrogate escape)');
  });

  it('decodes escapes', () => {
    assert.equal(ok('{"command":"a\\"b\\\\c\\/d\\n\\t\\r\\b\\f\\u00e9\\ud83d\\ude00"}').command, 'a"b\\c/d\n\t\r\b\fé😀');
    assert.equal(ok('{"command":"\\"}"}').command, '"}');
    assert.equal(ok('{"command":"tail\\\\"}').command, 'tail\\');
  });

  it('replaces escaped surrogates that do not form a pair with U+FFFD, like Go', () => {
    assert.equal(ok('{"command":"\\ud800"}').command, '\ufffd');
    assert.equal(ok('{"command":"\\udc00x"}').command, '\ufffdx');
    assert.equal(ok('{"command":"\\ud800\\u0041"}').command, '\ufffdA');
    assert.equal(ok('{"command":"\\ud800\\ud800\\udc00"}').command, '\ufffd\u{10000}');
  });

  it('keeps non-ASCII text as is', () => {
    assert.equal(ok('{"someOtherThing":"héllo wörld 😀 \u2028"}').someOtherThing, 'héllo wörld 😀 \u2028');
  });

  it('checks success like Go (it is a bool field of the Go struct) but does not return it', () => {
    assert.deepEqual(ok('{"success":true,"requestID":3}'), { requestID: 3, command: '', someOtherThing: '' });
    assert.equal(ok('{"Success":false,"success":null}').requestID, 0);
    assert.deepEqual(bad('{"success":"yes","requestID":3}'), { ok: false, requestID: 3, error: 'success must be a boolean, got string "yes"' });
    assert.equal(bad('{"success":1}').error, 'success must be a boolean, got number 1');
  });

  it('truncates long offending values to 40 characters', () => {
    const long = 'z'.repeat(100);
    assert.equal(bad(`{"requestID":"${long}"}`).error, `requestID must be an integer, got string "${'z'.repeat(40)}…"`);
    // Never cut inside a surrogate pair.
    const emoji = 'a'.repeat(39) + '😀' + 'b';
    assert.equal(bad(`{"requestID":"${emoji}"}`).error, `requestID must be an integer, got string "${'a'.repeat(39)}…"`);
  });
});

describe('decodeRequest: top level and malformed input (R15)', () => {
  it('requires an object', () => {
    assert.deepEqual(bad('[]'), { ok: false, requestID: 0, error: 'request must be a JSON object, got array' });
    assert.equal(bad('[{"requestID":1}]').error, 'request must be a JSON object, got array');
    assert.equal(bad('"x"').error, 'request must be a JSON object, got string "x"');
    assert.equal(bad(' 5 ').error, 'request must be a JSON object, got number 5');
    assert.equal(bad('1e3').error, 'request must be a JSON object, got number 1e3');
    assert.equal(bad('true').error, 'request must be a JSON object, got boolean true');
    // Go would accept a top-level null as a no-op; a request must be an object here.
    assert.equal(bad('null').error, 'request must be a JSON object, got null');
  });

  it('reports malformed JSON with the parser message', () => {
    for (const text of ['{', '{"a":}', '{"a":1,}', '{"a":1}}', "{'a':1}", '{"requestID":1', 'nul', '{"a":01}']) {
      const r = bad(text);
      assert.equal(r.requestID, 0);
      assert.match(r.error, /^invalid JSON: \S/, text);
    }
    assert.equal(bad('{"requestID":7,"command":}').requestID, 0); // nothing is decoded from invalid JSON (as in Go)
  });

  it('rejects empty and whitespace-only frames', () => {
    assert.deepEqual(bad(''), { ok: false, requestID: 0, error: 'invalid JSON: Unexpected end of JSON input' });
    assert.deepEqual(bad(' \t\r\n '), { ok: false, requestID: 0, error: 'invalid JSON: Unexpected end of JSON input' });
  });

  it('survives deep nesting (with the parse limits lifted)', () => {
    const depth = 100_000;
    const deep = '['.repeat(depth) + ']'.repeat(depth);
    const unlimited = { maxDepth: Infinity, maxValues: Infinity };
    assert.equal(ok(`{"x":${deep},"requestID":3}`, unlimited).requestID, 3);
    assert.equal(ok(`{"x":${'{"a":'.repeat(depth)}1${'}'.repeat(depth)},"command":"c"}`, unlimited).command, 'c');
    assert.equal(bad(`{"requestID":${deep}}`, unlimited).error, 'requestID must be an integer, got array');
    assert.equal(bad(deep, unlimited).error, 'request must be a JSON object, got array');
    const unbalanced = bad('{"x":' + '['.repeat(depth) + '}', unlimited);
    assert.match(unbalanced.error, /^invalid JSON: /);
    assert.ok(unbalanced.error.length < 300, 'parser message stays short');
  });

  it('handles a 1 MB string', () => {
    const big = 'x'.repeat(1 << 20);
    assert.equal(ok(`{"requestID":1,"someOtherThing":"${big}"}`).someOtherThing, big);
    assert.equal(ok(`{"ignored":"${big}","requestID":2}`).requestID, 2);
    const escaped = 'a\\"'.repeat(1 << 18); // many escapes, including escaped quotes
    assert.equal(ok(`{"command":"${escaped}","requestID":3}`).command, 'a"'.repeat(1 << 18));
    const r = bad(`{"requestID":"${big}"}`);
    assert.equal(r.error, `requestID must be an integer, got string "${'x'.repeat(40)}…"`);
    const unterminated = bad(`{"command":"${big}`);
    assert.match(unterminated.error, /^invalid JSON: /);
    assert.ok(unterminated.error.length < 300);
  });
});

describe('decodeRequest: bounded parse (R15)', () => {
  const depthError = `message nested deeper than ${PARSE_LIMITS.maxDepth} levels (the limit, maxDepth)`;
  const valuesError = `message has more than ${PARSE_LIMITS.maxValues} members and elements (the limit, maxValues)`;

  it('refuses nesting beyond maxDepth before JSON.parse, naming the limit', () => {
    const at = (d: number): string => '{"x":' + '['.repeat(d - 1) + ']'.repeat(d - 1) + ',"requestID":4}';
    assert.equal(ok(at(PARSE_LIMITS.maxDepth)).requestID, 4); // exactly at the limit: fine
    assert.deepEqual(bad(at(PARSE_LIMITS.maxDepth + 1)), { ok: false, requestID: 0, error: depthError });
    assert.equal(bad('{"x":' + '{"a":'.repeat(40) + '1' + '}'.repeat(41)).error, depthError);
    assert.equal(bad('{"x":[[[1]]]}', { maxDepth: 3 }).error, 'message nested deeper than 3 levels (the limit, maxDepth)');
    assert.equal(ok('{"x":[[1]],"command":"c"}', { maxDepth: 3 }).command, 'c');
  });

  it('refuses the issue\'s 500k-deep array (< 1 MiB) in time linear in its size, not JSON.parse\'s ~450 ms', () => {
    const deep = '['.repeat(500_000) + ']'.repeat(500_000);
    assert.ok(deep.length < 1 << 20);
    // The pre-check stops at the 33rd bracket: time it against a scan of the whole string.
    const t0 = performance.now();
    for (let i = 0; i < 100; i++) bad(deep);
    const each = (performance.now() - t0) / 100;
    const t1 = performance.now();
    deep.indexOf('x'); // one pass over all 1M characters
    const scan = performance.now() - t1;
    assert.equal(bad(deep).error, depthError);
    assert.ok(each < Math.max(1, scan * 10), `refusing took ${each.toFixed(3)} ms per message (a full scan ${scan.toFixed(3)} ms)`);
  });

  it('refuses more than maxValues members and elements (a sprawling flat message)', () => {
    const n = PARSE_LIMITS.maxValues;
    assert.equal(ok('{"x":[' + '1,'.repeat(n - 2) + '1],"requestID":5}').requestID, 5); // n values in all
    assert.deepEqual(bad('{"x":[' + '1,'.repeat(n) + '1],"requestID":5}'), { ok: false, requestID: 0, error: valuesError });
    assert.equal(bad('{' + '"k":1,'.repeat(n) + '"requestID":6}').error, valuesError);
    assert.equal(bad('{"a":1,"b":2,"c":3}', { maxValues: 2 }).error, 'message has more than 2 members and elements (the limit, maxValues)');
  });

  it('does not count brackets, braces or commas inside strings (escaped quotes included)', () => {
    const inString = '[{,'.repeat(10_000) + '\\"]]]\\\\';
    assert.equal(ok(`{"someOtherThing":"${inString}","requestID":7}`).requestID, 7);
    assert.equal(ok(`{"${'[['.repeat(100)}":1,"command":"k"}`).command, 'k'); // in a key too
  });

  it('leaves malformed text to JSON.parse (its message, not a limit)', () => {
    assert.equal(checkShape('{"a":"unterminated [[[['), null);
    assert.equal(checkShape(']]]]}}}'), null);
    assert.match(bad('{"a":"unterminated').error, /^invalid JSON: /);
  });

  it('handleText answers a too-deep request with an error reply (R15)', () => {
    const h = handleText('{"requestID":9,"x":' + '['.repeat(64) + ']'.repeat(64) + '}');
    assert.equal(h.reply, JSON.stringify({ requestID: 0, success: false, error: depthError }));
    assert.equal(h.broadcast, null);
  });
});

describe('encoders', () => {
  it('encodeReply writes exactly requestID, success, someOtherThing in that order', () => {
    assert.equal(encodeReply({ requestID: 5, success: true, someOtherThing: 'done' }), '{"requestID":5,"success":true,"someOtherThing":"done"}');
    assert.equal(encodeReply({ someOtherThing: 'a', success: true, requestID: -1 }), '{"requestID":-1,"success":true,"someOtherThing":"a"}');
  });

  it('encodeReply appends extra fields after the fixed ones', () => {
    assert.equal(
      encodeReply({ requestID: 1, success: true, someOtherThing: 's', elapsedMs: 3, tags: ['a'], skipped: undefined, '2': 'two' }),
      '{"requestID":1,"success":true,"someOtherThing":"s","2":"two","elapsedMs":3,"tags":["a"]}',
    );
  });

  it('encodeError and encodePush', () => {
    assert.equal(encodeError(7, 'command must be a string, got number 5'), '{"requestID":7,"success":false,"error":"command must be a string, got number 5"}');
    assert.equal(encodeError(0, 'x'), '{"requestID":0,"success":false,"error":"x"}');
    assert.equal(encodePush('broadcast', 'hi'), '{"command":"broadcast","someOtherThing":"hi"}');
  });

  it('escapes strings and round-trips through decodeRequest', () => {
    const s = 'quote " backslash \\ newline \n nul \u0000 é 😀 </script>';
    const reply = encodeReply({ requestID: 1, success: true, someOtherThing: s });
    assert.deepEqual(JSON.parse(reply), { requestID: 1, success: true, someOtherThing: s });
    assert.equal(ok(encodePush('c', s)).someOtherThing, s);
  });

  it('refuses a requestID that is not a safe integer (a programming error)', () => {
    assert.throws(() => encodeError(Number.NaN, 'x'), RangeError);
    assert.throws(() => encodeReply({ requestID: 1.5, success: true, someOtherThing: '' }), RangeError);
    assert.equal(encodeError(-0, 'x'), '{"requestID":0,"success":false,"error":"x"}');
  });
});

describe('handleRequest / handleText (demo server)', () => {
  it('broadcast: replies success echoing someOtherThing and pushes to everyone', () => {
    assert.equal(BROADCAST_COMMAND, 'broadcast');
    assert.deepEqual(handleRequest({ requestID: 4, command: 'broadcast', someOtherThing: 'hello all' }), {
      reply: '{"requestID":4,"success":true,"someOtherThing":"hello all"}',
      broadcast: '{"command":"broadcast","someOtherThing":"hello all"}',
    });
  });

  it('the command value is matched case-sensitively', () => {
    assert.deepEqual(handleRequest({ requestID: 4, command: 'Broadcast', someOtherThing: 'x' }), {
      reply: '{"requestID":4,"success":true,"someOtherThing":"Server processed command: Broadcast"}',
      broadcast: null,
    });
  });

  it('any other command is "processed"', () => {
    assert.deepEqual(handleRequest({ requestID: 1, command: 'Pause downloader', someOtherThing: 'urgent' }), {
      reply: '{"requestID":1,"success":true,"someOtherThing":"Server processed command: Pause downloader"}',
      broadcast: null,
    });
    assert.deepEqual(handleRequest({ requestID: 0, command: '', someOtherThing: '' }), {
      reply: '{"requestID":0,"success":true,"someOtherThing":"Server processed command: "}',
      broadcast: null,
    });
  });

  it("handleText answers the tutorials' client message", () => {
    assert.deepEqual(handleText('{"RequestID":1,"Command":"Pause downloader","SomeOtherThing":"urgent"}'), {
      reply: '{"requestID":1,"success":true,"someOtherThing":"Server processed command: Pause downloader"}',
      broadcast: null,
    });
    assert.deepEqual(handleText('{"requestID":2,"command":"broadcast","someOtherThing":"hi"}'), {
      reply: '{"requestID":2,"success":true,"someOtherThing":"hi"}',
      broadcast: '{"command":"broadcast","someOtherThing":"hi"}',
    });
  });

  it('handleText turns bad input into an error reply (R15), correlated when possible (R14)', () => {
    assert.deepEqual(handleText('{"requestID":9,"command":5}'), {
      reply: '{"requestID":9,"success":false,"error":"command must be a string, got number 5"}',
      broadcast: null,
    });
    assert.deepEqual(handleText('[]'), {
      reply: '{"requestID":0,"success":false,"error":"request must be a JSON object, got array"}',
      broadcast: null,
    });
    const garbage = handleText('{"requestID":');
    assert.equal(garbage.broadcast, null);
    const parsed = JSON.parse(garbage.reply) as { requestID: number; success: boolean; error: string };
    assert.equal(parsed.requestID, 0);
    assert.equal(parsed.success, false);
    assert.match(parsed.error, /^invalid JSON: /);
  });

  it('never throws, whatever the frame (mutated messages)', () => {
    const base = '{"requestID":12,"command":"broadcast","someOtherThing":"a\\u00e9\\"b","x":[1,{"y":null}]}';
    const alphabet = '{}[]":,\\ 0123456789-+.eEtrufalsn\u00e9\u212a';
    let seed = 42;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let n = 0; n < 5000; n++) {
      let text = base;
      for (let k = rnd(4) + 1; k > 0; k--) {
        const at = rnd(text.length + 1);
        const op = rnd(3);
        const ch = alphabet[rnd(alphabet.length)] ?? '';
        text = op === 0 ? text.slice(0, at) + ch + text.slice(at) : op === 1 ? text.slice(0, at) + text.slice(at + 1) : text.slice(0, at) + ch + text.slice(at + 1);
      }
      const out = handleText(text);
      const reply = JSON.parse(out.reply) as { requestID: unknown; success: unknown };
      assert.equal(typeof reply.requestID, 'number', text);
      assert.equal(typeof reply.success, 'boolean', text);
      const decoded = decodeRequest(text);
      let valid = true;
      try {
        JSON.parse(text);
      } catch {
        valid = false;
      }
      if (!valid) assert.equal(decoded.ok, false, text);
    }
  });
});
