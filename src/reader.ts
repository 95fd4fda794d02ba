/**
 * The read actor (R8): the one place that listens to a connection's socket.
 * One read loop for the connection's whole life (R1): every message goes to
 * the application directly; the machine hears only lifecycle facts — open,
 * the first sign of life after a ping (R5), the close (R2), a protocol error (R15).
 */
import { fromCallback } from 'xstate';
import type { ActorInput, ReaderCommand, ReaderEvent } from '../machines/connection.machine.ts';
import { CloseCodes } from '../machines/close-codes.ts';
import type { SocketIO } from './socket-io.ts';

/** The close code `ws` sends for each of its receiver errors (see ws/lib/receiver.js). */
export function closeCodeForWsError(err: Error & { code?: string }): number {
  switch (err.code) {
    case 'WS_ERR_INVALID_UTF8':
      return CloseCodes.INVALID_PAYLOAD;
    case 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH':
    case 'WS_ERR_UNSUPPORTED_DATA_PAYLOAD_LENGTH':
      return CloseCodes.MESSAGE_TOO_BIG;
    case 'WS_ERR_TOO_MANY_BUFFERED_PARTS':
      return CloseCodes.POLICY_VIOLATION;
    default:
      // Every other receiver error (unmasked frame, bad opcode, RSV bits,
      // fragmented control frame, invalid close code) is a protocol error.
      return CloseCodes.PROTOCOL_ERROR;
  }
}

function noop(): void {}

export const readerActor = fromCallback<ReaderCommand, ActorInput>(({ input, sendBack: send, receive }) => {
  // Typed: the machine's events are checked here, at the actor boundary.
  const sendBack = (event: ReaderEvent): void => send(event);
  const io = input.io as SocketIO;
  const { ws, stats } = io;
  // True between a ping and the first inbound frame after it: only then does
  // traffic cost a machine event (R5), so the data path stays cheap.
  let expecting = false;
  let closed = false;
  let stopped = false;

  const proveLiveness = (): void => {
    if (expecting) {
      expecting = false;
      sendBack({ type: 'socket.activity' });
    }
  };
  const onMessage = (data: Buffer, isBinary: boolean): void => {
    stats.messagesIn++;
    stats.bytesIn += data.length;
    if (expecting) proveLiveness();
    io.onMessage(data, isBinary);
  };
  const onPong = (payload: Buffer): void => {
    if (!expecting) return;
    expecting = false;
    // Our pings carry their send time; a pong that echoes something else still proves liveness.
    if (payload.length === 8) {
      const rttMs = performance.now() - payload.readDoubleBE(0);
      if (rttMs >= 0 && rttMs < 3_600_000) {
        sendBack({ type: 'socket.pong', rttMs });
        io.onRtt?.(rttMs);
        return;
      }
    }
    sendBack({ type: 'socket.activity' });
  };
  const onClose = (code: number, reason: Buffer): void => {
    if (closed) return;
    closed = true;
    sendBack({ type: 'socket.closed', code, reason: reason.toString() });
  };
  const onError = (err: Error & { code?: string }): void => {
    // ws has already started the close with the matching code; the machine records it.
    sendBack({ type: 'socket.error', code: closeCodeForWsError(err), message: err.message });
  };
  const onOpen = (): void => sendBack({ type: 'socket.open' });

  ws.on('message', onMessage);
  ws.on('pong', onPong);
  ws.on('ping', proveLiveness);
  ws.on('close', onClose);
  ws.on('error', onError);
  receive((command) => {
    if (command.type === 'reader.expectLiveness') expecting = true;
    // setImmediate runs after the poll phase: anything the peer sent before the
    // pong timer fired has been read (and reported) by then.
    else
      setImmediate(() => {
        if (expecting && !stopped) sendBack({ type: 'socket.silent' });
      });
  });
  if (ws.readyState === 1) sendBack({ type: 'socket.open' });
  else if (ws.readyState === 0) ws.once('open', onOpen);
  else queueMicrotask(() => onClose(CloseCodes.ABNORMAL, Buffer.alloc(0)));

  return () => {
    stopped = true;
    ws.off('message', onMessage);
    ws.off('pong', onPong);
    ws.off('ping', proveLiveness);
    ws.off('close', onClose);
    ws.off('error', onError);
    ws.off('open', onOpen);
    // A late error from a socket being torn down must not crash the process (R2).
    ws.on('error', noop);
  };
});
