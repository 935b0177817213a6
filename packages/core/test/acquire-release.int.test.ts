import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { spawnRedisServer, uniqueName } from '@keypool/testkit';
import {
  KeyPool,
  PoolKeys,
  groupOf,
  RequestTooLargeError,
  UnknownModelError,
  isUnknownModel,
  keyIdOf,
  type Lease,
  type Outcome,
} from '../src/index.js';
import { dumpPool, fakeSecret, memoryLogger, sleep, poolsClosedAfterAll } from './helpers.js';

const pool = poolsClosedAfterAll();

function lease(r: Awaited<ReturnType<KeyPool['acquire']>>): Lease {
  if (!r.ok) throw new Error(`expected a lease, got ${JSON.stringify(r)}`);
  return r;
}

describe('acquire and release', () => {
  it('leases a key with its secret, records the lease in Redis and removes it on release', async () => {
    const secret = fakeSecret('basic');
    const { pool: p, redis, name } = await pool({ keys: [{ secret, models: ['gpt-4o-mini'], rpm: 600, tpm: 10_000, tpmCounts: 'usage' }] });
    const keys = new PoolKeys(name);
    const l = lease(await p.acquire({ model: 'gpt-4o-mini', estimatedTokens: 500, estimatedOutputTokens: 100 }));
    expect(l.secret).toBe(secret);
    expect(l.keyId).toBe(keyIdOf(secret));
    expect(l.hint).toMatch(/^sk-\.\.\..{4}$/);
    expect(l.deadline - l.acquiredAt).toBe(30_000);
    // the lease is in the leases zset scored by its deadline, with a record of what it took
    // scores are whole milliseconds
    expect(Math.abs(Number(await redis.zscore(keys.leases, l.id)) - l.deadline)).toBeLessThan(1);
    // the lease member itself says what it took: sequence, key, tokens, nano-dollars, its start
    // (Redis time, us) and its place in the key's enforcement windows (a new one: its sequence)
    const [seq, , , , startUs, slot] = l.id.split(':');
    expect(l.id).toBe(`${seq}:${l.keyId}:500:${Math.round(l.estimatedCostUsd * 1e9)}:${startUs}:${seq}`);
    expect(slot).toBe(seq);
    expect(Math.abs(Number(startUs) / 1000 - l.acquiredAt)).toBeLessThan(1);
    // pool state has no TTL: it must outlive idle periods
    expect(await redis.pttl(keys.cfg)).toBe(-1);
    expect(await redis.pttl(keys.st)).toBe(-1);
    // the secret is not enumerable: it never reaches JSON or logs by accident
    expect(JSON.stringify(l)).not.toContain(secret);

    let s = (await p.status()).keys[0]!;
    const sinceMs = Date.now() - l.acquiredAt;
    expect(s.inFlight).toBe(1);
    // 500 taken; the bucket refills at 10,000/min while we look (on a loaded machine the look takes
    // over 60 ms, and once 600: the bound follows the time gone, not a fixed number of tokens)
    expect(s.left!.tokens).toBeGreaterThanOrEqual(s.limits.tpmBurst - 500);
    expect(s.left!.tokens).toBeLessThan(s.limits.tpmBurst - 500 + Math.max(1, (sinceMs + 1) * (10_000 / 60_000)));
    expect(sinceMs).toBeLessThan(2500); // the 500 come back in 3 s: past that the bucket may be full again and the check says nothing
    expect(s.reservedUsd).toBeCloseTo(400 * 0.15e-6 + 100 * 0.6e-6, 12);

    const r = await l.release({ status: 200, latencyMs: 80, usage: { promptTokens: 300, completionTokens: 50 } });
    expect(r).toMatchObject({ released: true, keyState: 'active', breaker: 'closed', transition: '' });
    expect(r.costUsd).toBeCloseTo(300 * 0.15e-6 + 50 * 0.6e-6, 12);
    expect(await redis.zscore(keys.leases, l.id)).toBeNull();

    s = (await p.status()).keys[0]!;
    expect(s.inFlight).toBe(0);
    expect(s.reservedUsd).toBe(0);
    expect(s.spendUsd).toBeCloseTo(r.costUsd, 12);
    // unused estimate (500 - 350) came back to the bucket
    expect(s.left!.tokens).toBeGreaterThanOrEqual(s.limits.tpmBurst - 350);
    // a second release is a no-op, not a second refund
    expect(await l.release({ status: 200, latencyMs: 80 })).toBe(r);
  });

  it('extend keeps the lease of a long call from being reaped', async () => {
    const { pool: p } = await pool({ leaseTimeoutMs: 1000, keys: [{ secret: fakeSecret('ext'), models: ['m'], maxConcurrent: 1 }] });
    const l = lease(await p.acquire({ model: 'm' }));
    await sleep(600);
    expect(await l.extend(1500)).toBe(true);
    await sleep(700); // past the first deadline
    expect(await p.acquire({ model: 'm' })).toMatchObject({ ok: false, reason: 'concurrency' });
    expect((await l.release({ status: 200 })).released).toBe(true);
    expect(await l.extend()).toBe(false);
    expect((await p.acquire({ model: 'm' })).ok).toBe(true);
  });

  it('tpmCounts: estimate (OpenAI, the default for provider openai) gives nothing back; usage beyond it is a debt', async () => {
    const { pool: p } = await pool({ keys: [{ secret: fakeSecret('est'), models: ['m'], tpm: 6, tpmBurst: 1000 }] });
    expect((await p.status()).keys[0]!.left!.tokens).toBe(1000);
    await lease(await p.acquire({ model: 'm', estimatedTokens: 500 })).release({ status: 200, usage: { promptTokens: 50, completionTokens: 50 } });
    expect((await p.status()).keys[0]!.left!.tokens).toBe(500); // refill is 1 token per 10 s
    await lease(await p.acquire({ model: 'm', estimatedTokens: 100 })).release({ status: 200, usage: { promptTokens: 150, completionTokens: 50 } });
    expect((await p.status()).keys[0]!.left!.tokens).toBe(300);
  });

  it('rejects unknown models and requests larger than any token bucket', async () => {
    const { pool: p } = await pool({ keys: [{ secret: fakeSecret('m'), models: ['gpt-4o'], tpm: 6000, tpmBurst: 2000 }] });
    const err = await p.acquire({ model: 'gpt-9' }).catch((e) => e);
    expect(err).toBeInstanceOf(UnknownModelError);
    expect(isUnknownModel(err)).toBe(true);
    expect(err.message).toBe('no key in the pool serves model "gpt-9"; models served: gpt-4o');
    const big = await p.acquire({ model: 'gpt-4o', estimatedTokens: 2001 }).catch((e) => e);
    expect(big).toBeInstanceOf(RequestTooLargeError);
    expect(big.message).toContain('raise tpmBurst');
    expect((await p.acquire({ model: 'gpt-4o', estimatedTokens: 2000 })).ok).toBe(true);
  });

  it('says when the request bucket refills, and waits for it when asked', async () => {
    // 60 rpm, burst 2: two at once, then one per second
    const { pool: p } = await pool({ keys: [{ secret: fakeSecret('rpm'), models: ['m'], rpm: 60, rpmBurst: 2 }] });
    lease(await p.acquire({ model: 'm' }));
    lease(await p.acquire({ model: 'm' }));
    const no = await p.acquire({ model: 'm' });
    expect(no).toMatchObject({ ok: false, reason: 'rate_limited' });
    if (no.ok) return;
    expect(no.retryAfterMs).toBeGreaterThan(900);
    expect(no.retryAfterMs).toBeLessThanOrEqual(1001); // wait-set scores are whole ms
    const t0 = Date.now();
    const waited = lease(await p.acquire({ model: 'm', maxWaitMs: 3000 }));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    expect(waited.ok).toBe(true);
    // a wait shorter than the refill returns at once with the same answer
    const t1 = Date.now();
    expect(await p.acquire({ model: 'm', maxWaitMs: 100 })).toMatchObject({ ok: false, reason: 'rate_limited' });
    expect(Date.now() - t1).toBeLessThan(100);
  });

  it('an aborted wait rejects with the signal reason', async () => {
    const { pool: p } = await pool({ keys: [{ secret: fakeSecret('abort'), models: ['m'], rpm: 6, rpmBurst: 1 }] });
    lease(await p.acquire({ model: 'm' }));
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('caller gave up')), 50);
    await expect(p.acquire({ model: 'm', maxWaitMs: 20_000, signal: ac.signal })).rejects.toThrow('caller gave up');
  });

  it('concurrency slots: a full key is skipped and comes back as soon as a lease is released', async () => {
    const { pool: p } = await pool({ keys: [{ secret: fakeSecret('mc'), models: ['m'], maxConcurrent: 2 }] });
    const a = lease(await p.acquire({ model: 'm' }));
    lease(await p.acquire({ model: 'm' }));
    expect(await p.acquire({ model: 'm' })).toMatchObject({ ok: false, reason: 'concurrency' });
    await a.release({ status: 200, latencyMs: 10 });
    // no waiting for a recheck: the release puts the key back at once
    expect((await p.acquire({ model: 'm' })).ok).toBe(true);
  });

  it('excluded keys are not leased (failover to another key)', async () => {
    const s1 = fakeSecret('x1');
    const s2 = fakeSecret('x2');
    const { pool: p } = await pool({ keys: [{ secret: s1, models: ['m'] }, { secret: s2, models: ['m'] }] });
    for (let i = 0; i < 20; i++) {
      const l = lease(await p.acquire({ model: 'm', exclude: [keyIdOf(s1)] }));
      expect(l.keyId).toBe(keyIdOf(s2));
      await l.release({ status: 200, latencyMs: 5 });
    }
    expect(await p.acquire({ model: 'm', exclude: [keyIdOf(s1), keyIdOf(s2)] })).toMatchObject({ ok: false, reason: 'unavailable', retryAfterMs: null });
  });

  it('keys serving several models are shared between the models, and a model served by two groups sees both', async () => {
    const a = fakeSecret('ga');
    const b = fakeSecret('gb');
    const { pool: p } = await pool({
      keys: [
        { secret: a, models: ['gpt-4o', 'gpt-4o-mini'], rpm: 60, rpmBurst: 1 },
        { secret: b, models: ['gpt-4o-mini'], rpm: 60, rpmBurst: 1 },
      ],
    });
    const l1 = lease(await p.acquire({ model: 'gpt-4o-mini' }));
    const l2 = lease(await p.acquire({ model: 'gpt-4o-mini' }));
    expect(new Set([l1.keyId, l2.keyId])).toEqual(new Set([keyIdOf(a), keyIdOf(b)]));
    // key a spent its only token on gpt-4o-mini: gpt-4o has nothing left either
    expect(await p.acquire({ model: 'gpt-4o' })).toMatchObject({ ok: false, reason: 'rate_limited' });
  });
});

