/**
 * keypool against a provider that enforces its limits as providers document (quantized rolling
 * 1 s windows: Azure OpenAI, OpenAI's "60,000 RPM may be enforced as 1,000/s"), beside a naive
 * round-robin proxy and the ideal first-come-first-served pacer, on the same arrival times.
 *
 *   npm run bench:realistic                          readable report on stdout, progress on stderr
 *   npm run -s bench:realistic -- --json             exactly one JSON object on stdout
 *   npm run bench:realistic -- --seconds 20 --scenarios load55 --processes 2     a short check
 *
 * Per scenario (one at a time; every process is a child of this one, stopped with it):
 *   - redis-server, spawned once on a free port for the whole run (a pool per scenario);
 *   - the fake upstream (scripts/bench/gateway/child.ts fake): --keys keys for keypool and as many
 *     for the naive proxy, each allowing --provider-rpm in `window-1s` mode (at most rpm/60 in any
 *     rolling second), answering in --latency-ms; in the `shared` scenarios only 70% of the rpm
 *     keypool is configured with (--shared-cut: another application uses the rest of the key);
 *   - --processes keypool gateways (gateway/child.ts gateway, `serve()`), on one Redis, each key
 *     configured as the provider is (provider azure: a 1 s window, limit headers per window) at
 *     --configured-share (90%) of the provider's rpm, everything else default;
 *   - a naive proxy (gateway/child.ts bare): each request forwarded with the next key in turn, no
 *     retries, no pool;
 *   - callers in this process: the official `openai` SDK, maxRetries 0, a deadline of --deadline-ms
 *     per request (a timeout is a client failure); the gateways are taken in turn. A warm-up
 *     request through each gateway and each naive key, then a window's pause, before counting.
 * Arrivals: Poisson (seeded, --seed) for --seconds at 55% (`load55`, `shared`) or 85% (`load85`)
 * of what the provider allows (keys x floor(rpm / 60) a second); each arrival sends one request
 * through keypool and one through the naive proxy at the same moment. Latency is from the scheduled
 * arrival to the end of the answer (no coordinated omission), over the requests that succeeded.
 * upstream429Share: 429s over requests the fake upstream saw on that side's keys (the shared
 * scenarios also count from 10 s on, once a pool that learns has had time to). The ideal pacer
 * (./realistic/ideal.ts) is a simulation over the same arrivals and the provider's real windows;
 * idealAsConfigured the same over the limits keypool enforces (its rpm, or the provider's when
 * lower, over 1 s + the window margin): the least waiting keypool's own configuration allows.
 * keypool.gateways says where keypool's time went: acquire (its sleep until a reservation's start
 * included), acquire script runs per request, the share of reservations, how late a lease reached
 * the sending code after its start (what the window margin must cover); effectiveRpmAtEnd what
 * learning left each key at.
 *
 * Targets (issue 12): keypool clientFailures 0; upstream429Share <= 0.002 (<= 0.01 after 10 s when
 * shared); p99 <= 1.5 x ideal p99 + 50 ms; at 55% load p99 <= the provider's latency + 50 ms.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import OpenAI from 'openai';
import type { FakeKeyCounters } from '@keypool/testkit/fake-openai';
import { int, num, oneOf, parseBenchArgs, subset } from './cli.js';
import type { GatewayChildStats } from './gateway/child.js';
import type { Ready } from './gateway/options.js';
import { BenchChild, children } from './lib/child-ipc.js';
import { atTimes, poissonArrivals } from './lib/load.js';
import { adminClient, openRedis, redisDelta, sampleRedis } from './lib/redis.js';
import { fmt, logger, machine, printResult, table } from './lib/report.js';
import { dist, round } from './lib/stats.js';
import { idealLatencies } from './realistic/ideal.js';

const USAGE = `Usage: tsx scripts/bench/realistic.ts [options]   (npm run bench:realistic -- [options])
  --json                 print one JSON object on stdout (progress goes to stderr)
  --seconds N            arrivals for N seconds per scenario (default 60)
  --scenarios LIST       load55, load85, shared (default all three)
  --processes LIST       gateway processes, each scenario once per count (default 2,4)
  --keys N               provider keys (default 3)
  --provider-rpm N       what the provider allows per key (default 600: 10 in any rolling second)
  --configured-share X   keypool's rpm per key as a share of the provider's (default 0.9)
  --shared-cut X         shared scenarios: the provider allows this much less than configured (default 0.3)
  --latency-ms N         the provider's latency (default 20)
  --deadline-ms N        a caller gives up after this long: a client failure (default 30000)
  --seed N               seed of the arrivals (default 12)
  --learn on|off         keypool learns limits from the provider's headers and 429s (default on, keypool's default)
  --margin-ms N          keypool's limits.windowMarginMs (default 20, keypool's default)
  --trace FILE           write every request (arrival, latency or failure, key) of every scenario to FILE (JSON)
  -h, --help             this text`;

const log = logger('bench:realistic');
const CHILD = fileURLToPath(new URL('./gateway/child.ts', import.meta.url));
const MODEL = 'gpt-4o-mini';
const WINDOW_MS = 1000;
/**
 * The provider as the fake enforces it (`window-1s`): Azure's way, at most rpm / 60 in any rolling
 * second and that per-second figure in x-ratelimit-limit-requests. Provider azure means window 1 s
 * and limitHeaders 'window'; the rest is keypool's defaults.
 */
