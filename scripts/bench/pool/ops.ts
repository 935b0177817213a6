/**
 * bench:pool's "under ops" scenario (issue: ops reads never stall the hot path). On a private
 * redis-server (so its SLOWLOG is ours), a pool of `keys` (1000) keys; this process offers
 * `rate` acquire + release cycles per second, open loop (evenly spaced), for two windows:
 *   - idle: nothing else touches the pool (acquireP99OpsIdleMs);
 *   - under ops: a child process (ops-child.ts) runs `gateways` gateway apps on the same pool and
 *     their viewers: 10 dashboards reading /status every 2 s, /readyz probed and /metrics scraped
 *     every second on each gateway (acquireP99UnderOpsMs).
 * The viewers' process runs at nice 10 (see below).
 * Besides the acquire latency it reports the viewers' calls (the longest: longestOpsCallMs) and
 * the longest command Redis ran in the window (SLOWLOG, threshold 500 us; EVALSHA named after its
 * script), which is what stalls every caller of the fleet.
 */
import { createHash } from 'node:crypto';
import { setPriority } from 'node:os';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { KeyPool, PoolKeys, type KeySpecInput } from '@keypool/core';
import { buildLibrary, loadScripts } from '../../../packages/core/src/scripts.js';
import { BenchChild } from '../lib/child-ipc.js';
import { evenlySpaced } from '../lib/load.js';
import { adminClient, deleteKeys, openRedis } from '../lib/redis.js';
import { dist, round, SampleBuffer, type Dist } from '../lib/stats.js';

export interface OpsChildConfig {
  redisUrl: string;
  pool: string;
  keys: number;
  tag: string;
  model: string;
  gateways: number;
  dashboards: number;
}

export interface OpsOptions {
  keys: number;
  rate: number;
  seconds: number;
  gateways: number;
  dashboards: number;
}

export interface OpsResult {
  keys: number;
  offeredPerSec: number;
  idle: { latency: Dist; failed: number };
  underOps: { latency: Dist; failed: number };
  /** The viewers' calls during the under-ops window, by endpoint. */
  opsCalls: Record<'status' | 'readyz' | 'metrics', Dist & { failed: number }>;
  longestOpsCallMs: number;
  /** SLOWLOG of the under-ops window (commands over 500 us): how many, and the longest. */
  slowlog: { thresholdUs: number; entries: number; longest: { us: number; command: string } | null; byCommand: Record<string, { n: number; maxUs: number }> };
  setupSeconds: number;
}

const SLOW_US = 500;
const CHILD = fileURLToPath(new URL('./ops-child.ts', import.meta.url));
const LUA_DIR = fileURLToPath(new URL('../../../packages/core/lua/', import.meta.url));

/** The same keys in every process of the run (the secrets are derived from `tag`). */
export function opsKeySpecs(n: number, tag: string, model: string): KeySpecInput[] {
  return Array.from({ length: n }, (_, i) => ({
    secret: `sk-bench-ops-${tag}-${String(i).padStart(5, '0')}`,
    name: `ops ${i}`,
    models: [model],
    rpm: 10_000_000,
    rpmBurst: 10_000_000,
    tpm: 0,
    maxConcurrent: 0,
  }));
}

/** A script's name by the sha1 ioredis calls it with (EVALSHA), or by its function's name (FCALL). */
function scriptNames(): Map<string, string> {
  const list = loadScripts(LUA_DIR);
  const fns = buildLibrary(LUA_DIR, list).functions;
  return new Map(list.flatMap((s) => [[createHash('sha1').update(s.lua).digest('hex'), s.file] as const, [fns[s.name]!, s.file] as const]));
}

/** `rate` acquire + release cycles per second for `seconds`, open loop; acquire latency from each call's start. */
async function offer(pool: KeyPool, acquire: { model: string; estimatedTokens: number }, rate: number, seconds: number, stopped: () => boolean) {
  const samples = new SampleBuffer(1 << 16);
  let failed = 0;
  const inflight = new Set<Promise<void>>();
  await evenlySpaced(Math.floor(rate * seconds), 1000 / rate, performance.now(), () => {
    const p = (async () => {
      const a = performance.now();
      try {
        const lease = await pool.acquire(acquire);
        samples.push(performance.now() - a);
        if (!lease.ok) failed++;
        else await lease.release({ status: 200, latencyMs: 100, usage: { promptTokens: 100, completionTokens: 20 } });
      } catch {
        failed++;
      }
    })();
    inflight.add(p);
    void p.finally(() => inflight.delete(p));
  }, stopped);
  await Promise.all(inflight);
  return { latency: dist(samples.sorted()), failed };
}

