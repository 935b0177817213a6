/**
 * Enforcement windows, reservations and learnt limits (issue 12), proven by counting: several OS
 * processes acquire from one pool, each lease's start is read from its id (the Redis time its
 * admission was logged at, exactly) and the parent checks every rolling window; waiting callers
 * are served in the order the acquire script ran; a reservation given back goes to the next
 * caller; a 429 cools a windowed key for its Retry-After and the next admission is reserved at its
 * end; effective limits follow a fake upstream whose limit drops and comes back, or that another
 * application shares. (429 cooling on unwindowed keys: acquire-release.int.test.ts.)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { childEnv, fixtureArgs, startFakeOpenAI, uniqueName, type FakeOpenAI } from '@keypool/testkit';
import { keyIdOf, PoolKeys, type KeyPool, type KeySpecInput, type Lease } from '../src/index.js';
import { fakeSecret, makePool, type TestPool } from './helpers.js';

const fixture = fileURLToPath(new URL('./fixtures/windows-child.ts', import.meta.url));
const MARGIN = 20; // limits.windowMarginMs default

/** Figures a run measured, printed when KEYPOOL_TEST_FIGURES is set (for reports; never asserted on by CI). */
function figures(name: string, data: unknown) {
  if (process.env.KEYPOOL_TEST_FIGURES) console.log(`[figures] ${name} ${JSON.stringify(data)}`);
}

interface Child {
  proc: ChildProcess;
  ready: Promise<void>;
  lines: Promise<string[]>;
}

