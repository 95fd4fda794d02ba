/**
 * The adapter contract: how a supervisor fans broadcasts and topic publishes
 * out to the other processes (nodes) serving the same application, and how it
 * learns which nodes are alive. The supervisor delivers locally first and
 * then hands the message to its adapter, so local delivery never depends on
 * the adapter (R11); the adapter delivers other nodes' messages back through
 * its host. Implementations: src/adapter/memory.ts (the default: one process,
 * or several supervisors sharing a MemoryBus), src/adapter/redis.ts.
 */
import type { Logger } from '../base/logger.ts';

/** 'up': messages reach the other nodes; 'degraded': they may not (local delivery carries on). */
export type AdapterStatus = 'up' | 'degraded';

/** One message for the other nodes. */
export interface AdapterMessage {
  /** 'broadcast': every connection of every node; 'publish': the members of `topic` on every node. */
  kind: 'broadcast' | 'publish';
  /** The topic of a 'publish'; null for a 'broadcast'. */
  topic: string | null;
  data: Buffer;
  /** Sent as a binary frame (true) or a text frame (false). */
  binary: boolean;
  /**
   * The sender's session store appended it to every member session already
   * (a store that fans out itself, docs/sessions.md, "Fan-out in the store"):
   * receivers deliver it to their connections without a session only.
   * Absent: each receiver hands it to the sessions it runs, as before.
   */
  sessionsReached?: boolean;
  /**
   * With `sessionsReached`: the name of the store's fan-out that reached them
   * (`SessionFanOut`'s id, told with each of its notifications). A receiver
   * writes the message itself to its sessions that no longer get the store's
   * notifications (unpersisted, docs/sessions.md, "Store failures"), and by
   * the name writes it once: never as well as the notification.
   */
  fanOut?: string;
}

/**
 * Why a message this node sent may not have reached every other node:
 * - `unavailable`: the adapter was not connected; the message was not sent at all;
 * - `error`: sending failed or went unconfirmed (a timeout, a connection lost
 *   mid-command): UNCONFIRMED, it may well have been delivered (late); a
 *   node that did not get it reports it as `missed`;
 * - `partial`: sent, but fewer nodes were listening than the presence table
 *   lists (a node was reconnecting, or died and has not expired yet).
 */
export type AdapterFailureReason = 'unavailable' | 'error' | 'partial';

/** Every reason of an adapter dead letter: the sender's three, and the receiver's `missed`. */
export type AdapterDeadLetterReason = AdapterFailureReason | 'missed';

/** R12, sender side: a message this node could not confirm as handed to every other node. Local delivery already happened. */
export interface AdapterSendFailure extends AdapterMessage {
  reason: AdapterFailureReason;
  /** What went wrong, for logs. */
  error: string;
}

/**
 * Why missed messages could not be recovered (their content is gone):
 * - `no-history`: the sender keeps no history (pub/sub only: the adapter's
 *   `history` option is off on the sending node);
 * - `trimmed`: the sender's history no longer holds them (its bounds: count,
 *   bytes, age; or its history key expired);
 * - `restarted`: Redis lost its data (restarted empty, flushed) since this
 *   node last heard from the sender: the Redis epoch changed;
 * - `unreadable`: Redis answered the history read with an error;
 * - `closed`: this node closed before it could read them.
 */
export type AdapterMissedCause = 'no-history' | 'trimmed' | 'restarted' | 'unreadable' | 'closed';

/**
 * R12, receiver side: another node sent messages that never reached this one
 * (found by a gap in that node's sequence numbers: this node was
 * reconnecting, or Redis dropped its subscription) and that could not be
 * recovered from the sender's history (`cause`). Their content is unknown,
 * so `kind`, `topic`, `data` and `binary` are null.
 */
export interface AdapterMissed {
  reason: 'missed';
  /** Why they could not be recovered. */
  cause: AdapterMissedCause;
  /** The node whose messages were missed. */
  from: string;
  /** How many of its messages were missed. */
  count: number;
  kind: null;
  topic: null;
  data: null;
  binary: null;
  /** What happened, for logs. */
  error: string;
}

/** R12: an adapterDeadLetter event. Switch on `reason`: `missed` carries no message. */
export type AdapterDeadLetter = AdapterSendFailure | AdapterMissed;

/** One live node (process) of the cluster. */
export interface NodeInfo {
  id: string;
  /** Its live connections when it last reported (the calling node's own count is always current). */
  connections: number;
  /** When the node started, epoch ms (its own clock). */
  startedAt: number;
  /** When it last reported, epoch ms (its own clock). */
  updatedAt: number;
  hostname: string;
  pid: number;
  /** True for the node that answered the query. */
  self: boolean;
}

/** What an adapter may call back on the supervisor that owns it. */
export interface AdapterHost {
  /** A message published by ANOTHER node: deliver it to local connections only. */
  deliver(message: AdapterMessage): void;
  /** R12: a message that may not have reached every other node. */
  deadLetter(letter: AdapterDeadLetter): void;
  /**
   * Messages of another node that this node had missed (a gap in its
   * sequence numbers) and then read back from that node's history and
   * delivered, in order, before its newer ones. Optional: for metrics and logs.
   */
  recovered?(from: string, count: number): void;
  /** The status changed; `reason` says why it is degraded (null when up). */
  statusChanged(status: AdapterStatus, reason: string | null): void;
  /** Live local connections (for presence). */
  connections(): number;
  /** The supervisor's logger, if any. */
  readonly logger: Logger | null;
}

export interface Adapter {
  /** 'memory', 'redis', … (logs, metrics). */
  readonly name: string;
  /** This node's id, unique in the cluster. */
  readonly nodeId: string;
  readonly status: AdapterStatus;
  /** Why it is degraded, or null when up. */
  readonly statusReason: string | null;
  /** Called once, by the supervisor that owns the adapter; starts it (connects, heartbeats). */
  attach(host: AdapterHost): void;
  /**
   * Sends a message to every OTHER node (this node already delivered it
   * locally). Never throws and never waits on the other nodes (R11); what
   * cannot be confirmed goes to `host.deadLetter` (R12).
   */
  publish(message: AdapterMessage): void;
  /** The live nodes, this one included. Rejects when the adapter cannot tell (e.g. Redis is down). */
  nodes(): Promise<NodeInfo[]>;
  /** Says goodbye (leaves the presence table) and releases every connection and timer (R3). Idempotent. */
  close(): Promise<void>;
}
