import http from 'node:http';
import https from 'node:https';
import type { Failure } from '@keypool/client';
import type { AbortLike } from '@keypool/core';

/**
 * Raw HTTP to an OpenAI-compatible provider: the request body goes out as the caller sent it and
 * the answer comes back as a byte stream, so the gateway can pass both through unchanged. One
 * keep-alive agent per protocol; node:http keeps a pool of sockets per origin inside it.
 */

/** The provider answered with an error status; its body is kept (bounded) to pass on. */
export class UpstreamStatusError extends Error {
  constructor(
    readonly status: number,
    readonly headers: http.IncomingHttpHeaders,
    readonly body: Buffer,
  ) {
    super(upstreamMessage(status, body));
    this.name = 'UpstreamStatusError';
  }
}

/** No answer: connection refused or reset, DNS, TLS. */
export class UpstreamNetworkError extends Error {
  constructor(
    readonly code: string,
    options?: { cause?: unknown },
  ) {
    super(`upstream unreachable (${code})`, options);
    this.name = 'UpstreamNetworkError';
  }
}

/** The message of an OpenAI-shaped error body, or the status alone. */
function upstreamMessage(status: number, body: Buffer): string {
  try {
    const j = JSON.parse(body.toString('utf8')) as { error?: { message?: unknown } };
    if (typeof j?.error?.message === 'string') return `${status} ${j.error.message}`;
  } catch {
    // not JSON: the status says enough
  }
  return `${status} status code (no body)`;
}

/** What a failed forward means for the key (see Dispatcher). */
export function classifyUpstream(e: unknown): Failure {
  if (e instanceof UpstreamStatusError) return { kind: 'status', status: e.status, headers: e.headers as Record<string, string | string[] | undefined>, message: e.message };
  if (e instanceof UpstreamNetworkError) return { kind: 'network' };
  return { kind: 'aborted' };
}

export interface ForwardRequest {
  baseURL: string;
  secret: string;
  /** Path under the base URL, e.g. `/chat/completions`. */
  path: string;
  method: 'GET' | 'POST';
  body?: Buffer;
  /** Extra request headers passed on from the caller (already filtered). */
  headers?: Record<string, string>;
  signal: AbortLike;
}

/** The largest error body kept from a provider. */
const MAX_ERROR_BODY = 1 << 20;

// No cap on sockets per origin: every key of a provider shares one origin, so a cap would queue
// requests inside the agent, where their attempt timeouts run and count against healthy keys. The
// pool's own limits (maxConcurrent, rpm) are what bound the calls in flight. Idle sockets kept per
// origin cover the calls in flight at a busy gateway's peak (1,000 req/s of 1 s answers is 1,000
// sockets), so the dip after a burst does not close connections the next burst opens again (a TLS
// handshake each).
const AGENT = { keepAlive: true, maxSockets: Infinity, maxFreeSockets: 2048, scheduling: 'lifo' } as const;
const agents = {
  'http:': new http.Agent(AGENT),
  'https:': new https.Agent(AGENT),
};

/** A base URL taken apart once (keys share a handful of them): no URL parsing per attempt. */
interface Origin {
  https: boolean;
  hostname: string;
  port: string;
  /** the base path without its trailing slashes */
  path: string;
  /** the Host header (node adds none when headers come as a list) */
  host: string;
}
const origins = new Map<string, Origin>();
/** Headers forward() writes itself: never taken from the caller's. */
const OWN_HEADERS = new Set(['host', 'authorization', 'user-agent', 'content-type', 'content-length']);

function originOf(baseURL: string): Origin {
  let o = origins.get(baseURL);
  if (!o) {
    const u = new URL(baseURL);
    // [::1] -> ::1: node:http takes a bare IPv6 address as hostname
    o = { https: u.protocol === 'https:', hostname: u.hostname.replace(/^\[(.*)\]$/, '$1'), port: u.port, path: u.pathname.replace(/\/+$/, ''), host: u.host };
    origins.set(baseURL, o);
  }
  return o;
}

/**
 * Send one request upstream. Resolves once a 2xx status and headers arrive, with the body still
 * streaming; rejects with UpstreamStatusError (body read), UpstreamNetworkError, or the signal's
 * reason when aborted. Aborting the signal later also destroys the response stream.
 */
export function forward(req: ForwardRequest): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    if (req.signal.aborted) return reject(req.signal.reason);
    const origin = originOf(req.baseURL);
    // a flat list of raw headers: node writes it as it is (no header object built per request)
    const headers: string[] = ['host', origin.host, 'authorization', `Bearer ${req.secret}`, 'user-agent', 'keypool-gateway'];
    let accept = 'application/json';
    if (req.headers) {
      for (const name in req.headers) {
        if (name === 'accept') accept = req.headers[name]!;
        else if (!OWN_HEADERS.has(name)) headers.push(name, req.headers[name]!);
      }
    }
    headers.push('accept', accept);
    if (req.body) headers.push('content-type', 'application/json', 'content-length', String(req.body.length));
    let settled = false;
    const out = (origin.https ? https : http).request({
      hostname: origin.hostname,
      port: origin.port,
      path: origin.path + '/' + req.path.replace(/^\/+/, ''),
      method: req.method,
      headers,
      agent: agents[origin.https ? 'https:' : 'http:'],
    });
    const onAbort = () => {
      out.destroy(req.signal.reason instanceof Error ? req.signal.reason : new Error('aborted'));
      if (!settled) {
        settled = true;
        reject(req.signal.reason);
      }
    };
    req.signal.addEventListener('abort', onAbort, { once: true });
    out.on('error', (e: NodeJS.ErrnoException) => {
      req.signal.removeEventListener('abort', onAbort);
      if (settled) return;
      settled = true;
      reject(req.signal.aborted ? req.signal.reason : new UpstreamNetworkError(e.code ?? e.message, { cause: e }));
    });
    out.on('response', (res) => {
      // the response (and its body) is the caller's from here; the abort listener stays until it ends
      res.once('close', () => req.signal.removeEventListener('abort', onAbort));
      const status = res.statusCode ?? 0;
      if (status >= 200 && status < 300) {
        settled = true;
        return resolve(res);
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        if (size < MAX_ERROR_BODY) chunks.push(c);
        size += c.length;
      });
      res.on('end', () => {
        if (settled) return;
        settled = true;
        reject(new UpstreamStatusError(status, res.headers, Buffer.concat(chunks)));
      });
      res.on('error', (e: NodeJS.ErrnoException) => {
        if (settled) return;
        settled = true;
        reject(req.signal.aborted ? req.signal.reason : new UpstreamNetworkError(e.code ?? e.message, { cause: e }));
      });
    });
    out.end(req.body);
  });
}

/** Read a whole (2xx) response body. */
export function readBody(res: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
    res.on('error', reject);
    // destroyed before its end (an abort): what for-await would have thrown
    res.on('close', () => {
      if (!res.complete) reject(new Error('the response closed before its end'));
    });
  });
}
