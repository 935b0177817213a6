/**
 * Redis, logs, status and errors never hold key material. After a run that goes through every
 * path (success, 429, 401, 5xx, breaker, budget, operators, errors), every byte of every Redis key
 * of the pool is searched for any 8-character piece of any secret.
 */
import { afterAll, expect, it } from 'vitest';
import { ConfigError, parsePoolConfig, type Lease } from '../src/index.js';
import { dumpPool, fakeSecret, makePool, secretFragments, type TestPool } from './helpers.js';

let tp: TestPool | undefined;
afterAll(async () => {
  await tp?.pool.close();
  tp?.redis.disconnect();
});

it('no Redis value, log line, status field or error message contains any part of a secret', async () => {
  const secrets = [fakeSecret('one'), fakeSecret('two'), fakeSecret('three'), fakeSecret('added')];
  tp = await makePool({
    breaker: { failures: 2, cooldownMs: 50 },
    keys: [
      { secret: secrets[0]!, name: 'primary', models: ['gpt-4o-mini'], rpm: 600, tpm: 100_000, maxConcurrent: 4 },
      { secret: secrets[1]!, models: ['gpt-4o-mini', 'gpt-4o'], rpm: 600, budget: { usd: 0.001, period: 'day' } },
      { secret: secrets[2]!, models: ['gpt-4o'], rpm: 60, rpmBurst: 1 },
    ],
  });
  const { pool, redis, name, logs } = tp;
  const outcomes = [
    { status: 200, usage: { promptTokens: 10, completionTokens: 20 } },
    { status: 429, headers: { 'retry-after-ms': '10' } },
    { status: 500 },
    { error: 'timeout' as const },
    { status: 400 },
    { error: 'broken_stream' as const },
    { status: 401 },
  ];
  const errors: string[] = [];
  for (let i = 0; i < 60; i++) {
    const r = await pool.acquire({ model: i % 2 ? 'gpt-4o' : 'gpt-4o-mini', estimatedTokens: 200, maxWaitMs: 60 });
    if (r.ok) await (r as Lease).release({ ...outcomes[i % outcomes.length]!, latencyMs: 40 });
  }
  const added = await pool.addKey({ secret: secrets[3]!, models: ['gpt-4o'] });
  await pool.updateKey(added.id, { rpm: 100 });
  const st = await pool.status();
  for (const k of st.keys) {
    await pool.enableKey(k.id);
    await pool.resetKey(k.id);
  }
  await pool.retireKey(added.id);
  await pool.acquire({ model: 'no-such-model' }).catch((e: Error) => errors.push(e.message));
  await pool.addKey({ secret: secrets[0]!, models: [], rpm: -1 }).catch((e: Error) => errors.push(e.message));
  try {
    parsePoolConfig({ keys: [{ secret: secrets[0], models: ['m'] }, { secret: secrets[0], models: [] }] });
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    errors.push((e as Error).message);
  }
  expect(errors).toHaveLength(3);

  const dump = await dumpPool(redis, name);
  expect(dump.size).toBeGreaterThan(5);
  const status = JSON.stringify(await pool.status());
  const fragments = secrets.flatMap((s) => secretFragments(s));
  for (const f of fragments) {
    for (const [key, parts] of dump) {
      for (const part of parts) expect(part.includes(f), `Redis key ${key} holds "${f}"`).toBe(false);
    }
    for (const line of logs) expect(line.includes(f), `log line holds "${f}": ${line}`).toBe(false);
    expect(status.includes(f)).toBe(false);
    for (const m of errors) expect(m.includes(f)).toBe(false);
  }
  // what the operators see instead: ids and hints
  expect(status).toContain(st.keys.find((k) => k.name === 'primary')!.hint);
  expect(logs.some((l) => l.includes('"hint":"sk-...'))).toBe(true);
});
