/**
 * The GatewayConfig a benchmark child runs with (a gateway, a worker), built in code from the
 * package's public API: every section's defaults as loadGatewayConfig fills them in (from an empty
 * environment, so the machine's KEYPOOL_* variables never leak into a measurement), keys pointing
 * at the fake upstream.
 */
import { parsePoolConfig } from '@keypool/core';
import { loadGatewayConfig, QueueSectionSchema, SchedulerSectionSchema, type GatewayConfig } from '@keypool/server';

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
  const env: Record<string, string> = {};
  if (o.server?.host !== undefined) env.KEYPOOL_HOST = o.server.host;
  if (o.server?.port !== undefined) env.KEYPOOL_PORT = String(o.server.port);
  if (o.server?.adminToken !== undefined) env.KEYPOOL_ADMIN_TOKEN = o.server.adminToken;
  const defaults = loadGatewayConfig({ env });
  return {
    redis: { url: o.redisUrl },
    server: o.server?.drainMs === undefined ? defaults.server : { ...defaults.server, drainMs: o.server.drainMs },
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
