/**
 * The in-memory session store: the default, nothing to install. Sessions live
 * as long as this process (a restart is reported to resuming clients as
 * `restarted`, through the epoch). Every bound of docs/sessions.md is enforced
 * here, and every message let go of without the client's acknowledgement is
 * handed to the host as a dead letter with its reason (R12).
 *
 * Invariant of a live session: it holds exactly the messages with seq in
 * (ackedSeq, lastSeq], in order. A bound is never met by dropping some of
 * them (that would be a gap a resume could not see): it ends the session.
 */
import { randomBytes } from 'node:crypto';
import { positiveInt } from '../base/checks.ts';
import {
  messageBytes,
  newTokenBoundSession,
  sameOwner,
  tokenOpens,
  type AckResult,
  type AppendResult,
  type CreatedSession,
  type JsonValue,
  type ReadResult,
  type RequestVerdict,
  type ResumeClaim,
  type ResumeResult,
  type SessionDeadLetterReason,
  type SessionMessage,
  type SessionRecord,
  type SessionSlot,
  type SessionStore,
  type SessionStoreHost,
  type SessionStoreStats,
  type SessionStoreSync,
  type StoredMessage,
  type VerifyResult,
} from './session-store.ts';

export interface MemorySessionStoreOptions {
  /** How long a detached session waits for its client, ms. Default 120000 (docs/sessions.md: covers a heartbeat-found cut plus reconnect backoff). */
  resumeWindow?: number;
  /** Held (unacknowledged) messages per session. Default 4096. */
  maxMessages?: number;
  /** Held bytes per session. Default 4 MiB (as the send queue). */
  maxBytes?: number;
  /** Held bytes over all sessions. Default 256 MiB. */
  maxBufferedBytes?: number;
  /** Detached sessions at once (and tombstones kept). Default 10000 (as maxConnections). */
  maxDetachedSessions?: number;
  /** Requests per session whose reply seqs are remembered for `duplicate` answers. Default 64. */
  maxRememberedReplies?: number;
  /** The clock, epoch ms (tests). Default Date.now. */
  now?: () => number;
}

/** The defaults, each with its reason in docs/sessions.md ("Bounds and dead letters"). */
export const SESSION_STORE_DEFAULTS = {
  resumeWindow: 120_000,
  maxMessages: 4096,
  maxBytes: 4 * 1024 * 1024,
  maxBufferedBytes: 256 * 1024 * 1024,
  maxDetachedSessions: 10_000,
  maxRememberedReplies: 64,
} as const;

/** Reply seqs remembered per request: a reply of more messages is remembered as "too many" (null). */
const MAX_SEQS_PER_REPLY = 16;
/** Dropped acknowledged messages are compacted away once this many sit at the head of a buffer. */
const COMPACT_AFTER = 1024;

interface Session {
  /**
   * The first 16 bytes of the token's SHA-256 (newTokenBoundSession): all the
   * store keeps to check a token by (`tokenOpens`), where a digest string
   * beside a random id cost another 56 bytes per session.
   */
  id: string;
  owner: string | null;
  /** 'ended' once `#endSession` let it go (a record kept in a caller's SessionSlot is then not used). */
  state: 'attached' | 'detached' | 'ended';
  /**
   * Times as ms since the store's `#t0` (`#since`), not epoch ms: small
   * integers are held in the object itself, where an epoch ms is a 16-byte
   * heap number per field (two per idle session: docs/performance.md). Past
   * ~24 days of uptime they become heap numbers again, with the same values.
   */
  createdAt: number;
  attachedAt: number;
  /**
   * Everything else, made at the first change: EMPTY_BODY (shared, frozen)
   * until then. Most sessions are attached and idle, and their twelve
   * fields below all hold their first values: one pointer to the shared
   * body instead of twelve fields per session (docs/performance.md,
   * "Sessions, ninth pass"). Read through `s.body`; written through
   * `own(s)`, which makes the session's own first (a write to the shared
   * one throws: it is frozen).
   */
  body: Body;
}

