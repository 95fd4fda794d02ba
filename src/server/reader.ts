/**
 * The read actor (R8): the one place that listens to a connection's socket.
 * One read loop for the connection's whole life (R1): every message goes to
 * the application directly; the machine hears only lifecycle facts — open,
 * the first sign of life after a ping (R5), the peer's close frame (R16), the
 * close (R2), a protocol error (R15), a peer over its rate (R21).
 *
 * `SocketReader` is the actor; the server hosts it under its runner
 * (src/server/runner.ts), and `readerActor` wraps it as an XState actor for the client.
 */
import WebSocket from 'ws';
import { fromCallback } from 'xstate';
import type { ActorInput, ReaderCommand, ReaderEvent } from '../../machines/connection.machine.ts';
import { CloseCodes } from '../../machines/close-codes.ts';
import { LivenessReport, SUBCLASS_FLAGS, type ReaderParent } from './liveness.ts';
import type { TokenBucket } from './rate-limit.ts';
import { canHoldParser, observeConclude, ParserHold, parsedAll, receiverOf } from './ws-internals.ts';
import { costOf, type Deferrable, type TurnScheduler } from './scheduler.ts';
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

/** The reader of a ws, set on it while the reader runs: the listeners below are shared by every socket. */
const READER = Symbol('ws-supervisor.reader');
type ReadSocket = WebSocket & { [READER]?: SocketReader };


/*
 * ws calls listeners with `this` = the socket, so one function per event
 * serves every connection: no closures per socket (memory per idle connection).
 */
function onMessage(this: ReadSocket, data: Buffer, isBinary: boolean): void {
  this[READER]?.message(data, isBinary);
}
function onPong(this: ReadSocket, payload: Buffer): void {
  this[READER]?.pong(payload);
}
function onPing(this: ReadSocket): void {
  this[READER]?.ping();
}
function onClose(this: ReadSocket, code: number, reason: Buffer): void {
  this[READER]?.close(code, reason.toString());
}
function onError(this: ReadSocket, err: Error & { code?: string }): void {
  // ws has already started the close with the matching code; the machine records it.
  this[READER]?.sendBack({ type: 'socket.error', code: closeCodeForWsError(err), message: err.message });
}
function onOpen(this: ReadSocket): void {
  const reader = this[READER];
  if (reader === undefined) return;
  reader.listenForClose();
  reader.sendBack({ type: 'socket.open' });
}
/**
 * The peer's close frame (R16), seen on ws's frame parser: ws internals, named
 * in one place (src/server/ws-internals.ts, whose test fails loudly when a ws
 * upgrade moves them). If it ever goes away, the peer's close is still
 * bounded by the `closeTimeout` the server hands ws, and
 * test/server/close-bounded.test.ts fails on the missing `peerClosing`.
 */
function onConclude(ws: WebSocket, code: number, reason: Buffer): void {
  (ws as ReadSocket)[READER]?.sendBack({ type: 'socket.closing', code, reason: reason.toString() });
}
/** What the reader listens to for the connection's whole life. */
const LISTENERS = [
  ['message', onMessage],
  ['pong', onPong],
  ['ping', onPing],
  ['close', onClose],
  ['error', onError],
] as const;

/**
 * The server's WebSocket class (ws's public `WebSocket` option of
 * WebSocketServer, src/server/supervisor.ts). Its `emit` hands the reader
 * the events the listeners above would get, before any other listener, so
 * the reader adds no listener at all: five listeners made each socket's
 * `_events` a ~256-byte dictionary per connection (heap snapshot,
 * docs/performance.md). Listeners that others add still run, after the
 * reader, with the same arguments. An 'error' without another listener is
 * not thrown (the reader, or after it stopped nobody, takes it: R2).
 */
