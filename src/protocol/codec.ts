/**
 * The JSON request protocol of the Go WebSocket tutorials (docs/protocol.md), decoded the way their Go
 * server decodes it, so a browser client written against that server works
 * unchanged against this one.
 *
 * The Go server reads each text frame with `json.Unmarshal` into
 *
 *     type Message struct {
 *         RequestID      int    `json:"requestID"`
 *         Command        string `json:"command"`
 *         SomeOtherThing string `json:"someOtherThing"`
 *         Success        bool   `json:"success"`
 *     }
 *
 * R13 (structured messages, case-insensitive names): a request is one JSON
 * object per text frame, `{"requestID":N,"command":"…","someOtherThing":"…"}`.
 * encoding/json matches object keys to fields case-insensitively, so the
 * tutorials' browser client can send `{"RequestID":1,"Command":"…"}`. We follow
 * encoding/json's decoding rules exactly where they can be observed:
 *   - keys are processed in document order; a key selects a field by exact
 *     name or, failing that, case-insensitively. Our three names differ by
 *     more than case, so both lookups pick the same field and one lower-case
 *     map suffices. We fold ASCII only: Go also folds the Kelvin sign (U+212A)
 *     onto k and the long s (U+017F) onto s, so Go accepts `"ſomeOtherThing"`
 *     and we ignore it as an unknown key;
 *   - a later key for the same field overwrites an earlier one, whatever the
 *     case of either (`{"requestID":1,"RequestID":2}` is request 2). JSON.parse
 *     cannot tell us this (it keeps one property per exact spelling, at the
 *     position of its first occurrence), so after JSON.parse has validated the
 *     text, a small linear scanner walks the top-level members in order;
 *   - unknown keys are ignored, whatever their value (nested values are
 *     skipped, not looked at);
 *   - `null` for a field is a no-op: the field keeps its zero value, or the
 *     value of an earlier key for it (`{"requestID":5,"requestID":null}` is 5);
 *   - a value of the wrong type does not stop decoding: Go records the FIRST
 *     such error and keeps decoding the remaining keys. We report that first
 *     error, together with the requestID the whole message left in the struct,
 *     so the error reply can still be correlated (R14);
 *   - `\uXXXX` escapes that are not a valid UTF-16 pair decode to U+FFFD, as in
 *     Go (JSON.parse would keep the lone surrogate).
 *
 * requestID (Go `int`): accepted only as a JSON number written as an integer
 * literal, i.e. `-?(0|[1-9][0-9]*)` with no fraction and no exponent, because Go
 * hands the literal to strconv.ParseInt: `1.5`, `1.0` and `1e3` are errors
 * (`cannot unmarshal number 1e3 into Go struct field Message.requestID of type
 * int`); `-7` is fine; `-0` is 0. Go's int is 64-bit; we accept only
 * |n| <= 2^53-1 (Number.isSafeInteger) so that the echoed id is exactly the
 * one sent, and reject larger literals. Strings (`"7"`), booleans, arrays and
 * objects are errors. A missing requestID is 0.
 *
 * command, someOtherThing (Go `string`): JSON strings; any other non-null type
 * is an error. Missing means "".
 *
 * topic (Go `string`, our addition for the topic commands: a Go client adds
 * `Topic string \`json:"topic"\`` to its struct): decoded like the other
 * strings, but absent from the decoded Request unless the frame carries a
 * non-null `topic`, so requests without one decode exactly as before.
 *
 * success (Go `bool`): a request may carry it (the Go struct has the field),
 * so like Go we reject a non-boolean, non-null value; the value itself is
 * discarded, as only the server writes it.
 *
 * Deliberate differences from Go: the top-level value must be an object
 * (Go accepts a top-level `null` as a no-op); the Unicode folds above;
 * requestIDs beyond 2^53-1 (above); and the encoders
 * below emit `<`, `>`, `&`, U+2028 and U+2029 literally where Go's Marshal
 * writes `\u003c` etc. (same JSON value, different bytes).
 *
 * R15 (bad input is answered, not fatal): every decoding failure — malformed
 * JSON, a non-object, a mistyped field — comes back as a value, never an
 * exception; handleText turns it into `{"requestID":N,"success":false,
 * "error":"…"}` and the connection carries on.
 *
 * R14 (requestID correlation): every reply echoes the request's requestID
 * (0 when the request had none or it could not be read); pushes (`encodePush`)
 * carry no requestID, which is how a client tells them from replies.
 *
 * Bounded parse: before JSON.parse, checkShape refuses a message
 * nested deeper than PARSE_LIMITS.maxDepth or with more than maxValues
 * members/elements (one linear pass, strings skipped with indexOf; ~0.1 µs on
 * the articles' message): JSON.parse's cost grows sharply with depth.
 *
 * Hot path: one JSON.parse per message (validation and its error messages),
 * then one linear pass over the top-level members (string ends found with
 * indexOf, nested values skipped with a depth counter); no regular expressions
 * per message; keys matched against a lower-case name table precomputed at
 * load and indexed by length, compared in place without allocating (only
 * escaped keys are decoded first). About 0.5 µs for the tutorials' message on
 * Node 20, of which JSON.parse is ~0.2 µs.
 */

