/**
 * The frames of the session protocol (docs/sessions.md, "The protocol"):
 * decoding what each side receives, encoding what each side sends. Pure: no
 * store, no socket. Used by the server (planned) and the clients (planned).
 *
 * Only a connection that opted in (`ws-session=1` in the upgrade URL) speaks
 * it; everyone else speaks the articles' protocol unchanged (codec.ts).
 *
 * On such a connection every frame is either
 *   - a control frame: a text frame holding a JSON object (`{` first), whose
 *     `session` field names its kind. Field names match case-insensitively
 *     (R13, as the articles' protocol); unknown fields are ignored;
 *   - a data frame: text or binary, `<n>:<payload>`, where n is the seq
 *     (server→client) or cseq (client→server): 1 to 2^53-1 in decimal, no
 *     sign, no leading zero. The payload follows byte for byte.
 *
 * Browser-safe: no Node API (binary frames are Uint8Arrays; a Buffer is one,
 * and a Buffer in gives Buffers out), so the browser client can share it
 * (test/protocol/session.test.ts runs it in a context without Buffer).
 *
 * R15: bad input is answered, not fatal. Every decoder returns failures as
 * values with a message that names the field and the offending value; the
 * caller answers a malformed control frame with `encodeSessionError` and
 * keeps the connection, and closes 1002 only on a protocol violation (a data
 * frame before `attached`, a skipped cseq: decided by the caller).
 */

/** The upgrade URL's query parameter by which a client asks for a session. */
export const SESSION_QUERY_PARAM = 'ws-session';

/** Why a resume cannot continue a session (docs/sessions.md, "Resume reasons"). */
export type ResumeFailureReason = 'expired' | 'unknown' | 'overflow' | 'restarted' | 'forbidden';
/**
 * The one gap in a session's seqs that is not a lost message: a server whose
 * store failed numbers the session's further messages from 2^32 past its last
 * one (docs/sessions.md, "Store failures": the server's LOCAL_SEQ_JUMP, equal
 * to this). A client accepts a jump at least this large; any smaller one
 * skipped messages (a protocol violation).
 */
export const UNPERSISTED_SEQ_JUMP = 2 ** 32;

export const RESUME_FAILURE_REASONS: readonly ResumeFailureReason[] = ['expired', 'unknown', 'overflow', 'restarted', 'forbidden'];

/** Session ids and tokens as the stores make them: 16 and 32 random bytes, base64url. */
const ID_PATTERN = /^[A-Za-z0-9_-]{22}$/;
const TOKEN_PATTERN = /^[A-Za-z0-9_-]{43}$/;
/** An epoch is the store's: short, printable. */
const MAX_EPOCH_LENGTH = 64;
/** Digits of 2^53-1. */
const MAX_DIGITS = 16;
/** A control frame is a handful of short fields; anything longer is not one. */
const MAX_CONTROL_LENGTH = 4096;
/** Longest offending value quoted in an error (characters). */
const MAX_QUOTED = 40;

const utf8Decoder = new TextDecoder();
const utf8Encoder = new TextEncoder();

const COLON = 0x3a;
const ZERO = 0x30;
const NINE = 0x39;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;

// ---------------------------------------------------------------------------
// The upgrade

/**
 * Whether the upgrade URL (`request.url`, path and query) asks for a session:
 * `ws-session=1`. Any other value is an error (the caller refuses the upgrade
 * with 400 and this message): a client must not believe it has a session it
 * does not have.
 */
export function sessionRequested(url: string): { ok: true; requested: boolean } | { ok: false; error: string } {
  const q = url.indexOf('?');
  if (q === -1) return { ok: true, requested: false };
  const values = new URLSearchParams(url.slice(q + 1)).getAll(SESSION_QUERY_PARAM);
  if (values.length === 0) return { ok: true, requested: false };
  if (values.length === 1 && values[0] === '1') return { ok: true, requested: true };
  return { ok: false, error: `${SESSION_QUERY_PARAM} must be given once, as 1; got ${values.map((v) => quote(v)).join(', ')}` };
}

// ---------------------------------------------------------------------------
// Data frames

