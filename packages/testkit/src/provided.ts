/**
 * Types of the values the global setup passes to tests with `project.provide`
 * and that tests read with `inject` (see global-setup.ts).
 */
import type { RedisNode } from './child-connect.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** URL of the standalone Redis for this run. */
    redisUrl: string;
    /** Seed nodes of the Redis Cluster for this run. */
    clusterNodes: RedisNode[];
    /** Directory of this run's bundled child-process fixtures (fixtures.ts), if they could be made. */
    fixtureBundles?: string;
  }
}

export {};
