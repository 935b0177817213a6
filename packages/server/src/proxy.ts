import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Readable, Transform } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';
import type { Logger } from 'pino';
import { NANOS_PER_USD, isRedisUnavailable, type KeyPool, type Lease, type Outcome } from '@keypool/core';
import { TimedOut, callController, estimateChat, estimateCompletion, estimateEmbedding, estimateResponse, type CallAbort, type CallControl, type CallSignal, type Dispatcher, type Estimate, type Priority } from '@keypool/client';
import { ClientClosed, GatewayTimeout, HttpError, ShuttingDown, badRequest, sendError, shuttingDown, toHttpError, tokenRefusal, unknownUrl } from './errors.js';
import type { Inflight } from './inflight.js';
import { memberOf, spliceMembers } from './json-splice.js';
import { boundObserver, type GatewayMetrics } from './metrics.js';
import { SseTap, usageOf, type StreamKind } from './sse.js';
import { UpstreamNetworkError, classifyUpstream, forward, readBody } from './upstream.js';

/**
 * The OpenAI-compatible proxy on plain node:http (no express on this path): POST
 * /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses and GET /v1/models. A
 * request's body is read once into a Buffer (bounded by bodyLimit) and parsed once; it is checked
 * (JSON, shape, gateway token and its limits) before any key is used, then goes through the
 * Dispatcher shared with the pooled client (lease, attempt, failover, release with the real usage).
 * The body goes upstream as the caller sent it; only `model` (a route names the model chosen) and,
 * on streams, `stream_options.include_usage` (the gateway needs the usage; the extra chunk is held
 * back unless asked for) are ever rewritten. Stream bytes are passed on event by event as they
 * arrive.
 *
 * The path: {@link createProxy} (the /v1 request listener) -> {@link handle} (one POST) ->
 * {@link pipeStream} (a stream's bytes) or the whole answer; {@link listModels} for GET /v1/models.
 */

export interface ProxySettings {
  deadlineMs: number;
  attemptTimeoutMs: number;
  defaultMaxOutputTokens: number;
  /** Bytes (the config's server.bodyLimit, parsed). */
  bodyLimit: number;
}

export interface ProxyDeps {
  pool: KeyPool;
  dispatcher: Dispatcher;
  metrics: GatewayMetrics;
  logger: Logger;
  inflight: Inflight;
  settings: ProxySettings;
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
/** By path under /v1, lower case (express matched paths without regard to case). */
const BY_PATH = new Map(ENDPOINTS.map((ep) => [ep.path, ep]));

const PRIORITIES = new Set<Priority>(['critical', 'normal', 'low']);
/** Request headers a caller may pass on to the provider. */
const PASS_HEADERS = ['openai-beta'];
/** Upstream response headers passed back to the caller. */
const RETURN_HEADERS = ['openai-processing-ms', 'openai-version', 'x-request-id'];
/** The largest cost an estimate may have: the token scripts count nano-dollars in exact integers. */
const MAX_ESTIMATE_USD = Math.floor(Number.MAX_SAFE_INTEGER / NANOS_PER_USD);

/** What every request of one gateway shares: its parts, and the metric children bound once per endpoint. */
interface ProxyContext extends Required<Omit<ProxyDeps, 'logger'>> {
  log: Logger;
  duration: Map<string, { observe(v: number): void }>;
  overhead: Map<string, { observe(v: number): void }>;
  acquired: { observe(v: number): void };
  acquireFailed: { observe(v: number): void };
}

/**
 * The /v1 request listener (node:http's (req, res)): dispatches by method and path, refuses new
 * requests while draining. `req.url` starts with /v1 (the caller routed it; see front.ts).
 */
export function createProxy(deps: ProxyDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const ctx: ProxyContext = {
    ...deps,
    log: deps.logger.child({ component: 'proxy' }),
    duration: new Map(ENDPOINTS.map((ep) => [ep.name, boundObserver(deps.metrics.duration, { endpoint: ep.name })])),
    overhead: new Map(ENDPOINTS.map((ep) => [ep.name, boundObserver(deps.metrics.overhead, { endpoint: ep.name })])),
    acquired: boundObserver(deps.metrics.acquire, { result: 'ok' }),
    acquireFailed: boundObserver(deps.metrics.acquire, { result: 'failed' }),
  };
  return (req, res) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    if (ctx.inflight.closing) {
      // draining: a keep-alive connection may still bring a request; send it elsewhere
      res.setHeader('connection', 'close');
      return sendError(res, shuttingDown());
    }
    // express routed without regard to case or a trailing slash: so does this
    let sub = path.slice(3).toLowerCase();
    if (sub.length > 1 && sub.endsWith('/')) sub = sub.slice(0, -1);
    if (req.method === 'POST') {
      const ep = BY_PATH.get(sub);
      if (ep) return void handle(ctx, ep, req, res);
    } else if ((req.method === 'GET' || req.method === 'HEAD') && sub === '/models') {
      return void listModels(ctx, req, res);
    }
    sendError(res, unknownUrl(req.method, path));
  };
}

