/**
 * What the pool, the Dispatcher and the gateway use of an abort signal: an AbortSignal is one, and
 * so is the gateway's lighter CallSignal (@keypool/client), which is not an EventTarget.
 */
export interface AbortLike {
  readonly aborted: boolean;
  readonly reason: unknown;
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: () => void): void;
  throwIfAborted(): void;
}

/**
 * The time the TypeScript side reads for its own decisions (deadlines of waits, cooling and
 * renewal schedules, "down since"). Injected so that tests can drive it instead of sleeping;
 * the Lua scripts never use it: they read Redis TIME, the one clock the fleet shares.
 */
export interface Clock {
  /** Milliseconds since the epoch, like Date.now(). */
  now(): number;
  /** Resolve after `ms`; reject with the signal's reason when it aborts first. */
  sleep(ms: number, signal?: AbortLike): Promise<void>;
}

/** The real clock: Date.now() and timers. */
export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal!.reason);
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, Math.max(0, ms));
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
};

/**
 * A clock that moves only when told to, for unit tests: `advance(ms)` moves `now()` and wakes every
 * sleeper whose time has come, in order.
 */
export class ManualClock implements Clock {
  private t: number;
  private sleepers: { at: number; resolve: () => void }[] = [];

  constructor(start = 1_700_000_000_000) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  sleep(ms: number, signal?: AbortLike): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const entry = { at: this.t + Math.max(0, ms), resolve: () => resolve() };
      signal?.addEventListener(
        'abort',
        () => {
          this.sleepers = this.sleepers.filter((s) => s !== entry);
          reject(signal.reason);
        },
        { once: true },
      );
      this.sleepers.push(entry);
    });
  }

  /** Move time forward by `ms`, waking sleepers due by then (earliest first). */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      this.sleepers.sort((a, b) => a.at - b.at);
      const next = this.sleepers[0];
      if (!next || next.at > end) break;
      this.sleepers.shift();
      this.t = Math.max(this.t, next.at);
      next.resolve();
      // let the woken code run before the next one wakes
      await new Promise((r) => setImmediate(r));
    }
    this.t = end;
  }

  /** How many sleeps are pending (to wait in a test until the code under test has gone to sleep). */
  get pending(): number {
    return this.sleepers.length;
  }
}
