/**
 * Prometheus text exposition, read the way a benchmark needs it: a scrape as a map, and what a
 * histogram observed between two scrapes, as quantiles.
 */
import { round } from './stats.js';

export type Scrape = Map<string, number>; // `name{sorted labels}` -> value

export function parseMetrics(text: string): Scrape {
  const out: Scrape = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = [...(m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((x) => `${x[1]}=${x[2]}`).sort();
    out.set(`${m[1]}{${labels.join(',')}}`, Number(m[3]));
  }
  return out;
}

/**
 * Quantiles (ms) of a histogram's change between two scrapes, interpolated linearly within buckets
 * (as Prometheus' histogram_quantile does). `match` picks the series by its labels besides `le`.
 */
export function histogramDelta(
  before: Scrape,
  after: Scrape,
  name: string,
  match: string,
): { count: number; p50Ms: number; p90Ms: number; p99Ms: number; meanMs: number; /** observations above the last finite bucket (its bound is then a lower bound) */ aboveLastBucket: number; lastBucketMs: number } {
  const buckets: { le: number; n: number }[] = [];
  for (const [k, v] of after) {
    if (!k.startsWith(`${name}_bucket{`)) continue;
    const labels = k.slice(name.length + 8, -1).split(',');
    if (match && !labels.includes(match)) continue;
    const le = labels.find((l) => l.startsWith('le='))?.slice(3);
    if (le === undefined) continue;
    buckets.push({ le: le === '+Inf' ? Infinity : Number(le), n: v - (before.get(k) ?? 0) });
  }
  buckets.sort((a, b) => a.le - b.le);
  const total = buckets[buckets.length - 1]?.n ?? 0;
  const sumKey = [...after.keys()].find((k) => k.startsWith(`${name}_sum{`) && (!match || k.includes(match)));
  const sum = sumKey ? (after.get(sumKey) ?? 0) - (before.get(sumKey) ?? 0) : NaN;
  const q = (p: number) => {
    if (total === 0) return NaN;
    const rank = p * total;
    let prevLe = 0;
    let prevN = 0;
    for (const b of buckets) {
      if (b.n >= rank) {
        if (!Number.isFinite(b.le)) return prevLe * 1000; // above the last bound: its lower edge
        const inBucket = b.n - prevN;
        return (prevLe + (inBucket > 0 ? ((rank - prevN) / inBucket) * (b.le - prevLe) : 0)) * 1000;
      }
      prevLe = b.le;
      prevN = b.n;
    }
    return NaN;
  };
  const finite = buckets.filter((b) => Number.isFinite(b.le));
  const last = finite[finite.length - 1];
  return { count: total, p50Ms: round(q(0.5)), p90Ms: round(q(0.9)), p99Ms: round(q(0.99)), meanMs: round((sum / total) * 1000), aboveLastBucket: total - (last?.n ?? 0), lastBucketMs: (last?.le ?? NaN) * 1000 };
}
