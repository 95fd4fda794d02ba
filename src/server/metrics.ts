/**
 * Prometheus metrics (prom-client), one Registry per supervisor so several
 * supervisors (or tests) in one process never collide. Names follow
 * Prometheus conventions (`_total`, `_seconds`, `_bytes`); docs/metrics.md
 * lists them.
 *
 * The hot path pays nothing: per-message counts live in each connection's
 * plain-number stats and are summed when Prometheus scrapes (live connections
 * plus the hub's totals of closed ones), instead of a prom-client increment per message.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Closure } from '../../machines/close-codes.ts';
import type { Traffic } from './connection.ts';

/** What the metrics read from the supervisor at scrape time. */

/** How long a scrape waits for the session store's counts (a hung Redis answers after its command timeout, 10 s). */
const STORE_STATS_WAIT_MS = 1_000;
export interface MetricsSource {
  /** Traffic of the connections closed so far (the live ones are summed at scrape). */
  closedTraffic(): Traffic;
  /** Live connections: their flat state, stats and queue depth. */
  live(): Iterable<{
    stateName: string;
    stats: { messagesIn: number; bytesIn: number; messagesOut: number; bytesOut: number; queuedMessages: number; queuedBytes: number };
  }>;
  /** Topics with at least one live local member. */
  topics?(): number;
  /** Whether the adapter reaches the other nodes. */
  adapterUp?(): boolean;
  /** The session store's counts (null: sessions off). Read at scrape time only. */
  sessions?(): Promise<{ detached: number; bufferedBytes: number; bufferedMessages: number; sessions: number }> | null;
}

const STATES = ['connecting', 'open', 'pinging', 'closing'] as const;

/** One value of prom-client's export of a metric (`getForPromString`'s, before `get()` merges the labels). */
interface ExportedValue {
  value: number;
  labels: Record<string, string | number>;
  metricName?: string;
}
type GetForPromString = (this: Histogram) => Promise<{ values: ExportedValue[] }>;
/** prom-client's own export of a histogram (the registry's text format and `get()` both come from it). */
const promExport = (Histogram.prototype as unknown as { getForPromString?: GetForPromString }).getForPromString;

/**
 * The heartbeat's round-trip-time histogram, counted here on every pong and
 * handed to prom-client only when it exports (a scrape): `add` finds the
 * bucket in a short array of numbers and bumps three counters. prom-client's
 * `observe` cost 2–4% of the server's busy time in the heartbeat (a closure
 * and label checks per call, and a number-to-string key per bucket lookup:
 * docs/performance.md). The export is exactly prom-client's: the same name,
 * help, buckets and values (a value falls in every bucket whose bound it does
 * not exceed, the sum added in arrival order), because it is prom-client's
 * own export with these counts added to its series; `observe` still works
 * and adds to the same series. It relies on prom-client's Histogram
 * exporting through `getForPromString` (used by both the registry's text
 * format and `get()`, 15.x); test/server/metrics.test.ts compares the output
 * with a plain prom-client Histogram fed the same values, and fails if an
 * upgrade changes that.
 */
export class RttHistogram extends Histogram {
  /** Its name: the series' names are `<name>_bucket`, `<name>_sum`, `<name>_count`. */
  private readonly rttName: string;
  /** The upper bounds, in prom-client's order (ascending). */
  private readonly rttBounds: readonly number[];
  /** Values per bucket (not cumulative); the last entry counts those above every bound (+Inf only). */
  private readonly rttCounts: Float64Array;
  private rttCount = 0;
  private rttSum = 0;

  constructor(config: { name: string; help: string; buckets: number[]; registers: Registry[] }) {
    super(config);
    this.rttName = config.name;
    this.rttBounds = config.buckets.slice();
    this.rttCounts = new Float64Array(config.buckets.length + 1);
  }

  /** One value, as `observe(value)` would count it (non-finite values, which `observe` refuses, are ignored). */
  add(value: number): void {
    if (!Number.isFinite(value)) return;
    const bounds = this.rttBounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    this.rttCounts[i]!++;
    this.rttCount++;
    this.rttSum += value;
  }