describe('429, 401 and client errors', () => {
  it('429 cools the key for its Retry-After (not the longer x-ratelimit-reset-*), never shortening the current deadline', async () => {
    const { pool: p } = await pool({ keys: [{ secret: fakeSecret('cool'), models: ['m'] }] });
    const l = lease(await p.acquire({ model: 'm' }));
    // the deadline is the release's time + 2 s: bounded by the clock read before and after the call
    // (not by the clock at the next read, which a busy machine may delay by more than the margins)
    const t0 = Date.now();
    const r = await l.release({ status: 429, latencyMs: 5, headers: { 'retry-after': '2', 'x-ratelimit-reset-tokens': '3s', 'x-ratelimit-reset-requests': '500ms' } });
    const t1 = Date.now();
    expect(r.transition).toBe('cooling');
    let st = await p.status();
    expect(st.keys[0]!.state).toBe('cooling');
    const until = Date.parse(st.keys[0]!.coolingUntil!);
    expect(until - t0).toBeGreaterThan(1500); // not reset-requests' 500 ms
    expect(until - t1).toBeLessThanOrEqual(2000); // retry-after 2 s, not reset-tokens 3 s
    const t2 = Date.now();
    const no = await p.acquire({ model: 'm' });
    expect(no).toMatchObject({ ok: false, reason: 'cooling' });
    // told to come back at the deadline (ms are rounded up: 1 ms of slack)
    expect(!no.ok && no.retryAfterMs).toBeGreaterThanOrEqual(until - Date.now() - 1);
    expect(!no.ok && no.retryAfterMs).toBeLessThanOrEqual(until - t2 + 1);

    // a later 429 asking for less does not shorten the deadline already set
    await p.resetKey(st.keys[0]!.id); // fresh cooling
    const l2 = lease(await p.acquire({ model: 'm' }));
    const l3 = lease(await p.acquire({ model: 'm' }));
    const t3 = Date.now();
    await l2.release({ status: 429, headers: { 'retry-after-ms': '4000' } });
    await l3.release({ status: 429, headers: { 'retry-after': '1' } });
    const t4 = Date.now();
    st = await p.status();
    // 4 s from l2's release; l3's 1 s would end by t4 + 1000
    expect(Date.parse(st.keys[0]!.coolingUntil!) - t3).toBeGreaterThanOrEqual(4000);
    expect(Date.parse(st.keys[0]!.coolingUntil!) - t4).toBeGreaterThan(1000);
  });

  it('a 429 without headers cools for cooling.defaultMs and the key comes back after it', async () => {
    const { pool: p } = await pool({ cooling: { defaultMs: 300 }, keys: [{ secret: fakeSecret('cd'), models: ['m'] }] });
    await lease(await p.acquire({ model: 'm' })).release({ status: 429 });
    expect(await p.acquire({ model: 'm' })).toMatchObject({ ok: false, reason: 'cooling' });
    expect((await p.acquire({ model: 'm', maxWaitMs: 2000 })).ok).toBe(true);
  });

  it('a 429 with only x-ratelimit-reset-* cools for that time, at most cooling.defaultMs', async () => {
    const { pool: p } = await pool({ cooling: { defaultMs: 400 }, keys: [{ secret: fakeSecret('rst'), models: ['m'] }] });
    const l = lease(await p.acquire({ model: 'm' }));
    const t0 = Date.now();
    await l.release({ status: 429, headers: { 'x-ratelimit-reset-tokens': '6m0s', 'x-ratelimit-remaining-tokens': '0' } });
    const t1 = Date.now();
    const until = Date.parse((await p.status()).keys[0]!.coolingUntil!);
    expect(until - t0).toBeGreaterThanOrEqual(400); // cooling.defaultMs from the release
    expect(until - t1).toBeLessThanOrEqual(400); // not 6 minutes
  });

  it('401/403 revoke the key until an operator enables it', async () => {
    const { pool: p, logs } = await pool({ keys: [{ secret: fakeSecret('rev'), models: ['m'] }] });
    const l = lease(await p.acquire({ model: 'm' }));
    expect((await l.release({ status: 401, latencyMs: 20 })).transition).toBe('revoked');
    expect((await p.status()).keys[0]!.state).toBe('revoked');
    expect(await p.acquire({ model: 'm', maxWaitMs: 1000 })).toEqual({ ok: false, reason: 'unavailable', retryAfterMs: null });
    expect(logs.some((line) => line.includes('"transition":"revoked"'))).toBe(true);
    await p.enableKey(l.keyId);
    const again = lease(await p.acquire({ model: 'm' }));
    expect(again.keyId).toBe(l.keyId);
    expect((await again.release({ status: 403 })).transition).toBe('revoked');
  });

  it('400-class client errors do not hurt the key', async () => {
    const { pool: p } = await pool({ breaker: { failures: 2 }, health: { minRequests: 5 }, keys: [{ secret: fakeSecret('4xx'), models: ['m'] }] });
    for (const status of [400, 404, 422, 400, 404, 422, 400]) {
      await lease(await p.acquire({ model: 'm' })).release({ status, latencyMs: 30 });
    }
    const s = (await p.status()).keys[0]!;
    expect(s.state).toBe('active');
    expect(s.breaker!.state).toBe('closed');
    expect(s.errorRate).toBe(0);
    expect(s.degraded).toBe(false);
  });
});

