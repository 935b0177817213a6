import { StringDecoder } from 'node:string_decoder';
import type { Outcome } from '@keypool/core';

/**
 * A tap on a server-sent-event stream from a provider: it cuts the bytes into whole events (each is
 * passed on as soon as its blank line arrives, byte for byte), notices the final usage and whether
 * the stream finished properly, and can hold back the usage-only chunk the gateway asked for on the
 * caller's behalf. Only events that may carry usage or a finish are parsed as JSON.
 */
export type StreamKind = 'chat' | 'responses';

const FINISH = /"finish_reason"\s*:\s*"/;
const USAGE = /"usage"\s*:\s*\{/;
const RESPONSE_END = /"type"\s*:\s*"response\.(completed|incomplete|failed)"/;

/** A token count as a provider reports it, when it is one (a whole number >= 0); else undefined. */
export function tokenCount(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : undefined;
}

/** Usage from a provider's prompt and completion counts; undefined when neither is a count. */
export function usageOf(prompt: unknown, completion: unknown): Outcome['usage'] {
  const promptTokens = tokenCount(prompt);
  const completionTokens = tokenCount(completion);
  if (promptTokens === undefined && completionTokens === undefined) return undefined;
  return { ...(promptTokens !== undefined ? { promptTokens } : {}), ...(completionTokens !== undefined ? { completionTokens } : {}) };
}

export class SseTap {
  usage: Outcome['usage'];
  finished = false;
  private rest = '';
  /** Keeps a UTF-8 character split between two chunks whole. */
  private readonly decoder = new StringDecoder('utf8');

  constructor(
    private readonly kind: StreamKind,
    /** The caller did not ask for the usage chunk: drop it (the gateway asked for it). */
    private readonly dropUsageChunk: boolean,
  ) {}

  /** Whole events in `chunk` (with what was left over before), to forward as they are. */
  push(chunk: Buffer): string {
    const text = this.rest + this.decoder.write(chunk);
    let out = '';
    let from = 0;
    for (;;) {
      const lf = text.indexOf('\n\n', from);
      const crlf = text.indexOf('\r\n\r\n', from);
      let end: number;
      if (lf < 0 && crlf < 0) break;
      if (crlf >= 0 && (lf < 0 || crlf < lf)) end = crlf + 4;
      else end = lf + 2;
      const event = text.slice(from, end);
      from = end;
      if (this.inspect(event)) out += event;
    }
    this.rest = text.slice(from);
    return out;
  }

  /** Whatever is left when the upstream ends (an event without its blank line). */
  flush(): string {
    const last = this.rest + this.decoder.end();
    this.rest = '';
    return last && this.inspect(last) ? last : '';
  }

  /** Learn from one event; false when it is to be held back. */
  private inspect(event: string): boolean {
    if (this.kind === 'responses') {
      if (!RESPONSE_END.test(event)) return true;
      const data = dataOf(event) as { response?: { usage?: { input_tokens?: number; output_tokens?: number } } } | undefined;
      const u = data?.response?.usage;
      if (u) this.usage = usageOf(u.input_tokens, u.output_tokens);
      this.finished = true;
      return true;
    }
    if (FINISH.test(event)) this.finished = true;
    if (!USAGE.test(event)) return true;
    const data = dataOf(event) as { usage?: { prompt_tokens?: number; completion_tokens?: number } | null; choices?: unknown[] } | undefined;
    if (!data?.usage) return true;
    this.usage = usageOf(data.usage.prompt_tokens, data.usage.completion_tokens);
    return !(this.dropUsageChunk && (!data.choices || data.choices.length === 0));
  }
}

/** The JSON of an event's data lines, or undefined. */
function dataOf(event: string): unknown {
  let data = '';
  for (const line of event.split(/\r?\n/)) {
    if (line.startsWith('data:')) data += line.slice(line[5] === ' ' ? 6 : 5);
  }
  if (!data || data === '[DONE]') return undefined;
  try {
    return JSON.parse(data);
  } catch {
    return undefined;
  }
}
