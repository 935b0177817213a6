/**
 * EnvSource: numbered variables with their settings, one JSON variable, defaults, and errors that
 * name the variable to fix without quoting any value.
 */
import { keyIdOf } from '@keypool/core';
import { describe, expect, it } from 'vitest';
import { defaultName, EnvSource, EnvSourceConfigSchema } from '../src/env.js';
import { isSecretSourceError, SecretLoader, type SecretSource, type SecretSourceError } from '../src/index.js';

const S1 = 'sk-env-numbered-secret-0000000001';
const S2 = 'sk-env-numbered-secret-0000000002';
const S7 = 'sk-env-numbered-secret-0000000007';
const J1 = 'sk-env-json-secret-00000000000001';
const J2 = 'sk-env-json-secret-00000000000002';

async function failure(p: Promise<unknown>): Promise<SecretSourceError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!isSecretSourceError(e)) throw new Error(`expected a SecretSourceError, got ${String(e)}`);
  return e;
}

describe('EnvSource', () => {
  it('numbered variables (gaps, sorted by number, per-key settings and OPTIONS) and a JSON document together, with defaults', async () => {
    const env: NodeJS.ProcessEnv = {
      // out of order and with gaps: 7, 1, 2
      KEYPOOL_OPENAI_KEY_7: S7,
      KEYPOOL_OPENAI_KEY_7_OPTIONS: JSON.stringify({ models: ['gpt-4o'], tpm: 200000, rpmBurst: 9, rpm: 1 }),
      KEYPOOL_OPENAI_KEY_7_RPM: '90', // a variable wins over the same field in OPTIONS
      KEYPOOL_OPENAI_KEY_1: `  ${S1}\n`, // surrounding whitespace is not part of a key
      KEYPOOL_OPENAI_KEY_1_NAME: 'main',
      KEYPOOL_OPENAI_KEY_1_MODELS: 'gpt-4o, gpt-4o-mini,',
      KEYPOOL_OPENAI_KEY_1_PROVIDER: 'azure',
      KEYPOOL_OPENAI_KEY_1_BASE_URL: 'https://example.openai.azure.com/v1',
      KEYPOOL_OPENAI_KEY_1_RPM: '500',
      KEYPOOL_OPENAI_KEY_1_TPM: '100000',
      KEYPOOL_OPENAI_KEY_1_MAX_CONCURRENT: '12',
      KEYPOOL_OPENAI_KEY_1_WEIGHT: '0.5',
      KEYPOOL_OPENAI_KEY_1_BUDGET_USD: '25.5',
      KEYPOOL_OPENAI_KEY_1_BUDGET_PERIOD: 'day',
      KEYPOOL_OPENAI_KEY_2: S2,
      KEYPOOL_KEYS: JSON.stringify({ keys: [{ secret: J1, name: 'json-a', models: ['o3'] }, { secret: J2 }] }),
      UNRELATED: 'x',
      KEYPOOL_OPENAI_KEYS_1: 'not ours: another prefix',
    };
    const src = new EnvSource({ prefix: 'KEYPOOL_OPENAI_KEY', json: 'KEYPOOL_KEYS', defaults: { models: ['gpt-4o-mini'], rpm: 60 }, env });
    expect(src.kind).toBe('env');
    expect((src as SecretSource).write).toBeUndefined();
    expect(src.describe).toBe('env KEYPOOL_OPENAI_KEY_<n> + KEYPOOL_KEYS');
    const set = await src.load();
    expect(set.keys.map((k) => k.secret)).toEqual([S1, S2, S7, J1, J2]);
    expect(set.keys[0]).toEqual({
      secret: S1,
      name: 'main',
      models: ['gpt-4o', 'gpt-4o-mini'],
      provider: 'azure',
      baseURL: 'https://example.openai.azure.com/v1',
      rpm: 500,
      tpm: 100000,
      tokenWindow: 0,
      maxConcurrent: 12,
      weight: 0.5,
      budget: { usd: 25.5, period: 'day' },
    });
    // defaults fill what a key does not give; the name defaults to a readable one
    expect(set.keys[1]).toMatchObject({ name: 'openai-2', models: ['gpt-4o-mini'], rpm: 60, provider: 'openai', weight: 1 });
    expect(set.keys[2]).toMatchObject({ name: 'openai-7', models: ['gpt-4o'], rpm: 90, tpm: 200000, rpmBurst: 9 });
    expect(set.keys[3]).toMatchObject({ name: 'json-a', models: ['o3'], rpm: 60 });
    expect(set.keys[4]).toMatchObject({ models: ['gpt-4o-mini'], rpm: 60 });
    expect(set.version).toMatch(/^[0-9a-f]{16}$/);
    // the same variables give the same version
    expect((await src.load()).version).toBe(set.version);
  });

  it('a flat JSON map alone; prefix alone', async () => {
    const json = new EnvSource({ json: 'K', defaults: { models: ['m'] }, env: { K: JSON.stringify({ alpha: J1, beta: J2 }) } });
    expect((await json.load()).keys.map((k) => [k.name, k.secret])).toEqual([
      ['alpha', J1],
      ['beta', J2],
    ]);
    const numbered = new EnvSource({ prefix: 'GROQ_API_KEY', env: { GROQ_API_KEY_3: S1, GROQ_API_KEY_3_MODELS: 'llama' } });
    expect((await numbered.load()).keys).toMatchObject([{ name: 'groq-3', secret: S1, models: ['llama'] }]);
  });

  it('default names', () => {
    expect(defaultName('KEYPOOL_OPENAI_KEY', 1)).toBe('openai-1');
    expect(defaultName('OPENAI_API_KEYS', 12)).toBe('openai-12');
    expect(defaultName('DEEPSEEK', 2)).toBe('deepseek-2');
    expect(defaultName('KEYPOOL_KEY', 4)).toBe('key-4');
    expect(defaultName('KEYPOOL', 4)).toBe('keypool-4');
  });

  it('a reload sees changed variables and gives a new version (through the loader too)', async () => {
    const env: NodeJS.ProcessEnv = { P_1: S1, P_1_MODELS: 'a' };
    const src = new EnvSource({ prefix: 'P', env });
    const loader = new SecretLoader(src);
    const first = await loader.start();
    expect(first.keys.map((k) => keyIdOf(k.secret))).toEqual([keyIdOf(S1)]);
    env.P_2 = S2;
    env.P_2_MODELS = 'b';
    const r = await loader.refresh();
    expect(r.ok && r.changed).toBe(true);
    expect(r.set!.keys.map((k) => k.secret)).toEqual([S1, S2]);
    expect(r.set!.version).not.toBe(first.version);
    env.P_1_RPM = '5'; // a setting alone changes the version too
    const again = await src.load();
    expect(again.version).not.toBe(r.set!.version);
    expect(again.keys[0]!.rpm).toBe(5);
  });

  it('process.env by default, read at every load', async () => {
    const name = `KP_ENV_TEST_${process.pid}`;
    const src = new EnvSource({ prefix: name });
    process.env[`${name}_1`] = S1;
    process.env[`${name}_1_MODELS`] = 'a';
    try {
      expect((await src.load()).keys).toHaveLength(1);
      process.env[`${name}_5`] = S2;
      process.env[`${name}_5_MODELS`] = 'a';
      expect((await src.load()).keys).toHaveLength(2);
    } finally {
      for (const k of Object.keys(process.env)) if (k.startsWith(name)) delete process.env[k];
    }
  });

  describe('errors name the variable and what to write, never a value', () => {
    const cases: [string, NodeJS.ProcessEnv, string, RegExp][] = [
      ['a non-number RPM', { P_1: S1, P_1_MODELS: 'a', P_1_RPM: 'lots-sk-env-numbered' }, 'invalid', /P_1_RPM must be a whole number >= 0: write requests per minute, e\.g\. 500/],
      ['a negative TPM', { P_1: S1, P_1_MODELS: 'a', P_1_TPM: '-3' }, 'invalid', /P_1_TPM must be a whole number >= 0/],
      ['a fractional MAX_CONCURRENT', { P_1: S1, P_1_MODELS: 'a', P_1_MAX_CONCURRENT: '1.5' }, 'invalid', /P_1_MAX_CONCURRENT must be a whole number >= 0/],
      ['a zero WEIGHT', { P_1: S1, P_1_MODELS: 'a', P_1_WEIGHT: '0' }, 'invalid', /P_1_WEIGHT must be a number > 0/],
      ['a bad BUDGET_PERIOD', { P_1: S1, P_1_MODELS: 'a', P_1_BUDGET_USD: '5', P_1_BUDGET_PERIOD: 'week' }, 'invalid', /P_1_BUDGET_PERIOD: Invalid option: expected one of "day"\|"month"\|"total"/],
      ['BUDGET_PERIOD without BUDGET_USD', { P_1: S1, P_1_MODELS: 'a', P_1_BUDGET_PERIOD: 'day' }, 'invalid', /P_1_BUDGET_PERIOD needs P_1_BUDGET_USD/],
      ['a bad BASE_URL', { P_1: S1, P_1_MODELS: 'a', P_1_BASE_URL: 'not a url' }, 'invalid', /P_1_BASE_URL: /],
      ['no models anywhere', { P_1: S1 }, 'invalid', /key P_1 has no models: set P_1_MODELS \(or defaults\.models in the config\)/],
      ['a short secret', { P_1: 'sk-abc', P_1_MODELS: 'a' }, 'invalid', /P_1: must be the provider API key \(8 characters or more\)/],
      ['an empty secret', { P_1: '  ', P_1_MODELS: 'a' }, 'invalid', /P_1 is empty: set it to the provider key, or unset it/],
      ['OPTIONS not JSON', { P_1: S1, P_1_OPTIONS: `{"models": ["a"], "x": "${S2}"` }, 'invalid', /P_1_OPTIONS is not valid JSON: write a JSON object of settings/],
      ['OPTIONS with the secret', { P_1: S1, P_1_OPTIONS: JSON.stringify({ secret: S2, models: ['a'] }) }, 'invalid', /P_1_OPTIONS must not hold the secret: the secret is P_1/],
      ['OPTIONS with an unknown field', { P_1: S1, P_1_OPTIONS: JSON.stringify({ models: ['a'], rpn: 5 }) }, 'invalid', /P_1_OPTIONS: Unrecognized key: "rpn"/],
      ['a misspelt setting', { P_1: S1, P_1_MODELS: 'a', P_1_RPN: '5' }, 'config', /P_1_RPN: unknown setting RPN; the settings of key 1 are P_1_ followed by NAME, MODELS/],
      ['a setting named like an Object method', { P_1: S1, P_1_MODELS: 'a', P_1_toString: '5' }, 'config', /P_1_toString: unknown setting toString/],
      ['settings without their secret', { P_1: S1, P_1_MODELS: 'a', P_4_MODELS: 'a' }, 'config', /P_4_MODELS set but P_4 \(the secret of key 4\) is not/],
      ['two variables for one number', { P_1: S1, P_01: S2, P_1_MODELS: 'a' }, 'config', /P_0?1 and P_0?1 both name key 1: keep one/],
      ['no numbered variable at all', { OTHER: S1 }, 'config', /no variable P_1, P_2, \.\.\. is set: set P_1 to a provider key/],
      ['the same secret twice', { P_1: S1, P_2: S1, P_1_MODELS: 'a', P_2_MODELS: 'a' }, 'invalid', /P_2 holds the same secret as P_1: list each key once/],
    ];
    it.each(cases)('%s', async (_what, env, code, message) => {
      const e = await failure(new EnvSource({ prefix: 'P', env }).load());
      expect(e.code).toBe(code);
      expect(e.retryable).toBe(false);
      expect(e.message).toMatch(message);
      expect(e.message.startsWith('env P_<n>: ')).toBe(true);
      for (const v of Object.values(env)) if (v && v.length >= 6 && !/^[A-Z0-9_]+$/.test(v)) expect(e.message).not.toContain(v.trim());
      for (const s of [S1, S2, 'lots', 'week', 'not a url']) expect(e.message).not.toContain(s);
    });

    it('the JSON variable: named but absent is a config error; not JSON or an invalid document is invalid', async () => {
      const absent = await failure(new EnvSource({ json: 'KEYPOOL_KEYS', env: {} }).load());
      expect(absent.code).toBe('config');
      expect(absent.message).toMatch(/KEYPOOL_KEYS is not set: set it to a JSON key document/);
      const empty = await failure(new EnvSource({ json: 'KEYPOOL_KEYS', env: { KEYPOOL_KEYS: '' } }).load());
      expect(empty.message).toMatch(/KEYPOOL_KEYS is not set \(it is empty\)/);
      const notJson = await failure(new EnvSource({ json: 'KEYPOOL_KEYS', env: { KEYPOOL_KEYS: `{"a": "${J1}",` } }).load());
      expect(notJson.code).toBe('invalid');
      expect(notJson.message).toBe('env KEYPOOL_KEYS: KEYPOOL_KEYS is not valid JSON: set it to a key document, e.g. {"keys": [{"secret": "...", "models": ["gpt-4o-mini"]}]}');
      const badDoc = await failure(new EnvSource({ json: 'KEYPOOL_KEYS', env: { KEYPOOL_KEYS: JSON.stringify({ keys: [{ secret: J1, models: ['a'], rpm: 'x' }, { secret: J2 }] }) } }).load());
      expect(badDoc.code).toBe('invalid');
      expect(badDoc.message).toMatch(/^env KEYPOOL_KEYS: KEYPOOL_KEYS: invalid key document: keys\[0\]\.rpm: .*keys\[1\]\.models: /);
      expect(badDoc.message).not.toContain(J1);
      // the same secret in a numbered variable and in the JSON document
      const dup = await failure(new EnvSource({ prefix: 'P', json: 'K', env: { P_1: J1, P_1_MODELS: 'a', K: JSON.stringify({ x: J1 }) }, defaults: { models: ['a'] } }).load());
      expect(dup.message).toMatch(/K keys\[0\] holds the same secret as P_1/);
      expect(dup.message).not.toContain(J1);
    });
  });

  it('config: strict schema, prefix or json required, variable names checked, defaults validated', () => {
    expect(EnvSourceConfigSchema.safeParse({ type: 'env', prefix: 'A' }).success).toBe(true);
    expect(EnvSourceConfigSchema.safeParse({ type: 'env', json: 'A', defaults: { models: ['x'], rpm: 5 } }).success).toBe(true);
    expect(EnvSourceConfigSchema.safeParse({ type: 'env' }).success).toBe(false);
    expect(EnvSourceConfigSchema.safeParse({ type: 'env', prefix: 'A', extra: 1 }).success).toBe(false);
    expect(EnvSourceConfigSchema.safeParse({ type: 'env', prefix: 'A-B' }).success).toBe(false);
    expect(EnvSourceConfigSchema.safeParse({ type: 'env', prefix: 'A', defaults: { rpm: -1 } }).success).toBe(false);
    expect(EnvSourceConfigSchema.safeParse({ type: 'env', prefix: 'A', defaults: { secret: 'sk-xxxxxxxxxx' } }).success).toBe(false);
    // parsing does not fill the key schema's own defaults into `defaults`
    expect(EnvSourceConfigSchema.parse({ type: 'env', prefix: 'A', defaults: { rpm: 5 } }).defaults).toEqual({ rpm: 5 });
    // every field is described (the generated config reference shows it)
    for (const [k, v] of Object.entries(EnvSourceConfigSchema.shape)) expect(v.description, k).toBeTruthy();
    expect(() => new EnvSource({})).toThrow(/give prefix \(numbered variables\), json/);
    expect(() => new EnvSource({ prefix: 'P', defaults: { rpm: 'x' } as never })).toThrow(/defaults\.rpm/);
  });

  it('an aborted load does not read', async () => {
    const ac = new AbortController();
    ac.abort();
    await expect(new EnvSource({ prefix: 'P', env: { P_1: S1, P_1_MODELS: 'a' } }).load({ signal: ac.signal })).rejects.toThrow();
  });
});
