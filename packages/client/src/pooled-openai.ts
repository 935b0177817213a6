import OpenAI from 'openai';
import type { Clock, KeyPool, Lease, Outcome, SpendLine } from '@keypool/core';
import { Dispatcher, TimedOut, callController, type Failure, type Priority, type Route } from './dispatch.js';
import { estimateChat, estimateCompletion, estimateEmbedding, estimateResponse, type Estimate } from './estimate.js';

export type { Priority, Route } from './dispatch.js';

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
  /** The time deadlines, latencies and backoffs are read from (default: the system clock). */
  clock?: Clock;
}

export interface CallOptions {
  signal?: AbortSignal;
  /** Overall deadline of this call, ms. */
  timeout?: number;
  /** How a route picks its model, and the class the pool admits the call in (default normal). */
  priority?: Priority;
  /** Whose call this is, for the fair shares between tenants of a class (weight: the pool config's priority.weights). */
  tenant?: string;
  /** Longest wait for a free key (default: the whole timeout); then PoolExhaustedError with its retryAfterMs. */
  keyWaitMs?: number;
  /**
   * Told, for a plain (non-stream) call that succeeded, which key and model served it, what it cost
   * (the real usage priced, or the estimate when the provider sent none) and how many attempts came
   * before (the job queue keeps this on its jobs).
   */
  onServed?: (info: { keyId: string; model: string; costUsd: number; failovers: number }) => void;
}

interface Attempt<T> {
  /** Run the upstream call on a client bound to one key, for one model of the route. */
  call: (client: OpenAI, signal: AbortSignal, model: string) => Promise<{ data: T; response: Response }>;
  /** Usage of a finished non-stream result. */
  usage: (data: T) => Outcome['usage'];
}

/** The call ran out of time: say so with the SDK's own timeout error, whatever noticed it first. */
function asTimeout(e: unknown, signal: AbortSignal): unknown {
  const why = signal.reason;
  if (why instanceof TimedOut && (e === why || e instanceof OpenAI.APIUserAbortError || e instanceof TimedOut)) {
    return new OpenAI.APIConnectionTimeoutError({ message: why.message });
  }
  return e;
}

/** What an SDK error means for the key. */
function classify(e: unknown): Failure {
  if (e instanceof OpenAI.APIUserAbortError) return { kind: 'aborted' };
  if (e instanceof OpenAI.APIConnectionTimeoutError) return { kind: 'timeout' };
  if (e instanceof OpenAI.APIConnectionError) return { kind: 'network' };
  if (e instanceof OpenAI.APIError && typeof e.status === 'number') {
    return { kind: 'status', status: e.status, ...(e.headers ? { headers: e.headers } : {}), message: e.message };
  }
  // not an answer from the provider (a bug, a local SDK error): the key is not to blame
  return { kind: 'aborted' };
}

const timeoutError = (message: string) => new OpenAI.APIConnectionTimeoutError({ message });

/** How one kind of stream asks for its usage, carries it and says that it is over. */
interface StreamShape {
  /** The request body as sent upstream (the model is set per attempt). */
  body: Record<string, unknown>;
  /** What one event says: its usage, whether it ends the stream properly, and whether the caller gets it. */
  read: (event: any) => { usage?: Outcome['usage']; finished: boolean; pass: boolean };
  /** What a whole stream ends with, named in the error of one that ended without it. */
  end: string;
}

/**
 * Chat and legacy completions: the usage is asked for (stream_options.include_usage) and comes in a
 * last chunk with no choices, passed on only if the caller asked for it too; a finish_reason ends
 * the stream.
 */
