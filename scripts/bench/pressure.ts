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
 * `--seconds`, split across `--processes` (default 3) OS processes (this script again with
 * `node --import tsx ... --role worker`, like scripts/demo.ts). Each process draws its own arrival
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
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import OpenAI from 'openai';
import { pino } from 'pino';
import { KeyPool, PoolKeys, type KeySpecInput } from '@keypool/core';
import { PooledOpenAI } from '@keypool/client';
// the vitest-free entry of the testkit (its index imports vitest's inject())
import { startFakeOpenAI, fakeOpenAIControl, messagesTokens, seededRandom, type FakeKeyCounters } from '@keypool/testkit/fake-openai';
import { spawnRedisServer } from '../../packages/testkit/src/redis-server.js';

const MODEL = 'gpt-4o-mini';
const MAX_TOKENS = 96;
/** Fixed-length message texts: every request costs the same (the request number is padded in). */
const SYSTEM_TEXT = 'You are a terse assistant. Answer in one short paragraph. '.repeat(4).slice(0, 200);
const USER_BASE = 'Summarise the following note about key pools, rate limits and fleets of stateless workers. ';
const USER_LEN = 400;
/** Upstream keys: two bound by RPM, two by TPM (at the request size above). */
const KEYS = [
  { name: 'k1', rpm: 240, tpm: 90_000 },
  { name: 'k2', rpm: 180, tpm: 60_000 },
  { name: 'k3', rpm: 240, tpm: 12_000 },
  { name: 'k4', rpm: 120, tpm: 6_000 },
] as const;
const NAIVE = { attempts: 5, baseMs: 100 } as const;
const TARGETS = { clientFailures: 0, upstream429ShareMax: 0.005, goodputShareMin: 0.95 } as const;

const log = (msg: string) => process.stderr.write(`[pressure] ${msg}\n`);

function userText(i: number): string {
  const head = `#${String(i).padStart(6, '0')} ${USER_BASE}`;
  return (head + 'lorem ipsum dolor sit amet '.repeat(20)).slice(0, USER_LEN);
}

function messagesFor(i: number): OpenAI.Chat.ChatCompletionMessageParam[] {
  return [
    { role: 'system', content: SYSTEM_TEXT },
    { role: 'user', content: userText(i) },
  ];
}

/** Poisson arrival times (ms from the common start) of one process, from a seeded generator. */
function schedule(seed: number, ratePerSec: number, seconds: number): number[] {
  const rand = seededRandom(seed);
  const out: number[] = [];
  const end = seconds * 1000;
  let t = 0;
  for (;;) {
    t += (-Math.log(1 - rand()) / ratePerSec) * 1000;
    if (t >= end) break;
    out.push(t);
  }
  return out;
}

// ---- worker (child process) ------------------------------------------------------------------

interface WorkerConfig {
  mode: 'keypool' | 'naive';
  index: number;
  seed: number;
  ratePerSec: number;
  seconds: number;
  deadlineMs: number;
  fakeUrl: string;
  redisUrl: string;
  pool: string;
  keys: { name: string; secret: string; rpm: number; tpm: number }[];
}

interface WorkerResult {
  index: number;
  offered: number;
  succeeded: number;
  /** ms from scheduled start to the end of the call, per request: successes and failures */
  okLatencies: number[];
  failLatencies: number[];
  failures: Record<string, number>;
  /** how late the event loop started requests after their scheduled time (ms): p99, max */
  startLagP99Ms: number;
  startLagMaxMs: number;
  /** naive: attempts per call; keypool: transitions seen by this process (cooling, opened...) */
  attempts?: Record<string, number>;
  transitions?: { atMs: number; key: string; transition: string }[];
  /** keypool, process 0: the pool's status at the end */
  status?: unknown;
}

