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
 *
 * A fan-out bigger than what is left of the turn's slice (1000
 * recipients or 5 ms) is finished on the next turns, so a 2M-push storm
 * cannot hold the event loop; fan-outs form a FIFO, so no receiver sees a
 * later broadcast or publish before an earlier one.
 *
 * Fan-outs queued back to back over the same members (a burst of broadcasts,
 * or of publishes to one topic) run receiver by receiver: each receiver of a
 * slice gets every one of them, in order, before the next receiver, handed to
 * its writer corked, so a burst of ten leaves in one write per receiver
 * instead of one per message (docs/performance.md). The slice counts
 * messages handed over, not receivers, so the work per turn stays bounded.
 */
import type { Connection, Traffic } from './connection.ts';
import { DEFAULTS } from './options.ts';
import { frameOf } from './ws-internals.ts';
import { TopicError, validateTopic } from '../protocol/topics.ts';

export interface BroadcastResult {
  /** Connections whose send queue accepted the message (so far: see `deferred`). */
  accepted: number;
  /** Connections that refused it: closing, or over their queue limit (then closed as slow consumers). */
  refused: number;
  /**
   * Present when the fan-out is being sliced: the recipients not
   * reached yet (at most; a filter may skip some). They get it on the next
   * turns, before any later broadcast or publish (R11: still never waits).
   */
  deferred?: number;
  /** Present (true) when the `from` connection was over its fan-out budget: nothing was sent, and it is being closed 1008. */
  overBudget?: true;
}

export interface HubOptions {
  /** R21: topics one connection may be in at once; a join beyond it throws TopicError('too-many-topics'). Default 100. */
  maxTopicsPerConnection?: number;
  /** Recipients reached per event-loop turn; the rest of a fan-out follows on later turns, in order. Default 1000. */
  fanOutSlice?: number;
}

/** Longest a turn's sliced fan-out runs before it yields to I/O, ms (keeps a newcomer's round trip within a few turns). */
const SLICE_MS = 5;

/**
 * Fan-outs queued in one group at most: one receiver's share of a slice (its
 * messages are handed over together, and may overrun the slice by less than this).
 */
const GROUP_MAX = 32;

/**
 * One broadcast or publish being sliced: it reaches the members of its
 * group's walk up to the first one that came after the call (`until`), so a
 * fan-out reaches exactly the connections (or members) there at the call.
 */
interface FanOutJob<Auth> {
  readonly payload: Buffer;
  readonly binary: boolean;
  /** `payload` framed once, written as is to every receiver's socket. */
  readonly frame: Buffer;
  readonly until: number;
  readonly filter: ((c: Connection<Auth>) => boolean) | undefined;
  readonly total: number;
  visited: number;
  accepted: number;
  refused: number;
  finished: boolean;
}

/**
 * Sliced fan-outs over one member map (the live connections, or one topic's
 * members), queued back to back: one walk of the members serves them all,
 * receiver by receiver. A fan-out joins the last group only while that
 * group's walk has not begun, so every job in a group starts at the first
 * member; `until` never decreases along `jobs` (order numbers only grow).
 */
interface FanOutGroup<Auth> {
  readonly source: Map<Connection<Auth>, number>;
  readonly members: IterableIterator<[Connection<Auth>, number]>;
  readonly jobs: FanOutJob<Auth>[];
  /** The first job not finished (those before it are past their `until`). */
  head: number;
  started: boolean;
}

