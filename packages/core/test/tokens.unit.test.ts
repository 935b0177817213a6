/**
 * Gateway tokens without Redis: the per-process fallback of redisDown.policy local (which tokens
 * it still knows, its share of rate and budget, its budget periods) on an injected clock, behind
 * a script runner that answers like the admit script or fails like a Redis that is down.
 */
import { createHash, randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import {
  GatewayTokens,
  PoolKeys,
  RedisUnavailableError,
  budgetPeriodEnd,
  parseGatewayTokenSpec,
  parsePoolConfig,
  tokenHintOf,
  tokenHashOf,
  tokenIdOf,
} from '../src/index.js';

const DAY = 86_400_000;

function setup(opts: { fleetSize?: number; rpm?: number; rb?: number; bud?: number; per?: 'day' | 'month' | 'total'; models?: string[] } = {}) {
  const token = `kpt_${randomBytes(32).toString('base64url')}`;
  const id = tokenIdOf(token);
  const rec = { id, hint: tokenHintOf(token), name: 'unit', rpm: opts.rpm ?? 0, rb: opts.rb ?? 0, bud: opts.bud ?? -1, per: opts.per ?? 'total', models: opts.models ?? [] };
  const state = { up: true, now: Date.UTC(2025, 0, 31, 23, 55), calls: [] as string[], reply: null as unknown[] | null, spent: 0, pend: -1 };
  const tokens = new GatewayTokens({
    keys: new PoolKeys('unit'),
    config: parsePoolConfig({ redisDown: { policy: 'local', fleetSize: opts.fleetSize ?? 1 } }),
    log: pino({ level: 'silent' }),
    now: () => state.now,
    redisAvailable: () => state.up,
    run: async (name, _keys, args) => {
      state.calls.push(name);
      if (!state.up) throw new RedisUnavailableError('Redis unavailable for pool "unit" (test)');
      if (name === 'tokenAdmit') return state.reply ?? [1, id, `${id}:1:${args[2]}`, args[5] === '1' ? JSON.stringify(rec) : '', state.spent, args[2], state.pend];
      return [1];
    },
  });
  return { tokens, token, id, state };
}

describe('gateway tokens: per-process fallback (policy local)', () => {
  it('admits only tokens Redis admitted in the last 10 minutes; others are unknown', async () => {
    const { tokens, token, id, state } = setup();
    const other = `kpt_${randomBytes(32).toString('base64url')}`;
    expect(await tokens.admit(token, 'm', 0)).toMatchObject({ ok: true, id, name: 'unit' });
    state.up = false;
    state.now += 10 * 60_000;
    const local = await tokens.admit(token, 'm', 0);
    expect(local).toMatchObject({ ok: true, id, name: 'unit' });
    expect(local.ok && local.reservation).toMatch(new RegExp(`^local:${id}:[0-9a-f]{12}:0$`));
    expect(await tokens.admit(other, 'm', 0)).toEqual({ ok: false, reason: 'unknown', retryAfterMs: null });
    state.now += 1;
    expect(await tokens.admit(token, 'm', 0)).toEqual({ ok: false, reason: 'unknown', retryAfterMs: null });
  });

  it('tries Redis again at most once a second while it is down', async () => {
    const { tokens, token, state } = setup();
    await tokens.admit(token, 'm', 0);
    state.up = false;
    state.calls.length = 0;
    for (let i = 0; i < 5; i++) await tokens.admit(token, 'm', 0);
    expect(state.calls).toEqual(['tokenAdmit']);
    state.now += 1000;
    await tokens.admit(token, 'm', 0);
    await tokens.settle(tokenIdOf(token), `${tokenIdOf(token)}:1:0`, 0); // dropped, no call
    expect(state.calls).toEqual(['tokenAdmit', 'tokenAdmit']);
  });

  it('takes 1/fleetSize of the request bucket and refills at 1/fleetSize of the rate', async () => {
    const { tokens, token, state } = setup({ fleetSize: 4, rpm: 120, rb: 8 });
    await tokens.admit(token, 'm', 0);
    state.up = false;
    expect((await tokens.admit(token, 'm', 0)).ok).toBe(true);
    expect((await tokens.admit(token, 'm', 0)).ok).toBe(true);
    // 120/min over 4 processes: one request every 2 s
    expect(await tokens.admit(token, 'm', 0)).toMatchObject({ ok: false, reason: 'rate_limited', retryAfterMs: 2000 });
    state.now += 1500;
    expect(await tokens.admit(token, 'm', 0)).toMatchObject({ ok: false, reason: 'rate_limited', retryAfterMs: 500 });
    state.now += 500;
    expect((await tokens.admit(token, 'm', 0)).ok).toBe(true);
  });

  it('keeps checking models, and refuses a token Redis said was revoked', async () => {
    const { tokens, token, id, state } = setup({ models: ['a'] });
    await tokens.admit(token, 'a', 0);
    state.reply = [0, 'revoked', -1, id];
    expect(await tokens.admit(token, 'a', 0)).toEqual({ ok: false, reason: 'revoked', retryAfterMs: null, id });
    state.up = false;
    expect(await tokens.admit(token, 'a', 0)).toMatchObject({ ok: false, reason: 'unknown' });
    const fresh = setup({ models: ['a'] });
    await fresh.tokens.admit(fresh.token, 'a', 0);
    fresh.state.up = false;
    expect(await fresh.tokens.admit(fresh.token, 'b', 0)).toEqual({ ok: false, reason: 'model_not_allowed', retryAfterMs: null, id: fresh.id });
  });

  it('spends at most 1/fleetSize of the budget left when Redis was last seen, until the period ends', async () => {
    // $1 a day, $0.6 spent or reserved when Redis went away, 2 processes: this one may spend $0.2
    const { tokens, token, id, state } = setup({ fleetSize: 2, bud: 1e9, per: 'day' });
    state.spent = 0.5e9;
    state.pend = budgetPeriodEnd('day', state.now);
    await tokens.admit(token, 'm', 0.1);
    state.up = false;
    const a = await tokens.admit(token, 'm', 0.15);
    expect(a.ok).toBe(true);
    expect(await tokens.admit(token, 'm', 0.1)).toEqual({ ok: false, reason: 'budget_exhausted', retryAfterMs: 5 * 60_000, id });
    // a settle for less frees the difference in this process's view
    if (a.ok) await tokens.settle(id, a.reservation, 0.05);
    expect((await tokens.admit(token, 'm', 0.1)).ok).toBe(true);
    expect((await tokens.admit(token, 'm', 0.1)).ok).toBe(false);
    // midnight UTC: a new day, a whole share again
    state.now = state.pend;
    for (let i = 0; i < 5; i++) expect((await tokens.admit(token, 'm', 0.1)).ok).toBe(true);
    expect(await tokens.admit(token, 'm', 0.1)).toMatchObject({ ok: false, reason: 'budget_exhausted', retryAfterMs: DAY });
  });

  it('fail-closed: admit throws the pool error; settle never does', async () => {
    const tokens = new GatewayTokens({
      keys: new PoolKeys('unit'),
      config: parsePoolConfig({}),
      log: pino({ level: 'silent' }),
      redisAvailable: () => false,
      run: async () => {
        throw new RedisUnavailableError('Redis unavailable for pool "unit" (test)');
      },
    });
    const token = `kpt_${randomBytes(32).toString('base64url')}`;
    await expect(tokens.admit(token, 'm', 0)).rejects.toBeInstanceOf(RedisUnavailableError);
    await expect(tokens.settle(tokenIdOf(token), `${tokenIdOf(token)}:3:100`, 0)).resolves.toBeUndefined();
  });
});

describe('gateway tokens: helpers', () => {
  it('budgetPeriodEnd matches the UTC periods of the Lua scripts', () => {
    const t = Date.UTC(2024, 1, 29, 13, 5); // leap day
    expect(budgetPeriodEnd('day', t)).toBe(Date.UTC(2024, 2, 1));
    expect(budgetPeriodEnd('month', t)).toBe(Date.UTC(2024, 2, 1));
    expect(budgetPeriodEnd('month', Date.UTC(2024, 11, 31, 23, 59))).toBe(Date.UTC(2025, 0, 1));
    expect(budgetPeriodEnd('total', t)).toBe(-1);
  });

  it('spec defaults: no rate limit, no budget, every model, weight 1, no critical; budget period month', () => {
    expect(parseGatewayTokenSpec({ name: 'x' })).toEqual({ name: 'x', rpm: 0, models: [], weight: 1, allowCritical: false });
    expect(() => parseGatewayTokenSpec({ name: 'x', weight: 0 })).toThrow(/weight/);
    expect(parseGatewayTokenSpec({ name: 'x', budget: { usd: 2 } }).budget).toEqual({ usd: 2, period: 'month' });
  });

  it('ids and hints', () => {
    const token = `kpt_${'a'.repeat(39)}WXYZ`;
    expect(tokenHintOf(token)).toBe('kpt_...WXYZ');
    expect(tokenIdOf(token)).toMatch(/^[0-9a-f]{12}$/);
  });
});

describe('tokenHashOf', () => {
  it('is the sha256 hex of the token (what Redis and the config know it by), with the one-shot digest or without', () => {
    for (const token of ['kpt_' + 'a'.repeat(43), `kpt_${randomBytes(32).toString('base64url')}`, 'ünïcödé']) {
      expect(tokenHashOf(token)).toBe(createHash('sha256').update(token).digest('hex'));
    }
    expect(tokenHashOf('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });
});
