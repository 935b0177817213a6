/**
 * `keypool secrets ...` end to end on a file in a temp directory: init, add (the secret on stdin),
 * list, rotate, remove, rotate --encryption; usage errors exit 2, a tampered file exits 1; no
 * output stream ever holds a secret. Most runs are in-process (run() with the environment and stdin
 * of the test, as the binary would see them); a few run the real binary with a pipe on stdin.
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { hintOf, keyIdOf, systemClock } from '@keypool/core';
import { FileSource } from '@keypool/secrets';
import { afterAll, describe, expect, it } from 'vitest';
import { readSecretLine } from '../src/commands/secrets.js';
import { run } from '../src/program.js';
import { BIN, childEnv, REPO } from './run.js';

const PASS = 'cli test passphrase 8d2e41';
const NEW_PASS = 'the next passphrase c71b09';
const MASTER = '5e'.repeat(32);
const K1 = 'sk-proj-cli-secret-aaaaaaaaaaaaaaaa1111';
const K2 = 'gsk_cli-secret-bbbbbbbbbbbbbbbbbbbbbb2222';
const GROQ = 'https://api.groq.com/openai/v1';
const K1_NEW = 'sk-proj-cli-secret-cccccccccccccccc3333';
const K3 = 'sk-cli-secret-dddddddddddddddddddddd4444';
/** What no output may contain. */
const NEVER = [PASS, NEW_PASS, MASTER, K1, K2, K1_NEW, K3];

const dir = mkdtempSync(join(tmpdir(), 'keypool-cli-secrets-'));
let n = 0;
const fresh = () => join(dir, `secrets-${++n}.json`);

const SECRET_VARS = ['KEYPOOL_SECRETS_FILE', 'KEYPOOL_SECRETS_PASSPHRASE', 'KEYPOOL_SECRETS_MASTER_KEY', 'KEYPOOL_SECRETS_NEW_PASSPHRASE', 'KEYPOOL_SECRETS_NEW_MASTER_KEY'];

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Every stream of every run, checked for secrets at the end. */
const transcript: string[] = [];

afterAll(() => {
  const all = transcript.join('\n');
  expect(all.length).toBeGreaterThan(1000);
  for (const s of NEVER) expect(all, 'a secret in some output').not.toContain(s);
});

/**
 * `keypool secrets <args>` in this process: the environment has exactly the secrets variables of
 * `env` (others unset), stdin holds `stdin` (undefined: an empty stdin, as from /dev/null).
 */
async function secrets(args: string[], opts: { env?: Record<string, string>; stdin?: string | Readable } = {}): Promise<Ran> {
  const saved = Object.fromEntries(SECRET_VARS.map((k) => [k, process.env[k]]));
  for (const k of SECRET_VARS) delete process.env[k];
  Object.assign(process.env, opts.env ?? {});
  const stdin = typeof opts.stdin === 'object' ? opts.stdin : Readable.from(opts.stdin === undefined ? [] : [Buffer.from(opts.stdin)]);
  const real = Object.getOwnPropertyDescriptor(process, 'stdin')!;
  Object.defineProperty(process, 'stdin', { value: stdin, configurable: true });
  let stdout = '';
  let stderr = '';
  try {
    const code = await run(['secrets', ...args], { out: (s) => void (stdout += s), err: (s) => void (stderr += s), color: false, clock: systemClock });
    transcript.push(stdout, stderr);
    return { code, stdout, stderr };
  } finally {
    Object.defineProperty(process, 'stdin', real);
    for (const k of SECRET_VARS) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  }
}

/** The real binary, with `stdin` piped in (or /dev/null). */
function binary(args: string[], opts: { env?: Record<string, string>; stdin?: string } = {}): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const scrub = Object.fromEntries(SECRET_VARS.map((k) => [k, undefined]));
    const child = spawn(process.execPath, [BIN, 'secrets', ...args], { cwd: REPO, env: childEnv({ ...scrub, ...opts.env }), stdio: [opts.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (c) => (stdout += c));
    child.stderr!.on('data', (c) => (stderr += c));
    if (opts.stdin !== undefined) child.stdin!.end(opts.stdin);
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      transcript.push(stdout, stderr);
      resolve({ code, stdout, stderr });
    });
  });
}

const P = { KEYPOOL_SECRETS_PASSPHRASE: PASS };

