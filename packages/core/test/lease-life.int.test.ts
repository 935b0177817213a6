import { describe, expect, it } from 'vitest';
import { PoolKeys, type KeyPool, type Lease } from '../src/index.js';
import { fakeSecret, poolsClosedAfterAll } from './helpers.js';

/**
 * What a lease costs when nothing went upstream (nothing), how long it lives (while its holder
 * renews it), and what status counts of it (only the unexpired).
 */
const pool = poolsClosedAfterAll();

function lease(r: Awaited<ReturnType<KeyPool['acquire']>>): Lease {
  if (!r.ok) throw new Error(`expected a lease, got ${JSON.stringify(r)}`);
  return r;
}

/** Resolves once the wall clock (Redis runs on the same host) is past `ms`: what a deadline test waits for. */
async function until(ms: number): Promise<void> {
  await expect.poll(() => Date.now(), { timeout: ms - Date.now() + 2000, interval: 20 }).toBeGreaterThan(ms);
}

describe('a lease handed back unused', () => {
  it('gives back its request, tokens, slot and reserved money: no spend, no model spend, no breaker or health effect', async () => {
    const key = { secret: fakeSecret('unused'), models: ['gpt-4o-mini'], rpm: 6, rpmBurst: 3, tpm: 6, tpmBurst: 5000, maxConcurrent: 1, tpmCounts: 'estimate' as const, budget: { usd: 5, period: 'day' as const } };
    const { pool: p } = await pool({ breaker: { failures: 1 }, keys: [key] });
    // some real spend first, so "unchanged" is not "zero"
    await lease(await p.acquire({ model: 'gpt-4o-mini', estimatedTokens: 100 })).release({ status: 200, latencyMs: 5, usage: { promptTokens: 40, completionTokens: 10 } });
    const before = await p.status();
    const l = lease(await p.acquire({ model: 'gpt-4o-mini', estimatedTokens: 4000 }));
    const held = (await p.status()).keys[0]!;
    expect(held.inFlight).toBe(1);
    expect(held.reservedUsd).toBeGreaterThan(0);
    const r = await l.release({ error: 'unused' });
    expect(r).toMatchObject({ released: true, transition: '', costUsd: 0 });
    const after = await p.status();
    const [k0, k1] = [before.keys[0]!, after.keys[0]!];
    // the buckets refill 1 request / 10 s and 1 token / 10 s: a test this short sees the same whole numbers
    expect(k1.left).toEqual(k0.left);
    expect(k1.inFlight).toBe(0);
    expect(k1.spendUsd).toBe(k0.spendUsd);
    expect(k1.reservedUsd).toBe(0);
    expect(after.spend).toEqual(before.spend);
    expect(k1.breaker).toEqual(k0.breaker);
    expect(k1.errorRate).toBe(k0.errorRate);
    expect(k1.state).toBe('active');
  });

  it('an unused probe lets another request probe at once', async () => {
    const { pool: p } = await pool({ breaker: { failures: 1, cooldownMs: 10 }, keys: [{ secret: fakeSecret('uprobe'), models: ['m'] }] });
    await lease(await p.acquire({ model: 'm' })).release({ status: 500 });
    const probe = lease(await p.acquire({ model: 'm', maxWaitMs: 2000 }));
    expect(probe.probe).toBe(true);
    expect((await probe.release({ error: 'unused' })).transition).toBe('probe_aborted');
    expect(lease(await p.acquire({ model: 'm' })).probe).toBe(true);
  });
});

describe('release reconciles tokens once', () => {
  it('usage mode: the unused part of the estimate comes back to the bucket exactly once', async () => {
    // 6 tpm refills 1 token per 10 s: the level is exact for the length of this test
    const { pool: p } = await pool({ keys: [{ secret: fakeSecret('once'), models: ['m'], tpm: 6, tpmBurst: 1000, tpmCounts: 'usage' }] });
    const l = lease(await p.acquire({ model: 'm', estimatedTokens: 500 }));
    expect((await p.status()).keys[0]!.left!.tokens).toBe(500);
    await l.release({ status: 200, usage: { promptTokens: 300, completionTokens: 50 } });
    expect((await p.status()).keys[0]!.left!.tokens).toBe(650);
    await l.release({ status: 200, usage: { promptTokens: 300, completionTokens: 50 } });
    expect((await p.status()).keys[0]!.left!.tokens).toBe(650);
  });
});

