/**
 * Tally: counter increments of the request path kept as plain numbers and handed to prom-client at
 * each read; a read sees every increment made before it, once.
 */
import client from 'prom-client';
import { describe, expect, it } from 'vitest';
import { Tally } from '../src/metrics.js';

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
