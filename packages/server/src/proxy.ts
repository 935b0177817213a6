import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Request, Response, Router } from 'express';
import express from 'express';
import type { Logger } from 'pino';
import { NANOS_PER_USD, isPoolExhausted, isRedisUnavailable, isRequestTooLarge, isUnknownModel, type Clock, type KeyPool, type Lease, type Outcome } from '@keypool/core';
import { TimedOut, callController, estimateChat, estimateCompletion, estimateEmbedding, estimateResponse, type Dispatcher, type Estimate, type Priority } from '@keypool/client';
import { HttpError, badRequest, sendError } from './errors.js';
import type { Inflight } from './inflight.js';
import { spliceMembers } from './json-splice.js';
import type { GatewayMetrics } from './metrics.js';
import { SseTap, usageOf, type StreamKind } from './sse.js';
import { UpstreamNetworkError, UpstreamStatusError, classifyUpstream, forward, readBody } from './upstream.js';

/**
 * The OpenAI-compatible proxy: POST /v1/chat/completions, /v1/completions, /v1/embeddings,
 * /v1/responses and GET /v1/models. A request is checked (JSON, shape, gateway token and its
 * limits) before any key is used, then goes through the Dispatcher shared with the pooled client
 * (lease, attempt, failover, release with the real usage). The body goes upstream as the caller
 * sent it; only `model` (a route names the model chosen) and, on streams, `stream_options.
 * include_usage` (the gateway needs the usage; the extra chunk is held back unless asked for) are
 * ever rewritten. Stream bytes are passed on event by event as they arrive.
 */

export interface ProxySettings {
  deadlineMs: number;
  attemptTimeoutMs: number;
  defaultMaxOutputTokens: number;
  bodyLimit: string | number;
}

export interface ProxyDeps {
  pool: KeyPool;
  dispatcher: Dispatcher;
  metrics: GatewayMetrics;
  logger: Logger;
  inflight: Inflight;
  settings: ProxySettings;
  /** The time of the gateway's own decisions (default systemClock). Deadlines handed to the Dispatcher stay on Date.now(), the clock it reads. */
  clock?: Clock;
}

interface Endpoint {
  name: string;
  path: string;
  stream: StreamKind | null;
  estimate: (body: Record<string, unknown>, defaultOut: number) => Estimate;
  /** A problem with the request's shape: [message, param], or null. */
  check: (body: Record<string, unknown>) => [string, string] | null;
  usage: (data: Record<string, any>) => Outcome['usage'];
}

// only whole counts >= 0 are usage: anything else from a provider would throw in the metrics (or poison the accounting)
const chatUsage = (d: Record<string, any>) => usageOf(d.usage?.prompt_tokens, d.usage?.completion_tokens);

const ENDPOINTS: Endpoint[] = [
  {
    name: 'chat.completions',
    path: '/chat/completions',
    stream: 'chat',
    estimate: estimateChat,
    check: (b) => {
      if (!Array.isArray(b.messages) || b.messages.length === 0) return ["'messages' must be a non-empty array of messages", 'messages'];
      const i = b.messages.findIndex((m) => typeof m !== 'object' || m === null || typeof (m as { role?: unknown }).role !== 'string');
      return i >= 0 ? [`'messages[${i}]' must be an object with a string 'role'`, `messages[${i}]`] : null;
    },
    usage: chatUsage,
  },
  {
    name: 'completions',
    path: '/completions',
    stream: 'chat',
    estimate: estimateCompletion,
    check: (b) => (typeof b.prompt === 'string' || Array.isArray(b.prompt) ? null : ["'prompt' must be a string or an array", 'prompt']),
    usage: chatUsage,
  },
  {
    name: 'embeddings',
    path: '/embeddings',
    stream: null,
    estimate: (b) => estimateEmbedding(b),
    check: (b) => {
      if (b.stream) return ['embeddings cannot stream', 'stream'];
      if (typeof b.input === 'string' ? b.input.length === 0 : !Array.isArray(b.input) || b.input.length === 0) return ["'input' must be a non-empty string or array", 'input'];
      return null;
    },
    usage: (d) => {
      const u = usageOf(d.usage?.prompt_tokens, undefined);
      return u && { ...u, completionTokens: 0 };
    },
  },
  {
    name: 'responses',
    path: '/responses',
    stream: 'responses',
    estimate: estimateResponse,
    check: (b) => {
      if (b.input === undefined && b.previous_response_id === undefined && b.prompt === undefined) return ["'input' is required", 'input'];
      if (b.input !== undefined && typeof b.input !== 'string' && !Array.isArray(b.input)) return ["'input' must be a string or an array", 'input'];
      return null;
    },
    usage: (d) => usageOf(d.usage?.input_tokens, d.usage?.output_tokens),
  },
];

