/**
 * The Redis a benchmark runs against: REDIS_URL when set (shared: never flushed, only the run's own
 * pool keys are deleted), else a private redis-server on a free port (packages/testkit), stopped at
 * the end. Also what the benchmarks read from it: INFO samples (CPU, command statistics) and their
 * deltas.
 */
import { Redis, type RedisOptions } from 'ioredis';
import { PoolKeys } from '@keypool/core';
import { spawnRedisServer, type SpawnedRedis } from '@keypool/testkit';

export interface BenchRedis {
  url: string;
  kind: 'env' | 'spawned';
  /** The spawned server (its pid is what /proc sampling reads); absent for REDIS_URL. */
  server?: SpawnedRedis;
  /** host:port, and the pid of a spawned server. */
  display: string;
  /** Stops a spawned server; nothing for REDIS_URL. */
  stop(): Promise<void>;
}

/** REDIS_URL if set (unless `spawnAlways`), else a private redis-server. */
export async function openRedis(opts: { spawnAlways?: boolean } = {}): Promise<BenchRedis> {
  const env = process.env.REDIS_URL;
  if (env && !opts.spawnAlways) {
    const u = new URL(env);
    return { url: env, kind: 'env', display: `${u.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1'}:${u.port || '6379'}`, stop: async () => {} };
  }
  const server = await spawnRedisServer();
  return { url: server.url, kind: 'spawned', server, display: `${server.host}:${server.port} (pid ${server.process.pid})`, stop: server.stop };
}

/**
 * A client for the benchmark's own reads (INFO, SCAN, CONFIG): few retries, and its connection
 * errors surface through the rejected commands rather than as unhandled events.
 */
export function adminClient(url: string, opts: RedisOptions = { maxRetriesPerRequest: 1, lazyConnect: true }): Redis {
  const admin = new Redis(url, opts);
  admin.on('error', () => {});
  return admin;
}

/** UNLINK every key matching `pattern` (SCAN, never KEYS); the number deleted. */
export async function deleteKeys(admin: Redis, pattern: string): Promise<number> {
  let cursor = '0';
  let n = 0;
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    if (keys.length) n += await admin.unlink(...keys);
  } while (cursor !== '0');
  return n;
}

/** Delete one pool's keys from a shared (REDIS_URL) Redis, saying so; failures are logged, not thrown. */
export async function deletePoolKeys(admin: Redis, pool: string, log: (msg: string) => void): Promise<void> {
  try {
    const n = await deleteKeys(admin, new PoolKeys(pool).pattern);
    log(`deleted ${n} Redis keys of pool ${pool}`);
  } catch (e) {
    log(`could not delete the pool's Redis keys: ${(e as Error).message}`);
  }
}

export interface CmdStat {
  calls: number;
  usec: number;
}

export interface RedisSample {
  /** used_cpu_user + used_cpu_sys, seconds (NaN when the section read has no CPU lines) */
  cpu: number;
  /** total_commands_processed (NaN likewise) */
  commands: number;
  cmd: Map<string, CmdStat>;
}

/** One INFO read: `all` for CPU and command statistics, `commandstats` for the statistics alone. */
export async function sampleRedis(admin: Redis, section: 'all' | 'commandstats' = 'all'): Promise<RedisSample> {
  const text = await admin.info(section);
  let cpu = section === 'all' ? 0 : NaN;
  let commands = NaN;
  const cmd = new Map<string, CmdStat>();
  for (const line of text.split('\r\n')) {
    if (line.startsWith('used_cpu_user:') || line.startsWith('used_cpu_sys:')) cpu += Number(line.split(':')[1]);
    if (line.startsWith('total_commands_processed:')) commands = Number(line.split(':')[1]);
    const m = /^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/.exec(line);
    if (m) cmd.set(m[1]!, { calls: Number(m[2]), usec: Number(m[3]) });
  }
  return { cpu, commands, cmd };
}

export interface RedisDelta {
  cpuSeconds: number;
  commands: number;
  /** per command run between the samples (INFO itself left out unless asked) */
  byCommand: Record<string, CmdStat>;
}

/** What Redis did between two samples; `withInfo` keeps the benchmark's own INFO calls in byCommand. */
export function redisDelta(a: RedisSample, b: RedisSample, withInfo = false): RedisDelta {
  const byCommand: Record<string, CmdStat> = {};
  for (const [name, s] of b.cmd) {
    const before = a.cmd.get(name) ?? { calls: 0, usec: 0 };
    const calls = s.calls - before.calls;
    if (calls > 0 && (withInfo || name !== 'info')) byCommand[name] = { calls, usec: s.usec - before.usec };
  }
  return { cpuSeconds: b.cpu - a.cpu, commands: b.commands - a.commands, byCommand };
}
