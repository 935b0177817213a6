import { hostname } from 'node:os';
import { DelayedError, UnrecoverableError, Worker, type Job } from 'bullmq';
import OpenAI from 'openai';
import type { Cluster, Redis } from 'ioredis';
import { isPoolExhausted, isUnknownModel, isRequestTooLarge, PoolKeys, systemClock, type Clock, type KeyPool } from '@keypool/core';
import { PooledOpenAI, type Route } from '@keypool/client';
import type { Logger } from 'pino';
import { LLM_QUEUE, queuePrefix, type LlmJobData, type LlmJobResult } from './queue.js';

export interface LlmWorkerSettings {
  /** Jobs one worker runs at once. */
  concurrency: number;
  /** Longest in-process wait for a free key; longer waits go back to BullMQ as a delay. */
  keyWaitMs: number;
  /** One upstream call's timeout. */
  attemptTimeoutMs: number;
  /** A job whose worker stopped renewing its lock this long ago (killed) runs again elsewhere. */
  lockMs: number;
  stalledCheckMs: number;
}

export interface LlmWorkerOptions {
  pool: KeyPool;
  connection: Redis | Cluster;
  settings: LlmWorkerSettings;
  routes?: Record<string, Route>;
  logger?: Logger;
  workerId?: string;
  /** Job deadlines, delays and the per-minute stats buckets. Default systemClock. */
  clock?: Clock;
}

/**
 * The consumer of the LLM queue: each job is one call through the pooled client (failover across
 * keys, backoff). When no key can serve, the job is not failed and no attempt is spent: a short
 * wait happens here (the pool names the time), a longer one is handed back to BullMQ as a delay of
 * exactly that time. Requests the provider refuses (4xx other than 408/409/429) and unknown models
 * fail at once with the upstream error kept; transient failures are retried by BullMQ with backoff.
 */
export class LlmWorker {
  private worker: Worker<LlmJobData, LlmJobResult> | undefined;
  private readonly client: PooledOpenAI;
  private readonly log: Logger | undefined;
  readonly workerId: string;
  private readonly clock: Clock;

  constructor(private readonly opts: LlmWorkerOptions) {
    this.clock = opts.clock ?? systemClock;
    this.client = new PooledOpenAI({
      pool: opts.pool,
      routes: opts.routes ?? {},
      attemptTimeoutMs: opts.settings.attemptTimeoutMs,
      deadlineMs: opts.settings.attemptTimeoutMs * 4 + opts.settings.keyWaitMs,
    });
    this.log = opts.logger?.child({ component: 'keypool-queue', pool: opts.pool.name });
    this.workerId = opts.workerId ?? `${hostname()}:${process.pid}`;
  }

  async start(): Promise<void> {
    const s = this.opts.settings;
    this.worker = new Worker<LlmJobData, LlmJobResult>(LLM_QUEUE, (job, token, signal) => this.run(job, token, signal), {
      connection: this.opts.connection,
      prefix: queuePrefix(this.opts.pool.name),
      concurrency: s.concurrency,
      lockDuration: s.lockMs,
      stalledInterval: s.stalledCheckMs,
      maxStalledCount: 2,
    });
    this.worker.on('error', (e) => this.log?.warn({ err: e.message }, 'queue worker error'));
    const stats = new PoolKeys(this.opts.pool.name).queueStats;
    const count = (fields: [string, number][], drop: string[] = []) => {
      const m = this.opts.connection.multi();
      for (const [f, n] of fields) m.hincrby(stats, f, n);
      if (drop.length > 0) m.hdel(stats, ...drop);
      void m.exec().catch(() => undefined);
    };
    this.worker.on('completed', (job) => {
      const minute = Math.floor(this.clock.now() / 60_000);
      // per-minute buckets older than the last whole minute are of no use: dropped as we go
      count([['completed', 1], ['waitMs', Math.max(0, job.returnvalue?.waitedMs ?? 0)], [`c:${minute}`, 1]], [`c:${minute - 2}`, `c:${minute - 3}`]);
    });
    this.worker.on('failed', (job, e) => {
      if (!job || e instanceof DelayedError || e.name === 'DelayedError') return;
      this.log?.warn({ jobId: job.id, attempts: job.attemptsMade, err: e.message }, 'LLM job attempt failed');
      const final = e instanceof UnrecoverableError || e.name === 'UnrecoverableError' || job.attemptsMade >= (job.opts.attempts ?? 1);
      if (final) count([['failed', 1]]);
    });
    await this.worker.waitUntilReady();
  }

