/**
 * A gateway token admitted in the same script call as the key (acquire with `admit`) and settled in
 * the same call as the release (`release(outcome, { settle })`), against a real Redis (and a real
 * Cluster in the cluster project): a refused token touches no key, a key refused takes nothing of the
 * token, a request that fails over is admitted once and settled once, a reservation given back
 * gives the token's request back, and the Redis-down policy still admits tokens locally.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { spawnRedisServer, testTarget, type SpawnedRedis } from '@keypool/testkit';
import { KeyPool, PoolKeys, type AcquireResult, type Lease, type TokenRefused } from '../src/index.js';
import { dumpPool, fakeSecret, memoryLogger, poolsClosedAfterAll, sleep, type TestPool } from './helpers.js';

const pool = poolsClosedAfterAll();
const MODEL = 'gpt-4o-mini';
const OK = { status: 200, latencyMs: 50, usage: { promptTokens: 100, completionTokens: 20 } };

function leased(r: AcquireResult | TokenRefused): Lease {
  if (!r.ok) throw new Error(`expected a lease, got ${JSON.stringify(r)}`);
  return r;
}

/** Every Redis key of the pool as bytes, as one comparable value (not the traffic counters: a refusal is counted). */
async function snapshot(tp: TestPool, only?: (key: string) => boolean): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const [key, parts] of await dumpPool(tp.redis, tp.name)) if ((!only || only(key)) && key !== tp.pool.keys.ser) out[key] = parts.map((p) => p.toString('base64'));
  return out;
}

async function twoKeys(): Promise<TestPool> {
  return pool({ keys: [1, 2].map((i) => ({ secret: fakeSecret(`tk${i}`), models: [MODEL], rpm: 6000, rpmBurst: 100 })) });
}

