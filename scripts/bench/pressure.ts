/**
 * Pressure benchmark: keypool (PooledOpenAI over a KeyPool in Redis) against a naive client, on the
 * same fake OpenAI upstream, in one run.
 *
 *   npm run bench:pressure                     readable table on stdout, progress on stderr
 *   npm run -s bench:pressure -- --json        exactly one JSON object on stdout
 *   npm run bench:pressure -- --seconds 60     longer arrival window (default 30 s)
 *
 * Setup: one fake upstream (packages/testkit fake-openai, in this process, on 127.0.0.1) with four
 * keys of different RPM/TPM limits (two bound by RPM, two by TPM), model gpt-4o-mini, fixed latency.
 * Every request is the same size: two chat messages of fixed length and an explicit max_tokens,
 * so the fake charges each one the same number of tokens (prompt per its rule + max_tokens) and the
 * aggregate capacity is sum over keys of min(rpm, tpm / charge) requests per minute.
 *
 * Offered load: open-loop Poisson arrivals at `--load` (default 0.9) of that capacity for
 * `--seconds`, split across `--processes` (default 3) OS processes (scripts/bench/pressure/worker.ts,
 * children of this one with an IPC channel, scripts/bench/lib/child-ipc.ts). Each process draws its own arrival
 * times from a seeded generator, so both clients get exactly the same schedule. Latency is measured
 * from a request's scheduled start, so waiting (for a key, for a backoff) counts.
 *
 *   keypool: each process connects a KeyPool (fresh pool name per run, one shared Redis) with the
 *            same keys and the same rpm/tpm as the fake (provider openai, baseURL = the fake) and a
 *            PooledOpenAI; a request is chat.completions.create({ model, messages, max_tokens },
 *            { timeout: deadline }). A failure is a call that throws.
 *   naive:   each process round-robins the keys with its own official `openai` clients
 *            (maxRetries 0); on 429/5xx/connection errors it retries on the next key with
 *            exponential backoff (5 attempts, 100 ms base, retry-after-ms honoured), no shared
 *            state. A failure is a call whose attempts all failed (or that ran out of deadline).
 *
 * keypool runs first, then the fake is reset (counters zeroed, buckets full) and naive runs.
 * Upstream figures come from the fake's counters over HTTP (GET /_fake/counters).
 *
 * Redis: REDIS_URL if set (never flushed: only this run's pool keys are deleted at the end), else
 * one private redis-server on a free port shared by every process of the run, stopped at the end.
 */
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
// the vitest-free entry of the testkit (its index imports vitest's inject())
import { startFakeOpenAI, fakeOpenAIControl, messagesTokens, type FakeKeyCounters } from '@keypool/testkit/fake-openai';
import { int, num, parseBenchArgs } from './cli.js';
import { BenchChild } from './lib/child-ipc.js';
import { adminClient, deletePoolKeys, openRedis } from './lib/redis.js';
import { fmt, logger, machine, printResult, table } from './lib/report.js';
import { quantile, round } from './lib/stats.js';
import { MAX_TOKENS, MODEL, messagesFor, NAIVE, type WorkerConfig, type WorkerResult } from './pressure/request.js';

/** Upstream keys: two bound by RPM, two by TPM (at the request size above). */
const KEYS = [
  { name: 'k1', rpm: 240, tpm: 90_000 },
  { name: 'k2', rpm: 180, tpm: 60_000 },
  { name: 'k3', rpm: 240, tpm: 12_000 },
  { name: 'k4', rpm: 120, tpm: 6_000 },
] as const;
const TARGETS = { clientFailures: 0, upstream429ShareMax: 0.005, goodputShareMin: 0.95 } as const;
const WORKER = fileURLToPath(new URL('./pressure/worker.ts', import.meta.url));

const log = logger('pressure');

// ---- parent ----------------------------------------------------------------------------------

