import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis, type Cluster } from 'ioredis';
import { pino, type Logger } from 'pino';
import { parseKeySettings, parseKeySpec, parsePoolConfig, type KeySpecInput, type PoolConfig, type PoolConfigInput } from './config.js';
import {
  InvalidArgumentError,
  KeyNotFoundError,
  RedisUnavailableError,
  RequestTooLargeError,
  ScriptError,
  UnknownModelError,
  isRedisUnavailable,
} from './errors.js';
import { cooldownFromHeaders } from './headers.js';
import { LocalLimiter } from './local-limiter.js';
import { classify, realTokens, type Outcome, type OutcomeClass } from './outcome.js';
import { NANOS_PER_USD, PriceTable, type ModelPrice } from './pricing.js';
import { recordOfSpec, settingsOf, toRecord, type KeyRecord, type KeySettings } from './records.js';
import { PoolKeys, ScriptRunner, type ScriptName } from './scripts.js';
import { toPoolStatus, type PoolStatus, type RawStatus } from './status.js';
import { GatewayTokens } from './tokens.js';

/** Why acquire could not give a lease now. */
export type ExhaustedReason =
  | 'rate_limited'
  | 'concurrency'
  | 'cooling'
  | 'circuit_open'
  | 'budget'
  | 'unavailable';

/** Acquire could not give a lease; `retryAfterMs` says when the earliest key becomes usable (null: not by waiting). */
export interface Exhausted {
  ok: false;
  reason: ExhaustedReason;
  retryAfterMs: number | null;
}

export interface AcquireRequest {
  /** Model the request is for; only keys that list it are candidates. */
  model: string;
  /** Tokens the request will use (prompt + max output), taken from the TPM bucket now and reconciled at release. */
  estimatedTokens?: number;
  /** The part of estimatedTokens that is output (prices differ). Default: all of it, an upper bound on cost. */
  estimatedOutputTokens?: number;
  /** Key ids not to use (e.g. keys that just failed this request). */
  exclude?: Iterable<string>;
  /** The route (a named list of models) this request came through, for spend per route. */
  route?: string;
  /** Wait up to this long for the time the pool names instead of returning `{ ok: false }` (default 0). */
  maxWaitMs?: number;
  /** Aborts a wait; the promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** A key lent for one upstream call. Release it exactly once with what happened. */
export interface Lease {
  ok: true;
  /** Lease id (unique per pool). */
  id: string;
  keyId: string;
  hint: string;
  name?: string;
  provider: string;
  baseURL: string;
  model: string;
  /** The route given to acquire, if any. */
  route?: string;
  /** The API key. Not enumerable: JSON.stringify and console.log of a lease do not show it. */
  readonly secret: string;
  estimatedTokens: number;
  estimatedCostUsd: number;
  /** Redis time (ms) at which the lease was granted, and its deadline. */
  acquiredAt: number;
  deadline: number;
  /** This lease is the single half-open probe of its key. */
  probe: boolean;
  /** Granted by the per-process fallback while Redis was down. */
  local: boolean;
  release(outcome: Outcome): Promise<ReleaseResult>;
  /**
   * Push the deadline to `ms` from now (default leaseTimeoutMs), for calls that outlive it (long
   * streams). False when the lease had already expired or been released.
   */
  extend(ms?: number): Promise<boolean>;
}

export type AcquireResult = Lease | Exhausted;

export interface ReleaseResult {
  /** The lease was known; false when it had expired (deadline passed) or was released before. */
  released: boolean;
  keyState?: string;
  breaker?: string;
  /** What changed for the key: opened, reopened, closed, revoked, cooling, retired, or ''. */
  transition: string;
  /**
   * What the key was charged (USD): the real usage priced, or the lease's estimate when the usage
   * is unknown and the estimate stands (an abort, a broken stream, a timeout, a success without usage).
   */
  costUsd: number;
  /** Redis time (ms) of the release. */
  releasedAt?: number;
}

/** One periodic job of the scheduler, as /status and /metrics show it. */
export interface ScheduledJobStatus {
  name: string;
  /** Interval in ms, or a cron pattern (UTC). */
  every?: number;
  pattern?: string;
  /** When the next run is due (ISO), as the worker that ran the last one computed it. */
  nextRunAt?: string;
  lastRun?: { startedAt: string; durationMs: number; ok: boolean; worker: string; jobId: string; error?: string; summary?: Record<string, unknown> };
  runs: { completed: number; failed: number };
}

/** A key to probe: what the call needs (the secret stays in this process, as with a lease). */
export interface ProbeTarget {
  keyId: string;
  hint: string;
  provider: string;
  baseURL: string;
  secret: string;
  reason: 'open' | 'half_open' | 'revoked' | 'degraded';
}

export interface KeyPoolOptions {
  /** A Redis URL, or an ioredis Redis or Cluster instance (kept open on close()). */
  redis: string | Redis | Cluster;
  /** Pool configuration (validated; a bad one throws ConfigError listing every problem). */
  config: PoolConfigInput;
  /** A pino logger; the pool logs under `component: 'keypool'`. Default: pino to stderr at info. */
  logger?: Logger;
}

export interface KeyPoolEvents {
  'redis:down': [error: Error];
  'redis:up': [];
  transition: [event: { keyId: string; hint: string; transition: string }];
}

interface Topology {
  version: number;
  keys: Map<string, KeyRecord>;
  models: Map<string, ModelEntry>;
}

interface ModelEntry {
  groups: string[];
  /** Largest token bucket among the keys serving the model (Infinity: one has no TPM limit). */
  maxTokens: number;
  /** KEYS of the acquire script for this model, built once per topology. */
  scriptKeys: string[];
  /** Ids of keys serving the model that this process holds no secret for, comma-separated ('' none). */
  foreign: string;
  /** Keys serving the model that this process holds the secret of. */
  held: number;
}

type AcquireReply = [1, string, string, number, number, number, number, number] | [0, string, number, number];

/** Errors from a Redis that answers but cannot serve the pool: treated like Redis being down. */
const CONNECTION_LOST = /^(LOADING|BUSY|CLUSTERDOWN|TRYAGAIN|MASTERDOWN|READONLY|OOM|MISCONF|NOAUTH|WRONGPASS|NOPERM)/;
/** While down under policy local, how often acquire tries Redis again (a timeout alone does not reconnect). */
const REDIS_RETRY_MS = 1000;

/** Wait for a client someone else created to be connected (bounded): commands are never queued. */
function waitReady(client: Redis | Cluster, ms: number): Promise<void> {
  if (client.status === 'wait') return client.connect().then(() => undefined);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off('ready', onReady);
      reject(new Error(`Redis not ready after ${ms} ms`));
    }, ms);
    const onReady = () => {
      clearTimeout(timer);
      resolve();
    };
    client.once('ready', onReady);
  });
}

