import {
  PoolExhaustedError,
  isPoolExhausted,
  isRequestTooLarge,
  isUnknownModel,
  cooldownHint,
  headerValue,
  systemClock,
  type AbortLike,
  type AcquireResult,
  type Admission,
  type Clock,
  type HeadersLike,
  type KeyPool,
  type Lease,
  type Outcome,
  type PriorityClass,
  type ReleaseResult,
  type TokenAdmitRequest,
  type TokenRefused,
} from '@keypool/core';
import type { Estimate } from './estimate.js';

/**
 * The failover loop shared by the pooled client (the official SDK per key) and the gateway (raw
 * HTTP pass-through): pick the route's model, lease a key, run one upstream attempt, judge its
 * failure, release the lease with that outcome, back off and try another key. How an attempt is
 * made and how its errors look is the caller's business; it hands over a `classify` that turns its
 * errors into a {@link Failure}.
 */

/** A named list of models, strongest first, possibly across providers. */
export interface Route {
  models: string[];
}

/**
 * critical: the route's models in their order (strongest first), waiting for the strongest that can
 * serve. normal: cheapest first, falling back to dearer ones when the cheap one has no key free.
 * low: cheapest first like normal, but waits only as long as the caller names (keyWaitMs: the queue
 * worker's), else yields at once when capacity is short; the pool keeps priority.keepFree of every key
 * from it while a higher class waits, and never lets it hold a reservation then.
 */
export type Priority = PriorityClass;

/** What went wrong with one attempt, as far as the pool cares. */
export type Failure =
  /** The provider answered with an error status. `message` is its error message (for "too large"). */
  | { kind: 'status'; status: number; headers?: HeadersLike; message: string }
  | { kind: 'timeout' }
  | { kind: 'network' }
  /** Cancelled by the caller, or a local fault that is not the key's doing. */
  | { kind: 'aborted' };

export interface DispatchOptions {
  pool: KeyPool;
  routes?: Record<string, Route>;
  /** Attempts per call across keys (default 4). */
  maxAttempts?: number;
  /** Full-jitter exponential backoff between attempts: base and cap (default 100 ms, 5 s). */
  backoff?: { baseMs?: number; maxMs?: number };
  /** Timeout of one upstream attempt (default 60 s). */
  attemptTimeoutMs?: number;
  /** The time deadlines and backoffs are read from (default: the system clock; tests pass a ManualClock). */
  clock?: Clock;
}

/** Why a call's own controller aborted it (as opposed to the caller's signal). */
export class TimedOut extends Error {
  constructor(
    readonly what: 'deadline' | 'attempt' | 'idle',
    readonly ms: number,
  ) {
    super(`${what === 'deadline' ? 'call deadline' : what === 'attempt' ? 'attempt timeout' : 'stream idle timeout'} of ${ms} ms passed`);
  }
}

/** How a CallAbort fires its signal (not exported: only the controller aborts). */
const FIRE = Symbol('fire');

/**
 * An abort signal without EventTarget, for a request path that makes one per request and one per
 * attempt (the gateway): the members of an AbortSignal that keypool uses, behaving as an
 * AbortSignal's do (listeners run once, in the order added; one added twice runs once; one removed
 * while the abort runs its listeners is skipped; one added after the abort never runs; one that
 * throws is reported as an uncaught exception and the others still run; `reason` defaults to an
 * AbortError). On Node 20 the AbortSignals the gateway made per request were promoted out of the
 * young generation (docs/benchmarks.md, "late night"). Not an AbortSignal: code that hands a signal
 * outside keypool (fetch, the OpenAI SDK, AbortSignal.any, which never fires for it) needs a real one.
 */
export class CallSignal implements AbortLike {
  #aborted = false;
  #reason: unknown = undefined;
  /** While the abort runs them, a removed listener's slot is null. */
  #listeners: ((() => void) | null)[] = [];

  get aborted(): boolean {
    return this.#aborted;
  }

  get reason(): unknown {
    return this.#reason;
  }

