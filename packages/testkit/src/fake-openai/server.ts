/**
 * The fake OpenAI-compatible upstream: node:http only, one process, state in memory.
 * See ./index.ts for what it does and ./types.ts for the options.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { delay, readBody } from '../http-util.js';
import { performance } from 'node:perf_hooks';
import { checkLatency, sampleLatency, seededRandom } from './latency.js';
import { DEFAULT_BURST_SECONDS, formatDuration, LIMITER_MODES, makeLimiter, PeakWindows, retryHeaders, TokenBucket, type Limiter, type LimiterMode } from './limits.js';
import { contentText, embeddingBase64, embeddingVector, messagesTokens, replyTokens, textTokens } from './text.js';
import type {
  FakeFault,
  FakeKeyCounters,
  FakeKeyOptions,
  FakeKeySettings,
  FakeModelOptions,
  FakeOpenAI,
  FakeOpenAIOptions,
  LatencySpec,
} from './types.js';

/** What a limiter holds less what is left: the "Used" of a 429's message. */
const usedOf = (l: Limiter, now: number) => Math.ceil((l instanceof TokenBucket ? l.capacity : l.reported()) - l.available(now));

/** Counters name of requests with no key or an unknown one. */
export const UNKNOWN_KEY = '(unknown)';

export const DEFAULT_MODELS = ['gpt-4o-mini', 'gpt-4o', 'text-embedding-3-small'];
const DEFAULT_REPLY_TOKENS = 32;
const DEFAULT_MAX_TOKENS = 16;
const DEFAULT_DIMENSIONS = 8;
const DEFAULT_BREAK_AFTER = 2;
const MAX_BODY_BYTES = 16 * 1024 * 1024;
const MODEL_CREATED = 1_700_000_000;
const ORG = 'org-fake';

/**
 * A display hint like `sk-...a1b2`: a provider's published prefix and the last four characters; under
 * 20 characters only `...` and the last two. The same rule as @keypool/core's hintOf (copied so that
 * the testkit does not depend on core).
 */
export function keyHint(secret: string): string {
  if (secret.length < 20) return `...${secret.slice(-2)}`;
  const prefix = /^(sk-(?:proj-|svcacct-|admin-|or-v1-|ant-api\d\d-)?|gsk_|xai-|pplx-|nvapi-)/.exec(secret)?.[1] ?? '';
  return `${prefix}...${secret.slice(-4)}`;
}

interface KeyState {
  secret: string;
  name: string;
  rpm: number;
  tpm: number;
  models: Set<string> | null;
  latency: LatencySpec | undefined;
  chunkDelayMs: number | undefined;
  revoked: boolean;
  limiter: LimiterMode;
  burstSeconds: number;
  requests: Limiter | null;
  tokens: Limiter | null;
}

interface ModelState {
  id: string;
  type: 'chat' | 'embedding';
  latency: LatencySpec | undefined;
  chunkDelayMs: number | undefined;
  replyTokens: number;
  dimensions: number;
  ownedBy: string;
}

interface CounterState extends FakeKeyCounters {
  window: PeakWindows;
}

interface FaultState extends FakeFault {
  remaining: number;
}

/** An OpenAI error answer. */
class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
  body() {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

const invalid = (message: string, param: string | null = null, code: string | null = null) =>
  new ApiError(400, message, 'invalid_request_error', param, code);

/** A control-endpoint or API-misuse error (TypeError from validation). */
class ControlError extends Error {}

function nonNegative(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw new TypeError(`${what} must be a number >= 0`);
  return value;
}

function positiveInt(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) throw new TypeError(`${what} must be an integer >= 1`);
  return value;
}

function modelState(m: string | FakeModelOptions, replyDefault: number): ModelState {
  const o: FakeModelOptions = typeof m === 'string' ? { id: m } : m;
  if (!o || typeof o.id !== 'string' || !o.id) throw new TypeError('every model needs an id');
  const type = o.type ?? (o.id.includes('embedding') ? 'embedding' : 'chat');
  if (type !== 'chat' && type !== 'embedding') throw new TypeError(`model ${o.id}: type must be "chat" or "embedding"`);
  return {
    id: o.id,
    type,
    latency: o.latency === undefined ? undefined : checkLatency(o.latency, `model ${o.id} latency`),
    chunkDelayMs: o.chunkDelayMs === undefined ? undefined : nonNegative(o.chunkDelayMs, `model ${o.id} chunkDelayMs`),
    replyTokens: o.replyTokens === undefined ? replyDefault : nonNegative(o.replyTokens, `model ${o.id} replyTokens`),
    dimensions: o.dimensions === undefined ? DEFAULT_DIMENSIONS : positiveInt(o.dimensions, `model ${o.id} dimensions`),
    ownedBy: o.ownedBy ?? 'openai',
  };
}

function checkSettings(s: FakeKeySettings): void {
  if (!s || typeof s !== 'object') throw new TypeError('key settings must be an object');
  if (s.name !== undefined && (typeof s.name !== 'string' || !s.name)) throw new TypeError('name must be a non-empty string');
  if (s.rpm !== undefined) nonNegative(s.rpm, 'rpm');
  if (s.tpm !== undefined) nonNegative(s.tpm, 'tpm');
  if (s.models != null && (!Array.isArray(s.models) || s.models.some((m) => typeof m !== 'string'))) throw new TypeError('models must be a list of model ids');
  if (s.latency != null) checkLatency(s.latency);
  if (s.chunkDelayMs != null) nonNegative(s.chunkDelayMs, 'chunkDelayMs');
  if (s.revoked !== undefined && typeof s.revoked !== 'boolean') throw new TypeError('revoked must be a boolean');
  if (s.limiter !== undefined && !LIMITER_MODES.includes(s.limiter)) throw new TypeError(`limiter must be one of ${LIMITER_MODES.join(', ')}`);
  if (s.burstSeconds !== undefined && (typeof s.burstSeconds !== 'number' || !(s.burstSeconds > 0) || !Number.isFinite(s.burstSeconds))) throw new TypeError('burstSeconds must be a number > 0');
}

