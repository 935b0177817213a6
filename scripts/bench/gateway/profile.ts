/**
 * With --profile, after every figure is taken (extra slices that touch none): Redis server time per
 * keypool script (SLOWLOG at a 0 us threshold), a V8 CPU profile of the gateway and its sampling
 * heap profile, each summarized by owner, area and function.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { keypoolLibrary, scripts } from '@keypool/core';
import { dist, quantile, round } from '../lib/stats.js';
import { runLoad, type Mode } from './load.js';
import { warm, type Env } from './measure.js';
import { log } from './options.js';

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number; children?: number[] }[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface HotSpot {
  name: string;
  where: string;
  selfMs: number;
  selfShare: number;
}

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
/** A frame of a file (ES modules come as file:// URLs, CommonJS ones, in heap profiles, as paths). */
const isFile = (url: string) => url.startsWith('file://') || url.startsWith('/');

function whereOf(url: string, line: number): string {
  if (!url) return '';
  let u = url.startsWith('file://') ? fileURLToPath(url) : url;
  if (u.startsWith(ROOT)) u = u.slice(ROOT.length);
  return `${u}:${line + 1}`;
}

/** The area a frame belongs to: a package of node_modules, a source file of this repo, node internals. */
function areaOf(url: string): string {
  if (!url) return '(native / V8)';
  let u = url.startsWith('file://') ? fileURLToPath(url) : url;
  if (u.startsWith(ROOT)) u = u.slice(ROOT.length);
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(u);
  if (nm) return `npm:${nm[1]}`;
  if (u.startsWith('node:')) return u.replace(/^node:internal\//, 'node:').split('/').slice(0, 2).join('/');
  return u;
}

function summarizeProfile(p: CpuProfile, requests: number) {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<number, number>(); // node id -> µs
  const samples = p.samples ?? [];
  const deltas = p.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) self.set(samples[i]!, (self.get(samples[i]!) ?? 0) + (deltas[i + 1] ?? deltas[i] ?? 0));
  let total = 0;
  let idle = 0;
  for (const [id, us] of self) {
    total += us;
    if (byId.get(id)?.callFrame.functionName === '(idle)') idle += us;
  }
  const busy = total - idle;
  const fnSelf = new Map<string, { name: string; where: string; us: number }>();
  const areaSelf = new Map<string, number>();
  const fnTotal = new Map<string, { name: string; where: string; us: number }>();
  const ownerSelf = new Map<string, number>();
  /** Who caused a sample: the nearest repo or npm frame on its stack, else the nearest node: frame. */
  const ownerOf = (id: number): string => {
    let nodeFrame: string | undefined;
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const c = byId.get(cur)!.callFrame;
      if (isFile(c.url)) return areaOf(c.url);
      if (!nodeFrame && c.url.startsWith('node:')) nodeFrame = `${areaOf(c.url)} (no app frame)`;
    }
    return nodeFrame ?? (byId.get(id)!.callFrame.functionName || '(native / V8)');
  };
  for (const [id, us] of self) {
    const n = byId.get(id)!;
    const cf = n.callFrame;
    if (cf.functionName === '(idle)') continue;
    const name = cf.functionName || '(anonymous)';
    const where = whereOf(cf.url, cf.lineNumber);
    const key = `${name} ${where}`;
    const f = fnSelf.get(key) ?? { name, where, us: 0 };
    f.us += us;
    fnSelf.set(key, f);
    const area = cf.url ? areaOf(cf.url) : name.startsWith('(') ? name : '(native / V8)';
    areaSelf.set(area, (areaSelf.get(area) ?? 0) + us);
    const owner = ownerOf(id);
    ownerSelf.set(owner, (ownerSelf.get(owner) ?? 0) + us);
    // inclusive time of this repo's functions: each distinct one on the stack once
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const c = byId.get(cur)!.callFrame;
      if (!c.url.includes('/packages/') || c.url.includes('node_modules')) continue;
      const k = `${c.functionName || '(anonymous)'} ${whereOf(c.url, c.lineNumber)}`;
      if (seen.has(k)) continue;
      seen.add(k);
      const t = fnTotal.get(k) ?? { name: c.functionName || '(anonymous)', where: whereOf(c.url, c.lineNumber), us: 0 };
      t.us += us;
      fnTotal.set(k, t);
    }
  }
  const share = (us: number) => round(us / Math.max(1, busy), 4);
  return {
    wallMs: round((p.endTime - p.startTime) / 1000, 1),
    busyMs: round(busy / 1000, 1),
    busyUsPerRequest: round(busy / Math.max(1, requests), 1),
    topSelf: [...fnSelf.values()].sort((a, b) => b.us - a.us).slice(0, 20).map((f): HotSpot => ({ name: f.name, where: f.where, selfMs: round(f.us / 1000, 1), selfShare: share(f.us) })),
    byOwner: [...ownerSelf.entries()].sort((a, b) => b[1] - a[1]).slice(0, 16).map(([owner, us]) => ({ owner, ms: round(us / 1000, 1), share: share(us) })),
    byArea: [...areaSelf.entries()].sort((a, b) => b[1] - a[1]).slice(0, 16).map(([area, us]) => ({ area, selfMs: round(us / 1000, 1), selfShare: share(us) })),
    repoInclusive: [...fnTotal.values()].sort((a, b) => b.us - a.us).slice(0, 20).map((f) => ({ name: f.name, where: f.where, totalMs: round(f.us / 1000, 1), totalShare: share(f.us) })),
  };
}

