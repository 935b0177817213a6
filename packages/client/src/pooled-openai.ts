import OpenAI from 'openai';
import { PoolExhaustedError, cooldownFromHeaders, type KeyPool, type Lease, type Outcome } from '@keypool/core';
import { estimateChat, estimateCompletion, estimateEmbedding, estimateResponse, type Estimate } from './estimate.js';

export interface PooledOpenAIOptions {
  pool: KeyPool;
  /** Attempts per call across keys (default 4). */
  maxAttempts?: number;
  /** Overall deadline of a call, waiting for a key included (default 60 s; a per-call `timeout` overrides). */
  deadlineMs?: number;
  /** Full-jitter exponential backoff between attempts: base and cap (default 100 ms, 5 s). */
  backoff?: { baseMs?: number; maxMs?: number };
  /** Output tokens assumed when a request sets no max (default 1024). */
  defaultMaxOutputTokens?: number;
  /** Timeout of one upstream attempt (default 60 s). */
  attemptTimeoutMs?: number;
}

export interface CallOptions {
  signal?: AbortSignal;
  /** Overall deadline of this call, ms. */
  timeout?: number;
}

interface Attempt<T> {
  /** Run the upstream call on a client bound to one key. */
  call: (client: OpenAI, signal: AbortSignal) => Promise<{ data: T; response: Response }>;
  /** Usage of a finished non-stream result. */
  usage: (data: T) => Outcome['usage'];
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => (clearTimeout(t), reject(signal.reason)), { once: true });
  });

/**
 * The `openai` SDK surface (chat.completions.create, completions.create, embeddings.create,
 * responses.create) backed by a KeyPool: one official client per key, created once, SDK retries
 * off; each call estimates its tokens, leases a key, calls, and releases with real usage. 429,
 * 5xx, timeouts and connection errors retry on another key with full-jitter backoff (honouring
 * Retry-After) within maxAttempts and the call's deadline; 401/403 revoke the key and move on;
 * other 4xx are returned unchanged at once. Streams are reconciled when they end.
 */
export class PooledOpenAI {
  readonly chat: { completions: { create: (params: OpenAI.Chat.ChatCompletionCreateParams, options?: CallOptions) => Promise<any> } };
  readonly completions: { create: (params: OpenAI.CompletionCreateParams, options?: CallOptions) => Promise<any> };
  readonly embeddings: { create: (params: OpenAI.EmbeddingCreateParams, options?: CallOptions) => Promise<OpenAI.CreateEmbeddingResponse> };
  readonly responses: { create: (params: OpenAI.Responses.ResponseCreateParams, options?: CallOptions) => Promise<any> };

  private readonly pool: KeyPool;
  private readonly clients = new Map<string, OpenAI>();
  private readonly maxAttempts: number;
  private readonly deadlineMs: number;
  private readonly baseMs: number;
  private readonly maxMs: number;
  private readonly defaultOut: number;
  private readonly attemptTimeoutMs: number;

