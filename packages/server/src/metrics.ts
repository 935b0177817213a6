import client from 'prom-client';
import type { KeyPool, KeyState, KeyStatus, PoolTraffic } from '@keypool/core';
import type { SecretSync } from '@keypool/secrets';
import type { QueueStatus } from './queue-status.js';

/**
 * Prometheus metrics of one gateway process (prom-client, a registry per gateway so that tests can
 * run several). Counters and histograms count what this process did; the key gauges are read
 * fleet-wide from Redis at scrape time. Labels carry key ids (fingerprints) and names, never a
 * secret.
 */
const STATES: KeyState[] = ['active', 'cooling', 'open', 'half_open', 'revoked', 'disabled', 'draining', 'out_of_budget', 'unknown'];
const LATENCY_BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
/** Client-side waits for a key (a reservation's sleep, retry sleeps), seconds. */
const WAIT_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
/** Distinct tenant labels this process gives its admission counter; later tenants count as '~'. */
const TENANT_LABELS = 50;
const OVERHEAD_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1];

/**
 * A counter's increments on the request path, kept as plain numbers under a key made of the label
 * values (label objects made once per series) and handed to prom-client when it collects, i.e. at
 * each read of the metric: prom-client's inc() sorts, hashes and checks the labels on every call,
 * a few times per request. Reads (a scrape, `metric.get()`) see every increment made before them.
 */
export class Tally<L extends string> {
  private readonly series = new Map<string, { labels: Partial<Record<L, string>>; n: number }>();

  constructor(private readonly names: readonly L[]) {}

  /** Add `n` to the series of these label values (in the order of `names`). */
  inc(n: number, a: string, b = '', c = '', d = ''): void {
    const key = a + '\u0000' + b + '\u0000' + c + '\u0000' + d;
    const s = this.series.get(key);
    if (s) s.n += n;
    else {
      const values = [a, b, c, d];
      const labels: Partial<Record<L, string>> = {};
      this.names.forEach((name, i) => (labels[name] = values[i]));
      this.series.set(key, { labels, n });
    }
  }

  /** Hand what was counted since the last flush to `counter`. */
  flush(counter: client.Counter<L>): void {
    for (const s of this.series.values()) {
      if (s.n === 0) continue;
      counter.inc(s.labels, s.n);
      s.n = 0;
    }
  }
}

/** What prom-client's Histogram keeps per series (15.x): read and written by {@link boundObserver}. */
interface HistogramSeries {
  labels: object;
  bucketValues: Record<number, number>;
  sum: number;
  count: number;
}

/**
 * A histogram child for the request path: `observe(v)` adds to the series' sum, count and bucket in
 * place. prom-client's own child (`labels(...).observe`) checks, sorts and hashes the labels on
 * every call, about 3 us each, four times per request. The first observation goes through
 * prom-client (which makes the series); later ones find it by reference, and again through
 * prom-client after a reset() replaced it. What a scrape reads is what prom-client's observe would
 * have made (metrics-tally.unit.test.ts compares the two); a value that is not a finite number is
 * dropped (prom-client would throw on the request path).
 */
export function boundObserver<L extends string>(histogram: client.Histogram<L>, labels: Partial<Record<L, string>>): { observe(v: number): void } {
  const h = histogram as unknown as { hashMap?: Record<string, HistogramSeries>; upperBounds?: number[]; enableExemplars?: boolean };
  // another prom-client than the one this was written against (15.x), or exemplars on: its own child
  if (typeof h.hashMap !== 'object' || h.hashMap === null || !Array.isArray(h.upperBounds) || h.enableExemplars) return histogram.labels(labels as client.LabelValues<L>);
  return inPlace(histogram, labels, h as { hashMap: Record<string, HistogramSeries>; upperBounds: number[] });
}

