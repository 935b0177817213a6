/**
 * FileSource and the encrypted file: round trips with a passphrase and a master key, refusal of a
 * wrong credential and of every kind of tampering (as an integrity failure that quotes no secret),
 * atomic writes (mode 0600, no temp file left, never a half file seen), conditional writes, and the
 * warning about a file others can read.
 */
import { createCipheriv, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { KeySpec } from '@keypool/core';
import { LogSink } from '@keypool/testkit';
import { afterAll, describe, expect, it, vi } from 'vitest';
import {
  credentialsFromEnv,
  DEFAULT_SCRYPT,
  FileSource,
  FileSourceConfigSchema,
  generateMasterKey,
  initSecretsFile,
  parseMasterKey,
  readSecretsFile,
  reencrypt,
  writeSecretsFile,
  type ScryptParams,
  type SecretsCredentials,
} from '../src/file.js';
import { isSecretSourceError, parseKeyDocument, type SecretSourceError } from '../src/index.js';

const deny = vi.hoisted(() => ({ path: undefined as string | undefined }));
vi.mock('node:fs/promises', async (importOriginal) => {
  const orig = await importOriginal<typeof import('node:fs/promises')>();
  return {
    ...orig,
    readFile: ((path: unknown, ...rest: unknown[]) =>
      deny.path !== undefined && path === deny.path
        ? Promise.reject(Object.assign(new Error(`EACCES: permission denied, open '${String(path)}'`), { code: 'EACCES' }))
        : (orig.readFile as (...a: unknown[]) => Promise<Buffer>)(path, ...rest)) as typeof orig.readFile,
  };
});

/** Low cost for tests; the default cost is tested once below. */
const FAST: ScryptParams = { N: 1024, r: 8, p: 1 };
const PASS = 'correct horse battery staple 7f3a';
const MASTER_HEX = 'a1'.repeat(32);
const dir = mkdtempSync(join(tmpdir(), 'keypool-secrets-file-'));
let n = 0;
const fresh = (name = 'secrets') => join(dir, `${name}-${++n}.json`);

const K1 = 'sk-file-secret-aaaaaaaaaaaaaaaaaaaa1111';
const K2 = 'sk-file-secret-bbbbbbbbbbbbbbbbbbbb2222';
const keysOf = (...secrets: string[]): KeySpec[] => parseKeyDocument({ keys: secrets.map((secret, i) => ({ secret, name: `k${i + 1}`, models: ['gpt-4o-mini'], rpm: 100 * (i + 1) })) }, 'test');

afterAll(() => {
  deny.path = undefined;
});

async function failure(p: Promise<unknown>): Promise<SecretSourceError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!isSecretSourceError(e)) throw new Error(`expected a SecretSourceError, got ${e instanceof Error ? e.stack : String(e)}`);
  return e;
}

function source(path: string, env: NodeJS.ProcessEnv, extra: Partial<ConstructorParameters<typeof FileSource>[0]> = {}): FileSource {
  return new FileSource({ path, env, scrypt: FAST, ...extra });
}

const envelope = (path: string) => JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown> & { kdf: Record<string, unknown> };
const flipBase64 = (b64: string, at = 0) => {
  const b = Buffer.from(b64, 'base64');
  b[at < 0 ? b.length + at : at % b.length]! ^= 0x01;
  return b.toString('base64');
};

