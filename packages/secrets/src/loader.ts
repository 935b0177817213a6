import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '@keypool/core';
import { isSecretSourceError, SecretSourceError, type SecretSet, type SecretSource } from './types.js';

export interface LoaderOptions {
  /** One attempt gives up after this long (the backend is then `unavailable`). Default 5000. */
  timeoutMs?: number;
  /** Attempts per load, the first included, for retryable failures. Default 4. */
  attempts?: number;
  /** Backoff before the second attempt; doubles each time, with full jitter. Default 200. */
  backoffMs?: number;
  /** Longest backoff. Default 5000. */
  maxBackoffMs?: number;
  logger?: Logger;
  /** The time backoffs and load times are read from (default: the system clock; tests pass a ManualClock). */
  clock?: Clock;
}

/** What one refresh did. */
export type RefreshResult =
  | { ok: true; set: SecretSet; changed: boolean; attempts: number }
  /** Failed: `set` is the last good set (still in use), undefined if there never was one. */
  | { ok: false; set: SecretSet | undefined; error: SecretSourceError; attempts: number };

export interface SecretLoaderEvents {
  /** Every refresh, for metrics: outcome and duration. */
  refresh: [result: RefreshResult, durationMs: number];
}

/**
 * A source with timeouts, retries with backoff, and a last good set: a refresh that fails keeps
 * the set already in use (it never empties the pool) and reports the failure (log line, event,
 * `lastError`). Retries only what may succeed next time (unavailable, throttled).
 */
export class SecretLoader extends EventEmitter<SecretLoaderEvents> {
  private good: SecretSet | undefined;
  private goodAt: number | undefined;
  private lastErr: { at: number; error: SecretSourceError } | undefined;
  private readonly timeoutMs: number;
  private readonly attempts: number;
  private readonly backoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly log: Logger | undefined;
  private readonly clock: Clock;
  private inflight: Promise<RefreshResult> | undefined;

  constructor(
    readonly source: SecretSource,
    options: LoaderOptions = {},
  ) {
    super();
    this.timeoutMs = options.timeoutMs ?? 5000;
    this.attempts = Math.max(1, options.attempts ?? 4);
    this.backoffMs = options.backoffMs ?? 200;
    this.maxBackoffMs = options.maxBackoffMs ?? 5000;
    this.log = options.logger?.child({ component: 'keypool-secrets', source: source.describe });
    this.clock = options.clock ?? systemClock;
  }

  /** The set in use: the last one loaded successfully. */
  get current(): SecretSet | undefined {
    return this.good;
  }

  /** When the set in use was loaded, and the last failure since then, for status. */
  health(): { source: string; kind: string; version?: string; keys?: number; loadedAt?: string; lastError?: { at: string; code: string; message: string } } {
    return {
      source: this.source.describe,
      kind: this.source.kind,
      ...(this.good ? { version: this.good.version, keys: this.good.keys.length } : {}),
      ...(this.goodAt ? { loadedAt: new Date(this.goodAt).toISOString() } : {}),
      ...(this.lastErr ? { lastError: { at: new Date(this.lastErr.at).toISOString(), code: this.lastErr.error.code, message: this.lastErr.error.message } } : {}),
    };
  }

  /**
   * The first load: throws SecretSourceError when the source cannot give a set (there is no last
   * good set to fall back on), so a process does not start without keys it was told to have.
   */
  async start(): Promise<SecretSet> {
    const r = await this.refresh();
    if (!r.ok) throw r.error;
    return r.set;
  }

  /** Load again. Concurrent calls share one load. Never throws. */
  refresh(): Promise<RefreshResult> {
    this.inflight ??= this.doRefresh().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  private async doRefresh(): Promise<RefreshResult> {
    const started = this.clock.now();
    let attempt = 0;
    let error: SecretSourceError;
    for (;;) {
      attempt++;
      try {
        const set = await this.attempt();
        const changed = this.good?.version !== set.version;
        if (changed && this.good) this.log?.info({ from: this.good.version, to: set.version, keys: set.keys.length }, 'secret set changed');
        if (this.lastErr) this.log?.info({ attempts: attempt }, 'secret source answering again');
        this.good = set;
        this.goodAt = this.clock.now();
        this.lastErr = undefined;
        const result: RefreshResult = { ok: true, set, changed, attempts: attempt };
        this.emit('refresh', result, this.clock.now() - started);
        return result;
      } catch (e) {
        error = isSecretSourceError(e) ? e : new SecretSourceError('unavailable', this.source.describe, (e as Error)?.message ?? String(e), { cause: e });
      }
      if (!error.retryable || attempt >= this.attempts) break;
      const cap = Math.min(this.maxBackoffMs, this.backoffMs * 2 ** (attempt - 1));
      await this.clock.sleep(cap / 2 + Math.random() * (cap / 2));
    }
    this.lastErr = { at: this.clock.now(), error };
    this.log?.error(
      { code: error.code, attempts: attempt, keptVersion: this.good?.version ?? null, err: error.message },
      this.good ? 'secret refresh failed: keeping the last good set' : 'secret load failed: no set loaded yet',
    );
    const result: RefreshResult = { ok: false, set: this.good, error, attempts: attempt };
    this.emit('refresh', result, this.clock.now() - started);
    return result;
  }

  private async attempt(): Promise<SecretSet> {
    const ac = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        ac.abort();
        reject(new SecretSourceError('unavailable', this.source.describe, `no answer within ${this.timeoutMs} ms (secrets.timeoutMs)`));
      }, this.timeoutMs);
    });
    try {
      return await Promise.race([this.source.load({ signal: ac.signal }), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}
