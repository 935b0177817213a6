/**
 * The child processes of scripts/bench/gateway.ts, one role each (started by it with
 * `node --import tsx scripts/bench/gateway/child.ts <role>` and an IPC channel; not meant to be run
 * by hand):
 *
 *   fake     the fake OpenAI upstream (packages/testkit fake-openai), fixed latency, no rate limits
 *            unless a key has an rpm (and a limiter: bench:realistic's quantized windows);
 *   gateway  ONE keypool gateway: serve() from packages/server with a config object built here
 *            (the given keys, without limits unless given an rpm, pointing at the fake; logLevel warn;
 *            the given Redis),
 *            and a gateway token made with pool.tokens.create;
 *   bare     a baseline, not keypool: the least a Node proxy hop does (node:http server, read the
 *            body, forward it with one fixed key through a keep-alive agent like the gateway's,
 *            pipe the answer back). Gateway minus bare = what keypool's own work costs. Given
 *            several keys it takes them in turn (bench:realistic's naive round-robin proxy).
 *            Given a Redis URL it is bench:gateway's floor: before forwarding it waits for one
 *            trivial script call (INCR of one key) and after the answer it sends one more (DECR),
 *            unawaited, through ioredis: the least any proxy that keeps its shared state in Redis
 *            pays per request (a Redis round trip on the path, two script calls, an ioredis client).
 *
 * The configuration comes base64-encoded JSON in argv; the child answers `{ type: 'ready', ... }` on
 * the IPC channel once it serves. Requests from the parent, each `{ id, type }`, answered
 * `{ id, ok, value | error }`:
 *
 *   stats      (gateway) Redis-bound calls on the request path timed in this process since the last
 *              `stats` (pool.acquire: the round trip a request waits for, the token admitted in
 *              it, acquire's sleep until a reservation's start included; lease.release, the token
 *              settled in it: after the answer, off the request path; tokens.admit and
 *              tokens.settle alone: only off the main path), as percentiles in ms; the
 *              acquire script runs (polls included) and the reservations granted;
 *   limits     (gateway) each key's effective and provider-reported rpm (the pool's status);
 *   profile-start / profile-stop { file }   (gateway) a V8 CPU profile of this process (node:inspector),
 *              written to `file` (positions mapped back to the TypeScript sources);
 *   alloc-start / alloc-stop { file }   (gateway) V8's sampling heap profile, objects collected by GC
 *              included (so: what was allocated, not what survived), written to `file`;
 *   counters   (fake) the fake's counters;
 *   heap-start / heap-stop   (gateway, bare) bytes allocated on the V8 heap in between (lib/heap-allocations.ts);
 *   stop       close everything and exit 0.
 *
 * A child whose IPC channel closes (the parent died or exited) shuts down by itself, so no child
 * outlives the benchmark; SIGINT / SIGTERM (Ctrl-C reaches the whole process group) do the same.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Session } from 'node:inspector/promises';
import { writeFile } from 'node:fs/promises';
import { SourceMap } from 'node:module';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { serve } from '@keypool/server';
import { startFakeOpenAI, type LimiterMode } from '@keypool/testkit/fake-openai';
import { runChildRole, send, serveRequests } from '../lib/child-ipc.js';
import { benchGatewayConfig, type BenchKey } from '../lib/gateway-config.js';
import { HeapAllocations } from '../lib/heap-allocations.js';
import { dist } from '../lib/stats.js';

export interface FakeChildConfig {
  keys: { key: string; name: string; rpm?: number; limiter?: LimiterMode }[];
  model: string;
  latencyMs: number;
  chunkDelayMs: number;
}

export interface GatewayChildConfig {
  redisUrl: string;
  fakeUrl: string;
  pool: string;
  model: string;
  keys: BenchKey[];
  adminToken: string;
  limits?: { windowMarginMs?: number; learn?: boolean };
  priority?: Record<string, unknown>;
}

export interface BareChildConfig {
  fakeUrl: string;
  key: string;
  /** several keys: each request goes with the next one in turn (no retries, no state shared) */
  keys?: string[];
  /** the floor: one script call to this Redis before forwarding and one after the answer */
  redisUrl?: string;
}

