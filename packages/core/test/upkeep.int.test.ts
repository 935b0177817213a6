import { describe, expect, it } from 'vitest';
import { hintOf, keyIdOf, type KeyPoolEvents } from '../src/index.js';
import { fakeSecret, sleep, poolsClosedAfterAll } from './helpers.js';

const pool = poolsClosedAfterAll();

const breaker = { failures: 2, cooldownMs: 60_000, maxCooldownMs: 600_000 };

describe('setSourceKeys: the keys a process holds from secret sources', () => {
  it('adds, updates and drops keys; a key that keeps its secret keeps its state; config keys are never dropped', async () => {
    const cfgKey = fakeSecret('cfg');
    const a = fakeSecret('a');
    const b = fakeSecret('b');
    const { pool: p } = await pool({ keys: [{ secret: cfgKey, models: ['m'], rpm: 60 }] });
    const first = await p.setSourceKeys([
      { secret: a, models: ['m'], rpm: 60, name: 'a' },
      { secret: b, models: ['m'], rpm: 60, name: 'b' },
    ]);
    expect(first.added).toHaveLength(2);
    expect(p.knownKeys().map((k) => k.name).sort()).toEqual(['a', 'b', undefined].sort());
    // use key a so it has state (spend, a lease in flight)
    const idA = first.added.find((id) => p.knownKeys().find((k) => k.id === id)?.name === 'a')!;
    let lease;
    for (let i = 0; i < 10; i++) {
      const l = await p.acquire({ model: 'm' });
      if (l.ok && l.keyId === idA) {
        lease = l;
        break;
      }
      if (l.ok) await l.release({ status: 200 });
    }
    expect(lease).toBeDefined();
    // b goes away, a's rpm changes, c arrives; the config key is not listed but stays
    const c = fakeSecret('c');
    const second = await p.setSourceKeys([
      { secret: a, models: ['m'], rpm: 120, name: 'a' },
      { secret: c, models: ['m'], rpm: 60, name: 'c' },
    ]);
    expect(second.changed).toEqual([idA]);
    expect(second.added).toHaveLength(1);
    expect(second.dropped).toHaveLength(1);
    const st = await p.status();
    const keyA = st.keys.find((k) => k.id === idA)!;
    expect(keyA.limits.rpm).toBe(120);
    expect(keyA.inFlight).toBe(1); // same id, same state: the lease in flight is still counted
    expect(st.keys.some((k) => k.name === undefined)).toBe(true); // the config key
    // b is still in the pool (the coordinator retires it) but this process never leases it again
    const idB = first.added.find((id) => id !== idA)!;
    expect(st.keys.some((k) => k.id === idB)).toBe(true);
    for (let i = 0; i < 30; i++) {
      const l = await p.acquire({ model: 'm' });
      expect(l.ok && l.keyId).not.toBe(idB);
      if (l.ok) await l.release({ status: 200 });
    }
    await lease!.release({ status: 200 });
    await expect(p.setSourceKeys([{ secret: 'short', models: ['m'] }])).rejects.toThrow(/8 characters/);
  });
});

describe('a key is its secret and its destination', () => {
  it('the same secret for two base URLs is two keys, each leased for its own base URL', async () => {
    const s = fakeSecret('two-homes');
    const [here, there] = ['https://api.openai.com/v1', 'https://proxy.internal:8443/v1'];
    const { pool: p } = await pool({ keys: [{ secret: s, models: ['m'] }, { secret: s, models: ['m'], baseURL: there, provider: 'proxy' }] });
    const ids = [keyIdOf(s, here), keyIdOf(s, there)];
    expect(ids[0]).not.toBe(ids[1]);
    expect((await p.status()).keys.map((k) => [k.id, k.baseURL]).sort()).toEqual([[ids[0], here], [ids[1], there]].sort());
    const seen = new Map<string, string>();
    for (let i = 0; i < 20 && seen.size < 2; i++) {
      const l = await p.acquire({ model: 'm' });
      if (!l.ok) throw new Error('no lease');
      seen.set(l.keyId, l.baseURL);
      await l.release({ status: 200 });
    }
    expect(Object.fromEntries(seen)).toEqual({ [ids[0]!]: here, [ids[1]!]: there });
  });

  it('upstreams.allow refuses a key at a secret refresh and at addKey, naming it and the origin; the last good set stays', async () => {
    const good = fakeSecret('allowed');
    const evil = fakeSecret('elsewhere');
    const { pool: p } = await pool({ upstreams: { allow: ['https://api.openai.com'] } });
    await p.setSourceKeys([{ secret: good, name: 'good', models: ['m'] }]);
    const refused = p.setSourceKeys([
      { secret: good, name: 'good', models: ['m'] },
      { secret: evil, name: 'evil', models: ['m'], baseURL: 'http://127.0.0.1:9/v1' },
    ]);
    await expect(refused).rejects.toThrow(
      'invalid secret source keys (1 problem):\n' +
        `  - keys[1].baseURL: key "evil" (${hintOf(evil)}): origin http://127.0.0.1:9 is not in upstreams.allow [https://api.openai.com]; add "http://127.0.0.1:9" to upstreams.allow to send this key there`,
    );
    expect(p.heldKeyIds()).toEqual([keyIdOf(good)]);
    expect((await p.status()).keys.map((k) => k.name)).toEqual(['good']);
    await expect(p.addKey({ secret: evil, models: ['m'], baseURL: 'https://api.openai.com.evil.example/v1' })).rejects.toThrow(
      `invalid key (1 problem):\n  - key.baseURL: key ${hintOf(evil)}: origin https://api.openai.com.evil.example is not in upstreams.allow [https://api.openai.com]; add "https://api.openai.com.evil.example" to upstreams.allow to send this key there`,
    );
    expect(p.heldKeyIds()).toEqual([keyIdOf(good)]);
  });
});