/** A session's messages, requests, topics and data (Session.body). */
interface Body {
  detachedAt: number | null;
  lastSeq: number;
  ackedSeq: number;
  lastCseq: number;
  /**
   * The held messages, seq ackedSeq+1 … lastSeq in order, from slot `head`:
   * two slots each, the data (by reference: a broadcast's one Buffer is held
   * by every session it reached) and its byte length, stored as ~length for a
   * binary message. No object per message: a broadcast appends to every
   * session, and an object each cost an allocation per recipient and ~64
   * bytes per held message (docs/performance.md). NO_MESSAGES (shared) until
   * the first.
   *
   * The held slots end at `heldEnd(s)` (head + 2 × the messages held), not at
   * the array's length: once everything is acknowledged, a buffer of at most
   * REUSE_SLOTS is written again from slot 0 (trimmed slots hold 0, nothing
   * else), and so is one an ack left a few messages in (MOVE_SLOTS: they move
   * to the front), so a session that is acknowledged as it goes keeps one array for
   * good instead of a new one, grown again, per acknowledgement: those lived
   * about a second each (the ack delay), long enough to be promoted, and every
   * broadcast grew one per receiver (docs/performance.md, "Sessions, sixth pass").
   */
  held: HeldSlot[];
  head: number;
  bytes: number;
  /**
   * The session's own messages' bytes (replies, sends: not shared, at most
   * ARENA_MESSAGE_MAX bytes each), one after the other; a held slot's data is
   * then its offset here (a number), not the string. Null until the first.
   * A reply string held until the client's ack (up to a second) outlived the
   * scavenges and was promoted, and every append stored a young string into
   * an old array: the GC's work per request with sessions on
   * (docs/performance.md, "Sessions, eighth pass"). Here the strings die
   * young, and the slots hold small integers. Messages are acknowledged in
   * order, so the live bytes are one run, [first held offset, arenaEnd):
   * emptied, the arena is written again from 0; full, the run moves to the
   * front (or into a bigger arena, up to ARENA_MAX).
   */
  arena: Arena | null;
  arenaEnd: number;
  /** Made on the first join: most sessions join nothing (a Set costs ~160 bytes empty). */
  topics: Set<string> | null;
  data: JsonValue;
  /**
   * The reply seqs of the last maxRememberedReplies requests, a ring: request
   * c (≥ 1) is at (c - 1) % maxRememberedReplies while c > lastCseq -
   * maxRememberedReplies (requests are counted one by one from 1, so every
   * such c ran here). A slot holds undefined (counted, not finished: a
   * duplicate is `pending`), NO_REPLY (ran, sent no reply: `endRequest`), a
   * seq (one message), the seqs (several) or null (more than MAX_SEQS_PER_REPLY).
   * Made on the first request, grown one slot per request up to the bound: no
   * map, array or iterator per request.
   */
  replies: ReplySlot[] | null;
}

/** A slot of `Body.held`: a message's data (its offset in the arena when a number), or its size (~size when binary). */
type HeldSlot = string | Buffer | number;

/** A session's own message of at most this many bytes is copied into its arena; a bigger one is held by reference. */
const ARENA_MESSAGE_MAX = 1024;
/**
 * Buffer's own encoders (on Buffer.prototype since Node 0.x, not in its
 * typings): `write(s, off, n, enc)` is these after checking its arguments,
 * which the store has done already.
 */
interface RawWrites {
  latin1Write(s: string, offset: number, length: number): number;
  utf8Write(s: string, offset: number, length: number): number;
}
type Arena = Buffer & RawWrites;

/** A new arena's size: a few replies (it doubles as needed). */
const ARENA_MIN = 256;
/** No arena grows past this: a message that does not fit (after moving the live bytes to the front) is held by reference. */
const ARENA_MAX = 16 * 1024;
/** An arena emptied by an ack is kept (written again from 0) up to this size; a bigger one goes, as a big slot buffer does. */
const ARENA_KEEP = 4 * 1024;

/** The buffer of a session that holds nothing yet (most idle ones): one empty array for all, frozen (never pushed to). */
const NO_MESSAGES: HeldSlot[] = Object.freeze([]) as unknown as HeldSlot[];

/**
 * A buffer emptied by an ack is kept and written again from its start while
 * it has at most this many slots (2 per message: 128 messages, ~2 KiB); a
 * bigger one (a burst, a slow reader) is let go of, and the next message
 * starts a new one.
 */
const REUSE_SLOTS = 256;

/** An ack that leaves at most this many slots held (8 messages) moves them to the front, so the buffer is reused too. */
const MOVE_SLOTS = 16;

/** Where `b`'s held slots end: the next message goes there. */
function heldEnd(b: Body): number {
  return b.head + 2 * (b.lastSeq - b.ackedSeq);
}

function newBody(): Body {
  return {
    detachedAt: null, lastSeq: 0, ackedSeq: 0, lastCseq: 0, held: NO_MESSAGES, head: 0, bytes: 0, arena: null, arenaEnd: 0,
    topics: null, data: null, replies: null,
  };
}

/** The body of every session that has not changed one of its fields yet (Session.body): frozen, never written. */
const EMPTY_BODY: Body = Object.freeze(newBody());

