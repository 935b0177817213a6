/**
 * What acquire takes and gives: the request, the Lease a caller holds for one upstream call, and
 * what its release reports. KeyPool (pool.ts) makes and settles them.
 */
import type { AbortLike } from './clock.js';
import type { ExhaustedReason } from './commands.js';
import type { Outcome } from './outcome.js';
import type { TokenAdmission } from './tokens.js';

/** Acquire could not give a lease; `retryAfterMs` says when the earliest key becomes usable (null: not by waiting). */
export interface Exhausted {
  ok: false;
  reason: ExhaustedReason;
  retryAfterMs: number | null;
}

/** The gateway token refused the request (given to acquire as `admit`): no key was looked at. */
export interface TokenRefused {
  ok: false;
  reason: 'token_refused';
  token: Extract<TokenAdmission, { ok: false }>;
}

/** A gateway token's admission, taken by acquire with the key (`admit`) or by `pool.tokens.admit`. */
export type Admission = Extract<TokenAdmission, { ok: true }>;

/** Admit a gateway token in the same Redis call as the key (see AcquireRequest.admit). */
export interface TokenAdmitRequest {
  /** The token the caller presented. */
  token: string;
  /** The model or route the token asks for (default: the acquire's model). */
  name?: string;
  /** Its estimated cost, reserved from the token's budget. */
  estimatedCostUsd: number;
}

/** Settle a gateway token's admission in the same Redis call as a release. */
/** Options of `lease.release`. */
export interface ReleaseOptions {
  settle?: TokenSettlement;
  background?: boolean;
}

export interface TokenSettlement {
  /** The admission (a lease's `admission`, or the one of an earlier attempt of the same request). */
  admission: Pick<Admission, 'id' | 'reservation'>;
  /** What the token pays (default: what this release charges the key: the real usage, else the estimate; nothing when unused). */
  costUsd?: number;
  /** Give the token's request back (nothing went to a provider). */
  refundRequest?: boolean;
}

export interface AcquireRequest {
  /** Model the request is for; only keys that list it are candidates. */
  model: string;
  /** Tokens the request will use (prompt + max output), taken from the TPM bucket now and reconciled at release. */
  estimatedTokens?: number;
  /** The part of estimatedTokens that is output (prices differ). Default: all of it, an upper bound on cost. */
  estimatedOutputTokens?: number;
  /** Key ids not to use (e.g. keys that just failed this request). */
  exclude?: Iterable<string>;
  /** The route (a named list of models) this request came through, for spend per route. */
  route?: string;
  /** Wait up to this long for the time the pool names instead of returning `{ ok: false }` (default 0). */
  maxWaitMs?: number;
  /** Aborts a wait; the promise rejects with the signal's reason. */
  signal?: AbortLike;
  /**
   * Admit this gateway token in the same call: a refused token gets `{ ok: false, reason:
   * 'token_refused' }` and no key is touched; when no key can be had the token is not taken
   * either. The lease carries the admission; settle it once (`release(outcome, { settle })`).
   */
  admit?: TokenAdmitRequest;
  /** The request's priority class (default 'normal'): the class acquire.lua admits it in. */
  priority?: PriorityClass;
  /**
   * Whose request this is, for fair shares between tenants (default: the admitted gateway token's
   * id, else '' = no tenant). At most 64 characters.
   */
  tenant?: string;
}

/** Priority classes, highest first: gateway and client calls default to normal, queue jobs to low. */
export type PriorityClass = 'critical' | 'normal' | 'low';
export const PRIORITY_CLASSES: readonly PriorityClass[] = ['critical', 'normal', 'low'];

/** A key lent for one upstream call. Release it exactly once with what happened. */
export interface Lease {
  ok: true;
  /** Lease id (unique per pool). */
  id: string;
  keyId: string;
  hint: string;
  name?: string;
  /** Provider and base URL of the key, from this process's own config or secret source (never from Redis). */
  provider: string;
  baseURL: string;
  model: string;
  /** The route given to acquire, if any. */
  route?: string;
  /** The API key. Not enumerable: JSON.stringify and console.log of a lease do not show it. */
  readonly secret: string;
  estimatedTokens: number;
  estimatedCostUsd: number;
  /** Redis time (ms) at which the lease was granted, and its deadline. */
  acquiredAt: number;
  deadline: number;
  /** This lease is the single half-open probe of its key. */
  probe: boolean;
  /** Granted by the per-process fallback while Redis was down. */
  local: boolean;
  /** The gateway token admitted with the key (AcquireRequest.admit). */
  admission?: Admission;
  /** The class and tenant the lease was admitted in (AcquireRequest.priority, tenant). */
  priority: PriorityClass;
  tenant: string;
  /**
   * Give the lease back; with `settle`, settle a gateway token's admission in the same call. With
   * `background` (the caller does not wait for the result: the answer is out already), the call
   * may wait up to 2 ms to share the socket write of the next command to Redis.
   */
  release(outcome: Outcome, opts?: ReleaseOptions): Promise<ReleaseResult>;
  /**
   * Say the request is leaving for the provider (call it just before the call; `at` defaults to
   * Date.now()). On a key whose provider counts requests over short windows (`window`), a request
   * sent more than half of limits.windowMarginMs (10 ms by default) after its admission (its
   * process stalled in between: a GC pause, a starved core) is then counted from its send at once,
   * by one extra Redis call that only such a request makes: the next window's admissions wait for
   * it instead of reaching the provider while it still fills the provider's window (a 429). Its
   * release also moves a send more than 5 ms late. Without it the request counts from its
   * admission. The Dispatcher (pooled client, gateway, queue worker) calls it; a second call is a
   * no-op.
   */
  sent(at?: number): void;
  /** When `sent` said the request left (Date.now()), if it did. */
  sentAt?: number;
  /**
   * Push the deadline to `ms` from now (default leaseTimeoutMs), for calls that outlive it (long
   * streams). False when the lease had already expired or been released.
   */
  extend(ms?: number): Promise<boolean>;
  /**
   * Renew the lease (extend by leaseTimeoutMs) every leaseTimeoutMs / 3 until it is released: a
   * call of any length keeps its key while this process lives, and a killed process's slots come
   * back within leaseTimeoutMs. Every pooled caller (the Dispatcher: gateway, pooled client, queue
   * worker) starts it once the lease is its own. Returns a function that stops it early; a lease
   * that expires anyway is logged (warn) and the call goes on. Calling it again is a no-op.
   */
  keepAlive(): () => void;
}

export type AcquireResult = Lease | Exhausted;

export interface ReleaseResult {
  /** The lease was known; false when it had expired (deadline passed) or was released before. */
  released: boolean;
  keyState?: string;
  breaker?: string;
  /** What changed for the key: opened, reopened, closed, revoked, cooling, retired, or ''. */
  transition: string;
  /**
   * What the key was charged (USD): the real usage priced, or the lease's estimate when the usage
   * is unknown and the estimate stands (an abort, a broken stream, a timeout, a success without usage).
   */
  costUsd: number;
  /** Redis time (ms) of the release. */
  releasedAt?: number;
}
