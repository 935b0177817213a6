import * as crypto from 'node:crypto';
import type { Logger } from 'pino';
import { z } from 'zod';
import { systemClock } from './clock.js';
import {
  REFUSAL_WARNINGS,
  TokenCommands,
  refusalError,
  type AdmitArgs,
  type AdmitReply,
  type SettleArgs,
  type SettleResult,
  type ScriptRun,
  type SettleReply,
  type TokenRefusal,
  type TokenView,
} from './commands.js';
import { formatPath, type PoolConfig } from './config.js';
import { GatewayTokenSpecSchema, type DeclaredToken } from './token-spec.js';
import { ConfigError, InvalidArgumentError, isRedisUnavailable } from './errors.js';
import type { PoolKeys } from './pool-keys.js';
import { NANOS_PER_USD } from './pricing.js';
import type { TokenRecord } from './records.js';

export type { TokenRefusal } from './commands.js';

/**
 * Gateway tokens (virtual keys): what callers of the HTTP gateway present instead of a provider
 * key. Each carries its own limits (requests per minute, a budget, the models it may ask for),
 * enforced fleet-wide by Lua scripts on Redis time exactly like the limits of provider keys.
 * Redis knows a token only by sha256(token); the token itself is shown once, by `create`.
 */

export { DeclaredTokenSchema, GatewayTokenSpecSchema, type DeclaredToken } from './token-spec.js';

export type GatewayTokenSpec = z.input<typeof GatewayTokenSpecSchema>;

/** A gateway token as operators see it. Never the token: its id and hint only. */
export interface GatewayTokenInfo {
  /** Stable short id (12 hex chars of the token's sha256), for admin operations. */
  id: string;
  /** `kpt_...` and the last 4 characters. */
  hint: string;
  name: string;
  /** 0: no limit. */
  rpm: number;
  /** 0 when rpm is 0. */
  rpmBurst: number;
  budget: { usd: number; period: string } | null;
  /** Names the token may ask for; empty: all. */
  models: string[];
  /** Weight in the fair shares between tenants of a class. */
  weight: number;
  /** May ask for the critical class. */
  allowCritical: boolean;
  createdAt: string;
  revokedAt: string | null;
  lastUsedAt: string | null;
  /** Requests settled (requests given back with refundRequest are not counted). */
  requests: number;
  /** Spent in the current budget period (since creation when the budget is 'total' or there is none). */
  spendUsd: number;
  /** Held by admitted requests not settled yet. */
  reservedUsd: number;
  /** What is left now (null: no limit). */
  left: { requests: number | null; budgetUsd: number | null };
  budgetPeriodEndsAt: string | null;
}

/**
 * The answer of `admit`. Refusals are results, not exceptions; `retryAfterMs` says when trying
 * again can succeed (null: not by waiting). `id` is set when the token is known.
 */
export type TokenAdmission =
  | {
      ok: true;
      id: string;
      name: string;
      reservation: string;
      /** The token's settings as this process knows them (absent when it has not seen them). */
      weight?: number;
      allowCritical?: boolean;
    }
  | { ok: false; reason: TokenRefusal; retryAfterMs: number | null; id?: string };

/** What the tokens need from the pool: its script runner (with the Redis-down policy), keys and config. */
export interface TokenBackend {
  keys: PoolKeys;
  config: Pick<PoolConfig, 'reservationTimeoutMs' | 'concurrencyRecheckMs' | 'redisDown'>;
  log: Logger;
  /** Run a script; throws RedisUnavailableError when Redis is down (and marks the pool down). */
  run: ScriptRun;
  redisAvailable(): boolean;
  /** Process clock, used only by the per-process fallback while Redis is down. */
  now?: () => number;
  /** Called once for each loss of the token store found (after its error line). */
  onLost?: () => void;
}


/** What this process remembers of a token Redis admitted, for policy local while Redis is down. */
interface Seen {
  rec: TokenRecord;
  /** process time of the last admission by Redis */
  at: number;
  /** spent + reserved (nano-dollars) in Redis at that admission, and the end of its period */
  known: number;
  pend: number;
  /** nano-dollars admitted by this process alone since */
  local: number;
  /** this process's share of the request bucket, made at the first local admission */
  bucket?: { level: number; ts: number };
}

