/**
 * The dispatcher's backoff between attempts runs on the injected clock: with a ManualClock the
 * retry after a 5xx waits until the test moves time, not for real milliseconds.
 */
import { pino } from 'pino';
import { afterAll, expect, it } from 'vitest';
import { connectTestRedis, uniqueName } from '@keypool/testkit';
import { KeyPool, ManualClock, type Lease } from '@keypool/core';
import { Dispatcher, type Failure } from '../src/index.js';

const redis = connectTestRedis();
afterAll(() => redis.disconnect());

it('backs off on the injected clock between attempts on two keys after a 5xx', async () => {
  const pool = await KeyPool.connect({
    redis,
    config: {
      pool: uniqueName('clock'),
      keys: [
        { secret: 'sk-test-clock-aaaaaaaaaaaaaaaa1111', baseURL: 'http://127.0.0.1:9/v1', models: ['m'] },
        { secret: 'sk-test-clock-bbbbbbbbbbbbbbbb2222', baseURL: 'http://127.0.0.1:9/v1', models: ['m'] },
      ],
    },
    logger: pino({ level: 'silent' }),
  });
  try {
    const clock = new ManualClock();
    // a backoff whose smallest possible wait is still > 0 ms: base == cap, full jitter in [0, cap)
    const d = new Dispatcher({ pool, clock, backoff: { baseMs: 10_000, maxMs: 10_000 }, maxAttempts: 2 });
    const used: string[] = [];
    const ac = new AbortController();
    const call = d.dispatch({
      name: 'm',
      est: { total: 10, output: 5 },
      priority: 'normal',
      signal: ac.signal,
      deadline: clock.now() + 60_000,
      call: async (lease: Lease) => {
        used.push(lease.keyId);
        if (used.length === 1) throw Object.assign(new Error('upstream 503'), { status: 503 });
        return 'ok';
      },
      classify: (e): Failure => ({ kind: 'status', status: (e as { status: number }).status, message: 'x' }),
      timeoutError: (m) => new Error(m),
    });
    // the first attempt failed and the dispatcher sleeps on the manual clock: nothing moves
    await expect.poll(() => clock.pending).toBe(1);
    await new Promise((r) => setTimeout(r, 50));
    expect(used).toHaveLength(1);
    await clock.advance(10_000);
    const done = await call;
    expect(done.value).toBe('ok');
    expect(used).toHaveLength(2);
    expect(used[1]).not.toBe(used[0]);
    await done.lease.release({ status: 200, latencyMs: 1 });
  } finally {
    await pool.close();
  }
});