function describeError(e: unknown): string {
  if (e instanceof OpenAI.APIError && typeof e.status === 'number') return `${e.constructor.name} ${e.status}${(e.error as { type?: string } | undefined)?.type ? ` ${(e.error as { type?: string }).type}` : ''}`;
  const err = e as { name?: string; code?: string; reason?: string; message?: string };
  if (err?.code === 'POOL_EXHAUSTED') return `PoolExhaustedError ${err.reason}`;
  return `${err?.name ?? 'Error'}${err?.code ? ` ${err.code}` : ''}: ${String(err?.message ?? e).slice(0, 120)}`;
}

async function worker(cfg: WorkerConfig): Promise<void> {
  const wlog = (msg: string) => process.stderr.write(`[pressure ${cfg.mode} #${cfg.index}] ${msg}\n`);
  const offsets = schedule(cfg.seed, cfg.ratePerSec, cfg.seconds);
  let call: (i: number, timeoutMs: number) => Promise<number>; // resolves to attempts used
  let pool: KeyPool | undefined;
  const transitions: WorkerResult['transitions'] = [];
  let startAt = 0;

  if (cfg.mode === 'keypool') {
    const keys: KeySpecInput[] = cfg.keys.map((k) => ({ secret: k.secret, name: k.name, provider: 'openai', baseURL: cfg.fakeUrl, models: [MODEL], rpm: k.rpm, tpm: k.tpm }));
    pool = await KeyPool.connect({ redis: cfg.redisUrl, config: { pool: cfg.pool, keys }, logger: pino({ level: 'warn', name: `pressure-${cfg.index}` }, pino.destination(2)) });
    const names = new Map<string, string>();
    pool.on('transition', (ev) => transitions.push({ atMs: Date.now() - startAt, key: names.get(ev.keyId) ?? ev.hint, transition: ev.transition }));
    for (const k of (await pool.status()).keys) names.set(k.id, k.name ?? k.hint);
    const openai = new PooledOpenAI({ pool, deadlineMs: cfg.deadlineMs });
    call = async (i, timeoutMs) => {
      await openai.chat.completions.create({ model: MODEL, messages: messagesFor(i), max_tokens: MAX_TOKENS }, { timeout: timeoutMs });
      return 1;
    };
  } else {
    const clients = cfg.keys.map((k) => new OpenAI({ apiKey: k.secret, baseURL: cfg.fakeUrl, maxRetries: 0, timeout: cfg.deadlineMs }));
    let rr = cfg.index; // processes start on different keys, as independent processes would
    call = async (i, timeoutMs) => {
      const deadline = Date.now() + timeoutMs;
      const first = rr++ % clients.length;
      let last: unknown;
      for (let a = 0; a < NAIVE.attempts; a++) {
        const left = deadline - Date.now();
        if (left <= 0) break;
        try {
          await clients[(first + a) % clients.length]!.chat.completions.create({ model: MODEL, messages: messagesFor(i), max_tokens: MAX_TOKENS }, { timeout: left });
          return a + 1;
        } catch (e) {
          last = e;
          const status = e instanceof OpenAI.APIError ? e.status : undefined;
          const retryable = status === 429 || (typeof status === 'number' && status >= 500) || e instanceof OpenAI.APIConnectionError;
          if (!retryable || a === NAIVE.attempts - 1) break;
          const ra = Number(e instanceof OpenAI.APIError ? e.headers?.get?.('retry-after-ms') : NaN);
          const backoff = NAIVE.baseMs * 2 ** a * (0.5 + Math.random() * 0.5);
          const wait = Number.isFinite(ra) && ra > 0 ? ra : backoff;
          if (Date.now() + wait >= deadline) break;
          await sleep(wait);
        }
      }
      throw last ?? new Error('deadline passed before an attempt');
    };
  }

  // ready; wait for the common start time on stdin
  process.stdout.write(JSON.stringify({ ready: true }) + '\n');
  const rl = createInterface({ input: process.stdin });
  const [line] = (await once(rl, 'line')) as [string];
  rl.close();
  startAt = Number(/^START (\d+)$/.exec(line.trim())?.[1]);
  if (!Number.isFinite(startAt) || startAt <= 0) throw new Error(`bad start line: ${line}`);

  const okLatencies: number[] = [];
  const failLatencies: number[] = [];
  const failures: Record<string, number> = {};
  const attempts: Record<string, number> = {};
  const lags: number[] = [];
  let succeeded = 0;
  const pending: Promise<void>[] = [];
  for (let j = 0; j < offsets.length; j++) {
    const scheduled = startAt + offsets[j]!;
    const wait = scheduled - Date.now();
    if (wait > 0) await sleep(wait);
    const i = cfg.index * 1_000_000 + j;
    const began = Date.now();
    lags.push(began - scheduled);
    pending.push(
      call(i, Math.max(1, Math.floor(cfg.deadlineMs - (began - scheduled)))).then(
        (n) => {
          succeeded++;
          okLatencies.push(Date.now() - scheduled);
          attempts[n] = (attempts[n] ?? 0) + 1;
        },
        (e: unknown) => {
          failLatencies.push(Date.now() - scheduled);
          const d = describeError(e);
          failures[d] = (failures[d] ?? 0) + 1;
        },
      ),
    );
  }
  await Promise.all(pending);
  lags.sort((a, b) => a - b);
  const result: WorkerResult = {
    index: cfg.index,
    offered: offsets.length,
    succeeded,
    okLatencies,
    failLatencies,
    failures,
    startLagP99Ms: round(percentile(lags, 0.99), 1),
    startLagMaxMs: round(lags[lags.length - 1] ?? 0, 1),
    ...(cfg.mode === 'naive' ? { attempts } : { transitions }),
  };
  if (pool) {
    if (cfg.index === 0) {
      const st = await pool.status();
      result.status = st.keys.map((k) => ({ key: k.name ?? k.hint, state: k.state, left: k.left, limits: { rpmBurst: k.limits.rpmBurst, tpmBurst: k.limits.tpmBurst }, coolingUntil: k.coolingUntil ?? null, breaker: k.breaker?.state, latency: k.latency }));
    }
    await pool.close();
  }
  if (Object.keys(failures).length) wlog(`failures: ${JSON.stringify(failures)}`);
  process.stdout.write(JSON.stringify(result) + '\n');
}

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
  const { values } = parseArgs({
    options: {
      json: { type: 'boolean', default: false },
      seconds: { type: 'string', default: '30' },
      processes: { type: 'string', default: '3' },
      load: { type: 'string', default: '0.9' },
      'deadline-ms': { type: 'string', default: '20000' },
      'latency-ms': { type: 'string', default: '40' },
      seed: { type: 'string', default: '1' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    process.exit(0);
  }
  const num = (name: string, v: string, min: number, max: number, int = false) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min || n > max || (int && !Number.isInteger(n))) throw new Error(`--${name} must be ${int ? 'an integer' : 'a number'} in [${min}, ${max}], got "${v}"`);
    return n;
  };
  return {
    json: values.json,
    seconds: num('seconds', values.seconds, 1, 3600),
    processes: num('processes', values.processes, 2, 32, true),
    load: num('load', values.load, 0.01, 5),
    deadlineMs: num('deadline-ms', values['deadline-ms'], 100, 600_000, true),
    latencyMs: num('latency-ms', values['latency-ms'], 0, 60_000),
    seed: num('seed', values.seed, 0, 2 ** 31, true),
  };
}

