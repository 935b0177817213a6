import type { Cluster, Redis } from 'ioredis';
import type { Logger } from 'pino';
import { systemClock, type Clock } from './clock.js';
import { parsePoolConfig, type KeySpecInput, type PoolConfig } from './config.js';
import { ConfigError, InvalidArgumentError, UnknownModelError } from './errors.js';
import { keyIdOf } from './fingerprint.js';
import type { KeyChange } from './key-admin.js';
import type { AcquireRequest, AcquireResult, Exhausted, Lease, ReleaseOptions, ReleaseResult, TokenRefused } from './lease.js';
import type { Outcome } from './outcome.js';
import { checkPartitionCount, partitionOf, partitionTag } from './partitions.js';
import { KeyPool, innerAcquires, type KeyPoolOptions } from './pool.js';
import { PoolKeys } from './pool-keys.js';
import { groupOf, type KeySettings } from './records.js';
import { openClient } from './redis-link.js';
import type { KeyStatus, PoolStatus, SpendLine } from './status.js';
import { PRIORITY_CLASSES } from './lease.js';
import { CHART_KEYS, type PoolSeries, type PoolTraffic, type TrafficWindow } from './series.js';
import type { ProbeTarget } from './upkeep.js';

/** How often a process reads each partition's free capacity (in the background of acquire). */
const FREE_REFRESH_MS = 250;

/** What this process believes of a partition for one model: candidate keys, and when an exhausted reply says it has none. */
interface Free {
  keys: number;
  emptyUntil: number;
}

/** One partition as status shows it. */
export interface PartitionStatus {
  index: number;
  /** The partition's hash tag: its Redis keys are `kp:{<tag>}:...`. */
  tag: string;
  keys: number;
  leasesInFlight: number | null;
}

/** What a partitioned pool asks of each of its partitions (partition 0's are its own KeyPool methods). */
type Part = Pick<
  KeyPool,
  | 'acquire' | 'release' | 'addKey' | 'updateKey' | 'disableKey' | 'enableKey' | 'drainKey' | 'retireKey' | 'removeKey' | 'resetKey' | 'resetBudget'
  | 'heldKeyIds' | 'isConfigKey' | 'setSourceKeys' | 'probeTargets' | 'reportProbe' | 'housekeep' | 'status' | 'readiness' | 'servesModel' | 'knownKeys'
  | 'refreshTopology' | 'keys' | 'series'
> & { readonly redisAvailable: boolean };

/**
 * A pool split into `partitions` (config) partitions, each under its own hash tag (partitions.ts:
 * `{pool}` for partition 0, `{pool~p-i}` for the others, spread round the Cluster's slots), so the
 * pool's lease rate grows with the shards that hold it. It is a KeyPool, partition 0's (its name,
 * keys, tokens, scheduler and queues are partition 0's), over KeyPools of the other partitions,
 * with every method acting on the pool as a whole: `KeyPool.connect` returns one when `partitions`
 * is over 1, so the gateway, the worker and the pooled client take it as they are. A key lives in
 * the partition its id hashes to; every lease, release, admin action and probe of a key is one call
 * in that partition, so a key's limits, budget and breaker stay as exact as in a pool of one partition.
 *
 * Acquire picks a partition the way a partition's acquire picks a key: `candidates` partitions that
 * serve the model, sampled at random, one of them chosen with probability proportional to its
 * candidate keys (what each partition advertises: the size of its candidate sets, read every
 * 250 ms in the background, and "nothing before T" learnt from an exhausted reply); one script call
 * on one shard in the common case, and the next partition only when that one had nothing (at most
 * one call per partition).
 *
 * Gateway tokens live in partition 0 and nowhere else (exact fleet-wide admission): a partitioned
 * pool admits a token in its own call there before leasing, and settles it there (with the release
 * of a partition 0 key, in the same call; after the release otherwise): one more round trip, only
 * for requests with a gateway token. Spend per model and per route is counted in each partition and
 * summed by status().
 */