const KEY_SETTINGS = { provider: 'azure' } as const;
const SCENARIOS = ['load55', 'load85', 'shared'] as const;
type Kind = (typeof SCENARIOS)[number];
const LOAD: Record<Kind, number> = { load55: 0.55, load85: 0.85, shared: 0.55 };

function options() {
  const v = parseBenchArgs(USAGE, {
    seconds: '60',
    scenarios: SCENARIOS.join(','),
    processes: '2,4',
    keys: '3',
    'provider-rpm': '600',
    'configured-share': '0.9',
    'shared-cut': '0.3',
    'latency-ms': '20',
    'deadline-ms': '30000',
    seed: '12',
    trace: null,
    learn: 'on',
    'margin-ms': '20',
  });
  return {
    json: v.json,
    seconds: num('seconds', v.seconds, 1, 3600),
    scenarios: [...subset('scenarios', v.scenarios, SCENARIOS)],
    processes: v.processes.split(',').map((p) => int('processes', p.trim(), 1, 16)),
    keys: int('keys', v.keys, 1, 100),
    providerRpm: int('provider-rpm', v['provider-rpm'], 60),
    configuredShare: num('configured-share', v['configured-share'], 0.01, 1),
    sharedCut: num('shared-cut', v['shared-cut'], 0, 0.99),
    latencyMs: int('latency-ms', v['latency-ms'], 0),
    deadlineMs: int('deadline-ms', v['deadline-ms'], 100),
    seed: int('seed', v.seed, 0),
    trace: v.trace,
    learn: oneOf('learn', v.learn, ['on', 'off'] as const) === 'on',
    marginMs: int('margin-ms', v['margin-ms'], 0, 1000),
  };
}
type Options = ReturnType<typeof options>;

class Child extends BenchChild<Ready> {
  constructor(role: 'fake' | 'gateway' | 'bare', config: unknown) {
    super({ script: CHILD, role, config, onUnexpectedExit: log });
  }
}

