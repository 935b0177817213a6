/**
 * The `keypool` binary (a child process) against a gateway running in the test process, over the
 * test Redis (standalone or cluster) and the fake upstream: what an operator sees and does.
 */
import { hostname } from 'node:os';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyIdOf } from '@keypool/core';
import { ADMIN, startGateway, type TestGateway } from './gateway.js';
import { keypool, type Ran } from './run.js';

const A = 'sk-test-aaaaaaaaaaaaaaaaaaaaaaaa1111';
const B = 'sk-test-bbbbbbbbbbbbbbbbbbbbbbbb2222';
const MODELS = ['gpt-4o-mini', 'gpt-4o'];

let g: TestGateway;
/** Every output of every command run here, to check that no secret ever shows. */
const outputs: Ran[] = [];

beforeAll(async () => {
  g = await startGateway({
    fakeKeys: [
      { key: A, name: 'a' },
      { key: B, name: 'b' },
    ],
    keys: [
      { secret: A, name: 'alpha', models: MODELS, rpm: 600, maxConcurrent: 8 },
      { secret: B, name: 'beta', models: MODELS, budget: { usd: 10, period: 'day' } },
    ],
  });
});
afterAll(async () => {
  await g?.stop();
});

/** `keypool <args>` against the test gateway, with the admin token in the environment. */
async function kp(args: string[], env: Record<string, string | undefined> = {}): Promise<Ran> {
  const r = await keypool(args, { env: { KEYPOOL_URL: g.url, KEYPOOL_ADMIN_TOKEN: ADMIN, ...env } });
  outputs.push(r);
  return r;
}

const sdk = (apiKey: string) => new OpenAI({ apiKey, baseURL: `${g.url}/v1`, maxRetries: 0 });
const ask = { model: 'gpt-4o-mini', messages: [{ role: 'user' as const, content: 'hello there' }], max_tokens: 8 };