export class PartitionedPool extends KeyPool {
  /** The partitions, by index: partition 0 is this pool's own KeyPool methods. */
  private parts: Part[] = [];
  /** The KeyPools of partitions 1..N-1. */
  private others: KeyPool[] = [];
  private readonly clientOf: Redis | Cluster;
  private readonly clockOf: Clock;
  private free: Map<string, Free>[] = [];
  private freeReadAt = 0;
  private freeReading: Promise<void> | undefined;

  private constructor(client: Redis | Cluster, owns: boolean, config: PoolConfig, logger: Logger, clock: Clock) {
    super(client, owns, config, logger, clock);
    this.clientOf = client;
    this.clockOf = clock;
  }

  /** Partition 0 as a Part: this pool's own KeyPool methods. */
  private zero(): Part {
    const self = this;
    return {
      acquire: ((r: AcquireRequest) => super.acquire(r)) as KeyPool['acquire'],
      release: (l, o, opts) => super.release(l, o, opts),
      addKey: (spec) => super.addKey(spec),
      updateKey: (id, patch) => super.updateKey(id, patch),
      disableKey: (id) => super.disableKey(id),
      enableKey: (id) => super.enableKey(id),
      drainKey: (id) => super.drainKey(id),
      retireKey: (id) => super.retireKey(id),
      removeKey: (id) => super.removeKey(id),
      resetKey: (id) => super.resetKey(id),
      resetBudget: (id) => super.resetBudget(id),
      heldKeyIds: () => super.heldKeyIds(),
      isConfigKey: (id) => super.isConfigKey(id),
      setSourceKeys: (specs) => super.setSourceKeys(specs),
      probeTargets: () => super.probeTargets(),
      reportProbe: (id, o) => super.reportProbe(id, o),
      housekeep: () => super.housekeep(),
      status: (opts) => super.status(opts),
      series: (opts) => super.series(opts),
      readiness: () => super.readiness(),
      servesModel: (m) => super.servesModel(m),
      knownKeys: () => super.knownKeys(),
      refreshTopology: () => super.refreshTopology(),
      keys: this.keys,
      get redisAvailable() {
        return self.partitionZeroAvailable();
      },
    };
  }

  private partitionZeroAvailable(): boolean {
    return super.redisAvailable;
  }

  /**
   * Validate the config, connect, refuse a partition count other than the pool's own, and connect
   * each partition with the config keys whose ids hash to it (the gateway tokens go to partition 0).
   * `KeyPool.connect` calls this when `partitions` is over 1.
   */
  static override async connect(options: KeyPoolOptions): Promise<PartitionedPool> {
    const config = parsePoolConfig(options.config);
    const n = config.partitions;
    const logger = KeyPool.loggerOf(options);
    const clock = options.clock ?? systemClock;
    const { client, owns } = await openClient(options.redis, config);
    const input = options.config;
    const specs = input.keys ?? [];
    const ids = config.keys.map((k) => keyIdOf(k.secret, k.baseURL));
    const others: KeyPool[] = [];
    let pool: PartitionedPool | undefined;
    try {
      // a Redis that cannot answer now is the policy's business below, not a refusal
      await checkPartitionCount(client, config.pool, n).catch((e: unknown) => {
        if (e instanceof ConfigError) throw e;
      });
      // partition 0's link owns the client when the pool opened it: it reconnects a client the
      // library ended, and closes it last
      pool = new PartitionedPool(client, owns, config, logger, clock);
      await KeyPool.start(pool, config.keys.filter((_, i) => partitionOf(ids[i]!, n) === 0), 0);
      for (let p = 1; p < n; p++) {
        const keys = specs.filter((_, i) => partitionOf(ids[i]!, n) === p);
        const partConfig = { ...input, partitions: 1, keys, tokens: [] };
        const tag = partitionTag(config.pool, p, n);
        others.push(await KeyPool.connect({ redis: client, config: partConfig, logger: logger.child({ partition: p }), clock, partitionTag: tag }));
      }
    } catch (e) {
      await Promise.all(others.map((p) => p.close()));
      await pool?.closeOwn();
      if (owns && !pool) client.disconnect();
      throw e;
    }
    pool.attach(others);
    return pool;
  }

