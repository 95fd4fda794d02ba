/**
 * What the dashboard sends: one snapshot per tick, built in ONE pass over the
 * hub (counts per state and totals for every connection, rows only for the
 * pages someone is watching), plus a ring buffer of recent closures fed by
 * the supervisor's 'close' event.
 */
import type { CloseCause, Closure } from '../../../machines/close-codes.ts';
import type { Connection } from '../../server/connection.ts';
import type { Traffic } from '../../server/connection.ts';
import { allNodes, children, rootOf, statePath, type StateNodeLike } from '../machine-walk.ts';

/** One live connection, as a row of the connections table. */
export interface ConnectionRow {
  id: string;
  /** The flat name: connecting | open | pinging | closing (| closed for a moment). */
  state: string;
  /** The full state value, e.g. `open/heartbeat.pinging/write.blocked`. */
  value: string;
  remoteAddress: string;
  protocol: string;
  openedAt: number;
  ageMs: number;
  /** Last heartbeat round trip, ms; null before the first pong. */
  rttMs: number | null;
  queuedMessages: number;
  queuedBytes: number;
  messagesIn: number;
  bytesIn: number;
  messagesOut: number;
  bytesOut: number;
}

/** One closed connection, as a row of the recent-closures table. */
export interface ClosureRow {
  id: string;
  remoteAddress: string;
  /** When it reached `closed` (epoch ms). */
  at: number;
  /** How long it lived, ms. */
  ageMs: number;
  code: number;
  reason: string;
  expected: boolean;
  initiator: Closure['initiator'];
  cause: CloseCause;
  /** The code in the peer's close frame, null when none arrived. */
  receivedCode: number | null;
  messagesIn: number;
  messagesOut: number;
}

export interface Totals {
  /** Live connections (in the hub). */
  live: number;
  /** Since the dashboard was created. */
  opened: number;
  closed: number;
  expected: number;
  unexpected: number;
  /** Live connections plus those closed since the dashboard was created. */
  messagesIn: number;
  bytesIn: number;
  messagesOut: number;
  bytesOut: number;
  /** Waiting in the send queues of live connections right now. */
  queuedMessages: number;
  queuedBytes: number;
}

export interface PageOfRows {
  /** 0-based page number actually sent (clamped to the last page). */
  index: number;
  size: number;
  /** Number of pages (at least 1). */
  count: number;
  rows: ConnectionRow[];
}

export interface DashboardSnapshot {
  at: number;
  /** Live connections per state path (every state of the machine, 0 included). */
  counts: Record<string, number>;
  totals: Totals;
  page: PageOfRows;
  /** Recent closures, newest first. */
  closures: ClosureRow[];
  /** Dashboard clients connected to the event stream. */
  subscribers: number;
  /** Detached sessions (as of the last tick; null when sessions are off or not read yet). */
  sessions: { detached: number; rows: Array<{ id: string; detachedMs: number; bufferedMessages: number; bufferedBytes: number; topics: number }> } | null;
}

/** A fixed-size ring buffer: O(1) push, oldest entries overwritten. */
export class Ring<T> {
  private readonly items: (T | undefined)[];
  private next = 0;
  private filled = 0;
  /** Bumped on every push: lets the sender reuse a serialized copy until it changes. */
  version = 0;

  constructor(readonly capacity: number) {
    this.items = new Array<T | undefined>(capacity);
  }

  push(item: T): void {
    if (this.capacity === 0) return;
    this.items[this.next] = item;
    this.next = (this.next + 1) % this.capacity;
    if (this.filled < this.capacity) this.filled++;
    this.version++;
  }

  get size(): number {
    return this.filled;
  }

  /** Newest first. */
  newestFirst(): T[] {
    const out: T[] = [];
    for (let i = 1; i <= this.filled; i++) out.push(this.items[(this.next - i + this.capacity) % this.capacity]!);
    return out;
  }
}

/** The machine's states as a lookup tree, so counting walks a state value without building strings. */
interface CountNode {
  index: number;
  children: Map<string, CountNode>;
}

export interface StateIndex {
  /** State paths in definition order (parents first); position = index into a counts array. */
  paths: string[];
  tree: CountNode;
}

export function stateIndex(machine: { root: unknown }): StateIndex {
  const root = rootOf(machine);
  const paths: string[] = [];
  const build = (n: StateNodeLike): CountNode => {
    const node: CountNode = { index: paths.length - 1, children: new Map() };
    for (const c of children(n)) {
      paths.push(statePath(c));
      node.children.set(c.key, build(c));
    }
    return node;
  };
  const tree = build(root);
  // Sanity: the walk above and allNodes agree on the states.
  if (paths.length !== allNodes(root).length - 1) throw new Error('dashboard: state index mismatch');
  return { paths, tree };
}

type StateValue = string | { [key: string]: StateValue };

