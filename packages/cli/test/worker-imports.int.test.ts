/**
 * `keypool worker` starts without loading the gateway: the real binary runs under a module hook
 * (fixtures/trace-imports.mjs) that records every module the process resolves, and neither express
 * nor @keypool/server may be among them. The same hook on `keypool serve` does see both, so the
 * check cannot pass by recording nothing. `keypool serve` loads neither bullmq, the AWS SDK nor
 * node-vault before their first use (the worker does load bullmq: the check can fail). Standalone only (REDIS_URL is one URL); the cluster
 * project skips, as serve.int.test.ts does.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { connectionForChild, testTarget, uniqueName } from '@keypool/testkit';
import { startLongRunning } from './run.js';

const HOOK = fileURLToPath(new URL('./fixtures/trace-imports.mjs', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'keypool-trace-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const GATEWAY = /\/packages\/server\/|\/node_modules\/express\//;
const LAZY = /\/node_modules\/(bullmq|@aws-sdk|node-vault)\//;

/** Runs `keypool <command>` on the test Redis until `ready` logs, stops it with SIGTERM; the URLs it resolved. */
async function traced(command: 'serve' | 'worker', ready: string): Promise<string[]> {
  const file = join(dir, `${command}.trace`);
  const run = startLongRunning(command, [], {
    NODE_OPTIONS: `--import=${HOOK}`,
    KEYPOOL_TRACE_FILE: file,
    REDIS_URL: connectionForChild().url!,
    KEYPOOL_POOL: uniqueName('trace'),
    KEYPOOL_PORT: '0',
  });
  try {
    await run.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith(ready));
    run.child.kill('SIGTERM');
    expect((await run.exited).code).toBe(0);
  } finally {
    if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill('SIGKILL');
  }
  return readFileSync(file, 'utf8').split('\n').filter(Boolean);
}

describe.skipIf(testTarget() === 'cluster')('which modules a command loads (the real binary under a resolve hook)', () => {
  it('keypool worker loads neither express nor @keypool/server', async () => {
    const urls = await traced('worker', 'scheduler started');
    expect(urls.some((u) => u.includes('/packages/worker/src/run.ts'))).toBe(true);
    expect(urls.some((u) => u.includes('/packages/config/src/loader.ts'))).toBe(true);
    expect(urls.filter((u) => GATEWAY.test(u))).toEqual([]);
    // the worker runs its queue on bullmq: the gateway's check below can see it
    expect(urls.some((u) => u.includes('/node_modules/bullmq/'))).toBe(true);
  });

  it('keypool serve, under the same hook, does load both (the check above can fail)', async () => {
    const urls = await traced('serve', 'keypool gateway listening on ');
    expect(urls.some((u) => u.includes('/packages/server/src/index.ts'))).toBe(true);
    expect(urls.some((u) => u.includes('/node_modules/express/'))).toBe(true);
    // without a secrets section and before any /status read, the gateway loads none of these (each at its first use)
    expect(urls.filter((u) => LAZY.test(u))).toEqual([]);
  });
});
