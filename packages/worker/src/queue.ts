import { createHash } from 'node:crypto';
import { Queue, QueueEvents, type Job } from 'bullmq';
import type { Cluster, Redis } from 'ioredis';
import { PoolKeys, systemClock, type Clock } from '@keypool/core';
// the section module alone (zod only): producers must not load the secret backends with the config
import { LLM_QUEUE } from '@keypool/config/queue';
import { z } from 'zod';

/** The LLM job queue of a pool: BullMQ queue {@link LLM_QUEUE} under the pool's prefix (its Cluster slot). */
export { LLM_QUEUE };
/** The BullMQ prefix of a pool's queues: its hash tag, so they share the pool's Cluster slot. */
export const queuePrefix = (pool: string): string => new PoolKeys(pool).bull;

/** BullMQ priorities (lower runs first). */
export const PRIORITY = { critical: 1, normal: 2, low: 3 } as const;
export type JobPriority = keyof typeof PRIORITY;

const REQUIRED: Record<LlmJobKind, string> = { chat: 'messages', embeddings: 'input', responses: 'input' };

/** One LLM job as a producer gives it. */
export const LlmJobSchema = z
  .object({
    kind: z.enum(['chat', 'embeddings', 'responses']).describe('Which OpenAI endpoint: chat (completions), embeddings or responses.'),
    request: z
      .record(z.string(), z.unknown())
      .describe('The request body as for the OpenAI API; `model` may name a route. No streaming: the result is stored whole.'),
    priority: z
      .enum(['critical', 'normal', 'low'])
      .default('low')
      .describe('critical runs first and takes the strongest model of a route; low (the default for jobs) uses the cheapest and leaves the pool\'s priority.keepFree share to interactive calls.'),
    tenant: z
      .string()
      .regex(/^[^\s,]{1,64}$/, 'a tenant name: 1-64 characters without spaces or commas')
      .optional()
      .describe("Whose job this is, for the fair shares between tenants of a class when the pool is the bottleneck (weight: the pool config's priority.weights, else 1). Default: none."),
    idempotencyKey: z.string().min(1).max(256).optional().describe('Enqueueing again with the same key returns the same job (while it is retained) instead of adding a second.'),
    deadline: z
      .union([z.number().int().positive(), z.iso.datetime({ offset: true })])
      .optional()
      .describe('Epoch ms or ISO time: a job not done by then fails with "deadline".'),
    attempts: z.number().int().min(1).max(50).optional().describe('Attempts for transient failures (5xx, timeouts); default the worker config.'),
  })
  .strict()
  .superRefine((j, ctx) => {
    const model = j.request.model;
    if (typeof model !== 'string' || model === '') ctx.addIssue({ code: 'custom', path: ['request', 'model'], message: 'name a model or a route' });
    const field = REQUIRED[j.kind];
    if (j.request[field] === undefined) ctx.addIssue({ code: 'custom', path: ['request', field], message: `a ${j.kind} request needs ${field}` });
    if (j.request.stream === true) ctx.addIssue({ code: 'custom', path: ['request', 'stream'], message: 'queued jobs do not stream: leave stream out' });
  });

export type LlmJobKind = 'chat' | 'embeddings' | 'responses';
export type LlmJobInput = z.input<typeof LlmJobSchema>;

/** What a job carries in BullMQ. */
export interface LlmJobData {
  kind: LlmJobKind;
  request: Record<string, unknown>;
  priority: JobPriority;
  /** For the fair shares between tenants (absent: none). */
  tenant?: string;
  /** Epoch ms. */
  deadline?: number;
  enqueuedAt: number;
}

/** What a done job holds. */
export interface LlmJobResult {
  /** The provider's answer, as the OpenAI API returns it. */
  response: unknown;
  model: string;
  keyId: string;
  /** Real usage priced (or the estimate when no usage came). */
  costUsd: number;
  /** Keys tried before the one that served, in the attempt that succeeded. */
  failovers: number;
  /** BullMQ attempts used (waits for a key are not attempts). */
  attempts: number;
  /** From enqueue to the start of the attempt that succeeded. */
  waitedMs: number;
  finishedAt: string;
}

