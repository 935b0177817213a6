/**
 * The gateway benchmark's readable report (the JSON result, rendered).
 */
import { fmt, table } from '../lib/report.js';
import type { Dist } from '../lib/stats.js';
import type { Mode, Side } from './load.js';
import type { StepResult } from './max-rps.js';
import type { SliceTelemetry } from './load.js';
import type { overheadOf, SideFigures } from './measure.js';
import type { histogramDelta } from '../lib/metrics.js';
import type { HotSpot, ScriptTime } from './profile.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Result = any;

export function render(r: Result): string {
  const out: string[] = [];
  const e = r.environment;
  const s = r.setup;
  const pf = (p: boolean) => (p ? 'PASS' : 'FAIL');
  out.push(
    `keypool gateway benchmark: node ${e.node}, ${e.cores} cores (${e.cpuModel}), ${r.timestamp}`,
    `open loop at ${s.rate} req/s, ${s.secondsPerSide} s per side and mode (direct, bare proxy, floor, gateway: ABCDDCBA), warm-up ${s.warmupSeconds} s; fake upstream latency ${s.upstreamLatencyMs} ms, stream chunk delay ${s.streamChunkDelayMs} ms; ${s.keys} keys; ${s.redis}`,
    ...(s.gatewayNodeFlags ? [`WHAT-IF: the gateway runs with node ${s.gatewayNodeFlags}`] : []),
    ...(s.proxyNodeFlags ? [`WHAT-IF: the gateway, the bare proxy and the floor run with node ${s.proxyNodeFlags}`] : []),
    `NOTE: ${e.note}`,
    `      loadavg ${e.loadavgStart.join(' ')} at start, ${e.loadavgEnd.join(' ')} at end; machine busy ${fmt(e.machineBusyShare * 100, 0)}%, steal ${fmt(e.machineStealShare * 100, 1)}% over the run`,
    '',
    table([
      ['figure', 'value', 'target', 'status'],
      ['overheadP50Ms (chat)', fmt(r.overheadP50Ms, 3), `<= ${r.targets.overheadP50Ms.max}`, pf(r.targets.overheadP50Ms.pass)],
      ['overheadP99Ms (chat)', fmt(r.overheadP99Ms, 3), `<= ${r.targets.overheadP99Ms.max}`, pf(r.targets.overheadP99Ms.pass)],
      ['streamOverheadP50Ms (last byte)', fmt(r.streamOverheadP50Ms, 3), '', ''],
      ['streamOverheadP99Ms (last byte)', fmt(r.streamOverheadP99Ms, 3), '', ''],
      ['stream first-byte overhead p50', fmt(r.streamFirstByteOverheadP50Ms, 3), '', ''],
      ['stream first-byte overhead p99', fmt(r.streamFirstByteOverheadP99Ms, 3), '', ''],
      ['baseline: bare Node proxy p50 / p99 (chat)', `${fmt(r.bareProxyOverheadP50Ms, 3)} / ${fmt(r.bareProxyOverheadP99Ms, 3)}`, '', ''],
      ['floor: bare proxy + a script call each way p50 / p99 (chat)', `${fmt(r.floorOverheadP50Ms, 3)} / ${fmt(r.floorOverheadP99Ms, 3)}`, '', ''],
      ['maxRps (overhead p99 < bound)', r.maxRps === null ? 'none' : fmt(r.maxRps), '', r.maxRpsLimitedBy ? 'see below' : ''],
      ['errors', String(r.errors), '== 0', pf(r.targets.errors.pass)],
      ['scriptCallsPerRequest (chat)', fmt(r.scriptCallsPerRequest, 3), `<= ${r.targets.scriptCallsPerRequest.max}`, pf(r.targets.scriptCallsPerRequest.pass)],
      ['redisCommandsPerRequest (chat, inside scripts too)', fmt(r.redisCommandsPerRequest, 2), '', ''],
    ]),
    '',
    `targets: ${r.targets.allPass ? 'all PASS' : 'NOT all pass'}`,
    '',
    `per request at ${s.rate} req/s (chat / stream): gateway CPU ${fmt(r.cpuUsPerRequest.gateway)} / ${fmt(r.streamCpuUsPerRequest.gateway)} us, bare proxy ${fmt(r.cpuUsPerRequest.bare)} / ${fmt(r.streamCpuUsPerRequest.bare)} us, floor ${fmt(r.cpuUsPerRequest.floor)} / ${fmt(r.streamCpuUsPerRequest.floor)} us ` +
      `(gateway / bare ${fmt(r.cpuUsPerRequest.gatewayOverBare, 2)} / ${fmt(r.streamCpuUsPerRequest.gatewayOverBare, 2)}, target <= ${r.targets.cpuGatewayOverBare.max}: ${pf(r.targets.cpuGatewayOverBare.pass)})`,
    `  allocated on the V8 heap: gateway ${fmt(r.allocatedBytesPerRequest.gateway / 1024, 1)} / ${fmt(r.streamAllocatedBytesPerRequest.gateway / 1024, 1)} kB, bare proxy ${fmt(r.allocatedBytesPerRequest.bare / 1024, 1)} / ${fmt(r.streamAllocatedBytesPerRequest.bare / 1024, 1)} kB, floor ${fmt(r.allocatedBytesPerRequest.floor / 1024, 1)} / ${fmt(r.streamAllocatedBytesPerRequest.floor / 1024, 1)} kB`,
    `  Redis commands (those inside scripts included) ${fmt(r.redisCommandsPerRequest, 2)} / ${fmt(r.streamRedisCommandsPerRequest, 2)}, script calls ${fmt(r.scriptCallsPerRequest, 2)} / ${fmt(r.streamScriptCallsPerRequest, 2)} (target <= ${r.targets.scriptCallsPerRequest.max}: ${pf(r.targets.scriptCallsPerRequest.pass)})`,
    '',
    'overhead by rate, ms (gateway - direct; bare: bare proxy - direct; floor: floor - direct), p50 / p99; CPU us per request',
    table([
      ['rate', 'chat gateway', 'chat bare', 'chat floor', 'stream gateway', 'stream bare', 'stream floor', 'chat CPU gw / bare / floor', 'stream CPU gw / bare / floor'],
      ...r.overheadByRate.map((x: Result) => [
        fmt(x.rate),
        `${fmt(x.chat.overhead.p50Ms, 3)} / ${fmt(x.chat.overhead.p99Ms, 3)}`,
        `${fmt(x.chat.bareOverhead.p50Ms, 3)} / ${fmt(x.chat.bareOverhead.p99Ms, 3)}`,
        `${fmt(x.chat.floorOverhead.p50Ms, 3)} / ${fmt(x.chat.floorOverhead.p99Ms, 3)}`,
        `${fmt(x.stream.overhead.p50Ms, 3)} / ${fmt(x.stream.overhead.p99Ms, 3)}`,
        `${fmt(x.stream.bareOverhead.p50Ms, 3)} / ${fmt(x.stream.bareOverhead.p99Ms, 3)}`,
        `${fmt(x.stream.floorOverhead.p50Ms, 3)} / ${fmt(x.stream.floorOverhead.p99Ms, 3)}`,
        `${fmt(x.chat.cpuUsPerRequest.gateway)} / ${fmt(x.chat.cpuUsPerRequest.bare)} / ${fmt(x.chat.cpuUsPerRequest.floor)}`,
        `${fmt(x.stream.cpuUsPerRequest.gateway)} / ${fmt(x.stream.cpuUsPerRequest.bare)} / ${fmt(x.stream.cpuUsPerRequest.floor)}`,
      ]),
    ]),
    '',
  );
  const row = (label: string, d: Dist) => [label, fmt(d.p50Ms, 2), fmt(d.p90Ms, 2), fmt(d.p99Ms, 2), fmt(d.p999Ms, 2), fmt(d.maxMs, 2), fmt(d.meanMs, 2), String(d.samples)];
  const orow = (label: string, o: ReturnType<typeof overheadOf>) => [label, fmt(o.p50Ms, 3), fmt(o.p90Ms, 3), fmt(o.p99Ms, 3), fmt(o.p999Ms, 3), '', fmt(o.meanMs, 3), ''];
  const SIDES = ['direct', 'bare', 'floor', 'gateway'] as const;
  const label = { direct: 'direct', bare: 'bare proxy', floor: 'floor', gateway: 'gateway' } as const;
  out.push(
    'latency from the scheduled send time, ms (overhead: gateway - direct at each percentile; bare: the baseline proxy - direct; floor: the floor - direct; keypool: gateway - bare, and gateway - floor)',
    table([
      ['', 'p50', 'p90', 'p99', 'p99.9', 'max', 'mean', 'samples'],
      ...SIDES.map((sd) => row(`chat ${label[sd]}`, r.chat[sd].latency)),
      orow('  overhead', r.chat.overhead),
      orow('  bare proxy overhead', r.chat.bareOverhead),
      orow('  floor overhead', r.chat.floorOverhead),
      orow('  keypool (gateway - bare)', r.chat.keypoolOverhead),
      orow('  keypool over the floor (gateway - floor)', r.chat.keypoolOverFloor),
      ...SIDES.map((sd) => row(`stream ${label[sd]}, last byte`, r.stream[sd].latency)),
      orow('  overhead', r.stream.overhead),
      orow('  bare proxy overhead', r.stream.bareOverhead),
      orow('  floor overhead', r.stream.floorOverhead),
      orow('  keypool (gateway - bare)', r.stream.keypoolOverhead),
      orow('  keypool over the floor (gateway - floor)', r.stream.keypoolOverFloor),
      ...SIDES.map((sd) => row(`stream ${label[sd]}, first byte`, r.stream[sd].firstByte)),
      orow('  overhead', r.stream.firstByteOverhead),
      orow('  bare proxy overhead', r.stream.bareFirstByteOverhead),
      orow('  floor overhead', r.stream.floorFirstByteOverhead),
    ]),
    '',
    table([
      ['side', 'requests', 'ok', 'errors', 'sent req/s', 'send lag p99 ms', 'slices p50 / p99 ms'],
      ...(['chat', 'stream'] as const).flatMap((m) =>
        SIDES.map((sd) => {
          const f: SideFigures = r[m][sd];
          return [`${m} ${label[sd]}`, String(f.requests), String(f.ok), `${f.errors}${f.errors ? ' ' + JSON.stringify(f.errorKinds) : ''}`, fmt(f.achievedRps, 1), fmt(f.sendLagP99Ms, 2), f.slices.map((x) => `${fmt(x.p50Ms, 1)}/${fmt(x.p99Ms, 1)}`).join('  ')];
        }),
      ),
    ]),
  );
  const w = r.whereTheTimeGoes;
  const tele = (m: Mode, sd: Side): SliceTelemetry => w[m][sd];
  const cols = (['chat', 'stream'] as const).flatMap((m) => SIDES.map((sd) => [m, sd] as const));
  const own = (m: Mode, sd: Side, p: 'gateway' | 'bare' | 'floor') => (sd === p ? `${fmt(tele(m, sd).cores[p], 2)} / ${fmt(tele(m, sd).cpuUsPerRequest[p])}` : '-');
  out.push(
    '',
    'where the time goes (mean over the slices of each side; cores = CPU s per wall s; us/req = CPU per request)',
    table([
      ['', ...cols.map(([m, sd]) => `${m} ${label[sd]}`)],
      ['gateway cores / us/req', ...cols.map(([m, sd]) => own(m, sd, 'gateway'))],
      ['  of which kernel us/req', ...cols.map(([m, sd]) => (sd === 'gateway' ? fmt(tele(m, sd).cpuUsPerRequest.gatewayKernel) : '-'))],
      ['bare proxy cores / us/req', ...cols.map(([m, sd]) => own(m, sd, 'bare'))],
      ['floor cores / us/req', ...cols.map(([m, sd]) => own(m, sd, 'floor'))],
      ...(['fake', 'redis', 'loadgen'] as const).map((p) => [`${p} cores / us/req`, ...cols.map(([m, sd]) => `${fmt(tele(m, sd).cores[p], 2)} / ${fmt(tele(m, sd).cpuUsPerRequest[p])}`)]),
      ['machine busy / steal', ...cols.map(([m, sd]) => `${fmt((tele(m, sd).cores.machineBusy ?? NaN) * 100)}% / ${fmt((tele(m, sd).cores.machineSteal ?? NaN) * 100, 1)}%`)],
      ['other processes, cores', ...cols.map(([m, sd]) => fmt(tele(m, sd).cores.others, 2))],
      ['waited for a CPU, ms/s: gateway', ...cols.map(([m, sd]) => (sd === 'gateway' ? fmt(tele(m, sd).runqueueWaitMsPerS.gateway, 1) : '-'))],
      ['  bare proxy', ...cols.map(([m, sd]) => (sd === 'bare' ? fmt(tele(m, sd).runqueueWaitMsPerS.bare, 1) : '-'))],
      ['  floor', ...cols.map(([m, sd]) => (sd === 'floor' ? fmt(tele(m, sd).runqueueWaitMsPerS.floor, 1) : '-'))],
      ...(['fake', 'redis', 'loadgen'] as const).map((p) => [`  ${p}`, ...cols.map(([m, sd]) => fmt(tele(m, sd).runqueueWaitMsPerS[p], 1))]),
    ]),
  );
  const g = (m: Mode) => tele(m, 'gateway').gateway!;
  /** a histogram quantile; `>=` when it sits at the last finite bucket and observations went past it */
  const hq = (h: ReturnType<typeof histogramDelta>, q: 'p50Ms' | 'p99Ms') => (h.aboveLastBucket > 0 && h[q] >= h.lastBucketMs ? `>=${fmt(h.lastBucketMs, 0)}` : fmt(h[q], 3));
  out.push(
    '',
    'inside the gateway (its own metrics and timers; gateway slices)',
    table([
      ['', 'chat p50', 'chat p99', 'stream p50', 'stream p99'],
      ['keypool_gateway_overhead_seconds ms', hq(g('chat').overhead, 'p50Ms'), hq(g('chat').overhead, 'p99Ms'), hq(g('stream').overhead, 'p50Ms'), hq(g('stream').overhead, 'p99Ms')],
      ['keypool_acquire_duration_seconds ms', hq(g('chat').acquire, 'p50Ms'), hq(g('chat').acquire, 'p99Ms'), hq(g('stream').acquire, 'p50Ms'), hq(g('stream').acquire, 'p99Ms')],
      ['tokens.admit ms (alone, off the main path)', fmt(g('chat').calls.admit.p50Ms, 3), fmt(g('chat').calls.admit.p99Ms, 3), fmt(g('stream').calls.admit.p50Ms, 3), fmt(g('stream').calls.admit.p99Ms, 3)],
      ['pool.acquire ms (Redis, on path, token admitted in it)', fmt(g('chat').calls.acquire.p50Ms, 3), fmt(g('chat').calls.acquire.p99Ms, 3), fmt(g('stream').calls.acquire.p50Ms, 3), fmt(g('stream').calls.acquire.p99Ms, 3)],
      ['lease.release ms (after answer, token settled in it)', fmt(g('chat').calls.release.p50Ms, 3), fmt(g('chat').calls.release.p99Ms, 3), fmt(g('stream').calls.release.p50Ms, 3), fmt(g('stream').calls.release.p99Ms, 3)],
      ['tokens.settle ms (alone, off the main path)', fmt(g('chat').calls.settle.p50Ms, 3), fmt(g('chat').calls.settle.p99Ms, 3), fmt(g('stream').calls.settle.p50Ms, 3), fmt(g('stream').calls.settle.p99Ms, 3)],
      ['event-loop utilization (busy share)', `${fmt(g('chat').calls.eventLoopUtilization * 100, 1)}%`, '', `${fmt(g('stream').calls.eventLoopUtilization * 100, 1)}%`, ''],
      ['event-loop delay ms (p50 / p99 col)', fmt(g('chat').eventLoopDelayMs.p50, 2), fmt(g('chat').eventLoopDelayMs.p99, 2), fmt(g('stream').eventLoopDelayMs.p50, 2), fmt(g('stream').eventLoopDelayMs.p99, 2)],
    ]),
    `event-loop delay max: chat ${fmt(g('chat').eventLoopDelayMs.max, 1)} ms, stream ${fmt(g('stream').eventLoopDelayMs.max, 1)} ms (prom-client monitorEventLoopDelay, 10 ms resolution)`,
    ...(['chat', 'stream'] as const).map(
      (m) =>
        `GC in the gateway, ${m} slices (${fmt(r[m].gateway.requests)} requests): ` +
        (Object.entries(g(m).gc)
          .map(([kind, v]) => `${kind} ${v.count} x, ${fmt(v.totalMs, 1)} ms total (${fmt((v.totalMs * 1000) / Math.max(1, r[m].gateway.requests), 1)} us/req), ${v.over1Ms} over 1 ms, ${v.over10Ms} over 10 ms`)
          .join('; ') || 'none'),
    ),
    `redis per gateway request (chat): ${
      Object.entries(tele('chat', 'gateway').redis.commandsPerRequest)
        .map(([c, n]) => `${c} ${fmt(n, 2)} x ${fmt(tele('chat', 'gateway').redis.usecPerCall[c], 1)} us`)
        .join(', ') || 'none'
    } (server time per call)`,
  );
  if (r.maxRpsSteps.length) {
    out.push(
      '',
      `maxRps search (non-streaming; ${r.setup.maxRpsRule})`,
      table([
        ['rate', '#', 'direct sent/s', 'direct p50/p99', 'gw sent/s', 'gw p50/p99', 'overhead p50', 'overhead p99', 'gw own ovh p99', 'gw cores', 'gw us/req', 'gw ELU', 'gw loop p99', 'gw CPU wait ms/s', 'machine', 'others', 'result'],
        ...r.maxRpsSteps.map((st: StepResult) => [
          fmt(st.rate),
          String(st.attempt),
          fmt(st.direct.achievedRps),
          `${fmt(st.direct.p50Ms, 1)}/${fmt(st.direct.p99Ms, 1)}`,
          fmt(st.gateway.achievedRps),
          `${fmt(st.gateway.p50Ms, 1)}/${fmt(st.gateway.p99Ms, 1)}`,
          fmt(st.overheadP50Ms, 2),
          fmt(st.overheadP99Ms, 2),
          fmt(st.gateway.ownOverheadP99Ms, 2),
          fmt(st.gateway.cores, 2),
          fmt(st.gateway.cpuUsPerRequest),
          `${fmt(st.gateway.eventLoopUtilization * 100)}%`,
          fmt(st.gateway.eventLoopDelayP99Ms, 1),
          fmt(st.gateway.runqueueWaitMsPerS, 1),
          `${fmt(st.machineBusy * 100)}%`,
          fmt(st.otherCores, 2),
          st.pass ? 'PASS' : `FAIL: ${st.reason}`,
        ]),
      ]),
      `maxRps = ${r.maxRps ?? 'none'}; limited by ${r.maxRpsLimitedBy ?? 'n/a'}`,
    );
  }
  if (r.profile) {
    for (const rs of r.profile.redisScripts) {
      out.push(
        '',
        `Redis server time per request by script, ${rs.mode} at ${r.setup.rate} req/s (${rs.requests} requests; SLOWLOG at 0 us: execution inside Redis only)`,
        table([['script / command', 'calls/req', 'us/req', 'p50 us', 'p99 us', 'mean us'], ...rs.scripts.slice(0, 10).map((x: ScriptTime) => [x.script, fmt(x.callsPerRequest, 2), fmt(x.usPerRequest, 1), fmt(x.p50Us), fmt(x.p99Us), fmt(x.meanUs, 1)])]),
      );
    }
    for (const p of r.profile.runs) {
      out.push(
        '',
        `gateway CPU profile, ${p.mode} at ${r.setup.rate} req/s (${p.requests} requests, ${fmt(p.busyMs)} ms busy in ${fmt(p.wallMs)} ms = ${fmt(p.busyUsPerRequest)} us/request; profiler on): ${p.file}`,
        `  (V8 samples the thread's time off idle: time preempted inside a syscall, e.g. a socket write that wakes redis-server, counts as that syscall; /proc measured ${fmt(w[p.mode as Mode].gateway.cpuUsPerRequest.gateway)} us CPU/request without the profiler)`,
        table([['CPU by owner (nearest repo/npm frame; node internals, syscalls, natives below it included)', 'ms', 'share'], ...p.byOwner.slice(0, 12).map((a: { owner: string; ms: number; share: number }) => [a.owner, fmt(a.ms, 1), `${fmt(a.share * 100, 1)}%`])]),
        '',
        table([['self time by area', 'ms', 'share'], ...p.byArea.slice(0, 12).map((a: { area: string; selfMs: number; selfShare: number }) => [a.area, fmt(a.selfMs, 1), `${fmt(a.selfShare * 100, 1)}%`])]),
        '',
        table([['top self time', 'where', 'ms', 'share'], ...p.topSelf.slice(0, 15).map((f: HotSpot) => [f.name, f.where, fmt(f.selfMs, 1), `${fmt(f.selfShare * 100, 1)}%`])]),
        '',
        table([['repo functions, inclusive', 'where', 'ms', 'share'], ...p.repoInclusive.slice(0, 12).map((f: { name: string; where: string; totalMs: number; totalShare: number }) => [f.name, f.where, fmt(f.totalMs, 1), `${fmt(f.totalShare * 100, 1)}%`])]),
      );
    }
    for (const a of r.profile.allocations) {
      out.push(
        '',
        `gateway allocations, ${a.mode} at ${r.setup.rate} req/s (${a.requests} requests, ${fmt(a.totalMB, 1)} MB = ${fmt(a.kbPerRequest, 1)} kB/request, sampled, GC'd objects included): ${a.file}`,
        table([['allocated by owner', 'kB/req', 'share'], ...a.byOwner.slice(0, 10).map((o: { owner: string; kbPerRequest: number; share: number }) => [o.owner, fmt(o.kbPerRequest, 2), `${fmt(o.share * 100, 1)}%`])]),
        '',
        table([['allocating function', 'where', 'kB/req', 'share'], ...a.topFunctions.slice(0, 12).map((f: { name: string; where: string; kbPerRequest: number; share: number }) => [f.name, f.where, fmt(f.kbPerRequest, 2), `${fmt(f.share * 100, 1)}%`])]),
      );
    }
  }
  return out.join('\n');
}