  /** prom-client's export, with the values `add` counted put into its series. */
  async getForPromString(): Promise<{ values: ExportedValue[] }> {
    let data = await promExport!.call(this);
    if (this.rttCount === 0) return data;
    const name = this.rttName;
    const bucketName = `${name}_bucket`;
    if (!data.values.some((v) => v.metricName === `${name}_count`)) {
      this.zero({}); // after reset(): the series exists again, as after an observe
      data = await promExport!.call(this);
    }
    for (const v of data.values) {
      if (v.metricName === bucketName) {
        const le = v.labels.le;
        if (le === '+Inf') v.value += this.rttCount;
        else {
          let below = 0;
          for (let i = 0; i < this.rttBounds.length && this.rttBounds[i]! <= (le as number); i++) below += this.rttCounts[i]!;
          v.value += below;
        }
      } else if (v.metricName === `${name}_sum`) v.value += this.rttSum;
      else if (v.metricName === `${name}_count`) v.value += this.rttCount;
    }
    return data;
  }

  override reset(): void {
    super.reset();
    // prom-client's constructor calls reset() too, before this class has set its fields.
    (this.rttCounts as Float64Array | undefined)?.fill(0);
    this.rttCount = 0;
    this.rttSum = 0;
  }
}


interface Sums {
  byState: Record<string, number>;
  totals: Traffic;
  queuedMessages: number;
  queuedBytes: number;
  maxQueued: number;
}

export class SupervisorMetrics {
  readonly registry: Registry;
  /** Connections not yet closed (admitted and open, or closing). */
  readonly connections: Gauge;
  readonly connectionsByState: Gauge<'state'>;
  readonly openedTotal: Counter;
  /** Closures by close code: the code we sent if we started, else the one received; 1006 if none. */
  readonly closesTotal: Counter<'code'>;
  /** Closures by cause and R17 expectation. */
  readonly closesByCauseTotal: Counter<'cause' | 'expected' | 'initiator'>;
  /** Upgrades refused at admission, by reason (origin, subprotocol, max-connections, …). */
  readonly refusedTotal: Counter<'reason'>;
  /** Messages accepted for sending that never reached the OS socket (R12). */
  readonly deadLettersTotal: Counter<'reason'>;
  /** Connections closed as slow consumers: queue overflow or write timeout (R11). */
  readonly slowConsumerClosesTotal: Counter<'cause'>;
  /** Connections terminated because no pong arrived in time (R4). */
  readonly heartbeatTimeoutsTotal: Counter;
  /** Counted on every pong without prom-client's `observe` (see RttHistogram); exported as any prom-client histogram. */
  readonly rttSeconds: RttHistogram;
  /** R12: broadcasts/publishes that may not have reached every other node, by reason (unavailable, error, partial). */
  readonly adapterPublishFailuresTotal: Counter<'reason'>;
  /** Messages handed to the adapter (out) and delivered from other nodes (in), by kind (broadcast, publish). */
  readonly adapterMessagesTotal: Counter<'direction' | 'kind'>;
  /** R12, receiver side: other nodes' messages that never reached this node (gaps in their sequence numbers). */
  readonly adapterMissedTotal: Counter;
  readonly adapterRecoveredTotal: Counter;
  /** Resume attempts by result (resumed, failed) and reason (none, expired, unknown, overflow, restarted, forbidden). */
  readonly sessionResumesTotal: Counter<'result' | 'reason'>;
  /** Messages written again to a resumed session's client. */
  readonly sessionReplayedTotal: Counter;
  /** R12: session messages that will never reach their client, by reason (overflow, memory, evicted, expired, ended, unknown). */
  readonly sessionDeadLettersTotal: Counter<'reason'>;
  /** Session lifecycle events (attached, resumed, detached, expired, overflowed, ended). */
  readonly sessionEventsTotal: Counter<'event'>;
  /** Session store operations that failed (rejected: a shared store unreachable, hung, erroring), by operation. */
  readonly sessionStoreFailuresTotal: Counter<'operation'>;
  private cache: { at: number; sums: Sums } | null = null;

