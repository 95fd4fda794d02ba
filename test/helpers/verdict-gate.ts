/**
 * Holds a store's answers back (a slow store, or a slow process that has
 * counted a request and not yet run it): the store decides at the call, only
 * its answer waits until `release()`. Used by the gated stores of
 * test/server/sessions.requests.test.ts (in memory) and
 * test/server/sessions.nodes.test.ts (Redis).
 */
export class VerdictGate {
  private gate: { promise: Promise<void>; open(): void } | null = null;
  /** cseqs whose answer was held. */
  readonly held: number[] = [];

  /** Hold every answer from now until `release()`. */
  hold(): void {
    let open!: () => void;
    const promise = new Promise<void>((resolve) => (open = resolve));
    this.gate = { promise, open };
  }

  release(): void {
    const gate = this.gate;
    this.gate = null;
    gate?.open();
  }

  /** `answer`, once the gate (if held) opens; `cseq` is recorded as held. */
  async pass<T>(cseq: number, answer: T): Promise<T> {
    const gate = this.gate;
    if (gate !== null) {
      this.held.push(cseq);
      await gate.promise;
    }
    return answer;
  }
}