describe('circuit breaker', () => {
  const breaker = { failures: 3, cooldownMs: 400, maxCooldownMs: 10_000, minRequests: 1000 };

  it('opens after N consecutive failures; half-open admits one probe; a failed probe reopens for longer; a good one closes', async () => {
    // a cooldown long enough that a loaded host's status() read between the opening and the next
    // acquire does not outlast it (400 ms did, once, in CI)
    const { pool: p } = await pool({ breaker: { ...breaker, cooldownMs: 1500 }, keys: [{ secret: fakeSecret('br'), models: ['m'] }] });
    const kinds = [{ status: 500 }, { error: 'timeout' as const }, { error: 'broken_stream' as const }];
    let last;
    for (const o of kinds) last = await lease(await p.acquire({ model: 'm' })).release({ ...o, latencyMs: 10 });
    expect(last!.transition).toBe('opened');
    const st = (await p.status()).keys[0]!;
    expect(st.state).toBe('open');
    expect(st.breaker!.opens).toBe(1);
    const no = await p.acquire({ model: 'm' });
    expect(no).toMatchObject({ ok: false, reason: 'circuit_open' });
    expect(!no.ok && no.retryAfterMs).toBeLessThanOrEqual(1501);

    const probe = lease(await p.acquire({ model: 'm', maxWaitMs: 3000 }));
    expect(probe.probe).toBe(true);
    // only the probe goes through while it is out
    expect(await p.acquire({ model: 'm' })).toMatchObject({ ok: false, reason: 'circuit_open' });
    expect((await probe.release({ status: 502, latencyMs: 10 })).transition).toBe('reopened');
    const reopened = (await p.status()).keys[0]!;
    expect(reopened.breaker!.opens).toBe(2);
    // the cooldown doubled: ~3 s
    expect(Date.parse(reopened.breaker!.openUntil!) - Date.now()).toBeGreaterThan(2000);

    const probe2 = lease(await p.acquire({ model: 'm', maxWaitMs: 5000 }));
    expect(probe2.probe).toBe(true);
    expect((await probe2.release({ status: 200, latencyMs: 10 })).transition).toBe('closed');
    expect((await p.status()).keys[0]!.state).toBe('active');
    const normal = lease(await p.acquire({ model: 'm' }));
    expect(normal.probe).toBe(false);
  });

  it('exactly one probe is admitted fleet-wide, across many clients at once', async () => {
    const secret = fakeSecret('probe');
    const first = await pool({ breaker, keys: [{ secret, models: ['m'] }] });
    for (let i = 0; i < 3; i++) await lease(await first.pool.acquire({ model: 'm' })).release({ status: 503 });
    await sleep(450);
    // eight more processes' worth of clients, each with its own connection
    const others = await Promise.all(Array.from({ length: 8 }, () => pool({ pool: first.name, breaker, keys: [{ secret, models: ['m'] }] })));
    const results = await Promise.all([first, ...others].flatMap((o) => [o.pool.acquire({ model: 'm' }), o.pool.acquire({ model: 'm' })]));
    const leases = results.filter((r) => r.ok);
    expect(leases).toHaveLength(1);
    expect((leases[0] as Lease).probe).toBe(true);
    expect(results.filter((r) => !r.ok).every((r) => !r.ok && r.reason === 'circuit_open')).toBe(true);
  });

  it('pools with their own breaker and health settings, released in turn on one Redis, each follow their own', async () => {
    // the scripts keep the last settings they parsed (health.lua releaseSettings): each release must
    // use its own pool's. Breaker: the two pools differ only in failures (the first setting).
    const strict = await pool({ breaker: { failures: 2, cooldownMs: 5000 }, keys: [{ secret: fakeSecret('strict'), models: ['m'] }] });
    const lax = await pool({ breaker: { failures: 100, cooldownMs: 5000 }, keys: [{ secret: fakeSecret('lax'), models: ['m'] }] });
    const transitions: Record<string, string[]> = { strict: [], lax: [] };
    for (let i = 0; i < 2; i++) {
      for (const [name, p] of [['strict', strict.pool], ['lax', lax.pool]] as const) {
        transitions[name]!.push((await lease(await p.acquire({ model: 'm' })).release({ status: 500, latencyMs: 10 })).transition);
      }
    }
    expect(transitions).toEqual({ strict: ['', 'opened'], lax: ['', ''] });
    // health: two pools that differ only in degradedP99Ms (a later setting), 400 ms answers in turn
    const health = { minRequests: 5, windowMs: 60_000 };
    const tight = await pool({ health: { ...health, degradedP99Ms: 100 }, keys: [{ secret: fakeSecret('tight'), models: ['m'] }] });
    const loose = await pool({ health: { ...health, degradedP99Ms: 5000 }, keys: [{ secret: fakeSecret('loose'), models: ['m'] }] });
    for (let i = 0; i < 6; i++) {
      for (const p of [tight.pool, loose.pool]) await lease(await p.acquire({ model: 'm' })).release({ status: 200, latencyMs: 400 });
    }
    expect((await tight.pool.status()).keys[0]!.degraded).toBe(true);
    expect((await loose.pool.status()).keys[0]!.degraded).toBe(false);
  });

  it('opens on an error rate over the window once it holds minRequests', async () => {
    const { pool: p } = await pool({ breaker: { failures: 100, errorRate: 0.5, minRequests: 10, cooldownMs: 5000 }, keys: [{ secret: fakeSecret('rate'), models: ['m'] }] });
    const transitions: string[] = [];
    for (let i = 0; i < 10; i++) {
      const r = await lease(await p.acquire({ model: 'm' })).release({ status: i % 2 ? 500 : 200, latencyMs: 10 });
      transitions.push(r.transition);
    }
    expect(transitions.slice(0, 9).every((t) => t === '')).toBe(true);
    expect(transitions[9]).toBe('opened');
  });

  it('an aborted probe lets another request probe at once', async () => {
    const { pool: p } = await pool({ breaker, keys: [{ secret: fakeSecret('ab'), models: ['m'] }] });
    for (let i = 0; i < 3; i++) await lease(await p.acquire({ model: 'm' })).release({ status: 500 });
    const probe = lease(await p.acquire({ model: 'm', maxWaitMs: 2000 }));
    expect(probe.probe).toBe(true);
    // another request meanwhile finds the probe out and parks the key until the probe's deadline
    expect(await p.acquire({ model: 'm' })).toMatchObject({ ok: false, reason: 'circuit_open' });
    await probe.release({ error: 'aborted' });
    const next = lease(await p.acquire({ model: 'm' }));
    expect(next.probe).toBe(true);
  });
});

