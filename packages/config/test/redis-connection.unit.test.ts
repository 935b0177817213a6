/**
 * The redis section: standalone URL, Sentinel, Cluster, TLS files and an ACL user, from the file
 * and the environment; every invalid combination has a test with the exact message; a password
 * never shows in a message or a description.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, createRedis, describeRedis, isConfigError } from '@keypool/core';
import type { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { loadGatewayConfig, redisConnection, type GatewayConfig } from '../src/index.js';

const PASSWORD = 'redis-pass-Zq8xW2vK9mT4';
const SENTINEL_PASSWORD = 'sentinel-pass-Hy7uJ3nB5';
const dir = mkdtempSync(join(tmpdir(), 'keypool-redis-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(join(dir, 'ca.pem'), '-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n');
writeFileSync(join(dir, 'client.pem'), 'CERT');
writeFileSync(join(dir, 'client.key'), 'KEY');

let n = 0;
function load(yaml: string, env: NodeJS.ProcessEnv = {}): GatewayConfig {
  const file = join(dir, `c${n++}.yaml`);
  writeFileSync(file, yaml);
  return loadGatewayConfig({ file, env });
}

function problems(yaml: string, env: NodeJS.ProcessEnv = {}): { lines: string[]; message: string } {
  try {
    load(yaml, env);
  } catch (e) {
    expect(isConfigError(e)).toBe(true);
    const err = e as ConfigError;
    return {
      lines: err.issues.map((i) => `${i.path}: ${i.message}`),
      message: err.message,
    };
  }
  throw new Error('expected a ConfigError');
}

describe('redis section', () => {
  it('reads a Sentinel group with an ACL user, a password and TLS files relative to the file', () => {
    const c = load(`
redis:
  sentinel:
    nodes: ["10.0.0.1:26379", "10.0.0.2:26379", "[::1]:26380"]
    masterName: kp
    password: ${SENTINEL_PASSWORD}
  username: keypool
  password: ${PASSWORD}
  tls: { ca: ca.pem, cert: client.pem, key: client.key, servername: redis.internal }
`);
    expect(redisConnection(c.redis)).toEqual({
      sentinel: {
        nodes: [
          { host: '10.0.0.1', port: 26379 },
          { host: '10.0.0.2', port: 26379 },
          { host: '::1', port: 26380 },
        ],
        masterName: 'kp',
        password: SENTINEL_PASSWORD,
        tls: false,
      },
      username: 'keypool',
      password: PASSWORD,
      tls: {
        ca: '-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n',
        cert: 'CERT',
        key: 'KEY',
        servername: 'redis.internal',
        rejectUnauthorized: true,
      },
    });
  });

  it('reads a Cluster with a NAT map', () => {
    const c = load(`
redis:
  cluster:
    nodes: ["redis-0:6379"]
    natMap: { "10.0.0.5:6379": "203.0.113.7:7000" }
`);
    expect(redisConnection(c.redis)).toEqual({
      cluster: {
        nodes: [{ host: 'redis-0', port: 6379 }],
        natMap: { '10.0.0.5:6379': { host: '203.0.113.7', port: 7000 } },
      },
    });
  });

  it('has no connection when nothing names a Redis (serve embeds one)', () => {
    expect(redisConnection(load('pool: p\n').redis)).toBeUndefined();
  });

  it('says what to fix for each invalid combination', () => {
    expect(problems('redis: { url: "redis://a:6379", sentinel: { nodes: ["b:26379"], masterName: m } }').lines).toEqual([
      "redis.sentinel: set one of url, sentinel, cluster, not url and sentinel (an env override replaces the file's choice)",
    ]);
    expect(problems('redis: { url: "redis://a:6379", tls: { cert: client.pem } }').lines).toEqual([
      'redis.tls.key: a client certificate needs both cert and key',
    ]);
    expect(problems(`redis: { password: ${PASSWORD} }`).lines).toEqual(['redis.password: password needs a Redis to apply to: set url, sentinel or cluster']);
    expect(problems('redis: { sentinel: { nodes: ["b"], masterName: m } }').lines).toEqual([
      'redis.sentinel.nodes[0]: expected host:port (e.g. redis-1.internal:26379)',
    ]);
    expect(problems('redis: { sentinel: { nodes: ["b:1"] } }').lines).toEqual([
      'redis.sentinel.masterName: required: the master name the sentinels monitor (env REDIS_SENTINEL_MASTER)',
    ]);
    expect(problems('redis: { cluster: { nodes: [] } }').lines[0]).toMatch(/^redis\.cluster\.nodes: /);
  });

  it('names the TLS file it cannot read', () => {
    const { lines } = problems('redis: { url: "rediss://a:6380", tls: { ca: missing-ca.pem } }');
    expect(lines).toEqual([`redis.tls.ca: cannot read ${join(dir, 'missing-ca.pem')} (ENOENT): name a readable PEM file`]);
  });

  it('takes the environment over the file: REDIS_SENTINELS replaces a url, REDIS_PASSWORD the password', () => {
    const c = load(`redis: { url: "redis://file:6379", password: file-password-123 }\n`, {
      REDIS_SENTINELS: '10.1.0.1:26379, 10.1.0.2:26379',
      REDIS_SENTINEL_MASTER: 'prod',
      REDIS_SENTINEL_PASSWORD: SENTINEL_PASSWORD,
      REDIS_USERNAME: 'kp',
      REDIS_PASSWORD: PASSWORD,
      REDIS_TLS_CA: join(dir, 'ca.pem'),
    });
    const conn = redisConnection(c.redis)!;
    expect(conn.url).toBeUndefined();
    expect(conn.sentinel).toEqual({
      nodes: [
        { host: '10.1.0.1', port: 26379 },
        { host: '10.1.0.2', port: 26379 },
      ],
      masterName: 'prod',
      password: SENTINEL_PASSWORD,
      tls: false,
    });
    expect(conn).toMatchObject({
      username: 'kp',
      password: PASSWORD,
      tls: { ca: expect.stringContaining('CA') },
    });
    const cl = redisConnection(
      load('redis: { url: "redis://file:6379" }\n', {
        REDIS_CLUSTER_SEEDS: 'r1:7000,r2:7001',
      }).redis
    )!;
    expect(cl).toEqual({
      cluster: {
        nodes: [
          { host: 'r1', port: 7000 },
          { host: 'r2', port: 7001 },
        ],
      },
    });
  });

  it('refuses two env variables that each name a Redis, and bad node lists', () => {
    expect(
      problems('pool: p\n', {
        REDIS_URL: 'redis://a:1',
        REDIS_SENTINELS: 'b:2',
      }).lines
    ).toEqual(['REDIS_SENTINELS: set one of REDIS_URL, REDIS_SENTINELS: each names where Redis is']);
    expect(problems('pool: p\n', { REDIS_SENTINELS: 'b:2' }).lines).toEqual([
      'redis.sentinel.masterName: required: the master name the sentinels monitor (env REDIS_SENTINEL_MASTER)',
    ]);
    // a Sentinel setting left over beside another target says so (it recreated a half sentinel section)
    expect(problems('pool: p\n', { REDIS_URL: 'redis://a:1', REDIS_SENTINEL_MASTER: 'prod' }).lines).toEqual([
      "REDIS_SENTINEL_MASTER: applies to Redis Sentinel only, and Redis is not Sentinel here (REDIS_URL, REDIS_CLUSTER_SEEDS or the file's redis section say where it is): unset REDIS_SENTINEL_MASTER, or set REDIS_SENTINELS",
    ]);
    expect(problems('pool: p\n', { REDIS_CLUSTER_SEEDS: 'r1' }).lines).toEqual([
      'REDIS_CLUSTER_SEEDS: expected host:port (e.g. redis-1.internal:26379), comma-separated',
    ]);
  });

  it('never shows a password in an error or a description', () => {
    const { message } = problems(
      `redis: { sentinel: { nodes: ["b"], masterName: m, password: ${SENTINEL_PASSWORD} }, password: ${PASSWORD}, url: "redis://:${PASSWORD}@x:1" }`
    );
    expect(message).not.toContain(PASSWORD);
    expect(message).not.toContain(SENTINEL_PASSWORD);
    const described = [
      describeRedis({
        url: `redis://kp:${PASSWORD}@redis:6379/0`,
        password: PASSWORD,
      }),
      describeRedis({
        sentinel: {
          nodes: [{ host: 's', port: 1 }],
          masterName: 'm',
          password: SENTINEL_PASSWORD,
        },
        username: 'kp',
        password: PASSWORD,
      }),
      describeRedis({
        cluster: { nodes: [{ host: 'c', port: 1 }] },
        password: PASSWORD,
        tls: {},
      }),
    ];
    expect(described).toEqual(['redis://kp:***@redis:6379/0', 'Sentinel master "m" via s:1 as user kp', 'Cluster c:1 (TLS)']);
  });

  it('createRedis: explicit credentials and TLS win over the URL; Sentinel follows the master by name', () => {
    const r = createRedis(
      {
        url: 'rediss://u:urlpass@h:6380/3',
        username: 'kp',
        password: PASSWORD,
        tls: { ca: 'CA', servername: 'redis.internal' },
      },
      'pool'
    );
    expect(r.options).toMatchObject({
      host: 'h',
      port: 6380,
      db: 3,
      username: 'kp',
      password: PASSWORD,
      tls: { ca: 'CA', servername: 'redis.internal' },
      enableOfflineQueue: false,
      lazyConnect: true,
    });
    r.disconnect();
    const s = createRedis(
      {
        sentinel: {
          nodes: [{ host: 's', port: 26379 }],
          masterName: 'm',
          password: SENTINEL_PASSWORD,
          tls: true,
        },
        password: PASSWORD,
        tls: { ca: 'CA' },
      },
      'bullmq'
    );
    expect(s.options).toMatchObject({
      name: 'm',
      role: 'master',
      sentinelPassword: SENTINEL_PASSWORD,
      password: PASSWORD,
      enableTLSForSentinelMode: true,
      sentinelTLS: { ca: 'CA' },
      maxRetriesPerRequest: null,
      failoverDetector: false,
    });
    s.disconnect();
    // a demoted master answers READONLY: the pool reconnects (its call fails under the Redis-down policy), BullMQ reconnects and resends
    const readonly = new Error("READONLY You can't write against a read only replica.");
    for (const [purpose, expected] of [['pool', 1], ['sync', 1], ['bullmq', 2], ['cli', 2]] as const) {
      const c = createRedis({ url: 'redis://a:1' }, purpose) as Redis;
      expect(c.options.reconnectOnError?.(readonly), purpose).toBe(expected);
      expect(c.options.reconnectOnError?.(new Error('ERR unknown command')), purpose).toBe(false);
      c.disconnect();
    }
    expect(() => createRedis({ url: 'redis://a:1', cluster: { nodes: [{ host: 'b', port: 1 }] } }, 'pool')).toThrow(
      'a Redis connection needs exactly one of url, sentinel, cluster (got 2)'
    );
  });
});