/** Strip credentials from a Redis URL before it appears in a message. */
function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable REDIS URL)';
  }
}

/**
 * A pool of provider API keys shared by every process that connects to the same Redis and pool
 * name. All shared state changes through Lua scripts (see lua/), so N processes obey a key's
 * limits exactly like one. Secrets stay in this process; Redis knows keys by fingerprint id.
 */
export class KeyPool extends EventEmitter<KeyPoolEvents> {
  readonly name: string;
  readonly config: PoolConfig;
  readonly keys: PoolKeys;
  /** Gateway tokens (virtual keys) of this pool, enforced fleet-wide like keys. */
  readonly tokens: GatewayTokens;
  private readonly client: Redis | Cluster;
  private readonly ownsClient: boolean;
  private readonly scripts: ScriptRunner;
  private readonly log: Logger;
  private readonly prices: PriceTable;
  private readonly secrets = new Map<string, string>();
  /** Settings of the keys this process registered (config and addKey), to register again after Redis lost them. */
  private readonly own = new Map<string, KeyRecord>();
  /** Keys from the config (never dropped by a secret source). */
  private readonly configIds = new Set<string>();
  /** Keys this process holds from secret sources (setSourceKeys). */
  private readonly sourced = new Map<string, KeyRecord>();
  private closing = false;
  private readonly local: LocalLimiter;
  /** Every key record this process has seen, removed ones included: their leases can still be released. */
  private readonly rawRecords = new Map<string, KeyRecord>();
  private topology: Topology = { version: -1, keys: new Map(), models: new Map() };
  private refreshing: Promise<void> | undefined;
  private down: { since: number; error: string } | undefined;
  private lastRedisTry = 0;
  /** The pool's epoch in Redis when this process registered its keys (a new one means Redis lost them). */
  private epoch: string | undefined;
  private readonly clientListeners: [string, (...args: never[]) => void][] = [];
  private readonly unpricedWarned = new Set<string>();
  private readonly releaseArgs: (string | number)[];

  private constructor(client: Redis | Cluster, ownsClient: boolean, config: PoolConfig, logger: Logger) {
    super();
    this.client = client;
    this.ownsClient = ownsClient;
    this.config = config;
    this.name = config.pool;
    this.keys = new PoolKeys(config.pool);
    this.scripts = new ScriptRunner(client);
    this.log = logger.child({ component: 'keypool', pool: config.pool });
    this.prices = new PriceTable(config.prices);
    this.local = new LocalLimiter(config.redisDown.fleetSize);
    // same runner, same Redis-down policy (events, logs, typed errors) as acquire
    this.tokens = new GatewayTokens({
      keys: this.keys,
      config,
      log: logger.child({ component: 'keypool-tokens', pool: config.pool }),
      run: (name, keys, args) => this.run(name, keys, args),
      redisAvailable: () => !this.down,
    });
    const b = config.breaker;
    const h = config.health;
    this.releaseArgs = [
      b.failures, b.errorRate, b.minRequests, b.cooldownMs, b.maxCooldownMs,
      h.windowMs, h.degradedP99Ms, h.degradedErrorRate, h.minRequests, h.degradedScore,
      config.cooling.defaultMs,
    ];
    this.listen('close', () => {
      if (!this.closing) this.markDown(new Error('connection to Redis closed'));
    });
    this.listen('ready', () => this.markUp());
    this.listen('error', (e: Error) => this.markDown(e));
  }

  private listen(event: string, fn: (...args: never[]) => void): void {
    (this.client as unknown as EventEmitter).on(event, fn as (...args: unknown[]) => void);
    this.clientListeners.push([event, fn]);
  }