/** What one side's callers saw. */
class Side {
  readonly latencies: number[] = [];
  readonly failures: Record<string, number> = {};
  /** per arrival: latency ms or a failure's kind, and the key that served it (keypool says which) */
  readonly byArrival: (number | string)[] = [];
  readonly keyOf: (string | null)[] = [];
  record(i: number, at: number, error?: unknown, key?: string | null): void {
    this.keyOf[i] = key ?? null;
    if (error === undefined) {
      const ms = performance.now() - at;
      this.byArrival[i] = round(ms, 1);
      return void this.latencies.push(ms);
    }
    const kind = error instanceof OpenAI.APIConnectionTimeoutError ? 'timeout' : error instanceof OpenAI.APIError && error.status ? `status ${error.status}` : 'network';
    this.byArrival[i] = kind;
    this.failures[kind] = (this.failures[kind] ?? 0) + 1;
  }
  get clientFailures(): number {
    return Object.values(this.failures).reduce((a, b) => a + b, 0);
  }
}

/** 429s over requests the upstream saw on the keys named `prefix*`, between two counter reads. */
function share429(prefix: string, after: Record<string, FakeKeyCounters>, before?: Record<string, FakeKeyCounters>): { requests: number; rate429: number; share: number } {
  let requests = 0;
  let rate429 = 0;
  for (const [name, c] of Object.entries(after)) {
    if (!name.startsWith(prefix)) continue;
    requests += c.requests - (before?.[name]?.requests ?? 0);
    rate429 += c.rate429 - (before?.[name]?.rate429 ?? 0);
  }
  return { requests, rate429, share: requests ? round(rate429 / requests, 4) : 0 };
}

