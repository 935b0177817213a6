/**
 * `keypool secrets ...`: the AES-256-GCM encrypted secrets file (a `type: file` source), managed
 * locally; no gateway involved. The file is named by --file (env KEYPOOL_SECRETS_FILE) and opened
 * with KEYPOOL_SECRETS_PASSPHRASE or KEYPOOL_SECRETS_MASTER_KEY, never with an argument (argv shows
 * in `ps` and in shell history). A provider key is read from stdin, never from an argument, and is
 * never printed: lists show its id and hint. The one secret ever printed is the master key that
 * `init --generate-master-key` was asked to make, once.
 */
import { resolve } from 'node:path';
import { Option, type Command } from 'commander';
import type * as CoreLib from '@keypool/core';
import type { KeySpec, KeySpecInput } from '@keypool/core';
import type * as SecretsLib from '@keypool/secrets/local';
import type { SecretsCredentials, SecretsFileContents } from '@keypool/secrets/local';
import type { Context } from '../context.js';
import { CliError, usageError } from '../errors.js';
import { count, NONE, table, usd, type Cell } from '../format.js';
import { examples, httpUrl, integer, list, paragraphs, positive, type KeyLimitOptions } from '../options.js';

/**
 * The file's code (and @keypool/core, zod) is loaded when a secrets command runs, not when the CLI
 * starts: every other command would pay for it.
 */
let L: typeof SecretsLib & Pick<typeof CoreLib, 'hintOf' | 'keyIdOf' | 'KeySpecSchema'>;
function withLib<A extends unknown[]>(action: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args) => {
    if (!L) {
      const [secrets, core] = await Promise.all([import('@keypool/secrets/local'), import('@keypool/core')]);
      L = { ...secrets, hintOf: core.hintOf, keyIdOf: core.keyIdOf, KeySpecSchema: core.KeySpecSchema };
    }
    return action(...args);
  };
}

export const FILE_ENV = 'KEYPOOL_SECRETS_FILE';
export const PASSPHRASE_ENV = 'KEYPOOL_SECRETS_PASSPHRASE';
export const MASTER_KEY_ENV = 'KEYPOOL_SECRETS_MASTER_KEY';
export const NEW_PASSPHRASE_ENV = 'KEYPOOL_SECRETS_NEW_PASSPHRASE';
export const NEW_MASTER_KEY_ENV = 'KEYPOOL_SECRETS_NEW_MASTER_KEY';
/** Shortest passphrase accepted for a new encryption (init, rotate --encryption). */
export const MIN_PASSPHRASE = 12;
/** Most bytes read from stdin for one key. */
const STDIN_LIMIT = 64 * 1024;

interface FileOptions {
  file?: string;
}

interface KeyOptions extends FileOptions, KeyLimitOptions {
  name: string;
  models: string[];
  provider?: string;
  baseUrl?: string;
}

/** Spec fields and the option that sets each (for messages). */
const OPTION_OF: Record<string, string> = {
  name: '--name',
  models: '--models',
  provider: '--provider',
  baseURL: '--base-url',
  rpm: '--rpm',
  tpm: '--tpm',
  rpmBurst: '--rpm-burst',
  tpmBurst: '--tpm-burst',
  maxConcurrent: '--max-concurrent',
  weight: '--weight',
  budget: '--budget-usd / --budget-period',
  tpmCounts: '--tpm-counts',
};

