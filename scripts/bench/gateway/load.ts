/**
 * The gateway benchmark's load generator: node:http with one keep-alive agent, open loop at a fixed
 * rate (send times fixed in advance, latency from the scheduled send time), the same code for every
 * target (the fake upstream directly, the bare proxy, the gateway).
 */
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { evenlySpaced } from '../lib/load.js';
import { MAX_TOKENS, MODEL, interrupted } from './options.js';
import type { histogramDelta } from '../lib/metrics.js';
import type { GatewayChildStats } from './child.js';

/** What was measured around one load slice: CPU, run-queue waits, Redis, and the gateway's own histograms. */
export interface SliceTelemetry {
  /** CPU cores (CPU seconds per wall second) of each process over the slice */
  cores: { gateway: number; bare: number; floor: number; fake: number; redis: number; loadgen: number; machineBusy: number | null; machineSteal: number | null; others: number | null };
  /** CPU microseconds per request sent (gatewayKernel: the part of gateway's in the kernel: syscalls, loopback TCP) */
  cpuUsPerRequest: { gateway: number; gatewayKernel: number; bare: number; floor: number; fake: number; redis: number; loadgen: number };
  /** ms per second each process's main thread was runnable but waited for a CPU (2 cores, 6 processes + others) */
  runqueueWaitMsPerS: Record<'gateway' | 'bare' | 'floor' | 'fake' | 'redis' | 'loadgen', number>;
  /** Redis commands per request and server usec per call (script commands included) */
  redis: { commandsPerRequest: Record<string, number>; usecPerCall: Record<string, number> };
  /** bare, floor and gateway slices: what that proxy process allocated on its V8 heap (lib/heap-allocations.ts) */
  heap?: { allocatedBytesPerRequest: number; youngGcs: number; fullGcs: number };
  /** gateway slices only */
  gateway?: {
    overhead: ReturnType<typeof histogramDelta>;
    acquire: ReturnType<typeof histogramDelta>;
    duration: ReturnType<typeof histogramDelta>;
    eventLoopDelayMs: { p50: number; p90: number; p99: number; max: number; mean: number };
    /** GC in the gateway over the slice, by kind (prom-client nodejs_gc_duration_seconds) */
    gc: Record<string, { count: number; totalMs: number; over1Ms: number; over10Ms: number }>;
    calls: GatewayChildStats;
  };
}

export interface Target {
  side: Side;
  host: string;
  port: number;
  path: string;
  authorization: string;
}

export type Mode = 'chat' | 'stream';
/**
 * direct: the fake upstream itself; bare: a minimal Node proxy (baseline); floor: the bare proxy plus
 * one trivial script call to Redis before forwarding and one after (the least any proxy with shared
 * state in Redis pays); gateway: keypool
 */
export type Side = 'direct' | 'bare' | 'floor' | 'gateway';

/** Raw samples of one slice (ms, from each request's scheduled send time). */
export interface Slice {
  side: Target['side'];
  mode: Mode;
  rate: number;
  scheduled: number;
  sent: number;
  ok: number;
  errors: number;
  errorKinds: Record<string, number>;
  /** the first answer body of each non-200 kind (truncated) */
  errorSamples: Record<string, string>;
  /** request start -> end of the body (last byte) */
  latency: Float64Array;
  /** request start -> first body byte */
  firstByte: Float64Array;
  /** how late the load generator sent, ms */
  sendLag: Float64Array;
  /** (sent - 1) / (last send - first send): the rate actually offered */
  achievedRps: number;
  wallSeconds: number;
  telemetry: SliceTelemetry;
}

/** ` code` of an OpenAI-shaped error body (the gateway's own codes say which refusal it was). */
function errorCodeOf(body: string): string {
  try {
    const e = (JSON.parse(body) as { error?: { code?: unknown; type?: unknown; message?: unknown } }).error;
    const code = typeof e?.code === 'string' ? e.code : typeof e?.type === 'string' ? e.type : '';
    return code ? ` ${code}` : '';
  } catch {
    return '';
  }
}

export const agent = new http.Agent({ keepAlive: true, keepAliveMsecs: 10_000, maxSockets: Infinity, maxFreeSockets: 2048, scheduling: 'lifo' });

