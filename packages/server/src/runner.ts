import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino, type Logger } from 'pino';
import { Redis } from 'ioredis';
import { KeyPool } from '@keypool/core';
import { createSources, SecretSync, SYNC_REDIS_OPTIONS } from '@keypool/secrets';
import { createGateway, type Gateway } from './app.js';
import type { GatewayConfig } from './config.js';
import { startEmbeddedRedis } from './embedded-redis.js';
import { ShuttingDown } from './proxy.js';
import { QueueStatusReader } from './queue-status.js';

/**
 * `keypool serve`: wire the parts of one gateway process. Redis from the config (or an embedded
 * redis-server child when none is given), the pool, the express app, the listener; and the way
 * down: stop accepting, let requests in flight finish (bounded by drainMs), cut the rest (their
 * leases are released as aborted), wait for the releases, close the pool, stop the embedded Redis.
 */

/** Paths pino removes from every log line: whatever may carry a secret or a token. */
export const REDACT = ['req.headers.authorization', 'headers.authorization', 'authorization', 'secret', 'apiKey', 'token', '*.secret', '*.apiKey', '*.token', 'keys[*].secret', 'adminToken', '*.adminToken'];

export function rootLogger(level: string): Logger {
  return pino({ level, redact: { paths: REDACT, censor: '[redacted]' }, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime });
}

export interface Serving {
  url: string;
  port: number;
  pool: KeyPool;
  gateway: Gateway;
  server: Server;
  /** Keys from secret sources, when the config has a secrets section. */
  sync: SecretSync | undefined;
  /** The embedded Redis, when one was started. */
  redisUrl: string;
  /** Shut down as on SIGTERM; resolves when everything is closed. Returns requests cut short. */
  close(): Promise<number>;
}

export async function serve(config: GatewayConfig, opts: { logger?: Logger } = {}): Promise<Serving> {
  const logger = opts.logger ?? rootLogger(config.logLevel);
  let redisUrl: string | undefined = config.redis.url;
  let embedded: Awaited<ReturnType<typeof startEmbeddedRedis>> | undefined;
  if (!redisUrl) {
    embedded = await startEmbeddedRedis({ ...(config.redis.embeddedDir ? { dir: config.redis.embeddedDir } : {}), logger });
    redisUrl = embedded.url;
  }
  const redis: string = redisUrl!;
  let pool: KeyPool;
  try {
    pool = await KeyPool.connect({ redis, config: config.pool, logger });
  } catch (e) {
    await embedded?.stop();
    throw e;
  }
  // keys from secret sources: loaded before the first request, kept in step with the fleet
  let sync: SecretSync | undefined;
  let syncRedis: Redis | undefined;
  if (config.secrets) {
    const s = config.secrets;
    syncRedis = new Redis(redis, { ...SYNC_REDIS_OPTIONS, lazyConnect: true });
    syncRedis.on('error', (e: Error) => logger.warn({ err: e.message }, 'secret sync: Redis connection error'));
    await syncRedis.connect().catch(() => undefined);
    sync = new SecretSync({
      pool,
      redis: syncRedis,
      sources: createSources(s, { logger }),
      loader: { timeoutMs: s.timeoutMs, attempts: s.attempts, backoffMs: s.backoffMs },
      heartbeatMs: s.heartbeatMs,
      allowEmpty: s.allowEmpty,
      logger,
    });
    try {
      await sync.start();
    } catch (e) {
      await sync.close().catch(() => undefined);
      syncRedis.disconnect();
      await pool.close();
      await embedded?.stop();
      throw e;
    }
  }
  const queueReader = new QueueStatusReader(redis, pool.name);
  const gateway = createGateway({ pool, logger, settings: config.server, routes: config.routes, ...(sync ? { sync } : {}), queueStatus: () => queueReader.read() });
  const server = gateway.app.listen(config.server.port, config.server.host);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('listening', resolve);
      server.once('error', reject);
    });
  } catch (e) {
    await queueReader.close();
    await sync?.close().catch(() => undefined);
    syncRedis?.disconnect();
    await pool.close();
    await embedded?.stop();
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'EADDRINUSE') throw new Error(`port ${config.server.port} on ${config.server.host} is in use: set server.port (or KEYPOOL_PORT) to a free port, or 0 for any`, { cause: e });
    throw e;
  }
  // node's requestTimeout (default 5 min) bounds receiving a request, headers and body, not the
  // answer: long streams are unaffected, and a body that trickles in never holds a socket forever
  server.keepAliveTimeout = 65_000;
  const { port } = server.address() as AddressInfo;
  const host = config.server.host.includes(':') ? `[${config.server.host}]` : config.server.host;
  const url = `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`;
  logger.info(
    { url, pool: pool.name, keys: config.pool.keys.length, sourcedKeys: sync?.status().keys ?? 0, routes: Object.keys(config.routes), redis: embedded ? 'embedded' : 'configured', admin: Boolean(config.server.adminToken) },
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
      await queueReader.close();
      await sync?.close().catch(() => undefined);
      await syncRedis?.quit().catch(() => syncRedis?.disconnect());
      await pool.close();
      await embedded?.stop();
      logger.info('gateway stopped');
      return cut;
    })());
  return { url, port, pool, gateway, server, redisUrl: redis, sync, close };
}