export function registerSecrets(program: Command, ctx: Context): void {
  const secrets = program
    .command('secrets')
    .description('manage an encrypted secrets file of provider keys (a `type: file` secret source)')
    .addHelpText(
      'after',
      paragraphs(
        `The file is named by --file (env ${FILE_ENV}) and is opened with ${PASSPHRASE_ENV} (a passphrase) or ${MASTER_KEY_ENV} (32 bytes, 64 hex characters): set exactly one. They are read from the environment only, never from arguments, which show in ps and shell history.`,
        'A provider key is read from stdin (one line) and never printed: list shows its id and hint. Gateways and workers whose config has a `type: file` source with this path pick changes up at their next secrets refresh.',
        'Exit codes: 0 done; 1 failed (no such file, it failed its integrity check: wrong passphrase or modified, cannot write, changed meanwhile); 2 usage (bad option or argument, no credentials, empty stdin, a duplicate key, no such key).',
      ) +
        examples(
          `export ${FILE_ENV}=/etc/keypool/secrets.json ${PASSPHRASE_ENV}=...`,
          'keypool secrets init',
          'keypool secrets add --name openai-1 --models gpt-4o,gpt-4o-mini --rpm 500 < openai-1.key',
          'keypool secrets list',
          'printf %s "$NEW_KEY" | keypool secrets rotate openai-1',
        ),
    );

  // ---- init
  const init = secrets
    .command('init')
    .description('create an empty encrypted secrets file')
    .option('--force', 'replace an existing file (its keys are lost)')
    .option('--generate-master-key', `encrypt with a new random master key and print it once on stdout (instead of ${PASSPHRASE_ENV} / ${MASTER_KEY_ENV})`)
    .addHelpText(
      'after',
      paragraphs(
        `Encrypts with the passphrase in ${PASSPHRASE_ENV} (scrypt; ${MIN_PASSPHRASE} characters or more) or the key in ${MASTER_KEY_ENV}. The file is written with mode 600.`,
        `--generate-master-key: stdout is the new master key alone (64 hex characters), so that $(...) captures it; it is not kept anywhere and cannot be shown again: store it now and set ${MASTER_KEY_ENV} to it wherever the file is read.`,
      ) +
        examples(
          `${PASSPHRASE_ENV}="$(cat passphrase.txt)" keypool secrets init --file secrets.json`,
          'KEY=$(keypool secrets init --file secrets.json --generate-master-key)',
        ),
    );
  addFileOption(init).action(withLib(async (opts: FileOptions & { force?: boolean; generateMasterKey?: boolean }) => {
    const file = fileOf(opts);
    let creds: SecretsCredentials;
    let generated: string | undefined;
    if (opts.generateMasterKey) {
      generated = L.generateMasterKey();
      creds = { masterKey: L.parseMasterKey(generated) };
    } else creds = newCredentials(process.env, PASSPHRASE_ENV, MASTER_KEY_ENV);
    await guard(() => L.initSecretsFile(file, creds, { force: Boolean(opts.force) }));
    if (generated !== undefined) {
      ctx.out(`${generated}\n`);
      ctx.err(`created ${file}: empty, encrypted with the new master key printed on stdout. It will not be shown again: store it now, and set ${MASTER_KEY_ENV} to it wherever the file is read.\n`);
    } else {
      ctx.out(`created ${file}: empty, encrypted with the ${'passphrase' in creds ? `passphrase in ${PASSPHRASE_ENV}` : `master key in ${MASTER_KEY_ENV}`}. Add keys with keypool secrets add.\n`);
    }
  }));

  // ---- add
  const add = addKeyOptions(
    secrets
      .command('add')
      .description('add a provider key: its secret from stdin (one line), its settings from options')
      .requiredOption('--name <name>', 'a label for people (status, logs); unique in the file')
      .requiredOption('--models <list>', 'models the key serves, comma-separated', list),
  ).addHelpText(
    'after',
    paragraphs(
      'The secret is read from stdin: redirect a file or pipe it, never type it as an argument. A terminal on stdin is refused (the key would be echoed). A name or a secret already in the file is refused.',
      'Settings not given take the defaults of the source in the config (defaults:), then those of a key (provider openai, no limits, weight 1).',
    ) +
      examples(
        'keypool secrets add --name openai-1 --models gpt-4o,gpt-4o-mini --rpm 500 --tpm 200000 < openai-1.key',
        'printf %s "$GROQ_KEY" | keypool secrets add --name groq-1 --provider groq --base-url https://api.groq.com/openai/v1 --models llama-3.3-70b-versatile',
        'pass show openai/batch | keypool secrets add --name batch --models gpt-4o-mini --budget-usd 50 --budget-period day',
      ),
  );
  addFileOption(add).action(withLib(async (opts: KeyOptions) => {
    const file = fileOf(opts);
    const creds = currentCredentials();
    const spec = specOf(opts);
    const secret = await readSecretLine(process.stdin, 'the secret of the key');
    const contents = await guard(() => L.readSecretsFile(file, creds));
    const entry = { ...spec, secret } as KeySpecInput;
    const parsed = validate(entry);
    if (contents.keys.some((k) => k.name === opts.name)) {
      throw usageError(`a key named '${opts.name}' is already in ${file}: pick another --name, or change its secret with keypool secrets rotate ${opts.name}`);
    }
    const same = contents.specs.find((k) => k.secret === secret);
    if (same) throw usageError(`this secret is already in ${file}, as key ${label(same)}: list each key once`);
    await guard(() => L.writeSecretsFile(file, creds, [...contents.keys, entry], { expectedVersion: contents.version }));
    ctx.out(`added key ${opts.name} (id ${idOf(parsed)}, ${L.hintOf(parsed.secret)}) to ${file}: ${contents.keys.length + 1} key(s). Processes reading the file take it at their next secrets refresh.\n`);
  }));

  // ---- remove
  const remove = secrets
    .command('remove <key>')
    .description('remove a key (by name, or by id) from the file')
    .addHelpText(
      'after',
      paragraphs('Processes reading the file retire the key at their next secrets refresh: no new leases, those in flight finish.') +
        examples('keypool secrets remove openai-1', 'keypool secrets remove 3f9a1c0b2d4e5f60 --file /etc/keypool/secrets.json'),
    );
  addFileOption(remove).action(withLib(async (ref: string, opts: FileOptions) => {
    const file = fileOf(opts);
    const creds = currentCredentials();
    const contents = await guard(() => L.readSecretsFile(file, creds));
    const i = findKey(contents, ref, file);
    const gone = contents.specs[i]!;
    await guard(() => L.writeSecretsFile(file, creds, contents.keys.filter((_, j) => j !== i), { expectedVersion: contents.version }));
    ctx.out(`removed key ${label(gone)} from ${file}: ${contents.keys.length - 1} key(s) left. Processes reading the file retire it at their next secrets refresh.\n`);
  }));

  // ---- list
  const ls = secrets
    .command('list')
    .description('one row per key: name, id, hint, provider, models, limits (never a secret)')
    .option('--json', 'print JSON (for scripts): the same fields, never a secret')
    .addHelpText(
      'after',
      paragraphs("Shows each key's own settings; settings a key does not give show the key defaults (a source's defaults: in the config apply on top when it loads the file).") +
        examples('keypool secrets list', 'keypool secrets list --json | jq -r ".keys[].name"'),
    );
  addFileOption(ls).action(withLib(async (opts: FileOptions & { json?: boolean }) => {
    const file = fileOf(opts);
    const contents = await guard(() => L.readSecretsFile(file, currentCredentials()));
    const keys = contents.specs.map(publicKey);
    if (opts.json) {
      ctx.out(`${JSON.stringify({ file, version: contents.version, encryption: contents.kdf === 'scrypt' ? 'passphrase' : 'master-key', keys }, null, 2)}\n`);
    } else if (keys.length === 0) ctx.out(`no keys in ${file}: add one with keypool secrets add\n`);
    else ctx.out(secretsTable(keys, ctx.color));
  }));

  // ---- rotate
  const rotate = secrets
    .command('rotate [key]')
    .description("replace a key's secret (new secret from stdin), or with --encryption re-encrypt the file under new credentials")
    .option('--encryption', `re-encrypt the whole file under ${NEW_PASSPHRASE_ENV} or ${NEW_MASTER_KEY_ENV} (new salt and IV)`)
    .addHelpText(
      'after',
      paragraphs(
        "rotate <key>: the new secret is read from stdin; the key's settings stay. It gets a new id: processes reading the file take it as a new key at their next secrets refresh and drain the old one. Revoke the old secret at the provider after that.",
        `rotate --encryption: opens the file with ${PASSPHRASE_ENV} / ${MASTER_KEY_ENV} and writes it again (atomically) under ${NEW_PASSPHRASE_ENV} (${MIN_PASSPHRASE} characters or more) or ${NEW_MASTER_KEY_ENV}. Then set the new one as ${PASSPHRASE_ENV} / ${MASTER_KEY_ENV} wherever the file is read: until then those processes fail to refresh and keep the keys they hold.`,
      ) +
        examples(
          'keypool secrets rotate openai-1 < openai-1.new.key',
          `${NEW_PASSPHRASE_ENV}="$(cat new-passphrase.txt)" keypool secrets rotate --encryption`,
          `${NEW_MASTER_KEY_ENV}=$(openssl rand -hex 32) keypool secrets rotate --encryption`,
        ),
    );
  addFileOption(rotate).action(withLib(async (ref: string | undefined, opts: FileOptions & { encryption?: boolean }) => {
    if (opts.encryption && ref !== undefined) throw usageError('give a key to rotate its secret, or --encryption to re-encrypt the file, not both');
    if (!opts.encryption && ref === undefined) throw usageError('give the key whose secret to replace (keypool secrets rotate <key>), or --encryption to re-encrypt the file');
    const file = fileOf(opts);
    const creds = currentCredentials();
    if (opts.encryption) {
      const next = newCredentials(process.env, NEW_PASSPHRASE_ENV, NEW_MASTER_KEY_ENV);
      if (sameCredentials(creds, next)) throw usageError(`the new credentials are the current ones: set ${NEW_PASSPHRASE_ENV} or ${NEW_MASTER_KEY_ENV} to new ones`);
      await guard(() => L.reencrypt(file, creds, next));
      const now = 'passphrase' in next ? PASSPHRASE_ENV : MASTER_KEY_ENV;
      ctx.out(
        `re-encrypted ${file} under the new ${'passphrase' in next ? 'passphrase' : 'master key'} (${'passphrase' in next ? NEW_PASSPHRASE_ENV : NEW_MASTER_KEY_ENV}); the keys are unchanged. Set ${now} to it wherever the file is read.\n`,
      );
      return;
    }
    const secret = await readSecretLine(process.stdin, 'the new secret of the key');
    const contents = await guard(() => L.readSecretsFile(file, creds));
    const i = findKey(contents, ref!, file);
    const old = contents.specs[i]!;
    if (old.secret === secret) throw usageError(`the secret read from stdin is the current secret of key ${label(old)}: give the new one`);
    const same = contents.specs.find((k) => k.secret === secret);
    if (same) throw usageError(`the secret read from stdin is already in ${file}, as key ${label(same)}: list each key once`);
    const entry = { ...contents.keys[i]!, secret } as KeySpecInput;
    validate(entry);
    await guard(() => L.writeSecretsFile(file, creds, contents.keys.map((k, j) => (j === i ? entry : k)), { expectedVersion: contents.version }));
    ctx.out(
      `rotated key ${old.name ?? idOf(old)}: new id ${idOf({ secret, baseURL: old.baseURL })} (${L.hintOf(secret)}), was ${idOf(old)} (${L.hintOf(old.secret)}). Processes reading the file take the new key at their next secrets refresh and drain the old one; revoke the old secret at the provider after that.\n`,
    );
  }));
}

