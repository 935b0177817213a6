import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { PoolCommands } from './commands.js';
import type { PoolSeries, SeriesReader } from './series.js';
import { toPoolStatus, type PoolStatus, type RawKeyStatus, type RawStatus } from './status.js';

/** Most ids per statusPage (and housekeepKeys) call; the script stops earlier when its time budget is spent. */
export const KEY_PAGE = 16;
/** How long the process that took the lock may take to compute a snapshot before another may. */
const LOCK_MS = 5000;
/**
 * A process that finds no snapshot while another computes one waits for it as long as the lock may be held
 * (a slow computation under load is not done twice), then computes its own.
 */
const WAIT_MS = LOCK_MS;
const POLL_MS = 25;

/** What the fleet shares: the status with no per-process part (Redis link, destinations), and when it was read. */
interface Shared {
  takenAt: number;
  status: Omit<PoolStatus, 'redis' | 'snapshot'>;
  /** The charts' per-second counts of the last 15 minutes (absent from a snapshot stored by an older version). */
  series?: PoolSeries;
}

/**
 * Work through `ids` with a script that takes up to KEY_PAGE of them and answers how many it did
 * (it stops when its time budget is spent), one call after another: never a pipeline, since Redis
 * runs a client's pipelined commands back to back, which would be one long stall again.
 */
export async function inPages<R extends { done: number }>(ids: readonly string[], call: (page: string[]) => Promise<R>, each: (r: R) => void): Promise<void> {
  for (let at = 0; at < ids.length; ) {
    const r = await call(ids.slice(at, at + KEY_PAGE));
    each(r);
    at += Math.max(1, r.done);
  }
}

/** The keys `ids` (those still in the pool) as statusPage computes them. */
export async function readKeys(cmd: PoolCommands, ids: readonly string[]): Promise<RawKeyStatus[]> {
  const keys: RawKeyStatus[] = [];
  await inPages(ids, (page) => cmd.statusPage(page), (r) => keys.push(...r.keys));
  return keys;
}

/**
 * The whole pool's status read in small steps, one after another: the pool-wide figures
 * (statusHead), the key ids (HSCAN of cfg), the keys a few at a time (statusPage), the expired
 * leases (ZRANGEBYSCORE pages). A key added while this runs may be missing, one removed is
 * skipped; every other key is there once.
 */
export async function readStatus(cmd: PoolCommands): Promise<RawStatus> {
  const head = await cmd.statusHead();
  const keys = await readKeys(cmd, (await cmd.records(true)).map((r) => r.id));
  const expired = await cmd.expiredLeases(head.now);
  for (const k of keys) {
    // a lease past its deadline (its holder died) is not in flight, though only acquire and
    // housekeeping give it back; those of a removed key's earlier life do not count
    const n = (expired.get(k.id) ?? []).filter((seq) => seq > k.st.cs).length;
    if (n > 0) k.st.inf = Math.max(0, k.st.inf - n);
  }
  return { now: head.now, version: head.version, leases: head.leases, spend: head.spend, keys };
}

/**
 * The pool status as the fleet shares it. One process per `snapshotMs` computes it
 * (readStatus) and stores it in Redis (`kp:{pool}:snap`, with its time in `snap:at`; SET NX PX on
 * `snap:lock` chooses that process); every other reader of the fleet gets that copy. A process
 * keeps the copy it read and checks only the small `snap:at` before using it again, so N
 * dashboards, probes and scrapes cost one computation per interval and one small read each, and a
 * forgotten snapshot (an admin write) is seen by every process at its next read. snapshotMs 0:
 * every read computes its own.
 */
export class StatusView {
  private local: Shared | undefined;
  private reading: Promise<{ shared: Shared; ageMs: number }> | undefined;

  constructor(
    private readonly name: string,
    private readonly cmd: PoolCommands,
    private readonly snapshotMs: number,
    private readonly traffic?: SeriesReader,
  ) {}

  /** The shared status and its age (ms). `fresh`: computed now (and shared). */
  async get(fresh = false): Promise<{ shared: Shared; ageMs: number }> {
    if (fresh || this.snapshotMs === 0) {
      // shared only when no other process is computing one (else its, taken earlier, would follow)
      const token = this.snapshotMs > 0 ? await this.cmd.snapshotLock(LOCK_MS) : null;
      return this.own(await this.compute(token));
    }
    // callers of one process share one read
    this.reading ??= this.read().finally(() => (this.reading = undefined));
    return this.reading;
  }

