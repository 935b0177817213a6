import { randomBytes, randomUUID } from 'node:crypto';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import type { PoolConfig } from './config.js';
import { NO_RATE_LIMIT_HEADERS, type RateLimitHeaders } from './headers.js';
import { InvalidArgumentError, KeyNotFoundError, RequestTooLargeError, type KeyPoolError } from './errors.js';
import type { OutcomeClass } from './outcome.js';
import type { PoolKeys } from './pool-keys.js';
import type { KeyRecord, TokenRecord } from './records.js';
import { Packed, type ScriptArg, type ScriptName } from './scripts.js';
import type { RawKeyStatus, RawStatusHead, ScheduledJobStatus } from './status.js';

/**
 * The typed command layer: one function per Lua script. Each builds the script's KEYS and ARGV in
 * the order its header gives and parses its reply tuple into a typed object; no other module
 * knows a reply's shape. The plain reads that go with the scripts (a key's settings, the
 * topology version, the scheduler's records) are here too, parsed the same way.
 */

// ---- refusals: every reason a script says no, and what each means ------------------------------

/** Why acquire could not give a lease now. */
/** kept_free: the share a higher class keeps (pool config priority.keepFree), or a spread class's next start on every key not come yet (priority.spread); tenant_share: the tenant holds its weighted share of the class's reservations. */
/** A stored status snapshot that starts with this is base64 of its deflated JSON (one without: the JSON itself). */
const PACKED = 'z1:';

export type ExhaustedReason = 'rate_limited' | 'concurrency' | 'cooling' | 'circuit_open' | 'budget' | 'unavailable' | 'kept_free' | 'tenant_share';

/** Why a gateway token was refused (over_budget: the request's estimate exceeds the token's whole budget, so no wait helps). */
export type TokenRefusal = 'unknown' | 'revoked' | 'model_not_allowed' | 'rate_limited' | 'budget_exhausted' | 'over_budget' | 'priority_not_allowed';

/**
 * Every reason a script gives in a 0-reply, all scripts together (bullmq's enums/error-code.ts).
 * Most are results a caller hands on; those that end an operation become errors in
 * `refusalError`, and those worth a warning have their words in `REFUSAL_WARNINGS`.
 */
export type Refusal =
  | ExhaustedReason
  | TokenRefusal
  /** acquire: no key serving the model has a token bucket that can ever hold the request */
  | 'too_large'
  /** acquire: sampling stopped with candidates left unexamined; try again at once */
  | 'busy'
  /** release, setState, probe: the key's models (so its group) changed; call again with that group */
  | 'moved'
  /** setState, probe, tokenRevoke: no such key or token */
  | 'not_found'
  /** release, extend: the lease expired (the reaper charged its estimate) or was released before */
  | 'unknown_lease'
  /** release: the key was removed while the lease was out */
  | 'removed'
  /** upsertKey: the key changed since the caller read it */
  | 'conflict'
  /** tokenCreate: the token's hash or id is taken */
  | 'exists'
  /** tokenSettle: the token is gone */
  | 'unknown_token'
  /** tokenSettle: the reservation expired (its estimate was charged) or was settled before */
  | 'unknown_reservation';

type AcquireRefusal = Extract<Refusal, ExhaustedReason | 'too_large' | 'busy'>;

/** A refusal that ends an operation, with what its message names. */
export type Fault =
  | { reason: Extract<Refusal, 'not_found' | 'moved'>; keyId: string }
  | { reason: Extract<Refusal, 'too_large'>; model: string; tokens: number; maxTokens: number }
  | { reason: Extract<Refusal, 'conflict'>; keyId: string; doing: 'registered' | 'updated' }
  | { reason: Extract<Refusal, 'exists'> };

/** The error a refusal is when the operation cannot go on (bullmq's finished-errors.ts). */
export function refusalError(f: Fault): KeyPoolError {
  switch (f.reason) {
    case 'not_found':
    case 'moved': // still moving after the retries: the key is not where anyone can find it
      return new KeyNotFoundError(f.keyId);
    case 'too_large':
      return new RequestTooLargeError(f.model, f.tokens, f.maxTokens);
    case 'conflict':
      return new InvalidArgumentError(`key ${f.keyId} kept changing while being ${f.doing}; try again`);
    case 'exists':
      return new InvalidArgumentError('could not give the new token a unique id; try again');
  }
}

/** What is logged (warn) when a script answers with one of these: the caller goes on. */
export const REFUSAL_WARNINGS = {
  unknown_lease: 'released a lease that had already expired or been released',
  unknown_token: 'settled a request of a gateway token that no longer exists',
  unknown_reservation: 'settled a gateway token reservation that had expired (its estimate was charged) or was settled before',
} as const satisfies Partial<Record<Refusal, string>>;

// ---- how commands reach Redis ------------------------------------------------------------------

/**
 * Runs one script under the pool's Redis-down policy (RedisLink.script, or a test's stand-in).
 * `background`: nobody waits for the reply on a request's path (a release), so the command may
 * wait a moment to share a write with the next one (scripts.ts COALESCE_MS).
 */
