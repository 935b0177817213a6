/**
 * The fleet invariants, proven by counting: several OS processes acquire from one pool at once,
 * each records the Redis times of its leases, and the parent checks every interval.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { childEnv, fixtureArgs, uniqueName } from '@keypool/testkit';
import { keyIdOf, type Lease } from '../src/index.js';
import { fakeSecret, makePool, type TestPool } from './helpers.js';

const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

function runChild(file: string, env: Record<string, string>): { done: Promise<string>; child: ReturnType<typeof spawn> } {
  const child = spawn(process.execPath, fixtureArgs(fixture(file)), {
    env: { ...process.env, ...childEnv(), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const done = new Promise<string>((resolve, reject) =>
    child.on('exit', (code, signal) => (code === 0 ? resolve(out) : reject(new Error(`${file} exited ${code ?? signal}: ${err}`)))),
  );
  done.catch(() => undefined); // callers that kill the child do not await it
  return { done, child };
}

interface Row {
  k: string;
  a: number;
  r: number;
  t: number;
  c: number;
  e: number;
}

/** Largest excess over the token-bucket bound burst + rate x interval, over every pair of admissions. */
function worstExcess(times: number[], weights: number[], burst: number, perMinute: number): number {
  let worst = -Infinity;
  for (let i = 0; i < times.length; i++) {
    let sum = 0;
    for (let j = i; j < times.length; j++) {
      sum += weights[j]!;
      const bound = burst + (perMinute * (times[j]! - times[i]!)) / 60000;
      worst = Math.max(worst, sum - bound);
    }
  }
  return worst;
}

const opened: TestPool[] = [];
afterAll(async () => {
  for (const p of opened) {
    await p.pool.close();
    p.redis.disconnect();
  }
});

describe('limits are exact across processes', () => {
  it('4 processes x 6 callers: requests, tokens, concurrency and spend stay within every key limit', async () => {
    const name = uniqueName('fleet');
    // a: bound by tokens (60,000 tpm = 1000/s, ~200 per request) and by 4 slots; b: bound by requests
    const a = { secret: fakeSecret('fa'), models: ['gpt-4o-mini'], rpm: 1200, rpmBurst: 5, tpm: 60_000, tpmBurst: 1500, maxConcurrent: 4 };
    const b = { secret: fakeSecret('fb'), models: ['gpt-4o-mini'], rpm: 600, rpmBurst: 3, maxConcurrent: 2 };
    // gpt-4o-mini output price: $0.60/M; estimates of 100-300 tokens cost at most $0.00018
    const c = { secret: fakeSecret('fc'), models: ['gpt-4o-mini'], rpm: 6000, rpmBurst: 20, budget: { usd: 0.004, period: 'total' as const } };
    // d: bound by its slots only
    const d = { secret: fakeSecret('fd'), models: ['gpt-4o-mini'], maxConcurrent: 3 };
    const spec = { pool: name, keys: [a, b, c, d], model: 'gpt-4o-mini', durationMs: 5000, callers: 6, minTokens: 100, maxTokens: 300, holdMs: 25 };
    const children = Array.from({ length: 4 }, () => runChild('hammer.ts', { HAMMER: JSON.stringify(spec) }));
    const rows: Row[] = (await Promise.all(children.map((c) => c.done)))
      .flatMap((out) => out.split('\n').filter(Boolean))
      .map((l) => JSON.parse(l) as Row);

    const byKey = (s: { secret: string }) => rows.filter((r) => r.k === keyIdOf(s.secret)).sort((x, y) => x.a - y.a);
    const ra = byKey(a);
    const rb = byKey(b);
    const rc = byKey(c);
    const rd = byKey(d);
    const seconds = 5;

    // requests: burst + rpm x T / 60 for every interval
    expect(worstExcess(ra.map((r) => r.a), ra.map(() => 1), 5, 1200)).toBeLessThanOrEqual(1e-6);
    expect(worstExcess(rb.map((r) => r.a), rb.map(() => 1), 3, 600)).toBeLessThanOrEqual(1e-6);
    // tokens, reconciled with real usage
    expect(worstExcess(ra.map((r) => r.a), ra.map((r) => r.t), 1500, 60_000)).toBeLessThanOrEqual(1e-6);
    // the pool did use the capacity: the bounds were tested, not trivially met
    expect(rb.length).toBeGreaterThan(0.8 * (3 + 10 * seconds));
    expect(ra.reduce((s, r) => s + r.t, 0)).toBeGreaterThan(0.5 * (1500 + 1000 * seconds));

    // concurrency: leases in flight at any moment
    const peakOf = (rowsOf: Row[]) => {
      const events = rowsOf.flatMap((r) => [[r.a, 1], [r.r, -1]] as const).sort((x, y) => x[0] - y[0] || x[1] - y[1]);
      let live = 0;
      let peak = 0;
      for (const [, delta] of events) peak = Math.max(peak, (live += delta));
      return peak;
    };
    expect(peakOf(ra)).toBeLessThanOrEqual(4);
    expect(peakOf(rb)).toBeLessThanOrEqual(2);
    expect(peakOf(rd)).toBe(3); // reached, so enforced, and never passed

    // spend: never past the budget by more than one request's estimate, and the budget was used up
    const spent = rc.reduce((s, r) => s + r.c, 0);
    const maxEstimate = Math.max(...rc.map((r) => r.e));
    expect(spent).toBeLessThanOrEqual(0.004 + maxEstimate + 1e-12);
    expect(spent).toBeGreaterThan(0.004 - 2 * maxEstimate);
  }, 60_000);
});

describe('a lease whose process dies', () => {
  it('gives its slot back by its deadline after kill -9, and its estimate is charged once', async () => {
    const name = uniqueName('kill');
    const secret = fakeSecret('kill');
    const leaseTimeoutMs = 1500;
    const { child } = runChild('hold.ts', { HOLD: JSON.stringify({ pool: name, secret, leaseTimeoutMs }) });
    const line = await new Promise<string>((resolve, reject) => {
      child.stdout!.on('data', (d) => resolve(String(d)));
      child.on('exit', (code) => reject(new Error(`hold.ts exited ${code}`)));
    });
    const held = JSON.parse(line) as { deadline: number; keyId: string; cost: number };
    child.kill('SIGKILL');

    const p = await makePool({ pool: name, leaseTimeoutMs, keys: [{ secret, models: ['gpt-4o'], maxConcurrent: 1 }] });
    opened.push(p);
    expect(await p.pool.acquire({ model: 'gpt-4o' })).toMatchObject({ ok: false, reason: 'concurrency' });
    const got = (await p.pool.acquire({ model: 'gpt-4o', maxWaitMs: 5000 })) as Lease;
    expect(got.ok).toBe(true);
    expect(got.acquiredAt).toBeGreaterThanOrEqual(held.deadline);
    expect(got.acquiredAt).toBeLessThan(held.deadline + 500);
    await got.release({ status: 200, usage: { promptTokens: 0, completionTokens: 0 } });
    const s = (await p.pool.status()).keys[0]!;
    expect(s.inFlight).toBe(0);
    expect(s.reservedUsd).toBe(0);
    expect(s.spendUsd).toBeCloseTo(held.cost, 12);
  }, 30_000);
});