import { validateTopic } from './topics.ts';

/** A decoded request: Go's zero values ("" / 0) for anything absent or null. */
export interface Request {
  requestID: number;
  command: string;
  someOtherThing: string;
  /** Present only when the frame carried a non-null `topic` (any case). */
  topic?: string;
  /**
   * Present (true) only when `someOtherThing` had a lone surrogate escape that
   * decoded to U+FFFD (as Go does): join/leave refuse it as a topic name.
   */
  lossy?: true;
}

export type DecodeResult =
  | { ok: true; request: Request }
  | {
      ok: false;
      /** The requestID the message carried if it could be read (even if another field was bad), else 0. */
      requestID: number;
      error: string;
    };

/** A successful reply. Extra fields are appended after the three fixed ones, in their own order. */
export interface Reply {
  requestID: number;
  success: true;
  someOtherThing: string;
  [extra: string]: unknown;
}

/** What the server does with one inbound text frame. */
export interface Handled {
  /** The reply to the sender (always exactly one, R14/R15). */
  reply: string;
  /** A push for every connected client, or null. */
  broadcast: string | null;
  /** Only for a successful `publish`: a push for the members of `topic` (after the reply). */
  publish?: { topic: string; push: string };
}

/** The command the demo server broadcasts. Matched case-sensitively (the Go server compares with ==). */
export const BROADCAST_COMMAND = 'broadcast';
/** Topic commands, matched case-sensitively like `broadcast`. */
export const JOIN_COMMAND = 'join';
export const LEAVE_COMMAND = 'leave';
export const PUBLISH_COMMAND = 'publish';

/**
 * The sender's topic membership, for join and leave (the demo server passes
 * the supervisor's). Both may throw (e.g. a TopicError): the message becomes
 * the error reply.
 */
export interface TopicMembership<S> {
  /** True if `sender` joined, false if it was already a member. */
  join(sender: S, topic: string): boolean;
  /** True if `sender` left, false if it was not a member. */
  leave(sender: S, topic: string): boolean;
}

/** Longest quoted offending value in an error message (characters of content). */
const MAX_QUOTED = 40;
/** Longest JSON.parse message we pass on (V8 already trims its source excerpt). */
const MAX_PARSE_MESSAGE = 200;

// ---------------------------------------------------------------------------
// Decoding

const F_REQUEST_ID = 0;
const F_COMMAND = 1;
const F_SOME_OTHER_THING = 2;
/** Go's `Success bool`: type-checked like Go does, then discarded (only the server writes it). */
const F_SUCCESS = 3;
const F_TOPIC = 4;
type FieldId = typeof F_REQUEST_ID | typeof F_COMMAND | typeof F_SOME_OTHER_THING | typeof F_SUCCESS | typeof F_TOPIC;

