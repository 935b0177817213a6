/**
 * Public types of the fake OpenAI-compatible upstream (see ./index.ts for the overview).
 */
import type { LimiterMode } from './limits.js';

export type { LimiterMode } from './limits.js';

/**
 * Latency of a response, in milliseconds: a fixed delay, or a log-normal distribution fitted to
 * its median and 99th percentile (samples are capped at 10 x p99). For a stream this is the time
 * to the first chunk; later chunks are spaced by `chunkDelayMs`.
 */
export type LatencySpec = number | { p50Ms: number; p99Ms: number };

/** One API key the fake accepts. */
export interface FakeKeyOptions {
  /** The secret clients send as `Authorization: Bearer <key>`. Never logged nor reported. */
  key: string;
  /** Name under which counters are reported. Default: the key's hint (`sk-...a1b2`). */
  name?: string;
  /** Requests per minute, enforced as `limiter` says. 0/absent: unlimited. */
  rpm?: number;
  /** Tokens per minute, same rule; a request is charged prompt + max_tokens (or the default) at admission. 0/absent: unlimited. */
  tpm?: number;
  /**
   * How rpm and tpm are enforced, as providers document (./limits.ts cites them). `minute` (default):
   * buckets of capacity rpm (tpm) refilling rpm/60 per second. `window-1s` / `window-10s`: at most
   * floor(rpm x W / 60) requests (and tokens) in any rolling W (Azure OpenAI, OpenAI's quantized
   * limits); `x-ratelimit-limit-*` reports that per-window figure. `bucket`: a bucket of
   * `burstSeconds` of the limit refilling continuously; its 429 carries `retry-after` only.
   */
  limiter?: LimiterMode;
  /** Burst of the `bucket` mode, in seconds of the limit (capacity rpm x burstSeconds / 60, at least 1). Default 1. */
  burstSeconds?: number;
  /** Models this key may use (others answer 404 model_not_found). Absent: every configured model. */
  models?: string[];
  /** Overrides the model's and the server's latency for this key. */
  latency?: LatencySpec;
  /** Overrides the model's and the server's delay between stream chunks. */
  chunkDelayMs?: number;
  /** A revoked key answers 401 invalid_api_key. */
  revoked?: boolean;
}

/**
 * Changes to a key at runtime ({@link FakeOpenAI.setKey}, `POST /_fake/keys/:key`). Absent fields are
 * unchanged; `latency: null` / `chunkDelayMs: null` / `models: null` go back to the defaults; `rpm: 0` /
 * `tpm: 0` remove the limit. A new limit starts with a full bucket; a changed one keeps what is left
 * (at most the new capacity; a window keeps its admissions). A changed `limiter` or `burstSeconds`
 * starts both limits afresh.
 */
export interface FakeKeySettings {
  /** Only when the key is created by this call: a key's counters name never changes. */
  name?: string;
  rpm?: number;
  tpm?: number;
  models?: string[] | null;
  latency?: LatencySpec | null;
  chunkDelayMs?: number | null;
  revoked?: boolean;
  limiter?: LimiterMode;
  burstSeconds?: number;
}

/** One model the fake serves. */
export interface FakeModelOptions {
  id: string;
  /** Which endpoints serve it. Default: `embedding` when the id contains "embedding", else `chat`. */
  type?: 'chat' | 'embedding';
  /** Latency of this model (a key's own latency wins). */
  latency?: LatencySpec;
  /** Delay between stream chunks for this model (a key's own setting wins). */
  chunkDelayMs?: number;
  /** Length of the reply in tokens before max_tokens caps it. Default: the server's `replyTokens`. */
  replyTokens?: number;
  /** Embedding dimensions (a request's `dimensions` wins). Default 8. */
  dimensions?: number;
  /** `owned_by` in /v1/models. Default "openai". */
  ownedBy?: string;
}

/**
 * An injected fault. Faults are checked in the order they were set, after authentication,
 * validation and rate-limit admission (so a faulted request has used its share of the limits, as on
 * a real upstream that accepted it); the first one that matches the request applies and uses one of
 * its `count`.
 */