const USAGE = `Usage: tsx scripts/bench/pressure.ts [options]   (npm run bench:pressure -- [options])
  --json             print one JSON object on stdout (progress and logs go to stderr)
  --seconds N        arrival window of each client's run, seconds (default 30)
  --processes N      OS processes sharing the offered load (default 3, at least 2)
  --load F           offered load as a fraction of the aggregate capacity (default 0.9)
  --deadline-ms N    deadline of one call, from its scheduled start (default 20000)
  --latency-ms N     fixed latency of the fake upstream (default 40)
  --seed N           seed of the arrival schedule (default 1)
  -h, --help         this text
Redis: REDIS_URL if set (only this run's pool keys are deleted), else a private redis-server.`;


function parseCli() {
  const v = parseBenchArgs(USAGE, {
    seconds: '30', processes: '3', load: '0.9', 'deadline-ms': '20000', 'latency-ms': '40', seed: '1',
  });
  return {
    json: v.json,
    seconds: num('seconds', v.seconds, 1, 3600),
    processes: int('processes', v.processes, 2, 32),
    load: num('load', v.load, 0.01, 5),
    deadlineMs: int('deadline-ms', v['deadline-ms'], 100, 600_000),
    latencyMs: num('latency-ms', v['latency-ms'], 0, 60_000),
    seed: int('seed', v.seed, 0, 2 ** 31),
  };
}

/** Start the workers of one run, wait until all are ready, start them together, collect results. */
async function runWorkers(cfgs: WorkerConfig[], hardLimitMs: number, onStart: (startAt: number) => void): Promise<WorkerResult[]> {
  const workers = cfgs.map((config) => new BenchChild({ script: WORKER, role: 'worker', label: `pressure ${config.mode} #${config.index}`, config }));
  const timer = setTimeout(() => {
    log(`run did not finish within ${Math.round(hardLimitMs / 1000)} s: killing its workers`);
    for (const w of workers) if (w.proc.exitCode === null) w.proc.kill('SIGKILL');
  }, hardLimitMs);
  try {
    // a worker that dies before it is ready rejects its `ready`: the run does not wait forever
    await Promise.all(workers.map((w) => w.ready));
    const startAt = Date.now() + 500;
    const results = Promise.all(workers.map((w) => w.request<WorkerResult>('start', { startAt }, hardLimitMs)));
    onStart(startAt);
    return await results;
  } finally {
    clearTimeout(timer);
    await Promise.all(workers.map((w) => w.stop().catch(() => undefined)));
  }
}

interface ClientFigures {
  offered: number;
  succeeded: number;
  clientFailures: number;
  failureKinds: Record<string, number>;
  goodputShare: number;
  upstreamRequests: number;
  upstream429: number;
  upstream429Share: number;
  upstreamStatus: Record<string, number>;
  /** latency of successful calls from their scheduled start */
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  /** the same over every call, failures included */
  p50AllMs: number;
  p99AllMs: number;
  wallSeconds: number;
  /** how late worker event loops started requests (ms): the worst p99 and max over processes */
  startLagP99Ms: number;
  startLagMaxMs: number;
  perKey: Record<string, { requests: number; served: number; rate429: number; peakRequestsPerMinute: number; peakTokensPerMinute: number; promptTokens: number; completionTokens: number }>;
  /** upstream requests and 429s per second of the run (from the counters, polled over HTTP) */
  timeline: { t: number; requests: number; r429: number }[];
  attempts?: Record<string, number>;
  transitions?: { process: number; atMs: number; key: string; transition: string }[];
  poolStatus?: unknown;
}

function sumCounters(c: Record<string, FakeKeyCounters>) {
  let requests = 0;
  let r429 = 0;
  const status: Record<string, number> = {};
  for (const k of Object.values(c)) {
    requests += k.requests;
    r429 += k.rate429;
    for (const [s, n] of Object.entries(k.status)) status[s] = (status[s] ?? 0) + n;
  }
  return { requests, r429, status };
}

