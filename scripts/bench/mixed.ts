/**
 * Interactive traffic and a batch queue on the same keys (issue 16): priority classes and fair
 * shares between tenants, measured against the same interactive schedule on an idle pool.
 *
 *   npm run bench:mixed                      readable report on stdout, progress on stderr
 *   npm run -s bench:mixed -- --json         exactly one JSON object on stdout
 *   npm run bench:mixed -- --quick           a shorter run (20 s of arrivals, an 8 s flood)
 *
 * Two phases, each on a fresh pool (same redis-server, spawned for the run) and a fresh fake
 * upstream (scripts/bench/gateway/child.ts fake: --keys keys of --provider-rpm each in its
 * `window-1s` mode, the quantized 1 s limits of Azure and OpenAI), keypool configured as the
 * provider enforces (provider azure: 1 s windows) at the provider's rpm:
 *   - idle: two gateways (gateway/child.ts gateway, `serve()`), the interactive schedule alone;
 *   - mixed: the same two gateways' roles, plus --workers queue workers (queue/worker.ts worker,
 *     `startWorker()`, --concurrency jobs each, queue.keyWaitMs default) draining a backlog sized
 *     for at least 60 s at full capacity (jobs default to class low), enqueued before the
 *     interactive schedule starts; the schedule starts once the workers have drained for 3 s.
 * Interactive schedule: three tenants, each a gateway token of weight 1 (class normal, the
 * gateway's default), Poisson arrivals (seeded) at 10% of capacity each (30% in all), the third
 * flooding at 3x its share (30% of capacity) for --flood-seconds in the middle of the run. Every
 * request goes through the two gateways in turn with the official `openai` SDK, maxRetries 0, a
 * deadline of --deadline-ms (a timeout or an error is a client failure). Latency is from the
 * scheduled arrival to the end of the answer (no coordinated omission).
 *
 * Fields (the issue's, and a few that explain them):
 *   interactive { p50Ms, p99Ms, clientFailures }, interactiveIdle { p50Ms, p99Ms }
 *   queue { capacityShare }: jobs served upstream during the schedule over what the keys allow
 *     in that time (keys x rpm/60 per second) minus what interactive used; capacityShareEnforced
 *     the same over what keypool may send (its windows are 1 s + limits.windowMarginMs)
 *   tenants { name: { p99Ms, admittedShare, slowestInFlood } }: p99 during the flood (slowestInFlood: its
 *     three slowest requests there, each with the gateway's x-keypool-acquire-ms and attempts; and idleP99Ms, the same
 *     arrivals on the idle pool), admittedShare of all interactive requests served during the flood
 *   upstream429Share: 429s over all requests the provider saw during the mixed schedule
 *   with --trace: trace (each key's effective rpm every 500 ms of the mixed schedule) and classes
 *     (the pool's traffic counters summed over the mixed phase's fresh pool, per class: a admitted now, w
 *     admitted after a reservation or after sleeping between tries, r refused, ms their waits,
 *     h1..h12 the waits' buckets of lua/includes/series.lua)
 * Targets: interactive p99 <= idle p99 + 100 ms and no client failure; capacityShare >= 0.9;
 * during the flood the quiet tenants' p99 <= 2 x their idle p99; upstream429Share <= 0.002.
 */
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import OpenAI from 'openai';
import type { FakeKeyCounters } from '@keypool/testkit/fake-openai';
import { PoolKeys } from '@keypool/core';
import { LlmQueue, type LlmJobInput } from '@keypool/worker';
import { int, num, onOff, parseBenchArgs } from './cli.js';
import type { Ready } from './gateway/options.js';
import { BenchChild, children } from './lib/child-ipc.js';
import { atTimes, poissonArrivals } from './lib/load.js';
import { openRedis } from './lib/redis.js';
import { fmt, logger, machine, printResult, table } from './lib/report.js';
import { dist, round } from './lib/stats.js';
import type { WorkerChildConfig, WorkerChildStats } from './queue/worker.js';

