/**
 * The configuration of `keypool serve --config keypool.yaml`.
 *
 * One YAML file holds the pool's own config at the top level (everything core's PoolConfigSchema
 * accepts) plus the gateway sections `redis`, `server`, `logLevel` and `routes`. Loading:
 *
 *   1. read and parse the YAML (syntax errors are reported as `file:line:column`);
 *   2. interpolate `${VAR}` / `${VAR:-default}` in every string value from the environment;
 *   3. apply the env overrides (REDIS_URL, KEYPOOL_HOST, KEYPOOL_PORT, KEYPOOL_ADMIN_TOKEN,
 *      KEYPOOL_POOL, KEYPOOL_LOG_LEVEL), which win over the file;
 *   4. read `keys[i].secretEnv` secrets, validate the gateway sections here and the pool config with
 *      core's PoolConfigSchema, and check the routes against the models the keys serve.
 *
 * Every problem found by any step ends up in ONE ConfigError, each line `path: message`. No message
 * ever contains a secret, a token or a Redis URL (it may carry a password).
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ConfigError, KeySpecSchema, PoolConfigSchema, formatPath, type ConfigIssue, type PoolConfig } from '@keypool/core';
import { SecretsSectionSchema, type SecretsSection } from '@keypool/secrets';
import { parseDocument } from 'yaml';
import { z } from 'zod';

/** pino's level names, `silent` included. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const PORT_MESSAGE = 'expected an integer 0-65535';
const ADMIN_TOKEN_MESSAGE = 'must be at least 24 characters (generate one with: openssl rand -hex 24)';
const REDIS_URL_MESSAGE = 'expected a redis:// or rediss:// URL';
const LOG_LEVEL_MESSAGE = `expected one of ${LOG_LEVELS.join(', ')}`;
const SIZE_MESSAGE = 'expected a size such as 512kb or 4mb, or a number of bytes';
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

function isRedisUrl(value: string): boolean {
  try {
    return ['redis:', 'rediss:'].includes(new URL(value).protocol);
  } catch {
    return false;
  }
}

const UNITS: Record<string, number> = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 };

/** `4mb` -> 4194304; a bare number is bytes. Undefined when the text is no size. */
export function parseByteSize(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) && value > 0 ? value : undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?\s*$/i.exec(value);
  if (!m) return undefined;
  const bytes = Math.floor(Number(m[1]) * UNITS[(m[2] ?? 'b').toLowerCase()]!);
  return bytes > 0 ? bytes : undefined;
}

/** Where Redis is. Neither set: `keypool serve` starts a private redis-server. */
export const RedisSectionSchema = z
  .object({
    url: z
      .string()
      .refine(isRedisUrl, REDIS_URL_MESSAGE)
      .optional()
      .describe(
        'Redis to keep the pool in, e.g. redis://:password@redis.internal:6379/0 (rediss:// for TLS). Env REDIS_URL overrides it. ' +
          'Unset (and no REDIS_URL): keypool starts its own redis-server on a free 127.0.0.1 port, fine for one gateway process; ' +
          'several gateways sharing one pool must point at the same Redis.',
      ),
    embeddedDir: z
      .string()
      .min(1)
      .optional()
      .describe(
        'Data directory of the embedded redis-server (only used when no url is set), relative to this file. ' +
          'Set: the pool state (spend, cooling, breakers) survives restarts (append-only file). Unset: a temp dir, nothing is kept.',
      ),
  })
  .strict();

/** The backoff between two upstream attempts of one request. */
export const BackoffSchema = z
  .object({
    baseMs: z.number().int().min(0).default(100).describe('Pause before the second attempt; doubles with each further attempt (with jitter).'),
    maxMs: z.number().int().min(0).default(5000).describe('Longest pause between two attempts after a 5xx, a timeout or a network error. A 429 is not waited out: the pool cools that key as long as the provider says and the next attempt goes to another key at once.'),
  })
  .strict()
  .superRefine((b, ctx) => {
    if (b.maxMs < b.baseMs) ctx.addIssue({ code: 'custom', path: ['maxMs'], message: 'must be at least backoff.baseMs' });
  });

