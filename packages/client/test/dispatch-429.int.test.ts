/**
 * What a 429 does to the rest of a call (dispatch.ts): a 429 with a Retry-After leaves its key in
 * once (the pool cools it that long, then the call may use it again), a second 429 from it or a 429
 * without that hint leaves it out, and the call then fails with the provider's own error.
 */
import { pino } from 'pino';
import { afterAll, expect, it } from 'vitest';
import { connectTestRedis, uniqueName } from '@keypool/testkit';
import { KeyPool, type Lease } from '@keypool/core';
import { Dispatcher, type Failure } from '../src/index.js';

const redis = connectTestRedis();
afterAll(() => redis.disconnect());

/** One key; every attempt answers 429 with `headers`. The keys the attempts used, and how the call ended. */
async function allRefused(headers: Record<string, string>): Promise<{ used: string[]; error: unknown }> {
  const pool = await KeyPool.connect({
    redis,
    config: { pool: uniqueName('d429'), keys: [{ secret: 'sk-test-d429-aaaaaaaaaaaaaaaa1111', baseURL: 'http://127.0.0.1:9/v1', models: ['m'] }] },
    logger: pino({ level: 'silent' }),
  });
  try {
    const d = new Dispatcher({ pool, maxAttempts: 4 });
    const used: string[] = [];
    const error = await d
      .dispatch({
        name: 'm',
        est: { total: 10, output: 5 },
        priority: 'normal',
        signal: new AbortController().signal,
        deadline: Date.now() + 20_000,
        call: async (lease: Lease) => {
          used.push(lease.keyId);
          throw Object.assign(new Error(`upstream 429 #${used.length}`), { status: 429 });
        },
        classify: (e): Failure => ({ kind: 'status', status: (e as { status: number }).status, headers, message: 'Rate limit reached' }),
        timeoutError: (m) => new Error(m),
      })
      .then(() => undefined, (e: unknown) => e);
    return { used, error };
  } finally {
    await pool.close();
  }
}

it('a 429 with a Retry-After: the key is tried again once after its cooling, then the call fails with the second 429', async () => {
  const t0 = Date.now();
  const { used, error } = await allRefused({ 'retry-after-ms': '150' });
  expect(used).toHaveLength(2);
  expect(used[1]).toBe(used[0]);
  // the second attempt waited for the cooling the provider named
  expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
  expect((error as Error).message).toBe('upstream 429 #2');
});

it('a 429 without a Retry-After leaves its key out: the call fails with it at once', async () => {
  const { used, error } = await allRefused({});
  expect(used).toHaveLength(1);
  expect((error as Error).message).toBe('upstream 429 #1');
});
