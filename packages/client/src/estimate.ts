/**
 * Token estimates taken from the pool before a call, reconciled with real usage after it.
 *
 * The rule (documented, deliberately simple, no tokenizer download): a text is ceil(chars / 4)
 * tokens, which is close to OpenAI's tokenizers for English and errs high for code; each chat
 * message adds 4 tokens of framing and the reply 3; tool calls, function definitions, tools and
 * response formats count as their JSON text. Output is the request's own cap
 * (`max_completion_tokens`, `max_tokens`, `max_output_tokens`) or `defaultMaxOutputTokens`, times
 * `n` (or `best_of`) choices.
 * Because the output part is a cap, the estimate is an upper bound for most requests, which is
 * what keeps TPM and budgets exact once usage is reconciled.
 */
export interface Estimate {
  /** Prompt plus output tokens. */
  total: number;
  /** The output part (priced at the output rate). */
  output: number;
}

export function textTokens(value: unknown): number {
  if (value == null) return 0;
  if (typeof value === 'string') return Math.ceil(value.length / 4);
  if (Array.isArray(value)) return value.reduce((n: number, v) => n + textTokens(v), 0);
  if (typeof value === 'object') {
    const o = value as Record<string, unknown>;
    // content parts: { type: 'text', text } and friends; images and audio are not counted here
    if (typeof o.text === 'string') return textTokens(o.text);
    let n = 0;
    if (typeof o.content !== 'undefined') n += textTokens(o.content);
    // assistant tool calls and their results, legacy function calls, names
    for (const k of ['tool_calls', 'function_call', 'arguments', 'output']) if (o[k] != null) n += jsonTokens(o[k]);
    if (typeof o.name === 'string') n += textTokens(o.name);
    return n;
  }
  return Math.ceil(String(value).length / 4);
}

function jsonTokens(value: unknown): number {
  return typeof value === 'string' ? textTokens(value) : textTokens(JSON.stringify(value));
}

/** Request-level definitions the provider counts as prompt: tools, functions, response formats. */
function definitionTokens(params: Record<string, unknown>): number {
  let n = 0;
  for (const k of ['tools', 'functions', 'response_format', 'text']) if (params[k] != null) n += jsonTokens(params[k]);
  return n;
}

function outputCap(params: Record<string, unknown>, fallback: number): number {
  const choices = Math.max(1, Number(params.best_of ?? params.n ?? 1) || 1);
  for (const k of ['max_completion_tokens', 'max_tokens', 'max_output_tokens']) {
    const v = params[k];
    if (typeof v === 'number' && Number.isFinite(v) && v >= 0) return Math.ceil(v) * choices;
  }
  return fallback * choices;
}

export function estimateChat(params: Record<string, unknown>, defaultMaxOutputTokens: number): Estimate {
  const messages = Array.isArray(params.messages) ? params.messages : [];
  const prompt = 3 + messages.reduce((n: number, m) => n + 4 + textTokens(m), 0) + definitionTokens(params);
  const output = outputCap(params, defaultMaxOutputTokens);
  return { total: prompt + output, output };
}

export function estimateCompletion(params: Record<string, unknown>, defaultMaxOutputTokens: number): Estimate {
  const output = outputCap(params, defaultMaxOutputTokens);
  return { total: textTokens(params.prompt) + output, output };
}

export function estimateEmbedding(params: Record<string, unknown>): Estimate {
  return { total: Math.max(1, textTokens(params.input)), output: 0 };
}

export function estimateResponse(params: Record<string, unknown>, defaultMaxOutputTokens: number): Estimate {
  const output = outputCap(params, defaultMaxOutputTokens);
  return { total: 3 + textTokens(params.instructions) + textTokens(params.input) + definitionTokens(params) + output, output };
}
