/**
 * No secret leaves the gateway: provider keys, gateway tokens and the admin token never appear in
 * an answer (body or headers), /status, /metrics, the admin API, the dashboard, a log line, or any
 * byte the pool keeps in Redis. The one exception is the answer that creates a gateway token.
 */
import { randomBytes } from 'node:crypto';
import OpenAI from 'openai';
import { afterAll, expect, it } from 'vitest';
import { dumpPool, secretFragments } from '../../core/test/helpers.js';
import { ADMIN, startGateway, testRedis } from './helpers.js';

const secret = (tag: string) => `sk-${tag}${randomBytes(24).toString("hex")}`;
let stop: (() => Promise<void>) | undefined;
afterAll(async () => {
  await stop?.();
  testRedis.disconnect();
});

it('provider keys, gateway tokens and the admin token appear nowhere', async () => {
  const [A, B, C] = [secret('a'), secret('b'), secret('c')];
  const models = ['gpt-4o-mini', 'text-embedding-3-small'];
  const g = await startGateway({
    fakeKeys: [
      { key: A, name: 'a', revoked: true },
      { key: B, name: 'b', rpm: 2 },
      { key: C, name: 'c' },
    ],
    keys: [
      { secret: A, name: 'a', models },
      { secret: B, name: 'b', models },
      { secret: C, name: 'c', models },
    ],
  });
  stop = g.stop;
  const seen: string[] = [];
  const record = async (r: Response) => {
    seen.push(`${r.status} ${JSON.stringify([...r.headers])} ${await r.text()}`);
  };
  const admin = (path: string, init: RequestInit = {}) =>
    fetch(`${g.url}/admin${path}`, { ...init, headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json', 'x-keypool-actor': 'tester', ...init.headers } });

  // a second token, made through the admin API: that one answer is the only place it may appear
  const made = await admin('/tokens', { method: 'POST', body: JSON.stringify({ name: 'second', rpm: 100 }) });
  expect(made.status).toBe(201);
  const second = (await made.json()) as { token: string; id: string };
  g.fake.setFault({ kind: 'error', status: 500, count: 3, key: 'c' });
  for (const token of [g.token, second.token]) {
    const openai = new OpenAI({ apiKey: token, baseURL: `${g.url}/v1`, maxRetries: 0 });
    for (let i = 0; i < 6; i++) {
      const r = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 }).withResponse().catch((e: unknown) => e);
      seen.push(JSON.stringify(r, Object.getOwnPropertyNames(r)));
      if ('response' in (r as object)) seen.push(JSON.stringify([...(r as { response: Response }).response.headers]));
    }
    const stream = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, stream: true }).catch((e: unknown) => e);
    if (stream && typeof (stream as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function') for await (const c of stream as AsyncIterable<unknown>) seen.push(JSON.stringify(c));
    await record(await fetch(`${g.url}/v1/embeddings`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: '{"model":"text-embedding-3-small","input":"x"}' }));
  }
  // bad tokens: a provider key, the admin token, a revoked token
  for (const bad of [A, ADMIN, 'kpt_' + 'x'.repeat(43)]) {
    await record(await fetch(`${g.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${bad}` }, body: '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}]}' }));
  }
  await record(await admin('/keys', { headers: { authorization: `Bearer ${B}` } }));
  const keys = (await (await admin('/keys')).json()) as { keys: { id: string; name: string }[] };
  const idOf = (n: string) => keys.keys.find((k) => k.name === n)!.id;
  await record(await admin(`/keys/${idOf('b')}/disable`, { method: 'POST' }));
  await record(await admin(`/keys/${idOf('b')}/enable`, { method: 'POST' }));
  await record(await admin(`/keys/${idOf('c')}`, { method: 'PATCH', body: JSON.stringify({ rpm: 500 }) }));
  await record(await admin(`/keys/${idOf('c')}`, { method: 'PATCH', body: JSON.stringify({ secret: A }) }));
  await record(await admin(`/tokens/${second.id}`, { method: 'DELETE' }));
  for (const path of ['/status', '/metrics', '/dashboard', '/readyz', '/healthz']) await record(await fetch(g.url + path));
  await record(await admin('/tokens'));
  await record(await fetch(`${g.url}/v1/models`, { headers: { authorization: `Bearer ${g.token}` } }));
  // releases and settlements finish in the background
  await expect.poll(async () => (await g.pool.status()).leasesInFlight).toBe(0);
  await expect.poll(async () => (await g.pool.tokens.list()).every((t) => t.reservedUsd === 0)).toBe(true);

  // the traffic did what it should: key a was revoked by the provider, c failed, b was limited
  const st = (await (await fetch(`${g.url}/status`)).json()) as { keys: { name: string; state: string }[] };
  expect(st.keys.find((k) => k.name === 'a')!.state).toBe('revoked');
  const redisBytes = [...(await dumpPool(testRedis, g.pool.name)).values()].flat().map((b) => b.toString('latin1')).join('\n');
  expect(redisBytes.length).toBeGreaterThan(100);
  const places = { answers: seen.join('\n'), logs: g.logs.text, redis: redisBytes };
  expect(places.logs).toMatch(/admin: key-disable/);
  expect(places.logs).toMatch(/"actor":"tester"/);
  for (const [what, s] of [['provider key a', A], ['provider key b', B], ['provider key c', C], ['gateway token', g.token], ['second gateway token', second.token], ['admin token', ADMIN]] as const) {
    for (const [where, text] of Object.entries(places)) {
      const leaked = secretFragments(s).find((f) => text.includes(f));
      expect(leaked, `${what} found in ${where}: ${leaked ? text.slice(Math.max(0, text.indexOf(leaked) - 300), text.indexOf(leaked) + 100) : ''}`).toBeUndefined();
    }
  }
});
