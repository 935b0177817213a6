/**
 * Gateway tokens against a real Redis (and, in the cluster project, a real Redis Cluster): the
 * admin operations, every refusal, exact fleet-wide rate and budget limits under concurrency,
 * budget periods, reservations that expire, and that Redis never holds a token.
 */
import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { spawnRedisServer, testTarget, type SpawnedRedis } from '@keypool/testkit';
import {
  ConfigError,
  InvalidArgumentError,
  KeyPool,
  PoolKeys,
  RedisUnavailableError,
  type GatewayTokenInfo,
  type TokenAdmission,
} from '../src/index.js';
import { dumpPool, memoryLogger, secretFragments, sleep, poolsClosedAfterAll, type TestPool } from './helpers.js';

const pool = poolsClosedAfterAll();

type Admitted = Extract<TokenAdmission, { ok: true }>;
function admitted(a: TokenAdmission): Admitted {
  if (!a.ok) throw new Error(`expected an admission, got ${JSON.stringify(a)}`);
  return a;
}

/** Redis time in ms (the clock every script uses). */
async function redisNow(tp: TestPool): Promise<number> {
  const [s, us] = await tp.redis.time();
  return Number(s) * 1000 + Number(us) / 1000;
}

/** Rewrite fields of a token's state inside Redis (the only way tests move a token's clock). */
async function patchState(tp: TestPool, id: string, lua: string): Promise<void> {
  const script = `local st = cmsgpack.unpack(redis.call('HGET', KEYS[1], ARGV[1])) ${lua} redis.call('HSET', KEYS[1], ARGV[1], cmsgpack.pack(st))`;
  await tp.redis.eval(script, 1, new PoolKeys(tp.name).tokSt, id);
}

const TOKEN = /^kpt_[A-Za-z0-9_-]{43}$/;

