import { ManualClock } from '@keypool/core';
import { describe, expect, it } from 'vitest';
import { Chain, Inflight, type Link } from '../src/inflight.js';

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

  it('counts requests that begin and end in any order (an end called twice counts once), and a drain cuts exactly those left', async () => {
    const clock = new ManualClock();
    const inflight = new Inflight(clock);
    const cut: number[] = [];
    const ends = Array.from({ length: 50 }, (_, i) => inflight.begin(() => cut.push(i)));
    expect(inflight.size).toBe(50);
    // first, last, middle, every third: the list's head, tail and inner links
    const gone = new Set([0, 49, 25, ...Array.from({ length: 17 }, (_, k) => k * 3)]);
    for (const i of gone) ends[i]!();
    for (const i of gone) ends[i]!();
    expect(inflight.size).toBe(50 - gone.size);
    const left = ends.map((_, i) => i).filter((i) => !gone.has(i));
    const draining = inflight.drain(0, 'bye', 0);
    await untilAsleep(clock); // the drain period, on the clock
    await clock.advance(1);
    expect(await draining).toBe(left.length);
    expect(cut).toEqual(left); // in the order they began
    for (const i of left) ends[i]!();
    expect(inflight.size).toBe(0);
    // a new request after everything ended is counted again
    const end = inflight.begin(() => undefined);
    expect(inflight.size).toBe(1);
    end();
    expect(inflight.size).toBe(0);
  });

  it('a drain waits for background work tracked in any order, and forgets what settled', async () => {
    const clock = new ManualClock();
    const inflight = new Inflight(clock);
    const settles: (() => void)[] = [];
    for (let i = 0; i < 5; i++) inflight.track(new Promise<void>((r) => settles.push(r)));
    settles[2]!();
    settles[0]!();
    let drained: number | undefined;
    const draining = inflight.drain(0, 'bye', 1000).then((n) => (drained = n));
    await untilAsleep(clock);
    expect(drained).toBeUndefined(); // 1, 3 and 4 still run
    settles[4]!();
    settles[1]!();
    settles[3]!();
    await draining;
    expect(drained).toBe(0);
  });

  it("Chain: any order of adds and removes (twice too) leaves exactly the values not removed, in the order they were added", () => {
    // a seeded walk (Park-Miller: exact in doubles) against an array as the model: head, tail and
    // inner removals, removals again, the list emptied and filled again
    let seed = 12345;
    const rand = (n: number) => (seed = (seed * 48271) % 2147483647) % n;
    const chain = new Chain<number>();
    let model: { v: number; link: Link<number> }[] = [];
    const removed: Link<number>[] = [];
    const seen = { head: 0, tail: 0, inner: 0, again: 0, emptied: 0 };
    for (let step = 0, next = 0; step < 4000; step++) {
      const r = rand(20);
      if (r < 9 || model.length === 0) {
        model.push({ v: next, link: chain.add(next) });
        next++;
      } else if (r < 18) {
        const i = r === 9 ? 0 : r === 10 ? model.length - 1 : rand(model.length);
        seen[i === 0 ? 'head' : i === model.length - 1 ? 'tail' : 'inner']++;
        expect(chain.remove(model[i]!.link)).toBe(true);
        removed.push(model[i]!.link);
        model = model.filter((_, j) => j !== i);
        if (model.length === 0) seen.emptied++;
      } else if (removed.length > 0) {
        seen.again++;
        expect(chain.remove(removed[rand(removed.length)]!)).toBe(false); // again: nothing changes
      }
      expect(chain.size).toBe(model.length);
      expect(chain.values()).toEqual(model.map((m) => m.v));
    }
    // every kind of step happened, many times
    for (const [kind, n] of Object.entries(seen)) expect([kind, n > 10]).toEqual([kind, true]);
    // a removed link keeps nothing
    for (const l of removed) expect([l.value, l.prev, l.next]).toEqual([undefined, undefined, undefined]);
  });
});