export class Hub<Auth = unknown> {
  private readonly live = new Map<string, Connection<Auth>>();
  /** Live connections → their order of registration (sliced broadcasts stop at the newcomers). */
  private readonly order = new Map<Connection<Auth>, number>();
  /** topic → its live members → their order of joining. Never holds an empty map. */
  private readonly topics = new Map<string, Map<Connection<Auth>, number>>();
  /** Registrations and joins so far: the order numbers above. */
  private seq = 0;
  private readonly fanOutSlice: number;
  /** Recipients reached this turn; reset at the end of the turn. */
  private spent = 0;
  /** When this turn's fan-out started (performance.now()). */
  private turnStarted = 0;
  private armed = false;
  /** Fan-outs waiting for a later turn, oldest first: no receiver sees a later one before an earlier one. */
  private readonly groups: FanOutGroup<Auth>[] = [];
  /** Unfinished jobs in `groups`. */
  private pending = 0;
  private readonly groupMax: number;
  private readonly endTurn = (): void => {
    this.armed = false;
    this.spent = 0;
    this.runJobs();
  };
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
    this.fanOutSlice = options.fanOutSlice ?? DEFAULTS.fanOutSlice;
    this.groupMax = Math.max(1, Math.min(GROUP_MAX, this.fanOutSlice));
  }

  register(connection: Connection<Auth>): void {
    this.live.set(connection.id, connection);
    this.order.set(connection, ++this.seq);
  }

  unregister(connection: Connection<Auth>): void {
    if (!this.live.delete(connection.id)) return;
    this.order.delete(connection);
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
    // Framed once: every receiver's writer writes this same Buffer.
    const frame = frameOf(payload, binary);
    const n = this.live.size;
    if (this.pending > 0 || this.spent + n > this.fanOutSlice) {
      return this.slice(payload, binary, frame, this.order, n, options.filter);
    }
    let accepted = 0;
    let refused = 0;
    for (const connection of this.live.values()) {
      if (options.filter && !options.filter(connection)) continue;
      if (options.filter ? connection.sendFramed(payload, binary, frame) : connection.fanOut(payload, binary, frame)) accepted++;
      else refused++;
    }
    this.spend(n);
    return { accepted, refused };
  }

  /** Broadcasts and publishes still being sliced. */
  get pendingFanOuts(): number {
    return this.pending;
  }

  /**
   * A fan-out bigger than what is left of this turn's slice (or
   * queued behind another) is done a slice per turn, yielding to I/O in
   * between; FIFO, so no receiver's messages are reordered.
   */
  private slice(
    payload: Buffer,
    binary: boolean,
    frame: Buffer,
    source: Map<Connection<Auth>, number>,
    total: number,
    filter: ((c: Connection<Auth>) => boolean) | undefined,
  ): BroadcastResult {
    const job: FanOutJob<Auth> = { payload, binary, frame, until: this.seq, filter, total, visited: 0, accepted: 0, refused: 0, finished: false };
    const groups = this.groups;
    const last = groups[groups.length - 1];
    if (last !== undefined && !last.started && last.source === source && last.jobs.length < this.groupMax) last.jobs.push(job);
    else groups.push({ source, members: source.entries(), jobs: [job], head: 0, started: false });
    this.pending++;
    this.runJobs();
    const left = total - job.visited;
    return !job.finished && left > 0 ? { accepted: job.accepted, refused: job.refused, deferred: left } : { accepted: job.accepted, refused: job.refused };
  }

  /**
   * Runs the queued fan-outs for what is left of this turn's slice: a group
   * receiver by receiver, each receiver getting every job of the group still
   * running (in queue order, corked together when there are several).
   */
  private runJobs(): void {
    const groups = this.groups;
    if (this.spent === 0) this.turnStarted = performance.now();
    while (groups.length > 0 && this.spent < this.fanOutSlice) {
      const group = groups[0]!;
      group.started = true;
      const jobs = group.jobs;
      const budget = this.fanOutSlice - this.spent;
      /** Messages handed over or filtered out: the slice's unit of work, as one recipient was before. */
      let visits = 0;
      let receivers = 0;
      let done = false;
      for (;;) {
        if (visits >= budget) break;
        // A slice also ends after SLICE_MS of work (checked every 64 receivers): on a busy machine sends are slower.
        if ((receivers & 63) === 63 && performance.now() - this.turnStarted > SLICE_MS) {
          this.spent = this.fanOutSlice;
          break;
        }
        const next = group.members.next();
        if (next.done) {
          done = true;
          break;
        }
        const [connection, seq] = next.value;
        // Registered (or joined) after a job's call, as is everyone after it: that job is done.
        while (group.head < jobs.length && seq > jobs[group.head]!.until) this.finish(jobs[group.head++]!);
        if (group.head === jobs.length) {
          done = true;
          break;
        }
        receivers++;
        const cork = jobs.length - group.head > 1;
        visits += jobs.length - group.head;
        for (let j = group.head; j < jobs.length; j++) {
          const job = jobs[j]!;
          job.visited++;
          if (job.filter && !job.filter(connection)) continue;
          if (job.filter ? connection.sendFramed(job.payload, job.binary, job.frame, cork) : connection.fanOut(job.payload, job.binary, job.frame, cork)) job.accepted++;
          else job.refused++;
        }
      }
      this.spend(visits);
      if (!done) break;
      while (group.head < jobs.length) this.finish(jobs[group.head++]!);
      groups.shift();
    }
    if (groups.length > 0 && !this.armed) {
      this.armed = true;
      setImmediate(this.endTurn);
    }
  }

  private finish(job: FanOutJob<Auth>): void {
    job.finished = true;
    this.pending--;
  }

  /** Counts recipients reached this turn; the count is reset when the turn ends. */
  private spend(n: number): void {
    if (this.spent === 0) this.turnStarted = performance.now();
    this.spent += n;
    if (!this.armed && this.spent > 0) {
      this.armed = true;
      setImmediate(this.endTurn);
    }
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
    if (!members) this.topics.set(topic, (members = new Map()));
    members.set(connection, ++this.seq);
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
    return members ? [...members.keys()] : [];
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
    const frame = frameOf(payload, binary);
    const n = members.size;
    if (this.pending > 0 || this.spent + n > this.fanOutSlice) {
      return this.slice(payload, binary, frame, members, n, undefined);
    }
    let accepted = 0;
    let refused = 0;
    for (const connection of members.keys()) {
      if (connection.fanOut(payload, binary, frame)) accepted++;
      else refused++;
    }
    this.spend(n);
    return { accepted, refused };
  }

  private removeMember(topic: string, connection: Connection<Auth>): void {
    const members = this.topics.get(topic);
    if (!members) return;
    members.delete(connection);
    if (members.size === 0) this.topics.delete(topic);
  }
}
