/**
 * `keypool serve` as a child process, as it runs in production: config file, pino JSON logs on
 * stdout, SIGTERM drains. Against the test Redis given as REDIS_URL (a URL: standalone only; the
 * cluster project skips), and with an embedded redis-server when no Redis is configured.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KeyPool } from '@keypool/core';
import { connectionForChild, spawnRedisServer, startFakeOpenAI, testTarget, uniqueName, type FakeOpenAI } from '@keypool/testkit';
import { keypool, startServe, type ServeChild } from './run.js';

const FAST = 'sk-test-fastfastfastfastfastfast0001';
const SLOW = 'sk-test-slowslowslowslowslowslow0002';
const ADMIN = 'admin-token-for-serve-tests-0123456789abcdef';
const SLOW_MS = 1500;
const ask = { model: 'gpt-4o-mini', messages: [{ role: 'user' as const, content: 'hello there' }], max_tokens: 8 };

const dir = mkdtempSync(join(tmpdir(), 'keypool-serve-'));
let fake: FakeOpenAI;
const children: ServeChild[] = [];

beforeAll(async () => {
  // the slow key alone serves gpt-4o: a request for gpt-4o is in flight for SLOW_MS
  fake = await startFakeOpenAI({
    keys: [
      { key: FAST, name: 'fast' },
      { key: SLOW, name: 'slow', latency: SLOW_MS },
    ],
    models: ['gpt-4o', 'gpt-4o-mini'],
    latency: 2,
  });
});
afterAll(async () => {
  for (const c of children) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
  await fake?.stop();
});

/** A config file: two keys on the fake upstream, secrets from the environment, any free port. */
function configFile(name: string, pool: string, extra = ''): string {
  const file = join(dir, `${name}.yaml`);
  writeFileSync(
    file,
    `pool: ${pool}
server:
  port: 0
  adminToken: \${KP_TEST_ADMIN}
  drainMs: 10000
logLevel: info
keys:
  - name: fast
    secretEnv: KP_TEST_FAST
    baseURL: ${fake.url}
    models: [gpt-4o-mini]
  - name: slow
    secretEnv: KP_TEST_SLOW
    baseURL: ${fake.url}
    models: [gpt-4o]
${extra}`,
  );
  return file;
}

const secrets = { KP_TEST_FAST: FAST, KP_TEST_SLOW: SLOW, KP_TEST_ADMIN: ADMIN };

function serve(file: string, env: Record<string, string | undefined>): ServeChild {
  const c = startServe(['--config', file], { ...secrets, ...env });
  children.push(c);
  return c;
}

/** A gateway token, made with the CLI against the served gateway. */
async function token(url: string): Promise<string> {
  const r = await keypool(['tokens', 'create', '--name', 'serve-test'], { env: { KEYPOOL_URL: url, KEYPOOL_ADMIN_TOKEN: ADMIN } });
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.trim();
}

const sdk = (url: string, apiKey: string) => new OpenAI({ apiKey, baseURL: `${url}/v1`, maxRetries: 0, timeout: 20_000 });

/** Resolves once the gateway reports a request in flight. */
async function untilInFlight(url: string): Promise<void> {
  await expect
    .poll(async () => ((await (await fetch(`${url}/status`)).json()) as { gateway: { inFlight: number } }).gateway.inFlight, { timeout: 5000, interval: 50 })
    .toBe(1);
}

