/**
 * One pool on one Cluster shard against the same pool split over three (issue 15, item 3).
 *
 *   npm run bench:shards                     readable report on stdout, progress on stderr
 *   npm run -s bench:shards -- --json        exactly one JSON object on stdout
 *
 * A private 3-master Redis Cluster (packages/testkit `startCluster`, redis-server processes on
 * free ports; or REDIS_CLUSTER_NODES), one ioredis `Cluster` client made here, and the same client
 * load for both layouts: `--concurrency` (default 64) async callers in this process, each looping
 * acquire -> release on a pool of `--keys` (default 24) keys with limits that never block:
 *   - partitions 1 (KeyPool.connect): the whole pool under one hash tag, so on one master;
 *   - partitions 3 (PartitionedPool.connect): three hash tags that land on the three masters, the
 *     keys' secrets drawn so that each partition holds the same number of keys.
 * The two runs alternate (1, 3, 3, 1 with `--passes 2`; the mean per layout is used), each after
 * `--warmup` seconds, measured over `--seconds`.
 *
 * Figures: leasesPerSec1Shard, leasesPerSec3Shards; for the 3-shard run, per master, the commands
 * Redis ran (INFO commandstats deltas: calls of every command, the scripts' own commands
 * included, INFO itself left out) and Redis CPU (INFO cpu) per lease served there;
 * shardSpread = most over fewest commands per master (target at most 1.15); and for the 1-shard
 * run the CPU per lease of its one master, the baseline the 3-shard figures are compared with.
 * This machine has 2 cores shared by the load generator and the three redis-servers: throughput
 * cannot triple here; what shows is that each shard's CPU per lease stays what one shard's is
 * and that the work is spread evenly.
 *
 * overAdmitted: a second, short run per layout on keys with a tight window (`--limit-rpm`,
 * default 600: 10 requests in any rolling second per key) under the same load, the callers asking
 * far more than the keys allow. Every admission's Redis time (the lease's acquiredAt, taken by the
 * acquire script) is kept per key and every rolling 1 s window is checked: an admission that makes
 * a window hold more than the quota counts once. Counted here rather than by the fake upstream:
 * going through HTTP would measure the HTTP stack, not the Redis side this benchmark is about.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Cluster, Redis } from 'ioredis';
import { pino } from 'pino';
import { KeyPool, PartitionedPool, hashSlot, keyIdOf, partitionOf, partitionTag, type KeySpecInput, type Lease } from '@keypool/core';
import { startCluster } from '@keypool/testkit';
import { int, parseBenchArgs } from './cli.js';
import { ClosedLoop, evenlySpaced } from './lib/load.js';
import { redisDelta, sampleRedis, type RedisSample } from './lib/redis.js';
import { fmt, logger, machine, printResult, table } from './lib/report.js';
import { mean, round } from './lib/stats.js';

const TARGETS = { shardSpread: 1.15, overAdmitted: 0 } as const;
const MODEL = 'gpt-4o-mini';
const ACQUIRE = { model: MODEL, estimatedTokens: 1000, estimatedOutputTokens: 300 };
const OUTCOME = { status: 200, latencyMs: 180, usage: { promptTokens: 640, completionTokens: 210 } };
const PARTS = 3;

const USAGE = `Usage: tsx scripts/bench/shards.ts [options]   (npm run bench:shards -- [options])
  --json                 print one JSON object on stdout (progress and logs go to stderr)
  --seconds N            measurement window of each throughput run, seconds (default 5)
  --warmup N             warm-up before each window, seconds (default 1)
  --concurrency N        concurrent callers (default 64)
  --keys N               keys in the pool, a multiple of 3 (default 24)
  --passes N             passes over the two layouts, alternating order (default 2)
  --limit-seconds N      each overAdmitted run, seconds (default 3)
  --limit-rpm N          the keys' rpm in the overAdmitted runs, window 1 s (default 600)
  -h, --help             this text
Redis: a private 3-master cluster of redis-server processes, or REDIS_CLUSTER_NODES (host:port,...).`;

function parseCli() {
  const v = parseBenchArgs(USAGE, { seconds: '5', warmup: '1', concurrency: '64', keys: '24', passes: '2', 'limit-seconds': '3', 'limit-rpm': '600' });
  const keys = int('keys', v.keys, 3, 3000);
  if (keys % PARTS !== 0) throw new Error(`--keys must be a multiple of ${PARTS}, got "${v.keys}"`);
  return {
    json: v.json,
    seconds: int('seconds', v.seconds, 1, 600),
    warmup: int('warmup', v.warmup, 0, 60),
    concurrency: int('concurrency', v.concurrency, 1, 10_000),
    keys,
    passes: int('passes', v.passes, 1, 10),
    limitSeconds: int('limit-seconds', v['limit-seconds'], 2, 60),
    limitRpm: int('limit-rpm', v['limit-rpm'], 60, 600_000),
  };
}
type Options = ReturnType<typeof parseCli>;

/** `n` key specs, `n / parts` in each partition (secrets drawn until one lands where it is missing). */
function keySpecs(n: number, parts: number, limits: Partial<KeySpecInput>): KeySpecInput[] {
  const out: KeySpecInput[] = [];
  const per = new Array<number>(parts).fill(0);
  for (let i = 0; out.length < n; i++) {
    const secret = `sk-bench-shards-${String(i).padStart(5, '0')}-${randomBytes(6).toString('hex')}`;
    const p = partitionOf(keyIdOf(secret), parts);
    if (per[p]! >= n / parts) continue;
    per[p]!++;
    out.push({ secret, name: `bench ${out.length}`, models: [MODEL], tpm: 0, maxConcurrent: 0, ...limits });
  }
  return out;
}

