/**
 * The gateway benchmark's slices: one side (direct, bare, floor, gateway) at one rate, with the telemetry
 * taken around it (CPU of every process from /proc, Redis command statistics, the gateway's own
 * metrics and timers), and a side's slices pooled into its figures.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import type { SpawnedRedis } from '@keypool/testkit';
import { histogramDelta, parseMetrics, type Scrape } from '../lib/metrics.js';
import { machineCpu, machineShares, procCpuSeconds, procRunqueueWaitNs, type MachineCpu } from '../lib/proc.js';
import { sampleRedis, type CmdStat } from '../lib/redis.js';
import { CORES, fmt } from '../lib/report.js';
import { concat, dist, quantile, round, type Dist } from '../lib/stats.js';
import type { GatewayChildStats } from './child.js';
import { runLoad, type Mode, type Side, type Slice, type SliceTelemetry, type Target } from './load.js';
import { interrupted, log, type Child, type Options } from './options.js';

export interface Env {
  opts: Options;
  redis: SpawnedRedis;
  admin: Redis;
  fake: Child;
  gateway: Child;
  bareProxy: Child;
  floorProxy: Child;
  direct: Target;
  bare: Target;
  floor: Target;
  gw: Target;
  gatewayUrl: string;
}


function gcDelta(before: Scrape, after: Scrape): Record<string, { count: number; totalMs: number; over1Ms: number; over10Ms: number }> {
  const name = 'keypool_process_nodejs_gc_duration_seconds';
  const out: Record<string, { count: number; totalMs: number; over1Ms: number; over10Ms: number }> = {};
  const d = (k: string) => (after.get(k) ?? 0) - (before.get(k) ?? 0);
  for (const k of after.keys()) {
    const m = new RegExp(`^${name}_count\\{kind=([a-z]+)\\}$`).exec(k);
    if (!m) continue;
    const kind = m[1]!;
    const count = d(k);
    if (count <= 0) continue;
    const le = (b: string) => d(`${name}_bucket{kind=${kind},le=${b}}`);
    out[kind] = { count, totalMs: round(d(`${name}_sum{kind=${kind}}`) * 1000, 1), over1Ms: count - le('0.001'), over10Ms: count - le('0.01') };
  }
  return out;
}

interface Sample {
  t: number;
  cpu: { gateway: number; gatewayKernel: number; bare: number; floor: number; fake: number; redis: number; loadgen: number };
  waitNs: Record<'gateway' | 'bare' | 'floor' | 'fake' | 'redis' | 'loadgen', number>;
  machine: MachineCpu | null;
  cmd: Map<string, CmdStat>;
}

async function scrapeGateway(env: Env): Promise<Scrape> {
  const res = await fetch(`${env.gatewayUrl}/metrics`);
  if (!res.ok) throw new Error(`gateway /metrics answered ${res.status}`);
  return parseMetrics(await res.text());
}

async function sample(env: Env): Promise<Sample> {
  const { cmd } = await sampleRedis(env.admin, 'commandstats');
  const self = process.cpuUsage();
  const gw = procCpuSeconds(env.gateway.pid);
  return {
    t: performance.now(),
    cpu: { gateway: gw.total, gatewayKernel: gw.kernel, bare: procCpuSeconds(env.bareProxy.pid).total, floor: procCpuSeconds(env.floorProxy.pid).total, fake: procCpuSeconds(env.fake.pid).total, redis: procCpuSeconds(env.redis.process.pid!).total, loadgen: (self.user + self.system) / 1e6 },
    machine: machineCpu(),
    waitNs: {
      gateway: procRunqueueWaitNs(env.gateway.pid),
      bare: procRunqueueWaitNs(env.bareProxy.pid),
      floor: procRunqueueWaitNs(env.floorProxy.pid),
      fake: procRunqueueWaitNs(env.fake.pid),
      redis: procRunqueueWaitNs(env.redis.process.pid!),
      loadgen: procRunqueueWaitNs(process.pid),
    },
    cmd,
  };
}

function telemetryOf(a: Sample, b: Sample, requests: number): SliceTelemetry {
  const wall = (b.t - a.t) / 1000;
  const d = (k: keyof Sample['cpu']) => b.cpu[k] - a.cpu[k];
  const per = (x: number) => round((x * 1e6) / Math.max(1, requests), 1);
  const commandsPerRequest: Record<string, number> = {};
  const usecPerCall: Record<string, number> = {};
  for (const [name, s] of b.cmd) {
    if (name === 'info') continue;
    const p = a.cmd.get(name) ?? { calls: 0, usec: 0 };
    const calls = s.calls - p.calls;
    if (calls <= 0) continue;
    commandsPerRequest[name] = round(calls / Math.max(1, requests), 3);
    usecPerCall[name] = round((s.usec - p.usec) / calls, 2);
  }
  let machineBusy: number | null = null;
  let machineSteal: number | null = null;
  let others: number | null = null;
  const shares = machineShares(a.machine, b.machine);
  if (shares) {
    machineBusy = round(shares.busy, 3);
    machineSteal = round(shares.steal, 3);
    // cores busy with processes that are not this benchmark's (other work on a shared machine)
    const ours = (d('gateway') + d('bare') + d('floor') + d('fake') + d('redis') + d('loadgen')) / wall;
    others = round(Math.max(0, machineBusy * CORES - ours), 3);
  }
  return {
    cores: { gateway: round(d('gateway') / wall, 3), bare: round(d('bare') / wall, 3), floor: round(d('floor') / wall, 3), fake: round(d('fake') / wall, 3), redis: round(d('redis') / wall, 3), loadgen: round(d('loadgen') / wall, 3), machineBusy, machineSteal, others },
    cpuUsPerRequest: { gateway: per(d('gateway')), gatewayKernel: per(d('gatewayKernel')), bare: per(d('bare')), floor: per(d('floor')), fake: per(d('fake')), redis: per(d('redis')), loadgen: per(d('loadgen')) },
    redis: { commandsPerRequest, usecPerCall },
    runqueueWaitMsPerS: {
      gateway: round((b.waitNs.gateway - a.waitNs.gateway) / 1e6 / wall, 2),
      bare: round((b.waitNs.bare - a.waitNs.bare) / 1e6 / wall, 2),
      floor: round((b.waitNs.floor - a.waitNs.floor) / 1e6 / wall, 2),
      fake: round((b.waitNs.fake - a.waitNs.fake) / 1e6 / wall, 2),
      redis: round((b.waitNs.redis - a.waitNs.redis) / 1e6 / wall, 2),
      loadgen: round((b.waitNs.loadgen - a.waitNs.loadgen) / 1e6 / wall, 2),
    },
  };
}

function targetOf(env: Env, side: Side): Target {
  return side === 'direct' ? env.direct : side === 'bare' ? env.bare : side === 'floor' ? env.floor : env.gw;
}

/** One slice with its telemetry, taken between slices (the scrapes never overlap the load). */
async function slice(env: Env, side: Side, mode: Mode, rate: number, seconds: number): Promise<Slice> {
  const target = targetOf(env, side);
  let m0: Scrape | undefined;
  if (side === 'gateway') {
    m0 = await scrapeGateway(env); // also resets the event-loop delay histogram
    await env.gateway.request('stats'); // and the call timers
  }
  const proxy = side === 'gateway' ? env.gateway : side === 'bare' ? env.bareProxy : side === 'floor' ? env.floorProxy : undefined;
  await sleep(50);
  const s0 = await sample(env);
  await proxy?.request('heap-start');
  const r = await runLoad(target, mode, rate, seconds, env.opts.timeoutMs);
  const heap = await proxy?.request<{ allocatedBytes: number; youngGcs: number; fullGcs: number }>('heap-stop');
  const s1 = await sample(env);
  const telemetry = telemetryOf(s0, s1, r.sent);
  if (heap) telemetry.heap = { allocatedBytesPerRequest: Math.round(heap.allocatedBytes / Math.max(1, r.sent)), youngGcs: heap.youngGcs, fullGcs: heap.fullGcs };
  if (side === 'gateway' && m0) {
    const calls = await env.gateway.request<GatewayChildStats>('stats');
    const m1 = await scrapeGateway(env);
    const lag = (q: string) => round(((m1.get(`keypool_process_nodejs_eventloop_lag_${q}_seconds{}`) ?? NaN) * 1000), 3);
    telemetry.gateway = {
      overhead: histogramDelta(m0, m1, 'keypool_gateway_overhead_seconds', 'endpoint=chat.completions'),
      acquire: histogramDelta(m0, m1, 'keypool_acquire_duration_seconds', 'result=ok'),
      duration: histogramDelta(m0, m1, 'keypool_gateway_request_duration_seconds', 'endpoint=chat.completions'),
      eventLoopDelayMs: { p50: lag('p50'), p90: lag('p90'), p99: lag('p99'), max: lag('max'), mean: lag('mean') },
      gc: gcDelta(m0, m1),
      calls,
    };
  }
  return { ...r, telemetry };
}