/** `s`'s own body, made now if it has the shared one (EMPTY_BODY): what every write to a body goes through. */
function own(s: Session): Body {
  const b = s.body;
  return b !== EMPTY_BODY ? b : (s.body = newBody());
}

type ReplySlot = number | number[] | null | undefined;

/** A reply slot's "ran, and sent no reply" (seq 0 is never assigned). */
const NO_REPLY = 0;

/** This store lives in one process: whoever counted a request is this process, alive. */
const PENDING_HERE: RequestVerdict = Object.freeze({ kind: 'pending', here: true });

/** The verdict `new` carries nothing: one object for every request. */
const NEW: RequestVerdict = Object.freeze({ kind: 'new' });

interface Tombstone {
  reason: 'expired' | 'overflow';
  detail: string;
  until: number;
}

export class MemorySessionStore implements SessionStore {
  readonly name = 'memory';
  /**
   * The data path without promises (SessionStoreSync): the same calls as the
   * async methods, which only wrap them. Left undefined when a subclass
   * overrides one of those (a test store that delays its answers, a wrapper
   * that counts): the supervisor then goes through the override.
   */
  readonly sync: SessionStoreSync | undefined;
  readonly #limits: Required<Omit<MemorySessionStoreOptions, 'now'>>;
  readonly #now: () => number;
  /** The epoch ms the sessions' times count from (Session.createdAt). */
  readonly #t0: number;
  /** A new one per store: a process that restarted has a new store, so a client's old epoch says `restarted`. */
  readonly #epoch = randomBytes(9).toString('base64url');
  readonly #sessions = new Map<string, Session>();
  /** Detached sessions, oldest detach first (a detach moves a session to the end). */
  readonly #detached = new Map<string, Session>();
  /** Ended sessions a resume is still answered about, oldest first. */
  readonly #tombstones = new Map<string, Tombstone>();
  #bufferedBytes = 0;
  #bufferedMessages = 0;
  /** The session `#live` found last (its id compared first); null once that session has ended. */
  #lastLive: Session | null = null;
  #host: SessionStoreHost | null = null;
  #closed = false;

