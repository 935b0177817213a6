/**
 * A partitioned pool (issue 15, item 3): keys spread over partitions of their own hash tags, leases
 * and releases in the key's partition, limits exact across partitions and processes (two pools on
 * one Redis), status summed over the partitions, gateway tokens admitted exactly in partition 0, and
 * a partition count other than the pool's own refused. Runs on standalone Redis and on the 3-master
 * Cluster (there each partition is its own slot, so a CROSSSLOT error would fail every call).
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { childEnv, connectTestRedis, fixtureArgs, testTarget, uniqueName } from '@keypool/testkit';
import type { Cluster } from 'ioredis';
import { ConfigError, KeyPool, PartitionedPool, hashSlot, keyIdOf, partitionOf, partitionTag, type KeySpecInput, type Lease, type PoolConfigInput } from '../src/index.js';
import { dumpPool, fakeSecret, memoryLogger, secretFragments, sleep } from './helpers.js';

const fixture = fileURLToPath(new URL('./fixtures/partitioned-child.ts', import.meta.url));
const opened: { close(): Promise<void> }[] = [];
const clients: ReturnType<typeof connectTestRedis>[] = [];
afterAll(async () => {
  for (const p of opened) await p.close();
  for (const c of clients) c.disconnect();
});

async function partitioned(config: PoolConfigInput): Promise<PartitionedPool> {
  const redis = connectTestRedis();
  clients.push(redis);
  const pool = await PartitionedPool.connect({ redis, config: { status: { snapshotMs: 0 }, ...config }, logger: memoryLogger().logger });
  opened.push(pool);
  return pool;
}

/** `n` keys, at least `min` in each of `parts` partitions (secrets drawn until the spread is so). */
function spreadKeys(n: number, parts: number, min: number, spec: Omit<KeySpecInput, 'secret'>): KeySpecInput[] {
  for (;;) {
    const keys = Array.from({ length: n }, (_, i) => ({ ...spec, secret: fakeSecret(`part${i}`) }));
    const counts = new Array<number>(parts).fill(0);
    for (const k of keys) counts[partitionOf(keyIdOf(k.secret), parts)]!++;
    if (counts.every((c) => c >= min)) return keys;
  }
}

