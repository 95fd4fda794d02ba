/**
 * The session store contract (docs/sessions.md): where a session's replay
 * buffer, its request bookkeeping, its topics and data live while its
 * connections come and go. It sits beside the adapter contract because the
 * Redis session store (planned) will live beside the Redis adapter, in this room.
 *
 * Every method returns a promise, so that a store may live in another process
 * (Redis: a Lua script per call, pipelined). The in-memory store
 * (memory-session-store.ts) applies each call before it returns, in call order,
 * and offers the data path (append, beginRequest, ack) without promises too:
 * `SessionStore.sync`.
 *
 * R12: nothing is dropped silently. A message the store accepted and then
 * lets go of without the client's acknowledgement (a bound, expiry, an end) is
 * handed to `host.deadLetter` with its reason; a message it refuses to accept
 * is reported in the append result and handed over the same way.
 */
import * as nodeCrypto from 'node:crypto';
import { createHash, randomFillSync, timingSafeEqual } from 'node:crypto';
import type { Logger } from '../base/logger.ts';
import type { ResumeFailureReason } from '../protocol/session.ts';

/** Why a resume cannot continue a session: the protocol's `reason` (src/protocol/session.ts). */
export type { ResumeFailureReason };

/** What the store keeps as a session's application data: JSON, so a shared store can hold it. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** One outbound message of a session. `data` is what the application sent, without the seq header. */
export interface SessionMessage {
  data: string | Buffer;
  /** Sent as a binary frame (true) or a text frame (false). */
  binary: boolean;
  /** `messageBytes(data)`, when the caller has it (a fan-out counts once for every session); a store may use it instead of counting. */
  bytes?: number;
  /**
   * The same message is appended to many sessions (a broadcast, a publish, a
   * filtered broadcast): a store that copies a message's bytes into a
   * session's own buffer (the memory store's arena) keeps this one by
   * reference instead, one copy for all.
   */
  shared?: boolean;
}

/** A message the store holds: the message and its sequence number in the session. */
export interface StoredMessage extends SessionMessage {
  seq: number;
  /** UTF-8 / raw byte length of `data`: what the byte bounds count. */
  bytes: number;
}


/**
 * Why held messages became dead letters:
 * - `overflow`: the session's own bound (maxMessages / maxBytes) was exceeded;
 * - `memory`: the store's total byte bound (maxBufferedBytes) was exceeded;
 * - `evicted`: the cap on detached sessions made room for a newer one;
 * - `expired`: the resume window passed while detached;
 * - `ended`: the session was ended (the client's `end`, or the application);
 * - `unknown`: an append to a session that does not exist (any more);
 * - `unavailable`: the store failed (Redis unreachable, hung, erroring) and no
 *   connection of this node carries the session: the message could be kept
 *   nowhere (the supervisor hands it over; docs/sessions.md, "Store failures");
 * - `moved`: a shared store's session was attached on another node since this
 *   node last held it: a message this node sent to it directly (not a
 *   broadcast or publish, which reach the other node by themselves) cannot
 *   follow it there;
 * - `fanout`: a store that fans out itself failed on a broadcast or publish
 *   (`SessionStore.fanOut`): the member sessions of other nodes that missed
 *   it are not known by name, so the letter's `sessionId` is `*` (the members
 *   this node runs get letters of their own, `unavailable`, or carry it on
 *   their connection). Also one member the store's fan-out could not append
 *   to while the others got it (its keys were not what the store wrote): its
 *   own id, the message with seq 0; that session goes on without it. And a
 *   fan-out the store refused whole (`sessionId` `*`): made by a request
 *   another node took over and ran again (`FanOutFence`), or queued on a
 *   node that stalled past its lease.
 */
export type SessionDeadLetterReason = 'overflow' | 'memory' | 'evicted' | 'expired' | 'ended' | 'unknown' | 'unavailable' | 'moved' | 'fanout';