export type DataDecoded<P> = { ok: true; n: number; payload: P } | { ok: false; error: string };

/** The number of a data frame: `<n>:` at the start. Returns the header length (digits + colon) or an error. */
function readHeader(length: number, at: (i: number) => number, show: () => string): { n: number; header: number } | { error: string } {
  let n = 0;
  let i = 0;
  for (; i < length && i <= MAX_DIGITS; i++) {
    const c = at(i);
    if (c === COLON) break;
    if (c < ZERO || c > NINE || (i === 0 && c === ZERO)) return { error: badHeader(show()) };
    n = n * 10 + (c - ZERO);
  }
  if (i === 0 || i >= length || at(i) !== COLON || !Number.isSafeInteger(n)) return { error: badHeader(show()) };
  return { n, header: i + 1 };
}

function badHeader(shown: string): string {
  return `a data frame must start with its number and a colon ("17:…", 1 to 9007199254740991), got ${quote(shown)}`;
}

/** Decodes a text data frame `<n>:<payload>`. */
export function decodeTextData(frame: string): DataDecoded<string> {
  // Every message of a session passes here on the client: the usual header is read in one loop (as decodeBinaryData).
  const length = frame.length;
  let n = 0;
  let i = 0;
  for (; i < length && i <= MAX_DIGITS; i++) {
    const c = frame.charCodeAt(i);
    if (c === COLON || c < ZERO || c > NINE || (i === 0 && c === ZERO)) break;
    n = n * 10 + (c - ZERO);
  }
  if (i > 0 && i < length && frame.charCodeAt(i) === COLON && Number.isSafeInteger(n)) return { ok: true, n, payload: frame.slice(i + 1) };
  const h = readHeader(frame.length, (j) => frame.charCodeAt(j), () => frame);
  return 'error' in h ? { ok: false, error: h.error } : { ok: true, n: h.n, payload: frame.slice(h.header) };
}

/** Decodes a binary data frame `<n>:<payload>`; the payload is a view of `frame` (a Buffer for a Buffer), not a copy. */
export function decodeBinaryData<T extends Uint8Array>(frame: T): DataDecoded<T> {
  // Every request of a session passes here: the usual header is read in one loop, no closure or header object.
  const length = frame.length;
  let n = 0;
  let i = 0;
  for (; i < length && i <= MAX_DIGITS; i++) {
    const c = frame[i]!;
    if (c === COLON || c < ZERO || c > NINE || (i === 0 && c === ZERO)) break;
    n = n * 10 + (c - ZERO);
  }
  if (i > 0 && i < length && frame[i] === COLON && Number.isSafeInteger(n)) return { ok: true, n, payload: frame.subarray(i + 1) as T };
  // Anything else: the general reader names the fault.
  const h = readHeader(length, (j) => frame[j]!, () => String.fromCharCode(...frame.subarray(0, MAX_QUOTED)));
  return 'error' in h ? { ok: false, error: h.error } : { ok: true, n: h.n, payload: frame.subarray(h.header) as T };
}

function checkNumber(name: string, n: number): void {
  // Programmer error, not bad input: the stores only hand out such numbers.
  if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`${name} must be an integer from 1 to 2^53-1, got ${n}`);
}

/** A text data frame: `<n>:` + payload (string concatenation, no escaping). Throws RangeError for a bad n. */
export function encodeTextData(n: number, payload: string): string {
  checkNumber('seq', n);
  return n + ':' + payload;
}

/**
 * A binary data frame: `<n>:` + payload (one copy), as a Uint8Array (`ws`
 * sends one as it is; `Buffer.from(out.buffer, out.byteOffset, out.length)`
 * views it as a Buffer without a copy). Throws RangeError for a bad n.
 */
export function encodeBinaryData(n: number, payload: Uint8Array): Uint8Array {
  checkNumber('seq', n);
  const header = String(n);
  const out = new Uint8Array(header.length + 1 + payload.length);
  for (let i = 0; i < header.length; i++) out[i] = header.charCodeAt(i);
  out[header.length] = COLON;
  out.set(payload, header.length + 1);
  return out;
}

