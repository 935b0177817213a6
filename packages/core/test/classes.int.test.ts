/**
 * Priority classes and fair shares between tenants (issue 16; lua/includes/classes.lua): low
 * keeps priority.keepFree of a key's window free while a higher class waited recently, and may
 * take it when nothing higher waited; a normal caller that waits is served before low callers
 * that waited longer; tenants of a class flooding the pool get admissions in proportion to their
 * weights, not to how many callers they run.
 */
import { describe, expect, it } from 'vitest';
import { PoolKeys, type Lease, type PoolConfigInput } from '../src/index.js';
import { fakeSecret, poolsClosedAfterAll } from './helpers.js';

const pool = poolsClosedAfterAll();

/** Key a: 10 requests per 10 s window; key b: 1 per 10 s (a normal refused there has waited). */
function twoKeys(priority: PoolConfigInput['priority']): PoolConfigInput {
  return {
    keys: [
      { secret: fakeSecret('cls-a'), models: ['a'], rpm: 60, window: 10 },
      { secret: fakeSecret('cls-b'), models: ['b'], rpm: 6, window: 10 },
    ],
    ...(priority ? { priority } : {}),
  } as PoolConfigInput;
}

async function take(p: Awaited<ReturnType<typeof pool>>['pool'], model: string, priority: 'low' | 'normal', n: number): Promise<Lease[]> {
  const out: Lease[] = [];
  for (let i = 0; i < n; i++) {
    const r = await p.acquire({ model, priority });
    if (!r.ok) throw new Error(`acquire ${i} of ${n} refused: ${r.reason}`);
    out.push(r);
  }
  return out;
}

/** `callers` low callers that acquire and release `model` in a loop for `ms`, each waiting up to `maxWaitMs`. */
function keepBusy(p: Awaited<ReturnType<typeof pool>>['pool'], model: string, callers: number, ms: number, maxWaitMs: number): Promise<void[]> {
  const stopAt = Date.now() + ms;
  const loop = async () => {
    while (Date.now() < stopAt) {
      const r = await p.acquire({ model, priority: 'low', maxWaitMs });
      if (r.ok) await r.release({ status: 200, latencyMs: 1 });
    }
  };
  return Promise.all(Array.from({ length: callers }, loop));
}

