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
 *     ceiling a one-script-per-call design is compared with (leaseToEvalRatio).
 * Each window is `--seconds` (default 5) after `--warmup` (default 1) seconds of warm-up.
 *
 * Noise is spread evenly: redis-benchmark runs first and last (the mean is used, both are shown),
 * the pool sizes run twice in mirrored order (1,10,100,1000 ... 1000,100,10,1; the mean per size
 * is used) and the 4-key run sits in the middle. Each run has a fresh pool name.
 *
 * Redis: REDIS_URL if set (never flushed: only this run's pool keys `kp:{bench-<id>-...}:*` are
 * deleted), else a private redis-server on a free port (packages/testkit), stopped at the end.
 *
 * Besides the figures it records where the time goes in each run: Node CPU (process.cpuUsage),
 * Redis CPU (INFO cpu) and Redis command statistics (INFO commandstats deltas: EVALSHA calls and
 * usec per call, and the commands the scripts run inside), per lease.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { pino, type Logger } from 'pino';
import { KeyPool, PoolKeys, type KeySpecInput } from '@keypool/core';
// Not the testkit index: it imports vitest's inject(), which only works inside a vitest run.
import { spawnRedisServer } from '../../packages/testkit/src/redis-server.js';

const TARGETS = { leaseToEvalRatio: 0.25, poolSizeRatio: 0.8 } as const;
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
  --only LIST            comma-separated subset of: eval,main,sizes (default all)
  --no-autopipeline      what-if: give KeyPool its own ioredis client with enableAutoPipelining
                         off (default: KeyPool.connect({ redis: url }), as applications do)
  -h, --help             this text
Redis: REDIS_URL if set (only this run's pool keys are deleted), else a private redis-server.`;

function parseCli() {
  const { values } = parseArgs({
    options: {
      json: { type: 'boolean', default: false },
      seconds: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '1' },
      concurrency: { type: 'string', default: '64' },
      'eval-requests': { type: 'string', default: '200000' },
      passes: { type: 'string', default: '2' },
      only: { type: 'string', default: 'eval,main,sizes' },
      'no-autopipeline': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    process.exit(0);
  }
  const num = (name: string, v: string, min: number, int = false) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min || (int && !Number.isInteger(n))) throw new Error(`--${name} must be ${int ? 'an integer' : 'a number'} >= ${min}, got "${v}"`);
    return n;
  };
  const only = new Set(values.only.split(',').map((s) => s.trim()).filter(Boolean));
  for (const o of only) if (!['eval', 'main', 'sizes'].includes(o)) throw new Error(`--only: unknown part "${o}" (use eval, main, sizes)`);
  return {
    json: values.json,
    seconds: num('seconds', values.seconds, 0.1),
    warmup: num('warmup', values.warmup, 0),
    concurrency: num('concurrency', values.concurrency, 1, true),
    evalRequests: num('eval-requests', values['eval-requests'], 1000, true),
    passes: num('passes', values.passes, 1, true),
    only,
    noAutopipeline: values['no-autopipeline'],
  };
}

type Options = ReturnType<typeof parseCli>;

const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);

/** Aborted on SIGINT/SIGTERM: windows end early, redis-benchmark is killed, later runs are skipped. */
const interrupt = new AbortController();
/** A sleep that ends early (without throwing) on interrupt. */
const pause = (ms: number) => sleep(ms, undefined, { signal: interrupt.signal }).catch(() => undefined);

// ---- Redis target ----------------------------------------------------------------------------

interface Target {
  url: string;
  kind: 'spawned' | 'env';
  /** host/port/auth/db/tls arguments for redis-benchmark */
  benchArgs: string[];
  display: string;
  stop(): Promise<void>;
}

