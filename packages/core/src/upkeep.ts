import type { Logger } from 'pino';
import type { Clock } from './clock.js';
import { refusalError, type PoolCommands } from './commands.js';
import { checkOrigins, parseKeySpec, type KeySpecInput, type PoolConfig } from './config.js';
import { isKeyNotFound, isRedisUnavailable } from './errors.js';
import { coolingMs } from './headers.js';
import type { KeyAdmin } from './key-admin.js';
import type { LocalLimiter } from './local-limiter.js';
import { classify, type Outcome } from './outcome.js';
import { NANOS_PER_USD } from './pricing.js';
import { limitsOf, recordOfSpec, type KeyRecord } from './records.js';
import type { RedisLink } from './redis-link.js';
import type { KeyStatus, PoolStatus, ScheduledJobStatus } from './status.js';
import { inPages, readKeys, StatusView } from './status-view.js';
import { SeriesReader, sliceSeries, type PoolSeries } from './series.js';
import type { Topology } from './topology.js';


/** A key to probe: what the call needs (the secret stays in this process, as with a lease). */
/** HSCAN pages of the traffic counters' per-key fields swept per housekeeping run (256 fields a page). */
const SWEEP_PAGES = 8;

export interface ProbeTarget {
  keyId: string;
  hint: string;
  provider: string;
  baseURL: string;
  secret: string;
  reason: 'open' | 'half_open' | 'revoked' | 'degraded';
}

export interface UpkeepParts {
  name: string;
  config: PoolConfig;
  cmd: PoolCommands;
  link: RedisLink;
  topology: Topology;
  admin: KeyAdmin;
  local: LocalLimiter;
  log: Logger;
  clock: Clock;
  /** A key changed state (a probe closed, reopened or revoked it...). */
  onTransition(event: { keyId: string; hint: string; transition: string }): void;
}

/**
 * The scheduler's side of the pool, never on the request path: keys from secret sources, health
 * probes, housekeeping, and the fleet-wide status (of keys and of the scheduler's jobs).
 */
export class Upkeep {
  /** Keys this process holds from secret sources (setSourceKeys). */
  private readonly sourced = new Map<string, KeyRecord>();
  private readonly view: StatusView;

  constructor(private readonly p: UpkeepParts) {
    this.view = new StatusView(p.name, p.cmd, p.config.status.snapshotMs, new SeriesReader(p.cmd));
  }

  /** See KeyPool.setSourceKeys. */
  async setSourceKeys(specs: readonly KeySpecInput[]): Promise<{ added: string[]; changed: string[]; dropped: string[] }> {
    const { admin } = this.p;
    const next = new Map<string, { rec: KeyRecord; secret: string }>();
    const parsed = specs.map((s) => parseKeySpec(s));
    // the whole set or nothing, as for a key that does not parse: the last good set stays held
    checkOrigins(parsed, this.p.config.upstreams.allow, 'secret source keys');
    for (const spec of parsed) {
      const rec = recordOfSpec(spec);
      next.set(rec.id, { rec, secret: spec.secret });
    }
    const added: string[] = [];
    const changed: string[] = [];
    const upserts: KeyRecord[] = [];
    for (const [id, { rec }] of next) {
      const old = this.sourced.get(id) ?? admin.registered(id);
      if (!old) added.push(id);
      else if (JSON.stringify(old) !== JSON.stringify(rec)) changed.push(id);
      if (!old || JSON.stringify(old) !== JSON.stringify(rec)) upserts.push(rec);
    }
    const dropped = [...this.sourced.keys()].filter((id) => !next.has(id) && !admin.isConfigKey(id));
    // Redis first: if it fails, nothing here changed and the same call can be made again
    if (upserts.length > 0) await admin.upsert(upserts);
    // a key that comes back to its source while it was being retired (drained, not yet removed)
    for (const id of added) {
      await admin.setState(id, 'unretire').catch((e) => {
        if (!isKeyNotFound(e)) throw e;
      });
    }
    for (const [id, { rec, secret }] of next) {
      admin.hold(rec, secret);
      this.sourced.set(id, rec);
    }
    for (const id of [...this.sourced.keys()]) {
      if (next.has(id)) continue;
      this.sourced.delete(id);
      admin.drop(id);
    }
    if (added.length || changed.length || dropped.length) {
      this.p.log.info({ added, changed, dropped }, 'keys from secret sources applied');
      await this.forgetStatus();
    }
    await this.p.topology.refresh();
    return { added, changed, dropped };
  }