export class SupervisedWebSocket extends WebSocket {
  override emit(event: string | symbol, a?: unknown, b?: unknown): boolean {
    const reader = (this as ReadSocket)[READER];
    if (reader !== undefined) {
      switch (event) {
        case 'message':
          reader.message(a as Buffer, b as boolean);
          break;
        case 'pong':
          reader.pong(a as Buffer);
          break;
        case 'ping':
          reader.ping();
          break;
        case 'close':
          reader.close(a as number, (b as Buffer).toString());
          break;
        case 'error':
          onError.call(this as ReadSocket, a as Error);
          break;
      }
    }
    if (event === 'error' && this.listenerCount('error') === 0) return false;
    // ws emits at most two arguments; forward exactly as many as it gave.
    const n = arguments.length;
    return n === 1 ? super.emit(event) : n === 2 ? super.emit(event, a) : n === 3 ? super.emit(event, a, b) : super.emit(event, ...Array.prototype.slice.call(arguments, 1));
  }
}

/**
 * The reader is its own liveness report (one object per connection, not two:
 * memory per idle connection).
 */
/** Units of a turn after which a connection's next ping holds its parser until a later turn: below ws's 60 pending automatic pongs. */
const PINGS_PER_TURN_MAX = 48;
/** SocketReader's flags, bits of LivenessReport's `flags`. */
const FLOODED = SUBCLASS_FLAGS;
const OVER_BUDGET = SUBCLASS_FLAGS << 1;

/** Messages waiting for the reader's next turn, as pairs [data, isBinary, …] from `head` on. */
interface Backlog {
  items: Array<Buffer | boolean | undefined>;
  head: number;
}

export class SocketReader extends LivenessReport implements Deferrable {
  // Fair scheduling (src/server/scheduler.ts), only when the io has a scheduler (the server's connections).
  fairTurn = 0;
  fairUsed = 0;
  /** Messages `ws` parsed after this reader used its share; null when none (made when needed: a quiet connection has none). */
  private backlog: Backlog | null = null;
  /** Holds `ws`'s parser while over the share (made at the first hold: a quiet connection has none). */
  private parser: ParserHold | null = null;
  /**
   * When the last ping went out (`performance.now()`, set with `expecting`):
   * the first pong after it gives the round trip. A double from the start
   * (NaN), so the field never changes representation.
   */
  private pingAt = Number.NaN;

  constructor(
    private readonly io: SocketIO,
    parent: ReaderParent,
  ) {
    super(parent);
    const ws = io.ws as ReadSocket;
    ws[READER] = this;
    if (!(ws instanceof SupervisedWebSocket)) for (const [event, listener] of LISTENERS) ws.on(event, listener as (...args: unknown[]) => void);
    if (ws.readyState === 1) {
      this.listenForClose();
      parent.report({ type: 'socket.open' });
    } else if (ws.readyState === 0) ws.once('open', onOpen);
    else queueMicrotask(() => this.close(CloseCodes.ABNORMAL, ''));
  }

  /** Over its rate: the machine has been told once. */
  private get flooded(): boolean {
    return (this.flags & FLOODED) !== 0;
  }

  /** Over a budget: the machine has been told once; every later message is dropped. */
  private get overBudget(): boolean {
    return (this.flags & OVER_BUDGET) !== 0;
  }

  /** A ping went out (the machine sends `writer.ping`, then this, in one step): the round trip starts now. */
  override command(command: ReaderCommand): void {
    if (command.type === 'reader.expectLiveness') this.pingAt = performance.now();
    super.command(command);
  }

  /** setImmediate runs after the poll phase: anything the peer sent before the pong timer fired has been read (and reported) by then. */
  protected override defer(fn: () => void): void {
    setImmediate(fn);
  }

  /** R16: from open on, the peer's close frame is reported (`socket.closing`). */
  listenForClose(): void {
    const receiver = receiverOf(this.io.ws);
    if (receiver !== undefined) observeConclude(receiver, onConclude);
  }

