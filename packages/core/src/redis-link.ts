import type { EventEmitter } from 'node:events';
import type { Cluster, Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Clock } from './clock.js';
import { createRedis, describeRedis, type RedisConnection } from './connect.js';
import type { CommandLink, ScriptRun } from './commands.js';
import type { PoolConfig } from './config.js';
import { RedisUnavailableError, ScriptError } from './errors.js';
import { ScriptRunner, type Packed, type ScriptArg, type ScriptName } from './scripts.js';

const runners = new WeakMap<Redis | Cluster, ScriptRunner>();

/** Errors from a Redis that answers but cannot serve the pool: treated like Redis being down. */
const CONNECTION_LOST = /^(LOADING|BUSY|CLUSTERDOWN|TRYAGAIN|MASTERDOWN|READONLY|OOM|MISCONF|NOAUTH|WRONGPASS|NOPERM)/;
/** While down under policy local, how often acquire tries Redis again (a timeout alone does not reconnect). */
const REDIS_RETRY_MS = 1000;

/** Wait for a client someone else created to be connected (bounded): commands are never queued. */
function waitReady(client: Redis | Cluster, ms: number): Promise<void> {
  if (client.status === 'wait') return client.connect().then(() => undefined);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off('ready', onReady);
      reject(new Error(`Redis not ready after ${ms} ms`));
    }, ms);
    const onReady = () => {
      clearTimeout(timer);
      resolve();
    };
    client.once('ready', onReady);
  });
}

/** True for a client (Redis or Cluster) rather than a description of where Redis is. */
function isClient(redis: unknown): redis is Redis | Cluster {
  return typeof redis === 'object' && redis !== null && typeof (redis as { sendCommand?: unknown }).sendCommand === 'function';
}

/**
 * Open the client of a pool: from a URL or a {@link RedisConnection} (the pool owns it; made by
 * {@link createRedis} with the `pool` options), or one the caller made (waited for, kept open on close).
 */
export async function openClient(redis: string | RedisConnection | Redis | Cluster, config: PoolConfig): Promise<{ client: Redis | Cluster; owns: boolean }> {
  if (isClient(redis)) {
    if (redis.status !== 'ready') await waitReady(redis, config.redisDown.timeoutMs * 3).catch(() => undefined);
    return { client: redis, owns: false };
  }
  const client = createRedis(redis, 'pool', { timeoutMs: config.redisDown.timeoutMs });
  // until the pool listens, connection errors are reported by the connect() below
  let cause: Error | undefined;
  const quiet = (e: Error) => void (cause ??= e);
  client.on('error', quiet);
  try {
    await client.connect();
  } catch (e) {
    if (config.redisDown.policy === 'fail-closed') {
      client.disconnect();
      // ioredis rejects with "Connection is closed."; the error event said why (ECONNREFUSED...)
      const why = cause?.message ?? (e as Error).message;
      throw new RedisUnavailableError(`cannot reach Redis at ${describeRedis(redis)} (${why}); start Redis or fix the redis section (or REDIS_URL) to name a reachable server`, { cause: e });
    }
  }
  client.removeAllListeners('error');
  return { client, owns: true };
}

export interface RedisLinkOptions {
  pool: string;
  redisDown: PoolConfig['redisDown'];
  log: Logger;
  clock: Clock;
  /** Redis stopped answering (once per outage). */
  onDown(error: Error): void;
  /** Redis answers again. */
  onUp(): void;
}

/**
 * The pool's link to Redis: every script call and read goes through `script`/`hget` under the
 * Redis-down policy (a typed error, logged, visible in status). It tracks whether Redis is down
 * and since when, and tells acquire when to try Redis again under policy local.
 */
export class RedisLink implements CommandLink {
  readonly client: Redis | Cluster;
  private readonly owns: boolean;
  private readonly runner: ScriptRunner;
  private readonly o: RedisLinkOptions;
  private down: { since: number; error: string } | undefined;
  private lastTry = 0;
  private closing = false;
  private readonly listeners: [string, (...args: never[]) => void][] = [];

  constructor(client: Redis | Cluster, owns: boolean, options: RedisLinkOptions) {
    this.client = client;
    this.owns = owns;
    this.o = options;
    // one runner per client: the partitions of a partitioned pool share their client, so one
    // detection and one FUNCTION LOAD per master, not one per partition
    let runner = runners.get(client);
    if (!runner) {
      runner = new ScriptRunner(client, undefined, (mode, why) =>
        this.o.log.warn({ mode, reason: why }, 'Redis refused the scripts as Redis Functions: running them with EVALSHA from now on'),
      );
      runners.set(client, runner);
    }
    this.runner = runner;
    this.listen('close', () => {
      if (!this.closing) this.markDown(new Error('connection to Redis closed'));
    });
    this.listen('ready', () => this.markUp());
    this.listen('error', (e: Error) => this.markDown(e));
    // a client of ours that ioredis gave up on ('end' without close()) would never come back: start it again
    if (owns) this.listen('end', () => this.revive());
  }

  private revive(): void {
    if (this.closing) return;
    this.markDown(new Error('connection to Redis ended'));
    this.o.log.warn('Redis connection ended by the client library; connecting again');
    const retry = setTimeout(() => {
      if (this.closing || this.client.status !== 'end') return;
      this.client.connect().catch(() => undefined);
    }, REDIS_RETRY_MS);
    retry.unref();
  }

  private listen(event: string, fn: (...args: never[]) => void): void {
    (this.client as unknown as EventEmitter).on(event, fn as (...args: unknown[]) => void);
    this.listeners.push([event, fn]);
  }

  /** True while Redis answers (the last call succeeded). */
  get available(): boolean {
    return !this.down;
  }