async function runScenario(o: Options, kind: Kind, processes: number, redisUrl: string, admin: ReturnType<typeof adminClient>) {
  const name = `${kind}-${processes}p`;
  const runId = randomBytes(4).toString('hex');
  const pool = `bench-real-${runId}`;
  const configuredRpm = Math.floor(o.providerRpm * o.configuredShare);
  const providerRpm = kind === 'shared' ? Math.floor(configuredRpm * (1 - o.sharedCut)) : o.providerRpm;
  const quota = Math.max(1, Math.floor((providerRpm * WINDOW_MS) / 60_000));
  const capacityPerSec = (o.keys * quota * 1000) / WINDOW_MS;
  const rate = LOAD[kind] * capacityPerSec;
  const arrivals = poissonArrivals(o.seed, rate, o.seconds);
  log(`${name}: ${arrivals.length} arrivals at ${fmt(rate, 1)}/s over ${o.seconds} s; ${o.keys} keys, provider ${providerRpm} rpm (${quota} per rolling second), keypool configured at ${configuredRpm} rpm`);

  const secret = (side: string, i: number) => `sk-bench-${side}${i}-${runId}-${randomBytes(12).toString('hex')}`;
  const kp = Array.from({ length: o.keys }, (_, i) => ({ secret: secret('kp', i), name: `kp${i}` }));
  const nv = Array.from({ length: o.keys }, (_, i) => ({ secret: secret('nv', i), name: `nv${i}` }));
  const started: Child[] = [];
  const spawn = (role: 'fake' | 'gateway' | 'bare', config: unknown) => {
    const c = new Child(role, config);
    started.push(c);
    return c;
  };
  try {
    const fake = spawn('fake', { keys: [...kp, ...nv].map((k) => ({ key: k.secret, name: k.name, rpm: providerRpm, limiter: 'window-1s' })), model: MODEL, latencyMs: o.latencyMs, chunkDelayMs: 0 });
    const fakeUrl = (await fake.ready).url;
    const gwChildren = Array.from({ length: processes }, () =>
      spawn('gateway', { redisUrl, fakeUrl, pool, model: MODEL, keys: kp.map((k) => ({ ...k, ...KEY_SETTINGS, rpm: configuredRpm })), limits: { windowMarginMs: o.marginMs, learn: o.learn }, adminToken: randomBytes(24).toString('hex') }),
    );
    const gateways = await Promise.all(gwChildren.map((c) => c.ready));
    const naive = await spawn('bare', { fakeUrl, key: nv[0]!.secret, keys: nv.map((k) => k.secret) }).ready;
    const client = (baseURL: string, apiKey: string) => new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: o.deadlineMs });
    const kpClients = gateways.map((g) => client(`${g.url}/v1`, g.token!));
    const nvClient = client(`${naive.url}/v1`, 'sk-naive-proxy-adds-the-key');

    const sides = { keypool: new Side(), naive: new Side() };
    const inFlight: Promise<void>[] = [];
    const call = (side: Side, c: OpenAI, i: number, at: number) =>
      c.chat.completions
        .create({ model: MODEL, messages: [{ role: 'user', content: 'hello from bench:realistic' }], max_tokens: 16 })
        .withResponse()
        .then(
          ({ response }) => side.record(i, at, undefined, response.headers.get('x-keypool-key-id')),
          (e: unknown) => side.record(i, at, e),
        );
    // warm-up: one request through each gateway (its token admitted, its connections open) and one
    // per naive key, then the provider's window empties; counted from here on
    const warm = new Side();
    await Promise.all([...kpClients.map((c, i) => call(warm, c, i, performance.now())), ...nv.map((_, i) => call(warm, nvClient, kpClients.length + i, performance.now()))]);
    if (warm.clientFailures) throw new Error(`warm-up failed: ${JSON.stringify(warm.failures)}`);
    await new Promise((r) => setTimeout(r, WINDOW_MS + o.marginMs + 100));
    const counters0 = await fake.request<Record<string, FakeKeyCounters>>('counters');
    await Promise.all(gwChildren.map((c) => c.request('stats')));
    const redis0 = await sampleRedis(admin, 'commandstats');
    let countersAt10s: Record<string, FakeKeyCounters> | undefined;
    const t0 = performance.now() + 200;
    const snapshot = setTimeout(() => void fake.request<Record<string, FakeKeyCounters>>('counters').then((c) => (countersAt10s = c)), 200 + 10_000);
    await atTimes(arrivals, t0, (i, at) => inFlight.push(call(sides.keypool, kpClients[i % kpClients.length]!, i, at), call(sides.naive, nvClient, i, at)), () => false);
    await Promise.all(inFlight);
    clearTimeout(snapshot);
    const redis1 = await sampleRedis(admin, 'commandstats');
    const stats = await Promise.all(gwChildren.map((c) => c.request<GatewayChildStats>('stats')));
    // each key's effective rpm (what acquire enforces: learning lowers it) once the run is over
    const limitsAtEnd = await gwChildren[0]!.request<{ name: string; effectiveRpm: number | null }[]>('limits');
    const counters = await fake.request<Record<string, FakeKeyCounters>>('counters');

    const commands = Object.values(redisDelta(redis0, redis1).byCommand).reduce((n, c) => n + c.calls, 0);
    const figures = (side: Side, prefix: string) => {
      const d = dist(side.latencies);
      const up = share429(prefix, counters, counters0);
      // the most requests the provider admitted in any rolling second on one key (its quota: quotaPerWindow)
      const peak = Math.max(...Object.entries(counters).filter(([n]) => n.startsWith(prefix)).map(([, c]) => c.peakRequestsPer1s));
      return { clientFailures: side.clientFailures, failures: side.failures, upstreamRequests: up.requests, upstream429: up.rate429, upstream429Share: up.share, upstreamPeakPerSecond: peak, p50Ms: round(d.p50Ms, 1), p99Ms: round(d.p99Ms, 1), maxMs: round(d.maxMs, 1) };
    };
    const after10 = countersAt10s && o.seconds > 10 ? share429('kp', counters, countersAt10s) : undefined;
    const keypool = {
      ...figures(sides.keypool, 'kp'),
      upstream429ShareAfter10s: after10?.share ?? null,
      redisCommandsPerRequest: round(commands / arrivals.length, 1),
      gateways: gatewayFigures(stats, arrivals.length),
      effectiveRpmAtEnd: limitsAtEnd.map((l) => l.effectiveRpm),
    };
    const naiveFig = figures(sides.naive, 'nv');
    const idealRun = idealLatencies({ arrivals, keys: o.keys, quota, windowMs: WINDOW_MS, latencyMs: o.latencyMs });
    const id = dist(idealRun);
    const ideal = { p50Ms: round(id.p50Ms, 1), p99Ms: round(id.p99Ms, 1) };
    // the same pacer over the limits keypool itself enforces (its rpm, or the provider's when lower,
    // over 1 s + the window margin): the least waiting keypool's configuration allows
    const ownQuota = Math.max(1, Math.floor((Math.min(configuredRpm, providerRpm) * WINDOW_MS) / 60_000));
    const own = dist(idealLatencies({ arrivals, keys: o.keys, quota: ownQuota, windowMs: WINDOW_MS + o.marginMs, latencyMs: o.latencyMs }));
    const idealAsConfigured = { quotaPerWindow: ownQuota, windowMs: WINDOW_MS + o.marginMs, p50Ms: round(own.p50Ms, 1), p99Ms: round(own.p99Ms, 1) };

    const shareTarget = kind === 'shared' ? { bound: 0.01, value: keypool.upstream429ShareAfter10s } : { bound: 0.002, value: keypool.upstream429Share };
    const target = (bound: number, value: number | null) => ({ bound: round(bound, 1), value, met: value !== null && value <= bound });
    const targets = {
      clientFailures: target(0, keypool.clientFailures),
      [kind === 'shared' ? 'upstream429ShareAfter10s' : 'upstream429Share']: { ...target(shareTarget.bound, shareTarget.value), bound: shareTarget.bound },
      p99VsIdeal: target(1.5 * ideal.p99Ms + 50, keypool.p99Ms),
      ...(LOAD[kind] <= 0.55 && kind !== 'shared' ? { p99AtLowLoad: target(o.latencyMs + 50, keypool.p99Ms) } : {}),
    };
    const result = { name, kind, processes, keys: o.keys, providerRpm, configuredRpm, windowMs: WINDOW_MS, quotaPerWindow: quota, loadShare: LOAD[kind], ratePerSec: round(rate, 2), requests: arrivals.length, keypool, naive: naiveFig, ideal, idealAsConfigured, targets };
    const trace = {
      name,
      arrivalsMs: arrivals.map((a) => round(a, 1)),
      keypool: sides.keypool.byArrival,
      keypoolKey: sides.keypool.keyOf,
      naive: sides.naive.byArrival,
      ideal: Array.from(idealRun, (x) => round(x, 1)),
    };
    log(`${name}: keypool failures ${keypool.clientFailures}, 429 share ${keypool.upstream429Share}, p50/p99 ${keypool.p50Ms}/${keypool.p99Ms} ms; naive 429 share ${naiveFig.upstream429Share}, p99 ${naiveFig.p99Ms}; ideal p99 ${ideal.p99Ms} (${idealAsConfigured.p99Ms} over keypool's own limits)`);
    return { result, trace };
  } finally {
    await Promise.all(started.map((c) => c.stop().catch((e: Error) => log(`stopping a child: ${e.message}`))));
  }
}
type Scenario = Awaited<ReturnType<typeof runScenario>>['result'];