  constructor(options: MemorySessionStoreOptions = {}) {
    const d = SESSION_STORE_DEFAULTS;
    this.#limits = {
      resumeWindow: positiveInt('sessions.resumeWindow', options.resumeWindow, d.resumeWindow),
      maxMessages: positiveInt('sessions.maxMessages', options.maxMessages, d.maxMessages),
      maxBytes: positiveInt('sessions.maxBytes', options.maxBytes, d.maxBytes),
      maxBufferedBytes: positiveInt('sessions.maxBufferedBytes', options.maxBufferedBytes, d.maxBufferedBytes),
      maxDetachedSessions: positiveInt('sessions.maxDetachedSessions', options.maxDetachedSessions, d.maxDetachedSessions),
      maxRememberedReplies: positiveInt('sessions.maxRememberedReplies', options.maxRememberedReplies, d.maxRememberedReplies),
    };
    this.#now = options.now ?? Date.now;
    this.#t0 = this.#now();
    const proto = MemorySessionStore.prototype;
    this.sync =
      this.append === proto.append && this.beginRequest === proto.beginRequest && this.endRequest === proto.endRequest && this.ack === proto.ack
        ? {
            append: (id, message, replyTo, ref) => this.#append(id, message, replyTo, ref),
            beginRequest: (id, cseq, ref) => this.#beginRequest(id, cseq, ref),
            endRequest: (id, cseq, ref) => this.#endRequest(id, cseq, ref),
            ack: (id, seq, ref) => this.#ack(id, seq, ref),
          }
        : undefined;
  }

  start(host: SessionStoreHost): void {
    if (this.#host !== null) throw new Error('ws-supervisor: this session store is already started (one host per store)');
    this.#host = host;
  }

  async epoch(): Promise<string> {
    return this.#epoch;
  }

  async create(init: { owner: string | null; data?: JsonValue }): Promise<CreatedSession> {
    this.#usable();
    const now = this.#since();
    let { id, token } = newTokenBoundSession();
    while (this.#sessions.has(id) || this.#tombstones.has(id)) ({ id, token } = newTokenBoundSession()); // 2^-128: never, but cheap to be sure
    const session: Session = { id, owner: init.owner, state: 'attached', createdAt: now, attachedAt: now, body: EMPTY_BODY };
    if (init.data !== undefined && init.data !== null) own(session).data = structuredClone(init.data);
    this.#sessions.set(id, session);
    return { id, token, epoch: this.#epoch, record: this.#record(session) };
  }

  async get(id: string): Promise<SessionRecord | null> {
    const s = this.#live(id);
    return s === null ? null : this.#record(s);
  }

  async verify(claim: ResumeClaim): Promise<VerifyResult> {
    if (claim.epoch !== undefined && claim.epoch !== this.#epoch) {
      return { ok: false, reason: 'restarted', detail: `the session store restarted (epoch ${JSON.stringify(claim.epoch)} is gone)` };
    }
    const s = this.#live(claim.id);
    if (s === null) return this.#gone(claim.id);
    // Both compared, whatever the first says: the answer's timing tells nothing about which failed.
    const tokenOk = tokenOpens(claim.token, s.id);
    const ownerOk = sameOwner(claim.owner, s.owner);
    if (!tokenOk) return { ok: false, reason: 'forbidden', detail: 'the resume token does not match' };
    if (!ownerOk) return { ok: false, reason: 'forbidden', detail: 'the session belongs to another identity' };
    return { ok: true, record: this.#record(s) };
  }

  async append(id: string, message: SessionMessage, replyTo?: number): Promise<AppendResult> {
    return this.#append(id, message, replyTo);
  }

  #append(id: string, message: SessionMessage, replyTo: number | undefined, ref?: SessionSlot): AppendResult {
    const bytes = message.bytes ?? messageBytes(message.data);
    const s = this.#live(id, ref);
    if (s === null) {
      const gone = this.#gone(id);
      return this.#refuse(id, 'unknown', `session ${id} is gone (${gone.reason}: ${gone.detail})`, message, bytes);
    }
    const was = s.body;
    const held = was.lastSeq - was.ackedSeq;
    if (held + 1 > this.#limits.maxMessages || was.bytes + bytes > this.#limits.maxBytes) {
      const detail =
        held + 1 > this.#limits.maxMessages
          ? `${held + 1} unacknowledged messages, over sessions.maxMessages ${this.#limits.maxMessages}`
          : `${was.bytes + bytes} unacknowledged bytes, over sessions.maxBytes ${this.#limits.maxBytes}`;
      this.#endSession(s, 'overflow', detail, { message, bytes });
      return { ok: false, reason: 'overflow', detail };
    }
    if (this.#bufferedBytes + bytes > this.#limits.maxBufferedBytes) {
      const detail = `${this.#bufferedBytes + bytes} bytes held by all sessions, over sessions.maxBufferedBytes ${this.#limits.maxBufferedBytes}`;
      // Detached sessions are the least likely to drain: the oldest make room first.
      for (const other of this.#detached.values()) {
        if (this.#bufferedBytes + bytes <= this.#limits.maxBufferedBytes) break;
        if (other !== s) this.#endSession(other, 'memory', detail);
      }
      if (this.#bufferedBytes + bytes > this.#limits.maxBufferedBytes) {
        this.#endSession(s, 'memory', detail, { message, bytes });
        return { ok: false, reason: 'memory', detail };
      }
    }
    const b = own(s);
    const at = heldEnd(b);
    let slots = b.held;
    if (slots === NO_MESSAGES) slots = b.held = [];
    // The session's own message: its bytes copied into the arena, its slot the offset (a shared one stays one copy).
    let data: HeldSlot = message.data;
    if (bytes <= ARENA_MESSAGE_MAX && message.shared !== true) {
      let arena = b.arena;
      let off = b.arenaEnd;
      if (arena === null || off + bytes > arena.length) {
        arena = arenaRoom(b, bytes);
        off = b.arenaEnd;
      }
      if (arena !== null) {
        // A string of as many bytes as characters is ASCII: its Latin-1 bytes are its UTF-8 bytes (the cheaper copy).
        if (typeof data === 'string') {
          if (bytes === data.length) arena.latin1Write(data, off, bytes);
          else arena.utf8Write(data, off, bytes);
        } else data.copy(arena, off);
        b.arenaEnd = off + bytes;
        data = off;
      }
    }
    const seq = ++b.lastSeq;
    // Into slots an ack emptied (a kept buffer), else at the end.
    if (at < slots.length) {
      slots[at] = data;
      slots[at + 1] = message.binary ? ~bytes : bytes;
    } else slots.push(data, message.binary ? ~bytes : bytes);
    b.bytes += bytes;
    this.#bufferedBytes += bytes;
    this.#bufferedMessages += 1;
    if (replyTo !== undefined) this.#rememberReply(s, replyTo, seq);
    return { ok: true, seq };
  }

  async ack(id: string, seq: number): Promise<AckResult> {
    return this.#ack(id, seq);
  }

  #ack(id: string, seq: number, ref?: SessionSlot): AckResult {
    if (!Number.isSafeInteger(seq) || seq < 0) return { ok: false, error: `ack seq must be an integer ≥ 0, got ${String(seq)}` };
    const s = this.#live(id, ref);
    if (s === null) return { ok: false, error: `session ${id} is gone` };
    const last = s.body.lastSeq;
    if (seq > last) return { ok: false, error: `ack ${seq} is beyond the last seq sent, ${last}` };
    return { ok: true, trimmed: this.#trim(s, seq) };
  }

  async readAfter(id: string, seq: number): Promise<ReadResult> {
    return this.#readAfter(id, seq);
  }

  #readAfter(id: string, seq: number): ReadResult {
    const s = this.#live(id);
    if (s === null) return this.#gone(id);
    if (!Number.isSafeInteger(seq) || seq < 0) return { ok: false, reason: 'unknown', detail: `lastSeq must be an integer ≥ 0, got ${String(seq)}` };
    const b = s.body;
    if (seq > b.lastSeq) {
      return { ok: false, reason: 'restarted', detail: `lastSeq ${seq} is beyond the last seq this store assigned, ${b.lastSeq}` };
    }
    if (seq < b.ackedSeq) {
      return { ok: false, reason: 'overflow', detail: `lastSeq ${seq} is behind the acknowledged ${b.ackedSeq}: seqs ${seq + 1}…${b.ackedSeq} are no longer held` };
    }
    this.#trim(s, seq);
    return { ok: true, messages: heldMessages(s.body) };
  }

  async resume(id: string, seq: number): Promise<ResumeResult> {
    // One process, each call applied before it returns: the read and the attach are one moment anyway. No await
    // inside: its caller's continuation runs as soon as a readAfter's would (before appends made after the call).
    const read = this.#readAfter(id, seq);
    if (!read.ok) return read;
    const s = this.#sessions.get(id)!;
    s.state = 'attached';
    // Ms since #t0, as every time here (an epoch ms would come out of #record with #t0 added twice, and make the field
    // a heap number in every session).
    s.attachedAt = this.#since();
    this.#detached.delete(id);
    return { ok: true, record: this.#record(s), messages: read.messages };
  }

  async beginRequest(id: string, cseq: number): Promise<RequestVerdict> {
    return this.#beginRequest(id, cseq);
  }

  async endRequest(id: string, cseq: number): Promise<void> {
    this.#endRequest(id, cseq);
  }

  #endRequest(id: string, cseq: number, ref?: SessionSlot): void {
    const s = this.#live(id, ref);
    if (s === null) return;
    // Remembered: the session's own body (its ring is made by the request's count).
    const b = s.body;
    if (!this.#remembered(b, cseq)) return;
    const slot = (cseq - 1) % this.#limits.maxRememberedReplies;
    if (b.replies![slot] === undefined) b.replies![slot] = NO_REPLY;
  }

  #beginRequest(id: string, cseq: number, ref?: SessionSlot): RequestVerdict {
    const s = this.#live(id, ref);
    if (s === null) return { kind: 'unknown' };
    if (!Number.isSafeInteger(cseq) || cseq < 1) throw new RangeError(`cseq must be an integer ≥ 1, got ${String(cseq)}`);
    const b = s.body;
    if (cseq === b.lastCseq + 1) {
      const mine = own(s);
      mine.lastCseq = cseq;
      // Its reply seqs are collected from now on; the slot's previous request is forgotten (a duplicate of it gets null;
      // it still never runs again: lastCseq says so).
      const replies = (mine.replies ??= []);
      const slot = (cseq - 1) % this.#limits.maxRememberedReplies;
      if (slot === replies.length) replies.push(undefined);
      else replies[slot] = undefined;
      return NEW;
    }
    if (cseq <= b.lastCseq) {
      if (!this.#remembered(b, cseq)) return { kind: 'duplicate', replySeqs: null };
      const seqs = b.replies![(cseq - 1) % this.#limits.maxRememberedReplies];
      // Counted, not finished: its process (this one) is running it, or about to.
      if (seqs === undefined) return PENDING_HERE;
      return { kind: 'duplicate', replySeqs: seqs === NO_REPLY ? [] : typeof seqs === 'number' ? [seqs] : seqs === null ? null : seqs.slice() };
    }
    return { kind: 'gap', expected: b.lastCseq + 1 };
  }

  async rememberReply(id: string, cseq: number, seq: number): Promise<void> {
    const s = this.#live(id);
    if (s !== null) this.#rememberReply(s, cseq, seq);
  }

  #rememberReply(s: Session, cseq: number, seq: number): void {
    // A request never run, or forgotten already: nothing to remember it by.
    const b = s.body;
    if (!this.#remembered(b, cseq)) return;
    const replies = b.replies!;
    const slot = (cseq - 1) % this.#limits.maxRememberedReplies;
    const seqs = replies[slot];
    if (seqs === undefined || seqs === NO_REPLY) replies[slot] = seq;
    else if (typeof seqs === 'number') replies[slot] = [seqs, seq];
    else if (seqs === null) return;
    else if (seqs.length >= MAX_SEQS_PER_REPLY) replies[slot] = null;
    else seqs.push(seq);
  }

  /** Whether request `cseq` ran and its reply seqs are still kept. */
  #remembered(b: Body, cseq: number): boolean {
    return b.replies !== null && Number.isSafeInteger(cseq) && cseq >= 1 && cseq <= b.lastCseq && cseq > b.lastCseq - this.#limits.maxRememberedReplies;
  }

  async join(id: string, topic: string): Promise<boolean> {
    const s = this.#live(id);
    if (s === null || s.body.topics?.has(topic)) return false;
    (own(s).topics ??= new Set()).add(topic);
    return true;
  }

  async leave(id: string, topic: string): Promise<boolean> {
    const s = this.#live(id);
    // A Set only ever in the session's own body.
    return s !== null && s.body.topics !== null && s.body.topics.delete(topic);
  }

  async setData(id: string, data: JsonValue): Promise<boolean> {
    const s = this.#live(id);
    if (s === null) return false;
    const copy = structuredClone(data);
    // The shared body holds null: a null on a session that holds it already changes nothing (no body of its own).
    if (copy !== null || s.body.data !== null) own(s).data = copy;
    return true;
  }

  async attach(id: string): Promise<boolean> {
    const s = this.#live(id);
    if (s === null) return false;
    s.state = 'attached';
    s.attachedAt = this.#since();
    this.#detached.delete(id);
    return true;
  }

  async detach(id: string): Promise<boolean> {
    const s = this.#live(id);
    if (s === null) return false;
    s.state = 'detached';
    own(s).detachedAt = this.#since();
    this.#detached.delete(id);
    this.#detached.set(id, s);
    while (this.#detached.size > this.#limits.maxDetachedSessions) {
      const oldest = this.#detached.values().next().value!;
      this.#endSession(oldest, 'evicted', `${this.#detached.size} detached sessions, over sessions.maxDetachedSessions ${this.#limits.maxDetachedSessions}`);
    }
    return true;
  }

  async expire(id: string, detail?: string): Promise<boolean> {
    const s = this.#sessions.get(id);
    // A connection carries an attached session: it has no window to run out.
    if (s === undefined || s.state === 'attached') return false;
    this.#endSession(s, 'expired', detail || `detached for the resume window (${this.#limits.resumeWindow} ms)`);
    return true;
  }

  async end(id: string, detail: string): Promise<boolean> {
    const s = this.#sessions.get(id);
    if (s === undefined) return false;
    this.#endSession(s, 'ended', detail);
    return true;
  }

  async sweep(): Promise<number> {
    let expired = 0;
    // Oldest detach first: stop at the first session still inside its window.
    for (const s of this.#detached.values()) {
      if (!this.#overdue(s)) break;
      this.#endSession(s, 'expired', `detached for the resume window (${this.#limits.resumeWindow} ms)`);
      expired++;
    }
    const now = this.#now();
    for (const [id, t] of this.#tombstones) {
      if (t.until > now) break;
      this.#tombstones.delete(id);
    }
    return expired;
  }

  async stats(): Promise<SessionStoreStats> {
    return {
      sessions: this.#sessions.size,
      detached: this.#detached.size,
      bufferedMessages: this.#bufferedMessages,
      bufferedBytes: this.#bufferedBytes,
      tombstones: this.#tombstones.size,
    };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const s of [...this.#sessions.values()]) this.#endSession(s, 'ended', 'the session store closed');
    this.#tombstones.clear();
  }

  /** @internal Test hook: session `id`'s arena (its size in bytes, 0 without one; where the next message goes), or null when it is not live. */
  arenaOf(id: string): { size: number; end: number } | null {
    const s = this.#sessions.get(id);
    return s === undefined ? null : { size: s.body.arena === null ? 0 : s.body.arena.length, end: s.body.arenaEnd };
  }

  // -------------------------------------------------------------------------

  /**
   * Now, as ms since `#t0`: an int32 when it is one (a Smi: V8's arithmetic on
   * epoch ms makes heap numbers otherwise), else the number as it is (a test
   * clock's fractions, or after ~24 days).
   */
  #since(): number {
    const d = this.#now() - this.#t0;
    const i = d | 0;
    return i === d ? i : d;
  }

  #usable(): void {
    if (this.#host === null) throw new Error('ws-supervisor: start(host) the session store before using it (dead letters need a host)');
    if (this.#closed) throw new Error('ws-supervisor: the session store is closed');
  }

  #overdue(s: Session): boolean {
    if (s.state !== 'detached') return false;
    const at = s.body.detachedAt;
    return at !== null && this.#now() - this.#t0 - at >= this.#limits.resumeWindow;
  }

  /**
   * The session if it lives; one past its window is expired here (lazily), before anyone sees it. `ref`: the
   * caller's for this session (SessionSlot): the record found last time, used when it is still this id's and live.
   */
  #live(id: string, ref?: SessionSlot): Session | null {
    let s = ref === undefined ? null : (ref.storeRecord as Session | undefined) ?? null;
    if (s === null || s.id !== id || s.state === 'ended') {
      // A request's count, its reply and the ack after them name the same session: the last one found is checked first.
      s = this.#lastLive;
      if (s === null || s.id !== id) {
        s = this.#sessions.get(id) ?? null;
        if (s === null) return null;
        this.#lastLive = s;
      }
      if (ref !== undefined) ref.storeRecord = s;
    }
    if (this.#overdue(s)) {
      this.#endSession(s, 'expired', `detached for the resume window (${this.#limits.resumeWindow} ms)`);
      return null;
    }
    return s;
  }

  /** Why `id` cannot be resumed: its tombstone while it lasts, else unknown. */
  #gone(id: string): { ok: false; reason: 'expired' | 'overflow' | 'unknown'; detail: string } {
    const t = this.#tombstones.get(id);
    if (t !== undefined && t.until > this.#now()) return { ok: false, reason: t.reason, detail: t.detail };
    return { ok: false, reason: 'unknown', detail: 'no such session' };
  }

  /** Forgets the messages up to `seq` (acknowledged); returns how many. */
  #trim(s: Session, seq: number): number {
    if (seq <= s.body.ackedSeq) return 0;
    // Past ackedSeq and not past lastSeq (the callers check): a session that has had messages, so its own body.
    const b = own(s);
    const n = seq - b.ackedSeq;
    let freed = 0;
    const held = b.held;
    const tail = heldEnd(b);
    const end = b.head + 2 * n;
    for (let i = b.head; i < end; i += 2) {
      const size = held[i + 1] as number;
      freed += size < 0 ? ~size : size;
      // Let go of it now, not at the next compaction: an acknowledged message (its data too) is garbage at once.
      held[i] = 0;
    }
    b.bytes -= freed;
    this.#bufferedBytes -= freed;
    this.#bufferedMessages -= n;
    b.head = end;
    b.ackedSeq = seq;
    if (end === tail) {
      // Everything acknowledged (a request/reply client, after each ack): nothing held. A small buffer is written
      // again from its start (its slots hold 0 now); a big one goes. So is the arena.
      if (held.length > REUSE_SLOTS) b.held = NO_MESSAGES;
      b.head = 0;
      b.arenaEnd = 0;
      if (b.arena !== null && b.arena.length > ARENA_KEEP) b.arena = null;
    } else if (tail - end <= MOVE_SLOTS) {
      // A few left (a client acks by its clock with a reply on its way): moved to the front of a small buffer (a copy
      // of a big one), which goes on from there, as an emptied one does.
      if (held.length > REUSE_SLOTS) b.held = held.slice(end, tail);
      else {
        for (let i = 0; i < tail - end; i++) {
          held[i] = held[end + i]!;
          held[end + i] = 0;
        }
      }
      b.head = 0;
    } else if (end >= 2 * COMPACT_AFTER && end * 2 >= tail) {
      b.held = held.slice(end, tail);
      b.head = 0;
    }
    return n;
  }

  /**
   * Ends `s` for good: its held messages (and `refused`, a message that did
   * not fit) become one dead letter; a tombstone stays for expiry and bounds.
   */
  #endSession(s: Session, reason: SessionDeadLetterReason, detail: string, refused?: { message: SessionMessage; bytes: number }): void {
    this.#sessions.delete(s.id);
    s.state = 'ended';
    if (this.#lastLive === s) this.#lastLive = null;
    this.#detached.delete(s.id);
    const b = s.body;
    const held = heldMessages(b);
    this.#bufferedBytes -= b.bytes;
    this.#bufferedMessages -= held.length;
    if (b !== EMPTY_BODY) {
      b.held = NO_MESSAGES;
      b.head = 0;
      b.bytes = 0;
      b.arena = null;
      b.arenaEnd = 0;
    }
    if (refused) held.push({ seq: 0, data: refused.message.data, binary: refused.message.binary, bytes: refused.bytes });
    if (reason !== 'ended' && reason !== 'unknown') {
      const kind = reason === 'expired' ? 'expired' : 'overflow';
      this.#tombstones.set(s.id, { reason: kind, detail: reason === 'expired' || reason === 'overflow' ? detail : `${reason}: ${detail}`, until: this.#now() + this.#limits.resumeWindow });
      while (this.#tombstones.size > this.#limits.maxDetachedSessions) this.#tombstones.delete(this.#tombstones.keys().next().value!);
    }
    if (held.length > 0) this.#deadLetter({ sessionId: s.id, reason, detail, messages: held });
  }

  #refuse(id: string, reason: SessionDeadLetterReason, detail: string, message: SessionMessage, bytes: number): AppendResult {
    this.#deadLetter({ sessionId: id, reason, detail, messages: [{ seq: 0, data: message.data, binary: message.binary, bytes }] });
    return { ok: false, reason, detail };
  }

  #deadLetter(letter: Parameters<SessionStoreHost['deadLetter']>[0]): void {
    if (this.#host === null) throw new Error('ws-supervisor: start(host) the session store before using it (dead letters need a host)');
    this.#host.deadLetter(letter);
  }

  #record(s: Session): SessionRecord {
    const b = s.body;
    return {
      id: s.id, owner: s.owner, state: s.state as 'attached' | 'detached', createdAt: this.#t0 + s.createdAt, attachedAt: this.#t0 + s.attachedAt,
      detachedAt: b.detachedAt === null ? null : this.#t0 + b.detachedAt,
      lastSeq: b.lastSeq, ackedSeq: b.ackedSeq, lastCseq: b.lastCseq, bufferedMessages: b.lastSeq - b.ackedSeq,
      bufferedBytes: b.bytes, topics: b.topics === null ? [] : [...b.topics], data: structuredClone(b.data),
    };
  }
}

/** The held messages of `b` as StoredMessages, in seq order (a replay, a dead letter: made when asked for). */
function heldMessages(b: Body): StoredMessage[] {
  const held = b.held;
  const out: StoredMessage[] = [];
  let seq = b.ackedSeq;
  const tail = heldEnd(b);
  for (let i = b.head; i < tail; i += 2) {
    const size = held[i + 1] as number;
    const d = held[i]!;
    if (typeof d === 'number') {
      // In the arena: the exact bytes it was sent as (text decodes to a string that encodes to them again).
      const arena = b.arena!;
      out.push(
        size < 0
          ? { seq: ++seq, data: Buffer.from(arena.subarray(d, d + ~size)), binary: true, bytes: ~size }
          : { seq: ++seq, data: arena.toString('utf8', d, d + size), binary: false, bytes: size },
      );
    } else out.push(size < 0 ? { seq: ++seq, data: d, binary: true, bytes: ~size } : { seq: ++seq, data: d, binary: false, bytes: size });
  }
  return out;
}

/**
 * Room for `bytes` more at `b.arenaEnd` (moved there): the live bytes (from
 * the first held message in the arena to arenaEnd) move to the front of the
 * arena when that frees at least half of it, else into a new one twice the
 * size, up to ARENA_MAX; the held slots' offsets move with them. Null: they
 * do not fit in ARENA_MAX with room to spare (the message is held by reference).
 */
function arenaRoom(b: Body, bytes: number): Arena | null {
  const held = b.held;
  const tail = heldEnd(b);
  let start = b.arenaEnd;
  for (let i = b.head; i < tail; i += 2) {
    const d = held[i];
    if (typeof d === 'number') {
      start = d;
      break;
    }
  }
  const live = b.arenaEnd - start;
  const need = live + bytes;
  let arena = b.arena;
  if (arena === null || need * 2 > arena.length) {
    // Too much held here to move cheaply: held by reference. The arena is left as it is (its offsets stay right).
    if (need * 2 > ARENA_MAX) return null;
    let size = arena === null ? ARENA_MIN : arena.length * 2;
    while (size < need * 2) size *= 2;
    const next = Buffer.allocUnsafeSlow(size) as Arena;
    if (arena !== null && live > 0) arena.copy(next, 0, start, b.arenaEnd);
    arena = b.arena = next;
  } else if (live > 0) arena.copyWithin(0, start, b.arenaEnd);
  b.arenaEnd = live;
  if (start !== 0) {
    for (let i = b.head; i < tail; i += 2) {
      const d = held[i];
      if (typeof d === 'number') held[i] = d - start;
    }
  }
  return arena;
}

/** The in-memory session store (the default). Options: see MemorySessionStoreOptions; a bad value throws RangeError naming it. */
export function createMemorySessionStore(options: MemorySessionStoreOptions = {}): MemorySessionStore {
  return new MemorySessionStore(options);
}
