/**
 * The one close-code table (RFC 6455 §7.4.1). docs/protocol.md renders it;
 * the machine and the server use only these names.
 */
export const CloseCodes = {
  /** Normal closure: the purpose of the connection was fulfilled. Expected (R17). */
  NORMAL: 1000,
  /** Going away: server shutdown (R18) or the browser left the page. Expected (R17). */
  GOING_AWAY: 1001,
  /** Protocol error: e.g. an unmasked client frame, a bad opcode (R15). */
  PROTOCOL_ERROR: 1002,
  /** Unsupported data. */
  UNSUPPORTED_DATA: 1003,
  /** No status code was present in the peer's close frame (never sent). */
  NO_STATUS: 1005,
  /** No close frame was exchanged: network cut, killed peer, heartbeat timeout (never sent). */
  ABNORMAL: 1006,
  /** Invalid frame payload data: a text frame that is not valid UTF-8 (R15). */
  INVALID_PAYLOAD: 1007,
  /** Policy violation: a slow consumer (send queue overflow or write timeout, R10/R11), or a message rate over the limit (R21). */
  POLICY_VIOLATION: 1008,
  /** Message too big: over the max payload (R15, R21). */
  MESSAGE_TOO_BIG: 1009,
  /** Internal error on the server. */
  INTERNAL_ERROR: 1011,
  /**
   * Sessions unsupported: a client asked for a session (`ws-session=1`) and the
   * server has sessions off. The upgrade is accepted and closed at once with
   * this code (a browser is shown a close code, never a refused upgrade's
   * status), so the client stops instead of retrying. 4000 + HTTP 501 (Not
   * Implemented), in the application range; sent only before the connection
   * reaches the application, so an application's own 4501 later means nothing here.
   */
  SESSIONS_UNSUPPORTED: 4501,
} as const;

/** The reason sent with SESSIONS_UNSUPPORTED (and the body of the 400 that servers before it sent). */
export const SESSIONS_UNSUPPORTED_REASON = 'sessions are not enabled on this server';

/** Why a connection ended, in our words (recorded with every closure). */
export type CloseCause =
  /** A deliberate close with 1000 (either side). */
  | 'normal'
  /** The peer sent a close frame. */
  | 'peer'
  /** Server drain (R18): 1001. */
  | 'shutdown'
  /** No pong or other traffic within the pong timeout (R4). */
  | 'heartbeat-timeout'
  /** Send queue overflow (R9, R11). */
  | 'slow-consumer'
  /** The socket did not drain within the write timeout (R10). */
  | 'write-timeout'
  /** The peer broke the protocol: bad UTF-8, oversized, unmasked, garbage (R15). */
  | 'protocol-error'
  /** The transport died without a close frame (reset, EOF). */
  | 'socket-error'
  /** The application dropped the connection without a handshake. */
  | 'terminated'
  /** The peer sent messages faster than `maxMessageRate` (R21): 1008. */
  | 'rate-limit';

export interface Closure {
  /**
   * The code that ended the connection: the one we sent if we started the
   * close, else the one we received; 1006 when no close frame was exchanged.
   */
  code: number;
  reason: string;
  /** Who started the close: `local` (this side) or `remote` (the peer or the network). */
  initiator: 'local' | 'remote';
  cause: CloseCause;
  /** R17: 1000/1001 (and a bare close frame, 1005) are expected; everything else is not. */
  expected: boolean;
  /** The code in the peer's close frame, or null when none arrived (e.g. close timeout). */
  receivedCode: number | null;
}

const EXPECTED_CAUSES: ReadonlySet<CloseCause> = new Set(['normal', 'peer', 'shutdown']);

/** R17: expected closures are the clean ones — 1000, 1001, or a close frame without a code (1005). */
export function isExpectedClose(code: number, cause: CloseCause): boolean {
  return EXPECTED_CAUSES.has(cause) && (code === 1000 || code === 1001 || code === 1005);
}

/** RFC 6455 §7.4: the codes an endpoint may put in a close frame (1004–1006 are reserved, 1015 is TLS-only). */
export function isSendableCloseCode(code: number): boolean {
  return (
    Number.isInteger(code) &&
    (code === 1000 || (code >= 3000 && code <= 4999) || (code >= 1001 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006))
  );
}

/** RFC 6455 §5.5: a close frame's reason is at most 123 bytes of UTF-8. */
export const MAX_CLOSE_REASON_BYTES = 123;

/**
 * A close reason cut to fit a close frame (MAX_CLOSE_REASON_BYTES, UTF-8), at
 * a character, with `…` at the end when it was cut: for reasons built from a
 * peer's input (a protocol violation's detail), which may be of any length.
 */
export function capCloseReason(reason: string): string {
  const encoder = new TextEncoder();
  if (encoder.encode(reason).length <= MAX_CLOSE_REASON_BYTES) return reason;
  const room = MAX_CLOSE_REASON_BYTES - encoder.encode('…').length;
  let out = reason.slice(0, room);
  while (encoder.encode(out).length > room) out = out.slice(0, -1);
  return out + '…';
}
