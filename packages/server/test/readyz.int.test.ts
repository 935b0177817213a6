/**
 * /readyz is O(1) whatever the pool size (a readiness probe per pod every few seconds): Redis
 * answers a PING and this process holds keys to lease. It never reads the pool status.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { spawnRedisServer, testTarget, uniqueName } from '@keypool/testkit';
import { KeyPool } from '@keypool/core';
import { LogSink, listenOn, testRedis } from './helpers.js';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f().catch(() => undefined);
});

async function gatewayOf(redis: Parameters<typeof KeyPool.connect>[0]['redis'], keys: { secret: string; models: string[] }[]) {
  const logs = new LogSink();
  const pool = await KeyPool.connect({ redis, config: { pool: uniqueName('ready'), keys: keys.map((k) => ({ ...k, baseURL: 'http://127.0.0.1:9/v1' })), redisDown: { timeoutMs: 300 } }, logger: logs.logger });
  cleanups.push(() => pool.close());
  const status = vi.spyOn(pool, 'status');
  const url = await listenOn(pool, logs, cleanups);
  const readyz = async () => {
    const r = await fetch(`${url}/readyz`);
    return { code: r.status, body: (await r.json()) as { status: string; keys?: number; redis?: { ok: boolean } } };
  };
  return { pool, status, readyz };
}

describe('/readyz', () => {
  it('503 no_keys while this process holds no key, 200 with the number it holds; never the pool status', async () => {
    const none = await gatewayOf(testRedis, []);
    expect(await none.readyz()).toEqual({ code: 503, body: { status: 'no_keys', keys: 0, redis: { ok: true, policy: 'fail-closed' } } });

    const two = await gatewayOf(testRedis, [
      { secret: 'sk-test-ready-aaaaaaaaaaaaaaaaaaaaaaa1', models: ['m'] },
      { secret: 'sk-test-ready-aaaaaaaaaaaaaaaaaaaaaaa2', models: ['m'] },
    ]);
    expect(await two.readyz()).toEqual({ code: 200, body: { status: 'ready', keys: 2, redis: { ok: true, policy: 'fail-closed' } } });
    // a key added at run time counts at once
    await none.pool.addKey({ secret: 'sk-test-ready-aaaaaaaaaaaaaaaaaaaaaaa3', models: ['m'], baseURL: 'http://127.0.0.1:9/v1' });
    expect((await none.readyz()).code).toBe(200);
    expect(none.status).not.toHaveBeenCalled();
    expect(two.status).not.toHaveBeenCalled();
  });

  it.skipIf(testTarget() === 'cluster')('503 unavailable when Redis does not answer, 200 again once it does', async () => {
    const server = await spawnRedisServer();
    cleanups.push(() => server.stop());
    const g = await gatewayOf(server.url, [{ secret: 'sk-test-ready-bbbbbbbbbbbbbbbbbbbbbbb1', models: ['m'] }]);
    expect((await g.readyz()).code).toBe(200);
    server.kill9();
    const down = await g.readyz();
    expect(down.code).toBe(503);
    expect(down.body).toMatchObject({ status: 'unavailable', redis: { ok: false } });
    const again = await spawnRedisServer({ port: server.port });
    cleanups.push(() => again.stop());
    await expect.poll(async () => (await g.readyz()).code, { timeout: 10_000, interval: 200 }).toBe(200);
    expect(g.status).not.toHaveBeenCalled();
  });
});
