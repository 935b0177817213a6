/**
 * Vitest globalSetup for the integration projects: one standalone Redis and
 * one Redis Cluster per project, passed to tests through `project.provide`.
 * Both are always started so a project's target can be switched by env alone.
 */
import type { TestProject } from 'vitest/node';
import './provided.js';
import { startCluster, startRedis } from './redis-server.js';

/** Starts the servers, provides `redisUrl` and `clusterNodes`, and returns the teardown. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const [redis, cluster] = await Promise.allSettled([startRedis(), startCluster()]);
  const stopAll = async () => {
    await Promise.allSettled([redis, cluster].map((r) => (r.status === 'fulfilled' ? r.value.stop() : undefined)));
  };
  if (redis.status === 'rejected' || cluster.status === 'rejected') {
    await stopAll(); // do not leak the one that did start
    throw redis.status === 'rejected' ? redis.reason : (cluster as PromiseRejectedResult).reason;
  }

  project.provide('redisUrl', redis.value.url);
  project.provide('clusterNodes', cluster.value.nodes);
  const shownUrl = redis.value.url.replace(/\/\/[^@/]*@/, '//***@'); // never log a password from REDIS_URL
  const shownNodes = cluster.value.nodes.map((n) => `${n.host}:${n.port}`).join(',');
  console.log(`[testkit] ${project.name}: Redis ${shownUrl} (${redis.value.kind}), cluster ${shownNodes}`);
  return stopAll;
}