describe.skipIf(testTarget() === 'cluster')('keypool serve (a child process, REDIS_URL = the test Redis)', () => {
  it('serves, and on SIGTERM lets the request in flight finish (200), exits 0 and leaves no lease in flight', async () => {
    const pool = uniqueName('serve');
    const redisUrl = connectionForChild().url!;
    const gw = serve(configFile('drain', pool), { REDIS_URL: redisUrl });
    const url = await gw.listening();
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(gw.logs.find((l) => typeof l.msg === 'string' && l.msg.startsWith('keypool gateway listening'))).toMatchObject({ level: 30, pool, keys: 2, redis: 'configured', admin: true, statusProtected: false });

    const health = await fetch(`${url}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'ok' });

    const t = await token(url);
    const chat = await sdk(url, t).chat.completions.create(ask);
    expect(chat.usage!.completion_tokens).toBe(8);

    const t0 = Date.now();
    const slow = sdk(url, t).chat.completions.create({ ...ask, model: 'gpt-4o' }).withResponse();
    await untilInFlight(url);
    gw.child.kill('SIGTERM');
    const { data, response } = await slow;
    expect(response.status).toBe(200);
    expect(data.model).toBe('gpt-4o');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(SLOW_MS - 100);
    expect(await gw.exited).toEqual({ code: 0, signal: null });
    expect(gw.logs.map((l) => l.msg)).toEqual(expect.arrayContaining(['SIGTERM: draining requests in flight (send it again to exit at once)', 'gateway stopped']));
    expect(gw.logs.some((l) => typeof l.msg === 'string' && l.msg.includes('cut short'))).toBe(false);
    expect(gw.stderr()).toBe('');

    // the pool, as any other process sees it now: nothing in flight, both requests counted
    const observer = await KeyPool.connect({ redis: redisUrl, config: { pool } });
    try {
      const st = await observer.status();
      expect(st.leasesInFlight).toBe(0);
      expect(st.keys.map((k) => [k.name, k.inFlight])).toEqual([
        ['fast', 0],
        ['slow', 0],
      ]);
      expect(st.spend!.byModel['gpt-4o']!.requests).toBe(1);
    } finally {
      await observer.close();
    }
    // the log is JSON throughout and carries no secret and no token
    expect(gw.logs.filter((l) => 'raw' in l)).toEqual([]);
    for (const s of [FAST, SLOW, ADMIN, t]) expect(gw.stdout()).not.toContain(s);
  });

  it('kill -9 with 4 streams in flight: the slots are free within leaseTimeoutMs and another gateway gets them', async () => {
    const pool = uniqueName('serve');
    const redisUrl = connectionForChild().url!;
    const leaseTimeoutMs = 2000;
    // the slow key takes 4 at once; its streams send a chunk a second (8 tokens: ~10 s)
    const file = join(dir, 'kill.yaml');
    writeFileSync(
      file,
      `pool: ${pool}\nleaseTimeoutMs: ${leaseTimeoutMs}\nserver:\n  port: 0\n  adminToken: \${KP_TEST_ADMIN}\nlogLevel: info\nkeys:\n  - name: slow\n    secretEnv: KP_TEST_SLOW\n    baseURL: ${fake.url}\n    models: [gpt-4o]\n    maxConcurrent: 4\n`,
    );
    const doomed = serve(file, { REDIS_URL: redisUrl });
    const other = serve(file, { REDIS_URL: redisUrl });
    const [url1, url2] = await Promise.all([doomed.listening(), other.listening()]);
    const t = await token(url2);
    const observer = await KeyPool.connect({ redis: redisUrl, config: { pool } });
    const slowKey = async () => (await observer.status()).keys.find((k) => k.name === 'slow')!;
    fake.setKey(SLOW, { chunkDelayMs: 1000 });
    try {
      const streams = Array.from({ length: 4 }, () => sdk(url1, t).chat.completions.create({ ...ask, model: 'gpt-4o', stream: true }));
      for (const s of streams) s.catch(() => undefined); // cut by the kill
      await expect.poll(slowKey, { timeout: 5000, interval: 50 }).toMatchObject({ inFlight: 4, left: { slots: 0 } });
      // renewed while the gateway lives: still held past a whole lease timeout
      const since = Date.now();
      await expect.poll(() => Date.now() - since, { timeout: leaseTimeoutMs + 2000, interval: 50 }).toBeGreaterThan(leaseTimeoutMs + 300);
      expect((await slowKey()).inFlight).toBe(4);

      doomed.child.kill('SIGKILL');
      const killed = Date.now();
      expect(await doomed.exited).toEqual({ code: null, signal: 'SIGKILL' });
      await expect.poll(slowKey, { timeout: leaseTimeoutMs + 1500, interval: 50 }).toMatchObject({ inFlight: 0, left: { slots: 4 } });
      expect(Date.now() - killed).toBeLessThanOrEqual(leaseTimeoutMs + 1500);
      // and the slots are usable: four requests at once through the other gateway all get a key
      fake.setKey(SLOW, { chunkDelayMs: null });
      const answers = await Promise.all(Array.from({ length: 4 }, () => sdk(url2, t).chat.completions.create({ ...ask, model: 'gpt-4o' }).withResponse()));
      expect(answers.map((a) => a.response.status)).toEqual([200, 200, 200, 200]);
    } finally {
      fake.setKey(SLOW, { chunkDelayMs: null });
      await observer.close();
      other.child.kill('SIGTERM');
      await other.exited;
    }
  }, 40_000);

  it('Redis killed and back while /status and /metrics are read: nothing raw on stderr, every log line pino JSON', async () => {
    const redis = await spawnRedisServer();
    try {
      const gw = serve(configFile('outage', uniqueName('outage')), { REDIS_URL: redis.url });
      const url = await gw.listening();
      const read = () => Promise.all([fetch(`${url}/status`), fetch(`${url}/metrics`)]).then((rs) => rs.map((r) => r.status));
      // the queue reader opens its BullMQ connection at the first read
      expect(await read()).toEqual([200, 200]);
      redis.kill9();
      await expect.poll(async () => (await fetch(`${url}/readyz`)).status, { timeout: 10_000, interval: 100 }).toBe(503);
      // reads during the outage retry the queue's connection (each a connection error)
      await expect.poll(async () => ((await read())[0] === 200 ? gw.logs.filter((l) => l.level === 50).length : 0), { timeout: 10_000, interval: 200 }).toBeGreaterThan(0);
      const again = await spawnRedisServer({ port: redis.port });
      try {
        await expect.poll(async () => (await fetch(`${url}/readyz`)).status, { timeout: 15_000, interval: 200 }).toBe(200);
        expect(await read()).toEqual([200, 200]);
        gw.child.kill('SIGTERM');
        expect(await gw.exited).toEqual({ code: 0, signal: null });
      } finally {
        await again.stop();
      }
      expect(gw.stderr()).toBe('');
      expect(gw.logs.filter((l) => 'raw' in l)).toEqual([]);
    } finally {
      await redis.stop();
    }
  });

  it('a second signal exits 1 at once, without waiting for the request in flight', async () => {
    const gw = serve(configFile('twice', uniqueName('serve')), { REDIS_URL: connectionForChild().url! });
    const url = await gw.listening();
    const t = await token(url);
    const slow = sdk(url, t).chat.completions.create({ ...ask, model: 'gpt-4o' });
    slow.catch(() => undefined); // cut by the exit
    await untilInFlight(url);
    const t0 = Date.now();
    gw.child.kill('SIGTERM');
    await gw.waitForLog((l) => l.signal === 'SIGTERM');
    gw.child.kill('SIGTERM');
    expect(await gw.exited).toEqual({ code: 1, signal: null });
    expect(Date.now() - t0).toBeLessThan(SLOW_MS - 300);
    await expect(slow).rejects.toThrow();
  });

  it('a port in use: exit 1 with one line saying so', async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    try {
      const port = (blocker.address() as { port: number }).port;
      const gw = serve(configFile('port', uniqueName('serve')), { REDIS_URL: connectionForChild().url!, KEYPOOL_PORT: String(port) });
      expect(await gw.exited).toEqual({ code: 1, signal: null });
      expect(gw.stderr()).toBe(`error: cannot start the gateway: port ${port} on 127.0.0.1 is in use: set server.port (or KEYPOOL_PORT) to a free port, or 0 for any\n`);
    } finally {
      blocker.close();
    }
  });

  it('no Redis configured: starts an embedded redis-server, serves, and stops it on SIGTERM', async () => {
    const gw = serve(configFile('embedded', uniqueName('serve')), { REDIS_URL: undefined });
    const started = await gw.waitForLog((l) => l.msg === 'embedded redis-server started');
    const url = await gw.listening();
    expect(gw.logs.find((l) => typeof l.msg === 'string' && l.msg.startsWith('keypool gateway listening'))).toMatchObject({ redis: 'embedded' });
    // the redis-server's own pid, from the server itself (the log line's pid field is ambiguous)
    const probe = new Redis({ host: '127.0.0.1', port: started.port as number, lazyConnect: true });
    await probe.connect();
    const redisPid = Number(/process_id:(\d+)/.exec(await probe.info('server'))![1]);
    probe.disconnect();
    expect(isAlive(redisPid)).toBe(true);

    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    const chat = await sdk(url, await token(url)).chat.completions.create(ask);
    expect(chat.choices).toHaveLength(1);

    gw.child.kill('SIGTERM');
    expect(await gw.exited).toEqual({ code: 0, signal: null });
    expect(gw.logs.map((l) => l.msg)).toContain('embedded redis-server stopped');
    expect(isAlive(redisPid)).toBe(false);
  });
});

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