/** Where keypool's time went, over the gateways: acquire (its reservation's sleep included), script runs, reservations, event loops. */
function gatewayFigures(stats: GatewayChildStats[], requests: number) {
  const sum = (f: (s: GatewayChildStats) => number) => stats.reduce((n, s) => n + f(s), 0);
  const worst = (f: (s: GatewayChildStats) => number) => round(Math.max(...stats.map(f)), 1);
  const scripts = stats.every((s) => s.acquireScripts) ? sum((s) => s.acquireScripts!.runs) : null;
  const outcomes: Record<string, number> = {};
  for (const s of stats) for (const [k, n] of Object.entries(s.acquireScripts?.outcomes ?? {})) outcomes[k] = (outcomes[k] ?? 0) + n;
  const reserved = sum((s) => s.reserved?.calls ?? 0);
  return {
    acquireCalls: sum((s) => s.acquire.calls),
    acquireScriptRunsPerRequest: scripts === null ? null : round(scripts / requests, 2),
    acquireScriptOutcomes: outcomes,
    /** acquire's duration, sleep until a reservation's start included: the worst gateway's percentiles */
    acquireP50Ms: worst((s) => s.acquire.p50Ms),
    acquireP99Ms: worst((s) => s.acquire.p99Ms),
    reservedShare: round(reserved / requests, 3),
    reservedWaitP50Ms: worst((s) => (s.reserved?.calls ? s.reserved.p50Ms : 0)),
    reservedWaitP99Ms: worst((s) => (s.reserved?.calls ? s.reserved.p99Ms : 0)),
    releaseP99Ms: worst((s) => s.release.p99Ms),
    /** how late after its start (Redis time) a lease reached the code that sends it: what the window margin must cover */
    startLateP50Ms: worst((s) => s.startLate?.p50Ms ?? NaN),
    startLateP99Ms: worst((s) => s.startLate?.p99Ms ?? NaN),
    eventLoopUtilization: stats.map((s) => s.eventLoopUtilization),
  };
}