function bodyOf(mode: Mode): Buffer {
  return Buffer.from(
    JSON.stringify({
      model: MODEL,
      messages: [{ role: 'user', content: 'Give me one short sentence about connection pools, please.' }],
      max_tokens: MAX_TOKENS,
      ...(mode === 'stream' ? { stream: true } : {}),
    }),
  );
}
const BODIES: Record<Mode, Buffer> = { chat: bodyOf('chat'), stream: bodyOf('stream') };

/**
 * Send `rate` requests per second for `seconds` to one target, open loop, and wait for every answer.
 * The same code serves both targets; only host, port, path and the bearer differ.
 */
export async function runLoad(target: Target, mode: Mode, rate: number, seconds: number, timeoutMs: number): Promise<Omit<Slice, 'telemetry'>> {
  const n = Math.max(1, Math.round(rate * seconds));
  const interval = 1000 / rate;
  const latency = new Float64Array(n).fill(NaN);
  const firstByte = new Float64Array(n).fill(NaN);
  const sendLag = new Float64Array(n);
  const errorKinds: Record<string, number> = {};
  const errorSamples: Record<string, string> = {};
  const body = BODIES[mode];
  const headers = { authorization: target.authorization, 'content-type': 'application/json', 'content-length': String(body.length), accept: mode === 'stream' ? 'text/event-stream' : 'application/json' };
  let ok = 0;
  let errors = 0;
  let sent = 0;
  let outstanding = 0;
  let firstSent = 0;
  let lastSent = 0;
  let allDone: () => void = () => {};
  const done = new Promise<void>((r) => (allDone = r));
  let scheduling = true;
  const fail = (kind: string) => {
    errors++;
    errorKinds[kind] = (errorKinds[kind] ?? 0) + 1;
  };
  const finished = () => {
    outstanding--;
    if (!scheduling && outstanding === 0) allDone();
  };

  const fire = (i: number, at: number) => {
    const now = performance.now();
    sendLag[i] = now - at;
    if (sent === 0) firstSent = now;
    lastSent = now;
    sent++;
    outstanding++;
    let over = false;
    const end = (kind: string | null) => {
      if (over) return;
      over = true;
      if (kind) fail(kind);
      finished();
    };
    const req = http.request({ host: target.host, port: target.port, path: target.path, method: 'POST', agent, headers });
    req.setTimeout(timeoutMs, () => req.destroy(new Error('timeout')));
    req.on('error', (e: NodeJS.ErrnoException) => end(e.message === 'timeout' ? 'timeout' : `network ${e.code ?? e.message}`));
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      let bytes = 0;
      let tail = '';
      let errorBody = '';
      res.on('data', (c: Buffer) => {
        if (bytes === 0) firstByte[i] = performance.now() - at;
        bytes += c.length;
        if (mode === 'stream') tail = (tail + c.toString('latin1')).slice(-24);
        if (status !== 200 && errorBody.length < 4096) errorBody += c.toString('utf8');
      });
      res.on('end', () => {
        if (over) return;
        const t = performance.now() - at;
        if (status !== 200) {
          const kind = `status ${status}${errorCodeOf(errorBody)}`;
          errorSamples[kind] ??= errorBody.slice(0, 300);
          return end(kind);
        }
        if (bytes === 0) return end('empty body');
        if (mode === 'stream' && !tail.includes('[DONE]')) return end('stream without [DONE]');
        latency[i] = t;
        ok++;
        end(null);
      });
      res.on('error', (e: NodeJS.ErrnoException) => end(`response ${e.code ?? e.message}`));
    });
    req.end(body);
  };

  const t0 = performance.now() + 20;
  await evenlySpaced(n, interval, t0, fire, interrupted);
  scheduling = false;
  if (outstanding === 0) allDone();
  await done;
  const wallSeconds = (performance.now() - t0) / 1000;
  // unsent (interrupted) and failed requests have no latency: keep the measured ones only
  const keep = (a: Float64Array) => a.filter((x) => Number.isFinite(x)).sort();
  return {
    side: target.side,
    mode,
    rate,
    scheduled: n,
    sent,
    ok,
    errors,
    errorKinds,
    errorSamples,
    latency: keep(latency),
    firstByte: keep(firstByte),
    sendLag: sendLag.subarray(0, sent).sort(),
    achievedRps: sent > 1 && lastSent > firstSent ? (sent - 1) / ((lastSent - firstSent) / 1000) : NaN,
    wallSeconds,
  };
}

