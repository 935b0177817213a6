import { createHash, timingSafeEqual } from 'node:crypto';
import express, { type NextFunction, type Request, type RequestHandler, type Response, type Router } from 'express';
import type { Logger } from 'pino';
import { isConfigError, isInvalidArgument, isKeyNotFound, isRedisUnavailable, type KeyChange, type KeyPool } from '@keypool/core';
import { HttpError, badRequest, sendError } from './errors.js';
import type { GatewayMetrics } from './metrics.js';

/**
 * The admin API, behind the admin token (compared in constant time): key actions (disable,
 * enable, drain, reset the breaker, reset the budget, change limits, remove) and gateway tokens
 * (create, list, revoke). Every action is logged with who asked (the `x-keypool-actor` header,
 * e.g. the CLI's OS user, and the address), what, and on what; never a secret, never a token.
 */

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Same length digests, compared in constant time: the token's length leaks nothing either. */
export function sameSecret(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected));
}

const BEARER = /^Bearer\s+(\S+)\s*$/i;

/**
 * Guard of the ops views (/status, /metrics, the dashboard's data): open when no status token is
 * set, as before; else the status token or the admin token (both compared, in constant time).
 */
export function opsGuard(statusToken: string | undefined, adminToken: string | undefined, logger: Logger): RequestHandler {
  const log = logger.child({ component: 'ops-auth' });
  return (req, res, next) => {
    if (!statusToken) return next();
    const given = BEARER.exec(req.headers.authorization ?? '')?.[1];
    const okStatus = given !== undefined && sameSecret(given, statusToken);
    const okAdmin = given !== undefined && adminToken !== undefined && sameSecret(given, adminToken);
    if (okStatus || okAdmin) return next();
    log.warn({ ip: req.ip, path: req.path }, 'status request refused: bad or missing status token');
    res.setHeader('www-authenticate', 'Bearer realm="keypool"');
    sendError(res, new HttpError(401, "Missing or wrong status token: send 'Authorization: Bearer <server.statusToken or the admin token>'.", 'authentication_error', 'invalid_status_token'));
  };
}

const KEY_ACTIONS = {
  disable: (p: KeyPool, id: string) => p.disableKey(id),
  enable: (p: KeyPool, id: string) => p.enableKey(id),
  drain: (p: KeyPool, id: string) => p.drainKey(id),
  retire: (p: KeyPool, id: string) => p.retireKey(id),
  reset: (p: KeyPool, id: string) => p.resetKey(id),
  'reset-budget': (p: KeyPool, id: string) => p.resetBudget(id),
} as const;

function actorOf(req: Request): string {
  const a = req.headers['x-keypool-actor'];
  return typeof a === 'string' && a ? a.replace(/[^\w.@:-]/g, '?').slice(0, 64) : 'admin';
}

