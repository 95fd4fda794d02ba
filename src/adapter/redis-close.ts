/**
 * Ending an ioredis client at once (R3) without a timer left behind, shared by
 * the Redis adapter and the Redis session store.
 */
import type { Redis } from 'ioredis';

/**
 * `client.disconnect()`, minus ioredis's 2 s linger when Redis is already gone.
 *
 * disconnect() stops reconnecting, ends the socket (our FIN; with Redis up, its
 * own follows within a round trip and in-flight replies are still read), and
 * arms a fallback timer (`disconnectTimeout`, 2 s) that destroys the socket if
 * it has not closed by then. Only the socket's 'close' event clears that timer,
 * and ioredis (6.0) arms it on its connector's last socket even when that one
 * has closed already (Redis killed or unreachable: status `reconnecting`,
 * `close` or `end`). No 'close' comes again, so the timer would run out and
 * keep a closed adapter's process alive 2 s for nothing. When that socket is
 * already destroyed, the fallback has nothing left to do (its only action is
 * `destroy()`), so its delay is set to 0 first: the timer fires at once and is
 * gone. An earlier version emitted 'close' on the socket once more to clear the
 * timer; under a busy loop on every core a timer was still left 2 s in 2 of 6
 * runs, so this one does not depend on which listeners the socket still has.
 * With Redis up the socket is live and the 2 s fallback stays as it was.
 */
export function endRedisClient(client: Redis): void {
  const connector = (client as unknown as { connector?: { stream?: { destroyed?: boolean }; disconnectTimeout?: number } }).connector;
  const socket = connector?.stream ?? (client.stream as { destroyed?: boolean } | undefined);
  const gone = socket?.destroyed === true;
  if (gone && connector !== undefined && typeof connector.disconnectTimeout === 'number') connector.disconnectTimeout = 0;
  client.disconnect();
  // The same quirk keeps the commands sent while reconnecting (our heartbeat's, a publish) in the
  // offline queue, each with its `commandTimeout` timer (2 s): ioredis rejects them only from its
  // close handler, which ran already. Seen under a busy loop: 1 of 13 runs left one such timer.
  // Rejected now, as ioredis does at a close ('Connection is closed.').
  if (gone) (client as unknown as { flushQueue?: (error: Error) => void }).flushQueue?.(new Error('Connection is closed.'));
}
