import type { Logger } from 'pino';

/** What a heartbeat needs of a lease. */
export interface Renewable {
  id: string;
  keyId: string;
  hint: string;
  /** Push the deadline out by the pool's leaseTimeoutMs; false when the lease expired or was released. */
  extend(): Promise<boolean>;
}

/**
 * Renew a lease every `everyMs` (a third of its timeout) until stopped, as BullMQ's lock extender
 * renews job locks: a lease lives as long as its holder does, so its deadline can be seconds and a
 * killed process's slots come back within it. The timer is unref'd (it never keeps a process up).
 *
 * A renewal that finds the lease gone (it expired: the holder stalled past its deadline, e.g. a
 * blocked event loop or Redis away that long) is logged as a warning and the heartbeat stops; the
 * call goes on (the provider has it already), and its release is then ignored, like any expired
 * lease's. A renewal that fails (Redis unreachable) is tried again at the next beat.
 *
 * Returns the function that stops it (idempotent).
 */
export function startHeartbeat(lease: Renewable, everyMs: number, log: Logger): () => void {
  let stopped = false;
  let beating = false;
  let failing = false;
  const timer = setInterval(() => {
    // one renewal at a time: beats do not pile up on a slow Redis
    if (beating || stopped) return;
    beating = true;
    lease.extend().then(
      (alive) => {
        beating = false;
        failing = false;
        if (alive || stopped) return;
        stop();
        log.warn({ keyId: lease.keyId, hint: lease.hint, leaseId: lease.id }, 'a lease expired before its holder renewed it: its slot was given back and its estimate charged; the call goes on, its release will be ignored');
      },
      (e: unknown) => {
        beating = false;
        // said once per outage: every lease in flight beats, and the Redis link logs the outage itself
        if (!failing && !stopped) log.warn({ keyId: lease.keyId, hint: lease.hint, err: (e as Error).message }, 'could not renew a lease; trying again at the next beat');
        failing = true;
      },
    );
  }, everyMs);
  timer.unref();
  function stop() {
    stopped = true;
    clearInterval(timer);
  }
  return stop;
}
