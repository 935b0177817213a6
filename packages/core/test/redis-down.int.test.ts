/**
 * Redis going away: each test runs its own redis-server so it can kill -9 it and start it again.
 * Standalone only (the cluster project would repeat the same thing).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { spawnRedisServer, testTarget, type SpawnedRedis } from '@keypool/testkit';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { KeyPool, PoolKeys, RedisUnavailableError, isRedisUnavailable, type Lease } from '../src/index.js';
import { fakeSecret, memoryLogger, sleep } from './helpers.js';

const servers: SpawnedRedis[] = [];
const pools: KeyPool[] = [];
afterEach(async () => {
  for (const p of pools.splice(0)) await p.close();
  for (const s of servers.splice(0)) await s.stop().catch(() => undefined);
});

async function until(cond: () => Promise<boolean> | boolean, ms = 10_000) {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(50);
  }
}

describe.skipIf(testTarget() === 'cluster')('Redis unavailable', () => {
  it('fail-closed: acquire throws a typed error at once, logs it, status shows it; all works again when Redis is back', async () => {
    const server = await spawnRedisServer();
    servers.push(server);
    const secret = fakeSecret('down');
    const { logger, lines } = memoryLogger();
    const downs: Error[] = [];
    const pool = await KeyPool.connect({ redis: server.url, config: { pool: 'down', keys: [{ secret, models: ['m'], rpm: 600 }] }, logger });
    pools.push(pool);
    pool.on('redis:down', (e) => downs.push(e));
    expect((await pool.acquire({ model: 'm' })).ok).toBe(true);

    server.kill9();
    const t0 = Date.now();
    const err = await pool.acquire({ model: 'm' }).catch((e) => e);
    expect(Date.now() - t0).toBeLessThan(1500);
    expect(err).toBeInstanceOf(RedisUnavailableError);
    expect(isRedisUnavailable(err)).toBe(true);
    expect(err.message).toMatch(/^Redis unavailable for pool "down" \(.+\); failing closed \(redisDown.policy=fail-closed\)$/);
    expect(downs.length).toBe(1);
    expect(lines.some((l) => l.includes('"level":50') && l.includes('Redis unavailable'))).toBe(true);
    const st = await pool.status();
    expect(st.redis.ok).toBe(false);
    expect(st.mode).toBe('failing-closed');
    expect(st.redis.downSince).toBeDefined();
    expect(st.keys[0]!.state).toBe('unknown');

    // Redis comes back empty on the same port: keys are registered again, leases flow
    servers.push(await spawnRedisServer({ port: server.port }));
    await until(async () => (await pool.acquire({ model: 'm' }).then((r) => r.ok, () => false)));
    expect(pool.redisAvailable).toBe(true);
    expect((await pool.status()).redis.ok).toBe(true);
    expect(lines.some((l) => l.includes('Redis available again'))).toBe(true);
    for (const l of lines) expect(l).not.toContain(secret.slice(8));
  });

  it('after Redis restarts empty, every process registers its own keys again', async () => {
    const server = await spawnRedisServer();
    servers.push(server);
    const quiet = pino({ level: 'silent' });
    const connect = (secret: string, model: string) =>
      KeyPool.connect({ redis: server.url, config: { pool: 'epoch', keys: [{ secret, models: [model] }] }, logger: quiet });
    const a = await connect(fakeSecret('ea'), 'm1');
    const b = await connect(fakeSecret('eb'), 'm2');
    pools.push(a, b);
    server.kill9();
    await until(() => !a.redisAvailable && !b.redisAvailable);
    servers.push(await spawnRedisServer({ port: server.port }));
    await until(() => a.redisAvailable && b.redisAvailable);
    await until(async () => (await a.status()).keys.length === 2);
    expect((await a.acquire({ model: 'm1' })).ok).toBe(true);
    expect((await b.acquire({ model: 'm2' })).ok).toBe(true);
  });

  it('policy local: a Redis that only timed out is tried again and the shared limits come back', async () => {
    const server = await spawnRedisServer({ args: ['--enable-debug-command', 'yes'] });
    servers.push(server);
    const pool = await KeyPool.connect({
      redis: server.url,
      config: { pool: 'slow', redisDown: { policy: 'local', timeoutMs: 200 }, keys: [{ secret: fakeSecret('slow'), models: ['m'] }] },
      logger: pino({ level: 'silent' }),
    });
    pools.push(pool);
    const admin = new Redis(server.url);
    await admin.ping();
    void admin.debug('SLEEP', '0.6').catch(() => undefined);
    await sleep(30);
    const during = (await pool.acquire({ model: 'm' })) as Lease;
    expect(during.local).toBe(true);
    await sleep(1200);
    await until(async () => {
      const r = await pool.acquire({ model: 'm' });
      return r.ok && !r.local;
    }, 3000);
    expect(pool.redisAvailable).toBe(true);
    admin.disconnect();
  });

  it('an acquire Redis runs after its caller stopped waiting (Redis stalled with it on the socket) takes nothing', async () => {
    const server = await spawnRedisServer({ args: ['--enable-debug-command', 'yes'] });
    servers.push(server);
    const pool = await KeyPool.connect({
      redis: server.url,
      config: { pool: 'stall', redisDown: { timeoutMs: 200 }, keys: [{ secret: fakeSecret('stall'), models: ['m'], rpm: 600, maxConcurrent: 4 }] },
      logger: pino({ level: 'silent' }),
    });
    pools.push(pool);
    const { token, info } = await pool.tokens.create({ name: 'stall', rpm: 600, budget: { usd: 10, period: 'total' } });
    // a lease first: the pool learns Redis's clock from its answers
    const first = await pool.acquire({ model: 'm', admit: { token, estimatedCostUsd: 0.01 } });
    if (!first.ok) throw new Error(`expected a lease, got ${JSON.stringify(first)}`);
    await first.release({ status: 200 }, { settle: { admission: first.admission!, costUsd: 0.01 } });

    const admin = new Redis(server.url);
    await admin.ping();
    void admin.debug('SLEEP', '0.8').catch(() => undefined);
    await sleep(30);
    // three callers give up after 200 ms, their acquires written to Redis's socket
    const tried = await Promise.allSettled([1, 2, 3].map(() => pool.acquire({ model: 'm', admit: { token, estimatedCostUsd: 0.01 } })));
    expect(tried.map((t) => (t.status === 'rejected' ? (t.reason as Error).name : 'answered'))).toEqual(['RedisUnavailableError', 'RedisUnavailableError', 'RedisUnavailableError']);
    // Redis wakes up and runs them: they take no slot, no token request, no money
    await until(async () => (await admin.ping()) === 'PONG');
    const keys = new PoolKeys('stall');
    expect(await admin.zcard(keys.leases)).toBe(0);
    expect(await admin.zcard(keys.tokRes)).toBe(0);
    await until(() => pool.status().then(() => true, () => false));
    expect((await pool.status()).keys[0]!.inFlight).toBe(0);
    const [t] = (await pool.tokens.list()).filter((x) => x.id === info.id);
    expect(t).toMatchObject({ requests: 1, reservedUsd: 0 });
    expect(t!.spendUsd).toBeCloseTo(0.01, 9);
    admin.disconnect();
  });

  it('a Redis that answers but cannot write (OOM) counts as unavailable, not as a bug', async () => {
    const server = await spawnRedisServer();
    servers.push(server);
    const pool = await KeyPool.connect({ redis: server.url, config: { pool: 'oom', keys: [{ secret: fakeSecret('oom'), models: ['m'] }] }, logger: pino({ level: 'silent' }) });
    pools.push(pool);
    const admin = new Redis(server.url);
    await admin.config('SET', 'maxmemory', '1');
    const err = await pool.acquire({ model: 'm' }).catch((e) => e);
    expect(err).toBeInstanceOf(RedisUnavailableError);
    expect(err.message).toContain('OOM');
    await admin.config('SET', 'maxmemory', '0');
    admin.disconnect();
  });

  it('a release that failed while the connection was down can be retried', async () => {
    const server = await spawnRedisServer();
    servers.push(server);
    const pool = await KeyPool.connect({ redis: server.url, config: { pool: 'retry', keys: [{ secret: fakeSecret('rr'), models: ['m'], maxConcurrent: 1 }] }, logger: pino({ level: 'silent' }) });
    pools.push(pool);
    const l = (await pool.acquire({ model: 'm' })) as Lease;
    const admin = new Redis(server.url);
    await admin.call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
    await until(() => !pool.redisAvailable);
    await expect(l.release({ status: 200 })).rejects.toBeInstanceOf(RedisUnavailableError);
    await until(() => pool.redisAvailable);
    expect((await l.release({ status: 200 })).released).toBe(true);
    expect((await pool.acquire({ model: 'm' })).ok).toBe(true); // the slot came back
    admin.disconnect();
  });

  it('connect fails with a message that says how to provide Redis', async () => {
    const server = await spawnRedisServer();
    await server.stop();
    const err = await KeyPool.connect({
      redis: `redis://user:hunter2secret@127.0.0.1:${server.port}`,
      config: { keys: [{ secret: fakeSecret('c'), models: ['m'] }] },
      logger: pino({ level: 'silent' }),
    }).catch((e) => e);
    expect(err).toBeInstanceOf(RedisUnavailableError);
    expect(err.message).toContain(`cannot reach Redis at redis://user:***@127.0.0.1:${server.port}`);
    expect(err.message).toContain('start Redis or fix the redis section (or REDIS_URL)');
    expect(err.message).not.toContain('hunter2secret');
  });

  it('policy local: each process takes 1/fleetSize of the limits while Redis is down, and goes back to shared limits after', async () => {
    const server = await spawnRedisServer();
    servers.push(server);
    const { logger, lines } = memoryLogger();
    const pool = await KeyPool.connect({
      redis: server.url,
      config: { pool: 'local', redisDown: { policy: 'local', fleetSize: 2 }, keys: [{ secret: fakeSecret('loc'), models: ['m'], rpm: 60, rpmBurst: 4 }] },
      logger,
    });
    pools.push(pool);
    server.kill9();
    await until(() => !pool.redisAvailable);
    const a = (await pool.acquire({ model: 'm' })) as Lease;
    const b = (await pool.acquire({ model: 'm' })) as Lease;
    expect(a.ok && b.ok).toBe(true);
    expect(a.local && b.local).toBe(true);
    // burst 4 shared by a fleet of 2: this process gets 2
    expect(await pool.acquire({ model: 'm' })).toMatchObject({ ok: false, reason: 'rate_limited' });
    expect((await pool.status()).mode).toBe('local');
    expect(lines.some((l) => l.includes('degrading to per-process limits (1/2 of each key)'))).toBe(true);
    await a.release({ status: 200 });

    servers.push(await spawnRedisServer({ port: server.port }));
    await until(() => pool.redisAvailable);
    await until(async () => {
      const r = await pool.acquire({ model: 'm' });
      return r.ok && !r.local;
    });
    expect((await pool.status()).mode).toBe('shared');
  });
});
