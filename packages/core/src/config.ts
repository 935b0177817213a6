import { z } from 'zod';
import { DeclaredTokenSchema, RPM_BURST } from './token-spec.js';
import { ConfigError, type ConfigIssue } from './errors.js';
import { DEFAULT_BASE_URL, hintOf, keyIdOf, originOf } from './fingerprint.js';

/** One provider API key and its limits. */
export const KeySpecSchema = z
  .object({
    secret: z
      .string()
      .min(8, 'must be the provider API key (8 characters or more)')
      .describe('The provider API key. Held in process memory only; Redis knows the key by its fingerprint id.'),
    name: z.string().max(100).optional().describe('A label for people (status, logs). Never the secret.'),
    provider: z.string().min(1).default('openai').describe('Provider name, for status and metrics (openai, deepseek, groq...).'),
    baseURL: z
      .url()
      .refine((u) => !URL.canParse(u) || /^https?:$/.test(new URL(u).protocol), 'must be an http:// or https:// URL')
      // a URL's user info would be stored in Redis and shown in status: credentials belong in the secret
      .refine((u) => !URL.canParse(u) || (!new URL(u).username && !new URL(u).password), 'must not hold a user name or password (they would show in status): put credentials in the secret')
      .default(DEFAULT_BASE_URL)
      .describe(
        'Base URL of the OpenAI-compatible API this key is for. Part of the key: its id covers it (the same secret for another base URL is another key), and only the config or secret source sets it, never Redis or the admin API.',
      ),
    models: z.array(z.string().min(1)).min(1, 'list at least one model this key may serve').describe('Models this key may serve.'),
    rpm: z.number().int().nonnegative().default(0).describe('Requests per minute. 0 = no limit (or the one learnt from the provider\'s headers).'),
    tpm: z.number().int().nonnegative().default(0).describe('Tokens per minute (prompt + completion). 0 = no limit (or the one learnt from the provider\'s headers).'),
    window: z
      .number()
      .min(0)
      .max(60)
      .optional()
      .describe(
        'Seconds over which the provider enforces rpm (its quantization): at most rpm x window / 60 requests are admitted in any rolling window of that many seconds (plus limits.windowMarginMs), and a whole window\'s quota may go at once. 0 = a token bucket refilled continuously (rpmBurst). Default: 1 for provider openai or azure (both document 1 s enforcement), 0 otherwise, and 0 when rpmBurst is set.',
      ),
    tokenWindow: z
      .number()
      .min(0)
      .max(60)
      .default(0)
      .describe('Seconds over which the provider enforces tpm, like window for requests (a request larger than tpm x tokenWindow / 60 is refused). 0 = a token bucket (tpmBurst).'),
    limitHeaders: z
      .enum(['minute', 'window'])
      .optional()
      .describe(
        'What the provider\'s x-ratelimit-limit-* headers count: minute (OpenAI: the per-minute limit) or window (Azure: the per-window figure, 10 for 600 RPM over 1 s). Default: window for provider azure, minute otherwise.',
      ),
    rpmBurst: RPM_BURST.describe(
      'Request bucket size of a key enforced by a token bucket (window 0): requests admitted at once after a quiet spell. Default: 2 seconds of rpm (at least 1). Setting it makes the default window 0.',
    ),
    tpmBurst: z
      .number()
      .int()
      .positive()
      .optional()
      .describe('Token bucket size of a key with tokenWindow 0, also the largest request admitted. Default: the larger of 10 s of tpm and min(tpm, 32768).'),
    maxConcurrent: z.number().int().nonnegative().default(0).describe('Leases in flight at once. 0 = no limit.'),
    tpmCounts: z
      .enum(['estimate', 'usage'])
      .optional()
      .describe(
        'What the provider counts against TPM. estimate: prompt + max_tokens at admission, as OpenAI does, so unused tokens are not given back. usage: the real usage (unused tokens come back when the call is released). Default: estimate for provider openai or azure, usage otherwise.',
      ),
    budget: z
      .object({
        usd: z.number().positive().describe('Dollars this key may spend per period.'),
        period: z.enum(['day', 'month', 'total']).default('month').describe('Budget period, UTC calendar day or month, or the whole life of the key.'),
      })
      .optional()
      .describe('Spend cap. Acquire reserves the estimated cost; release charges the real cost.'),
    weight: z.number().positive().default(1).describe('Relative share of traffic against keys of equal limits.'),
  })
  .strict();