function bearer(req: IncomingMessage): string {
  const h = req.headers.authorization;
  const m = typeof h === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(h) : null;
  if (!m) throw new HttpError(401, "Missing gateway token: send 'Authorization: Bearer <gateway token>' (the OpenAI SDKs do this with apiKey).", 'authentication_error', 'missing_api_key');
  return m[1]!;
}

const tooLarge = (limit: number) => new HttpError(413, `The request body is larger than this gateway accepts (${limit} bytes; server.bodyLimit).`, 'invalid_request_error', 'body_too_large');

/** The decoders of the content-encodings a body may come in (as express.raw inflated them). */
const DECODERS: Record<string, () => Transform> = { gzip: createGunzip, 'x-gzip': createGunzip, deflate: createInflate, br: createBrotliDecompress };

/**
 * The request body, read once into one Buffer; 413 as soon as it passes `limit` (the rest is
 * drained, not kept). A gzip, deflate or br body is decoded on the way in, and the limit holds for
 * what it decodes to (a small bomb is refused like a large body); another encoding is 415.
 */
export function readRequestBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) {
    req.resume();
    return Promise.reject(tooLarge(limit));
  }
  const enc = req.headers['content-encoding']?.trim().toLowerCase();
  let src: Readable = req;
  if (enc !== undefined && enc !== 'identity' && enc !== '') {
    const decoder = DECODERS[enc];
    if (!decoder) {
      req.resume();
      return Promise.reject(new HttpError(415, `The request body is ${enc.slice(0, 40)}-encoded; this gateway decodes gzip, deflate and br, or takes the body without a content-encoding.`, 'invalid_request_error', 'unsupported_encoding'));
    }
    src = req.pipe(decoder());
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = () => {
      src.off('data', onData);
      src.off('end', onEnd);
      src.off('error', onError);
      req.off('close', onClose);
      if (src !== req) req.off('error', onError);
    };
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        done();
        if (src !== req) {
          req.unpipe();
          src.destroy();
        }
        req.resume(); // drained, not kept
        return reject(tooLarge(limit));
      }
      chunks.push(c);
    };
    const onEnd = () => {
      done();
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    };
    const onError = () => {
      done();
      if (src !== req) src.destroy();
      req.resume();
      reject(new HttpError(400, src === req ? 'The request body could not be read.' : `The request body could not be read as ${enc} (its Content-Encoding): send it encoded so, or without that header.`, 'invalid_request_error', 'invalid_body'));
    };
    // closed before its end: the caller went away mid-body
    const onClose = () => {
      if (!req.complete) onError();
    };
    src.on('data', onData);
    src.on('end', onEnd);
    src.on('error', onError);
    if (src !== req) req.on('error', onError);
    req.on('close', onClose);
  });
}