function addFileOption(cmd: Command): Command {
  return cmd.addOption(new Option('--file <path>', 'the encrypted secrets file').env(FILE_ENV));
}

function addKeyOptions(cmd: Command): Command {
  return cmd
    .option('--provider <name>', 'provider name, for status and metrics (default openai)')
    .option('--base-url <url>', 'base URL of the OpenAI-compatible API (default https://api.openai.com/v1)', httpUrl)
    .option('--rpm <n>', 'requests per minute (default 0 = no limit)', integer(0))
    .option('--tpm <n>', 'tokens per minute (default 0 = no limit)', integer(0))
    .option('--rpm-burst <n>', 'request bucket size (needs --rpm)', integer(1))
    .option('--tpm-burst <n>', 'token bucket size, also the largest request (needs --tpm)', integer(1))
    .option('--max-concurrent <n>', 'leases in flight at once (default 0 = no limit)', integer(0))
    .option('--weight <x>', 'relative share of traffic (default 1)', positive)
    .option('--budget-usd <x>', 'spend cap in USD per budget period (default: none)', positive)
    .addOption(new Option('--budget-period <period>', 'budget period, UTC (default month)').choices(['day', 'month', 'total']))
    .addOption(new Option('--tpm-counts <how>', 'what the provider counts against TPM').choices(['estimate', 'usage']));
}

