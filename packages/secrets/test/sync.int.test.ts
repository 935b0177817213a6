import { afterAll, describe, expect, it } from 'vitest';
import type { Cluster, Redis } from 'ioredis';
import { KeyPool, keyIdOf, type KeySpec, type KeySpecInput, type Lease } from '@keypool/core';
import { connectTestRedis, uniqueName } from '@keypool/testkit';
import { LogSink } from '@keypool/testkit/log-sink';
import { dumpPool } from '../../core/test/helpers.js';
import { digestVersion, parseKeyDocument, SecretSync, SecretSourceError, SyncKeys, type SecretSource } from '../src/index.js';

/**
 * A secret backend held in memory: the interface the real sources implement (their own wire tests
 * cover the backends). Here the subject is the fleet protocol: pub/sub, acks, retirement.
 */
class MemorySource implements SecretSource {
  readonly kind = 'env' as const;
  readonly describe = 'memory';
  keys: KeySpec[] = [];
  failing = false;
  loads = 0;
  set(keys: KeySpecInput[]) {
    this.keys = parseKeyDocument({ keys }, 'memory');
  }
  async load() {
    this.loads++;
    if (this.failing) throw new SecretSourceError('unavailable', 'memory', 'backend down');
    return { version: digestVersion(this.keys), keys: this.keys.map((k) => ({ ...k })) };
  }
}

const secret = (tag: string) => `sk-sync-${tag}-0123456789abcdefghij`;
const spec = (tag: string): KeySpecInput => ({ secret: secret(tag), name: tag, models: ['m'], rpm: 6000 });

const clients: (Redis | Cluster)[] = [];
const closers: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of closers.reverse()) await c().catch(() => undefined);
  for (const c of clients) await c.quit().catch(() => undefined);
});

async function member(pool: string, source: SecretSource, opts: { heartbeatMs?: number; configKeys?: KeySpecInput[]; sink?: LogSink } = {}) {
  const sink = opts.sink ?? new LogSink();
  const redis = connectTestRedis();
  clients.push(redis);
  const p = await KeyPool.connect({ redis, config: { pool, keys: opts.configKeys ?? [] }, logger: sink.logger });
  const sync = new SecretSync({ pool: p, redis, sources: [source], heartbeatMs: opts.heartbeatMs ?? 300, logger: sink.logger, loader: { attempts: 1, timeoutMs: 1000, maxBackoffMs: 10 } });
  closers.push(async () => {
    await sync.close();
    await p.close();
  });
  await sync.start();
  return { pool: p, sync, redis, sink };
}

const until = async (what: () => boolean | Promise<boolean>, ms = 5000) => {
  const end = Date.now() + ms;
  while (!(await what())) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 25));
  }
};

/** A lease on the key of `tag` (others leased on the way are released). */
async function leaseOn(p: KeyPool, tag: string): Promise<Lease> {
  for (let i = 0; i < 60; i++) {
    const l = await p.acquire({ model: 'm' });
    if (l.ok && l.keyId === keyIdOf(secret(tag))) return l;
    if (l.ok) await l.release({ status: 200 });
  }
  throw new Error(`no lease on ${tag} in 60 tries`);
}

const names = (p: KeyPool) => p.knownKeys().map((k) => k.name).sort();
const stateOf = async (p: KeyPool, name: string) => (await p.status()).keys.find((k) => k.name === name)?.state;