  private attach(others: KeyPool[]): void {
    this.others = others;
    this.parts = [this.zero(), ...others];
    this.free = this.parts.map(() => new Map());
    for (const p of others) p.on('transition', (e) => this.emit('transition', e));
  }

  private closeOwn(): Promise<void> {
    return super.close();
  }

  /** The partition that holds `keyId`. */
  private partOf(keyId: string): Part {
    return this.parts[partitionOf(keyId, this.parts.length)]!;
  }

  /** The Redis key names of partition `p`. */
  keysOf(p: number): PoolKeys {
    return this.parts[p]!.keys;
  }

  // ---- acquire / release ------------------------------------------------------------------

  /**
   * Lease a key for one call to `model`, from one of `candidates` partitions sampled, chosen with
   * probability proportional to the candidate keys it advertises; another partition only when that
   * one has nothing. With `maxWaitMs`,
   * the wait (or reservation) is taken in the partition that can serve first. With `admit`, the
   * gateway token is admitted first in partition 0 (its own call), and given back when no key could
   * be had. Same results and errors as KeyPool.acquire.
   */
  override acquire(req: AcquireRequest & { admit?: undefined }): Promise<AcquireResult>;
  override acquire(req: AcquireRequest): Promise<AcquireResult | TokenRefused>;
  override async acquire(req: AcquireRequest): Promise<AcquireResult | TokenRefused> {
    if (typeof req?.model !== 'string' || req.model === '') throw new InvalidArgumentError('acquire needs a model name');
    const sleep = { ms: 0 };
    const r = await this.acquireParts(req, sleep);
    // one 'admission' event per request (the partitions' own tries emit none)
    if (this.listenerCount('admission') > 0) {
      const tenant = r.ok ? r.tenant : (req.tenant ?? (r.reason === 'token_refused' ? (r.token.id ?? '') : ''));
      this.emit('admission', { priority: req.priority ?? 'normal', tenant, result: !r.ok ? 'refused' : sleep.ms > 0 ? 'waited' : 'admitted', waitMs: sleep.ms });
    }
    return r;
  }

  /** `sleep.ms`: what the partition that served slept (reservation, retries). */
  private async acquireParts(req: AcquireRequest, sleep: { ms: number }): Promise<AcquireResult | TokenRefused> {
    const order = await this.order(req.model);
    let admission: Lease['admission'];
    if (req.admit) {
      const a = await this.tokens.admit(req.admit.token, req.admit.name ?? req.model, req.admit.estimatedCostUsd);
      if (!a.ok) return { ok: false, reason: 'token_refused', token: a };
      admission = a;
    }
    const wait = req.maxWaitMs ?? 0;
    let best: { p: number; res: Exhausted } | undefined;
    try {
      // critical is a permission of the token: from the settings the admission brought back, else read them
      const allowed = async (a: NonNullable<typeof admission>) => a.allowCritical ?? (await this.tokens.get(a.id))?.allowCritical ?? false;
      if (admission && req.priority === 'critical' && !(await allowed(admission))) {
        await this.tokens.settle(admission.id, admission.reservation, 0, { refundRequest: true });
        return { ok: false, reason: 'token_refused', token: { ok: false, reason: 'priority_not_allowed', retryAfterMs: null, id: admission.id } };
      }
      // the tenant defaults to the admitted token here too (the partitions see no token)
      const tenant = req.tenant ?? admission?.id;
      const base = { ...req, admit: undefined, maxWaitMs: 0, ...(tenant !== undefined ? { tenant } : {}) };
      // the token's weight in its class's fair shares (the partitions see no token)
      const weightOf = admission?.weight !== undefined ? { weight: admission.weight } : {};
      for (const [i, p] of order.entries()) {
        // one refusal counted per request: the last partition's when the caller does not wait, else the waited one's
        const inner = { ...base };
        innerAcquires.set(inner, { uncounted: wait > 0 || i < order.length - 1, ...weightOf });
        let r: AcquireResult;
        try {
          r = await this.parts[p]!.acquire(inner);
        } catch (e) {
          // the partition's last key of the model went away since this process read its topology
          if (e instanceof UnknownModelError) continue;
          throw e;
        }
        if (r.ok) return this.granted(p, r, admission);
        this.exhausted(p, req.model, r);
        if (!best || earlier(r, best.res)) best = { p, res: r };
      }
      if (!best) throw new UnknownModelError(req.model, []);
      const res = best.res;
      if (wait > 0 && res.retryAfterMs !== null && res.retryAfterMs <= wait) {
        const inner = { ...base, maxWaitMs: wait };
        const note = { uncounted: false, sleptMs: 0, ...weightOf };
        innerAcquires.set(inner, note);
        const r = await this.parts[best!.p]!.acquire(inner);
        sleep.ms = note.sleptMs;
        if (r.ok) return this.granted(best!.p, r, admission);
        this.exhausted(best!.p, req.model, r);
        best = { p: best!.p, res: r };
      }
    } catch (e) {
      if (admission) await this.tokens.settle(admission.id, admission.reservation, 0, { refundRequest: true }).catch(() => undefined);
      throw e;
    }
    if (admission) await this.tokens.settle(admission.id, admission.reservation, 0, { refundRequest: true });
    return best!.res;
  }