describe('priority classes', () => {
  it('low cannot take the last 20% of a window while normal waited recently', async () => {
    // spread off: low takes its 8 at once (the spreading has its own test below)
    const { pool: p, redis, name } = await pool(twoKeys({ keepFree: { low: 0.2 }, higherWaitedMs: 60_000, spread: false }));
    await take(p, 'a', 'low', 8);
    // a normal request refused for capacity (on key b): normal has waited
    await take(p, 'b', 'normal', 1);
    const refused = await p.acquire({ model: 'b', priority: 'normal' });
    expect(refused).toMatchObject({ ok: false, reason: 'rate_limited' });
    expect(Number(await redis.hget(`kp:{${name}}:meta`, 'hw:normal'))).toBeGreaterThan(0);

    const low = await p.acquire({ model: 'a', priority: 'low' });
    expect(low).toMatchObject({ ok: false, reason: 'kept_free' });
    expect((low as { retryAfterMs: number }).retryAfterMs).toBeGreaterThan(0);
    // the kept share is there for normal
    await take(p, 'a', 'normal', 2);
    expect(await p.acquire({ model: 'a', priority: 'normal' })).toMatchObject({ ok: false, reason: 'rate_limited' });
  });

  it('low takes the whole window when nothing higher waited', async () => {
    const { pool: p } = await pool(twoKeys({ keepFree: { low: 0.2 }, higherWaitedMs: 60_000, spread: false }));
    await take(p, 'a', 'low', 10);
    expect(await p.acquire({ model: 'a', priority: 'low' })).toMatchObject({ ok: false, reason: 'rate_limited' });
  });

  it('after a normal request waited longer than a slot, low leaves priority.headroom.low of a window unused: the next normal starts at once', async () => {
    // key a: 10 per rolling second (a normal request waits there about a window, ten slots); b and
    // c: 10 per 10 s (long enough that a slow host does not see their entries expire mid-test);
    // spread off so low takes what it may at once
    const run = async (headroom: number) => {
      const { pool: p } = await pool({
        keys: [
          { secret: fakeSecret(`cls-h${headroom}-a`), models: ['a'], rpm: 600, window: 1 },
          { secret: fakeSecret(`cls-h${headroom}-b`), models: ['b'], rpm: 60, window: 10 },
          { secret: fakeSecret(`cls-h${headroom}-c`), models: ['c'], rpm: 60, window: 10 },
        ],
        priority: { keepFree: { low: 0.2 }, headroom: { low: headroom }, higherWaitedMs: 60_000, spread: false },
      });
      /** low acquires on `model` until refused: how many it got, and why the next was refused */
      const lowUntilRefused = async (model: string) => {
        for (let n = 0; n < 20; n++) {
          const r = await p.acquire({ model, priority: 'low' });
          if (!r.ok) return `${n} ${r.reason}`;
        }
        return 'never refused';
      };
      await take(p, 'a', 'low', 10); // nothing higher waited: the whole window
      // a normal request refused at once has waited, not long: low keeps its share (8, not binding
      // here) and leaves no headroom
      expect(await p.acquire({ model: 'a', priority: 'normal' })).toMatchObject({ ok: false, reason: 'rate_limited' });
      await take(p, 'b', 'normal', 3);
      const lowB = await lowUntilRefused('b');
      // a normal request that waits for a place: about a window here, longer than one slot (100 ms)
      const t0 = performance.now();
      const waited = await p.acquire({ model: 'a', priority: 'normal', maxWaitMs: 3000 });
      expect(waited).toMatchObject({ ok: true });
      expect(performance.now() - t0).toBeGreaterThan(500);
      await (waited as Lease).release({ status: 200, latencyMs: 1 });
      await take(p, 'c', 'normal', 3);
      const lowC = await lowUntilRefused('c');
      const next = await p.acquire({ model: 'c', priority: 'normal' });
      return { lowB, lowC, nextNormalNow: next.ok };
    };
    expect(await run(1)).toEqual({ lowB: '7 rate_limited', lowC: '6 kept_free', nextNormalNow: true });
    expect(await run(0)).toEqual({ lowB: '7 rate_limited', lowC: '7 rate_limited', nextNormalNow: false });
  }, 20_000);

  it('a normal caller that waits is served before low callers waiting longer', async () => {
    // 10 per rolling second; low callers come first, then normal ones, all willing to wait 8 s
    const { pool: p } = await pool({
      keys: [
        { secret: fakeSecret('cls-w'), models: ['w'], rpm: 600, window: 1 },
        { secret: fakeSecret('cls-x'), models: ['x'], rpm: 6, window: 10 },
      ],
      priority: { keepFree: { low: 0.2 }, higherWaitedMs: 5000, spread: false },
    });
    await take(p, 'w', 'low', 10);
    // normal waited (refused on x)
    await take(p, 'x', 'normal', 1);
    expect(await p.acquire({ model: 'x', priority: 'normal' })).toMatchObject({ ok: false });
    const lows = Array.from({ length: 10 }, () => p.acquire({ model: 'w', priority: 'low', maxWaitMs: 8000 }));
    // the low callers have been told to come back before the normal ones arrive
    await new Promise((r) => setTimeout(r, 100));
    const normals = Array.from({ length: 10 }, () => p.acquire({ model: 'w', priority: 'normal', maxWaitMs: 8000 }));
    const started = async (all: Promise<unknown>[]) =>
      (await Promise.all(all)).map((r) => {
        expect(r).toMatchObject({ ok: true });
        return (r as Lease).acquiredAt;
      });
    const [n, l] = await Promise.all([started(normals), started(lows)]);
    expect(Math.max(...n)).toBeLessThanOrEqual(Math.min(...l));
  }, 30_000);

  it('low spreads its requests over the window (spread, the default): no burst to wait behind, the whole quota used', async () => {
    // 10 per rolling second: low starts one per 100 ms at most, holding at most one place ahead
    const { pool: p } = await pool({ keys: [{ secret: fakeSecret('cls-s'), models: ['s'], rpm: 600, window: 1 }], priority: { keepFree: { low: 0.2 } } });
    const starts: number[] = [];
    const stopAt = Date.now() + 3200;
    const loop = async () => {
      while (Date.now() < stopAt) {
        const r = await p.acquire({ model: 's', priority: 'low', maxWaitMs: 3000 });
        if (!r.ok) continue;
        starts.push(r.acquiredAt);
        await r.release({ status: 200, latencyMs: 1 });
      }
    };
    // 8 callers at once: without the spreading, 10 start together and the next 10 a window later
    await Promise.all(Array.from({ length: 8 }, loop));
    starts.sort((a, b) => a - b);
    // on a schedule of one per 100 ms, a late caller catching up once: any 3 starts span at least one
    // gap and any 4 at least two (a burst put all 10 at one instant)
    for (let i = 0; i + 2 < starts.length; i++) expect(starts[i + 2]! - starts[i]!).toBeGreaterThanOrEqual(99);
    for (let i = 0; i + 3 < starts.length; i++) expect(starts[i + 3]! - starts[i]!).toBeGreaterThanOrEqual(199);
    // and the key's quota is used: 10 a second (a little under it with the 20 ms margin)
    const span = (starts.at(-1)! - starts[0]!) / 1000;
    expect(starts.length - 1).toBeGreaterThanOrEqual(Math.floor(0.85 * 10 * span));
  }, 20_000);

  it('a normal caller arriving while low keeps a key full waits about one gap, not for the window', async () => {
    // low at the whole quota (10 a second, nothing higher waited yet), then a normal caller every 250 ms
    const { pool: p } = await pool({ keys: [{ secret: fakeSecret('cls-n'), models: ['n'], rpm: 600, window: 1 }], priority: { keepFree: { low: 0.2 } } });
    const lows = keepBusy(p, 'n', 8, 3500, 3000);
    await new Promise((r) => setTimeout(r, 1500));
    const waits: number[] = [];
    for (let i = 0; i < 6; i++) {
      const t0 = performance.now();
      const r = await p.acquire({ model: 'n', priority: 'normal', maxWaitMs: 3000 });
      expect(r).toMatchObject({ ok: true });
      if (!r.ok) break;
      // its wait: until its start (a reservation sleeps until then)
      waits.push(performance.now() - t0);
      await r.release({ status: 200, latencyMs: 1 });
      await new Promise((res) => setTimeout(res, 250));
    }
    await lows;
    // one gap (100 ms) and one low place ahead at most, plus the machine's scheduling; a burst of low would
    // hold the key up to a window (1 s)
    waits.sort((a, b) => a - b);
    expect(waits[Math.floor(waits.length / 2)]!).toBeLessThan(300);
  }, 20_000);
});

