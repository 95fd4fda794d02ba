/**
 * Fan-out in the store (docs/sessions.md, "Fan-out in the store"): with a
 * store that appends broadcasts and publishes to the member sessions itself
 * (`SessionStore.fanOut`, the Redis store), the publishing node makes one
 * store call per message, and no node appends it session by session. This
 * file is the node's side of it, kept apart from the per-session data path
 * of sessions.ts:
 *
 * - `routeFanOut`: the store tells this node which sessions it holds attached
 *   got which seq (one notification per chunk of members, the message once);
 *   each goes to the connection carrying the session, which writes seqs in
 *   order (a seq that arrives early waits; a missing one is read from the
 *   store). A notification with no message is a position: the session's
 *   stream reaches that seq, read what the connection lacks (a fan-out that
 *   ran between a resume's replay read and its attach told no node).
 * - `fanOutFailureDetail`: the words of the dead letter for a fan-out the store
 *   failed on (sessions.ts reports it: R12, never a silent gap);
 *   `fanOutRefusedDetail`, for one its fence refused (FanOutFence).
 */
import type { FanOutDelivery, SessionDeadLetterReason } from '../adapter/session-store.ts';
import type { Outbound } from './writer.ts';

/** What a connection carrying a session offers the fan-out (SessionBinding). */
export interface FanOutCarrier {
  /** A message of the session got its seq: write it in order (`frames`: the notification's, shared by the sessions at one seq). */
  deliver(seq: number, data: Outbound, binary: boolean, frames?: SeqFrames | null): void;
  /** The session is unpersisted: write it under the next local seq. */
  deliverLocal(data: Outbound, binary: boolean): boolean;
  /** The session's stream reaches `seq`: read from the store what was not written yet. */
  catchUp(seq: number): void;
}

/** A fan-out's frames by seq (sessions.ts FanOutFrames): sessions at the same seq share one frame, made once. */
export interface SeqFrames {
  frame(seq: number): Buffer;
}

/** A session this node runs a machine for (sessions.ts's entry), as the fan-out sees it. */
export interface FanOutSession {
  readonly ended: boolean;
  readonly unpersisted: boolean;
  readonly carrier: FanOutCarrier | null;
}

/**
 * Delivers one notification of the store's fan-out to the connections of
 * this node. A session without a connection here (detached, moved on, ended)
 * has the message in its stream: its resume replays it. `ended`: the
 * fan-out's append hit a bound of the session, which ended in the store.
 * `failedHere`: for a fan-out of this node that failed unconfirmed (a
 * timeout) and that the store ran after all, whether its failure path
 * delivered it to an unpersisted `session` (it did to the members this node
 * ran then): those skip it here, and only those (a session that came to this
 * node since, and went unpersisted for another reason, gets it here).
 * `local`: how the message is written to an unpersisted session (the host
 * writes it once by the fan-out's name: its adapter copy may have come first).
 */
export function routeFanOut<S extends FanOutSession>(
  delivery: FanOutDelivery,
  lookup: (id: string) => S | undefined,
  ended: (session: S, reason: SessionDeadLetterReason, detail: string) => void,
  frames: ((data: Outbound, binary: boolean) => SeqFrames) | undefined,
  failedHere: ((session: S) => boolean) | undefined,
  local: (session: S, data: Outbound, binary: boolean) => void,
): void {
  const message = delivery.message;
  // One notification names up to FANOUT_CHUNK sessions, most at the same seq when they joined together: one frame for
  // those (measured: a frame per session was 4% of the node's CPU per delivery, its allocation and copy).
  const shared = message !== null && frames !== undefined ? frames(message.data, message.binary) : null;
  for (const { id, seq } of delivery.sessions) {
    const session = lookup(id);
    const carrier = session?.carrier;
    if (session === undefined || session.ended || carrier == null) continue;
    if (session.unpersisted) {
      // Its connection carries it alone now (its seqs jumped): the message goes on it, numbered locally. Unless this
      // node's own fan-out failed unconfirmed and Redis ran it late, and the failure path wrote it on that connection.
      // `local`: the host writes it once by the fan-out's name (its adapter copy may have come first).
      if (message !== null && !(failedHere?.(session) ?? false)) local(session, message.data, message.binary);
    } else if (message !== null) carrier.deliver(seq, message.data, message.binary, shared);
    else carrier.catchUp(seq);
  }
  for (const e of delivery.ended) {
    const session = lookup(e.id);
    if (session !== undefined && !session.ended) ended(session, e.reason, e.detail || `a fan-out's append ended it (${e.reason})`);
  }
}

/** The dead letter's detail for a fan-out the store's fence refused (FanOutFence): `why` is the store's. */
export function fanOutRefusedDetail(kind: 'broadcast' | 'publish', topic: string | null, why: string): string {
  const what = kind === 'broadcast' ? 'a broadcast to every session' : `a publish to the sessions in topic ${JSON.stringify(topic)}`;
  return `${what} was refused by the session store, appended to no session: ${why}`;
}

/** The dead letter's detail for a fan-out the store failed on. */
export function fanOutFailureDetail(kind: 'broadcast' | 'publish', topic: string | null, err: unknown): string {
  const what = kind === 'broadcast' ? 'a broadcast to every session' : `a publish to the sessions in topic ${JSON.stringify(topic)}`;
  const applied = (err as { applied?: unknown } | null)?.applied === 'unknown' ? 'it may still have been appended to some' : 'it was appended to none';
  const message = err instanceof Error ? err.message : String(err);
  return `${what} failed in the session store (${applied}): the sessions of the other nodes are not known here by name; ${message}`;
}
