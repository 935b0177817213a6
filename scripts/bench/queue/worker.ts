/**
 * The child processes of scripts/bench/queue.ts, one role each (started by it with
 * `node --import tsx scripts/bench/queue/worker.ts <role> <base64 JSON config>` and an IPC channel;
 * not meant to be run by hand):
 *
 *   worker   ONE `keypool worker` process: startWorker() of packages/worker (pool + scheduler + the
 *            LLM queue consumer) with a GatewayConfig built here (the given keys with their rpm,
 *            pointing at the fake; the queue section as given; scheduler intervals long; the given
 *            Redis URL, so startWorker makes its own connections as in production). Instrumented
 *            from the outside only (nothing in packages/ is changed), to explain the figures:
 *              - globalThis.fetch (what the OpenAI SDK calls) is wrapped: every upstream request is
 *                counted by the job marker in its body ("job <n>:") and its HTTP status;
 *              - the LlmWorker's job handler is wrapped: every BullMQ run of a job (an activation),
 *                how it ended (completed / handed back as a delay / error), per job;
 *              - bullmq's Job.prototype.moveToDelayed: the delays asked for (ms);
 *              - the KeyPool's acquire (one call per lease wanted: its wait and outcome) and its
 *                private tryAcquire (one acquire script run in Redis each: polls included).
 *   fake     the fake OpenAI upstream (packages/testkit fake-openai) with the given keys and rpm.
 *
 * Requests from the parent, each `{ id, type, ... }`, answered `{ id, ok, value | error }`:
 *   stats      (worker) everything counted above since the start;
 *   counters   (fake) the fake's counters per key;
 *   align      (fake) { levels: { name: n } }: set each key's request bucket to hold n requests now
 *              (its rpm unchanged): setKey rpm = n, then rpm = the real rpm again (a changed limit
 *              keeps what is left, at most the new capacity);
 *   reset-counters (fake) zero the counters (keys, buckets and faults unchanged);
 *   stop       close everything and exit 0.
 * A child whose IPC channel closes (the parent died) shuts down by itself; SIGINT / SIGTERM too.
 */
import { performance } from 'node:perf_hooks';
import { Job } from 'bullmq';
import { pino } from 'pino';
import type { GatewayConfig } from '@keypool/config';
import { startFakeOpenAI, type LatencySpec } from '@keypool/testkit/fake-openai';
import { startWorker } from '@keypool/worker';
import { runChildRole, send, serveRequests, type Handler } from '../lib/child-ipc.js';
import { benchGatewayConfig, type BenchKey } from '../lib/gateway-config.js';
import { summary as distOf, type Summary as Dist } from '../lib/stats.js';

/** The parent's requests; a worker's shutdown (BullMQ close) may take a little longer. */
const serveQueueRequests = (handlers: Record<string, Handler>, shutdown: () => Promise<void>) => serveRequests(handlers, shutdown, { label: 'queue bench child', forceExitMs: 6000 });

export interface FakeChildConfig {
  keys: { secret: string; name: string; rpm: number }[];
  model: string;
  latency: LatencySpec;
  seed: number;
}

export interface WorkerChildConfig {
  redisUrl: string;
  fakeUrl: string;
  pool: string;
  model: string;
  workerId: string;
  keys: BenchKey[];
  /** The pool's `limits` section (windowMarginMs, learn), default unless given. */
  limits?: { windowMarginMs?: number; learn?: boolean };
  /** The pool's `priority` section, default unless given. */
  priority?: Record<string, unknown>;
  /** The `queue` section (QueueSectionSchema input). */
  queue: Record<string, unknown>;
  /** The `scheduler` section (SchedulerSectionSchema input). */
  scheduler: Record<string, unknown>;
  logLevel: string;
}

export interface WorkerChildStats {
  workerId: string;
  pid: number;
  /** Epoch ms of the first run of any job in this process (undefined: none ran). */
  firstRunAt: number | null;
  lastRunEndAt: number | null;
  /** BullMQ runs (activations) of jobs and how they ended. */
  runs: number;
  runsCompleted: number;
  /** Runs that found no key within keyWaitMs and were handed back to BullMQ as a delay. */
  runsDelayed: number;
  runsFailed: number;
  runErrors: Record<string, number>;
  /** Per job id run in this process: [id, runs, runs handed back as delays]. */
  runsByJob: [string, number, number][];
  /** Delays asked of BullMQ (moveToDelayed), ms. */
  delayMs: Dist;
  /** Duration of one run, ms, by outcome. */
  runMsCompleted: Dist;
  runMsDelayed: Dist;
  /** pool.acquire: calls (a lease wanted), their duration (waiting for a key included) and outcome. */
  acquireCalls: number;
  acquireOutcomes: Record<string, number>;
  acquireMs: Dist;
  /** The acquire script runs in Redis (pool.tryAcquire): one per poll while waiting, and outcomes. */
  acquireScriptRuns: number;
  acquireScriptOutcomes: Record<string, number>;
  /** Upstream requests seen by fetch: by status, and 200s per job marker ([marker, count] for every marker seen). */
  upstreamByStatus: Record<string, number>;
  upstreamOkByMarker: [number, number][];
  upstreamUnmarked: number;
  upstreamMs: Dist;
  /** Instrumentation points not found (private methods renamed): their figures are zero. */
  missingHooks: string[];
  /** CPU of this process since it started (user + system), ms, and event-loop utilization since ready. */
  cpuMs: number;
  eventLoopUtilization: number;
}


