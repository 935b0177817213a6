import { hostname } from 'node:os';
import { Queue, Worker, type Job } from 'bullmq';
import type { Cluster, Redis } from 'ioredis';
import { PoolKeys, systemClock, type Clock, type KeyPool } from '@keypool/core';
import type { SecretSync } from '@keypool/secrets';
import type { Logger } from 'pino';
import { probeKeys } from './probe.js';

/** The periodic jobs. Each runs once per interval across the whole fleet of workers. */
export type JobName = 'secret-refresh' | 'health-probe' | 'budget-period' | 'housekeeping';

export interface SchedulerSettings {
  /** Secret refresh interval (ms). */
  secretRefreshMs: number;
  /** Health probe interval (ms). */
  probeMs: number;
  /** Probe call timeout (ms). */
  probeTimeoutMs: number;
  /** When budget periods start: a cron pattern in UTC (default: every day at 00:00). */
  budgetPattern: string;
  /** Housekeeping interval (ms). */
  housekeepingMs: number;
  /** How long the secret refresh waits for every process to hold a new set before retiring removed keys (ms). */
  rotationGraceMs: number;
  /** A job whose worker stopped renewing its lock this long ago (killed) runs again elsewhere (ms). */
  lockMs: number;
  /** How often workers look for such jobs (ms). */
  stalledCheckMs: number;
  /** Run events kept in the run log stream. */
  logLength: number;
  /** How often a worker checks that the job schedulers are still in Redis (ms). Default 30000. */
  ensureMs?: number;
}

export const DEFAULT_SCHEDULER: SchedulerSettings = {
  secretRefreshMs: 60_000,
  probeMs: 15_000,
  probeTimeoutMs: 5_000,
  budgetPattern: '0 0 * * *',
  housekeepingMs: 60_000,
  rotationGraceMs: 30_000,
  lockMs: 30_000,
  stalledCheckMs: 15_000,
  logLength: 1000,
};

export interface SchedulerOptions {
  pool: KeyPool;
  /**
   * A connection for BullMQ (it needs `maxRetriesPerRequest: null`; a Worker duplicates it for its
   * blocking reads). Also used for the run records.
   */
  connection: Redis | Cluster;
  /** The process's secret sync: the secret refresh job runs only when there is one. */
  sync?: SecretSync;
  settings?: Partial<SchedulerSettings>;
  logger?: Logger;
  /** Name of this worker in run records. Default host:pid. */
  workerId?: string;
  /** Times each run (durationMs in the run records). Default systemClock. */
  clock?: Clock;
}

/** Delete a lock only while it still holds the caller's token. */
const RELEASE_LOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/**
 * keypool's scheduler on BullMQ job schedulers: every worker process upserts the same schedulers
 * (idempotent) and consumes the same queue, so each iteration of each job is one BullMQ job, taken
 * by exactly one worker; a worker killed mid-job loses its lock and the job is run again by
 * another (stalled-job recovery). Every job is idempotent, so such a rerun is harmless. Each run is
 * recorded in Redis (last run per job, counts, a capped event stream) for /status and /metrics.
 */
export class Scheduler {
  readonly settings: SchedulerSettings;
  readonly workerId: string;
  private readonly pool: KeyPool;
  private readonly connection: Redis | Cluster;
  private readonly sync: SecretSync | undefined;
  private readonly log: Logger | undefined;
  private readonly keys: PoolKeys;
  private queue: Queue | undefined;
  private worker: Worker | undefined;
  private ensureTimer: NodeJS.Timeout | undefined;
  private readonly prefix: string;
  private readonly clock: Clock;

  constructor(opts: SchedulerOptions) {
    this.clock = opts.clock ?? systemClock;
    this.pool = opts.pool;
    this.connection = opts.connection;
    this.sync = opts.sync;
    this.settings = { ...DEFAULT_SCHEDULER, ...opts.settings };
    this.log = opts.logger?.child({ component: 'keypool-scheduler', pool: opts.pool.name });
    this.workerId = opts.workerId ?? `${hostname()}:${process.pid}`;
    this.keys = new PoolKeys(opts.pool.name);
    // the pool's hash tag: BullMQ's keys land in the pool's Cluster slot, beside its own keys
    this.prefix = this.keys.bull;
  }

  /** The schedules this worker upserts. */
  schedules(): { name: JobName; every?: number; pattern?: string }[] {
    const s = this.settings;
    const out: { name: JobName; every?: number; pattern?: string }[] = [
      { name: 'health-probe', every: s.probeMs },
      { name: 'budget-period', pattern: s.budgetPattern },
      { name: 'housekeeping', every: s.housekeepingMs },
    ];
    if (this.sync) out.unshift({ name: 'secret-refresh', every: s.secretRefreshMs });
    return out;
  }

