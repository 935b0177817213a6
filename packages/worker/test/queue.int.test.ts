import { afterAll, describe, expect, it } from 'vitest';
import { KeyPool, PoolKeys } from '@keypool/core';
import { connectionForChild, connectTo, startFakeOpenAI, uniqueName, type FakeOpenAI } from '@keypool/testkit';
import { LogSink } from '@keypool/testkit/log-sink';
import { LlmQueue, LlmWorker, jobIdOf, type LlmWorkerSettings } from '../src/index.js';

/** The LLM job queue in one process: producer API, consumer, failures, retries, deadlines. */
const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const f of cleanups.reverse()) await f().catch(() => undefined);
});

const S = (t: string) => `sk-queue-${t}-0123456789abcdefghij`;
const SETTINGS: LlmWorkerSettings = { concurrency: 8, keyWaitMs: 500, attemptTimeoutMs: 5000, lockMs: 5000, stalledCheckMs: 2000 };
const chat = (text: string, extra: Record<string, unknown> = {}) => ({ kind: 'chat' as const, request: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: text }], max_tokens: 4, ...extra } });

async function setup(opts: { rpm?: number; fake?: Parameters<typeof startFakeOpenAI>[0]; worker?: boolean; attempts?: number } = {}) {
  const fake: FakeOpenAI = await startFakeOpenAI({ keys: [{ key: S('a'), name: 'a' }], latency: 5, ...opts.fake });
  const connection = connectTo(connectionForChild(), { maxRetriesPerRequest: null });
  const sink = new LogSink();
  const pool = await KeyPool.connect({ redis: connection, config: { pool: uniqueName('queue'), keys: [{ secret: S('a'), models: ['gpt-4o-mini'], baseURL: fake.url, rpm: opts.rpm ?? 0 }] }, logger: sink.logger });
  const queue = new LlmQueue({ connection, pool: pool.name, attempts: opts.attempts ?? 3, backoffMs: 100 });
  const worker = new LlmWorker({ pool, connection, settings: SETTINGS, logger: sink.logger });
  if (opts.worker !== false) await worker.start();
  cleanups.push(async () => {
    await worker.close();
    await queue.close();
    await pool.close();
    await connection.quit();
    await fake.stop();
  });
  return { fake, pool, queue, worker, sink };
}

