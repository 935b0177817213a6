/**
 * `npm run demo`: the key pool at work, in one command.
 *
 * Starts Redis (REDIS_URL if set, else Docker if it answers, else a private redis-server), puts
 * four keys with different limits in a pool, and runs three OS processes that each push traffic
 * through it for a few seconds. The upstream provider is simulated inside each process (latency,
 * a key that turns slow, a key that answers 429, a key whose provider has an outage), because the
 * real fake OpenAI server comes with the pooled client. At the end: the fleet-wide status table.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { startRedis } from '@keypool/testkit';
import { KeyPool, type KeySpecInput, type Lease, type PoolStatus } from '@keypool/core';

const SECONDS = Number(process.env.DEMO_SECONDS ?? 8);
const CALLERS = 3;
const POOL = process.argv[2] === '--worker' ? process.argv[4]! : `demo-${process.pid}`;

// Fake secrets: the demo never calls a provider. Real ones come from the environment or a secret store.
const KEYS: KeySpecInput[] = [
  { name: 'openai-tier2', secret: 'sk-demo-0000000000000000000000000000a1b2', models: ['gpt-4o-mini'], rpm: 3000, tpm: 1_000_000, maxConcurrent: 32 },
  { name: 'openai-tier1', secret: 'sk-demo-1111111111111111111111111111c3d4', models: ['gpt-4o-mini'], rpm: 1500, tpm: 500_000, maxConcurrent: 8, budget: { usd: 0.01, period: 'day' } },
  { name: 'openai-slow', secret: 'sk-demo-2222222222222222222222222222e5f6', models: ['gpt-4o-mini'], rpm: 3000, tpm: 1_000_000 },
  { name: 'openai-flaky', secret: 'sk-demo-3333333333333333333333333333a7b8', models: ['gpt-4o-mini'], rpm: 3000, tpm: 1_000_000 },
];

/** What the simulated provider does for a key: latency, and sometimes a 429 or a 5xx. */
function simulate(name: string | undefined, elapsedMs: number): { latencyMs: number; status: number; retryAfterS?: number } {
  const base = 60 + Math.random() * 120;
  if (name === 'openai-slow') return { latencyMs: base + (Math.random() < 0.1 ? 1200 : 600), status: 200 };
  if (name === 'openai-flaky' && elapsedMs > 2000 && elapsedMs < 4500) return { latencyMs: 30, status: 503 };
  if (name === 'openai-tier2' && Math.random() < 0.003) return { latencyMs: 20, status: 429, retryAfterS: 1 };
  return { latencyMs: base, status: 200 };
}

async function worker(url: string): Promise<void> {
  const pool = await KeyPool.connect({ redis: url, config: { pool: POOL, keys: KEYS }, logger: pino({ level: 'warn' }, pino.destination(2)) });
  const start = Date.now();
  const counts: Record<string, number> = {};
  const names = new Map<string, string>();
  const bump = (k: string) => (counts[k] = (counts[k] ?? 0) + 1);
  async function caller() {
    while (Date.now() - start < SECONDS * 1000) {
      const r = await pool.acquire({ model: 'gpt-4o-mini', estimatedTokens: 400, estimatedOutputTokens: 200, maxWaitMs: 2000 });
      if (!r.ok) {
        bump(`refused:${r.reason}`);
        continue;
      }
      const lease = r as Lease;
      // a real caller would now call lease.baseURL with lease.secret
      const sim = simulate(lease.name, Date.now() - start);
      await new Promise((res) => setTimeout(res, sim.latencyMs));
      await lease.release({
        status: sim.status,
        latencyMs: sim.latencyMs,
        ...(sim.status === 200 ? { usage: { promptTokens: 200, completionTokens: 50 + Math.floor(Math.random() * 150) } } : {}),
        ...(sim.retryAfterS ? { headers: { 'retry-after': String(sim.retryAfterS) } } : {}),
      });
      bump(`${lease.name ?? lease.hint}:${sim.status}`);
      names.set(lease.keyId, lease.name ?? lease.hint);
    }
  }
  await Promise.all(Array.from({ length: CALLERS }, caller));
  process.stdout.write(JSON.stringify(counts) + '\n');
  await pool.close();
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
  if (process.argv[2] === '--worker') return worker(process.argv[3]!);
  const redis = await startRedis();
  console.log(`Redis: ${redis.kind === 'env' ? 'REDIS_URL' : redis.kind === 'container' ? 'a Docker container' : 'a private redis-server'}`);
  const pool = await KeyPool.connect({ redis: redis.url, config: { pool: POOL, keys: KEYS }, logger: pino({ level: 'warn' }) });
  console.log(`Pool "${POOL}": ${KEYS.length} keys; 3 processes x ${CALLERS} callers for ${SECONDS} s (upstream simulated)\n`);
  const self = fileURLToPath(import.meta.url);
  const procs = Array.from({ length: 3 }, () => {
    const child = spawn(process.execPath, ['--import', 'tsx', self, '--worker', redis.url, POOL], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    return new Promise<Record<string, number>>((resolve, reject) =>
      child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as Record<string, number>) : reject(new Error(`worker exited ${code}`)))),
    );
  });
  const timer = setInterval(async () => {
    const st = await pool.status();
    const states = st.keys.map((k) => `${k.name}=${k.state}${k.degraded ? '(degraded)' : ''}`).join(' ');
    console.log(`  t+${Math.round((Date.now() - t0) / 1000)}s  leases in flight ${st.leasesInFlight}  ${states}`);
  }, 1000);
  const t0 = Date.now();
  const results = await Promise.all(procs);
  clearInterval(timer);
  const total: Record<string, number> = {};
  for (const r of results) for (const [k, v] of Object.entries(r)) total[k] = (total[k] ?? 0) + v;
  console.log('\nOutcomes across the fleet (key:status, refused:reason):');
  for (const [k, v] of Object.entries(total).sort()) console.log(`  ${k.padEnd(28)} ${v}`);
  console.log('\nFleet-wide status from Redis:\n');
  const st = await pool.status();
  console.log(table(st));
  const leases = (name: string) => Object.entries(total).filter(([k]) => k.startsWith(`${name}:`)).reduce((a, [, v]) => a + v, 0);
  const all = KEYS.reduce((a, k) => a + leases(k.name!), 0);
  console.log('\nShare of leases: ' + KEYS.map((k) => `${k.name} ${((100 * leases(k.name!)) / all).toFixed(0)}%`).join(', '));
  console.log('What to look for: openai-slow (p99 > 800 ms) and openai-flaky (a 503 outage from t+2s to t+4.5s, which');
  console.log('opened its breaker until a probe succeeded) are degraded and get less traffic, not none; a 429 on');
  console.log('openai-tier2 cools it for the second its Retry-After asks; openai-tier1 is half the size of the others');
  console.log('and stops at its $0.01 daily budget. Keys appear by hint only.');
  await pool.close();
  await redis.stop();
}

await main();
