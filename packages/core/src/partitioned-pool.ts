import { EventEmitter } from 'node:events';
import type { Cluster, Redis } from 'ioredis';
import { systemClock, type Clock } from './clock.js';
import { parsePoolConfig, type KeySpecInput, type PoolConfig } from './config.js';
import { InvalidArgumentError, UnknownModelError } from './errors.js';
import { keyIdOf } from './fingerprint.js';
import type { KeyChange } from './key-admin.js';
import type { AcquireRequest, AcquireResult, Exhausted, Lease, ReleaseResult, TokenRefused, TokenSettlement } from './lease.js';
import type { Outcome } from './outcome.js';
import { checkPartitionCount, partitionOf, partitionTag } from './partitions.js';
import { KeyPool, type KeyPoolEvents, type KeyPoolOptions } from './pool.js';
import { PoolKeys } from './pool-keys.js';
import type { ModelPrice } from './pricing.js';
import { groupOf, type KeySettings } from './records.js';
import { openClient } from './redis-link.js';
import type { KeyStatus, PoolStatus, ScheduledJobStatus, SpendLine } from './status.js';
import type { GatewayTokens } from './tokens.js';
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

/**
 * A pool split into `partitions` (config) partitions, each a KeyPool of its own under its own hash
 * tag (partitions.ts: `{pool}` for partition 0, `{pool~p-i}` for the others, spread round the
 * Cluster's slots), so the pool's lease rate grows with the shards that hold it. A key lives in the
 * partition its id hashes to; every lease, release, admin action and probe of a key is one call in
 * that partition, so a key's limits, budget and breaker stay as exact as in a pool of one partition.
 *
 * Acquire picks a partition the way a partition's acquire picks a key: `candidates` partitions that
 * serve the model, sampled at random, one of them chosen with probability proportional to its candidate keys (what each partition
 * advertises: the size of its candidate sets, read every 250 ms in the background, and "nothing
 * before T" learnt from an exhausted reply); one script call on one shard in the common case, and
 * the next partition only when that one had nothing (at most one call per partition).
 *
 * Gateway tokens live in partition 0 and nowhere else (exact fleet-wide admission): a partitioned
 * pool admits a token in its own call there before leasing, and settles it there after the release
 * (one more round trip each way, only for requests with a gateway token). Spend per model and per
 * route is counted in each partition and summed by status().
 */
export class PartitionedPool extends EventEmitter<KeyPoolEvents> {
  readonly name: string;
  readonly config: PoolConfig;
  /** The partitions, by index. */
  readonly parts: readonly KeyPool[];
  /** Gateway tokens: partition 0's. */
  readonly tokens: GatewayTokens;
  private readonly client: Redis | Cluster;
  private readonly owns: boolean;
  private readonly clock: Clock;
  private readonly free: Map<string, Free>[];
  private freeReadAt = 0;
  private freeReading: Promise<void> | undefined;

  private constructor(config: PoolConfig, parts: KeyPool[], client: Redis | Cluster, owns: boolean, clock: Clock) {
    super();
    this.name = config.pool;
    this.config = config;
    this.parts = parts;
    this.tokens = parts[0]!.tokens;
    this.client = client;
    this.owns = owns;
    this.clock = clock;
    this.free = parts.map(() => new Map());
    parts.forEach((p, i) => {
      p.on('transition', (e) => this.emit('transition', e));
      if (i === 0) {
        p.on('redis:down', (e) => this.emit('redis:down', e));
        p.on('redis:up', () => this.emit('redis:up'));
        p.on('tokens:lost', () => this.emit('tokens:lost'));
      }
    });
  }

  /**
   * Validate the config, connect, refuse a partition count other than the pool's own, and connect
   * each partition with the config keys whose ids hash to it (the gateway tokens go to partition 0).
   */
  static async connect(options: KeyPoolOptions): Promise<PartitionedPool> {
    const config = parsePoolConfig(options.config);
    const n = config.partitions;
    const clock = options.clock ?? systemClock;
    const { client, owns } = await openClient(options.redis, config);
    const parts: KeyPool[] = [];
    try {
      await checkPartitionCount(client, config.pool, n);
      const input = options.config;
      const specs = input.keys ?? [];
      const ids = config.keys.map((k) => keyIdOf(k.secret, k.baseURL));
      for (let p = 0; p < n; p++) {
        const keys = specs.filter((_, i) => partitionOf(ids[i]!, n) === p);
        const partConfig = { ...input, partitions: 1, keys, tokens: p === 0 ? (input.tokens ?? []) : [] };
        const tag = partitionTag(config.pool, p, n);
        parts.push(await KeyPool.connect({ redis: client, config: partConfig, ...(options.logger ? { logger: options.logger.child({ partition: p }) } : {}), clock, partitionTag: tag }));
      }
    } catch (e) {
      await Promise.all(parts.map((p) => p.close()));
      if (owns) client.disconnect();
      throw e;
    }
    return new PartitionedPool(config, parts, client, owns, clock);
  }