export interface FakeFault {
  /**
   * `error`: answer `status` (default 500) with an OpenAI server_error body, after the usual latency.
   * `hang`: read the request and never answer, until the client goes away (or the server stops).
   * `break-stream`: streaming requests only; send `afterChunks` SSE events, then destroy the socket
   * (no `[DONE]` nor response.completed, an unterminated chunked body).
   */
  kind: 'error' | 'hang' | 'break-stream';
  /** Key (secret or counters name) the fault is for. Absent: every key. */
  key?: string;
  /** Model the fault is for. Absent: every model. */
  model?: string;
  /** HTTP status of an `error` fault: 500, 502, 503 (any 5xx is accepted). Default 500. */
  status?: number;
  /** Requests the fault affects, then it is gone. Absent: until cleared. */
  count?: number;
  /**
   * `break-stream`: SSE events sent before the socket is closed (chat: `data:` chunks, the role chunk
   * included; responses: whole `event:` + `data:` events, response.created included). Default 2.
   */
  afterChunks?: number;
}

/** Options of {@link startFakeOpenAI}. */
export interface FakeOpenAIOptions {
  /** Default 0: a free port. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** Accepted keys: a bare string is a key with no limits and its hint as name. */
  keys?: Array<string | FakeKeyOptions>;
  /** Served models. Default: gpt-4o-mini, gpt-4o, text-embedding-3-small. */
  models?: Array<string | FakeModelOptions>;
  /** Latency of every response unless a model or key says otherwise. Default 0. */
  latency?: LatencySpec;
  /** Delay between stream chunks unless a model or key says otherwise. Default 0. */
  chunkDelayMs?: number;
  /** Length of every reply in tokens before max_tokens caps it. Default 32. */
  replyTokens?: number;
  /** Completion tokens when a request sets no max_tokens / max_completion_tokens / max_output_tokens. Default 16. */
  defaultMaxTokens?: number;
  /** Faults active from the start (and again after {@link FakeOpenAI.reset}). */
  faults?: FakeFault[];
  /** Seed of the latency sampler, for reproducible runs. Default: random. */
  seed?: number;
}

/** What happened to one key (or to requests with no / an unknown key, under `(unknown)`). */
export interface FakeKeyCounters {
  /** Every /v1 request that presented this key (any outcome, /v1/models included). */
  requests: number;
  /** 2xx answered in full (a JSON body sent, or a stream up to `[DONE]` / its final responses event). */
  served: number;
  /** 429 answers. */
  rate429: number;
  /** Answers by HTTP status (a broken stream counts its 200). */
  status: Record<string, number>;
  /** Prompt tokens of served requests (the `usage` the client saw). */
  promptTokens: number;
  /** Completion tokens of served requests. */
  completionTokens: number;
  /** Streams cut by a break-stream fault. */
  broken: number;
  /** Requests held by a hang fault. */
  hung: number;
  /** Requests whose client went away before the answer was complete. */
  aborted: number;
  /** Requests being handled now, and the most at once. */
  inFlight: number;
  maxInFlight: number;
  /** Most admitted requests (passed the rate limiter) in any rolling 1 s window, exactly. */
  peakRequestsPer1s: number;
  /** Most tokens charged at admission in any rolling 1 s window, exactly. */
  peakTokensPer1s: number;
  /** The same over any rolling 10 s window. */
  peakRequestsPer10s: number;
  peakTokensPer10s: number;
  /** The same over any rolling 60 s window. */
  peakRequestsPerMinute: number;
  peakTokensPerMinute: number;
}

/** A running fake upstream. */
export interface FakeOpenAI {
  /** Base URL for clients: `http://127.0.0.1:<port>/v1`. */
  readonly url: string;
  /** `http://127.0.0.1:<port>`; control endpoints are under `/_fake/`. */
  readonly origin: string;
  readonly port: number;
  /** Close the server and every connection (hung requests included). Idempotent. */
  stop(): Promise<void>;
  /** Counters per key name. */
  counters(): Record<string, FakeKeyCounters>;
  /**
   * Back to the start: counters zeroed, keys and faults as given to startFakeOpenAI (runtime changes
   * undone), buckets full. `{ countersOnly: true }` only zeroes the counters.
   */
  reset(options?: { countersOnly?: boolean }): void;
  /** Change a key (by secret or counters name), or add a key (by secret). Returns its counters name. */
  setKey(key: string, settings: FakeKeySettings): string;
  /** Add a fault (see {@link FakeFault}). */
  setFault(fault: FakeFault): void;
  /** Remove every fault. */
  clearFaults(): void;
  /** The active faults (key fields are counters names), with what is left of their count. */
  faults(): FakeFault[];
}
