/**
 * Redis going away under the gateway: with the fail-closed policy callers get a clear 503 at once
 * (never a hang, never a request sent upstream without the pool's say), /readyz says not ready,
 * /healthz still answers, metrics count it; when Redis is back, traffic flows again.
 * Standalone only: the test runs its own redis-server so it can kill it.
 */
import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { spawnRedisServer, startFakeOpenAI, testTarget, type FakeOpenAI, type SpawnedRedis } from '@keypool/testkit';
import { KeyPool } from '@keypool/core';
import { LogSink, listenOn } from './helpers.js';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f().catch(() => undefined);
});

describe.skipIf(testTarget() === 'cluster')('gateway when Redis goes away', () => {
  it('fail-closed: 503 in the OpenAI shape at once, /readyz 503, /healthz 200; served again once Redis is back', async () => {
    const server: SpawnedRedis = await spawnRedisServer();
    cleanups.push(() => server.stop());
    const KEY = 'sk-test-down-aaaaaaaaaaaaaaaaaaaaaa01';
    const fake: FakeOpenAI = await startFakeOpenAI({ keys: [{ key: KEY, name: 'a' }], latency: 2 });
    cleanups.push(() => fake.stop());
    const logs = new LogSink();
    const pool = await KeyPool.connect({ redis: server.url, config: { pool: 'down', keys: [{ secret: KEY, name: 'a', models: ['gpt-4o-mini'], baseURL: fake.url }], redisDown: { timeoutMs: 300 } }, logger: logs.logger });
    cleanups.push(() => pool.close());
    const url = await listenOn(pool, logs, cleanups);
    const { token } = await pool.tokens.create({ name: 'down' });
    const openai = new OpenAI({ apiKey: token, baseURL: `${url}/v1`, maxRetries: 0 });
    const ask = { model: 'gpt-4o-mini', messages: [{ role: 'user' as const, content: 'hi' }], max_tokens: 4 };
    await openai.chat.completions.create(ask);

    server.kill9();
    const t0 = Date.now();
    const err = (await openai.chat.completions.create(ask).catch((e: unknown) => e)) as InstanceType<typeof OpenAI.APIError>;
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(err.status).toBe(503);
    expect(err.code).toBe('pool_unavailable');
    expect(err.headers?.get('retry-after')).toBe('1');
    expect((await fetch(`${url}/readyz`)).status).toBe(503);
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toMatch(/keypool_redis_up 0/);
    // each request refused for want of Redis is a Redis error, not only the first one that noticed
    await openai.chat.completions.create(ask).catch(() => undefined);
    const after = await (await fetch(`${url}/metrics`)).text();
    expect(after).toMatch(/keypool_redis_errors_total\{operation="proxy"\} 2/);
    expect(after).toMatch(/keypool_gateway_requests_total\{endpoint="chat.completions",route="",model="gpt-4o-mini",status="503"\} 2/);
    const status = (await (await fetch(`${url}/status`)).json()) as { redis: { ok: boolean } };
    expect(status.redis.ok).toBe(false);
    expect(fake.counters().a!.requests).toBe(1);

    // same port, data gone (no persistence): the pool registers its keys again; the token is gone too
    const again = await spawnRedisServer({ port: server.port });
    cleanups.push(() => again.stop());
    await expect.poll(async () => (await fetch(`${url}/readyz`)).status, { timeout: 10_000, interval: 200 }).toBe(200);
    const lost = (await openai.chat.completions.create(ask).catch((e: unknown) => e)) as { status?: number };
    expect(lost.status).toBe(401);
    const { token: fresh } = await pool.tokens.create({ name: 'after' });
    await new OpenAI({ apiKey: fresh, baseURL: `${url}/v1`, maxRetries: 0 }).chat.completions.create(ask);
    expect(fake.counters().a!.served).toBe(2);
    logs.assertNoSecrets([KEY]);
  });
});
