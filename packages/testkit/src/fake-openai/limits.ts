/**
 * Rate limits the ways providers document enforcing them, one {@link Limiter} per key and per
 * dimension (requests, tokens), selected by the key's `limiter` setting:
 *
 * - `minute` (the default): OpenAI's per-minute limits as token buckets whose capacity is the
 *   per-minute limit, refilling continuously at limit/60 per second. `x-ratelimit-limit-*` is the
 *   per-minute limit, `-reset-*` the time until the bucket is full again ("the time until the rate
 *   limit resets to its initial state", https://platform.openai.com/docs/guides/rate-limits).
 * - `window-1s`, `window-10s`: quantized limits. OpenAI's rate-limit guide: "Rate limits can be
 *   quantized, meaning they are enforced over shorter periods of time (e.g. 60,000 requests/minute
 *   may be enforced as 1,000 requests/second)". Azure OpenAI's quota page
 *   (https://learn.microsoft.com/en-us/azure/ai-services/openai/how-to/quota): "Azure OpenAI
 *   evaluates the rate of incoming requests over a small period of time, typically 1 or 10 seconds",
 *   and "rate limiting will occur for a 600-RPM deployment if more than 10 requests are received
 *   during each 1-second period". So: at most floor(limit x W / 60) requests (and tokens) in ANY
 *   rolling window of W seconds, exactly (a log of admissions, not slots). Azure's
 *   `x-ratelimit-limit-requests` reports that per-window figure (Microsoft Q&A 2265464: a 120 RPM
 *   deployment answers `x-ratelimit-limit-requests: 20`, "the per-second request limit" of a 10 s
 *   window's 20); `-remaining-*` is what is left in the window ending now, `-reset-*` the time until
 *   the window is empty.
 * - `bucket`: a continuously refilled token bucket with a small burst, as other providers document:
 *   Anthropic's rate-limit page (https://docs.anthropic.com/en/api/rate-limits) describes the token
 *   bucket algorithm, capacity replenished continuously up to the limit rather than reset each
 *   minute (paraphrased; the page itself was not in our reference store, secondary sources agree):
 *   capacity limit x burstSeconds / 60 (at least 1), refill limit/60 per second. `-limit-*` is the
 *   per-minute limit.
 *
 * What a 429 carries is decided in ./server.ts (see {@link retryHeaders}).
 */

/** How a key's rpm / tpm are enforced (see the file's header). */
export type LimiterMode = 'minute' | 'window-1s' | 'window-10s' | 'bucket';
export const LIMITER_MODES: readonly LimiterMode[] = ['minute', 'window-1s', 'window-10s', 'bucket'];

/** Default burst of the `bucket` mode, in seconds of the limit. */
export const DEFAULT_BURST_SECONDS = 1;

/** One limit (requests or tokens) of one key. Times are ms (monotonic). */
export interface Limiter {
  /** What `x-ratelimit-limit-*` reports. */
  reported(): number;
  /** What is left now (`x-ratelimit-remaining-*`, before flooring). */
  available(now: number): number;
  /** Ms until `amount` fits: 0 now, Infinity never (more than the limiter can ever hold). */
  waitMs(amount: number, now: number): number;
  take(amount: number, now: number): void;
  /** Ms until the limiter is back to its initial state (`x-ratelimit-reset-*`). */
  resetMs(now: number): number;
  /** A new per-minute limit keeps what was used (a bucket: what is left, at most the new capacity). */
  setLimit(perMinute: number, now: number): void;
}

/**
 * A token bucket of capacity `capacity` (default: the per-minute limit) refilling continuously at
 * `perMinute` per minute.
 */
export class TokenBucket implements Limiter {
  private level: number;
  private at: number;

  constructor(
    private perMinute: number,
    now: number,
    private burstSeconds?: number,
  ) {
    this.level = this.capacity;
    this.at = now;
  }

  get capacity(): number {
    return this.burstSeconds === undefined ? this.perMinute : Math.max(1, (this.perMinute * this.burstSeconds) / 60);
  }

  reported(): number {
    return this.perMinute;
  }

  available(now: number): number {
    this.refill(now);
    return this.level;
  }

  waitMs(amount: number, now: number): number {
    this.refill(now);
    if (amount > this.capacity) return Infinity;
    if (this.level >= amount) return 0;
    return ((amount - this.level) * 60_000) / this.perMinute;
  }

  take(amount: number, now: number): void {
    this.refill(now);
    this.level -= amount;
  }

  resetMs(now: number): number {
    this.refill(now);
    return ((this.capacity - this.level) * 60_000) / this.perMinute;
  }

  setLimit(perMinute: number, now: number): void {
    this.refill(now);
    this.perMinute = perMinute;
    this.level = Math.min(this.level, this.capacity);
  }

  private refill(now: number): void {
    if (now > this.at) {
      this.level = Math.min(this.capacity, this.level + ((now - this.at) * this.perMinute) / 60_000);
      this.at = now;
    }
  }
}

/**
 * Admissions (time, amount) over the trailing `windowMs`: an entry admitted at t counts while
 * now < t + windowMs. Exact: one entry per admission, dropped as it leaves the window.
 */
export class RollingLog {
  private times: number[] = [];
  private amounts: number[] = [];
  private head = 0;
  /** entries in the window, and the sum of their amounts */
  count = 0;
  sum = 0;

  constructor(readonly windowMs: number) {}