  async start(): Promise<void> {
    const s = this.settings;
    this.queue = new Queue('scheduler', { connection: this.connection, prefix: this.prefix });
    // the connection's own listener logs its errors; without one here BullMQ prints them raw to stderr
    this.queue.on('error', () => undefined);
    await this.upsertChanged();
    // a Redis that comes back empty (restarted without persistence) has lost the schedulers: every
    // worker puts back any that is missing, at once after a reconnect and every ensureMs anyway
    this.ensureTimer = setInterval(() => void this.ensure(), s.ensureMs ?? 30_000);
    this.ensureTimer.unref();
    this.connection.on('ready', this.onReady);
    this.worker = new Worker('scheduler', (job) => this.run(job), {
      connection: this.connection,
      prefix: this.prefix,
      concurrency: 4,
      lockDuration: s.lockMs,
      stalledInterval: s.stalledCheckMs,
      // a job whose worker died is run again once; a second death marks it failed (visible)
      maxStalledCount: 1,
    });
    this.worker.on('error', (e) => this.log?.warn({ err: e.message }, 'scheduler worker error'));
    this.worker.on('stalled', (jobId) => this.log?.warn({ jobId }, 'a scheduled job lost its worker: running it again'));
    await this.worker.waitUntilReady();
    this.log?.info({ worker: this.workerId, schedules: this.schedules() }, 'scheduler started');
  }

  private readonly onReady = () => void this.ensure();

  /** Upsert the schedulers Redis no longer has. Never throws (Redis may be away again). */
  async ensure(): Promise<string[]> {
    const restored: string[] = [];
    try {
      for (const j of this.schedules()) {
        if (await this.queue!.getJobScheduler(j.name)) continue;
        await this.upsert(j);
        await this.connection.hset(this.keys.sched, j.name, JSON.stringify({ ...(await this.record(j.name)), ...this.scheduleOf(j.name) }));
        restored.push(j.name);
      }
      if (restored.length > 0) this.log?.warn({ restored }, 'job schedulers were missing from Redis (restarted empty?): put back');
    } catch (e) {
      this.log?.warn({ err: (e as Error).message }, 'could not check the job schedulers (Redis?)');
    }
    return restored;
  }

  /**
   * Upsert the schedulers that are missing or whose schedule differs from this worker's, one worker
   * of the fleet at a time. An upsert of an unchanged scheduler is not harmless: BullMQ (6.7)
   * removes the next iteration and adds the one computed from the caller's clock, and when that
   * iteration was taken by a worker meanwhile (a per-second pattern, a busy machine), it is added
   * again and runs twice. So a worker that starts beside running ones changes nothing.
   */
  private async upsertChanged(): Promise<void> {
    const lock = `${this.keys.sched}:upsert`;
    const token = `${this.workerId}:${Math.random()}`;
    let held = false;
    for (let i = 0; i < 100 && !held; i++) {
      held = (await this.connection.set(lock, token, 'PX', 5000, 'NX')) === 'OK';
      if (!held) await new Promise((r) => setTimeout(r, 50));
    }
    // another worker held it all along (5 s): it is doing this; ensure() puts back anything missing
    if (!held) {
      this.log?.warn({ worker: this.workerId }, 'another worker held the scheduler upsert lock for 5 s: left the schedulers to it');
      return;
    }
    try {
      for (const j of this.schedules()) {
        const have = await this.queue!.getJobScheduler(j.name);
        const same = have && (j.every ? Number(have.every) === j.every : have.pattern === j.pattern);
        if (!same) await this.upsert(j);
        await this.connection.hset(this.keys.sched, j.name, JSON.stringify({ ...(await this.record(j.name)), ...this.scheduleOf(j.name) }));
      }
    } finally {
      // only the holder's own lock (a lock that expired meanwhile may be another worker's), in one
      // step: a GET then DEL could delete a lock another worker took between the two
      await this.connection.eval(RELEASE_LOCK, 1, lock, token);
    }
  }

  private scheduleOf(name: JobName): { every: number } | { pattern: string } {
    const j = this.schedules().find((x) => x.name === name)!;
    return j.every ? { every: j.every } : { pattern: j.pattern! };
  }