/** Two tenants flood one key (20 per rolling second) with `loops` callers each; their admissions over 6 s, once shares settled. */
async function flood(weights: Record<string, number>, loops: Record<string, number>): Promise<Record<string, number>> {
  const { pool: p } = await pool({ keys: [{ secret: fakeSecret(`ten-${Object.values(weights).join('-')}`), models: ['t'], rpm: 1200, window: 1 }], priority: { weights } });
  const admitted: Record<string, number[]> = {};
  const stopAt = Date.now() + 9000;
  const loop = async (tenant: string) => {
    while (Date.now() < stopAt) {
      const r = await p.acquire({ model: 't', tenant, maxWaitMs: 10_000 });
      if (!r.ok) continue;
      (admitted[tenant] ??= []).push(r.acquiredAt);
      await r.release({ status: 200, latencyMs: 1 });
    }
  };
  await Promise.all(Object.entries(loops).flatMap(([t, n]) => Array.from({ length: n }, () => loop(t))));
  // the steady part: after the first second (shares settle), before the end
  const all = Object.values(admitted).flat().sort((a, b) => a - b);
  const from = all[0]! + 2000;
  const to = from + 6000;
  return Object.fromEntries(Object.entries(admitted).map(([t, xs]) => [t, xs.filter((x) => x >= from && x < to).length]));
}