  /** The partition that holds `keyId`. */
  partOf(keyId: string): KeyPool {
    return this.parts[partitionOf(keyId, this.parts.length)]!;
  }

  /** The Redis key names of partition `p`. */
  keysOf(p: number): PoolKeys {
    return this.parts[p]!.keys;
  }

  // ---- acquire / release ------------------------------------------------------------------

  /**
   * Lease a key for one call to `model`, from the partition that advertises the most candidate keys
   * among `candidates` sampled; another partition only when that one has nothing. With `maxWaitMs`,
   * the wait (or reservation) is taken in the partition that can serve first. With `admit`, the
   * gateway token is admitted first in partition 0 (its own call), and given back when no key could
   * be had. Same results and errors as KeyPool.acquire.
   */
  acquire(req: AcquireRequest & { admit?: undefined }): Promise<AcquireResult>;
  acquire(req: AcquireRequest): Promise<AcquireResult | TokenRefused>;
  async acquire(req: AcquireRequest): Promise<AcquireResult | TokenRefused> {
    if (typeof req?.model !== 'string' || req.model === '') throw new InvalidArgumentError('acquire needs a model name');
    const order = await this.order(req.model);
    let admission: Lease['admission'];
    if (req.admit) {
      const a = await this.tokens.admit(req.admit.token, req.admit.name ?? req.model, req.admit.estimatedCostUsd);
      if (!a.ok) return { ok: false, reason: 'token_refused', token: a };
      admission = a;
    }
    const inner = { ...req, admit: undefined, maxWaitMs: 0 };
    let best: { p: number; res: Exhausted } | undefined;
    try {
      for (const p of order) {
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
      const wait = req.maxWaitMs ?? 0;
      const res = best.res;
      if (wait > 0 && res.retryAfterMs !== null && res.retryAfterMs <= wait) {
        const r = await this.parts[best!.p]!.acquire({ ...req, admit: undefined });
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
    if (this.clock.now() - this.freeReadAt >= FREE_REFRESH_MS) void this.readFree();
    let serving = this.serving(model);
    if (serving.length === 0) {
      await Promise.all(this.parts.map((p) => p.refreshTopology().catch(() => undefined)));
      serving = this.serving(model);
      if (serving.length === 0) throw new UnknownModelError(model, [...new Set(this.parts.flatMap((p) => p.knownKeys().flatMap((k) => k.models)))].sort());
    }
    const now = this.clock.now();
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
    f.emptyUntil = this.clock.now() + (r.retryAfterMs ?? FREE_REFRESH_MS);
    this.free[p]!.set(model, f);
  }

  /**
   * Each partition's free capacity per model: the candidate keys of the groups that serve it (one
   * SCARD per group and partition, in the background every 250 ms; a failed read keeps the last).
   */
  private readFree(): Promise<void> {
    this.freeReadAt = this.clock.now();
    this.freeReading ??= (async () => {
      try {
        await Promise.all(
          this.parts.map(async (part, p) => {
            const byGroup = new Map<string, string[]>();
            for (const k of part.knownKeys()) byGroup.set(groupOf(k.models), k.models);
            const counts = new Map<string, number>();
            for (const [g, models] of byGroup) {
              const n = await this.client.scard(part.keys.avail(g));
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
    const release = lease.release;
    let settled: Promise<ReleaseResult> | undefined;
    lease.release = (outcome: Outcome, opts?: { settle?: TokenSettlement }) =>
      (settled ??= (async () => {
        const r = await release(outcome);
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
  release(lease: Lease, outcome: Outcome, opts: { settle?: TokenSettlement } = {}): Promise<ReleaseResult> {
    return lease.release(outcome, opts);
  }

  // ---- keys: each action in the key's partition --------------------------------------------

  /** Add a key (or update its settings) in the partition its id hashes to. */
  addKey(spec: KeySpecInput): Promise<{ id: string; hint: string }> {
    if (typeof spec?.secret !== 'string') throw new InvalidArgumentError('addKey needs a secret');
    return this.partOf(keyIdOf(spec.secret, spec.baseURL)).addKey(spec);
  }
  updateKey(keyId: string, patch: Partial<KeySettings>): Promise<KeyChange[]> {
    return this.partOf(keyId).updateKey(keyId, patch);
  }
  disableKey(keyId: string) {
    return this.partOf(keyId).disableKey(keyId);
  }
  enableKey(keyId: string) {
    return this.partOf(keyId).enableKey(keyId);
  }
  drainKey(keyId: string) {
    return this.partOf(keyId).drainKey(keyId);
  }
  retireKey(keyId: string) {
    return this.partOf(keyId).retireKey(keyId);
  }
  removeKey(keyId: string) {
    return this.partOf(keyId).removeKey(keyId);
  }
  resetKey(keyId: string) {
    return this.partOf(keyId).resetKey(keyId);
  }
  resetBudget(keyId: string) {
    return this.partOf(keyId).resetBudget(keyId);
  }
  heldKeyIds(): string[] {
    return this.parts.flatMap((p) => p.heldKeyIds());
  }
  isConfigKey(keyId: string): boolean {
    return this.partOf(keyId).isConfigKey(keyId);
  }

  /** KeyPool.setSourceKeys, each partition given the keys that hash to it. */
  async setSourceKeys(specs: readonly KeySpecInput[]): Promise<{ added: string[]; changed: string[]; dropped: string[] }> {
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

  async probeTargets(): Promise<ProbeTarget[]> {
    const out: ProbeTarget[] = [];
    for (const p of this.parts) out.push(...(await p.probeTargets()));
    return out;
  }
  reportProbe(keyId: string, outcome: Pick<Outcome, 'status' | 'error' | 'latencyMs' | 'headers'>) {
    return this.partOf(keyId).reportProbe(keyId, outcome);
  }

  async housekeep(): Promise<Awaited<ReturnType<KeyPool['housekeep']>>> {
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
  async status(opts: { fresh?: boolean } = {}): Promise<PoolStatus & { partitions: PartitionStatus[] }> {
    const all = await Promise.all(this.parts.map((p) => p.status(opts)));
    return mergeStatus(this.name, all, this.parts.map((p) => p.keys));
  }

  async readiness(): Promise<{ redis: PoolStatus['redis']; heldKeys: number }> {
    const all = await Promise.all(this.parts.map((p) => p.readiness()));
    return { redis: all.find((r) => !r.redis.ok)?.redis ?? all[0]!.redis, heldKeys: all.reduce((s, r) => s + r.heldKeys, 0) };
  }

  /** The scheduler's jobs (kept in partition 0). */
  scheduleStatus(): Promise<ScheduledJobStatus[]> {
    return this.parts[0]!.scheduleStatus();
  }

  get redisAvailable(): boolean {
    return this.parts.every((p) => p.redisAvailable);
  }
  servesModel(model: string): boolean {
    return this.parts.some((p) => p.servesModel(model));
  }
  knownKeys(): ReturnType<KeyPool['knownKeys']> {
    return this.parts.flatMap((p) => p.knownKeys());
  }
  async refreshTopology(): Promise<void> {
    await Promise.all(this.parts.map((p) => p.refreshTopology()));
  }
  priceOf(model: string): ModelPrice | null {
    return this.parts[0]!.priceOf(model);
  }
  costUsd(model: string, input: number, output: number): number {
    return this.parts[0]!.costUsd(model, input, output);
  }

  /** Stop every partition; closes the Redis connection if this pool opened it. */
  async close(): Promise<void> {
    this.removeAllListeners();
    await Promise.all(this.parts.map((p) => p.close()));
    if (this.owns) await this.client.quit().catch(() => this.client.disconnect());
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
    partitions: all.map((s, index) => ({ index, tag: tagOf(keys[index]!), keys: s.keys.length, leasesInFlight: s.leasesInFlight })),
  };
}

function tagOf(k: PoolKeys): string {
  return /\{(.*)\}/.exec(k.cfg)?.[1] ?? '';
}