function parseBody(raw: Buffer): Record<string, unknown> {
  if (raw.length === 0) throw badRequest('The request has no body: send a JSON object (Content-Type: application/json).');
  let body: unknown;
  try {
    body = JSON.parse(raw.toString('utf8'));
  } catch (e) {
    throw badRequest(`We could not parse the JSON body of your request (${(e as Error).message}). Send a JSON object.`, null, 'invalid_json');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('The request body must be a JSON object.', null, 'invalid_json');
  return body as Record<string, unknown>;
}

function usd(n: number): string {
  return n.toFixed(8).replace(/\.?0+$/, '') || '0';
}

/** Cost of a call's usage in USD, by the pool's one rule (core's PriceTable). */
function costOf(ctx: ProxyContext, model: string, u: Outcome['usage']): number {
  return u ? ctx.pool.costUsd(model, u.promptTokens ?? 0, u.completionTokens ?? 0) : 0;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.statusCode = status;
  res.setHeader('content-type', 'application/json; charset=utf-8');
  res.setHeader('content-length', Buffer.byteLength(text));
  res.end(text);
}

/** GET /v1/models: the models and routes this gateway serves that the caller's token may use. */
async function listModels(ctx: ProxyContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  try {
    const who = await ctx.pool.tokens.verify(bearer(req));
    if (!who) throw new HttpError(401, 'Incorrect gateway token provided.', 'authentication_error', 'invalid_api_key');
    const owners = new Map<string, string>();
    for (const k of ctx.pool.knownKeys()) for (const m of k.models) if (!owners.has(m)) owners.set(m, k.provider);
    for (const r of Object.keys(ctx.dispatcher.routes)) owners.set(r, 'keypool-route');
    const allowed = (id: string) => who.models.length === 0 || who.models.includes(id);
    const data = [...owners].filter(([id]) => allowed(id)).map(([id, owned_by]) => ({ id, object: 'model', created: 0, owned_by }));
    send(res, 200, { object: 'list', data });
  } catch (e) {
    sendError(res, toHttpError(e, ctx.log));
  }
}

/**
 * One request's state from its first byte to its metrics: the call's controller, the token's
 * admission and its settlement, the attempts charged while aborted. Methods, not closures, so the
 * path allocates one object per request and a profile names each step.
 */
class ProxyCall {
  readonly t0 = performance.now();
  readonly requestId = randomUUID();
  readonly labels: { endpoint: string; route: string; model: string; status: string };
  upstreamMs = 0;
  /** Light (no EventTarget): one per request, and the attempts' signals are of its kind. */
  readonly call: CallControl<CallAbort>;
  /** The token's admission (its reservation is settled once, whatever happens). */
  admission: { id: string; reservation: string } | undefined;
  /** What the pool charged the keys for attempts released as aborted (the caller left, its own short deadline, a shutdown). */
  readonly aborted: number[] = [];
  /** An attempt went to a provider: the token's request counts (its rpm holds for failing calls too). */
  sent = false;
  private settled = false;
  private readonly end: () => void;

  constructor(
    readonly ctx: ProxyContext,
    readonly ep: Endpoint,
    readonly res: ServerResponse,
  ) {
    this.labels = { endpoint: ep.name, route: '', model: '', status: '' };
    this.call = callController(undefined, ctx.settings.deadlineMs, 'deadline', true);
    res.setHeader('x-keypool-request-id', this.requestId);
    res.on('close', this.onClose);
    this.end = ctx.inflight.begin(this.abort);
  }

  get signal(): CallSignal {
    return this.call.controller.signal;
  }

  readonly abort = (why: unknown): void => this.call.controller.abort(why);

  private readonly onClose = (): void => {
    if (!this.res.writableFinished) this.abort(new ClientClosed());
  };

  /** Charge the gateway token what the call cost (once): the one place the token is settled. */
  settle(costUsd: number, refundRequest: boolean): void {
    if (!this.admission || this.settled) return;
    this.settled = true;
    const a = this.admission;
    const { pool, inflight, log } = this.ctx;
    inflight.track(pool.tokens.settle(a.id, a.reservation, costUsd, { refundRequest }).catch((e) => log.warn({ err: (e as Error).message, token: a.id }, 'could not settle the gateway token spend')));
  }

  /**
   * Release the lease with the outcome (in the background: the answer is out already) and settle
   * the token in the same Redis call: it pays what the pool charged the key (the estimate for a
   * stream that broke before its usage came, as core does); the usage priced here when the
   * release could not reach Redis.
   */
  releaseAndSettle(lease: Lease, model: string, outcome: Outcome, localCost: number): void {
    const { metrics, inflight } = this.ctx;
    const usage = outcome.usage;
    if (usage?.promptTokens) metrics.counts.tokens.inc(usage.promptTokens, lease.keyId, model, 'prompt');
    if (usage?.completionTokens) metrics.counts.tokens.inc(usage.completionTokens, lease.keyId, model, 'completion');
    const a = this.settled ? undefined : this.admission;
    if (a) this.settled = true;
    inflight.track(
      lease.release(outcome, a ? { settle: { admission: a }, background: true } : BACKGROUND).then(
        (r) => {
          const cost = r.released ? r.costUsd : localCost;
          if (cost > 0) metrics.counts.spend.inc(cost, lease.keyId, model);
        },
        () => {
          if (!a) return;
          this.settled = false;
          this.settle(localCost, false);
        },
      ),
    );
  }

  finish(status: number): void {
    const { metrics } = this.ctx;
    this.labels.status = String(status);
    const l = this.labels;
    metrics.counts.requests.inc(1, l.endpoint, l.route, l.model, l.status);
    const total = performance.now() - this.t0;
    this.ctx.duration.get(this.ep.name)!.observe(total / 1000);
    this.ctx.overhead.get(this.ep.name)!.observe(Math.max(0, total - this.upstreamMs) / 1000);
    this.call.done();
    this.res.off('close', this.onClose);
    this.end();
  }
}

/** A release nobody waits for (the answer is out): it may share the next command's socket write. */
const BACKGROUND = { background: true } as const;

/** A request checked and ready to dispatch. */
interface Checked {
  token: string;
  body: Record<string, unknown>;
  name: string;
  stream: boolean;
  priority: Priority;
  deadlineMs: number;
  est: Estimate;
  estUsd: number;
}

/** The request's fields the gateway needs, checked; a 400 for the first that is wrong. */
function check(ctx: ProxyContext, c: ProxyCall, req: IncomingMessage, raw: Buffer): Checked {
  const { dispatcher, pool, settings } = ctx;
  const ep = c.ep;
  const token = bearer(req);
  const body = parseBody(raw);
  if (body.model !== undefined && body.model !== null && typeof body.model !== 'string') throw badRequest(`'model' must be a string: a model name or a route name (got ${Array.isArray(body.model) ? 'an array' : typeof body.model}; GET /v1/models lists them).`, 'model');
  if (typeof body.model !== 'string' || body.model.length === 0) throw badRequest("'model' is required: a model name or a route name (GET /v1/models lists them).", 'model');
  const name = body.model;
  // a name the gateway serves, else '': callers' strings must not grow the metric series
  if (dispatcher.route(name) || pool.servesModel(name)) c.labels.model = name;
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
  if (dispatcher.route(name)) c.labels.route = name;
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
  return { token, body, name, stream, priority, deadlineMs, est, estUsd };
}

/** The provider's answer to one attempt: a stream still flowing, or a whole body. */
interface Answer {
  up: IncomingMessage;
  data: Buffer | null;
}

/** One POST of /v1: read, check, admit the token, dispatch (lease, forward, failover, release), answer. */
async function handle(ctx: ProxyContext, ep: Endpoint, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const { pool, dispatcher, metrics, settings } = ctx;
  const c = new ProxyCall(ctx, ep, res);
  try {
    const raw = await readRequestBody(req, settings.bodyLimit);
    const { token, body, name, stream, priority, deadlineMs, est, estUsd } = check(ctx, c, req, raw);

    /** A refused gateway token: counted, and the error its caller reads. */
    const refused = (r: { reason: string; retryAfterMs: number | null }) => {
      metrics.tokenRejections.inc({ reason: r.reason });
      return tokenRefusal(r.reason, name, r.retryAfterMs);
    };
    if (!dispatcher.plan(name, 'critical').models.some((m) => pool.servesModel(m))) {
      // no key to admit the token with: admitted alone, so a bad token still reads 401, not 404
      const adm = await pool.tokens.admit(token, name, estUsd);
      if (!adm.ok) throw refused(adm);
      c.admission = adm;
      throw new HttpError(404, `The model '${name}' does not exist or no key of this gateway serves it (GET /v1/models lists what is served).`, 'invalid_request_error', 'model_not_found', 'model');
    }

    const wantsUsage = Boolean((body.stream_options as { include_usage?: unknown } | undefined)?.include_usage);
    const inject = stream && ep.stream === 'chat' && !wantsUsage;
    // only these members change; every other byte goes as the caller sent it
    const streamOptions = inject ? JSON.stringify({ ...(body.stream_options as object), include_usage: true }) : undefined;
    const passHeaders: Record<string, string> = {};
    for (const h of PASS_HEADERS) if (typeof req.headers[h] === 'string') passHeaders[h] = req.headers[h] as string;
    if (stream) passHeaders.accept = 'text/event-stream';

    const a0 = performance.now();
    const now = Date.now();
    let d;
    let acquireMs = 0;
    try {
      d = await dispatcher.dispatch<Answer, CallSignal>({
        name,
        est,
        priority,
        // the token is admitted in the first acquire's Redis call (a refusal touches no key)
        admit: { token, name, estimatedCostUsd: estUsd },
        admitted: (adm) => (c.admission = adm),
        refused,
        signal: c.signal,
        deadline: now + deadlineMs,
        keyDeadline: now + settings.deadlineMs,
        call: (lease, signal, model) => attempt(c, lease, signal, model === name && !inject ? raw : spliceMembers(raw, { ...(model !== name ? { model: JSON.stringify(model) } : {}), ...(streamOptions ? { stream_options: streamOptions } : {}) }), passHeaders, stream),
        classify: classifyUpstream,
        timeoutError: (message) => new GatewayTimeout(message),
        released: (l, outcome, r) => {
          const cost = r?.costUsd ?? 0;
          if (cost > 0) metrics.counts.spend.inc(cost, l.keyId, l.model);
          if (outcome.error === 'aborted') c.aborted.push(r ? cost : l.estimatedCostUsd);
        },
      });
    } finally {
      acquireMs = performance.now() - a0 - c.upstreamMs;
      (d ? ctx.acquired : ctx.acquireFailed).observe(acquireMs / 1000);
    }
    const { lease, model, value } = d;
    const up = value.up;
    // a stream's result is known when it ends (200, broken_stream, timeout, aborted): counted then
    if (!stream) metrics.counts.upstream.inc(1, lease.keyId, lease.name ?? '', String(up.statusCode));
    c.labels.model = model;
    res.setHeader('x-keypool-model', model);
    if (c.labels.route) res.setHeader('x-keypool-route', c.labels.route);
    res.setHeader('x-keypool-key-id', lease.keyId);
    res.setHeader('x-keypool-attempts', String(d.failovers + 1));
    res.setHeader('x-keypool-acquire-ms', acquireMs.toFixed(1));
    for (const h of RETURN_HEADERS) {
      const v = up.headers[h];
      if (typeof v === 'string') res.setHeader(h === 'x-request-id' ? 'x-upstream-request-id' : h, v);
    }

    if (!stream) {
      const data = value.data!;
      let usage: Outcome['usage'];
      // only the usage is read: the answer's content may be large, and it goes on as bytes
      const u = memberOf(data, 'usage');
      usage = u !== null && typeof u === 'object' ? ep.usage({ usage: u }) : undefined;
      const cost = costOf(ctx, model, usage);
      const status = up.statusCode ?? 200;
      res.statusCode = status;
      res.setHeader('x-keypool-cost-usd', usd(cost));
      res.setHeader('content-type', up.headers['content-type'] ?? 'application/json');
      res.setHeader('content-length', data.length);
      res.end(data);
      c.releaseAndSettle(lease, model, { status, latencyMs: Date.now() - d.started, usage, headers: up.headers as Record<string, string> }, cost);
      c.finish(status);
      return;
    }

    // streaming: the deadline is over, an idle timeout takes over
    c.call.disarm();
    const ended = await pipeStream(c, up, lease, model, d.started, !wantsUsage && inject);
    // the status went out as 200; the metric tells how the stream really ended
    c.finish(ended);
  } catch (thrown) {
    await fail(c, thrown);
  }
}

/** One attempt on one key: forward the bytes, and for a whole answer read its body. */
async function attempt(c: ProxyCall, lease: Lease, signal: CallSignal, body: Buffer, headers: Record<string, string>, stream: boolean): Promise<Answer> {
  const s = performance.now();
  c.sent = true;
  try {
    const up = await forward({ baseURL: lease.baseURL, secret: lease.secret, path: c.ep.path, method: 'POST', body, headers, signal });
    if (stream) return { up, data: null };
    try {
      return { up, data: await readBody(up) };
    } catch (e) {
      if (signal.aborted) throw signal.reason;
      throw new UpstreamNetworkError('ECONNRESET', { cause: e });
    }
  } catch (e) {
    const f = classifyUpstream(e);
    c.ctx.metrics.counts.upstream.inc(1, lease.keyId, lease.name ?? '', f.kind === 'status' ? String(f.status) : signal.reason instanceof TimedOut ? 'timeout' : f.kind);
    throw e;
  } finally {
    c.upstreamMs += performance.now() - s;
  }
}

/** A request that ends without an answer from a provider: settle the token, answer the error, count it. */
async function fail(c: ProxyCall, thrown: unknown): Promise<void> {
  const e = thrown;
  const why = c.signal.reason;
  // attempts the caller cut short cost the keys their estimate: the token pays that, as for a dropped stream
  const chargedUsd = why instanceof ShuttingDown ? 0 : c.aborted.reduce((a, b) => a + b, 0);
  if (why instanceof ClientClosed) {
    c.settle(chargedUsd, !c.sent);
    c.ctx.log.debug({ requestId: c.requestId }, 'client closed the connection before the answer');
    c.finish(499);
    return;
  }
  if (isRedisUnavailable(e)) c.ctx.metrics.redisErrors.inc({ operation: 'proxy' });
  const err = toHttpError(why instanceof ShuttingDown ? why : e, c.ctx.log, c.requestId);
  // nothing went to a provider (no key could serve, a refusal before): the token gets its request back
  c.settle(chargedUsd, !c.sent);
  sendError(c.res, err);
  c.finish(err.status);
}

/**
 * Pass a provider's event stream on, event by event, with backpressure (a slow reader pauses the
 * upstream read). An upstream idle for attemptTimeoutMs is cut (a timeout of the key); an end
 * without a finish counts as a broken stream and the caller gets an error event (the status was
 * sent already). The lease's heartbeat (started by the Dispatcher) keeps it however long the
 * stream runs; it is released with the usage. Resolves with the status the metrics count.
 */
function pipeStream(c: ProxyCall, up: IncomingMessage, lease: Lease, model: string, started: number, dropUsage: boolean): Promise<number> {
  const { ctx, ep, res } = c;
  const { settings, metrics } = ctx;
  const abort = c.call.controller;
  const tap = new SseTap(ep.stream!, dropUsage);
  const s0 = performance.now();
  res.statusCode = 200;
  res.setHeader('content-type', up.headers['content-type'] ?? 'text/event-stream');
  res.setHeader('cache-control', 'no-cache');
  res.setHeader('x-accel-buffering', 'no');
  res.setHeader('x-keypool-estimated-cost-usd', usd(lease.estimatedCostUsd));
  res.flushHeaders();
  return new Promise<number>((resolve) => {
    let over = false;
    let idle: NodeJS.Timeout | undefined;
    /** Waiting for the caller to read (backpressure), not for the provider. */
    let paused = false;
    const onIdle = () => abort.abort(new TimedOut('idle', settings.attemptTimeoutMs));
    const close = (o: Outcome, brokenMessage?: string, status = 200, code = 'upstream_stream_broken') => {
      if (over) return;
      over = true;
      clearTimeout(idle);
      abort.signal.removeEventListener('abort', onAbort);
      c.upstreamMs += performance.now() - s0;
      metrics.counts.upstream.inc(1, lease.keyId, lease.name ?? '', o.error ?? String(up.statusCode ?? 200));
      if (tap.usage) o.usage = tap.usage;
      o.latencyMs = Date.now() - started;
      o.headers = up.headers as Record<string, string>;
      c.releaseAndSettle(lease, model, o, costOf(ctx, model, tap.usage));
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
    const onDrain = () => {
      paused = false;
      up.resume();
    };
    abort.signal.addEventListener('abort', onAbort, { once: true });
    if (abort.signal.aborted) return onAbort();
    // one timer for the whole stream, pushed back by each chunk
    idle = setTimeout(onIdle, settings.attemptTimeoutMs);
    up.on('data', (chunk: Buffer) => {
      idle!.refresh();
      const out = tap.push(chunk);
      if (out.length > 0 && !res.write(out)) {
        up.pause();
        paused = true;
        res.once('drain', onDrain);
      }
    });
    up.on('end', () => {
      const last = tap.flush();
      if (last.length > 0) res.write(last);
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
