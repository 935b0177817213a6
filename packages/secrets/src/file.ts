/**
 * Keys in a local file encrypted with AES-256-GCM: for a single host, a VM or a laptop, where
 * there is no Vault or AWS. The file is a JSON envelope:
 *
 *   { "format": "keypool-secrets", "version": 1,
 *     "kdf": { "name": "scrypt", "N": 32768, "r": 8, "p": 1, "salt": "<base64, 16 bytes>" }  (or { "name": "master-key" }),
 *     "iv": "<base64, 12 bytes>", "ciphertext": "<base64>", "tag": "<base64, 16 bytes>" }
 *
 * The plaintext is a key document ({ "keys": [...] }, see document.ts). The key is scrypt of a
 * passphrase (KEYPOOL_SECRETS_PASSPHRASE) with the salt, or a 32-byte master key given as is
 * (KEYPOOL_SECRETS_MASTER_KEY). The header (format, version, kdf) is the additional authenticated
 * data, so a change to any byte of the file fails decryption. Every write takes a fresh salt and
 * IV and replaces the file atomically (temp file, fsync, rename, fsync of the directory), mode 0600.
 *
 * The version of the set is a digest of the file's bytes: a conditional write (expectedVersion)
 * fails with `conflict` when the file changed since it was read.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes, scrypt as scryptCb, type ScryptOptions } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { link, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { KeySpec, KeySpecInput } from '@keypool/core';
import type { Logger } from 'pino';
import { z } from 'zod';
import { keyDocumentOf, parseKeyDefaults, parseKeyDocument, type KeyDefaults } from './document.js';
import { KeyDefaultsConfigSchema } from './env.js';
import { isSecretSourceError, SecretSourceError, type SecretSet, type SecretSource, type SourceCallOptions } from './types.js';

export const DEFAULT_PASSPHRASE_ENV = 'KEYPOOL_SECRETS_PASSPHRASE';
export const DEFAULT_MASTER_KEY_ENV = 'KEYPOOL_SECRETS_MASTER_KEY';

export const FileSourceConfigSchema = z
  .object({
    type: z.literal('file').describe('Keys from a local file encrypted with AES-256-GCM (keypool secrets init|add|remove|list|rotate manage it).'),
    path: z.string().min(1).describe('The encrypted file (relative paths from the working directory). Create it with keypool secrets init --file <path>.'),
    passphraseEnv: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name')
      .default(DEFAULT_PASSPHRASE_ENV)
      .describe('Environment variable holding the passphrase the file key is derived from (scrypt). Set exactly one of this and masterKeyEnv.'),
    masterKeyEnv: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name')
      .default(DEFAULT_MASTER_KEY_ENV)
      .describe('Environment variable holding a 32-byte master key as 64 hex characters or base64 (openssl rand -hex 32), used as the file key as is.'),
    defaults: KeyDefaultsConfigSchema,
  })
  .strict();

export type FileSourceConfig = z.input<typeof FileSourceConfigSchema>;

/** What unlocks the file: a passphrase (scrypt) or a 32-byte master key. */
export type SecretsCredentials = { passphrase: string } | { masterKey: Buffer };

/** scrypt cost. The default (N 2^15, r 8, p 1: 32 MiB, about 0.1 s) suits a file read once per refresh. */
export interface ScryptParams {
  N: number;
  r: number;
  p: number;
}

export const DEFAULT_SCRYPT: Readonly<ScryptParams> = Object.freeze({ N: 2 ** 15, r: 8, p: 1 });

export interface FileSourceOptions extends Omit<FileSourceConfig, 'type'> {
  type?: 'file';
  /** Where the credential variables are read (default process.env), at every load and write. */
  env?: NodeJS.ProcessEnv;
  /** Warnings (a file readable by group or others). */
  logger?: Logger;
  /** scrypt cost of writes (tests use a low one). Reads take the cost the file names. */
  scrypt?: ScryptParams;
}

const FORMAT = 'keypool-secrets';
const VERSION = 1;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const SALT_BYTES = 16;
/** scrypt costs a file may name: bounds what a forged header can make a reader spend. */
const N_RANGE = [2 ** 10, 2 ** 20] as const;

type Kdf = { name: 'scrypt'; N: number; r: number; p: number; salt: string } | { name: 'master-key' };

interface Envelope {
  format: typeof FORMAT;
  version: typeof VERSION;
  kdf: Kdf;
  iv: string;
  ciphertext: string;
  tag: string;
}