  /** See KeyPool.probeTargets: the keys this process holds, read now, a few a call. */
  async probeTargets(): Promise<ProbeTarget[]> {
    const out: ProbeTarget[] = [];
    for (const k of await readKeys(this.p.cmd, this.p.admin.heldKeyIds())) {
      // the probe goes where this process's own spec says, like a lease (never the record's baseURL)
      const held = this.p.admin.heldKey(k.id);
      if (!held) continue;
      const why: ProbeTarget['reason'] | undefined =
        k.state === 'open' || k.state === 'half_open' || k.state === 'revoked' ? k.state : k.state === 'active' && k.st.deg === 1 ? 'degraded' : undefined;
      if (why) out.push({ keyId: k.id, hint: k.cfg.hint, provider: held.provider, baseURL: held.baseURL, secret: held.secret, reason: why });
    }
    return out;
  }

  /** See KeyPool.reportProbe. */
  async reportProbe(keyId: string, outcome: Pick<Outcome, 'status' | 'error' | 'latencyMs' | 'headers'>): Promise<{ state: string; breaker: string; transition: string }> {
    const { config, cmd } = this.p;
    let cls = classify(outcome);
    // only a 2xx (or a 429, which proves the key valid) is a good probe: a 404 on /models is a wrong
    // baseURL more likely than a healthy provider
    if (cls === 'client_error' || cls === 'aborted') cls = 'server_error';
    const coolMs = cls === 'rate_limited' ? coolingMs(outcome.headers, config.cooling, this.p.clock.now()) : -1;
    const found = await cmd.record(keyId);
    if (found === null) throw refusalError({ reason: 'not_found', keyId });
    const { hint } = found.rec;
    const reply = await cmd.probe(keyId, found.rec.g, { outcome: cls, latencyMs: outcome.latencyMs ?? -1, coolMs });
    if (!reply.ok) throw refusalError({ reason: reply.reason, keyId });
    const { state, breaker, transition } = reply;
    if (transition && transition !== 'skipped') {
      this.p.log.info({ keyId, hint, transition, outcome: cls }, `key ${transition} by health probe`);
      this.p.onTransition({ keyId, hint, transition });
    }
    return { state, breaker, transition };
  }

  /**
   * See KeyPool.housekeep. In small steps, one call after another: expired leases 32 a call
   * (housekeepLeases) until none is left, then the keys a few at a time (housekeepKeys).
   */
  /** Where the sweep of the traffic counters' per-key fields goes on (HSCAN cursor). */
  private sweepCursor = '0';

  async housekeep(): Promise<{ leasesReaped: number; periodsStarted: { keyId: string; previousSpendUsd: number }[]; healthWindowsCleared: number }> {
    const { topology, log, cmd } = this.p;
    await topology.refresh();
    const groups = topology.groups();
    let leasesReaped = 0;
    for (let more = true; more; ) {
      const r = await cmd.housekeepLeases(groups);
      leasesReaped += r.reaped;
      more = r.more;
    }
    const periodsStarted: { keyId: string; previousSpendUsd: number }[] = [];
    let healthWindowsCleared = 0;
    await inPages(topology.records().map((r) => r.id), (ids) => cmd.housekeepKeys(groups, ids), (r) => {
      periodsStarted.push(...r.periodsStarted.map((p) => ({ keyId: p.keyId, previousSpendUsd: p.spentNanos / NANOS_PER_USD })));
      healthWindowsCleared += r.healthWindowsCleared;
    });
    // the traffic counters of keys gone from the pool: a few pages per run, where the last run stopped
    for (let page = 0; page < SWEEP_PAGES; page++) {
      const r = await cmd.sweepSeries(this.sweepCursor);
      this.sweepCursor = r.cursor;
      if (r.cursor === '0') break;
    }
    for (const p of periodsStarted) {
      log.info({ keyId: p.keyId, hint: topology.key(p.keyId)?.hint, previousSpendUsd: p.previousSpendUsd }, 'budget period started');
    }
    if (leasesReaped > 0) log.info({ leases: leasesReaped }, 'expired leases given back');
    await topology.refresh();
    return { leasesReaped, periodsStarted, healthWindowsCleared };
  }

