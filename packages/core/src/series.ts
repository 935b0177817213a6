import type { PoolCommands } from './commands.js';
import { PRIORITY_CLASSES, type PriorityClass } from './lease.js';

/**
 * The traffic counters the scripts keep per second (lua/includes/series.lua), read back in small
 * steps (seriesRead-1.lua) and summed into what status, metrics and the dashboard show. The
 * process that computes the shared status reads them (only the seconds it has not read yet: a
 * past second no longer changes) and the fleet shares the result with the status snapshot.
 */

/** Upper bounds (ms) of the reserved-wait buckets, as lua/includes/series.lua counts them. */
export const WAIT_BOUNDS_MS: readonly number[] = [10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000];
/** Seconds the scripts keep per second (960) and ten-second buckets per key (96): what can be read. */
export const SERIES_SECONDS = 900;
/** Seconds in a per-key bucket. */
export const KEY_STEP_SECONDS = 10;
/** Tenants listed in status (by requests over 15 minutes; the others are summed under '~'). */
export const STATUS_TENANTS = 20;
/** Keys charted (by requests over 15 minutes). */
export const CHART_KEYS = 8;
/** The ring of ten-second buckets per key in Redis (lua/includes/series.lua SER_KSLOTS). */
const KEY_SLOTS = 96;
/** Fields per HMGET of the keys' buckets. */
const HMGET_PAGE = 256;

/** One class's counts in a window, and its wait percentiles (reserved waits in Redis; an admission now is a wait of 0). */
export interface ClassTraffic {
  /** Admitted at once. */
  admitted: number;
  /** Admitted by a reservation: started later (waited in the fleet-wide order). */
  waited: number;
  /** Refused: no key now nor within the caller's wait, or the gateway token refused. */
  refused: number;
  /** Percentiles of the wait of every admission (0 for those admitted at once), ms: the upper bound of the bucket they fall in; null: no admission. */
  waitP50Ms: number | null;
  waitP99Ms: number | null;
  /** Mean reserved wait of the waited ones, ms (null: none waited). */
  meanWaitMs: number | null;
}

export interface TenantTraffic {
  admitted: number;
  waited: number;
  refused: number;
  /** Mean reserved wait of its waited requests, ms (null: none waited). */
  meanWaitMs: number | null;
}

/** Traffic over the last `seconds` seconds, fleet-wide (from Redis). */
export interface TrafficWindow {
  seconds: number;
  /** Admitted (at once or after a reservation). */
  requests: number;
  refused: number;
  /** Upstream 429s reported on release. */
  upstream429: number;
  byClass: Record<PriorityClass, ClassTraffic>;
  /** The STATUS_TENANTS tenants with the most requests over 15 minutes; the others summed under '~'. */
  byTenant: Record<string, TenantTraffic>;
}

export interface PoolTraffic {
  last60s: TrafficWindow;
  last15m: TrafficWindow;
}

/** One value per second from `from` (Unix s), oldest first; the keys one per ten-second bucket. */
export interface PoolSeries {
  /** First second (Unix s) of every per-second array. */
  from: number;
  /** Points per array. */
  points: number;
  requests: number[];
  refused: number[];
  upstream429: number[];
  byClass: Record<PriorityClass, { admitted: number[]; waited: number[]; refused: number[]; waitP99Ms: (number | null)[] }>;
  keys: {
    /** First second of the first bucket; each point counts KEY_STEP_SECONDS seconds. */
    from: number;
    stepSeconds: number;
    points: number;
    /** The CHART_KEYS keys with the most requests (requests released after going upstream, and 429s among them). */
    top: { id: string; label: string; requests: number[]; upstream429: number[] }[];
  };
}

interface ClassRow {
  a: number;
  w: number;
  r: number;
  ms: number;
  /** waited per bucket (WAIT_BOUNDS_MS.length + 1) */
  h: number[];
}

interface SecondRow {
  r429: number;
  cls: Record<PriorityClass, ClassRow>;
  tenants: Map<string, { a: number; w: number; r: number; ms: number }>;
}