/** What a file holds, decrypted. */
export interface SecretsFileContents {
  /** The keys as stored: only the settings each key was given (the source's `defaults` and the key schema fill the rest). */
  keys: KeySpecInput[];
  /** The same keys validated, with defaults applied. */
  specs: KeySpec[];
  /** Digest of the file's bytes: pass it as expectedVersion to a write. */
  version: string;
  /** How the file key is made. */
  kdf: 'scrypt' | 'master-key';
  /** The file's permission bits, e.g. 0o600. */
  mode: number;
}

export interface WriteFileOptions {
  /** Write only if the file is still this version (its digest); else SecretSourceError `conflict`. */
  expectedVersion?: string;
  /** Create the file: fail with `conflict` if it exists (atomic: no window where another file is overwritten). */
  create?: boolean;
  scrypt?: ScryptParams;
  signal?: AbortSignal;
}

/** The encrypted file as a source of keys. */
export class FileSource implements SecretSource {
  readonly kind = 'file' as const;
  readonly describe: string;
  readonly path: string;
  private readonly passphraseEnv: string;
  private readonly masterKeyEnv: string;
  private readonly defaults: KeyDefaults;
  private readonly env: NodeJS.ProcessEnv | undefined;
  private readonly log: Logger | undefined;
  private readonly scrypt: ScryptParams | undefined;
  private warnedMode: number | undefined;

  constructor(options: FileSourceOptions) {
    const { env, logger, scrypt, ...config } = options;
    const r = FileSourceConfigSchema.safeParse({ ...config, type: 'file' });
    if (!r.success) {
      throw new SecretSourceError('config', 'file source', r.error.issues.map((i) => `${[...i.path].join('.') || 'config'}: ${i.message}`).join('; '));
    }
    this.path = resolve(r.data.path);
    this.describe = `file ${this.path}`;
    this.passphraseEnv = r.data.passphraseEnv;
    this.masterKeyEnv = r.data.masterKeyEnv;
    this.defaults = r.data.defaults === undefined ? {} : parseKeyDefaults(r.data.defaults, this.describe);
    this.env = env;
    this.log = logger?.child({ component: 'keypool-secrets', source: this.describe });
    if (scrypt) checkScrypt(scrypt, this.describe);
    this.scrypt = scrypt;
  }

  async load(options: SourceCallOptions = {}): Promise<SecretSet> {
    const creds = credentialsFromEnv(this.env ?? process.env, { passphraseEnv: this.passphraseEnv, masterKeyEnv: this.masterKeyEnv }, this.describe);
    const { bytes, mode } = await readRaw(this.path, this.describe, options.signal);
    if (process.platform !== 'win32' && (mode & 0o077) !== 0 && this.warnedMode !== mode) {
      this.warnedMode = mode;
      this.log?.warn(
        { path: this.path, mode: `0${(mode & 0o777).toString(8)}` },
        `secrets file can be read or changed by users other than its owner: chmod 600 ${this.path}`,
      );
    } else if ((mode & 0o077) === 0) this.warnedMode = undefined;
    const plaintext = await decryptEnvelope(bytes, creds, this.describe, { passphraseEnv: this.passphraseEnv, masterKeyEnv: this.masterKeyEnv });
    options.signal?.throwIfAborted();
    const keys = parseKeyDocument(parsePlaintext(plaintext, this.describe), this.describe, this.defaults);
    return { version: versionOf(bytes), keys };
  }

