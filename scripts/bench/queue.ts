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
 *   - the fake OpenAI upstream (scripts/bench/queue-worker.ts fake): --keys keys (default 4) of
 *     --rpm requests per minute each (default 2500), enforced like OpenAI (token bucket, 429 with
 *     retry-after beyond it), log-normal latency --latency-p50-ms / --latency-p99-ms (100 / 400);
 *   - --workers `keypool worker` processes (default 2, queue-worker.ts worker): startWorker() of
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
 * request (see queue-worker.ts) to count upstream answers per job.
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
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { Job } from 'bullmq';
import { Redis } from 'ioredis';
import { burstsOf, PoolKeys } from '@keypool/core';
import type { FakeKeyCounters } from '@keypool/testkit/fake-openai';
// Not the testkit index: it imports vitest's inject(), which only works inside a vitest run.
import { spawnRedisServer, type SpawnedRedis } from '../../packages/testkit/src/redis-server.js';
import { QueueSectionSchema } from '../../packages/server/src/config.js';
import { LlmQueue, type LlmJobData, type LlmJobInput, type LlmJobResult } from '../../packages/worker/src/queue.js';
import type { Dist, FakeChildConfig, WorkerChildConfig, WorkerChildStats } from './queue-worker.js';
import { BenchChild } from './child-ipc.js';

const MODEL = 'gpt-4o-mini';
const TARGETS = { capacityShareMin: 0.9, upstream429ShareMax: 0.005, lostJobsMax: 0, duplicateRunsMax: 0 } as const;
const CHILD = fileURLToPath(new URL('./queue-worker.ts', import.meta.url));
const CLK_TCK = 100; // Linux USER_HZ: /proc/<pid>/stat times are in 1/100 s
const CORES = os.availableParallelism?.() ?? os.cpus().length;

const log = (msg: string) => process.stderr.write(`[bench:queue] ${msg}\n`);

