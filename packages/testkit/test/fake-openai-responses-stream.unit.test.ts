/**
 * The fake's streaming /v1/responses, read by the official SDK: raw iteration and the
 * `responses.stream()` helper (whose accumulator rejects any event out of OpenAI's order).
 */
import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { startFakeOpenAI, type FakeOpenAI, type FakeOpenAIOptions } from '@keypool/testkit/fake-openai';

const KEY = 'sk-proj-fakeAAAAAAAAAAAAAAAAAAAAAAAAaaa1';
const running: FakeOpenAI[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((f) => f.stop()));
});

async function start(options: Omit<FakeOpenAIOptions, 'keys'> = {}) {
  const fake = await startFakeOpenAI({ keys: [{ key: KEY, name: 'a' }], ...options });
  running.push(fake);
  return { fake, client: new OpenAI({ apiKey: KEY, baseURL: fake.url, maxRetries: 0 }) };
}

const TEXT_EVENTS = (deltas: number, end: 'completed' | 'incomplete') => [
  'response.created',
  'response.in_progress',
  'response.output_item.added',
  'response.content_part.added',
  ...Array<string>(deltas).fill('response.output_text.delta'),
  'response.output_text.done',
  'response.content_part.done',
  'response.output_item.done',
  `response.${end}`,
];

