import { describe, expect, it } from 'vitest';
import { parseKeySpec, type KeySpecInput } from '../src/config.js';
import { ManualClock } from '../src/clock.js';
import { LocalLimiter } from '../src/local-limiter.js';
import { recordOfSpec, type KeyRecord } from '../src/records.js';

let n = 0;
function key(spec: Partial<Omit<KeySpecInput, 'secret'>>): KeyRecord {
  n += 1;
  return recordOfSpec(parseKeySpec({ models: ['gpt-4o'], ...spec, secret: `sk-test-local-limiter-key-${n}-abcdefgh` }));
}

const NONE = new Set<string>();
const T0 = 1_700_000_000_000;

describe('LocalLimiter: rate', () => {
  it('with fleetSize 2, rpm 600 rpmBurst 4 admits 2 at once, then rate_limited for ~200 ms', () => {
    const k = key({ rpm: 600, rpmBurst: 4 });
    const lim = new LocalLimiter(2);
    expect(lim.acquire([k], 1, NONE, T0)).toEqual({ ok: true, key: k });
    expect(lim.acquire([k], 1, NONE, T0)).toEqual({ ok: true, key: k });
    // per process: burst 4/2 = 2, rate 600/2 = 300 rpm = 1 token per 60000/300 = 200 ms
    const expected = Math.ceil(1 / (600 / 2 / 60_000));
    expect(expected).toBe(200);
    expect(lim.acquire([k], 1, NONE, T0)).toEqual({ ok: false, reason: 'rate_limited', retryAfterMs: expected });
  });

  it('refills at rpm / fleetSize', () => {
    const k = key({ rpm: 600, rpmBurst: 4 });
    const lim = new LocalLimiter(2);
    lim.acquire([k], 1, NONE, T0);
    lim.acquire([k], 1, NONE, T0);
    const half = lim.acquire([k], 1, NONE, T0 + 100);
    expect(half).toEqual({ ok: false, reason: 'rate_limited', retryAfterMs: 100 });
    expect(lim.acquire([k], 1, NONE, T0 + 200).ok).toBe(true);
    expect(lim.acquire([k], 1, NONE, T0 + 200).ok).toBe(false);
    // a long quiet spell refills only up to the per-process burst (2)
    expect(lim.acquire([k], 1, NONE, T0 + 60_000).ok).toBe(true);
    expect(lim.acquire([k], 1, NONE, T0 + 60_000).ok).toBe(true);
    expect(lim.acquire([k], 1, NONE, T0 + 60_000).ok).toBe(false);
  });

  it('with fleetSize 1 uses the whole burst', () => {
    const k = key({ rpm: 600, rpmBurst: 4 });
    const lim = new LocalLimiter(1);
    for (let i = 0; i < 4; i++) expect(lim.acquire([k], 1, NONE, T0).ok).toBe(true);
    expect(lim.acquire([k], 1, NONE, T0)).toEqual({ ok: false, reason: 'rate_limited', retryAfterMs: 100 });
  });

  it('divides the token bucket by fleetSize too', () => {
    // tpm 60000, tpmBurst 1000: per process 500 tokens, refilling 30000/min = 0.5 token/ms
    const k = key({ tpm: 60_000, tpmBurst: 1000 });
    const lim = new LocalLimiter(2);
    expect(lim.acquire([k], 400, NONE, T0).ok).toBe(true);
    // 100 left, 200 needed: 100 more tokens at 0.5/ms = 200 ms
    expect(lim.acquire([k], 200, NONE, T0)).toEqual({ ok: false, reason: 'rate_limited', retryAfterMs: 200 });
    expect(lim.acquire([k], 200, NONE, T0 + 200).ok).toBe(true);
  });
});

describe('LocalLimiter: concurrency', () => {
  it('allows ceil(maxConcurrent / fleetSize) in flight per process', () => {
    const k = key({ maxConcurrent: 3 });
    const lim = new LocalLimiter(2);
    expect(lim.acquire([k], 1, NONE, T0).ok).toBe(true);
    expect(lim.acquire([k], 1, NONE, T0).ok).toBe(true); // ceil(3/2) = 2
    // no release to wait for locally: look again in 100 ms
    expect(lim.acquire([k], 1, NONE, T0)).toEqual({ ok: false, reason: 'concurrency', retryAfterMs: 100 });
    expect(lim.inFlight(k.id)).toBe(2);
    lim.release(k, 'ok', 1, 1, 0, T0 + 10);
    expect(lim.inFlight(k.id)).toBe(1);
    expect(lim.acquire([k], 1, NONE, T0 + 10).ok).toBe(true);
  });

  it('gives each process at least one slot', () => {
    const k = key({ maxConcurrent: 1 });
    const lim = new LocalLimiter(4);
    expect(lim.acquire([k], 1, NONE, T0).ok).toBe(true);
    expect(lim.acquire([k], 1, NONE, T0).ok).toBe(false);
  });
});