  /** The partitions to try for `model`, in order: the freest of `candidates` sampled, then the others, those known empty last. */
  private async order(model: string): Promise<number[]> {
    if (this.clockOf.now() - this.freeReadAt >= FREE_REFRESH_MS) void this.readFree();
    let serving = this.serving(model);
    if (serving.length === 0) {
      await Promise.all(this.parts.map((p) => p.refreshTopology().catch(() => undefined)));
      serving = this.serving(model);
      // no key of the model held here: the partitions that know one answer as a KeyPool would
      if (serving.length === 0) serving = this.parts.flatMap((p, i) => (p.knownKeys().some((k) => k.models.includes(model)) ? [i] : []));
      if (serving.length === 0) throw new UnknownModelError(model, [...new Set(this.parts.flatMap((p) => p.knownKeys().flatMap((k) => k.models)))].sort());
    }
    const now = this.clockOf.now();
    const score = (p: number) => {
      const f = this.free[p]!.get(model);
      return f === undefined ? 1 : f.emptyUntil > now ? -1 : f.keys;
    };
    // power of k choices: a random sample, the freest first
    const pool = [...serving];
    for (let i = pool.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [pool[i], pool[j]] = [pool[j]!, pool[i]!];
    }
    const k = Math.min(this.config.candidates, pool.length);
    const sampled = pool.slice(0, k).sort((a, b) => score(b) - score(a));
    // among the sampled, the first with probability proportional to its candidate keys (as acquire.lua
    // chooses among keys): traffic follows capacity, and a partition with fewer keys still gets its share
    const total = sampled.reduce((s, p) => s + Math.max(0, score(p)), 0);
    if (total > 0) {
      let r = Math.random() * total;
      const i = sampled.findIndex((p) => (r -= Math.max(0, score(p))) < 0);
      if (i > 0) sampled.unshift(...sampled.splice(i, 1));
    }
    const rest = pool.slice(k).sort((a, b) => score(b) - score(a));
    const order = [...sampled, ...rest];
    const open = order.filter((p) => score(p) >= 0);
    // every partition known empty: ask the one whose wait ends first, once
    if (open.length === 0) return [order.reduce((a, b) => (this.free[a]!.get(model)!.emptyUntil <= this.free[b]!.get(model)!.emptyUntil ? a : b))];
    return open;
  }

