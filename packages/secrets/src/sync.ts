import { createHash, randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Cluster, Redis } from 'ioredis';
import { keyIdOf, systemClock, type Clock, type KeyPool, type KeySpec } from '@keypool/core';
import type { Logger } from 'pino';
import { SecretLoader, type LoaderOptions, type RefreshResult } from './loader.js';
import type { SecretSet, SecretSource } from './types.js';

/**
 * Redis keys of the secret rotation protocol of one pool (same hash tag as the pool's own keys, so
 * they live in the pool's slot on a Cluster). Never a secret: versions and key ids only.
 *   kp:{pool}:secrets          hash  version, ids (JSON), at: the set the fleet should hold
 *   kp:{pool}:secrets:procs    hash  process id -> {"v": version, "held": [key ids], "at": ms}
 *   kp:{pool}:secrets:managed  hash  key id -> the source it came from, until the key is retired
 *   kp:{pool}:secrets:changed  channel: a new version was published (message: the version)
 */
export class SyncKeys {
  readonly state: string;
  readonly procs: string;
  readonly managed: string;
  readonly channel: string;
  constructor(pool: string) {
    const p = `kp:{${pool}}:secrets`;
    this.state = p;
    this.procs = `${p}:procs`;
    this.managed = `${p}:managed`;
    this.channel = `${p}:changed`;
  }
}

export interface SecretSyncOptions {
  pool: KeyPool;
  /**
   * The pool's Redis for this protocol's commands; a duplicate() subscribes to the change channel.
   * Give it a connection that fails fast (enableOfflineQueue false, a commandTimeout): a process
   * must not hang on it while Redis is away.
   */
  redis: Redis | Cluster;
  sources: SecretSource[];
  loader?: LoaderOptions;
  logger?: Logger;
  /** How often this process says what it holds, and checks the published version (ms). Default 5000. */
  heartbeatMs?: number;
  /** Allow the sources to give no key at all (else the coordinator refuses to retire every key). */
  allowEmpty?: boolean;
  /** An id for this process in acks. Default host:pid:random. */
  processId?: string;
  /** The time acks, staleness and the coordinator's grace period are read from (default: the system clock). */
  clock?: Clock;
}

export interface SyncStatus {
  processId: string;
  version: string | undefined;
  keys: number;
  sources: ReturnType<SecretLoader['health']>[];
}

interface Ack {
  v: string;
  held: string[];
  at: number;
}

/**
 * One process's side of zero-downtime rotation. It loads its sources (timeouts, retries, last good
 * set), holds exactly the keys they give (`pool.setSourceKeys`: new keys in at once, dropped keys no
 * longer leased by this process), listens for a newly published version (Redis pub/sub), and at
 * every heartbeat says which version and which key ids it holds, then checks the published version
 * (a message lost while disconnected is caught there).
 *
 * The coordinator (`reconcile`, run by the scheduler's secret refresh) publishes the version and
 * retires a key that left the sources only once no live process holds it any more: a process that
 * has not loaded the new set yet, or that holds the key from its own config or another source,
 * keeps it in service.
 */
export class SecretSync {
  readonly processId: string;
  readonly loaders: SecretLoader[];
  private readonly pool: KeyPool;
  private readonly redis: Redis | Cluster;
  private readonly keys: SyncKeys;
  private readonly log: Logger | undefined;
  private readonly heartbeatMs: number;
  private readonly allowEmpty: boolean;
  /** A process silent this long is gone: its acks no longer hold keys in service. */
  readonly staleMs: number;
  private sub: Redis | Cluster | undefined;
  private timer: NodeJS.Timeout | undefined;
  private applied: string | undefined;
  private closed = false;
  private applying: Promise<void> = Promise.resolve();
  private readonly clock: Clock;

