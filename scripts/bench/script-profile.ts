// Where a lease script's server time goes: variants of acquire/release that return at successive
// top-level statements (`do return 0 end` inserted), FCALLed with the arguments a real pool sends,
// timed by SLOWLOG (threshold 0) on a private redis-server. Usage: tsx scripts/bench/script-profile.ts URL [calls] (a Redis of its own: it sets slowlog-log-slower-than)
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { KeyPool } from '@keypool/core';
import { keypoolLibrary } from '../../packages/core/src/scripts.js';

const url = process.argv[2] ?? 'redis://127.0.0.1:6390';
const N = Number(process.argv[3] ?? 400);
const admin = new Redis(url);
const lib = keypoolLibrary();
const keys = Array.from({ length: 4 }, (_, i) => ({ secret: `sk-bench-prof-${i}-0123456789ab`, name: `k${i}`, models: ['gpt-4o-mini'], rpm: 10_000_000, rpmBurst: 10_000_000, tpm: 0, maxConcurrent: 0 }));
process.env.KEYPOOL_SCRIPT_MODE = '';
const pool = await KeyPool.connect({ redis: url, config: { pool: `prof-${Date.now()}`, keys }, logger: pino({ level: 'error' }) });
// capture the arguments of one acquire and one release
const client = (pool as unknown as { link: { client: Redis } }).link?.client;
const captured: Record<string, (string | number)[]> = {};
const orig = client.fcall.bind(client) as (...a: (string | number)[]) => Promise<unknown>;
(client as unknown as { fcall: typeof orig }).fcall = (...a) => {
  const name = String(a[0]).split('_')[0]!;
  captured[name] = a.slice(1);
  return orig(...a);
};
const ACQ = { model: 'gpt-4o-mini', estimatedTokens: 1000, estimatedOutputTokens: 300 };
const OUT = { status: 200, latencyMs: 180, usage: { promptTokens: 640, completionTokens: 210 } };
for (let i = 0; i < 50; i++) {
  const l = await pool.acquire(ACQ);
  if (!l.ok) throw new Error('refused');
  await l.release(OUT);
}
const code = lib.code;
const bodyOf = (name: string) => {
  const fn = lib.functions[name]!;
  const start = code.indexOf(`redis.register_function('${fn}', function(KEYS, ARGV)\n`);
  const end = code.indexOf('\nend)', start);
  return code.slice(code.indexOf('\n', start) + 1, end).split('\n');
};
const prelude = code.slice(code.indexOf('\n') + 1, code.indexOf("redis.register_function("));
const cuts = (body: string[]) => body.map((l, i) => (/^(local|if|for|while|[a-z][A-Za-z0-9_.]*\s*[(=,])/.test(l) ? i : -1)).filter((i) => i >= 0);

async function profile(name: 'acquire' | 'release') {
  const body = bodyOf(name);
  const points = [...cuts(body), body.length];
  const libName = `prof_${name}_${Date.now()}`;
  const parts = [`#!lua name=${libName}`, prelude];
  for (const p of points) parts.push(`redis.register_function('p${name}_${p}', function(KEYS, ARGV)\n${body.slice(0, p).join('\n')}\n${p < body.length ? 'do return 0 end' : ''}\n${body.slice(p).join('\n')}\nend)`);
  await admin.call('FUNCTION', 'LOAD', parts.join('\n'));
  await admin.config('SET', 'slowlog-log-slower-than', '0');
  await admin.config('SET', 'slowlog-max-len', '100000');
  const rows: string[] = [];
  let prev = 0;
  for (const p of points) {
    await admin.slowlog('RESET');
    for (let i = 0; i < N; i++) {
      if (name === 'acquire') {
        await client.call('FCALL', `pacquire_${p}`, ...captured.acquire!);
        if (p === body.length) {
          // a full acquire took a lease: give it back so the pool stays the same
          const l = await pool.acquire(ACQ);
          if (l.ok) await l.release(OUT);
        }
      } else {
        const l = await pool.acquire(ACQ);
        if (!l.ok) throw new Error('refused');
        const args = [...captured.release!];
        const nk = Number(args[0]);
        args[1 + nk] = l.id; // ARGV[1] lease
        await client.call('FCALL', `prelease_${p}`, ...args);
        if (p < body.length) await l.release(OUT);
      }
    }
    const log = (await admin.slowlog('GET', 100000)) as [number, number, number, string[]][];
    const us = log.filter((e) => String(e[3][1]) === `p${name}_${p}`).map((e) => e[2]).sort((a, b) => a - b);
    const med = us[Math.floor(us.length / 2)] ?? NaN;
    rows.push(`${name} before line ${String(p).padStart(3)}: ${String(med).padStart(4)} us (+${med - prev})  ${(body[p] ?? '<end>').slice(0, 90)}`);
    prev = med;
  }
  await admin.config('SET', 'slowlog-log-slower-than', '10000');
  await admin.call('FUNCTION', 'DELETE', libName);
  console.log(rows.join('\n'));
}
await profile('acquire');
await profile('release');
await pool.close();
admin.disconnect();