describe('fair shares between tenants', () => {
  it('weights 1 and 1: a tenant running three times the callers gets half, not three quarters', async () => {
    const n = await flood({ big: 1, small: 1 }, { big: 24, small: 8 });
    const share = n.big! / (n.big! + n.small!);
    expect(n.big! + n.small!).toBeGreaterThan(20);
    expect(share).toBeGreaterThan(0.35);
    expect(share).toBeLessThan(0.62);
  }, 30_000);

  it('weights 3 and 1: admissions follow the weights with equal callers', async () => {
    const n = await flood({ heavy: 3, light: 1 }, { heavy: 16, light: 16 });
    const share = n.heavy! / (n.heavy! + n.light!);
    expect(n.heavy! + n.light!).toBeGreaterThan(20);
    expect(share).toBeGreaterThan(0.65);
    expect(share).toBeLessThan(0.85);
  }, 30_000);

  it('while low is admitted, no tenant of normal is held back: its place would go to low, not to another tenant', async () => {
    const { pool: p } = await pool(twoKeys(undefined));
    // class normal contended: tenant y waited (refused for capacity on b) with one admission
    expect(await p.acquire({ model: 'b', tenant: 'y' })).toMatchObject({ ok: true });
    expect(await p.acquire({ model: 'b', tenant: 'y' })).toMatchObject({ ok: false, reason: 'rate_limited' });
    // low takes what normal leaves on key a
    expect(await p.acquire({ model: 'a', priority: 'low' })).toMatchObject({ ok: true });
    // x goes past y's count (y backlogged): not held while low is taking the keys
    for (let i = 0; i < 5; i++) expect(await p.acquire({ model: 'a', tenant: 'x' })).toMatchObject({ ok: true });
  });

  it('a tenant sending less than its share is not queued behind the one flooding', async () => {
    // 48 callers of one tenant on a key of 20 a second: without the rule their queue of places is
    // over 2 s deep (with 24 it was about one window, which on a loaded machine told little apart)
    const FLOODERS = 48;
    const { pool: p } = await pool({ keys: [{ secret: fakeSecret('ten-quiet'), models: ['q'], rpm: 1200, window: 1 }] });
    const waits: Record<string, number[]> = { flood: [], quiet: [] };
    const stopAt = Date.now() + 5000;
    const once = async (tenant: string) => {
      const t0 = Date.now();
      const r = await p.acquire({ model: 'q', tenant, maxWaitMs: 10_000 });
      if (!r.ok) return;
      if (Date.now() > stopAt - 3500) waits[tenant]!.push(Date.now() - t0);
      await r.release({ status: 200, latencyMs: 1 });
    };
    const flood = async () => {
      while (Date.now() < stopAt) await once('flood');
    };
    // 4 a second against a key of 20: a fifth of the key, far below half
    const quiet = async () => {
      while (Date.now() < stopAt) await Promise.all([once('quiet'), new Promise((r) => setTimeout(r, 250))]);
    };
    await Promise.all([...Array.from({ length: FLOODERS }, flood), quiet()]);
    const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    expect(waits.quiet!.length).toBeGreaterThan(5);
    // with full windows the next free place may be the next window's: no better than "less" (on the
    // cluster target the quiet tenant's median is sometimes ~0.77 s against the flooder's ~1 s: the
    // protection is weaker than it should be, see docs/benchmarks.md bench:mixed)
    expect(median(waits.quiet!)).toBeLessThan(median(waits.flood!));
  }, 30_000);
});

