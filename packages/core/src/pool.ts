import { EventEmitter } from 'node:events';
import type { Cluster, Redis } from 'ioredis';
import { pino, type Logger } from 'pino';
import { systemClock, type AbortLike, type Clock } from './clock.js';
import { PoolCommands, REFUSAL_WARNINGS, refusalError, type AcquireReply, type AdmitArgs, type SettleArgs } from './commands.js';
import { parsePoolConfig, type KeySpecInput, type PoolConfig, type PoolConfigInput } from './config.js';
import { ConfigError, InvalidArgumentError, isRedisUnavailable } from './errors.js';
import { coolingMs, rateLimitHeaders, type RateLimitHeaders } from './headers.js';
import { startHeartbeat } from './heartbeat.js';
import { KeyAdmin, type HeldKey, type KeyChange } from './key-admin.js';
import { PRIORITY_CLASSES, type AcquireRequest, type AcquireResult, type Admission, type Exhausted, type Lease, type PriorityClass, type ReleaseOptions, type ReleaseResult, type TokenAdmitRequest, type TokenRefused, type TokenSettlement } from './lease.js';
import { LocalLimiter } from './local-limiter.js';
import { classify, realTokens, type Outcome, type OutcomeClass } from './outcome.js';
import { checkPartitionCount } from './partitions.js';
import { PoolKeys } from './pool-keys.js';
import { NANOS_PER_USD, PriceTable, type ModelPrice } from './pricing.js';
import { recordOfSpec, type KeyRecord, type KeySettings } from './records.js';
import { RedisLink, openClient } from './redis-link.js';
import type { PoolStatus, ScheduledJobStatus } from './status.js';
import type { PoolSeries } from './series.js';
import { GatewayTokens } from './tokens.js';
import type { RedisConnection } from './connect.js';
import { Topology } from './topology.js';
import { Upkeep, type ProbeTarget } from './upkeep.js';

export type { ExhaustedReason } from './commands.js';
export type { AcquireRequest, AcquireResult, Admission, Exhausted, Lease, PriorityClass, ReleaseOptions, ReleaseResult, TokenAdmitRequest, TokenRefused, TokenSettlement } from './lease.js';
export { PRIORITY_CLASSES } from './lease.js';

export interface KeyPoolOptions {
  /**
   * A Redis URL, a {@link RedisConnection} (Sentinel, Cluster, TLS, ACL user), or an ioredis Redis
   * or Cluster instance (kept open on close()).
   */
  redis: string | RedisConnection | Redis | Cluster;
  /** Pool configuration (validated; a bad one throws ConfigError listing every problem). */
  config: PoolConfigInput;
  /** A pino logger; the pool logs under `component: 'keypool'`. Default: pino to stderr at info. */
  logger?: Logger;
  /**
   * The time the pool's own decisions read (acquire's wait and its deadline, the per-process
   * limits, when Redis went down, an HTTP-date Retry-After). Default: the system clock. The
   * scripts never read it: they keep Redis TIME.
   */
  clock?: Clock;
  /**
   * @internal One partition of a partitioned pool (PartitionedPool.connect): its hash tag, used in
   * place of the pool name in every Redis key name.
   */
  partitionTag?: string;
}

export interface KeyPoolEvents {
  'redis:down': [error: Error];
  'redis:up': [];
  transition: [event: { keyId: string; hint: string; transition: string }];
  /** Redis was found without the pool's gateway tokens (logged at error level once per loss). */
  'tokens:lost': [];
  /**
   * An acquire of this process ended: admitted at once, admitted after waiting (a reservation's
   * sleep or retry sleeps: `waitMs`, this process's clock), or refused (a gateway token's refusal
   * included). For the process's metrics; the fleet-wide counts are in status().traffic.
   */
  admission: [event: AdmissionEvent];
}

/** See KeyPoolEvents.admission. */
export interface AdmissionEvent {
  priority: PriorityClass;
  /** '' = none. */
  tenant: string;
  result: 'admitted' | 'waited' | 'refused';
  /** Time slept waiting for a key (reservation and retries), ms. */
  waitMs: number;
}
/** Sampling gave up with candidates left: try again at once (acquire does, a bounded number of times). */
type Busy = { ok: false; reason: 'busy'; retryAfterMs: number | null };