const bump = (m: Record<string, number>, k: string, n = 1) => (m[k] = (m[k] ?? 0) + n);

// ---- fake ------------------------------------------------------------------------------------

async function fakeRole(cfg: FakeChildConfig): Promise<void> {
  const fake = await startFakeOpenAI({
    host: '127.0.0.1',
    port: 0,
    keys: cfg.keys.map((k) => ({ key: k.secret, name: k.name, rpm: k.rpm, models: [cfg.model] })),
    models: [cfg.model],
    latency: cfg.latency,
    seed: cfg.seed,
  });
  const rpmOf = new Map(cfg.keys.map((k) => [k.name, k.rpm]));
  serveQueueRequests(
    {
      counters: async () => fake.counters(),
      'reset-counters': async () => {
        fake.reset({ countersOnly: true });
        return null;
      },
      align: async (req) => {
        const levels = req.levels as Record<string, number>;
        for (const [name, level] of Object.entries(levels)) {
          const rpm = rpmOf.get(name);
          if (rpm === undefined) throw new Error(`no key ${name}`);
          // the bucket keeps min(level, new capacity): down to `level`, then the real rate again
          fake.setKey(name, { rpm: Math.max(1, Math.floor(level)) });
          fake.setKey(name, { rpm });
        }
        return null;
      },
    },
    () => fake.stop(),
  );
  send({ type: 'ready', url: fake.url, pid: process.pid });
}

// ---- worker ----------------------------------------------------------------------------------

const MARKER = /job (\d+):/;