/** The caller went away: not the key's fault, nothing to answer. */
class ClientClosed extends Error {
  constructor() {
    super('the client closed the connection');
  }
}

/** The gateway is shutting down and the drain period is over. */
export class ShuttingDown extends Error {
  constructor() {
    super('the gateway is shutting down');
  }
}

/** The call ran out of time without an answer from the provider. */
class GatewayTimeout extends Error {}

const PRIORITIES = new Set<Priority>(['critical', 'normal', 'low']);
/** Request headers a caller may pass on to the provider. */
const PASS_HEADERS = ['openai-beta'];
/** Upstream response headers passed back to the caller. */
const RETURN_HEADERS = ['openai-processing-ms', 'openai-version', 'x-request-id'];

function bearer(req: Request): string {
  const h = req.headers.authorization;
  const m = typeof h === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(h) : null;
  if (!m) throw new HttpError(401, "Missing gateway token: send 'Authorization: Bearer <gateway token>' (the OpenAI SDKs do this with apiKey).", 'authentication_error', 'missing_api_key');
  return m[1]!;
}

function parseBody(req: Request): Record<string, unknown> {
  const raw = req.body as Buffer | undefined;
  if (!Buffer.isBuffer(raw) || raw.length === 0) throw badRequest('The request has no body: send a JSON object (Content-Type: application/json).');
  let body: unknown;
  try {
    body = JSON.parse(raw.toString('utf8'));
  } catch (e) {
    throw badRequest(`We could not parse the JSON body of your request (${(e as Error).message}). Send a JSON object.`, null, 'invalid_json');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('The request body must be a JSON object.', null, 'invalid_json');
  return body as Record<string, unknown>;
}

/** The largest cost an estimate may have: the token scripts count nano-dollars in exact integers. */
const MAX_ESTIMATE_USD = Math.floor(Number.MAX_SAFE_INTEGER / NANOS_PER_USD);

function usd(n: number): string {
  return n.toFixed(8).replace(/\.?0+$/, '') || '0';
}

export function proxyRouter(deps: ProxyDeps): Router {
  const { pool, dispatcher, metrics, logger, inflight, settings } = deps;
  const log = logger.child({ component: 'proxy' });
  const router = express.Router();
  const raw = express.raw({ type: () => true, limit: settings.bodyLimit });

  const costOf = (model: string, u: Outcome['usage']): number => {
    const p = pool.priceOf(model);
    if (!p || !u) return 0;
    return ((u.promptTokens ?? 0) * p.input + (u.completionTokens ?? 0) * p.output) / 1e6;
  };

  for (const ep of ENDPOINTS) {
    router.post(ep.path, raw, (req, res) => void handle(ep, req, res));
  }

  router.get('/models', async (req, res) => {
    try {
      const who = await pool.tokens.verify(bearer(req));
      if (!who) throw new HttpError(401, 'Incorrect gateway token provided.', 'authentication_error', 'invalid_api_key');
      const owners = new Map<string, string>();
      for (const k of pool.knownKeys()) for (const m of k.models) if (!owners.has(m)) owners.set(m, k.provider);
      for (const r of Object.keys(dispatcher.routes)) owners.set(r, 'keypool-route');
      const allowed = (id: string) => who.models.length === 0 || who.models.includes(id);
      const data = [...owners].filter(([id]) => allowed(id)).map(([id, owned_by]) => ({ id, object: 'model', created: 0, owned_by }));
      res.json({ object: 'list', data });
    } catch (e) {
      sendError(res, toHttpError(e, log));
    }
  });

  async function handle(ep: Endpoint, req: Request, res: Response): Promise<void> {
    const t0 = performance.now();
    const requestId = randomUUID();
    res.setHeader('x-keypool-request-id', requestId);
    const labels = { endpoint: ep.name, route: '', model: '', status: '' };
    let upstreamMs = 0;
    const call = callController(undefined, settings.deadlineMs);
    const abort = call.controller;
    const onClose = () => {
      if (!res.writableFinished) abort.abort(new ClientClosed());
    };
    res.on('close', onClose);
    const end = inflight.begin((why) => abort.abort(why));
    let admission: { id: string; reservation: string } | undefined;
    /** What the pool charged the keys for attempts released as aborted (the caller left, its own short deadline, a shutdown). */
    const aborted: number[] = [];
    /** An attempt went to a provider: the token's request counts (its rpm holds for failing calls too). */
    let sent = false;
    let settled = false;
    const settle = (costUsd: number, refundRequest: boolean) => {
      if (!admission || settled) return;
      settled = true;
      const a = admission;
      inflight.track(pool.tokens.settle(a.id, a.reservation, costUsd, { refundRequest }).catch((e) => log.warn({ err: (e as Error).message, token: a.id }, 'could not settle the gateway token spend')));
    };
    const finish = (status: number) => {
      labels.status = String(status);
      metrics.requests.inc(labels);
      const total = performance.now() - t0;
      metrics.duration.observe({ endpoint: ep.name }, total / 1000);
      metrics.overhead.observe({ endpoint: ep.name }, Math.max(0, total - upstreamMs) / 1000);
      call.done();
      res.off('close', onClose);
      end();
    };
    /**
     * Release the lease with the outcome (in the background: the answer is out already), then
     * charge the token what the pool charged the key (the estimate for a stream that broke before
     * its usage came, as core does), or the usage priced here when Redis could not say.
     */
    function releaseAndSettle(lease: Lease, model: string, outcome: Outcome, localCost: number) {
      const usage = outcome.usage;
      if (usage?.promptTokens) metrics.tokens.inc({ key_id: lease.keyId, model, kind: 'prompt' }, usage.promptTokens);
      if (usage?.completionTokens) metrics.tokens.inc({ key_id: lease.keyId, model, kind: 'completion' }, usage.completionTokens);
      // the token pays what the key is charged, settled in the release's own Redis call
      const a = settled ? undefined : admission;
      if (a) settled = true;
      inflight.track(
        lease.release(outcome, a ? { settle: { admission: a } } : undefined).then(
          (r) => {
            const cost = r.released ? r.costUsd : localCost;
            if (cost > 0) metrics.spend.inc({ key_id: lease.keyId, model }, cost);
          },
          () => {
            if (!a) return;
            settled = false;
            settle(localCost, false);
          },
        ),
      );
    }
    try {
      const token = bearer(req);
      const body = parseBody(req);
      if (typeof body.model !== 'string' || body.model.length === 0) throw badRequest("'model' is required: a model name or a route name (GET /v1/models lists them).", 'model');
      const name = body.model;
      /** A refused gateway token: counted, and the error its caller reads. */
      const refused = (r: { reason: string; retryAfterMs: number | null }) => {
        metrics.tokenRejections.inc({ reason: r.reason });
        return tokenRefusal(r.reason, name, r.retryAfterMs);
      };
      // a name the gateway serves, else '': callers' strings must not grow the metric series
      if (dispatcher.route(name) || pool.servesModel(name)) labels.model = name;
      if (body.stream !== undefined && typeof body.stream !== 'boolean') throw badRequest("'stream' must be true or false", 'stream');
      // spread into the rewritten member, a string or an array would go upstream as {"0":...}
      const so = body.stream_options;
      if (so !== undefined && so !== null && (typeof so !== 'object' || Array.isArray(so))) throw badRequest('\'stream_options\' must be an object, e.g. {"include_usage": true}', 'stream_options');
      const problem = ep.check(body);
      if (problem) throw badRequest(problem[0], problem[1]);
      const stream = body.stream === true && ep.stream !== null;
      const priority = (req.headers['x-keypool-priority'] ?? 'normal') as Priority;
      if (!PRIORITIES.has(priority)) throw badRequest(`x-keypool-priority must be critical, normal or low (got '${String(priority).slice(0, 40)}')`, null, 'invalid_priority');
      let deadlineMs = settings.deadlineMs;
      const asked = req.headers['x-keypool-timeout-ms'];
      if (asked !== undefined) {
        const n = Number(asked);
        if (!Number.isInteger(n) || n < 1 || n > settings.deadlineMs) throw badRequest(`x-keypool-timeout-ms must be an integer from 1 to ${settings.deadlineMs}`, null, 'invalid_timeout');
        deadlineMs = n;
      }
      if (dispatcher.route(name)) labels.route = name;
      let est: Estimate;
      try {
        est = ep.estimate(body, settings.defaultMaxOutputTokens);
      } catch {
        // the estimate walks the body recursively: valid JSON nested thousands deep overflows the stack
        throw badRequest('The request body is nested too deeply to be read.', null, 'invalid_body');
      }
      const estUsd = dispatcher.estimateCostUsd(name, est);
      if (!Number.isSafeInteger(est.total) || !(estUsd <= MAX_ESTIMATE_USD)) {
        throw badRequest('The request asks for more tokens than any key can serve (max_tokens, max_completion_tokens or max_output_tokens, times n); ask for fewer.', null, 'request_too_large');
      }

      if (!dispatcher.plan(name, 'critical').models.some((m) => pool.servesModel(m))) {
        // no key to admit the token with: admitted alone, so a bad token still reads 401, not 404
        const adm = await pool.tokens.admit(token, name, estUsd);
        if (!adm.ok) throw refused(adm);
        admission = adm;
        throw new HttpError(404, `The model '${name}' does not exist or no key of this gateway serves it (GET /v1/models lists what is served).`, 'invalid_request_error', 'model_not_found', 'model');
      }

      const wantsUsage = Boolean((body.stream_options as { include_usage?: unknown } | undefined)?.include_usage);
      const inject = stream && ep.stream === 'chat' && !wantsUsage;
      const raw = req.body as Buffer;
      // only these members change; every other byte goes as the caller sent it
      const streamOptions = inject ? JSON.stringify({ ...(body.stream_options as object), include_usage: true }) : undefined;
      const bodyFor = (model: string): Buffer =>
        model === name && !inject ? raw : spliceMembers(raw, { ...(model !== name ? { model: JSON.stringify(model) } : {}), ...(streamOptions ? { stream_options: streamOptions } : {}) });
      const passHeaders: Record<string, string> = {};
      for (const h of PASS_HEADERS) if (typeof req.headers[h] === 'string') passHeaders[h] = req.headers[h] as string;
      if (stream) passHeaders.accept = 'text/event-stream';

      const a0 = performance.now();
      const now = Date.now();
      let d;
      try {
        d = await dispatcher.dispatch({
          name,
          est,
          priority,
          // the token is admitted in the first acquire's Redis call (a refusal touches no key)
          admit: { token, name, estimatedCostUsd: estUsd },
          admitted: (a) => (admission = a),
          refused,
          signal: abort.signal,
          deadline: now + deadlineMs,
          keyDeadline: now + settings.deadlineMs,
          call: async (lease, signal, model) => {
            const s = performance.now();
            sent = true;
            try {
              const up = await forward({ baseURL: lease.baseURL, secret: lease.secret, path: ep.path, method: 'POST', body: bodyFor(model), headers: passHeaders, signal });
              if (stream) return { up, data: null };
              try {
                return { up, data: await readBody(up) };
              } catch (e) {
                if (signal.aborted) throw signal.reason;
                throw new UpstreamNetworkError('ECONNRESET', { cause: e });
              }
            } catch (e) {
              const f = classifyUpstream(e);
              metrics.upstream.inc({ key_id: lease.keyId, key_name: lease.name ?? '', status: f.kind === 'status' ? String(f.status) : signal.reason instanceof TimedOut ? 'timeout' : f.kind });
              throw e;
            } finally {
              upstreamMs += performance.now() - s;
            }
          },
          classify: classifyUpstream,
          timeoutError: (message) => new GatewayTimeout(message),
          released: (l, outcome, r) => {
            const cost = r?.costUsd ?? 0;
            if (cost > 0) metrics.spend.inc({ key_id: l.keyId, model: l.model }, cost);
            if (outcome.error === 'aborted') aborted.push(r ? cost : l.estimatedCostUsd);
          },
        });
      } finally {
        metrics.acquire.observe({ result: d ? 'ok' : 'failed' }, (performance.now() - a0 - upstreamMs) / 1000);
      }
      const { lease, model, value } = d;
      // a stream's result is known when it ends (200, broken_stream, timeout, aborted): counted then
      if (!stream) metrics.upstream.inc({ key_id: lease.keyId, key_name: lease.name ?? '', status: String(value.up.statusCode) });
      labels.model = model;
      res.setHeader('x-keypool-model', model);
      if (labels.route) res.setHeader('x-keypool-route', labels.route);
      res.setHeader('x-keypool-key-id', lease.keyId);
      res.setHeader('x-keypool-attempts', String(d.failovers + 1));
      for (const h of RETURN_HEADERS) {
        const v = value.up.headers[h];
        if (typeof v === 'string') res.setHeader(h === 'x-request-id' ? 'x-upstream-request-id' : h, v);
      }

      if (!stream) {
        const data = value.data!;
        let usage: Outcome['usage'];
        try {
          usage = ep.usage(JSON.parse(data.toString('utf8')) as Record<string, any>);
        } catch {
          usage = undefined;
        }
        const cost = costOf(model, usage);
        res.setHeader('x-keypool-cost-usd', usd(cost));
        res.setHeader('content-type', value.up.headers['content-type'] ?? 'application/json');
        res.status(value.up.statusCode ?? 200).end(data);
        releaseAndSettle(lease, model, { status: value.up.statusCode ?? 200, latencyMs: Date.now() - d.started, usage, headers: value.up.headers as Record<string, string> }, cost);
        finish(value.up.statusCode ?? 200);
        return;
      }

      // streaming: the deadline is over, an idle timeout takes over
      call.disarm();
      const ended = await pipeStream(ep, res, value.up, lease, model, d.started, abort, !wantsUsage && inject, (ms) => (upstreamMs += ms), (outcome, cost) => releaseAndSettle(lease, model, outcome, cost));
      // the status went out as 200; the metric tells how the stream really ended
      finish(ended);
    } catch (e) {
      const why = abort.signal.reason;
      // attempts the caller cut short cost the keys their estimate: the token pays that, as for a dropped stream
      const charged = why instanceof ShuttingDown ? [] : aborted;
      const chargedUsd = charged.reduce((a, b) => a + b, 0);
      if (why instanceof ClientClosed) {
        settle(chargedUsd, !sent);
        labels.status = '499';
        log.debug({ requestId }, 'client closed the connection before the answer');
        finish(499);
        return;
      }
      if (isRedisUnavailable(e)) metrics.redisErrors.inc({ operation: 'proxy' });
      const err = toHttpError(why instanceof ShuttingDown ? why : e, log, requestId);
      // nothing went to a provider (no key could serve, a refusal before): the token gets its request back
      settle(chargedUsd, !sent);
      sendError(res, err);
      finish(err.status);
    }
  }


  /**
   * Pass a provider's event stream on, event by event, with backpressure (a slow reader pauses the
   * upstream read). An upstream idle for attemptTimeoutMs is cut (a timeout of the key); an end
   * without a finish counts as a broken stream and the caller gets an error event (the status was
   * sent already). The lease's heartbeat (started by the Dispatcher) keeps it however long the
   * stream runs; it is released with the usage.
   */
  function pipeStream(
    ep: Endpoint,
    res: Response,
    up: IncomingMessage,
    lease: Lease,
    model: string,
    started: number,
    abort: AbortController,
    dropUsage: boolean,
    addUpstream: (ms: number) => void,
    done: (outcome: Outcome, cost: number) => void,
  ): Promise<number> {
    const tap = new SseTap(ep.stream!, dropUsage);
    const s0 = performance.now();
    const est = lease.estimatedCostUsd;
    res.status(200);
    res.setHeader('content-type', up.headers['content-type'] ?? 'text/event-stream');
    res.setHeader('cache-control', 'no-cache');
    res.setHeader('x-accel-buffering', 'no');
    res.setHeader('x-keypool-estimated-cost-usd', usd(est));
    res.flushHeaders();
    return new Promise<number>((resolve) => {
      let over = false;
      let idle: NodeJS.Timeout | undefined;
      /** Waiting for the caller to read (backpressure), not for the provider. */
      let paused = false;
      const arm = () => {
        clearTimeout(idle);
        idle = setTimeout(() => abort.abort(new TimedOut('idle', settings.attemptTimeoutMs)), settings.attemptTimeoutMs);
      };
      const close = (o: Outcome, brokenMessage?: string, status = 200, code = 'upstream_stream_broken') => {
        if (over) return;
        over = true;
        clearTimeout(idle);
        abort.signal.removeEventListener('abort', onAbort);
        addUpstream(performance.now() - s0);
        metrics.upstream.inc({ key_id: lease.keyId, key_name: lease.name ?? '', status: o.error ?? String(up.statusCode ?? 200) });
        done({ ...o, ...(tap.usage ? { usage: tap.usage } : {}), latencyMs: Date.now() - started, headers: up.headers as Record<string, string> }, costOf(model, tap.usage));
        if (brokenMessage && !res.destroyed) {
          const error = { message: brokenMessage, type: 'api_error', param: null, code };
          // chat streams carry errors as data; the Responses API as a typed `error` event (with `error` too, which the SDKs raise)
          res.write(ep.stream === 'responses' ? `event: error\ndata: ${JSON.stringify({ ...error, type: 'error', error })}\n\n` : `data: ${JSON.stringify({ error })}\n\n`);
        }
        if (!res.destroyed) res.end();
        if (!up.destroyed) up.destroy();
        resolve(status);
      };
      const onAbort = () => {
        const why = abort.signal.reason;
        if (why instanceof ClientClosed) return close({ error: 'aborted' }, undefined, 499);
        if (why instanceof ShuttingDown) return close({ error: 'aborted' }, 'the gateway is shutting down; the stream was cut', 503, 'shutting_down');
        if (paused) {
          // the caller stopped reading: not the key's doing (as in the pooled client), and a caller
          // that does not read gets no error event either: its socket is let go
          res.destroy();
          return close({ error: 'aborted' }, undefined, 504);
        }
        return close({ error: 'timeout' }, `the provider sent nothing for ${settings.attemptTimeoutMs} ms; the stream was cut`, 504, 'upstream_timeout');
      };
      abort.signal.addEventListener('abort', onAbort, { once: true });
      if (abort.signal.aborted) return onAbort();
      arm();
      up.on('data', (chunk: Buffer) => {
        arm();
        const out = tap.push(chunk);
        if (out && !res.write(out)) {
          up.pause();
          paused = true;
          res.once('drain', () => {
            paused = false;
            up.resume();
          });
        }
      });
      up.on('end', () => {
        const last = tap.flush();
        if (last) res.write(last);
        if (tap.finished) close({ status: 200 });
        else close({ error: 'broken_stream' }, 'the provider ended the stream before it finished', 502);
      });
      up.on('error', () => {
        if (!abort.signal.aborted) close({ error: 'broken_stream' }, 'the provider broke the stream', 502);
      });
      up.on('close', () => {
        if (!abort.signal.aborted && !up.complete) close({ error: 'broken_stream' }, 'the provider broke the stream', 502);
      });
    });
  }

  return router;
}

function tokenRefusal(reason: string, model: string, retryAfterMs: number | null): HttpError {
  const after = retryAfterMs === null ? undefined : Math.max(1, Math.ceil(retryAfterMs / 1000));
  switch (reason) {
    case 'model_not_allowed':
      return new HttpError(403, `This gateway token may not use '${model}'.`, 'permission_error', 'model_not_allowed', 'model');
    case 'rate_limited':
      return new HttpError(429, `Rate limit of this gateway token reached; retry in ${after ?? 1} s.`, 'rate_limit_error', 'token_rate_limited', null, after ?? 1);
    case 'budget_exhausted':
      return new HttpError(429, 'This gateway token has spent its budget for the period.', 'insufficient_quota', 'token_budget_exhausted', null, after);
    case 'over_budget':
      // no Retry-After: the request does not fit the whole budget, so no wait can help
      return new HttpError(400, "This request's estimated cost is more than this gateway token's whole budget; ask for fewer tokens (max_tokens, max_completion_tokens or max_output_tokens).", 'invalid_request_error', 'request_too_large');
    case 'revoked':
      return new HttpError(401, 'This gateway token has been revoked.', 'authentication_error', 'token_revoked');
    default:
      return new HttpError(401, 'Incorrect gateway token provided. Ask your keypool operator for a token (keypool tokens create).', 'authentication_error', 'invalid_api_key');
  }
}

/** Every failure as the OpenAI-shaped error a caller reads; faults are logged with the request id. */
export function toHttpError(e: unknown, log: Logger, requestId?: string): HttpError {
  if (e instanceof HttpError) return e;
  if (isPoolExhausted(e) && e.retryAfterMs === null) {
    // waiting cannot help (keys revoked, disabled, out of their whole budget): not a 429, which SDKs retry as if it could
    const why = e.reason === 'budget' ? 'every key that serves it has spent its budget' : 'every key that serves it is revoked, disabled or gone';
    return new HttpError(503, `No key can serve '${e.model}' and waiting will not help (${e.reason}: ${why}); the operators see the key states in /status.`, 'server_error', 'no_usable_key');
  }
  if (isPoolExhausted(e)) {
    const after = e.retryAfterMs === null ? undefined : Math.max(1, Math.ceil(e.retryAfterMs / 1000));
    return new HttpError(429, `No key can serve '${e.model}' within this request's deadline (${e.reason}).${after ? ` Retry in ${after} s.` : ''}`, 'rate_limit_error', 'pool_exhausted', null, after);
  }
  if (isUnknownModel(e)) return new HttpError(404, `The model '${(e as { model?: string }).model ?? ''}' is not served by this gateway (GET /v1/models lists what is served).`, 'invalid_request_error', 'model_not_found', 'model');
  if (isRequestTooLarge(e)) return new HttpError(400, (e as Error).message, 'invalid_request_error', 'request_too_large');
  if (isRedisUnavailable(e)) return new HttpError(503, 'The key pool is unavailable (its Redis cannot be reached) and the gateway is set to fail closed. Retry later.', 'server_error', 'pool_unavailable', null, 1);
  if (e instanceof ShuttingDown) return new HttpError(503, 'The gateway is shutting down; retry on another instance.', 'server_error', 'shutting_down', null, 1);
  if (e instanceof GatewayTimeout) return new HttpError(504, `The provider did not answer in time (${e.message}).`, 'api_error', 'upstream_timeout');
  if (e instanceof UpstreamNetworkError) return new HttpError(502, `The provider could not be reached (${e.code}).`, 'api_error', 'upstream_unreachable');
  if (e instanceof UpstreamStatusError) {
    // the provider refused our key(s): the caller's request and token are fine, our keys are not
    if (e.status === 401 || e.status === 403) return new HttpError(502, `The provider refused the keys tried (${e.status}); operators have been told through the key state.`, 'api_error', 'upstream_auth_failed');
    return new PassThroughError(e);
  }
  if (e instanceof TimedOut) return new HttpError(504, `The request deadline passed (${e.message}).`, 'api_error', 'deadline_exceeded');
  log.error({ err: e, requestId }, 'unexpected error in the proxy');
  return new HttpError(500, `Internal error in the gateway (request id ${requestId ?? 'unknown'}); the gateway log has the details.`, 'server_error', 'internal_error');
}

/** A provider's own error (a 400 about a parameter, a 429 after every key was tried...), passed on as it came. */
export class PassThroughError extends HttpError {
  constructor(readonly upstream: UpstreamStatusError) {
    const ra = upstream.headers['retry-after'];
    const after = typeof ra === 'string' && /^\d+$/.test(ra) ? Number(ra) : undefined;
    const ct = upstream.headers['content-type'];
    super(upstream.status, upstream.message, upstream.status === 429 ? 'rate_limit_error' : 'invalid_request_error', null, null, after, {
      body: upstream.body,
      contentType: typeof ct === 'string' ? ct : 'application/json',
    });
  }
}
