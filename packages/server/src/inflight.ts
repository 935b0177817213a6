import { systemClock, type Clock } from '@keypool/core';

/** An entry of a {@link Chain}: unlinked entries point nowhere. */
export interface Link<T> {
  value: T | undefined;
  prev: Link<T> | undefined;
  next: Link<T> | undefined;
}

/**
 * A list with O(1) add and remove that holds its entries only while they are in it. Not a Set: a
 * Set that takes and drops an entry per request rehashes every few dozen of them, and V8 leaves the
 * replaced table in the old generation with its entries still in it (it only links it to the new
 * one). Until the next full collection that dead table keeps the requests it held alive through
 * every young-generation collection, so they are promoted. Measured on the gateway at 500
 * requests/s (docs/benchmarks.md, "2026-12-07, evening: requests kept alive by V8's replaced hash
 * tables"): about half of what was promoted per scavenge.
 */
export class Chain<T extends {}> {
  private head: Link<T> | undefined;
  private tail: Link<T> | undefined;
  size = 0;

  add(value: T): Link<T> {
    const link: Link<T> = { value, prev: this.tail, next: undefined };
    if (this.tail) this.tail.next = link;
    else this.head = link;
    this.tail = link;
    this.size++;
    return link;
  }

  /**
   * Remove `link` and clear it, so nothing it pointed to stays reachable through it. False when it
   * was removed already (nothing changes).
   */
  remove(link: Link<T>): boolean {
    if (link.value === undefined) return false;
    if (link.prev) link.prev.next = link.next;
    else this.head = link.next;
    if (link.next) link.next.prev = link.prev;
    else this.tail = link.prev;
    link.value = link.prev = link.next = undefined;
    this.size--;
    return true;
  }

  values(): T[] {
    const out: T[] = [];
    for (let l = this.head; l; l = l.next) out.push(l.value!);
    return out;
  }
}

/**
 * Requests in flight and the background work they leave (lease releases, token settlements), so a
 * shutdown can wait for them: stop taking requests, let those in flight finish within the drain
 * period, abort the rest (their leases are released as aborted), then wait for the releases.
 */
export class Inflight {
  /** `clock` times the drain period and the wait for background work (tests drive a ManualClock). */
  constructor(private readonly clock: Clock = systemClock) {}

  private readonly requests = new Chain<(why: unknown) => void>();
  private readonly background = new Chain<Promise<unknown>>();
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
    const link = this.requests.add(abort);
    // it got past the door before the drain (its body was still arriving) but starts after the cut
    if (this.cut) abort(this.cut.why);
    return () => {
      if (this.requests.remove(link) && this.requests.size === 0) this.idle?.();
    };
  }

  /** Work that must finish before the process exits (a release, a settlement). */
  track(p: Promise<unknown>): void {
    const link = this.background.add(p);
    void p.finally(() => this.background.remove(link));
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
    for (const abort of this.requests.values()) abort(why);
    // the aborted requests release their leases as they unwind
    const deadline = this.clock.now() + settleMs;
    while ((this.requests.size > 0 || this.background.size > 0) && this.clock.now() < deadline) {
      const tick = new AbortController();
      await Promise.race([Promise.allSettled(this.background.values()), this.clock.sleep(20, tick.signal).catch(() => undefined)]);
      tick.abort();
    }
    return cut;
  }
}