  expire(now: number): void {
    while (this.head < this.times.length && this.times[this.head]! + this.windowMs <= now) {
      this.sum -= this.amounts[this.head]!;
      this.count--;
      this.head++;
    }
    if (this.count === 0) this.sum = 0; // no drift from float sums
    if (this.head > 1024 && this.head * 2 > this.times.length) {
      this.times = this.times.slice(this.head);
      this.amounts = this.amounts.slice(this.head);
      this.head = 0;
    }
  }

  add(now: number, amount: number): void {
    this.expire(now);
    this.times.push(now);
    this.amounts.push(amount);
    this.count++;
    this.sum += amount;
  }

  /** Ms until entries amounting to at least `over` (counted, or summed) have left the window; Infinity if they never can. */
  msUntil(now: number, over: number, by: 'count' | 'sum'): number {
    this.expire(now);
    let freed = 0;
    for (let i = this.head; i < this.times.length; i++) {
      freed += by === 'count' ? 1 : this.amounts[i]!;
      if (freed >= over) return this.times[i]! + this.windowMs - now;
    }
    return Infinity;
  }

  /** Ms until the window is empty. */
  emptyInMs(now: number): number {
    this.expire(now);
    return this.count === 0 ? 0 : this.times[this.times.length - 1]! + this.windowMs - now;
  }
}

/** At most floor(perMinute x W / 60) (at least 1) admitted in any rolling window of W. */
export class WindowLimiter implements Limiter {
  private readonly log: RollingLog;
  private quota: number;

  constructor(
    perMinute: number,
    readonly windowMs: number,
    /** requests count admissions; tokens sum their charges */
    private readonly by: 'count' | 'sum',
  ) {
    this.log = new RollingLog(windowMs);
    this.quota = WindowLimiter.quotaOf(perMinute, windowMs);
  }

  static quotaOf(perMinute: number, windowMs: number): number {
    return Math.max(1, Math.floor((perMinute * windowMs) / 60_000 + 1e-9));
  }

  private used(now: number): number {
    this.log.expire(now);
    return this.by === 'count' ? this.log.count : this.log.sum;
  }

  reported(): number {
    return this.quota;
  }

  available(now: number): number {
    return Math.max(0, this.quota - this.used(now));
  }

  waitMs(amount: number, now: number): number {
    if (amount > this.quota) return Infinity;
    const over = this.used(now) + amount - this.quota;
    return over <= 0 ? 0 : this.log.msUntil(now, over, this.by);
  }

  take(amount: number, now: number): void {
    this.log.add(now, this.by === 'count' ? 1 : amount);
  }

  resetMs(now: number): number {
    return this.log.emptyInMs(now);
  }

  setLimit(perMinute: number): void {
    this.quota = WindowLimiter.quotaOf(perMinute, this.windowMs);
  }
}

/** The limiter of one dimension (`requests` counts admissions, `tokens` sums charges). */
export function makeLimiter(mode: LimiterMode, perMinute: number, now: number, dimension: 'requests' | 'tokens', burstSeconds = DEFAULT_BURST_SECONDS): Limiter {
  const by = dimension === 'requests' ? 'count' : 'sum';
  if (mode === 'window-1s') return new WindowLimiter(perMinute, 1000, by);
  if (mode === 'window-10s') return new WindowLimiter(perMinute, 10_000, by);
  if (mode === 'bucket') return new TokenBucket(perMinute, now, burstSeconds);
  return new TokenBucket(perMinute, now);
}

/**
 * The 429's retry headers by mode, as each provider documents them: OpenAI (`minute`) and Azure
 * OpenAI (`window-*`) answer `retry-after-ms` and `retry-after` (whole seconds, rounded up; the
 * openai SDK reads retry-after-ms first); Anthropic-style buckets `retry-after` alone, in seconds
 * ("the number of seconds to wait", https://docs.anthropic.com/en/api/rate-limits). None when the
 * request can never fit.
 */
export function retryHeaders(mode: LimiterMode, waitMs: number): Record<string, string> {
  if (!Number.isFinite(waitMs)) return {};
  const seconds = String(Math.max(1, Math.ceil(waitMs / 1000)));
  if (mode === 'bucket') return { 'retry-after': seconds };
  return { 'retry-after': seconds, 'retry-after-ms': String(Math.max(1, Math.ceil(waitMs))) };
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

/** The rolling windows whose peaks the counters report. */
export const PEAK_WINDOWS = { '1s': 1000, '10s': 10_000, '60s': 60_000 } as const;

/**
 * The most admitted requests and charged tokens seen in any rolling window of 1 s, 10 s and 60 s,
 * exactly: a window's count is largest when it ends at an admission, so each admission reads the
 * sums of the windows ending at it.
 */
export class PeakWindows {
  private readonly logs = Object.fromEntries(Object.entries(PEAK_WINDOWS).map(([k, ms]) => [k, new RollingLog(ms)])) as Record<keyof typeof PEAK_WINDOWS, RollingLog>;
  readonly peaks = Object.fromEntries(Object.keys(PEAK_WINDOWS).map((k) => [k, { requests: 0, tokens: 0 }])) as Record<keyof typeof PEAK_WINDOWS, { requests: number; tokens: number }>;

  add(now: number, tokens: number): void {
    for (const k of Object.keys(this.logs) as Array<keyof typeof PEAK_WINDOWS>) {
      const log = this.logs[k];
      log.add(now, tokens);
      const p = this.peaks[k];
      if (log.count > p.requests) p.requests = log.count;
      if (log.sum > p.tokens) p.tokens = log.sum;
    }
  }
}
