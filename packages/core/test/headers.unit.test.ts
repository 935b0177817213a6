import { describe, expect, it } from 'vitest';
import { cooldownFromHeaders, cooldownHint, coolingMs, parseDuration } from '../src/headers.js';

describe('parseDuration', () => {
  it('parses single-unit durations', () => {
    expect(parseDuration('1s')).toBe(1000);
    expect(parseDuration('20ms')).toBe(20);
    expect(parseDuration('2m')).toBe(120_000);
    expect(parseDuration('1h')).toBe(3_600_000);
    expect(parseDuration('1.5s')).toBe(1500);
    expect(parseDuration('250ms')).toBe(250);
  });

  it('sums compound durations', () => {
    expect(parseDuration('6m0s')).toBe(360_000);
    expect(parseDuration('1h2m3.5s')).toBe(3_600_000 + 120_000 + 3500);
    expect(parseDuration('1m30s')).toBe(90_000);
  });

  it('reads a bare number as seconds', () => {
    expect(parseDuration('1.5')).toBe(1500);
    expect(parseDuration('3')).toBe(3000);
    expect(parseDuration(' 2 ')).toBe(2000);
  });

  it('returns undefined for anything that is not a duration', () => {
    for (const s of ['garbage', '', '   ', 's', '5x', '1s2', '1s garbage', 'ms', '-1s', '1..5s', 'abc1s']) {
      expect(parseDuration(s), JSON.stringify(s)).toBeUndefined();
    }
  });
});

describe('cooldownFromHeaders', () => {
  it('reads retry-after in seconds', () => {
    expect(cooldownFromHeaders({ 'retry-after': '5' })).toBe(5000);
    expect(cooldownFromHeaders({ 'retry-after': '0.5' })).toBe(500);
  });

  it('reads retry-after as an HTTP date relative to nowMs', () => {
    const date = 'Wed, 21 Oct 2015 07:28:00 GMT';
    const now = Date.UTC(2015, 9, 21, 7, 27, 30); // 30 s before
    expect(cooldownFromHeaders({ 'retry-after': date }, now)).toBe(30_000);
  });

  it('treats an HTTP date in the past as no wait (0), never negative', () => {
    const date = 'Wed, 21 Oct 2015 07:28:00 GMT';
    const now = Date.UTC(2015, 9, 21, 7, 29, 0); // 60 s after
    expect(cooldownFromHeaders({ 'retry-after': date }, now)).toBe(0);
  });

  it('ignores a retry-after that is neither seconds nor a date', () => {
    expect(cooldownFromHeaders({ 'retry-after': 'soon' })).toBeUndefined();
  });

  it('reads retry-after-ms', () => {
    expect(cooldownFromHeaders({ 'retry-after-ms': '1234' })).toBe(1234);
  });

  it('reads x-ratelimit-reset-requests and x-ratelimit-reset-tokens as durations', () => {
    expect(cooldownFromHeaders({ 'x-ratelimit-reset-requests': '1s' })).toBe(1000);
    expect(cooldownFromHeaders({ 'x-ratelimit-reset-tokens': '6m0s' })).toBe(360_000);
    expect(cooldownFromHeaders({ 'x-ratelimit-reset-tokens': '20ms' })).toBe(20);
  });

  it('lets retry-after-ms, then retry-after, decide; the reset headers count only without either', () => {
    const all = { 'retry-after': '2', 'retry-after-ms': '2500', 'x-ratelimit-reset-requests': '1s', 'x-ratelimit-reset-tokens': '6m0s' };
    expect(cooldownFromHeaders(all)).toBe(2500); // not the 6 minutes until the token bucket is full again
    expect(cooldownFromHeaders({ 'retry-after': '2', 'retry-after-ms': '900', 'x-ratelimit-reset-tokens': '3s' })).toBe(900); // the precise form, even when shorter
    expect(cooldownFromHeaders({ 'retry-after': '10', 'x-ratelimit-reset-requests': '1s' })).toBe(10_000);
    expect(cooldownFromHeaders({ 'retry-after': '1', 'x-ratelimit-reset-requests': '30s' })).toBe(1000);
    expect(cooldownFromHeaders({ 'x-ratelimit-reset-requests': '120ms', 'x-ratelimit-reset-tokens': '1.5s' })).toBe(1500); // the longer reset
    expect(cooldownHint(all)).toEqual({ ms: 2500, from: 'retry-after' });
    expect(cooldownHint({ 'retry-after': '0' })).toEqual({ ms: 0, from: 'retry-after' });
    expect(cooldownHint({ 'x-ratelimit-reset-tokens': '6m0s' })).toEqual({ ms: 360_000, from: 'reset' });
  });

  it('skips unparseable headers but keeps the valid ones', () => {
    expect(cooldownFromHeaders({ 'retry-after-ms': 'abc', 'x-ratelimit-reset-tokens': 'nope', 'x-ratelimit-reset-requests': '2s' })).toBe(2000);
  });

  it('works with a WHATWG Headers object (case-insensitive)', () => {
    expect(cooldownFromHeaders(new Headers({ 'Retry-After': '7' }))).toBe(7000);
    expect(cooldownFromHeaders(new Headers({ 'X-RateLimit-Reset-Requests': '1m', 'Retry-After-Ms': '100' }))).toBe(100);
  });

  it('works with a plain record with mixed-case names', () => {
    expect(cooldownFromHeaders({ 'Retry-After': '3' })).toBe(3000);
    expect(cooldownFromHeaders({ 'Retry-After': '3', 'X-RateLimit-Reset-Tokens': '4.5s' })).toBe(3000);
    expect(cooldownFromHeaders({ 'X-RateLimit-Reset-Tokens': '4.5s' })).toBe(4500);
    expect(cooldownFromHeaders({ 'RETRY-AFTER-MS': '800', 'content-type': 'application/json' })).toBe(800);
  });

  it('takes the first value of an array-valued record entry (node IncomingHttpHeaders style)', () => {
    expect(cooldownFromHeaders({ 'retry-after': ['9', '1'] })).toBe(9000);
  });

  it('works with a Map', () => {
    expect(cooldownFromHeaders(new Map([['retry-after-ms', '1234']]))).toBe(1234);
    expect(
      cooldownFromHeaders(
        new Map([
          ['retry-after', '1'],
          ['x-ratelimit-reset-tokens', '1500ms'],
        ]),
      ),
    ).toBe(1000);
  });

  // HTTP field names are case-insensitive and the record form is looked up case-insensitively;
  // a Map built from raw headers (e.g. new Map(Object.entries(raw))) should be too.
  it('works with a Map with mixed-case names', () => {
    expect(cooldownFromHeaders(new Map([['Retry-After', '5']]))).toBe(5000);
  });

  it('returns undefined when no header says how long', () => {
    expect(cooldownFromHeaders(undefined)).toBeUndefined();
    expect(cooldownFromHeaders({})).toBeUndefined();
    expect(cooldownFromHeaders(new Headers())).toBeUndefined();
    expect(cooldownFromHeaders(new Map())).toBeUndefined();
    expect(cooldownFromHeaders({ 'content-type': 'application/json', 'x-request-id': 'abc' })).toBeUndefined();
    expect(cooldownFromHeaders(new Headers({ 'content-type': 'text/plain' }))).toBeUndefined();
  });
});