export type ScriptRun = (name: ScriptName, keys: readonly string[] | Packed<string>, args: readonly ScriptArg[], background?: boolean) => Promise<unknown>;

/** What the key commands need of the Redis link. */
export interface CommandLink {
  script: ScriptRun;
  /** HGET under the Redis-down policy. */
  hget(key: string, field: string): Promise<string | null>;
  /** HGETALL straight to the client (as topology and the scheduler's status always read). */
  hgetall(key: string): Promise<Record<string, string>>;
  /** HSCAN straight to the client, like hgetall: [next cursor, field, value, field, value...]. */
  hscan(key: string, cursor: string, count: number): Promise<[string, string[]]>;
  /** Any other command under the Redis-down policy (GET, SET, DEL, PTTL, ZRANGEBYSCORE, PING). */
  call(command: string, args: (string | number)[]): Promise<unknown>;
}

/** Fields per HSCAN call (key records are ~300 bytes: ~30 KB a page). */
const SCAN_PAGE = 100;
/** Expired leases read per ZRANGEBYSCORE, and reaped per housekeepLeases call. */
const LEASE_PAGE = 1000;
const REAP_PAGE = 32;
/** What statusPage and housekeepKeys may run before they stop and say how far they got (us). */
const SCRIPT_BUDGET_US = 250;

// ---- replies -----------------------------------------------------------------------------------

/** A gateway token admitted in the same call as a key (acquire.lua with a token). */
export type AdmittedReply = Extract<AdmitReply, { ok: true }>;

/** What acquire.lua admits a gateway token with: the tokenAdmit-3.lua arguments. */
export interface AdmitArgs {
  /** sha256 hex of the token. */
  hash: string;
  /** Model or route the token asks for. */
  name: string;
  costNanos: number;
  /** The caller has not cached the token's settings: send them back. */
  wantSettings: boolean;
}

/** What release-11.lua settles a gateway token's admission with. */
export interface SettleArgs {
  id: string;
  /** '' = none held in Redis (admitted by this process while Redis was down). */
  reservation: string;
  /** -1: what the release charges the key. */
  costNanos: number;
  refund: boolean;
}

/** A settlement's result: '' settled (or nothing to settle), else why nothing was done. */
export type SettleResult = '' | Extract<Refusal, 'unknown_token' | 'unknown_reservation'>;

export type AcquireReply =
  | {
      ok: true;
      keyId: string;
      leaseId: string;
      deadline: number;
      /** Redis time of the grant, ms with a microsecond fraction. */
      at: number;
      version: number;
      probe: boolean;
      /** 0: start now; else a reservation: start the request this many ms after `at`. */
      startInMs: number;
      /** The gateway token admitted with the key, when one was given. */
      admitted?: AdmittedReply;
    }
  | { ok: false; reason: AcquireRefusal; retryAfterMs: number | null; version: number }
  /** The gateway token was refused: no key was looked at, nothing changed. */
  | { ok: false; reason: 'token_refused'; token: Extract<AdmitReply, { ok: false }> };

/** The key's models changed, so did its group: nothing was done; the sets are those of `group`. */
type Moved = { ok: false; reason: Extract<Refusal, 'moved'>; group: string };

export type ReleaseReply =
  | { ok: true; keyState: string; breaker: string; transition: string; at: number; settled: SettleResult }
  | { ok: false; reason: Extract<Refusal, 'unknown_lease' | 'removed'>; settled: SettleResult }
  | Moved;

export type ExtendReply = { ok: true; deadline: number } | { ok: false; reason: Extract<Refusal, 'unknown_lease'> };

export type UpsertReply = { ok: true; change: 'created' | 'updated' | 'unchanged'; epoch: string } | { ok: false; reason: Extract<Refusal, 'conflict'> };

/** The operator transitions of setState.lua. */
export type KeyAction = 'disable' | 'enable' | 'drain' | 'retire' | 'remove' | 'reset' | 'reset_budget' | 'unretire';

type Misplaced = { ok: false; reason: Extract<Refusal, 'not_found'> } | Moved;

export type SetStateReply = { ok: true; state: string; breaker: string; inFlight: number } | Misplaced;

export type ProbeReply = { ok: true; state: string; breaker: string; transition: string } | Misplaced;

export interface HousekeepKeysReply {
  /** How many of the ids the call got through (the caller goes on from there). */
  done: number;
  /** Keys whose budget period rolled over, with what the last period spent (nano-dollars). */
  periodsStarted: { keyId: string; spentNanos: number }[];
  healthWindowsCleared: number;
}

/** A scheduler job's record as the worker writes it (`sched` hash, JSON). */
export type ScheduleRecord = Omit<ScheduledJobStatus, 'name' | 'runs'>;

export type AdmitReply =
  | {
      ok: true;
      id: string;
      reservation: string;
      /** The token's settings, when asked for (the caller had none cached). */
      settings: TokenRecord | null;
      spentNanos: number;
      reservedNanos: number;
      /** End of the budget period (ms), -1 never. */
      periodEnd: number;
    }
  | { ok: false; reason: TokenRefusal; retryAfterMs: number | null; id: string | undefined };

