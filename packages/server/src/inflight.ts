import { systemClock, type Clock } from '@keypool/core';

/**
 * Requests in flight and the background work they leave (lease releases, token settlements), so a
 * shutdown can wait for them: stop taking requests, let those in flight finish within the drain
 * period, abort the rest (their leases are released as aborted), then wait for the releases.
 */
export class Inflight {
  /** `clock` times the drain period and the wait for background work (tests drive a ManualClock). */
  constructor(private readonly clock: Clock = systemClock) {}

  private readonly requests = new Set<(why: unknown) => void>();
  private readonly background = new Set<Promise<unknown>>();
  private idle: (() => void) | undefined;
  /** Set when a drain starts: new requests are refused from then on. */
  closing = false;
  /** Set when the drain period is over and requests are cut: why. */
  private cut: { why: unknown } | undefined;

  get size(): number {
    return this.requests.size;
  }

  /** A request starts; `abort` cuts it short at the end of a drain. Returns its end(). */
  begin(abort: (why: unknown) => void): () => void {
    this.requests.add(abort);
    // it got past the door before the drain (its body was still arriving) but starts after the cut
    if (this.cut) abort(this.cut.why);
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.requests.delete(abort);
      if (this.requests.size === 0) this.idle?.();
    };
  }

  /** Work that must finish before the process exits (a release, a settlement). */
  track(p: Promise<unknown>): void {
    this.background.add(p);
    void p.finally(() => this.background.delete(p));
  }

  /**
   * Wait until no request is in flight or `ms` passed; then abort what is left with `why`, and wait
   * (at most `settleMs`) for the background work. Returns how many requests were cut.
   */
  async drain(ms: number, why: unknown, settleMs = 5000): Promise<number> {
    this.closing = true;
    if (this.requests.size > 0) {
      const period = new AbortController();
      await new Promise<void>((resolve) => {
        this.clock.sleep(ms, period.signal).then(resolve, () => undefined);
        this.idle = () => {
          period.abort();
          resolve();
        };
      });
      this.idle = undefined;
    }
    const cut = this.requests.size;
    this.cut = { why };
    for (const abort of [...this.requests]) abort(why);
    // the aborted requests release their leases as they unwind
    const deadline = this.clock.now() + settleMs;
    while ((this.requests.size > 0 || this.background.size > 0) && this.clock.now() < deadline) {
      const tick = new AbortController();
      await Promise.race([Promise.allSettled([...this.background]), this.clock.sleep(20, tick.signal).catch(() => undefined)]);
      tick.abort();
    }
    return cut;
  }
}