  /**
   * Validate the config, connect, register this process's keys (their settings, never their
   * secrets) and load the pool's topology. Keys already in the pool keep their state.
   */
  static async connect(options: KeyPoolOptions): Promise<KeyPool> {
    const config = parsePoolConfig(options.config);
    const logger =
      options.logger ??
      pino(
        {
          name: 'keypool',
          level: process.env.KEYPOOL_LOG_LEVEL ?? 'info',
          redact: { paths: ['secret', '*.secret', 'apiKey', '*.apiKey', '*.authorization', '*.headers.authorization'], censor: '[redacted]' },
        },
        pino.destination(2),
      );
    let client: Redis | Cluster;
    let owns = false;
    if (typeof options.redis === 'string') {
      const url = options.redis;
      client = new Redis(url, {
        lazyConnect: true,
        // no auto-pipelining: it keeps one pipeline in flight per connection, so Node and Redis
        // take turns; plain writes let Redis read many callers' commands at once (bench: +55-80%)
        enableAutoPipelining: false,
        // fail fast while disconnected: a queued acquire that runs minutes later would leak a slot
        enableOfflineQueue: false,
        maxRetriesPerRequest: 1,
        commandTimeout: config.redisDown.timeoutMs,
        connectTimeout: config.redisDown.timeoutMs * 3,
        retryStrategy: (n) => Math.min(50 * 2 ** n, 2000),
      });
      owns = true;
      // until the pool listens, connection errors are reported by the connect() below
      let cause: Error | undefined;
      const quiet = (e: Error) => void (cause ??= e);
      client.on('error', quiet);
      try {
        await client.connect();
      } catch (e) {
        if (config.redisDown.policy === 'fail-closed') {
          client.disconnect();
          // ioredis rejects with "Connection is closed."; the error event said why (ECONNREFUSED...)
          const why = cause?.message ?? (e as Error).message;
          throw new RedisUnavailableError(
            `cannot reach Redis at ${safeUrl(url)} (${why}); start Redis or set REDIS_URL to a reachable server`,
            { cause: e },
          );
        }
      }
    } else {
      client = options.redis;
      if (client.status !== 'ready') await waitReady(client, config.redisDown.timeoutMs * 3).catch(() => undefined);
    }
    if (owns) client.removeAllListeners('error');
    const pool = new KeyPool(client, owns, config, logger);
    for (const k of config.keys) {
      const rec = recordOfSpec(k);
      pool.secrets.set(rec.id, k.secret);
      pool.own.set(rec.id, rec);
      pool.configIds.add(rec.id);
    }
    try {
      await pool.upsertRecords([...pool.own.values()]);
      await pool.refreshTopology();
    } catch (e) {
      if (!isRedisUnavailable(e) || config.redisDown.policy === 'fail-closed') {
        if (owns) client.disconnect();
        throw e;
      }
      // policy local: start on the keys this process holds
      pool.setTopology(0, config.keys.map(recordOfSpec));
    }
    return pool;
  }

  // ---- acquire / release ------------------------------------------------------------------

  /**
   * Lease a key for one call to `model`. Returns a Lease, or `{ ok: false, reason, retryAfterMs }`
   * when no key can serve now; with `maxWaitMs` it waits (abortably) for the time the pool names.
   * Throws UnknownModelError, RequestTooLargeError, or RedisUnavailableError (policy fail-closed).
   */
  async acquire(req: AcquireRequest): Promise<AcquireResult> {
    if (typeof req?.model !== 'string' || req.model === '') throw new InvalidArgumentError('acquire needs a model name');
    const est = req.estimatedTokens ?? 0;
    if (!Number.isFinite(est) || est < 0) throw new InvalidArgumentError(`estimatedTokens must be a number >= 0, got ${String(req.estimatedTokens)}`);
    const out = Math.min(est, req.estimatedOutputTokens ?? est);
    const estCost = this.priced(req.model) ? this.prices.costNanos(req.model, est - out, out) : 0;
    const exclude = new Set(req.exclude ?? []);
    const maxWait = req.maxWaitMs ?? 0;
    const deadline = Date.now() + maxWait;
    req.signal?.throwIfAborted();
    for (let busy = 0; ; ) {
      const r = await this.tryAcquire(req.model, Math.ceil(est), estCost, exclude);
      if (r.ok) {
        if (req.route !== undefined) r.route = req.route;
        return r;
      }
      if (r.reason === 'busy' && busy++ < 50) continue;
      const res: Exhausted = r.reason === 'busy' ? { ok: false, reason: 'rate_limited', retryAfterMs: 1 } : r;
      const wait = res.retryAfterMs;
      if (wait === null || Date.now() + wait > deadline) return res;
      // a little jitter so a crowd of waiters does not arrive in the same millisecond
      try {
        await sleep(wait + Math.random() * Math.min(5, wait / 10 + 1), undefined, req.signal ? { signal: req.signal } : {});
      } catch (e) {
        throw req.signal?.aborted ? req.signal.reason : e;
      }
      busy = 0;
    }
  }

  private async tryAcquire(model: string, est: number, estCost: number, exclude: Set<string>): Promise<Lease | (Exhausted | { ok: false; reason: 'busy'; retryAfterMs: number })> {
    let entry = this.topology.models.get(model);
    if (!entry) {
      await this.refreshTopology().catch(() => undefined);
      entry = this.topology.models.get(model);
      if (!entry) throw new UnknownModelError(model, [...this.topology.models.keys()]);
    }
    if (est > entry.maxTokens) throw new RequestTooLargeError(model, est, entry.maxTokens);
    if (this.down && this.config.redisDown.policy === 'local') {
      // stay local, but try Redis again now and then: a timeout alone never brings a 'ready' event
      if (Date.now() - this.lastRedisTry < REDIS_RETRY_MS) return this.acquireLocal(model, est, exclude);
      this.lastRedisTry = Date.now();
    }
    // keys this process holds no secret for (another process's rollout) are not ours to lease
    let excluded = exclude.size ? [...exclude].join(',') : '';
    if (entry.foreign) excluded = excluded ? `${excluded},${entry.foreign}` : entry.foreign;

    let reply: AcquireReply;
    try {
      reply = (await this.run('acquire', entry.scriptKeys, [
        est,
        estCost,
        this.config.leaseTimeoutMs,
        this.config.concurrencyRecheckMs,
        Math.random(),
        excluded,
        this.config.candidates,
        Math.floor(Math.random() * 2 ** 31),
      ])) as AcquireReply;
    } catch (e) {
      if (isRedisUnavailable(e) && this.config.redisDown.policy === 'local') return this.acquireLocal(model, est, exclude);
      throw e;
    }
    if (reply[0] === 0) {
      this.noteVersion(reply[3]);
      const [, reason, retry] = reply;
      if (reason === 'too_large') throw new RequestTooLargeError(model, est, entry.maxTokens);
      return { ok: false, reason: reason as ExhaustedReason, retryAfterMs: retry < 0 ? null : retry } as Exhausted;
    }
    const [, keyId, leaseId, , nowMs, nowMicros, version, probe] = reply;
    this.noteVersion(version);
    const rec = this.topology.keys.get(keyId) ?? (await this.recordOf(keyId));
    const secret = this.secrets.get(keyId);
    if (secret === undefined) {
      // A key added since this process last read the topology, with a secret it does not hold:
      // hand the lease back (the request token stays spent) and try the others.
      this.log.warn({ keyId, hint: rec.hint }, 'leased a key this process holds no secret for; skipping it');
      await this.releaseRaw(rec, leaseId, model, '', 'aborted', -1, 0, 0, -1).catch(() => undefined);
      exclude.add(keyId);
      return { ok: false, reason: 'busy', retryAfterMs: 0 };
    }
    const at = nowMs + nowMicros / 1000;
    return this.makeLease(rec, secret, leaseId, model, est, estCost, at, at + this.config.leaseTimeoutMs, probe === 1, false);
  }