  constructor(opts: SecretSyncOptions) {
    if (opts.sources.length === 0) throw new Error('SecretSync needs at least one secret source');
    this.pool = opts.pool;
    this.redis = opts.redis;
    this.keys = new SyncKeys(opts.pool.name);
    this.log = opts.logger?.child({ component: 'keypool-secrets', pool: opts.pool.name });
    this.heartbeatMs = opts.heartbeatMs ?? 5000;
    this.allowEmpty = opts.allowEmpty ?? false;
    this.clock = opts.clock ?? systemClock;
    this.processId = opts.processId ?? `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
    this.loaders = opts.sources.map((s) => new SecretLoader(s, { clock: this.clock, ...opts.loader, ...(opts.logger ? { logger: opts.logger } : {}) }));
    // acks go on while a reload retries, but give a slow backend time before calling a process gone
    const l = opts.loader ?? {};
    const worstLoad = (l.attempts ?? 4) * (l.timeoutMs ?? 5000) + (l.attempts ?? 4) * (l.maxBackoffMs ?? 5000);
    this.staleMs = Math.max(3 * this.heartbeatMs, worstLoad + 2 * this.heartbeatMs);
  }

  /** The version of the merged set this process holds (undefined before start). */
  get version(): string | undefined {
    return this.applied;
  }

  /**
   * First load of every source (throws SecretSourceError if one cannot give a set: a process does
   * not start without keys it was told to have), apply, subscribe, start the heartbeat.
   */
  async start(): Promise<void> {
    for (const l of this.loaders) await l.start();
    await this.apply();
    if (this.applied === undefined) throw new Error('could not register the keys of the secret sources in Redis (see the log)');
    const r = this.redis as Redis & { isCluster?: boolean };
    // the subscriber may wait for Redis as long as it takes; its commands are only (re)subscriptions
    const sub = (r.isCluster ? (this.redis as Cluster).duplicate() : r.duplicate({ enableOfflineQueue: true, maxRetriesPerRequest: null })) as Redis | Cluster;
    this.sub = sub;
    sub.on('error', (e: Error) => this.log?.warn({ err: e.message }, 'secret change subscription: Redis error (it resubscribes by itself)'));
    sub.on('message', (_channel: string, version: string) => {
      if (version !== this.applied) void this.refresh().catch((e) => this.log?.warn({ err: (e as Error).message }, 'secret refresh after a change message failed'));
    });
    await sub.subscribe(this.keys.channel);
    await this.heartbeat();
    this.timer = setInterval(() => void this.heartbeat().catch((e) => this.log?.warn({ err: (e as Error).message }, 'secret heartbeat failed')), this.heartbeatMs);
    this.timer.unref();
  }

  /** Reload every source and apply the merged set if it changed. Never throws for a source failure. */
  async refresh(): Promise<{ results: RefreshResult[]; version: string | undefined; changed: boolean }> {
    const results = await Promise.all(this.loaders.map((l) => l.refresh()));
    const before = this.applied;
    await this.apply();
    await this.ack().catch(() => undefined);
    return { results, version: this.applied, changed: before !== this.applied };
  }

  /** The keys every source gives now (last good sets), merged: the first source wins a duplicate key (secret and baseURL). */
  merged(): { version: string; keys: KeySpec[]; origin: Map<string, string> } {
    const keys: KeySpec[] = [];
    const origin = new Map<string, string>();
    const versions: string[] = [];
    for (const l of this.loaders) {
      const s: SecretSet | undefined = l.current;
      if (!s) continue;
      versions.push(s.version);
      for (const k of s.keys) {
        const id = keyIdOf(k.secret, k.baseURL);
        if (origin.has(id)) continue;
        keys.push(k);
        origin.set(id, l.source.describe);
      }
    }
    const version = versions.length === 1 ? versions[0]! : createHash('sha256').update(versions.join('\n')).digest('hex').slice(0, 16);
    return { version, keys, origin };
  }

  status(): SyncStatus {
    return { processId: this.processId, version: this.applied, keys: this.merged().keys.length, sources: this.loaders.map((l) => l.health()) };
  }

  /** The published version and what each live process holds (from Redis; null when Redis does not answer). */
  async fleet(): Promise<{ published: string | null; processes: { id: string; version: string; keys: number; seenAt: string }[] } | null> {
    try {
      const [published, all] = await withTimeout(Promise.all([this.redis.hget(this.keys.state, 'version'), this.redis.hgetall(this.keys.procs)]), 1000);
      const now = this.clock.now();
      const processes = Object.entries(all)
        .map(([id, raw]) => {
          const a = parseAck(raw);
          return !a || now - a.at > this.staleMs ? undefined : { id, version: a.v, keys: a.held.length, seenAt: new Date(a.at).toISOString() };
        })
        .filter((p): p is { id: string; version: string; keys: number; seenAt: string } => p !== undefined)
        .sort((a, b) => a.id.localeCompare(b.id));
      return { published, processes };
    } catch {
      return null;
    }
  }

  private apply(): Promise<void> {
    // one apply at a time, in order; a failed one (Redis away) does not stop the next
    this.applying = this.applying
      .catch(() => undefined)
      .then(async () => {
        const { version, keys, origin } = this.merged();
        if (version === this.applied) return;
        try {
          // recorded before use: whatever a process holds, the coordinator can retire when it goes
          await this.recordManaged(origin);
          await this.pool.setSourceKeys(keys);
        } catch (e) {
          this.log?.warn({ err: (e as Error).message, version }, 'could not apply the secret set (Redis away, or a key refused): retrying at the next heartbeat');
          return;
        }
        this.log?.info({ version, keys: keys.length, previous: this.applied ?? null }, 'holding secret set');
        this.applied = version;
      });
    return this.applying;
  }

  private async recordManaged(origin: Map<string, string>): Promise<void> {
    const entries = [...origin].filter(([id]) => !this.pool.isConfigKey(id));
    if (entries.length > 0) await this.redis.hset(this.keys.managed, Object.fromEntries(entries));
  }

  private async heartbeat(): Promise<void> {
    if (this.closed) return;
    // say what this process holds first: a slow reload must not make it look gone
    await this.ack();
    // and keep the record of source keys (Redis may have lost it)
    await this.recordManaged(this.merged().origin);
    const published = await this.redis.hget(this.keys.state, 'version');
    if (published !== null && published !== this.applied) await this.refresh();
  }

  private async ack(): Promise<void> {
    if (this.closed || this.applied === undefined) return;
    const ack: Ack = { v: this.applied, held: this.pool.heldKeyIds(), at: this.clock.now() };
    await this.redis.hset(this.keys.procs, this.processId, JSON.stringify(ack));
  }

  /** Stop listening and forget this process's ack (it no longer holds anything). Bounded even when Redis is away. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await withTimeout(this.applying, 2000).catch(() => undefined);
    if (this.sub) {
      this.sub.removeAllListeners('message');
      await withTimeout(this.sub.quit(), 1000).catch(() => this.sub?.disconnect());
    }
    await withTimeout(this.redis.hdel(this.keys.procs, this.processId), 1000).catch(() => undefined);
    await Promise.all(this.loaders.map((l) => l.source.close?.().catch(() => undefined)));
  }

  /**
   * The coordinator's step (the scheduler's secret refresh, once per interval fleet-wide): reload
   * here; if every source answered, publish the version the fleet should hold, then retire keys
   * that came from secret sources and are in none of them now, once no live process holds them
   * (waiting up to `graceMs` for processes to load the new set; keys still held are left for the
   * next run and reported). Retire = drain (no new leases) then removal when the last lease in flight
   * is released. Idempotent: a coordinator killed midway leaves nothing the next run does not finish.
   * When a source failed, nothing is published or retired: an old set never overrides a newer one.
   */
  async reconcile(opts: { graceMs?: number; pollMs?: number } = {}): Promise<ReconcileResult> {
    const graceMs = opts.graceMs ?? 30_000;
    const { results } = await this.refresh();
    const failed = results.filter((r) => !r.ok).map((r) => (r.ok ? '' : r.error.message));
    const { version, origin } = this.merged();
    const ids = new Set(origin.keys());
    const base = { version, keys: ids.size, failedSources: failed };
    if (failed.length > 0) return { ...base, published: false, retired: [], held: [] };
    const k = this.keys;
    const managed = await this.redis.hgetall(k.managed);
    let gone = Object.keys(managed).filter((id) => !ids.has(id));
    if (ids.size === 0 && gone.length > 0 && !this.allowEmpty) {
      throw new Error(
        `the secret sources give no key at all: refusing to retire all ${gone.length} key(s) from them (a wiped secret?). Fix the source, or set secrets.allowEmpty: true if this is meant`,
      );
    }
    const published = await this.redis.hget(k.state, 'version');
    if (published !== version) {
      await this.redis.hset(k.state, 'version', version, 'ids', JSON.stringify([...ids]), 'at', String(this.clock.now()));
      await this.redis.publish(k.channel, version);
      this.log?.info({ version, keys: ids.size }, 'published secret set version');
    }
    const retired: string[] = [];
    let held: { keyId: string; holders: string[] }[] = [];
    const deadline = this.clock.now() + graceMs;
    while (gone.length > 0) {
      held = await this.holders(gone);
      const free = gone.filter((id) => !held.some((h) => h.keyId === id));
      for (const id of free) {
        try {
          await this.pool.retireKey(id);
        } catch (e) {
          if ((e as Error).name !== 'KeyNotFoundError') throw e;
        }
        await this.redis.hdel(k.managed, id);
        retired.push(id);
      }
      gone = gone.filter((id) => !free.includes(id));
      if (gone.length === 0 || this.clock.now() >= deadline) break;
      await this.clock.sleep(opts.pollMs ?? 200);
    }
    if (retired.length > 0) this.log?.info({ retired }, 'keys no longer in the secret sources retired (drained, then removed)');
    if (held.length > 0) {
      this.log?.warn({ held, version }, 'keys no longer in the secret sources are still held by live processes (an older set, their own config or another source): kept in service, retried at the next refresh');
    }
    return { ...base, published: true, retired, held };
  }

  /** For each id, the live processes that hold it (stale acks are dropped on the way). */
  private async holders(ids: string[]): Promise<{ keyId: string; holders: string[] }[]> {
    const all = await this.redis.hgetall(this.keys.procs);
    const now = this.clock.now();
    const by = new Map<string, string[]>();
    for (const [proc, raw] of Object.entries(all)) {
      const a = parseAck(raw);
      if (!a || now - a.at > this.staleMs) {
        await this.redis.hdel(this.keys.procs, proc);
        continue;
      }
      for (const id of a.held) if (ids.includes(id)) by.set(id, [...(by.get(id) ?? []), proc]);
    }
    return [...by].map(([keyId, holders]) => ({ keyId, holders }));
  }
}

/** ioredis options for SecretSync's connection: fail fast while Redis is away (never queue, never hang). */
export const SYNC_REDIS_OPTIONS = { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 2000, connectTimeout: 3000 } as const;

export interface ReconcileResult {
  version: string;
  keys: number;
  /** False when a source failed: nothing was published or retired. */
  published: boolean;
  retired: string[];
  /** Keys gone from the sources that live processes still hold (not retired yet). */
  held: { keyId: string; holders: string[] }[];
  failedSources: string[];
}

function parseAck(raw: string): Ack | undefined {
  try {
    const a = JSON.parse(raw) as Partial<Ack>;
    return typeof a.v === 'string' && typeof a.at === 'number' ? { v: a.v, at: a.at, held: Array.isArray(a.held) ? a.held : [] } : undefined;
  } catch {
    return undefined;
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      t = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}
