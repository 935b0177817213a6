/**
 * bench:realistic's ideal first-come-first-served pacer (scripts/bench/realistic/ideal.ts): small
 * cases computed by hand, then random arrivals against a second, deliberately naive simulation
 * (a millisecond clock and the fake upstream's rule: an admission at s counts while now < s + W).
 */
import { describe, expect, it } from 'vitest';
import { seededRandom } from '@keypool/testkit/fake-openai';
import { idealLatencies, type IdealInput } from '../scripts/bench/realistic/ideal.js';

const W = 1000;
const LAT = 20;
const ideal = (arrivals: number[], keys: number, quota: number) => [...idealLatencies({ arrivals, keys, quota, windowMs: W, latencyMs: LAT })];
/** When each request started upstream: arrival + latency - the provider's latency. */
const starts = (o: IdealInput) => [...idealLatencies(o)].map((l, i) => o.arrivals[i]! + l - o.latencyMs);

/** Millisecond by millisecond: the oldest waiting arrival goes as soon as any key has room. Integer arrivals only. */
function slowStarts(arrivals: number[], keys: number, quota: number, windowMs: number): number[] {
  const logs: number[][] = Array.from({ length: keys }, () => []);
  const out: number[] = [];
  let next = 0;
  for (let now = 0; next < arrivals.length; now++) {
    while (next < arrivals.length && arrivals[next]! <= now) {
      for (let k = 0; k < keys; k++) logs[k] = logs[k]!.filter((s) => now < s + windowMs);
      const k = logs.findIndex((log) => log.length < quota);
      if (k < 0) break;
      logs[k]!.push(now);
      out.push(now);
      next++;
    }
  }
  return out;
}

describe('ideal pacer', () => {
  it('a burst of quota + 1 on one key: the quota goes at once, the last waits a whole window', () => {
    expect(ideal([0, 0, 0, 0], 1, 3)).toEqual([LAT, LAT, LAT, W + LAT]);
    // arriving later in the window, it waits only for the first admission to leave it
    expect(ideal([0, 0, 0, 400], 1, 3)).toEqual([LAT, LAT, LAT, W - 400 + LAT]);
  });

  it('an admission leaves the window exactly W after it (the fake counts s while now < s + W)', () => {
    expect(ideal([0, 0, 999], 1, 2)).toEqual([LAT, LAT, 1 + LAT]);
    expect(ideal([0, 0, 1000], 1, 2)).toEqual([LAT, LAT, LAT]);
  });

  it('two keys: the second key takes what the first cannot, then both wait for their windows', () => {
    // quota 1 each: 0 -> key A, 0 -> key B, the third waits for A (1000), the fourth for B (1000)
    expect(ideal([0, 0, 0, 0], 2, 1)).toEqual([LAT, LAT, W + LAT, W + LAT]);
    // B's admission at 300 frees at 1300: the third (arrived 500) takes A at 1000, the fourth B at 1300
    expect(ideal([0, 300, 500, 600], 2, 1)).toEqual([LAT, LAT, 500 + LAT, 700 + LAT]);
  });

  it('first come, first served: a later arrival never starts before an earlier one', () => {
    // the third waits for a window (starts 1000); the fourth, arriving at 900, must not start before it
    const o = { arrivals: [0, 0, 0, 900], keys: 1, quota: 2, windowMs: W, latencyMs: LAT };
    expect(starts(o)).toEqual([0, 0, 1000, 1000]);
    const rand = seededRandom(7);
    let t = 0;
    const arrivals = Array.from({ length: 3000 }, () => (t += -Math.log(1 - rand()) * 30));
    const s = starts({ arrivals, keys: 3, quota: 10, windowMs: W, latencyMs: LAT });
    // (float arrivals: a start equal to its arrival may come back a rounding error below it)
    for (let i = 1; i < s.length; i++) expect(s[i]).toBeGreaterThanOrEqual(s[i - 1]! - 1e-6);
    s.forEach((x, i) => expect(x).toBeGreaterThanOrEqual(arrivals[i]! - 1e-6));
  });

  it('agrees with a millisecond-by-millisecond simulation on random arrivals (heavy load)', () => {
    const rand = seededRandom(12);
    for (const [keys, quota] of [
      [1, 1],
      [1, 4],
      [3, 2],
      [3, 10],
    ] as const) {
      // about 95% of capacity, integer ms, bursts included
      const arrivals: number[] = [];
      let t = 0;
      for (let i = 0; i < 400; i++) arrivals.push(Math.floor((t += (-Math.log(1 - rand()) * W) / (keys * quota * 0.95))));
      const o = { arrivals, keys, quota, windowMs: W, latencyMs: LAT };
      expect(starts(o), `${keys} keys x ${quota}`).toEqual(slowStarts(arrivals, keys, quota, W));
    }
  });
});
