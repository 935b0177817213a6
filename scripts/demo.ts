/**
 * `npm run demo`: the keypool gateway at work, in one command.
 *
 * 1. The fake OpenAI upstream (real HTTP on 127.0.0.1) with four made-up keys: one the provider
 *    limits harder than its config says (429s), one with a daily budget, one slow, one whose
 *    provider has an outage midway.
 * 2. Two gateway processes' worth of `serve()` from examples/demo.keypool.yaml, sharing one pool:
 *    Redis is the embedded default (a private redis-server child), or REDIS_URL, or a Docker
 *    container when redis-server is not installed.
 * 3. A gateway token made through the admin API, then a burst of traffic from the official
 *    `openai` SDK (baseURL = the gateway), plain and streaming, for a few seconds.
 * 4. What the callers got, what the upstream saw per key, and the fleet-wide status table.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { startRedis } from '@keypool/testkit';
import { startFakeOpenAI } from '@keypool/testkit/fake-openai';
import type { KeyStatus, PoolStatus } from '@keypool/core';
import { loadGatewayConfig, rootLogger } from '@keypool/config';
import { serve, type Serving } from '@keypool/server';

const SECONDS = Number(process.env.DEMO_SECONDS ?? 8);
const CALLERS = 16;
const CONFIG = fileURLToPath(new URL('../examples/demo.keypool.yaml', import.meta.url));

// Made-up secrets, known only to the fake upstream. Real ones come from the environment or a secret store.
const SECRETS = {
  DEMO_KEY_TIER2: 'sk-demo-0000000000000000000000000000a1b2',
  DEMO_KEY_TIER1: 'sk-demo-1111111111111111111111111111c3d4',
  DEMO_KEY_SLOW: 'sk-demo-2222222222222222222222222222e5f6',
  DEMO_KEY_FLAKY: 'sk-demo-3333333333333333333333333333a7b8',
};

function hasRedisServer(): boolean {
  try {
    execFileSync('redis-server', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const pct = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))]! : 0;
};

function table(keys: KeyStatus[]): string {
  const head = ['key', 'hint', 'state', 'in flight', 'req left', 'tok left', 'spend $', 'budget $', 'p50 ms', 'p99 ms', 'errors', 'breaker opens'];
  const rows = keys.map((k) => [
    k.name ?? k.id,
    k.hint,
    k.state + (k.degraded ? ' (degraded)' : ''),
    String(k.inFlight),
    k.left?.requests == null ? '-' : `${k.left.requests}/${k.limits.rpmBurst}`,
    k.left?.tokens == null ? '-' : `${k.left.tokens}/${k.limits.tpmBurst}`,
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
  const fake = await startFakeOpenAI({
    models: ['gpt-4o-mini', 'gpt-4o'],
    latency: { p50Ms: 120, p99Ms: 250 },
    chunkDelayMs: 10,
    keys: [
      { key: SECRETS.DEMO_KEY_TIER2, name: 'openai-tier2', rpm: 100 },
      { key: SECRETS.DEMO_KEY_TIER1, name: 'openai-tier1' },
      { key: SECRETS.DEMO_KEY_SLOW, name: 'openai-slow', latency: { p50Ms: 700, p99Ms: 1500 } },
      { key: SECRETS.DEMO_KEY_FLAKY, name: 'openai-flaky' },
    ],
  });
  // Redis: REDIS_URL, else the embedded default (serve starts redis-server), else Docker
  let docker: Awaited<ReturnType<typeof startRedis>> | undefined;
  if (!process.env.REDIS_URL && !hasRedisServer()) docker = await startRedis();
  const adminToken = randomBytes(24).toString('base64url');
  const env = {
    ...process.env,
    ...SECRETS,
    ...(docker ? { REDIS_URL: docker.url } : {}),
    DEMO_UPSTREAM: fake.url,
    KEYPOOL_ADMIN_TOKEN: adminToken,
    KEYPOOL_POOL: `demo-${process.pid}`,
  };
  const config = loadGatewayConfig({ file: CONFIG, env });
  const logger = rootLogger('warn');
  const first = await serve(config, { logger });
  // a second gateway on the same Redis and pool: together they are one fleet
  const second = await serve({ ...config, redis: { url: first.redisUrl } }, { logger });
  const gateways: Serving[] = [first, second];
  const redisKind = process.env.REDIS_URL ? 'REDIS_URL' : docker ? 'a Docker container' : 'the embedded redis-server (no REDIS_URL given)';
  console.log(`Redis: ${redisKind}. Fake OpenAI upstream: ${fake.url}`);
  console.log(`Gateways (one pool "${config.pool.pool}", ${config.pool.keys.length} keys, from ${CONFIG.replace(process.cwd() + '/', '')}):`);
  for (const g of gateways) console.log(`  ${g.url}/v1   dashboard ${g.url}/dashboard`);

  // a gateway token for the callers, through the admin API as an operator would (or `keypool tokens create`)
  const made = await fetch(`${first.url}/admin/tokens`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json', 'x-keypool-actor': 'demo' },
    body: JSON.stringify({ name: 'demo-callers', rpm: 6000 }),
  });
  const { token, id } = (await made.json()) as { token: string; id: string };
  console.log(`Gateway token ${id} made with the admin API (only its hash is stored).\n`);
  console.log(`${CALLERS} callers with the official openai SDK (baseURL = a gateway, apiKey = the gateway token) for ${SECONDS} s;`);
  console.log('one call in four streams, one in eight asks for the route "smart".\n');

  const results: Record<string, number> = {};
  const latencies: number[] = [];
  const bump = (k: string) => (results[k] = (results[k] ?? 0) + 1);
  const t0 = Date.now();
  async function caller(i: number) {
    const openai = new OpenAI({ apiKey: token, baseURL: `${gateways[i % 2]!.url}/v1`, maxRetries: 0 });
    for (let n = 0; Date.now() - t0 < SECONDS * 1000; n++) {
      const s = Date.now();
      const model = n % 8 === 7 ? 'smart' : 'gpt-4o-mini';
      const messages = [{ role: 'user' as const, content: `Caller ${i} asks question ${n}: what is a key pool for?` }];
      try {
        if (n % 4 === 3) {
          let words = 0;
          for await (const c of await openai.chat.completions.create({ model, messages, max_tokens: 40, stream: true })) if (c.choices[0]?.delta?.content) words++;
          bump(words > 0 ? 'streamed' : 'empty stream');
        } else {
          await openai.chat.completions.create({ model, messages, max_tokens: 60 });
          bump('answered');
        }
        latencies.push(Date.now() - s);
      } catch (e) {
        bump(`failed ${(e as { status?: number }).status ?? ''} ${(e as { code?: string }).code ?? (e as Error).message}`.trim());
      }
    }
  }
  // the flaky key's provider has an outage from t+3s: its next 20 requests fail with 503
  const outage = setTimeout(() => fake.setFault({ kind: 'error', status: 503, key: 'openai-flaky', count: 20 }), 3000);
  const live = setInterval(async () => {
    const st: PoolStatus = await first.pool.status();
    const states = st.keys.map((k) => `${k.name}=${k.state}${k.degraded ? '(degraded)' : ''}`).join(' ');
    console.log(`  t+${Math.round((Date.now() - t0) / 1000)}s  in flight ${String(st.leasesInFlight).padStart(2)}  ${states}`);
  }, 1000);
  await Promise.all(Array.from({ length: CALLERS }, (_, i) => caller(i)));
  clearInterval(live);
  clearTimeout(outage);

  console.log(`\nWhat the callers got: ${Object.entries(results).map(([k, v]) => `${k} ${v}`).join(', ')}; latency p50 ${pct(latencies, 0.5)} ms, p99 ${pct(latencies, 0.99)} ms`);
  const c = fake.counters();
  const served = Object.values(c).reduce((a, k) => a + k.served, 0);
  console.log('What the upstream saw, per key:');
  for (const name of ['openai-tier2', 'openai-tier1', 'openai-slow', 'openai-flaky']) {
    const k = c[name]!;
    const errors = Object.entries(k.status).filter(([s]) => Number(s) >= 500).reduce((a, [, v]) => a + v, 0);
    console.log(`  ${name.padEnd(14)} served ${String(k.served).padStart(4)} (${((100 * k.served) / Math.max(1, served)).toFixed(0).padStart(2)}%)  429s ${k.rate429}  5xx ${errors}`);
  }
  // the fleet shares one status snapshot per status.snapshotMs (1 s): wait for one taken after the last call
  await new Promise((r) => setTimeout(r, 1100));
  const st = (await (await fetch(`${second.url}/status`)).json()) as PoolStatus;
  console.log(`\nFleet-wide status (GET ${second.url}/status, from Redis, ${st.snapshot?.ageMs ?? 0} ms old):\n`);
  console.log(table(st.keys));
  const spend = Object.entries(st.spend?.byModel ?? {}).map(([m, s]) => `${m} $${s.usd.toFixed(4)} (${s.requests} requests)`);
  console.log(`\nSpend by model: ${spend.join(', ')}`);
  console.log('\nWhat to look for: openai-slow (p99 > 800 ms) is degraded and gets less traffic, not none;');
  console.log('openai-flaky had an outage at t+3s: its breaker opened after 5 failures in a row and it got no traffic');
  console.log('but one probe per cooldown (5 s, doubling while the probe fails);');
  console.log("openai-tier2's provider allows 100 requests a minute where the config says 3,000: the pool read");
  console.log('that from its answers\' x-ratelimit headers (req left n/100) and kept the key under it, so it met');
  console.log('few 429s or none; openai-tier1 stops at its $0.002 daily budget. Failed calls: none expected, each');
  console.log('429 or 503 was retried on another key. Keys appear by hint only; the callers only ever held the');
  console.log('gateway token.');
  await second.close();
  await first.close();
  await fake.stop();
  await docker?.stop();
}

await main();