  constructor(opts: PooledOpenAIOptions) {
    this.pool = opts.pool;
    this.maxAttempts = opts.maxAttempts ?? 4;
    this.deadlineMs = opts.deadlineMs ?? 60_000;
    this.baseMs = opts.backoff?.baseMs ?? 100;
    this.maxMs = opts.backoff?.maxMs ?? 5000;
    this.defaultOut = opts.defaultMaxOutputTokens ?? 1024;
    this.attemptTimeoutMs = opts.attemptTimeoutMs ?? 60_000;
    this.chat = {
      completions: {
        create: (params, options) => {
          const p = params as unknown as Record<string, unknown>;
          const est = estimateChat(p, this.defaultOut);
          if (p.stream) return this.stream(params.model, est, params, options, (c, body, signal) => c.chat.completions.create(body as never, { signal }).withResponse() as never);
          return this.run(params.model, est, options, {
            call: (c, signal) => c.chat.completions.create({ ...params, stream: false }, { signal }).withResponse(),
            usage: (d) => ({ promptTokens: d.usage?.prompt_tokens, completionTokens: d.usage?.completion_tokens }),
          });
        },
      },
    };
    this.completions = {
      create: (params, options) => {
        const p = params as unknown as Record<string, unknown>;
        const est = estimateCompletion(p, this.defaultOut);
        if (p.stream) return this.stream(params.model, est, params, options, (c, body, signal) => c.completions.create(body as never, { signal }).withResponse() as never);
        return this.run(params.model, est, options, {
          call: (c, signal) => c.completions.create({ ...params, stream: false }, { signal }).withResponse(),
          usage: (d) => ({ promptTokens: d.usage?.prompt_tokens, completionTokens: d.usage?.completion_tokens }),
        });
      },
    };
    this.embeddings = {
      create: (params, options) =>
        this.run(params.model, estimateEmbedding(params as never), options, {
          call: (c, signal) => c.embeddings.create(params, { signal }).withResponse(),
          usage: (d) => ({ promptTokens: d.usage?.prompt_tokens, completionTokens: 0 }),
        }),
    };
    this.responses = {
      create: (params, options) => {
        if ((params as { stream?: boolean }).stream) throw new TypeError('PooledOpenAI: streaming responses.create is not supported yet; use chat.completions with stream: true');
        return this.run(params.model as string, estimateResponse(params as never, this.defaultOut), options, {
          call: (c, signal) => c.responses.create({ ...params, stream: false } as never, { signal }).withResponse() as never,
          usage: (d: OpenAI.Responses.Response) => ({ promptTokens: d.usage?.input_tokens, completionTokens: d.usage?.output_tokens }),
        });
      },
    };
  }

  /** The official client of one key, created once: SDK retries off, the pool decides. */
  private clientFor(lease: Lease): OpenAI {
    let c = this.clients.get(lease.keyId);
    if (!c) {
      c = new OpenAI({ apiKey: lease.secret, baseURL: lease.baseURL, maxRetries: 0, timeout: this.attemptTimeoutMs });
      this.clients.set(lease.keyId, c);
    }
    return c;
  }

  private async lease(model: string, est: Estimate, exclude: Set<string>, deadline: number, signal: AbortSignal | undefined): Promise<Lease> {
    const r = await this.pool.acquire({
      model,
      estimatedTokens: est.total,
      estimatedOutputTokens: est.output,
      exclude,
      maxWaitMs: Math.max(0, deadline - Date.now()),
      ...(signal ? { signal } : {}),
    });
    if (!r.ok) throw new PoolExhaustedError(model, r.reason, r.retryAfterMs);
    return r;
  }

  /** What a failed attempt means: release outcome, whether to try another key, and how long to wait first. */
  private judge(e: unknown, signal: AbortSignal | undefined): { outcome: Outcome; retry: boolean; waitMs: number } {
    if (signal?.aborted || e instanceof OpenAI.APIUserAbortError) return { outcome: { error: 'aborted' }, retry: false, waitMs: 0 };
    if (e instanceof OpenAI.APIConnectionTimeoutError) return { outcome: { error: 'timeout' }, retry: true, waitMs: -1 };
    if (e instanceof OpenAI.APIConnectionError) return { outcome: { error: 'network' }, retry: true, waitMs: -1 };
    if (e instanceof OpenAI.APIError && typeof e.status === 'number') {
      const headers = e.headers ?? undefined;
      const outcome: Outcome = { status: e.status, ...(headers ? { headers } : {}) };
      if (e.status === 429) return { outcome, retry: true, waitMs: Math.min(this.maxMs, cooldownFromHeaders(headers) ?? -1) };
      if (e.status === 401 || e.status === 403) return { outcome, retry: true, waitMs: 0 };
      if (e.status === 408 || e.status >= 500) return { outcome, retry: true, waitMs: -1 };
      return { outcome, retry: false, waitMs: 0 };
    }
    return { outcome: { error: 'network' }, retry: false, waitMs: 0 };
  }

  private backoffMs(attempt: number): number {
    return Math.random() * Math.min(this.maxMs, this.baseMs * 2 ** attempt);
  }

