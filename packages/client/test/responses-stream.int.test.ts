/**
 * PooledOpenAI's streaming Responses API end to end: the official `openai` package against the fake
 * upstream (real HTTP), a real Redis behind the pool.
 */
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import OpenAI from 'openai';
import { pino } from 'pino';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { connectTestRedis, startFakeOpenAI, uniqueName, type FakeKeyOptions } from '@keypool/testkit';
import { KeyPool, keyIdOf, type KeySpecInput } from '@keypool/core';
import { PooledOpenAI } from '../src/index.js';

const A = 'sk-test-aaaaaaaaaaaaaaaaaaaaaaaa1111';
const B = 'sk-test-bbbbbbbbbbbbbbbbbbbbbbbb2222';
const MODEL = 'gpt-4o-mini';
const redis = connectTestRedis();
const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});
afterAll(() => redis.disconnect());

async function setup(fakeKeys: FakeKeyOptions[], poolKeys: Omit<KeySpecInput, 'baseURL'>[], opts: { baseURL?: string; chunkDelayMs?: number; attemptTimeoutMs?: number } = {}) {
  // replies of 6 tokens: a request with max_output_tokens above that completes, one below is cut
  const fake = await startFakeOpenAI({ keys: fakeKeys, models: [MODEL], latency: 2, replyTokens: 6, chunkDelayMs: opts.chunkDelayMs ?? 0 });
  cleanup.push(() => fake.stop());
  const pool = await KeyPool.connect({
    redis,
    config: { pool: uniqueName('client-rs'), breaker: { failures: 3, cooldownMs: 60_000 }, keys: poolKeys.map((k) => ({ ...k, baseURL: opts.baseURL ?? fake.url })) },
    logger: pino({ level: 'silent' }),
  });
  cleanup.push(() => pool.close());
  return { fake, pool, openai: new PooledOpenAI({ pool, backoff: { baseMs: 5, maxMs: 50 }, ...(opts.attemptTimeoutMs ? { attemptTimeoutMs: opts.attemptTimeoutMs } : {}) }) };
}
const keyStatus = async (pool: KeyPool, secret: string) => (await pool.status({ fresh: true })).keys.find((k) => k.id === keyIdOf(secret, k.baseURL))!;
const inFlight = async (pool: KeyPool) => (await pool.status({ fresh: true })).keys.reduce((n, k) => n + k.inFlight, 0);
const costOf = (pool: KeyPool, promptTokens: number, completionTokens: number) => {
  const p = pool.priceOf(MODEL)!;
  return (promptTokens * p.input + completionTokens * p.output) / 1e6;
};

/** An upstream that answers every request 200 with response.created and response.in_progress, then does what `then` says. */
async function rawUpstream(then: (res: ServerResponse, events: string[]) => void): Promise<string> {
  const sockets = new Set<Socket>();
  const up: Server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const response = { id: 'resp_x', object: 'response', created_at: 0, status: 'in_progress', model: MODEL, output: [], usage: null };
      then(
        res,
        ['response.created', 'response.in_progress'].map((type, i) => `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: i, response })}\n\n`),
      );
    });
  });
  up.on('connection', (s) => sockets.add(s));
  await new Promise<void>((r) => up.listen(0, '127.0.0.1', r));
  cleanup.push(() => {
    for (const s of sockets) s.destroy();
    return new Promise((r) => up.close(r));
  });
  return `http://127.0.0.1:${(up.address() as AddressInfo).port}/v1`;
}

async function drain(stream: AsyncIterable<OpenAI.Responses.ResponseStreamEvent>): Promise<OpenAI.Responses.ResponseStreamEvent[]> {
  const events: OpenAI.Responses.ResponseStreamEvent[] = [];
  for await (const e of stream) events.push(e);
  return events;
}

