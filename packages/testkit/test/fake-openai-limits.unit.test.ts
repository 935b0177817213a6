/**
 * The fake upstream's ways of enforcing limits (packages/testkit/src/fake-openai/limits.ts), driven
 * by the official `openai` SDK with retries off: quantized rolling windows (Azure OpenAI, OpenAI's
 * "60,000 RPM enforced as 1,000/s"), a continuously refilled bucket with a small burst, and the
 * exact rolling-window counters.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { fakeOpenAIControl, parseKeySpec, PeakWindows, startFakeOpenAI, WindowLimiter, type FakeOpenAI, type FakeOpenAIOptions } from '@keypool/testkit/fake-openai';

const KEY_A = 'sk-proj-fakeAAAAAAAAAAAAAAAAAAAAAAAAaaa1';

const running: FakeOpenAI[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((f) => f.stop()));
});

async function start(options: FakeOpenAIOptions): Promise<{ fake: FakeOpenAI; client: OpenAI }> {
  const fake = await startFakeOpenAI(options);
  running.push(fake);
  return { fake, client: new OpenAI({ apiKey: KEY_A, baseURL: fake.url, maxRetries: 0 }) };
}

/** The rejection of `promise` (fails the test when it resolves). */
const rejection = (promise: Promise<unknown>): Promise<any> => promise.then(() => Promise.reject(new Error('expected a rejection')), (err: unknown) => err);

const ask = (maxTokens = 1) => ({ model: 'gpt-4o-mini', messages: [{ role: 'user' as const, content: 'hi' }], max_tokens: maxTokens }); // 5 + maxTokens tokens charged

