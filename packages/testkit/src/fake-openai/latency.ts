import type { LatencySpec } from './types.js';

/** z of the 99th percentile of the standard normal distribution. */
const Z99 = 2.326347874;

/** Throws a TypeError naming `what` when `spec` is not a valid {@link LatencySpec}. */
export function checkLatency(spec: unknown, what = 'latency'): LatencySpec {
  if (typeof spec === 'number') {
    if (!Number.isFinite(spec) || spec < 0) throw new TypeError(`${what} must be a number of ms >= 0`);
    return spec;
  }
  if (spec && typeof spec === 'object') {
    const { p50Ms, p99Ms } = spec as { p50Ms?: unknown; p99Ms?: unknown };
    if (typeof p50Ms === 'number' && typeof p99Ms === 'number' && Number.isFinite(p99Ms) && p50Ms >= 0 && p99Ms >= p50Ms) {
      return { p50Ms, p99Ms };
    }
  }
  throw new TypeError(`${what} must be ms >= 0 or { p50Ms, p99Ms } with 0 <= p50Ms <= p99Ms`);
}

/** mulberry32: a small seeded PRNG, uniform in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * One latency sample in ms. A distribution is log-normal with median p50Ms and 99th percentile
 * p99Ms (mu = ln p50, sigma = ln(p99/p50) / z99), capped at 10 x p99.
 */
export function sampleLatency(spec: LatencySpec | undefined, random: () => number): number {
  if (spec === undefined) return 0;
  if (typeof spec === 'number') return spec;
  const { p50Ms, p99Ms } = spec;
  if (p50Ms <= 0) return 0;
  if (p99Ms <= p50Ms) return p50Ms;
  const sigma = Math.log(p99Ms / p50Ms) / Z99;
  // Box-Muller; 1 - random() is in (0, 1], so the log is finite
  const z = Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  return Math.min(p50Ms * Math.exp(sigma * z), 10 * p99Ms);
}

/** Parses `50` (fixed ms) or `50/400` (p50/p99 ms), the CLI's latency syntax. */
export function parseLatency(text: string): LatencySpec {
  const m = /^(\d+(?:\.\d+)?)(?:\/(\d+(?:\.\d+)?))?$/.exec(text.trim());
  if (!m) throw new TypeError(`bad latency "${text}": use <ms> or <p50ms>/<p99ms>`);
  return m[2] === undefined ? Number(m[1]) : checkLatency({ p50Ms: Number(m[1]), p99Ms: Number(m[2]) });
}
