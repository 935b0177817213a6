/**
 * Keys from environment variables, the way most deployments already hand secrets to a process
 * (Kubernetes secrets as env, docker --env-file, a CI secret store). Read-only.
 *
 * Numbered variables, with `prefix: KEYPOOL_OPENAI_KEY`:
 *
 *   KEYPOOL_OPENAI_KEY_1=sk-...                 the secret of key 1 (any number; gaps allowed)
 *   KEYPOOL_OPENAI_KEY_1_MODELS=gpt-4o,gpt-4o-mini
 *   KEYPOOL_OPENAI_KEY_1_RPM=500
 *   KEYPOOL_OPENAI_KEY_7=sk-...
 *   KEYPOOL_OPENAI_KEY_7_OPTIONS={"models":["gpt-4o-mini"],"tpm":200000}
 *
 * and/or one variable holding a whole key document (`json: KEYPOOL_KEYS`, see document.ts).
 */
import { KeySpecSchema, type KeySpec, type KeySpecInput } from '@keypool/core';
import { z } from 'zod';
import { digestVersion, parseKeyDefaults, parseKeyDocument, type KeyDefaults } from './document.js';
import { isSecretSourceError, SecretSourceError, type SecretSet, type SecretSource, type SourceCallOptions } from './types.js';

const VAR_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const varName = (what: string) => z.string().regex(VAR_NAME, `must be an environment variable name (letters, digits and "_", not starting with a digit) ${what}`);

const DefaultsCheck = KeySpecSchema.omit({ secret: true }).partial().strict();

/**
 * `defaults` of a source config: the settings of a key but its secret. Validated without applying
 * the key schema's own defaults (a key's missing fields take those when the key itself is parsed).
 */
export const KeyDefaultsConfigSchema = z
  .record(z.string(), z.unknown())
  .superRefine((value, ctx) => {
    const r = DefaultsCheck.safeParse(value);
    if (!r.success) for (const i of r.error.issues) ctx.addIssue({ code: 'custom', path: i.path, message: i.message.replace(/,? ?received .*$/i, '') });
  })
  .optional()
  .describe(
    'Settings for every key that does not give its own: the fields of a key except secret (models, provider, baseURL, rpm, tpm, maxConcurrent, weight, budget...).',
  );

export const EnvSourceConfigSchema = z
  .object({
    type: z.literal('env').describe('Keys from environment variables of the process.'),
    prefix: varName('(e.g. KEYPOOL_OPENAI_KEY)')
      .optional()
      .describe(
        'Numbered variables: PREFIX_1, PREFIX_2, ... (any numbers, gaps allowed) each hold one secret; PREFIX_N_NAME, _MODELS (comma list), _PROVIDER, _BASE_URL, _RPM, _TPM, _RPM_BURST, _TPM_BURST, _MAX_CONCURRENT, _WEIGHT, _BUDGET_USD, _BUDGET_PERIOD, _TPM_COUNTS or _OPTIONS (JSON of settings) its settings. Name default: the prefix without KEYPOOL_ and _KEY, lowercased, and the number (openai-1).',
      ),
    json: varName('(e.g. KEYPOOL_KEYS)')
      .optional()
      .describe('A variable holding a JSON key document: {"keys": [{"secret": ..., "models": [...]}, ...]} or {"<name>": "<secret>", ...}.'),
    defaults: KeyDefaultsConfigSchema,
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.prefix === undefined && c.json === undefined) ctx.addIssue({ code: 'custom', path: ['prefix'], message: 'give prefix (numbered variables), json (one variable with a key document), or both' });
  });

export type EnvSourceConfig = z.input<typeof EnvSourceConfigSchema>;

export interface EnvSourceOptions extends Omit<EnvSourceConfig, 'type'> {
  type?: 'env';
  /** The variables to read (default process.env), read again at every load. */
  env?: NodeJS.ProcessEnv;
}

