/**
 * VaultSource with the real node-vault client over real HTTP, against the fake Vault
 * (@keypool/testkit/fake-vault) by default.
 *
 * Against a real Vault instead (a dev server: its root token is in docker-compose.yml):
 *
 *   docker compose up -d vault
 *   VAULT_ADDR=http://127.0.0.1:8200 VAULT_TOKEN=dev-root-token \
 *     npx vitest run --project unit packages/secrets/test/vault.wire.test.ts
 *
 * Everything is set up through Vault's HTTP API with that token: secrets under
 * secret/keypool-test/<random>/ (deleted afterwards), ACL policies, AppRole (enabled at
 * auth/approle if it is not) and its roles. Tests that need fault injection (outage, sealed, 429,
 * latency, a failing renewal) run on the fake only.
 */
import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import { parseKeySpec } from '@keypool/core';
import { startFakeVault, type FakeVault } from '@keypool/testkit/fake-vault';
import { LogSink } from '@keypool/testkit/log-sink';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { SecretLoader, type RefreshResult } from '../src/loader.js';
import { isSecretSourceError, type SecretSourceError } from '../src/types.js';
import { VaultSource, VaultSourceConfigSchema, type VaultSourceConfig } from '../src/vault.js';

const REAL_ADDR = process.env.VAULT_ADDR || undefined;
const REAL = REAL_ADDR !== undefined;
if (REAL && !process.env.VAULT_TOKEN) throw new Error('VAULT_ADDR is set: set VAULT_TOKEN to a root token of that Vault too (dev-root-token for docker compose)');

const run = randomBytes(4).toString('hex');
const base = `keypool-test/${run}`;

let fake: FakeVault | undefined;
let addr: string;
let root: string;

/** Every string that must never show in an error or a log line. */
const sensitive = new Set<string>();
/** Every error a source gave, checked at the end. */
const errors: SecretSourceError[] = [];
const sinks: LogSink[] = [];
const sources: VaultSource[] = [];
const seeded = new Set<string>();
const policies = new Set<string>();
const roles = new Set<string>();

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function sink(): LogSink {
  const s = new LogSink();
  sinks.push(s);
  return s;
}
const log = sink();

function key(): string {
  const k = `sk-test-${randomBytes(12).toString('hex')}`;
  sensitive.add(k);
  return k;
}