/** A gateway token to admit with the key: the request, and what goes to Redis. */
type Admit = { req: TokenAdmitRequest; args: AdmitArgs };
/** The class and tenant a request is admitted in (AcquireRequest.priority, tenant). */
/**
 * `waitedMs`: what this caller has slept so far between tries (the traffic counters count its
 * admission as waited); `uncounted`: the traffic counters do not count a refusal of this call;
 * `weight`: the tenant's weight when no `priority.weights` entry names it (the partitioned pool
 * passes its admitted token's, which the partitions do not see).
 */
export type Who = { priority: PriorityClass; tenant: string; waitedMs?: number; uncounted?: boolean; weight?: number };

/**
 * Acquires a partitioned pool makes of its partitions for one caller's request: they emit no
 * 'admission' event (the partitioned pool emits one per request), and with `uncounted` their
 * refusals are not counted (the partitioned pool lets one partition count the request's refusal).
 */
export const innerAcquires = new WeakMap<AcquireRequest, { uncounted: boolean; sleptMs?: number; weight?: number }>();

/** The class and tenant of a request, checked: a typo in either would silently change who waits. */
function whoOf(req: AcquireRequest): Who {
  const priority = req.priority ?? 'normal';
  if (!PRIORITY_CLASSES.includes(priority)) throw new InvalidArgumentError(`priority must be one of ${PRIORITY_CLASSES.join(', ')}, got ${String(req.priority)}`);
  const tenant = req.tenant ?? '';
  if (typeof tenant !== 'string' || tenant.length > 64 || /[\s,]/.test(tenant)) {
    throw new InvalidArgumentError(`tenant must be a string of at most 64 characters without spaces or commas, got ${JSON.stringify(String(tenant).slice(0, 80))}`);
  }
  return { priority, tenant };
}

/**
 * A pool of provider API keys shared by every process that connects to the same Redis and pool
 * name. All shared state changes through Lua scripts (see lua/), so N processes obey a key's
 * limits exactly like one. Secrets stay in this process; Redis knows keys by fingerprint id.
 *
 * KeyPool is the front: it lends keys (acquire, the Lease, release, extend) and hands every other
 * job to a module of its own: the Redis link (redis-link.ts), the topology (topology.ts), key
 * administration (key-admin.ts) and upkeep (upkeep.ts), over the typed scripts (commands.ts).
 */
export class KeyPool extends EventEmitter<KeyPoolEvents> {
  readonly name: string;
  readonly config: PoolConfig;
  readonly keys: PoolKeys;
  /** Gateway tokens (virtual keys) of this pool, enforced fleet-wide like keys. */
  readonly tokens: GatewayTokens;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly prices: PriceTable;
  private readonly local: LocalLimiter;
  private readonly link: RedisLink;
  private readonly cmd: PoolCommands;
  private readonly topology: Topology;
  private readonly admin: KeyAdmin;
  private readonly upkeep: Upkeep;
  private readonly unpricedWarned = new Set<string>();
  /** Reservations just granted: how long until their start (acquire sleeps that long). */
  private readonly startsIn = new WeakMap<Lease, number>();

  protected constructor(client: Redis | Cluster, ownsClient: boolean, config: PoolConfig, logger: Logger, clock: Clock, tag = config.pool) {
    super();
    this.config = config;
    this.name = config.pool;
    this.keys = new PoolKeys(tag);
    this.clock = clock;
    this.log = logger.child({ component: 'keypool', pool: config.pool });
    this.prices = new PriceTable(config.prices);
    this.local = new LocalLimiter(config.redisDown.fleetSize, clock);
    const onUp = () => {
      this.emit('redis:up');
      void this.admin
        .registerMissing()
        .then((poolLost) => this.tokens.checkStore(poolLost))
        .catch((e) => this.log.warn({ err: (e as Error).message }, 'could not re-register keys and declared tokens after Redis came back'));
    };
    this.link = new RedisLink(client, ownsClient, { pool: config.pool, redisDown: config.redisDown, log: this.log, clock, onUp, onDown: (e) => this.emit('redis:down', e) });
    this.cmd = new PoolCommands(this.link, this.keys, config);
    this.topology = new Topology(this.cmd, this.keys, (id) => this.admin.holds(id));
    this.admin = new KeyAdmin(this.cmd, this.topology, this.log, config.pool, config.upstreams.allow);
    const { cmd, link, topology, admin, local, log } = this;
    this.upkeep = new Upkeep({ name: config.pool, config, cmd, link, topology, admin, local, log, clock, onTransition: (event) => this.emit('transition', event) });
    // same link, same Redis-down policy (events, logs, typed errors) as acquire
    const tokenLog = logger.child({ component: 'keypool-tokens', pool: config.pool });
    this.tokens = new GatewayTokens({ keys: this.keys, config, log: tokenLog, run: link.script, redisAvailable: () => link.available, now: () => clock.now(), onLost: () => this.tokensLost() });
    this.tokens.declare(config.tokens);
  }