/** Lower-case field name → field. All names are ASCII. */
const FIELD_BY_LOWER_NAME: ReadonlyMap<string, FieldId> = new Map<string, FieldId>([
  ['requestid', F_REQUEST_ID],
  ['command', F_COMMAND],
  ['someotherthing', F_SOME_OTHER_THING],
  ['success', F_SUCCESS],
  ['topic', F_TOPIC],
]);
/** FIELD_BY_LOWER_NAME indexed by name length, names as char codes: keys of any other length are unknown at once. */
const FIELDS_BY_LENGTH: ReadonlyArray<ReadonlyArray<{ id: FieldId; codes: readonly number[] }> | undefined> = (() => {
  const table: Array<Array<{ id: FieldId; codes: number[] }> | undefined> = [];
  for (const [name, id] of FIELD_BY_LOWER_NAME) {
    if (!/^[a-z]+$/.test(name)) throw new Error(`field name ${name} must be lower-case ASCII letters`); // matchName relies on it
    (table[name.length] ??= []).push({ id, codes: [...name].map((ch) => ch.charCodeAt(0)) });
  }
  return table;
})();
const MIN_NAME_LENGTH = Math.min(...[...FIELD_BY_LOWER_NAME.keys()].map((k) => k.length));
const MAX_NAME_LENGTH = Math.max(...[...FIELD_BY_LOWER_NAME.keys()].map((k) => k.length));
const FIELD_NAMES = ['requestID', 'command', 'someOtherThing', 'success', 'topic'] as const;

// Character codes (plain constants: no enums, so any TS-stripping loader can run this file).
const TAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const DOT = 0x2e;
const MINUS = 0x2d;
const PLUS = 0x2b;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const LOWER_E = 0x65;
const UPPER_E = 0x45;
const LOWER_F = 0x66;
const LOWER_N = 0x6e;
const LOWER_T = 0x74;

// ---------------------------------------------------------------------------
// Bounded parse: V8's JSON.parse cost grows sharply with nesting
// depth (a 1 MiB `[[[[…]]]]` 500k deep takes ~450 ms, a flat 1 MiB array
// ~27 ms, measured on the 2-core development machine), so one message could hold the event loop for half a
// second. The protocol's messages are flat; a linear pre-check refuses deep
// or sprawling values before JSON.parse sees them (R15: an error reply, the
// connection lives).

/** How deep and how wide a request may be before JSON.parse is asked to read it. */
export interface ParseLimits {
  /** Deepest nesting of objects and arrays (the request object itself is level 1). Default 32. */
  maxDepth?: number;
  /** Most members + array elements in the whole message (counted by their separators). Default 4096. */
  maxValues?: number;
}

/**
 * The defaults: a request is one object of five fields (depth 1); 32 levels and
 * 4,096 values leave room for anything an application tucks into unknown keys,
 * and JSON.parse reads the worst such message within a few ms (its cost is then
 * linear in the size, bounded by maxPayload).
 */
export const PARSE_LIMITS: Readonly<Required<ParseLimits>> = Object.freeze({ maxDepth: 32, maxValues: 4096 });

/**
 * The linear pre-check: null if `text` stays within the limits, else the error
 * naming the limit. Strings are skipped with indexOf (brackets and commas in
 * them do not count); malformed text is not judged here (JSON.parse reports it).
 */
export function checkShape(text: string, maxDepth: number = PARSE_LIMITS.maxDepth, maxValues: number = PARSE_LIMITS.maxValues): string | null {
  let depth = 0;
  let values = 0;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      const end = endOfStringOrMinusOne(text, i);
      if (end === -1) return null; // unterminated: JSON.parse will say so
      i = end - 1;
    } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      if (++depth > maxDepth) return `message nested deeper than ${maxDepth} levels (the limit, maxDepth)`;
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      depth--;
    } else if (c === COMMA) {
      if (++values >= maxValues) return `message has more than ${maxValues} members and elements (the limit, maxValues)`;
    }
  }
  return null;
}

/** Like endOfString, for text not yet validated: -1 when the string is never closed. */
function endOfStringOrMinusOne(text: string, i: number): number {
  let from = i + 1;
  for (;;) {
    const q = text.indexOf('"', from);
    if (q === -1) return -1;
    let b = q - 1;
    while (b > i && text.charCodeAt(b) === BACKSLASH) b--;
    if ((q - 1 - b) % 2 === 0) return q + 1;
    from = q + 1;
  }
}

/**
 * Decodes one inbound text frame. Never throws: every failure is returned as
 * `{ ok: false, requestID, error }` (R15). A message beyond `limits` (default
 * PARSE_LIMITS) is refused before JSON.parse, with requestID 0.
 */
