/**
 * The loader's retries and timestamps run on the injected clock: a backoff of seconds is crossed by
 * moving a ManualClock, not by sleeping.
 */
import { describe, expect, it } from 'vitest';
import { ManualClock } from '@keypool/core';
import { SecretLoader, SecretSourceError, type SecretSet, type SecretSource } from '../src/index.js';

const S1 = 'sk-test-loader-aaaaaaaaaaaaaaaa1111';

/** A source that fails `failures` times with `code`, then answers. */
function flaky(failures: number, code: 'unavailable' | 'denied'): SecretSource & { calls: number } {
  const src = {
    kind: 'env' as const,
    describe: 'flaky test source',
    calls: 0,
    async load(): Promise<SecretSet> {
      src.calls++;
      if (src.calls <= failures) throw new SecretSourceError(code, 'flaky test source', `failure ${src.calls}`);
      return { version: 'v1', keys: [{ secret: S1, models: ['m'] } as SecretSet['keys'][number]] };
    },
  };
  return src;
}

describe('SecretLoader on a ManualClock', () => {
  it('waits its backoff on the clock before each retry, then loads; loadedAt is the clock time', async () => {
    const clock = new ManualClock(Date.UTC(2030, 0, 1));
    const src = flaky(2, 'unavailable');
    const loader = new SecretLoader(src, { clock, attempts: 3, backoffMs: 4000, maxBackoffMs: 8000 });
    let done = false;
    const r = loader.refresh().then((x) => ((done = true), x));
    await expect.poll(() => clock.pending).toBe(1);
    expect(src.calls).toBe(1);
    // the first backoff is between 2 s and 4 s (full jitter over the upper half): 1.9 s is too early
    await clock.advance(1900);
    expect(done).toBe(false);
    expect(src.calls).toBe(1);
    await clock.advance(2100);
    await expect.poll(() => src.calls).toBe(2);
    // the second backoff doubles: 4 s to 8 s
    await expect.poll(() => clock.pending).toBe(1);
    await clock.advance(8000);
    const result = await r;
    expect(result.ok).toBe(true);
    expect(result.attempts).toBe(3);
    // loaded when the second backoff ended, by the manual clock (2+4 s at the earliest, 4+8 s at the latest)
    const loadedAt = Date.parse(loader.health().loadedAt!);
    expect(loadedAt - Date.UTC(2030, 0, 1)).toBeGreaterThanOrEqual(6000);
    expect(loadedAt - Date.UTC(2030, 0, 1)).toBeLessThanOrEqual(12_000);
  });

  it('a refusal is not retried: no sleep is taken', async () => {
    const clock = new ManualClock();
    const src = flaky(5, 'denied');
    const loader = new SecretLoader(src, { clock, attempts: 4, backoffMs: 60_000 });
    const r = await loader.refresh();
    expect(r.ok).toBe(false);
    expect(src.calls).toBe(1);
    expect(clock.pending).toBe(0);
    expect(loader.health().lastError?.at).toBe(new Date(clock.now()).toISOString());
  });
});