describe('health and selection', () => {
  it('rolling p50/p99 and error rate; p99 over 800 ms marks a key degraded', async () => {
    const { pool: p } = await pool({ health: { minRequests: 20 }, keys: [{ secret: fakeSecret('slow'), models: ['m'] }] });
    for (let i = 0; i < 19; i++) await lease(await p.acquire({ model: 'm' })).release({ status: 200, latencyMs: i < 17 ? 100 : 1500 });
    let s = (await p.status()).keys[0]!;
    expect(s.degraded).toBe(false); // 19 < minRequests
    await lease(await p.acquire({ model: 'm' })).release({ status: 200, latencyMs: 1500 });
    s = (await p.status()).keys[0]!;
    expect(s.latency!.p50Ms).toBeGreaterThan(75);
    expect(s.latency!.p50Ms).toBeLessThanOrEqual(100);
    expect(s.latency!.p99Ms).toBeGreaterThan(1300);
    expect(s.degraded).toBe(true);
    expect(s.healthScore).toBeLessThan(0.25);
    expect(s.state).toBe('active'); // degraded is not blocked
  });

  it('on a busy key the percentiles follow new latencies once they are 1/256 of the samples; the error rate follows every release', async () => {
    const { pool: p } = await pool({ breaker: { failures: 1000 }, health: { minRequests: 20 }, keys: [{ secret: fakeSecret('busy'), models: ['m'], rpm: 600_000 }] });
    const releases = async (n: number, outcome: Outcome) => {
      const worker = async (count: number) => {
        for (let i = 0; i < count; i++) await lease(await p.acquire({ model: 'm' })).release(outcome);
      };
      await Promise.all(Array.from({ length: 8 }, (_, w) => worker(Math.floor(n / 8) + (w < n % 8 ? 1 : 0))));
    };
    await releases(600, { status: 200, latencyMs: 20 });
    let s = (await p.status()).keys[0]!;
    expect(s.latency!.p99Ms).toBeLessThanOrEqual(25);
    // one error: the error rate says so at once (it is not kept from an earlier summary)
    await releases(1, { status: 500, latencyMs: 20 });
    s = (await p.status()).keys[0]!;
    expect(s.errorRate).toBeCloseTo(1 / 601, 6);
    // 3% of the samples now slow (more than 1/256 of those counted): p99 is computed again
    await releases(19, { status: 200, latencyMs: 1500 });
    s = (await p.status()).keys[0]!;
    expect(s.latency!.p99Ms).toBeGreaterThan(1300);
    expect(s.latency!.p50Ms).toBeLessThanOrEqual(25);
    expect(s.degraded).toBe(true);
  });

  it('an error rate over 2% degrades a key', async () => {
    const { pool: p } = await pool({ breaker: { failures: 50 }, health: { minRequests: 20 }, keys: [{ secret: fakeSecret('err'), models: ['m'] }] });
    for (let i = 0; i < 40; i++) await lease(await p.acquire({ model: 'm' })).release({ status: i === 5 ? 500 : 200, latencyMs: 50 });
    let s = (await p.status()).keys[0]!;
    expect(s.errorRate).toBeCloseTo(1 / 40, 5);
    expect(s.degraded).toBe(true);
    for (let i = 0; i < 20; i++) await lease(await p.acquire({ model: 'm' })).release({ status: 200, latencyMs: 50 });
    s = (await p.status()).keys[0]!;
    expect(s.errorRate).toBeCloseTo(1 / 60, 5);
    expect(s.degraded).toBe(false);
  });

  it('healthy keys share load in proportion to their limits; degraded keys get less, not none', async () => {
    const small = fakeSecret('small');
    const big = fakeSecret('big');
    const slow = fakeSecret('slowk');
    // huge bursts so that buckets never block: only the selection weights decide
    const k = (secret: string, rpm: number) => ({ secret, models: ['m'], rpm, rpmBurst: 1_000_000 });
    const { pool: p } = await pool({ health: { minRequests: 5 }, keys: [k(small, 100_000), k(big, 300_000)] });
    const counts = new Map<string, number>();
    for (let i = 0; i < 1200; i++) {
      const l = lease(await p.acquire({ model: 'm' }));
      counts.set(l.keyId, (counts.get(l.keyId) ?? 0) + 1);
      await l.release({ status: 200, latencyMs: 50 });
    }
    const bigShare = (counts.get(keyIdOf(big)) ?? 0) / 1200;
    expect(bigShare).toBeGreaterThan(0.68);
    expect(bigShare).toBeLessThan(0.82);

    // a third key of the same size as `big` that turns slow
    await p.addKey(k(slow, 300_000));
    const slowId = keyIdOf(slow);
    const n = 1500;
    const seen = new Map<string, number>();
    for (let i = 0; i < n; i++) {
      const l = lease(await p.acquire({ model: 'm' }));
      seen.set(l.keyId, (seen.get(l.keyId) ?? 0) + 1);
      await l.release({ status: 200, latencyMs: l.keyId === slowId ? 2000 : 50 });
    }
    const slowStatus = (await p.status()).keys.find((x) => x.id === slowId)!;
    expect(slowStatus.degraded).toBe(true);
    const slowShare = (seen.get(slowId) ?? 0) / n;
    const bigShare2 = (seen.get(keyIdOf(big)) ?? 0) / n;
    expect(slowShare).toBeGreaterThan(0.003); // less traffic, not none
    expect(slowShare).toBeLessThan(bigShare2 / 3);
  });
});

