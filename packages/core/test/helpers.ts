import { Writable } from 'node:stream';
import { afterAll } from 'vitest';
import type { Cluster, Redis } from 'ioredis';
import { pino } from 'pino';
import { connectTestRedis, uniqueName } from '@keypool/testkit';
import { KeyPool, PoolKeys, type KeyPoolOptions, type PoolConfigInput } from '../src/index.js';

/** A pino logger writing JSON lines into `lines` (to assert on what operators would read). */
export function memoryLogger() {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      lines.push(...String(chunk).split('\n').filter(Boolean));
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}

export interface TestPool {
  pool: KeyPool;
  redis: Redis | Cluster;
  name: string;
  logs: string[];
}

/** Options of KeyPool.connect a test may set besides the config (the clock). */
export type PoolExtras = Pick<KeyPoolOptions, 'clock'>;

/**
 * A KeyPool on the test Redis (standalone or cluster per KEYPOOL_TEST_TARGET) under a fresh pool
 * name. Unless the config says otherwise its status is not shared (`status.snapshotMs` 0): a test
 * reads what a change just did; the sharing has tests of its own (status-pages.int.test.ts).
 */
export async function makePool(config: Omit<PoolConfigInput, 'pool'> & { pool?: string }, redis?: Redis | Cluster, extras: PoolExtras = {}): Promise<TestPool> {
  const client = redis ?? connectTestRedis();
  const name = config.pool ?? uniqueName('t');
  const { logger, lines } = memoryLogger();
  const pool = await KeyPool.connect({ ...extras, redis: client, config: { status: { snapshotMs: 0 }, ...config, pool: name }, logger });
  return { pool, redis: client, name, logs: lines };
}

/**
 * A `pool(config)` for a test file: each pool it makes is closed (and its client disconnected) after
 * all the file's tests.
 */
export function poolsClosedAfterAll(): (config?: Parameters<typeof makePool>[0], extras?: PoolExtras) => Promise<TestPool> {
  const opened: TestPool[] = [];
  afterAll(async () => {
    for (const p of opened) {
      await p.pool.close();
      p.redis.disconnect();
    }
  });
  return async (config = {}, extras = {}) => {
    const p = await makePool(config, undefined, extras);
    opened.push(p);
    return p;
  };
}

/** Every Redis key of a pool with its full contents as raw bytes (works on a Cluster too). */
export async function dumpPool(redis: Redis | Cluster, name: string): Promise<Map<string, Buffer[]>> {
  const pattern = new PoolKeys(name).pattern;
  const nodes = 'nodes' in redis && typeof redis.nodes === 'function' && (redis as Cluster).isCluster ? (redis as Cluster).nodes('master') : [redis as Redis];
  const out = new Map<string, Buffer[]>();
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      for (const key of keys) {
        const type = await node.type(key);
        const parts: Buffer[] = [Buffer.from(key)];
        if (type === 'hash') parts.push(...Object.entries(await node.hgetallBuffer(key)).flatMap(([f, v]) => [Buffer.from(f), v]));
        else if (type === 'set') parts.push(...(await node.smembersBuffer(key)));
        else if (type === 'zset') parts.push(...(await node.zrangeBuffer(key, '0', '-1', 'WITHSCORES')));
        else if (type === 'string') parts.push((await node.getBuffer(key)) ?? Buffer.alloc(0));
        else parts.push(Buffer.from(`unexpected type ${type}`));
        out.set(key, parts);
      }
    } while (cursor !== '0');
  }
  return out;
}

/** Every 8-character window of a secret: finding any of them means key material leaked. */
export function secretFragments(secret: string, size = 8): string[] {
  const out: string[] = [];
  for (let i = 0; i + size <= secret.length; i++) out.push(secret.slice(i, i + size));
  return out;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A unique, realistic-looking secret. */
export function fakeSecret(tag: string): string {
  return `sk-test-${tag}-${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
}
