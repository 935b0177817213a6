import type { Response } from 'express';

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

export function sendError(res: Response, e: HttpError): void {
  if (res.headersSent) return;
  if (e.retryAfterSeconds !== undefined) res.setHeader('retry-after', String(e.retryAfterSeconds));
  if (e.raw) {
    res.status(e.status).setHeader('content-type', e.raw.contentType);
    res.end(e.raw.body);
    return;
  }
  res.status(e.status).json({ error: { message: e.message, type: e.type, param: e.param, code: e.code } });
}
