/**
 * A client the pool opened that ioredis ends on its own (status 'end': ioredis 6 does so when its
 * Sentinel connector is closed during a reconnect) is connected again by the pool: it must not stay
 * refused for good. Standalone only.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { spawnRedisServer, testTarget, type SpawnedRedis } from '@keypool/testkit';
import { KeyPool, isRedisUnavailable } from '../src/index.js';
import { fakeSecret, memoryLogger, sleep } from './helpers.js';

const servers: SpawnedRedis[] = [];
const pools: KeyPool[] = [];
afterEach(async () => {
  for (const p of pools.splice(0)) await p.close();
  for (const s of servers.splice(0)) await s.stop().catch(() => undefined);
});

describe.skipIf(testTarget() === 'cluster')('a Redis client ended by the library', () => {
  it.each([1, 2])('partitions: %i: is connected again: acquire answers within seconds, and the outage is logged', async (partitions) => {
    const server = await spawnRedisServer();
    servers.push(server);
    const { logger, lines } = memoryLogger();
    const pool = await KeyPool.connect({ redis: server.url, config: { pool: `ended${partitions}`, partitions, keys: [1, 2, 3, 4].map((i) => ({ secret: fakeSecret(`end${i}`), models: ['m'] })) }, logger });
    pools.push(pool);
    const client = (pool as unknown as { link: { client: Redis } }).link.client;
    const ended = new Promise((resolve) => client.once('end', resolve));
    client.disconnect(); // what ioredis does to itself: status 'end', no reconnect of its own
    await ended;
    await expect(pool.acquire({ model: 'm' })).rejects.toSatisfy(isRedisUnavailable);
    const deadline = Date.now() + 20_000;
    for (;;) {
      const r = await pool.acquire({ model: 'm' }).catch((e: unknown) => (isRedisUnavailable(e) ? null : Promise.reject(e)));
      if (r?.ok) {
        await r.release({ status: 200 });
        break;
      }
      if (Date.now() > deadline) throw new Error(`still refused 20 s after the client ended (status ${client.status})`);
      await sleep(100);
    }
    expect(lines.some((l) => (JSON.parse(l) as { msg?: string }).msg === 'Redis connection ended by the client library; connecting again')).toBe(true);
  });
});
