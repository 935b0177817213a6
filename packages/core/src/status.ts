import { limitsOf, type KeyRecord } from './records.js';
import { NANOS_PER_USD } from './pricing.js';
import type { PoolTraffic } from './series.js';

/** The pool-wide figures (lua/statusHead-3.lua; parsed by commands.ts). */
export interface RawStatusHead {
  now: number;
  version: number;
  leases: number;
  /** Keys in the pool (HLEN cfg). */
  keys: number;
  /** HGETALL of the spend hash: m:<model>, mn:<model>, r:<route>, rn:<route> (nano-dollars, requests) */
  spend: string[];
}

/** One key as lua/statusPage-3.lua computes it. */
export interface RawKeyStatus {
  id: string;
  cfg: KeyRecord;
  st: RawState;
  state: KeyState;
  periodEnd: number;
  win?: RawWindows;
}

/** The head and every page together (status-view.ts assembles it). */
export interface RawStatus extends Omit<RawStatusHead, 'keys'> {
  keys: RawKeyStatus[];
}

/** A windowed key's windows: per window (rq, tq; 0 = not windowed), admitted in the one ending now (ru, tu), reserved ahead (ra). */
interface RawWindows {
  rq: number;
  ru: number;
  ra: number;
  tq: number;
  tu: number;
}

interface RawState {
  /** Lease sequence when the key was created: expired leases at or below it are an earlier key's. */
  cs: number;
  rt: number;
  tt: number;
  inf: number;
  adm: string;
  cu: number;
  br: string;
  bf: number;
  bo: number;
  bu: number;
  sp: number;
  rs: number;
  hs: number;
  p50: number;
  p99: number;
  er: number;
  deg: number;
  /** effective limits per minute (what acquire enforces) */
  erpm: number;
  etpm: number;
  /** limits the provider reported, per minute (-1 unknown) */
  rl: number;
  tl: number;
  /** traffic of the current ten-second bucket: the bucket, requests that went upstream, 429s (lua/includes/series.lua) */
  sb?: number;
  sn?: number;
  se?: number;
}

export type KeyState =
  | 'active'
  | 'cooling'
  | 'open'
  | 'half_open'
  | 'revoked'
  | 'disabled'
  | 'draining'
  | 'out_of_budget'
  | 'unknown';

/** One key as operators see it. Never the secret: id (fingerprint) and hint only. */
export interface KeyStatus {
  id: string;
  hint: string;
  name?: string;
  provider: string;
  baseURL: string;
  models: string[];
  state: KeyState;
  /** Judged degraded by health (p99 or error rate over the thresholds): gets less traffic. */
  degraded?: boolean;
  limits: {
    rpm: number;
    tpm: number;
    rpmBurst: number;
    tpmBurst: number;
    maxConcurrent: number;
    budgetUsd: number | null;
    budgetPeriod: string | null;
    weight: number;
    /** Window over which rpm is enforced (at most rpm x window / 60 in any rolling window); 0 = token bucket. */
    windowSeconds: number;
    /** Likewise for tpm. */
    tokenWindowSeconds: number;
    /** What the provider's x-ratelimit-limit-* headers count: the per-minute limit or the per-window one. */
    limitHeaders: 'minute' | 'window';
  };
  /**
   * What the pool enforces now, per minute: the configured limits, lowered by 429s, by the limits the
   * provider reports and by another application's use of the key, raised back additively while
   * answers stay clean; never above the configured ones (a key configured with 0 learns them). 0 = none.
   */
  effectiveLimits?: { rpm: number; tpm: number };
  /** The limits the provider's x-ratelimit-limit-* headers last reported, per minute; null until one did. */
  reportedLimits?: { rpm: number | null; tpm: number | null };
  /**
   * What is left now: requests and tokens in the enforcement window ending now (windowed keys) or in
   * the buckets, free slots, budget (null: no limit).
   */
  left?: { requests: number | null; tokens: number | null; slots: number | null; budgetUsd: number | null };
  /**
   * Enforcement windows (keys with a window or tokenWindow): a window's quota at the effective
   * limits, what was admitted in the one ending now, and requests reserved to start later (callers
   * sleeping until their turn). null: that dimension is not windowed.
   */
  windows?: {
    requests: { quota: number; admitted: number; reserved: number } | null;
    tokens: { quota: number; admitted: number } | null;
  };
  inFlight: number;
  spendUsd?: number;
  reservedUsd?: number;
  budgetPeriodEndsAt?: string | null;
  coolingUntil?: string | null;
  breaker?: { state: string; consecutiveFailures: number; opens: number; openUntil: string | null };
  latency?: { p50Ms: number; p99Ms: number };
  errorRate?: number;
  healthScore?: number;
}