const NB = WAIT_BOUNDS_MS.length + 1;

function parseSecond(row: (number | string)[]): [number, SecondRow] {
  let i = 1;
  const next = () => Number(row[i++]);
  const r429 = next();
  const cls = {} as Record<PriorityClass, ClassRow>;
  for (const c of PRIORITY_CLASSES) {
    const a = next();
    const w = next();
    const r = next();
    const ms = next();
    const h: number[] = [];
    for (let b = 0; b < NB; b++) h.push(next());
    cls[c] = { a, w, r, ms, h };
  }
  const tenants = new Map<string, { a: number; w: number; r: number; ms: number }>();
  while (i < row.length) {
    const name = String(row[i++]);
    tenants.set(name, { a: next(), w: next(), r: next(), ms: next() });
  }
  return [Number(row[0]), { r429, cls, tenants }];
}

/** A percentile of waits: `zeros` at 0 ms, `h[b]` in bucket b (upper bound WAIT_BOUNDS_MS[b]; the last one beyond the last bound). */
export function waitPercentile(zeros: number, h: readonly number[], q: number): number | null {
  const total = zeros + h.reduce((s, x) => s + x, 0);
  if (total === 0) return null;
  const rank = Math.ceil(q * total);
  if (rank <= zeros) return 0;
  let seen = zeros;
  for (let b = 0; b < h.length; b++) {
    seen += h[b]!;
    if (seen >= rank) return WAIT_BOUNDS_MS[Math.min(b, WAIT_BOUNDS_MS.length - 1)]!;
  }
  return WAIT_BOUNDS_MS[WAIT_BOUNDS_MS.length - 1]!;
}

const emptyClass = (): ClassRow => ({ a: 0, w: 0, r: 0, ms: 0, h: new Array<number>(NB).fill(0) });

/** Reads the counters incrementally and keeps the seconds and buckets of the last 15 minutes. */
export class SeriesReader {
  private readonly secs = new Map<number, SecondRow>();
  private readonly buckets = new Map<number, Map<string, { n: number; e: number }>>();
  /** Seconds (buckets) before these were read after they ended: final. */
  private secsFinal = 0;
  private bucketsFinal = 0;

  constructor(private readonly cmd: PoolCommands) {}

  /**
   * Read what is new up to `nowMs` (Redis time), in small steps, and drop what is older than 15
   * minutes. `keys`: the pool's keys as statusPage read them just before (the current ten-second
   * bucket of each is in its state; the finished ones are fields read HMGET_PAGE at a time).
   */
  async refresh(nowMs: number, keys: readonly { id: string; st: { sb?: number; sn?: number; se?: number } }[]): Promise<void> {
    const nowSec = Math.floor(nowMs / 1000);
    const firstSec = Math.max(this.secsFinal, nowSec - SERIES_SECONDS + 1);
    for (let at = firstSec; at <= nowSec; ) {
      const r = await this.cmd.seriesRead(at, nowSec);
      const seen = new Set<number>();
      for (const row of r.rows) {
        const [sec, data] = parseSecond(row);
        this.secs.set(sec, data);
        seen.add(sec);
      }
      // a second with no row has no counts (or they were overwritten)
      for (let s = at; s < at + r.done; s++) if (!seen.has(s)) this.secs.delete(s);
      at += Math.max(1, r.done);
    }
    this.secsFinal = nowSec;

    // per key: the finished buckets not read yet, from the ring of fields; the last one read here
    // may have been finished after it was read: read again (a bucket still in a key's state is that key's latest)
    const nowB = Math.floor(nowSec / KEY_STEP_SECONDS);
    const points = SERIES_SECONDS / KEY_STEP_SECONDS;
    const firstB = Math.max(this.bucketsFinal, nowB - points + 1);
    const wanted: { b: number; id: string; field: string }[] = [];
    for (let b = firstB; b < nowB; b++) {
      for (const k of keys) if (k.st.sb !== b) wanted.push({ b, id: k.id, field: `k${b % KEY_SLOTS}:${k.id}` });
    }
    for (let b = firstB; b <= nowB; b++) this.buckets.set(b, new Map());
    for (let i = 0; i < wanted.length; i += HMGET_PAGE) {
      const page = wanted.slice(i, i + HMGET_PAGE);
      const values = await this.cmd.seriesFields(page.map((w) => w.field));
      page.forEach((w, j) => {
        const v = values[j];
        if (!v) return;
        const [b, n, e] = v.split(':').map(Number) as [number, number, number];
        if (b === w.b && n > 0) this.buckets.get(b)!.set(w.id, { n, e });
      });
    }
    for (const k of keys) {
      const { sb, sn, se } = k.st;
      if (sb !== undefined && sb >= firstB && sb <= nowB && (sn ?? 0) > 0) this.buckets.get(sb)?.set(k.id, { n: sn ?? 0, e: se ?? 0 });
    }
    // the current bucket is read again next time
    this.bucketsFinal = nowB;
    for (const s of this.secs.keys()) if (s <= nowSec - SERIES_SECONDS) this.secs.delete(s);
    for (const b of this.buckets.keys()) if (b <= nowB - points) this.buckets.delete(b);
  }