  async write(keys: KeySpec[], options: SourceCallOptions & { expectedVersion?: string } = {}): Promise<string> {
    const creds = credentialsFromEnv(this.env ?? process.env, { passphraseEnv: this.passphraseEnv, masterKeyEnv: this.masterKeyEnv }, this.describe);
    return writeEncrypted(this.path, creds, keyDocumentOf(keys), this.describe, {
      ...(options.expectedVersion !== undefined ? { expectedVersion: options.expectedVersion } : {}),
      ...(this.scrypt ? { scrypt: this.scrypt } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers for `keypool secrets` (and anyone managing a file)
// ---------------------------------------------------------------------------------------------

/**
 * The credentials named by two environment variables: exactly one must be set (non-empty).
 * Errors (`config`) name the variables, never their values.
 */
export function credentialsFromEnv(
  env: NodeJS.ProcessEnv,
  names: { passphraseEnv?: string; masterKeyEnv?: string } = {},
  source = 'secrets file',
): SecretsCredentials {
  const passphraseEnv = names.passphraseEnv ?? DEFAULT_PASSPHRASE_ENV;
  const masterKeyEnv = names.masterKeyEnv ?? DEFAULT_MASTER_KEY_ENV;
  const passphrase = env[passphraseEnv];
  const masterKey = env[masterKeyEnv];
  const hasP = passphrase !== undefined && passphrase !== '';
  const hasM = masterKey !== undefined && masterKey !== '';
  if (hasP && hasM) throw new SecretSourceError('config', source, `both ${passphraseEnv} and ${masterKeyEnv} are set: set only the one the file is encrypted with`);
  if (!hasP && !hasM) throw new SecretSourceError('config', source, `no credentials: set ${passphraseEnv} (a passphrase) or ${masterKeyEnv} (a 32-byte key, 64 hex characters); neither is set`);
  return hasP ? { passphrase: passphrase! } : { masterKey: parseMasterKey(masterKey!, masterKeyEnv, source) };
}

/** A 32-byte key from 64 hex characters or base64 (standard or URL-safe). The message names `variable`, never the value. */
export function parseMasterKey(text: string, variable = DEFAULT_MASTER_KEY_ENV, source = 'secrets file'): Buffer {
  const t = text.trim();
  let key: Buffer | undefined;
  if (/^[0-9a-fA-F]{64}$/.test(t)) key = Buffer.from(t, 'hex');
  else if (/^[A-Za-z0-9+/]{43}=?$/.test(t)) key = Buffer.from(t, 'base64');
  else if (/^[A-Za-z0-9_-]{43}=?$/.test(t)) key = Buffer.from(t, 'base64url');
  if (!key || key.length !== 32) {
    throw new SecretSourceError('config', source, `${variable} is not a 32-byte key: give 64 hex characters or 44 base64 characters (e.g. from openssl rand -hex 32)`);
  }
  return key;
}

/** A new random master key, 64 hex characters. */
export function generateMasterKey(): string {
  return randomBytes(32).toString('hex');
}

/** Create an empty file (no keys). Fails with `conflict` if the file exists, unless `force`. Returns its version. */
export async function initSecretsFile(path: string, creds: SecretsCredentials, options: { force?: boolean; scrypt?: ScryptParams } = {}): Promise<string> {
  const abs = resolve(path);
  return writeEncrypted(abs, creds, { keys: [] }, `file ${abs}`, { create: !options.force, ...(options.scrypt ? { scrypt: options.scrypt } : {}) });
}

/** Read and decrypt a file: the keys as stored and validated, the version, how it is encrypted. */
export async function readSecretsFile(path: string, creds: SecretsCredentials, options: { signal?: AbortSignal } = {}): Promise<SecretsFileContents> {
  const abs = resolve(path);
  const source = `file ${abs}`;
  const { bytes, mode } = await readRaw(abs, source, options.signal);
  const plaintext = await decryptEnvelope(bytes, creds, source);
  const doc = parsePlaintext(plaintext, source);
  const specs = parseKeyDocument(doc, source);
  const keys = storedKeys(doc);
  const kdf = (JSON.parse(bytes.toString('utf8')) as Envelope).kdf.name;
  return { keys, specs, version: versionOf(bytes), kdf, mode };
}

/**
 * Replace the file's keys (atomically, fresh salt and IV). `keys` are stored as given, so that
 * settings a key does not give still come from the source's `defaults`. Returns the new version.
 */
export async function writeSecretsFile(path: string, creds: SecretsCredentials, keys: readonly KeySpecInput[], options: WriteFileOptions = {}): Promise<string> {
  const abs = resolve(path);
  const source = `file ${abs}`;
  parseKeyDocument({ keys }, source); // never store what a load would refuse
  return writeEncrypted(abs, creds, { keys: keys.map((k) => ({ ...k })) }, source, options);
}

/**
 * Re-encrypt a file under new credentials (a fresh salt and IV), atomically, failing with
 * `conflict` if the file changes meanwhile. The keys are unchanged. Returns the new version.
 */
export async function reencrypt(path: string, oldCreds: SecretsCredentials, newCreds: SecretsCredentials, options: { scrypt?: ScryptParams } = {}): Promise<string> {
  const abs = resolve(path);
  const source = `file ${abs}`;
  const { bytes } = await readRaw(abs, source);
  const doc = parsePlaintext(await decryptEnvelope(bytes, oldCreds, source), source);
  return writeEncrypted(abs, newCreds, doc, source, { expectedVersion: versionOf(bytes), ...(options.scrypt ? { scrypt: options.scrypt } : {}) });
}

// ---------------------------------------------------------------------------------------------
// Internals
// ---------------------------------------------------------------------------------------------

/** 16 hex chars of SHA-256 over the file's bytes (ciphertext: it reveals nothing). */
function versionOf(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex').slice(0, 16);
}

async function readRaw(path: string, source: string, signal?: AbortSignal): Promise<{ bytes: Buffer; mode: number }> {
  try {
    const [bytes, st] = await Promise.all([readFile(path, signal ? { signal } : {}), stat(path)]);
    return { bytes, mode: st.mode & 0o7777 };
  } catch (e) {
    throw fsError(e, path, source, 'read');
  }
}

function fsError(e: unknown, path: string, source: string, doing: 'read' | 'write'): SecretSourceError {
  if (isSecretSourceError(e)) return e;
  const code = (e as NodeJS.ErrnoException)?.code;
  const opts = { cause: e };
  if ((e as Error)?.name === 'AbortError') return new SecretSourceError('unavailable', source, `${doing} of ${path} aborted (timeout)`, opts);
  switch (code) {
    case 'ENOENT':
      return doing === 'read'
        ? new SecretSourceError('not_found', source, `no secrets file at ${path}: create it with keypool secrets init --file ${path}`, opts)
        : new SecretSourceError('not_found', source, `cannot write ${path}: its directory does not exist`, opts);
    case 'EACCES':
    case 'EPERM':
      return new SecretSourceError('denied', source, `cannot ${doing} ${path}: permission denied (run as the file's owner; the file should be mode 600)`, opts);
    case 'EISDIR':
      return new SecretSourceError('config', source, `${path} is a directory: give the path of the secrets file`, opts);
    case 'ENOTDIR':
      return new SecretSourceError('config', source, `${path}: a part of the path is not a directory`, opts);
    default:
      return new SecretSourceError('unavailable', source, `cannot ${doing} ${path}: ${code ?? (e as Error)?.message ?? String(e)}`, opts);
  }
}

function checkScrypt(p: ScryptParams, source: string): void {
  const ok =
    Number.isInteger(p.N) && p.N >= N_RANGE[0] && p.N <= N_RANGE[1] && (p.N & (p.N - 1)) === 0 && Number.isInteger(p.r) && p.r >= 1 && p.r <= 32 && Number.isInteger(p.p) && p.p >= 1 && p.p <= 16;
  if (!ok) throw new SecretSourceError('config', source, `scrypt cost out of range: N a power of two from 2^10 to 2^20, r 1-32, p 1-16`);
}

const scryptAsync = (password: string, salt: Buffer, keylen: number, options: ScryptOptions) =>
  new Promise<Buffer>((res, rej) => scryptCb(password, salt, keylen, options, (err, key) => (err ? rej(err) : res(key))));

/** The last key derived, so that a refresh of an unchanged file does not pay scrypt again. */
let lastDerived: { id: string; key: Buffer } | undefined;

async function deriveKey(kdf: Kdf, creds: SecretsCredentials): Promise<Buffer> {
  if (kdf.name === 'master-key') {
    if (!('masterKey' in creds)) throw new Error('unreachable: kdf and credentials checked before');
    return creds.masterKey;
  }
  if (!('passphrase' in creds)) throw new Error('unreachable: kdf and credentials checked before');
  const passphrase = creds.passphrase.normalize('NFC');
  const id = createHash('sha256').update(JSON.stringify([kdf.N, kdf.r, kdf.p, kdf.salt, passphrase])).digest('hex');
  if (lastDerived?.id === id) return lastDerived.key;
  const key = await scryptAsync(passphrase, Buffer.from(kdf.salt, 'base64'), 32, { N: kdf.N, r: kdf.r, p: kdf.p, maxmem: 256 * kdf.N * kdf.r + 16 * 1024 * 1024 });
  lastDerived = { id, key };
  return key;
}

/** The header bound to the ciphertext: format, version and kdf, serialised the same way every time. */
function aadOf(kdf: Kdf): Buffer {
  const k = kdf.name === 'scrypt' ? { name: kdf.name, N: kdf.N, r: kdf.r, p: kdf.p, salt: kdf.salt } : { name: kdf.name };
  return Buffer.from(JSON.stringify({ format: FORMAT, version: VERSION, kdf: k }), 'utf8');
}

async function encrypt(doc: unknown, creds: SecretsCredentials, scrypt: ScryptParams): Promise<Buffer> {
  const kdf: Kdf = 'passphrase' in creds ? { name: 'scrypt', ...scrypt, salt: randomBytes(SALT_BYTES).toString('base64') } : { name: 'master-key' };
  const key = await deriveKey(kdf, creds);
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(aadOf(kdf));
  const ciphertext = Buffer.concat([cipher.update(JSON.stringify(doc), 'utf8'), cipher.final()]);
  const envelope: Envelope = {
    format: FORMAT,
    version: VERSION,
    kdf,
    iv: iv.toString('base64'),
    ciphertext: ciphertext.toString('base64'),
    tag: cipher.getAuthTag().toString('base64'),
  };
  return Buffer.from(`${JSON.stringify(envelope, null, 2)}\n`, 'utf8');
}

/** Base64 that decodes and encodes back to the same text (Buffer.from would skip bad characters silently). */
function strictBase64(value: unknown, field: string, source: string, length?: number): Buffer {
  if (typeof value !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(value)) throw damaged(source, `${field} is not base64`);
  const b = Buffer.from(value, 'base64');
  if (b.toString('base64') !== value) throw damaged(source, `${field} is not base64`);
  if (length !== undefined && b.length !== length) throw damaged(source, `${field} must be ${length} bytes`);
  return b;
}

const damaged = (source: string, what: string) => new SecretSourceError('invalid', source, `not a valid keypool secrets file: ${what} (the file is damaged, or it is not one keypool secrets init made)`);

function parseEnvelope(bytes: Buffer, source: string): { kdf: Kdf; iv: Buffer; ciphertext: Buffer; tag: Buffer } {
  let env: Record<string, unknown>;
  try {
    env = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
  } catch {
    throw damaged(source, 'it is not JSON');
  }
  if (!env || typeof env !== 'object' || Array.isArray(env) || env.format !== FORMAT) throw damaged(source, `no "format": "${FORMAT}"`);
  if (env.version !== VERSION) throw damaged(source, `unsupported version (this keypool reads version ${VERSION})`);
  const k = env.kdf as Record<string, unknown> | undefined;
  let kdf: Kdf;
  if (k && k.name === 'master-key' && Object.keys(k).length === 1) kdf = { name: 'master-key' };
  else if (k && k.name === 'scrypt') {
    const { N, r, p, salt } = k;
    if (typeof N !== 'number' || typeof r !== 'number' || typeof p !== 'number') throw damaged(source, 'kdf N, r and p must be numbers');
    try {
      checkScrypt({ N, r, p }, source);
    } catch {
      throw damaged(source, 'kdf cost out of range');
    }
    strictBase64(salt, 'kdf.salt', source, SALT_BYTES);
    kdf = { name: 'scrypt', N, r, p, salt: salt as string };
  } else throw damaged(source, 'unknown kdf (expected scrypt or master-key)');
  return {
    kdf,
    iv: strictBase64(env.iv, 'iv', source, IV_BYTES),
    ciphertext: strictBase64(env.ciphertext, 'ciphertext', source),
    tag: strictBase64(env.tag, 'tag', source, TAG_BYTES),
  };
}

async function decryptEnvelope(bytes: Buffer, creds: SecretsCredentials, source: string, names: { passphraseEnv?: string; masterKeyEnv?: string } = {}): Promise<string> {
  const { kdf, iv, ciphertext, tag } = parseEnvelope(bytes, source);
  const passphraseEnv = names.passphraseEnv ?? DEFAULT_PASSPHRASE_ENV;
  const masterKeyEnv = names.masterKeyEnv ?? DEFAULT_MASTER_KEY_ENV;
  if (kdf.name === 'scrypt' && !('passphrase' in creds)) {
    throw new SecretSourceError('config', source, `the file is encrypted with a passphrase: set ${passphraseEnv} (not ${masterKeyEnv})`);
  }
  if (kdf.name === 'master-key' && !('masterKey' in creds)) {
    throw new SecretSourceError('config', source, `the file is encrypted with a master key: set ${masterKeyEnv} (not ${passphraseEnv})`);
  }
  const key = await deriveKey(kdf, creds);
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
    decipher.setAAD(aadOf(kdf));
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(ciphertext), decipher.final()]).toString('utf8');
  } catch {
    throw new SecretSourceError(
      'invalid',
      source,
      `the file failed its integrity check: either the ${kdf.name === 'scrypt' ? 'passphrase' : 'master key'} is wrong or the file was modified (tampered with or damaged); AES-GCM cannot tell the two apart. Check ${kdf.name === 'scrypt' ? passphraseEnv : masterKeyEnv}, else restore the file from a backup`,
    );
  }
}

function parsePlaintext(plaintext: string, source: string): unknown {
  try {
    return JSON.parse(plaintext);
  } catch {
    // authenticated, so written by a keypool with the right key: not JSON means a bug, not an attack
    throw new SecretSourceError('invalid', source, 'the decrypted content is not JSON');
  }
}

/** The key entries of a document as stored (a flat { name: secret } map becomes { name, secret } entries). */
function storedKeys(doc: unknown): KeySpecInput[] {
  if (doc && typeof doc === 'object' && 'keys' in doc) {
    const keys = (doc as { keys: unknown }).keys;
    return (typeof keys === 'string' ? JSON.parse(keys) : keys) as KeySpecInput[];
  }
  return Object.entries(doc as Record<string, unknown>).map(([name, v]) => (typeof v === 'string' ? { name, secret: v } : { ...(v as object) }) as KeySpecInput);
}

const tempPrefix = (path: string) => `.${basename(path)}.tmp-`;

/**
 * Encrypt `doc` and put it at `path` atomically: a temp file in the same directory (created 0600,
 * chmod 0600 whatever the umask, written, fsynced), then rename over the target (or link, when
 * creating, which fails if the target appeared), then fsync of the directory. A reader sees the
 * old file or the new one, never a part; a crash leaves at most a temp file, never read.
 */
async function writeEncrypted(path: string, creds: SecretsCredentials, doc: unknown, source: string, options: WriteFileOptions): Promise<string> {
  const scrypt = options.scrypt ?? DEFAULT_SCRYPT;
  checkScrypt(scrypt, source);
  const check = async () => {
    if (options.expectedVersion === undefined) return;
    let current: Buffer;
    try {
      current = await readFile(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException)?.code === 'ENOENT') throw new SecretSourceError('conflict', source, `the file was removed since it was read (version ${options.expectedVersion}): nothing written`);
      throw fsError(e, path, source, 'read');
    }
    const v = versionOf(current);
    if (v !== options.expectedVersion) {
      throw new SecretSourceError('conflict', source, `the file changed since it was read (version ${options.expectedVersion}, now ${v}): nothing written; read it again and retry`);
    }
  };
  const exists = async () => (await stat(path).then(() => true, (e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? false : Promise.reject(e))));

  await check();
  if (options.create && (await exists().catch((e) => Promise.reject(fsError(e, path, source, 'read'))))) {
    throw new SecretSourceError('conflict', source, `${path} already exists: nothing written (keypool secrets init --force replaces it, and its keys are lost)`);
  }
  const bytes = await encrypt(doc, creds, scrypt);
  options.signal?.throwIfAborted();

  const dir = dirname(path);
  const tmp = join(dir, `${tempPrefix(path)}${process.pid}-${randomBytes(6).toString('hex')}`);
  let placed = false;
  try {
    const fh = await open(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600);
    try {
      await fh.chmod(0o600);
      await fh.writeFile(bytes);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await check(); // again, as late as possible: the window for a lost update is this one step
    if (options.create) {
      try {
        await link(tmp, path); // fails with EEXIST if the target appeared meanwhile
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EEXIST') throw new SecretSourceError('conflict', source, `${path} already exists: nothing written (keypool secrets init --force replaces it, and its keys are lost)`);
        if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'EXDEV') throw e;
        // a filesystem without hard links: check and rename (a small window)
        if (await exists()) throw new SecretSourceError('conflict', source, `${path} already exists: nothing written`);
        await rename(tmp, path);
        placed = true;
      }
    } else {
      await rename(tmp, path);
      placed = true;
    }
  } catch (e) {
    throw fsError(e, path, source, 'write');
  } finally {
    if (!placed) await unlink(tmp).catch(() => undefined);
  }
  await syncDir(dir);
  return versionOf(bytes);
}

/** fsync a directory so that a rename in it survives a crash (not possible on every platform: then skipped). */
async function syncDir(dir: string): Promise<void> {
  let fh;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch {
    // Windows and some filesystems cannot open or fsync a directory
  } finally {
    await fh?.close().catch(() => undefined);
  }
}