interface Shard {
  addr: string;
  admin: Redis;
}

interface ShardFigures {
  shard: string;
  /** partitions of the pool on this master */
  partitions: number[];
  leases: number;
  commands: number;
  redisCpuPerLeaseUs: number | null;
  /** usec Redis spent running commands (INFO commandstats), per lease: the work itself, without the I/O and wake-ups */
  redisExecUsPerLease: number | null;
}

interface Run {
  partitions: number;
  leasesPerSec: number;
  errors: number;
  exhausted: number;
  /** this process's CPU (the load generator and the pool's client side) per lease */
  nodeCpuPerLeaseUs: number;
  shards: ShardFigures[];
}

type AnyPool = KeyPool | PartitionedPool;

async function connectPool(client: Cluster, name: string, partitions: number, keys: KeySpecInput[]): Promise<AnyPool> {
  const log = pino({ level: 'warn' }, pino.destination(2));
  const config = { pool: name, partitions, keys, status: { snapshotMs: 0 } };
  return partitions === 1 ? KeyPool.connect({ redis: client, config, logger: log }) : PartitionedPool.connect({ redis: client, config, logger: log });
}

/** The master (host:port) serving a hash tag, from the client's slot map. */
function masterOf(client: Cluster, tag: string): string {
  return client.slots[hashSlot(tag)]![0]!;
}

/**
 * Commands of a delta (INFO, the benchmark's own, left out), and the usec Redis spent running those
 * the client sent (a script's own commands are counted in commandstats too, but their time is inside
 * the script's: counting both would count it twice).
 */
function commandsOf(a: RedisSample, b: RedisSample): { calls: number; usec: number } {
  const d = redisDelta(a, b);
  let usec = 0;
  let calls = 0;
  for (const [name, c] of Object.entries(d.byCommand)) {
    calls += c.calls;
    if (SENT_BY_CLIENT.has(name)) usec += c.usec;
  }
  return { calls, usec };
}
/** What the pool sends itself during a run: the scripts, the free-capacity reads, the topology reads. */
const SENT_BY_CLIENT = new Set(['evalsha', 'eval', 'fcall', 'scard', 'hscan']);

