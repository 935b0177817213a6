import { systemClock } from './clock.js';

/**
 * How long a provider asks us to back off after a 429, from its response headers:
 * `retry-after-ms`, `retry-after` (seconds or an HTTP date), `x-ratelimit-reset-requests` and
 * `x-ratelimit-reset-tokens` (durations like `1s`, `6m0s`, `20ms`, `1h2m3.5s`).
 * The longest wins; the pool then keeps the later of that and any deadline already set.
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

/**
 * Milliseconds to cool a key for, per the headers; undefined when no header says. An HTTP-date
 * `retry-after` is read against `nowMs` (the pool passes its clock's time).
 */
export function cooldownFromHeaders(headers: HeadersLike | undefined, nowMs = systemClock.now()): number | undefined {
  if (!headers) return undefined;
  const candidates: number[] = [];
  const ms = headerValue(headers, 'retry-after-ms');
  if (ms && Number.isFinite(Number(ms))) candidates.push(Number(ms));
  const ra = headerValue(headers, 'retry-after');
  if (ra) {
    if (/^\d+(\.\d+)?$/.test(ra.trim())) candidates.push(Number(ra) * 1000);
    else {
      const at = Date.parse(ra);
      if (Number.isFinite(at)) candidates.push(Math.max(0, at - nowMs));
    }
  }
  for (const name of ['x-ratelimit-reset-requests', 'x-ratelimit-reset-tokens']) {
    const v = headerValue(headers, name);
    const d = v === undefined ? undefined : parseDuration(v);
    if (d !== undefined) candidates.push(d);
  }
  return candidates.length ? Math.max(...candidates) : undefined;
}

/** How long a 429 cools a key: what the headers ask (or the default), never more than the maximum. */
export function coolingMs(headers: HeadersLike | undefined, cooling: { defaultMs: number; maxMs: number }, nowMs: number): number {
  return Math.min(cooling.maxMs, cooldownFromHeaders(headers, nowMs) ?? cooling.defaultMs);
}
