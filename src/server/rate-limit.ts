/**
 * R21: a token bucket of `rate` tokens refilled at `rate` per second (bursts
 * up to `rate`). The reader takes one per frame from the peer: data, ping and pong.
 */
export class TokenBucket {
  private tokens: number;
  private last = performance.now();

  constructor(readonly rate: number) {
    this.tokens = rate;
  }

  take(): boolean {
    const now = performance.now();
    this.tokens = Math.min(this.rate, this.tokens + ((now - this.last) * this.rate) / 1000);
    this.last = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}
