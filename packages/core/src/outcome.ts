import { InvalidArgumentError } from './errors.js';
import type { HeadersLike } from './headers.js';

/**
 * Failures that have no HTTP status. `unused`: nothing went upstream under the lease (a refusal of
 * the caller's own admission, a lease the process cannot use): everything it took comes back and
 * nothing is charged. A call that may have reached the provider is `aborted`, never `unused`.
 */
export type ErrorKind = 'timeout' | 'network' | 'broken_stream' | 'aborted' | 'unused';

/** What happened to the upstream call made under a lease. */
export interface Outcome {
  /** HTTP status of the upstream response, when there was one. */
  status?: number;
  /** A failure without status: timeout, network error, a stream that broke midway, the caller aborted, or unused (nothing sent). */
  error?: ErrorKind;
  /** Time the upstream call took, ms. */
  latencyMs?: number;
  /** Real usage reported by the provider. When absent the estimate stands (or 0 for failures that are not billed). */
  usage?: { promptTokens?: number; completionTokens?: number };
  /** Response headers: Retry-After and x-ratelimit-reset-* set how long a 429 cools the key. */
  headers?: HeadersLike;
}

/** How the pool treats an outcome (the classes the release script understands). */
export type OutcomeClass = 'ok' | 'client_error' | 'rate_limited' | 'auth' | 'server_error' | 'aborted' | 'unused';

/**
 * 1xx-3xx: ok (the provider answered). 429: rate_limited (the key cools). 401/403: auth (the key is revoked).
 * 408, 5xx, timeouts, network errors and broken streams: server_error (feeds the breaker).
 * Other 4xx: client_error (the caller's fault; the key is not hurt). Aborted by the caller: aborted.
 * Nothing sent upstream: unused (a full refund).
 */
export function classify(outcome: Outcome): OutcomeClass {
  if (outcome.error === 'aborted') return 'aborted';
  if (outcome.error === 'unused') return 'unused';
  if (outcome.error === 'timeout' || outcome.error === 'network' || outcome.error === 'broken_stream') return 'server_error';
  const s = outcome.status;
  if (s === undefined || !Number.isInteger(s) || s < 100 || s > 599) {
    throw new InvalidArgumentError(`release needs an HTTP status (100-599) or an error kind (timeout, network, broken_stream, aborted, unused); got status=${String(s)} error=${String(outcome.error)}`);
  }
  if (s < 400) return 'ok';
  if (s === 429) return 'rate_limited';
  if (s === 401 || s === 403) return 'auth';
  if (s === 408 || s >= 500) return 'server_error';
  return 'client_error';
}

/**
 * Tokens to reconcile: the real usage when known; 0 for failures providers do not bill
 * (no usage on a 4xx/5xx/429) and for an unused lease; null (keep the estimate) when unknown and possibly billed:
 * a success without usage, an abort, a broken stream, a timeout.
 */
export function realTokens(outcome: Outcome, cls: OutcomeClass): { input: number; output: number } | null {
  const u = outcome.usage;
  if (u && (u.promptTokens !== undefined || u.completionTokens !== undefined)) {
    return { input: Math.max(0, u.promptTokens ?? 0), output: Math.max(0, u.completionTokens ?? 0) };
  }
  if (cls === 'ok' || cls === 'aborted' || outcome.error === 'broken_stream' || outcome.error === 'timeout') return null;
  return { input: 0, output: 0 };
}