/** R12: messages of one session that will never reach its client. */
export interface SessionDeadLetter {
  /** The session; `*` for a failed fan-out's members that cannot be named (reason `fanout`, or the one member that failed). */
  sessionId: string;
  reason: SessionDeadLetterReason;
  /** For people and logs: which bound, which numbers. */
  detail: string;
  /** In seq order. A message refused by `append` has seq 0 (it never got one). */
  messages: StoredMessage[];
}

/** Where a session is. */
export type SessionState = 'attached' | 'detached';

/** What the store knows of a live session (a copy: changing it changes nothing). */
export interface SessionRecord {
  id: string;
  /** The `authenticate` identity the session is bound to, or null for an anonymous one. */
  owner: string | null;
  state: SessionState;
  createdAt: number;
  /** When a connection last attached (creation counts), epoch ms. */
  attachedAt: number;
  /** When the session last detached, epoch ms; null while it never has. */
  detachedAt: number | null;
  /** The last seq assigned (0: none yet). */
  lastSeq: number;
  /** Every seq up to this one was acknowledged by the client (and forgotten). */
  ackedSeq: number;
  /** The last client request (cseq) run; 0: none. */
  lastCseq: number;
  /** Held messages: count and bytes (not yet acknowledged). */
  bufferedMessages: number;
  bufferedBytes: number;
  /** Topic memberships, in joining order. */
  topics: string[];
  data: JsonValue;
}

/** The result of creating a session: the only time the token is ever seen in clear. */
export interface CreatedSession {
  id: string;
  token: string;
  epoch: string;
  record: SessionRecord;
}

export type VerifyResult =
  | { ok: true; record: SessionRecord }
  | { ok: false; reason: ResumeFailureReason; detail: string };

export type AppendResult =
  | { ok: true; seq: number }
  /**
   * The message became a dead letter for `reason` (already handed to the
   * host), except `moved`: a shared store refuses an append from a node whose
   * hold on the session is stale (another node attached it since); nothing is
   * kept and nothing handed over, the caller decides (the supervisor drops
   * its stale copy of the session).
   */
  | { ok: false; reason: SessionDeadLetterReason; detail: string };

export type ReadResult =
  | { ok: true; messages: StoredMessage[] }
  | { ok: false; reason: ResumeFailureReason; detail: string };

/** A resume's step in the store: the session attached here and read, at one moment (`resume`). */
export type ResumeResult =
  | { ok: true; record: SessionRecord; messages: StoredMessage[] }
  | { ok: false; reason: ResumeFailureReason; detail: string };

export type AckResult =
  | { ok: true; trimmed: number }
  /** An ack beyond the last seq sent (a protocol violation), or for a session that is gone. */
  | { ok: false; error: string };

/** What to do with client request `cseq`. */
export type RequestVerdict =
  /** The next request: run it (the store has counted it as run). */
  | { kind: 'new' }
  /** Already run: answer, never run again. `replySeqs`: the seqs of its reply, null when no longer remembered. */
  | { kind: 'duplicate'; replySeqs: number[] | null }
  /** A request skipped (cseq beyond the next one): a protocol violation. */
  | { kind: 'gap'; expected: number }
  /**
   * Counted as run by a process that is alive and has neither stored its
   * reply nor said it sent none (`endRequest`): it is running it, or about to.
   * Ask again later; never run it here meanwhile. `here`: that process is
   * this one (this store instance), which alone knows whether it still will
   * (a count whose answer was lost is nobody's to run but this process's).
   * A shared store answers `new` instead once that process is known dead (its
   * lease lapsed) or has left the request unfinished for a whole lease: the
   * asker takes the count over and runs it (docs/sessions.md, "Across nodes").
   */
  | { kind: 'pending'; here: boolean }
  /**
   * A shared store: another process attached the session since this one held
   * it, so this one may not count requests for it any more (not counted).
   */
  | { kind: 'moved' }
  /** The session is gone. */
  | { kind: 'unknown' };

/** Counts for metrics and the dashboard. */
export interface SessionStoreStats {
  sessions: number;
  detached: number;
  bufferedMessages: number;
  bufferedBytes: number;
  tombstones: number;
}