function fileOf(opts: FileOptions): string {
  if (!opts.file) throw usageError(`no secrets file: pass --file <path> or set ${FILE_ENV}`);
  return resolve(opts.file);
}

/** A failure of the file (exit 1), or of its settings (exit 2). Messages of the secrets package quote no secret. */
async function guard<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw cliErrorOf(e);
  }
}

function cliErrorOf(e: unknown): unknown {
  if (!L.isSecretSourceError(e)) return e;
  return e.code === 'config' ? usageError(e.message) : new CliError('SECRETS_FAILED', e.message, { cause: e });
}

/** The credentials that open the file now. */
function currentCredentials(): SecretsCredentials {
  try {
    return L.credentialsFromEnv(process.env, { passphraseEnv: PASSPHRASE_ENV, masterKeyEnv: MASTER_KEY_ENV }, 'secrets file');
  } catch (e) {
    throw cliErrorOf(e);
  }
}

/** Credentials for a new encryption, from two variables; a passphrase must be long enough. */
function newCredentials(env: NodeJS.ProcessEnv, passphraseEnv: string, masterKeyEnv: string): SecretsCredentials {
  let creds: SecretsCredentials;
  try {
    creds = L.credentialsFromEnv(env, { passphraseEnv, masterKeyEnv }, 'secrets file');
  } catch (e) {
    throw cliErrorOf(e);
  }
  if ('passphrase' in creds && [...creds.passphrase].length < MIN_PASSPHRASE) {
    throw usageError(`${passphraseEnv} is too short for a new encryption: use ${MIN_PASSPHRASE} characters or more (or a master key in ${masterKeyEnv})`);
  }
  return creds;
}