/** The HTTP side of the gateway. */
export const ServerSectionSchema = z
  .object({
    host: z.string().min(1).default('127.0.0.1').describe('Address to listen on. 0.0.0.0 to accept connections from other machines. Env KEYPOOL_HOST overrides it.'),
    port: z
      .number(PORT_MESSAGE)
      .int(PORT_MESSAGE)
      .min(0, PORT_MESSAGE)
      .max(65535, PORT_MESSAGE)
      .default(8080)
      .describe('TCP port to listen on; 0 picks any free port (logged at start). Env KEYPOOL_PORT overrides it.'),
    adminToken: z
      .preprocess((v) => (v === '' ? undefined : v), z.string().min(24, ADMIN_TOKEN_MESSAGE).optional())
      .describe(
        'Bearer token of the admin API (key actions, gateway tokens). Keep it out of the file: write ${KEYPOOL_ADMIN_TOKEN} or set the env var, ' +
          'which overrides it. Absent or empty: the admin API is disabled.',
      ),
    bodyLimit: z
      .union([z.number(), z.string()])
      .transform((v, ctx) => {
        const bytes = parseByteSize(v);
        if (bytes === undefined) {
          ctx.addIssue({ code: 'custom', message: SIZE_MESSAGE });
          return z.NEVER;
        }
        return bytes;
      })
      .default(4 * 1024 ** 2)
      .describe('Largest request body accepted (413 above it): bytes, or with a unit, e.g. 512kb, 4mb. Default 4mb.'),
    deadlineMs: z
      .number()
      .int()
      .min(100)
      .default(60_000)
      .describe('Overall deadline of one request, waiting for a free key and every retry included; past it the client gets 504 (or 429 when no key was free).'),
    attemptTimeoutMs: z
      .number()
      .int()
      .min(100)
      .default(60_000)
      .describe('Timeout of one upstream attempt; for a stream, the longest silence between two chunks. Then the attempt is retried on another key.'),
    maxAttempts: z.number().int().min(1).max(20).default(4).describe('Upstream attempts per request (the first included), each on a key picked afresh.'),
    backoff: BackoffSchema.prefault({}).describe('Pause between attempts.'),
    defaultMaxOutputTokens: z
      .number()
      .int()
      .positive()
      .default(1024)
      .describe('Output tokens assumed, for rate limits and budget reservations, when a request sets no max_tokens / max_completion_tokens.'),
    drainMs: z
      .number()
      .int()
      .min(0)
      .default(30_000)
      .describe('On SIGTERM / SIGINT: new requests are refused and in-flight ones get this long to finish before the process exits.'),
  })
  .strict();

/** One route: a model alias that the gateway resolves to any of several real models. */
export const RouteSchema = z
  .object({
    models: z
      .array(z.string().min(1))
      .min(1, 'list at least one model')
      .describe('Models a request for this route may be served with, in order of preference; each must be served by some key.'),
  })
  .strict();

export const LogLevelSchema = z.enum(LOG_LEVELS, { error: LOG_LEVEL_MESSAGE }).default('info').describe('pino log level. Env KEYPOOL_LOG_LEVEL overrides it.');

/** `scheduler`: what `keypool worker` runs, and how often. */
export const SchedulerSectionSchema = z
  .object({
    secretRefreshMs: z.number().int().min(1000).default(60_000).describe('Secret refresh: reload the sources, publish the new set to the fleet, retire keys that disappeared.'),
    probeMs: z.number().int().min(500).default(15_000).describe('Health probes (GET /models) of keys that are open, half-open, revoked or degraded.'),
    probeTimeoutMs: z.number().int().min(100).default(5000).describe('A probe call slower than this is a failure.'),
    budgetPattern: z.string().min(1).default('0 0 * * *').describe('When budget periods start, a cron pattern in UTC (BullMQ syntax; the default is midnight UTC, which starts days and months).'),
    housekeepingMs: z.number().int().min(1000).default(60_000).describe('Housekeeping: expired leases of idle keys back, budget periods started, stale health windows cleared.'),
    rotationGraceMs: z
      .number()
      .int()
      .min(0)
      .default(30_000)
      .describe('How long one secret refresh waits for live processes to let go of keys that left the sources; keys still held then are kept in service and tried again at the next refresh. Shorter than secretRefreshMs.'),
    lockMs: z.number().int().min(1000).default(30_000).describe('A job whose worker stopped renewing its lock for this long (the worker died) runs again on another worker.'),
    stalledCheckMs: z.number().int().min(500).default(15_000).describe('How often workers look for such jobs.'),
  })
  .strict()
  .superRefine((s, ctx) => {
    // a run longer than its interval overlaps the next one (two coordinators, probes doubled)
    if (s.rotationGraceMs >= s.secretRefreshMs) ctx.addIssue({ code: 'custom', path: ['rotationGraceMs'], message: `must be shorter than secretRefreshMs (${s.secretRefreshMs})` });
    if (s.probeTimeoutMs >= s.probeMs) ctx.addIssue({ code: 'custom', path: ['probeTimeoutMs'], message: `must be shorter than probeMs (${s.probeMs})` });
  });
