import { readFileSync } from 'node:fs';
import { createServer, type RequestListener, type Server } from 'node:http';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Logger } from 'pino';
import { systemClock, type Clock, type KeyPool } from '@keypool/core';
import { packageRoot } from '@keypool/core/package-dir';
import type { SecretSync } from '@keypool/secrets';
import { Dispatcher, type Route } from '@keypool/client';
import { parseByteSize } from '@keypool/config';
import { adminRouter, opsGuard } from './admin.js';
import { HttpError, sendError, unknownUrl } from './errors.js';
import { frontListener } from './front.js';
import { Inflight } from './inflight.js';
import { GatewayMetrics } from './metrics.js';
import type { QueueStatus } from './queue-status.js';
import { createProxy } from './proxy.js';

/** What the gateway needs from the `server` config section (see @keypool/config's sections/server.ts for each field). */
export interface GatewaySettings {
  adminToken?: string | undefined;
  /** Read-only token of /status, /metrics and the dashboard's data; unset: they are open. */
  statusToken?: string | undefined;
  bodyLimit: number | string;
  deadlineMs: number;
  attemptTimeoutMs: number;
  maxAttempts: number;
  backoff: { baseMs: number; maxMs: number };
  defaultMaxOutputTokens: number;
}

export interface GatewayOptions {
  pool: KeyPool;
  logger: Logger;
  settings: GatewaySettings;
  routes?: Record<string, Route>;
  /** This process's secret sync, when keys come from secret sources (shown in /status and /metrics). */
  sync?: SecretSync;
  /** The LLM job queue's state (shown in /status, /metrics and the dashboard). */
  queueStatus?: () => Promise<QueueStatus | null>;
  /** The time of the gateway's own decisions: drain deadlines, uptime, token memory. Default systemClock. */
  clock?: Clock;
}

export interface Gateway {
  /** The request listener to serve: /v1 on plain node:http, the rest through `app`. */
  handler: RequestListener;
  /** An http server of `handler` listening on port (and host); as express's app.listen. */
  listen(port: number, host?: string, onListening?: () => void): Server;
  /** The express app of everything but /v1 (status, metrics, admin, dashboard). Serve `handler`, not this. */
  app: express.Express;
  metrics: GatewayMetrics;
  inflight: Inflight;
  dispatcher: Dispatcher;
  startedAt: Date;
}

const DASHBOARD = new URL('./dashboard.html', import.meta.url);

/**
 * One gateway process's request listener: /v1 (the OpenAI-compatible proxy, on plain node:http),
 * and the express app of /status, /healthz, /readyz, /metrics, /admin and the dashboard. No
 * listening here (see runner.ts).
 */
