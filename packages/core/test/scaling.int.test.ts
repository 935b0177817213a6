/**
 * The cost of acquire does not grow with the number of keys: counted as Redis commands executed
 * (scripts' inner calls included, from INFO commandstats), which unlike time is not noisy.
 * Standalone only, on a server of its own so that no other test file's commands are counted.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnRedisServer, testTarget, type SpawnedRedis } from '@keypool/testkit';
import type { Lease } from '../src/index.js';
import { fakeSecret, makePool, type TestPool } from './helpers.js';

const opened: TestPool[] = [];
let server: SpawnedRedis | undefined;
beforeAll(async () => {
  if (testTarget() !== 'cluster') server = await spawnRedisServer();
});
afterAll(async () => {
  for (const p of opened) {
    await p.pool.close();
    p.redis.disconnect();
  }
  await server?.stop();
});

/** Total commands the server has executed, scripts' inner calls included. */
async function commandsRun(redis: Redis): Promise<number> {
  const info = await redis.info('commandstats');
  let total = 0;
  for (const m of info.matchAll(/^cmdstat_[^:]+:calls=(\d+)/gm)) total += Number(m[1]);
  return total;
}

async function perLease(n: number, blocked: 'none' | 'disabled' | 'rate'): Promise<number> {
  const keys = Array.from({ length: n }, (_, i) => ({ secret: fakeSecret(`s${i}`), models: ['m'], ...(blocked === 'rate' && i > 0 ? { rpm: 60, rpmBurst: 1 } : {}) }));
  const tp = await makePool({ keys }, new Redis(server!.url));
  opened.push(tp);
  const { pool } = tp;
  const redis = tp.redis as Redis;
  const st = await pool.status();
  if (blocked === 'disabled') for (const k of st.keys.slice(1)) await pool.disableKey(k.id);
  if (blocked === 'rate') {
    // use up every limited key once: they move to the wait set as they are found empty
    for (let i = 0; i < n * 3; i++) {
      const r = await pool.acquire({ model: 'm' });
      if (r.ok) await (r as Lease).release({ status: 200 });
    }
  }
  const rounds = 200;
  const before = await commandsRun(redis);
  for (let i = 0; i < rounds; i++) {
    const r = await pool.acquire({ model: 'm' });
    if (!r.ok) throw new Error(`no lease: ${JSON.stringify(r)}`);
    await r.release({ status: 200 });
  }
  const after = await commandsRun(redis);
  return (after - before - 1) / rounds; // the INFO call itself counts once
}

describe.skipIf(testTarget() === 'cluster')('acquire cost does not grow with the pool', () => {
  it('commands per lease are the same for 10 and 1000 keys, usable or blocked', async () => {
    const small = await perLease(10, 'none');
    const large = await perLease(1000, 'none');
    expect(small).toBeLessThan(40);
    expect(large).toBeLessThanOrEqual(small + 0.5);

    // 999 of 1000 keys disabled, or rate-limited into the wait set: still no scan
    const disabled = await perLease(1000, 'disabled');
    expect(disabled).toBeLessThanOrEqual(small + 0.5);
    // rate-limited keys refill and come back: each lease that lands on one pays for moving it back
    // and out again (a handful of commands), a constant, where a scan would cost ~1000
    const limited = await perLease(1000, 'rate');
    expect(limited).toBeLessThanOrEqual(small + 8);
  }, 120_000);
});
