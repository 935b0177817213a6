/**
 * Sentinel failover benchmark: what a kill -9 of the Redis master costs two gateways under load.
 *
 *   npm run bench:failover                      readable report on stdout, progress on stderr
 *   npm run -s bench:failover -- --json         exactly one JSON object on stdout
 *   npm run bench:failover -- --rate 50 --before-s 12 --after-s 20 --runs 3
 *
 * Processes (all children of this one, stopped with it): a Sentinel group started with redis-server
 * (packages/testkit topologies: one master, one replica, three sentinels; down-after-milliseconds
 * 1000 and failover-timeout 3000 instead of Sentinel's 30 s / 3 min defaults); the fake OpenAI
 * upstream (packages/testkit/src/fake-openai/cli.ts, a process of its own) whose keys enforce their limit over rolling 10 s windows
 * (`window-10s`, as Azure documents its quantization) and count what they refuse; two `keypool serve`
 * processes (the CLI, from one config file naming the sentinels, redisDown fail-closed).
 *
 * Load: open loop at --rate requests/s (default 50), alternating between the gateways, each
 * request a chat completion with a gateway token. The keys together admit exactly --rate per second
 * (--keys keys, default 2, each rpm = 60 x rate / keys over 10 s windows), so the pool is at its
 * limit all along and any double admission shows at the upstream. After --before-s seconds the
 * current master is killed (SIGKILL); the run goes on --after-s seconds.
 *
 * Figures (per run, then the worst of the runs):
 *   - unavailableMs: from the first to the last answer refusing a request because Redis was
 *     unavailable (503 pool_unavailable), the time the gateways applied the Redis-down policy (a
 *     request waiting for a key when Redis went away is refused too: answer times, not send times);
 *   - promotedMs: from the kill to the sentinels naming the new master;
 *   - clientFailures: requests that got no 200 (refusals above included, by status in failuresByStatus);
 *   - overAdmitted: requests the fake upstream refused with 429 because a key was over its limit
 *     in a window: the pool admitted them while the key had no room (target: at most one window's
 *     quota of one key); split into before and after the kill, since the gateway's admission time
 *     and the upstream's arrival time differ by the network and event-loop delays, which
 *     limits.windowMarginMs covers only in part on a loaded machine (the steady state's share);
 *   - peakPer10s: the most requests any key admitted in a rolling 10 s window, against its quota.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { fakeOpenAIControl, type FakeOpenAIControl } from '@keypool/testkit/fake-openai';
import { startSentinelGroup, type SentinelGroup } from '@keypool/testkit/topologies';
import { list, logger, machine, printResult } from './lib/report.js';

const log = logger('failover');
const BIN = fileURLToPath(new URL('../../packages/cli/bin/keypool-dev.js', import.meta.url));
const FAKE_CLI = fileURLToPath(new URL('../../packages/testkit/src/fake-openai/cli.ts', import.meta.url));
const TOKEN = 'kpt_failoverBenchGatewayToken0123456789abcdefgh';
const MODEL = 'gpt-4o-mini';
const WINDOW_S = 10;

const { values: args } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    rate: { type: 'string', default: '50' },
    keys: { type: 'string', default: '2' },
    'before-s': { type: 'string', default: '12' },
    'after-s': { type: 'string', default: '20' },
    runs: { type: 'string', default: '1' },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  process.stdout.write('npm run bench:failover -- [--json] [--rate 50] [--keys 2] [--before-s 12] [--after-s 20] [--runs 1]\n');
  process.exit(0);
}
const RATE = Number(args.rate);
const KEYS = Number(args.keys);
const BEFORE_S = Number(args['before-s']);
const AFTER_S = Number(args['after-s']);
const RUNS = Number(args.runs);
for (const [k, v] of Object.entries({ rate: RATE, keys: KEYS, 'before-s': BEFORE_S, 'after-s': AFTER_S, runs: RUNS })) {
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${k} must be a positive number`);
}
const RPM = Math.round((60 * RATE) / KEYS);
const QUOTA = Math.floor((RPM * WINDOW_S) / 60);

interface Gateway {
  child: ChildProcess;
  url: string;
}

function startGateway(file: string, env: Record<string, string>, name: string, children: ChildProcess[]): Promise<Gateway> {
  const child = spawn(process.execPath, [BIN, 'serve', '--config', file], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  child.stderr!.on('data', (c: Buffer) => (out = (out + c).slice(-4000)));
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`${name} did not listen within 60 s: ${out}`)), 60_000);
    child.stdout!.on('data', (c: Buffer) => {
      if (process.env.KP_BENCH_GATEWAY_LOGS) appendFileSync(`${process.env.KP_BENCH_GATEWAY_LOGS}-${name.replace(' ', '')}.log`, c);
      buf += c;
      for (;;) {
        const i = buf.indexOf('\n');
        if (i < 0) break;
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          const l = JSON.parse(line) as { msg?: string; url?: string; level?: number };
          if (l.url && l.msg?.startsWith('keypool gateway listening')) {
            clearTimeout(timer);
            resolve({ child, url: l.url });
          }
        } catch {
          // not JSON
        }
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code}) before listening: ${out}`));
    });
  });
}

/** The fake upstream in a process of its own: a stall of the load generator is not a burst at the upstream. */
function startFake(keys: string[], children: ChildProcess[]): Promise<{ url: string; control: FakeOpenAIControl }> {
  const spec = keys.map((k, i) => `${k}:rpm=${RPM}:limiter=window-10s:name=k${i}`).join(',');
  const child = spawn(process.execPath, ['--import', 'tsx', FAKE_CLI, '--keys', spec, '--models', MODEL, '--latency', '5'], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let err = '';
  child.stderr!.on('data', (c: Buffer) => (err = (err + c).slice(-2000)));
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (c: Buffer) => {
      out += c;
      const i = out.indexOf('\n');
      if (i >= 0) resolve({ url: out.slice(0, i).trim(), control: fakeOpenAIControl(out.slice(0, i).trim()) });
    });
    child.once('exit', (code) => reject(new Error(`the fake upstream exited (${code}): ${err}`)));
  });
}

