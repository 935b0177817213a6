import { defineConfig } from 'vitest/config';

// Integration tests always hit a real Redis. The global setup starts one
// standalone server and one 3-node cluster per project (or uses REDIS_URL /
// REDIS_CLUSTER_NODES); KEYPOOL_TEST_TARGET picks which one tests talk to.
// Files may run in parallel: each uses its own pool name (uniqueName()).
const integrationFiles = ['packages/*/test/**/*.int.test.ts', 'test/**/*.int.test.ts'];
const globalSetup = './packages/testkit/src/global-setup.ts';

// Tests run the sources, never dist/: every @keypool/* package maps its exports to src/ under the
// @keypool/source condition. Vite resolves with it; the children tests spawn (bin/keypool-dev.js,
// `node --import tsx` fixtures where they are not bundled: testkit fixtureArgs) inherit it through
// NODE_OPTIONS. The global setup bundles the fixtures from the sources with the same condition.
const SOURCE = '@keypool/source';
const nodeOptions = [process.env.NODE_OPTIONS, `--conditions=${SOURCE}`].filter(Boolean).join(' ');

export default defineConfig({
  ssr: { resolve: { conditions: [SOURCE] } }, // vitest adds its default conditions to these
  test: {
    env: { NODE_OPTIONS: nodeOptions },
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