async function ok(r: Promise<Ran>): Promise<Ran> {
  const ran = await r;
  expect(ran.code, `stderr: ${ran.stderr}`).toBe(0);
  return ran;
}

async function withKeys(env: Record<string, string> = P): Promise<string> {
  const file = fresh();
  await ok(secrets(['init', '--file', file], { env }));
  await ok(secrets(['add', '--file', file, '--name', 'openai-1', '--models', 'gpt-4o,gpt-4o-mini', '--rpm', '500', '--tpm', '200000'], { env, stdin: `${K1}\n` }));
  await ok(secrets(['add', '--file', file, '--name', 'groq-1', '--models', 'llama', '--provider', 'groq', '--base-url', 'https://api.groq.com/openai/v1'], { env, stdin: K2 }));
  return file;
}

interface ListedKey {
  name: string;
  id: string;
  hint: string;
  provider: string;
  baseURL: string;
  models: string[];
  rpm: number;
  tpm: number;
  maxConcurrent: number;
  weight: number;
  budget: { usd: number; period: string } | null;
}

async function listJson(file: string, env: Record<string, string> = P): Promise<{ file: string; version: string; encryption: string; keys: ListedKey[] }> {
  const r = await ok(secrets(['list', '--file', file, '--json'], { env }));
  return JSON.parse(r.stdout) as { file: string; version: string; encryption: string; keys: ListedKey[] };
}

