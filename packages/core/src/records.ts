import { createHash } from 'node:crypto';
import { burstsOf, windowsOf, type KeySpec } from './config.js';
import { hintOf, keyIdOf } from './fingerprint.js';
import { NANOS_PER_USD } from './pricing.js';

/**
 * A key as Redis knows it (the `cfg` hash, JSON): everything but the secret. The short fields
 * (rb, tb, mc, bud, per, w, g) are what the Lua scripts read; the rest is for people. `provider`
 * and `baseURL` are for display only: where a secret is sent comes from the process that holds it
 * (KeyAdmin's held keys), never from this record, which anyone with Redis write access can edit.
 */
export interface KeyRecord {
  id: string;
  hint: string;
  name?: string;
  provider: string;
  baseURL: string;
  models: string[];
  rpm: number;
  tpm: number;
  rpmBurst?: number;
  tpmBurst?: number;
  maxConcurrent: number;
  budget?: { usd: number; period: 'day' | 'month' | 'total' };
  weight: number;
  /** request bucket size */
  rb: number;
  /** token bucket size */
  tb: number;
  /** max concurrent, 0 = none */
  mc: number;
  /** budget in nano-dollars, -1 = none */
  bud: number;
  /** budget period */
  per: 'day' | 'month' | 'total';
  /** selection weight */
  w: number;
  /** key group: keys serving the same set of models share candidate sets */
  g: string;
  /** what TPM counts: 'estimate' (no refund of unused tokens) or 'usage' */
  tc: 'estimate' | 'usage';
  tpmCounts?: 'estimate' | 'usage';
  window?: number;
  tokenWindow?: number;
  limitHeaders?: 'minute' | 'window';
  /** request enforcement window ms (0: token bucket) */
  rw: number;
  /** token enforcement window ms (0: token bucket) */
  tw: number;
  /** what the provider's limit headers count: per minute or per window */
  lh: 'minute' | 'window';
}

/** The group of a model list: keys with the same models share one avail set and one wait zset. */
export function groupOf(models: readonly string[]): string {
  const canon = [...new Set(models)].sort().join('\n');
  return createHash('sha1').update(canon).digest('hex').slice(0, 12);
}

export type KeySettings = Omit<KeySpec, 'secret'>;

/** Build the record of a key from its settings; `id`/`hint` come from the secret. */
export function toRecord(id: string, hint: string, s: KeySettings): KeyRecord {
  const { rb, tb } = burstsOf(s);
  const { rw, tw, lh } = windowsOf({ ...s, tokenWindow: s.tokenWindow ?? 0 });
  const models = [...new Set(s.models)].sort();
  const rec: KeyRecord = {
    id,
    hint,
    ...(s.name !== undefined ? { name: s.name } : {}),
    provider: s.provider,
    baseURL: s.baseURL,
    models,
    rpm: s.rpm,
    tpm: s.tpm,
    ...(s.rpmBurst !== undefined ? { rpmBurst: s.rpmBurst } : {}),
    ...(s.tpmBurst !== undefined ? { tpmBurst: s.tpmBurst } : {}),
    maxConcurrent: s.maxConcurrent,
    ...(s.budget ? { budget: s.budget } : {}),
    weight: s.weight,
    rb,
    tb,
    mc: s.maxConcurrent,
    bud: s.budget ? Math.round(s.budget.usd * NANOS_PER_USD) : -1,
    per: s.budget?.period ?? 'total',
    w: s.weight,
    g: groupOf(models),
    ...(s.tpmCounts !== undefined ? { tpmCounts: s.tpmCounts } : {}),
    tc: s.tpmCounts ?? (s.provider === 'openai' || s.provider === 'azure' ? 'estimate' : 'usage'),
    ...(s.window !== undefined ? { window: s.window } : {}),
    ...(s.tokenWindow ? { tokenWindow: s.tokenWindow } : {}),
    ...(s.limitHeaders !== undefined ? { limitHeaders: s.limitHeaders } : {}),
    rw,
    tw,
    lh,
  };
  return rec;
}

/** The record of a key spec; its id covers the secret and the destination (see keyIdOf). */
export function recordOfSpec(spec: KeySpec): KeyRecord {
  const { secret, ...settings } = spec;
  return toRecord(keyIdOf(secret, settings.baseURL), hintOf(secret), settings);
}

/** The settings a record was built from (to apply a patch and rebuild). */
export function settingsOf(r: KeyRecord): KeySettings {
  return {
    ...(r.name !== undefined ? { name: r.name } : {}),
    provider: r.provider,
    baseURL: r.baseURL,
    models: r.models,
    rpm: r.rpm,
    tpm: r.tpm,
    ...(r.rpmBurst !== undefined ? { rpmBurst: r.rpmBurst } : {}),
    ...(r.tpmBurst !== undefined ? { tpmBurst: r.tpmBurst } : {}),
    maxConcurrent: r.maxConcurrent,
    ...(r.budget ? { budget: r.budget } : {}),
    weight: r.weight,
    ...(r.tpmCounts !== undefined ? { tpmCounts: r.tpmCounts } : {}),
    ...(r.window !== undefined ? { window: r.window } : {}),
    tokenWindow: r.tokenWindow ?? 0,
    ...(r.limitHeaders !== undefined ? { limitHeaders: r.limitHeaders } : {}),
  };
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
    windowSeconds: (r.rw ?? 0) / 1000,
    tokenWindowSeconds: (r.tw ?? 0) / 1000,
    limitHeaders: r.lh ?? 'minute',
  };
}

/** The settings JSON in Redis (`tok` hash). Short fields are what the scripts read. */
export interface TokenRecord {
  id: string;
  hint: string;
  name: string;
  rpm: number;
  /** request bucket size */
  rb: number;
  /** budget in nano-dollars, -1 = none */
  bud: number;
  /** budget period */
  per: 'day' | 'month' | 'total';
  models: string[];
  budget?: { usd: number; period: 'day' | 'month' | 'total' };
  /** weight in the fair shares between tenants (absent: 1; acquire.lua reads it) */
  weight?: number;
  /** may ask for the critical class (absent: no; acquire.lua reads it) */
  allowCritical?: boolean;
}
