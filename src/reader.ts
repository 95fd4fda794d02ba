/**
 * The read actor (R8): the one place that listens to a connection's socket.
 * One read loop for the connection's whole life (R1): every message goes to
 * the application directly; the machine hears only lifecycle facts — open,
 * the first sign of life after a ping (R5), the close (R2), a protocol error (R15).
 */
import { fromCallback } from 'xstate';
import type { ActorInput, ReaderCommand, ReaderEvent } from '../machines/connection.machine.ts';
import { CloseCodes } from '../machines/close-codes.ts';
import { LivenessReport } from './liveness.ts';
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
  // setImmediate runs after the poll phase: anything the peer sent before the
  // pong timer fired has been read (and reported) by then.
  const report = new LivenessReport(sendBack, setImmediate);

  const proveLiveness = (): void => report.inbound();
  const limiter = io.limiter;
  let flooded = false;
  const onMessage = (data: Buffer, isBinary: boolean): void => {
    stats.messagesIn++;
    stats.bytesIn += data.length;
    if (report.expecting) report.inbound(); // R5; otherwise no machine event (hot path)
    // R21: over the rate, the machine hears it once (it closes 1008) and the excess is dropped.
    if (limiter !== undefined && !limiter.take()) {
      if (!flooded) {
        flooded = true;
        sendBack({ type: 'socket.flood', rate: limiter.rate });
      }
      return;
    }
    io.onMessage(data, isBinary);
  };
  const onPong = (payload: Buffer): void => {
    if (!report.expecting) return;
    // Our pings carry their send time; a pong that echoes something else still proves liveness.
    const rttMs = payload.length === 8 ? performance.now() - payload.readDoubleBE(0) : -1;
    if (rttMs >= 0 && rttMs < 3_600_000) {
      report.inbound(rttMs);
      io.onRtt?.(rttMs);
    } else report.inbound();
  };
  const onClose = (code: number, reason: Buffer): void => report.close(code, reason.toString());
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
  receive((command) => report.command(command));
  if (ws.readyState === 1) sendBack({ type: 'socket.open' });
  else if (ws.readyState === 0) ws.once('open', onOpen);
  else queueMicrotask(() => onClose(CloseCodes.ABNORMAL, Buffer.alloc(0)));

  return () => {
    report.stop();
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