describe('keypool secrets, end to end', () => {
  it('init, add (stdin), list, rotate <key>, remove, rotate --encryption; each as a gateway would load it', async () => {
    const file = fresh();
    const init = await ok(secrets(['init', '--file', file], { env: P }));
    expect(init.stdout).toBe(`created ${file}: empty, encrypted with the passphrase in KEYPOOL_SECRETS_PASSPHRASE. Add keys with keypool secrets add.\n`);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect((await ok(secrets(['list', '--file', file], { env: P }))).stdout).toBe(`no keys in ${file}: add one with keypool secrets add\n`);

    const add1 = await ok(
      secrets(['add', '--file', file, '--name', 'openai-1', '--models', 'gpt-4o,gpt-4o-mini', '--rpm', '500', '--tpm', '200000', '--max-concurrent', '8', '--budget-usd', '25', '--budget-period', 'day', '--weight', '2'], {
        env: P,
        stdin: `${K1}\n`,
      }),
    );
    expect(add1.stdout).toBe(`added key openai-1 (id ${keyIdOf(K1)}, ${hintOf(K1)}) to ${file}: 1 key(s). Processes reading the file take it at their next secrets refresh.\n`);
    expect(add1.stderr).toBe('');
    await ok(secrets(['add', '--file', file, '--name', 'groq-1', '--models', 'llama', '--provider', 'groq', '--base-url', 'https://api.groq.com/openai/v1'], { env: P, stdin: `\r\n  ${K2}  \r\n\r\n` }));

    // list: names, ids, hints, settings; never a secret
    const table = await ok(secrets(['list', '--file', file], { env: P }));
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME +ID +HINT +PROVIDER +MODELS +RPM +TPM +MAX CONC +WEIGHT +BUDGET +BASE URL$/);
    expect(lines[1]).toMatch(new RegExp(`^openai-1 +${keyIdOf(K1)} +sk-proj-\\.\\.\\.1111 +openai +gpt-4o,gpt-4o-mini +500 +200000 +8 +2 +\\$25\\.00/day +https://api\\.openai\\.com/v1$`));
    expect(lines[2]).toMatch(new RegExp(`^groq-1 +${keyIdOf(K2, GROQ)} +gsk_\\.\\.\\.2222 +groq +llama +- +- +- +1 +- +https://api\\.groq\\.com/openai/v1$`));
    expect(lines).toHaveLength(3);
    const listed = await listJson(file);
    expect(listed).toMatchObject({ file, encryption: 'passphrase', version: expect.stringMatching(/^[0-9a-f]{16}$/) });
    expect(listed.keys).toEqual([
      expect.objectContaining({ name: 'openai-1', id: keyIdOf(K1), hint: hintOf(K1), provider: 'openai', models: ['gpt-4o', 'gpt-4o-mini'], rpm: 500, tpm: 200000, maxConcurrent: 8, weight: 2, budget: { usd: 25, period: 'day' } }),
      expect.objectContaining({ name: 'groq-1', id: keyIdOf(K2, GROQ), provider: 'groq', baseURL: 'https://api.groq.com/openai/v1', rpm: 0, budget: null }),
    ]);
    for (const k of listed.keys) expect(Object.keys(k)).not.toContain('secret');

    // what a gateway's file source loads
    const source = new FileSource({ path: file, env: P });
    const loaded = await source.load();
    expect(loaded.keys.map((k) => k.secret)).toEqual([K1, K2]);
    expect(loaded.version).toBe(listed.version);

    // rotate one key's secret: new id, same settings, same place
    const rot = await ok(secrets(['rotate', 'openai-1', '--file', file], { env: P, stdin: K1_NEW }));
    expect(rot.stdout).toMatch(new RegExp(`^rotated key openai-1: new id ${keyIdOf(K1_NEW)} \\(sk-proj-\\.\\.\\.3333\\), was ${keyIdOf(K1)} \\(sk-proj-\\.\\.\\.1111\\)\\. .*drain the old one`));
    const afterRot = await listJson(file);
    expect(afterRot.keys.map((k) => k.id)).toEqual([keyIdOf(K1_NEW), keyIdOf(K2, GROQ)]);
    expect(afterRot.keys[0]).toEqual({ ...listed.keys[0], id: keyIdOf(K1_NEW), hint: hintOf(K1_NEW) });
    expect((await source.load()).keys.map((k) => k.secret)).toEqual([K1_NEW, K2]);

    // remove, by id
    const rm = await ok(secrets(['remove', keyIdOf(K2, GROQ), '--file', file], { env: P }));
    expect(rm.stdout).toBe(`removed key groq-1 (id ${keyIdOf(K2, GROQ)}) from ${file}: 1 key(s) left. Processes reading the file retire it at their next secrets refresh.\n`);
    expect((await listJson(file)).keys.map((k) => k.name)).toEqual(['openai-1']);

    // re-encrypt under a new passphrase: the old one no longer opens it, the new one does, keys the same
    const before = JSON.parse(readFileSync(file, 'utf8')) as { kdf: { salt: string }; iv: string };
    const re = await ok(secrets(['rotate', '--encryption', '--file', file], { env: { ...P, KEYPOOL_SECRETS_NEW_PASSPHRASE: NEW_PASS } }));
    expect(re.stdout).toBe(`re-encrypted ${file} under the new passphrase (KEYPOOL_SECRETS_NEW_PASSPHRASE); the keys are unchanged. Set KEYPOOL_SECRETS_PASSPHRASE to it wherever the file is read.\n`);
    const after = JSON.parse(readFileSync(file, 'utf8')) as { kdf: { salt: string }; iv: string };
    expect(after.kdf.salt).not.toBe(before.kdf.salt);
    expect(after.iv).not.toBe(before.iv);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const old = await secrets(['list', '--file', file], { env: P });
    expect(old.code).toBe(1);
    expect(old.stderr).toMatch(/failed its integrity check/);
    expect((await listJson(file, { KEYPOOL_SECRETS_PASSPHRASE: NEW_PASS })).keys.map((k) => k.id)).toEqual([keyIdOf(K1_NEW)]);

    // and to a master key
    await ok(secrets(['rotate', '--encryption', '--file', file], { env: { KEYPOOL_SECRETS_PASSPHRASE: NEW_PASS, KEYPOOL_SECRETS_NEW_MASTER_KEY: MASTER } }));
    const mk = await listJson(file, { KEYPOOL_SECRETS_MASTER_KEY: MASTER });
    expect(mk.encryption).toBe('master-key');
    expect(mk.keys.map((k) => k.id)).toEqual([keyIdOf(K1_NEW)]);
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('KEYPOOL_SECRETS_FILE names the file; a master key from the environment works as a passphrase does', async () => {
    const file = fresh();
    const env = { KEYPOOL_SECRETS_FILE: file, KEYPOOL_SECRETS_MASTER_KEY: MASTER };
    expect((await ok(secrets(['init'], { env }))).stdout).toContain('encrypted with the master key in KEYPOOL_SECRETS_MASTER_KEY');
    await ok(secrets(['add', '--name', 'a', '--models', 'm'], { env, stdin: K3 }));
    expect((await listJson(file, { KEYPOOL_SECRETS_MASTER_KEY: MASTER })).keys.map((k) => k.name)).toEqual(['a']);
  });

  it('init refuses an existing file (exit 1, file unchanged) unless --force', async () => {
    const file = await withKeys();
    const bytes = readFileSync(file);
    const again = await secrets(['init', '--file', file], { env: P });
    expect(again.code).toBe(1);
    expect(again.stdout).toBe('');
    expect(again.stderr).toBe(`error: file ${file}: ${file} already exists: nothing written (keypool secrets init --force replaces it, and its keys are lost)\n`);
    expect(readFileSync(file).equals(bytes)).toBe(true);
    await ok(secrets(['init', '--file', file, '--force'], { env: P }));
    expect((await listJson(file)).keys).toEqual([]);
  });

  it('init --generate-master-key prints the new key once on stdout, alone; it opens the file', async () => {
    const file = fresh();
    const r = await ok(secrets(['init', '--file', file, '--generate-master-key'], { env: {} }));
    expect(r.stdout).toMatch(/^[0-9a-f]{64}\n$/);
    const key = r.stdout.trim();
    expect(r.stderr).toMatch(/It will not be shown again: store it now, and set KEYPOOL_SECRETS_MASTER_KEY to it/);
    expect(r.stderr).not.toContain(key);
    expect(readFileSync(file, 'utf8')).not.toContain(key);
    expect((await listJson(file, { KEYPOOL_SECRETS_MASTER_KEY: key })).encryption).toBe('master-key');
    // another run makes another key
    const other = await ok(secrets(['init', '--file', fresh(), '--generate-master-key'], { env: {} }));
    expect(other.stdout.trim()).not.toBe(key);
  });

  it('a tampered file exits 1 with the integrity message; a missing file exits 1 saying how to create it', async () => {
    const file = await withKeys();
    const e = JSON.parse(readFileSync(file, 'utf8')) as { ciphertext: string };
    const ct = Buffer.from(e.ciphertext, 'base64');
    ct[10]! ^= 0x80;
    e.ciphertext = ct.toString('base64');
    writeFileSync(file, JSON.stringify(e));
    for (const args of [['list'], ['add', '--name', 'x', '--models', 'm'], ['remove', 'openai-1'], ['rotate', 'openai-1'], ['rotate', '--encryption']]) {
      const r = await secrets([...args, '--file', file], { env: { ...P, KEYPOOL_SECRETS_NEW_PASSPHRASE: NEW_PASS }, stdin: K3 });
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stdout, args.join(' ')).toBe('');
      expect(r.stderr, args.join(' ')).toMatch(/^error: file .*: the file failed its integrity check: either the passphrase is wrong or the file was modified \(tampered with or damaged\); AES-GCM cannot tell the two apart\./);
    }
    const missing = join(dir, 'missing.json');
    const r = await secrets(['list', '--file', missing], { env: P });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`error: file ${missing}: no secrets file at ${missing}: create it with keypool secrets init --file ${missing}\n`);
  });
});