export function decodeRequest(text: string, limits?: ParseLimits): DecodeResult {
  const shape = limits === undefined ? checkShape(text) : checkShape(text, limits.maxDepth, limits.maxValues);
  if (shape !== null) return { ok: false, requestID: 0, error: shape };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    return { ok: false, requestID: 0, error: 'invalid JSON: ' + truncate(message, MAX_PARSE_MESSAGE) };
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    return { ok: false, requestID: 0, error: 'request must be a JSON object, got ' + describeParsed(parsed, text) };
  }

  // The text is valid JSON and its top-level value is an object: walk its
  // members in document order. No validation is needed below this point.
  let requestID = 0;
  let command = '';
  let someOtherThing = '';
  let topic: string | undefined;
  let lossy = false;
  let error: string | null = null;

  let i = skipWhitespace(text, 0) + 1; // just past '{'
  i = skipWhitespace(text, i);
  if (text.charCodeAt(i) !== CLOSE_BRACE) {
    for (;;) {
      // Key.
      const keyEnd = endOfString(text, i);
      const field = fieldFor(text, i, keyEnd);
      i = skipWhitespace(text, keyEnd) + 1; // just past ':'
      i = skipWhitespace(text, i);
      // Value.
      const valueStart = i;
      const valueEnd = endOfValue(text, i);
      if (field !== undefined) {
        const first = text.charCodeAt(valueStart);
        if (first === LOWER_N) {
          // null: Go leaves the field as it is.
        } else if (field === F_REQUEST_ID) {
          if (isNumberStart(first)) {
            const id = parseIntegerLiteral(text, valueStart, valueEnd);
            if (typeof id === 'number') requestID = id;
            else error ??= id.error;
          } else {
            error ??= 'requestID must be an integer, got ' + describeRaw(text, valueStart, valueEnd);
          }
        } else if (field === F_SUCCESS) {
          if (first !== LOWER_T && first !== LOWER_F) {
            error ??= 'success must be a boolean, got ' + describeRaw(text, valueStart, valueEnd);
          }
        } else if (first === QUOTE) {
          const escapes = { lone: false };
          const value = stringContent(text, valueStart, valueEnd, escapes);
          if (field === F_COMMAND) command = value;
          else if (field === F_TOPIC) {
            // Our field, not Go's: a name that cannot be said in UTF-8 is refused, not made into another name.
            if (escapes.lone) error ??= 'topic must be well-formed Unicode (it has a lone surrogate escape)';
            topic = value;
          } else {
            someOtherThing = value;
            lossy = escapes.lone;
          }
        } else {
          error ??= FIELD_NAMES[field] + ' must be a string, got ' + describeRaw(text, valueStart, valueEnd);
        }
      }
      i = skipWhitespace(text, valueEnd);
      if (text.charCodeAt(i) !== COMMA) break; // '}'
      i = skipWhitespace(text, i + 1);
    }
  }

  if (error !== null) return { ok: false, requestID, error };
  const request: Request = topic === undefined ? { requestID, command, someOtherThing } : { requestID, command, someOtherThing, topic };
  if (lossy) request.lossy = true;
  return { ok: true, request };
}

/** The field a key (the string literal at [start, end)) selects, if any. */
function fieldFor(text: string, start: number, end: number): FieldId | undefined {
  const from = start + 1;
  const length = end - 1 - from;
  // A literal is at least as long as its key and at most 6× as long (\uXXXX).
  if (length < MIN_NAME_LENGTH || length > MAX_NAME_LENGTH * 6) return undefined;
  for (let j = from; j < from + length; j++) {
    if (text.charCodeAt(j) === BACKSLASH) {
      // Escaped key (rare): decode it, then match the decoded name.
      const key = unescapeJson(text.slice(from, from + length));
      return matchName(key, 0, key.length);
    }
  }
  // Plain key: compared in place, no allocation.
  return matchName(text, from, length);
}

/**
 * ASCII case-insensitive match of s[from, from + length) against the field
 * names of that length. The lower-case names are letters a–z only (checked
 * at load), so a character matches iff it equals the name's letter or that
 * letter minus 0x20 (its upper case); a non-ASCII character never matches.
 */
function matchName(s: string, from: number, length: number): FieldId | undefined {
  const candidates = FIELDS_BY_LENGTH[length];
  if (candidates === undefined) return undefined;
  next: for (const { id, codes } of candidates) {
    for (let j = 0; j < length; j++) {
      const c = s.charCodeAt(from + j);
      const n = codes[j]!;
      if (c !== n && c !== n - 0x20) continue next;
    }
    return id;
  }
  return undefined;
}

/**
 * Parses the (valid) JSON number literal at [start, end) as a Go int would
 * (strconv.ParseInt): an integer literal only — no fraction, no exponent —
 * and here also within the safe-integer range.
 */