/** The floor's two script calls: a counter taken before forwarding and given back after. */
interface FloorRedis {
  floorTake(key: string): Promise<number>;
  floorGive(key: string): Promise<number>;
}

export interface CallTimings {
  calls: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  meanMs: number;
}

export type GatewayChildStats = Record<'admit' | 'acquire' | 'release' | 'settle', CallTimings> & {
  /** share of the time the event loop was busy (not waiting for I/O) since the last `stats` */
  eventLoopUtilization: number;
  /** acquire script runs in Redis (the pool's private tryAcquire; polls included) and their answers; null when the hook is gone */
  acquireScripts?: { runs: number; outcomes: Record<string, number> } | null;
  /** leases granted as reservations ("start at T"), and how long their callers slept until T */
  reserved?: CallTimings;
  /** how late acquire handed over its lease after the lease's start (Redis time; the skew the window margin must absorb) */
  startLate?: CallTimings;
};

async function fakeRole(cfg: FakeChildConfig): Promise<void> {
  const fake = await startFakeOpenAI({
    host: '127.0.0.1',
    port: 0,
    keys: cfg.keys.map((k) => ({ ...k })),
    models: [cfg.model],
    latency: cfg.latencyMs,
    chunkDelayMs: cfg.chunkDelayMs,
  });
  serveRequests({ counters: async () => fake.counters() }, () => fake.stop());
  send({ type: 'ready', url: fake.url, origin: fake.origin, pid: process.pid });
}

async function bareRole(cfg: BareChildConfig): Promise<void> {
  // the gateway's upstream agent settings (packages/server/src/upstream.ts)
  const agent = new http.Agent({ keepAlive: true, maxSockets: 512, maxFreeSockets: 256, scheduling: 'lifo' });
  const up = new URL(cfg.fakeUrl);
  const base = up.pathname.replace(/\/+$/, '');
  const authorizations = (cfg.keys ?? [cfg.key]).map((k) => `Bearer ${k}`);
  let turn = 0;
  const floor = cfg.redisUrl ? await floorRedis(cfg.redisUrl) : undefined;
  const FLOOR_KEY = `bench:floor:${process.pid}`;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    const forward = () => {
      const body = Buffer.concat(chunks);
      const authorization = authorizations[turn++ % authorizations.length];
      const out = http.request(
        {
          host: up.hostname,
          port: up.port,
          path: base + (req.url ?? '/').replace(/^\/v1/, ''),
          method: req.method,
          agent,
          headers: { authorization, 'content-type': 'application/json', 'content-length': body.length, accept: req.headers.accept ?? 'application/json' },
        },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, { 'content-type': answer.headers['content-type'] ?? 'application/json' });
          answer.pipe(res);
        },
      );
      out.on('error', () => {
        if (!res.headersSent) res.writeHead(502);
        res.end();
      });
      out.end(body);
    };
    if (!floor) return void req.on('end', forward);
    req.on('end', () => {
      floor.floorTake(FLOOR_KEY).then(
        () => {
          // one DECR for every INCR: also when the caller leaves before the answer
          res.once('close', () => void floor.floorGive(FLOOR_KEY).catch(() => {}));
          forward();
        },
        () => {
          res.writeHead(503);
          res.end();
        },
      );
    });
  });
  server.keepAliveTimeout = 65_000;
  server.requestTimeout = 0;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  serveRequests(heapHandlers(), async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    agent.destroy();
    floor?.disconnect();
  });
  send({ type: 'ready', url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, pid: process.pid });
}

async function floorRedis(url: string): Promise<Redis & FloorRedis> {
  const r = new Redis(url, { lazyConnect: true }) as Redis & FloorRedis;
  r.defineCommand('floorTake', { numberOfKeys: 1, lua: "return redis.call('INCR', KEYS[1])" });
  r.defineCommand('floorGive', { numberOfKeys: 1, lua: "return redis.call('DECR', KEYS[1])" });
  await r.connect();
  return r;
}