describe('budgets', () => {
  it('reserves the estimate, charges real cost, and stops within one estimate of the budget', async () => {
    // gpt-4o-mini: $0.15 / $0.60 per million; estimate 10,000 output tokens = $0.006
    const { pool: p } = await pool({ keys: [{ secret: fakeSecret('bud'), models: ['gpt-4o-mini'], budget: { usd: 0.05, period: 'total' } }] });
    let spent = 0;
    let leases = 0;
    for (;;) {
      const r = await p.acquire({ model: 'gpt-4o-mini', estimatedTokens: 10_000 });
      if (!r.ok) {
        // $0.002 is left: not enough for this request, and waiting will not bring more (total budget)
        expect(r).toEqual({ ok: false, reason: 'budget', retryAfterMs: null });
        break;
      }
      leases++;
      const rel = await r.release({ status: 200, usage: { promptTokens: 1000, completionTokens: 9000 } });
      spent += rel.costUsd;
    }
    let s = (await p.status()).keys[0]!;
    expect(s.spendUsd).toBeCloseTo(spent, 9);
    expect(spent).toBeLessThanOrEqual(0.05);
    expect(leases).toBe(8);
    expect(s.left!.budgetUsd).toBeLessThan(0.006);
    // smaller requests still fit in what is left ($0.0006 estimated; real usage a bit more)
    let smalls = 0;
    for (;;) {
      const r = await p.acquire({ model: 'gpt-4o-mini', estimatedTokens: 1000 });
      if (!r.ok) break;
      smalls++;
      await r.release({ status: 200, usage: { promptTokens: 1000, completionTokens: 1000 } }); // $0.00075
    }
    expect(smalls).toBeGreaterThan(4);
    s = (await p.status()).keys[0]!;
    // admitted only while spend + estimate fit: the overshoot is at most one request's underestimate
    expect(s.spendUsd).toBeLessThanOrEqual(0.05 + (0.00075 - 0.0006) + 1e-12);
    expect(s.left!.budgetUsd).toBeLessThan(0.0006);
    expect(await p.acquire({ model: 'gpt-4o-mini', estimatedTokens: 1000 })).toEqual({ ok: false, reason: 'budget', retryAfterMs: null });
    await p.resetBudget(s.id);
    expect((await p.acquire({ model: 'gpt-4o-mini', estimatedTokens: 10_000 })).ok).toBe(true);
  });

  it('money held by leases in flight comes back when they are released', async () => {
    // $1 budget, ten leases each reserving a $0.10 estimate (gpt-4o-mini output: $0.60/M)
    const { pool: p } = await pool({ concurrencyRecheckMs: 5000, keys: [{ secret: fakeSecret('hold'), models: ['gpt-4o-mini'], budget: { usd: 1, period: 'total' } }] });
    const est = Math.floor(0.1 / 0.6e-6);
    const held: Lease[] = [];
    for (let i = 0; i < 10; i++) held.push(lease(await p.acquire({ model: 'gpt-4o-mini', estimatedTokens: est })));
    const no = await p.acquire({ model: 'gpt-4o-mini', estimatedTokens: est });
    expect(no).toMatchObject({ ok: false, reason: 'budget' });
    // looked at again after concurrencyRecheckMs, not parked for good
    expect(!no.ok && no.retryAfterMs).toBeGreaterThan(4900);
    expect(!no.ok && no.retryAfterMs).toBeLessThanOrEqual(5001);
    for (const l of held) await l.release({ status: 200, usage: { promptTokens: 100, completionTokens: 100 } });
    // released money is usable at once, without waiting for the recheck
    expect((await p.acquire({ model: 'gpt-4o-mini', estimatedTokens: est })).ok).toBe(true);
  });

  it('a daily budget says to retry at the next UTC midnight', async () => {
    const { pool: p } = await pool({ keys: [{ secret: fakeSecret('day'), models: ['gpt-4o'], budget: { usd: 0.001, period: 'day' } }] });
    const r = await p.acquire({ model: 'gpt-4o', estimatedTokens: 1000 }); // $0.01 > budget
    expect(r).toMatchObject({ ok: false, reason: 'budget' });
    const midnight = Math.ceil(Date.now() / 86_400_000) * 86_400_000;
    expect(!r.ok && Date.now() + r.retryAfterMs!).toBeGreaterThan(midnight - 2000);
    expect(!r.ok && Date.now() + r.retryAfterMs!).toBeLessThan(midnight + 2000);
    const s = (await p.status()).keys[0]!;
    expect(s.budgetPeriodEndsAt).toBe(new Date(midnight).toISOString());
  });
});

