/**
 * A key's destination is part of the key: where a secret is sent comes only from the config or
 * secret source of the process holding it. Neither the admin API nor anyone who can write to the
 * pool's Redis can send a provider key to another host. A capture server (plain node:http, every
 * request recorded) stands for the attacker's host: it must receive nothing.
 */
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { KeyPool, PoolKeys, keyIdOf } from '@keypool/core';
import { PooledOpenAI } from '@keypool/client';
import { ADMIN, MODELS, sdkFor, testRedis, twoKeyGateways, type TestGateway } from './helpers.js';

const A = 'sk-test-dest-aaaaaaaaaaaaaaaaaaaaaaa1';
const B = 'sk-test-dest-bbbbbbbbbbbbbbbbbbbbbbb2';
const gw = twoKeyGateways(A, B);
const ask = { model: 'gpt-4o-mini', messages: [{ role: 'user' as const, content: 'hi' }], max_tokens: 4 };

interface Capture {
  url: string;
  requests: { method: string; path: string; headers: IncomingHttpHeaders }[];
  stop(): Promise<void>;
}
const captures: Capture[] = [];
afterEach(async () => {
  for (const c of captures.splice(0)) await c.stop();
});

/** The attacker's host: records every request it receives, answers 503. */
async function captureServer(): Promise<Capture> {
  const requests: Capture['requests'] = [];
  const server = createServer((req, res) => {
    requests.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers });
    req.resume();
    res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":{"message":"captured"}}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const c: Capture = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    requests,
    stop: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
  captures.push(c);
  return c;
}