const USAGE = `Usage: tsx scripts/bench/mixed.ts [options]   (npm run bench:mixed -- [options])
  --json                 print one JSON object on stdout (progress goes to stderr)
  --quick                20 s of arrivals and an 8 s flood (unless given)
  --seconds N            interactive arrivals for N seconds per phase (default 60)
  --flood-seconds N      the third tenant floods at 3x its share this long, mid-run (default 20)
  --keys N               provider keys (default 2)
  --provider-rpm N       what the provider allows per key (default 1200: 20 in any rolling second)
  --latency-ms N         the provider's latency (default 50)
  --workers N            queue worker processes (default 2)
  --concurrency N        jobs each worker runs at once (default 32)
  --keep-low X           priority.keepFree.low (default 0.2, keypool's default)
  --headroom-low N       priority.headroom.low (default 1, keypool's default)
  --higher-waited-ms N   priority.higherWaitedMs (default 1000, keypool's default)
  --reserve-ahead-ms N   priority.reserveAheadMs (default 0, keypool's default)
  --spread on|off        priority.spread: low's requests spread over each key's window (default on, keypool's default)
  --deadline-ms N        a caller gives up after this long: a client failure (default 30000)
  --seed N               seed of the arrivals (default 16)
  --margin-ms N          keypool's limits.windowMarginMs (default 20, keypool's default)
  --learn on|off         keypool learns limits from the provider's headers and 429s (default on)
  --trace                the keys' effective rpm every 500 ms of the mixed phase (JSON: trace), and the
                         pool's traffic counters per class over it (JSON: classes)
  -h, --help             this text`;

const log = logger('bench:mixed');
const GATEWAY_CHILD = fileURLToPath(new URL('./gateway/child.ts', import.meta.url));
const WORKER_CHILD = fileURLToPath(new URL('./queue/worker.ts', import.meta.url));
const MODEL = 'gpt-4o-mini';
const TENANTS = ['tenant-a', 'tenant-b', 'tenant-flood'] as const;
type Tenant = (typeof TENANTS)[number];

function options() {
  const quick = process.argv.includes('--quick');
  const v = parseBenchArgs(USAGE, {
    quick: false,
    trace: false,
    seconds: quick ? '20' : '60',
    'flood-seconds': quick ? '8' : '20',
    keys: '2',
    'provider-rpm': '1200',
    'latency-ms': '50',
    workers: '2',
    concurrency: '32',
    'keep-low': '0.2',
    'headroom-low': '1',
    'higher-waited-ms': '1000',
    'reserve-ahead-ms': '0',
    'deadline-ms': '30000',
    seed: '16',
    'margin-ms': '20',
    learn: 'on',
    spread: 'on',
  });
  const seconds = num('seconds', v.seconds, 5, 600);
  return {
    json: v.json,
    quick,
    seconds,
    floodSeconds: num('flood-seconds', v['flood-seconds'], 1, seconds),
    keys: int('keys', v.keys, 1, 50),
    providerRpm: int('provider-rpm', v['provider-rpm'], 60),
    latencyMs: int('latency-ms', v['latency-ms'], 0),
    workers: int('workers', v.workers, 1, 8),
    concurrency: int('concurrency', v.concurrency, 1, 1000),
    keepLow: num('keep-low', v['keep-low'], 0, 0.9),
    headroomLow: int('headroom-low', v['headroom-low'], 0, 1000),
    higherWaitedMs: int('higher-waited-ms', v['higher-waited-ms'], 0, 60_000),
    reserveAheadMs: int('reserve-ahead-ms', v['reserve-ahead-ms'], 0, 60_000),
    deadlineMs: int('deadline-ms', v['deadline-ms'], 100),
    seed: int('seed', v.seed, 0),
    marginMs: int('margin-ms', v['margin-ms'], 0, 1000),
    learn: onOff('learn', v.learn),
    spread: onOff('spread', v.spread),
    trace: process.argv.includes('--trace'),
  };
}
type Options = ReturnType<typeof options>;

class Child extends BenchChild<Ready> {
  constructor(script: string, role: string, config: unknown) {
    super({ script, role, config, onUnexpectedExit: log });
  }
}

interface Arrival {
  at: number;
  tenant: Tenant;
  flood: boolean;
}

/** The interactive schedule: three tenants at 10% of capacity each, the third at 30% during the flood. */
function schedule(o: Options, capacityPerSec: number): { arrivals: Arrival[]; floodFrom: number; floodTo: number } {
  const floodFrom = ((o.seconds - o.floodSeconds) / 2) * 1000;
  const floodTo = floodFrom + o.floodSeconds * 1000;
  const all: Arrival[] = [];
  TENANTS.forEach((tenant, i) => {
    for (const at of poissonArrivals(o.seed + i, 0.1 * capacityPerSec, o.seconds)) all.push({ at, tenant, flood: at >= floodFrom && at < floodTo });
  });
  for (const at of poissonArrivals(o.seed + 99, 0.2 * capacityPerSec, o.floodSeconds)) all.push({ at: floodFrom + at, tenant: 'tenant-flood', flood: true });
  all.sort((a, b) => a.at - b.at);
  return { arrivals: all, floodFrom, floodTo };
}

