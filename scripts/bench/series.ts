/**
 * What the traffic counters (packages/core/lua/includes/series.lua) add to acquire and release,
 * measured inside Redis, so that the machine's other load does not drown a difference of a few
 * microseconds the way it does in bench:pool's leases per second.
 *
 *   npm run bench:series                 readable lines on stdout
 *   npm run -s bench:series -- --json    exactly one JSON object on stdout
 *
 * One EVAL per variant runs the include's function `--calls` times in a loop (each iteration reads
 * TIME, as the scripts do) and answers the microseconds per iteration; the empty loop is the
 * baseline measured in the same run, and `addedUs` is a variant minus it (the best of `--passes`
 * passes, variants interleaved). Variants: acquire admitted at once (no tenant, then with a
 * tenant), acquire waited (a reservation: histogram and wait sum), release (200, then 429).
 * A private redis-server (packages/testkit), stopped at the end.
 */
import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { spawnRedisServer } from '@keypool/testkit';
import { int, parseBenchArgs } from './cli.js';

const USAGE = `npm run bench:series [-- --json] [--calls N] [--passes N]

  --calls N    iterations per variant and pass (default 20000)
  --passes N   passes over the variants; the best of each is kept (default 3)`;

const args = parseBenchArgs(USAGE, { calls: '20000', passes: '3' });
const calls = int('calls', args.calls, 100, 1_000_000);
const passes = int('passes', args.passes, 1, 20);

const lua = (f: string) => readFileSync(new URL(`../../packages/core/lua/includes/${f}.lua`, import.meta.url), 'utf8');
const common = lua('common').replace('--- @include "window"', lua('window'));
const script = (inner: string) =>
  `${common}\n${lua('series')}\nlocal N = tonumber(ARGV[1])\nlocal st = { sb = 0, sn = 0, se = 0 }\nlocal t0 = nowMs()\nfor i = 1, N do\n  local now = nowMs()\n  ${inner}\nend\nreturn tostring((nowMs() - t0) * 1000 / N)`;
const VARIANTS: Record<string, string> = {
  empty: '',
  acquireAdmitted: "seriesAcquire(KEYS[1], now, 'normal', '', 'a', 0)",
  acquireAdmittedWithTenant: "seriesAcquire(KEYS[1], now, 'normal', 'tenant-a', 'a', 0)",
  acquireWaitedWithTenant: "seriesAcquire(KEYS[1], now, 'low', 'tenant-a', 'w', 120)",
  release200: "seriesRelease(KEYS[1], now, st, 'key-1', false)",
  release429: "seriesRelease(KEYS[1], now, st, 'key-1', true)",
};

const server = await spawnRedisServer();
const redis = new Redis(server.url);
try {
  const runs: Record<string, number[]> = {};
  for (let p = 0; p < passes; p++) {
    for (const [name, inner] of Object.entries(VARIANTS)) {
      const us = Number(await redis.eval(script(inner), 1, 'kp:{bench-series}:ser', calls));
      (runs[name] ??= []).push(Math.round(us * 1000) / 1000);
    }
  }
  const best = Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, Math.min(...v)]));
  const addedUs = Object.fromEntries(Object.entries(best).filter(([k]) => k !== 'empty').map(([k, v]) => [k, Math.round((v - best['empty']!) * 1000) / 1000]));
  const result = { calls, passes, usPerIteration: runs, bestUsPerIteration: best, addedUs, addedUsPerLease: Math.round((addedUs['acquireAdmitted']! + addedUs['release200']!) * 1000) / 1000 };
  if (args.json) process.stdout.write(JSON.stringify(result) + '\n');
  else {
    for (const [k, v] of Object.entries(addedUs)) process.stdout.write(`${k.padEnd(28)} +${v} us\n`);
    process.stdout.write(`${'per lease (admitted, 200)'.padEnd(28)} +${result.addedUsPerLease} us\n`);
  }
} finally {
  redis.disconnect();
  await server.stop();
}
