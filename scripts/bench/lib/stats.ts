/**
 * The benchmarks' arithmetic: rounding, nearest-rank percentiles and latency distributions, one
 * definition each, so that every benchmark's p99 means the same thing.
 */

/** `x` rounded to `digits` decimals; NaN and infinities pass through. */
export function round(x: number, digits = 3): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Nearest-rank percentile (q in 0..1) of ascending samples; NaN for none. */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

/** Arithmetic mean; NaN for none. */
export const mean = (xs: number[]): number => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);

/** Sum of the counts of several records, key by key, into `into`. */
export function addCounts(into: Record<string, number>, from: Record<string, number>): Record<string, number> {
  for (const [k, n] of Object.entries(from)) into[k] = (into[k] ?? 0) + n;
  return into;
}

/** The parts one after the other, in one array. */
export function concat(parts: Float64Array[]): Float64Array {
  const out = new Float64Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Latency samples, ms, in a typed array that grows (a hot loop must not allocate per sample). */
export class SampleBuffer {
  private xs: Float64Array;
  private n = 0;
  constructor(capacity = 1 << 16) {
    this.xs = new Float64Array(capacity);
  }
  push(x: number): void {
    if (this.n === this.xs.length) {
      const grown = new Float64Array(Math.max(16, this.xs.length * 2));
      grown.set(this.xs);
      this.xs = grown;
    }
    this.xs[this.n++] = x;
  }
  /** The samples so far, ascending (a view: push no more after this). */
  sorted(): Float64Array {
    return this.xs.subarray(0, this.n).sort();
  }
}

/** A latency distribution, ms (3 decimals). */
export interface Dist {
  samples: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
  meanMs: number;
}

/** The distribution of `xs` (any order; not modified). */
export function dist(xs: ArrayLike<number>): Dist {
  const s = Float64Array.from(xs).sort();
  let sum = 0;
  for (const x of s) sum += x;
  return {
    samples: s.length,
    p50Ms: round(quantile(s, 0.5)),
    p90Ms: round(quantile(s, 0.9)),
    p99Ms: round(quantile(s, 0.99)),
    p999Ms: round(quantile(s, 0.999)),
    maxMs: round(s[s.length - 1] ?? NaN),
    meanMs: round(sum / Math.max(1, s.length)),
  };
}

/** A short summary of durations, ms, to 0.1 ms (the queue benchmark's and its workers'). */
export interface Summary {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

export function summary(xs: number[]): Summary {
  const s = [...xs].sort((a, b) => a - b);
  return { n: s.length, p50: round(quantile(s, 0.5), 1), p90: round(quantile(s, 0.9), 1), p99: round(quantile(s, 0.99), 1), max: round(s[s.length - 1] ?? NaN, 1), mean: round(mean(s), 1) };
}