  /** Totals over the last 60 s and 15 min ending at `nowMs`. */
  traffic(nowMs: number): PoolTraffic {
    const nowSec = Math.floor(nowMs / 1000);
    // tenants listed: the most requests over 15 minutes
    const totals = new Map<string, number>();
    for (const row of this.secs.values()) for (const [t, v] of row.tenants) totals.set(t, (totals.get(t) ?? 0) + v.a + v.w + v.r);
    const listed = new Set([...totals.entries()].filter(([t]) => t !== '~').sort((a, b) => b[1] - a[1]).slice(0, STATUS_TENANTS).map(([t]) => t));
    return { last60s: this.window(nowSec, 60, listed), last15m: this.window(nowSec, SERIES_SECONDS, listed) };
  }

  private window(nowSec: number, seconds: number, listed: Set<string>): TrafficWindow {
    const cls = Object.fromEntries(PRIORITY_CLASSES.map((c) => [c, emptyClass()])) as Record<PriorityClass, ClassRow>;
    const tenants = new Map<string, { a: number; w: number; r: number; ms: number }>();
    let r429 = 0;
    for (let s = nowSec - seconds + 1; s <= nowSec; s++) {
      const row = this.secs.get(s);
      if (!row) continue;
      r429 += row.r429;
      for (const c of PRIORITY_CLASSES) {
        const x = row.cls[c];
        const y = cls[c];
        y.a += x.a;
        y.w += x.w;
        y.r += x.r;
        y.ms += x.ms;
        x.h.forEach((v, b) => (y.h[b]! += v));
      }
      for (const [t, v] of row.tenants) {
        const name = listed.has(t) ? t : '~';
        const y = tenants.get(name) ?? { a: 0, w: 0, r: 0, ms: 0 };
        y.a += v.a;
        y.w += v.w;
        y.r += v.r;
        y.ms += v.ms;
        tenants.set(name, y);
      }
    }
    const byClass = {} as Record<PriorityClass, ClassTraffic>;
    let requests = 0;
    let refused = 0;
    for (const c of PRIORITY_CLASSES) {
      const y = cls[c];
      requests += y.a + y.w;
      refused += y.r;
      byClass[c] = {
        admitted: y.a,
        waited: y.w,
        refused: y.r,
        waitP50Ms: waitPercentile(y.a, y.h, 0.5),
        waitP99Ms: waitPercentile(y.a, y.h, 0.99),
        meanWaitMs: y.w > 0 ? Math.round(y.ms / y.w) : null,
      };
    }
    const byTenant: Record<string, TenantTraffic> = {};
    for (const [t, y] of [...tenants.entries()].sort((a, b) => a[0].localeCompare(b[0]))) {
      byTenant[t] = { admitted: y.a, waited: y.w, refused: y.r, meanWaitMs: y.w > 0 ? Math.round(y.ms / y.w) : null };
    }
    return { seconds, requests, refused, upstream429: r429, byClass, byTenant };
  }

