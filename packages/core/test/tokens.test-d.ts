/**
 * Type tests of the gateway token API (checked by tsc): refusals are results told apart by `ok`.
 */
import { expectTypeOf } from 'vitest';
import type { GatewayTokenInfo, GatewayTokens, KeyPool, TokenAdmission, TokenRefusal } from '../src/index.js';

declare const pool: KeyPool;
declare const a: TokenAdmission;

expectTypeOf(pool.tokens).toEqualTypeOf<GatewayTokens>();
expectTypeOf(pool.tokens.admit).returns.resolves.toEqualTypeOf<TokenAdmission>();
expectTypeOf(pool.tokens.get).returns.resolves.toEqualTypeOf<GatewayTokenInfo | null>();
expectTypeOf(pool.tokens.create).returns.resolves.toEqualTypeOf<{ token: string; info: GatewayTokenInfo }>();
if (a.ok) {
  expectTypeOf(a.reservation).toEqualTypeOf<string>();
  expectTypeOf(a.id).toEqualTypeOf<string>();
} else {
  expectTypeOf(a.reason).toEqualTypeOf<TokenRefusal>();
  expectTypeOf(a.retryAfterMs).toEqualTypeOf<number | null>();
  expectTypeOf(a.id).toEqualTypeOf<string | undefined>();
}
expectTypeOf<TokenRefusal>().toEqualTypeOf<'unknown' | 'revoked' | 'model_not_allowed' | 'rate_limited' | 'budget_exhausted' | 'over_budget' | 'priority_not_allowed'>();
// settle's options are optional
expectTypeOf(pool.tokens.settle).toBeCallableWith('0123456789ab', '0123456789ab:1:0', 0.01);