/** heap-start / heap-stop: what this process allocated in between. */
function heapHandlers() {
  const heap = new HeapAllocations();
  return {
    'heap-start': async () => (heap.start(), null),
    'heap-stop': async () => heap.stop(),
  };
}

/** Durations (ms) of one kind of call, kept until the next `stats`. */
class Timer {
  private xs: number[] = [];
  add(ms: number): void {
    this.xs.push(ms);
  }
  take(): CallTimings {
    const d = dist(this.xs);
    this.xs = [];
    return { calls: d.samples, p50Ms: d.p50Ms, p90Ms: d.p90Ms, p99Ms: d.p99Ms, maxMs: d.maxMs, meanMs: d.samples ? d.meanMs : NaN };
  }
}

/** Wrap obj[name] (an async method) so each call's duration goes to `timer`; `after` sees the result. */
function timeMethod<T extends object>(obj: T, name: string, timer: Timer, after?: (result: unknown) => void): void {
  const target = obj as Record<string, unknown>;
  const original = target[name] as (...args: unknown[]) => Promise<unknown>;
  if (typeof original !== 'function') throw new Error(`cannot time ${name}: not a method`);
  target[name] = function timed(this: unknown, ...args: unknown[]) {
    const t0 = performance.now();
    return original.apply(this, args).then(
      (r) => {
        timer.add(performance.now() - t0);
        after?.(r);
        return r;
      },
      (e: unknown) => {
        timer.add(performance.now() - t0);
        throw e;
      },
    );
  };
}

/**
 * The repo's TypeScript runs as tsx's transform (one long line per file): map each profile frame of
 * a transformed file back to its TypeScript line and column with the inline source map of the script
 * V8 actually ran (Debugger.getScriptSource), so hot spots read `proxy.ts:178`, not `proxy.ts:1`.
 */
async function toSourcePositions(session: Session, profile: { nodes: { callFrame: { scriptId: string; url: string; lineNumber: number; columnNumber: number } }[] }): Promise<void> {
  const maps = new Map<string, SourceMap | null>();
  await session.post('Debugger.enable');
  try {
    for (const { callFrame: cf } of profile.nodes) {
      if (!cf.url.startsWith('file://') || cf.url.includes('/node_modules/') || cf.lineNumber < 0) continue;
      let map = maps.get(cf.scriptId);
      if (map === undefined) {
        map = null;
        try {
          const { scriptSource } = await session.post('Debugger.getScriptSource', { scriptId: cf.scriptId });
          const m = /\/\/# sourceMappingURL=data:application\/json(?:;charset=[^;,]+)?;base64,([A-Za-z0-9+/=]+)\s*$/.exec(scriptSource);
          if (m) map = new SourceMap(JSON.parse(Buffer.from(m[1]!, 'base64').toString('utf8')));
        } catch {
          map = null;
        }
        maps.set(cf.scriptId, map);
      }
      const e = map?.findEntry(cf.lineNumber, cf.columnNumber) as { originalLine?: number; originalColumn?: number } | undefined;
      if (e && typeof e.originalLine === 'number') {
        cf.lineNumber = e.originalLine;
        cf.columnNumber = e.originalColumn ?? 0;
      }
    }
  } finally {
    await session.post('Debugger.disable');
  }
}

