import type { Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { isPoolExhausted, isRedisUnavailable, isRequestTooLarge, isUnknownModel } from '@keypool/core';
import { TimedOut } from '@keypool/client';
import { UpstreamNetworkError, UpstreamStatusError } from './upstream.js';

/**
 * Errors in the OpenAI shape, so that every SDK shows them as it shows OpenAI's own:
 * `{ "error": { "message", "type", "param", "code" } }`. Messages say what to fix; no stack
 * trace, no secret.
 */
export type ErrorType = 'invalid_request_error' | 'authentication_error' | 'permission_error' | 'not_found_error' | 'rate_limit_error' | 'insufficient_quota' | 'api_error' | 'server_error';

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: ErrorType,
    readonly code: string | null = null,
    readonly param: string | null = null,
    /** Seconds for a Retry-After header. */
    readonly retryAfterSeconds?: number,
    /** A provider's own error body, passed on as it came (with its content type). */
    readonly raw?: { body: Buffer; contentType: string },
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

export const badRequest = (message: string, param: string | null = null, code: string | null = null) => new HttpError(400, message, 'invalid_request_error', code, param);

/** The error as the answer (node's own response API: express's Response is one too). */
export function sendError(res: ServerResponse, e: HttpError): void {
  if (res.headersSent) return;
  res.statusCode = e.status;
  if (e.retryAfterSeconds !== undefined) res.setHeader('retry-after', String(e.retryAfterSeconds));
  if (e.raw) {
    res.setHeader('content-type', e.raw.contentType);
    res.end(e.raw.body);
    return;
  }
  const body = JSON.stringify({ error: { message: e.message, type: e.type, param: e.param, code: e.code } });
  res.setHeader('content-type', 'application/json; charset=utf-8');
  res.setHeader('content-length', Buffer.byteLength(body));
  res.end(body);
}

/** A path this gateway does not serve (for `method`). */
export const unknownUrl = (method: string | undefined, path: string) =>
  new HttpError(
    404,
    `No such endpoint: ${method ?? ''} ${path.slice(0, 200)}. The gateway serves POST /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses and GET /v1/models.`,
    'invalid_request_error',
    'unknown_url',
  );

/** The caller went away: not the key's fault, nothing to answer. */
export class ClientClosed extends Error {
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
export class GatewayTimeout extends Error {}

export const shuttingDown = () => new HttpError(503, 'The gateway is shutting down; retry on another instance.', 'server_error', 'shutting_down', null, 1);

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

/** A gateway token's refusal (the reason tokens.admit gave) as the caller reads it. */
export function tokenRefusal(reason: string, model: string, retryAfterMs: number | null): HttpError {
  const after = retryAfterMs === null ? undefined : Math.max(1, Math.ceil(retryAfterMs / 1000));
  switch (reason) {
    case 'model_not_allowed':
      return new HttpError(403, `This gateway token may not use '${model}'.`, 'permission_error', 'model_not_allowed', 'model');
    case 'priority_not_allowed':
      return new HttpError(403, "This gateway token may not ask for the critical class (x-keypool-priority: critical): its setting allowCritical is false (keypool tokens create --allow-critical, or the admin API's allowCritical).", 'permission_error', 'priority_not_allowed', null);
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

/** Every failure of a /v1 request as the OpenAI-shaped error a caller reads (the one mapping of errors to statuses); faults are logged with the request id. */
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
  if (e instanceof ShuttingDown) return shuttingDown();
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

/** Parse errors node answers before any handler runs, as status, reason phrase, message and code. */
const CLIENT_ERRORS: Record<string, [number, string, string, string]> = {
  HPE_HEADER_OVERFLOW: [431, 'Request Header Fields Too Large', 'The request headers are larger than this gateway accepts (16 kB in all); send fewer or shorter headers.', 'headers_too_large'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'Request Timeout', 'The request was not received in time; send it again.', 'request_timeout'],
};

/**
 * Answer what node refuses before express sees a request (headers too large, a request that
 * trickles in, broken HTTP) in the OpenAI error shape instead of node's bare status line.
 * Mirrors node's own handler: only on a socket that has sent nothing yet, then closed.
 */
export function answerClientErrors(server: Server): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    if (socket.writable && socket.bytesWritten === 0 && err.code !== 'ECONNRESET') {
      const [status, phrase, message, code] = CLIENT_ERRORS[err.code ?? ''] ?? [400, 'Bad Request', 'The request is not valid HTTP.', 'invalid_http'];
      const body = JSON.stringify({ error: { message, type: 'invalid_request_error', param: null, code } });
      return void socket.end(`HTTP/1.1 ${status} ${phrase}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    }
    socket.destroy();
  });
}
