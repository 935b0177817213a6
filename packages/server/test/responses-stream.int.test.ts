/**
 * Streaming Responses API through the gateway: the official `openai` package as the caller, real
 * HTTP, the fake upstream behind, a real Redis under the pool.
 */
import OpenAI from 'openai';
import { describe, expect, it } from 'vitest';
import { estimateResponse } from '@keypool/client';
import { DEFAULT_SETTINGS, sdkFor, twoKeyGateways, type TestGateway } from './helpers.js';

const A = 'sk-test-aaaaaaaaaaaaaaaaaaaaaaaa1111';
const B = 'sk-test-bbbbbbbbbbbbbbbbbbbbbbbb2222';
const MODEL = 'gpt-4o-mini';

const twoKeys = twoKeyGateways(A, B);
const gw = (fake: { chunkDelayMs?: number; replyTokens?: number } = {}) => twoKeys({ fake: { latency: 2, ...fake } });
const sdk = (g: TestGateway) => sdkFor(g);
const inFlight = async (g: TestGateway) => (await g.pool.status()).keys.reduce((n, k) => n + k.inFlight, 0);
const modelSpend = async (g: TestGateway) => (await g.pool.status()).spend?.byModel[MODEL]?.usd ?? 0;
const tokenSpend = async (g: TestGateway) => (await g.pool.tokens.list())[0]!.spendUsd;
const costOf = (g: TestGateway, u: OpenAI.Responses.ResponseUsage) => {
  const p = g.pool.priceOf(MODEL)!;
  return (u.input_tokens * p.input + u.output_tokens * p.output) / 1e6;
};

describe('gateway: streaming /v1/responses through the official SDK', () => {
  it('passes each event on as the upstream sends it; the real usage is charged to the pool and to the gateway token', async () => {
    const g = await gw({ chunkDelayMs: 60, replyTokens: 6 });
    const t0 = Date.now();
    const seen: Array<{ at: number; event: OpenAI.Responses.ResponseStreamEvent }> = [];
    const { data: stream, response } = await sdk(g).responses.create({ model: MODEL, input: 'hello there', max_output_tokens: 50, stream: true }).withResponse();
    for await (const event of stream) seen.push({ at: Date.now() - t0, event });
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(response.headers.get('x-keypool-model')).toBe(MODEL);

    const types = seen.map((s) => s.event.type);
    expect(types).toEqual([
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.content_part.added',
      ...Array<string>(6).fill('response.output_text.delta'),
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      'response.completed',
    ]);
    expect(seen.map((s) => s.event.sequence_number)).toEqual(seen.map((_, i) => i));
    // 6 deltas 60 ms apart: the first reaches the caller long before the last was written
    const deltas = seen.filter((s) => s.event.type === 'response.output_text.delta').map((s) => s.at);
    expect(deltas.at(-1)! - deltas[0]!).toBeGreaterThan(250);
    for (let i = 1; i < deltas.length; i++) expect(deltas[i]! - deltas[i - 1]!).toBeGreaterThan(20);

    const done = seen.at(-1)!.event as OpenAI.Responses.ResponseCompletedEvent;
    const usage = done.response.usage!;
    expect(usage.output_tokens).toBe(6);
    const cost = costOf(g, usage);
    expect(cost).toBeGreaterThan(0);
    await expect.poll(() => inFlight(g)).toBe(0);
    // the pool's spend grew by the real usage, not by the estimate (max_output_tokens 50)
    expect(await modelSpend(g)).toBeCloseTo(cost, 8);
    expect((await g.pool.status()).spend!.byModel[MODEL]!.requests).toBe(1);
    // the gateway token was charged the same
    await expect.poll(() => tokenSpend(g)).toBeGreaterThan(0);
    expect(await tokenSpend(g)).toBeCloseTo(cost, 8);
    expect(Object.values(g.fake.counters()).reduce((n, c) => n + c.completionTokens, 0)).toBe(6);
  });

  it("the SDK's responses.stream() helper works through the gateway; a reply cut by max_output_tokens (response.incomplete) is charged too", async () => {
    const g = await gw();
    const runner = sdk(g).responses.stream({ model: MODEL, input: 'hello there', max_output_tokens: 3 });
    let text = '';
    runner.on('response.output_text.delta', (e) => (text += e.delta));
    const final = await runner.finalResponse();
    expect(final.status).toBe('incomplete');
    expect(final.incomplete_details).toEqual({ reason: 'max_output_tokens' });
    expect(final.output_text).toBe(text);
    expect(final.usage!.output_tokens).toBe(3);
    const cost = costOf(g, final.usage!);
    await expect.poll(() => inFlight(g)).toBe(0);
    expect(await modelSpend(g)).toBeCloseTo(cost, 8);
    await expect.poll(() => tokenSpend(g)).toBeGreaterThan(0);
    expect(await tokenSpend(g)).toBeCloseTo(cost, 8);

    // a second stream adds its own cost to both
    const again = await sdk(g).responses.stream({ model: MODEL, input: 'hello again', max_output_tokens: 4 }).finalResponse();
    const total = cost + costOf(g, again.usage!);
    await expect.poll(() => tokenSpend(g)).toBeCloseTo(total, 8);
    expect(await modelSpend(g)).toBeCloseTo(total, 8);
  });

  it('a responses stream the provider breaks makes the SDK throw and counts against the key', async () => {
    const g = await gw({ chunkDelayMs: 5 });
    g.fake.setFault({ kind: 'break-stream', afterChunks: 5, count: 1 });
    const ask = { model: MODEL, input: 'hi', stream: true as const };
    const got: string[] = [];
    const err = await (async () => {
      for await (const e of await sdk(g).responses.create(ask)) got.push(e.type);
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect((err as Error).message).toMatch(/broke the stream|ended the stream/);
    expect(got).toHaveLength(5);
    await expect.poll(() => inFlight(g)).toBe(0);
    const failures = (await g.pool.status()).keys.reduce((n, k) => n + (k.breaker?.consecutiveFailures ?? 0), 0);
    expect(failures).toBe(1);
    // no usage came: the pool keeps the estimate, as core does for any broken stream (outcome.ts, realTokens)
    const est = estimateResponse(ask, DEFAULT_SETTINGS.defaultMaxOutputTokens);
    const p = g.pool.priceOf(MODEL)!;
    expect(await modelSpend(g)).toBeCloseTo(((est.total - est.output) * p.input + est.output * p.output) / 1e6, 8);
    const text = await (await fetch(`${g.url}/metrics`)).text();
    expect(text).toMatch(/keypool_gateway_requests_total\{endpoint="responses",route="",model="gpt-4o-mini",status="502"\} 1/);
  });
});
