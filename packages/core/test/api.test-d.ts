/**
 * Type tests of the public API (checked by tsc in `npm test`; expectTypeOf fails compilation on a mismatch).
 */
import { expectTypeOf } from 'vitest';
import type { AcquireResult, Admission, Clock, Exhausted, ExhaustedReason, KeyPool, KeyPoolOptions, Lease, ReleaseResult, TokenRefused } from '../src/index.js';
import { isRedisUnavailable, isUnknownModel, type RedisUnavailableError, type UnknownModelError } from '../src/index.js';

declare const pool: KeyPool;
declare const r: AcquireResult;

// acquire resolves to a lease or an "exhausted" result, told apart by `ok`
expectTypeOf(pool.acquire({ model: 'm' })).resolves.toEqualTypeOf<AcquireResult>();
// with a gateway token to admit in the same call, the token's refusal is one more result
expectTypeOf(pool.acquire({ model: 'm', admit: { token: 't', estimatedCostUsd: 0 } })).resolves.toEqualTypeOf<AcquireResult | TokenRefused>();
declare const lease: Lease;
expectTypeOf(lease.admission).toEqualTypeOf<Admission | undefined>();
expectTypeOf(lease.release).toBeCallableWith({ status: 200 }, { settle: { admission: { id: 'x', reservation: 'y' }, refundRequest: true } });
if (r.ok) {
  expectTypeOf(r).toEqualTypeOf<Lease>();
  expectTypeOf(r.secret).toEqualTypeOf<string>();
  expectTypeOf(r.release).returns.resolves.toEqualTypeOf<ReleaseResult>();
} else {
  expectTypeOf(r).toEqualTypeOf<Exhausted>();
  expectTypeOf(r.reason).toEqualTypeOf<ExhaustedReason>();
  // null: waiting will not help (every key revoked, disabled or out of a total budget)
  expectTypeOf(r.retryAfterMs).toEqualTypeOf<number | null>();
}

// release takes a status or an error kind, nothing else
expectTypeOf<Parameters<Lease['release']>[0]['error']>().toEqualTypeOf<'timeout' | 'network' | 'broken_stream' | 'aborted' | 'unused' | undefined>();

// type guards narrow unknown errors
declare const e: unknown;
if (isRedisUnavailable(e)) expectTypeOf(e).toEqualTypeOf<RedisUnavailableError>();
if (isUnknownModel(e)) expectTypeOf(e.model).toEqualTypeOf<string>();
expectTypeOf<UnknownModelError['code']>().toEqualTypeOf<import('../src/index.js').KeyPoolErrorCode>();

// the clock of the pool's own decisions is optional (default: the system clock)
expectTypeOf<KeyPoolOptions['clock']>().toEqualTypeOf<Clock | undefined>();
