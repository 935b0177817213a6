import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import { HttpError, sendError } from './errors.js';

/**
 * The gateway's request listener, in front of everything: a path with tricks in it (dot segments,
 * encoded slashes or dots, empty segments) is refused, not resolved; /v1 goes to the proxy on plain
 * node:http (the hot path: no middleware chain, no request decoration); the rest (status, metrics,
 * admin, dashboard) to the express app.
 */
export function frontListener(v1: (req: IncomingMessage, res: ServerResponse) => void, rest: RequestListener): RequestListener {
  return (req, res) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    if (PATH_TRICKS.test(path)) return sendError(res, invalidPath());
    if (isV1(path)) return v1(req, res);
    rest(req, res);
  };
}

const PATH_TRICKS = /(^|\/)\.{1,2}(\/|$)|%2e|%2f|%5c|\\|\/\//i;

const invalidPath = () =>
  new HttpError(400, 'The request path holds dot segments, encoded slashes or empty segments; send a plain path such as /v1/chat/completions.', 'invalid_request_error', 'invalid_path');

/** `/v1` or under it, in any case (as express matched a mount path). */
function isV1(path: string): boolean {
  return path.length >= 3 && path.charCodeAt(0) === 0x2f && (path[1] === 'v' || path[1] === 'V') && path[2] === '1' && (path.length === 3 || path[3] === '/');
}
