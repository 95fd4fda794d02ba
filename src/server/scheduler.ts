/**
 * Fair scheduling of inbound work: no one peer can take the whole
 * event loop. Node reads every readable socket in one poll phase and `ws`
 * emits every message of a 64 KiB read at once, so a peer pipelining requests
 * would have all of them handled before anyone else's upgrade or round trip.
 *
 * A turn is one pass of the event loop (it ends in the check phase, where
 * this scheduler's setImmediate runs; one is armed at a time). Each
 * connection may spend `share` units of work per turn, and all connections
 * together `turnBudget` units or `turnTime` ms per phase, whichever runs out
 * first (a connection's first small message of a turn runs while the phase
 * has time left, so a thousand quiet peers are not deferred for the unit
 * budget alone; past `turnTime` it waits like any other). A message, ping or
 * pong costs 1 unit plus 1 per KiB. Beyond that, the reader holds `ws`'s parser after the message that
 * crossed the share (src/server/ws-internals.ts, item 4): the frames behind it
 * stay bytes, `ws` stops taking chunks and pauses the socket (backpressure to
 * the peer, TCP does the rest). A message with nothing behind it in `ws`
 * (the usual deferred one: a peer with one request in flight) is deferred
 * without a hold; the peer's next frame before its turn installs it. On later turns, round-robin with the other
 * deferred readers, that message is delivered and the parser goes on, up to
 * the share each turn. Nothing is dropped or reordered. The two phases: the
 * poll phase reads the sockets that have data (under a fresh budget after each
 * turn), the check phase serves the deferred readers (under its own).
 *
 * Cost budgets (R21) ride on the same clock: per connection and
 * window, messages, bytes, control frames and fan-out cost (recipients ×
 * bytes of the broadcasts and publishes it caused). Over one, the connection
 * is closed 1008 naming the budget, and nothing more of its input is parsed;
 * the scheduler only counts, the reader and the supervisor act.
 */

/**
 * Units per turn: what a message costs. One per message plus one per KiB of
 * payload (a 1 MiB message counts as ~1,000 small requests: its copy, UTF-8
 * check and decoding take a few ms, the same order).
 */
export function costOf(bytes: number): number {
  return 1 + (bytes >>> 10);
}

/** What the scheduler needs of a reader that can be deferred. */
export interface Deferrable {
  /** The turn its `used` counts belong to. */
  fairTurn: number;
  /** Units used in `fairTurn`. */
  fairUsed: number;
  /** Delivers deferred messages until `share` is used; returns true when none are left (its socket is resumed). */
  drain(scheduler: TurnScheduler): boolean;
}

export interface FairnessLimits {
  /** Units one connection may use per event-loop turn before its socket is paused. */
  share: number;
  /** Units all connections together may use per turn before further ones are deferred. */
  turnBudget: number;
  /** Milliseconds of work per phase of a turn (the poll phase's reads, the check phase's drain) before the rest is deferred the same way. */
  turnTime: number;
}

/** Units between two readings of the clock for `turnTime` (a reading costs ~40 ns; a unit a few µs of work). */
const CLOCK_EVERY = 32;

export class TurnScheduler {
  /** Incremented at the end of every turn that saw work. */
  turn = 1;
  /** performance.now() at the start of this turn: a clock for the budgets that costs nothing per message. */
  now = performance.now();
  /** Units spent this turn, by every connection. */
  spent = 0;
  readonly share: number;
  readonly turnBudget: number;
  readonly turnTime: number;
  /** performance.now() past which this phase's work is over (as if its budget were spent). */
  private deadline = 0;
  /** This phase is past its deadline: even a connection's first small message of the turn waits. */
  private late = false;
  /** `spent` at which the clock is read next. */
  private clockAt = CLOCK_EVERY;
  private armed = false;
  /** Readers with deferred messages, in the order they will be served. */
  private waiting: Deferrable[] = [];
  private readonly endTurn = (): void => this.end();

  constructor(limits: FairnessLimits) {
    this.share = limits.share;
    this.turnBudget = limits.turnBudget;
    this.turnTime = limits.turnTime;
  }

  /**
   * May `reader` do `cost` units of work now? Counts them if so. False: the
   * caller defers the message (and then calls `defer`).
   */
  admit(reader: Deferrable, cost: number): boolean {
    if (reader.fairTurn !== this.turn) {
      reader.fairTurn = this.turn;
      reader.fairUsed = 0;
      if (!this.armed) {
        // The first work since the last turn ended: a poll phase starts (its budget in time from now).
        this.startPhase(performance.now());
        this.arm();
      }
      // A connection's first small message of a turn runs while the phase has time left (a thousand quiet peers are
      // not deferred for the unit budget alone); a big one waits when the turn's budget is spent, and every one once
      // the phase is past its turnTime: a thousand peers sending at once (a broadcast storm) then wait for the check
      // phase, round-robin, instead of holding the poll phase, and a newcomer's upgrade, for all of theirs.
      if (this.spent >= this.turnBudget && (cost > this.share || this.late)) return false;
    } else if (reader.fairUsed >= this.share || this.spent >= this.turnBudget) return false;
    reader.fairUsed += cost;
    this.spent += cost;
    if (this.spent >= this.clockAt) this.checkClock();
    return true;
  }