  /** The per-second arrays of the last 15 minutes ending at `nowMs`; `label` names a key for the charts. */
  series(nowMs: number, label: (id: string) => string): PoolSeries {
    const nowSec = Math.floor(nowMs / 1000);
    const from = nowSec - SERIES_SECONDS + 1;
    const zeros = () => new Array<number>(SERIES_SECONDS).fill(0);
    const out: PoolSeries = {
      from,
      points: SERIES_SECONDS,
      requests: zeros(),
      refused: zeros(),
      upstream429: zeros(),
      byClass: Object.fromEntries(PRIORITY_CLASSES.map((c) => [c, { admitted: zeros(), waited: zeros(), refused: zeros(), waitP99Ms: new Array<number | null>(SERIES_SECONDS).fill(null) }])) as PoolSeries['byClass'],
      keys: { from: 0, stepSeconds: KEY_STEP_SECONDS, points: SERIES_SECONDS / KEY_STEP_SECONDS, top: [] },
    };
    for (let i = 0; i < SERIES_SECONDS; i++) {
      const row = this.secs.get(from + i);
      if (!row) continue;
      out.upstream429[i] = row.r429;
      for (const c of PRIORITY_CLASSES) {
        const x = row.cls[c];
        const y = out.byClass[c];
        y.admitted[i] = x.a;
        y.waited[i] = x.w;
        y.refused[i] = x.r;
        y.waitP99Ms[i] = waitPercentile(x.a, x.h, 0.99);
        out.requests[i]! += x.a + x.w;
        out.refused[i]! += x.r;
      }
    }
    const nowB = Math.floor(nowSec / KEY_STEP_SECONDS);
    const fromB = nowB - out.keys.points + 1;
    out.keys.from = fromB * KEY_STEP_SECONDS;
    const perKey = new Map<string, number>();
    for (const keys of this.buckets.values()) for (const [id, v] of keys) perKey.set(id, (perKey.get(id) ?? 0) + v.n);
    const top = [...perKey.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).slice(0, CHART_KEYS);
    out.keys.top = top.map(([id]) => {
      const requests = new Array<number>(out.keys.points).fill(0);
      const upstream429 = new Array<number>(out.keys.points).fill(0);
      for (let i = 0; i < out.keys.points; i++) {
        const v = this.buckets.get(fromB + i)?.get(id);
        if (v) {
          requests[i] = v.n;
          upstream429[i] = v.e;
        }
      }
      return { id, label: id === '~' ? '(others)' : label(id), requests, upstream429 };
    });
    return out;
  }
}

/** The points of `s` from second `sinceSec` on (Unix s; the keys from the bucket holding it). */
export function sliceSeries(s: PoolSeries, sinceSec: number): PoolSeries {
  const i = Math.min(s.points, Math.max(0, Math.floor(sinceSec) - s.from));
  const j = Math.min(s.keys.points, Math.max(0, Math.floor((Math.floor(sinceSec) - s.keys.from) / s.keys.stepSeconds)));
  const cut = <T>(a: T[]) => a.slice(i);
  const kcut = <T>(a: T[]) => a.slice(j);
  return {
    from: s.from + i,
    points: s.points - i,
    requests: cut(s.requests),
    refused: cut(s.refused),
    upstream429: cut(s.upstream429),
    byClass: Object.fromEntries(
      Object.entries(s.byClass).map(([c, v]) => [c, { admitted: cut(v.admitted), waited: cut(v.waited), refused: cut(v.refused), waitP99Ms: cut(v.waitP99Ms) }]),
    ) as PoolSeries['byClass'],
    keys: {
      from: s.keys.from + j * s.keys.stepSeconds,
      stepSeconds: s.keys.stepSeconds,
      points: s.keys.points - j,
      top: s.keys.top.map((k) => ({ ...k, requests: kcut(k.requests), upstream429: kcut(k.upstream429) })),
    },
  };
}
