// A/B of the lease scripts' server time per call, EVALSHA against FCALL, in one process on one Redis
// (alternating rounds; INFO commandstats). Usage: tsx scripts/bench/script-modes.ts URL [leases per round] [rounds]
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { KeyPool } from '@keypool/core';

const url = process.argv[2] ?? 'redis://127.0.0.1:6390';
const N = Number(process.argv[3] ?? 2000);
const ROUNDS = Number(process.argv[4] ?? 5);
const admin = new Redis(url);
const logger = pino({ level: 'error' });
const keys = (tag: string) => Array.from({ length: 4 }, (_, i) => ({ secret: `sk-bench-${tag}-${i}-0123456789ab`, name: `k${i}`, models: ['gpt-4o-mini'], rpm: 10_000_000, rpmBurst: 10_000_000, tpm: 0, maxConcurrent: 0 }));
const pools: Record<string, KeyPool> = {};
for (const mode of ['evalsha', 'fcall']) {
  process.env.KEYPOOL_SCRIPT_MODE = mode === 'evalsha' ? 'evalsha' : '';
  pools[mode] = await KeyPool.connect({ redis: url, config: { pool: `micro-${mode}-${Date.now()}`, keys: keys(mode) }, logger });
}
const stats = async () => {
  const out: Record<string, { calls: number; usec: number }> = {};
  for (const m of (await admin.info('commandstats')).matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) out[m[1]!] = { calls: Number(m[2]), usec: Number(m[3]) };
  return out;
};
const res: Record<string, number[]> = { evalsha: [], fcall: [] };
const par = Number(process.env.PAR ?? 1);
for (let r = 0; r < ROUNDS; r++) {
  for (const mode of r % 2 ? ['fcall', 'evalsha'] : ['evalsha', 'fcall']) {
    const p = pools[mode]!;
    const s0 = await stats();
    const t0 = performance.now();
    await Promise.all(Array.from({ length: par }, async () => {
      for (let i = 0; i < N / par; i++) {
        const l = await p.acquire({ model: 'gpt-4o-mini', estimatedTokens: 1000, estimatedOutputTokens: 300 });
        if (!l.ok) throw new Error('refused ' + JSON.stringify(l));
        await l.release({ status: 200, latencyMs: 180, usage: { promptTokens: 640, completionTokens: 210 } });
      }
    }));
    const ms = performance.now() - t0;
    const s1 = await stats();
    const cmd = mode === 'fcall' ? 'fcall' : 'evalsha';
    const calls = s1[cmd]!.calls - (s0[cmd]?.calls ?? 0);
    const usec = s1[cmd]!.usec - (s0[cmd]?.usec ?? 0);
    res[mode]!.push(usec / calls);
    console.log(mode, 'calls', calls, 'usec/call', (usec / calls).toFixed(2), 'leases/s', (N / ms * 1000).toFixed(0));
  }
}
const med = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
console.log('median usec/call', { evalsha: med(res.evalsha!).toFixed(2), fcall: med(res.fcall!).toFixed(2) }, 'min', { evalsha: Math.min(...res.evalsha!).toFixed(2), fcall: Math.min(...res.fcall!).toFixed(2) });
for (const p of Object.values(pools)) await p.close();
admin.disconnect();
