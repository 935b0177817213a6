/**
 * Lease throughput benchmark of @keypool/core against a real Redis.
 *
 *   npm run bench:pool                       readable table on stdout, progress on stderr
 *   npm run -s bench:pool -- --json          exactly one JSON object on stdout
 *   npm run bench:pool -- --seconds 10       longer measurement windows
 *
 * What it measures, in one process with `--concurrency` (default 64) async callers, each looping
 * acquire -> release with limits high enough never to block:
 *   - leasesPerSec: acquire + release cycles per second on a 4-key pool, with acquire latency
 *     (p50/p99 from every sample of the window);
 *   - leasesPerSecByPoolSize: the same on pools of 1, 10, 100 and 1000 keys;
 *   - evalOpsPerSec: `redis-benchmark -c 50 eval "return 1" 0` against the same Redis, the
 *     ceiling a one-script-per-call design is compared with (leaseToEvalRatio);
 *   - acquireP99UnderOpsMs (scenario in pool/ops.ts, on a private redis-server): acquire p99 on a
 *     1000-key pool at `--ops-rate` acquires/s while 10 dashboards read /status every 2 s and
 *     /readyz and /metrics are read every second on each of 2 gateways (another process), against
 *     the same load without them (acquireP99OpsIdleMs; target: at most 1 ms above it), with the
 *     viewers' longest call (longestOpsCallMs) and the longest command in Redis's SLOWLOG
 *     (longestRedisCommandUs).
 * Each window is `--seconds` (default 5) after `--warmup` (default 1) seconds of warm-up.
 *
 * Noise is spread evenly: redis-benchmark runs right before and right after the 4-key run (the
 * mean is used, both are shown: the ratio's baseline is measured next to what it divides, as this
 * host's speed drifts within a run), the pool sizes run twice in mirrored order (1,10,100,1000 ...
 * 1000,100,10,1; the mean per size is used) around them. Each run has a fresh pool name.
 *
 * Redis: REDIS_URL if set (never flushed: only this run's pool keys `kp:{bench-<id>-...}:*` are
 * deleted), else a private redis-server on a free port (packages/testkit), stopped at the end.
 *
 * Besides the figures it records where the time goes in each run: Node CPU (process.cpuUsage),
 * Redis CPU (INFO cpu) and Redis command statistics (INFO commandstats deltas: EVALSHA calls and
 * usec per call, and the commands the scripts run inside), per lease.
 *
 * The harness (arguments, Redis, redis-benchmark, the closed loop, statistics, output) is in
 * scripts/bench/cli.ts and scripts/bench/lib/; this file is the scenario and its figures.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { pino, type Logger } from 'pino';
import { KeyPool, PoolKeys, type KeySpecInput } from '@keypool/core';
import { int, num, parseBenchArgs, subset } from './cli.js';
import { evalBenchmark, type EvalResult } from './lib/baseline.js';
import { ClosedLoop } from './lib/load.js';
import { adminClient, deleteKeys, openRedis, redisDelta, sampleRedis, type BenchRedis } from './lib/redis.js';
import { fmt, logger, machine, printResult, table } from './lib/report.js';
import { dist, mean, round, SampleBuffer } from './lib/stats.js';
import { opsRun, type OpsResult } from './pool/ops.js';

const TARGETS = { leaseToEvalRatio: 0.25, poolSizeRatio: 0.8, underOpsAboveIdleMs: 1 } as const;
const OPS = { keys: 1000, gateways: 2, dashboards: 10 } as const;
const POOL_SIZES = [1, 10, 100, 1000] as const;
const MAIN_KEYS = 4;
const EVAL_CLIENTS = 50;
const MODEL = 'gpt-4o-mini'; // has a default price, so the cost/budget path runs as in production
const ACQUIRE = { model: MODEL, estimatedTokens: 1000, estimatedOutputTokens: 300 };
const OUTCOME = { status: 200, latencyMs: 180, usage: { promptTokens: 640, completionTokens: 210 } };

// ---- arguments -------------------------------------------------------------------------------

const USAGE = `Usage: tsx scripts/bench/pool.ts [options]   (npm run bench:pool -- [options])
  --json                 print one JSON object on stdout (progress and logs go to stderr)
  --seconds N            measurement window of each lease run, seconds (default 5)
  --warmup N             warm-up before each window, seconds (default 1)
  --concurrency N        concurrent callers (default 64)
  --eval-requests N      requests per redis-benchmark run (default 200000)
  --passes N             passes over the pool sizes, alternating order (default 2)
  --only LIST            comma-separated subset of: eval,main,sizes,ops (default all)
  --ops-seconds N        each window of the under-ops scenario, seconds (default 5)
  --ops-rate N           acquires per second offered in that scenario (default 1000)
  --no-autopipeline      what-if: give KeyPool its own ioredis client with enableAutoPipelining
                         off (default: KeyPool.connect({ redis: url }), as applications do)
  -h, --help             this text
Redis: REDIS_URL if set (only this run's pool keys are deleted), else a private redis-server.`;

function parseCli() {
  const v = parseBenchArgs(USAGE, {
    seconds: '5', warmup: '1', concurrency: '64', 'eval-requests': '200000', passes: '2',
    only: 'eval,main,sizes,ops', 'no-autopipeline': false, 'ops-seconds': '5', 'ops-rate': '1000',
  });
  return {
    json: v.json,
    seconds: num('seconds', v.seconds, 0.1),
    warmup: num('warmup', v.warmup, 0),
    concurrency: int('concurrency', v.concurrency, 1),
    evalRequests: int('eval-requests', v['eval-requests'], 1000),
    passes: int('passes', v.passes, 1),
    only: subset('only', v.only, ['eval', 'main', 'sizes', 'ops']),
    opsSeconds: num('ops-seconds', v['ops-seconds'], 0.5),
    opsRate: int('ops-rate', v['ops-rate'], 1),
    noAutopipeline: v['no-autopipeline'],
  };
}

type Options = ReturnType<typeof parseCli>;

const log = logger('bench');

/** Aborted on SIGINT/SIGTERM: windows end early, redis-benchmark is killed, later runs are skipped. */
const interrupt = new AbortController();
/** A sleep that ends early (without throwing) on interrupt. */
const pause = (ms: number) => sleep(ms, undefined, { signal: interrupt.signal }).catch(() => undefined);