function applySettings(k: KeyState, s: FakeKeySettings, now: number): void {
  // another way of enforcing starts afresh (full buckets, empty windows)
  const remake = (s.limiter !== undefined && s.limiter !== k.limiter) || (s.burstSeconds !== undefined && s.burstSeconds !== k.burstSeconds);
  if (s.limiter !== undefined) k.limiter = s.limiter;
  if (s.burstSeconds !== undefined) k.burstSeconds = s.burstSeconds;
  const limiter = (current: Limiter | null, perMinute: number, dimension: 'requests' | 'tokens'): Limiter | null => {
    if (perMinute === 0) return null;
    if (current && !remake) {
      current.setLimit(perMinute, now);
      return current;
    }
    return makeLimiter(k.limiter, perMinute, now, dimension, k.burstSeconds);
  };
  if (s.rpm !== undefined) k.rpm = s.rpm;
  if (s.tpm !== undefined) k.tpm = s.tpm;
  if (s.rpm !== undefined || remake) k.requests = limiter(k.requests, k.rpm, 'requests');
  if (s.tpm !== undefined || remake) k.tokens = limiter(k.tokens, k.tpm, 'tokens');
  if (s.models !== undefined) k.models = s.models === null ? null : new Set(s.models);
  if (s.latency !== undefined) k.latency = s.latency === null ? undefined : checkLatency(s.latency);
  if (s.chunkDelayMs !== undefined) k.chunkDelayMs = s.chunkDelayMs === null ? undefined : s.chunkDelayMs;
  if (s.revoked !== undefined) k.revoked = s.revoked;
}

function newCounters(): CounterState {
  return {
    requests: 0,
    served: 0,
    rate429: 0,
    status: {},
    promptTokens: 0,
    completionTokens: 0,
    broken: 0,
    hung: 0,
    aborted: 0,
    inFlight: 0,
    maxInFlight: 0,
    peakRequestsPer1s: 0,
    peakTokensPer1s: 0,
    peakRequestsPer10s: 0,
    peakTokensPer10s: 0,
    peakRequestsPerMinute: 0,
    peakTokensPerMinute: 0,
    window: new PeakWindows(),
  };
}

function checkFault(f: FakeFault): void {
  if (!f || typeof f !== 'object') throw new TypeError('a fault must be an object');
  if (f.kind !== 'error' && f.kind !== 'hang' && f.kind !== 'break-stream') throw new TypeError('fault kind must be "error", "hang" or "break-stream"');
  if (f.status !== undefined && (!Number.isInteger(f.status) || f.status < 500 || f.status > 599)) throw new TypeError('fault status must be a 5xx status');
  if (f.count !== undefined) positiveInt(f.count, 'fault count');
  if (f.afterChunks !== undefined && (!Number.isInteger(f.afterChunks) || f.afterChunks < 0)) throw new TypeError('afterChunks must be an integer >= 0');
  if (f.key !== undefined && typeof f.key !== 'string') throw new TypeError('fault key must be a string');
  if (f.model !== undefined && typeof f.model !== 'string') throw new TypeError('fault model must be a string');
}

const SERVER_ERRORS: Record<number, string> = {
  500: 'The server had an error while processing your request. Sorry about that!',
  502: 'Bad gateway.',
  503: 'The engine is currently overloaded, please try again later.',
  504: 'Gateway timeout.',
};

/** Per request: what the handlers share. */
interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  started: number;
  signal: AbortSignal;
  counters: CounterState;
  /** set when the request ends on purpose without a complete answer (hang, broken stream) */
  deliberate: boolean;
  /** set by a break-stream fault: SSE events to send before the socket is destroyed */
  breakAfter?: number;
}


/** Integer >= 1 or absent; else a 400 like OpenAI's. */
function maxParam(body: Record<string, unknown>, name: string): number | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v)) throw invalid(`Invalid type for '${name}': expected an integer, but got ${typeof v} instead.`, name, 'invalid_type');
  if (v < 1) throw invalid(`Invalid '${name}': integer below minimum value. Expected a value >= 1, but got ${v} instead.`, name, 'integer_below_min_value');
  return v;
}

function streamFlags(body: Record<string, unknown>): { stream: boolean; includeUsage: boolean } {
  if (body.stream !== undefined && body.stream !== null && typeof body.stream !== 'boolean') {
    throw invalid(`Invalid type for 'stream': expected a boolean, but got ${typeof body.stream} instead.`, 'stream', 'invalid_type');
  }
  const stream = body.stream === true;
  const opts = body.stream_options;
  if (opts !== undefined && opts !== null && !stream) {
    throw invalid("The 'stream_options' parameter is only allowed when 'stream' is enabled.", 'stream_options', 'invalid_value');
  }
  const includeUsage = stream && !!opts && typeof opts === 'object' && (opts as { include_usage?: unknown }).include_usage === true;
  return { stream, includeUsage };
}