describe('health probes', () => {
  it('lists only open, half-open, revoked and degraded keys this process holds; never healthy, disabled or draining ones', async () => {
    const secrets = ['healthy', 'open', 'revoked', 'disabled'].map((t) => fakeSecret(t));
    const { pool: p } = await pool({ breaker, keys: secrets.map((secret, i) => ({ secret, name: ['healthy', 'open', 'revoked', 'disabled'][i], models: [`m${i}`] })) });
    const ids = Object.fromEntries(p.knownKeys().map((k) => [k.name!, k.id]));
    for (let i = 0; i < 2; i++) {
      const l = await p.acquire({ model: 'm1' });
      if (l.ok) await l.release({ status: 500 });
    }
    const r = await p.acquire({ model: 'm2' });
    if (r.ok) await r.release({ status: 401 });
    await p.disableKey(ids.disabled!);
    const targets = await p.probeTargets();
    expect(targets.map((t) => [t.hint, t.reason]).sort()).toEqual(
      [
        [p.knownKeys().find((k) => k.name === 'open')!.hint, 'open'],
        [p.knownKeys().find((k) => k.name === 'revoked')!.hint, 'revoked'],
      ].sort(),
    );
    expect(targets.find((t) => t.reason === 'open')!.secret).toBe(secrets[1]);
  });

  it('a success closes an open breaker and clears a revocation: the key serves at once', async () => {
    const { pool: p } = await pool({ breaker, keys: [{ secret: fakeSecret('x'), models: ['m'] }, { secret: fakeSecret('y'), models: ['n'] }] });
    const events: KeyPoolEvents['transition'][0][] = [];
    p.on('transition', (e) => events.push(e));
    for (let i = 0; i < 2; i++) {
      const l = await p.acquire({ model: 'm' });
      if (l.ok) await l.release({ status: 503 });
    }
    const r = await p.acquire({ model: 'n' });
    if (r.ok) await r.release({ status: 401 });
    expect(await p.acquire({ model: 'm' })).toMatchObject({ ok: false, reason: 'circuit_open' });
    expect(await p.acquire({ model: 'n' })).toMatchObject({ ok: false });
    const [open, revoked] = [(await p.probeTargets()).find((t) => t.reason === 'open')!, (await p.probeTargets()).find((t) => t.reason === 'revoked')!];
    expect(await p.reportProbe(open.keyId, { status: 200, latencyMs: 30 })).toMatchObject({ breaker: 'closed', transition: 'closed' });
    expect(await p.reportProbe(revoked.keyId, { status: 200, latencyMs: 30 })).toMatchObject({ state: 'active', transition: 'unrevoked' });
    expect((await p.acquire({ model: 'm' })).ok).toBe(true);
    expect((await p.acquire({ model: 'n' })).ok).toBe(true);
    expect(await p.probeTargets()).toEqual([]);
    expect(events.map((e) => e.transition)).toEqual(expect.arrayContaining(['closed', 'unrevoked']));
  });

  it('a failure reopens an open breaker for longer; a revoked key that still gets 401 stays revoked; a 401 revokes', async () => {
    const { pool: p } = await pool({ breaker: { failures: 1, cooldownMs: 1000, maxCooldownMs: 600_000 }, keys: [{ secret: fakeSecret('x'), models: ['m'] }] });
    const l = await p.acquire({ model: 'm' });
    if (l.ok) await l.release({ status: 500 });
    const id = p.knownKeys()[0]!.id;
    const before = (await p.status()).keys[0]!;
    expect(before.state).toBe('open');
    expect(await p.reportProbe(id, { error: 'timeout', latencyMs: 5000 })).toMatchObject({ breaker: 'open', transition: 'reopened' });
    const after = (await p.status()).keys[0]!;
    expect(after.breaker!.opens).toBe(2);
    expect(Date.parse(after.breaker!.openUntil!)).toBeGreaterThan(Date.parse(before.breaker!.openUntil!) + 500);
    expect(await p.reportProbe(id, { status: 401 })).toMatchObject({ state: 'revoked', transition: 'revoked' });
    expect(await p.reportProbe(id, { status: 403 })).toMatchObject({ state: 'revoked', transition: '' });
    expect((await p.status()).keys[0]!.state).toBe('revoked');
    await p.disableKey(id);
    expect(await p.reportProbe(id, { status: 200 })).toMatchObject({ state: 'disabled', transition: 'skipped' });
  });
});