describe('operators', () => {
  it('disable, enable, drain, retire, remove and update a key while the pool runs', async () => {
    const a = fakeSecret('opa');
    const b = fakeSecret('opb');
    const { pool: p, redis, name } = await pool({ keys: [{ secret: a, models: ['m'] }, { secret: b, models: ['m'] }] });
    const ida = keyIdOf(a);
    const idb = keyIdOf(b);
    const only = async (expected: string) => {
      for (let i = 0; i < 10; i++) {
        const l = lease(await p.acquire({ model: 'm' }));
        expect(l.keyId).toBe(expected);
        await l.release({ status: 200 });
      }
    };
    await p.disableKey(ida);
    expect((await p.status()).keys.find((k) => k.id === ida)!.state).toBe('disabled');
    await only(idb);
    await p.enableKey(ida);
    await p.disableKey(idb);
    await only(ida);
    await p.enableKey(idb);

    // drain: the lease in flight finishes, no new ones
    const inflight = lease(await p.acquire({ model: 'm', exclude: [ida] }));
    expect((await p.drainKey(idb)).inFlight).toBe(1);
    await only(ida);
    expect((await inflight.release({ status: 200 })).released).toBe(true);
    expect((await p.status()).keys.find((k) => k.id === idb)!.state).toBe('draining');

    // retire: removed when its last lease is released
    await p.enableKey(idb);
    const last = lease(await p.acquire({ model: 'm', exclude: [ida] }));
    await p.retireKey(idb);
    expect((await p.status()).keys.map((k) => k.id).sort()).toEqual([ida, idb].sort());
    expect((await last.release({ status: 200 })).transition).toBe('retired');
    expect((await p.status()).keys.map((k) => k.id)).toEqual([ida]);

    // update limits in place: state kept, new limits in force
    await p.updateKey(ida, { rpm: 120, rpmBurst: 1, models: ['m', 'm2'] });
    const st = (await p.status()).keys[0]!;
    expect(st.limits).toMatchObject({ rpm: 120, rpmBurst: 1 });
    expect(st.models).toEqual(['m', 'm2']);
    expect((await p.acquire({ model: 'm2' })).ok).toBe(true);
    expect(await p.acquire({ model: 'm' })).toMatchObject({ ok: false, reason: 'rate_limited' });

    await p.removeKey(ida);
    expect((await p.status()).keys).toEqual([]);
    await expect(p.acquire({ model: 'm' })).rejects.toBeInstanceOf(UnknownModelError);
    await expect(p.disableKey(ida)).rejects.toThrow(`no key with id "${ida}" in the pool`);
    // nothing of the removed keys is left in their group sets
    const dump = await dumpPool(redis, name);
    for (const [key, parts] of dump) {
      if (key.includes(':g:')) expect(parts.slice(1).map(String)).not.toContain(ida);
    }
  });

  it('a release from a process that has not seen a models change puts the key in its new group only', async () => {
    const secret = fakeSecret('moved');
    const id = keyIdOf(secret);
    const a = await pool({ keys: [{ secret, models: ['m1'], maxConcurrent: 1 }] });
    const b = await pool({ pool: a.name, keys: [{ secret, models: ['m1'], maxConcurrent: 1 }] });
    const held = lease(await a.pool.acquire({ model: 'm1' }));
    // the key is full: a second acquire parks it in the wait set for 'concurrency'
    expect(await a.pool.acquire({ model: 'm1' })).toMatchObject({ ok: false, reason: 'concurrency' });
    await b.pool.updateKey(id, { models: ['m2'] });
    await held.release({ status: 200 }); // a still believes the key serves m1
    const c = await pool({ pool: a.name });
    await expect(c.pool.acquire({ model: 'm1' })).rejects.toBeInstanceOf(UnknownModelError);
    const dump = await dumpPool(a.redis, a.name);
    const holding = [...dump].filter(([k, parts]) => k.includes(':g:') && parts.slice(1).some((x) => String(x) === id)).map(([k]) => k);
    expect(holding).toHaveLength(1);
    expect(holding[0]).toContain(groupOf(['m2']));
    expect((await b.pool.acquire({ model: 'm2' })).ok).toBe(true);
  });

  it("a process that starts writes its config's settings over an admin change, and logs each field's old and new value", async () => {
    const secret = fakeSecret('overwritten');
    const id = keyIdOf(secret);
    const spec = { secret, name: 'ow', models: ['m'], rpm: 600 };
    const a = await pool({ keys: [spec] });
    await a.pool.updateKey(id, { rpm: 100, weight: 2 });
    // a second process (a restart) with the same config
    const b = await pool({ pool: a.name, keys: [spec] });
    const logged = b.logs.map((l) => JSON.parse(l)).filter((l) => l.level === 30 && l.keyId === id && l.changes);
    expect(logged).toHaveLength(1);
    expect(logged[0].changes).toEqual([
      { field: 'rpm', from: 100, to: 600 },
      { field: 'weight', from: 2, to: 1 },
    ]);
    expect(logged[0].msg).toContain('rpm 100 -> 600');
    expect(JSON.stringify(b.logs)).not.toContain(secret);
    expect((await b.pool.status()).keys.find((k) => k.id === id)!.limits.rpm).toBe(600);
    // a start with the same settings as Redis says nothing
    const c = await pool({ pool: a.name, keys: [spec] });
    expect(c.logs.map((l) => JSON.parse(l)).filter((l) => l.keyId === id && l.level >= 30)).toEqual([]);
  });

  it('a process never leases keys it holds no secret for, nor spends their rate', async () => {
    const mine = fakeSecret('mine');
    const theirs = fakeSecret('theirs');
    const k = (secret: string) => ({ secret, models: ['m'], rpm: 600, rpmBurst: 5 });
    const a = await pool({ keys: [k(mine), k(theirs)] });
    const b = await pool({ pool: a.name, keys: [k(mine)] });
    for (let i = 0; i < 5; i++) {
      const l = lease(await b.pool.acquire({ model: 'm' }));
      expect(l.keyId).toBe(keyIdOf(mine));
    }
    const st = (await b.pool.status()).keys.find((x) => x.id === keyIdOf(theirs))!;
    expect(st.left!.requests).toBe(5);
  });

  it('a retired key whose last lease expires (its process died) is removed', async () => {
    const secret = fakeSecret('retire-exp');
    const { pool: p } = await pool({ leaseTimeoutMs: 1000, keys: [{ secret, models: ['m'] }, { secret: fakeSecret('other'), models: ['m'] }] });
    const l = lease(await p.acquire({ model: 'm', exclude: [(await p.status()).keys.find((x) => x.id !== keyIdOf(secret))!.id] }));
    expect(l.keyId).toBe(keyIdOf(secret));
    await p.retireKey(l.keyId);
    await sleep(1100);
    await p.acquire({ model: 'm' }); // the reaper runs in acquire
    expect((await p.status()).keys.map((x) => x.id)).not.toContain(l.keyId);
    expect((await l.release({ status: 200 })).released).toBe(false);
  });

  it('a lease of a removed key does not touch the key added again under the same secret', async () => {
    const secret = fakeSecret('again');
    const { pool: p } = await pool({ keys: [{ secret, models: ['m'], maxConcurrent: 2 }] });
    const old = lease(await p.acquire({ model: 'm' }));
    await p.removeKey(old.keyId);
    await p.addKey({ secret, models: ['m'], maxConcurrent: 2 });
    const fresh = lease(await p.acquire({ model: 'm' }));
    expect((await old.release({ status: 500 })).released).toBe(false);
    const s = (await p.status()).keys[0]!;
    expect(s.inFlight).toBe(1);
    expect(s.breaker!.consecutiveFailures).toBe(0);
    await fresh.release({ status: 200 });
    expect((await p.status()).keys[0]!.inFlight).toBe(0);
  });

  it('a process restarting with the same keys keeps their state (admin state, spend, buckets)', async () => {
    const secret = fakeSecret('restart');
    const first = await pool({ keys: [{ secret, models: ['m'], rpm: 60, rpmBurst: 1 }] });
    await first.pool.disableKey(keyIdOf(secret));
    const second = await pool({ pool: first.name, keys: [{ secret, models: ['m'], rpm: 60, rpmBurst: 1 }] });
    expect((await second.pool.status()).keys[0]!.state).toBe('disabled');
  });

  it('another process learns of a new key and of a changed one without restarting', async () => {
    const a = fakeSecret('topo-a');
    const first = await pool({ keys: [{ secret: a, models: ['m'] }] });
    const second = await pool({ pool: first.name, keys: [{ secret: a, models: ['m'] }] });
    await first.pool.addKey({ secret: fakeSecret('topo-b'), models: ['new-model'] });
    // second has no secret for the new key, but it knows the model is served
    const r = await second.pool.acquire({ model: 'new-model' }).catch((e) => e);
    expect(r).not.toBeInstanceOf(UnknownModelError);
  });
});

