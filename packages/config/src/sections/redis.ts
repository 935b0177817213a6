import { z } from 'zod';

/** What an invalid Redis URL reads (file or REDIS_URL). */
export const REDIS_URL_MESSAGE = 'expected a redis:// or rediss:// URL';
/** What an invalid node list reads (file or REDIS_SENTINELS / REDIS_CLUSTER_SEEDS). */
export const REDIS_NODE_MESSAGE = 'expected host:port (e.g. redis-1.internal:26379)';

/** True for a redis:// or rediss:// URL (the env override REDIS_URL is checked the same way). */
export function isRedisUrl(value: string): boolean {
  try {
    return ['redis:', 'rediss:'].includes(new URL(value).protocol);
  } catch {
    return false;
  }
}

/** `host:port` ([v6]:port for IPv6) as a node address, or undefined. */
export function parseNode(value: string): { host: string; port: number } | undefined {
  const m = /^\s*(\[[^\]]+\]|[^:\s]+):(\d{1,5})\s*$/.exec(value);
  if (!m) return undefined;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return undefined;
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

const NodeSchema = z
  .string()
  .refine((v) => parseNode(v) !== undefined, REDIS_NODE_MESSAGE)
  .describe('host:port');

const TlsSchema = z
  .object({
    ca: z
      .string()
      .min(1)
      .optional()
      .describe('PEM file of the CA the server certificate must chain to (a private CA), relative to this file. Env REDIS_TLS_CA overrides it.'),
    cert: z.string().min(1).optional().describe('PEM file of the client certificate (servers with tls-auth-clients yes); needs key.'),
    key: z.string().min(1).optional().describe('PEM file of the client private key; needs cert.'),
    servername: z.string().min(1).optional().describe('Name the server certificate must carry (SNI), when it differs from the host connected to.'),
    rejectUnauthorized: z.boolean().default(true).describe('false accepts any server certificate: tests only, never in production.'),
  })
  .strict()
  .superRefine((t, ctx) => {
    if ((t.cert === undefined) !== (t.key === undefined)) {
      ctx.addIssue({
        code: 'custom',
        path: [t.cert === undefined ? 'cert' : 'key'],
        message: 'a client certificate needs both cert and key',
      });
    }
  });

/** Where Redis is. None of url, sentinel, cluster: `keypool serve` starts a private redis-server. */
export const RedisSectionSchema = z
  .object({
    url: z
      .string()
      .refine(isRedisUrl, REDIS_URL_MESSAGE)
      .optional()
      .describe(
        'Redis to keep the pool in, e.g. redis://:password@redis.internal:6379/0 (rediss:// for TLS). Env REDIS_URL overrides it. ' +
          'Unset (with no sentinel or cluster, and no REDIS_URL): keypool starts its own redis-server on a free 127.0.0.1 port, fine for one gateway process; ' +
          'several gateways sharing one pool must point at the same Redis.'
      ),
    sentinel: z
      .object({
        nodes: z.array(NodeSchema).min(1).describe('The sentinels, host:port each (usually three). Env REDIS_SENTINELS (comma-separated) overrides it.'),
        masterName: z
          .string({
            error: 'required: the master name the sentinels monitor (env REDIS_SENTINEL_MASTER)',
          })
          .min(1)
          .describe('The master name the sentinels monitor. Env REDIS_SENTINEL_MASTER overrides it.'),
        username: z.string().min(1).optional().describe('ACL user of the sentinels themselves, if they have one.'),
        password: z.string().min(1).optional().describe("The sentinels' own password (their requirepass), if any. Env REDIS_SENTINEL_PASSWORD overrides it."),
        tls: z.boolean().default(false).describe('Talk TLS to the sentinels too (with the tls settings below).'),
      })
      .strict()
      .optional()
      .describe('Redis Sentinel: keypool asks the sentinels for the master and follows a failover. Excludes url and cluster.'),
    cluster: z
      .object({
        nodes: z
          .array(NodeSchema)
          .min(1)
          .describe('Seed nodes, host:port each; the rest is discovered. Env REDIS_CLUSTER_SEEDS (comma-separated) overrides it.'),
        natMap: z
          .record(NodeSchema, NodeSchema)
          .optional()
          .describe('Address a node announces -> address reachable from here, e.g. {"10.0.0.5:6379": "203.0.113.7:7000"} (NAT, Docker).'),
      })
      .strict()
      .optional()
      .describe('Redis Cluster. Excludes url and sentinel.'),
    username: z.string().min(1).optional().describe('ACL user of the Redis nodes (wins over one in the url). Env REDIS_USERNAME overrides it.'),
    password: z
      .string()
      .min(1)
      .optional()
      .describe('Password of the Redis nodes (wins over one in the url); prefer ${VAR} or env REDIS_PASSWORD, which overrides it. Never printed.'),
    tls: TlsSchema.optional().describe(
      'TLS to the Redis nodes (rediss:// turns it on with the system CAs; this section adds a CA, client certificate, server name).'
    ),
    embeddedDir: z
      .string()
      .min(1)
      .optional()
      .describe(
        'Data directory of the embedded redis-server (only used when no url, sentinel or cluster is set), relative to this file. ' +
          'Set: the pool state (spend, cooling, breakers) survives restarts (append-only file). Unset: a temp dir, nothing is kept.'
      ),
  })
  .strict()
  .superRefine((r, ctx) => {
    const set = (['url', 'sentinel', 'cluster'] as const).filter((k) => r[k] !== undefined);
    if (set.length > 1) {
      ctx.addIssue({
        code: 'custom',
        path: [set[1]!],
        message: `set one of url, sentinel, cluster, not ${set.join(' and ')} (an env override replaces the file's choice)`,
      });
    }
    if (set.length === 0) {
      for (const k of ['username', 'password', 'tls'] as const) {
        if (r[k] !== undefined)
          ctx.addIssue({
            code: 'custom',
            path: [k],
            message: `${k} needs a Redis to apply to: set url, sentinel or cluster`,
          });
      }
    }
    if (r.sentinel?.tls && !r.tls && !r.url)
      ctx.addIssue({
        code: 'custom',
        path: ['sentinel', 'tls'],
        message: 'sentinel.tls uses the tls settings: add a tls section (tls: {} for the system CAs)',
      });
  });

export type RedisSection = z.output<typeof RedisSectionSchema>;
