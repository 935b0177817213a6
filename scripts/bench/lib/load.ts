/**
 * Load shapes. Open loop: send times are fixed in advance (evenly spaced, or Poisson arrivals from
 * a seeded generator) and latency is measured from the SCHEDULED time, so a system that falls
 * behind shows as latency instead of silently receiving less (no coordinated omission). Closed
 * loop: N callers each start their next call when the last one ends (throughput at a concurrency).
 */
import { performance } from 'node:perf_hooks';
import { seededRandom } from '@keypool/testkit/fake-openai';

/** Poisson arrival times (ms from a common start) over `seconds`, from a seeded generator. */
export function poissonArrivals(seed: number, ratePerSec: number, seconds: number): number[] {
  const rand = seededRandom(seed);
  const out: number[] = [];
  const end = seconds * 1000;
  let t = 0;
  for (;;) {
    t += (-Math.log(1 - rand()) / ratePerSec) * 1000;
    if (t >= end) break;
    out.push(t);
  }
  return out;
}

/**
 * Call `fire(i, at)` for each offset of `times` (ms, ascending) at `t0 + times[i]` (performance.now()
 * time), catching up at once when late; stops early when `stopped()` turns true. Resolves when the
 * last one is fired.
 */
export function atTimes(times: ArrayLike<number>, t0: number, fire: (i: number, at: number) => void, stopped: () => boolean): Promise<void> {
  let next = 0;
  const n = times.length;
  return new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      while (next < n && t0 + times[next]! <= now && !stopped()) {
        fire(next, t0 + times[next]!);
        next++;
      }
      if (next >= n || stopped()) return resolve();
      // a timer, never a spin: the load generator must not take the measured processes' CPU
      setTimeout(tick, Math.max(0, t0 + times[next]! - performance.now()));
    };
    tick();
  });
}

/** {@link atTimes} for n sends evenly spaced by `intervalMs`. */
export function evenlySpaced(n: number, intervalMs: number, t0: number, fire: (i: number, at: number) => void, stopped: () => boolean): Promise<void> {
  return atTimes(Array.from({ length: n }, (_, i) => i * intervalMs), t0, fire, stopped);
}

/**
 * `concurrency` callers, each running `step` again as soon as it returns, from construction until
 * stop(). `measuring` is false during the warm-up: a step counts its work only while it is true.
 */
export class ClosedLoop {
  private phase: 'warmup' | 'measure' | 'stop' = 'warmup';
  private readonly callers: Promise<void>[];

  constructor(concurrency: number, step: (loop: ClosedLoop) => Promise<void>) {
    this.callers = Array.from({ length: concurrency }, async () => {
      while (this.phase !== 'stop') await step(this);
    });
  }

  get measuring(): boolean {
    return this.phase === 'measure';
  }

  /** Warm-up over: count from now on. */
  measure(): void {
    this.phase = 'measure';
  }

  /** Stop counting at once; resolves when every caller has finished its step. */
  stop(): Promise<void> {
    this.phase = 'stop';
    return Promise.all(this.callers).then(() => undefined);
  }
}