function parseIntegerLiteral(text: string, start: number, end: number): number | { error: string } {
  const negative = text.charCodeAt(start) === MINUS;
  let n = 0;
  for (let j = negative ? start + 1 : start; j < end; j++) {
    const c = text.charCodeAt(j);
    if (c === DOT || c === LOWER_E || c === UPPER_E) {
      return { error: 'requestID must be an integer, got ' + truncate(text.slice(start, end), MAX_QUOTED) };
    }
    n = n * 10 + (c - 0x30); // exact while n stays below 2^53
  }
  // Up to 15 digits the sum is exact and safe; beyond, let Number round it and check.
  if (end - start > 15) n = Math.abs(Number(text.slice(start, end)));
  if (n > Number.MAX_SAFE_INTEGER) {
    return {
      error:
        'requestID must be an integer between ' +
        -Number.MAX_SAFE_INTEGER +
        ' and ' +
        Number.MAX_SAFE_INTEGER +
        ', got ' +
        truncate(text.slice(start, end), MAX_QUOTED),
    };
  }
  return negative && n !== 0 ? -n : n; // never -0
}

function isNumberStart(c: number): boolean {
  return c === MINUS || (c >= 0x30 && c <= 0x39);
}

function skipWhitespace(text: string, i: number): number {
  for (;;) {
    const c = text.charCodeAt(i);
    if (c === SPACE || c === LF || c === CR || c === TAB) i++;
    else return i;
  }
}

/** `text[i]` is the opening quote of a (valid) string literal; returns the index just past its closing quote. */
function endOfString(text: string, i: number): number {
  let from = i + 1;
  for (;;) {
    const q = text.indexOf('"', from);
    // Escaped if preceded by an odd number of backslashes.
    let b = q - 1;
    while (text.charCodeAt(b) === BACKSLASH) b--;
    if ((q - 1 - b) % 2 === 0) return q + 1;
    from = q + 1;
  }
}

/** `text[i]` starts a (valid) JSON value; returns the index just past it. */
function endOfValue(text: string, i: number): number {
  const c = text.charCodeAt(i);
  switch (c) {
    case QUOTE:
      return endOfString(text, i);
    case OPEN_BRACE:
    case OPEN_BRACKET: {
      // Iterative, so deep nesting cannot overflow the stack.
      let depth = 0;
      for (;;) {
        const d = text.charCodeAt(i);
        if (d === QUOTE) {
          i = endOfString(text, i);
          continue;
        }
        i++;
        if (d === OPEN_BRACE || d === OPEN_BRACKET) depth++;
        else if ((d === CLOSE_BRACE || d === CLOSE_BRACKET) && --depth === 0) return i;
      }
    }
    case LOWER_T:
    case LOWER_N:
      return i + 4;
    case LOWER_F:
      return i + 5;
    default: {
      // Number: digits, sign, '.', exponent.
      let j = i + 1;
      for (;;) {
        const d = text.charCodeAt(j);
        if ((d >= 0x30 && d <= 0x39) || d === DOT || d === LOWER_E || d === UPPER_E || d === PLUS || d === MINUS) j++;
        else return j;
      }
    }
  }
}

/** The decoded content of the (valid) string literal at [start, end). */
function stringContent(text: string, start: number, end: number, escapes?: { lone: boolean }): string {
  const raw = text.slice(start + 1, end - 1);
  return raw.indexOf('\\') === -1 ? raw : unescapeJson(raw, escapes);
}

/**
 * Decodes the escapes of valid JSON string content. Like Go, a `\uXXXX` that
 * is not part of a valid surrogate pair becomes U+FFFD.
 */