describe('a gateway token admitted with the key', () => {
  it('refused (unknown, revoked, model not allowed, rate limited, budget): nothing in Redis changes, no key is touched', async () => {
    const tp = await twoKeys();
    const t = tp.pool.tokens;
    const limited = await t.create({ name: 'limited', rpm: 60, rpmBurst: 1 });
    const revoked = await t.create({ name: 'revoked' });
    await t.revoke(revoked.info.id);
    const narrow = await t.create({ name: 'narrow', models: ['other'] });
    const poor = await t.create({ name: 'poor', budget: { usd: 0.01, period: 'total' } });
    const first = leased(await tp.pool.acquire({ model: MODEL, admit: { token: limited.token, estimatedCostUsd: 0 } }));
    expect(first.admission).toMatchObject({ ok: true, id: limited.info.id, name: 'limited' });
    await first.release(OK, { settle: { admission: first.admission! } });

    const cases: [string, number, TokenRefused['token']][] = [
      [`kpt_${'A'.repeat(43)}`, 0, { ok: false, reason: 'unknown', retryAfterMs: null }],
      ['not-a-token', 0, { ok: false, reason: 'unknown', retryAfterMs: null }],
      [revoked.token, 0, { ok: false, reason: 'revoked', retryAfterMs: null, id: revoked.info.id }],
      [narrow.token, 0, { ok: false, reason: 'model_not_allowed', retryAfterMs: null, id: narrow.info.id }],
      [poor.token, 0.5, { ok: false, reason: 'over_budget', retryAfterMs: null, id: poor.info.id }],
    ];
    for (const [token, usd, refusal] of cases) {
      const before = await snapshot(tp);
      expect(await tp.pool.acquire({ model: MODEL, admit: { token, estimatedCostUsd: usd } })).toEqual({ ok: false, reason: 'token_refused', token: refusal });
      expect(await snapshot(tp)).toEqual(before);
    }
    const before = await snapshot(tp);
    const r = await tp.pool.acquire({ model: MODEL, admit: { token: limited.token, estimatedCostUsd: 0 } });
    expect(r).toMatchObject({ ok: false, reason: 'token_refused', token: { reason: 'rate_limited', id: limited.info.id } });
    expect((r as TokenRefused).token.retryAfterMs).toBeGreaterThan(0);
    expect(await snapshot(tp)).toEqual(before);
  });

  it('no key can be had (disabled, at its concurrency): the token is not taken', async () => {
    const tp = await pool({ keys: [{ secret: fakeSecret('one'), models: [MODEL], rpm: 6000, rpmBurst: 100, maxConcurrent: 1 }] });
    const { token, info } = await tp.pool.tokens.create({ name: 'cap', rpm: 60, rpmBurst: 2, budget: { usd: 1, period: 'total' } });
    const tok = (key: string) => key.includes(':tok');
    const held = leased(await tp.pool.acquire({ model: MODEL }));
    const before = await snapshot(tp, tok);
    expect(await tp.pool.acquire({ model: MODEL, admit: { token, estimatedCostUsd: 0.1 } })).toMatchObject({ ok: false, reason: 'concurrency' });
    expect(await snapshot(tp, tok)).toEqual(before);
    await held.release(OK);
    await tp.pool.disableKey(held.keyId);
    expect(await tp.pool.acquire({ model: MODEL, admit: { token, estimatedCostUsd: 0.1 } })).toMatchObject({ ok: false, reason: 'unavailable' });
    expect(await snapshot(tp, tok)).toEqual(before);
    expect(await tp.pool.tokens.get(info.id)).toMatchObject({ requests: 0, spendUsd: 0, reservedUsd: 0, left: { requests: 2, budgetUsd: 1 } });
  });

  it('a request that fails over to a second key is admitted once and settled once, on its last release', async () => {
    const tp = await twoKeys();
    const { token, info } = await tp.pool.tokens.create({ name: 'fo', rpm: 60, rpmBurst: 5, budget: { usd: 1, period: 'total' } });
    const a = leased(await tp.pool.acquire({ model: MODEL, estimatedTokens: 500, admit: { token, estimatedCostUsd: 0.25 } }));
    const admission = a.admission!;
    expect(admission.reservation).toMatch(new RegExp(`^${info.id}:1:250000000$`));
    expect(await tp.pool.tokens.get(info.id)).toMatchObject({ requests: 0, reservedUsd: 0.25, left: { requests: 4 } });
    // the first key fails: released alone, the admission stays held
    await a.release({ status: 500, latencyMs: 20 });
    expect(await tp.pool.tokens.get(info.id)).toMatchObject({ requests: 0, reservedUsd: 0.25 });
    // the failover leases without the token
    const b = leased(await tp.pool.acquire({ model: MODEL, estimatedTokens: 500, exclude: [a.keyId] }));
    expect(b.keyId).not.toBe(a.keyId);
    expect(b.admission).toBeUndefined();
    const r = await b.release(OK, { settle: { admission } });
    expect(r.released).toBe(true);
    expect(r.costUsd).toBeGreaterThan(0);
    const after = await tp.pool.tokens.get(info.id);
    expect(after).toMatchObject({ requests: 1, reservedUsd: 0, left: { requests: 4 } });
    // the token paid what the key was charged for the answer
    expect(after!.spendUsd).toBeCloseTo(r.costUsd, 9);
    // once: a second release is a no-op, a settle of the same reservation finds nothing
    await b.release(OK, { settle: { admission } });
    await tp.pool.tokens.settle(admission.id, admission.reservation, 0.5);
    expect(await tp.pool.tokens.get(info.id)).toMatchObject({ requests: 1, spendUsd: after!.spendUsd });
    expect(tp.logs.some((l) => l.includes('settled a gateway token reservation that had expired'))).toBe(true);
  });

  it('an unused release with a refund gives the request and the money back; a cost given explicitly is what the token pays', async () => {
    const tp = await twoKeys();
    const { token, info } = await tp.pool.tokens.create({ name: 'ref', rpm: 60, rpmBurst: 2, budget: { usd: 1, period: 'total' } });
    const a = leased(await tp.pool.acquire({ model: MODEL, admit: { token, estimatedCostUsd: 0.1 } }));
    await a.release({ error: 'unused' }, { settle: { admission: a.admission!, refundRequest: true } });
    expect(await tp.pool.tokens.get(info.id)).toMatchObject({ requests: 0, spendUsd: 0, reservedUsd: 0, left: { requests: 2 } });
    const b = leased(await tp.pool.acquire({ model: MODEL, admit: { token, estimatedCostUsd: 0.1 } }));
    await b.release(OK, { settle: { admission: b.admission!, costUsd: 0.03 } });
    expect(await tp.pool.tokens.get(info.id)).toMatchObject({ requests: 1, spendUsd: 0.03, reservedUsd: 0 });
  });

  it('a reservation ("start at T") counts as admitted; a caller that gives up before its start gives the request back', async () => {
    const tp = await pool({ keys: [{ secret: fakeSecret('slow'), models: [MODEL], rpm: 60, rpmBurst: 1 }] });
    const { token, info } = await tp.pool.tokens.create({ name: 'wait', rpm: 60, rpmBurst: 3 });
    leased(await tp.pool.acquire({ model: MODEL }));
    const ac = new AbortController();
    const pending = tp.pool.acquire({ model: MODEL, maxWaitMs: 5000, signal: ac.signal, admit: { token, estimatedCostUsd: 0 } });
    await sleep(200);
    // admitted while it waits for its start
    expect(await tp.pool.tokens.get(info.id)).toMatchObject({ reservedUsd: 0, left: { requests: 2 } });
    ac.abort(new Error('gave up'));
    await expect(pending).rejects.toThrow('gave up');
    expect(await tp.pool.tokens.get(info.id)).toMatchObject({ requests: 0, left: { requests: 3 } });
    expect(await tp.redis.zcard(new PoolKeys(tp.name).tokRes)).toBe(0);
  });
});

