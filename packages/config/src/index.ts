/**
 * @keypool/config: the deployment config that `keypool serve`, `keypool worker` and the CLI share.
 * One YAML file (plus `${VAR}` interpolation and env overrides), validated section by section, every
 * problem reported at once in a ConfigError.
 *
 *   const config = loadGatewayConfig({ file: 'keypool.yaml' });   // throws ConfigError
 *   const logger = rootLogger(config.logLevel);
 *
 * Depends on core (the pool's schema, ConfigError) and secrets (the secrets section), never on the
 * gateway or the worker: both depend on it.
 */
export { loadGatewayConfig, type LoadGatewayConfigOptions } from './loader.js';
export { GatewayFileSchema, type GatewayConfig, type GatewayFileInput } from './schema.js';
export { FileKeySchema } from './sections/keys.js';
export { LOG_LEVELS, LogLevelSchema, type LogLevel } from './sections/log-level.js';
export { LLM_QUEUE, QueueSectionSchema, type QueueSection } from './sections/queue.js';
export { RedisSectionSchema, type RedisSection } from './sections/redis.js';
export { redisConnection } from './redis-connection.js';
export { RouteSchema, RoutesSchema, type Route } from './sections/routes.js';
export { SchedulerSectionSchema, type SchedulerSection } from './sections/scheduler.js';
export { BackoffSchema, parseByteSize, ServerSectionSchema, type ServerSection } from './sections/server.js';
export { REDACT, rootLogger } from './logger.js';
export { startSecretSync, type StartedSecretSync } from './secret-sync.js';