function unescapeJson(s: string, escapes?: { lone: boolean }): string {
  let out = '';
  let last = 0;
  let i = s.indexOf('\\');
  while (i !== -1) {
    out += s.slice(last, i);
    const c = s.charCodeAt(i + 1);
    i += 2;
    switch (c) {
      case 0x62: out += '\b'; break; // b
      case 0x66: out += '\f'; break; // f
      case 0x6e: out += '\n'; break; // n
      case 0x72: out += '\r'; break; // r
      case 0x74: out += '\t'; break; // t
      case 0x75: { // u
        const unit = parseInt(s.slice(i, i + 4), 16);
        i += 4;
        if (unit >= 0xd800 && unit <= 0xdbff) {
          if (s.charCodeAt(i) === BACKSLASH && s.charCodeAt(i + 1) === 0x75) {
            const low = parseInt(s.slice(i + 2, i + 6), 16);
            if (low >= 0xdc00 && low <= 0xdfff) {
              out += String.fromCharCode(unit, low);
              i += 6;
              break;
            }
          }
          out += '\ufffd';
          if (escapes) escapes.lone = true;
        } else if (unit >= 0xdc00 && unit <= 0xdfff) {
          out += '\ufffd';
          if (escapes) escapes.lone = true;
        } else {
          out += String.fromCharCode(unit);
        }
        break;
      }
      default: out += String.fromCharCode(c); // " \ /
    }
    last = i;
    i = s.indexOf('\\', last);
  }
  return out + s.slice(last);
}

/** Describes the (valid) JSON value at [start, end) for an error message. */
function describeRaw(text: string, start: number, end: number): string {
  switch (text.charCodeAt(start)) {
    case QUOTE:
      return 'string ' + quote(stringContent(text, start, end));
    case OPEN_BRACE:
      return 'object';
    case OPEN_BRACKET:
      return 'array';
    case LOWER_T:
      return 'boolean true';
    case LOWER_F:
      return 'boolean false';
    case LOWER_N:
      return 'null';
    default:
      return 'number ' + truncate(text.slice(start, end), MAX_QUOTED);
  }
}

/** Describes a parsed top-level non-object for an error message. */
function describeParsed(value: unknown, text: string): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'string') return 'string ' + quote(value);
  if (typeof value === 'number') return 'number ' + truncate(text.trim(), MAX_QUOTED); // as written
  return typeof value + ' ' + String(value);
}

/** JSON-quotes `s`, cut to MAX_QUOTED characters (never inside a surrogate pair). */
function quote(s: string): string {
  return JSON.stringify(truncate(s, MAX_QUOTED));
}

function truncate(s: string, max: number): string {
  if (s.length <= max) return s;
  let cut = max;
  const c = s.charCodeAt(cut - 1);
  if (c >= 0xd800 && c <= 0xdbff) cut--;
  return s.slice(0, cut) + '…';
}

// ---------------------------------------------------------------------------
// Encoding: compact JSON, lower-camel keys, fixed key order.

function checkRequestID(requestID: number): string {
  // Programmer error, not bad input: decodeRequest only ever yields safe integers.
  if (!Number.isSafeInteger(requestID)) throw new RangeError(`requestID must be a safe integer, got ${requestID}`);
  return requestID === 0 ? '0' : String(requestID);
}

/**
 * `{"requestID":N,"success":true,"someOtherThing":"…"}`, then any extra fields
 * of `reply` (those whose value JSON can represent), in their own order.
 * Throws RangeError if requestID is not a safe integer (a programming error).
 */
export function encodeReply(reply: Reply): string {
  let out = replyFields(reply.requestID, reply.someOtherThing);
  for (const key of Object.keys(reply)) {
    if (key === 'requestID' || key === 'success' || key === 'someOtherThing') continue;
    const value: string | undefined = JSON.stringify(reply[key]);
    if (value !== undefined) out += ',' + JSON.stringify(key) + ':' + value;
  }
  return out + '}';
}

/** encodeReply without the extras, and without its open brace's closing `}`. */
function replyFields(requestID: number, someOtherThing: string): string {
  return '{"requestID":' + checkRequestID(requestID) + ',"success":true,"someOtherThing":' + JSON.stringify(String(someOtherThing));
}

/** `{"requestID":N,"success":false,"error":"…"}`. Throws RangeError if requestID is not a safe integer. */
export function encodeError(requestID: number, error: string): string {
  return '{"requestID":' + checkRequestID(requestID) + ',"success":false,"error":' + JSON.stringify(String(error)) + '}';
}

/** A server push: `{"command":"…","someOtherThing":"…"}` — no requestID, so it is never mistaken for a reply (R14). */
export function encodePush(command: string, someOtherThing: string): string {
  return '{"command":' + JSON.stringify(String(command)) + ',"someOtherThing":' + JSON.stringify(String(someOtherThing)) + '}';
}

// ---------------------------------------------------------------------------
// The demo server's behaviour.