function inPlace<L extends string>(histogram: client.Histogram<L>, labels: Partial<Record<L, string>>, h: { hashMap: Record<string, HistogramSeries>; upperBounds: number[] }): { observe(v: number): void } {
  let key: string | undefined;
  let series: HistogramSeries | undefined;
  return {
    observe(v: number): void {
      if (!Number.isFinite(v)) return;
      if (series === undefined || h.hashMap[key!] !== series) {
        histogram.observe(labels as client.LabelValues<L>, v);
        key = Object.keys(h.hashMap).find((k) => h.hashMap[k]!.labels === labels);
        series = key === undefined ? undefined : h.hashMap[key];
        return;
      }
      series.sum += v;
      series.count += 1;
      const bounds = h.upperBounds;
      for (let i = 0; i < bounds.length; i++) {
        if (v <= bounds[i]!) {
          series.bucketValues[bounds[i]!]! += 1;
          break;
        }
      }
    },
  };
}

export class GatewayMetrics {
  readonly registry = new client.Registry();
  readonly requests: client.Counter<'endpoint' | 'route' | 'model' | 'status'>;
  readonly duration: client.Histogram<'endpoint'>;
  readonly overhead: client.Histogram<'endpoint'>;
  readonly upstream: client.Counter<'key_id' | 'key_name' | 'status'>;
  readonly tokens: client.Counter<'key_id' | 'model' | 'kind'>;
  readonly spend: client.Counter<'key_id' | 'model'>;
  readonly transitions: client.Counter<'key_id' | 'transition'>;
  readonly acquire: client.Histogram<'result'>;
  readonly redisErrors: client.Counter<'operation'>;
  readonly tokenRejections: client.Counter<'reason'>;
  readonly tokenStoreLost: client.Counter;
  readonly adminActions: client.Counter<'action'>;
  readonly inFlight: client.Gauge;
  /** The request path's increments of requests, upstream, tokens and spend (see Tally). */
  readonly counts = {
    requests: new Tally(['endpoint', 'route', 'model', 'status'] as const),
    upstream: new Tally(['key_id', 'key_name', 'status'] as const),
    tokens: new Tally(['key_id', 'model', 'kind'] as const),
    spend: new Tally(['key_id', 'model'] as const),
  };
  readonly admissions: client.Counter<'class' | 'tenant' | 'result'>;
  readonly admissionWait: client.Histogram<'class'>;
  private readonly tenantLabels = new Set<string>();
  private readonly collectFleet: () => Promise<void>;

  /** The per-key gauges of the last status read, as exposition text (see keyGauges). */
  private keyText: { takenAt: string | undefined; text: string } = { takenAt: undefined, text: '' };

  /** The exposition text: fleet-wide gauges read from Redis first, then every metric. */
  async scrape(): Promise<string> {
    await this.collectFleet();
    return `${await this.registry.metrics()}\n${this.keyText.text}`;
  }

