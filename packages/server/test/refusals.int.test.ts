/**
 * A request refused for any reason costs the keys nothing; a request that reached a provider
 * counts against its token. The refused token's admission runs beside the first acquire (the
 * token was seen in the last minute), so a key was leased when the refusal came.
 */
import { describe, expect, it } from 'vitest';
import { keyIdOf } from '@keypool/core';
import { MODELS, post, twoKeyGateways, type TestGateway } from './helpers.js';

const A = 'sk-test-aaaaaaaaaaaaaaaaaaaaaaaa5555';
const B = 'sk-test-bbbbbbbbbbbbbbbbbbbbbbbb6666';
const gw = twoKeyGateways(A, B);
const ask = { model: 'gpt-4o', messages: [{ role: 'user' as const, content: 'hello there' }], max_tokens: 8 };
const chat = (g: TestGateway, token: string, body: object) => post(g.url, '/v1/chat/completions', JSON.stringify(body), { authorization: `Bearer ${token}` });

describe('refusals cost nothing', () => {
  it('tokens refused beside the acquire (rpm, budget) with max_tokens 400000: the key spend, buckets and model spend are unchanged', async () => {
    // one key, $5 a day; its request bucket refills 1 per 10 s, so its level is exact in this test
    const g = await gw({ keys: [{ secret: A, name: 'a', models: MODELS, rpm: 6, rpmBurst: 50, budget: { usd: 5, period: 'day' } }] });
    const { token: slow } = await g.pool.tokens.create({ name: 'rpm-1', rpm: 1 });
    const { token: poor } = await g.pool.tokens.create({ name: 'poor', budget: { usd: 0.01, period: 'total' } });
    // each token is admitted once (so the gateway knows it and runs its admission beside the acquire)
    for (const t of [slow, poor]) expect((await chat(g, t, ask)).status).toBe(200);
    await expect.poll(async () => (await g.pool.status()).leasesInFlight).toBe(0);
    const before = await g.pool.status();
    const keyBefore = before.keys[0]!;
    expect(keyBefore.spendUsd).toBeGreaterThan(0);

    // the poor token spends $0.009 of its $0.01 elsewhere: a $0.005 request fits its budget, not what is left
    const spent = await g.pool.tokens.admit(poor, 'gpt-4o', 0.009);
    if (!spent.ok) throw new Error('the poor token should be admitted');
    await g.pool.tokens.settle(spent.id, spent.reservation, 0.009);
    const huge = { ...ask, max_tokens: 400_000 };
    const dear = { ...ask, max_tokens: 500 };
    for (let i = 0; i < 6; i++) {
      const r = await chat(g, slow, huge);
      expect(r.status).toBe(429);
      expect(r.json.error.code).toBe('token_rate_limited');
      const p = await chat(g, poor, dear);
      expect(p.status).toBe(429);
      expect(p.json.error.code).toBe('token_budget_exhausted');
      // more than the token's whole budget: refused for good (400, no Retry-After), and free too
      const q = await chat(g, poor, huge);
      expect(q.status).toBe(400);
      expect(q.json.error.code).toBe('request_too_large');
    }
    const after = await g.pool.status();
    const keyAfter = after.keys[0]!;
    expect(keyAfter.state).toBe('active');
    expect(keyAfter.inFlight).toBe(0);
    expect(keyAfter.spendUsd).toBe(keyBefore.spendUsd);
    expect(keyAfter.reservedUsd).toBe(0);
    expect(keyAfter.left).toEqual(keyBefore.left);
    expect(after.spend).toEqual(before.spend);
    expect(after.leasesInFlight).toBe(0);
    expect(Object.values(g.fake.counters()).reduce((n, c) => n + c.requests, 0)).toBe(2);
  });

  it("a token's request counts once a provider was called, even when the call failed (rpm 1 holds for failing calls)", async () => {
    // a: fails once with 500; b: its only request in the bucket is taken, so after a fails no key is free
    const g = await gw({
      keys: [
        { secret: A, name: 'a', models: MODELS },
        { secret: B, name: 'b', models: MODELS, rpm: 6, rpmBurst: 1 },
      ],
    });
    const drain = await g.pool.acquire({ model: 'gpt-4o', exclude: [keyIdOf(A, g.fake.url)] });
    if (!drain.ok) throw new Error('b should be free');
    await drain.release({ status: 200, usage: { promptTokens: 1, completionTokens: 1 } });
    g.fake.setFault({ kind: 'error', status: 500, key: 'a', count: 1 });
    const { token } = await g.pool.tokens.create({ name: 'rpm-1', rpm: 1 });

    const first = await chat(g, token, ask);
    expect(first.status).toBe(429);
    expect(first.json.error.code).toBe('pool_exhausted');
    expect(g.fake.counters().a!.status['500']).toBe(1);
    await expect.poll(async () => (await g.pool.tokens.list()).find((t) => t.name === 'rpm-1')?.requests).toBe(1);
    // the provider was called: the token's one request a minute is spent
    const second = await chat(g, token, ask);
    expect(second.status).toBe(429);
    expect(second.json.error.code).toBe('token_rate_limited');
  });
});