describe('PooledOpenAI: responses.create({ stream: true })', () => {
  it('passes every event on and reconciles the usage of the final event (completed or incomplete) in the pool spend', async () => {
    const { fake, pool, openai } = await setup([{ key: A, name: 'a' }], [{ secret: A, name: 'a', models: [MODEL], tpm: 600, tpmCounts: 'usage' }]);
    const whole = await drain(await openai.responses.create({ model: MODEL, input: 'hello there', max_output_tokens: 50, stream: true }));
    expect(whole[0]!.type).toBe('response.created');
    const done = whole.at(-1) as OpenAI.Responses.ResponseCompletedEvent;
    expect(done.type).toBe('response.completed');
    expect(done.response.usage!.output_tokens).toBe(6);
    const text = whole.flatMap((e) => (e.type === 'response.output_text.delta' ? [e.delta] : [])).join('');
    expect(text.split(' ')).toHaveLength(6);

    // cut by max_output_tokens: response.incomplete also finishes the stream and carries the usage
    const cut = await drain(await openai.responses.create({ model: MODEL, input: 'hello there', max_output_tokens: 3, stream: true }));
    expect(cut.at(-1)).toMatchObject({ type: 'response.incomplete', response: { usage: { output_tokens: 3 } } });

    const c = fake.counters().a!;
    expect(c).toMatchObject({ served: 2, completionTokens: 9 });
    const s = await keyStatus(pool, A);
    expect(s.inFlight).toBe(0);
    expect(s.reservedUsd).toBe(0);
    expect(s.breaker!.consecutiveFailures).toBe(0);
    // the real usage was charged, not the estimate (max_output_tokens 50 + 3)
    const real = costOf(pool, c.promptTokens, c.completionTokens);
    const { spend } = await pool.status({ fresh: true });
    expect(spend!.byModel[MODEL]!.requests).toBe(2);
    expect(spend!.byModel[MODEL]!.usd).toBeCloseTo(real, 8);
    expect(s.spendUsd).toBeCloseTo(real, 8);
    // and the token bucket got back what the estimate had taken beyond it (it refills 10 tokens/s meanwhile)
    const used = c.promptTokens + c.completionTokens;
    expect(s.left!.tokens).toBeGreaterThanOrEqual(s.limits.tpmBurst - used);
    expect(s.left!.tokens).toBeLessThan(s.limits.tpmBurst - used + 30);
  });

  it('a stream the provider breaks throws to the caller and counts against the key', async () => {
    const { fake, pool, openai } = await setup([{ key: A, name: 'a' }], [{ secret: A, name: 'a', models: [MODEL] }], { chunkDelayMs: 2 });
    fake.setFault({ kind: 'break-stream', key: 'a', afterChunks: 5, count: 1 });
    const got: string[] = [];
    const err = await (async () => {
      for await (const e of await openai.responses.create({ model: MODEL, input: 'hi', stream: true })) got.push(e.type);
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(got).toHaveLength(5); // what came before the break reached the caller
    const s = await keyStatus(pool, A);
    expect(s.inFlight).toBe(0);
    expect(s.breaker!.consecutiveFailures).toBe(1);
    expect(s.reservedUsd).toBe(0);
  });

  it('a stream that ends cleanly without response.completed/incomplete/failed counts as broken', async () => {
    // an upstream that answers 200 and ends the body after two events, as a faulty proxy might
    const url = await rawUpstream((res, events) => res.end(events.join('')));
    const { pool, openai } = await setup([], [{ secret: A, name: 'a', models: [MODEL] }], { baseURL: url });
    const got: string[] = [];
    const err = await (async () => {
      for await (const e of await openai.responses.create({ model: MODEL, input: 'hi', stream: true })) got.push(e.type);
    })().catch((e: unknown) => e);
    expect(got).toEqual(['response.created', 'response.in_progress']);
    expect((err as Error).message).toMatch(/ended before it finished \(no response\.completed, response\.incomplete or response\.failed\)/);
    const s = await keyStatus(pool, A);
    expect(s.inFlight).toBe(0);
    expect(s.breaker!.consecutiveFailures).toBe(1);
  });

  it('fails over on a 429 before the stream starts: the caller sees a whole stream from the other key', async () => {
    // the provider allows key a one request a minute, which is used up; the pool does not know and prefers a
    const { fake, pool, openai } = await setup(
      [{ key: A, name: 'a', rpm: 1 }, { key: B, name: 'b' }],
      [
        { secret: A, name: 'a', models: [MODEL], weight: 20 },
        { secret: B, name: 'b', models: [MODEL] },
      ],
    );
    await fetch(`${fake.url}/responses`, { method: 'POST', headers: { authorization: `Bearer ${A}`, 'content-type': 'application/json' }, body: JSON.stringify({ model: MODEL, input: 'x' }) });
    let streams = 0;
    while (!fake.counters().a!.rate429 && streams < 20) {
      const events = await drain(await openai.responses.create({ model: MODEL, input: 'hello there', max_output_tokens: 50, stream: true }));
      streams++;
      expect(events.map((e) => e.type)).toContain('response.completed');
    }
    const c = fake.counters();
    expect(c.a!.rate429).toBe(1);
    expect(c.b!.served).toBe(streams); // every stream, the one that met the 429 included, came from b
    expect((await keyStatus(pool, A)).state).toBe('cooling');
    expect(await inFlight(pool)).toBe(0);
    const { spend } = await pool.status({ fresh: true });
    expect(spend!.byModel[MODEL]!.usd).toBeCloseTo(costOf(pool, c.b!.promptTokens, c.b!.completionTokens), 8);
  });

  it('a consumer that stops early aborts the upstream call and releases the lease without hurting the key', async () => {
    const { fake, pool, openai } = await setup([{ key: A, name: 'a' }], [{ secret: A, name: 'a', models: [MODEL] }], { chunkDelayMs: 30 });
    for await (const e of await openai.responses.create({ model: MODEL, input: 'hi', max_output_tokens: 50, stream: true })) {
      if (e.type === 'response.output_text.delta') break;
    }
    const s = await keyStatus(pool, A);
    expect(s.inFlight).toBe(0);
    expect(s.reservedUsd).toBe(0);
    expect(s.breaker!.consecutiveFailures).toBe(0);
    await expect.poll(() => fake.counters().a!.aborted).toBe(1);
    expect(fake.counters().a!.served).toBe(0);
  });

  it("the caller's signal aborting midway ends the stream, cuts the upstream and releases the lease as aborted", async () => {
    const { fake, pool, openai } = await setup([{ key: A, name: 'a' }], [{ secret: A, name: 'a', models: [MODEL] }], { chunkDelayMs: 30 });
    const ac = new AbortController();
    const got: string[] = [];
    for await (const e of await openai.responses.create({ model: MODEL, input: 'hi', max_output_tokens: 50, stream: true }, { signal: ac.signal })) {
      got.push(e.type);
      if (e.type === 'response.output_text.delta') ac.abort();
    }
    // like the SDK on its own: the iteration ends, without an error
    expect(got.at(-1)).toBe('response.output_text.delta');
    const s = await keyStatus(pool, A);
    expect(s.inFlight).toBe(0);
    expect(s.breaker!.consecutiveFailures).toBe(0);
    await expect.poll(() => fake.counters().a!.aborted).toBe(1);
    expect(fake.counters().a!.served).toBe(0);
  });

  it('an upstream silent midway is cut after the idle timeout: a timeout error for the caller, a failure of the key', async () => {
    const url = await rawUpstream((res, events) => res.write(events.join(''))); // and then nothing
    const { pool, openai } = await setup([], [{ secret: A, name: 'a', models: [MODEL] }], { baseURL: url, attemptTimeoutMs: 200 });
    const got: string[] = [];
    const t0 = Date.now();
    const err = await (async () => {
      for await (const e of await openai.responses.create({ model: MODEL, input: 'hi', stream: true })) got.push(e.type);
    })().catch((e: unknown) => e);
    expect(got).toEqual(['response.created', 'response.in_progress']);
    expect(err).toBeInstanceOf(OpenAI.APIConnectionTimeoutError);
    expect(Date.now() - t0).toBeLessThan(2000);
    const s = await keyStatus(pool, A);
    expect(s.inFlight).toBe(0);
    expect(s.breaker!.consecutiveFailures).toBe(1);
  });
});