  private acquireLocal(model: string, est: number, exclude: Set<string>): Lease | Exhausted {
    const candidates = [...this.topology.keys.values()].filter((r) => r.models.includes(model) && this.secrets.has(r.id));
    const r = this.local.acquire(candidates, est, exclude);
    if (!r.ok) return r;
    const now = Date.now();
    return this.makeLease(r.key, this.secrets.get(r.key.id)!, `local-${now}-${Math.random().toString(36).slice(2)}`, model, est, 0, now, now + this.config.leaseTimeoutMs, false, true);
  }

  private makeLease(rec: KeyRecord, secret: string, leaseId: string, model: string, est: number, estCost: number, acquiredAt: number, deadline: number, probe: boolean, local: boolean): Lease {
    let released: Promise<ReleaseResult> | undefined;
    const lease = {
      ok: true as const,
      id: leaseId,
      keyId: rec.id,
      hint: rec.hint,
      ...(rec.name !== undefined ? { name: rec.name } : {}),
      provider: rec.provider,
      baseURL: rec.baseURL,
      model,
      estimatedTokens: est,
      estimatedCostUsd: estCost / NANOS_PER_USD,
      acquiredAt,
      deadline,
      probe,
      local,
      // once released, a second call is a no-op; a release that failed (Redis away) may be retried
      extend: (ms?: number) => this.extend(lease as Lease, ms ?? this.config.leaseTimeoutMs),
      release: (outcome: Outcome) =>
        (released ??= this.release(lease as Lease, outcome).catch((e: unknown) => {
          released = undefined;
          throw e;
        })),
    };
    // the secret is reachable by property access only: never serialised, never inspected
    Object.defineProperty(lease, 'secret', { value: secret, enumerable: false });
    return lease as Lease;
  }

  /**
   * Return a lease with what happened: frees its slot, reconciles tokens and cost with real
   * usage, records latency and outcome, moves the breaker, cools on 429, revokes on 401/403.
   * Prefer `lease.release(outcome)`, which makes a second call a no-op.
   */
  async release(lease: Lease, outcome: Outcome): Promise<ReleaseResult> {
    const cls = classify(outcome);
    const latency = outcome.latencyMs ?? -1;
    if (!Number.isFinite(latency)) throw new InvalidArgumentError('latencyMs must be a finite number');
    const real = realTokens(outcome, cls);
    const realTotal = real ? real.input + real.output : -1;
    const costNanos = real ? this.prices.costNanos(lease.model, real.input, real.output) : -1;
    let coolMs = -1;
    if (cls === 'rate_limited') {
      const fromHeaders = cooldownFromHeaders(outcome.headers);
      coolMs = Math.min(this.config.cooling.maxMs, fromHeaders ?? this.config.cooling.defaultMs);
    }
    const rec = this.topology.keys.get(lease.keyId) ?? this.rawRecordFor(lease);
    // unknown usage: the release script keeps the estimate as the charge, so that is the cost
    const costUsd = real ? Math.max(0, costNanos) / NANOS_PER_USD : lease.estimatedCostUsd;
    if (lease.local) {
      this.local.release(rec, cls, lease.estimatedTokens, real ? realTotal : null, coolMs >= 0 ? coolMs : this.config.cooling.defaultMs);
      return { released: true, transition: cls === 'auth' ? 'revoked' : '', costUsd };
    }
    return { ...(await this.releaseRaw(rec, lease.id, lease.model, lease.route ?? '', cls, latency, realTotal, costNanos, coolMs)), costUsd };
  }

  private async extend(lease: Lease, ms: number): Promise<boolean> {
    if (!Number.isFinite(ms) || ms < 1) throw new InvalidArgumentError(`extend takes a positive number of ms, got ${String(ms)}`);
    if (lease.local) {
      lease.deadline = Date.now() + ms;
      return true;
    }
    const reply = (await this.run('extend', [this.keys.leases, this.keys.st], [lease.id, Math.ceil(ms)])) as [1, number] | [0];
    if (reply[0] === 0) return false;
    lease.deadline = reply[1];
    return true;
  }

  private rawRecordFor(lease: Lease): KeyRecord {
    const r = this.rawRecords.get(lease.keyId);
    if (r) return r;
    throw new KeyNotFoundError(lease.keyId);
  }