function sameCredentials(a: SecretsCredentials, b: SecretsCredentials): boolean {
  if ('passphrase' in a && 'passphrase' in b) return a.passphrase.normalize('NFC') === b.passphrase.normalize('NFC');
  if ('masterKey' in a && 'masterKey' in b) return a.masterKey.equals(b.masterKey);
  return false;
}

/** The settings given by options, as stored (only what was given). */
function specOf(opts: KeyOptions): Omit<KeySpecInput, 'secret'> {
  if (opts.budgetPeriod !== undefined && opts.budgetUsd === undefined) throw usageError('--budget-period needs --budget-usd');
  if (opts.rpmBurst !== undefined && !opts.rpm) throw usageError('--rpm-burst needs --rpm');
  if (opts.tpmBurst !== undefined && !opts.tpm) throw usageError('--tpm-burst needs --tpm');
  const spec: Record<string, unknown> = { name: opts.name, models: opts.models };
  const fields = [
    ['provider', 'provider'],
    ['baseURL', 'baseUrl'],
    ['rpm', 'rpm'],
    ['tpm', 'tpm'],
    ['rpmBurst', 'rpmBurst'],
    ['tpmBurst', 'tpmBurst'],
    ['maxConcurrent', 'maxConcurrent'],
    ['weight', 'weight'],
    ['tpmCounts', 'tpmCounts'],
  ] as const;
  for (const [field, opt] of fields) if (opts[opt] !== undefined) spec[field] = opts[opt];
  if (opts.budgetUsd !== undefined) spec.budget = { usd: opts.budgetUsd, period: opts.budgetPeriod ?? 'month' };
  return spec as Omit<KeySpecInput, 'secret'>;
}

/** A key as a process would load it; problems named by option, never quoting the secret. */
function validate(entry: KeySpecInput): KeySpec {
  const r = L.KeySpecSchema.safeParse(entry);
  if (r.success) return r.data;
  const problems = r.error.issues.map((i) => {
    const field = String(i.path[0] ?? '');
    if (field === 'secret') return 'the secret read from stdin is too short: a provider key has 8 characters or more';
    return `${OPTION_OF[field] ?? field}: ${i.message.replace(/,? ?received .*$/i, '')}`;
  });
  throw usageError(problems.join('; '));
}

/** The index of the key `ref` names: by name, else by id. */
function findKey(contents: SecretsFileContents, ref: string, file: string): number {
  const named = contents.specs.flatMap((k, i) => (k.name === ref ? [i] : []));
  if (named.length === 1) return named[0]!;
  if (named.length > 1) throw usageError(`${named.length} keys are named '${ref}' in ${file} (${named.map((i) => idOf(contents.specs[i]!)).join(', ')}): give the id`);
  const byId = contents.specs.findIndex((k) => idOf(k) === ref);
  if (byId >= 0) return byId;
  throw usageError(`no key named '${ref}' (or with that id) in ${file}: keypool secrets list shows them`);
}

