/**
 * The embedded redis-server of `keypool serve`: a real child process, started and stopped for real.
 * Nothing here talks to the test Redis, so the cluster project skips the file.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Writable } from 'node:stream';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { fixtureArgs, testTarget } from '@keypool/testkit';
import { REDIS_SERVER_MISSING, startEmbeddedRedis, type EmbeddedRedis } from '../src/embedded-redis.js';

/** A pino logger whose lines land in `lines`. */
function capture(): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}

/** True while `pid` is a live process (a zombie waiting for a reaper counts as gone). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return existsSync(`/proc/${pid}`);
  }
}

async function eventually(check: () => boolean, ms = 5000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 25));
  }
  return true;
}

async function withClient<T>(url: string, fn: (r: Redis) => Promise<T>): Promise<T> {
  const r = new Redis(url, { maxRetriesPerRequest: 1 });
  r.on('error', () => undefined); // a refused connection rejects the command; no unhandled event noise
  try {
    return await fn(r);
  } finally {
    r.disconnect();
  }
}

const started: EmbeddedRedis[] = [];
const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(started.map((r) => r.stop()));
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe.skipIf(testTarget() === 'cluster')('startEmbeddedRedis', () => {
  it('starts redis-server on 127.0.0.1, answers PING, logs port and pid, and stop() ends the process', async () => {
    const { logger, lines } = capture();
    const redis = await startEmbeddedRedis({ logger });
    started.push(redis);
    expect(redis.url).toBe(`redis://127.0.0.1:${redis.port}`);
    expect(alive(redis.pid)).toBe(true);

    const { pong, info, dir, appendonly } = await withClient(redis.url, async (r) => ({
      pong: await r.ping(),
      info: await r.info('server'),
      dir: ((await r.config('GET', 'dir')) as string[])[1]!,
      appendonly: ((await r.config('GET', 'appendonly')) as string[])[1],
    }));
    expect(pong).toBe('PONG');
    expect(info).toContain(`process_id:${redis.pid}\r\n`);
    expect(appendonly).toBe('yes'); // a crash and restart loses nothing; the temp dir goes at stop
    expect(existsSync(dir)).toBe(true);
    expect(lines).toContainEqual(
      expect.objectContaining({ msg: 'embedded redis-server started', component: 'embedded-redis', port: redis.port, redisPid: redis.pid }),
    );

    await redis.stop();
    expect(alive(redis.pid)).toBe(false);
    expect(existsSync(dir)).toBe(false); // the temp dir goes with it
    await redis.stop(); // idempotent
    expect(lines.filter((l) => l.msg === 'embedded redis-server exited unexpectedly')).toEqual([]);
  });

  it('starts again on the same port when it dies, and says so', async () => {
    const { logger, lines } = capture();
    const redis = await startEmbeddedRedis({ logger });
    started.push(redis);
    const first = redis.pid;
    await withClient(redis.url, (r) => r.set('survives', 'yes'));
    process.kill(first, 'SIGKILL');
    const answering = () => withClient(redis.url, async (r) => Number((await r.info('server')).match(/process_id:(\d+)/)?.[1])).catch(() => first);
    await expect.poll(answering, { timeout: 10_000, interval: 100 }).not.toBe(first);
    // the new server may answer a moment before the supervisor's own readiness check sees it
    await expect.poll(() => redis.pid, { timeout: 5000, interval: 20 }).not.toBe(first);
    expect(await answering()).toBe(redis.pid);
    expect(await withClient(redis.url, (r) => r.get('survives'))).toBe('yes');
    expect(lines.map((l) => l.msg)).toEqual(expect.arrayContaining(['embedded redis-server exited unexpectedly', expect.stringMatching(/restarted on the same port with its data/)]));
    await redis.stop();
    expect(alive(redis.pid)).toBe(false);
  });

  it('stop() during a restart leaves no redis-server behind', async () => {
    const redis = await startEmbeddedRedis({ logger: pino({ level: 'silent' }) });
    started.push(redis);
    const first = redis.pid;
    process.kill(first, 'SIGKILL');
    // the new server answers; the supervisor may still be checking that it is ready
    const answering = () => withClient(redis.url, async (r) => Number((await r.info('server')).match(/process_id:(\d+)/)?.[1])).catch(() => first);
    let second = first;
    await expect.poll(async () => (second = await answering()), { timeout: 10_000, interval: 5 }).not.toBe(first);
    await redis.stop();
    await new Promise((r) => setTimeout(r, 300));
    expect(alive(second)).toBe(false);
  });

  it('starts several side by side on different ports', async () => {
    const logger = pino({ level: 'silent' });
    const all = await Promise.all([1, 2, 3].map(() => startEmbeddedRedis({ logger })));
    started.push(...all);
    expect(new Set(all.map((r) => r.port)).size).toBe(3);
    await Promise.all(all.map((r) => r.stop()));
    expect(all.some((r) => alive(r.pid))).toBe(false);
  });

  it('says how to provide Redis when redis-server is not on the PATH', async () => {
    const path = process.env.PATH;
    process.env.PATH = '/nonexistent-keypool-bin';
    // the PATH is read before the first await: restore it at once, whatever happens next
    const result = startEmbeddedRedis({ logger: pino({ level: 'silent' }) });
    process.env.PATH = path;
    await expect(result).rejects.toThrow(
      new Error(
        'no Redis configured and redis-server is not on the PATH: set REDIS_URL (or redis.url in the config file), ' +
          'install redis-server (Debian: apt-get install redis-server), or start one with Docker: docker run -p 6379:6379 redis:7',
      ),
    );
    expect(REDIS_SERVER_MISSING).toContain('docker run -p 6379:6379 redis:7');
  });

  it('keeps its data across a restart when given a dir (created if missing)', async () => {
    const base = await mkdtemp(join(tmpdir(), 'keypool-embedded-'));
    dirs.push(base);
    const dir = join(base, 'data', 'redis');
    const logger = pino({ level: 'silent' });

    const first = await startEmbeddedRedis({ dir, logger });
    started.push(first);
    await withClient(first.url, async (r) => {
      expect(((await r.config('GET', 'appendonly')) as string[])[1]).toBe('yes');
      expect(((await r.config('GET', 'dir')) as string[])[1]).toBe(dir);
      await r.set('kp:persist', 'kept');
      await r.hset('kp:hash', 'spent', '42');
    });
    await first.stop();
    expect(alive(first.pid)).toBe(false);
    expect(existsSync(dir)).toBe(true); // a given dir is never removed

    const second = await startEmbeddedRedis({ dir, logger });
    started.push(second);
    expect(second.pid).not.toBe(first.pid);
    await withClient(second.url, async (r) => {
      expect(await r.get('kp:persist')).toBe('kept');
      expect(await r.hget('kp:hash', 'spent')).toBe('42');
    });
    await second.stop();
  });

  it.each([['exit'], ['throw']])('does not outlive its parent (parent leaves by %s)', async (how) => {
    const child = spawn(process.execPath, [...fixtureArgs(fileURLToPath(new URL('./fixtures/embedded-redis-child.ts', import.meta.url))), how], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', () => {}); // the uncaught exception lands here
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code).toBe(how === 'exit' ? 0 : 1);
    const { pid } = JSON.parse(out.trim()) as { pid: number };
    expect(await eventually(() => !alive(pid))).toBe(true);
  });
});