const TOKEN_RE = /^kpt_[A-Za-z0-9_-]{43}$/;
const ID_RE = /^[0-9a-f]{12}$/;
const RESERVATION_RE = /^([0-9a-f]{12}):\d+:(\d+)$/;
const LOCAL_RESERVATION_RE = /^local:([0-9a-f]{12}):[0-9a-f]+:(\d+)$/;
/** A token this process saw Redis admit this recently is admitted locally while Redis is down. */
const SEEN_MS = 10 * 60_000;
/** Remembered tokens beyond which old ones are forgotten. */
const SEEN_MAX = 10_000;
/** While down under policy local, how often admit and settle try Redis again (as acquire does). */
const REDIS_RETRY_MS = 1000;
/** At most one warning per this long about settles dropped while Redis is down. */
const DROP_LOG_MS = 10_000;

/**
 * Node's one-shot digest (Node 20.12 and later): about a third of createHash's cost, which showed
 * in the gateway's profile (one hash per request); earlier Node 20 releases use createHash.
 */
const oneShot = typeof crypto.hash === 'function' ? crypto.hash : undefined;

/** sha256 hex of a token: the only form in which Redis knows it (and the config declares it). */
export function tokenHashOf(token: string): string {
  return oneShot ? oneShot('sha256', token, 'hex') : crypto.createHash('sha256').update(token).digest('hex');
}
const hashOf = tokenHashOf;

/** Whether `s` has the shape of a gateway token (`kpt_` and 43 base64url characters). */
export function isGatewayToken(s: string): boolean {
  return TOKEN_RE.test(s);
}

/** The id of a gateway token (12 hex chars of its sha256), e.g. to log which token made a request. */
export function tokenIdOf(token: string): string {
  return hashOf(token).slice(0, 12);
}

/** `kpt_...` and the last four characters of a token. */
export function tokenHintOf(token: string): string {
  return `kpt_...${token.slice(-4)}`;
}

/** Validate a token spec; throws ConfigError listing every problem with its path (`token.rpm`). */
export function parseGatewayTokenSpec(input: unknown): z.output<typeof GatewayTokenSpecSchema> {
  const r = GatewayTokenSpecSchema.safeParse(input);
  if (!r.success) {
    throw new ConfigError(
      r.error.issues.map((i) => ({ path: formatPath(['token', ...i.path]), message: i.message })),
      'gateway token',
    );
  }
  return r.data;
}

/** USD to whole nano-dollars, rounding fractions up but not float noise (as PriceTable does). */
function toNanos(usd: number): number {
  return Math.max(0, Math.ceil(usd * NANOS_PER_USD - 1e-6));
}

/** Largest amount admit and settle take: nano-dollar sums must stay exact integers (about 9 million USD). */
const MAX_USD = Math.floor(Number.MAX_SAFE_INTEGER / NANOS_PER_USD);

function checkUsd(what: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > MAX_USD) {
    throw new InvalidArgumentError(`${what} must be a number from 0 to ${MAX_USD}, got ${typeof v === 'number' ? v : typeof v}`);
  }
  return v;
}

/** End (ms) of the UTC budget period containing `now`; -1 for 'total'. Mirrors budgetPeriod in common.lua. */
export function budgetPeriodEnd(period: 'day' | 'month' | 'total', now: number): number {
  if (period === 'day') return (Math.floor(now / 86_400_000) + 1) * 86_400_000;
  if (period === 'month') {
    const d = new Date(now);
    return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
  }
  return -1;
}

const iso = (ms: number) => (ms > 0 ? new Date(ms).toISOString() : null);

/**
 * A token as operators see it, from its settings and counters: the one place the view is built,
 * whether Redis computed the counters (tokenInfo) or this process remembers them (Redis down).
 * `rt` null: the requests left are not known.
 */