describe(`partitioned pool (${testTarget()})`, () => {
  it('spreads keys over the partitions, leases and releases in each, and sums status over them', async () => {
    const name = uniqueName('part');
    const keys = spreadKeys(9, 3, 2, { models: ['gpt-4o-mini'], rpm: 600, tpm: 1_000_000 });
    const pool = await partitioned({ pool: name, partitions: 3, keys });
    const redis = clients.at(-1)!;
    // every key's settings are in its own partition's cfg, and only there
    for (const k of keys) {
      const id = keyIdOf(k.secret);
      const p = partitionOf(id, 3);
      for (let q = 0; q < 3; q++) expect(await redis.hexists(pool.keysOf(q).cfg, id)).toBe(q === p ? 1 : 0);
    }
    expect(pool.keysOf(0).cfg).toBe(`kp:{${name}}:cfg`);
    if (testTarget() === 'cluster') {
      // the cluster of equal slot ranges holds each partition on a master of its own
      const masters = [0, 1, 2].map((p) => (redis as Cluster).slots[hashSlot(partitionTag(name, p, 3))]![0]);
      expect(new Set(masters).size).toBe(3);
    }
    const byPartition = new Map<number, number>();
    const leases: Lease[] = [];
    for (let i = 0; i < 60; i++) {
      const l = await pool.acquire({ model: 'gpt-4o-mini', estimatedTokens: 10, route: 'chat' });
      if (!l.ok) throw new Error(`acquire refused: ${l.reason}`);
      leases.push(l);
      byPartition.set(partitionOf(l.keyId, 3), (byPartition.get(partitionOf(l.keyId, 3)) ?? 0) + 1);
    }
    // every partition took part
    expect([...byPartition.keys()].sort()).toEqual([0, 1, 2]);
    const during = await pool.status({ fresh: true });
    expect(during.leasesInFlight).toBe(60);
    for (const l of leases) expect((await l.release({ status: 200, latencyMs: 5, usage: { promptTokens: 10, completionTokens: 5 } })).released).toBe(true);
    const st = await pool.status({ fresh: true });
    expect(st.keys).toHaveLength(9);
    expect(st.leasesInFlight).toBe(0);
    expect(st.partitions.map((p) => p.keys).reduce((a, b) => a + b)).toBe(9);
    expect(st.partitions.every((p) => p.keys >= 2)).toBe(true);
    // fleet-wide counters summed over the partitions
    expect(st.spend!.byModel['gpt-4o-mini']!.requests).toBe(60);
    expect(st.spend!.byRoute['chat']!.requests).toBe(60);
    const perKey = st.keys.reduce((s, k) => s + (k.spendUsd ?? 0), 0);
    expect(st.spend!.byModel['gpt-4o-mini']!.usd).toBeCloseTo(perKey, 9);
    // the traffic counters of every partition, summed: 60 admitted at once, all normal, no tenant
    expect(st.traffic!.last60s).toMatchObject({ requests: 60, refused: 0 });
    expect(st.traffic!.last60s.byClass.normal).toMatchObject({ admitted: 60, waited: 0, refused: 0 });
    const s = (await pool.series({ fresh: true }))!;
    expect(s.requests.reduce((a, b) => a + b, 0)).toBe(60);
    expect(s.byClass.normal.admitted.reduce((a, b) => a + b, 0)).toBe(60);
    expect(s.keys.top.reduce((n, k) => n + k.requests.reduce((a, b) => a + b, 0), 0)).toBeGreaterThan(0);
  });

  it('keeps every key within its window across partitions and two processes', async () => {
    const name = uniqueName('partlim');
    // 2 requests per rolling second per key, 6 keys: 12 admissions a second, whoever asks
    const keys = spreadKeys(6, 3, 1, { models: ['m'], rpm: 120, window: 1 });
    const a = await partitioned({ pool: name, partitions: 3, keys });
    const b = await partitioned({ pool: name, partitions: 3, keys });
    const granted: Lease[] = [];
    let refused = 0;
    await Promise.all(
      Array.from({ length: 60 }, async (_, i) => {
        const r = await (i % 2 ? a : b).acquire({ model: 'm' });
        if (r.ok) granted.push(r);
        else refused++;
      }),
    );
    // every admission counted against one window: no key over 2 in any rolling second
    const byKey = new Map<string, number[]>();
    for (const l of granted) byKey.set(l.keyId, [...(byKey.get(l.keyId) ?? []), l.acquiredAt]);
    for (const times of byKey.values()) {
      times.sort((x, y) => x - y);
      for (let i = 2; i < times.length; i++) expect(times[i]! - times[i - 2]!).toBeGreaterThanOrEqual(1000);
    }
    // ...and none refused while a key had room: the burst took each key's whole window
    const inFirstSecond = granted.filter((l) => l.acquiredAt - Math.min(...granted.map((g) => g.acquiredAt)) < 1000);
    expect(inFirstSecond.length).toBe(12);
    expect(refused).toBe(60 - granted.length);
    for (const l of granted) await l.release({ status: 200, latencyMs: 1 });
  });

  it('keeps every key within its window with three OS processes leasing at once', async () => {
    const name = uniqueName('partproc');
    // 2 requests per rolling second per key, 6 keys over 3 partitions
    const keys = spreadKeys(6, 3, 2, { models: ['p'], rpm: 120, window: 1 });
    // registered first, so the children's starts do not race
    await partitioned({ pool: name, partitions: 3, keys });
    const spec = JSON.stringify({ pool: name, partitions: 3, keys, model: 'p', ms: 2500 });
    const children = [0, 1, 2].map(() => {
      const proc = spawn(process.execPath, fixtureArgs(fixture), { env: { ...process.env, ...childEnv(), PARTITIONED: spec }, stdio: ['pipe', 'pipe', 'pipe'] });
      let err = '';
      proc.stderr!.on('data', (d) => (err += d));
      const lines: string[] = [];
      const ready = new Promise<void>((resolve, reject) => {
        createInterface({ input: proc.stdout! }).on('line', (l) => (l === 'ready' ? resolve() : lines.push(l)));
        proc.on('exit', (code) => reject(new Error(`partitioned-child exited ${code} before ready: ${err}`)));
      });
      const done = new Promise<string[]>((resolve, reject) => proc.on('exit', (code) => (code === 0 ? resolve(lines) : reject(new Error(`partitioned-child exited ${code}: ${err}`)))));
      ready.catch(() => undefined);
      done.catch(() => undefined);
      return { proc, ready, done };
    });
    try {
      await Promise.all(children.map((c) => c.ready));
      for (const c of children) c.proc.stdin!.write('go\n');
      const rows = (await Promise.all(children.map((c) => c.done))).flat().filter(Boolean).map((l) => JSON.parse(l) as { keyId: string; at: number });
      const byKey = new Map<string, number[]>();
      for (const r of rows) byKey.set(r.keyId, [...(byKey.get(r.keyId) ?? []), r.at]);
      for (const times of byKey.values()) {
        times.sort((x, y) => x - y);
        for (let i = 2; i < times.length; i++) expect(times[i]! - times[i - 2]!).toBeGreaterThanOrEqual(1000);
      }
      // every key of every partition served, each at its limit: 2 a second for about 2.5 s
      expect(byKey.size).toBe(6);
      for (const times of byKey.values()) expect(times.length).toBeGreaterThanOrEqual(4);
    } finally {
      for (const c of children) if (c.proc.exitCode === null) c.proc.kill('SIGKILL');
    }
  });

  it('waits for the partition that frees first when the caller will wait', async () => {
    const keys = spreadKeys(3, 3, 1, { models: ['w'], rpm: 60, window: 1 });
    const pool = await partitioned({ pool: uniqueName('partwait'), partitions: 3, keys });
    const first = await Promise.all([0, 1, 2].map(() => pool.acquire({ model: 'w' })));
    expect(first.every((r) => r.ok)).toBe(true);
    const next = await pool.acquire({ model: 'w', maxWaitMs: 5000 });
    expect(next.ok).toBe(true);
    const t0 = Math.min(...first.map((r) => (r as Lease).acquiredAt));
    expect((next as Lease).acquiredAt - t0).toBeGreaterThanOrEqual(1000);
  });

  it('admits gateway tokens exactly in partition 0, and gives a request back when no key could serve', async () => {
    const name = uniqueName('parttok');
    const keys = spreadKeys(3, 3, 1, { models: ['t'], rpm: 60, window: 1 });
    const a = await partitioned({ pool: name, partitions: 3, keys });
    const b = await partitioned({ pool: name, partitions: 3, keys });
    const { token } = await a.tokens.create({ name: 'cap', rpm: 60, rpmBurst: 5 });
    const events: string[] = [];
    a.on('admission', (e) => events.push(e.result));
    // 3 keys with 1 request a second each: 3 leases, and the other requests' token admissions given back
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => (i % 2 ? a : b).acquire({ model: 't', admit: { token, estimatedCostUsd: 0 } })));
    const leases = results.filter((r): r is Lease => r.ok);
    expect(leases).toHaveLength(3);
    expect(leases.every((l) => l.admission?.ok)).toBe(true);
    // one event per request of this process; in Redis one count per request a key refused (2: each
    // tried every partition, and only the last one counted it); the 3 the token refused (in partition
    // 0, outside acquire.lua) are only in the processes' events
    expect(events).toHaveLength(4);
    const traffic = (await a.status({ fresh: true })).traffic!.last60s;
    expect([traffic.requests, traffic.refused]).toEqual([3, 2]);
    for (const l of leases) await l.release({ status: 200, latencyMs: 1 }, { settle: { admission: l.admission!, costUsd: 0.001 } });
    const [info] = await a.tokens.list();
    // the token's bucket of 5: 3 taken by leases, the refused ones refunded
    expect(info!.requests).toBe(3);
    expect(info!.spendUsd).toBeCloseTo(0.003, 9);
    // no token state in the other partitions
    const redis = clients.at(-1)!;
    for (const k of [a.keysOf(1).tokSt, a.keysOf(2).tokSt, a.keysOf(1).tok, a.keysOf(2).tok]) expect(await redis.exists(k)).toBe(0);
    // critical is the token's permission here too: refused, its request given back; allowed, served
    const plain = await a.tokens.create({ name: 'plain' });
    const boss = await a.tokens.create({ name: 'boss', allowCritical: true });
    await sleep(1100);
    expect(await a.acquire({ model: 't', priority: 'critical', admit: { token: plain.token, estimatedCostUsd: 0 } })).toEqual({
      ok: false,
      reason: 'token_refused',
      token: { ok: false, reason: 'priority_not_allowed', retryAfterMs: null, id: plain.info.id },
    });
    expect((await a.tokens.get(plain.info.id))!.requests).toBe(0);
    const ok = await a.acquire({ model: 't', priority: 'critical', admit: { token: boss.token, estimatedCostUsd: 0 } });
    if (!ok.ok) throw new Error(`expected a lease, got ${JSON.stringify(ok)}`);
    expect([ok.priority, ok.tenant]).toEqual(['critical', boss.info.id]);
    await ok.release({ status: 200, latencyMs: 1 }, { settle: { admission: ok.admission! } });
  });

  it("counts a gateway token's weight in the tenant shares of the partitions, which never see the token", async () => {
    const name = uniqueName('partw');
    const keys = spreadKeys(2, 2, 1, { models: ['t'], rpm: 1 });
    const pool = await partitioned({ pool: name, partitions: 2, keys });
    const heavy = await pool.tokens.create({ name: 'heavy', weight: 4 });
    const plain = await pool.tokens.create({ name: 'plain' });
    // one request a minute per key: two leases, then each token's request refused for capacity in
    // every partition, which notes the tenant (the token's id) with its weight in the class's record
    const leases: Lease[] = [];
    for (let i = 0; i < 2; i++) {
      const l = await pool.acquire({ model: 't', admit: { token: heavy.token, estimatedCostUsd: 0 } });
      if (!l.ok) throw new Error(`expected a lease, got ${JSON.stringify(l)}`);
      leases.push(l);
    }
    expect((await pool.acquire({ model: 't', admit: { token: heavy.token, estimatedCostUsd: 0 } })).ok).toBe(false);
    expect((await pool.acquire({ model: 't', admit: { token: plain.token, estimatedCostUsd: 0 } })).ok).toBe(false);
    const redis = clients.at(-1)!;
    // the partitions a refused request tried (a partition known to be out of keys may be skipped)
    const seen = { heavy: [] as number[], plain: [] as number[] };
    for (const p of [0, 1]) {
      const raw = await redis.hget(pool.keysOf(p).meta, 'tq:normal');
      const q = (raw ? JSON.parse(raw) : {}) as Record<string, { w: number }>;
      if (q[heavy.info.id]) seen.heavy.push(q[heavy.info.id]!.w);
      if (q[plain.info.id]) seen.plain.push(q[plain.info.id]!.w);
    }
    expect(seen.heavy.length).toBeGreaterThan(0);
    expect(seen.plain.length).toBeGreaterThan(0);
    expect([...new Set(seen.heavy), ...new Set(seen.plain)]).toEqual([4, 1]);
    for (const l of leases) await l.release({ status: 200, latencyMs: 1 }, { settle: { admission: l.admission! } });
  });

  it('adds, disables and housekeeps each key in its own partition', async () => {
    const pool = await partitioned({ pool: uniqueName('partadm'), partitions: 3, leaseTimeoutMs: 1000 });
    const redis = clients.at(-1)!;
    const specs = spreadKeys(6, 3, 2, { models: ['h'], rpm: 6000 });
    const ids: string[] = [];
    for (const k of specs) ids.push((await pool.addKey(k)).id);
    for (const id of ids) expect(await redis.hexists(pool.keysOf(partitionOf(id, 3)).cfg, id)).toBe(1);
    await pool.disableKey(ids[0]!);
    const st = await pool.status({ fresh: true });
    expect(st.keys.find((k) => k.id === ids[0])!.state).toBe('disabled');
    // leases never released (their process died) in every partition: housekeeping walks them all
    const held = new Set<number>();
    for (let i = 0; i < 30; i++) {
      const l = await pool.acquire({ model: 'h' });
      if (!l.ok) throw new Error(l.reason);
      expect(l.keyId).not.toBe(ids[0]);
      held.add(partitionOf(l.keyId, 3));
    }
    expect(held.size).toBe(3);
    await new Promise((r) => setTimeout(r, 1200));
    expect((await pool.housekeep()).leasesReaped).toBe(30);
    expect((await pool.status({ fresh: true })).leasesInFlight).toBe(0);
  });

  it('takes keys from a secret source into their partitions, and drops them there', async () => {
    const pool = await partitioned({ pool: uniqueName('partsrc'), partitions: 3 });
    const redis = clients.at(-1)!;
    const specs = spreadKeys(6, 3, 2, { models: ['s'], rpm: 600 });
    const first = await pool.setSourceKeys(specs);
    expect(first.added.sort()).toEqual(specs.map((k) => keyIdOf(k.secret)).sort());
    for (const id of first.added) expect(await redis.hexists(pool.keysOf(partitionOf(id, 3)).cfg, id)).toBe(1);
    const kept = specs.slice(0, 3);
    const second = await pool.setSourceKeys(kept);
    expect(second.dropped.sort()).toEqual(specs.slice(3).map((k) => keyIdOf(k.secret)).sort());
    expect(pool.heldKeyIds().sort()).toEqual(kept.map((k) => keyIdOf(k.secret)).sort());
    for (let i = 0; i < 12; i++) {
      const l = await pool.acquire({ model: 's' });
      if (!l.ok) throw new Error(l.reason);
      expect(pool.heldKeyIds()).toContain(l.keyId);
      await l.release({ status: 200, latencyMs: 1 });
    }
  });

  it('keeps key material out of every partition in Redis and out of its logs', async () => {
    const name = uniqueName('partsec');
    const keys = spreadKeys(6, 3, 2, { models: ['z'], rpm: 600, budget: { usd: 5 } });
    const redis = connectTestRedis();
    clients.push(redis);
    const { logger, lines } = memoryLogger();
    const pool = await PartitionedPool.connect({ redis, logger, config: { pool: name, partitions: 3, keys, status: { snapshotMs: 1000 } } });
    opened.push(pool);
    for (let i = 0; i < 12; i++) {
      const l = await pool.acquire({ model: 'z', estimatedTokens: 5 });
      if (!l.ok) throw new Error(l.reason);
      await l.release(i % 3 ? { status: 200, latencyMs: 1 } : { status: 429, latencyMs: 1, headers: { 'retry-after-ms': '1' } });
    }
    await pool.status();
    await pool.housekeep();
    await pool.probeTargets();
    const fragments = keys.flatMap((k) => secretFragments(k.secret!));
    let seen = 0;
    for (let p = 0; p < 3; p++) {
      const dump = await dumpPool(redis, partitionTag(name, p, 3));
      seen += dump.size;
      for (const [key, parts] of dump) {
        const text = Buffer.concat(parts).toString('latin1');
        for (const f of fragments) expect(text.includes(f), `${key} holds key material`).toBe(false);
      }
    }
    expect(seen).toBeGreaterThan(10);
    for (const line of lines) for (const f of fragments) expect(line.includes(f)).toBe(false);
  });

  it('refuses a partition count other than the one the pool was created with', async () => {
    const name = uniqueName('partn');
    await partitioned({ pool: name, partitions: 3, keys: spreadKeys(3, 3, 1, { models: ['x'] }) });
    const redis = connectTestRedis();
    clients.push(redis);
    const logger = memoryLogger().logger;
    const err = await PartitionedPool.connect({ redis, logger, config: { pool: name, partitions: 2 } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toContain(`pool "${name}" was created with partitions: 3 and this config says 2`);
    const one = await KeyPool.connect({ redis, logger, config: { pool: name } }).catch((e: unknown) => e);
    expect((one as Error).message).toContain('was created with partitions: 3 and this config says 1');
    // a pool of one partition with keys cannot be split under its name
    const plain = uniqueName('partplain');
    const p1 = await KeyPool.connect({ redis, logger, config: { pool: plain, keys: [{ secret: fakeSecret('a'), models: ['x'] }] } });
    opened.push(p1);
    const split = await PartitionedPool.connect({ redis, logger, config: { pool: plain, partitions: 3 } }).catch((e: unknown) => e);
    expect((split as Error).message).toContain('was created with partitions: 1 and this config says 3');
    const direct = await KeyPool.connect({ redis, logger, config: { pool: plain, partitions: 3 } }).catch((e: unknown) => e);
    expect((direct as Error).message).toContain('was created with partitions: 1 and this config says 3');
  });

  it('is what KeyPool.connect returns for partitions over 1, so every KeyPool caller takes it', async () => {
    const redis = connectTestRedis();
    clients.push(redis);
    const keys = spreadKeys(6, 3, 2, { models: ['k'], rpm: 6000 });
    const pool = await KeyPool.connect({ redis, logger: memoryLogger().logger, config: { pool: uniqueName('partkp'), partitions: 3, keys, status: { snapshotMs: 0 } } });
    opened.push(pool);
    expect(pool).toBeInstanceOf(PartitionedPool);
    const seen = new Set<number>();
    for (let i = 0; i < 40; i++) {
      const l = await pool.acquire({ model: 'k' });
      if (!l.ok) throw new Error(l.reason);
      seen.add(partitionOf(l.keyId, 3));
      // through the pool's release too, as the gateway's dispatcher does for some paths
      expect((await (i % 2 ? l.release({ status: 200, latencyMs: 1 }) : pool.release(l, { status: 200, latencyMs: 1 }))).released).toBe(true);
    }
    expect(seen.size).toBe(3);
    const st = await pool.status({ fresh: true });
    expect(st.keys).toHaveLength(6);
    expect(st.spend!.byModel['k']!.requests).toBe(40);
    expect(pool.knownKeys()).toHaveLength(6);
    expect(pool.heldKeyIds()).toHaveLength(6);
    await expect(pool.acquire({ model: 'nope' })).rejects.toThrow(/no key in the pool serves model "nope"; models served: k/);
  });
});