describe('FileSource round trip', () => {
  it('passphrase: write then load gives the same keys; the file holds no secret in clear and is an envelope', async () => {
    const path = fresh();
    const src = source(path, { KEYPOOL_SECRETS_PASSPHRASE: PASS });
    const written = keysOf(K1, K2);
    await initSecretsFile(path, { passphrase: PASS }, { scrypt: FAST });
    const v = await src.write(written);
    const set = await src.load();
    expect(set.keys).toEqual(written);
    expect(set.version).toBe(v);
    expect(set.version).toMatch(/^[0-9a-f]{16}$/);
    const text = readFileSync(path, 'utf8');
    // (the key's name "k1" is too short to look for: base64 of random bytes holds it now and then)
    for (const s of [K1, K2, PASS, 'gpt-4o-mini', '"models"', '"secret"']) expect(text).not.toContain(s);
    const e = envelope(path);
    expect(Object.keys(e)).toEqual(['format', 'version', 'kdf', 'iv', 'ciphertext', 'tag']);
    expect(e).toMatchObject({ format: 'keypool-secrets', version: 1, kdf: { name: 'scrypt', N: 1024, r: 8, p: 1 } });
    expect(Buffer.from(e.iv as string, 'base64')).toHaveLength(12);
    expect(Buffer.from(e.tag as string, 'base64')).toHaveLength(16);
    expect(Buffer.from(e.kdf.salt as string, 'base64')).toHaveLength(16);
    expect(src.describe).toBe(`file ${path}`);
  });

  it('master key (hex or base64): round trip; the file names no salt', async () => {
    const path = fresh();
    await writeSecretsFile(path, { masterKey: parseMasterKey(MASTER_HEX) }, keysOf(K1));
    expect(envelope(path).kdf).toEqual({ name: 'master-key' });
    const b64 = Buffer.from(MASTER_HEX, 'hex').toString('base64');
    for (const mk of [MASTER_HEX, b64, Buffer.from(MASTER_HEX, 'hex').toString('base64url')]) {
      expect((await source(path, { KEYPOOL_SECRETS_MASTER_KEY: mk }).load()).keys.map((k) => k.secret)).toEqual([K1]);
    }
  });

  it('every write takes a fresh salt and IV (same keys, same credentials: different bytes)', async () => {
    const path = fresh();
    const seen = new Set<string>();
    for (let i = 0; i < 3; i++) {
      await writeSecretsFile(path, { passphrase: PASS }, keysOf(K1), { scrypt: FAST });
      const e = envelope(path);
      seen.add(`salt:${e.kdf.salt as string}`).add(`iv:${e.iv as string}`);
    }
    expect(seen.size).toBe(6);
    const mpath = fresh();
    const ivs = new Set<string>();
    for (let i = 0; i < 3; i++) {
      await writeSecretsFile(mpath, { masterKey: parseMasterKey(MASTER_HEX) }, keysOf(K1));
      ivs.add(envelope(mpath).iv as string);
    }
    expect(ivs.size).toBe(3);
  });

  it('the default scrypt cost (N 2^15, r 8, p 1) is what a write uses unless told otherwise, and it loads', async () => {
    expect(DEFAULT_SCRYPT).toEqual({ N: 32768, r: 8, p: 1 });
    const path = fresh();
    await writeSecretsFile(path, { passphrase: PASS }, keysOf(K1));
    expect(envelope(path).kdf).toMatchObject({ name: 'scrypt', N: 32768, r: 8, p: 1 });
    const set = await new FileSource({ path, env: { KEYPOOL_SECRETS_PASSPHRASE: PASS } }).load();
    expect(set.keys[0]!.secret).toBe(K1);
  });

  it('config defaults fill what stored keys do not give; stored settings win', async () => {
    const path = fresh();
    await writeSecretsFile(path, { passphrase: PASS }, [{ secret: K1, name: 'a', models: ['m'] }, { secret: K2, name: 'b', models: ['m'], rpm: 7 }], { scrypt: FAST });
    const set = await source(path, { KEYPOOL_SECRETS_PASSPHRASE: PASS }, { defaults: { rpm: 300, provider: 'groq' } }).load();
    expect(set.keys.map((k) => [k.name, k.rpm, k.provider])).toEqual([
      ['a', 300, 'groq'],
      ['b', 7, 'groq'],
    ]);
    const contents = await readSecretsFile(path, { passphrase: PASS });
    expect(contents.keys).toEqual([
      { secret: K1, name: 'a', models: ['m'] },
      { secret: K2, name: 'b', models: ['m'], rpm: 7 },
    ]);
    expect(contents.kdf).toBe('scrypt');
    expect(contents.mode).toBe(0o600);
  });

  it('custom variable names for the credentials', async () => {
    const path = fresh();
    await writeSecretsFile(path, { passphrase: PASS }, keysOf(K1), { scrypt: FAST });
    const src = source(path, { MY_PASS: PASS }, { passphraseEnv: 'MY_PASS', masterKeyEnv: 'MY_KEY' });
    expect((await src.load()).keys).toHaveLength(1);
    const none = await failure(source(path, { KEYPOOL_SECRETS_PASSPHRASE: PASS }, { passphraseEnv: 'MY_PASS', masterKeyEnv: 'MY_KEY' }).load());
    expect(none.message).toMatch(/set MY_PASS \(a passphrase\) or MY_KEY/);
  });
});

