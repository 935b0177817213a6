import type { Cluster, Redis } from 'ioredis';
import { ConfigError, createRedis, KeyPool, systemClock, type Clock } from '@keypool/core';
import { redisConnection, startSecretSync, type GatewayConfig, type StartedSecretSync } from '@keypool/config';
import type { SecretSync } from '@keypool/secrets';
import type { Logger } from 'pino';
import { LlmWorker } from './llm-worker.js';
import { Scheduler } from './scheduler.js';

export interface RunningWorker {
  pool: KeyPool;
  scheduler: Scheduler;
  /** The LLM queue consumer (absent with queue.enabled false). */
  queue: LlmWorker | undefined;
  sync: SecretSync | undefined;
  /** Stop taking jobs (the ones in progress finish), leave the fleet, close connections. */
  close(): Promise<void>;
}

/** Options of {@link startWorker}. */
export interface StartWorkerOptions {
  logger: Logger;
  /** A connection to use instead of one to config.redis.url (tests); it is not closed by close(). */
  redis?: Redis | Cluster;
  workerId?: string;
  /** The time of the scheduler's and the queue consumer's decisions. Default systemClock. */
  clock?: Clock;
}

/**
 * `keypool worker`: the pool (with the file's keys and the secret sources' keys, which probes need),
 * the secret sync, and the scheduler, on the Redis the gateways share. No embedded Redis: a worker
 * alone on a private Redis would schedule for nobody.
 */
export async function startWorker(config: GatewayConfig, opts: StartWorkerOptions): Promise<RunningWorker> {
  const log = opts.logger;
  const clock = opts.clock ?? systemClock;
  const target = opts.redis ? undefined : redisConnection(config.redis);
  if (!opts.redis && !target) {
    throw new ConfigError(
      [{ path: 'redis.url', message: 'keypool worker needs the Redis its gateways use: set redis.url, redis.sentinel or redis.cluster in the file, or REDIS_URL' }],
      'worker config',
    );
  }
  // BullMQ needs a connection that retries forever (its blocking reads must survive a Redis restart)
  const connection: Redis | Cluster = opts.redis ?? createRedis(target!, 'bullmq', { lazyConnect: false });
  connection.on('error', (e: Error) => log.warn({ err: e.message }, 'worker Redis connection error'));
  const owns = !opts.redis;
  let pool: KeyPool | undefined;
  let secrets: StartedSecretSync | undefined;
  try {
    pool = await KeyPool.connect({ redis: opts.redis ?? target!, config: config.pool, logger: log });
    // the secret protocol gets a fail-fast connection of its own (BullMQ's waits for Redis forever)
    if (config.secrets) secrets = await startSecretSync(config.secrets, { pool, redis: opts.redis ?? target!, logger: log });
    const sync = secrets?.sync;
    const workerId = opts.workerId ? { workerId: opts.workerId } : {};
    const scheduler = new Scheduler({ pool, connection, ...(sync ? { sync } : {}), settings: config.scheduler, logger: log, clock, ...workerId });
    await scheduler.start();
    let queue: LlmWorker | undefined;
    if (config.queue.enabled) {
      queue = new LlmWorker({ pool, connection, settings: config.queue, routes: config.routes, logger: log, clock, ...workerId });
      await queue.start();
    }
    const p = pool;
    const s = secrets;
    let closing: Promise<void> | undefined;
    return {
      pool: p,
      scheduler,
      queue,
      sync,
      close: () =>
        (closing ??= (async () => {
          await queue?.close();
          await scheduler.close();
          await s?.close();
          await p.close();
          if (owns) await connection.quit().catch(() => connection.disconnect());
          log.info('worker stopped');
        })()),
    };
  } catch (e) {
    await secrets?.close();
    await pool?.close().catch(() => undefined);
    if (owns) connection.disconnect();
    throw e;
  }
}
