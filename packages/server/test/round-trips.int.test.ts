/**
 * What one gateway request costs Redis: one script call each way (token admission + acquire, then
 * release + token settlement), counted with INFO commandstats on a redis-server of the test's own
 * (standalone only) so that no other test file's commands are counted.
 */
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { KeyPool, PoolKeys } from '@keypool/core';
import { spawnRedisServer, startFakeOpenAI, testTarget } from '@keypool/testkit';
import { LogSink, listenOn, post } from './helpers.js';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Calls per command name so far (INFO commandstats). */
async function commandCalls(redis: Redis): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const m of (await redis.info('commandstats')).matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out.set(m[1]!, Number(m[2]));
  return out;
}

describe.skipIf(testTarget() === 'cluster')('gateway round trips to Redis', () => {
  it('a request makes two script calls: admission with the acquire, settlement with the release', async () => {
    const server = await spawnRedisServer();
    cleanups.push(() => server.stop());
    const fake = await startFakeOpenAI({ keys: ['sk-test-rt-aaaaaaaaaaaaaaaaaaaa1111', 'sk-test-rt-bbbbbbbbbbbbbbbbbbbb2222'], models: ['gpt-4o-mini'], latency: 1 });
    cleanups.push(() => fake.stop());
    const logs = new LogSink();
    const pool = await KeyPool.connect({
      redis: server.url,
      config: { pool: 'rt', keys: ['sk-test-rt-aaaaaaaaaaaaaaaaaaaa1111', 'sk-test-rt-bbbbbbbbbbbbbbbbbbbb2222'].map((secret) => ({ secret, baseURL: fake.url, models: ['gpt-4o-mini'] })) },
      logger: logs.logger,
    });
    cleanups.push(() => pool.close());
    const url = await listenOn(pool, logs, cleanups);
    const { token, info } = await pool.tokens.create({ name: 'rt', rpm: 6000, budget: { usd: 10, period: 'total' } });
    const redis = new Redis(server.url);
    cleanups.push(async () => redis.disconnect());
    const keys = new PoolKeys('rt');
    const ask = (stream: boolean) =>
      post(url, '/v1/chat/completions', JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, stream }), { authorization: `Bearer ${token}`, 'content-type': 'application/json' });
    // everything released and settled (the release runs after the answer is out)
    const settled = async () => {
      for (let i = 0; i < 200 && ((await redis.zcard(keys.leases)) > 0 || (await redis.zcard(keys.tokRes)) > 0); i++) await new Promise((r) => setTimeout(r, 10));
    };
    expect((await ask(false)).status).toBe(200);
    await settled();

    const before = await commandCalls(redis);
    const n = 10;
    for (let i = 0; i < n; i++) expect((await ask(i % 2 === 1)).status).toBe(200);
    await settled();
    const after = await commandCalls(redis);
    const delta = (cmd: string) => (after.get(cmd) ?? 0) - (before.get(cmd) ?? 0);
    expect(delta('evalsha') + delta('eval') + delta('fcall')).toBe(2 * n);
    expect((await pool.tokens.get(info.id))!.requests).toBe(n + 1);
  });
});