describe('keypool status', () => {
  it('prints the pool, Redis and one row per key with its name, id, hint and state', async () => {
    const r = await kp(['status']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^pool:\\s+${g.pool.name}$`, 'm'));
    expect(r.stdout).toMatch(/^redis:\s+ok, mode shared$/m);
    const rows = r.stdout.split('\n');
    const header = rows.find((l) => l.startsWith('NAME'))!;
    expect(header.split(/\s{2,}/)).toEqual(['NAME', 'ID', 'HINT', 'STATE', 'IN FLIGHT', 'REQ LEFT/RPM', 'TOK LEFT/TPM', 'BUDGET LEFT', 'SPEND', 'P50/P99 MS', 'ERRORS']);
    const alpha = rows.find((l) => l.startsWith('alpha '))!.split(/\s{2,}/);
    expect(alpha.slice(0, 5)).toEqual(['alpha', keyIdOf(A, g.fake.url), 'sk-...1111', 'active', '0/8']);
    expect(alpha[5]).toMatch(/^\d+\/600$/);
    const beta = rows.find((l) => l.startsWith('beta '))!.split(/\s{2,}/);
    expect(beta.slice(0, 4)).toEqual(['beta', keyIdOf(B, g.fake.url), 'sk-...2222', 'active']);
    expect(beta).toContain('$10.00 of $10.00/day');
    // not a terminal: no colours
    expect(r.stdout).not.toContain('\u001b[');
    // every line of the table is as wide as its content needs: the columns line up under the header
    const col = header.indexOf('STATE');
    expect(rows.filter((l) => /^(alpha|beta) /.test(l)).map((l) => l.slice(col, col + 6))).toEqual(['active', 'active']);
  });

  it('--json prints the gateway status as JSON', async () => {
    const r = await kp(['status', '--json']);
    expect(r.code).toBe(0);
    const st = JSON.parse(r.stdout);
    expect(st.pool).toBe(g.pool.name);
    expect(st.keys.map((k: { name: string }) => k.name)).toEqual(['alpha', 'beta']);
    expect(st.gateway.pid).toBe(process.pid);
  });

  it('status needs no admin token', async () => {
    const r = await kp(['status'], { KEYPOOL_ADMIN_TOKEN: undefined });
    expect(r.code).toBe(0);
  });

  it('a gateway with server.statusToken: status says which token to set, and reads with it or the admin token', async () => {
    const STATUS = 'status-token-for-cli-tests-0123456789';
    const closed = await startGateway({ fakeKeys: [{ key: A, name: 'a' }], keys: [{ secret: A, name: 'alpha', models: MODELS }], settings: { statusToken: STATUS } });
    try {
      const run = async (env: Record<string, string | undefined>) => {
        const r = await keypool(['status'], { env: { KEYPOOL_URL: closed.url, KEYPOOL_ADMIN_TOKEN: undefined, KEYPOOL_STATUS_TOKEN: undefined, ...env } });
        outputs.push(r);
        return r;
      };
      const refused = await run({});
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/needs its status token for \/status: set KEYPOOL_STATUS_TOKEN \(or pass --status-token\)/);
      for (const env of [{ KEYPOOL_STATUS_TOKEN: STATUS }, { KEYPOOL_ADMIN_TOKEN: ADMIN }]) {
        const r = await run(env);
        expect.soft(r.code, Object.keys(env)[0]).toBe(0);
        expect.soft(r.stdout).toMatch(new RegExp(`^pool:\\s+${closed.pool.name}$`, 'm'));
      }
      expect((await run({ KEYPOOL_STATUS_TOKEN: 'wrong-status-token-0000000000' })).code).toBe(1);
    } finally {
      await closed.stop();
    }
  });
});

describe('keypool keys', () => {
  it('keys list prints the same rows; disable by id shows in status, enable by name; the audit log names the actor', async () => {
    const list = await kp(['keys', 'list']);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(new RegExp(`^alpha\\s+${keyIdOf(A, g.fake.url)}\\s+sk-\\.\\.\\.1111\\s+active`, 'm'));
    const json = JSON.parse((await kp(['keys', 'list', '--json'])).stdout);
    expect(json.keys).toHaveLength(2);

    const off = await kp(['keys', 'disable', keyIdOf(A, g.fake.url)]);
    expect(off.code).toBe(0);
    expect(off.stdout).toBe(`disabled: key alpha (${keyIdOf(A, g.fake.url)}), state now disabled\n`);
    expect((await kp(['status'])).stdout).toMatch(new RegExp(`^alpha\\s+${keyIdOf(A, g.fake.url)}\\s+sk-\\.\\.\\.1111\\s+disabled\\s`, 'm'));
    expect((await g.pool.status()).keys.find((k) => k.name === 'alpha')!.state).toBe('disabled');

    const on = await kp(['keys', 'enable', 'alpha']);
    expect(on.code).toBe(0);
    expect((await g.pool.status()).keys.find((k) => k.name === 'alpha')!.state).toBe('active');

    const audit = g.logs.lines.map((l) => JSON.parse(l)).filter((l) => l.action === 'key-disable');
    expect(audit).toHaveLength(1);
    expect(audit[0].actor).toMatch(new RegExp(`@${hostname().replace(/[^\w.@:-]/g, '?').replace(/\./g, '\\.')}$`));
  });

  it('keys set changes the limits (PATCH) and prints the key; drain, reset and reset-budget act', async () => {
    const r = await kp(['keys', 'set', 'beta', '--rpm', '120', '--max-concurrent', '3', '--weight', '2', '--budget-usd', '25']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^updated key beta \([0-9a-f]{16}\): rpm, maxConcurrent, weight, budget$/m);
    expect(r.stdout).toMatch(/^beta\s.*\s0\/3\s+\d+\/120\s.*\$25\.00\/day/m);
    const beta = (await g.pool.status()).keys.find((k) => k.name === 'beta')!;
    expect(beta.limits).toMatchObject({ rpm: 120, maxConcurrent: 3, weight: 2, budgetUsd: 25, budgetPeriod: 'day' });

    for (const action of ['drain', 'enable', 'reset', 'reset-budget']) {
      const a = await kp(['keys', action, 'beta', '--json']);
      expect(a.code, action).toBe(0);
      expect(JSON.parse(a.stdout).id).toBe(keyIdOf(B, g.fake.url));
    }
    expect((await g.pool.status()).keys.find((k) => k.name === 'beta')!.state).toBe('active');
  });

  it("keys set refuses a key's base URL and provider (exit 2, what to do instead) and changes nothing", async () => {
    for (const flag of [['--base-url', 'http://attacker.example/v1'], ['--provider', 'evil']]) {
      const r = await kp(['keys', 'set', 'alpha', ...flag, '--rpm', '1']);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/^error: a key's base URL and provider cannot be changed through the admin API: they come with its secret from the config file or secret source, .* Change them there \(the key gets a new id/);
      expect(r.stdout).toBe('');
    }
    expect((await g.pool.status()).keys.find((k) => k.name === 'alpha')).toMatchObject({ baseURL: g.fake.url, provider: 'openai', limits: { rpm: 600 } });
  });

  it('an unknown key is the API error message, exit 1', async () => {
    const r = await kp(['keys', 'disable', 'no-such-key']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("error: No key with id 'no-such-key' in the pool (keypool keys list shows the ids).\n");
    expect(r.stdout).toBe('');
  });
});

describe('keypool tokens', () => {
  it('create prints the token once on stdout; it works with the openai SDK; list shows it without the token; revoke makes it 401', async () => {
    const made = await kp(['tokens', 'create', '--name', 'cli-test', '--rpm', '600', '--budget-usd', '5', '--budget-period', 'day', '--models', 'gpt-4o-mini,gpt-4o']);
    expect(made.code).toBe(0);
    expect(made.stdout).toMatch(/^kpt_[A-Za-z0-9_-]{43}\n$/);
    const token = made.stdout.trim();
    expect(made.stderr).toMatch(/^created gateway token [0-9a-f]{12} \(cli-test\)\. It will not be shown again: store it now\.\n$/);
    const id = /token ([0-9a-f]{12})/.exec(made.stderr)![1]!;

    const chat = await sdk(token).chat.completions.create(ask);
    expect(chat.choices[0]!.message.content!.length).toBeGreaterThan(0);
    expect(chat.usage!.completion_tokens).toBe(8);

    const list = await kp(['tokens', 'list']);
    expect(list.code).toBe(0);
    const header = list.stdout.split('\n')[0]!;
    expect(header.split(/\s{2,}/)).toEqual(['ID', 'NAME', 'HINT', 'RPM', 'BUDGET', 'MODELS', 'SPEND', 'REQUESTS', 'REVOKED']);
    const row = list.stdout.split('\n').find((l) => l.startsWith(id))!.split(/\s{2,}/);
    expect(row.slice(0, 6)).toEqual([id, 'cli-test', `kpt_...${token.slice(-4)}`, '600 (burst 20)', '$5.00/day', 'gpt-4o,gpt-4o-mini']);
    expect(row.at(-1)).toBe('no');
    await expect.poll(async () => JSON.parse((await kp(['tokens', 'list', '--json'])).stdout).tokens.find((t: { id: string }) => t.id === id).requests).toBe(1);

    const revoked = await kp(['tokens', 'revoke', id]);
    expect(revoked.code).toBe(0);
    expect(revoked.stdout).toBe(`revoked: gateway token ${id}; requests with it now get 401\n`);
    await expect(sdk(token).chat.completions.create(ask)).rejects.toMatchObject({ status: 401 });
    expect((await kp(['tokens', 'list'])).stdout.split('\n').find((l) => l.startsWith(id))).toMatch(/yes, \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/);

    // the token was printed once: by create, nowhere else
    expect(outputs.filter((o) => (o.stdout + o.stderr).includes(token))).toEqual([made]);
  });

  it('revoke by name; an invalid spec is the API error, exit 1', async () => {
    const made = await kp(['tokens', 'create', '--name', 'by-name']);
    const token = made.stdout.trim();
    expect((await kp(['tokens', 'revoke', 'by-name'])).code).toBe(0);
    await expect(sdk(token).chat.completions.create(ask)).rejects.toMatchObject({ status: 401 });

    const bad = await kp(['tokens', 'create', '--name', 'x'.repeat(101)]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^error: invalid gateway token .*\n\s+- token\.name: /);
  });
});

describe('admin API refusals and failures', () => {
  it('a wrong admin token: exit 1 and how to set it', async () => {
    for (const args of [['keys', 'list'], ['keys', 'disable', 'alpha'], ['tokens', 'create', '--name', 'nope'], ['tokens', 'list']]) {
      const r = await kp(args, { KEYPOOL_ADMIN_TOKEN: 'wrong-admin-token-0123456789abcdef' });
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr).toBe(
        `error: the gateway at ${g.url} refused the admin token (401): set KEYPOOL_ADMIN_TOKEN (or pass --admin-token) to the gateway's server.adminToken\n`,
      );
      expect(r.stdout).toBe('');
    }
    // --admin-token wins over the environment
    expect((await kp(['keys', 'list', '--admin-token', ADMIN], { KEYPOOL_ADMIN_TOKEN: 'wrong-admin-token-0123456789abcdef' })).code).toBe(0);
    expect((await g.pool.tokens.list()).some((t) => t.name === 'nope')).toBe(false);
  });

  it('a gateway whose admin API is disabled: exit 1 and how to enable it', async () => {
    const r = await kp(['keys', 'list', '--url', g.noAdminUrl]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: the admin API of the gateway at http:\/\/127\.0\.0\.1:\d+ is disabled: start the gateway with server\.adminToken .*KEYPOOL_ADMIN_TOKEN/);
  });

  it('no admin token at all: a usage error (exit 2) before any request', async () => {
    const r = await kp(['tokens', 'list'], { KEYPOOL_ADMIN_TOKEN: undefined });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe("error: no admin token: set KEYPOOL_ADMIN_TOKEN (or pass --admin-token) to the gateway's server.adminToken\n");
  });

  it('no command ever printed a key secret or the admin token', () => {
    expect(outputs.length).toBeGreaterThan(10);
    for (const o of outputs) {
      for (const secret of [A, B, ADMIN]) expect(o.stdout + o.stderr).not.toContain(secret);
    }
  });
});
