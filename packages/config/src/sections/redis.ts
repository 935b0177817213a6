import { z } from 'zod';

/** What an invalid Redis URL reads (file or REDIS_URL). */
export const REDIS_URL_MESSAGE = 'expected a redis:// or rediss:// URL';

/** True for a redis:// or rediss:// URL (the env override REDIS_URL is checked the same way). */
export function isRedisUrl(value: string): boolean {
  try {
    return ['redis:', 'rediss:'].includes(new URL(value).protocol);
  } catch {
    return false;
  }
}

/** Where Redis is. Neither set: `keypool serve` starts a private redis-server. */
export const RedisSectionSchema = z
  .object({
    url: z
      .string()
      .refine(isRedisUrl, REDIS_URL_MESSAGE)
      .optional()
      .describe(
        'Redis to keep the pool in, e.g. redis://:password@redis.internal:6379/0 (rediss:// for TLS). Env REDIS_URL overrides it. ' +
          'Unset (and no REDIS_URL): keypool starts its own redis-server on a free 127.0.0.1 port, fine for one gateway process; ' +
          'several gateways sharing one pool must point at the same Redis.',
      ),
    embeddedDir: z
      .string()
      .min(1)
      .optional()
      .describe(
        'Data directory of the embedded redis-server (only used when no url is set), relative to this file. ' +
          'Set: the pool state (spend, cooling, breakers) survives restarts (append-only file). Unset: a temp dir, nothing is kept.',
      ),
  })
  .strict();

export type RedisSection = z.output<typeof RedisSectionSchema>;
