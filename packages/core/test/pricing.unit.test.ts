import { describe, expect, it } from 'vitest';
import { DEFAULT_PRICES, NANOS_PER_USD, PriceTable } from '../src/pricing.js';

describe('PriceTable.priceOf', () => {
  const t = new PriceTable();

  it('matches a model listed exactly', () => {
    expect(t.priceOf('gpt-4o')).toEqual({ input: 2.5, output: 10 });
    expect(t.priceOf('gpt-4o-mini')).toEqual({ input: 0.15, output: 0.6 });
    expect(t.priceOf('o3')).toEqual({ input: 2, output: 8 });
  });

  it('matches a dated snapshot by its listed prefix', () => {
    expect(t.priceOf('gpt-4o-2024-08-06')).toEqual(DEFAULT_PRICES['gpt-4o']);
    expect(t.priceOf('gpt-4.1-2025-04-14')).toEqual(DEFAULT_PRICES['gpt-4.1']);
  });

  it('uses the longest listed prefix, not the first one', () => {
    expect(t.priceOf('gpt-4o-mini-2024-07-18')).toEqual({ input: 0.15, output: 0.6 });
    expect(t.priceOf('gpt-4o-mini-2024')).not.toEqual(DEFAULT_PRICES['gpt-4o']);
    expect(t.priceOf('gpt-4.1-nano-2025-04-14')).toEqual(DEFAULT_PRICES['gpt-4.1-nano']);
    expect(t.priceOf('gpt-5-mini-2025-08-07')).toEqual(DEFAULT_PRICES['gpt-5-mini']);
    // asked in the opposite order too (the cache must not change the answer)
    const fresh = new PriceTable();
    expect(fresh.priceOf('gpt-4o-2024-08-06')).toEqual(DEFAULT_PRICES['gpt-4o']);
    expect(fresh.priceOf('gpt-4o-mini-2024')).toEqual(DEFAULT_PRICES['gpt-4o-mini']);
  });

  it('returns null for an unknown model, and does not match a model that is only a prefix of a listed name', () => {
    expect(t.priceOf('claude-3-opus')).toBeNull();
    expect(t.priceOf('')).toBeNull();
    expect(t.priceOf('gpt-4')).toBeNull(); // a prefix of gpt-4o, not the other way round
    expect(t.priceOf('GPT-4O')).toBeNull();
  });

  it('applies overrides over the defaults and adds new models', () => {
    const o = new PriceTable({ 'gpt-4o': { input: 1, output: 2 }, 'my-model': { input: 3, output: 4 } });
    expect(o.priceOf('gpt-4o')).toEqual({ input: 1, output: 2 });
    expect(o.priceOf('gpt-4o-2024-08-06')).toEqual({ input: 1, output: 2 });
    expect(o.priceOf('gpt-4o-mini')).toEqual(DEFAULT_PRICES['gpt-4o-mini']); // untouched
    expect(o.priceOf('my-model')).toEqual({ input: 3, output: 4 });
    expect(o.priceOf('my-model-v2')).toEqual({ input: 3, output: 4 });
    // an override of a longer name wins over a default shorter prefix
    const longer = new PriceTable({ 'gpt-4o-2024-08-06': { input: 9, output: 9 } });
    expect(longer.priceOf('gpt-4o-2024-08-06-preview')).toEqual({ input: 9, output: 9 });
    expect(longer.priceOf('gpt-4o-2024-05-13')).toEqual(DEFAULT_PRICES['gpt-4o']);
    // the defaults object itself is not modified by overrides
    expect(DEFAULT_PRICES['gpt-4o']).toEqual({ input: 2.5, output: 10 });
  });
});

describe('PriceTable.costNanos', () => {
  const t = new PriceTable();

  it('costs 1M input tokens of a $2.5/M model at 2.5e9 nano-dollars', () => {
    expect(NANOS_PER_USD).toBe(1e9);
    expect(t.costNanos('gpt-4o', 1_000_000, 0)).toBe(2.5e9);
    expect(t.costNanos('gpt-4o', 0, 1_000_000)).toBe(10e9);
    expect(t.costNanos('gpt-4o', 1_000_000, 1_000_000)).toBe(12.5e9);
  });

  it('prices input and output separately', () => {
    // 1000 x $2.5/M + 500 x $10/M = $0.0025 + $0.005 = 7.5e6 nanos
    expect(t.costNanos('gpt-4o', 1000, 500)).toBe(7_500_000);
    // 1 token of gpt-4o-mini: $0.15/M = 150 nanos in, $0.6/M = 600 nanos out
    expect(t.costNanos('gpt-4o-mini', 1, 0)).toBe(150);
    expect(t.costNanos('gpt-4o-mini', 0, 1)).toBe(600);
    expect(t.costNanos('gpt-4o-mini-2024-07-18', 2000, 100)).toBe(2000 * 150 + 100 * 600);
  });

  it('is 0 for an unknown model and for no tokens', () => {
    expect(t.costNanos('claude-3-opus', 1_000_000, 1_000_000)).toBe(0);
    expect(t.costNanos('gpt-4o', 0, 0)).toBe(0);
  });

  it('returns an integer, rounding a fractional nano-dollar up', () => {
    const o = new PriceTable({ tiny: { input: 0.0001, output: 0 } }); // 0.1 nano per token
    expect(o.costNanos('tiny', 1, 0)).toBe(1);
    expect(o.costNanos('tiny', 10, 0)).toBe(1);
    expect(o.costNanos('tiny', 11, 0)).toBe(2);
  });

  it('is exact when the true cost is a whole number of nano-dollars (no float noise rounded up)', () => {
    // 3 x $0.4/M = $1.2e-6 = exactly 1200 nano-dollars
    expect(t.costNanos('gpt-4.1-mini', 3, 0)).toBe(1200);
    // every default price has at most 3 decimals, so n tokens always cost a whole number of nanos
    for (const [model, p] of Object.entries(DEFAULT_PRICES)) {
      for (let n = 1; n <= 200; n++) {
        const inNanos = Math.round(p.input * 1000) * n;
        const outNanos = Math.round(p.output * 1000) * n;
        expect(t.costNanos(model, n, 0), `${model} ${n} in`).toBe(inNanos);
        expect(t.costNanos(model, 0, n), `${model} ${n} out`).toBe(outNanos);
      }
    }
  });
});

describe('PriceTable.costUsd', () => {
  it('is the nano-dollar cost in USD: what Redis charges, not a float of its own', () => {
    const t = new PriceTable();
    // 3 x 0.4 $/1M is 1200.0000000000002 nano-dollars in floats: charged as 1200
    expect(t.costNanos('gpt-4.1-nano', 0, 3)).toBe(1200);
    expect(t.costUsd('gpt-4.1-nano', 0, 3)).toBe(1200 / NANOS_PER_USD);
    expect(t.costUsd('gpt-4o-mini', 1000, 500)).toBe(t.costNanos('gpt-4o-mini', 1000, 500) / NANOS_PER_USD);
    expect(t.costUsd('unknown-model', 1000, 500)).toBe(0);
  });
});