function benchArgsOf(url: string): { args: string[]; display: string } {
  const u = new URL(url);
  const host = u.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1';
  const port = u.port || '6379';
  const args = ['-h', host, '-p', port];
  if (u.password) args.push('-a', decodeURIComponent(u.password));
  if (u.username && u.password) args.push('--user', decodeURIComponent(u.username));
  const db = u.pathname.replace(/^\//, '');
  if (db && Number(db) > 0) args.push('--dbnum', db);
  if (u.protocol === 'rediss:') args.push('--tls');
  return { args, display: `${host}:${port}` };
}

async function openTarget(): Promise<Target> {
  const env = process.env.REDIS_URL;
  if (env) {
    const { args, display } = benchArgsOf(env);
    return { url: env, kind: 'env', benchArgs: args, display, stop: async () => {} };
  }
  const server = await spawnRedisServer();
  return {
    url: server.url,
    kind: 'spawned',
    benchArgs: ['-h', server.host, '-p', String(server.port)],
    display: `${server.host}:${server.port} (pid ${server.process.pid})`,
    stop: server.stop,
  };
}

// ---- Redis INFO sampling ---------------------------------------------------------------------

interface CmdStat {
  calls: number;
  usec: number;
}

interface RedisSample {
  cpu: number; // used_cpu_user + used_cpu_sys, seconds
  cmd: Map<string, CmdStat>;
}

async function sampleRedis(admin: Redis): Promise<RedisSample> {
  const text = await admin.info('all');
  let cpu = 0;
  const cmd = new Map<string, CmdStat>();
  for (const line of text.split('\r\n')) {
    if (line.startsWith('used_cpu_user:') || line.startsWith('used_cpu_sys:')) cpu += Number(line.split(':')[1]);
    const m = /^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/.exec(line);
    if (m) cmd.set(m[1]!, { calls: Number(m[2]), usec: Number(m[3]) });
  }
  return { cpu, cmd };
}

interface RedisDelta {
  cpuSeconds: number;
  commands: Record<string, CmdStat>;
}

function redisDelta(a: RedisSample, b: RedisSample): RedisDelta {
  const commands: Record<string, CmdStat> = {};
  for (const [name, s] of b.cmd) {
    const before = a.cmd.get(name) ?? { calls: 0, usec: 0 };
    const calls = s.calls - before.calls;
    if (calls > 0 && name !== 'info') commands[name] = { calls, usec: s.usec - before.usec };
  }
  return { cpuSeconds: b.cpu - a.cpu, commands };
}

// ---- redis-benchmark -------------------------------------------------------------------------

interface EvalResult {
  opsPerSec: number;
  avgLatencyMs: number;
  p50LatencyMs: number;
  p99LatencyMs: number;
  wallSeconds: number;
  /** Redis CPU over the run, in cores (1 = one core busy), and server usec per EVAL. */
  redisCpuCores: number;
  redisUsecPerEval: number | null;
  /** CPU of this Node process while redis-benchmark ran (should be ~0: it only waits) */
  nodeCpuCores: number;
}

function runProcess(cmd: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], signal: interrupt.signal });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function evalBenchmark(target: Target, admin: Redis, requests: number): Promise<EvalResult> {
  const args = [...target.benchArgs, '-n', String(requests), '-c', String(EVAL_CLIENTS), '--csv', 'eval', 'return 1', '0'];
  const before = await sampleRedis(admin);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const r = await runProcess('redis-benchmark', args).catch((e: Error) => {
    throw new Error(`could not run redis-benchmark (${e.message}); install redis-tools`);
  });
  const wall = (performance.now() - t0) / 1000;
  const c1 = process.cpuUsage(c0);
  const after = await sampleRedis(admin);
  // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
  const row = r.stdout
    .split('\n')
    .map((l) => l.trim())
    .find((l) => /^"eval/i.test(l));
  const cells = row?.split(',').map((c) => Number(c.replace(/"/g, '')));
  if (r.code !== 0 || !cells || !Number.isFinite(cells[1]) || !(cells[1]! > 0)) {
    throw new Error(`redis-benchmark failed (exit ${r.code}):\n${r.stdout}\n${r.stderr.replace(/-a \S+/g, '-a ***')}`);
  }
  const d = redisDelta(before, after);
  const ev = d.commands.eval;
  return {
    opsPerSec: cells[1]!,
    avgLatencyMs: cells[2]!,
    p50LatencyMs: cells[4]!,
    p99LatencyMs: cells[6]!,
    wallSeconds: round(wall, 3),
    redisCpuCores: round(d.cpuSeconds / wall, 3),
    redisUsecPerEval: ev ? round(ev.usec / ev.calls, 3) : null,
    nodeCpuCores: round((c1.user + c1.system) / 1e6 / wall, 3),
  };
}

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
    /** EVALSHA per lease (acquire + release = 2) and the server time of one, usec */
    evalshaPerLease: number;
    redisUsecPerEvalsha: number | null;
    /** server usec of script work per lease (EVAL + EVALSHA) */
    scriptUsecPerLease: number;
    /** commands run inside the scripts, per lease: calls and usec */
    innerCommandsPerLease: Record<string, { calls: number; usec: number }>;
  };
}

function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i]!;
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

async function deletePoolKeys(admin: Redis, pattern: string): Promise<number> {
  let cursor = '0';
  let n = 0;
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    if (keys.length) n += await admin.unlink(...keys);
  } while (cursor !== '0');
  return n;
}

