import type { Outcome } from '@keypool/core';

/**
 * A tap on a server-sent-event stream from a provider: it cuts the bytes into whole events (each is
 * passed on as soon as its blank line arrives, byte for byte: the bytes are never decoded and
 * encoded again), notices the final usage and whether the stream finished properly, and can hold
 * back the usage-only chunk the gateway asked for on the caller's behalf. Events are looked at as
 * bytes; only one that may carry usage or an end is decoded and parsed as JSON.
 */
export type StreamKind = 'chat' | 'responses';

const LF2 = Buffer.from('\n\n');
const CRLF2 = Buffer.from('\r\n\r\n');
const FINISH_REASON = Buffer.from('"finish_reason"');
const USAGE_KEY = Buffer.from('"usage"');
const TYPE_KEY = Buffer.from('"type"');
const RESPONSE_ENDS = ['response.completed"', 'response.incomplete"', 'response.failed"'].map((t) => Buffer.from(t));
const QUOTE = 0x22;
const OPEN_BRACE = 0x7b;
const EMPTY = Buffer.alloc(0);

const isWs = (c: number | undefined) => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;

/**
 * Where the value of a member `key` starts in the event's bytes, for each occurrence, until `test`
 * says yes. A key quoted inside a string is escaped (\"key\") and so never matches.
 */
function someValue(ev: Buffer, key: Buffer, test: (ev: Buffer, at: number) => boolean): boolean {
  for (let i = ev.indexOf(key); i >= 0; i = ev.indexOf(key, i + 1)) {
    let j = i + key.length;
    while (isWs(ev[j])) j++;
    if (ev[j] !== 0x3a) continue; // ':'
    j++;
    while (isWs(ev[j])) j++;
    if (test(ev, j)) return true;
  }
  return false;
}

const isString = (ev: Buffer, at: number) => ev[at] === QUOTE;
const isObject = (ev: Buffer, at: number) => ev[at] === OPEN_BRACE;
const isResponseEnd = (ev: Buffer, at: number) => ev[at] === QUOTE && RESPONSE_ENDS.some((t) => at + 1 + t.length <= ev.length && ev.compare(t, 0, t.length, at + 1, at + 1 + t.length) === 0);

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
  /** The start of an event whose blank line has not come yet. */
  private rest: Buffer = EMPTY;

  constructor(
    private readonly kind: StreamKind,
    /** The caller did not ask for the usage chunk: drop it (the gateway asked for it). */
    private readonly dropUsageChunk: boolean,
  ) {}

  /** The whole events in `chunk` (with what was left over before), to forward as they are. */
  push(chunk: Buffer): Buffer {
    const b = this.rest.length === 0 ? chunk : Buffer.concat([this.rest, chunk]);
    // a blank line may straddle the old bytes and the new: look from just before the new
    let scan = Math.max(0, this.rest.length - 3);
    let from = 0;
    /** The start of the run of events passed on since the last one held back. */
    let run = 0;
    /** Runs before events held back (rare: the usage chunk); none: everything up to `from` goes on. */
    let runs: Buffer[] | undefined;
    let lf = -2;
    let crlf = -2;
    for (;;) {
      if (lf !== -1 && lf < scan) lf = b.indexOf(LF2, scan);
      if (crlf !== -1 && crlf < scan) crlf = b.indexOf(CRLF2, scan);
      if (lf < 0 && crlf < 0) break;
      const end = crlf >= 0 && (lf < 0 || crlf < lf) ? crlf + 4 : lf + 2;
      if (!this.inspect(b.subarray(from, end))) {
        runs ??= [];
        if (from > run) runs.push(b.subarray(run, from));
        run = end;
      }
      from = scan = end;
    }
    this.rest = from < b.length ? b.subarray(from) : EMPTY;
    if (!runs) return from === 0 ? EMPTY : b.subarray(0, from);
    if (from > run) runs.push(b.subarray(run, from));
    return runs.length === 0 ? EMPTY : runs.length === 1 ? runs[0]! : Buffer.concat(runs);
  }

  /** Whatever is left when the upstream ends (an event without its blank line). */
  flush(): Buffer {
    const last = this.rest;
    this.rest = EMPTY;
    return last.length > 0 && this.inspect(last) ? last : EMPTY;
  }

  /** Learn from one event's bytes; false when it is to be held back. */
  private inspect(ev: Buffer): boolean {
    if (this.kind === 'responses') {
      if (!someValue(ev, TYPE_KEY, isResponseEnd)) return true;
      const data = dataOf(ev) as { response?: { usage?: { input_tokens?: number; output_tokens?: number } } } | undefined;
      const u = data?.response?.usage;
      if (u) this.usage = usageOf(u.input_tokens, u.output_tokens);
      this.finished = true;
      return true;
    }
    if (!this.finished && someValue(ev, FINISH_REASON, isString)) this.finished = true;
    if (!someValue(ev, USAGE_KEY, isObject)) return true;
    const data = dataOf(ev) as { usage?: { prompt_tokens?: number; completion_tokens?: number } | null; choices?: unknown[] } | undefined;
    if (!data?.usage) return true;
    this.usage = usageOf(data.usage.prompt_tokens, data.usage.completion_tokens);
    return !(this.dropUsageChunk && (!data.choices || data.choices.length === 0));
  }
}

/** The JSON of an event's data lines, or undefined. */
function dataOf(ev: Buffer): unknown {
  let data = '';
  for (const line of ev.toString('utf8').split(/\r?\n/)) {
    if (line.startsWith('data:')) data += line.slice(line[5] === ' ' ? 6 : 5);
  }
  if (!data || data === '[DONE]') return undefined;
  try {
    return JSON.parse(data);
  } catch {
    return undefined;
  }
}