const PriceSchema = z.object({
  input: z.number().nonnegative().describe('USD per million prompt tokens.'),
  output: z.number().nonnegative().describe('USD per million completion tokens.'),
});

/** Everything a KeyPool needs besides its Redis connection. */
export const PoolConfigSchema = z
  .object({
    pool: z
      .string()
      .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'use 1-64 letters, digits, "_", "." or "-"')
      .default('default')
      .describe('Pool name. Processes with the same pool name and Redis share one pool.'),
    partitions: z
      .number()
      .int()
      .min(1)
      .max(64)
      .default(1)
      .describe(
        'Split the pool into this many partitions, each under its own Redis hash tag (so on a Cluster, its own slot and shard), keys spread across them by id: the lease rate grows with the shards. 1 (default): one hash tag, the layout of a pool without this setting. Over 1, KeyPool.connect returns a PartitionedPool (the same methods, over every partition); a pool keeps the number it was created with (another one is refused at connect).',
      ),
    keys: z.array(KeySpecSchema).default([]).describe('The keys this process holds (secrets stay in memory).'),
    tokens: z
      .array(DeclaredTokenSchema)
      .default([])
      .describe(
        'Gateway tokens declared by their sha256 (never the token), with the settings the admin API takes (name, rpm, rpmBurst, budget, models): ' +
          'registered at start and again whenever Redis comes back without them, so callers holding them survive a Redis wipe.',
      ),
    prices: z.record(z.string(), PriceSchema).default({}).describe('Per-model prices, merged over the built-in defaults.'),
    upstreams: z
      .object({
        allow: z
          .array(
            z
              .string()
              .refine((o) => isOrigin(o), 'must be an origin: scheme://host[:port], no path (e.g. https://api.openai.com)')
              .transform((o) => originOf(o)),
          )
          .optional()
          .describe(
            'The origins (scheme://host[:port]) keys may be sent to. A key (config, secret source or addKey) whose baseURL has another origin is refused, at load and at every refresh. Unset: any origin.',
          ),
      })
      .prefault({})
      .describe('Where provider keys may be sent.'),
    leaseTimeoutMs: z
      .number()
      .int()
      .min(1000)
      .max(3_600_000)
      .default(30_000)
      .describe(
        'A lease not renewed by then (its process died) gives its slot back (1000 to 3600000). Holders renew their leases every third of it while their call runs (streams and slow calls included).',
      ),
    reservationTimeoutMs: z
      .number()
      .int()
      .min(1000)
      .default(600_000)
      .describe("A gateway token's reservation not settled by then (its gateway died, or its request is a stream still running) is charged its estimate; a request that ends later is still settled at its real cost, once (within a day)."),
    concurrencyRecheckMs: z
      .number()
      .int()
      .min(5)
      .default(100)
      .describe('How soon a key that is full (maxConcurrent) is looked at again when no release has freed it.'),
    candidates: z.number().int().min(1).max(8).default(2).describe('Keys sampled per acquire (power of k choices).'),
    breaker: z
      .object({
        failures: z.number().int().min(1).default(5).describe('Consecutive failures (5xx, timeout, network, broken stream) that open the circuit.'),
        errorRate: z.number().gt(0).max(1).default(0.5).describe('Error rate over the health window that opens the circuit...'),
        minRequests: z.number().int().min(1).default(20).describe('...once the window holds at least this many requests.'),
        cooldownMs: z.number().int().min(10).default(5000).describe('First open period; doubles on each reopen.'),
        maxCooldownMs: z.number().int().min(10).default(300_000).describe('Longest open period; also how long a closed circuit must stay closed to forget past opens.'),
      })
      .prefault({}),
    health: z
      .object({
        windowMs: z.number().int().min(1000).default(60_000).describe('Rolling window of latency and error statistics (one to two windows are kept).'),
        degradedP99Ms: z.number().positive().default(800).describe('A key whose p99 latency is above this is degraded.'),
        degradedErrorRate: z.number().min(0).max(1).default(0.02).describe('A key whose error rate is above this is degraded.'),
        minRequests: z.number().int().min(1).default(20).describe('Requests in the window before a key can be judged degraded.'),
        degradedScore: z.number().gt(0).max(1).default(0.25).describe('Selection weight factor of a degraded key (less traffic, not none).'),
      })
      .prefault({}),
    cooling: z
      .object({
        defaultMs: z.number().int().min(0).default(1000).describe('Cooling after a 429 with no Retry-After (retry-after-ms or retry-after): the time its x-ratelimit-reset-* headers name, at most this, or this when they name none.'),
        maxMs: z.number().int().min(1).default(600_000).describe('Upper bound on any cooling asked for by a provider (a Retry-After included).'),
      })
      .prefault({}),
    limits: z
      .object({
        windowMarginMs: z
          .number()
          .int()
          .min(0)
          .max(1000)
          .default(20)
          .describe('Added to every enforcement window (window, tokenWindow): the skew between admission here and arrival at the provider. A request sent more than half this margin after its admission is counted from its send at once when its caller says so (lease.sent(): the pooled client, the gateway and the queue worker do; one extra Redis call for such a request), so for request windows the margin covers a send a few ms late, the network and the provider\'s own queueing; token windows count from the admission.'),
        learn: z
          .boolean()
          .default(true)
          .describe(
            "Learn each key's effective limits from the provider's x-ratelimit-* headers and its 429s (never above the configured limits; a key with no rpm/tpm learns them).",
          ),
      })
      .prefault({})
      .describe('How keys\' rate limits are enforced and learnt.'),
    priority: z
      .object({
        keepFree: z
          .object({
            low: z.number().min(0).max(0.9).default(0.2).describe('Share (0 to 0.9) of every key\'s window or bucket kept for normal and critical requests while one of them waited in the last higherWaitedMs: low requests (queue jobs by default) may hold at most the rest of a window themselves, and those above use what they leave.'),
            normal: z.number().min(0).max(0.9).default(0).describe('Share (0 to 0.9) of every key\'s window or bucket kept for critical requests while one waited in the last higherWaitedMs (above 0, normal requests are also spread and hold no place ahead: see spread, reserveAheadMs).'),
          })
          .strict()
          .prefault({})
          .describe('What each class leaves free for the classes above it (critical keeps nothing: it is the highest).'),
        headroom: z
          .object({
            low: z.number().int().min(0).max(1000).default(1).describe('Requests of every windowed key\'s request window (keys[].window above 0) that low requests leave unused while a normal or critical request was given a place more than one slot of its key ahead (the window over its quota) in the last higherWaitedMs: a higher request arriving then starts at once instead of queueing for the next slot to free. It costs low that many requests of every window while it lasts; never leaves a key under one request a window; applies only with keepFree.low above 0. 0: off.'),
            normal: z.number().int().min(0).max(1000).default(0).describe('The same for normal requests, while a critical request waited long (applies only with keepFree.normal above 0).'),
          })
          .strict()
          .prefault({})
          .describe('What a class with a keepFree share also leaves unused of each windowed key\'s window while a higher class\'s requests queue (docs/architecture.md, "Headroom").'),
        higherWaitedMs: z
          .number()
          .int()
          .min(0)
          .max(60_000)
          .default(1000)
          .describe('A class keeps its share free for this long after a request of a higher class waited (was given a reservation or refused for capacity); with nothing higher waiting it may use the whole key.'),
        reserveAheadMs: z
          .number()
          .int()
          .min(0)
          .max(60_000)
          .default(0)
          .describe('The furthest ahead a class with a keepFree share may reserve (while a higher class waits, only within the capacity that keeps its share free; with spread, at most one place per key): how long a higher-class request arriving later can wait behind it. Further, it is told when to come back and holds no place. 0 (the default): it holds none, so a higher class takes every slot as it frees; its waiting callers are each given a turn to come back, paced by the keys\' capacity (a few refused tries per admission while the pool is full, not one per waiting caller).'),
        spread: z
          .boolean()
          .default(true)
          .describe('A class with a keepFree share starts its requests on a windowed key one window / quota apart (600 RPM over 1 s: one per 100 ms) and holds at most one place ahead per key, so slots free up all the time and a higher-class request waits about that long for the next one, not for a burst to leave the window. The key still admits its whole quota.'),
        tenantWindowMs: z
          .number()
          .int()
          .min(100)
          .max(60_000)
          .default(2000)
          .describe('While a class is contended (one of its requests waited in this many ms), each tenant\'s admissions of the last this many ms (and its reservations ahead) are counted, and a tenant above its weighted share waits: make it at least the keys\' window.'),
        weights: z
          .record(z.string().regex(/^[^\s,]{1,64}$/, 'a tenant name: 1-64 characters without spaces or commas'), z.number().positive().max(1000))
          .default({})
          .describe('Weights (0 to 1000, default 1) of the tenants named by callers (queue jobs\' tenant, acquire\'s tenant) in the fair shares between tenants of a class; a gateway token\'s weight is its own setting.'),
      })
      .strict()
      .prefault({})
      .describe('Priority classes and fair shares between tenants (docs/architecture.md, "Classes and tenants").'),
    status: z
      .object({
        snapshotMs: z
          .number()
          .int()
          .min(0)
          .max(60_000)
          .default(1000)
          .describe(
            'The fleet shares one pool status per this many ms: the first process to read it after that computes it (in small steps) and stores it in Redis, the others read it (/status, /metrics, the dashboard, health probes). 0: every read computes its own.',
          ),
      })
      .prefault({})
      .describe('How the pool status is shared.'),
    redisDown: z
      .object({
        policy: z
          .enum(['fail-closed', 'local'])
          .default('fail-closed')
          .describe('fail-closed: acquire throws RedisUnavailableError. local: each process enforces limits / fleetSize on its own.'),
        fleetSize: z.number().int().min(1).default(1).describe('Processes sharing the pool; with policy local each takes 1/fleetSize of every limit.'),
        timeoutMs: z.number().int().min(10).default(1000).describe('A Redis call slower than this counts as Redis being unavailable.'),
      })
      .prefault({}),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    const seen = new Map<string, number>();
    cfg.keys.forEach((k, i) => {
      // zod runs this despite other issues: a key whose secret or baseURL is invalid is reported already
      if (typeof k.secret === 'string' && typeof k.baseURL === 'string' && URL.canParse(k.baseURL)) {
        const id = keyIdOf(k.secret, k.baseURL);
        const first = seen.get(id);
        if (first !== undefined) {
          ctx.addIssue({ code: 'custom', path: ['keys', i, 'secret'], message: `same secret and baseURL as keys[${first}]; list each key once` });
        } else seen.set(id, i);
        const refused = refusedOrigin(k, cfg.upstreams?.allow);
        if (refused) ctx.addIssue({ code: 'custom', path: ['keys', i, 'baseURL'], message: refused });
      }
      if (k.tpmBurst !== undefined && k.tpm === 0) {
        ctx.addIssue({ code: 'custom', path: ['keys', i, 'tpmBurst'], message: 'tpmBurst needs tpm' });
      }
      if (k.rpmBurst !== undefined && k.rpm === 0) {
        ctx.addIssue({ code: 'custom', path: ['keys', i, 'rpmBurst'], message: 'rpmBurst needs rpm' });
      }
      if (k.rpmBurst !== undefined && k.window !== undefined && k.window > 0) {
        ctx.addIssue({ code: 'custom', path: ['keys', i, 'rpmBurst'], message: 'rpmBurst is the bucket of window: 0; with a window the burst is the window\'s quota (remove one of them)' });
      }
      if (k.tokenWindow > 0 && k.tpm > 0 && Math.floor((k.tpm * k.tokenWindow) / 60) < 1) {
        ctx.addIssue({ code: 'custom', path: ['keys', i, 'tokenWindow'], message: `tpm ${k.tpm} over ${k.tokenWindow} s is less than one token: use a longer tokenWindow or 0` });
      }
    });
  });

