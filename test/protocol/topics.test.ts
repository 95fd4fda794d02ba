// The topic commands of the JSON protocol (docs/protocol.md): join, leave,
// publish, decoded with the same Go encoding/json rules as the other fields
// (R13), answered with a specific success or error reply (R14, R15).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { decodeRequest, encodeTopicPush, handleText, type TopicMembership } from '../../src/protocol/codec.ts';
import { TopicError } from '../../src/protocol/topics.ts';

/** A membership table for one sender, as the demo server's supervisor keeps it. */
function membership(limit = 2) {
  const joined = new Set<string>();
  const topics: TopicMembership<string> = {
    join(sender, topic) {
      assert.equal(sender, 'me');
      if (joined.has(topic)) return false;
      if (joined.size >= limit) throw new TopicError('too-many-topics', `already in ${limit} topics (the limit per connection)`);
      joined.add(topic);
      return true;
    },
    leave(sender, topic) {
      assert.equal(sender, 'me');
      return joined.delete(topic);
    },
  };
  return { joined, topics };
}

describe('decodeRequest: topic', () => {
  it('is decoded like the other strings (any case, later wins, null is a no-op) and absent unless sent', () => {
    assert.deepEqual(decodeRequest('{"command":"join","topic":"news"}'), { ok: true, request: { requestID: 0, command: 'join', someOtherThing: '', topic: 'news' } });
    assert.deepEqual(decodeRequest('{"Topic":"a","TOPIC":"b"}'), { ok: true, request: { requestID: 0, command: '', someOtherThing: '', topic: 'b' } });
    assert.deepEqual(decodeRequest('{"topic":"a","topic":null}'), { ok: true, request: { requestID: 0, command: '', someOtherThing: '', topic: 'a' } });
    assert.deepEqual(decodeRequest('{"topic":null}'), { ok: true, request: { requestID: 0, command: '', someOtherThing: '' } });
    assert.deepEqual(decodeRequest('{"requestID":3,"topic":5}'), { ok: false, requestID: 3, error: 'topic must be a string, got number 5' });
    assert.deepEqual(decodeRequest('{"topic":"\\u00e9t\\u00e9"}'), { ok: true, request: { requestID: 0, command: '', someOtherThing: '', topic: 'été' } });
  });
});