describe('gateway tokens: admin', () => {
  it('create shows the token once; Redis, list and get know it by id and hint', async () => {
    const tp = await pool();
    const tokens = tp.pool.tokens;
    const before = await redisNow(tp);
    const { token, info } = await tokens.create({ name: 'alice', rpm: 60, budget: { usd: 1, period: 'day' }, models: ['gpt-4o-mini', 'fast', 'fast'] });
    expect(token).toMatch(TOKEN);
    const sha = createHash('sha256').update(token).digest('hex');
    expect(info).toEqual<GatewayTokenInfo>({
      id: sha.slice(0, 12),
      hint: `kpt_...${token.slice(-4)}`,
      name: 'alice',
      rpm: 60,
      rpmBurst: 2,
      budget: { usd: 1, period: 'day' },
      models: ['fast', 'gpt-4o-mini'],
      weight: 1,
      allowCritical: false,
      createdAt: info.createdAt,
      revokedAt: null,
      lastUsedAt: null,
      requests: 0,
      spendUsd: 0,
      reservedUsd: 0,
      left: { requests: 2, budgetUsd: 1 },
      budgetPeriodEndsAt: new Date((Math.floor(before / 86_400_000) + 1) * 86_400_000).toISOString(),
    });
    // Redis time, not this process's
    expect(Date.parse(info.createdAt)).toBeGreaterThanOrEqual(Math.floor(before));
    expect(Date.parse(info.createdAt)).toBeLessThan(before + 5000);

    const bob = await tokens.create({ name: 'bob' });
    expect(bob.info).toMatchObject({ rpm: 0, rpmBurst: 0, budget: null, models: [], left: { requests: null, budgetUsd: null }, budgetPeriodEndsAt: null });
    const carol = await tokens.create({ name: 'carol', rpm: 6000, budget: { usd: 5 } });
    expect(carol.info).toMatchObject({ rpmBurst: 200, budget: { usd: 5, period: 'month' } });
    expect(carol.info.budgetPeriodEndsAt).toMatch(/^\d{4}-\d\d-01T00:00:00\.000Z$/);

    const list = await tokens.list();
    expect(list.map((t) => t.name)).toEqual(['alice', 'bob', 'carol']);
    expect(list[0]).toEqual(info);
    expect(await tokens.get(info.id)).toEqual(info);
    expect(await tokens.get('000000000000')).toBeNull();
    expect(await tokens.get('not an id')).toBeNull();

    // stored under the pool's hash tag, by hash; no TTL (tokens live until revoked)
    const keys = new PoolKeys(tp.name);
    expect(JSON.parse((await tp.redis.hget(keys.tok, sha))!)).toMatchObject({ id: info.id, name: 'alice', rb: 2, bud: 1e9, per: 'day' });
    expect(await tp.redis.hget(keys.tokId, info.id)).toBe(sha);
    for (const key of [keys.tok, keys.tokId, keys.tokSt]) expect(await tp.redis.pttl(key)).toBe(-1);
  });

  it('revoke: refused at once by every process; false for an unknown id', async () => {
    const tp = await pool();
    const other = await pool({ pool: tp.name });
    const { token, info } = await tp.pool.tokens.create({ name: 'r' });
    admitted(await other.pool.tokens.admit(token, 'm', 0));
    expect(await tp.pool.tokens.revoke(info.id)).toBe(true);
    expect(await other.pool.tokens.admit(token, 'm', 0)).toEqual({ ok: false, reason: 'revoked', retryAfterMs: null, id: info.id });
    expect(await tp.pool.tokens.admit(token, 'm', 0)).toEqual({ ok: false, reason: 'revoked', retryAfterMs: null, id: info.id });
    const revokedAt = (await tp.pool.tokens.get(info.id))!.revokedAt;
    expect(revokedAt).not.toBeNull();
    // revoking again keeps the first time
    expect(await tp.pool.tokens.revoke(info.id)).toBe(true);
    expect((await tp.pool.tokens.get(info.id))!.revokedAt).toBe(revokedAt);
    expect(await tp.pool.tokens.revoke('0123456789ab')).toBe(false);
    expect(await tp.pool.tokens.revoke('nonsense')).toBe(false);
    expect(await tp.pool.tokens.verify(token)).toBeNull();
  });

  it('a bad spec throws ConfigError listing every problem with its path', async () => {
    const tp = await pool();
    const err = await tp.pool.tokens
      .create({ name: '', rpm: -1, rpmBurst: 1.5, budget: { usd: 0, period: 'week' as 'day' }, models: [''], owner: 'x' } as never)
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).message).toBe(
      [
        'invalid gateway token (7 problems):',
        '  - token.name: give the token a name (who or what uses it)',
        '  - token.rpm: Too small: expected number to be >=0',
        '  - token.rpmBurst: Invalid input: expected int, received number',
        '  - token.budget.usd: Too small: expected number to be >0',
        '  - token.budget.period: Invalid option: expected one of "day"|"month"|"total"',
        '  - token.models[0]: Too small: expected string to have >=1 characters',
        '  - token: Unrecognized key: "owner"',
      ].join('\n'),
    );
    const burst = await tp.pool.tokens.create({ name: 'b', rpmBurst: 5 }).catch((e: unknown) => e);
    expect((burst as ConfigError).issues).toEqual([{ path: 'token.rpmBurst', message: 'rpmBurst needs rpm' }]);
    expect(await tp.pool.tokens.list()).toEqual([]);
  });
});