export type KeySpecInput = z.input<typeof KeySpecSchema>;
export type KeySpec = z.output<typeof KeySpecSchema>;
export type PoolConfigInput = z.input<typeof PoolConfigSchema>;
export type PoolConfig = z.output<typeof PoolConfigSchema>;

/** scheme://host[:port] (a trailing slash allowed), nothing more. */
function isOrigin(s: string): boolean {
  if (!URL.canParse(s)) return false;
  const u = new URL(s);
  return (u.protocol === 'http:' || u.protocol === 'https:') && u.pathname === '/' && !u.search && !u.hash && !u.username && !u.password && !/[?#]/.test(s);
}

/**
 * Why `upstreams.allow` refuses a key (its baseURL's origin is not listed), or undefined when the
 * key may be sent there (or no list is set). Names the key by name and hint, never the secret.
 */
export function refusedOrigin(k: Pick<KeySpec, 'secret' | 'name' | 'baseURL'>, allow: readonly string[] | undefined): string | undefined {
  if (allow === undefined) return undefined;
  const origin = originOf(k.baseURL);
  if (allow.includes(origin)) return undefined;
  const who = k.name !== undefined ? `key "${k.name}" (${hintOf(k.secret)})` : `key ${hintOf(k.secret)}`;
  return `${who}: origin ${origin} is not in upstreams.allow [${allow.join(', ')}]; add "${origin}" to upstreams.allow to send this key there`;
}

/** Refuse every key of `specs` that `upstreams.allow` does not allow (ConfigError listing them all). */
export function checkOrigins(specs: readonly KeySpec[], allow: readonly string[] | undefined, source: string, pathOf = (i: number) => `keys[${i}].baseURL`): void {
  const issues = specs.flatMap((k, i) => {
    const message = refusedOrigin(k, allow);
    return message ? [{ path: pathOf(i), message }] : [];
  });
  if (issues.length > 0) throw new ConfigError(issues, source);
}

/** `keys[2].rpm` from zod's ['keys', 2, 'rpm']. */
export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  return path.reduce<string>((acc, p) => (typeof p === 'number' ? `${acc}[${p}]` : acc ? `${acc}.${String(p)}` : String(p)), '');
}

