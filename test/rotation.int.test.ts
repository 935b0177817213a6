import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, describe, expect, it } from 'vitest';
import { keyIdOf } from '@keypool/core';
import { generateMasterKey, initSecretsFile, parseMasterKey, writeSecretsFile } from '@keypool/secrets';
import { loadGatewayConfig } from '@keypool/config';
import { serve, type Serving } from '@keypool/server';
import { connectionForChild, startFakeOpenAI, testTarget, uniqueName, type FakeOpenAI } from '@keypool/testkit';
import { LogSink } from '@keypool/testkit/log-sink';
import { startWorker, type RunningWorker } from '@keypool/worker';

/**
 * Zero-downtime rotation, end to end: two gateways and a worker read their keys from one encrypted
 * file; official-SDK callers hammer both gateways while the file changes three times (a key's
 * secret rotated, a key removed, a key added). The worker's secret refresh publishes each change,
 * the gateways pick it up through pub/sub, removed keys are drained then retired. Not one request
 * may fail. (The gateway takes a Redis URL: standalone only; SecretSync on a Cluster is covered by
 * packages/secrets/test/sync.int.test.ts.)
 */
const dir = mkdtempSync(join(tmpdir(), 'keypool-rotation-'));
const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const f of cleanups.reverse()) await f().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

