/**
 * The connection machine: the whole lifecycle of one WebSocket connection as a
 * statechart. Pure definition — no socket, no clock, no I/O imports. `src/`
 * provides the two actors (`reader`, `writer`) by name, once, and passes the
 * socket through `input.io` (never `.provide()` per connection: it rebuilds the
 * state-node tree, measured at 2.4× the memory and 2.6× the create time per actor).
 *
 *   connecting → open{heartbeat: idle ⇄ pinging, write: flowing ⇄ blocked}
 *              → closing{handshake | stalled} → closed     (we closed)
 *              → peerClosing → closed                       (the peer closed)
 *
 * Every close is bounded (R16): by `closeTimeout`, whoever started it, or by
 * the short STALLED_CLOSE_GRACE_MS when our socket is known not to drain.
 *
 * The data path does NOT run through this machine: the reader hands messages
 * to the application and the writer takes them from it directly. The machine
 * only hears about lifecycle facts (open, pong, first traffic while pinging,
 * backpressure, overflow, close, error), a handful of events per ping
 * interval at most, so supervising costs no throughput.
 */
import { assign, fromCallback, sendTo, setup } from 'xstate';
import {
  CloseCodes,
  isExpectedClose,
  isSendableCloseCode,
  type CloseCause,
  type Closure,
} from './close-codes.ts';

/**
 * R10/R11/R16: how long a close frame to a consumer whose socket is not
 * draining (queue overflow, write timeout) may take, at most, before the
 * socket is terminated (never longer than `closeTimeout`). Such a frame waits
 * behind a full send buffer, so the handshake can only finish if the peer
 * resumes reading: 1 s gives one that was merely slow a chance to see the
 * close frame, and frees a stalled one's socket and slot within
 * writeTimeout + 1 s instead of writeTimeout + closeTimeout.
 */
export const STALLED_CLOSE_GRACE_MS = 1_000;

/** The four timings behind the named delays (R6, R10, R16). Milliseconds, all > 0. */
export interface ConnectionTiming {
  /** Idle time between heartbeats (R4, R6); 0 turns the heartbeat off (R7). */
  pingInterval: number;
  /** How long a ping may go unanswered by any inbound traffic (R4, R5). */
  pongTimeout: number;
  /** How long the socket may stay unable to drain before it counts as stalled (R10). */
  writeTimeout: number;
  /** How long a close handshake may take before the socket is terminated, whoever started it (R16). */
  closeTimeout: number;
}

export interface ConnectionInput {
  /** Connection id, for logs and the registry. */
  id: string;
  timing: ConnectionTiming;
  /**
   * Opaque handle on the transport, handed unchanged to the reader and writer
   * actors when the machine runs as an XState actor (the client). The server
   * hosts the two actors itself (src/server/runner.ts) and passes one input per
   * supervisor with `io: null`, so that its connections share snapshots.
   * The machine never looks inside it.
   */
  io: unknown;
}

/** What the application or supervisor asks of a connection. */
export type ConnectionCommand =
  | { type: 'close'; code?: number; reason?: string; cause?: CloseCause }
  | { type: 'terminate'; reason?: string };

/** Facts the read actor reports (R1, R2, R5, R15). */
export type ReaderEvent =
  | { type: 'socket.open' }
  /**
   * A pong arrived while a ping was outstanding. `rttMs` (from the ping
   * payload) is for people and metrics: the reader hands it to its host; the
   * machine decides on the fact alone.
   */
  | { type: 'socket.pong'; rttMs: number }
  /** Some other inbound frame arrived while a ping was outstanding (R5). */
  | { type: 'socket.activity' }
  /**
   * R16: the peer's close frame arrived (code 1005: it carried none) and the
   * transport has answered it; only the peer's TCP side is still open.
   */
  | { type: 'socket.closing'; code: number; reason: string }
  /** The transport is closed. code/reason are what the close frame carried (1006: none). */
  | { type: 'socket.closed'; code: number; reason: string }
  /** The peer broke the protocol; the transport is already sending close `code` (R15). */
  | { type: 'socket.error'; code: number; message: string }
  /** Answer to `reader.confirmSilence`: pending input was read and none of it came from the peer. */
  | { type: 'socket.silent' }
  /** R21: the peer sends faster than the configured message rate (the reader drops the excess). */
  | { type: 'socket.flood'; rate: number; reason?: string };