// ---- lease runs ------------------------------------------------------------------------------

interface LeaseRun {
  label: string;
  keys: number;
  leases: number;
  seconds: number;
  leasesPerSec: number;
  /** acquire answered { ok: false } (should be 0: limits never block) and calls that threw */
  exhausted: number;
  errors: number;
  setupSeconds: number;
  latency?: { p50Ms: number; p90Ms: number; p99Ms: number; p999Ms: number; maxMs: number; meanMs: number; samples: number };
  profile: {
    /** CPU time of this Node process per wall second (1 = one core) and per lease */
    nodeCpuCores: number;
    nodeCpuUsPerLease: number;
    /** CPU time of redis-server per wall second and per lease (INFO cpu; includes other clients of an env Redis) */
    redisCpuCores: number;
    redisCpuUsPerLease: number;
    /** script calls (EVALSHA or FCALL) per lease (acquire + release = 2) and the server time of one, usec */
    evalshaPerLease: number;
    redisUsecPerEvalsha: number | null;
    /** server usec of script work per lease (EVAL + EVALSHA + FCALL) */
    scriptUsecPerLease: number;
    /** commands run inside the scripts, per lease: calls and usec */
    innerCommandsPerLease: Record<string, { calls: number; usec: number }>;
  };
}


function keySpecs(n: number, tag: string): KeySpecInput[] {
  return Array.from({ length: n }, (_, i) => ({
    secret: `sk-bench-${tag}-${String(i).padStart(5, '0')}-${randomBytes(6).toString('hex')}`,
    name: `bench ${i}`,
    models: [MODEL],
    rpm: 10_000_000,
    rpmBurst: 10_000_000,
    tpm: 0,
    maxConcurrent: 0,
  }));
}