/** A request to Vault's HTTP API (root token unless told), for setting up and checking. */
async function api(method: string, path: string, body?: unknown, token: string = root): Promise<{ status: number; body: any }> {
  const res = await fetch(`${addr}/v1/${path}`, {
    method,
    headers: { 'X-Vault-Token': token, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

async function seed(path: string, data: Record<string, unknown>): Promise<number> {
  const r = await api('POST', `secret/data/${base}/${path}`, { data });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  seeded.add(`${base}/${path}`);
  return r.body.data.version as number;
}

async function policy(hcl: string): Promise<string> {
  const name = `keypool-test-${run}-${policies.size}`;
  const r = await api('PUT', `sys/policies/acl/${name}`, { policy: hcl });
  expect(r.status, JSON.stringify(r.body)).toBe(204);
  policies.add(name);
  return name;
}

const readWrite = () => `path "secret/data/${base}/*" { capabilities = ["create", "read", "update"] }`;

async function createToken(opts: { policies: string[]; ttl: string }): Promise<string> {
  const r = await api('POST', 'auth/token/create', { policies: opts.policies, ttl: opts.ttl, renewable: true });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  const token = r.body.auth.client_token as string;
  sensitive.add(token);
  return token;
}

/** Enable AppRole (if needed) and create a role with `policies` and a token TTL; its role_id and a secret_id. */
async function appRole(opts: { policies: string[]; ttl: string; maxTtl?: string }): Promise<{ name: string; roleId: string; secretId: string }> {
  const auths = await api('GET', 'sys/auth');
  expect(auths.status).toBe(200);
  if (!auths.body.data['approle/']) expect((await api('POST', 'sys/auth/approle', { type: 'approle' })).status).toBe(204);
  const name = `keypool-test-${run}-${roles.size}`;
  const created = await api('POST', `auth/approle/role/${name}`, { token_policies: opts.policies, token_ttl: opts.ttl, token_max_ttl: opts.maxTtl ?? '60s' });
  expect(created.status, JSON.stringify(created.body)).toBe(204);
  roles.add(name);
  const roleId = (await api('GET', `auth/approle/role/${name}/role-id`)).body.data.role_id as string;
  const secretId = (await api('POST', `auth/approle/role/${name}/secret-id`, {})).body.data.secret_id as string;
  sensitive.add(roleId).add(secretId);
  return { name, roleId, secretId };
}

/** Revoke the tokens logins to `role` got (as if they had expired early). */
async function revokeRoleTokens(role: string): Promise<number> {
  if (fake) return fake.revokeTokens({ roleName: role });
  const list = await api('GET', 'auth/token/accessors?list=true');
  let n = 0;
  for (const accessor of list.body.data.keys as string[]) {
    const info = await api('POST', 'auth/token/lookup-accessor', { accessor });
    if (info.body?.data?.meta?.role_name !== role) continue;
    expect((await api('POST', 'auth/token/revoke-accessor', { accessor })).status).toBe(204);
    n++;
  }
  return n;
}

function source(config: Omit<VaultSourceConfig, 'type'>, logger = log.logger): VaultSource {
  const s = new VaultSource({ type: 'vault', endpoint: addr, auth: { method: 'token', token: root }, ...config }, { logger });
  sources.push(s);
  return s;
}

function loader(src: VaultSource, opts: { attempts?: number; timeoutMs?: number } = {}): SecretLoader {
  const l = new SecretLoader(src, { attempts: opts.attempts ?? 3, timeoutMs: opts.timeoutMs ?? 3000, backoffMs: 10, maxBackoffMs: 40, logger: log.logger });
  l.on('refresh', (r: RefreshResult) => {
    if (!r.ok) errors.push(r.error);
  });
  return l;
}

/** The SecretSourceError `p` rejects with (kept for the final check). */
async function failure(p: Promise<unknown>): Promise<SecretSourceError> {
  const e = await p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (err: unknown) => err,
  );
  if (!isSecretSourceError(e)) throw e;
  errors.push(e);
  return e;
}

/** Requests the fake saw on `route` (0 on a real Vault: only used when fake is set). */
const seen = (route: string) => fake?.counters().requests[route] ?? 0;
const logged = (s: LogSink, msg: string) => s.lines.filter((l) => (JSON.parse(l) as { msg?: string }).msg === msg).length;

beforeAll(async () => {
  if (REAL) {
    addr = REAL_ADDR!.replace(/\/+$/, '');
    root = process.env.VAULT_TOKEN!;
  } else {
    fake = await startFakeVault({ rootToken: `hvs.root-${randomBytes(8).toString('hex')}` });
    addr = fake.url;
    root = fake.rootToken;
  }
  sensitive.add(root);
});

afterEach(async () => {
  await fake?.clearFaults();
});

afterAll(async () => {
  for (const s of sources) await s.close();
  if (REAL) {
    for (const p of seeded) await api('DELETE', `secret/metadata/${p}`);
    for (const r of roles) await api('DELETE', `auth/approle/role/${r}`);
    for (const p of policies) await api('DELETE', `sys/policies/acl/${p}`);
  }
  await fake?.stop();
});

describe(`VaultSource against ${REAL ? `the Vault at ${REAL_ADDR}` : 'the fake Vault'}`, () => {
  it('loads a flat { name: secret } map with token auth, applying the source defaults', async () => {
    const [k1, k2] = [key(), key()];
    const v = await seed('flat', { 'openai-1': k1, 'openai-2': k2 });
    const src = source({ path: `${base}/flat`, defaults: { models: ['gpt-4o-mini'], rpm: 500 } });
    expect(src.kind).toBe('vault');
    expect(src.describe).toBe(`vault kv2 secret/${base}/flat at ${addr}`);
    const set = await src.load();
    expect(set.version).toBe(String(v));
    expect([...set.keys].sort((a, b) => a.name!.localeCompare(b.name!))).toMatchObject([
      { name: 'openai-1', secret: k1, models: ['gpt-4o-mini'], rpm: 500, provider: 'openai', tpm: 0 },
      { name: 'openai-2', secret: k2, models: ['gpt-4o-mini'], rpm: 500, provider: 'openai', tpm: 0 },
    ]);
  });

  it('loads the { keys: [...] } document, as an array and as the JSON string `vault kv put keys=@file` stores', async () => {
    const [k1, k2] = [key(), key()];
    const keys = [
      { secret: k1, name: 'main', models: ['gpt-4o'], tpm: 1000 },
      { secret: k2, models: ['gpt-4o-mini'], rpm: 7 },
    ];
    await seed('array', { keys });
    await seed('string', { keys: JSON.stringify(keys) });
    for (const path of ['array', 'string']) {
      const set = await source({ path: `${base}/${path}`, defaults: { rpm: 60 } }).load();
      expect(set.version).toBe('1');
      expect(set.keys).toMatchObject([
        { secret: k1, name: 'main', models: ['gpt-4o'], tpm: 1000, rpm: 60 },
        { secret: k2, models: ['gpt-4o-mini'], rpm: 7 },
      ]);
      expect(set.keys[1]!.name).toBeUndefined();
    }
  });

  it('reads the latest version, or the version it is pinned to', async () => {
    const [k1, k2] = [key(), key()];
    await seed('versions', { one: k1 });
    await seed('versions', { two: k2 });
    const defaults = { models: ['gpt-4o-mini'] };
    const latest = await source({ path: `${base}/versions`, defaults }).load();
    expect(latest.version).toBe('2');
    expect(latest.keys.map((k) => [k.name, k.secret])).toEqual([['two', k2]]);

    const pinned = source({ path: `${base}/versions`, defaults, version: 1 });
    expect(pinned.describe).toBe(`vault kv2 secret/${base}/versions at ${addr} version 1`);
    const old = await pinned.load();
    expect(old.version).toBe('1');
    expect(old.keys.map((k) => [k.name, k.secret])).toEqual([['one', k1]]);

    const missing = await failure(source({ path: `${base}/versions`, defaults, version: 7 }).load());
    expect(missing.code).toBe('not_found');
    expect(missing.message).toContain(`no secret at secret/data/${base}/versions version 7`);
  });

  it('write stores a new version (check-and-set with expectedVersion); a stale expectedVersion is a conflict', async () => {
    const defaults = { models: ['gpt-4o-mini'] };
    await seed('write', { first: key() });
    const src = source({ path: `${base}/write`, defaults });
    const v1 = await src.load();
    expect(v1.version).toBe('1');

    const next = [{ ...v1.keys[0]!, rpm: 99 }, { ...v1.keys[0]!, secret: key(), name: 'second' }];
    expect(await src.write(next, { expectedVersion: v1.version })).toBe('2');
    const v2 = await src.load();
    expect(v2).toEqual({ version: '2', keys: next });
    // stored as a { keys: [...] } document, a new version beside the first
    const stored = await api('GET', `secret/data/${base}/write`);
    expect(stored.body.data.metadata.version).toBe(2);
    expect(stored.body.data.data).toEqual({ keys: next });
    expect((await api('GET', `secret/data/${base}/write?version=1`)).body.data.data).toEqual({ first: v1.keys[0]!.secret });
    if (fake) expect(fake.versions(`${base}/write`).map((v) => v.version)).toEqual([1, 2]);

    // someone else wrote version 2: a write expecting version 1 must not overwrite it
    const lost = await failure(src.write([{ ...v1.keys[0]!, rpm: 1 }], { expectedVersion: '1' }));
    expect(lost.code).toBe('conflict');
    expect(lost.retryable).toBe(false);
    expect(lost.message).toContain(`secret/data/${base}/write changed since version 1`);
    expect(await src.load()).toEqual({ version: '2', keys: next });

    // without expectedVersion the write is unconditional
    expect(await src.write(next)).toBe('3');

    const pinned = await failure(source({ path: `${base}/write`, version: 1 }).write(next));
    expect(pinned.code).toBe('config');
    const bad = await failure(src.write(next, { expectedVersion: 'latest' }));
    expect(bad.code).toBe('config');
  });

  it('AppRole: logs in once and renews its 2 s token at 2/3 of the TTL; a renewable token is renewed too; close() stops renewing', async () => {
    const k = key();
    await seed('approle', { a: k });
    const pol = await policy(readWrite());
    const role = await appRole({ policies: [pol], ttl: '2s' });
    const renewableToken = await createToken({ policies: [pol], ttl: '2s' });
    const approleLog = sink();
    const tokenLog = sink();
    const viaRole = source({ path: `${base}/approle`, defaults: { models: ['m'] }, auth: { method: 'approle', roleId: role.roleId, secretId: role.secretId } }, approleLog.logger);
    const viaToken = source({ path: `${base}/approle`, defaults: { models: ['m'] }, auth: { method: 'token', token: renewableToken } }, tokenLog.logger);
    const before = fake?.counters();

    expect((await viaRole.load()).keys[0]!.secret).toBe(k);
    expect((await viaToken.load()).keys[0]!.secret).toBe(k);
    expect(logged(approleLog, 'logged in to Vault with AppRole')).toBe(1);

    await sleep(4600); // 2.3 TTLs: both tokens would be gone without renewals (at ~1.33 s, 2.67 s, 4 s)

    expect((await viaRole.load()).keys[0]!.secret).toBe(k);
    expect((await viaToken.load()).keys[0]!.secret).toBe(k);
    expect(logged(approleLog, 'logged in to Vault with AppRole')).toBe(1); // kept alive by renewal, not by new logins
    // due at ~1.33 s, 2.67 s and 4 s; on a busy machine each renewal's own time pushes the next one later
    expect(logged(approleLog, 'renewed the Vault token')).toBeGreaterThanOrEqual(2);
    expect(logged(tokenLog, 'the Vault token is renewable: renewing it at 2/3 of its TTL')).toBe(1);
    expect(logged(tokenLog, 'renewed the Vault token')).toBeGreaterThanOrEqual(2);
    if (fake && before) {
      const after = fake.counters();
      expect(after.logins - before.logins).toBe(1);
      expect(after.renewals - before.renewals).toBeGreaterThanOrEqual(4);
      expect(after.denied - before.denied).toBe(0);
    }

    await viaRole.close();
    await viaToken.close();
    const renewed = logged(approleLog, 'renewed the Vault token') + logged(tokenLog, 'renewed the Vault token');
    const renewals = fake?.counters().renewals;
    await sleep(1500);
    expect(logged(approleLog, 'renewed the Vault token') + logged(tokenLog, 'renewed the Vault token')).toBe(renewed);
    if (fake) expect(fake.counters().renewals).toBe(renewals);
  });

  it('AppRole: with renew off, a load after the token expired logs in again (without a refused request first)', async () => {
    await seed('expiry', { a: key() });
    const role = await appRole({ policies: [await policy(readWrite())], ttl: '2s' });
    const l = sink();
    const src = source({ path: `${base}/expiry`, defaults: { models: ['m'] }, renew: false, auth: { method: 'approle', roleId: role.roleId, secretId: role.secretId } }, l.logger);
    const before = fake?.counters();
    await src.load();
    await sleep(2100);
    expect((await src.load()).version).toBe('1');
    expect(logged(l, 'logged in to Vault with AppRole')).toBe(2);
    expect(logged(l, 'renewed the Vault token')).toBe(0);
    if (fake && before) {
      const after = fake.counters();
      expect(after.logins - before.logins).toBe(2);
      expect(after.renewals - before.renewals).toBe(0);
      expect(after.requests['kv.read']! - before.requests['kv.read']!).toBe(2);
      expect(after.denied - before.denied).toBe(0);
    }
  });

  it('AppRole: a token revoked under it gets one new login and one retry; a policy that denies the path is not retried', async () => {
    await seed('revoked', { a: key() });
    const role = await appRole({ policies: [await policy(readWrite())], ttl: '60s' });
    const l = sink();
    const src = source({ path: `${base}/revoked`, defaults: { models: ['m'] }, auth: { method: 'approle', roleId: role.roleId, secretId: role.secretId } }, l.logger);
    await src.load();
    expect(await revokeRoleTokens(role.name)).toBe(1);
    const reads = seen('kv.read');
    const denied = fake?.counters().denied ?? 0;
    expect((await src.load()).version).toBe('1');
    expect(logged(l, 'Vault refused the AppRole token (expired or revoked): logging in again')).toBe(1);
    expect(logged(l, 'logged in to Vault with AppRole')).toBe(2);
    if (fake) {
      expect(seen('kv.read') - reads).toBe(2); // refused, then the retry
      expect(fake.counters().denied - denied).toBe(1);
    }

    // a fresh token that is refused is a policy problem: no second login, no loop
    const other = await appRole({ policies: [await policy(`path "secret/data/${base}/elsewhere" { capabilities = ["read"] }`)], ttl: '60s' });
    const l2 = sink();
    const wrongPolicy = source({ path: `${base}/revoked`, auth: { method: 'approle', roleId: other.roleId, secretId: other.secretId } }, l2.logger);
    const reads2 = seen('kv.read');
    const e = await failure(wrongPolicy.load());
    expect(e.code).toBe('denied');
    expect(e.message).toContain(`permission denied reading secret/data/${base}/revoked: check the AppRole's token policies`);
    expect(logged(l2, 'logged in to Vault with AppRole')).toBe(1);
    if (fake) expect(seen('kv.read') - reads2).toBe(1);

    const wrongSecret = await failure(source({ path: `${base}/revoked`, auth: { method: 'approle', roleId: role.roleId, secretId: `${role.secretId.slice(0, -4)}0000` } }).load());
    expect(wrongSecret.code).toBe('denied');
    expect(wrongSecret.message).toContain('AppRole login refused');
    expect(wrongSecret.message).toContain('check auth.roleId and auth.secretId');

    if (fake) {
      // Vault's AppRole can quote the secret_id it refuses (`invalid secret_id "..."`): it is scrubbed
      await fake.setFault({ kind: 'error', status: 400, route: 'approle.login', count: 1, message: `invalid secret_id "${role.secretId}"` });
      const quoted = await failure(source({ path: `${base}/revoked`, auth: { method: 'approle', roleId: role.roleId, secretId: role.secretId } }).load());
      expect(quoted.code).toBe('denied');
      expect(quoted.message).toContain('invalid secret_id "[redacted]"');
      expect(quoted.message).not.toContain(role.secretId);
    }
  });

  it('a wrong token is denied, and SecretLoader does not retry it', async () => {
    await seed('denied', { a: key() });
    const wrong = `hvs.${randomBytes(18).toString('base64url')}`;
    sensitive.add(wrong);
    const l = loader(source({ path: `${base}/denied`, defaults: { models: ['m'] }, auth: { method: 'token', token: wrong } }), { attempts: 4 });
    const reads = seen('kv.read');
    const r = await l.refresh();
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.attempts).toBe(1);
    expect(r.set).toBeUndefined();
    expect(r.error.code).toBe('denied');
    expect(r.error.message).toContain(`permission denied reading secret/data/${base}/denied: check the token`);
    if (fake) expect(seen('kv.read') - reads).toBe(1);

    // a valid token whose policy does not cover the path
    const narrow = await createToken({ policies: [await policy(`path "secret/data/${base}/other" { capabilities = ["read"] }`)], ttl: '60s' });
    const e = await failure(source({ path: `${base}/denied`, auth: { method: 'token', token: narrow } }).load());
    expect(e.code).toBe('denied');
    const w = await failure(source({ path: `${base}/denied`, auth: { method: 'token', token: narrow } }).write([parseKeySpec({ secret: key(), models: ['m'] })]));
    expect(w.code).toBe('denied');
    expect(w.message).toContain(`permission denied writing secret/data/${base}/denied`);
  });

  it('a missing path is not_found (not retried), with a hint when the path repeats the mount', async () => {
    const l = loader(source({ path: `${base}/nothing-here` }), { attempts: 4 });
    const r = await l.refresh();
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.error.code).toBe('not_found');
    expect(r.attempts).toBe(1);
    expect(r.error.message).toContain(`no secret at secret/data/${base}/nothing-here`);

    await seed('hint', { a: key() });
    const e = await failure(source({ path: `secret/${base}/hint` }).load());
    expect(e.code).toBe('not_found');
    expect(e.message).toContain(`did you mean path "${base}/hint"`);
  });

  it('an invalid document is invalid: the message names the path and the field, never the secret', async () => {
    const k = key();
    await seed('invalid', { keys: [{ secret: key(), models: ['m'] }, { secret: k, models: [] }] });
    const e = await failure(source({ path: `${base}/invalid` }).load());
    expect(e.code).toBe('invalid');
    expect(e.message).toContain(`secret/${base}/invalid`);
    expect(e.message).toContain('keys[1].models');
    expect(e.message).not.toContain(k);

    const short = `sk-${randomBytes(2).toString('hex')}`; // too short to be a key
    sensitive.add(short);
    await seed('invalid-flat', { 'openai-9': short });
    const e2 = await failure(source({ path: `${base}/invalid-flat`, defaults: { models: ['m'] } }).load());
    expect(e2.code).toBe('invalid');
    expect(e2.message).toContain('openai-9');
    expect(e2.message).not.toContain(short);
  });

  it.skipIf(REAL)('an outage and a sealed Vault keep the last good set; the loader recovers after', async () => {
    await seed('outage', { a: key() });
    const l = loader(source({ path: `${base}/outage`, defaults: { models: ['m'] } }), { attempts: 3 });
    const good = await l.start();

    await fake!.setFault({ kind: 'outage' });
    const down = await l.refresh();
    expect(down.ok).toBe(false);
    if (down.ok) return;
    expect(down.error.code).toBe('unavailable');
    expect(down.error.message).toContain('connection refused');
    expect(down.attempts).toBe(3);
    expect(down.set).toBe(good);
    expect(l.current).toBe(good);
    await fake!.clearFaults();
    const back = await l.refresh();
    expect(back).toMatchObject({ ok: true, changed: false, attempts: 1 });

    await fake!.setFault({ kind: 'reset', route: 'kv.read', count: 1 });
    const reset = await l.refresh(); // the connection dropped once: the second attempt answers
    expect(reset).toMatchObject({ ok: true, attempts: 2 });
    expect(fake!.counters().resets).toBe(1);
    const good2 = l.current!; // every successful refresh holds a new (equal) set
    expect(good2).toEqual(good);

    await fake!.setFault({ kind: 'sealed' });
    const reads = seen('kv.read');
    const sealed = await l.refresh();
    expect(sealed.ok).toBe(false);
    if (sealed.ok) return;
    expect(sealed.error.code).toBe('unavailable');
    expect(sealed.error.message).toContain('Vault is sealed');
    expect(sealed.attempts).toBe(3);
    expect(seen('kv.read') - reads).toBe(3);
    expect(sealed.set).toBe(good2);
    expect(l.current).toBe(good2);
    await fake!.clearFaults();

    await seed('outage', { b: key() });
    const changed = await l.refresh();
    expect(changed).toMatchObject({ ok: true, changed: true, attempts: 1 });
    expect(l.current!.version).toBe('2');
    expect(l.health().lastError).toBeUndefined();
  });

  it.skipIf(REAL)('429 twice, then an answer: SecretLoader retries and succeeds on the third attempt', async () => {
    await seed('throttled', { a: key() });
    const l = loader(source({ path: `${base}/throttled`, defaults: { models: ['m'] } }), { attempts: 4 });
    await fake!.setFault({ kind: 'rate-limit', route: 'kv.read', count: 2 });
    const status429 = fake!.counters().status['429'] ?? 0;
    const r = await l.refresh();
    expect(r).toMatchObject({ ok: true, attempts: 3 });
    expect(fake!.counters().status['429']! - status429).toBe(2);

    await fake!.setFault({ kind: 'rate-limit', route: 'kv.read' });
    const e = await failure(source({ path: `${base}/throttled` }).load());
    expect(e.code).toBe('throttled');
    expect(e.retryable).toBe(true);
  });

  it.skipIf(REAL)('an answer slower than timeoutMs is unavailable, the abandoned request is closed, and a slow login is not wasted', async () => {
    await seed('slow', { a: key() });
    const l = loader(source({ path: `${base}/slow`, defaults: { models: ['m'] } }), { attempts: 1, timeoutMs: 250 });
    await fake!.setFault({ kind: 'latency', route: 'kv.read', ms: 1500, count: 1 });
    const aborted = fake!.counters().aborted;
    const started = Date.now();
    const r = await l.refresh();
    expect(Date.now() - started).toBeLessThan(1400); // the answer takes 1500 ms
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.error.code).toBe('unavailable');
    expect(r.error.message).toContain('no answer within 250 ms');
    // the source closed the connection when the loader's signal fired: the fake saw the client go
    await vi.waitFor(() => expect(fake!.counters().aborted - aborted).toBe(1), { timeout: 3000, interval: 20 });
    expect(await l.refresh()).toMatchObject({ ok: true, attempts: 1 });

    // a login slower than the timeout: the load fails, the login completes, the next load uses it
    const role = await appRole({ policies: [await policy(readWrite())], ttl: '60s' });
    const viaRole = loader(source({ path: `${base}/slow`, defaults: { models: ['m'] }, auth: { method: 'approle', roleId: role.roleId, secretId: role.secretId } }), { attempts: 1, timeoutMs: 250 });
    await fake!.setFault({ kind: 'latency', route: 'approle.login', ms: 500, count: 1 });
    const logins = fake!.counters().logins;
    const slow = await viaRole.refresh();
    expect(slow.ok).toBe(false);
    await vi.waitFor(() => expect(fake!.counters().logins - logins).toBe(1), { timeout: 2000, interval: 20 });
    expect(await viaRole.refresh()).toMatchObject({ ok: true });
    expect(fake!.counters().logins - logins).toBe(1);
  });

  it.skipIf(REAL)('AppRole: a failed renewal is logged and the next load logs in again', async () => {
    await seed('renew-fails', { a: key() });
    const role = await appRole({ policies: [await policy(readWrite())], ttl: '2s' });
    const l = sink();
    const src = source({ path: `${base}/renew-fails`, defaults: { models: ['m'] }, auth: { method: 'approle', roleId: role.roleId, secretId: role.secretId } }, l.logger);
    await src.load();
    await fake!.setFault({ kind: 'error', status: 500, route: 'token.renew-self', count: 1 });
    await vi.waitFor(() => expect(logged(l, 'Vault token renewal failed: logging in again at the next load')).toBe(1), { timeout: 3000, interval: 50 });
    const line = l.lines.find((x) => x.includes('renewal failed'))!;
    expect(JSON.parse(line)).toMatchObject({ level: 40, code: 'unavailable' });
    expect(await src.load()).toMatchObject({ version: '1' });
    expect(logged(l, 'logged in to Vault with AppRole')).toBe(2);
  });

  it('config: VAULT_ADDR and VAULT_TOKEN are the defaults; missing ones are clear config errors; describe holds no credential', async () => {
    await seed('env', { a: key() });
    try {
      vi.stubEnv('VAULT_ADDR', addr);
      vi.stubEnv('VAULT_TOKEN', root);
      const fromEnv = new VaultSource({ type: 'vault', path: `${base}/env`, defaults: { models: ['m'] } });
      sources.push(fromEnv);
      expect(fromEnv.describe).toBe(`vault kv2 secret/${base}/env at ${addr}`);
      expect((await fromEnv.load()).version).toBe('1');

      vi.stubEnv('VAULT_ADDR', '');
      const noAddr = (() => {
        try {
          new VaultSource({ type: 'vault', path: 'x' });
        } catch (e) {
          return e as SecretSourceError;
        }
        throw new Error('expected a config error');
      })();
      expect(noAddr.code).toBe('config');
      expect(noAddr.message).toContain('no Vault address: set endpoint in the source config, or VAULT_ADDR');

      vi.stubEnv('VAULT_TOKEN', '');
      expect(() => new VaultSource({ type: 'vault', endpoint: addr, path: 'x' })).toThrow(/no Vault token: set VAULT_TOKEN/);
      expect(() => new VaultSource({ type: 'vault', endpoint: 'ftp://vault', path: 'x', auth: { method: 'token', token: root } })).toThrow(/http:\/\/ or https:\/\//);
      expect(() => new VaultSource({ type: 'vault', endpoint: addr, path: 'a/../b', auth: { method: 'token', token: root } })).toThrow(/path/);
      expect(() => new VaultSource({ type: 'vault', endpoint: addr, path: 'x', auth: { method: 'token', token: root }, defaults: { rpm: -1 } })).toThrow(/defaults\.rpm/);
    } finally {
      vi.unstubAllEnvs();
    }

    const withUser = new VaultSource({ type: 'vault', endpoint: addr.replace('://', '://admin:hunter2-password@'), path: 'x', auth: { method: 'token', token: root } });
    expect(withUser.describe).not.toContain('hunter2');

    const parsed = VaultSourceConfigSchema.parse({ type: 'vault', path: 'keypool/openai' });
    expect(parsed).toEqual({ type: 'vault', path: 'keypool/openai', mount: 'secret', auth: { method: 'token' }, renew: true });
    expect(VaultSourceConfigSchema.parse({ type: 'vault', path: 'p', auth: { method: 'approle', roleId: 'r', secretId: 's' } }).auth).toEqual({ method: 'approle', roleId: 'r', secretId: 's', mount: 'approle' });
    expect(VaultSourceConfigSchema.safeParse({ type: 'vault', path: 'p', tokn: 'x' }).success).toBe(false);
    expect(VaultSourceConfigSchema.safeParse({ type: 'vault', path: 'p', auth: { method: 'approle', roleId: 'r' } }).success).toBe(false);
    for (const [field, schema] of Object.entries(VaultSourceConfigSchema.shape)) expect(schema.description, field).toBeTruthy();
  });

  it('no error message, error object or log line holds a token, a role or secret ID, or a key secret', () => {
    expect(errors.length).toBeGreaterThanOrEqual(REAL ? 12 : 18); // the check below looked at enough errors to mean something
    const logText = sinks.map((s) => s.text).join('');
    expect(logText.length).toBeGreaterThan(0);
    const leaks: string[] = [];
    for (const s of sensitive) {
      for (const e of errors) {
        if (inspect(e, { depth: 8, showHidden: true }).includes(s)) leaks.push(`error "${e.message}" holds ${s.slice(0, 6)}...`);
      }
      if (logText.includes(s)) leaks.push(`the log holds ${s.slice(0, 6)}...`);
    }
    expect(leaks).toEqual([]);
    expect(errors.every((e) => e.cause === undefined || isSecretSourceError(e.cause))).toBe(true);
  });
});