  /** Redis lost the tokens: it lost the keys too (a flush under a live connection gives no reconnect to notice it by). */
  private tokensLost(): void {
    this.emit('tokens:lost');
    void this.admin.registerMissing().catch((e) => this.log.warn({ err: (e as Error).message }, 'could not re-register keys after Redis lost the pool'));
  }

  /**
   * Validate the config, connect, register this process's keys (their settings, never their
   * secrets) and load the pool's topology. Keys already in the pool keep their state. With
   * `partitions` over 1 the pool returned is a PartitionedPool (partitioned-pool.ts): the same
   * methods, over every partition.
   */
  static async connect(options: KeyPoolOptions): Promise<KeyPool> {
    const config = parsePoolConfig(options.config);
    if (config.partitions > 1 && options.partitionTag === undefined) {
      // loaded here, not imported above: it extends this class
      const { PartitionedPool } = await import('./partitioned-pool.js');
      return PartitionedPool.connect(options);
    }
    const logger = KeyPool.loggerOf(options);
    const { client, owns } = await openClient(options.redis, config);
    const pool = new KeyPool(client, owns, config, logger, options.clock ?? systemClock, options.partitionTag);
    await KeyPool.start(pool, config.keys, options.partitionTag === undefined ? 1 : 0);
    return pool;
  }

  /** The caller's logger, or pino to stderr with secrets redacted. */
  protected static loggerOf(options: KeyPoolOptions): Logger {
    const redact = { paths: ['secret', '*.secret', 'apiKey', '*.apiKey', '*.authorization', '*.headers.authorization'], censor: '[redacted]' };
    return options.logger ?? pino({ name: 'keypool', level: process.env.KEYPOOL_LOG_LEVEL ?? 'info', redact }, pino.destination(2));
  }

  /**
   * Hold `keys` (this process's config keys in this pool), check the pool's partition count
   * (`partitions`, 0: the caller did), register the keys and read the topology, under the
   * Redis-down policy.
   */
  protected static async start(pool: KeyPool, keys: PoolConfig['keys'], partitions: number): Promise<void> {
    const { client, config } = { client: pool.link.client, config: pool.config };
    pool.admin.holdConfigKeys(keys);
    try {
      // a Redis that cannot answer now is the policy's business below, not a refusal
      if (partitions > 0) await checkPartitionCount(client, config.pool, partitions).catch((e: unknown) => { if (e instanceof ConfigError) throw e; });
      await pool.admin.registerOwn();
      await pool.topology.refresh();
      await pool.tokens.checkStore();
    } catch (e) {
      if (!isRedisUnavailable(e) || config.redisDown.policy === 'fail-closed') {
        pool.link.abandon();
        throw e;
      }
      // policy local: start on the keys this process holds
      pool.topology.set(0, keys.map(recordOfSpec));
    }
  }

  // ---- acquire / release ------------------------------------------------------------------

