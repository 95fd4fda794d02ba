/**
 * The hub (registry) of live connections, owned by the supervisor: register on
 * open, unregister on close (R3), and a broadcast that never waits on any one
 * connection (R11): it only enqueues into each connection's own send queue.
 *
 * It also keeps topic (room) membership, local to this process: a topic is a
 * set of live connections, created by its first join and deleted with its last
 * member, so an unused topic costs nothing. unregister drops every membership
 * of the closed connection (R3). Cross-process fan-out is the adapter's job
 * (src/adapter/), not the hub's.
 */
import type { Connection, Traffic } from './connection.ts';
import { DEFAULTS } from './options.ts';
import { TopicError, validateTopic } from '../protocol/topics.ts';

export interface BroadcastResult {
  /** Connections whose send queue accepted the message. */
  accepted: number;
  /** Connections that refused it: closing, or over their queue limit (then closed as slow consumers). */
  refused: number;
}


export interface HubOptions {
  /** R21: topics one connection may be in at once; a join beyond it throws TopicError('too-many-topics'). Default 100. */
  maxTopicsPerConnection?: number;
}

export class Hub<Auth = unknown> {
  private readonly live = new Map<string, Connection<Auth>>();
  /** topic → its live members, in order of joining. Never holds an empty set. */
  private readonly topics = new Map<string, Set<Connection<Auth>>>();
  /** connection id → its topics. Only for connections in at least one topic. */
  private readonly memberships = new Map<string, Set<string>>();
  private readonly maxTopicsPerConnection: number;
  /**
   * The traffic of every connection unregistered so far: what metrics and
   * the dashboard add to the live connections' counts for totals.
   */
  readonly closedTraffic: Traffic = { messagesIn: 0, bytesIn: 0, messagesOut: 0, bytesOut: 0 };

  constructor(options: HubOptions = {}) {
    this.maxTopicsPerConnection = options.maxTopicsPerConnection ?? DEFAULTS.maxTopicsPerConnection;
  }

  register(connection: Connection<Auth>): void {
    this.live.set(connection.id, connection);
  }

  unregister(connection: Connection<Auth>): void {
    if (!this.live.delete(connection.id)) return;
    // R3: a closed connection leaves every topic; emptied topics are deleted.
    const mine = this.memberships.get(connection.id);
    if (mine) {
      this.memberships.delete(connection.id);
      for (const topic of mine) this.removeMember(topic, connection);
    }
    const s = connection.stats;
    this.closedTraffic.messagesIn += s.messagesIn;
    this.closedTraffic.bytesIn += s.bytesIn;
    this.closedTraffic.messagesOut += s.messagesOut;
    this.closedTraffic.bytesOut += s.bytesOut;
  }

  get size(): number {
    return this.live.size;
  }

  get(id: string): Connection<Auth> | undefined {
    return this.live.get(id);
  }

  /** Live connections (not yet closed), in order of arrival. */
  values(): IterableIterator<Connection<Auth>> {
    return this.live.values();
  }

  [Symbol.iterator](): IterableIterator<Connection<Auth>> {
    return this.live.values();
  }

  /**
   * Sends to every live connection (or those `filter` keeps). A string is
   * encoded once and goes out as a text frame; a Buffer as binary unless
   * `binary` is false.
   */
  broadcast(data: string | Buffer, options: { binary?: boolean; filter?: (c: Connection<Auth>) => boolean } = {}): BroadcastResult {
    const binary = options.binary ?? typeof data !== 'string';
    const payload = typeof data === 'string' ? Buffer.from(data) : data;
    let accepted = 0;
    let refused = 0;
    for (const connection of this.live.values()) {
      if (options.filter && !options.filter(connection)) continue;
      if (connection.send(payload, binary)) accepted++;
      else refused++;
    }
    return { accepted, refused };
  }

  // -------------------------------------------------------------------------
  // Topics

  /**
   * Adds a live connection to `topic`. Returns true if it joined, false if it
   * was already a member. Throws TopicError: `invalid-topic` (see
   * validateTopic), `too-many-topics` (over maxTopicsPerConnection) or
   * `not-connected` (the connection is closed or not this hub's): nothing is
   * recorded for a connection that unregister would never see (R3).
   */
  join(connection: Connection<Auth>, topic: string): boolean {
    validateTopic(topic);
    if (this.live.get(connection.id) !== connection) {
      throw new TopicError('not-connected', `connection ${connection.id} is not open on this supervisor`);
    }
    let mine = this.memberships.get(connection.id);
    if (mine?.has(topic)) return false;
    if ((mine?.size ?? 0) >= this.maxTopicsPerConnection) {
      throw new TopicError('too-many-topics', `already in ${this.maxTopicsPerConnection} topics (the limit per connection)`);
    }
    if (!mine) this.memberships.set(connection.id, (mine = new Set()));
    mine.add(topic);
    let members = this.topics.get(topic);
    if (!members) this.topics.set(topic, (members = new Set()));
    members.add(connection);
    return true;
  }

  /** Removes a connection from `topic`. Returns true if it was a member. Throws TopicError('invalid-topic') on a bad name. */
  leave(connection: Connection<Auth>, topic: string): boolean {
    validateTopic(topic);
    const mine = this.memberships.get(connection.id);
    if (!mine?.delete(topic)) return false;
    if (mine.size === 0) this.memberships.delete(connection.id);
    this.removeMember(topic, connection);
    return true;
  }

  /** The topics a connection is in, in order of joining (empty once it has closed). */
  topicsOf(connection: Connection<Auth>): string[] {
    const mine = this.memberships.get(connection.id);
    return mine ? [...mine] : [];
  }

  /** The live local members of `topic`, in order of joining. */
  membersOf(topic: string): Connection<Auth>[] {
    const members = this.topics.get(topic);
    return members ? [...members] : [];
  }

  /** How many live local connections are in `topic` (0 for an unknown topic). */
  memberCount(topic: string): number {
    return this.topics.get(topic)?.size ?? 0;
  }

  /** Topics with at least one live local member. */
  topicNames(): string[] {
    return [...this.topics.keys()];
  }

  /** How many topics have at least one live local member. */
  get topicCount(): number {
    return this.topics.size;
  }

  /**
   * Sends to every live local member of `topic`, like broadcast (R11: only
   * enqueues). An unknown topic reaches nobody: `{ accepted: 0, refused: 0 }`.
   */
  publish(topic: string, data: string | Buffer, options: { binary?: boolean } = {}): BroadcastResult {
    const members = this.topics.get(topic);
    if (!members) return { accepted: 0, refused: 0 };
    const binary = options.binary ?? typeof data !== 'string';
    const payload = typeof data === 'string' ? Buffer.from(data) : data;
    let accepted = 0;
    let refused = 0;
    for (const connection of members) {
      if (connection.send(payload, binary)) accepted++;
      else refused++;
    }
    return { accepted, refused };
  }

  private removeMember(topic: string, connection: Connection<Auth>): void {
    const members = this.topics.get(topic);
    if (!members) return;
    members.delete(connection);
    if (members.size === 0) this.topics.delete(topic);
  }
}
