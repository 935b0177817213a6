import type { Queue } from 'bullmq';
import type { Cluster, Redis } from 'ioredis';
import { createRedis, PoolKeys, systemClock, type Clock, type RedisConnection } from '@keypool/core';
import { LLM_QUEUE } from '@keypool/config';

/** The LLM job queue of the pool as /status, /metrics and the dashboard show it (fleet-wide, from Redis). */
export interface QueueStatus {
  /** Jobs by state now: waiting, prioritized, delayed, active, completed (retained), failed (retained). */
  counts: Record<string, number>;
  /** Jobs finished since the stats began, across all workers. */
  completed: number;
  failed: number;
  /** Mean time from enqueue to the start of the attempt that succeeded. */
  avgWaitMs: number | null;
  /** Jobs completed in the last whole minute. */
  completedLastMinute: number;
}

/**
 * Reads the queue's counts with BullMQ (on its own fail-fast connection, opened at the first read)
 * and the workers' finished-job counters. Never throws: null when Redis does not answer.
 */
export class QueueStatusReader {
  private queue: Queue | undefined;
  private client: Redis | Cluster | undefined;
  private connecting: Promise<void> | undefined;
  private readonly keys: PoolKeys;
  /** Names "the last whole minute" of the stats. */
  private readonly clock: Clock;

  constructor(
    private readonly redis: string | RedisConnection,
    pool: string,
    opts: { clock?: Clock } = {},
  ) {
    this.keys = new PoolKeys(pool);
    this.clock = opts.clock ?? systemClock;
  }

  async read(): Promise<QueueStatus | null> {
    try {
      if (!this.client || !this.queue) {
        // concurrent first reads (a scrape and a /status) share one connection
        this.connecting ??= (async () => {
          // bullmq is loaded at the first read (a /status, a scrape), not when the gateway starts
          const { Queue } = await import('bullmq');
          const client = createRedis(this.redis, 'status');
          client.on('error', () => undefined);
          try {
            await client.connect();
          } catch (e) {
            client.disconnect();
            throw e;
          }
          this.client = client;
          this.queue = new Queue(LLM_QUEUE, { connection: client, prefix: this.keys.bull });
          // BullMQ re-emits the connection's errors on the Queue and prints them raw to stderr when
          // nobody listens; the pool already reports Redis down (log, /status, metrics), and read() returns null
          this.queue.on('error', () => undefined);
        })().finally(() => {
          this.connecting = undefined;
        });
        await this.connecting;
      }
      const [counts, stats] = await Promise.all([
        this.queue!.getJobCounts('waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed'),
        this.client!.hgetall(this.keys.queueStats),
      ]);
      const completed = Number(stats.completed ?? 0);
      const minute = Math.floor(this.clock.now() / 60_000) - 1;
      return {
        counts,
        completed,
        failed: Number(stats.failed ?? 0),
        avgWaitMs: completed > 0 ? Math.round(Number(stats.waitMs ?? 0) / completed) : null,
        completedLastMinute: Number(stats[`c:${minute}`] ?? 0),
      };
    } catch {
      return null;
    }
  }

  async close(): Promise<void> {
    await this.queue?.close().catch(() => undefined);
    this.client?.disconnect();
  }
}