async function admin(g: TestGateway, method: string, path: string, body?: unknown) {
  const r = await fetch(`${g.url}/admin${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json', 'x-keypool-actor': 'mallory@laptop' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: r.status, json: (await r.json()) as any };
}

const served = (g: TestGateway) => (g.fake.counters().a?.served ?? 0) + (g.fake.counters().b?.served ?? 0);

describe('a key is sent only where its own config says', () => {
  it('the admin API refuses to change a key baseURL or provider (400 saying what to do); the capture server receives nothing', async () => {
    const g = await gw();
    const capture = await captureServer();
    const idA = keyIdOf(A, g.fake.url);
    for (const patch of [{ baseURL: capture.url }, { provider: 'evil' }, { baseURL: capture.url, rpm: 1 }]) {
      const r = await admin(g, 'PATCH', `/keys/${idA}`, patch);
      expect(r.status).toBe(400);
      expect(r.json.error.code).toBe('invalid_argument');
      expect(r.json.error.message).toBe(
        `updateKey cannot change a key's ${Object.keys(patch)[0]}: a key's secret, baseURL and provider come only from the config or secret source that holds the secret, ` +
          'so that nothing in Redis or the admin API can send a secret elsewhere. Change it there (the key gets a new id) and retire the old key',
      );
    }
    // nothing changed: not the rpm sent along with the baseURL either
    expect((await admin(g, 'GET', '/keys')).json.keys.find((k: { id: string }) => k.id === idA)).toMatchObject({ baseURL: g.fake.url, limits: { rpm: 0 } });
    const openai = sdkFor(g);
    for (let i = 0; i < 8; i++) await openai.chat.completions.create(ask);
    expect(served(g)).toBe(8);
    expect(g.fake.counters().a?.served ?? 0).toBeGreaterThan(0);
    expect(capture.requests).toEqual([]);
    expect(g.logs.text).toMatch(/"msg":"admin: key-update failed"/);
  });

  it('an attacker with Redis write access rewrites the key record and bumps the topology: the gateway, the pooled client and probes keep the configured origin', async () => {
    const g = await gw();
    const capture = await captureServer();
    const k = new PoolKeys(g.pool.name);
    // a second process of the fleet, for the pooled client
    const other = await KeyPool.connect({
      redis: testRedis,
      config: { pool: g.pool.name, keys: [{ secret: A, name: 'a', models: MODELS, baseURL: g.fake.url }] },
      logger: pino({ level: 'silent' }),
    });
    try {
      // what anyone who can write to the pool's Redis (a queue producer's credentials) can do
      for (const secret of [A, B]) {
        const id = keyIdOf(secret, g.fake.url);
        const rec = JSON.parse((await testRedis.hget(k.cfg, id))!);
        await testRedis.hset(k.cfg, id, JSON.stringify({ ...rec, baseURL: capture.url, provider: 'evil' }));
      }
      await testRedis.hincrby(k.meta, 'v', 1);
      // both processes read the forged records (a script's reply names the new version; made sure of here)
      await g.pool.refreshTopology();
      await other.refreshTopology();
      expect(JSON.parse((await testRedis.hget(k.cfg, keyIdOf(A, g.fake.url)))!).baseURL).toBe(capture.url);
      const openai = sdkFor(g);
      for (let i = 0; i < 6; i++) await openai.chat.completions.create(ask);
      for await (const _ of await openai.chat.completions.create({ ...ask, stream: true }));
      const client = new PooledOpenAI({ pool: other, backoff: { baseMs: 5, maxMs: 50 } });
      for (let i = 0; i < 4; i++) await client.chat.completions.create(ask);
      const lease = await other.acquire({ model: 'gpt-4o-mini' });
      expect(lease).toMatchObject({ ok: true, baseURL: g.fake.url, provider: 'openai' });
      // a revoked key is probed (GET {baseURL}/models) where its own spec says, too
      if (lease.ok) await lease.release({ status: 401, latencyMs: 1 });
      expect((await other.probeTargets()).map((t) => [t.keyId, t.baseURL, t.provider])).toEqual([[keyIdOf(A, g.fake.url), g.fake.url, 'openai']]);
      // and the status of a process that holds the key shows where it really goes
      expect((await g.pool.status()).keys.map((s) => s.baseURL)).toEqual([g.fake.url, g.fake.url]);
      expect(served(g)).toBe(11);
      expect(capture.requests).toEqual([]);
    } finally {
      await other.close();
    }
  });

  it('the audit line of a key update names each field changed with its old and new value', async () => {
    const g = await gw();
    const idA = keyIdOf(A, g.fake.url);
    const r = await admin(g, 'PATCH', `/keys/${idA}`, { rpm: 300, maxConcurrent: 3, budget: { usd: 5, period: 'day' }, models: ['gpt-4o-mini'], name: 'alpha' });
    expect(r.status).toBe(200);
    expect(r.json.changes).toEqual([
      { field: 'name', from: 'a', to: 'alpha' },
      { field: 'models', from: ['gpt-4o', 'gpt-4o-mini', 'text-embedding-3-small'], to: ['gpt-4o-mini'] },
      { field: 'rpm', from: 0, to: 300 },
      { field: 'maxConcurrent', from: 0, to: 3 },
      { field: 'budget', to: { usd: 5, period: 'day' } },
    ]);
    await admin(g, 'PATCH', `/keys/${idA}`, { rpm: 300 });
    const audit = g.logs.lines.map((l) => JSON.parse(l)).filter((l) => l.component === 'admin' && l.action === 'key-update');
    expect(audit.map((l) => l.msg)).toEqual([
      `admin: key-update ${idA} name "a"->"alpha" models gpt-4o,gpt-4o-mini,text-embedding-3-small->gpt-4o-mini rpm 0->300 maxConcurrent 0->3 budget -->$5/day`,
      `admin: key-update ${idA} (no change)`,
    ]);
    expect(audit[0]).toMatchObject({ actor: 'mallory@laptop', target: idA, changes: { rpm: { from: 0, to: 300 }, budget: { from: null, to: { usd: 5, period: 'day' } } } });
    for (const secret of [A, B]) expect(g.logs.text).not.toContain(secret.slice(-12));
  });
});