  /**
   * Lease a key for one call to `model`. Returns a Lease, or `{ ok: false, reason, retryAfterMs }`
   * when no key can serve now; with `maxWaitMs` it waits (abortably) for the time the pool names.
   * Throws UnknownModelError, RequestTooLargeError, or RedisUnavailableError (policy fail-closed).
   */
  acquire(req: AcquireRequest & { admit?: undefined }): Promise<AcquireResult>;
  /** With a gateway token to admit (`admit`): its refusal is one more result. */
  acquire(req: AcquireRequest): Promise<AcquireResult | TokenRefused>;
  async acquire(req: AcquireRequest): Promise<AcquireResult | TokenRefused> {
    if (typeof req?.model !== 'string' || req.model === '') throw new InvalidArgumentError('acquire needs a model name');
    const est = req.estimatedTokens ?? 0;
    if (!Number.isFinite(est) || est < 0) throw new InvalidArgumentError(`estimatedTokens must be a number >= 0, got ${String(req.estimatedTokens)}`);
    const out = Math.min(est, req.estimatedOutputTokens ?? est);
    const estCost = this.priced(req.model) ? this.prices.costNanos(req.model, est - out, out) : 0;
    const inner = innerAcquires.get(req);
    const who = inner ? { ...whoOf(req), uncounted: inner.uncounted, ...(inner.weight !== undefined ? { weight: inner.weight } : {}) } : whoOf(req);
    let admit: Admit | undefined;
    if (req.admit) {
      const args = this.tokens.admitArgs(req.admit.token, req.admit.name ?? req.model, req.admit.estimatedCostUsd);
      if (!('hash' in args)) return { ok: false, reason: 'token_refused', token: args };
      admit = { req: req.admit, args };
    }
    const exclude = new Set(req.exclude ?? []);
    const deadline = this.clock.now() + (req.maxWaitMs ?? 0);
    req.signal?.throwIfAborted();
    let slept = 0;
    const done = <R extends AcquireResult | TokenRefused>(r: R, tenant = who.tenant): R => {
      if (inner) inner.sleptMs = slept;
      else if (this.listenerCount('admission') > 0) {
        this.emit('admission', { priority: who.priority, tenant, result: !r.ok ? 'refused' : slept > 0 ? 'waited' : 'admitted', waitMs: slept });
      }
      return r;
    };
    for (let busy = 0; ; ) {
      const r = await this.tryAcquire(req.model, Math.ceil(est), estCost, exclude, Math.max(0, deadline - this.clock.now()), slept > 0 ? { ...who, waitedMs: Math.round(slept) } : who, admit);
      if (r.ok) {
        if (req.route !== undefined) r.route = req.route;
        const startIn = this.startsIn.get(r);
        if (startIn !== undefined) {
          this.startsIn.delete(r);
          const t0 = this.clock.now();
          await this.untilStart(r, startIn, req.signal);
          slept += Math.max(1, this.clock.now() - t0);
        }
        return done(r, r.tenant ?? who.tenant);
      }
      if (r.reason === 'token_refused') return done(r);
      if (r.reason === 'busy' && busy++ < 50) continue;
      const res: Exhausted = r.reason === 'busy' ? { ok: false, reason: 'rate_limited', retryAfterMs: 1 } : r;
      const wait = res.retryAfterMs;
      if (wait === null || this.clock.now() + wait > deadline) return done(res);
      // a little jitter so a crowd of waiters does not arrive in the same millisecond
      const t0 = this.clock.now();
      try {
        await this.clock.sleep(wait + Math.random() * Math.min(5, wait / 10 + 1), req.signal);
        slept += Math.max(1, this.clock.now() - t0);
      } catch (e) {
        throw req.signal?.aborted ? req.signal.reason : e;
      }
      busy = 0;
    }
  }

  /**
   * Sleep until a reserved lease's start. A caller that gives up meanwhile (its signal aborts)
   * hands the lease back unused, which frees its place for the next caller (and gives its gateway
   * token's request back), then sees the abort.
   */
  private async untilStart(lease: Lease, ms: number, signal: AbortLike | undefined): Promise<void> {
    try {
      await this.clock.sleep(ms, signal);
    } catch (e) {
      await lease.release({ error: 'unused' }, this.refundOf(lease.admission)).catch((err: unknown) => this.log.warn({ keyId: lease.keyId, err: (err as Error).message }, 'could not give back a reservation'));
      throw signal?.aborted ? signal.reason : e;
    }
  }

  /** Release options that give an admission's request and money back (nothing went upstream). */
  private refundOf(admission: Admission | undefined): { settle?: TokenSettlement } {
    return admission ? { settle: { admission, costUsd: 0, refundRequest: true } } : {};
  }