describe('SecretSync: a fleet learns of a new secret set and retires removed keys safely', () => {
  it('new keys reach every process through pub/sub at once; a removed key is retired once no process holds it; kept keys keep their state', async () => {
    const pool = uniqueName('sync');
    const src1 = new MemorySource();
    const src2 = new MemorySource();
    src1.set([spec('a'), spec('b')]);
    src2.set([spec('a'), spec('b')]);
    // heartbeats of 30 s: only the pub/sub message can tell process two in time
    const one = await member(pool, src1, { heartbeatMs: 30_000 });
    const two = await member(pool, src2, { heartbeatMs: 30_000 });
    expect(names(one.pool)).toEqual(['a', 'b']);
    // an in-flight lease on b (the key about to be removed)
    const onB = await leaseOn(two.pool, 'b');
    const aBefore = (await one.pool.status()).keys.find((k) => k.name === 'a')!;

    src1.set([spec('a'), spec('c')]);
    src2.set([spec('a'), spec('c')]);
    const started = Date.now();
    const r = await one.sync.reconcile({ graceMs: 5000, pollMs: 20 });
    expect(Date.now() - started).toBeLessThan(3000);
    expect(r).toMatchObject({ published: true, retired: [keyIdOf(secret('b'))], held: [] });
    expect(two.sync.version).toBe(one.sync.version);
    const st = await one.pool.status();
    expect(st.keys.find((k) => k.name === 'b')?.state).toBe('draining');
    expect(st.keys.find((k) => k.name === 'c')?.state).toBe('active');
    expect(st.keys.find((k) => k.name === 'a')!.limits).toEqual(aBefore.limits);
    for (let i = 0; i < 20; i++) {
      const l = await (i % 2 ? one : two).pool.acquire({ model: 'm' });
      expect(l.ok && l.keyId).not.toBe(keyIdOf(secret('b')));
      if (l.ok) await l.release({ status: 200 });
    }
    // the lease in flight finishes normally and its release removes the retired key
    expect(await onB.release({ status: 200, latencyMs: 5 })).toMatchObject({ released: true, transition: 'retired' });
    await one.pool.refreshTopology();
    expect(names(one.pool)).toEqual(['a', 'c']);
    expect(Object.keys(await one.redis.hgetall(new SyncKeys(pool).managed)).sort()).toEqual([keyIdOf(secret('a')), keyIdOf(secret('c'))].sort());
  });

  it('a process that missed the message catches up at its heartbeat', async () => {
    const pool = uniqueName('sync');
    const src = new MemorySource();
    src.set([spec('a')]);
    const one = await member(pool, src);
    const two = await member(pool, src);
    src.set([spec('a'), spec('d')]);
    // publish without a message: write the state directly, as if the message was lost
    await one.sync.refresh();
    await one.redis.hset(new SyncKeys(pool).state, 'version', one.sync.version!);
    await until(() => two.sync.version === one.sync.version);
    expect(names(two.pool)).toEqual(['a', 'd']);
  });

  it('a key still held by a lagging process is not retired; it is once the process catches up', async () => {
    const pool = uniqueName('sync');
    const fresh = new MemorySource();
    const stale = new MemorySource();
    fresh.set([spec('a'), spec('e')]);
    stale.set([spec('a'), spec('e')]);
    const one = await member(pool, fresh);
    const laggard = await member(pool, stale);
    stale.failing = true; // its backend is down: it keeps its last good set (a and e)
    fresh.set([spec('a')]);
    const r = await one.sync.reconcile({ graceMs: 600, pollMs: 20 });
    expect(r.retired).toEqual([]);
    expect(r.held).toEqual([{ keyId: keyIdOf(secret('e')), holders: [laggard.sync.processId] }]);
    expect(await stateOf(one.pool, 'e')).toBe('active');
    expect(one.sink.text).toContain(laggard.sync.processId);
    // the laggard still serves with its last good set
    expect(laggard.pool.servesModel('m')).toBe(true);
    stale.failing = false;
    stale.set([spec('a')]);
    await until(() => laggard.sync.version === one.sync.version);
    expect((await one.sync.reconcile({ graceMs: 2000, pollMs: 20 })).retired).toEqual([keyIdOf(secret('e'))]);
  });

  it('a coordinator whose source fails publishes nothing and retires nothing (an old set never wins over a newer one)', async () => {
    const pool = uniqueName('sync');
    const good = new MemorySource();
    const flaky = new MemorySource();
    good.set([spec('a')]);
    flaky.set([spec('a')]);
    const one = await member(pool, good);
    const two = await member(pool, flaky);
    await one.sync.reconcile({ graceMs: 100 });
    good.set([spec('a'), spec('n')]);
    await one.sync.reconcile({ graceMs: 100 });
    const published = await one.redis.hget(new SyncKeys(pool).state, 'version');
    flaky.failing = true; // process two's backend is down; it would still publish {a} without the rule
    const r = await two.sync.reconcile({ graceMs: 100 });
    expect(r).toMatchObject({ published: false, retired: [], failedSources: [expect.stringContaining('backend down')] });
    expect(await one.redis.hget(new SyncKeys(pool).state, 'version')).toBe(published);
    expect(await stateOf(one.pool, 'n')).toBe('active');
  });

  it('never retires a key another process holds from its own config or its own source', async () => {
    const pool = uniqueName('sync');
    const coordinatorSrc = new MemorySource();
    const otherSrc = new MemorySource();
    coordinatorSrc.set([spec('a'), spec('x')]);
    otherSrc.set([spec('z')]);
    const one = await member(pool, coordinatorSrc);
    await member(pool, new MemorySource(), { configKeys: [spec('x')] });
    await member(pool, otherSrc);
    await one.sync.reconcile({ graceMs: 100 });
    coordinatorSrc.set([spec('a')]); // x leaves the coordinator's source; z was never in it
    const r = await one.sync.reconcile({ graceMs: 300, pollMs: 20 });
    expect(r.retired).toEqual([]);
    expect(r.held.map((h) => h.keyId).sort()).toEqual([keyIdOf(secret('x')), keyIdOf(secret('z'))].sort());
    expect(await stateOf(one.pool, 'x')).toBe('active');
    expect(await stateOf(one.pool, 'z')).toBe('active');
  });

  it('a key that comes back to the source while it drains is kept: active again, not removed', async () => {
    const pool = uniqueName('sync');
    const src = new MemorySource();
    src.set([spec('a'), spec('b')]);
    const one = await member(pool, src);
    const onB = await leaseOn(one.pool, 'b');
    src.set([spec('a')]);
    expect((await one.sync.reconcile({ graceMs: 500, pollMs: 20 })).retired).toEqual([keyIdOf(secret('b'))]);
    expect(await stateOf(one.pool, 'b')).toBe('draining');
    src.set([spec('a'), spec('b')]); // reverted
    await one.sync.reconcile({ graceMs: 100 });
    expect(await stateOf(one.pool, 'b')).toBe('active');
    expect(await onB.release({ status: 200 })).toMatchObject({ released: true, transition: '' });
    await one.pool.refreshTopology();
    expect(names(one.pool)).toEqual(['a', 'b']);
  });

  it('an apply that fails does not stop the sync: the next good set is applied', async () => {
    const pool = uniqueName('sync');
    const src = new MemorySource();
    src.set([spec('a')]);
    const one = await member(pool, src);
    // a set the pool refuses (a too-short secret slipped past the source): the apply fails
    src.keys = [...src.keys, { ...src.keys[0]!, secret: 'short' }];
    await one.sync.refresh();
    expect(one.sink.text).toContain('could not apply the secret set');
    src.set([spec('a'), spec('g')]);
    await one.sync.refresh();
    expect(names(one.pool)).toEqual(['a', 'g']);
  });

  it('refuses to retire every key when the sources suddenly give none, unless allowEmpty', async () => {
    const pool = uniqueName('sync');
    const src = new MemorySource();
    src.set([spec('a'), spec('f')]);
    const one = await member(pool, src);
    await one.sync.reconcile({ graceMs: 100 });
    src.keys = [];
    await expect(one.sync.reconcile({ graceMs: 100 })).rejects.toThrow(/give no key at all: refusing to retire all 2 key\(s\)/);
    expect(await stateOf(one.pool, 'a')).toBe('active');
  });

  it('a failing source keeps its last good set: a refresh never empties the pool', async () => {
    const pool = uniqueName('sync');
    const src = new MemorySource();
    src.set([spec('a'), spec('f')]);
    const one = await member(pool, src);
    src.failing = true;
    const r = await one.sync.reconcile({ graceMs: 100 });
    expect(r.failedSources).toHaveLength(1);
    expect(r.retired).toEqual([]);
    expect(names(one.pool)).toEqual(['a', 'f']);
    expect(one.sync.status().sources[0]!.lastError?.code).toBe('unavailable');
  });

  it('never writes a secret to Redis or to the logs', async () => {
    const pool = uniqueName('sync');
    const src = new MemorySource();
    src.set([spec('g'), spec('h')]);
    const one = await member(pool, src);
    src.set([spec('g'), spec('i')]);
    await one.sync.reconcile({ graceMs: 500 });
    const blob = [...(await dumpPool(one.redis, pool))].map(([key, parts]) => `${key} ${parts.map((b) => b.toString('latin1')).join(' ')}`).join('\n');
    for (const t of ['g', 'h', 'i']) {
      expect(blob).not.toContain(secret(t).slice(8, 24));
      expect(one.sink.text).not.toContain(secret(t).slice(8, 24));
    }
    expect(blob).toContain(keyIdOf(secret('g')));
  });
});
