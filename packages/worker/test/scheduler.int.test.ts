import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { KeyPool, PoolKeys } from '@keypool/core';
import { connectionForChild, connectTestRedis, connectTo, startFakeOpenAI, uniqueName, type FakeOpenAI } from '@keypool/testkit';
import { Scheduler } from '../src/index.js';
import { LogSink } from '@keypool/testkit/log-sink';
import { workerProcesses } from './fixtures/processes.js';

/**
 * The scheduler across real worker processes (each its own BullMQ Worker and Redis connections)
 * on the test Redis: every iteration of every job runs once, whatever the number of workers, and
 * a worker killed with SIGKILL in the middle of a job is replaced by another.
 */
const { startWorker: startWorker, cleanups } = workerProcesses();

interface RunEvent {
  /** ms, from the stream entry id */
  at: number;
  event: string;
  job: string;
  id: string;
  worker: string;
}


async function runLog(redis: import('ioredis').Redis | import('ioredis').Cluster, pool: string): Promise<RunEvent[]> {
  const entries = await redis.xrange(new PoolKeys(pool).schedLog, '-', '+');
  return entries.map(([entryId, fields]) => {
    const o: Record<string, string | number> = { at: Number(entryId.split('-')[0]) };
    for (let i = 0; i < fields.length; i += 2) o[fields[i]!] = fields[i + 1]!;
    return o as unknown as RunEvent;
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const SECRET = 'sk-sched-0123456789abcdefghijklmnop';

describe('scheduler: BullMQ job schedulers across worker processes', () => {
  it('workers that start at the same moment all start (BullMQ refuses all but one upsert of an iteration)', async () => {
    const pool = uniqueName('sched');
    const started: Scheduler[] = [];
    const sink = new LogSink();
    const parts = await Promise.all(
      Array.from({ length: 5 }, async (_, i) => {
        const connection = connectTo(connectionForChild(), { maxRetriesPerRequest: null });
        const p = await KeyPool.connect({ redis: connection, config: { pool }, logger: sink.logger });
        return { connection, p, s: new Scheduler({ pool: p, connection, settings: { probeMs: 60_000, housekeepingMs: 60_000 }, logger: sink.logger, workerId: `s${i}` }) };
      }),
    );
    cleanups.push(async () => {
      for (const x of parts) {
        await x.s.close();
        await x.p.close();
        await x.connection.quit();
      }
    });
    await Promise.all(parts.map((x) => x.s.start().then(() => started.push(x.s))));
    expect(started).toHaveLength(5);
    const reader = parts[0]!.p;
    expect((await reader.scheduleStatus()).map((j) => j.name)).toEqual(['budget-period', 'health-probe', 'housekeeping']);
  });

  it('a worker that starts beside running ones leaves their schedulers alone (an upsert could run an iteration twice)', async () => {
    const pool = uniqueName('sched');
    const sink = new LogSink();
    const connection = connectTo(connectionForChild(), { maxRetriesPerRequest: null });
    const p = await KeyPool.connect({ redis: connection, config: { pool }, logger: sink.logger });
    // long intervals and a yearly pattern: nothing runs (and moves) during the test but the first iterations
    const settings = { probeMs: 60_000, housekeepingMs: 60_000, budgetPattern: '0 0 1 1 *' };
    const a = new Scheduler({ pool: p, connection, settings, workerId: 'a' });
    const b = new Scheduler({ pool: p, connection, settings, workerId: 'b' });
    const c = new Scheduler({ pool: p, connection, settings: { ...settings, probeMs: 30_000 }, workerId: 'c' });
    cleanups.push(async () => {
      for (const s of [a, b, c]) await s.close();
      await p.close();
      await connection.quit();
    });
    const { Queue } = await import('bullmq');
    const queue = new Queue('scheduler', { connection, prefix: new PoolKeys(pool).bull });
    cleanups.push(() => queue.close());
    const delayed = async () => (await queue.getDelayed()).map((j) => `${j.id}@${j.timestamp}`).sort();
    await a.start();
    await expect.poll(async () => (await delayed()).length, { timeout: 5000 }).toBe(3);
    const before = await delayed();
    await sleep(20); // an upsert would re-add with a later timestamp
    await b.start();
    expect(await delayed()).toEqual(before);
    // a changed schedule is applied: the probe's next iteration is replaced
    await c.start();
    expect((await queue.getJobScheduler('health-probe'))?.every).toBe(30_000);
  });

  it('a Redis that lost the schedulers (restarted empty) gets them back from the running workers', async () => {
    const pool = uniqueName('sched');
    const connection = connectTo(connectionForChild(), { maxRetriesPerRequest: null });
    const p = await KeyPool.connect({ redis: connection, config: { pool }, logger: new LogSink().logger });
    // long intervals: no run may write its records back while the test wipes them
    const s = new Scheduler({ pool: p, connection, settings: { probeMs: 60_000, housekeepingMs: 60_000 }, workerId: 'solo' });
    cleanups.push(async () => {
      await s.close();
      await p.close();
      await connection.quit();
    });
    await s.start();
    expect(await s.ensure()).toEqual([]);
    // the first iteration of an `every` scheduler runs at once: let it finish before the wipe
    await expect.poll(async () => (await p.scheduleStatus()).filter((j) => j.lastRun).length, { timeout: 5000 }).toBe(2);
    // what a restart without persistence leaves: none of the pool's keys
    const nodes = 'nodes' in connection && (connection as { isCluster?: boolean }).isCluster ? (connection as import('ioredis').Cluster).nodes('master') : [connection as import('ioredis').Redis];
    for (const node of nodes) {
      const found = await node.keys(`kp:{${pool}}:*`);
      if (found.length > 0) await node.del(...found);
    }
    expect((await s.ensure()).sort()).toEqual(['budget-period', 'health-probe', 'housekeeping']);
    // BullMQ has them again (with their next iteration), and /status its records
    expect((await p.scheduleStatus()).map((j) => [j.name, j.every ?? j.pattern])).toEqual([
      ['budget-period', '0 0 * * *'],
      ['health-probe', 60_000],
      ['housekeeping', 60_000],
    ]);
    expect(await s.ensure()).toEqual([]);
  });

  it('three workers: each iteration of each job runs exactly once, and the work is shared', async () => {
    const pool = uniqueName('sched');
    const fake: FakeOpenAI = await startFakeOpenAI({ keys: [SECRET] });
    cleanups.push(() => fake.stop());
    const spec = {
      pool,
      keys: [{ secret: SECRET, models: ['gpt-4o-mini'], baseURL: fake.url }],
      // a lock long enough that a worker starved of CPU by the rest of the suite keeps its job
      scheduler: { probeMs: 500, probeTimeoutMs: 400, housekeepingMs: 1000, budgetPattern: '*/1 * * * * *', lockMs: 10_000, stalledCheckMs: 5000 },
    };
    const workers = await Promise.all(['w1', 'w2', 'w3'].map((id) => startWorker(spec, id)));
    const runFor = 6000;
    await sleep(runFor);
    for (const w of workers) w.kill('SIGTERM');
    await Promise.all(workers.map((w) => new Promise((r) => (w.exitCode !== null ? r(null) : w.once('exit', r)))));
    const redis = connectTestRedis();
    cleanups.push(() => redis.quit());
    const log = await runLog(redis, pool);
    const started = log.filter((e) => e.event === 'started');
    const completed = log.filter((e) => e.event === 'completed');
    expect(log.filter((e) => e.event === 'failed')).toEqual([]);
    // exactly once: no iteration (BullMQ job id) started or completed twice
    const twice = (list: RunEvent[]) => {
      const m = new Map<string, number>();
      for (const e of list) m.set(e.id, (m.get(e.id) ?? 0) + 1);
      return [...m].filter(([, n]) => n > 1);
    };
    expect(twice(started)).toEqual([]);
    expect(twice(completed)).toEqual([]);
    expect(completed.map((e) => e.id).sort()).toEqual(started.map((e) => e.id).sort());
    // and every job ran about once per interval over the time it was scheduled: not three times
    // as often (three workers), not starved
    const per = (job: string) => completed.filter((e) => e.job === job).length;
    for (const [job, every] of [['health-probe', 500], ['housekeeping', 1000], ['budget-period', 1000]] as const) {
      const runs = started.filter((e) => e.job === job);
      const span = runs[runs.length - 1]!.at - runs[0]!.at;
      const expected = span / every + 1;
      expect(runs.length, job).toBeGreaterThanOrEqual(Math.max(4, Math.floor(expected * 0.8)));
      expect(runs.length, job).toBeLessThanOrEqual(Math.ceil(expected) + 1);
      expect(span, job).toBeGreaterThanOrEqual(runFor - 2 * every);
    }
    expect(new Set(completed.map((e) => e.worker)).size).toBeGreaterThanOrEqual(2);
    // the record /status and /metrics read
    const reader = await KeyPool.connect({ redis, config: { pool }, logger: new LogSink().logger });
    cleanups.push(() => reader.close());
    const jobs = await reader.scheduleStatus();
    expect(jobs.map((j) => j.name)).toEqual(['budget-period', 'health-probe', 'housekeeping']);
    const probe = jobs.find((j) => j.name === 'health-probe')!;
    expect(probe.every).toBe(500);
    expect(probe.runs.completed).toBe(per('health-probe'));
    expect(probe.lastRun?.ok).toBe(true);
    expect(jobs.find((j) => j.name === 'budget-period')!.pattern).toBe('*/1 * * * * *');
  });

  it('a worker killed (SIGKILL) in the middle of a job: the job runs again on another worker, once, and the schedule goes on', async () => {
    const pool = uniqueName('sched');
    // a provider whose GET /models takes 2.5 s: the probe job is long enough to be killed midway
    let modelsCalls = 0;
    const slow: Server = createServer((req, res) => {
      if (req.url?.endsWith('/models')) {
        modelsCalls++;
        setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{"object":"list","data":[]}'), 2500);
      } else res.writeHead(500).end();
    });
    await new Promise<void>((r) => slow.listen(0, '127.0.0.1', () => r()));
    cleanups.push(() => new Promise((r) => slow.close(r)));
    slow.closeAllConnections();
    const baseURL = `http://127.0.0.1:${(slow.address() as AddressInfo).port}/v1`;
    const redis = connectTestRedis();
    cleanups.push(() => redis.quit());
    // open the key's breaker so that it wants a probe
    const opener = await KeyPool.connect({ redis, config: { pool, breaker: { failures: 1, cooldownMs: 600_000 }, keys: [{ secret: SECRET, models: ['m'], baseURL }] }, logger: new LogSink().logger });
    cleanups.push(() => opener.close());
    const lease = await opener.acquire({ model: 'm' });
    if (lease.ok) await lease.release({ status: 500 });
    expect((await opener.status({ fresh: true })).keys[0]!.state).toBe('open');

    const spec = {
      pool,
      keys: [{ secret: SECRET, models: ['m'], baseURL }],
      scheduler: { probeMs: 4000, probeTimeoutMs: 3000, housekeepingMs: 1000, lockMs: 1500, stalledCheckMs: 500 },
    };
    const ids = ['k1', 'k2', 'k3'];
    const workers = await Promise.all(ids.map((id) => startWorker(spec, id)));
    // wait for a probe run to start, and kill its worker while it waits for the provider
    let victim: RunEvent | undefined;
    for (let i = 0; i < 200 && !victim; i++) {
      victim = (await runLog(redis, pool)).find((e) => e.event === 'started' && e.job === 'health-probe');
      if (!victim) await sleep(50);
    }
    expect(victim).toBeDefined();
    await sleep(300);
    workers[ids.indexOf(victim!.worker)]!.kill('SIGKILL');
    // lock lost after lockMs, found at the next stalled check, run again elsewhere (2.5 s probe)
    let rerun: RunEvent | undefined;
    for (let i = 0; i < 200 && !rerun; i++) {
      rerun = (await runLog(redis, pool)).find((e) => e.event === 'completed' && e.id === victim!.id);
      if (!rerun) await sleep(100);
    }
    expect(rerun).toBeDefined();
    expect(rerun!.worker).not.toBe(victim!.worker);
    const log = await runLog(redis, pool);
    expect(log.filter((e) => e.event === 'completed' && e.id === victim!.id)).toHaveLength(1);
    expect(log.filter((e) => e.event === 'started' && e.id === victim!.id)).toHaveLength(2);
    // the rerun's probe succeeded: the breaker is closed
    expect((await opener.status()).keys[0]!.state).toBe('active');
    // the other jobs went on with two workers
    const hk = log.filter((e) => e.event === 'completed' && e.job === 'housekeeping');
    expect(hk.length).toBeGreaterThanOrEqual(3);
    expect(modelsCalls).toBeGreaterThanOrEqual(2);
    for (const w of workers) if (w.exitCode === null && w.signalCode === null) w.kill('SIGTERM');
    await Promise.all(workers.map((w) => new Promise((r) => (w.exitCode !== null || w.signalCode !== null ? r(null) : w.once('exit', r)))));
  });
});
