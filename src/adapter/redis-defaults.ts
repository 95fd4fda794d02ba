/**
 * The Redis adapter's defaults, each with its reason, apart from the adapter
 * itself so that the CLI's help can show them without loading ioredis.
 */
export const REDIS_DEFAULTS = {
  /** Keys and the channel start with it: several applications can share one Redis. */
  prefix: 'ws-supervisor:',
  /** 5 s: presence counts are at most this stale. */
  heartbeatInterval: 5_000,
  /** 15 s = 3 heartbeats: two lost heartbeats are tolerated; a dead node is gone within 15 s. */
  presenceTtl: 15_000,
  /** First reconnect delay; doubles per failed attempt, with jitter. */
  backoffInitialDelay: 100,
  /** Reconnect delay cap: a restarted Redis is found within ~5 s. */
  backoffMaxDelay: 5_000,
  /** A publish (or presence command) Redis has not answered by then is reported as failed. */
  commandTimeout: 2_000,
  /** Time a TCP connect + handshake to Redis may take. */
  connectTimeout: 5_000,
  /**
   * 16 MiB of frames handed to Redis and not yet answered; beyond it a publish
   * is reported `unavailable` at once. On a LAN a healthy Redis answers within
   * a millisecond, so even 16 MB/s of broadcasts keeps well under 1 MiB in
   * flight; a hung one (measured: 74 → 800 MiB RSS in 20 s at 2k msg/s of 8 KiB)
   * now costs at most ~2× this (the frames and their copy in the socket buffer).
   * Half of Redis's own per-subscriber pub/sub hard limit (32 MB): more than
   * that could not be pushed to a subscriber in one burst anyway.
   */
  maxInFlightBytes: 16 * 1_048_576,
} as const;