export function adminRouter(opts: { pool: KeyPool; adminToken: string | undefined; logger: Logger; metrics: GatewayMetrics }): Router {
  const { pool, adminToken, metrics } = opts;
  const log = opts.logger.child({ component: 'admin' });
  const router = express.Router();

  router.use((req, res, next) => {
    if (!adminToken) return sendError(res, new HttpError(403, 'The admin API is disabled: set server.adminToken in the config file or KEYPOOL_ADMIN_TOKEN (24 characters or more).', 'permission_error', 'admin_disabled'));
    const m = BEARER.exec(req.headers.authorization ?? '');
    if (!m || !sameSecret(m[1]!, adminToken)) {
      log.warn({ ip: req.ip, method: req.method, path: req.path }, 'admin request refused: bad or missing admin token');
      return sendError(res, new HttpError(401, "Missing or wrong admin token: send 'Authorization: Bearer <admin token>'.", 'authentication_error', 'invalid_admin_token'));
    }
    next();
  });
  router.use(express.json({ limit: '64kb' }));

  /** Run an admin action: logged, counted, errors in the OpenAI shape. */
  const act = (action: string, fn: (req: Request) => Promise<{ status?: number; body: unknown; target?: string; changes?: KeyChange[] }>) => async (req: Request, res: Response) => {
    const target = String(req.params.id ?? '');
    try {
      const r = await fn(req);
      metrics.adminActions.inc({ action });
      const on = r.target ?? target;
      const changed = r.changes ? { changes: Object.fromEntries(r.changes.map((c) => [c.field, { from: c.from ?? null, to: c.to ?? null }])) } : {};
      if (action !== 'list-keys' && action !== 'list-tokens') log.info({ actor: actorOf(req), ip: req.ip, action, target: on, ...changed }, `admin: ${action}${on ? ` ${on}` : ''}${r.changes ? ` ${changesText(r.changes)}` : ''}`);
      res.status(r.status ?? 200).json(r.body);
    } catch (e) {
      log.warn({ actor: actorOf(req), ip: req.ip, action, target, err: (e as Error).message }, `admin: ${action} failed`);
      sendError(res, adminError(e, target));
    }
  };

  router.get('/keys', act('list-keys', async () => ({ body: { keys: (await pool.status()).keys } })));
  for (const [name, fn] of Object.entries(KEY_ACTIONS)) {
    router.post(`/keys/:id/${name}`, act(`key-${name}`, async (req) => ({ body: { id: req.params.id, ...(await fn(pool, req.params.id as string)) } })));
  }
  router.delete('/keys/:id', act('key-remove', async (req) => ({ body: { id: req.params.id, ...(await pool.removeKey(req.params.id as string)) } })));
  router.patch(
    '/keys/:id',
    act('key-update', async (req) => {
      if (typeof req.body !== 'object' || req.body === null || Array.isArray(req.body)) throw badRequest('send the settings to change as a JSON object, e.g. {"rpm": 500}');
      const changes = await pool.updateKey(req.params.id as string, req.body);
      const key = (await pool.status()).keys.find((k) => k.id === req.params.id);
      return { body: { id: req.params.id, changes, key }, changes };
    }),
  );

  router.get('/tokens', act('list-tokens', async () => ({ body: { tokens: await pool.tokens.list() } })));
  router.post(
    '/tokens',
    act('token-create', async (req) => {
      const { token, info } = await pool.tokens.create(req.body ?? {});
      // the token is shown once, here; Redis keeps only its hash
      return { status: 201, body: { token, ...info }, target: info.id };
    }),
  );
  router.delete(
    '/tokens/:id',
    act('token-revoke', async (req) => {
      if (!(await pool.tokens.revoke(req.params.id as string))) throw new HttpError(404, `No gateway token with id '${req.params.id}'.`, 'not_found_error', 'token_not_found');
      return { body: { id: req.params.id, revoked: true } };
    }),
  );

  router.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    sendError(res, adminError(err, ''));
  });
  return router;
}

/** `rpm 500->300 models a,b->a`: each setting an update changed (limits and labels; a key's settings hold no secret). */
export function changesText(changes: readonly KeyChange[]): string {
  if (changes.length === 0) return '(no change)';
  const show = (v: unknown): string => {
    if (v === undefined || v === null) return '-';
    if (Array.isArray(v)) return v.join(',');
    if (typeof v === 'object') {
      const b = v as { usd?: number; period?: string };
      return b.usd !== undefined ? `$${b.usd}/${b.period}` : JSON.stringify(v);
    }
    return typeof v === 'string' ? JSON.stringify(v) : String(v);
  };
  return changes.map((c) => `${c.field} ${show(c.from)}->${show(c.to)}`).join(' ');
}

function adminError(e: unknown, target: string): HttpError {
  if (e instanceof HttpError) return e;
  if (isKeyNotFound(e)) return new HttpError(404, `No key with id '${target}' in the pool (keypool keys list shows the ids).`, 'not_found_error', 'key_not_found');
  if (isConfigError(e)) return new HttpError(400, e.message, 'invalid_request_error', 'invalid_settings');
  if (isInvalidArgument(e)) return new HttpError(400, (e as Error).message, 'invalid_request_error', 'invalid_argument');
  if (isRedisUnavailable(e)) return new HttpError(503, 'Redis cannot be reached; the action was not done. Retry when it is back.', 'server_error', 'pool_unavailable', null, 1);
  const status = (e as { status?: number; type?: string }).status;
  if (status === 400 || (e as { type?: string }).type === 'entity.parse.failed') return badRequest('The body is not valid JSON.');
  if (status === 413) return new HttpError(413, 'The body is too large.', 'invalid_request_error', 'body_too_large');
  return new HttpError(500, 'Internal error in the admin API; the gateway log has the details.', 'server_error', 'internal_error');
}