/** A frame's text: as given, or decoded as UTF-8 (pass a string where you have one: it is cheaper). */
function textOf(data: string | Uint8Array): string {
  return typeof data === 'string' ? data : utf8Decoder.decode(data);
}

/** A frame's bytes: as given, or encoded as UTF-8. */
function bytesOf(data: string | Uint8Array): Uint8Array {
  return typeof data === 'string' ? utf8Encoder.encode(data) : data;
}

// ---------------------------------------------------------------------------
// Control frames: common decoding

type Fields = Map<string, unknown>;

/** JSON object → lower-cased field names (a later spelling of the same name wins). */
function controlFields(text: string): { ok: true; fields: Fields } | { ok: false; error: string } {
  if (text.length > MAX_CONTROL_LENGTH) {
    return { ok: false, error: `a session control frame is at most ${MAX_CONTROL_LENGTH} characters, got ${text.length}` };
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    return { ok: false, error: `a session control frame must be JSON: ${(err as Error).message.slice(0, 200)}` };
  }
  // Only frames starting with `{` get here, so JSON.parse has made an object of it.
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    return { ok: false, error: 'a session control frame must be a JSON object' };
  }
  const fields: Fields = new Map();
  for (const [key, value] of Object.entries(parsed)) fields.set(key.toLowerCase(), value);
  return { ok: true, fields };
}

function kindOf(fields: Fields): string | { error: string } {
  const kind = fields.get('session');
  if (kind === undefined) return { error: 'a session control frame needs a "session" field naming its kind' };
  if (typeof kind !== 'string') return { error: `"session" must be a string, got ${describe(kind)}` };
  return kind;
}

/** An integer field in [min, 2^53-1]. */
function integerField(fields: Fields, kind: string, name: string, min: number): number | { error: string } {
  const value = fields.get(name.toLowerCase());
  if (value === undefined || value === null) return { error: `${kind}: "${name}" is required` };
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    return { error: `${kind}: "${name}" must be an integer from ${min} to 9007199254740991, got ${describe(value)}` };
  }
  return value;
}

