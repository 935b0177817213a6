/**
 * Rate limiting as OpenAI describes it: per-minute limits enforced by token buckets whose capacity is
 * the per-minute limit and which refill continuously at limit/60 per second.
 */

/** A token bucket of capacity `limit` refilling at `limit` per minute. Times are ms (monotonic). */
export class TokenBucket {
  private level: number;
  private at: number;

  constructor(
    private limit: number,
    now: number,
  ) {
    this.level = limit;
    this.at = now;
  }

  get capacity(): number {
    return this.limit;
  }

  /** What the bucket holds at `now`. */
  available(now: number): number {
    this.refill(now);
    return this.level;
  }

  /** Ms until `amount` is available: 0 when it is now, Infinity when it never is (more than the capacity). */
  waitMs(amount: number, now: number): number {
    this.refill(now);
    if (amount > this.limit) return Infinity;
    if (this.level >= amount) return 0;
    return ((amount - this.level) * 60_000) / this.limit;
  }

  take(amount: number, now: number): void {
    this.refill(now);
    this.level -= amount;
  }

  /** Ms until the bucket is full again (OpenAI's x-ratelimit-reset-*: "until it resets to its initial state"). */
  resetMs(now: number): number {
    this.refill(now);
    return ((this.limit - this.level) * 60_000) / this.limit;
  }

  /** A new limit keeps what is left, at most the new capacity. */
  setLimit(limit: number, now: number): void {
    this.refill(now);
    this.limit = limit;
    this.level = Math.min(this.level, limit);
  }

  private refill(now: number): void {
    if (now > this.at) {
      this.level = Math.min(this.limit, this.level + ((now - this.at) * this.limit) / 60_000);
      this.at = now;
    }
  }
}

/**
 * An OpenAI-style duration, rounded up to the millisecond: `0s`, `120ms`, `1s`, `1.5s`, `6m0s`,
 * `1h2m3.5s` (Go's time.Duration format, as in x-ratelimit-reset-requests).
 */
export function formatDuration(ms: number): string {
  const total = Math.ceil(Math.max(0, ms));
  if (total === 0) return '0s';
  if (total < 1000) return `${total}ms`;
  const h = Math.floor(total / 3_600_000);
  const m = Math.floor((total % 3_600_000) / 60_000);
  const s = (total % 60_000) / 1000; // up to 3 decimals, no trailing zeros from toString
  if (h > 0) return `${h}h${m}m${s}s`;
  if (m > 0) return `${m}m${s}s`;
  return `${s}s`;
}

const SLOT_MS = 100;
const SLOTS = 600; // 60 s

/**
 * Sums of admitted requests and charged tokens over the trailing 60 s (in 100 ms slots), and the
 * largest sums seen.
 */
export class MinuteWindow {
  private readonly requests = new Float64Array(SLOTS);
  private readonly tokens = new Float64Array(SLOTS);
  private slot = -1; // absolute index of the newest slot
  private sumRequests = 0;
  private sumTokens = 0;
  peakRequests = 0;
  peakTokens = 0;

  add(now: number, tokens: number): void {
    const slot = Math.floor(now / SLOT_MS);
    if (this.slot < 0) this.slot = slot;
    // expire the slots that left the window (at most all of them)
    for (let s = this.slot + 1, n = 0; s <= slot && n < SLOTS; s++, n++) {
      const i = s % SLOTS;
      this.sumRequests -= this.requests[i]!;
      this.sumTokens -= this.tokens[i]!;
      this.requests[i] = 0;
      this.tokens[i] = 0;
    }
    if (slot > this.slot) this.slot = slot;
    const i = this.slot % SLOTS;
    this.requests[i]! += 1;
    this.tokens[i]! += tokens;
    this.sumRequests += 1;
    this.sumTokens += tokens;
    if (this.sumRequests > this.peakRequests) this.peakRequests = this.sumRequests;
    if (this.sumTokens > this.peakTokens) this.peakTokens = this.sumTokens;
  }
}