/**
 * What the tutorials' demo server does with a decoded request:
 * - `broadcast` (exactly that: compared case-sensitively, as Go's `==` does,
 *   even though the field NAMES matched case-insensitively) replies success
 *   echoing someOtherThing and pushes `{"command":"broadcast","someOtherThing":S}`
 *   to every client;
 * - `join` / `leave` (given `topics`): the topic is `topic`, or, when the
 *   request has none, `someOtherThing` (so the tutorials' three-field clients
 *   can join too). Replies `{"requestID":N,"success":true,"someOtherThing":
 *   "joined news","topic":"news"}` (`already in news`, `left news`); a bad
 *   name, a refused join or leaving a topic one is not in is an error reply;
 * - `publish`: needs `topic`; `someOtherThing` is the text. Replies success
 *   echoing the text with `"topic"`, and returns the push
 *   `{"command":"publish","topic":T,"someOtherThing":S}` for the topic's
 *   members (the sender gets it only if it is one);
 * - any other command, including "", replies success with
 *   `"Server processed command: " + command` and pushes nothing.
 */
export function handleRequest<S>(request: Request, topics?: TopicMembership<S>, sender?: S): Handled {
  const { requestID, command, someOtherThing } = request;
  if (command === BROADCAST_COMMAND) {
    return {
      reply: replyFields(requestID, someOtherThing) + '}', // = encodeReply({ requestID, success: true, someOtherThing })
      broadcast: encodePush(BROADCAST_COMMAND, someOtherThing),
    };
  }
  if (command === JOIN_COMMAND || command === LEAVE_COMMAND || command === PUBLISH_COMMAND) {
    return handleTopicCommand(request, topics, sender as S);
  }
  return {
    reply: replyFields(requestID, 'Server processed command: ' + command) + '}',
    broadcast: null,
  };
}

function handleTopicCommand<S>(request: Request, topics: TopicMembership<S> | undefined, sender: S): Handled {
  const { requestID, command, someOtherThing } = request;
  const failure = (error: string): Handled => ({ reply: encodeError(requestID, error), broadcast: null });
  if (command === PUBLISH_COMMAND) {
    if (request.topic === undefined) return failure('publish needs a "topic" (the text goes in "someOtherThing")');
    const topic = request.topic;
    try {
      validateTopic(topic);
    } catch (err) {
      return failure(errorMessage(err));
    }
    return {
      reply: replyFields(requestID, someOtherThing) + ',"topic":' + JSON.stringify(topic) + '}',
      broadcast: null,
      publish: { topic, push: encodeTopicPush(topic, someOtherThing) },
    };
  }
  const topic = request.topic ?? someOtherThing;
  if (topics === undefined) return failure(`${command}: this server has no topics`);
  if (request.topic === undefined && request.lossy) return failure(`${command}: topic must be well-formed Unicode (it has a lone surrogate escape)`);
  let changed: boolean;
  try {
    validateTopic(topic);
    changed = command === JOIN_COMMAND ? topics.join(sender, topic) : topics.leave(sender, topic);
  } catch (err) {
    return failure(`${command} ${quote(topic)}: ${errorMessage(err)}`);
  }
  if (command === LEAVE_COMMAND && !changed) return failure(`leave ${quote(topic)}: not a member of this topic`);
  const text = command === JOIN_COMMAND ? (changed ? 'joined ' : 'already in ') + topic : 'left ' + topic;
  return { reply: replyFields(requestID, text) + ',"topic":' + JSON.stringify(topic) + '}', broadcast: null };
}

/** A topic push: `{"command":"publish","topic":"…","someOtherThing":"…"}` (no requestID, R14). */
export function encodeTopicPush(topic: string, someOtherThing: string): string {
  return (
    '{"command":"publish","topic":' + JSON.stringify(String(topic)) + ',"someOtherThing":' + JSON.stringify(String(someOtherThing)) + '}'
  );
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Decodes and handles one text frame; a bad frame gets an error reply (R15),
 * never an exception. `topics` and `sender` enable join/leave (see handleRequest).
 */
export function handleText<S>(text: string, topics?: TopicMembership<S>, sender?: S, limits?: ParseLimits): Handled {
  const decoded = decodeRequest(text, limits);
  if (!decoded.ok) return { reply: encodeError(decoded.requestID, decoded.error), broadcast: null };
  return handleRequest(decoded.request, topics, sender);
}