/** Per-key setting variables: PREFIX_N_<SUFFIX>. */
const SETTINGS = {
  NAME: { field: 'name', kind: 'string', hint: 'a label, e.g. openai-main' },
  MODELS: { field: 'models', kind: 'list', hint: 'a comma-separated list, e.g. gpt-4o,gpt-4o-mini' },
  PROVIDER: { field: 'provider', kind: 'string', hint: 'e.g. openai' },
  BASE_URL: { field: 'baseURL', kind: 'string', hint: 'a URL, e.g. https://api.openai.com/v1' },
  RPM: { field: 'rpm', kind: 'int0', hint: 'requests per minute, e.g. 500 (0 = no limit)' },
  TPM: { field: 'tpm', kind: 'int0', hint: 'tokens per minute, e.g. 200000 (0 = no limit)' },
  RPM_BURST: { field: 'rpmBurst', kind: 'int1', hint: 'a request bucket size, e.g. 20' },
  TPM_BURST: { field: 'tpmBurst', kind: 'int1', hint: 'a token bucket size, e.g. 32768' },
  MAX_CONCURRENT: { field: 'maxConcurrent', kind: 'int0', hint: 'leases in flight at once, e.g. 20 (0 = no limit)' },
  WEIGHT: { field: 'weight', kind: 'positive', hint: 'a relative share of traffic, e.g. 1 or 0.5' },
  BUDGET_USD: { field: 'budget.usd', kind: 'positive', hint: 'dollars per budget period, e.g. 50' },
  BUDGET_PERIOD: { field: 'budget.period', kind: 'string', hint: 'day, month or total' },
  TPM_COUNTS: { field: 'tpmCounts', kind: 'string', hint: 'estimate or usage' },
  OPTIONS: { field: '', kind: 'json', hint: 'a JSON object of settings, e.g. {"models":["gpt-4o-mini"],"rpm":500}' },
} as const;

type Suffix = keyof typeof SETTINGS;

const KIND_TEXT = { int0: 'a whole number >= 0', int1: 'a whole number >= 1', positive: 'a number > 0' } as const;

/** Environment variables as a source of keys. Read-only: change the variables and restart (or refresh). */
export class EnvSource implements SecretSource {
  readonly kind = 'env' as const;
  readonly describe: string;
  private readonly prefix: string | undefined;
  private readonly json: string | undefined;
  private readonly defaults: KeyDefaults;
  private readonly env: NodeJS.ProcessEnv | undefined;

  constructor(options: EnvSourceOptions) {
    const { env, ...config } = options;
    const r = EnvSourceConfigSchema.safeParse({ ...config, type: 'env' });
    if (!r.success) {
      throw new SecretSourceError('config', 'env source', r.error.issues.map((i) => `${[...i.path].join('.') || 'config'}: ${i.message}`).join('; '));
    }
    this.prefix = r.data.prefix;
    this.json = r.data.json;
    this.env = env;
    this.describe = `env ${[this.prefix && `${this.prefix}_<n>`, this.json].filter(Boolean).join(' + ')}`;
    this.defaults = r.data.defaults === undefined ? {} : parseKeyDefaults(r.data.defaults, this.describe);
  }

  async load(options: SourceCallOptions = {}): Promise<SecretSet> {
    options.signal?.throwIfAborted();
    const env = this.env ?? process.env;
    const keys: KeySpec[] = [];
    const where: string[] = [];
    if (this.prefix !== undefined) {
      for (const { spec, variable } of this.numbered(env, this.prefix)) {
        keys.push(spec);
        where.push(variable);
      }
    }
    if (this.json !== undefined) {
      const raw = env[this.json];
      if (raw === undefined || raw.trim() === '') {
        throw new SecretSourceError('config', this.describe, `${this.json} is not set${raw === undefined ? '' : ' (it is empty)'}: set it to a JSON key document, e.g. {"keys": [{"secret": "...", "models": ["gpt-4o-mini"]}]}`);
      }
      let doc: unknown;
      try {
        doc = JSON.parse(raw);
      } catch {
        // JSON.parse's message quotes the text around the error: it could hold a secret
        throw new SecretSourceError('invalid', this.describe, `${this.json} is not valid JSON: set it to a key document, e.g. {"keys": [{"secret": "...", "models": ["gpt-4o-mini"]}]}`);
      }
      let specs: KeySpec[];
      try {
        specs = parseKeyDocument(doc, this.json, this.defaults);
      } catch (e) {
        if (isSecretSourceError(e)) throw new SecretSourceError(e.code, this.describe, e.message, { cause: e });
        throw e;
      }
      specs.forEach((s, i) => {
        keys.push(s);
        where.push(`${this.json} keys[${i}]`);
      });
    }
    const seen = new Map<string, string>();
    keys.forEach((k, i) => {
      const first = seen.get(k.secret);
      if (first !== undefined) throw new SecretSourceError('invalid', this.describe, `${where[i]} holds the same secret as ${first}: list each key once`);
      seen.set(k.secret, where[i]!);
    });
    return { version: digestVersion(keys), keys };
  }