describe('extend and heartbeats', () => {
  it("extend of a half-open probe moves the probe's deadline: no second probe while the first still runs", async () => {
    const secret = fakeSecret('pext');
    const cfg = { leaseTimeoutMs: 1000, breaker: { failures: 1, cooldownMs: 10 }, keys: [{ secret, models: ['m'] }] };
    const a = await pool(cfg);
    const b = await pool({ ...cfg, pool: a.name });
    await lease(await a.pool.acquire({ model: 'm' })).release({ status: 500 });
    const probe = lease(await a.pool.acquire({ model: 'm', maxWaitMs: 2000 }));
    expect(probe.probe).toBe(true);
    const first = probe.deadline;
    expect(await probe.extend(4000)).toBe(true);
    await until(first + 100);
    // the first probe still runs: the rest of the fleet waits for it
    expect(await b.pool.acquire({ model: 'm' })).toMatchObject({ ok: false, reason: 'circuit_open' });
    expect((await probe.release({ status: 200 })).transition).toBe('closed');
  });

  it('a heartbeat keeps a lease past its deadline while its holder lives, and stops when it is released', async () => {
    const secret = fakeSecret('beat');
    const cfg = { leaseTimeoutMs: 1000, keys: [{ secret, models: ['m'], maxConcurrent: 1 }] };
    const a = await pool(cfg);
    const b = await pool({ ...cfg, pool: a.name });
    const l = lease(await a.pool.acquire({ model: 'm' }));
    const first = l.deadline;
    l.keepAlive();
    await until(first + 1500);
    expect(l.deadline).toBeGreaterThan(first + 1000);
    // still held fleet-wide: not reaped by another process's acquire, counted by status
    expect(await b.pool.acquire({ model: 'm' })).toMatchObject({ ok: false, reason: 'concurrency' });
    expect((await b.pool.status()).keys[0]!.inFlight).toBe(1);
    expect((await l.release({ status: 200 })).released).toBe(true);
    expect(lease(await b.pool.acquire({ model: 'm' })).ok).toBe(true);
    // no beat after the release: one would find the lease gone and warn that it expired
    await until(Date.now() + 700);
    expect(a.logs.filter((x) => x.includes('a lease expired before its holder renewed it'))).toEqual([]);
  });

  it('a heartbeat renews well before the deadline: a live lease never gets within a third of its timeout of being reaped', async () => {
    // a beat only at the deadline leaves the lease expired (reapable by any other process) until it lands
    const { pool: p, redis, name } = await pool({ leaseTimeoutMs: 1200, keys: [{ secret: fakeSecret('margin'), models: ['m'] }] });
    const l = lease(await p.acquire({ model: 'm' }));
    const stop = l.keepAlive();
    const leases = new PoolKeys(name).leases;
    let least = Infinity;
    while (Date.now() < l.acquiredAt + 3 * 1200) {
      const [deadline, [sec, usec]] = await Promise.all([redis.zscore(leases, l.id), redis.time()]);
      least = Math.min(least, Number(deadline) - (Number(sec) * 1000 + Number(usec) / 1000));
      await new Promise((r) => setTimeout(r, 15));
    }
    stop();
    // beats every 400 ms keep at least ~800 ms ahead; 300 leaves room for a slow timer
    expect(least).toBeGreaterThan(300);
    expect((await l.release({ status: 200 })).released).toBe(true);
  });

  it('a lease that expires despite its heartbeat is logged as a warning, and the heartbeat stops', async () => {
    const { pool: p, redis, name, logs } = await pool({ leaseTimeoutMs: 1000, keys: [{ secret: fakeSecret('lost'), models: ['m'] }] });
    const l = lease(await p.acquire({ model: 'm' }));
    l.keepAlive();
    // as if the holder had stalled past its deadline and another process reaped it
    await redis.zrem(new PoolKeys(name).leases, l.id);
    await expect.poll(() => logs.filter((x) => x.includes('a lease expired before its holder renewed it')).length, { timeout: 3000 }).toBe(1);
    expect(logs.find((x) => x.includes('a lease expired before'))).toContain(l.keyId);
    expect((await l.release({ status: 200 })).released).toBe(false);
  });
});

describe('status', () => {
  it('counts only leases before their deadline in flight (their holder died), without reaping them', async () => {
    const { pool: p, redis, name } = await pool({ leaseTimeoutMs: 1000, keys: [{ secret: fakeSecret('stat'), models: ['m'], maxConcurrent: 3 }] });
    const l1 = lease(await p.acquire({ model: 'm' }));
    lease(await p.acquire({ model: 'm' }));
    await l1.extend(10_000);
    let s = await p.status();
    expect([s.leasesInFlight, s.keys[0]!.inFlight, s.keys[0]!.left!.slots]).toEqual([2, 2, 1]);
    await until(l1.acquiredAt + 1100);
    s = await p.status();
    expect([s.leasesInFlight, s.keys[0]!.inFlight, s.keys[0]!.left!.slots]).toEqual([1, 1, 2]);
    // status reads; the expired lease is still there for the reaper
    expect(await redis.zcard(new PoolKeys(name).leases)).toBe(2);
  });
});