describe('fake OpenAI upstream: streaming /v1/responses', () => {
  it("streams OpenAI's event sequence with sequence numbers, spaced by the chunk delay, ending with the usage", async () => {
    const { fake, client } = await start({ chunkDelayMs: 30, replyTokens: 4 });
    const seen: Array<{ at: number; event: OpenAI.Responses.ResponseStreamEvent }> = [];
    for await (const event of await client.responses.create({ model: 'gpt-4o-mini', instructions: 'Be brief', input: 'Hello world!', stream: true })) {
      seen.push({ at: performance.now(), event });
    }
    const events = seen.map((s) => s.event);
    expect(events.map((e) => e.type)).toEqual(TEXT_EVENTS(4, 'completed'));
    expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i));

    const created = events[0] as OpenAI.Responses.ResponseCreatedEvent;
    expect(created.response).toMatchObject({ object: 'response', status: 'in_progress', output: [], model: 'gpt-4o-mini' });
    const deltas = events.filter((e): e is OpenAI.Responses.ResponseTextDeltaEvent => e.type === 'response.output_text.delta');
    const text = deltas.map((d) => d.delta).join('');
    expect(text.split(' ')).toHaveLength(4);
    const item = (events[2] as OpenAI.Responses.ResponseOutputItemAddedEvent).item;
    expect(deltas.every((d) => d.item_id === item.id && d.output_index === 0 && d.content_index === 0)).toBe(true);
    expect(events.find((e) => e.type === 'response.output_text.done')).toMatchObject({ text });

    const completed = events.at(-1) as OpenAI.Responses.ResponseCompletedEvent;
    expect(completed.response.id).toBe(created.response.id);
    expect(completed.response).toMatchObject({ status: 'completed', incomplete_details: null });
    expect(completed.response.output).toEqual([expect.objectContaining({ id: item.id, type: 'message', status: 'completed', content: [expect.objectContaining({ type: 'output_text', text })] })]);
    // instructions 4 + 2, input 4 + 3: the same count as without streaming
    expect(completed.response.usage).toMatchObject({ input_tokens: 13, output_tokens: 4, total_tokens: 17 });

    // tokens arrive as they are produced: four gaps of the chunk delay (30 ms) at the fake. The span
    // is compared, not each gap: one event held up on a busy host makes the next gap short (14 ms
    // once in CI), while the span only shrinks by how late its first event was. All at once: ~0 ms
    const times = seen.map((s) => s.at);
    expect(times[8]! - times[4]!).toBeGreaterThan(60);
    expect(fake.counters().a).toMatchObject({ served: 1, promptTokens: 13, completionTokens: 4, status: { 200: 1 } });
  });

  it('a reply cut by max_output_tokens ends with response.incomplete, as OpenAI does', async () => {
    const { client } = await start();
    const events: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const e of await client.responses.create({ model: 'gpt-4o-mini', input: [{ role: 'user', content: 'Hello world!' }], max_output_tokens: 3, stream: true })) events.push(e);
    expect(events.map((e) => e.type)).toEqual(TEXT_EVENTS(3, 'incomplete'));
    const end = events.at(-1) as OpenAI.Responses.ResponseIncompleteEvent;
    expect(end.response).toMatchObject({ status: 'incomplete', incomplete_details: { reason: 'max_output_tokens' }, max_output_tokens: 3 });
    expect(end.response.usage).toMatchObject({ input_tokens: 7, output_tokens: 3 });
    expect((events.at(-2) as OpenAI.Responses.ResponseOutputItemDoneEvent).item).toMatchObject({ status: 'incomplete' });
  });

  it("the SDK's responses.stream() helper accumulates the events into the same response as without streaming", async () => {
    const { client } = await start({ replyTokens: 6 });
    const params = { model: 'gpt-4o-mini', input: 'Same prompt, same reply' };
    const runner = client.responses.stream(params);
    const deltas: string[] = [];
    runner.on('response.output_text.delta', (e) => deltas.push(e.delta));
    const final = await runner.finalResponse();
    const plain = await client.responses.create(params);
    expect(final.status).toBe('completed');
    expect(final.output_text).toBe(plain.output_text);
    expect(deltas.join('')).toBe(plain.output_text);
    expect(final.usage).toEqual(plain.usage);
  });

  it('the SSE text is `event:` and `data:` lines, no [DONE]', async () => {
    const { fake } = await start({ replyTokens: 1 });
    const res = await fetch(`${fake.url}/responses`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o-mini', input: 'x', stream: true }),
    });
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const text = await res.text();
    const blocks = text.split('\n\n').filter(Boolean);
    expect(blocks).toHaveLength(9);
    for (const b of blocks) {
      const [ev, data, ...rest] = b.split('\n');
      expect(rest).toEqual([]);
      expect(ev).toMatch(/^event: response\./);
      expect(JSON.parse(data!.replace(/^data: /, '')).type).toBe(ev!.slice('event: '.length));
    }
    expect(text).not.toContain('[DONE]');
  });

  it('faults apply as for chat streams: break-stream after N events, error before the stream, hang', async () => {
    const { fake, client } = await start({ chunkDelayMs: 2 });
    fake.setFault({ kind: 'break-stream', afterChunks: 5, count: 1 });
    const got: OpenAI.Responses.ResponseStreamEvent[] = [];
    const err = await (async () => {
      for await (const e of await client.responses.create({ model: 'gpt-4o-mini', input: 'hi', stream: true })) got.push(e);
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(got.map((e) => e.type)).toEqual(TEXT_EVENTS(1, 'completed').slice(0, 5));
    expect(fake.counters().a).toMatchObject({ broken: 1, served: 0, completionTokens: 0 });

    fake.setFault({ kind: 'error', status: 503, count: 1 });
    await expect(client.responses.create({ model: 'gpt-4o-mini', input: 'hi', stream: true })).rejects.toMatchObject({ status: 503 });

    fake.setFault({ kind: 'hang', count: 1 });
    await expect(client.responses.create({ model: 'gpt-4o-mini', input: 'hi', stream: true }, { timeout: 50 })).rejects.toBeInstanceOf(OpenAI.APIConnectionTimeoutError);
    expect(fake.counters().a).toMatchObject({ hung: 1, status: { 200: 1, 503: 1 } });
  });

  it("rejects a non-boolean stream and stream_options without stream, like OpenAI", async () => {
    const { client } = await start();
    await expect(client.responses.create({ model: 'gpt-4o-mini', input: 'hi', stream: 'yes' } as never)).rejects.toMatchObject({ status: 400, param: 'stream' });
    await expect(client.responses.create({ model: 'gpt-4o-mini', input: 'hi', stream_options: {} } as never)).rejects.toMatchObject({ status: 400, param: 'stream_options' });
  });
});
