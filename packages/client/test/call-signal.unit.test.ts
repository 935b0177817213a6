/**
 * CallSignal / CallAbort (the gateway's abort signal without EventTarget) behave as an
 * AbortController's signal does for what keypool uses of it, and callController links and arms
 * either kind alike. The same checks run against a real AbortController, so a difference shows.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { CallAbort, CallSignal, TimedOut, callController } from '../src/index.js';

const kinds = [
  ['AbortController', () => new AbortController()],
  ['CallAbort', () => new CallAbort()],
] as const;

describe.each(kinds)('%s', (_name, make) => {
  it('runs each listener once, in the order added, and a listener added twice once', () => {
    const c = make();
    const seen: string[] = [];
    const a = () => seen.push(`a:${String(c.signal.reason)}`);
    const b = () => seen.push('b');
    c.signal.addEventListener('abort', a, { once: true });
    c.signal.addEventListener('abort', b);
    c.signal.addEventListener('abort', a);
    expect(c.signal.aborted).toBe(false);
    c.abort('why');
    c.abort('again');
    expect(seen).toEqual(['a:why', 'b']);
    expect(c.signal.aborted).toBe(true);
    expect(c.signal.reason).toBe('why');
  });

  it('forgets a removed listener, and never runs one added after the abort', () => {
    const c = make();
    const seen: string[] = [];
    const a = () => seen.push('a');
    c.signal.addEventListener('abort', a);
    c.signal.removeEventListener('abort', a);
    c.abort();
    c.signal.addEventListener('abort', () => seen.push('late'));
    expect(seen).toEqual([]);
  });

  it('skips a listener that an earlier one removes while the abort runs them', () => {
    const c = make();
    const seen: string[] = [];
    const b = () => seen.push('b');
    c.signal.addEventListener('abort', () => {
      seen.push('a');
      c.signal.removeEventListener('abort', b);
    });
    c.signal.addEventListener('abort', b);
    c.abort();
    expect(seen).toEqual(['a']);
  });

  it('gives an AbortError as the reason when none is given, and throwIfAborted throws the reason', () => {
    const c = make();
    expect(() => c.signal.throwIfAborted()).not.toThrow();
    c.abort();
    expect(c.signal.reason).toBeInstanceOf(DOMException);
    expect((c.signal.reason as DOMException).name).toBe('AbortError');
    expect(() => c.signal.throwIfAborted()).toThrow(c.signal.reason as Error);
  });
});

describe('CallSignal', () => {
  afterEach(() => vi.useRealTimers());

  it('reports a listener that throws on the next tick, as EventTarget does, and still runs the others', () => {
    const ticks: (() => void)[] = [];
    const nextTick = vi.spyOn(process, 'nextTick').mockImplementation(((fn: () => void) => void ticks.push(fn)) as typeof process.nextTick);
    try {
      const c = new CallAbort();
      const seen: string[] = [];
      c.signal.addEventListener('abort', () => {
        throw new Error('listener failed');
      });
      c.signal.addEventListener('abort', () => seen.push('second'));
      c.abort();
      expect(seen).toEqual(['second']);
      expect(ticks).toHaveLength(1);
      expect(ticks[0]!).toThrow('listener failed');
    } finally {
      nextTick.mockRestore();
    }
  });

  it('cannot be aborted through the signal: only its controller fires it', () => {
    const c = new CallAbort();
    expect(Object.keys(c.signal)).toEqual([]);
    expect(() => ((c.signal as unknown as { aborted: boolean }).aborted = true)).toThrow(TypeError);
    expect(c.signal.aborted).toBe(false);
  });

  it('callController: light by choice or when its parent is light, follows the parent, and times out', () => {
    vi.useFakeTimers();
    const parent = callController(undefined, 60_000, 'deadline', true);
    expect(parent.controller).toBeInstanceOf(CallAbort);
    const attempt = callController(parent.controller.signal, 1_000, 'attempt');
    expect(attempt.controller.signal).toBeInstanceOf(CallSignal);
    expect(callController(new AbortController().signal, 1_000).controller).toBeInstanceOf(AbortController);

    vi.advanceTimersByTime(1_000);
    expect(attempt.controller.signal.reason).toBeInstanceOf(TimedOut);
    expect((attempt.controller.signal.reason as TimedOut).what).toBe('attempt');
    expect(parent.controller.signal.aborted).toBe(false);

    const next = callController(parent.controller.signal, 1_000, 'attempt');
    parent.controller.abort('caller left');
    expect(next.controller.signal.reason).toBe('caller left');

    // done(): no longer follows the parent, nor its own deadline
    const p2 = callController(undefined, 60_000, 'deadline', true);
    const a2 = callController(p2.controller.signal, 1_000, 'attempt');
    a2.done();
    p2.controller.abort('later');
    vi.advanceTimersByTime(2_000);
    expect(a2.controller.signal.aborted).toBe(false);
    for (const c of [parent, attempt, next, p2]) c.done();
  });
});
