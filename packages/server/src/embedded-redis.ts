/**
 * A private redis-server for `keypool serve` when no Redis is configured: a child process on a free
 * 127.0.0.1 port, stopped with the gateway. Standalone on purpose (the testkit is not a dependency
 * of production code).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join, resolve } from 'node:path';
import { Redis } from 'ioredis';
import { systemClock, type Clock } from '@keypool/core';
import type { Logger } from 'pino';

const HOST = '127.0.0.1';
/** Loading a large append-only file takes a while; a child that exits is noticed at once anyway. */
const READY_TIMEOUT_MS = 30_000;
const KILL_AFTER_MS = 3_000;

export const REDIS_SERVER_MISSING =
  'no Redis configured and redis-server is not on the PATH: set REDIS_URL (or redis.url in the config file), ' +
  'install redis-server (Debian: apt-get install redis-server), or start one with Docker: docker run -p 6379:6379 redis:7';

/** Options of {@link startEmbeddedRedis}. */
export interface EmbeddedRedisOptions {
  /** Data directory (created if needed), kept after stop. Absent: a temp dir, removed at stop. Either way an append-only file keeps the data across a crash and restart. */
  dir?: string;
  logger: Logger;
  /** Times the wait for the server to answer (READY_TIMEOUT_MS). Default systemClock. */
  clock?: Clock;
}