/** What a store may call back on its host (the supervisor). */
export interface SessionStoreHost {
  /** R12: messages that will never reach their client. */
  deadLetter(letter: SessionDeadLetter): void;
  readonly logger: Logger | null;
  /**
   * A store that fans out itself (`SessionStore.fanOut`): sessions this node
   * holds attached got a broadcast or publish (whichever node made it) under
   * these seqs, or a seq this node may not have been told of exists
   * (`message` null: read what is missing). Deliver in seq order.
   */
  fanOutDelivered?(delivery: FanOutDelivery): void;
  /** A store that fans out itself: some notifications may have been lost (its channel reconnected): catch up every carried session. */
  fanOutResync?(): void;
  /**
   * A shared store: sessions this node held attached that the store no
   * longer counts as attached here (their lease lapsed, say the node stalled
   * past it, and another node's sweep detached them): no fan-out tells this
   * node of them any more.
   */
  attachLost?(ids: string[]): void;
  /**
   * A shared store: sessions this node holds attached that another node has
   * attached since (the client resumed there while its connection here
   * stayed open, half-open): that connection carries the session no more.
   */
  attachMoved?(ids: string[]): void;
}

/** What a store's fan-out tells the node that holds some of its member sessions attached (docs/sessions.md, "Fan-out in the store"). */
export interface FanOutDelivery {
  /** The message, once for all; null: positions only (the sessions' streams reach `seq`: read what was not written). */
  message: SessionMessage | null;
  /** In seq order per session. */
  sessions: { id: string; seq: number }[];
  /** Sessions the fan-out's append ended (a bound): their dead letters went to the node that ran it. */
  ended: { id: string; reason: SessionDeadLetterReason; detail: string }[];
  /** The id the fan-out's caller gave it (`SessionFanOut.broadcast`/`publish`), if any; none on a position. */
  fanOut?: string;
}

/**
 * A store shared by every node that appends broadcasts and publishes to the
 * member sessions' streams itself, in one place (docs/sessions.md, "Fan-out
 * in the store"): the publishing node calls it once; no node appends them
 * session by session. Every member session gets the message once, whether a
 * node holds it or none, or it is moving between two; the nodes holding
 * members attached hear of it through `SessionStoreHost.fanOutDelivered`.
 */
export interface SessionFanOut {
  /**
   * Every live session of the store. `id`: the fan-out's name, unique in
   * the cluster, told with each of its notifications (`FanOutDelivery.fanOut`):
   * the caller tells a late notification of a fan-out that it saw fail.
   */
  broadcast(message: SessionMessage, id?: string, fence?: FanOutFence): Promise<FanOutResult>;
  /** The sessions that joined `topic` (`id` and `fence` as broadcast's). */
  publish(topic: string, message: SessionMessage, id?: string, fence?: FanOutFence): Promise<FanOutResult>;
}

/**
 * The request whose handler made a fan-out (in its turn), for the store's
 * fencing check: the store refuses the fan-out (`FanOutResult.refused`,
 * appended to none) when another node attached the session since this node
 * held it and the request's count is no longer this node's (another node took
 * it over and ran the request again: its fan-out came from there). A fan-out
 * made outside a request's turn has none, and is never refused by it.
 */
export interface FanOutFence {
  /** The session whose request it is. */
  sessionId: string;
  /** The request (`cseq`) whose handler runs. */
  cseq: number;
}

export interface FanOutResult {
  /** Sessions appended to by the call itself (a large fan-out goes on in later calls: `pending`). */
  appended: number;
  /** Members are left to append in later calls of the store, in order (nothing is lost if this node dies: any node's store finishes it). */
  pending: boolean;
  /** Only when the store refused it (its fence, `FanOutFence`; or, one without a fence, queued too long by a stalled process): appended to none; why, for the dead letter. */
  refused?: string;
}

export interface ResumeClaim {
  id: string;
  token: string;
  /** The identity of the connection that wants to resume (the same rule as `create`'s owner). */
  owner: string | null;
  /** The epoch the client was told in `attached`; undefined when it did not send one. */
  epoch?: string;
}

