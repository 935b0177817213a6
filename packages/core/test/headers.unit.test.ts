import { describe, expect, it } from 'vitest';
import { cooldownFromHeaders, parseDuration } from '../src/headers.js';

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

  it('takes the longest of all headers present', () => {
    expect(
      cooldownFromHeaders({
        'retry-after': '2',
        'retry-after-ms': '2500',
        'x-ratelimit-reset-requests': '1s',
        'x-ratelimit-reset-tokens': '6m0s',
      }),
    ).toBe(360_000);
    expect(
      cooldownFromHeaders({
        'retry-after': '2',
        'retry-after-ms': '9000',
        'x-ratelimit-reset-requests': '1s',
        'x-ratelimit-reset-tokens': '3s',
      }),
    ).toBe(9000);
    expect(cooldownFromHeaders({ 'retry-after': '10', 'x-ratelimit-reset-requests': '1s' })).toBe(10_000);
  });

  it('skips unparseable headers but keeps the valid ones', () => {
    expect(cooldownFromHeaders({ 'retry-after-ms': 'abc', 'x-ratelimit-reset-tokens': 'nope', 'x-ratelimit-reset-requests': '2s' })).toBe(2000);
  });

  it('works with a WHATWG Headers object (case-insensitive)', () => {
    expect(cooldownFromHeaders(new Headers({ 'Retry-After': '7' }))).toBe(7000);
    expect(cooldownFromHeaders(new Headers({ 'X-RateLimit-Reset-Requests': '1m', 'Retry-After-Ms': '100' }))).toBe(60_000);
  });

  it('works with a plain record with mixed-case names', () => {
    expect(cooldownFromHeaders({ 'Retry-After': '3' })).toBe(3000);
    expect(cooldownFromHeaders({ 'Retry-After': '3', 'X-RateLimit-Reset-Tokens': '4.5s' })).toBe(4500);
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
    ).toBe(1500);
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
