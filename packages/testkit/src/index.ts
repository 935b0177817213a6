/**
 * @keypool/testkit: real Redis for keypool tests (never a mock), and a fake OpenAI-compatible
 * upstream (./fake-openai, also `@keypool/testkit/fake-openai` without vitest).
 *
 * Integration tests (`*.int.test.ts`) run in the vitest projects "redis" and
 * "cluster", whose global setup starts the servers; `KEYPOOL_TEST_TARGET`
 * selects which one {@link connectTestRedis} talks to.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Cluster, Redis } from 'ioredis';
import { inject } from 'vitest';
import { connectTo, TEST_REDIS_ENV, type TestRedisConnection } from './child-connect.js';
import './provided.js';

export * from './child-connect.js';
export * from './redis-server.js';
export * from './topologies.js';
export * from './fake-openai/index.js';
export { LogSink } from './log-sink.js';

/** Which Redis deployment the current vitest project tests against. */
export type TestTarget = 'standalone' | 'cluster';

/** Reads KEYPOOL_TEST_TARGET (set per vitest project); defaults to `standalone`. */
export function testTarget(): TestTarget {
  const target = process.env.KEYPOOL_TEST_TARGET || 'standalone';
  if (target !== 'standalone' && target !== 'cluster') {
    throw new Error(`KEYPOOL_TEST_TARGET must be "standalone" or "cluster", got "${target}"`);
  }
  return target;
}

/**
 * Serialisable connection info for the current target. Pass it to a child
 * process as `env: { ...process.env, ...childEnv() }`; the child calls `connectFromEnv()`.
 */
export function connectionForChild(): TestRedisConnection {
  if (testTarget() === 'cluster') return { clusterNodes: provided('clusterNodes') };
  return { url: provided('redisUrl') };
}

/** `{ KEYPOOL_TEST_REDIS: JSON }` for a child process's environment. */
export function childEnv(): Record<string, string> {
  return { [TEST_REDIS_ENV]: JSON.stringify(connectionForChild()) };
}

/**
 * The arguments of `node` that run the child-process fixture `fixture` (a .ts file of a
 * packages/<pkg>/test/fixtures directory): its bundle made by the global setup (fixtures.ts: the
 * same sources, started without tsx's cost), or `--import tsx` and the file where there is
 * no bundle (a project without the global setup, a fixture added since the run started).
 */
export function fixtureArgs(fixture: string): string[] {
  const dir = inject('fixtureBundles');
  const bundle = dir && join(dir, relative(REPO_ROOT, fixture).replace(/\.ts$/, '.mjs'));
  return bundle && existsSync(bundle) ? [bundle] : ['--import', 'tsx', fixture];
}
const REPO_ROOT = fileURLToPath(new URL('../../..', import.meta.url));

/**
 * A new ioredis client (Redis or Cluster, per {@link testTarget}) for the
 * servers of this run. Commands are queued until it is ready; `quit()` it in
 * `afterAll`.
 */
export function connectTestRedis(): Redis | Cluster {
  return connectTo(connectionForChild());
}

/**
 * `prefix` plus a random suffix, limited to [a-z0-9-], so that test files
 * running in parallel against one Redis never share a pool name.
 */
export function uniqueName(prefix: string): string {
  const base = prefix.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '') || 'test';
  return `${base}-${randomBytes(4).toString('hex')}`;
}

function provided<K extends 'redisUrl' | 'clusterNodes'>(key: K) {
  const value = inject(key);
  if (value === undefined) {
    // Only the "redis" and "cluster" projects have the global setup.
    throw new Error(`inject('${key}') is empty: Redis tests must be named *.int.test.ts so they run in the redis/cluster projects`);
  }
  return value;
}