function choicesParam(body: Record<string, unknown>): number {
  const n = body.n ?? 1;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 128) throw invalid("Invalid 'n': expected an integer from 1 to 128.", 'n', 'invalid_value');
  return n;
}

/** The texts of `input` / `prompt`: a string, strings, a token array or token arrays (a token array counts its length). */
function promptList(value: unknown, param: string): Array<{ text: string; tokens: number }> {
  if (value === undefined || value === null) throw invalid(`Missing required parameter: '${param}'.`, param, 'missing_required_parameter');
  const bad = () => invalid(`Invalid '${param}': expected a non-empty string, array of strings, array of tokens or array of token arrays.`, param, 'invalid_value');
  const isTokens = (x: unknown): x is number[] => Array.isArray(x) && x.length > 0 && x.every((t) => Number.isInteger(t));
  if (typeof value === 'string') {
    if (!value) throw bad();
    return [{ text: value, tokens: textTokens(value) }];
  }
  if (isTokens(value)) return [{ text: `tokens:${value.join(',')}`, tokens: value.length }];
  if (!Array.isArray(value) || value.length === 0) throw bad();
  return value.map((x: unknown) => {
    if (typeof x === 'string' && x) return { text: x, tokens: textTokens(x) };
    if (isTokens(x)) return { text: `tokens:${x.join(',')}`, tokens: x.length };
    throw bad();
  });
}

const sse = (data: unknown) => `data: ${JSON.stringify(data)}\n\n`;

/** What a generation request asks for, once validated. */
interface Generation {
  model: ModelState;
  promptTokens: number;
  /** tokens of each choice */
  perChoice: string[][];
  finish: 'stop' | 'length';
  completionTokens: number;
  /** tokens charged against TPM at admission */
  charge: number;
  stream: boolean;
  includeUsage: boolean;
}

