import { afterAll, describe, expect, it } from 'vitest';
import { KeyPool } from '@keypool/core';
import { connectTestRedis, startFakeOpenAI, uniqueName, type FakeOpenAI } from '@keypool/testkit';
import { LogSink } from '@keypool/testkit/log-sink';
import { probeKeys } from '../src/index.js';

/** Health probes through the official client against the fake upstream, on a real Redis. */
const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const f of cleanups.reverse()) await f().catch(() => undefined);
});

const S = (t: string) => `sk-probe-${t}-0123456789abcdefghij`;

// partitions 3: the same over a partitioned pool (its keys spread over three hash tags)
describe.each([1, 3])('health probes (GET /models with the key), partitions %i', (partitions) => {
  it('probes only keys that need it; a success heals, a failure keeps them out; secrets stay out of the log', async () => {
    const fake: FakeOpenAI = await startFakeOpenAI({ keys: ['healthy', 'open', 'revoked', 'fixed'].map((t) => ({ key: S(t), name: t })) });
    cleanups.push(() => fake.stop());
    const redis = connectTestRedis();
    cleanups.push(() => redis.quit());
    const sink = new LogSink(['secret', '*.secret']);
    const keys = ['healthy', 'open', 'revoked', 'fixed', 'wrongurl'].map((t, i) => ({
      secret: S(t),
      name: t,
      models: [`m${i}`],
      baseURL: t === 'wrongurl' ? `${fake.origin}/nope` : fake.url,
    }));
    const pool = await KeyPool.connect({ redis, config: { pool: uniqueName('probe'), partitions, breaker: { failures: 1, cooldownMs: 60_000 }, keys }, logger: sink.logger });
    cleanups.push(() => pool.close());
    const fail = async (model: string, status: number) => {
      const l = await pool.acquire({ model });
      if (l.ok) await l.release({ status });
    };
    await fail('m1', 500); // open
    await fail('m2', 401); // revoked, and still refused by the provider
    await fail('m3', 401); // revoked, but the provider takes it again
    await fail('m4', 500); // open, and its baseURL is wrong
    fake.setKey('revoked', { revoked: true });
    const before = Object.fromEntries(Object.entries(fake.counters()).map(([k, c]) => [k, c.requests]));

    const run = await probeKeys(pool, { timeoutMs: 2000, logger: sink.logger });
    const by = Object.fromEntries(run.results.map((r) => [r.keyId, r]));
    const hint = (name: string) => pool.knownKeys().find((k) => k.name === name)!.id;
    expect(run.probed).toBe(4);
    expect(by[hint('healthy')]).toBeUndefined();
    expect(by[hint('open')]).toMatchObject({ reason: 'open', status: 200, transition: 'closed' });
    expect(by[hint('revoked')]).toMatchObject({ reason: 'revoked', status: 401, transition: '' });
    expect(by[hint('fixed')]).toMatchObject({ reason: 'revoked', status: 200, transition: 'unrevoked' });
    expect(by[hint('wrongurl')]).toMatchObject({ reason: 'open', status: 404, transition: 'reopened' });
    // the healthy key got no call at all
    const after = fake.counters();
    expect(after.healthy!.requests).toBe(before.healthy);
    expect(after.open!.requests).toBe(before.open! + 1);
    const states = Object.fromEntries((await pool.status({ fresh: true })).keys.map((k) => [k.name, k.state]));
    expect(states).toEqual({ healthy: 'active', open: 'active', revoked: 'revoked', fixed: 'active', wrongurl: 'open' });
    expect((await pool.acquire({ model: 'm1' })).ok).toBe(true);
    expect((await pool.acquire({ model: 'm3' })).ok).toBe(true);
    for (const k of keys) expect(sink.text).not.toContain(k.secret);
  });
});