interface Sample {
  /** Scheduled send time. */
  at: number;
  /** When the answer (or the failure) came. */
  doneAt: number;
  status: number;
  code?: string;
}

async function send(url: string): Promise<Omit<Sample, 'at' | 'doneAt'>> {
  try {
    const r = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'hello' }], max_tokens: 8 }),
      signal: AbortSignal.timeout(30_000),
    });
    const body = (await r.json().catch(() => ({}))) as { error?: { code?: string } };
    return { status: r.status, ...(body.error?.code ? { code: body.error.code } : {}) };
  } catch (e) {
    return { status: 0, code: (e as Error).name };
  }
}

interface RunResult {
  unavailableMs: number;
  promotedMs: number;
  requests: number;
  clientFailures: number;
  failuresByStatus: Record<string, number>;
  refusedRedisDown: number;
  /** When the first and the last refusal were answered, from the kill. */
  refusedFromKillMs: [number, number] | null;
  overAdmitted: number;
  /** Upstream 429s before the kill (steady state, not the failover's). */
  overAdmittedBeforeKill: number;
  /** Upstream 429s from the kill to the end: the failover's, and the steady state's of that time. */
  overAdmittedAfterKill: number;
  peakPer10s: Record<string, number>;
}

async function oneRun(run: number): Promise<RunResult> {
  const dir = mkdtempSync(join(tmpdir(), 'keypool-bench-failover-'));
  let group: SentinelGroup | undefined;
  const gateways: Gateway[] = [];
  const children: ChildProcess[] = [];
  try {
    log(`run ${run}: starting a Sentinel group (1 master, 1 replica, 3 sentinels)`);
    group = await startSentinelGroup({ downAfterMs: 1000, failoverTimeoutMs: 3000 });
    const secrets = Array.from({ length: KEYS }, (_, i) => `sk-bench-failover-${run}-${i}-${'x'.repeat(16)}`);
    const fake = await startFake(secrets, children);
    const file = join(dir, 'keypool.yaml');
    writeFileSync(
      file,
      `pool: bench-failover-${run}-${process.pid}
server: { port: 0, deadlineMs: 5000 }
logLevel: info
redis:
  sentinel:
    nodes: [${group.sentinelNodes.map((s) => `"${s.host}:${s.port}"`).join(', ')}]
    masterName: ${group.masterName}
redisDown: { policy: fail-closed, timeoutMs: 500 }
tokens:
  - sha256: ${createHash('sha256').update(TOKEN).digest('hex')}
    name: bench
keys:
${secrets.map((_, i) => `  - { name: k${i}, secretEnv: KP_BENCH_KEY_${i}, baseURL: "${fake.url}", models: [${MODEL}], rpm: ${RPM}, window: ${WINDOW_S}, limitHeaders: window }`).join('\n')}
`,
    );
    const env = Object.fromEntries(secrets.map((s, i) => [`KP_BENCH_KEY_${i}`, s]));
    for (const k of ['REDIS_URL', 'REDIS_SENTINELS', 'REDIS_CLUSTER_SEEDS', 'REDIS_PASSWORD', 'KEYPOOL_PORT', 'KEYPOOL_CONFIG']) delete process.env[k];
    gateways.push(...(await Promise.all([startGateway(file, env, 'gateway 1', children), startGateway(file, env, 'gateway 2', children)])));
    log(`run ${run}: 2 gateways up; ${RATE} req/s for ${BEFORE_S} s, kill -9 the master, ${AFTER_S} s more`);

    const samples: Sample[] = [];
    const pending: Promise<void>[] = [];
    const t0 = Date.now();
    const end = t0 + (BEFORE_S + AFTER_S) * 1000;
    let killedAt = 0;
    let promotedAt = 0;
    let over429AtKill = 0;
    const count429 = async () =>
      Object.entries(await fake.control.counters())
        .filter(([name]) => /^k\d+$/.test(name))
        .reduce((n, [, c]) => n + c.rate429, 0);
    const killing = (async () => {
      await new Promise((r) => setTimeout(r, BEFORE_S * 1000));
      killedAt = Date.now();
      over429AtKill = await count429();
      const { newMaster } = await group!.killMaster({ timeoutMs: 60_000 });
      promotedAt = Date.now();
      log(`run ${run}: master killed; sentinels promoted ${newMaster!.host}:${newMaster!.port} after ${promotedAt - killedAt} ms`);
    })();
    for (let i = 0; ; i++) {
      const due = t0 + (i * 1000) / RATE;
      if (due >= end) break;
      const wait = due - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const g = gateways[i % gateways.length]!;
      pending.push(send(g.url).then((s) => void samples.push({ at: due, doneAt: Date.now(), ...s })));
    }
    await Promise.all(pending);
    await killing;

    const refused = samples.filter((s) => s.status === 503 && s.code === 'pool_unavailable').map((s) => s.doneAt);
    const failures = samples.filter((s) => s.status !== 200);
    const failuresByStatus: Record<string, number> = {};
    for (const f of failures) {
      const k = `${f.status}${f.code ? ` ${f.code}` : ''}`;
      failuresByStatus[k] = (failuresByStatus[k] ?? 0) + 1;
    }
    const counters = await fake.control.counters();
    const keyCounters = Object.entries(counters).filter(([name]) => /^k\d+$/.test(name));
    return {
      unavailableMs: refused.length ? Math.max(...refused) - Math.min(...refused) : 0,
      promotedMs: promotedAt - killedAt,
      requests: samples.length,
      clientFailures: failures.length,
      failuresByStatus,
      refusedRedisDown: refused.length,
      refusedFromKillMs: refused.length ? [Math.min(...refused) - killedAt, Math.max(...refused) - killedAt] : null,
      overAdmittedBeforeKill: over429AtKill,
      overAdmittedAfterKill: keyCounters.reduce((n, [, c]) => n + c.rate429, 0) - over429AtKill,
      overAdmitted: keyCounters.reduce((n, [, c]) => n + c.rate429, 0),
      peakPer10s: Object.fromEntries(keyCounters.map(([name, c]) => [name, c.peakRequestsPer10s])),
    };
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(null) : c.once('exit', r)))));
    await group?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

