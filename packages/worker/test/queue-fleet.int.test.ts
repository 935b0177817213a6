import { describe, expect, it } from 'vitest';
import { KeyPool } from '@keypool/core';
import { connectionForChild, connectTo, startFakeOpenAI, uniqueName, type FakeOpenAI } from '@keypool/testkit';
import { LogSink } from '@keypool/testkit/log-sink';
import { workerProcesses } from './fixtures/processes.js';
import { LlmQueue, type LlmJobInfo } from '../src/index.js';

/**
 * The LLM queue with real worker processes (`startWorker`, as `keypool worker` runs it) on the test
 * Redis and the fake upstream, which enforces the same per-key limits the pool has.
 */
const { startWorker: worker, cleanups } = workerProcesses();

const S = (t: string) => `sk-qfleet-${t}-0123456789abcdefghij`;
const SCHEDULER = { probeMs: 600_000, housekeepingMs: 600_000, secretRefreshMs: 600_000 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


async function producer(pool: string) {
  const connection = connectTo(connectionForChild(), { maxRetriesPerRequest: null });
  const queue = new LlmQueue({ connection, pool, attempts: 3, backoffMs: 200 });
  cleanups.push(async () => {
    await queue.close();
    await connection.quit();
  });
  return { queue, connection };
}

const chat = (i: number, priority: 'critical' | 'normal' | 'low' = 'normal') => ({
  kind: 'chat' as const,
  priority,
  request: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: `job ${i}` }], max_tokens: 4 },
});

async function allDone(queue: LlmQueue, jobs: LlmJobInfo[], timeoutMs: number): Promise<LlmJobInfo[]> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const now = await Promise.all(jobs.map((j) => queue.get(j.id)));
    if (now.every((j) => j && (j.state === 'completed' || j.state === 'failed'))) return now as LlmJobInfo[];
    if (Date.now() > end) throw new Error(`not done after ${timeoutMs} ms: ${JSON.stringify(await queue.counts())}`);
    await sleep(100);
  }
}

describe('LLM queue across worker processes', () => {
  it('a backlog drains at the pool capacity, not faster: no 429 from the provider, each job run once, no attempt spent waiting', async () => {
    const fake: FakeOpenAI = await startFakeOpenAI({ keys: ['a', 'b'].map((t) => ({ key: S(t), name: t, rpm: 600 })), latency: 5 });
    cleanups.push(() => fake.stop());
    const pool = uniqueName('qfleet');
    const { queue } = await producer(pool);
    const spec = {
      pool,
      keys: ['a', 'b'].map((t) => ({ secret: S(t), models: ['gpt-4o-mini'], baseURL: fake.url, rpm: 600 })),
      scheduler: SCHEDULER,
      queue: { concurrency: 8, keyWaitMs: 1000, attemptTimeoutMs: 5000 },
    };
    await Promise.all([worker(spec, 'q1'), worker(spec, 'q2')]);
    const n = 150;
    const started = Date.now();
    const jobs = await queue.addBulk(Array.from({ length: n }, (_, i) => chat(i)));
    const done = await allDone(queue, jobs, 40_000);
    const seconds = (Date.now() - started) / 1000;
    expect(done.filter((j) => j.state !== 'completed')).toEqual([]);
    const c = fake.counters();
    expect(c.a!.rate429 + c.b!.rate429).toBe(0);
    expect(c.a!.served + c.b!.served).toBe(n);
    expect(done.every((j) => j.result!.attempts === 1)).toBe(true);
    // two keys of 600 rpm: a burst of 20 each, then 20 jobs/s in all
    const atCapacity = (n - 40) / 20;
    expect(seconds).toBeGreaterThan(atCapacity * 0.85);
    expect(seconds).toBeLessThan(atCapacity * 1.8 + 2);
    expect(new Set(done.map((j) => j.result!.keyId)).size).toBe(2);
  });

  it('priorities: critical jobs enqueued after a low backlog finish before most of it', async () => {
    const fake: FakeOpenAI = await startFakeOpenAI({ keys: [{ key: S('p'), name: 'p', rpm: 120 }], latency: 5 });
    cleanups.push(() => fake.stop());
    const pool = uniqueName('qprio');
    const { queue } = await producer(pool);
    const low = await queue.addBulk(Array.from({ length: 16 }, (_, i) => chat(i, 'low')));
    const critical = await queue.addBulk(Array.from({ length: 4 }, (_, i) => chat(100 + i, 'critical')));
    await worker({ pool, keys: [{ secret: S('p'), models: ['gpt-4o-mini'], baseURL: fake.url, rpm: 120 }], scheduler: SCHEDULER, queue: { concurrency: 2, keyWaitMs: 1000 } }, 'p1');
    const done = await allDone(queue, [...low, ...critical], 40_000);
    const at = (j: LlmJobInfo) => Date.parse(j.result!.finishedAt);
    const lastCritical = Math.max(...done.slice(16).map(at));
    const lowAfter = done.slice(0, 16).filter((j) => at(j) > lastCritical).length;
    expect(lowAfter).toBeGreaterThanOrEqual(8);
    expect(fake.counters().p!.rate429).toBe(0);
  });

  it('a worker killed (SIGKILL) mid-job: the job runs again on another worker, once; the lost attempt is charged once', async () => {
    const fake: FakeOpenAI = await startFakeOpenAI({ keys: [{ key: S('k'), name: 'k' }], latency: 1500 });
    cleanups.push(() => fake.stop());
    const pool = uniqueName('qkill');
    const { queue, connection } = await producer(pool);
    const spec = {
      pool,
      poolConfig: { leaseTimeoutMs: 3000 },
      keys: [{ secret: S('k'), models: ['gpt-4o-mini'], baseURL: fake.url }],
      scheduler: SCHEDULER,
      queue: { concurrency: 1, lockMs: 1500, stalledCheckMs: 500, attemptTimeoutMs: 10_000 },
    };
    const first = await worker(spec, 'k1');
    const job = await queue.add(chat(1));
    for (let i = 0; i < 100 && fake.counters().k!.inFlight === 0; i++) await sleep(20);
    expect(fake.counters().k!.inFlight).toBe(1);
    first.kill('SIGKILL');
    await worker(spec, 'k2');
    const result = await queue.wait(job.id, 20_000);
    expect(result.model).toBe('gpt-4o-mini');
    expect(fake.counters().k!.served).toBe(1); // the killed attempt never completed upstream
    // the lost attempt's lease expires and is charged its estimate, once
    const reader = await KeyPool.connect({ redis: connection, config: { pool }, logger: new LogSink().logger });
    cleanups.push(() => reader.close());
    await sleep(3200);
    await reader.housekeep();
    const spent = (await reader.status()).keys[0]!.spendUsd!;
    expect(spent).toBeGreaterThan(result.costUsd);
    await reader.housekeep();
    expect((await reader.status()).keys[0]!.spendUsd).toBe(spent);
    expect((await reader.status()).keys[0]!.inFlight).toBe(0);
    expect((await queue.get(job.id))!.state).toBe('completed');
  });
});