export type SettleReply = { ok: true } | { ok: false; reason: Extract<Refusal, 'unknown_token' | 'unknown_reservation'> };

/** One token as tokenInfo and tokenCreate show it (lua/includes/tokens.lua, tokenView). */
export interface TokenView {
  rec: TokenRecord;
  /** Requests left in the bucket. */
  rt: number;
  /** Requests settled. */
  n: number;
  spentNanos: number;
  reservedNanos: number;
  /** Created, last used, revoked at (ms, 0 = never). */
  ca: number;
  lu: number;
  rv: number;
  /** Budget period end (ms), -1 never. */
  pend: number;
}

interface RawView {
  cfg: string;
  rt: number;
  n: number;
  sp: string;
  rs: string;
  ca: number;
  lu: number;
  rv: number;
  pend: number;
}

function viewOf(v: RawView): TokenView {
  return { rec: JSON.parse(v.cfg) as TokenRecord, rt: v.rt, n: v.n, spentNanos: Number(v.sp), reservedNanos: Number(v.rs), ca: v.ca, lu: v.lu, rv: v.rv, pend: v.pend };
}

const orNull = (ms: number) => (ms < 0 ? null : ms);
/** A send later than this after its admission (ms) moves its window entry at its release (window.lua WINDOW_SENT_LATE_MS). */
const SENT_LATE_MS = 5;
/** How long a sample of Redis's clock counts as the best (the highest) one: the clocks may move apart. */
const REDIS_CLOCK_SAMPLE_MS = 10_000;

/** An admission's reply fields, as tokenAdmit-3.lua and acquire.lua send them: id, reservation, settings JSON | '', spent, reserved, period end. */
type AdmittedTail = [string, string, string, number, number, number];

function admittedOf([id, reservation, raw, spentNanos, reservedNanos, periodEnd]: AdmittedTail): AdmittedReply {
  return { ok: true, id, reservation, settings: raw ? (JSON.parse(raw) as TokenRecord) : null, spentNanos, reservedNanos, periodEnd };
}

/**
 * Call a script that names the key's group again with the group it reports while the key moved
 * (its models changed meanwhile), at most 3 times; the last reply may still be 'moved'.
 */
async function following<R extends { ok: boolean }>(group: string, call: (group: string) => Promise<R | Moved>, onMove?: () => void): Promise<R | Moved> {
  for (let attempt = 0; ; attempt++) {
    const r = await call(group);
    if (r.ok || (r as Moved).reason !== 'moved' || attempt >= 3) return r;
    group = (r as Moved).group;
    onMove?.();
  }
}

/** KEYS of acquire for a model served by `groups` (sorted): built once per topology. */
export function acquireKeys(k: PoolKeys, groups: readonly string[]): string[] {
  return [k.cfg, k.st, k.leases, k.meta, k.win, k.tok, k.tokSt, k.tokRes, ...groups.flatMap((g) => [k.avail(g), k.wait(g)]), k.ser];
}

/** The candidate set and wait zset of each of `groups` (sorted), as the housekeeping scripts take them. */
function groupPairs(k: PoolKeys, groups: readonly string[]): string[] {
  return groups.flatMap((g) => [k.avail(g), k.wait(g)]);
}

// ---- the key scripts ---------------------------------------------------------------------------

/** The scripts and reads of the pool's keys and leases. */
export class PoolCommands {
  /** Breaker and health settings, in the order release and probe read them. */
  private readonly breakerHealth: number[];

  constructor(
    private readonly link: CommandLink,
    private readonly k: PoolKeys,
    private readonly config: Pick<PoolConfig, 'breaker' | 'health' | 'cooling' | 'leaseTimeoutMs' | 'concurrencyRecheckMs' | 'candidates' | 'limits' | 'reservationTimeoutMs' | 'priority' | 'redisDown'>,
  ) {
    const b = config.breaker;
    const h = config.health;
    this.breakerHealth = [
      b.failures, b.errorRate, b.minRequests, b.cooldownMs, b.maxCooldownMs,
      h.windowMs, h.degradedP99Ms, h.degradedErrorRate, h.minRequests, h.degradedScore,
    ];
    const pr = config.priority;
    this.fixed = {
      lease: new Packed([config.leaseTimeoutMs, config.concurrencyRecheckMs]),
      candidates: new Packed([config.candidates]),
      margin: new Packed([config.limits.windowMarginMs]),
      reservation: new Packed([config.reservationTimeoutMs]),
      noAdmit: new Packed(['', '', 0, 0, '0']),
      ahead: new Packed([pr.higherWaitedMs, pr.reserveAheadMs]),
      tenantWindow: new Packed([pr.tenantWindowMs]),
      spread: new Packed([pr.spread ? 1 : 0]),
      release: new Packed([...this.breakerHealth, config.cooling.defaultMs]),
      learn: new Packed([config.limits.learn ? 1 : 0]),
    };
  }