export type SchedulerSection = z.output<typeof SchedulerSectionSchema>;

/** `queue`: the LLM job queue `keypool worker` consumes. */
export const QueueSectionSchema = z
  .object({
    enabled: z.boolean().default(true).describe('Consume the LLM job queue in keypool worker (false: the worker only runs the scheduler).'),
    concurrency: z.number().int().min(1).max(1000).default(16).describe('Jobs one worker runs at once.'),
    keyWaitMs: z
      .number()
      .int()
      .min(0)
      .default(2000)
      .describe('Longest wait inside a worker for a free key; a longer wait is handed back to BullMQ as a delay of the time the pool names (no attempt spent).'),
    attemptTimeoutMs: z.number().int().min(100).default(60_000).describe('One upstream call of a job.'),
    attempts: z.number().int().min(1).max(50).default(5).describe('Attempts of a job for transient failures (5xx, timeouts, network), with exponential backoff.'),
    backoffMs: z.number().int().min(1).default(2000).describe('First backoff between attempts; doubles each time.'),
    keepCompletedS: z.number().int().min(0).default(86_400).describe('Done jobs and their results are kept this long (s); an idempotency key dedupes only while its job is kept (this long, and among the last keepCompleted).'),
    keepCompleted: z.number().int().min(0).default(10_000).describe('...and at most this many.'),
    keepFailedS: z.number().int().min(0).default(7 * 86_400).describe('Failed jobs are kept this long (s) for operators to read and retry.'),
    lockMs: z.number().int().min(1000).default(30_000).describe('A job whose worker stopped renewing its lock this long ago (killed) runs again on another worker.'),
    stalledCheckMs: z.number().int().min(500).default(15_000).describe('How often workers look for such jobs.'),
  })
  .strict();
export type QueueSection = z.output<typeof QueueSectionSchema>;

export const RoutesSchema = z
  .record(z.string().min(1), RouteSchema)
  .default({})
  .describe('Route names clients may send as `model`, each standing for a list of real models. A route name must not also be a model name.');

/** A key as written in the file: the secret inline or, better, in an env var named by secretEnv. */
export const FileKeySchema = KeySpecSchema.extend({
  secret: KeySpecSchema.shape.secret.optional(),
  secretEnv: z
    .string()
    .regex(ENV_NAME, 'must be the name of an environment variable (letters, digits and _)')
    .optional()
    .describe('Name of the environment variable holding the provider API key. Set exactly one of secret and secretEnv; secretEnv keeps secrets out of the file.'),
}).strict();

/**
 * The whole file, for documentation (z.toJSONSchema) and field-name suggestions. Validation runs the
 * same pieces one section at a time, and the pool part through core's PoolConfigSchema.
 */
export const GatewayFileSchema = z
  .object({
    ...PoolConfigSchema.shape,
    keys: z.array(FileKeySchema).default([]).describe('The provider API keys this gateway holds (secrets stay in memory).'),
    redis: RedisSectionSchema.optional().describe('Where Redis is; absent: an embedded redis-server.'),
    server: ServerSectionSchema.prefault({}).describe('HTTP listener, deadlines and retries.'),
    logLevel: LogLevelSchema,
    routes: RoutesSchema,
    secrets: SecretsSectionSchema.optional().describe('Secret sources (env, encrypted file, AWS Secrets Manager, Vault) whose keys join the pool, refreshed and rotated without restarts.'),
    scheduler: SchedulerSectionSchema.prefault({}).describe('The periodic jobs of `keypool worker`.'),
    queue: QueueSectionSchema.prefault({}).describe('The LLM job queue `keypool worker` consumes.'),
  })
  .strict();

export type RedisSection = z.output<typeof RedisSectionSchema>;
export type ServerSection = z.output<typeof ServerSectionSchema>;
export type Route = z.output<typeof RouteSchema>;
export type GatewayFileInput = z.input<typeof GatewayFileSchema>;