function render(r: { scenarios: Scenario[]; wallSeconds: number }): string {
  const yes = (t: { met: boolean }) => (t.met ? 'met' : 'NOT MET');
  const rows = [['scenario', 'side', 'failures', '429 share', 'p50 ms', 'p99 ms', 'redis cmd/req']];
  const lines: string[] = [];
  for (const s of r.scenarios) {
    rows.push([`${s.name} (${fmt(s.ratePerSec, 1)}/s)`, 'keypool', String(s.keypool.clientFailures), String(s.keypool.upstream429Share), fmt(s.keypool.p50Ms, 1), fmt(s.keypool.p99Ms, 1), fmt(s.keypool.redisCommandsPerRequest, 1)]);
    rows.push(['', 'naive', String(s.naive.clientFailures), String(s.naive.upstream429Share), fmt(s.naive.p50Ms, 1), fmt(s.naive.p99Ms, 1), '']);
    rows.push(['', 'ideal', '', '', fmt(s.ideal.p50Ms, 1), fmt(s.ideal.p99Ms, 1), '']);
    rows.push(['', "ideal, keypool's limits", '', '', fmt(s.idealAsConfigured.p50Ms, 1), fmt(s.idealAsConfigured.p99Ms, 1), '']);
    lines.push(`${s.name}: ${Object.entries(s.targets).map(([k, t]) => `${k} ${t.value} <= ${t.bound}: ${yes(t)}`).join('; ')}`);
  }
  return `${table(rows)}\n\nTargets\n${lines.join('\n')}\n\n(${fmt(r.wallSeconds, 0)} s)`;
}

async function main(): Promise<void> {
  const o = options();
  const t0 = performance.now();
  process.once('SIGINT', () => process.exit(130)); // the children are killed on exit (lib/child-ipc.ts)
  process.once('SIGTERM', () => process.exit(143));
  const redis = await openRedis({ spawnAlways: true });
  if (redis.server) children.add(redis.server.process);
  const admin = adminClient(redis.url);
  await admin.connect();
  const scenarios: Scenario[] = [];
  const traces: unknown[] = [];
  try {
    for (const kind of o.scenarios)
      for (const p of o.processes) {
        const { result, trace } = await runScenario(o, kind, p, redis.url, admin);
        scenarios.push(result);
        traces.push(trace);
        if (o.trace) writeFileSync(o.trace, JSON.stringify({ scenarios: traces }));
      }
  } finally {
    admin.disconnect();
    await redis.stop();
  }
  const { json, trace: _trace, ...opts } = o;
  const result = { benchmark: 'realistic', machine: machine(), options: opts, scenarios, wallSeconds: round((performance.now() - t0) / 1000, 1) };
  printResult(result, json, render);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    log(`failed: ${(e as Error)?.stack ?? String(e)}`);
    process.exit(1);
  },
);
