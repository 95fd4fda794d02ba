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
 * and ioredis (6.0) arms it on the last socket even when that one has closed
 * already: Redis killed or unreachable, status `reconnecting`, `close` or `end`.
 * No 'close' comes again, so the timer runs out and keeps a closed adapter's
 * process alive 2 s for nothing. There 'close' is emitted on the socket once
 * more, which clears that timer. The emit goes to every 'close' listener the
 * socket still has, not to the timer's alone: the timer-clearing listener of
 * each earlier disconnect() (harmless again), and ioredis's own `once`
 * listener if it has not run yet. That is the case `socket.closed` does not
 * rule out: it is true from the moment the socket was destroyed, while Node
 * emits its 'close' a tick later; then ioredis's close handler runs at this
 * emit, after disconnect() (so it ends the client rather than reconnecting),
 * and not again at the real 'close' (it listened once).
 */
export function endRedisClient(client: Redis): void {
  const socket = client.stream as (Redis['stream'] & { closed?: boolean }) | undefined;
  const closedAlready = socket?.closed === true;
  client.disconnect();
  if (closedAlready) socket.emit('close', false);
}
