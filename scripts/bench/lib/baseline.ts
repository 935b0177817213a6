/**
 * Same-run baselines: what the machine and Redis do without keypool, measured in the same run as
 * keypool's figures so that both see the same machine. Here: `redis-benchmark eval "return 1"`,
 * the ceiling a one-script-per-call design is compared with.
 */
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import type { Redis } from 'ioredis';
import { redisDelta, sampleRedis } from './redis.js';
import { round } from './stats.js';

/** host/port/auth/db/tls arguments of redis-benchmark for a redis:// or rediss:// URL. */
export function redisBenchmarkArgs(url: string): string[] {
  const u = new URL(url);
  const args = ['-h', u.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1', '-p', u.port || '6379'];
  if (u.password) args.push('-a', decodeURIComponent(u.password));
  if (u.username && u.password) args.push('--user', decodeURIComponent(u.username));
  const db = u.pathname.replace(/^\//, '');
  if (db && Number(db) > 0) args.push('--dbnum', db);
  if (u.protocol === 'rediss:') args.push('--tls');
  return args;
}

/** Run a command to its end, collecting its output; `signal` kills it. */
export function runProcess(cmd: string, args: string[], signal?: AbortSignal): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], signal });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

export interface EvalResult {
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

/** `redis-benchmark -n requests -c clients eval "return 1" 0` against `url`, with Redis's CPU over it. */
export async function evalBenchmark(url: string, admin: Redis, requests: number, clients: number, signal?: AbortSignal): Promise<EvalResult> {
  const args = [...redisBenchmarkArgs(url), '-n', String(requests), '-c', String(clients), '--csv', 'eval', 'return 1', '0'];
  const before = await sampleRedis(admin);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const r = await runProcess('redis-benchmark', args, signal).catch((e: Error) => {
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
  const ev = d.byCommand.eval;
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
