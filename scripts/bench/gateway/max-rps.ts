/**
 * maxRps: the highest non-streaming rate at which the gateway's overhead p99 stays under the bound
 * with no errors, stepping up the --rates ladder (each step direct and gateway, ABBA / BAAB; a
 * failing step measured again; below the ladder when the first step fails; stopped when direct
 * calls themselves miss the bound, as the harness and not the gateway is then the limit).
 */
import { fmt } from '../lib/report.js';
import { round } from '../lib/stats.js';
import type { Side } from './load.js';
import { measureSides, meanTelemetry, overheadOf, warm, type Env, type SideFigures } from './measure.js';
import { interrupted, log, type Options } from './options.js';

export interface StepResult {
  rate: number;
  attempt: number;
  direct: { achievedRps: number; p50Ms: number; p99Ms: number; errors: number };
  gateway: { achievedRps: number; p50Ms: number; p99Ms: number; errors: number; cores: number; cpuUsPerRequest: number; ownOverheadP99Ms: number; eventLoopDelayP99Ms: number; eventLoopUtilization: number; runqueueWaitMsPerS: number };
  overheadP50Ms: number;
  overheadP99Ms: number;
  machineBusy: number;
  /** cores used by processes outside this benchmark (other work on the machine) */
  otherCores: number;
  directOk: boolean;
  pass: boolean;
  reason: string;
}

function stepOf(rate: number, attempt: number, r: { direct: SideFigures; gateway: SideFigures }, opts: Options): StepResult {
  const o = overheadOf(r.direct.latency, r.gateway.latency);
  const gt = meanTelemetry(r.gateway.slices);
  const dt = meanTelemetry(r.direct.slices);
  // direct calls are "ok" when they stay within the same bound of the upstream's own latency
  const directExcess = r.direct.latency.p99Ms - opts.latencyMs;
  const directOk = r.direct.errors === 0 && directExcess < opts.maxOverheadMs;
  const reasons: string[] = [];
  if (r.gateway.errors) reasons.push(`${r.gateway.errors} gateway errors ${JSON.stringify(r.gateway.errorKinds)}`);
  if (r.direct.errors) reasons.push(`${r.direct.errors} direct errors ${JSON.stringify(r.direct.errorKinds)}`);
  if (!(o.p99Ms < opts.maxOverheadMs)) reasons.push(`overhead p99 ${fmt(o.p99Ms, 2)} ms >= ${opts.maxOverheadMs} ms`);
  if (!directOk && !r.direct.errors) reasons.push(`direct p99 ${fmt(r.direct.latency.p99Ms, 1)} ms is ${fmt(directExcess, 1)} ms over the upstream latency`);
  return {
    rate,
    attempt,
    direct: { achievedRps: r.direct.achievedRps, p50Ms: r.direct.latency.p50Ms, p99Ms: r.direct.latency.p99Ms, errors: r.direct.errors },
    gateway: {
      achievedRps: r.gateway.achievedRps,
      p50Ms: r.gateway.latency.p50Ms,
      p99Ms: r.gateway.latency.p99Ms,
      errors: r.gateway.errors,
      cores: gt.cores.gateway,
      cpuUsPerRequest: gt.cpuUsPerRequest.gateway,
      ownOverheadP99Ms: gt.gateway?.overhead.p99Ms ?? NaN,
      eventLoopDelayP99Ms: gt.gateway?.eventLoopDelayMs.p99 ?? NaN,
      eventLoopUtilization: gt.gateway?.calls.eventLoopUtilization ?? NaN,
      runqueueWaitMsPerS: gt.runqueueWaitMsPerS.gateway,
    },
    overheadP50Ms: o.p50Ms,
    overheadP99Ms: o.p99Ms,
    machineBusy: round(((gt.cores.machineBusy ?? NaN) + (dt.cores.machineBusy ?? NaN)) / 2),
    otherCores: round(((gt.cores.others ?? NaN) + (dt.cores.others ?? NaN)) / 2, 2),
    directOk,
    pass: r.gateway.errors === 0 && r.direct.errors === 0 && o.p99Ms < opts.maxOverheadMs && directOk,
    reason: reasons.join('; ') || 'ok',
  };
}

export async function searchMaxRps(env: Env, opts: Options): Promise<{ steps: StepResult[]; maxRps: number | null; limitedBy: string | null; belowLadder: boolean }> {
    const steps: StepResult[] = [];
    let maxRps: number | null = null;
    let limitedBy: string | null = null;
    let belowLadder = false;
    let attemptNo = 0;
    /** One rate, measured up to 1 + stepRetries times: passed, failed (the gateway), or the harness failed. */
    const tryRate = async (rate: number): Promise<'pass' | 'fail' | 'harness' | 'interrupted'> => {
      let last: StepResult | undefined;
      for (let attempt = 1; attempt <= 1 + opts.stepRetries; attempt++) {
        if (interrupted()) return 'interrupted';
        await warm(env, 'chat', rate, Math.min(1, opts.stepSeconds));
        const sides: Side[] = attemptNo++ % 2 === 1 ? ['gateway', 'direct'] : ['direct', 'gateway'];
        const got = await measureSides(env, 'chat', rate, opts.stepSeconds, `maxRps ${rate}/s #${attempt}`, sides);
        if (!got) return 'interrupted';
        const r = { direct: got.direct!, gateway: got.gateway! };
        const st = stepOf(rate, attempt, r, opts);
        steps.push(st);
        log(`maxRps ${rate}/s #${attempt}: overhead p50 ${fmt(st.overheadP50Ms, 2)} ms, p99 ${fmt(st.overheadP99Ms, 2)} ms -> ${st.pass ? 'PASS' : `FAIL (${st.reason})`}`);
        if (st.pass) return 'pass';
        last = st;
      }
      // the last attempt decides whose fault it was (noise from other work comes and goes)
      if (last && !last.directOk) {
        limitedBy = `the harness: at ${rate} req/s direct calls missed the bound too (${last.reason}), so the machine (load generator, fake upstream, other work) saturates before the gateway can be measured further`;
        return 'harness';
      }
      limitedBy = `the gateway: ${rate} req/s failed ${1 + opts.stepRetries} time(s)`;
      return 'fail';
    };
    let first: Awaited<ReturnType<typeof tryRate>> | undefined;
    for (const rate of opts.rates) {
      const r = await tryRate(rate);
      first ??= r;
      if (r !== 'pass') break;
      maxRps = rate;
    }
    // the first step failed: step down (half, a quarter) so the figure says how far off it is
    if (first === 'fail') {
      for (const rate of [Math.floor(opts.rates[0]! / 2), Math.floor(opts.rates[0]! / 4)].filter((x) => x >= 1)) {
        const r = await tryRate(rate);
        if (r === 'pass') {
          maxRps = rate;
          belowLadder = true;
          limitedBy = `the gateway: ${opts.rates[0]} req/s failed, ${rate} req/s passed (below the ladder)`;
          break;
        }
        if (r !== 'fail') break;
      }
    }
    if (!interrupted() && maxRps !== null && maxRps === opts.rates[opts.rates.length - 1]) limitedBy = `the list of rates: every step passed (add higher --rates)`;
  return { steps, maxRps, limitedBy, belowLadder };
}