  private async releaseRaw(rec: KeyRecord, leaseId: string, model: string, route: string, cls: OutcomeClass, latency: number, tokens: number, cost: number, coolMs: number): Promise<ReleaseResult> {
    const k = this.keys;
    let group = rec.g;
    let reply: [1, string, string, string, number, number] | [0, string, string?];
    for (let attempt = 0; ; attempt++) {
      reply = (await this.run(
        'release',
        [k.cfg, k.st, k.leases, k.avail(group), k.wait(group), k.meta, k.spend],
        [leaseId, cls, latency, tokens, cost, coolMs, ...this.releaseArgs, group, model, route],
      )) as typeof reply;
      // the key's models changed under us: its candidate sets are another group's now
      if (reply[0] === 0 && reply[1] === 'moved' && attempt < 3) {
        group = reply[2]!;
        void this.refreshTopology().catch(() => undefined);
        continue;
      }
      break;
    }
    if (reply[0] === 0) {
      if (reply[1] === 'unknown_lease') this.log.warn({ keyId: rec.id, hint: rec.hint, leaseId }, 'released a lease that had already expired or been released');
      return { released: false, transition: '', costUsd: Math.max(0, cost) / NANOS_PER_USD };
    }
    const [, keyState, breaker, transition, atMs, atMicros] = reply;
    if (transition) {
      this.log.info({ keyId: rec.id, hint: rec.hint, transition, outcome: cls }, `key ${transition}`);
      this.emit('transition', { keyId: rec.id, hint: rec.hint, transition });
      if (transition === 'retired') void this.refreshTopology().catch(() => undefined);
    }
    return { released: true, keyState, breaker, transition, costUsd: Math.max(0, cost) / NANOS_PER_USD, releasedAt: atMs + atMicros / 1000 };
  }

  // ---- keys --------------------------------------------------------------------------------

  /** Add a key (or update its settings if it is already in the pool). Returns its id and hint. */
  async addKey(spec: KeySpecInput): Promise<{ id: string; hint: string }> {
    const parsed = parseKeySpec(spec);
    const rec = recordOfSpec(parsed);
    this.secrets.set(rec.id, parsed.secret);
    this.own.set(rec.id, rec);
    await this.upsertRecords([rec]);
    await this.refreshTopology();
    return { id: rec.id, hint: rec.hint };
  }

  /** Change a key's settings (limits, models, budget, weight...) while the pool runs. */
  async updateKey(keyId: string, patch: Partial<KeySettings>): Promise<void> {
    if ('secret' in (patch as object)) throw new InvalidArgumentError('updateKey cannot change a secret: add the new key and retire the old one');
    for (let attempt = 0; attempt < 5; attempt++) {
      const raw = await this.run('hget', [this.keys.cfg], [keyId]);
      if (raw === null) throw new KeyNotFoundError(keyId);
      const old = JSON.parse(raw as string) as KeyRecord;
      const rec = toRecord(old.id, old.hint, parseKeySettings({ ...settingsOf(old), ...patch }));
      if (await this.upsertOne(rec, raw as string)) {
        await this.refreshTopology();
        return;
      }
    }
    throw new InvalidArgumentError(`key ${keyId} kept changing while being updated; try again`);
  }

  /** No new leases until enabled; leases in flight finish. */
  disableKey(keyId: string) {
    return this.setState(keyId, 'disable');
  }
  /** Active again; also lifts a revocation (401/403) and a drain. */
  enableKey(keyId: string) {
    return this.setState(keyId, 'enable');
  }
  /** No new leases; leases in flight finish; the key stays in the pool. */
  drainKey(keyId: string) {
    return this.setState(keyId, 'drain');
  }
  /** Drain, then remove once the last lease in flight is released. */
  retireKey(keyId: string) {
    return this.setState(keyId, 'retire');
  }
  /** Remove at once; releases of its leases in flight are then ignored. */
  removeKey(keyId: string) {
    return this.setState(keyId, 'remove');
  }
  /** Close the breaker, end cooling, forget the health history. */
  resetKey(keyId: string) {
    return this.setState(keyId, 'reset');
  }
  /** Start the budget period again from zero spend. */
  resetBudget(keyId: string) {
    return this.setState(keyId, 'reset_budget');
  }

  // ---- keys from a secret source, probes, upkeep (the scheduler's side) ------------------

  /**
   * Make the keys this process holds from secret sources exactly `specs` (config keys are not
   * touched). New keys are registered and used at once; keys whose settings changed are updated;
   * keys that are no longer given are dropped by this process only: it stops leasing them (leases
   * in flight keep their secret and finish), while the other processes, which may not have loaded
   * the new set yet, go on using them. Retiring them from the pool is the coordinator's job (see
   * the secret refresh in @keypool/worker), once every process has the new set. Keys whose id
   * (their secret) did not change keep all their state.
   */
  async setSourceKeys(specs: readonly KeySpecInput[]): Promise<{ added: string[]; changed: string[]; dropped: string[] }> {
    const parsed = specs.map((s) => parseKeySpec(s));
    const next = new Map<string, { rec: KeyRecord; secret: string }>();
    for (const spec of parsed) {
      const rec = recordOfSpec(spec);
      next.set(rec.id, { rec, secret: spec.secret });
    }
    const added: string[] = [];
    const changed: string[] = [];
    const upserts: KeyRecord[] = [];
    for (const [id, { rec }] of next) {
      const old = this.sourced.get(id) ?? this.own.get(id);
      if (!old) added.push(id);
      else if (JSON.stringify(old) !== JSON.stringify(rec)) changed.push(id);
      if (!old || JSON.stringify(old) !== JSON.stringify(rec)) upserts.push(rec);
    }
    const dropped = [...this.sourced.keys()].filter((id) => !next.has(id) && !this.configIds.has(id));
    // Redis first: if it fails, nothing here changed and the same call can be made again
    if (upserts.length > 0) await this.upsertRecords(upserts);
    // a key that comes back to its source while it was being retired (drained, not yet removed)
    for (const id of added) {
      await this.setState(id, 'unretire').catch((e) => {
        if (!(e instanceof KeyNotFoundError)) throw e;
      });
    }
    for (const [id, { rec, secret }] of next) {
      this.secrets.set(id, secret);
      this.own.set(id, rec);
      this.sourced.set(id, rec);
    }
    for (const id of [...this.sourced.keys()]) {
      if (next.has(id)) continue;
      this.sourced.delete(id);
      if (this.configIds.has(id)) continue;
      this.own.delete(id);
      this.secrets.delete(id);
    }
    if (added.length || changed.length || dropped.length) {
      this.log.info({ added, changed, dropped }, 'keys from secret sources applied');
    }
    await this.refreshTopology();
    return { added, changed, dropped };
  }

