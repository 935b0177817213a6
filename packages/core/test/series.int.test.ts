/**
 * The traffic counters the scripts keep per second (lua/includes/series.lua): known traffic reads
 * back exactly per class, tenant and key in status().traffic and series(); a slot of the ring that
 * held an older second is cleared before it counts a new one, and what is older than 15 minutes is
 * not shown; no secret in any of it.
 */
import { describe, expect, it } from 'vitest';
import { PoolKeys, type AdmissionEvent } from '../src/index.js';
import { fakeSecret, poolsClosedAfterAll } from './helpers.js';

const pool = poolsClosedAfterAll();

/** A counter's value as the scripts write it for second `sec`: stamp (sec mod 2^21) x 2^31 + count. */
const counter = (sec: number, n: number) => String(BigInt(sec % 2 ** 21) * 2n ** 31n + BigInt(n));

describe('traffic counters', () => {
  it('admitted, waited, refused per class and tenant; 429s per key and pool-wide; stale slots cleared', async () => {
    const secret = fakeSecret('series');
    const { pool: p, redis, name } = await pool({ keys: [{ secret, name: 'only', models: ['m'], rpm: 60, rpmBurst: 2 }] });
    const keys = new PoolKeys(name);
    const keyId = (await p.status()).keys[0]!.id;

    // stale data: the slots of the next seconds hold a second from 16 minutes ago, with a tenant
    // 'ghost'; and a second 950 s ago (still in the ring, out of the 15 minutes) counts 100
    const nowSec = Math.floor(Number((await redis.time())[0]));
    for (let s = nowSec; s < nowSec + 120; s++) {
      const slot = s % 960;
      await redis.hset(keys.ser, `${slot}:normal:a`, counter(s - 960, 1000), `${slot}:u`, `${(s - 960) % 2 ** 21}\nghost\n`, `${slot}:u:ghost:a`, counter(s - 960, 1000));
    }
    await redis.hset(keys.ser, `${(nowSec - 950) % 960}:normal:a`, counter(nowSec - 950, 100));

    const events: AdmissionEvent[] = [];
    p.on('admission', (e) => events.push(e));

    // 2 admitted at once (normal, tenant t1), both answered 429 with a short Retry-After
    const a = await p.acquire({ model: 'm', tenant: 't1' });
    const b = await p.acquire({ model: 'm', tenant: 't1' });
    if (!a.ok || !b.ok) throw new Error('expected two leases');
    await a.release({ status: 429, latencyMs: 5, headers: { 'retry-after-ms': '300' } });
    await b.release({ status: 429, latencyMs: 5, headers: { 'retry-after-ms': '300' } });
    // 1 waited (low, tenant t2): the key cools, and its bucket is empty: a reservation
    const c = await p.acquire({ model: 'm', tenant: 't2', priority: 'low', maxWaitMs: 30_000 });
    if (!c.ok) throw new Error('expected a reservation');
    await c.release({ status: 200, latencyMs: 5 });
    // 1 refused (critical, tenant t1): the only key is disabled
    await p.disableKey(keyId);
    const d = await p.acquire({ model: 'm', tenant: 't1', priority: 'critical' });
    expect(d.ok).toBe(false);
    await p.enableKey(keyId);

    const st = await p.status({ fresh: true });
    for (const w of [st.traffic!.last60s, st.traffic!.last15m]) {
      expect(w.requests).toBe(3);
      expect(w.refused).toBe(1);
      expect(w.upstream429).toBe(2);
      expect(w.byClass.normal).toMatchObject({ admitted: 2, waited: 0, refused: 0, waitP50Ms: 0, waitP99Ms: 0, meanWaitMs: null });
      expect(w.byClass.low).toMatchObject({ admitted: 0, waited: 1, refused: 0 });
      expect(w.byClass.low.meanWaitMs).toBeGreaterThan(0);
      // the one wait is in a bucket above 0 and at most the 30 s bound
      expect(w.byClass.low.waitP99Ms).toBeGreaterThan(0);
      expect(w.byClass.low.waitP50Ms).toBe(w.byClass.low.waitP99Ms);
      expect(w.byClass.critical).toMatchObject({ admitted: 0, waited: 0, refused: 1, waitP50Ms: null });
      expect(w.byTenant).toEqual({
        t1: { admitted: 2, waited: 0, refused: 1, meanWaitMs: null },
        t2: { admitted: 0, waited: 1, refused: 0, meanWaitMs: w.byClass.low.meanWaitMs },
      });
    }

    // the process saw the same, with its own clock's waits
    expect(events.map((e) => [e.priority, e.tenant, e.result])).toEqual([
      ['normal', 't1', 'admitted'],
      ['normal', 't1', 'admitted'],
      ['low', 't2', 'waited'],
      ['critical', 't1', 'refused'],
    ]);
    expect(events[2]!.waitMs).toBeGreaterThan(0);

    // the charts: the same per second, and the key's requests and 429s per ten seconds
    const s = (await p.series({ fresh: true }))!;
    const sum = (xs: number[]) => xs.reduce((x, y) => x + y, 0);
    expect(s.points).toBe(900);
    expect(sum(s.requests)).toBe(3);
    expect(sum(s.refused)).toBe(1);
    expect(sum(s.upstream429)).toBe(2);
    expect(sum(s.byClass.normal.admitted)).toBe(2);
    expect(sum(s.byClass.low.waited)).toBe(1);
    expect(s.keys.top).toHaveLength(1);
    expect(s.keys.top[0]).toMatchObject({ id: keyId, label: 'only' });
    expect(sum(s.keys.top[0]!.requests)).toBe(3);
    expect(sum(s.keys.top[0]!.upstream429)).toBe(2);
    // sinceSec keeps the points from then on
    const tail = (await p.series({ sinceSec: s.from + 890 }))!;
    expect(tail.points).toBeLessThanOrEqual(10 + 5);
    expect(tail.requests).toHaveLength(tail.points);

    // stale slots: a slot whose tenants are now a current second's kept nothing of the old one's
    const all = await redis.hgetall(keys.ser);
    let taken = 0;
    for (const [f, v] of Object.entries(all)) {
      if (!/^\d+:u$/.test(f) || Number(v.split('\n')[0]) < nowSec % 2 ** 21) continue;
      taken++;
      const slot = f.split(':')[0];
      expect(v).not.toContain('ghost');
      expect(Object.keys(all).filter((g) => g.startsWith(`${slot}:u:ghost`))).toEqual([]);
    }
    expect(taken).toBeGreaterThan(0);
    expect(JSON.stringify(st.traffic)).not.toContain('ghost');

    // no secret anywhere
    const text = JSON.stringify([st, s, all]);
    expect(text).not.toContain(secret);
    expect(text).not.toContain(secret.slice(-12));
  });

  it('tenants beyond 32 in a second count as ~; a ring of 900 busy seconds reads back whole', async () => {
    const { pool: p, redis, name } = await pool({ keys: [{ secret: fakeSecret('series2'), name: 'k', models: ['m'], rpm: 100_000 }] });
    const keys = new PoolKeys(name);
    // 811 full past seconds, none in the last 60 s (32 tenants each), read back in several small calls (written before
    // the first read: a process reads a past second once)
    const nowSec = Math.floor(Number((await redis.time())[0]));
    for (let s = nowSec - 880; s <= nowSec - 70; s += 1) {
      const p0 = `${s % 960}:`;
      const f: string[] = [`${p0}normal:a`, counter(s, 2), `${p0}low:w`, counter(s, 1), `${p0}low:h3`, counter(s, 1), `${p0}low:ms`, counter(s, 40)];
      const names: string[] = [];
      for (let t = 0; t < 32; t++) {
        names.push(`x${t}`);
        f.push(`${p0}u:x${t}:a`, counter(s, 1));
      }
      f.push(`${p0}u`, `${s % 2 ** 21}\n${names.join('\n')}\n`);
      await redis.hset(keys.ser, ...f);
    }
    const leases = await Promise.all(Array.from({ length: 40 }, (_, i) => p.acquire({ model: 'm', tenant: `ten${i}` })));
    await Promise.all(leases.map((l) => (l.ok ? l.release({ status: 200, latencyMs: 1 }) : undefined)));
    const st = await p.status({ fresh: true });
    const w = st.traffic!.last60s;
    expect(w.requests).toBe(40);
    const tenants = Object.values(w.byTenant).reduce((n, t) => n + t.admitted, 0);
    expect(tenants).toBe(40);
    // listed: the 20 tenants with the most requests over 15 minutes (x*), the others under '~'
    expect(Object.keys(w.byTenant)).toEqual(['~']);
    expect(Object.keys(st.traffic!.last15m.byTenant)).toHaveLength(21);
    expect(st.traffic!.last15m.byTenant['x0']).toEqual({ admitted: 811, waited: 0, refused: 0, meanWaitMs: null });
    // in Redis, at most 32 tenants per second are named: the 40 new ones fell in one or two seconds
    const all = await redis.hgetall(keys.ser);
    const named = Object.keys(all).filter((f) => /^\d+:u:ten\d+:a$/.test(f));
    expect(named.length).toBeGreaterThanOrEqual(32);
    expect(named.length).toBeLessThanOrEqual(40);
    if (named.length === 32) expect(Object.keys(all).some((f) => /^\d+:u:~:a$/.test(f))).toBe(true);

    const st2 = await p.status({ fresh: true });
    expect(st2.traffic!.last15m.byClass.normal.admitted).toBe(2 * 811 + 40);
    expect(st2.traffic!.last15m.byClass.low).toMatchObject({ waited: 811, waitP99Ms: 50, meanWaitMs: 40 });
    expect(Object.keys(st2.traffic!.last15m.byTenant).length).toBeLessThanOrEqual(21);
  });

  it('per key: the current ten-second bucket is in the key state, a finished one is written once to its ring field, a stale field is not read', async () => {
    const secret = fakeSecret('series3');
    const spec = { secret, name: 'kk', models: ['m'], rpm: 100_000 };
    const { pool: p, redis, name } = await pool({ keys: [spec] });
    const keys = new PoolKeys(name);
    const keyId = (await p.status()).keys[0]!.id;
    const bucketNow = async () => Math.floor(Number((await redis.time())[0]) / 10);
    const use = async (status: number) => {
      const l = await p.acquire({ model: 'm' });
      if (!l.ok) throw new Error('no lease');
      await l.release({ status, latencyMs: 1, ...(status === 429 ? { headers: { 'retry-after-ms': '1' } } : {}) });
    };
    // two requests (one 429) in a bucket, then one in the next
    let b0 = await bucketNow();
    await use(200);
    await use(429);
    if ((await bucketNow()) !== b0) {
      // crossed a boundary between the two: start again in this bucket
      b0 = await bucketNow();
      await use(200);
      await use(429);
    }
    while ((await bucketNow()) === b0) await new Promise((r) => setTimeout(r, 100));
    await use(200);
    const field = await redis.hget(keys.ser, `k${b0 % 96}:${keyId}`);
    const [b, n, e] = field!.split(':').map(Number);
    expect(b).toBe(b0);
    expect(n).toBeGreaterThanOrEqual(2);
    expect(e).toBeGreaterThanOrEqual(1);

    // history seeded for an earlier bucket, and a stale field (a bucket from 16 minutes before) in the ring
    await redis.hset(keys.ser, `k${(b0 - 5) % 96}:${keyId}`, `${b0 - 5}:7:2`, `k${(b0 - 6) % 96}:${keyId}`, `${b0 - 6 - 96}:100:0`);
    // a process that reads it for the first time (its own reader)
    const other = await pool({ pool: name, keys: [spec] });
    const s = (await other.pool.series())!;
    const top = s.keys.top.find((k) => k.id === keyId)!;
    const at = (bucket: number) => top.requests[bucket - s.keys.from / 10]!;
    expect(at(b0 - 5)).toBe(7);
    expect(top.upstream429[b0 - 5 - s.keys.from / 10]).toBe(2);
    expect(at(b0 - 6)).toBe(0);
    expect(at(b0)).toBe(n);
    expect(top.upstream429[b0 - s.keys.from / 10]).toBe(e);
    const sum = top.requests.reduce((x, y) => x + y, 0);
    expect(sum).toBe(7 + n! + 1);
  });
});

describe('traffic counters of keys gone from the pool', () => {
  it('housekeeping deletes the per-key fields of a removed key, and keeps those of the others', async () => {
    const { pool: p, redis, name } = await pool({
      keys: [
        { secret: fakeSecret('stays'), models: ['m'] },
        { secret: fakeSecret('goes'), models: ['m'] },
      ],
    });
    const keys = new PoolKeys(name);
    const [stays, goes] = (await p.status({ fresh: true })).keys.map((k) => k.id);
    // two finished ten-second buckets per key, as release-11.lua writes them
    for (const id of [stays!, goes!]) await redis.hset(keys.ser, `k3:${id}`, '7', `k4:${id}`, '9');
    await redis.hset(keys.ser, '12:normal:a', '5');
    await p.removeKey(goes!);
    await p.housekeep();
    const left = Object.keys(await redis.hgetall(keys.ser)).sort();
    expect(left).toEqual([`k3:${stays}`, `k4:${stays}`, '12:normal:a'].sort());
  });
});
