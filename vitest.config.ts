import { availableParallelism } from 'node:os';
import { configDefaults, defineConfig } from 'vitest/config';

// Integration tests always hit a real Redis. The global setup starts one
// standalone server and one 3-node cluster per project (or uses REDIS_URL /
// REDIS_CLUSTER_NODES); KEYPOOL_TEST_TARGET picks which one tests talk to.
// Files may run in parallel: each uses its own pool name (uniqueName()).
const integrationFiles = ['packages/*/test/**/*.int.test.ts', 'test/**/*.int.test.ts'];
const globalSetup = './packages/testkit/src/global-setup.ts';

// The cluster project runs the integration files again on a 3-master Redis Cluster to catch what
// only a cluster shows: CROSSSLOT errors of multi-key scripts and commands, hash tags, MULTI, SCAN,
// keys spread over nodes. It leaves out two kinds of file, which it would only run again for nothing:
const notOnCluster = [
  // 1. Files whose every test is skipped on the cluster target (describe.skipIf(testTarget() ===
  //    'cluster')): they run their own redis-server to kill, restart, flush or count commands on, or
  //    hand a child process a REDIS_URL (one URL: standalone only). Loading them costs seconds and
  //    runs nothing; the skipIf stays in each file for whoever runs it with KEYPOOL_TEST_TARGET=cluster.
  'packages/cli/test/queue.int.test.ts',
  'packages/cli/test/serve.int.test.ts',
  'packages/cli/test/worker-imports.int.test.ts',
  'packages/core/test/redis-down.int.test.ts',
  'packages/core/test/redis-end.int.test.ts',
  'packages/core/test/scaling.int.test.ts',
  'packages/server/test/embedded-redis.int.test.ts',
  'packages/server/test/redis-down.int.test.ts',
  'packages/server/test/round-trips.int.test.ts',
  'packages/server/test/token-store.int.test.ts',
  'test/queue-status.int.test.ts',
  'test/rotation.int.test.ts',
  // 2. Files about what the gateway does over HTTP with what the pool tells it, where Redis is only
  //    the pool's store: the page in a browser (the status it draws is read from the cluster by
  //    status-limits, status-pages, series, partitioned and proxy), who may read the ops views, the
  //    text format of /metrics, and the `keypool` CLI, which talks HTTP to a gateway and never to
  //    Redis (the admin actions it calls run on the cluster in admin.int.test.ts).
  'packages/server/test/dashboard.int.test.ts',
  'packages/server/test/ops-auth.int.test.ts',
  'packages/server/test/metrics-text.int.test.ts',
  'packages/cli/test/cli.int.test.ts',
];

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
    // vitest's default is one worker less than the CPUs: a single file at a time on a 2-core CI
    // machine, where most integration files spend their time waiting (on Redis, child processes,
    // the fake upstream, windows to pass). Two files at a time at least.
    maxWorkers: Math.max(2, availableParallelism() - 1),
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
        test: {
          name: 'cluster',
          include: integrationFiles,
          exclude: [...configDefaults.exclude, ...notOnCluster],
          globalSetup,
          env: { KEYPOOL_TEST_TARGET: 'cluster' },
        },
      },
    ],
  },
});