  /** Ids of the keys this process holds the secret of (config, secret sources, addKey). */
  heldKeyIds(): string[] {
    return [...this.secrets.keys()];
  }

  /** Whether `keyId` is one of this process's config keys (a secret source never drops those). */
  isConfigKey(keyId: string): boolean {
    return this.configIds.has(keyId);
  }

  /**
   * Keys that want a health probe: open or half-open breaker, revoked, or degraded; never healthy,
   * disabled or draining ones. Only keys this process holds the secret of (it makes the call).
   * For the scheduler: reads every key (O(keys)), never on the request path.
   */
  async probeTargets(): Promise<ProbeTarget[]> {
    const status = await this.status();
    const out: ProbeTarget[] = [];
    for (const k of status.keys) {
      const secret = this.secrets.get(k.id);
      if (!secret) continue;
      const why: ProbeTarget['reason'] | undefined =
        k.state === 'open' || k.state === 'half_open' || k.state === 'revoked' ? k.state : k.state === 'active' && k.degraded ? 'degraded' : undefined;
      if (why) out.push({ keyId: k.id, hint: k.hint, provider: k.provider, baseURL: k.baseURL, secret, reason: why });
    }
    return out;
  }

  /**
   * Record a health probe's result (see lua/probe-3.lua): a success closes the breaker and clears
   * a revocation; a failure reopens an open breaker for longer; 401/403 revokes.
   */
  async reportProbe(keyId: string, outcome: Pick<Outcome, 'status' | 'error' | 'latencyMs' | 'headers'>): Promise<{ state: string; breaker: string; transition: string }> {
    let cls = classify(outcome);
    // only a 2xx (or a 429, which proves the key valid) is a good probe: a 404 on /models is a wrong
    // baseURL more likely than a healthy provider
    if (cls === 'client_error' || cls === 'aborted') cls = 'server_error';
    const latency = outcome.latencyMs ?? -1;
    let coolMs = -1;
    if (cls === 'rate_limited') coolMs = Math.min(this.config.cooling.maxMs, cooldownFromHeaders(outcome.headers) ?? this.config.cooling.defaultMs);
    const raw = (await this.run('hget', [this.keys.cfg], [keyId])) as string | null;
    if (raw === null) throw new KeyNotFoundError(keyId);
    let group = (JSON.parse(raw) as KeyRecord).g;
    const hint = (JSON.parse(raw) as KeyRecord).hint;
    const b = this.config.breaker;
    const h = this.config.health;
    const k = this.keys;
    for (let attempt = 0; ; attempt++) {
      const reply = (await this.run('probe', [k.st, k.avail(group), k.wait(group)], [
        keyId, cls, latency, group,
        b.failures, b.errorRate, b.minRequests, b.cooldownMs, b.maxCooldownMs,
        h.windowMs, h.degradedP99Ms, h.degradedErrorRate, h.minRequests, h.degradedScore,
        coolMs, this.config.cooling.defaultMs,
      ])) as [1, string, string, string] | [0, string, string?];
      if (reply[0] === 0 && reply[1] === 'moved' && attempt < 3) {
        group = reply[2]!;
        continue;
      }
      if (reply[0] === 0) throw new KeyNotFoundError(keyId);
      const [, state, breaker, transition] = reply;
      if (transition && transition !== 'skipped') {
        this.log.info({ keyId, hint, transition, outcome: cls }, `key ${transition} by health probe`);
        this.emit('transition', { keyId, hint, transition });
      }
      return { state, breaker, transition };
    }
  }

  /**
   * Upkeep of the whole pool (see lua/housekeep-4.lua): expired leases back, next budget periods
   * started, stale health windows forgotten. Idempotent; the scheduler runs it periodically.
   */
  async housekeep(): Promise<{ leasesReaped: number; periodsStarted: { keyId: string; previousSpendUsd: number }[]; healthWindowsCleared: number }> {
    await this.refreshTopology();
    const groups = [...new Set([...this.topology.keys.values()].map((r) => r.g))].sort();
    const k = this.keys;
    const h = this.config.health;
    const reply = (await this.run('housekeep', [k.cfg, k.st, k.leases, k.meta, ...groups.flatMap((g) => [k.avail(g), k.wait(g)])], [
      groups.join(','), h.windowMs, h.degradedP99Ms, h.degradedErrorRate, h.minRequests, h.degradedScore,
    ])) as [number, string[], number];
    const periodsStarted = reply[1].map((line) => {
      const [keyId, nanos] = line.split(':') as [string, string];
      return { keyId, previousSpendUsd: Number(nanos) / NANOS_PER_USD };
    });
    for (const p of periodsStarted) {
      this.log.info({ keyId: p.keyId, hint: this.topology.keys.get(p.keyId)?.hint, previousSpendUsd: p.previousSpendUsd }, 'budget period started');
    }
    if (reply[0] > 0) this.log.info({ leases: reply[0] }, 'expired leases given back');
    await this.refreshTopology();
    return { leasesReaped: reply[0], periodsStarted, healthWindowsCleared: reply[2] };
  }

  private async setState(keyId: string, action: string): Promise<{ state: string; breaker: string; inFlight: number }> {
    const raw = (await this.run('hget', [this.keys.cfg], [keyId])) as string | null;
    if (raw === null) throw new KeyNotFoundError(keyId);
    const k = this.keys;
    let group = (JSON.parse(raw) as KeyRecord).g;
    const hint = (JSON.parse(raw) as KeyRecord).hint;
    let reply: [1, string, string, number] | [0, string, string?];
    for (let attempt = 0; ; attempt++) {
      reply = (await this.run('setState', [k.cfg, k.st, k.avail(group), k.wait(group), k.meta], [keyId, action, group])) as typeof reply;
      if (reply[0] === 0 && reply[1] === 'moved' && attempt < 3) {
        group = reply[2]!;
        continue;
      }
      break;
    }
    if (reply[0] === 0) throw new KeyNotFoundError(keyId);
    this.log.info({ keyId, hint, action }, `key ${action}`);
    if (reply[1] === 'removed') await this.refreshTopology().catch(() => undefined);
    return { state: reply[1], breaker: reply[2], inFlight: reply[3] };
  }

