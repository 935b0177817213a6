/**
 * Gateway overhead benchmark: what one keypool gateway process adds to a call, against calling the
 * (fake) upstream directly, at a fixed open-loop rate.
 *
 *   npm run bench:gateway                         readable table on stdout, progress on stderr
 *   npm run -s bench:gateway -- --json            exactly one JSON object on stdout
 *   npm run bench:gateway -- --seconds 20 --rate 800 --latency-ms 20
 *   npm run bench:gateway -- --quick              under 2 minutes: 2 s per side, no maxRps search
 *   npm run bench:gateway -- --profile            also a CPU profile of the gateway (hot spots)
 *   npm run bench:gateway -- --gateway-node-flags="--max-semi-space-size=64"   a what-if
 *   npm run bench:gateway -- --quick --proxy-node-flags=--trace-gc-nvp   the three proxies' GC, side by side
 *
 * Processes (each its own OS process, so one's CPU does not show up as another's latency; all are
 * children of this one and stopped with it, on errors and Ctrl-C too):
 *   - redis-server, spawned on a free port (packages/testkit spawnRedisServer);
 *   - the fake OpenAI upstream (scripts/bench/gateway/child.ts fake): fixed latency (--latency-ms,
 *     default 20), no rate limits, --chunk-delay-ms (default 1) between stream chunks;
 *   - ONE gateway (gateway/child.ts gateway): serve() of packages/server with a config built in code:
 *     --keys (default 4) keys without limits pointing at the fake, logLevel warn, a gateway token
 *     from pool.tokens.create;
 *   - a bare Node proxy (gateway/child.ts bare), a baseline that is not keypool: node:http server,
 *     body read, forwarded with one fixed key through a keep-alive agent set like the gateway's,
 *     answer piped back. It tells what any Node proxy hop costs on this machine; gateway minus bare
 *     is keypool's own work (tokens, Redis, express, metrics, failover...);
 *   - the floor (gateway/child.ts bare given the Redis URL): the bare proxy plus one trivial script
 *     call (an INCR) awaited before forwarding and one (a DECR) sent after the answer, through
 *     ioredis. The least any proxy that keeps its shared state in Redis pays per request on this
 *     machine: a Redis round trip on the path and two script calls. Gateway minus floor is what
 *     keypool does beyond that;
 *   - the load generator: this process, node:http with one keep-alive agent, the same code for
 *     every target. Direct requests carry a fake upstream key, gateway requests the gateway token.
 *
 * Load: open loop. The send times of a phase are fixed in advance (rate r: one request every 1/r s)
 * and latency is measured from the SCHEDULED send time, so a load generator or gateway that falls
 * behind shows as latency instead of silently sending less (no coordinated omission).
 *
 * Requests: POST /v1/chat/completions, model gpt-4o-mini, one short user message, max_tokens 16
 * (the fake answers 16 tokens). Streaming adds `stream: true` (no stream_options, as the OpenAI SDKs
 * send it: the gateway injects include_usage and holds the usage chunk back). Non-streaming latency
 * is to the end of the body; streaming latency to the LAST byte, and time to the first body byte.
 *
 * Order (noise hits every side alike): warm-up of each target and mode; then per mode (chat,
 * stream) eight slices direct, bare, floor, gateway, gateway, floor, bare, direct (ABCDDCBA) of
 * --seconds/2 each, so each side gets --seconds at --rate; the samples of a side's two slices are
 * pooled. Overhead at a percentile = that percentile of gateway latency minus the same percentile of
 * direct latency (the bare proxy's and the floor's own overheads, each minus direct, beside it).
 * The same is measured at every rate of --overhead-rates (200, 500, 1000 by default; --rate among
 * them): overheadByRate.
 *
 * Per request (top-level fields, chat at --rate; stream... for streams): cpuUsPerRequest of the
 * gateway, of the bare proxy and of the floor (/proc, each over its own slices) and the ratios;
 * allocatedBytesPerRequest of each (bytes its V8 heap allocated over its slices, lib/heap-allocations.ts);
 * redisCommandsPerRequest (commands inside scripts included) and scriptCallsPerRequest (INFO
 * commandstats deltas, lib/redis-counts.ts).
 *
 * maxRps: non-streaming steps at --rates (500, 750, 1000, 1500, 2000, 2500, 3000, ...), each a
 * short warm-up and direct/gateway slices (ABBA, next step BAAB) of --step-seconds per side; a step
 * passes with overhead p99 < 10 ms (--max-overhead-ms) and no errors. A failing step is measured
 * again once (--step-retries) since the machine is noisy; two failures end the search; maxRps is the
 * last passing rate. When the first step fails, half and a quarter of it are tried so the figure
 * says how far off it is (maxRpsBelowLadder). When direct calls themselves miss the bound (the load
 * generator, the fake or other work saturate the machine, not the gateway) the search stops there
 * and says so.
 *
 * Where the time goes (per gateway slice, measured between slices, never during one):
 *   - the gateway's own keypool_gateway_overhead_seconds and keypool_acquire_duration_seconds
 *     histograms (from its /metrics; quantiles interpolated within buckets), its event-loop delay
 *     (prom-client's monitorEventLoopDelay, reset at each scrape) and GC pauses by kind
 *     (nodejs_gc_duration_seconds), and its event-loop utilization (busy share of the loop);
 *   - pool.acquire (the one Redis round trip a request waits for: the gateway token is admitted in
 *     the same script call) and lease.release (which settles the token in its call), timed inside
 *     the gateway process by method wrappers (gateway/child.ts); tokens.admit and tokens.settle
 *     alone run only off the main path (a model no key serves, a failed request's settlement);
 *   - CPU of every process (/proc/<pid>/stat) per wall second and per request (the gateway's kernel
 *     share apart), machine busy and steal share (/proc/stat) and the cores other processes took,
 *     time each main thread was runnable but waited for a CPU (/proc/<pid>/schedstat), Redis
 *     commands per request and server time per call (INFO commandstats): redisCommandsPerRequest
 *     (every command, those the scripts run inside included) and scriptCallsPerRequest (the
 *     EVALSHA round trips among them; target 2: one each way), lib/commands.ts.
 * With --profile, after everything else (extra slices, not in any figure): Redis server time per
 * keypool script (SLOWLOG at a 0 us threshold, EVALSHA sha -> script name) and a V8 CPU profile of
 * the gateway (node:inspector in the gateway process, frames mapped back to the TypeScript
 * sources): CPU by owner (nearest repo or npm frame), self time by area and function, inclusive
 * time of the repo's functions; and V8's sampling heap profile (bytes allocated per request, GC'd
 * objects included, by owner and function). The .cpuprofile / .heapprofile files are kept (open
 * them in Chrome DevTools).
 *
 * The machine this was written on has 2 cores shared with other work: five busy processes on two
 * cores plus whatever else runs. The output says how busy the machine was and how many cores other
 * processes took in every slice; figures move from run to run.
 *
 * This file is the scenario and its figures; the parts are in scripts/bench/gateway/ (options,
 * load generator, slices and telemetry, the maxRps search, profiles, the report, the children)
 * and the shared harness in scripts/bench/lib/.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Redis } from 'ioredis';
import { scripts } from '@keypool/core';
import { children } from './lib/child-ipc.js';
import { commandsInScripts, requestCommands } from './lib/commands.js';
import { machineCpu, machineShares } from './lib/proc.js';
import { adminClient, openRedis, type BenchRedis } from './lib/redis.js';
import { machine, printResult } from './lib/report.js';
import { redisCounts } from './lib/redis-counts.js';
import { round } from './lib/stats.js';
import { agent, type Mode, type Side } from './gateway/load.js';
import { searchMaxRps } from './gateway/max-rps.js';
import { measureSides, meanTelemetry, overheadOf, warm, type Env, type SideFigures } from './gateway/measure.js';
import { Child, interrupt, interrupted, log, MAX_TOKENS, MODEL, parseCli } from './gateway/options.js';
import { allocationsOfGateway, profileGateway, redisScriptTimes } from './gateway/profile.js';
import { render } from './gateway/render.js';
import { assertBuildIsFresh, shippedCodeEnv } from './lib/shipped-code.js';

const TARGETS = { overheadP50Ms: 0.5, overheadP99Ms: 3, cpuGatewayOverBare: 2, scriptCallsPerRequest: 2 } as const;

/**
 * One rate and mode in figures: overhead (gateway - direct; bare proxy - direct; floor - direct;
 * gateway - bare; gateway - floor),
 * CPU per request of each proxy process (/proc, over its own slices), bytes each allocated per
 * request (its V8 heap), and Redis commands and script calls per gateway request (INFO commandstats).
 */