  /** Partitions holding a key that serves `model` and whose secret this process holds (as of their last topology read). */
  private serving(model: string): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.parts.length; i++) if (this.parts[i]!.servesModel(model)) out.push(i);
    return out;
  }

  private exhausted(p: number, model: string, r: Exhausted): void {
    const f = this.free[p]!.get(model) ?? { keys: 0, emptyUntil: 0 };
    f.emptyUntil = this.clockOf.now() + (r.retryAfterMs ?? FREE_REFRESH_MS);
    this.free[p]!.set(model, f);
  }

  /**
   * Each partition's free capacity per model: the candidate keys of the groups that serve it (one
   * SCARD per group and partition, in the background every 250 ms; a failed read keeps the last).
   */
  private readFree(): Promise<void> {
    this.freeReadAt = this.clockOf.now();
    this.freeReading ??= (async () => {
      try {
        await Promise.all(
          this.parts.map(async (part, p) => {
            const byGroup = new Map<string, string[]>();
            for (const k of part.knownKeys()) byGroup.set(groupOf(k.models), k.models);
            const counts = new Map<string, number>();
            for (const [g, models] of byGroup) {
              const n = await this.clientOf.scard(part.keys.avail(g));
              for (const m of models) counts.set(m, (counts.get(m) ?? 0) + n);
            }
            for (const [m, n] of counts) {
              const f = this.free[p]!.get(m);
              if (f) f.keys = n;
              else this.free[p]!.set(m, { keys: n, emptyUntil: 0 });
            }
          }),
        );
      } catch {
        // the next acquire reads again; the partitions' own calls report Redis trouble
      } finally {
        this.freeReading = undefined;
      }
    })();
    return this.freeReading;
  }

  /** A lease of partition `p`: with a gateway token, its release settles the token in partition 0 after the key's release. */
  private granted(p: number, lease: Lease, admission: Lease['admission']): Lease {
    const f = this.free[p]!.get(lease.model);
    if (f) f.emptyUntil = 0;
    if (admission) lease.admission = admission;
    // partition 0's lease goes back through release() below: the settlement rides in its call
    if (p === 0) return lease;
    const release = lease.release;
    let settled: Promise<ReleaseResult> | undefined;
    lease.release = (outcome: Outcome, opts?: ReleaseOptions) =>
      (settled ??= (async () => {
        const r = await release(outcome, opts?.background ? { background: true } : undefined);
        const t = opts?.settle;
        if (t) {
          const cls = outcome.error === 'unused' ? 0 : r.costUsd;
          await this.tokens.settle(t.admission.id, t.admission.reservation, t.costUsd ?? cls, { refundRequest: t.refundRequest === true });
        }
        return r;
      })().catch((e: unknown) => {
        settled = undefined;
        throw e;
      }));
    if (admission) lease.admission = admission;
    return lease;
  }

  /** Return a lease with what happened (prefer `lease.release`, which makes a second call a no-op). */
  override release(lease: Lease, outcome: Outcome, opts: ReleaseOptions = {}): Promise<ReleaseResult> {
    // partition 0's leases call this from their own release(): KeyPool's, with the settlement fused
    if (partitionOf(lease.keyId, this.parts.length) === 0) return super.release(lease, outcome, opts);
    return lease.release(outcome, opts);
  }

  // ---- keys: each action in the key's partition --------------------------------------------

  /** Add a key (or update its settings) in the partition its id hashes to. */
  override addKey(spec: KeySpecInput): Promise<{ id: string; hint: string }> {
    if (typeof spec?.secret !== 'string') throw new InvalidArgumentError('addKey needs a secret');
    return this.partOf(keyIdOf(spec.secret, spec.baseURL)).addKey(spec);
  }
  override updateKey(keyId: string, patch: Partial<KeySettings>): Promise<KeyChange[]> {
    return this.partOf(keyId).updateKey(keyId, patch);
  }
  override disableKey(keyId: string) {
    return this.partOf(keyId).disableKey(keyId);
  }
  override enableKey(keyId: string) {
    return this.partOf(keyId).enableKey(keyId);
  }
  override drainKey(keyId: string) {
    return this.partOf(keyId).drainKey(keyId);
  }
  override retireKey(keyId: string) {
    return this.partOf(keyId).retireKey(keyId);
  }
  override removeKey(keyId: string) {
    return this.partOf(keyId).removeKey(keyId);
  }
  override resetKey(keyId: string) {
    return this.partOf(keyId).resetKey(keyId);
  }
  override resetBudget(keyId: string) {
    return this.partOf(keyId).resetBudget(keyId);
  }
  override heldKeyIds(): string[] {
    return this.parts.flatMap((p) => p.heldKeyIds());
  }
  override isConfigKey(keyId: string): boolean {
    return this.partOf(keyId).isConfigKey(keyId);
  }

  /** KeyPool.setSourceKeys, each partition given the keys that hash to it. */
  override async setSourceKeys(specs: readonly KeySpecInput[]): Promise<{ added: string[]; changed: string[]; dropped: string[] }> {
    const n = this.parts.length;
    const out = { added: [] as string[], changed: [] as string[], dropped: [] as string[] };
    for (let p = 0; p < n; p++) {
      const mine = specs.filter((s) => partitionOf(keyIdOf(s.secret, s.baseURL), n) === p);
      const r = await this.parts[p]!.setSourceKeys(mine);
      out.added.push(...r.added);
      out.changed.push(...r.changed);
      out.dropped.push(...r.dropped);
    }
    return out;
  }

  // ---- upkeep and status: every partition, one after another -------------------------------

  override async probeTargets(): Promise<ProbeTarget[]> {
    const out: ProbeTarget[] = [];
    for (const p of this.parts) out.push(...(await p.probeTargets()));
    return out;
  }
  override reportProbe(keyId: string, outcome: Pick<Outcome, 'status' | 'error' | 'latencyMs' | 'headers'>) {
    return this.partOf(keyId).reportProbe(keyId, outcome);
  }

  override async housekeep(): Promise<Awaited<ReturnType<KeyPool['housekeep']>>> {
    const out: Awaited<ReturnType<KeyPool['housekeep']>> = { leasesReaped: 0, periodsStarted: [], healthWindowsCleared: 0 };
    for (const p of this.parts) {
      const r = await p.housekeep();
      out.leasesReaped += r.leasesReaped;
      out.periodsStarted.push(...r.periodsStarted);
      out.healthWindowsCleared += r.healthWindowsCleared;
    }
    return out;
  }

  /**
   * The pool's status summed over its partitions: every key, leases in flight and spend per model
   * and route added up, the version the sum of the partitions' (it moves when any moves), the
   * oldest snapshot's time; `partitions` says what each holds.
   */
  override async status(opts: { fresh?: boolean } = {}): Promise<PoolStatus & { partitions: PartitionStatus[] }> {
    const all = await Promise.all(this.parts.map((p) => p.status(opts)));
    return mergeStatus(this.name, all, this.parts.map((p) => p.keys));
  }

  /** The chart points of every partition, summed (each partition's snapshot is shared by the fleet). */
  override async series(opts: { sinceSec?: number; fresh?: boolean } = {}): Promise<PoolSeries | null> {
    return mergeSeries(await Promise.all(this.parts.map((p) => p.series(opts))));
  }

  override async readiness(): Promise<{ redis: PoolStatus['redis']; heldKeys: number }> {
    const all = await Promise.all(this.parts.map((p) => p.readiness()));
    return { redis: all.find((r) => !r.redis.ok)?.redis ?? all[0]!.redis, heldKeys: all.reduce((s, r) => s + r.heldKeys, 0) };
  }

  override get redisAvailable(): boolean {
    return this.parts.every((p) => p.redisAvailable);
  }
  override servesModel(model: string): boolean {
    return this.parts.some((p) => p.servesModel(model));
  }
  override knownKeys(): ReturnType<KeyPool['knownKeys']> {
    return this.parts.flatMap((p) => p.knownKeys());
  }
  override async refreshTopology(): Promise<void> {
    await Promise.all(this.parts.map((p) => p.refreshTopology()));
  }
  /** Stop every partition; closes the Redis connection if this pool opened it. */
  override async close(): Promise<void> {
    await Promise.all(this.others.map((p) => p.close()));
    await super.close();
  }
}