function infoOf(rec: TokenRecord, c: Omit<TokenView, 'rec' | 'rt'> & { rt: number | null }): GatewayTokenInfo {
  return {
    id: rec.id,
    hint: rec.hint,
    name: rec.name,
    rpm: rec.rpm,
    rpmBurst: rec.rb,
    budget: rec.budget ? { usd: rec.budget.usd, period: rec.budget.period } : null,
    models: rec.models,
    weight: rec.weight ?? 1,
    allowCritical: rec.allowCritical ?? false,
    createdAt: new Date(c.ca).toISOString(),
    revokedAt: iso(c.rv),
    lastUsedAt: iso(c.lu),
    requests: c.n,
    spendUsd: c.spentNanos / NANOS_PER_USD,
    reservedUsd: c.reservedNanos / NANOS_PER_USD,
    left: {
      requests: rec.rpm > 0 && c.rt !== null ? Math.max(0, Math.floor(c.rt)) : null,
      budgetUsd: rec.bud >= 0 ? Math.max(0, rec.bud - c.spentNanos - c.reservedNanos) / NANOS_PER_USD : null,
    },
    budgetPeriodEndsAt: rec.bud >= 0 && c.pend > 0 ? iso(c.pend) : null,
  };
}

const toInfo = (v: TokenView) => infoOf(v.rec, v);

/** The settings JSON of a token from its spec: the one place it is built (created and declared tokens). */
function recordOf(hash: string, hint: string, s: z.output<typeof GatewayTokenSpecSchema>): TokenRecord {
  return {
    id: hash.slice(0, 12),
    hint,
    name: s.name,
    rpm: s.rpm,
    rb: s.rpm > 0 ? (s.rpmBurst ?? Math.max(1, Math.ceil((s.rpm * 2) / 60))) : 0,
    bud: s.budget ? Math.round(s.budget.usd * NANOS_PER_USD) : -1,
    per: s.budget?.period ?? 'total',
    models: [...new Set(s.models)].sort(),
    ...(s.budget ? { budget: s.budget } : {}),
    weight: s.weight,
    allowCritical: s.allowCritical,
  };
}

/** The token store as /status shows it: `lost` once Redis was found without the tokens this process knew. */
export interface TokenStoreStatus {
  store: 'ok' | 'lost';
  /** When this process found the tokens gone (the last time), or null. */
  lostAt: string | null;
  /** Times this process found them gone since it started. */
  lostCount: number;
  /** Tokens declared in the config (registered again after a loss). */
  declared: number;
}

/** At most one count of the tokens per this long, when admissions find unknown tokens. */
const STORE_CHECK_MS = 1000;

/**
 * The gateway tokens of a pool; reach them as `pool.tokens`. Admission and settlement are one
 * script call each, atomic and fleet-wide. With `redisDown.policy: local` a process keeps
 * admitting, while Redis is down, the tokens it saw Redis admit in the last 10 minutes, with
 * 1/fleetSize of their rate and of what was left of their budget; other tokens are refused.
 */
export class GatewayTokens {
  private readonly b: TokenBackend;
  private readonly cmd: TokenCommands;
  private readonly log: Logger;
  private readonly now: () => number;
  /** sha256 hex -> what this process knows of the token (never the token itself). */
  private readonly seen = new Map<string, Seen>();
  private lastRedisTry = 0;
  private dropped = 0;
  private lastDropLog = 0;
  /** Declared tokens (config): sha256 -> settings, registered at start and after a loss. */
  private readonly declared = new Map<string, TokenRecord>();
  /** This process saw the pool hold tokens (so none at all now means Redis lost them). */
  private hadTokens = false;
  /** The last loss found; `cleared` once a token was made here since. */
  private lost: { at: number; count: number; cleared: boolean } | null = null;
  /** When an admission that met an unknown token last counted the tokens. */
  private lastStoreCheck = -Infinity;

  constructor(backend: TokenBackend) {
    this.b = backend;
    this.cmd = new TokenCommands(backend.run, backend.keys, backend.config);
    this.log = backend.log;
    this.now = backend.now ?? systemClock.now;
  }