  /**
   * Lease a key and make the call, failing over to another key on 429, 5xx, timeouts, connection
   * errors and 401/403, within maxAttempts and the deadline. On success the lease is returned
   * still held: the caller releases it with the real usage.
   */
  private async attempt<T>(
    model: string,
    est: Estimate,
    options: CallOptions | undefined,
    call: (client: OpenAI, signal: AbortSignal) => Promise<{ data: T; response: Response }>,
  ): Promise<{ lease: Lease; data: T; response: Response; started: number }> {
    const signal = options?.signal;
    const deadline = Date.now() + (options?.timeout ?? this.deadlineMs);
    const exclude = new Set<string>();
    let lastError: unknown;
    for (let attempt = 0; attempt < this.maxAttempts; attempt++) {
      const lease = await this.lease(model, est, exclude, deadline, signal);
      const started = Date.now();
      try {
        const { data, response } = await call(this.clientFor(lease), signal ?? new AbortController().signal);
        return { lease, data, response, started };
      } catch (e) {
        const j = this.judge(e, signal);
        await lease.release({ ...j.outcome, latencyMs: Date.now() - started }).catch(() => undefined);
        lastError = e;
        if (!j.retry || Date.now() >= deadline) throw e;
        exclude.add(lease.keyId);
        const wait = j.waitMs >= 0 ? j.waitMs : this.backoffMs(attempt);
        if (Date.now() + wait >= deadline) throw e;
        if (wait > 0) await sleep(wait, signal);
      }
    }
    throw lastError;
  }

  private async run<T>(model: string, est: Estimate, options: CallOptions | undefined, a: Attempt<T>): Promise<T> {
    const r = await this.attempt(model, est, options, a.call);
    await r.lease.release({ status: r.response.status, latencyMs: Date.now() - r.started, usage: a.usage(r.data), headers: r.response.headers });
    return r.data;
  }

  /**
   * Streams: failover happens before the first chunk (the status arrives with the headers).
   * Usage is asked for in the final chunk (stream_options.include_usage) and reconciled when the
   * stream ends; a stream that breaks midway (an error, or an end without finish_reason) counts as
   * a failure of the key; a consumer that stops early aborts the upstream call and releases the
   * lease as aborted. The usage chunk is passed on only if the caller asked for it.
   */
  private async stream(
    model: string,
    est: Estimate,
    params: object,
    options: CallOptions | undefined,
    open: (c: OpenAI, body: object, signal: AbortSignal) => Promise<{ data: AsyncIterable<any> & { controller: AbortController }; response: Response }>,
  ): Promise<AsyncIterable<any> & { controller: AbortController }> {
    const p = params as Record<string, unknown>;
    const wantsUsage = Boolean((p.stream_options as { include_usage?: boolean } | undefined)?.include_usage);
    const body = { ...p, stream: true, stream_options: { ...(p.stream_options as object), include_usage: true } };
    const controller = new AbortController();
    options?.signal?.addEventListener('abort', () => controller.abort(options.signal!.reason), { once: true });
    const r = await this.attempt(model, est, { ...options, signal: controller.signal }, (c, signal) => open(c, body, signal));
    let released = false;
    const release = async (o: Outcome) => {
      if (released) return;
      released = true;
      await r.lease.release({ ...o, latencyMs: Date.now() - r.started, headers: r.response.headers }).catch(() => undefined);
    };
    async function* chunks() {
      let usage: Outcome['usage'];
      let finished = false;
      try {
        for await (const chunk of r.data) {
          if (chunk?.choices?.some((c: { finish_reason?: string | null }) => c.finish_reason)) finished = true;
          if (chunk?.usage) {
            usage = { promptTokens: chunk.usage.prompt_tokens, completionTokens: chunk.usage.completion_tokens };
            if (!wantsUsage && (!chunk.choices || chunk.choices.length === 0)) continue;
          }
          yield chunk;
        }
        if (!finished) {
          await release({ error: 'broken_stream', ...(usage ? { usage } : {}) });
          throw new Error(`stream from ${r.lease.hint} ended before it finished (no finish_reason)`);
        }
        await release({ status: r.response.status, ...(usage ? { usage } : {}) });
      } catch (e) {
        await release(controller.signal.aborted ? { error: 'aborted' } : { error: 'broken_stream', ...(usage ? { usage } : {}) });
        throw e;
      } finally {
        if (!released) {
          // the consumer stopped early: stop the upstream call too
          controller.abort();
          await release({ error: 'aborted' });
        }
      }
    }
    const it = chunks() as AsyncGenerator<any> & { controller: AbortController };
    it.controller = controller;
    return it;
  }
}