  private async tryAcquire(model: string, est: number, estCost: number, exclude: Set<string>, maxWaitMs: number, who: Who, admit?: Admit): Promise<Lease | Exhausted | Busy | TokenRefused> {
    const entry = await this.topology.serving(model, est);
    if (this.link.stayLocal()) return this.acquireLocal(model, est, estCost, exclude, who, admit);
    // keys this process holds no secret for (another process's rollout) are not ours to lease
    let excluded = exclude.size ? [...exclude].join(',') : '';
    if (entry.foreign) excluded = excluded ? `${excluded},${entry.foreign}` : entry.foreign;
    let reply: AcquireReply;
    try {
      reply = await this.cmd.acquire(entry.scriptKeys, est, estCost, excluded, maxWaitMs, who, admit?.args);
    } catch (e) {
      if (isRedisUnavailable(e) && this.config.redisDown.policy === 'local') return this.acquireLocal(model, est, estCost, exclude, who, admit);
      throw e;
    }
    if (!reply.ok && reply.reason === 'token_refused') {
      const token = await this.tokens.admitted(admit!.args.hash, reply.token);
      return { ok: false, reason: 'token_refused', token: token as TokenRefused['token'] };
    }
    this.topology.noteVersion(reply.version);
    if (!reply.ok) {
      if (reply.reason === 'too_large') throw refusalError({ reason: 'too_large', model, tokens: est, maxTokens: entry.maxTokens });
      return { ok: false, reason: reply.reason, retryAfterMs: reply.retryAfterMs };
    }
    const { keyId, leaseId, at } = reply;
    const admission = reply.admitted ? ((await this.tokens.admitted(admit!.args.hash, reply.admitted)) as Admission) : undefined;
    const rec = this.topology.key(keyId) ?? (await this.topology.fetch(keyId));
    const held = this.admin.heldKey(keyId);
    if (held === undefined) {
      // A key added since this process last read the topology, with a secret it does not hold:
      // hand the lease back unused (nothing of the key is spent, nor of the token) and try the others.
      this.log.warn({ keyId, hint: rec.hint }, 'leased a key this process holds no secret for; skipping it');
      const settle = admission && this.tokens.settleArgs(admission.id, admission.reservation, 0, true);
      await this.releaseRaw(rec, leaseId, model, '', 'unused', -1, 0, 0, -1, undefined, settle ?? undefined).catch(() => undefined);
      exclude.add(keyId);
      return { ok: false, reason: 'busy', retryAfterMs: 0 };
    }
    // a reservation starts later: the lease's time is its start (acquire sleeps until then)
    const start = at + reply.startInMs;
    const lease = this.makeLease(rec, held, leaseId, model, est, estCost, start, start + this.config.leaseTimeoutMs, reply.probe, false, who);
    if (!who.tenant && admission) lease.tenant = admission.id;
    if (admission) lease.admission = admission;
    if (reply.startInMs > 0) this.startsIn.set(lease, reply.startInMs);
    return lease;
  }

  /**
   * The per-process fallback (Redis down, policy local). A token is admitted by this process too,
   * first (a refused token takes nothing of a key), and without another try of Redis.
   */
  private acquireLocal(model: string, est: number, estCost: number, exclude: Set<string>, who: Who, admit?: Admit): Lease | Exhausted | TokenRefused {
    const t = admit ? this.tokens.admitHere(admit.args, who.priority) : undefined;
    if (t && !t.ok) return { ok: false, reason: 'token_refused', token: t };
    const r = this.local.acquire(this.topology.heldFor(model), est, exclude);
    if (!r.ok) {
      if (t) this.tokens.giveBackHere(t);
      return r;
    }
    const now = this.clock.now();
    const id = `local-${now}-${Math.random().toString(36).slice(2)}`;
    const lease = this.makeLease(r.key, this.admin.heldKey(r.key.id)!, id, model, est, estCost, now, now + this.config.leaseTimeoutMs, false, true, { priority: who.priority, tenant: who.tenant || (t?.id ?? '') });
    if (t) lease.admission = t;
    return lease;
  }

  /** A lease of `rec` (Redis's settings: id, hint, name) sent where `held` says: this process's own spec, never Redis. */
  private makeLease(rec: KeyRecord, held: HeldKey, leaseId: string, model: string, est: number, estCost: number, acquiredAt: number, deadline: number, probe: boolean, local: boolean, who: Who): Lease {
    let released: Promise<ReleaseResult> | undefined;
    let beat: (() => void) | undefined;
    const lease = {
      ok: true as const,
      id: leaseId,
      keyId: rec.id,
      hint: rec.hint,
      ...(rec.name !== undefined ? { name: rec.name } : {}),
      provider: held.provider,
      baseURL: held.baseURL,
      model,
      estimatedTokens: est,
      estimatedCostUsd: estCost / NANOS_PER_USD,
      acquiredAt,
      deadline,
      probe,
      local,
      priority: who.priority,
      tenant: who.tenant,
      // once released, a second call is a no-op; a release that failed (Redis away) may be retried
      extend: (ms?: number) => this.extend(lease as Lease, ms ?? this.config.leaseTimeoutMs),
      keepAlive: () => {
        if (released) return () => undefined;
        return (beat ??= startHeartbeat(lease as Lease, Math.max(100, Math.floor(this.config.leaseTimeoutMs / 3)), this.log));
      },
      sent: (at?: number) => {
        if (lease.sentAt !== undefined) return;
        lease.sentAt = at ?? Date.now();
        if (!local && rec.rw > 0) this.cmd.sentLate(leaseId, acquiredAt, lease.sentAt);
      },
      sentAt: undefined as number | undefined,
      release: (outcome: Outcome, opts?: { settle?: TokenSettlement }) =>
        (released ??= (beat?.(), this.release(lease as Lease, outcome, opts)).catch((e: unknown) => {
          released = undefined;
          throw e;
        })),
    };
    // the secret is reachable by property access only: never serialised, never inspected
    Object.defineProperty(lease, 'secret', { value: held.secret, enumerable: false });
    return lease as Lease;
  }

