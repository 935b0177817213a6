/**
 * The pooled client end to end: the official `openai` package against the fake upstream (real
 * HTTP), a real Redis behind the pool.
 */
import { getEventListeners } from 'node:events';
import OpenAI from 'openai';
import { pino } from 'pino';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { connectTestRedis, startFakeOpenAI, uniqueName, type FakeOpenAI } from '@keypool/testkit';
import { KeyPool, PoolExhaustedError, keyIdOf, type KeySpecInput } from '@keypool/core';
import { PooledOpenAI } from '../src/index.js';

const A = 'sk-test-aaaaaaaaaaaaaaaaaaaaaaaa1111';
const B = 'sk-test-bbbbbbbbbbbbbbbbbbbbbbbb2222';
const redis = connectTestRedis();
const fakes: FakeOpenAI[] = [];
const pools: KeyPool[] = [];
afterEach(async () => {
  for (const p of pools.splice(0)) await p.close();
  for (const f of fakes.splice(0)) await f.stop();
});
afterAll(() => redis.disconnect());

async function setup(fakeKeys: Parameters<typeof startFakeOpenAI>[0] extends infer O ? O extends { keys?: infer K } ? K : never : never, poolKeys: Omit<KeySpecInput, 'baseURL'>[], extra: object = {}, clientOptions: object = {}) {
  const fake = await startFakeOpenAI({ keys: fakeKeys, models: ['gpt-4o', 'gpt-4o-mini', 'text-embedding-3-small'], latency: 5 });
  fakes.push(fake);
  const pool = await KeyPool.connect({
    redis,
    config: { pool: uniqueName('client'), breaker: { failures: 3, cooldownMs: 60_000 }, keys: poolKeys.map((k) => ({ ...k, baseURL: fake.url })), ...extra },
    logger: pino({ level: 'silent' }),
  });
  pools.push(pool);
  return { fake, pool, openai: new PooledOpenAI({ pool, backoff: { baseMs: 5, maxMs: 50 }, ...clientOptions }) };
}
const both = (extra: Partial<KeySpecInput> = {}) => [
  { secret: A, name: 'a', models: ['gpt-4o-mini', 'text-embedding-3-small', 'no-such-model'], ...extra },
  { secret: B, name: 'b', models: ['gpt-4o-mini', 'text-embedding-3-small', 'no-such-model'], ...extra },
];
const keyStatus = async (pool: KeyPool, secret: string) => (await pool.status({ fresh: true })).keys.find((k) => k.id === keyIdOf(secret, k.baseURL))!;
const ask = { model: 'gpt-4o-mini', messages: [{ role: 'user' as const, content: 'hello there' }], max_tokens: 8 };