  /**
   * Make a new token. The token is in the answer and nowhere else: Redis keeps its sha256, logs
   * and the info show its id and hint. Throws ConfigError listing every problem of a bad spec.
   */
  async create(spec: GatewayTokenSpec): Promise<{ token: string; info: GatewayTokenInfo }> {
    const s = parseGatewayTokenSpec(spec);
    // 48-bit ids of random tokens do not collide in practice; the script checks anyway
    for (let attempt = 0; attempt < 3; attempt++) {
      const token = `kpt_${crypto.randomBytes(32).toString('base64url')}`;
      const hash = hashOf(token);
      const rec = recordOf(hash, tokenHintOf(token), s);
      const reply = await this.cmd.create(hash, rec);
      if (reply.ok) {
        this.hadTokens = true;
        if (this.lost) this.lost.cleared = true;
        this.log.info({ tokenId: rec.id, hint: rec.hint, name: rec.name }, 'gateway token created');
        return { token, info: toInfo(reply.view) };
      }
    }
    throw refusalError({ reason: 'exists' });
  }

  /** Hold the config's declared tokens (at connect); `checkStore` registers them. Never a token: hashes. */
  declare(tokens: readonly DeclaredToken[]): void {
    for (const t of tokens) this.declared.set(t.sha256, recordOf(t.sha256, `kpt_...(declared ${t.sha256.slice(0, 6)})`, t));
  }

  /** The token store as /status shows it. */
  storeStatus(): TokenStoreStatus {
    const l = this.lost;
    return { store: l && !l.cleared ? 'lost' : 'ok', lostAt: l ? new Date(l.at).toISOString() : null, lostCount: l?.count ?? 0, declared: this.declared.size };
  }

  /**
   * Find out whether Redis lost the pool's tokens, then register the declared ones that are
   * missing. Lost: `poolLost` (the pool's epoch changed: Redis restarted empty), or no token at
   * all while this process had seen some (a flush). Each loss is logged at error level once and
   * reported through `onLost`. Run at connect, when Redis comes back, and (at most once a second)
   * when an admission meets an unknown token.
   */
  async checkStore(poolLost = false): Promise<void> {
    const n = await this.cmd.count();
    if (this.hadTokens && (poolLost || n === 0)) {
      this.hadTokens = false;
      this.seen.clear();
      this.lost = { at: this.now(), count: (this.lost?.count ?? 0) + 1, cleared: false };
      this.log.error(
        { lostCount: this.lost.count, declared: this.declared.size },
        'gateway tokens lost: Redis no longer holds the tokens of this pool (it restarted empty or was flushed). ' +
          'Callers with tokens made through the admin API get 401 invalid_api_key until new ones are made (keypool tokens create); ' +
          `${this.declared.size} token(s) declared in the config are registered again. Run Redis with persistence (AOF) to keep tokens across restarts.`,
      );
      this.b.onLost?.();
    }
    let held = n > 0 && !poolLost;
    for (const [hash, rec] of this.declared) {
      const reply = await this.cmd.create(hash, rec);
      if (reply.ok) this.log.info({ tokenId: rec.id, name: rec.name }, 'declared gateway token registered');
      held = true;
    }
    if (held) this.hadTokens = true;
  }

  /** Refuse the token from now on, in every process. False when no token has this id. */
  async revoke(id: string): Promise<boolean> {
    if (typeof id !== 'string' || !ID_RE.test(id)) return false;
    if (!(await this.cmd.revoke(id)).ok) return false;
    for (const [hash, s] of this.seen) if (s.rec.id === id) this.seen.delete(hash);
    this.log.info({ tokenId: id }, 'gateway token revoked');
    return true;
  }