async function leaseRun(
  ctx: { redis: BenchRedis; admin: Redis; logger: Logger; runId: string; opts: Options },
  label: string,
  keys: number,
  recordLatency: boolean,
): Promise<LeaseRun> {
  const { opts } = ctx;
  const poolName = `bench-${ctx.runId}-${label}`;
  const pattern = new PoolKeys(poolName).pattern;
  const t0 = performance.now();
  // --no-autopipeline: the options KeyPool.connect uses for its own client, minus auto-pipelining
  // (a KeyPool never closes a client it was given: closed in finally below)
  let own: Redis | undefined;
  if (opts.noAutopipeline) {
    own = new Redis(ctx.redis.url, { lazyConnect: true, enableAutoPipelining: false, enableOfflineQueue: false, maxRetriesPerRequest: 1, connectTimeout: 3000 });
    own.on('error', (e: Error) => log(`${label}: redis client: ${e.message}`));
    await own.connect();
  }
  const pool = await KeyPool.connect({ redis: own ?? ctx.redis.url, config: { pool: poolName, keys: keySpecs(keys, `${ctx.runId}-${label}`) }, logger: ctx.logger }).catch((e: unknown) => {
    own?.disconnect();
    throw e;
  });
  const setupSeconds = (performance.now() - t0) / 1000;
  try {
    let leases = 0;
    let exhausted = 0;
    let errors = 0;
    let firstError: unknown;
    const samples = new SampleBuffer(recordLatency ? 1 << 16 : 0);

    const loop = new ClosedLoop(opts.concurrency, async (l) => {
      try {
        const a = performance.now();
        const lease = await pool.acquire(ACQUIRE);
        const b = performance.now();
        if (!lease.ok) {
          if (l.measuring) exhausted++;
          await sleep(1);
          return;
        }
        await lease.release(OUTCOME);
        if (l.measuring) {
          leases++;
          if (recordLatency) samples.push(b - a);
        }
      } catch (e) {
        if (l.measuring) errors++;
        firstError ??= e;
        await sleep(5);
      }
    });
    await pause(opts.warmup * 1000);
    const r0 = await sampleRedis(ctx.admin);
    const c0 = process.cpuUsage();
    const m0 = performance.now();
    loop.measure();
    await pause(opts.seconds * 1000);
    const stopped = loop.stop();
    const m1 = performance.now();
    const c1 = process.cpuUsage(c0);
    const r1 = await sampleRedis(ctx.admin);
    await stopped;
    if (firstError) log(`${label}: ${errors} errors in the window; first: ${(firstError as Error).message ?? String(firstError)}`);

    const seconds = (m1 - m0) / 1000;
    const d = redisDelta(r0, r1);
    const per = (x: number) => (leases > 0 ? x / leases : NaN);
    // the script calls: EVALSHA, or FCALL where the scripts run as Redis Functions
    const fc = d.byCommand.fcall ?? { calls: 0, usec: 0 };
    const es = d.byCommand.evalsha ?? { calls: 0, usec: 0 };
    const evalsha = { calls: es.calls + fc.calls, usec: es.usec + fc.usec };
    const ev = d.byCommand.eval ?? { calls: 0, usec: 0 };
    const inner: Record<string, { calls: number; usec: number }> = {};
    for (const [name, s] of Object.entries(d.byCommand)) {
      if (name === 'evalsha' || name === 'eval' || name === 'fcall' || name === 'function') continue;
      inner[name] = { calls: round(per(s.calls), 3), usec: round(per(s.usec), 3) };
    }
    const nodeCpuSeconds = (c1.user + c1.system) / 1e6;
    const run: LeaseRun = {
      label,
      keys,
      leases,
      seconds: round(seconds, 3),
      leasesPerSec: round(leases / seconds, 1),
      exhausted,
      errors,
      setupSeconds: round(setupSeconds, 3),
      profile: {
        nodeCpuCores: round(nodeCpuSeconds / seconds, 3),
        nodeCpuUsPerLease: round(per(nodeCpuSeconds * 1e6), 2),
        redisCpuCores: round(d.cpuSeconds / seconds, 3),
        redisCpuUsPerLease: round(per(d.cpuSeconds * 1e6), 2),
        evalshaPerLease: round(per(evalsha.calls), 3),
        redisUsecPerEvalsha: evalsha.calls > 0 ? round(evalsha.usec / evalsha.calls, 2) : null,
        scriptUsecPerLease: round(per(evalsha.usec + ev.usec), 2),
        innerCommandsPerLease: inner,
      },
    };
    if (recordLatency) {
      const { samples: n, ...quantiles } = dist(samples.sorted());
      run.latency = { ...quantiles, samples: n };
    }
    return run;
  } finally {
    await pool.close();
    own?.disconnect();
    await deleteKeys(ctx.admin, pattern).catch((e: Error) => log(`could not delete ${pattern}: ${e.message}`));
  }
}