describe('PooledOpenAI', () => {
  it('chat, embeddings and responses go through the pool; usage is reconciled and priced', async () => {
    const { fake, pool, openai } = await setup([{ key: A, name: 'a' }], [{ secret: A, name: 'a', models: ['gpt-4o-mini', 'text-embedding-3-small'], tpm: 600, tpmCounts: 'usage' }]);
    const reply = await openai.chat.completions.create(ask);
    expect(reply.choices[0].message.content.length).toBeGreaterThan(0);
    expect(reply.usage.completion_tokens).toBe(8);
    const emb = await openai.embeddings.create({ model: 'text-embedding-3-small', input: ['one', 'two'] });
    expect(emb.data).toHaveLength(2);
    const resp = await openai.responses.create({ model: 'gpt-4o-mini', input: 'hi', max_output_tokens: 5 });
    expect(resp.usage.output_tokens).toBe(5);
    const s = await keyStatus(pool, A);
    expect(s.inFlight).toBe(0);
    expect(s.reservedUsd).toBe(0);
    // real usage was charged: prompt and completion tokens the upstream counted, at gpt-4o-mini's price
    const c = fake.counters().a!;
    expect(c.served).toBe(3);
    expect(s.spendUsd).toBeGreaterThan(0);
    // the estimate was an upper bound and the unused part came back to the token bucket
    // (which refills at 10 tokens/s meanwhile)
    const used = c.promptTokens + c.completionTokens;
    expect(s.left!.tokens).toBeGreaterThanOrEqual(s.limits.tpmBurst - used);
    expect(s.left!.tokens).toBeLessThan(s.limits.tpmBurst - used + 30);
  });

  it('every lease says when its request left (Lease.sent), plain, streamed and failed over', async () => {
    const { fake, pool, openai } = await setup([{ key: A, name: 'a' }, { key: B, name: 'b' }], both());
    const release = vi.spyOn(pool, 'release');
    const t0 = Date.now();
    await openai.chat.completions.create(ask);
    for await (const _ of await openai.chat.completions.create({ ...ask, stream: true }));
    fake.setFault({ kind: 'error', status: 500, count: 1 });
    await openai.chat.completions.create(ask);
    const t1 = Date.now();
    expect(release.mock.calls.map(([, o]) => o.status)).toEqual([200, 200, 500, 200]);
    for (const [lease] of release.mock.calls) {
      expect(lease.sentAt).toBeGreaterThanOrEqual(t0);
      expect(lease.sentAt).toBeLessThanOrEqual(t1);
    }
  });

  it('fails over on 5xx to another key; the failing key feeds its breaker', async () => {
    const [ka, kb] = both();
    // the pool prefers a (weight), so a is tried first nearly every time
    const { fake, pool, openai } = await setup([{ key: A, name: 'a' }, { key: B, name: 'b' }], [{ ...ka!, weight: 20 }, kb!]);
    fake.setFault({ kind: 'error', status: 503, key: 'a', count: 100 });
    for (let i = 0; i < 10; i++) await openai.chat.completions.create(ask);
    expect(fake.counters().b!.served).toBe(10);
    expect((await keyStatus(pool, A)).state).toBe('open');
  });

  it('a plain 500 fails over like any 5xx: the call is served by the other key', async () => {
    const { fake, openai } = await setup([{ key: A, name: 'a' }, { key: B, name: 'b' }], both());
    // whichever key is tried first answers 500 once
    fake.setFault({ kind: 'error', status: 500, count: 1 });
    const reply = await openai.chat.completions.create(ask);
    expect(reply.choices[0].message.content.length).toBeGreaterThan(0);
    const { a, b } = fake.counters();
    expect([a!.status[500] ?? 0, b!.status[500] ?? 0].sort()).toEqual([0, 1]);
    expect([a!.served, b!.served].sort()).toEqual([0, 1]);
    expect(a!.served).toBe(b!.status[500] ?? 0);
  });

  it('a 429 cools the key and the call is served by another key', async () => {
    // the provider allows key a 1 request a minute; the pool does not know (learning off: it would
    // read the limit in a's first answer) and prefers a (weight)
    const [ka, kb] = both();
    const { fake, pool, openai } = await setup([{ key: A, name: 'a', rpm: 1 }, { key: B, name: 'b' }], [{ ...ka!, weight: 20 }, kb!], { limits: { learn: false } });
    for (let i = 0; i < 8; i++) await openai.chat.completions.create(ask);
    expect(fake.counters().a!.rate429).toBeGreaterThan(0);
    expect(fake.counters().a!.served + fake.counters().b!.served).toBe(8);
    expect((await keyStatus(pool, A)).state).toBe('cooling');
  });

  it('a 429 on every key: the call waits for the first key to cool down instead of failing', async () => {
    // the provider allows each key 1 request in any rolling second (its 429 says when there is room);
    // another application has just used both keys' second, and the pool does not know (no limits,
    // learning off): the call meets a 429 on both keys, then is served by the first to cool down
    const [ka, kb] = both();
    const { fake, openai } = await setup([{ key: A, name: 'a', rpm: 60, limiter: 'window-1s' }, { key: B, name: 'b', rpm: 60, limiter: 'window-1s' }], [ka!, kb!], { limits: { learn: false } });
    for (const key of [A, B]) {
      const r = await fetch(`${fake.url}/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify(ask) });
      expect(r.status).toBe(200);
    }
    const t0 = performance.now();
    expect((await openai.chat.completions.create(ask)).choices).toHaveLength(1);
    const c = fake.counters();
    expect([c.a!.rate429, c.b!.rate429]).toEqual([1, 1]);
    expect(c.a!.served + c.b!.served).toBe(3);
    // it waited for a key's second to pass
    expect(performance.now() - t0).toBeGreaterThan(500);
  });

  it('a hung upstream times out and the call is served by another key; the timeout counts against the key', async () => {
    const [ka, kb] = both();
    const { fake, pool, openai } = await setup([{ key: A, name: 'a' }, { key: B, name: 'b' }], [{ ...ka!, weight: 1000 }, kb!], {}, { attemptTimeoutMs: 200 });
    fake.setFault({ kind: 'hang', key: 'a' });
    const reply = await openai.chat.completions.create(ask);
    expect(reply.choices.length).toBe(1);
    expect(fake.counters().b!.served).toBe(1);
    const s = await keyStatus(pool, A);
    expect(s.inFlight).toBe(0);
    expect(s.breaker!.consecutiveFailures).toBe(1);
  });

  it('401 revokes the key and moves on', async () => {
    const [ka, kb] = both();
    const { fake, pool, openai } = await setup([{ key: A, name: 'a', revoked: true }, { key: B, name: 'b' }], [{ ...ka!, weight: 20 }, kb!]);
    for (let i = 0; i < 5; i++) await openai.chat.completions.create(ask);
    expect((await keyStatus(pool, A)).state).toBe('revoked');
    expect(fake.counters().b!.served).toBe(5);
  });

  it('client errors come back unchanged at once and do not hurt the key', async () => {
    const { fake, pool, openai } = await setup([{ key: A, name: 'a' }], [{ secret: A, name: 'a', models: ['gpt-4o-mini', 'no-such-model'] }]);
    const err = await openai.chat.completions.create({ ...ask, model: 'no-such-model' }).catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
    expect(fake.counters().a!.requests).toBe(1);
    const s = await keyStatus(pool, A);
    expect(s.breaker!.consecutiveFailures).toBe(0);
    expect(s.errorRate).toBe(0);
  });

  it('streams pass chunks through and reconcile the usage of the final chunk', async () => {
    const { fake, pool, openai } = await setup([{ key: A, name: 'a' }], [{ secret: A, name: 'a', models: ['gpt-4o-mini'], tpm: 600, tpmCounts: 'usage' }]);
    const stream = await openai.chat.completions.create({ ...ask, stream: true });
    let text = '';
    let usageChunks = 0;
    for await (const chunk of stream) {
      if (chunk.usage) usageChunks++;
      text += chunk.choices[0]?.delta?.content ?? '';
    }
    expect(text.length).toBeGreaterThan(0);
    expect(usageChunks).toBe(0); // the caller did not ask for usage: the pool's usage chunk is not passed on
    const s = await keyStatus(pool, A);
    expect(s.inFlight).toBe(0);
    const c = fake.counters().a!;
    const used = c.promptTokens + c.completionTokens;
    expect(s.left!.tokens).toBeGreaterThanOrEqual(s.limits.tpmBurst - used);
    expect(s.left!.tokens).toBeLessThan(s.limits.tpmBurst - used + 30);
  });

  it('a consumer that stops reading a stream early releases the lease without hurting the key', async () => {
    const { pool, openai } = await setup([{ key: A, name: 'a' }], [{ secret: A, name: 'a', models: ['gpt-4o-mini'] }]);
    const stream = await openai.chat.completions.create({ ...ask, stream: true, stream_options: { include_usage: true } });
    for await (const chunk of stream) {
      void chunk;
      break;
    }
    const s = await keyStatus(pool, A);
    expect(s.inFlight).toBe(0);
    expect(s.breaker!.consecutiveFailures).toBe(0);
    expect(s.reservedUsd).toBe(0);
  });

  it('a stream that breaks midway throws to the caller and counts as a failure of the key', async () => {
    const { fake, pool, openai } = await setup([{ key: A, name: 'a' }], [{ secret: A, name: 'a', models: ['gpt-4o-mini'] }]);
    fake.setFault({ kind: 'break-stream', key: 'a', afterChunks: 2 });
    const stream = await openai.chat.completions.create({ ...ask, stream: true });
    await expect((async () => {
      for await (const _ of stream) void _;
    })()).rejects.toThrow();
    const s = await keyStatus(pool, A);
    expect(s.inFlight).toBe(0);
    expect(s.breaker!.consecutiveFailures).toBe(1);
  });

  it('the caller aborting cancels the upstream call and releases the lease', async () => {
    const { fake, pool, openai } = await setup([{ key: A, name: 'a' }], [{ secret: A, name: 'a', models: ['gpt-4o-mini'] }]);
    fake.setFault({ kind: 'hang', key: 'a' });
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    await expect(openai.chat.completions.create(ask, { signal: ac.signal })).rejects.toThrow();
    const s = await keyStatus(pool, A);
    expect(s.inFlight).toBe(0);
    expect(s.breaker!.consecutiveFailures).toBe(0); // the caller's choice, not the key's fault
  });

  it('when every key is busy past the deadline, a typed error says when to retry', async () => {
    const { pool, openai } = await setup([{ key: A, name: 'a' }], [{ secret: A, name: 'a', models: ['gpt-4o-mini'], rpm: 60, rpmBurst: 1 }]);
    await openai.chat.completions.create(ask);
    const t0 = Date.now();
    const err = await openai.chat.completions.create(ask, { timeout: 200 }).catch((e) => e);
    expect(err).toBeInstanceOf(PoolExhaustedError);
    expect(err.reason).toBe('rate_limited');
    expect(err.retryAfterMs).toBeGreaterThan(500);
    expect(Date.now() - t0).toBeLessThan(400);
    expect((await keyStatus(pool, A)).inFlight).toBe(0);
  });

  it('routes: critical traffic gets the strongest model, the rest the cheapest, with fallback; spend per model and route', async () => {
    const routes = { smart: { models: ['gpt-4o', 'gpt-4o-mini'] } };
    const { fake, pool, openai } = await setup(
      [{ key: A, name: 'strong' }, { key: B, name: 'cheap' }],
      [
        { secret: A, name: 'strong', models: ['gpt-4o'] },
        { secret: B, name: 'cheap', models: ['gpt-4o-mini'], rpm: 60, rpmBurst: 2 },
      ],
      {},
      { routes },
    );
    const viaRoute = { ...ask, model: 'smart' };
    const critical = await openai.chat.completions.create(viaRoute, { priority: 'critical' });
    expect(critical.model).toBe('gpt-4o');
    const normal = await openai.chat.completions.create(viaRoute);
    expect(normal.model).toBe('gpt-4o-mini');
    await openai.chat.completions.create(viaRoute); // the cheap key's burst is now spent
    // normal falls back to the dearer model rather than wait; low does the same while it can
    expect((await openai.chat.completions.create(viaRoute)).model).toBe('gpt-4o');
    expect((await openai.chat.completions.create(viaRoute, { priority: 'low' })).model).toBe('gpt-4o');
    expect(fake.counters().strong!.served).toBe(3);
    expect(fake.counters().cheap!.served).toBe(2);
    const { spend } = await pool.status({ fresh: true });
    expect(spend!.byRoute.smart!.requests).toBe(5);
    expect(spend!.byModel['gpt-4o']!.requests).toBe(3);
    expect(spend!.byModel['gpt-4o-mini']!.requests).toBe(2);
    expect(spend!.byRoute.smart!.usd).toBeCloseTo(spend!.byModel['gpt-4o']!.usd + spend!.byModel['gpt-4o-mini']!.usd, 12);
    expect(spend!.byModel['gpt-4o']!.usd).toBeGreaterThan(spend!.byModel['gpt-4o-mini']!.usd);
    // the client's view is the same fleet-wide numbers, plus per key
    const mine = await openai.spend();
    expect(mine.byRoute).toEqual(spend!.byRoute);
    expect(mine.byKey[keyIdOf(A, fake.url)]!.usd).toBeCloseTo(spend!.byModel['gpt-4o']!.usd, 12);
    expect(mine.byKey[keyIdOf(B, fake.url)]!.name).toBe('cheap');
  });

  it('low priority yields at once when no model of its route has a key free', async () => {
    const { openai } = await setup([{ key: B, name: 'cheap' }], [{ secret: B, name: 'cheap', models: ['gpt-4o-mini'], rpm: 60, rpmBurst: 1 }], {}, { routes: { r: { models: ['gpt-4o-mini'] } } });
    await openai.chat.completions.create({ ...ask, model: 'r' });
    const t0 = Date.now();
    const err = await openai.chat.completions.create({ ...ask, model: 'r' }, { priority: 'low', timeout: 5000 }).catch((e) => e);
    expect(err).toBeInstanceOf(PoolExhaustedError);
    expect(Date.now() - t0).toBeLessThan(200);
    // normal priority waits for the key instead
    expect((await openai.chat.completions.create({ ...ask, model: 'r' }, { timeout: 3000 })).model).toBe('gpt-4o-mini');
  });

  it('a 5xx on the only key comes back as the upstream error once every key was tried', async () => {
    const { fake, openai } = await setup([{ key: A, name: 'a' }], [{ secret: A, name: 'a', models: ['gpt-4o-mini'] }]);
    fake.setFault({ kind: 'error', status: 502, key: 'a', count: 10 });
    const err = await openai.chat.completions.create(ask).catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect(err.status).toBe(502);
  });

  it('the call deadline bounds the upstream call too, and the error is the SDK timeout error', async () => {
    const { pool, openai } = await setup([{ key: A, name: 'a', latency: 1500 }], [{ secret: A, name: 'a', models: ['gpt-4o-mini'] }]);
    const t0 = Date.now();
    const err = await openai.chat.completions.create(ask, { timeout: 300 }).catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.APIConnectionTimeoutError);
    expect(Date.now() - t0).toBeLessThan(800);
    expect((await keyStatus(pool, A)).inFlight).toBe(0);
  });

  it('an already aborted signal stops a stream before any request; calls leave no listener on a long-lived signal', async () => {
    const { fake, openai } = await setup([{ key: A, name: 'a' }], [{ secret: A, name: 'a', models: ['gpt-4o-mini'] }]);
    const gone = new AbortController();
    gone.abort();
    await expect(openai.chat.completions.create({ ...ask, stream: true }, { signal: gone.signal })).rejects.toThrow();
    expect(fake.counters().a?.requests ?? 0).toBe(0);
    const long = new AbortController();
    for (let i = 0; i < 10; i++) {
      await openai.chat.completions.create(ask, { signal: long.signal });
      for await (const c of await openai.chat.completions.create({ ...ask, stream: true }, { signal: long.signal })) void c;
    }
    expect(getEventListeners(long.signal, 'abort')).toHaveLength(0);
  });

  it('a stream nobody reads gives its lease back after the idle timeout', async () => {
    const { pool, openai } = await setup([{ key: A, name: 'a' }], [{ secret: A, name: 'a', models: ['gpt-4o-mini'] }], {}, { attemptTimeoutMs: 200 });
    const stream = await openai.chat.completions.create({ ...ask, stream: true });
    expect((await keyStatus(pool, A)).inFlight).toBe(1);
    await new Promise((r) => setTimeout(r, 400));
    const s = await keyStatus(pool, A);
    expect(s.inFlight).toBe(0);
    expect(s.breaker!.consecutiveFailures).toBe(0); // the reader's doing, not the key's
    void stream;
  });

  it('a route skips a model no key serves', async () => {
    const { openai } = await setup([{ key: A, name: 'a' }], [{ secret: A, name: 'a', models: ['gpt-4o'] }], {}, { routes: { r: { models: ['gpt-4o', 'gpt-4o-mini'] } } });
    expect((await openai.chat.completions.create({ ...ask, model: 'r' })).model).toBe('gpt-4o');
  });

  it("a provider's 'request too large' 429 is not retried on every key and does not cool the key", async () => {
    const [ka, kb] = both();
    const { fake, pool, openai } = await setup([{ key: A, name: 'a', tpm: 100 }, { key: B, name: 'b', tpm: 100 }], [ka!, kb!]);
    const err = await openai.chat.completions.create({ ...ask, max_tokens: 500 }).catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    expect((fake.counters().a?.requests ?? 0) + (fake.counters().b?.requests ?? 0)).toBe(1);
    expect((await pool.status({ fresh: true })).keys.every((k) => k.state === 'active')).toBe(true);
  });
});