describe('fake upstream: quantized rolling windows', () => {
  it('window-1s: a burst of exactly rpm / 60 passes, the next is a 429 with Azure-style headers, and the window slides', async () => {
    const { fake, client } = await start({ keys: [{ key: KEY_A, name: 'a', rpm: 600, limiter: 'window-1s' }] });
    const t0 = performance.now();
    const remaining: string[] = [];
    for (let i = 0; i < 10; i++) {
      const { response } = await client.chat.completions.create(ask()).withResponse();
      expect(response.headers.get('x-ratelimit-limit-requests')).toBe('10'); // the per-second figure, as Azure reports it
      remaining.push(response.headers.get('x-ratelimit-remaining-requests')!);
      expect(response.headers.get('x-ratelimit-reset-requests')).toMatch(/^\d+ms$|^1s$/); // the window empties within 1 s
    }
    expect(remaining).toEqual(['9', '8', '7', '6', '5', '4', '3', '2', '1', '0']);

    const err = await rejection(client.chat.completions.create(ask()));
    const elapsed = performance.now() - t0;
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    expect(err.error).toMatchObject({ type: 'requests', code: 'rate_limit_exceeded' });
    expect(err.error.message).toMatch(/on requests per min \(RPM\): Limit 10 per 1s \(600 per min\), Used 10, Requested 1/);
    const h: Headers = err.headers;
    const retryMs = Number(h.get('retry-after-ms'));
    // the first admission leaves the window 1 s after it was made
    expect(retryMs).toBeGreaterThan(1000 - elapsed - 5);
    expect(retryMs).toBeLessThanOrEqual(1000);
    expect(h.get('retry-after')).toBe('1');
    expect(h.get('x-ratelimit-remaining-requests')).toBe('0');

    await sleep(retryMs + 5);
    await client.chat.completions.create(ask()); // one left the window: one fits
    const c = fake.counters().a!;
    expect(c).toMatchObject({ served: 11, rate429: 1, peakRequestsPer1s: 10, peakRequestsPer10s: 11, peakRequestsPerMinute: 11 });
    expect(c.peakTokensPer1s).toBe(60); // 10 x (5 + 1)
  });

  it('window-10s: rpm 60 admits exactly 10 in any 10 s, then a 429 asking for the rest of the window', async () => {
    const { fake, client } = await start({ keys: [{ key: KEY_A, name: 'a', rpm: 60, tpm: 6000, limiter: 'window-10s' }] });
    const results = await Promise.allSettled(Array.from({ length: 12 }, () => client.chat.completions.create(ask())));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(10);
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason);
    expect(refused).toHaveLength(2);
    for (const e of refused) {
      expect(e).toBeInstanceOf(OpenAI.RateLimitError);
      expect(e.headers.get('x-ratelimit-limit-requests')).toBe('10');
      expect(e.headers.get('x-ratelimit-limit-tokens')).toBe('1000'); // 6000 x 10 / 60
      expect(e.headers.get('x-ratelimit-remaining-tokens')).toBe(String(1000 - 60));
      expect(Number(e.headers.get('retry-after-ms'))).toBeGreaterThan(9000);
      expect(Number(e.headers.get('retry-after-ms'))).toBeLessThanOrEqual(10_000);
      expect(e.headers.get('retry-after')).toBe('10');
    }
    expect(fake.counters().a).toMatchObject({ served: 10, rate429: 2, peakRequestsPer1s: 10, peakRequestsPer10s: 10, peakTokensPer10s: 60 });
  });

  it('window-1s on tokens: tpm x 1 / 60 tokens per rolling second; more than the window can hold is too large', async () => {
    const { client } = await start({ keys: [{ key: KEY_A, name: 'a', tpm: 6000, limiter: 'window-1s' }] }); // 100 tokens a second
    const { response } = await client.chat.completions.create(ask(55)).withResponse(); // 60 charged
    expect(response.headers.get('x-ratelimit-limit-tokens')).toBe('100');
    expect(response.headers.get('x-ratelimit-remaining-tokens')).toBe('40');
    expect(response.headers.get('x-ratelimit-limit-requests')).toBeNull();
    const err = await rejection(client.chat.completions.create(ask(55)));
    expect(err.error).toMatchObject({ type: 'tokens', code: 'rate_limit_exceeded' });
    expect(err.error.message).toMatch(/Limit 100 per 1s \(6000 per min\), Used 60, Requested 60/);
    expect(Number(err.headers.get('retry-after-ms'))).toBeLessThanOrEqual(1000);
    await client.chat.completions.create(ask(35)); // 40 charged: fits beside the 60
    const tooLarge = await rejection(client.chat.completions.create(ask(100)));
    expect(tooLarge.error.message).toMatch(/^Request too large/);
    expect(tooLarge.headers.get('retry-after')).toBeNull();
    expect(tooLarge.headers.get('retry-after-ms')).toBeNull();
  });
});

describe('fake upstream: a continuously refilled bucket with a small burst', () => {
  it('bucket: a burst of burstSeconds of the limit, then one request per 60 / rpm s; the 429 has retry-after only', async () => {
    // 60 rpm with a 10 s burst: one request back per second, so 11 requests spread over a loaded
    // machine's scheduling still meet an empty bucket (at 600 rpm one came back every 100 ms)
    const { fake, client } = await start({ keys: [{ key: KEY_A, name: 'a', rpm: 60, limiter: 'bucket', burstSeconds: 10 }] });
    const results = await Promise.allSettled(Array.from({ length: 11 }, () => client.chat.completions.create(ask())));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(10);
    const err = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')!.reason;
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    expect(err.error.message).toMatch(/Limit 60, burst 10, Used 10, Requested 1/);
    expect(err.headers.get('retry-after')).toBe('1'); // at most 1 s, in whole seconds rounded up
    expect(err.headers.get('retry-after-ms')).toBeNull();
    expect(err.headers.get('x-ratelimit-limit-requests')).toBe('60');
    await sleep(1010); // one a second comes back
    await client.chat.completions.create(ask());
    expect(await rejection(client.chat.completions.create(ask()))).toBeInstanceOf(OpenAI.RateLimitError);
    expect(fake.counters().a).toMatchObject({ served: 11, rate429: 2 });
  });

  it('the minute bucket stays the default: a whole minute of rpm at once', async () => {
    const { client } = await start({ keys: [{ key: KEY_A, name: 'a', rpm: 600 }] });
    const results = await Promise.allSettled(Array.from({ length: 30 }, () => client.chat.completions.create(ask())));
    expect(results.every((r) => r.status === 'fulfilled')).toBe(true);
  });
});