  private async run(job: Job<LlmJobData, LlmJobResult>, token?: string, signal?: AbortSignal): Promise<LlmJobResult> {
    const d = job.data;
    const now = this.clock.now();
    if (d.deadline !== undefined && now >= d.deadline) {
      throw new UnrecoverableError(`deadline passed at ${new Date(d.deadline).toISOString()} before the job could run`);
    }
    const started = now;
    let served: { keyId: string; model: string; costUsd: number; failovers: number } | undefined;
    const options = {
      // BullMQ aborts it when this worker lost the job's lock (another worker may run it): stop paying
      ...(signal ? { signal } : {}),
      priority: d.priority,
      ...(d.tenant !== undefined ? { tenant: d.tenant } : {}),
      keyWaitMs: this.opts.settings.keyWaitMs,
      ...(d.deadline !== undefined ? { timeout: Math.max(1, d.deadline - now) } : {}),
      onServed: (i: typeof served) => (served = i),
    };
    let response: unknown;
    try {
      const body = d.request as never;
      if (d.kind === 'chat') response = await this.client.chat.completions.create(body, options);
      else if (d.kind === 'embeddings') response = await this.client.embeddings.create(body, options);
      else response = await this.client.responses.create(body, options);
    } catch (e) {
      if (d.deadline !== undefined && this.clock.now() >= d.deadline) {
        throw new UnrecoverableError(`deadline passed at ${new Date(d.deadline).toISOString()} while the job ran (${(e as Error).message})`);
      }
      if (isPoolExhausted(e)) {
        if (e.retryAfterMs === null) {
          // no key can serve by waiting (all disabled, draining, revoked...): an attempt, with backoff
          throw new Error(`no key of the pool can serve ${String(d.request.model)} (${e.reason}); the job is retried with backoff`);
        }
        // no key free now: not a failure, no attempt spent; back when the pool says. A floor (and
        // jitter) so that jobs that never wait (low) or a key full of slow calls do not spin
        const floor = d.priority === 'low' ? 1000 : 250;
        const wait = Math.max(e.retryAfterMs, floor) * (0.9 + Math.random() * 0.2);
        if (d.deadline !== undefined && this.clock.now() + wait >= d.deadline) {
          throw new UnrecoverableError(`deadline: no key can serve ${String(d.request.model)} before ${new Date(d.deadline).toISOString()} (${e.reason})`);
        }
        await job.moveToDelayed(Math.round(this.clock.now() + wait), token);
        throw new DelayedError();
      }
      if (isUnknownModel(e) || isRequestTooLarge(e)) throw new UnrecoverableError(`${(e as Error).name}: ${(e as Error).message}`);
      if (e instanceof OpenAI.APIError && (e.status === 401 || e.status === 403)) {
        // every key tried was refused: a key problem (revoked until probed or fixed), not the
        // request's; the provider's message may quote a key hint, so it is not kept
        throw new Error(`the provider refused every key tried (${e.status}); retried with backoff`);
      }
      if (e instanceof OpenAI.APIError && typeof e.status === 'number' && e.status >= 400 && e.status < 500 && ![408, 409, 429].includes(e.status)) {
        // the request itself is wrong: retrying cannot help; keep what the provider said
        throw new UnrecoverableError(JSON.stringify({ status: e.status, type: e.type ?? null, code: e.code ?? null, message: e.message }));
      }
      throw e;
    }
    if (!served) throw new Error('served without a key: a bug');
    return {
      response,
      model: served.model,
      keyId: served.keyId,
      costUsd: served.costUsd,
      failovers: served.failovers,
      attempts: job.attemptsMade + 1,
      waitedMs: started - d.enqueuedAt,
      finishedAt: new Date(this.clock.now()).toISOString(),
    };
  }

  async close(): Promise<void> {
    await this.worker?.close();
  }
}