export interface PoolStatus {
  pool: string;
  redis: { ok: boolean; policy: string; downSince?: string; lastError?: string };
  /** shared: limits enforced fleet-wide in Redis; local: per-process fallback; failing-closed: acquire throws. */
  mode: 'shared' | 'local' | 'failing-closed';
  version: number;
  leasesInFlight: number | null;
  /** Fleet-wide spend and requests since the pool was created, per model and per route. */
  spend?: { byModel: Record<string, SpendLine>; byRoute: Record<string, SpendLine> };
  /**
   * When the figures were read from Redis (Redis time) and how old they are: the fleet shares one
   * status per `status.snapshotMs` (absent when Redis could not be read).
   */
  snapshot?: { takenAt: string; ageMs: number };
  /**
   * Fleet-wide requests over the last 60 s and 15 min, per priority class and per tenant:
   * admitted at once, waited (admitted by a reservation), refused, and wait percentiles (from the
   * counters the scripts keep per second, lua/includes/series.lua). Absent when Redis could not be read.
   */
  traffic?: PoolTraffic;
  keys: KeyStatus[];
}

export interface SpendLine {
  usd: number;
  requests: number;
}

function spendOf(flat: string[]): NonNullable<PoolStatus['spend']> {
  const byModel: Record<string, SpendLine> = {};
  const byRoute: Record<string, SpendLine> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const [kind, ...rest] = flat[i]!.split(':');
    const name = rest.join(':');
    const v = Number(flat[i + 1]);
    const table = kind === 'm' || kind === 'mn' ? byModel : byRoute;
    const line = (table[name] ??= { usd: 0, requests: 0 });
    if (kind === 'm' || kind === 'r') line.usd = v / NANOS_PER_USD;
    else line.requests = v;
  }
  return { byModel, byRoute };
}

const iso = (ms: number) => (ms > 0 ? new Date(ms).toISOString() : null);

export function toPoolStatus(pool: string, redis: PoolStatus['redis'], raw: RawStatus): PoolStatus {
  const keys = raw.keys;
  return {
    pool,
    redis,
    mode: 'shared',
    version: raw.version,
    leasesInFlight: raw.leases,
    spend: spendOf(raw.spend),
    keys: keys
      .map(({ cfg, st, state, periodEnd, win }): KeyStatus => ({
        id: cfg.id,
        hint: cfg.hint,
        ...(cfg.name !== undefined ? { name: cfg.name } : {}),
        provider: cfg.provider,
        baseURL: cfg.baseURL,
        models: cfg.models,
        state,
        degraded: st.deg === 1,
        limits: limitsOf(cfg),
        effectiveLimits: { rpm: st.erpm, tpm: st.etpm },
        reportedLimits: { rpm: st.rl >= 0 ? Math.round(st.rl) : null, tpm: st.tl >= 0 ? Math.round(st.tl) : null },
        left: {
          // a windowed dimension ignores its bucket: what its window has room for is what is left
          requests: win && win.rq > 0 ? Math.max(0, win.rq - win.ru) : st.erpm > 0 ? Math.max(0, Math.floor(st.rt)) : null,
          tokens: win && win.tq > 0 ? Math.max(0, win.tq - win.tu) : st.etpm > 0 ? Math.max(0, Math.floor(st.tt)) : null,
          slots: cfg.mc > 0 ? Math.max(0, cfg.mc - st.inf) : null,
          budgetUsd: cfg.bud >= 0 ? Math.max(0, cfg.bud - st.sp - st.rs) / NANOS_PER_USD : null,
        },
        ...(win
          ? {
              windows: {
                requests: win.rq > 0 ? { quota: win.rq, admitted: win.ru, reserved: win.ra } : null,
                tokens: win.tq > 0 ? { quota: win.tq, admitted: win.tu } : null,
              },
            }
          : {}),
        inFlight: st.inf,
        spendUsd: st.sp / NANOS_PER_USD,
        reservedUsd: st.rs / NANOS_PER_USD,
        budgetPeriodEndsAt: cfg.bud >= 0 && periodEnd > 0 ? iso(periodEnd) : null,
        coolingUntil: st.cu > raw.now ? iso(st.cu) : null,
        breaker: { state: st.br, consecutiveFailures: st.bf, opens: st.bo, openUntil: st.br === 'open' ? iso(st.bu) : null },
        latency: { p50Ms: Math.round(st.p50), p99Ms: Math.round(st.p99) },
        errorRate: st.er,
        healthScore: st.hs,
      }))
      .sort((a, b) => (a.name ?? a.id).localeCompare(b.name ?? b.id)),
  };
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