function earlier(a: Exhausted, b: Exhausted): boolean {
  if (a.retryAfterMs === null) return false;
  return b.retryAfterMs === null || a.retryAfterMs < b.retryAfterMs;
}

function addSpend(into: Record<string, SpendLine>, from: Record<string, SpendLine> | undefined): void {
  for (const [name, line] of Object.entries(from ?? {})) {
    const t = (into[name] ??= { usd: 0, requests: 0 });
    t.usd += line.usd;
    t.requests += line.requests;
  }
}

/** The statuses of a pool's partitions as one. */
export function mergeStatus(pool: string, all: PoolStatus[], keys: PoolKeys[]): PoolStatus & { partitions: PartitionStatus[] } {
  const first = all[0]!;
  const byModel: Record<string, SpendLine> = {};
  const byRoute: Record<string, SpendLine> = {};
  for (const s of all) {
    addSpend(byModel, s.spend?.byModel);
    addSpend(byRoute, s.spend?.byRoute);
  }
  const down = all.find((s) => !s.redis.ok);
  const snaps = all.map((s) => s.snapshot);
  const oldest = snaps.every((s) => s !== undefined) ? snaps.reduce((a, b) => (b!.ageMs > a!.ageMs ? b : a)) : undefined;
  const keyList: KeyStatus[] = all.flatMap((s) => s.keys).sort((a, b) => (a.name ?? a.id).localeCompare(b.name ?? b.id));
  return {
    pool,
    redis: down?.redis ?? first.redis,
    mode: all.find((s) => s.mode !== 'shared')?.mode ?? 'shared',
    version: all.reduce((s, x) => s + x.version, 0),
    leasesInFlight: all.some((s) => s.leasesInFlight === null) ? null : all.reduce((s, x) => s + x.leasesInFlight!, 0),
    ...(all.every((s) => s.spend) ? { spend: { byModel, byRoute } } : {}),
    ...(oldest ? { snapshot: oldest } : {}),
    keys: keyList,
    ...(mergeTraffic(all.map((s) => s.traffic)) ? { traffic: mergeTraffic(all.map((s) => s.traffic))! } : {}),
    partitions: all.map((s, index) => ({ index, tag: tagOf(keys[index]!), keys: s.keys.length, leasesInFlight: s.leasesInFlight })),
  };
}