// ---- main ------------------------------------------------------------------------------------

async function main() {
  const opts = parseCli();
  const started = performance.now();
  const runId = randomBytes(4).toString('hex');
  const logger = pino({ level: 'warn', name: 'keypool-bench' }, pino.destination(2));

  const interrupted = () => interrupt.signal.aborted;
  const redis = await openRedis();
  const admin = adminClient(redis.url);
  const benchPattern = `kp:{bench-${runId}-*}:*`;
  let cleaned: Promise<void> | undefined;
  const cleanup = () =>
    (cleaned ??= (async () => {
      if (admin.status === 'ready') {
        const n = await deleteKeys(admin, benchPattern).catch(() => 0);
        if (n > 0) log(`deleted ${n} leftover keys matching ${benchPattern}`);
      }
      admin.disconnect();
      await redis.stop();
    })());
  // First signal: stop gracefully (runs end, pools close, this run's keys are deleted, Redis stops).
  // Second signal: clean up at once and exit.
  const onSignal = (sig: NodeJS.Signals) => {
    if (!interrupted()) {
      log(`${sig}: stopping after cleanup (again to force)`);
      interrupt.abort();
      return;
    }
    void cleanup().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    await admin.connect();
    const server = await admin.info('server');
    const redisVersion = /redis_version:(\S+)/.exec(server)?.[1] ?? 'unknown';
    log(`redis ${redisVersion} (${redis.kind}) at ${redis.display}; run id ${runId}; ${opts.concurrency} callers, ${opts.warmup}s warm-up + ${opts.seconds}s per run${opts.noAutopipeline ? '; what-if: auto-pipelining off' : ''}`);

    const ctx = { redis, admin, logger, runId, opts };
    const evals: EvalResult[] = [];
    const sizeRuns = new Map<number, LeaseRun[]>();
    let mainRun: LeaseRun | undefined;

    const runEval = async (when: string) => {
      const r = await evalBenchmark(redis.url, admin, opts.evalRequests, EVAL_CLIENTS, interrupt.signal).catch((e: unknown) => {
        if (interrupted()) return undefined; // redis-benchmark was killed on purpose
        throw e;
      });
      if (!r) return;
      log(`redis-benchmark eval (${when}): ${fmt(r.opsPerSec)} ops/s, p50 ${r.p50LatencyMs} ms`);
      evals.push(r);
    };
    const runSize = async (n: number, pass: number) => {
      const r = await leaseRun(ctx, `n${n}-p${pass}`, n, false);
      if (interrupted()) return;
      log(`pool of ${n} key(s), pass ${pass}: ${fmt(r.leasesPerSec)} leases/s${r.exhausted || r.errors ? ` (${r.exhausted} exhausted, ${r.errors} errors)` : ''}`);
      sizeRuns.set(n, [...(sizeRuns.get(n) ?? []), r]);
    };
    const orderOf = (pass: number) => (pass % 2 === 1 ? [...POOL_SIZES] : [...POOL_SIZES].reverse());
    const half = Math.ceil(opts.passes / 2);

    // sizes (first half of the passes), eval, 4-key run, eval, sizes (second half): the ratio's
    // baseline is measured right before and right after the run it divides (this host's speed drifts
    // within a run: a 1-key pool gave 14,050 leases/s in one pass and 8,850 in the next, ~40 s later)
    if (opts.only.has('sizes')) for (let p = 1; p <= half; p++) for (const n of orderOf(p)) if (!interrupted()) await runSize(n, p);
    if (opts.only.has('eval') && !interrupted()) await runEval('before');
    if (opts.only.has('main') && !interrupted()) {
      mainRun = await leaseRun(ctx, 'main', MAIN_KEYS, true);
      if (!interrupted()) log(`main run, ${MAIN_KEYS} keys: ${fmt(mainRun.leasesPerSec)} leases/s, acquire p50 ${mainRun.latency?.p50Ms} ms p99 ${mainRun.latency?.p99Ms} ms`);
    }
    if (opts.only.has('eval') && !interrupted()) await runEval('after');
    if (opts.only.has('sizes')) for (let p = half + 1; p <= opts.passes; p++) for (const n of orderOf(p)) if (!interrupted()) await runSize(n, p);
    let ops: OpsResult | undefined;
    if (opts.only.has('ops') && !interrupted()) {
      ops = await opsRun({ ...OPS, rate: opts.opsRate, seconds: opts.opsSeconds, runId, model: MODEL, logger, log, stopped: interrupted });
    }

    // ---- figures
    const evalOpsPerSec = evals.length ? mean(evals.map((e) => e.opsPerSec)) : null;
    const leasesPerSec = mainRun?.leasesPerSec ?? null;
    const leaseToEvalRatio = leasesPerSec !== null && evalOpsPerSec ? leasesPerSec / evalOpsPerSec : null;
    const bySize: Record<string, number> = {};
    const bySizePasses: Record<string, number[]> = {};
    for (const n of POOL_SIZES) {
      const runs = sizeRuns.get(n);
      if (!runs?.length) continue;
      bySize[String(n)] = round(mean(runs.map((r) => r.leasesPerSec)), 1);
      bySizePasses[String(n)] = runs.map((r) => r.leasesPerSec);
    }
    const poolSizeRatio = bySize['1000'] !== undefined && bySize['1'] ? bySize['1000'] / bySize['1'] : null;
    const check = (value: number | null, min: number) => ({ min, value: value === null ? null : round(value, 4), met: value === null ? null : value >= min });

    const result = {
      leasesPerSec,
      evalOpsPerSec: evalOpsPerSec === null ? null : round(evalOpsPerSec, 1),
      evalOpsPerSecBefore: evals[0]?.opsPerSec ?? null,
      evalOpsPerSecAfter: evals[1]?.opsPerSec ?? null,
      leaseToEvalRatio: leaseToEvalRatio === null ? null : round(leaseToEvalRatio, 4),
      leasesPerSecByPoolSize: bySize,
      leasesPerSecByPoolSizePasses: bySizePasses,
      poolSizeRatio: poolSizeRatio === null ? null : round(poolSizeRatio, 4),
      acquireP50Ms: mainRun?.latency?.p50Ms ?? null,
      acquireP99Ms: mainRun?.latency?.p99Ms ?? null,
      acquireLatencyMs: mainRun?.latency ?? null,
      acquireP99OpsIdleMs: ops?.idle.latency.p99Ms ?? null,
      acquireP99UnderOpsMs: ops?.underOps.latency.p99Ms ?? null,
      longestOpsCallMs: ops?.longestOpsCallMs ?? null,
      longestRedisCommandUs: ops ? (ops.slowlog.longest?.us ?? 0) : null,
      targets: {
        leaseToEvalRatio: check(leaseToEvalRatio, TARGETS.leaseToEvalRatio),
        poolSizeRatio: check(poolSizeRatio, TARGETS.poolSizeRatio),
        acquireP99UnderOps: ops
          ? { max: round(ops.idle.latency.p99Ms + TARGETS.underOpsAboveIdleMs, 3), value: ops.underOps.latency.p99Ms, met: ops.underOps.latency.p99Ms <= ops.idle.latency.p99Ms + TARGETS.underOpsAboveIdleMs }
          : { max: null, value: null, met: null },
      },
      ops: ops ?? null,
      redisKind: redis.kind,
      redisVersion,
      ...machine(),
      timestamp: new Date().toISOString(),
      durationSeconds: opts.seconds,
      warmupSeconds: opts.warmup,
      concurrency: opts.concurrency,
      client: opts.noAutopipeline ? 'own ioredis client, enableAutoPipelining: false (what-if)' : 'KeyPool.connect({ redis: url })',
      mainKeys: MAIN_KEYS,
      passes: opts.passes,
      evalBenchmark: { requests: opts.evalRequests, clients: EVAL_CLIENTS, command: 'eval "return 1" 0', runs: evals },
      runs: [...(mainRun ? [mainRun] : []), ...[...sizeRuns.values()].flat()],
      totalWallSeconds: round((performance.now() - started) / 1000, 1),
    };

    if (interrupted()) {
      log('interrupted: no results printed');
      process.exitCode = 130;
    } else {
      printResult(result, opts.json, (r) => render(r, mainRun, sizeRuns, evals, ops));
    }
  } finally {
    await cleanup();
  }
}