describe('refusals', () => {
  const setup = async (creds: SecretsCredentials) => {
    const path = fresh();
    await writeSecretsFile(path, creds, keysOf(K1, K2), { scrypt: FAST });
    return path;
  };

  it('a wrong passphrase: invalid, "failed its integrity check", names both causes and the variable, never the passphrase', async () => {
    const path = await setup({ passphrase: PASS });
    const wrong = 'wrong-passphrase-that-must-not-show';
    const e = await failure(source(path, { KEYPOOL_SECRETS_PASSPHRASE: wrong }).load());
    expect(e.code).toBe('invalid');
    expect(e.retryable).toBe(false);
    expect(e.message).toMatch(/failed its integrity check: either the passphrase is wrong or the file was modified \(tampered with or damaged\); AES-GCM cannot tell the two apart\. Check KEYPOOL_SECRETS_PASSPHRASE/);
    for (const s of [wrong, PASS, K1, K2]) expect(e.message).not.toContain(s);
    expect(JSON.stringify(e)).not.toContain(wrong);
  });

  it('a wrong master key: invalid (integrity), never the key', async () => {
    const path = await setup({ masterKey: parseMasterKey(MASTER_HEX) });
    const other = 'b2'.repeat(32);
    const e = await failure(source(path, { KEYPOOL_SECRETS_MASTER_KEY: other }).load());
    expect(e.code).toBe('invalid');
    expect(e.message).toMatch(/failed its integrity check: either the master key is wrong or the file was modified/);
    for (const s of [other, MASTER_HEX]) expect(e.message).not.toContain(s);
  });

  type Tamper = [string, (e: Record<string, unknown> & { kdf: Record<string, unknown> }) => void];
  const tampers: Tamper[] = [
    ['a byte of the ciphertext', (e) => void (e.ciphertext = flipBase64(e.ciphertext as string, 5))],
    ['the last byte of the ciphertext', (e) => void (e.ciphertext = flipBase64(e.ciphertext as string, -1))],
    ['a byte of the tag', (e) => void (e.tag = flipBase64(e.tag as string, 3))],
    ['a byte of the iv', (e) => void (e.iv = flipBase64(e.iv as string, 11))],
    ['a byte of the salt', (e) => void (e.kdf.salt = flipBase64(e.kdf.salt as string, 0))],
    ['kdf N in the header (1024 -> 2048)', (e) => void (e.kdf.N = 2048)],
    ['kdf r in the header', (e) => void (e.kdf.r = 4)],
    ['a truncated ciphertext', (e) => void (e.ciphertext = (e.ciphertext as string).slice(0, 8))],
    ['ciphertext and tag of another file', () => undefined], // replaced below
  ];
  it.each(tampers)('tampering: %s -> invalid (integrity check)', async (what, change) => {
    const path = await setup({ passphrase: PASS });
    const e = envelope(path);
    if (what.startsWith('ciphertext and tag of another')) {
      const other = await setup({ passphrase: PASS });
      const o = envelope(other);
      e.ciphertext = o.ciphertext;
      e.tag = o.tag;
    } else change(e);
    writeFileSync(path, JSON.stringify(e));
    const err = await failure(source(path, { KEYPOOL_SECRETS_PASSPHRASE: PASS }).load());
    expect(err.code).toBe('invalid');
    expect(err.message).toContain('failed its integrity check');
    expect(err.message).not.toContain(PASS);
  });

  it('tampering with a master-key file: a flipped byte of ciphertext, tag or iv', async () => {
    for (const field of ['ciphertext', 'tag', 'iv'] as const) {
      const path = await setup({ masterKey: parseMasterKey(MASTER_HEX) });
      const e = envelope(path);
      e[field] = flipBase64(e[field] as string, 1);
      writeFileSync(path, JSON.stringify(e));
      const err = await failure(source(path, { KEYPOOL_SECRETS_MASTER_KEY: MASTER_HEX }).load());
      expect(err.code, field).toBe('invalid');
      expect(err.message, field).toContain('failed its integrity check');
    }
  });

  it('a flipped byte anywhere in the file text is refused (as damaged or as failing the integrity check)', async () => {
    const path = await setup({ passphrase: PASS });
    const original = readFileSync(path);
    const src = source(path, { KEYPOOL_SECRETS_PASSPHRASE: PASS });
    // every 7th byte, and each byte of the base64 values' first characters
    for (let i = 0; i < original.length; i += 7) {
      const b = Buffer.from(original);
      b[i]! ^= 0x04;
      if (b.equals(original)) continue;
      writeFileSync(path, b);
      const r = await src.load().then(
        () => 'loaded',
        (e: unknown) => (isSecretSourceError(e) ? e.code : String(e)),
      );
      // a JSON-insignificant change (whitespace, key order...) may still load: then the content is the same
      if (r === 'loaded') expect((await src.load()).keys.map((k) => k.secret), `byte ${i}`).toEqual([K1, K2]);
      else expect(r, `byte ${i}`).toBe('invalid');
    }
  });

  it('a malformed header is invalid without trying to decrypt: bad base64, wrong lengths, unknown kdf, absurd cost', async () => {
    const path = await setup({ passphrase: PASS });
    const good = envelope(path);
    const cases: [string, (e: Record<string, unknown> & { kdf: Record<string, unknown> }) => void, RegExp][] = [
      ['iv not base64', (e) => void (e.iv = '!!!!'), /iv is not base64/],
      ['iv of 16 bytes', (e) => void (e.iv = randomBytes(16).toString('base64')), /iv must be 12 bytes/],
      ['tag of 12 bytes', (e) => void (e.tag = randomBytes(12).toString('base64')), /tag must be 16 bytes/],
      ['kdf unknown', (e) => void (e.kdf = { name: 'argon2' }), /unknown kdf/],
      ['N of 2^30 (would use gigabytes)', (e) => void (e.kdf.N = 2 ** 30), /kdf cost out of range/],
      ['N not a power of two', (e) => void (e.kdf.N = 1000), /kdf cost out of range/],
      ['another format', (e) => void (e.format = 'other'), /no "format": "keypool-secrets"/],
      ['version 2', (e) => void (e.version = 2), /unsupported version/],
    ];
    for (const [what, change, message] of cases) {
      const e = structuredClone(good);
      change(e);
      writeFileSync(path, JSON.stringify(e));
      const err = await failure(source(path, { KEYPOOL_SECRETS_PASSPHRASE: PASS }).load());
      expect(err.code, what).toBe('invalid');
      expect(err.message, what).toMatch(message);
    }
  });

  it('not an envelope (plain JSON keys, text, empty): invalid, and the content is not quoted', async () => {
    const path = fresh();
    for (const content of [JSON.stringify({ keys: [{ secret: K1, models: ['a'] }] }), `${K1}\n`, '']) {
      writeFileSync(path, content, { mode: 0o600 });
      const e = await failure(source(path, { KEYPOOL_SECRETS_PASSPHRASE: PASS }).load());
      expect(e.code).toBe('invalid');
      expect(e.message).toMatch(/not a valid keypool secrets file/);
      expect(e.message).not.toContain(K1);
    }
  });

  it('a missing file: not_found, saying how to create it; a directory: config', async () => {
    const path = join(dir, 'nope', 'secrets.json');
    const e = await failure(source(path, { KEYPOOL_SECRETS_PASSPHRASE: PASS }).load());
    expect(e.code).toBe('not_found');
    expect(e.message).toBe(`file ${path}: no secrets file at ${path}: create it with keypool secrets init --file ${path}`);
    const d = join(dir, `a-dir-${++n}`);
    mkdirSync(d);
    expect((await failure(source(d, { KEYPOOL_SECRETS_PASSPHRASE: PASS }).load())).code).toBe('config');
  });

  it('an unreadable file (EACCES): denied', async () => {
    const path = await setup({ passphrase: PASS });
    deny.path = path;
    try {
      const e = await failure(source(path, { KEYPOOL_SECRETS_PASSPHRASE: PASS }).load());
      expect(e.code).toBe('denied');
      expect(e.message).toMatch(/cannot read .*: permission denied/);
    } finally {
      deny.path = undefined;
    }
  });

  it.skipIf(process.getuid?.() === 0)('an unreadable file for real (mode 000, not root): denied', async () => {
    const path = await setup({ passphrase: PASS });
    chmodSync(path, 0o000);
    expect((await failure(source(path, { KEYPOOL_SECRETS_PASSPHRASE: PASS }).load())).code).toBe('denied');
  });

  it('credentials: exactly one of the two variables, named in the message; a malformed master key; the wrong kind for the file', async () => {
    const path = await setup({ passphrase: PASS });
    const neither = await failure(source(path, {}).load());
    expect(neither.code).toBe('config');
    expect(neither.message).toMatch(/no credentials: set KEYPOOL_SECRETS_PASSPHRASE \(a passphrase\) or KEYPOOL_SECRETS_MASTER_KEY .*neither is set/);
    const empty = await failure(source(path, { KEYPOOL_SECRETS_PASSPHRASE: '' }).load());
    expect(empty.message).toMatch(/neither is set/);
    const both = await failure(source(path, { KEYPOOL_SECRETS_PASSPHRASE: PASS, KEYPOOL_SECRETS_MASTER_KEY: MASTER_HEX }).load());
    expect(both.code).toBe('config');
    expect(both.message).toMatch(/both KEYPOOL_SECRETS_PASSPHRASE and KEYPOOL_SECRETS_MASTER_KEY are set/);
    expect(both.message).not.toContain(PASS);
    const shortKey = 'abcdef0123456789'.repeat(3);
    const bad = await failure(source(path, { KEYPOOL_SECRETS_MASTER_KEY: shortKey }).load());
    expect(bad.code).toBe('config');
    expect(bad.message).toMatch(/KEYPOOL_SECRETS_MASTER_KEY is not a 32-byte key: give 64 hex characters/);
    expect(bad.message).not.toContain(shortKey);
    const kind = await failure(source(path, { KEYPOOL_SECRETS_MASTER_KEY: MASTER_HEX }).load());
    expect(kind.code).toBe('config');
    expect(kind.message).toMatch(/encrypted with a passphrase: set KEYPOOL_SECRETS_PASSPHRASE \(not KEYPOOL_SECRETS_MASTER_KEY\)/);
    expect(() => credentialsFromEnv({ KEYPOOL_SECRETS_MASTER_KEY: generateMasterKey() })).not.toThrow();
    expect(generateMasterKey()).toMatch(/^[0-9a-f]{64}$/);
    expect(generateMasterKey()).not.toBe(generateMasterKey());
  });

  it('a file whose plaintext is not a valid key document: invalid, path named, no secret', async () => {
    // made by hand with the right key: the content is authentic but wrong
    const path = fresh();
    const key = parseMasterKey(MASTER_HEX);
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', key, iv);
    c.setAAD(Buffer.from(JSON.stringify({ format: 'keypool-secrets', version: 1, kdf: { name: 'master-key' } })));
    const ct = Buffer.concat([c.update(JSON.stringify({ keys: [{ secret: K1, models: [] }] })), c.final()]);
    writeFileSync(path, JSON.stringify({ format: 'keypool-secrets', version: 1, kdf: { name: 'master-key' }, iv: iv.toString('base64'), ciphertext: ct.toString('base64'), tag: c.getAuthTag().toString('base64') }));
    const e = await failure(source(path, { KEYPOOL_SECRETS_MASTER_KEY: MASTER_HEX }).load());
    expect(e.code).toBe('invalid');
    expect(e.message).toMatch(/invalid key document: keys\[0\]\.models: list at least one model/);
    expect(e.message).not.toContain(K1);
  });
});

