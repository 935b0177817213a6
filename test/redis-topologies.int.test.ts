/**
 * keypool on the Redis deployments users run, each started here with the real redis-server:
 * TLS with a CA made by the test (openssl), a client certificate and an ACL user; a Sentinel group
 * (one master, one replica, three sentinels) whose master is killed with kill -9. `keypool serve`,
 * `keypool worker` and `keypool queue` run as child processes from a config file, as in production.
 * Standalone project only: these tests start their own servers (the cluster project would repeat them).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import OpenAI from 'openai';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadGatewayConfig, redisConnection } from '@keypool/config';
import { isRedisUnavailable, KeyPool, type RedisConnection } from '@keypool/core';
import {
  connectionForChild,
  spawnTlsRedis,
  startFakeOpenAI,
  startSentinelGroup,
  testTarget,
  uniqueName,
  type FakeOpenAI,
  type SentinelGroup,
  type TlsRedis,
} from '@keypool/testkit';
import { keypool, startLongRunning, startServe, type ServeChild } from '../packages/cli/test/run.js';

const KEY = 'sk-test-topologytopologytopology0001';
const USER = 'keypool-app';
/** A gateway token the config declares by its sha256. */
const TOKEN = 'kpt_topologyGatewayToken0123456789abcdefghijklm';
const PASSWORD = 'acl-pass-Vb93kQz7Lm2Xw';
const ask = {
  model: 'gpt-4o-mini',
  messages: [{ role: 'user' as const, content: 'hello' }],
  max_tokens: 8,
};
const dir = mkdtempSync(join(tmpdir(), 'keypool-topo-'));
const children: ServeChild[] = [];
let fake: FakeOpenAI;

beforeAll(async () => {
  fake = await startFakeOpenAI({
    keys: [{ key: KEY, name: 'k' }],
    models: ['gpt-4o-mini'],
    latency: 2,
  });
});
afterAll(async () => {
  for (const c of children) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
  await fake?.stop();
  rmSync(dir, { recursive: true, force: true });
});

let n = 0;
/** A config file: one key on the fake upstream (secret from the env), any free port, `redis` as given. */
function configFile(pool: string, redis: string): string {
  const file = join(dir, `c${n++}.yaml`);
  writeFileSync(
    file,
    `pool: ${pool}
server: { port: 0 }
logLevel: info
redis:
${redis}
tokens:
  - sha256: ${createHash('sha256').update(TOKEN).digest('hex')}
    name: topo
keys:
  - name: k
    secretEnv: KP_TOPO_KEY
    baseURL: ${fake.url}
    models: [gpt-4o-mini]
`
  );
  return file;
}

const env = { KP_TOPO_KEY: KEY, REDIS_PASSWORD: PASSWORD };

async function served(file: string): Promise<{ child: ServeChild; url: string }> {
  const child = startServe(['--config', file], env);
  children.push(child);
  return { child, url: await child.listening(60_000) };
}

async function stop(c: ServeChild): Promise<void> {
  c.child.kill('SIGTERM');
  await c.exited;
}

