/** Redis key names of one pool. All share the hash tag `{pool}` so every script runs on a Cluster. */
export class PoolKeys {
  readonly cfg: string;
  readonly st: string;
  readonly leases: string;
  readonly meta: string;
  readonly spend: string;
  /** Enforcement windows: every windowed key's admissions, ordered by member (lua/includes/window.lua). */
  readonly win: string;
  /** Traffic counters of the last 16 minutes, per second, class, tenant and key (lua/includes/series.lua). */
  readonly ser: string;
  /** The fleet's shared status snapshot (JSON, expires after 3 x status.snapshotMs). */
  readonly snap: string;
  /** When the snapshot was taken (Redis ms): what a process checks before using the copy it holds. */
  readonly snapAt: string;
  /** Who computes the next snapshot (SET NX PX): one process per interval. */
  readonly snapLock: string;
  /** Gateway tokens: sha256 hex -> settings JSON (see lua/includes/tokens.lua). */
  readonly tok: string;
  /** Gateway token id -> sha256 hex. */
  readonly tokId: string;
  /** Gateway token id -> state (msgpack). */
  readonly tokSt: string;
  /** Gateway token reservations, scored by expiry. */
  readonly tokRes: string;
  /** Scheduler: job name -> JSON of its schedule and last run (written by @keypool/worker). */
  readonly sched: string;
  /** Scheduler: job name:outcome -> runs (counters). */
  readonly schedRuns: string;
  /** Scheduler: a capped stream of run events (started / completed / failed), for ops and tests. */
  readonly schedLog: string;
  /** LLM queue: finished jobs and their waits (completed, failed, waitMs, c:<epoch minute>). */
  readonly queueStats: string;
  /** Prefix of the pool's BullMQ queues (scheduler, llm): the pool's hash tag, so its Cluster slot. */
  readonly bull: string;
  private readonly prefix: string;

  constructor(pool: string) {
    this.prefix = `kp:{${pool}}:`;
    this.cfg = `${this.prefix}cfg`;
    this.st = `${this.prefix}st`;
    this.leases = `${this.prefix}leases`;
    this.meta = `${this.prefix}meta`;
    this.spend = `${this.prefix}spend`;
    this.win = `${this.prefix}win`;
    this.ser = `${this.prefix}ser`;
    this.snap = `${this.prefix}snap`;
    this.snapAt = `${this.prefix}snap:at`;
    this.snapLock = `${this.prefix}snap:lock`;
    this.tok = `${this.prefix}tok`;
    this.tokId = `${this.prefix}tok:id`;
    this.tokSt = `${this.prefix}tok:st`;
    this.tokRes = `${this.prefix}tok:res`;
    this.sched = `${this.prefix}sched`;
    this.schedRuns = `${this.prefix}sched:runs`;
    this.schedLog = `${this.prefix}sched:log`;
    this.queueStats = `${this.prefix}queue:stats`;
    this.bull = `${this.prefix}bull`;
  }

  /** Candidate set of a key group (keys serving the same models). */
  avail(group: string): string {
    return `${this.prefix}g:${group}:avail`;
  }

  /** Keys of a group that wait for a time to become usable, scored by that time. */
  wait(group: string): string {
    return `${this.prefix}g:${group}:wait`;
  }

  /** A pattern matching every Redis key of this pool (for tests and tools). */
  get pattern(): string {
    return `${this.prefix}*`;
  }
}
