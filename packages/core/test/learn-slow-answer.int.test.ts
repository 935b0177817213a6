/**
 * Learning from `remaining` compares the provider's count with the pool's own admissions in the
 * window the request arrived in. An answer that comes back later than that window (an LLM call takes
 * seconds) must not read a log the pool has trimmed meanwhile as "another application": the pool
 * counted none of its own and lowered the key to what the "others" left (bench:realistic with a
 * 1.5 s provider: p99 10.8 s instead of 1.7 s).
 */
import { describe, expect, it, vi } from 'vitest';
import type { KeyPool, Lease } from '../src/index.js';
import { fakeSecret, poolsClosedAfterAll } from './helpers.js';

const pool = poolsClosedAfterAll();

function lease(r: Awaited<ReturnType<KeyPool['acquire']>>): Lease {
  if (!r.ok) throw new Error(`expected a lease, got ${JSON.stringify(r)}`);
  return r;
}

const effectiveRpm = async (p: KeyPool) => (await p.status()).keys[0]!.effectiveLimits!.rpm;
/** Azure-style: 540 rpm over 1 s is 9 a window; the provider reports its own 10. */
const KEY = { provider: 'azure', models: ['m'], rpm: 540 };
const counted = (used: number) => ({ 'x-ratelimit-limit-requests': '10', 'x-ratelimit-remaining-requests': String(10 - used) });

/** Three leases of the pool's one key, one after the other (within one window). */
async function acquireThree(p: KeyPool): Promise<Lease[]> {
  const out: Lease[] = [];
  for (let i = 0; i < 3; i++) out.push(lease(await p.acquire({ model: 'm' })));
  return out;
}

/** Redis's clock (ms): the pool's windows are in its time. */
async function redisNow(redis: { time(): Promise<[string, string] | (string | number)[]> }): Promise<number> {
  const [s, us] = await redis.time();
  return Number(s) * 1000 + Number(us) / 1000;
}

/** Until Redis's clock is past `ms` after now. */
async function redisWait(redis: Parameters<typeof redisNow>[0], ms: number): Promise<void> {
  const t0 = await redisNow(redis);
  await vi.waitFor(async () => expect(await redisNow(redis)).toBeGreaterThan(t0 + ms), { timeout: 5000 + ms, interval: 50 });
}

describe('learning from remaining', () => {
  it('an answer back 1.1 s after it was sent, counting only the pool\'s own requests, leaves the key alone', async () => {
    const { pool: p, redis } = await pool({ keys: [{ secret: fakeSecret('slow'), ...KEY }] });
    const sent = await acquireThree(p);
    const t0 = sent[2]!.acquiredAt;
    await vi.waitFor(async () => expect(await redisNow(redis)).toBeGreaterThan(t0 + 1100), { timeout: 5000, interval: 50 });
    // the pool goes on admitting (and tidying its log) while the first answers are still out
    await lease(await p.acquire({ model: 'm' })).release({ status: 200, latencyMs: 20, headers: counted(1) });
    // when the third arrived the provider had counted our three and nothing else
    await sent[2]!.release({ status: 200, latencyMs: 1100, headers: counted(3) });
    expect(await effectiveRpm(p)).toBe(540);
  });

  it('timely answers showing another application over a whole window lower the key', async () => {
    const { pool: p, redis } = await pool({ keys: [{ secret: fakeSecret('other'), ...KEY }] });
    // the pool sends 3 and the provider counts 6 at two answers: 3 others
    const first = await acquireThree(p);
    await first[2]!.release({ status: 200, latencyMs: 5, headers: counted(6) });
    await first[1]!.release({ status: 200, latencyMs: 5, headers: counted(6) });
    // not yet: it may be the pool's own requests that reached the provider late
    expect(await effectiveRpm(p)).toBe(540);
    // the window over, the next answer (1 of the pool's, 4 counted: 3 others still) judges it
    await redisWait(redis, 1050);
    await lease(await p.acquire({ model: 'm' })).release({ status: 200, latencyMs: 5, headers: counted(4) });
    // the pool's 9 would not fit beside them, so it keeps the 7 they leave (420 rpm)
    expect(await effectiveRpm(p)).toBe(420);
  });

  it('one answer counting more than the pool\'s, among answers of the same window counting only its own, leaves the key alone', async () => {
    const { pool: p, redis } = await pool({ keys: [{ secret: fakeSecret('late'), ...KEY }] });
    const first = await acquireThree(p);
    // 3 more than the pool's own (a late request of its own, seen as someone else's) ...
    await first[2]!.release({ status: 200, latencyMs: 5, headers: counted(6) });
    // ... and in the same window an answer that counts exactly the pool's three
    await first[1]!.release({ status: 200, latencyMs: 5, headers: counted(3) });
    await redisWait(redis, 1050);
    const next = lease(await p.acquire({ model: 'm' }));
    await next.release({ status: 200, latencyMs: 5, headers: counted(7) });
    expect(await effectiveRpm(p)).toBe(540);
  });
});