/** What `keypool serve` runs with. */
export interface GatewayConfig {
  /** Neither set: start an embedded redis-server. embeddedDir is absolute. */
  redis: RedisSection;
  server: ServerSection;
  logLevel: LogLevel;
  routes: Record<string, Route>;
  /** Secret sources; absent: only the keys of the file. */
  secrets?: SecretsSection;
  scheduler: SchedulerSection;
  queue: QueueSection;
  /** Core's parsed pool config, secrets filled in. */
  pool: PoolConfig;
}

/** Options of {@link loadGatewayConfig}. */
export interface LoadGatewayConfigOptions {
  /** The YAML file. Absent: the config comes from the environment alone (and has no keys). */
  file?: string;
  /** Defaults to process.env. */
  env?: NodeJS.ProcessEnv;
}

const GATEWAY_SECTIONS = {
  redis: RedisSectionSchema.optional(),
  server: ServerSectionSchema.prefault({}),
  logLevel: LogLevelSchema,
  routes: RoutesSchema,
  secrets: SecretsSectionSchema.optional(),
  scheduler: SchedulerSectionSchema.prefault({}),
  queue: QueueSectionSchema.prefault({}),
};
type Section = keyof typeof GATEWAY_SECTIONS;
type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonObject = { [k: string]: Json };
type Path = (string | number)[];

/**
 * Reads, interpolates and validates the gateway config.
 *
 * @throws ConfigError listing every problem (`path: message` per line), whose source names the file.
 */
export function loadGatewayConfig(opts: LoadGatewayConfigOptions = {}): GatewayConfig {
  const env = opts.env ?? process.env;
  const source = opts.file !== undefined ? `config file ${opts.file}` : 'config from the environment';
  const issues: ConfigIssue[] = [];

  let doc: JsonObject = {};
  if (opts.file !== undefined) {
    const parsed = readYaml(opts.file);
    if (!parsed.ok) throw new ConfigError(parsed.issues, source);
    doc = interpolate(parsed.value, [], env, issues) as JsonObject;
    // `server:` with every field commented out is an empty section, not a null one.
    for (const [k, v] of Object.entries(doc)) if (v === null) delete doc[k];
  }
  // A value whose interpolation failed is '' now: only the interpolation problem is worth reporting.
  const interpolationIssues = issues.length;
  const failedPaths = new Set(issues.map((i) => i.path));

  const { redis, server, logLevel, routes, secrets, scheduler, queue, ...poolPart } = doc;
  const sections: Record<Section, Json | undefined> = { redis, server, logLevel, routes, secrets, scheduler, queue };
  applyEnvOverrides(sections, poolPart, env, issues);

  const out: Partial<Record<Section, unknown>> = {};
  for (const name of Object.keys(GATEWAY_SECTIONS) as Section[]) {
    const r = GATEWAY_SECTIONS[name].safeParse(sections[name]);
    if (r.success) out[name] = r.data;
    else issues.push(...toIssues(r.error, [name]));
  }

  const pool = parsePool(poolPart, env, issues);
  issues.push(...unknownFields(poolPart, GatewayFileSchema, []));
  // with secret sources, keys (and the models they serve) are only known once the sources are read
  if (sections.secrets === undefined) checkRoutes(sections.routes, poolPart.keys, issues);

  const all = issues.filter((issue, n) => n < interpolationIssues || !failedPaths.has(issue.path));
  if (all.length > 0) throw new ConfigError(all, source);
  const redisOut: RedisSection = { ...(out.redis as RedisSection | undefined) };
  if (redisOut.embeddedDir !== undefined && opts.file !== undefined) redisOut.embeddedDir = resolve(dirname(opts.file), redisOut.embeddedDir);
  return {
    redis: redisOut,
    server: out.server as ServerSection,
    logLevel: out.logLevel as LogLevel,
    routes: out.routes as Record<string, Route>,
    ...(out.secrets ? { secrets: out.secrets as SecretsSection } : {}),
    scheduler: out.scheduler as SchedulerSection,
    queue: out.queue as QueueSection,
    pool: pool!,
  };
}