/** Start the fake upstream; resolves once it listens. */
export async function startFakeOpenAI(options: FakeOpenAIOptions = {}): Promise<FakeOpenAI> {
  const host = options.host ?? '127.0.0.1';
  const replyDefault = options.replyTokens === undefined ? DEFAULT_REPLY_TOKENS : nonNegative(options.replyTokens, 'replyTokens');
  const defaultMaxTokens = options.defaultMaxTokens === undefined ? DEFAULT_MAX_TOKENS : positiveInt(options.defaultMaxTokens, 'defaultMaxTokens');
  const defaultLatency = options.latency === undefined ? undefined : checkLatency(options.latency);
  const defaultChunkDelay = options.chunkDelayMs === undefined ? 0 : nonNegative(options.chunkDelayMs, 'chunkDelayMs');
  const random = seededRandom(options.seed ?? randomInt(2 ** 32));

  const models = new Map<string, ModelState>();
  for (const m of options.models ?? DEFAULT_MODELS) {
    const state = modelState(m, replyDefault);
    models.set(state.id, state);
  }

  // the start configuration, copied so that reset() restores it whatever the caller does to its objects
  const initialKeys: FakeKeyOptions[] = (options.keys ?? []).map((k) => (typeof k === 'string' ? { key: k } : structuredClone(k)));
  const initialFaults: FakeFault[] = (options.faults ?? []).map((f) => structuredClone(f));

  const bySecret = new Map<string, KeyState>();
  const byName = new Map<string, KeyState>();
  let counters = new Map<string, CounterState>();
  let faults: FaultState[] = [];
  let stopping = false;

  function counterFor(name: string): CounterState {
    let c = counters.get(name);
    if (!c) counters.set(name, (c = newCounters()));
    return c;
  }

  function addKey(o: FakeKeyOptions): KeyState {
    if (!o || typeof o.key !== 'string' || !o.key) throw new TypeError('every key needs a non-empty `key`');
    if (bySecret.has(o.key)) throw new TypeError(`key ${o.name ?? keyHint(o.key)} is configured twice`);
    const { key: secret, ...settings } = o;
    checkSettings(settings);
    const name = o.name ?? keyHint(secret);
    if (byName.has(name) || name === UNKNOWN_KEY) throw new TypeError(`two keys share the name ${name}: give them distinct names`);
    const k: KeyState = {
      secret,
      name,
      rpm: 0,
      tpm: 0,
      models: null,
      latency: undefined,
      chunkDelayMs: undefined,
      revoked: false,
      limiter: 'minute',
      burstSeconds: DEFAULT_BURST_SECONDS,
      requests: null,
      tokens: null,
    };
    applySettings(k, settings, performance.now());
    bySecret.set(secret, k);
    byName.set(name, k);
    counterFor(name);
    return k;
  }

  function resolveKey(ref: string): KeyState | undefined {
    return bySecret.get(ref) ?? byName.get(ref);
  }

  function addFault(f: FakeFault): void {
    checkFault(f);
    let key = f.key;
    if (key !== undefined) {
      const k = resolveKey(key);
      if (!k) throw new TypeError('fault for a key that is not configured');
      key = k.name;
    }
    const { key: _ref, ...rest } = f;
    faults.push({ ...rest, ...(key === undefined ? {} : { key }), remaining: f.count ?? Infinity });
  }

  function configure(): void {
    bySecret.clear();
    byName.clear();
    faults = [];
    for (const k of initialKeys) addKey(structuredClone(k));
    for (const f of initialFaults) addFault(f);
  }
  configure();

  function takeFault(key: KeyState, model: ModelState, stream: boolean): FaultState | undefined {
    for (let i = 0; i < faults.length; i++) {
      const f = faults[i]!;
      if (f.key !== undefined && f.key !== key.name) continue;
      if (f.model !== undefined && f.model !== model.id) continue;
      if (f.kind === 'break-stream' && !stream) continue;
      if (--f.remaining <= 0) faults.splice(i, 1);
      return f;
    }
    return undefined;
  }

  /** x-ratelimit-* as the key's mode reports them (see ./limits.ts). */
  function limitHeaders(k: KeyState, now: number): Record<string, string> {
    const h: Record<string, string> = {};
    for (const [dimension, l] of [['requests', k.requests], ['tokens', k.tokens]] as const) {
      if (!l) continue;
      h[`x-ratelimit-limit-${dimension}`] = String(l.reported());
      h[`x-ratelimit-remaining-${dimension}`] = String(Math.max(0, Math.floor(l.available(now))));
      h[`x-ratelimit-reset-${dimension}`] = formatDuration(l.resetMs(now));
    }
    return h;
  }

  /** "Limit 600" (a minute bucket), "Limit 10 per 1s (600 per min)" (a window), "Limit 600, burst 10" (a bucket). */
  function limitText(k: KeyState, l: Limiter, perMinute: number): string {
    if (k.limiter === 'minute') return `Limit ${perMinute}`;
    if (k.limiter === 'bucket') return `Limit ${perMinute}, burst ${Math.floor(Math.max(1, (perMinute * k.burstSeconds) / 60))}`;
    return `Limit ${l.reported()} per ${k.limiter.slice('window-'.length)} (${perMinute} per min)`;
  }

  /** Takes a request and `charge` tokens, or throws the 429 the provider would send. */
  function admit(k: KeyState, model: ModelState, charge: number, c: CounterState): void {
    const now = performance.now();
    const fail = (type: 'requests' | 'tokens', waitMs: number, message: string) =>
      new ApiError(429, message, type, null, 'rate_limit_exceeded', { ...limitHeaders(k, now), ...retryHeaders(k.limiter, waitMs) });
    const learnMore = 'Visit https://platform.openai.com/account/rate-limits to learn more.';
    if (k.requests) {
      const wait = k.requests.waitMs(1, now);
      if (wait > 0) {
        const used = usedOf(k.requests, now);
        throw fail('requests', wait, `Rate limit reached for ${model.id} in organization ${ORG} on requests per min (RPM): ${limitText(k, k.requests, k.rpm)}, Used ${used}, Requested 1. Please try again in ${formatDuration(wait)}. ${learnMore}`);
      }
    }
    if (k.tokens) {
      const wait = k.tokens.waitMs(charge, now);
      if (wait === Infinity) {
        throw fail('tokens', wait, `Request too large for ${model.id} in organization ${ORG} on tokens per min (TPM): ${limitText(k, k.tokens, k.tpm)}, Requested ${charge}. The input or output tokens must be reduced in order to run successfully. ${learnMore}`);
      }
      if (wait > 0) {
        const used = usedOf(k.tokens, now);
        throw fail('tokens', wait, `Rate limit reached for ${model.id} in organization ${ORG} on tokens per min (TPM): ${limitText(k, k.tokens, k.tpm)}, Used ${used}, Requested ${charge}. Please try again in ${formatDuration(wait)}. ${learnMore}`);
      }
    }
    k.requests?.take(1, now);
    k.tokens?.take(charge, now);
    c.window.add(now, charge);
    const p = c.window.peaks;
    c.peakRequestsPer1s = p['1s'].requests;
    c.peakTokensPer1s = p['1s'].tokens;
    c.peakRequestsPer10s = p['10s'].requests;
    c.peakTokensPer10s = p['10s'].tokens;
    c.peakRequestsPerMinute = p['60s'].requests;
    c.peakTokensPerMinute = p['60s'].tokens;
  }

  function send(ctx: Ctx, status: number, body: unknown, headers: Record<string, string> = {}): void {
    const { res, counters: c } = ctx;
    if (res.destroyed || res.headersSent) return;
    const data = JSON.stringify(body);
    for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
    res.setHeader('openai-processing-ms', String(Math.round(performance.now() - ctx.started)));
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) });
    res.end(data);
    c.status[status] = (c.status[status] ?? 0) + 1;
    if (status === 429) c.rate429++;
  }

  function model(k: KeyState, body: Record<string, unknown>, type: 'chat' | 'embedding', endpoint: string): ModelState {
    if (typeof body.model !== 'string' || !body.model) throw invalid('you must provide a model parameter');
    const m = models.get(body.model);
    if (!m || (k.models && !k.models.has(m.id))) {
      throw new ApiError(404, `The model \`${body.model}\` does not exist or you do not have access to it.`, 'invalid_request_error', null, 'model_not_found');
    }
    if (m.type !== type) {
      throw invalid(`The model \`${m.id}\` is ${m.type === 'chat' ? 'a chat model' : 'an embedding model'} and is not supported in the ${endpoint} endpoint.`, 'model');
    }
    return m;
  }

  /** The reply of a chat / completions / responses request. */
  function generation(
    m: ModelState,
    promptTokens: number,
    promptText: string,
    cap: number | undefined,
    choices: number,
    flags: { stream: boolean; includeUsage: boolean },
  ): Generation {
    const max = cap ?? defaultMaxTokens;
    const n = Math.min(max, m.replyTokens);
    const perChoice = Array.from({ length: choices }, (_, i) => replyTokens(`${m.id}\n${i}\n${promptText}`, n));
    return {
      model: m,
      promptTokens,
      perChoice,
      finish: m.replyTokens > max ? 'length' : 'stop',
      completionTokens: n * choices,
      charge: promptTokens + max * choices,
      ...flags,
    };
  }

  /** Latency, then the answer; faults decide otherwise. */
  async function serve(ctx: Ctx, k: KeyState, g: Pick<Generation, 'model' | 'charge' | 'stream'>, answer: () => Promise<void> | void) {
    const c = ctx.counters;
    admit(k, g.model, g.charge, c);
    for (const [name, value] of Object.entries(limitHeaders(k, performance.now()))) ctx.res.setHeader(name, value);
    const fault = takeFault(k, g.model, g.stream);
    if (fault?.kind === 'hang') {
      c.hung++;
      ctx.deliberate = true;
      return; // the response stays open until the client (or stop()) closes the connection
    }
    const latency = sampleLatency(k.latency ?? g.model.latency ?? defaultLatency, random);
    if (!(await delay(latency, ctx.signal))) return;
    if (fault?.kind === 'error') {
      const status = fault.status ?? 500;
      send(ctx, status, new ApiError(status, SERVER_ERRORS[status] ?? 'Internal server error.', 'server_error').body());
      return;
    }
    if (fault?.kind === 'break-stream') ctx.breakAfter = fault.afterChunks ?? DEFAULT_BREAK_AFTER;
    await answer();
  }

  function served(ctx: Ctx, promptTokens: number, completionTokens: number): void {
    ctx.counters.served++;
    ctx.counters.promptTokens += promptTokens;
    ctx.counters.completionTokens += completionTokens;
  }

  /**
   * Writes SSE events; `timed[i]` says whether event i waits chunkDelayMs first. `end` is written
   * after the last event of a whole stream (chat and completions: `data: [DONE]`).
   */
  async function stream(ctx: Ctx, chunkDelayMs: number, events: Array<{ data: string; timed: boolean }>, onDone: () => void, end = 'data: [DONE]\n\n') {
    const { res, counters: c, breakAfter } = ctx;
    res.setHeader('openai-processing-ms', String(Math.round(performance.now() - ctx.started)));
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' });
    c.status[200] = (c.status[200] ?? 0) + 1;
    const last = breakAfter === undefined ? events.length : Math.min(breakAfter, events.length);
    for (let i = 0; i < last; i++) {
      const ev = events[i]!;
      if (ev.timed && i > 0 && chunkDelayMs > 0 && !(await delay(chunkDelayMs, ctx.signal))) return;
      if (res.destroyed) return;
      res.write(ev.data);
    }
    if (breakAfter === undefined) {
      res.end(end);
      onDone();
      return;
    }
    // broken stream: what was written reaches the client, then the connection drops mid-body
    // (no [DONE] nor final event, no terminating chunk)
    ctx.deliberate = true;
    c.broken++;
    await new Promise<void>((resolve) => {
      ctx.signal.addEventListener('abort', () => resolve(), { once: true });
      res.write('', () => resolve());
    });
    res.destroy();
  }

  function chunkDelay(k: KeyState, m: ModelState): number {
    return k.chunkDelayMs ?? m.chunkDelayMs ?? defaultChunkDelay;
  }

  function usageOf(g: Generation) {
    return {
      prompt_tokens: g.promptTokens,
      completion_tokens: g.completionTokens,
      total_tokens: g.promptTokens + g.completionTokens,
      prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
    };
  }

  async function chatCompletions(ctx: Ctx, k: KeyState, body: Record<string, unknown>) {
    const m = model(k, body, 'chat', 'v1/chat/completions');
    const messages = body.messages;
    if (messages === undefined || messages === null) throw invalid("Missing required parameter: 'messages'.", 'messages', 'missing_required_parameter');
    if (!Array.isArray(messages)) throw invalid(`Invalid type for 'messages': expected an array of objects, but got ${typeof messages} instead.`, 'messages', 'invalid_type');
    if (messages.length === 0) throw invalid("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.", 'messages', 'empty_array');
    messages.forEach((msg, i) => {
      if (!msg || typeof msg !== 'object' || typeof (msg as { role?: unknown }).role !== 'string') {
        throw invalid(`Missing required parameter: 'messages[${i}].role'.`, `messages[${i}].role`, 'missing_required_parameter');
      }
    });
    const cap = maxParam(body, 'max_completion_tokens') ?? maxParam(body, 'max_tokens');
    const g = generation(m, messagesTokens(messages), messages.map((x) => contentText(x.content)).join('\n'), cap, choicesParam(body), streamFlags(body));
    const id = `chatcmpl-${randomBytes(12).toString('hex')}`;
    const created = Math.floor(Date.now() / 1000);
    const base = { id, object: 'chat.completion.chunk', created, model: m.id, service_tier: 'default', system_fingerprint: 'fp_fake' };
    await serve(ctx, k, g, async () => {
      if (!g.stream) {
        send(ctx, 200, {
          id,
          object: 'chat.completion',
          created,
          model: m.id,
          choices: g.perChoice.map((tokens, index) => ({
            index,
            message: { role: 'assistant', content: tokens.join(''), refusal: null, annotations: [] },
            logprobs: null,
            finish_reason: g.finish,
          })),
          usage: usageOf(g),
          service_tier: 'default',
          system_fingerprint: 'fp_fake',
        });
        served(ctx, g.promptTokens, g.completionTokens);
        return;
      }
      const extra = g.includeUsage ? { usage: null } : {};
      const chunk = (index: number, delta: object, finish: string | null) => sse({ ...base, choices: [{ index, delta, logprobs: null, finish_reason: finish }], ...extra });
      const events: Array<{ data: string; timed: boolean }> = [];
      g.perChoice.forEach((tokens, index) => {
        events.push({ data: chunk(index, { role: 'assistant', content: '', refusal: null }, null), timed: index > 0 });
        for (const t of tokens) events.push({ data: chunk(index, { content: t }, null), timed: true });
        events.push({ data: chunk(index, {}, g.finish), timed: true });
      });
      if (g.includeUsage) events.push({ data: sse({ ...base, choices: [], usage: usageOf(g) }), timed: false });
      await stream(ctx, chunkDelay(k, m), events, () => served(ctx, g.promptTokens, g.completionTokens));
    });
  }

  async function completions(ctx: Ctx, k: KeyState, body: Record<string, unknown>) {
    const m = model(k, body, 'chat', 'v1/completions');
    const prompts = promptList(body.prompt, 'prompt');
    const n = choicesParam(body);
    const cap = maxParam(body, 'max_tokens');
    const flags = streamFlags(body);
    const promptTokens = prompts.reduce((s, p) => s + p.tokens, 0);
    // one choice per prompt and per n, as the legacy endpoint does
    const gens = prompts.map((p) => generation(m, p.tokens, p.text, cap, n, flags));
    const perChoice = gens.flatMap((x) => x.perChoice);
    const g: Generation = { ...gens[0]!, promptTokens, perChoice, completionTokens: gens.reduce((s, x) => s + x.completionTokens, 0), charge: promptTokens + (cap ?? defaultMaxTokens) * n * prompts.length };
    const id = `cmpl-${randomBytes(12).toString('hex')}`;
    const created = Math.floor(Date.now() / 1000);
    const usage = { prompt_tokens: g.promptTokens, completion_tokens: g.completionTokens, total_tokens: g.promptTokens + g.completionTokens };
    await serve(ctx, k, g, async () => {
      if (!g.stream) {
        send(ctx, 200, {
          id,
          object: 'text_completion',
          created,
          model: m.id,
          choices: perChoice.map((tokens, index) => ({ text: tokens.join(''), index, logprobs: null, finish_reason: g.finish })),
          usage,
          system_fingerprint: 'fp_fake',
        });
        served(ctx, g.promptTokens, g.completionTokens);
        return;
      }
      const base = { id, object: 'text_completion', created, model: m.id, system_fingerprint: 'fp_fake' };
      const extra = g.includeUsage ? { usage: null } : {};
      const chunk = (index: number, text: string, finish: string | null) => sse({ ...base, choices: [{ text, index, logprobs: null, finish_reason: finish }], ...extra });
      const events: Array<{ data: string; timed: boolean }> = [];
      perChoice.forEach((tokens, index) => {
        tokens.forEach((t, i) => events.push({ data: chunk(index, t, null), timed: index > 0 || i > 0 }));
        events.push({ data: chunk(index, '', g.finish), timed: true });
      });
      if (g.includeUsage) events.push({ data: sse({ ...base, choices: [], usage }), timed: false });
      await stream(ctx, chunkDelay(k, m), events, () => served(ctx, g.promptTokens, g.completionTokens));
    });
  }

  async function embeddings(ctx: Ctx, k: KeyState, body: Record<string, unknown>) {
    const m = model(k, body, 'embedding', 'v1/embeddings');
    const inputs = promptList(body.input, 'input');
    let dims = m.dimensions;
    if (body.dimensions !== undefined && body.dimensions !== null) {
      if (typeof body.dimensions !== 'number' || !Number.isInteger(body.dimensions) || body.dimensions < 1 || body.dimensions > 4096) {
        throw invalid("Invalid 'dimensions': expected an integer from 1 to 4096.", 'dimensions', 'invalid_value');
      }
      dims = body.dimensions;
    }
    const format = body.encoding_format ?? 'float';
    if (format !== 'float' && format !== 'base64') throw invalid("Invalid 'encoding_format': expected 'float' or 'base64'.", 'encoding_format', 'invalid_value');
    const promptTokens = inputs.reduce((s, p) => s + p.tokens, 0);
    await serve(ctx, k, { model: m, charge: promptTokens, stream: false }, () => {
      send(ctx, 200, {
        object: 'list',
        data: inputs.map((p, index) => {
          const v = embeddingVector(m.id, p.text, dims);
          return { object: 'embedding', index, embedding: format === 'base64' ? embeddingBase64(v) : v };
        }),
        model: m.id,
        usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
      });
      served(ctx, promptTokens, 0);
    });
  }

  async function responses(ctx: Ctx, k: KeyState, body: Record<string, unknown>) {
    const m = model(k, body, 'chat', 'v1/responses');
    const input = body.input;
    let messages: Array<{ content?: unknown }>;
    if (typeof input === 'string') messages = [{ content: input }];
    else if (Array.isArray(input) && input.length > 0 && input.every((x) => x && typeof x === 'object')) messages = input as Array<{ content?: unknown }>;
    else throw invalid("Invalid 'input': expected a string or a non-empty array of input items.", 'input', 'invalid_value');
    if (typeof body.instructions === 'string') messages = [{ content: body.instructions }, ...messages];
    const cap = maxParam(body, 'max_output_tokens');
    // the Responses API has no include_usage: the usage always comes in the final event
    const { stream: streaming } = streamFlags(body);
    const g = generation(m, messagesTokens(messages), messages.map((x) => contentText(x.content)).join('\n'), cap, 1, { stream: streaming, includeUsage: false });
    const id = `resp_${randomBytes(16).toString('hex')}`;
    const itemId = `msg_${randomBytes(16).toString('hex')}`;
    const createdAt = Math.floor(Date.now() / 1000);
    const tokens = g.perChoice[0]!;
    const text = tokens.join('');
    // a reply cut by max_output_tokens is `incomplete`, as OpenAI answers (and streams: response.incomplete)
    const final = g.finish === 'length' ? 'incomplete' : 'completed';
    const usage = {
      input_tokens: g.promptTokens,
      input_tokens_details: { cached_tokens: 0 },
      output_tokens: g.completionTokens,
      output_tokens_details: { reasoning_tokens: 0 },
      total_tokens: g.promptTokens + g.completionTokens,
    };
    const part = (t: string) => ({ type: 'output_text', text: t, annotations: [], logprobs: [] });
    const message = (status: string, content: object[]) => ({ id: itemId, type: 'message', status, role: 'assistant', content });
    const response = (status: string, output: object[], u: typeof usage | null) => ({
      id,
      object: 'response',
      created_at: createdAt,
      status,
      error: null,
      incomplete_details: status === 'incomplete' ? { reason: 'max_output_tokens' } : null,
      instructions: typeof body.instructions === 'string' ? body.instructions : null,
      max_output_tokens: cap ?? null,
      metadata: {},
      model: m.id,
      output,
      parallel_tool_calls: true,
      temperature: 1,
      tool_choice: 'auto',
      tools: [],
      top_p: 1,
      usage: u,
    });
    const done = () => response(final, [message(final, [part(text)])], usage);
    await serve(ctx, k, g, async () => {
      if (!g.stream) {
        send(ctx, 200, done());
        served(ctx, g.promptTokens, g.completionTokens);
        return;
      }
      // OpenAI's event sequence for one text message; each event names its type twice (the SSE
      // `event:` line and the JSON `type`) and carries a sequence_number from 0
      let seq = 0;
      const event = (type: string, data: object, timed = false) => ({ data: `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: seq++, ...data })}\n\n`, timed });
      const at = { item_id: itemId, output_index: 0, content_index: 0 };
      const events = [
        event('response.created', { response: response('in_progress', [], null) }),
        event('response.in_progress', { response: response('in_progress', [], null) }),
        event('response.output_item.added', { output_index: 0, item: message('in_progress', []) }),
        event('response.content_part.added', { ...at, part: part('') }),
        ...tokens.map((t) => event('response.output_text.delta', { ...at, delta: t, logprobs: [] }, true)),
        event('response.output_text.done', { ...at, text, logprobs: [] }, true),
        event('response.content_part.done', { ...at, part: part(text) }),
        event('response.output_item.done', { output_index: 0, item: message(final, [part(text)]) }),
        event(`response.${final}`, { response: done() }),
      ];
      // no `data: [DONE]`: a responses stream ends with its last event
      await stream(ctx, chunkDelay(k, m), events, () => served(ctx, g.promptTokens, g.completionTokens), '');
    });
  }

  function listModels(ctx: Ctx, k: KeyState, id?: string) {
    const visible = [...models.values()].filter((m) => !k.models || k.models.has(m.id));
    const entry = (m: ModelState) => ({ id: m.id, object: 'model', created: MODEL_CREATED, owned_by: m.ownedBy });
    if (id === undefined) {
      send(ctx, 200, { object: 'list', data: visible.map(entry) });
    } else {
      const m = visible.find((x) => x.id === id);
      if (!m) throw new ApiError(404, `The model \`${id}\` does not exist or you do not have access to it.`, 'invalid_request_error', null, 'model_not_found');
      send(ctx, 200, entry(m));
    }
    ctx.counters.served++;
  }

  const routes: Record<string, (ctx: Ctx, k: KeyState, body: Record<string, unknown>) => Promise<void>> = {
    '/v1/chat/completions': chatCompletions,
    '/v1/completions': completions,
    '/v1/embeddings': embeddings,
    '/v1/responses': responses,
  };

  async function handleApi(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const started = performance.now();
    res.setHeader('x-request-id', `req_${randomBytes(16).toString('hex')}`);
    res.setHeader('openai-version', '2020-10-01');
    const raw = await readBody(req, MAX_BODY_BYTES);

    const controller = new AbortController();
    // identify the key first: every request is counted under its key
    const auth = req.headers.authorization;
    const secret = typeof auth === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(auth)?.[1] : undefined;
    const k = secret === undefined ? undefined : bySecret.get(secret);
    const c = counterFor(k ? k.name : UNKNOWN_KEY);
    const ctx: Ctx = { req, res, started, signal: controller.signal, counters: c, deliberate: false };
    c.requests++;
    c.inFlight++;
    if (c.inFlight > c.maxInFlight) c.maxInFlight = c.inFlight;
    res.on('close', () => {
      c.inFlight--;
      if (!res.writableFinished) {
        if (!ctx.deliberate && !stopping) c.aborted++;
        controller.abort();
      }
    });

    try {
      const method = req.method ?? 'GET';
      const modelPath = /^\/v1\/models(?:\/(.+))?$/.exec(path);
      const route = method === 'POST' ? routes[path] : undefined;
      if (!route && !(method === 'GET' && modelPath)) throw new ApiError(404, `Invalid URL (${method} ${path})`, 'invalid_request_error');
      if (secret === undefined) {
        throw new ApiError(
          401,
          "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
          'invalid_request_error',
        );
      }
      if (!k || k.revoked) {
        // the hint only: the fake never repeats a key it was given
        throw new ApiError(401, `Incorrect API key provided: ${keyHint(secret)}. You can find your API key at https://platform.openai.com/account/api-keys.`, 'invalid_request_error', null, 'invalid_api_key');
      }
      for (const [name, value] of Object.entries(limitHeaders(k, performance.now()))) res.setHeader(name, value);
      if (modelPath) {
        listModels(ctx, k, modelPath[1] === undefined ? undefined : decodeURIComponent(modelPath[1]));
        return;
      }
      if (raw === null) throw new ApiError(413, 'Request body too large for the fake.', 'invalid_request_error');
      let body: unknown;
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch {
        body = undefined;
      }
      if (!body || typeof body !== 'object' || Array.isArray(body)) {
        throw invalid(
          "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
        );
      }
      await route!(ctx, k, body as Record<string, unknown>);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      send(ctx, err.status, err.body(), err.headers);
    }
  }

  // ---- control endpoints (/_fake/...): other processes drive the fake through them ----

  function publicKey(k: KeyState) {
    return {
      name: k.name,
      hint: keyHint(k.secret),
      rpm: k.rpm,
      tpm: k.tpm,
      models: k.models ? [...k.models] : null,
      latency: k.latency ?? null,
      chunkDelayMs: k.chunkDelayMs ?? null,
      revoked: k.revoked,
      limiter: k.limiter,
      burstSeconds: k.burstSeconds,
    };
  }

  function listFaults(): FakeFault[] {
    return faults.map(({ remaining, ...f }) => ({ ...f, ...(Number.isFinite(remaining) ? { count: remaining } : {}) }));
  }

  const api: FakeOpenAI = {
    url: '',
    origin: '',
    port: 0,
    stop,
    counters() {
      const out: Record<string, FakeKeyCounters> = {};
      for (const [name, { window: _window, ...c }] of counters) out[name] = { ...c, status: { ...c.status } };
      return out;
    },
    reset(opts = {}) {
      const fresh = new Map<string, CounterState>();
      // requests in flight finish against the old counters; configured keys are listed at zero
      counters = fresh;
      if (!opts.countersOnly) configure();
      else for (const name of byName.keys()) counterFor(name);
    },
    setKey(ref, settings) {
      checkSettings(settings);
      const k = resolveKey(ref);
      if (!k) return addKey({ ...settings, key: ref } as FakeKeyOptions).name;
      if (settings.name !== undefined && settings.name !== k.name) throw new TypeError(`key ${k.name} exists: its name cannot change`);
      applySettings(k, settings, performance.now());
      return k.name;
    },
    setFault: addFault,
    clearFaults() {
      faults = [];
    },
    faults: listFaults,
  };

  async function handleControl(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const raw = await readBody(req, MAX_BODY_BYTES);
    const reply = (status: number, body: unknown) => {
      const data = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) });
      res.end(data);
    };
    try {
      let body: unknown;
      if (raw && raw.length > 0) {
        try {
          body = JSON.parse(raw.toString('utf8'));
        } catch {
          throw new ControlError('the body is not JSON');
        }
      }
      const method = req.method ?? 'GET';
      const keyPath = /^\/_fake\/keys\/([^/]+)$/.exec(path);
      if (method === 'GET' && path === '/_fake/counters') return reply(200, api.counters());
      if (method === 'POST' && path === '/_fake/reset') {
        api.reset({ countersOnly: !!(body as { countersOnly?: unknown } | undefined)?.countersOnly });
        return reply(200, { ok: true });
      }
      if (method === 'GET' && path === '/_fake/keys') return reply(200, [...byName.values()].map(publicKey));
      if (method === 'POST' && keyPath) {
        const name = api.setKey(decodeURIComponent(keyPath[1]!), (body ?? {}) as FakeKeySettings);
        return reply(200, publicKey(byName.get(name)!));
      }
      if (path === '/_fake/faults') {
        if (method === 'GET') return reply(200, listFaults());
        if (method === 'DELETE') {
          api.clearFaults();
          return reply(200, []);
        }
        if (method === 'POST') {
          const list = Array.isArray(body) ? body : [body];
          for (const f of list) checkFault(f as FakeFault);
          for (const f of list) addFault(f as FakeFault);
          return reply(200, listFaults());
        }
      }
      return reply(404, { error: { message: `no control endpoint ${method} ${path}` } });
    } catch (err) {
      if (err instanceof TypeError || err instanceof ControlError) return reply(400, { error: { message: err.message } });
      throw err;
    }
  }

  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://fake').pathname;
    const handler = path.startsWith('/_fake/') ? handleControl : handleApi;
    handler(req, res, path).catch((err: unknown) => {
      // a bug of the fake: say so without taking the process down
      if (!res.headersSent && !res.destroyed) {
        const data = JSON.stringify({ error: { message: `fake-openai internal error: ${(err as Error)?.message ?? err}`, type: 'server_error', param: null, code: null } });
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(data);
      } else res.destroy();
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const origin = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  Object.assign(api, { url: `${origin}/v1`, origin, port });

  let stopped: Promise<void> | undefined;
  function stop(): Promise<void> {
    stopped ??= new Promise<void>((resolve) => {
      stopping = true;
      server.close(() => resolve());
      server.closeAllConnections();
    });
    return stopped;
  }

  return api;
}