describe('writes', () => {
  it('atomic: mode 0600 even over a 0644 file and with umask 0, no temp file left behind', async () => {
    const path = fresh();
    writeFileSync(path, 'old', { mode: 0o644 });
    chmodSync(path, 0o644);
    const old = process.umask(0);
    try {
      await writeSecretsFile(path, { passphrase: PASS }, keysOf(K1), { scrypt: FAST });
    } finally {
      process.umask(old);
    }
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const base = path.split('/').pop()!;
    expect(readdirSync(dir).filter((f) => f.includes(base) && f !== base)).toEqual([]);
    const init = fresh();
    await initSecretsFile(init, { passphrase: PASS }, { scrypt: FAST });
    expect(statSync(init).mode & 0o777).toBe(0o600);
  });

  it('a crash left a temp file (half written): loads ignore it, writes succeed, and nothing but temp files of our own is touched', async () => {
    const path = fresh();
    await writeSecretsFile(path, { passphrase: PASS }, keysOf(K1), { scrypt: FAST });
    const base = path.split('/').pop()!;
    const stale = join(dir, `.${base}.tmp-99999-abcdef012345`);
    writeFileSync(stale, '{"format":"keypool-secrets","version":1,"kdf":{"na', { mode: 0o600 });
    const src = source(path, { KEYPOOL_SECRETS_PASSPHRASE: PASS });
    expect((await src.load()).keys.map((k) => k.secret)).toEqual([K1]);
    await src.write(keysOf(K1, K2));
    expect((await src.load()).keys.map((k) => k.secret)).toEqual([K1, K2]);
    expect(existsSync(stale)).toBe(true); // left alone: it may be a concurrent writer's, and it is never read
  });

  it('reads during writes never see a half file: every load gives one complete version', async () => {
    const path = fresh();
    const src = source(path, { KEYPOOL_SECRETS_PASSPHRASE: PASS });
    const sets = [keysOf(K1), keysOf(K1, K2), keysOf(K2)];
    const versions = new Set([await src.write(sets[0]!)]);
    let writing = true;
    const reader = (async () => {
      const seen: string[] = [];
      while (writing) {
        const set = await src.load();
        expect(sets.map((s) => JSON.stringify(s))).toContain(JSON.stringify(set.keys));
        seen.push(set.version);
      }
      return seen;
    })();
    reader.catch(() => undefined); // reported by the await below, after the writes
    for (let i = 0; i < 30; i++) versions.add(await src.write(sets[i % 3]!));
    writing = false;
    const seen = await reader;
    expect(seen.length).toBeGreaterThan(0);
    for (const v of seen) expect(versions).toContain(v);
  });

  it('conditional writes: the version read is expected; a change since is a conflict and nothing is written', async () => {
    const path = fresh();
    const src = source(path, { KEYPOOL_SECRETS_PASSPHRASE: PASS });
    await src.write(keysOf(K1));
    const a = await src.load();
    const b = await src.load();
    expect(b.version).toBe(a.version);
    const v2 = await src.write(keysOf(K1, K2), { expectedVersion: a.version });
    expect(v2).not.toBe(a.version);
    const before = readFileSync(path);
    const e = await failure(src.write(keysOf(K2), { expectedVersion: b.version }));
    expect(e.code).toBe('conflict');
    expect(e.message).toMatch(/the file changed since it was read \(version [0-9a-f]{16}, now [0-9a-f]{16}\): nothing written/);
    expect(readFileSync(path).equals(before)).toBe(true);
    expect((await src.load()).version).toBe(v2);
    // readSecretsFile / writeSecretsFile use the same versions
    const c = await readSecretsFile(path, { passphrase: PASS });
    expect(c.version).toBe(v2);
    await writeSecretsFile(path, { passphrase: PASS }, [...c.keys, { secret: 'sk-file-secret-cccccccccccccccccccc3333', models: ['x'] }], { expectedVersion: c.version, scrypt: FAST });
    expect((await failure(writeSecretsFile(path, { passphrase: PASS }, c.keys, { expectedVersion: c.version, scrypt: FAST }))).code).toBe('conflict');
    // a removed file is a conflict too
    const gone = fresh();
    await writeSecretsFile(gone, { passphrase: PASS }, keysOf(K1), { scrypt: FAST });
    const gv = (await readSecretsFile(gone, { passphrase: PASS })).version;
    (await import('node:fs')).unlinkSync(gone);
    expect((await failure(writeSecretsFile(gone, { passphrase: PASS }, keysOf(K1), { expectedVersion: gv, scrypt: FAST }))).code).toBe('conflict');
    expect(existsSync(gone)).toBe(false);
  });

  it('writeSecretsFile refuses keys a load would refuse (a duplicate secret), and writes nothing', async () => {
    const path = fresh();
    const e = await failure(writeSecretsFile(path, { passphrase: PASS }, [{ secret: K1, models: ['a'] }, { secret: K1, models: ['b'] }], { scrypt: FAST }));
    expect(e.code).toBe('invalid');
    expect(existsSync(path)).toBe(false);
  });

  it('init creates an empty file and refuses to replace one (unless forced)', async () => {
    const path = fresh();
    await initSecretsFile(path, { passphrase: PASS }, { scrypt: FAST });
    expect((await readSecretsFile(path, { passphrase: PASS })).keys).toEqual([]);
    await writeSecretsFile(path, { passphrase: PASS }, keysOf(K1), { scrypt: FAST });
    const e = await failure(initSecretsFile(path, { passphrase: PASS }, { scrypt: FAST }));
    expect(e.code).toBe('conflict');
    expect(e.message).toMatch(/already exists: nothing written/);
    expect((await readSecretsFile(path, { passphrase: PASS })).keys).toHaveLength(1);
    await initSecretsFile(path, { masterKey: parseMasterKey(MASTER_HEX) }, { force: true });
    expect((await readSecretsFile(path, { masterKey: parseMasterKey(MASTER_HEX) })).keys).toEqual([]);
    expect(readdirSync(dir).filter((f) => f.startsWith(`.${path.split('/').pop()}.tmp-`))).toEqual([]);
  });

  it('reencrypt: same keys under new credentials, fresh salt and IV; the old credentials no longer open it', async () => {
    const path = fresh();
    await writeSecretsFile(path, { passphrase: PASS }, keysOf(K1, K2), { scrypt: FAST });
    const before = envelope(path);
    const newPass = 'a brand new passphrase 2c9d';
    await reencrypt(path, { passphrase: PASS }, { passphrase: newPass }, { scrypt: FAST });
    const after = envelope(path);
    expect(after.kdf.salt).not.toBe(before.kdf.salt);
    expect(after.iv).not.toBe(before.iv);
    expect((await source(path, { KEYPOOL_SECRETS_PASSPHRASE: newPass }).load()).keys).toEqual(keysOf(K1, K2));
    expect((await failure(source(path, { KEYPOOL_SECRETS_PASSPHRASE: PASS }).load())).code).toBe('invalid');
    // to a master key and back
    await reencrypt(path, { passphrase: newPass }, { masterKey: parseMasterKey(MASTER_HEX) });
    expect(envelope(path).kdf).toEqual({ name: 'master-key' });
    expect((await source(path, { KEYPOOL_SECRETS_MASTER_KEY: MASTER_HEX }).load()).keys).toHaveLength(2);
    // wrong old credentials: refused, file unchanged
    const bytes = readFileSync(path);
    expect((await failure(reencrypt(path, { masterKey: parseMasterKey('c3'.repeat(32)) }, { passphrase: PASS }))).code).toBe('invalid');
    expect(readFileSync(path).equals(bytes)).toBe(true);
  });
});

