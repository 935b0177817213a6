/**
 * Rebuilding a test Redis client inside a child process.
 *
 * This file must never import `vitest` (directly or through index.ts): child
 * processes started by tests run under plain `tsx`/`node`, outside any vitest
 * worker, and only need to know where the Redis under test lives.
 */
import { Cluster, Redis } from 'ioredis';

/** Address of one Redis node. */
export interface RedisNode {
  host: string;
  port: number;
}

/**
 * Serialisable description of the Redis under test. Exactly one field is set:
 * `url` for a standalone server, `clusterNodes` for a cluster.
 */
export interface TestRedisConnection {
  url?: string;
  clusterNodes?: RedisNode[];
}

/** Environment variable that carries a JSON {@link TestRedisConnection} to a child process. */
export const TEST_REDIS_ENV = 'KEYPOOL_TEST_REDIS';

/**
 * Creates an ioredis client for `info`. Commands issued before the connection
 * is up are queued by ioredis (offline queue), so callers may use it at once.
 */
export function connectTo(info: TestRedisConnection, options: { maxRetriesPerRequest?: number | null } = {}): Redis | Cluster {
  if (info.clusterNodes && info.clusterNodes.length > 0) {
    // Cluster nodes are spawned on 127.0.0.1 and announce that address, so
    // the slot map ioredis discovers is directly reachable: no natMap needed.
    return new Cluster(info.clusterNodes, {
      redisOptions: { connectTimeout: 5_000, ...options },
      slotsRefreshTimeout: 5_000,
    });
  }
  if (info.url) return new Redis(info.url, { connectTimeout: 5_000, ...options });
  throw new Error(`Test Redis connection has neither url nor clusterNodes: ${JSON.stringify(info)}`);
}

/**
 * Child-process side of `connectionForChild()`: reads `KEYPOOL_TEST_REDIS`
 * from the environment and returns a client to the same Redis as the parent test.
 */
export function connectFromEnv(env: NodeJS.ProcessEnv = process.env, options: { maxRetriesPerRequest?: number | null } = {}): Redis | Cluster {
  const raw = env[TEST_REDIS_ENV];
  if (!raw) {
    throw new Error(`${TEST_REDIS_ENV} is not set; the parent test must pass { ${TEST_REDIS_ENV}: JSON.stringify(connectionForChild()) } in env`);
  }
  return connectTo(JSON.parse(raw) as TestRedisConnection, options);
}