/** A running embedded redis-server. */
export interface EmbeddedRedis {
  /** `redis://127.0.0.1:<port>` */
  url: string;
  port: number;
  pid: number;
  /** SIGTERM, SIGKILL after 3 s; removes the temp dir if one was made. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Starts redis-server on a free 127.0.0.1 port and resolves once it answers (its INFO names the
 * child's pid, so another Redis on that port cannot fool the check) and has loaded its data.
 *
 * @throws if redis-server is not on the PATH (the message says how to provide Redis), or it exits
 *   or does not answer in time (the message carries the tail of its output).
 */
export async function startEmbeddedRedis(opts: EmbeddedRedisOptions): Promise<EmbeddedRedis> {
  if (!onPath('redis-server')) throw new Error(REDIS_SERVER_MISSING);
  const log = opts.logger.child({ component: 'embedded-redis' });
  const clock = opts.clock ?? systemClock;
  const dir = opts.dir === undefined ? undefined : resolve(opts.dir);
  if (dir) await mkdir(dir, { recursive: true });
  // The free port is released before redis-server binds it: another process may take it in between.
  for (let attempt = 1; ; attempt++) {
    const workDir = dir ?? (await mkdtemp(join(tmpdir(), 'keypool-redis-')));
    try {
      const started = await startOnce(await freePort(), workDir, dir !== undefined, log, clock);
      log.info({ port: started.port, redisPid: started.pid, dir: dir ?? null }, 'embedded redis-server started');
      return supervise(started, workDir, dir !== undefined, log, clock);
    } catch (err) {
      if (!dir) await rm(workDir, { recursive: true, force: true });
      if (attempt >= 3 || !String((err as Error).message).includes('Address already in use')) throw err;
    }
  }
}

/**
 * Keep the embedded Redis up: if it dies (killed, OOM), start it again on the same port and data
 * dir, with a growing pause between tries (0.5 s to 5 s), so the pool reconnects by itself instead
 * of failing every request until the gateway is restarted.
 */
function supervise(first: Instance, workDir: string, persistent: boolean, log: Logger, clock: Clock): EmbeddedRedis {
  let current = first;
  let stopped = false;
  /** A restart under way: stop() must stop what it starts too. */
  let starting: Promise<Instance> | undefined;
  const watch = (inst: Instance) => {
    void inst.exited.then(async () => {
      let pause = 500;
      while (!stopped && !inst.stopping()) {
        await clock.sleep(pause);
        if (stopped) return;
        try {
          starting = startOnce(inst.port, workDir, persistent, log, clock);
          const next = await starting.finally(() => (starting = undefined));
          if (stopped) return void (await next.stop());
          current = next;
          log.warn({ port: current.port, redisPid: current.pid }, 'embedded redis-server restarted on the same port with its data (append-only file)');
          watch(current);
          return;
        } catch (e) {
          log.error({ err: (e as Error).message, retryInMs: Math.min(pause * 2, 5000) }, 'embedded redis-server could not be restarted');
          pause = Math.min(pause * 2, 5000);
        }
      }
    });
  };
  watch(first);
  return {
    url: first.url,
    port: first.port,
    get pid() {
      return current.pid;
    },
    stop: async () => {
      stopped = true;
      const restart = starting;
      await current.stop();
      // stop() during a restart: `current` is the dead one, the one starting must go too (stop is idempotent)
      if (restart) await (await restart.catch(() => undefined))?.stop();
    },
  };
}

interface Instance extends EmbeddedRedis {
  /** Resolves when the process has exited (for whatever reason). */
  exited: Promise<void>;
  /** True once stop() was called. */
  stopping: () => boolean;
}

async function startOnce(port: number, workDir: string, persistent: boolean, log: Logger, clock: Clock): Promise<Instance> {
  // always an append-only file, in the temp dir when no dir is given: a crash and restart loses nothing;
  // without a dir the file goes when the gateway stops
  const args = ['--port', String(port), '--bind', HOST, '--save', '', '--dir', workDir, '--appendonly', 'yes'];
  // its own process group: a Ctrl-C in the terminal reaches the gateway, which drains and then stops Redis
  const child = spawn('redis-server', args, { cwd: workDir, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  // Drain both pipes for the child's whole life (a full pipe blocks redis-server); keep the tail,
  // where Redis explains why it could not start or why it died.
  let output = '';
  const keep = (chunk: Buffer) => (output = (output + chunk.toString()).slice(-4000));
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let exited = false;
  let ready = false;
  let stopping: Promise<void> | undefined;
  const exit = new Promise<void>((done) => {
    const onExit = () => ((exited = true), live.delete(child), done());
    child.once('exit', (code, signal) => {
      if (!stopping && ready) log.error({ code, signal, output: output.trim().slice(-1000) }, 'embedded redis-server exited unexpectedly');
      onExit();
    });
    child.once('error', (err) => ((output += `\n${err.message}`), onExit()));
  });
  live.add(child);
  registerExitHook();

  const stop = () =>
    (stopping ??= (async () => {
      if (!exited) {
        const escalate = setTimeout(() => child.kill('SIGKILL'), KILL_AFTER_MS);
        child.kill('SIGTERM');
        await exit;
        clearTimeout(escalate);
      }
      if (!persistent) await rm(workDir, { recursive: true, force: true });
      if (ready) log.info({ port, redisPid: child.pid }, 'embedded redis-server stopped');
    })());

  const deadline = clock.now() + READY_TIMEOUT_MS;
  while (!(await answers(port, child.pid))) {
    if (exited || clock.now() > deadline) {
      const why = exited ? `exited (code ${child.exitCode}, signal ${child.signalCode})` : `did not answer within ${READY_TIMEOUT_MS / 1000} s`;
      await stop();
      throw new Error(`embedded redis-server on port ${port} ${why}. Its output:\n${output.trim()}`);
    }
    await clock.sleep(50);
  }
  ready = true;
  return { url: `redis://${HOST}:${port}`, port, pid: child.pid!, stop, exited: exit, stopping: () => stopping !== undefined };
}

/** True once the server on `port` is process `pid` and has finished loading its data. */
async function answers(port: number, pid: number | undefined): Promise<boolean> {
  if (pid === undefined) return false;
  const client = new Redis({ host: HOST, port, lazyConnect: true, connectTimeout: 1000, retryStrategy: () => null, maxRetriesPerRequest: 0, enableOfflineQueue: false });
  client.on('error', () => {}); // a refused connection is the expected answer while it starts
  try {
    await client.connect();
    const info = String(await client.call('INFO'));
    return info.includes(`process_id:${pid}\r\n`) && info.includes('loading:0\r\n');
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, HOST, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => (port ? done(port) : fail(new Error('could not find a free port'))));
    });
  });
}

function onPath(name: string): boolean {
  return (process.env.PATH ?? '').split(delimiter).some((dir) => {
    try {
      accessSync(join(dir || '.', name), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

// The child must not outlive this process: 'exit' runs on process.exit() and on the event loop
// emptying (not on SIGKILL, which nothing can catch).
const live = new Set<ChildProcess>();
let hooked = false;
function registerExitHook(): void {
  if (hooked) return;
  hooked = true;
  process.once('exit', () => {
    for (const child of live) child.kill('SIGKILL');
  });
}
