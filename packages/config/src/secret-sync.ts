/**
 * The `secrets` section wired to a running pool: the gateway runner and the worker both need the same
 * SecretSync, on a connection of its own, started before they take traffic.
 */
import { createRedis, type KeyPool, type RedisConnection } from '@keypool/core';
import { createSources, SecretSync, type SecretsSection } from '@keypool/secrets';
import type { Cluster, Redis } from 'ioredis';
import type { Logger } from 'pino';

/** True for a client rather than a description of where Redis is. */
function isClient(redis: unknown): redis is Redis | Cluster {
  return typeof redis === 'object' && redis !== null && typeof (redis as { sendCommand?: unknown }).sendCommand === 'function';
}

/** A started {@link SecretSync} and the way to stop it with the connection it owns. */
export interface StartedSecretSync {
  sync: SecretSync;
  /** Leave the fleet's secret protocol and close the connection made for it (never throws). */
  close(): Promise<void>;
}

/**
 * Starts a SecretSync of `section`'s sources for `pool`. Given a URL, it makes its own connection
 * with createRedis' `sync` options (SYNC_REDIS_OPTIONS): the secret protocol must fail fast while Redis is away, unlike BullMQ's
 * connection that waits forever; given a client (tests, a caller that manages connections), it uses it.
 *
 * @throws whatever the first load throws (a source failed and no last good set), after closing what it opened.
 */
export async function startSecretSync(section: SecretsSection, opts: { pool: KeyPool; redis: string | RedisConnection | Redis | Cluster; logger: Logger }): Promise<StartedSecretSync> {
  const { logger } = opts;
  let own: Redis | Cluster | undefined;
  if (!isClient(opts.redis)) {
    own = createRedis(opts.redis, 'sync');
    own.on('error', (e: Error) => logger.warn({ err: e.message }, 'secret sync: Redis connection error'));
    await own.connect().catch(() => undefined);
  }
  const sync = new SecretSync({
    pool: opts.pool,
    redis: own ?? (opts.redis as Redis | Cluster),
    sources: createSources(section, { logger }),
    loader: { timeoutMs: section.timeoutMs, attempts: section.attempts, backoffMs: section.backoffMs },
    heartbeatMs: section.heartbeatMs,
    allowEmpty: section.allowEmpty,
    logger,
  });
  try {
    await sync.start();
  } catch (e) {
    await sync.close().catch(() => undefined);
    own?.disconnect();
    throw e;
  }
  return {
    sync,
    async close() {
      await sync.close().catch(() => undefined);
      await own?.quit().catch(() => own?.disconnect());
    },
  };
}
