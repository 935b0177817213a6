import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import {
  fakeOpenAIControl,
  formatDuration,
  parseKeySpec,
  parseModelSpec,
  sampleLatency,
  seededRandom,
  startFakeOpenAI,
  type FakeOpenAI,
  type FakeOpenAIOptions,
} from '@keypool/testkit/fake-openai';

// realistic-looking keys: the hint is the public prefix and the last four characters
const KEY_A = 'sk-proj-fakeAAAAAAAAAAAAAAAAAAAAAAAAaaa1';
const KEY_B = 'sk-proj-fakeBBBBBBBBBBBBBBBBBBBBBBBBbbb2';

const running: FakeOpenAI[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((f) => f.stop()));
});

async function start(options: FakeOpenAIOptions): Promise<FakeOpenAI> {
  const fake = await startFakeOpenAI(options);
  running.push(fake);
  return fake;
}

const clientFor = (fake: FakeOpenAI, apiKey = KEY_A) => new OpenAI({ apiKey, baseURL: fake.url, maxRetries: 0 });

/** The rejection of `promise` (fails the test when it resolves). */
async function rejection(promise: Promise<unknown>): Promise<any> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

const ask = <const E extends object = {}>(content: string, extra?: E) => ({
  model: 'gpt-4o-mini',
  messages: [{ role: 'user' as const, content }],
  ...(extra as E),
});