  /** Counts work done for `reader` while draining (no refusal: drain checks the share itself). */
  count(reader: Deferrable, cost: number): void {
    reader.fairUsed += cost;
    this.spent += cost;
    if (this.spent >= this.clockAt) this.checkClock();
  }

  /**
   * Every CLOCK_EVERY units: past this phase's `turnTime`, the phase's budget
   * counts as spent. Units measure work at its measured cost; time catches
   * work that costs more (code not yet optimised, a slow handler).
   */
  private checkClock(): void {
    this.clockAt = this.spent + CLOCK_EVERY;
    if (!this.late && performance.now() >= this.deadline) {
      this.late = true;
      if (this.spent < this.turnBudget) this.spent = this.turnBudget;
    }
  }

  /** A phase of work starts: its budget in time from now. */
  private startPhase(now: number): void {
    this.deadline = now + this.turnTime;
    this.late = false;
    this.clockAt = this.spent + CLOCK_EVERY;
  }

  /** `reader` has deferred messages: serve it on a later turn. */
  defer(reader: Deferrable): void {
    this.waiting.push(reader);
    if (!this.armed) this.arm();
  }

  /** Readers waiting with deferred messages (for tests and metrics). */
  get deferred(): number {
    return this.waiting.length;
  }

  private arm(): void {
    this.armed = true;
    setImmediate(this.endTurn);
  }

  private end(): void {
    this.armed = false;
    this.turn++;
    this.now = performance.now();
    this.spent = 0;
    this.startPhase(this.now);
    if (this.waiting.length > 0) {
      // Round-robin: each waiting reader gets up to its share, while the turn's budget lasts.
      const list = this.waiting;
      this.waiting = [];
      const again: Deferrable[] = [];
      let i = 0;
      for (; i < list.length && this.spent < this.turnBudget; i++) {
        const reader = list[i]!;
        reader.fairTurn = this.turn;
        reader.fairUsed = 0;
        if (!reader.drain(this)) again.push(reader);
      }
      // Those not reached go first next turn; then the ones served; then any new.
      const rest = i < list.length ? list.slice(i) : [];
      this.waiting = rest.concat(again, this.waiting);
      // The poll phase that follows gets a fresh budget: draining must not starve sockets that have not been read yet.
      this.spent = 0;
      this.startPhase(performance.now());
      // A reader drained above may have deferred itself again (and armed the next turn): one turn at a time.
      if (this.waiting.length > 0 && !this.armed) this.arm();
    }
  }
}

/** Per-connection budgets per window (R21). 0 for a budget = none. */
export interface BudgetLimits {
  /** The window, ms. */
  window: number;
  /** Messages per window (data frames; a pipelining peer is slowed by the scheduler long before). */
  messages: number;
  /** Inbound payload bytes per window. */
  bytes: number;
  /** Fan-out cost per window: recipients × bytes of the broadcasts and publishes charged to the connection. */
  fanOut: number;
  /** Control frames (pings and pongs) per window: each costs a parse, a ping a pong write, and no application work. */
  control: number;
}

/**
 * One connection's use of its budgets in the current window. Made on the
 * connection's first message (an idle connection holds none). Fixed windows:
 * a peer can use up to twice a budget across a window boundary, documented.
 */
export class BudgetUse {
  /**
   * When the window began, in whole ms (rounded up): a small integer held in
   * the field itself, where the fractional `performance.now()` was a 16-byte
   * heap number per connection that ever sent a message (every session
   * connection: its `open`; docs/performance.md, "Sessions, ninth pass"). A
   * window then lasts up to 1 ms longer, never less.
   */
  start: number;
  messages = 0;
  bytes = 0;
  fanOut = 0;
  control = 0;
  /** The close reason of the budget exceeded, once one is (then it stays: the connection is closing). */
  exceeded: string | null = null;

  constructor(now: number) {
    this.start = Math.ceil(now);
  }

  /** Counts one inbound message (`control`: a ping or pong frame); returns the name of the budget it exceeds, or null. */
  inbound(limits: BudgetLimits, now: number, bytes: number, control = false): string | null {
    if (now - this.start >= limits.window) this.reset(now);
    this.messages++;
    this.bytes += bytes;
    if (limits.messages > 0 && this.messages > limits.messages) return overReason('message', limits.messages, limits.window);
    if (limits.bytes > 0 && this.bytes > limits.bytes) return overReason('byte', limits.bytes, limits.window);
    if (control && limits.control > 0 && ++this.control > limits.control) return overReason('control-frame', limits.control, limits.window);
    return null;
  }

  /** Charges fan-out cost; returns the reason if it is over the fan-out budget, else null. */
  charge(limits: BudgetLimits, now: number, cost: number): string | null {
    if (now - this.start >= limits.window) this.reset(now);
    this.fanOut += cost;
    if (limits.fanOut > 0 && this.fanOut > limits.fanOut) return overReason('fan-out', limits.fanOut, limits.window);
    return null;
  }

  private reset(now: number): void {
    this.start = Math.ceil(now);
    this.messages = 0;
    this.bytes = 0;
    this.fanOut = 0;
    this.control = 0;
  }
}

/** e.g. `message budget over 100000 per 10 s` (close reasons must stay within 123 bytes). */
function overReason(what: string, limit: number, windowMs: number): string {
  return `${what} budget over ${limit} per ${windowMs % 1000 === 0 ? `${windowMs / 1000} s` : `${windowMs} ms`}`;
}