describe('bounded work', () => {
  it('low over 40 keys all at their kept share: one kept_free answer, not a storm of busy tries', async () => {
    const keys = Array.from({ length: 40 }, (_, i) => ({ secret: fakeSecret(`kept-${i}`), models: ['k'], rpm: 60, window: 10 }));
    const { pool: p, redis, name } = await pool({ keys, priority: { keepFree: { low: 0.2 }, higherWaitedMs: 60_000 } } as PoolConfigInput);
    // 9 of every key's 10 per window taken (normal keeps nothing free), over the 8 low may take; then normal waited
    const ids = (await p.status({ fresh: true })).keys.map((k) => k.id);
    for (const id of ids) {
      for (let i = 0; i < 9; i++) {
        const r = await p.acquire({ model: 'k', exclude: ids.filter((x) => x !== id) });
        if (!r.ok) throw new Error(`fill ${id}: ${r.reason}`);
      }
    }
    const [sec] = await redis.time();
    await redis.hset(new PoolKeys(name).meta, 'hw:normal', String(Number(sec) * 1000));
    // the script calls (EVALSHA, or FCALL where the scripts run as Redis Functions) this pool's own
    // client sends (INFO commandstats would count those of the files running beside this one: thousands)
    let scriptCalls = 0;
    const send = redis.sendCommand.bind(redis) as (cmd: { name: string }, ...rest: unknown[]) => unknown;
    (redis as unknown as { sendCommand: typeof send }).sendCommand = (cmd, ...rest) => {
      if (cmd.name === 'evalsha' || cmd.name === 'eval' || cmd.name === 'fcall') scriptCalls++;
      return send(cmd, ...rest);
    };
    const before = scriptCalls;
    const r = await p.acquire({ model: 'k', priority: 'low' });
    expect(r).toMatchObject({ ok: false, reason: 'kept_free' });
    expect(scriptCalls - before).toBeGreaterThan(0); // the count sees the pool's calls
    // a bound, not an exact count (the storm was 51 calls, ending in rate_limited 1 ms)
    expect(scriptCalls - before).toBeLessThan(20);
  }, 60_000);

  it('low callers waiting on a full key are given turns one after another, not all told the same instant', async () => {
    // 10 per rolling second, filled by normal; then 12 low callers, each willing to wait 5 s
    const { pool: p, redis } = await pool({ keys: [{ secret: fakeSecret('cls-turn'), models: ['u'], rpm: 600, window: 1 }], priority: { keepFree: { low: 0.2 } } });
    await take(p, 'u', 'normal', 10);
    let scriptCalls = 0;
    const send = redis.sendCommand.bind(redis) as (cmd: { name: string }, ...rest: unknown[]) => unknown;
    (redis as unknown as { sendCommand: typeof send }).sendCommand = (cmd, ...rest) => {
      if (cmd.name === 'evalsha' || cmd.name === 'eval' || cmd.name === 'fcall') scriptCalls++;
      return send(cmd, ...rest);
    };
    const lows = await Promise.all(Array.from({ length: 12 }, () => p.acquire({ model: 'u', priority: 'low', maxWaitMs: 5000 })));
    const admitted = lows.filter((r) => r.ok).length;
    // all served within the wait (10 a second)
    expect(admitted).toBe(12);
    // told the same instant, every waiter comes back at every start: 12 + 11 + ... + 1 = 78 tries
    // (measured without turns: 78); with turns 36 (a first refusal each, a turn each, some missed)
    expect(scriptCalls).toBeLessThan(50);
  }, 20_000);

  it("turns follow the keys' capacity, per key group: a fast key's waiting callers are not paced by a slow one's", async () => {
    // f: 100 a second from a bucket of 1 (one every 10 ms); s: 10 per rolling second, filled by normal
    const { pool: p } = await pool({
      keys: [
        { secret: fakeSecret('cls-turn-f'), models: ['f'], rpm: 6000, rpmBurst: 1 },
        { secret: fakeSecret('cls-turn-s'), models: ['s'], rpm: 600, window: 1 },
      ],
      priority: { keepFree: { low: 0.2 } },
    });
    await take(p, 's', 'normal', 10);
    const one = async (model: string) => {
      const r = await p.acquire({ model, priority: 'low', maxWaitMs: 5000 });
      if (r.ok) await r.release({ status: 200, latencyMs: 1 });
      return r.ok;
    };
    const slow = Promise.all(Array.from({ length: 30 }, () => one('s')));
    const t0 = performance.now();
    const fast = await Promise.all(Array.from({ length: 20 }, () => one('f')));
    const took = performance.now() - t0;
    expect(fast.every(Boolean)).toBe(true);
    // 20 at one every 10 ms: about 0.2 s; turns paced pool-wide at the slow key's rate (or 10 a
    // second after a quiet second) took 1.8 to 2.4 s
    expect(took).toBeLessThan(1000);
    await slow;
  }, 20_000);

  it('a caller whose turn would come after its wait still tries within its wait instead of giving up at once', async () => {
    // 10 per rolling second kept busy by 24 low callers, whose turns reach about a second ahead
    const { pool: p } = await pool({ keys: [{ secret: fakeSecret('cls-late'), models: ['l'], rpm: 600, window: 1 }], priority: { keepFree: { low: 0.2 } } });
    const loops = keepBusy(p, 'l', 24, 3000, 2000);
    await new Promise((r) => setTimeout(r, 1200));
    // 5 callers that wait 600 ms: their turn would be past it, a key frees sooner
    const took = await Promise.all(
      Array.from({ length: 5 }, async () => {
        const t0 = performance.now();
        const r = await p.acquire({ model: 'l', priority: 'low', maxWaitMs: 600 });
        if (r.ok) await r.release({ status: 200, latencyMs: 1 });
        return performance.now() - t0;
      }),
    );
    await loops;
    // told to come back exactly as its wait ended, a caller saw that moment already past on the
    // answer's return and gave up within a few ms (5 of 5); each now comes back at a random time
    // within its wait: the longest of five waits well over 100 ms (all five under: about 1 in 10,000)
    expect(Math.max(...took)).toBeGreaterThan(100);
    expect(Math.max(...took)).toBeLessThan(1500);
  }, 20_000);

  it("a class's tenant record stays bounded whatever the number of tenants", async () => {
    const { pool: p, redis, name } = await pool({ keys: [{ secret: fakeSecret('tq-cap'), models: ['t'], rpm: 1 }] } as PoolConfigInput);
    const first = await p.acquire({ model: 't' });
    expect(first.ok).toBe(true);
    // every request refused for capacity, each from a new tenant
    for (let i = 0; i < 300; i++) expect((await p.acquire({ model: 't', tenant: `tenant-${i}` })).ok).toBe(false);
    const raw = (await redis.hget(new PoolKeys(name).meta, 'tq:normal'))!;
    const q = JSON.parse(raw) as Record<string, unknown>;
    expect(Object.keys(q).length).toBeLessThanOrEqual(65);
    expect(q['~']).toBeDefined();
  }, 60_000);
});
