/**
 * The GatewayConfig a benchmark child runs with (a gateway, a worker), built in code from the
 * config package's section schemas (their defaults; never the machine's KEYPOOL_* variables, which
 * would leak into a measurement), keys pointing at the fake upstream.
 */
import { parsePoolConfig } from '@keypool/core';
import { QueueSectionSchema, SchedulerSectionSchema, ServerSectionSchema, type GatewayConfig } from '@keypool/config';

export interface BenchGatewayConfigInput {
  redisUrl: string;
  fakeUrl: string;
  pool: string;
  model: string;
  /** provider openai, baseURL the fake; no limits unless an rpm is given */
  keys: { secret: string; name: string; rpm?: number }[];
  logLevel: GatewayConfig['logLevel'];
  /** server fields other than their defaults */
  server?: { host?: string; port?: number; adminToken?: string; drainMs?: number };
  /** section inputs (the schemas fill in the rest) */
  scheduler?: Record<string, unknown>;
  queue?: Record<string, unknown>;
}

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
      keys: o.keys.map((k) => ({ secret: k.secret, name: k.name, provider: 'openai', baseURL: o.fakeUrl, models: [o.model], ...(k.rpm === undefined ? {} : { rpm: k.rpm }) })),
    }),
  };
}
