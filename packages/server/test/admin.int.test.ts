/**
 * The admin API: only the admin token opens it; each action changes the pool fleet-wide, is
 * logged with who asked, and is counted; bad requests get OpenAI-shaped errors that say what to fix.
 */
import OpenAI from 'openai';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { keyIdOf } from '@keypool/core';
import { ADMIN, startGateway, testRedis, type TestGateway } from './helpers.js';

const A = 'sk-test-admin-aaaaaaaaaaaaaaaaaaaaa1';
const B = 'sk-test-admin-bbbbbbbbbbbbbbbbbbbbb2';
const gateways: TestGateway[] = [];
afterEach(async () => {
  for (const g of gateways.splice(0)) await g.stop();
});
afterAll(() => testRedis.disconnect());

async function gw(settings = {}) {
  const g = await startGateway({
    fakeKeys: [
      { key: A, name: 'a' },
      { key: B, name: 'b' },
    ],
    keys: [
      { secret: A, name: 'a', models: ['gpt-4o-mini'], rpm: 600 },
      { secret: B, name: 'b', models: ['gpt-4o-mini'], rpm: 600 },
    ],
    settings,
  });
  gateways.push(g);
  const admin = async (method: string, path: string, body?: unknown, token = ADMIN) => {
    const r = await fetch(`${g.url}/admin${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'x-keypool-actor': 'alice@ops-laptop' },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
    return { status: r.status, json: (await r.json()) as any };
  };
  return { g, admin };
}

describe('admin API', () => {
  it('refuses a missing or wrong admin token, and says so when the admin API is disabled', async () => {
    const { g, admin } = await gw();
    expect((await fetch(`${g.url}/admin/keys`)).status).toBe(401);
    const wrong = await admin('GET', '/keys', undefined, ADMIN.slice(0, -1) + 'x');
    expect(wrong.status).toBe(401);
    expect(wrong.json.error.code).toBe('invalid_admin_token');
    // a gateway token is not an admin token
    expect((await admin('GET', '/keys', undefined, g.token)).status).toBe(401);
    expect(g.logs.text).toMatch(/admin request refused/);

    const { admin: off } = await gw({ adminToken: undefined });
    const disabled = await off('GET', '/keys');
    expect(disabled.status).toBe(403);
    expect(disabled.json.error.message).toMatch(/KEYPOOL_ADMIN_TOKEN/);
  });

  it('disable, enable, drain, reset and limits change what the pool does, and are logged with the actor', async () => {
    const { g, admin } = await gw();
    const openai = new OpenAI({ apiKey: g.token, baseURL: `${g.url}/v1`, maxRetries: 0 });
    const ask = { model: 'gpt-4o-mini', messages: [{ role: 'user' as const, content: 'hi' }], max_tokens: 4 };
    const idA = keyIdOf(A, g.fake.url);

    expect((await admin('POST', `/keys/${idA}/disable`)).json.state).toBe('disabled');
    for (let i = 0; i < 6; i++) await openai.chat.completions.create(ask);
    expect(g.fake.counters().a?.requests ?? 0).toBe(0);
    expect((await (await fetch(`${g.url}/status`)).json()).keys.find((k: { id: string }) => k.id === idA).state).toBe('disabled');

    expect((await admin('POST', `/keys/${idA}/enable`)).json.state).toBe('active');
    expect((await admin('POST', `/keys/${idA}/drain`)).json.state).toBe('draining');
    expect((await admin('POST', `/keys/${idA}/enable`)).json.state).toBe('active');
    expect((await admin('POST', `/keys/${idA}/reset`)).status).toBe(200);

    const patched = await admin('PATCH', `/keys/${idA}`, { rpm: 120, maxConcurrent: 3 });
    expect(patched.status).toBe(200);
    expect(patched.json.key.limits).toMatchObject({ rpm: 120, maxConcurrent: 3 });

    const bad = await admin('PATCH', `/keys/${idA}`, { rpm: -1, models: [] });
    expect(bad.status).toBe(400);
    expect(bad.json.error.message).toMatch(/key\.rpm/);
    expect(bad.json.error.message).toMatch(/key\.models/);
    const secret = await admin('PATCH', `/keys/${idA}`, { secret: B });
    expect(secret.status).toBe(400);
    expect(secret.json.error.message).toMatch(/cannot change a key's secret: .* Change it there \(the key gets a new id\)/);
    expect((await admin('POST', '/keys/nope/disable')).status).toBe(404);
    expect((await admin('PATCH', `/keys/${idA}`, '{"rpm":')).status).toBe(400);

    expect((await admin('DELETE', `/keys/${idA}`)).status).toBe(200);
    expect((await admin('GET', '/keys')).json.keys.map((k: { name: string }) => k.name)).toEqual(['b']);

    const log = g.logs.lines.map((l) => JSON.parse(l)).filter((l) => l.component === 'admin' && l.action);
    expect(log.map((l) => l.action)).toEqual(expect.arrayContaining(['key-disable', 'key-enable', 'key-drain', 'key-reset', 'key-update', 'key-remove']));
    expect(log.every((l) => l.actor === 'alice@ops-laptop' && l.target)).toBe(true);
    const metrics = await (await fetch(`${g.url}/metrics`)).text();
    expect(metrics).toMatch(/keypool_admin_actions_total\{action="key-disable"\} 1/);
    // the fleet gauges of ONE scrape are read from Redis before being written out (they once lagged a scrape)
    const idB = (await admin('GET', '/keys')).json.keys[0].id as string;
    expect((await admin('POST', `/keys/${idB}/disable`)).status).toBe(200);
    const once = await (await fetch(`${g.url}/metrics`)).text();
    expect(once).toMatch(new RegExp(`keypool_key_state\\{key_id="${idB}",key_name="b",provider="[a-z]+",state="disabled"\\} 1`));
  });

  it('creates, lists and revokes gateway tokens; a token is shown once and works at once on the proxy', async () => {
    const { g, admin } = await gw();
    const made = await admin('POST', '/tokens', { name: 'team-a', rpm: 30, models: ['gpt-4o-mini'], budget: { usd: 5, period: 'day' } });
    expect(made.status).toBe(201);
    expect(made.json.token).toMatch(/^kpt_[A-Za-z0-9_-]{43}$/);
    expect(made.json).toMatchObject({ name: 'team-a', rpm: 30, models: ['gpt-4o-mini'], budget: { usd: 5, period: 'day' } });
    const openai = new OpenAI({ apiKey: made.json.token, baseURL: `${g.url}/v1`, maxRetries: 0 });
    await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 });

    // the token is settled in the background once the answer is out
    await expect.poll(async () => (await admin('GET', '/tokens')).json.tokens.find((t: { id: string }) => t.id === made.json.id)?.requests).toBe(1);
    const list = await admin('GET', '/tokens');
    const listed = list.json.tokens.find((t: { id: string }) => t.id === made.json.id);
    expect(listed).toMatchObject({ name: 'team-a', requests: 1, revokedAt: null });
    expect(JSON.stringify(list.json)).not.toContain(made.json.token);

    const invalid = await admin('POST', '/tokens', { rpm: -5 });
    expect(invalid.status).toBe(400);
    expect(invalid.json.error.message).toMatch(/token\.name/);
    expect(invalid.json.error.message).toMatch(/token\.rpm/);

    expect((await admin('DELETE', `/tokens/${made.json.id}`)).json.revoked).toBe(true);
    // the audit lines name the token each action was on: its id, from the body for a create
    const audit = g.logs.lines.map((l) => JSON.parse(l)).filter((l) => l.component === 'admin' && l.action?.startsWith('token-') && !l.err);
    expect(audit.map((l) => [l.action, l.target, l.actor])).toEqual([
      ['token-create', made.json.id, 'alice@ops-laptop'],
      ['token-revoke', made.json.id, 'alice@ops-laptop'],
    ]);
    await expect(openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] })).rejects.toMatchObject({ status: 401, code: 'token_revoked' });
    expect((await admin('DELETE', '/tokens/000000000000')).status).toBe(404);
  });
});