/** Which queue code ran: the git commit, and a hash of the worker package's sources as they are on disk (edits not committed included). */
function codeVersion(): { commit: string | null; workerSrcSha256: string; workerSrcDirty: boolean | null } {
  const root = fileURLToPath(new URL('../../', import.meta.url));
  const git = (...args: string[]) => {
    try {
      return execFileSync('git', args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    } catch {
      return null;
    }
  };
  const h = createHash('sha256');
  for (const f of ['queue.ts', 'llm-worker.ts', 'run.ts', 'index.ts']) {
    try {
      h.update(f).update(readFileSync(new URL(`../../packages/worker/src/${f}`, import.meta.url)));
    } catch {
      h.update(`${f} missing`);
    }
  }
  const status = git('status', '--porcelain', '--', 'packages/worker/src', 'packages/client/src', 'packages/core/src', 'packages/core/lua');
  return { commit: git('rev-parse', '--short', 'HEAD'), workerSrcSha256: h.digest('hex').slice(0, 12), workerSrcDirty: status === null ? null : status !== '' };
}

// ---- arguments -------------------------------------------------------------------------------

const USAGE = `Usage: tsx scripts/bench/queue.ts [options]   (npm run bench:queue -- [options])
  --json                  print one JSON object on stdout (progress and logs go to stderr)
  --jobs N                chat jobs to enqueue and drain (default 5000)
  --keys N                upstream keys (default 4)
  --rpm N                 requests per minute of each key, the fake's and the pool's (default 2500)
  --workers N             keypool worker processes (default 2)
  --concurrency N         queue.concurrency of each worker: jobs run at once (default 32; 16, the
                          config's default, is just enough here on an idle machine: see the header)
  --key-wait-ms N         queue.keyWaitMs: longest in-process wait for a key (default 2000)
  --latency-p50-ms N      fake upstream latency, median (default 100)
  --latency-p99-ms N      fake upstream latency, 99th percentile (default 400; = p50: fixed)
  --max-tokens N          max_tokens of each job (default 8)
  --batch N               jobs per addBulk call (default 1000)
  --upstream-bucket M     aligned (default): the fake's buckets start holding keypool's burst;
                          full: as an idle key, rpm requests (then no 429 can show)
  --enqueue M             paused (default): the jobs are added with the queue paused, then it is
                          resumed, so the drain is the workers' alone; live: added while the
                          workers run (the producer's enqueue overlaps the drain)
  --timeout-s N           stop waiting for the drain after this long (default 4 x the ideal drain
                          time + 60 s); jobs not completed by then are lost
  --seed N                seed of the fake's latency sampler (default 1)
  --log-level L           workers' log level (default warn)
  -h, --help              this text
Redis: REDIS_URL if set (only this run's pool keys are deleted), else a private redis-server.`;

function parseCli() {
  const { values } = parseArgs({
    options: {
      json: { type: 'boolean', default: false },
      jobs: { type: 'string', default: '5000' },
      keys: { type: 'string', default: '4' },
      rpm: { type: 'string', default: '2500' },
      workers: { type: 'string', default: '2' },
      concurrency: { type: 'string', default: '32' },
      'key-wait-ms': { type: 'string', default: '2000' },
      'latency-p50-ms': { type: 'string', default: '100' },
      'latency-p99-ms': { type: 'string', default: '400' },
      'max-tokens': { type: 'string', default: '8' },
      batch: { type: 'string', default: '1000' },
      'upstream-bucket': { type: 'string', default: 'aligned' },
      enqueue: { type: 'string', default: 'paused' },
      'timeout-s': { type: 'string' },
      seed: { type: 'string', default: '1' },
      'log-level': { type: 'string', default: 'warn' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    process.exit(0);
  }
  const num = (name: string, v: string, min: number, max: number, int = true) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min || n > max || (int && !Number.isInteger(n))) throw new Error(`--${name} must be ${int ? 'an integer' : 'a number'} in [${min}, ${max}], got "${v}"`);
    return n;
  };
  const bucket = values['upstream-bucket'];
  if (bucket !== 'aligned' && bucket !== 'full') throw new Error(`--upstream-bucket must be aligned or full, got "${bucket}"`);
  const enqueue = values.enqueue;
  if (enqueue !== 'paused' && enqueue !== 'live') throw new Error(`--enqueue must be paused or live, got "${enqueue}"`);
  const p50 = num('latency-p50-ms', values['latency-p50-ms'], 0, 60_000, false);
  const p99 = num('latency-p99-ms', values['latency-p99-ms'], 0, 600_000, false);
  if (p99 < p50) throw new Error('--latency-p99-ms must be at least --latency-p50-ms');
  return {
    json: values.json,
    jobs: num('jobs', values.jobs, 1, 1_000_000),
    keys: num('keys', values.keys, 1, 100),
    rpm: num('rpm', values.rpm, 1, 1_000_000),
    workers: num('workers', values.workers, 1, 32),
    concurrency: num('concurrency', values.concurrency, 1, 1000),
    keyWaitMs: num('key-wait-ms', values['key-wait-ms'], 0, 600_000),
    latencyP50Ms: p50,
    latencyP99Ms: p99,
    maxTokens: num('max-tokens', values['max-tokens'], 1, 4096),
    batch: num('batch', values.batch, 1, 100_000),
    upstreamBucket: bucket as 'aligned' | 'full',
    enqueue: enqueue as 'paused' | 'live',
    timeoutS: values['timeout-s'] === undefined ? undefined : num('timeout-s', values['timeout-s'], 1, 86_400, false),
    seed: num('seed', values.seed, 0, 2 ** 31),
    logLevel: values['log-level'],
  };
}

type Options = ReturnType<typeof parseCli>;

// ---- small helpers ---------------------------------------------------------------------------

function round(x: number, digits = 3): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

const fmt = (x: number | null | undefined, digits = 0) =>
  x === null || x === undefined || !Number.isFinite(x) ? 'n/a' : x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

/** Label / value lines, labels padded to one width. */
function list(rows: string[][]): string {
  const w = Math.max(...rows.map((r) => r[0]!.length));
  return rows.map((r) => `${r[0]!.padEnd(w)}  ${r[1] ?? ''}`).join('\n');
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')).join('\n');
}

function distOf(xs: number[]): Dist {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => (s.length ? s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]! : NaN);
  return { n: s.length, p50: round(q(0.5), 1), p90: round(q(0.9), 1), p99: round(q(0.99), 1), max: round(s[s.length - 1] ?? NaN, 1), mean: round(s.length ? s.reduce((a, b) => a + b, 0) / s.length : NaN, 1) };
}

const add = (into: Record<string, number>, from: Record<string, number>) => {
  for (const [k, n] of Object.entries(from)) into[k] = (into[k] ?? 0) + n;
  return into;
};

/** CPU seconds (user + system) of a process, from /proc; NaN when unreadable. */
function procCpuSeconds(pid: number | undefined): number {
  if (!pid) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** Machine-wide CPU jiffies: busy (not idle/iowait) and total. */
function machineCpu(): { busy: number; total: number } | null {
  try {
    const v = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = v;
    return { busy: user + nice + system + irq + softirq, total: user + nice + system + idle + iowait + irq + softirq + steal };
  } catch {
    return null;
  }
}

/** Redis's own CPU seconds and command counts (INFO), for any Redis (a REDIS_URL one included). */
async function redisInfo(admin: Redis): Promise<{ cpu: number; commands: number; byCommand: Record<string, number> }> {
  const text = await admin.info('all');
  const field = (name: string) => Number(new RegExp(`^${name}:([0-9.]+)`, 'm').exec(text)?.[1] ?? NaN);
  const byCommand: Record<string, number> = {};
  for (const m of text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) byCommand[m[1]!] = Number(m[2]);
  return { cpu: field('used_cpu_user') + field('used_cpu_sys'), commands: field('total_commands_processed'), byCommand };
}

// ---- child processes -------------------------------------------------------------------------

/** Set when a child died unexpectedly: the run is broken. */
let childDied: Error | undefined;
const interrupt = new AbortController();

/** A child of queue-worker.ts with its IPC channel (see child-ipc.ts). */
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

interface TimelinePoint {
  /** seconds since the workers could start (the resume; live: the enqueue start) */
  t: number;
  completed: number;
  failed: number;
  active: number;
  delayed: number;
  waiting: number;
  upstreamRequests: number;
  upstream429: number;
}

interface Raw {
  enqueueStart: number;
  enqueueEnd: number;
  /** --enqueue paused: when the queue was resumed (the workers could start). */
  resumedAt: number | null;
  ids: string[];
  timedOut: boolean;
  completed: Job<LlmJobData, LlmJobResult>[];
  notCompleted: Record<string, number>;
  failedReasons: Record<string, number>;
  workers: WorkerChildStats[];
  counters: Record<string, FakeKeyCounters>;
  timeline: TimelinePoint[];
  cpu: { wallSeconds: number; byProcess: Record<string, number>; machineBusy: number | null };
  redis: { commands: number; byCommand: Record<string, number> };
}

function sumCounters(c: Record<string, FakeKeyCounters>) {
  let requests = 0;
  let served = 0;
  let r429 = 0;
  const status: Record<string, number> = {};
  for (const k of Object.values(c)) {
    requests += k.requests;
    served += k.served;
    r429 += k.rate429;
    add(status, k.status);
  }
  return { requests, served, r429, status };
}

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

  let redisServer: SpawnedRedis | undefined;
  let redisUrl: string;
  const redisKind: 'env' | 'spawned' = process.env.REDIS_URL ? 'env' : 'spawned';
  let admin: Redis | undefined;
  let producerConn: Redis | undefined;
  let queue: LlmQueue | undefined;
  let fake: Child | undefined;
  const workers: Child[] = [];
  let raw: Raw | undefined;
  try {
    // ---- Redis
    if (process.env.REDIS_URL) {
      redisUrl = process.env.REDIS_URL;
      log(`Redis from REDIS_URL; pool ${poolName} (only its keys are deleted at the end)`);
    } else {
      redisServer = await spawnRedisServer();
      redisUrl = redisServer.url;
      log(`redis-server on ${redisServer.host}:${redisServer.port} (pid ${redisServer.process.pid})`);
    }
    admin = new Redis(redisUrl, { maxRetriesPerRequest: 2 });
    admin.on('error', () => {});
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
        cpu: Object.fromEntries(Object.entries(cpuPids).map(([k, pid]) => [k, procCpuSeconds(pid)])),
        machine: machineCpu(),
        redis: await redisInfo(admin!),
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
    const cpuEnd = Object.fromEntries(Object.entries(cpuPids).map(([k, pid]) => [k, procCpuSeconds(pid)]));
    const machineEnd = machineCpu();
    const redisEnd = await redisInfo(admin);

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
    const byCommand: Record<string, number> = {};
    for (const [k, n] of Object.entries(redisEnd.byCommand)) if (n - (redisStart.byCommand[k] ?? 0) > 0) byCommand[k] = n - (redisStart.byCommand[k] ?? 0);
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
        machineBusy: machineStart && machineEnd && machineEnd.total > machineStart.total ? round((machineEnd.busy - machineStart.busy) / (machineEnd.total - machineStart.total), 3) : null,
      },
      redis: { commands: redisEnd.commands - redisStart.commands, byCommand },
    };
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await Promise.all(workers.map((w) => w.stop().catch(() => undefined)));
    await fake?.stop().catch(() => undefined);
    await queue?.close().catch(() => undefined);
    producerConn?.disconnect();
    if (redisKind === 'env' && admin) {
      try {
        let cursor = '0';
        let n = 0;
        do {
          const [next, found] = await admin.scan(cursor, 'MATCH', new PoolKeys(poolName).pattern, 'COUNT', 1000);
          cursor = next;
          if (found.length) n += await admin.unlink(...found);
        } while (cursor !== '0');
        log(`deleted ${n} Redis keys of pool ${poolName}`);
      } catch (e) {
        log(`could not delete the pool's Redis keys: ${(e as Error).message}`);
      }
    }
    admin?.disconnect();
    await redisServer?.stop().catch(() => undefined);
  }

  if (!raw) throw new Error('no measurement was taken');
  const result = figures(opts, raw, { runId, poolName, redisKind, keys, bursts, aggregateRpm, aggregateBurst, idealDrainSeconds, timeoutS, latency, queueSettings, totalWallSeconds: (Date.now() - t0) / 1000, code });
  if (opts.json) process.stdout.write(JSON.stringify(result) + '\n');
  else process.stdout.write(render(result) + '\n');
}

