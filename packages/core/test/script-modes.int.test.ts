/**
 * How the scripts reach Redis (scripts.ts): as Redis Functions (one library, FCALL) where FUNCTION
 * is allowed, EVALSHA otherwise (Redis 6, an ACL without FUNCTION, KEYPOOL_SCRIPT_MODE=evalsha).
 * Both modes must give the same replies; the rest of the suite runs in whichever mode the
 * environment picks (KEYPOOL_SCRIPT_MODE=evalsha runs it all on EVALSHA).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis, type Cluster } from 'ioredis';
import { connectTestRedis, spawnRedisServer, testTarget, uniqueName, type SpawnedRedis } from '@keypool/testkit';
import { PoolKeys, type Lease } from '../src/index.js';
import { keypoolLibrary, ScriptRunner } from '../src/scripts.js';
import { fakeSecret, makePool } from './helpers.js';

let server: SpawnedRedis;
const clients: (Redis | Cluster)[] = [];
const client = <C extends Redis | Cluster>(c: C): C => (clients.push(c), c);

beforeAll(async () => {
  server = await spawnRedisServer();
});
afterAll(async () => {
  for (const c of clients) c.disconnect();
  await server.stop();
});

/** Script calls the server ran so far, by command (INFO commandstats). */
async function scriptCalls(redis: Redis): Promise<{ evalsha: number; fcall: number }> {
  const info = await redis.info('commandstats');
  const calls = (cmd: string) => Number(new RegExp(`^cmdstat_${cmd}:calls=(\\d+)`, 'm').exec(info)?.[1] ?? 0);
  return { evalsha: calls('evalsha') + calls('eval'), fcall: calls('fcall') };
}

async function hasLibrary(node: Redis): Promise<boolean> {
  const list = (await node.call('FUNCTION', 'LIST', 'LIBRARYNAME', keypoolLibrary().name)) as unknown[];
  return list.length > 0;
}

describe('the scripts as Redis Functions', () => {
  it('are one library, loaded on every master at the first call, and FCALL runs them', async () => {
    const redis = client(connectTestRedis());
    // (a pool calls only once its client is ready: RedisLink)
    if (redis.status !== 'ready') await new Promise((resolve) => redis.once('ready', resolve));
    const runner = new ScriptRunner(redis, 'detect');
    expect(runner.mode).toBeUndefined();
    expect(await runner.call('tokenCount', [new PoolKeys(uniqueName('fn')).tok], [])).toBe(0);
    expect(runner.mode).toBe('fcall');
    const masters = testTarget() === 'cluster' ? (redis as Cluster).nodes('master') : [redis as Redis];
    expect(masters.length).toBe(testTarget() === 'cluster' ? 3 : 1);
    for (const m of masters) expect(await hasLibrary(m)).toBe(true);
  });

  it('load the library again when the server lost it (a restart, a new master)', async () => {
    const redis = client(new Redis(server.url));
    const runner = new ScriptRunner(redis, 'detect');
    const tok = new PoolKeys(uniqueName('fn')).tok;
    expect(await runner.call('tokenCount', [tok], [])).toBe(0);
    await redis.call('FUNCTION', 'FLUSH');
    expect(await hasLibrary(redis)).toBe(false);
    const before = await scriptCalls(redis);
    expect(await runner.call('tokenCount', [tok], [])).toBe(0);
    expect(runner.mode).toBe('fcall');
    expect(await hasLibrary(redis)).toBe(true);
    // the FCALL that failed and the one after the load; no EVALSHA
    expect(await scriptCalls(redis)).toEqual({ evalsha: before.evalsha, fcall: before.fcall + 2 });
  });

  it('give way to EVALSHA where the ACL does not allow FUNCTION, or later stops allowing FCALL', async () => {
    const admin = client(new Redis(server.url));
    const user = uniqueName('nofn');
    await admin.call('ACL', 'SETUSER', user, 'on', '>pw-for-test', '~*', '&*', '+@all', '-function');
    const redis = client(new Redis(server.url, { username: user, password: 'pw-for-test' }));
    const runner = new ScriptRunner(redis, 'detect');
    const tok = new PoolKeys(uniqueName('fn')).tok;
    const before = await scriptCalls(admin);
    expect(await runner.call('tokenCount', [tok], [])).toBe(0);
    expect(runner.mode).toBe('evalsha');
    const after = await scriptCalls(admin);
    expect(after.fcall).toBe(before.fcall);
    expect(after.evalsha).toBeGreaterThan(before.evalsha);

    // allowed at first, refused later: the runner turns to EVALSHA and the call still answers
    const user2 = uniqueName('fn');
    await admin.call('ACL', 'SETUSER', user2, 'on', '>pw-for-test', '~*', '&*', '+@all');
    const redis2 = client(new Redis(server.url, { username: user2, password: 'pw-for-test' }));
    const runner2 = new ScriptRunner(redis2, 'detect');
    expect(await runner2.call('tokenCount', [tok], [])).toBe(0);
    expect(runner2.mode).toBe('fcall');
    await admin.call('ACL', 'SETUSER', user2, '-fcall');
    expect(await runner2.call('tokenCount', [tok], [])).toBe(0);
    expect(runner2.mode).toBe('evalsha');
    redis.disconnect();
    redis2.disconnect();
    await admin.call('ACL', 'DELUSER', user, user2);
  });

  it('KEYPOOL_SCRIPT_MODE=evalsha keeps a client on EVALSHA', async () => {
    const redis = client(new Redis(server.url));
    const before = await scriptCalls(redis);
    const runner = new ScriptRunner(redis, 'evalsha');
    expect(await runner.call('tokenCount', [new PoolKeys(uniqueName('fn')).tok], [])).toBe(0);
    expect(runner.mode).toBe('evalsha');
    const after = await scriptCalls(redis);
    expect(after.fcall).toBe(before.fcall);
    expect(after.evalsha).toBe(before.evalsha + 1);
  });
});

