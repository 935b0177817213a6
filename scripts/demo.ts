/**
 * `npm run demo`: the key pool at work, in one command.
 *
 * Starts Redis (REDIS_URL if set, else Docker if it answers, else a private redis-server) and the
 * fake OpenAI upstream (real HTTP on 127.0.0.1), puts four keys in a pool, and runs three OS
 * processes that call the upstream through PooledOpenAI (the official openai SDK, one client per
 * key) for a few seconds. The upstream has a slow key, a key whose provider has an outage, and a
 * key the provider limits harder than its config says (so it answers 429). At the end: what the
 * upstream saw per key, and the fleet-wide status table from Redis.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { startRedis } from '@keypool/testkit';
import { startFakeOpenAI } from '@keypool/testkit/fake-openai';
import { KeyPool, type KeySpecInput, type PoolStatus } from '@keypool/core';
import { PooledOpenAI } from '@keypool/client';

const SECONDS = Number(process.env.DEMO_SECONDS ?? 10);
const CALLERS = 3;
const role = process.argv[2];

// Made-up secrets, known only to the fake upstream. Real ones come from the environment or a secret store.
const SECRETS = {
  'openai-tier2': 'sk-demo-0000000000000000000000000000a1b2',
  'openai-tier1': 'sk-demo-1111111111111111111111111111c3d4',
  'openai-slow': 'sk-demo-2222222222222222222222222222e5f6',
  'openai-flaky': 'sk-demo-3333333333333333333333333333a7b8',
} as const;

function keys(baseURL: string): KeySpecInput[] {
  const k = (name: keyof typeof SECRETS, extra: Partial<KeySpecInput>): KeySpecInput => ({ name, secret: SECRETS[name], baseURL, models: ['gpt-4o-mini'], ...extra });
  return [
    k('openai-tier2', { rpm: 3000, tpm: 1_000_000, maxConcurrent: 32 }),
    k('openai-tier1', { rpm: 1500, tpm: 500_000, maxConcurrent: 8, budget: { usd: 0.002, period: 'day' } }),
    k('openai-slow', { rpm: 3000, tpm: 1_000_000 }),
    k('openai-flaky', { rpm: 3000, tpm: 1_000_000 }),
  ];
}

async function worker(redisUrl: string, pool: string, baseURL: string): Promise<void> {
  const kp = await KeyPool.connect({ redis: redisUrl, config: { pool, keys: keys(baseURL) }, logger: pino({ level: 'warn' }, pino.destination(2)) });
  const openai = new PooledOpenAI({ pool: kp, deadlineMs: 5000 });
  const start = Date.now();
  const counts: Record<string, number> = {};
  const bump = (k: string) => (counts[k] = (counts[k] ?? 0) + 1);
  async function caller(i: number) {
    for (let n = 0; Date.now() - start < SECONDS * 1000; n++) {
      try {
        await openai.chat.completions.create({
          model: 'gpt-4o-mini',
          messages: [{ role: 'user', content: `Caller ${i} asks question ${n}: what is a key pool for?` }],
          max_tokens: 120,
        });
        bump('answered');
      } catch (e) {
        bump(`failed: ${(e as { code?: string }).code ?? (e as Error).name}`);
      }
    }
  }
  await Promise.all(Array.from({ length: CALLERS }, (_, i) => caller(i)));
  process.stdout.write(JSON.stringify(counts) + '\n');
  await kp.close();
}

function table(st: PoolStatus): string {
  const head = ['key', 'hint', 'state', 'health', 'in flight', 'req left', 'tok left', 'spend $', 'budget $', 'p50 ms', 'p99 ms', 'errors', 'breaker opens'];
  const rows = st.keys.map((k) => [
    k.name ?? k.id,
    k.hint,
    k.state,
    k.degraded ? `degraded ${k.healthScore?.toFixed(2)}` : 'ok',
    String(k.inFlight),
    k.left?.requests === null ? '-' : `${k.left?.requests}/${k.limits.rpmBurst}`,
    k.left?.tokens === null ? '-' : `${k.left?.tokens}/${k.limits.tpmBurst}`,
    (k.spendUsd ?? 0).toFixed(4),
    k.limits.budgetUsd === null ? '-' : `${k.limits.budgetUsd}/${k.limits.budgetPeriod}`,
    String(k.latency?.p50Ms ?? '-'),
    String(k.latency?.p99Ms ?? '-'),
    `${((k.errorRate ?? 0) * 100).toFixed(1)}%`,
    String(k.breaker?.opens ?? 0),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ');
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

async function main(): Promise<void> {
  if (role === '--worker') return worker(process.argv[3]!, process.argv[4]!, process.argv[5]!);
  const redis = await startRedis();
  const fake = await startFakeOpenAI({
    models: ['gpt-4o-mini'],
    latency: { p50Ms: 120, p99Ms: 250 },
    keys: [
      // the provider allows tier2 far less than its config says: it will answer 429
      { key: SECRETS['openai-tier2'], name: 'openai-tier2', rpm: 100 },
      { key: SECRETS['openai-tier1'], name: 'openai-tier1' },
      { key: SECRETS['openai-slow'], name: 'openai-slow', latency: { p50Ms: 700, p99Ms: 1500 } },
      { key: SECRETS['openai-flaky'], name: 'openai-flaky' },
    ],
  });
  const poolName = `demo-${process.pid}`;
  console.log(`Redis: ${redis.kind === 'env' ? 'REDIS_URL' : redis.kind === 'container' ? 'a Docker container' : 'a private redis-server'}; fake OpenAI upstream at ${fake.url}`);
  const pool = await KeyPool.connect({ redis: redis.url, config: { pool: poolName, keys: keys(fake.url) }, logger: pino({ level: 'warn' }) });
  console.log(`Pool "${poolName}": 4 keys; 3 processes x ${CALLERS} callers through PooledOpenAI for ${SECONDS} s\n`);
  const self = fileURLToPath(import.meta.url);
  const procs = Array.from({ length: 3 }, () => {
    const child = spawn(process.execPath, ['--import', 'tsx', self, '--worker', redis.url, poolName, fake.url], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    return new Promise<Record<string, number>>((resolve, reject) =>
      child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as Record<string, number>) : reject(new Error(`worker exited ${code}`)))),
    );
  });
  const t0 = Date.now();
  // the flaky key's provider has an outage from t+3s: its next 5 requests fail with 503
  const outage = setTimeout(() => fake.setFault({ kind: 'error', status: 503, key: 'openai-flaky', count: 5 }), 3000);
  const timer = setInterval(async () => {
    const st = await pool.status();
    const states = st.keys.map((k) => `${k.name}=${k.state}${k.degraded ? '(degraded)' : ''}`).join(' ');
    console.log(`  t+${Math.round((Date.now() - t0) / 1000)}s  in flight ${st.leasesInFlight}  ${states}`);
  }, 1000);
  const results = await Promise.all(procs);
  clearInterval(timer);
  clearTimeout(outage);
  const total: Record<string, number> = {};
  for (const r of results) for (const [k, v] of Object.entries(r)) total[k] = (total[k] ?? 0) + v;
  console.log('\nCalls made by the fleet: ' + Object.entries(total).map(([k, v]) => `${k} ${v}`).join(', '));
  const c = fake.counters();
  const served = Object.values(c).reduce((a, k) => a + k.served, 0);
  console.log('What the upstream saw, per key:');
  for (const name of Object.keys(SECRETS)) {
    const k = c[name]!;
    const errors = Object.entries(k.status).filter(([s]) => Number(s) >= 500).reduce((a, [, v]) => a + v, 0);
    console.log(`  ${name.padEnd(14)} served ${String(k.served).padStart(4)} (${((100 * k.served) / served).toFixed(0).padStart(2)}%)  429s ${k.rate429}  5xx ${errors}`);
  }
  console.log('\nFleet-wide status from Redis:\n');
  console.log(table(await pool.status()));
  console.log('\nWhat to look for: openai-slow (p99 > 800 ms) is degraded and gets less traffic, not none;');
  console.log('openai-flaky had an outage at t+3s: its breaker opened, a single probe after the cooldown closed it;');
  console.log('openai-tier2 answered 429 when its provider limit ran out and cools until the provider says it is');
  console.log('free; openai-tier1 stops at its $0.002 daily budget. Failed calls: none expected, each 429 or 503');
  console.log('was retried on another key. Keys appear by hint only.');
  await pool.close();
  await fake.stop();
  await redis.stop();
}

await main();