describe('gateway tokens: admit and settle', () => {
  it('refuses unknown tokens, revoked ones and models not allowed, without taking a request', async () => {
    const tp = await pool();
    const t = tp.pool.tokens;
    const { token, info } = await t.create({ name: 'm', rpm: 60, rpmBurst: 2, models: ['gpt-4o-mini', 'cheap-route'] });
    const unknown = { ok: false, reason: 'unknown', retryAfterMs: null };
    expect(await t.admit('sk-not-a-gateway-token', 'gpt-4o-mini', 0)).toEqual(unknown);
    expect(await t.admit(`kpt_${'A'.repeat(43)}`, 'gpt-4o-mini', 0)).toEqual(unknown);
    expect(await t.admit(`${token.slice(0, -1)}${token.endsWith('A') ? 'B' : 'A'}`, 'gpt-4o-mini', 0)).toEqual(unknown);
    for (let i = 0; i < 5; i++) expect(await t.admit(token, 'gpt-4o', 0)).toEqual({ ok: false, reason: 'model_not_allowed', retryAfterMs: null, id: info.id });
    expect((await t.get(info.id))!.left.requests).toBe(2);
    const a = admitted(await t.admit(token, 'gpt-4o-mini', 0));
    expect(a).toEqual({ ok: true, id: info.id, name: 'm', reservation: `${info.id}:1:0`, weight: 1, allowCritical: false });
    admitted(await t.admit(token, 'cheap-route', 0));
    expect(await t.admit(token, 'cheap-route', 0)).toMatchObject({ ok: false, reason: 'rate_limited', id: info.id });
    await expect(t.admit(token, '', 0)).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(t.admit(token, 'm', -1)).rejects.toThrow('estimatedCostUsd must be a number from 0 to 9007199, got -1');
    await expect(t.settle(info.id, 'abc', 0)).rejects.toThrow(`settle needs a reservation that admit returned for gateway token ${info.id}`);
    await expect(t.settle('0123456789ab', a.reservation, 0)).rejects.toBeInstanceOf(InvalidArgumentError);
    // a token with no model list may ask for anything
    const any = await t.create({ name: 'any' });
    admitted(await t.admit(any.token, 'whatever-model', 0));
  });

  it('rpm is exact under concurrency: 200 parallel admits on burst 10 admit exactly 10, then one per second', async () => {
    const tp = await pool();
    const t = tp.pool.tokens;
    const { token, info } = await t.create({ name: 'rpm', rpm: 60, rpmBurst: 10 });
    const results = await Promise.all(Array.from({ length: 200 }, () => t.admit(token, 'm', 0)));
    expect(results.filter((r) => r.ok)).toHaveLength(10);
    const refused = results.filter((r): r is Extract<TokenAdmission, { ok: false }> => !r.ok);
    expect(new Set(refused.map((r) => r.reason))).toEqual(new Set(['rate_limited']));
    for (const r of refused) {
      expect(r.retryAfterMs).toBeGreaterThan(0);
      expect(r.retryAfterMs).toBeLessThanOrEqual(1000);
    }
    // reservation numbers are unique
    expect(new Set(results.filter((r) => r.ok).map((r) => (r as Admitted).reservation)).size).toBe(10);
    const wait = Math.max(...refused.map((r) => r.retryAfterMs!));
    await sleep(wait + 20);
    admitted(await t.admit(token, 'm', 0));
    expect(await t.admit(token, 'm', 0)).toMatchObject({ ok: false, reason: 'rate_limited', id: info.id });
  });

  it('budget: concurrent admits never reserve beyond the budget; settle charges the real cost', async () => {
    const tp = await pool();
    const t = tp.pool.tokens;
    const { token, info } = await t.create({ name: 'money', budget: { usd: 1, period: 'day' } });
    const first = await Promise.all(Array.from({ length: 100 }, () => t.admit(token, 'm', 0.03)));
    const ok = first.filter((r): r is Admitted => r.ok);
    expect(ok).toHaveLength(33);
    let s = (await t.get(info.id))!;
    expect(s.reservedUsd).toBeCloseTo(0.99, 12);
    expect(s.spendUsd).toBe(0);
    expect(s.left.budgetUsd).toBeCloseTo(0.01, 12);
    // the money is held by requests in flight: try again soon, not next period
    expect(first.find((r) => !r.ok)).toEqual({ ok: false, reason: 'budget_exhausted', retryAfterMs: tp.pool.config.concurrencyRecheckMs, id: info.id });

    await Promise.all(ok.map((a) => t.settle(a.id, a.reservation, 0.02)));
    s = (await t.get(info.id))!;
    expect(s.reservedUsd).toBe(0);
    expect(s.spendUsd).toBeCloseTo(0.66, 12);
    expect(s.requests).toBe(33);
    expect(Date.parse(s.lastUsedAt!)).toBeGreaterThan(Date.parse(s.createdAt) - 1);
    // a second settle of the same reservation charges nothing
    await t.settle(ok[0]!.id, ok[0]!.reservation, 0.5);
    expect((await t.get(info.id))!.spendUsd).toBeCloseTo(0.66, 12);
    expect(tp.logs.some((l) => l.includes('"level":40') && l.includes('expired (its estimate was charged) or was settled before'))).toBe(true);

    // 0.34 left: 11 more of 0.03; then the budget is spent until the UTC day ends
    const second = await Promise.all(Array.from({ length: 30 }, () => t.admit(token, 'm', 0.03)));
    expect(second.filter((r) => r.ok)).toHaveLength(11);
    await Promise.all(second.filter((r): r is Admitted => r.ok).map((a) => t.settle(a.id, a.reservation, 0.03)));
    const now = await redisNow(tp);
    const refused = await t.admit(token, 'm', 0.03);
    expect(refused).toMatchObject({ ok: false, reason: 'budget_exhausted', id: info.id });
    const untilMidnight = (Math.floor(now / 86_400_000) + 1) * 86_400_000 - now;
    expect(Math.abs((refused as { retryAfterMs: number }).retryAfterMs - untilMidnight)).toBeLessThan(2000);
    // smaller requests still fit in what is left
    admitted(await t.admit(token, 'm', 0.01));
    expect(await t.admit(token, 'm', 0)).toMatchObject({ ok: true });
  });

  it('spend never passes the budget when real costs stay within estimates, however many callers race', async () => {
    const tp = await pool();
    const other = await pool({ pool: tp.name });
    const { token, info } = await tp.pool.tokens.create({ name: 'race', budget: { usd: 0.5, period: 'total' } });
    const est = 0.013;
    const worker = async (t: KeyPool['tokens']) => {
      for (;;) {
        const a = await t.admit(token, 'm', est);
        if (!a.ok) {
          if (a.retryAfterMs === null) return; // spent for good ('total')
          await sleep(a.retryAfterMs);
          continue;
        }
        await t.settle(a.id, a.reservation, est * (0.5 + Math.random() / 2));
      }
    };
    await Promise.all(Array.from({ length: 16 }, (_, i) => worker(i % 2 ? other.pool.tokens : tp.pool.tokens)));
    const s = (await tp.pool.tokens.get(info.id))!;
    expect(s.reservedUsd).toBe(0);
    expect(s.spendUsd).toBeLessThanOrEqual(0.5);
    // and it stopped only when the next estimate no longer fit
    expect(s.spendUsd).toBeGreaterThan(0.5 - est);
    expect(s.budgetPeriodEndsAt).toBeNull();
    expect(await tp.pool.tokens.admit(token, 'm', est)).toEqual({ ok: false, reason: 'budget_exhausted', retryAfterMs: null, id: info.id });
  });

  it('a new budget period starts from zero spend; a reservation from the last period is charged to the new one', async () => {
    const tp = await pool();
    const t = tp.pool.tokens;
    const { token, info } = await t.create({ name: 'daily', budget: { usd: 0.1, period: 'day' } });
    const a = admitted(await t.admit(token, 'm', 0.05));
    const b = admitted(await t.admit(token, 'm', 0.05));
    await t.settle(a.id, a.reservation, 0.05);
    expect(await t.admit(token, 'm', 0.01)).toMatchObject({ ok: false, reason: 'budget_exhausted' });
    // the spend so far becomes yesterday's: Redis time moves on for this token only
    await patchState(tp, info.id, 'st.pid = st.pid - 1');
    let s = (await t.get(info.id))!;
    expect(s.spendUsd).toBe(0);
    expect(s.reservedUsd).toBeCloseTo(0.05, 12); // b is still in flight
    // b was reserved yesterday and settles today: its cost counts today
    await t.settle(b.id, b.reservation, 0.04);
    s = (await t.get(info.id))!;
    expect(s.spendUsd).toBeCloseTo(0.04, 12);
    expect(s.reservedUsd).toBe(0);
    admitted(await t.admit(token, 'm', 0.06));
    expect(await t.admit(token, 'm', 0.01)).toMatchObject({ ok: false, reason: 'budget_exhausted' });
    const now = await redisNow(tp);
    expect(s.budgetPeriodEndsAt).toBe(new Date((Math.floor(now / 86_400_000) + 1) * 86_400_000).toISOString());
  });

  it('reservations not settled by reservationTimeoutMs are reaped and charged their estimate once', async () => {
    const tp = await pool({ reservationTimeoutMs: 1000 });
    const t = tp.pool.tokens;
    const { token, info } = await t.create({ name: 'killed', budget: { usd: 1, period: 'total' } });
    const keys = new PoolKeys(tp.name);
    const a = admitted(await t.admit(token, 'm', 0.4));
    admitted(await t.admit(token, 'm', 0.4));
    const deadline = Number(await tp.redis.zscore(keys.tokRes, a.reservation));
    expect(Math.abs(deadline - (await redisNow(tp)) - 1000)).toBeLessThan(100);
    expect(await t.admit(token, 'm', 0.4)).toMatchObject({ ok: false, reason: 'budget_exhausted', retryAfterMs: 100 });
    await sleep(1100);
    // the admit reaps both (0.8 spent), then fits 0.2
    admitted(await t.admit(token, 'm', 0.2));
    let s = (await t.get(info.id))!;
    expect(s.spendUsd).toBeCloseTo(0.8, 12);
    expect(s.reservedUsd).toBeCloseTo(0.2, 12);
    // the live reservation, and a tombstone of each reaped one (kept a day for a late settle)
    const members = await tp.redis.zrange(keys.tokRes, '0', '-1');
    expect(members).toContain(`reaped:${a.reservation}`);
    expect(members.filter((m) => m.startsWith('reaped:'))).toHaveLength(2);
    expect(members.filter((m) => !m.startsWith('reaped:'))).toHaveLength(1);
    // the request of `a` was still running (a long stream) and ends now: its real cost replaces the
    // estimate the reaper charged, and it counts as a request, once
    await t.settle(a.id, a.reservation, 0.1);
    s = (await t.get(info.id))!;
    expect(s.spendUsd).toBeCloseTo(0.5, 12);
    expect(s.requests).toBe(1);
    // a second settle of the same reservation changes nothing
    await t.settle(a.id, a.reservation, 0.1);
    s = (await t.get(info.id))!;
    expect(s.spendUsd).toBeCloseTo(0.5, 12);
    expect(s.requests).toBe(1);
    await sleep(1100);
    // get reaps too
    s = (await t.get(info.id))!;
    expect(s.spendUsd).toBeCloseTo(0.7, 12);
    expect(s.reservedUsd).toBe(0);
    // only tombstones are left: the other reaped one, and the 0.2 reaped now
    expect((await tp.redis.zrange(keys.tokRes, '0', '-1')).every((m) => m.startsWith('reaped:'))).toBe(true);
    expect(await tp.redis.zcard(keys.tokRes)).toBe(2);
  });

  it('refundRequest gives the request back (once) and does not count it', async () => {
    const tp = await pool();
    const t = tp.pool.tokens;
    const { token, info } = await t.create({ name: 'refund', rpm: 6, rpmBurst: 2, budget: { usd: 1 } });
    const a = admitted(await t.admit(token, 'm', 0.1));
    admitted(await t.admit(token, 'm', 0.1));
    expect(await t.admit(token, 'm', 0.1)).toMatchObject({ ok: false, reason: 'rate_limited' });
    await t.settle(a.id, a.reservation, 0, { refundRequest: true });
    let s = (await t.get(info.id))!;
    expect(s.left.requests).toBe(1);
    expect(s.requests).toBe(0);
    expect(s.reservedUsd).toBeCloseTo(0.1, 12);
    expect(s.lastUsedAt).not.toBeNull();
    // settling it again gives nothing more back
    await t.settle(a.id, a.reservation, 0, { refundRequest: true });
    expect((await t.get(info.id))!.left.requests).toBe(1);
    const c = admitted(await t.admit(token, 'm', 0.1));
    expect(await t.admit(token, 'm', 0.1)).toMatchObject({ ok: false, reason: 'rate_limited' });
    await t.settle(c.id, c.reservation, 0.05);
    s = (await t.get(info.id))!;
    expect(s.requests).toBe(1);
    expect(s.left.requests).toBe(0);
    expect(s.spendUsd).toBeCloseTo(0.05, 12);
  });

  it('another process (a second KeyPool) sees the same token and shares its limits', async () => {
    const a = await pool();
    const b = await pool({ pool: a.name });
    const { token, info } = await a.pool.tokens.create({ name: 'shared', rpm: 60, rpmBurst: 5, budget: { usd: 1 } });
    expect(await b.pool.tokens.get(info.id)).toEqual(await a.pool.tokens.get(info.id));
    expect((await b.pool.tokens.verify(token))!.id).toBe(info.id);
    for (let i = 0; i < 3; i++) admitted(await a.pool.tokens.admit(token, 'm', 0.1));
    const rb = await Promise.all(Array.from({ length: 10 }, () => b.pool.tokens.admit(token, 'm', 0.1)));
    expect(rb.filter((r) => r.ok)).toHaveLength(2);
    expect((await a.pool.tokens.get(info.id))!.reservedUsd).toBeCloseTo(0.5, 12);
    // a reservation made by one process can be settled by another
    await a.pool.tokens.settle(info.id, (rb.find((r) => r.ok) as Admitted).reservation, 0.07);
    expect((await b.pool.tokens.get(info.id))!.spendUsd).toBeCloseTo(0.07, 12);
  });

  it('no Redis value, log line, info or error holds the token or any 8-character piece of it', async () => {
    const tp = await pool({ reservationTimeoutMs: 1000 });
    const t = tp.pool.tokens;
    const made = [
      await t.create({ name: 'one', rpm: 60, rpmBurst: 1, budget: { usd: 0.05, period: 'day' }, models: ['m'] }),
      await t.create({ name: 'two' }),
      await t.create({ name: 'three', budget: { usd: 1, period: 'total' } }),
    ];
    const infos: unknown[] = [made.map((m) => m.info)];
    const errors: string[] = [];
    const [one, two, three] = made.map((m) => m.token) as [string, string, string];
    const x = admitted(await t.admit(one, 'm', 0.01));
    infos.push(await t.admit(one, 'm', 0.01), await t.admit(one, 'other', 0.01), await t.admit(two, 'any', 1e6));
    await t.settle(x.id, x.reservation, 0.02);
    const y = admitted(await t.admit(three, 'm', 0.5));
    await t.settle(y.id, y.reservation, 0, { refundRequest: true });
    await t.settle(y.id, y.reservation, 0); // unknown reservation: logged
    admitted(await t.admit(three, 'm', 0.1)); // left to expire
    await t.revoke(made[1]!.info.id);
    infos.push(await t.admit(two, 'm', 0), await t.verify(one), await t.verify(two));
    await t.settle(made[0]!.info.id, one, 1).catch((e: Error) => errors.push(e.message));
    await t.settle(made[0]!.info.id, `${made[0]!.info.id}:${one}`, 1).catch((e: Error) => errors.push(e.message));
    await t.create({ name: one.slice(0, 100), rpmBurst: 1 } as never).catch((e: Error) => errors.push(e.message));
    expect(errors).toHaveLength(3);
    await sleep(1100);
    infos.push(await t.list());

    const dump = await dumpPool(tp.redis, tp.name);
    const keys = new PoolKeys(tp.name);
    for (const key of [keys.tok, keys.tokId, keys.tokSt]) expect(dump.has(key)).toBe(true);
    const seen = JSON.stringify(infos);
    for (const token of [one, two, three]) {
      for (const f of [token, ...secretFragments(token)]) {
        for (const [key, parts] of dump) {
          for (const part of parts) expect(part.includes(f), `Redis key ${key} holds "${f}"`).toBe(false);
        }
        for (const line of tp.logs) expect(line.includes(f), `log line holds "${f}": ${line}`).toBe(false);
        expect(seen.includes(f), `an info or admission holds "${f}"`).toBe(false);
        for (const m of errors) expect(m.includes(f), `an error holds "${f}"`).toBe(false);
      }
    }
    // what operators see instead
    expect(tp.logs.some((l) => l.includes(made[0]!.info.hint) && l.includes('gateway token created'))).toBe(true);
  });
});