function tagOf(k: PoolKeys): string {
  return /\{(.*)\}/.exec(k.cfg)?.[1] ?? '';
}

/** The sum of the partitions' traffic windows; a class's wait percentiles are the partitions' highest (an upper bound: the histograms stay in each partition). */
function mergeWindow(all: TrafficWindow[]): TrafficWindow {
  const first = all[0]!;
  const byClass = {} as TrafficWindow['byClass'];
  for (const c of PRIORITY_CLASSES) {
    const rows = all.map((w) => w.byClass[c]);
    const waited = rows.reduce((s, r) => s + r.waited, 0);
    const waitSum = rows.reduce((s, r) => s + (r.meanWaitMs ?? 0) * r.waited, 0);
    byClass[c] = {
      admitted: rows.reduce((s, r) => s + r.admitted, 0),
      waited,
      refused: rows.reduce((s, r) => s + r.refused, 0),
      waitP50Ms: maxOrNull(rows.map((r) => r.waitP50Ms)),
      waitP99Ms: maxOrNull(rows.map((r) => r.waitP99Ms)),
      meanWaitMs: waited > 0 ? Math.round(waitSum / waited) : null,
    };
  }
  const byTenant: TrafficWindow['byTenant'] = {};
  const sums: Record<string, number> = {};
  for (const w of all) {
    for (const [name, t] of Object.entries(w.byTenant)) {
      const into = (byTenant[name] ??= { admitted: 0, waited: 0, refused: 0, meanWaitMs: null });
      into.admitted += t.admitted;
      into.refused += t.refused;
      into.waited += t.waited;
      sums[name] = (sums[name] ?? 0) + (t.meanWaitMs ?? 0) * t.waited;
    }
  }
  for (const [name, t] of Object.entries(byTenant)) t.meanWaitMs = t.waited > 0 ? Math.round(sums[name]! / t.waited) : null;
  return {
    seconds: first.seconds,
    requests: all.reduce((s, w) => s + w.requests, 0),
    refused: all.reduce((s, w) => s + w.refused, 0),
    upstream429: all.reduce((s, w) => s + w.upstream429, 0),
    byClass,
    byTenant,
  };
}

