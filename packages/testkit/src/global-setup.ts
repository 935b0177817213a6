/**
 * Vitest globalSetup for the integration projects: one standalone Redis and
 * one Redis Cluster per project, passed to tests through `project.provide`.
 * Both are always started so a project's target can be switched by env alone.
 */
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';
import { bundleFixtures } from './fixtures.js';
import './provided.js';
import { startCluster, startRedis } from './redis-server.js';

const REPO_ROOT = fileURLToPath(new URL('../../..', import.meta.url));

/** Starts the servers and bundles the fixtures, provides `redisUrl`, `clusterNodes` and `fixtureBundles`, and returns the teardown. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  // in watch mode the global setup does not run again when a source changes, so a bundle would go
  // stale: children run the sources with tsx there
  const bundle = project.globalConfig.watch ? Promise.reject(new Error('watch mode')) : bundleFixtures(REPO_ROOT, `${project.name}-${process.pid}`);
  const [redis, cluster, bundles] = await Promise.allSettled([startRedis(), startCluster(), bundle]);
  const stopAll = async () => {
    await Promise.allSettled([redis, cluster, bundles].map((r) => (r.status === 'fulfilled' ? r.value.stop() : undefined)));
  };
  if (redis.status === 'rejected' || cluster.status === 'rejected') {
    await stopAll(); // do not leak the one that did start
    throw redis.status === 'rejected' ? redis.reason : (cluster as PromiseRejectedResult).reason;
  }

  project.provide('redisUrl', redis.value.url);
  project.provide('clusterNodes', cluster.value.nodes);
  // without the bundles children run their fixture with tsx (slower, same result): say why, go on
  if (bundles.status === 'fulfilled') project.provide('fixtureBundles', bundles.value.dir);
  else console.warn(`[testkit] ${project.name}: fixtures not bundled, children run them with tsx: ${String(bundles.reason).split('\n')[0]}`);
  const shownUrl = redis.value.url.replace(/\/\/[^@/]*@/, '//***@'); // never log a password from REDIS_URL
  const shownNodes = cluster.value.nodes.map((n) => `${n.host}:${n.port}`).join(',');
  console.log(`[testkit] ${project.name}: Redis ${shownUrl} (${redis.value.kind}), cluster ${shownNodes}`);
  return stopAll;
}