  /**
   * The runs of acquire's and release's ARGV that are the pool's settings, encoded for the wire
   * once (scripts.ts Packed): of their ~25 values a call converts only the dozen that change.
   */
  private readonly fixed: Record<'lease' | 'candidates' | 'margin' | 'reservation' | 'noAdmit' | 'ahead' | 'tenantWindow' | 'spread' | 'release' | 'learn', Packed>;
  /**
   * Redis's clock minus this process's (ms), from acquire and release answers; null: none yet. Each
   * answer gives a value at most the true one (its Redis time was read before the answer came
   * back), so the highest of the last REDIS_CLOCK_SAMPLE_MS is kept: an answer read late (a pause
   * of this process) does not pull it down.
   */
  private redisAheadMs: number | null = null;
  private redisAheadAt = 0;

  private sawRedisTime(redisMs: number): void {
    const now = Date.now();
    const ahead = redisMs - now;
    if (this.redisAheadMs === null || ahead > this.redisAheadMs || now - this.redisAheadAt > REDIS_CLOCK_SAMPLE_MS) {
      this.redisAheadMs = ahead;
      this.redisAheadAt = now;
    }
  }

  /**
   * A time of this process's real clock (Date.now()) on Redis's, or -1 (none given, or no answer
   * yet to learn the clock from): release's ARGV[30], sent-1.lua's ARGV[2]. It errs early by up to
   * a return trip, like the estimate it uses: a late send's entry moves a little less far than it
   * could (the margin covers the rest), never past the send.
   */
  private redisTimeOf(localMs: number | undefined): number {
    return localMs === undefined || this.redisAheadMs === null ? -1 : Math.floor(localMs + this.redisAheadMs);
  }

  /**
   * acquire's ARGV[26]: the Redis time after which this process no longer waits for the call (its
   * Redis timeout), or 0 before any answer. A call Redis runs later (it stalled with the call on the
   * socket) takes nothing: the lease, the token's request and reservation would be held by nobody
   * until their timeouts, and charged. The estimate of Redis's clock errs early (a call judged late
   * that was not is answered 'expired' and tried again at once), never late. The real clock, not
   * the pool's: it bounds a wait on the network, as the timeout does.
   */
  private validUntil(): number {
    return this.redisAheadMs === null ? 0 : Math.floor(Date.now() + this.redisAheadMs + this.config.redisDown.timeoutMs);
  }
  /** acquire's KEYS by the topology's arrays (one per model and group set), packed once. */
  private readonly acquireKeys = new WeakMap<readonly string[], Packed<string>>();
  /** release's KEYS by group, packed once. */
  private readonly releaseKeys = new Map<string, Packed<string>>();

  /** A key's settings as stored (`raw`, for upsertKey's check) and parsed; null when there is no such key. */
  async record(keyId: string): Promise<{ raw: string; rec: KeyRecord } | null> {
    const raw = await this.link.hget(this.k.cfg, keyId);
    return raw === null ? null : { raw, rec: JSON.parse(raw) as KeyRecord };
  }

  /**
   * Every key's settings, read with HSCAN in pages of SCAN_PAGE (no command grows with the pool).
   * A key present for the whole read is in it once; one added or removed meanwhile may or may not be.
   * `guarded`: under the Redis-down policy (a failure is a RedisUnavailableError, as for the
   * scripts: status reads so); else straight to the client, as topology reads.
   */
  async records(guarded = false): Promise<KeyRecord[]> {
    const out = new Map<string, KeyRecord>();
    const scan = (cursor: string) =>
      guarded ? (this.link.call('HSCAN', [this.k.cfg, cursor, 'COUNT', SCAN_PAGE]) as Promise<[string, string[]]>) : this.link.hscan(this.k.cfg, cursor, SCAN_PAGE);
    let cursor = '0';
    do {
      const [next, flat] = await scan(cursor);
      for (let i = 0; i + 1 < flat.length; i += 2) out.set(flat[i]!, JSON.parse(flat[i + 1]!) as KeyRecord);
      cursor = next;
    } while (cursor !== '0');
    return [...out.values()];
  }

  /** The topology version: bumped by every change of a key's settings or a key's removal. */
  async version(): Promise<number> {
    return Number((await this.link.hget(this.k.meta, 'v')) ?? 0);
  }

  /** The pool's epoch, set with its first key (a new one means Redis lost the pool). */
  epoch(): Promise<string | null> {
    return this.link.hget(this.k.meta, 'epoch');
  }

  /** The scheduler's jobs (as the workers last wrote them) and run counters. */
  async schedule(): Promise<{ jobs: [string, ScheduleRecord][]; runs: Record<string, string> }> {
    const [jobs, runs] = await Promise.all([this.link.hgetall(this.k.sched), this.link.hgetall(this.k.schedRuns)]);
    return { jobs: Object.entries(jobs).map(([name, raw]) => [name, JSON.parse(raw) as ScheduleRecord]), runs };
  }

