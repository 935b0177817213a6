import { describe, expect, it } from 'vitest';
import { estimateChat, estimateCompletion, estimateEmbedding, estimateResponse } from '../src/estimate.js';

describe('token estimates (an upper bound of what a provider counts at admission)', () => {
  it('chat: ceil(chars/4) per text, 4 per message, 3 for the reply, plus the output cap', () => {
    const e = estimateChat({ messages: [{ role: 'system', content: 'x'.repeat(400) }, { role: 'user', content: 'hello' }], max_tokens: 100 }, 1024);
    expect(e).toEqual({ total: 3 + (4 + 100) + (4 + 2) + 100, output: 100 });
  });

  it('the output cap counts once per choice (n, best_of) and defaults when absent', () => {
    expect(estimateChat({ messages: [], max_tokens: 100, n: 4 }, 1024).output).toBe(400);
    expect(estimateChat({ messages: [] }, 1024).output).toBe(1024);
    expect(estimateCompletion({ prompt: 'abcd', max_tokens: 10, best_of: 3 }, 1024)).toEqual({ total: 1 + 30, output: 30 });
  });

  it('tool calls, tools and response formats count as their JSON text', () => {
    const args = JSON.stringify({ q: 'y'.repeat(4000) });
    const e = estimateChat(
      {
        messages: [{ role: 'assistant', content: null, tool_calls: [{ id: 't', type: 'function', function: { name: 'f', arguments: args } }] }],
        tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }],
        max_tokens: 1,
      },
      1024,
    );
    expect(e.total).toBeGreaterThan(1000);
  });

  it('embeddings count only their input; responses count instructions, input and definitions', () => {
    expect(estimateEmbedding({ input: ['abcd', 'efgh'] })).toEqual({ total: 2, output: 0 });
    expect(estimateResponse({ input: 'x'.repeat(40), instructions: 'y'.repeat(8), max_output_tokens: 5 }, 1024)).toEqual({ total: 3 + 2 + 10 + 5, output: 5 });
  });
});