/** Latency (ms) or a failure's kind, per arrival. */
type Outcome = number | string;

async function createToken(url: string, adminToken: string, name: string): Promise<string> {
  const r = await fetch(`${url}/admin/tokens`, { method: 'POST', headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' }, body: JSON.stringify({ name, weight: 1 }) });
  if (r.status !== 201) throw new Error(`token create: ${r.status} ${await r.text()}`);
  return ((await r.json()) as { token: string }).token;
}

function upstream(after: Record<string, FakeKeyCounters>, before: Record<string, FakeKeyCounters>): { requests: number; rate429: number } {
  let requests = 0;
  let rate429 = 0;
  for (const [name, c] of Object.entries(after)) {
    requests += c.requests - (before[name]?.requests ?? 0);
    rate429 += c.rate429 - (before[name]?.rate429 ?? 0);
  }
  return { requests, rate429 };
}

async function runPhase(o: Options, phase: 'idle' | 'mixed', redisUrl: string, arrivals: Arrival[]) {
  const runId = randomBytes(4).toString('hex');
  const pool = `bench-mixed-${phase}-${runId}`;
  const keys = Array.from({ length: o.keys }, (_, i) => ({ secret: `sk-bench-mixed${i}-${runId}-${randomBytes(12).toString('hex')}`, name: `k${i}` }));
  const benchKeys = keys.map((k) => ({ ...k, provider: 'azure' as const, rpm: o.providerRpm }));
  const priority = { keepFree: { low: o.keepLow }, headroom: { low: o.headroomLow }, higherWaitedMs: o.higherWaitedMs, reserveAheadMs: o.reserveAheadMs, spread: o.spread };
  const limits = { windowMarginMs: o.marginMs, learn: o.learn };
  const started: Child[] = [];
  const spawn = (script: string, role: string, config: unknown) => {
    const c = new Child(script, role, config);
    started.push(c);
    return c;
  };
  let producer: Redis | undefined;
  let queue: LlmQueue | undefined;
  let reader: Redis | undefined; // --trace
  let tracer: NodeJS.Timeout | undefined;
  try {
    const fake = spawn(GATEWAY_CHILD, 'fake', { keys: keys.map((k) => ({ key: k.secret, name: k.name, rpm: o.providerRpm, limiter: 'window-1s' })), model: MODEL, latencyMs: o.latencyMs, chunkDelayMs: 0 });
    const fakeUrl = (await fake.ready).url!;
    const adminToken = randomBytes(24).toString('hex');
    const gws = [0, 1].map(() => spawn(GATEWAY_CHILD, 'gateway', { redisUrl, fakeUrl, pool, model: MODEL, keys: benchKeys, adminToken, priority, limits }));
    const gateways = await Promise.all(gws.map((c) => c.ready));
    const tokens = Object.fromEntries(await Promise.all(TENANTS.map(async (t) => [t, await createToken(gateways[0]!.url!, adminToken, t)] as const))) as Record<Tenant, string>;
    const clients = Object.fromEntries(
      TENANTS.map((t) => [t, gateways.map((g) => new OpenAI({ baseURL: `${g.url}/v1`, apiKey: tokens[t], maxRetries: 0, timeout: o.deadlineMs }))]),
    ) as Record<Tenant, OpenAI[]>;
    const workers: Child[] = [];
    if (phase === 'mixed') {
      for (let i = 0; i < o.workers; i++) {
        const cfg: WorkerChildConfig = {
          redisUrl,
          fakeUrl,
          pool,
          model: MODEL,
          workerId: `mixed-worker-${i + 1}`,
          keys: benchKeys,
          priority,
          limits,
          queue: { concurrency: o.concurrency },
          scheduler: { probeMs: 3_600_000, housekeepingMs: 3_600_000, secretRefreshMs: 3_600_000 },
          logLevel: 'warn',
        };
        workers.push(spawn(WORKER_CHILD, 'worker', cfg));
      }
      await Promise.all(workers.map((w) => w.ready));
    }
    const call = (t: Tenant, i: number, content: string) => clients[t][i % 2]!.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content }], max_tokens: 16 }).withResponse();
    // warm-up: each tenant through each gateway (tokens admitted, connections open)
    await Promise.all(TENANTS.flatMap((t) => [0, 1].map((i) => call(t, i, 'warm-up'))));

    const capacityPerSec = (o.keys * Math.floor(o.providerRpm / 60));
    if (phase === 'mixed') {
      producer = new Redis(redisUrl, { maxRetriesPerRequest: null });
      producer.on('error', (e: Error) => log(`producer Redis error: ${e.message}`));
      queue = new LlmQueue({ connection: producer, pool });
      const jobs = Math.ceil(capacityPerSec * Math.max(60, o.seconds + 10) * 1.1);
      const inputs: LlmJobInput[] = Array.from({ length: jobs }, (_, i) => ({ kind: 'chat', request: { model: MODEL, messages: [{ role: 'user', content: `job ${i}: say hi` }], max_tokens: 16 } }));
      for (let at = 0; at < inputs.length; at += 500) await queue.addBulk(inputs.slice(at, at + 500));
      log(`mixed: ${jobs} jobs enqueued (class low, the default); draining 3 s before the schedule starts`);
      await new Promise((r) => setTimeout(r, 3000));
    } else await new Promise((r) => setTimeout(r, 1000 + o.marginMs + 100));

    const counters0 = await fake.request<Record<string, FakeKeyCounters>>('counters');
    // --trace: each key's effective rpm (learnt: state field erpm), every 500 ms
    const trace: { atMs: number; erpm: number[] }[] = [];
    if (o.trace && phase === 'mixed') {
      const stKey = new PoolKeys(pool).st;
      const r = (reader = new Redis(redisUrl));
      const tStart = Date.now();
      const READ = "local r = {} for _, v in ipairs(redis.call('HVALS', KEYS[1])) do r[#r + 1] = cmsgpack.unpack(v).erpm end return r";
      tracer = setInterval(() => void r.eval(READ, 1, stKey).then((erpm) => trace.push({ atMs: Date.now() - tStart, erpm: erpm as number[] }), () => undefined), 500);
    }
    const outcomes: Outcome[] = new Array(arrivals.length);
    // what the gateway said of each answered request: its wait for a key, and its attempts
    const told: { acquireMs: number | null; attempts: number | null }[] = new Array(arrivals.length);
    const header = (h: Headers, name: string) => {
      const v = h.get(name);
      return v === null ? null : Number(v);
    };
    const answeredAt: number[] = [];
    const inFlight: Promise<void>[] = [];
    const t0 = performance.now() + 100;
    const w0 = Date.now() + 100;
    await atTimes(
      arrivals.map((a) => a.at),
      t0,
      (i, at) =>
        inFlight.push(
          call(arrivals[i]!.tenant, i, `interactive ${i}`).then(
            ({ response }) => {
              outcomes[i] = performance.now() - at;
              told[i] = { acquireMs: header(response.headers, 'x-keypool-acquire-ms'), attempts: header(response.headers, 'x-keypool-attempts') };
              answeredAt.push(performance.now());
            },
            (e: unknown) => void (outcomes[i] = e instanceof OpenAI.APIConnectionTimeoutError ? 'timeout' : e instanceof OpenAI.APIError && e.status ? `status ${e.status}` : 'network'),
          ),
        ),
      () => false,
    );
    const scheduleEnd = performance.now();
    // the queue's share is counted over the schedule's time, before the last answers come in
    const countersEnd = await fake.request<Record<string, FakeKeyCounters>>('counters');
    const countedAt = performance.now();
    const windowS = (scheduleEnd - t0) / 1000;
    await Promise.all(inFlight);
    // interactive requests the counters hold: those answered at most the provider's latency after they were read
    // (not those still waiting for a key when the schedule ended: they never reached the provider in the window)
    const interactiveUpstream = answeredAt.filter((t) => t - o.latencyMs <= countedAt).length;
    const stats = phase === 'mixed' ? await Promise.all(workers.map((w) => w.request<WorkerChildStats>('stats'))) : [];
    log(`${phase}: ${arrivals.length} interactive requests over ${fmt(windowS, 1)} s`);
    if (tracer) clearInterval(tracer);
    // --trace: the pool's traffic counters per class, summed (the phase's pool is fresh: warm-up and draining included)
    let classes: Record<string, number> | undefined;
    if (reader) {
      const SUM = "local t = {} local h = redis.call('HGETALL', KEYS[1]) for i = 1, #h, 2 do local c, f = string.match(h[i], '^%d+:(%a+):(%w+)$') if c then local k = c .. ':' .. f t[k] = (t[k] or 0) + (tonumber(h[i + 1]) % 2147483648) end end local out = {} for k, v in pairs(t) do out[#out + 1] = k out[#out + 1] = tostring(v) end return out";
      const flat = (await reader.eval(SUM, 1, new PoolKeys(pool).ser)) as string[];
      classes = {};
      for (let i = 0; i < flat.length; i += 2) classes[flat[i]!] = Number(flat[i + 1]);
    }
    return { outcomes, told, up: upstream(countersEnd, counters0), windowS, capacityPerSec, startedAt: w0, workerStats: stats, trace, classes, interactiveUpstream };
  } finally {
    await queue?.close().catch(() => undefined);
    producer?.disconnect();
    if (tracer) clearInterval(tracer);
    reader?.disconnect();
    await Promise.all(started.map((c) => c.stop().catch((e: Error) => log(`stopping a child: ${e.message}`))));
  }
}