export interface LlmJobInfo {
  id: string;
  state: string;
  kind: LlmJobKind;
  model: string;
  priority: JobPriority;
  tenant?: string;
  enqueuedAt: string;
  attemptsMade: number;
  /** When it completed or (last) failed. */
  finishedAt?: string;
  result?: LlmJobResult;
  /** Why it failed (the upstream error kept as it came: status, type, code, message). */
  error?: string;
}

export class InvalidJobError extends Error {
  override readonly name = 'InvalidJobError';
}

export interface LlmQueueOptions {
  /** The pool's Redis (a connection BullMQ may use: maxRetriesPerRequest null for waiting). */
  connection: Redis | Cluster;
  pool: string;
  /** Attempts for transient failures, per job (default 5), with exponential backoff from backoffMs (default 2000). */
  attempts?: number;
  backoffMs?: number;
  /** Keep done jobs (and their results) this long, s (default 1 day), at most this many (default 10000). */
  keepCompletedS?: number;
  keepCompleted?: number;
  /** Keep failed jobs this long, s (default 7 days). */
  keepFailedS?: number;
  /** Stamps enqueuedAt (the worker's waitedMs counts from it). Default systemClock. */
  clock?: Clock;
}

/**
 * The producer side: add LLM jobs (one or a batch), read them back, wait for a result, list and
 * retry failed ones. Needs only Redis: no provider key is involved in producing.
 */
export class LlmQueue {
  readonly queue: Queue<LlmJobData, LlmJobResult>;
  private events: QueueEvents | undefined;
  private eventsConnection: Redis | Cluster | undefined;
  private readonly opts: LlmQueueOptions;

  constructor(opts: LlmQueueOptions) {
    this.opts = opts;
    this.queue = new Queue<LlmJobData, LlmJobResult>(LLM_QUEUE, { connection: opts.connection, prefix: queuePrefix(opts.pool) });
    // without a listener BullMQ prints connection errors raw to stderr; the calls themselves fail with them
    this.queue.on('error', () => undefined);
  }

  /** Add one job. Throws InvalidJobError (with every problem and its path) for a malformed one. */
  async add(input: LlmJobInput): Promise<LlmJobInfo> {
    return (await this.addBulk([input]))[0]!;
  }

  /** Add jobs at once (validated first: a batch with a bad job adds nothing). */
  async addBulk(inputs: LlmJobInput[]): Promise<LlmJobInfo[]> {
    const jobs = inputs.map((input, i) => {
      const r = LlmJobSchema.safeParse(input);
      if (!r.success) {
        const where = inputs.length > 1 ? `jobs[${i}].` : '';
        throw new InvalidJobError(`invalid job: ${r.error.issues.map((x) => `${where}${x.path.join('.')}: ${x.message}`).join('; ')}`);
      }
      const j = r.data;
      const data: LlmJobData = {
        kind: j.kind,
        request: j.request,
        priority: j.priority,
        ...(j.tenant !== undefined ? { tenant: j.tenant } : {}),
        ...(j.deadline !== undefined ? { deadline: typeof j.deadline === 'number' ? j.deadline : Date.parse(j.deadline) } : {}),
        enqueuedAt: (this.opts.clock ?? systemClock).now(),
      };
      return {
        name: j.kind,
        data,
        opts: {
          priority: PRIORITY[j.priority],
          attempts: j.attempts ?? this.opts.attempts ?? 5,
          backoff: { type: 'exponential', delay: this.opts.backoffMs ?? 2000 },
          removeOnComplete: { age: this.opts.keepCompletedS ?? 86_400, count: this.opts.keepCompleted ?? 10_000 },
          removeOnFail: { age: this.opts.keepFailedS ?? 7 * 86_400, count: 100_000 },
          ...(j.idempotencyKey ? { jobId: jobIdOf(j.idempotencyKey) } : {}),
        },
      };
    });
    const added = await this.queue.addBulk(jobs);
    // read back: a job already there under the idempotency key is shown as it is, not as asked
    return Promise.all(
      added.map(async (job) => {
        const state = await this.queue.getJobState(job.id!);
        const stored = (await this.queue.getJob(job.id!)) ?? job;
        return infoOf(stored, state);
      }),
    );
  }

  /** A job by id, or undefined (never added, or no longer retained). */
  async get(id: string): Promise<LlmJobInfo | undefined> {
    // the state first: a job read before it finished would say "completed" with no result
    const state = await this.queue.getJobState(id);
    const job = state === 'unknown' ? undefined : await this.queue.getJob(id);
    return job ? infoOf(job, state) : undefined;
  }

