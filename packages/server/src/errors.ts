import type { Server } from 'node:http';
import type { Socket } from 'node:net';
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
