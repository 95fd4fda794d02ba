/**
 * Topic (room) names: one rule, shared by the hub, the supervisor, the JSON
 * protocol and the adapters, so a name accepted on one node is accepted on all.
 */

/**
 * Longest topic name, in UTF-8 bytes. 256 fits any sane room key (a UUID is
 * 36, `tenant:…:doc:…` a few dozen) while bounding what one hostile client can
 * make us hold per membership (R21) and put on the wire per published message.
 */
export const MAX_TOPIC_BYTES = 256;

export type TopicErrorCode = 'invalid-topic' | 'too-many-topics' | 'not-connected';

/** A refused topic operation: a bad name, a connection over its topic limit, or one that is not live. */
export class TopicError extends Error {
  override readonly name = 'TopicError';
  constructor(
    readonly code: TopicErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Returns `topic` if it is a valid topic name, else throws a TopicError
 * (`invalid-topic`): a non-empty, well-formed (no lone surrogates) string of
 * at most MAX_TOPIC_BYTES UTF-8 bytes. Any other character is allowed.
 */
export function validateTopic(topic: unknown): string {
  if (typeof topic !== 'string') {
    throw new TopicError('invalid-topic', `topic must be a string, got ${topic === null ? 'null' : typeof topic}`);
  }
  if (topic.length === 0) throw new TopicError('invalid-topic', 'topic must not be empty');
  // Cheap pre-check: a UTF-16 unit is at most 3 UTF-8 bytes.
  if (topic.length * 3 > MAX_TOPIC_BYTES) {
    const bytes = Buffer.byteLength(topic);
    if (bytes > MAX_TOPIC_BYTES) {
      throw new TopicError('invalid-topic', `topic is ${bytes} bytes long, over the limit of ${MAX_TOPIC_BYTES} bytes (UTF-8)`);
    }
  }
  // A lone surrogate would become U+FFFD on the wire: another node would see another name.
  if (!isWellFormed(topic)) throw new TopicError('invalid-topic', 'topic must be well-formed Unicode (it has a lone surrogate)');
  return topic;
}

function isWellFormed(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0xd800 || c > 0xdfff) continue;
    if (c >= 0xdc00) return false;
    const d = s.charCodeAt(i + 1);
    if (!(d >= 0xdc00 && d <= 0xdfff)) return false;
    i++;
  }
  return true;
}