async function main(): Promise<void> {
  const opts = parseCli();
  const t0 = Date.now();
  const runId = randomBytes(4).toString('hex');
  const poolName = `pressure-${runId}`;

  // ---- the request and what it costs
  const sample = messagesFor(0);
  const promptTokens = messagesTokens(sample as { content?: unknown }[]);
  const charge = promptTokens + MAX_TOKENS; // what the fake takes from the TPM bucket at admission
  // keypool's estimate (packages/client/src/estimate.ts): 3 + sum(4 + ceil(chars / 4)) + max_tokens
  const keypoolEstimate = 3 + sample.reduce((n, m) => n + 4 + Math.ceil(String(m.content).length / 4), 0) + MAX_TOKENS;
  const keys = KEYS.map((k) => {
    const byTokens = k.tpm / charge;
    const capacityRpm = Math.min(k.rpm, byTokens);
    return { ...k, secret: `sk-pressure-${k.name}-${runId}-${randomBytes(12).toString('hex')}`, capacityRpm, binding: k.rpm <= byTokens ? 'rpm' : 'tpm' };
  });
  const capacityRpm = keys.reduce((s, k) => s + k.capacityRpm, 0);
  const offeredRpm = capacityRpm * opts.load;
  const ratePerSec = offeredRpm / 60;
  log(`${keys.length} keys, request = ${promptTokens} prompt + ${MAX_TOKENS} max_tokens = ${charge} tokens charged (keypool estimates ${keypoolEstimate})`);
  log(`aggregate capacity ${fmt(capacityRpm, 1)} req/min; offered ${fmt(offeredRpm, 1)} req/min (${fmt(ratePerSec, 2)}/s, Poisson) for ${opts.seconds} s over ${opts.processes} processes`);

  // ---- Redis and the fake upstream
  const redis = await openRedis();
  const { url: redisUrl, kind: redisKind } = redis;
  if (redis.server) log(`redis-server on ${redis.display}`);
  const fake = await startFakeOpenAI({
    host: '127.0.0.1',
    keys: keys.map((k) => ({ key: k.secret, name: k.name, rpm: k.rpm, tpm: k.tpm, models: [MODEL] })),
    models: [MODEL],
    latency: opts.latencyMs,
    seed: opts.seed,
  });
  const control = fakeOpenAIControl(fake.url);
  log(`fake upstream at ${fake.url}`);

  const interrupted = new AbortController();
  const onSignal = () => interrupted.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const results: Partial<Record<'keypool' | 'naive', ClientFigures>> = {};
  try {
    for (const mode of ['keypool', 'naive'] as const) {
      if (interrupted.signal.aborted) break;
      await control.reset(); // counters zeroed, buckets full
      const c0 = sumCounters(await control.counters());
      if (c0.requests !== 0) throw new Error('fake counters not zero after reset');
      const cfgs: WorkerConfig[] = Array.from({ length: opts.processes }, (_, index) => ({
        mode,
        index,
        seed: opts.seed * 1000 + index,
        ratePerSec: ratePerSec / opts.processes,
        seconds: opts.seconds,
        deadlineMs: opts.deadlineMs,
        fakeUrl: fake.url,
        redisUrl,
        pool: poolName,
        keys: keys.map((k) => ({ name: k.name, secret: k.secret, rpm: k.rpm, tpm: k.tpm })),
      }));
      log(`${mode}: starting ${opts.processes} workers`);
      const timeline: ClientFigures['timeline'] = [];
      let poll: NodeJS.Timeout | undefined;
      let startedAt = 0;
      const w0 = Date.now();
      const workerResults = await runWorkers(cfgs, (opts.seconds + opts.deadlineMs / 1000 + 60) * 1000, (startAt) => {
        startedAt = startAt;
        let prev = { requests: 0, r429: 0 };
        let sec = 0;
        const tick = async () => {
          sec++;
          const s = sumCounters(await control.counters());
          timeline.push({ t: sec, requests: s.requests - prev.requests, r429: s.r429 - prev.r429 });
          prev = s;
          const last = timeline[timeline.length - 1]!;
          if (last.r429) log(`${mode}: t+${sec}s upstream 429s this second: ${last.r429}`);
        };
        setTimeout(() => {
          poll = setInterval(() => void tick().catch(() => undefined), 1000);
        }, Math.max(0, startAt - Date.now()));
      });
      if (poll) clearInterval(poll);
      const wallSeconds = (Date.now() - Math.max(w0, startedAt)) / 1000;
      await sleep(100); // answers written just before the workers exited are counted
      const counters = await control.counters();
      const up = sumCounters(counters);
      const offered = workerResults.reduce((s, r) => s + r.offered, 0);
      const succeeded = workerResults.reduce((s, r) => s + r.succeeded, 0);
      const ok = workerResults.flatMap((r) => r.okLatencies).sort((a, b) => a - b);
      const all = workerResults.flatMap((r) => [...r.okLatencies, ...r.failLatencies]).sort((a, b) => a - b);
      const failureKinds: Record<string, number> = {};
      for (const r of workerResults) for (const [k, n] of Object.entries(r.failures)) failureKinds[k] = (failureKinds[k] ?? 0) + n;
      const perKey: ClientFigures['perKey'] = {};
      for (const [name, c] of Object.entries(counters)) {
        if (c.requests === 0 && name.startsWith('(')) continue;
        perKey[name] = { requests: c.requests, served: c.served, rate429: c.rate429, peakRequestsPerMinute: c.peakRequestsPerMinute, peakTokensPerMinute: c.peakTokensPerMinute, promptTokens: c.promptTokens, completionTokens: c.completionTokens };
      }
      const fig: ClientFigures = {
        offered,
        succeeded,
        clientFailures: offered - succeeded,
        failureKinds,
        goodputShare: offered ? round(succeeded / offered, 4) : NaN,
        upstreamRequests: up.requests,
        upstream429: up.r429,
        upstream429Share: up.requests ? round(up.r429 / up.requests, 4) : 0,
        upstreamStatus: up.status,
        p50Ms: round(quantile(ok, 0.5), 1),
        p90Ms: round(quantile(ok, 0.9), 1),
        p99Ms: round(quantile(ok, 0.99), 1),
        maxMs: round(ok[ok.length - 1] ?? NaN, 1),
        p50AllMs: round(quantile(all, 0.5), 1),
        p99AllMs: round(quantile(all, 0.99), 1),
        wallSeconds: round(wallSeconds, 1),
        startLagP99Ms: Math.max(...workerResults.map((r) => r.startLagP99Ms)),
        startLagMaxMs: Math.max(...workerResults.map((r) => r.startLagMaxMs)),
        perKey,
        timeline,
      };
      if (mode === 'naive') {
        const attempts: Record<string, number> = {};
        for (const r of workerResults) for (const [k, n] of Object.entries(r.attempts ?? {})) attempts[k] = (attempts[k] ?? 0) + n;
        fig.attempts = attempts;
      } else {
        fig.transitions = workerResults.flatMap((r) => (r.transitions ?? []).map((t) => ({ process: r.index, ...t }))).sort((a, b) => a.atMs - b.atMs);
        fig.poolStatus = workerResults.find((r) => r.index === 0)?.status;
      }
      results[mode] = fig;
      log(
        `${mode}: offered ${offered}, succeeded ${succeeded}, failures ${fig.clientFailures}, upstream ${up.requests} requests / ${up.r429} 429s, ` +
          `p50 ${fig.p50Ms} ms p99 ${fig.p99Ms} ms`,
      );
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await fake.stop().catch(() => undefined);
    if (redisKind === 'env') {
      const admin = adminClient(redisUrl);
      await admin
        .connect()
        .then(() => deletePoolKeys(admin, poolName, log))
        .catch((e: Error) => log(`could not delete the pool's Redis keys: ${e.message}`));
      admin.disconnect();
    }
    await redis.stop();
  }

  if (interrupted.signal.aborted || !results.keypool || !results.naive) {
    log('interrupted: no results printed');
    process.exitCode = 130;
    return;
  }
  const kp = results.keypool;
  const targets = {
    clientFailures: { max: TARGETS.clientFailures, value: kp.clientFailures, met: kp.clientFailures <= TARGETS.clientFailures },
    upstream429Share: { max: TARGETS.upstream429ShareMax, value: kp.upstream429Share, met: kp.upstream429Share <= TARGETS.upstream429ShareMax },
    goodputShare: { min: TARGETS.goodputShareMin, value: kp.goodputShare, met: kp.goodputShare >= TARGETS.goodputShareMin },
    allMet: false,
  };
  targets.allMet = targets.clientFailures.met && targets.upstream429Share.met && targets.goodputShare.met;
  const result = {
    setup: {
      model: MODEL,
      keys: keys.map((k) => ({ name: k.name, rpm: k.rpm, tpm: k.tpm, capacityRpm: round(k.capacityRpm, 2), binding: k.binding })),
      request: { messages: sample.length, promptTokens, maxTokens: MAX_TOKENS, chargedTokens: charge, keypoolEstimatedTokens: keypoolEstimate },
      aggregateCapacityRpm: round(capacityRpm, 2),
      load: opts.load,
      offeredRatePerSec: round(ratePerSec, 3),
      offeredRpm: round(offeredRpm, 2),
      arrivals: 'poisson (open loop, seeded per process; same schedule for both clients)',
      seed: opts.seed,
      seconds: opts.seconds,
      processes: opts.processes,
      deadlineMs: opts.deadlineMs,
      upstreamLatencyMs: opts.latencyMs,
      order: ['keypool', 'naive'],
      keypoolClient: 'PooledOpenAI defaults (maxAttempts 4, backoff 100 ms..5 s), per-call timeout = deadline left',
      naiveClient: `round robin, openai SDK maxRetries 0, ${NAIVE.attempts} attempts on the next key, backoff ${NAIVE.baseMs} ms x 2^n (jittered) or retry-after-ms`,
      redisKind,
    },
    keypool: results.keypool,
    naive: results.naive,
    targets,
    node: process.version,
    cores: machine().cores,
    platform: machine().platform,
    timestamp: new Date().toISOString(),
    totalWallSeconds: round((Date.now() - t0) / 1000, 1),
  };
  printResult(result, opts.json, render);
}

function render(r: {
  setup: { keys: { name: string; rpm: number; tpm: number; capacityRpm: number; binding: string }[]; request: Record<string, number>; [k: string]: unknown };
  keypool: ClientFigures;
  naive: ClientFigures;
  targets: { clientFailures: { max: number; value: number; met: boolean }; upstream429Share: { max: number; value: number; met: boolean }; goodputShare: { min: number; value: number; met: boolean }; allMet: boolean };
  [k: string]: unknown;
}): string {
  const s = r.setup;
  const out: string[] = [];
  out.push(
    `keypool pressure benchmark: node ${r.node}, ${r.cores} cores, redis ${s.redisKind}, ${r.timestamp}`,
    `offered ${fmt(s.offeredRpm as number, 1)} req/min = ${s.load} x capacity ${fmt(s.aggregateCapacityRpm as number, 1)} req/min, Poisson, ${s.seconds} s, ${s.processes} processes, deadline ${s.deadlineMs} ms, upstream latency ${s.upstreamLatencyMs} ms`,
    `request: ${s.request.promptTokens} prompt + ${s.request.maxTokens} max_tokens = ${s.request.chargedTokens} tokens charged by the fake (keypool estimates ${s.request.keypoolEstimatedTokens})`,
    '',
    table([['key', 'rpm', 'tpm', 'capacity req/min', 'binding'], ...s.keys.map((k) => [k.name, String(k.rpm), String(k.tpm), fmt(k.capacityRpm, 1), k.binding])]),
    '',
  );
  const k = r.keypool;
  const n = r.naive;
  const pct = (x: number) => `${fmt(x * 100, 2)}%`;
  out.push(
    table([
      ['figure', 'keypool', 'naive', 'keypool target'],
      ['offered calls', String(k.offered), String(n.offered), ''],
      ['succeeded', String(k.succeeded), String(n.succeeded), ''],
      ['client failures', String(k.clientFailures), String(n.clientFailures), `== 0  ${r.targets.clientFailures.met ? 'MET' : 'NOT MET'}`],
      ['goodput share', pct(k.goodputShare), pct(n.goodputShare), `>= 95%  ${r.targets.goodputShare.met ? 'MET' : 'NOT MET'}`],
      ['upstream requests', String(k.upstreamRequests), String(n.upstreamRequests), ''],
      ['upstream 429s', String(k.upstream429), String(n.upstream429), ''],
      ['upstream 429 share', pct(k.upstream429Share), pct(n.upstream429Share), `<= 0.5%  ${r.targets.upstream429Share.met ? 'MET' : 'NOT MET'}`],
      ['latency p50 ms (ok)', fmt(k.p50Ms), fmt(n.p50Ms), ''],
      ['latency p90 ms (ok)', fmt(k.p90Ms), fmt(n.p90Ms), ''],
      ['latency p99 ms (ok)', fmt(k.p99Ms), fmt(n.p99Ms), ''],
      ['latency max ms (ok)', fmt(k.maxMs), fmt(n.maxMs), ''],
      ['latency p99 ms (all)', fmt(k.p99AllMs), fmt(n.p99AllMs), ''],
      ['start lag p99 / max ms', `${fmt(k.startLagP99Ms)} / ${fmt(k.startLagMaxMs)}`, `${fmt(n.startLagP99Ms)} / ${fmt(n.startLagMaxMs)}`, ''],
    ]),
    '',
    `keypool targets: ${r.targets.allMet ? 'all MET' : 'NOT all met'}`,
    '',
    'upstream per key (requests / 429s / peak requests per 60 s / peak tokens per 60 s)',
    table([
      ['key', 'keypool', 'naive'],
      ...Object.keys({ ...k.perKey, ...n.perKey }).map((name) => {
        const c = (x: ClientFigures['perKey'][string] | undefined) => (x ? `${x.requests} / ${x.rate429} / ${x.peakRequestsPerMinute} / ${x.peakTokensPerMinute}` : '-');
        return [name, c(k.perKey[name]), c(n.perKey[name])];
      }),
    ]),
  );
  const kinds = (f: ClientFigures) => Object.entries(f.failureKinds).map(([e, c]) => `${c} x ${e}`).join('; ') || 'none';
  out.push('', `keypool failures: ${kinds(k)}`, `naive failures: ${kinds(n)}`);
  if (n.attempts) out.push(`naive attempts per successful call: ${Object.entries(n.attempts).map(([a, c]) => `${a}: ${c}`).join(', ')}`);
  if (k.transitions?.length) {
    const byKind: Record<string, number> = {};
    for (const t of k.transitions) byKind[`${t.key} ${t.transition}`] = (byKind[`${t.key} ${t.transition}`] ?? 0) + 1;
    out.push(`keypool key transitions seen by the workers: ${Object.entries(byKind).map(([e, c]) => `${e} x${c}`).join(', ')}`);
  }
  return out.join('\n');
}

main().catch((e: unknown) => {
  log(`failed: ${(e as Error)?.stack ?? String(e)}`);
  process.exitCode = 1;
});
