import { z } from 'zod';

/**
 * The BullMQ queue name of the LLM jobs: producers, `keypool worker` and the gateway's queue status
 * all use it, so it is defined here, once.
 */
export const LLM_QUEUE = 'llm';

/** `queue`: the LLM job queue `keypool worker` consumes. */
export const QueueSectionSchema = z
  .object({
    enabled: z.boolean().default(true).describe('Consume the LLM job queue in keypool worker (false: the worker only runs the scheduler).'),
    concurrency: z.number().int().min(1).max(1000).default(16).describe('Jobs one worker runs at once.'),
    keyWaitMs: z
      .number()
      .int()
      .min(0)
      .default(2000)
      .describe('Longest wait inside a worker for a free key; a longer wait is handed back to BullMQ as a delay of the time the pool names (no attempt spent).'),
    attemptTimeoutMs: z.number().int().min(100).default(60_000).describe('One upstream call of a job.'),
    attempts: z.number().int().min(1).max(50).default(5).describe('Attempts of a job for transient failures (5xx, timeouts, network), with exponential backoff.'),
    backoffMs: z.number().int().min(1).default(2000).describe('First backoff between attempts; doubles each time.'),
    keepCompletedS: z.number().int().min(0).default(86_400).describe('Done jobs and their results are kept this long (s); an idempotency key dedupes only while its job is kept (this long, and among the last keepCompleted).'),
    keepCompleted: z.number().int().min(0).default(10_000).describe('...and at most this many.'),
    keepFailedS: z.number().int().min(0).default(7 * 86_400).describe('Failed jobs are kept this long (s) for operators to read and retry.'),
    lockMs: z.number().int().min(1000).default(30_000).describe('A job whose worker stopped renewing its lock this long ago (killed) runs again on another worker.'),
    stalledCheckMs: z.number().int().min(500).default(15_000).describe('How often workers look for such jobs.'),
  })
  .strict();
export type QueueSection = z.output<typeof QueueSectionSchema>;