const runs: RunResult[] = [];
for (let r = 1; r <= RUNS; r++) runs.push(await oneRun(r));
const worst = {
  unavailableMs: Math.max(...runs.map((r) => r.unavailableMs)),
  clientFailures: Math.max(...runs.map((r) => r.clientFailures)),
  overAdmitted: Math.max(...runs.map((r) => r.overAdmitted)),
};
const result = {
  benchmark: 'failover',
  machine: machine(),
  settings: { rate: RATE, gateways: 2, keys: KEYS, rpmPerKey: RPM, windowS: WINDOW_S, quotaPerWindowPerKey: QUOTA, beforeS: BEFORE_S, afterS: AFTER_S, downAfterMs: 1000, failoverTimeoutMs: 3000, redisDown: 'fail-closed' },
  ...worst,
  targets: { unavailableMs: 5000, overAdmitted: QUOTA, met: worst.unavailableMs <= 5000 && worst.overAdmitted <= QUOTA },
  runs,
};
printResult(result, args.json, (r) =>
  list([
    ['runs', String(r.runs.length)],
    ['unavailableMs (worst)', `${r.unavailableMs} (target <= 5000)`],
    ['clientFailures (worst)', String(r.clientFailures)],
    ['overAdmitted (worst)', `${r.overAdmitted} (target <= ${QUOTA}, one window of one key)`],
    ...r.runs.map((x, i) => [
      `run ${i + 1}`,
      `promoted after ${x.promotedMs} ms; unavailable ${x.unavailableMs} ms (${x.refusedRedisDown} refused); ${x.clientFailures}/${x.requests} failed ${JSON.stringify(x.failuresByStatus)}; over-admitted ${x.overAdmitted}; peak per 10 s ${JSON.stringify(x.peakPer10s)} (quota ${QUOTA})`,
    ]),
    ['targets met', String(r.targets.met)],
  ]),
);
