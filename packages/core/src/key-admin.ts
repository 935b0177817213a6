import type { Logger } from 'pino';
import { refusalError, type KeyAction, type PoolCommands } from './commands.js';
import { checkOrigins, parseKeySettings, parseKeySpec, type KeySpec, type KeySpecInput } from './config.js';
import { InvalidArgumentError } from './errors.js';
import { recordOfSpec, settingsOf, toRecord, type KeyRecord, type KeySettings } from './records.js';
import type { Topology } from './topology.js';

/** A key this process holds: its secret and where it goes, both from the config or a secret source. */
export interface HeldKey {
  readonly secret: string;
  readonly provider: string;
  readonly baseURL: string;
}

/** One setting an update changed (values of limits and labels, never a secret). */
export interface KeyChange {
  field: string;
  from: unknown;
  to: unknown;
}

/** What a key is (its secret and where it is sent): never changed by an update. */
const FIXED_FIELDS = ['secret', 'baseURL', 'provider'] as const;

/**
 * Administration of the pool's keys: the keys this process holds (their secrets stay here),
 * adding and changing keys, the operator transitions (disable, enable, drain, retire, remove,
 * reset), and registering this process's keys again when Redis comes back without them.
 */
export class KeyAdmin {
  /**
   * Secret and destination of every key this process holds (config, secret sources, addKey), by
   * key id: the only place a lease's baseURL comes from (never the record in Redis).
   */
  private readonly held = new Map<string, HeldKey>();
  /** Settings of the keys this process registered, to register again after Redis lost them. */
  private readonly own = new Map<string, KeyRecord>();
  /** Keys from the config (a secret source never drops those). */
  private readonly configIds = new Set<string>();
  /** The pool's epoch in Redis when this process registered its keys (a new one means Redis lost them). */
  private epoch: string | undefined;

  constructor(
    private readonly cmd: PoolCommands,
    private readonly topology: Topology,
    private readonly log: Logger,
    private readonly pool: string,
    /** upstreams.allow: the origins a key may be sent to (undefined: any). */
    private readonly allow: readonly string[] | undefined,
  ) {}

  /** Hold the config's keys (at connect); `registerOwn` then writes them to Redis. */
  holdConfigKeys(specs: readonly KeySpec[]): void {
    for (const k of specs) {
      const rec = recordOfSpec(k);
      this.hold(rec, k.secret);
      this.configIds.add(rec.id);
    }
  }

  /**
   * Hold a key: its secret with its destination (from `rec`, built from this process's own spec),
   * and its settings to register again should Redis lose them.
   */
  hold(rec: KeyRecord, secret: string): void {
    this.held.set(rec.id, { secret, provider: rec.provider, baseURL: rec.baseURL });
    this.own.set(rec.id, rec);
  }

  /** Stop holding a key a secret source no longer gives (config keys stay held). */
  drop(keyId: string): void {
    if (this.configIds.has(keyId)) return;
    this.own.delete(keyId);
    this.held.delete(keyId);
  }

  /** The settings this process registered for a key, if it did. */
  registered(keyId: string): KeyRecord | undefined {
    return this.own.get(keyId);
  }

  /** The secret and destination of a key this process holds. */
  heldKey(keyId: string): HeldKey | undefined {
    return this.held.get(keyId);
  }

  holds(keyId: string): boolean {
    return this.held.has(keyId);
  }

  /** Ids of the keys this process holds the secret of (config, secret sources, addKey). */
  heldKeyIds(): string[] {
    return [...this.held.keys()];
  }

  /** Whether `keyId` is one of this process's config keys (a secret source never drops those). */
  isConfigKey(keyId: string): boolean {
    return this.configIds.has(keyId);
  }

  /** Add a key (or update its settings if it is already in the pool). Returns its id and hint. */
  async addKey(spec: KeySpecInput): Promise<{ id: string; hint: string }> {
    const parsed = parseKeySpec(spec);
    checkOrigins([parsed], this.allow, 'key', () => 'key.baseURL');
    const rec = recordOfSpec(parsed);
    this.hold(rec, parsed.secret);
    await this.upsert([rec]);
    await this.topology.refresh();
    return { id: rec.id, hint: rec.hint };
  }