  override stop(): void {
    const ws = this.io.ws as ReadSocket;
    super.stop();
    if (ws[READER] === this) ws[READER] = undefined;
    this.parser?.discard(); // the connection has ended: what ws still holds is for nobody, and is not parsed
    this.backlog = null; // nor is what waits for a turn delivered after the close (ws's 'close' delivered it first: close())
    ws.off('open', onOpen);
    if (ws instanceof SupervisedWebSocket) return; // it never throws an 'error' nobody listens to
    for (const [event, listener] of LISTENERS) ws.off(event, listener as (...args: unknown[]) => void);
    // A late error from a socket being torn down must not crash the process (R2).
    ws.on('error', noop);
  }

  message(data: Buffer, isBinary: boolean): void {
    const io = this.io;
    io.messagesIn++;
    io.bytesIn += data.length;
    if (this.expecting) this.inbound(); // R5; otherwise no machine event (hot path)
    const scheduler = io.scheduler;
    if (scheduler !== undefined) {
      if (this.overBudget || this.flooded) return; // closing 1008: the rest is dropped
      // Fairness: behind deferred messages, or over this turn's share, it waits its turn (in order).
      if (this.backlog !== null) {
        this.backlog.items.push(data, isBinary);
        // More of the peer's bytes before its turn: from now on they stay bytes (the lone first message did not hold).
        if (this.parser === null || !this.parser.held) this.stopReading();
        return;
      }
      const cost = costOf(data.length);
      if (!scheduler.admit(this, cost)) {
        // A session's ack, with nothing of this peer waiting before it and its own share not used up (refused for the
        // turn's budget or time, not for its own pace): taken now. Its bytes are read and parsed already; what is left
        // (a trim of the session's buffer) costs less than deferring it: a backlog, a parser hold installed for good,
        // the reader queued, drained and its parser restarted on a later turn. After a fan-out to thousands of sessions
        // (one long turn) their acks arrive at once: 2,100-2,600 readers were deferred per broadcast at 5,000
        // receivers, 9-22 now, and a request read with them no longer queues behind them a second time
        // (docs/performance.md, "The broadcast tail with sessions on").
        if (this.fairUsed < scheduler.share && io.prompt !== undefined && io.prompt(data, isBinary)) {
          scheduler.count(this, cost);
          this.deliver(data, isBinary);
          return;
        }
        this.backlog = { items: [data, isBinary], head: 0 };
        // Held only while ws has more of this peer's bytes to parse. A peer with one request in flight (most, and
        // most of the deferred ones when a thousand such peers arrive in one poll phase: 64% of the requests of
        // 1,000 sequential clients were deferred, docs/performance.md) sent nothing after it: ws's loop ends by
        // itself, no hold is installed for good on its parser, and no release restarts that loop in the check phase.
        if (!parsedAll(receiverOf(this.io.ws))) this.stopReading();
        scheduler.defer(this);
        return;
      }
    }
    this.deliver(data, isBinary);
  }

  /**
   * ws's 'close' (R2). A message deferred with nothing behind it holds no
   * parser (`message`: ws's loop ended by itself), so ws's Receiver can
   * finish, and ws emit 'close', while that message waits for the
   * connection's next turn. It is delivered now, in order, before the close,
   * as held bytes are (src/server/ws-internals.ts, item 4). Before, a peer
   * that pipelined 32k + 1 requests and half-closed (FIN) had its last one
   * handed to the application after the supervisor's 'close' event, on that
   * turn (the drain delivers a backlog even once the reader has stopped).
   */
  override close(code: number, reason: string): void {
    if (this.backlog !== null && !this.stopped && !this.overBudget && !this.flooded) this.deliverBacklog(null);
    super.close(code, reason);
  }