  /**
   * acquire.lua: take a key for a request of `tokens` tokens costing `costNanos`, or reserve the
   * earliest admission within `maxWaitMs` (0: now or not at all); with `admit`, admit that gateway
   * token first, in the same call.
   */
  async acquire(scriptKeys: string[], tokens: number, costNanos: number, excluded: string, maxWaitMs: number, who: { priority: string; tenant: string; waitedMs?: number; uncounted?: boolean; weight?: number }, admit?: AdmitArgs): Promise<AcquireReply> {
    const f = this.fixed;
    const pr = this.config.priority;
    let keys = this.acquireKeys.get(scriptKeys);
    if (!keys) this.acquireKeys.set(scriptKeys, (keys = new Packed(scriptKeys)));
    // the order of acquire.lua's header; the Packed runs are the pool's settings
    const args: ScriptArg[] = [
      tokens, costNanos, f.lease, Math.random(), excluded, f.candidates, Math.floor(Math.random() * 2 ** 31), Math.max(0, Math.floor(maxWaitMs)), f.margin,
      ...(admit ? [admit.hash, admit.name, admit.costNanos, f.reservation, admit.wantSettings ? '1' : '0'] : [f.noAdmit]),
      who.priority, who.tenant, who.priority === 'critical' ? 0 : pr.keepFree[who.priority as 'low' | 'normal'], f.ahead, pr.weights[who.tenant] ?? who.weight ?? '', f.tenantWindow, who.waitedMs ?? 0, who.uncounted ? '1' : '0', f.spread,
      this.validUntil(), who.priority === 'critical' ? 0 : pr.headroom[who.priority as 'low' | 'normal'],
    ];
    const r = (await this.link.script('acquire', keys, args)) as
      | [1, string, string, number, number, number, number, number, number, ...AdmittedTail]
      | [0, AcquireRefusal, number, number]
      | [0, 'expired', number, number, number, number]
      | [2, TokenRefusal, number, string];
    if (r[0] === 2) return { ok: false, reason: 'token_refused', token: { ok: false, reason: r[1], retryAfterMs: orNull(r[2]), id: r[3] || undefined } };
    if (r[0] === 0) {
      if (r[1] !== 'expired') return { ok: false, reason: r[1], retryAfterMs: orNull(r[2]), version: r[3] };
      // our estimate of Redis's clock was off (the answer came in time): learn it, try again at once
      this.sawRedisTime(r[4]! + r[5]! / 1000);
      return { ok: false, reason: 'busy', retryAfterMs: 0, version: r[3] };
    }
    const reply: AcquireReply = { ok: true, keyId: r[1], leaseId: r[2], deadline: r[3], at: r[4] + r[5] / 1000, version: r[6], probe: r[7] === 1, startInMs: r[8] };
    this.sawRedisTime(reply.at);
    if (r.length > 9) reply.admitted = admittedOf(r.slice(9) as AdmittedTail);
    return reply;
  }

  /**
   * release-11.lua: give a lease back with its outcome (tokens, costNanos: -1 unknown, the estimate
   * stands; coolMs: -1 the default) and the provider's rate-limit headers (learning); with
   * `settle`, settle that gateway token's admission in the same call. Follows the key to its new
   * group; `onMove` hears of each move. `background`: nobody waits for the reply (the gateway's
   * releases), so it may share the next command's socket write (ScriptRunner, COALESCE_MS).
   */
  release(
    group: string,
    a: { leaseId: string; outcome: OutcomeClass; latencyMs: number; tokens: number; costNanos: number; coolMs: number; model: string; route: string; limits?: RateLimitHeaders; settle?: SettleArgs; sentAt?: number },
    onMove?: () => void,
    background = false,
  ): Promise<ReleaseReply> {
    const k = this.k;
    const h = a.limits ?? NO_RATE_LIMIT_HEADERS;
    const t = a.settle;
    return following(
      group,
      async (g) => {
        let keys = this.releaseKeys.get(g);
        if (!keys) this.releaseKeys.set(g, (keys = new Packed([k.cfg, k.st, k.leases, k.avail(g), k.wait(g), k.meta, k.spend, k.win, k.tokSt, k.tokRes, k.ser])));
        const r = (await this.link.script('release', keys, [
          a.leaseId, a.outcome, a.latencyMs, a.tokens, a.costNanos, a.coolMs, this.fixed.release, g, a.model, a.route,
          h.limitRequests, h.remainingRequests, h.limitTokens, h.remainingTokens, this.fixed.learn,
          t ? t.id : '', t ? t.reservation : '', t ? t.costNanos : -1, t?.refund ? '1' : '0', this.redisTimeOf(a.sentAt),
        ], background)) as [1, string, string, string, number, number, SettleResult] | [0, 'unknown_lease' | 'removed', SettleResult] | [0, 'moved', string];
        if (r[0] === 1) {
          const at = r[4] + r[5] / 1000;
          this.sawRedisTime(at);
          return { ok: true, keyState: r[1], breaker: r[2], transition: r[3], at, settled: r[6] };
        }
        return r[1] === 'moved' ? { ok: false, reason: 'moved', group: r[2] } : { ok: false, reason: r[1], settled: r[2] };
      },
      onMove,
    );
  }