  /** Since when (ms) and why Redis is down, or undefined. */
  get outage(): { since: number; error: string } | undefined {
    return this.down;
  }

  /**
   * Down under policy local: true while acquire should stay on the per-process limits. Once per
   * REDIS_RETRY_MS it answers false, so acquire tries Redis again: a timeout alone never brings a
   * 'ready' event.
   */
  stayLocal(): boolean {
    if (!this.down || this.o.redisDown.policy !== 'local') return false;
    const now = this.o.clock.now();
    if (now - this.lastTry < REDIS_RETRY_MS) return true;
    this.lastTry = now;
    return false;
  }

  /** Run a script (bound: it can be handed on as a function). */
  readonly script: ScriptRun = (name, keys, args, background = false) =>
    this.owns ? this.runScript(name, keys, args, background) : this.guard(name, () => this.resend(name, keys, args, background));

  /**
   * A script on a client of ours (ioredis' commandTimeout bounds the wait): guard() without a
   * closure per call, since acquire and release come this way for every request.
   */
  private async runScript(name: ScriptName, keys: readonly string[] | Packed<string>, args: readonly ScriptArg[], background: boolean): Promise<unknown> {
    try {
      if (this.client.status !== 'ready') throw new Error(`connection is ${this.client.status}`);
      let result: unknown;
      try {
        result = await this.runner.call(name, keys, args, background);
      } catch (e) {
        if (!this.runner.lost(name, e)) throw e;
        result = await this.runner.call(name, keys, args, background);
      }
      if (this.down) this.markUp();
      return result;
    } catch (e) {
      throw this.failure(name, e);
    }
  }

  /** A script call, sent again (as EVAL) once when Redis says it does not know the script. */
  private resend(name: ScriptName, keys: readonly string[] | Packed<string>, args: readonly ScriptArg[], background: boolean): Promise<unknown> {
    return this.runner.call(name, keys, args, background).catch((e: unknown) => (this.runner.lost(name, e) ? this.runner.call(name, keys, args, background) : Promise.reject(e)));
  }

  hget(key: string, field: string): Promise<string | null> {
    return this.guard('hget', () => this.client.hget(key, field));
  }

  hgetall(key: string): Promise<Record<string, string>> {
    return this.client.hgetall(key);
  }

  hscan(key: string, cursor: string, count: number): Promise<[string, string[]]> {
    return this.client.hscan(key, cursor, 'COUNT', count);
  }

  call(command: string, args: (string | number)[]): Promise<unknown> {
    return this.guard(command.toLowerCase(), () => this.client.call(command, ...args));
  }

  /** Run a call with the Redis-down policy: typed error, logged, visible in status. */
  private async guard<T>(name: string, call: () => Promise<T>): Promise<T> {
    const timeoutMs = this.o.redisDown.timeoutMs;
    let timer: NodeJS.Timeout | undefined;
    try {
      // a client that is not connected would queue the command and run it later (a lease nobody holds)
      if (this.client.status !== 'ready') throw new Error(`connection is ${this.client.status}`);
      // a client we made has ioredis' commandTimeout; one we were given may not. A real timer, not
      // the pool's clock: it bounds a wait on the network, which a test clock does not move.
      const result = this.owns
        ? await call()
        : await Promise.race([
            call(),
            new Promise<never>((_, reject) => {
              timer = setTimeout(() => reject(new Error(`no answer from Redis within ${timeoutMs} ms`)), timeoutMs);
            }),
          ]);
      if (this.down) this.markUp();
      return result;
    } catch (e) {
      throw this.failure(name, e);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The error a failed call is: a script's own error, or Redis unavailable (marked down, logged). */
  private failure(name: string, e: unknown): Error {
    const err = e as Error;
    if (err.name === 'ReplyError' && !CONNECTION_LOST.test(err.message)) return new ScriptError(name, { cause: e });
    this.markDown(err);
    return new RedisUnavailableError(
      `Redis unavailable for pool "${this.o.pool}" (${err.message}); ` +
        (this.o.redisDown.policy === 'fail-closed' ? 'failing closed (redisDown.policy=fail-closed)' : 'using per-process limits (redisDown.policy=local)'),
      { cause: e },
    );
  }

  private markDown(e: Error): void {
    if (this.down) return;
    this.down = { since: this.o.clock.now(), error: e.message };
    const d = this.o.redisDown;
    this.o.log.error(
      { err: e.message, policy: d.policy },
      d.policy === 'fail-closed'
        ? 'Redis unavailable: acquire fails with RedisUnavailableError until it is back'
        : `Redis unavailable: degrading to per-process limits (1/${d.fleetSize} of each key)`,
    );
    this.o.onDown(e);
  }

  private markUp(): void {
    if (!this.down) return;
    const downMs = this.o.clock.now() - this.down.since;
    this.down = undefined;
    this.o.log.warn({ downMs }, 'Redis available again: shared limits back in force');
    this.o.onUp();
  }

  /** A start that failed: stop listening and drop the client if the pool opened it, at once. */
  abandon(): void {
    this.closing = true;
    for (const [event, fn] of this.listeners) (this.client as unknown as EventEmitter).off(event, fn as (...args: unknown[]) => void);
    if (this.owns) {
      this.client.on('error', () => undefined);
      this.client.disconnect();
    }
  }

  /** Stop listening; close the client if the pool opened it. */
  async close(): Promise<void> {
    this.closing = true;
    for (const [event, fn] of this.listeners) (this.client as unknown as EventEmitter).off(event, fn as (...args: unknown[]) => void);
    // a client we made may still report a failed reconnect: nobody is listening any more
    if (this.owns) this.client.on('error', () => undefined);
    if (this.owns) await this.client.quit().catch(() => this.client.disconnect());
  }
}