describe('coolingMs', () => {
  const cooling = { defaultMs: 1000, maxMs: 600_000 };
  const now = Date.UTC(2026, 0, 1);

  it('cools for the Retry-After asked, at most maxMs', () => {
    expect(coolingMs({ 'retry-after-ms': '2500', 'x-ratelimit-reset-tokens': '6m0s' }, cooling, now)).toBe(2500);
    expect(coolingMs({ 'retry-after': '30' }, cooling, now)).toBe(30_000); // above defaultMs: a Retry-After is not capped by it
    expect(coolingMs({ 'retry-after': '3600' }, cooling, now)).toBe(600_000);
    expect(coolingMs({ 'retry-after': 'Thu, 01 Jan 2026 00:00:45 GMT' }, cooling, now)).toBe(45_000);
    expect(coolingMs({ 'retry-after': '40' }, { defaultMs: 1000, maxMs: 20_000 }, now)).toBe(20_000);
  });

  it('cools for the reset headers alone at most defaultMs: they name when the whole limit is back, not the next request', () => {
    expect(coolingMs({ 'x-ratelimit-reset-tokens': '6m0s' }, cooling, now)).toBe(1000);
    expect(coolingMs({ 'x-ratelimit-reset-requests': '250ms' }, cooling, now)).toBe(250);
    expect(coolingMs({ 'x-ratelimit-reset-requests': '10s' }, { defaultMs: 5000, maxMs: 600_000 }, now)).toBe(5000);
    expect(coolingMs({ 'x-ratelimit-reset-requests': '10s' }, { defaultMs: 5000, maxMs: 2000 }, now)).toBe(2000);
  });

  it('cools for defaultMs when no header says (at most maxMs)', () => {
    expect(coolingMs(undefined, cooling, now)).toBe(1000);
    expect(coolingMs({ 'retry-after': 'soon' }, cooling, now)).toBe(1000);
    expect(coolingMs({}, { defaultMs: 5000, maxMs: 3000 }, now)).toBe(3000);
  });
});