  /**
   * sent-1.lua, in the background (nobody waits for it), for a request that left more than half
   * the window margin (and SENT_LATE_MS) after its admission `admittedAt` (Redis ms): its window
   * entry moves to its send at once, before the next window's admissions. A send less late is left
   * to the margin (and to its release, which moves it past SENT_LATE_MS): no call of its own, the
   * request path stays at two script calls. Nothing before the first answer (Redis's clock not
   * known yet); lost, the release moves it (ARGV[30]).
   */
  sentLate(leaseId: string, admittedAt: number, sentAt: number): void {
    const at = this.redisTimeOf(sentAt);
    if (at < 0 || at - admittedAt <= Math.max(SENT_LATE_MS, this.config.limits.windowMarginMs / 2)) return;
    this.link.script('sent', [this.k.win], [leaseId, at], true).catch(() => undefined);
  }

  /** extend-2.lua: a lease's deadline `ms` from now. */
  async extend(leaseId: string, ms: number): Promise<ExtendReply> {
    const r = (await this.link.script('extend', [this.k.leases, this.k.st], [leaseId, Math.ceil(ms)])) as [1, number] | [0];
    return r[0] === 1 ? { ok: true, deadline: r[1] } : { ok: false, reason: 'unknown_lease' };
  }

  /** upsertKey.lua: write `rec` if the stored settings are still `expected` ('' = none). */
  async upsertKey(rec: KeyRecord, expected: string): Promise<UpsertReply> {
    const k = this.k;
    const keys = [k.cfg, k.st, k.meta, k.avail(rec.g), k.wait(rec.g)];
    if (expected) {
      const old = JSON.parse(expected) as KeyRecord;
      if (old.g !== rec.g) keys.push(k.avail(old.g), k.wait(old.g));
    }
    const r = (await this.link.script('upsertKey', keys, [rec.id, JSON.stringify(rec), expected, randomUUID()])) as
      | [1, 'created' | 'updated' | 'unchanged', string]
      | [0, 'conflict'];
    return r[0] === 1 ? { ok: true, change: r[1], epoch: r[2] } : { ok: false, reason: r[1] };
  }

  /** setState-5.lua: an operator transition of one key, starting from the group the caller knows it by. */
  setState(keyId: string, action: KeyAction, group: string): Promise<SetStateReply> {
    const k = this.k;
    return following(group, async (g) => {
      const r = (await this.link.script('setState', [k.cfg, k.st, k.avail(g), k.wait(g), k.meta], [keyId, action, g])) as
        | [1, string, string, number]
        | [0, 'not_found']
        | [0, 'moved', string];
      if (r[0] === 1) return { ok: true, state: r[1], breaker: r[2], inFlight: r[3] };
      return r[1] === 'moved' ? { ok: false, reason: 'moved', group: r[2]! } : { ok: false, reason: r[1] };
    });
  }

  /** statusHead-3.lua: the pool-wide figures of status (Redis time, version, leases, spend). */
  async statusHead(): Promise<RawStatusHead> {
    const k = this.k;
    const raw = JSON.parse((await this.link.script('statusHead', [k.leases, k.meta, k.spend], [])) as string) as RawStatusHead;
    return { ...raw, spend: Array.isArray(raw.spend) ? raw.spend : [] };
  }

  /**
   * statusPage-3.lua: the first `done` of `ids` (at least one; the call stops after
   * SCRIPT_BUDGET_US), computed with acquire's rules; `keys`: those of them still in the pool.
   */
  async statusPage(ids: readonly string[]): Promise<{ done: number; keys: RawKeyStatus[] }> {
    const k = this.k;
    const raw = JSON.parse((await this.link.script('statusPage', [k.cfg, k.st, k.win], [SCRIPT_BUDGET_US, ...ids])) as string) as {
      done: number;
      keys: RawKeyStatus[] | Record<string, never>;
    };
    return { done: raw.done, keys: Array.isArray(raw.keys) ? raw.keys : [] };
  }

  /**
   * seriesRead-1.lua: the pool-wide traffic counters of the seconds from `first` to `last`, the
   * first `done` of them (at least one; the call stops after SCRIPT_BUDGET_US); rows only for
   * the seconds that hold counts (see the script's header).
   */
  async seriesRead(first: number, last: number): Promise<{ done: number; rows: (number | string)[][] }> {
    const raw = JSON.parse((await this.link.script('seriesRead', [this.k.ser], ['p', SCRIPT_BUDGET_US, first, last])) as string) as {
      done: number;
      rows: (number | string)[][] | Record<string, never>;
    };
    return { done: raw.done, rows: Array.isArray(raw.rows) ? raw.rows : [] };
  }

  /** Fields of the traffic counters' hash (the keys' finished ten-second buckets), HMGET: a caller passes a page of them. */
  async seriesFields(fields: readonly string[]): Promise<(string | null)[]> {
    return (await this.link.call('HMGET', [this.k.ser, ...fields])) as (string | null)[];
  }