function chunkShape(params: Record<string, unknown>): StreamShape {
  const wantsUsage = Boolean((params.stream_options as { include_usage?: boolean } | undefined)?.include_usage);
  return {
    body: { ...params, stream: true, stream_options: { ...(params.stream_options as object), include_usage: true } },
    read: (chunk) => {
      const finished = Boolean(chunk?.choices?.some((c: { finish_reason?: string | null }) => c.finish_reason));
      if (!chunk?.usage) return { finished, pass: true };
      const usage = { promptTokens: chunk.usage.prompt_tokens, completionTokens: chunk.usage.completion_tokens };
      return { usage, finished, pass: wantsUsage || (chunk.choices?.length ?? 0) > 0 };
    },
    end: 'no finish_reason',
  };
}

const RESPONSE_ENDS = new Set(['response.completed', 'response.incomplete', 'response.failed']);

/**
 * The Responses API: typed events, the last of which (response.completed, .incomplete or .failed)
 * holds the whole response with its usage. Nothing is to be asked for (its stream_options has no
 * include_usage) and every event reaches the caller.
 */
function responseShape(params: Record<string, unknown>): StreamShape {
  return {
    body: { ...params, stream: true },
    read: (event) => {
      if (!RESPONSE_ENDS.has(event?.type)) return { finished: false, pass: true };
      const u = event.response?.usage;
      return { ...(u ? { usage: { promptTokens: u.input_tokens, completionTokens: u.output_tokens } } : {}), finished: true, pass: true };
    },
    end: 'no response.completed, response.incomplete or response.failed',
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
  private readonly dispatcher: Dispatcher;
  private readonly clients = new Map<string, OpenAI>();
  private readonly deadlineMs: number;
  private readonly defaultOut: number;
  private readonly attemptTimeoutMs: number;
  private readonly clock: Clock;

  constructor(opts: PooledOpenAIOptions) {
    this.pool = opts.pool;
    this.dispatcher = new Dispatcher(opts);
    this.deadlineMs = opts.deadlineMs ?? 60_000;
    this.defaultOut = opts.defaultMaxOutputTokens ?? 1024;
    this.attemptTimeoutMs = this.dispatcher.attemptTimeoutMs;
    this.clock = this.dispatcher.clock;
    this.chat = {
      completions: {
        create: (params, options) => {
          const p = params as unknown as Record<string, unknown>;
          const est = estimateChat(p, this.defaultOut);
          if (p.stream) return this.stream(params.model, est, chunkShape(p), options, (c, body, signal) => c.chat.completions.create(body as never, { signal }).withResponse() as never);
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
        if (p.stream) return this.stream(params.model, est, chunkShape(p), options, (c, body, signal) => c.completions.create(body as never, { signal }).withResponse() as never);
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
        const p = params as unknown as Record<string, unknown>;
        const est = estimateResponse(p, this.defaultOut);
        if (p.stream) return this.stream(params.model as string, est, responseShape(p), options, (c, body, signal) => c.responses.create(body as never, { signal }).withResponse() as never);
        return this.run(params.model as string, est, options, {
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

  /** Failover across keys (see Dispatcher) with the SDK client of each leased key. */
  private attempt<T>(name: string, est: Estimate, options: CallOptions | undefined, signal: AbortSignal, deadline: number, call: (client: OpenAI, signal: AbortSignal, model: string) => Promise<{ data: T; response: Response }>) {
    return this.dispatcher.dispatch({
      name,
      est,
      priority: options?.priority ?? 'normal',
      ...(options?.tenant !== undefined ? { tenant: options.tenant } : {}),
      signal,
      deadline,
      ...(options?.keyWaitMs !== undefined ? { keyWaitMs: options.keyWaitMs } : {}),
      call: (lease, s, model) => call(this.clientFor(lease), s, model),
      classify,
      timeoutError,
    });
  }

  private async run<T>(model: string, est: Estimate, options: CallOptions | undefined, a: Attempt<T>): Promise<T> {
    const deadlineMs = options?.timeout ?? this.deadlineMs;
    const call = callController(options?.signal, deadlineMs);
    try {
      const r = await this.attempt(model, est, options, call.controller.signal, this.clock.now() + deadlineMs, a.call);
      const { data, response } = r.value;
      // the answer is paid for: a release that fails (Redis away) must not turn it into an error
      const released = await r.lease.release({ status: response.status, latencyMs: this.clock.now() - r.started, usage: a.usage(data), headers: response.headers }).catch(() => undefined);
      options?.onServed?.({ keyId: r.lease.keyId, model: r.model, costUsd: released?.costUsd ?? r.lease.estimatedCostUsd, failovers: r.failovers });
      return data;
    } catch (e) {
      throw asTimeout(e, call.controller.signal);
    } finally {
      call.done();
    }
  }

  /**
   * Streams (chat, completions and responses; `shape` says how each carries its usage and its end):
   * failover happens before the first event (the status arrives with the headers), within the
   * call's deadline; once streaming, a stream idle for attemptTimeoutMs (no event from the upstream,
   * or a consumer that stopped reading) is aborted. The usage of the final event is reconciled when
   * the stream ends; a stream that breaks midway (an error, or an end without its finishing event)
   * counts as a failure of the key; a consumer that stops early aborts the upstream call and
   * releases the lease as aborted. The lease's heartbeat (started by the Dispatcher) keeps it while
   * the stream runs, however slow.
   */
  private async stream(
    model: string,
    est: Estimate,
    shape: StreamShape,
    options: CallOptions | undefined,
    open: (c: OpenAI, body: object, signal: AbortSignal) => Promise<{ data: AsyncIterable<any> & { controller: AbortController }; response: Response }>,
  ): Promise<AsyncIterable<any> & { controller: AbortController }> {
    const deadlineMs = options?.timeout ?? this.deadlineMs;
    const call = callController(options?.signal, deadlineMs);
    const controller = call.controller;
    let r: { lease: Lease; data: AsyncIterable<any> & { controller: AbortController }; response: Response; started: number };
    try {
      const d = await this.attempt(model, est, options, controller.signal, this.clock.now() + deadlineMs, (c, signal, chosen) => open(c, { ...shape.body, model: chosen }, signal));
      r = { lease: d.lease, data: d.value.data, response: d.value.response, started: d.started };
    } catch (e) {
      call.done();
      throw asTimeout(e, controller.signal);
    }
    // streaming from here on: the idle timeout takes over from the deadline
    call.disarm();
    // the attempt's signal no longer follows the call's once dispatch has returned: a caller's abort,
    // the idle timeout or a consumer that stops early must cut the upstream stream here
    const cut = () => r.data.controller.abort(controller.signal.reason);
    if (controller.signal.aborted) cut();
    else controller.signal.addEventListener('abort', cut, { once: true });
    let released = false;
    const release = async (o: Outcome) => {
      if (released) return;
      released = true;
      idle.stop();
      call.done();
      await r.lease.release({ ...o, latencyMs: this.clock.now() - r.started, headers: r.response.headers }).catch(() => undefined);
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
          const seen = shape.read(chunk);
          if (seen.finished) finished = true;
          if (seen.usage) usage = seen.usage;
          if (!seen.pass) continue;
          idle.arm('consumer');
          yield chunk;
        }
        // the SDK ends a stream whose signal aborted without an error
        if (controller.signal.aborted) {
          await release({ error: 'aborted' }); // the idle timer released it already, as a timeout if the upstream was silent
          if (controller.signal.reason instanceof TimedOut) throw asTimeout(controller.signal.reason, controller.signal);
          return;
        }
        if (!finished) {
          await release({ error: 'broken_stream', ...(usage ? { usage } : {}) });
          throw new Error(`stream from ${r.lease.hint} ended before it finished (${shape.end})`);
        }
        await release({ status: r.response.status, ...(usage ? { usage } : {}) });
      } catch (e) {
        await release(controller.signal.aborted ? { error: 'aborted' } : { error: 'broken_stream', ...(usage ? { usage } : {}) });
        throw asTimeout(e, controller.signal);
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
