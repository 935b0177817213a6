import { describe, expect, it } from 'vitest';
import { Inflight } from '../src/inflight.js';

describe('Inflight', () => {
  it('a request that begins after the drain cut the others (its body was still arriving) is cut at once', async () => {
    const inflight = new Inflight();
    let settle!: () => void;
    inflight.track(new Promise<void>((r) => (settle = r))); // a release still on its way keeps the drain waiting
    const why = new Error('shutting down');
    const draining = inflight.drain(0, why, 2000);
    await new Promise((r) => setTimeout(r, 30));
    const cut: unknown[] = [];
    const end = inflight.begin((w) => cut.push(w));
    expect(cut).toEqual([why]);
    end();
    settle();
    expect(await draining).toBe(0);
  });

  it('waits for requests in flight up to the drain period, then cuts the rest', async () => {
    const inflight = new Inflight();
    const cut: unknown[] = [];
    const quick = inflight.begin(() => cut.push('quick'));
    inflight.begin((w) => cut.push(w));
    setTimeout(quick, 20);
    const t0 = Date.now();
    expect(await inflight.drain(100, 'bye', 100)).toBe(1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(95);
    expect(cut).toEqual(['bye']);
  });
});