  /**
   * Leases whose deadline is at or before `now` (their holder died; not reaped yet), by key: their
   * sequence numbers. Read in pages of LEASE_PAGE.
   */
  async expiredLeases(now: number): Promise<Map<string, number[]>> {
    const out = new Map<string, number[]>();
    for (let offset = 0; ; offset += LEASE_PAGE) {
      const page = (await this.link.call('ZRANGEBYSCORE', [this.k.leases, '-inf', Math.floor(now), 'LIMIT', offset, LEASE_PAGE])) as string[];
      for (const lease of page) {
        const [seq, id] = lease.split(':');
        if (id) out.set(id, [...(out.get(id) ?? []), Number(seq)]);
      }
      if (page.length < LEASE_PAGE) return out;
    }
  }

  /** probe-3.lua: a health probe's outcome (coolMs -1: the default cooling), starting from the group the caller knows. */
  probe(keyId: string, group: string, a: { outcome: OutcomeClass; latencyMs: number; coolMs: number }): Promise<ProbeReply> {
    const k = this.k;
    return following(group, async (g) => {
      const r = (await this.link.script(
        'probe',
        [k.st, k.avail(g), k.wait(g)],
        [keyId, a.outcome, a.latencyMs, g, ...this.breakerHealth, a.coolMs, this.config.cooling.defaultMs],
      )) as [1, string, string, string] | [0, 'not_found'] | [0, 'moved', string];
      if (r[0] === 1) return { ok: true, state: r[1], breaker: r[2], transition: r[3] };
      return r[1] === 'moved' ? { ok: false, reason: 'moved', group: r[2]! } : { ok: false, reason: r[1] };
    });
  }

  /** housekeepLeases.lua: give back up to REAP_PAGE expired leases; `more`: call again. */
  async housekeepLeases(groups: readonly string[]): Promise<{ reaped: number; more: boolean }> {
    const k = this.k;
    const keys = [k.cfg, k.st, k.leases, k.meta, ...groupPairs(k, groups)];
    const r = (await this.link.script('housekeepLeases', keys, [groups.join(','), REAP_PAGE])) as [number, number];
    return { reaped: r[0], more: r[1] === 1 };
  }

  /**
   * One HSCAN page of the traffic counters' per-key fields from `cursor`, and seriesSweep-2.lua on
   * it: the fields of keys no longer in the pool are deleted. Returns the next cursor ('0': done).
   */
  async sweepSeries(cursor: string): Promise<{ cursor: string; dropped: number }> {
    const [next, fields] = (await this.link.call('HSCAN', [this.k.ser, cursor, 'MATCH', 'k*', 'COUNT', 256])) as [string, string[]];
    const names = fields.filter((_, i) => i % 2 === 0);
    if (names.length === 0) return { cursor: next, dropped: 0 };
    const dropped = (await this.link.script('seriesSweep', [this.k.cfg, this.k.ser], names)) as number;
    return { cursor: next, dropped };
  }

  /**
   * housekeepKeys.lua: budget periods and stale health windows of the first `done` of `ids` (at
   * least one; the call stops after SCRIPT_BUDGET_US), whose groups are among `groups` (sorted).
   */
  async housekeepKeys(groups: readonly string[], ids: readonly string[]): Promise<HousekeepKeysReply> {
    const h = this.config.health;
    const r = (await this.link.script('housekeepKeys', [this.k.st, ...groupPairs(this.k, groups)], [
      groups.join(','), h.windowMs, h.degradedP99Ms, h.degradedErrorRate, h.minRequests, h.degradedScore, SCRIPT_BUDGET_US, ...ids,
    ])) as [string[] | Record<string, never>, number, number];
    const periodsStarted = (Array.isArray(r[0]) ? r[0] : []).map((line) => {
      const [keyId, nanos] = line.split(':') as [string, string];
      return { keyId, spentNanos: Number(nanos) };
    });
    return { periodsStarted, healthWindowsCleared: r[1], done: r[2] };
  }

  // ---- the status snapshot (plain commands: a string and its lock) ----

  /**
   * When the shared status snapshot was taken (Redis ms), the time to live it was stored with, how
   * long after it was taken it was stored (its computation: part of its age) and what is left of
   * its life (ms; -1 none), or null: there is none.
   */
  async snapshotStamp(): Promise<{ takenAt: number; ttl: number; offset: number; pttl: number } | null> {
    const [at, pttl] = await Promise.all([this.link.call('GET', [this.k.snapAt]), this.link.call('PTTL', [this.k.snapAt])]);
    if (typeof at !== 'string') return null;
    const [takenAt, ttl, offset] = at.split(':').map(Number) as [number, number, number | undefined];
    return { takenAt, ttl, offset: offset ?? 0, pttl: Number(pttl) };
  }

  /** The shared status snapshot (JSON), or null. */
  async snapshotRead(): Promise<string | null> {
    const raw = await this.link.call('GET', [this.k.snap]);
    if (typeof raw !== 'string') return null;
    return raw.startsWith(PACKED) ? inflateRawSync(Buffer.from(raw.slice(PACKED.length), 'base64')).toString('utf8') : raw;
  }

  /** Take the right to compute the next snapshot for `ms` (SET NX PX): its token, or null when another process has it. */
  async snapshotLock(ms: number): Promise<string | null> {
    const token = randomBytes(8).toString('hex');
    return (await this.link.call('SET', [this.k.snapLock, token, 'NX', 'PX', Math.ceil(ms)])) === 'OK' ? token : null;
  }