  /** Every PREFIX_N, sorted by N, with its settings. */
  private numbered(env: NodeJS.ProcessEnv, prefix: string): { spec: KeySpec; variable: string }[] {
    const secretRe = new RegExp(`^${prefix}_(\\d+)$`);
    const settingRe = new RegExp(`^${prefix}_(\\d+)_([A-Za-z][A-Za-z0-9_]*)$`);
    const byNumber = new Map<number, string>();
    const settings = new Map<number, Map<Suffix, string>>();
    const errors: string[] = [];
    for (const [name, value] of Object.entries(env)) {
      if (value === undefined) continue;
      const s = secretRe.exec(name);
      if (s) {
        const n = Number(s[1]);
        const other = byNumber.get(n);
        if (other !== undefined) errors.push(`${name} and ${other} both name key ${n}: keep one`);
        else byNumber.set(n, name);
        continue;
      }
      const o = settingRe.exec(name);
      if (!o) continue;
      const suffix = o[2]!;
      if (!Object.hasOwn(SETTINGS, suffix)) {
        errors.push(`${name}: unknown setting ${suffix}; the settings of key ${Number(o[1])} are ${prefix}_${Number(o[1])}_ followed by ${Object.keys(SETTINGS).join(', ')}`);
        continue;
      }
      const n = Number(o[1]);
      if (!settings.has(n)) settings.set(n, new Map());
      const twice = settings.get(n)!.get(suffix as Suffix);
      if (twice !== undefined) errors.push(`${name} and ${twice} both set ${suffix} of key ${n}: keep one`);
      settings.get(n)!.set(suffix as Suffix, name);
    }
    for (const [n, vars] of settings) {
      if (!byNumber.has(n)) errors.push(`${[...vars.values()].join(', ')} set but ${prefix}_${n} (the secret of key ${n}) is not`);
    }
    if (errors.length > 0) throw new SecretSourceError('config', this.describe, errors.join('; '));
    if (byNumber.size === 0) {
      throw new SecretSourceError('config', this.describe, `no variable ${prefix}_1, ${prefix}_2, ... is set: set ${prefix}_1 to a provider key (and ${prefix}_1_MODELS to its models)`);
    }

    const out: { spec: KeySpec; variable: string }[] = [];
    const issues: string[] = [];
    for (const n of [...byNumber.keys()].sort((a, b) => a - b)) {
      const variable = byNumber.get(n)!;
      const secret = env[variable]!.trim();
      if (secret === '') {
        issues.push(`${variable} is empty: set it to the provider key, or unset it`);
        continue;
      }
      const vars = settings.get(n) ?? new Map<Suffix, string>();
      const from = new Map<string, string>(); // top-level field -> the variable that gave it
      let input: Record<string, unknown> = { ...this.defaults, name: defaultName(prefix, n) };
      const optionsVar = vars.get('OPTIONS');
      if (optionsVar !== undefined) {
        const parsed = parseOptions(env[optionsVar]!, optionsVar);
        if (typeof parsed === 'string') {
          issues.push(parsed);
          continue;
        }
        input = { ...input, ...parsed };
        for (const f of Object.keys(parsed)) from.set(f, `${optionsVar} (field ${f})`);
      }
      let bad = false;
      const budget: { usd?: number; period?: unknown } = {};
      for (const [suffix, name] of vars) {
        if (suffix === 'OPTIONS') continue;
        const { field, kind, hint } = SETTINGS[suffix];
        const raw = env[name]!.trim();
        let value: unknown;
        if (kind === 'string') {
          value = raw;
          if (raw === '') {
            issues.push(`${name} is empty: set it to ${hint}, or unset it`);
            bad = true;
            continue;
          }
        } else if (kind === 'list') {
          value = raw
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean);
          if ((value as string[]).length === 0) {
            issues.push(`${name} is empty: set it to ${hint}`);
            bad = true;
            continue;
          }
        } else {
          value = parseNumber(raw, kind);
          if (value === undefined) {
            issues.push(`${name} must be ${KIND_TEXT[kind]}: write ${hint}`);
            bad = true;
            continue;
          }
        }
        if (field === 'budget.usd') budget.usd = value as number;
        else if (field === 'budget.period') budget.period = value;
        else input[field] = value;
        from.set(field, name);
      }
      if (bad) continue;
      if (budget.usd !== undefined || budget.period !== undefined) {
        const base = (input.budget && typeof input.budget === 'object' ? input.budget : {}) as Record<string, unknown>;
        const merged = { ...base, ...budget };
        if (merged.usd === undefined) {
          issues.push(`${vars.get('BUDGET_PERIOD')} needs ${prefix}_${n}_BUDGET_USD (the dollars per period)`);
          continue;
        }
        input.budget = merged;
      }
      const r = KeySpecSchema.safeParse({ ...input, secret });
      if (!r.success) {
        for (const i of r.error.issues) {
          const field = String(i.path[0] ?? '');
          const msg = i.message.replace(/,? ?received .*$/i, '');
          if (field === 'secret') issues.push(`${variable}: ${msg}`);
          else {
            const exact = from.get(i.path.join('.'));
            const source = exact ?? from.get(field) ?? (field in this.defaults ? `defaults.${field}` : undefined);
            const suffix = Object.entries(SETTINGS).find(([, s]) => s.field.split('.')[0] === field)?.[0];
            const fix = suffix ? `: set ${prefix}_${n}_${suffix} (or defaults.${field} in the config)` : '';
            if (exact) issues.push(`${exact}: ${msg}`);
            else if (source) issues.push(`${source}${i.path.length > 1 ? ` (${i.path.slice(1).join('.')})` : ''}: ${msg}`);
            else if (input[field] === undefined) issues.push(`key ${variable} has no ${field}${fix}`);
            else issues.push(`key ${variable}: ${field}: ${msg}${fix}`);
          }
        }
        continue;
      }
      out.push({ spec: r.data, variable });
    }
    if (issues.length > 0) throw new SecretSourceError('invalid', this.describe, issues.join('; '));
    return out;
  }
}