// ---- figures ---------------------------------------------------------------------------------

interface Setup {
  runId: string;
  poolName: string;
  redisKind: 'env' | 'spawned';
  keys: { name: string; rpm: number }[];
  bursts: number[];
  aggregateRpm: number;
  aggregateBurst: number;
  idealDrainSeconds: number;
  timeoutS: number;
  latency: number | { p50Ms: number; p99Ms: number };
  queueSettings: ReturnType<typeof QueueSectionSchema.parse>;
  totalWallSeconds: number;
  code: ReturnType<typeof codeVersion>;
}

function figures(opts: Options, r: Raw, s: Setup) {
  const n = opts.jobs;
  const jobs = r.completed;
  const firstStart = Math.min(...r.workers.map((w) => w.firstRunAt ?? Infinity), ...jobs.map((j) => j.processedOn ?? Infinity));
  const lastFinish = Math.max(...jobs.map((j) => j.finishedOn ?? -Infinity));
  const T = jobs.length ? (lastFinish - firstStart) / 1000 : NaN;
  const completed = jobs.length;
  const lostJobs = n - completed;

  // capacity over the drain window: keypool's buckets are full (the burst) when the first job starts
  const steady = (s.aggregateRpm * T) / 60;
  const capacityInWindow = s.aggregateBurst + steady;
  const capacityShare = completed / capacityInWindow;
  const steadyShare = (completed - s.aggregateBurst) / steady;
  const baselineRatio = completed / T / (s.aggregateRpm / 60);

  // upstream
  const up = sumCounters(r.counters);
  const upstream429Share = up.requests ? up.r429 / up.requests : 0;
  const okPerJob = new Map<number, number>();
  let traceOk = 0;
  let unmarked = 0;
  for (const w of r.workers) {
    unmarked += w.upstreamUnmarked;
    for (const [m, c] of w.upstreamOkByMarker) {
      okPerJob.set(m, (okPerJob.get(m) ?? 0) + c);
      traceOk += c;
    }
  }
  const jobsServed = okPerJob.size;
  const duplicateRuns = Math.max(0, up.served - jobsServed);
  const jobsServedTwiceOrMore = [...okPerJob.values()].filter((c) => c > 1).length;

  // jobs
  const waited = jobs.map((j) => j.returnvalue?.waitedMs ?? NaN).filter(Number.isFinite);
  const lastRunMs = jobs.map((j) => (j.finishedOn ?? NaN) - (j.processedOn ?? NaN)).filter(Number.isFinite);
  const attempts: Record<string, number> = {};
  const failovers: Record<string, number> = {};
  const servedByKey: Record<string, number> = {};
  for (const j of jobs) {
    const rv = j.returnvalue;
    attempts[String(rv?.attempts ?? '?')] = (attempts[String(rv?.attempts ?? '?')] ?? 0) + 1;
    failovers[String(rv?.failovers ?? '?')] = (failovers[String(rv?.failovers ?? '?')] ?? 0) + 1;
    servedByKey[rv?.keyId ?? '?'] = (servedByKey[rv?.keyId ?? '?'] ?? 0) + 1;
  }
  // completions per second of the drain window
  const perSecond: number[] = [];
  for (const j of jobs) {
    const sec = Math.floor(((j.finishedOn ?? firstStart) - firstStart) / 1000);
    while (perSecond.length <= sec) perSecond.push(0);
    perSecond[sec]!++;
  }

  // workers
  const runs = r.workers.reduce((a, w) => a + w.runs, 0);
  const runsDelayed = r.workers.reduce((a, w) => a + w.runsDelayed, 0);
  const runsFailed = r.workers.reduce((a, w) => a + w.runsFailed, 0);
  const acquireCalls = r.workers.reduce((a, w) => a + w.acquireCalls, 0);
  const acquireScriptRuns = r.workers.reduce((a, w) => a + w.acquireScriptRuns, 0);
  // a job may run in both processes (handed back as a delay in one, run again in the other)
  const runsOfJob = new Map<string, number>();
  for (const w of r.workers) for (const [id, k] of w.runsByJob) runsOfJob.set(id, (runsOfJob.get(id) ?? 0) + k);
  const runsPerJob: Record<string, number> = {};
  for (const k of runsOfJob.values()) runsPerJob[String(k)] = (runsPerJob[String(k)] ?? 0) + 1;
  const multi = [...runsOfJob.values()].filter((k) => k > 1).length;
  const jobsInWorkers = r.workers.map((w) => w.runsByJob.length);
  // was the queue's concurrency or the keys the limit? slots busy over the drain, and key waits
  const slots = opts.workers * opts.concurrency;
  const inDrain = r.timeline.filter((p) => p.completed + p.failed < n && p.t > 0.5);
  const meanActive = inDrain.length ? inDrain.reduce((a, p) => a + p.active, 0) / inDrain.length : NaN;
  const runMsMean = r.workers.reduce((a, w) => a + w.runMsCompleted.mean * w.runMsCompleted.n, 0) / Math.max(1, r.workers.reduce((a, w) => a + w.runMsCompleted.n, 0));
  const ourCores = Object.values(r.cpu.byProcess).reduce((a, x) => a + (Number.isFinite(x) ? x : 0), 0);
  const acquireScriptOutcomes = r.workers.reduce((a, w) => add(a, w.acquireScriptOutcomes), {} as Record<string, number>);
  const acquireOutcomes = r.workers.reduce((a, w) => add(a, w.acquireOutcomes), {} as Record<string, number>);
  const runErrors = r.workers.reduce((a, w) => add(a, w.runErrors), {} as Record<string, number>);

  const targets = {
    capacityShare: { min: TARGETS.capacityShareMin, value: round(capacityShare, 4), met: capacityShare >= TARGETS.capacityShareMin },
    upstream429Share: { max: TARGETS.upstream429ShareMax, value: round(upstream429Share, 5), met: upstream429Share <= TARGETS.upstream429ShareMax },
    lostJobs: { max: TARGETS.lostJobsMax, value: lostJobs, met: lostJobs <= TARGETS.lostJobsMax },
    duplicateRuns: { max: TARGETS.duplicateRunsMax, value: duplicateRuns, met: duplicateRuns <= TARGETS.duplicateRunsMax },
    allMet: false,
  };
  targets.allMet = targets.capacityShare.met && targets.upstream429Share.met && targets.lostJobs.met && targets.duplicateRuns.met;

  return {
    drainSeconds: round(T, 3),
    capacityShare: round(capacityShare, 4),
    upstream429Share: round(upstream429Share, 5),
    lostJobs,
    duplicateRuns,
    targets,
    jobsPerSecond: round(completed / T, 2),
    capacity: {
      window: 'first job start (its first run in a worker) to the last completion (BullMQ finishedOn)',
      aggregateRpm: s.aggregateRpm,
      aggregateJobsPerSecond: round(s.aggregateRpm / 60, 3),
      aggregateBurst: s.aggregateBurst,
      allowedInWindow: round(capacityInWindow, 1),
      allowedInWindowWithoutBurst: round(steady, 1),
      capacityShare: round(capacityShare, 4),
      steadyShare: round(steadyShare, 4),
      baselineRatio: round(baselineRatio, 4),
      baseline: 'achieved jobs/s over the aggregate rpm / 60 (the keys\' sustained rate), burst ignored',
      idealDrainSeconds: round(s.idealDrainSeconds, 3),
      drainOverIdeal: round(T / s.idealDrainSeconds, 4),
    },
    enqueue: {
      mode: opts.enqueue,
      seconds: round((r.enqueueEnd - r.enqueueStart) / 1000, 3),
      batch: opts.batch,
      firstStartAfterResumeMs: r.resumedAt === null ? null : Math.round(firstStart - r.resumedAt),
      firstStartAfterEnqueueStartMs: Math.round(firstStart - r.enqueueStart),
      drainFromEnqueueStartSeconds: round((lastFinish - r.enqueueStart) / 1000, 3),
      drainFromEnqueueEndSeconds: round((lastFinish - r.enqueueEnd) / 1000, 3),
    },
    jobs: {
      enqueued: n,
      completed,
      lost: lostJobs,
      notCompletedByState: r.notCompleted,
      failedReasons: r.failedReasons,
      timedOut: r.timedOut,
      waitedMs: distOf(waited),
      lastRunMs: distOf(lastRunMs),
      attemptsUsed: attempts,
      failovers,
      servedByKey,
      completionsPerSecond: perSecond,
    },
    upstream: {
      requests: up.requests,
      served: up.served,
      rate429: up.r429,
      status: up.status,
      upstream429Share: round(upstream429Share, 5),
      perKey: Object.fromEntries(
        Object.entries(r.counters)
          .filter(([name, c]) => !(name.startsWith('(') && c.requests === 0))
          .map(([name, c]) => [name, { requests: c.requests, served: c.served, rate429: c.rate429, peakRequestsPerMinute: c.peakRequestsPerMinute, maxInFlight: c.maxInFlight }]),
      ),
      bucket: opts.upstreamBucket,
      duplicateRuns,
      jobsWithA200: jobsServed,
      jobsServedTwiceOrMore,
      tracedOk: traceOk,
      tracedUnmarked: unmarked,
      tracedByStatus: r.workers.reduce((a, w) => add(a, w.upstreamByStatus), {} as Record<string, number>),
      tracedLatencyMs: r.workers.map((w) => w.upstreamMs),
    },
    runs: {
      total: runs,
      completed: r.workers.reduce((a, w) => a + w.runsCompleted, 0),
      delayed: runsDelayed,
      failed: runsFailed,
      errors: runErrors,
      perCompletedJob: round(runs / Math.max(1, completed), 4),
      jobsRunMoreThanOnce: multi,
      jobsRunByEachWorker: jobsInWorkers,
      runsPerJob,
      acquireCalls,
      acquireCallsPerJob: round(acquireCalls / Math.max(1, completed), 3),
      acquireOutcomes,
      acquireScriptRuns,
      acquireScriptRunsPerJob: round(acquireScriptRuns / Math.max(1, completed), 3),
      acquireScriptOutcomes,
      slots,
      meanActive: round(meanActive, 1),
      slotsBusyShare: round(meanActive / slots, 3),
      runMsMean: round(runMsMean, 1),
      slotsNeededAtCapacity: round(((s.aggregateRpm / 60) * runMsMean) / 1000, 1),
    },
    workers: r.workers.map((w) => ({
      workerId: w.workerId,
      runs: w.runs,
      runsCompleted: w.runsCompleted,
      runsDelayed: w.runsDelayed,
      runsFailed: w.runsFailed,
      delayMs: w.delayMs,
      runMsCompleted: w.runMsCompleted,
      runMsDelayed: w.runMsDelayed,
      acquireCalls: w.acquireCalls,
      acquireMs: w.acquireMs,
      acquireScriptRuns: w.acquireScriptRuns,
      upstreamMs: w.upstreamMs,
      eventLoopUtilization: w.eventLoopUtilization,
      missingHooks: w.missingHooks,
    })),
    cpu: {
      ...r.cpu,
      coresOfMachine: CORES,
      ourCores: round(ourCores, 2),
      otherCores: r.cpu.machineBusy === null ? null : round(r.cpu.machineBusy * CORES - ourCores, 2),
      cpuMsPerJob: Object.fromEntries(Object.entries(r.cpu.byProcess).map(([k, c]) => [k, round((c * r.cpu.wallSeconds * 1000) / Math.max(1, completed), 3)])),
    },
    redis: { kind: s.redisKind, commands: r.redis.commands, commandsPerJob: round(r.redis.commands / Math.max(1, completed), 2), byCommand: r.redis.byCommand },
    timeline: r.timeline,
    setup: {
      jobs: n,
      model: MODEL,
      request: `one user message "job <n>: say hi", max_tokens ${opts.maxTokens}, idempotency key per job`,
      keys: s.keys.map((k, i) => ({ name: k.name, rpm: k.rpm, burst: s.bursts[i] })),
      upstreamBucket: opts.upstreamBucket,
      upstreamLatencyMs: s.latency,
      workers: opts.workers,
      queue: s.queueSettings,
      batch: opts.batch,
      timeoutS: s.timeoutS,
      pool: s.poolName,
      redis: s.redisKind,
    },
    code: s.code,
    node: process.version,
    cores: CORES,
    loadavg: os.loadavg().map((x) => round(x, 2)),
    timestamp: new Date().toISOString(),
    totalWallSeconds: round(s.totalWallSeconds, 1),
  };
}

