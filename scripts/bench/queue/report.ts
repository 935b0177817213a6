/**
 * The queue benchmark's figures, from what a run collected (the jobs as BullMQ holds them, the
 * workers' instrumentation, the fake's counters, CPU and Redis deltas), and its readable report.
 * scripts/bench/queue.ts says what each figure means.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Job } from 'bullmq';
import type { FakeKeyCounters } from '@keypool/testkit/fake-openai';
import type { QueueSection } from '@keypool/config';
import type { LlmJobData, LlmJobResult } from '@keypool/worker';
import { CORES, fmt, list, table } from '../lib/report.js';
import { addCounts as add, round, summary as distOf } from '../lib/stats.js';
import type { Options } from './options.js';
import type { WorkerChildStats } from './worker.js';

export const MODEL = 'gpt-4o-mini';
const TARGETS = { capacityShareMin: 0.9, upstream429ShareMax: 0.005, lostJobsMax: 0, duplicateRunsMax: 0 } as const;

/** Which queue code ran: the git commit, and a hash of the worker package's sources as they are on disk (edits not committed included). */
export function codeVersion(): { commit: string | null; workerSrcSha256: string; workerSrcDirty: boolean | null } {
  const root = fileURLToPath(new URL('../../../', import.meta.url));
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
      h.update(f).update(readFileSync(new URL(`../../../packages/worker/src/${f}`, import.meta.url)));
    } catch {
      h.update(`${f} missing`);
    }
  }
  const status = git('status', '--porcelain', '--', 'packages/worker/src', 'packages/client/src', 'packages/core/src', 'packages/core/lua');
  return { commit: git('rev-parse', '--short', 'HEAD'), workerSrcSha256: h.digest('hex').slice(0, 12), workerSrcDirty: status === null ? null : status !== '' };
}

export interface TimelinePoint {
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

export interface Raw {
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

export function sumCounters(c: Record<string, FakeKeyCounters>) {
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
export interface Setup {
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
  queueSettings: QueueSection;
  totalWallSeconds: number;
  code: ReturnType<typeof codeVersion>;
}

export function figures(opts: Options, r: Raw, s: Setup) {
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

export function render(r: Result): string {
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
