/**
 * The pool's own time decisions on an injected clock, against a real Redis: acquire's wait, its
 * deadline and its abort, and an HTTP-date Retry-After. No test sleeps for the time it checks (the
 * scripts still read Redis TIME; only the TypeScript side's decisions follow the clock).
 */
import { describe, expect, it, vi } from 'vitest';
import { ManualClock, type AcquireResult, type Lease } from '../src/index.js';
import { fakeSecret, poolsClosedAfterAll } from './helpers.js';

const pool = poolsClosedAfterAll();

function lease(r: AcquireResult): Lease {
  if (!r.ok) throw new Error(`expected a lease, got ${JSON.stringify(r)}`);
  return r;
}

/** A pool of one key with one slot, on a manual clock, and a lease holding that slot. */
async function oneSlotTaken(tag: string) {
  const clock = new ManualClock();
  const { pool: p } = await pool({ keys: [{ secret: fakeSecret(tag), models: ['m'], maxConcurrent: 1 }] }, { clock });
  const held = lease(await p.acquire({ model: 'm' }));
  return { clock, p, held };
}

/** Until the acquire under test has gone to sleep on the clock. */
const asleep = (clock: ManualClock) => vi.waitFor(() => expect(clock.pending).toBe(1));

describe('acquire on an injected clock', () => {
  it('waits on the pool clock (a full key: looked at again every concurrencyRecheckMs) and takes the slot once it frees', async () => {
    const { clock, p, held } = await oneSlotTaken('clk-wait');
    let settled = false;
    const waiting = p.acquire({ model: 'm', maxWaitMs: 10_000 }).finally(() => (settled = true));
    await asleep(clock);
    // woken after the recheck interval (100 ms + jitter): still full, so asleep again
    await clock.advance(150);
    await asleep(clock);
    expect(settled).toBe(false);
    await held.release({ status: 200, latencyMs: 1 });
    await clock.advance(150);
    const second = lease(await waiting);
    expect(second.keyId).toBe(held.keyId);
    await second.release({ status: 200, latencyMs: 1 });
  });

  it('gives up once the pool clock passes maxWaitMs, whatever the real time', async () => {
    const { clock, p, held } = await oneSlotTaken('clk-deadline');
    const [t0, c0] = [Date.now(), clock.now()];
    let result: AcquireResult | undefined;
    void p.acquire({ model: 'm', maxWaitMs: 1000 }).then((r) => (result = r));
    // each time it sleeps (a recheck in ~100 ms), move the clock on; a wake may sleep again at once
    for (let sleeps = 0; ; sleeps++) {
      await vi.waitFor(() => expect(result !== undefined || clock.pending === 1).toBe(true));
      if (result) break;
      expect(sleeps).toBeLessThan(20);
      await clock.advance(100);
    }
    expect(result).toMatchObject({ ok: false, reason: 'concurrency' });
    // it stopped only when the next recheck would end past the deadline, on the clock...
    expect(clock.now() - c0).toBeGreaterThanOrEqual(800);
    expect(clock.pending).toBe(0);
    // ...not in real time
    expect(Date.now() - t0).toBeLessThan(1000);
    await held.release({ status: 200, latencyMs: 1 });
  });

  it('a wait on the clock is aborted by the signal, with its reason', async () => {
    const { clock, p, held } = await oneSlotTaken('clk-abort');
    const ac = new AbortController();
    const waiting = p.acquire({ model: 'm', maxWaitMs: 60_000, signal: ac.signal });
    await asleep(clock);
    ac.abort(new Error('caller gave up'));
    await expect(waiting).rejects.toThrow('caller gave up');
    expect(clock.pending).toBe(0);
    await held.release({ status: 200, latencyMs: 1 });
  });
});

describe('Retry-After as an HTTP date, on the pool clock', () => {
  it('cools for the date minus the pool clock time (the system clock would see it years away, capped at cooling.maxMs)', async () => {
    const clock = new ManualClock(Date.UTC(2031, 0, 1));
    const { pool: p } = await pool({ keys: [{ secret: fakeSecret('clk-date'), models: ['m'] }] }, { clock });
    const l = lease(await p.acquire({ model: 'm' }));
    const r = await l.release({ status: 429, latencyMs: 1, headers: { 'retry-after': new Date(clock.now() + 30_000).toUTCString() } });
    expect(r.transition).toBe('cooling');
    // cooling runs on Redis time: 30 s from the release
    const until = Date.parse((await p.status()).keys[0]!.coolingUntil!);
    expect(until - Date.now()).toBeGreaterThan(28_000);
    expect(until - Date.now()).toBeLessThanOrEqual(30_000);
  });
});
