import { ManualClock } from '@keypool/core';
import { describe, expect, it } from 'vitest';
import { Inflight } from '../src/inflight.js';

/** Lets the code under test run until it sleeps on the clock (no real time passes). */
async function untilAsleep(clock: ManualClock, sleepers = 1): Promise<void> {
  for (let turns = 0; clock.pending < sleepers; turns++) {
    if (turns > 1000) throw new Error('the code under test never went to sleep on the clock');
    await new Promise((r) => setImmediate(r));
  }
}

describe('Inflight', () => {
  it('a request that begins after the drain cut the others (its body was still arriving) is cut at once', async () => {
    const clock = new ManualClock();
    const inflight = new Inflight(clock);
    let settle!: () => void;
    inflight.track(new Promise<void>((r) => (settle = r))); // a release still on its way keeps the drain waiting
    const why = new Error('shutting down');
    const draining = inflight.drain(0, why, 2000);
    await untilAsleep(clock);
    const cut: unknown[] = [];
    const end = inflight.begin((w) => cut.push(w));
    expect(cut).toEqual([why]);
    end();
    settle();
    expect(await draining).toBe(0);
  });

  it('waits for requests in flight up to the drain period, then cuts the rest (a ManualClock, no sleeping)', async () => {
    const clock = new ManualClock();
    const inflight = new Inflight(clock);
    const cut: unknown[] = [];
    const quick = inflight.begin(() => cut.push('quick'));
    // an aborted request ends as it unwinds
    const slow = inflight.begin((w) => (cut.push(w), slow()));
    let drained: number | undefined;
    const draining = inflight.drain(100, 'bye', 100).then((n) => (drained = n));
    await untilAsleep(clock);
    quick();
    await clock.advance(99);
    expect(cut).toEqual([]); // the slow one still has 1 ms
    expect(drained).toBeUndefined();
    await clock.advance(1);
    await draining;
    expect(drained).toBe(1);
    expect(cut).toEqual(['bye']);
  });

  it('a drain with nothing in flight and background work that never ends gives up after settleMs', async () => {
    const clock = new ManualClock();
    const inflight = new Inflight(clock);
    inflight.track(new Promise(() => undefined));
    let drained: number | undefined;
    const draining = inflight.drain(1000, 'bye', 500).then((n) => (drained = n));
    for (let t = 0; t < 480; t += 20) {
      await untilAsleep(clock);
      await clock.advance(20);
    }
    expect(drained).toBeUndefined();
    await untilAsleep(clock);
    await clock.advance(20);
    await draining;
    expect(drained).toBe(0);
  });
});