function runChild(spec: unknown): Child {
  const proc = spawn(process.execPath, fixtureArgs(fixture), {
    env: { ...process.env, ...childEnv(), WINDOWS: JSON.stringify(spec) },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let err = '';
  proc.stderr!.on('data', (d) => (err += d));
  const out: string[] = [];
  const ready = new Promise<void>((resolve, reject) => {
    createInterface({ input: proc.stdout! }).on('line', (l) => (l === 'ready' ? resolve() : out.push(l)));
    proc.on('exit', (code) => reject(new Error(`windows-child exited ${code} before ready: ${err}`)));
  });
  const lines = new Promise<string[]>((resolve, reject) =>
    proc.on('exit', (code, signal) => (code === 0 ? resolve(out) : reject(new Error(`windows-child exited ${code ?? signal}: ${err}`)))),
  );
  ready.catch(() => undefined);
  lines.catch(() => undefined);
  return { proc, ready, lines };
}

const children: Child[] = [];
const opened: TestPool[] = [];
const fakes: FakeOpenAI[] = [];
afterAll(async () => {
  for (const c of children) if (c.proc.exitCode === null) c.proc.kill('SIGKILL');
  for (const p of opened) {
    await p.pool.close();
    p.redis.disconnect();
  }
  for (const f of fakes) await f.stop();
});

interface Row {
  id: string;
  k: string;
  a: number;
  e: number;
  wake: number;
  i?: number;
  pid?: number;
}

/** A lease id `<seq>:<keyId>:<tokens>:<nano-dollars>:<start us>:<slot>` taken apart. */
function leaseParts(id: string) {
  const [seq, keyId, tokens, , startUs, slot] = id.split(':');
  return { seq: Number(seq), keyId: keyId!, tokens: Number(tokens), start: Number(startUs) / 1000, slot: slot! };
}

/** Run `spec` in `n` processes started together; returns every lease row and the acquire calls they sent. */
async function runFleet(n: number, spec: { pool: string; keys: KeySpecInput[]; streams: unknown[] }, durationMs: number, beforeGo?: () => Promise<void>) {
  const fleet = Array.from({ length: n }, () => runChild(spec));
  children.push(...fleet);
  await Promise.all(fleet.map((c) => c.ready));
  await beforeGo?.();
  const start = Date.now() + 100;
  const end = start + durationMs;
  for (const c of fleet) c.proc.stdin!.write(JSON.stringify({ start, end }) + '\n');
  const outs = await Promise.all(fleet.map((c) => c.lines));
  let acquireCalls = 0;
  const rows: Row[] = [];
  for (const line of outs.flat()) {
    const o = JSON.parse(line) as Row | { acquireCalls: number };
    if ('acquireCalls' in o) acquireCalls += o.acquireCalls;
    else rows.push(o);
  }
  return { rows, acquireCalls, start, end };
}

/** Most entries in any window (t - w, t], t an entry's time (a window holds most when it ends at one); weights default 1. */
function peak(times: number[], w: number, weights?: number[]): number {
  const order = times.map((t, i) => [t, weights?.[i] ?? 1] as const).sort((x, y) => x[0] - y[0]);
  let best = 0;
  let sum = 0;
  for (let j = 0, i = 0; j < order.length; j++) {
    sum += order[j]![1];
    while (order[j]![0] - order[i]![0] >= w) sum -= order[i++]![1];
    best = Math.max(best, sum);
  }
  return best;
}

describe('enforcement windows across processes', () => {
  it('4 processes: no rolling window of a key holds more than its quota, and the pool uses the quota', async () => {
    const name = uniqueName('win');
    const a = { secret: fakeSecret('wa'), models: ['m'], rpm: 600, window: 1 };
    const b = { secret: fakeSecret('wb'), models: ['m'], rpm: 600, window: 1 };
    const c = { secret: fakeSecret('wc'), models: ['m'], rpm: 120, window: 10 };
    // tokens: 60,000 tpm over 1 s = 1000 tokens per window, requests of 20-80 tokens
    const t = { secret: fakeSecret('wt'), models: ['t'], tpm: 60_000, tokenWindow: 1 };
    const durationMs = 3000;
    const spec = {
      pool: name,
      keys: [a, b, c, t],
      streams: [
        { model: 'm', callers: 8, mode: 'loop', holdMs: 10 },
        { model: 't', callers: 8, mode: 'loop', holdMs: 10, minTokens: 20, maxTokens: 80 },
      ],
    };
    const { rows, start, end } = await runFleet(4, spec, durationMs);
    const out: Record<string, unknown> = {};

    const requestKeys = [
      { name: 'a', key: a, n: 10, w: 1000 },
      { name: 'b', key: b, n: 10, w: 1000 },
      { name: 'c', key: c, n: 20, w: 10_000 },
    ];
    for (const { name: kn, key, n, w } of requestKeys) {
      const mine = rows.filter((r) => r.k === keyIdOf(key.secret));
      const starts = mine.map((r) => leaseParts(r.id).start);
      // acquiredAt is the start as the client learns it: the reply's Redis time + startInMs (ms, rounded up)
      for (const r of mine) expect(r.a - leaseParts(r.id).start).toBeGreaterThanOrEqual(-0.001);
      for (const r of mine) expect(r.a - leaseParts(r.id).start).toBeLessThan(1.001);
      const peakPool = peak(starts, w + MARGIN);
      const peakProvider = peak(starts, w);
      // what the pool could admit from start to end: a quota per window of W + margin begun in the run
      const possible = n * (Math.floor((end - start) / (w + MARGIN)) + 1);
      out[kn] = { leases: mine.length, possible, peakInWPlusMargin: peakPool, peakInW: peakProvider, quota: n };
      expect(peakPool).toBeLessThanOrEqual(n);
      expect(mine.length).toBeLessThanOrEqual(possible);
      expect(mine.length).toBeGreaterThanOrEqual(0.8 * possible);
    }

    const mine = rows.filter((r) => r.k === keyIdOf(t.secret));
    const starts = mine.map((r) => leaseParts(r.id).start);
    const weights = mine.map((r) => r.e);
    expect(weights.every((e) => e >= 20 && e <= 80)).toBe(true);
    const peakPool = peak(starts, 1000 + MARGIN, weights);
    const total = weights.reduce((s, e) => s + e, 0);
    const possible = 1000 * (Math.floor((end - start) / (1000 + MARGIN)) + 1);
    out.t = { leases: mine.length, tokens: total, possible, peakInWPlusMargin: peakPool, peakInW: peak(starts, 1000, weights), quota: 1000 };
    expect(peakPool).toBeLessThanOrEqual(1000);
    expect(total).toBeLessThanOrEqual(possible);
    expect(total).toBeGreaterThanOrEqual(0.8 * possible);
    figures('windows', out);
  }, 30_000);
});

describe('waiting callers', () => {
  it('50 callers in 5 processes wait for a saturated key and are served in the order the acquire script ran, one call each', async () => {
    const name = uniqueName('fifo');
    // 20 per rolling second: the parent takes them, then 50 callers need three more windows
    const k = { secret: fakeSecret('ff'), models: ['f'], rpm: 1200, window: 1 };
    const tp = await makePool({ pool: name, keys: [k] });
    opened.push(tp);
    const spec = { pool: name, keys: [k], streams: [{ model: 'f', callers: 10, mode: 'once', maxWaitMs: 10_000 }] };
    const saturated: number[] = [];
    const { rows, acquireCalls, start } = await runFleet(5, spec, 0, async () => {
      for (let i = 0; i < 20; i++) {
        const l = (await tp.pool.acquire({ model: 'f' })) as Lease;
        expect(l.ok).toBe(true);
        await l.release({ status: 200 });
        saturated.push(leaseParts(l.id).start);
      }
      expect(await tp.pool.acquire({ model: 'f' })).toMatchObject({ ok: false, reason: 'rate_limited' });
    });
    expect(rows).toHaveLength(50);
    const served = rows.map((r) => ({ ...leaseParts(r.id), wake: r.wake, i: r.i!, pid: r.pid! })).sort((x, y) => x.seq - y.seq);
    // every one called while the key was saturated and waited for a later window
    expect(Math.max(...saturated) + 1000 + MARGIN).toBeGreaterThan(start);
    for (const s of served) expect(s.start).toBeGreaterThanOrEqual(saturated[0]! + 1000 + MARGIN);
    // arrival order at Redis is start order
    for (let i = 1; i < served.length; i++) expect(served[i]!.start).toBeGreaterThanOrEqual(served[i - 1]!.start);
    // within a process, callers reached the script in the order they called acquire
    for (const pid of new Set(served.map((s) => s.pid))) {
      const order = served.filter((s) => s.pid === pid).map((s) => s.i);
      expect(order).toEqual([...order].sort((x, y) => x - y));
      expect(order).toHaveLength(10);
    }
    // nobody went before its start (wake: Redis time estimated from the child's clock, ~0.1 ms when
    // the machine is quiet; Node's timers count whole ms, and a loaded machine blurs the estimate)
    const early = Math.max(...served.map((s) => s.start - s.wake));
    expect(early).toBeLessThanOrEqual(5);
    // no second call: one acquire script call per caller
    expect(acquireCalls).toBeLessThanOrEqual(50 + 2);
    expect(peak(served.map((s) => s.start), 1000 + MARGIN)).toBeLessThanOrEqual(20);
    const lateness = served.map((s) => s.wake - s.start).sort((x, y) => x - y);
    figures('fifo', {
      callers: served.length,
      acquireCalls,
      firstStartAfterCallMs: Math.round(served[0]!.start - start), lastStartAfterCallMs: Math.round(served.at(-1)!.start - start),
      wakeMinusStartMs: { min: lateness[0], p50: lateness[25], max: lateness.at(-1) },
    });
  }, 30_000);

  it("a cancelled waiter's reservation goes to the next caller: same start, same slot", async () => {
    const k = { secret: fakeSecret('cx'), models: ['c'], rpm: 600, window: 1 };
    const tp = await makePool({ keys: [k] });
    opened.push(tp);
    const { pool, redis } = tp;
    const leasesKey = new PoolKeys(tp.name).leases;
    for (let i = 0; i < 10; i++) await ((await pool.acquire({ model: 'c' })) as Lease).release({ status: 200 });

    // A reserves the next admission (~1 s out) and gives up while it sleeps
    const abort = new AbortController();
    const aWait = pool.acquire({ model: 'c', maxWaitMs: 5000, signal: abort.signal });
    let aLease: string | undefined;
    for (let i = 0; i < 200 && !aLease; i++) {
      aLease = (await redis.zrange(leasesKey, '0', '-1'))[0];
      if (!aLease) await new Promise((r) => setTimeout(r, 10));
    }
    expect(aLease).toBeDefined();
    const a = leaseParts(aLease!);
    const aheadMs = a.start - Date.now();
    expect(aheadMs).toBeGreaterThan(500);
    abort.abort(new Error('caller gave up'));
    await expect(aWait).rejects.toThrow('caller gave up');
    expect(await redis.zcard(leasesKey)).toBe(0);

    // B takes A's place in the window: its start and slot, not one a window later
    const b = (await pool.acquire({ model: 'c', maxWaitMs: 5000 })) as Lease;
    expect(b.ok).toBe(true);
    const bp = leaseParts(b.id);
    expect(bp.slot).toBe(a.slot);
    expect(bp.start).toBe(a.start);
    expect(bp.seq).toBeGreaterThan(a.seq);
    expect(b.acquiredAt - a.start).toBeGreaterThanOrEqual(0);
    expect(b.acquiredAt - a.start).toBeLessThan(1.001);
    // and the slot is used once: the next caller gets the admission after it
    const c = (await pool.acquire({ model: 'c', maxWaitMs: 5000 })) as Lease;
    const cp = leaseParts(c.id);
    expect(cp.slot).not.toBe(a.slot);
    expect(cp.start).toBeGreaterThan(a.start);
    await b.release({ status: 200 });
    await c.release({ status: 200 });
    figures('cancel', { abortedMsBeforeStart: Math.round(aheadMs), slot: a.slot, nextStartAfterMs: Math.round(cp.start - a.start) });
  }, 20_000);

  it('a 429 cools a windowed key for its Retry-After, and a waiting caller is given the first admission after it', async () => {
    const k = { secret: fakeSecret('ra'), models: ['r'], rpm: 600, window: 1 };
    const tp = await makePool({ keys: [k] });
    opened.push(tp);
    const l = (await tp.pool.acquire({ model: 'r' })) as Lease;
    // Retry-After decides, not the longer reset header
    const rel = await l.release({ status: 429, latencyMs: 5, headers: { 'retry-after-ms': '600', 'x-ratelimit-reset-requests': '5s' } });
    expect(rel.transition).toBe('cooling');
    const coolingUntil = Date.parse((await tp.pool.status()).keys[0]!.coolingUntil!);
    expect(Math.abs(coolingUntil - (rel.releasedAt! + 600))).toBeLessThanOrEqual(1);
    expect(await tp.pool.acquire({ model: 'r' })).toMatchObject({ ok: false, reason: 'cooling' });
    const w = (await tp.pool.acquire({ model: 'r', maxWaitMs: 3000 })) as Lease;
    expect(w.ok).toBe(true);
    const start = leaseParts(w.id).start;
    expect(start - (rel.releasedAt! + 600)).toBeGreaterThanOrEqual(-0.001);
    expect(start - (rel.releasedAt! + 600)).toBeLessThan(1);
    await w.release({ status: 200 });
    figures('retry-after', { coolMs: 600, reservedStartAfterReleaseMs: start - rel.releasedAt! });
  });
});

/** A key's effective and reported limits (erpm, rl: per minute) from its state in Redis. */
async function limitsOf(tp: TestPool, keyId: string): Promise<{ erpm: number; rl: number; rpm: number }> {
  const json = (await tp.redis.eval("return cjson.encode(cmsgpack.unpack(redis.call('HGET', KEYS[1], ARGV[1])))", 1, new PoolKeys(tp.name).st, keyId)) as string;
  return JSON.parse(json) as { erpm: number; rl: number; rpm: number };
}

async function until(what: string, cond: () => Promise<boolean>, timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
  return Date.now() - t0;
}

/** Open `n` connections to the fake (an unlimited key) so that the first requests measured do not pay for them. */
async function warmUp(fake: FakeOpenAI, n: number) {
  await Promise.all(Array.from({ length: n }, () => ask(fake.url, 'sk-warm-up-connections').then((r) => r.arrayBuffer())));
}

function ask(baseURL: string, secret: string) {
  return fetch(`${baseURL}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 }),
  });
}

/**
 * `callers` loops that acquire, send a real request to the fake upstream and release with its
 * status and headers, until stopped; counts what the pool sent and the 429s it met.
 */
function drive(pool: KeyPool, callers: number) {
  const counts = { sent: 0, limited: 0 };
  let stopped = false;
  const loops = Array.from({ length: callers }, async () => {
    while (!stopped) {
      const l = await pool.acquire({ model: 'gpt-4o-mini', maxWaitMs: 2000 });
      if (!l.ok) {
        await new Promise((r) => setTimeout(r, 20));
        continue;
      }
      const t0 = Date.now();
      // as the product's callers do (the Dispatcher): a send late after its admission counts from here
      l.sent();
      const res = await ask(l.baseURL, l.secret);
      await res.arrayBuffer();
      counts.sent++;
      if (res.status === 429) counts.limited++;
      await l.release({ status: res.status, latencyMs: Date.now() - t0, headers: res.headers });
    }
  });
  return {
    counts,
    /** The counts since the last mark. */
    mark() {
      const c = { ...counts };
      counts.sent = 0;
      counts.limited = 0;
      return c;
    },
    async stop() {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

// A margin wide enough for this machine's skew between admission and arrival at the fake (busy CI
// cores): these tests are about learning, the margin's own effect is not what they measure.
const LEARN_LIMITS = { windowMarginMs: 150 };

describe('limits learnt from the provider', () => {
  it("the effective limit follows the provider's reported limit down when it drops and back up when it returns", async () => {
    const secret = fakeSecret('lrn');
    const fake = await startFakeOpenAI({ keys: [{ key: secret, name: 'lrn', rpm: 600, limiter: 'window-1s' }, 'sk-warm-up-connections'], latency: 2 });
    fakes.push(fake);
    await warmUp(fake, 6);
    // Azure reports the per-window figure: 10 for 600 RPM over 1 s
    const tp = await makePool({ limits: LEARN_LIMITS, keys: [{ secret, baseURL: fake.url, provider: 'azure', rpm: 600, models: ['gpt-4o-mini'] }] });
    opened.push(tp);
    const id = keyIdOf(secret, fake.url);
    const d = drive(tp.pool, 6);
    try {
      // the provider's figure read (a first burst whose requests reach the provider late may look
      // like another application's use for a moment: the limit then comes back up)
      const warmMs = await until('answers at 600', async () => {
        const x = await limitsOf(tp, id);
        return d.counts.sent >= 20 && x.rl === 600 && x.erpm === 600;
      }, 20_000);
      const before = d.mark();

      fake.setKey('lrn', { rpm: 480 }); // 8 per second
      const downMs = await until('effective down to 480', async () => (await limitsOf(tp, id)).erpm <= 480, 5000);
      expect((await limitsOf(tp, id)).rl).toBe(480);
      // it settles at the new limit (a 429 burst may have taken it lower for a while), never above
      const settleMs = await until('effective back at 480', async () => (await limitsOf(tp, id)).erpm === 480, 15_000);
      const dropped = d.mark();
      figures('learn-drop', { warmMs, before, downMs, settleMs, dropped });
      // settled: the pool sends what the new limit allows and the provider refuses (almost) nothing
      const t0 = Date.now();
      const spanMs = await until('3 s at 480', async () => Date.now() - t0 >= 3000 && (await limitsOf(tp, id)).erpm === 480, 5000);
      const settled = d.mark();
      figures('learn-settled', { spanMs, settled });
      expect(settled.limited).toBeLessThanOrEqual(1);
      expect(settled.sent).toBeGreaterThanOrEqual(8 * Math.floor(spanMs / (1000 + LEARN_LIMITS.windowMarginMs)));
      expect(settled.sent).toBeLessThanOrEqual(8 * Math.ceil(spanMs / 1000) + 8);

      fake.setKey('lrn', { rpm: 600 });
      const upMs = await until('effective back up to 600', async () => (await limitsOf(tp, id)).erpm === 600, 15_000);
      const back = d.mark();
      figures('learn-up', { upMs, back });
    } finally {
      await d.stop();
    }
  }, 45_000);

  it('a key another application shares: the effective limit goes down to what is left, and the 429s stop', async () => {
    const secret = fakeSecret('shr');
    const fake = await startFakeOpenAI({ keys: [{ key: secret, name: 'shr', rpm: 600, limiter: 'window-1s' }, 'sk-warm-up-connections'], latency: 2 });
    fakes.push(fake);
    await warmUp(fake, 7);
    const tp = await makePool({ limits: LEARN_LIMITS, keys: [{ secret, baseURL: fake.url, provider: 'azure', rpm: 600, models: ['gpt-4o-mini'] }] });
    opened.push(tp);
    const id = keyIdOf(secret, fake.url);
    // the other application: 3 requests a second straight to the provider, unseen by the pool, on a
    // fixed schedule (not one after the other: on a busy machine slow answers slowed it below 3 a
    // second, and the pool rightly took back what it left)
    let other = true;
    const otherCounts = { sent: 0, limited: 0 };
    const otherLoop = (async () => {
      const inFlight: Promise<void>[] = [];
      for (let k = 0, t0 = Date.now(); other; k++) {
        await new Promise((r) => setTimeout(r, Math.max(0, t0 + k * 333 - Date.now())));
        inFlight.push(
          ask(fake.url, secret).then(async (res) => {
            await res.arrayBuffer();
            otherCounts.sent++;
            if (res.status === 429) otherCounts.limited++;
          }),
        );
      }
      await Promise.all(inFlight);
    })();
    const d = drive(tp.pool, 6);
    const samples: number[] = [];
    try {
      const downMs = await until('effective below 600', async () => (await limitsOf(tp, id)).erpm < 600, 5000);
      // converging: 6 s, then 5 s measured
      const t0 = Date.now();
      await until('6 s converging', async () => Date.now() - t0 >= 6000, 7000);
      const converging = d.mark();
      const t1 = Date.now();
      await until('5 s measured', async () => {
        samples.push((await limitsOf(tp, id)).erpm);
        return Date.now() - t1 >= 5000;
      }, 7000);
      const measured = d.mark();
      const seconds = (Date.now() - t1) / 1000;
      figures('shared', { downMs, converging, measured, seconds, effective: { min: Math.min(...samples), max: Math.max(...samples), last: samples.at(-1) }, other: otherCounts });
      // what is left for the pool: 10 a window less the other's ~3 (420 a minute)
      // (the median: an answer back later than a window after its arrival cannot be compared, and on
      // a busy machine a few are, so the limit may climb for a moment; the 429 share allows for the
      // same delays between admission and arrival)
      const median = [...samples].sort((x, y) => x - y)[Math.floor(samples.length / 2)]!;
      expect(median).toBeLessThanOrEqual(540);
      expect(Math.min(...samples)).toBeGreaterThanOrEqual(300);
      // and the pool's own 429s stay rare while it learns. This bound does not tell learning from no
      // learning (without learning the pool's share is 0.05-0.075 here too: its requests come first in
      // each window and the other application takes most of the 429s); the median above does. It
      // guards against a learning that swings and makes 429s: 0.026 on a quiet host, 0.081, 0.108
      // and (before these callers said when they sent, as the Dispatcher does) 0.189 in CI on a
      // loaded one.
      expect(measured.limited / measured.sent).toBeLessThanOrEqual(0.2);
      // and it still uses most of what is left (not driven down to nothing)
      expect(measured.sent / seconds).toBeGreaterThanOrEqual(0.6 * (10 - 3) * (1000 / (1000 + LEARN_LIMITS.windowMarginMs)));
    } finally {
      other = false;
      await d.stop();
      await otherLoop;
    }
  }, 45_000);
});

describe('a request sent late counts where the provider counts it', () => {
  it('Lease.sent() moves its window entry to the send at once: the next window waits for it, its calls still running: no 429', async () => {
    const secrets = { moved: fakeSecret('late-a'), control: fakeSecret('late-b') };
    const fake = await startFakeOpenAI({
      keys: [{ key: secrets.moved, name: 'late-a', rpm: 600, limiter: 'window-1s' }, { key: secrets.control, name: 'late-b', rpm: 600, limiter: 'window-1s' }, 'sk-warm-up-connections'],
      latency: 2,
    });
    fakes.push(fake);
    await warmUp(fake, 10);
    const STALL_MS = 200;
    const margin = 50; // wider than the 20 ms default: a busy CI host's own delays are not what this measures
    const call = async (l: Lease, secret: string, mark: boolean) => {
      if (mark) l.sent();
      const res = await ask(l.baseURL, secret);
      await res.arrayBuffer();
      return res;
    };
    /**
     * One window's 10 admissions, 5 of them sent STALL_MS late (a stalled process), all held (long
     * calls: no release before the next window); then 10 callers wait for the next window's
     * admissions and send at once. `mark`: the callers say when they send.
     */
    const run = async (secret: string, mark: boolean) => {
      const tp = await makePool({ limits: { windowMarginMs: margin }, keys: [{ secret, baseURL: fake.url, provider: 'azure', rpm: 600, models: ['gpt-4o-mini'] }] });
      opened.push(tp);
      // one answer first: Redis's clock, which Lease.sent() needs, is learnt from answers
      await ((await tp.pool.acquire({ model: 'gpt-4o-mini' })) as Lease).release({ error: 'unused' });
      const first = await Promise.all(Array.from({ length: 10 }, () => tp.pool.acquire({ model: 'gpt-4o-mini' })));
      expect(first.every((l) => l.ok)).toBe(true);
      const admittedAt = leaseParts((first[0] as Lease).id).start;
      const firstAnswers = await Promise.all(
        (first as Lease[]).map(async (l, i) => {
          if (i >= 5) await new Promise((r) => setTimeout(r, STALL_MS));
          return call(l, secret, mark);
        }),
      );
      const second = await Promise.all(
        Array.from({ length: 10 }, async () => {
          const l = await tp.pool.acquire({ model: 'gpt-4o-mini', maxWaitMs: 5000 });
          if (!l.ok) throw new Error(`not admitted: ${l.reason}`);
          const res = await call(l, secret, mark);
          await l.release({ status: res.status, headers: res.headers });
          return { status: res.status, startAfterMs: leaseParts(l.id).start - admittedAt };
        }),
      );
      await Promise.all((first as Lease[]).map((l, i) => l.release({ status: firstAnswers[i]!.status, headers: firstAnswers[i]!.headers })));
      return { firstStatus: firstAnswers.map((r) => r.status), second };
    };
    const moved = await run(secrets.moved, true);
    const control = await run(secrets.control, false);
    const late = (r: typeof moved) => r.second.map((s) => s.startAfterMs).sort((a, b) => a - b);
    figures('sent-late', { moved: late(moved), movedStatus: moved.second.map((s) => s.status), control: late(control), controlStatus: control.second.map((s) => s.status) });
    expect(moved.firstStatus.every((s) => s === 200)).toBe(true);
    // moved: half the next window waits for the late sends; the provider refuses nothing
    expect(moved.second.filter((s) => s.status === 429)).toHaveLength(0);
    expect(late(moved)[9]!).toBeGreaterThanOrEqual(1000 + margin + STALL_MS - 5);
    // unmarked, the pool admits all ten a window after their admission, while the late five still
    // fill the provider's window: the same schedule meets 429s (this test can fail)
    expect(late(control)[9]!).toBeLessThan(1000 + margin + STALL_MS / 2);
    expect(control.second.filter((s) => s.status === 429).length).toBeGreaterThan(0);
  }, 30_000);

  it("a send the pool did not hear of at once (its call lost) moves at the release; one on time stays where it was admitted", async () => {
    const k = { secret: fakeSecret('late-r'), models: ['r'], rpm: 600, window: 1 };
    const tp = await makePool({ keys: [k] });
    opened.push(tp);
    const id = keyIdOf(k.secret);
    const entries = async () => (await tp.redis.zrange(new PoolKeys(tp.name).win, `[${id}|r|`, `[${id}|r|~`, 'BYLEX')).map((m) => Number(m.split('|')[2]) / 1000);
    await ((await tp.pool.acquire({ model: 'r' })) as Lease).release({ error: 'unused' }); // Redis's clock learnt
    const onTime = (await tp.pool.acquire({ model: 'r' })) as Lease;
    onTime.sent();
    await onTime.release({ status: 200 });
    const l = (await tp.pool.acquire({ model: 'r' })) as Lease;
    await new Promise((r) => setTimeout(r, 100));
    l.sentAt = Date.now(); // as if sent() ran and its call to Redis was lost
    await l.release({ status: 200 });
    const [a, b] = await entries();
    expect(Math.abs(a! - leaseParts(onTime.id).start)).toBeLessThan(0.01);
    expect(b! - leaseParts(l.id).start).toBeGreaterThanOrEqual(90);
    expect(b! - leaseParts(l.id).start).toBeLessThan(1000);
  });
});
