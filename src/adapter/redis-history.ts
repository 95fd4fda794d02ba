/**
 * The Redis adapter's history: with the `history` option on, a node writes
 * every frame it publishes to a Redis Stream of its own as well
 * (`<prefix>history:<session>`, entry id `<seq>-0`: the frame's sequence
 * number IS the stream id), in the same script as the PUBLISH, so a frame is
 * in the stream before any node can see it on the channel. A node that finds
 * a gap in another node's numbers (it was stopped, reconnecting, or Redis cut
 * its subscription for its output buffer) reads the missing range back with
 * XRANGE and delivers it, in order, before that node's newer frames; what the
 * stream no longer holds is reported by count, with the cause (R12).
 *
 * Bounds, on the sender (it knows the size and time of every frame it wrote):
 * each XADD trims with `MINID ~ <first seq to keep>-0`, the first seq such that
 * the entries kept are at most `maxMessages`, at most `maxBytes` of frames, and
 * none older than `maxAge`. `~` lets Redis free whole stream nodes only
 * (`stream-node-max-entries` 100 / `stream-node-max-bytes` 4 KiB by default),
 * so a stream may hold up to one node more than the bounds. The key carries a
 * TTL of `maxAge` (renewed by each publish): a node that stops or dies leaves
 * nothing behind for longer.
 *
 * The epoch (`<prefix>epoch`, a random value created with SET NX by the first
 * node that finds it missing) tells a Redis that lost its data: a restarted or
 * flushed Redis has no epoch key, the next node to look creates a new one, and
 * every node that knew the old one reports what it cannot recover as
 * `restarted`.
 */
import { positiveInt } from '../base/checks.ts';

/** The `history` option: true for the defaults, or some bounds. */
export interface RedisHistoryOptions {
  /** Frames kept at most per node. Default 100000. */
  maxMessages?: number;
  /** Bytes of frames (header + payload) kept at most per node. Default 32 MiB. */
  maxBytes?: number;
  /** Frames older than this are trimmed, ms; also the TTL of the history key. Default 30000. */
  maxAge?: number;
}

/** Defaults, each with its reason (docs/options.md, docs/scaling.md). */
export const REDIS_HISTORY_DEFAULTS = {
  /**
   * Off: it costs every publish a stream write (Redis CPU, memory, latency;
   * docs/scaling.md has the numbers) and only pays when a node misses
   * messages; without it every miss is still reported (by count).
   */
  enabled: false,
  /** 100k frames: 30 s at ~3k publishes/s per node; `maxBytes` is the real bound for large frames. */
  maxMessages: 100_000,
  /**
   * 32 MiB per node: Redis's own hard limit for a subscriber's output buffer
   * (`client-output-buffer-limit pubsub 32mb`), so what Redis can drop when it
   * cuts a slow subscriber fits in one sender's history.
   */
  maxBytes: 32 * 1_048_576,
  /**
   * 30 s: longer than a long GC pause, a reconnect at the adapter's maximum
   * backoff (5 s) plus the presence check that finds the gap (one heartbeat,
   * 5 s), and a Redis restart; a node away longer gets a count instead.
   */
  maxAge: 30_000,
} as const;

export interface HistoryConfig {
  maxMessages: number;
  maxBytes: number;
  maxAge: number;
}

/** The `history` option checked (RangeError naming the bad value), or null when off. */
export function historyConfig(option: boolean | RedisHistoryOptions | undefined): HistoryConfig | null {
  if (option === undefined || option === false) return REDIS_HISTORY_DEFAULTS.enabled ? historyConfig(true) : null;
  if (option === true) option = {};
  if (option === null || typeof option !== 'object') {
    throw new RangeError(`ws-supervisor: redis adapter option history must be a boolean or an object, got ${option === null ? 'null' : typeof option}`);
  }
  return {
    maxMessages: positiveInt('redis.history.maxMessages', option.maxMessages, REDIS_HISTORY_DEFAULTS.maxMessages),
    maxBytes: positiveInt('redis.history.maxBytes', option.maxBytes, REDIS_HISTORY_DEFAULTS.maxBytes),
    maxAge: positiveInt('redis.history.maxAge', option.maxAge, REDIS_HISTORY_DEFAULTS.maxAge),
  };
}

/**
 * Writes the frame to the sender's stream, trimmed to the first seq to keep,
 * renews the key's TTL, then publishes it: one atomic command, so the entry
 * exists before any node can receive the frame, and PUBLISH's answer (the
 * receivers) is the script's.
 * KEYS[1] = the stream; ARGV = entry id, MINID threshold, ttl ms, channel, frame.
 */
export const PUBLISH_WITH_HISTORY_LUA = `
redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[2], ARGV[1], 'f', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call('PUBLISH', ARGV[4], ARGV[5])`;

/**
 * Returns the epoch, creating it (ARGV[1]) if Redis has none: a Redis that
 * restarted empty or was flushed gets a new one from the first node to ask.
 * KEYS[1] = the epoch key.
 */
export const EPOCH_LUA = `
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])`;

/**
 * What the sender has written to its stream, oldest first: enough to compute
 * the MINID that keeps the bounds. At most `maxMessages` entries (plus the
 * one being added), 3 numbers each.
 */
export class HistoryRetention {
  private seqs: number[] = [];
  private times: number[] = [];
  private sizes: number[] = [];
  private head = 0;
  private bytes = 0;

  constructor(private readonly config: HistoryConfig) {}

  /** Records frame `seq` of `size` bytes written at `now`; returns the first seq to keep (the MINID threshold). */
  add(seq: number, size: number, now: number): number {
    this.seqs.push(seq);
    this.times.push(now);
    this.sizes.push(size);
    this.bytes += size;
    const { maxMessages, maxBytes, maxAge } = this.config;
    // Never drop the frame just added: a single frame over maxBytes is still kept until the next one.
    while (this.seqs.length - this.head > 1) {
      const count = this.seqs.length - this.head;
      if (count <= maxMessages && this.bytes <= maxBytes && this.times[this.head]! >= now - maxAge) break;
      this.bytes -= this.sizes[this.head]!;
      this.head++;
    }
    const first = this.seqs[this.head]!;
    if (this.head > 1024 && this.head * 2 > this.seqs.length) {
      this.seqs = this.seqs.slice(this.head);
      this.times = this.times.slice(this.head);
      this.sizes = this.sizes.slice(this.head);
      this.head = 0;
    }
    return first;
  }

  /** Frames and bytes the stream should hold now (before Redis's `~` slack). */
  get held(): { messages: number; bytes: number } {
    return { messages: this.seqs.length - this.head, bytes: this.bytes };
  }
}

/** The seq of a stream entry id written by a sender (`<seq>-0`), or null for an id that is not one. */
export function entrySeq(id: string): number | null {
  const m = /^(\d+)-0$/.exec(id);
  if (!m) return null;
  const n = Number(m[1]);
  return Number.isSafeInteger(n) ? n : null;
}
