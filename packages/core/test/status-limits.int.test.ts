/**
 * Status tells the truth about limits: what a windowed key has left in its enforcement window (not
 * its unused bucket), its reservations ahead, and the configured, effective and provider-reported
 * limits side by side, driven by real acquires and releases.
 */
import { describe, expect, it, vi } from 'vitest';
import type { KeyPool, KeyStatus, Lease } from '../src/index.js';
import { fakeSecret, poolsClosedAfterAll } from './helpers.js';

const pool = poolsClosedAfterAll();

function lease(r: Awaited<ReturnType<KeyPool['acquire']>>): Lease {
  if (!r.ok) throw new Error(`expected a lease, got ${JSON.stringify(r)}`);
  return r;
}

const keyOf = async (p: KeyPool): Promise<KeyStatus> => (await p.status()).keys[0]!;

describe('status of a key with enforcement windows', () => {
  it('left is what the window ending now has room for; a fresh key enforces its configured limits', async () => {
    // 60 rpm over 10 s: 10 requests per window; 6,000 tpm over 10 s: 1,000 tokens per window
    const { pool: p } = await pool({ keys: [{ secret: fakeSecret('win'), provider: 'openai', models: ['m'], rpm: 60, window: 10, tpm: 6000, tokenWindow: 10 }] });
    const fresh = await keyOf(p);
    expect(fresh.limits).toMatchObject({ rpm: 60, tpm: 6000, windowSeconds: 10, tokenWindowSeconds: 10, limitHeaders: 'minute' });
    expect(fresh.effectiveLimits).toEqual({ rpm: 60, tpm: 6000 });
    expect(fresh.reportedLimits).toEqual({ rpm: null, tpm: null });
    expect(fresh.left).toMatchObject({ requests: 10, tokens: 1000 });
    expect(fresh.windows).toEqual({ requests: { quota: 10, admitted: 0, reserved: 0 }, tokens: { quota: 1000, admitted: 0 } });

    for (let i = 0; i < 3; i++) await lease(await p.acquire({ model: 'm', estimatedTokens: 100 })).release({ status: 200 });
    const s = await keyOf(p);
    // the bucket (2 s of rpm: 2 requests) would say 0 left; the window has 7
    expect(s.left).toMatchObject({ requests: 10 - 3, tokens: 1000 - 300 });
    expect(s.windows).toEqual({ requests: { quota: 10, admitted: 3, reserved: 0 }, tokens: { quota: 1000, admitted: 300 } });
  });

  it('a caller sleeping until its reservation shows as reserved; given back, it does not', async () => {
    const { pool: p } = await pool({ keys: [{ secret: fakeSecret('res'), provider: 'openai', models: ['m'], rpm: 12, window: 10 }] });
    // 2 per 10 s window: both now, the third reserved for about 10 s later
    await lease(await p.acquire({ model: 'm' })).release({ status: 200 });
    await lease(await p.acquire({ model: 'm' })).release({ status: 200 });
    const ac = new AbortController();
    const waiting = p.acquire({ model: 'm', maxWaitMs: 30_000, signal: ac.signal });
    await vi.waitFor(async () => expect((await keyOf(p)).windows!.requests).toEqual({ quota: 2, admitted: 2, reserved: 1 }), { timeout: 5000, interval: 20 });
    expect((await keyOf(p)).left!.requests).toBe(0);
    ac.abort(new Error('caller gave up'));
    await expect(waiting).rejects.toThrow('caller gave up');
    // its place is a free slot now, for the next caller
    expect((await keyOf(p)).windows!.requests).toEqual({ quota: 2, admitted: 2, reserved: 0 });
  });

  it('tokens admitted before the window ending now no longer count', async () => {
    // 60,000 tpm over 1 s: 1,000 tokens per window
    const { pool: p } = await pool({ keys: [{ secret: fakeSecret('tok'), provider: 'openai', models: ['m'], rpm: 6000, tpm: 60_000, tokenWindow: 1 }] });
    for (const t of [200, 300]) await lease(await p.acquire({ model: 'm', estimatedTokens: t })).release({ status: 200 });
    expect((await keyOf(p)).windows!.tokens).toEqual({ quota: 1000, admitted: 500 });
    await vi.waitFor(async () => expect((await keyOf(p)).windows!.tokens!.admitted).toBe(0), { timeout: 3000, interval: 50 });
    for (const t of [50, 70, 90]) await lease(await p.acquire({ model: 'm', estimatedTokens: t })).release({ status: 200 });
    const s = await keyOf(p);
    expect(s.windows!.tokens).toEqual({ quota: 1000, admitted: 210 });
    expect(s.left!.tokens).toBe(790);
  });
});

describe('configured, effective and reported limits', () => {
  it('a provider reporting 300 rpm on a key configured 600: status shows effective 300 and reported 300, configured 600', async () => {
    const { pool: p } = await pool({ keys: [{ secret: fakeSecret('rep'), provider: 'openai', models: ['m'], rpm: 600, tpm: 100_000 }] });
    expect(await keyOf(p)).toMatchObject({ limits: { rpm: 600, tpm: 100_000 }, effectiveLimits: { rpm: 600, tpm: 100_000 }, reportedLimits: { rpm: null, tpm: null } });
    const l = lease(await p.acquire({ model: 'm', estimatedTokens: 10 }));
    await l.release({
      status: 200,
      headers: { 'x-ratelimit-limit-requests': '300', 'x-ratelimit-remaining-requests': '299', 'x-ratelimit-limit-tokens': '150000', 'x-ratelimit-remaining-tokens': '149990' },
    });
    const s = await keyOf(p);
    expect(s.limits).toMatchObject({ rpm: 600, tpm: 100_000, windowSeconds: 1 });
    // tokens: the provider allows more than configured, so the configured limit stands
    expect(s.effectiveLimits).toEqual({ rpm: 300, tpm: 100_000 });
    expect(s.reportedLimits).toEqual({ rpm: 300, tpm: 150_000 });
    // the window shrinks with the effective limit: 300 x 1 s / 60
    expect(s.windows!.requests!.quota).toBe(5);
  });

  it('a provider reporting per window (Azure): the reported limit is shown per minute', async () => {
    const { pool: p } = await pool({ keys: [{ secret: fakeSecret('az'), provider: 'azure', baseURL: 'https://x.openai.azure.com/openai', models: ['m'], rpm: 600 }] });
    const l = lease(await p.acquire({ model: 'm' }));
    // 6 per 1 s window is 360 per minute
    await l.release({ status: 200, headers: { 'x-ratelimit-limit-requests': '6', 'x-ratelimit-remaining-requests': '5' } });
    expect(await keyOf(p)).toMatchObject({ limits: { rpm: 600, limitHeaders: 'window' }, effectiveLimits: { rpm: 360 }, reportedLimits: { rpm: 360, tpm: null } });
  });
});