async function throughputRun(client: Cluster, shards: Shard[], opts: Options, partitions: number, runId: string, log: (m: string) => void): Promise<Run> {
  const name = `bench-shards-${runId}-${partitions}`;
  const keys = keySpecs(opts.keys, partitions, { rpm: 10_000_000, rpmBurst: 10_000_000 });
  const pool = await connectPool(client, name, partitions, keys);
  const partOfKey = (id: string) => partitionOf(id, partitions);
  const leasesByPart = new Array<number>(partitions).fill(0);
  let leases = 0;
  let errors = 0;
  let exhausted = 0;
  let firstError: unknown;
  const loop = new ClosedLoop(opts.concurrency, async (l) => {
    try {
      const lease = await pool.acquire(ACQUIRE);
      if (!lease.ok) {
        if (l.measuring) exhausted++;
        await sleep(1);
        return;
      }
      await lease.release(OUTCOME);
      if (l.measuring) {
        leases++;
        leasesByPart[partOfKey(lease.keyId)]!++;
      }
    } catch (e) {
      if (l.measuring) errors++;
      firstError ??= e;
      await sleep(5);
    }
  });
  await sleep(opts.warmup * 1000);
  const before = await Promise.all(shards.map((s) => sampleRedis(s.admin)));
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  loop.measure();
  await sleep(opts.seconds * 1000);
  const after = await Promise.all(shards.map((s) => sampleRedis(s.admin)));
  const elapsed = (performance.now() - t0) / 1000;
  const c1 = process.cpuUsage(c0);
  await loop.stop();
  if (firstError) log(`first error: ${(firstError as Error).message}`);
  const tags = Array.from({ length: partitions }, (_, p) => partitionTag(name, p, partitions));
  const figures = shards.map((s, i): ShardFigures => {
    const mine = tags.flatMap((t, p) => (masterOf(client, t) === s.addr ? [p] : []));
    const served = mine.reduce((sum, p) => sum + leasesByPart[p]!, 0);
    const cpuUs = (after[i]!.cpu - before[i]!.cpu) * 1e6;
    const c = commandsOf(before[i]!, after[i]!);
    const per = (x: number) => (served > 0 ? round(x / served, 1) : null);
    return { shard: s.addr, partitions: mine, leases: served, commands: c.calls, redisCpuPerLeaseUs: per(cpuUs), redisExecUsPerLease: per(c.usec) };
  });
  await pool.close();
  await deletePool(shards, name, partitions);
  log(`partitions ${partitions}: ${fmt(leases / elapsed)} leases/s, errors ${errors}, exhausted ${exhausted}`);
  return { partitions, leasesPerSec: Math.round(leases / elapsed), errors, exhausted, nodeCpuPerLeaseUs: round((c1.user + c1.system) / Math.max(1, leases), 1), shards: figures };
}

/**
 * The 1-shard layout offered `rate` leases a second (open loop, evenly spaced): what one shard's
 * Redis CPU per lease is at the rate each shard of the 3-shard runs served (Redis CPU per lease
 * falls as its rate rises: more commands per wake-up), the like-for-like baseline.
 */
async function matchedRun(client: Cluster, shards: Shard[], opts: Options, rate: number, runId: string, log: (m: string) => void) {
  const name = `bench-shards-${runId}-matched`;
  const pool = await connectPool(client, name, 1, keySpecs(opts.keys, 1, { rpm: 10_000_000, rpmBurst: 10_000_000 }));
  const shard = shards.findIndex((s) => s.addr === masterOf(client, name));
  let leases = 0;
  let measuring = false;
  let stop = false;
  const inFlight = new Set<Promise<void>>();
  const fire = () => {
    const p = (async () => {
      const l = await pool.acquire(ACQUIRE);
      if (!l.ok) return;
      await l.release(OUTCOME);
      if (measuring) leases++;
    })().catch(() => undefined);
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
  };
  const total = Math.ceil(rate * (opts.warmup + opts.seconds + 1));
  const t0 = performance.now();
  const sending = evenlySpaced(total, 1000 / rate, t0, fire, () => stop);
  await sleep(opts.warmup * 1000);
  const before = await sampleRedis(shards[shard]!.admin);
  const m0 = performance.now();
  measuring = true;
  await sleep(opts.seconds * 1000);
  const after = await sampleRedis(shards[shard]!.admin);
  const elapsed = (performance.now() - m0) / 1000;
  measuring = false;
  stop = true;
  await sending;
  await Promise.all(inFlight);
  await pool.close();
  await deletePool(shards, name, 1);
  const c = commandsOf(before, after);
  log(`partitions 1 at ${fmt(rate)} leases/s offered: ${fmt(leases / elapsed)} served`);
  return {
    offeredPerSec: Math.round(rate),
    leasesPerSec: Math.round(leases / elapsed),
    redisCpuPerLeaseUs: round(((after.cpu - before.cpu) * 1e6) / Math.max(1, leases), 1),
    redisExecUsPerLease: round(c.usec / Math.max(1, leases), 1),
  };
}

/** Admissions over a key's quota in any rolling window of `windowMs` (each counted once). */
function overQuota(byKey: Map<string, number[]>, quota: number, windowMs: number): number {
  let over = 0;
  for (const times of byKey.values()) {
    times.sort((a, b) => a - b);
    for (let i = quota; i < times.length; i++) if (times[i]! - times[i - quota]! < windowMs) over++;
  }
  return over;
}