describe('handleText: join / leave / publish', () => {
  it('join: by "topic", or by "someOtherThing" for three-field clients; idempotent', () => {
    const { joined, topics } = membership();
    assert.deepEqual(handleText('{"requestID":1,"command":"join","topic":"news"}', topics, 'me'), {
      reply: '{"requestID":1,"success":true,"someOtherThing":"joined news","topic":"news"}',
      broadcast: null,
    });
    assert.deepEqual(handleText('{"RequestID":2,"Command":"join","SomeOtherThing":"sport"}', topics, 'me'), {
      reply: '{"requestID":2,"success":true,"someOtherThing":"joined sport","topic":"sport"}',
      broadcast: null,
    });
    assert.equal(
      handleText('{"requestID":3,"command":"join","topic":"news"}', topics, 'me').reply,
      '{"requestID":3,"success":true,"someOtherThing":"already in news","topic":"news"}',
    );
    assert.deepEqual([...joined], ['news', 'sport']);
  });

  it('join and leave refuse bad names and over-limit joins with a specific error', () => {
    const { topics } = membership(1);
    assert.equal(handleText('{"requestID":1,"command":"join"}', topics, 'me').reply, '{"requestID":1,"success":false,"error":"join \\"\\": topic must not be empty"}');
    assert.equal(
      handleText(`{"requestID":2,"command":"join","topic":"${'x'.repeat(257)}"}`, topics, 'me').reply,
      `{"requestID":2,"success":false,"error":"join \\"${'x'.repeat(40)}…\\": topic is 257 bytes long, over the limit of 256 bytes (UTF-8)"}`,
    );
    // The reply quotes at most 40 characters of the name: a 1 MB name does not come back twice its size.
    const huge = handleText(`{"requestID":7,"command":"join","topic":"${'\\"'.repeat(100_000)}"}`, topics, 'me').reply;
    assert.ok(huge.length < 300, `reply of ${huge.length} bytes`);
    // Lone surrogate escapes: refused as a topic name, not turned into U+FFFD (another name).
    assert.equal(
      handleText('{"requestID":8,"command":"join","topic":"a\\ud800b"}', topics, 'me').reply,
      '{"requestID":8,"success":false,"error":"topic must be well-formed Unicode (it has a lone surrogate escape)"}',
    );
    assert.equal(
      handleText('{"requestID":9,"command":"join","someOtherThing":"\\udc00"}', topics, 'me').reply,
      '{"requestID":9,"success":false,"error":"join: topic must be well-formed Unicode (it has a lone surrogate escape)"}',
    );
    assert.equal(
      handleText('{"requestID":10,"command":"join","topic":"\\ud83d\\ude00"}', membership(5).topics, 'me').reply,
      '{"requestID":10,"success":true,"someOtherThing":"joined \u{1F600}","topic":"\u{1F600}"}',
      'a valid surrogate pair is a name like any other',
    );
    handleText('{"command":"join","topic":"a"}', topics, 'me');
    assert.equal(
      handleText('{"requestID":3,"command":"join","topic":"b"}', topics, 'me').reply,
      '{"requestID":3,"success":false,"error":"join \\"b\\": already in 1 topics (the limit per connection)"}',
    );
    assert.equal(handleText('{"requestID":4,"command":"leave","topic":"b"}', topics, 'me').reply, '{"requestID":4,"success":false,"error":"leave \\"b\\": not a member of this topic"}');
    assert.equal(handleText('{"requestID":5,"command":"leave","topic":"a"}', topics, 'me').reply, '{"requestID":5,"success":true,"someOtherThing":"left a","topic":"a"}');
    assert.equal(handleText('{"requestID":6,"command":"leave","topic":"a"}', topics, 'me').reply, '{"requestID":6,"success":false,"error":"leave \\"a\\": not a member of this topic"}');
  });

  it('without a membership table join/leave are refused, not "processed"', () => {
    assert.deepEqual(handleText('{"requestID":1,"command":"join","topic":"news"}'), {
      reply: '{"requestID":1,"success":false,"error":"join: this server has no topics"}',
      broadcast: null,
    });
  });

  it('publish: needs "topic"; replies first, then pushes {"command":"publish","topic","someOtherThing"} to members', () => {
    assert.deepEqual(handleText('{"requestID":7,"command":"publish","topic":"news","someOtherThing":"<b>hi</b>"}'), {
      reply: '{"requestID":7,"success":true,"someOtherThing":"<b>hi</b>","topic":"news"}',
      broadcast: null,
      publish: { topic: 'news', push: '{"command":"publish","topic":"news","someOtherThing":"<b>hi</b>"}' },
    });
    assert.deepEqual(handleText('{"requestID":8,"command":"publish","someOtherThing":"news"}'), {
      reply: '{"requestID":8,"success":false,"error":"publish needs a \\"topic\\" (the text goes in \\"someOtherThing\\")"}',
      broadcast: null,
    });
    assert.deepEqual(handleText('{"requestID":9,"command":"publish","topic":""}'), {
      reply: '{"requestID":9,"success":false,"error":"topic must not be empty"}',
      broadcast: null,
    });
    assert.equal(encodeTopicPush('a"b', 'x\ny'), '{"command":"publish","topic":"a\\"b","someOtherThing":"x\\ny"}');
  });

  it('command values stay case-sensitive: "Join" is just processed', () => {
    assert.deepEqual(handleText('{"requestID":1,"command":"Join","topic":"news"}', membership().topics, 'me'), {
      reply: '{"requestID":1,"success":true,"someOtherThing":"Server processed command: Join"}',
      broadcast: null,
    });
  });
});
