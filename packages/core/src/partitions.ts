import type { Cluster, Redis } from 'ioredis';
import { ConfigError } from './errors.js';
import { PoolKeys } from './pool-keys.js';

/** Redis Cluster's slot count. */
const SLOTS = 16384;

/** CRC16 (XMODEM), as Redis Cluster computes the slot of a hash tag (cluster spec, "Key distribution model"). */
export function hashSlot(tag: string): number {
  let crc = 0;
  for (const b of Buffer.from(tag)) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc % SLOTS;
}

const tags = new Map<string, string>();

/**
 * The hash tag of partition `p` of a pool split into `n`: the pool's name for partition 0 (so a pool
 * of one partition keeps today's key names), `<pool>~<p>-<i>` for the others, `i` the first suffix
 * whose slot lies within 16 slots of `slot(pool) + p x 16384 / n`. The partitions' slots are thus
 * spread evenly round the slot space: a Cluster whose masters own equal ranges of slots (what
 * `redis-cli --cluster create` gives) holds the n partitions on n different masters when it has
 * n of them, and as evenly as slots allow otherwise. `~` is not allowed in a pool name, so no pool's
 * tag is another's partition.
 */
export function partitionTag(pool: string, p: number, n: number): string {
  if (p === 0) return pool;
  const memo = `${pool}\n${p}\n${n}`;
  const known = tags.get(memo);
  if (known) return known;
  const target = (hashSlot(pool) + Math.round((p * SLOTS) / n)) % SLOTS;
  let best = '';
  let bestDistance = Infinity;
  for (let i = 0; i < 65536 && bestDistance > 16; i++) {
    const tag = `${pool}~${p}-${i}`;
    const d = Math.abs(hashSlot(tag) - target);
    const distance = Math.min(d, SLOTS - d);
    if (distance < bestDistance) [best, bestDistance] = [tag, distance];
  }
  tags.set(memo, best);
  return best;
}

/** The partition a key lives in: FNV-1a of its id, modulo the partition count (stable while the count is). */
export function partitionOf(keyId: string, n: number): number {
  if (n <= 1) return 0;
  let h = 0x811c9dc5;
  for (let i = 0; i < keyId.length; i++) {
    h ^= keyId.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % n;
}

/**
 * The partition count a pool was created with is kept in partition 0's meta hash (`parts`; absent:
 * 1). A process configured with another count would look for keys in partitions they are not in,
 * so it is refused. A pool of one partition that already holds keys cannot become partitioned
 * under the same name either (its keys are all in partition 0): a new pool name is the way.
 */
export async function checkPartitionCount(client: Redis | Cluster, pool: string, n: number): Promise<void> {
  const k = new PoolKeys(pool);
  const refuse = (had: number) =>
    new ConfigError(
      [
        {
          path: 'partitions',
          message: `pool "${pool}" was created with partitions: ${had} and this config says ${n}; keys cannot move between partitions: set partitions: ${had}, or use a new pool name for ${n} partitions`,
        },
      ],
      'keypool config',
    );
  const stored = await client.hget(k.meta, 'parts');
  if (stored !== null) {
    if (Number(stored) !== n) throw refuse(Number(stored));
    return;
  }
  if (n === 1) return;
  if ((await client.hlen(k.cfg)) > 0) throw refuse(1);
  // the first process of a partitioned pool; another one racing it with another count loses here
  await client.hsetnx(k.meta, 'parts', String(n));
  const now = Number(await client.hget(k.meta, 'parts'));
  if (now !== n) throw refuse(now);
}
