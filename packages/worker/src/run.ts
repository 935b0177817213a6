import { Redis, type Cluster } from 'ioredis';
import { ConfigError, KeyPool } from '@keypool/core';
import { createSources, SecretSync, SYNC_REDIS_OPTIONS } from '@keypool/secrets';
import type { GatewayConfig } from '@keypool/server';
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

/**
 * `keypool worker`: the pool (with the file's keys and the secret sources' keys, which probes need),
 * the secret sync, and the scheduler, on the Redis the gateways share. No embedded Redis: a worker
 * alone on a private Redis would schedule for nobody.
 */
export async function startWorker(config: GatewayConfig, opts: { logger: Logger; redis?: Redis | Cluster; workerId?: string }): Promise<RunningWorker> {
  const log = opts.logger;
  if (!opts.redis && !config.redis.url) {
    throw new ConfigError([{ path: 'redis.url', message: 'keypool worker needs the Redis its gateways use: set redis.url in the file or REDIS_URL' }], 'worker config');
  }
  // BullMQ needs a connection that retries forever (its blocking reads must survive a Redis restart)
  const connection: Redis | Cluster = opts.redis ?? new Redis(config.redis.url!, { maxRetriesPerRequest: null, lazyConnect: false });
  connection.on('error', (e: Error) => log.warn({ err: e.message }, 'worker Redis connection error'));
  const owns = !opts.redis;
  let pool: KeyPool | undefined;
  let sync: SecretSync | undefined;
  // the secret protocol's own connection: BullMQ's waits for Redis forever, this one must fail fast
  let syncRedis: Redis | undefined;
  try {
    pool = await KeyPool.connect({ redis: opts.redis ?? config.redis.url!, config: config.pool, logger: log });
    if (config.secrets) {
      const s = config.secrets;
      if (!opts.redis) {
        syncRedis = new Redis(config.redis.url!, { ...SYNC_REDIS_OPTIONS, lazyConnect: true });
        syncRedis.on('error', (e: Error) => log.warn({ err: e.message }, 'secret sync: Redis connection error'));
        await syncRedis.connect().catch(() => undefined);
      }
      sync = new SecretSync({
        pool,
        redis: syncRedis ?? connection,
        sources: createSources(s, { logger: log }),
        loader: { timeoutMs: s.timeoutMs, attempts: s.attempts, backoffMs: s.backoffMs },
        heartbeatMs: s.heartbeatMs,
        allowEmpty: s.allowEmpty,
        logger: log,
      });
      await sync.start();
    }
    const scheduler = new Scheduler({ pool, connection, ...(sync ? { sync } : {}), settings: config.scheduler, logger: log, ...(opts.workerId ? { workerId: opts.workerId } : {}) });
    await scheduler.start();
    let queue: LlmWorker | undefined;
    if (config.queue.enabled) {
      queue = new LlmWorker({ pool, connection, settings: config.queue, routes: config.routes, logger: log, ...(opts.workerId ? { workerId: opts.workerId } : {}) });
      await queue.start();
    }
    const p = pool;
    const sy = sync;
    let closing: Promise<void> | undefined;
    return {
      pool: p,
      scheduler,
      queue,
      sync: sy,
      close: () =>
        (closing ??= (async () => {
          await queue?.close();
          await scheduler.close();
          await sy?.close();
          syncRedis?.disconnect();
          await p.close();
          if (owns) await connection.quit().catch(() => connection.disconnect());
          log.info('worker stopped');
        })()),
    };
  } catch (e) {
    await sync?.close().catch(() => undefined);
    syncRedis?.disconnect();
    await pool?.close().catch(() => undefined);
    if (owns) connection.disconnect();
    throw e;
  }
}
