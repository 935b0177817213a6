/**
 * A fake OpenAI-compatible upstream for tests, benchmarks and demos: a real HTTP server (node:http)
 * that answers like api.openai.com, so keypool is tested against something honest.
 *
 * This entry (`@keypool/testkit/fake-openai`) never imports vitest: benchmarks and child processes
 * use it outside any test runner. `@keypool/testkit` re-exports it.
 *
 * ```ts
 * const fake = await startFakeOpenAI({ keys: [{ key: 'sk-a', name: 'a', rpm: 60, tpm: 10_000 }], latency: { p50Ms: 40, p99Ms: 300 } });
 * const client = new OpenAI({ apiKey: 'sk-a', baseURL: fake.url, maxRetries: 0 });
 * fake.setFault({ kind: 'error', status: 503, count: 3, key: 'a' });
 * fake.counters().a; // { requests, served, rate429, status, promptTokens, completionTokens, ... }
 * await fake.stop();
 * ```
 *
 * **Endpoints.** POST /v1/chat/completions (JSON, or SSE with `stream: true`: a role chunk, one
 * chunk per token, a finish chunk, with `stream_options.include_usage` a last chunk with `usage` and
 * no choices, then `data: [DONE]`), POST /v1/completions (also streams), POST /v1/embeddings (a
 * string, strings, or token arrays; unit vectors of 8 dimensions by default, `dimensions` honoured,
 * `encoding_format: "base64"` as the SDK asks by default), POST /v1/responses (JSON, or with
 * `stream: true` OpenAI's typed events, each an `event: <type>` line and a `data:` line whose JSON
 * repeats the `type` and has a `sequence_number` from 0: response.created, response.in_progress,
 * response.output_item.added, response.content_part.added, one response.output_text.delta per
 * token, response.output_text.done, response.content_part.done, response.output_item.done, then
 * response.completed whose `response` is the whole response with its `usage`; a reply cut by
 * max_output_tokens ends, as on OpenAI, with response.incomplete instead (status `incomplete`,
 * `incomplete_details: { reason: "max_output_tokens" }`, the message item `incomplete` too); no
 * `data: [DONE]`), GET /v1/models, GET /v1/models/:id.
 *
 * **Tokens.** A text counts ceil(length / 4) tokens; a chat message 4 + its text's tokens (string
 * content or the `text` of its parts); a completions / embeddings input its text's tokens (a token
 * array its length); a responses request its `input` as messages plus `instructions` as one more
 * message. A reply has min(max_tokens | max_completion_tokens | max_output_tokens, or
 * `defaultMaxTokens` = 16 when none is set, the model's `replyTokens` = 32) tokens per choice, one
 * word each; finish_reason is `length` when the cap cut the reply, else `stop`. Same prompt, same
 * reply.
 *
 * **Errors, in this order.** Unknown path 404; no key 401; an unknown or revoked key 401
 * `invalid_api_key`; a body that is not a JSON object 400; an unknown model (or one the key may not
 * use) 404 `model_not_found`; missing or invalid parameters 400; then rate limits: 429.
 *
 * **Rate limits** (per key), enforced the way the key's `limiter` says (./limits.ts, with the
 * provider documents it follows): `minute` (default: token buckets of capacity rpm, resp. tpm,
 * refilling continuously at rpm/60 per second), `window-1s` / `window-10s` (at most
 * floor(rpm x W / 60) requests and floor(tpm x W / 60) tokens in any rolling W, as Azure OpenAI
 * evaluates its limits and as OpenAI says its limits may be quantized) or `bucket` (a continuously
 * refilled bucket holding `burstSeconds` of the limit). Admission takes one request and charges
 * prompt tokens + the completion cap (max_tokens or `defaultMaxTokens`, times n; embeddings: prompt
 * tokens only); nothing is given back afterwards. A refusal is a 429 with `type` `requests` or
 * `tokens`, code `rate_limit_exceeded`, `retry-after` (whole seconds, rounded up) and, except in
 * `bucket` mode, `retry-after-ms` (the time until the request would fit). A request larger than
 * the limit can ever hold gets OpenAI's "Request too large" 429 with no retry-after (waiting never
 * helps). Every /v1 answer for a key with limits carries x-ratelimit-limit-* (the per-minute limit;
 * in window mode the per-window figure, as Azure reports it), x-ratelimit-remaining-* (whole units
 * left) and x-ratelimit-reset-* (time until the bucket is full again, or the window empty, as
 * `120ms`, `1.5s`, `6m0s`); a key without a limit sends no headers for it. /v1/models is not rate
 * limited. The counters give the most requests and tokens admitted in any rolling 1 s, 10 s and
 * 60 s window, exactly.
 *
 * **Latency** (key, else model, else server setting): fixed ms or log-normal `{ p50Ms, p99Ms }`,
 * waited before the answer (for a stream before the first chunk; `chunkDelayMs` then comes before
 * each token chunk and the finish chunk; on a responses stream before each output_text.delta and
 * the output_text.done). 4xx answers come at once.
 *
 * **Faults** (`faults` option, `setFault`, `POST /_fake/faults`): `error` (a 5xx burst of `count`
 * answers, for one key, one model or all), `hang` (never answers), `break-stream` (the socket is
 * closed after `afterChunks` SSE events, without [DONE] or, on a responses stream, its final
 * event); they apply after admission, to every streaming endpoint alike. Revocation
 * and slow keys are key settings (`setKey`, `POST /_fake/keys/:key`).
 *
 * **Control over HTTP** (same port, no auth): GET /_fake/counters, POST /_fake/reset
 * (`{ "countersOnly": true }` optional), GET /_fake/keys, POST /_fake/keys/:key (by secret or name;
 * an unknown secret adds a key), GET | POST | DELETE /_fake/faults. {@link fakeOpenAIControl} wraps
 * them.
 *
 * **No key material out.** Counters and control answers name keys by their configured `name`
 * (default: the hint `sk-...a1b2`); error bodies show the hint; nothing is logged.
 */
export * from './types.js';
export { startFakeOpenAI, keyHint, UNKNOWN_KEY, DEFAULT_MODELS } from './server.js';
export { fakeOpenAIControl, type FakeOpenAIControl, type FakeKeyInfo } from './control.js';
export { parseKeySpec, parseModelSpec, parseList } from './config.js';
export { parseLatency, sampleLatency, seededRandom } from './latency.js';
export { formatDuration, LIMITER_MODES, makeLimiter, PeakWindows, RollingLog, TokenBucket, WindowLimiter, type Limiter } from './limits.js';
export { textTokens, messagesTokens, CHARS_PER_TOKEN, MESSAGE_OVERHEAD_TOKENS } from './text.js';