describe('housekeep', () => {
  it('gives back the slots of expired leases in a pool without traffic, charging the estimate once', async () => {
    const { pool: p, redis, name } = await pool({ leaseTimeoutMs: 1000, keys: [{ secret: fakeSecret('x'), models: ['gpt-4o-mini'], maxConcurrent: 3 }] });
    for (let i = 0; i < 3; i++) expect((await p.acquire({ model: 'gpt-4o-mini', estimatedTokens: 1000 })).ok).toBe(true);
    expect((await p.status()).keys[0]!.inFlight).toBe(3);
    await sleep(1100);
    const r = await p.housekeep();
    expect(r.leasesReaped).toBe(3);
    const k = (await p.status()).keys[0]!;
    expect(k.inFlight).toBe(0);
    expect(k.spendUsd).toBeGreaterThan(0);
    expect((await p.housekeep()).leasesReaped).toBe(0);
    expect(await redis.zcard(`kp:{${name}}:leases`)).toBe(0);
  });

  it('starts the next budget period of a day/month key that ran out, and it serves again', async () => {
    const { pool: p, redis, name } = await pool({ keys: [{ secret: fakeSecret('x'), models: ['gpt-4o-mini'], budget: { usd: 0.001, period: 'day' } }] });
    const l = await p.acquire({ model: 'gpt-4o-mini', estimatedTokens: 10 });
    if (l.ok) await l.release({ status: 200, usage: { promptTokens: 1_000_000, completionTokens: 0 } });
    expect(await p.acquire({ model: 'gpt-4o-mini', estimatedTokens: 10 })).toMatchObject({ ok: false, reason: 'budget' });
    // pretend the spend happened yesterday: move the stored period id back by one (Redis time cannot be moved)
    await redis.eval(
      "local st = cmsgpack.unpack(redis.call('HGET', KEYS[1], ARGV[1])); st.pid = st.pid - 1; redis.call('HSET', KEYS[1], ARGV[1], cmsgpack.pack(st)); return 1",
      1,
      `kp:{${name}}:st`,
      p.knownKeys()[0]!.id,
    );
    const r = await p.housekeep();
    expect(r.periodsStarted).toHaveLength(1);
    expect(r.periodsStarted[0]!.previousSpendUsd).toBeGreaterThan(0.001);
    const k = (await p.status()).keys[0]!;
    expect(k.spendUsd).toBe(0);
    expect(k.state).toBe('active');
    expect((await p.acquire({ model: 'gpt-4o-mini', estimatedTokens: 10 })).ok).toBe(true);
    expect((await p.housekeep()).periodsStarted).toEqual([]);
  });

  it('forgets health windows older than two windows', async () => {
    const { pool: p } = await pool({ health: { windowMs: 1000, minRequests: 1 }, keys: [{ secret: fakeSecret('x'), models: ['m'] }] });
    const l = await p.acquire({ model: 'm' });
    if (l.ok) await l.release({ status: 200, latencyMs: 1500 });
    expect((await p.status()).keys[0]!.degraded).toBe(true);
    expect((await p.housekeep()).healthWindowsCleared).toBe(0);
    await sleep(2100);
    expect((await p.housekeep()).healthWindowsCleared).toBe(1);
    const k = (await p.status()).keys[0]!;
    expect(k.degraded).toBe(false);
    expect(k.latency?.p99Ms ?? 0).toBe(0);
  });
});

