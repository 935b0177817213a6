/**
 * Two gateway processes on one Redis are one fleet: callers spread over both never make a key
 * exceed its limits at the provider (the fake upstream enforces the same rates, with buckets a
 * little larger than the pool's, as in the pooled client's fleet test).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { afterAll, expect, it } from 'vitest';
import { childEnv, connectTestRedis, fixtureArgs, startFakeOpenAI, uniqueName } from '@keypool/testkit';
import { KeyPool } from '@keypool/core';
import { pino } from 'pino';

const fixture = fileURLToPath(new URL('./fixtures/gateway-child.ts', import.meta.url));
const children: ChildProcess[] = [];
const cleanups: (() => Promise<unknown> | void)[] = [];
afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  for (const f of cleanups) await f();
});

function startChild(spec: object): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, fixtureArgs(fixture), { env: { ...process.env, ...childEnv(), GATEWAY: JSON.stringify(spec) }, stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`gateway child exited ${code}`)));
    createInterface({ input: child.stdout! }).once('line', (line) => resolve({ url: (JSON.parse(line) as { url: string }).url, child }));
  });
}

it('two gateway processes sharing one Redis obey each key limit together (no 429 from the provider)', async () => {
  const A = 'sk-test-gwfleet-aaaaaaaaaaaaaaaaaa01';
  const B = 'sk-test-gwfleet-bbbbbbbbbbbbbbbbbb02';
  const fake = await startFakeOpenAI({ keys: [{ key: A, name: 'a', rpm: 60 }, { key: B, name: 'b', tpm: 1200 }], models: ['gpt-4o-mini'], latency: 10 });
  cleanups.push(fake.stop);
  const pool = uniqueName('gw-fleet');
  const keys = [
    { secret: A, name: 'a', models: ['gpt-4o-mini'], baseURL: fake.url, rpm: 60, rpmBurst: 55 },
    { secret: B, name: 'b', models: ['gpt-4o-mini'], baseURL: fake.url, tpm: 1200, tpmBurst: 1100 },
  ];
  const spec = { pool, keys, deadlineMs: 1000 };
  const gws = await Promise.all([startChild(spec), startChild(spec)]);
  // a token for the callers, straight through the pool (any process of the fleet sees it)
  const redis = connectTestRedis();
  const admin = await KeyPool.connect({ redis, config: { pool }, logger: pino({ level: 'silent' }) });
  cleanups.push(async () => {
    await admin.close();
    redis.disconnect();
  });
  const { token } = await admin.tokens.create({ name: 'fleet' });

  const got: Record<string, number> = {};
  const t0 = Date.now();
  await Promise.all(
    Array.from({ length: 8 }, async (_, i) => {
      const openai = new OpenAI({ apiKey: token, baseURL: `${gws[i % 2]!.url}/v1`, maxRetries: 0 });
      while (Date.now() - t0 < 4000) {
        try {
          await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: `caller ${i} says hello there` }], max_tokens: 24 });
          got.ok = (got.ok ?? 0) + 1;
        } catch (e) {
          const status = (e as { status?: number }).status ?? 0;
          got[status] = (got[status] ?? 0) + 1;
          if (status === 429) await new Promise((r) => setTimeout(r, 20));
        }
      }
    }),
  );
  const c = fake.counters();
  expect({ a: c.a!.rate429, b: c.b!.rate429 }).toEqual({ a: 0, b: 0 });
  // the only refusals came from the gateways: the pool was full (429), or a key came free too late
  // in a call's 300 ms deadline (504); never another failure
  expect(Object.keys(got).filter((k) => !['ok', '429', '504'].includes(k))).toEqual([]);
  expect(got['429']).toBeGreaterThan(0);
  // calls cut by their deadline may have been served upstream after the caller gave up
  expect(c.a!.served + c.b!.served).toBeGreaterThanOrEqual(got.ok!);
  expect(c.a!.served + c.b!.served).toBeLessThanOrEqual(got.ok! + (got['504'] ?? 0));
  // both limits were reached: what the pool sent upstream (a call cut by its caller's deadline under
  // load was still sent: the provider counted it)
  expect(c.a!.requests).toBeGreaterThanOrEqual(50); // of its burst of 55 + 4 s at 1/s
  expect(c.b!.peakTokensPerMinute).toBeGreaterThan(600); // of about 1,000 its 1,100-token burst + 4 s allow
  // and both gateways served
  // (a call cut by its deadline answers 504 at once; its lease comes back when the upstream call ends)
  await expect.poll(async () => (await admin.status()).keys.every((k) => k.inFlight === 0), { timeout: 5000 }).toBe(true);
  for (const g of gws) {
    const m = await (await fetch(`${g.url}/metrics`)).text();
    expect(m).toMatch(/keypool_gateway_requests_total\{endpoint="chat.completions",route="",model="gpt-4o-mini",status="200"\} [1-9]/);
  }
  for (const g of gws) g.child.kill('SIGTERM');
  await Promise.all(gws.map((g) => new Promise((r) => (g.child.exitCode !== null ? r(null) : g.child.once('exit', r)))));
  expect(gws.map((g) => g.child.exitCode)).toEqual([0, 0]);
}, 60_000);