const servers: SpawnedRedis[] = [];
const downPools: KeyPool[] = [];
afterEach(async () => {
  for (const p of downPools.splice(0)) await p.close();
  for (const s of servers.splice(0)) await s.stop().catch(() => undefined);
});

// Each test runs its own redis-server to kill; the cluster project would repeat the same thing.
describe.skipIf(testTarget() === 'cluster')('a gateway token admitted with the key while Redis is down', () => {
  it('policy local: the token is admitted by this process with its key, refused as before, and settled on release', async () => {
    const server = await spawnRedisServer();
    servers.push(server);
    const { logger, lines } = memoryLogger();
    const p = await KeyPool.connect({
      redis: server.url,
      config: { pool: 'tokwithkey', keys: [{ secret: fakeSecret('down'), models: [MODEL], rpm: 6000, rpmBurst: 100 }], redisDown: { policy: 'local', fleetSize: 2 } },
      logger,
    });
    downPools.push(p);
    const seen = await p.tokens.create({ name: 'seen', rpm: 60, rpmBurst: 4 });
    const never = await p.tokens.create({ name: 'never' });
    const first = leased(await p.acquire({ model: MODEL, admit: { token: seen.token, estimatedCostUsd: 0 } }));
    await first.release(OK, { settle: { admission: first.admission! } });
    server.kill9();
    for (let i = 0; i < 100 && p.redisAvailable; i++) await p.acquire({ model: MODEL }).catch(() => undefined).then(() => sleep(20));
    expect(p.redisAvailable).toBe(false);

    // burst 4 shared by a fleet of 2: this process gets 2
    const l1 = leased(await p.acquire({ model: MODEL, admit: { token: seen.token, estimatedCostUsd: 0 } }));
    expect(l1.local).toBe(true);
    expect(l1.admission!.reservation).toMatch(new RegExp(`^local:${seen.info.id}:`));
    leased(await p.acquire({ model: MODEL, admit: { token: seen.token, estimatedCostUsd: 0 } }));
    expect(await p.acquire({ model: MODEL, admit: { token: seen.token, estimatedCostUsd: 0 } })).toMatchObject({ ok: false, reason: 'token_refused', token: { reason: 'rate_limited' } });
    expect(await p.acquire({ model: MODEL, admit: { token: never.token, estimatedCostUsd: 0 } })).toEqual({ ok: false, reason: 'token_refused', token: { ok: false, reason: 'unknown', retryAfterMs: null } });
    // the settle goes with the local release (its Redis part is dropped, with a warning); a refund comes back to this process's bucket
    await l1.release({ error: 'unused' }, { settle: { admission: l1.admission!, refundRequest: true } });
    expect(lines.some((l) => l.includes('gateway token settle dropped'))).toBe(true);
    leased(await p.acquire({ model: MODEL, admit: { token: seen.token, estimatedCostUsd: 0 } }));
  });
});

describe('the class and tenant of a lease', () => {
  it('default normal, tenant the admitted token; given ones kept; a bad class or tenant says what to fix', async () => {
    const tp = await twoKeys();
    const tok = await tp.pool.tokens.create({ name: 'tenant-a' });
    const plain = leased(await tp.pool.acquire({ model: MODEL }));
    expect([plain.priority, plain.tenant]).toEqual(['normal', '']);
    await plain.release(OK);
    const withToken = leased(await tp.pool.acquire({ model: MODEL, admit: { token: tok.token, estimatedCostUsd: 0 } }));
    expect([withToken.priority, withToken.tenant]).toEqual(['normal', tok.info.id]);
    await withToken.release(OK, { settle: { admission: withToken.admission! } });
    const given = leased(await tp.pool.acquire({ model: MODEL, priority: 'low', tenant: 'batch-7', admit: { token: tok.token, estimatedCostUsd: 0 } }));
    expect([given.priority, given.tenant]).toEqual(['low', 'batch-7']);
    await given.release(OK, { settle: { admission: given.admission! } });
    await expect(tp.pool.acquire({ model: MODEL, priority: 'urgent' as never })).rejects.toThrow(/priority must be one of critical, normal, low, got urgent/);
    await expect(tp.pool.acquire({ model: MODEL, tenant: 'a b' })).rejects.toThrow(/tenant must be a string of at most 64 characters/);
  });
});