describe.skipIf(testTarget() === 'cluster')('TLS with a private CA, a client certificate and an ACL user', () => {
  let tls: TlsRedis;
  beforeAll(async () => {
    tls = await spawnTlsRedis({
      user: { name: USER, password: PASSWORD },
      authClients: 'yes',
    });
  });
  afterAll(() => tls?.stop());

  const redisYaml = (ca: string, password = '${REDIS_PASSWORD}') => `  url: rediss://127.0.0.1:${tls.tlsPort}
  username: ${USER}
  password: ${password}
  tls: { ca: ${ca}, cert: ${tls.files.clientCert}, key: ${tls.files.clientKey} }`;

  it('keypool serve, keypool worker and keypool queue run on it from a config file; no password in their output', async () => {
    const pool = uniqueName('tls');
    const file = configFile(pool, redisYaml(tls.files.ca));
    const { child, url } = await served(file);
    const openai = new OpenAI({
      baseURL: `${url}/v1`,
      apiKey: TOKEN,
      maxRetries: 0,
    });
    const r = await openai.chat.completions.create(ask);
    expect(r.choices[0]?.message.content).toBeTruthy();
    const worker = startLongRunning('worker', ['--config', file], env);
    children.push(worker);
    await worker.waitForLog((l) => l.msg === 'scheduler started', 60_000);
    const added = await keypool(['queue', 'add', '--model', 'gpt-4o-mini', '--prompt', 'over TLS', '--wait', '60'], {
      env: { ...env, KEYPOOL_CONFIG: file },
      timeoutMs: 90_000,
    });
    expect(added.code, added.stderr).toBe(0);
    expect(JSON.parse(added.stdout)).toMatchObject({ model: 'gpt-4o-mini' });
    // REDIS_URL names where Redis is, as it does for serve: the file's user, password and TLS still apply
    const counted = await keypool(['queue', 'counts'], {
      env: { ...env, KEYPOOL_CONFIG: file, REDIS_URL: `rediss://127.0.0.1:${tls.tlsPort}` },
      timeoutMs: 60_000,
    });
    expect(counted.code, counted.stderr).toBe(0);
    await Promise.all([stop(child), stop(worker)]);
    for (const out of [child.stdout(), child.stderr(), worker.stdout(), worker.stderr(), added.stdout, added.stderr, counted.stdout, counted.stderr]) expect(out).not.toContain(PASSWORD);
    // the gateway says where Redis is, without the password
    expect(child.logs.find((l) => typeof l.redisAt === 'string')?.redisAt).toBe(`rediss://127.0.0.1:${tls.tlsPort} as user ${USER} (TLS)`);
  });

  it('a wrong CA: serve exits with the TLS error and where, no password', async () => {
    const file = configFile(uniqueName('tls-ca'), redisYaml(tls.files.otherCa));
    const child = startServe(['--config', file], env);
    children.push(child);
    const { code } = await child.exited;
    expect(code).not.toBe(0);
    const out = child.stdout() + child.stderr();
    expect(out).toContain(`cannot reach Redis at rediss://127.0.0.1:${tls.tlsPort} as user ${USER} (TLS)`);
    expect(out).toMatch(/self[- ]signed certificate|unable to (get local issuer|verify)/);
    expect(out).not.toContain(PASSWORD);
  });

  it('a wrong password: serve and queue say WRONGPASS, never the password', async () => {
    const wrong = 'wrong-pass-Qx81Ls0Pz';
    const file = configFile(uniqueName('tls-pw'), redisYaml(tls.files.ca, wrong));
    const child = startServe(['--config', file], {
      ...env,
      REDIS_PASSWORD: undefined,
    });
    children.push(child);
    const { code } = await child.exited;
    expect(code).not.toBe(0);
    const out = child.stdout() + child.stderr();
    expect(out).toMatch(/WRONGPASS/);
    expect(out).not.toContain(wrong);
    const q = await keypool(['queue', 'counts'], {
      env: { ...env, REDIS_PASSWORD: undefined, KEYPOOL_CONFIG: file },
    });
    expect(q.code).toBe(1);
    expect(q.stderr).toMatch(/cannot reach Redis at rediss:\/\/127\.0\.0\.1:\d+ as user keypool-app \(TLS\): WRONGPASS/);
    expect(q.stderr).not.toContain(wrong);
  });
});