describe('acquire and release in both modes', () => {
  const saved = process.env.KEYPOOL_SCRIPT_MODE;
  afterAll(() => {
    if (saved === undefined) delete process.env.KEYPOOL_SCRIPT_MODE;
    else process.env.KEYPOOL_SCRIPT_MODE = saved;
  });

  /** One pool's life in a mode: what it answered, and the script calls it made, by command. */
  async function life(mode: 'evalsha' | 'fcall') {
    process.env.KEYPOOL_SCRIPT_MODE = mode === 'evalsha' ? 'evalsha' : '';
    const admin = client(new Redis(server.url));
    const before = await scriptCalls(admin);
    const tp = await makePool({ keys: [{ secret: fakeSecret(`a-${mode}`), models: ['m'], rpm: 60, rpmBurst: 2 }] }, client(new Redis(server.url)));
    try {
      const seen: unknown[] = [];
      const a = await tp.pool.acquire({ model: 'm', estimatedTokens: 10 });
      seen.push(a.ok);
      const b = await tp.pool.acquire({ model: 'm', estimatedTokens: 10 });
      seen.push(b.ok);
      const c = await tp.pool.acquire({ model: 'm', estimatedTokens: 10 });
      seen.push(c.ok, !c.ok && c.reason);
      await (a as Lease).release({ status: 500, latencyMs: 20 });
      await (b as Lease).release({ status: 429, latencyMs: 30 });
      const st = await tp.pool.status();
      const k = st.keys[0]!;
      seen.push(k.inFlight, k.state, k.breaker?.state);
      const calls = await scriptCalls(admin);
      return { seen, evalsha: calls.evalsha - before.evalsha, fcall: calls.fcall - before.fcall };
    } finally {
      await tp.pool.close();
    }
  }

  it('release and the status reads keep running while Redis refuses writes for memory, as EVAL scripts did', async () => {
    for (const mode of ['evalsha', 'fcall'] as const) {
      process.env.KEYPOOL_SCRIPT_MODE = mode === 'evalsha' ? 'evalsha' : '';
      const admin = client(new Redis(server.url));
      const tp = await makePool({ keys: [{ secret: fakeSecret(`oom-${mode}`), models: ['m'], rpm: 600 }] }, client(new Redis(server.url)));
      try {
        const a = await tp.pool.acquire({ model: 'm', estimatedTokens: 10 });
        if (!a.ok) throw new Error(`acquire refused: ${a.reason}`);
        await admin.config('SET', 'maxmemory-policy', 'noeviction');
        await admin.config('SET', 'maxmemory', '1');
        try {
          // a function without flags would be refused whole (OOM) before its first command
          expect((await a.release({ status: 200, latencyMs: 5 })).released).toBe(true);
          const st = await tp.pool.status({ fresh: true });
          expect([mode, st.keys[0]!.inFlight]).toEqual([mode, 0]);
          expect(await tp.pool.tokens.list()).toEqual([]);
        } finally {
          await admin.config('SET', 'maxmemory', '0');
        }
      } finally {
        await tp.pool.close();
      }
    }
  });

  it('give the same answers, each through its own command', async () => {
    const e = await life('evalsha');
    const f = await life('fcall');
    expect(e.seen).toEqual([true, true, false, 'rate_limited', 0, 'cooling', 'closed']);
    expect(f.seen).toEqual(e.seen);
    expect(e.fcall).toBe(0);
    expect(e.evalsha).toBeGreaterThanOrEqual(5);
    expect(f.evalsha).toBe(0);
    // (the pool's upkeep adds script calls of its own: not an exact count)
    expect(f.fcall).toBeGreaterThanOrEqual(5);
  });
});