function readYaml(file: string): { ok: true; value: JsonObject } | { ok: false; issues: ConfigIssue[] } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'it is a directory' : (err as Error).message;
    return { ok: false, issues: [{ path: file, message: `cannot read the config file: ${why}` }] };
  }
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const lines = text.split('\n');
    return {
      ok: false,
      issues: doc.errors.map((e) => {
        const at = e.linePos?.[0];
        // `[${MODEL}]` is the usual way to get here: in flow collections braces are syntax.
        const line = lines[(at?.line ?? 0) - 1] ?? '';
        const flowRef = line.includes('${') && /[[\]{}]/.test(line.replace(/\$\{[^}]*\}/g, ''));
        const hint = flowRef ? ' (inside [ ] or { }, quote a reference: "${VAR}")' : '';
        return { path: at ? `${file}:${at.line}:${at.col}` : file, message: yamlMessage(e.message) + hint };
      }),
    };
  }
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    return { ok: false, issues: [{ path: file, message: yamlMessage((err as Error).message) }] };
  }
  if (value === null || value === undefined) return { ok: true, value: {} };
  if (typeof value !== 'object' || Array.isArray(value)) {
    return { ok: false, issues: [{ path: file, message: 'expected a mapping of sections at the top level (pool, keys, redis, server, routes...)' }] };
  }
  return { ok: true, value: value as JsonObject };
}

/**
 * yaml's message without its position suffix and source excerpt, and without quoted tokens longer
 * than a few characters: either could be a secret written on the line that is wrong.
 */
function yamlMessage(message: string): string {
  const first = message.replace(/ at line \d+, column \d+:[\s\S]*$/, '').split('\n')[0]!;
  return first.replace(/:?\s*"[^"]{4,}"/g, '').trim();
}

/**
 * A copy of `value` with `${VAR}` and `${VAR:-default}` replaced in every string (`$${` writes a
 * literal `${`). A string that was interpolated where the schema wants a number or a boolean is
 * converted (`port: ${PORT:-8080}`), and nowhere else (a numeric token stays a string).
 */
function interpolate(value: unknown, path: Path, env: NodeJS.ProcessEnv, issues: ConfigIssue[]): Json {
  if (typeof value === 'string') {
    if (!value.includes('$')) return value;
    let problem = false;
    const out = value.replace(/\$\$|\$\{([^}]*)\}/g, (whole, inner: string | undefined) => {
      if (whole === '$$') return '$';
      const m = /^([A-Za-z_][A-Za-z0-9_]*)(?::-([\s\S]*))?$/.exec(inner!);
      if (!m) {
        issues.push({ path: formatPath(path), message: 'malformed ${...} reference: write ${VAR} or ${VAR:-default} ($${ for a literal ${)' });
        problem = true;
        return '';
      }
      const [, name, fallback] = m;
      const v = env[name!];
      if (fallback !== undefined) return v === undefined || v === '' ? fallback : v;
      if (v === undefined) {
        issues.push({ path: formatPath(path), message: `environment variable ${name} is not set` });
        problem = true;
        return '';
      }
      return v;
    });
    return problem || out === value ? out : coerce(out, path);
  }
  if (Array.isArray(value)) return value.map((v, i) => interpolate(v, [...path, i], env, issues));
  if (value !== null && typeof value === 'object') {
    // fromEntries defines own properties: a `__proto__:` field stays a field (and is reported unknown).
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolate(v, [...path, k], env, issues)]));
  }
  return value as Json;
}

function coerce(text: string, path: Path): Json {
  const want = schemaAt(GatewayFileSchema, path);
  if (want instanceof z.ZodNumber && /^-?\d+(\.\d+)?$/.test(text.trim())) return Number(text);
  if (want instanceof z.ZodBoolean && /^(true|false)$/.test(text.trim())) return text.trim() === 'true';
  return text;
}

/** The schema that validates the value at `path`, wrappers (optional, default...) removed. */
function schemaAt(schema: z.ZodType, path: Path): z.ZodType | undefined {
  let s: z.ZodType | undefined = unwrap(schema);
  for (const p of path) {
    if (s instanceof z.ZodObject && typeof p === 'string') s = (s.shape as Record<string, z.ZodType>)[p];
    else if (s instanceof z.ZodArray && typeof p === 'number') s = s.element as z.ZodType;
    else if (s instanceof z.ZodRecord && typeof p === 'string') s = s.valueType as z.ZodType;
    else return undefined;
    s = s && unwrap(s);
  }
  return s;
}