  /**
   * Return a lease with what happened: frees its slot, reconciles tokens and cost with real
   * usage, records latency and outcome, moves the breaker, cools on 429, revokes on 401/403.
   * Prefer `lease.release(outcome)`, which makes a second call a no-op.
   */
  async release(lease: Lease, outcome: Outcome, opts: ReleaseOptions = {}): Promise<ReleaseResult> {
    const cls = classify(outcome);
    const latency = outcome.latencyMs ?? -1;
    if (!Number.isFinite(latency)) throw new InvalidArgumentError('latencyMs must be a finite number');
    const real = realTokens(outcome, cls);
    const realTotal = real ? real.input + real.output : -1;
    const costNanos = real ? this.prices.costNanos(lease.model, real.input, real.output) : -1;
    const coolMs = cls === 'rate_limited' ? coolingMs(outcome.headers, this.config.cooling, this.clock.now()) : -1;
    const rec = this.topology.seenKey(lease.keyId);
    // unknown usage: the release script keeps the estimate as the charge, so that is the cost
    const costUsd = real ? Math.max(0, costNanos) / NANOS_PER_USD : lease.estimatedCostUsd;
    const t = opts.settle;
    // a settlement Redis takes in the release's call, or null: one made while Redis was down, settled on its own
    const fused = t && !lease.local ? this.tokens.settleArgs(t.admission.id, t.admission.reservation, t.costUsd, t.refundRequest === true) : null;
    const alone = () => (t && !fused ? this.tokens.settle(t.admission.id, t.admission.reservation, t.costUsd ?? (cls === 'unused' ? 0 : costUsd), { refundRequest: t.refundRequest === true }) : undefined);
    if (lease.local) {
      this.local.release(rec, cls, lease.estimatedTokens, real ? realTotal : null, coolMs >= 0 ? coolMs : this.config.cooling.defaultMs);
      await alone();
      return { released: true, transition: cls === 'auth' ? 'revoked' : '', costUsd };
    }
    const limits = cls === 'ok' || cls === 'client_error' || cls === 'rate_limited' ? rateLimitHeaders(outcome.headers) : undefined;
    const r = await this.releaseRaw(rec, lease.id, lease.model, lease.route ?? '', cls, latency, realTotal, costNanos, coolMs, limits, fused ?? undefined, opts.background === true, lease.sentAt);
    await alone();
    return { ...r, costUsd };
  }

  private async extend(lease: Lease, ms: number): Promise<boolean> {
    if (!Number.isFinite(ms) || ms < 1) throw new InvalidArgumentError(`extend takes a positive number of ms, got ${String(ms)}`);
    if (lease.local) {
      lease.deadline = this.clock.now() + ms;
      return true;
    }
    const reply = await this.cmd.extend(lease.id, ms);
    if (!reply.ok) return false;
    lease.deadline = reply.deadline;
    return true;
  }

  private async releaseRaw(rec: KeyRecord, leaseId: string, model: string, route: string, cls: OutcomeClass, latency: number, tokens: number, cost: number, coolMs: number, limits?: RateLimitHeaders, settle?: SettleArgs, background = false, sentAt?: number): Promise<ReleaseResult> {
    const args = { leaseId, outcome: cls, latencyMs: latency, tokens, costNanos: cost, coolMs, model, route, ...(limits ? { limits } : {}), ...(settle ? { settle } : {}), ...(sentAt !== undefined ? { sentAt } : {}) };
    // the key's models changed under us: its candidate sets are another group's now
    const reply = await this.cmd.release(rec.g, args, () => void this.topology.refresh().catch(() => undefined), background);
    if (settle && 'settled' in reply) this.tokens.settled(settle.id, settle.reservation, reply.settled);
    // still moving after the retries: the script ran nothing, the settlement included. Settle it
    // alone when its cost is known; else its reservation expires and is charged its estimate.
    else if (settle && !reply.ok && reply.reason === 'moved') {
      const charge = settle.costNanos >= 0 ? settle.costNanos : cost;
      if (charge >= 0) await this.tokens.settle(settle.id, settle.reservation, charge / NANOS_PER_USD, { refundRequest: settle.refund }).catch(() => undefined);
    }
    if (!reply.ok) {
      if (reply.reason === 'unknown_lease') this.log.warn({ keyId: rec.id, hint: rec.hint, leaseId }, REFUSAL_WARNINGS.unknown_lease);
      return { released: false, transition: '', costUsd: Math.max(0, cost) / NANOS_PER_USD };
    }
    const { keyState, breaker, transition } = reply;
    if (transition) {
      this.log.info({ keyId: rec.id, hint: rec.hint, transition, outcome: cls }, `key ${transition}`);
      this.emit('transition', { keyId: rec.id, hint: rec.hint, transition });
      if (transition === 'retired') void this.topology.refresh().catch(() => undefined);
    }
    return { released: true, keyState, breaker, transition, costUsd: Math.max(0, cost) / NANOS_PER_USD, releasedAt: reply.at };
  }