/** Facts the write actor reports (R9–R11). */
export type WriterEvent =
  /** The socket stopped accepting bytes; the write deadline starts (R10). */
  | { type: 'write.blocked' }
  /** Some queued bytes reached the OS while blocked; the deadline restarts (R10). */
  | { type: 'write.progress' }
  /** Everything queued has reached the OS. */
  | { type: 'write.drained' }
  /** The per-connection send queue is over its limit: a slow consumer (R9, R11). */
  | { type: 'write.overflow'; messages: number; bytes: number };

export type ConnectionEvent = ConnectionCommand | ReaderEvent | WriterEvent;

/**
 * Events whose payload this machine never reads (guards and actions look at
 * the type only). A host may compute a step on one of these once per state and
 * reuse it for every connection (src/server/runner.ts); the model tests check the
 * claim for every state (test/machines/connection.machine.test.ts).
 */
export const PAYLOAD_FREE_EVENTS: ReadonlySet<ConnectionEvent['type']> = new Set<ConnectionEvent['type']>([
  'socket.open',
  'socket.pong',
  'socket.activity',
  'socket.silent',
  'write.blocked',
  'write.progress',
  'write.drained',
]);

/** Commands the machine sends its actors. Everything that touches the socket's output goes through the writer (R8). */
export type WriterCommand =
  | { type: 'writer.ping' }
  /**
   * Send a close frame. `flush`: hand the queued messages to the socket first
   * (a clean close); false for a slow consumer, whose queue becomes dead letters (R12).
   */
  | { type: 'writer.close'; code: number; reason: string; flush: boolean };
export type ReaderCommand =
  | { type: 'reader.expectLiveness' }
  /** Read whatever input is already waiting, then answer `socket.silent` if none of it proved liveness. */
  | { type: 'reader.confirmSilence' };

export interface ActorInput {
  id: string;
  io: unknown;
}

interface CloseRequest {
  code: number;
  reason: string;
  cause: CloseCause;
}

interface PeerClose {
  code: number;
  reason: string;
}

export interface ConnectionContext {
  id: string;
  timing: ConnectionTiming;
  io: unknown;
  /** The close we started, if we started one. */
  closeRequest: CloseRequest | null;
  /** R16: the peer's close frame, once it arrived (starting the close, or answering ours). */
  peerClose: PeerClose | null;
  /** Filled in on entering `closed`. */
  closure: Closure | null;
}

function closure(
  code: number,
  reason: string,
  initiator: Closure['initiator'],
  cause: CloseCause,
  receivedCode: number | null = null,
): Closure {
  // R17: a close we started is only clean if the peer answered it.
  const clean = initiator === 'remote' || receivedCode !== null;
  return { code, reason, initiator, cause, expected: clean && isExpectedClose(code, cause), receivedCode };
}