  constructor(pool: KeyPool, inFlight: () => number, sync?: SecretSync, queueStatus?: () => Promise<QueueStatus | null>) {
    const registers = [this.registry];
    client.collectDefaultMetrics({ register: this.registry, prefix: 'keypool_process_' });
    this.requests = new client.Counter({ name: 'keypool_gateway_requests_total', help: 'Requests answered by the gateway, by endpoint, route (empty: a plain model), model asked for and HTTP status.', labelNames: ['endpoint', 'route', 'model', 'status'], registers, collect: () => this.counts.requests.flush(this.requests) });
    this.duration = new client.Histogram({ name: 'keypool_gateway_request_duration_seconds', help: 'Whole request time seen by the gateway (streams: until the last byte).', labelNames: ['endpoint'], buckets: LATENCY_BUCKETS, registers });
    this.overhead = new client.Histogram({ name: 'keypool_gateway_overhead_seconds', help: 'Time the gateway adds: request time minus the time spent in upstream attempts.', labelNames: ['endpoint'], buckets: OVERHEAD_BUCKETS, registers });
    this.upstream = new client.Counter({ name: 'keypool_upstream_responses_total', help: 'Upstream attempts by key and result (HTTP status, or timeout/network/aborted/broken_stream).', labelNames: ['key_id', 'key_name', 'status'], registers, collect: () => this.counts.upstream.flush(this.upstream) });
    this.tokens = new client.Counter({ name: 'keypool_tokens_total', help: 'Tokens reported by the provider, by key, model and kind (prompt, completion).', labelNames: ['key_id', 'model', 'kind'], registers, collect: () => this.counts.tokens.flush(this.tokens) });
    this.spend = new client.Counter({ name: 'keypool_spend_usd_total', help: 'Dollars spent through this gateway process, by key and model.', labelNames: ['key_id', 'model'], registers, collect: () => this.counts.spend.flush(this.spend) });
    this.transitions = new client.Counter({ name: 'keypool_key_transitions_total', help: 'Key state changes caused by this process (opened, reopened, closed, revoked, cooling, retired).', labelNames: ['key_id', 'transition'], registers });
    this.acquire = new client.Histogram({ name: 'keypool_acquire_duration_seconds', help: 'Time to get a key (or learn there is none), waiting included.', labelNames: ['result'], buckets: LATENCY_BUCKETS, registers });
    this.redisErrors = new client.Counter({ name: 'keypool_redis_errors_total', help: 'Redis failures by operation: pool (this process found Redis down), proxy (a request refused for want of Redis), status (a scrape could not read the key gauges).', labelNames: ['operation'], registers });
    this.tokenRejections = new client.Counter({ name: 'keypool_gateway_token_rejections_total', help: 'Requests refused because of the gateway token: unknown, revoked, model_not_allowed, priority_not_allowed, rate_limited, budget_exhausted, over_budget.', labelNames: ['reason'], registers });
    this.tokenStoreLost = new client.Counter({ name: 'keypool_token_store_lost_total', help: 'Times this process found Redis without the pool\'s gateway tokens (restarted empty or flushed): callers with admin-made tokens get 401 until new ones are made.', registers });
    this.adminActions = new client.Counter({ name: 'keypool_admin_actions_total', help: 'Admin API actions, by action.', labelNames: ['action'], registers });
    this.inFlight = new client.Gauge({ name: 'keypool_gateway_in_flight_requests', help: 'Requests this process is serving now.', registers, collect() {
      this.set(inFlight());
    } });

    // this process's acquires, by class and tenant (the fleet-wide counts: keypool_traffic_* below)
    const admissions = new Tally(['class', 'tenant', 'result'] as const);
    this.admissions = new client.Counter({ name: 'keypool_admissions_total', help: `Acquires of this process by priority class, tenant (at most ${TENANT_LABELS} named per process, then ~) and result: admitted (at once), waited (admitted after sleeping for a reservation or retries), refused.`, labelNames: ['class', 'tenant', 'result'], registers, collect: () => admissions.flush(this.admissions) });
    this.admissionWait = new client.Histogram({ name: 'keypool_admission_wait_seconds', help: "Time this process's admitted acquires slept waiting for a key (a reservation's start, retry sleeps; 0 when admitted at once), by priority class.", labelNames: ['class'], buckets: WAIT_BUCKETS, registers });
    const waits = { critical: boundObserver(this.admissionWait, { class: 'critical' }), normal: boundObserver(this.admissionWait, { class: 'normal' }), low: boundObserver(this.admissionWait, { class: 'low' }) };
    pool.on('admission', (e) => {
      let tenant = e.tenant;
      if (tenant && !this.tenantLabels.has(tenant)) {
        if (this.tenantLabels.size < TENANT_LABELS) this.tenantLabels.add(tenant);
        else tenant = '~';
      }
      admissions.inc(1, e.priority, tenant, e.result);
      if (e.result !== 'refused') waits[e.priority].observe(e.waitMs / 1000);
    });

    const redisErrors = this.redisErrors;
    // the scheduler (fleet-wide, as the workers recorded it in Redis)
    const schedLast = new client.Gauge({ name: 'keypool_scheduler_last_run_timestamp_seconds', help: 'When the last run of each scheduled job started (any worker).', labelNames: ['job'], registers });
    const schedOk = new client.Gauge({ name: 'keypool_scheduler_last_run_success', help: '1 when the last run of the job succeeded, 0 when it failed.', labelNames: ['job'], registers });
    const schedDur = new client.Gauge({ name: 'keypool_scheduler_last_run_duration_seconds', help: 'How long the last run of the job took.', labelNames: ['job'], registers });
    const schedNext = new client.Gauge({ name: 'keypool_scheduler_next_run_timestamp_seconds', help: 'When the next run of the job is due.', labelNames: ['job'], registers });
    const schedRuns = new client.Gauge({ name: 'keypool_scheduler_runs_total', help: 'Runs of each scheduled job across all workers, by outcome (completed, failed). A counter kept in Redis.', labelNames: ['job', 'outcome'], registers });
    const collectSchedule = async () => {
        for (const g of [schedRuns, schedLast, schedOk, schedDur, schedNext]) g.reset();
        try {
          for (const j of await pool.scheduleStatus()) {
            schedRuns.set({ job: j.name, outcome: 'completed' }, j.runs.completed);
            schedRuns.set({ job: j.name, outcome: 'failed' }, j.runs.failed);
            if (j.lastRun) {
              schedLast.set({ job: j.name }, Date.parse(j.lastRun.startedAt) / 1000);
              schedOk.set({ job: j.name }, j.lastRun.ok ? 1 : 0);
              schedDur.set({ job: j.name }, j.lastRun.durationMs / 1000);
            }
            if (j.nextRunAt) schedNext.set({ job: j.name }, Date.parse(j.nextRunAt) / 1000);
          }
        } catch {
          redisErrors.inc({ operation: 'status' });
        }
    };
    if (sync) {
      // this process's secret sources
      const refreshes = new client.Counter({ name: 'keypool_secret_refresh_total', help: 'Secret source loads by this process, by source and outcome (ok, or the failure code: unavailable, throttled, denied, not_found, invalid...). A failed refresh keeps the last good set.', labelNames: ['source', 'outcome'], registers });
      const lastOk = new client.Gauge({ name: 'keypool_secret_last_success_timestamp_seconds', help: 'When each source was last read successfully by this process.', labelNames: ['source'], registers });
      const keys = new client.Gauge({ name: 'keypool_secret_keys', help: 'Keys each source gives (its last good set).', labelNames: ['source'], registers });
      for (const l of sync.loaders) {
        const source = l.source.describe;
        l.on('refresh', (r) => {
          refreshes.inc({ source, outcome: r.ok ? 'ok' : r.error.code });
          if (r.ok) lastOk.set({ source }, Date.now() / 1000);
          if (r.set) keys.set({ source }, r.set.keys.length);
        });
        if (l.current) {
          lastOk.set({ source }, Date.now() / 1000);
          keys.set({ source }, l.current.keys.length);
        }
      }
    }

    // fleet-wide gauges, read from Redis when scraped (the key gauges: keyGauges below)
    const redisUp = new client.Gauge({ name: 'keypool_redis_up', help: '1 when this process reaches Redis, 0 when it does not (see the redisDown policy).', registers });
    const scrapeOk = new client.Gauge({ name: 'keypool_status_scrape_ok', help: '1 when the fleet-wide key gauges could be read from Redis at this scrape.', registers });
    // prom-client serialises every metric at once, so a collect() that awaits Redis would fill the
    // gauges after they were written out (a scrape late): the Redis reads happen before, in scrape()
    // the LLM job queue (fleet-wide, from Redis)
    const queueJobs = new client.Gauge({ name: 'keypool_queue_jobs', help: 'LLM queue jobs by state now (waiting, prioritized, delayed, active; completed and failed: those retained).', labelNames: ['state'], registers });
    const queueFinished = new client.Gauge({ name: 'keypool_queue_finished_total', help: 'LLM queue jobs finished across all workers, by outcome (completed, failed). A counter kept in Redis.', labelNames: ['outcome'], registers });
    const queueWait = new client.Gauge({ name: 'keypool_queue_wait_seconds_avg', help: 'Mean time from enqueue to the start of the attempt that succeeded.', registers });
    const queueRate = new client.Gauge({ name: 'keypool_queue_completed_last_minute', help: 'LLM queue jobs completed in the last whole minute (throughput).', registers });
    const collectQueue = async () => {
      for (const g of [queueJobs, queueFinished, queueWait, queueRate]) g.reset();
      const q = queueStatus ? await queueStatus() : null;
      if (!q) return;
      for (const [state, n] of Object.entries(q.counts)) queueJobs.set({ state }, n);
      queueFinished.set({ outcome: 'completed' }, q.completed);
      queueFinished.set({ outcome: 'failed' }, q.failed);
      if (q.avgWaitMs !== null) queueWait.set(q.avgWaitMs / 1000);
      queueRate.set(q.completedLastMinute);
    };
    this.collectFleet = async () => {
      await Promise.all([collectSchedule(), collectQueue()]);
      redisUp.set(pool.redisAvailable ? 1 : 0);
      try {
        const st = await pool.status();
        // one text per snapshot: scrapes within an interval (several Prometheus servers) reuse it
        if (st.snapshot?.takenAt !== this.keyText.takenAt || !st.snapshot) this.keyText = { takenAt: st.snapshot?.takenAt, text: keyGauges(st.keys) + trafficGauges(st.traffic) };
        scrapeOk.set(st.redis.ok ? 1 : 0);
      } catch {
        redisErrors.inc({ operation: 'status' });
        scrapeOk.set(0);
        this.keyText = { takenAt: undefined, text: keyGauges([]) + trafficGauges(undefined) };
      }
    };
  }
}