describe('fake OpenAI upstream, driven by the official SDK', () => {
  it('answers a chat completion with OpenAI-shaped JSON and usage that follows the token rule', async () => {
    const fake = await start({ keys: [{ key: KEY_A, name: 'a' }] });
    const client = clientFor(fake);
    const messages = [
      { role: 'system' as const, content: 'You are terse.' }, // 14 chars: 4 + 4 tokens
      { role: 'user' as const, content: 'Say hello to the pool' }, // 21 chars: 4 + 6 tokens
    ];
    const { data, response } = await client.chat.completions.create({ model: 'gpt-4o-mini', messages, max_tokens: 5 }).withResponse();
    expect(response.status).toBe(200);
    expect(response.headers.get('x-request-id')).toMatch(/^req_/);
    expect(data).toMatchObject({ object: 'chat.completion', model: 'gpt-4o-mini' });
    expect(data.id).toMatch(/^chatcmpl-/);
    expect(data.created).toBeCloseTo(Date.now() / 1000, -1);
    expect(data.usage).toMatchObject({ prompt_tokens: 18, completion_tokens: 5, total_tokens: 23 });
    const choice = data.choices[0]!;
    expect(choice.message.role).toBe('assistant');
    expect(choice.message.content!.split(' ')).toHaveLength(5); // one word per token
    expect(choice.finish_reason).toBe('length'); // the reply (32 tokens) was cut by max_tokens

    // no max_tokens: the default cap (16); a cap above the reply length: the whole reply, stop
    const dflt = await client.chat.completions.create({ model: 'gpt-4o-mini', messages });
    expect(dflt.usage?.completion_tokens).toBe(16);
    const full = await client.chat.completions.create({ model: 'gpt-4o-mini', messages, max_completion_tokens: 100 });
    expect(full.usage?.completion_tokens).toBe(32);
    expect(full.choices[0]!.finish_reason).toBe('stop');
    // deterministic: the same prompt gets the same reply
    expect(full.choices[0]!.message.content!.startsWith(choice.message.content!)).toBe(true);
    // no limits configured: no rate-limit headers
    expect(response.headers.get('x-ratelimit-limit-requests')).toBeNull();
  });

  it('streams SSE chunks spaced by the chunk delay, then the usage chunk, then [DONE]', async () => {
    const fake = await start({ keys: [KEY_A], chunkDelayMs: 40 });
    const client = clientFor(fake);
    const stream = await client.chat.completions.create(ask('Stream me four words', { max_tokens: 4, stream: true, stream_options: { include_usage: true } }));
    const seen: Array<{ at: number; chunk: OpenAI.ChatCompletionChunk }> = [];
    for await (const chunk of stream) seen.push({ at: performance.now(), chunk });

    // role chunk, 4 content chunks, finish chunk, usage chunk
    expect(seen).toHaveLength(7);
    const chunks = seen.map((s) => s.chunk);
    expect(chunks.every((c) => c.object === 'chat.completion.chunk' && c.id === chunks[0]!.id)).toBe(true);
    expect(chunks[0]!.choices[0]!.delta.role).toBe('assistant');
    const contents = chunks.slice(1, 5).map((c) => c.choices[0]!.delta.content);
    expect(contents.join('').split(' ')).toHaveLength(4);
    expect(chunks[5]!.choices[0]).toMatchObject({ delta: {}, finish_reason: 'length' });
    expect(chunks.slice(0, 6).every((c) => c.usage === null)).toBe(true);
    const last = chunks[6]!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toMatchObject({ prompt_tokens: 4 + 5, completion_tokens: 4, total_tokens: 13 });

    // content arrives as it is produced, not all at the end: the span, not each gap (one chunk held
    // up on a busy host makes the next gap short; see the Responses stream's test)
    const times = seen.map((s) => s.at);
    expect(times[5]! - times[1]!).toBeGreaterThan(80);
    expect(times[6]! - times[1]!).toBeGreaterThan(100);

    // without include_usage: no usage chunk
    const plain = await client.chat.completions.create(ask('x', { max_tokens: 1, stream: true }));
    const plainChunks = [];
    for await (const c of plain) plainChunks.push(c);
    expect(plainChunks).toHaveLength(3);
    expect(plainChunks.every((c) => !('usage' in c))).toBe(true);
  });

  it('returns deterministic unit-length embeddings for a string or an array, as float or base64', async () => {
    const fake = await start({ keys: [KEY_A] });
    const client = clientFor(fake);
    // the SDK asks for base64 and decodes it
    const res = await client.embeddings.create({ model: 'text-embedding-3-small', input: ['hello', 'hello world!'] });
    expect(res.object).toBe('list');
    expect(res.usage).toEqual({ prompt_tokens: 2 + 3, total_tokens: 5 });
    expect(res.data.map((d) => d.index)).toEqual([0, 1]);
    const [v0, v1] = res.data.map((d) => Array.from(d.embedding));
    expect(v0).toHaveLength(8);
    expect(Math.hypot(...v0!)).toBeCloseTo(1, 5);
    expect(v0).not.toEqual(v1);

    const single = await client.embeddings.create({ model: 'text-embedding-3-small', input: 'hello', encoding_format: 'float' });
    expect(single.data[0]!.embedding).toEqual(v0); // same text, same vector, both encodings
    expect(single.usage.prompt_tokens).toBe(2);
    const wide = await client.embeddings.create({ model: 'text-embedding-3-small', input: 'hello', dimensions: 20 });
    expect(wide.data[0]!.embedding).toHaveLength(20);

    // a chat model does not embed
    const err = await rejection(client.embeddings.create({ model: 'gpt-4o-mini', input: 'x' }));
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
  });

  it('answers the Responses API with output_text and input/output token usage', async () => {
    const fake = await start({ keys: [KEY_A], replyTokens: 8 });
    const client = clientFor(fake);
    const res = await client.responses.create({ model: 'gpt-4o-mini', instructions: 'Be brief', input: 'Hello world!' });
    expect(res.object).toBe('response');
    expect(res.status).toBe('completed');
    expect(res.output_text.split(' ')).toHaveLength(8);
    // instructions 4 + 2, input 4 + 3
    expect(res.usage).toMatchObject({ input_tokens: 13, output_tokens: 8, total_tokens: 21 });

    const cut = await client.responses.create({ model: 'gpt-4o-mini', input: [{ role: 'user', content: 'Hello world!' }], max_output_tokens: 3 });
    expect(cut.usage).toMatchObject({ input_tokens: 7, output_tokens: 3 });
    expect(cut.status).toBe('incomplete');
  });

  it('lists the configured models (only those a key may use)', async () => {
    const fake = await start({
      keys: [KEY_A, { key: KEY_B, models: ['gpt-4o-mini'] }],
      models: ['gpt-4o-mini', { id: 'gpt-4o', ownedBy: 'system' }, 'text-embedding-3-small'],
    });
    const all = await clientFor(fake).models.list();
    expect(all.data.map((m) => m.id)).toEqual(['gpt-4o-mini', 'gpt-4o', 'text-embedding-3-small']);
    expect(all.data[1]).toMatchObject({ id: 'gpt-4o', object: 'model', owned_by: 'system' });
    const limited = await clientFor(fake, KEY_B).models.list();
    expect(limited.data.map((m) => m.id)).toEqual(['gpt-4o-mini']);
    expect(await clientFor(fake).models.retrieve('gpt-4o')).toMatchObject({ id: 'gpt-4o' });
    // a model the key may not use is not found
    const err = await rejection(clientFor(fake, KEY_B).chat.completions.create({ ...ask('x'), model: 'gpt-4o' }));
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
  });

  it('answers 401 for an unknown or revoked key, 404 for an unknown model, 400 for a malformed body', async () => {
    const fake = await start({ keys: [{ key: KEY_A, name: 'a' }] });
    const unknownKey = 'sk-proj-notAKeyWeKnowXXXXXXXXXXXXXXXXzz99';
    const err = await rejection(clientFor(fake, unknownKey).chat.completions.create(ask('hi')));
    expect(err).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(err.status).toBe(401);
    expect(err.error).toMatchObject({ type: 'invalid_request_error', param: null, code: 'invalid_api_key' });
    expect(JSON.stringify(err.error)).not.toContain(unknownKey.slice(8, 20)); // only the hint
    expect(err.error.message).toContain('sk-proj-...zz99');

    fake.setKey('a', { revoked: true });
    const revoked = await rejection(clientFor(fake).chat.completions.create(ask('hi')));
    expect(revoked).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(revoked.code).toBe('invalid_api_key');
    fake.setKey(KEY_A, { revoked: false });

    const notFound = await rejection(clientFor(fake).chat.completions.create({ ...ask('hi'), model: 'gpt-9' }));
    expect(notFound).toBeInstanceOf(OpenAI.NotFoundError);
    expect(notFound.error).toMatchObject({ type: 'invalid_request_error', code: 'model_not_found' });

    const raw = await fetch(`${fake.url}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY_A}`, 'content-type': 'application/json' },
      body: '{"model": "gpt-4o-mini", "messages": [',
    });
    expect(raw.status).toBe(400);
    expect(((await raw.json()) as any).error).toMatchObject({ type: 'invalid_request_error', param: null, code: null });

    const missing = await rejection(clientFor(fake).chat.completions.create({ model: 'gpt-4o-mini' } as any));
    expect(missing).toBeInstanceOf(OpenAI.BadRequestError);
    expect(missing.error).toMatchObject({ param: 'messages', code: 'missing_required_parameter' });

    const noAuth = await fetch(`${fake.url}/models`);
    expect(noAuth.status).toBe(401);

    const counters = fake.counters();
    expect(counters['(unknown)']).toMatchObject({ requests: 2, status: { 401: 2 } });
    expect(counters.a).toMatchObject({ requests: 4, served: 0, status: { 401: 1, 404: 1, 400: 2 } });
  });

  it('enforces RPM: 429 with retry-after, retry-after-ms and x-ratelimit headers once the bucket is empty', async () => {
    const fake = await start({ keys: [{ key: KEY_A, name: 'a', rpm: 3 }] });
    const client = clientFor(fake);
    const remaining: Array<string | null> = [];
    for (let i = 0; i < 3; i++) {
      const { response } = await client.chat.completions.create(ask('hi')).withResponse();
      expect(response.headers.get('x-ratelimit-limit-requests')).toBe('3');
      remaining.push(response.headers.get('x-ratelimit-remaining-requests'));
      expect(response.headers.get('x-ratelimit-reset-requests')).toMatch(/^\d+(\.\d+)?s$/);
    }
    expect(remaining).toEqual(['2', '1', '0']);

    const err = await rejection(client.chat.completions.create(ask('hi')));
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    expect(err.error).toMatchObject({ type: 'requests', code: 'rate_limit_exceeded', param: null });
    expect(err.error.message).toMatch(/Rate limit reached for gpt-4o-mini .* on requests per min \(RPM\): Limit 3, Used 3, Requested 1/);
    const h: Headers = err.headers;
    // one request comes back every 20 s
    expect(h.get('retry-after')).toBe('20');
    expect(Number(h.get('retry-after-ms'))).toBeGreaterThan(19_000);
    expect(Number(h.get('retry-after-ms'))).toBeLessThanOrEqual(20_000);
    expect(h.get('x-ratelimit-limit-requests')).toBe('3');
    expect(h.get('x-ratelimit-remaining-requests')).toBe('0');
    expect(h.get('x-ratelimit-reset-requests')).toMatch(/^59\.\d+s$|^1m0s$/); // full again in about 60 s
    expect(h.get('x-ratelimit-limit-tokens')).toBeNull(); // no TPM limit, no token headers
    expect(fake.counters().a).toMatchObject({ requests: 4, served: 3, rate429: 1, status: { 200: 3, 429: 1 } });
  });

  it('enforces TPM on prompt + max_tokens at admission, and refuses a request larger than the bucket', async () => {
    const fake = await start({ keys: [{ key: KEY_A, name: 'a', tpm: 100 }] });
    const client = clientFor(fake);
    const prompt = 'x'.repeat(160); // 4 + 40 = 44 prompt tokens, + 10 max_tokens = 54 charged
    const { response } = await client.chat.completions.create(ask(prompt, { max_tokens: 10 })).withResponse();
    expect(response.headers.get('x-ratelimit-limit-tokens')).toBe('100');
    expect(response.headers.get('x-ratelimit-remaining-tokens')).toBe('46');
    expect(response.headers.get('x-ratelimit-reset-tokens')).toMatch(/^32\.[34]\d*s$/); // 54 tokens at 100/min: 32.4 s, less what came back since
    expect(response.headers.get('x-ratelimit-limit-requests')).toBeNull();

    const err = await rejection(client.chat.completions.create(ask(prompt, { max_tokens: 10 })));
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    expect(err.error).toMatchObject({ type: 'tokens', code: 'rate_limit_exceeded' });
    expect(err.error.message).toMatch(/tokens per min \(TPM\): Limit 100, Used 54, Requested 54/);
    // 8 tokens missing at 100/min: 4.8 s
    expect(Number(err.headers.get('retry-after-ms'))).toBeGreaterThan(4_700);
    expect(Number(err.headers.get('retry-after-ms'))).toBeLessThanOrEqual(4_800);
    expect(err.headers.get('retry-after')).toBe('5');

    const tooLarge = await rejection(client.chat.completions.create(ask('hi', { max_tokens: 200 })));
    expect(tooLarge).toBeInstanceOf(OpenAI.RateLimitError);
    expect(tooLarge.error.message).toMatch(/^Request too large for gpt-4o-mini/);
    expect(tooLarge.headers.get('retry-after')).toBeNull();
    // a small request still fits
    await client.chat.completions.create(ask('hi', { max_tokens: 1 }));
    expect(fake.counters().a).toMatchObject({ served: 2, rate429: 2, peakRequestsPerMinute: 2, peakTokensPerMinute: 54 + 6 });
  });

  it('refills the buckets continuously', async () => {
    // TPM: 6000/min = 100 tokens/s. Drain the bucket with one big request, then wait what 429 says.
    const fake = await start({ keys: [{ key: KEY_A, tpm: 6000 }, { key: KEY_B, rpm: 120 }] });
    const a = clientFor(fake);
    await a.chat.completions.create(ask('hi', { max_tokens: 5995 })); // 5 + 5995 = the whole bucket
    const err = await rejection(a.chat.completions.create(ask('hi', { max_tokens: 45 })));
    const waitMs = Number(err.headers.get('retry-after-ms'));
    expect(waitMs).toBeGreaterThan(400); // 50 tokens at 100/s
    expect(waitMs).toBeLessThanOrEqual(500);
    await sleep(waitMs + 30);
    const { response } = await a.chat.completions.create(ask('hi', { max_tokens: 45 })).withResponse();
    expect(Number(response.headers.get('x-ratelimit-remaining-tokens'))).toBeLessThan(10);

    // RPM: 120/min = one request every 500 ms once the burst of 120 is spent
    const b = clientFor(fake, KEY_B);
    const burst = await Promise.allSettled(Array.from({ length: 130 }, () => b.chat.completions.create(ask('hi', { max_tokens: 1 }))));
    const ok = burst.filter((r) => r.status === 'fulfilled').length;
    expect(ok).toBeGreaterThanOrEqual(120);
    expect(ok).toBeLessThan(130); // a slow machine may see a refill or two during the burst
    const refused = burst.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect(refused.reason).toBeInstanceOf(OpenAI.RateLimitError);
    expect(Number(refused.reason.headers.get('retry-after-ms'))).toBeLessThanOrEqual(500);
    const t0 = Date.now();
    await sleep(530);
    const { response: first } = await b.chat.completions.create(ask('hi', { max_tokens: 1 })).withResponse();
    // one request back per 500 ms since the burst, and this one took it (a loaded machine may give a
    // second or third: the bound follows the time gone, not a fixed 0)
    const left = Number(first.headers.get('x-ratelimit-remaining-requests'));
    expect(left).toBeLessThanOrEqual(Math.max(0, Math.floor((Date.now() - t0) / 500) - 1));
  });

  it('waits the latency of the key, else of the model, else of the server; for a stream before the first chunk', async () => {
    const fake = await start({
      keys: [KEY_A, { key: KEY_B, latency: 0 }],
      models: ['gpt-4o-mini', { id: 'gpt-4o', latency: 150 }],
      latency: 0,
    });
    const timed = async (apiKey: string, model: string) => {
      const t0 = performance.now();
      await clientFor(fake, apiKey).chat.completions.create({ ...ask('hi'), model });
      return performance.now() - t0;
    };
    expect(await timed(KEY_A, 'gpt-4o')).toBeGreaterThanOrEqual(145);
    expect(await timed(KEY_A, 'gpt-4o-mini')).toBeLessThan(100);
    expect(await timed(KEY_B, 'gpt-4o')).toBeLessThan(100);
    const t0 = performance.now();
    const stream = await clientFor(fake).chat.completions.create({ ...ask('hi', { stream: true }), model: 'gpt-4o' });
    for await (const _ of stream) {
      expect(performance.now() - t0).toBeGreaterThanOrEqual(145);
      break;
    }
  });

  it('injects a burst of 5xx for one key or for all, then recovers', async () => {
    const fake = await start({ keys: [{ key: KEY_A, name: 'a' }, { key: KEY_B, name: 'b' }] });
    const a = clientFor(fake);
    const b = clientFor(fake, KEY_B);
    fake.setFault({ kind: 'error', status: 503, count: 2, key: 'a' });
    await b.chat.completions.create(ask('hi')); // another key is not affected
    for (let i = 0; i < 2; i++) {
      const err = await rejection(a.chat.completions.create(ask('hi')));
      expect(err).toBeInstanceOf(OpenAI.InternalServerError);
      expect(err.status).toBe(503);
      expect(err.error).toMatchObject({ type: 'server_error' });
    }
    await a.chat.completions.create(ask('hi')); // the burst is over
    expect(fake.faults()).toEqual([]);

    fake.setFault({ kind: 'error', status: 502, count: 1 }); // every key
    expect((await rejection(b.chat.completions.create(ask('hi')))).status).toBe(502);
    await a.chat.completions.create(ask('hi'));
    expect(fake.counters().a!.status).toEqual({ 200: 2, 503: 2 });
    expect(fake.counters().b!.status).toEqual({ 200: 1, 502: 1 });
  });

  it('hangs a request until the client gives up (timeout or AbortSignal)', async () => {
    const fake = await start({ keys: [{ key: KEY_A, name: 'a' }] });
    const client = clientFor(fake);
    fake.setFault({ kind: 'hang', count: 2 });
    const t0 = performance.now();
    const timedOut = await rejection(client.chat.completions.create(ask('hi'), { timeout: 200 }));
    expect(timedOut).toBeInstanceOf(OpenAI.APIConnectionTimeoutError);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(190);
    const aborted = await rejection(client.chat.completions.create(ask('hi'), { signal: AbortSignal.timeout(100) }));
    expect(aborted).toBeInstanceOf(OpenAI.APIUserAbortError);
    // the next request is answered
    await client.chat.completions.create(ask('hi'));
    // a client that gives up during the latency counts as aborted
    fake.setKey('a', { latency: 300 });
    expect(await rejection(client.chat.completions.create(ask('hi'), { timeout: 50 }))).toBeInstanceOf(OpenAI.APIConnectionTimeoutError);
    await sleep(20);
    expect(fake.counters().a).toMatchObject({ requests: 4, served: 1, hung: 2, aborted: 1, inFlight: 0 });
  });

  it('breaks a stream midway: the SDK iteration throws, no [DONE], no usage', async () => {
    const fake = await start({ keys: [{ key: KEY_A, name: 'a' }], chunkDelayMs: 5 });
    const client = clientFor(fake);
    fake.setFault({ kind: 'break-stream', afterChunks: 3, count: 1 });
    // a break-stream fault leaves non-streaming requests alone
    await client.chat.completions.create(ask('hi'));
    const stream = await client.chat.completions.create(ask('hi', { stream: true, stream_options: { include_usage: true } }));
    const got: OpenAI.ChatCompletionChunk[] = [];
    const err = await rejection(
      (async () => {
        for await (const chunk of stream) got.push(chunk);
      })(),
    );
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toMatch(/terminated/); // undici: the body ended before its last chunk
    expect(got).toHaveLength(3); // role + 2 content chunks
    expect(got.some((c) => c.usage)).toBe(false);
    // the fault is used up: the next stream is whole
    const whole = await client.chat.completions.create(ask('hi', { stream: true, max_tokens: 2 }));
    let n = 0;
    for await (const _ of whole) n++;
    expect(n).toBe(4);
    expect(fake.counters().a).toMatchObject({ served: 2, broken: 1, status: { 200: 3 } });
  });

  it('reports per-key counters over HTTP that match what was sent, without key material', async () => {
    const fake = await start({ keys: [{ key: KEY_A, name: 'team-a', rpm: 100 }, KEY_B], latency: 60 });
    const a = clientFor(fake);
    // 5 at once: in flight together
    const replies = await Promise.all(Array.from({ length: 5 }, (_, i) => a.chat.completions.create(ask(`question ${i}`, { max_tokens: 3 }))));
    const emb = await a.embeddings.create({ model: 'text-embedding-3-small', input: 'abcdefgh' });
    await rejection(a.chat.completions.create({ ...ask('x'), model: 'nope' }));
    await clientFor(fake, KEY_B).chat.completions.create(ask('hi'));

    const res = await fetch(`${fake.origin}/_fake/counters`);
    const text = await res.text();
    expect(text).not.toContain(KEY_A);
    expect(text).not.toContain(KEY_B);
    const counters = JSON.parse(text);
    expect(counters).toEqual(fake.counters());
    expect(Object.keys(counters).sort()).toEqual(['sk-proj-...bbb2', 'team-a']);
    const prompt = replies.reduce((s, r) => s + r.usage!.prompt_tokens, 0) + emb.usage.prompt_tokens;
    expect(counters['team-a']).toEqual({
      requests: 7,
      served: 6,
      rate429: 0,
      status: { 200: 6, 404: 1 },
      promptTokens: prompt,
      completionTokens: 15,
      broken: 0,
      hung: 0,
      aborted: 0,
      inFlight: 0,
      maxInFlight: 5,
      peakRequestsPer1s: expect.any(Number),
      peakTokensPer1s: expect.any(Number),
      peakRequestsPer10s: 6,
      peakTokensPer10s: prompt + 15,
      peakRequestsPerMinute: 6,
      peakTokensPerMinute: prompt + 15,
    });
    expect(counters['sk-proj-...bbb2']).toMatchObject({ requests: 1, served: 1, promptTokens: 5, completionTokens: 16 });
    expect(await fakeOpenAIControl(fake.url).counters()).toEqual(counters);
  });

  it('is reconfigured at runtime over HTTP: limits, latency, revocation, faults, new keys, reset', async () => {
    const fake = await start({ keys: [{ key: KEY_A, name: 'a' }] });
    const control = fakeOpenAIControl(fake.url);
    const client = clientFor(fake);
    const timed = async (c: OpenAI) => {
      const t0 = performance.now();
      await c.chat.completions.create(ask('hi'));
      return performance.now() - t0;
    };

    // a limit set by secret (URL-encoded by the control client), answered with the name and hint only
    const info = await control.setKey(KEY_A, { rpm: 1 });
    expect(info).toMatchObject({ name: 'a', hint: 'sk-proj-...aaa1', rpm: 1, tpm: 0 });
    expect(JSON.stringify(info)).not.toContain(KEY_A);
    await client.chat.completions.create(ask('hi'));
    await expect(client.chat.completions.create(ask('hi'))).rejects.toBeInstanceOf(OpenAI.RateLimitError);

    // a key that slows down, by name, with the raw endpoint
    const slow = await fetch(`${fake.origin}/_fake/keys/a`, { method: 'POST', body: JSON.stringify({ rpm: 0, latency: 250 }) });
    expect(slow.status).toBe(200);
    expect(await timed(client)).toBeGreaterThanOrEqual(245);

    await control.setKey('a', { revoked: true });
    await expect(client.chat.completions.create(ask('hi'))).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
    await control.setKey('a', { revoked: false, latency: null });
    expect(await timed(client)).toBeLessThan(150);

    // faults over HTTP
    await control.setFault({ kind: 'error', status: 500, key: 'a' });
    expect(await control.faults()).toEqual([{ kind: 'error', status: 500, key: 'a' }]);
    await expect(client.chat.completions.create(ask('hi'))).rejects.toBeInstanceOf(OpenAI.InternalServerError);
    await expect(client.chat.completions.create(ask('hi'))).rejects.toBeInstanceOf(OpenAI.InternalServerError);
    await control.clearFaults();
    await client.chat.completions.create(ask('hi'));
    const badFault = await fetch(`${fake.origin}/_fake/faults`, { method: 'POST', body: JSON.stringify({ kind: 'explode' }) });
    expect(badFault.status).toBe(400);

    // a key added at runtime
    await control.setKey(KEY_B, { name: 'b', tpm: 1000 });
    const { response } = await clientFor(fake, KEY_B).chat.completions.create(ask('hi')).withResponse();
    expect(response.headers.get('x-ratelimit-limit-tokens')).toBe('1000');

    // counters only: the keys stay
    expect((await control.counters()).a!.requests).toBeGreaterThan(0);
    await control.reset({ countersOnly: true });
    expect(await control.counters()).toEqual({
      a: expect.objectContaining({ requests: 0 }),
      b: expect.objectContaining({ requests: 0 }),
    });
    expect((await control.keys()).map((k) => k.name)).toEqual(['a', 'b']);

    // reset: counters zeroed, the start configuration back (key b gone, a unlimited)
    await clientFor(fake, KEY_B).chat.completions.create(ask('hi'));
    await control.reset();
    expect(await control.counters()).toEqual({ a: expect.objectContaining({ requests: 0, served: 0, status: {} }) });
    await expect(clientFor(fake, KEY_B).chat.completions.create(ask('hi'))).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
    await client.chat.completions.create(ask('hi'));
    expect((await control.keys()).map((k) => k.name)).toEqual(['a']);
  });

  it('starts from the CLI, prints its URL and answers', async () => {
    const cli = fileURLToPath(new URL('../src/fake-openai/cli.ts', import.meta.url));
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', cli, '--port', '0', '--keys', 'sk-a:rpm=60:tpm=10000,sk-b', '--models', 'gpt-4o-mini,text-embedding-3-small', '--latency', '5'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    try {
      const lines = createInterface({ input: child.stdout });
      const [url] = (await once(lines, 'line', { signal: AbortSignal.timeout(10_000) })) as [string];
      expect(url, stderr).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/v1$/);
      const res = await fetch(`${url}/models`, { headers: { authorization: 'Bearer sk-a' } });
      expect(res.status).toBe(200);
      expect(res.headers.get('x-ratelimit-limit-requests')).toBe('60');
      expect(((await res.json()) as any).data.map((m: { id: string }) => m.id)).toEqual(['gpt-4o-mini', 'text-embedding-3-small']);
      const chat = await new OpenAI({ apiKey: 'sk-b', baseURL: url, maxRetries: 0 }).chat.completions.create(ask('hi'));
      expect(chat.usage?.completion_tokens).toBe(16);
      expect(stderr).toContain('listening');
      expect(stderr).not.toMatch(/sk-[ab]\b/); // names and hints only
    } finally {
      child.kill('SIGTERM');
      if (child.exitCode === null && child.signalCode === null) await once(child, 'exit');
    }
    expect(child.exitCode).toBe(0);
  });
});