async function gatewayRole(cfg: GatewayChildConfig): Promise<void> {
  const config = benchGatewayConfig({
    ...cfg,
    logLevel: 'warn',
    server: { host: '127.0.0.1', port: 0, adminToken: cfg.adminToken, drainMs: 2000 },
  });
  const serving = await serve(config);
  const { token } = await serving.pool.tokens.create({ name: 'bench-gateway' });

  // the Redis-bound calls of a request, timed from outside the server code (a method wrapper each)
  const timers = { admit: new Timer(), acquire: new Timer(), release: new Timer(), settle: new Timer() };
  timeMethod(serving.pool.tokens, 'admit', timers.admit);
  timeMethod(serving.pool.tokens, 'settle', timers.settle);
  const startLate = new Timer();
  timeMethod(serving.pool, 'acquire', timers.acquire, (r) => {
    const lease = r as { ok?: boolean; acquiredAt?: number };
    if (lease?.ok) {
      startLate.add(Math.max(0, Date.now() - lease.acquiredAt!));
      timeMethod(lease, 'release', timers.release);
    }
  });

  // one acquire script run each (a private method: if it is renamed, its figures are missing, the run goes on)
  const inner = serving.pool as unknown as Record<string, unknown>;
  let scripts: { runs: number; outcomes: Record<string, number> } | null = null;
  const reserved = new Timer();
  if (typeof inner.tryAcquire === 'function') {
    const real = (inner.tryAcquire as (...args: unknown[]) => Promise<{ ok: boolean; reason?: string; acquiredAt?: number }>).bind(serving.pool);
    const s = (scripts = { runs: 0, outcomes: {} as Record<string, number> });
    inner.tryAcquire = async (...args: unknown[]) => {
      s.runs++;
      const r = await real(...args);
      const kind = r.ok ? 'ok' : String(r.reason);
      s.outcomes[kind] = (s.outcomes[kind] ?? 0) + 1;
      // a reservation's lease starts later (acquiredAt: its start, epoch ms)
      if (r.ok && r.acquiredAt! > Date.now() + 0.5) reserved.add(r.acquiredAt! - Date.now());
      return r;
    };
  }

  let session: Session | undefined;
  let elu = performance.eventLoopUtilization();
  serveRequests(
    {
      ...heapHandlers(),
      stats: async (): Promise<GatewayChildStats> => {
        const now = performance.eventLoopUtilization();
        const u = performance.eventLoopUtilization(now, elu).utilization;
        elu = now;
        const acquireScripts = scripts && { runs: scripts.runs, outcomes: { ...scripts.outcomes } };
        if (scripts) [scripts.runs, scripts.outcomes] = [0, {}];
        return {
          admit: timers.admit.take(),
          acquire: timers.acquire.take(),
          release: timers.release.take(),
          settle: timers.settle.take(),
          eventLoopUtilization: Math.round(u * 1000) / 1000,
          acquireScripts,
          reserved: reserved.take(),
          startLate: startLate.take(),
        };
      },
      limits: async () => (await serving.pool.status()).keys.map((k) => ({ name: k.name ?? k.hint, effectiveRpm: k.effectiveLimits?.rpm ?? null, reportedRpm: k.reportedLimits?.rpm ?? null })),
      'profile-start': async () => {
        session = new Session();
        session.connect();
        await session.post('Profiler.enable');
        await session.post('Profiler.setSamplingInterval', { interval: 200 });
        await session.post('Profiler.start');
        return null;
      },
      'alloc-start': async () => {
        session = new Session();
        session.connect();
        await session.post('HeapProfiler.enable');
        // protocol flags newer than @types/node's copy of the protocol
        await session.post('HeapProfiler.startSampling', { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true } as object);
        return null;
      },
      'alloc-stop': async (req) => {
        if (!session) throw new Error('no allocation profile running');
        const { profile } = await session.post('HeapProfiler.stopSampling');
        await session.post('HeapProfiler.disable');
        type HeapNode = { callFrame: { scriptId: string; url: string; lineNumber: number; columnNumber: number }; children: HeapNode[] };
        const nodes: HeapNode[] = [];
        const walk = (n: HeapNode) => {
          nodes.push(n);
          for (const c of n.children) walk(c);
        };
        walk(profile.head as unknown as HeapNode);
        await toSourcePositions(session, { nodes });
        session.disconnect();
        session = undefined;
        await writeFile(req.file!, JSON.stringify(profile));
        return req.file;
      },
      'profile-stop': async (req) => {
        if (!session) throw new Error('no profile running');
        const { profile } = await session.post('Profiler.stop');
        await session.post('Profiler.disable');
        await toSourcePositions(session, profile);
        session.disconnect();
        session = undefined;
        await writeFile(req.file!, JSON.stringify(profile));
        return req.file;
      },
    },
    async () => {
      await serving.close();
    },
  );
  send({ type: 'ready', url: serving.url, token, pid: process.pid });
}

runChildRole('bench', 'scripts/bench/gateway.ts', { fake: fakeRole, gateway: gatewayRole, bare: bareRole });