function render(
  r: { [k: string]: unknown } & {
    targets: Record<string, { min?: number; max?: number | null; value: number | null; met: boolean | null }>;
    leasesPerSecByPoolSize: Record<string, number>;
  },
  main: LeaseRun | undefined,
  sizeRuns: Map<number, LeaseRun[]>,
  evals: EvalResult[],
  ops: OpsResult | undefined,
): string {
  const out: string[] = [];
  const yes = (m: boolean | null) => (m === null ? 'n/a' : m ? 'MET' : 'NOT MET');
  out.push(
    `keypool lease benchmark: node ${r.node}, ${r.cores} cores (${r.cpuModel}), redis ${r.redisVersion} (${r.redisKind}), ` +
      `${r.concurrency} callers, ${r.warmupSeconds}s warm-up + ${r.durationSeconds}s windows, ${r.timestamp}`,
    `client: ${r.client}`,
    '',
  );
  const t = r.targets;
  out.push(
    table([
      ['figure', 'value', 'target', 'status'],
      ['leasesPerSec (4 keys)', fmt(main?.leasesPerSec), '', ''],
      ['evalOpsPerSec (mean)', fmt(r.evalOpsPerSec as number | null), '', ''],
      ...evals.map((e, i) => [`  redis-benchmark ${i === 0 ? 'before' : 'after'}`, fmt(e.opsPerSec), '', '']),
      ['leaseToEvalRatio', fmt(t.leaseToEvalRatio!.value, 3), `>= ${t.leaseToEvalRatio!.min}`, yes(t.leaseToEvalRatio!.met)],
      ['poolSizeRatio (1000/1)', fmt(t.poolSizeRatio!.value, 3), `>= ${t.poolSizeRatio!.min}`, yes(t.poolSizeRatio!.met)],
      ['acquire p50 ms', fmt(main?.latency?.p50Ms, 3), '', ''],
      ['acquire p99 ms', fmt(main?.latency?.p99Ms, 3), '', ''],
      ...(ops
        ? [
            [`acquire p99 ms, ${ops.keys} keys, ${fmt(ops.offeredPerSec)}/s, idle`, fmt(ops.idle.latency.p99Ms, 3), '', ''],
            ['acquireP99UnderOpsMs', fmt(ops.underOps.latency.p99Ms, 3), `<= ${fmt(t.acquireP99UnderOps!.max, 3)}`, yes(t.acquireP99UnderOps!.met)],
            ['longestOpsCallMs', fmt(ops.longestOpsCallMs, 1), '', ''],
            [`longest Redis command, us (slowlog > ${ops.slowlog.thresholdUs} us: ${ops.slowlog.entries})`, ops.slowlog.longest ? `${fmt(ops.slowlog.longest.us)} ${ops.slowlog.longest.command}` : 'none', '', ''],
          ]
        : []),
    ]),
  );
  if (ops) {
    out.push('', `under ops: the viewers' calls (${OPS.dashboards} dashboards on /status every 2 s, /readyz and /metrics every 1 s on each of ${OPS.gateways} gateways)`);
    out.push(
      table([
        ['endpoint', 'calls', 'p50 ms', 'p99 ms', 'max ms', 'failed'],
        ...Object.entries(ops.opsCalls).map(([k, d]) => [k, fmt(d.samples), fmt(d.p50Ms, 1), fmt(d.p99Ms, 1), fmt(d.maxMs, 1), fmt(d.failed)]),
      ]),
    );
  }
  if (sizeRuns.size) {
    const passes = Math.max(...[...sizeRuns.values()].map((v) => v.length));
    out.push('', 'leases/s by pool size (mean of passes; passes run in mirrored order)');
    out.push(
      table([
        ['keys', 'mean', ...Array.from({ length: passes }, (_, i) => `pass ${i + 1}`), 'setup s'],
        ...[...sizeRuns.entries()]
          .sort((a, b) => a[0] - b[0])
          .map(([n, runs]) => [String(n), fmt(r.leasesPerSecByPoolSize[String(n)]), ...runs.map((x) => fmt(x.leasesPerSec)), fmt(mean(runs.map((x) => x.setupSeconds)), 2)]),
      ]),
    );
  }
  const all = [...(main ? [main] : []), ...[...sizeRuns.values()].flat()];
  if (all.length) {
    out.push('', 'where the time goes (per lease = acquire + release; cores = CPU seconds per wall second)');
    out.push(
      table([
        ['run', 'leases/s', 'node cores', 'node us/lease', 'redis cores', 'redis us/lease', 'scripts/lease', 'us/script', 'failed'],
        ...all.map((x) => [
          x.label,
          fmt(x.leasesPerSec),
          fmt(x.profile.nodeCpuCores, 2),
          fmt(x.profile.nodeCpuUsPerLease, 1),
          fmt(x.profile.redisCpuCores, 2),
          fmt(x.profile.redisCpuUsPerLease, 1),
          fmt(x.profile.evalshaPerLease, 2),
          fmt(x.profile.redisUsecPerEvalsha, 1),
          String(x.exhausted + x.errors),
        ]),
      ]),
    );
    if (evals.length) {
      out.push(
        '',
        'redis-benchmark eval "return 1": ' +
          evals.map((e, i) => `${i === 0 ? 'before' : 'after'} ${fmt(e.redisCpuCores, 2)} redis cores, ${fmt(e.redisUsecPerEval, 2)} us/eval, bench process ${fmt(e.nodeCpuCores, 2)} cores`).join('; '),
      );
    }
    if (main) {
      const inner = Object.entries(main.profile.innerCommandsPerLease).sort((a, b) => b[1].usec - a[1].usec);
      const innerUs = inner.reduce((s, [, v]) => s + v.usec, 0);
      out.push(
        '',
        `main run, Redis side per lease: ${fmt(main.profile.scriptUsecPerLease, 1)} us in scripts, of which ${fmt(innerUs, 1)} us in the commands they call (the rest is Lua: cjson/cmsgpack, arithmetic)`,
      );
      out.push(
        table([
          ['command', 'calls/lease', 'us/lease'],
          ...inner.slice(0, 12).map(([name, v]) => [name, fmt(v.calls, 2), fmt(v.usec, 2)]),
        ]),
      );
    }
  }
  return out.join('\n');
}

main().catch((e: unknown) => {
  log(`failed: ${(e as Error)?.stack ?? String(e)}`);
  process.exitCode = 1;
});
