/**
 * SseTap alone: bytes in, whole events out (byte for byte), usage and finish noticed on the way.
 */
import { describe, expect, it } from 'vitest';
import { SseTap, type StreamKind } from '../src/sse.js';

const data = (json: unknown, eol = '\n') => `data: ${JSON.stringify(json)}${eol}${eol}`;
const chunk = (content: string, finish: string | null = null) => ({ id: 'c1', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content }, finish_reason: finish }] });
const usageChunk = { id: 'c1', object: 'chat.completion.chunk', choices: [], usage: { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 } };
const responseEvent = (type: string, extra: object = {}) => `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: 0, ...extra })}\n\n`;
const completed = (type = 'response.completed') => responseEvent(type, { response: { id: 'resp_1', object: 'response', status: type.slice('response.'.length), usage: { input_tokens: 5, output_tokens: 3, total_tokens: 8 } } });

/** Everything the tap lets through when `text` arrives in pieces of the given sizes, then ends. */
function run(kind: StreamKind, drop: boolean, text: string | Buffer, sizes?: number[]): { tap: SseTap; out: string; pushes: string[] } {
  const tap = new SseTap(kind, drop);
  const bytes = Buffer.isBuffer(text) ? text : Buffer.from(text);
  const pushes: string[] = [];
  let at = 0;
  for (const n of sizes ?? [bytes.length]) {
    pushes.push(tap.push(bytes.subarray(at, at + n)).toString('utf8'));
    at += n;
  }
  if (at < bytes.length) pushes.push(tap.push(bytes.subarray(at)).toString('utf8'));
  const last = tap.flush().toString('utf8');
  return { tap, out: pushes.join('') + last, pushes: [...pushes, last] };
}

