/**
 * @keypool/core: a pool of LLM provider API keys shared by a fleet of processes through Redis.
 *
 *   const pool = await KeyPool.connect({ redis: process.env.REDIS_URL, config });
 *   const lease = await pool.acquire({ model: 'gpt-4o-mini', estimatedTokens: 900, maxWaitMs: 2000 });
 *   if (!lease.ok) return retryLater(lease.retryAfterMs);
 *   lease.sent(); // just before the call: a windowed key counts a request sent late from then
 *   ... call the provider with lease.secret and lease.baseURL ...
 *   await lease.release({ status: 200, latencyMs, usage: { promptTokens, completionTokens }, headers });
 */
export { KeyPool, PRIORITY_CLASSES } from './pool.js';
export { PartitionedPool, type PartitionStatus } from './partitioned-pool.js';
export { hashSlot, partitionOf, partitionTag } from './partitions.js';
export type {
  AcquireRequest,
  AcquireResult,
  Admission,
  Exhausted,
  ExhaustedReason,
  KeyPoolEvents,
  AdmissionEvent,
  KeyPoolOptions,
  Lease,
  PriorityClass,
  ReleaseOptions,
  ReleaseResult,
  TokenAdmitRequest,
  TokenRefused,
  TokenSettlement,
} from './pool.js';
export type { ProbeTarget } from './upkeep.js';
export type { ScheduledJobStatus } from './status.js';
export type { KeyChange } from './key-admin.js';
export {
  KeySpecSchema,
  PoolConfigSchema,
  burstsOf,
  formatPath,
  parseKeySettings,
  parseKeySpec,
  parsePoolConfig,
  refusedOrigin,
  type KeySpec,
  type KeySpecInput,
  type PoolConfig,
  type PoolConfigInput,
} from './config.js';
export * from './errors.js';
export { ManualClock, systemClock, type AbortLike, type Clock } from './clock.js';
export { DEFAULT_BASE_URL, destinationOf, hintOf, keyIdOf, originOf } from './fingerprint.js';
export { cooldownFromHeaders, cooldownHint, headerValue, parseDuration, type HeadersLike } from './headers.js';
export { classify, type ErrorKind, type Outcome, type OutcomeClass } from './outcome.js';
export { DEFAULT_PRICES, NANOS_PER_USD, PriceTable, type ModelPrice } from './pricing.js';
export { groupOf, limitsOf, type KeyRecord, type KeySettings } from './records.js';
export { PoolKeys } from './pool-keys.js';
export { createRedis, describeRedis, toConnection, type CreateRedisOptions, type RedisConnection, type RedisNodeAddress, type RedisPurpose, type RedisTlsOptions } from './connect.js';
export { keypoolLibrary, scripts } from './scripts.js';
export type { KeyState, KeyStatus, PoolStatus, SpendLine } from './status.js';
export { WAIT_BOUNDS_MS, waitPercentile, type ClassTraffic, type PoolSeries, type PoolTraffic, type TenantTraffic, type TrafficWindow } from './series.js';
export {
  DeclaredTokenSchema,
  GatewayTokenSpecSchema,
  GatewayTokens,
  budgetPeriodEnd,
  isGatewayToken,
  parseGatewayTokenSpec,
  tokenHashOf,
  tokenHintOf,
  tokenIdOf,
  type DeclaredToken,
  type GatewayTokenInfo,
  type TokenStoreStatus,
  type GatewayTokenSpec,
  type TokenAdmission,
  type TokenBackend,
  type TokenRefusal,
} from './tokens.js';