  /**
   * What /readyz needs, O(1) whatever the pool size: whether Redis answers a PING, and how many
   * keys this process holds the secret of.
   */
  async readiness(): Promise<{ redis: PoolStatus['redis']; heldKeys: number }> {
    const heldKeys = this.p.admin.heldKeyIds().length;
    try {
      await this.p.cmd.ping();
    } catch (e) {
      if (!isRedisUnavailable(e)) throw e;
    }
    return { redis: this.redisState(), heldKeys };
  }

  /** Forget the shared status (a key changed: an operator sees the change at the next read). */
  async forgetStatus(): Promise<void> {
    await this.view.forget().catch((e: unknown) => this.p.log.warn({ err: (e as Error).message }, 'could not forget the status snapshot'));
  }

  private redisState(): PoolStatus['redis'] {
    const down = this.p.link.outage;
    return {
      ok: !down,
      policy: this.p.config.redisDown.policy,
      ...(down ? { downSince: new Date(down.since).toISOString(), lastError: down.error } : {}),
    };
  }

  /** See KeyPool.status. */
  async status(opts: { fresh?: boolean } = {}): Promise<PoolStatus> {
    const { name, config, topology } = this.p;
    const redis = this.redisState();
    try {
      // Redis known down: no copy kept here stands for it (the read fails, the fallback below answers)
      const { shared, ageMs } = await this.view.get(opts.fresh || this.p.link.outage !== undefined);
      return {
        ...shared.status,
        redis: { ...redis, ok: true },
        snapshot: { takenAt: new Date(shared.takenAt).toISOString(), ageMs },
        // where this process sends the keys it holds is its own spec, whatever a record in Redis
        // says; copies, so that no caller changes the snapshot the next one reads
        keys: shared.status.keys.map((k) => {
          const held = this.p.admin.heldKey(k.id);
          return held ? { ...k, provider: held.provider, baseURL: held.baseURL } : { ...k };
        }),
      };
    } catch (e) {
      if (!isRedisUnavailable(e)) throw e;
      const keys = topology.records().map(
        (r): KeyStatus => ({
          id: r.id,
          hint: r.hint,
          ...(r.name !== undefined ? { name: r.name } : {}),
          provider: r.provider,
          baseURL: r.baseURL,
          models: r.models,
          state: 'unknown',
          limits: limitsOf(r),
          inFlight: this.p.local.inFlight(r.id),
        }),
      );
      return {
        pool: name,
        redis: { ...redis, ok: false },
        mode: config.redisDown.policy === 'local' ? 'local' : 'failing-closed',
        version: topology.current,
        leasesInFlight: null,
        keys,
      };
    }
  }

  /** See KeyPool.series. */
  async series(opts: { sinceSec?: number; fresh?: boolean } = {}): Promise<PoolSeries | null> {
    const { shared } = await this.view.get(opts.fresh);
    const s = shared.series;
    if (!s || opts.sinceSec === undefined) return s ?? null;
    return sliceSeries(s, opts.sinceSec);
  }

  /** See KeyPool.scheduleStatus. */
  async scheduleStatus(): Promise<ScheduledJobStatus[]> {
    const { jobs, runs } = await this.p.cmd.schedule();
    return jobs
      .map(([name, j]) => ({ name, ...j, runs: { completed: Number(runs[`${name}:completed`] ?? 0), failed: Number(runs[`${name}:failed`] ?? 0) } }))
      .sort((a, b) => a.name.localeCompare(b.name));
  }
}
