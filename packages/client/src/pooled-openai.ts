import OpenAI from 'openai';
import { PoolExhaustedError, isPoolExhausted, isRequestTooLarge, isUnknownModel, type KeyPool, type Lease, type Outcome, type SpendLine } from '@keypool/core';
import { estimateChat, estimateCompletion, estimateEmbedding, estimateResponse, type Estimate } from './estimate.js';

/** A named list of models, strongest first, possibly across providers. */
export interface Route {
  models: string[];
}

/**
 * critical: the route's models in their order (strongest first), waiting for the strongest that can
 * serve. normal: cheapest first, falling back to dearer ones when the cheap one has no key free.
 * low: cheapest first like normal, but never waits: it yields when capacity is short.
 */
export type Priority = 'critical' | 'normal' | 'low';

export interface PooledOpenAIOptions {
  pool: KeyPool;
  /** Named routes: `model: '<route>'` in a request uses them (a plain model name still works). */
  routes?: Record<string, Route>;
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
  /** How a route picks its model (default normal). */
  priority?: Priority;
}

interface Attempt<T> {
  /** Run the upstream call on a client bound to one key, for one model of the route. */
  call: (client: OpenAI, signal: AbortSignal, model: string) => Promise<{ data: T; response: Response }>;
  /** Usage of a finished non-stream result. */
  usage: (data: T) => Outcome['usage'];
}

/** Wait ms, or reject with the signal's reason; the listener is removed either way. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal.reason);
    };
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Why a call's own controller aborted it (as opposed to the caller's signal). */
class TimedOut extends Error {
  constructor(readonly what: 'deadline' | 'attempt' | 'idle', ms: number) {
    super(`${what === 'deadline' ? 'call deadline' : what === 'attempt' ? 'attempt timeout' : 'stream idle timeout'} of ${ms} ms passed`);
  }
}

/** The call ran out of time: say so with the SDK's own timeout error, whatever noticed it first. */
function asTimeout(e: unknown, signal: AbortSignal): unknown {
  const why = signal.reason;
  if (why instanceof TimedOut && (e === why || e instanceof OpenAI.APIUserAbortError || e instanceof TimedOut)) {
    return new OpenAI.APIConnectionTimeoutError({ message: why.message });
  }
  return e;
}

/**
 * One AbortController per call, linked to the caller's signal (already aborted included) and armed
 * with the call's deadline; the SDK only ever sees this controller's signal, so nothing is left
 * listening on a long-lived caller signal once the call is over.
 */
function callController(parent: AbortSignal | undefined, deadlineMs: number, what: 'deadline' | 'attempt' = 'deadline') {
  const controller = new AbortController();
  const onAbort = () => controller.abort(parent!.reason);
  if (parent?.aborted) controller.abort(parent.reason);
  else parent?.addEventListener('abort', onAbort, { once: true });
  const timer = setTimeout(() => controller.abort(new TimedOut(what, deadlineMs)), Math.max(0, deadlineMs));
  return {
    controller,
    /** Stop the deadline (a stream that started keeps running under its idle timeout). */
    disarm: () => clearTimeout(timer),
    done: () => {
      clearTimeout(timer);
      parent?.removeEventListener('abort', onAbort);
    },
  };
}