  constructor(
    private readonly source: MetricsSource,
    registry: Registry = new Registry(),
    prefix = 'ws_supervisor_',
  ) {
    this.registry = registry;
    const registers = [registry];
    const self = this;
    this.connections = new Gauge({ name: `${prefix}connections`, help: 'WebSocket connections not yet closed', registers });
    this.connectionsByState = new Gauge({
      name: `${prefix}connections_by_state`,
      help: 'Live connections by connection-machine state (open includes a blocked writer)',
      labelNames: ['state'],
      registers,
      collect() {
        const counts = self.sums().byState;
        for (const state of STATES) this.set({ state }, counts[state] ?? 0);
      },
    });
    this.openedTotal = new Counter({ name: `${prefix}connections_opened_total`, help: 'Connections admitted and opened', registers });
    this.closesTotal = new Counter({
      name: `${prefix}closes_total`,
      help: 'Closed connections by close code (sent if the server started the close, else received; 1006 if no close frame)',
      labelNames: ['code'],
      registers,
    });
    this.closesByCauseTotal = new Counter({
      name: `${prefix}closes_by_cause_total`,
      help: 'Closed connections by cause, initiator and whether the closure was expected (R17: a clean 1000/1001)',
      labelNames: ['cause', 'expected', 'initiator'],
      registers,
    });
    this.refusedTotal = new Counter({
      name: `${prefix}refused_upgrades_total`,
      help: 'Upgrade requests refused at admission, by reason',
      labelNames: ['reason'],
      registers,
    });
    this.deadLettersTotal = new Counter({
      name: `${prefix}dead_letters_total`,
      help: 'Messages accepted for sending that never reached the OS socket',
      labelNames: ['reason'],
      registers,
    });
    this.slowConsumerClosesTotal = new Counter({
      name: `${prefix}slow_consumer_closes_total`,
      help: 'Connections closed as slow consumers (send queue overflow or write timeout)',
      labelNames: ['cause'],
      registers,
    });
    this.heartbeatTimeoutsTotal = new Counter({
      name: `${prefix}heartbeat_timeouts_total`,
      help: 'Connections terminated because no pong or other traffic arrived within the pong timeout',
      registers,
    });
    this.rttSeconds = new RttHistogram({
      name: `${prefix}rtt_seconds`,
      help: 'Heartbeat ping-to-pong round trip time',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    this.adapterPublishFailuresTotal = new Counter({
      name: `${prefix}adapter_publish_failures_total`,
      help: 'Broadcasts and topic publishes that may not have reached every other node (delivered locally), by reason',
      labelNames: ['reason'],
      registers,
    });
    this.adapterMessagesTotal = new Counter({
      name: `${prefix}adapter_messages_total`,
      help: 'Broadcasts and topic publishes handed to the adapter (out) or received from other nodes (in)',
      labelNames: ['direction', 'kind'],
      registers,
    });
    // No label per sending node: node ids change with every restart (unbounded cardinality); the log line names it.
    this.adapterMissedTotal = new Counter({
      name: `${prefix}adapter_missed_total`,
      help: 'Messages other nodes sent that never reached this node and could not be recovered from their history, by cause (gaps in their sequence numbers; each gap also an adapterDeadLetter event, reason missed)',
      labelNames: ['cause'],
      registers,
    });
    this.adapterRecoveredTotal = new Counter({
      name: `${prefix}adapter_recovered_total`,
      help: 'Messages other nodes sent that this node missed and then read back from their history (Redis adapter history option) and delivered in order',
      registers,
    });
    new Gauge({
      name: `${prefix}adapter_up`,
      help: 'Whether the adapter reaches the other nodes (1 up, 0 degraded)',
      registers,
      collect() {
        this.set(source.adapterUp ? (source.adapterUp() ? 1 : 0) : 1);
      },
    });
    new Gauge({
      name: `${prefix}topics`,
      help: 'Topics with at least one live member on this node',
      registers,
      collect() {
        this.set(source.topics ? source.topics() : 0);
      },
    });
    this.sessionResumesTotal = new Counter({
      name: `${prefix}session_resumes_total`,
      help: 'Session resume attempts by result (resumed, failed) and reason (none when resumed)',
      labelNames: ['result', 'reason'],
      registers,
    });
    this.sessionReplayedTotal = new Counter({
      name: `${prefix}session_replayed_messages_total`,
      help: 'Messages replayed to resumed sessions',
      registers,
    });
    this.sessionDeadLettersTotal = new Counter({
      name: `${prefix}session_dead_letters_total`,
      help: 'Session messages that will never reach their client (a bound, expiry, an end), by reason',
      labelNames: ['reason'],
      registers,
    });
    this.sessionEventsTotal = new Counter({
      name: `${prefix}session_events_total`,
      help: 'Session lifecycle events: attached, resumed, detached, expired, overflowed, ended, unpersisted, moved',
      labelNames: ['event'],
      registers,
    });
    this.sessionStoreFailuresTotal = new Counter({
      name: `${prefix}session_store_failures_total`,
      help: 'Session store operations that failed (store unreachable, hung or erroring), by operation; the sessions concerned are reported as unpersisted session events',
      labelNames: ['operation'],
      registers,
    });
    // From the store at scrape time: no cost per message.
    const storeGauge = (name: string, help: string, pick: (s: { detached: number; bufferedBytes: number; bufferedMessages: number; sessions: number }) => number): Gauge =>
      new Gauge({
        name,
        help,
        registers,
        async collect() {
          // A store that cannot answer (Redis down or hung) must neither fail nor hold up the whole scrape: after
          // STORE_STATS_WAIT_MS the gauge keeps its last value.
          let timer: ReturnType<typeof setTimeout> | undefined;
          const stats = await Promise.race([
            Promise.resolve(source.sessions?.() ?? null).catch(() => undefined),
            new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), STORE_STATS_WAIT_MS))),
          ]);
          clearTimeout(timer);
          if (stats !== undefined) this.set(stats === null ? 0 : pick(stats));
        },
      });
    storeGauge(`${prefix}sessions`, 'Live sessions (attached or detached)', (s) => s.sessions);
    storeGauge(`${prefix}sessions_detached`, 'Sessions whose connection is gone, waiting within the resume window', (s) => s.detached);
    storeGauge(`${prefix}session_buffered_bytes`, 'Bytes held for sessions, not yet acknowledged by their clients', (s) => s.bufferedBytes);
    storeGauge(`${prefix}session_buffered_messages`, 'Messages held for sessions, not yet acknowledged by their clients', (s) => s.bufferedMessages);
    const summed = (name: string, help: string, pick: (s: Traffic) => number): Counter =>
      new Counter({
        name,
        help,
        registers,
        collect() {
          this.reset();
          this.inc(pick(self.sums().totals));
        },
      });
    summed(`${prefix}messages_received_total`, 'Messages received from clients', (t) => t.messagesIn);
    summed(`${prefix}messages_sent_total`, 'Messages handed to the OS socket', (t) => t.messagesOut);
    summed(`${prefix}received_bytes_total`, 'Payload bytes received from clients', (t) => t.bytesIn);
    summed(`${prefix}sent_bytes_total`, 'Payload bytes handed to the OS socket', (t) => t.bytesOut);
    new Gauge({
      name: `${prefix}send_queue_messages`,
      help: 'Messages waiting in send queues (not yet handed to the OS socket), all connections',
      registers,
      collect() {
        this.set(self.sums().queuedMessages);
      },
    });
    new Gauge({
      name: `${prefix}send_queue_bytes`,
      help: 'Bytes waiting in send queues, all connections',
      registers,
      collect() {
        this.set(self.sums().queuedBytes);
      },
    });
    new Gauge({
      name: `${prefix}send_queue_max_messages`,
      help: 'The deepest single send queue (messages): a slow consumer in the making',
      registers,
      collect() {
        this.set(self.sums().maxQueued);
      },
    });
  }

  opened(): void {
    this.openedTotal.inc();
    this.connections.inc();
  }

  /** Records a closure (its traffic is already in the source's closed totals). */
  closed(closure: Closure): void {
    this.connections.dec();
    this.cache = null;
    this.closesTotal.inc({ code: String(closure.code) });
    this.closesByCauseTotal.inc({ cause: closure.cause, expected: String(closure.expected), initiator: closure.initiator });
    if (closure.cause === 'heartbeat-timeout') this.heartbeatTimeoutsTotal.inc();
    if (closure.cause === 'slow-consumer' || closure.cause === 'write-timeout') {
      this.slowConsumerClosesTotal.inc({ cause: closure.cause });
    }
  }

  sessionEvent(type: string): void {
    this.sessionEventsTotal.inc({ event: type });
  }

  rtt(ms: number): void {
    this.rttSeconds.add(ms / 1000);
  }

  /** One pass over the live connections per scrape (cached for 100 ms: one scrape calls several collectors). */
  private sums(): Sums {
    const now = Date.now();
    if (this.cache && now - this.cache.at < 100) return this.cache.sums;
    const byState: Record<string, number> = {};
    const totals = { ...this.source.closedTraffic() };
    let queuedMessages = 0;
    let queuedBytes = 0;
    let maxQueued = 0;
    for (const c of this.source.live()) {
      byState[c.stateName] = (byState[c.stateName] ?? 0) + 1;
      const s = c.stats;
      totals.messagesIn += s.messagesIn;
      totals.bytesIn += s.bytesIn;
      totals.messagesOut += s.messagesOut;
      totals.bytesOut += s.bytesOut;
      queuedMessages += s.queuedMessages;
      queuedBytes += s.queuedBytes;
      if (s.queuedMessages > maxQueued) maxQueued = s.queuedMessages;
    }
    const sums = { byState, totals, queuedMessages, queuedBytes, maxQueued };
    this.cache = { at: now, sums };
    return sums;
  }
}