  /**
   * Over the share: `ws` parses nothing more for this peer until its next
   * turn. Its parser is held after this message (src/server/ws-internals.ts,
   * item 4): the frames after it stay bytes, `ws` stops taking chunks from
   * the socket and pauses it, TCP pushes back on the peer. Closing too: `ws`
   * emits 'close' only once its parser has finished, so the peer's last
   * messages still come in order, before the close. Without the hold (`ws`
   * changed, or the reader stopped), the socket is paused: what `ws` has
   * already read is still parsed now and waits in the backlog.
   */
  private stopReading(): void {
    const ws = this.io.ws;
    let parser = this.parser;
    if (parser === null) {
      const receiver = receiverOf(ws);
      if (canHoldParser(receiver)) parser = this.parser = new ParserHold(receiver);
    }
    if (parser !== null && parser.hold()) return;
    ws.pause();
  }

  /**
   * Delivers the deferred messages in order: on a turn (`scheduler`) counted against it and up to its share (false:
   * some are left for a later turn), or all of them at ws's 'close' (null). Over a budget meanwhile, the rest is
   * dropped (the budget's check clears the backlog).
   */
  private deliverBacklog(scheduler: TurnScheduler | null): boolean {
    const backlog = this.backlog!;
    const items = backlog.items;
    while (backlog.head < items.length) {
      const data = items[backlog.head] as Buffer;
      const isBinary = items[backlog.head + 1] as boolean;
      items[backlog.head] = items[backlog.head + 1] = undefined;
      backlog.head += 2;
      scheduler?.count(this, costOf(data.length));
      this.deliver(data, isBinary);
      if (this.backlog !== backlog) break; // over a budget meanwhile: dropped
      if (scheduler !== null && this.fairUsed >= scheduler.share && backlog.head < items.length) return false;
    }
    if (this.backlog === backlog) this.backlog = null;
    return true;
  }

  /**
   * @internal The scheduler's turn for this reader: deferred messages first,
   * then `ws`'s parser again, up to the share. False: serve it again on a
   * later turn; true: done, or deferred again by a message its parser
   * produced (then it is already queued).
   */
  drain(scheduler: TurnScheduler): boolean {
    if (this.backlog !== null && !this.deliverBacklog(scheduler)) return false;
    // Over a budget or the rate (closing 1008), or stopped: ws's input is discarded, never parsed again.
    if (this.overBudget || this.flooded || this.stopped) return true;
    const parser = this.parser;
    if (parser !== null && parser.held) {
      if (this.fairUsed >= scheduler.share) return false;
      else {
        // Its messages come through message(): admitted up to the share, then held (and deferred) again.
        parser.release();
        if (this.backlog !== null) return true;
      }
    }
    if (this.io.ws.isPaused) this.io.ws.resume();
    return true;
  }

  /**
   * R21, fairness: a control frame costs a parse (and for a ping, ws's
   * automatic pong: a write) like a small message, so it takes a unit of the
   * turn. Over the share, ws's parser is held after it as after a message (an
   * empty backlog marks the reader deferred: messages behind it queue there,
   * in order). Without this a ping flood was parsed a whole 64 KiB read at a
   * time: ~10,000 pings and as many pong writes in one turn. A flood is cut by
   * the control-frame budget (`budget.control`), not by the peer's reading.
   */
  private controlFrame(scheduler: TurnScheduler, ping = false): void {
    if (this.overBudget || this.flooded || this.stopped || this.parser?.held === true) return;
    if (this.backlog !== null) {
      // Deferred without a hold (a lone message: `message`), and the peer sent more before its turn: held from here on.
      this.stopReading();
      return;
    }
    // A ping is answered by ws's automatic pong, and ws terminates a socket with 60 of them not yet written
    // (maxPendingAutoPongs; a write completes after the turn): whatever the share (fairness.share is the user's),
    // a turn parses fewer pings than that.
    if (scheduler.admit(this, 1) && !(ping && this.fairUsed >= PINGS_PER_TURN_MAX)) return;
    // The corked pongs (at most the share and this one) leave now: ws terminates a socket with 60 automatic
    // pongs not yet written (its maxPendingAutoPongs), so a cork must not gather a second share's worth.
    this.io.writer.uncork();
    this.backlog = { items: [], head: 0 };
    this.stopReading();
    scheduler.defer(this);
  }