  /** Wait for a job to finish: its result, or a rejection with the reason it failed. */
  async wait(id: string, timeoutMs = 60_000): Promise<LlmJobResult> {
    const job = await this.queue.getJob(id);
    if (!job) throw new InvalidJobError(`no job ${id} (never added, or no longer retained)`);
    if (!this.events) {
      // BullMQ never closes a connection it is given: this one is ours to close
      this.eventsConnection = (this.opts.connection as Redis).duplicate() as Redis | Cluster;
      this.eventsConnection.on('error', () => undefined);
      this.events = new QueueEvents(LLM_QUEUE, { connection: this.eventsConnection as never, prefix: queuePrefix(this.opts.pool) });
      this.events.on('error', () => undefined);
    }
    await this.events.waitUntilReady();
    // finished already (or while the events connection was starting): the stored outcome
    const done = await this.finished(id);
    if (done) return done;
    // the events stream is read from "now": a job that finished between the check above and the
    // first read would be missed, so its state is also looked at every half second
    let timer: NodeJS.Timeout | undefined;
    let stopped = false;
    const poll = new Promise<LlmJobResult>((resolve, reject) => {
      const tick = () =>
        this.finished(id).then(
          (r) => {
            if (r) resolve(r);
            else if (!stopped) timer = setTimeout(tick, 500);
          },
          (e) => reject(e),
        );
      timer = setTimeout(tick, 500);
    });
    try {
      return await Promise.race([job.waitUntilFinished(this.events, timeoutMs), poll]);
    } finally {
      stopped = true;
      clearTimeout(timer);
    }
  }

  private async finished(id: string): Promise<LlmJobResult | undefined> {
    const state = await this.queue.getJobState(id);
    if (state !== 'completed' && state !== 'failed') return undefined;
    // read after the state: a job object read before it finished lacks its outcome
    const job = await this.queue.getJob(id);
    if (state === 'completed') return job!.returnvalue;
    throw new Error(job!.failedReason);
  }

  /** Failed jobs, newest first. */
  async failed(start = 0, end = 49): Promise<LlmJobInfo[]> {
    const jobs = await this.queue.getFailed(start, end);
    return jobs.map((j) => infoOf(j, 'failed'));
  }

  /** Run a failed job again: its attempts start over (and a job failed for stalling may run again). */
  async retry(id: string): Promise<LlmJobInfo> {
    const job = await this.queue.getJob(id);
    if (!job) throw new InvalidJobError(`no job ${id} (never added, or no longer retained)`);
    const state = await job.getState();
    if (state !== 'failed') throw new InvalidJobError(`job ${id} is ${state}: only a failed job can be retried`);
    // BullMQ keeps a job's stall count and its "stalled too often" mark across a retry: clear them
    await this.opts.connection.hdel(`${queuePrefix(this.opts.pool)}:${LLM_QUEUE}:${id}`, 'stc', 'defa');
    await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
    return infoOf(job, await job.getState());
  }

  /** Jobs by state: waiting, prioritized, delayed, active, completed, failed... */
  async counts(): Promise<Record<string, number>> {
    return this.queue.getJobCounts('waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed');
  }

  async close(): Promise<void> {
    await this.events?.close();
    this.eventsConnection?.disconnect();
    await this.queue.close();
  }
}

/** BullMQ job id of an idempotency key: the key itself is never stored (it may hold a customer id). */
export function jobIdOf(idempotencyKey: string): string {
  return `idem-${createHash('sha256').update(idempotencyKey).digest('hex').slice(0, 32)}`;
}

function infoOf(job: Job<LlmJobData, LlmJobResult>, state: string): LlmJobInfo {
  const d = job.data;
  return {
    id: job.id!,
    state,
    kind: d.kind,
    model: String(d.request.model),
    priority: d.priority,
    ...(d.tenant !== undefined ? { tenant: d.tenant } : {}),
    enqueuedAt: new Date(d.enqueuedAt).toISOString(),
    attemptsMade: job.attemptsMade,
    ...(job.finishedOn ? { finishedAt: new Date(job.finishedOn).toISOString() } : {}),
    ...(job.returnvalue ? { result: job.returnvalue } : {}),
    ...(job.failedReason ? { error: job.failedReason } : {}),
  };
}
