/**
 * Tally: counter increments of the request path kept as plain numbers and handed to prom-client at
 * each read; a read sees every increment made before it, once. boundObserver: a histogram child
 * that adds in place and reads exactly as prom-client's own observe would.
 */
import client from 'prom-client';
import { describe, expect, it } from 'vitest';
import { Tally, boundObserver } from '../src/metrics.js';

describe('Tally', () => {
  it('hands its counts to the counter at each read, by series, and counts nothing twice', async () => {
    const registry = new client.Registry();
    const tally = new Tally(['key_id', 'model', 'kind'] as const);
    const counter: client.Counter<'key_id' | 'model' | 'kind'> = new client.Counter({ name: 't_total', help: 't', labelNames: ['key_id', 'model', 'kind'], registers: [registry], collect: () => tally.flush(counter) });
    tally.inc(5, 'k1', 'm', 'prompt');
    tally.inc(2, 'k1', 'm', 'prompt');
    tally.inc(1, 'k2', 'm', 'completion');
    const values = async () => Object.fromEntries((await counter.get()).values.map((v) => [`${v.labels.key_id}/${v.labels.kind}`, v.value]));
    expect(await values()).toEqual({ 'k1/prompt': 7, 'k2/completion': 1 });
    // read again with nothing new: the same totals (not counted twice)
    expect(await values()).toEqual({ 'k1/prompt': 7, 'k2/completion': 1 });
    tally.inc(3, 'k2', 'm', 'completion');
    expect(await registry.metrics()).toContain('t_total{key_id="k2",model="m",kind="completion"} 4');
  });

  it('keeps label values apart that would run together', async () => {
    const tally = new Tally(['a', 'b'] as const);
    const counter: client.Counter<'a' | 'b'> = new client.Counter({ name: 'u_total', help: 'u', labelNames: ['a', 'b'], registers: [], collect: () => tally.flush(counter) });
    tally.inc(1, 'x', 'yz');
    tally.inc(1, 'xy', 'z');
    expect((await counter.get()).values.map((v) => [v.labels.a, v.labels.b, v.value])).toEqual([
      ['x', 'yz', 1],
      ['xy', 'z', 1],
    ]);
  });
});

describe('boundObserver', () => {
  const BUCKETS = [0.001, 0.01, 0.1, 1];
  const make = (registry: client.Registry) => new client.Histogram({ name: 'h_seconds', help: 'h', labelNames: ['endpoint'], buckets: BUCKETS, registers: [registry] });

  it("reads exactly as prom-client's observe, across series, values past the last bucket and a reset", async () => {
    const plainRegistry = new client.Registry();
    const fastRegistry = new client.Registry();
    const plain = make(plainRegistry);
    const fast = make(fastRegistry);
    const a = boundObserver(fast, { endpoint: 'chat' });
    const b = boundObserver(fast, { endpoint: 'embeddings' });
    const values = [0.0004, 0.001, 0.0011, 0.05, 0.1, 0.7, 3, 0, 0.01, 250];
    const feed = () => {
      values.forEach((v, i) => {
        const endpoint = i % 3 === 0 ? 'embeddings' : 'chat';
        plain.observe({ endpoint }, v);
        (endpoint === 'chat' ? a : b).observe(v);
      });
    };
    feed();
    const first = await plainRegistry.metrics();
    expect(first).toContain('h_seconds_bucket{le="0.01",endpoint="chat"}');
    expect(await fastRegistry.metrics()).toBe(first);
    // a reset (prom-client replaces its series): the bound children start over, as plain ones do
    plain.reset();
    fast.reset();
    feed();
    feed();
    expect(await fastRegistry.metrics()).toBe(await plainRegistry.metrics());
    expect(await fastRegistry.metrics()).toContain('h_seconds_count{endpoint="chat"} 12');
  });

  it('drops a value that is not a finite number (prom-client would throw on the request path)', async () => {
    const registry = new client.Registry();
    const h = make(registry);
    const o = boundObserver(h, { endpoint: 'chat' });
    o.observe(0.5);
    o.observe(Number.NaN);
    o.observe(Number.POSITIVE_INFINITY);
    const text = await registry.metrics();
    expect(text).toContain('h_seconds_count{endpoint="chat"} 1');
    expect(text).toContain('h_seconds_sum{endpoint="chat"} 0.5');
  });
});