describe('fake upstream: limiter settings', () => {
  it('is chosen per key on the command line and changed at runtime over HTTP (afresh)', async () => {
    expect(parseKeySpec('sk-a:rpm=600:limiter=window-10s')).toEqual({ key: 'sk-a', rpm: 600, limiter: 'window-10s' });
    expect(parseKeySpec('sk-a:rpm=600:limiter=bucket:burst=2')).toEqual({ key: 'sk-a', rpm: 600, limiter: 'bucket', burstSeconds: 2 });
    expect(() => parseKeySpec('sk-a:limiter=hour')).toThrow('limiter must be one of minute, window-1s, window-10s, bucket, got "hour"');

    const { fake, client } = await start({ keys: [{ key: KEY_A, name: 'a', rpm: 120 }] });
    const control = fakeOpenAIControl(fake.url);
    expect(await control.setKey('a', { limiter: 'window-1s' })).toMatchObject({ name: 'a', rpm: 120, limiter: 'window-1s', burstSeconds: 1 });
    await client.chat.completions.create(ask());
    await client.chat.completions.create(ask());
    const err = await rejection(client.chat.completions.create(ask())); // 120 rpm = 2 a second
    expect(err.headers.get('x-ratelimit-limit-requests')).toBe('2');
    await expect(control.setKey('a', { limiter: 'daily' as never })).rejects.toThrow('limiter must be one of minute, window-1s, window-10s, bucket');
    await expect(control.setKey('a', { burstSeconds: 0 })).rejects.toThrow('burstSeconds must be a number > 0');
  });

  it('a window quota is floor(limit x W / 60), at least 1', () => {
    expect(WindowLimiter.quotaOf(600, 1000)).toBe(10);
    expect(WindowLimiter.quotaOf(540, 1000)).toBe(9);
    expect(WindowLimiter.quotaOf(100, 1000)).toBe(1); // 1.67
    expect(WindowLimiter.quotaOf(30, 1000)).toBe(1); // 0.5: one, never none
    expect(WindowLimiter.quotaOf(60, 10_000)).toBe(10);
  });
});

describe('fake upstream: rolling-window counters', () => {
  it('give the most requests and tokens in any rolling 1 s, 10 s and 60 s window, exactly (not in slots)', () => {
    const w = new PeakWindows();
    // 100 ms slots would count 0, 50 and 999 with 1000 and 1050 (slots 0..10); rolling 1 s windows never hold more than 3
    for (const [t, tokens] of [
      [0, 10],
      [50, 10],
      [999, 10],
      [1000, 100],
      [1050, 1],
    ] as const)
      w.add(t, tokens);
    expect(w.peaks['1s']).toEqual({ requests: 3, tokens: 120 }); // (0, 1000]: 50, 999, 1000 (and (50, 1050] also 3, 111 tokens)
    expect(w.peaks['10s']).toEqual({ requests: 5, tokens: 131 });
    w.add(10_999, 5); // 10 s after 999: 0, 50 and 999 left the 10 s window ending here
    expect(w.peaks['10s']).toEqual({ requests: 5, tokens: 131 });
    w.add(11_000, 5);
    w.add(11_001, 5); // (1001, 11001]: 1050, 10999, 11000, 11001
    expect(w.peaks['10s'].requests).toBe(5);
    expect(w.peaks['60s']).toEqual({ requests: 8, tokens: 146 });
    expect(w.peaks['1s']).toEqual({ requests: 3, tokens: 120 });
  });
});
