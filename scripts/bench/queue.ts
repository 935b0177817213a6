/**
 * LLM job queue benchmark: a batch of small chat jobs drained by `keypool worker` processes through
 * keys whose aggregate capacity is known, against the fake OpenAI upstream enforcing the same rpm.
 *
 *   npm run bench:queue                        readable report on stdout, progress on stderr
 *   npm run -s bench:queue -- --json           exactly one JSON object on stdout
 *   npm run bench:queue -- --jobs 2000 --rpm 1200 --concurrency 32
 *
 * Processes (all children of this one, stopped with it on every path, Ctrl-C included):
 *   - Redis: REDIS_URL if set (never flushed: this run uses a fresh pool name and deletes only that
 *     pool's keys `kp:{bench-queue-<id>}:*`, BullMQ's included, at the end), else a private
 *     redis-server on a free port (packages/testkit spawnRedisServer);
 *   - the fake OpenAI upstream (scripts/bench/queue/worker.ts fake): --keys keys (default 4) of
 *     --rpm requests per minute each (default 2500), enforced like OpenAI (token bucket, 429 with
 *     retry-after beyond it), log-normal latency --latency-p50-ms / --latency-p99-ms (100 / 400);
 *   - --workers `keypool worker` processes (default 2, queue/worker.ts worker): startWorker() of
 *     packages/worker with the same keys and the same rpm in the pool config, the queue enabled
 *     (concurrency --concurrency; keyWaitMs --key-wait-ms, default 2000, the config's default;
 *     other queue settings their defaults) and the scheduler's intervals an hour (it runs, but does
 *     nothing during the measurement);
 *   - this process: the producer (LlmQueue.addBulk, in batches of --batch) and the observer.
 *
 * Concurrency: by Little's law the slots needed to keep the keys busy are the keys' rate times the
 * time a job holds a slot (upstream latency, the worker's own round trips, and the wait for a key).
 * Here, on an idle machine, 166.7 jobs/s x ~0.18 s is ~30 slots: 2 x 16 (the config's default) is
 * just enough, and the queue, not the keys, becomes the limit as soon as the machine is busy
 * (upstream answers and worker round trips slow down: a run beside another test suite reached 0.6
 * of the capacity with all 32 slots busy and no job ever waiting for a key). The default here is
 * 2 x 32, so that the keys are the limit being measured. The report shows the mean busy slots and
 * the slots needed.
 *
 * Enqueue: by default (--enqueue paused) the queue is paused, the jobs are added, and it is resumed:
 * the drain is the workers' alone (on this 2-core machine the producer's addBulk of 5000 jobs,
 * each read back after the add, takes 0.8-1.5 s on an idle machine and ~8 s on a busy one, CPU
 * taken from the drain it would otherwise overlap). --enqueue live adds them while the workers run.
 *
 * Jobs: --jobs (default 5000) chat jobs { model gpt-4o-mini, one user message "job <n>: ...",
 * max_tokens --max-tokens (8) }, each with a unique idempotency key (so a unique BullMQ job id) and
 * the job number in its text, which the workers' instrumentation reads back from each upstream
 * request (see queue/worker.ts) to count upstream answers per job.
 *
 * Upstream buckets. The fake's request bucket holds rpm requests (60 s of traffic) and starts full,
 * as an idle OpenAI key does; keypool's holds 2 s of rpm (burstsOf in packages/core/src/config.ts).
 * Left like that, the fake would accept ~30 s more traffic than keypool ever sends, and no 429 could
 * ever show. By default (--upstream-bucket aligned) each fake key's bucket is set, just before the
 * workers can take the first job, to hold exactly keypool's burst (rate and capacity unchanged), so the upstream
 * admits at most what the pool itself may: any request keypool sends beyond its own limits is a 429
 * here. --upstream-bucket full leaves the fake as it starts (its 429 figure is then meaningless).
 *
 * Figures (times are epoch ms of this machine, read by every process):
 *   drainSeconds       from the first job's start in a worker (its first BullMQ run; paused:
 *                      right after the resume, which is after the enqueue end) to the last job's
 *                      completion (BullMQ finishedOn); the enqueue window is shown apart;
 *   capacityShare      completed jobs / what the keys allow in that window: per key its burst plus
 *                      rpm x T / 60 (keypool's buckets are full at the start). Also shown: the
 *                      steady share (jobs beyond the burst / rpm x T / 60) and the baseline ratio
 *                      (achieved jobs/s over the aggregate rpm / 60, burst ignored);
 *   upstream429Share   the fake's 429 answers / the fake's requests;
 *   lostJobs           jobs of the run not completed when the run ended (failed, or still waiting,
 *                      delayed or active at the --timeout-s cap);
 *   duplicateRuns      upstream answers served (200, the fake's count) beyond one per job: the fake's
 *                      served count minus the jobs that got at least one 200 (workers' trace).
 * Also: jobs/s, job wait (result.waitedMs: enqueue to the start of the run that succeeded) p50/p99,
 * BullMQ attempts used, runs per job (a run handed back as a delay when no key freed within
 * keyWaitMs), pool acquire calls and acquire-script runs in Redis per job, CPU per process, Redis
 * commands per job, completions per second.
 *
 * Exit status: 0 when the benchmark ran (targets met or not: it is a measurement), 1 when it broke
 * (a child process died, Redis or the fake failed), 130 when interrupted.
 *
 * This file is the scenario; its figures and report are in scripts/bench/queue/report.ts, the
 * children in queue/worker.ts, the shared harness in scripts/bench/lib/.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { Job } from 'bullmq';
import { Redis } from 'ioredis';
import { burstsOf } from '@keypool/core';
import { QueueSectionSchema } from '@keypool/config';
import type { FakeKeyCounters } from '@keypool/testkit/fake-openai';
import { LlmQueue, type LlmJobData, type LlmJobInput, type LlmJobResult } from '@keypool/worker';
import { BenchChild } from './lib/child-ipc.js';
import { machineCpu, machineShares, procCpuSeconds } from './lib/proc.js';
import { adminClient, deletePoolKeys, openRedis, redisDelta, sampleRedis, type BenchRedis } from './lib/redis.js';
import { fmt, logger } from './lib/report.js';
import { round } from './lib/stats.js';
import { parseCli } from './queue/options.js';
import { codeVersion, figures, MODEL, render, sumCounters, type Raw, type TimelinePoint } from './queue/report.js';
import type { FakeChildConfig, WorkerChildConfig, WorkerChildStats } from './queue/worker.js';

const CHILD = fileURLToPath(new URL('./queue/worker.ts', import.meta.url));

const log = logger('bench:queue');



// ---- child processes -------------------------------------------------------------------------

/** Set when a child died unexpectedly: the run is broken. */
let childDied: Error | undefined;
const interrupt = new AbortController();