function perRequest(sides: Record<Side, SideFigures>) {
  const g = meanTelemetry(sides.gateway.slices);
  const b = meanTelemetry(sides.bare.slices);
  const f = meanTelemetry(sides.floor.slices);
  const cpu = { gateway: g.cpuUsPerRequest.gateway, bare: b.cpuUsPerRequest.bare, floor: f.cpuUsPerRequest.floor };
  return {
    overhead: overheadOf(sides.direct.latency, sides.gateway.latency),
    bareOverhead: overheadOf(sides.direct.latency, sides.bare.latency),
    floorOverhead: overheadOf(sides.direct.latency, sides.floor.latency),
    keypoolOverhead: overheadOf(sides.bare.latency, sides.gateway.latency),
    keypoolOverFloor: overheadOf(sides.floor.latency, sides.gateway.latency),
    cpuUsPerRequest: { ...cpu, gatewayOverBare: round(cpu.gateway / cpu.bare, 2), floorOverBare: round(cpu.floor / cpu.bare, 2), gatewayOverFloor: round(cpu.gateway / cpu.floor, 2) },
    allocatedBytesPerRequest: { gateway: g.heap?.allocatedBytesPerRequest ?? NaN, bare: b.heap?.allocatedBytesPerRequest ?? NaN, floor: f.heap?.allocatedBytesPerRequest ?? NaN },
    ...redisCounts(g.redis.commandsPerRequest),
  };
}