function maxOrNull(xs: (number | null)[]): number | null {
  const known = xs.filter((x): x is number => x !== null);
  return known.length ? Math.max(...known) : null;
}

/** The partitions' traffic summed (undefined while any partition has none yet). */
export function mergeTraffic(all: (PoolTraffic | undefined)[]): PoolTraffic | undefined {
  if (all.some((t) => t === undefined)) return undefined;
  const ts = all as PoolTraffic[];
  return { last60s: mergeWindow(ts.map((t) => t.last60s)), last15m: mergeWindow(ts.map((t) => t.last15m)) };
}

/** Add `from`'s values into `into` where their seconds meet (both start at a Unix second, one point per step). */
function addAligned(into: number[], intoFrom: number, from: number[], fromFrom: number, step: number): void {
  const shift = Math.round((fromFrom - intoFrom) / step);
  for (let i = 0; i < from.length; i++) {
    const j = i + shift;
    if (j >= 0 && j < into.length) into[j]! += from[i]!;
  }
}

/** The partitions' chart points summed on the latest partition's seconds; the charted keys are the busiest of all partitions. */
export function mergeSeries(all: (PoolSeries | null)[]): PoolSeries | null {
  const known = all.filter((s): s is PoolSeries => s !== null);
  if (known.length === 0) return null;
  const base = known.reduce((a, b) => (b.from > a.from ? b : a));
  const zeros = () => new Array<number>(base.points).fill(0);
  const out: PoolSeries = {
    from: base.from,
    points: base.points,
    requests: zeros(),
    refused: zeros(),
    upstream429: zeros(),
    byClass: {} as PoolSeries['byClass'],
    keys: { ...base.keys, top: [] },
  };
  for (const c of PRIORITY_CLASSES) out.byClass[c] = { admitted: zeros(), waited: zeros(), refused: zeros(), waitP99Ms: new Array<number | null>(base.points).fill(null) };
  for (const s of known) {
    addAligned(out.requests, out.from, s.requests, s.from, 1);
    addAligned(out.refused, out.from, s.refused, s.from, 1);
    addAligned(out.upstream429, out.from, s.upstream429, s.from, 1);
    for (const c of PRIORITY_CLASSES) {
      const into = out.byClass[c];
      const from = s.byClass[c];
      addAligned(into.admitted, out.from, from.admitted, s.from, 1);
      addAligned(into.waited, out.from, from.waited, s.from, 1);
      addAligned(into.refused, out.from, from.refused, s.from, 1);
      const shift = s.from - out.from;
      from.waitP99Ms.forEach((v, i) => {
        const j = i + shift;
        if (v !== null && j >= 0 && j < out.points) into.waitP99Ms[j] = Math.max(into.waitP99Ms[j] ?? 0, v);
      });
    }
    for (const k of s.keys.top) {
      const requests = new Array<number>(base.keys.points).fill(0);
      const upstream429 = new Array<number>(base.keys.points).fill(0);
      addAligned(requests, base.keys.from, k.requests, s.keys.from, base.keys.stepSeconds);
      addAligned(upstream429, base.keys.from, k.upstream429, s.keys.from, base.keys.stepSeconds);
      out.keys.top.push({ id: k.id, label: k.label, requests, upstream429 });
    }
  }
  const total = (k: { requests: number[] }) => k.requests.reduce((a, b) => a + b, 0);
  out.keys.top = out.keys.top.sort((a, b) => total(b) - total(a)).slice(0, CHART_KEYS);
  return out;
}