/**
 * The data path without promises, for a store that applies every call in this
 * process before it returns (the in-memory store). Each method is its async
 * namesake answered at once: the same checks, effects and results, and calls
 * here and async calls are applied in the order they are made. When a store
 * offers it, the supervisor appends, counts requests and takes acks through
 * it (no promise per message; a request runs in the turn its frame arrived:
 * docs/sessions.md, "The store contract"). Failures are thrown, where the async method
 * would reject.
 */
export interface SessionStoreSync {
  append(id: string, message: SessionMessage, replyTo?: number, slot?: SessionSlot): AppendResult;
  beginRequest(id: string, cseq: number, slot?: SessionSlot): RequestVerdict;
  endRequest(id: string, cseq: number, slot?: SessionSlot): void;
  ack(id: string, seq: number, slot?: SessionSlot): AckResult;
}

/**
 * What the caller keeps for one session and hands back with every call of
 * the sync data path on it: the store may keep its own record of the session
 * in `storeRecord`, so that a message does not look the session up by id (the
 * memory store does: that lookup was ~1% of a request with sessions on,
 * docs/performance.md, "Sessions, eighth pass"). Opaque to the caller, which
 * starts it at undefined; a store checks what it finds there (the id, and that
 * the session still lives) and answers as it would without it.
 */
export interface SessionSlot {
  storeRecord: unknown;
}