  /**
   * Over a budget or the rate, the connection is closing 1008: nothing more
   * of the peer's input is parsed (src/server/ws-internals.ts, item 6), so a
   * flooder costs no parse and no automatic pong from here on, and what `ws`
   * held is dropped, not parsed at once (a ping flooder's 64 KiB held read
   * was ~11,000 pings and pong writes in one go). Our close frame is written
   * as ever; the close ends when the peer closes TCP, or at `closeTimeout`.
   * Without the hold (`ws` changed), what `ws` reads is parsed and dropped.
   */
  private discardInput(): void {
    let parser = this.parser;
    if (parser === null) {
      const receiver = receiverOf(this.io.ws);
      if (!canHoldParser(receiver)) return;
      parser = this.parser = new ParserHold(receiver);
    }
    parser.discard();
  }

  private deliver(data: Buffer, isBinary: boolean): void {
    const io = this.io;
    if (io.inboundBudget !== undefined && this.overBudgetWith(data.length, false)) return;
    if (io.limiter !== undefined && this.overRate(io.limiter)) return; // R21: the excess is dropped
    io.onMessage(data, isBinary);
  }

  /**
   * R21: over a budget, the machine hears it once (it closes 1008 naming it);
   * the rest is dropped. Control frames count as messages of their payload.
   */
  private overBudgetWith(bytes: number, control: boolean): boolean {
    if (this.overBudget) return true;
    const over = this.io.inboundBudget!(bytes, control);
    if (over === null) return false;
    this.flags |= OVER_BUDGET;
    this.backlog = null;
    this.discardInput();
    if (!this.stopped) this.sendBack({ type: 'socket.flood', rate: 0, reason: over });
    return true;
  }

  /** A ping from the peer (ws has answered it): liveness (R5), and a frame of the peer's rate and budget (R21). */
  ping(): void {
    this.inbound();
    const io = this.io;
    if (io.inboundBudget !== undefined && this.overBudgetWith(0, true)) return;
    if (io.limiter !== undefined && this.overRate(io.limiter)) return;
    if (io.scheduler === undefined) return;
    // This ping's pong is out; the pongs of any more this turn leave in one write at its end.
    io.writer.corkForTurn();
    this.controlFrame(io.scheduler, true);
  }

  pong(payload: Buffer): void {
    const io = this.io;
    // R21: unsolicited pongs count too, against the budget and the rate.
    if (io.inboundBudget !== undefined && this.overBudgetWith(payload.length, true)) return;
    if (io.limiter !== undefined && this.overRate(io.limiter)) return;
    // The answer to our own ping is paced by our ping interval: only the others (unsolicited, a flood) take a unit of the turn.
    if (!this.expecting) {
      if (io.scheduler !== undefined) this.controlFrame(io.scheduler);
      return;
    }
    // The first pong after our ping, whatever it echoes: the round trip since the ping went out (R5: liveness).
    const rttMs = performance.now() - this.pingAt;
    io.onRtt(rttMs);
    this.inbound(rttMs);
  }

  /**
   * R21: every frame from the peer takes a token, control frames (ping, pong)
   * like data: a stream of pings costs a parse and an automatic pong each.
   * Over the rate, the machine hears it once (it closes 1008).
   */
  private overRate(limiter: TokenBucket): boolean {
    if (limiter.take()) return false;
    if (!this.flooded) {
      this.flags |= FLOODED;
      this.backlog = null;
      this.discardInput(); // closing 1008: the rest is not parsed (src/server/ws-internals.ts, item 6)
      this.sendBack({ type: 'socket.flood', rate: limiter.rate });
    }
    return true;
  }
}

/** The reader as an XState actor, for the machine run as an actor (the client). */
export const readerActor = fromCallback<ReaderCommand, ActorInput>(({ input, sendBack, receive }) => {
  const reader = new SocketReader(input.io as SocketIO, { report: (event) => sendBack(event) });
  receive((command) => reader.command(command));
  return () => reader.stop();
});