/** Adds one connection's state value (and every ancestor state) to `counts`: O(depth), no allocation. */
export function countValue(value: StateValue, node: CountNode, counts: number[]): void {
  if (typeof value === 'string') {
    const c = node.children.get(value);
    if (c) counts[c.index]!++;
    return;
  }
  for (const key in value) {
    const c = node.children.get(key);
    if (!c) continue;
    counts[c.index]!++;
    countValue(value[key]!, c, counts);
  }
}

/** `{open: {heartbeat: 'pinging', write: 'blocked'}}` → `open/heartbeat.pinging/write.blocked`. */
export function formatValue(value: StateValue): string {
  if (typeof value === 'string') return value;
  const entries = Object.entries(value);
  if (entries.length === 1) {
    const [key, sub] = entries[0]!;
    if (typeof sub !== 'string' && Object.keys(sub).length > 1) {
      return `${key}/${Object.entries(sub)
        .map(([k, v]) => formatValue({ [k]: v }))
        .join('/')}`;
    }
    return `${key}.${formatValue(sub)}`;
  }
  return entries.map(([k, v]) => formatValue({ [k]: v })).join('/');
}

export function connectionRow(c: Connection<unknown>, now: number): ConnectionRow {
  const s = c.stats;
  return {
    id: c.id,
    state: c.stateName,
    value: formatValue(c.state as StateValue),
    remoteAddress: c.remoteAddress,
    protocol: c.protocol,
    openedAt: c.openedAt,
    ageMs: now - c.openedAt,
    rttMs: c.rttMs,
    queuedMessages: s.queuedMessages,
    queuedBytes: s.queuedBytes,
    messagesIn: s.messagesIn,
    bytesIn: s.bytesIn,
    messagesOut: s.messagesOut,
    bytesOut: s.bytesOut,
  };
}

/**
 * Since the dashboard was created: counters it keeps from the supervisor's
 * events (O(1) per event), and the traffic of connections closed meanwhile
 * (from the hub's closed totals).
 */
export interface History extends Traffic {
  opened: number;
  closed: number;
  expected: number;
  unexpected: number;
}

export interface Pass {
  at: number;
  counts: Record<string, number>;
  totals: Totals;
  /** Rows for each requested page (keyed by the clamped page number). */
  pages: Map<number, PageOfRows>;
  pageCount: number;
}

/** Clamps a requested page to the pages that exist for `live` connections. */
export function clampPage(page: number, live: number, pageSize: number): number {
  const count = Math.max(1, Math.ceil(live / pageSize));
  return Math.min(Math.max(0, Math.floor(page) || 0), count - 1);
}

/**
 * THE pass: one walk over the live connections (in arrival order, i.e. oldest
 * first). Every connection: O(depth) to count its state and O(1) to add its
 * stats. Rows (the expensive part: state name, formatted value) only for
 * connections on a requested page.
 */
export function takePass(
  live: Iterable<Connection<unknown>>,
  liveCount: number,
  index: StateIndex,
  history: History,
  wanted: Iterable<number>,
  pageSize: number,
): Pass {
  const now = Date.now();
  const counts = new Array<number>(index.paths.length).fill(0);
  const pageCount = Math.max(1, Math.ceil(liveCount / pageSize));
  const pages = new Map<number, PageOfRows>();
  for (const p of wanted) {
    const i = clampPage(p, liveCount, pageSize);
    if (!pages.has(i)) pages.set(i, { index: i, size: pageSize, count: pageCount, rows: [] });
  }
  const totals: Totals = {
    live: 0,
    opened: history.opened,
    closed: history.closed,
    expected: history.expected,
    unexpected: history.unexpected,
    messagesIn: history.messagesIn,
    bytesIn: history.bytesIn,
    messagesOut: history.messagesOut,
    bytesOut: history.bytesOut,
    queuedMessages: 0,
    queuedBytes: 0,
  };
  let i = 0;
  for (const c of live) {
    countValue(c.state as StateValue, index.tree, counts);
    const s = c.stats;
    totals.messagesIn += s.messagesIn;
    totals.bytesIn += s.bytesIn;
    totals.messagesOut += s.messagesOut;
    totals.bytesOut += s.bytesOut;
    totals.queuedMessages += s.queuedMessages;
    totals.queuedBytes += s.queuedBytes;
    const page = pages.get(Math.floor(i / pageSize));
    if (page) page.rows.push(connectionRow(c, now));
    i++;
  }
  totals.live = i;
  // The page count from the actual walk (the hub may have changed size since liveCount was read).
  const actualCount = Math.max(1, Math.ceil(i / pageSize));
  for (const p of pages.values()) p.count = actualCount;
  const byPath: Record<string, number> = {};
  index.paths.forEach((path, k) => (byPath[path] = counts[k]!));
  return { at: now, counts: byPath, totals, pages, pageCount: actualCount };
}