  /** Every token of the pool, oldest first. */
  async list(): Promise<GatewayTokenInfo[]> {
    return (await this.info('')).sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id));
  }

  /** One token by id, or null. */
  async get(id: string): Promise<GatewayTokenInfo | null> {
    if (typeof id !== 'string' || !ID_RE.test(id)) return null;
    return (await this.info(id))[0] ?? null;
  }

  /**
   * Who a presented token is, without taking a request or money (e.g. to list the models it may
   * use): the token's info, or null when it is unknown or revoked. While Redis is down under
   * policy local, a token this process saw admitted in the last 10 minutes is known by what it
   * remembers: settings and budget as of then; createdAt (epoch), requests (0) and left.requests
   * (null) are not known.
   */
  async verify(token: string): Promise<GatewayTokenInfo | null> {
    if (typeof token !== 'string' || !TOKEN_RE.test(token)) return null;
    const hash = hashOf(token);
    const local = this.b.config.redisDown.policy === 'local';
    let found: GatewayTokenInfo[];
    try {
      if (local && !this.b.redisAvailable() && this.now() - this.lastRedisTry < REDIS_RETRY_MS) return this.verifyLocal(hash);
      found = await this.info(hash.slice(0, 12), hash);
    } catch (e) {
      if (local && isRedisUnavailable(e)) return this.verifyLocal(hash);
      throw e;
    }
    const info = found[0];
    if (!info || info.revokedAt !== null) {
      this.seen.delete(hash);
      return null;
    }
    return info;
  }

  private verifyLocal(hash: string): GatewayTokenInfo | null {
    const s = this.seen.get(hash);
    if (!s || this.now() - s.at > SEEN_MS) return null;
    // created (epoch), requests (0) and the requests left (null) are not known without Redis
    return infoOf(s.rec, { rt: null, n: 0, spentNanos: s.known + s.local, reservedNanos: 0, ca: 0, lu: s.at, rv: 0, pend: s.pend });
  }

  private async info(id: string, hash = ''): Promise<GatewayTokenInfo[]> {
    return (await this.cmd.info(id, hash)).map(toInfo);
  }

  /**
   * Admit one request of the token holder for `model` (or a route name): checks the token, its
   * models, takes one request from its bucket and reserves `estimatedCostUsd` of its budget, in
   * one script call. Settle every admitted request exactly once; an unsettled reservation expires
   * after reservationTimeoutMs and is then charged its estimate. Throws RedisUnavailableError only
   * under redisDown.policy fail-closed.
   */
  async admit(token: string, model: string, estimatedCostUsd: number): Promise<TokenAdmission> {
    const a = this.admitArgs(token, model, estimatedCostUsd);
    if (!('hash' in a)) return a;
    const local = this.b.config.redisDown.policy === 'local';
    if (local && !this.b.redisAvailable()) {
      // stay local, but try Redis again now and then (as acquire does)
      if (this.now() - this.lastRedisTry < REDIS_RETRY_MS) return this.admitLocal(a.hash, model, a.costNanos);
      this.lastRedisTry = this.now();
    }
    let reply: AdmitReply;
    try {
      reply = await this.cmd.admit(a.hash, model, a.costNanos, a.wantSettings);
    } catch (e) {
      if (local && isRedisUnavailable(e)) return this.admitLocal(a.hash, model, a.costNanos);
      throw e;
    }
    return this.admitted(a.hash, reply);
  }

  /**
   * What an admission of `token` for `model` sends to Redis (tokenAdmit-3.lua, or acquire.lua when
   * a key is taken in the same call), or the refusal when the token cannot be one. Throws
   * InvalidArgumentError for a bad model or cost.
   */
  admitArgs(token: string, model: string, estimatedCostUsd: number): AdmitArgs | Extract<TokenAdmission, { ok: false }> {
    if (typeof model !== 'string' || model === '') throw new InvalidArgumentError('admit needs a model name');
    const costNanos = toNanos(checkUsd('estimatedCostUsd', estimatedCostUsd));
    if (typeof token !== 'string' || !TOKEN_RE.test(token)) return { ok: false, reason: 'unknown', retryAfterMs: null };
    const hash = hashOf(token);
    return { hash, name: model, costNanos, wantSettings: !this.seen.has(hash) };
  }

  /** Take in what Redis answered an admission of the token with sha256 `hash` (remembered for policy local; a lost store noticed). */
  async admitted(hash: string, reply: AdmitReply): Promise<TokenAdmission> {
    if (!reply.ok) {
      const { reason, retryAfterMs, id } = reply;
      if (reason === 'unknown' || reason === 'revoked') this.seen.delete(hash);
      // a token store emptied under a live connection (FLUSHALL) shows first as unknown tokens
      if (reason === 'unknown' && this.hadTokens && this.now() - this.lastStoreCheck >= STORE_CHECK_MS) {
        this.lastStoreCheck = this.now();
        await this.checkStore().catch((e: unknown) => this.log.warn({ err: (e as Error).message }, 'could not check the gateway token store'));
      }
      return { ok: false, reason, retryAfterMs, ...(id ? { id } : {}) };
    }
    const { id, reservation } = reply;
    this.hadTokens = true;
    const seen = this.seen.get(hash);
    const rec = reply.settings ?? seen?.rec;
    if (!rec) return { ok: true, id, name: '', reservation };
    this.remember(hash, rec, reply.spentNanos + reply.reservedNanos, reply.periodEnd);
    return { ok: true, id, name: rec.name, reservation, weight: rec.weight ?? 1, allowCritical: rec.allowCritical ?? false };
  }

  /**
   * Settle an admitted request: frees its reservation, charges `costUsd` to the current budget
   * period, counts the request. `refundRequest` gives the request back to the token's bucket
   * (and does not count it): for a request no provider key could serve. While Redis is down
   * the settle is dropped with a warning (the reservation then expires and is charged its estimate).
   */
  async settle(id: string, reservation: string, costUsd: number, opts: { refundRequest?: boolean } = {}): Promise<void> {
    const cost = toNanos(checkUsd('costUsd', costUsd));
    const est = this.checkSettle(id, reservation);
    const isLocal = reservation.startsWith('local:');
    const refund = opts.refundRequest === true;
    if (isLocal) this.settleLocal(id, est, cost, refund);
    if (this.b.config.redisDown.policy === 'local' && !this.b.redisAvailable()) {
      if (this.now() - this.lastRedisTry < REDIS_RETRY_MS) return this.drop(id, 'Redis unavailable');
      this.lastRedisTry = this.now();
    }
    let reply: SettleReply;
    try {
      reply = await this.cmd.settle(id, isLocal ? '' : reservation, cost, refund);
    } catch (e) {
      if (isRedisUnavailable(e)) return this.drop(id, (e as Error).message);
      throw e;
    }
    this.settled(id, reservation, reply.ok ? '' : reply.reason);
  }

  /**
   * The settlement a lease's release carries to Redis (release-11.lua), `costUsd` undefined: what
   * the release charges the key. Null for a reservation this process made while Redis was down:
   * that one is settled on its own (settle). Throws InvalidArgumentError as settle does.
   */
  settleArgs(id: string, reservation: string, costUsd: number | undefined, refund: boolean): SettleArgs | null {
    const costNanos = costUsd === undefined ? -1 : toNanos(checkUsd('costUsd', costUsd));
    this.checkSettle(id, reservation);
    if (reservation.startsWith('local:')) return null;
    return { id, reservation, costNanos, refund };
  }

  /** What Redis said of a settlement ('' settled): a settlement that found nothing to settle is logged. */
  settled(id: string, reservation: string, result: SettleResult): void {
    if (result !== '') this.log.warn({ tokenId: id, reservation }, REFUSAL_WARNINGS[result]);
  }

  /** Checks the arguments of a settlement; the estimate the reservation holds (nano-dollars). */
  private checkSettle(id: string, reservation: string): number {
    // neither argument is echoed in the message: a confused caller may pass the token itself
    if (typeof id !== 'string' || !ID_RE.test(id)) throw new InvalidArgumentError('settle needs the id of a gateway token (12 hex characters), as admit returned it');
    const m = typeof reservation === 'string' ? (LOCAL_RESERVATION_RE.exec(reservation) ?? RESERVATION_RE.exec(reservation)) : null;
    if (!m || m[1] !== id) throw new InvalidArgumentError(`settle needs a reservation that admit returned for gateway token ${id}`);
    return Number(m[2]);
  }

  private remember(hash: string, rec: TokenRecord, known: number, pend: number): void {
    const now = this.now();
    const s = this.seen.get(hash);
    if (s) Object.assign(s, { rec, at: now, known, pend, local: 0 });
    else {
      if (this.seen.size >= SEEN_MAX) {
        for (const [h, o] of this.seen) if (now - o.at > SEEN_MS) this.seen.delete(h);
        // all recent: forget the oldest (Map order is insertion order)
        if (this.seen.size >= SEEN_MAX) this.seen.delete(this.seen.keys().next().value!);
      }
      this.seen.set(hash, { rec, at: now, known, pend, local: 0 });
    }
  }

  /**
   * Admission by this process alone, for acquire's fallback (Redis down, policy local): never
   * tries Redis (acquire has just found it down and keeps its own retry timer).
   */
  admitHere(a: AdmitArgs, priority?: string): TokenAdmission {
    const s = this.seen.get(a.hash);
    if (priority === 'critical' && s && !s.rec.allowCritical) return { ok: false, reason: 'priority_not_allowed', retryAfterMs: null, id: s.rec.id };
    return this.admitLocal(a.hash, a.name, a.costNanos);
  }

  /** Give back a local admission no key could serve: its request and its money, in this process's view. */
  giveBackHere(a: { id: string; reservation: string }): void {
    this.settleLocal(a.id, this.checkSettle(a.id, a.reservation), 0, true);
  }

  /** Admission by this process alone (Redis down, policy local): 1/fleetSize of rate and of budget left. */
  private admitLocal(hash: string, model: string, est: number): TokenAdmission {
    const now = this.now();
    const s = this.seen.get(hash);
    if (!s || now - s.at > SEEN_MS) return { ok: false, reason: 'unknown', retryAfterMs: null };
    const { rec } = s;
    const fleet = this.b.config.redisDown.fleetSize;
    if (rec.models.length > 0 && !rec.models.includes(model)) return { ok: false, reason: 'model_not_allowed', retryAfterMs: null, id: rec.id };
    if (rec.bud >= 0 && est > rec.bud) return { ok: false, reason: 'over_budget', retryAfterMs: null, id: rec.id };
    if (rec.bud >= 0) {
      if (s.pend >= 0 && now >= s.pend) [s.known, s.local, s.pend] = [0, 0, budgetPeriodEnd(rec.per, now)];
      if (s.local + est > Math.max(0, rec.bud - s.known) / fleet) {
        return { ok: false, reason: 'budget_exhausted', retryAfterMs: s.pend < 0 ? null : Math.max(0, Math.ceil(s.pend - now)), id: rec.id };
      }
    }
    if (rec.rpm > 0) {
      const size = Math.max(1, rec.rb / fleet);
      const perMs = rec.rpm / fleet / 60_000;
      const b = (s.bucket ??= { level: size, ts: now });
      b.level = Math.min(size, b.level + Math.max(0, now - b.ts) * perMs);
      b.ts = now;
      if (b.level < 1) return { ok: false, reason: 'rate_limited', retryAfterMs: Math.max(1, Math.ceil((1 - b.level) / perMs)), id: rec.id };
      b.level -= 1;
    }
    s.local += est;
    return { ok: true, id: rec.id, name: rec.name, reservation: `local:${rec.id}:${crypto.randomBytes(6).toString('hex')}:${est}`, weight: rec.weight ?? 1, allowCritical: rec.allowCritical ?? false };
  }

  /** A locally admitted request settles in this process's view too (its Redis record is best effort). */
  private settleLocal(id: string, est: number, cost: number, refund: boolean): void {
    for (const s of this.seen.values()) {
      if (s.rec.id !== id) continue;
      s.local = Math.max(0, s.local - est + cost);
      if (refund && s.bucket) s.bucket.level = Math.min(Math.max(1, s.rec.rb / this.b.config.redisDown.fleetSize), s.bucket.level + 1);
      return;
    }
  }

  private drop(id: string, why: string): void {
    this.dropped++;
    const now = this.now();
    if (now - this.lastDropLog < DROP_LOG_MS) return;
    this.log.warn(
      { tokenId: id, dropped: this.dropped, err: why },
      'gateway token settle dropped: Redis unavailable (reservations held in Redis expire and are charged their estimate; costs of local admissions are not recorded)',
    );
    this.lastDropLog = now;
    this.dropped = 0;
  }
}