export interface SideFigures {
  latency: Dist;
  firstByte: Dist;
  requests: number;
  ok: number;
  errors: number;
  errorKinds: Record<string, number>;
  errorSamples: Record<string, string>;
  /** mean over the slices of the rate actually sent */
  achievedRps: number;
  sendLagP99Ms: number;
  sendLagMaxMs: number;
  slices: { achievedRps: number; p50Ms: number; p99Ms: number; errors: number; telemetry: SliceTelemetry }[];
}

function side(slices: Slice[]): SideFigures {
  const lag = concat(slices.map((s) => s.sendLag)).sort();
  const errorKinds: Record<string, number> = {};
  for (const s of slices) for (const [k, n] of Object.entries(s.errorKinds)) errorKinds[k] = (errorKinds[k] ?? 0) + n;
  const errorSamples: Record<string, string> = {};
  for (const s of slices) for (const [k, b] of Object.entries(s.errorSamples)) errorSamples[k] ??= b;
  return {
    latency: dist(concat(slices.map((s) => s.latency))),
    firstByte: dist(concat(slices.map((s) => s.firstByte))),
    requests: slices.reduce((n, s) => n + s.sent, 0),
    ok: slices.reduce((n, s) => n + s.ok, 0),
    errors: slices.reduce((n, s) => n + s.errors + (s.scheduled - s.sent), 0),
    errorKinds,
    errorSamples,
    achievedRps: round(slices.reduce((n, s) => n + s.achievedRps, 0) / Math.max(1, slices.length), 1),
    sendLagP99Ms: round(quantile(lag, 0.99)),
    sendLagMaxMs: round(lag[lag.length - 1] ?? NaN),
    slices: slices.map((s) => ({ achievedRps: round(s.achievedRps, 1), p50Ms: round(quantile(s.latency, 0.5)), p99Ms: round(quantile(s.latency, 0.99)), errors: s.errors, telemetry: s.telemetry })),
  };
}

