/** Partition tags and key placement (partitions.ts): stable, spread round the Cluster's slots, never another pool's tag. */
import { describe, expect, it } from 'vitest';
import { hashSlot, partitionOf, partitionTag } from '../src/index.js';

describe('partitions', () => {
  it('computes the slot Redis Cluster gives a tag (CLUSTER KEYSLOT figures)', () => {
    // redis-cli CLUSTER KEYSLOT foo -> 12182, bar -> 5061, 123456789 -> 12739 (the spec's check value 0x31C3)
    expect(hashSlot('foo')).toBe(12182);
    expect(hashSlot('bar')).toBe(5061);
    expect(hashSlot('123456789')).toBe(0x31c3 % 16384);
  });

  it('keeps the pool name as partition 0 and spreads the others evenly round the slots', () => {
    for (const pool of ['default', 'bench', 'p-1']) {
      expect(partitionTag(pool, 0, 3)).toBe(pool);
      const slots = [0, 1, 2].map((p) => hashSlot(partitionTag(pool, p, 3)));
      for (const p of [1, 2]) {
        const want = (slots[0]! + Math.round((p * 16384) / 3)) % 16384;
        const d = Math.abs(slots[p]! - want);
        expect(Math.min(d, 16384 - d)).toBeLessThanOrEqual(16);
        // '~' cannot be in a pool name: no pool's tag is another's partition
        expect(partitionTag(pool, p, 3)).toMatch(new RegExp(`^${pool}~${p}-\\d+$`));
      }
      // on a 3-master cluster of equal slot ranges, each partition is on its own master
      const master = (s: number) => Math.floor((s * 3) / 16384);
      const relative = slots.map((s) => master((s - slots[0]! + 16384 + 16) % 16384));
      expect(new Set(relative).size).toBe(3);
    }
  });

  it('places a key by its id, stably, in every partition', () => {
    const counts = [0, 0, 0];
    for (let i = 0; i < 3000; i++) {
      const id = i.toString(16).padStart(16, '0');
      const p = partitionOf(id, 3);
      expect(partitionOf(id, 3)).toBe(p);
      counts[p]!++;
    }
    for (const c of counts) expect(c).toBeGreaterThan(800);
    expect(partitionOf('abc', 1)).toBe(0);
  });
});