async function main(): Promise<void> {
  const o = options();
  const wall0 = performance.now();
  process.once('SIGINT', () => process.exit(130));
  process.once('SIGTERM', () => process.exit(143));
  const redis = await openRedis({ spawnAlways: true });
  if (redis.server) children.add(redis.server.process);
  const capacityPerSec = o.keys * Math.floor(o.providerRpm / 60);
  const { arrivals, floodFrom, floodTo } = schedule(o, capacityPerSec);
  log(`${arrivals.length} interactive arrivals over ${o.seconds} s (capacity ${capacityPerSec}/s; flood ${floodFrom / 1000}-${floodTo / 1000} s)`);
  let idle: Awaited<ReturnType<typeof runPhase>>;
  let mixed: Awaited<ReturnType<typeof runPhase>>;
  try {
    idle = await runPhase(o, 'idle', redis.url, arrivals);
    mixed = await runPhase(o, 'mixed', redis.url, arrivals);
  } finally {
    await redis.stop();
  }
  const lat = (outs: Outcome[], keep: (a: Arrival) => boolean) => outs.filter((x, i) => typeof x === 'number' && keep(arrivals[i]!)) as number[];
  const failures = (outs: Outcome[]) => {
    const f: Record<string, number> = {};
    for (const x of outs) if (typeof x !== 'number') f[x ?? 'none'] = (f[x ?? 'none'] ?? 0) + 1;
    return f;
  };
  const all = () => true;
  const d = dist(lat(mixed.outcomes, all));
  const di = dist(lat(idle.outcomes, all));
  const mixedFailures = failures(mixed.outcomes);
  const interactive = { requests: arrivals.length, p50Ms: round(d.p50Ms, 1), p99Ms: round(d.p99Ms, 1), maxMs: round(d.maxMs, 1), clientFailures: Object.values(mixedFailures).reduce((a, b) => a + b, 0), failures: mixedFailures };
  const interactiveIdle = { p50Ms: round(di.p50Ms, 1), p99Ms: round(di.p99Ms, 1), maxMs: round(di.maxMs, 1), clientFailures: Object.values(failures(idle.outcomes)).reduce((a, b) => a + b, 0) };

  const okUp = mixed.up.requests - mixed.up.rate429;
  // interactive requests the provider served during the schedule's window (not all of them: with waits
  // of a second or more, those still waiting for a key at its end were subtracted too, a bench bug)
  const interactiveUp = mixed.interactiveUpstream;
  const queueServed = Math.max(0, okUp - interactiveUp);
  const allowed = mixed.capacityPerSec * mixed.windowS;
  const enforced = allowed * (1000 / (1000 + o.marginMs));
  const queue = {
    servedDuringSchedule: queueServed,
    interactiveServedDuringSchedule: interactiveUp,
    capacityShare: round(queueServed / (allowed - interactiveUp), 3),
    capacityShareEnforced: round(queueServed / (enforced - interactiveUp), 3),
    workerRunsDelayed: mixed.workerStats.reduce((n, s) => n + s.runsDelayed, 0),
    workerAcquireOutcomes: mixed.workerStats.reduce<Record<string, number>>((m, s) => {
      for (const [k, v] of Object.entries(s.acquireScriptOutcomes)) m[k] = (m[k] ?? 0) + v;
      return m;
    }, {}),
  };
  const inFlood = (a: Arrival) => a.flood;
  const servedInFlood = lat(mixed.outcomes, inFlood).length;
  const tenants = Object.fromEntries(
    TENANTS.map((t) => {
      const mine = (a: Arrival) => a.tenant === t && a.flood;
      const m = dist(lat(mixed.outcomes, mine));
      const i = dist(lat(idle.outcomes, mine));
      const whole = dist(lat(mixed.outcomes, (a) => a.tenant === t));
      // the three slowest in the flood: how much of each was the wait for a key (x-keypool-acquire-ms)
      const slowest = arrivals
        .map((a, k) => ({ a, k, ms: mixed.outcomes[k] }))
        .filter((x): x is { a: Arrival; k: number; ms: number } => mine(x.a) && typeof x.ms === 'number')
        .sort((x, y) => y.ms - x.ms)
        .slice(0, 3)
        .map((x) => ({ ms: round(x.ms, 1), acquireMs: mixed.told[x.k]?.acquireMs ?? null, attempts: mixed.told[x.k]?.attempts ?? null }));
      return [t, { p99Ms: round(m.p99Ms, 1), idleP99Ms: round(i.p99Ms, 1), wholeRunP99Ms: round(whole.p99Ms, 1), admittedShare: round(lat(mixed.outcomes, mine).length / servedInFlood, 3), arrivalShare: round(arrivals.filter(mine).length / arrivals.filter(inFlood).length, 3), slowestInFlood: slowest }];
    }),
  );
  const upstream429Share = round(mixed.up.rate429 / Math.max(1, mixed.up.requests), 4);
  const target = (value: number, bound: number, atLeast = false) => ({ value, bound: round(bound, 3), met: atLeast ? value >= bound : value <= bound });
  const targets = {
    interactiveP99: target(interactive.p99Ms, interactiveIdle.p99Ms + 100),
    clientFailures: target(interactive.clientFailures, 0),
    queueCapacityShare: target(queue.capacityShare, 0.9, true),
    'tenant-a p99 in flood': target(tenants['tenant-a']!.p99Ms, 2 * tenants['tenant-a']!.idleP99Ms),
    'tenant-b p99 in flood': target(tenants['tenant-b']!.p99Ms, 2 * tenants['tenant-b']!.idleP99Ms),
    upstream429Share: target(upstream429Share, 0.002),
  };
  const { json, ...opts } = o;
  const result = {
    benchmark: 'mixed',
    machine: machine(),
    options: opts,
    capacityPerSec,
    interactive,
    interactiveIdle,
    queue,
    tenants,
    upstream429Share,
    upstream: { mixed: mixed.up, idle: idle.up },
    ...(o.trace ? { trace: mixed.trace, classes: mixed.classes } : {}),
    targets,
    wallSeconds: round((performance.now() - wall0) / 1000, 1),
  };
  printResult(result, json, render);
}