  /** Drop the snapshot here and in Redis (a key changed): the next read computes a new one. */
  async forget(): Promise<void> {
    this.local = undefined;
    if (this.snapshotMs > 0) await this.cmd.snapshotForget();
  }

  private async read(): Promise<{ shared: Shared; ageMs: number }> {
    const waitUntil = performance.now() + WAIT_MS;
    for (;;) {
      const { stamp, age } = await this.stamp();
      const copy = stamp && age < this.snapshotMs ? await this.copy(stamp.takenAt, age) : undefined;
      if (copy) return copy;
      const token = await this.cmd.snapshotLock(LOCK_MS);
      if (token) {
        // the process that held the lock may have stored its snapshot (and freed the lock) between our
        // look and our lock: use that one, and give the lock back (CI saw two computations in 224 ms)
        const again = await this.stamp();
        if (again.stamp && again.age < this.snapshotMs) {
          await this.cmd.snapshotUnlock();
          const theirs = await this.copy(again.stamp.takenAt, again.age);
          if (theirs) return theirs;
          continue;
        }
        try {
          return this.own(await this.compute(token));
        } catch (e) {
          await this.cmd.snapshotForget().catch(() => undefined);
          throw e;
        }
      }
      // another process is computing the next one: the last one until then
      const last = stamp ? await this.copy(stamp.takenAt, age) : undefined;
      if (last) return last;
      // none at all (first read, or forgotten): wait for it a little, then compute our own (not shared)
      if (performance.now() > waitUntil) return this.own(await this.compute(null));
      await sleep(POLL_MS);
    }
  }

  /**
   * The shared snapshot's stamp and age (Infinity: none). It was stored for `ttl` ms (by a process
   * whose snapshotMs may differ), `offset` ms after it was taken: its age is what has gone of that
   * life, plus the offset.
   */
  private async stamp(): Promise<{ stamp: Awaited<ReturnType<PoolCommands['snapshotStamp']>>; age: number }> {
    const stamp = await this.cmd.snapshotStamp();
    const age = stamp ? (stamp.pttl >= 0 ? Math.max(0, stamp.ttl - stamp.pttl) : stamp.ttl) + stamp.offset : Infinity;
    return { stamp, age };
  }

  /** The snapshot taken at `takenAt`: the one kept here, or read from Redis (undefined: gone meanwhile). */
  private async copy(takenAt: number, ageMs: number): Promise<{ shared: Shared; ageMs: number } | undefined> {
    if (this.local?.takenAt === takenAt) return { shared: this.local, ageMs: Math.round(ageMs) };
    const raw = await this.cmd.snapshotRead();
    return raw === null ? undefined : this.keep(JSON.parse(raw) as Shared, ageMs);
  }

  /**
   * The status read now, and how long ago it was taken (the pages after the head); shared when
   * `token` (the lock's) still holds the right to (an admin write meanwhile forgot it: not shared).
   */
  private async compute(token: string | null): Promise<{ shared: Shared; ageMs: number }> {
    const t0 = performance.now();
    const raw = await readStatus(this.cmd);
    const { redis: _redis, ...status } = toPoolStatus(this.name, { ok: true, policy: '' }, raw);
    const shared: Shared = { takenAt: raw.now, status };
    if (this.traffic) {
      // the traffic counters: only the seconds this process has not read yet
      await this.traffic.refresh(raw.now, raw.keys);
      status.traffic = this.traffic.traffic(raw.now);
      const labels = new Map(status.keys.map((k) => [k.id, k.name ?? k.hint]));
      shared.series = this.traffic.series(raw.now, (id) => labels.get(id) ?? id);
    }
    const ageMs = performance.now() - t0;
    if (token) await this.cmd.snapshotWrite(token, JSON.stringify(shared), shared.takenAt, ageMs, 3 * this.snapshotMs);
    return { shared, ageMs };
  }

  private own(c: { shared: Shared; ageMs: number }): { shared: Shared; ageMs: number } {
    return this.keep(c.shared, c.ageMs);
  }

  private keep(shared: Shared, ageMs: number): { shared: Shared; ageMs: number } {
    this.local = shared;
    return { shared, ageMs: Math.round(ageMs) };
  }
}