/** `KEYPOOL_OPENAI_KEY`, 3 -> `openai-3`; `GROQ_API_KEYS`, 1 -> `groq-1`. */
export function defaultName(prefix: string, n: number): string {
  const words = prefix.toLowerCase().split('_').filter(Boolean);
  let core = words.slice(words[0] === 'keypool' && words.length > 1 ? 1 : 0);
  while (core.length > 1 && ['key', 'keys', 'api', 'secret', 'secrets', 'token', 'tokens'].includes(core[core.length - 1]!)) core = core.slice(0, -1);
  return `${core.join('-') || prefix.toLowerCase()}-${n}`;
}

function parseNumber(raw: string, kind: 'int0' | 'int1' | 'positive'): number | undefined {
  if (kind === 'positive') {
    if (!/^\d+(\.\d+)?$|^\.\d+$/.test(raw)) return undefined;
    const x = Number(raw);
    return Number.isFinite(x) && x > 0 ? x : undefined;
  }
  if (!/^\d+$/.test(raw)) return undefined;
  const x = Number(raw);
  if (!Number.isSafeInteger(x) || x < (kind === 'int1' ? 1 : 0)) return undefined;
  return x;
}

/** PREFIX_N_OPTIONS: a JSON object of settings, or the message saying what is wrong with it. */
function parseOptions(raw: string, variable: string): Partial<KeySpecInput> | string {
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    return `${variable} is not valid JSON: write ${SETTINGS.OPTIONS.hint}`;
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) return `${variable} must be ${SETTINGS.OPTIONS.hint}`;
  if ('secret' in v) return `${variable} must not hold the secret: the secret is ${variable.replace(/_OPTIONS$/, '')}`;
  const r = DefaultsCheck.safeParse(v);
  if (!r.success) {
    return r.error.issues.map((i) => `${variable}${i.path.length ? ` (field ${[...i.path].join('.')})` : ''}: ${i.message.replace(/,? ?received .*$/i, '')}`).join('; ');
  }
  return v as Partial<KeySpecInput>;
}
