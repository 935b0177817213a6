import { systemClock } from './clock.js';

/**
 * How long a provider asks us to back off after a 429, from its response headers, in this order:
 * `retry-after-ms` (Azure OpenAI and OpenAI; the openai SDK reads it first), else `retry-after`
 * (seconds or an HTTP date; RFC 9110), and only when neither is given the longer of
 * `x-ratelimit-reset-requests` / `x-ratelimit-reset-tokens` (durations like `1s`, `6m0s`, `20ms`).
 * A Retry-After is the provider's answer to "when may I send again"; a reset header says when its
 * limit is back to its initial state (a drained minute bucket: a whole minute), which overstates
 * the wait for one request, so it only counts when nothing better is given, and capped
 * (see {@link coolingMs}). The pool then keeps the later of that and any deadline already set.
 */
export type HeadersLike = Headers | Record<string, string | string[] | undefined> | Map<string, string>;

/** A header's value; names are case-insensitive whatever the container (Headers, Map or plain record). */
export function headerValue(headers: HeadersLike, name: string): string | undefined {
  if (headers instanceof Map) {
    for (const [k, v] of headers) if (k.toLowerCase() === name) return String(v);
    return undefined;
  }
  if (typeof (headers as Headers).get === 'function') {
    const v = (headers as Headers).get(name);
    return v == null ? undefined : String(v);
  }
  const rec = headers as Record<string, string | string[] | undefined>;
  const v = rec[name] ?? rec[Object.keys(rec).find((k) => k.toLowerCase() === name) ?? ''];
  return Array.isArray(v) ? v[0] : v;
}

const UNIT_MS: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 0.001, µs: 0.001, ns: 1e-6 };

/** Parse an OpenAI-style duration (`6m0s`, `1.5s`, `250ms`); undefined when it is not one. */
export function parseDuration(text: string): number | undefined {
  const s = text.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Number(s) * 1000; // bare number: seconds
  const re = /(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)/gy;
  let total = 0;
  let matched = 0;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    total += Number(m[1]) * UNIT_MS[m[2]!]!;
    matched = re.lastIndex;
  }
  return matched === s.length && matched > 0 ? total : undefined;
}

/** Where a cooling time came from: a Retry-After header (either form) or the reset headers alone. */
export interface CooldownHint {
  ms: number;
  from: 'retry-after' | 'reset';
}

/**
 * What the headers say about cooling, and which header said it; undefined when none does. An
 * HTTP-date `retry-after` is read against `nowMs` (the pool passes its clock's time).
 */
export function cooldownHint(headers: HeadersLike | undefined, nowMs = systemClock.now()): CooldownHint | undefined {
  if (!headers) return undefined;
  const ms = headerValue(headers, 'retry-after-ms')?.trim();
  if (ms && /^\d+(\.\d+)?$/.test(ms)) return { ms: Number(ms), from: 'retry-after' };
  const ra = headerValue(headers, 'retry-after')?.trim();
  if (ra) {
    if (/^\d+(\.\d+)?$/.test(ra)) return { ms: Number(ra) * 1000, from: 'retry-after' };
    const at = Date.parse(ra);
    if (Number.isFinite(at)) return { ms: Math.max(0, at - nowMs), from: 'retry-after' };
  }
  let reset: number | undefined;
  for (const name of ['x-ratelimit-reset-requests', 'x-ratelimit-reset-tokens']) {
    const v = headerValue(headers, name);
    const d = v === undefined ? undefined : parseDuration(v);
    if (d !== undefined) reset = Math.max(reset ?? 0, d);
  }
  return reset === undefined ? undefined : { ms: reset, from: 'reset' };
}

/**
 * Milliseconds to cool a key for, per the headers (Retry-After first, the reset headers only
 * without one); undefined when no header says.
 */
export function cooldownFromHeaders(headers: HeadersLike | undefined, nowMs = systemClock.now()): number | undefined {
  return cooldownHint(headers, nowMs)?.ms;
}

/**
 * How long a 429 cools a key: a Retry-After as asked, at most `maxMs`; the reset headers alone at
 * most `defaultMs` too (what a 429 with no header at all cools for: 1 s by default, the window of a
 * provider that quantizes to seconds), since they name when the whole limit is back, not when one
 * request fits; no header: `defaultMs`.
 */
export function coolingMs(headers: HeadersLike | undefined, cooling: { defaultMs: number; maxMs: number }, nowMs: number): number {
  const hint = cooldownHint(headers, nowMs);
  if (!hint) return Math.min(cooling.maxMs, cooling.defaultMs);
  return Math.min(cooling.maxMs, hint.from === 'reset' ? Math.min(cooling.defaultMs, hint.ms) : hint.ms);
}

/**
 * The provider's rate-limit headers as release passes them to Redis (learning, see
 * lua/includes/learn.lua): `x-ratelimit-limit-requests`, `-remaining-requests`, `-limit-tokens`,
 * `-remaining-tokens`; -1 where a header is absent or not a number >= 0.
 */
export interface RateLimitHeaders {
  limitRequests: number;
  remainingRequests: number;
  limitTokens: number;
  remainingTokens: number;
}

export const NO_RATE_LIMIT_HEADERS: RateLimitHeaders = Object.freeze({ limitRequests: -1, remainingRequests: -1, limitTokens: -1, remainingTokens: -1 });

function count(headers: HeadersLike, name: string): number {
  const v = headerValue(headers, name)?.trim();
  if (!v || !/^\d+(\.\d+)?$/.test(v)) return -1;
  return Math.floor(Number(v));
}

/** Read the rate-limit headers of an answer (all -1 without headers). */
export function rateLimitHeaders(headers: HeadersLike | undefined): RateLimitHeaders {
  if (!headers) return NO_RATE_LIMIT_HEADERS;
  return {
    limitRequests: count(headers, 'x-ratelimit-limit-requests'),
    remainingRequests: count(headers, 'x-ratelimit-remaining-requests'),
    limitTokens: count(headers, 'x-ratelimit-limit-tokens'),
    remainingTokens: count(headers, 'x-ratelimit-remaining-tokens'),
  };
}