async function limitRun(client: Cluster, shards: Shard[], opts: Options, partitions: number, runId: string, log: (m: string) => void) {
  const name = `bench-shards-${runId}-lim${partitions}`;
  const keys = keySpecs(opts.keys, partitions, { rpm: opts.limitRpm, window: 1 });
  const pool = await connectPool(client, name, partitions, keys);
  const byKey = new Map<string, number[]>();
  let admitted = 0;
  let refused = 0;
  const loop = new ClosedLoop(opts.concurrency, async () => {
    try {
      const r = await pool.acquire(ACQUIRE);
      if (!r.ok) {
        refused++;
        await sleep(2);
        return;
      }
      admitted++;
      const list = byKey.get(r.keyId) ?? [];
      list.push((r as Lease).acquiredAt);
      byKey.set(r.keyId, list);
      await r.release(OUTCOME);
    } catch {
      await sleep(5);
    }
  });
  loop.measure();
  await sleep(opts.limitSeconds * 1000);
  await loop.stop();
  await pool.close();
  await deletePool(shards, name, partitions);
  const quota = Math.floor(opts.limitRpm / 60);
  const over = overQuota(byKey, quota, 1000);
  const capacity = (opts.keys * quota * opts.limitSeconds) | 0;
  log(`limits, partitions ${partitions}: admitted ${admitted} (keys allow about ${capacity}), refused ${refused}, over the quota ${over}`);
  return { partitions, admitted, refused, overAdmitted: over, quotaPerKeyPerSecond: quota };
}

async function deletePool(shards: Shard[], name: string, partitions: number): Promise<void> {
  for (let p = 0; p < partitions; p++) {
    const pattern = `kp:{${partitionTag(name, p, partitions)}}:*`;
    for (const s of shards) {
      let cursor = '0';
      do {
        const [next, keys] = await s.admin.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
        cursor = next;
        if (keys.length) await s.admin.del(...keys);
      } while (cursor !== '0');
    }
  }
}

