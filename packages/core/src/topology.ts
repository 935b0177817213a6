import { acquireKeys, type PoolCommands } from './commands.js';
import { KeyNotFoundError, RequestTooLargeError, UnknownModelError } from './errors.js';
import type { PoolKeys } from './pool-keys.js';
import type { KeyRecord } from './records.js';

/** What this process knows of one model: which key groups serve it, and the KEYS to acquire it. */
export interface ModelEntry {
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

/**
 * The pool's keys as this process last read them from Redis (settings only, never a secret), and
 * from them which key groups serve each model. Read again on start, after a change made here,
 * and whenever a script reports a topology version other than the one held.
 */
export class Topology {
  private version = -1;
  private keys = new Map<string, KeyRecord>();
  private models = new Map<string, ModelEntry>();
  /** Every key record this process has seen, removed ones included: their leases can still be released. */
  private readonly seen = new Map<string, KeyRecord>();
  private refreshing: Promise<void> | undefined;

  constructor(
    private readonly cmd: PoolCommands,
    private readonly k: PoolKeys,
    /** Whether this process holds the secret of a key. */
    private readonly holds: (keyId: string) => boolean,
  ) {}

  /** The topology version read last (-1: never read). */
  get current(): number {
    return this.version;
  }

  /** Reload every key's settings from Redis (on start and when another process changed them). */
  refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        const [version, recs] = await Promise.all([this.cmd.version(), this.cmd.records()]);
        this.set(version, recs);
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }

  /** A script saw topology version `v`: read again in the background when it is not ours. */
  noteVersion(v: number): void {
    if (v !== this.version) void this.refresh().catch(() => undefined);
  }

  set(version: number, recs: KeyRecord[]): void {
    const keys = new Map<string, KeyRecord>();
    const models = new Map<string, ModelEntry>();
    for (const r of recs) {
      keys.set(r.id, r);
      this.seen.set(r.id, r);
      const held = this.holds(r.id);
      for (const m of r.models) {
        const e = models.get(m) ?? { groups: [], maxTokens: 0, scriptKeys: [], foreign: '', held: 0 };
        if (held) e.held++;
        else e.foreign = e.foreign ? `${e.foreign},${r.id}` : r.id;
        if (!e.groups.includes(r.g)) e.groups.push(r.g);
        e.maxTokens = Math.max(e.maxTokens, r.tb > 0 ? r.tb : Infinity);
        models.set(m, e);
      }
    }
    for (const e of models.values()) {
      e.groups.sort();
      e.scriptKeys = acquireKeys(this.k, e.groups);
    }
    [this.version, this.keys, this.models] = [version, keys, models];
  }

  /**
   * The entry of a model that can take a request of `tokens` (read again once when the model is
   * unknown). Throws UnknownModelError or RequestTooLargeError.
   */
  async serving(model: string, tokens: number): Promise<ModelEntry> {
    let entry = this.models.get(model);
    if (!entry) {
      await this.refresh().catch(() => undefined);
      entry = this.models.get(model);
      if (!entry) throw new UnknownModelError(model, [...this.models.keys()]);
    }
    if (tokens > entry.maxTokens) throw new RequestTooLargeError(model, tokens, entry.maxTokens);
    return entry;
  }

  /** A key of the current topology. */
  key(keyId: string): KeyRecord | undefined {
    return this.keys.get(keyId);
  }

  /** The keys of the current topology. */
  records(): KeyRecord[] {
    return [...this.keys.values()];
  }

  /** The key groups of the current topology, sorted. */
  groups(): string[] {
    return [...new Set(this.records().map((r) => r.g))].sort();
  }

  /** Keys serving `model` whose secret this process holds. */
  heldFor(model: string): KeyRecord[] {
    return this.records().filter((r) => r.models.includes(model) && this.holds(r.id));
  }

  /** Whether this process holds a key that serves `model`. */
  servesModel(model: string): boolean {
    return (this.models.get(model)?.held ?? 0) > 0;
  }

  /** Settings of a key the topology does not know yet (added by another process a moment ago). */
  async fetch(keyId: string): Promise<KeyRecord> {
    await this.refresh().catch(() => undefined);
    const known = this.keys.get(keyId) ?? this.seen.get(keyId);
    if (known) return known;
    const found = await this.cmd.record(keyId);
    if (found === null) throw new KeyNotFoundError(keyId);
    this.seen.set(keyId, found.rec);
    return found.rec;
  }

  /** A key this process has seen, removed or not (a lease of it can still be released). */
  seenKey(keyId: string): KeyRecord {
    const r = this.keys.get(keyId) ?? this.seen.get(keyId);
    if (r) return r;
    throw new KeyNotFoundError(keyId);
  }
}