  /**
   * Change a key's settings (limits, models, budget, weight...) while the pool runs; returns what
   * changed. Its secret, baseURL and provider are the key itself: they cannot be changed here.
   */
  async updateKey(keyId: string, patch: Partial<KeySettings>): Promise<KeyChange[]> {
    const fixed = FIXED_FIELDS.filter((f) => f in (patch as object));
    if (fixed.length > 0) {
      throw new InvalidArgumentError(
        `updateKey cannot change a key's ${fixed.join(', ')}: a key's secret, baseURL and provider come only from the config or secret source that holds the secret, ` +
          'so that nothing in Redis or the admin API can send a secret elsewhere. Change it there (the key gets a new id) and retire the old key',
      );
    }
    for (let attempt = 0; attempt < 5; attempt++) {
      const found = await this.cmd.record(keyId);
      if (found === null) throw refusalError({ reason: 'not_found', keyId });
      const old = found.rec;
      const before = settingsOf(old);
      const after = parseKeySettings({ ...before, ...patch });
      const rec = toRecord(old.id, old.hint, after);
      if (await this.upsertOne(rec, found.raw)) {
        await this.topology.refresh();
        return changesOf(before, settingsOf(rec));
      }
    }
    throw refusalError({ reason: 'conflict', keyId, doing: 'updated' });
  }

  /** An operator transition of one key (KeyPool.disableKey and the others). */
  async setState(keyId: string, action: KeyAction): Promise<{ state: string; breaker: string; inFlight: number }> {
    const found = await this.cmd.record(keyId);
    if (found === null) throw refusalError({ reason: 'not_found', keyId });
    const reply = await this.cmd.setState(keyId, action, found.rec.g);
    if (!reply.ok) throw refusalError({ reason: reply.reason, keyId });
    this.log.info({ keyId, hint: found.rec.hint, action }, `key ${action}`);
    if (reply.state === 'removed') await this.topology.refresh().catch(() => undefined);
    return { state: reply.state, breaker: reply.breaker, inFlight: reply.inFlight };
  }

  /** Register the keys this process holds (at connect). */
  registerOwn(): Promise<void> {
    return this.upsert([...this.own.values()]);
  }

  /**
   * After an outage, Redis may have restarted empty. The pool's epoch (set with the first key)
   * tells: a missing or different epoch means the keys this process registered are gone, so it
   * registers them again; the same epoch means nothing was lost (keys an operator removed stay
   * removed). A process that started while Redis was down registers its keys now. True when
   * the pool was lost (an epoch this process knew is gone or changed): its tokens went with it.
   */
  async registerMissing(): Promise<boolean> {
    const epoch = await this.cmd.epoch();
    const lost = this.epoch !== undefined && epoch !== this.epoch;
    if (this.own.size > 0 && (epoch === null || epoch !== this.epoch)) {
      if (this.epoch !== undefined) {
        this.log.warn(
          { keys: [...this.own.values()].map((r) => r.hint) },
          `Redis lost pool "${this.pool}": registering this process's ${this.own.size} key(s) again (their counters start afresh)`,
        );
      }
      await this.upsert([...this.own.values()]);
    }
    await this.topology.refresh();
    return lost;
  }

  /** Write the settings of `recs` to Redis, each against what was there (read again on a conflict). */
  async upsert(recs: readonly KeyRecord[]): Promise<void> {
    for (const rec of recs) {
      for (let attempt = 0; ; attempt++) {
        const found = await this.cmd.record(rec.id);
        if (await this.upsertOne(rec, found?.raw ?? '', found?.rec)) break;
        if (attempt >= 5) throw refusalError({ reason: 'conflict', keyId: rec.id, doing: 'registered' });
      }
    }
  }

  private async upsertOne(rec: KeyRecord, expected: string, before?: KeyRecord): Promise<boolean> {
    const reply = await this.cmd.upsertKey(rec, expected);
    if (!reply.ok) return false;
    const changes = reply.change === 'updated' && before ? changesOf(settingsOf(before), settingsOf(rec)) : [];
    if (changes.length > 0) {
      // each field replaced, old and new: an edited config, or an admin change (keys set, the admin
      // API) or another process's config overwritten by this one (the config is what a start applies)
      this.log.info(
        { keyId: rec.id, hint: rec.hint, change: reply.change, changes },
        `key ${rec.name ?? rec.hint}: settings from this process's config (${changes.map((c) => `${c.field} ${JSON.stringify(c.from)} -> ${JSON.stringify(c.to)}`).join(', ')})`,
      );
    } else if (reply.change !== 'unchanged') this.log.info({ keyId: rec.id, hint: rec.hint, change: reply.change }, `key ${reply.change}`);
    if (this.own.has(rec.id)) this.epoch = reply.epoch;
    return true;
  }
}

/** The settings that differ between two versions of a key, in a stable order. */
export function changesOf(before: KeySettings, after: KeySettings): KeyChange[] {
  const fields = [...new Set([...Object.keys(before), ...Object.keys(after)])] as (keyof KeySettings)[];
  return fields.filter((f) => JSON.stringify(before[f]) !== JSON.stringify(after[f])).map((field) => ({ field, from: before[field], to: after[field] }));
}
