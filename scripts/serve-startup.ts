/**
 * How long `keypool serve` takes from spawn to its first `/readyz` 200, run by run:
 *
 *   tsx, cold   the sources compiled by tsx at start with an empty tsx cache, as the image did
 *               before the build (bin/keypool-dev.js, TSX_DISABLE_CACHE=1: a fresh container)
 *   tsx, warm   the same with tsx's disk cache filled by earlier runs (a restart on the same disk)
 *   dist        the compiled CLI (bin/keypool.js: dist/esm, plain node), as the image runs it now
 *
 * Variants take turns run by run (so machine noise hits each alike); one Redis for every run, and
 * the same config (one key, no upstream call). Prints each run and the medians.
 *
 *   npm run build && npm run bench:startup [-- --runs 7]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { spawnRedisServer } from '@keypool/testkit';

const BIN = fileURLToPath(new URL('../packages/cli/bin/', import.meta.url));
const VARIANTS: { name: string; bin: string; env: Record<string, string> }[] = [
  { name: 'tsx, cold', bin: 'keypool-dev.js', env: { TSX_DISABLE_CACHE: '1' } },
  { name: 'tsx, warm', bin: 'keypool-dev.js', env: {} },
  { name: 'dist', bin: 'keypool.js', env: {} },
];

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
    s.once('error', reject);
  });
}

/** One `keypool serve`: ms from spawn to the first 200 from /readyz, then SIGTERM and wait for the exit. */
async function once(bin: string, env: Record<string, string>, redisUrl: string, dir: string): Promise<number> {
  const port = await freePort();
  const config = join(dir, `keypool-${port}.yaml`);
  writeFileSync(config, `pool: startup-${port}\nredis:\n  url: ${redisUrl}\nserver:\n  port: ${port}\nlogLevel: warn\nkeys:\n  - secretEnv: KP_STARTUP_KEY\n    baseURL: http://127.0.0.1:9/v1\n    models: [gpt-4o-mini]\n`);
  // no NODE_OPTIONS: npm run passes the source condition to this script, not to the gateway
  const { NODE_OPTIONS: _, ...inherited } = process.env;
  const started = performance.now();
  const child = spawn(process.execPath, [join(BIN, bin), 'serve', '--config', config], {
    env: { ...inherited, ...env, KP_STARTUP_KEY: 'sk-startup-0000000000000000000000000001' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const exited = new Promise((r) => child.once('exit', r));
  try {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`keypool serve (${bin}) exited with ${child.exitCode}`);
      const ok = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.status === 200, () => false);
      if (ok) return performance.now() - started;
      await new Promise((r) => setTimeout(r, 5));
    }
  } finally {
    child.kill('SIGTERM');
    await exited;
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' } } });
  const runs = Number(values.runs);
  const redis = await spawnRedisServer();
  const dir = mkdtempSync(join(tmpdir(), 'keypool-startup-'));
  const times = new Map<string, number[]>(VARIANTS.map((v) => [v.name, []]));
  try {
    for (let i = 0; i < runs; i++) {
      const line: string[] = [];
      for (const v of VARIANTS) {
        const ms = await once(v.bin, v.env, redis.url, dir);
        times.get(v.name)!.push(ms);
        line.push(`${v.name} ${ms.toFixed(0)} ms`);
      }
      console.log(`run ${i + 1}: ${line.join(', ')}`);
    }
  } finally {
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  console.log(`\nkeypool serve -> /readyz 200, median of ${runs} runs (node ${process.version}):`);
  for (const [name, xs] of times) console.log(`  ${name.padEnd(10)} ${median(xs).toFixed(0).padStart(6)} ms   (min ${Math.min(...xs).toFixed(0)}, max ${Math.max(...xs).toFixed(0)})`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