const servers: SpawnedRedis[] = [];
const downPools: KeyPool[] = [];
afterEach(async () => {
  for (const p of downPools.splice(0)) await p.close();
  for (const s of servers.splice(0)) await s.stop().catch(() => undefined);
});

// Each test runs its own redis-server to kill; the cluster project would repeat the same thing.
describe.skipIf(testTarget() === 'cluster')('gateway tokens while Redis is down', () => {
  async function until(cond: () => boolean, ms = 10_000) {
    const end = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > end) throw new Error('condition not met in time');
      await sleep(20);
    }
  }

  it('fail-closed: admit throws RedisUnavailableError; settle is dropped with a warning', async () => {
    const server = await spawnRedisServer();
    servers.push(server);
    const { logger, lines } = memoryLogger();
    const pool = await KeyPool.connect({ redis: server.url, config: { pool: 'tokdown' }, logger });
    downPools.push(pool);
    const downs: Error[] = [];
    pool.on('redis:down', (e) => downs.push(e));
    const { token } = await pool.tokens.create({ name: 'fc', rpm: 60 });
    const a = admitted(await pool.tokens.admit(token, 'm', 0.01));
    server.kill9();
    const err = await pool.tokens.admit(token, 'm', 0.01).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RedisUnavailableError);
    expect((err as Error).message).toMatch(/^Redis unavailable for pool "tokdown" \(.+\); failing closed \(redisDown.policy=fail-closed\)$/);
    expect(downs).toHaveLength(1);
    await pool.tokens.settle(a.id, a.reservation, 0.01);
    expect(lines.some((l) => l.includes('"level":40') && l.includes('gateway token settle dropped'))).toBe(true);
    await expect(pool.tokens.list()).rejects.toBeInstanceOf(RedisUnavailableError);
  });

  it('local: tokens admitted lately keep working with 1/fleetSize of their limits; unknown ones are refused', async () => {
    const server = await spawnRedisServer();
    servers.push(server);
    const { logger, lines } = memoryLogger();
    const pool = await KeyPool.connect({ redis: server.url, config: { pool: 'toklocal', redisDown: { policy: 'local', fleetSize: 2 } }, logger });
    downPools.push(pool);
    const t = pool.tokens;
    const seen = await t.create({ name: 'seen', rpm: 60, rpmBurst: 4, models: ['m'], budget: { usd: 1, period: 'total' } });
    const never = await t.create({ name: 'never' });
    const spent = await t.create({ name: 'spent', budget: { usd: 0.1, period: 'total' } });
    const a = admitted(await t.admit(seen.token, 'm', 0.2));
    admitted(await t.admit(spent.token, 'm', 0.08));
    server.kill9();
    await until(() => !pool.redisAvailable);

    // burst 4 shared by a fleet of 2: this process gets 2
    const l1 = admitted(await t.admit(seen.token, 'm', 0.01));
    expect(l1.reservation).toMatch(new RegExp(`^local:${seen.info.id}:`));
    admitted(await t.admit(seen.token, 'm', 0.01));
    expect(await t.admit(seen.token, 'm', 0.01)).toMatchObject({ ok: false, reason: 'rate_limited', id: seen.info.id });
    expect(await t.admit(seen.token, 'other', 0.01)).toMatchObject({ ok: false, reason: 'model_not_allowed' });
    expect(await t.admit(never.token, 'm', 0)).toEqual({ ok: false, reason: 'unknown', retryAfterMs: null });
    // 0.02 left of the last known budget, half of it for this process
    expect(await t.admit(spent.token, 'm', 0.011)).toEqual({ ok: false, reason: 'budget_exhausted', retryAfterMs: null, id: spent.info.id });
    admitted(await t.admit(spent.token, 'm', 0.01));
    expect((await t.verify(seen.token))!.name).toBe('seen');
    expect(await t.verify(never.token)).toBeNull();
    // settles are dropped, with a warning, and never throw
    await t.settle(a.id, a.reservation, 0.1);
    await t.settle(l1.id, l1.reservation, 0.01, { refundRequest: true });
    expect(lines.some((l) => l.includes('gateway token settle dropped'))).toBe(true);
    admitted(await t.admit(seen.token, 'm', 0.01)); // the refund came back to this process's bucket

    servers.push(await spawnRedisServer({ port: server.port }));
    await until(() => pool.redisAvailable);
    // Redis came back empty: the tokens are gone with it
    await sleep(1100);
    expect(await t.admit(seen.token, 'm', 0.01)).toEqual({ ok: false, reason: 'unknown', retryAfterMs: null });
  });
});