describe('usage and invalid input exit 2 with a message, and change nothing', () => {
  it('each case', async () => {
    const file = await withKeys();
    const bytes = readFileSync(file);
    const NEWP = { ...P, KEYPOOL_SECRETS_NEW_PASSPHRASE: NEW_PASS };
    const cases: [string[], Record<string, string>, string | undefined, RegExp][] = [
      [['list'], P, undefined, /^error: no secrets file: pass --file <path> or set KEYPOOL_SECRETS_FILE\n$/],
      [['list', '--file', file], {}, undefined, /^error: secrets file: no credentials: set KEYPOOL_SECRETS_PASSPHRASE \(a passphrase\) or KEYPOOL_SECRETS_MASTER_KEY \(a 32-byte key, 64 hex characters\); neither is set\n$/],
      [['list', '--file', file], { ...P, KEYPOOL_SECRETS_MASTER_KEY: MASTER }, undefined, /both KEYPOOL_SECRETS_PASSPHRASE and KEYPOOL_SECRETS_MASTER_KEY are set/],
      [['list', '--file', file], { KEYPOOL_SECRETS_MASTER_KEY: 'not-a-key' }, undefined, /KEYPOOL_SECRETS_MASTER_KEY is not a 32-byte key: give 64 hex characters/],
      [['list', '--file', file], { KEYPOOL_SECRETS_MASTER_KEY: MASTER }, undefined, /the file is encrypted with a passphrase: set KEYPOOL_SECRETS_PASSPHRASE \(not KEYPOOL_SECRETS_MASTER_KEY\)/],
      [['init', '--file', fresh()], { KEYPOOL_SECRETS_PASSPHRASE: 'short' }, undefined, /KEYPOOL_SECRETS_PASSPHRASE is too short for a new encryption: use 12 characters or more/],
      [['add', '--file', file, '--models', 'm'], P, K3, /^error: required option '--name <name>' not specified/],
      [['add', '--file', file, '--name', 'x'], P, K3, /^error: required option '--models <list>' not specified/],
      [['add', '--file', file, '--name', 'x', '--models', 'm', '--rpm', 'abc'], P, K3, /^error: option '--rpm <n>' argument 'abc' is invalid\. expected a whole number >= 0/],
      [['add', '--file', file, '--name', 'x', '--models', 'm', '--budget-period', 'day'], P, K3, /^error: --budget-period needs --budget-usd\n$/],
      [['add', '--file', file, '--name', 'x', '--models', 'm', '--base-url', 'ftp://x'], P, K3, /^error: option '--base-url <url>' argument 'ftp:\/\/x' is invalid/],
      [['add', '--file', file, '--name', 'x', '--models', 'm', '--secret', K3], P, undefined, /^error: unknown option '--secret'/],
      [['add', '--file', file, '--name', 'x', '--models', 'm'], P, undefined, /^error: stdin is empty: give the secret of the key on stdin: redirect a file \(< key\.txt\) or pipe it/],
      [['add', '--file', file, '--name', 'x', '--models', 'm'], P, '\n  \n', /^error: stdin is empty/],
      [['add', '--file', file, '--name', 'x', '--models', 'm'], P, `${K3}\n${K1_NEW}\n`, /^error: stdin holds 2 lines: give the secret of the key alone, on one line\n$/],
      [['add', '--file', file, '--name', 'x', '--models', 'm'], P, `Bearer ${K3}`, /^error: the secret of the key read from stdin contains whitespace/],
      [['add', '--file', file, '--name', 'x', '--models', 'm'], P, 'sk-1', /^error: the secret read from stdin is too short: a provider key has 8 characters or more\n$/],
      [['add', '--file', file, '--name', 'openai-1', '--models', 'm'], P, K3, /^error: a key named 'openai-1' is already in .*: pick another --name, or change its secret with keypool secrets rotate openai-1\n$/],
      [['add', '--file', file, '--name', 'x', '--models', 'm'], P, K1, new RegExp(`^error: this secret is already in .*, as key openai-1 \\(id ${keyIdOf(K1)}\\): list each key once\\n$`)],
      [['remove', 'nope', '--file', file], P, undefined, /^error: no key named 'nope' \(or with that id\) in .*: keypool secrets list shows them\n$/],
      [['remove', '--file', file], P, undefined, /^error: missing required argument 'key'/],
      [['rotate', '--file', file], P, K3, /^error: give the key whose secret to replace \(keypool secrets rotate <key>\), or --encryption/],
      [['rotate', 'openai-1', '--encryption', '--file', file], NEWP, K3, /^error: give a key to rotate its secret, or --encryption to re-encrypt the file, not both\n$/],
      [['rotate', 'nope', '--file', file], P, K3, /^error: no key named 'nope'/],
      [['rotate', 'openai-1', '--file', file], P, K1, /^error: the secret read from stdin is the current secret of key openai-1 \(id [0-9a-f]{16}\): give the new one\n$/],
      [['rotate', 'openai-1', '--file', file], P, K2, /^error: the secret read from stdin is already in .*, as key groq-1/],
      [['rotate', 'openai-1', '--file', file], P, undefined, /^error: stdin is empty: give the new secret of the key on stdin/],
      [['rotate', '--encryption', '--file', file], P, undefined, /^error: secrets file: no credentials: set KEYPOOL_SECRETS_NEW_PASSPHRASE \(a passphrase\) or KEYPOOL_SECRETS_NEW_MASTER_KEY/],
      [['rotate', '--encryption', '--file', file], { ...P, KEYPOOL_SECRETS_NEW_PASSPHRASE: PASS }, undefined, /^error: the new credentials are the current ones/],
      [['rotate', '--encryption', '--file', file], { ...P, KEYPOOL_SECRETS_NEW_PASSPHRASE: 'tooshort' }, undefined, /^error: KEYPOOL_SECRETS_NEW_PASSPHRASE is too short for a new encryption/],
      [['frobnicate'], P, undefined, /^error: unknown command 'frobnicate'/],
    ];
    for (const [args, env, stdin, message] of cases) {
      const r = await secrets(args, { env, ...(stdin !== undefined ? { stdin } : {}) });
      const what = `keypool secrets ${args.join(' ')}`;
      expect(r.code, what).toBe(2);
      expect(r.stderr, what).toMatch(message);
      expect(r.stdout, what).toBe('');
    }
    expect(readFileSync(file).equals(bytes)).toBe(true);
  });
});