describe('permissions warning', () => {
  it('a file group or others can read: one warning at load (until fixed), naming the path and mode, no secret', async () => {
    const path = fresh();
    await writeSecretsFile(path, { passphrase: PASS }, keysOf(K1), { scrypt: FAST });
    const sink = new LogSink();
    const src = source(path, { KEYPOOL_SECRETS_PASSPHRASE: PASS }, { logger: sink.logger });
    await src.load();
    expect(sink.lines).toHaveLength(0);
    chmodSync(path, 0o640);
    await src.load();
    await src.load();
    const warns = sink.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(warns).toHaveLength(1);
    expect(warns[0]).toMatchObject({ level: 40, path, mode: '0640', msg: `secrets file can be read or changed by users other than its owner: chmod 600 ${path}` });
    chmodSync(path, 0o600);
    await src.load();
    chmodSync(path, 0o604);
    await src.load();
    expect(sink.lines).toHaveLength(2);
    expect(sink.text).not.toContain(K1);
    expect(sink.text).not.toContain(PASS);
  });
});

describe('config', () => {
  it('strict schema with described fields and the default variable names', () => {
    const c = FileSourceConfigSchema.parse({ type: 'file', path: '/x' });
    expect(c).toEqual({ type: 'file', path: '/x', passphraseEnv: 'KEYPOOL_SECRETS_PASSPHRASE', masterKeyEnv: 'KEYPOOL_SECRETS_MASTER_KEY' });
    expect(FileSourceConfigSchema.safeParse({ type: 'file', path: '/x', passphrase: 'inline' }).success).toBe(false);
    expect(FileSourceConfigSchema.safeParse({ type: 'file' }).success).toBe(false);
    expect(FileSourceConfigSchema.safeParse({ type: 'file', path: '/x', passphraseEnv: 'not a name' }).success).toBe(false);
    for (const [k, v] of Object.entries(FileSourceConfigSchema.shape)) expect(v.description, k).toBeTruthy();
    expect(() => new FileSource({ path: '/x', scrypt: { N: 1000, r: 8, p: 1 } })).toThrow(/scrypt cost out of range/);
    expect(new FileSource({ path: 'rel/secrets.json' }).path).toBe(join(process.cwd(), 'rel/secrets.json'));
  });
});