/** A child of queue/worker.ts with its IPC channel (see lib/child-ipc.ts). */
class Child extends BenchChild<{ type: 'ready'; pid: number; url?: string }> {
  constructor(label: string, role: 'fake' | 'worker', config: FakeChildConfig | WorkerChildConfig) {
    super({
      script: CHILD,
      role,
      label,
      config,
      stopAfterMs: [8000, 12_000],
      onUnexpectedExit: (m) => {
        if (interrupt.signal.aborted) return;
        childDied ??= new Error(m);
        log(m);
      },
    });
  }
}


// ---- the run ---------------------------------------------------------------------------------

async function main(): Promise<void> {
  const opts = parseCli();
  const t0 = Date.now();
  const code = codeVersion();
  const runId = randomBytes(4).toString('hex');
  const poolName = `bench-queue-${runId}`;
  const keys = Array.from({ length: opts.keys }, (_, i) => ({ name: `k${i + 1}`, secret: `sk-benchq-${runId}-${i + 1}-${randomBytes(12).toString('hex')}`, rpm: opts.rpm }));
  const bursts = keys.map((k) => burstsOf({ rpm: k.rpm, tpm: 0 }).rb);
  const aggregateRpm = keys.reduce((s, k) => s + k.rpm, 0);
  const aggregateBurst = bursts.reduce((s, b) => s + b, 0);
  const idealDrainSeconds = Math.max(0, opts.jobs - aggregateBurst) / (aggregateRpm / 60);
  const timeoutS = opts.timeoutS ?? Math.ceil(idealDrainSeconds * 4 + 60);
  const queueSection = { concurrency: opts.concurrency, keyWaitMs: opts.keyWaitMs, keepCompleted: Math.max(10_000, opts.jobs) };
  const queueSettings = QueueSectionSchema.parse(queueSection);
  const latency = opts.latencyP50Ms === opts.latencyP99Ms ? opts.latencyP50Ms : { p50Ms: opts.latencyP50Ms, p99Ms: opts.latencyP99Ms };
  log(
    `${opts.jobs} jobs, ${opts.keys} keys x ${opts.rpm} rpm (burst ${bursts[0]} each) = ${fmt(aggregateRpm / 60, 1)} jobs/s; ideal drain ${fmt(idealDrainSeconds, 1)} s; ` +
      `${opts.workers} workers x concurrency ${opts.concurrency}; upstream latency ${JSON.stringify(latency)} ms; wait cap ${timeoutS} s`,
  );

  const onSignal = () => interrupt.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  let redis: BenchRedis | undefined;
  const redisKind: 'env' | 'spawned' = process.env.REDIS_URL ? 'env' : 'spawned';
  let admin: Redis | undefined;
  let producerConn: Redis | undefined;
  let queue: LlmQueue | undefined;
  let fake: Child | undefined;
  const workers: Child[] = [];
  let raw: Raw | undefined;
  try {
    // ---- Redis
    redis = await openRedis();
    const redisUrl = redis.url;
    if (redis.kind === 'env') log(`Redis from REDIS_URL; pool ${poolName} (only its keys are deleted at the end)`);
    else log(`redis-server on ${redis.display}`);
    admin = adminClient(redisUrl, { maxRetriesPerRequest: 2 });
    await admin.ping();

    // ---- the fake upstream and the workers
    fake = new Child('fake', 'fake', { keys, model: MODEL, latency, seed: opts.seed } satisfies FakeChildConfig);
    const fakeReady = await fake.ready;
    const fakeUrl = fakeReady.url!;
    log(`fake upstream at ${fakeUrl} (pid ${fakeReady.pid})`);
    for (let i = 0; i < opts.workers; i++) {
      const cfg: WorkerChildConfig = {
        redisUrl,
        fakeUrl,
        pool: poolName,
        model: MODEL,
        workerId: `bench-worker-${i + 1}`,
        keys,
        queue: queueSection,
        // the scheduler runs as in production, but nothing it does falls in the measurement
        scheduler: { probeMs: 3_600_000, housekeepingMs: 3_600_000, secretRefreshMs: 3_600_000 },
        logLevel: opts.logLevel,
      };
      workers.push(new Child(`worker-${i + 1}`, 'worker', cfg));
    }
    const ready = await Promise.all(workers.map((w) => w.ready));
    log(`${workers.length} workers ready (pids ${ready.map((r) => r.pid).join(', ')})`);
    if (interrupt.signal.aborted) throw new Error('interrupted');

    // ---- producer
    producerConn = new Redis(redisUrl, { maxRetriesPerRequest: null });
    producerConn.on('error', (e: Error) => log(`producer Redis error: ${e.message}`));
    queue = new LlmQueue({
      connection: producerConn,
      pool: poolName,
      attempts: queueSettings.attempts,
      backoffMs: queueSettings.backoffMs,
      keepCompletedS: queueSettings.keepCompletedS,
      keepCompleted: queueSettings.keepCompleted,
      keepFailedS: queueSettings.keepFailedS,
    });
    await queue.queue.waitUntilReady();
    const inputs: LlmJobInput[] = Array.from({ length: opts.jobs }, (_, i) => ({
      kind: 'chat',
      request: { model: MODEL, messages: [{ role: 'user', content: `job ${i}: say hi` }], max_tokens: opts.maxTokens },
      idempotencyKey: `bench-queue-${runId}-${i}`,
    }));

    const cpuPids: Record<string, number | undefined> = { producer: process.pid, fake: fake.pid, ...Object.fromEntries(workers.map((w) => [w.label, w.pid])) };
    /** Just before the workers may take the first job: the upstream's buckets, counters and CPU. */
    const startMeasuring = async () => {
      if (opts.upstreamBucket === 'aligned') await fake!.request('align', { levels: Object.fromEntries(keys.map((k, i) => [k.name, bursts[i]!])) });
      await fake!.request('reset-counters');
      return {
        cpu: Object.fromEntries(Object.entries(cpuPids).map(([k, pid]) => [k, procCpuSeconds(pid).total])),
        machine: machineCpu(),
        redis: await sampleRedis(admin!),
        wall: Date.now(),
      };
    };
    // the pool's buckets are full (its burst) after the workers' idle start: > 2 s of rpm refills
    // whatever startup took
    await sleep(2500);

    // ---- measurement
    if (opts.enqueue === 'paused') await queue.queue.pause();
    let start = opts.enqueue === 'live' ? await startMeasuring() : undefined;
    const enqueueStart = Date.now();
    const ids: string[] = [];
    for (let at = 0; at < inputs.length; at += opts.batch) {
      const added = await queue.addBulk(inputs.slice(at, at + opts.batch));
      for (const a of added) ids.push(a.id);
    }
    const enqueueEnd = Date.now();
    if (new Set(ids).size !== opts.jobs) throw new Error(`addBulk returned ${new Set(ids).size} distinct ids for ${opts.jobs} jobs`);
    log(`enqueued ${opts.jobs} jobs in ${fmt((enqueueEnd - enqueueStart) / 1000, 2)} s${opts.enqueue === 'paused' ? ' (queue paused)' : ''}`);
    let resumedAt: number | null = null;
    if (opts.enqueue === 'paused') {
      start = await startMeasuring();
      resumedAt = Date.now();
      await queue.queue.resume();
    }
    const { cpu: cpuStart, machine: machineStart, redis: redisStart, wall: wallStart } = start!;
    const t0m = resumedAt ?? enqueueStart;

    const timeline: TimelinePoint[] = [];
    const waitUntil = t0m + timeoutS * 1000;
    let timedOut = false;
    let lastLog = 0;
    for (;;) {
      if (interrupt.signal.aborted) throw new Error('interrupted');
      if (childDied) throw childDied;
      const c = await queue.counts();
      const f = sumCounters(await fake.request<Record<string, FakeKeyCounters>>('counters'));
      const t = (Date.now() - t0m) / 1000;
      timeline.push({ t: round(t, 2), completed: c.completed ?? 0, failed: c.failed ?? 0, active: c.active ?? 0, delayed: c.delayed ?? 0, waiting: (c.waiting ?? 0) + (c.prioritized ?? 0), upstreamRequests: f.requests, upstream429: f.r429 });
      const done = (c.completed ?? 0) + (c.failed ?? 0);
      if (t - lastLog >= 5 || done >= opts.jobs) {
        lastLog = t;
        log(`t+${fmt(t, 1)} s: completed ${c.completed}, failed ${c.failed}, active ${c.active}, delayed ${c.delayed}, waiting ${(c.waiting ?? 0) + (c.prioritized ?? 0)}; upstream ${f.requests} requests, ${f.r429} 429s`);
      }
      if (done >= opts.jobs) break;
      if (Date.now() >= waitUntil) {
        timedOut = true;
        log(`the drain did not finish within ${timeoutS} s: the jobs left are lost`);
        break;
      }
      await sleep(500);
    }
    const wallEnd = Date.now();
    const cpuEnd = Object.fromEntries(Object.entries(cpuPids).map(([k, pid]) => [k, procCpuSeconds(pid).total]));
    const machineEnd = machineCpu();
    const redisEnd = await sampleRedis(admin);

    // ---- what happened, job by job
    await sleep(200); // answers written just before the last completion are counted by the fake
    const mine = new Set(ids);
    const completed = ((await queue.queue.getJobs(['completed'], 0, -1)) as Job<LlmJobData, LlmJobResult>[]).filter((j) => j && mine.has(j.id!));
    const done = new Set(completed.map((j) => j.id!));
    const notCompleted: Record<string, number> = {};
    const failedReasons: Record<string, number> = {};
    for (const id of ids) {
      if (done.has(id)) continue;
      const job = await queue.queue.getJob(id);
      const state = job ? await job.getState() : 'missing';
      notCompleted[state] = (notCompleted[state] ?? 0) + 1;
      if (state === 'failed' && job) failedReasons[String(job.failedReason).slice(0, 160)] = (failedReasons[String(job.failedReason).slice(0, 160)] ?? 0) + 1;
    }
    const workerStats = await Promise.all(workers.map((w) => w.request<WorkerChildStats>('stats')));
    const counters = await fake.request<Record<string, FakeKeyCounters>>('counters');
    const wall = (wallEnd - wallStart) / 1000;
    const byProcess: Record<string, number> = {};
    for (const k of Object.keys(cpuPids)) byProcess[k] = round((cpuEnd[k]! - cpuStart[k]!) / wall, 3);
    byProcess.redis = round((redisEnd.cpu - redisStart.cpu) / wall, 3);
    const redisRun = redisDelta(redisStart, redisEnd, true);
    const byCommand = Object.fromEntries(Object.entries(redisRun.byCommand).map(([k, c]) => [k, c.calls]));
    raw = {
      enqueueStart,
      enqueueEnd,
      resumedAt,
      ids,
      timedOut,
      completed,
      notCompleted,
      failedReasons,
      workers: workerStats,
      counters,
      timeline,
      cpu: {
        wallSeconds: round(wall, 2),
        byProcess,
        machineBusy: ((sh) => (sh ? round(sh.busy, 3) : null))(machineShares(machineStart, machineEnd)),
      },
      redis: { commands: redisRun.commands, byCommand },
    };
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await Promise.all(workers.map((w) => w.stop().catch(() => undefined)));
    await fake?.stop().catch(() => undefined);
    await queue?.close().catch(() => undefined);
    producerConn?.disconnect();
    if (redisKind === 'env' && admin) await deletePoolKeys(admin, poolName, log);
    admin?.disconnect();
    await redis?.stop().catch(() => undefined);
  }

  if (!raw) throw new Error('no measurement was taken');
  const result = figures(opts, raw, { runId, poolName, redisKind, keys, bursts, aggregateRpm, aggregateBurst, idealDrainSeconds, timeoutS, latency, queueSettings, totalWallSeconds: (Date.now() - t0) / 1000, code });
  if (opts.json) process.stdout.write(JSON.stringify(result) + '\n');
  else process.stdout.write(render(result) + '\n');
}

main().catch((e: unknown) => {
  if (interrupt.signal.aborted) {
    log('interrupted: no results printed');
    process.exitCode = 130;
    return;
  }
  log(`failed: ${(e as Error)?.stack ?? String(e)}`);
  process.exitCode = 1;
});