async function main() {
  const opts = parseCli();
  const log = logger('bench:shards');
  const started = await startCluster();
  const nodes = started.nodes;
  log(`cluster ${nodes.map((n) => `${n.host}:${n.port}`).join(',')}`);
  const client = new Cluster(nodes, {
    enableOfflineQueue: true,
    redisOptions: { enableAutoPipelining: false, maxRetriesPerRequest: 1, commandTimeout: 5000 },
    slotsRefreshTimeout: 5000,
  });
  const shards: Shard[] = nodes.map((n) => ({ addr: `${n.host}:${n.port}`, admin: new Redis({ host: n.host, port: n.port, lazyConnect: true, maxRetriesPerRequest: 1 }) }));
  try {
    await Promise.all(shards.map((s) => s.admin.connect()));
    await client.ping();
    // the client's slot map names masters by host:port as the nodes announce them
    const masters = new Set(client.nodes('master').map((n) => `${n.options.host}:${n.options.port}`));
    for (const s of shards) if (!masters.has(s.addr)) log(`note: ${s.addr} is not a master in the client's slot map`);
    const runId = randomBytes(3).toString('hex');
    const runs: Run[] = [];
    for (let pass = 0; pass < opts.passes; pass++) {
      const order = pass % 2 === 0 ? [1, PARTS] : [PARTS, 1];
      for (const parts of order) runs.push(await throughputRun(client, shards, opts, parts, `${runId}${pass}`, log));
    }
    const one = runs.filter((r) => r.partitions === 1);
    const three = runs.filter((r) => r.partitions === PARTS);
    const perShardRate = mean(three.map((r) => r.leasesPerSec)) / PARTS;
    const matched = await matchedRun(client, shards, opts, perShardRate, runId, log);
    const limits: Awaited<ReturnType<typeof limitRun>>[] = [];
    for (const parts of [1, PARTS]) limits.push(await limitRun(client, shards, opts, parts, runId, log));

    // per shard, summed over the 3-shard runs (commands, leases, CPU per lease: mean of runs)
    const perShard = shards.map((s) => {
      const rows = three.map((r) => r.shards.find((x) => x.shard === s.addr)!);
      const cpu = rows.map((x) => x.redisCpuPerLeaseUs).filter((x): x is number => x !== null);
      const exec = rows.map((x) => x.redisExecUsPerLease).filter((x): x is number => x !== null);
      return {
        shard: s.addr,
        partitions: rows[0]!.partitions,
        leases: rows.reduce((a, x) => a + x.leases, 0),
        commands: rows.reduce((a, x) => a + x.commands, 0),
        redisCpuPerLeaseUs: cpu.length ? round(mean(cpu), 1) : null,
        redisExecUsPerLease: exec.length ? round(mean(exec), 1) : null,
      };
    });
    const oneShardCpu = one.flatMap((r) => r.shards.filter((x) => x.leases > 0).map((x) => x.redisCpuPerLeaseUs!));
    const oneShardExec = one.flatMap((r) => r.shards.filter((x) => x.leases > 0).map((x) => x.redisExecUsPerLease!));
    const leasesOne = one.reduce((a, r) => a + r.shards.reduce((b, x) => b + x.leases, 0), 0);
    const commandsOne = one.reduce((a, r) => a + r.shards.reduce((b, x) => b + x.commands, 0), 0);
    const leasesThree = perShard.reduce((a, s) => a + s.leases, 0);
    const commandsThree = perShard.reduce((a, s) => a + s.commands, 0);
    const cmds = perShard.map((s) => s.commands);
    const shardSpread = round(Math.max(...cmds) / Math.max(1, Math.min(...cmds)), 3);
    const overAdmitted = limits.reduce((a, l) => a + l.overAdmitted, 0);
    const result = {
      benchmark: 'shards',
      machine: machine(),
      options: opts,
      leasesPerSec1Shard: Math.round(mean(one.map((r) => r.leasesPerSec))),
      leasesPerSec3Shards: Math.round(mean(three.map((r) => r.leasesPerSec))),
      commandsPerShard: Object.fromEntries(perShard.map((s) => [s.shard, s.commands])),
      shardSpread,
      redisCpuPerLeaseUs: {
        oneShard: oneShardCpu.length ? round(mean(oneShardCpu), 1) : null,
        oneShardAtShardRate: matched.redisCpuPerLeaseUs,
        threeShards: Object.fromEntries(perShard.map((s) => [s.shard, s.redisCpuPerLeaseUs])),
      },
      redisExecUsPerLease: {
        oneShard: oneShardExec.length ? round(mean(oneShardExec), 1) : null,
        oneShardAtShardRate: matched.redisExecUsPerLease,
        threeShards: Object.fromEntries(perShard.map((s) => [s.shard, s.redisExecUsPerLease])),
      },
      commandsPerLease: { oneShard: round(commandsOne / Math.max(1, leasesOne), 2), threeShards: round(commandsThree / Math.max(1, leasesThree), 2) },
      nodeCpuPerLeaseUs: { oneShard: round(mean(one.map((r) => r.nodeCpuPerLeaseUs)), 1), threeShards: round(mean(three.map((r) => r.nodeCpuPerLeaseUs)), 1) },
      overAdmitted,
      targets: TARGETS,
      met: { shardSpread: shardSpread <= TARGETS.shardSpread, overAdmitted: overAdmitted === TARGETS.overAdmitted },
      detail: { perShard, runs, matched, limits },
    };
    printResult(result, opts.json, (r) =>
      [
        `leases/s: 1 shard ${fmt(r.leasesPerSec1Shard)}, 3 shards ${fmt(r.leasesPerSec3Shards)} (${fmt(opts.concurrency)} callers, ${opts.keys} keys)`,
        table([
          ['shard', 'partitions', 'leases', 'commands', 'Redis CPU/lease us', 'Redis exec/lease us'],
          ...perShard.map((s) => [s.shard, s.partitions.join(',') || '-', fmt(s.leases), fmt(s.commands), fmt(s.redisCpuPerLeaseUs, 1), fmt(s.redisExecUsPerLease, 1)]),
          ['1 shard, same load', '0', '', '', fmt(r.redisCpuPerLeaseUs.oneShard, 1), fmt(r.redisExecUsPerLease.oneShard, 1)],
          [`1 shard at ${fmt(matched.offeredPerSec)}/s`, '0', '', '', fmt(matched.redisCpuPerLeaseUs, 1), fmt(matched.redisExecUsPerLease, 1)],
        ]),
        `commands per lease: 1 shard ${fmt(r.commandsPerLease.oneShard, 2)}, 3 shards ${fmt(r.commandsPerLease.threeShards, 2)}; this process's CPU per lease: ${fmt(r.nodeCpuPerLeaseUs.oneShard, 1)} us, ${fmt(r.nodeCpuPerLeaseUs.threeShards, 1)} us`,
        `shardSpread ${fmt(r.shardSpread, 3)} (target <= ${TARGETS.shardSpread}: ${r.met.shardSpread ? 'met' : 'MISSED'})`,
        `overAdmitted ${r.overAdmitted} (${limits.map((l) => `partitions ${l.partitions}: ${l.admitted} admitted`).join('; ')}; target 0: ${r.met.overAdmitted ? 'met' : 'MISSED'})`,
      ].join('\n'),
    );
  } finally {
    client.disconnect();
    for (const s of shards) s.admin.disconnect();
    await started.stop();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:shards failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
