/**
 * The ideal first-come-first-served pacer, by simulation: the least waiting any pool can achieve
 * over the same provider limits. Arrivals are taken in order; each is admitted at the earliest time
 * t >= its arrival (and >= the previous admission: first come, first served) at which some key has
 * fewer than `quota` admissions in the rolling window (t - windowMs, t], exactly as the fake upstream
 * counts them; its latency is that wait plus the provider's latency. No 429 ever.
 */
export interface IdealInput {
  /** arrival times, ms, ascending */
  arrivals: ArrayLike<number>;
  keys: number;
  /** admissions per key in any rolling window */
  quota: number;
  windowMs: number;
  latencyMs: number;
}

/** The latency of each arrival, ms, in arrival order. */
export function idealLatencies(o: IdealInput): Float64Array {
  const admitted: number[][] = Array.from({ length: o.keys }, () => []);
  const out = new Float64Array(o.arrivals.length);
  let last = -Infinity;
  for (let i = 0; i < o.arrivals.length; i++) {
    const t = Math.max(o.arrivals[i]!, last);
    let best = Infinity;
    let bestKey = 0;
    for (let k = 0; k < o.keys; k++) {
      const a = admitted[k]!;
      // the key's admissions are ascending: the one `quota` back must have left the window
      const at = a.length < o.quota ? t : Math.max(t, a[a.length - o.quota]! + o.windowMs);
      if (at < best) {
        best = at;
        bestKey = k;
      }
    }
    admitted[bestKey]!.push(best);
    last = best;
    out[i] = best - o.arrivals[i]! + o.latencyMs;
  }
  return out;
}