describe('the real binary', () => {
  it('the secret piped on stdin; exit codes 0, 2 (nothing on stdin), 1 (tampered); no secret in any stream', async () => {
    const file = fresh();
    const env = { KEYPOOL_SECRETS_FILE: file, KEYPOOL_SECRETS_PASSPHRASE: PASS };
    expect((await binary(['init'], { env })).code).toBe(0);
    const add = await binary(['add', '--name', 'openai-1', '--models', 'gpt-4o-mini'], { env, stdin: `${K1}\n` });
    expect(add.code, add.stderr).toBe(0);
    expect(add.stdout).toContain(`added key openai-1 (id ${keyIdOf(K1)}`);
    const empty = await binary(['add', '--name', 'two', '--models', 'gpt-4o-mini'], { env });
    expect(empty.code).toBe(2);
    expect(empty.stderr).toMatch(/^error: stdin is empty: /);
    const list = await binary(['list'], { env });
    expect(list.code).toBe(0);
    expect(list.stdout).toContain(keyIdOf(K1));
    chmodSync(file, 0o600);
    const e = JSON.parse(readFileSync(file, 'utf8')) as { tag: string };
    const tag = Buffer.from(e.tag, 'base64');
    tag[0]! ^= 1;
    e.tag = tag.toString('base64');
    writeFileSync(file, JSON.stringify(e));
    const tampered = await binary(['list'], { env });
    expect(tampered.code).toBe(1);
    expect(tampered.stderr).toMatch(/^error: file .*: the file failed its integrity check/);
    expect(tampered.stdout).toBe('');
  });

  it('every secrets command has --help with examples, lines that fit a terminal', async () => {
    const cmds = [[], ['init'], ['add'], ['remove'], ['list'], ['rotate']];
    for (const c of cmds) {
      const r = await secrets([...c, '--help']);
      const name = ['keypool', 'secrets', ...c].join(' ');
      expect(r.code, name).toBe(0);
      expect(r.stdout, name).toContain(`Usage: ${name}`);
      expect(r.stdout, name).toMatch(/\nExamples:\n {2}\$ \S/);
      for (const l of r.stdout.split('\n')) if (!l.startsWith('  $ ')) expect(l.length, l).toBeLessThanOrEqual(80);
    }
  });
});

describe('readSecretLine', () => {
  it('refuses a terminal on stdin, saying how to give the secret', async () => {
    const tty = Object.assign(Readable.from([Buffer.from(K1)]), { isTTY: true });
    await expect(readSecretLine(tty, 'the secret')).rejects.toThrow(/the secret is read from stdin, which is a terminal: redirect a file \(< key\.txt\) or pipe it/);
  });

  it('one line; CRLF, a BOM and surrounding blank lines are fine; the message never quotes what was read', async () => {
    expect(await readSecretLine(Readable.from([Buffer.from(`\uFEFF${K1}\r\n`)]))).toBe(K1);
    expect(await readSecretLine(Readable.from([Buffer.from('sk-split-'), Buffer.from('across-chunks-0001\n')]))).toBe('sk-split-across-chunks-0001');
    const two = await readSecretLine(Readable.from([Buffer.from(`${K1}\n${K2}`)])).catch((e: Error) => e);
    expect(String(two)).toMatch(/stdin holds 2 lines/);
    expect(String(two)).not.toContain(K1);
    const big = await readSecretLine(Readable.from([Buffer.alloc(70 * 1024, 'a')])).catch((e: Error) => e);
    expect(String(big)).toMatch(/stdin holds more than 64 KiB/);
  });
});
