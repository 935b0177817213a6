/**
 * The configuration of `keypool serve --config keypool.yaml` and `keypool worker`.
 *
 * One YAML file holds the pool's own config at the top level (everything core's PoolConfigSchema
 * accepts) plus the gateway sections `redis`, `server`, `logLevel` and `routes`. Loading:
 *
 *   1. read and parse the YAML (syntax errors are reported as `file:line:column`);
 *   2. interpolate `${VAR}` / `${VAR:-default}` in every string value from the environment;
 *   3. apply the env overrides (REDIS_URL, KEYPOOL_HOST, KEYPOOL_PORT, KEYPOOL_ADMIN_TOKEN,
 *      KEYPOOL_POOL, KEYPOOL_LOG_LEVEL), which win over the file;
 *   4. read `keys[i].secretEnv` secrets, validate the gateway sections here and the pool config with
 *      core's PoolConfigSchema, and check the routes against the models the keys serve.
 *
 * Every problem found by any step ends up in ONE ConfigError, each line `path: message`. No message
 * ever contains a secret, a token or a Redis URL (it may carry a password).
 */
import { dirname, resolve } from 'node:path';
import { ConfigError, type ConfigIssue } from '@keypool/core';
import type { SecretsSection } from '@keypool/secrets';
import { applyEnvOverrides } from './env.js';
import { toIssues, unknownFields, type JsonObject, type Json } from './issues.js';
import { checkRoutes, parsePool } from './pool.js';
import { GATEWAY_SECTIONS, GatewayFileSchema, type GatewayConfig, type Section } from './schema.js';
import type { LogLevel } from './sections/log-level.js';
import type { QueueSection } from './sections/queue.js';
import { resolveTlsFiles } from './redis-connection.js';
import type { RedisSection } from './sections/redis.js';
import type { Route } from './sections/routes.js';
import type { SchedulerSection } from './sections/scheduler.js';
import type { ServerSection } from './sections/server.js';
import { interpolate, readYaml } from './yaml.js';

/** Options of {@link loadGatewayConfig}. */
export interface LoadGatewayConfigOptions {
  /** The YAML file. Absent: the config comes from the environment alone (and has no keys). */
  file?: string;
  /** Defaults to process.env. */
  env?: NodeJS.ProcessEnv;
}

/**
 * Reads, interpolates and validates the gateway config.
 *
 * @throws ConfigError listing every problem (`path: message` per line), whose source names the file.
 */
export function loadGatewayConfig(opts: LoadGatewayConfigOptions = {}): GatewayConfig {
  const env = opts.env ?? process.env;
  const source = opts.file !== undefined ? `config file ${opts.file}` : 'config from the environment';
  const issues: ConfigIssue[] = [];

  let doc: JsonObject = {};
  if (opts.file !== undefined) {
    const parsed = readYaml(opts.file);
    if (!parsed.ok) throw new ConfigError(parsed.issues, source);
    doc = interpolate(parsed.value, [], env, issues, GatewayFileSchema) as JsonObject;
    // `server:` with every field commented out is an empty section, not a null one.
    for (const [k, v] of Object.entries(doc)) if (v === null) delete doc[k];
  }
  // A value whose interpolation failed is '' now: only the interpolation problem is worth reporting.
  const interpolationIssues = issues.length;
  const failedPaths = new Set(issues.map((i) => i.path));

  const { redis, server, logLevel, routes, secrets, scheduler, queue, ...poolPart } = doc;
  const sections: Record<Section, Json | undefined> = { redis, server, logLevel, routes, secrets, scheduler, queue };
  applyEnvOverrides(sections, poolPart, env, issues);

  const out: Partial<Record<Section, unknown>> = {};
  for (const name of Object.keys(GATEWAY_SECTIONS) as Section[]) {
    const r = GATEWAY_SECTIONS[name].safeParse(sections[name]);
    if (r.success) out[name] = r.data;
    else issues.push(...toIssues(r.error, [name], GatewayFileSchema));
  }

  const pool = parsePool(poolPart, env, issues);
  issues.push(...unknownFields(poolPart, GatewayFileSchema, []));
  // with secret sources, keys (and the models they serve) are only known once the sources are read
  if (sections.secrets === undefined) checkRoutes(sections.routes, poolPart.keys, issues);

  const redisOut: RedisSection = resolveTlsFiles({ ...(out.redis as RedisSection | undefined) }, opts.file, issues);
  const all = issues.filter((issue, n) => n < interpolationIssues || !failedPaths.has(issue.path));
  if (all.length > 0) throw new ConfigError(all, source);
  if (redisOut.embeddedDir !== undefined && opts.file !== undefined) redisOut.embeddedDir = resolve(dirname(opts.file), redisOut.embeddedDir);
  return {
    redis: redisOut,
    server: out.server as ServerSection,
    logLevel: out.logLevel as LogLevel,
    routes: out.routes as Record<string, Route>,
    ...(out.secrets ? { secrets: out.secrets as SecretsSection } : {}),
    scheduler: out.scheduler as SchedulerSection,
    queue: out.queue as QueueSection,
    pool: pool!,
  };
}
