/**
 * The client side of a request's two script calls, without HTTP: this process's CPU per
 * acquire (a gateway token admitted in it) + release (the token settled in it), the way the gateway
 * makes them, against a private redis-server.
 *
 *   npm run -s bench:script-calls                 one JSON line
 *   npm run -s bench:script-calls -- 8000 8       cycles, concurrent loops (default 4000, 8)
 *
 * CPU from process.cpuUsage() over the measured cycles (after 800 cycles of warm-up), so other
 * work on the machine moves it less than wall time; run it for two trees in turn to compare.
 */
import { pino } from 'pino';
import { KeyPool } from '@keypool/core';
import { spawnRedisServer } from '@keypool/testkit';

const cycles = Number(process.argv[2] ?? 4000);
const loops = Number(process.argv[3] ?? 8);
const redis = await spawnRedisServer();
try {
  const pool = await KeyPool.connect({
    redis: redis.url,
    logger: pino({ level: 'silent' }),
    config: { pool: 'bench-calls', keys: [1, 2, 3, 4].map((i) => ({ secret: `sk-bench-calls-${i}-xxxxxxxxxxxxxxxx`, models: ['gpt-4o-mini'] })) },
  });
  const { token } = await pool.tokens.create({ name: 'bench' });
  const run = async (n: number) => {
    for (let i = 0; i < n; i++) {
      const l = await pool.acquire({ model: 'gpt-4o-mini', estimatedTokens: 50, admit: { token, name: 'gpt-4o-mini', estimatedCostUsd: 0.00001 } });
      if (!l.ok) throw new Error(`no lease: ${JSON.stringify(l)}`);
      await l.release({ status: 200, latencyMs: 20, usage: { promptTokens: 20, completionTokens: 16 } }, l.admission ? { settle: { admission: l.admission } } : undefined);
    }
  };
  await Promise.all(Array.from({ length: loops }, () => run(Math.ceil(800 / loops))));
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(Array.from({ length: loops }, () => run(Math.ceil(cycles / loops))));
  const cpu = process.cpuUsage(c0);
  const done = Math.ceil(cycles / loops) * loops;
  console.log(JSON.stringify({ cycles: done, loops, cpuUsPerCycle: +((cpu.user + cpu.system) / done).toFixed(1), userUs: +(cpu.user / done).toFixed(1), systemUs: +(cpu.system / done).toFixed(1), cyclesPerSecond: Math.round((done / (performance.now() - t0)) * 1000) }));
  await pool.close();
} finally {
  await redis.stop();
}