/** One gauge of the fleet's keys as Prometheus text: its HELP and TYPE, then a line per (labels, value). */
class GaugeText {
  private readonly lines: string[];

  constructor(
    private readonly name: string,
    help: string,
    private readonly labelNames: readonly string[],
  ) {
    this.lines = [`# HELP ${name} ${help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`, `# TYPE ${name} gauge`];
  }

  /** A sample; `labels` in the order of labelNames. */
  add(labels: readonly string[], v: number): void {
    const pairs = labels.map((l, i) => `${this.labelNames[i]}="${l.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
    this.lines.push(`${this.name}{${pairs.join(',')}} ${Number.isFinite(v) ? String(v) : v > 0 ? '+Inf' : v < 0 ? '-Inf' : 'NaN'}`);
  }

  toString(): string {
    return this.lines.join('\n') + '\n';
  }
}

/**
 * The per-key gauges of every key of the pool (fleet-wide, from the shared status), written as
 * exposition text directly: with 1,000 keys that is about 25,000 samples, which prom-client's
 * labelled gauges took 100 to 300 ms of this process's event loop to set and print at every
 * scrape (a stall of every request the gateway was serving); this takes a few ms.
 */
function keyGauges(keys: readonly KeyStatus[]): string {
  const kid = ['key_id', 'key_name'];
  const state = new GaugeText('keypool_key_state', 'One per key and state: 1 for the state the key is in (fleet-wide, from Redis).', [...kid, 'provider', 'state']);
  const inFlight = new GaugeText('keypool_key_in_flight', 'Leases held on the key across the fleet.', kid);
  const left = new GaugeText('keypool_key_remaining', 'What is left now in the key limits: requests, tokens, slots, budget_usd (absent: no limit).', [...kid, 'limit']);
  const rate = new GaugeText(
    'keypool_key_rate_limit',
    "Rate limits of the key per minute, by dimension (requests, tokens) and kind: configured (the key's settings), effective (what the pool enforces now, learnt from 429s and the provider's headers), reported (the provider's x-ratelimit-limit-* headers). Absent: no limit, or none reported yet.",
    [...kid, 'dimension', 'kind'],
  );
  const spend = new GaugeText('keypool_key_spend_usd', 'Spend of the key in its current budget period (fleet-wide).', kid);
  const latency = new GaugeText('keypool_key_latency_seconds', 'Rolling latency percentiles of the key (fleet-wide).', [...kid, 'quantile']);
  const errors = new GaugeText('keypool_key_error_rate', 'Rolling error rate of the key (fleet-wide).', kid);
  for (const k of keys) {
    const id = [k.id, k.name ?? ''];
    for (const s of STATES) state.add([...id, k.provider, s], k.state === s ? 1 : 0);
    inFlight.add(id, k.inFlight);
    if (k.left) {
      for (const [limit, v] of [['requests', k.left.requests], ['tokens', k.left.tokens], ['slots', k.left.slots], ['budget_usd', k.left.budgetUsd]] as const) {
        if (v !== null) left.add([...id, limit], v);
      }
    }
    const rates = [
      ['requests', 'configured', k.limits.rpm],
      ['tokens', 'configured', k.limits.tpm],
      ['requests', 'effective', k.effectiveLimits?.rpm],
      ['tokens', 'effective', k.effectiveLimits?.tpm],
      ['requests', 'reported', k.reportedLimits?.rpm],
      ['tokens', 'reported', k.reportedLimits?.tpm],
    ] as const;
    for (const [dimension, kind, v] of rates) if (v) rate.add([...id, dimension, kind], v);
    if (k.spendUsd !== undefined) spend.add(id, k.spendUsd);
    if (k.latency) {
      latency.add([...id, '0.5'], k.latency.p50Ms / 1000);
      latency.add([...id, '0.99'], k.latency.p99Ms / 1000);
    }
    if (k.errorRate !== undefined) errors.add(id, k.errorRate);
  }
  return [state, inFlight, left, rate, spend, latency, errors].join('\n');
}

/**
 * The fleet-wide traffic of the last minute and of the last 15 minutes, per priority class and
 * per tenant (the 20 busiest; the others summed as ~), from the counters the scripts keep in
 * Redis: gauges over a sliding window (the process counters above are the ones to rate()).
 */
function trafficGauges(t: PoolTraffic | undefined): string {
  const requests = new GaugeText('keypool_traffic_requests', 'Fleet-wide acquires over the window (60s, 15m) by priority class and result: admitted (at once), waited (admitted by a reservation), refused.', ['window', 'class', 'result']);
  const wait = new GaugeText('keypool_traffic_wait_seconds', 'Fleet-wide wait of admitted acquires over the window by priority class (reserved waits in Redis; 0 for those admitted at once): the upper bound of the histogram bucket holding the quantile.', ['window', 'class', 'quantile']);
  const tenants = new GaugeText('keypool_traffic_tenant_requests', 'Fleet-wide acquires over the window by tenant (the 20 busiest over 15 minutes; the others as ~) and result.', ['window', 'tenant', 'result']);
  const r429 = new GaugeText('keypool_traffic_upstream_429', 'Fleet-wide upstream 429 answers over the window.', ['window']);
  for (const [window, w] of t ? ([['60s', t.last60s], ['15m', t.last15m]] as const) : []) {
    r429.add([window], w.upstream429);
    for (const [cls, c] of Object.entries(w.byClass)) {
      requests.add([window, cls, 'admitted'], c.admitted);
      requests.add([window, cls, 'waited'], c.waited);
      requests.add([window, cls, 'refused'], c.refused);
      if (c.waitP50Ms !== null) wait.add([window, cls, '0.5'], c.waitP50Ms / 1000);
      if (c.waitP99Ms !== null) wait.add([window, cls, '0.99'], c.waitP99Ms / 1000);
    }
    for (const [tenant, c] of Object.entries(w.byTenant)) {
      tenants.add([window, tenant, 'admitted'], c.admitted);
      tenants.add([window, tenant, 'waited'], c.waited);
      tenants.add([window, tenant, 'refused'], c.refused);
    }
  }
  return '\n' + [requests, wait, tenants, r429].join('\n');
}