async function leaseRun(
  ctx: { target: Target; admin: Redis; logger: Logger; runId: string; opts: Options },
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
    own = new Redis(ctx.target.url, { lazyConnect: true, enableAutoPipelining: false, enableOfflineQueue: false, maxRetriesPerRequest: 1, connectTimeout: 3000 });
    own.on('error', (e: Error) => log(`${label}: redis client: ${e.message}`));
    await own.connect();
  }
  const pool = await KeyPool.connect({ redis: own ?? ctx.target.url, config: { pool: poolName, keys: keySpecs(keys, `${ctx.runId}-${label}`) }, logger: ctx.logger }).catch((e: unknown) => {
    own?.disconnect();
    throw e;
  });
  const setupSeconds = (performance.now() - t0) / 1000;
  try {
    let phase: 'warmup' | 'measure' | 'stop' = 'warmup';
    let leases = 0;
    let exhausted = 0;
    let errors = 0;
    let firstError: unknown;
    let samples = new Float64Array(recordLatency ? 1 << 16 : 0);
    let nSamples = 0;

    const worker = async () => {
      while (phase !== 'stop') {
        try {
          const a = performance.now();
          const lease = await pool.acquire(ACQUIRE);
          const b = performance.now();
          if (!lease.ok) {
            if (phase === 'measure') exhausted++;
            await sleep(1);
            continue;
          }
          await lease.release(OUTCOME);
          if (phase === 'measure') {
            leases++;
            if (recordLatency) {
              if (nSamples === samples.length) {
                const grown = new Float64Array(samples.length * 2);
                grown.set(samples);
                samples = grown;
              }
              samples[nSamples++] = b - a;
            }
          }
        } catch (e) {
          if (phase === 'measure') errors++;
          firstError ??= e;
          await sleep(5);
        }
      }
    };

    const workers = Array.from({ length: opts.concurrency }, worker);
    await pause(opts.warmup * 1000);
    const r0 = await sampleRedis(ctx.admin);
    const c0 = process.cpuUsage();
    const m0 = performance.now();
    phase = 'measure';
    await pause(opts.seconds * 1000);
    phase = 'stop';
    const m1 = performance.now();
    const c1 = process.cpuUsage(c0);
    const r1 = await sampleRedis(ctx.admin);
    await Promise.all(workers);
    if (firstError) log(`${label}: ${errors} errors in the window; first: ${(firstError as Error).message ?? String(firstError)}`);

    const seconds = (m1 - m0) / 1000;
    const d = redisDelta(r0, r1);
    const per = (x: number) => (leases > 0 ? x / leases : NaN);
    const evalsha = d.commands.evalsha ?? { calls: 0, usec: 0 };
    const ev = d.commands.eval ?? { calls: 0, usec: 0 };
    const inner: Record<string, { calls: number; usec: number }> = {};
    for (const [name, s] of Object.entries(d.commands)) {
      if (name === 'evalsha' || name === 'eval') continue;
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
      const s = samples.subarray(0, nSamples).sort();
      let sum = 0;
      for (const v of s) sum += v;
      run.latency = {
        p50Ms: round(percentile(s, 0.5), 3),
        p90Ms: round(percentile(s, 0.9), 3),
        p99Ms: round(percentile(s, 0.99), 3),
        p999Ms: round(percentile(s, 0.999), 3),
        maxMs: round(s[s.length - 1] ?? NaN, 3),
        meanMs: round(sum / Math.max(1, s.length), 3),
        samples: s.length,
      };
    }
    return run;
  } finally {
    await pool.close();
    own?.disconnect();
    await deletePoolKeys(ctx.admin, pattern).catch((e: Error) => log(`could not delete ${pattern}: ${e.message}`));
  }
}