const secret = (tag: string) => `sk-rotation-${tag}-${'0123456789abcdefghij'}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(testTarget() === 'cluster')('rotation under load', () => {
  it('a rotated, a removed and an added key: no failed request, old keys retired, new keys used', async () => {
    const tags = ['a', 'a2', 'b', 'c', 'd'];
    const fake: FakeOpenAI = await startFakeOpenAI({ keys: tags.map((t) => ({ key: secret(t), name: t })), latency: { p50Ms: 15, p99Ms: 60 } });
    cleanups.push(() => fake.stop());
    const master = generateMasterKey();
    process.env.KP_ROTATION_MASTER = master;
    const creds = { masterKey: parseMasterKey(master) };
    const file = join(dir, 'keys.enc');
    await initSecretsFile(file, creds);
    const keys = (list: string[]) => list.map((t) => ({ secret: secret(t), name: t, models: ['gpt-4o-mini'], baseURL: fake.url }));
    await writeSecretsFile(file, creds, keys(['a', 'b', 'c']));
    const pool = uniqueName('rot');
    const yaml = join(dir, 'keypool.yaml');
    writeFileSync(
      yaml,
      [
        `pool: ${pool}`,
        `redis: { url: "${connectionForChild().url}" }`,
        'server: { host: 127.0.0.1, port: 0, maxAttempts: 1 }', // no retry on another key: a request sent to a retired key would fail
        'logLevel: info',
        'secrets:',
        '  heartbeatMs: 250',
        '  sources:',
        '    - type: file',
        `      path: ${file}`,
        '      masterKeyEnv: KP_ROTATION_MASTER',
        '      defaults: { rpm: 100000 }',
        'scheduler: { secretRefreshMs: 1000, probeMs: 60000, housekeepingMs: 60000, rotationGraceMs: 800, lockMs: 5000, stalledCheckMs: 2000 }',
      ].join('\n'),
    );
    const config = loadGatewayConfig({ file: yaml });
    const sink = new LogSink(['secret', '*.secret', 'authorization', '*.authorization']);
    const gateways: Serving[] = [];
    for (let i = 0; i < 2; i++) {
      const g = await serve(config, { logger: sink.logger });
      gateways.push(g);
      cleanups.push(() => g.close());
    }
    const worker: RunningWorker = await startWorker(config, { logger: sink.logger });
    cleanups.push(() => worker.close());
    const { token } = await gateways[0]!.pool.tokens.create({ name: 'rotation-test' });
    const clients = gateways.map((g) => new OpenAI({ apiKey: token, baseURL: `${g.url}/v1`, maxRetries: 0, timeout: 10_000 }));

    let stop = false;
    let ok = 0;
    const failures: string[] = [];
    const loops = Array.from({ length: 8 }, async (_, i) => {
      while (!stop) {
        try {
          await clients[i % 2]!.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: `hello ${i}` }], max_tokens: 4 });
          ok++;
        } catch (e) {
          failures.push(String((e as Error).message));
        }
      }
    });
    const served = (t: string) => fake.counters()[t]?.served ?? 0;
    const waitFor = async (what: () => boolean, ms = 15_000) => {
      const end = Date.now() + ms;
      while (!what()) {
        if (Date.now() > end) throw new Error('timed out');
        await sleep(50);
      }
    };
    const inPool = async () => (await gateways[0]!.pool.status()).keys.map((k) => k.name).sort();

    await sleep(800);
    // 1. rotate a: its secret becomes a2 (the old one is drained, then retired)
    await writeSecretsFile(file, creds, keys(['a2', 'b', 'c']));
    await waitFor(() => served('a2') > 20);
    await waitFor(() => gateways.every((g) => g.sync!.version === worker.sync!.version));
    // 2. remove b
    await writeSecretsFile(file, creds, keys(['a2', 'c']));
    await waitFor(() => gateways.every((g) => !g.pool.knownKeys().some((k) => k.name === 'b')));
    // 3. add d
    await writeSecretsFile(file, creds, keys(['a2', 'c', 'd']));
    await waitFor(() => served('d') > 20);
    await sleep(500);
    stop = true;
    await Promise.all(loops);

    expect(failures).toEqual([]);
    expect(ok).toBeGreaterThan(300);
    expect(await inPool()).toEqual(['a2', 'c', 'd']);
    // a and b were used before their removal and not after it: their counters stopped
    const aServed = served('a');
    const bServed = served('b');
    expect(aServed).toBeGreaterThan(0);
    expect(bServed).toBeGreaterThan(0);
    await sleep(300);
    expect(served('a')).toBe(aServed);
    // the provider never saw a failed call (no 401 from a key used after its removal, no 429)
    for (const t of tags) expect(fake.counters()[t]?.status ?? {}).not.toHaveProperty('401');
    // the fleet agrees on the version, and the retired keys are out of the rotation bookkeeping
    const st = await fetch(`${gateways[1]!.url}/status`).then(
      (r) =>
        r.json() as Promise<{
          secrets: { version: string; keys: number; sources: { kind: string; keys: number }[]; fleet: { published: string; processes: unknown[] } };
          scheduler: { name: string; every?: number; runs: { completed: number }; lastRun?: { ok: boolean; summary?: { retired?: number } } }[];
        }>,
    );
    expect(st.secrets.version).toBe(st.secrets.fleet.published);
    expect(st.secrets.fleet.processes).toHaveLength(3);
    expect(st.secrets.sources).toEqual([expect.objectContaining({ kind: 'file', keys: 3 })]);
    // the schedule and its last runs, as the worker recorded them
    const refresh = st.scheduler.find((j) => j.name === 'secret-refresh')!;
    expect(refresh.every).toBe(1000);
    expect(refresh.runs.completed).toBeGreaterThanOrEqual(3);
    expect(refresh.lastRun?.ok).toBe(true);
    expect(st.scheduler.map((j) => j.name).sort()).toEqual(['budget-period', 'health-probe', 'housekeeping', 'secret-refresh']);
    const metrics = await fetch(`${gateways[0]!.url}/metrics`).then((r) => r.text());
    expect(metrics).toMatch(/keypool_scheduler_runs_total\{job="secret-refresh",outcome="completed"\} [1-9]/);
    expect(metrics).toMatch(/keypool_scheduler_last_run_success\{job="secret-refresh"\} 1/);
    expect(metrics).toMatch(/keypool_secret_refresh_total\{source="file [^"]+",outcome="ok"\} [1-9]/);
    expect(metrics).toMatch(/keypool_secret_keys\{source="file [^"]+"\} 3/);
    // no secret in the logs or in /status
    const status = JSON.stringify(st);
    for (const t of tags) {
      expect(sink.text).not.toContain(secret(t));
      expect(status).not.toContain(secret(t));
    }
    expect(sink.text).toContain(keyIdOf(secret('a'), fake.url));
    expect(readFileSync(file, 'utf8')).not.toContain('rotation');
  });
});