function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i]!;
}

function round(x: number, digits: number): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

const fmt = (x: number | null | undefined, digits = 0) =>
  x === null || x === undefined || !Number.isFinite(x) ? 'n/a' : x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')).join('\n');
}

/** Start the workers of one run, wait until all are ready, start them together, collect results. */
async function runWorkers(cfgs: WorkerConfig[], hardLimitMs: number, onStart: (startAt: number) => void): Promise<WorkerResult[]> {
  const self = fileURLToPath(import.meta.url);
  const children: ChildProcess[] = [];
  const timer = setTimeout(() => {
    log(`run did not finish within ${Math.round(hardLimitMs / 1000)} s: killing its workers`);
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  }, hardLimitMs);
  try {
    const procs = cfgs.map((cfg) => {
      const child = spawn(process.execPath, ['--import', 'tsx', self, '--role', 'worker', '--config', Buffer.from(JSON.stringify(cfg)).toString('base64')], {
        stdio: ['pipe', 'pipe', 'inherit'],
      });
      children.push(child);
      const lines: string[] = [];
      let readyResolve!: () => void;
      const ready = new Promise<void>((r) => (readyResolve = r));
      createInterface({ input: child.stdout! }).on('line', (l) => {
        if (l.includes('"ready":true')) readyResolve();
        else if (l.trim()) lines.push(l);
      });
      const done = new Promise<WorkerResult>((resolve, reject) =>
        child.once('exit', (code, signal) => {
          const last = lines[lines.length - 1];
          if (code === 0 && last) resolve(JSON.parse(last) as WorkerResult);
          else reject(new Error(`worker ${cfg.mode} #${cfg.index} exited with ${code ?? signal}`));
        }),
      );
      // a worker that dies before it is ready must not leave the run waiting forever
      return { child, ready: Promise.race([ready, done.then(() => undefined)]), done };
    });
    await Promise.all(procs.map((p) => p.ready));
    const startAt = Date.now() + 500;
    for (const p of procs) p.child.stdin!.end(`START ${startAt}\n`);
    onStart(startAt);
    return await Promise.all(procs.map((p) => p.done));
  } finally {
    clearTimeout(timer);
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
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
  let redisUrl: string;
  let redisKind: 'env' | 'spawned';
  let stopRedis = async () => {};
  if (process.env.REDIS_URL) {
    redisUrl = process.env.REDIS_URL;
    redisKind = 'env';
  } else {
    const server = await spawnRedisServer();
    redisUrl = server.url;
    redisKind = 'spawned';
    stopRedis = server.stop;
    log(`redis-server on ${server.host}:${server.port} (pid ${server.process.pid})`);
  }
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
        p50Ms: round(percentile(ok, 0.5), 1),
        p90Ms: round(percentile(ok, 0.9), 1),
        p99Ms: round(percentile(ok, 0.99), 1),
        maxMs: round(ok[ok.length - 1] ?? NaN, 1),
        p50AllMs: round(percentile(all, 0.5), 1),
        p99AllMs: round(percentile(all, 0.99), 1),
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
    if (redisKind! === 'env') {
      const admin = new Redis(redisUrl!, { maxRetriesPerRequest: 1, lazyConnect: true });
      admin.on('error', () => {});
      try {
        await admin.connect();
        let cursor = '0';
        let n = 0;
        do {
          const [next, found] = await admin.scan(cursor, 'MATCH', new PoolKeys(poolName).pattern, 'COUNT', 1000);
          cursor = next;
          if (found.length) n += await admin.unlink(...found);
        } while (cursor !== '0');
        log(`deleted ${n} Redis keys of pool ${poolName}`);
      } catch (e) {
        log(`could not delete the pool's Redis keys: ${(e as Error).message}`);
      } finally {
        admin.disconnect();
      }
    }
    await stopRedis();
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
    cores: os.availableParallelism?.() ?? os.cpus().length,
    platform: `${process.platform}-${process.arch}`,
    timestamp: new Date().toISOString(),
    totalWallSeconds: round((Date.now() - t0) / 1000, 1),
  };
  if (opts.json) process.stdout.write(JSON.stringify(result) + '\n');
  else process.stdout.write(render(result) + '\n');
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

// ---- entry -----------------------------------------------------------------------------------

if (process.argv[2] === '--role' && process.argv[3] === 'worker') {
  const i = process.argv.indexOf('--config');
  const cfg = JSON.parse(Buffer.from(process.argv[i + 1] ?? '', 'base64').toString('utf8')) as WorkerConfig;
  worker(cfg).then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`[pressure worker] failed: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
} else {
  main().catch((e: unknown) => {
    log(`failed: ${(e as Error)?.stack ?? String(e)}`);
    process.exitCode = 1;
  });
}