describe.skipIf(testTarget() === 'cluster')('Redis Sentinel', () => {
  let group: SentinelGroup;
  beforeAll(async () => {
    group = await startSentinelGroup();
  }, 120_000);
  afterAll(() => group?.stop());

  const sentinelYaml = () => `  sentinel:
    nodes: [${group.sentinelNodes.map((s) => `"${s.host}:${s.port}"`).join(', ')}]
    masterName: ${group.masterName}`;

  it('keypool serve, worker and queue find the master through the sentinels', async () => {
    const file = configFile(uniqueName('sentinel'), sentinelYaml());
    const { child, url } = await served(file);
    const openai = new OpenAI({
      baseURL: `${url}/v1`,
      apiKey: TOKEN,
      maxRetries: 0,
    });
    expect((await openai.chat.completions.create(ask)).choices.length).toBe(1);
    const worker = startLongRunning('worker', ['--config', file], env);
    children.push(worker);
    await worker.waitForLog((l) => l.msg === 'scheduler started', 60_000);
    // the queue command from the environment alone
    const q = await keypool(['queue', 'add', '--model', 'gpt-4o-mini', '--prompt', 'via sentinel', '--wait', '60'], {
      env: {
        REDIS_SENTINELS: group.sentinelNodes.map((s) => `${s.host}:${s.port}`).join(','),
        REDIS_SENTINEL_MASTER: group.masterName,
        KEYPOOL_POOL: /pool: (\S+)/.exec(readFileSync(file, 'utf8'))![1],
      },
      timeoutMs: 90_000,
    });
    expect(q.code, q.stderr).toBe(0);
    expect(JSON.parse(q.stdout)).toMatchObject({ model: 'gpt-4o-mini' });
    await Promise.all([stop(child), stop(worker)]);
  });

  it('kill -9 the master under load: two pools follow the new master, refuse meanwhile, and the limit holds after', async () => {
    // 20 requests per 10 s window (rpm 120, window 10): the key is saturated all along
    const RPM = 120;
    const WINDOW_S = 10;
    const quota = (RPM * WINDOW_S) / 60;
    const conn: RedisConnection = redisConnection(
      loadGatewayConfig({
        file: configFile('unused', sentinelYaml()),
        env: { KP_TOPO_KEY: KEY },
      }).redis
    )!;
    const config = {
      pool: uniqueName('failover'),
      keys: [{ secret: KEY, models: ['m'], rpm: RPM, window: WINDOW_S }],
      redisDown: { policy: 'fail-closed' as const, timeoutMs: 500 },
    };
    const pools = [
      await KeyPool.connect({
        redis: conn,
        config,
        logger: pino({ level: 'silent' }),
      }),
      await KeyPool.connect({
        redis: conn,
        config,
        logger: pino({ level: 'silent' }),
      }),
    ];
    const admitted: number[] = [];
    const refused: number[] = [];
    const answered = [0, 0];
    let stopAt = Infinity;
    const loop = async (pool: KeyPool, i: number) => {
      while (Date.now() < stopAt) {
        try {
          const l = await pool.acquire({ model: 'm', maxWaitMs: 0 });
          answered[i] = Date.now();
          if (l.ok) {
            admitted.push(Date.now());
            await l.release({ status: 200, latencyMs: 5 }).catch(() => undefined);
          }
        } catch (e) {
          if (!isRedisUnavailable(e)) throw e;
          refused.push(Date.now());
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    const running = pools.flatMap((p, i) => [loop(p, i), loop(p, i)]);
    try {
      // a full window before the kill, so that the window of the kill is saturated
      await new Promise((r) => setTimeout(r, WINDOW_S * 1000));
      const killedAt = Date.now();
      const { newMaster } = await group.killMaster();
      expect(newMaster).toBeDefined();
      // both pools answer again through the new master (Redis-down refusals first: fail-closed)
      const deadline = Date.now() + 30_000;
      while (!(refused.some((t) => t > killedAt) && answered.every((t) => t > Math.max(...refused)))) {
        if (Date.now() > deadline) throw new Error(`the pools did not follow the new master within 30 s (${refused.length} refused)`);
        await new Promise((r) => setTimeout(r, 100));
      }
      stopAt = Date.now() + 2 * WINDOW_S * 1000;
      await Promise.all(running);
      const lastRefused = Math.max(...refused);
      expect(refused.length).toBeGreaterThan(0);
      expect(lastRefused - killedAt).toBeLessThan(20_000);
      // rolling windows (a little shorter than the key's: these are client-side timestamps)
      const maxIn = (from: number, to: number) => {
        const ts = admitted.filter((t) => t >= from && t <= to);
        let max = 0;
        for (let i = 0, j = 0; i < ts.length; i++) {
          while (ts[i]! - ts[j]! > WINDOW_S * 1000 - 300) j++;
          max = Math.max(max, i - j + 1);
        }
        return max;
      };
      // what the docs claim: across the failover at most one window's quota more; after it, exact
      expect(maxIn(0, Infinity)).toBeLessThanOrEqual(2 * quota);
      expect(maxIn(lastRefused, Infinity)).toBeLessThanOrEqual(quota);
      expect(admitted.filter((t) => t > lastRefused).length).toBeGreaterThan(quota);
    } finally {
      stopAt = 0;
      await Promise.allSettled(running);
      for (const p of pools) await p.close();
    }
  }, 120_000);
});

describe.skipIf(testTarget() !== 'cluster')('Redis Cluster from the config (the cluster project: its 3-master cluster)', () => {
  const seeds = () => connectionForChild().clusterNodes!.map((n) => `${n.host}:${n.port}`);

  it('a pool, keypool serve, worker and queue on the cluster named by its seed nodes', async () => {
    // one seed is enough: the rest of the cluster is discovered
    const file = configFile(uniqueName('cluster'), `  cluster:\n    nodes: ["${seeds()[0]}"]`);
    const conn = redisConnection(loadGatewayConfig({ file, env: { KP_TOPO_KEY: KEY } }).redis)!;
    expect(conn.cluster?.nodes).toHaveLength(1);
    const pool = await KeyPool.connect({
      redis: conn,
      config: { pool: uniqueName('cluster-pool'), keys: [{ secret: KEY, models: ['m'] }] },
      logger: pino({ level: 'silent' }),
    });
    try {
      const l = await pool.acquire({ model: 'm' });
      expect(l.ok).toBe(true);
      if (l.ok) expect((await l.release({ status: 200, latencyMs: 3 })).released).toBe(true);
    } finally {
      await pool.close();
    }
    const { child, url } = await served(file);
    const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: TOKEN, maxRetries: 0 });
    expect((await openai.chat.completions.create(ask)).choices.length).toBe(1);
    const worker = startLongRunning('worker', ['--config', file], env);
    children.push(worker);
    await worker.waitForLog((l) => l.msg === 'scheduler started', 60_000);
    const q = await keypool(['queue', 'add', '--model', 'gpt-4o-mini', '--prompt', 'on the cluster', '--wait', '60'], {
      env: { REDIS_CLUSTER_SEEDS: seeds().join(','), KEYPOOL_POOL: /pool: (\S+)/.exec(readFileSync(file, 'utf8'))![1] },
      timeoutMs: 90_000,
    });
    expect(q.code, q.stderr).toBe(0);
    expect(JSON.parse(q.stdout)).toMatchObject({ model: 'gpt-4o-mini' });
    await Promise.all([stop(child), stop(worker)]);
  });
});
