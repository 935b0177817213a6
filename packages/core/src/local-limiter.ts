import { systemClock, type Clock } from './clock.js';
import type { KeyRecord } from './records.js';
import type { OutcomeClass } from './outcome.js';

interface LocalState {
  rt: number;
  tt: number;
  ts: number;
  inf: number;
  coolUntil: number;
  revoked: boolean;
}

export type LocalAcquire =
  | { ok: true; key: KeyRecord }
  | { ok: false; reason: 'rate_limited' | 'concurrency' | 'cooling' | 'unavailable'; retryAfterMs: number | null };

/**
 * Per-process limits used only while Redis is unreachable and `redisDown.policy` is `local`:
 * each process takes 1/fleetSize of every key's rpm, tpm, bursts and concurrency, so a fleet
 * of that size stays within the key's rates without talking to each other. Each process keeps at
 * least one request of burst and one concurrency slot per key, so a fleet larger than a key's
 * burst or maxConcurrent can exceed those two while Redis is down. No breaker, no budgets (spend
 * cannot be shared without Redis), no health: this is a degraded mode, and it says so.
 */
export class LocalLimiter {
  private readonly state = new Map<string, LocalState>();

  constructor(
    private readonly fleetSize: number,
    private readonly clock: Clock = systemClock,
  ) {}

  private share(n: number): number {
    return n > 0 ? Math.max(1, n / this.fleetSize) : 0;
  }

  private stateOf(key: KeyRecord, now: number): LocalState {
    let s = this.state.get(key.id);
    if (!s) {
      s = { rt: this.share(key.rb), tt: this.share(key.tb), ts: now, inf: 0, coolUntil: 0, revoked: false };
      this.state.set(key.id, s);
    }
    const dt = now - s.ts;
    if (dt > 0) {
      if (key.rpm > 0) s.rt = Math.min(this.share(key.rb), s.rt + (dt * key.rpm) / this.fleetSize / 60000);
      if (key.tpm > 0) s.tt = Math.min(this.share(key.tb), s.tt + (dt * key.tpm) / this.fleetSize / 60000);
      s.ts = now;
    }
    return s;
  }

  acquire(keys: KeyRecord[], est: number, exclude: ReadonlySet<string>, now = this.clock.now()): LocalAcquire {
    let soonest: number | null = null;
    let reason = 'rate_limited' as 'rate_limited' | 'concurrency' | 'cooling';
    const usable: KeyRecord[] = [];
    for (const k of keys) {
      if (exclude.has(k.id)) continue;
      const s = this.stateOf(k, now);
      if (s.revoked) continue;
      // this process's share of the token bucket can never hold the request: not this key
      if (k.tpm > 0 && est > this.share(k.tb)) continue;
      let until = now;
      let why: 'rate_limited' | 'concurrency' | 'cooling' = 'rate_limited';
      if (s.coolUntil > now) [until, why] = [s.coolUntil, 'cooling'];
      else if (k.mc > 0 && s.inf >= Math.ceil(k.mc / this.fleetSize)) [until, why] = [now + 100, 'concurrency'];
      else if (k.rpm > 0 && s.rt < 1) until = now + ((1 - s.rt) * 60000 * this.fleetSize) / k.rpm;
      else if (k.tpm > 0 && s.tt < est) until = now + ((est - s.tt) * 60000 * this.fleetSize) / k.tpm;
      if (until <= now) usable.push(k);
      else if (soonest === null || until < soonest) [soonest, reason] = [until, why];
    }
    if (usable.length === 0) {
      return soonest === null
        ? { ok: false, reason: 'unavailable', retryAfterMs: null }
        : { ok: false, reason, retryAfterMs: Math.ceil(soonest - now) };
    }
    let r = Math.random() * usable.reduce((a, k) => a + k.w * (k.rpm || 1000), 0);
    let key = usable[0]!;
    for (const k of usable) {
      r -= k.w * (k.rpm || 1000);
      if (r <= 0) {
        key = k;
        break;
      }
    }
    const s = this.stateOf(key, now);
    if (key.rpm > 0) s.rt -= 1;
    if (key.tpm > 0) s.tt -= est;
    s.inf += 1;
    return { ok: true, key };
  }

  release(key: KeyRecord, cls: OutcomeClass, est: number, real: number | null, coolMs: number, now = this.clock.now()): void {
    const s = this.stateOf(key, now);
    s.inf = Math.max(0, s.inf - 1);
    if (cls === 'unused') {
      // nothing went upstream: the request and its tokens come back too
      if (key.rpm > 0) s.rt = Math.min(this.share(key.rb), s.rt + 1);
      if (key.tpm > 0) s.tt = Math.min(this.share(key.tb), s.tt + est);
      return;
    }
    if (key.tpm > 0 && real !== null) s.tt = Math.min(this.share(key.tb), s.tt + est - real);
    if (cls === 'rate_limited') s.coolUntil = Math.max(s.coolUntil, now + coolMs);
    if (cls === 'auth') s.revoked = true;
  }

  inFlight(keyId: string): number {
    return this.state.get(keyId)?.inf ?? 0;
  }
}