export const connectionMachine = setup({
  types: {} as {
    context: ConnectionContext;
    events: ConnectionEvent;
    input: ConnectionInput;
    output: Closure;
  },
  actors: {
    /** R8: the one place that reads. Provided by src/ (real socket) or a test (fake). */
    reader: fromCallback<ReaderCommand, ActorInput>(() => undefined),
    /**
     * R8: the one place that writes. Owns the bounded send queue (R9). Stopping
     * it releases the socket: a connection that reaches `closed` never keeps one.
     */
    writer: fromCallback<WriterCommand, ActorInput>(() => undefined),
  },
  delays: {
    pingInterval: ({ context }) => context.timing.pingInterval,
    pongTimeout: ({ context }) => context.timing.pongTimeout,
    writeTimeout: ({ context }) => context.timing.writeTimeout,
    closeTimeout: ({ context }) => context.timing.closeTimeout,
    stalledCloseTimeout: ({ context }) => Math.min(context.timing.closeTimeout, STALLED_CLOSE_GRACE_MS),
  },
  guards: {
    /** R6/R7: pingInterval 0 turns the heartbeat off. */
    heartbeatEnabled: ({ context }) => context.timing.pingInterval > 0,
    /** Codes an application may put in a close frame (RFC 6455 §7.4). */
    isSendableCode: ({ event }) => event.type === 'close' && (event.code === undefined || isSendableCloseCode(event.code)),
  },
  actions: {
    sendPing: sendTo('writer', { type: 'writer.ping' }),
    expectLiveness: sendTo('reader', { type: 'reader.expectLiveness' }),
    confirmSilence: sendTo('reader', { type: 'reader.confirmSilence' }),
    sendClose: sendTo('writer', ({ context }) => ({
      type: 'writer.close' as const,
      code: context.closeRequest?.code ?? CloseCodes.NORMAL,
      reason: context.closeRequest?.reason ?? '',
      flush: context.closeRequest?.cause !== 'slow-consumer' && context.closeRequest?.cause !== 'write-timeout',
    })),
    requestAppClose: assign({
      closeRequest: ({ event }) => {
        const e = event as Extract<ConnectionEvent, { type: 'close' }>;
        return {
          code: e.code ?? CloseCodes.NORMAL,
          reason: e.reason ?? '',
          cause: e.cause ?? (e.code === CloseCodes.GOING_AWAY ? 'shutdown' : 'normal'),
        };
      },
    }),
    /** R16: the peer's close frame arrived (the transport has echoed it). */
    recordPeerClose: assign({
      peerClose: ({ event }) => {
        const e = event as Extract<ConnectionEvent, { type: 'socket.closing' }>;
        return { code: e.code, reason: e.reason };
      },
    }),
    /** R16/R17: the peer's close handshake is done; its TCP side closed, or did not within closeTimeout. */
    recordPeerClosure: assign({
      closure: ({ context }) => closure(context.peerClose!.code, context.peerClose!.reason, 'remote', 'peer', context.peerClose!.code),
    }),
    /** R16/R17: our close handshake ended with the transport's close. */
    recordLocalClosure: assign({
      closure: ({ context, event }) => {
        const e = event as Extract<ConnectionEvent, { type: 'socket.closed' }>;
        // 1006: the transport died (or ws's own close timer fired) with no answer to our close frame.
        const answer = context.peerClose?.code ?? (e.code === CloseCodes.ABNORMAL ? null : e.code);
        const r = context.closeRequest!;
        return closure(r.code, r.reason, 'local', r.cause, answer);
      },
    }),
    /** R16: our close handshake ended without the transport's close: the close timeout, or the app's terminate. */
    recordUnfinishedClose: assign({
      closure: ({ context, event }) =>
        closure(
          context.closeRequest!.code,
          (event.type === 'terminate' ? event.reason : undefined) ?? context.closeRequest!.reason,
          'local',
          context.closeRequest!.cause,
          // R17: an answer that arrived makes the close clean, even if the peer's TCP side lingered.
          context.peerClose?.code ?? null,
        ),
    }),
    /** R16/R17: the peer closed (its code, echoed by the transport) or the network did (1006). */
    recordRemoteClose: assign({
      closure: ({ event }) => {
        const e = event as Extract<ConnectionEvent, { type: 'socket.closed' }>;
        return closure(e.code, e.reason, 'remote', e.code === CloseCodes.ABNORMAL ? 'socket-error' : 'peer', e.code);
      },
    }),
    /** The application dropped the connection without a handshake. */
    recordTerminate: assign({
      closure: ({ event }) => {
        const e = event as Extract<ConnectionEvent, { type: 'terminate' }>;
        return closure(CloseCodes.ABNORMAL, e.reason ?? 'terminated', 'local', 'terminated');
      },
    }),
    requestProtocolClose: assign({
      closeRequest: ({ event }) => {
        const e = event as Extract<ConnectionEvent, { type: 'socket.error' }>;
        return { code: e.code, reason: e.message, cause: 'protocol-error' as const };
      },
    }),
    requestRateClose: assign({
      closeRequest: ({ event }) => ({
        code: CloseCodes.POLICY_VIOLATION,
        // R21: a budget (messages, bytes or fan-out per window) names itself in `reason`.
        reason:
          (event as Extract<ConnectionEvent, { type: 'socket.flood' }>).reason ??
          `message rate over ${(event as Extract<ConnectionEvent, { type: 'socket.flood' }>).rate}/s`,
        cause: 'rate-limit' as const,
      }),
    }),
    requestOverflowClose: assign({
      closeRequest: () => ({
        code: CloseCodes.POLICY_VIOLATION,
        reason: 'slow consumer: send queue overflow',
        cause: 'slow-consumer' as const,
      }),
    }),
    requestStallClose: assign({
      closeRequest: () => ({
        code: CloseCodes.POLICY_VIOLATION,
        reason: 'slow consumer: write timeout',
        cause: 'write-timeout' as const,
      }),
    }),
  },
}).createMachine({
  id: 'connection',
  context: ({ input }) => ({
    id: input.id,
    timing: input.timing,
    io: input.io,
    closeRequest: null,
    peerClose: null,
    closure: null,
  }),
  // Both actors live exactly as long as the connection: stopped (and so
  // cleaned up, R3) when `closed` is reached.
  invoke: [
    { id: 'reader', src: 'reader', input: ({ context }) => ({ id: context.id, io: context.io }) },
    { id: 'writer', src: 'writer', input: ({ context }) => ({ id: context.id, io: context.io }) },
  ],
  initial: 'connecting',
  states: {
    connecting: {
      description: 'Transport not yet open. Nothing can be written.',
      on: {
        'socket.open': { target: 'open' },
        'socket.closed': {
          target: 'closed',
          actions: 'recordRemoteClose',
        },
        close: {
          target: 'closed',
          actions: assign({
            closure: ({ event }) =>
              closure(CloseCodes.ABNORMAL, event.reason ?? 'closed before open', 'local', event.cause ?? 'normal'),
          }),
        },
        terminate: {
          target: 'closed',
          actions: 'recordTerminate',
        },
      },
    },
    open: {
      description: 'R1: the connection lives until a peer closes it or an error happens.',
      type: 'parallel',
      on: {
        // R16/R17: the peer closed (ws has echoed its code) or the transport died (1006).
        'socket.closed': {
          target: 'closed',
          actions: 'recordRemoteClose',
        },
        // R16: the peer started the close handshake; the transport has echoed its close frame.
        'socket.closing': { target: 'peerClosing', actions: 'recordPeerClose' },
        // R15: protocol violation — the transport is already sending the close frame.
        'socket.error': { target: 'closing', actions: 'requestProtocolClose' },
        close: [
          { guard: 'isSendableCode', target: 'closing', actions: 'requestAppClose' },
          // An unsendable code (e.g. 1006) from the app means "just drop it".
          {
            target: 'closed',
            actions: assign({
              closure: ({ event }) =>
                closure(CloseCodes.ABNORMAL, event.reason ?? 'terminated', 'local', event.cause ?? 'terminated'),
            }),
          },
        ],
        terminate: {
          target: 'closed',
          actions: 'recordTerminate',
        },
        // R9/R11: a consumer that cannot keep up is closed; others are unaffected.
        'write.overflow': { target: 'closing.stalled', actions: 'requestOverflowClose' },
        // R21: a peer over the message rate is closed 1008.
        'socket.flood': { target: 'closing', actions: 'requestRateClose' },
      },
      states: {
        heartbeat: {
          initial: 'idle',
          states: {
            idle: {
              description: 'R4: wait one ping interval, then ping (pingInterval 0: no heartbeat, e.g. a browser without an app-level one, R7).',
              after: { pingInterval: { guard: 'heartbeatEnabled', target: 'pinging' } },
            },
            pinging: {
              description: 'R4/R5: a ping is out; any inbound frame proves liveness.',
              entry: ['sendPing', 'expectLiveness'],
              on: {
                'socket.pong': { target: 'idle' },
                'socket.activity': { target: 'idle' },
              },
              after: { pongTimeout: { target: 'suspect' } },
            },
            suspect: {
              description:
                'R4: the pong timeout fired. Input already waiting is read first, so a stalled event loop (GC, CPU starvation) never kills a peer whose pong has arrived.',
              entry: 'confirmSilence',
              on: {
                'socket.pong': { target: 'idle' },
                'socket.activity': { target: 'idle' },
                // R4: a dead peer (half-open TCP, frozen tab) is terminated, no handshake.
                'socket.silent': {
                  target: '#connection.closed',
                  actions: assign({
                    closure: () => closure(CloseCodes.ABNORMAL, 'heartbeat timeout', 'local', 'heartbeat-timeout'),
                  }),
                },
              },
            },
          },
        },
        write: {
          initial: 'flowing',
          states: {
            flowing: {
              description: 'The socket takes bytes as fast as we write them.',
              on: { 'write.blocked': { target: 'blocked' } },
            },
            blocked: {
              description: 'R10: the socket is not draining; it must make progress within the write timeout.',
              on: {
                'write.progress': { target: 'blocked', reenter: true },
                'write.drained': { target: 'flowing' },
              },
              after: {
                writeTimeout: { target: '#connection.closing.stalled', actions: 'requestStallClose' },
              },
            },
          },
        },
      },
    },
    closing: {
      description: 'R16: our close frame is out (queued messages first, unless the consumer is stalled: R12); wait for the peer to finish the handshake.',
      entry: 'sendClose',
      initial: 'handshake',
      on: {
        // R16: the peer answered; its TCP side closes next (or closeTimeout ends the wait).
        'socket.closing': { actions: 'recordPeerClose' },
        'socket.closed': { target: 'closed', actions: 'recordLocalClosure' },
        terminate: { target: 'closed', actions: 'recordUnfinishedClose' },
      },
      states: {
        handshake: {
          description: 'R16: the socket drains; the peer has closeTimeout to answer and close.',
          after: {
            // R16: the peer never finished; terminate (the writer releases the socket when stopped).
            closeTimeout: { target: '#connection.closed', actions: 'recordUnfinishedClose' },
          },
        },
        stalled: {
          description:
            'R10/R11: the socket is not draining, so the close frame (best effort) waits behind a full buffer: a short grace (at most 1 s), then terminate.',
          after: {
            stalledCloseTimeout: { target: '#connection.closed', actions: 'recordUnfinishedClose' },
          },
        },
      },
    },
    peerClosing: {
      description:
        "R16: the peer's close frame arrived and was echoed; its TCP side has closeTimeout to close, then the socket is terminated.",
      on: {
        'socket.closed': { target: 'closed', actions: 'recordPeerClosure' },
        terminate: { target: 'closed', actions: 'recordPeerClosure' },
      },
      after: {
        closeTimeout: { target: 'closed', actions: 'recordPeerClosure' },
      },
    },
    closed: {
      description: 'R2/R3: reached exactly once; both actors are stopped and the socket released.',
      type: 'final',
    },
  },
  output: ({ context }) => context.closure!,
});

export type ConnectionMachine = typeof connectionMachine;

/** The connection's state as one word, for people, logs and metrics: the card's `connecting → open ⇄ pinging → closing → closed`. */
export type ConnectionStateName = 'connecting' | 'open' | 'pinging' | 'closing' | 'closed';

/**
 * Flattens a connection-machine snapshot to its ConnectionStateName. A blocked
 * writer shows as its heartbeat state; `suspect` (the last moment of waiting
 * for the pong) is still `pinging`.
 */
export function connectionStateName(snapshot: { status: string; matches(value: never): boolean }): ConnectionStateName {
  const matches = snapshot.matches.bind(snapshot) as (value: unknown) => boolean;
  if (snapshot.status !== 'active') return 'closed';
  if (matches({ open: { heartbeat: 'pinging' } }) || matches({ open: { heartbeat: 'suspect' } })) return 'pinging';
  if (matches('open')) return 'open';
  if (matches('closing') || matches('peerClosing')) return 'closing';
  return 'connecting';
}