/**
 * Requests may name a route instead of a model: `routes: { smart: { models: ['gpt-4o', 'deepseek-chat',
 * 'gpt-4o-mini'] } }` then `model: 'smart'` with `{ priority }` picks the model (see Priority);
 * every call's cost is charged to its key, its model and its route (pool.status().spend).
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
  private readonly routes: Record<string, Route>;

  constructor(opts: PooledOpenAIOptions) {
    this.pool = opts.pool;
    this.routes = opts.routes ?? {};
    for (const [name, r] of Object.entries(this.routes)) {
      if (!Array.isArray(r?.models) || r.models.length === 0 || !r.models.every((m) => typeof m === 'string' && m)) {
        throw new TypeError(`routes.${name}.models must list at least one model name`);
      }
    }
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
            call: (c, signal, model) => c.chat.completions.create({ ...params, model, stream: false }, { signal }).withResponse(),
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
          call: (c, signal, model) => c.completions.create({ ...params, model, stream: false }, { signal }).withResponse(),
          usage: (d) => ({ promptTokens: d.usage?.prompt_tokens, completionTokens: d.usage?.completion_tokens }),
        });
      },
    };
    this.embeddings = {
      create: (params, options) =>
        this.run(params.model, estimateEmbedding(params as never), options, {
          call: (c, signal, model) => c.embeddings.create({ ...params, model }, { signal }).withResponse(),
          usage: (d) => ({ promptTokens: d.usage?.prompt_tokens, completionTokens: 0 }),
        }),
    };
    this.responses = {
      create: (params, options) => {
        if ((params as { stream?: boolean }).stream) throw new TypeError('PooledOpenAI: streaming responses.create is not supported yet; use chat.completions with stream: true');
        return this.run(params.model as string, estimateResponse(params as never, this.defaultOut), options, {
          call: (c, signal, model) => c.responses.create({ ...params, model, stream: false } as never, { signal }).withResponse() as never,
          usage: (d: OpenAI.Responses.Response) => ({ promptTokens: d.usage?.input_tokens, completionTokens: d.usage?.output_tokens }),
        });
      },
    };
  }

  /**
   * Fleet-wide spend (every process of the pool, from Redis): per key (id, hint, name; in the
   * current budget period for keys with a periodic budget), per model and per route, in USD.
   */
  async spend(): Promise<{
    byKey: Record<string, { hint: string; name?: string; usd: number }>;
    byModel: Record<string, SpendLine>;
    byRoute: Record<string, SpendLine>;
  }> {
    const st = await this.pool.status();
    const byKey: Record<string, { hint: string; name?: string; usd: number }> = {};
    for (const k of st.keys) byKey[k.id] = { hint: k.hint, ...(k.name !== undefined ? { name: k.name } : {}), usd: k.spendUsd ?? 0 };
    return { byKey, byModel: st.spend?.byModel ?? {}, byRoute: st.spend?.byRoute ?? {} };
  }

  /** The official client of one key, created once: SDK retries off, the pool decides. */
  private clientFor(lease: Lease): OpenAI {
    // keyed by the base URL too: an operator may point a key at another endpoint while we run
    const id = `${lease.keyId} ${lease.baseURL}`;
    let c = this.clients.get(id);
    if (!c) {
      c = new OpenAI({ apiKey: lease.secret, baseURL: lease.baseURL, maxRetries: 0, timeout: this.attemptTimeoutMs });
      this.clients.set(id, c);
    }
    return c;
  }

  /** The models a request names, in the order its priority tries them, and its route if any. */
  private plan(name: string, priority: Priority): { models: string[]; route?: string } {
    const route = this.routes[name];
    if (!route) return { models: [name] };
    if (priority === 'critical') return { models: route.models, route: name };
    const cost = (m: string) => {
      const p = this.pool.priceOf(m);
      return p ? p.input + p.output : Number.POSITIVE_INFINITY;
    };
    // a stable sort: models of equal price keep the route's order
    return { models: [...route.models].sort((a, b) => cost(a) - cost(b)), route: name };
  }

  /**
   * A lease on the first model of the plan that can serve. Only one model is waited for: the
   * strongest for critical traffic, the last resort (the dearest) for normal; low never waits.
   * A model no key serves (or too small for the request) is skipped.
   */
  private async lease(plan: { models: string[]; route?: string }, est: Estimate, exclude: Set<string>, deadline: number, priority: Priority, signal: AbortSignal): Promise<{ lease: Lease; model: string }> {
    let last: { model: string; reason: string; retryAfterMs: number | null } | undefined;
    let fault: unknown;
    const waitOn = priority === 'low' ? -1 : priority === 'critical' ? 0 : plan.models.length - 1;
    for (let i = 0; i < plan.models.length; i++) {
      const model = plan.models[i]!;
      let r: Awaited<ReturnType<KeyPool['acquire']>>;
      try {
        r = await this.pool.acquire({
          model,
          estimatedTokens: est.total,
          estimatedOutputTokens: est.output,
          exclude,
          // stop waiting a little before the deadline fires, so the answer is 'exhausted', not 'aborted'
          maxWaitMs: i === waitOn ? Math.max(0, deadline - Date.now() - 10) : 0,
          ...(plan.route !== undefined ? { route: plan.route } : {}),
          signal,
        });
      } catch (e) {
        if (plan.models.length > 1 && (isUnknownModel(e) || isRequestTooLarge(e))) {
          fault ??= e;
          continue;
        }
        // the deadline passed while waiting for a key: that is exhaustion, not a fault
        if (signal.reason instanceof TimedOut) throw new PoolExhaustedError(plan.route ?? model, last?.reason ?? 'deadline', last?.retryAfterMs ?? null);
        throw e;
      }
      if (r.ok) return { lease: r, model };
      if (!last || (r.retryAfterMs ?? Infinity) < (last.retryAfterMs ?? Infinity)) last = { model, reason: r.reason, retryAfterMs: r.retryAfterMs };
    }
    if (!last) throw fault;
    throw new PoolExhaustedError(plan.route ?? last.model, last.reason, last.retryAfterMs);
  }

  private judge(e: unknown, signal: AbortSignal): { outcome: Outcome; retry: boolean; waitMs: number } {
    if (signal.aborted) {
      const why = signal.reason;
      if (why instanceof TimedOut && why.what === 'attempt') return { outcome: { error: 'timeout' }, retry: true, waitMs: -1 };
      if (why instanceof TimedOut) return { outcome: { error: 'timeout' }, retry: false, waitMs: 0 };
      return { outcome: { error: 'aborted' }, retry: false, waitMs: 0 };
    }
    if (e instanceof OpenAI.APIUserAbortError) return { outcome: { error: 'aborted' }, retry: false, waitMs: 0 };
    if (e instanceof OpenAI.APIConnectionTimeoutError) return { outcome: { error: 'timeout' }, retry: true, waitMs: -1 };
    if (e instanceof OpenAI.APIConnectionError) return { outcome: { error: 'network' }, retry: true, waitMs: -1 };
    if (e instanceof OpenAI.APIError && typeof e.status === 'number') {
      const headers = e.headers ?? undefined;
      const outcome: Outcome = { status: e.status, ...(headers ? { headers } : {}) };
      if (e.status === 429) {
        // "Request too large": no key of this size will ever take it; not the key's fault either
        if (!headers?.get('retry-after') && /too large/i.test(e.message)) return { outcome: { status: 413 }, retry: false, waitMs: 0 };
        // the pool now cools this key as long as the provider says; another key can serve at once
        return { outcome, retry: true, waitMs: 0 };
      }
      if (e.status === 401 || e.status === 403) return { outcome, retry: true, waitMs: 0 };
      if (e.status === 408 || e.status >= 500) return { outcome, retry: true, waitMs: -1 };
      return { outcome, retry: false, waitMs: 0 };
    }
    // not an answer from the provider (a bug, a local SDK error): the key is not to blame
    return { outcome: { error: 'aborted' }, retry: false, waitMs: 0 };
  }

  private backoffMs(attempt: number): number {
    return Math.random() * Math.min(this.maxMs, this.baseMs * 2 ** attempt);
  }

  /**
   * Lease a key and make the call, failing over to another key on 429, 5xx, timeouts, connection
   * errors and 401/403, within maxAttempts and the call's deadline (the controller's). On success
   * the lease is returned still held: the caller releases it with the real usage.
   */
  private async attempt<T>(
    name: string,
    est: Estimate,
    options: CallOptions | undefined,
    signal: AbortSignal,
    deadline: number,
    call: (client: OpenAI, signal: AbortSignal, model: string) => Promise<{ data: T; response: Response }>,
  ): Promise<{ lease: Lease; data: T; response: Response; started: number }> {
    const priority = options?.priority ?? 'normal';
    const plan = this.plan(name, priority);
    const exclude = new Set<string>();
    let lastError: unknown;
    for (let attempt = 0; attempt < this.maxAttempts; attempt++) {
      signal.throwIfAborted();
      let leased: { lease: Lease; model: string };
      try {
        leased = await this.lease(plan, est, exclude, deadline, priority, signal);
      } catch (e) {
        // every key left was tried and failed: the upstream's own error says more than "exhausted"
        if (lastError !== undefined && isPoolExhausted(e) && e.reason === 'unavailable') throw lastError;
        throw e;
      }
      const { lease, model } = leased;
      const started = Date.now();
      // this attempt's own timeout, inside the call's deadline
      const attemptMs = Math.min(this.attemptTimeoutMs, deadline - started);
      const ac = callController(signal, attemptMs, 'attempt');
      try {
        const { data, response } = await call(this.clientFor(lease), ac.controller.signal, model);
        return { lease, data, response, started };
      } catch (e) {
        const j = this.judge(e, ac.controller.signal);
        await lease.release({ ...j.outcome, latencyMs: Date.now() - started }).catch(() => undefined);
        lastError = ac.controller.signal.reason instanceof TimedOut && !(e instanceof OpenAI.APIError && typeof e.status === 'number')
          ? new OpenAI.APIConnectionTimeoutError({ message: ac.controller.signal.reason.message })
          : e;
        if (!j.retry || Date.now() >= deadline) throw lastError;
        exclude.add(lease.keyId);
        const wait = j.waitMs >= 0 ? j.waitMs : this.backoffMs(attempt);
        if (Date.now() + wait >= deadline) throw lastError;
        if (wait > 0) await sleep(wait, signal);
      } finally {
        ac.done();
      }
    }
    throw lastError;
  }

  private async run<T>(model: string, est: Estimate, options: CallOptions | undefined, a: Attempt<T>): Promise<T> {
    const deadlineMs = options?.timeout ?? this.deadlineMs;
    const call = callController(options?.signal, deadlineMs);
    try {
      const r = await this.attempt(model, est, options, call.controller.signal, Date.now() + deadlineMs, a.call);
      // the answer is paid for: a release that fails (Redis away) must not turn it into an error
      await r.lease.release({ status: r.response.status, latencyMs: Date.now() - r.started, usage: a.usage(r.data), headers: r.response.headers }).catch(() => undefined);
      return r.data;
    } catch (e) {
      throw asTimeout(e, call.controller.signal);
    } finally {
      call.done();
    }
  }

  /**
   * Streams: failover happens before the first chunk (the status arrives with the headers), within
   * the call's deadline; once streaming, a stream idle for attemptTimeoutMs (no chunk from the
   * upstream, or a consumer that stopped reading) is aborted. Usage is asked for in the final chunk
   * (stream_options.include_usage) and reconciled when the stream ends; a stream that breaks midway
   * (an error, or an end without finish_reason) counts as a failure of the key; a consumer that stops
   * early aborts the upstream call and releases the lease as aborted. The usage chunk is passed on
   * only if the caller asked for it. The lease is extended while a long stream runs.
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
    const deadlineMs = options?.timeout ?? this.deadlineMs;
    const call = callController(options?.signal, deadlineMs);
    const controller = call.controller;
    let r: { lease: Lease; data: AsyncIterable<any> & { controller: AbortController }; response: Response; started: number };
    try {
      r = await this.attempt(model, est, options, controller.signal, Date.now() + deadlineMs, (c, signal, chosen) => open(c, { ...body, model: chosen }, signal));
    } catch (e) {
      call.done();
      throw asTimeout(e, controller.signal);
    }
    // streaming from here on: the idle timeout takes over from the deadline
    call.disarm();
    let released = false;
    const release = async (o: Outcome) => {
      if (released) return;
      released = true;
      idle.stop();
      call.done();
      await r.lease.release({ ...o, latencyMs: Date.now() - r.started, headers: r.response.headers }).catch(() => undefined);
    };
    const idleMs = this.attemptTimeoutMs;
    const idle = {
      timer: undefined as NodeJS.Timeout | undefined,
      /** who we are waiting for: the upstream (its fault) or the consumer (not the key's) */
      arm(waitingFor: 'upstream' | 'consumer') {
        clearTimeout(this.timer);
        this.timer = setTimeout(() => {
          controller.abort(new TimedOut('idle', idleMs));
          void release(waitingFor === 'upstream' ? { error: 'timeout' } : { error: 'aborted' });
        }, idleMs);
      },
      stop() {
        clearTimeout(this.timer);
      },
    };
    const leaseTimeoutMs = this.pool.config.leaseTimeoutMs;
    idle.arm('consumer'); // a stream nobody reads does not hold its key for ever
    async function* chunks() {
      let usage: Outcome['usage'];
      let finished = false;
      const iter = r.data[Symbol.asyncIterator]();
      try {
        for (;;) {
          idle.arm('upstream');
          const { value: chunk, done } = await iter.next();
          if (done) break;
          if (r.lease.deadline - Date.now() < leaseTimeoutMs / 2) void r.lease.extend().catch(() => undefined);
          if (chunk?.choices?.some((c: { finish_reason?: string | null }) => c.finish_reason)) finished = true;
          if (chunk?.usage) {
            usage = { promptTokens: chunk.usage.prompt_tokens, completionTokens: chunk.usage.completion_tokens };
            if (!wantsUsage && (!chunk.choices || chunk.choices.length === 0)) continue;
          }
          idle.arm('consumer');
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