// ---- reporting -------------------------------------------------------------------------------

function round(x: number, digits: number): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);
const fmt = (x: number | null | undefined, digits = 0) =>
  x === null || x === undefined || !Number.isFinite(x) ? 'n/a' : x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')).join('\n');
}

// ---- main ------------------------------------------------------------------------------------

async function main() {
  const opts = parseCli();
  const started = performance.now();
  const runId = randomBytes(4).toString('hex');
  const logger = pino({ level: 'warn', name: 'keypool-bench' }, pino.destination(2));

  const interrupted = () => interrupt.signal.aborted;
  const target = await openTarget();
  const admin = new Redis(target.url, { maxRetriesPerRequest: 1, lazyConnect: true });
  admin.on('error', () => {}); // failures surface through the rejected commands
  const benchPattern = `kp:{bench-${runId}-*}:*`;
  let cleaned: Promise<void> | undefined;
  const cleanup = () =>
    (cleaned ??= (async () => {
      if (admin.status === 'ready') {
        const n = await deletePoolKeys(admin, benchPattern).catch(() => 0);
        if (n > 0) log(`deleted ${n} leftover keys matching ${benchPattern}`);
      }
      admin.disconnect();
      await target.stop();
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
    log(`redis ${redisVersion} (${target.kind}) at ${target.display}; run id ${runId}; ${opts.concurrency} callers, ${opts.warmup}s warm-up + ${opts.seconds}s per run${opts.noAutopipeline ? '; what-if: auto-pipelining off' : ''}`);

    const ctx = { target, admin, logger, runId, opts };
    const evals: EvalResult[] = [];
    const sizeRuns = new Map<number, LeaseRun[]>();
    let mainRun: LeaseRun | undefined;

    const runEval = async (when: string) => {
      const r = await evalBenchmark(target, admin, opts.evalRequests).catch((e: unknown) => {
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

    // eval, sizes (first half of the passes), 4-key run, sizes (second half), eval
    if (opts.only.has('eval')) await runEval('before');
    if (opts.only.has('sizes')) for (let p = 1; p <= half; p++) for (const n of orderOf(p)) if (!interrupted()) await runSize(n, p);
    if (opts.only.has('main') && !interrupted()) {
      mainRun = await leaseRun(ctx, 'main', MAIN_KEYS, true);
      if (!interrupted()) log(`main run, ${MAIN_KEYS} keys: ${fmt(mainRun.leasesPerSec)} leases/s, acquire p50 ${mainRun.latency?.p50Ms} ms p99 ${mainRun.latency?.p99Ms} ms`);
    }
    if (opts.only.has('sizes')) for (let p = half + 1; p <= opts.passes; p++) for (const n of orderOf(p)) if (!interrupted()) await runSize(n, p);
    if (opts.only.has('eval') && !interrupted()) await runEval('after');

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
      targets: {
        leaseToEvalRatio: check(leaseToEvalRatio, TARGETS.leaseToEvalRatio),
        poolSizeRatio: check(poolSizeRatio, TARGETS.poolSizeRatio),
      },
      redisKind: target.kind,
      redisVersion,
      node: process.version,
      cores: os.availableParallelism?.() ?? os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? 'unknown',
      platform: `${process.platform}-${process.arch}`,
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
    } else if (opts.json) {
      process.stdout.write(JSON.stringify(result) + '\n');
    } else {
      process.stdout.write(render(result, mainRun, sizeRuns, evals) + '\n');
    }
  } finally {
    await cleanup();
  }
}

function render(
  r: { [k: string]: unknown } & {
    targets: Record<string, { min: number; value: number | null; met: boolean | null }>;
    leasesPerSecByPoolSize: Record<string, number>;
  },
  main: LeaseRun | undefined,
  sizeRuns: Map<number, LeaseRun[]>,
  evals: EvalResult[],
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
    ]),
  );
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
        ['run', 'leases/s', 'node cores', 'node us/lease', 'redis cores', 'redis us/lease', 'evalsha/lease', 'us/evalsha', 'failed'],
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