  private async upsertRecords(recs: KeyRecord[]): Promise<void> {
    for (const rec of recs) {
      for (let attempt = 0; ; attempt++) {
        const raw = (await this.run('hget', [this.keys.cfg], [rec.id])) as string | null;
        if (await this.upsertOne(rec, raw ?? '')) break;
        if (attempt >= 5) throw new InvalidArgumentError(`key ${rec.id} kept changing while being registered; try again`);
      }
    }
  }

  private async upsertOne(rec: KeyRecord, expected: string): Promise<boolean> {
    const k = this.keys;
    const keys = [k.cfg, k.st, k.meta, k.avail(rec.g), k.wait(rec.g)];
    if (expected) {
      const old = JSON.parse(expected) as KeyRecord;
      if (old.g !== rec.g) keys.push(k.avail(old.g), k.wait(old.g));
    }
    const reply = (await this.run('upsertKey', keys, [rec.id, JSON.stringify(rec), expected, randomUUID()])) as [number, string, string?];
    if (reply[0] === 1 && reply[1] !== 'unchanged') this.log.info({ keyId: rec.id, hint: rec.hint, change: reply[1] }, `key ${reply[1]}`);
    if (reply[0] === 1 && this.own.has(rec.id)) this.epoch = reply[2];
    return reply[0] === 1;
  }

  // ---- status ------------------------------------------------------------------------------

  /** Every key of the pool, fleet-wide from Redis: state, limits and what is left, spend, health. Never a secret. */
  async status(): Promise<PoolStatus> {
    const redis = {
      ok: !this.down,
      policy: this.config.redisDown.policy,
      ...(this.down ? { downSince: new Date(this.down.since).toISOString(), lastError: this.down.error } : {}),
    };
    try {
      const k = this.keys;
      const raw = JSON.parse((await this.run('status', [k.cfg, k.st, k.leases, k.meta, k.spend], [])) as string) as RawStatus;
      return toPoolStatus(this.name, { ...redis, ok: true }, raw);
    } catch (e) {
      if (!isRedisUnavailable(e)) throw e;
      return {
        pool: this.name,
        redis: { ...redis, ok: false },
        mode: this.config.redisDown.policy === 'local' ? 'local' : 'failing-closed',
        version: this.topology.version,
        leasesInFlight: null,
        keys: [...this.topology.keys.values()].map((r) => ({
          id: r.id,
          hint: r.hint,
          ...(r.name !== undefined ? { name: r.name } : {}),
          provider: r.provider,
          baseURL: r.baseURL,
          models: r.models,
          state: 'unknown',
          limits: limitsOf(r),
          inFlight: this.local.inFlight(r.id),
        })),
      } as PoolStatus;
    }
  }

