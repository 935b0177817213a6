/**
 * Prices in US dollars per million tokens, input and output. Defaults are list prices of common
 * models (late 2025); set `prices` in the config to override or add models. A model matches the
 * longest listed name that is a prefix of it (`gpt-4o-2024-08-06` is priced as `gpt-4o`).
 */
export interface ModelPrice {
  /** USD per million input (prompt) tokens. */
  input: number;
  /** USD per million output (completion) tokens. */
  output: number;
}

export const DEFAULT_PRICES: Readonly<Record<string, ModelPrice>> = {
  'gpt-4o': { input: 2.5, output: 10 },
  'gpt-4o-mini': { input: 0.15, output: 0.6 },
  'gpt-4.1': { input: 2, output: 8 },
  'gpt-4.1-mini': { input: 0.4, output: 1.6 },
  'gpt-4.1-nano': { input: 0.1, output: 0.4 },
  'gpt-5': { input: 1.25, output: 10 },
  'gpt-5-mini': { input: 0.25, output: 2 },
  'gpt-5-nano': { input: 0.05, output: 0.4 },
  o3: { input: 2, output: 8 },
  'o4-mini': { input: 1.1, output: 4.4 },
  'gpt-3.5-turbo': { input: 0.5, output: 1.5 },
  'text-embedding-3-small': { input: 0.02, output: 0 },
  'text-embedding-3-large': { input: 0.13, output: 0 },
  'deepseek-chat': { input: 0.27, output: 1.1 },
  'deepseek-reasoner': { input: 0.55, output: 2.19 },
  'llama-3.1-8b-instant': { input: 0.05, output: 0.08 },
  'llama-3.3-70b-versatile': { input: 0.59, output: 0.79 },
};

/** A nano-dollar is 1e-9 USD: spend is counted in integers so that sums in Redis stay exact. */
export const NANOS_PER_USD = 1e9;

export class PriceTable {
  private readonly prices: Map<string, ModelPrice>;
  private readonly names: string[];
  private readonly cache = new Map<string, ModelPrice | null>();

  constructor(overrides: Record<string, ModelPrice> = {}) {
    this.prices = new Map(Object.entries({ ...DEFAULT_PRICES, ...overrides }));
    this.names = [...this.prices.keys()].sort((a, b) => b.length - a.length);
  }

  /** The price of a model, or null when neither it nor a prefix of it is listed. */
  priceOf(model: string): ModelPrice | null {
    let p = this.cache.get(model);
    if (p === undefined) {
      p = this.prices.get(model) ?? null;
      if (!p) {
        const name = this.names.find((n) => model.startsWith(n));
        p = name ? this.prices.get(name)! : null;
      }
      this.cache.set(model, p);
    }
    return p;
  }

  /** Cost in nano-dollars of `input` prompt tokens and `output` completion tokens (0 if unpriced). */
  costNanos(model: string, input: number, output: number): number {
    const p = this.priceOf(model);
    if (!p) return 0;
    // $/1M tokens x 1e9 nano/$ / 1e6 tokens = 1000 nano-dollars per token per $/1M
    // round up fractions of a nano-dollar, but not float noise (3 x 0.4 x 1000 = 1200.0000000000002)
    return Math.max(0, Math.ceil(input * p.input * 1000 + output * p.output * 1000 - 1e-6));
  }

  /** The same cost in USD (whole nano-dollars, as Redis counts it): the one rule every cost shown or charged follows. */
  costUsd(model: string, input: number, output: number): number {
    return this.costNanos(model, input, output) / NANOS_PER_USD;
  }
}