async function workerRole(cfg: WorkerChildConfig): Promise<void> {
  const logger = pino({ level: cfg.logLevel, base: { worker: cfg.workerId } }, pino.destination(2));

  // -- upstream requests, as the OpenAI SDK sends them (it takes globalThis.fetch at construction,
  //    and the pooled client constructs its SDK clients on the first lease of each key)
  const upstreamByStatus: Record<string, number> = {};
  const okByMarker = new Map<number, number>();
  let unmarked = 0;
  const upstreamMs: number[] = [];
  const realFetch = globalThis.fetch;
  globalThis.fetch = async function benchFetch(input: Parameters<typeof fetch>[0], init?: Parameters<typeof fetch>[1]): Promise<Response> {
    const body = typeof init?.body === 'string' ? init.body : undefined;
    const m = body ? MARKER.exec(body) : null;
    if (!m) unmarked++;
    const t0 = performance.now();
    try {
      const res = await realFetch(input, init);
      upstreamMs.push(performance.now() - t0);
      bump(upstreamByStatus, String(res.status));
      if (res.status === 200 && m) okByMarker.set(Number(m[1]), (okByMarker.get(Number(m[1])) ?? 0) + 1);
      return res;
    } catch (e) {
      bump(upstreamByStatus, `error ${(e as Error)?.name ?? 'Error'}`);
      throw e;
    }
  } as typeof fetch;

  // -- delays asked of BullMQ
  const delayMs: number[] = [];
  const proto = Job.prototype as unknown as { moveToDelayed: (timestamp: number, token?: string) => Promise<void> };
  const realMoveToDelayed = proto.moveToDelayed;
  proto.moveToDelayed = function (this: unknown, timestamp: number, token?: string) {
    delayMs.push(timestamp - Date.now());
    return realMoveToDelayed.call(this, timestamp, token);
  };

  const config = benchGatewayConfig({ ...cfg, logLevel: cfg.logLevel as GatewayConfig['logLevel'] });
  const running = await startWorker(config, { logger, workerId: cfg.workerId });
  if (!running.queue) throw new Error('the queue consumer did not start (queue.enabled false?)');

  // -- the pool: acquire (a lease wanted) and tryAcquire (one acquire script run)
  let acquireCalls = 0;
  const acquireOutcomes: Record<string, number> = {};
  const acquireMs: number[] = [];
  let acquireScriptRuns = 0;
  const acquireScriptOutcomes: Record<string, number> = {};
  const pool = running.pool as unknown as Record<string, (...args: unknown[]) => Promise<{ ok: boolean; reason?: string }>>;
  // private methods (tryAcquire, LlmWorker.run) may be renamed some day: their figures are then
  // missing (listed in missingHooks), the run itself goes on
  const missingHooks: string[] = [];
  const hook = (obj: object, name: string) => {
    if (typeof (obj as Record<string, unknown>)[name] === 'function') return true;
    missingHooks.push(`${obj.constructor.name}.${name}`);
    logger.warn(`bench instrumentation: ${obj.constructor.name}.${name} not found, its figures are missing`);
    return false;
  };
  const realAcquire = pool.acquire!.bind(running.pool);
  pool.acquire = async (...args: unknown[]) => {
    acquireCalls++;
    const t0 = performance.now();
    try {
      const r = await realAcquire(...args);
      acquireMs.push(performance.now() - t0);
      bump(acquireOutcomes, r.ok ? 'ok' : `exhausted ${r.reason}`);
      return r;
    } catch (e) {
      acquireMs.push(performance.now() - t0);
      bump(acquireOutcomes, `threw ${(e as Error)?.name ?? 'Error'}`);
      throw e;
    }
  };
  if (hook(running.pool, 'tryAcquire')) {
    const realTry = pool.tryAcquire!.bind(running.pool);
    pool.tryAcquire = async (...args: unknown[]) => {
      acquireScriptRuns++;
      const r = await realTry(...args);
      bump(acquireScriptOutcomes, r.ok ? 'ok' : String(r.reason));
      return r;
    };
  }

  // -- runs of jobs (BullMQ activations) and how they end
  let firstRunAt: number | null = null;
  let lastRunEndAt: number | null = null;
  let runs = 0;
  let runsCompleted = 0;
  let runsDelayed = 0;
  let runsFailed = 0;
  const runErrors: Record<string, number> = {};
  const perJob = new Map<string, [number, number]>();
  const runMsCompleted: number[] = [];
  const runMsDelayed: number[] = [];
  // every argument BullMQ's processor hands over is passed on as it came (job, token, abort signal...)
  const lw = running.queue as unknown as { run: (job: Job, ...rest: unknown[]) => Promise<unknown> };
  if (hook(running.queue, 'run')) {
    const realRun = lw.run.bind(running.queue);
    lw.run = async (job: Job, ...rest: unknown[]) => {
      const t0 = Date.now();
      firstRunAt ??= t0;
      runs++;
      const rec = perJob.get(job.id!) ?? [0, 0];
      rec[0]++;
      perJob.set(job.id!, rec);
      try {
        const r = await realRun(job, ...rest);
        runsCompleted++;
        runMsCompleted.push(Date.now() - t0);
        return r;
      } catch (e) {
        if ((e as Error)?.name === 'DelayedError') {
          runsDelayed++;
          rec[1]++;
          runMsDelayed.push(Date.now() - t0);
        } else {
          runsFailed++;
          bump(runErrors, `${(e as Error)?.name ?? 'Error'}: ${String((e as Error)?.message ?? e).slice(0, 100)}`);
        }
        throw e;
      } finally {
        lastRunEndAt = Date.now();
      }
    };
  }

  const cpu0 = process.cpuUsage();
  const elu0 = performance.eventLoopUtilization();
  serveQueueRequests(
    {
      stats: async (): Promise<WorkerChildStats> => {
        const cpu = process.cpuUsage(cpu0);
        return {
          workerId: cfg.workerId,
          pid: process.pid,
          firstRunAt,
          lastRunEndAt,
          runs,
          runsCompleted,
          runsDelayed,
          runsFailed,
          runErrors,
          runsByJob: [...perJob].map(([id, [n, d]]) => [id, n, d] as [string, number, number]),
          delayMs: distOf(delayMs),
          runMsCompleted: distOf(runMsCompleted),
          runMsDelayed: distOf(runMsDelayed),
          acquireCalls,
          acquireOutcomes,
          acquireMs: distOf(acquireMs),
          acquireScriptRuns,
          acquireScriptOutcomes,
          upstreamByStatus,
          upstreamOkByMarker: [...okByMarker],
          upstreamUnmarked: unmarked,
          upstreamMs: distOf(upstreamMs),
          missingHooks,
          cpuMs: Math.round((cpu.user + cpu.system) / 1000),
          eventLoopUtilization: Math.round(performance.eventLoopUtilization(elu0).utilization * 1000) / 1000,
        };
      },
    },
    async () => {
      await running.close();
    },
  );
  send({ type: 'ready', pid: process.pid });
}

// ---- entry -----------------------------------------------------------------------------------

runChildRole('queue bench', 'scripts/bench/queue.ts', { fake: fakeRole, worker: workerRole });
