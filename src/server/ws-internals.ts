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
 *   3. Frames written straight to the upgrade socket, beside `ws`: with
 *      permessage-deflate off, `ws`'s Sender keeps no state between whole
 *      messages and never queues a frame (it queues only while deflating or
 *      reading a Blob, neither of which the server does), so a complete
 *      frame the writer puts on the socket itself (`frameOf`, `pingFrame`)
 *      is indistinguishable from one `ws.send` / `ws.ping` would have written,
 *      and frames from both stay in socket order. That is what lets the
 *      writer frame a message in one Buffer (one write instead of `ws`'s
 *      header + payload pair), frame a broadcast once for every receiver, and
 *      cork a socket for the rest of an event-loop turn (src/server/writer.ts).
 *      `framesDirectly` says whether a socket qualifies (no extension
 *      negotiated); the test checks the frames byte for byte against
 *      `ws`'s own `Sender.frame` and the interleaving against `ws.ping`/`ws.close`.
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

/**
 * Whether the writer may put its own frames on this socket (item 3 above):
 * only when no extension was negotiated (permessage-deflate sets RSV1 and
 * keeps compression state in the Sender). The server always turns
 * permessage-deflate off; this guards the rule, not a setting.
 */
export function framesDirectly(ws: WebSocket): boolean {
  return ws.extensions === '';
}

const OPCODE_TEXT = 0x1;
const OPCODE_BINARY = 0x2;
const OPCODE_PING = 0x9;
const FIN = 0x80;

/** Header length of an unmasked frame with `n` payload bytes (RFC 6455 §5.2). */
function headerLength(n: number): number {
  return n < 126 ? 2 : n < 65536 ? 4 : 10;
}

function writeHeader(target: Buffer, opcode: number, n: number): number {
  target[0] = FIN | opcode;
  if (n < 126) {
    target[1] = n;
    return 2;
  }
  if (n < 65536) {
    target[1] = 126;
    target.writeUInt16BE(n, 2);
    return 4;
  }
  target[1] = 127;
  target.writeUInt32BE(Math.floor(n / 0x1_0000_0000), 2);
  target.writeUInt32BE(n >>> 0, 6);
  return 10;
}

/**
 * One whole unmasked data frame (FIN set, RSV bits clear) carrying `data`, as
 * a single Buffer: header and payload together, so it leaves in one write.
 * A string is encoded as UTF-8 straight into the frame (a text frame unless
 * `binary`); a Buffer is copied after the header. Server-to-client frames are
 * never masked (RFC 6455 §5.1).
 */
export function frameOf(data: string | Buffer, binary: boolean): Buffer {
  const opcode = binary ? OPCODE_BINARY : OPCODE_TEXT;
  if (typeof data === 'string') {
    const n = Buffer.byteLength(data);
    const frame = Buffer.allocUnsafe(headerLength(n) + n);
    frame.write(data, writeHeader(frame, opcode, n), n, 'utf8');
    return frame;
  }
  const n = data.length;
  const frame = Buffer.allocUnsafe(headerLength(n) + n);
  data.copy(frame, writeHeader(frame, opcode, n));
  return frame;
}

/** A ping frame whose 8-byte payload is `sentAt` (a double, big-endian): 10 bytes, one Buffer. */
export function pingFrame(sentAt: number): Buffer {
  const frame = Buffer.allocUnsafe(10);
  frame[0] = FIN | OPCODE_PING;
  frame[1] = 8;
  frame.writeDoubleBE(sentAt, 2);
  return frame;
}
