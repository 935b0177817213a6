import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadGatewayConfig } from '@keypool/config';
import { serve, type Serving } from '@keypool/server';
import { connectionForChild, connectTo, startFakeOpenAI, testTarget, uniqueName } from '@keypool/testkit';
import { LogSink } from '@keypool/testkit/log-sink';
import { LlmQueue, LlmWorker } from '@keypool/worker';

/** The LLM queue as ops see it: a gateway's /status and /metrics (standalone: serve takes a URL). */
const dir = mkdtempSync(join(tmpdir(), 'keypool-queue-status-'));
const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const f of cleanups.reverse()) await f().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(testTarget() === 'cluster')('queue in /status and /metrics', () => {
  it('jobs by state, totals, mean wait; then done and failed ones', async () => {
    const fake = await startFakeOpenAI({ keys: ['sk-qstatus-0123456789abcdefghij'] });
    cleanups.push(() => fake.stop());
    const pool = uniqueName('qstatus');
    const yaml = join(dir, 'keypool.yaml');
    writeFileSync(
      yaml,
      [`pool: ${pool}`, `redis: { url: "${connectionForChild().url}" }`, 'server: { host: 127.0.0.1, port: 0 }', 'logLevel: warn', 'keys:', `  - { secret: sk-qstatus-0123456789abcdefghij, models: [gpt-4o-mini], baseURL: "${fake.url}" }`].join('\n'),
    );
    const config = loadGatewayConfig({ file: yaml });
    const sink = new LogSink();
    const gw: Serving = await serve(config, { logger: sink.logger });
    cleanups.push(() => gw.close());
    const connection = connectTo(connectionForChild(), { maxRetriesPerRequest: null });
    const queue = new LlmQueue({ connection, pool });
    cleanups.push(async () => {
      await queue.close();
      await connection.quit();
    });
    const ask = (model: string) => ({ kind: 'chat' as const, request: { model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 3 } });
    const jobs = await queue.addBulk([ask('gpt-4o-mini'), ask('gpt-4o-mini'), { ...ask('gpt-4o-mini'), priority: 'critical' as const }, ask('no-such-model')]);
    const status = async () => (await (await fetch(`${gw.url}/status`)).json()) as { queue: { counts: Record<string, number>; completed: number; failed: number; avgWaitMs: number | null } };
    const before = (await status()).queue;
    expect(before.counts.prioritized! + before.counts.waiting!).toBe(4);
    expect(before).toMatchObject({ completed: 0, failed: 0, avgWaitMs: null });
    expect(await (await fetch(`${gw.url}/metrics`)).text()).toMatch(/keypool_queue_jobs\{state="prioritized"\} 4/);

    const worker = new LlmWorker({ pool: gw.pool, connection, settings: { concurrency: 4, keyWaitMs: 500, attemptTimeoutMs: 5000, lockMs: 5000, stalledCheckMs: 2000 }, logger: sink.logger });
    cleanups.push(() => worker.close());
    await worker.start();
    await Promise.allSettled(jobs.map((j) => queue.wait(j.id, 10_000)));
    await expect.poll(async () => (await status()).queue, { timeout: 5000 }).toMatchObject({ completed: 3, failed: 1 });
    const after = (await status()).queue;
    expect(after.counts).toMatchObject({ completed: 3, failed: 1, active: 0 });
    expect(after.avgWaitMs).toBeGreaterThanOrEqual(0);
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    expect(metrics).toMatch(/keypool_queue_finished_total\{outcome="completed"\} 3/);
    expect(metrics).toMatch(/keypool_queue_finished_total\{outcome="failed"\} 1/);
    expect(metrics).toMatch(/keypool_queue_wait_seconds_avg \d/);
  });
});
