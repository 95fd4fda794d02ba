/**
 * Every use of `ws` internals, in one place (any use of `ws` internals is
 * isolated in one module). `ws` is pinned to 8.x; its
 * underscore members and undocumented events may change in any release, so
 * test/server/ws-internals.test.ts checks each one against the installed `ws`
 * and fails, naming the member, when an upgrade moves it.
 *
 * What the server relies on beyond `ws`'s documented API:
 *   1. `ws._receiver`, the frame parser (ws/lib/receiver.js): an EventEmitter
 *      that emits 'conclude' (code: number, reason: Buffer) when the peer's
 *      close frame arrives. ws has no public event for it (its 'close' comes
 *      only once TCP is closed); ws's own 'conclude' listener, registered
 *      first, has echoed the close frame (readyState CLOSING) by the time ours
 *      runs. The reader listens to it for R16 (`socket.closing`).
 *   2. `ws.send` with permessage-deflate off writes the frame to the upgrade
 *      socket synchronously, so the writer (src/server/writer.ts) reads the
 *      socket's `writableLength` right after a send to learn whether the OS
 *      took it. Not a member name, a behaviour: the test checks it.
 */
import type { EventEmitter } from 'node:events';
import type WebSocket from 'ws';

/** ws's Receiver: the parts we use. */
export type WsReceiver = EventEmitter;

/** The Receiver event for the peer's close frame: (code: number, reason: Buffer). */
export const WS_CONCLUDE = 'conclude';

/** The name of the member holding a WebSocket's Receiver (set once the socket is open). */
export const WS_RECEIVER_MEMBER = '_receiver';

/** ws's frame parser of an open socket; undefined before the socket is set (or if a ws upgrade renamed it). */
export function receiverOf(ws: WebSocket): WsReceiver | undefined {
  return (ws as unknown as Record<typeof WS_RECEIVER_MEMBER, WsReceiver | undefined>)[WS_RECEIVER_MEMBER];
}