describe('scripts on the wire', () => {
  it('a Redis that lost its scripts (SCRIPT FLUSH) is sent them again, on a client of the pool and on one it was given', async () => {
    const server = await spawnRedisServer();
    const admin = new Redis(server.port, '127.0.0.1');
    try {
      for (const own of [true, false]) {
        const given = own ? undefined : new Redis(server.port, '127.0.0.1');
        const p = await KeyPool.connect({
          redis: given ?? `redis://127.0.0.1:${server.port}`,
          config: { pool: uniqueName('wire'), status: { snapshotMs: 0 }, keys: [{ secret: fakeSecret(`wire-${own}`), models: ['gpt-4o-mini'], rpm: 600 }] },
          logger: memoryLogger().logger,
        });
        try {
          const a = lease(await p.acquire({ model: 'gpt-4o-mini', estimatedTokens: 10 }));
          // every script is gone: the next calls answer NOSCRIPT once, and are sent again with their source
          await admin.script('FLUSH');
          expect(await a.release({ status: 200, latencyMs: 5 })).toMatchObject({ released: true });
          await admin.script('FLUSH');
          const b = lease(await p.acquire({ model: 'gpt-4o-mini', estimatedTokens: 10 }));
          expect(b.keyId).toBe(a.keyId);
          expect(await b.release({ status: 200, latencyMs: 5 })).toMatchObject({ released: true });
          expect((await p.status({ fresh: true })).keys[0]!.inFlight).toBe(0);
          expect(p.redisAvailable).toBe(true);
        } finally {
          await p.close();
          given?.disconnect();
        }
      }
    } finally {
      admin.disconnect();
      await server.stop();
    }
  });
});