export function overheadOf(d: Dist, g: Dist): { p50Ms: number; p90Ms: number; p99Ms: number; p999Ms: number; meanMs: number } {
  return { p50Ms: round(g.p50Ms - d.p50Ms), p90Ms: round(g.p90Ms - d.p90Ms), p99Ms: round(g.p99Ms - d.p99Ms), p999Ms: round(g.p999Ms - d.p999Ms), meanMs: round(g.meanMs - d.meanMs) };
}

/** Telemetry of a side's slices, averaged (gateway histograms: the mean of the slices' quantiles). */
export function meanTelemetry(slices: SideFigures['slices']): SliceTelemetry {
  const ts = slices.map((s) => s.telemetry);
  const avg = (f: (t: SliceTelemetry) => number | null | undefined) => {
    const xs = ts.map(f).filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
    return xs.length ? round(xs.reduce((a, b) => a + b, 0) / xs.length) : NaN;
  };
  const avgRecord = (f: (t: SliceTelemetry) => Record<string, number>) => {
    const out: Record<string, number> = {};
    for (const k of new Set(ts.flatMap((t) => Object.keys(f(t))))) out[k] = avg((t) => f(t)[k]);
    return out;
  };
  const out: SliceTelemetry = {
    cores: { gateway: avg((t) => t.cores.gateway), bare: avg((t) => t.cores.bare), floor: avg((t) => t.cores.floor), fake: avg((t) => t.cores.fake), redis: avg((t) => t.cores.redis), loadgen: avg((t) => t.cores.loadgen), machineBusy: avg((t) => t.cores.machineBusy), machineSteal: avg((t) => t.cores.machineSteal), others: avg((t) => t.cores.others) },
    cpuUsPerRequest: { gateway: avg((t) => t.cpuUsPerRequest.gateway), gatewayKernel: avg((t) => t.cpuUsPerRequest.gatewayKernel), bare: avg((t) => t.cpuUsPerRequest.bare), floor: avg((t) => t.cpuUsPerRequest.floor), fake: avg((t) => t.cpuUsPerRequest.fake), redis: avg((t) => t.cpuUsPerRequest.redis), loadgen: avg((t) => t.cpuUsPerRequest.loadgen) },
    redis: { commandsPerRequest: avgRecord((t) => t.redis.commandsPerRequest), usecPerCall: avgRecord((t) => t.redis.usecPerCall) },
    runqueueWaitMsPerS: {
      gateway: avg((t) => t.runqueueWaitMsPerS.gateway),
      bare: avg((t) => t.runqueueWaitMsPerS.bare),
      floor: avg((t) => t.runqueueWaitMsPerS.floor),
      fake: avg((t) => t.runqueueWaitMsPerS.fake),
      redis: avg((t) => t.runqueueWaitMsPerS.redis),
      loadgen: avg((t) => t.runqueueWaitMsPerS.loadgen),
    },
  };
  if (ts.every((t) => t.heap)) {
    out.heap = { allocatedBytesPerRequest: Math.round(avg((t) => t.heap!.allocatedBytesPerRequest)), youngGcs: ts.reduce((n, t) => n + t.heap!.youngGcs, 0), fullGcs: ts.reduce((n, t) => n + t.heap!.fullGcs, 0) };
  }
  if (ts.every((t) => t.gateway)) {
    const h = (f: (g: NonNullable<SliceTelemetry['gateway']>) => ReturnType<typeof histogramDelta>) => ({
      count: ts.reduce((n, t) => n + f(t.gateway!).count, 0),
      aboveLastBucket: ts.reduce((n, t) => n + f(t.gateway!).aboveLastBucket, 0),
      lastBucketMs: f(ts[0]!.gateway!).lastBucketMs,
      p50Ms: avg((t) => f(t.gateway!).p50Ms),
      p90Ms: avg((t) => f(t.gateway!).p90Ms),
      p99Ms: avg((t) => f(t.gateway!).p99Ms),
      meanMs: avg((t) => f(t.gateway!).meanMs),
    });
    const c = (k: 'admit' | 'acquire' | 'release' | 'settle') => ({
      calls: ts.reduce((n, t) => n + t.gateway!.calls[k].calls, 0),
      p50Ms: avg((t) => t.gateway!.calls[k].p50Ms),
      p90Ms: avg((t) => t.gateway!.calls[k].p90Ms),
      p99Ms: avg((t) => t.gateway!.calls[k].p99Ms),
      maxMs: Math.max(...ts.map((t) => t.gateway!.calls[k].maxMs)),
      meanMs: avg((t) => t.gateway!.calls[k].meanMs),
    });
    out.gateway = {
      overhead: h((g) => g.overhead),
      acquire: h((g) => g.acquire),
      duration: h((g) => g.duration),
      eventLoopDelayMs: { p50: avg((t) => t.gateway!.eventLoopDelayMs.p50), p90: avg((t) => t.gateway!.eventLoopDelayMs.p90), p99: avg((t) => t.gateway!.eventLoopDelayMs.p99), max: Math.max(...ts.map((t) => t.gateway!.eventLoopDelayMs.max)), mean: avg((t) => t.gateway!.eventLoopDelayMs.mean) },
      calls: { admit: c('admit'), acquire: c('acquire'), release: c('release'), settle: c('settle'), eventLoopUtilization: avg((t) => t.gateway!.calls.eventLoopUtilization) },
      gc: {},
    };
    for (const t of ts) {
      for (const [kind, v] of Object.entries(t.gateway!.gc)) {
        const acc = (out.gateway.gc[kind] ??= { count: 0, totalMs: 0, over1Ms: 0, over10Ms: 0 });
        acc.count += v.count;
        acc.totalMs = round(acc.totalMs + v.totalMs, 1);
        acc.over1Ms += v.over1Ms;
        acc.over10Ms += v.over10Ms;
      }
    }
  }
  return out;
}

