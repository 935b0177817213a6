/**
 * Kept states (includes/common.lua): the scripts keep the key and token states they saved, decoded,
 * with the bytes they saved, and hand the table to the next script that reads those same bytes
 * instead of decoding them again. This file runs with KEYPOOL_VERIFY_STATE_CACHE=1: every kept
 * table handed out is compared with a fresh decode of its bytes, and a difference fails the call.
 */
import { describe, expect, it } from 'vitest';
import { PoolKeys, keyIdOf, type Lease, type Outcome } from '../src/index.js';
import { keypoolLibrary } from '../src/scripts.js';
import { fakeSecret, poolsClosedAfterAll } from './helpers.js';

// before any pool loads the scripts (they are read at the first connect)
process.env.KEYPOOL_VERIFY_STATE_CACHE = '1';

const pool = poolsClosedAfterAll();
const MODEL = 'gpt-4o-mini';

describe('kept states', () => {
  it('a state written by another hand is read as written, not as kept', async () => {
    const secret = fakeSecret('kept');
    const tp = await pool({ keys: [{ secret, models: [MODEL], rpm: 6000 }] });
    const id = keyIdOf(secret);
    // a lease and its release: the release saved the state, so it is kept
    const l = await tp.pool.acquire({ model: MODEL, estimatedTokens: 10 });
    if (!l.ok) throw new Error(`expected a lease, got ${JSON.stringify(l)}`);
    await l.release({ status: 200, latencyMs: 20 });
    // another hand (here: a script of its own, in Redis's other Lua VM) disables the key in its state
    // bytes, without telling anyone
    const st = new PoolKeys(tp.name).st;
    await tp.redis.eval("local s = cmsgpack.unpack(redis.call('HGET', KEYS[1], ARGV[1])); s.adm = 'disabled'; redis.call('HSET', KEYS[1], ARGV[1], cmsgpack.pack(s)); return 1", 1, st, id);
    // the next acquire reads those bytes: the key is disabled (a table kept from before would say active)
    const r = await tp.pool.acquire({ model: MODEL, estimatedTokens: 10 });
    expect(r).toMatchObject({ ok: false, reason: 'unavailable' });
  });

  it('leases, reservations, failures, breakers, budgets and gateway tokens: every kept table equals its bytes', async () => {
    expect(keypoolLibrary().code).toContain('local VERIFY_STATE_CACHE = true');
    const keys = [
      // a windowed key: requests reserve places ahead
      { secret: fakeSecret('kw'), models: [MODEL], rpm: 600, window: 1 },
      // a bucket with a token limit counting usage
      { secret: fakeSecret('kb'), models: [MODEL], rpm: 6000, tpm: 600_000, tpmCounts: 'usage' as const },
      // a small concurrency cap and a budget
      { secret: fakeSecret('kc'), models: [MODEL], rpm: 6000, maxConcurrent: 2, budget: { usd: 50, period: 'day' as const } },
    ];
    const tp = await pool({ keys, breaker: { failures: 3, cooldownMs: 200 } });
    const { token } = await tp.pool.tokens.create({ name: 'kept', rpm: 6000, budget: { usd: 100, period: 'month' } });
    const outcomes: Outcome[] = [
      { status: 200, latencyMs: 30, usage: { promptTokens: 50, completionTokens: 20 } },
      { status: 200, latencyMs: 900 },
      { status: 429, latencyMs: 10, headers: { 'retry-after-ms': '50' } },
      { status: 500, latencyMs: 15 },
      { status: 400, latencyMs: 5 },
      { error: 'aborted' },
      { error: 'unused' },
      { error: 'timeout' },
      { status: 200, latencyMs: 40, headers: { 'x-ratelimit-limit-requests': '1200', 'x-ratelimit-remaining-requests': '1100' } },
    ];
    let leased = 0;
    let refused = 0;
    /** Refusals by reason (shown if too few were leased). */
    const reasons: Record<string, number> = {};
    const errors: string[] = [];
    const worker = async (w: number) => {
      for (let i = 0; i < 40; i++) {
        try {
          const withToken = (i + w) % 3 === 0;
          const r = await tp.pool.acquire({
            model: MODEL,
            estimatedTokens: 100,
            estimatedOutputTokens: 50,
            maxWaitMs: 1000,
            ...(withToken ? { admit: { token, estimatedCostUsd: 0.001 } } : {}),
          });
          if (!r.ok) {
            refused++;
            reasons[r.reason] = (reasons[r.reason] ?? 0) + 1;
            continue;
          }
          leased++;
          const lease: Lease = r;
          const outcome = outcomes[(i * 7 + w) % outcomes.length]!;
          await lease.release(outcome, lease.admission ? { settle: { admission: lease.admission } } : undefined);
        } catch (e) {
          errors.push((e as Error).message);
        }
      }
    };
    await Promise.all(Array.from({ length: 6 }, (_, w) => worker(w)));
    // status and token reads go through the same loads
    await tp.pool.status();
    await tp.pool.tokens.list();
    expect(errors).toEqual([]);
    // most are leased: the workload is the scripts' paths, not refusals (239 and 240 of 240 here)
    expect(leased, JSON.stringify(reasons)).toBeGreaterThan(150);
    expect(leased + refused).toBe(240);
  }, 60_000);

  it('a pool larger than what is kept: the generations turn over, and a state written by hand is read as written from either generation', async () => {
    // 150 keys and 8 callers: far more states are saved than one generation keeps (64), so tables
    // move to the older generation and are dropped from it while leases come and go
    const keys = Array.from({ length: 150 }, (_, i) => ({ secret: fakeSecret(`many${i}`), models: [MODEL], rpm: 60_000 }));
    const tp = await pool({ keys });
    const errors: string[] = [];
    const used = new Map<string, number>();
    const leases = async (n: number) => {
      const worker = async () => {
        for (let i = 0; i < n; i++) {
          try {
            const r = await tp.pool.acquire({ model: MODEL, estimatedTokens: 10, maxWaitMs: 1000 });
            if (!r.ok) throw new Error(`refused: ${r.reason}`);
            used.set(r.keyId, (used.get(r.keyId) ?? 0) + 1);
            await r.release({ status: 200, latencyMs: 20 + (i % 7), usage: { promptTokens: 10, completionTokens: 5 } });
          } catch (e) {
            errors.push((e as Error).message);
          }
        }
      };
      await Promise.all(Array.from({ length: 8 }, () => worker()));
    };
    await leases(60);
    expect(errors).toEqual([]);
    // most keys were leased: the states went through the generations (480 leases on 150 keys)
    expect(used.size).toBeGreaterThan(100);

    // the states of other pools are kept beside these: a state saved some saves ago may be in the
    // newer generation, in the older one, or dropped. For growing numbers of saves in between, a
    // 1-key pool's state is saved, then written by another hand (disabled), then read: the key must
    // read as disabled wherever its table was (other test files' saves on this Redis only shift
    // where: the sweep covers both generations and past them; on a Cluster the two pools may sit
    // on different shards, each with its own kept tables)
    for (const between of [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96]) {
      const secret = fakeSecret(`gen${between}`);
      const one = await pool({ keys: [{ secret, models: [MODEL], rpm: 60_000 }] });
      const l = await one.pool.acquire({ model: MODEL, estimatedTokens: 10 });
      if (!l.ok) throw new Error(`expected a lease, got ${JSON.stringify(l)}`);
      await l.release({ status: 200, latencyMs: 20 });
      // about two saves per lease (its acquire's and its release's) of the large pool's keys
      for (let i = 0; i < between; i++) {
        const r = await tp.pool.acquire({ model: MODEL, estimatedTokens: 10 });
        if (!r.ok) throw new Error(`refused: ${r.reason}`);
        await r.release({ status: 200, latencyMs: 20 });
      }
      await one.redis.eval("local s = cmsgpack.unpack(redis.call('HGET', KEYS[1], ARGV[1])); s.adm = 'disabled'; redis.call('HSET', KEYS[1], ARGV[1], cmsgpack.pack(s)); return 1", 1, new PoolKeys(one.name).st, keyIdOf(secret));
      const r = await one.pool.acquire({ model: MODEL, estimatedTokens: 10 });
      expect(r, `${between} leases of other keys in between`).toMatchObject({ ok: false, reason: 'unavailable' });
    }
  }, 60_000);
  it('classes that keep a share free: the candidates acquire judges and does not choose are kept as their bytes decode', async () => {
    // low requests judged with a share kept free, spread and headroom (evaluateKept, spacedStart,
    // leaveRoom change a candidate while judging it, then put it back), beside normal ones, on
    // windowed keys and a budgeted bucket: every candidate not chosen is kept again, and VERIFY
    // compares it with its bytes at its next read
    const keys = [
      ...[0, 1, 2].map((i) => ({ secret: fakeSecret(`cw${i}`), models: [MODEL], rpm: 1200, window: 1 })),
      { secret: fakeSecret('cb'), models: [MODEL], rpm: 6000, tpm: 600_000, budget: { usd: 50, period: 'day' as const } },
    ];
    const tp = await pool({ keys, priority: { keepFree: { low: 0.3, normal: 0.1 }, headroom: { low: 1 }, higherWaitedMs: 2000, reserveAheadMs: 300, spread: true } });
    const errors: string[] = [];
    let leased = 0;
    const worker = async (w: number) => {
      for (let i = 0; i < 30; i++) {
        try {
          const priority = (['low', 'normal', 'critical'] as const)[(i + w) % 3]!;
          const r = await tp.pool.acquire({ model: MODEL, estimatedTokens: 100, priority, maxWaitMs: 400 });
          if (!r.ok) continue;
          leased++;
          await r.release({ status: 200, latencyMs: 20 + i, usage: { promptTokens: 60, completionTokens: 20 } });
        } catch (e) {
          errors.push((e as Error).message);
        }
      }
    };
    await Promise.all(Array.from({ length: 6 }, (_, w) => worker(w)));
    expect(errors).toEqual([]);
    expect(leased).toBeGreaterThan(60);
  }, 60_000);

  it('percentiles are computed again after another version turned the health window over', async () => {
    const secret = fakeSecret('hk');
    const tp = await pool({ keys: [{ secret, models: [MODEL], rpm: 60_000 }] });
    for (let i = 0; i < 30; i++) {
      const l = await tp.pool.acquire({ model: MODEL, estimatedTokens: 10 });
      if (!l.ok) throw new Error(`expected a lease, got ${JSON.stringify(l)}`);
      await l.release({ status: 200, latencyMs: 20 });
    }
    // what an older version's release does when two windows have passed: empty histograms, a new
    // window start, and the percentiles' bookkeeping it does not know left as it was (here: counted
    // on a busy window)
    await tp.redis.eval(
      "local s = cmsgpack.unpack(redis.call('HGET', KEYS[1], ARGV[1])); local e = string.rep('\\0', #s.hc); s.hc, s.hp, s.hn, s.he, s.hpn, s.hpe = e, e, 0, 0, 0, 0; s.hw = s.hw + 1; s.hq, s.ht = 0, 100000; redis.call('HSET', KEYS[1], ARGV[1], cmsgpack.pack(s)); return 1",
      1,
      new PoolKeys(tp.name).st,
      keyIdOf(secret),
    );
    for (let i = 0; i < 5; i++) {
      const l = await tp.pool.acquire({ model: MODEL, estimatedTokens: 10 });
      if (!l.ok) throw new Error(`expected a lease, got ${JSON.stringify(l)}`);
      await l.release({ status: 200, latencyMs: 1500 });
    }
    const s = (await tp.pool.status()).keys[0]!;
    expect(s.latency!.p99Ms).toBeGreaterThan(1300);
  });
});