  /** The price of a model from this pool's table (defaults merged with `prices`), or null. */
  priceOf(model: string): ModelPrice | null {
    return this.prices.priceOf(model);
  }

  /** What `input` prompt and `output` completion tokens of `model` cost in USD, as the pool charges them (0 if unpriced). */
  costUsd(model: string, input: number, output: number): number {
    return this.prices.costUsd(model, input, output);
  }

  private priced(model: string): boolean {
    if (this.prices.priceOf(model)) return true;
    if (!this.unpricedWarned.has(model)) {
      this.unpricedWarned.add(model);
      this.log.warn({ model }, `no price for model "${model}": its spend counts as 0 against budgets; add it under prices in the config`);
    }
    return false;
  }

  // ---- keys (key-admin.ts) ----------------------------------------------------------------

  /** Add a key (or update its settings if it is already in the pool). Returns its id and hint. */
  addKey(spec: KeySpecInput): Promise<{ id: string; hint: string }> {
    return this.changed(this.admin.addKey(spec));
  }

  /** An admin write: once done, the shared status is forgotten, so the operator sees the change at the next read. */
  private async changed<T>(write: Promise<T>): Promise<T> {
    try {
      return await write;
    } finally {
      await this.upkeep.forgetStatus();
    }
  }

  /**
   * Change a key's settings (limits, models, budget, weight...) while the pool runs; returns each
   * setting changed with its old and new value. Throws InvalidArgumentError for secret, baseURL
   * or provider: those come only from where the secret comes from (remove the key and add it there).
   */
  updateKey(keyId: string, patch: Partial<KeySettings>): Promise<KeyChange[]> {
    return this.changed(this.admin.updateKey(keyId, patch));
  }

  /** No new leases until enabled; leases in flight finish. */
  disableKey(keyId: string) {
    return this.changed(this.admin.setState(keyId, 'disable'));
  }
  /** Active again; also lifts a revocation (401/403) and a drain. */
  enableKey(keyId: string) {
    return this.changed(this.admin.setState(keyId, 'enable'));
  }
  /** No new leases; leases in flight finish; the key stays in the pool. */
  drainKey(keyId: string) {
    return this.changed(this.admin.setState(keyId, 'drain'));
  }
  /** Drain, then remove once the last lease in flight is released. */
  retireKey(keyId: string) {
    return this.changed(this.admin.setState(keyId, 'retire'));
  }
  /** Remove at once; releases of its leases in flight are then ignored. */
  removeKey(keyId: string) {
    return this.changed(this.admin.setState(keyId, 'remove'));
  }
  /** Close the breaker, end cooling, forget the health history and the limits learnt from the provider. */
  resetKey(keyId: string) {
    return this.changed(this.admin.setState(keyId, 'reset'));
  }
  /** Start the budget period again from zero spend. */
  resetBudget(keyId: string) {
    return this.changed(this.admin.setState(keyId, 'reset_budget'));
  }

  /** Ids of the keys this process holds the secret of (config, secret sources, addKey). */
  heldKeyIds(): string[] {
    return this.admin.heldKeyIds();
  }

  /** Whether `keyId` is one of this process's config keys (a secret source never drops those). */
  isConfigKey(keyId: string): boolean {
    return this.admin.isConfigKey(keyId);
  }

  // ---- keys from a secret source, probes, upkeep, status (upkeep.ts) ----------------------