/**
 * The sides in `sides` order, then in reverse (ABBA, ABCCBA or ABCDDCBA), each slice seconds/2, so each side
 * gets `seconds` and a drift in machine load hits every side alike. Samples of a side are pooled.
 */
export async function measureSides(env: Env, mode: Mode, rate: number, seconds: number, label: string, sides: Side[]): Promise<Partial<Record<Side, SideFigures>> | null> {
  const order = [...sides, ...[...sides].reverse()];
  const got: Partial<Record<Side, Slice[]>> = {};
  for (const s of order) {
    if (interrupted()) return null;
    const r = await slice(env, s, mode, rate, seconds / 2);
    (got[s] ??= []).push(r);
    log(`${label}: ${s.padEnd(7)} ${mode.padEnd(6)} ${fmt(r.achievedRps)} req/s sent, p50 ${fmt(quantile(r.latency, 0.5), 2)} ms, p99 ${fmt(quantile(r.latency, 0.99), 2)} ms, errors ${r.errors + r.scheduled - r.sent}`);
    for (const [k, n] of Object.entries(r.errorKinds)) log(`  ${n} x ${k}${r.errorSamples[k] ? `: ${r.errorSamples[k]}` : ''}`);
  }
  if (interrupted()) return null;
  const out: Partial<Record<Side, SideFigures>> = {};
  for (const sd of sides) out[sd] = side(got[sd]!);
  return out;
}

export async function warm(env: Env, mode: Mode, rate: number, seconds: number, sides: Side[] = ['direct', 'gateway']): Promise<void> {
  for (const t of sides.map((sd) => targetOf(env, sd))) {
    if (interrupted() || seconds <= 0) return;
    const r = await runLoad(t, mode, rate, seconds, env.opts.timeoutMs);
    if (r.errors && !interrupted()) log(`warm-up ${t.side} ${mode}: ${r.errors} errors ${JSON.stringify(r.errorKinds)}`);
  }
}