function render(r: { interactive: { p50Ms: number; p99Ms: number; clientFailures: number }; interactiveIdle: { p50Ms: number; p99Ms: number }; queue: { capacityShare: number }; tenants: Record<string, { p99Ms: number; idleP99Ms: number; admittedShare: number }>; upstream429Share: number; targets: Record<string, { value: number; bound: number; met: boolean }>; wallSeconds: number }): string {
  const rows = [['', 'p50 ms', 'p99 ms', 'failures']];
  rows.push(['interactive (with the queue)', fmt(r.interactive.p50Ms, 1), fmt(r.interactive.p99Ms, 1), String(r.interactive.clientFailures)]);
  rows.push(['interactive (idle pool)', fmt(r.interactiveIdle.p50Ms, 1), fmt(r.interactiveIdle.p99Ms, 1), '']);
  const trows = [['tenant (during the flood)', 'p99 ms', 'idle p99 ms', 'admitted share']];
  for (const [t, v] of Object.entries(r.tenants)) trows.push([t, fmt(v.p99Ms, 1), fmt(v.idleP99Ms, 1), String(v.admittedShare)]);
  const lines = Object.entries(r.targets).map(([k, t]) => `${k}: ${t.value} (bound ${t.bound}): ${t.met ? 'met' : 'NOT MET'}`);
  return `${table(rows)}\n\n${table(trows)}\n\nqueue capacityShare ${r.queue.capacityShare}; upstream429Share ${r.upstream429Share}\n\nTargets\n${lines.join('\n')}\n\n(${fmt(r.wallSeconds, 0)} s)`;
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    log(`failed: ${(e as Error)?.stack ?? String(e)}`);
    process.exit(1);
  },
);