describe('LocalLimiter: revoked, cooling, exclusion', () => {
  it('skips a key revoked by an auth failure', () => {
    const bad = key({});
    const good = key({});
    const lim = new LocalLimiter(2);
    expect(lim.acquire([bad], 1, NONE, T0).ok).toBe(true);
    lim.release(bad, 'auth', 1, 0, 0, T0);
    expect(lim.acquire([bad], 1, NONE, T0 + 1)).toEqual({ ok: false, reason: 'unavailable', retryAfterMs: null });
    expect(lim.acquire([bad], 1, NONE, T0 + 3_600_000)).toEqual({ ok: false, reason: 'unavailable', retryAfterMs: null });
    for (let i = 0; i < 20; i++) {
      const r = lim.acquire([bad, good], 1, NONE, T0 + 2);
      expect(r).toEqual({ ok: true, key: good });
      lim.release(good, 'ok', 1, 1, 0, T0 + 2);
    }
  });

  it('cools a key after rate_limited for the given time', () => {
    const k = key({ rpm: 600 });
    const lim = new LocalLimiter(2);
    expect(lim.acquire([k], 1, NONE, T0).ok).toBe(true);
    lim.release(k, 'rate_limited', 1, 0, 1500, T0);
    expect(lim.acquire([k], 1, NONE, T0 + 10)).toEqual({ ok: false, reason: 'cooling', retryAfterMs: 1490 });
    expect(lim.acquire([k], 1, NONE, T0 + 1499)).toEqual({ ok: false, reason: 'cooling', retryAfterMs: 1 });
    expect(lim.acquire([k], 1, NONE, T0 + 1500).ok).toBe(true);
  });

  it('keeps the later cooling deadline when cooled twice', () => {
    const k = key({});
    const lim = new LocalLimiter(1);
    lim.release(k, 'rate_limited', 1, 0, 5000, T0);
    lim.release(k, 'rate_limited', 1, 0, 1000, T0 + 100);
    expect(lim.acquire([k], 1, NONE, T0 + 2000)).toEqual({ ok: false, reason: 'cooling', retryAfterMs: 3000 });
  });

  it('does not cool or revoke on other outcomes', () => {
    const k = key({});
    const lim = new LocalLimiter(1);
    for (const cls of ['ok', 'client_error', 'server_error', 'aborted'] as const) {
      expect(lim.acquire([k], 1, NONE, T0).ok).toBe(true);
      lim.release(k, cls, 1, 0, 5000, T0);
      expect(lim.acquire([k], 1, NONE, T0).ok, cls).toBe(true);
      lim.release(k, 'ok', 1, 0, 0, T0);
    }
  });

  it('reports the soonest key when every key waits', () => {
    const cooling = key({});
    const limited = key({ rpm: 600, rpmBurst: 2 });
    const lim = new LocalLimiter(2);
    lim.release(cooling, 'rate_limited', 1, 0, 5000, T0);
    expect(lim.acquire([limited], 1, NONE, T0).ok).toBe(true); // burst 1 per process
    expect(lim.acquire([cooling, limited], 1, NONE, T0)).toEqual({ ok: false, reason: 'rate_limited', retryAfterMs: 200 });
    expect(lim.acquire([cooling], 1, NONE, T0)).toEqual({ ok: false, reason: 'cooling', retryAfterMs: 5000 });
  });

  it('skips excluded keys', () => {
    const a = key({});
    const b = key({});
    const lim = new LocalLimiter(1);
    for (let i = 0; i < 10; i++) expect(lim.acquire([a, b], 1, new Set([a.id]), T0)).toEqual({ ok: true, key: b });
    expect(lim.acquire([a], 1, new Set([a.id]), T0)).toEqual({ ok: false, reason: 'unavailable', retryAfterMs: null });
  });
});

describe('LocalLimiter: on an injected clock', () => {
  it('cools after a 429 and refills by the time the clock gives, without being told the time', async () => {
    const clock = new ManualClock(T0);
    const k = key({ rpm: 60, rpmBurst: 1 });
    const lim = new LocalLimiter(1, clock);
    expect(lim.acquire([k], 1, NONE).ok).toBe(true);
    lim.release(k, 'rate_limited', 1, 0, 1500);
    expect(lim.acquire([k], 1, NONE)).toEqual({ ok: false, reason: 'cooling', retryAfterMs: 1500 });
    await clock.advance(1499);
    expect(lim.acquire([k], 1, NONE)).toEqual({ ok: false, reason: 'cooling', retryAfterMs: 1 });
    await clock.advance(1);
    // cooled; the request bucket (1 per second) refilled meanwhile
    expect(lim.acquire([k], 1, NONE).ok).toBe(true);
    expect(lim.acquire([k], 1, NONE)).toEqual({ ok: false, reason: 'rate_limited', retryAfterMs: 1000 });
    await clock.advance(1000);
    expect(lim.acquire([k], 1, NONE).ok).toBe(true);
  });
});