interface HeapNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: HeapNode[];
}

/** Bytes allocated (sampled; objects GC collected included), per request, by owner and by function. */
function summarizeAllocations(head: HeapNode, requests: number) {
  let total = 0;
  const byOwner = new Map<string, number>();
  const byFn = new Map<string, { name: string; where: string; bytes: number }>();
  const walk = (n: HeapNode, owner: string | undefined, nodeOwner: string | undefined) => {
    const cf = n.callFrame;
    const o = isFile(cf.url) ? areaOf(cf.url) : owner;
    const no = !o && cf.url.startsWith('node:') ? `${areaOf(cf.url)} (no app frame)` : nodeOwner;
    if (n.selfSize > 0) {
      total += n.selfSize;
      const key = o ?? no ?? '(native / V8)';
      byOwner.set(key, (byOwner.get(key) ?? 0) + n.selfSize);
      const name = cf.functionName || '(anonymous)';
      const where = whereOf(cf.url, cf.lineNumber);
      const f = byFn.get(`${name} ${where}`) ?? { name, where, bytes: 0 };
      f.bytes += n.selfSize;
      byFn.set(`${name} ${where}`, f);
    }
    for (const c of n.children) walk(c, o, no);
  };
  walk(head, undefined, undefined);
  const per = (b: number) => round(b / Math.max(1, requests) / 1024, 2);
  return {
    totalMB: round(total / 1024 / 1024, 1),
    kbPerRequest: per(total),
    byOwner: [...byOwner.entries()].sort((a, b) => b[1] - a[1]).slice(0, 12).map(([owner, b]) => ({ owner, kbPerRequest: per(b), share: round(b / Math.max(1, total), 4) })),
    topFunctions: [...byFn.values()].sort((a, b) => b.bytes - a.bytes).slice(0, 15).map((f) => ({ name: f.name, where: f.where, kbPerRequest: per(f.bytes), share: round(f.bytes / Math.max(1, total), 4) })),
  };
}

export async function allocationsOfGateway(env: Env, mode: Mode, dir: string) {
  const file = join(dir, `gateway-${mode}.heapprofile`);
  await warm(env, mode, env.opts.rate, 1, ['gateway']);
  await env.gateway.request('alloc-start');
  const r = await runLoad(env.gw, mode, env.opts.rate, Math.min(env.opts.stepSeconds, env.opts.seconds, 4), env.opts.timeoutMs);
  await env.gateway.request('alloc-stop', { file });
  const profile = JSON.parse(readFileSync(file, 'utf8')) as { head: HeapNode };
  return { mode, file, requests: r.sent, ...summarizeAllocations(profile.head, r.sent) };
}