  /**
   * Make the keys this process holds from secret sources exactly `specs` (config keys are not
   * touched). New keys are registered and used at once; keys whose settings changed are updated;
   * keys that are no longer given are dropped by this process only: it stops leasing them (leases
   * in flight keep their secret and finish), while the other processes, which may not have loaded
   * the new set yet, go on using them. Retiring them from the pool is the coordinator's job (see
   * the secret refresh in @keypool/worker), once every process has the new set. Keys whose id
   * (their secret) did not change keep all their state.
   */
  setSourceKeys(specs: readonly KeySpecInput[]): Promise<{ added: string[]; changed: string[]; dropped: string[] }> {
    return this.upkeep.setSourceKeys(specs);
  }

  /**
   * Keys that want a health probe: open or half-open breaker, revoked, or degraded; never healthy,
   * disabled or draining ones. Only keys this process holds the secret of (it makes the call).
   * For the scheduler, never on the request path: read from the shared status (see status()).
   */
  probeTargets(): Promise<ProbeTarget[]> {
    return this.upkeep.probeTargets();
  }

  /**
   * Record a health probe's result (see lua/probe-3.lua): a success closes the breaker and clears
   * a revocation; a failure reopens an open breaker for longer; 401/403 revokes.
   */
  reportProbe(keyId: string, outcome: Pick<Outcome, 'status' | 'error' | 'latencyMs' | 'headers'>): Promise<{ state: string; breaker: string; transition: string }> {
    return this.upkeep.reportProbe(keyId, outcome);
  }

  /**
   * Upkeep of the whole pool (see lua/housekeepLeases.lua and housekeepKeys.lua): expired leases
   * back, next budget periods started, stale health windows forgotten, in calls of a few leases or
   * keys each. Idempotent; the scheduler runs it periodically.
   */
  housekeep(): Promise<{ leasesReaped: number; periodsStarted: { keyId: string; previousSpendUsd: number }[]; healthWindowsCleared: number }> {
    return this.upkeep.housekeep();
  }

  /**
   * Every key of the pool, fleet-wide from Redis: state, limits and what is left, spend, health.
   * Never a secret. The fleet shares one such status per `status.snapshotMs` (computed by one
   * process in small steps, stored in Redis); `snapshot` says when it was read. `fresh`: read it now.
   */
  status(opts: { fresh?: boolean } = {}): Promise<PoolStatus> {
    return this.upkeep.status(opts);
  }

  /**
   * The charts' figures: requests, refusals, upstream 429s and waits per class, one point per
   * second over the last 15 minutes, and the busiest keys per ten seconds, fleet-wide, from the
   * counters the scripts keep (shared with the status snapshot: the same read, the same age).
   * `sinceSec` (Unix s): only the points from then on. null: none could be read (Redis down).
   */
  series(opts: { sinceSec?: number; fresh?: boolean } = {}): Promise<PoolSeries | null> {
    return this.upkeep.series(opts);
  }

  /**
   * What a readiness probe needs, O(1) whatever the pool size: whether Redis answers (a PING;
   * `redis` as in status) and how many keys this process holds the secret of.
   */
  readiness(): Promise<{ redis: PoolStatus['redis']; heldKeys: number }> {
    return this.upkeep.readiness();
  }

  /**
   * The scheduler's jobs as the workers last recorded them (fleet-wide, from Redis): schedule,
   * next and last run, run counts. Empty when no `keypool worker` runs for this pool.
   */
  scheduleStatus(): Promise<ScheduledJobStatus[]> {
    return this.upkeep.scheduleStatus();
  }

  // ---- the link and the topology ----------------------------------------------------------

  /** True while Redis answers (the last call succeeded). */
  get redisAvailable(): boolean {
    return this.link.available;
  }

  /** Whether this process holds a key that serves `model` (as of the last topology it read). */
  servesModel(model: string): boolean {
    return this.topology.servesModel(model);
  }

  /** The keys of the pool as this process last read them (settings only, never a secret). */
  knownKeys(): { id: string; hint: string; name?: string; provider: string; models: string[] }[] {
    return this.topology.records().map((r) => ({ id: r.id, hint: r.hint, ...(r.name !== undefined ? { name: r.name } : {}), provider: r.provider, models: r.models }));
  }

  /** Reload every key's settings from Redis (on start and when another process changed them). */
  refreshTopology(): Promise<void> {
    return this.topology.refresh();
  }

  /** Stop: closes the Redis connection if the pool opened it. Leases in flight are not released. */
  async close(): Promise<void> {
    this.removeAllListeners();
    await this.link.close();
  }
}