  addEventListener(_type: 'abort', listener: () => void, _options?: { once?: boolean }): void {
    if (!this.#aborted && !this.#listeners.includes(listener)) this.#listeners.push(listener);
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    const i = this.#listeners.indexOf(listener);
    if (i < 0) return;
    if (this.#aborted) this.#listeners[i] = null;
    else this.#listeners.splice(i, 1);
  }

  throwIfAborted(): void {
    if (this.#aborted) throw this.#reason;
  }

  [FIRE](reason: unknown): void {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#reason = reason === undefined ? new DOMException('This operation was aborted', 'AbortError') : reason;
    const ls = this.#listeners;
    for (let i = 0; i < ls.length; i++) {
      const l = ls[i];
      if (!l) continue;
      ls[i] = null;
      try {
        l();
      } catch (e) {
        // as EventTarget does: the error is the process's, the other listeners still run
        process.nextTick(() => {
          throw e;
        });
      }
    }
    this.#listeners = [];
  }
}

/** The controller of a {@link CallSignal} (AbortController's shape). */
export class CallAbort {
  readonly signal = new CallSignal();
  abort(reason?: unknown): void {
    this.signal[FIRE](reason);
  }
}

/** A call's controller, armed with its deadline, and how to stop that. */
export interface CallControl<C extends { readonly signal: AbortLike; abort(reason?: unknown): void }> {
  controller: C;
  /** Stop the deadline (a stream that started keeps running under its idle timeout). */
  disarm: () => void;
  /** Stop the deadline and let go of the parent signal. */
  done: () => void;
}

/**
 * One controller per call, linked to the caller's signal (already aborted included) and armed
 * with the call's deadline; the upstream only ever sees this controller's signal, so nothing is left
 * listening on a long-lived caller signal once the call is over. An AbortController, unless `light`
 * (by default when the parent is a CallSignal): then a {@link CallAbort}.
 */
export function callController(parent: AbortSignal | undefined, deadlineMs: number, what?: 'deadline' | 'attempt'): CallControl<AbortController>;
export function callController(parent: AbortSignal | CallSignal | undefined, deadlineMs: number, what: 'deadline' | 'attempt', light: true): CallControl<CallAbort>;
export function callController(parent: AbortSignal | CallSignal | undefined, deadlineMs: number, what?: 'deadline' | 'attempt'): CallControl<AbortController | CallAbort>;
export function callController(parent: AbortLike | undefined, deadlineMs: number, what: 'deadline' | 'attempt' = 'deadline', light = parent instanceof CallSignal): CallControl<AbortController | CallAbort> {
  const controller = light ? new CallAbort() : new AbortController();
  const onAbort = () => controller.abort(parent!.reason);
  if (parent?.aborted) controller.abort(parent.reason);
  else parent?.addEventListener('abort', onAbort, { once: true });
  const timer = setTimeout(() => controller.abort(new TimedOut(what, deadlineMs)), Math.max(0, deadlineMs));
  return {
    controller,
    disarm: () => clearTimeout(timer),
    done: () => {
      clearTimeout(timer);
      parent?.removeEventListener('abort', onAbort);
    },
  };
}

/** The gateway token given to a dispatch (`admit`) was refused; no key was touched. */
export class TokenRefusedError extends Error {
  constructor(readonly refusal: TokenRefused['token']) {
    super(`gateway token refused: ${refusal.reason}`);
  }
}

/**
 * One call's failover: what to try and within which limits. `S`: the kind of signal the call's
 * attempts get, the call's own (an AbortSignal, or the gateway's CallSignal).
 */
export interface DispatchCall<T, S extends AbortSignal | CallSignal = AbortSignal> {
  /** A model or a route name. */
  name: string;
  est: Estimate;
  priority: Priority;
  /** The call's controller signal (aborts on the caller's cancel and on the deadline). */
  signal: S;
  /** Epoch ms at which the call's deadline passes. */
  deadline: number;
  /**
   * Epoch ms the deadline would be had the caller not chosen a shorter one (the gateway's own
   * deadline when a request asks for less). An attempt cut by the caller's shorter deadline before
   * this and before attemptTimeoutMs is released as aborted, not as the key's timeout: a caller
   * must not be able to open a key's breaker by asking for 1 ms. Default: `deadline`.
   */
  keyDeadline?: number;
  /**
   * Longest wait for a key before giving up with PoolExhaustedError (its retryAfterMs says when one
   * frees), within the deadline. Default: the whole deadline. The job queue waits briefly here and
   * hands longer waits back to BullMQ.
   */
  keyWaitMs?: number;
  /** One upstream attempt with the leased key, for one model of the route. */
  call: (lease: Lease, signal: S, model: string) => Promise<T>;
  /** What an error of `call` means for the key. */
  classify: (e: unknown) => Failure;
  /** The error to report when an attempt ran out of time without a provider answer. */
  timeoutError: (message: string) => unknown;
  /**
   * A gateway token to admit in the same Redis call as the first key (the caller's own admission):
   * a refusal ends the call with `refused(refusal)` (default TokenRefusedError) before any key is
   * touched. Failovers to other keys lease without it: the request is admitted once. The caller
   * settles the admission (`admitted` hands it over), on the last release.
   */
  admit?: TokenAdmitRequest;
  /** Told of the admission once the first key is leased with it. */
  admitted?: (admission: Admission) => void;
  /** The error a refused token ends the call with. */
  refused?: (refusal: TokenRefused['token']) => unknown;
  /** Whose call this is, for fair shares between tenants (default: the admitted token's id, else none). */
  tenant?: string;
  /** Told of each failed attempt once its lease is released (the result is undefined when the release failed). */
  released?: (lease: Lease, outcome: Outcome, result: ReleaseResult | undefined) => void;
}

export interface Dispatched<T> {
  /** Still held: the caller releases it with the real usage. */
  lease: Lease;
  value: T;
  model: string;
  /** Epoch ms at which the successful attempt started. */
  started: number;
  /** Attempts before this one (a key that answered a 429 may be among them twice). */
  failovers: number;
}

export class Dispatcher {
  readonly pool: KeyPool;
  readonly routes: Record<string, Route>;
  readonly maxAttempts: number;
  readonly attemptTimeoutMs: number;
  readonly clock: Clock;
  private readonly baseMs: number;
  private readonly maxMs: number;

  constructor(opts: DispatchOptions) {
    this.pool = opts.pool;
    this.routes = opts.routes ?? {};
    for (const [name, r] of Object.entries(this.routes)) {
      if (!Array.isArray(r?.models) || r.models.length === 0 || !r.models.every((m) => typeof m === 'string' && m)) {
        throw new TypeError(`routes.${name}.models must list at least one model name`);
      }
    }
    this.maxAttempts = opts.maxAttempts ?? 4;
    this.baseMs = opts.backoff?.baseMs ?? 100;
    this.maxMs = opts.backoff?.maxMs ?? 5000;
    this.attemptTimeoutMs = opts.attemptTimeoutMs ?? 60_000;
    this.clock = opts.clock ?? systemClock;
  }

  /** The route of that name, if any (an own property only: 'constructor' or '__proto__' are no routes). */
  route(name: string): Route | undefined {
    return Object.hasOwn(this.routes, name) ? this.routes[name] : undefined;
  }

  /** The models a request names, in the order its priority tries them, and its route if any. */
  plan(name: string, priority: Priority): { models: string[]; route?: string } {
    const route = this.route(name);
    if (!route) return { models: [name] };
    if (priority === 'critical') return { models: route.models, route: name };
    const cost = (m: string) => {
      const p = this.pool.priceOf(m);
      return p ? p.input + p.output : Number.POSITIVE_INFINITY;
    };
    // a stable sort: models of equal price keep the route's order
    return { models: [...route.models].sort((a, b) => cost(a) - cost(b)), route: name };
  }

  /** The dearest estimate of a call over the models its route may use (USD), for caller budgets. */
  estimateCostUsd(name: string, est: Estimate): number {
    let worst = 0;
    for (const m of this.plan(name, 'critical').models) worst = Math.max(worst, this.pool.costUsd(m, est.total - est.output, est.output));
    return worst;
  }

  /**
   * A lease on the first model of the plan that can serve. Only one model is waited for: the
   * strongest for critical traffic, the last resort (the dearest) for normal and, with a keyWaitMs, low.
   * A model no key serves (or too small for the request) is skipped.
   */
  private async lease(
    plan: { models: string[]; route?: string },
    est: Estimate,
    exclude: Set<string>,
    deadline: number,
    priority: Priority,
    signal: AbortLike,
    keyWaitMs = Infinity,
    token?: Pick<DispatchCall<unknown>, 'admit' | 'refused'>,
    tenant?: string,
  ): Promise<{ lease: Lease; model: string }> {
    let last: { model: string; reason: string; retryAfterMs: number | null } | undefined;
    let fault: unknown;
    const waitOn = priority === 'low' && !Number.isFinite(keyWaitMs) ? -1 : priority === 'critical' ? 0 : plan.models.length - 1;
    for (let i = 0; i < plan.models.length; i++) {
      const model = plan.models[i]!;
      let r: AcquireResult | TokenRefused;
      try {
        r = await this.pool.acquire({
          model,
          estimatedTokens: est.total,
          estimatedOutputTokens: est.output,
          exclude,
          // wait (a reservation included) at most half of what is left, so the call itself has time
          // before the deadline: a reservation that starts just before it would only be cut, and
          // the cut call counted against the key
          maxWaitMs: i === waitOn ? Math.max(0, Math.min(keyWaitMs, (deadline - this.clock.now()) / 2 - 10)) : 0,
          ...(plan.route !== undefined ? { route: plan.route } : {}),
          ...(token?.admit ? { admit: token.admit } : {}),
          priority,
          ...(tenant !== undefined ? { tenant } : {}),
          signal,
        });
      } catch (e) {
        if (plan.models.length > 1 && (isUnknownModel(e) || isRequestTooLarge(e))) {
          fault ??= e;
          continue;
        }
        // the deadline passed while waiting for a key: that is exhaustion, not a fault
        // (a reservation whose start came too late for it included): the pool was full, so waiting
        // helps, a 429 and not a 'waiting will not help' 503
        if (signal.reason instanceof TimedOut) throw new PoolExhaustedError(plan.route ?? model, last?.reason ?? 'rate_limited', last?.retryAfterMs ?? 0);
        throw e;
      }
      if (r.ok) return { lease: r, model };
      if (r.reason === 'token_refused') throw token?.refused ? token.refused(r.token) : new TokenRefusedError(r.token);
      if (!last || (r.retryAfterMs ?? Infinity) < (last.retryAfterMs ?? Infinity)) last = { model, reason: r.reason, retryAfterMs: r.retryAfterMs };
    }
    if (!last) throw fault;
    throw new PoolExhaustedError(plan.route ?? last.model, last.reason, last.retryAfterMs);
  }

  /** What a failed attempt means: the outcome for the key, whether another key may serve, and after how long (-1: backoff). */
  judge(failure: Failure, signal: AbortLike): { outcome: Outcome; retry: boolean; waitMs: number } {
    if (signal.aborted) {
      const why = signal.reason;
      if (why instanceof TimedOut && why.what === 'attempt') return { outcome: { error: 'timeout' }, retry: true, waitMs: -1 };
      // anything else (the caller left, its whole deadline, a shutdown) is the caller's doing, not the
      // key's health: a call the deadline cuts (one that waited long for its key, say) does not feed the breaker
      return { outcome: { error: 'aborted' }, retry: false, waitMs: 0 };
    }
    switch (failure.kind) {
      case 'aborted':
        return { outcome: { error: 'aborted' }, retry: false, waitMs: 0 };
      case 'timeout':
        return { outcome: { error: 'timeout' }, retry: true, waitMs: -1 };
      case 'network':
        return { outcome: { error: 'network' }, retry: true, waitMs: -1 };
      case 'status': {
        const { status, headers } = failure;
        const outcome: Outcome = { status, ...(headers ? { headers } : {}) };
        if (status === 429) {
          // "Request too large": no key of this size will ever take it; not the key's fault either
          if (!(headers && headerValue(headers, 'retry-after')) && /too large/i.test(failure.message)) return { outcome: { status: 413 }, retry: false, waitMs: 0 };
          // the pool now cools this key as long as the provider says; another key can serve at once,
          // or this one when its cooling ends
          return { outcome, retry: true, waitMs: 0 };
        }
        if (status === 401 || status === 403) return { outcome, retry: true, waitMs: 0 };
        if (status === 408 || status >= 500) return { outcome, retry: true, waitMs: -1 };
        return { outcome, retry: false, waitMs: 0 };
      }
    }
  }

  private backoffMs(attempt: number): number {
    return Math.random() * Math.min(this.maxMs, this.baseMs * 2 ** attempt);
  }

  /**
   * Lease a key and make the call, failing over to another key on 429, 5xx, timeouts, connection
   * errors and 401/403 (after a 429 with a Retry-After, to the first key free again, that one
   * included), within maxAttempts and the call's deadline. On success the lease is
   * returned still held, its heartbeat running (see Lease.keepAlive): the caller releases it with
   * the real usage, which stops the heartbeat.
   */
  async dispatch<T, S extends AbortSignal | CallSignal = AbortSignal>(c: DispatchCall<T, S>): Promise<Dispatched<T>> {
    const { signal, deadline } = c;
    const plan = this.plan(c.name, c.priority);
    const exclude = new Set<string>();
    // keys that answered this call a 429 (one may be tried again once, see below)
    const refused429 = new Set<string>();
    let lastError: unknown;
    // the token is admitted with the first key leased, and only then
    let token = c.admit ? { admit: c.admit, ...(c.refused ? { refused: c.refused } : {}) } : undefined;
    // the tenant of every attempt: the one given, else the admitted token's (a retry is admitted without it)
    let tenant = c.tenant;
    for (let attempt = 0; attempt < this.maxAttempts; attempt++) {
      signal.throwIfAborted();
      let leased: { lease: Lease; model: string };
      try {
        leased = await this.lease(plan, c.est, exclude, deadline, c.priority, signal, c.keyWaitMs, token, tenant);
      } catch (e) {
        // every key left was tried and failed (or is cooling after this call's own 429s, longer than
        // it may wait): the upstream's own error says more than "exhausted"
        if (lastError !== undefined && isPoolExhausted(e) && (e.reason === 'unavailable' || (e.reason === 'cooling' && refused429.size > 0))) throw lastError;
        throw e;
      }
      const { lease, model } = leased;
      if (token && lease.admission) {
        token = undefined;
        tenant ??= lease.tenant || undefined;
        c.admitted?.(lease.admission);
      }
      // renewed until released, however long the call (or the caller's stream) runs
      lease.keepAlive();
      const started = this.clock.now();
      // this attempt's own timeout, inside the call's deadline
      // of the call's kind (S: AbortSignal or CallSignal): the attempt's signal goes where the
      // call's would (an SDK needs an AbortSignal)
      const ac = callController(signal, Math.min(this.attemptTimeoutMs, deadline - started), 'attempt') as CallControl<{ signal: S; abort(reason?: unknown): void }>;
      const callersCut = c.keyDeadline !== undefined && deadline < Math.min(started + this.attemptTimeoutMs, c.keyDeadline);
      try {
        // the request leaves now: a windowed key counts one sent late (a stalled process) from here
        lease.sent();
        const value = await c.call(lease, ac.controller.signal, model);
        return { lease, value, model, started, failovers: attempt };
      } catch (e) {
        const failure = c.classify(e);
        const j = this.judge(failure, ac.controller.signal);
        if (callersCut && j.outcome.error === 'timeout') j.outcome = { error: 'aborted' };
        const outcome: Outcome = { ...j.outcome, latencyMs: this.clock.now() - started };
        const released = await lease.release(outcome).catch(() => undefined);
        c.released?.(lease, outcome, released);
        const why = ac.controller.signal.reason;
        lastError = why instanceof TimedOut && failure.kind !== 'status' ? c.timeoutError(why.message) : e;
        if (!j.retry || this.clock.now() >= deadline) throw lastError;
        // A 429 that says when to come back (Retry-After, above 0) leaves its key in once: the pool
        // cools it that long, so the next attempt takes another key if one is free, else waits for
        // the first to cool down (with two keys, one late request on each no longer fails a call
        // that has seconds left). A second 429 from it, a 429 without that hint (the pool cools
        // 1 s by default: a per-minute limit or a spent quota would only answer 429 again), one
        // whose release failed (not cooled) and every other failure leave the key out of the call.
        const hint = j.outcome.status === 429 ? cooldownHint(j.outcome.headers) : undefined;
        const again = hint !== undefined && hint.from === 'retry-after' && hint.ms > 0 && released !== undefined && !refused429.has(lease.keyId);
        if (j.outcome.status === 429) refused429.add(lease.keyId);
        if (!again) exclude.add(lease.keyId);
        const wait = j.waitMs >= 0 ? j.waitMs : this.backoffMs(attempt);
        if (this.clock.now() + wait >= deadline) throw lastError;
        if (wait > 0) await this.clock.sleep(wait, signal);
      } finally {
        ac.done();
      }
    }
    throw lastError;
  }
}