export async function profileGateway(env: Env, mode: Mode, dir: string) {
  const file = join(dir, `gateway-${mode}.cpuprofile`);
  await env.gateway.request('profile-start');
  const r = await runLoad(env.gw, mode, env.opts.rate, Math.min(env.opts.stepSeconds, env.opts.seconds), env.opts.timeoutMs);
  await env.gateway.request('profile-stop', { file });
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  return { mode, file, requests: r.sent, errors: r.errors, latency: dist(r.latency), ...summarizeProfile(profile, r.sent) };
}

// ---- Redis time per script (SLOWLOG with a 0 us threshold, in a separate slice) ---------------

export interface ScriptTime {
  script: string;
  callsPerRequest: number;
  usPerRequest: number;
  p50Us: number;
  p99Us: number;
  meanUs: number;
}

/** Server time of every command Redis ran during one gateway slice, by keypool script (EVALSHA sha -> name). */
export async function redisScriptTimes(env: Env, mode: Mode): Promise<{ mode: Mode; requests: number; scripts: ScriptTime[]; note: string }> {
  await warm(env, mode, env.opts.rate, 1);
  const fns = keypoolLibrary().functions;
  const names = new Map(scripts().flatMap((sc) => [[createHash('sha1').update(sc.lua).digest('hex'), sc.name] as const, [fns[sc.name]!, sc.name] as const]));
  const admin = env.admin;
  const [, threshold] = (await admin.config('GET', 'slowlog-log-slower-than')) as [string, string];
  const [, maxLen] = (await admin.config('GET', 'slowlog-max-len')) as [string, string];
  const seconds = Math.min(env.opts.stepSeconds, env.opts.seconds, 4);
  // every command is logged, those a script runs included (about 25 per request)
  const cap = Math.ceil(env.opts.rate * seconds * 60 + 10_000);
  await admin.config('SET', 'slowlog-max-len', String(cap));
  await admin.call('SLOWLOG', 'RESET');
  await admin.config('SET', 'slowlog-log-slower-than', '0');
  let entries: unknown[];
  let requests: number;
  try {
    requests = (await runLoad(env.gw, mode, env.opts.rate, seconds, env.opts.timeoutMs)).sent;
  } finally {
    await admin.config('SET', 'slowlog-log-slower-than', threshold);
    entries = (await admin.call('SLOWLOG', 'GET', '-1')) as unknown[];
    await admin.call('SLOWLOG', 'RESET');
    await admin.config('SET', 'slowlog-max-len', maxLen);
  }
  const by = new Map<string, number[]>();
  for (const e of entries) {
    // [id, timestamp, duration us, [args...], client addr, client name]
    const [, , us, args] = e as [number, number, number, string[]];
    const cmd = String(args?.[0] ?? '').toLowerCase();
    if (cmd === 'config' || cmd === 'slowlog') continue;
    const name = cmd === 'evalsha' || cmd === 'fcall' ? (names.get(String(args[1])) ?? `${cmd} ${String(args[1]).slice(0, 8)}`) : cmd;
    const xs = by.get(name) ?? [];
    xs.push(us);
    by.set(name, xs);
  }
  const out: ScriptTime[] = [...by.entries()].map(([script, xs]) => {
    const sorted = Float64Array.from(xs).sort();
    const sum = xs.reduce((a, b) => a + b, 0);
    return { script, callsPerRequest: round(xs.length / Math.max(1, requests), 3), usPerRequest: round(sum / Math.max(1, requests), 1), p50Us: quantile(sorted, 0.5), p99Us: quantile(sorted, 0.99), meanUs: round(sum / xs.length, 1) };
  });
  out.sort((a, b) => b.usPerRequest - a.usPerRequest);
  if (entries.length >= cap) log(`SLOWLOG held ${entries.length} entries, its cap: per-request figures are too low`);
  return { mode, requests, scripts: out, note: 'SLOWLOG durations: time inside Redis executing the command (a script: its whole run, the commands it calls included), not network or queueing' };
}