describe('LLM job queue', () => {
  it('a job runs through the pool; its result, model, key and cost are kept on it', async () => {
    const { queue, pool } = await setup();
    const job = await queue.add(chat('hello'));
    expect(job).toMatchObject({ kind: 'chat', model: 'gpt-4o-mini', priority: 'low' });
    expect(job.tenant).toBeUndefined();
    const result = await queue.wait(job.id, 10_000);
    expect(result.model).toBe('gpt-4o-mini');
    expect(result.keyId).toBe(pool.knownKeys()[0]!.id);
    expect(result.costUsd).toBeGreaterThan(0);
    expect(result.attempts).toBe(1);
    expect((result.response as { object: string }).object).toBe('chat.completion');
    expect(await queue.get(job.id)).toMatchObject({ state: 'completed', result: { keyId: result.keyId } });
    const emb = await queue.add({ kind: 'embeddings', request: { model: 'text-embedding-3-small', input: 'x' } });
    // the pool has no key for that model: it fails at once, attempts not spent on retries
    await expect(queue.wait(emb.id, 10_000)).rejects.toThrow(/UnknownModelError/);
    expect(await queue.get(emb.id)).toMatchObject({ state: 'failed', attemptsMade: 1 });
  });

  it('an idempotency key: enqueueing again returns the same job, which runs once', async () => {
    const { queue, fake } = await setup();
    const a = await queue.add({ ...chat('once'), idempotencyKey: 'order-42' });
    const b = await queue.add({ ...chat('once'), idempotencyKey: 'order-42' });
    expect(b.id).toBe(a.id);
    expect(a.id).toBe(jobIdOf('order-42'));
    expect(a.id).not.toContain('order-42');
    await queue.wait(a.id, 10_000);
    const c = await queue.add({ ...chat('once'), idempotencyKey: 'order-42' });
    expect(c).toMatchObject({ id: a.id, state: 'completed' });
    // the job as it is stored, not as the second add asked
    const d = await queue.add({ kind: 'embeddings', request: { model: 'other', input: 'x' }, priority: 'critical', idempotencyKey: 'order-42' });
    expect(d).toMatchObject({ id: a.id, kind: 'chat', model: 'gpt-4o-mini', priority: 'low' });
    expect(fake.counters().a!.served).toBe(1);
  });

  it('a request the provider refuses fails at once with its error kept; an operator can retry a failed job', async () => {
    const { queue, fake } = await setup();
    const bad = await queue.add(chat('bad', { max_tokens: -5 }));
    await expect(queue.wait(bad.id, 10_000)).rejects.toThrow(/"status":400/);
    const info = await queue.get(bad.id);
    expect(info).toMatchObject({ state: 'failed', attemptsMade: 1 });
    expect(JSON.parse(info!.error!)).toMatchObject({ status: 400, type: 'invalid_request_error' });
    expect(await queue.failed()).toEqual([expect.objectContaining({ id: bad.id })]);
    // a transient failure (one key here, so the attempt fails with it): BullMQ retries with backoff
    fake.setFault({ kind: 'error', status: 503, count: 1 });
    const flaky = await queue.add(chat('flaky'));
    const r = await queue.wait(flaky.id, 15_000);
    expect(r.attempts).toBe(2);
    // an operator retries a job that ran out of attempts
    fake.setFault({ kind: 'error', status: 503, count: 1 });
    const down = await queue.add({ ...chat('down'), attempts: 1 });
    await expect(queue.wait(down.id, 15_000)).rejects.toThrow(/503|server/i);
    fake.clearFaults();
    await queue.retry(down.id);
    expect((await queue.wait(down.id, 10_000)).model).toBe('gpt-4o-mini');
    // a retried job gets all its attempts again (BullMQ alone would give it one more)
    fake.setFault({ kind: 'error', status: 503, count: 2 });
    const twice = await queue.add({ ...chat('twice'), attempts: 2 });
    await expect(queue.wait(twice.id, 15_000)).rejects.toThrow(/503|server/i);
    fake.setFault({ kind: 'error', status: 503, count: 1 });
    await queue.retry(twice.id);
    expect(await queue.wait(twice.id, 15_000)).toMatchObject({ attempts: 2 });
    await expect(queue.retry(down.id)).rejects.toThrow(/is completed: only a failed job can be retried/);
  });

  it('the failed count of the queue stats counts a job once, when its last attempt fails, not its retried attempts', async () => {
    const { queue, pool, fake } = await setup();
    const stats = new PoolKeys(pool.name).queueStats;
    const redis = connectTo(connectionForChild());
    cleanups.push(() => redis.quit());
    // fails once, then succeeds on its second attempt: not a failed job
    fake.setFault({ kind: 'error', status: 503, count: 1 });
    const flaky = await queue.add(chat('flaky'));
    expect((await queue.wait(flaky.id, 15_000)).attempts).toBe(2);
    // fails both of its attempts: one failed job
    fake.setFault({ kind: 'error', status: 503, count: 2 });
    const lost = await queue.add({ ...chat('lost'), attempts: 2 });
    await expect(queue.wait(lost.id, 15_000)).rejects.toThrow(/503|server/i);
    await expect.poll(() => redis.hget(stats, 'failed'), { timeout: 5000 }).toBe('1');
    expect(await redis.hget(stats, 'completed')).toBe('1');
  });

  it('no key free: the job waits for the time the pool names, spending no attempt; a deadline that passes fails it', async () => {
    // 60 rpm: a burst of 2, then one request a second
    const { queue } = await setup({ rpm: 60 });
    const jobs = await queue.addBulk(Array.from({ length: 5 }, (_, i) => ({ ...chat(`n${i}`), attempts: 1 })));
    const results = await Promise.all(jobs.map((j) => queue.wait(j.id, 20_000)));
    // only one attempt each although most had to wait for the bucket (some beyond keyWaitMs)
    expect(results.every((r) => r.attempts === 1)).toBe(true);
    expect(Math.max(...results.map((r) => r.waitedMs))).toBeGreaterThan(1500);
    const late = await queue.add({ ...chat('late'), deadline: Date.now() + 300 });
    const more = await queue.addBulk(Array.from({ length: 3 }, (_, i) => chat(`m${i}`)));
    await expect(queue.wait(late.id, 10_000)).rejects.toThrow(/deadline/);
    await Promise.all(more.map((j) => queue.wait(j.id, 20_000)));
  });

  it('jobs are low by default; a tenant is kept on the job and reaches the pool with its class', async () => {
    const { queue, pool } = await setup();
    const asked: { priority?: string; tenant?: string }[] = [];
    const acquire = pool.acquire.bind(pool);
    // what the worker asks the pool for (the real pool answers)
    pool.acquire = ((req: Parameters<typeof pool.acquire>[0]) => (asked.push({ priority: req.priority, tenant: req.tenant }), acquire(req))) as typeof pool.acquire;
    const a = await queue.add({ ...chat('for acme'), tenant: 'acme' });
    expect(a).toMatchObject({ priority: 'low', tenant: 'acme' });
    await queue.wait(a.id, 10_000);
    const b = await queue.add({ ...chat('urgent'), priority: 'normal' });
    await queue.wait(b.id, 10_000);
    expect(asked).toEqual([{ priority: 'low', tenant: 'acme' }, { priority: 'normal', tenant: undefined }]);
    await expect(queue.add({ ...chat('x'), tenant: 'two words' })).rejects.toThrow('invalid job: tenant: a tenant name: 1-64 characters without spaces or commas');
  });

  it('a malformed job is refused before anything is added, with each problem and its path', async () => {
    const { queue } = await setup({ worker: false });
    await expect(queue.add({ kind: 'chat', request: { messages: [] } })).rejects.toThrow('invalid job: request.model: name a model or a route');
    await expect(queue.add({ kind: 'embeddings', request: { model: 'm' } })).rejects.toThrow('request.input: a embeddings request needs input');
    await expect(queue.addBulk([chat('ok'), { ...chat('x'), priority: 'urgent' as never }])).rejects.toThrow(/jobs\[1\]\.priority/);
    await expect(queue.add({ ...chat('s'), request: { ...chat('s').request, stream: true } })).rejects.toThrow('request.stream: queued jobs do not stream');
    expect(Object.values(await queue.counts()).reduce((a, b) => a + b, 0)).toBe(0);
  });
});