type Result = ReturnType<typeof figures>;

function render(r: Result): string {
  const s = r.setup;
  const c = r.capacity;
  const pct = (x: number, d = 1) => `${fmt(x * 100, d)}%`;
  const met = (m: boolean) => (m ? 'met' : 'NOT met');
  const lat = typeof s.upstreamLatencyMs === 'number' ? `${s.upstreamLatencyMs} ms fixed` : `log-normal p50 ${s.upstreamLatencyMs.p50Ms} / p99 ${s.upstreamLatencyMs.p99Ms} ms`;
  const out: string[] = [
    `keypool queue benchmark: node ${r.node}, ${r.cores} cores, redis ${s.redis}, ${r.timestamp}; code ${r.code.commit ?? '?'}${r.code.workerSrcDirty ? ' + uncommitted edits' : ''} (worker sources ${r.code.workerSrcSha256})`,
    `${s.jobs} chat jobs, ${s.keys.length} keys x ${s.keys[0]?.rpm} rpm (keypool burst ${s.keys[0]?.burst} each; upstream bucket ${s.upstreamBucket}), upstream latency ${lat}`,
    `${s.workers} worker processes x concurrency ${s.queue.concurrency}, keyWaitMs ${s.queue.keyWaitMs}; addBulk batches of ${s.batch}`,
    `capacity: ${fmt(c.aggregateRpm)} rpm = ${fmt(c.aggregateJobsPerSecond, 2)} jobs/s + a burst of ${c.aggregateBurst}; ideal drain ${fmt(c.idealDrainSeconds, 2)} s`,
    '',
    table([
      ['figure', 'value', 'target', 'status'],
      ['drainSeconds', fmt(r.drainSeconds, 2), '', ''],
      ['capacityShare (burst + rpm x T)', fmt(r.capacityShare, 4), `>= ${TARGETS.capacityShareMin}`, met(r.targets.capacityShare.met)],
      ['upstream429Share', `${fmt(r.upstream429Share, 5)} (${r.upstream.rate429} / ${r.upstream.requests})`, `<= ${TARGETS.upstream429ShareMax}`, met(r.targets.upstream429Share.met)],
      ['lostJobs', String(r.lostJobs), '== 0', met(r.targets.lostJobs.met)],
      ['duplicateRuns', String(r.duplicateRuns), '== 0', met(r.targets.duplicateRuns.met)],
    ]),
    '',
    `targets: ${r.targets.allMet ? 'all met' : 'NOT all met'}`,
    '',
    list([
      ['jobs completed / enqueued', `${r.jobs.completed} / ${r.jobs.enqueued}`],
      ['jobs/s over the drain window', fmt(r.jobsPerSecond, 2)],
      ['allowed in the window: burst + rpm x T / 60', `${fmt(c.allowedInWindow, 1)} (${c.aggregateBurst} + ${fmt(c.allowedInWindowWithoutBurst, 1)})`],
      ['capacityShare: completed / allowed', fmt(c.capacityShare, 4)],
      ['steady share: (completed - burst) / (rpm x T / 60)', fmt(c.steadyShare, 4)],
      ['baseline ratio: jobs/s / (aggregate rpm / 60)', fmt(c.baselineRatio, 4)],
      ['drain / ideal drain', `${fmt(r.drainSeconds, 2)} / ${fmt(c.idealDrainSeconds, 2)} s = ${fmt(c.drainOverIdeal, 3)}`],
      ['enqueue (addBulk) time', `${fmt(r.enqueue.seconds, 2)} s; first job started ${r.enqueue.firstStartAfterEnqueueStartMs} ms after the enqueue began`],
      ...(r.enqueue.mode === 'paused' ? [['first job start after the resume', `${r.enqueue.firstStartAfterResumeMs} ms`]] : []),
      ['drain from enqueue start / end', `${fmt(r.enqueue.drainFromEnqueueStartSeconds, 2)} / ${fmt(r.enqueue.drainFromEnqueueEndSeconds, 2)} s`],
      ['job wait (result.waitedMs) p50 / p90 / p99 / max', `${fmt(r.jobs.waitedMs.p50)} / ${fmt(r.jobs.waitedMs.p90)} / ${fmt(r.jobs.waitedMs.p99)} / ${fmt(r.jobs.waitedMs.max)} ms`],
      ['last run of a job (finishedOn - processedOn) p50 / p99', `${fmt(r.jobs.lastRunMs.p50)} / ${fmt(r.jobs.lastRunMs.p99)} ms`],
      ['BullMQ attempts used (result.attempts)', Object.entries(r.jobs.attemptsUsed).map(([a, k]) => `${a}: ${k}`).join(', ') || 'none'],
      ['failovers (keys tried before)', Object.entries(r.jobs.failovers).map(([a, k]) => `${a}: ${k}`).join(', ') || 'none'],
      ['not completed, by state', Object.entries(r.jobs.notCompletedByState).map(([a, k]) => `${a}: ${k}`).join(', ') || 'none'],
      ['upstream requests / served / 429', `${r.upstream.requests} / ${r.upstream.served} / ${r.upstream.rate429}`],
      ['jobs with a 200 / served twice or more (trace)', `${r.upstream.jobsWithA200} / ${r.upstream.jobsServedTwiceOrMore}`],
      ['runs (BullMQ activations) per completed job', `${fmt(r.runs.perCompletedJob, 4)} (${r.runs.total} runs: ${r.runs.completed} completed, ${r.runs.delayed} handed back as delays, ${r.runs.failed} failed)`],
      ['runs per job', Object.entries(r.runs.runsPerJob).map(([a, k]) => `${a}: ${k}`).join(', ')],
      ['pool.acquire calls per job', `${fmt(r.runs.acquireCallsPerJob, 3)} (${Object.entries(r.runs.acquireOutcomes).map(([a, k]) => `${a} ${k}`).join(', ')})`],
      ['acquire script runs in Redis per job', `${fmt(r.runs.acquireScriptRunsPerJob, 2)} (${Object.entries(r.runs.acquireScriptOutcomes).map(([a, k]) => `${a} ${k}`).join(', ')})`],
      ['Redis commands per job', `${fmt(r.redis.commandsPerJob, 1)} (${Object.entries(r.redis.byCommand).sort((a, b) => b[1] - a[1]).slice(0, 6).map(([a, k]) => `${a} ${k}`).join(', ')})`],
      ['slots busy: mean active jobs / slots', `${fmt(r.runs.meanActive, 1)} / ${r.runs.slots} = ${fmt(r.runs.slotsBusyShare, 3)}`],
      ['slots needed at capacity: rate x mean run', `${fmt(r.runs.slotsNeededAtCapacity, 1)} (${fmt(c.aggregateJobsPerSecond, 1)}/s x ${fmt(r.runs.runMsMean, 0)} ms)`],
      ['machine busy over the drain', r.cpu.machineBusy === null ? 'n/a' : `${pct(r.cpu.machineBusy)} of ${r.cpu.coresOfMachine} cores: this run ${fmt(r.cpu.ourCores, 2)} cores, other processes ${fmt(r.cpu.otherCores, 2)}`],
      ['cores by process (CPU ms per job)', Object.entries(r.cpu.byProcess).map(([k, v]) => `${k} ${fmt(v, 2)} (${fmt(r.cpu.cpuMsPerJob[k], 2)})`).join(', ')],
    ]),
    '',
    table([
      ['worker', 'runs', 'completed', 'delayed', 'failed', 'delay ms p50/max', 'run ms p50/p99 (ok)', 'run ms p50 (delayed)', 'acquire ms p50/p99', 'acquire scripts', 'upstream ms p50/p99', 'ELU'],
      ...r.workers.map((w) => [
        w.workerId,
        String(w.runs),
        String(w.runsCompleted),
        String(w.runsDelayed),
        String(w.runsFailed),
        `${fmt(w.delayMs.p50)}/${fmt(w.delayMs.max)}`,
        `${fmt(w.runMsCompleted.p50)}/${fmt(w.runMsCompleted.p99)}`,
        fmt(w.runMsDelayed.p50),
        `${fmt(w.acquireMs.p50, 1)}/${fmt(w.acquireMs.p99, 1)}`,
        String(w.acquireScriptRuns),
        `${fmt(w.upstreamMs.p50, 1)}/${fmt(w.upstreamMs.p99, 1)}`,
        pct(w.eventLoopUtilization, 0),
      ]),
    ]),
    '',
    table([
      ['upstream key', 'requests', 'served', '429', 'peak req / 60 s', 'max in flight'],
      ...Object.entries(r.upstream.perKey).map(([name, k]) => [name, String(k.requests), String(k.served), String(k.rate429), String(k.peakRequestsPerMinute), String(k.maxInFlight)]),
    ]),
    `jobs by serving key id: ${Object.entries(r.jobs.servedByKey).map(([k, v]) => `${k.slice(0, 10)} ${v}`).join(', ')}`,
    '',
    `completions per second of the drain window (capacity ${fmt(c.aggregateJobsPerSecond, 1)}/s): ${r.jobs.completionsPerSecond.join(' ')}`,
  ];
  if (Object.keys(r.jobs.failedReasons).length) out.push('', 'failed jobs: ' + Object.entries(r.jobs.failedReasons).map(([e, k]) => `${k} x ${e}`).join('; '));
  const missing = [...new Set(r.workers.flatMap((w) => w.missingHooks))];
  if (missing.length) out.push('', `WARNING: instrumentation not found in the workers (its figures are zero or missing): ${missing.join(', ')}`);
  if (Object.keys(r.runs.errors).length) out.push('run errors: ' + Object.entries(r.runs.errors).map(([e, k]) => `${k} x ${e}`).join('; '));
  return out.join('\n');
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
