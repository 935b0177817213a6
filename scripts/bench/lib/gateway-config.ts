/**
 * The GatewayConfig a benchmark child runs with (a gateway, a worker), built in code from the
 * config package's section schemas (their defaults; never the machine's KEYPOOL_* variables, which
 * would leak into a measurement), keys pointing at the fake upstream.
 */
import { parsePoolConfig, type KeySpecInput } from '@keypool/core';
import { QueueSectionSchema, SchedulerSectionSchema, ServerSectionSchema, type GatewayConfig } from '@keypool/config';

export interface BenchGatewayConfigInput {
  redisUrl: string;
  fakeUrl: string;
  pool: string;
  model: string;
  /**
   * baseURL the fake; provider openai (its defaults) unless given; no limits unless an rpm is given.
   * provider, window, limitHeaders: how the fake enforces (bench:realistic's `window-1s` is Azure's way).
   */
  keys: BenchKey[];
  logLevel: GatewayConfig['logLevel'];
  /** server fields other than their defaults */
  server?: { host?: string; port?: number; adminToken?: string; drainMs?: number };
  /** the pool's limits section (windowMarginMs, learn), default unless given */
  limits?: { windowMarginMs?: number; learn?: boolean };
  /** the pool's priority section (classes and tenants' shares), default unless given */
  priority?: Record<string, unknown>;
  /** section inputs (the schemas fill in the rest) */
  scheduler?: Record<string, unknown>;
  queue?: Record<string, unknown>;
}

/** A key of a benchmark gateway: its secret and name, and the limit settings the benchmark chooses. */
export type BenchKey = { secret: string; name: string } & Pick<KeySpecInput, 'rpm' | 'provider' | 'window' | 'limitHeaders'>;

export function benchGatewayConfig(o: BenchGatewayConfigInput): GatewayConfig {
  return {
    redis: { url: o.redisUrl },
    server: ServerSectionSchema.parse(o.server ?? {}),
    logLevel: o.logLevel,
    routes: {},
    scheduler: SchedulerSectionSchema.parse(o.scheduler ?? {}),
    queue: QueueSectionSchema.parse(o.queue ?? {}),
    pool: parsePoolConfig({
      pool: o.pool,
      ...(o.limits ? { limits: o.limits } : {}),
      ...(o.priority ? { priority: o.priority } : {}),
      keys: o.keys.map((k) => ({ provider: 'openai', ...k, baseURL: o.fakeUrl, models: [o.model] })),
    }),
  };
}
