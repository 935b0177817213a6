/**
 * Several OS processes call through PooledOpenAI on one pool; the fake upstream enforces the same
 * rates as the pool, with buckets only a little larger (5 requests, 100 tokens: the time a request
 * takes to reach the upstream varies, so an admission exactly at the edge can arrive a few ms
 * "early" for the upstream's bucket). If the pool's limits are exact across the fleet, the upstream
 * never has to say 429.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';
import { childEnv, fixtureArgs, startFakeOpenAI, uniqueName } from '@keypool/testkit';

const fixture = fileURLToPath(new URL('./fixtures/caller.ts', import.meta.url));
let stop: (() => Promise<void>) | undefined;
afterAll(async () => stop?.());

it('3 processes x 4 callers: the upstream sees no key exceed its RPM or TPM (no 429 at all)', async () => {
  const A = 'sk-test-fleet-aaaaaaaaaaaaaaaaaaaa01';
  const B = 'sk-test-fleet-bbbbbbbbbbbbbbbbbbbb02';
  // a: bound by requests (60/min, bucket of 60); b: bound by tokens (1,200/min, bucket of 1,200;
  // a request is ~36 tokens by the pool's estimate, ~33 by the upstream's count)
  const fake = await startFakeOpenAI({ keys: [{ key: A, name: 'a', rpm: 60 }, { key: B, name: 'b', tpm: 1200 }], models: ['gpt-4o-mini'], latency: 10 });
  stop = fake.stop;
  const keys = [
    { secret: A, name: 'a', models: ['gpt-4o-mini'], baseURL: fake.url, rpm: 60, rpmBurst: 55 },
    { secret: B, name: 'b', models: ['gpt-4o-mini'], baseURL: fake.url, tpm: 1200, tpmBurst: 1100 },
  ];
  const spec = { pool: uniqueName('client-fleet'), keys, durationMs: 4000, callers: 4 };
  const outs = await Promise.all(
    Array.from({ length: 3 }, () => {
      const child = spawn(process.execPath, fixtureArgs(fixture), { env: { ...process.env, ...childEnv(), CALLER: JSON.stringify(spec) }, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (err += d));
      return new Promise<{ ok: number; exhausted: number; timedOut: number; failed: number; errors: string }>((resolve, reject) =>
        child.on('exit', (code) => (code === 0 ? resolve({ ...JSON.parse(out), errors: err }) : reject(new Error(`caller exited ${code}: ${err}`)))),
      );
    }),
  );
  const total = outs.reduce(
    (t, o) => ({ ok: t.ok + o.ok, exhausted: t.exhausted + o.exhausted, timedOut: t.timedOut + o.timedOut, failed: t.failed + o.failed }),
    { ok: 0, exhausted: 0, timedOut: 0, failed: 0 },
  );
  const c = fake.counters();
  expect({ a: c.a!.rate429, b: c.b!.rate429 }).toEqual({ a: 0, b: 0 });
  expect(c.a!.rate429).toBe(0);
  expect(c.b!.rate429).toBe(0);
  expect(total.failed, outs.map((o) => o.errors).join('')).toBe(0);
  // the limits were reached (callers were refused by the pool), so they were tested, not idle
  expect(total.exhausted).toBeGreaterThan(0);
  // both limits were reached: what the pool sent upstream (a call cut by its caller's deadline under
  // load was still sent: the provider counted it)
  expect(c.a!.requests).toBeGreaterThanOrEqual(50); // of its burst of 55 + 4 s at 1/s
  expect(c.b!.peakTokensPerMinute).toBeGreaterThan(600); // of about 1,000 its 1,100-token burst + 4 s allow
  // calls cut by their deadline may have been served upstream after the caller gave up
  expect(c.a!.served + c.b!.served).toBeGreaterThanOrEqual(total.ok);
  expect(c.a!.served + c.b!.served).toBeLessThanOrEqual(total.ok + total.timedOut);
}, 60_000);
