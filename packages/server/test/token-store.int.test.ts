/**
 * A lost token store is loud and can be survived (issue 13, item 4): when Redis restarts empty or
 * is flushed, the gateway logs it at error level once, /status says `tokens.store: 'lost'`, a
 * counter goes up; tokens declared in the config by their sha256 are registered again, so their
 * callers never notice. Standalone only: the tests run their own redis-server to kill and flush.
 */
import { createHash, randomBytes } from 'node:crypto';
import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { spawnRedisServer, startFakeOpenAI, testTarget, type SpawnedRedis } from '@keypool/testkit';
import { KeyPool } from '@keypool/core';
import { Redis } from 'ioredis';
import { LogSink, listenOn } from './helpers.js';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f().catch(() => undefined);
});

const KEY = 'sk-test-tokstore-aaaaaaaaaaaaaaaaaa01';
const ask = { model: 'gpt-4o-mini', messages: [{ role: 'user' as const, content: 'hi' }], max_tokens: 4 };

/** A gateway in this process on its own redis-server, with one declared token. */
async function setup(server: SpawnedRedis) {
  const fake = await startFakeOpenAI({ keys: [{ key: KEY, name: 'a' }], latency: 2 });
  cleanups.push(() => fake.stop());
  const declared = `kpt_${randomBytes(32).toString('base64url')}`;
  const sha256 = createHash('sha256').update(declared).digest('hex');
  const logs = new LogSink();
  const pool = await KeyPool.connect({
    redis: server.url,
    config: { pool: 'tokstore', keys: [{ secret: KEY, name: 'a', models: ['gpt-4o-mini'], baseURL: fake.url }], tokens: [{ sha256, name: 'declared', rpm: 600 }], redisDown: { timeoutMs: 300 } },
    logger: logs.logger,
  });
  cleanups.push(() => pool.close());
  const url = await listenOn(pool, logs, cleanups);
  const { token: made } = await pool.tokens.create({ name: 'made' });
  const sdk = (apiKey: string) => new OpenAI({ apiKey, baseURL: `${url}/v1`, maxRetries: 0 });
  const tokens = async () => ((await (await fetch(`${url}/status`)).json()) as { tokens: { store: string; lostAt: string | null; lostCount: number; declared: number } }).tokens;
  const lostMetric = async () => /keypool_token_store_lost_total (\d+)/.exec(await (await fetch(`${url}/metrics`)).text())?.[1];
  const errorLines = () => logs.lines.filter((l) => l.includes('gateway tokens lost') && JSON.parse(l).level === 50);
  return { url, pool, logs, declared, made, sdk, tokens, lostMetric, errorLines, KEY };
}

describe.skipIf(testTarget() === 'cluster')('gateway tokens when Redis loses them', () => {
  it('Redis restarts empty: one error line, /status and the metric say lost, the declared token works again, the made one is 401', async () => {
    const server = await spawnRedisServer();
    cleanups.push(() => server.stop());
    const g = await setup(server);
    await g.sdk(g.declared).chat.completions.create(ask);
    await g.sdk(g.made).chat.completions.create(ask);
    expect(await g.tokens()).toEqual({ store: 'ok', lostAt: null, lostCount: 0, declared: 1 });
    expect(await g.lostMetric()).toBe('0');

    server.kill9();
    const again = await spawnRedisServer({ port: server.port });
    cleanups.push(() => again.stop());
    await expect.poll(async () => (await g.tokens().catch(() => null))?.store, { timeout: 10_000, interval: 100 }).toBe('lost');
    const st = await g.tokens();
    expect(st.lostCount).toBe(1);
    expect(Date.parse(st.lostAt!)).toBeGreaterThan(Date.now() - 30_000);
    expect(await g.lostMetric()).toBe('1');
    expect(g.errorLines()).toHaveLength(1);

    // the declared token was registered again: its caller never notices
    await g.sdk(g.declared).chat.completions.create(ask);
    const err = (await g.sdk(g.made).chat.completions.create(ask).catch((e: unknown) => e)) as { status?: number; code?: string };
    expect(err).toMatchObject({ status: 401, code: 'invalid_api_key' });
    // more unknown tokens are no new loss
    await g.sdk(g.made).chat.completions.create(ask).catch(() => undefined);
    expect(g.errorLines()).toHaveLength(1);
    expect(g.logs.text).not.toContain(g.declared);
    g.logs.assertNoSecrets([g.KEY, g.declared, g.made]);
  });

  it('a flush under a live connection is found at the next unknown token; a token made since clears the banner', async () => {
    const server = await spawnRedisServer();
    cleanups.push(() => server.stop());
    const g = await setup(server);
    await g.sdk(g.made).chat.completions.create(ask);
    const admin = new Redis(server.url);
    cleanups.push(async () => admin.disconnect());
    await admin.flushall();
    const err = (await g.sdk(g.made).chat.completions.create(ask).catch((e: unknown) => e)) as { status?: number };
    expect(err.status).toBe(401);
    expect((await g.tokens()).store).toBe('lost');
    expect(g.errorLines()).toHaveLength(1);
    // the keys went with the flush: they are registered again in the background
    await expect.poll(() => g.sdk(g.declared).chat.completions.create(ask).then(() => 'ok', (e: { status?: number }) => String(e.status)), { timeout: 5000 }).toBe('ok');
    const { token } = await g.pool.tokens.create({ name: 'after' });
    expect((await g.tokens()).store).toBe('ok');
    expect((await g.tokens()).lostCount).toBe(1);
    await g.sdk(token).chat.completions.create(ask);
  });
});