  /**
   * Upsert one job scheduler. Workers starting together upsert the same scheduler at the same
   * moment, and BullMQ refuses the second one's first iteration ("job ID already exists"): the
   * scheduler and its next job are there, made by the other worker, so that is success.
   */
  private async upsert(j: { name: JobName; every?: number; pattern?: string }): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.queue!.upsertJobScheduler(j.name, j.every ? { every: j.every } : { pattern: j.pattern!, tz: 'UTC' }, {
          name: j.name,
          opts: { attempts: 1, removeOnComplete: 50, removeOnFail: 200 },
        });
        return;
      } catch (e) {
        if (!/job ID already exists/i.test((e as Error).message)) throw e;
        if ((await this.queue!.getJobScheduler(j.name)) && attempt > 0) return;
        if (attempt >= 5) throw e;
        await new Promise((r) => setTimeout(r, 50 + Math.random() * 100));
      }
    }
  }

  private async record(name: string): Promise<Record<string, unknown>> {
    const raw = await this.connection.hget(this.keys.sched, name);
    return raw ? (JSON.parse(raw) as Record<string, unknown>) : {};
  }

  private async event(fields: Record<string, string | number>): Promise<void> {
    const flat = Object.entries(fields).flatMap(([k, v]) => [k, String(v)]);
    await this.connection.xadd(this.keys.schedLog, 'MAXLEN', '~', String(this.settings.logLength), '*', ...flat);
  }

  /** One run of one job, recorded. Exported through the queue; tests call jobs through BullMQ. */
  private async run(job: Job): Promise<unknown> {
    const name = job.name as JobName;
    const started = this.clock.now();
    await this.event({ event: 'started', job: name, id: job.id ?? '', worker: this.workerId });
    let summary: Record<string, unknown> | undefined;
    let error: Error | undefined;
    try {
      summary = await this.execute(name);
    } catch (e) {
      error = e as Error;
    }
    const durationMs = this.clock.now() - started;
    // BullMQ scheduled the next iteration when this one was taken
    const next = (await this.queue?.getJobScheduler(name).catch(() => undefined))?.next;
    const rec = {
      ...(await this.record(name)),
      ...this.scheduleOf(name),
      ...(typeof next === 'number' ? { nextRunAt: new Date(next).toISOString() } : {}),
      lastRun: {
        startedAt: new Date(started).toISOString(),
        durationMs,
        ok: !error,
        worker: this.workerId,
        jobId: job.id ?? '',
        ...(error ? { error: error.message } : {}),
        ...(summary ? { summary } : {}),
      },
    };
    await this.connection.hset(this.keys.sched, name, JSON.stringify(rec));
    await this.connection.hincrby(this.keys.schedRuns, `${name}:${error ? 'failed' : 'completed'}`, 1);
    await this.event({ event: error ? 'failed' : 'completed', job: name, id: job.id ?? '', worker: this.workerId, ms: durationMs });
    if (error) {
      this.log?.error({ job: name, err: error.message, durationMs }, `scheduled job ${name} failed`);
      throw error;
    }
    this.log?.info({ job: name, durationMs, ...summary }, `scheduled job ${name} done`);
    return summary;
  }

  private async execute(name: JobName): Promise<Record<string, unknown>> {
    switch (name) {
      case 'secret-refresh': {
        // a worker started without the secrets section took this job: the fleet's configs differ
        if (!this.sync) throw new Error('this worker has no secrets section in its config: run every worker with the same config');
        const r = await this.sync.reconcile({ graceMs: this.settings.rotationGraceMs });
        if (r.failedSources.length > 0) throw new Error(`a secret source failed, nothing published or retired (the last good set stays in use): ${r.failedSources.join('; ')}`);
        return { version: r.version, keys: r.keys, retired: r.retired.length, stillHeld: r.held.length };
      }
      case 'health-probe': {
        const r = await probeKeys(this.pool, { timeoutMs: this.settings.probeTimeoutMs, ...(this.log ? { logger: this.log } : {}) });
        const healed = r.results.filter((x) => x.transition === 'closed' || x.transition === 'unrevoked').length;
        return { probed: r.probed, healed };
      }
      case 'budget-period': {
        const r = await this.pool.housekeep();
        return { periodsStarted: r.periodsStarted.length };
      }
      case 'housekeeping': {
        const r = await this.pool.housekeep();
        return { leasesReaped: r.leasesReaped, periodsStarted: r.periodsStarted.length, healthWindowsCleared: r.healthWindowsCleared };
      }
    }
  }

  /** Stop taking jobs (a job in progress finishes first), close BullMQ's connections. */
  async close(): Promise<void> {
    clearInterval(this.ensureTimer);
    this.connection.off('ready', this.onReady);
    await this.worker?.close();
    await this.queue?.close();
  }
}