export function createGateway(opts: GatewayOptions): Gateway {
  const { pool, logger, settings } = opts;
  const clock = opts.clock ?? systemClock;
  const inflight = new Inflight(clock);
  const metrics = new GatewayMetrics(pool, () => inflight.size, opts.sync, opts.queueStatus);
  const dispatcher = new Dispatcher({ pool, routes: opts.routes ?? {}, maxAttempts: settings.maxAttempts, backoff: settings.backoff, attemptTimeoutMs: settings.attemptTimeoutMs });
  const startedAt = new Date(clock.now());
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('trust proxy', 'loopback');

  pool.on('redis:down', () => metrics.redisErrors.inc({ operation: 'pool' }));
  pool.on('tokens:lost', () => metrics.tokenStoreLost.inc());
  pool.on('transition', (t) => metrics.transitions.inc({ key_id: t.keyId, transition: t.transition }));

  const bodyLimit = parseByteSize(settings.bodyLimit);
  if (bodyLimit === undefined) throw new Error(`server.bodyLimit: not a size (${String(settings.bodyLimit)}); write bytes, or e.g. 512kb, 4mb`);
  const v1 = createProxy({ pool, dispatcher, metrics, logger, inflight, settings: { ...settings, bodyLimit } });
  const handler = frontListener(v1, app);

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok', uptimeSeconds: Math.round((clock.now() - startedAt.getTime()) / 1000) });
  });

  // O(1) whatever the pool size (a probe per pod every few seconds): Redis answers a PING and this
  // process holds keys to lease; never the pool status
  app.get('/readyz', async (_req, res) => {
    // draining: new requests get 503 shutting_down, so this gateway is not ready for them
    if (inflight.closing) return void res.status(503).json({ status: 'draining', inFlight: inflight.size });
    try {
      const { redis, heldKeys } = await pool.readiness();
      if (!redis.ok) return void res.status(503).json({ status: 'unavailable', redis });
      if (heldKeys === 0) return void res.status(503).json({ status: 'no_keys', redis, keys: 0 });
      res.json({ status: 'ready', redis, keys: heldKeys });
    } catch (e) {
      res.status(503).json({ status: 'unavailable', error: (e as Error).message });
    }
  });

  const ops = opsGuard(settings.statusToken, settings.adminToken, logger);
  app.get('/status', ops, async (_req, res) => {
    try {
      const [st, scheduler, fleet, queue] = await Promise.all([
        pool.status(),
        pool.scheduleStatus().catch(() => null),
        opts.sync?.fleet().catch(() => null),
        opts.queueStatus?.() ?? null,
      ]);
      res.json({
        ...st,
        routes: dispatcher.routes,
        tokens: pool.tokens.storeStatus(),
        scheduler,
        queue,
        ...(opts.sync ? { secrets: { ...opts.sync.status(), fleet } } : {}),
        gateway: { pid: process.pid, startedAt: startedAt.toISOString(), inFlight: inflight.size, version: VERSION },
      });
    } catch (e) {
      logger.warn({ err: (e as Error).message }, 'status failed');
      sendError(res, new HttpError(503, 'Status cannot be read now (Redis?); the gateway log has the details.', 'server_error', 'status_unavailable'));
    }
  });

  // the dashboard's charts: the last 15 minutes per second (shared with the status snapshot)
  app.get('/status/series', ops, async (req, res) => {
    const since = req.query['since'];
    if (since !== undefined && (typeof since !== 'string' || !/^\d{1,12}$/.test(since))) {
      return sendError(res, new HttpError(400, 'since must be a Unix time in whole seconds, e.g. ?since=1765000000', 'invalid_request_error', 'invalid_since'));
    }
    try {
      const series = await pool.series(since === undefined ? {} : { sinceSec: Number(since) });
      if (!series) return sendError(res, new HttpError(503, 'The traffic series cannot be read now (Redis?); the gateway log has the details.', 'server_error', 'status_unavailable'));
      res.json(series);
    } catch (e) {
      logger.warn({ err: (e as Error).message }, 'status series failed');
      sendError(res, new HttpError(503, 'The traffic series cannot be read now (Redis?); the gateway log has the details.', 'server_error', 'status_unavailable'));
    }
  });

  app.get('/metrics', ops, async (_req, res) => {
    res.setHeader('content-type', metrics.registry.contentType);
    res.end(await metrics.scrape());
  });

  app.use('/admin', adminRouter({ pool, adminToken: settings.adminToken, logger, metrics }));

  let page: string | undefined;
  app.get('/dashboard', (_req, res) => {
    page ??= readFileSync(DASHBOARD, 'utf8');
    res.setHeader('content-type', 'text/html; charset=utf-8');
    res.setHeader('cache-control', 'no-cache');
    res.setHeader('content-security-policy', "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'");
    res.end(page);
  });
  app.get('/', (_req, res) => res.redirect('/dashboard'));
  app.get('/favicon.ico', (_req, res) => res.status(204).end());

  app.use((req, res) => sendError(res, unknownUrl(req.method, req.path)));
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const e = err as { type?: string; status?: number; limit?: number };
    if (e?.type === 'entity.too.large' || e?.status === 413) {
      return sendError(res, new HttpError(413, `The request body is larger than this gateway accepts (${e.limit ?? settings.bodyLimit} bytes; server.bodyLimit).`, 'invalid_request_error', 'body_too_large'));
    }
    if (e?.status === 400) return sendError(res, new HttpError(400, 'The request body could not be read.', 'invalid_request_error', 'invalid_body'));
    logger.error({ err, path: req.path }, 'unexpected error');
    sendError(res, new HttpError(500, 'Internal error in the gateway; its log has the details.', 'server_error', 'internal_error'));
  });

  const listen = (port: number, host?: string, onListening?: () => void) => createServer(handler).listen(port, host, onListening);
  return { handler, listen, app, metrics, inflight, dispatcher, startedAt };
}

const VERSION = (JSON.parse(readFileSync(new URL('package.json', packageRoot(import.meta.url)), 'utf8')) as { version: string }).version;