describe('SseTap', () => {
  it('passes whole events on only once their blank line arrived, however the bytes are cut', () => {
    const a = data(chunk('Hello'));
    const b = data(chunk(' world', 'stop'));
    const text = a + b + 'data: [DONE]\n\n';
    // every cut point, the blank line itself split included
    for (let cut = 1; cut < text.length; cut++) {
      const { out, pushes } = run('chat', false, text, [cut]);
      expect(out).toBe(text);
      const first = pushes[0]!;
      // the first push holds exactly the events complete within its bytes
      const whole = [a, a + b, text].filter((e) => e.length <= cut).at(-1) ?? '';
      expect(first, `cut at ${cut}`).toBe(whole);
    }
    // byte by byte
    const { tap, out } = run('chat', false, text, Array(text.length).fill(1));
    expect(out).toBe(text);
    expect(tap.finished).toBe(true);
  });

  // the tap cuts bytes and never decodes what it passes on, so a character split between chunks stays whole
  it('keeps multi-byte characters whole when a chunk boundary falls inside one', () => {
    const text = data(chunk('héllo 👋 wörld', 'stop'));
    const bytes = Buffer.from(text);
    const wave = bytes.indexOf(Buffer.from('👋'));
    const { out } = run('chat', false, bytes, [wave + 2]);
    expect(out).toBe(text);
  });

  it('cuts CRLF events (and a stream that mixes CRLF and LF) at their blank lines', () => {
    const a = data(chunk('one'), '\r\n');
    const b = data(chunk('two'));
    const c = data(chunk('', 'stop'), '\r\n');
    const text = a + b + c;
    const { pushes, tap } = run('chat', false, text, [a.length - 1, 1, b.length, c.length]);
    expect(pushes).toEqual(['', a, b, c, '']);
    expect(tap.finished).toBe(true);
  });

  it('drops the usage-only chunk when asked, records its usage either way', () => {
    const text = data(chunk('hi', 'stop')) + data(usageChunk) + 'data: [DONE]\n\n';
    const dropped = run('chat', true, text);
    expect(dropped.out).toBe(data(chunk('hi', 'stop')) + 'data: [DONE]\n\n');
    expect(dropped.tap.usage).toEqual({ promptTokens: 11, completionTokens: 7 });

    const kept = run('chat', false, text);
    expect(kept.out).toBe(text);
    expect(kept.tap.usage).toEqual({ promptTokens: 11, completionTokens: 7 });
  });

  it('never drops a chunk that has choices, even one carrying usage', () => {
    const both = { ...chunk('last', 'stop'), usage: { prompt_tokens: 2, completion_tokens: 1, total_tokens: 3 } };
    const { out, tap } = run('chat', true, data(both));
    expect(out).toBe(data(both));
    expect(tap.usage).toEqual({ promptTokens: 2, completionTokens: 1 });
    expect(tap.finished).toBe(true);
    // `"usage": null` on every chunk (include_usage asked) is not a usage chunk
    const nulls = { ...chunk('x'), usage: null };
    const n = run('chat', true, data(nulls));
    expect(n.out).toBe(data(nulls));
    expect(n.tap.usage).toBeUndefined();
  });

  it('notices the finish of a chat stream, with or without spaces around the colon', () => {
    expect(run('chat', false, data(chunk('a'))).tap.finished).toBe(false);
    expect(run('chat', false, 'data: {"choices":[{"index":0,"delta":{},"finish_reason": null}]}\n\n').tap.finished).toBe(false);
    expect(run('chat', false, data(chunk('', 'length'))).tap.finished).toBe(true);
    expect(run('chat', false, 'data: {"choices": [{"index": 0, "delta": {}, "finish_reason" : "stop"}]}\n\n').tap.finished).toBe(true);
    // a reply that merely talks about finish_reason does not end the stream
    expect(run('chat', false, data(chunk('say "finish_reason": "stop" please'))).tap.finished).toBe(false);
    // legacy completions chunks end the same way
    expect(run('chat', false, data({ object: 'text_completion', choices: [{ text: '', index: 0, finish_reason: 'stop' }] })).tap.finished).toBe(true);
  });

  it('notices the end of a responses stream (completed, incomplete, failed) and takes its usage', () => {
    const start = responseEvent('response.created', { response: { id: 'resp_1', status: 'in_progress', usage: null } }) + responseEvent('response.output_text.delta', { delta: 'hi' });
    const open = run('responses', false, start);
    expect(open.out).toBe(start);
    expect(open.tap.finished).toBe(false);
    expect(open.tap.usage).toBeUndefined();

    for (const type of ['response.completed', 'response.incomplete', 'response.failed']) {
      const { out, tap } = run('responses', true, start + completed(type));
      expect(out, type).toBe(start + completed(type)); // never held back
      expect(tap.finished, type).toBe(true);
      expect(tap.usage, type).toEqual({ promptTokens: 5, completionTokens: 3 });
    }
    const spaced = 'event: response.completed\ndata: {"type" : "response.completed", "response": {"usage": {"input_tokens": 1, "output_tokens": 2}}}\n\n';
    expect(run('responses', false, spaced).tap).toMatchObject({ finished: true, usage: { promptTokens: 1, completionTokens: 2 } });
    // a text delta that quotes an end event is still a delta
    expect(run('responses', false, responseEvent('response.output_text.delta', { delta: '"type": "response.completed"' })).tap.finished).toBe(false);
  });

  it('flushes a last event that came without its blank line, and learns from it', () => {
    const chat = run('chat', false, data(chunk('a')) + 'data: ' + JSON.stringify(chunk('', 'stop')) + '\n');
    expect(chat.pushes[0]).toBe(data(chunk('a')));
    expect(chat.pushes.at(-1)).toBe('data: ' + JSON.stringify(chunk('', 'stop')) + '\n');
    expect(chat.tap.finished).toBe(true);

    const resp = completed().trimEnd();
    const r = run('responses', false, resp);
    expect(r.pushes).toEqual(['', resp]);
    expect(r.tap).toMatchObject({ finished: true, usage: { promptTokens: 5, completionTokens: 3 } });

    // a usage-only chunk at the very end is still dropped when asked (and still counted)
    const u = run('chat', true, 'data: ' + JSON.stringify(usageChunk));
    expect(u.out).toBe('');
    expect(u.tap.usage).toEqual({ promptTokens: 11, completionTokens: 7 });
    // nothing left: nothing to flush
    expect(new SseTap('chat', false).flush().length).toBe(0);
  });

  it('reads an event whose JSON is spread over several data lines', () => {
    const event = 'data: {"id":"c1","choices":[],\ndata: "usage":{"prompt_tokens":4,\ndata: "completion_tokens":9}}\n\n';
    const { out, tap } = run('chat', true, event);
    expect(out).toBe('');
    expect(tap.usage).toEqual({ promptTokens: 4, completionTokens: 9 });

    const resp = 'event: response.completed\ndata: {"type":"response.completed",\ndata: "response":{"usage":{"input_tokens":6,"output_tokens":2}}}\n\n';
    expect(run('responses', false, resp).tap).toMatchObject({ finished: true, usage: { promptTokens: 6, completionTokens: 2 } });
  });

  it('passes events on as views of the bytes received, copying only to join an event split between chunks', () => {
    const a = data(chunk('one'));
    const b = data(chunk('two', 'stop'));
    const tap = new SseTap('chat', false);
    const whole = Buffer.from(a + b);
    const out = tap.push(whole);
    expect(out.buffer).toBe(whole.buffer); // no copy
    expect(out.toString()).toBe(a + b);
    const split = Buffer.from(a);
    expect(tap.push(split.subarray(0, 10)).length).toBe(0);
    expect(tap.push(split.subarray(10)).toString()).toBe(a);
  });

  it('passes on comments, [DONE] and events that are not JSON untouched', () => {
    const text = ': keep-alive\n\ndata: not json\n\n' + data(chunk('', 'stop')) + 'data: [DONE]\n\n';
    const { out, tap } = run('chat', true, text, [3, 10, 7]);
    expect(out).toBe(text);
    expect(tap.usage).toBeUndefined();
  });
});