/** A key's id: its secret and its destination (see keyIdOf). */
const idOf = (k: Pick<KeySpec, 'secret' | 'baseURL'>) => L.keyIdOf(k.secret, k.baseURL);

const label = (k: KeySpec) => (k.name ? `${k.name} (id ${idOf(k)})` : idOf(k));

/** What list shows of a key: everything but the secret. */
export interface PublicKey {
  name: string | null;
  id: string;
  hint: string;
  provider: string;
  baseURL: string;
  models: string[];
  rpm: number;
  tpm: number;
  rpmBurst: number | null;
  tpmBurst: number | null;
  maxConcurrent: number;
  weight: number;
  budget: { usd: number; period: string } | null;
  tpmCounts: string | null;
}

function publicKey(k: KeySpec): PublicKey {
  return {
    name: k.name ?? null,
    id: idOf(k),
    hint: L.hintOf(k.secret),
    provider: k.provider,
    baseURL: k.baseURL,
    models: [...k.models],
    rpm: k.rpm,
    tpm: k.tpm,
    rpmBurst: k.rpmBurst ?? null,
    tpmBurst: k.tpmBurst ?? null,
    maxConcurrent: k.maxConcurrent,
    weight: k.weight,
    budget: k.budget ? { usd: k.budget.usd, period: k.budget.period } : null,
    tpmCounts: k.tpmCounts ?? null,
  };
}

const SECRETS_HEADER = ['NAME', 'ID', 'HINT', 'PROVIDER', 'MODELS', 'RPM', 'TPM', 'MAX CONC', 'WEIGHT', 'BUDGET', 'BASE URL'];

export function secretsTable(keys: PublicKey[], color: boolean): string {
  const limit = (n: number, burst: number | null) => (n > 0 ? `${count(n)}${burst !== null ? ` (burst ${burst})` : ''}` : NONE);
  const rows = keys.map((k): Cell[] => [
    k.name ?? NONE,
    { text: k.id, style: 'dim' },
    k.hint,
    k.provider,
    k.models.join(','),
    limit(k.rpm, k.rpmBurst),
    limit(k.tpm, k.tpmBurst),
    k.maxConcurrent > 0 ? String(k.maxConcurrent) : NONE,
    String(k.weight),
    k.budget ? `${usd(k.budget.usd)}/${k.budget.period}` : NONE,
    k.baseURL,
  ]);
  return table(SECRETS_HEADER, rows, { color, right: [5, 6, 7, 8] });
}

/**
 * One secret from `stream` (stdin): one line, surrounding whitespace dropped. Refused with a
 * message saying how to give it: a terminal (it would echo, and land in scrollback), nothing, more
 * than one line, whitespace inside. The message never quotes what was read.
 */
export async function readSecretLine(stream: NodeJS.ReadableStream & { isTTY?: boolean }, what = 'the secret'): Promise<string> {
  const how = 'redirect a file (< key.txt) or pipe it (printf %s "$KEY" | keypool secrets ...)';
  if (stream.isTTY) throw usageError(`${what} is read from stdin, which is a terminal: ${how}, so that it is neither echoed nor kept in shell history`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    size += b.length;
    if (size > STDIN_LIMIT) throw usageError(`stdin holds more than ${STDIN_LIMIT / 1024} KiB: give ${what} alone, on one line`);
    chunks.push(b);
  }
  const lines = Buffer.concat(chunks)
    .toString('utf8')
    .replace(/^\uFEFF/, '')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '');
  if (lines.length === 0) throw usageError(`stdin is empty: give ${what} on stdin: ${how}`);
  if (lines.length > 1) throw usageError(`stdin holds ${lines.length} lines: give ${what} alone, on one line`);
  const secret = lines[0]!;
  if (/\s/.test(secret)) throw usageError(`${what} read from stdin contains whitespace: give the provider key alone (no "Bearer ", no name)`);
  return secret;
}
