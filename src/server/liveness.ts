/**
 * The part every reader actor shares, whatever the transport (ws in Node, the
 * native WebSocket in browsers): what it reports to the connection machine
 * about liveness (R4, R5) and the close (R2). No Node imports: bundled for
 * browsers too.
 *
 * - After `reader.expectLiveness` (a ping went out), the first inbound frame
 *   is reported once: `socket.pong` with the round trip when it is our pong,
 *   else `socket.activity`. Frames at other times cost no machine event.
 * - `reader.confirmSilence` (the pong timeout fired) is answered with
 *   `socket.silent` only after `defer` has let waiting input be read.
 * - The transport's close is reported exactly once.
 */
import type { ReaderCommand, ReaderEvent } from '../../machines/connection.machine.ts';

/** Where a reader's reports go: the machine (on the server, its run itself: no closure per connection). */
export interface ReaderParent {
  report(event: ReaderEvent): void;
}

/** LivenessReport's flags (bits of `flags`); subclasses use the bits from SUBCLASS_FLAGS up. */
const CLOSED = 1;
const STOPPED = 2;
export const SUBCLASS_FLAGS = 4;

export class LivenessReport {
  /** True between a ping and the first inbound frame after it. Read on the hot path: keep it a field. */
  expecting = false;
  /** Booleans as bits, one field for all (memory per idle connection on the server). */
  protected flags = 0;

  constructor(
    /** Where the reports go (the machine). */
    readonly parent: ReaderParent,
  ) {}

  /** The transport's close was reported. */
  private get closed(): boolean {
    return (this.flags & CLOSED) !== 0;
  }

  /** The reader stopped: nothing more is reported. */
  protected get stopped(): boolean {
    return (this.flags & STOPPED) !== 0;
  }

  /** Reports to the machine. */
  sendBack(event: ReaderEvent): void {
    this.parent.report(event);
  }

  /** Runs `fn` once pending input has been dispatched (browsers: setTimeout 0; Node's reader overrides it with setImmediate). */
  protected defer(fn: () => void): void {
    setTimeout(fn, 0);
  }

  command(command: ReaderCommand): void {
    if (command.type === 'reader.expectLiveness') this.expecting = true;
    else
      this.defer(() => {
        if (this.expecting && !this.stopped) this.sendBack({ type: 'socket.silent' });
      });
  }

  /** An inbound frame: the first after a ping proves liveness (R5); `rttMs` when it was our pong. */
  inbound(rttMs: number | null = null): void {
    if (!this.expecting) return;
    this.expecting = false;
    this.sendBack(rttMs !== null ? { type: 'socket.pong', rttMs } : { type: 'socket.activity' });
  }

  /** The transport closed (R2): reported once. */
  close(code: number, reason: string): void {
    if (this.closed) return;
    this.flags |= CLOSED;
    this.sendBack({ type: 'socket.closed', code, reason });
  }

  /** The reader stopped: nothing more is reported. */
  stop(): void {
    this.flags |= STOPPED;
  }
}