function unwrap(s: z.ZodType): z.ZodType {
  for (;;) {
    if (s instanceof z.ZodOptional || s instanceof z.ZodDefault || s instanceof z.ZodPrefault || s instanceof z.ZodNullable) {
      s = s.unwrap() as z.ZodType;
    } else if (s instanceof z.ZodPipe) {
      s = s.out instanceof z.ZodTransform ? (s.in as z.ZodType) : (s.out as z.ZodType);
    } else return s;
  }
}

/** Env wins over the file. An invalid env value is reported under the env var's name and not applied. */
function applyEnvOverrides(sections: Record<Section, Json | undefined>, poolPart: JsonObject, env: NodeJS.ProcessEnv, issues: ConfigIssue[]): void {
  // An empty variable counts as unset (compose files often pass `KEYPOOL_HOST=`).
  const get = (name: string) => (env[name] === '' ? undefined : env[name]);
  const section = (name: 'redis' | 'server'): JsonObject => {
    const cur = sections[name];
    if (isObject(cur)) return cur;
    // A wrong file value (say `server: 3`) is reported by the schema; the override still applies.
    if (cur !== undefined && cur !== null) return {};
    return (sections[name] = {});
  };
  const override = (name: string, ok: (v: string) => Json | undefined, message: string, put: (v: Json) => void) => {
    const raw = get(name);
    if (raw === undefined) return;
    const v = ok(raw);
    if (v === undefined) issues.push({ path: name, message });
    else put(v);
  };

  override('REDIS_URL', (v) => (isRedisUrl(v) ? v : undefined), REDIS_URL_MESSAGE, (v) => (section('redis').url = v));
  override('KEYPOOL_HOST', (v) => v, '', (v) => (section('server').host = v));
  override(
    'KEYPOOL_PORT',
    (v) => (/^\d{1,5}$/.test(v.trim()) && Number(v) <= 65535 ? Number(v) : undefined),
    PORT_MESSAGE,
    (v) => (section('server').port = v),
  );
  override('KEYPOOL_ADMIN_TOKEN', (v) => (v.length >= 24 ? v : undefined), ADMIN_TOKEN_MESSAGE, (v) => (section('server').adminToken = v));
  override('KEYPOOL_LOG_LEVEL', (v) => ((LOG_LEVELS as readonly string[]).includes(v) ? v : undefined), LOG_LEVEL_MESSAGE, (v) => (sections.logLevel = v));
  const poolName = get('KEYPOOL_POOL');
  if (poolName !== undefined) {
    const r = PoolConfigSchema.shape.pool.safeParse(poolName);
    if (r.success) poolPart.pool = poolName;
    else issues.push(...r.error.issues.map((i) => ({ path: 'KEYPOOL_POOL', message: i.message })));
  }
}

/**
 * Fills secrets from secretEnv and validates the pool part with core's schema. Issues about a secret
 * read from an env var are reported at `keys[i].secretEnv`, naming the variable, never the value.
 */
function parsePool(poolPart: JsonObject, env: NodeJS.ProcessEnv, issues: ConfigIssue[]): PoolConfig | undefined {
  const input: JsonObject = { ...poolPart };
  const fromEnv = new Map<number, string>(); // key index -> env var its secret came from
  const reported = new Set<number>(); // key indexes whose secret problem is already reported
  if (Array.isArray(poolPart.keys)) {
    input.keys = poolPart.keys.map((k, i) => {
      if (!isObject(k) || !('secretEnv' in k)) {
        if (isObject(k) && k.secret === undefined) {
          issues.push({
            path: `keys[${i}].secret`,
            message: 'missing: set secret (the API key) or secretEnv (the name of an environment variable holding it)',
          });
          reported.add(i);
        }
        return k;
      }
      const { secretEnv, ...rest } = k;
      if (rest.secret !== undefined) {
        issues.push({ path: `keys[${i}]`, message: 'set either secret or secretEnv, not both' });
        return rest;
      }
      reported.add(i);
      if (typeof secretEnv !== 'string' || !ENV_NAME.test(secretEnv)) {
        issues.push({ path: `keys[${i}].secretEnv`, message: 'must be the name of an environment variable (letters, digits and _)' });
        return rest;
      }
      const secret = env[secretEnv];
      if (secret === undefined || secret === '') {
        issues.push({ path: `keys[${i}].secretEnv`, message: `environment variable ${secretEnv} is ${secret === '' ? 'empty' : 'not set'}` });
        return rest;
      }
      reported.delete(i);
      fromEnv.set(i, secretEnv);
      return { ...rest, secret };
    });
  }

  const r = PoolConfigSchema.safeParse(input);
  if (r.success) return r.data;
  for (const issue of toIssues(r.error, [])) {
    const m = /^keys\[(\d+)\]\.secret$/.exec(issue.path);
    const i = m ? Number(m[1]) : -1;
    if (reported.has(i)) continue;
    const envName = fromEnv.get(i);
    issues.push(envName ? { path: `keys[${i}].secretEnv`, message: `the value of ${envName}: ${issue.message}` } : issue);
  }
  return undefined;
}