// ---- main ------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const opts = parseCli();
  if (opts.gatewayCode === 'dist') assertBuildIsFresh();
  const started = performance.now();
  const runId = randomBytes(4).toString('hex');
  const loadStart = os.loadavg();
  const m0 = machineCpu();

  let redis: BenchRedis | undefined;
  let admin: Redis | undefined;
  let fake: Child | undefined;
  let gateway: Child | undefined;
  let bareProxy: Child | undefined;
  let floorProxy: Child | undefined;
  let cleaned: Promise<void> | undefined;
  const cleanup = () =>
    (cleaned ??= (async () => {
      agent.destroy();
      await Promise.all([gateway?.stop(), bareProxy?.stop(), floorProxy?.stop(), fake?.stop()].map((p) => p?.catch((e: Error) => log(`stopping a child: ${e.message}`))));
      admin?.disconnect();
      await redis?.stop();
    })());
  // First signal: stop sending, clean up, exit 130. Second: kill everything now.
  const onSignal = (sig: NodeJS.Signals) => {
    if (!interrupted()) {
      log(`${sig}: stopping (again to force)`);
      interrupt.abort();
      return;
    }
    for (const c of children) c.kill('SIGKILL');
    process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    // always a private server: its CPU is part of the figures (/proc of its pid)
    redis = await openRedis({ spawnAlways: true });
    const server = redis.server!;
    children.add(server.process);
    admin = adminClient(redis.url);
    await admin.connect();
    const redisVersion = /redis_version:(\S+)/.exec(await admin.info('server'))?.[1] ?? 'unknown';
    log(`redis-server ${redisVersion} at ${redis.display}`);

    const directKey = `sk-bench-direct-${runId}-${randomBytes(12).toString('hex')}`;
    const bareKey = `sk-bench-bare-${runId}-${randomBytes(12).toString('hex')}`;
    const floorKey = `sk-bench-floor-${runId}-${randomBytes(12).toString('hex')}`;
    const keys = Array.from({ length: opts.keys }, (_, i) => ({ secret: `sk-bench-gw${i}-${runId}-${randomBytes(12).toString('hex')}`, name: `gw${i}` }));
    fake = new Child('fake', { keys: [{ key: directKey, name: 'direct' }, { key: bareKey, name: 'bare' }, { key: floorKey, name: 'floor' }, ...keys.map((k) => ({ key: k.secret, name: k.name }))], model: MODEL, latencyMs: opts.latencyMs, chunkDelayMs: opts.chunkDelayMs });
    const fakeReady = await fake.ready;
    log(`fake upstream at ${fakeReady.url} (pid ${fake.pid}), latency ${opts.latencyMs} ms, chunk delay ${opts.chunkDelayMs} ms`);
    gateway = new Child('gateway', { redisUrl: redis.url, fakeUrl: fakeReady.url, pool: `bench-gw-${runId}`, model: MODEL, keys, adminToken: randomBytes(24).toString('hex') }, [...opts.proxyNodeFlags, ...opts.gatewayNodeFlags], opts.gatewayCode === 'dist' ? shippedCodeEnv() : undefined);
    const gwReady = await gateway.ready;
    log(`gateway at ${gwReady.url} (pid ${gateway.pid}), ${opts.keys} keys, gateway token made`);
    bareProxy = new Child('bare', { fakeUrl: fakeReady.url, key: bareKey }, opts.proxyNodeFlags);
    const bareReady = await bareProxy.ready;
    log(`bare proxy (baseline) at ${bareReady.url} (pid ${bareProxy.pid})`);
    const bu = new URL(bareReady.url);
    floorProxy = new Child('bare', { fakeUrl: fakeReady.url, key: floorKey, redisUrl: redis.url }, opts.proxyNodeFlags, undefined, 'floor');
    const floorReady = await floorProxy.ready;
    log(`floor (bare proxy + a script call each way) at ${floorReady.url} (pid ${floorProxy.pid})`);
    const flu = new URL(floorReady.url);

    const fu = new URL(fakeReady.url);
    const gu = new URL(gwReady.url);
    const env: Env = {
      opts,
      redis: server,
      admin,
      fake,
      gateway,
      bareProxy,
      floorProxy,
      gatewayUrl: gwReady.url,
      direct: { side: 'direct', host: fu.hostname, port: Number(fu.port), path: `${fu.pathname.replace(/\/+$/, '')}/chat/completions`, authorization: `Bearer ${directKey}` },
      bare: { side: 'bare', host: bu.hostname, port: Number(bu.port), path: '/v1/chat/completions', authorization: 'Bearer unused' },
      floor: { side: 'floor', host: flu.hostname, port: Number(flu.port), path: '/v1/chat/completions', authorization: 'Bearer unused' },
      gw: { side: 'gateway', host: gu.hostname, port: Number(gu.port), path: '/v1/chat/completions', authorization: `Bearer ${gwReady.token}` },
    };

    // ---- warm-up, then the main measurement at --rate
    log(`warm-up: ${opts.warmup} s per side and mode at ${opts.rate} req/s`);
    const MAIN_SIDES: Side[] = ['direct', 'bare', 'floor', 'gateway'];
    for (const mode of ['chat', 'stream'] as const) await warm(env, mode, opts.rate, opts.warmup, MAIN_SIDES);
    // every rate of --overhead-rates (the main --rate among them), lowest first
    const byRate = new Map<number, Partial<Record<Mode, Record<Side, SideFigures>>>>();
    for (const rate of opts.overheadRates) {
      const at: Partial<Record<Mode, Record<Side, SideFigures>>> = {};
      byRate.set(rate, at);
      for (const mode of ['chat', 'stream'] as const) {
        if (interrupted()) break;
        const r = await measureSides(env, mode, rate, opts.seconds, `${rate === opts.rate ? 'main ' : ''}${rate}/s`, MAIN_SIDES);
        if (r) at[mode] = r as Record<Side, SideFigures>;
      }
    }
    const main = byRate.get(opts.rate)!;

    // ---- maxRps: step the rate up until overhead p99 passes the bound or errors appear
    const { steps, maxRps, limitedBy, belowLadder } = opts.maxRps ? await searchMaxRps(env, opts) : { steps: [], maxRps: null, limitedBy: null, belowLadder: false };

    // ---- profile, last (separate slices: the profiler's and the debugger's cost must not touch any figure)
    let profile:
      | { dir: string; runs: Awaited<ReturnType<typeof profileGateway>>[]; redisScripts: Awaited<ReturnType<typeof redisScriptTimes>>[]; allocations: Awaited<ReturnType<typeof allocationsOfGateway>>[] }
      | undefined;
    if (opts.profile && !interrupted()) {
      const dir = await mkdtemp(join(os.tmpdir(), `keypool-bench-gateway-${runId}-`));
      const runs = [];
      const redisScripts = [];
      for (const mode of ['chat', 'stream'] as const) {
        if (interrupted()) break;
        log(`Redis time per script: ${mode} at ${opts.rate} req/s`);
        redisScripts.push(await redisScriptTimes(env, mode));
      }
      for (const mode of ['chat', 'stream'] as const) {
        if (interrupted()) break;
        log(`profiling the gateway: ${mode} at ${opts.rate} req/s`);
        runs.push(await profileGateway(env, mode, dir));
      }
      const allocations = [];
      for (const mode of ['chat', 'stream'] as const) {
        if (interrupted()) break;
        log(`allocations of the gateway: ${mode} at ${opts.rate} req/s`);
        allocations.push(await allocationsOfGateway(env, mode, dir));
      }
      profile = { dir, runs, redisScripts, allocations };
    }

    if (interrupted() || !main.chat || !main.stream) {
      log('interrupted: no results printed');
      process.exitCode = 130;
      return;
    }

    const chat = {
      ...main.chat,
      overhead: overheadOf(main.chat.direct.latency, main.chat.gateway.latency),
      bareOverhead: overheadOf(main.chat.direct.latency, main.chat.bare.latency),
      floorOverhead: overheadOf(main.chat.direct.latency, main.chat.floor.latency),
      /** gateway minus the bare proxy: keypool's own work */
      keypoolOverhead: overheadOf(main.chat.bare.latency, main.chat.gateway.latency),
      /** gateway minus the floor: what keypool does beyond a Redis round trip on the path */
      keypoolOverFloor: overheadOf(main.chat.floor.latency, main.chat.gateway.latency),
    };
    const stream = {
      ...main.stream,
      overhead: overheadOf(main.stream.direct.latency, main.stream.gateway.latency),
      bareOverhead: overheadOf(main.stream.direct.latency, main.stream.bare.latency),
      floorOverhead: overheadOf(main.stream.direct.latency, main.stream.floor.latency),
      keypoolOverhead: overheadOf(main.stream.bare.latency, main.stream.gateway.latency),
      keypoolOverFloor: overheadOf(main.stream.floor.latency, main.stream.gateway.latency),
      firstByteOverhead: overheadOf(main.stream.direct.firstByte, main.stream.gateway.firstByte),
      bareFirstByteOverhead: overheadOf(main.stream.direct.firstByte, main.stream.bare.firstByte),
      floorFirstByteOverhead: overheadOf(main.stream.direct.firstByte, main.stream.floor.firstByte),
    };
    const overheadByRate = [...byRate].filter(([, at]) => at.chat && at.stream).map(([rate, at]) => ({ rate, chat: perRequest(at.chat!), stream: perRequest(at.stream!) }));
    const errors =
      [...byRate.values()].flatMap((at) => [at.chat, at.stream]).reduce((n, m) => n + (m ? m.direct.errors + m.bare.errors + m.floor.errors + m.gateway.errors : 0), 0) +
      steps.reduce((n, s) => n + s.direct.errors + s.gateway.errors, 0);
    const perReq = { chat: perRequest(main.chat), stream: perRequest(main.stream) };
    const check = (value: number, max: number) => ({ max, value, pass: Number.isFinite(value) && value <= max });
    // Redis commands per request on the bench's own redis-server (INFO commandstats over the gateway slices)
    const inScripts = commandsInScripts(scripts().map((sc) => sc.lua));
    const redisPerRequest = {
      chat: requestCommands(meanTelemetry(chat.gateway.slices).redis.commandsPerRequest, inScripts),
      stream: requestCommands(meanTelemetry(stream.gateway.slices).redis.commandsPerRequest, inScripts),
    };
    const targets = {
      overheadP50Ms: check(chat.overhead.p50Ms, TARGETS.overheadP50Ms),
      overheadP99Ms: check(chat.overhead.p99Ms, TARGETS.overheadP99Ms),
      cpuGatewayOverBare: check(perReq.chat.cpuUsPerRequest.gatewayOverBare, TARGETS.cpuGatewayOverBare),
      scriptCallsPerRequest: check(perReq.chat.scriptCallsPerRequest, TARGETS.scriptCallsPerRequest),
      errors: { max: 0, value: errors, pass: errors === 0 },
      allPass: false,
    };
    targets.allPass = targets.overheadP50Ms.pass && targets.overheadP99Ms.pass && targets.cpuGatewayOverBare.pass && targets.scriptCallsPerRequest.pass && targets.errors.pass;
    const shares = machineShares(m0, machineCpu());
    const result = {
      overheadP50Ms: chat.overhead.p50Ms,
      overheadP99Ms: chat.overhead.p99Ms,
      streamOverheadP50Ms: stream.overhead.p50Ms,
      streamOverheadP99Ms: stream.overhead.p99Ms,
      streamFirstByteOverheadP50Ms: stream.firstByteOverhead.p50Ms,
      streamFirstByteOverheadP99Ms: stream.firstByteOverhead.p99Ms,
      bareProxyOverheadP50Ms: chat.bareOverhead.p50Ms,
      bareProxyOverheadP99Ms: chat.bareOverhead.p99Ms,
      bareProxyStreamOverheadP50Ms: stream.bareOverhead.p50Ms,
      bareProxyStreamOverheadP99Ms: stream.bareOverhead.p99Ms,
      /** the bare proxy plus one script call each way: what any proxy with its state in Redis pays here */
      floorOverheadP50Ms: chat.floorOverhead.p50Ms,
      floorOverheadP99Ms: chat.floorOverhead.p99Ms,
      floorStreamOverheadP50Ms: stream.floorOverhead.p50Ms,
      floorStreamOverheadP99Ms: stream.floorOverhead.p99Ms,
      cpuUsPerRequest: perReq.chat.cpuUsPerRequest,
      streamCpuUsPerRequest: perReq.stream.cpuUsPerRequest,
      redisCommandsPerRequest: perReq.chat.redisCommandsPerRequest,
      scriptCallsPerRequest: perReq.chat.scriptCallsPerRequest,
      streamRedisCommandsPerRequest: perReq.stream.redisCommandsPerRequest,
      streamScriptCallsPerRequest: perReq.stream.scriptCallsPerRequest,
      allocatedBytesPerRequest: perReq.chat.allocatedBytesPerRequest,
      streamAllocatedBytesPerRequest: perReq.stream.allocatedBytesPerRequest,
      overheadByRate,
      /** chat and stream at --rate: commands no script calls listed apart (status and metrics read Redis on their own schedule) */
      redisPerRequest,
      maxRps,
      maxRpsLimitedBy: limitedBy,
      maxRpsBelowLadder: belowLadder,
      errors,
      targets,
      setup: {
        rate: opts.rate,
        overheadRates: opts.overheadRates,
        quick: opts.quick,
        secondsPerSide: opts.seconds,
        warmupSeconds: opts.warmup,
        upstreamLatencyMs: opts.latencyMs,
        streamChunkDelayMs: opts.chunkDelayMs,
        keys: opts.keys,
        model: MODEL,
        maxTokens: MAX_TOKENS,
        order: 'per mode: direct, bare, floor, gateway, gateway, floor, bare, direct (ABCDDCBA), seconds/2 each; maxRps steps (direct and gateway only) alternate ABBA / BAAB',
        bareProxy: 'baseline, not keypool: node:http server -> read body -> node:http request with one fixed key through a keep-alive agent (the gateway upstream agent settings) -> pipe the answer back',
        floor: 'the bare proxy plus one ioredis script call (INCR of one key) awaited before forwarding and one (DECR) sent unawaited after the answer',
        arrivals: 'open loop, evenly spaced send times fixed in advance; latency from the scheduled send time',
        client: 'node:http, one keep-alive agent (lifo), same code for every target',
        maxRpsRule: `overhead p99 < ${opts.maxOverheadMs} ms and no errors; a failing step is measured ${opts.stepRetries} more time(s)`,
        redis: `spawned redis-server ${redisVersion}`,
        gatewayCode: opts.gatewayCode === 'dist' ? "the packages' dist/ (as built by npm run build and run by keypool serve)" : 'the TypeScript sources through tsx (keepNames: not what ships)',
        gatewayNodeFlags: opts.gatewayNodeFlags.join(' ') || null,
        proxyNodeFlags: opts.proxyNodeFlags.join(' ') || null,
      },
      chat,
      stream,
      maxRpsSteps: steps,
      whereTheTimeGoes: {
        chat: { direct: meanTelemetry(chat.direct.slices), bare: meanTelemetry(chat.bare.slices), floor: meanTelemetry(chat.floor.slices), gateway: meanTelemetry(chat.gateway.slices) },
        stream: { direct: meanTelemetry(stream.direct.slices), bare: meanTelemetry(stream.bare.slices), floor: meanTelemetry(stream.floor.slices), gateway: meanTelemetry(stream.gateway.slices) },
      },
      ...(profile ? { profile } : {}),
      environment: {
        ...machine(),
        loadavgStart: loadStart.map((x) => round(x, 2)),
        loadavgEnd: os.loadavg().map((x) => round(x, 2)),
        machineBusyShare: shares ? round(shares.busy, 3) : null,
        machineStealShare: shares ? round(shares.steal, 3) : null,
        note:
          'Shared, noisy machine: load generator, fake upstream, gateway and redis-server share its cores with whatever else runs there ' +
          '(see loadavg and the busy/steal shares). Figures move from run to run; compare runs, and read the where-the-time-goes figures with them.',
      },
      timestamp: new Date().toISOString(),
      totalWallSeconds: round((performance.now() - started) / 1000, 1),
    };
    printResult(result, opts.json, render);
  } finally {
    await cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}


main().catch((e: unknown) => {
  log(`failed: ${(e as Error)?.stack ?? String(e)}`);
  process.exitCode = 1;
});