function describe(value: unknown): string {
  if (typeof value === 'string') return quote(value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return String(value);
  return Array.isArray(value) ? 'an array' : typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

function quote(s: string): string {
  return JSON.stringify(s.length > MAX_QUOTED ? s.slice(0, MAX_QUOTED) + '…' : s);
}

// ---------------------------------------------------------------------------
// Acks as the clients and the server write them: read without JSON.parse

/** The ack frames exactly as encodeClientAck / encodeServerAck write them, up to the number. */
const CLIENT_ACK_PREFIX = '{"session":"ack","seq":';
const SERVER_ACK_PREFIX = '{"session":"ack","cseq":';

/**
 * The number of an ack written exactly as `prefix` + digits + `}` (the
 * encoders' form), or -1 for any other frame, which then goes through the
 * general decoder (any spelling, spacing or field order JSON allows is still
 * an ack: R13). The acks are most of the control frames of a busy session:
 * this costs no string, no JSON.parse and no field map.
 */
function canonicalAck(data: string | Uint8Array, prefix: string): number {
  const length = data.length;
  const p = prefix.length;
  if (length < p + 2 || length > p + 1 + MAX_DIGITS) return -1;
  let n = 0;
  if (typeof data === 'string') {
    if (data.charCodeAt(length - 1) !== CLOSE_BRACE || !data.startsWith(prefix)) return -1;
    for (let i = p; i < length - 1; i++) {
      const c = data.charCodeAt(i);
      if (c < ZERO || c > NINE || (i === p && c === ZERO && length - 1 > p + 1)) return -1;
      n = n * 10 + (c - ZERO);
    }
  } else {
    if (data[length - 1] !== CLOSE_BRACE) return -1;
    for (let i = 0; i < p; i++) if (data[i] !== prefix.charCodeAt(i)) return -1;
    for (let i = p; i < length - 1; i++) {
      const c = data[i]!;
      if (c < ZERO || c > NINE || (i === p && c === ZERO && length - 1 > p + 1)) return -1;
      n = n * 10 + (c - ZERO);
    }
  }
  return Number.isSafeInteger(n) ? n : -1;
}

/**
 * Whether `data` (a text frame's bytes) is a client's ack as encodeClientAck
 * writes it: the server takes such a frame at once even past its turn's
 * budget (src/server/reader.ts, `message`), as its handling costs less than
 * deferring it. Any other spelling of an ack is an ack too, only not taken
 * early.
 */
export function isClientAck(data: Uint8Array): boolean {
  return canonicalAck(data, CLIENT_ACK_PREFIX) !== -1;
}

// ---------------------------------------------------------------------------
// What the server receives

export type ClientFrame =
  | { kind: 'open' }
  | { kind: 'resume'; id: string; token: string; lastSeq: number; epoch: string | undefined }
  | { kind: 'ack'; seq: number }
  | { kind: 'end' }
  /** A heartbeat (the browser client's: page scripts cannot send ping frames, R7): answered at once with `pong`. */
  | { kind: 'ping' }
  /** Request number `cseq`. A binary payload is a view of the frame (a Buffer when the frame was one). */
  | { kind: 'data'; cseq: number; payload: string | Uint8Array; binary: boolean }
  /** Malformed (R15): answer with encodeSessionError(error). */
  | { kind: 'invalid'; error: string };

/** Decodes one frame a client sent on a session connection. Never throws. */
export function decodeClientFrame(data: string | Uint8Array, isBinary: boolean): ClientFrame {
  if (isBinary) {
    const d = decodeBinaryData(bytesOf(data));
    return d.ok ? { kind: 'data', cseq: d.n, payload: d.payload, binary: true } : { kind: 'invalid', error: d.error };
  }
  const ack = canonicalAck(data, CLIENT_ACK_PREFIX);
  if (ack !== -1) return { kind: 'ack', seq: ack };
  const text = textOf(data);
  if (text.charCodeAt(0) !== OPEN_BRACE) {
    const d = decodeTextData(text);
    return d.ok ? { kind: 'data', cseq: d.n, payload: d.payload, binary: false } : { kind: 'invalid', error: d.error };
  }
  const parsed = controlFields(text);
  if (!parsed.ok) return { kind: 'invalid', error: parsed.error };
  const { fields } = parsed;
  const kind = kindOf(fields);
  if (typeof kind !== 'string') return { kind: 'invalid', error: kind.error };
  switch (kind) {
    case 'open':
    case 'end':
    case 'ping':
      return { kind };
    case 'ack': {
      const seq = integerField(fields, 'ack', 'seq', 0);
      return typeof seq === 'number' ? { kind: 'ack', seq } : { kind: 'invalid', error: seq.error };
    }
    case 'resume': {
      const id = fields.get('id');
      if (typeof id !== 'string' || !ID_PATTERN.test(id)) {
        return { kind: 'invalid', error: `resume: "id" must be the 22-character session id from "attached", got ${describe(id ?? null)}` };
      }
      const token = fields.get('token');
      // The token itself is never echoed: it is a secret, even a wrong one.
      if (typeof token !== 'string' || !TOKEN_PATTERN.test(token)) {
        return { kind: 'invalid', error: `resume: "token" must be the 43-character token from "attached", got ${typeof token === 'string' ? `${token.length} characters` : describe(token ?? null)}` };
      }
      const lastSeq = integerField(fields, 'resume', 'lastSeq', 0);
      if (typeof lastSeq !== 'number') return { kind: 'invalid', error: lastSeq.error };
      const epoch = fields.get('epoch');
      if (epoch !== undefined && epoch !== null && (typeof epoch !== 'string' || epoch.length === 0 || epoch.length > MAX_EPOCH_LENGTH)) {
        return { kind: 'invalid', error: `resume: "epoch" must be the epoch from "attached" (1 to ${MAX_EPOCH_LENGTH} characters), got ${describe(epoch)}` };
      }
      return { kind: 'resume', id, token, lastSeq, epoch: typeof epoch === 'string' ? epoch : undefined };
    }
    default:
      return { kind: 'invalid', error: `unknown session frame ${quote(kind)} (a client sends open, resume, ack, end or ping)` };
  }
}

// ---------------------------------------------------------------------------
// What the server sends

/** The answer to `open` / `resume`: always the first frame of a session connection. */
export interface AttachedFrame {
  id: string;
  token: string;
  epoch: string;
  /** True: the old session continues, `replay` messages follow. False: a new session (after a failed resume, `reason` says why). */
  resumed: boolean;
  /** Present only when a resume was asked for and failed. */
  reason?: ResumeFailureReason;
  detail?: string;
  /** The client's position the replay starts after (resumed), else 0. */
  lastSeq: number;
  /** How many messages the replay holds (seq lastSeq+1 … lastSeq+replay). */
  replay: number;
  /** The last client request the server has run: the client re-sends those after it. */
  cseq: number;
  /** The resume window, ms: how long the session waits for the client after a cut. */
  resumeWindow: number;
}

export function encodeAttached(f: AttachedFrame): string {
  if (f.resumed && f.reason !== undefined) throw new RangeError('a resumed session has no failure reason');
  let out = '{"session":"attached","id":' + JSON.stringify(f.id) + ',"token":' + JSON.stringify(f.token) +
    ',"epoch":' + JSON.stringify(f.epoch) + ',"resumed":' + f.resumed;
  if (f.reason !== undefined) out += ',"reason":' + JSON.stringify(f.reason);
  if (f.detail !== undefined) out += ',"detail":' + JSON.stringify(f.detail);
  return out + ',"lastSeq":' + f.lastSeq + ',"replay":' + f.replay + ',"cseq":' + f.cseq + ',"resumeWindow":' + f.resumeWindow + '}';
}

/** Requests ≤ cseq have been run: the client may forget them. */
export function encodeServerAck(cseq: number): string {
  return SERVER_ACK_PREFIX + cseq + '}';
}

/** Request `cseq` had already been run; its reply went out as `replySeqs` (null: no longer remembered). */
export function encodeDuplicate(cseq: number, replySeqs: readonly number[] | null): string {
  return '{"session":"duplicate","cseq":' + cseq + ',"replySeqs":' + (replySeqs === null ? 'null' : '[' + replySeqs.join(',') + ']') + '}';
}

/** The answer to `ping`, written at once (never numbered nor kept: it only proves the connection lives). */
export const SESSION_PONG = '{"session":"pong"}';
export function encodePong(): string {
  return SESSION_PONG;
}

/** A control frame was malformed or not allowed now (R15): the connection stays. */
export function encodeSessionError(error: string): string {
  return '{"session":"error","error":' + JSON.stringify(error) + '}';
}

// ---------------------------------------------------------------------------
// What the client receives

export type ServerFrame =
  | ({ kind: 'attached' } & AttachedFrame)
  | { kind: 'ack'; cseq: number }
  | { kind: 'duplicate'; cseq: number; replySeqs: number[] | null }
  | { kind: 'error'; error: string }
  /** The answer to a `ping`: not numbered, not kept. */
  | { kind: 'pong' }
  /** Message number `seq` of the session. A binary payload is a view of the frame. */
  | { kind: 'data'; seq: number; payload: string | Uint8Array; binary: boolean }
  /** Not a frame of the session protocol: a server without sessions answered (the client gives up on the session). */
  | { kind: 'invalid'; error: string };

/** Decodes one frame the server sent on a session connection. Never throws. */
export function decodeServerFrame(data: string | Uint8Array, isBinary: boolean): ServerFrame {
  if (isBinary) {
    const d = decodeBinaryData(bytesOf(data));
    return d.ok ? { kind: 'data', seq: d.n, payload: d.payload, binary: true } : { kind: 'invalid', error: d.error };
  }
  const text = textOf(data);
  if (text.charCodeAt(0) !== OPEN_BRACE) {
    const d = decodeTextData(text);
    return d.ok ? { kind: 'data', seq: d.n, payload: d.payload, binary: false } : { kind: 'invalid', error: d.error };
  }
  const ack = canonicalAck(text, SERVER_ACK_PREFIX);
  if (ack !== -1) return { kind: 'ack', cseq: ack };
  const parsed = controlFields(text);
  if (!parsed.ok) return { kind: 'invalid', error: parsed.error };
  const { fields } = parsed;
  const kind = kindOf(fields);
  if (typeof kind !== 'string') return { kind: 'invalid', error: kind.error };
  const int = (name: string, min: number): number | { error: string } => integerField(fields, kind, name, min);
  switch (kind) {
    case 'attached': {
      const strings: Record<'id' | 'token' | 'epoch', string> = { id: '', token: '', epoch: '' };
      for (const name of ['id', 'token', 'epoch'] as const) {
        const v = fields.get(name);
        if (typeof v !== 'string' || v.length === 0) return { kind: 'invalid', error: `attached: "${name}" must be a non-empty string, got ${describe(v ?? null)}` };
        strings[name] = v;
      }
      const resumed = fields.get('resumed');
      if (typeof resumed !== 'boolean') return { kind: 'invalid', error: `attached: "resumed" must be true or false, got ${describe(resumed ?? null)}` };
      const reason = fields.get('reason');
      if (reason !== undefined && !RESUME_FAILURE_REASONS.includes(reason as ResumeFailureReason)) {
        return { kind: 'invalid', error: `attached: "reason" must be one of ${RESUME_FAILURE_REASONS.join(', ')}, got ${describe(reason)}` };
      }
      const detail = fields.get('detail');
      if (detail !== undefined && typeof detail !== 'string') return { kind: 'invalid', error: `attached: "detail" must be a string, got ${describe(detail)}` };
      const numbers = { lastSeq: int('lastSeq', 0), replay: int('replay', 0), cseq: int('cseq', 0), resumeWindow: int('resumeWindow', 1) };
      for (const v of Object.values(numbers)) if (typeof v !== 'number') return { kind: 'invalid', error: v.error };
      return {
        kind: 'attached', ...strings, resumed,
        ...(reason !== undefined && { reason: reason as ResumeFailureReason }),
        ...(detail !== undefined && { detail }),
        ...(numbers as Record<keyof typeof numbers, number>),
      };
    }
    case 'ack': {
      const cseq = int('cseq', 0);
      return typeof cseq === 'number' ? { kind: 'ack', cseq } : { kind: 'invalid', error: cseq.error };
    }
    case 'duplicate': {
      const cseq = int('cseq', 1);
      if (typeof cseq !== 'number') return { kind: 'invalid', error: cseq.error };
      const seqs = fields.get('replyseqs');
      if (seqs === null) return { kind: 'duplicate', cseq, replySeqs: null };
      if (!Array.isArray(seqs) || !seqs.every((s) => Number.isSafeInteger(s) && s >= 1)) {
        return { kind: 'invalid', error: `duplicate: "replySeqs" must be null or a list of seqs, got ${describe(seqs ?? null)}` };
      }
      return { kind: 'duplicate', cseq, replySeqs: seqs as number[] };
    }
    case 'pong':
      return { kind: 'pong' };
    case 'error': {
      const error = fields.get('error');
      return typeof error === 'string' ? { kind: 'error', error } : { kind: 'invalid', error: `error: "error" must be a string, got ${describe(error ?? null)}` };
    }
    default:
      return { kind: 'invalid', error: `unknown session frame ${quote(kind)} (a server sends attached, ack, duplicate, error or pong)` };
  }
}

// ---------------------------------------------------------------------------
// What the client sends

export function encodeOpen(): string {
  return '{"session":"open"}';
}

export function encodeResume(r: { id: string; token: string; lastSeq: number; epoch?: string }): string {
  return '{"session":"resume","id":' + JSON.stringify(r.id) + ',"token":' + JSON.stringify(r.token) + ',"lastSeq":' + r.lastSeq +
    (r.epoch === undefined ? '' : ',"epoch":' + JSON.stringify(r.epoch)) + '}';
}

/** Every seq ≤ `seq` arrived. */
export function encodeClientAck(seq: number): string {
  return CLIENT_ACK_PREFIX + seq + '}';
}

/** A heartbeat on a session connection (the browser client's app heartbeat, R7): the server answers `pong`. */
export function encodePing(): string {
  return '{"session":"ping"}';
}

export function encodeEnd(): string {
  return '{"session":"end"}';
}