export async function opsRun(o: OpsOptions & { runId: string; model: string; logger: Logger; log: (m: string) => void; stopped: () => boolean }): Promise<OpsResult> {
  const redis = await openRedis({ spawnAlways: true });
  const admin = adminClient(redis.url);
  const poolName = `bench-${o.runId}-ops`;
  let child: BenchChild<{ type: 'ready'; pid: number; urls: string[] }> | undefined;
  let pool: KeyPool | undefined;
  try {
    await admin.connect();
    const t0 = performance.now();
    const tag = o.runId;
    pool = await KeyPool.connect({ redis: redis.url, config: { pool: poolName, keys: opsKeySpecs(o.keys, tag, o.model) }, logger: o.logger });
    const cfg: OpsChildConfig = { redisUrl: redis.url, pool: poolName, keys: o.keys, tag, model: o.model, gateways: o.gateways, dashboards: o.dashboards };
    child = new BenchChild({ script: CHILD, role: 'ops', label: 'ops', config: cfg, nodeFlags: ['--conditions=@keypool/source'] });
    // the viewers' gateways are other pods on a real fleet (often other machines): on a small
    // machine their JSON and HTTP work must not take the CPU from Redis itself, which is not what
    // is measured (what is: how long Redis is kept busy by their reads)
    setPriority(child.pid, 10);
    await child.ready;
    const setupSeconds = (performance.now() - t0) / 1000;
    const acquire = { model: o.model, estimatedTokens: 100 };
    await offer(pool, acquire, o.rate, 1, o.stopped); // warm-up
    const idle = await offer(pool, acquire, o.rate, o.seconds, o.stopped);
    o.log(`ops: ${o.keys} keys, ${o.rate}/s offered, idle: acquire p50 ${idle.latency.p50Ms} ms p99 ${idle.latency.p99Ms} ms`);

    await admin.config('SET', 'slowlog-log-slower-than', String(SLOW_US));
    await admin.config('SET', 'slowlog-max-len', '100000');
    await child.request('start');
    await sleep(2000); // every viewer has called once: the first reads are in the window too below
    await admin.call('SLOWLOG', 'RESET');
    const underOps = await offer(pool, acquire, o.rate, o.seconds, o.stopped);
    const opsCalls = await child.request<OpsResult['opsCalls']>('stats');
    const raw = (await admin.call('SLOWLOG', 'GET', '100000')) as [number, number, number, (string | Buffer)[]][];
    const names = scriptNames();
    const byCommand: OpsResult['slowlog']['byCommand'] = {};
    let longest: OpsResult['slowlog']['longest'] = null;
    for (const [, , us, args] of raw) {
      const cmd = String(args[0] ?? '').toLowerCase();
      const name = cmd === 'evalsha' || cmd === 'fcall' ? `${cmd} ${names.get(String(args[1])) ?? String(args[1]).slice(0, 10)}` : cmd;
      const c = (byCommand[name] ??= { n: 0, maxUs: 0 });
      c.n++;
      c.maxUs = Math.max(c.maxUs, us);
      if (!longest || us > longest.us) longest = { us, command: name };
    }
    o.log(`ops: under ops: acquire p50 ${underOps.latency.p50Ms} ms p99 ${underOps.latency.p99Ms} ms; longest Redis command ${longest ? `${longest.command} ${longest.us} us` : `none over ${SLOW_US} us`}`);
    return {
      keys: o.keys,
      offeredPerSec: o.rate,
      idle,
      underOps,
      opsCalls,
      longestOpsCallMs: round(Math.max(...Object.values(opsCalls).map((d) => (Number.isFinite(d.maxMs) ? d.maxMs : 0)))),
      slowlog: { thresholdUs: SLOW_US, entries: raw.length, longest, byCommand },
      setupSeconds: round(setupSeconds, 2),
    };
  } finally {
    await child?.stop().catch(() => undefined);
    await pool?.close();
    await deleteKeys(admin, new PoolKeys(poolName).pattern).catch(() => 0);
    admin.disconnect();
    await redis.stop();
  }
}