export interface SessionStore {
  /** 'memory', 'redis', … (logs, metrics). */
  readonly name: string;
  /**
   * The data path without promises, or undefined (a store in another process,
   * Redis). Offer it only when the async `append`, `beginRequest` and `ack`
   * are these, answered at once: the supervisor then calls only these.
   */
  readonly sync?: SessionStoreSync | undefined;
  /** Present when the store fans broadcasts and publishes out itself (a shared store: Redis); the memory store does not. */
  readonly fanOut?: SessionFanOut | undefined;
  /**
   * A shared store: how long a process's count of a request holds without
   * the process renewing its lease (ms). A `new` verdict this process reads
   * that long after it asked may no longer be its own: another process may
   * have taken the count over and run the request (`pending`'s takeover), so
   * the host does not run it (docs/sessions.md, "Across nodes"). Undefined:
   * one process, nobody takes a count over.
   */
  readonly leaseTtl?: number | undefined;
  /** Called once by the host, before any other method. */
  start(host: SessionStoreHost): void;
  /** The store's epoch: a new one whenever the store starts without its data (a restart, a flush). */
  epoch(): Promise<string>;
  /** A new session, attached, bound to `owner`. */
  create(init: { owner: string | null; data?: JsonValue }): Promise<CreatedSession>;
  /** The live session, or null (unknown, expired, ended). */
  get(id: string): Promise<SessionRecord | null>;
  /**
   * Whether `claim` may resume its session: the epoch (`restarted`), the id
   * (`unknown`, or the tombstone's `expired` / `overflow`), the token and the
   * owner (`forbidden`, compared in constant time), and the resume window
   * (`expired`). Changes nothing, except that a session found past its
   * window is expired there and then (its dead letters handed over).
   */
  verify(claim: ResumeClaim): Promise<VerifyResult>;
  /**
   * Keeps `message` for the session under the next seq. A bound that it
   * would exceed ends the session (or others: maxBufferedBytes ends the oldest
   * detached sessions first) and makes their messages dead letters.
   * `replyTo`: the message answers client request `replyTo`; remembered in
   * the same step (as `rememberReply`). A shared store accepts such a reply
   * from the process that counted the request even after another attached
   * the session (the reply is the request's outcome: it goes to the stream
   * in seq order, and the new holder writes it), and refuses everything else
   * from a stale process (`moved`).
   */
  append(id: string, message: SessionMessage, replyTo?: number): Promise<AppendResult>;
  /** The client has every seq ≤ `seq`: forget them. An ack at or below the last one changes nothing. */
  ack(id: string, seq: number): Promise<AckResult>;
  /**
   * The held messages after `seq`, in order: the replay for a client that has
   * every seq ≤ `seq` (so those count as acknowledged and are forgotten).
   * Fails with `overflow` when some of them are no longer held (`seq` is below
   * the acknowledged one), `restarted` when `seq` is beyond the last seq
   * assigned (the store lost what the client has).
   */
  readAfter(id: string, seq: number): Promise<ReadResult>;
  /**
   * The resume's step after `verify`, in one atomic step: as `readAfter(id,
   * seq)`, and when that can go on, the session is attached here (as
   * `attach`) and its record read, all at one moment. So nothing another
   * process holding the session before counts or appends can fall between the
   * read and the attach (a shared store refuses it from then on: `moved`),
   * except the reply of a request that process had counted (`append`'s
   * `replyTo`), which lands after the read, in seq order.
   */
  resume(id: string, seq: number): Promise<ResumeResult>;
  /**
   * Optional: the held messages after `seq` (those at or below the
   * acknowledged seq are gone), changing nothing. What a node reads to fill a
   * seq gap on a connection: it has written more than its client may have
   * received, so it must not trim (readAfter would). A store without it is
   * read with readAfter (the in-memory store: gaps come only from a takeover
   * in the turn of a resume's read).
   */
  peekAfter?(id: string, seq: number): Promise<ReadResult>;
  /**
   * Optional: resolves once every operation sent so far has been answered
   * (or failed), after their callers' continuations. A node that sees a seq
   * before the one it follows waits for it first: the missing one is most
   * often its own append's answer, still on its way.
   */
  answered?(): Promise<void>;
  /**
   * Counts client request `cseq` as run if it is the next one (remembering
   * which process counted it); otherwise says what it is. A shared store
   * checks the attach generation this process holds, as `append` does
   * (`moved`: not counted).
   */
  beginRequest(id: string, cseq: number): Promise<RequestVerdict>;
  /**
   * Request `cseq` ran and its handler sent no reply in its turn: a
   * `duplicate` of it now gets `replySeqs: []` at once instead of `pending`.
   */
  endRequest(id: string, cseq: number): Promise<void>;
  /**
   * Optional (a shared store): this process will not run these requests it
   * may have counted (its connection left them unrun; the client re-sends
   * them on its next resume). A count still this process's and unfinished is
   * released: the next process asked about it runs it at once, instead of
   * waiting a lease for it (`pending`). A store of one process has no use for
   * it: a count of its own left unrun is run when re-sent (`pending`, `here`).
   */
  releaseRequests?(id: string, cseqs: readonly number[]): Promise<void>;
  /** Remembers that message `seq` answers request `cseq` (for `duplicate` answers); a bounded number per session. */
  rememberReply(id: string, cseq: number, seq: number): Promise<void>;
  /** Topic memberships; false when the session is gone (join: or was already a member; leave: or was not). */
  join(id: string, topic: string): Promise<boolean>;
  leave(id: string, topic: string): Promise<boolean>;
  /** The application's per-connection data; false when the session is gone. */
  setData(id: string, data: JsonValue): Promise<boolean>;
  /** A connection carries the session again (after the replay); false when it is gone. */
  attach(id: string): Promise<boolean>;
  /** Its connection closed: the resume window starts; the detached cap may end the oldest detached session. */
  detach(id: string): Promise<boolean>;
  /**
   * The resume window passed: a detached session ends, its messages become dead letters (`expired`), a tombstone stays. False for an attached one.
   * `detail`: why, when it is not the window (the tombstone's, told to a later resume; default: the resume window's).
   */
  expire(id: string, detail?: string): Promise<boolean>;
  /** The session ends for good (`ended`); a later resume gets `unknown`. */
  end(id: string, detail: string): Promise<boolean>;
  /** Expires every detached session past its window; returns how many. */
  sweep(): Promise<number>;
  stats(): Promise<SessionStoreStats>;
  /** Releases everything; held messages become dead letters (`ended`). Idempotent. */
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------
// Credentials, shared by every store implementation

/** Session ids: 16 random bytes, base64url (22 characters). */
export const SESSION_ID_BYTES = 16;
/** Resume tokens: 32 random bytes, base64url (43 characters): 256 bits, not guessable. */
export const SESSION_TOKEN_BYTES = 32;

/**
 * Random bytes for ids and tokens, drawn from one pool refilled from the
 * CSPRNG (as `randomBytes`, which it replaces): each byte is used once. One
 * Buffer for many sessions instead of a Buffer (and its malloc'd backing
 * store) per id and per token, freed only by a later GC (docs/performance.md,
 * "Sessions: idle").
 */
const RANDOM_POOL = Buffer.alloc(64 * (SESSION_ID_BYTES + SESSION_TOKEN_BYTES));
let randomOffset = RANDOM_POOL.length;

function randomBase64url(bytes: number): string {
  if (randomOffset + bytes > RANDOM_POOL.length) {
    randomFillSync(RANDOM_POOL);
    randomOffset = 0;
  }
  const out = RANDOM_POOL.toString('base64url', randomOffset, randomOffset + bytes);
  // Used once: nothing of it stays in the pool to be read again.
  RANDOM_POOL.fill(0, randomOffset, randomOffset + bytes);
  randomOffset += bytes;
  return out;
}

export function newSessionId(): string {
  return randomBase64url(SESSION_ID_BYTES);
}

export function newSessionToken(): string {
  return randomBase64url(SESSION_TOKEN_BYTES);
}

/** Node's one-shot `crypto.hash` (20.12+): no Hash object per digest; `createHash` on older 20.x. */
const oneShotHash = (nodeCrypto as { hash?: (algorithm: string, data: string, encoding: 'buffer') => Buffer }).hash;

/** What a store keeps instead of the token: its SHA-256. A dump of the store yields no usable token. */
export function tokenDigest(token: string): Buffer {
  return oneShotHash !== undefined ? oneShotHash('sha256', token, 'buffer') : createHash('sha256').update(token, 'utf8').digest();
}

/** Constant-time comparison of a presented token with a kept digest (digests are equally long by construction). */
export function tokenMatches(token: string, digest: Buffer): boolean {
  return timingSafeEqual(tokenDigest(token), digest);
}

/**
 * A session's id and token where the id is the first SESSION_ID_BYTES of the
 * token's SHA-256 (base64url, 22 characters, as a random id): the id is the
 * digest a store keeps, so a store that keeps the id keeps nothing more to
 * check the token by (`tokenOpens`). The in-memory store's credentials: 56
 * bytes less per session than a random id and a digest string beside it
 * (docs/performance.md, "Sessions, ninth pass"). As unguessable as a random
 * id (the token is 256 random bits), and a store dump or a log line yields no
 * usable token: finding a token for a known id is a 128-bit preimage.
 */
export function newTokenBoundSession(): { id: string; token: string } {
  const token = newSessionToken();
  return { id: tokenDigest(token).toString('base64url', 0, SESSION_ID_BYTES), token };
}

/** Whether `token` is the one `id` was made from (`newTokenBoundSession`), in constant time. */
export function tokenOpens(token: string, id: string): boolean {
  const kept = Buffer.from(id, 'base64url');
  // Every id such a store holds decodes to SESSION_ID_BYTES; the comparison below needs equal lengths.
  if (kept.length !== SESSION_ID_BYTES) return false;
  return timingSafeEqual(tokenDigest(token).subarray(0, SESSION_ID_BYTES), kept);
}

/** Whether two owners are the same identity; compared in constant time too (an owner may be a secret-ish user id). */
export function sameOwner(a: string | null, b: string | null): boolean {
  if (a === null || b === null) return a === b;
  return timingSafeEqual(tokenDigest(a), tokenDigest(b));
}

/** The byte length the bounds count for one message. */
export function messageBytes(data: string | Buffer): number {
  return typeof data === 'string' ? Buffer.byteLength(data, 'utf8') : data.length;
}
