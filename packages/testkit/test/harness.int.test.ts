import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Cluster } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { childEnv, connectTestRedis, fixtureArgs, testTarget, uniqueName } from '../src/index.js';

const childScript = fileURLToPath(new URL('./fixtures/child-get.ts', import.meta.url));

describe(`test Redis (${testTarget()})`, () => {
  const redis = connectTestRedis();
  afterAll(async () => {
    await redis.quit();
  });

  it('answers PING', async () => {
    expect(await redis.ping()).toBe('PONG');
  });

  it('can SET/GET a hash-tagged key', async () => {
    // The hash tag keeps a pool's keys in one slot, as keypool does on a cluster.
    const key = `{${uniqueName('harness')}}:probe`;
    await redis.set(key, 'v', 'EX', 60);
    expect(await redis.get(key)).toBe('v');
  });

  it('is a Cluster client exactly on the cluster target', () => {
    expect(redis instanceof Cluster).toBe(testTarget() === 'cluster');
  });

  it.runIf(testTarget() === 'cluster')('sees cluster_state:ok', async () => {
    const info = await redis.cluster('INFO');
    expect(info).toContain('cluster_state:ok');
  });

  it('lets a child process reach the same Redis via connectFromEnv()', async () => {
    const key = `{${uniqueName('harness-child')}}:probe`;
    await redis.set(key, 'from-parent', 'EX', 60);
    // the global setup bundled the fixtures: children start without tsx (seconds of CPU each)
    const args = fixtureArgs(childScript);
    expect(args.at(-1)).toMatch(/keypool-fixtures\/.+\/packages\/testkit\/test\/fixtures\/child-get\.mjs$/);
    const { stdout } = await promisify(execFile)(process.execPath, [...args, key], {
      env: { ...process.env, ...childEnv() },
    });
    expect(stdout).toBe('from-parent');
  });
});