describe('fake OpenAI building blocks', () => {
  it('formats OpenAI-style durations', () => {
    expect([0, 0.2, 120, 999.5, 1000, 1500, 17_280, 60_000, 360_000, 3_723_500].map(formatDuration)).toEqual([
      '0s',
      '1ms',
      '120ms',
      '1s',
      '1s',
      '1.5s',
      '17.28s',
      '1m0s',
      '6m0s',
      '1h2m3.5s',
    ]);
  });

  it('samples a log-normal latency fitted to p50 and p99', () => {
    const random = seededRandom(42);
    const samples = Array.from({ length: 20_000 }, () => sampleLatency({ p50Ms: 50, p99Ms: 400 }, random)).sort((x, y) => x - y);
    expect(samples[10_000]!).toBeGreaterThan(45);
    expect(samples[10_000]!).toBeLessThan(55);
    expect(samples[19_800]!).toBeGreaterThan(340);
    expect(samples[19_800]!).toBeLessThan(460);
    expect(sampleLatency(25, random)).toBe(25);
  });

  it('parses CLI key and model specs', () => {
    expect(parseKeySpec('sk-a:rpm=60:tpm=10000:name=a:latency=50/400:models=gpt-4o+gpt-4o-mini')).toEqual({
      key: 'sk-a',
      rpm: 60,
      tpm: 10_000,
      name: 'a',
      latency: { p50Ms: 50, p99Ms: 400 },
      models: ['gpt-4o', 'gpt-4o-mini'],
    });
    expect(parseKeySpec('sk-b:revoked')).toEqual({ key: 'sk-b', revoked: true });
    expect(() => parseKeySpec('sk-c:rpn=3')).toThrow(/unknown key field/);
    expect(parseModelSpec('gpt-4o:reply=64:chunk=5')).toEqual({ id: 'gpt-4o', replyTokens: 64, chunkDelayMs: 5 });
  });

  it('keeps the fake-openai entry free of vitest (benchmarks and child processes import it)', () => {
    const dir = fileURLToPath(new URL('../src/fake-openai/', import.meta.url));
    for (const file of readdirSync(dir)) {
      const source = readFileSync(`${dir}${file}`, 'utf8');
      expect(source, file).not.toMatch(/from ['"]vitest['"]/);
      // nothing from the rest of the testkit but the node-only helpers the fakes share
      expect(source.replace(/from '\.\.\/http-util\.js'/g, ''), file).not.toMatch(/from ['"]\.\.\//);
    }
    const shared = readFileSync(fileURLToPath(new URL('../src/http-util.ts', import.meta.url)), 'utf8');
    expect(shared).not.toMatch(/from ['"](vitest|\.)/);
  });
});
