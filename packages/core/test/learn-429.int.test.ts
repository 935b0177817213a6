/**
 * What a 429 teaches: a key whose provider reports room for the pool's whole quota and no other use
 * keeps its limit (the requests only arrived closer together than they were admitted: the key cools),
 * while a 429 that says nothing, or one the provider's count explains, lowers it.
 */
import { describe, expect, it } from 'vitest';
import type { KeyPool, Lease } from '../src/index.js';
import { fakeSecret, poolsClosedAfterAll } from './helpers.js';

const pool = poolsClosedAfterAll();

function lease(r: Awaited<ReturnType<KeyPool['acquire']>>): Lease {
  if (!r.ok) throw new Error(`expected a lease, got ${JSON.stringify(r)}`);
  return r;
}

const effectiveRpm = async (p: KeyPool) => (await p.status()).keys[0]!.effectiveLimits!.rpm;
// Azure-style: 600 RPM over 1 s windows, the limit header per window (10)
const key = (name: string) => ({ secret: fakeSecret(name), provider: 'azure', models: ['m'], rpm: 540 });

describe('a 429 and the effective limit', () => {
  it('keeps the limit when the provider reports room for the quota and nobody else: only cooling', async () => {
    const { pool: p } = await pool({ keys: [key('skew')] });
    const l = lease(await p.acquire({ model: 'm' }));
    // remaining 9 of 10: the provider counted this one request only, the pool's own
    await l.release({ status: 429, headers: { 'retry-after-ms': '50', 'x-ratelimit-limit-requests': '10', 'x-ratelimit-remaining-requests': '9' } });
    const s = (await p.status()).keys[0]!;
    expect(s.effectiveLimits!.rpm).toBe(540);
    expect(s.reportedLimits!.rpm).toBe(600);
    expect(s.state).toBe('cooling');
  });

  it('a 429 at a quota equal to the limit, counting only the pool\'s own: one request a window less, not a fifth', async () => {
    // 600 RPM: the pool's 10 a window is the provider's 10
    const { pool: p } = await pool({ keys: [{ ...key('equal'), rpm: 600 }] });
    const sent = [];
    for (let i = 0; i < 10; i++) sent.push(lease(await p.acquire({ model: 'm' })));
    // the provider counted 10, all the pool's: timing as likely as someone else hidden in the count
    await sent[9]!.release({ status: 429, headers: { 'retry-after-ms': '50', 'x-ratelimit-limit-requests': '10', 'x-ratelimit-remaining-requests': '0' } });
    expect(await effectiveRpm(p)).toBe(540);
  });

  it('lowers the limit on a 429 whose headers say nothing', async () => {
    const { pool: p } = await pool({ keys: [key('bare')] });
    await lease(await p.acquire({ model: 'm' })).release({ status: 429, headers: { 'retry-after-ms': '50' } });
    expect(await effectiveRpm(p)).toBe(Math.floor(540 * 0.8));
  });

  it('lowers the limit to what another application leaves when the provider counted others', async () => {
    const { pool: p } = await pool({ keys: [key('crowd')] });
    // the provider counted 10 in its window, 1 of them the pool's: 9 are someone else's, 1 left for the pool
    await lease(await p.acquire({ model: 'm' })).release({ status: 429, headers: { 'retry-after-ms': '50', 'x-ratelimit-limit-requests': '10', 'x-ratelimit-remaining-requests': '0' } });
    expect(await effectiveRpm(p)).toBeLessThanOrEqual(60);
  });
});

describe('a key with no limit learns one from its first answer', () => {
  it('a windowed key counts the answer that taught it: "1 a minute" admits nothing more for a minute', async () => {
    // OpenAI-style: 1 s windows, the limit header per minute; keypool.yaml gave no rpm
    const { pool: p } = await pool({ keys: [{ secret: fakeSecret('first'), provider: 'openai', models: ['m'] }] });
    await lease(await p.acquire({ model: 'm' })).release({ status: 200, headers: { 'x-ratelimit-limit-requests': '1', 'x-ratelimit-remaining-requests': '0' } });
    expect(await effectiveRpm(p)).toBe(1);
    const next = await p.acquire({ model: 'm', maxWaitMs: 0 });
    expect(next.ok).toBe(false);
    if (next.ok) return;
    // the provider has its request back a minute after it counted the first one
    expect(next.retryAfterMs).toBeGreaterThan(55_000);
    expect(next.retryAfterMs).toBeLessThanOrEqual(60_100);
  });
});