/** Runs on the raw routes, so that a malformed route does not hide the problems of the others. */
function checkRoutes(routes: Json | undefined, keys: Json | undefined, issues: ConfigIssue[]): void {
  if (!isObject(routes)) return;
  if (!Array.isArray(keys) || keys.length === 0) return; // keys come from elsewhere (admin API) later
  const servedBy = new Map<string, number>();
  keys.forEach((k, i) => {
    const models = isObject(k) ? k.models : undefined;
    if (Array.isArray(models)) for (const m of models) if (typeof m === 'string' && !servedBy.has(m)) servedBy.set(m, i);
  });
  for (const [name, route] of Object.entries(routes)) {
    const key = servedBy.get(name);
    if (key !== undefined) {
      issues.push({
        path: `routes.${name}`,
        message: `'${name}' is also a model served by keys[${key}]: a request for it would be ambiguous; rename the route`,
      });
    }
    const models = isObject(route) && Array.isArray(route.models) ? route.models : [];
    models.forEach((m, j) => {
      if (typeof m === 'string' && m !== '' && !servedBy.has(m)) {
        issues.push({ path: `routes.${name}.models[${j}]`, message: `no key in this file serves model '${m}'` });
      }
    });
  }
}

function isObject(v: Json | undefined): v is JsonObject {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * Unknown fields in objects whose schema is not strict (core's breaker, health, cooling, redisDown
 * and price entries strip unknown fields silently); strict ones are reported by zod itself.
 */
function unknownFields(value: Json | undefined, schema: z.ZodType | undefined, path: Path): ConfigIssue[] {
  const s = schema && unwrap(schema);
  if (s instanceof z.ZodArray && Array.isArray(value)) return value.flatMap((v, i) => unknownFields(v, s.element as z.ZodType, [...path, i]));
  if (!isObject(value)) return [];
  if (s instanceof z.ZodRecord) return Object.entries(value).flatMap(([k, v]) => unknownFields(v, s.valueType as z.ZodType, [...path, k]));
  if (!(s instanceof z.ZodObject)) return [];
  const shape = s.shape as Record<string, z.ZodType>;
  const strict = s.def.catchall instanceof z.ZodNever;
  return Object.entries(value).flatMap(([k, v]): ConfigIssue[] => {
    if (k in shape) return unknownFields(v, shape[k], [...path, k]);
    if (strict) return [];
    return [unknownField(path, k, Object.keys(shape))];
  });
}

/** zod issues as ConfigIssues; an unknown field becomes one issue per field, with a suggestion. */
function toIssues(error: z.ZodError, prefix: Path): ConfigIssue[] {
  return error.issues.flatMap((i): ConfigIssue[] => {
    const path = [...prefix, ...(i.path as Path)];
    if (i.code === 'unrecognized_keys') {
      const known = schemaAt(GatewayFileSchema, path);
      const names = known instanceof z.ZodObject ? Object.keys(known.shape) : [];
      return i.keys.map((k) => unknownField(path, k, names));
    }
    return [{ path: formatPath(path), message: i.message }];
  });
}

function unknownField(path: Path, name: string, known: string[]): ConfigIssue {
  const near = closest(name, known);
  return { path: formatPath(path), message: `unknown field '${name}'${near ? ` (did you mean '${near}'?)` : ''}` };
}

/** The name within edit distance 2 of `word` (case ignored), if there is one. */
function closest(word: string, names: string[]): string | undefined {
  let best: string | undefined;
  let bestD = 3;
  for (const n of names) {
    const d = distance(word.toLowerCase(), n.toLowerCase());
    if (d < bestD) (best = n), (bestD = d);
  }
  return best;
}

function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}
