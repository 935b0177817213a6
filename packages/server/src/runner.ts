import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { describeRedis, KeyPool, systemClock, type Clock, type RedisConnection } from '@keypool/core';
import { redisConnection, rootLogger, startSecretSync, type GatewayConfig, type StartedSecretSync } from '@keypool/config';
import type { SecretSync } from '@keypool/secrets';
import { createGateway, type Gateway } from './app.js';
import { startEmbeddedRedis } from './embedded-redis.js';
import { answerClientErrors, ShuttingDown } from './errors.js';
import { QueueStatusReader } from './queue-status.js';

/**
 * `keypool serve`: wire the parts of one gateway process. Redis from the config (or an embedded
 * redis-server child when none is given), the pool, the express app, the listener; and the way
 * down: stop accepting, let requests in flight finish (bounded by drainMs), cut the rest (their
 * leases are released as aborted), wait for the releases, close the pool, stop the embedded Redis.
 */

/**
 * What was opened so far, closed in reverse order: by a failed start and by close() alike, so the
 * three ways down cannot drift apart. Every step runs even when one fails; the first error is thrown.
 */
class Teardown {
  private readonly steps: (() => Promise<unknown> | unknown)[] = [];

  add(step: () => Promise<unknown> | unknown): void {
    this.steps.push(step);
  }

  async run(): Promise<void> {
    let first: unknown;
    let failed = false;
    for (const step of this.steps.splice(0).reverse()) {
      try {
        await step();
      } catch (e) {
        if (!failed) (first = e), (failed = true);
      }
    }
    if (failed) throw first;
  }
}

export interface Serving {
  url: string;
  port: number;
  pool: KeyPool;
  gateway: Gateway;
  server: Server;
  /** Keys from secret sources, when the config has a secrets section. */
  sync: SecretSync | undefined;
  /**
   * The Redis URL (the embedded one when one was started), password included as configured: for
   * connecting another client, never for a log line; a description without password for Sentinel/Cluster.
   */
  redisUrl: string;
  /** Where the pool's Redis is (the embedded one when one was started), credentials and TLS material included: do not log it (describeRedis does). */
  redis: RedisConnection;
  /** Shut down as on SIGTERM; resolves when everything is closed. Returns requests cut short. */
  close(): Promise<number>;
}

/** Options of {@link serve}. */
export interface ServeOptions {
  /** Defaults to a root logger at the config's logLevel. */
  logger?: Logger;
  /** The time of the gateway's own decisions (deadlines, drain); defaults to systemClock. */
  clock?: Clock;
}

export async function serve(config: GatewayConfig, opts: ServeOptions = {}): Promise<Serving> {
  const logger = opts.logger ?? rootLogger(config.logLevel);
  const clock = opts.clock ?? systemClock;
  const teardown = new Teardown();
  // a failed start leaves nothing running; the error that stopped it is the one thrown
  const abandon = (e: unknown) => teardown.run().then(() => Promise.reject(e), () => Promise.reject(e));
  let redis: RedisConnection | undefined = redisConnection(config.redis);
  let embedded: Awaited<ReturnType<typeof startEmbeddedRedis>> | undefined;
  if (!redis) {
    embedded = await startEmbeddedRedis({ ...(config.redis.embeddedDir ? { dir: config.redis.embeddedDir } : {}), logger, clock });
    teardown.add(() => embedded!.stop());
    redis = { url: embedded.url };
  }
  let pool: KeyPool;
  try {
    pool = await KeyPool.connect({ redis, config: config.pool, logger });
  } catch (e) {
    return abandon(e);
  }
  teardown.add(() => pool.close());
  // keys from secret sources: loaded before the first request, kept in step with the fleet
  let secrets: StartedSecretSync | undefined;
  if (config.secrets) {
    try {
      secrets = await startSecretSync(config.secrets, { pool, redis, logger });
    } catch (e) {
      return abandon(e);
    }
    teardown.add(() => secrets!.close());
  }
  const sync: SecretSync | undefined = secrets?.sync;
  const queueReader = new QueueStatusReader(redis, pool.name, { clock });
  teardown.add(() => queueReader.close());
  const gateway = createGateway({ pool, logger, clock, settings: config.server, routes: config.routes, ...(sync ? { sync } : {}), queueStatus: () => queueReader.read() });
  const server = gateway.listen(config.server.port, config.server.host);
  answerClientErrors(server);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('listening', resolve);
      server.once('error', reject);
    });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'EADDRINUSE') return abandon(new Error(`port ${config.server.port} on ${config.server.host} is in use: set server.port (or KEYPOOL_PORT) to a free port, or 0 for any`, { cause: e }));
    return abandon(e);
  }
  // node's requestTimeout (default 5 min) bounds receiving a request, headers and body, not the
  // answer: long streams are unaffected, and a body that trickles in never holds a socket forever
  server.keepAliveTimeout = 65_000;
  const { port } = server.address() as AddressInfo;
  const host = config.server.host.includes(':') ? `[${config.server.host}]` : config.server.host;
  const url = `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`;
  logger.info(
    { url, pool: pool.name, keys: config.pool.keys.length, sourcedKeys: sync?.status().keys ?? 0, routes: Object.keys(config.routes), redis: embedded ? 'embedded' : 'configured', redisAt: describeRedis(redis), admin: Boolean(config.server.adminToken), statusProtected: Boolean(config.server.statusToken) },
    `keypool gateway listening on ${url} (dashboard ${url}/dashboard)`,
  );

  let closing: Promise<number> | undefined;
  const close = () =>
    (closing ??= (async () => {
      logger.info({ inFlight: gateway.inflight.size, drainMs: config.server.drainMs }, 'shutting down: no new requests, waiting for those in flight');
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const cut = await gateway.inflight.drain(config.server.drainMs, new ShuttingDown());
      if (cut > 0) logger.warn({ cut }, `drain period over: ${cut} request(s) cut short; their leases were released`);
      server.closeAllConnections();
      await stopped;
      await teardown.run();
      logger.info('gateway stopped');
      return cut;
    })());
  return { url, port, pool, gateway, server, redisUrl: embedded?.url ?? redis.url ?? describeRedis(redis), redis, sync, close };
}
