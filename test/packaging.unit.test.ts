/**
 * The packages as a stranger gets them: scripts/pack-install.sh packs every public package (after
 * `npm run build`) and installs the tarballs into a scratch project outside the repository, with
 * production dependencies only: no workspace links, no tsx, no TypeScript sources. Then plain `node`
 * (no NODE_OPTIONS, so no @keypool/source condition) uses them: an ES module and a CommonJS script
 * each lease a key on a real Redis and release it, a PooledOpenAI call reaches the fake upstream,
 * `npx keypool serve` answers /readyz, `tsc --noEmit` type-checks a consumer in both module kinds,
 * and @arethetypeswrong/cli finds no wrong types in any tarball. The image's /app is made by the same
 * script (Dockerfile), so this is also the check of what the image runs.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnRedisServer, startFakeOpenAI, type FakeOpenAI, type SpawnedRedis } from '@keypool/testkit';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const KEY = 'sk-test-packagingpackagingpackag0001';
const run = promisify(execFile);

/** The environment of a stranger's shell: none of the repository's settings (NODE_OPTIONS carries the source condition). */
function strangerEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ['NODE_OPTIONS', 'REDIS_URL', 'KEYPOOL_CONFIG', 'KEYPOOL_URL', 'KEYPOOL_PORT', 'KEYPOOL_POOL']) delete env[k];
  return { ...env, ...extra };
}

let dir: string;
let redis: SpawnedRedis;
let fake: FakeOpenAI;

/** `node file` in the scratch project; its stdout. */
async function node(file: string, extra: Record<string, string> = {}, args: string[] = []): Promise<string> {
  const r = await run(process.execPath, ['--enable-source-maps', file, ...args], { cwd: dir, env: strangerEnv(extra), timeout: 30_000 }).catch((e: Error & { stderr: string }) => {
    throw new Error(`node ${file} failed: ${e.stderr}`);
  });
  return r.stdout;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keypool-packaging-'));
  await run('bash', [join(ROOT, 'scripts', 'pack-install.sh'), dir], { cwd: ROOT, env: strangerEnv(), timeout: 240_000 });
  // what a TypeScript user adds to compile against the packages (from the npm cache when present)
  await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', '--save-dev', '@types/node@^20'], { cwd: dir, env: strangerEnv(), timeout: 120_000 });
  [redis, fake] = await Promise.all([spawnRedisServer(), startFakeOpenAI({ keys: [{ key: KEY, name: 'only' }], models: ['gpt-4o-mini'] })]);
}, 300_000);