function toIssues(error: z.ZodError, prefix = ''): ConfigIssue[] {
  return error.issues.map((i) => ({ path: formatPath([...(prefix ? [prefix] : []), ...i.path]), message: i.message }));
}

/** Validate a pool config; throws ConfigError listing every problem with its path. */
export function parsePoolConfig(input: unknown, source = 'keypool config'): PoolConfig {
  const r = PoolConfigSchema.safeParse(input);
  if (!r.success) throw new ConfigError(toIssues(r.error), source);
  return r.data;
}

/** Validate one key spec (for addKey); paths are prefixed with `key`. */
export function parseKeySpec(input: unknown): KeySpec {
  const r = KeySpecSchema.safeParse(input);
  if (!r.success) throw new ConfigError(toIssues(r.error, 'key'), 'key');
  return r.data;
}

/** Validate a key's settings without its secret (for updateKey); paths are prefixed with `key`. */
export function parseKeySettings(input: unknown): Omit<KeySpec, 'secret'> {
  const r = KeySpecSchema.omit({ secret: true }).safeParse(input);
  if (!r.success) throw new ConfigError(toIssues(r.error, 'key'), 'key');
  return r.data;
}

/** Enforcement windows of a key, ms (0: token bucket), and what its provider's limit headers count. */
export function windowsOf(k: Pick<KeySpec, 'provider' | 'window' | 'tokenWindow' | 'rpmBurst' | 'limitHeaders'>): { rw: number; tw: number; lh: 'minute' | 'window' } {
  const quantized = k.provider === 'openai' || k.provider === 'azure';
  const window = k.window ?? (k.rpmBurst !== undefined ? 0 : quantized ? 1 : 0);
  return { rw: Math.round(window * 1000), tw: Math.round(k.tokenWindow * 1000), lh: k.limitHeaders ?? (k.provider === 'azure' ? 'window' : 'minute') };
}

/** Bucket sizes actually used for a key (see rpmBurst / tpmBurst). */
export function burstsOf(k: Pick<KeySpec, 'rpm' | 'tpm' | 'rpmBurst' | 'tpmBurst'>): { rb: number; tb: number } {
  const rb = k.rpm > 0 ? (k.rpmBurst ?? Math.max(1, Math.ceil((k.rpm * 2) / 60))) : 0;
  const tb = k.tpm > 0 ? (k.tpmBurst ?? Math.max(Math.ceil((k.tpm * 10) / 60), Math.min(k.tpm, 32768))) : 0;
  return { rb, tb };
}
