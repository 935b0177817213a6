/**
 * The whole config file: the pool's own config (core's PoolConfigSchema) at the top level plus the
 * sections of sections/*.ts, and the config object the gateway, the worker and the CLI run with.
 */
import { PoolConfigSchema, type PoolConfig } from '@keypool/core';
import { SecretsSectionSchema, type SecretsSection } from '@keypool/secrets';
import { z } from 'zod';
import { FileKeySchema } from './sections/keys.js';
import { LogLevelSchema, type LogLevel } from './sections/log-level.js';
import { QueueSectionSchema, type QueueSection } from './sections/queue.js';
import { RedisSectionSchema, type RedisSection } from './sections/redis.js';
import { RoutesSchema, type Route } from './sections/routes.js';
import { SchedulerSectionSchema, type SchedulerSection } from './sections/scheduler.js';
import { ServerSectionSchema, type ServerSection } from './sections/server.js';

/**
 * The whole file, for documentation (z.toJSONSchema) and field-name suggestions. Validation runs the
 * same pieces one section at a time, and the pool part through core's PoolConfigSchema.
 */
export const GatewayFileSchema = z
  .object({
    ...PoolConfigSchema.shape,
    keys: z.array(FileKeySchema).default([]).describe('The provider API keys this gateway holds (secrets stay in memory).'),
    redis: RedisSectionSchema.optional().describe('Where Redis is; absent: an embedded redis-server.'),
    server: ServerSectionSchema.prefault({}).describe('HTTP listener, deadlines and retries.'),
    logLevel: LogLevelSchema,
    routes: RoutesSchema,
    secrets: SecretsSectionSchema.optional().describe('Secret sources (env, encrypted file, AWS Secrets Manager, Vault) whose keys join the pool, refreshed and rotated without restarts.'),
    scheduler: SchedulerSectionSchema.prefault({}).describe('The periodic jobs of `keypool worker`.'),
    queue: QueueSectionSchema.prefault({}).describe('The LLM job queue `keypool worker` consumes.'),
  })
  .strict();

export type GatewayFileInput = z.input<typeof GatewayFileSchema>;

/** What `keypool serve` runs with. */
export interface GatewayConfig {
  /** Neither set: start an embedded redis-server. embeddedDir is absolute. */
  redis: RedisSection;
  server: ServerSection;
  logLevel: LogLevel;
  routes: Record<string, Route>;
  /** Secret sources; absent: only the keys of the file. */
  secrets?: SecretsSection;
  scheduler: SchedulerSection;
  queue: QueueSection;
  /** Core's parsed pool config, secrets filled in. */
  pool: PoolConfig;
}

/** The sections besides the pool part, each validated on its own (so that one bad section hides no other's problems). */
export const GATEWAY_SECTIONS = {
  redis: RedisSectionSchema.optional(),
  server: ServerSectionSchema.prefault({}),
  logLevel: LogLevelSchema,
  routes: RoutesSchema,
  secrets: SecretsSectionSchema.optional(),
  scheduler: SchedulerSectionSchema.prefault({}),
  queue: QueueSectionSchema.prefault({}),
};
/** A section name (redis, server, logLevel, routes, secrets, scheduler, queue). */
export type Section = keyof typeof GATEWAY_SECTIONS;
