import { defineConfig } from 'vitest/config';

// Integration tests always hit a real Redis. The global setup starts one
// standalone server and one 3-node cluster per project (or uses REDIS_URL /
// REDIS_CLUSTER_NODES); KEYPOOL_TEST_TARGET picks which one tests talk to.
// Files may run in parallel: each uses its own pool name (uniqueName()).
const integrationFiles = ['packages/*/test/**/*.int.test.ts', 'test/**/*.int.test.ts'];
const globalSetup = './packages/testkit/src/global-setup.ts';

export default defineConfig({
  test: {
    // Spawning servers and waiting for cluster convergence takes seconds.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    projects: [
      {
        extends: true,
        test: { name: 'unit', include: ['packages/*/test/**/*.unit.test.ts', 'packages/*/test/**/*.wire.test.ts', 'test/**/*.unit.test.ts'] },
      },
      {
        extends: true,
        test: { name: 'redis', include: integrationFiles, globalSetup, env: { KEYPOOL_TEST_TARGET: 'standalone' } },
      },
      {
        extends: true,
        test: { name: 'cluster', include: integrationFiles, globalSetup, env: { KEYPOOL_TEST_TARGET: 'cluster' } },
      },
    ],
  },
});