afterAll(async () => {
  await Promise.all([redis?.stop(), fake?.stop()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('the packed packages, installed outside the repository', () => {
  it('hold dist, the Lua scripts and the dashboard; no TypeScript sources, no tsx', () => {
    const installed = join(dir, 'node_modules');
    expect(existsSync(join(installed, 'tsx'))).toBe(false);
    const files = readdirSync(join(installed, '@keypool'), { recursive: true }) as string[];
    expect(files.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))).toEqual([]);
    // every Lua script and include of the repository, whatever their names
    const lua = (readdirSync(join(ROOT, 'packages', 'core', 'lua'), { recursive: true }) as string[]).filter((f) => f.endsWith('.lua'));
    expect(lua.length).toBeGreaterThan(5);
    for (const f of lua) expect(files).toContain(join('core', 'lua', f));
    expect(files).toContain(join('server', 'dist', 'cjs', 'dashboard.html'));
    expect(files).toContain(join('server', 'dist', 'esm', 'dashboard.html'));
  });

  // one script body, two module systems: only the way it loads @keypool/core differs
  const leaseScript = (load: string) => `${load}
async function main() {
  const pool = await KeyPool.connect({
    redis: process.env.REDIS_URL,
    config: { pool: 'packaging-' + process.pid, keys: [{ secret: process.env.KEY, baseURL: process.env.BASE_URL, models: ['gpt-4o-mini'], rpm: 60 }] },
  });
  const lease = await pool.acquire({ model: 'gpt-4o-mini', estimatedTokens: 10 });
  if (!lease.ok) throw new Error('no lease: ' + lease.reason);
  const released = await lease.release({ status: 200, latencyMs: 5, usage: { promptTokens: 5, completionTokens: 2 } });
  console.log(JSON.stringify({ keyId: lease.keyId, released: released !== undefined }));
  await pool.close();
}
main().catch((e) => { console.error(e); process.exitCode = 1; });
`;

  it.each([
    ['an ES module', 'lease.mjs', "import { KeyPool } from '@keypool/core';"],
    ['a CommonJS script', 'lease.cjs', "const { KeyPool } = require('@keypool/core');"],
  ])('%s leases a key from @keypool/core on a real Redis and releases it', async (_, file, load) => {
    writeFileSync(join(dir, file), leaseScript(load));
    const out = JSON.parse(await node(file, { REDIS_URL: redis.url, KEY, BASE_URL: fake.url })) as { keyId: string; released: boolean };
    expect(out.keyId).toMatch(/\w{6,}/);
    expect(out.released).toBe(true);
  });

  it('a PooledOpenAI call from @keypool/client reaches the fake upstream', async () => {
    writeFileSync(
      join(dir, 'client.mjs'),
      `import { KeyPool } from '@keypool/core';
import { PooledOpenAI } from '@keypool/client';
const pool = await KeyPool.connect({ redis: process.env.REDIS_URL, config: { pool: 'packaging-client-' + process.pid, keys: [{ secret: process.env.KEY, baseURL: process.env.BASE_URL, models: ['gpt-4o-mini'] }] } });
const openai = new PooledOpenAI({ pool });
const reply = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello' }], max_tokens: 5 });
console.log(JSON.stringify({ object: reply.object, usage: reply.usage }));
await pool.close();
`,
    );
    const before = fake.counters().only?.requests ?? 0;
    const out = JSON.parse(await node('client.mjs', { REDIS_URL: redis.url, KEY, BASE_URL: fake.url })) as { object: string; usage: { total_tokens: number } };
    expect(out.object).toBe('chat.completion');
    expect(out.usage.total_tokens).toBeGreaterThan(0);
    expect(fake.counters().only?.requests).toBe(before + 1);
  });

  it("the Dockerfile's ENTRYPOINT, run in the installed project as the image does, is the compiled CLI", async () => {
    const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
    expect(dockerfile).toMatch(/^RUN scripts\/pack-install\.sh \/app$/m);
    expect(dockerfile).toMatch(/^COPY --from=build \/app\/node_modules \.\/node_modules$/m);
    const entry = JSON.parse(/^ENTRYPOINT (.+)$/m.exec(dockerfile)![1]!) as string[];
    expect(entry[0]).toBe('node');
    const { version } = JSON.parse(readFileSync(join(ROOT, 'packages', 'cli', 'package.json'), 'utf8')) as { version: string };
    expect(await node(entry[1]!, {}, ['--version'])).toBe(`${version}\n`);
  });

  it('`npx keypool serve` from the installed CLI answers /readyz', async () => {
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    writeFileSync(
      join(dir, 'keypool.yaml'),
      `pool: packaging-serve\nredis:\n  url: ${redis.url}\nserver:\n  port: ${port}\nkeys:\n  - secretEnv: KP_KEY\n    baseURL: ${fake.url}\n    models: [gpt-4o-mini]\n`,
    );
    const child = spawn('npx', ['--no-install', 'keypool', 'serve', '--config', 'keypool.yaml'], { cwd: dir, env: strangerEnv({ KP_KEY: KEY }), stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let output = '';
    child.stdout.on('data', (c) => (output += c));
    child.stderr.on('data', (c) => (output += c));
    try {
      const deadline = Date.now() + 30_000;
      let status = 0;
      while (Date.now() < deadline && child.exitCode === null) {
        status = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.status, () => 0);
        if (status === 200) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(status, output).toBe(200);
    } finally {
      const exited = new Promise((r) => child.once('exit', r));
      if (child.exitCode === null) process.kill(-child.pid!, 'SIGTERM');
      await exited;
    }
  });

  it('the published types compile for an ES module and a CommonJS consumer (tsc --noEmit)', async () => {
    const consumer = (load: string) => `${load}
export async function leaseOne(redis: string): Promise<string | null> {
  const pool = await KeyPool.connect({ redis, config: { pool: 'p', keys: [{ secret: 'sk-x', models: ['gpt-4o-mini'] }] } });
  const lease = await pool.acquire({ model: 'gpt-4o-mini', estimatedTokens: 1 });
  const openai: PooledOpenAI = new PooledOpenAI({ pool });
  void openai;
  // @ts-expect-error a typo in the model field is caught: the types are real, not any
  await pool.acquire({ modle: 'gpt-4o-mini' });
  // @ts-expect-error keyId is a string
  const wrong: number = lease.ok ? lease.keyId : 0;
  void wrong;
  return lease.ok ? lease.keyId : null;
}
`;
    writeFileSync(join(dir, 'consumer.mts'), consumer("import { KeyPool } from '@keypool/core';\nimport { PooledOpenAI } from '@keypool/client';"));
    writeFileSync(join(dir, 'consumer.cts'), consumer("import { KeyPool } from '@keypool/core';\nimport { PooledOpenAI } from '@keypool/client';\nimport type { serve } from '@keypool/server';\nexport type Serve = typeof serve;"));
    writeFileSync(
      join(dir, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { module: 'nodenext', target: 'es2022', strict: true, noEmit: true, skipLibCheck: true, types: ['node'] }, files: ['consumer.mts', 'consumer.cts'] }),
    );
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const r = await run(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: dir, env: strangerEnv() }).catch((e: { stdout: string }) => e);
    expect(r.stdout).toBe('');
  });

  it('@arethetypeswrong/cli finds no problem in any tarball (node16, from ESM and from CommonJS)', async () => {
    const attw = join(ROOT, 'node_modules', '@arethetypeswrong', 'cli', 'dist', 'index.js');
    const tarballs = readdirSync(join(dir, 'tarballs')).filter((t) => t.endsWith('.tgz'));
    expect(tarballs.length).toBe(7);
    const problems = await Promise.all(
      tarballs.map((t) =>
        run(process.execPath, [attw, '--profile', 'node16', '--format', 'ascii', join(dir, 'tarballs', t)], { env: strangerEnv() }).then(
          () => '',
          (e: { stdout: string }) => `${t}:\n${e.stdout}`,
        ),
      ),
    );
    expect(problems.filter(Boolean)).toEqual([]);
  });
});