  /**
   * snapshotSave-3.lua: store a snapshot taken at `takenAt` (`offsetMs` before now) for `ttlMs`,
   * and free the lock, only while `token` still holds it; false: forgotten or taken meanwhile.
   */
  async snapshotWrite(token: string, raw: string, takenAt: number, offsetMs: number, ttlMs: number): Promise<boolean> {
    const ttl = Math.ceil(ttlMs);
    const k = this.k;
    // stored deflated: a 1,000-key snapshot is ~0.9 MB of JSON, and storing that many bytes held
    // Redis for milliseconds; deflated (the fastest level) it is about a tenth
    const packed = PACKED + deflateRawSync(raw, { level: 1 }).toString('base64');
    return (await this.link.script('snapshotSave', [k.snap, k.snapAt, k.snapLock], [token, packed, `${takenAt}:${ttl}:${Math.round(offsetMs)}`, ttl])) === 1;
  }

  /**
   * Give back the right to compute the snapshot, just taken (snapshotLock) and not used: a plain DEL,
   * as the caller holds the lock (it lives LOCK_MS, far longer than between the two calls).
   */
  async snapshotUnlock(): Promise<void> {
    await this.link.call('DEL', [this.k.snapLock]);
  }

  /** Forget the snapshot (a key changed: the next reader computes a new one). */
  async snapshotForget(): Promise<void> {
    await this.link.call('DEL', [this.k.snapAt, this.k.snap, this.k.snapLock]);
  }

  /** PING: Redis answers this process. */
  async ping(): Promise<void> {
    await this.link.call('PING', []);
  }
}

// ---- the token scripts -------------------------------------------------------------------------

/** The scripts of the gateway tokens. */
export class TokenCommands {
  constructor(
    private readonly run: ScriptRun,
    private readonly k: PoolKeys,
    private readonly config: Pick<PoolConfig, 'reservationTimeoutMs' | 'concurrencyRecheckMs'>,
  ) {}

  /** tokenAdmit-3.lua: one request of the token with sha256 `hash`, reserving `costNanos`. */
  async admit(hash: string, model: string, costNanos: number, wantSettings: boolean): Promise<AdmitReply> {
    const k = this.k;
    const r = (await this.run('tokenAdmit', [k.tok, k.tokSt, k.tokRes], [
      hash,
      model,
      costNanos,
      this.config.reservationTimeoutMs,
      this.config.concurrencyRecheckMs,
      wantSettings ? '1' : '0',
    ])) as [1, ...AdmittedTail] | [0, TokenRefusal, number, string];
    if (r[0] === 0) return { ok: false, reason: r[1], retryAfterMs: orNull(r[2]), id: r[3] || undefined };
    return admittedOf(r.slice(1) as AdmittedTail);
  }

  /** tokenSettle-2.lua: settle a request (reservation '' = none held in Redis). */
  async settle(id: string, reservation: string, costNanos: number, refund: boolean): Promise<SettleReply> {
    const r = (await this.run('tokenSettle', [this.k.tokSt, this.k.tokRes], [id, reservation, costNanos, refund ? '1' : '0'])) as
      | [1]
      | [0, 'unknown_token' | 'unknown_reservation'];
    return r[0] === 1 ? { ok: true } : { ok: false, reason: r[1] };
  }

  /** tokenCreate-3.lua: register a token by its hash. */
  async create(hash: string, rec: TokenRecord): Promise<{ ok: true; view: TokenView } | { ok: false; reason: Extract<Refusal, 'exists'> }> {
    const k = this.k;
    const r = (await this.run('tokenCreate', [k.tok, k.tokId, k.tokSt], [hash, rec.id, JSON.stringify(rec)])) as [1, string] | [0, 'exists'];
    return r[0] === 1 ? { ok: true, view: viewOf(JSON.parse(r[1]) as RawView) } : { ok: false, reason: r[1] };
  }

  /** tokenCount-1.lua: how many tokens the pool holds. */
  async count(): Promise<number> {
    return Number(await this.run('tokenCount', [this.k.tok], []));
  }

  /** tokenRevoke-1.lua. */
  async revoke(id: string): Promise<{ ok: true; revokedAt: number } | { ok: false; reason: Extract<Refusal, 'not_found'> }> {
    const r = (await this.run('tokenRevoke', [this.k.tokSt], [id])) as [1, number] | [0];
    return r[0] === 1 ? { ok: true, revokedAt: r[1] } : { ok: false, reason: 'not_found' };
  }

  /** tokenInfo-4.lua: one token by id ('' = every token), only if its hash is `hash` ('' = any). */
  async info(id: string, hash: string): Promise<TokenView[]> {
    const k = this.k;
    const raw = JSON.parse((await this.run('tokenInfo', [k.tok, k.tokId, k.tokSt, k.tokRes], [id, hash])) as string) as { tokens: RawView[] | Record<string, never> };
    return Array.isArray(raw.tokens) ? raw.tokens.map(viewOf) : [];
  }
}