  /**
   * The scheduler's jobs as the workers last recorded them (fleet-wide, from Redis): schedule,
   * next and last run, run counts. Empty when no `keypool worker` runs for this pool.
   */
  async scheduleStatus(): Promise<ScheduledJobStatus[]> {
    const [jobs, runs] = await Promise.all([this.client.hgetall(this.keys.sched), this.client.hgetall(this.keys.schedRuns)]);
    return Object.entries(jobs)
      .map(([name, raw]) => {
        const j = JSON.parse(raw) as Omit<ScheduledJobStatus, 'name' | 'runs'>;
        return { name, ...j, runs: { completed: Number(runs[`${name}:completed`] ?? 0), failed: Number(runs[`${name}:failed`] ?? 0) } };
      })
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  /** True while Redis answers (the last call succeeded). */
  get redisAvailable(): boolean {
    return !this.down;
  }

  /** Whether this process holds a key that serves `model` (as of the last topology it read). */
  servesModel(model: string): boolean {
    return (this.topology.models.get(model)?.held ?? 0) > 0;
  }

  /** The keys of the pool as this process last read them (settings only, never a secret). */
  knownKeys(): { id: string; hint: string; name?: string; provider: string; models: string[] }[] {
    return [...this.topology.keys.values()].map((r) => ({ id: r.id, hint: r.hint, ...(r.name !== undefined ? { name: r.name } : {}), provider: r.provider, models: r.models }));
  }

  /** Stop: closes the Redis connection if the pool opened it. Leases in flight are not released. */
  async close(): Promise<void> {
    this.closing = true;
    this.removeAllListeners();
    for (const [event, fn] of this.clientListeners) (this.client as unknown as EventEmitter).off(event, fn as (...args: unknown[]) => void);
    // a client we made may still report a failed reconnect: nobody is listening any more
    if (this.ownsClient) this.client.on('error', () => undefined);
    if (this.ownsClient) await this.client.quit().catch(() => this.client.disconnect());
  }

  // ---- internals ---------------------------------------------------------------------------

  /** The price of a model from this pool's table (defaults merged with `prices`), or null. */
  priceOf(model: string): ModelPrice | null {
    return this.prices.priceOf(model);
  }

  private priced(model: string): boolean {
    if (this.prices.priceOf(model)) return true;
    if (!this.unpricedWarned.has(model)) {
      this.unpricedWarned.add(model);
      this.log.warn({ model }, `no price for model "${model}": its spend counts as 0 against budgets; add it under prices in the config`);
    }
    return false;
  }

  /** Run a script (or a plain HGET) with the Redis-down policy: typed error, logged, visible in status. */
  private async run(name: ScriptName | 'hget', keys: string[], args: (string | number)[]): Promise<unknown> {
    const timeoutMs = this.config.redisDown.timeoutMs;
    let timer: NodeJS.Timeout | undefined;
    try {
      // a client that is not connected would queue the command and run it later (a lease nobody holds)
      if (this.client.status !== 'ready') throw new Error(`connection is ${this.client.status}`);
      const call = name === 'hget' ? this.client.hget(keys[0]!, String(args[0])) : this.scripts.call(name, keys, args);
      // a client we made has ioredis' commandTimeout; one we were given may not
      const result = this.ownsClient
        ? await call
        : await Promise.race([
            call,
            new Promise<never>((_, reject) => {
              timer = setTimeout(() => reject(new Error(`no answer from Redis within ${timeoutMs} ms`)), timeoutMs);
            }),
          ]);
      if (this.down) this.markUp();
      return result;
    } catch (e) {
      const err = e as Error;
      if (err.name === 'ReplyError' && !CONNECTION_LOST.test(err.message)) throw new ScriptError(name, { cause: e });
      this.markDown(err);
      throw new RedisUnavailableError(
        `Redis unavailable for pool "${this.name}" (${err.message}); ` +
          (this.config.redisDown.policy === 'fail-closed'
            ? 'failing closed (redisDown.policy=fail-closed)'
            : 'using per-process limits (redisDown.policy=local)'),
        { cause: e },
      );
    } finally {
      clearTimeout(timer);
    }
  }

  private markDown(e: Error): void {
    if (this.down) return;
    this.down = { since: Date.now(), error: e.message };
    this.log.error(
      { err: e.message, policy: this.config.redisDown.policy },
      this.config.redisDown.policy === 'fail-closed'
        ? 'Redis unavailable: acquire fails with RedisUnavailableError until it is back'
        : `Redis unavailable: degrading to per-process limits (1/${this.config.redisDown.fleetSize} of each key)`,
    );
    this.emit('redis:down', e);
  }

  private markUp(): void {
    if (!this.down) return;
    const downMs = Date.now() - this.down.since;
    this.down = undefined;
    this.log.warn({ downMs }, 'Redis available again: shared limits back in force');
    this.emit('redis:up');
    void this.registerMissing().catch((e) => this.log.warn({ err: (e as Error).message }, 'could not re-register keys after Redis came back'));
  }

  /**
   * After an outage, Redis may have restarted empty. The pool's epoch (set with the first key)
   * tells: a missing or different epoch means the keys this process registered are gone, so it
   * registers them again; the same epoch means nothing was lost (keys an operator removed stay
   * removed). A process that started while Redis was down registers its keys now.
   */
  private async registerMissing(): Promise<void> {
    const epoch = (await this.run('hget', [this.keys.meta], ['epoch'])) as string | null;
    if (this.own.size > 0 && (epoch === null || epoch !== this.epoch)) {
      if (this.epoch !== undefined) {
        this.log.warn({ keys: [...this.own.values()].map((r) => r.hint) }, `Redis lost pool "${this.name}": registering this process's ${this.own.size} key(s) again (their counters start afresh)`);
      }
      await this.upsertRecords([...this.own.values()]);
    }
    await this.refreshTopology();
  }

  private noteVersion(v: number): void {
    if (v !== this.topology.version) void this.refreshTopology().catch(() => undefined);
  }

  /** Settings of a key the topology does not know yet (added by another process a moment ago). */
  private async recordOf(keyId: string): Promise<KeyRecord> {
    await this.refreshTopology().catch(() => undefined);
    const known = this.topology.keys.get(keyId) ?? this.rawRecords.get(keyId);
    if (known) return known;
    const raw = (await this.run('hget', [this.keys.cfg], [keyId])) as string | null;
    if (raw === null) throw new KeyNotFoundError(keyId);
    const rec = JSON.parse(raw) as KeyRecord;
    this.rawRecords.set(rec.id, rec);
    return rec;
  }

  /** Reload every key's settings from Redis (on start and when another process changed them). */
  async refreshTopology(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        const [version, all] = await Promise.all([
          this.run('hget', [this.keys.meta], ['v']),
          this.client.hgetall(this.keys.cfg),
        ]);
        this.setTopology(Number(version ?? 0), Object.values(all).map((raw) => JSON.parse(raw) as KeyRecord));
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }

  private setTopology(version: number, recs: KeyRecord[]): void {
    const keys = new Map<string, KeyRecord>();
    const models = new Map<string, ModelEntry>();
    for (const r of recs) {
      keys.set(r.id, r);
      this.rawRecords.set(r.id, r);
      for (const m of r.models) {
        const e = models.get(m) ?? { groups: [], maxTokens: 0, scriptKeys: [], foreign: '', held: 0 };
        if (this.secrets.has(r.id)) e.held++;
        if (!this.secrets.has(r.id)) e.foreign = e.foreign ? `${e.foreign},${r.id}` : r.id;
        if (!e.groups.includes(r.g)) e.groups.push(r.g);
        e.maxTokens = Math.max(e.maxTokens, r.tb > 0 ? r.tb : Infinity);
        models.set(m, e);
      }
    }
    const k = this.keys;
    for (const e of models.values()) {
      e.groups.sort();
      e.scriptKeys = [k.cfg, k.st, k.leases, k.meta, ...e.groups.flatMap((g) => [k.avail(g), k.wait(g)])];
    }
    this.topology = { version, keys, models };
  }
}

/** Limits of a key as status shows them. */
export function limitsOf(r: KeyRecord) {
  return {
    rpm: r.rpm,
    tpm: r.tpm,
    rpmBurst: r.rb,
    tpmBurst: r.tb,
    maxConcurrent: r.mc,
    budgetUsd: r.bud >= 0 ? r.bud / NANOS_PER_USD : null,
    budgetPeriod: r.bud >= 0 ? r.per : null,
    weight: r.w,
  };
}

