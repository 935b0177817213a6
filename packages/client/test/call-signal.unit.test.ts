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

  it('reports a listener that throws as the process does for EventTarget, and still runs the others', async () => {
    const c = new CallAbort();
    const seen: string[] = [];
    const caught = new Promise<unknown>((resolve) => process.once('uncaughtException', resolve));
    c.signal.addEventListener('abort', () => {
      throw new Error('listener failed');
    });
    c.signal.addEventListener('abort', () => seen.push('second'));
    c.abort();
    expect(seen).toEqual(['second']);
    expect(((await caught) as Error).message).toBe('listener failed');
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
    parent.done();
    p2.done();
  });
});
